// Package cryptfile is the encrypted-file engine: one kmsfs file
// (docs/FORMAT.md) on a backing file descriptor, read and written at any
// offset. It owns the block arithmetic of reads, writes, truncation and
// preallocation, the pipelined and direct (O_DIRECT) paths, and the write
// journal that makes block writes atomic against the death of the
// process.
//
// It knows nothing of FUSE or of where keys come from: a Keyer, given by
// the caller, reads the key of an existing file from its header and makes
// the header and key of a new one.
package cryptfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
)

// ErrCorrupt is returned, wrapped, when a header or block fails
// authentication or parsing.
var ErrCorrupt = errors.New("file is corrupted or was tampered with")

// MaxRequest is the largest read or write one call makes (the largest
// FUSE request); buffers and journal slots are sized for it.
const MaxRequest = 1 << 20

// Key is the content key of one file.
type Key interface {
	// FileID returns the file ID of the header the key belongs to.
	FileID() [16]byte
	// Cipher returns the block cipher of the file's contents.
	Cipher() *blockcipher.Cipher
	// Close wipes the key; it is called once no handle needs it.
	Close()
}

// Keyer reads the keys of existing files and makes those of new files.
type Keyer interface {
	// Load reads and unlocks the header of the backing file fd. It
	// returns a nil Key for an empty file (no header yet). name names the
	// file in errors; it is called only for them.
	Load(ctx context.Context, fd int, name func() string) (Key, error)
	// New returns the header and the key of a new file.
	New(ctx context.Context) (hdr []byte, k Key, err error)
}

// Config is what every file of a volume shares.
type Config struct {
	// Layout is the block geometry of every file.
	Layout blockcipher.Layout
	// Keys loads and makes file keys.
	Keys Keyer
	// Journal makes block writes atomic against a crash of the process;
	// nil writes without it.
	Journal *Journal
	// V3 is the layout of version-3 files (docs/FORMAT.md "Regular files,
	// version 3"); nil for the files of versions 1 and 2, which Layout
	// describes.
	V3 *blockcipher.Layout3
}

// File is the state one backing file (inode) shares between its open
// handles: its key, loaded at the first open and wiped at the last
// close, and the lock that orders reads and writes of its contents.
type File struct {
	cfg *Config
	// name returns the file's path relative to the backing directory (the
	// journal records it, errors name it).
	name func() string

	// mu orders access to the contents and size: readers share it,
	// writers and truncation hold it exclusively. It also guards the
	// fields below.
	mu    sync.RWMutex
	key   Key // nil until loaded, or while the file has no header
	opens int
	// holes says whether the backing file may have holes (see allocated):
	// holesUnknown until asked, then holesNone or holesMaybe; anything
	// that may make a hole sets holesMaybe.
	holes holeState
	// seen is the backing file as an open last found it; seenOK is
	// cleared by every change made through this File since (see
	// Handle.KeepCache).
	seen   fileStamp
	seenOK bool
	// okSize is a backing size of a version-3 paged file found
	// consistent with its size records (or written so by this File); 0
	// when none is known.
	okSize atomic.Int64
	// broken, once set, fails every read and write of the file: a
	// re-encryption failed after its commit point, so the backing file
	// may hold blocks of two keys until the next mount finishes it.
	broken error
}

type holeState uint8

const (
	holesUnknown holeState = iota
	holesNone
	holesMaybe
)

// fileStamp identifies one state of a backing file: any change of its
// content moves its ctime (which no one can set back) or its size, and
// a file put in its place has another inode number.
type fileStamp struct {
	ino, size    int64
	ctime, mtime syscall.Timespec
}

func stampOf(st *syscall.Stat_t) fileStamp {
	return fileStamp{ino: int64(st.Ino), size: st.Size, ctime: st.Ctim, mtime: st.Mtim}
}

// New returns the shared state of one backing file of a volume. name
// returns its path relative to the backing directory.
func New(cfg *Config, name func() string) *File {
	return &File{cfg: cfg, name: name}
}

