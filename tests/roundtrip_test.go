package tests

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// blockSizes are the block sizes the round-trip tests run with.
var blockSizes = []int{4096, 65536}

// TestRoundTrip writes files of sizes around the block edges, reads them
// back, checks their backing files against docs/FORMAT.md, and reads them
// again after a remount.
func TestRoundTrip(t *testing.T) {
	for _, bs := range blockSizes {
		t.Run(fmt.Sprintf("B=%d", bs), func(t *testing.T) {
			v := newVolume(t, withBlockSize(bs))
			sizes := []int{0, 1, bs - 1, bs, bs + 1, 2*bs - 1, 2 * bs, 2*bs + 1, 1<<20 + 3}
			files := map[string][]byte{}
			for _, n := range sizes {
				files[fmt.Sprintf("size-%d", n)] = pattern(fmt.Sprintf("size-%d", n), n)
			}
			// A nested path keeps its path in the cipher dir.
			if err := os.MkdirAll(v.path("dir/sub"), 0o755); err != nil {
				t.Fatalf("os.MkdirAll = %v, want nil", err)
			}
			files["dir/sub/nested"] = pattern("nested", 3*bs+7)

			names := slices.Sorted(maps.Keys(files))
			for _, name := range names {
				writeFile(t, v.path(name), files[name])
			}
			check := func(when string) {
				t.Helper()
				for _, name := range names {
					data := files[name]
					checkContent(t, v.path(name), data, bs)
					checkBacking(t, v, name, int64(len(data)))
					checkRanges(t, v.path(name), data, bs)
				}
				if t.Failed() {
					t.Fatalf("failures %s", when)
				}
			}
			check("after writing")
			conf, err := os.ReadFile(v.backing(confName))
			if err != nil {
				t.Fatalf("os.ReadFile(%q) = %v, want the volume configuration", v.backing(confName), err)
			}
			if len(conf) < headerSize {
				t.Fatalf("size of %s = %d, want >= %d", confName, len(conf), headerSize)
			}
			checkPreamble(t, v.backing(confName), conf[:32], bs, 0) // a version-1 header in every format version

			v.remount()
			check("after remount")
		})
	}
}

// checkRanges reads ranges of path that start and end around block
// edges and compares them with want.
func checkRanges(t *testing.T, path string, want []byte, bs int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("os.Open(%q) = %v, want nil", path, err)
		return
	}
	defer f.Close()
	size := int64(len(want))
	type rng struct{ off, n int64 }
	var ranges []rng
	for _, edge := range []int64{int64(bs), 2 * int64(bs), 5 * int64(bs), size} {
		for _, d := range []int64{-3, 0, 1} {
			off := edge + d
			if off < 0 {
				continue
			}
			ranges = append(ranges, rng{off, 1}, rng{off, 7}, rng{off, int64(bs) + 9})
		}
	}
	ranges = append(ranges, rng{size + 100, 10}, rng{0, size + 10})
	for _, r := range ranges {
		buf := make([]byte, r.n)
		n, err := preadFull(f, buf, r.off)
		var exp []byte
		if r.off < size {
			exp = want[r.off:min(size, r.off+r.n)]
		}
		if n != len(exp) {
			t.Errorf("ReadAt(%s, %d bytes at %d) = %d bytes (err %v), want %d", path, r.n, r.off, n, err, len(exp))
			continue
		}
		if int64(n) == r.n && err != nil {
			t.Errorf("ReadAt(%s, %d bytes at %d) = %v, want nil", path, r.n, r.off, err)
		}
		if d := diffBytes(buf[:n], exp, bs); d != "" {
			t.Errorf("ReadAt(%s, %d bytes at %d) = %s", path, r.n, r.off, d)
		}
	}
}

