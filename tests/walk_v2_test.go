package tests

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The tools that walk the backing directory (fsck, info, rewrap) on a
// volume with encrypted names (docs/FORMAT.md, "Names (version 2)")
// written through the mount: every directory but the root holds a
// kmsfs.dirid, a long name a kmsfs.long.*.name file beside it. Neither is
// a kmsfs encrypted file. The volume is of the format version "kmsfs
// init" makes (3), whose names are as in version 2.

const (
	walkV2DirID      = "kmsfs.dirid"
	walkV2LongPrefix = "kmsfs.long."
	walkV2LongSuffix = ".name"
	walkV2Damaged    = 6 // fsck's exit code for damage
)

// walkV2Fsck is the part of "kmsfs fsck --json" these tests read.
type walkV2Fsck struct {
	FormatVersion int    `json:"format_version"`
	Names         string `json:"names"`
	Files         int    `json:"files"`
	Result        string `json:"result"`
	Problems      []struct {
		File      string `json:"file"`
		Backing   string `json:"backing"`
		NameError string `json:"name_error"`
		Kind      string `json:"kind"`
		Detail    string `json:"detail"`
		Repaired  bool   `json:"repaired"`
	} `json:"problems"`
}

// walkV2Backing is the backing tree of a volume: directories, regular
// files, kmsfs's own names files (with their content), by path relative
// to the cipher dir.
type walkV2Backing struct {
	dirs  []string
	files []string
	own   map[string][]byte
}