// Name returns the file's path relative to the backing directory.
func (f *File) Name() string { return f.name() }

// Handle is one open descriptor of a File.
type Handle struct {
	f  *File
	fd int

	// direct is the O_DIRECT descriptor for large reads (see directMin).
	direct directFd
	// wb counts the writebacks started on fd (see startWriteback); fd is
	// closed only once they have returned.
	wb sync.WaitGroup

	closeOnce sync.Once
}

// Open makes a handle of fd, a descriptor of the backing file open for
// reading (and writing, to write). The first handle of a file loads its
// key; so does an open that finds the backing file replaced by another
// kmsfs file behind the File's back. The handle owns fd from then on,
// also when Open fails.
func (f *File) Open(ctx context.Context, fd int) (*Handle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		syscall.Close(fd)
		return nil, f.broken
	}
	if f.key == nil || f.replacedLocked(fd) {
		old := f.key
		if err := f.loadKeyLocked(ctx, fd); err != nil {
			syscall.Close(fd)
			return nil, err
		}
		if old != nil && old != f.key {
			old.Close()
		}
	}
	f.opens++
	return &Handle{f: f, fd: fd}, nil
}

// Fd returns the backing descriptor of the handle.
func (h *Handle) Fd() int { return h.fd }

// File returns the file of the handle.
func (h *Handle) File() *File { return h.f }

// Close waits for the handle's writebacks, closes its descriptors and
// drops the handle; the last handle of a file wipes its key.
func (h *Handle) Close() error {
	var err error = syscall.EBADF
	h.closeOnce.Do(func() {
		h.direct.close()
		h.wb.Wait()
		err = syscall.Close(h.fd)
		f := h.f
		f.mu.Lock()
		defer f.mu.Unlock()
		f.opens--
		if f.opens == 0 && f.key != nil {
			f.key.Close()
			f.key = nil
		}
	})
	return err
}

// replacedLocked reports whether the backing file now holds another
// kmsfs file than the one whose key is loaded: its content was replaced
// in place behind the mount (a sync tool, a restore) while a handle was
// still open. The file ID in the preamble tells.
func (f *File) replacedLocked(fd int) bool {
	var pre [header.PreambleSize]byte
	if m, err := PreadHead(fd, pre[:]); err != nil || m < len(pre) {
		return false
	}
	p, err := header.ParsePreamble(pre[:])
	return err == nil && p.FileID != f.key.FileID()
}

// keyTimeout bounds the key service calls of one file operation.
const keyTimeout = 2 * time.Minute

// keyContext detaches key service calls from the caller's request: the
// kernel interrupts a FUSE request whenever the calling thread gets a
// signal (Go programs get SIGURG for preemption all the time), and an
// unwrap cut off that way would fail the open. The call runs to
// completion or to its own timeout instead.
func keyContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), keyTimeout)
}

// loadKeyLocked reads and unlocks the header, if the file has one.
func (f *File) loadKeyLocked(ctx context.Context, fd int) error {
	// Detached as keyContext explains; the Keyer bounds the calls that
	// can hang (a timer per open costs more than a local unwrap).
	k, err := f.cfg.Keys.Load(context.WithoutCancel(ctx), fd, f.name)
	if err != nil {
		return err
	}
	if k != nil && k.Cipher().V3() != f.v3() {
		k.Close()
		return fmt.Errorf("%s: %w: its format version is not the volume's", f.name(), ErrCorrupt)
	}
	f.key = k
	f.okSize.Store(0)
	return nil
}

// KeepCache reports whether the kernel may keep what it caches of this
// file's plaintext across this open instead of dropping it: only if the
// backing file is just as the previous open found it and nothing changed
// it through this File since. A change behind the mount's back (another
// mount of the backing directory, a sync tool, a restore) moves the
// stamp and the next open drops the cache. Changes through the File
// clear seenOK instead of updating the stamp: the kernel's copy of a
// failed write is not trusted.
func (h *Handle) KeepCache() bool {
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	var st syscall.Stat_t
	if syscall.Fstat(h.fd, &st) != nil {
		f.seenOK = false
		return false
	}
	s := stampOf(&st)
	keep := f.seenOK && f.seen == s
	f.seen, f.seenOK = s, true
	return keep
}

