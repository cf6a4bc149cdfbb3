package blockcipher

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// Kinds of what a version-3 tag authenticates: the last byte of its
// additional data, AD(x, kind) = file ID || u64(x) || u8(kind).
const (
	kindData   = 0
	kindHole   = 1
	kindGroup  = 2
	kindInline = 3
	kindSize   = 4
)

// V3 reports whether c is a Cipher of version 3 (made by New3).
func (c *Cipher) V3() bool { return c.explicit }

// must3 panics unless c is a version-3 Cipher (New3).
func (c *Cipher) must3() {
	if !c.explicit {
		panic("blockcipher: a version-3 operation on a Cipher made by New")
	}
}

// ad3Buf holds the additional data of a version-3 tag.
type ad3Buf [FileIDSize + 9]byte

func (c *Cipher) ad3(ad *ad3Buf, x uint64, kind byte) []byte {
	copy(ad[:], c.fileID[:])
	binary.BigEndian.PutUint64(ad[FileIDSize:], x)
	ad[FileIDSize+8] = kind
	return ad[:]
}

// tagOnly returns nonce || tag of the GCM encryption of an empty
// plaintext with AD(x, kind), under a fresh random nonce.
func (c *Cipher) tagOnly(x uint64, kind byte) [EntrySize]byte {
	c.must3()
	var e [EntrySize]byte
	if _, err := rand.Read(e[:NonceSize]); err != nil {
		panic(fmt.Sprintf("blockcipher: random nonce: %v", err))
	}
	var ad ad3Buf
	var tag [TagSize]byte
	c.aead.Seal(tag[:0], e[:NonceSize], nil, c.ad3(&ad, x, kind))
	copy(e[NonceSize:], tag[:])
	return e
}

// checkTagOnly reports whether e is a tagOnly of (x, kind).
func (c *Cipher) checkTagOnly(e []byte, x uint64, kind byte) bool {
	c.must3()
	if len(e) != EntrySize {
		return false
	}
	var ad ad3Buf
	var buf [0]byte
	_, err := c.aead.Open(buf[:0], e[:NonceSize], e[NonceSize:], c.ad3(&ad, x, kind))
	return err == nil
}

// HoleEntry returns a fresh hole entry for block n.
func (c *Cipher) HoleEntry(n uint64) [EntrySize]byte { return c.tagOnly(n, kindHole) }

// IsHoleEntry reports whether e is a valid hole entry of block n.
func (c *Cipher) IsHoleEntry(e []byte, n uint64) bool { return c.checkTagOnly(e, n, kindHole) }

// GroupToken returns a fresh group token making group g a hole.
func (c *Cipher) GroupToken(g uint64) [EntrySize]byte { return c.tagOnly(g, kindGroup) }

// IsGroupToken reports whether t is a valid group token of group g.
func (c *Cipher) IsGroupToken(t []byte, g uint64) bool { return c.checkTagOnly(t, g, kindGroup) }

// SizeRecord returns a fresh size record for plaintext size s.
func (c *Cipher) SizeRecord(s uint64) [SizeRecordSize]byte {
	var r [SizeRecordSize]byte
	binary.BigEndian.PutUint64(r[:8], s)
	e := c.tagOnly(s, kindSize)
	copy(r[8:], e[:])
	return r
}

// CheckSizeRecord returns the size a size record holds and whether it is
// valid.
func (c *Cipher) CheckSizeRecord(r []byte) (uint64, bool) {
	if len(r) != SizeRecordSize {
		return 0, false
	}
	s := binary.BigEndian.Uint64(r[:8])
	return s, c.checkTagOnly(r[8:], s, kindSize)
}

// SealInline encrypts the plaintext of an inline file (1..InlineMax
// bytes) and appends nonce || ciphertext || tag to dst.
func (c *Cipher) SealInline(dst, plain []byte) []byte {
	c.must3()
	start := len(dst)
	dst = grow(dst, NonceSize)
	if _, err := rand.Read(dst[start:]); err != nil {
		panic(fmt.Sprintf("blockcipher: random nonce: %v", err))
	}
	var ad ad3Buf
	return c.aead.Seal(dst, dst[start:start+NonceSize], plain, c.ad3(&ad, 0, kindInline))
}

