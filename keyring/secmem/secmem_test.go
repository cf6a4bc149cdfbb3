package secmem

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"hash"
	"reflect"
	"testing"
	"unsafe"
)

// testKey is a key no memory holds by chance.
func testKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(0xa0 + i)
	}
	return k
}

// span is memory a test watches: the bytes of one object.
type span []byte

// spanOf returns the bytes of the object p points to, of type t.
func spanOf(p unsafe.Pointer, t reflect.Type) span {
	return unsafe.Slice((*byte)(p), t.Size())
}

// holds reports whether s holds any 16-byte window of key, or of key
// XORed with an HMAC pad.
func (s span) holds(key []byte) bool {
	for _, pad := range []byte{0, 0x36, 0x5c} {
		k := bytes.Clone(key)
		for i := range k {
			k[i] ^= pad
		}
		for i := 0; i+16 <= len(k); i += 8 {
			if bytes.Contains(s, k[i:i+16]) {
				return true
			}
		}
	}
	return false
}

func TestWipeAEAD(t *testing.T) {
	key := testKey()
	for _, tc := range []struct {
		name string
		make func(cipher.Block) (cipher.AEAD, error)
	}{
		{"NewGCM", cipher.NewGCM},
		{"NewGCMWithRandomNonce", cipher.NewGCMWithRandomNonce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := aes.NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			a, err := tc.make(b)
			if err != nil {
				t.Fatal(err)
			}
			// The AEAD's state is the pointer in its interface, or in the
			// single field of the struct there.
			v := reflect.ValueOf(a)
			if v.Kind() == reflect.Struct {
				v = v.Field(0)
			}
			if v.Kind() != reflect.Pointer {
				t.Fatalf("%T: cannot find its state (kind %v)", a, v.Kind())
			}
			state := spanOf(v.UnsafePointer(), v.Type().Elem())
			blk := reflect.ValueOf(b)
			bstate := spanOf(blk.UnsafePointer(), blk.Type().Elem())
			if !state.holds(key) || !bstate.holds(key) {
				t.Fatalf("the AES state does not hold the key before Wipe: the test cannot see it")
			}
			Wipe(a)
			Wipe(b)
			if state.holds(key) {
				t.Errorf("%T still holds the key after Wipe", a)
			}
			if bstate.holds(key) {
				t.Errorf("%T still holds the key after Wipe", b)
			}
			if !bytes.Equal(state, make([]byte, len(state))) {
				t.Errorf("%T state not all zeros after Wipe", a)
			}
		})
	}
}

func TestWipeHMAC(t *testing.T) {
	key := testKey()
	msg := testKey()[:20] // a partial block stays buffered in the digest
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	sum := h.Sum(nil)

	// Collect the spans of the HMAC and its inner and outer digests.
	v := reflect.ValueOf(h).Elem()
	var spans []span
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				spans = append(spans, spanOf(v.UnsafePointer(), v.Type().Elem()))
				walk(reflect.NewAt(v.Type().Elem(), v.UnsafePointer()).Elem())
			}
		case reflect.Interface:
			walk(v.Elem())
		case reflect.Slice:
			if v.Cap() > 0 {
				spans = append(spans, unsafe.Slice((*byte)(v.UnsafePointer()), v.Cap()*int(v.Type().Elem().Size())))
			}
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i))
			}
		}
	}
	walk(v)
	if len(spans) < 4 {
		t.Fatalf("found %d spans in %T, want its pads and digests", len(spans), h)
	}
	heldKey, heldMsg := false, false
	for _, s := range spans {
		heldKey = heldKey || s.holds(key)
		heldMsg = heldMsg || bytes.Contains(s, msg[:16])
	}
	if !heldKey || !heldMsg {
		t.Fatalf("HMAC state holds key %v, message %v before Wipe: the test cannot see it", heldKey, heldMsg)
	}
	Wipe(h)
	for i, s := range spans {
		if s.holds(key) || bytes.Contains(s, msg[:16]) {
			t.Errorf("span %d of the HMAC still holds key or message after Wipe", i)
		}
	}
	// A new HMAC still works: nothing shared was wiped.
	h2 := hmac.New(sha256.New, key)
	h2.Write(msg)
	if !bytes.Equal(h2.Sum(nil), sum) {
		t.Error("HMAC-SHA256 changed after a Wipe")
	}
}

