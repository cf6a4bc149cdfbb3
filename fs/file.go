package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
)

// File is an open regular file: a backing file descriptor of its own
// (locks are per handle) and the Node that holds the keys.
type File struct {
	n  *Node
	fd int

	// direct is the O_DIRECT descriptor for large reads (see directMin).
	direct directFd
	// wb counts the writebacks started on fd (see startWriteback); fd is
	// closed only once they have returned.
	wb sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

var (
	_ gofs.FileReader    = (*File)(nil)
	_ gofs.FileWriter    = (*File)(nil)
	_ gofs.FileFlusher   = (*File)(nil)
	_ gofs.FileFsyncer   = (*File)(nil)
	_ gofs.FileReleaser  = (*File)(nil)
	_ gofs.FileAllocater = (*File)(nil)
	_ gofs.FileGetlker   = (*File)(nil)
	_ gofs.FileSetlker   = (*File)(nil)
	_ gofs.FileSetlkwer  = (*File)(nil)
)

// bufPool holds buffers big enough for the largest FUSE request in
// ciphertext or plaintext form.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2<<20); return &b }}

func getBuf(n int) *[]byte {
	p := bufPool.Get().(*[]byte)
	if cap(*p) < n {
		b := make([]byte, 0, n)
		p = &b
	}
	*p = (*p)[:n]
	return p
}

func putBuf(p *[]byte) {
	if cap(*p) <= 4<<20 {
		bufPool.Put(p)
	}
}

// Read decrypts the blocks that cover [off, off+len(dest)).
func (f *File) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n := f.n
	n.mu.RLock()
	defer n.mu.RUnlock()
	cnt, err := n.readLocked(f.fd, &f.direct, dest, off)
	if err != nil {
		return nil, n.errno("read", err)
	}
	return fuse.ReadResultData(dest[:cnt]), 0
}

// Write encrypts data into the blocks it covers, reading and re-encrypting
// partially covered blocks.
func (f *File) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n := f.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.writeLocked(ctx, f.fd, &f.wb, data, off); err != nil {
		return 0, n.errno("write", err)
	}
	return uint32(len(data)), 0
}

// Flush releases POSIX locks held through this descriptor, as close(2)
// would. Data is already in the backing file.
func (f *File) Flush(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return syscall.EBADF
	}
	nfd, err := syscall.Dup(f.fd)
	if err != nil {
		return gofs.ToErrno(err)
	}
	return gofs.ToErrno(syscall.Close(nfd))
}

// Fsync flushes the backing file to stable storage.
func (f *File) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	var err error
	if flags&1 != 0 {
		err = unix.Fdatasync(f.fd)
	} else {
		err = syscall.Fsync(f.fd)
	}
	return gofs.ToErrno(err)
}

// Release closes the descriptor; the last release of a file wipes its
// keys.
func (f *File) Release(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return syscall.EBADF
	}
	f.closed = true
	f.n.removeFd(f.fd)
	f.direct.close()
	f.wb.Wait()
	err := syscall.Close(f.fd)
	f.mu.Unlock()
	f.n.release(f.fd)
	return gofs.ToErrno(err)
}

// Allocate supports mode 0 (reserve and extend) and FALLOC_FL_KEEP_SIZE;
// hole punching and range shifting would need re-encryption and are
// refused.
func (f *File) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	n := f.n
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EOPNOTSUPP
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	end := int64(off + size)
	if mode == 0 {
		p, _, err := n.sizes(f.fd)
		if err != nil {
			return n.errno("fallocate", err)
		}
		if end > p {
			if err := n.truncateLocked(ctx, f.fd, end); err != nil {
				return n.errno("fallocate", err)
			}
		}
	}
	l := n.vol.Layout
	if n.keys == nil {
		return 0
	}
	cstart := l.BlockCipherOff(l.BlockNo(int64(off)))
	cend := l.CipherSize(end)
	err := unix.Fallocate(f.fd, unix.FALLOC_FL_KEEP_SIZE, cstart, cend-cstart)
	if err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		return gofs.ToErrno(err)
	}
	return 0
}

// Getlk tests for a POSIX lock (open file description locks on the
// backing descriptor).
func (f *File) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return GetLock(f.fd, lk, out)
}