// TestOpenFlags checks O_APPEND, O_TRUNC, O_EXCL and partial overwrites
// through a write-only descriptor (which need read-modify-write of the
// blocks they touch).
func TestOpenFlags(t *testing.T) {
	v := newVolume(t)
	bs := v.blockSize

	t.Run("O_APPEND", func(t *testing.T) {
		p := v.path("append")
		want := pattern("append-base", bs+100)
		writeFile(t, p, want)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatalf("os.OpenFile(O_WRONLY|O_APPEND) = %v, want nil", err)
		}
		for i, n := range []int{1, bs - 1, 3, 2*bs + 5, 17} {
			chunk := pattern(fmt.Sprintf("append-%d", i), n)
			if _, err := f.Write(chunk); err != nil {
				t.Fatalf("Write(%d bytes) #%d = %v, want nil", n, i, err)
			}
			want = append(want, chunk...)
		}
		// pwrite on an O_APPEND descriptor appends too (Linux).
		chunk := pattern("append-pwrite", 33)
		if _, err := unix.Pwrite(int(f.Fd()), chunk, 0); err != nil {
			t.Fatalf("unix.Pwrite(O_APPEND fd, 33 bytes, 0) = %v, want nil", err)
		}
		want = append(want, chunk...)
		if err := f.Close(); err != nil {
			t.Fatalf("Close = %v, want nil", err)
		}
		checkContent(t, p, want, bs)
		checkBacking(t, v, "append", int64(len(want)))

		// O_RDWR|O_APPEND: reads see what appends wrote.
		f, err = os.OpenFile(p, os.O_RDWR|os.O_APPEND, 0)
		if err != nil {
			t.Fatalf("os.OpenFile(O_RDWR|O_APPEND) = %v, want nil", err)
		}
		defer f.Close()
		chunk = pattern("append-rdwr", bs/2)
		if _, err := f.Write(chunk); err != nil {
			t.Fatalf("Write = %v, want nil", err)
		}
		want = append(want, chunk...)
		got := make([]byte, len(want))
		if n, err := preadFull(f, got, 0); err != nil || n != len(want) {
			t.Fatalf("ReadAt(0) = %d, %v, want %d, nil", n, err, len(want))
		}
		if d := diffBytes(got, want, bs); d != "" {
			t.Errorf("ReadAt after append = %s", d)
		}
	})

	t.Run("O_TRUNC", func(t *testing.T) {
		p := v.path("trunc")
		writeFile(t, p, pattern("trunc-long", 3*bs+7))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatalf("os.OpenFile(O_WRONLY|O_TRUNC) = %v, want nil", err)
		}
		if fi, err := f.Stat(); err != nil || fi.Size() != 0 {
			t.Errorf("Stat after O_TRUNC = %v, %v, want size 0", fi, err)
		}
		want := pattern("trunc-short", 100)
		if _, err := f.Write(want); err != nil {
			t.Fatalf("Write = %v, want nil", err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("Close = %v, want nil", err)
		}
		checkContent(t, p, want, bs)
		checkBacking(t, v, "trunc", int64(len(want)))
		// O_TRUNC of a file with content, nothing written after.
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatalf("os.OpenFile(O_WRONLY|O_TRUNC) = %v, want nil", err)
		}
		f.Close()
		checkContent(t, p, nil, bs)
		checkBacking(t, v, "trunc", 0)
	})

	t.Run("O_EXCL", func(t *testing.T) {
		p := v.path("excl")
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatalf("os.OpenFile(O_CREATE|O_EXCL) of a new file = %v, want nil", err)
		}
		want := pattern("excl", 10)
		if _, err := f.Write(want); err != nil {
			t.Fatalf("Write = %v, want nil", err)
		}
		f.Close()
		_, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errnoOf(err) != syscall.EEXIST {
			t.Errorf("os.OpenFile(O_CREATE|O_EXCL) of an existing file = %v, want EEXIST", err)
		}
		checkContent(t, p, want, bs)
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("os.Stat(%q) = %v, %v, want mode 0600", p, fi, err)
		}
	})

	t.Run("O_WRONLY overwrite", func(t *testing.T) {
		p := v.path("overwrite")
		want := pattern("overwrite-base", 2*bs+500)
		writeFile(t, p, want)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatalf("os.OpenFile(O_WRONLY) = %v, want nil", err)
		}
		writes := []struct{ off, n int }{
			{0, 1}, {bs - 1, 2}, {bs + 17, 100}, {2*bs + 499, 1}, {2*bs + 400, 200}, {3, bs}, {bs - 5, 2*bs + 10},
		}
		for i, w := range writes {
			chunk := bytes.Repeat([]byte{byte('A' + i)}, w.n)
			if _, err := f.WriteAt(chunk, int64(w.off)); err != nil {
				t.Fatalf("WriteAt(%d bytes at %d) = %v, want nil", w.n, w.off, err)
			}
			if end := w.off + w.n; end > len(want) {
				want = append(want, make([]byte, end-len(want))...)
			}
			copy(want[w.off:], chunk)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("Close = %v, want nil", err)
		}
		checkContent(t, p, want, bs)
		checkBacking(t, v, "overwrite", int64(len(want)))
		v.remount()
		checkContent(t, p, want, bs)
	})
}

// TestTruncate truncates a file up and down to odd sizes: the bytes a
// truncate adds read as zeros, also where they reuse a block that held
// data before.
func TestTruncate(t *testing.T) {
	v := newVolume(t)
	bs := v.blockSize
	p := v.path("t")
	want := pattern("truncate", 100)
	writeFile(t, p, want)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("os.OpenFile = %v, want nil", err)
	}
	defer f.Close()
	sizes := []int{3*bs + 17, bs - 5, 2*bs + 3, 0, bs + 1, 5 * bs, 7, 4 * bs, 4*bs - 1, 4*bs + 1, 1}
	for i, size := range sizes {
		var err error
		if i%2 == 0 {
			err = os.Truncate(p, int64(size))
		} else {
			err = f.Truncate(int64(size))
		}
		if err != nil {
			t.Fatalf("truncate #%d to %d = %v, want nil", i, size, err)
		}
		if size < len(want) {
			want = want[:size]
		} else {
			want = append(want, make([]byte, size-len(want))...)
		}
		checkContent(t, p, want, bs)
		checkBacking(t, v, "t", int64(size))
		// Put data back at the end of each block so that the next
		// shrink-then-grow has something to zero.
		chunk := pattern(fmt.Sprintf("refill-%d", i), 9)
		for off := 0; off+len(chunk) <= len(want); off += bs {
			at := min(off+bs-len(chunk), len(want)-len(chunk))
			if _, err := f.WriteAt(chunk, int64(at)); err != nil {
				t.Fatalf("WriteAt(%d) = %v, want nil", at, err)
			}
			copy(want[at:], chunk)
		}
		checkContent(t, p, want, bs)
	}
	f.Close()
	v.remount()
	checkContent(t, p, want, bs)
	checkBacking(t, v, "t", int64(len(want)))
}

