// Package fs is the FUSE edge of kmsfs: it serves a volume (package
// volume) at a mount point with go-fuse. Every backing entry is reached
// through directory descriptors that never follow a symlink (package
// backing); regular files are read and written by the encrypted-file
// engine (package cryptfile). Nothing here knows the format: this package
// turns FUSE requests into calls of those layers and their errors into
// errnos, with a log line that names the file.
package fs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/names"
	"github.com/kmsfs/kmsfs/fs/volume"
)

// tree is what every node of one mount shares.
type tree struct {
	vol   *volume.Volume
	dir   *backing.Dir
	files *cryptfile.Config
	dev   uint64 // device of the backing root, mixed into inode numbers
	// names encrypts entry names, symlink targets and xattrs; nil when
	// the volume keeps them in clear. rootID is the root's directory ID.
	names  *names.Cipher
	rootID [names.IDSize]byte
}

// Node is one file, directory, symlink or device node of the mount.
//
// go-fuse keeps one Node per backing inode (hard links share it), so the
// state a regular file's handles share (its key, its lock) lives here,
// in file.
type Node struct {
	gofs.Inode
	t *tree
	// file is the engine's state of a regular file; nil otherwise.
	file *cryptfile.File

	// fds are the backing descriptors open on this node (file handles and
	// directory handles). When the node's path no longer leads to it
	// (unlinked, replaced by a rename, O_TMPFILE), attributes and links
	// are served through one of them.
	fdMu sync.Mutex
	fds  map[int]struct{}

	// ns caches the node's directory ID and backing name (encrypted
	// names only).
	ns nameState
}

// Compile-time checks of the go-fuse interfaces Node implements.
var (
	_ gofs.NodeLookuper       = (*Node)(nil)
	_ gofs.NodeGetattrer      = (*Node)(nil)
	_ gofs.NodeSetattrer      = (*Node)(nil)
	_ gofs.NodeOpener         = (*Node)(nil)
	_ gofs.NodeCreater        = (*Node)(nil)
	_ gofs.NodeOpendirHandler = (*Node)(nil)
	_ gofs.NodeTmpfiler       = (*Node)(nil)
	_ gofs.NodeMknoder        = (*Node)(nil)
	_ gofs.NodeMkdirer        = (*Node)(nil)
	_ gofs.NodeSymlinker      = (*Node)(nil)
	_ gofs.NodeReadlinker     = (*Node)(nil)
	_ gofs.NodeLinker         = (*Node)(nil)
	_ gofs.NodeRenamer        = (*Node)(nil)
	_ gofs.NodeUnlinker       = (*Node)(nil)
	_ gofs.NodeRmdirer        = (*Node)(nil)
	_ gofs.NodeStatfser       = (*Node)(nil)
	_ gofs.NodeGetxattrer     = (*Node)(nil)
	_ gofs.NodeSetxattrer     = (*Node)(nil)
	_ gofs.NodeListxattrer    = (*Node)(nil)
	_ gofs.NodeRemovexattrer  = (*Node)(nil)
	_ gofs.NodeCopyFileRanger = (*Node)(nil)
)

// NewRoot returns the root node of a mount of v whose regular files are
// served with files.
func NewRoot(v *volume.Volume, files *cryptfile.Config) (*Node, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(v.Backing().Fd(), &st); err != nil {
		return nil, err
	}
	t := &tree{vol: v, dir: v.Backing(), files: files, dev: uint64(st.Dev), names: v.Names()}
	if t.names != nil {
		id, err := v.RootDirID()
		if err != nil {
			return nil, err
		}
		t.rootID = id
	}
	return &Node{t: t}, nil
}

// newNode returns a node for a backing entry of type mode.
func (t *tree) newNode(mode uint32) *Node {
	n := &Node{t: t}
	if mode&syscall.S_IFMT == syscall.S_IFREG {
		n.file = cryptfile.New(t.files, n.backingRel)
	}
	return n
}

