package cryptfile

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
)

// Large reads bypass the backing file's page cache.
//
// A sequential reader on the mount makes the kernel cache the plaintext
// on the mount. Reading the ciphertext through the backing file's page
// cache as well would keep every byte twice, and would cost the daemon a
// page allocation and a copy per page: on the benchmark's cold sequential
// read, that copy was two thirds of the daemon's CPU. So a read of at
// least directMin stored bytes goes through a second descriptor of the
// backing file opened with O_DIRECT: the disk writes the ciphertext
// straight into the daemon's buffer. Smaller reads (random access, small
// files, the block read before a partial write) keep the page cache,
// which serves them from memory when they repeat.
//
// Correctness does not depend on it: reads and writes of a file are
// ordered by Node.mu, and the kernel writes back dirty page-cache pages
// of the range before a direct read of it. Where O_DIRECT is refused (a
// backing filesystem without it, alignment it does not accept, no /proc),
// the handle falls back to buffered reads for good.
const (
	directMin   = 256 << 10
	directAlign = 4096
	// directMax is how many direct reads may be in flight at once, across
	// all files. Each holds a buffer of about a MiB; a sequential reader
	// keeps up to ReadaheadKB of requests in flight, and more of them at
	// once would only add memory, not speed, on one disk.
	directMax = 4
)

// directSlots holds one token per direct read in flight.
var directSlots = make(chan struct{}, directMax)

// directFd is a handle's O_DIRECT descriptor, opened at its first large
// read.
type directFd struct {
	mu  sync.Mutex
	fd  int  // valid when opened
	ok  bool // fd is open
	off bool // O_DIRECT is not available: never try again
}

// get returns the O_DIRECT descriptor of the backing file behind fd, or
// -1 if there is none.
func (d *directFd) get(fd int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ok {
		return d.fd
	}
	if d.off {
		return -1
	}
	// Reopening through /proc reaches the same inode even when it has
	// been renamed or unlinked since.
	dfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		d.off = true
		return -1
	}
	d.fd, d.ok = dfd, true
	return dfd
}

// disable closes the descriptor and keeps the handle on buffered reads.
func (d *directFd) disable() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
	d.off = true
}

// close closes the descriptor, if open.
func (d *directFd) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
}

func (d *directFd) closeLocked() {
	if d.ok {
		syscall.Close(d.fd)
		d.ok = false
	}
}

// directPool recycles aligned buffers for direct reads.
var directPool sync.Pool

// directCap is the capacity of a pooled direct buffer: the stored bytes
// of the largest read with 4 KiB blocks, with room to align both ends.
const directCap = MaxRequest + MaxRequest/128 + 3*directAlign

// getDirect returns a buffer of n bytes whose start is aligned to
// directAlign.
func getDirect(n int) *[]byte {
	if p, ok := directPool.Get().(*[]byte); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	raw := make([]byte, max(n, directCap)+directAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) % directAlign); r != 0 {
		skip = directAlign - r
	}
	b := raw[skip : skip+n : skip+max(n, directCap)]
	return &b
}

// errDirect is returned when the backing file refused a direct read.
var errDirect = errors.New("direct read refused")

// openDirect is openSteps through dfd, the O_DIRECT descriptor: it reads
// [coff, coff+clen), widened to aligned ends, in one go (one large disk
// request costs this machine's virtual disk far less than several small
// ones), then decrypts it into out a step at a time on this goroutine. It
// returns errDirect, with nothing read, if the backing filesystem refuses
// the read.
func openDirect(c *blockcipher.Cipher, l blockcipher.Layout, dfd int, coff int64, clen int, out []byte, first uint64) (int, error) {
	a0 := coff &^ (directAlign - 1)
	a1 := (coff + int64(clen) + directAlign - 1) &^ (directAlign - 1)
	directSlots <- struct{}{}
	defer func() { <-directSlots }()
	buf := getDirect(int(a1 - a0))
	defer directPool.Put(buf)
	got := 0
	for got < len(*buf) {
		m, err := syscall.Pread(dfd, (*buf)[got:], a0+int64(got))
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EINVAL && got == 0 {
			return 0, errDirect
		}
		if err != nil {
			return 0, err
		}
		got += m
		if m == 0 || got%directAlign != 0 {
			break // end of file
		}
	}
	lo := int(coff - a0)
	if got < lo+clen {
		return 0, io.ErrUnexpectedEOF
	}
	data := (*buf)[lo : lo+clen]
	return openEach(c, l, clen, out, first, func(lo, hi int) ([]byte, error) {
		return data[lo:hi], nil
	})
}
