package tests

// Format version 3 through a real mount (docs/FORMAT.md, "Regular files,
// version 3"): whole-file integrity against someone who holds the
// backing files (cuts and appends at block boundaries, zeroed blocks,
// entries and metadata pages, moved blocks and entries), and holes made
// on demand (fallocate, SEEK_HOLE/SEEK_DATA, large sparse files).

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/blockcipher"
	kmsvolume "github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
	"golang.org/x/sys/unix"
)

// v3XLayout reads the configuration of v, which must be a version-3
// volume, and returns the layout of its regular files.
func v3XLayout(t *testing.T, v *volume) blockcipher.Layout3 {
	t.Helper()
	cfg := v3XConfig(t, v)
	if cfg.Version != 3 {
		t.Fatalf("%s: version %d, want 3 (the default of kmsfs init)", confName, cfg.Version)
	}
	l, err := blockcipher.NewLayout3(cfg.BlockSize, 32+2*cfg.HeaderCopySize)
	if err != nil {
		t.Fatalf("layout of %s (block size %d, header copy size %d): %v", confName, cfg.BlockSize, cfg.HeaderCopySize, err)
	}
	return l
}

// v3XConfig opens v in the test process with its local key and returns
// its configuration.
func v3XConfig(t *testing.T, v *volume) v3XConf {
	t.Helper()
	res := keyring.NewResolver(keyring.NewRegistry(local.Register), keyring.Options{})
	kv, err := kmsvolume.Open(context.Background(), v.cipherDir, res, kmsvolume.OpenOptions{Trusted: []string{v.keyURI}})
	if err != nil {
		t.Fatalf("opening %s: %v", v.cipherDir, err)
	}
	defer kv.Close()
	return v3XConf{Version: kv.Config.Version, BlockSize: kv.Config.BlockSize, HeaderCopySize: kv.Config.HeaderCopySize}
}

// v3XConf is what the tests need of a volume's configuration.
type v3XConf struct{ Version, BlockSize, HeaderCopySize int }

// v3XRandom returns n random bytes from a seeded generator.
func v3XRandom(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// v3XBackingRead reads n bytes at off of the backing file p.
func v3XBackingRead(t *testing.T, p string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("reading %d bytes at %d of %s: %v", n, off, p, err)
	}
	return b
}

// v3XBackingWrite writes b at off of the backing file p.
func v3XBackingWrite(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("writing %d bytes at %d of %s: %v", len(b), off, p, err)
	}
}

// v3XBackingSize returns the size of the backing file p.
func v3XBackingSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// v3XTruncate sets the size of the backing file p.
func v3XTruncate(t *testing.T, p string, size int64) {
	t.Helper()
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
}

// v3XDiskUse returns the bytes of disk the file p uses (st_blocks*512).
func v3XDiskUse(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatalf("stat %s = %v", p, err)
	}
	return st.Blocks * 512
}

// v3XReadBlock reads block n (block size bs) of f, a file of size bytes
// opened through the mount, with one pread.
func v3XReadBlock(f *os.File, n uint64, bs int64, size int64) ([]byte, error) {
	off := int64(n) * bs
	buf := make([]byte, min(bs, size-off))
	got, err := preadFull(f, buf, off)
	return buf[:got], err
}