func (n *Node) isRoot() bool { return n.EmbeddedInode() == n.Root() }

// backingRel is the node's backing path for the engine, which journals
// writes by it ("" when the node has none: it is then not journaled).
func (n *Node) backingRel() string {
	rel, err := n.rel()
	if err != nil {
		return ""
	}
	return rel
}

// name names the node in log lines: its path through the mount.
func (n *Node) name() string {
	if p := n.Path(n.Root()); p != "" {
		return p
	}
	return "/"
}

// hidden reports whether name, seen through the mount in this directory,
// is one of kmsfs's own files: only in the root, and only when names are
// in clear (an encrypted name never equals one of them).
func (n *Node) hidden(name string) bool {
	return n.t.names == nil && n.isRoot() && volume.Internal(name)
}

// hiddenBacking reports whether the backing entry name in this directory
// is one of kmsfs's own files, not listed through the mount.
func (n *Node) hiddenBacking(name string) bool {
	if n.isRoot() && volume.Internal(name) {
		return true
	}
	return n.t.names != nil && names.Internal(name)
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

// inDir calls fn with a descriptor of this directory node (valid during
// the call).
func (n *Node) inDir(fn func(dirfd int) error) error {
	if n.isRoot() {
		return fn(n.t.dir.Fd())
	}
	rel, err := n.rel()
	if err != nil {
		return err
	}
	fd, err := n.t.dir.OpenDir(rel)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return fn(fd)
}

// atSelf calls fn with the node's parent directory and its name in it,
// so that fn can use *at calls with AT_SYMLINK_NOFOLLOW on the node
// itself. The root is (root, "."). If the path no longer leads to the
// node and it has an open descriptor, fn gets (fd, "") instead: callers
// then pass AT_EMPTY_PATH.
func (n *Node) atSelf(fn func(dirfd int, name string) error) error {
	if n.isRoot() {
		return fn(n.t.dir.Fd(), ".")
	}
	rel, err := n.rel()
	if err == nil {
		dir, name := backing.Split(rel)
		var fd int
		fd, err = n.t.dir.OpenDir(dir)
		if err == nil {
			err = fn(fd, name)
			syscall.Close(fd)
		}
	}
	if err == syscall.ENOENT {
		if ok, ferr := n.withAnyFd(func(fd int) error { return fn(fd, "") }); ok {
			return ferr
		}
	}
	return err
}

// emptyPath returns AT_EMPTY_PATH for an empty name (see atSelf).
func emptyPath(name string) int {
	if name == "" {
		return unix.AT_EMPTY_PATH
	}
	return 0
}

// statAt stats name in dirfd without following a symlink and returns the
// generation go-fuse gives the inode (its birth time).
func statAt(dirfd int, name string, st *syscall.Stat_t) (gen uint64, err error) {
	var x unix.Statx_t
	err = unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|emptyPath(name), unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x)
	if err != nil {
		return 0, err
	}
	*st = syscall.Stat_t{
		Dev:     unix.Mkdev(x.Dev_major, x.Dev_minor),
		Ino:     x.Ino,
		Nlink:   uint64(x.Nlink),
		Mode:    uint32(x.Mode),
		Uid:     x.Uid,
		Gid:     x.Gid,
		Rdev:    unix.Mkdev(x.Rdev_major, x.Rdev_minor),
		Size:    int64(x.Size),
		Blksize: int64(x.Blksize),
		Blocks:  int64(x.Blocks),
		Atim:    syscall.Timespec{Sec: x.Atime.Sec, Nsec: int64(x.Atime.Nsec)},
		Mtim:    syscall.Timespec{Sec: x.Mtime.Sec, Nsec: int64(x.Mtime.Nsec)},
		Ctim:    syscall.Timespec{Sec: x.Ctime.Sec, Nsec: int64(x.Ctime.Nsec)},
	}
	gen = 1
	if x.Mask&unix.STATX_BTIME != 0 && (x.Btime.Sec != 0 || x.Btime.Nsec != 0) {
		gen = uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
	}
	return gen, nil
}

