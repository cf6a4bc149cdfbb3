package v2reader

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCMACRFC4493 checks the CMAC of S2V with the examples of RFC 4493
// section 4 (AES-128; NewSIV takes the CMAC key as its first half).
func TestCMACRFC4493(t *testing.T) {
	key := unhex(t, "2b7e1516 28aed2a6 abf71588 09cf4f3c")
	s, err := NewSIV(append(key, make([]byte, 16)...))
	if err != nil {
		t.Fatal(err)
	}
	msg := unhex(t, "6bc1bee2 2e409f96 e93d7e11 7393172a ae2d8a57 1e03ac9c 9eb76fac 45af8e51"+
		"30c81c46 a35ce411 e5fbc119 1a0a52ef f69f2445 df4f9b17 ad2b417b e66c3710")
	for _, c := range []struct {
		n    int
		want string
	}{
		{0, "bb1d6929 e9593728 7fa37d12 9b756746"},
		{16, "070a16b4 6b4d4144 f79bdd9d d04a287c"},
		{40, "dfa66747 de9ae630 30ca3261 1497c827"},
		{64, "51f0bebf 7e3b9d92 fc497417 79363cfe"},
	} {
		got := s.CMAC(msg[:c.n])
		if want := unhex(t, c.want); !bytes.Equal(got[:], want) {
			t.Errorf("CMAC of %d bytes = %x, want %x", c.n, got, want)
		}
	}
}

// TestSIVRFC5297 checks AES-SIV against RFC 5297 Appendix A.1
// (deterministic, one associated-data string) and A.2 (three strings,
// the last a nonce), both with a 256-bit key (AES-128).
func TestSIVRFC5297(t *testing.T) {
	for _, c := range []struct {
		name, key string
		ad        []string
		plain     string
		want      string
	}{
		{
			name:  "A.1",
			key:   "fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff",
			ad:    []string{"10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627"},
			plain: "11223344 55667788 99aabbcc ddee",
			want:  "85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c",
		},
		{
			name: "A.2",
			key:  "7f7e7d7c 7b7a7978 77767574 73727170 40414243 44454647 48494a4b 4c4d4e4f",
			ad: []string{
				"00112233 44556677 8899aabb ccddeeff deaddada deaddada ffeeddcc bbaa9988 77665544 33221100",
				"10203040 50607080 90a0",
				"09f91102 9d74e35b d84156c5 635688c0",
			},
			plain: "74686973 20697320 736f6d65 20706c61 696e7465 78742074 6f20656e 63727970 74207573 696e6720 5349562d 414553",
			want: "7bdb6e3b 432667eb 06f4d14b ff2fbd0f cb900f2f ddbe4043 26601965 c889bf17 dba77ceb 094fa663 b7a3f748 ba8af829" +
				"ea64ad54 4a272e9c 485b62a3 fd5c0d",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewSIV(unhex(t, c.key))
			if err != nil {
				t.Fatal(err)
			}
			var ad [][]byte
			for _, a := range c.ad {
				ad = append(ad, unhex(t, a))
			}
			plain, want := unhex(t, c.plain), unhex(t, c.want)
			got := s.Seal(plain, ad...)
			if !bytes.Equal(got, want) {
				t.Fatalf("Seal = %x, want %x", got, want)
			}
			p, err := s.Open(got, ad...)
			if err != nil || !bytes.Equal(p, plain) {
				t.Fatalf("Open = %x, %v; want %x", p, err, plain)
			}
			bad := bytes.Clone(got)
			bad[len(bad)-1] ^= 1
			if _, err := s.Open(bad, ad...); !errors.Is(err, ErrAuth) {
				t.Errorf("Open(altered) = %v, want ErrAuth", err)
			}
			if _, err := s.Open(got, ad[:len(ad)-1]...); !errors.Is(err, ErrAuth) {
				t.Errorf("Open(one string less) = %v, want ErrAuth", err)
			}
		})
	}
}

// TestSIVKeySizes checks that every key size round-trips plaintexts
// around the block boundaries of S2V (shorter than, equal to and longer
// than one block), and that other key sizes are refused.
func TestSIVKeySizes(t *testing.T) {
	for _, n := range []int{32, 48, 64} {
		key := bytes.Repeat([]byte{byte(n)}, n)
		s, err := NewSIV(key)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range []int{0, 1, 15, 16, 17, 31, 32, 33, 100} {
			p := bytes.Repeat([]byte{'p'}, l)
			c := s.Seal(p, []byte("ad"))
			if len(c) != l+16 {
				t.Errorf("key %d: Seal(%d bytes) is %d bytes", n, l, len(c))
			}
			if got, err := s.Open(c, []byte("ad")); err != nil || !bytes.Equal(got, p) {
				t.Errorf("key %d: Open(Seal(%d bytes)) = %x, %v", n, l, got, err)
			}
			if _, err := s.Open(c, []byte("ae")); err == nil {
				t.Errorf("key %d: Open under other associated data succeeded", n)
			}
		}
	}
	for _, n := range []int{0, 16, 24, 63, 65} {
		if _, err := NewSIV(make([]byte, n)); err == nil {
			t.Errorf("NewSIV(%d bytes) = nil error", n)
		}
	}
}

// TestNamesEncodings checks the lengths and forms of FORMAT.md "Entry
// names" and the strictness of this reader.
func TestNamesEncodings(t *testing.T) {
	n, err := NewNames(bytes.Repeat([]byte{7}, NamesKeySize))
	if err != nil {
		t.Fatal(err)
	}
	dir := bytes.Repeat([]byte{1}, DirIDSize)
	for l := 1; l <= 255; l++ {
		name := bytes.Repeat([]byte{'n'}, l)
		b, e := n.EncryptName(dir, name)
		// ⌈4(16+n)/3⌉ characters.
		if want := (4*(16+l) + 2) / 3; len(e) != want {
			t.Fatalf("E of a %d-byte name is %d characters, want %d", l, len(e), want)
		}
		if long := b != e; long != (l > 175) {
			t.Fatalf("%d-byte name: long = %v", l, long)
		}
		if b != e && (len(b) != 54 || !IsLongBacking(b)) {
			t.Fatalf("%d-byte name: long backing name %q", l, b)
		}
		got, err := n.DecryptName(dir, b, []byte(e))
		if err != nil || !bytes.Equal(got, name) {
			t.Fatalf("DecryptName(%d-byte name) = %q, %v", l, got, err)
		}
	}
	// A short E stored as a long entry is not what a writer makes.
	b, e := n.EncryptName(dir, []byte("short"))
	if _, err := n.DecryptName(dir, LongBacking(e), []byte(e)); !errors.Is(err, ErrRefused) {
		t.Errorf("DecryptName(short name as a long entry) = %v, want ErrRefused", err)
	}
	// The unused bits of the last character must be zero: another
	// spelling of the same bytes is refused.
	last := strings.IndexByte(b64Alphabet, b[len(b)-1])
	alias := b[:len(b)-1] + string(b64Alphabet[last^1])
	if _, err := n.DecryptName(dir, alias, nil); !errors.Is(err, ErrRefused) {
		t.Errorf("DecryptName(non-canonical base64) = %v, want ErrRefused", err)
	}
}

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
