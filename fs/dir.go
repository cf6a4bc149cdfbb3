package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kmsfs/kmsfs/fs/names"
)

// dirHandle is a directory handle: go-fuse's stream over a descriptor
// plus a descriptor of kmsfs's own. It skips kmsfs's own entries and,
// with encrypted names, decrypts the others (an entry that does not
// decrypt is logged and not listed).
type dirHandle struct {
	inner gofs.FileHandle
	n     *Node
	fd    int
	id    [names.IDSize]byte // directory ID (encrypted names)
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
		if errno != 0 || e == nil || e.Name == "." || e.Name == ".." {
			return e, errno
		}
		if d.n.hiddenBacking(e.Name) {
			continue
		}
		if d.n.t.names == nil {
			return e, 0
		}
		name, skip, err := d.n.t.decryptEntry(d.fd, d.id, e.Name)
		if skip {
			continue
		}
		if err != nil {
			d.n.t.vol.Log.Printf("kmsfs: %s: backing entry %q not listed: %v", d.n.name(), e.Name, err)
			continue
		}
		out := *e
		out.Name = name
		return &out, 0
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
