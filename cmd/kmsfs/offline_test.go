package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
)

// The offline tools (info, fsck, cat, encrypt, decrypt) are tested
// through the built binary, on volumes whose files are written here with
// the engine itself: no FUSE needed.

// offlineVol is a volume made by "kmsfs init" in a home of its own.
type offlineVol struct {
	home, dir, key string
}

// newOfflineVol makes a volume with the default local key, or with the
// given keys. Its names are in clear: the tests write and damage backing
// files by their plaintext names (newSivVol makes one with encrypted
// names).
func newOfflineVol(t *testing.T, keys ...string) *offlineVol {
	t.Helper()
	home := t.TempDir()
	v := &offlineVol{home: home, dir: filepath.Join(home, "vol"), key: "local://" + filepath.Join(home, ".config", "kmsfs", "local.key")}
	if err := os.Mkdir(v.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"init", "--plaintext-names"}
	for _, k := range keys {
		args = append(args, "--key", k)
	}
	if len(keys) == 0 {
		keys = []string{v.key}
	}
	if code, _, se := kmsfs(t, home, append(args, v.dir)...); code != 0 {
		t.Fatalf("init = %d (%s)", code, se)
	}
	v.key = keys[0]
	return v
}

// run runs kmsfs with the volume's home.
func (v *offlineVol) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return kmsfs(t, v.home, args...)
}

