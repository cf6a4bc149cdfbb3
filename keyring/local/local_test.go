package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/keyringtest"
)

// newKeyFile creates an unprotected key file in a fresh directory.
func newKeyFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key")
	if err := Create(path, nil); err != nil {
		t.Fatalf("Create(%s, nil) error = %v", path, err)
	}
	return path
}

func openT(t *testing.T, path string, opts keyring.Options) *Keyring {
	t.Helper()
	k, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s) error = %v", path, err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func TestConformance(t *testing.T) {
	keyringtest.Run(t, func(t *testing.T) keyring.Keyring {
		kr, err := keyring.NewRegistry(Register).Open(context.Background(), URI(newKeyFile(t)), keyring.Options{})
		if err != nil {
			t.Fatalf("Registry.Open() error = %v", err)
		}
		t.Cleanup(func() { kr.(*Keyring).Close() })
		return kr
	})
}

func TestReopen(t *testing.T) {
	path := newKeyFile(t)
	a, b := openT(t, path, keyring.Options{}), openT(t, path, keyring.Options{})
	if a.KeyID() != b.KeyID() {
		t.Errorf("KeyID() = %s and %s for one file, want equal", a.KeyID(), b.KeyID())
	}
	encCtx := keyringtest.EncryptionContext(t)
	dk, wrapped, err := a.GenerateDataKey(context.Background(), encCtx)
	if err != nil {
		t.Fatalf("GenerateDataKey() error = %v", err)
	}
	defer dk.Destroy()
	if len(wrapped) != WrappedSize {
		t.Errorf("len(wrapped) = %d, want %d", len(wrapped), WrappedSize)
	}
	got, err := b.Unwrap(context.Background(), wrapped, encCtx)
	if err != nil {
		t.Fatalf("Unwrap() with second instance error = %v", err)
	}
	defer got.Destroy()
	if !bytes.Equal(got.Bytes(), dk.Bytes()) {
		t.Errorf("Unwrap() with second instance returned a different key")
	}
}

func TestOtherKey(t *testing.T) {
	a, b := openT(t, newKeyFile(t), keyring.Options{}), openT(t, newKeyFile(t), keyring.Options{})
	encCtx := keyringtest.EncryptionContext(t)
	dk, wrapped, err := a.GenerateDataKey(context.Background(), encCtx)
	if err != nil {
		t.Fatalf("GenerateDataKey() error = %v", err)
	}
	dk.Destroy()
	_, err = b.Unwrap(context.Background(), wrapped, encCtx)
	if !errors.Is(err, keyring.ErrUnwrap) {
		t.Fatalf("Unwrap() by other key error = %v, want keyring.ErrUnwrap", err)
	}
	for _, id := range []string{a.KeyID(), b.KeyID()} {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("Unwrap() by other key error = %q, want it to name key ID %s", err, id)
		}
	}
}

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri, path string // path "" means an error is expected
	}{
		{"local:///home/u/.kmsfs/key", "/home/u/.kmsfs/key"},
		{"local:///k", "/k"},
		{"local:///a%20b/key", "/a b/key"},
		{"local://host/k", ""},
		{"local://user@/k", ""},
		{"local://localhost/k", ""},
		{"local:k", ""},
		{"local:/k", ""},
		{"local://", ""},
		{"local:", ""},
		{"local:///k?x=1", ""},
		{"local:///k?", ""},
		{"local:///k#f", ""},
		{"local:///a/../k", ""},
		{"local:///a//k", ""},
		{"local:///a/", ""},
		{"local:///a/.", ""},
		{"local:///a%2Fb", ""},
		{"file:///k", ""},
		{"%", ""},
	} {
		path, err := ParseURI(tc.uri)
		if tc.path == "" {
			if err == nil || !errors.Is(err, keyring.ErrBadURI) {
				t.Errorf("ParseURI(%q) = %q, %v, want error wrapping keyring.ErrBadURI", tc.uri, path, err)
			}
			continue
		}
		if err != nil || path != tc.path {
			t.Errorf("ParseURI(%q) = %q, %v, want %q, nil", tc.uri, path, err, tc.path)
		}
		if got := URI(path); got != tc.uri {
			t.Errorf("URI(%q) = %q, want %q", path, got, tc.uri)
		}
	}
}

func TestOpenBadURI(t *testing.T) {
	_, err := keyring.NewRegistry(Register).Open(context.Background(), "local://host/k", keyring.Options{})
	if !errors.Is(err, keyring.ErrBadURI) {
		t.Errorf("Registry.Open(local://host/k) error = %v, want keyring.ErrBadURI", err)
	}
	if _, err := Open("rel/key", keyring.Options{Create: true}); !errors.Is(err, keyring.ErrBadURI) {
		t.Errorf("Open(rel/key) error = %v, want keyring.ErrBadURI", err)
	}
	if err := Create("rel/key", nil); err == nil {
		t.Errorf("Create(rel/key) error = nil, want an error")
	}
}

