package fs

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/header"
)

// Node is one file, directory or symlink of the mount. Directories,
// symlinks and metadata are passed to the backing directory by the
// embedded go-fuse loopback; everything that touches the contents or the
// size of a regular file is kmsfs's own.
//
// go-fuse keeps one Node per backing inode (hard links share it), so the
// per-file key state lives here: loaded at the first open, shared by every
// handle, wiped at the last release.
type Node struct {
	*gofs.LoopbackNode
	vol *Volume

	// mu orders access to the backing file's contents and size: readers
	// share it, writers and truncation hold it exclusively. It also guards
	// keys and opens.
	mu    sync.RWMutex
	keys  *fileKeys // nil until loaded, or while the file has no header
	opens int
	// holes says whether the backing file may have holes (see
	// Node.allocated): holesUnknown until asked, then holesNone or
	// holesMaybe; anything that may make a hole sets holesMaybe.
	holes holeState
	// seen is the backing file as an open last found it; seenOK is
	// cleared by every change made through kmsfs since (see keepCache).
	seen   fileStamp
	seenOK bool

	// fds are the backing descriptors open on this node (file handles and
	// directory handles). When the node's path no longer leads to it
	// (unlinked, replaced by a rename, O_TMPFILE), attributes and links
	// are served through one of them.
	fdMu sync.Mutex
	fds  map[int]struct{}
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

func (n *Node) addFd(fd int) {
	n.fdMu.Lock()
	if n.fds == nil {
		n.fds = map[int]struct{}{}
	}
	n.fds[fd] = struct{}{}
	n.fdMu.Unlock()
}

func (n *Node) removeFd(fd int) {
	n.fdMu.Lock()
	delete(n.fds, fd)
	n.fdMu.Unlock()
}

// withAnyFd calls fn with an open backing descriptor of this node, if it
// has one; the descriptor stays open during the call.
func (n *Node) withAnyFd(fn func(fd int) error) (bool, error) {
	n.fdMu.Lock()
	defer n.fdMu.Unlock()
	for fd := range n.fds {
		return true, fn(fd)
	}
	return false, nil
}

// statFallback answers a stat whose path lookup failed with ENOENT from
// an open descriptor of the node.
func (n *Node) statFallback(st *syscall.Stat_t, err error) error {
	if err != syscall.ENOENT {
		return err
	}
	if ok, ferr := n.withAnyFd(func(fd int) error { return syscall.Fstat(fd, st) }); ok {
		return ferr
	}
	return err
}

// Compile-time checks of the go-fuse interfaces Node overrides.
var (
	_ gofs.NodeLookuper       = (*Node)(nil)
	_ gofs.NodeGetattrer      = (*Node)(nil)
	_ gofs.NodeSetattrer      = (*Node)(nil)
	_ gofs.NodeStatxer        = (*Node)(nil)
	_ gofs.NodeOpener         = (*Node)(nil)
	_ gofs.NodeCreater        = (*Node)(nil)
	_ gofs.NodeWrapChilder    = (*Node)(nil)
	_ gofs.NodeOpendirHandler = (*Node)(nil)
	_ gofs.NodeTmpfiler       = (*Node)(nil)
	_ gofs.NodeMknoder        = (*Node)(nil)
	_ gofs.NodeMkdirer        = (*Node)(nil)
	_ gofs.NodeSymlinker      = (*Node)(nil)
	_ gofs.NodeLinker         = (*Node)(nil)
	_ gofs.NodeRenamer        = (*Node)(nil)
	_ gofs.NodeUnlinker       = (*Node)(nil)
	_ gofs.NodeRmdirer        = (*Node)(nil)
	_ gofs.NodeCopyFileRanger = (*Node)(nil)
)

// NewRoot returns the root node of a kmsfs mount of v.
func NewRoot(v *Volume) (*Node, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(v.Dir, &st); err != nil {
		return nil, err
	}
	r := &gofs.LoopbackRoot{Path: v.Dir, Dev: uint64(st.Dev)}
	n := &Node{LoopbackNode: &gofs.LoopbackNode{RootData: r}, vol: v}
	r.RootNode = n
	return n, nil
}

// WrapChild makes every node of the tree a kmsfs Node.
func (n *Node) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	if ln, ok := ops.(*gofs.LoopbackNode); ok {
		return &Node{LoopbackNode: ln, vol: n.vol}
	}
	return ops
}

func (n *Node) isRoot() bool { return n.EmbeddedInode() == n.Root() }

// hidden reports whether name is one of kmsfs's own files (only in the
// root directory; callers check isRoot).
func (n *Node) hidden(name string) bool { return internalName(name) }

