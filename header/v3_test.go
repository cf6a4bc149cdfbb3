package header

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// testHeaderV3 returns a fresh version-3 header with copies of c bytes.
func testHeaderV3(t testing.TB, c int) []byte {
	t.Helper()
	b, err := NewV3(12, c, testFileID, testSlots, testKey)
	if err != nil {
		t.Fatalf("NewV3(copy size %d) error = %v", c, err)
	}
	return b
}

// specMAC computes a copy's MAC as docs/FORMAT.md says, independently of
// the package: HMAC(MK, preamble || copy[0:len(copy)-32]).
func specMAC(t *testing.T, pre, cp []byte) []byte {
	t.Helper()
	mk, err := hkdf.Key(sha256.New, testKey, testFileID[:], "kmsfs v1 header mac", 32)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, mk)
	m.Write(pre)
	m.Write(cp[:len(cp)-32])
	return m.Sum(nil)
}

func TestV3RoundTrip(t *testing.T) {
	for _, c := range []int{MinCopySize, 1024, MaxCopySize3} {
		t.Run(fmt.Sprint(c), func(t *testing.T) {
			b := testHeaderV3(t, c)
			hl := PreambleSize + 2*c
			if len(b) != hl {
				t.Fatalf("len(NewV3()) = %d, want %d", len(b), hl)
			}
			if got := binary.BigEndian.Uint16(b[6:]); got != 3 {
				t.Errorf("version field = %d, want 3", got)
			}
			if got := binary.BigEndian.Uint16(b[9:]); int(got) != c {
				t.Errorf("copy size field = %d, want %d", got, c)
			}
			if !isZero(b[11:16]) {
				t.Errorf("reserved bytes 11..15 = %x, want zero", b[11:16])
			}
			h, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse(NewV3()) error = %v", err)
			}
			want := Preamble{Version: Version3, BlockShift: 12, CopySize: uint16(c), FileID: testFileID}
			if h.Preamble != want {
				t.Errorf("Parse().Preamble = %+v, want %+v", h.Preamble, want)
			}
			p := h.Preamble
			if p.CopyLen() != c || p.HeaderLen() != hl || p.CopyOffset(0) != 32 || p.CopyOffset(1) != int64(32+c) || p.MACOffset() != c-32 {
				t.Errorf("CopyLen, HeaderLen, CopyOffset(0), CopyOffset(1), MACOffset = %d, %d, %d, %d, %d, want %d, %d, 32, %d, %d",
					p.CopyLen(), p.HeaderLen(), p.CopyOffset(0), p.CopyOffset(1), p.MACOffset(), c, hl, 32+c, c-32)
			}
			for i, cp := range h.Copies {
				if cp == nil || h.CopyErrs[i] != nil {
					t.Fatalf("Parse() copy %d = %v, %v, want a copy", i, cp, h.CopyErrs[i])
				}
				if cp.Seq != 1 || len(cp.Slots) != len(testSlots) {
					t.Errorf("copy %d: Seq, len(Slots) = %d, %d, want 1, %d", i, cp.Seq, len(cp.Slots), len(testSlots))
				}
				if err := VerifyCopy(p, cp, testKey); err != nil {
					t.Errorf("VerifyCopy(copy %d) error = %v", i, err)
				}
				raw := b[p.CopyOffset(i) : p.CopyOffset(i)+int64(c)]
				if m := specMAC(t, b[:PreambleSize], raw); !bytes.Equal(m, raw[c-32:]) || !bytes.Equal(m, cp.MAC[:]) {
					t.Errorf("copy %d: MAC at %d = %x, parsed %x, want HMAC(MK, preamble || copy[0:%d]) = %x", i, c-32, raw[c-32:], cp.MAC, c-32, m)
				}
			}
			if got, err := h.Accept(testKey); got != 0 || err != nil {
				t.Errorf("Accept() = %d, %v, want 0, nil", got, err)
			}
			if _, err := h.Accept(otherKey); !errors.Is(err, ErrWrongKey) {
				t.Errorf("Accept(other key) error = %v, want ErrWrongKey", err)
			}
			out, err := h.Marshal()
			if err != nil || !bytes.Equal(out, b) {
				t.Errorf("Marshal(Parse(b)) = %v, differs from b: %v", err, !bytes.Equal(out, b))
			}
			// A rewritten copy (what rewrap does) stays valid.
			idx, seq := h.NextCopy(0)
			next := &Copy{Seq: seq, Slots: testSlots[:1]}
			if err := SealCopy(p, next, testKey); err != nil {
				t.Fatal(err)
			}
			cb := make([]byte, p.CopyLen())
			if err := next.MarshalTo(cb); err != nil {
				t.Fatal(err)
			}
			copy(b[p.CopyOffset(idx):], cb)
			h2, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := h2.Accept(testKey); got != 1 || err != nil || len(h2.Copies[1].Slots) != 1 {
				t.Errorf("Accept(after rewriting copy 1) = %d, %v, want 1 with one slot", got, err)
			}
		})
	}
}

