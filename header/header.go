// Package header reads and writes the header at the start of every kmsfs
// regular backing file: the preamble, the two header copies with their key
// slots, and the keys derived from a file's data key. A version-1 header is
// 4096 bytes with copies of 2032 bytes; a version-3 header is 32 + 2*C bytes
// with copies of C bytes, C given in its preamble.
//
// The byte layout is specified in docs/FORMAT.md ("Header", "Keys" and
// "Header (version 3)"). This
// package knows nothing about blocks or key services: it takes a data key
// that the caller has already unwrapped and reports whether a copy is valid
// under it.
package header

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Sizes and limits of the header, from docs/FORMAT.md.
const (
	// Size is the size of the whole version-1 header in bytes. It is
	// also the largest header of any version (MaxLen): reading Size
	// bytes, or up to the end of a shorter file, always gets the whole
	// header.
	Size = 4096
	// MaxLen is the largest HeaderLen of any version, Size.
	MaxLen = Size
	// PreambleSize is the size of the preamble at offset 0.
	PreambleSize = 32
	// CopySize is the size of each of the two copies of a version-1
	// header (Preamble.CopyLen for any version).
	CopySize = 2032
	// MACOffset is the offset of the MAC within a version-1 copy; the MAC
	// covers the preamble and the copy bytes before it. In a copy of C
	// bytes it is at C - 32.
	MACOffset = 2000

	// Version is format version 1: a 4096-byte header, copies of
	// CopySize bytes.
	Version = 1
	// Version3 is format version 3: the copy size C is in the preamble,
	// the header is 32 + 2*C bytes.
	Version3 = 3
	// MinCopySize is the smallest copy size C of a version-3 header.
	MinCopySize = 512
	// MaxCopySize3 is the largest copy size C of a version-3 header.
	MaxCopySize3 = 1536
	// CopySizeAlign is what a version-3 copy size must be a multiple of.
	CopySizeAlign = 16
	// MinBlockShift is the smallest allowed log2 of the block size (4 KiB).
	MinBlockShift = 12
	// MaxBlockShift is the largest allowed log2 of the block size (1 MiB).
	MaxBlockShift = 20

	// MaxSlots is the largest number of key slots in one copy.
	MaxSlots = 8
	// MaxURILen is the largest key URI length in bytes.
	MaxURILen = 512
	// MaxContextLen is the largest encryption context length in bytes.
	MaxContextLen = 1024
	// MaxWrappedLen is the largest wrapped key length in bytes.
	MaxWrappedLen = 2048

	// FileIDSize is the size of the random file ID in the preamble.
	FileIDSize = 16
	// KeySize is the size of a data key and of every key derived from it.
	KeySize = 32
)

// Field sizes inside the preamble and a copy.
const (
	seqSize        = 8
	countSize      = 1
	slotsOffset    = seqSize + countSize
	commitmentSize = 32
	macSize        = 32
	lenSize        = 2
	reservedOff    = 9
	copySizeOff    = 9  // version 3: u16 copy size
	reservedOff3   = 11 // version 3: reserved bytes after the copy size
	fileIDOff      = 16
)

// Magic is the 6-byte magic at the start of every header.
var Magic = [6]byte{'K', 'M', 'S', 'F', 'S', 0}

// ErrWrongKey reports that a copy's key commitment does not match the data
// key: the slot unwrapped to a key this file was not written with.
var ErrWrongKey = errors.New("header: key commitment mismatch (the data key is not the key this file was written with)")

// ErrTampered reports that a copy's MAC does not match: the header was
// altered or a write of it was torn.
var ErrTampered = errors.New("header: MAC mismatch (header may be corrupted or tampered with)")

// ErrNoValidCopy reports that no header copy is valid under the data key.
var ErrNoValidCopy = errors.New("header: no valid header copy")

