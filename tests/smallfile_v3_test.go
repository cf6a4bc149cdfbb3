package tests

// Small files of format version 3 (docs/FORMAT.md, "Regular files,
// version 3"): a file of a few hundred bytes is inline, one page of disk
// and one page read; and a volume made with --format-version 2 keeps the
// version-2 layout.

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestV3SmallFiles writes 1,500 files of 300 bytes through the mount and
// checks that each backing file is inline: under a page, one page of
// disk. After the caches are dropped and the volume mounted again,
// reading one of them through the mount brings exactly one page of its
// backing file into the page cache.
func TestV3SmallFiles(t *testing.T) {
	v := newVolume(t)
	requireDiskBacking(t, v)
	l := v3XLayout(t, v)
	const n, size = 1500, 300
	if err := os.Mkdir(v.path("small"), 0o755); err != nil {
		t.Fatal(err)
	}
	name := func(i int) string { return fmt.Sprintf("small/f%04d", i) }
	content := func(i int) []byte { return pattern(fmt.Sprintf("small-%04d", i), size) }
	for i := range n {
		writeFile(t, v.path(name(i)), content(i))
	}

	// The backing file of every one, found by its inode number.
	byIno := map[uint64]string{}
	dir := filepath.Dir(v.backing(name(0)))
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if d.Type().IsRegular() && syscall.Lstat(p, &st) == nil {
			byIno[st.Ino] = p
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	backing := make([]string, n)
	wantSize := l.InlineSize(size)
	bad := 0
	for i := range n {
		var st syscall.Stat_t
		if err := syscall.Stat(v.path(name(i)), &st); err != nil {
			t.Fatalf("stat %s = %v", name(i), err)
		}
		p, ok := byIno[st.Ino]
		if !ok {
			t.Fatalf("no backing file in %s has the inode %d of %s", dir, st.Ino, name(i))
		}
		backing[i] = p
		var bst syscall.Stat_t
		if err := syscall.Stat(p, &bst); err != nil {
			t.Fatal(err)
		}
		if bst.Size != wantSize || bst.Size >= 4096 || bst.Blocks != 8 {
			if bad++; bad <= 10 {
				t.Errorf("backing file of %s (%d bytes): %d bytes, %d bytes of disk; want %d bytes (inline, under a page) and 4096 bytes of disk (st_blocks 8)",
					name(i), size, bst.Size, bst.Blocks*512, wantSize)
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d backing files in all are not one inline page", bad)
	}
	if b := readFile(t, backing[0]); bytes.Contains(b, []byte(marker)) {
		t.Errorf("backing file %s holds plaintext", backing[0])
	}

	// Cold: everything written back and dropped, and a fresh mount.
	v.unmount()
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		if inCI() {
			t.Fatalf("dropping the page cache: %v", err)
		}
		t.Skipf("cannot drop the page cache: %v", err)
	}
	v.mount()
	const pick, other = 777, 778
	for _, i := range []int{pick, other} {
		if res := residentPagesOf(t, backing[i]); res != 0 {
			t.Fatalf("after drop_caches, %d pages of the backing file of %s are in the page cache: cannot tell reads apart", res, name(i))
		}
	}
	checkContent(t, v.path(name(pick)), content(pick), v.blockSize)
	if res := residentPagesOf(t, backing[pick]); res != 1 {
		t.Errorf("reading %s (%d bytes) through the mount brought %d pages of its backing file into the page cache, want exactly 1", name(pick), size, res)
	}
	if res := residentPagesOf(t, backing[other]); res != 0 {
		t.Errorf("reading %s brought %d pages of the backing file of %s, which was not read, into the page cache", name(pick), res, name(other))
	}
}

// TestV3SmallFileGrows takes a file from inline to paged and back down,
// checking its content and its backing size at each step and after a
// remount: 300 bytes inline, the largest inline size and one byte more,
// 10 KB paged, 100 bytes by truncate (a paged file stays paged), and 100
// bytes by O_TRUNC (truncated to 0 first: inline again).
func TestV3SmallFileGrows(t *testing.T) {
	v := newVolume(t)
	l := v3XLayout(t, v)
	data := pattern("grow", 10_000)
	check := func(name string, want []byte, wantBacking int64, when string) {
		t.Helper()
		checkContent(t, v.path(name), want, v.blockSize)
		var st syscall.Stat_t
		p := v.backing(name)
		if err := syscall.Stat(p, &st); err != nil {
			t.Errorf("stat backing file of %s = %v", name, err)
			return
		}
		if st.Size != wantBacking {
			t.Errorf("%s: backing file of %s (%d bytes) is %d bytes, want %d", when, name, len(want), st.Size, wantBacking)
		}
		if b := readFile(t, p); bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s: backing file of %s holds plaintext", when, name)
		}
	}
	type step struct {
		what    string
		do      func(t *testing.T, f *os.File)
		size    int
		backing int64
	}
	inlineMax := int(l.InlineMax())
	writeTo := func(n int) func(t *testing.T, f *os.File) {
		return func(t *testing.T, f *os.File) {
			t.Helper()
			fi, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(data[fi.Size():n], fi.Size()); err != nil {
				t.Fatalf("pwrite up to %d bytes = %v", n, err)
			}
		}
	}
	steps := []step{
		{"300 bytes", writeTo(300), 300, l.InlineSize(300)},
		{"the largest inline file", writeTo(inlineMax), inlineMax, l.InlineSize(int64(inlineMax))},
		{"one byte more", writeTo(inlineMax + 1), inlineMax + 1, l.PagedSize(int64(inlineMax + 1))},
		{"10 KB", writeTo(10_000), 10_000, l.PagedSize(10_000)},
		{"truncated to 100 bytes", func(t *testing.T, f *os.File) {
			if err := f.Truncate(100); err != nil {
				t.Fatalf("ftruncate(100) = %v", err)
			}
		}, 100, l.PagedSize(100)},
	}
	if got := l.InlineSize(int64(inlineMax)); got != 4095 {
		t.Errorf("InlineSize(InlineMax) = %d, want 4095", got)
	}
	f, err := os.OpenFile(v.path("grow"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, s := range steps {
		s.do(t, f)
		check("grow", data[:s.size], s.backing, s.what)
	}
	// Down to 100 bytes the other way: O_TRUNC, then a write.
	f2, err := os.OpenFile(v.path("grow"), os.O_RDWR|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	check("grow", nil, int64(l.HeaderLen), "after O_TRUNC")
	if _, err := f2.Write(data[:100]); err != nil {
		t.Fatal(err)
	}
	f2.Close()
	check("grow", data[:100], l.InlineSize(100), "100 bytes after O_TRUNC")

	// A second file left paged at 100 bytes, and both after a remount.
	writeFile(t, v.path("shrunk"), data[:10_000])
	if err := os.Truncate(v.path("shrunk"), 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	v.remount()
	check("grow", data[:100], l.InlineSize(100), "after the remount")
	check("shrunk", data[:100], l.PagedSize(100), "after the remount")
	// And it grows again from there.
	if err := os.WriteFile(v.path("shrunk"), data[:5000], 0o644); err != nil {
		t.Fatal(err)
	}
	v.remount()
	check("shrunk", data[:5000], l.PagedSize(5000), "rewritten to 5000 bytes, after a remount")
}

// TestV3FormatVersion2Volume makes a volume with --format-version 2 and
// checks that its files keep the version-2 layout (a 4096-byte header,
// blocks with their nonce and tag inline, no inline small files) and read
// back after a remount.
func TestV3FormatVersion2Volume(t *testing.T) {
	v := newVolume(t, withInitArgs("--format-version", "2"))
	if cfg := v3XConfig(t, v); cfg.Version != 2 || cfg.HeaderCopySize != 0 {
		t.Errorf("configuration of a --format-version 2 volume: version %d, header copy size %d; want 2 and none", cfg.Version, cfg.HeaderCopySize)
	}
	files := map[string][]byte{
		"small":  pattern("v2-small", 300),
		"blocks": pattern("v2-blocks", 3*v.blockSize+5),
		"empty":  nil,
	}
	for name, d := range files {
		writeFile(t, v.path(name), d)
	}
	v.remount()
	for name, d := range files {
		checkContent(t, v.path(name), d, v.blockSize)
		checkBacking(t, v, name, int64(len(d)))
	}

	for _, bad := range []string{"1", "4", "x"} {
		dir := t.TempDir()
		r := v.kmsfs("init", "--key", v.keyURI, "--format-version", bad, dir)
		if r.code == exitOK {
			t.Errorf("%v\nwant a failure: this kmsfs writes format versions 2 and 3", r)
		} else if !strings.Contains(r.stderr, "version") && !strings.Contains(r.stderr, "format") {
			t.Errorf("%v\nwant an error that names the format version", r)
		}
		if _, err := os.Stat(filepath.Join(dir, confName)); err == nil {
			t.Errorf("kmsfs init --format-version %s left a %s", bad, confName)
		}
	}
}