// StatSize translates a backing file size into the plaintext size users
// see. A damaged tail of 1..28 bytes counts its bytes, so that reads
// reach it and fail instead of the file silently looking shorter.
func StatSize(l blockcipher.Layout, cipherSize int64) int64 {
	if cipherSize == 0 {
		return 0
	}
	p, err := l.PlainSize(cipherSize)
	if err != nil && cipherSize > int64(l.DataOffset) {
		return p + (cipherSize-int64(l.DataOffset))%int64(l.CipherBlockSize())
	}
	return p
}

// StatSize translates a backing file size into the plaintext size users
// see, for the files of c's volume (see the function StatSize).
func (c *Config) StatSize(cipherSize int64) int64 {
	if c.V3 != nil {
		return StatSize3(c.V3, cipherSize)
	}
	return StatSize(c.Layout, cipherSize)
}

// sizes returns the plaintext and backing sizes of the file behind fd.
// A backing file with a damaged tail reports the size of its whole blocks
// and ErrBadCipherSize.
func (f *File) sizes(fd int) (plain, cipher int64, err error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, 0, err
	}
	if st.Size == 0 {
		return 0, 0, nil
	}
	if f.v3() {
		p, err := f.cfg.V3.PlainSize(st.Size)
		return p, st.Size, err
	}
	p, err := f.cfg.Layout.PlainSize(st.Size)
	return p, st.Size, err
}

// Size returns the plaintext size of the file.
func (h *Handle) Size() (int64, error) {
	h.f.mu.RLock()
	defer h.f.mu.RUnlock()
	p, _, err := h.f.sizes(h.fd)
	return p, err
}

// Read decrypts into p the plaintext at off, like pread(2): it returns
// fewer bytes than len(p) only at the end of the file, and no error
// there. It may use the spare capacity of p, beyond len(p), to decrypt
// whole blocks in place.
func (h *Handle) Read(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, syscall.EINVAL)
	}
	f := h.f
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.broken != nil {
		return 0, f.broken
	}
	if f.v3() {
		return f.readLocked3(h.fd, &h.direct, p, off)
	}
	return f.readLocked(h.fd, &h.direct, p, off)
}

// ReadAt implements io.ReaderAt.
func (h *Handle) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	// Not p's spare capacity: io.ReaderAt may use all of p, no more.
	n, err := h.Read(p[:len(p):len(p)], off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// WriteAt encrypts p into the blocks it covers at off, reading and
// re-encrypting partially covered blocks. An empty file gets its header
// (and data key) with its first byte.
func (h *Handle) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("write at %d: negative offset", off)
	}
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		return 0, f.broken
	}
	write := func() error { return f.writeLocked(ctx, h.fd, &h.wb, p, off) }
	if f.v3() {
		write = func() error {
			err := f.writeLocked3(ctx, h.fd, p, off)
			if err == nil && len(p) >= writebackMin {
				// As startWriteback: the pages of a large write go to the
				// disk while the next requests are encrypted.
				l := f.cfg.V3
				first := uint64(off) / uint64(l.BlockSize)
				from := l.DataOff(first)
				if g, i := l.Group(first); g > 0 && i > 0 {
					// The group's metadata page, written too, lies
					// before the first block.
					from = l.MetaOff(g)
				}
				startWriteback(h.fd, &h.wb, nil, from, int(l.PagedSize(off+int64(len(p)))-from))
			}
			return err
		}
	}
	if err := write(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Truncate sets the plaintext size; the partial block at a new end is
// re-encrypted.
func (h *Handle) Truncate(ctx context.Context, size int64) error {
	if size < 0 {
		return fmt.Errorf("truncate to %d: %w", size, syscall.EINVAL)
	}
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		return f.broken
	}
	return f.resizeLocked(ctx, h.fd, size)
}

