package tests

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleVolumeV1 mounts the frozen volume of format version 1 made by
// tests/testdata/example-v1/make.sh and checks every file against the
// checksums taken when it was made. Every later kmsfs must pass this.
func TestExampleVolumeV1(t *testing.T) {
	src := filepath.Join("testdata", "example-v1")
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "local.key")
	b, err := os.ReadFile(filepath.Join(src, "local.key"))
	if err != nil {
		t.Fatal(err)
	}
	// git does not keep mode 0600, which the local keyring insists on.
	if err := os.WriteFile(key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// The key slots name the key by the path it had when the volume was
	// made; --key offers the copy.
	v := newVolume(t, notMounted(), withMountArgs("--key", "local://"+key))
	if err := os.RemoveAll(v.cipherDir); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", filepath.Join(src, "cipher"), v.cipherDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	v.mount()

	sums, err := os.Open(filepath.Join(src, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	n := 0
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		want, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("bad SHA256SUMS line %q", sc.Text())
		}
		data, err := os.ReadFile(v.path(name))
		if err != nil {
			t.Errorf("ReadFile(%s) = %v, want nil", name, err)
			continue
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("sha256(%s) = %s, want %s", name, got, want)
		}
		n++
	}
	if n < 8 {
		t.Errorf("checked %d files, want at least 8", n)
	}
	if target, err := os.Readlink(v.path("link")); err != nil || target != "hello.txt" {
		t.Errorf("Readlink(link) = %q, %v; want hello.txt", target, err)
	}
	// The old volume stays writable, and new files read back after a
	// remount.
	if err := os.WriteFile(v.path("new.txt"), []byte("written by a later kmsfs"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.path("hello.txt"), []byte("rewritten"), 0o644); err != nil {
		t.Fatal(err)
	}
	v.remount()
	for name, want := range map[string]string{"new.txt": "written by a later kmsfs", "hello.txt": "rewritten"} {
		if got, err := os.ReadFile(v.path(name)); err != nil || string(got) != want {
			t.Errorf("ReadFile(%s) after remount = %q, %v; want %q", name, got, err, want)
		}
	}
}