// stableAttr computes the inode identity as go-fuse's loopback does
// (device mixed into the inode number, generation from the birth time).
func (t *tree) stableAttr(st *syscall.Stat_t, gen uint64) gofs.StableAttr {
	swapped := (uint64(st.Dev) << 32) | (uint64(st.Dev) >> 32)
	swappedRoot := (t.dev << 32) | (t.dev >> 32)
	return gofs.StableAttr{Mode: st.Mode, Gen: gen, Ino: (swapped ^ swappedRoot) ^ st.Ino}
}

// fixAttr reports the plaintext size of regular files (and of symlink
// targets when they are encrypted).
func (t *tree) fixAttr(a *fuse.Attr) {
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		a.Size = uint64(t.files.StatSize(int64(a.Size)))
	case syscall.S_IFLNK:
		if t.names != nil {
			a.Size = linkSize(a.Size)
		}
	}
}

// child stats name in dirfd and returns its Inode, new or known.
func (n *Node) child(ctx context.Context, dirfd int, name string, out *fuse.EntryOut) (*gofs.Inode, error) {
	var st syscall.Stat_t
	gen, err := statAt(dirfd, name, &st)
	if err != nil {
		return nil, err
	}
	out.FromStat(&st)
	n.t.fixAttr(&out.Attr)
	return n.NewInode(ctx, n.t.newNode(st.Mode), n.t.stableAttr(&st, gen)), nil
}

// chownCaller gives what a request created to the calling user, when the
// server runs as root (as a kernel file system would).
func chownCaller(ctx context.Context, dirfd int, name string) {
	if syscall.Getuid() != 0 {
		return
	}
	if caller, ok := fuse.FromContext(ctx); ok {
		unix.Fchownat(dirfd, name, int(caller.Uid), int(caller.Gid), unix.AT_SYMLINK_NOFOLLOW|emptyPath(name))
	}
}

// Lookup hides kmsfs's own files and reports plaintext sizes.
func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.ENOENT
	}
	var ch *gofs.Inode
	err := n.inDir(func(dirfd int) error {
		e, err := n.entry(dirfd, name)
		if err != nil {
			return err
		}
		ch, err = n.child(ctx, dirfd, e.Backing, out)
		return err
	})
	if err != nil {
		return nil, n.pathErrno("lookup", err)
	}
	return ch, 0
}

// Getattr reports attributes as stored, with plaintext sizes.
func (n *Node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	var err error
	if kf, ok := f.(*File); ok {
		err = syscall.Fstat(kf.h.Fd(), &st)
	} else {
		err = n.atSelf(func(dirfd int, name string) error {
			_, err := statAt(dirfd, name, &st)
			return err
		})
	}
	if err != nil {
		return n.pathErrno("stat", err)
	}
	out.FromStat(&st)
	n.t.fixAttr(&out.Attr)
	return 0
}

// Setattr changes mode, owner, size and times; size changes re-encrypt
// the partial block at the new end.
func (n *Node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	kf, _ := f.(*File)
	if m, ok := in.GetMode(); ok {
		var err error
		if kf != nil {
			err = syscall.Fchmod(kf.h.Fd(), m)
		} else {
			err = n.atSelf(func(dirfd int, name string) error { return chmodAt(dirfd, name, m) })
		}
		if err != nil {
			return n.pathErrno("chmod", err)
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
		err := n.atSelf(func(dirfd int, name string) error {
			return unix.Fchownat(dirfd, name, su, sg, unix.AT_SYMLINK_NOFOLLOW|emptyPath(name))
		})
		if err != nil {
			return n.pathErrno("chown", err)
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
		var err error
		if kf != nil {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, backing.ProcPath(kf.h.Fd()), ts, 0)
		} else {
			err = n.atSelf(func(dirfd int, name string) error {
				return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW|emptyPath(name))
			})
		}
		if err != nil {
			return n.pathErrno("utimens", err)
		}
	}
	return n.Getattr(ctx, f, out)
}