// TestSparseWrite writes far beyond the end of a file: the gap reads as
// zeros and the size is right, before and after a remount.
func TestSparseWrite(t *testing.T) {
	v := newVolume(t)
	bs := v.blockSize
	p := v.path("sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatalf("os.Create = %v, want nil", err)
	}
	head := pattern("head", 10)
	near := pattern("near", 1000)
	far := pattern("far", 3*bs)
	nearOff := int64(100*bs + 123)
	farOff := int64(64<<20 + 5)
	for _, w := range []struct {
		off  int64
		data []byte
	}{{0, head}, {nearOff, near}, {farOff, far}} {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			t.Fatalf("WriteAt(%d bytes at %d) = %v, want nil", len(w.data), w.off, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	size := farOff + int64(len(far))
	check := func() {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != size {
			t.Fatalf("os.Stat(%q) = %v, %v, want size %d", p, fi, err, size)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatalf("os.Open = %v, want nil", err)
		}
		defer f.Close()
		// The whole file up to the near write, then windows around
		// the far write and in the middle of the gap.
		want := make([]byte, nearOff+int64(len(near)))
		copy(want, head)
		copy(want[nearOff:], near)
		readAt := func(off, n int64, exp []byte) {
			t.Helper()
			buf := make([]byte, n)
			if got, err := preadFull(f, buf, off); err != nil || int64(got) != n {
				t.Errorf("ReadAt(%d bytes at %d) = %d, %v, want %d, nil", n, off, got, err, n)
				return
			}
			if d := diffBytes(buf, exp, bs); d != "" {
				t.Errorf("ReadAt(%d bytes at %d) = %s", n, off, d)
			}
		}
		readAt(0, int64(len(want)), want)
		readAt(32<<20+7, int64(2*bs), make([]byte, 2*bs))
		window := append(make([]byte, 2*bs), far...)
		readAt(farOff-int64(2*bs), int64(len(window)), window)
		checkBacking(t, v, "sparse", size)
	}
	check()
	v.remount()
	check()
}

// TestMmapShared writes a file through a shared writable mapping, closes
// the descriptor before msync and munmap (so the writes reach kmsfs with
// no open descriptor), and reads it back before and after a remount.
func TestMmapShared(t *testing.T) {
	v := newVolume(t)
	bs := v.blockSize
	p := v.path("mmap")
	size := 3*bs + 100
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatalf("os.OpenFile = %v, want nil", err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatalf("Truncate(%d) = %v, want nil", size, err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		t.Fatalf("unix.Mmap(MAP_SHARED, PROT_WRITE) = %v, want nil", err)
	}
	want := pattern("mmap", size)
	copy(m, want)
	if err := f.Close(); err != nil {
		t.Errorf("Close = %v, want nil", err)
	}
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Errorf("unix.Msync = %v, want nil", err)
	}
	if err := unix.Munmap(m); err != nil {
		t.Errorf("unix.Munmap = %v, want nil", err)
	}
	checkContent(t, p, want, bs)

	// Read it through a read-only mapping too.
	f, err = os.Open(p)
	if err != nil {
		t.Fatalf("os.Open = %v, want nil", err)
	}
	m, err = unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	f.Close()
	if err != nil {
		t.Fatalf("unix.Mmap(PROT_READ) = %v, want nil", err)
	}
	if d := diffBytes(m, want, bs); d != "" {
		t.Errorf("read-only mapping = %s", d)
	}
	unix.Munmap(m)

	v.remount()
	checkContent(t, p, want, bs)
	checkBacking(t, v, "mmap", int64(size))
}

// TestHardLinks checks that two names of one file share its content and
// that the file survives the removal of either name.
func TestHardLinks(t *testing.T) {
	v := newVolume(t)
	bs := v.blockSize
	a, b := v.path("a"), v.path("b")
	want := pattern("link", 2*bs+9)
	writeFile(t, a, want)
	if err := os.Link(a, b); err != nil {
		t.Fatalf("os.Link = %v, want nil", err)
	}
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		t.Fatalf("unix.Stat(a) = %v", err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		t.Fatalf("unix.Stat(b) = %v", err)
	}
	if sa.Ino != sb.Ino || sa.Nlink != 2 || sb.Nlink != 2 {
		t.Errorf("stat a, b = ino %d nlink %d, ino %d nlink %d, want one inode with nlink 2", sa.Ino, sa.Nlink, sb.Ino, sb.Nlink)
	}
	if fa, err1 := os.Stat(v.backing("a")); err1 == nil {
		if fb, err2 := os.Stat(v.backing("b")); err2 != nil || !os.SameFile(fa, fb) {
			t.Errorf("backing files a and b are not one inode (%v)", err2)
		}
	}

	// Write through b, read through a.
	f, err := os.OpenFile(b, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("os.OpenFile(b) = %v, want nil", err)
	}
	patch := pattern("patch", 10)
	if _, err := f.WriteAt(patch, int64(bs-2)); err != nil {
		t.Fatalf("WriteAt = %v, want nil", err)
	}
	f.Close()
	copy(want[bs-2:], patch)
	checkContent(t, a, want, bs)
	checkContent(t, b, want, bs)

	v.remount()
	checkContent(t, a, want, bs)
	checkContent(t, b, want, bs)

	if err := os.Remove(a); err != nil {
		t.Fatalf("os.Remove(a) = %v, want nil", err)
	}
	checkContent(t, b, want, bs)
	if err := unix.Stat(b, &sb); err != nil || sb.Nlink != 1 {
		t.Errorf("unix.Stat(b) = nlink %d, %v, want 1, nil", sb.Nlink, err)
	}
	v.remount()
	checkContent(t, b, want, bs)
	checkBacking(t, v, "b", int64(len(want)))
}

// TestRename renames a file over an existing one and into another
// directory; a descriptor open on the replaced file keeps reading it.
func TestRename(t *testing.T) {
	v := newVolume(t)
	bs := v.blockSize
	src, dst := v.path("src"), v.path("dst")
	srcData := pattern("src", 2*bs+1)
	dstData := pattern("dst", 100)
	writeFile(t, src, srcData)
	writeFile(t, dst, dstData)
	old, err := os.Open(dst)
	if err != nil {
		t.Fatalf("os.Open(dst) = %v, want nil", err)
	}
	defer old.Close()
	if err := os.Rename(src, dst); err != nil {
		t.Fatalf("os.Rename(src, dst) = %v, want nil", err)
	}
	if _, err := os.Stat(src); errnoOf(err) != syscall.ENOENT {
		t.Errorf("os.Stat(src) after rename = %v, want ENOENT", err)
	}
	checkContent(t, dst, srcData, bs)
	buf := make([]byte, len(dstData))
	if n, err := preadFull(old, buf, 0); err != nil || n != len(dstData) || !bytes.Equal(buf, dstData) {
		t.Errorf("ReadAt on a descriptor of the replaced file = %d, %v, content equal %v, want %d, nil, true", n, err, bytes.Equal(buf, dstData), len(dstData))
	}
	old.Close()

	if err := os.Mkdir(v.path("d"), 0o755); err != nil {
		t.Fatalf("os.Mkdir = %v, want nil", err)
	}
	moved := v.path("d/moved")
	if err := os.Rename(dst, moved); err != nil {
		t.Fatalf("os.Rename(dst, d/moved) = %v, want nil", err)
	}
	// A renamed directory keeps its files readable.
	if err := os.Rename(v.path("d"), v.path("e")); err != nil {
		t.Fatalf("os.Rename(d, e) = %v, want nil", err)
	}
	moved = v.path("e/moved")
	checkContent(t, moved, srcData, bs)
	v.remount()
	checkContent(t, moved, srcData, bs)
	checkBacking(t, v, "e/moved", int64(len(srcData)))
	for _, gone := range []string{"src", "dst", "d"} {
		if _, err := os.Lstat(v.backing(gone)); errnoOf(err) != syscall.ENOENT {
			t.Errorf("os.Lstat(backing %s) = %v, want ENOENT", gone, err)
		}
	}
}

// TestSymlinks checks symbolic links: their targets are kept verbatim,
// following them reaches the file, and they survive a remount; with
// --plaintext-names the backing symlink holds the target in clear.
func TestSymlinks(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plaintext-names=%v", plain), func(t *testing.T) { testSymlinks(t, plain) })
	}
}

// namesOption returns the init option of a volume with names in clear
// (plain) or encrypted (the default).
func namesOption(plain bool) volumeOption {
	if plain {
		return withInitArgs("--plaintext-names")
	}
	return withInitArgs()
}

func testSymlinks(t *testing.T, plain bool) {
	v := newVolume(t, namesOption(plain))
	bs := v.blockSize
	want := pattern("target", bs+3)
	writeFile(t, v.path("target.txt"), want)
	if err := os.Mkdir(v.path("sub"), 0o755); err != nil {
		t.Fatalf("os.Mkdir = %v", err)
	}
	links := map[string]string{
		"rel":          "target.txt",
		"sub/up":       "../target.txt",
		"abs-dangling": "/nonexistent/kmsfs/absolute/path",
		"long":         strings.Repeat("x/", 500) + "end",
	}
	for name, target := range links {
		if err := os.Symlink(target, v.path(name)); err != nil {
			t.Fatalf("os.Symlink(%q, %q) = %v, want nil", target, name, err)
		}
	}
	check := func() {
		t.Helper()
		for name, target := range links {
			if got, err := os.Readlink(v.path(name)); err != nil || got != target {
				t.Errorf("os.Readlink(%q) = %q, %v, want %q", name, got, err, target)
			}
			if fi, err := os.Lstat(v.path(name)); err != nil || fi.Mode()&os.ModeSymlink == 0 || fi.Size() != int64(len(target)) {
				t.Errorf("os.Lstat(%q) = %v, %v, want a symlink of size %d", name, fi, err, len(target))
			}
			// Stored in clear in the cipher dir (docs/FORMAT.md).
			if got, err := os.Readlink(v.backing(name)); plain && (err != nil || got != target) {
				t.Errorf("os.Readlink(backing %q) = %q, %v, want %q", name, got, err, target)
			}
		}
		checkContent(t, v.path("rel"), want, bs)
		checkContent(t, v.path("sub/up"), want, bs)
		if _, err := os.Stat(v.path("abs-dangling")); errnoOf(err) != syscall.ENOENT {
			t.Errorf("os.Stat(dangling link) = %v, want ENOENT", err)
		}
	}
	check()
	v.remount()
	check()
	if err := os.Remove(v.path("rel")); err != nil {
		t.Errorf("os.Remove(link) = %v, want nil", err)
	}
	checkContent(t, v.path("target.txt"), want, bs)
}

// TestXattrs checks user.* extended attributes on files and directories;
// with --plaintext-names the backing files carry them in clear.
func TestXattrs(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plaintext-names=%v", plain), func(t *testing.T) { testXattrs(t, plain) })
	}
}

func testXattrs(t *testing.T, plain bool) {
	v := newVolume(t, namesOption(plain))
	writeFile(t, v.path("f"), pattern("xattr", 10))
	if err := os.Mkdir(v.path("d"), 0o755); err != nil {
		t.Fatalf("os.Mkdir = %v", err)
	}
	attrs := map[string][]byte{
		"user.kmsfs.a":     []byte("value-a"),
		"user.kmsfs.empty": {},
		"user.kmsfs.bin":   {0, 1, 2, 255, 0},
		"user.kmsfs.big":   pattern("xattr-big", 3000),
	}
	for _, name := range []string{"f", "d"} {
		p := v.path(name)
		for k, val := range attrs {
			if err := unix.Setxattr(p, k, val, 0); err != nil {
				t.Fatalf("unix.Setxattr(%q, %q) = %v, want nil", name, k, err)
			}
		}
		if err := unix.Setxattr(p, "user.kmsfs.a", []byte("x"), unix.XATTR_CREATE); errnoOf(err) != syscall.EEXIST {
			t.Errorf("unix.Setxattr(XATTR_CREATE) of an existing attribute = %v, want EEXIST", err)
		}
		if err := unix.Setxattr(p, "user.kmsfs.missing", []byte("x"), unix.XATTR_REPLACE); errnoOf(err) != syscall.ENODATA {
			t.Errorf("unix.Setxattr(XATTR_REPLACE) of a missing attribute = %v, want ENODATA", err)
		}
	}
	check := func() {
		t.Helper()
		for _, name := range []string{"f", "d"} {
			paths := []string{v.path(name)}
			if plain {
				paths = append(paths, v.backing(name))
			}
			for _, p := range paths {
				for k, val := range attrs {
					buf := make([]byte, 8192)
					n, err := unix.Getxattr(p, k, buf)
					if err != nil || !bytes.Equal(buf[:n], val) {
						t.Errorf("unix.Getxattr(%q, %q) = %q, %v, want %q", p, k, buf[:max(n, 0)], err, val)
					}
				}
				list := listXattrs(t, p)
				for k := range attrs {
					if !slices.Contains(list, k) {
						t.Errorf("unix.Listxattr(%q) = %q, want it to contain %q", p, list, k)
					}
				}
			}
		}
	}
	check()
	v.remount()
	check()
	p := v.path("f")
	if err := unix.Removexattr(p, "user.kmsfs.a"); err != nil {
		t.Fatalf("unix.Removexattr = %v, want nil", err)
	}
	if _, err := unix.Getxattr(p, "user.kmsfs.a", make([]byte, 64)); errnoOf(err) != syscall.ENODATA {
		t.Errorf("unix.Getxattr of a removed attribute = %v, want ENODATA", err)
	}
	if list := listXattrs(t, p); slices.Contains(list, "user.kmsfs.a") {
		t.Errorf("unix.Listxattr = %q, want no user.kmsfs.a", list)
	}
}

func listXattrs(t *testing.T, p string) []string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		t.Errorf("unix.Listxattr(%q) = %v, want nil", p, err)
		return nil
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names
}

// TestLocks checks flock and fcntl locks, also as seen from another
// process.
func TestLocks(t *testing.T) {
	v := newVolume(t)
	p := v.path("lock")
	writeFile(t, p, pattern("lock", 100))
	open := func() *os.File {
		t.Helper()
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatalf("os.OpenFile = %v, want nil", err)
		}
		return f
	}

	t.Run("flock", func(t *testing.T) {
		f1, f2 := open(), open()
		defer f1.Close()
		defer f2.Close()
		if err := unix.Flock(int(f1.Fd()), unix.LOCK_EX); err != nil {
			t.Fatalf("flock(f1, LOCK_EX) = %v, want nil", err)
		}
		if err := unix.Flock(int(f2.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != unix.EWOULDBLOCK {
			t.Errorf("flock(f2, LOCK_EX|LOCK_NB) while f1 holds it = %v, want EWOULDBLOCK", err)
		}
		if got := runHelperProcess(t, "flock", p); got != "EAGAIN" && got != "EWOULDBLOCK" {
			t.Errorf("flock(LOCK_EX|LOCK_NB) in another process = %s, want EWOULDBLOCK", got)
		}
		if err := unix.Flock(int(f1.Fd()), unix.LOCK_UN); err != nil {
			t.Fatalf("flock(f1, LOCK_UN) = %v, want nil", err)
		}
		if err := unix.Flock(int(f2.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Errorf("flock(f2, LOCK_EX|LOCK_NB) after unlock = %v, want nil", err)
		}
		unix.Flock(int(f2.Fd()), unix.LOCK_UN)
		if got := runHelperProcess(t, "flock", p); got != "ok" {
			t.Errorf("flock(LOCK_EX|LOCK_NB) in another process after unlock = %s, want ok", got)
		}
	})

	t.Run("fcntl", func(t *testing.T) {
		f1, f2 := open(), open()
		defer f1.Close()
		defer f2.Close()
		wr := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 0}
		if err := unix.FcntlFlock(f1.Fd(), unix.F_SETLK, &wr); err != nil {
			t.Fatalf("fcntl(F_SETLK, F_WRLCK) = %v, want nil", err)
		}
		if got := runHelperProcess(t, "fcntl-getlk", p); got != "write-locked" {
			t.Errorf("fcntl(F_GETLK) in another process = %s, want write-locked", got)
		}
		if got := runHelperProcess(t, "fcntl-setlk", p); got != "EAGAIN" && got != "EACCES" {
			t.Errorf("fcntl(F_SETLK, F_WRLCK) in another process = %s, want EAGAIN", got)
		}
		// An open file description lock conflicts with it too.
		rd := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 0}
		if err := unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &rd); err != unix.EAGAIN {
			t.Errorf("fcntl(F_OFD_SETLK, F_RDLCK) against a write lock = %v, want EAGAIN", err)
		}
		un := unix.Flock_t{Type: unix.F_UNLCK, Start: 0, Len: 0}
		if err := unix.FcntlFlock(f1.Fd(), unix.F_SETLK, &un); err != nil {
			t.Fatalf("fcntl(F_SETLK, F_UNLCK) = %v, want nil", err)
		}
		if got := runHelperProcess(t, "fcntl-getlk", p); got != "unlocked" {
			t.Errorf("fcntl(F_GETLK) in another process after unlock = %s, want unlocked", got)
		}
		if got := runHelperProcess(t, "fcntl-setlk", p); got != "ok" {
			t.Errorf("fcntl(F_SETLK) in another process after unlock = %s, want ok", got)
		}
		// A byte range lock.
		rng := unix.Flock_t{Type: unix.F_WRLCK, Start: 10, Len: 20}
		if err := unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &rng); err != nil {
			t.Fatalf("fcntl(F_OFD_SETLK, [10,30)) = %v, want nil", err)
		}
		probe := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 0}
		if err := unix.FcntlFlock(f1.Fd(), unix.F_OFD_GETLK, &probe); err != nil || probe.Type != unix.F_WRLCK || probe.Start != 10 || probe.Len != 20 {
			t.Errorf("fcntl(F_OFD_GETLK) = type %d [%d,+%d), %v, want F_WRLCK [10,+20)", probe.Type, probe.Start, probe.Len, err)
		}
	})
}

