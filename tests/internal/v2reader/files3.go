package v2reader

import (
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// docs/FORMAT.md, "Regular files, version 3". Written from the text
// alone: nothing here comes from kmsfs's blockcipher, header or
// cryptfile packages.
const (
	page3       = 4096 // the page size every offset of the layout is a multiple of
	group3      = 128  // G: blocks per metadata page
	entrySize3  = 28   // nonce (12) || tag (16)
	recordSize3 = 36   // u64 size || nonce || tag
	nonceSize   = 12
	tagSize     = 16
)

// Kinds of AD(x, k) = file ID || u64(x) || u8(k).
const (
	kindData   = 0
	kindHole   = 1
	kindGroup  = 2
	kindInline = 3
	kindSize   = 4
)

// validCopySize3 reports whether C is a version-3 copy size: a multiple
// of 16 in 512 ..= 1536.
func validCopySize3(c int) bool { return c >= 512 && c <= 1536 && c%16 == 0 }

// Outcomes of reading a version-3 file, in the words of the "expect"
// field of the version-3 vectors (docs/FORMAT.md "Test vectors").
const (
	V3Success        = "success"
	V3BadPreamble    = "bad-preamble"
	V3WrongKey       = "wrong-key"
	V3HeaderTampered = "header-tampered"
	// V3BadSize: the backing size c is one no file has (0 < c < H,
	// H < c < H + 29, c = 4096, c ending in a metadata page); every
	// read fails.
	V3BadSize = "bad-size"
	// V3InlineAuth: the sealed content of an inline file does not open.
	V3InlineAuth = "inline-auth"
	// V3SizeMismatch: no valid size record names the size; reads fail
	// from block Block on.
	V3SizeMismatch = "size-mismatch"
	// V3BlockAuth: block Block is the first whose entry is neither a
	// valid hole entry nor the entry of its stored bytes.
	V3BlockAuth = "block-auth"
)

// Result3 is what a reader following FORMAT.md makes of a version-3
// backing file.
type Result3 struct {
	// Outcome is one of the V3 constants.
	Outcome string
	// Block is the block of V3SizeMismatch and V3BlockAuth.
	Block int64
	// Size is the plaintext size a reader reports (for V3BadSize, the
	// size as if the damaged tail were plaintext); -1 when the header
	// does not read.
	Size int64
	// Plain is what reads: the whole plaintext on success, else the
	// blocks before the first one that fails (nothing for V3BadSize and
	// V3InlineAuth).
	Plain []byte
	// Inline is set for an inline file (or a header-only one).
	Inline bool
	// Holes lists the blocks read as holes: by a hole entry or in a
	// hole group.
	Holes []int64
	// HoleGroups lists the groups whose group token is valid.
	HoleGroups []int64
	// VolumeID is the volume named by the slot that opened the header
	// (empty when the data key was given directly).
	VolumeID string
}

// Expect is the outcome as an "expect" value: "block-auth (block 7)".
func (r *Result3) Expect() string {
	if r.Outcome == V3SizeMismatch || r.Outcome == V3BlockAuth {
		return fmt.Sprintf("%s (block %d)", r.Outcome, r.Block)
	}
	return r.Outcome
}

// Err is nil for a file that reads, else an error saying why.
func (r *Result3) Err() error {
	if r.Outcome == V3Success {
		return nil
	}
	return errors.New("version-3 file: " + r.Expect())
}

// candidateKey is a data key a slot of a copy unwraps to.
type candidateKey struct {
	dk     []byte
	volume string
}

// Layout3 is the geometry of version-3 files of one volume.
type Layout3 struct {
	B, C, H, G0 int
}

// NewLayout3 returns the layout for block size B and copy size C:
// H = 32 + 2*C, G0 = floor((4096 - H - 72) / 28).
func NewLayout3(blockSize, copySize int) (Layout3, error) {
	if blockSize < page3 || blockSize > 1<<20 || blockSize&(blockSize-1) != 0 {
		return Layout3{}, fmt.Errorf("block size %d", blockSize)
	}
	if !validCopySize3(copySize) {
		return Layout3{}, fmt.Errorf("copy size %d", copySize)
	}
	h := preambleSize + 2*copySize
	return Layout3{B: blockSize, C: copySize, H: h, G0: (page3 - h - 2*recordSize3) / entrySize3}, nil
}

// InlineMax is the largest inline plaintext: 4067 - H.
func (l Layout3) InlineMax() int64 { return int64(page3 - 1 - nonceSize - tagSize - l.H) }

// span is a whole group g >= 1: its metadata page and G blocks.
func (l Layout3) span() int64 { return page3 + group3*int64(l.B) }

// Group returns the group of block n (0 for n < G0) and n's index in it.
func (l Layout3) Group(n int64) (g, i int64) {
	if n < int64(l.G0) {
		return 0, n
	}
	return 1 + (n-int64(l.G0))/group3, (n - int64(l.G0)) % group3
}

// MetaOff is M(g) = 4096 + G0*B + (g-1)*(4096 + G*B), for g >= 1.
func (l Layout3) MetaOff(g int64) int64 {
	return page3 + int64(l.G0)*int64(l.B) + (g-1)*l.span()
}

// DataOff is where block n is stored.
func (l Layout3) DataOff(n int64) int64 {
	g, i := l.Group(n)
	if g == 0 {
		return page3 + n*int64(l.B)
	}
	return l.MetaOff(g) + page3 + i*int64(l.B)
}

// EntryOff is where the entry of block n is.
func (l Layout3) EntryOff(n int64) int64 {
	g, i := l.Group(n)
	if g == 0 {
		return int64(l.H) + 2*recordSize3 + i*entrySize3
	}
	return l.MetaOff(g) + entrySize3 + i*entrySize3
}

// RecordOff is where size record r (0: A, 1: B) is.
func (l Layout3) RecordOff(r int) int64 { return int64(l.H) + int64(r)*recordSize3 }

// PlainSize is "Layout and sizes (version 3)": the plaintext size of a
// backing file of c bytes, and whether c is a size a file has (if not,
// the size is computed as if the damaged tail were plaintext).
func (l Layout3) PlainSize(c int64) (int64, bool) {
	h := int64(l.H)
	switch {
	case c == 0:
		return 0, true
	case c < h:
		return 0, false
	case c == h:
		return 0, true
	case c < h+29:
		return c - h, false
	case c < page3:
		return c - h - 28, true
	case c == page3:
		// Counted as an inline file would be (kmsfs does so), so that
		// reads reach the damage.
		return c - h - 28, false
	}
	d := c - page3
	g0 := int64(l.G0) * int64(l.B)
	if d <= g0 {
		return d, true
	}
	e := d - g0
	q, r := e/l.span(), e%l.span()
	full := g0 + q*group3*int64(l.B)
	switch {
	case r == 0:
		return full, true
	case r <= page3:
		return full + r, false
	}
	return full + r - page3, true
}

// reader3 is one version-3 file being read.
type reader3 struct {
	l      Layout3
	fileID []byte
	g      cipher.AEAD
}

func (r *reader3) ad(x uint64, kind byte) []byte {
	ad := binary.BigEndian.AppendUint64(bytes.Clone(r.fileID), x)
	return append(ad, kind)
}

// tagOnly reports whether e (nonce || tag) is the GCM encryption of the
// empty plaintext with AD(x, kind).
func (r *reader3) tagOnly(e []byte, x uint64, kind byte) bool {
	_, err := r.g.Open(nil, e[:nonceSize], e[nonceSize:], r.ad(x, kind))
	return err == nil
}

// DecodeV3 reads a version-3 backing file whose every key slot unwraps
// to dk, with the volume's block size and copy size. It is what the
// vectors check: dk is given, the wrapped keys are filler.
func DecodeV3(data, dk []byte, blockSize, copySize int) *Result3 {
	return decode3(data, blockSize, copySize, func(*headerCopy) []candidateKey {
		return []candidateKey{{dk: dk}}
	})
}

// DecryptFileV3 decrypts a regular backing file of a version-3 volume
// with key; volumeID, if not empty, is the volume every slot used must
// name.
func DecryptFileV3(data []byte, key *LocalKey, volumeID string, blockSize, copySize int) (*File, error) {
	r := ReadFileV3(data, key, volumeID, blockSize, copySize)
	if err := r.Err(); err != nil {
		return nil, err
	}
	return &File{BlockSize: blockSize, VolumeID: r.VolumeID, Plain: r.Plain, Inline: r.Inline, Holes: r.Holes, HoleGroups: r.HoleGroups}, nil
}

// ReadFileV3 is DecryptFileV3 returning the whole result.
func ReadFileV3(data []byte, key *LocalKey, volumeID string, blockSize, copySize int) *Result3 {
	r := decode3(data, blockSize, copySize, func(c *headerCopy) []candidateKey {
		var out []candidateKey
		for _, s := range c.slots {
			v, err := contextVolume(s.ctx)
			if err != nil || (volumeID != "" && v != volumeID) {
				continue // damage, or another volume's slot
			}
			dk, ok, err := key.unwrap(s.wrapped, s.ctx)
			if ok && err == nil {
				out = append(out, candidateKey{dk: dk, volume: v})
			}
		}
		return out
	})
	if r.Outcome == V3Success && len(data) == 0 {
		r.VolumeID = volumeID
	}
	return r
}

func decode3(data []byte, blockSize, copySize int, keys func(*headerCopy) []candidateKey) *Result3 {
	l, err := NewLayout3(blockSize, copySize)
	if err != nil {
		panic("v2reader: " + err.Error())
	}
	c := int64(len(data))
	res := &Result3{Size: -1}
	if c == 0 {
		res.Outcome, res.Size, res.Plain, res.Inline = V3Success, 0, []byte{}, true
		return res
	}
	if c < int64(l.H) {
		// A torn header: nothing to read it with.
		res.Outcome, res.Size = V3BadSize, 0
		return res
	}
	// "Header (version 3)": the preamble.
	pre := data[:preambleSize]
	if string(pre[:6]) != "KMSFS\x00" || binary.BigEndian.Uint16(pre[6:8]) != 3 ||
		pre[8] < 12 || pre[8] > 20 || 1<<pre[8] != blockSize ||
		int(binary.BigEndian.Uint16(pre[9:11])) != copySize ||
		!bytes.Equal(pre[11:16], make([]byte, 5)) {
		res.Outcome = V3BadPreamble
		return res
	}
	fileID := pre[16:32]
	// The copies, as in version 1 with C for 2032.
	var copies []*headerCopy
	for i := 0; i < 2; i++ {
		off := preambleSize + i*copySize
		hc, err := parseCopy(data[off:off+copySize], i)
		if err == nil && hc != nil {
			copies = append(copies, hc)
		}
	}
	slices.SortStableFunc(copies, func(a, b *headerCopy) int {
		switch {
		case a.seq > b.seq:
			return -1
		case a.seq < b.seq:
			return 1
		}
		return 0
	})
	var dk []byte
	wrongKeyOnly := len(copies) > 0
	for _, hc := range copies {
		cands := keys(hc)
		if len(cands) == 0 {
			wrongKeyOnly = false
		}
		for _, k := range cands {
			switch checkCopy(pre, fileID, hc, k.dk) {
			case copyValid:
				dk, res.VolumeID = k.dk, k.volume
			case copyTampered:
				wrongKeyOnly = false
			}
			if dk != nil {
				break
			}
		}
		if dk != nil {
			break
		}
	}
	if dk == nil {
		if wrongKeyOnly {
			res.Outcome = V3WrongKey
		} else {
			res.Outcome = V3HeaderTampered
		}
		return res
	}
	ck, err := hkdf.Key(sha256.New, dk, fileID, "kmsfs v1 content key", 32)
	if err != nil {
		panic(err)
	}
	g, err := gcm(ck)
	if err != nil {
		panic(err)
	}
	rd := &reader3{l: l, fileID: fileID, g: g}

	// "Layout and sizes (version 3)".
	S, okSize := l.PlainSize(c)
	res.Size = S
	res.Inline = c < page3
	if !okSize {
		res.Outcome = V3BadSize
		return res
	}
	if c == int64(l.H) {
		res.Outcome, res.Plain = V3Success, []byte{}
		return res
	}
	if res.Inline {
		st := data[l.H:]
		p, err := g.Open(nil, st[:nonceSize], st[nonceSize:], rd.ad(0, kindInline))
		if err != nil {
			res.Outcome = V3InlineAuth
			return res
		}
		res.Outcome, res.Plain = V3Success, p
		return res
	}

	// "Size records (version 3)".
	limit := int64(-1) // the first block that must not be read; -1: none
	R := int64(0)
	consistent := false
	for i := 0; i < 2; i++ {
		o := l.RecordOff(i)
		rec := data[o : o+recordSize3]
		s := binary.BigEndian.Uint64(rec[:8])
		if !rd.tagOnly(rec[8:], s, kindSize) {
			continue
		}
		if s == uint64(S) {
			consistent = true
		}
		if s <= 1<<62 {
			R = max(R, int64(s))
		}
	}
	if !consistent {
		if m := min(S, R); m > 0 {
			limit = (m - 1) / int64(l.B)
		} else {
			limit = 0
		}
	}

	// "Entries, holes and blocks (version 3)".
	B := int64(l.B)
	nblocks := (S + B - 1) / B
	plain := make([]byte, 0, S)
	holeGroup := map[int64]bool{}
	for n := int64(0); n < nblocks; n++ {
		if n == limit {
			res.Outcome, res.Block, res.Plain = V3SizeMismatch, n, plain
			return res
		}
		m := min(B, S-n*B)
		grp, _ := l.Group(n)
		if grp > 0 {
			hole, seen := holeGroup[grp]
			if !seen {
				mo := l.MetaOff(grp)
				hole = rd.tagOnly(data[mo:mo+entrySize3], uint64(grp), kindGroup)
				holeGroup[grp] = hole
				if hole {
					res.HoleGroups = append(res.HoleGroups, grp)
				}
			}
			if hole {
				plain = append(plain, make([]byte, m)...)
				res.Holes = append(res.Holes, n)
				continue
			}
		}
		eo := l.EntryOff(n)
		e := data[eo : eo+entrySize3]
		if bytes.Equal(e, make([]byte, entrySize3)) {
			// An entry of zeros is damage, not a hole.
			res.Outcome, res.Block, res.Plain = V3BlockAuth, n, plain
			return res
		}
		if rd.tagOnly(e, uint64(n), kindHole) {
			plain = append(plain, make([]byte, m)...)
			res.Holes = append(res.Holes, n)
			continue
		}
		do := l.DataOff(n)
		ct := append(bytes.Clone(data[do:do+m]), e[nonceSize:]...)
		p, err := g.Open(nil, e[:nonceSize], ct, rd.ad(uint64(n), kindData))
		if err != nil {
			res.Outcome, res.Block, res.Plain = V3BlockAuth, n, plain
			return res
		}
		plain = append(plain, p...)
	}
	res.Outcome, res.Plain = V3Success, plain
	return res
}

// Results of checking a header copy under a data key.
const (
	copyValid = iota
	copyWrongKey
	copyTampered
)

// checkCopy checks a copy under dk: the commitment first, then
// HMAC(MK, preamble || copy[0:len-32]).
func checkCopy(pre, fileID []byte, c *headerCopy, dk []byte) int {
	commit, err := hkdf.Key(sha256.New, dk, fileID, "kmsfs v1 key commitment", 32)
	if err != nil || !hmac.Equal(commit, c.commitment) {
		return copyWrongKey
	}
	if !validCopy(pre, fileID, c, dk) {
		return copyTampered
	}
	return copyValid
}
