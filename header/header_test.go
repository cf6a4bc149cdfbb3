package header

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

var (
	testKey    = bytes.Repeat([]byte{0x11}, KeySize)
	otherKey   = bytes.Repeat([]byte{0x22}, KeySize)
	testFileID = [FileIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	testSlots  = []Slot{
		{URI: "local:///root/.config/kmsfs/local.key", Context: []byte(`{"kmsfs":"v1","volume":"00112233445566778899aabbccddeeff"}`), Wrapped: bytes.Repeat([]byte{0xab}, 69)},
		{URI: "aws-kms://arn:aws:kms:eu-west-1:111122223333:key/x", Context: []byte{}, Wrapped: []byte{1}},
	}
)

func testHeader(t testing.TB) []byte {
	t.Helper()
	b, err := New(12, testFileID, testSlots, testKey)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return b
}

// validCopy returns the marshalled copy 0 of a fresh header.
func validCopy(t testing.TB) []byte {
	return bytes.Clone(testHeader(t)[PreambleSize : PreambleSize+CopySize])
}

func TestNewParseMarshal(t *testing.T) {
	b := testHeader(t)
	if len(b) != Size {
		t.Fatalf("len(New()) = %d, want %d", len(b), Size)
	}
	h, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(New()) error = %v", err)
	}
	want := Preamble{Version: 1, BlockShift: 12, FileID: testFileID}
	if h.Preamble != want {
		t.Errorf("Parse().Preamble = %+v, want %+v", h.Preamble, want)
	}
	if got := h.Preamble.BlockSize(); got != 4096 {
		t.Errorf("BlockSize() = %d, want 4096", got)
	}
	for i, c := range h.Copies {
		if c == nil || h.CopyErrs[i] != nil {
			t.Fatalf("Parse() copy %d = %v, %v, want a copy", i, c, h.CopyErrs[i])
		}
		if c.Seq != 1 || len(c.Slots) != len(testSlots) {
			t.Errorf("copy %d: Seq, len(Slots) = %d, %d, want 1, %d", i, c.Seq, len(c.Slots), len(testSlots))
		}
		for j, s := range c.Slots {
			w := testSlots[j]
			if s.URI != w.URI || !bytes.Equal(s.Context, w.Context) || !bytes.Equal(s.Wrapped, w.Wrapped) {
				t.Errorf("copy %d slot %d = %+v, want %+v", i, j, s, w)
			}
		}
		if err := VerifyCopy(h.Preamble, c, testKey); err != nil {
			t.Errorf("VerifyCopy(copy %d) error = %v", i, err)
		}
	}
	if got, err := h.Accept(testKey); got != 0 || err != nil {
		t.Errorf("Accept() = %d, %v, want 0, nil", got, err)
	}
	out, err := h.Marshal()
	if err != nil || !bytes.Equal(out, b) {
		t.Errorf("Marshal(Parse(b)) = %v, differs from b: %v", err, !bytes.Equal(out, b))
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name  string
		shift uint8
		slots []Slot
		key   []byte
	}{
		{"shift 11", 11, testSlots, testKey},
		{"shift 21", 21, testSlots, testKey},
		{"no slots", 12, nil, testKey},
		{"short key", 12, testSlots, testKey[:16]},
		{"duplicate uri", 12, []Slot{testSlots[0], testSlots[0]}, testKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.shift, testFileID, tt.slots, tt.key); err == nil {
				t.Errorf("New() error = nil, want error")
			}
		})
	}
}