// ErrShort reports that Parse or ParsePreamble was given fewer bytes than
// the header (or the preamble) takes: a backing file shorter than its
// header. It is wrapped in a *ParseError.
var ErrShort = errors.New("header: too short")

// ErrSlotsDoNotFit reports that key slots and the commitment do not fit
// before the MAC of a copy of the size asked for.
var ErrSlotsDoNotFit = errors.New("header: key slots do not fit in a header copy")

// ParseError describes bytes that do not follow the header format.
type ParseError struct {
	// Field names the field that is wrong, e.g. "copy 1 slot 0 uri length".
	Field string
	// Offset is the byte offset of the field: from the start of the header
	// for Parse and ParsePreamble, from the start of the copy for ParseCopy.
	Offset int
	// Err says what is wrong with the field.
	Err error
}

// Error returns a message naming the field and its offset.
func (e *ParseError) Error() string {
	return fmt.Sprintf("header: invalid %s at offset %d: %v", e.Field, e.Offset, e.Err)
}

// Unwrap returns the underlying error.
func (e *ParseError) Unwrap() error { return e.Err }

func parseErr(field string, off int, format string, args ...any) *ParseError {
	return &ParseError{Field: field, Offset: off, Err: fmt.Errorf(format, args...)}
}

// Slot is one key slot: the data key wrapped by one key service.
type Slot struct {
	// URI names the keyring and key, e.g. "local:///root/.config/kmsfs/local.key".
	URI string
	// Context is the encryption context given to the key service.
	Context []byte
	// Wrapped is the wrapped data key, opaque to kmsfs.
	Wrapped []byte
}

// size returns the number of bytes the slot takes in a copy.
func (s Slot) size() int { return 3*lenSize + len(s.URI) + len(s.Context) + len(s.Wrapped) }

// Preamble is the first 32 bytes of the header, never rewritten after the
// file is created.
type Preamble struct {
	// Version is the format version, Version or Version3 when valid.
	Version uint16
	// BlockShift is log2 of the plaintext block size.
	BlockShift uint8
	// CopySize is the copy size C of a version-3 header; 0 for version 1
	// (ignored, and not marshalled, unless Version is Version3).
	CopySize uint16
	// FileID is the random file ID chosen at creation.
	FileID [FileIDSize]byte
}

// BlockSize returns the plaintext block size 1 << BlockShift.
func (p Preamble) BlockSize() int { return 1 << p.BlockShift }

// CopyLen returns the size of each header copy: CopySize (2032) for
// version 1, the preamble's copy size C for version 3.
func (p Preamble) CopyLen() int {
	if p.Version == Version3 {
		return int(p.CopySize)
	}
	return CopySize
}

// HeaderLen returns the size of the whole header, 32 + 2*CopyLen: 4096 for
// version 1. Bytes at and after it are the file's content, never the
// header's.
func (p Preamble) HeaderLen() int { return PreambleSize + 2*p.CopyLen() }

// CopyOffset returns the byte offset of copy i (0 or 1) in the file.
func (p Preamble) CopyOffset(i int) int64 { return int64(PreambleSize + i*p.CopyLen()) }

// MACOffset returns the offset of the MAC within a copy, CopyLen - 32.
func (p Preamble) MACOffset() int { return p.CopyLen() - macSize }

// checkCopyLen reports whether the preamble's copy size is valid for its
// version (always so for version 1); a preamble built by hand may claim
// another.
func (p Preamble) checkCopyLen() error {
	if p.Version == Version3 && !validCopySize3(int(p.CopySize)) {
		return fmt.Errorf("copy size %d, want a multiple of %d in %d..%d", p.CopySize, CopySizeAlign, MinCopySize, MaxCopySize3)
	}
	return nil
}

// validCopyLen reports whether n is the size of a copy of some version:
// CopySize, or a version-3 copy size.
func validCopyLen(n int) bool { return n == CopySize || validCopySize3(n) }