// chmodAt changes the mode of name in dirfd without following a
// symlink: fchmodat2 where the kernel has it, otherwise through an
// O_PATH descriptor of the entry (a symlink's mode cannot change).
func chmodAt(dirfd int, name string, mode uint32) error {
	err := unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW|emptyPath(name))
	if err != unix.EOPNOTSUPP && err != unix.ENOSYS && err != unix.EINVAL {
		return err
	}
	fd := dirfd
	if name != "" {
		if fd, err = backing.OpenAt(dirfd, name, unix.O_PATH, 0); err != nil {
			return err
		}
		defer syscall.Close(fd)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
		return syscall.EOPNOTSUPP
	}
	return syscall.Chmod(backing.ProcPath(fd), mode)
}

// setSize truncates through the handle kf, or through a temporary one.
func (n *Node) setSize(ctx context.Context, kf *File, size int64) syscall.Errno {
	if size < 0 {
		return syscall.EINVAL
	}
	if n.file == nil {
		return syscall.EISDIR
	}
	h := (*cryptfile.Handle)(nil)
	if kf != nil {
		h = kf.h
	} else {
		fd, err := n.openBacking(syscall.O_RDWR)
		if err != nil {
			return n.pathErrno("truncate", err)
		}
		if h, err = n.file.Open(ctx, fd); err != nil {
			return n.errno("truncate", err)
		}
		n.addFd(fd)
		defer func() {
			n.removeFd(fd)
			h.Close()
		}()
	}
	return n.errno("truncate", h.Truncate(ctx, size))
}

// openBacking opens this node's backing file without following a symlink
// that might have replaced it or any directory above it.
func (n *Node) openBacking(flags int) (int, error) {
	rel, err := n.rel()
	if err != nil {
		return -1, err
	}
	return n.t.dir.Open(rel, flags, 0)
}

// backingFlags turns the flags of a FUSE open into those for the backing
// file: always readable (partial block writes read first), never
// O_APPEND (the kernel computes append offsets from plaintext sizes) and
// never O_TRUNC (kmsfs truncates itself and keeps the header).
//
// Only flags known to mean something for the backing file pass: openat2
// refuses unknown bits, and FUSE passes bits of the kernel's own.
func backingFlags(flags uint32) int {
	f := int(flags) & (syscall.O_SYNC | syscall.O_DSYNC | syscall.O_NOATIME | syscall.O_NONBLOCK | syscall.O_LARGEFILE)
	if int(flags)&syscall.O_ACCMODE != syscall.O_RDONLY {
		f |= syscall.O_RDWR
	}
	return f | syscall.O_CLOEXEC
}

// Open opens a regular file with kmsfs's own file handle (never a
// passthrough fd: the kernel would read ciphertext).
func (n *Node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if n.file == nil {
		return nil, 0, syscall.EINVAL
	}
	fd, err := n.openBacking(backingFlags(flags))
	if err != nil {
		return nil, 0, n.pathErrno("open", err)
	}
	return n.newHandle(ctx, fd, flags)
}

// newHandle makes a FUSE file handle of the backing descriptor fd, which
// it owns from then on.
func (n *Node) newHandle(ctx context.Context, fd int, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	h, err := n.file.Open(ctx, fd)
	if err != nil {
		return nil, 0, n.errno("open", err)
	}
	n.addFd(fd)
	f := &File{n: n, h: h}
	if flags&syscall.O_TRUNC != 0 && int(flags)&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := h.Truncate(ctx, 0); err != nil {
			f.Release(ctx)
			return nil, 0, n.errno("open with O_TRUNC", err)
		}
	}
	var fuseFlags uint32
	if h.KeepCache() {
		fuseFlags = fuse.FOPEN_KEEP_CACHE
	}
	return f, fuseFlags, 0
}

