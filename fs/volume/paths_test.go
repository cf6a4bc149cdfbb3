package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/fs/names"
)

// sivTree builds the backing tree of a volume with encrypted names by
// hand, as the mount would: directories with a kmsfs.dirid, entries named
// by their encrypted names, long names with their .name file.
type sivTree struct {
	t *testing.T
	e *checkEnv
	v *Volume
}

func newSivTree(t *testing.T) *sivTree {
	t.Helper()
	e := newCheckEnv(t)
	v := e.open(t, e.uriA, e.uriB)
	if v.Names() == nil {
		t.Fatal("a new volume has names in clear, want them encrypted")
	}
	return &sivTree{t: t, e: e, v: v}
}

// entry returns the backing form of name in the backing directory dir,
// writing the .name file of a long name.
func (s *sivTree) entry(dir, name string) string {
	s.t.Helper()
	id, err := s.v.NewPaths().DirID(dir)
	if err != nil {
		s.t.Fatalf("DirID(%q) = %v", dir, err)
	}
	en, err := s.v.Names().EncryptName(id, name)
	if err != nil {
		s.t.Fatal(err)
	}
	rel := filepath.Join(dir, en.Backing)
	if en.Long() {
		if err := os.WriteFile(filepath.Join(s.e.vol, rel+names.LongSuffix), []byte(en.Encoded), 0o400); err != nil {
			s.t.Fatal(err)
		}
	}
	return rel
}

// mkdir makes the directory name in the backing directory dir, with a
// directory ID, and returns its backing path.
func (s *sivTree) mkdir(dir, name string) string {
	s.t.Helper()
	rel := s.entry(dir, name)
	if err := os.Mkdir(filepath.Join(s.e.vol, rel), 0o700); err != nil {
		s.t.Fatal(err)
	}
	id := make([]byte, names.IDSize)
	for i := range id {
		id[i] = byte(len(rel) + i)
	}
	if err := os.WriteFile(filepath.Join(s.e.vol, rel, names.DirIDName), id, 0o400); err != nil {
		s.t.Fatal(err)
	}
	return rel
}

// file writes a file of n bytes named name in the backing directory dir
// with the engine, and returns its backing path.
func (s *sivTree) file(dir, name string, n int) string {
	s.t.Helper()
	rel := s.entry(dir, name)
	s.e.put(s.t, s.v, rel, n)
	return rel
}

func (s *sivTree) path(rel string) string { return filepath.Join(s.e.vol, rel) }

// sample is a tree of nested directories, a long file name and a long
// directory name, as (plaintext path → backing path).
func (s *sivTree) sample() map[string]string {
	long := strings.Repeat("long name ", 20) // 200 bytes: a long entry
	m := map[string]string{}
	m["docs"] = s.mkdir("", "docs")
	m["docs/sub dir"] = s.mkdir(m["docs"], "sub dir")
	m["docs/sub dir/"+long] = s.file(m["docs/sub dir"], long, 5000)
	m["docs/sub dir/x"] = s.file(m["docs/sub dir"], "x", 10)
	m["top.txt"] = s.file("", "top.txt", 100)
	m[long] = s.mkdir("", long)
	m[long+"/in long"] = s.file(m[long], "in long", 4096)
	m["empty"] = s.file("", "empty", 0)
	return m
}