func TestParsePreambleRejects(t *testing.T) {
	good := testHeader(t)[:PreambleSize]
	mod := func(f func(b []byte)) []byte { b := bytes.Clone(good); f(b); return b }
	tests := []struct {
		name   string
		b      []byte
		field  string
		offset int
	}{
		{"short", good[:31], "preamble", 0},
		{"bad magic", mod(func(b []byte) { b[0] = 'k' }), "magic", 0},
		{"magic without NUL", mod(func(b []byte) { b[5] = ' ' }), "magic", 0},
		{"version 0", mod(func(b []byte) { b[7] = 0 }), "version", 6},
		{"version 2", mod(func(b []byte) { b[7] = 2 }), "version", 6},
		{"version 257", mod(func(b []byte) { b[6] = 1 }), "version", 6},
		{"block shift 11", mod(func(b []byte) { b[8] = 11 }), "block shift", 8},
		{"block shift 21", mod(func(b []byte) { b[8] = 21 }), "block shift", 8},
		{"reserved first", mod(func(b []byte) { b[9] = 1 }), "reserved", 9},
		{"reserved last", mod(func(b []byte) { b[15] = 0x80 }), "reserved", 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePreamble(tt.b)
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Field != tt.field || pe.Offset != tt.offset {
				t.Errorf("ParsePreamble() error = %v, want *ParseError for %s at %d", err, tt.field, tt.offset)
			}
			full := append(bytes.Clone(tt.b), make([]byte, Size-len(tt.b))...)
			if len(tt.b) == PreambleSize {
				if _, err := Parse(full); !errors.As(err, &pe) {
					t.Errorf("Parse() error = %v, want *ParseError", err)
				}
			}
		})
	}
}

func TestParseLength(t *testing.T) {
	b := testHeader(t)
	for _, n := range []int{0, 100, Size - 1} {
		buf := make([]byte, n)
		copy(buf, b)
		var pe *ParseError
		if _, err := Parse(buf); !errors.As(err, &pe) || !errors.Is(err, ErrShort) {
			t.Errorf("Parse(%d bytes) error = %v, want *ParseError, ErrShort", n, err)
		}
	}
	// Bytes past the header are the file's: ignored.
	long := append(bytes.Clone(b), bytes.Repeat([]byte{0xee}, 100)...)
	if h, err := Parse(long); err != nil || h.CopyErrs != [2]error{} {
		t.Errorf("Parse(%d bytes) = %+v, %v, want the header", len(long), h, err)
	} else if out, err := h.Marshal(); err != nil || !bytes.Equal(out, b) {
		t.Errorf("Marshal(Parse(%d bytes)) = %v, differs from the header: %v", len(long), err, !bytes.Equal(out, b))
	}
	if _, err := ParseCopy(make([]byte, CopySize-1)); err == nil {
		t.Errorf("ParseCopy(%d bytes) error = nil, want error", CopySize-1)
	}
}

// slotBytes encodes one slot.
func slotBytes(uri, ctx, wrapped []byte) []byte {
	var b []byte
	for _, f := range [][]byte{uri, ctx, wrapped} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b
}

// rawCopy builds a copy from raw parts without checks.
func rawCopy(seq uint64, count byte, slots ...[]byte) []byte {
	b := make([]byte, CopySize)
	binary.BigEndian.PutUint64(b, seq)
	b[8] = count
	off := 9
	for _, s := range slots {
		off += copy(b[off:], s)
	}
	for i := range 32 {
		if off+i < MACOffset {
			b[off+i] = 0xcc // commitment
		}
	}
	for i := MACOffset; i < CopySize; i++ {
		b[i] = 0xdd
	}
	return b
}