func TestV1Layout(t *testing.T) {
	h, err := Parse(testHeader(t))
	if err != nil {
		t.Fatal(err)
	}
	p := h.Preamble
	if p.CopySize != 0 || p.CopyLen() != CopySize || p.HeaderLen() != Size || p.MACOffset() != MACOffset {
		t.Errorf("v1 CopySize, CopyLen, HeaderLen, MACOffset = %d, %d, %d, %d, want 0, %d, %d, %d", p.CopySize, p.CopyLen(), p.HeaderLen(), p.MACOffset(), CopySize, Size, MACOffset)
	}
	for i := range 2 {
		if p.CopyOffset(i) != CopyOffset(i) {
			t.Errorf("v1 Preamble.CopyOffset(%d) = %d, want %d", i, p.CopyOffset(i), CopyOffset(i))
		}
	}
	// A copy size in a version-1 preamble is not part of its encoding.
	p.CopySize = 1024
	if got, want := p.Marshal(), h.Preamble.Marshal(); got != want {
		t.Errorf("v1 Marshal() with CopySize set = %x, want %x", got, want)
	}
	if MaxLen < PreambleSize+2*MaxCopySize3 || MaxLen != Size {
		t.Errorf("MaxLen = %d, want %d, at least the largest v3 header %d", MaxLen, Size, PreambleSize+2*MaxCopySize3)
	}
}

func TestV3ParsePreambleRejects(t *testing.T) {
	good := testHeaderV3(t, 1024)[:PreambleSize]
	mod := func(f func(b []byte)) []byte { b := bytes.Clone(good); f(b); return b }
	size := func(c uint16) []byte { return mod(func(b []byte) { binary.BigEndian.PutUint16(b[9:], c) }) }
	tests := []struct {
		name   string
		b      []byte
		field  string
		offset int
	}{
		{"copy size 0", size(0), "copy size", 9},
		{"copy size 496", size(496), "copy size", 9},
		{"copy size 1552", size(1552), "copy size", 9},
		{"copy size 2032", size(2032), "copy size", 9},
		{"copy size 520", size(520), "copy size", 9},
		{"copy size 1025", size(1025), "copy size", 9},
		{"copy size 0xffff", size(0xffff), "copy size", 9},
		{"reserved 11", mod(func(b []byte) { b[11] = 1 }), "reserved", 11},
		{"reserved 15", mod(func(b []byte) { b[15] = 0x80 }), "reserved", 15},
		{"version 2", mod(func(b []byte) { b[7] = 2 }), "version", 6},
		{"version 4", mod(func(b []byte) { b[7] = 4 }), "version", 6},
		{"version 0x0103", mod(func(b []byte) { b[6] = 1 }), "version", 6},
		{"block shift 21", mod(func(b []byte) { b[8] = 21 }), "block shift", 8},
		// The same bytes with version 1 are non-zero reserved bytes.
		{"version 1 with a copy size", mod(func(b []byte) { b[7] = 1 }), "reserved", 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePreamble(tt.b)
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Field != tt.field || pe.Offset != tt.offset {
				t.Errorf("ParsePreamble() error = %v, want *ParseError for %s at %d", err, tt.field, tt.offset)
			}
			full := append(bytes.Clone(tt.b), make([]byte, Size-len(tt.b))...)
			if _, err := Parse(full); !errors.As(err, &pe) {
				t.Errorf("Parse() error = %v, want *ParseError", err)
			}
		})
	}
	// Every valid copy size parses.
	for c := MinCopySize; c <= MaxCopySize3; c += CopySizeAlign {
		if p, err := ParsePreamble(size(uint16(c))); err != nil || p.CopyLen() != c || p.HeaderLen() != 32+2*c {
			t.Errorf("ParsePreamble(copy size %d) = %+v, %v", c, p, err)
		}
	}
}