// Create creates a regular file. Its header (and data key) is written
// with its first byte, so files that stay empty cost no key service call.
func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if n.hidden(name) {
		return nil, nil, 0, syscall.EPERM
	}
	var ch *gofs.Inode
	fd := -1
	err := n.inDir(func(dirfd int) error {
		bf := backingFlags(flags) | syscall.O_CREAT
		if flags&syscall.O_EXCL != 0 {
			bf |= syscall.O_EXCL
		}
		e, err := n.entry(dirfd, name)
		if err != nil {
			return err
		}
		undo, err := ensureLong(dirfd, e)
		if err != nil {
			return err
		}
		if fd, err = backing.OpenAt(dirfd, e.Backing, bf, mode); err != nil {
			undo()
			return err
		}
		chownCaller(ctx, fd, "")
		if ch, err = n.child(ctx, fd, "", out); err != nil {
			syscall.Close(fd)
		}
		return err
	})
	if err != nil {
		return nil, nil, 0, n.pathErrno("create", err)
	}
	cn, ok := ch.Operations().(*Node)
	if !ok || cn.file == nil {
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

// Tmpfile creates an unnamed file (O_TMPFILE) with kmsfs's own handle;
// it can be given a name later with linkat(2).
func (n *Node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	var ch *gofs.Inode
	fd := -1
	err := n.inDir(func(dirfd int) error {
		var err error
		if fd, err = backing.OpenAt(dirfd, ".", backingFlags(flags)|unix.O_TMPFILE, mode); err != nil {
			return err
		}
		chownCaller(ctx, fd, "")
		if ch, err = n.child(ctx, fd, "", out); err != nil {
			syscall.Close(fd)
		}
		return err
	})
	if err != nil {
		return nil, nil, 0, n.pathErrno("tmpfile", err)
	}
	cn, ok := ch.Operations().(*Node)
	if !ok || cn.file == nil {
		syscall.Close(fd)
		return nil, nil, 0, syscall.EIO
	}
	fh, fl, errno := cn.newHandle(ctx, fd, flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, fh, fl, 0
}

// OpendirHandle opens a directory with a descriptor of its own (so the
// directory can still be stat'ed after a rename replaced it) and, in the
// root, hides kmsfs's own files.
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if n.isRoot() && n.t.dir.Removed() {
		// The mount holds a descriptor of the backing directory; listing it
		// after it was removed would show an empty volume, not an error.
		n.t.vol.Log.Printf("kmsfs: the backing directory %s was removed", n.t.dir.Path)
		return nil, 0, syscall.ENOENT
	}
	rel, err := n.rel()
	if err != nil {
		return nil, 0, n.pathErrno("opendir", err)
	}
	fd, err := n.t.dir.Open(rel, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, 0, n.pathErrno("opendir", err)
	}
	keep, err := syscall.Dup(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, 0, gofs.ToErrno(err)
	}
	syscall.CloseOnExec(keep)
	ds, errno := gofs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		syscall.Close(fd)
		syscall.Close(keep)
		return nil, 0, errno
	}
	n.addFd(keep)
	d := &dirHandle{inner: ds, n: n, fd: keep}
	if n.t.names != nil {
		if d.id, err = n.dirID(keep); err != nil {
			d.Releasedir(ctx, 0)
			return nil, 0, n.errno("opendir", err)
		}
	}
	return d, 0, 0
}

// CopyFileRange is refused so the kernel copies through Read and Write.
func (n *Node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, len uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.EOPNOTSUPP
}

// Mknod makes a device node, FIFO or socket; a regular file made by
// mknod is an empty kmsfs file.
func (n *Node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.make(ctx, "mknod", name, out, func(dirfd int, bname string) error {
		return unix.Mknodat(dirfd, bname, mode, int(rdev))
	})
}

