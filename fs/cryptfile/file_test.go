package cryptfile

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
)

var ctx = context.Background()

// randBytes returns n pseudo-random bytes drawn from r.
func randBytes(r *rand.Rand, n int64) []byte {
	b := make([]byte, (n+7)/8*8)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

type opKind int

const (
	opWrite opKind = iota
	opTruncate
	opRead
)

// op is one step of an edge case: write n bytes at off, truncate to off,
// or read n bytes at off.
type op struct {
	kind   opKind
	off, n int64
}

func wr(off, n int64) op { return op{opWrite, off, n} }
func tr(size int64) op   { return op{opTruncate, size, 0} }
func rd(off, n int64) op { return op{opRead, off, n} }
func (o op) String() string {
	switch o.kind {
	case opWrite:
		return fmt.Sprintf("WriteAt(%d bytes, %d)", o.n, o.off)
	case opTruncate:
		return fmt.Sprintf("Truncate(%d)", o.off)
	}
	return fmt.Sprintf("Read(%d bytes, %d)", o.n, o.off)
}

// apply does o on h and on the model, and checks what reads return.
func (e *env) apply(h *Handle, m *model, o op, r *rand.Rand) {
	e.t.Helper()
	switch o.kind {
	case opWrite:
		data := randBytes(r, o.n)
		if n, err := h.WriteAt(ctx, data, o.off); n != len(data) || err != nil {
			e.t.Fatalf("%v = %d, %v; want %d, nil", o, n, err, len(data))
		}
		m.write(data, o.off)
	case opTruncate:
		if err := h.Truncate(ctx, o.off); err != nil {
			e.t.Fatalf("%v = %v, want nil", o, err)
		}
		m.truncate(o.off)
	case opRead:
		e.checkRead(h, *m, o.off, int(o.n))
	}
}

// checkRead checks Read and ReadAt of n bytes at off against the model.
func (e *env) checkRead(h *Handle, m model, off int64, n int) {
	e.t.Helper()
	want := m.read(n, off)
	buf := make([]byte, n)
	got, err := h.Read(buf, off)
	if err != nil || got != len(want) || !bytes.Equal(buf[:got], want) {
		e.t.Fatalf("Read(%d bytes, %d) = %d, %v; want %d bytes of the model, nil", n, off, got, err, len(want))
	}
	var wantErr error
	if len(want) < n {
		wantErr = io.EOF
	}
	clear(buf)
	got, err = h.ReadAt(buf, off)
	if err != wantErr || got != len(want) || !bytes.Equal(buf[:got], want) {
		e.t.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d bytes of the model, %v", n, off, got, err, len(want), wantErr)
	}
}

// checkBoundaries reads a few bytes around every block boundary.
func (e *env) checkBoundaries(h *Handle, m model) {
	e.t.Helper()
	B := int64(e.cfg.Layout.BlockSize)
	for b := int64(0); b <= int64(len(m))+B; b += B {
		e.checkRead(h, m, max(0, b-1), 3)
	}
}

// TestEdges runs short sequences of writes, truncations and reads at
// the edges of blocks, with every block size, checking the file against
// the model after every step.
func TestEdges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// big also runs the case with 1 MiB blocks (slow under -race).
		big bool
		ops func(B int64) []op
	}{
		{"one byte", true, func(B int64) []op { return []op{wr(0, 1), rd(0, 2), rd(1, 1)} }},
		{"block minus one", false, func(B int64) []op { return []op{wr(0, B-1)} }},
		{"exactly one block", false, func(B int64) []op { return []op{wr(0, B), rd(B, 1)} }},
		{"block plus one", true, func(B int64) []op { return []op{wr(0, B+1), rd(B-1, 5)} }},
		{"three blocks unaligned", false, func(B int64) []op { return []op{wr(5, 2*B+10), rd(3, 2*B)} }},
		{"straddle a boundary", false, func(B int64) []op { return []op{wr(0, 2*B), wr(B-10, 20), rd(B-20, 40)} }},
		{"straddle two boundaries", true, func(B int64) []op { return []op{wr(0, 4*B), wr(B-1, B+2), rd(B-2, B+4)} }},
		{"read-modify-write in a block", true, func(B int64) []op { return []op{wr(0, 3*B), wr(B+100, 50), rd(B+90, 70)} }},
		{"rewrite first bytes of a block", false, func(B int64) []op { return []op{wr(0, 3*B), wr(B, 7)} }},
		{"rewrite last bytes of a block", false, func(B int64) []op { return []op{wr(0, 3*B), wr(2*B-7, 7)} }},
		{"rewrite whole middle block", false, func(B int64) []op { return []op{wr(0, 3*B+9), wr(B, B)} }},
		{"rewrite inside partial last block", true, func(B int64) []op { return []op{wr(0, B+100), wr(B+10, 20)} }},
		{"rewrite start of partial last block", false, func(B int64) []op { return []op{wr(0, B+100), wr(B, 20)} }},
		{"extend partial last block", false, func(B int64) []op { return []op{wr(0, B+100), wr(B+50, 100)} }},
		{"append at the end", false, func(B int64) []op { return []op{wr(0, B+100), wr(B+100, 30)} }},
		{"append a block at the end", false, func(B int64) []op { return []op{wr(0, B), wr(B, B)} }},
		{"append past the end in the same block", true, func(B int64) []op { return []op{wr(0, 100), wr(200, 10), rd(90, 130)} }},
		{"append past the end over holes", true, func(B int64) []op { return []op{wr(0, 100), wr(3*B+5, 10), rd(0, 4*B)} }},
		{"append aligned after a partial block", true, func(B int64) []op { return []op{wr(0, 100), wr(B, B)} }},
		{"append aligned over holes", false, func(B int64) []op { return []op{wr(0, B), wr(3*B, B), rd(B, 2*B)} }},
		{"first write past the start", false, func(B int64) []op { return []op{wr(2*B+3, 5)} }},
		{"first write aligned past the start", false, func(B int64) []op { return []op{wr(2*B, B+1)} }},
		{"write over the end from inside", false, func(B int64) []op { return []op{wr(0, B+10), wr(B-5, 2*B)} }},
		{"truncate down to a block boundary", false, func(B int64) []op { return []op{wr(0, 3*B+7), tr(B)} }},
		{"truncate down inside a block", true, func(B int64) []op { return []op{wr(0, 3*B+7), tr(B + 5), rd(B, 10)} }},
		{"truncate down inside the last block", false, func(B int64) []op { return []op{wr(0, 3*B+7), tr(3*B + 1)} }},
		{"truncate down to zero", false, func(B int64) []op { return []op{wr(0, B+1), tr(0), rd(0, 1), wr(5, 5)} }},
		{"truncate up to a block boundary", false, func(B int64) []op { return []op{wr(0, 100), tr(3 * B)} }},
		{"truncate up inside the same block", false, func(B int64) []op { return []op{wr(0, 100), tr(200)} }},
		{"truncate up to the end of the same block", false, func(B int64) []op { return []op{wr(0, 100), tr(B)} }},
		{"truncate up inside a later block", true, func(B int64) []op { return []op{wr(0, 100), tr(2*B + 17)} }},
		{"truncate up from a block boundary", false, func(B int64) []op { return []op{wr(0, B), tr(2*B + 1)} }},
		{"truncate to the same size", false, func(B int64) []op { return []op{wr(0, B+1), tr(B + 1)} }},
		{"truncate up an empty file", false, func(B int64) []op { return []op{tr(B + 3), rd(0, 2*B)} }},
		{"truncate up then write into the hole", true, func(B int64) []op { return []op{tr(4 * B), wr(B+3, 10), wr(2*B, B)} }},
		{"truncate down then up", false, func(B int64) []op { return []op{wr(0, 2*B), tr(B / 2), tr(2*B - 1)} }},
		{"empty writes", true, func(B int64) []op { return []op{wr(0, 0), wr(B, 0), tr(0), rd(0, 10)} }},
		{"reads past the end", true, func(B int64) []op { return []op{wr(0, B+3), rd(B+3, 1), rd(B+4, 10), rd(10*B, B)} }},
	} {
		for _, bs := range blockSizes {
			if bs == 1<<20 && !tc.big {
				continue
			}
			t.Run(fmt.Sprintf("%s/B=%d", tc.name, bs), func(t *testing.T) {
				e := newEnv(t, bs)
				h := e.open()
				var m model
				r := rand.New(rand.NewPCG(uint64(bs), 1))
				for _, o := range tc.ops(int64(bs)) {
					e.apply(h, &m, o, r)
					e.check(h, m)
				}
				e.checkBoundaries(h, m)
				// A new handle, after the last one closed, loads the key
				// again and reads the same.
				h.Close()
				e.check(e.open(), m)
			})
		}
	}
}