// TestStatfs checks that statfs on the mount gives sane numbers close to
// those of the backing file system.
func TestStatfs(t *testing.T) {
	v := newVolume(t)
	var st, back unix.Statfs_t
	if err := unix.Statfs(v.mnt, &st); err != nil {
		t.Fatalf("unix.Statfs(mount) = %v, want nil", err)
	}
	if err := unix.Statfs(v.cipherDir, &back); err != nil {
		t.Fatalf("unix.Statfs(cipher dir) = %v, want nil", err)
	}
	const fuseSuperMagic = 0x65735546
	if st.Type != fuseSuperMagic {
		t.Errorf("statfs type = %#x, want %#x (FUSE)", st.Type, fuseSuperMagic)
	}
	if st.Bsize <= 0 || st.Blocks == 0 || st.Bfree > st.Blocks || st.Bavail > st.Blocks || st.Namelen <= 0 {
		t.Errorf("statfs = bsize %d blocks %d bfree %d bavail %d namelen %d, want bsize > 0, blocks > 0, bfree and bavail <= blocks, namelen > 0",
			st.Bsize, st.Blocks, st.Bfree, st.Bavail, st.Namelen)
	}
	frsize := func(s unix.Statfs_t) float64 {
		if s.Frsize > 0 {
			return float64(s.Frsize)
		}
		return float64(s.Bsize)
	}
	total := float64(st.Blocks) * frsize(st)
	backTotal := float64(back.Blocks) * frsize(back)
	if total > backTotal*1.01 || total < backTotal/2 {
		t.Errorf("statfs total size = %.0f bytes, want about the backing file system's %.0f", total, backTotal)
	}
}

// TestAttributes checks modes (with umask 0, so kmsfs must not apply a
// umask of its own), ownership and timestamps, through the mount and on
// the backing entries, before and after a remount.
func TestAttributes(t *testing.T) {
	v := newVolume(t)
	oldMask := syscall.Umask(0)
	defer syscall.Umask(oldMask)

	if err := os.Mkdir(v.path("d"), 0o777); err != nil {
		t.Fatalf("os.Mkdir = %v", err)
	}
	f, err := os.OpenFile(v.path("f"), os.O_CREATE|os.O_WRONLY, 0o666)
	if err != nil {
		t.Fatalf("os.OpenFile(O_CREATE, 0666) = %v", err)
	}
	want := pattern("attr", 5000)
	f.Write(want)
	f.Close()
	if err := os.Symlink("f", v.path("l")); err != nil {
		t.Fatalf("os.Symlink = %v", err)
	}
	type attrs struct {
		mode     uint32
		uid, gid uint32
		mtime    int64 // nanoseconds; 0: not checked
		atime    int64
	}
	wantAttrs := map[string]*attrs{
		"d": {mode: unix.S_IFDIR | 0o777},
		"f": {mode: unix.S_IFREG | 0o666},
	}
	check := func(when string) {
		t.Helper()
		for name, w := range wantAttrs {
			for _, p := range []string{v.path(name), v.backing(name)} {
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					t.Errorf("%s: unix.Lstat(%q) = %v", when, p, err)
					continue
				}
				if st.Mode != w.mode || st.Uid != w.uid || st.Gid != w.gid {
					t.Errorf("%s: unix.Lstat(%q) = mode %o uid %d gid %d, want mode %o uid %d gid %d", when, p, st.Mode, st.Uid, st.Gid, w.mode, w.uid, w.gid)
				}
				if w.mtime != 0 && st.Mtim.Nano() != w.mtime {
					t.Errorf("%s: unix.Lstat(%q).Mtim = %d, want %d", when, p, st.Mtim.Nano(), w.mtime)
				}
				if w.atime != 0 && st.Atim.Nano() != w.atime {
					t.Errorf("%s: unix.Lstat(%q).Atim = %d, want %d", when, p, st.Atim.Nano(), w.atime)
				}
			}
		}
	}
	check("after create with umask 0")

	if err := os.Chmod(v.path("f"), 0o640); err != nil {
		t.Fatalf("os.Chmod = %v", err)
	}
	wantAttrs["f"].mode = unix.S_IFREG | 0o640
	if err := os.Chmod(v.path("d"), 0o750|os.ModeSticky); err != nil {
		t.Fatalf("os.Chmod = %v", err)
	}
	wantAttrs["d"].mode = unix.S_IFDIR | 0o750 | unix.S_ISVTX
	if err := os.Chown(v.path("f"), 1234, 5678); err != nil {
		t.Fatalf("os.Chown = %v", err)
	}
	wantAttrs["f"].uid, wantAttrs["f"].gid = 1234, 5678
	if err := os.Lchown(v.path("l"), 4321, 8765); err != nil {
		t.Fatalf("os.Lchown = %v", err)
	}
	var lst unix.Stat_t
	if err := unix.Lstat(v.path("l"), &lst); err != nil || lst.Uid != 4321 || lst.Gid != 8765 {
		t.Errorf("unix.Lstat(symlink) = uid %d gid %d, %v, want 4321 8765", lst.Uid, lst.Gid, err)
	}
	atime := unix.NsecToTimespec(1234567890*1e9 + 123456789)
	mtime := unix.NsecToTimespec(1334567890*1e9 + 987654321)
	if err := unix.UtimesNano(v.path("f"), []unix.Timespec{atime, mtime}); err != nil {
		t.Fatalf("unix.UtimesNano = %v", err)
	}
	wantAttrs["f"].atime, wantAttrs["f"].mtime = atime.Nano(), mtime.Nano()
	check("after chmod, chown, utimens")
	v.remount()
	check("after remount")
	checkContent(t, v.path("f"), want, v.blockSize)

	// Root reads and partially overwrites a file of mode 0000.
	if err := os.Chmod(v.path("f"), 0); err != nil {
		t.Fatalf("os.Chmod(0) = %v", err)
	}
	f, err = os.OpenFile(v.path("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("os.OpenFile(mode 0000 file, O_WRONLY) as root = %v, want nil", err)
	}
	if _, err := f.WriteAt([]byte("patched"), 4090); err != nil {
		t.Errorf("WriteAt(mode 0000 file) = %v, want nil", err)
	}
	f.Close()
	copy(want[4090:], "patched")
	checkContent(t, v.path("f"), want, v.blockSize)
}