// internalName reports whether name, in the root of the backing
// directory, is one of kmsfs's own files.
func internalName(name string) bool {
	return name == ConfigName || name == ConfigName+".tmp" || name == journalName
}

func (n *Node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.Root()))
}

// relPath names the file in log lines and errors.
func (n *Node) relPath() string {
	p := n.Path(n.Root())
	if p == "" {
		return "/"
	}
	return p
}

// plainSize translates a backing size into the size users see.
func (n *Node) plainSize(cipherSize int64) int64 {
	if cipherSize == 0 {
		return 0
	}
	l := n.vol.Layout
	p, err := l.PlainSize(cipherSize)
	if err != nil && cipherSize > header.Size {
		// A damaged tail of 1..28 bytes: count its bytes, so that reads
		// reach it and fail with EIO instead of the file silently
		// looking shorter.
		return p + (cipherSize-header.Size)%int64(l.CipherBlockSize())
	}
	return p
}

func (n *Node) fixAttr(a *fuse.Attr) {
	if a.Mode&syscall.S_IFMT == syscall.S_IFREG {
		a.Size = uint64(n.plainSize(int64(a.Size)))
	}
}

// Lookup hides the volume configuration and reports plaintext sizes.
func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.isRoot() && n.hidden(name) {
		return nil, syscall.ENOENT
	}
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno == 0 {
		n.fixAttr(&out.Attr)
	}
	return ch, errno
}

// Getattr reports the plaintext size of regular files.
func (n *Node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	var err error
	if kf, ok := f.(*File); ok {
		err = syscall.Fstat(kf.fd, &st)
	} else if n.isRoot() {
		err = syscall.Stat(n.backingPath(), &st)
	} else {
		err = n.statFallback(&st, syscall.Lstat(n.backingPath(), &st))
	}
	if err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStat(&st)
	n.fixAttr(&out.Attr)
	return 0
}

// Statx is answered like Getattr, with plaintext sizes.
func (n *Node) Statx(ctx context.Context, f gofs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	var st unix.Statx_t
	var err error
	if kf, ok := f.(*File); ok {
		err = unix.Statx(kf.fd, "", unix.AT_EMPTY_PATH, int(mask), &st)
	} else {
		err = unix.Statx(unix.AT_FDCWD, n.backingPath(), unix.AT_SYMLINK_NOFOLLOW, int(mask), &st)
		if err == unix.ENOENT {
			n.withAnyFd(func(fd int) error {
				err = unix.Statx(fd, "", unix.AT_EMPTY_PATH, int(mask), &st)
				return err
			})
		}
	}
	if err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStatx(&st)
	if st.Mode&syscall.S_IFMT == syscall.S_IFREG {
		out.Size = uint64(n.plainSize(int64(st.Size)))
	}
	return 0
}

// Setattr changes mode, owner, size and times; size changes re-encrypt
// the partial block at the new end.
func (n *Node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	p := n.backingPath()
	kf, _ := f.(*File)
	if m, ok := in.GetMode(); ok {
		var err error
		if kf != nil {
			err = syscall.Fchmod(kf.fd, m)
		} else {
			err = syscall.Chmod(p, m)
		}
		if err != nil {
			return gofs.ToErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		su, sg := -1, -1
		if uok {
			su = int(uid)
		}
		if gok {
			sg = int(gid)
		}
		if err := unix.Fchownat(unix.AT_FDCWD, p, su, sg, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		if errno := n.setSize(ctx, kf, int64(sz)); errno != 0 {
			return errno
		}
	}
	mt, mok := in.GetMTime()
	at, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(at.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mt.UnixNano())
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return gofs.ToErrno(err)
		}
	}
	return n.Getattr(ctx, f, out)
}

