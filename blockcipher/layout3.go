package blockcipher

import "fmt"

// Sizes of the version-3 layout (docs/FORMAT.md "Regular files, version
// 3").
const (
	// PageSize is the unit the version-3 layout aligns blocks and
	// metadata to.
	PageSize = 4096
	// EntrySize is the size of a block's entry: nonce || tag.
	EntrySize = NonceSize + TagSize
	// SizeRecordSize is the size of a size record: u64 size || nonce || tag.
	SizeRecordSize = 8 + EntrySize
	// GroupBlocks is G, the number of blocks whose entries one metadata
	// page holds.
	GroupBlocks = 128
	// recordsSize is the size of the two size records.
	recordsSize = 2 * SizeRecordSize
	// inlineEnd bounds an inline file: its backing size is below it.
	inlineEnd = PageSize
)

// Layout3 is the size and offset math of a version-3 regular file: a
// header of HeaderLen bytes in the first page, followed either by one
// inline sealed block (the whole file below one page) or, for a paged
// file, by the size records and the entries of group 0 in the first page
// and the blocks and metadata pages after it.
//
// Group 0 holds blocks 0..G0-1, whose entries are in the first page;
// group g >= 1 holds GroupBlocks blocks and starts with its metadata page.
type Layout3 struct {
	// BlockSize is the plaintext block size B, a multiple of PageSize.
	BlockSize int
	// HeaderLen is H, the header's length (32 + 2 * copy size).
	HeaderLen int
	// G0 is the number of blocks of group 0.
	G0 int
}

// NewLayout3 returns the layout of files with the given block size and
// header length.
func NewLayout3(blockSize, headerLen int) (Layout3, error) {
	if blockSize < PageSize || blockSize%PageSize != 0 {
		return Layout3{}, fmt.Errorf("blockcipher: block size %d is not a multiple of %d", blockSize, PageSize)
	}
	g0 := (PageSize - headerLen - recordsSize) / EntrySize
	if headerLen <= 0 || g0 < 1 || PageSize-headerLen-EntrySize < 1 {
		return Layout3{}, fmt.Errorf("blockcipher: header of %d bytes leaves no room in the first page", headerLen)
	}
	return Layout3{BlockSize: blockSize, HeaderLen: headerLen, G0: g0}, nil
}

// InlineMax is the largest plaintext an inline file holds.
func (l Layout3) InlineMax() int64 { return int64(inlineEnd - 1 - l.HeaderLen - Overhead) }

// IsInline reports whether a backing file of c bytes is inline (or only a
// header, or damaged below a page): 0 < c < PageSize.
func (l Layout3) IsInline(c int64) bool { return c > 0 && c < inlineEnd }

// span is the backing size of a whole group g >= 1: its metadata page and
// its blocks.
func (l Layout3) span() int64 { return PageSize + GroupBlocks*int64(l.BlockSize) }

// group0End is the backing offset just past the blocks of group 0.
func (l Layout3) group0End() int64 { return PageSize + int64(l.G0)*int64(l.BlockSize) }

// Group returns the group of block n and n's index in it.
func (l Layout3) Group(n uint64) (g uint64, i int) {
	if n < uint64(l.G0) {
		return 0, int(n)
	}
	m := n - uint64(l.G0)
	return 1 + m/GroupBlocks, int(m % GroupBlocks)
}

// GroupFirst returns the number of the first block of group g.
func (l Layout3) GroupFirst(g uint64) uint64 {
	if g == 0 {
		return 0
	}
	return uint64(l.G0) + (g-1)*GroupBlocks
}

// GroupLen returns the number of blocks of group g.
func (l Layout3) GroupLen(g uint64) int {
	if g == 0 {
		return l.G0
	}
	return GroupBlocks
}

// MetaOff returns the backing offset of the metadata page of group g >= 1
// (its group token).
func (l Layout3) MetaOff(g uint64) int64 {
	if g == 0 {
		panic("blockcipher: group 0 has no metadata page")
	}
	return l.group0End() + int64(g-1)*l.span()
}

// EntryOff returns the backing offset of the entry of block n.
func (l Layout3) EntryOff(n uint64) int64 {
	g, i := l.Group(n)
	if g == 0 {
		return int64(l.HeaderLen) + recordsSize + int64(i)*EntrySize
	}
	return l.MetaOff(g) + EntrySize + int64(i)*EntrySize
}

// RecordOff returns the backing offset of size record r (0 for A, 1 for B).
func (l Layout3) RecordOff(r int) int64 { return int64(l.HeaderLen) + int64(r)*SizeRecordSize }

// DataOff returns the backing offset of the stored bytes of block n.
func (l Layout3) DataOff(n uint64) int64 {
	g, i := l.Group(n)
	if g == 0 {
		return PageSize + int64(i)*int64(l.BlockSize)
	}
	return l.MetaOff(g) + PageSize + int64(i)*int64(l.BlockSize)
}

// PagedSize returns the backing size of a paged file of plainSize > 0
// bytes: the end of its last block.
func (l Layout3) PagedSize(plainSize int64) int64 {
	b := int64(l.BlockSize)
	last := uint64((plainSize - 1) / b)
	return l.DataOff(last) + plainSize - int64(last)*b
}

// InlineSize returns the backing size of an inline file of plainSize
// bytes (plainSize <= InlineMax).
func (l Layout3) InlineSize(plainSize int64) int64 {
	if plainSize == 0 {
		return int64(l.HeaderLen)
	}
	return int64(l.HeaderLen) + Overhead + plainSize
}

// PlainSize returns the plaintext size of a backing file of c bytes. A
// size no file has returns an error wrapping ErrBadCipherSize and, as the
// size, what the damaged tail would hold as plaintext (so that reads
// reach it and fail).
func (l Layout3) PlainSize(c int64) (int64, error) {
	h := int64(l.HeaderLen)
	switch {
	case c == 0:
		return 0, nil
	case c < 0:
		return 0, fmt.Errorf("blockcipher: backing file size %d: %w", c, ErrBadCipherSize)
	case c < h:
		return 0, fmt.Errorf("blockcipher: backing file size %d is shorter than the %d-byte header: %w", c, h, ErrBadCipherSize)
	case c == h:
		return 0, nil
	case c < inlineEnd:
		if c <= h+Overhead {
			return c - h, fmt.Errorf("blockcipher: inline file of %d bytes holds no plaintext: %w", c, ErrBadCipherSize)
		}
		return c - h - Overhead, nil
	case c == inlineEnd:
		// Counted as an inline file would be, so that reads reach the
		// damage and fail instead of the file looking empty.
		return c - h - Overhead, fmt.Errorf("blockcipher: backing file of exactly one page: %w", ErrBadCipherSize)
	}
	d := c - PageSize
	g0 := int64(l.G0) * int64(l.BlockSize)
	if d <= g0 {
		return d, nil
	}
	e := d - g0
	q, r := e/l.span(), e%l.span()
	full := g0 + q*GroupBlocks*int64(l.BlockSize)
	switch {
	case r == 0:
		return full, nil
	case r <= PageSize:
		return full + r, fmt.Errorf("blockcipher: backing file size %d ends in metadata page %d: %w", c, q+1, ErrBadCipherSize)
	}
	return full + r - PageSize, nil
}