// TestConfHidden checks that kmsfs.conf cannot be seen, opened, created,
// replaced or removed through the mount, while a file of that name in a
// subdirectory is an ordinary file. This matters where names are in
// clear (--plaintext-names, and version 1); with encrypted names no name
// seen through the mount is stored as kmsfs.conf (tests/names_test.go).
func TestConfHidden(t *testing.T) {
	v := newVolume(t, withInitArgs("--plaintext-names"))
	confPath := v.backing(confName)
	sum := func() [32]byte {
		b, err := os.ReadFile(confPath)
		if err != nil {
			t.Fatalf("os.ReadFile(%q) = %v", confPath, err)
		}
		return sha256.Sum256(b)
	}
	before := sum()
	writeFile(t, v.path("other"), []byte("x"))
	p := v.path(confName)

	entries, err := os.ReadDir(v.mnt)
	if err != nil {
		t.Fatalf("os.ReadDir(mount) = %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"other"}) {
		t.Errorf("os.ReadDir(mount) = %q, want [other]", names)
	}
	if _, err := os.Stat(p); errnoOf(err) != syscall.ENOENT {
		t.Errorf("os.Stat(%s) = %v, want ENOENT", confName, err)
	}
	if _, err := os.Lstat(p); errnoOf(err) != syscall.ENOENT {
		t.Errorf("os.Lstat(%s) = %v, want ENOENT", confName, err)
	}
	if f, err := os.Open(p); errnoOf(err) != syscall.ENOENT {
		if err == nil {
			f.Close()
		}
		t.Errorf("os.Open(%s) = %v, want ENOENT", confName, err)
	}
	attempts := map[string]func() error{
		"create": func() error {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err == nil {
				f.Write([]byte("{}"))
				f.Close()
			}
			return err
		},
		"create excl": func() error {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err == nil {
				f.Close()
			}
			return err
		},
		"remove":      func() error { return os.Remove(p) },
		"rename onto": func() error { return os.Rename(v.path("other"), p) },
		"rename from": func() error { return os.Rename(p, v.path("stolen")) },
		"mkdir":       func() error { return os.Mkdir(p, 0o755) },
		"symlink":     func() error { return os.Symlink("other", p) },
		"link":        func() error { return os.Link(v.path("other"), p) },
		"mknod":       func() error { return unix.Mknod(p, unix.S_IFREG|0o644, 0) },
		"truncate":    func() error { return os.Truncate(p, 0) },
		"chmod":       func() error { return os.Chmod(p, 0o777) },
		"setxattr":    func() error { return unix.Setxattr(p, "user.x", []byte("y"), 0) },
		"link from":   func() error { return os.Link(p, v.path("stolen2")) },
	}
	keys := slices.Sorted(maps.Keys(attempts))
	for _, k := range keys {
		if err := attempts[k](); err == nil {
			t.Errorf("%s %s through the mount = nil, want an error", k, confName)
		}
	}
	if after := sum(); after != before {
		t.Errorf("%s changed through the mount", confName)
	}
	if _, err := os.Stat(v.path("other")); err != nil {
		t.Errorf("os.Stat(other) = %v, want nil (a refused rename must not lose the source)", err)
	}
	for _, stolen := range []string{"stolen", "stolen2"} {
		if _, err := os.Lstat(v.path(stolen)); errnoOf(err) != syscall.ENOENT {
			t.Errorf("os.Lstat(%s) = %v, want ENOENT", stolen, err)
		}
	}

	// In a subdirectory the name is an ordinary file.
	if err := os.Mkdir(v.path("sub"), 0o755); err != nil {
		t.Fatalf("os.Mkdir = %v", err)
	}
	sub := v.path("sub/" + confName)
	want := pattern("sub-conf", 50)
	writeFile(t, sub, want)
	checkContent(t, sub, want, v.blockSize)
	if entries, err := os.ReadDir(v.path("sub")); err != nil || len(entries) != 1 || entries[0].Name() != confName {
		t.Errorf("os.ReadDir(sub) = %v, %v, want [%s]", entries, err, confName)
	}

	v.remount()
	if _, err := os.Stat(p); errnoOf(err) != syscall.ENOENT {
		t.Errorf("os.Stat(%s) after remount = %v, want ENOENT", confName, err)
	}
	checkContent(t, sub, want, v.blockSize)
	if err := os.Remove(sub); err != nil {
		t.Errorf("os.Remove(sub/%s) = %v, want nil", confName, err)
	}
	if after := sum(); after != before {
		t.Errorf("%s changed", confName)
	}
}

// TestReadOnlyMount checks "kmsfs mount --ro": reading works, every
// change fails with EROFS.
func TestReadOnlyMount(t *testing.T) {
	v := newVolume(t)
	want := pattern("ro", 5000)
	writeFile(t, v.path("f"), want)
	if err := os.Mkdir(v.path("d"), 0o755); err != nil {
		t.Fatalf("os.Mkdir = %v", err)
	}
	v.unmount()
	v.mountArgs = append(v.mountArgs, "--ro")
	v.mount()
	checkContent(t, v.path("f"), want, v.blockSize)
	if opts := mountOptions(v.mnt); !slices.Contains(strings.Split(opts, ","), "ro") {
		t.Errorf("mount options of %s = %q, want ro", v.mnt, opts)
	}
	changes := map[string]func() error{
		"open O_WRONLY": func() error {
			f, err := os.OpenFile(v.path("f"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		"create":   func() error { return os.WriteFile(v.path("new"), nil, 0o644) },
		"remove":   func() error { return os.Remove(v.path("f")) },
		"mkdir":    func() error { return os.Mkdir(v.path("d2"), 0o755) },
		"rmdir":    func() error { return os.Remove(v.path("d")) },
		"rename":   func() error { return os.Rename(v.path("f"), v.path("g")) },
		"chmod":    func() error { return os.Chmod(v.path("f"), 0o600) },
		"truncate": func() error { return os.Truncate(v.path("f"), 1) },
		"symlink":  func() error { return os.Symlink("f", v.path("l")) },
		"setxattr": func() error { return unix.Setxattr(v.path("f"), "user.x", []byte("y"), 0) },
	}
	keys := make([]string, 0, len(changes))
	for k := range changes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := changes[k](); errnoOf(err) != syscall.EROFS {
			t.Errorf("%s on a --ro mount = %v, want EROFS", k, err)
		}
	}
	checkContent(t, v.path("f"), want, v.blockSize)
	if _, err := os.Stat(filepath.Join(v.cipherDir, "new")); err == nil {
		t.Errorf("a --ro mount created a backing file")
	}
}

// mountOptions returns the options field of dir's line in /proc/mounts.
func mountOptions(dir string) string {
	b, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && unescapeMount(f[1]) == dir {
			return f[3]
		}
	}
	return ""
}

// TestReadahead checks that a mount sets the kernel readahead to four
// largest requests (4 MiB) instead of its default 128 KiB, and that a
// large file still reads back whole through those requests.
func TestReadahead(t *testing.T) {
	v := newVolume(t)
	var st syscall.Stat_t
	if err := syscall.Stat(v.mnt, &st); err != nil {
		t.Fatalf("stat %s = %v", v.mnt, err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("os.ReadFile(%q) = %v", p, err)
	}
	// Only root may set it, and only where /sys is writable; otherwise the
	// mount keeps the default and its log says why.
	switch s := strings.TrimSpace(string(got)); {
	case s == "4096":
	case os.Geteuid() != 0 || sysReadOnly():
		if !strings.Contains(v.log(), "setting readahead") && os.Geteuid() == 0 {
			t.Errorf("%s = %s and the daemon log does not say why:\n%s", p, s, v.log())
		}
	default:
		t.Errorf("%s = %s, want 4096", p, s)
	}
	data := pattern("readahead", 5<<20+123)
	writeFile(t, v.path("big"), data)
	v.remount() // the next read goes through the daemon
	checkContent(t, v.path("big"), data, v.blockSize)
}

// sysReadOnly reports whether /sys is mounted read-only (as in some
// containers).
func sysReadOnly() bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[1] == "/sys" {
			return slices.Contains(strings.Split(f[3], ","), "ro")
		}
	}
	return false
}

// TestKeepCache checks that a file opened again, unchanged, keeps its
// plaintext in the kernel's page cache (no round trip to the daemon for
// what was read before), and that a change made behind the mount, in the
// backing directory, is what the next open reads: not the cached pages,
// and not through the keys of the file it replaced, even while that one
// is still open.
func TestKeepCache(t *testing.T) {
	v := newVolume(t)
	before, after := pattern("keep-before", 64<<10), pattern("keep-after", 64<<10)
	writeFile(t, v.path("f"), before)
	writeFile(t, v.path("g"), after)
	// The open after a write drops the cache; this read fills it again.
	checkContent(t, v.path("f"), before, v.blockSize)
	if got, want := residentPagesOf(t, v.path("f")), len(before)/os.Getpagesize(); got != want {
		t.Errorf("after reopening an unchanged file, %d of its %d pages are in the page cache, want all", got, want)
	}
	// Behind the mount: g's ciphertext overwrites f's in place (same inode,
	// same size), as a sync tool or a second mount would, while f is still
	// open on the mount (the kernel releases a closed file later, too).
	held, err := os.Open(v.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cg, err := os.ReadFile(v.backing("g"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.backing("f"), cg, 0o600); err != nil {
		t.Fatal(err)
	}
	checkContent(t, v.path("f"), after, v.blockSize)
}