func TestPlainPath(t *testing.T) {
	s := newSivTree(t)
	tree := s.sample()
	p := s.v.NewPaths()
	for plain, rel := range tree {
		if got, err := p.Plain(rel); err != nil || got != plain {
			t.Errorf("Plain(%q) = %q, %v; want %q", rel, got, err, plain)
		}
		if got, err := s.v.PlainPath(rel); err != nil || got != plain {
			t.Errorf("PlainPath(%q) = %q, %v; want %q", rel, got, err, plain)
		}
		if got, err := p.Name(rel); err != nil || got != filepath.Base(plain) {
			t.Errorf("Name(%q) = %q, %v; want %q", rel, got, err, filepath.Base(plain))
		}
		if s.v.Internal(rel) {
			t.Errorf("Internal(%q) = true for an entry", rel)
		}
		if got, err := s.v.BackingPath(plain); err != nil || got != rel {
			t.Errorf("BackingPath(%q) = %q, %v; want %q", plain, got, err, rel)
		}
	}
	long := strings.Repeat("long name ", 20)
	longFile := tree["docs/sub dir/"+long]
	if !names.IsLong(filepath.Base(longFile)) || !names.IsLong(filepath.Base(tree[long])) {
		t.Fatalf("%s and %s are not long entries", longFile, tree[long])
	}
	// kmsfs's own files: internal, named by their directory's plaintext.
	for rel, want := range map[string]string{
		ConfigName:                           ConfigName,
		ConfigName + ".tmp":                  ConfigName + ".tmp",
		tree["docs"] + "/" + names.DirIDName: "docs/" + names.DirIDName,
		longFile + names.LongSuffix:          "docs/sub dir/" + filepath.Base(longFile) + names.LongSuffix,
		tree[long] + names.LongSuffix:        filepath.Base(tree[long]) + names.LongSuffix,
		tree[long] + "/" + names.DirIDName:   long + "/" + names.DirIDName,
	} {
		if !s.v.Internal(rel) {
			t.Errorf("Internal(%q) = false", rel)
		}
		if got, err := p.Plain(rel); err != nil || got != want {
			t.Errorf("Plain(%q) = %q, %v; want %q", rel, got, err, want)
		}
	}
	if got, err := p.Plain(""); err != nil || got != "" {
		t.Errorf("Plain of the root = %q, %v", got, err)
	}
}

// pathErr checks that err is a *PathError for the entry backing, matching
// each of want.
func pathErr(t *testing.T, what string, err error, backing string, want ...error) {
	t.Helper()
	var pe *PathError
	if !errors.As(err, &pe) {
		t.Errorf("%s: error %v, want a *PathError", what, err)
		return
	}
	if pe.Backing != backing {
		t.Errorf("%s: PathError for %q, want %q (%v)", what, pe.Backing, backing, err)
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Errorf("%s: error %v, want %v", what, err, w)
		}
	}
}