func TestV3ParseLength(t *testing.T) {
	for _, c := range []int{MinCopySize, 1024, MaxCopySize3} {
		b := testHeaderV3(t, c)
		hl := len(b)
		for _, n := range []int{PreambleSize, PreambleSize + c, hl - 1} {
			var pe *ParseError
			if _, err := Parse(b[:n]); !errors.As(err, &pe) || pe.Field != "header length" || !errors.Is(err, ErrShort) {
				t.Errorf("C=%d: Parse(%d bytes) error = %v, want *ParseError for header length, ErrShort", c, n, err)
			}
		}
		if _, err := ParseCopy(b[PreambleSize : PreambleSize+c-1]); err == nil {
			t.Errorf("ParseCopy(%d bytes) error = nil, want error", c-1)
		}
	}
	for _, n := range []int{0, 16, 496, 520, 1552, 2048, 4096} {
		if _, err := ParseCopy(make([]byte, n)); err == nil {
			t.Errorf("ParseCopy(%d zero bytes) error = nil, want error", n)
		}
		c := &Copy{Seq: 1, Slots: []Slot{{URI: "u", Wrapped: []byte{1}}}}
		if err := c.MarshalTo(make([]byte, n)); err == nil {
			t.Errorf("MarshalTo(%d bytes) error = nil, want error", n)
		}
	}
}

// TestV3BytesAfterHeader checks that what follows the header (a version-3
// file's inline data or metadata) is ignored by Parse and never written.
func TestV3BytesAfterHeader(t *testing.T) {
	for _, c := range []int{MinCopySize, 1024, MaxCopySize3} {
		b := testHeaderV3(t, c)
		hl := len(b)
		file := append(bytes.Clone(b), bytes.Repeat([]byte{0xa5}, Size-hl)...)
		h, err := Parse(file)
		if err != nil || h.CopyErrs != [2]error{} || h.Copies[0] == nil || h.Copies[1] == nil {
			t.Fatalf("C=%d: Parse(header + content) = %+v, %v, want both copies", c, h, err)
		}
		if _, err := h.Accept(testKey); err != nil {
			t.Errorf("C=%d: Accept() = %v", c, err)
		}
		out, err := h.Marshal()
		if err != nil || len(out) != hl || !bytes.Equal(out, b) {
			t.Errorf("C=%d: Marshal() = %d bytes, %v, want the %d-byte header", c, len(out), err, hl)
		}
		// Content that would be a damaged copy, were it read as one,
		// changes nothing.
		for i := hl; i < len(file); i++ {
			file[i] = byte(i)
		}
		if h2, err := Parse(file); err != nil || h2.CopyErrs != [2]error{} {
			t.Errorf("C=%d: Parse(header + other content) = %+v, %v", c, h2, err)
		}
		// Rewriting copy 1 in place writes its C bytes and nothing after.
		before := bytes.Clone(file)
		off := h.Preamble.CopyOffset(1)
		if err := h.Copies[0].MarshalTo(file[off : off+int64(h.Preamble.CopyLen())]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(file[hl:], before[hl:]) {
			t.Errorf("C=%d: MarshalTo(copy 1) changed bytes at or after H = %d", c, hl)
		}
	}
}

func TestNewV3Rejects(t *testing.T) {
	tests := []struct {
		name  string
		shift uint8
		c     int
		slots []Slot
		key   []byte
	}{
		{"copy size 496", 12, 496, testSlots, testKey},
		{"copy size 1552", 12, 1552, testSlots, testKey},
		{"copy size 2032", 12, 2032, testSlots, testKey},
		{"copy size 1032", 12, 1032, testSlots, testKey},
		{"copy size 0", 12, 0, testSlots, testKey},
		{"copy size 66048", 12, 66048, testSlots, testKey},
		{"shift 11", 11, 1024, testSlots, testKey},
		{"shift 21", 21, 1024, testSlots, testKey},
		{"no slots", 12, 1024, nil, testKey},
		{"short key", 12, 1024, testSlots, testKey[:16]},
		{"duplicate uri", 12, 1024, []Slot{testSlots[0], testSlots[0]}, testKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := NewV3(tt.shift, tt.c, testFileID, tt.slots, tt.key); err == nil {
				t.Errorf("NewV3() = %d bytes, want error", len(b))
			}
		})
	}
}

