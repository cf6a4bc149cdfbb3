package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirHandle is a directory handle: go-fuse's stream over a descriptor
// plus a descriptor of kmsfs's own; in the root it skips kmsfs's own
// entries.
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
