package cryptfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// zeroModel zeros [off, end) of the model, within its size.
func zeroModel(m *model, off, end int64) {
	end = min(end, int64(len(*m)))
	if off < end {
		clear((*m)[off:end])
	}
}

// storedHole reports whether stored block b of backing is all zeros.
func (e *env) storedHole(backing []byte, b int64) bool {
	l := e.cfg.Layout
	lo := l.BlockCipherOff(uint64(b))
	hi := min(lo+int64(l.CipherBlockSize()), int64(len(backing)))
	return lo < hi && bytes.Equal(backing[lo:hi], make([]byte, hi-lo))
}

func TestPunchHole(t *testing.T) {
	for _, bs := range []int{4096, 65536} {
		B := int64(bs)
		for _, tc := range []struct {
			name      string
			off, n    int64
			wantHoles []int64 // blocks that must be holes after
		}{
			{"whole blocks", 2 * B, 3 * B, []int64{2, 3, 4}},
			{"unaligned across blocks", B + 100, 3 * B, []int64{2, 3}},
			{"inside one block", 5*B + 10, 20, nil},
			{"to the end, partial last block", 18 * B, 10 * B, []int64{18, 19}},
			{"past the end", 30 * B, B, nil},
			{"the whole file", 0, 21 * B, []int64{0, 5, 19}},
		} {
			t.Run(fmt.Sprintf("%d/%s", bs, tc.name), func(t *testing.T) {
				e := newEnv(t, bs)
				h := e.open()
				r := rand.New(rand.NewPCG(uint64(bs), 7))
				var m model
				data := randBytes(r, 20*B+100)
				if _, err := h.WriteAt(context.Background(), data, 0); err != nil {
					t.Fatal(err)
				}
				m.write(data, 0)
				if err := h.Allocate(context.Background(), tc.off, tc.n, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE); err != nil {
					t.Fatalf("punch(%d, %d) = %v", tc.off, tc.n, err)
				}
				zeroModel(&m, tc.off, tc.off+tc.n)
				e.check(h, m)
				b := e.backing()
				for _, hb := range tc.wantHoles {
					if !e.storedHole(b, hb) {
						t.Errorf("block %d is not a hole", hb)
					}
				}
				// The partial last block is never a hole: it is
				// re-encrypted.
				if e.storedHole(b, 20) {
					t.Error("the partial last block became all zeros")
				}
				// Writing into a punched block works.
				if _, err := h.WriteAt(context.Background(), []byte("again"), tc.off+1); err != nil {
					t.Fatal(err)
				}
				m.write([]byte("again"), tc.off+1)
				e.check(h, m)
			})
		}
	}
}

func TestPunchHoleFreesSpace(t *testing.T) {
	e := newEnv(t, 4096)
	h := e.open()
	data := bytes.Repeat([]byte{7}, 8<<20)
	if _, err := h.WriteAt(context.Background(), data, 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Sync(false); err != nil {
		t.Fatal(err)
	}
	var before, after syscall.Stat_t
	syscall.Stat(e.path, &before)
	if err := h.Allocate(context.Background(), 1<<20, 6<<20, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE); err != nil {
		t.Fatal(err)
	}
	syscall.Stat(e.path, &after)
	if freed := (before.Blocks - after.Blocks) * 512; freed < 5<<20 {
		t.Errorf("punching 6 MiB freed %d bytes of backing storage", freed)
	}
	var m model
	m.write(data, 0)
	zeroModel(&m, 1<<20, 7<<20)
	e.check(h, m)
}

func TestZeroRange(t *testing.T) {
	const B = 4096
	for _, tc := range []struct {
		name     string
		off, n   int64
		keepSize bool
		wantSize int64
	}{
		{"inside", 3*B + 5, 2 * B, true, 10*B + 7},
		{"past the end, keep size", 9 * B, 5 * B, true, 10*B + 7},
		{"past the end, grow", 9 * B, 5 * B, false, 14 * B},
		{"beyond the end, grow", 20 * B, B + 1, false, 21*B + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, B)
			h := e.open()
			data := randBytes(rand.New(rand.NewPCG(1, 2)), 10*B+7)
			if _, err := h.WriteAt(context.Background(), data, 0); err != nil {
				t.Fatal(err)
			}
			var m model
			m.write(data, 0)
			mode := uint32(unix.FALLOC_FL_ZERO_RANGE)
			if tc.keepSize {
				mode |= unix.FALLOC_FL_KEEP_SIZE
			}
			if err := h.Allocate(context.Background(), tc.off, tc.n, mode); err != nil {
				t.Fatal(err)
			}
			if !tc.keepSize && tc.off+tc.n > int64(len(m)) {
				m.truncate(tc.off + tc.n)
			}
			zeroModel(&m, tc.off, tc.off+tc.n)
			if int64(len(m)) != tc.wantSize {
				t.Fatalf("test error: model size %d, want %d", len(m), tc.wantSize)
			}
			e.check(h, m)
		})
	}
	e := newEnv(t, B)
	h := e.open()
	for _, mode := range []uint32{unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_COLLAPSE_RANGE, unix.FALLOC_FL_INSERT_RANGE} {
		if err := h.Allocate(context.Background(), 0, B, mode); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("Allocate(mode %#x) = %v, want EOPNOTSUPP", mode, err)
		}
	}
}