// validCopySize3 reports whether n is a valid version-3 copy size.
func validCopySize3(n int) bool {
	return n >= MinCopySize && n <= MaxCopySize3 && n%CopySizeAlign == 0
}

// Marshal returns the 32-byte encoding of the preamble.
func (p Preamble) Marshal() [PreambleSize]byte {
	var b [PreambleSize]byte
	copy(b[:], Magic[:])
	binary.BigEndian.PutUint16(b[6:], p.Version)
	b[8] = p.BlockShift
	if p.Version == Version3 {
		binary.BigEndian.PutUint16(b[copySizeOff:], p.CopySize)
	}
	copy(b[fileIDOff:], p.FileID[:])
	return b
}

// ParsePreamble parses and checks the first PreambleSize bytes of b, which
// must be at least that long. It does not check the block size against the
// volume's; the caller does.
func ParsePreamble(b []byte) (Preamble, error) {
	if len(b) < PreambleSize {
		return Preamble{}, parseErr("preamble", 0, "%w: got %d bytes, want at least %d", ErrShort, len(b), PreambleSize)
	}
	if !bytes.Equal(b[:len(Magic)], Magic[:]) {
		return Preamble{}, parseErr("magic", 0, "got %q, want %q", b[:len(Magic)], Magic[:])
	}
	var p Preamble
	p.Version = binary.BigEndian.Uint16(b[6:])
	if p.Version != Version && p.Version != Version3 {
		return Preamble{}, parseErr("version", 6, "got %d, want %d or %d", p.Version, Version, Version3)
	}
	p.BlockShift = b[8]
	if p.BlockShift < MinBlockShift || p.BlockShift > MaxBlockShift {
		return Preamble{}, parseErr("block shift", 8, "got %d, want %d..%d", p.BlockShift, MinBlockShift, MaxBlockShift)
	}
	reserved := reservedOff
	if p.Version == Version3 {
		p.CopySize = binary.BigEndian.Uint16(b[copySizeOff:])
		if !validCopySize3(int(p.CopySize)) {
			return Preamble{}, parseErr("copy size", copySizeOff, "got %d, want a multiple of %d in %d..%d", p.CopySize, CopySizeAlign, MinCopySize, MaxCopySize3)
		}
		reserved = reservedOff3
	}
	for i, c := range b[reserved:fileIDOff] {
		if c != 0 {
			return Preamble{}, parseErr("reserved", reserved+i, "got byte 0x%02x, want zero", c)
		}
	}
	copy(p.FileID[:], b[fileIDOff:PreambleSize])
	return p, nil
}

// Copy is one of the two header copies.
type Copy struct {
	// Seq is the sequence number, at least 1; the copy with the higher
	// sequence is tried first.
	Seq uint64
	// Slots are the key slots, 1..MaxSlots of them with distinct URIs.
	Slots []Slot
	// Commitment is the key commitment derived from the data key.
	Commitment [32]byte
	// MAC authenticates the preamble and the copy up to its MAC offset
	// (MACOffset in version 1, C - 32 in version 3).
	MAC [32]byte
}

// ParseCopy parses one header copy, whose size is len(b): CopySize for
// version 1, or a version-3 copy size C (a multiple of 16 in
// MinCopySize..MaxCopySize3). An unused (all-zero) copy returns (nil, nil).
// Errors are *ParseError with offsets from the start of the copy.
func ParseCopy(b []byte) (*Copy, error) {
	return parseCopy(b, "", 0)
}

// copyNames prefix the field names of errors in each copy.
var copyNames = [2]string{"copy 0 ", "copy 1 "}

// slotName prefixes the field names of errors in slot i.
func slotName(i int) string { return "slot " + strconv.Itoa(i) + " " }