// OpenInline decrypts the stored bytes of an inline file and appends the
// plaintext to dst.
func (c *Cipher) OpenInline(dst, stored []byte) ([]byte, error) {
	c.must3()
	if len(stored) <= Overhead {
		return dst, fmt.Errorf("inline content of %d bytes: %w", len(stored), ErrBadCipherSize)
	}
	var ad ad3Buf
	out, err := c.aead.Open(dst, stored[:NonceSize], stored[NonceSize:], c.ad3(&ad, 0, kindInline))
	if err != nil {
		return dst, fmt.Errorf("inline content: %w", ErrAuth)
	}
	return out, nil
}

// SealData3 encrypts plain (1..BlockSize bytes) as block n in place of
// version 3: the ciphertext, as long as plain, goes to ct (which must have
// room for len(plain)+TagSize bytes; the bytes past len(plain) are
// scratch) and nonce || tag to entry. ct and plain may be the same slice
// or must not overlap.
func (c *Cipher) SealData3(ct, plain []byte, n uint64, entry []byte) {
	c.must3()
	if len(plain) == 0 || len(plain) > c.l.BlockSize || len(entry) != EntrySize || cap(ct) < len(plain)+TagSize {
		panic(fmt.Sprintf("blockcipher: SealData3 of %d bytes into %d, entry %d", len(plain), cap(ct), len(entry)))
	}
	if _, err := rand.Read(entry[:NonceSize]); err != nil {
		panic(fmt.Sprintf("blockcipher: random nonce: %v", err))
	}
	var ad ad3Buf
	out := c.aead.Seal(ct[:0], entry[:NonceSize], plain, c.ad3(&ad, n, kindData))
	copy(entry[NonceSize:], out[len(plain):])
}

// OpenData3 decrypts in place block n of version 3, whose ciphertext is
// buf[:m] and whose entry is entry. buf must have room for m+TagSize
// bytes; the TagSize bytes after the ciphertext are restored afterwards
// (they may hold the next block). On failure the plaintext bytes are
// cleared and a *BlockError wrapping ErrAuth is returned.
func (c *Cipher) OpenData3(buf []byte, m int, n uint64, entry []byte) error {
	c.must3()
	if m <= 0 || m > c.l.BlockSize || len(entry) != EntrySize || cap(buf) < m+TagSize {
		return &BlockError{Block: n, Err: fmt.Errorf("%d bytes: %w", m, ErrBadCipherSize)}
	}
	full := buf[:m+TagSize]
	var saved [TagSize]byte
	copy(saved[:], full[m:])
	copy(full[m:], entry[NonceSize:])
	var ad ad3Buf
	_, err := c.aead.Open(full[:0], entry[:NonceSize], full, c.ad3(&ad, n, kindData))
	copy(full[m:], saved[:])
	if err != nil {
		clear(full[:m])
		return &BlockError{Block: n, Err: ErrAuth}
	}
	return nil
}

// OpenData3To decrypts block n of version 3, whose ciphertext is src[:m]
// and whose entry is entry, into dst[:m]. src must have room for
// m+TagSize bytes; the TagSize bytes after the ciphertext are restored
// afterwards. dst and src must not overlap. On failure dst[:m] is
// cleared and a *BlockError wrapping ErrAuth is returned.
func (c *Cipher) OpenData3To(dst, src []byte, m int, n uint64, entry []byte) error {
	c.must3()
	if m <= 0 || m > c.l.BlockSize || len(entry) != EntrySize || cap(src) < m+TagSize || len(dst) < m {
		return &BlockError{Block: n, Err: fmt.Errorf("%d bytes: %w", m, ErrBadCipherSize)}
	}
	full := src[:m+TagSize]
	var saved [TagSize]byte
	copy(saved[:], full[m:])
	copy(full[m:], entry[NonceSize:])
	var ad ad3Buf
	_, err := c.aead.Open(dst[:0], entry[:NonceSize], full, c.ad3(&ad, n, kindData))
	copy(full[m:], saved[:])
	if err != nil {
		clear(dst[:m])
		return &BlockError{Block: n, Err: ErrAuth}
	}
	return nil
}

// ZeroEntry reports whether an entry (or token) is all zeros: never
// written, or zeroed.
func ZeroEntry(e []byte) bool {
	var z [EntrySize]byte
	return len(e) == EntrySize && subtle.ConstantTimeCompare(e, z[:]) == 1
}