// setSize truncates through the handle kf, or through a temporary one.
func (n *Node) setSize(ctx context.Context, kf *File, size int64) syscall.Errno {
	if size < 0 {
		return syscall.EINVAL
	}
	if kf == nil {
		fd, errno := n.openBacking(syscall.O_RDWR)
		if errno != 0 {
			return errno
		}
		defer syscall.Close(fd)
		if errno := n.acquire(ctx, fd); errno != 0 {
			return errno
		}
		defer n.release(fd)
		kf = &File{n: n, fd: fd}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.errno("truncate", n.truncateLocked(ctx, kf.fd, size))
}

// openBacking opens this node's backing file without following a symlink
// that might have replaced it.
func (n *Node) openBacking(flags int) (int, syscall.Errno) {
	fd, err := syscall.Open(n.backingPath(), flags|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, gofs.ToErrno(err)
	}
	return fd, 0
}

// backingFlags turns the flags of a FUSE open into those for the backing
// file: always readable (partial block writes read first), never
// O_APPEND (the kernel computes append offsets from plaintext sizes) and
// never O_TRUNC (kmsfs truncates itself and keeps the header).
func backingFlags(flags uint32) int {
	f := int(flags) &^ (syscall.O_APPEND | syscall.O_TRUNC | syscall.O_ACCMODE | syscall.O_CREAT | syscall.O_EXCL | fuse.FMODE_EXEC | syscall.O_DIRECT)
	if int(flags)&syscall.O_ACCMODE != syscall.O_RDONLY {
		f |= syscall.O_RDWR
	}
	return f | syscall.O_CLOEXEC
}

// Open opens a regular file with kmsfs's own file handle (never a
// passthrough fd: the kernel would read ciphertext).
func (n *Node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fd, errno := n.openBacking(backingFlags(flags))
	if errno != 0 {
		return nil, 0, errno
	}
	return n.newHandle(ctx, fd, flags)
}

func (n *Node) newHandle(ctx context.Context, fd int, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.acquire(ctx, fd); errno != 0 {
		syscall.Close(fd)
		return nil, 0, errno
	}
	f := &File{n: n, fd: fd}
	if flags&syscall.O_TRUNC != 0 && int(flags)&syscall.O_ACCMODE != syscall.O_RDONLY {
		n.mu.Lock()
		err := n.truncateLocked(ctx, fd, 0)
		n.mu.Unlock()
		if err != nil {
			f.Release(ctx)
			return nil, 0, n.errno("open with O_TRUNC", err)
		}
	}
	var fuseFlags uint32
	if n.keepCache(fd) {
		fuseFlags = fuse.FOPEN_KEEP_CACHE
	}
	return f, fuseFlags, 0
}

// keepCache reports whether the kernel may keep what it caches of this
// file's plaintext across this open (FOPEN_KEEP_CACHE) instead of
// dropping it: only if the backing file is just as the previous open
// found it and nothing changed it through kmsfs since. What the kernel
// caches is then still what the file holds; a change behind the mount's
// back (another mount of the backing directory, a sync tool, a restore)
// moves the stamp and the next open drops the cache. Changes through
// kmsfs clear seenOK instead of updating the stamp: the kernel's copy of
// a failed write is not trusted.
func (n *Node) keepCache(fd int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil {
		n.seenOK = false
		return false
	}
	s := stampOf(&st)
	keep := n.seenOK && n.seen == s
	n.seen, n.seenOK = s, true
	return keep
}

// Create creates a regular file. Its header (and data key) is written
// with its first byte, so files that stay empty cost no key service call.
func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if n.isRoot() && n.hidden(name) {
		return nil, nil, 0, syscall.EPERM
	}
	p := filepath.Join(n.backingPath(), name)
	bf := backingFlags(flags) | syscall.O_CREAT | syscall.O_NOFOLLOW
	if flags&syscall.O_EXCL != 0 {
		bf |= syscall.O_EXCL
	}
	fd, err := syscall.Open(p, bf, mode)
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	if caller, ok := fuse.FromContext(ctx); ok && syscall.Getuid() == 0 {
		syscall.Fchown(fd, int(caller.Uid), int(caller.Gid))
	}
	ch, errno := n.Lookup(ctx, name, out)
	if errno != 0 {
		syscall.Close(fd)
		return nil, nil, 0, errno
	}
	cn, ok := ch.Operations().(*Node)
	if !ok {
		syscall.Close(fd)
		return nil, nil, 0, syscall.EIO
	}
	fh, fuseFlags, errno := cn.newHandle(ctx, fd, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 {
		out.Attr.Size = 0
	}
	return ch, fh, fuseFlags, 0
}

// acquire counts a new handle and loads the file's keys if it is the
// first one.
func (n *Node) acquire(ctx context.Context, fd int) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.keys == nil || n.replacedLocked(fd) {
		old := n.keys
		if err := n.loadKeysLocked(ctx, fd); err != nil {
			return n.errno("open", err)
		}
		if old != n.keys {
			old.destroy()
		}
	}
	n.opens++
	n.addFd(fd)
	return 0
}

// preadHead reads the start of the backing file into buf. Reading the
// header is not an access by the user: atime stays as it is (O_NOATIME
// needs ownership or CAP_FOWNER; without it atime moves).
func preadHead(fd int, buf []byte) (int, error) {
	fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	_, e := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NOATIME)
	n, err := preadAll(fd, buf, 0)
	if e == nil {
		unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	}
	return n, err
}