// TestHoles checks that extending a file leaves the whole blocks in
// between as holes and pads the old partial last block to a full block
// (docs/FORMAT.md "Blocks").
func TestHoles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		extend func(h *Handle, B int64) error
	}{
		{"truncate", func(h *Handle, B int64) error { return h.Truncate(ctx, 4*B+10) }},
		{"write", func(h *Handle, B int64) error { _, err := h.WriteAt(ctx, []byte("0123456789"), 4*B); return err }},
		{"allocate", func(h *Handle, B int64) error { return h.Allocate(ctx, 0, 4*B+10, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const B = 4096
			e := newEnv(t, B)
			h := e.open()
			if _, err := h.WriteAt(ctx, []byte("start"), 0); err != nil {
				t.Fatal(err)
			}
			if err := tc.extend(h, B); err != nil {
				t.Fatalf("extending = %v, want nil", err)
			}
			b := e.backing()
			l := e.cfg.Layout
			cb := int64(l.CipherBlockSize())
			for n := uint64(1); n < 4; n++ {
				off := l.BlockCipherOff(n)
				if blk := b[off : off+cb]; !bytes.Equal(blk, make([]byte, cb)) {
					t.Errorf("block %d is not a hole", n)
				}
			}
			if blk := b[l.BlockCipherOff(0):l.BlockCipherOff(1)]; bytes.Equal(blk, make([]byte, cb)) {
				t.Errorf("block 0 is a hole, want it encrypted")
			}
			if blk := b[l.BlockCipherOff(4):]; int64(len(blk)) != 10+blockcipher.Overhead || bytes.Equal(blk, make([]byte, len(blk))) {
				t.Errorf("last block is %d bytes, zero = %v; want 38 encrypted bytes", len(blk), bytes.Equal(blk, make([]byte, len(blk))))
			}
		})
	}
}

