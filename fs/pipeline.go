package fs

import (
	"sync"

	"github.com/kmsfs/kmsfs/blockcipher"
)

// A large request is read or written in steps of about pipeStep bytes, so
// that the backing file I/O of one step overlaps the decryption or
// encryption of others on the other cores: the request then costs about
// its I/O time instead of its I/O time plus its crypto time. Requests
// below pipeMin go in one step.
const (
	pipeStep = 128 << 10
	pipeMin  = 256 << 10
)

// stepBlocks returns how many blocks of l make one pipeline step.
func stepBlocks(l blockcipher.Layout) int {
	return max(1, pipeStep/l.BlockSize)
}

// pipeDepth is how many steps of one pipelined read may be in memory at
// once: one being read while the others are decrypted. More would only
// hold memory: there are rarely more cores than that to decrypt on, and a
// sequential read has several requests in the daemon at once.
const pipeDepth = 3

// stepPool recycles the ciphertext buffers of pipeline steps.
var stepPool sync.Pool

// getStep returns a buffer of n bytes for one step's ciphertext.
func getStep(n int) *[]byte {
	if p, ok := stepPool.Get().(*[]byte); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n)
	return &b
}

// openPipelined reads the stored bytes [coff, coff+clen) of the file
// behind fd, the blocks from first on, and decrypts them into out, which
// has room for their plaintext. Each step is read into a buffer of its
// own and decrypted on a goroutine while the next one is read; at most
// pipeDepth steps are held at once. It returns the plaintext length, or
// the first error in file order.
func openPipelined(c *blockcipher.Cipher, l blockcipher.Layout, fd int, coff int64, clen int, out []byte, first uint64) (int, error) {
	cb, b := l.CipherBlockSize(), l.BlockSize
	step := stepBlocks(l)
	nsteps := (clen + step*cb - 1) / (step * cb)
	var wg sync.WaitGroup
	slots := make(chan struct{}, pipeDepth)
	lens := make([]int, nsteps)
	errs := make([]error, nsteps)
	for i := range nsteps {
		lo := i * step * cb
		hi := min(lo+step*cb, clen)
		slots <- struct{}{}
		buf := getStep(hi - lo)
		if err := preadFull(fd, *buf, coff+int64(lo)); err != nil {
			stepPool.Put(buf)
			wg.Wait()
			return 0, err
		}
		pl := i * step * b
		wg.Go(func() {
			plain, err := c.OpenBlocks(out[pl:pl], *buf, first+uint64(i*step))
			lens[i], errs[i] = len(plain), err
			stepPool.Put(buf)
			<-slots
		})
	}
	wg.Wait()
	total := 0
	for i := range nsteps {
		if errs[i] != nil {
			return 0, errs[i]
		}
		total += lens[i]
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