func TestParseCopyRejects(t *testing.T) {
	uri := []byte("local:///k")
	ok := slotBytes(uri, nil, []byte{1})
	big := func(u string) []byte {
		return slotBytes([]byte(u), bytes.Repeat([]byte{'c'}, 400), bytes.Repeat([]byte{'w'}, 400))
	}
	padded := rawCopy(1, 1, ok)
	padded[MACOffset-1] = 1
	// Slots one byte too long for the commitment to fit.
	tooLong := fullCopy(1)
	tests := []struct {
		name  string
		b     []byte
		field string
	}{
		{"seq 0", rawCopy(0, 1, ok), "sequence"},
		{"seq 0 mac only", func() []byte { b := make([]byte, CopySize); b[CopySize-1] = 1; return b }(), "sequence"},
		{"no slots", rawCopy(1, 0), "slot count"},
		{"9 slots", rawCopy(1, 9, ok), "slot count"},
		{"255 slots", rawCopy(1, 255, ok), "slot count"},
		{"empty uri", rawCopy(1, 1, slotBytes(nil, nil, []byte{1})), "slot 0 uri length"},
		{"uri 513", rawCopy(1, 1, slotBytes(bytes.Repeat([]byte{'u'}, 513), nil, []byte{1})), "slot 0 uri length"},
		{"uri not utf-8", rawCopy(1, 1, slotBytes([]byte{'a', 0xff}, nil, []byte{1})), "slot 0 uri"},
		{"context 1025", rawCopy(1, 1, slotBytes(uri, make([]byte, 1025), []byte{1})), "slot 0 context length"},
		{"empty wrapped key", rawCopy(1, 1, slotBytes(uri, nil, nil)), "slot 0 wrapped key length"},
		{"wrapped key 2049", rawCopy(1, 1, slotBytes(uri, nil, make([]byte, 2049))), "slot 0 wrapped key length"},
		{"duplicate uri", rawCopy(1, 2, ok, ok), "slot 1 uri"},
		{"second slot missing", rawCopy(1, 2, ok), "slot 1 uri length"},
		{"slots past mac", rawCopy(1, 3, big("a"), big("b"), big("c")), "slot 2 context"},
		{"commitment does not fit", tooLong, "slot 1 wrapped key"},
		{"non-zero padding", padded, "padding"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCopy(tt.b)
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Field != tt.field {
				t.Fatalf("ParseCopy() = %v, %v, want *ParseError for field %q", c, err, tt.field)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("ParseCopy() error = %q, want it to name %q", err, tt.field)
			}
			// In a header the bad copy is recorded, not fatal.
			full := testHeader(t)
			copy(full[CopyOffset(1):], tt.b)
			h, err := Parse(full)
			if err != nil || h.Copies[1] != nil || h.CopyErrs[1] == nil || h.Copies[0] == nil {
				t.Fatalf("Parse() = %+v, %v, want copy 1 damaged and copy 0 good", h, err)
			}
			if !errors.As(h.CopyErrs[1], &pe) || pe.Offset < int(CopyOffset(1)) {
				t.Errorf("Parse().CopyErrs[1] = %v, want *ParseError with a file offset", h.CopyErrs[1])
			}
			if got := h.Candidates(); len(got) != 1 || got[0] != 0 {
				t.Errorf("Candidates() = %v, want [0]", got)
			}
		})
	}
}

// fullCopy returns a copy whose two slots and commitment end extra bytes
// past MACOffset (extra 0: exactly at it).
func fullCopy(extra int) []byte {
	uri := []byte("local:///k")
	first := slotBytes(uri, bytes.Repeat([]byte{'x'}, 1000), []byte{1})
	ctx := MACOffset - 9 - 32 - len(first) - (6 + 2 + 1) + extra
	return rawCopy(7, 2, first, slotBytes([]byte("u2"), bytes.Repeat([]byte{'y'}, ctx), []byte{2}))
}

func TestCopyFillsExactly(t *testing.T) {
	b := fullCopy(0)
	c, err := ParseCopy(b)
	if err != nil {
		t.Fatalf("ParseCopy(full copy) error = %v", err)
	}
	out := make([]byte, CopySize)
	if err := c.MarshalTo(out); err != nil || !bytes.Equal(out, b) {
		t.Errorf("MarshalTo(ParseCopy(b)) = %v, differs: %v", err, !bytes.Equal(out, b))
	}
	if c, err := ParseCopy(make([]byte, CopySize)); c != nil || err != nil {
		t.Errorf("ParseCopy(zeros) = %v, %v, want nil, nil", c, err)
	}
}