func TestKeyFileMode(t *testing.T) {
	path := newKeyFile(t)
	for _, tc := range []struct {
		mode fs.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o700, true},
		{0o640, false},
		{0o644, false},
		{0o604, false},
		{0o660, false},
		{0o602, false},
		{0o610, false},
		{0o601, false},
		{0o666, false},
	} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		k, err := Open(path, keyring.Options{})
		if tc.ok {
			if err != nil {
				t.Errorf("mode %04o: Open() error = %v, want nil", tc.mode, err)
			} else {
				k.Close()
			}
			continue
		}
		if !errors.Is(err, ErrInsecureKeyFile) || !errors.Is(err, keyring.ErrAccessDenied) {
			t.Errorf("mode %04o: Open() error = %v, want ErrInsecureKeyFile and keyring.ErrAccessDenied", tc.mode, err)
		} else if !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: Open() error = %q, want it to say chmod 600 %s", tc.mode, err, path)
		}
	}
}

func TestKeyFileOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file away")
	}
	path := newKeyFile(t)
	if err := os.Chown(path, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, keyring.Options{})
	if !errors.Is(err, ErrInsecureKeyFile) || !strings.Contains(err.Error(), "uid 12345") {
		t.Errorf("Open() of file owned by uid 12345 error = %v, want ErrInsecureKeyFile naming uid 12345", err)
	}
}

func TestKeyFileMissingOrNotRegular(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "none"), keyring.Options{}); !errors.Is(err, keyring.ErrKeyNotFound) {
		t.Errorf("Open(missing) error = %v, want keyring.ErrKeyNotFound", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, keyring.Options{}); !errors.Is(err, ErrKeyFile) {
		t.Errorf("Open(directory) error = %v, want ErrKeyFile", err)
	}
}

func passphrase(p string, err error) func(string) ([]byte, error) {
	return func(string) ([]byte, error) {
		if err != nil {
			return nil, err
		}
		return []byte(p), nil
	}
}

func TestPassphrase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := Create(path, []byte("right")); err != nil {
		t.Fatalf("Create() error = %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"kdf":"scrypt","scrypt":{"n":32768,"r":8,"p":1,`)) {
		t.Errorf("key file = %s, want kdf scrypt with n 32768, r 8, p 1", data)
	}
	var prompt string
	k := openT(t, path, keyring.Options{Passphrase: func(p string) ([]byte, error) {
		prompt = p
		return []byte("right"), nil
	}})
	if want := "passphrase for local key " + path; prompt != want {
		t.Errorf("prompt = %q, want %q", prompt, want)
	}
	if !strings.Contains(string(data), k.KeyID()) {
		t.Errorf("key file does not contain KeyID() %s", k.KeyID())
	}
	errNoTTY := errors.New("no terminal")
	for _, tc := range []struct {
		name string
		opts keyring.Options
		want error
	}{
		{"wrong", keyring.Options{Passphrase: passphrase("wrong", nil)}, keyring.ErrBadCredentials},
		{"empty", keyring.Options{Passphrase: passphrase("", nil)}, keyring.ErrBadCredentials},
		{"missing", keyring.Options{}, keyring.ErrBadCredentials},
		{"prompt fails", keyring.Options{Passphrase: passphrase("", errNoTTY)}, errNoTTY},
	} {
		_, err := Open(path, tc.opts)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: Open() error = %v, want %v naming %s", tc.name, err, tc.want, path)
		}
	}
}

func TestOpenCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	plain := filepath.Join(dir, "plain")
	k := openT(t, plain, keyring.Options{Create: true})
	if fi, err := os.Stat(plain); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("created key file: stat = %v, %v, want mode 0600", fi, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created parent: stat = %v, %v, want mode 0700", fi, err)
	}
	if data, _ := os.ReadFile(plain); !bytes.Contains(data, []byte(`"kdf":"none"`)) {
		t.Errorf("key file created without passphrase func = %s, want kdf none", data)
	}
	// Opening again with Create must keep the key.
	if again := openT(t, plain, keyring.Options{Create: true}); again.KeyID() != k.KeyID() {
		t.Errorf("reopen with Create: KeyID() = %s, want %s", again.KeyID(), k.KeyID())
	}

	sealed := filepath.Join(dir, "sealed")
	var prompts []string
	ask := func(p string) ([]byte, error) {
		prompts = append(prompts, p)
		return []byte("pw"), nil
	}
	openT(t, sealed, keyring.Options{Create: true, Passphrase: ask})
	// The new file opens with the passphrase it was made with: no second
	// question.
	want := []string{"new passphrase for local key " + sealed}
	if strings.Join(prompts, "|") != strings.Join(want, "|") {
		t.Errorf("prompts = %q, want %q", prompts, want)
	}
	if data, _ := os.ReadFile(sealed); !bytes.Contains(data, []byte(`"kdf":"scrypt"`)) {
		t.Errorf("key file created with passphrase = %s, want kdf scrypt", data)
	}
}