// replacedLocked reports whether the backing file now holds another
// kmsfs file than the one whose keys are loaded: its content was replaced
// in place behind the mount (a sync tool, a restore) while a handle was
// still open, or while the kernel had yet to release the last one. The
// file ID in the preamble tells.
func (n *Node) replacedLocked(fd int) bool {
	var pre [header.PreambleSize]byte
	if m, err := preadHead(fd, pre[:]); err != nil || m < len(pre) {
		return false
	}
	p, err := header.ParsePreamble(pre[:])
	return err == nil && p.FileID != n.keys.fileID
}

// release drops the handle on fd; the last one wipes the file's keys.
func (n *Node) release(fd int) {
	n.removeFd(fd)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.opens--
	if n.opens == 0 {
		if k := n.keys; k != nil && k.slot.URI != "" && !isLocal(k.slot.URI) {
			// The cached data key lives on for its TTL from now (local
			// keys are never cached).
			n.vol.res.Cache().Touch(n.vol.aliasOf(k.slot.URI), k.slot.Wrapped, k.slot.Context)
		}
		n.keys.destroy()
		n.keys = nil
	}
}

// keyTimeout bounds the key service calls of one file operation.
const keyTimeout = 2 * time.Minute

// keyContext detaches key service calls from the FUSE request: the kernel
// interrupts a request whenever the calling thread gets a signal (Go
// programs get SIGURG for preemption all the time), and an unwrap cut off
// that way would fail the open with EIO. The call runs to completion or to
// its own timeout instead.
func keyContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), keyTimeout)
}

// openReadahead is how much file content loadKeysLocked asks the kernel
// to read along with the header.
const openReadahead = 128 << 10

// loadKeysLocked reads and unlocks the header, if the file has one.
func (n *Node) loadKeysLocked(ctx context.Context, fd int) error {
	fk, err := n.vol.openKeys(ctx, fd, n.relPath)
	if err != nil {
		return err
	}
	n.keys = fk
	return nil
}

// headerPool recycles the buffers headers are read into (Parse copies
// what it keeps).
var headerPool = sync.Pool{New: func() any { return new([header.Size]byte) }}

// openKeys reads and unlocks the header of the backing file fd: nil keys
// for an empty file (it has no header yet). name names the file in errors
// and log lines; it is called only for them.
func (v *Volume) openKeys(ctx context.Context, fd int, name func() string) (*fileKeys, error) {
	// Ask for the header and the first blocks in one disk read: a reader
	// of the file comes for them next, and the kernel's readahead for a
	// lone header read would stop short of them.
	unix.Fadvise(fd, 0, header.Size+openReadahead, unix.FADV_WILLNEED)
	buf := headerPool.Get().(*[header.Size]byte)
	defer headerPool.Put(buf)
	n, err := preadHead(fd, buf[:])
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return nil, nil // no header yet
	case n < header.Size:
		return nil, errors.Join(ErrCorrupt, errors.New("backing file shorter than its header"))
	}
	h, err := header.Parse(buf[:])
	if err != nil {
		return nil, errors.Join(ErrCorrupt, err)
	}
	// Detached as keyContext explains; unwrapSlot bounds the calls that
	// can hang (a timer per open costs more than a local unwrap).
	return v.unlock(context.WithoutCancel(ctx), h, name())
}

// OpendirHandle opens a directory with a descriptor of its own (so the
// directory can still be stat'ed after a rename replaced it) and, in the
// root, hides kmsfs's own files.
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fd, err := syscall.Open(n.backingPath(), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	keep, err := syscall.Dup(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, 0, gofs.ToErrno(err)
	}
	ds, errno := gofs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		syscall.Close(fd)
		syscall.Close(keep)
		return nil, 0, errno
	}
	syscall.CloseOnExec(keep)
	n.addFd(keep)
	return &dirHandle{inner: ds, n: n, fd: keep, hide: n.isRoot()}, 0, 0
}

