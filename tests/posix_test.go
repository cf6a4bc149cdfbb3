package tests

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// TestPosix runs every case of go-fuse's POSIX conformance suite on one
// kmsfs mount, each in a fresh directory. A case that skips itself (its
// way of saying the file system lacks a feature) fails here: kmsfs must
// support all of them.
//
// The cipher dir is on a tmpfs: XAttrLarge sets an 8 KiB attribute, which
// the ext4 of the test machines refuses (ENOSPC) on any file, encrypted
// or not.
func TestPosix(t *testing.T) {
	v := newVolume(t, cipherOnTmpfs())
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(v.mnt, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("os.Mkdir(%q) = %v, want nil", dir, err)
			}
			defer func() {
				if t.Skipped() {
					t.Errorf("posixtest.%s skipped itself (see the skip message above); kmsfs must pass every case", name)
				}
			}()
			fn(t, dir)
		})
	}
}
