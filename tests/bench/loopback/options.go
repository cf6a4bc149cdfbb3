package main

import (
	gofs "github.com/hanwen/go-fuse/v2/fs"

	kmsfs "github.com/kmsfs/kmsfs/fs"
)

// mountOptions returns the go-fuse options of a benchmark mount: kmsfs's
// own (fs.KernelOptions), so that the comparison is fair. The harness
// also compares the mounts' kernel-visible options (/proc/self/mountinfo)
// and reports any difference in docs/PERFORMANCE.md.
func mountOptions(name, fsName string) *gofs.Options {
	return kmsfs.KernelOptions(fsName, name)
}