// Setlk takes or releases a lock without waiting.
func (f *File) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return SetLock(f.fd, lk, flags, false)
}

// Setlkw takes a lock, waiting for it.
func (f *File) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return SetLock(f.fd, lk, flags, true)
}

// errno logs err with the file's name and turns it into the errno the
// caller sees: EACCES when a key refuses, EIO for damaged data, the
// system's own errno otherwise.
func (n *Node) errno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	switch {
	case errors.Is(err, context.Canceled):
		// The request was interrupted; the kernel retries or reports EINTR.
		return syscall.EINTR
	case errors.Is(err, ErrCorrupt), errors.Is(err, blockcipher.ErrAuth), errors.Is(err, blockcipher.ErrBadCipherSize):
		n.vol.Log.Printf("kmsfs: %s %s: %v", op, n.relPath(), err)
		return syscall.EIO
	case keyring.IsPermanent(err):
		n.vol.Log.Printf("kmsfs: %s %s: %v", op, n.relPath(), err)
		return syscall.EACCES
	case errors.Is(err, ErrKeyUnavailable),
		errors.Is(err, keyring.ErrUnavailable), errors.Is(err, keyring.ErrThrottled), errors.Is(err, keyring.ErrKeyMemory):
		n.vol.Log.Printf("kmsfs: %s %s: %v", op, n.relPath(), err)
		return syscall.EIO
	case errors.As(err, &en):
		if en == syscall.ENOSPC || en == syscall.EDQUOT || en == syscall.EROFS {
			n.vol.Log.Printf("kmsfs: %s %s: %v", op, n.relPath(), err)
		}
		return en
	default:
		n.vol.Log.Printf("kmsfs: %s %s: %v", op, n.relPath(), err)
		return syscall.EIO
	}
}

// sizes returns the plaintext and backing sizes of the file behind fd.
// A backing file with a damaged tail reports the size of its whole blocks
// and ErrBadCipherSize.
func (n *Node) sizes(fd int) (plain, cipher int64, err error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, 0, err
	}
	if st.Size == 0 {
		return 0, 0, nil
	}
	p, err := n.vol.Layout.PlainSize(st.Size)
	return p, st.Size, err
}