// Tmpfile creates an unnamed file (O_TMPFILE) with kmsfs's own handle;
// it can be given a name later with linkat(2).
func (n *Node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	fd, err := syscall.Open(n.backingPath(), backingFlags(flags)|unix.O_TMPFILE, mode)
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	if caller, ok := fuse.FromContext(ctx); ok && syscall.Getuid() == 0 {
		syscall.Fchown(fd, int(caller.Uid), int(caller.Gid))
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, nil, 0, gofs.ToErrno(err)
	}
	child := &Node{LoopbackNode: &gofs.LoopbackNode{RootData: n.RootData}, vol: n.vol}
	ch := n.NewInode(ctx, child, n.stableAttr(fd, &st))
	out.FromStat(&st)
	n.fixAttr(&out.Attr)
	fh, fl, errno := child.newHandle(ctx, fd, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, fh, fl, 0
}

// stableAttr computes the inode identity exactly as the go-fuse loopback
// does for Lookup (device mixed into the inode number, generation from
// the birth time), so a file made here and later looked up by name is
// the same Inode.
func (n *Node) stableAttr(fd int, st *syscall.Stat_t) gofs.StableAttr {
	swapped := (uint64(st.Dev) << 32) | (uint64(st.Dev) >> 32)
	swappedRoot := (n.RootData.Dev << 32) | (n.RootData.Dev >> 32)
	gen := uint64(1)
	var x unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &x) == nil && x.Mask&unix.STATX_BTIME != 0 && (x.Btime.Sec != 0 || x.Btime.Nsec != 0) {
		gen = uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
	}
	return gofs.StableAttr{Mode: st.Mode, Gen: gen, Ino: (swapped ^ swappedRoot) ^ st.Ino}
}

// CopyFileRange is refused so the kernel copies through Read and Write.
func (n *Node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, len uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.EOPNOTSUPP
}

// Mknod refuses kmsfs's own names; a regular file made by mknod is an
// empty kmsfs file.
func (n *Node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.isRoot() && n.hidden(name) {
		return nil, syscall.EPERM
	}
	ch, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	if errno == 0 {
		n.fixAttr(&out.Attr)
	}
	return ch, errno
}

// Mkdir refuses kmsfs's own names.
func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.isRoot() && n.hidden(name) {
		return nil, syscall.EPERM
	}
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

// Symlink refuses kmsfs's own names.
func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.isRoot() && n.hidden(name) {
		return nil, syscall.EPERM
	}
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

// Link refuses kmsfs's own names and reports plaintext sizes.
func (n *Node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.isRoot() && n.hidden(name) {
		return nil, syscall.EPERM
	}
	if tn, ok := target.(*Node); ok {
		if _, parent := tn.EmbeddedInode().Parent(); parent == nil {
			return n.linkUnnamed(ctx, tn, name, out)
		}
	}
	ch, errno := n.LoopbackNode.Link(ctx, target, name, out)
	if errno == 0 {
		n.fixAttr(&out.Attr)
	}
	return ch, errno
}

// linkUnnamed gives a file that is in no directory (O_TMPFILE, or
// unlinked while open) a name, through one of its open descriptors.
func (n *Node) linkUnnamed(ctx context.Context, tn *Node, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	dirfd, err := syscall.Open(n.backingPath(), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	defer syscall.Close(dirfd)
	ok, err := tn.withAnyFd(func(fd int) error {
		return unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH)
	})
	if !ok {
		return nil, syscall.EXDEV
	}
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.Lookup(ctx, name, out)
}

// Rename refuses to move anything to or from kmsfs's own names.
func (n *Node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.isRoot() && n.hidden(name) {
		return syscall.ENOENT
	}
	if np, ok := newParent.(*Node); ok && np.isRoot() && np.hidden(newName) {
		return syscall.EPERM
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

// Unlink does not see kmsfs's own names.
func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.isRoot() && n.hidden(name) {
		return syscall.ENOENT
	}
	return n.LoopbackNode.Unlink(ctx, name)
}

// Rmdir does not see kmsfs's own names.
func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.isRoot() && n.hidden(name) {
		return syscall.ENOENT
	}
	return n.LoopbackNode.Rmdir(ctx, name)
}

// dirHandle is a directory handle: go-fuse's loopback stream plus a
// descriptor of kmsfs's own; in the root it skips kmsfs's own entries.
type dirHandle struct {
	inner gofs.FileHandle
	n     *Node
	fd    int
	hide  bool
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileReleasedirer = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
)

// Readdirent returns the next entry that is not kmsfs's own.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	r, ok := d.inner.(gofs.FileReaddirenter)
	if !ok {
		return nil, syscall.ENOTSUP
	}
	for {
		e, errno := r.Readdirent(ctx)
		if errno != 0 || e == nil || !d.hide || !d.n.hidden(e.Name) {
			return e, errno
		}
	}
}

// Releasedir closes the directory.
func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.n.removeFd(d.fd)
	syscall.Close(d.fd)
	if r, ok := d.inner.(gofs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

// Seekdir rewinds or seeks the directory.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.inner.(gofs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

// Fsyncdir syncs the directory.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return gofs.ToErrno(syscall.Fsync(d.fd))
}
