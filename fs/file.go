package fs

import (
	"context"
	"errors"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
)

// File is an open regular file: an engine handle with a backing
// descriptor of its own (locks are per handle).
type File struct {
	n *Node
	h *cryptfile.Handle

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
	_ gofs.FileLseeker   = (*File)(nil)
	_ gofs.FileGetlker   = (*File)(nil)
	_ gofs.FileSetlker   = (*File)(nil)
	_ gofs.FileSetlkwer  = (*File)(nil)
)

// Read decrypts the blocks that cover [off, off+len(dest)).
func (f *File) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	cnt, err := f.h.Read(dest, off)
	if err != nil {
		return nil, f.n.errno("read", err)
	}
	return fuse.ReadResultData(dest[:cnt]), 0
}

// Write encrypts data into the blocks it covers.
func (f *File) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := f.h.WriteAt(ctx, data, off)
	if err != nil {
		return 0, f.n.errno("write", err)
	}
	return uint32(n), 0
}

// Flush releases POSIX locks held through this descriptor, as close(2)
// would. Data is already in the backing file.
func (f *File) Flush(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return syscall.EBADF
	}
	nfd, err := syscall.Dup(f.h.Fd())
	if err != nil {
		return gofs.ToErrno(err)
	}
	return gofs.ToErrno(syscall.Close(nfd))
}

// Fsync flushes the backing file to stable storage.
func (f *File) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.n.errno("fsync", f.h.Sync(flags&1 != 0))
}

// Release closes the handle; the last release of a file wipes its key.
func (f *File) Release(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return syscall.EBADF
	}
	f.closed = true
	f.n.removeFd(f.h.Fd())
	return gofs.ToErrno(f.h.Close())
}

// Allocate is fallocate(2): reserving space, punching holes and zeroing
// ranges (cryptfile.Handle.Allocate).
func (f *File) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	err := f.h.Allocate(ctx, int64(off), int64(size), mode)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		return syscall.EOPNOTSUPP // an answer, not a failure to log
	}
	return f.n.errno("fallocate", err)
}

// Lseek answers SEEK_DATA and SEEK_HOLE (the kernel handles the other
// whences itself).
func (f *File) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	pos, err := f.h.Seek(int64(off), int(whence))
	if en, ok := err.(syscall.Errno); ok && (en == syscall.ENXIO || en == syscall.EINVAL) {
		return 0, en
	}
	if err != nil {
		return 0, f.n.errno("lseek", err)
	}
	return uint64(pos), 0
}

// Getlk tests for a POSIX lock (open file description locks on the
// backing descriptor).
func (f *File) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return GetLock(f.h.Fd(), lk, out)
}

// Setlk takes or releases a lock without waiting.
func (f *File) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return SetLock(f.h.Fd(), lk, flags, false)
}

// Setlkw takes a lock, waiting for it.
func (f *File) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return SetLock(f.h.Fd(), lk, flags, true)
}

// errno logs err with the file's name and turns it into the errno the
// caller sees: EACCES when a key refuses, EIO for damaged data, the
// system's own errno otherwise.
func (n *Node) errno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	logf := func() { n.t.vol.Log.Printf("kmsfs: %s %s: %v", op, n.name(), err) }
	var en syscall.Errno
	switch {
	case errors.Is(err, context.Canceled):
		// The request was interrupted; the kernel retries or reports EINTR.
		return syscall.EINTR
	case errors.Is(err, cryptfile.ErrCorrupt), errors.Is(err, blockcipher.ErrAuth), errors.Is(err, blockcipher.ErrBadCipherSize):
		logf()
		return syscall.EIO
	case keyring.IsPermanent(err), errors.Is(err, volume.ErrUntrusted):
		logf()
		return syscall.EACCES
	case errors.Is(err, volume.ErrKeyUnavailable),
		errors.Is(err, keyring.ErrUnavailable), errors.Is(err, keyring.ErrThrottled), errors.Is(err, keyring.ErrKeyMemory):
		logf()
		return syscall.EIO
	case errors.As(err, &en):
		if en == syscall.ENOSPC || en == syscall.EDQUOT || en == syscall.EROFS {
			logf()
		}
		return en
	default:
		logf()
		return syscall.EIO
	}
}