// TestEmptyFile checks that a file gets its header with its first byte,
// and that nothing else writes one.
func TestEmptyFile(t *testing.T) {
	e := newEnv(t, 4096)
	h := e.open()
	if got := e.keyer.loads.Load(); got != 1 {
		t.Errorf("Keyer.Load calls = %d, want 1", got)
	}
	if got, err := h.Size(); got != 0 || err != nil {
		t.Errorf("Size() = %d, %v; want 0, nil", got, err)
	}
	buf := make([]byte, 10)
	if n, err := h.Read(buf, 0); n != 0 || err != nil {
		t.Errorf("Read(0) = %d, %v; want 0, nil", n, err)
	}
	if n, err := h.ReadAt(buf, 0); n != 0 || err != io.EOF {
		t.Errorf("ReadAt(0) = %d, %v; want 0, EOF", n, err)
	}
	if n, err := h.ReadAt(nil, 0); n != 0 || err != nil {
		t.Errorf("ReadAt(nil, 0) = %d, %v; want 0, nil", n, err)
	}
	if err := h.Truncate(ctx, 0); err != nil {
		t.Errorf("Truncate(0) = %v, want nil", err)
	}
	if n, err := h.WriteAt(ctx, nil, 100); n != 0 || err != nil {
		t.Errorf("WriteAt(nil, 100) = %d, %v; want 0, nil", n, err)
	}
	if err := h.Allocate(ctx, 0, 1<<20, unix.FALLOC_FL_KEEP_SIZE); err != nil {
		t.Errorf("Allocate(KEEP_SIZE) = %v, want nil", err)
	}
	if err := h.Sync(false); err != nil {
		t.Errorf("Sync(false) = %v, want nil", err)
	}
	if b := e.backing(); len(b) != 0 {
		t.Fatalf("backing file after no writes = %d bytes, want 0", len(b))
	}
	if got := e.keyer.news.Load(); got != 0 {
		t.Fatalf("Keyer.New calls = %d, want 0", got)
	}
	if n, err := h.WriteAt(ctx, []byte("x"), 0); n != 1 || err != nil {
		t.Fatalf("WriteAt(x, 0) = %d, %v; want 1, nil", n, err)
	}
	if got, want := len(e.backing()), 4096+1+28; got != want {
		t.Errorf("backing size of a 1-byte file = %d, want %d", got, want)
	}
	if got := e.keyer.news.Load(); got != 1 {
		t.Errorf("Keyer.New calls = %d, want 1", got)
	}
	e.check(h, model("x"))
	if err := h.Truncate(ctx, 0); err != nil {
		t.Fatal(err)
	}
	// The header stays: the file keeps its key.
	if got := len(e.backing()); got != header.Size {
		t.Errorf("backing size after Truncate(0) = %d, want %d", got, header.Size)
	}
	e.check(h, nil)
	if err := h.Truncate(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(ctx, []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	if got := e.keyer.news.Load(); got != 1 {
		t.Errorf("Keyer.New calls after rewriting = %d, want 1", got)
	}
	e.check(h, model("y"))

	// Truncating an empty file up gives it a header too.
	e2 := newEnv(t, 4096)
	h2 := e2.open()
	if err := h2.Truncate(ctx, 5); err != nil {
		t.Fatal(err)
	}
	e2.check(h2, make(model, 5))
}

// TestReadAtEOF checks the io.ReaderAt contract of ReadAt and the pread
// semantics of Read at and past the end of the file.
func TestReadAtEOF(t *testing.T) {
	const B = 4096
	const S = B + 100
	e := newEnv(t, B)
	h := e.open()
	data := randBytes(rand.New(rand.NewPCG(1, 2)), S)
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		off        int64
		n          int
		want       int
		wantReadAt error
	}{
		{"inside", 10, 10, 10, nil},
		{"whole file", 0, S, S, nil},
		{"up to the end", S - 10, 10, 10, nil},
		{"across the end", S - 10, 20, 10, io.EOF},
		{"across the end from a block start", B, 200, 100, io.EOF},
		{"at the end", S, 10, 0, io.EOF},
		{"past the end", S + 1, 10, 0, io.EOF},
		{"far past the end", 1 << 40, 10, 0, io.EOF},
		{"empty inside", 10, 0, 0, nil},
		{"empty past the end", S + 10, 0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, tc.n)
			n, err := h.ReadAt(buf, tc.off)
			if n != tc.want || err != tc.wantReadAt || !bytes.Equal(buf[:n], data[min(tc.off, S):min(tc.off, S)+int64(n)]) {
				t.Errorf("ReadAt(%d bytes, %d) = %d, %v; want %d, %v", tc.n, tc.off, n, err, tc.want, tc.wantReadAt)
			}
			n, err = h.Read(buf, tc.off)
			if n != tc.want || err != nil {
				t.Errorf("Read(%d bytes, %d) = %d, %v; want %d, nil", tc.n, tc.off, n, err, tc.want)
			}
		})
	}
	t.Run("negative offset", func(t *testing.T) {
		buf := make([]byte, 10)
		if n, err := h.ReadAt(buf, -1); n != 0 || err == nil {
			t.Errorf("ReadAt(-1) = %d, %v; want 0, an error", n, err)
		}
		if n, err := h.Read(buf, -1); n != 0 || err == nil {
			t.Errorf("Read(-1) = %d, %v; want 0, an error", n, err)
		}
		if n, err := h.WriteAt(ctx, buf, -1); n != 0 || err == nil {
			t.Errorf("WriteAt(-1) = %d, %v; want 0, an error", n, err)
		}
		if err := h.Truncate(ctx, -1); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Truncate(-1) = %v, want EINVAL", err)
		}
	})
	// ReadAt may use all of p, and no more: a read into the start of a
	// larger buffer leaves the rest of it alone.
	t.Run("only p", func(t *testing.T) {
		for _, off := range []int64{0, B} {
			big := bytes.Repeat([]byte{0xAA}, 2*B)
			if n, err := h.ReadAt(big[:10], off); n != 10 || err != nil {
				t.Fatalf("ReadAt(10 bytes, %d) = %d, %v; want 10, nil", off, n, err)
			}
			for i, c := range big[10:] {
				if c != 0xAA {
					t.Errorf("ReadAt(big[:10], %d) wrote past p: byte %d = %#x, want 0xaa", off, 10+i, c)
					break
				}
			}
		}
	})
}

