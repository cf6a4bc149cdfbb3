package tests

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/tests/internal/v2reader"
)

// exampleV2 is the frozen volume of format version 2 made by
// tests/testdata/example-v2/make.sh.
var exampleV2 = filepath.Join("testdata", "example-v2")

// exampleManifest is what make.sh recorded through the mount.
type exampleManifest struct {
	types   map[string]string            // path -> "d", "f" or "l"
	targets map[string]string            // symlink path -> target
	xattrs  map[string]map[string][]byte // path -> user. attribute -> value
	sums    map[string]string            // regular file path -> SHA-256 in hex
}

// loadExampleV2Manifest reads MANIFEST and SHA256SUMS; paths lose their
// leading "./".
func loadExampleV2Manifest(t *testing.T) *exampleManifest {
	t.Helper()
	m := &exampleManifest{types: map[string]string{}, targets: map[string]string{},
		xattrs: map[string]map[string][]byte{}, sums: map[string]string{}}
	lines := func(name string) []string {
		b, err := os.ReadFile(filepath.Join(exampleV2, name))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			out = append(out, sc.Text())
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return out
	}
	clean := func(p string) string { return strings.TrimPrefix(p, "./") }
	for _, l := range lines("MANIFEST") {
		f := strings.Split(l, "\t")
		switch {
		case len(f) == 2 && (f[0] == "d" || f[0] == "f"):
			m.types[clean(f[1])] = f[0]
		case len(f) == 3 && f[0] == "l":
			m.types[clean(f[1])] = "l"
			m.targets[clean(f[1])] = f[2]
		case len(f) == 4 && f[0] == "x":
			v, err := base64.StdEncoding.DecodeString(f[3])
			if err != nil {
				t.Fatalf("MANIFEST line %q: %v", l, err)
			}
			p := clean(f[1])
			if m.xattrs[p] == nil {
				m.xattrs[p] = map[string][]byte{}
			}
			m.xattrs[p][f[2]] = v
		default:
			t.Fatalf("bad MANIFEST line %q", l)
		}
	}
	for _, l := range lines("SHA256SUMS") {
		sum, p, ok := strings.Cut(l, "  ")
		if !ok {
			t.Fatalf("bad SHA256SUMS line %q", l)
		}
		m.sums[clean(p)] = sum
	}
	for p := range m.sums {
		if m.types[p] != "f" {
			t.Fatalf("SHA256SUMS names %s, which MANIFEST does not list as a regular file", p)
		}
	}
	if len(m.types) < 20 || len(m.targets) < 4 || len(m.xattrs) < 2 {
		t.Fatalf("MANIFEST lists %d entries, %d symlinks and xattrs on %d entries; want more", len(m.types), len(m.targets), len(m.xattrs))
	}
	return m
}

// copyExampleV2 copies the frozen backing directory to dst (which must
// not exist) and puts back the extended attributes git does not keep.
func copyExampleV2(t *testing.T, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", "--no-preserve=xattr", filepath.Join(exampleV2, "cipher"), dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(exampleV2, "cipher-xattrs"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.Split(l, "\t")
		if len(f) != 3 {
			t.Fatalf("bad cipher-xattrs line %q", l)
		}
		v, err := base64.StdEncoding.DecodeString(f[2])
		if err != nil {
			t.Fatalf("cipher-xattrs line %q: %v", l, err)
		}
		p := filepath.Join(dst, f[0])
		if err := unix.Lsetxattr(p, f[1], v, 0); err != nil {
			if errors.Is(err, syscall.ENOTSUP) && !inCI() {
				t.Skipf("the file system of %s has no extended attributes: %v", dst, err)
			}
			t.Fatalf("setxattr %s %s: %v", p, f[1], err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("cipher-xattrs is empty")
	}
}

// exampleV2Key copies local.key to a file of mode 0600 (git does not keep
// the mode, which the local keyring insists on) and returns its path.
func exampleV2Key(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(exampleV2, "local.key"))
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "local.key")
	if err := os.WriteFile(key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return key
}

// userXattrs returns the user. attributes of path (not following a
// symlink).
func userXattrs(t *testing.T, path string) map[string][]byte {
	t.Helper()
	sz, err := unix.Llistxattr(path, nil)
	if err != nil {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(path, buf); err != nil {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	out := map[string][]byte{}
	for _, a := range strings.Split(string(buf[:sz]), "\x00") {
		if !strings.HasPrefix(a, "user.") {
			continue
		}
		vsz, err := unix.Lgetxattr(path, a, nil)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", path, a, err)
		}
		v := make([]byte, vsz)
		if vsz, err = unix.Lgetxattr(path, a, v); err != nil {
			t.Fatalf("getxattr %s %s: %v", path, a, err)
		}
		out[a] = v[:vsz]
	}
	return out
}

// compareXattrs reports how the attributes got of path differ from want.
func compareXattrs(t *testing.T, path string, got, want map[string][]byte) {
	t.Helper()
	for a, w := range want {
		if g, ok := got[a]; !ok || !bytes.Equal(g, w) {
			t.Errorf("%s: attribute %s = %q (present %v), want %q", path, a, g, ok, w)
		}
	}
	for a := range got {
		if _, ok := want[a]; !ok {
			t.Errorf("%s: unexpected attribute %s", path, a)
		}
	}
}

// compareTree reports entries missing from got or not in want.
func compareTree(t *testing.T, got, want map[string]string) {
	t.Helper()
	var diffs []string
	for p, typ := range want {
		if g, ok := got[p]; !ok {
			diffs = append(diffs, "missing: "+typ+" "+p)
		} else if g != typ {
			diffs = append(diffs, "type of "+p+" is "+g+", want "+typ)
		}
	}
	for p, typ := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, "extra: "+typ+" "+p)
		}
	}
	sort.Strings(diffs)
	for _, d := range diffs {
		t.Error(d)
	}
}

func typeChar(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "d"
	case m&fs.ModeSymlink != 0:
		return "l"
	case m.IsRegular():
		return "f"
	}
	return "?" + m.String()
}

// TestExampleVolumeV2 mounts a copy of the frozen volume of format
// version 2 and checks that the tree seen through the mount is exactly
// the one recorded when it was made: the same entries and types, every
// file's checksum, every symlink's target and every extended attribute.
// Every later kmsfs must pass this.
func TestExampleVolumeV2(t *testing.T) {
	m := loadExampleV2Manifest(t)
	key := exampleV2Key(t)
	// The key slots name the key by the path it had when the volume was
	// made; --key offers the copy.
	v := newVolume(t, notMounted(), withMountArgs("--key", "local://"+key))
	if err := os.RemoveAll(v.cipherDir); err != nil {
		t.Fatal(err)
	}
	copyExampleV2(t, v.cipherDir)
	v.mount()

	got := map[string]string{}
	err := filepath.WalkDir(v.mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == v.mnt {
			return nil
		}
		rel, _ := filepath.Rel(v.mnt, p)
		got[rel] = typeChar(d.Type())
		return nil
	})
	if err != nil {
		t.Fatalf("walking the mount: %v", err)
	}
	compareTree(t, got, m.types)

	for p, want := range m.sums {
		data, err := os.ReadFile(v.path(p))
		if err != nil {
			t.Errorf("ReadFile(%s) = %v, want nil", p, err)
			continue
		}
		sum := sha256.Sum256(data)
		if g := hex.EncodeToString(sum[:]); g != want {
			t.Errorf("sha256(%s) = %s, want %s", p, g, want)
		}
	}
	for p, want := range m.targets {
		if g, err := os.Readlink(v.path(p)); err != nil || g != want {
			t.Errorf("Readlink(%s) = %q, %v; want %q", p, g, err, want)
		}
	}
	for p, typ := range m.types {
		if typ != "l" {
			compareXattrs(t, p, userXattrs(t, v.path(p)), m.xattrs[p])
		}
	}
	compareXattrs(t, ".", userXattrs(t, v.mnt), m.xattrs["."])
	if log := v.log(); strings.Contains(log, "not listed") {
		t.Errorf("the daemon hid backing entries or attributes:\n%s", log)
	}

	// The volume stays writable, and what is written reads back after a
	// remount.
	long := strings.Repeat("ü", 120) // 240 bytes: a long name
	writes := map[string]string{
		"new.txt":              "written by a later kmsfs",
		"hello.txt":            "rewritten",
		"dir/renamed/" + long:  "a new long name in a renamed directory",
		"dir/sub/nested-2.txt": "beside nested.txt",
		"empty-dir/no-longer":  "the directory was empty",
		"café ☕ 日本語.txt":       "rewritten too",
	}
	for name, data := range writes {
		if err := os.WriteFile(v.path(name), []byte(data), 0o644); err != nil {
			t.Fatalf("WriteFile(%s) = %v", name, err)
		}
	}
	if err := os.Link(v.path("new.txt"), v.path("dir/hard-link-to-new")); err != nil {
		t.Fatalf("Link = %v", err)
	}
	writes["dir/hard-link-to-new"] = writes["new.txt"]
	v.remount()
	for name, want := range writes {
		if g, err := os.ReadFile(v.path(name)); err != nil || string(g) != want {
			t.Errorf("ReadFile(%s) after remount = %q, %v; want %q", name, g, err, want)
		}
	}
}

// TestExampleVolumeV2Independent reads a copy of the frozen volume of
// format version 2 without kmsfs: the independent reader of
// tests/internal/v2reader decrypts the configuration with the local key,
// lists the whole tree from the backing directory and decrypts every
// name, symlink target, extended attribute and file, which must be
// exactly what make.sh recorded through the mount.
func TestExampleVolumeV2Independent(t *testing.T) {
	m := loadExampleV2Manifest(t)
	dir := filepath.Join(t.TempDir(), "cipher")
	copyExampleV2(t, dir)
	key, err := v2reader.ReadLocalKey(exampleV2Key(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := v2reader.ReadConfig(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Version != 2 || cfg.Names != "siv" {
		t.Fatalf("configuration: version %d, names %q; want 2 and siv", cfg.Version, cfg.Names)
	}
	rootID, err := cfg.VolumeIDBytes()
	if err != nil {
		t.Fatal(err)
	}
	tree, err := v2reader.Walk(dir, cfg.NamesKey, rootID)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tree.Problems {
		t.Errorf("backing directory: %s", p)
	}

	got := map[string]string{}
	for _, e := range tree.Entries {
		typ := typeChar(e.Type)
		if _, dup := got[e.Path]; dup {
			t.Errorf("%s listed twice", e.Path)
		}
		got[e.Path] = typ
		switch typ {
		case "l":
			if want, ok := m.targets[e.Path]; ok && e.Target != want {
				t.Errorf("target of %s (%s) = %q, want %q", e.Path, e.Backing, e.Target, want)
			}
		default:
			user := map[string][]byte{}
			for a, v := range e.Xattrs {
				if strings.HasPrefix(a, "user.") {
					user[a] = v
				}
			}
			compareXattrs(t, e.Path, user, m.xattrs[e.Path])
		}
		if want, ok := m.sums[e.Path]; ok {
			data, err := os.ReadFile(filepath.Join(dir, e.Backing))
			if err != nil {
				t.Fatal(err)
			}
			f, err := v2reader.DecryptFile(data, key, cfg.VolumeID, cfg.BlockSize)
			if err != nil {
				t.Errorf("%s (%s): %v", e.Path, e.Backing, err)
				continue
			}
			sum := sha256.Sum256(f.Plain)
			if g := hex.EncodeToString(sum[:]); g != want {
				t.Errorf("sha256(%s) = %s, want %s", e.Path, g, want)
			}
		}
	}
	compareTree(t, got, m.types)
	root := map[string][]byte{}
	for a, v := range tree.RootXattrs {
		if strings.HasPrefix(a, "user.") {
			root[a] = v
		}
	}
	compareXattrs(t, ".", root, m.xattrs["."])
}

// TestExampleVolumeV2IndependentTampered alters copies of the frozen
// volume's backing directory the ways FORMAT.md says a reader must
// detect, and checks that the independent reader reports each and does
// not list what was altered.
func TestExampleVolumeV2IndependentTampered(t *testing.T) {
	keyPath := exampleV2Key(t)
	key, err := v2reader.ReadLocalKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	walk := func(t *testing.T, dir string) (*v2reader.Tree, map[string]v2reader.Entry) {
		t.Helper()
		cfg, err := v2reader.ReadConfig(dir, key)
		if err != nil {
			t.Fatal(err)
		}
		id, err := cfg.VolumeIDBytes()
		if err != nil {
			t.Fatal(err)
		}
		tree, err := v2reader.Walk(dir, cfg.NamesKey, id)
		if err != nil {
			t.Fatal(err)
		}
		byPath := map[string]v2reader.Entry{}
		for _, e := range tree.Entries {
			byPath[e.Path] = e
		}
		return tree, byPath
	}
	clean := filepath.Join(t.TempDir(), "cipher")
	copyExampleV2(t, clean)
	_, orig := walk(t, clean)
	backing := func(p string) string {
		e, ok := orig[p]
		if !ok {
			t.Fatalf("%s is not in the volume", p)
		}
		return e.Backing
	}
	long176 := "long-name-176-" + strings.Repeat("0", 162)
	for _, c := range []struct {
		name   string
		tamper func(dir string) error
		gone   []string // plaintext paths that must no longer be listed
	}{
		{"entry moved to another directory", func(dir string) error {
			b := backing("hello.txt")
			return os.Rename(filepath.Join(dir, b), filepath.Join(dir, backing("dir"), b))
		}, []string{"hello.txt"}},
		{"directory ID removed", func(dir string) error {
			return os.Remove(filepath.Join(dir, backing("dir/sub"), v2reader.DirIDFile))
		}, []string{"dir/sub/nested.txt", "dir/sub/" + long176}},
		{"directory ID of 15 bytes", func(dir string) error {
			p := filepath.Join(dir, backing("dir/renamed"), v2reader.DirIDFile)
			os.Chmod(p, 0o600)
			return os.Truncate(p, 15)
		}, []string{"dir/renamed/file.txt", "dir/renamed/inner"}},
		{"long name file of another entry", func(dir string) error {
			b := backing(long176)
			p := filepath.Join(dir, b+v2reader.LongSuffix)
			other, err := os.ReadFile(filepath.Join(dir, backing("dir/sub/"+long176)+v2reader.LongSuffix))
			if err != nil {
				return err
			}
			os.Chmod(p, 0o600)
			return os.WriteFile(p, other, 0o600)
		}, []string{long176}},
		{"symlink target altered", func(dir string) error {
			p := filepath.Join(dir, backing("link-relative"))
			s, err := os.Readlink(p)
			if err != nil {
				return err
			}
			b := []byte(s)
			b[len(b)/2] ^= 'A' ^ 'B'
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Symlink(string(b), p)
		}, []string{"link-relative"}},
		{"name spelled with non-zero unused bits", func(dir string) error {
			// A second spelling of the same bytes, which only a lenient
			// base64 decoder accepts: it must not list tagged.txt twice.
			b := backing("tagged.txt")
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			if len(b)%4 == 0 {
				return errors.New("tagged.txt's backing name has no unused bits")
			}
			i := strings.IndexByte(alphabet, b[len(b)-1])
			return os.Link(filepath.Join(dir, b), filepath.Join(dir, b[:len(b)-1]+string(alphabet[i^1])))
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cipher")
			copyExampleV2(t, dir)
			if err := c.tamper(dir); err != nil {
				t.Fatal(err)
			}
			tree, got := walk(t, dir)
			if len(tree.Problems) == 0 {
				t.Errorf("no problem reported")
			}
			for _, p := range c.gone {
				if _, ok := got[p]; ok {
					t.Errorf("%s still listed", p)
				}
			}
			if len(tree.Entries) > len(orig) {
				t.Errorf("%d entries listed, %d before the change", len(tree.Entries), len(orig))
			}
			for _, e := range tree.Entries {
				if o, ok := orig[e.Path]; !ok || o.Target != e.Target {
					t.Errorf("%s listed, which the volume did not have (or with another target)", e.Path)
				}
			}
		})
	}
}