// resizeLocked sets the plaintext size, for any version; f.mu is held
// exclusively.
func (f *File) resizeLocked(ctx context.Context, fd int, size int64) error {
	if f.v3() {
		return f.truncateLocked3(ctx, fd, size)
	}
	return f.truncateLocked(ctx, fd, size)
}

// Sync flushes the backing file to stable storage (its data only, if
// dataOnly).
func (h *Handle) Sync(dataOnly bool) error {
	if dataOnly {
		return unix.Fdatasync(h.fd)
	}
	return syscall.Fsync(h.fd)
}

// Allocate is fallocate(2) of the plaintext: mode 0 (reserve and extend)
// and FALLOC_FL_KEEP_SIZE reserve backing space; FALLOC_FL_PUNCH_HOLE
// (with FALLOC_FL_KEEP_SIZE, as Linux requires) and FALLOC_FL_ZERO_RANGE
// (extending the file unless with FALLOC_FL_KEEP_SIZE) make the range
// read as zeros: whole blocks become holes, partial blocks are
// re-encrypted with zeros. Other modes answer EOPNOTSUPP.
func (h *Handle) Allocate(ctx context.Context, off, size int64, mode uint32) error {
	if off < 0 || size <= 0 {
		return syscall.EINVAL
	}
	switch {
	case mode&^unix.FALLOC_FL_KEEP_SIZE == 0:
		return h.reserve(ctx, off, size, mode)
	case mode == unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE:
		return h.zero(ctx, off, off+size, false)
	case mode&^unix.FALLOC_FL_KEEP_SIZE == unix.FALLOC_FL_ZERO_RANGE:
		return h.zero(ctx, off, off+size, mode&unix.FALLOC_FL_KEEP_SIZE == 0)
	}
	return syscall.EOPNOTSUPP
}

// reserve is fallocate with mode 0 or FALLOC_FL_KEEP_SIZE.
func (h *Handle) reserve(ctx context.Context, off, size int64, mode uint32) error {
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		return f.broken
	}
	end := off + size
	if mode == 0 {
		p, _, err := f.sizes(h.fd)
		if err != nil {
			return err
		}
		if end > p {
			if err := f.resizeLocked(ctx, h.fd, end); err != nil {
				return err
			}
		}
	}
	if f.key == nil {
		return nil
	}
	if f.v3() {
		return f.reserve3(h.fd, off, end)
	}
	l := f.cfg.Layout
	cstart := l.BlockCipherOff(l.BlockNo(off))
	cend := l.CipherSize(end)
	err := unix.Fallocate(h.fd, unix.FALLOC_FL_KEEP_SIZE, cstart, cend-cstart)
	if err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		return err
	}
	return nil
}

// zero makes the plaintext [off, end) read as zeros, first extending the
// file to end if extend is set.
func (h *Handle) zero(ctx context.Context, off, end int64, extend bool) error {
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		return f.broken
	}
	f.seenOK = false
	p, _, err := f.sizes(h.fd)
	if err != nil {
		return err
	}
	if extend && end > p {
		// What the file grows by reads as zeros already.
		if err := f.resizeLocked(ctx, h.fd, end); err != nil {
			return err
		}
		end = p
	}
	if f.v3() {
		return f.zero3(h.fd, off, end)
	}
	end = min(end, p) // nothing to do past the end
	if off >= end || f.key == nil {
		return nil
	}
	_, c, err := f.sizes(h.fd)
	if err != nil {
		return err
	}
	l := f.cfg.Layout
	B := int64(l.BlockSize)
	tmp := getBuf(int(B))
	defer putBuf(tmp)
	// A block partly in the range, or the partial last block of the file
	// (only whole blocks can be holes), is re-encrypted with zeros.
	zeroPart := func(b, lo, hi int64) error {
		old, err := f.readBlock(h.fd, uint64(b), c, *tmp)
		if err != nil {
			return err
		}
		clear(old[lo-b*B : hi-b*B])
		return f.rewriteBlock(h.fd, uint64(b), old)
	}
	first, last := off/B, (end-1)/B
	holeLo, holeHi := first, last+1 // whole blocks to punch: [holeLo, holeHi)
	if off%B != 0 || (first+1)*B > p {
		if err := zeroPart(first, off, min(end, (first+1)*B)); err != nil {
			return err
		}
		holeLo = first + 1
	}
	if last >= holeLo && (end%B != 0 || end > p || (last+1)*B > p) {
		if err := zeroPart(last, max(off, last*B), end); err != nil {
			return err
		}
		holeHi = last
	}
	if holeLo >= holeHi {
		return nil
	}
	f.holes = holesMaybe
	return f.punchBlocksLocked(h.fd, uint64(holeLo), uint64(holeHi))
}