// parseCopy parses a copy whose first byte is at offset base in the error
// messages; prefix is prepended to field names.
func parseCopy(b []byte, prefix string, base int) (*Copy, error) {
	if !validCopyLen(len(b)) {
		return nil, parseErr(prefix+"copy", base, "got %d bytes, want %d or a multiple of %d in %d..%d", len(b), CopySize, CopySizeAlign, MinCopySize, MaxCopySize3)
	}
	if isZero(b) {
		return nil, nil
	}
	c := &Copy{Seq: binary.BigEndian.Uint64(b)}
	if c.Seq == 0 {
		return nil, parseErr(prefix+"sequence", base, "got 0 in a non-empty copy, want >= 1")
	}
	n := int(b[seqSize])
	if n < 1 || n > MaxSlots {
		return nil, parseErr(prefix+"slot count", base+seqSize, "got %d, want 1..%d", n, MaxSlots)
	}
	// Everything up to the commitment must end at or before the MAC.
	macOff := len(b) - macSize
	limit := macOff - commitmentSize
	off := slotsOffset
	// field reads a length-prefixed field of min..max bytes, field name of
	// slot i. (Names are only built for errors: this runs on every open.)
	field := func(i int, name string, min, max int) ([]byte, error) {
		if off+lenSize > limit {
			return nil, parseErr(prefix+slotName(i)+name+" length", base+off, "does not fit before the commitment")
		}
		l := int(binary.BigEndian.Uint16(b[off:]))
		if l < min || l > max {
			return nil, parseErr(prefix+slotName(i)+name+" length", base+off, "got %d, want %d..%d", l, min, max)
		}
		off += lenSize
		if off+l > limit {
			return nil, parseErr(prefix+slotName(i)+name, base+off, "%d bytes do not fit before the commitment", l)
		}
		v := b[off : off+l]
		off += l
		return v, nil
	}
	c.Slots = make([]Slot, n)
	for i := range c.Slots {
		uriOff := off + lenSize
		uri, err := field(i, "uri", 1, MaxURILen)
		if err != nil {
			return nil, err
		}
		if !utf8.Valid(uri) {
			return nil, parseErr(prefix+slotName(i)+"uri", base+uriOff, "not valid UTF-8")
		}
		for j := range i {
			if c.Slots[j].URI == string(uri) {
				return nil, parseErr(prefix+slotName(i)+"uri", base+uriOff, "duplicate of slot %d URI %q", j, uri)
			}
		}
		ctx, err := field(i, "context", 0, MaxContextLen)
		if err != nil {
			return nil, err
		}
		wrapped, err := field(i, "wrapped key", 1, MaxWrappedLen)
		if err != nil {
			return nil, err
		}
		c.Slots[i] = Slot{URI: string(uri), Context: bytes.Clone(ctx), Wrapped: bytes.Clone(wrapped)}
		if c.Slots[i].Context == nil {
			c.Slots[i].Context = []byte{}
		}
	}
	copy(c.Commitment[:], b[off:off+commitmentSize])
	off += commitmentSize
	if pad := b[off:macOff]; !isZero(pad) {
		i := slices.IndexFunc(pad, func(v byte) bool { return v != 0 })
		return nil, parseErr(prefix+"padding", base+off+i, "got byte 0x%02x, want zero", pad[i])
	}
	copy(c.MAC[:], b[macOff:])
	return c, nil
}