func TestMarshalToRejects(t *testing.T) {
	s := Slot{URI: "u", Wrapped: []byte{1}}
	many := make([]Slot, 9)
	for i := range many {
		many[i] = Slot{URI: string(rune('a' + i)), Wrapped: []byte{1}}
	}
	bigSlots := []Slot{
		{URI: "a", Context: make([]byte, 1000), Wrapped: make([]byte, 1000)},
	}
	tests := []struct {
		name string
		c    Copy
		dst  int
	}{
		{"short dst", Copy{Seq: 1, Slots: []Slot{s}}, CopySize - 1},
		{"seq 0", Copy{Seq: 0, Slots: []Slot{s}}, CopySize},
		{"no slots", Copy{Seq: 1}, CopySize},
		{"9 slots", Copy{Seq: 1, Slots: many}, CopySize},
		{"empty uri", Copy{Seq: 1, Slots: []Slot{{Wrapped: []byte{1}}}}, CopySize},
		{"long uri", Copy{Seq: 1, Slots: []Slot{{URI: strings.Repeat("u", 513), Wrapped: []byte{1}}}}, CopySize},
		{"bad utf-8", Copy{Seq: 1, Slots: []Slot{{URI: "\xff", Wrapped: []byte{1}}}}, CopySize},
		{"long context", Copy{Seq: 1, Slots: []Slot{{URI: "u", Context: make([]byte, 1025), Wrapped: []byte{1}}}}, CopySize},
		{"empty wrapped", Copy{Seq: 1, Slots: []Slot{{URI: "u"}}}, CopySize},
		{"long wrapped", Copy{Seq: 1, Slots: []Slot{{URI: "u", Wrapped: make([]byte, 2049)}}}, CopySize},
		{"duplicate", Copy{Seq: 1, Slots: []Slot{s, s}}, CopySize},
		{"does not fit", Copy{Seq: 1, Slots: bigSlots}, CopySize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.c.MarshalTo(make([]byte, tt.dst)); err == nil {
				t.Errorf("MarshalTo() error = nil, want error")
			}
		})
	}
	h := &Header{Preamble: Preamble{Version: 1, BlockShift: 12}, Copies: [2]*Copy{nil, {Seq: 1}}}
	if _, err := h.Marshal(); err == nil {
		t.Errorf("Header.Marshal(copy without slots) error = nil, want error")
	}
}

// TestVerifyDetectsEveryBit flips every bit of the preamble and copy 0 and
// checks that the copy no longer parses or no longer verifies.
func TestVerifyDetectsEveryBit(t *testing.T) {
	orig := testHeader(t)
	end := int(CopyOffset(1))
	cands := 0
	for i := 0; i < end; i++ {
		for bit := range 8 {
			b := bytes.Clone(orig)
			b[i] ^= 1 << bit
			h, err := Parse(b)
			if err != nil {
				continue // preamble no longer parses
			}
			c := h.Copies[0]
			if c == nil {
				continue // copy 0 damaged
			}
			cands++
			err = VerifyCopy(h.Preamble, c, testKey)
			if err == nil {
				t.Fatalf("VerifyCopy() with bit %d of byte %d flipped = nil, want error", bit, i)
			}
			// Bits of the file ID and the commitment change the commitment
			// check; everything else must be caught by the MAC.
			inFileID := i >= 16 && i < PreambleSize
			if !inFileID && !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrTampered) {
				t.Fatalf("VerifyCopy() with byte %d flipped = %v, want ErrWrongKey or ErrTampered", i, err)
			}
			if i >= PreambleSize+9 && i < PreambleSize+MACOffset && !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrTampered) {
				t.Fatalf("VerifyCopy() = %v", err)
			}
			if i >= PreambleSize+MACOffset && !errors.Is(err, ErrTampered) {
				t.Fatalf("VerifyCopy() with MAC byte %d flipped = %v, want ErrTampered", i, err)
			}
		}
	}
	if cands < 1000 {
		t.Errorf("only %d flips parsed, want many", cands)
	}
}