// slotOfSize returns a slot that takes n bytes in a copy.
func slotOfSize(uri string, n int) Slot {
	return Slot{URI: uri, Context: []byte{}, Wrapped: bytes.Repeat([]byte{0x5a}, n-6-len(uri))}
}

func TestSlotsDoNotFit(t *testing.T) {
	// Slots that need exactly 1024 bytes: 9 + slot + 32 + 32.
	exact := []Slot{slotOfSize("u", 1024-9-32-32)}
	over := []Slot{slotOfSize("u", 1024-9-32-32+1)}
	rsa4096 := Slot{URI: "tencent-kms+rsa://ap-guangzhou/11111111-2222-3333-4444-555555555555", Context: testSlots[0].Context, Wrapped: make([]byte, 512)}
	rsa4096b := rsa4096
	rsa4096b.URI += "x"
	// need is docs/FORMAT.md's arithmetic: sequence, count, slots,
	// commitment, MAC, rounded up to 16, at least 512.
	need := func(slots ...Slot) int {
		n := 8 + 1 + 32 + 32
		for _, s := range slots {
			n += 2 + len(s.URI) + 2 + len(s.Context) + 2 + len(s.Wrapped)
		}
		return max(512, (n+15)/16*16)
	}
	tests := []struct {
		name  string
		slots []Slot
		need  int
	}{
		{"one small slot", []Slot{{URI: "u", Wrapped: []byte{1}}}, MinCopySize},
		{"test slots", testSlots, MinCopySize},
		{"exactly 1024", exact, 1024},
		{"one byte over 1024", over, 1040},
		{"rsa-4096 slot", []Slot{rsa4096}, need(rsa4096)},
		{"two rsa-4096 slots", []Slot{rsa4096, rsa4096b}, need(rsa4096, rsa4096b)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CopyNeeded(tt.slots)
			if got != tt.need {
				t.Fatalf("CopyNeeded() = %d, want %d", got, tt.need)
			}
			if b, err := NewV3(12, got, testFileID, tt.slots, testKey); err != nil || len(b) != 32+2*got {
				t.Errorf("NewV3(copy size CopyNeeded() = %d) = %d bytes, %v, want a header", got, len(b), err)
			} else if h, err := Parse(b); err != nil || h.CopyErrs != [2]error{} {
				t.Errorf("Parse(NewV3()) = %v, %v", err, h.CopyErrs)
			}
			if got == MinCopySize {
				return
			}
			_, err := NewV3(12, got-CopySizeAlign, testFileID, tt.slots, testKey)
			if !errors.Is(err, ErrSlotsDoNotFit) {
				t.Fatalf("NewV3(copy size %d) error = %v, want ErrSlotsDoNotFit", got-CopySizeAlign, err)
			}
			room := got - CopySizeAlign - 32
			if msg := err.Error(); !strings.Contains(msg, fmt.Sprint(room)) || !strings.Contains(msg, fmt.Sprint(got)) {
				t.Errorf("NewV3() error = %q, want it to say the copy holds %d and a copy of %d would do", msg, room, got)
			}
		})
	}
	// Past the largest copy: NewV3 says so, MarshalTo too.
	big := []Slot{rsa4096, rsa4096b, {URI: "z", Context: []byte{}, Wrapped: make([]byte, 512)}}
	if n := CopyNeeded(big); n <= MaxCopySize3 {
		t.Fatalf("CopyNeeded(3 rsa-4096 slots) = %d, want > %d", n, MaxCopySize3)
	}
	if _, err := NewV3(12, MaxCopySize3, testFileID, big, testKey); !errors.Is(err, ErrSlotsDoNotFit) {
		t.Errorf("NewV3(3 rsa-4096 slots) error = %v, want ErrSlotsDoNotFit", err)
	}
	c := &Copy{Seq: 1, Slots: over}
	if err := c.MarshalTo(make([]byte, 1024)); !errors.Is(err, ErrSlotsDoNotFit) {
		t.Errorf("MarshalTo(1024 bytes, slots of 1025) error = %v, want ErrSlotsDoNotFit", err)
	}
	// Version 1 reports it the same way.
	huge := []Slot{slotOfSize("u", MACOffset)}
	if _, err := New(12, testFileID, huge, testKey); !errors.Is(err, ErrSlotsDoNotFit) {
		t.Errorf("New(slots past MACOffset) error = %v, want ErrSlotsDoNotFit", err)
	}
}