func TestWipeOwnStruct(t *testing.T) {
	type inner struct {
		k [32]byte
		h hash.Hash
	}
	type outer struct {
		name  string
		keys  [][]byte
		in    *inner
		self  *outer
		plain struct{ n int }
		m     map[string]int
	}
	key := testKey()
	in := &inner{h: sha256.New()}
	copy(in.k[:], key)
	in.h.Write(key[:20])
	k1, k2 := bytes.Clone(key), bytes.Clone(key)
	o := &outer{name: "x", keys: [][]byte{k1, k2}, in: in, m: map[string]int{"a": 1}}
	o.self = o
	o.plain.n = 7
	Wipe(o)
	if o.in != nil || o.keys != nil || o.self != nil || o.m != nil || o.name != "" || o.plain.n != 0 {
		t.Errorf("Wipe left fields set: %+v", o)
	}
	for i, b := range [][]byte{k1, k2, in.k[:]} {
		if !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("buffer %d not wiped: %x", i, b)
		}
	}
	if in.h != nil {
		t.Errorf("inner hash not cleared")
	}
}

func TestWipeNilAndValues(t *testing.T) {
	Wipe(nil)
	var p *int
	Wipe(p)
	Wipe(3)                        // a value with no pointers: nothing to do
	Wipe(struct{ a, b int }{1, 2}) // a copy: nothing reachable
	buf := testKey()
	Wipe(struct{ b []byte }{buf}) // a copy pointing at the caller's buffer
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Errorf("buffer reachable from a struct value not wiped: %x", buf)
	}
}

func TestDo(t *testing.T) {
	ran := false
	Do(func() { ran = true })
	if !ran {
		t.Fatal("Do did not call f")
	}
	t.Logf("Erasing = %v", Erasing)
}

func TestHKDF(t *testing.T) {
	// RFC 5869, test case 3 (no salt, no info), first 32 bytes of OKM.
	ikm := bytes.Repeat([]byte{0x0b}, 22)
	want := "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
	got := make([]byte, 32)
	if err := HKDF(got, ikm, nil, ""); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%x", got) != want {
		t.Errorf("HKDF = %x, want %s", got, want)
	}
	// Against crypto/hkdf, with salt and info, and a short output.
	for _, n := range []int{16, 32} {
		salt, info := []byte("salt"), "kmsfs test info"
		ref, err := hkdf.Key(sha256.New, testKey(), salt, info, n)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n)
		if err := HKDF(got, testKey(), salt, info); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, ref) {
			t.Errorf("HKDF(%d bytes) = %x, want %x", n, got, ref)
		}
	}
	if err := HKDF(make([]byte, 33), testKey(), nil, ""); err == nil {
		t.Error("HKDF of 33 bytes: no error")
	}
}

func TestNewAESGCM(t *testing.T) {
	for _, random := range []bool{false, true} {
		a, err := NewAESGCM(testKey(), random)
		if err != nil {
			t.Fatal(err)
		}
		var nonce []byte
		if !random {
			nonce = make([]byte, a.NonceSize())
		}
		ct := a.Seal(nil, nonce, []byte("hello"), nil)
		b, err := aes.NewCipher(testKey())
		if err != nil {
			t.Fatal(err)
		}
		g, _ := cipher.NewGCM(b)
		if random {
			nonce, ct = ct[:12], ct[12:]
		}
		if pt, err := g.Open(nil, nonce, ct, nil); err != nil || string(pt) != "hello" {
			t.Errorf("random nonce %v: Open = %q, %v", random, pt, err)
		}
		Wipe(a)
	}
	if _, err := NewAESGCM(make([]byte, 7), false); err == nil {
		t.Error("NewAESGCM with a 7-byte key: no error")
	}
}

// TestHMACSHA256 compares the stack HMAC with crypto/hmac over keys and
// messages of every shape it takes, and checks its limits.
func TestHMACSHA256(t *testing.T) {
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*131 + n)
		}
		return b
	}
	for _, kl := range []int{0, 1, 16, 32, 63, 64} {
		for _, ml := range []int{0, 1, 31, 55, 56, 64, 2032, MaxHMACInput} {
			key, msg := rnd(kl), rnd(ml)
			m := hmac.New(sha256.New, key)
			m.Write(msg)
			want := m.Sum(nil)
			var got [32]byte
			cut := ml / 3
			if err := HMACSHA256(&got, key, msg[:cut], msg[cut:]); err != nil {
				t.Fatalf("HMACSHA256(key %d, msg %d) = %v", kl, ml, err)
			}
			if !bytes.Equal(got[:], want) {
				t.Errorf("HMACSHA256(key %d, msg %d) = %x, want %x", kl, ml, got, want)
			}
		}
	}
	var out [32]byte
	if err := HMACSHA256(&out, rnd(65), nil); err == nil {
		t.Error("HMACSHA256 with a 65-byte key = nil, want an error")
	}
	if err := HMACSHA256(&out, nil, rnd(MaxHMACInput+1)); err == nil {
		t.Error("HMACSHA256 of a too long message = nil, want an error")
	}
	if n := testing.AllocsPerRun(100, func() { HMACSHA256(&out, rnd(32)[:32:32], []byte("x")) }); n > 1 {
		t.Errorf("HMACSHA256 allocates %v times per call, want none (beyond the test's own)", n)
	}
}