func TestVerifyCopy(t *testing.T) {
	h, err := Parse(testHeader(t))
	if err != nil {
		t.Fatal(err)
	}
	c := h.Copies[0]
	commit := *c
	commit.Commitment[31] ^= 1
	mac := *c
	mac.MAC[0] ^= 1
	seq := *c
	seq.Seq = 2
	slot := *c
	slot.Slots = []Slot{c.Slots[0]}
	otherID := h.Preamble
	otherID.FileID[0] ^= 1
	otherShift := h.Preamble
	otherShift.BlockShift = 13
	tests := []struct {
		name string
		p    Preamble
		c    *Copy
		key  []byte
		want error
	}{
		{"good", h.Preamble, c, testKey, nil},
		{"wrong key", h.Preamble, c, otherKey, ErrWrongKey},
		{"commitment flipped", h.Preamble, &commit, testKey, ErrWrongKey},
		{"other file ID", otherID, c, testKey, ErrWrongKey},
		{"mac flipped", h.Preamble, &mac, testKey, ErrTampered},
		{"seq changed", h.Preamble, &seq, testKey, ErrTampered},
		{"slot removed", h.Preamble, &slot, testKey, ErrTampered},
		{"block shift changed", otherShift, c, testKey, ErrTampered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := VerifyCopy(tt.p, tt.c, tt.key); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("VerifyCopy() = %v, want %v", err, tt.want)
			}
			// UnlockCopy decides the same, and hands out the content key
			// only for a valid copy.
			var ck [KeySize]byte
			err := UnlockCopy(tt.p, tt.c, tt.key, ck[:])
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("UnlockCopy() = %v, want %v", err, tt.want)
			}
			var want [KeySize]byte
			if err == nil {
				if err := Derive(want[:], tt.key, tt.p.FileID, ContentKey); err != nil {
					t.Fatal(err)
				}
			}
			if ck != want {
				t.Errorf("UnlockCopy() content key = %x, want %x", ck, want)
			}
		})
	}
	if err := VerifyCopy(h.Preamble, c, testKey[:31]); err == nil || errors.Is(err, ErrWrongKey) {
		t.Errorf("VerifyCopy(31-byte key) = %v, want a key size error", err)
	}
}

func TestAccept(t *testing.T) {
	orig := testHeader(t)
	mod := func(f func(b []byte)) []byte { b := bytes.Clone(orig); f(b); return b }
	tests := []struct {
		name     string
		b        []byte
		key      []byte
		want     int
		wrongKey bool
	}{
		{"both good", orig, testKey, 0, false},
		{"copy 0 mac bad", mod(func(b []byte) { b[CopyOffset(0)+MACOffset] ^= 1 }), testKey, 1, false},
		{"copy 0 unused", mod(func(b []byte) { clear(b[CopyOffset(0) : CopyOffset(0)+CopySize]) }), testKey, 1, false},
		{"copy 0 unparseable", mod(func(b []byte) { b[CopyOffset(0)+8] = 0 }), testKey, 1, false},
		{"copy 1 higher seq", mod(func(b []byte) {
			h, _ := Parse(b)
			h.Copies[1].Seq = 2
			SealCopy(h.Preamble, h.Copies[1], testKey)
			out, _ := h.Marshal()
			copy(b, out)
		}), testKey, 1, false},
		{"wrong key", orig, otherKey, -1, true},
		{"both mac bad", mod(func(b []byte) { b[CopyOffset(0)+MACOffset] ^= 1; b[CopyOffset(1)+MACOffset] ^= 1 }), testKey, -1, false},
		{"both unused", mod(func(b []byte) { clear(b[PreambleSize:]) }), testKey, -1, false},
		{"both unparseable", mod(func(b []byte) { b[CopyOffset(0)+8] = 9; b[CopyOffset(1)+8] = 9 }), testKey, -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Parse(tt.b)
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			got, err := h.Accept(tt.key)
			if got != tt.want {
				t.Errorf("Accept() = %d, %v, want %d", got, err, tt.want)
			}
			if tt.want < 0 && !errors.Is(err, ErrNoValidCopy) {
				t.Errorf("Accept() error = %v, want ErrNoValidCopy", err)
			}
			if errors.Is(err, ErrWrongKey) != tt.wrongKey {
				t.Errorf("Accept() error = %v, want ErrWrongKey %v", err, tt.wrongKey)
			}
		})
	}
}

