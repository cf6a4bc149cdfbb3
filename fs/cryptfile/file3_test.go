package cryptfile

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
)

// copySize3 is the header copy size of the version-3 tests.
const copySize3 = 1024

// keyer3 is a Keyer of version-3 files without a key service: a file's
// content key is HMAC(secret, file ID), and its header is a version-3
// preamble followed by zeros (the engine never reads further).
type keyer3 struct {
	bs         int
	secret     []byte
	live, news atomic.Int64
}

func (k *keyer3) hlen() int { return 32 + 2*copySize3 }

func (k *keyer3) cipher(id [16]byte) (*blockcipher.Cipher, error) {
	m := hmac.New(sha256.New, k.secret)
	m.Write(id[:])
	return blockcipher.New3(m.Sum(nil), id, k.bs)
}

func (k *keyer3) header(id [16]byte) []byte {
	h := make([]byte, k.hlen())
	copy(h, header.Magic[:])
	binary.BigEndian.PutUint16(h[6:], 3)
	h[8] = uint8(bits.TrailingZeros(uint(k.bs)))
	binary.BigEndian.PutUint16(h[9:], copySize3)
	copy(h[16:32], id[:])
	return h
}

func (k *keyer3) key(id [16]byte) (Key, error) {
	c, err := k.cipher(id)
	if err != nil {
		return nil, err
	}
	k.live.Add(1)
	return &key3{k: k, id: id, c: c}, nil
}

func (k *keyer3) Load(ctx context.Context, fd int, name func() string) (Key, error) {
	buf := make([]byte, k.hlen())
	n, err := PreadHead(fd, buf)
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return nil, nil
	case n < len(buf):
		return nil, fmt.Errorf("%s: header of %d bytes: %w", name(), n, ErrCorrupt)
	}
	var id [16]byte
	copy(id[:], buf[16:32])
	return k.key(id)
}

func (k *keyer3) New(ctx context.Context) ([]byte, Key, error) {
	k.news.Add(1)
	var id [16]byte
	rand.Read(id[:])
	key, err := k.key(id)
	return k.header(id), key, err
}

type key3 struct {
	k  *keyer3
	id [16]byte
	c  *blockcipher.Cipher
}

func (k *key3) FileID() [16]byte            { return k.id }
func (k *key3) Cipher() *blockcipher.Cipher { return k.c }
func (k *key3) Close()                      { k.k.live.Add(-1) }

// env3 is one version-3 backing file and its File.
type env3 struct {
	t     testing.TB
	path  string
	keyer *keyer3
	l     *blockcipher.Layout3
	f     *File
	// wasPaged is set once the file has been paged (it stays so).
	wasPaged bool
}