// MarshalTo writes the copy into dst, whose size is the copy size: CopySize
// for version 1 or the version-3 copy size C (Preamble.CopyLen). It fails
// if the copy breaks a limit of the format: sequence 0, no slots or more
// than MaxSlots, a length out of range, a URI that is not UTF-8 or appears
// twice, or slots that do not fit before the MAC at len(dst) - 32 (an error
// wrapping ErrSlotsDoNotFit).
func (c *Copy) MarshalTo(dst []byte) error {
	if !validCopyLen(len(dst)) {
		return fmt.Errorf("header: marshal copy: destination is %d bytes, want %d or a multiple of %d in %d..%d", len(dst), CopySize, CopySizeAlign, MinCopySize, MaxCopySize3)
	}
	if err := c.check(len(dst)); err != nil {
		return fmt.Errorf("header: marshal copy: %w", err)
	}
	clear(dst)
	binary.BigEndian.PutUint64(dst, c.Seq)
	dst[seqSize] = byte(len(c.Slots))
	off := slotsOffset
	put := func(v []byte) {
		binary.BigEndian.PutUint16(dst[off:], uint16(len(v)))
		off += lenSize
		off += copy(dst[off:], v)
	}
	for _, s := range c.Slots {
		put([]byte(s.URI))
		put(s.Context)
		put(s.Wrapped)
	}
	copy(dst[off:], c.Commitment[:])
	copy(dst[len(dst)-macSize:], c.MAC[:])
	return nil
}

// check reports whether the copy can be marshalled into copyLen bytes.
func (c *Copy) check(copyLen int) error {
	if c.Seq == 0 {
		return errors.New("sequence is 0, want >= 1")
	}
	if len(c.Slots) < 1 || len(c.Slots) > MaxSlots {
		return fmt.Errorf("%d slots, want 1..%d", len(c.Slots), MaxSlots)
	}
	for i, s := range c.Slots {
		if len(s.URI) < 1 || len(s.URI) > MaxURILen {
			return fmt.Errorf("slot %d: uri length %d, want 1..%d", i, len(s.URI), MaxURILen)
		}
		if !utf8.ValidString(s.URI) {
			return fmt.Errorf("slot %d: uri %q is not valid UTF-8", i, s.URI)
		}
		if len(s.Context) > MaxContextLen {
			return fmt.Errorf("slot %d: context length %d, want 0..%d", i, len(s.Context), MaxContextLen)
		}
		if len(s.Wrapped) < 1 || len(s.Wrapped) > MaxWrappedLen {
			return fmt.Errorf("slot %d: wrapped key length %d, want 1..%d", i, len(s.Wrapped), MaxWrappedLen)
		}
		for j := range i {
			if c.Slots[j].URI == s.URI {
				return fmt.Errorf("slot %d: uri %q duplicates slot %d", i, s.URI, j)
			}
		}
	}
	return checkFit(c.Slots, copyLen)
}

// slotsLen returns the bytes the sequence, slot count, slots and commitment
// take at the start of a copy.
func slotsLen(slots []Slot) int {
	total := slotsOffset + commitmentSize
	for _, s := range slots {
		total += s.size()
	}
	return total
}

// checkFit returns an error wrapping ErrSlotsDoNotFit if slots and the
// commitment do not fit before the MAC of a copy of copyLen bytes.
func checkFit(slots []Slot, copyLen int) error {
	need, room := slotsLen(slots), copyLen-macSize
	if need <= room {
		return nil
	}
	return fmt.Errorf("%w: the slots and commitment need %d bytes, a copy of %d bytes holds %d before its MAC (a copy of at least %d bytes would hold them)",
		ErrSlotsDoNotFit, need, copyLen, room, CopyNeeded(slots))
}

// CopyNeeded returns the smallest version-3 copy size that holds slots (and
// the sequence, slot count, commitment and MAC): their size rounded up to a
// multiple of CopySizeAlign, at least MinCopySize. It does not check the
// slots otherwise, and the result may exceed MaxCopySize3, in which case no
// version-3 copy holds them.
func CopyNeeded(slots []Slot) int {
	n := slotsLen(slots) + macSize
	n = (n + CopySizeAlign - 1) / CopySizeAlign * CopySizeAlign
	return max(n, MinCopySize)
}

// Header is a parsed header (HeaderLen bytes of its preamble).
//
// Copies[i] == nil with CopyErrs[i] == nil means copy i is unused (all
// zero); Copies[i] == nil with CopyErrs[i] != nil means copy i is damaged.
type Header struct {
	// Preamble is the parsed preamble.
	Preamble Preamble
	// Copies are the parsed copies; nil when unused or damaged.
	Copies [2]*Copy
	// CopyErrs are the parse errors (*ParseError) of damaged copies.
	CopyErrs [2]error
}

