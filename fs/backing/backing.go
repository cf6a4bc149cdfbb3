// Package backing reaches entries of a backing directory through
// directory descriptors and never follows a symlink inside it.
//
// Whoever can write the backing directory (another local user, a sync
// tool, an attacker holding the storage) can replace any directory in it
// with a symlink at any time. A daemon that rebuilds absolute paths would
// then create, change or remove files wherever the symlink points, with
// the daemon's rights. Every path below the root is therefore resolved
// with openat2(2) and RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS (or, where the
// kernel lacks openat2, one O_NOFOLLOW openat per component), and the
// last component is handed to an *at system call that does not follow
// symlinks either. A symlink in the tree is only ever read as a symlink.
//
// Resolution is relative, so paths longer than PATH_MAX work: they are
// resolved in pieces shorter than PATH_MAX, each from the directory the
// previous piece led to.
package backing

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrSymlink is returned, wrapped, when a path below the root leads
// through a symlink or out of the root (a ".." component included).
var ErrSymlink = errors.New("backing path leads through a symlink or out of the backing directory")

// maxPiece is the longest path handed to one openat2 call (PATH_MAX
// includes the terminating NUL).
const maxPiece = unix.PathMax - 1

// noOpenat2 is set once the kernel has answered ENOSYS to openat2.
var noOpenat2 atomic.Bool

// Dir is an open backing directory: the root every path is resolved
// beneath.
type Dir struct {
	// Path is the absolute path the directory was opened at, for messages.
	Path string
	fd   int
}

// Open opens the backing directory at path. The path itself is resolved
// as usual (the user named it); everything below it is not.
func Open(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening backing directory %s: %w", path, err)
	}
	return &Dir{Path: path, fd: fd}, nil
}

// Close closes the directory descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Removed reports whether the root directory has been removed (it has
// no links left).
func (d *Dir) Removed() bool {
	var st unix.Stat_t
	return unix.Fstat(d.fd, &st) == nil && st.Nlink == 0
}

// Fd returns the O_PATH descriptor of the root.
func (d *Dir) Fd() int { return d.fd }

// OpenDir opens the directory rel beneath the root ("" is the root
// itself) as an O_PATH descriptor, for use as the dirfd of *at calls.
// The caller closes it.
func (d *Dir) OpenDir(rel string) (int, error) {
	if rel == "" || rel == "." {
		fd, err := unix.Dup(d.fd)
		if err != nil {
			return -1, err
		}
		unix.CloseOnExec(fd)
		return fd, nil
	}
	return d.Open(rel, unix.O_PATH|unix.O_DIRECTORY, 0)
}

// Open opens rel beneath the root with flags (O_NOFOLLOW and O_CLOEXEC
// are added); mode is used with O_CREAT. No component of rel may be a
// symlink; a symlink as the last component is opened as itself only with
// O_PATH, and fails with ELOOP otherwise.
func (d *Dir) Open(rel string, flags int, mode uint32) (int, error) {
	return OpenAt(d.fd, rel, flags, mode)
}

