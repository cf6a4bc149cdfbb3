package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
)

// testCtx is the encryption context the passphrase tests wrap under.
var testCtx = []byte(`{"kmsfs":"v1","volume":"00112233445566778899aabbccddeeff"}`)

func TestProtected(t *testing.T) {
	plain := newKeyFile(t)
	sealed := filepath.Join(t.TempDir(), "sealed")
	if err := Create(sealed, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		want       bool
	}{
		{"clear", plain, false},
		{"sealed", sealed, true},
		{"vector none", copyKeyFile(t, "key-none.json"), false},
		{"vector scrypt", copyKeyFile(t, "key-scrypt.json"), true},
	} {
		if got, err := Protected(tc.path); err != nil || got != tc.want {
			t.Errorf("%s: Protected(%s) = %v, %v, want %v, nil", tc.name, tc.path, got, err, tc.want)
		}
	}
	if _, err := Protected(filepath.Join(t.TempDir(), "none")); !errors.Is(err, keyring.ErrKeyNotFound) {
		t.Errorf("Protected(missing) error = %v, want keyring.ErrKeyNotFound", err)
	}
	if err := os.Chmod(plain, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Protected(plain); !errors.Is(err, ErrInsecureKeyFile) {
		t.Errorf("Protected(mode 0644) error = %v, want ErrInsecureKeyFile", err)
	}
	if _, err := Protected("relative"); !errors.Is(err, keyring.ErrBadURI) {
		t.Errorf("Protected(relative) error = %v, want keyring.ErrBadURI", err)
	}
}

// wrapWith wraps a fresh data key with the key file at path (opened with
// pass) and returns the data key's bytes and the wrapped key.
func wrapWith(t *testing.T, path, pass string) ([]byte, []byte) {
	t.Helper()
	k := openT(t, path, keyring.Options{Passphrase: passphrase(pass, nil)})
	dk, wrapped, err := k.GenerateDataKey(context.Background(), testCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Destroy()
	return bytes.Clone(dk.Bytes()), wrapped
}

// checkUnwraps checks that the key file at path, opened with pass, still
// unwraps wrapped to dk.
func checkUnwraps(t *testing.T, path, pass string, dk, wrapped []byte) {
	t.Helper()
	k, err := Open(path, keyring.Options{Passphrase: passphrase(pass, nil)})
	if err != nil {
		t.Fatalf("Open(%s) with passphrase %q error = %v", path, pass, err)
	}
	defer k.Close()
	got, err := k.Unwrap(context.Background(), wrapped, testCtx)
	if err != nil {
		t.Fatalf("Unwrap() after the passphrase change error = %v", err)
	}
	defer got.Destroy()
	if !bytes.Equal(got.Bytes(), dk) {
		t.Errorf("Unwrap() after the passphrase change returned another key")
	}
}

func TestChangePassphrase(t *testing.T) {
	path := newKeyFile(t)
	dk, wrapped := wrapWith(t, path, "")
	steps := []struct {
		name     string
		old, new string // "" new: remove the passphrase
		kdf      string
	}{
		{"add", "", "first", `"kdf":"scrypt"`},
		{"change", "first", "second", `"kdf":"scrypt"`},
		{"same again", "second", "second", `"kdf":"scrypt"`},
		{"remove", "second", "", `"kdf":"none"`},
	}
	for _, st := range steps {
		before, _ := os.ReadFile(path)
		var prompts []string
		ask := func(p string) func(string) ([]byte, error) {
			return func(prompt string) ([]byte, error) {
				prompts = append(prompts, prompt)
				return []byte(p), nil
			}
		}
		if err := ChangePassphrase(path, ask(st.old), ask(st.new)); err != nil {
			t.Fatalf("%s: ChangePassphrase() error = %v", st.name, err)
		}
		want := []string{"new passphrase for local key " + path}
		if st.old != "" {
			want = append([]string{"passphrase for local key " + path}, want...)
		}
		if strings.Join(prompts, "|") != strings.Join(want, "|") {
			t.Errorf("%s: prompts = %q, want %q", st.name, prompts, want)
		}
		after, _ := os.ReadFile(path)
		if bytes.Equal(before, after) || !bytes.Contains(after, []byte(st.kdf)) {
			t.Errorf("%s: key file after ChangePassphrase = %s, want a new file with %s", st.name, after, st.kdf)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: stat after ChangePassphrase = %v, %v, want mode 0600", st.name, fi, err)
		}
		checkUnwraps(t, path, st.new, dk, wrapped)
		if st.old != st.new {
			if _, err := Open(path, keyring.Options{Passphrase: passphrase(st.old, nil)}); st.new != "" && !errors.Is(err, keyring.ErrBadCredentials) {
				t.Errorf("%s: Open() with the old passphrase error = %v, want keyring.ErrBadCredentials", st.name, err)
			}
		}
		if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
			t.Errorf("%s: directory holds %v, want only the key file", st.name, ents)
		}
	}
	// A nil newPass removes the passphrase too.
	if err := ChangePassphrase(path, nil, passphrase("x", nil)); err != nil {
		t.Fatal(err)
	}
	if err := ChangePassphrase(path, passphrase("x", nil), nil); err != nil {
		t.Fatalf("ChangePassphrase(newPass nil) error = %v", err)
	}
	checkUnwraps(t, path, "", dk, wrapped)
}

func TestChangePassphraseRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := Create(path, []byte("right")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	errNoTTY := errors.New("no terminal")
	asked := false
	newPass := func(string) ([]byte, error) { asked = true; return []byte("new"), nil }
	for _, tc := range []struct {
		name    string
		oldPass func(string) ([]byte, error)
		newPass func(string) ([]byte, error)
		want    error
	}{
		{"wrong passphrase", passphrase("wrong", nil), newPass, keyring.ErrBadCredentials},
		{"no passphrase", nil, newPass, keyring.ErrBadCredentials},
		{"old prompt fails", passphrase("", errNoTTY), newPass, errNoTTY},
		{"new prompt fails", passphrase("right", nil), passphrase("", errNoTTY), errNoTTY},
	} {
		asked = false
		err := ChangePassphrase(path, tc.oldPass, tc.newPass)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: ChangePassphrase() error = %v, want %v naming %s", tc.name, err, tc.want, path)
		}
		if asked {
			t.Errorf("%s: the new passphrase was asked before the old one was checked", tc.name)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
			t.Errorf("%s: the key file changed", tc.name)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("directory holds %v, want only the key file", ents)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := ChangePassphrase(path, passphrase("right", nil), newPass); !errors.Is(err, ErrInsecureKeyFile) {
		t.Errorf("ChangePassphrase(mode 0640) error = %v, want ErrInsecureKeyFile", err)
	}
	if err := ChangePassphrase("relative", nil, nil); !errors.Is(err, keyring.ErrBadURI) {
		t.Errorf("ChangePassphrase(relative) error = %v, want keyring.ErrBadURI", err)
	}
}

// TestChangePassphraseSymlink checks that a key file reached through a
// symbolic link is replaced where it is, and the link kept.
func TestChangePassphraseSymlink(t *testing.T) {
	target := newKeyFile(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	dk, wrapped := wrapWith(t, link, "")
	if err := ChangePassphrase(link, nil, passphrase("pw", nil)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("os.Lstat(link) = %v, %v, want the symbolic link kept", fi, err)
	}
	checkUnwraps(t, target, "pw", dk, wrapped)
}

func TestChangePassphraseKeepsStricterMode(t *testing.T) {
	path := newKeyFile(t)
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := ChangePassphrase(path, nil, passphrase("pw", nil)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("stat after ChangePassphrase = %v, %v, want mode 0400", fi, err)
	}
}

// TestReplaceKeyFileFailure checks that a new key file that fails its
// check never replaces the old one, and leaves nothing behind.
func TestReplaceKeyFileFailure(t *testing.T) {
	path := newKeyFile(t)
	before, _ := os.ReadFile(path)
	var seen string
	err := replaceKeyFile(path, []byte("not a key file"), 0o600, func(tmp string) error {
		seen = tmp
		if filepath.Dir(tmp) != filepath.Dir(path) {
			t.Errorf("temporary file %s is not in the directory of %s", tmp, path)
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, before) {
			t.Errorf("the key file changed before the new one was checked")
		}
		return checkSameKey(tmp, nil, nil)
	})
	if !errors.Is(err, ErrSameKeyFile) {
		t.Errorf("replaceKeyFile(bad data) error = %v, want ErrSameKeyFile", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("the key file changed")
	}
	if _, err := os.Stat(seen); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file %s after a failure: %v, want it removed", seen, err)
	}
}