// TestV3CopyFillsExactly checks the boundary in parsing: slots and
// commitment ending exactly at C - 32 parse; one byte more does not.
func TestV3CopyFillsExactly(t *testing.T) {
	for _, c := range []int{MinCopySize, 1024, MaxCopySize3} {
		slot := slotOfSize("u", c-9-32-32)
		b := make([]byte, c)
		cp := &Copy{Seq: 3, Slots: []Slot{slot}}
		for i := range cp.Commitment {
			cp.Commitment[i] = 0xcc
			cp.MAC[i] = 0xdd
		}
		if err := cp.MarshalTo(b); err != nil {
			t.Fatalf("C=%d: MarshalTo(full copy) error = %v", c, err)
		}
		got, err := ParseCopy(b)
		if err != nil || got.Commitment != cp.Commitment || got.MAC != cp.MAC || !bytes.Equal(b[c-32:], cp.MAC[:]) || !bytes.Equal(b[c-64:c-32], cp.Commitment[:]) {
			t.Errorf("C=%d: ParseCopy(full copy) = %+v, %v", c, got, err)
		}
		// One byte longer wrapped key, length field and all: the
		// commitment would run into the MAC.
		binary.BigEndian.PutUint16(b[9+2+1+2:], uint16(len(slot.Wrapped)+1))
		var pe *ParseError
		if _, err := ParseCopy(b); !errors.As(err, &pe) || pe.Field != "slot 0 wrapped key" {
			t.Errorf("C=%d: ParseCopy(slots past C-64) error = %v, want slot 0 wrapped key", c, err)
		}
		// Non-zero padding in the last byte before the MAC.
		small := make([]byte, c)
		cp.Slots = testSlots
		if err := cp.MarshalTo(small); err != nil {
			t.Fatal(err)
		}
		small[c-33] = 1
		if _, err := ParseCopy(small); !errors.As(err, &pe) || pe.Field != "padding" || pe.Offset != c-33 {
			t.Errorf("C=%d: ParseCopy(padding byte %d set) error = %v, want padding at %d", c, c-33, err, c-33)
		}
	}
}

// TestV3VerifyDetectsEveryBit flips every bit of the preamble and copy 0 of
// a version-3 header and checks that copy 0 no longer parses, no longer
// verifies, or the header no longer parses.
func TestV3VerifyDetectsEveryBit(t *testing.T) {
	for _, c := range []int{MinCopySize, 1024} {
		orig := testHeaderV3(t, c)
		cands := 0
		for i := 0; i < PreambleSize+c; i++ {
			for bit := range 8 {
				b := bytes.Clone(orig)
				b[i] ^= 1 << bit
				h, err := Parse(b)
				if err != nil {
					continue // preamble no longer parses (or header too short)
				}
				cp := h.Copies[0]
				if cp == nil {
					continue // copy 0 damaged
				}
				cands++
				err = VerifyCopy(h.Preamble, cp, testKey)
				if err == nil {
					t.Fatalf("C=%d: VerifyCopy() with bit %d of byte %d flipped = nil, want error", c, bit, i)
				}
				inFileID := i >= 16 && i < PreambleSize
				if !inFileID && !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrTampered) {
					t.Fatalf("C=%d: VerifyCopy() with byte %d flipped = %v, want ErrWrongKey or ErrTampered", c, i, err)
				}
				if i >= PreambleSize+c-32 && !errors.Is(err, ErrTampered) {
					t.Fatalf("C=%d: VerifyCopy() with MAC byte %d flipped = %v, want ErrTampered", c, i, err)
				}
			}
		}
		if cands < 2000 {
			t.Errorf("C=%d: only %d flips parsed, want many", c, cands)
		}
	}
}