// open opens the volume in this process, trusting keys (its first key if
// none).
func (v *offlineVol) open(t *testing.T, keys ...string) *volume.Volume {
	t.Helper()
	if len(keys) == 0 {
		keys = []string{v.key}
	}
	res := keyring.NewResolver(newRegistry(), keyring.Options{})
	vol, err := volume.Open(context.Background(), v.dir, res, volume.OpenOptions{Trusted: keys, Log: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatalf("volume.Open(%s) = %v", v.dir, err)
	}
	t.Cleanup(vol.Close)
	return vol
}

// put writes a file of the volume, rel inside it, with the engine.
func (v *offlineVol) put(t *testing.T, rel string, data []byte) {
	t.Helper()
	vol := v.open(t)
	if d := filepath.Dir(rel); d != "." {
		if err := os.MkdirAll(filepath.Join(v.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := vol.Backing().Open(rel, syscall.O_RDWR|syscall.O_CREAT|syscall.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f := cryptfile.New(&cryptfile.Config{Layout: vol.Layout, Keys: vol, V3: vol.Layout3}, func() string { return rel })
	h, err := f.Open(context.Background(), fd)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if len(data) > 0 {
		if _, err := h.WriteAt(context.Background(), data, 0); err != nil {
			t.Fatalf("writing %s: %v", rel, err)
		}
	}
}

// path returns the backing path of rel.
func (v *offlineVol) path(rel string) string { return filepath.Join(v.dir, rel) }

// flip flips one bit of the backing file rel at off.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// blockOff returns the backing offset of a byte inside block n (B = 4096).
func blockOff(n int64) int64 { return header.Size + n*(4096+28) + 100 }

// copyOff returns the backing offset of a byte inside header copy i's
// first key slot (its URI).
func copyOff(i int) int64 { return header.CopyOffset(i) + 20 }

// copyOff3 and macOff3 are copyOff and macOff for the files (not the
// configuration, which keeps version 1) of a volume of version 3 made by
// init: copies of 1024 bytes.
func copyOff3(i int) int64 { return int64(header.PreambleSize+i*1024) + 20 }
func macOff3(i int) int64  { return int64(header.PreambleSize+i*1024) + 1024 - 32 + 3 }

// macOff returns the backing offset of a byte of header copy i's MAC.
func macOff(i int) int64 { return header.CopyOffset(i) + header.MACOffset + 3 }

func randData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestOfflineHelp(t *testing.T) {
	for _, c := range []string{"info", "fsck", "cat", "encrypt", "decrypt"} {
		code, so, _ := kmsfs(t, t.TempDir(), c, "--help")
		if code != 0 || !strings.Contains(so, "Usage: kmsfs "+c) || !strings.Contains(so, "Exit status") {
			t.Errorf("kmsfs %s --help = %d, %q; want 0, its usage and its exit status", c, code, so)
		}
		if code, _, se := kmsfs(t, t.TempDir(), c); code != exitUsage || !strings.Contains(se, "takes") {
			t.Errorf("kmsfs %s without arguments = %d, %q; want %d", c, code, se, exitUsage)
		}
	}
}

func TestInfo(t *testing.T) {
	v := newOfflineVol(t)
	v.put(t, "a", randData(1, 5000))
	v.put(t, "d/b", nil)
	if err := os.Symlink("a", v.path("link")); err != nil {
		t.Fatal(err)
	}
	id, err := volume.PeekVolumeID(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	code, so, se := v.run(t, "info", v.dir)
	if code != exitOK {
		t.Fatalf("info = %d (%s), want 0", code, se)
	}
	for _, want := range []string{"volume " + id, "block size 4096", v.key + ": new files, trusted here, usable", "up to 1024 new files", "2 files", "1 directory", "1 symlink"} {
		if !strings.Contains(so, want) {
			t.Errorf("info output %q does not contain %q", so, want)
		}
	}

	code, so, _ = v.run(t, "info", "--json", v.dir)
	var r infoReport
	if err := json.Unmarshal([]byte(so), &r); err != nil || code != exitOK {
		t.Fatalf("info --json = %d, %q (%v)", code, so, err)
	}
	if !r.ConfigRead || r.VolumeID != id || r.Files != 2 || r.Dirs != 1 || r.Symlinks != 1 || r.PlainBytes != 5000 ||
		len(r.Keys) != 1 || !r.Keys[0].Usable || r.Keys[0].Trust != "trusted" || r.ReuseFiles != 1024 {
		t.Errorf("info --json = %+v", r)
	}

	// Another user (no trust record): what the header tells, and exit 4.
	other := t.TempDir()
	code, so, _ = kmsfs(t, other, "info", v.dir)
	if code != exitKey || !strings.Contains(so, "volume "+id) || !strings.Contains(so, "could not be read") ||
		!strings.Contains(so, v.key+": not trusted here") || !strings.Contains(so, "2 files") {
		t.Errorf("info without trust = %d, %q; want %d, the header's volume ID and untrusted keys", code, so, exitKey)
	}
	// A trusted key that is gone: not usable, exit 4.
	keyFile := strings.TrimPrefix(v.key, "local://")
	if err := os.Rename(keyFile, keyFile+".moved"); err != nil {
		t.Fatal(err)
	}
	code, so, _ = v.run(t, "info", v.dir)
	if code != exitKey || !strings.Contains(so, "not usable") {
		t.Errorf("info with the key gone = %d, %q; want %d and 'not usable'", code, so, exitKey)
	}
	os.Rename(keyFile+".moved", keyFile)

	if code, _, se := v.run(t, "info", v.home); code != exitNotVolume || !strings.Contains(se, "not a kmsfs volume") {
		t.Errorf("info of a non-volume = %d %q, want %d", code, se, exitNotVolume)
	}
}

// fsckJSON runs fsck --json (with more arguments) and decodes its report.
func fsckJSON(t *testing.T, v *offlineVol, args ...string) fsckReport {
	t.Helper()
	code, so, se := v.run(t, append(append([]string{"fsck", "--json"}, args...), v.dir)...)
	var r fsckReport
	if err := json.Unmarshal([]byte(so), &r); err != nil {
		t.Fatalf("fsck --json output %q (stderr %q): %v", so, se, err)
	}
	if r.Exit != code {
		t.Errorf("fsck --json: exit_code %d, exit status %d", r.Exit, code)
	}
	return r
}

func findProblem(r fsckReport, file, kind string) *fsckProblem {
	for i, p := range r.Problems {
		if p.File == file && p.Kind == kind {
			return &r.Problems[i]
		}
	}
	return nil
}

func TestFsckClean(t *testing.T) {
	v := newOfflineVol(t)
	v.put(t, "a", randData(2, 3*4096+7))
	v.put(t, "d/e/f", randData(3, 100))
	v.put(t, "empty", nil)
	code, so, se := v.run(t, "fsck", v.dir)
	if code != exitOK || !strings.Contains(so, "3 files, 6 blocks checked: no problems") {
		t.Errorf("fsck = %d, %q (%s); want 0 and no problems", code, so, se)
	}
	if se != "" {
		t.Errorf("fsck stderr = %q, want nothing (no progress bar in a pipe)", se)
	}
	r := fsckJSON(t, v)
	if r.Result != "clean" || r.Files != 3 || len(r.Problems) != 0 || len(r.Keys) != 1 || r.Keys[0].Opened != 3 {
		t.Errorf("fsck --json = %+v, want clean, 3 files, the key opening 3 headers (two files and the configuration)", r)
	}
}

func TestFsckDamagedBlock(t *testing.T) {
	v := newOfflineVol(t)
	v.put(t, "dir/f", randData(4, 3*4096))
	v.put(t, "g", randData(5, 10))
	flip(t, v.path("dir/f"), blockOff(1))
	code, so, _ := v.run(t, "fsck", v.dir)
	if code != exitDamaged || !strings.Contains(so, "dir/f: block 1: ") {
		t.Errorf("fsck = %d, %q; want %d and dir/f block 1", code, so, exitDamaged)
	}
	r := fsckJSON(t, v)
	p := findProblem(r, "dir/f", probBlock)
	if r.Result != "damaged" || len(r.Problems) != 1 || p == nil || p.Block == nil || *p.Block != 1 {
		t.Errorf("fsck --json problems = %+v, want block 1 of dir/f", r.Problems)
	}
	// --repair never guesses a block.
	if code, so, _ := v.run(t, "fsck", "--repair", v.dir); code != exitDamaged || strings.Contains(so, "[repaired]") {
		t.Errorf("fsck --repair = %d %q, want %d and nothing repaired", code, so, exitDamaged)
	}
	// A damaged tail.
	f, err := os.OpenFile(v.path("g"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 4096+28-(10+28)+5)) // the file is now paged, and no size record names its size
	f.Close()
	r = fsckJSON(t, v)
	if p := findProblem(r, "g", probTail); p == nil || *p.Block != 0 {
		t.Errorf("fsck --json problems = %+v, want g's size reported, from block 0", r.Problems)
	}
	if p := findProblem(r, "g", probBlock); p == nil || *p.Block != 0 {
		t.Errorf("fsck --json problems = %+v, want block 0 of g (a short block padded with garbage)", r.Problems)
	}
}

func TestFsckHeaderCopy(t *testing.T) {
	v := newOfflineVol(t)
	content := randData(6, 5000)
	v.put(t, "f", content)
	v.put(t, "g", randData(7, 1))
	flip(t, v.path("f"), copyOff3(1))
	flip(t, v.path(volume.ConfigName), copyOff(0)+1000)
	code, so, _ := v.run(t, "fsck", v.dir)
	if code != exitDamaged || !strings.Contains(so, "f: header copy 1: ") || !strings.Contains(so, volume.ConfigName+": header copy 0: ") {
		t.Errorf("fsck = %d, %q; want %d, header copy 1 of f and copy 0 of the configuration", code, so, exitDamaged)
	}
	code, so, _ = v.run(t, "fsck", "--repair", v.dir)
	if code != exitOK || strings.Count(so, "[repaired]") != 2 {
		t.Errorf("fsck --repair = %d, %q; want 0 and two copies repaired", code, so)
	}
	if code, so, _ := v.run(t, "fsck", v.dir); code != exitOK || !strings.Contains(so, "no problems") {
		t.Errorf("fsck after repair = %d, %q; want 0", code, so)
	}
	if code, so, se := v.run(t, "cat", v.dir, "f"); code != 0 || so != string(content) {
		t.Errorf("cat after repair = %d (%s), content equal %v", code, se, so == string(content))
	}
	// Both copies damaged: the file is unreadable, nothing to restore.
	flip(t, v.path("g"), macOff3(0))
	flip(t, v.path("g"), macOff3(1))
	code, so, _ = v.run(t, "fsck", "--repair", v.dir)
	if code != exitDamaged || !strings.Contains(so, "g: ") || strings.Contains(so, "[repaired]") {
		t.Errorf("fsck --repair of a header without a valid copy = %d, %q; want %d", code, so, exitDamaged)
	}
	r := fsckJSON(t, v)
	if p := findProblem(r, "g", probHeader); p == nil {
		t.Errorf("fsck --json problems = %+v, want a header problem of g", r.Problems)
	}
	// A torn header.
	if err := os.WriteFile(v.path("torn"), make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := fsckJSON(t, v); findProblem(r, "torn", probHeader) == nil {
		t.Errorf("fsck --json problems = %+v, want a header problem of torn", r.Problems)
	}
}

// TestFsckJournal leaves a record page in the write journal that is not
// an authentic record: fsck reports it, --repair clears it (as a mount's
// replay would), and fsck is clean again. The journal lock held (a
// read-write mount) makes --repair refuse.
func TestFsckJournal(t *testing.T) {
	v := newOfflineVol(t)
	v.put(t, "f", randData(8, 4096))
	vol := v.open(t)
	maxData := cryptfile.JournalDataSize(vol.Layout)
	j, err := cryptfile.OpenJournal(context.Background(), vol.Backing(), maxData, vol.JournalKeys(), true, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	// The record page of slot 2: the journal's header, then slots of
	// 4096 + ceil(maxData / 4096) * 4096 bytes.
	slotSize := int64(4096 + (maxData+4095)/4096*4096)
	page := append([]byte("KMSFSJ3\x00\x00\x40"), randData(9, 64)...)
	jf, err := os.OpenFile(v.path(cryptfile.JournalName), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jf.WriteAt(page, header.Size+2*slotSize); err != nil {
		t.Fatal(err)
	}
	jf.Close()

	// Mounted read-write: the journal is locked, --repair refuses.
	code, _, se := v.run(t, "fsck", "--repair", v.dir)
	if code != exitError || !strings.Contains(se, "mounted read-write") {
		t.Errorf("fsck --repair with the journal locked = %d %q, want %d", code, se, exitError)
	}
	j.Close()

	r := fsckJSON(t, v)
	p := findProblem(r, cryptfile.JournalName, probJournal)
	if r.Exit != exitDamaged || p == nil || p.Slot == nil || *p.Slot != 2 || p.Repaired {
		t.Errorf("fsck --json = %+v, want journal slot 2 reported", r)
	}
	r = fsckJSON(t, v, "--repair")
	if p := findProblem(r, cryptfile.JournalName, probJournal); r.Exit != exitOK || p == nil || !p.Repaired {
		t.Errorf("fsck --json --repair = %+v, want the journal slot repaired and exit 0", r)
	}
	if code, so, _ := v.run(t, "fsck", v.dir); code != exitOK {
		t.Errorf("fsck after repair = %d, %q; want 0", code, so)
	}
}

func TestFsckKeys(t *testing.T) {
	home := t.TempDir()
	keyA := "local://" + filepath.Join(home, "a.key")
	keyB := "local://" + filepath.Join(home, "b.key")
	v := &offlineVol{home: home, dir: filepath.Join(home, "vol"), key: keyA}
	os.Mkdir(v.dir, 0o755)
	if code, _, se := v.run(t, "init", "--plaintext-names", "--key", keyA, "--key", keyB, v.dir); code != 0 {
		t.Fatalf("init = %d (%s)", code, se)
	}
	v.put(t, "f", randData(10, 10))
	if code, so, se := v.run(t, "fsck", v.dir); code != exitOK {
		t.Fatalf("fsck = %d %q %q, want 0", code, so, se)
	}
	// Key B gone: every file still opens with A, but B's slots fail.
	os.Remove(strings.TrimPrefix(keyB, "local://"))
	code, so, _ := v.run(t, "fsck", v.dir)
	if code != exitKey || !strings.Contains(so, "key "+keyB+": failed for 1 file") {
		t.Errorf("fsck with key B gone = %d %q, want %d and B's failure", code, so, exitKey)
	}
	r := fsckJSON(t, v)
	if len(r.Keys) != 2 || r.Keys[1].URI != keyB || r.Keys[1].Failed != 1 || r.Keys[0].Opened != 2 {
		t.Errorf("fsck --json key slots = %+v", r.Keys)
	}
	// Key B trusted no more (another user who trusts only A): its slots
	// are listed, not tried, and the check is clean.
	other := t.TempDir()
	if code, _, se := kmsfs(t, other, "trust", "--yes", "--key", keyA, v.dir); code != 0 {
		t.Fatalf("trust = %d %s", code, se)
	}
	code, so, _ = kmsfs(t, other, "fsck", v.dir)
	if code != exitOK || !strings.Contains(so, "key "+keyB+": not trusted here, not tried") {
		t.Errorf("fsck trusting only A = %d %q, want 0 and B untried", code, so)
	}
	// Key A gone too: the configuration cannot be read.
	os.Remove(strings.TrimPrefix(keyA, "local://"))
	if code, _, se := v.run(t, "fsck", v.dir); code != exitKey || !strings.Contains(se, "a.key") {
		t.Errorf("fsck with no key = %d %q, want %d naming the key", code, se, exitKey)
	}
	r = fsckJSON(t, v)
	if r.Result != "key-unavailable" || r.Error == "" {
		t.Errorf("fsck --json with no key = %+v", r)
	}
}

func TestFsckNotVolume(t *testing.T) {
	v := newOfflineVol(t)
	if code, _, se := v.run(t, "fsck", v.home); code != exitNotVolume || !strings.Contains(se, "not a kmsfs volume") {
		t.Errorf("fsck of a non-volume = %d %q, want %d", code, se, exitNotVolume)
	}
	flip(t, v.path(volume.ConfigName), macOff(0))
	flip(t, v.path(volume.ConfigName), macOff(1))
	if code, _, se := v.run(t, "fsck", v.dir); code != exitNotVolume {
		t.Errorf("fsck of a damaged configuration = %d %q, want %d", code, se, exitNotVolume)
	}
}

func TestCat(t *testing.T) {
	v := newOfflineVol(t)
	content := randData(11, 3*4096+1)
	v.put(t, "d/f", content)
	v.put(t, "empty", nil)
	os.Symlink("d", v.path("link"))
	if code, so, se := v.run(t, "cat", v.dir, "d/f"); code != 0 || so != string(content) {
		t.Errorf("cat d/f = %d (%s), %d bytes, want 0 and the content", code, se, len(so))
	}
	if code, so, _ := v.run(t, "cat", v.dir, "/d/f"); code != 0 || so != string(content) {
		t.Errorf("cat /d/f = %d, %d bytes", code, len(so))
	}
	if code, so, _ := v.run(t, "cat", v.dir, "empty"); code != 0 || so != "" {
		t.Errorf("cat empty = %d, %q", code, so)
	}
	tests := []struct {
		name, path string
		code       int
		want       string
	}{
		{"missing", "nope", exitError, "no such file"},
		{"directory", "d", exitError, "a directory"},
		{"configuration", volume.ConfigName, exitError, "kmsfs's own file"},
		{"through a symlink", "link/f", exitError, "symlink"},
		{"a symlink", "link", exitError, "symlink"},
		{"out of the volume", "../x", exitError, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, so, se := v.run(t, "cat", v.dir, tc.path)
			if code != tc.code || !strings.Contains(se, tc.want) || so != "" {
				t.Errorf("cat %s = %d, %q, %q; want %d and %q", tc.path, code, so, se, tc.code, tc.want)
			}
		})
	}
	flip(t, v.path("d/f"), blockOff(2))
	if code, _, se := v.run(t, "cat", v.dir, "d/f"); code != exitDamaged || !strings.Contains(se, "block 2") || !strings.Contains(se, "d/f") {
		t.Errorf("cat of a damaged block = %d %q, want %d naming d/f and block 2", code, se, exitDamaged)
	}
	if code, _, se := v.run(t, "cat", v.home, "f"); code != exitNotVolume {
		t.Errorf("cat in a non-volume = %d %q, want %d", code, se, exitNotVolume)
	}
	keyFile := strings.TrimPrefix(v.key, "local://")
	os.Rename(keyFile, keyFile+".moved")
	if code, _, se := v.run(t, "cat", v.dir, "empty"); code != exitKey {
		t.Errorf("cat with the key gone = %d %q, want %d", code, se, exitKey)
	}
	if code, so, se := v.run(t, "cat", "--key", "local://"+keyFile+".moved", v.dir, "empty"); code != 0 || so != "" {
		t.Errorf("cat --key moved = %d %q %q, want 0", code, so, se)
	}
}

func TestEncryptDecrypt(t *testing.T) {
	home := t.TempDir()
	def := filepath.Join(home, ".config", "kmsfs", "local.key")
	other := filepath.Join(home, "other.key")
	// Make both keys (init creates a missing local key file).
	for i, k := range []string{def, other} {
		d := filepath.Join(home, "v"+string(rune('0'+i)))
		os.Mkdir(d, 0o755)
		if code, _, se := kmsfs(t, home, "init", "--key", "local://"+k, d); code != 0 {
			t.Fatalf("init = %d %s", code, se)
		}
	}
	for _, tc := range []struct {
		name string
		size int
		args []string
	}{
		{"empty", 0, nil},
		{"one byte", 1, nil},
		{"one block", 4096, nil},
		{"3 MiB", 3<<20 + 5, nil},
		{"64 KiB blocks", 200000, []string{"--block-size", "65536"}},
		{"two keys", 10000, []string{"--key", "local://" + def, "--key", "local://" + other}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in, enc, out := filepath.Join(dir, "in"), filepath.Join(dir, "enc"), filepath.Join(dir, "out")
			data := randData(uint64(tc.size), tc.size)
			os.WriteFile(in, data, 0o644)
			if code, _, se := kmsfs(t, home, append(append([]string{"encrypt"}, tc.args...), in, enc)...); code != 0 {
				t.Fatalf("encrypt = %d %s", code, se)
			}
			raw, _ := os.ReadFile(enc)
			if len(raw) < header.Size || (len(data) >= 16 && bytes.Contains(raw, data[:16])) {
				t.Errorf("encrypted file: %d bytes, contains plaintext %v", len(raw), bytes.Contains(raw, data))
			}
			if code, _, se := kmsfs(t, home, "decrypt", enc, out); code != 0 {
				t.Fatalf("decrypt = %d %s", code, se)
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
				t.Errorf("decrypt gave %d bytes, want the %d bytes encrypted", len(got), len(data))
			}
		})
	}

	dir := t.TempDir()
	in, enc, out := filepath.Join(dir, "in"), filepath.Join(dir, "enc"), filepath.Join(dir, "out")
	data := randData(12, 3*4096)
	os.WriteFile(in, data, 0o644)
	// stdin to a file, a file to stdout.
	cmd := []string{"encrypt", "-", enc}
	c := runStdin(t, home, bytes.NewReader(data), cmd...)
	if c.code != 0 {
		t.Fatalf("encrypt - = %d %s", c.code, c.stderr)
	}
	if code, so, se := kmsfs(t, home, "decrypt", enc, "-"); code != 0 || so != string(data) {
		t.Errorf("decrypt to stdout = %d %s, equal %v", code, se, so == string(data))
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"OUT exists", []string{"encrypt", in, enc}, exitError, "exists"},
		{"decrypt OUT exists", []string{"decrypt", enc, in}, exitError, "exists"},
		{"encrypt to stdout", []string{"encrypt", in, "-"}, exitUsage, "not stdout"},
		{"bad block size", []string{"encrypt", "--block-size", "1000", in, out}, exitError, "power of two"},
		{"bad key URI", []string{"encrypt", "--key", "nosuch://x", in, out}, exitCode(keyring.ErrBadURI), "unknown scheme"},
		{"missing key file", []string{"encrypt", "--key", "local://" + filepath.Join(dir, "nokey"), in, out}, exitKey, "nokey"},
		{"another key", []string{"decrypt", "--key", "local://" + other, enc, out}, exitKey, ""},
		{"not a kmsfs file", []string{"decrypt", in, out}, exitNotVolume, "not a kmsfs file"},
		{"missing input", []string{"decrypt", filepath.Join(dir, "nope"), out}, exitError, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, se := kmsfs(t, home, tc.args...)
			if code != tc.code || !strings.Contains(se, tc.want) {
				t.Errorf("kmsfs %v = %d %q, want %d and %q", tc.args, code, se, tc.code, tc.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("kmsfs %v left %s behind", tc.args, out)
				os.Remove(out)
			}
		})
	}
	// The key file moved: named with --key, it opens slots naming its old
	// path.
	moved := filepath.Join(home, "moved.key")
	if err := os.Rename(def, moved); err != nil {
		t.Fatal(err)
	}
	if code, _, se := kmsfs(t, home, "decrypt", enc, out); code != exitKey || !strings.Contains(se, def) {
		t.Errorf("decrypt with the key gone = %d %q, want %d naming it", code, se, exitKey)
	}
	if code, _, se := kmsfs(t, home, "decrypt", "--key", "local://"+moved, enc, out); code != 0 {
		t.Errorf("decrypt --key moved = %d %q, want 0", code, se)
	}
	os.Remove(out)
	os.Rename(moved, def)
	// A damaged block: exit 6 naming it, no output left.
	flip(t, enc, blockOff(1))
	if code, _, se := kmsfs(t, home, "decrypt", enc, out); code != exitDamaged || !strings.Contains(se, "block 1") {
		t.Errorf("decrypt of a damaged block = %d %q, want %d naming block 1", code, se, exitDamaged)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("decrypt of a damaged file left %s", out)
	}
	// A file of a volume decrypts with the volume's key.
	v := newOfflineVol(t)
	v.put(t, "f", data)
	if code, so, se := v.run(t, "decrypt", v.path("f"), "-"); code != 0 || so != string(data) {
		t.Errorf("decrypt of a volume's file = %d %q", code, se)
	}
}

// result is what exec returns.
type result struct {
	code           int
	stdout, stderr string
}

// runStdin runs kmsfs with HOME and stdin.
func runStdin(t *testing.T, home string, stdin io.Reader, args ...string) result {
	t.Helper()
	var so, se bytes.Buffer
	p := exec.Command(kmsfsBin, args...)
	p.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME=")
	p.Stdin, p.Stdout, p.Stderr = stdin, &so, &se
	err := p.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}