func newEnv3(t testing.TB, bs int, j *Journal, dir string) *env3 {
	l, err := blockcipher.NewLayout3(bs, 32+2*copySize3)
	if err != nil {
		t.Fatal(err)
	}
	e := &env3{t: t, path: filepath.Join(dir, "f"), keyer: &keyer3{bs: bs, secret: []byte("secret")}, l: &l}
	cfg := &Config{Layout: blockcipher.Layout{BlockSize: bs, DataOffset: header.Size}, Keys: e.keyer, Journal: j, V3: e.l}
	e.f = New(cfg, func() string { return "f" })
	fd, err := syscall.Open(e.path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	return e
}

func (e *env3) open() *Handle {
	e.t.Helper()
	fd, err := syscall.Open(e.path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	h, err := e.f.Open(context.Background(), fd)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { h.Close() })
	return h
}

// decode3 reads a whole version-3 backing file following docs/FORMAT.md
// only: no engine code. It returns the plaintext, and the blocks that are
// holes.
func decode3(l *blockcipher.Layout3, c *blockcipher.Cipher, b []byte) ([]byte, map[uint64]bool, error) {
	n := int64(len(b))
	if n == 0 {
		return nil, nil, nil
	}
	p, err := l.PlainSize(n)
	if err != nil {
		return nil, nil, err
	}
	if n < blockcipher.PageSize {
		if n == int64(l.HeaderLen) {
			return nil, nil, nil
		}
		plain, err := c.OpenInline(nil, b[l.HeaderLen:])
		return plain, nil, err
	}
	ok := false
	for r := range 2 {
		o := l.RecordOff(r)
		if s, valid := c.CheckSizeRecord(b[o : o+blockcipher.SizeRecordSize]); valid && int64(s) == p {
			ok = true
		}
	}
	if !ok {
		return nil, nil, errors.New("no size record names the size")
	}
	B := int64(l.BlockSize)
	out := make([]byte, p+blockcipher.TagSize)
	holes := map[uint64]bool{}
	for k := uint64(0); int64(k)*B < p; k++ {
		m := min(B, p-int64(k)*B)
		g, _ := l.Group(k)
		if g > 0 {
			mo := l.MetaOff(g)
			if c.IsGroupToken(b[mo:mo+blockcipher.EntrySize], g) {
				holes[k] = true
				continue
			}
		}
		e := b[l.EntryOff(k) : l.EntryOff(k)+blockcipher.EntrySize]
		if c.IsHoleEntry(e, k) {
			holes[k] = true
			continue
		}
		d := l.DataOff(k)
		copy(out[int64(k)*B:], b[d:d+m])
		if err := c.OpenData3(out[int64(k)*B:], int(m), k, e); err != nil {
			return nil, nil, err
		}
	}
	return out[:p], holes, nil
}

func (e *env3) check(h *Handle, m model) {
	e.t.Helper()
	if got, err := h.Size(); err != nil || got != int64(len(m)) {
		e.t.Fatalf("Size() = %d, %v; want %d", got, err, len(m))
	}
	got := make([]byte, len(m)+100)
	n, err := h.Read(got, 0)
	if err != nil || !bytes.Equal(got[:n], m) {
		e.t.Fatalf("Read = %d bytes, %v; want %d bytes (first difference at %d)", n, err, len(m), firstDiff(got[:n], m))
	}
	b, err := os.ReadFile(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	var id [16]byte
	if len(b) > 0 {
		copy(id[:], b[16:32])
	}
	c, _ := e.keyer.cipher(id)
	plain, _, err := decode3(e.l, c, b)
	if err != nil || !bytes.Equal(plain, m) {
		e.t.Fatalf("decoding the backing file (%d bytes) by the spec: %v (equal: %v)", len(b), err, bytes.Equal(plain, m))
	}
	if len(m) > 0 && len(m) <= int(e.l.InlineMax()) && len(b) >= blockcipher.PageSize && !e.wasPaged {
		e.t.Fatalf("a %d-byte file takes %d bytes, not inline", len(m), len(b))
	}
}

// TestV3Model runs random writes, truncations and fallocates against a
// model, for each block size, and checks the file after each by the engine
// and by decode3.
func TestV3Model(t *testing.T) {
	for _, bs := range []int{4096, 16384} {
		for seed := range uint64(6) {
			t.Run(fmt.Sprintf("bs%d/seed%d", bs, seed), func(t *testing.T) {
				e := newEnv3(t, bs, nil, t.TempDir())
				h := e.open()
				var m model
				r := mrand.New(mrand.NewPCG(seed, 3))
				maxOff := int64(bs) * 300
				for step := range 60 {
					var what string
					switch op := r.IntN(10); {
					case op < 5:
						var off int64
						switch r.IntN(3) {
						case 0:
							off = int64(len(m))
						case 1:
							off = r.Int64N(int64(len(m)) + 1)
						default:
							off = r.Int64N(maxOff)
						}
						n := 1 + r.IntN(3*bs)
						if r.IntN(4) == 0 {
							n = 1 + r.IntN(100)
						}
						p := make([]byte, n)
						for i := range p {
							p[i] = byte(r.IntN(255) + 1)
						}
						what = fmt.Sprintf("write %d at %d", n, off)
						if _, err := h.WriteAt(context.Background(), p, off); err != nil {
							t.Fatalf("step %d: %s: %v", step, what, err)
						}
						m.write(p, off)
					case op < 7:
						size := r.Int64N(maxOff)
						if r.IntN(3) == 0 {
							size = r.Int64N(int64(len(m)) + 1)
						}
						what = fmt.Sprintf("truncate %d", size)
						if err := h.Truncate(context.Background(), size); err != nil {
							t.Fatalf("step %d: %s: %v", step, what, err)
						}
						m.truncate(size)
					case op < 9:
						if len(m) == 0 {
							continue
						}
						off := r.Int64N(int64(len(m)))
						n := 1 + r.Int64N(int64(len(m))-off+int64(bs))
						mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
						if r.IntN(2) == 0 {
							mode = unix.FALLOC_FL_ZERO_RANGE
						}
						what = fmt.Sprintf("fallocate %#x %d at %d", mode, n, off)
						if err := h.Allocate(context.Background(), off, n, mode); err != nil {
							t.Fatalf("step %d: %s: %v", step, what, err)
						}
						end := min(off+n, int64(len(m)))
						if mode == unix.FALLOC_FL_ZERO_RANGE && off+n > int64(len(m)) {
							m.truncate(off + n)
							end = off + n
						}
						clear(m[off:end])
					default:
						// SEEK_HOLE and SEEK_DATA: what they report holds.
						if len(m) == 0 {
							continue
						}
						off := r.Int64N(int64(len(m)))
						hole, err := h.Seek(off, unix.SEEK_HOLE)
						if err != nil || hole < off || hole > int64(len(m)) {
							t.Fatalf("step %d: SEEK_HOLE from %d = %d, %v", step, off, hole, err)
						}
						if blockEnd := min((hole/int64(bs)+1)*int64(bs), int64(len(m))); hole < int64(len(m)) && !isZeroBytes(m[hole:blockEnd]) {
							t.Fatalf("step %d: SEEK_HOLE from %d = %d, not a zero block", step, off, hole)
						}
						data, err := h.Seek(off, unix.SEEK_DATA)
						if err == nil && (data < off || !isZeroBytes(m[off:data])) {
							t.Fatalf("step %d: SEEK_DATA from %d = %d over data", step, off, data)
						}
						continue
					}
					if int64(len(m)) > e.l.InlineMax() {
						e.wasPaged = true
					}
					if len(m) == 0 {
						e.wasPaged = false
					}
					e.check(h, m)
				}
			})
		}
	}
}

func isZeroBytes(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// TestV3WriteAcrossPartialEnd: a write that starts in a whole block and
// ends past a partial last block (found by the mount's exerciser: the
// part before the last block was lost).
func TestV3WriteAcrossPartialEnd(t *testing.T) {
	for _, tc := range []struct{ size, off, n int64 }{
		{18347, 14435, 4096}, // from block 3 into the partial block 4, which grows
		{18347, 14435, 9000}, // ... and on past its end
		{5000, 100, 4000},    // block 0 and the partial block 1
		{8195, 4000, 8200},   // blocks 0, 1 and past the end
	} {
		t.Run(fmt.Sprintf("%d-%d-%d", tc.size, tc.off, tc.n), func(t *testing.T) {
			e := newEnv3(t, 4096, nil, t.TempDir())
			h := e.open()
			m := model(bytes.Repeat([]byte{'a'}, int(tc.size)))
			if _, err := h.WriteAt(context.Background(), m, 0); err != nil {
				t.Fatal(err)
			}
			p := bytes.Repeat([]byte{'b'}, int(tc.n))
			if _, err := h.WriteAt(context.Background(), p, tc.off); err != nil {
				t.Fatal(err)
			}
			m.write(p, tc.off)
			e.wasPaged = true
			e.check(h, m)
		})
	}
}

// TestV3LargeAppends: appends of at least pipeMin at a block boundary go
// through appendPipelined3 (sealed in steps, written as sealed): from
// the middle of group 0, across groups, into a group that is a hole, and
// with a partial last block; and through the journal, whose record is
// cleared once the append is done.
func TestV3LargeAppends(t *testing.T) {
	for _, bs := range []int{4096, 65536} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			dir := t.TempDir()
			j := openTestJournal(t, dir, JournalDataSize(blockcipher.Layout{BlockSize: bs, DataOffset: header.Size}), nil)
			e := newEnv3(t, bs, nil, dir)
			e.f.cfg.Journal = j
			e.f.cfg.Keys = e.keyer
			h := e.open()
			r := mrand.New(mrand.NewPCG(5, uint64(bs)))
			var m model
			write := func(n int, off int64) {
				t.Helper()
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(r.IntN(256))
				}
				if _, err := h.WriteAt(context.Background(), p, off); err != nil {
					t.Fatalf("write %d at %d: %v", n, off, err)
				}
				m.write(p, off)
				e.wasPaged = true
				e.check(h, m)
			}
			write(3*bs, 0)
			write(1<<20, int64(3*bs))        // from block 3, across groups
			write(300<<10+77, int64(len(m))) // a partial last block
			write(5, int64(len(m)))          // extends it
			// Holes to the end, a hole group among them.
			if err := h.Truncate(context.Background(), int64(len(m))+int64(200*bs)); err != nil {
				t.Fatal(err)
			}
			m.truncate(int64(len(m)) + int64(200*bs))
			e.check(h, m)
			write(1<<20, int64(len(m))) // after the holes
			if j.anyRecord() {
				t.Fatal("a journal record is left after the appends")
			}
		})
	}
}