// punchBlocksLocked makes the stored blocks lo..hi-1 of fd all zeros
// (holes): punched out of the backing file, or, where its file system
// cannot punch, written as zeros through the journal (a zeroing cut
// short must not leave a block half zero).
func (f *File) punchBlocksLocked(fd int, lo, hi uint64) error {
	l := f.cfg.Layout
	cs, ce := l.BlockCipherOff(lo), l.BlockCipherOff(hi)
	err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, cs, ce-cs)
	if err == nil || !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	per := uint64(max(1, MaxRequest/l.BlockSize)) // blocks per write
	zeros := make([]byte, per*uint64(l.CipherBlockSize()))
	for b := lo; b < hi; b += per {
		n := min(per, hi-b)
		if err := f.cfg.Journal.write(f, fd, complete(zeros[:n*uint64(l.CipherBlockSize())]), l.BlockCipherOff(b), false); err != nil {
			return err
		}
	}
	return nil
}

// Seek is lseek(2) with SEEK_DATA or SEEK_HOLE on the plaintext. Holes
// are found from the backing file's own (SEEK_DATA and SEEK_HOLE there),
// block by block: a block is reported as a hole only if its whole stored
// block lies in a backing hole, which reads as zeros; a hole that the
// backing file system does not report is reported as data, as POSIX
// allows. Past the end it answers ENXIO.
func (h *Handle) Seek(off int64, whence int) (int64, error) {
	if whence != unix.SEEK_DATA && whence != unix.SEEK_HOLE {
		return 0, syscall.EINVAL
	}
	if off < 0 {
		return 0, syscall.ENXIO
	}
	f := h.f
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.broken != nil {
		return 0, f.broken
	}
	if f.v3() {
		return f.seek3(h.fd, off, whence)
	}
	p, c, err := f.sizes(h.fd)
	if err != nil && !errors.Is(err, blockcipher.ErrBadCipherSize) {
		return 0, err
	}
	if off >= p {
		return 0, syscall.ENXIO
	}
	l := f.cfg.Layout
	B := int64(l.BlockSize)
	cb := int64(l.CipherBlockSize())
	do := int64(l.DataOffset)
	blockAt := func(coff int64) int64 { return (coff - do) / cb }
	from := l.BlockCipherOff(uint64(off / B))
	if whence == unix.SEEK_DATA {
		d, err := unix.Seek(h.fd, from, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			return 0, syscall.ENXIO
		case err != nil:
			return off, nil // no SEEK_DATA there: all data
		}
		pos := max(off, blockAt(d)*B)
		if pos >= p {
			return 0, syscall.ENXIO
		}
		return pos, nil
	}
	for from < c {
		hs, err := unix.Seek(h.fd, from, unix.SEEK_HOLE)
		if err != nil || hs >= c {
			return p, nil
		}
		he, err := unix.Seek(h.fd, hs, unix.SEEK_DATA)
		if err != nil {
			he = c
		}
		// The first stored block that starts in the backing hole.
		k := (hs - do + cb - 1) / cb
		if l.BlockCipherOff(uint64(k))+cb <= he && (k+1)*B <= p {
			return max(off, k*B), nil
		}
		from = he
	}
	return p, nil
}