func walkV2Scan(t *testing.T, v *volume) walkV2Backing {
	t.Helper()
	b := walkV2Backing{own: map[string][]byte{}}
	err := filepath.Walk(v.cipherDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(v.cipherDir, p)
		base := fi.Name()
		switch {
		case rel == ".":
		case fi.IsDir():
			b.dirs = append(b.dirs, rel)
		case !fi.Mode().IsRegular():
		case base == walkV2DirID || strings.HasPrefix(base, walkV2LongPrefix) && strings.HasSuffix(base, walkV2LongSuffix):
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b.own[rel] = c
		case !strings.Contains(rel, "/") && strings.HasPrefix(base, "kmsfs."):
			// The root's own files (configuration, journal).
		default:
			b.files = append(b.files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dirAt returns the one backing directory at depth n (1: in the root)
// whose name does or does not start with kmsfs.long.
func (b walkV2Backing) dirAt(t *testing.T, n int, long bool) string {
	t.Helper()
	var found []string
	for _, d := range b.dirs {
		if strings.Count(d, "/") == n-1 && strings.HasPrefix(filepath.Base(d), walkV2LongPrefix) == long {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("backing directories at depth %d (long %v): %v, want one", n, long, found)
	}
	return found[0]
}

func walkV2RunFsck(t *testing.T, v *volume, what string, code int, args ...string) walkV2Fsck {
	t.Helper()
	r := v.kmsfs(append(append([]string{"fsck", "--json"}, args...), v.cipherDir)...)
	var f walkV2Fsck
	if err := json.Unmarshal([]byte(r.stdout), &f); err != nil {
		t.Fatalf("%s: %v\n%v", what, err, r)
	}
	if r.code != code {
		t.Errorf("%s: %v\nwant exit %d", what, r, code)
	}
	return f
}

// problemKinds returns the kinds of problems by file.
func (f walkV2Fsck) problemKinds() map[string]string {
	m := map[string]string{}
	for _, p := range f.Problems {
		m[p.File] += p.Kind + " "
	}
	return m
}

func TestWalkEncryptedNames(t *testing.T) {
	v := newVolume(t)
	long := strings.Repeat("a long name ", 20) // 240 bytes: a long entry
	files := map[string][]byte{
		"top":        pattern("top", 100),
		"a/b/c/deep": pattern("deep", 3*v.blockSize+5),
		"a/" + long:  pattern("long", 5000),
		long + "/in": pattern("in", 10),
	}
	for _, d := range []string{"a/b/c", long} {
		if err := os.MkdirAll(v.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range files {
		writeFile(t, v.path(name), data)
	}
	if err := os.Symlink("../top", v.path("a/link")); err != nil {
		t.Fatal(err)
	}
	v.unmount()

	b := walkV2Scan(t, v)
	if len(b.dirs) != 4 || len(b.files) != 4 || len(b.own) != 6 {
		t.Fatalf("backing tree: dirs %v, files %v, own files %d; want 4 directories, 4 files, 4 kmsfs.dirid and 2 .name files", b.dirs, b.files, len(b.own))
	}
	for _, f := range append(b.dirs, b.files...) {
		for _, plain := range []string{"top", "deep", "long name", "/in", "/c/"} {
			if strings.Contains(f, plain) {
				t.Errorf("backing path %s shows the plaintext name %q", f, plain)
			}
		}
	}
	dirA, dirC, dirLong := b.dirAt(t, 1, false), b.dirAt(t, 3, false), b.dirAt(t, 1, true)
	var longFile string
	for _, f := range b.files {
		if filepath.Dir(f) == dirA && strings.HasPrefix(filepath.Base(f), walkV2LongPrefix) {
			longFile = f
		}
	}
	if longFile == "" {
		t.Fatalf("no long entry in %s: %v", dirA, b.files)
	}

	// fsck: clean, every file checked, none of kmsfs's own files.
	f := walkV2RunFsck(t, v, "fsck", exitOK)
	if f.Result != "clean" || f.Files != 4 || f.FormatVersion != v.formatVersion || f.Names != "siv" || len(f.Problems) != 0 {
		t.Errorf("fsck = %+v; want clean, 4 files, version %d, names siv", f, v.formatVersion)
	}
	// info: the same counts.
	r := v.kmsfs("info", "--json", v.cipherDir)
	var info struct {
		FormatVersion int    `json:"format_version"`
		Names         string `json:"names"`
		Files         int64  `json:"files"`
		Directories   int64  `json:"directories"`
		Symlinks      int64  `json:"symlinks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || r.code != exitOK {
		t.Fatalf("%v\n(%v) want exit 0", r, err)
	}
	if info.FormatVersion != v.formatVersion || info.Names != "siv" || info.Files != 4 || info.Directories != 4 || info.Symlinks != 1 {
		t.Errorf("info --json = %+v; want version %d, names siv, 4 files, 4 directories, 1 symlink", info, v.formatVersion)
	}
	if r := v.kmsfs("info", v.cipherDir); !strings.Contains(r.stdout, "names encrypted") {
		t.Errorf("%v\nwant 'names encrypted'", r)
	}

	// rewrap: every file gets the new key; kmsfs's own files are not
	// touched.
	uriB := "local://" + filepath.Join(v.dir, "keys", "b.key")
	r = v.kmsfs("rewrap", "--add", uriB, v.cipherDir)
	if r.code != exitOK || !strings.Contains(r.stdout, "4 files, 4 rewritten, 0 failed") {
		t.Fatalf("%v\nwant exit 0 and 4 files rewritten", r)
	}
	for _, name := range b.files {
		for i, uris := range slotURIs(backingHeader(t, filepath.Join(v.cipherDir, name))) {
			if strings.Join(uris, " ") != v.keyURI+" "+uriB {
				t.Errorf("%s copy %d slots = %v, want [%s %s]", name, i, uris, v.keyURI, uriB)
			}
		}
	}
	for p, c := range walkV2Scan(t, v).own {
		if !bytes.Equal(c, b.own[p]) {
			t.Errorf("%s changed by rewrap", p)
		}
	}
	if len(walkV2Scan(t, v).own) != len(b.own) {
		t.Errorf("rewrap added or removed kmsfs's own files")
	}

	// A directory's ID deleted: reported, by its plaintext path.
	idFile := filepath.Join(v.cipherDir, dirC, walkV2DirID)
	if err := os.Remove(idFile); err != nil {
		t.Fatal(err)
	}
	f = walkV2RunFsck(t, v, "fsck without a/b/c's kmsfs.dirid", walkV2Damaged)
	if k := f.problemKinds(); len(k) != 1 || k["a/b/c"] != "dirid " {
		t.Errorf("fsck without a/b/c's kmsfs.dirid: problems %+v, want a dirid problem for a/b/c", f.Problems)
	}
	os.WriteFile(idFile, b.own[filepath.Join(dirC, walkV2DirID)], 0o400)

	// A long name's .name file altered: the entry is reported by its
	// backing path.
	nameFile := filepath.Join(v.cipherDir, longFile+walkV2LongSuffix)
	bad := bytes.Clone(b.own[longFile+walkV2LongSuffix])
	bad[len(bad)/2] ^= 'A' ^ 'B'
	os.Chmod(nameFile, 0o600)
	if err := os.WriteFile(nameFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	f = walkV2RunFsck(t, v, "fsck with an altered .name", walkV2Damaged)
	if k := f.problemKinds(); len(k) != 1 || k[longFile] != "name " {
		t.Errorf("fsck with an altered .name: problems %+v, want a name problem for %s", f.Problems, longFile)
	}
	os.WriteFile(nameFile, b.own[longFile+walkV2LongSuffix], 0o400)

	// A planted entry and one moved between directories.
	planted := filepath.Join(dirA, "planted")
	os.WriteFile(filepath.Join(v.cipherDir, planted), pattern("planted", 5000), 0o644)
	var moved, movedFrom string
	for _, name := range b.files {
		if filepath.Dir(name) == dirLong {
			movedFrom, moved = name, filepath.Join(dirA, filepath.Base(name))
		}
	}
	if err := os.Rename(filepath.Join(v.cipherDir, movedFrom), filepath.Join(v.cipherDir, moved)); err != nil {
		t.Fatal(err)
	}
	f = walkV2RunFsck(t, v, "fsck with planted and moved entries", walkV2Damaged)
	k := f.problemKinds()
	if len(k) != 2 || !strings.Contains(k[planted], "name") || k[moved] != "name " {
		t.Errorf("fsck with planted and moved entries: problems %+v, want name problems for %s and %s", f.Problems, planted, moved)
	}
	os.Remove(filepath.Join(v.cipherDir, planted))
	os.Rename(filepath.Join(v.cipherDir, moved), filepath.Join(v.cipherDir, movedFrom))

	// A long entry removed behind kmsfs's back: its .name file is a
	// harmless leftover that --repair removes.
	longData, err := os.ReadFile(filepath.Join(v.cipherDir, longFile))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(v.cipherDir, longFile))
	f = walkV2RunFsck(t, v, "fsck with a leftover .name", exitOK)
	if k := f.problemKinds(); len(k) != 1 || k["a/"+filepath.Base(longFile)+walkV2LongSuffix] != "orphan-name " {
		t.Errorf("fsck with a leftover .name: problems %+v", f.Problems)
	}
	walkV2RunFsck(t, v, "fsck --repair", exitOK, "--repair")
	if _, err := os.Lstat(nameFile); !os.IsNotExist(err) {
		t.Errorf("fsck --repair left the .name file: %v", err)
	}
	// Put both back as they were: the volume reads as before.
	os.WriteFile(nameFile, b.own[longFile+walkV2LongSuffix], 0o400)
	os.WriteFile(filepath.Join(v.cipherDir, longFile), longData, 0o644)
	if f := walkV2RunFsck(t, v, "fsck at the end", exitOK); len(f.Problems) != 0 {
		t.Errorf("fsck at the end: problems %+v", f.Problems)
	}
	v.mount()
	for name, data := range files {
		checkContent(t, v.path(name), data, v.blockSize)
	}
}