func TestPlainPathErrors(t *testing.T) {
	s := newSivTree(t)
	tree := s.sample()
	long := strings.Repeat("long name ", 20)
	sub, longFile := tree["docs/sub dir"], tree["docs/sub dir/"+long]

	// An entry moved to another directory does not decrypt there.
	moved := tree["docs"] + "/" + filepath.Base(tree["top.txt"])
	if err := os.Rename(s.path(tree["top.txt"]), s.path(moved)); err != nil {
		t.Fatal(err)
	}
	_, err := s.v.PlainPath(moved)
	pathErr(t, "moved entry", err, moved, names.ErrUndecryptable)
	// A name kmsfs did not write.
	foreign := sub + "/notes.txt"
	if err := os.WriteFile(s.path(foreign), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.v.PlainPath(foreign)
	pathErr(t, "foreign entry", err, foreign, names.ErrUndecryptable)
	// Inside a directory that does not decrypt: the directory is named.
	_, err = s.v.PlainPath(tree["docs/sub dir/x"])
	if err != nil {
		t.Fatalf("PlainPath(x) = %v", err)
	}
	alien := "kmsfs.not-a-name"
	if err := os.Rename(s.path(tree["docs"]), s.path(alien)); err != nil {
		t.Fatal(err)
	}
	inAlien := alien + strings.TrimPrefix(tree["docs/sub dir/x"], tree["docs"])
	_, err = s.v.PlainPath(inAlien)
	pathErr(t, "entry in a foreign directory", err, alien, names.ErrUndecryptable)
	// But its own name, under its own directory's ID, still decrypts.
	if n, err := s.v.NewPaths().Name(inAlien); err != nil || n != "x" {
		t.Errorf("Name(%q) = %q, %v; want x", inAlien, n, err)
	}
	if err := os.Rename(s.path(alien), s.path(tree["docs"])); err != nil {
		t.Fatal(err)
	}

	// A .name file that does not match its entry, then a missing one.
	nameFile := s.path(longFile + names.LongSuffix)
	good, err := os.ReadFile(nameFile)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(nameFile, 0o600)
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 'A' ^ 'B' // another base64url letter
	if err := os.WriteFile(nameFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.v.PlainPath(longFile)
	pathErr(t, "altered .name", err, longFile, names.ErrUndecryptable)
	os.Remove(nameFile)
	_, err = s.v.PlainPath(longFile)
	pathErr(t, "missing .name", err, longFile, ErrLongName, syscall.ENOENT)
	if err := os.WriteFile(nameFile, good, 0o400); err != nil {
		t.Fatal(err)
	}
	if got, err := s.v.PlainPath(longFile); err != nil || got != "docs/sub dir/"+long {
		t.Errorf("PlainPath after restoring .name = %q, %v", got, err)
	}

	// Directory IDs: missing, the wrong size, not a regular file.
	idFile := s.path(sub + "/" + names.DirIDName)
	idBytes, err := os.ReadFile(idFile)
	if err != nil {
		t.Fatal(err)
	}
	x := tree["docs/sub dir/x"]
	p := s.v.NewPaths()
	if _, err := p.Plain(x); err != nil {
		t.Fatal(err)
	}
	os.Remove(idFile)
	// The Paths of a walk read the ID once.
	if got, err := p.Plain(x); err != nil || got != "docs/sub dir/x" {
		t.Errorf("Plain with the ID cached = %q, %v", got, err)
	}
	_, err = s.v.PlainPath(x)
	pathErr(t, "missing kmsfs.dirid", err, x, ErrNoDirID, syscall.ENOENT)
	if _, err := s.v.NewPaths().DirID(sub); !errors.Is(err, ErrNoDirID) || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("DirID without kmsfs.dirid = %v", err)
	}
	for what, make := range map[string]func() error{
		"15 bytes":  func() error { return os.WriteFile(idFile, idBytes[:15], 0o400) },
		"17 bytes":  func() error { return os.WriteFile(idFile, append(idBytes, 0), 0o400) },
		"directory": func() error { return os.Mkdir(idFile, 0o700) },
		"symlink":   func() error { return os.Symlink("../"+names.DirIDName, idFile) },
		"fifo":      func() error { return syscall.Mkfifo(idFile, 0o600) },
	} {
		if err := make(); err != nil {
			t.Fatal(err)
		}
		_, err = s.v.PlainPath(x)
		pathErr(t, "kmsfs.dirid "+what, err, x, ErrNoDirID)
		if errors.Is(err, syscall.ENOENT) {
			t.Errorf("kmsfs.dirid %s: %v matches ENOENT", what, err)
		}
		os.RemoveAll(idFile)
	}
	if err := os.WriteFile(idFile, idBytes, 0o400); err != nil {
		t.Fatal(err)
	}
	if got, err := s.v.PlainPath(x); err != nil || got != "docs/sub dir/x" {
		t.Errorf("PlainPath after restoring kmsfs.dirid = %q, %v", got, err)
	}
}

func TestPlainPathClearNames(t *testing.T) {
	e := newCheckEnv(t)
	os.RemoveAll(e.vol)
	os.Mkdir(e.vol, 0o700)
	if _, err := Init(context.Background(), e.vol, InitOptions{Keys: []string{e.uriA}, ReuseFiles: 1, ReuseSeconds: 1, PlaintextNames: true}, newLocalResolver()); err != nil {
		t.Fatal(err)
	}
	v := e.open(t, e.uriA)
	if v.Names() != nil {
		t.Fatal("Names() of a volume with names in clear is not nil")
	}
	for _, rel := range []string{"a", "d/kmsfs.dirid", "d/kmsfs.long.x.name", "d/e/f.txt"} {
		if got, err := v.PlainPath(rel); err != nil || got != rel {
			t.Errorf("PlainPath(%q) = %q, %v; want it unchanged", rel, got, err)
		}
		if v.Internal(rel) {
			t.Errorf("Internal(%q) = true with names in clear", rel)
		}
	}
	for _, rel := range []string{ConfigName, "kmsfs.journal", "kmsfs.reencrypt.tmp"} {
		if !v.Internal(rel) {
			t.Errorf("Internal(%q) = false", rel)
		}
	}
}
