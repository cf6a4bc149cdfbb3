package fs

import (
	"fmt"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions are the user's choices for one mount.
type MountOptions struct {
	// ReadOnly mounts read-only.
	ReadOnly bool
	// AllowOther lets other users use the mount; the kernel then enforces
	// Unix permissions (default_permissions).
	AllowOther bool
	// Debug logs every FUSE request (never contents).
	Debug bool
}

// Mount serves v at mountpoint and returns once the mount is ready. The
// caller unmounts with server.Unmount and waits with server.Wait.
func Mount(v *Volume, mountpoint string, o MountOptions) (*fuse.Server, error) {
	root, err := NewRoot(v)
	if err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	// The kernel has already applied the caller's umask to create modes;
	// the daemon must not apply its own a second time.
	syscall.Umask(0)
	timeout := time.Second
	opts := &gofs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		MountOptions: fuse.MountOptions{
			DirectMount: true,
			FsName:      v.Dir,
			Name:        "kmsfs",
			MaxWrite:    1 << 20,
			AllowOther:  o.AllowOther,
			EnableLocks: true,
			Debug:       o.Debug,
			Options:     []string{"default_permissions"},
		},
	}
	if o.ReadOnly {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "ro")
	}
	srv, err := gofs.Mount(mountpoint, root, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	return srv, nil
}
