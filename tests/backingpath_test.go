package tests

import (
	"context"
	"io/fs"
	"path/filepath"
	"syscall"

	kmsvolume "github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
)

// backingRel returns the backing path, relative to the backing
// directory, of name as seen through the mount: the same path for a
// volume whose names are in clear, the encrypted one otherwise. It opens
// the volume in the test process with the volume's local key (the
// mount need not run); the directories on the way must exist.
func (v *volume) backingRel(name string) string {
	v.t.Helper()
	if dir, base := filepath.Split(name); dir == "" && kmsvolume.Internal(base) {
		return name // the root's own files keep their names
	}
	// Any local key of the test may be the one that opens the volume now
	// (rewrap tests change keys).
	keys := []string{v.keyURI}
	more, _ := filepath.Glob(filepath.Join(filepath.Dir(v.keyPath), "*.key"))
	for _, k := range more {
		keys = append(keys, "local://"+k)
	}
	res := keyring.NewResolver(keyring.NewRegistry(local.Register), keyring.Options{})
	kv, err := kmsvolume.Open(context.Background(), v.cipherDir, res, kmsvolume.OpenOptions{Trusted: keys})
	if err != nil {
		// A key this process cannot open (one sealed by a passphrase):
		// find the entry by its inode through the mount.
		if rel, ok := v.backingByInode(name); ok {
			return rel
		}
		v.t.Fatalf("opening %s to name %q in it: %v", v.cipherDir, name, err)
	}
	defer kv.Close()
	rel, err := kv.BackingPath(filepath.ToSlash(name))
	if err != nil {
		v.t.Fatalf("backing path of %q: %v", name, err)
	}
	return filepath.FromSlash(rel)
}

// backingByInode finds the backing entry of name, which must exist
// through the mount, by its inode number.
func (v *volume) backingByInode(name string) (string, bool) {
	var st syscall.Stat_t
	if !v.mounted || syscall.Lstat(v.path(name), &st) != nil {
		return "", false
	}
	found := ""
	filepath.WalkDir(v.cipherDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found != "" {
			return nil
		}
		var bst syscall.Stat_t
		if syscall.Lstat(p, &bst) == nil && bst.Ino == st.Ino && p != v.cipherDir {
			found, _ = filepath.Rel(v.cipherDir, p)
			return filepath.SkipAll
		}
		return nil
	})
	return found, found != ""
}
