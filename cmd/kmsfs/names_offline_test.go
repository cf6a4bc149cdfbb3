package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/names"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/header"
)

// The offline tools on volumes with encrypted names (docs/FORMAT.md,
// "Names (version 2)"): the backing trees are made here as the mount makes
// them, with the volume's names cipher.

// newSivVol makes a volume with encrypted names (the default of init).
func newSivVol(t *testing.T) *offlineVol {
	t.Helper()
	home := t.TempDir()
	v := &offlineVol{home: home, dir: filepath.Join(home, "vol"), key: "local://" + filepath.Join(home, ".config", "kmsfs", "local.key")}
	if err := os.Mkdir(v.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if code, _, se := v.run(t, "init", v.dir); code != 0 {
		t.Fatalf("init = %d (%s)", code, se)
	}
	if v.open(t).Names() == nil {
		t.Fatal("init made a volume with names in clear, want them encrypted")
	}
	return v
}

// sivEntry returns the backing path of the entry name in the backing
// directory dir, writing the .name file of a long name.
func sivEntry(t *testing.T, vol *volume.Volume, dir, name string) string {
	t.Helper()
	id, err := vol.NewPaths().DirID(dir)
	if err != nil {
		t.Fatalf("DirID(%q) = %v", dir, err)
	}
	e, err := vol.Names().EncryptName(id, name)
	if err != nil {
		t.Fatal(err)
	}
	rel := filepath.Join(dir, e.Backing)
	if e.Long() {
		p := filepath.Join(vol.Dir, rel+names.LongSuffix)
		if _, err := os.Lstat(p); err != nil {
			if err := os.WriteFile(p, []byte(e.Encoded), 0o400); err != nil {
				t.Fatal(err)
			}
		}
	}
	return rel
}

// sivDir makes the directories of the plaintext path plain, each with a
// directory ID, and returns its backing path.
func (v *offlineVol) sivDir(t *testing.T, plain string) string {
	t.Helper()
	vol := v.open(t)
	rel := ""
	if plain == "" || plain == "." {
		return rel
	}
	for _, c := range strings.Split(plain, "/") {
		rel = sivEntry(t, vol, rel, c)
		if _, err := os.Lstat(v.path(rel)); err == nil {
			continue
		}
		if err := os.Mkdir(v.path(rel), 0o755); err != nil {
			t.Fatal(err)
		}
		id := make([]byte, names.IDSize)
		rand.Read(id)
		if err := os.WriteFile(v.path(filepath.Join(rel, names.DirIDName)), id, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	return rel
}

// sivPut writes the file at the plaintext path plain and returns its
// backing path.
func (v *offlineVol) sivPut(t *testing.T, plain string, data []byte) string {
	t.Helper()
	dir := v.sivDir(t, filepath.Dir(plain))
	rel := sivEntry(t, v.open(t), dir, filepath.Base(plain))
	v.put(t, rel, data)
	return rel
}

// sivSymlink makes the symlink plain pointing to target.
func (v *offlineVol) sivSymlink(t *testing.T, plain, target string) string {
	t.Helper()
	vol := v.open(t)
	dir := v.sivDir(t, filepath.Dir(plain))
	rel := sivEntry(t, vol, dir, filepath.Base(plain))
	stored, err := vol.Names().EncryptTarget([]byte(target))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(stored, v.path(rel)); err != nil {
		t.Fatal(err)
	}
	return rel
}

// longName is a name too long to be stored as it is encrypted.
var longName = strings.Repeat("a long file name ", 12) // 204 bytes

// sivSample fills the volume with nested directories, long names and a
// symlink, and returns the backing paths by plaintext path.
func (v *offlineVol) sivSample(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	m["docs/report.txt"] = v.sivPut(t, "docs/report.txt", randData(20, 3*4096+7))
	m["docs/sub/deep/f"] = v.sivPut(t, "docs/sub/deep/f", randData(21, 100))
	m["docs/sub/"+longName] = v.sivPut(t, "docs/sub/"+longName, randData(22, 5000))
	m[longName+"/inside"] = v.sivPut(t, longName+"/inside", randData(23, 10))
	m["empty"] = v.sivPut(t, "empty", nil)
	m["docs/link"] = v.sivSymlink(t, "docs/link", "report.txt")
	m["docs"] = v.sivDir(t, "docs")
	m["docs/sub"] = v.sivDir(t, "docs/sub")
	m[longName] = v.sivDir(t, longName)
	if !names.IsLong(filepath.Base(m["docs/sub/"+longName])) || !names.IsLong(m[longName]) {
		t.Fatal("the long names are not stored as long entries")
	}
	return m
}

// sivFsck runs fsck --json (with more arguments) and checks the exit
// code and the kinds of problems found, by file.
func sivFsck(t *testing.T, v *offlineVol, what string, code int, want map[string]string, args ...string) fsckReport {
	t.Helper()
	r := fsckJSON(t, v, args...)
	got := map[string]string{}
	for _, p := range r.Problems {
		got[p.File] += p.Kind + " "
	}
	for f, k := range want {
		if !strings.Contains(got[f], k) {
			t.Errorf("%s: no %s problem for %q; problems %+v", what, k, f, r.Problems)
		}
	}
	if len(got) != len(want) || r.Exit != code {
		t.Errorf("%s: exit %d, problems %+v; want exit %d and problems for %v", what, r.Exit, r.Problems, code, want)
	}
	return r
}

func TestFsckEncryptedNames(t *testing.T) {
	v := newSivVol(t)
	tree := v.sivSample(t)
	longFile := "docs/sub/" + longName

	code, so, se := v.run(t, "fsck", v.dir)
	if code != exitOK || !strings.Contains(so, "5 files, 9 blocks checked: no problems") {
		t.Errorf("fsck = %d, %q (%s); want 0 and no problems in 5 files", code, so, se)
	}
	r := sivFsck(t, v, "clean", exitOK, nil)
	if r.Files != 5 || r.FormatVersion != 3 || r.Names != volume.NamesSIV || len(r.Keys) != 1 || r.Keys[0].Opened != 5 {
		t.Errorf("fsck --json = %+v; want 5 files, version 3, names siv, 5 headers opened", r)
	}

	// A damaged block: named by its plaintext path, with its backing path.
	flip(t, v.path(tree[longFile]), blockOff(1))
	r = sivFsck(t, v, "damaged block", exitDamaged, map[string]string{longFile: probBlock})
	if p := findProblem(r, longFile, probBlock); p != nil && (p.Backing != tree[longFile] || p.NameError != "") {
		t.Errorf("block problem %+v; want backing path %s", p, tree[longFile])
	}
	if _, so, _ := v.run(t, "fsck", v.dir); !strings.Contains(so, longFile+": block 1:") {
		t.Errorf("fsck output %q does not name %s", so, longFile)
	}
	flip(t, v.path(tree[longFile]), blockOff(1))

	// A directory without its ID: reported once; its entries are checked
	// and named by their backing paths.
	sub := tree["docs/sub"]
	idFile := v.path(sub + "/" + names.DirIDName)
	id, err := os.ReadFile(idFile)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(idFile)
	flip(t, v.path(tree[longFile]), blockOff(0))
	r = sivFsck(t, v, "kmsfs.dirid missing", exitDamaged, map[string]string{"docs/sub": probDirID, tree[longFile]: probBlock})
	if p := findProblem(r, tree[longFile], probBlock); p != nil && !strings.Contains(p.NameError, "directory ID") {
		t.Errorf("block problem in a directory without ID: %+v; want a name error about the directory ID", p)
	}
	flip(t, v.path(tree[longFile]), blockOff(0))
	// Of the wrong size.
	os.WriteFile(idFile, id[:10], 0o400)
	r = sivFsck(t, v, "kmsfs.dirid of 10 bytes", exitDamaged, map[string]string{"docs/sub": probDirID})
	if p := findProblem(r, "docs/sub", probDirID); p != nil && !strings.Contains(p.Detail, "10 bytes") {
		t.Errorf("dirid problem %+v; want its size", p)
	}
	os.Remove(idFile)
	os.WriteFile(idFile, id, 0o400)

	// An altered .name file: the long entry is reported (by its backing
	// path), and its content checked all the same.
	nameFile := v.path(tree[longFile] + names.LongSuffix)
	good, _ := os.ReadFile(nameFile)
	bad := bytes.Clone(good)
	bad[30] ^= 'A' ^ 'B'
	os.Chmod(nameFile, 0o600)
	os.WriteFile(nameFile, bad, 0o600)
	r = sivFsck(t, v, "altered .name", exitDamaged, map[string]string{tree[longFile]: probName})
	if r.Files != 5 || r.Blocks != 9 {
		t.Errorf("altered .name: %d files, %d blocks checked; want 5 and 9", r.Files, r.Blocks)
	}
	// A missing one.
	os.Remove(nameFile)
	sivFsck(t, v, "missing .name", exitDamaged, map[string]string{tree[longFile]: probName})
	os.WriteFile(nameFile, good, 0o400)

	// A planted entry and an entry moved from another directory.
	planted := tree["docs"] + "/planted.txt"
	os.WriteFile(v.path(planted), randData(30, 5000), 0o644)
	moved := tree["docs/sub"] + "/" + filepath.Base(tree["docs/report.txt"])
	if err := os.Rename(v.path(tree["docs/report.txt"]), v.path(moved)); err != nil {
		t.Fatal(err)
	}
	r = sivFsck(t, v, "planted and moved", exitDamaged, map[string]string{planted: probName + " " + probHeader, moved: probName})
	if p := findProblem(r, planted, probHeader); p != nil && p.NameError == "" {
		t.Errorf("header problem of a planted file %+v; want a name error", p)
	}
	_, so, _ = v.run(t, "fsck", v.dir)
	if !strings.Contains(so, planted+": the name does not decrypt in its directory (docs)") || !strings.Contains(so, planted+": ") {
		t.Errorf("fsck output %q does not report %s by its backing path", so, planted)
	}
	os.Remove(v.path(planted))
	os.Rename(v.path(moved), v.path(tree["docs/report.txt"]))

	// A symlink whose target was altered.
	link := v.path(tree["docs/link"])
	target, _ := os.Readlink(link)
	os.Remove(link)
	os.Symlink(target[:len(target)-2]+"xx", link)
	sivFsck(t, v, "symlink target", exitDamaged, map[string]string{"docs/link": probSymlink})
	os.Remove(link)
	os.Symlink(target, link)

	// An empty directory without an ID (an interrupted mkdir): a note.
	empty := v.sivDir(t, "docs/new")
	os.Remove(v.path(empty + "/" + names.DirIDName))
	r = sivFsck(t, v, "empty directory without ID", exitOK, nil)
	if !strings.Contains(strings.Join(r.Notes, "\n"), "docs/new: an empty directory without a directory ID") {
		t.Errorf("notes %q; want one about docs/new", r.Notes)
	}
	os.Remove(v.path(empty))

	// A .name file whose entry is gone: harmless, removed by --repair.
	if err := os.RemoveAll(v.path(tree[longName])); err != nil {
		t.Fatal(err)
	}
	orphan := tree[longName] + names.LongSuffix
	r = sivFsck(t, v, "orphan .name", exitOK, map[string]string{orphan: probOrphan})
	if r.Result != "clean" {
		t.Errorf("orphan .name: result %q, want clean", r.Result)
	}
	code, so, _ = v.run(t, "fsck", v.dir)
	if code != exitOK || !strings.Contains(so, "no problems; 1 .name file of long names left over") {
		t.Errorf("fsck with a leftover .name = %d %q", code, so)
	}
	r = sivFsck(t, v, "orphan .name repaired", exitOK, map[string]string{orphan: probOrphan}, "--repair")
	if p := findProblem(r, orphan, probOrphan); p == nil || !p.Repaired {
		t.Errorf("orphan after --repair: %+v, want repaired", p)
	}
	if _, err := os.Lstat(v.path(orphan)); !os.IsNotExist(err) {
		t.Errorf("the leftover .name file is still there: %v", err)
	}
	sivFsck(t, v, "after repair", exitOK, nil)
}

// configPlain returns the plaintext of the volume's configuration,
// decrypted with the engine (it is a kmsfs file under the volume's keys).
func configPlain(t *testing.T, v *offlineVol) map[string]any {
	t.Helper()
	vol := v.open(t)
	fd, err := vol.Backing().Open(volume.ConfigName, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The configuration file keeps the layout of version 1 in every
	// volume; the journal's Keyer loads such headers.
	f := cryptfile.New(&cryptfile.Config{Layout: vol.Layout, Keys: vol.JournalKeys()}, func() string { return volume.ConfigName })
	h, err := f.Open(context.Background(), fd)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var b bytes.Buffer
	if err := copyPlain(&b, h); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestInfoEncryptedNames(t *testing.T) {
	v := newSivVol(t)
	v.sivSample(t)
	code, so, se := v.run(t, "info", v.dir)
	if code != exitOK {
		t.Fatalf("info = %d (%s)", code, se)
	}
	// 5 files (no kmsfs.dirid nor .name file), 4 directories.
	for _, want := range []string{"format version 3, block size 4096, names encrypted", "5 files in", "4 directories", "1 symlink"} {
		if !strings.Contains(so, want) {
			t.Errorf("info output %q does not contain %q", so, want)
		}
	}
	code, so, _ = v.run(t, "info", "--json", v.dir)
	var r infoReport
	if err := json.Unmarshal([]byte(so), &r); err != nil || code != exitOK {
		t.Fatalf("info --json = %d, %q (%v)", code, so, err)
	}
	if r.FormatVersion != 3 || r.Names != volume.NamesSIV || r.Files != 5 || r.Dirs != 4 || r.Symlinks != 1 || r.PlainBytes != 3*4096+7+100+5000+10 {
		t.Errorf("info --json = %+v", r)
	}
	// Another user: the version and the names are unknown; the count is
	// the same.
	code, so, _ = kmsfs(t, t.TempDir(), "info", v.dir)
	if code != exitKey || !strings.Contains(so, "format version unknown") || !strings.Contains(so, "5 files in") {
		t.Errorf("info without trust = %d %q; want %d, the version unknown and 5 files", code, so, exitKey)
	}

	// Names in clear: said so, and a file named kmsfs.dirid is a file.
	p := newOfflineVol(t)
	p.put(t, "d/"+names.DirIDName, randData(1, 10))
	code, so, _ = p.run(t, "info", p.dir)
	if code != exitOK || !strings.Contains(so, "format version 3, block size 4096, names in clear") || !strings.Contains(so, "1 file in") {
		t.Errorf("info of a volume with names in clear = %d %q", code, so)
	}
}

// TestNamesKeyNotShown runs the offline commands on a volume with
// encrypted names and looks for its names key, in any encoding, in what
// they print.
func TestNamesKeyNotShown(t *testing.T) {
	v := newSivVol(t)
	v.sivSample(t)
	cfg := configPlain(t, v)
	enc, ok := cfg["names_key"].(string)
	if !ok {
		t.Fatalf("configuration %v has no names_key", cfg)
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(key) != names.KeySize {
		t.Fatalf("names_key %d bytes, %v", len(key), err)
	}
	forms := []string{enc, hex.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key), string(key[:16]),
		base64.StdEncoding.EncodeToString(key[:24]), hex.EncodeToString(key[32:48])}
	keyB := "local://" + filepath.Join(v.home, "b.key")
	for _, args := range [][]string{
		{"info", v.dir}, {"info", "--json", v.dir},
		{"fsck", v.dir}, {"fsck", "--json", v.dir}, {"fsck", "--repair", "--json", v.dir},
		{"rewrap", "--add", keyB, v.dir}, {"rewrap", "--remove", keyB, v.dir},
		{"trust", "--yes", v.dir},
		{"cat", v.dir, "nonexistent"},
	} {
		code, so, se := v.run(t, args...)
		for _, f := range forms {
			if strings.Contains(so, f) || strings.Contains(se, f) {
				t.Errorf("kmsfs %v (exit %d) shows the names key", args, code)
			}
		}
		if strings.Contains(so+se, "names_key") {
			t.Errorf("kmsfs %v mentions names_key: %q %q", args, so, se)
		}
	}
}

// TestRewrapEncryptedNamesCLI rewraps a volume with encrypted names:
// every file gets the new key, kmsfs.dirid and .name files are left alone.
func TestRewrapEncryptedNamesCLI(t *testing.T) {
	v := newSivVol(t)
	tree := v.sivSample(t)
	own := map[string][]byte{}
	filepath.Walk(v.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && (fi.Name() == names.DirIDName || strings.HasSuffix(fi.Name(), names.LongSuffix)) {
			b, _ := os.ReadFile(p)
			own[p] = b
		}
		return nil
	})
	if len(own) != 6 { // 4 directories, 2 long names
		t.Fatalf("kmsfs's own files: %d, want 6", len(own))
	}
	keyB := "local://" + filepath.Join(v.home, "b.key")
	code, so, se := v.run(t, "rewrap", "--add", keyB, v.dir)
	if code != exitOK || !strings.Contains(so, "4 files, 4 rewritten, 0 failed") {
		t.Fatalf("rewrap --add = %d %q %q; want 4 files rewritten", code, so, se)
	}
	for plain, rel := range tree {
		fi, err := os.Lstat(v.path(rel))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			continue
		}
		b, _ := os.ReadFile(v.path(rel))
		h, err := header.Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", plain, err)
		}
		for i, c := range h.Copies {
			if c == nil || len(c.Slots) != 2 || c.Slots[1].URI != keyB {
				t.Errorf("%s: header copy %d after rewrap --add: %+v, want slots for both keys", plain, i, c)
			}
		}
	}
	for p, b := range own {
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s changed by rewrap", p)
		}
	}
	sivFsck(t, v, "after rewrap", exitOK, nil)
}