// Mkdir makes a directory.
func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	var id [names.IDSize]byte
	made := false
	ch, errno := n.make(ctx, "mkdir", name, out, func(dirfd int, bname string) error {
		if err := unix.Mkdirat(dirfd, bname, mode); err != nil {
			return err
		}
		if n.t.names == nil {
			return nil
		}
		// The new directory gets its ID before it is used; a crash before
		// that leaves an empty directory, which gets one on first use.
		fd, err := backing.OpenAt(dirfd, bname, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		if id, err = writeDirID(fd); err != nil {
			unix.Unlinkat(dirfd, bname, unix.AT_REMOVEDIR)
			return err
		}
		made = true
		return nil
	})
	// The new directory's node knows its ID without reading it back.
	if errno == 0 && made && ch != nil {
		if cn, ok := ch.Operations().(*Node); ok {
			cn.setDirID(id)
		}
	}
	return ch, errno
}

// Symlink makes a symlink; its target is encrypted when names are (it is
// only ever read back, never followed by kmsfs).
func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.make(ctx, "symlink", name, out, func(dirfd int, bname string) error {
		stored := target
		if n.t.names != nil {
			var err error
			if stored, err = n.t.names.EncryptTarget([]byte(target)); err != nil {
				return err
			}
		}
		return unix.Symlinkat(stored, dirfd, bname)
	})
}

// make runs mk, which creates name in this directory, gives the entry to
// the caller and looks it up.
func (n *Node) make(ctx context.Context, op, name string, out *fuse.EntryOut, mk func(dirfd int, bname string) error) (*gofs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	var ch *gofs.Inode
	err := n.inDir(func(dirfd int) error {
		e, err := n.entry(dirfd, name)
		if err != nil {
			return err
		}
		undo, err := ensureLong(dirfd, e)
		if err != nil {
			return err
		}
		if err := mk(dirfd, e.Backing); err != nil {
			undo()
			return err
		}
		chownCaller(ctx, dirfd, e.Backing)
		ch, err = n.child(ctx, dirfd, e.Backing, out)
		return err
	})
	if err != nil {
		return nil, n.pathErrno(op, err)
	}
	return ch, 0
}

// Readlink reads a symlink.
func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	var out []byte
	err := n.atSelf(func(dirfd int, name string) error {
		for l := 256; ; l *= 2 {
			buf := make([]byte, l)
			sz, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				return err
			}
			if sz < len(buf) {
				out = buf[:sz]
				return nil
			}
		}
	})
	if err != nil {
		return nil, n.pathErrno("readlink", err)
	}
	if n.t.names != nil {
		if out, err = n.t.names.DecryptTarget(out); err != nil {
			return nil, n.errno("readlink", err)
		}
	}
	return out, 0
}

// Link makes a hard link to target named name in this directory.
func (n *Node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	tn, ok := target.(*Node)
	if !ok {
		return nil, syscall.EXDEV
	}
	return n.make(ctx, "link", name, out, func(dirfd int, bname string) error {
		return tn.atSelf(func(tdir int, tname string) error {
			if tname == "" {
				// In no directory (O_TMPFILE, or unlinked while open): linked
				// through its descriptor.
				return unix.Linkat(tdir, "", dirfd, bname, unix.AT_EMPTY_PATH)
			}
			return unix.Linkat(tdir, tname, dirfd, bname, 0)
		})
	})
}