// CopyOffset returns the byte offset of copy i (0 or 1) in a version-1
// file; Preamble.CopyOffset gives it for any version.
func CopyOffset(i int) int64 { return int64(PreambleSize + i*CopySize) }

// Parse parses a header: the preamble, then the copies it lays out. b must
// hold at least the preamble's HeaderLen bytes (4096 for version 1); bytes
// after them are the file's content and are ignored, so a reader can read
// MaxLen bytes, or up to the end of a shorter file, and parse what it got.
// A short b (an error wrapping ErrShort) or a bad preamble is an error
// (*ParseError); a copy that does not parse is recorded in CopyErrs and is
// not an error, even if neither copy parses: the caller decides, usually
// with Candidates or Accept.
func Parse(b []byte) (*Header, error) {
	p, err := ParsePreamble(b)
	if err != nil {
		return nil, err
	}
	if len(b) < p.HeaderLen() {
		return nil, parseErr("header length", 0, "%w: got %d bytes, want at least %d (version %d)", ErrShort, len(b), p.HeaderLen(), p.Version)
	}
	h := &Header{Preamble: p}
	n := p.CopyLen()
	for i := range h.Copies {
		off := int(p.CopyOffset(i))
		h.Copies[i], h.CopyErrs[i] = parseCopy(b[off:off+n], copyNames[i], off)
	}
	return h, nil
}

// Marshal returns the encoding of the header, exactly Preamble.HeaderLen
// bytes. A nil copy is written as zeros (unused).
func (h *Header) Marshal() ([]byte, error) {
	p := h.Preamble
	if err := p.checkCopyLen(); err != nil {
		return nil, fmt.Errorf("header: marshal: %w", err)
	}
	n := p.CopyLen()
	b := make([]byte, p.HeaderLen())
	pre := p.Marshal()
	copy(b, pre[:])
	for i, c := range h.Copies {
		if c == nil {
			continue
		}
		off := p.CopyOffset(i)
		if err := c.MarshalTo(b[off : off+int64(n)]); err != nil {
			return nil, fmt.Errorf("header: marshal copy %d: %w", i, err)
		}
	}
	return b, nil
}

// Candidates returns the indexes of the parsed, non-empty copies in the
// order a reader tries them: descending sequence, copy 0 first on a tie.
func (h *Header) Candidates() []int {
	c0, c1 := h.Copies[0], h.Copies[1]
	switch {
	case c0 != nil && c1 != nil:
		if c1.Seq > c0.Seq {
			return []int{1, 0}
		}
		return []int{0, 1}
	case c0 != nil:
		return []int{0}
	case c1 != nil:
		return []int{1}
	}
	return nil
}

// Accept returns the index of the first copy, in Candidates order, that is
// valid under dataKey. Use it when every slot unwraps to the same data key
// (as it does for files kmsfs writes); a reader that unwraps slot by slot
// calls VerifyCopy itself. If no copy is valid the error wraps
// ErrNoValidCopy, and also ErrWrongKey when every candidate failed only its
// key commitment.
func (h *Header) Accept(dataKey []byte) (int, error) {
	cands := h.Candidates()
	if len(cands) == 0 {
		return -1, fmt.Errorf("%w: no copy parses (copy 0: %v; copy 1: %v)", ErrNoValidCopy, describe(h, 0), describe(h, 1))
	}
	wrongKey := true
	var errs [2]error
	for _, i := range cands {
		err := VerifyCopy(h.Preamble, h.Copies[i], dataKey)
		if err == nil {
			return i, nil
		}
		if !errors.Is(err, ErrWrongKey) {
			wrongKey = false
		}
		errs[i] = err
	}
	for i := range errs {
		if errs[i] == nil {
			errs[i] = h.CopyErrs[i]
		}
	}
	if wrongKey {
		return -1, fmt.Errorf("%w: %w", ErrNoValidCopy, ErrWrongKey)
	}
	return -1, fmt.Errorf("%w (copy 0: %v; copy 1: %v)", ErrNoValidCopy, orUnused(errs[0]), orUnused(errs[1]))
}

