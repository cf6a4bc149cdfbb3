package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
)

// TestOpenWrongKey checks that a configuration whose key refuses its slot
// (a key file replaced by another key's, or another key given as an extra
// key) is reported as a wrong key, not as damage, and that real damage
// stays damage.
func TestOpenWrongKey(t *testing.T) {
	dir := t.TempDir()
	keyA, keyB := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key")
	for _, k := range []string{keyA, keyB} {
		if err := local.Create(k, nil); err != nil {
			t.Fatal(err)
		}
	}
	uriA, uriB := local.URI(keyA), local.URI(keyB)
	vol := filepath.Join(dir, "vol")
	if err := os.Mkdir(vol, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	newRes := func() *keyring.Resolver {
		return keyring.NewResolver(keyring.NewRegistry(local.Register), keyring.Options{})
	}
	if _, err := Init(ctx, vol, InitOptions{Keys: []string{uriA}, ReuseFiles: 1, ReuseSeconds: 1}, newRes()); err != nil {
		t.Fatal(err)
	}
	open := func(extra ...string) error {
		v, err := Open(ctx, vol, newRes(), OpenOptions{Trusted: []string{uriA}, ExtraKeys: extra})
		if err == nil {
			v.Close()
		}
		return err
	}
	if err := open(); err != nil {
		t.Fatalf("Open() with the right key = %v", err)
	}
	a, _ := os.ReadFile(keyA)
	b, _ := os.ReadFile(keyB)
	move := func(data []byte) {
		t.Helper()
		os.Remove(keyA)
		if data != nil {
			if err := os.WriteFile(keyA, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}

	move(b) // key file A replaced by key B
	err := open()
	if !errors.Is(err, ErrWrongKey) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "does not open this volume") {
		t.Errorf("Open() with key file A holding key B = %v, want ErrWrongKey and not ErrCorrupt", err)
	}
	move(nil) // key file A gone, B given as an extra key
	err = open(uriB)
	if !errors.Is(err, ErrWrongKey) || errors.Is(err, ErrCorrupt) {
		t.Errorf("Open(--key B) with key file A missing = %v, want ErrWrongKey and not ErrCorrupt", err)
	}
	move(nil)
	if err := open(); !errors.Is(err, keyring.ErrKeyNotFound) || errors.Is(err, ErrWrongKey) {
		t.Errorf("Open() with key file A missing = %v, want keyring.ErrKeyNotFound", err)
	}
	move(a)

	// A configuration whose blocks are damaged is damage, whatever key.
	conf := filepath.Join(vol, ConfigName)
	raw, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), raw...)
	bad[len(bad)-3] ^= 1
	if err := os.WriteFile(conf, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := open(); !errors.Is(err, ErrBadConfig) || errors.Is(err, ErrWrongKey) {
		t.Errorf("Open() of a damaged configuration = %v, want ErrBadConfig", err)
	}
}