// bufPool holds buffers big enough for the largest request in ciphertext
// or plaintext form.
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

// readLocked decrypts into dest the plaintext at off; f.mu is held. A
// large read goes through direct (see directMin).
func (f *File) readLocked(fd int, direct *directFd, dest []byte, off int64) (int, error) {
	p, c, err := f.sizes(fd)
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
	if f.key == nil {
		return 0, fmt.Errorf("%w: no header", ErrCorrupt)
	}
	end := min(off+int64(len(dest)), p)
	l := f.cfg.Layout
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
	cipher := f.key.Cipher()
	m, err := 0, errDirect
	if cend-coff >= directMin {
		if dfd := direct.get(fd); dfd >= 0 {
			m, err = openDirect(cipher, l, dfd, coff, int(cend-coff), out[:0], first)
			if err == errDirect {
				direct.disable()
			}
		}
	}
	if err == errDirect {
		m, err = openSteps(cipher, l, fd, coff, int(cend-coff), out[:0], first)
	}
	if err != nil {
		return 0, fmt.Errorf("reading blocks %d-%d: %w", first, last, err)
	}
	if skip == 0 && cap(dest) >= need {
		// Aligned: decrypted straight into dest.
		return int(min(int64(m), end-off)), nil
	}
	return copy(dest, out[skip:min(int64(m), skip+(end-off))]), nil
}

// readBlock decrypts block b of a file whose backing size is c into dst's
// capacity, through the same step reader as every other read.
func (f *File) readBlock(fd int, b uint64, c int64, dst []byte) ([]byte, error) {
	l := f.cfg.Layout
	coff := l.BlockCipherOff(b)
	cend := min(coff+int64(l.CipherBlockSize()), c)
	if cend <= coff {
		return dst[:0], nil
	}
	m, err := openSteps(f.key.Cipher(), l, fd, coff, int(cend-coff), dst[:0], b)
	if err != nil {
		return nil, fmt.Errorf("reading block %d: %w", b, err)
	}
	return dst[:m], nil
}

// ensureHeaderLocked gives a headerless (empty) file its header and key;
// c is the backing size.
func (f *File) ensureHeaderLocked(ctx context.Context, fd int, c int64) error {
	if c > 0 {
		if f.key == nil {
			return f.loadKeyLocked(ctx, fd)
		}
		return nil
	}
	kctx, cancel := keyContext(ctx)
	defer cancel()
	hdr, k, err := f.cfg.Keys.New(kctx)
	if err != nil {
		return err
	}
	if err := pwriteFull(fd, hdr, 0); err != nil {
		k.Close()
		syscall.Ftruncate(fd, 0)
		return fmt.Errorf("writing header: %w", err)
	}
	if f.key != nil {
		f.key.Close()
	}
	f.key = k
	return nil
}

// rewriteBlock re-encrypts block b with plaintext plain and writes it.
func (f *File) rewriteBlock(fd int, b uint64, plain []byte) error {
	cbuf := getBuf(0)
	defer putBuf(cbuf)
	ct := f.key.Cipher().SealBlock((*cbuf)[:0], plain, b)
	return f.cfg.Journal.write(f, fd, complete(ct), f.cfg.Layout.BlockCipherOff(b), false)
}