// TestStatSize checks the size users see for backing sizes, damaged ones
// included (docs/FORMAT.md "Sizes").
func TestStatSize(t *testing.T) {
	l4k, l1m := layout(4096), layout(1<<20)
	for _, tc := range []struct {
		name   string
		l      blockcipher.Layout
		cipher int64
		want   int64
	}{
		{"empty", l4k, 0, 0},
		{"torn header", l4k, 100, 0},
		{"header only", l4k, 4096, 0},
		{"tail of 1", l4k, 4097, 1},
		{"tail of 28", l4k, 4096 + 28, 28},
		{"one byte", l4k, 4096 + 29, 1},
		{"one block", l4k, 8220, 4096},
		{"one block and a tail of 1", l4k, 8221, 4097},
		{"one block and a tail of 28", l4k, 8220 + 28, 4096 + 28},
		{"4097 bytes", l4k, 8249, 4097},
		{"1 MiB", l4k, 4096 + 256*4124, 1 << 20},
		{"1 MiB block", l1m, 4096 + 1<<20 + 28, 1 << 20},
		{"1 MiB block and a tail of 5", l1m, 4096 + 1<<20 + 28 + 5, 1<<20 + 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := StatSize(tc.l, tc.cipher); got != tc.want {
				t.Errorf("StatSize(B=%d, %d) = %d, want %d", tc.l.BlockSize, tc.cipher, got, tc.want)
			}
		})
	}
}

// flipBit flips one bit of the backing file at off.
func (e *env) flipBit(off int64) {
	e.t.Helper()
	f, err := os.OpenFile(e.path, os.O_RDWR, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		e.t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		e.t.Fatal(err)
	}
}

// TestDamagedBlock checks that a flipped bit fails every read of its
// block with an error that names it, and nothing else.
func TestDamagedBlock(t *testing.T) {
	for _, bs := range []int{4096, 65536} {
		t.Run(fmt.Sprintf("B=%d", bs), func(t *testing.T) {
			B := int64(bs)
			e := newEnv(t, bs)
			h := e.open()
			m := model(randBytes(rand.New(rand.NewPCG(3, 4)), 4*B+100))
			if _, err := h.WriteAt(ctx, m, 0); err != nil {
				t.Fatal(err)
			}
			e.flipBit(e.cfg.Layout.BlockCipherOff(2) + 40)
			isBad := func(call string, err error) {
				t.Helper()
				var be *blockcipher.BlockError
				if !errors.Is(err, blockcipher.ErrAuth) || !errors.As(err, &be) || be.Block != 2 || !strings.Contains(err.Error(), "block 2") {
					t.Errorf("%s = %v, want an authentication error naming block 2", call, err)
				}
			}
			for _, tc := range []struct {
				name   string
				off, n int64
			}{
				{"the block", 2 * B, B},
				{"one byte of it", 2*B + 7, 1},
				{"across it", B + 1, 2 * B},
				{"the whole file", 0, 5 * B},
			} {
				_, err := h.Read(make([]byte, tc.n), tc.off)
				isBad(fmt.Sprintf("Read(%s)", tc.name), err)
			}
			// The other blocks still read.
			e.checkRead(h, m, 0, int(2*B))
			e.checkRead(h, m, 3*B, int(2*B))
			// A partial write into the block must read it first: it
			// fails and changes nothing.
			before := e.backing()
			_, err := h.WriteAt(ctx, []byte("x"), 2*B+5)
			isBad("WriteAt(into the block)", err)
			if !bytes.Equal(e.backing(), before) {
				t.Errorf("a failed write changed the backing file")
			}
			err = h.Truncate(ctx, 2*B+5)
			isBad("Truncate(into the block)", err)
			// A whole-block write keeps nothing old: it repairs the block.
			repair := randBytes(rand.New(rand.NewPCG(5, 6)), B)
			if _, err := h.WriteAt(ctx, repair, 2*B); err != nil {
				t.Fatalf("WriteAt(whole block 2) = %v, want nil", err)
			}
			m.write(repair, 2*B)
			e.check(h, m)
		})
	}
}

