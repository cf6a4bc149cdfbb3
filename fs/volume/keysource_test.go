package volume

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
)

// TestSharedKeyExpires: the data key new files share is dropped when its
// reuse window ends, even if no further file is created (an idle mount
// keeps no key that protected files it wrote).
func TestSharedKeyExpires(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "a.key")
	if err := local.Create(key, nil); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(dir, "vol")
	if err := os.Mkdir(vol, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res := keyring.NewResolver(keyring.NewRegistry(local.Register), keyring.Options{})
	if _, err := Init(ctx, vol, InitOptions{Keys: []string{local.URI(key)}, ReuseFiles: 100, ReuseSeconds: 1}, res); err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, vol, res, OpenOptions{Trusted: []string{local.URI(key)}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ks := newKeySource(v, v.Config.Keys, 100, 200*time.Millisecond, 0)
	defer ks.close()
	_, fk, err := ks.fileKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fk.Close()
	ks.mu.Lock()
	held := ks.cur != nil
	ks.mu.Unlock()
	if !held {
		t.Fatal("no shared key right after a new file")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ks.mu.Lock()
		held = ks.cur != nil
		ks.mu.Unlock()
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the shared data key is still held 5 s after its 200 ms reuse window")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