// Rename renames name in this directory to newName in newParent, with
// renameat2's flags; kmsfs's own files cannot be involved.
func (n *Node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*Node)
	if !ok {
		return syscall.EXDEV
	}
	if n.hidden(name) {
		return syscall.ENOENT
	}
	if np.hidden(newName) {
		return syscall.EPERM
	}
	err := n.inDir(func(olddir int) error {
		return np.inDir(func(newdir int) error {
			from, err := n.entry(olddir, name)
			if err != nil {
				return err
			}
			to, err := np.entry(newdir, newName)
			if err != nil {
				return err
			}
			undo, err := ensureLong(newdir, to)
			if err != nil {
				return err
			}
			err = unix.Renameat2(olddir, from.Backing, newdir, to.Backing, uint(flags))
			if (err == syscall.ENOTEMPTY || err == syscall.EEXIST) && n.t.names != nil && flags&(unix.RENAME_EXCHANGE|unix.RENAME_NOREPLACE) == 0 {
				// Over a directory that is empty through the mount: its
				// own directory ID goes first.
				if err = clearOwn(newdir, to.Backing); err == nil {
					err = unix.Renameat2(olddir, from.Backing, newdir, to.Backing, uint(flags))
				}
			}
			if err != nil {
				undo()
				return err
			}
			// After an exchange both names still exist; a rename to itself
			// keeps its name.
			if flags&unix.RENAME_EXCHANGE == 0 && !(n == np && from == to) {
				removeLong(olddir, from)
			}
			return nil
		})
	})
	return n.pathErrno("rename", err)
}

// Unlink removes a file; kmsfs's own files are not there.
func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.hidden(name) {
		return syscall.ENOENT
	}
	return n.pathErrno("unlink", n.inDir(func(dirfd int) error {
		e, err := n.entry(dirfd, name)
		if err != nil {
			return err
		}
		if err := unix.Unlinkat(dirfd, e.Backing, 0); err != nil {
			return err
		}
		removeLong(dirfd, e)
		return nil
	}))
}

// Rmdir removes a directory.
func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.hidden(name) {
		return syscall.ENOENT
	}
	return n.pathErrno("rmdir", n.inDir(func(dirfd int) error {
		e, err := n.entry(dirfd, name)
		if err != nil {
			return err
		}
		if n.t.names == nil {
			return unix.Unlinkat(dirfd, e.Backing, unix.AT_REMOVEDIR)
		}
		if err := rmdirAt(dirfd, e.Backing); err != nil {
			return err
		}
		removeLong(dirfd, e)
		return nil
	}))
}

// Statfs reports the backing file system's numbers.
func (n *Node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(n.t.dir.Fd(), &st); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

// xattrs calls fn with a path that reaches exactly this node's inode
// through /proc (xattr calls have no *at form that does not follow
// symlinks); symlinks carry no extended attributes here.
func (n *Node) xattrs(op string, fn func(path string) error) syscall.Errno {
	if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFLNK {
		return syscall.EPERM
	}
	err := n.atSelf(func(dirfd int, name string) error {
		fd := dirfd
		if name != "" {
			var err error
			if fd, err = backing.OpenAt(dirfd, name, unix.O_PATH, 0); err != nil {
				return err
			}
			defer syscall.Close(fd)
		}
		return fn(backing.ProcPath(fd))
	})
	if err == syscall.ENODATA || err == syscall.ERANGE {
		return err.(syscall.Errno)
	}
	return n.pathErrno(op, err)
}

// Getxattr reads an extended attribute (decrypted, when names are
// encrypted and it is in the user. or trusted. namespace).
func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	var sz int
	if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFLNK {
		return 0, syscall.ENODATA
	}
	if n.t.names == nil || !names.XattrEncrypted(attr) {
		errno := n.xattrs("getxattr", func(p string) error {
			var err error
			sz, err = unix.Getxattr(p, attr, dest)
			return err
		})
		return uint32(sz), errno
	}
	bname, err := n.t.names.EncryptXattrName(attr)
	if err != nil {
		return 0, syscall.ENODATA // too long to have been stored
	}
	var plain []byte
	errno := n.xattrs("getxattr", func(p string) error {
		buf := make([]byte, names.MaxXattrValue+names.Overhead)
		k, err := unix.Getxattr(p, bname, buf)
		if err != nil {
			return err
		}
		if plain, err = n.t.names.DecryptXattrValue(attr, buf[:k]); err != nil {
			n.t.vol.Log.Printf("kmsfs: getxattr %s %s: %v", n.name(), attr, err)
			return syscall.EIO
		}
		return nil
	})
	if errno != 0 {
		return 0, errno
	}
	return xattrReply(dest, plain)
}