// TestDamagedTail checks a backing file that ends in 1..28 bytes of a
// block: the size counts them, reading them fails, and so does writing,
// until a truncation to whole blocks or less.
func TestDamagedTail(t *testing.T) {
	const B = 4096
	for _, r := range []int64{1, 13, 28} {
		for _, tc := range []struct {
			name string
			fix  func(h *Handle) error
			size int64
		}{
			{"truncate to the whole blocks", func(h *Handle) error { return h.Truncate(ctx, 3*B) }, 3 * B},
			{"truncate into the last whole block", func(h *Handle) error { return h.Truncate(ctx, 3*B-5) }, 3*B - 5},
			{"truncate to a block boundary below", func(h *Handle) error { return h.Truncate(ctx, B) }, B},
			{"truncate up", func(h *Handle) error { return h.Truncate(ctx, 3*B+50) }, 3*B + 50},
			{"truncate up to a block boundary", func(h *Handle) error { return h.Truncate(ctx, 5*B) }, 5 * B},
		} {
			t.Run(fmt.Sprintf("tail of %d/%s", r, tc.name), func(t *testing.T) {
				e := newEnv(t, B)
				h := e.open()
				m := model(randBytes(rand.New(rand.NewPCG(7, uint64(r))), 3*B+100))
				if _, err := h.WriteAt(ctx, m, 0); err != nil {
					t.Fatal(err)
				}
				cut := e.cfg.Layout.BlockCipherOff(3) + r
				if err := os.Truncate(e.path, cut); err != nil {
					t.Fatal(err)
				}
				m.truncate(3 * B)
				if got, want := StatSize(e.cfg.Layout, cut), 3*B+r; got != want {
					t.Errorf("StatSize(%d) = %d, want %d", cut, got, want)
				}
				if got, err := h.Size(); got != 3*B || !errors.Is(err, blockcipher.ErrBadCipherSize) {
					t.Errorf("Size() = %d, %v; want %d, ErrBadCipherSize", got, err, 3*B)
				}
				buf := make([]byte, 100)
				for _, off := range []int64{3 * B, 3*B + r - 1, 4 * B} {
					if n, err := h.Read(buf, off); n != 0 || !errors.Is(err, blockcipher.ErrBadCipherSize) {
						t.Errorf("Read(%d) = %d, %v; want 0, ErrBadCipherSize", off, n, err)
					}
				}
				// The whole blocks before it read; a read that reaches
				// the tail stops before it.
				e.checkRead(h, m, 0, 3*B)
				if n, err := h.Read(buf, 3*B-10); n != 10 || err != nil {
					t.Errorf("Read(3B-10) = %d, %v; want 10, nil", n, err)
				}
				if _, err := h.WriteAt(ctx, []byte("x"), 10); !errors.Is(err, blockcipher.ErrBadCipherSize) {
					t.Errorf("WriteAt(10) = %v, want ErrBadCipherSize", err)
				}
				if err := h.Allocate(ctx, 0, 10*B, 0); !errors.Is(err, blockcipher.ErrBadCipherSize) {
					t.Errorf("Allocate(0, 10B, 0) = %v, want ErrBadCipherSize", err)
				}
				if err := tc.fix(h); err != nil {
					t.Fatalf("%s = %v, want nil", tc.name, err)
				}
				m.truncate(tc.size)
				e.check(h, m)
				if _, err := h.WriteAt(ctx, []byte("appended"), int64(len(m))); err != nil {
					t.Fatalf("WriteAt(after the fix) = %v, want nil", err)
				}
				m.write([]byte("appended"), int64(len(m)))
				e.check(h, m)
			})
		}
	}
}