// TestV3CopySizeIsAuthenticated checks that the copy size in the preamble
// is covered by the MAC: the same copies laid out for another C, with the
// preamble saying so, parse but do not verify.
func TestV3CopySizeIsAuthenticated(t *testing.T) {
	b := testHeaderV3(t, 1024)
	h, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []int{1008, 1040, MinCopySize, MaxCopySize3} {
		p := h.Preamble
		p.CopySize = uint16(c)
		if err := VerifyCopy(p, h.Copies[0], testKey); !errors.Is(err, ErrTampered) {
			t.Errorf("VerifyCopy(copy size %d in the preamble) = %v, want ErrTampered", c, err)
		}
		// The bytes of such a file: the preamble's C field changed, each
		// copy's slots where they were, its MAC moved to the new C - 32.
		moved := make([]byte, 32+2*c)
		copy(moved, b[:PreambleSize])
		binary.BigEndian.PutUint16(moved[9:], uint16(c))
		for i := range 2 {
			from, to := b[32+i*1024:32+(i+1)*1024], moved[32+i*c:32+(i+1)*c]
			copy(to[:c-32], from[:min(c, 1024)-32])
			copy(to[c-32:], from[1024-32:])
		}
		h2, err := Parse(moved)
		if err != nil || h2.Copies[0] == nil || h2.Copies[1] == nil {
			t.Fatalf("Parse(copies moved to C=%d) = %+v, %v, want both copies parsed", c, h2, err)
		}
		if _, err := h2.Accept(testKey); !errors.Is(err, ErrNoValidCopy) || errors.Is(err, ErrWrongKey) {
			t.Errorf("Accept(copies moved to C=%d) = %v, want ErrNoValidCopy, not ErrWrongKey", c, err)
		}
		for i, cp := range h2.Copies {
			if err := VerifyCopy(h2.Preamble, cp, testKey); !errors.Is(err, ErrTampered) {
				t.Errorf("VerifyCopy(copy %d moved to C=%d) = %v, want ErrTampered", i, c, err)
			}
		}
	}
	// A preamble that claims no valid copy size cannot seal or verify.
	bad := h.Preamble
	bad.CopySize = 100
	if err := VerifyCopy(bad, h.Copies[0], testKey); err == nil || errors.Is(err, ErrTampered) || errors.Is(err, ErrWrongKey) {
		t.Errorf("VerifyCopy(copy size 100) = %v, want a copy size error", err)
	}
	if err := SealCopy(bad, &Copy{Seq: 1, Slots: testSlots}, testKey); err == nil {
		t.Errorf("SealCopy(copy size 100) error = nil, want error")
	}
	if _, err := (&Header{Preamble: bad}).Marshal(); err == nil {
		t.Errorf("Header.Marshal(copy size 100) error = nil, want error")
	}
	// 2032 is a version-1 copy size, not a version-3 one.
	bad.CopySize = CopySize
	if err := VerifyCopy(bad, h.Copies[0], testKey); err == nil || errors.Is(err, ErrTampered) || errors.Is(err, ErrWrongKey) {
		t.Errorf("VerifyCopy(version 3, copy size %d) = %v, want a copy size error", CopySize, err)
	}
}

// TestV3Accept checks Accept on version-3 headers with one copy damaged,
// as TestAccept does for version 1.
func TestV3Accept(t *testing.T) {
	orig := testHeaderV3(t, 1024)
	p, err := ParsePreamble(orig)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(i int) int { return int(p.CopyOffset(i)) + p.MACOffset() }
	mod := func(f func(b []byte)) []byte { b := bytes.Clone(orig); f(b); return b }
	tests := []struct {
		name string
		b    []byte
		want int
	}{
		{"both good", orig, 0},
		{"copy 0 mac bad", mod(func(b []byte) { b[mac(0)] ^= 1 }), 1},
		{"copy 0 padding bad", mod(func(b []byte) { b[mac(0)-1] ^= 1 }), 1},
		{"copy 0 unused", mod(func(b []byte) { clear(b[p.CopyOffset(0):p.CopyOffset(1)]) }), 1},
		{"copy 1 mac bad", mod(func(b []byte) { b[mac(1)+31] ^= 1 }), 0},
		{"both mac bad", mod(func(b []byte) { b[mac(0)] ^= 1; b[mac(1)] ^= 1 }), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Parse(tt.b)
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			if got, err := h.Accept(testKey); got != tt.want {
				t.Errorf("Accept() = %d, %v, want %d", got, err, tt.want)
			}
		})
	}
}
