package main

import (
	"os"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// mountOptions returns the go-fuse options of a benchmark mount.
//
// They MUST stay identical to what kmsfs's fs.Mount (fs/mount.go) passes to
// go-fuse, or the comparison is not fair: same timeouts, same MaxWrite,
// same kernel options. Only the names differ. When fs/mount.go changes,
// change this function; the harness also compares the two mounts'
// kernel-visible options (/proc/self/mountinfo) and reports any
// difference in docs/PERFORMANCE.md.
func mountOptions(name, fsName string) *gofs.Options {
	timeout := time.Second
	return &gofs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		MountOptions: fuse.MountOptions{
			DirectMount:       true,
			DirectMountStrict: os.Geteuid() == 0,
			FsName:            fsName,
			Name:              name,
			MaxWrite:          1 << 20,
			EnableLocks:       true,
			Options:           []string{"default_permissions"},
		},
	}
}