// OpenAt opens rel beneath the directory dirfd as Open does.
func OpenAt(dirfd int, rel string, flags int, mode uint32) (int, error) {
	rel = strings.TrimLeft(rel, "/")
	if rel == "" {
		rel = "."
	}
	if rel == ".." || strings.HasPrefix(rel, "../") || strings.HasSuffix(rel, "/..") || strings.Contains(rel, "/../") {
		return -1, fmt.Errorf("%s: %w", rel, ErrSymlink)
	}
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	if flags&unix.O_CREAT == 0 && flags&unix.O_TMPFILE != unix.O_TMPFILE {
		mode = 0
	}
	// openat2 refuses anything but permission bits (FUSE passes the type).
	mode &= 0o7777
	if len(rel) <= maxPiece {
		return openBeneath(dirfd, rel, flags, mode)
	}
	// Too long for one call: walk to the last piece's directory.
	cut := strings.LastIndexByte(rel[:maxPiece], '/')
	if cut <= 0 {
		return -1, syscall.ENAMETOOLONG
	}
	sub, err := openBeneath(dirfd, rel[:cut], unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(sub)
	return OpenAt(sub, rel[cut+1:], flags, mode)
}

// openBeneath is one openat2 call with RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS, or its component-by-component equivalent.
func openBeneath(dirfd int, rel string, flags int, mode uint32) (int, error) {
	if !noOpenat2.Load() {
		how := unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
		for {
			fd, err := unix.Openat2(dirfd, rel, &how)
			switch err {
			case nil:
				return fd, nil
			case unix.EINTR, unix.EAGAIN:
				continue
			case unix.ENOSYS:
				noOpenat2.Store(true)
			case unix.EXDEV, unix.ELOOP:
				return -1, fmt.Errorf("%s: %w (%w)", rel, ErrSymlink, err)
			default:
				return -1, err
			}
			break
		}
	}
	return openWalk(dirfd, rel, flags, mode)
}

// openWalk resolves rel one component at a time with O_NOFOLLOW.
func openWalk(dirfd int, rel string, flags int, mode uint32) (int, error) {
	parts := strings.Split(rel, "/")
	cur := dirfd
	closeCur := func() {
		if cur != dirfd {
			unix.Close(cur)
		}
	}
	defer closeCur()
	for i, p := range parts {
		if p == ".." {
			return -1, fmt.Errorf("%s: %w", rel, ErrSymlink)
		}
		if p == "" || p == "." && i < len(parts)-1 {
			continue
		}
		if i == len(parts)-1 {
			fd, err := unix.Openat(cur, p, flags, mode)
			if err == unix.ELOOP {
				return -1, fmt.Errorf("%s: %w (%w)", rel, ErrSymlink, err)
			}
			return fd, err
		}
		next, err := unix.Openat(cur, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if err == unix.ELOOP || err == unix.ENOTDIR {
				var st unix.Stat_t
				if unix.Fstatat(cur, p, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					return -1, fmt.Errorf("%s: %w", rel, ErrSymlink)
				}
			}
			return -1, err
		}
		closeCur()
		cur = next
	}
	return unix.Openat(cur, ".", flags, mode)
}

// Split returns the directory part and the last component of rel.
func Split(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// ProcPath names the file behind descriptor fd through /proc, for the
// system calls that have no descriptor form and must not resolve a path
// again (xattrs and chmod of an O_PATH descriptor): the magic link leads
// to the very inode fd refers to.
func ProcPath(fd int) string {
	return "/proc/self/fd/" + strconv.Itoa(fd)
}

// ErrnoOf returns the errno inside err, or EIO for errors that carry
// none (ErrSymlink carries ELOOP or EXDEV).
func ErrnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	if errors.Is(err, ErrSymlink) {
		return syscall.ELOOP
	}
	return syscall.EIO
}

// ErrNotRegular reports a small file kmsfs reads (ReadSmall) that is not
// a regular file.
var ErrNotRegular = errors.New("not a regular file")

// ReadSmall reads the regular file name in dirfd, at most max bytes. It
// looks before it opens, so a device or FIFO planted under that name is
// never opened (ErrNotRegular), and opens without following a symlink and
// with O_NONBLOCK, checking the descriptor again.
func ReadSmall(dirfd int, name string, max int) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s: %w", name, ErrNotRegular)
	}
	fd, err := OpenAt(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if errors.Is(err, ErrSymlink) {
		return nil, fmt.Errorf("%s: %w", name, ErrNotRegular)
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s: %w", name, ErrNotRegular)
	}
	buf := make([]byte, max)
	n := 0
	for n < max {
		k, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if k == 0 {
			break
		}
		n += k
	}
	return buf[:n], nil
}

// List returns the names in the directory rel beneath dirfd (without .
// and ..), opened as Open does.
func List(dirfd int, rel string) ([]string, error) {
	fd, err := OpenAt(dirfd, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	return f.Readdirnames(-1)
}
