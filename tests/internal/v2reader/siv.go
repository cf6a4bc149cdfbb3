// Package v2reader reads what a kmsfs volume of format version 2 or 3
// keeps in its backing directory: encrypted entry names, symlink targets
// and extended attributes, the volume configuration, and regular files in
// the layout of versions 1 and 2 (files.go) and of version 3, with its
// inline files, pages, size records, hole entries and group tokens
// (files3.go).
//
// It is written from docs/FORMAT.md alone, as a second implementation
// that the tests compare kmsfs with: it shares no code with kmsfs (it
// imports nothing from github.com/kmsfs/kmsfs and not tink-go), and its
// AES-SIV is built here from crypto/aes and crypto/cipher (RFC 5297).
// It favours plainness over speed.
package v2reader

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"errors"
	"fmt"
)

// ErrAuth reports a SIV ciphertext whose synthetic IV does not check.
var ErrAuth = errors.New("v2reader: AES-SIV authentication failed")

// SIV is AES-SIV (RFC 5297, "AES-CMAC-SIV"): a key of 32, 48 or 64
// bytes, whose first half is the S2V (CMAC) key and second half the CTR
// key.
type SIV struct {
	mac    cipher.Block // K1: CMAC in S2V
	ctr    cipher.Block // K2: CTR
	k1, k2 [16]byte     // CMAC subkeys (RFC 4493 2.3)
}

// NewSIV returns AES-SIV under key (32, 48 or 64 bytes: AES-128, -192 or
// -256).
func NewSIV(key []byte) (*SIV, error) {
	switch len(key) {
	case 32, 48, 64:
	default:
		return nil, fmt.Errorf("v2reader: AES-SIV key of %d bytes, want 32, 48 or 64", len(key))
	}
	h := len(key) / 2
	mac, err := aes.NewCipher(key[:h])
	if err != nil {
		return nil, err
	}
	ctr, err := aes.NewCipher(key[h:])
	if err != nil {
		return nil, err
	}
	s := &SIV{mac: mac, ctr: ctr}
	// RFC 4493 2.3: L = AES(K, 0); K1 = dbl(L); K2 = dbl(K1).
	var l [16]byte
	mac.Encrypt(l[:], l[:])
	s.k1 = dbl(l)
	s.k2 = dbl(s.k1)
	return s, nil
}

// dbl multiplies a block by x in GF(2^128) (RFC 5297 2.3: shift left by
// one bit, and xor 0x87 into the last byte if the bit shifted out was 1).
func dbl(b [16]byte) [16]byte {
	var out [16]byte
	for i := 0; i < 15; i++ {
		out[i] = b[i]<<1 | b[i+1]>>7
	}
	out[15] = b[15] << 1
	if b[0]&0x80 != 0 {
		out[15] ^= 0x87
	}
	return out
}

func xorBlock(a, b [16]byte) [16]byte {
	for i := range a {
		a[i] ^= b[i]
	}
	return a
}

// CMAC is AES-CMAC (RFC 4493) of msg under the S2V key.
func (s *SIV) CMAC(msg []byte) [16]byte {
	var x [16]byte
	// All blocks but the last go through CBC as they are.
	n := (len(msg) + 15) / 16
	if n == 0 {
		n = 1
	}
	for i := 0; i < n-1; i++ {
		var m [16]byte
		copy(m[:], msg[16*i:])
		x = xorBlock(x, m)
		s.mac.Encrypt(x[:], x[:])
	}
	// The last block: xor K1 if it is complete, else pad with 10..0 and
	// xor K2.
	var last [16]byte
	rest := msg[16*(n-1):]
	if len(rest) == 16 {
		copy(last[:], rest)
		last = xorBlock(last, s.k1)
	} else {
		copy(last[:], rest)
		last[len(rest)] = 0x80
		last = xorBlock(last, s.k2)
	}
	x = xorBlock(x, last)
	s.mac.Encrypt(x[:], x[:])
	return x
}

// S2V is RFC 5297's S2V over the strings strs (the last is the
// plaintext).
func (s *SIV) S2V(strs ...[]byte) [16]byte {
	if len(strs) == 0 {
		var one [16]byte
		one[15] = 1
		return s.CMAC(one[:])
	}
	var zero [16]byte
	d := s.CMAC(zero[:])
	for _, si := range strs[:len(strs)-1] {
		d = xorBlock(dbl(d), s.CMAC(si))
	}
	sn := strs[len(strs)-1]
	var t []byte
	if len(sn) >= 16 {
		// T = Sn xorend D: D xored into the last 16 bytes of Sn.
		t = append([]byte(nil), sn...)
		for i := 0; i < 16; i++ {
			t[len(t)-16+i] ^= d[i]
		}
	} else {
		// T = dbl(D) xor pad(Sn).
		var p [16]byte
		copy(p[:], sn)
		p[len(sn)] = 0x80
		x := xorBlock(dbl(d), p)
		t = x[:]
	}
	return s.CMAC(t)
}

// xorCTR runs AES-CTR under the CTR key from Q = V bitand (1^64 || 0^1 ||
// 1^31 || 0^1 || 1^31) (RFC 5297 2.6: the top bits of the last two 32-bit
// words of the synthetic IV cleared), the counter a 128-bit big-endian
// integer.
func (s *SIV) xorCTR(v [16]byte, dst, src []byte) {
	q := v
	q[8] &= 0x7f
	q[12] &= 0x7f
	cipher.NewCTR(s.ctr, q[:]).XORKeyStream(dst, src)
}

// Seal encrypts p with the associated-data strings ad: the synthetic IV
// (16 bytes) followed by the ciphertext.
func (s *SIV) Seal(p []byte, ad ...[]byte) []byte {
	v := s.S2V(append(append([][]byte(nil), ad...), p)...)
	out := make([]byte, 16+len(p))
	copy(out, v[:])
	s.xorCTR(v, out[16:], p)
	return out
}

// Open decrypts c (synthetic IV and ciphertext) with the associated-data
// strings ad; it fails unless the IV checks.
func (s *SIV) Open(c []byte, ad ...[]byte) ([]byte, error) {
	if len(c) < 16 {
		return nil, ErrAuth
	}
	v := [16]byte(c[:16])
	p := make([]byte, len(c)-16)
	s.xorCTR(v, p, c[16:])
	t := s.S2V(append(append([][]byte(nil), ad...), p)...)
	if subtle.ConstantTimeCompare(t[:], v[:]) != 1 {
		return nil, ErrAuth
	}
	return p, nil
}