// TestV3SparseIsSparse: a file grown by a terabyte-scale truncate stays
// small on disk and reads zeros.
func TestV3SparseIsSparse(t *testing.T) {
	e := newEnv3(t, 4096, nil, t.TempDir())
	h := e.open()
	const size = 8 << 30
	if err := h.Truncate(context.Background(), size); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(context.Background(), []byte("end"), size-3); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(e.path, &st); err != nil {
		t.Fatal(err)
	}
	// One metadata page per 128 blocks of hole: 8 GiB / 512 KiB pages.
	if used := st.Blocks * 512; used > size/100 {
		t.Fatalf("an 8 GiB sparse file uses %d bytes of disk", used)
	}
	buf := make([]byte, 1<<20)
	if n, err := h.Read(buf, 5<<30); err != nil || n != len(buf) || !isZeroBytes(buf) {
		t.Fatalf("reading the hole: %d, %v", n, err)
	}
	if d, err := h.Seek(0, unix.SEEK_DATA); err != nil || d != size-4096 {
		t.Fatalf("SEEK_DATA = %d, %v; want %d", d, err, size-4096)
	}
}

// TestV3Tampering: every whole-file change by someone holding the
// storage is detected.
func TestV3Tampering(t *testing.T) {
	const bs = 4096
	type tamper struct {
		name string
		do   func(e *env3, b []byte) []byte
	}
	l, _ := blockcipher.NewLayout3(bs, 32+2*copySize3)
	size := int64(300 * bs) // three groups
	for _, tc := range []tamper{
		{"cut at a block boundary", func(e *env3, b []byte) []byte { return b[:l.PagedSize(size-bs)] }},
		{"cut two groups", func(e *env3, b []byte) []byte { return b[:l.PagedSize(100*bs)] }},
		{"append zero blocks", func(e *env3, b []byte) []byte { return append(b, make([]byte, 2*bs)...) }},
		{"zero a block", func(e *env3, b []byte) []byte { clear(b[l.DataOff(150) : l.DataOff(150)+bs]); return b }},
		{"zero a block and its entry", func(e *env3, b []byte) []byte {
			clear(b[l.DataOff(150) : l.DataOff(150)+bs])
			clear(b[l.EntryOff(150) : l.EntryOff(150)+blockcipher.EntrySize])
			return b
		}},
		{"zero a metadata page", func(e *env3, b []byte) []byte { clear(b[l.MetaOff(1) : l.MetaOff(1)+4096]); return b }},
		{"zero a metadata page and its blocks", func(e *env3, b []byte) []byte {
			clear(b[l.MetaOff(1):l.DataOff(l.GroupFirst(2))])
			return b
		}},
		{"swap two blocks", func(e *env3, b []byte) []byte {
			x, y := l.DataOff(3), l.DataOff(4)
			t := bytes.Clone(b[x : x+bs])
			copy(b[x:], b[y:y+bs])
			copy(b[y:], t)
			return b
		}},
		{"zero the size records", func(e *env3, b []byte) []byte {
			clear(b[l.RecordOff(0) : l.RecordOff(1)+blockcipher.SizeRecordSize])
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv3(t, bs, nil, t.TempDir())
			h := e.open()
			p := bytes.Repeat([]byte{'x'}, int(size))
			if _, err := h.WriteAt(context.Background(), p, 0); err != nil {
				t.Fatal(err)
			}
			h.Close()
			b, _ := os.ReadFile(e.path)
			if err := os.WriteFile(e.path, tc.do(e, b), 0o644); err != nil {
				t.Fatal(err)
			}
			e2 := newEnv3(t, bs, nil, filepath.Dir(e.path))
			h2 := e2.open()
			n, _ := h2.Size()
			buf := make([]byte, n)
			var rerr error
			for off := int64(0); off < n && rerr == nil; off += 1 << 16 {
				_, rerr = h2.Read(buf[off:min(off+1<<16, n)], off)
			}
			if !errors.Is(rerr, ErrCorrupt) {
				t.Fatalf("reading the whole file: %v, want ErrCorrupt", rerr)
			}
			t.Logf("%v", rerr)
		})
	}
}