// TestTornHeader checks that a backing file shorter than its header does
// not open, and that the engine closes the descriptor it was given.
func TestTornHeader(t *testing.T) {
	e := newEnv(t, 4096)
	if err := os.WriteFile(e.path, bytes.Repeat([]byte{1}, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := StatSize(e.cfg.Layout, 100); got != 0 {
		t.Errorf("StatSize(100) = %d, want 0", got)
	}
	fd, err := syscall.Open(e.path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Open(ctx, fd); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open(torn header) = %v, want ErrCorrupt", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != syscall.EBADF {
		t.Errorf("fcntl(F_GETFD) of the descriptor after a failed Open = %v, want EBADF", err)
	}
}

// TestKeepCache checks when the kernel may keep its cache across opens.
func TestKeepCache(t *testing.T) {
	e := newEnv(t, 4096)
	h := e.open()
	if _, err := h.WriteAt(ctx, []byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	step := func(what string, want bool) {
		t.Helper()
		if got := e.open().KeepCache(); got != want {
			t.Errorf("KeepCache() after %s = %v, want %v", what, got, want)
		}
	}
	step("the first open", false)
	step("an open with no change", true)
	step("another open with no change", true)
	if _, err := h.WriteAt(ctx, []byte("J"), 0); err != nil {
		t.Fatal(err)
	}
	step("a write through the File", false)
	step("an open with no change", true)
	if err := h.Truncate(ctx, 3); err != nil {
		t.Fatal(err)
	}
	step("a truncation through the File", false)
	step("an open with no change", true)
	// A change behind the File's back moves the stamp.
	f, err := os.OpenFile(e.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("garbage"))
	f.Close()
	step("a change behind the File's back", false)
	step("an open with no change", true)
	if err := os.Chmod(e.path, 0o600); err != nil {
		t.Fatal(err)
	}
	step("a chmod behind the File's back", false)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	bad := &Handle{f: e.f, fd: -1}
	if bad.KeepCache() {
		t.Errorf("KeepCache() of a closed descriptor = true, want false")
	}
	step("a failed stat", false)
}

// TestReplaced checks that an open finds a backing file replaced in place
// by another kmsfs file and loads its key, for the handles already open
// too.
func TestReplaced(t *testing.T) {
	e := newEnv(t, 4096)
	h1 := e.open()
	if _, err := h1.WriteAt(ctx, []byte("first file"), 0); err != nil {
		t.Fatal(err)
	}
	other := newEnvIn(t, e.dir, "other", 4096, nil)
	oh := other.open()
	if _, err := oh.WriteAt(ctx, []byte("second file, longer"), 0); err != nil {
		t.Fatal(err)
	}
	oh.Close()
	// Copy other's bytes over the file, keeping its inode (a sync tool,
	// a restore).
	if err := os.WriteFile(e.path, other.backing(), 0o644); err != nil {
		t.Fatal(err)
	}
	loads := e.keyer.loads.Load()
	h2 := e.open()
	if got := e.keyer.loads.Load(); got != loads+1 {
		t.Errorf("Keyer.Load calls after the replacement = %d, want %d", got, loads+1)
	}
	if got := e.keyer.live.Load(); got != 1 {
		t.Errorf("live keys = %d, want 1 (the old one closed)", got)
	}
	for _, h := range []*Handle{h1, h2} {
		e.checkRead(h, model("second file, longer"), 0, 100)
	}
	// An open that finds the same file loads nothing.
	e.open()
	if got := e.keyer.loads.Load(); got != loads+1 {
		t.Errorf("Keyer.Load calls after an unchanged open = %d, want %d", got, loads+1)
	}

	// A replacement this keyer cannot read fails the open and keeps the
	// key the open handles use.
	foreign := newFakeKeyer(t, e.cfg.Layout, 2)
	id := [16]byte{9}
	hdr, err := foreign.header(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.path, hdr, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.openFlags(syscall.O_RDWR); !errors.Is(err, header.ErrNoValidCopy) {
		t.Errorf("Open(a file of another key) = %v, want ErrNoValidCopy", err)
	}
	if got := e.keyer.live.Load(); got != 1 {
		t.Errorf("live keys after a failed open = %d, want 1", got)
	}
}

// TestHeaderBehindTheBack checks a handle that found its file empty
// while another writer (another mount of the backing directory) gave it
// a header, and a file emptied behind a handle's back.
func TestHeaderBehindTheBack(t *testing.T) {
	e := newEnv(t, 4096)
	h := e.open() // empty: no key
	mount2 := newEnvIn(t, e.dir, e.name, 4096, nil)
	h2 := mount2.open()
	if _, err := h2.WriteAt(ctx, []byte("from the other mount"), 0); err != nil {
		t.Fatal(err)
	}
	// The read finds a header it has no key for; a new open loads it.
	if _, err := h.Read(make([]byte, 10), 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Read(a file that got a header behind the handle) = %v, want ErrCorrupt", err)
	}
	// A write loads the key first.
	if _, err := h.WriteAt(ctx, []byte("F"), 0); err != nil {
		t.Fatalf("WriteAt(a file that got a header behind the handle) = %v, want nil", err)
	}
	e.check(h, model("From the other mount"))
	e.check(h2, model("From the other mount"))

	// Emptied behind the handle's back: the next write makes a new
	// file, with a new key and file ID.
	pre := func() [16]byte {
		p, err := header.ParsePreamble(e.backing())
		if err != nil {
			t.Fatal(err)
		}
		return p.FileID
	}
	id := pre()
	if err := os.Truncate(e.path, 0); err != nil {
		t.Fatal(err)
	}
	// An open finds no preamble to compare: it keeps the key.
	loads := e.keyer.loads.Load()
	e.open()
	if got := e.keyer.loads.Load(); got != loads {
		t.Errorf("Keyer.Load calls after opening an emptied file = %d, want %d", got, loads)
	}
	if _, err := h.WriteAt(ctx, []byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	if pre() == id {
		t.Errorf("file ID after rewriting an emptied file = the old one, want a new one")
	}
	e.check(h, model("new"))
}

// TestAllocate checks the fallocate modes.
func TestAllocate(t *testing.T) {
	const B = 4096
	for _, tc := range []struct {
		name      string
		off, size int64
		mode      uint32
		wantErr   error
		wantSize  int64
	}{
		{"mode 0 extends", 0, 10000, 0, nil, 10000},
		{"mode 0 extends to a block boundary", 50, 2*B - 50, 0, nil, 2 * B},
		{"mode 0 inside", 10, 50, 0, nil, 100},
		{"mode 0 past the end", 5000, 3000, 0, nil, 8000},
		{"keep size inside", 0, 50, unix.FALLOC_FL_KEEP_SIZE, nil, 100},
		{"keep size past the end", 0, 1 << 20, unix.FALLOC_FL_KEEP_SIZE, nil, 100},
		// PUNCH_HOLE and ZERO_RANGE: holes_test.go.
		{"collapse range", 0, B, unix.FALLOC_FL_COLLAPSE_RANGE, syscall.EOPNOTSUPP, 100},
		{"insert range", 0, B, unix.FALLOC_FL_INSERT_RANGE, syscall.EOPNOTSUPP, 100},
		{"zero size", 0, 0, 0, syscall.EINVAL, 100},
		{"negative offset", -1, 10, 0, syscall.EINVAL, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, B)
			h := e.open()
			m := model(randBytes(rand.New(rand.NewPCG(8, 9)), 100))
			if _, err := h.WriteAt(ctx, m, 0); err != nil {
				t.Fatal(err)
			}
			var before syscall.Stat_t
			if err := syscall.Fstat(h.Fd(), &before); err != nil {
				t.Fatal(err)
			}
			err := h.Allocate(ctx, tc.off, tc.size, tc.mode)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Allocate(%d, %d, %#x) = %v, want %v", tc.off, tc.size, tc.mode, err, tc.wantErr)
			}
			m.truncate(tc.wantSize)
			e.check(h, m)
			var after syscall.Stat_t
			if err := syscall.Fstat(h.Fd(), &after); err != nil {
				t.Fatal(err)
			}
			if tc.mode == unix.FALLOC_FL_KEEP_SIZE && tc.size > B && after.Blocks <= before.Blocks {
				t.Logf("Allocate(KEEP_SIZE) reserved nothing (%d blocks before, %d after): the backing file system may not support fallocate", before.Blocks, after.Blocks)
			}
		})
	}
	t.Run("mode 0 on an empty file", func(t *testing.T) {
		e := newEnv(t, B)
		h := e.open()
		if err := h.Allocate(ctx, 10, 100, 0); err != nil {
			t.Fatalf("Allocate(10, 100, 0) = %v, want nil", err)
		}
		e.check(h, make(model, 110))
	})
}

// TestHandleErrors checks the errors of key services and descriptors.
func TestHandleErrors(t *testing.T) {
	t.Run("Keyer.New fails", func(t *testing.T) {
		e := newEnv(t, 4096)
		e.keyer.newErr = errors.New("key service down")
		h := e.open()
		if _, err := h.WriteAt(ctx, []byte("x"), 0); !errors.Is(err, e.keyer.newErr) {
			t.Errorf("WriteAt = %v, want %v", err, e.keyer.newErr)
		}
		if err := h.Truncate(ctx, 10); !errors.Is(err, e.keyer.newErr) {
			t.Errorf("Truncate(10) = %v, want %v", err, e.keyer.newErr)
		}
		if err := h.Allocate(ctx, 0, 10, 0); !errors.Is(err, e.keyer.newErr) {
			t.Errorf("Allocate(0, 10, 0) = %v, want %v", err, e.keyer.newErr)
		}
		if b := e.backing(); len(b) != 0 {
			t.Errorf("backing file = %d bytes, want 0", len(b))
		}
	})
	t.Run("read-only descriptor of an empty file", func(t *testing.T) {
		e := newEnv(t, 4096)
		h, err := e.openFlags(syscall.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.WriteAt(ctx, []byte("x"), 0); !errors.Is(err, syscall.EBADF) {
			t.Errorf("WriteAt(read-only) = %v, want EBADF", err)
		}
		if b := e.backing(); len(b) != 0 {
			t.Errorf("backing file = %d bytes, want 0", len(b))
		}
		if got := e.keyer.live.Load(); got != 0 {
			t.Errorf("live keys after a failed header write = %d, want 0", got)
		}
	})
	t.Run("read-only descriptor", func(t *testing.T) {
		e := newEnv(t, 4096)
		if _, err := e.open().WriteAt(ctx, []byte("hello"), 0); err != nil {
			t.Fatal(err)
		}
		h, err := e.openFlags(syscall.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		e.checkRead(h, model("hello"), 0, 10)
		for _, tc := range []struct {
			name string
			do   func() error
		}{
			{"WriteAt(whole block)", func() error { _, err := h.WriteAt(ctx, make([]byte, 4096), 0); return err }},
			{"WriteAt(inside)", func() error { _, err := h.WriteAt(ctx, []byte("J"), 0); return err }},
			{"Truncate(down)", func() error { return h.Truncate(ctx, 2) }},
			{"Truncate(up)", func() error { return h.Truncate(ctx, 10000) }},
		} {
			if err := tc.do(); !errors.Is(err, syscall.EBADF) && !errors.Is(err, syscall.EINVAL) {
				t.Errorf("%s through a read-only descriptor = %v, want EBADF or EINVAL", tc.name, err)
			}
		}
	})
	t.Run("foreign key", func(t *testing.T) {
		e := newEnv(t, 4096)
		foreign := newFakeKeyer(t, e.cfg.Layout, 2)
		hdr, err := foreign.header([16]byte{1})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(e.path, hdr, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := e.openFlags(syscall.O_RDWR); !errors.Is(err, header.ErrWrongKey) {
			t.Errorf("Open(a file of another key) = %v, want ErrWrongKey", err)
		}
	})
	t.Run("close twice", func(t *testing.T) {
		e := newEnv(t, 4096)
		h := e.open()
		if err := h.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
		if err := h.Close(); err != syscall.EBADF {
			t.Errorf("second Close() = %v, want EBADF", err)
		}
	})
	t.Run("accessors", func(t *testing.T) {
		e := newEnv(t, 4096)
		h := e.open()
		if h.File() != e.f || e.f.Name() != "f" || h.Fd() < 0 {
			t.Errorf("File(), Name(), Fd() = %p, %q, %d; want %p, %q, a descriptor", h.File(), e.f.Name(), h.Fd(), e.f, "f")
		}
		for _, dataOnly := range []bool{false, true} {
			if err := h.Sync(dataOnly); err != nil {
				t.Errorf("Sync(%v) = %v, want nil", dataOnly, err)
			}
		}
	})
}

// TestPreadHead checks that PreadHead reads the start of the file and
// leaves the descriptor's flags as they were.
func TestPreadHead(t *testing.T) {
	e := newEnv(t, 4096)
	if err := os.WriteFile(e.path, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(e.path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	for _, tc := range []struct {
		name string
		n    int
		want string
	}{
		{"part", 4, "0123"},
		{"all", 10, "0123456789"},
		{"more than the file", 100, "0123456789"},
	} {
		buf := make([]byte, tc.n)
		n, err := PreadHead(fd, buf)
		if err != nil || string(buf[:n]) != tc.want {
			t.Errorf("PreadHead(%s) = %q, %v; want %q, nil", tc.name, buf[:n], err, tc.want)
		}
	}
	if got, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); got != flags {
		t.Errorf("flags after PreadHead = %#x, want %#x", got, flags)
	}
	if _, err := PreadHead(-1, make([]byte, 4)); err == nil {
		t.Errorf("PreadHead(-1) = nil error, want EBADF")
	}
}

// TestWriteFailure checks that a write the backing file system refuses
// (here: past the process's file size limit) fails and leaves the file
// as it was, with and without the journal.
func TestWriteFailure(t *testing.T) {
	for _, journal := range []bool{false, true} {
		t.Run(fmt.Sprintf("journal=%v", journal), func(t *testing.T) {
			const B = 4096
			dir := t.TempDir()
			var j *Journal
			if journal {
				j = openTestJournal(t, dir, 2*MaxRequest, nil)
			}
			e := newEnvIn(t, dir, "f", B, j)
			h := e.open()
			m := model(randBytes(rand.New(rand.NewPCG(10, 11)), 2*B))
			if _, err := h.WriteAt(ctx, m, 0); err != nil {
				t.Fatal(err)
			}
			before := e.backing()
			// Only around the writes: the testing package's own log file
			// (go test -json, caching) must not meet the limit.
			restore := limitFileSizeUntil(t, int64(len(before))+B/2)
			for _, tc := range []struct {
				name   string
				off, n int64
			}{
				{"append", int64(len(m)), 2 * B},
				{"extend the last block", 2*B + 50, B},
				{"large append", int64(len(m)), 3 * pipeMin},
			} {
				_, err := h.WriteAt(ctx, randBytes(rand.New(rand.NewPCG(1, 1)), tc.n), tc.off)
				if !errors.Is(err, syscall.EFBIG) {
					t.Errorf("WriteAt(%s past the size limit) = %v, want EFBIG", tc.name, err)
				}
				if !bytes.Equal(e.backing(), before) {
					restore()
					t.Fatalf("backing file after a failed %s differs from before", tc.name)
				}
			}
			restore()
			e.check(h, m)
		})
	}
}

// TestWriteFailureOverwrite fails a write that overwrites the short last
// block and extends the file (RLIMIT_FSIZE stops it part-way): no block
// may be left torn. The engine finishes the overwritten block from the
// journal's copy, or, where even that is refused, leaves the record for
// the next mount, whose replay must make the file whole.
func TestWriteFailureOverwrite(t *testing.T) {
	const B = 4096
	for _, tc := range []struct {
		name  string
		limit int64 // above the old backing size
		// left: the record is left in the journal for the next mount.
		left bool
	}{
		{"copy fits under the limit", header.Size + 3*(B+28) + 10, false},
		{"copy refused too", header.Size + 2*(B+28) + 200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			m := model(randBytes(rand.New(rand.NewPCG(3, 4)), 2*B+100))
			e0 := newEnvIn(t, dir, "f", B, nil)
			h0 := e0.open()
			if _, err := h0.WriteAt(ctx, m, 0); err != nil {
				t.Fatal(err)
			}
			h0.Close()
			// A journal with small slots, and its first slot free: the size
			// limit below stops the backing file's write, not the journal's.
			maxData := 2 * (B + 28)
			j := openTestJournal(t, dir, maxData, nil)
			e := newEnvIn(t, dir, "f", B, j)
			h := e.open()
			p := randBytes(rand.New(rand.NewPCG(5, 6)), 2*B)
			restore := limitFileSizeUntil(t, tc.limit)
			_, err := h.WriteAt(ctx, p, 2*B+50)
			restore()
			if err == nil {
				t.Fatalf("WriteAt past the size limit = nil, want an error")
			}
			want := 0
			if tc.left {
				want = 1
			}
			jb := journalBytes(t, dir)
			live := liveSlots(jb, j.slotSize)
			if len(live) != want {
				t.Fatalf("slots holding a record after the failed write = %v, want %d", live, want)
			}
			if tc.left {
				if _, err := openRecord(j.key.Cipher(), live[0], slotPage(jb, j.slotSize, live[0]), j.slotSize-journalHdr); err != nil {
					t.Fatalf("the record left in slot %d: openRecord = %v, want nil", live[0], err)
				}
				// Left for the next mount: replay it as a mount would.
				j = openTestJournal(t, dir, maxData, nil)
			}
			checkJournalClear(t, dir, j.slotSize)
			// Block 2 now holds its old content or the new one, whole; the
			// part of the write past it may be lost.
			got := e.backing()
			plain, derr := e.keyer.decrypt(got)
			if derr != nil {
				t.Fatalf("decoding the backing file after the failed write = %v, want every block whole", derr)
			}
			old := m
			newer := append(model(nil), m...)
			newer.write(p[:B-50], 2*B+50)
			if !bytes.Equal(plain, old) && !bytes.Equal(plain, newer) {
				t.Errorf("after the failed write the file is %d bytes, neither the old %d nor the old with block 2 rewritten (%d)", len(plain), len(old), len(newer))
			}
		})
	}
}

// limitFileSizeUntil sets RLIMIT_FSIZE to n and returns a function that
// restores it (also run at the end of the test).
func limitFileSizeUntil(t *testing.T, n int64) func() {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: uint64(n), Max: old.Max}); err != nil {
		t.Skipf("Setrlimit(RLIMIT_FSIZE) = %v", err)
	}
	done := false
	restore := func() {
		if !done {
			done = true
			if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(restore)
	return restore
}
