package fs

import (
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// GetLock answers a FUSE GETLK for the backing descriptor fd. Locks are
// open file description locks, so each FUSE handle (each with its own
// backing descriptor) owns its locks, as a process's open file would.
func GetLock(fd int, lk *fuse.FileLock, out *fuse.FileLock) syscall.Errno {
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	err := syscall.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &flk)
	out.FromFlockT(&flk)
	return gofs.ToErrno(err)
}

// SetLock answers a FUSE SETLK (wait false) or SETLKW (wait true) on the
// backing descriptor fd: flock(2) locks when flags has FUSE_LK_FLOCK,
// open file description locks otherwise.
func SetLock(fd int, lk *fuse.FileLock, flags uint32, wait bool) syscall.Errno {
	if flags&fuse.FUSE_LK_FLOCK != 0 {
		var op int
		switch lk.Typ {
		case syscall.F_RDLCK:
			op = syscall.LOCK_SH
		case syscall.F_WRLCK:
			op = syscall.LOCK_EX
		case syscall.F_UNLCK:
			op = syscall.LOCK_UN
		default:
			return syscall.EINVAL
		}
		if !wait {
			op |= syscall.LOCK_NB
		}
		return gofs.ToErrno(syscall.Flock(fd, op))
	}
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	return gofs.ToErrno(syscall.FcntlFlock(uintptr(fd), cmd, &flk))
}