// xattrReply answers getxattr or listxattr with data: its size for a
// size query (empty dest), ERANGE if dest is too small.
func xattrReply(dest, data []byte) (uint32, syscall.Errno) {
	switch {
	case len(dest) == 0:
		return uint32(len(data)), 0
	case len(dest) < len(data):
		return 0, syscall.ERANGE
	}
	return uint32(copy(dest, data)), 0
}

// backingXattr returns the backing name of attr and, for a value, its
// stored form.
func (n *Node) backingXattr(attr string, data []byte) (string, []byte, syscall.Errno) {
	if n.t.names == nil || !names.XattrEncrypted(attr) {
		return attr, data, 0
	}
	bname, err := n.t.names.EncryptXattrName(attr)
	if err != nil {
		return "", nil, syscall.ERANGE
	}
	if data == nil {
		return bname, nil, 0
	}
	v, err := n.t.names.EncryptXattrValue(attr, data)
	if errors.Is(err, names.ErrTooLong) {
		return "", nil, syscall.E2BIG
	}
	if err != nil {
		return "", nil, n.errno("setxattr", err)
	}
	return bname, v, 0
}

// Setxattr writes an extended attribute.
func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if data == nil {
		data = []byte{}
	}
	bname, v, errno := n.backingXattr(attr, data)
	if errno != 0 {
		return errno
	}
	return n.xattrs("setxattr", func(p string) error { return unix.Setxattr(p, bname, v, int(flags)) })
}

// Removexattr removes an extended attribute.
func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	bname, _, errno := n.backingXattr(attr, nil)
	if errno == syscall.ERANGE {
		return syscall.ENODATA
	}
	if errno != 0 {
		return errno
	}
	return n.xattrs("removexattr", func(p string) error { return unix.Removexattr(p, bname) })
}

// Listxattr lists extended attribute names (decrypted; a backing
// attribute that does not decrypt is logged and not listed).
func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var sz int
	if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFLNK {
		return 0, 0
	}
	if n.t.names == nil {
		errno := n.xattrs("listxattr", func(p string) error {
			var err error
			sz, err = unix.Listxattr(p, dest)
			return err
		})
		return uint32(sz), errno
	}
	var list []byte
	errno := n.xattrs("listxattr", func(p string) error {
		for {
			k, err := unix.Listxattr(p, nil)
			if err != nil {
				return err
			}
			buf := make([]byte, k+256)
			k, err = unix.Listxattr(p, buf)
			if err == syscall.ERANGE {
				continue // grew in between
			}
			if err != nil {
				return err
			}
			for _, b := range strings.Split(string(buf[:k]), "\x00") {
				if b == "" {
					continue
				}
				name := b
				if names.XattrEncrypted(b) {
					var err error
					if name, err = n.t.names.DecryptXattrName(b); err != nil {
						n.t.vol.Log.Printf("kmsfs: listxattr %s: backing attribute %q not listed: %v", n.name(), b, err)
						continue
					}
				}
				list = append(append(list, name...), 0)
			}
			return nil
		}
	})
	if errno != 0 {
		return 0, errno
	}
	return xattrReply(dest, list)
}

// pathErrno turns the error of a backing operation into an errno; a path
// that leads through a symlink planted in the backing directory is
// refused with ELOOP and logged.
func (n *Node) pathErrno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errors.Is(err, backing.ErrSymlink) {
		n.t.vol.Log.Printf("kmsfs: %s %s: refused: %v", op, n.name(), err)
		return syscall.ELOOP
	}
	switch {
	case errors.Is(err, names.ErrTooLong):
		return syscall.ENAMETOOLONG
	case errors.Is(err, names.ErrUndecryptable), errors.Is(err, errNoDirID):
		n.t.vol.Log.Printf("kmsfs: %s %s: %v", op, n.name(), err)
		return syscall.EIO
	}
	return backing.ErrnoOf(err)
}