// v3XCheckBlocks checks blocks of the file name through the mount: each
// block in bad fails with EIO, each in good reads as want says.
func v3XCheckBlocks(t *testing.T, v *volume, name string, want []byte, size, bs int64, bad, good []uint64) {
	t.Helper()
	f, err := os.Open(v.path(name))
	if err != nil {
		// A file none of which can be read may fail to open.
		if len(good) > 0 || errnoOf(err) != syscall.EIO {
			t.Errorf("os.Open(%s) = %v, want nil", name, err)
		}
		return
	}
	defer f.Close()
	for _, n := range bad {
		if int64(n)*bs >= size {
			t.Errorf("%s: bad block %d is past the size %d (test bug)", name, n, size)
			continue
		}
		b, err := v3XReadBlock(f, n, bs, size)
		if errnoOf(err) != syscall.EIO {
			t.Errorf("%s: pread of block %d = %d bytes, %v, want EIO", name, n, len(b), err)
		}
	}
	for _, n := range good {
		b, err := v3XReadBlock(f, n, bs, size)
		off := int64(n) * bs
		exp := want[off:min(int64(len(want)), off+bs)]
		if err != nil {
			t.Errorf("%s: pread of block %d = %d bytes, %v, want its %d bytes", name, n, len(b), err, len(exp))
			continue
		}
		if d := diffBytes(b, exp, int(bs)); d != "" {
			t.Errorf("%s: pread of block %d = %s", name, n, d)
		}
	}
}

// v3XLogLines returns the lines of the daemon log of v that name the
// file name (its path through the mount, as the daemon logs it).
func v3XLogLines(v *volume, name string) []string {
	b, err := os.ReadFile(v.logFile)
	if err != nil {
		v.t.Errorf("reading the daemon log: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " "+name+":") {
			lines = append(lines, l)
		}
	}
	return lines
}

// v3XCheckLogged checks that the daemon log names the file name and, on
// one of those lines, each block in blocks.
func v3XCheckLogged(t *testing.T, v *volume, name string, blocks ...uint64) {
	t.Helper()
	lines := v3XLogLines(v, name)
	if len(lines) == 0 {
		t.Errorf("the daemon log names no %q; want a line naming the damaged file", name)
		return
	}
	for _, b := range blocks {
		re := regexp.MustCompile(fmt.Sprintf(`(?i)block\D{0,10}%d\b`, b))
		found := false
		for _, l := range lines {
			found = found || re.MatchString(l)
		}
		if !found {
			t.Errorf("daemon log lines naming %q = %q, want one naming block %d", name, lines, b)
		}
	}
}