func TestCandidatesAndNextCopy(t *testing.T) {
	c := func(seq uint64) *Copy { return &Copy{Seq: seq} }
	tests := []struct {
		name      string
		copies    [2]*Copy
		want      []int
		accepted  int
		nextIndex int
		nextSeq   uint64
	}{
		{"tie", [2]*Copy{c(1), c(1)}, []int{0, 1}, 0, 1, 2},
		{"tie, copy 0 rejected", [2]*Copy{c(1), c(1)}, []int{0, 1}, 1, 0, 2},
		{"copy 1 newer", [2]*Copy{c(3), c(4)}, []int{1, 0}, 1, 0, 5},
		{"copy 0 newer", [2]*Copy{c(9), c(4)}, []int{0, 1}, 0, 1, 10},
		{"copy 0 newer but invalid", [2]*Copy{c(9), c(4)}, []int{0, 1}, 1, 0, 5},
		{"only copy 0", [2]*Copy{c(2), nil}, []int{0}, 0, 1, 3},
		{"only copy 1", [2]*Copy{nil, c(2)}, []int{1}, 1, 0, 3},
		{"none", [2]*Copy{nil, nil}, nil, -1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Header{Copies: tt.copies}
			got := h.Candidates()
			if len(got) != len(tt.want) || (len(got) > 0 && (got[0] != tt.want[0] || got[len(got)-1] != tt.want[len(tt.want)-1])) {
				t.Errorf("Candidates() = %v, want %v", got, tt.want)
			}
			if tt.accepted < 0 {
				return
			}
			i, seq := h.NextCopy(tt.accepted)
			if i != tt.nextIndex || seq != tt.nextSeq {
				t.Errorf("NextCopy(%d) = %d, %d, want %d, %d", tt.accepted, i, seq, tt.nextIndex, tt.nextSeq)
			}
		})
	}
	defer func() {
		if recover() == nil {
			t.Errorf("NextCopy(unparsed copy) did not panic")
		}
	}()
	(&Header{}).NextCopy(0)
}

func TestCopyOffset(t *testing.T) {
	if got := CopyOffset(0); got != 32 {
		t.Errorf("CopyOffset(0) = %d, want 32", got)
	}
	if got := CopyOffset(1); got != 2064 {
		t.Errorf("CopyOffset(1) = %d, want 2064", got)
	}
	if CopyOffset(1)+CopySize != Size {
		t.Errorf("CopyOffset(1)+CopySize = %d, want %d", CopyOffset(1)+CopySize, Size)
	}
}

