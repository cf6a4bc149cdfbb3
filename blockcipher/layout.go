package blockcipher

import "fmt"

// Layout is the size math for one volume: the plaintext block size and the
// offset of block 0 in the backing file. All plaintext/ciphertext offset
// arithmetic of kmsfs lives here (docs/FORMAT.md "Blocks" and "Sizes").
//
// Names say which side an offset or size is on: "plain" for the file as seen
// through the mount, "cipher" for the backing file.
type Layout struct {
	// BlockSize is the plaintext block size B.
	BlockSize int
	// DataOffset is the backing file offset of block 0 (the header size).
	DataOffset int64
}

// check reports whether the layout is usable.
func (l Layout) check() error {
	if l.BlockSize <= 0 {
		return fmt.Errorf("block size %d, want > 0", l.BlockSize)
	}
	if l.DataOffset < 0 {
		return fmt.Errorf("data offset %d, want >= 0", l.DataOffset)
	}
	return nil
}

// CipherBlockSize returns the stored size of a full block, BlockSize + Overhead.
func (l Layout) CipherBlockSize() int { return l.BlockSize + Overhead }

// BlockNo returns the number of the block holding plaintext offset plainOff.
func (l Layout) BlockNo(plainOff int64) uint64 { return uint64(plainOff / int64(l.BlockSize)) }

// BlockPlainOff returns the plaintext offset of the first byte of block n.
func (l Layout) BlockPlainOff(n uint64) int64 { return int64(n) * int64(l.BlockSize) }

// BlockCipherOff returns the backing file offset of block n.
func (l Layout) BlockCipherOff(n uint64) int64 {
	return l.DataOffset + int64(n)*int64(l.CipherBlockSize())
}

// PlainSize returns the plaintext size of a backing file of cipherSize bytes.
// A 0-byte backing file is a 0-byte plaintext file. A size in
// (0, DataOffset) (a torn header) returns 0 and an error wrapping
// ErrBadCipherSize; a last block with 1..Overhead bytes returns the size of
// the complete blocks before it and an error wrapping ErrBadCipherSize.
func (l Layout) PlainSize(cipherSize int64) (int64, error) {
	switch {
	case cipherSize == 0:
		return 0, nil
	case cipherSize < 0:
		return 0, fmt.Errorf("blockcipher: backing file size %d: %w", cipherSize, ErrBadCipherSize)
	case cipherSize < l.DataOffset:
		return 0, fmt.Errorf("blockcipher: backing file size %d is shorter than the %d-byte header: %w",
			cipherSize, l.DataOffset, ErrBadCipherSize)
	}
	d := cipherSize - l.DataOffset
	cb := int64(l.CipherBlockSize())
	n, r := d/cb, d%cb
	full := n * int64(l.BlockSize)
	switch {
	case r == 0:
		return full, nil
	case r <= Overhead:
		return full, fmt.Errorf("blockcipher: backing file size %d ends in a %d-byte block %d with no plaintext: %w",
			cipherSize, r, n, ErrBadCipherSize)
	}
	return full + r - Overhead, nil
}

// CipherSize returns the backing file size of a plaintext of plainSize
// bytes. CipherSize(0) is DataOffset, a file with a header and no blocks;
// a 0-byte backing file (no header yet) is also a 0-byte plaintext, and the
// file system handles that case itself.
func (l Layout) CipherSize(plainSize int64) int64 {
	b := int64(l.BlockSize)
	n, r := plainSize/b, plainSize%b
	size := l.DataOffset + n*int64(l.CipherBlockSize())
	if r > 0 {
		size += r + Overhead
	}
	return size
}

// BlockRange returns the first and last block touched by the plaintext range
// [off, off+n). n must be > 0.
func (l Layout) BlockRange(off, n int64) (first, last uint64) {
	return l.BlockNo(off), l.BlockNo(off + n - 1)
}

// SealedSize returns the size of the ciphertext of a plaintext of n bytes
// made of consecutive blocks (the last one possibly partial), as produced
// by SealBlocks.
func (l Layout) SealedSize(n int) int {
	if n <= 0 {
		return 0
	}
	blocks := (n + l.BlockSize - 1) / l.BlockSize
	return n + blocks*Overhead
}

// OpenedSize returns the size of the plaintext of n bytes of consecutive
// ciphertext blocks, as produced by OpenBlocks, and an error wrapping
// ErrBadCipherSize if the last block is 1..Overhead bytes (its plaintext is
// then not counted).
func (l Layout) OpenedSize(n int) (int, error) {
	cb := l.CipherBlockSize()
	full, r := n/cb, n%cb
	size := full * l.BlockSize
	if r == 0 {
		return size, nil
	}
	if r <= Overhead {
		return size, fmt.Errorf("blockcipher: %d-byte last block: %w", r, ErrBadCipherSize)
	}
	return size + r - Overhead, nil
}