// TestV3WholeFileIntegrity writes multi-group files through the mount,
// alters their backing files the ways someone holding the storage can
// (cuts and appends of whole blocks, zeroed blocks, entries and metadata
// pages, swapped blocks, moved entries), mounts again and checks that
// every alteration is detected: stat still reports a size, reading the
// file fails with EIO, the damaged blocks fail and the others read, and
// the daemon log names the file and the block. A file nobody touched
// still reads back.
func TestV3WholeFileIntegrity(t *testing.T) {
	v := newVolume(t)
	l := v3XLayout(t, v)
	B := int64(l.BlockSize)
	if g1 := uint64(l.G0); g1+2*blockcipher.GroupBlocks < 300 {
		t.Fatalf("G0 = %d: 300 blocks would span more than three groups; the cases below assume three", l.G0)
	}
	// With 300 blocks: group 0 is blocks 0..G0-1, group 1 G0..G0+127,
	// group 2 from G0+128 to 299 (partial).
	const nBlocks = 300
	size := int64(nBlocks) * B
	g1 := uint64(l.G0)
	g2 := g1 + blockcipher.GroupBlocks
	last := uint64(nBlocks - 1)

	type tcase struct {
		name   string
		inline bool
		// tamper alters the backing file p (of backing size c).
		tamper func(t *testing.T, p string, c int64)
		// bad blocks must fail with EIO; good blocks must read back.
		bad, good []uint64
		// logged are the blocks the daemon log must name (beside the file).
		logged []uint64
	}
	zero := func(t *testing.T, p string, off, n int64) { v3XBackingWrite(t, p, off, make([]byte, n)) }
	appendZeros := func(t *testing.T, p string, c, n int64) { v3XTruncate(t, p, c+n) }
	cases := []tcase{
		{name: "cut-one-block", tamper: func(t *testing.T, p string, c int64) { v3XTruncate(t, p, c-B) },
			bad: []uint64{last - 1}, good: []uint64{0, g1, last - 2}, logged: []uint64{last - 1}},
		{name: "cut-whole-group", tamper: func(t *testing.T, p string, c int64) { v3XTruncate(t, p, l.MetaOff(2)) },
			bad: []uint64{g2 - 1}, good: []uint64{0, g2 - 2}, logged: []uint64{g2 - 1}},
		// A cut that leaves the file ending with a metadata page: a size
		// no file has, every read fails.
		{name: "cut-to-metadata-page", tamper: func(t *testing.T, p string, c int64) { v3XTruncate(t, p, l.MetaOff(2)+blockcipher.PageSize) },
			bad: []uint64{0, g1, g2 - 1, g2}, logged: []uint64{g2}},
		// c = 4096 is no valid size: the file holds nothing readable.
		{name: "cut-to-header-page", tamper: func(t *testing.T, p string, c int64) { v3XTruncate(t, p, blockcipher.PageSize) }},
		{name: "cut-to-header-page-and-a-byte", tamper: func(t *testing.T, p string, c int64) { v3XTruncate(t, p, blockcipher.PageSize+1) },
			bad: []uint64{0}, logged: []uint64{0}},
		{name: "cut-to-one-block", tamper: func(t *testing.T, p string, c int64) { v3XTruncate(t, p, blockcipher.PageSize+B) },
			bad: []uint64{0}, logged: []uint64{0}},
		{name: "append-one-block", tamper: func(t *testing.T, p string, c int64) { appendZeros(t, p, c, B) },
			bad: []uint64{last, last + 1}, good: []uint64{0, last - 1}, logged: []uint64{last}},
		{name: "append-five-blocks", tamper: func(t *testing.T, p string, c int64) { appendZeros(t, p, c, 5*B) },
			bad: []uint64{last, last + 5}, good: []uint64{0, last - 1}, logged: []uint64{last}},
		// 40 blocks' worth of zeros fill group 2 and read as a metadata
		// page and blocks of a group 3.
		{name: "append-forty-blocks", tamper: func(t *testing.T, p string, c int64) { appendZeros(t, p, c, 40*B) },
			bad: []uint64{last, g2 + blockcipher.GroupBlocks}, good: []uint64{0, last - 1}, logged: []uint64{last}},
		{name: "zero-block", tamper: func(t *testing.T, p string, c int64) { zero(t, p, l.DataOff(g1+31), B) },
			bad: []uint64{g1 + 31}, good: []uint64{0, g1 + 30, g1 + 32, last}, logged: []uint64{g1 + 31}},
		{name: "zero-last-block", tamper: func(t *testing.T, p string, c int64) { zero(t, p, l.DataOff(last), B) },
			bad: []uint64{last}, good: []uint64{0, last - 1}, logged: []uint64{last}},
		{name: "zero-block-and-entry", tamper: func(t *testing.T, p string, c int64) {
			zero(t, p, l.DataOff(10), B)
			zero(t, p, l.EntryOff(10), blockcipher.EntrySize)
		}, bad: []uint64{10}, good: []uint64{9, 11, last}, logged: []uint64{10}},
		{name: "zero-block-and-entry-group-1", tamper: func(t *testing.T, p string, c int64) {
			zero(t, p, l.DataOff(g1+50), B)
			zero(t, p, l.EntryOff(g1+50), blockcipher.EntrySize)
		}, bad: []uint64{g1 + 50}, good: []uint64{g1 + 49, g1 + 51}, logged: []uint64{g1 + 50}},
		{name: "zero-metadata-page", tamper: func(t *testing.T, p string, c int64) { zero(t, p, l.MetaOff(1), blockcipher.PageSize) },
			bad: []uint64{g1, g1 + 64, g2 - 1}, good: []uint64{g1 - 1, g2, last}, logged: []uint64{g1}},
		{name: "zero-metadata-page-and-blocks", tamper: func(t *testing.T, p string, c int64) { zero(t, p, l.MetaOff(2), c-l.MetaOff(2)) },
			bad: []uint64{g2, last}, good: []uint64{0, g2 - 1}, logged: []uint64{g2}},
		{name: "zero-group-1", tamper: func(t *testing.T, p string, c int64) { zero(t, p, l.MetaOff(1), l.MetaOff(2)-l.MetaOff(1)) },
			bad: []uint64{g1, g2 - 1}, good: []uint64{g1 - 1, g2}, logged: []uint64{g1}},
		{name: "swap-blocks", tamper: func(t *testing.T, p string, c int64) {
			a, b := v3XBackingRead(t, p, l.DataOff(20), B), v3XBackingRead(t, p, l.DataOff(30), B)
			v3XBackingWrite(t, p, l.DataOff(20), b)
			v3XBackingWrite(t, p, l.DataOff(30), a)
		}, bad: []uint64{20, 30}, good: []uint64{19, 21, 29, 31}, logged: []uint64{20, 30}},
		{name: "swap-blocks-and-entries", tamper: func(t *testing.T, p string, c int64) {
			// Block g1+3 (group 1) and block g2+3 (group 2), each with its entry.
			x, y := g1+3, g2+3
			dx, dy := v3XBackingRead(t, p, l.DataOff(x), B), v3XBackingRead(t, p, l.DataOff(y), B)
			ex, ey := v3XBackingRead(t, p, l.EntryOff(x), blockcipher.EntrySize), v3XBackingRead(t, p, l.EntryOff(y), blockcipher.EntrySize)
			v3XBackingWrite(t, p, l.DataOff(x), dy)
			v3XBackingWrite(t, p, l.DataOff(y), dx)
			v3XBackingWrite(t, p, l.EntryOff(x), ey)
			v3XBackingWrite(t, p, l.EntryOff(y), ex)
		}, bad: []uint64{g1 + 3, g2 + 3}, good: []uint64{g1 + 2, g1 + 4, g2 + 2, g2 + 4}, logged: []uint64{g1 + 3, g2 + 3}},
		{name: "move-entry", tamper: func(t *testing.T, p string, c int64) {
			e := v3XBackingRead(t, p, l.EntryOff(40), blockcipher.EntrySize)
			v3XBackingWrite(t, p, l.EntryOff(41), e)
			zero(t, p, l.EntryOff(40), blockcipher.EntrySize)
		}, bad: []uint64{40, 41}, good: []uint64{39, 42}, logged: []uint64{40, 41}},
		{name: "copy-entry-across-groups", tamper: func(t *testing.T, p string, c int64) {
			e := v3XBackingRead(t, p, l.EntryOff(g1+7), blockcipher.EntrySize)
			v3XBackingWrite(t, p, l.EntryOff(g2+7), e)
		}, bad: []uint64{g2 + 7}, good: []uint64{g1 + 7, g2 + 6, g2 + 8}, logged: []uint64{g2 + 7}},
		{name: "inline-cut-by-a-byte", inline: true, tamper: func(t *testing.T, p string, c int64) { v3XTruncate(t, p, c-1) }},
		{name: "inline-lengthened", inline: true, tamper: func(t *testing.T, p string, c int64) { appendZeros(t, p, c, 1) }},
		// Sizes no file has: part of a header, a header and part of a nonce.
		{name: "inline-cut-into-header", inline: true, tamper: func(t *testing.T, p string, c int64) { v3XTruncate(t, p, 100) }},
		{name: "inline-cut-into-nonce", inline: true, tamper: func(t *testing.T, p string, c int64) {
			v3XTruncate(t, p, int64(l.HeaderLen)+10)
		}},
		{name: "paged-cut-into-header", tamper: func(t *testing.T, p string, c int64) { v3XTruncate(t, p, 100) }},
		{name: "inline-lengthened-to-a-page", inline: true, tamper: func(t *testing.T, p string, c int64) {
			v3XTruncate(t, p, blockcipher.PageSize-1)
		}},
	}
	const inlineSize = 300

	// The files, and two that nobody touches.
	data := map[string][]byte{}
	for i, tc := range cases {
		n := size
		if tc.inline {
			n = inlineSize
		}
		data[tc.name] = v3XRandom(uint64(i+1), int(n))
	}
	bystanders := map[string][]byte{"bystander": v3XRandom(1000, int(size)), "bystander-small": v3XRandom(1001, inlineSize)}
	for name, d := range bystanders {
		data[name] = d
	}
	for name, d := range data {
		writeFile(t, v.path(name), d)
	}
	backing := map[string]string{}
	for name := range data {
		backing[name] = v.backing(name)
	}
	v.unmount()

	stat := map[string]int64{} // the size stat must report after the damage
	for _, tc := range cases {
		p := backing[tc.name]
		c := v3XBackingSize(t, p)
		want := l.PagedSize(size)
		if tc.inline {
			want = l.InlineSize(inlineSize)
		}
		if c != want {
			t.Fatalf("backing file of %s: %d bytes, want %d (docs/FORMAT.md, version 3)", tc.name, c, want)
		}
		tc.tamper(t, p, c)
		c = v3XBackingSize(t, p)
		stat[tc.name], _ = l.PlainSize(c)
		t.Logf("%s: backing file now %d bytes (plaintext size %d)", tc.name, c, stat[tc.name])
	}

	v.mount()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := v.path(tc.name)
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("os.Stat(%s) = %v, want the size %d", tc.name, err, stat[tc.name])
			} else if fi.Size() != stat[tc.name] {
				t.Errorf("os.Stat(%s).Size() = %d, want %d", tc.name, fi.Size(), stat[tc.name])
			}
			if b, err := os.ReadFile(p); errnoOf(err) != syscall.EIO {
				t.Errorf("os.ReadFile(%s) = %d bytes, %v, want EIO", tc.name, len(b), err)
			}
			r := runCommand(os.Environ(), "/", "cat", p)
			if r.code == 0 || !strings.Contains(r.stderr, "Input/output error") {
				t.Errorf("cat %s: exit %d, stderr %q, want an input/output error", tc.name, r.code, r.stderr)
			}
			v3XCheckBlocks(t, v, tc.name, data[tc.name], stat[tc.name], B, tc.bad, tc.good)
		})
	}
	for name, d := range bystanders {
		checkContent(t, v.path(name), d, int(B))
	}
	v.unmount() // the log is complete
	for _, tc := range cases {
		t.Run(tc.name+"/logged", func(t *testing.T) { v3XCheckLogged(t, v, tc.name, tc.logged...) })
	}
	for name := range bystanders {
		if lines := v3XLogLines(v, name); len(lines) > 0 {
			t.Errorf("the daemon log names %s, which nobody touched: %q", name, lines)
		}
	}
}