// writeLocked writes data at off; f.mu is held exclusively.
func (f *File) writeLocked(ctx context.Context, fd int, wb *sync.WaitGroup, data []byte, off int64) error {
	f.seenOK = false
	if len(data) == 0 {
		return nil
	}
	p, c, err := f.sizes(fd)
	if err != nil {
		return err
	}
	if err := f.ensureHeaderLocked(ctx, fd, c); err != nil {
		return err
	}
	c = max(c, int64(f.cfg.Layout.DataOffset))
	l := f.cfg.Layout
	B := int64(l.BlockSize)
	end := off + int64(len(data))
	first, last := l.BlockRange(off, int64(len(data)))

	tmp := getBuf(int(B))
	defer putBuf(tmp)
	// A partial last block that the write does not reach is padded with
	// zeros to a full block: only full blocks may become holes.
	if p%B != 0 && uint64(p/B) < first {
		old, err := f.readBlock(fd, uint64(p/B), c, *tmp)
		if err != nil {
			return err
		}
		full := (*tmp)[:B]
		clear(full[len(old):])
		if err := f.rewriteBlock(fd, uint64(p/B), full); err != nil {
			return err
		}
	}

	start := int64(first) * B
	stop := min(int64(last+1)*B, max(end, p))
	cbuf := getBuf(0)
	defer putBuf(cbuf)
	cipher := f.key.Cipher()
	if off == start && (end%B == 0 || end >= p) {
		// Whole blocks, or a new last block: nothing old to keep, so seal
		// straight from the request.
		ct := sealPipelined(cipher, l, (*cbuf)[:0], data, first)
		return startWriteback(fd, wb, f.cfg.Journal.write(f, fd, ct, l.BlockCipherOff(first), false), l.BlockCipherOff(first), len(ct.data))
	}
	pbuf := getBuf(int(stop - start))
	defer putBuf(pbuf)
	plain := *pbuf
	clear(plain)
	if off > start && start < p {
		old, err := f.readBlock(fd, first, c, *tmp)
		if err != nil {
			return err
		}
		copy(plain, old)
	}
	if lastStart := int64(last) * B; end < stop && (last != first || off == start) && lastStart < p {
		old, err := f.readBlock(fd, last, c, *tmp)
		if err != nil {
			return err
		}
		copy(plain[lastStart-start:], old)
	}
	copy(plain[off-start:], data)
	ct := sealPipelined(cipher, l, (*cbuf)[:0], plain, first)
	return startWriteback(fd, wb, f.cfg.Journal.write(f, fd, ct, l.BlockCipherOff(first), false), l.BlockCipherOff(first), len(ct.data))
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

// truncateLocked sets the plaintext size; f.mu is held exclusively.
func (f *File) truncateLocked(ctx context.Context, fd int, size int64) error {
	f.seenOK = false
	p, c, err := f.sizes(fd)
	if err != nil && !errors.Is(err, blockcipher.ErrBadCipherSize) {
		return err
	}
	bad := err != nil
	if c == 0 && size == 0 {
		return nil
	}
	if err := f.ensureHeaderLocked(ctx, fd, c); err != nil {
		return err
	}
	l := f.cfg.Layout
	if c == 0 {
		c = int64(l.DataOffset)
	}
	if size == p && !bad {
		return nil
	}
	B := int64(l.BlockSize)
	tmp := getBuf(int(B))
	defer putBuf(tmp)
	if size <= p {
		if size%B == 0 {
			return syscall.Ftruncate(fd, l.CipherSize(size))
		}
		b := uint64(size / B)
		old, err := f.readBlock(fd, b, c, *tmp)
		if err != nil {
			return err
		}
		cbuf := getBuf(0)
		defer putBuf(cbuf)
		ct := f.key.Cipher().SealBlock((*cbuf)[:0], old[:size%B], b)
		return f.cfg.Journal.write(f, fd, complete(ct), l.BlockCipherOff(b), true)
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
		old, err := f.readBlock(fd, lb, c, *tmp)
		if err != nil {
			return err
		}
		newLen := min(B, size-int64(lb)*B)
		buf := (*tmp)[:newLen]
		clear(buf[len(old):])
		if err := f.rewriteBlock(fd, lb, buf); err != nil {
			return err
		}
		if size <= int64(lb+1)*B {
			return nil
		}
	}
	f.holes = holesMaybe // the new part is a hole
	if err := syscall.Ftruncate(fd, l.CipherSize(size)); err != nil {
		return err
	}
	if size%B != 0 {
		zeros := (*tmp)[:size%B]
		clear(zeros)
		return f.rewriteBlock(fd, uint64(size/B), zeros)
	}
	return nil
}