func TestCreateExisting(t *testing.T) {
	path := newKeyFile(t)
	before, _ := os.ReadFile(path)
	if err := Create(path, nil); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create(existing) error = %v, want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("Create(existing) changed the file")
	}
}

func TestClose(t *testing.T) {
	k := openT(t, newKeyFile(t), keyring.Options{})
	encCtx := keyringtest.EncryptionContext(t)
	dk, wrapped, err := k.GenerateDataKey(context.Background(), encCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Destroy()
	k.Close()
	if _, _, err := k.GenerateDataKey(context.Background(), encCtx); !errors.Is(err, ErrClosed) {
		t.Errorf("GenerateDataKey() after Close error = %v, want ErrClosed", err)
	}
	if _, err := k.Unwrap(context.Background(), wrapped, encCtx); !errors.Is(err, ErrClosed) {
		t.Errorf("Unwrap() after Close error = %v, want ErrClosed", err)
	}
}

// copyKeyFile copies a checked-in key file to a private temporary file.
func copyKeyFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestVectors checks the vectors made from docs/FORMAT.md by
// testdata/gen.py, an independent implementation.
func TestVectors(t *testing.T) {
	files, err := filepath.Glob("testdata/vectors/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test vectors (%v)", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			v := readVector(t, file)
			k := openT(t, copyKeyFile(t, v["keyfile"]), keyring.Options{Passphrase: passphrase(v["passphrase"], nil)})
			if k.KeyID() != "07a72f446089ffd1" {
				t.Errorf("KeyID() = %s, want 07a72f446089ffd1", k.KeyID())
			}
			wrapped, err := hex.DecodeString(v["wrapped"])
			if err != nil {
				t.Fatal(err)
			}
			dk, err := k.Unwrap(context.Background(), wrapped, []byte(v["context"]))
			switch v["expect"] {
			case "ok":
				if err != nil {
					t.Fatalf("Unwrap() error = %v, want nil", err)
				}
				defer dk.Destroy()
				if got := hex.EncodeToString(dk.Bytes()); got != v["key"] {
					t.Errorf("Unwrap() = %s, want %s", got, v["key"])
				}
			case "unwrap error":
				if !errors.Is(err, keyring.ErrUnwrap) {
					t.Errorf("Unwrap() error = %v, want keyring.ErrUnwrap", err)
				}
			default:
				t.Fatalf("unknown expect: %q", v["expect"])
			}
		})
	}
}

func readVector(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			name, value, ok = strings.Cut(sc.Text(), ":")
		}
		if !ok {
			t.Fatalf("%s: bad line %q", file, sc.Text())
		}
		v[name] = value
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if v["expect"] == "" {
		t.Fatalf("%s: no expect: line", file)
	}
	return v
}

// TestCreateMatchesVectorForm checks that Create writes the field order
// and form that testdata/key-none.json has.
func TestCreateMatchesVectorForm(t *testing.T) {
	data, err := os.ReadFile(newKeyFile(t))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("testdata/key-none.json")
	shape := func(b []byte) string {
		// Replace the variable parts: key_id and key.
		f, err := parseKeyFile(b)
		if err != nil {
			t.Fatalf("parseKeyFile(%s) error = %v", b, err)
		}
		defer f.wipe()
		s := strings.Replace(string(b), hex.EncodeToString(f.keyID[:]), "ID", 1)
		return strings.Replace(s, b64.EncodeToString(f.key), "KEY", 1)
	}
	if got, want := shape(data), shape(want); got != want {
		t.Errorf("Create wrote %s, want the form %s", got, want)
	}
}

// TestParseURIRedacts checks that a refused URI is not echoed with the
// password a user put in it.
func TestParseURIRedacts(t *testing.T) {
	for _, uri := range []string{"local://user:Hunter2@/k", "local://user:Hunter2%zz@/k", "local:user:Hunter2@/k"} {
		_, err := ParseURI(uri)
		if !errors.Is(err, keyring.ErrBadURI) || strings.Contains(err.Error(), "Hunter2") {
			t.Errorf("ParseURI(%q) = %v, want keyring.ErrBadURI without the password", uri, err)
		}
	}
}