// preadAll reads into buf from off until buf is full or the file ends,
// and returns how many bytes it read.
func preadAll(fd int, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := syscall.Pread(fd, buf[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// preadFull fills buf from off; a file that ends first is an error.
func preadFull(fd int, buf []byte, off int64) error {
	n, err := preadAll(fd, buf, off)
	if err == nil && n < len(buf) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func pwriteFull(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		m, err := syscall.Pwrite(fd, buf, off)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		buf = buf[m:]
		off += int64(m)
	}
	return nil
}

// readLocked decrypts into dest the plaintext at off; n.mu is held. A
// large read goes through direct (see directMin).
func (n *Node) readLocked(fd int, direct *directFd, dest []byte, off int64) (int, error) {
	p, c, err := n.sizes(fd)
	var tailErr error
	if errors.Is(err, blockcipher.ErrBadCipherSize) {
		tailErr = err // whole blocks still read; the tail fails below
	} else if err != nil {
		return 0, err
	}
	if off >= p || len(dest) == 0 {
		if tailErr != nil && off >= p {
			return 0, fmt.Errorf("%w: damaged tail after byte %d", tailErr, p)
		}
		return 0, nil
	}
	if n.keys == nil {
		return 0, fmt.Errorf("%w: no header", ErrCorrupt)
	}
	end := min(off+int64(len(dest)), p)
	l := n.vol.Layout
	first, last := l.BlockRange(off, end-off)
	coff := l.BlockCipherOff(first)
	cend := min(l.BlockCipherOff(last+1), c)
	skip := off - int64(first)*int64(l.BlockSize)
	need := int(last-first+1) * l.BlockSize
	out := dest
	if skip != 0 || cap(dest) < need {
		pbuf := getBuf(need)
		defer putBuf(pbuf)
		out = *pbuf
	}
	m, err := 0, errDirect
	if cend-coff >= directMin {
		if dfd := direct.get(fd); dfd >= 0 {
			m, err = openDirect(n.keys.cipher, l, dfd, coff, int(cend-coff), out[:0], first)
			if err == errDirect {
				direct.disable()
			}
		}
	}
	if err == errDirect {
		m, err = openSteps(n.keys.cipher, l, fd, coff, int(cend-coff), out[:0], first)
	}
	if err != nil {
		return 0, fmt.Errorf("reading blocks %d-%d: %w", first, last, err)
	}
	if skip == 0 && cap(dest) >= need {
		// Aligned: decrypted straight into the reply buffer.
		return int(min(int64(m), end-off)), nil
	}
	return copy(dest, out[skip:min(int64(m), skip+(end-off))]), nil
}

// readBlock decrypts block b of a file whose backing size is c.
func (n *Node) readBlock(fd int, b uint64, c int64, dst []byte) ([]byte, error) {
	l := n.vol.Layout
	coff := l.BlockCipherOff(b)
	cend := min(coff+int64(l.CipherBlockSize()), c)
	if cend <= coff {
		return dst[:0], nil
	}
	cbuf := getBuf(int(cend - coff))
	defer putBuf(cbuf)
	if err := preadFull(fd, *cbuf, coff); err != nil {
		return nil, fmt.Errorf("reading block %d: %w", b, err)
	}
	return n.keys.cipher.OpenBlock(dst[:0], *cbuf, b)
}

// ensureHeaderLocked gives a headerless (empty) file its header and
// keys; c is the backing size.
func (n *Node) ensureHeaderLocked(ctx context.Context, fd int, c int64) error {
	if c > 0 {
		if n.keys == nil {
			return n.loadKeysLocked(ctx, fd)
		}
		return nil
	}
	kctx, cancel := keyContext(ctx)
	defer cancel()
	hdr, fk, err := n.vol.newFileKeys(kctx)
	if err != nil {
		return err
	}
	if err := pwriteFull(fd, hdr, 0); err != nil {
		fk.destroy()
		syscall.Ftruncate(fd, 0)
		return fmt.Errorf("writing header: %w", err)
	}
	n.keys.destroy()
	n.keys = fk
	return nil
}

// rewriteBlock re-encrypts block b with plaintext plain and writes it.
func (n *Node) rewriteBlock(fd int, b uint64, plain []byte) error {
	l := n.vol.Layout
	cbuf := getBuf(0)
	defer putBuf(cbuf)
	ct := n.keys.cipher.SealBlock((*cbuf)[:0], plain, b)
	return n.vol.journal.pwrite(n, fd, complete(ct), l.BlockCipherOff(b))
}

// writeLocked writes data at off; n.mu is held exclusively.
func (n *Node) writeLocked(ctx context.Context, fd int, wb *sync.WaitGroup, data []byte, off int64) error {
	n.seenOK = false
	if len(data) == 0 {
		return nil
	}
	p, c, err := n.sizes(fd)
	if err != nil {
		return err
	}
	if err := n.ensureHeaderLocked(ctx, fd, c); err != nil {
		return err
	}
	c = max(c, header.Size)
	l := n.vol.Layout
	B := int64(l.BlockSize)
	end := off + int64(len(data))
	first, last := l.BlockRange(off, int64(len(data)))

	tmp := getBuf(int(B))
	defer putBuf(tmp)
	// A partial last block that the write does not reach is padded with
	// zeros to a full block: only full blocks may become holes.
	if p%B != 0 && uint64(p/B) < first {
		old, err := n.readBlock(fd, uint64(p/B), c, *tmp)
		if err != nil {
			return err
		}
		full := (*tmp)[:B]
		clear(full[len(old):])
		if err := n.rewriteBlock(fd, uint64(p/B), full); err != nil {
			return err
		}
	}

	start := int64(first) * B
	stop := min(int64(last+1)*B, max(end, p))
	cbuf := getBuf(0)
	defer putBuf(cbuf)
	if off == start && (end%B == 0 || end >= p) {
		// Whole blocks, or a new last block: nothing old to keep, so seal
		// straight from the request.
		ct := sealPipelined(n.keys.cipher, l, (*cbuf)[:0], data, first)
		return startWriteback(fd, wb, n.vol.journal.pwrite(n, fd, ct, l.BlockCipherOff(first)), l.BlockCipherOff(first), len(ct.data))
	}
	pbuf := getBuf(int(stop - start))
	defer putBuf(pbuf)
	plain := *pbuf
	clear(plain)
	if off > start && start < p {
		old, err := n.readBlock(fd, first, c, *tmp)
		if err != nil {
			return err
		}
		copy(plain, old)
	}
	if lastStart := int64(last) * B; end < stop && (last != first || off == start) && lastStart < p {
		old, err := n.readBlock(fd, last, c, *tmp)
		if err != nil {
			return err
		}
		copy(plain[lastStart-start:], old)
	}
	copy(plain[off-start:], data)
	ct := sealPipelined(n.keys.cipher, l, (*cbuf)[:0], plain, first)
	return startWriteback(fd, wb, n.vol.journal.pwrite(n, fd, ct, l.BlockCipherOff(first)), l.BlockCipherOff(first), len(ct.data))
}

// writebackMin is the smallest write whose backing writeback starts at
// once (see startWriteback).
const writebackMin = pipeMin

// startWriteback starts the writeback of the n bytes just written at off
// of fd if the write succeeded (err is nil) and was large, on a goroutine
// counted in wb, so that the reply does not wait for it. It returns err.
//
// A large write is most likely part of a stream (a copy, a download, a
// database file being filled), which ends with fsync or close. Left to
// the kernel, its dirty pages would only go to disk once they pass the
// dirty thresholds, several GiB on a large machine, so the fsync would
// then wait for all of them. Started now, the disk writes the ciphertext
// while the daemon encrypts the next requests. Small writes are left to
// the kernel, which can merge repeated writes of the same pages.
func startWriteback(fd int, wb *sync.WaitGroup, err error, off int64, n int) error {
	if err == nil && n >= writebackMin {
		// Only a hint: a failure here (EIO, say) comes back from fsync.
		wb.Go(func() { unix.SyncFileRange(fd, off, int64(n), unix.SYNC_FILE_RANGE_WRITE) })
	}
	return err
}

// truncateLocked sets the plaintext size; n.mu is held exclusively.
func (n *Node) truncateLocked(ctx context.Context, fd int, size int64) error {
	n.seenOK = false
	p, c, err := n.sizes(fd)
	if err != nil && !errors.Is(err, blockcipher.ErrBadCipherSize) {
		return err
	}
	bad := err != nil
	if c == 0 && size == 0 {
		return nil
	}
	if err := n.ensureHeaderLocked(ctx, fd, c); err != nil {
		return err
	}
	if c == 0 {
		c = header.Size
	}
	if size == p && !bad {
		return nil
	}
	l := n.vol.Layout
	B := int64(l.BlockSize)
	tmp := getBuf(int(B))
	defer putBuf(tmp)
	if size <= p {
		if size%B == 0 {
			return syscall.Ftruncate(fd, l.CipherSize(size))
		}
		b := uint64(size / B)
		old, err := n.readBlock(fd, b, c, *tmp)
		if err != nil {
			return err
		}
		cbuf := getBuf(0)
		defer putBuf(cbuf)
		ct := n.keys.cipher.SealBlock((*cbuf)[:0], old[:size%B], b)
		return n.vol.journal.pwriteEnd(n, fd, ct, l.BlockCipherOff(b))
	}
	// Growing: pad the old partial last block, extend with holes, and
	// write a real partial block at the new end.
	if bad {
		if err := syscall.Ftruncate(fd, l.CipherSize(p)); err != nil {
			return err
		}
	}
	if p%B != 0 {
		lb := uint64(p / B)
		old, err := n.readBlock(fd, lb, c, *tmp)
		if err != nil {
			return err
		}
		newLen := min(B, size-int64(lb)*B)
		buf := (*tmp)[:newLen]
		clear(buf[len(old):])
		if err := n.rewriteBlock(fd, lb, buf); err != nil {
			return err
		}
		if size <= int64(lb+1)*B {
			return nil
		}
	}
	n.holes = holesMaybe // the new part is a hole
	if err := syscall.Ftruncate(fd, l.CipherSize(size)); err != nil {
		return err
	}
	if size%B != 0 {
		zeros := (*tmp)[:size%B]
		clear(zeros)
		return n.rewriteBlock(fd, uint64(size/B), zeros)
	}
	return nil
}
