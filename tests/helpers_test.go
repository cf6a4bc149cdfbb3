package tests

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
	"golang.org/x/sys/unix"
)

// marker starts every line of the plaintext the tests write, so that a
// backing file holding plaintext is easy to find.
const marker = "kmsfs-plaintext-marker"

// pattern returns n bytes of recognisable plaintext: lines that carry the
// marker, a tag and their own offset, so that data read from the wrong
// place or the wrong file does not compare equal.
func pattern(tag string, n int) []byte {
	var b bytes.Buffer
	b.Grow(n + 64)
	for b.Len() < n {
		fmt.Fprintf(&b, "%s %s @%010d\n", marker, tag, b.Len())
	}
	return b.Bytes()[:n]
}

// cipherSizeV2 is the size of the backing file of a plaintext of size
// plain with block size bs in format versions 1 and 2 (docs/FORMAT.md,
// "Sizes"), for a file that has a header. A file of size 0 may also have
// no header (0 bytes). Version 3 lays files out differently: see
// volume.backingSizes.
func cipherSizeV2(plain int64, bs int) int64 {
	if plain == 0 {
		return headerSize
	}
	b := int64(bs)
	n := plain / b
	c := int64(headerSize) + n*(b+blockOverhead)
	if r := plain % b; r > 0 {
		c += r + blockOverhead
	}
	return c
}

// headerLen is the size of the header of v's regular files: 32 + 2*C in
// format version 3, headerSize (4096) in version 2.
func (v *volume) headerLen() int {
	if v.formatVersion >= 3 {
		return header.PreambleSize + 2*v.copySize
	}
	return headerSize
}

// layout3 returns the layout of the regular files of v, which must be a
// volume of format version 3 (docs/FORMAT.md, "Regular files, version 3").
func (v *volume) layout3(t testing.TB) blockcipher.Layout3 {
	t.Helper()
	if v.formatVersion < 3 {
		t.Fatalf("layout3 of a volume of format version %d", v.formatVersion)
	}
	l, err := blockcipher.NewLayout3(v.blockSize, v.headerLen())
	if err != nil {
		t.Fatalf("blockcipher.NewLayout3(%d, %d) = %v", v.blockSize, v.headerLen(), err)
	}
	return l
}

// backingSizes returns every size docs/FORMAT.md allows for the backing
// file of a regular file of plain bytes in v, smallest first. In version
// 2: no header (plain 0 only) or a header and the blocks. In version 3: no
// header or a header alone (plain 0); inline, when plain fits, or paged
// (a file that was paged stays paged when it shrinks).
func (v *volume) backingSizes(t testing.TB, plain int64) []int64 {
	t.Helper()
	if v.formatVersion < 3 {
		if plain == 0 {
			return []int64{0, headerSize}
		}
		return []int64{cipherSizeV2(plain, v.blockSize)}
	}
	l := v.layout3(t)
	switch {
	case plain == 0:
		return []int64{0, l.InlineSize(0)}
	case plain <= l.InlineMax():
		return []int64{l.InlineSize(plain), l.PagedSize(plain)}
	}
	return []int64{l.PagedSize(plain)}
}

// plainSizeOf returns the plaintext size docs/FORMAT.md gives a regular
// backing file of c bytes of v, and an error (wrapping
// blockcipher.ErrBadCipherSize) for a size no file has: a torn header, a
// torn last block in version 2; in version 3 also an inline file with no
// room for its plaintext, a file of exactly one page, a file ending in a
// metadata page.
func (v *volume) plainSizeOf(t testing.TB, c int64) (int64, error) {
	t.Helper()
	if v.formatVersion < 3 {
		return blockcipher.Layout{BlockSize: v.blockSize, DataOffset: headerSize}.PlainSize(c)
	}
	return v.layout3(t).PlainSize(c)
}

// blockOffset is the offset in a backing file of v of the stored bytes of
// block n: in version 2 its nonce, ciphertext and tag; in version 3, of a
// paged file, its ciphertext (its entry is elsewhere).
func (v *volume) blockOffset(t testing.TB, n int64) int64 {
	t.Helper()
	if v.formatVersion < 3 {
		return blockOffsetV2(n, v.blockSize)
	}
	return v.layout3(t).DataOff(uint64(n))
}

// blockOffsetV2 is the offset of block n in a backing file of format
// version 1 or 2.
func blockOffsetV2(n int64, bs int) int64 {
	return headerSize + n*int64(bs+blockOverhead)
}

// errnoOf returns the errno inside err, or 0.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// diffBytes describes how got differs from want, or returns "".
func diffBytes(got, want []byte, bs int) string {
	if bytes.Equal(got, want) {
		return ""
	}
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	end := min(i+24, n)
	return fmt.Sprintf("%d bytes, want %d; first difference at offset %d (block %d of %d bytes): got %q, want %q",
		len(got), len(want), i, i/bs, bs, got[i:min(end, len(got))], want[i:min(end, len(want))])
}

// writeFile writes data to path, failing the test on error.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("os.WriteFile(%q, %d bytes) = %v, want nil", path, len(data), err)
	}
}

// readFile reads path, failing the test on error.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("os.ReadFile(%q) = %v, want nil", path, err)
	}
	return b
}

// checkContent checks the size and content of a file seen through the
// mount.
func checkContent(t *testing.T, path string, want []byte, bs int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("os.Stat(%q) = %v, want nil", path, err)
		return
	}
	if fi.Size() != int64(len(want)) {
		t.Errorf("os.Stat(%q).Size() = %d, want %d", path, fi.Size(), len(want))
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("os.ReadFile(%q) = %v, want nil", path, err)
		return
	}
	if d := diffBytes(got, want, bs); d != "" {
		t.Errorf("os.ReadFile(%q) = %s", path, d)
	}
}

// checkBacking checks the backing file of name: it exists under the same
// name, its size is one docs/FORMAT.md allows for a plaintext of
// plainSize bytes in v's format version (volume.backingSizes), its
// preamble is that of the version, and it does not contain the plaintext
// marker.
func checkBacking(t *testing.T, v *volume, name string, plainSize int64) {
	t.Helper()
	p := v.backing(name)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("os.ReadFile(%q) = %v, want the backing file", p, err)
		return
	}
	want := v.backingSizes(t, plainSize)
	if got := int64(len(b)); !slices.Contains(want, got) {
		t.Errorf("size of backing file %s = %d, want one of %v (plaintext %d bytes, block size %d, format version %d)", p, got, want, plainSize, v.blockSize, v.formatVersion)
	}
	// The size alone says how much plaintext the file holds.
	if got, err := v.plainSizeOf(t, int64(len(b))); err != nil || got != plainSize {
		t.Errorf("plaintext size of a backing file of %d bytes (%s) = %d, %v; want %d", len(b), p, got, err, plainSize)
	}
	if i := bytes.Index(b, []byte(marker)); i >= 0 {
		t.Errorf("backing file %s contains the plaintext marker at offset %d", p, i)
	}
	if len(b) > 0 {
		if len(b) < v.headerLen() {
			t.Errorf("backing file %s is %d bytes: shorter than its %d-byte header", p, len(b), v.headerLen())
			return
		}
		checkPreamble(t, p, b[:header.PreambleSize], v.blockSize, v.copySize)
	}
}

// checkPreamble checks the first 32 bytes of a backing file: magic,
// version, block size bs and reserved bytes. copySize is 0 for a
// version-1 header (kmsfs.conf, and regular files of format versions 1
// and 2), or the copy size C of a version-3 header (docs/FORMAT.md,
// "Header (version 3)"), which is then at bytes 9..10 and followed by 5
// reserved bytes.
func checkPreamble(t *testing.T, path string, pre []byte, bs, copySize int) {
	t.Helper()
	if got, want := string(pre[:6]), "KMSFS\x00"; got != want {
		t.Errorf("magic of %s = %q, want %q", path, got, want)
	}
	version, reserved := 1, pre[9:16]
	if copySize != 0 {
		version, reserved = 3, pre[11:16]
		if got := int(binary.BigEndian.Uint16(pre[9:11])); got != copySize {
			t.Errorf("header copy size of %s = %d, want %d", path, got, copySize)
		}
	}
	if got := int(binary.BigEndian.Uint16(pre[6:8])); got != version {
		t.Errorf("version of %s = %d, want %d", path, got, version)
	}
	if got, want := 1<<pre[8], bs; got != want {
		t.Errorf("block size of %s = %d, want %d", path, got, want)
	}
	if !bytes.Equal(reserved, make([]byte, len(reserved))) {
		t.Errorf("reserved bytes of %s = %x, want zeros", path, reserved)
	}
}

// preadFull reads len(buf) bytes at off, returning how many it read and
// the first error (io.EOF at end of file).
func preadFull(f *os.File, buf []byte, off int64) (int, error) {
	n, err := f.ReadAt(buf, off)
	if err == io.EOF && n == len(buf) {
		err = nil
	}
	return n, err
}

// The test binary re-executes itself as a small helper process (for
// example to probe a POSIX lock from another process). The mode is in
// this environment variable and its arguments in os.Args[1:].
const helperEnv = "KMSFS_TEST_HELPER"

// runHelper runs a helper process mode and returns its exit code. It
// prints one word: "ok", an errno name, or a lock type.
func runHelper(mode string) int {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "helper: missing path")
		return 2
	}
	path := os.Args[1]
	fd, err := unix.Open(path, unix.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: open %s: %v\n", path, err)
		return 1
	}
	defer unix.Close(fd)
	switch mode {
	case "fcntl-getlk":
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &lk); err != nil {
			fmt.Println(errName(err))
			return 0
		}
		switch lk.Type {
		case unix.F_UNLCK:
			fmt.Println("unlocked")
		case unix.F_RDLCK:
			fmt.Println("read-locked")
		case unix.F_WRLCK:
			fmt.Println("write-locked")
		default:
			fmt.Printf("type-%d\n", lk.Type)
		}
	case "fcntl-setlk":
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk); err != nil {
			fmt.Println(errName(err))
			return 0
		}
		fmt.Println("ok")
	case "flock":
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			fmt.Println(errName(err))
			return 0
		}
		fmt.Println("ok")
	default:
		fmt.Fprintf(os.Stderr, "helper: unknown mode %q\n", mode)
		return 2
	}
	return 0
}

// errName returns the symbolic name of an errno ("EAGAIN").
func errName(err error) string {
	if e := errnoOf(err); e != 0 {
		return unix.ErrnoName(e)
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

// runHelperProcess runs this test binary as a helper process and returns
// the word it printed.
func runHelperProcess(t *testing.T, mode, path string) string {
	t.Helper()
	env := append(os.Environ(), helperEnv+"="+mode)
	r := runCommand(env, "/", os.Args[0], path)
	if r.code != 0 || r.err != nil {
		t.Fatalf("helper %v", r)
	}
	return strings.TrimSpace(r.stdout)
}
