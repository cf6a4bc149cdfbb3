package tests

// kmsfs reencrypt: every file's content under a new data key, through
// the mount, with files open; resumable; a crash in the middle of a file
// is finished by the next mount.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reencXKeys returns the file ID and data key of the backing file of
// name.
func reencXKeys(t *testing.T, v *volume, name string, master []byte) (id string, dk string) {
	t.Helper()
	b, err := os.ReadFile(v.backing(name))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := secretsXFileKeys(t, v.backing(name), v.keyURI, master)
	return string(b[16:32]), string(d)
}

func TestReencrypt(t *testing.T) {
	v := newVolume(t)
	files := map[string][]byte{
		"a.txt":         pattern("a", 100<<10),
		"dir/b.bin":     pattern("b", 3<<20),
		"dir/sub/c":     []byte("small"),
		"dir/sub/empty": nil,
	}
	if err := os.MkdirAll(v.path("dir/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		writeFile(t, v.path(name), data)
	}
	// A sparse file: 1 MiB, a 64 MiB hole, 1 MiB.
	sp, err := os.Create(v.path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 65 << 20} {
		if _, err := sp.WriteAt(pattern("s", 1<<20), off); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	files["sparse"] = readFile(t, v.path("sparse"))
	if err := os.Link(v.path("a.txt"), v.path("dir/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.txt", v.path("sym")); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(v.path("dir/sub/c"), old, old); err != nil {
		t.Fatal(err)
	}

	master := secretsXMasterKey(t, v.keyPath, "")
	keyed := []string{"a.txt", "dir/b.bin", "dir/sub/c", "sparse"}
	ids, dks := map[string]string{}, map[string]bool{}
	for _, name := range keyed {
		id, dk := reencXKeys(t, v, name, master)
		ids[name], dks[dk] = id, true
	}
	var before syscall.Stat_t
	if err := syscall.Stat(v.backing("sparse"), &before); err != nil {
		t.Fatal(err)
	}

	// b.bin stays open, read-write, through the re-encryption.
	f, err := os.OpenFile(v.path("dir/b.bin"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	r := v.kmsfs("reencrypt", v.mnt)
	if r.code != exitOK || r.err != nil {
		t.Fatalf("%v\nwant exit 0", r)
	}
	if !strings.Contains(r.stderr, "re-encrypted 5 files") || !strings.Contains(r.stderr, "files/s") || !strings.Contains(r.stderr, "MB/s") {
		t.Errorf("%v\nwant 5 files (a link done once, the empty file too) with their rate", r)
	}
	for _, name := range keyed {
		id, dk := reencXKeys(t, v, name, master)
		if id == ids[name] {
			t.Errorf("%s: file ID unchanged", name)
		}
		if dks[dk] {
			t.Errorf("%s: still under a data key it or another file had before", name)
		}
	}
	for name, data := range files {
		checkContent(t, v.path(name), data, v.blockSize)
	}
	checkContent(t, v.path("dir/link"), files["a.txt"], v.blockSize)
	if fi, err := os.Stat(v.path("dir/sub/c")); err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("mtime of dir/sub/c = %v, %v; want %v kept", fi.ModTime(), err, old)
	}
	var la, lb syscall.Stat_t
	syscall.Stat(v.path("a.txt"), &la)
	syscall.Stat(v.path("dir/link"), &lb)
	if la.Ino != lb.Ino || la.Nlink != 2 {
		t.Errorf("a.txt and dir/link: inodes %d, %d, nlink %d: the hard link broke", la.Ino, lb.Ino, la.Nlink)
	}
	var after syscall.Stat_t
	if err := syscall.Stat(v.backing("sparse"), &after); err != nil {
		t.Fatal(err)
	}
	if after.Blocks > before.Blocks+16 {
		t.Errorf("sparse: %d blocks of backing storage after, %d before: its hole was filled", after.Blocks, before.Blocks)
	}
	// The open handle goes on: what it writes reads back, under the new key.
	if _, err := f.WriteAt([]byte("written after"), 5000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := files["dir/b.bin"]
	copy(want[5000:], "written after")
	checkContent(t, v.path("dir/b.bin"), want, v.blockSize)
	v.remount()
	for name, data := range files {
		checkContent(t, v.path(name), data, v.blockSize)
	}
	if l, _ := filepath.Glob(v.backing("kmsfs.reencrypt.*")); len(l) != 0 {
		t.Errorf("copies left in the backing directory: %v", l)
	}
}

// TestReencryptResume runs with the state an interrupted run leaves: the
// files done before are skipped, the rest done, the state removed.
func TestReencryptResume(t *testing.T) {
	v := newVolume(t)
	names := []string{"1", "2", "3/x", "4"}
	os.Mkdir(v.path("3"), 0o755)
	for _, n := range names {
		writeFile(t, v.path(n), pattern(n, 10000))
	}
	master := secretsXMasterKey(t, v.keyPath, "")
	ids := map[string]string{}
	for _, n := range names {
		ids[n], _ = reencXKeys(t, v, n, master)
	}
	id := v.volumeID(t)
	state := filepath.Join(v.home, ".config", "kmsfs", "reencrypt", id+".json")
	os.MkdirAll(filepath.Dir(state), 0o700)
	b, _ := json.Marshal(map[string]any{"volume_id": id, "scope": []string{"."}, "started": time.Now(), "after": "3/x", "files": 3})
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r := v.kmsfs("reencrypt", v.mnt)
	if r.code != exitOK || !strings.Contains(r.stderr, "resuming") || !strings.Contains(r.stderr, "re-encrypted 1 files") {
		t.Fatalf("%v\nwant exit 0, resuming, one file", r)
	}
	for _, n := range names {
		now, _ := reencXKeys(t, v, n, master)
		if changed := now != ids[n]; changed != (n == "4") {
			t.Errorf("%s: re-encrypted %v, want %v", n, changed, n == "4")
		}
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file after a finished run: %v", err)
	}
	// --restart does everything again.
	r = v.kmsfs("reencrypt", "--restart", v.mnt, "3")
	if r.code != exitOK || !strings.Contains(r.stderr, "re-encrypted 1 files") {
		t.Fatalf("%v\nwant exit 0 and one file (below 3)", r)
	}
}

// TestReencryptCrash kills the daemon while it writes a re-encrypted
// file over the old one; the next mount finishes the job.
func TestReencryptCrash(t *testing.T) {
	v := newVolume(t)
	data := pattern("crash", 96<<20)
	writeFile(t, v.path("big"), data)
	writeFile(t, v.path("other"), pattern("other", 5000))
	done := make(chan result, 1)
	go func() { done <- v.kmsfs("reencrypt", v.mnt) }()
	// Wait for the commit point: the copy renamed to its committed name.
	caught := false
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && !caught {
		l, _ := filepath.Glob(v.backing("kmsfs.reencrypt.*"))
		for _, p := range l {
			if !strings.HasSuffix(p, ".tmp") {
				caught = true
			}
		}
		if len(done) > 0 {
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	if !caught {
		r := <-done
		t.Fatalf("the re-encryption finished before the test saw its commit point:\n%v", r)
	}
	crashXKillDaemon(t, v)
	if r := <-done; r.code == exitOK {
		t.Errorf("%v\nwant a failure: the daemon was killed", r)
	}
	crashXRemount(t, v)
	if !strings.Contains(v.log(), "finished its interrupted re-encryption") {
		t.Errorf("daemon log does not say it finished the re-encryption:\n%s", v.log())
	}
	checkContent(t, v.path("big"), data, v.blockSize)
	checkContent(t, v.path("other"), pattern("other", 5000), v.blockSize)
	if l, _ := filepath.Glob(v.backing("kmsfs.reencrypt.*")); len(l) != 0 {
		t.Errorf("copies left in the backing directory: %v", l)
	}
	// And the run resumes and finishes.
	if r := v.kmsfs("reencrypt", v.mnt); r.code != exitOK {
		t.Errorf("%v\nwant exit 0", r)
	}
	checkContent(t, v.path("big"), data, v.blockSize)
	_ = bytes.Equal
}