func TestDerive(t *testing.T) {
	infos := map[Purpose]string{
		ContentKey: "kmsfs v1 content key",
		MACKey:     "kmsfs v1 header mac",
		Commitment: "kmsfs v1 key commitment",
	}
	seen := map[[32]byte]Purpose{}
	for p, info := range infos {
		want, err := hkdf.Key(sha256.New, testKey, testFileID[:], info, 32)
		if err != nil {
			t.Fatal(err)
		}
		var got [32]byte
		if err := Derive(got[:], testKey, testFileID, p); err != nil || !bytes.Equal(got[:], want) {
			t.Errorf("Derive(%v) = %x, %v, want %x", p, got, err, want)
		}
		if q, ok := seen[got]; ok {
			t.Errorf("Derive(%v) = Derive(%v)", p, q)
		}
		seen[got] = p
	}
	tests := []struct {
		name string
		dst  int
		key  int
		p    Purpose
	}{
		{"short dst", 31, 32, ContentKey},
		{"short key", 32, 16, ContentKey},
		{"long key", 32, 33, ContentKey},
		{"bad purpose", 32, 32, Purpose(7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Derive(make([]byte, tt.dst), make([]byte, tt.key), testFileID, tt.p); err == nil {
				t.Errorf("Derive() error = nil, want error")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	b := testHeader(f)
	f.Add(b)
	one := bytes.Clone(b)
	clear(one[CopyOffset(1):])
	f.Add(one)
	f.Add(make([]byte, Size))
	for _, c := range []int{MinCopySize, 1024, MaxCopySize3} {
		b3 := testHeaderV3(f, c)
		f.Add(b3)
		f.Add(append(bytes.Clone(b3), 0xee, 0xee)) // inline content after H
		one := bytes.Clone(b3)
		clear(one[PreambleSize+c:])
		f.Add(one)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Parse(b)
		if err != nil {
			return
		}
		hl := h.Preamble.HeaderLen()
		if hl > len(b) || hl > MaxLen {
			t.Fatalf("Parse(%d bytes) succeeded with HeaderLen %d", len(b), hl)
		}
		h.Candidates()
		h.Accept(testKey)
		if len(b) > hl {
			// Bytes after the header change nothing.
			h2, err := Parse(b[:hl])
			if err != nil || fmt.Sprint(h2.CopyErrs) != fmt.Sprint(h.CopyErrs) || (h.Copies[0] == nil) != (h2.Copies[0] == nil) || (h.Copies[1] == nil) != (h2.Copies[1] == nil) {
				t.Fatalf("Parse(b[:%d]) = %+v, %v, differs from Parse(b) = %+v", hl, h2, err, h)
			}
		}
		if h.CopyErrs[0] != nil || h.CopyErrs[1] != nil {
			return
		}
		out, err := h.Marshal()
		if err != nil {
			t.Fatalf("Marshal(Parse(b)) error = %v", err)
		}
		if !bytes.Equal(out, b[:hl]) {
			t.Fatalf("Marshal(Parse(b)) differs from b[:%d]", hl)
		}
	})
}

func FuzzParseCopy(f *testing.F) {
	f.Add(validCopy(f))
	f.Add(rawCopy(1, 1, slotBytes([]byte("u"), nil, []byte{1})))
	f.Add(make([]byte, CopySize))
	for _, n := range []int{MinCopySize, 1024, MaxCopySize3} {
		f.Add(bytes.Clone(testHeaderV3(f, n)[PreambleSize : PreambleSize+n]))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCopy(b)
		if err != nil || c == nil {
			return
		}
		out := make([]byte, len(b))
		if err := c.MarshalTo(out); err != nil {
			t.Fatalf("MarshalTo(ParseCopy(b)) error = %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("MarshalTo(ParseCopy(b)) differs from b")
		}
		p := Preamble{Version: 1, BlockShift: 12}
		if len(b) != CopySize {
			p = Preamble{Version: Version3, BlockShift: 12, CopySize: uint16(len(b))}
		}
		VerifyCopy(p, c, testKey)
	})
}

func FuzzParsePreamble(f *testing.F) {
	f.Add(testHeader(f)[:PreambleSize])
	f.Add(testHeaderV3(f, 1024)[:PreambleSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePreamble(b)
		if err != nil {
			return
		}
		if got := p.Marshal(); !bytes.Equal(got[:], b[:PreambleSize]) {
			t.Fatalf("Marshal(ParsePreamble(b)) = %x, want %x", got, b[:PreambleSize])
		}
	})
}