func describe(h *Header, i int) any { return orUnused(h.CopyErrs[i]) }

func orUnused(err error) any {
	if err == nil {
		return "unused"
	}
	return err
}

// NextCopy returns the index of the copy to overwrite and the sequence number
// to give it when rewriting the key slots, given the index of the copy that
// was accepted as valid: the other copy, with the accepted sequence plus one
// (docs/FORMAT.md "Rewriting key slots"). It panics if accepted is not 0 or 1
// or names a copy that did not parse.
func (h *Header) NextCopy(accepted int) (index int, seq uint64) {
	if accepted != 0 && accepted != 1 || h.Copies[accepted] == nil {
		panic(fmt.Sprintf("header: NextCopy(%d): not a parsed copy", accepted))
	}
	return 1 - accepted, h.Copies[accepted].Seq + 1
}

// New builds a complete fresh version-1 header (Size bytes): the preamble,
// and both copies with sequence 1 and the same slots, sealed under dataKey.
func New(blockShift uint8, fileID [FileIDSize]byte, slots []Slot, dataKey []byte) ([]byte, error) {
	return newHeader(Preamble{Version: Version, BlockShift: blockShift, FileID: fileID}, slots, dataKey)
}

// NewV3 builds a complete fresh version-3 header with copies of copySize
// bytes (a multiple of 16 in MinCopySize..MaxCopySize3): exactly
// 32 + 2*copySize bytes, both copies with sequence 1 and the same slots,
// sealed under dataKey. If the slots do not fit in a copy of that size the
// error wraps ErrSlotsDoNotFit; CopyNeeded says which size would hold them.
func NewV3(blockShift uint8, copySize int, fileID [FileIDSize]byte, slots []Slot, dataKey []byte) ([]byte, error) {
	if !validCopySize3(copySize) {
		return nil, fmt.Errorf("header: new: copy size %d, want a multiple of %d in %d..%d", copySize, CopySizeAlign, MinCopySize, MaxCopySize3)
	}
	return newHeader(Preamble{Version: Version3, BlockShift: blockShift, CopySize: uint16(copySize), FileID: fileID}, slots, dataKey)
}

func newHeader(p Preamble, slots []Slot, dataKey []byte) ([]byte, error) {
	if p.BlockShift < MinBlockShift || p.BlockShift > MaxBlockShift {
		return nil, fmt.Errorf("header: new: block shift %d, want %d..%d", p.BlockShift, MinBlockShift, MaxBlockShift)
	}
	h := &Header{Preamble: p}
	// Both copies are the same at sequence 1: seal one, use it twice.
	c := &Copy{Seq: 1, Slots: cloneSlots(slots)}
	if err := withDeriver(dataKey, p.FileID, func(d *deriver) error { return sealCopy(h.Preamble, c, d) }); err != nil {
		return nil, fmt.Errorf("header: new: %w", err)
	}
	h.Copies[0], h.Copies[1] = c, c
	return h.Marshal()
}

func cloneSlots(slots []Slot) []Slot {
	out := make([]Slot, len(slots))
	for i, s := range slots {
		out[i] = Slot{URI: s.URI, Context: bytes.Clone(s.Context), Wrapped: bytes.Clone(s.Wrapped)}
	}
	return out
}

// zeros is compared against instead of looping over bytes: the parser
// checks most of every header for zero on every open. CopySize is the
// largest copy of any version.
var zeros [CopySize]byte

// isZero reports whether b, at most CopySize bytes, is all zero.
func isZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }
