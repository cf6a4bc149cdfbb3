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
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/tests/internal/v2reader"
)

// exampleV3 is the frozen volume of format version 3 made by
// tests/testdata/example-v3/make.sh.
var exampleV3 = filepath.Join("testdata", "example-v3")

// exampleLayout3 is a LAYOUT line: what the version-3 layout of a
// regular file of the example is.
type exampleLayout3 struct {
	inline, holes, holeGroups bool
}

// exampleLines returns the lines of a file of the frozen volume dir.
func exampleLines(t *testing.T, dir, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
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

// loadExampleV3Manifest reads MANIFEST, SHA256SUMS and LAYOUT; paths lose
// their leading "./".
func loadExampleV3Manifest(t *testing.T) (*exampleManifest, map[string]exampleLayout3) {
	t.Helper()
	m := &exampleManifest{types: map[string]string{}, targets: map[string]string{},
		xattrs: map[string]map[string][]byte{}, sums: map[string]string{}}
	clean := func(p string) string { return strings.TrimPrefix(p, "./") }
	for _, l := range exampleLines(t, exampleV3, "MANIFEST") {
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
	for _, l := range exampleLines(t, exampleV3, "SHA256SUMS") {
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
	layout := map[string]exampleLayout3{}
	for _, l := range exampleLines(t, exampleV3, "LAYOUT") {
		f := strings.Fields(l)
		if len(f) != 4 || (f[1] != "inline" && f[1] != "paged") || m.types[clean(f[0])] != "f" {
			t.Fatalf("bad LAYOUT line %q", l)
		}
		layout[clean(f[0])] = exampleLayout3{inline: f[1] == "inline", holes: f[2] == "yes", holeGroups: f[3] == "yes"}
	}
	if len(m.types) < 25 || len(m.targets) < 3 || len(m.xattrs) < 3 || len(layout) < 8 {
		t.Fatalf("MANIFEST lists %d entries, %d symlinks, xattrs on %d entries, LAYOUT %d files; want more",
			len(m.types), len(m.targets), len(m.xattrs), len(layout))
	}
	return m, layout
}

// copyExampleV3 copies the frozen backing directory to dst (which must
// not exist) and puts back the extended attributes git does not keep.
func copyExampleV3(t *testing.T, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", "--no-preserve=xattr", filepath.Join(exampleV3, "cipher"), dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	n := 0
	for _, l := range exampleLines(t, exampleV3, "cipher-xattrs") {
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

// exampleV3Key copies local.key to a file of mode 0600 (git does not keep
// the mode, which the local keyring insists on) and returns its path.
func exampleV3Key(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(exampleV3, "local.key"))
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "local.key")
	if err := os.WriteFile(key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return key
}

// mountExampleV3 mounts the backing directory prepare makes from a copy
// of the frozen volume (nil: the copy as it is).
func mountExampleV3(t *testing.T, prepare func(dir string)) *volume {
	t.Helper()
	key := exampleV3Key(t)
	// The key slots name the key by the path it had when the volume was
	// made; --key offers the copy (and is the trust this user gives it).
	v := newVolume(t, notMounted(), withMountArgs("--key", "local://"+key))
	if err := os.RemoveAll(v.cipherDir); err != nil {
		t.Fatal(err)
	}
	copyExampleV3(t, v.cipherDir)
	if prepare != nil {
		prepare(v.cipherDir)
	}
	v.mount()
	return v
}

// TestExampleVolumeV3 mounts a copy of the frozen volume of format
// version 3 and checks that the tree seen through the mount is exactly
// the one recorded when it was made: the same entries and types, every
// file's checksum, every symlink's target and every extended attribute.
// Every later kmsfs must pass this.
func TestExampleVolumeV3(t *testing.T) {
	m, _ := loadExampleV3Manifest(t)
	v := mountExampleV3(t, nil)

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
	// SEEK_DATA skips the hole group of sparse: its first data after
	// block 2 is block 250.
	f, err := os.Open(v.path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if off, err := unix.Seek(int(f.Fd()), 3*4096, unix.SEEK_DATA); err != nil || off != 250*4096 {
		t.Errorf("SEEK_DATA in sparse from block 3 = %d, %v; want %d", off, err, 250*4096)
	}
	f.Close()
	if log := v.log(); strings.Contains(log, "not listed") || strings.Contains(log, "damaged") {
		t.Errorf("the daemon reported backing entries or files:\n%s", log)
	}

	// The volume stays writable, and what is written reads back after a
	// remount: an inline file grown paged, a paged file written in a hole
	// group, a new long name in a renamed directory.
	long := strings.Repeat("ü", 120) // 240 bytes: a long name
	writes := map[string][]byte{
		"new.txt":             []byte("written by a later kmsfs"),
		"hello.txt":           bytes.Repeat([]byte("now paged "), 500),
		"dir/renamed/" + long: []byte("a new long name in a renamed directory"),
		"empty-dir/no-longer": []byte("the directory was empty"),
	}
	for name, data := range writes {
		if err := os.WriteFile(v.path(name), data, 0o644); err != nil {
			t.Fatalf("WriteFile(%s) = %v", name, err)
		}
	}
	sparse, err := os.ReadFile(v.path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	copy(sparse[100*4096:], "into the hole group")
	if err := os.WriteFile(v.path("sparse"), sparse, 0o644); err != nil {
		t.Fatal(err)
	}
	writes["sparse"] = sparse
	v.remount()
	for name, want := range writes {
		if g, err := os.ReadFile(v.path(name)); err != nil || !bytes.Equal(g, want) {
			t.Errorf("ReadFile(%s) after remount = %d bytes, %v; want %d bytes", name, len(g), err, len(want))
		}
	}
}

// exampleV3Reader reads a copy of the frozen volume with the independent
// reader: its configuration and its tree.
func exampleV3Reader(t *testing.T, dir string, key *v2reader.LocalKey) (*v2reader.Config, *v2reader.Tree, map[string]v2reader.Entry) {
	t.Helper()
	cfg, err := v2reader.ReadConfig(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Version != 3 || cfg.Names != "siv" || cfg.HeaderCopySize == 0 {
		t.Fatalf("configuration: version %d, names %q, header_copy_size %d; want 3, siv and a copy size", cfg.Version, cfg.Names, cfg.HeaderCopySize)
	}
	rootID, err := cfg.VolumeIDBytes()
	if err != nil {
		t.Fatal(err)
	}
	tree, err := v2reader.Walk(dir, cfg.NamesKey, rootID)
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]v2reader.Entry{}
	for _, e := range tree.Entries {
		byPath[e.Path] = e
	}
	return cfg, tree, byPath
}

// TestExampleVolumeV3Independent reads a copy of the frozen volume of
// format version 3 without kmsfs: the independent reader of
// tests/internal/v2reader decrypts the configuration with the local key,
// lists the tree, decrypts every name, target, attribute and file (in the
// version-3 layout), which must be exactly what make.sh recorded, and
// checks the layout LAYOUT says each file has.
func TestExampleVolumeV3Independent(t *testing.T) {
	m, layout := loadExampleV3Manifest(t)
	dir := filepath.Join(t.TempDir(), "cipher")
	copyExampleV3(t, dir)
	key, err := v2reader.ReadLocalKey(exampleV3Key(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg, tree, _ := exampleV3Reader(t, dir, key)
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
		want, ok := m.sums[e.Path]
		if !ok {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Backing))
		if err != nil {
			t.Fatal(err)
		}
		f, err := cfg.DecryptFile(data, key)
		if err != nil {
			t.Errorf("%s (%s): %v", e.Path, e.Backing, err)
			continue
		}
		sum := sha256.Sum256(f.Plain)
		if g := hex.EncodeToString(sum[:]); g != want {
			t.Errorf("sha256(%s) = %s, want %s", e.Path, g, want)
		}
		if lay, ok := layout[e.Path]; ok {
			if f.Inline != lay.inline || (len(f.Holes) > 0) != lay.holes || (len(f.HoleGroups) > 0) != lay.holeGroups {
				t.Errorf("%s: inline %v, holes %v, hole groups %v; LAYOUT says %+v", e.Path, f.Inline, f.Holes, f.HoleGroups, lay)
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

// exampleV3Tampers are the changes to the frozen volume's files that a
// reader must detect, each to another file, with the outcome the
// independent reader must reach.
var exampleV3Tampers = []struct {
	name, path, expect string
	tamper             func(l v2reader.Layout3, b []byte) []byte
}{
	{"cut at a block boundary", "multi-renamed.txt", "size-mismatch (block 99)", func(l v2reader.Layout3, b []byte) []byte {
		return b[:l.DataOff(99)+int64(l.B)]
	}},
	{"appended block", "punched", "size-mismatch (block 39)", func(l v2reader.Layout3, b []byte) []byte {
		return append(b, bytes.Repeat([]byte{0x5a}, l.B)...)
	}},
	{"zeroed block", "sparse", "block-auth (block 250)", func(l v2reader.Layout3, b []byte) []byte {
		clear(b[l.DataOff(250) : l.DataOff(250)+int64(l.B)])
		return b
	}},
	{"zeroed entry", "paged-1988", "block-auth (block 0)", func(l v2reader.Layout3, b []byte) []byte {
		clear(b[l.EntryOff(0) : l.EntryOff(0)+28])
		return b
	}},
	{"flipped inline byte", "inline-1987", "inline-auth", func(l v2reader.Layout3, b []byte) []byte {
		b[l.H+500] ^= 1
		return b
	}},
}

// tamperExampleV3 applies every exampleV3Tampers change to the copy of
// the frozen volume in dir.
func tamperExampleV3(t *testing.T, dir string, key *v2reader.LocalKey) {
	t.Helper()
	cfg, _, byPath := exampleV3Reader(t, dir, key)
	l, err := v2reader.NewLayout3(cfg.BlockSize, cfg.HeaderCopySize)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range exampleV3Tampers {
		e, ok := byPath[c.path]
		if !ok {
			t.Fatalf("%s is not in the volume", c.path)
		}
		p := filepath.Join(dir, e.Backing)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, c.tamper(l, b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestExampleVolumeV3Tampered alters a copy of the frozen volume's files
// the ways FORMAT.md says a reader must detect (a file cut at a block
// boundary, a block appended, a block or an entry zeroed, an inline byte
// flipped) and checks that the independent reader refuses each with the
// outcome FORMAT.md gives, and that kmsfs fails their reads with EIO
// through the mount while the files left alone still read.
func TestExampleVolumeV3Tampered(t *testing.T) {
	m, _ := loadExampleV3Manifest(t)
	keyPath := exampleV3Key(t)
	key, err := v2reader.ReadLocalKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("independent", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "cipher")
		copyExampleV3(t, dir)
		tamperExampleV3(t, dir, key)
		cfg, _, byPath := exampleV3Reader(t, dir, key)
		for _, c := range exampleV3Tampers {
			data, err := os.ReadFile(filepath.Join(dir, byPath[c.path].Backing))
			if err != nil {
				t.Fatal(err)
			}
			r := v2reader.ReadFileV3(data, key, cfg.VolumeID, cfg.BlockSize, cfg.HeaderCopySize)
			if r.Expect() != c.expect {
				t.Errorf("%s (%s): %q, want %q", c.name, c.path, r.Expect(), c.expect)
			}
			if _, err := cfg.DecryptFile(data, key); err == nil {
				t.Errorf("%s (%s): DecryptFile succeeded", c.name, c.path)
			}
		}
	})
	t.Run("mount", func(t *testing.T) {
		v := mountExampleV3(t, func(dir string) { tamperExampleV3(t, dir, key) })
		tampered := map[string]bool{}
		for _, c := range exampleV3Tampers {
			tampered[c.path] = true
			if _, err := os.ReadFile(v.path(c.path)); !errors.Is(err, syscall.EIO) {
				t.Errorf("%s (%s): ReadFile = %v, want EIO", c.name, c.path, err)
			}
		}
		for p, want := range m.sums {
			if tampered[p] {
				continue
			}
			data, err := os.ReadFile(v.path(p))
			if err != nil {
				t.Errorf("ReadFile(%s), not tampered with = %v", p, err)
				continue
			}
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != want {
				t.Errorf("sha256(%s) = %x, want %s", p, sum, want)
			}
		}
	})
}