func TestSeekDataHole(t *testing.T) {
	for _, bs := range []int{4096, 65536} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			B := int64(bs)
			e := newEnv(t, bs)
			h := e.open()
			// data [0, 1 MiB), hole [1 MiB, 9 MiB), data [9 MiB, 10 MiB+100)
			r := rand.New(rand.NewPCG(3, 4))
			for _, off := range []int64{0, 9 << 20} {
				n := int64(1 << 20)
				if off != 0 {
					n += 100
				}
				if _, err := h.WriteAt(context.Background(), randBytes(r, n), off); err != nil {
					t.Fatal(err)
				}
			}
			size := int64(10<<20 + 100)
			seek := func(off int64, whence int) int64 {
				t.Helper()
				pos, err := h.Seek(off, whence)
				if err != nil {
					t.Fatalf("Seek(%d, %d) = %v", off, whence, err)
				}
				return pos
			}
			hole := seek(0, unix.SEEK_HOLE)
			if hole < 1<<20 || hole > 1<<20+2*B {
				t.Errorf("SEEK_HOLE(0) = %d, want the hole at 1 MiB (within two blocks)", hole)
			}
			data := seek(hole, unix.SEEK_DATA)
			if data > 9<<20 || data < 9<<20-2*B {
				t.Errorf("SEEK_DATA(%d) = %d, want the data at 9 MiB (within two blocks)", hole, data)
			}
			buf := make([]byte, data-hole)
			if n, err := h.ReadAt(buf, hole); n != len(buf) || err != nil || !bytes.Equal(buf, make([]byte, len(buf))) {
				t.Errorf("the reported hole [%d, %d) does not read as zeros (%d, %v)", hole, data, n, err)
			}
			if got := seek(100, unix.SEEK_DATA); got != 100 {
				t.Errorf("SEEK_DATA(100) = %d, want 100 (in data)", got)
			}
			if got := seek(5<<20, unix.SEEK_HOLE); got != 5<<20 {
				t.Errorf("SEEK_HOLE(5 MiB) = %d, want 5 MiB (in the hole)", got)
			}
			if got := seek(9<<20+10, unix.SEEK_HOLE); got != size {
				t.Errorf("SEEK_HOLE in the last data = %d, want the end %d", got, size)
			}
			for _, w := range []int{unix.SEEK_DATA, unix.SEEK_HOLE} {
				if _, err := h.Seek(size, w); !errors.Is(err, syscall.ENXIO) {
					t.Errorf("Seek(end, %d) = %v, want ENXIO", w, err)
				}
			}
			// A punched range is found too.
			if err := h.Allocate(context.Background(), 256<<10, 256<<10, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE); err != nil {
				t.Fatal(err)
			}
			if got := seek(0, unix.SEEK_HOLE); got < 256<<10 || got > 256<<10+2*B {
				t.Errorf("SEEK_HOLE(0) after punching [256 KiB, 512 KiB) = %d", got)
			}
		})
	}
}