// TestV3HolesOnDemand punches holes (fallocate PUNCH_HOLE and ZERO_RANGE)
// into a paged file through the mount and checks the content, the disk
// the backing file gives back, SEEK_HOLE/SEEK_DATA, and that damage next
// to the holes (and to hole entries themselves) is still detected; then
// it makes a 10 GiB sparse file with truncate and copies it with
// cp --sparse=always.
func TestV3HolesOnDemand(t *testing.T) {
	v := newVolume(t)
	l := v3XLayout(t, v)
	B := int64(l.BlockSize)
	g1 := int64(l.G0)
	g2 := g1 + blockcipher.GroupBlocks
	g3 := g2 + blockcipher.GroupBlocks

	t.Run("punch and zero range", func(t *testing.T) {
		const name = "holes"
		nb := g3 + 75 // groups 0, 1, 2 whole and part of group 3
		size := nb * B
		data := v3XRandom(7, int(size))
		writeFile(t, v.path(name), data)
		bp := v.backing(name)
		f, err := os.OpenFile(v.path(name), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync = %v", err)
		}
		if got, want := v3XBackingSize(t, bp), l.PagedSize(size); got != want {
			t.Errorf("backing size = %d, want %d", got, want)
		}
		before := v3XDiskUse(t, bp)
		fd := int(f.Fd())
		want := bytes.Clone(data)
		// Blocks 6..19 whole, 5 and 20 partly.
		if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 5*B+100, 15*B+100); err != nil {
			t.Fatalf("fallocate(PUNCH_HOLE|KEEP_SIZE) = %v", err)
		}
		clear(want[5*B+100 : 20*B+200])
		// Blocks g1+31..g1+39 whole, g1+30 and g1+40 partly.
		zoff := (g1+30)*B + 7
		if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, zoff, 10*B); err != nil {
			t.Fatalf("fallocate(ZERO_RANGE) = %v", err)
		}
		clear(want[zoff : zoff+10*B])
		// All of group 2.
		if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, g2*B, g3*B-g2*B); err != nil {
			t.Fatalf("fallocate(PUNCH_HOLE|KEEP_SIZE) of group 2 = %v", err)
		}
		clear(want[g2*B : g3*B])
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync = %v", err)
		}
		checkContent(t, v.path(name), want, int(B))
		if fi, err := f.Stat(); err != nil || fi.Size() != size {
			t.Errorf("fstat = %v, %v, want size %d", fi, err, size)
		}

		wholeHoles := (20 - 6) + 9 + (g3 - g2)
		after := v3XDiskUse(t, bp)
		t.Logf("backing file disk use: %d bytes before, %d after punching %d whole blocks", before, after, wholeHoles)
		if freed := before - after; freed < wholeHoles*B {
			t.Errorf("punching %d whole blocks freed %d bytes of the backing file (%d -> %d), want at least %d", wholeHoles, freed, before, after, wholeHoles*B)
		}
		if got, want := v3XBackingSize(t, bp), l.PagedSize(size); got != want {
			t.Errorf("backing size after the holes = %d, want %d", got, want)
		}

		wantExt := [][2]int64{{0, 6 * B}, {20 * B, (g1 + 31) * B}, {(g1 + 40) * B, g2 * B}, {g3 * B, size}}
		if ext := holesXExtents(t, f, size); fmt.Sprint(ext) != fmt.Sprint(wantExt) {
			t.Errorf("data extents (SEEK_DATA/SEEK_HOLE) = %v, want %v", ext, wantExt)
		}
		for _, q := range []struct {
			off    int64
			whence int
			want   int64
		}{
			{0, unix.SEEK_HOLE, 6 * B}, {6 * B, unix.SEEK_DATA, 20 * B}, {10 * B, unix.SEEK_HOLE, 10 * B},
			{g2*B + 5, unix.SEEK_DATA, g3 * B}, {g3 * B, unix.SEEK_HOLE, size},
		} {
			if got, err := unix.Seek(fd, q.off, q.whence); err != nil || got != q.want {
				t.Errorf("lseek(%d, whence %d) = %d, %v, want %d", q.off, q.whence, got, err, q.want)
			}
		}
		f.Close()

		// Damage next to the holes, and in them, is still found.
		v.unmount()
		zero := func(off, n int64) { v3XBackingWrite(t, bp, off, make([]byte, n)) }
		zero(l.DataOff(20), B)                                 // the partly punched block after the first hole
		zero(l.DataOff(uint64(g1+40)), B)                      // the block after the zeroed range
		zero(l.DataOff(uint64(g3)), B)                         // the first block after the hole group
		zero(l.EntryOff(10), blockcipher.EntrySize)            // a hole entry: zeros are damage, not a hole
		zero(l.EntryOff(uint64(g1+35)), blockcipher.EntrySize) // a hole entry of group 1
		v.mount()
		bad := []uint64{10, 20, uint64(g1 + 35), uint64(g1 + 40), uint64(g3)}
		good := []uint64{0, 5, 6, 19, 21, uint64(g1 + 31), uint64(g1 + 39), uint64(g1 + 41), uint64(g2), uint64(g3 - 1), uint64(g3 + 1)}
		v3XCheckBlocks(t, v, name, want, size, B, bad, good)
		if b, err := os.ReadFile(v.path(name)); errnoOf(err) != syscall.EIO {
			t.Errorf("os.ReadFile(%s) = %d bytes, %v, want EIO", name, len(b), err)
		}
		v.unmount()
		v3XCheckLogged(t, v, name, bad...)
		v.mount()
	})

	t.Run("10 GiB sparse", func(t *testing.T) {
		const size = 10 << 30
		p := v.path("sparse10g")
		start := time.Now()
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatalf("ftruncate to 10 GiB = %v", err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync = %v", err)
		}
		t.Logf("truncate to 10 GiB took %v", time.Since(start))
		// Some data at both ends and in the middle.
		head, mid, tail := v3XRandom(21, 5000), v3XRandom(22, int(B)), v3XRandom(23, 3000)
		for _, w := range []struct {
			b   []byte
			off int64
		}{{head, 0}, {mid, 5 << 30}, {tail, size - 3000}} {
			if _, err := f.WriteAt(w.b, w.off); err != nil {
				t.Fatalf("pwrite at %d = %v", w.off, err)
			}
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync = %v", err)
		}
		if fi, err := f.Stat(); err != nil || fi.Size() != size {
			t.Fatalf("fstat = %v, %v, want 10 GiB", fi, err)
		}
		bp := v.backing("sparse10g")
		use := v3XDiskUse(t, bp)
		t.Logf("10 GiB sparse file: backing file %d bytes, %d bytes of disk (%.3f%%)", v3XBackingSize(t, bp), use, 100*float64(use)/size)
		if use >= size/100 {
			t.Errorf("backing file of a 10 GiB sparse file uses %d bytes of disk, want well under 1%% (%d)", use, size/100)
		}
		ext := holesXExtents(t, f, size)
		wantExt := [][2]int64{{0, 2 * B}, {5 << 30, 5<<30 + B}, {size - B, size}}
		if fmt.Sprint(ext) != fmt.Sprint(wantExt) {
			t.Errorf("data extents = %v, want %v", ext, wantExt)
		}
		buf := make([]byte, 1<<20)
		if _, err := preadFull(f, buf, 3<<30); err != nil || !bytes.Equal(buf, make([]byte, len(buf))) {
			t.Errorf("reading 1 MiB of hole at 3 GiB: %v, or not zeros", err)
		}
		f.Close()

		cp := requireTool(t, "cp")
		start = time.Now()
		r := runCommand(os.Environ(), "/", cp, "--sparse=always", p, v.path("sparse10g.copy"))
		took := time.Since(start)
		if r.code != 0 || r.err != nil {
			t.Fatalf("%v\nwant exit 0", r)
		}
		t.Logf("cp --sparse=always of the 10 GiB file through the mount took %v", took)
		if took > time.Minute {
			t.Errorf("cp --sparse=always of a 10 GiB file with 12 KiB of data took %v, want it quick (it reads only the data)", took)
		}
		cf, err := os.Open(v.path("sparse10g.copy"))
		if err != nil {
			t.Fatal(err)
		}
		defer cf.Close()
		if fi, err := cf.Stat(); err != nil || fi.Size() != size {
			t.Errorf("the copy: fstat = %v, %v, want 10 GiB", fi, err)
		}
		cuse := v3XDiskUse(t, v.backing("sparse10g.copy"))
		t.Logf("the copy's backing file uses %d bytes of disk", cuse)
		if cuse >= size/100 {
			t.Errorf("backing file of the sparse copy uses %d bytes of disk, want well under 1%% (%d)", cuse, size/100)
		}
		for _, w := range []struct {
			b   []byte
			off int64
		}{{head, 0}, {mid, 5 << 30}, {tail, size - 3000}, {make([]byte, 1<<20), 7 << 30}} {
			got := make([]byte, len(w.b))
			if _, err := preadFull(cf, got, w.off); err != nil || !bytes.Equal(got, w.b) {
				t.Errorf("the copy at %d: %v, or wrong content", w.off, err)
			}
		}
	})
}
