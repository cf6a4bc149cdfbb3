package blockcipher

import (
	"bytes"
	"errors"
	"testing"
)

// The worked sizes of docs/FORMAT.md "Layout and sizes (version 3)".
func TestLayout3Sizes(t *testing.T) {
	l, err := NewLayout3(4096, 32+2*1024)
	if err != nil {
		t.Fatal(err)
	}
	if l.G0 != 69 || l.InlineMax() != 1987 {
		t.Fatalf("G0 = %d, InlineMax = %d; want 69, 1987", l.G0, l.InlineMax())
	}
	for _, tc := range []struct {
		plain, cipher int64
		inline        bool
	}{
		{0, 2080, true},
		{300, 2408, true},
		{1987, 4095, true},
		{1988, 6084, false},
		{4096, 8192, false},
		{69 * 4096, 70 * 4096, false},
		{69*4096 + 1, 71*4096 + 1, false},
		{1 << 20, 1060864, false},
		{(69 + 128) * 4096, (1 + 69 + 1 + 128) * 4096, false},
		{(69+128)*4096 + 5, (1+69+1+128+1)*4096 + 5, false},
	} {
		var c int64
		if tc.inline {
			c = l.InlineSize(tc.plain)
		} else {
			c = l.PagedSize(tc.plain)
		}
		if c != tc.cipher {
			t.Errorf("size of %d plaintext bytes = %d, want %d", tc.plain, c, tc.cipher)
		}
		p, err := l.PlainSize(tc.cipher)
		if err != nil || p != tc.plain {
			t.Errorf("PlainSize(%d) = %d, %v; want %d", tc.cipher, p, err, tc.plain)
		}
	}
	for _, c := range []int64{1, 2079, 2081, 2108, 4096, (1+69)*4096 + 1, (1+69)*4096 + 4096} {
		if _, err := l.PlainSize(c); !errors.Is(err, ErrBadCipherSize) {
			t.Errorf("PlainSize(%d): err = %v, want ErrBadCipherSize", c, err)
		}
	}
}

func TestLayout3Offsets(t *testing.T) {
	l, err := NewLayout3(8192, 32+2*512)
	if err != nil {
		t.Fatal(err)
	}
	// Every block's data is page aligned, and no two blocks, entries or
	// metadata pages overlap.
	type span struct{ lo, hi int64 }
	var spans []span
	for n := uint64(0); n < uint64(l.G0)+3*GroupBlocks; n++ {
		d := l.DataOff(n)
		if d%PageSize != 0 {
			t.Fatalf("block %d at %d, not page aligned", n, d)
		}
		spans = append(spans, span{d, d + int64(l.BlockSize)}, span{l.EntryOff(n), l.EntryOff(n) + EntrySize})
		g, i := l.Group(n)
		if l.GroupFirst(g)+uint64(i) != n {
			t.Fatalf("block %d: group %d index %d", n, g, i)
		}
		if g > 0 && i == 0 {
			spans = append(spans, span{l.MetaOff(g), l.MetaOff(g) + EntrySize})
		}
	}
	spans = append(spans, span{0, int64(l.HeaderLen)}, span{l.RecordOff(0), l.RecordOff(1) + SizeRecordSize})
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			if a.lo < b.hi && b.lo < a.hi {
				t.Fatalf("%v overlaps %v", a, b)
			}
		}
	}
	if end := l.EntryOff(uint64(l.G0)-1) + EntrySize; end > PageSize {
		t.Fatalf("group 0 entries end at %d", end)
	}
	if end := l.EntryOff(uint64(l.G0)+GroupBlocks-1) + EntrySize - l.MetaOff(1); end > PageSize {
		t.Fatalf("group 1 entries end at %d of their page", end)
	}
}

func TestV3Tokens(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeySize)
	c, err := New3(key, [FileIDSize]byte{1}, 4096)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := New3(key, [FileIDSize]byte{2}, 4096)
	h := c.HoleEntry(5)
	if !c.IsHoleEntry(h[:], 5) || c.IsHoleEntry(h[:], 6) || other.IsHoleEntry(h[:], 5) || c.IsGroupToken(h[:], 5) {
		t.Fatal("hole entry not bound to its block, file and kind")
	}
	g := c.GroupToken(3)
	if !c.IsGroupToken(g[:], 3) || c.IsGroupToken(g[:], 4) || c.IsHoleEntry(g[:], 3) {
		t.Fatal("group token not bound")
	}
	r := c.SizeRecord(12345)
	if s, ok := c.CheckSizeRecord(r[:]); !ok || s != 12345 {
		t.Fatal("size record does not check")
	}
	r[7] ^= 1
	if _, ok := c.CheckSizeRecord(r[:]); ok {
		t.Fatal("size record with another size checks")
	}
	if ZeroEntry(h[:]) || !ZeroEntry(make([]byte, EntrySize)) {
		t.Fatal("ZeroEntry")
	}

	plain := bytes.Repeat([]byte("abcdefgh"), 512)
	buf := make([]byte, 2*4096+TagSize)
	copy(buf[4096:], "next block")
	var e [EntrySize]byte
	c.SealData3(buf[:4096], plain, 9, e[:])
	if bytes.Equal(buf[:4096], plain) {
		t.Fatal("not encrypted")
	}
	buf2 := bytes.Clone(buf)
	copy(buf2[4096:], "next block") // Seal used it as scratch
	if err := c.OpenData3(buf2, 4096, 9, e[:]); err != nil || !bytes.Equal(buf2[:4096], plain) || string(buf2[4096:4106]) != "next block" {
		t.Fatalf("OpenData3: %v", err)
	}
	copy(buf[4096:], "next block")
	if err := c.OpenData3(buf, 4096, 10, e[:]); err == nil {
		t.Fatal("block opened under another number")
	}

	in := c.SealInline(nil, []byte("small"))
	if p, err := c.OpenInline(nil, in); err != nil || string(p) != "small" {
		t.Fatalf("OpenInline: %q %v", p, err)
	}
	if _, err := c.OpenInline(nil, in[:len(in)-1]); err == nil {
		t.Fatal("cut inline content opened")
	}
}

// A version-3 Cipher seals and opens version-1 stored blocks too (the
// journal's records).
func TestNew3StoredBlocks(t *testing.T) {
	c, err := New3(bytes.Repeat([]byte{9}, KeySize), [FileIDSize]byte{3}, 4096)
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte{1, 2, 3}, 3000)
	st := c.SealBlocks(nil, plain, 4)
	if len(st) != len(plain)+3*Overhead {
		t.Fatalf("%d stored bytes", len(st))
	}
	got, err := c.OpenBlocks(nil, st, 4)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("OpenBlocks: %v", err)
	}
	if _, err := c.OpenBlocks(nil, st, 5); err == nil {
		t.Fatal("opened under other block numbers")
	}
	b := c.SealBlock(nil, []byte("record"), 2)
	if p, err := c.OpenBlock(nil, b, 2); err != nil || string(p) != "record" {
		t.Fatalf("OpenBlock: %q %v", p, err)
	}
}
