package main

import (
	"context"
	"path/filepath"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	kmsfs "github.com/kmsfs/kmsfs/fs"
)

// copyNode is a loopback node whose regular files are served by copyFile
// handles: the daemon moves every byte, as kmsfs does. Everything else
// (lookup, directories, metadata) is go-fuse's loopback, as in kmsfs.
type copyNode struct {
	*gofs.LoopbackNode
}

var (
	_ gofs.NodeWrapChilder    = (*copyNode)(nil)
	_ gofs.NodeOpener         = (*copyNode)(nil)
	_ gofs.NodeCreater        = (*copyNode)(nil)
	_ gofs.NodeTmpfiler       = (*copyNode)(nil)
	_ gofs.NodeCopyFileRanger = (*copyNode)(nil)
)

// newCopyRoot returns the root of a daemon-copy loopback of dir.
func newCopyRoot(dir string) (*copyNode, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return nil, err
	}
	r := &gofs.LoopbackRoot{Path: dir, Dev: uint64(st.Dev)}
	n := &copyNode{LoopbackNode: &gofs.LoopbackNode{RootData: r}}
	r.RootNode = n
	return n, nil
}

// WrapChild makes every node of the tree a copyNode.
func (n *copyNode) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	if ln, ok := ops.(*gofs.LoopbackNode); ok {
		return &copyNode{LoopbackNode: ln}
	}
	return ops
}

func (n *copyNode) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.Root()))
}

// backingFlags drops the open flags the daemon must not pass on: the
// kernel computes append offsets itself, and O_DIRECT would impose
// alignment on the daemon's buffers (kmsfs drops both as well).
func backingFlags(flags uint32) int {
	return int(flags)&^(syscall.O_APPEND|fuse.FMODE_EXEC|syscall.O_DIRECT) | syscall.O_CLOEXEC
}

// Open opens the backing file with a handle of our own: never a
// passthrough descriptor.
func (n *copyNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fd, err := syscall.Open(n.backingPath(), backingFlags(flags)|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	return &copyFile{fd: fd}, 0, 0
}

// Create creates the backing file and returns a handle of our own.
func (n *copyNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	p := filepath.Join(n.backingPath(), name)
	fd, err := syscall.Open(p, backingFlags(flags)|syscall.O_CREAT|syscall.O_NOFOLLOW, mode)
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
	return ch, &copyFile{fd: fd}, 0, 0
}

// Tmpfile is refused: the stock loopback would return a passthrough
// handle (kmsfs refuses it too).
func (n *copyNode) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// CopyFileRange is refused so that the kernel copies through Read and
// Write, as on kmsfs.
func (n *copyNode) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.EOPNOTSUPP
}

// copyFile is an open regular file whose bytes pass through the daemon.
type copyFile struct {
	fd int
}

var (
	_ gofs.FileReader    = (*copyFile)(nil)
	_ gofs.FileWriter    = (*copyFile)(nil)
	_ gofs.FileFlusher   = (*copyFile)(nil)
	_ gofs.FileFsyncer   = (*copyFile)(nil)
	_ gofs.FileReleaser  = (*copyFile)(nil)
	_ gofs.FileGetattrer = (*copyFile)(nil)
	_ gofs.FileStatxer   = (*copyFile)(nil)
	_ gofs.FileAllocater = (*copyFile)(nil)
	_ gofs.FileGetlker   = (*copyFile)(nil)
	_ gofs.FileSetlker   = (*copyFile)(nil)
	_ gofs.FileSetlkwer  = (*copyFile)(nil)
)

// Read copies the backing bytes into the request's buffer.
func (f *copyFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n := 0
	for n < len(dest) {
		m, err := syscall.Pread(f.fd, dest[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, gofs.ToErrno(err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write copies data to the backing file.
func (f *copyFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n := 0
	for n < len(data) {
		m, err := syscall.Pwrite(f.fd, data[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return uint32(n), gofs.ToErrno(err)
		}
		n += m
	}
	return uint32(n), 0
}

// Flush releases the POSIX locks of this descriptor, as close(2) would.
func (f *copyFile) Flush(ctx context.Context) syscall.Errno {
	nfd, err := syscall.Dup(f.fd)
	if err != nil {
		return gofs.ToErrno(err)
	}
	return gofs.ToErrno(syscall.Close(nfd))
}

// Fsync flushes the backing file.
func (f *copyFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if flags&1 != 0 {
		return gofs.ToErrno(unix.Fdatasync(f.fd))
	}
	return gofs.ToErrno(syscall.Fsync(f.fd))
}

// Release closes the backing descriptor.
func (f *copyFile) Release(ctx context.Context) syscall.Errno {
	return gofs.ToErrno(syscall.Close(f.fd))
}

// Getattr stats the backing descriptor.
func (f *copyFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

// Statx stats the backing descriptor.
func (f *copyFile) Statx(ctx context.Context, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	var st unix.Statx_t
	if err := unix.Statx(f.fd, "", unix.AT_EMPTY_PATH, int(mask), &st); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStatx(&st)
	return 0
}

// Allocate reserves space in the backing file.
func (f *copyFile) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return gofs.ToErrno(unix.Fallocate(f.fd, mode, int64(off), int64(size)))
}

// Getlk tests for a lock, exactly as kmsfs does.
func (f *copyFile) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return kmsfs.GetLock(f.fd, lk, out)
}

// Setlk takes or releases a lock without waiting.
func (f *copyFile) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return kmsfs.SetLock(f.fd, lk, flags, false)
}

// Setlkw takes a lock, waiting for it.
func (f *copyFile) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return kmsfs.SetLock(f.fd, lk, flags, true)
}
