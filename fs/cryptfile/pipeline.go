package cryptfile

import (
	"sync"

	"github.com/kmsfs/kmsfs/blockcipher"
)

// A large request is read or written in steps of about pipeStep bytes.
//
// A write seals its steps on goroutines of their own and writes each one
// as soon as it is sealed, so that the backing pwrite of one step
// overlaps the encryption of the next ones on the other cores: a
// sequential writer has one request in the daemon at a time. Writes
// below pipeMin are sealed in one go.
//
// A read, of any size, decrypts its steps one after the other on the
// request's own goroutine, each step right after its pread into a small
// buffer (or, for a large read, from the one direct read of the whole
// request: see directMin), so that the plaintext is still in that core's cache when the
// reply copies it to the kernel (decrypted on another core, that copy
// cost about four times as much, measured with perf). A sequential
// reader keeps several requests in the daemon at once (ReadaheadKB), and
// they use the cores.
const (
	pipeStep = 128 << 10
	pipeMin  = 256 << 10
)

// stepBlocks returns how many blocks of l make one step.
func stepBlocks(l blockcipher.Layout) int {
	return max(1, pipeStep/l.BlockSize)
}

// stepPool recycles the ciphertext buffers of read steps.
var stepPool sync.Pool

// stepCap is the capacity of a step buffer: one step of ciphertext for
// block sizes up to pipeStep.
const stepCap = pipeStep + pipeStep/32

// getStep returns a buffer of n bytes for one step's ciphertext.
func getStep(n int) *[]byte {
	if p, ok := stepPool.Get().(*[]byte); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, max(n, stepCap))
	return &b
}

// openSteps reads the stored bytes [coff, coff+clen) of the file behind
// fd, the blocks from first on, and decrypts them into out, which has
// room for their plaintext, one step at a time. It returns the plaintext
// length, or the first error.
func openSteps(c *blockcipher.Cipher, l blockcipher.Layout, fd int, coff int64, clen int, out []byte, first uint64) (int, error) {
	buf := getStep(min(stepBlocks(l)*l.CipherBlockSize(), clen))
	defer stepPool.Put(buf)
	return openEach(c, l, clen, out, first, func(lo, hi int) ([]byte, error) {
		b := (*buf)[:hi-lo]
		return b, preadFull(fd, b, coff+int64(lo))
	})
}

// openEach decrypts clen stored bytes, the blocks from first on, into out
// one step at a time; stored returns the stored bytes [lo, hi) of a step.
// It returns the plaintext length, or the first error.
func openEach(c *blockcipher.Cipher, l blockcipher.Layout, clen int, out []byte, first uint64, stored func(lo, hi int) ([]byte, error)) (int, error) {
	sb := stepBlocks(l)
	step := sb * l.CipherBlockSize()
	total := 0
	for i, lo := 0, 0; lo < clen; i, lo = i+1, lo+step {
		b, err := stored(lo, min(lo+step, clen))
		if err != nil {
			return 0, err
		}
		plain, err := c.OpenBlocks(out[total:total], b, first+uint64(i*sb))
		if err != nil {
			return 0, err
		}
		total += len(plain)
	}
	return total, nil
}

// sealed is ciphertext that may still be being produced: step i of it,
// data[ends[i-1]:ends[i]], can be written once done[i] is closed.
type sealed struct {
	data []byte
	ends []int
	done []chan struct{}
}

// complete returns a sealed for ciphertext that is already there.
func complete(data []byte) *sealed { return &sealed{data: data} }

// sealPipelined starts encrypting plain, the plaintext of the blocks from
// first on, into dst's spare capacity (grown if needed), one goroutine
// per step, and returns at once.
func sealPipelined(c *blockcipher.Cipher, l blockcipher.Layout, dst, plain []byte, first uint64) *sealed {
	size := l.SealedSize(len(plain))
	if cap(dst) < size {
		dst = make([]byte, 0, size)
	}
	dst = dst[:size]
	if len(plain) < pipeMin {
		return complete(c.SealBlocks(dst[:0], plain, first))
	}
	b := l.BlockSize
	stepPlain := stepBlocks(l) * b
	s := &sealed{data: dst}
	for pl := 0; pl < len(plain); pl += stepPlain {
		ph := min(pl+stepPlain, len(plain))
		cl := l.SealedSize(pl)
		ch := cl + l.SealedSize(ph-pl)
		done := make(chan struct{})
		s.ends = append(s.ends, ch)
		s.done = append(s.done, done)
		blk := first + uint64(pl/b)
		go func() {
			c.SealBlocks(dst[cl:cl], plain[pl:ph], blk)
			close(done)
		}()
	}
	return s
}

// wait returns once all of the ciphertext is there.
func (s *sealed) wait() {
	for _, d := range s.done {
		<-d
	}
}

// pwrite writes the ciphertext at off of fd, each step as soon as it is
// there.
func (s *sealed) pwrite(fd int, off int64) error {
	if s.done == nil {
		return pwriteFull(fd, s.data, off)
	}
	lo := 0
	for i, d := range s.done {
		<-d
		if err := pwriteFull(fd, s.data[lo:s.ends[i]], off+int64(lo)); err != nil {
			return err
		}
		lo = s.ends[i]
	}
	return nil
}
