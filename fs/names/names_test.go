package names

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// testKey is a fixed names key.
var testKey = func() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i*7 + 1)
	}
	return k
}()

var (
	dirA = [IDSize]byte{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf}
	dirB = [IDSize]byte{0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf}
)

func newCipher(t testing.TB) *Cipher {
	t.Helper()
	c, err := New(testKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nameOf returns a valid name of exactly n bytes, made of the UTF-8 text
// unit repeated and padded with ASCII.
func nameOf(unit string, n int) string {
	s := strings.Repeat(unit, n/len(unit))
	return s + strings.Repeat("x", n-len(s))
}

// encodedLen is the length of E for an n-byte name: base64url without
// padding of 16 + n bytes.
func encodedLen(n int) int { return (4*(16+n) + 2) / 3 }

func TestNew(t *testing.T) {
	for _, n := range []int{0, 32, 63, 65} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New(%d-byte key) = nil error, want an error", n)
		}
	}
}

// TestNameRoundTrip encrypts and decrypts names at the lengths that
// matter: 1 byte, 175 (the longest short name), 176 (the shortest long
// name) and 255 (NAME_MAX), in ASCII and in multi-byte UTF-8.
func TestNameRoundTrip(t *testing.T) {
	c := newCipher(t)
	for _, n := range []int{1, 2, 3, 174, 175, 176, 177, 254, 255} {
		for _, unit := range []string{"a", "é", "日本", "🙂"} {
			name := nameOf(unit, n)
			if len(name) != n || !utf8.ValidString(name) {
				t.Fatalf("test name of %d bytes is %d bytes", n, len(name))
			}
			e, err := c.EncryptName(dirA, name)
			if err != nil {
				t.Fatalf("EncryptName(%d bytes %q) = %v", n, unit, err)
			}
			if len(e.Encoded) != encodedLen(n) {
				t.Errorf("%d-byte name: E is %d characters, want %d", n, len(e.Encoded), encodedLen(n))
			}
			wantLong := n > 175
			if e.Long() != wantLong {
				t.Errorf("%d-byte name: Long() = %v, want %v", n, e.Long(), wantLong)
			}
			if len(e.Backing) > MaxBackingName {
				t.Errorf("%d-byte name: backing name of %d characters", n, len(e.Backing))
			}
			if wantLong {
				if e.Backing != LongName(e.Encoded) || len(e.Backing) != 54 || !strings.HasPrefix(e.Backing, LongPrefix) {
					t.Errorf("%d-byte name: backing %q, want %q (54 characters)", n, e.Backing, LongName(e.Encoded))
				}
				if !IsLong(e.Backing) || Internal(e.Backing) || !Internal(e.Backing+LongSuffix) {
					t.Errorf("%d-byte name: IsLong/Internal wrong for %q", n, e.Backing)
				}
			} else {
				if e.Backing != e.Encoded || strings.Contains(e.Backing, ".") || IsLong(e.Backing) || Internal(e.Backing) {
					t.Errorf("%d-byte name: backing %q, want E %q without dots", n, e.Backing, e.Encoded)
				}
			}
			// Deterministic within a directory, different across them.
			e2, _ := c.EncryptName(dirA, name)
			if e2 != e {
				t.Errorf("%d-byte name: two encryptions differ: %v, %v", n, e, e2)
			}
			eb, _ := c.EncryptName(dirB, name)
			if eb.Encoded == e.Encoded {
				t.Errorf("%d-byte name: same E in two directories", n)
			}
			got, err := c.DecryptName(dirA, e.Backing, e.Encoded)
			if err != nil || got != name {
				t.Errorf("DecryptName(%d-byte name) = %q, %v; want %q", n, got, err, name)
			}
		}
	}
}

// TestNameBoundary checks every length: E has ⌈4(16+n)/3⌉ characters and a
// name is long exactly from 176 bytes on, where E no longer fits 255.
func TestNameBoundary(t *testing.T) {
	c := newCipher(t)
	for n := 1; n <= MaxName; n++ {
		e, err := c.EncryptName(dirA, nameOf("a", n))
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Encoded) != encodedLen(n) || e.Long() != (len(e.Encoded) > 255) || e.Long() != (n >= 176) {
			t.Fatalf("%d-byte name: E of %d characters, long %v", n, len(e.Encoded), e.Long())
		}
	}
}

func TestInvalidNames(t *testing.T) {
	c := newCipher(t)
	for _, name := range []string{"", ".", "..", "a/b", "/", "a\x00b", "\x00", strings.Repeat("a", 256), nameOf("é", 300)} {
		if e, err := c.EncryptName(dirA, name); err == nil {
			t.Errorf("EncryptName(%q) = %v, nil; want an error", name, e)
		}
	}
	if _, err := c.EncryptName(dirA, strings.Repeat("a", 256)); !errors.Is(err, ErrTooLong) {
		t.Errorf("EncryptName(256 bytes) = %v, want ErrTooLong", err)
	}
	// Names that are not "." and ".." but look like them are fine.
	for _, name := range []string{"...", ".a", "a.", " ", "\n", "\xff\xfe"} {
		e, err := c.EncryptName(dirA, name)
		if err != nil {
			t.Errorf("EncryptName(%q) = %v, want nil", name, err)
			continue
		}
		if got, err := c.DecryptName(dirA, e.Backing, e.Encoded); err != nil || got != name {
			t.Errorf("DecryptName(EncryptName(%q)) = %q, %v", name, got, err)
		}
	}
}

// TestNameOtherDirectory: a name is bound to its directory's ID.
func TestNameOtherDirectory(t *testing.T) {
	c := newCipher(t)
	for _, n := range []int{1, 175, 176, 255} {
		e, err := c.EncryptName(dirA, nameOf("a", n))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.DecryptName(dirB, e.Backing, e.Encoded); !errors.Is(err, ErrUndecryptable) {
			t.Errorf("DecryptName of a %d-byte name under another directory = %q, %v; want ErrUndecryptable", n, got, err)
		}
	}
}

// TestLongNameMismatch: a long entry whose .name content does not hash to
// its backing name is refused, even when the content is a valid E.
func TestLongNameMismatch(t *testing.T) {
	c := newCipher(t)
	e1, _ := c.EncryptName(dirA, nameOf("a", 200))
	e2, _ := c.EncryptName(dirA, nameOf("b", 200))
	if got, err := c.DecryptName(dirA, e1.Backing, e2.Encoded); !errors.Is(err, ErrUndecryptable) {
		t.Errorf("DecryptName(backing of one long name, E of another) = %q, %v; want ErrUndecryptable", got, err)
	}
	// Content with a trailing newline does not hash to the name either.
	if got, err := c.DecryptName(dirA, e1.Backing, e1.Encoded+"\n"); !errors.Is(err, ErrUndecryptable) {
		t.Errorf("DecryptName(E with a newline) = %q, %v; want ErrUndecryptable", got, err)
	}
	// A short entry with an unrelated "content" is refused too (the
	// content of a short entry is its name).
	s, _ := c.EncryptName(dirA, "short")
	if got, err := c.DecryptName(dirA, s.Backing, e1.Encoded); !errors.Is(err, ErrUndecryptable) {
		t.Errorf("DecryptName(short backing, other E) = %q, %v; want ErrUndecryptable", got, err)
	}
}

// TestNameDamaged: altered, truncated or foreign encodings are refused.
func TestNameDamaged(t *testing.T) {
	c := newCipher(t)
	e, _ := c.EncryptName(dirA, "hello.txt")
	alter := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	cases := map[string]string{
		"first char":    alter(e.Encoded, 0),
		"middle char":   alter(e.Encoded, len(e.Encoded)/2),
		"truncated":     e.Encoded[:len(e.Encoded)-4],
		"IV only":       e.Encoded[:22],
		"empty":         "",
		"plain name":    "hello.txt",
		"padding":       e.Encoded + "=",
		"std alphabet":  strings.NewReplacer("-", "+", "_", "/").Replace(e.Encoded) + "+/",
		"other volume":  mustEncrypt(t, mustCipher(t, bytes.Repeat([]byte{9}, KeySize)), dirA, "hello.txt"),
		"IV of no name": "AAAAAAAAAAAAAAAAAAAAAA",
	}
	for what, enc := range cases {
		if got, err := c.DecryptName(dirA, enc, enc); !errors.Is(err, ErrUndecryptable) {
			t.Errorf("DecryptName(%s: %q) = %q, %v; want ErrUndecryptable", what, enc, got, err)
		}
	}
	// A long entry whose content is altered, with a backing name that
	// matches the altered content.
	l, _ := c.EncryptName(dirA, nameOf("é", 240))
	bad := alter(l.Encoded, 100)
	if got, err := c.DecryptName(dirA, LongName(bad), bad); !errors.Is(err, ErrUndecryptable) {
		t.Errorf("DecryptName(altered long name) = %q, %v; want ErrUndecryptable", got, err)
	}
}

func mustCipher(t *testing.T, key []byte) *Cipher {
	t.Helper()
	c, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustEncrypt(t *testing.T, c *Cipher, dir [IDSize]byte, name string) string {
	t.Helper()
	e, err := c.EncryptName(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return e.Encoded
}

// TestDecryptedNameMustBeValid: SIV under the right key and directory of
// something that is not a name ("a/b", "..", empty) is refused.
func TestDecryptedNameMustBeValid(t *testing.T) {
	c := newCipher(t)
	for _, p := range []string{"", ".", "..", "a/b", "../../etc", "a\x00", strings.Repeat("a", 256)} {
		ct, err := c.siv.EncryptDeterministically([]byte(p), ad(labelName, dirA[:]))
		if err != nil {
			t.Fatal(err)
		}
		enc := b64.EncodeToString(ct)
		backing := enc
		if len(enc) > MaxBackingName {
			backing = LongName(enc)
		}
		if got, err := c.DecryptName(dirA, backing, enc); !errors.Is(err, ErrUndecryptable) {
			t.Errorf("DecryptName(SIV of %q) = %q, %v; want ErrUndecryptable", p, got, err)
		}
	}
}

func TestInternalNames(t *testing.T) {
	for _, c := range []struct {
		name           string
		internal, long bool
	}{
		{DirIDName, true, false},
		{"kmsfs.long.abc.name", true, false},
		{"kmsfs.long.abc", false, true},
		{"kmsfs.dirid2", false, false},
		{"kmsfs.conf", false, false},
		{"abc", false, false},
		{"abc.name", false, false},
	} {
		if got := Internal(c.name); got != c.internal {
			t.Errorf("Internal(%q) = %v, want %v", c.name, got, c.internal)
		}
		if got := IsLong(c.name); got != c.long {
			t.Errorf("IsLong(%q) = %v, want %v", c.name, got, c.long)
		}
	}
}

// TestTargetRoundTrip: targets up to MaxTarget round-trip, are stored
// differently each time, and the stored form of the longest fits the
// backing 4095 bytes; longer targets are refused.
func TestTargetRoundTrip(t *testing.T) {
	c := newCipher(t)
	for _, n := range []int{0, 1, 15, 16, 17, 100, 1000, MaxTarget - 1, MaxTarget} {
		target := []byte(nameOf("../é/", n))
		s1, err := c.EncryptTarget(target)
		if err != nil {
			t.Fatalf("EncryptTarget(%d bytes) = %v", n, err)
		}
		s2, _ := c.EncryptTarget(target)
		if s1 == s2 {
			t.Errorf("%d-byte target: stored twice the same (the nonce must be random)", n)
		}
		if want := (4*(32+n) + 2) / 3; len(s1) != want {
			t.Errorf("%d-byte target: stored form of %d bytes, want %d", n, len(s1), want)
		}
		if len(s1) > 4095 {
			t.Errorf("%d-byte target: stored form of %d bytes does not fit 4095", n, len(s1))
		}
		if strings.ContainsAny(s1, "/\x00") {
			t.Errorf("%d-byte target: stored form contains / or NUL", n)
		}
		for _, s := range []string{s1, s2} {
			got, err := c.DecryptTarget([]byte(s))
			if err != nil || !bytes.Equal(got, target) {
				t.Errorf("DecryptTarget(%d bytes) = %q, %v", n, got, err)
			}
		}
	}
	for _, n := range []int{MaxTarget + 1, 4095, 4096} {
		if _, err := c.EncryptTarget(make([]byte, n)); !errors.Is(err, ErrTooLong) {
			t.Errorf("EncryptTarget(%d bytes) = %v, want ErrTooLong", n, err)
		}
	}
}

func TestTargetDamaged(t *testing.T) {
	c := newCipher(t)
	s, err := c.EncryptTarget([]byte("../some/where"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := b64.DecodeString(s)
	flip := func(i int) string {
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		return b64.EncodeToString(b)
	}
	other, _ := mustCipher(t, bytes.Repeat([]byte{9}, KeySize)).EncryptTarget([]byte("../some/where"))
	for what, st := range map[string]string{
		"nonce byte":   flip(0),
		"IV byte":      flip(nonceSize),
		"last byte":    flip(len(raw) - 1),
		"truncated":    s[:len(s)-3],
		"nonce only":   b64.EncodeToString(raw[:nonceSize]),
		"too short":    b64.EncodeToString(raw[:nonceSize+sivSize-1]),
		"empty":        "",
		"plain target": "../some/where",
		"other key":    other,
	} {
		if got, err := c.DecryptTarget([]byte(st)); !errors.Is(err, ErrUndecryptable) {
			t.Errorf("DecryptTarget(%s) = %q, %v; want ErrUndecryptable", what, got, err)
		}
	}
}

func TestXattrNamespaces(t *testing.T) {
	for _, c := range []struct {
		attr string
		enc  bool
	}{
		{"user.x", true},
		{"trusted.x", true},
		{"security.selinux", false},
		{"security.capability", false},
		{"system.posix_acl_access", false},
		{"user", false},
		{"userx.a", false},
		{"", false},
	} {
		if got := XattrEncrypted(c.attr); got != c.enc {
			t.Errorf("XattrEncrypted(%q) = %v, want %v", c.attr, got, c.enc)
		}
	}
	c := newCipher(t)
	for _, a := range []string{"security.selinux", "system.posix_acl_access", "x", ""} {
		if b, err := c.EncryptXattrName(a); err == nil {
			t.Errorf("EncryptXattrName(%q) = %q, nil; want an error", a, b)
		}
	}
}

// TestXattrNameRoundTrip covers both namespaces up to the name limits:
// 167 bytes for user., 164 for trusted. (the whole name, prefix
// included), whose backing names fit 255 bytes; one byte more is refused.
func TestXattrNameRoundTrip(t *testing.T) {
	c := newCipher(t)
	for _, tc := range []struct {
		ns  string
		max int
	}{{"user.", 167}, {"trusted.", 164}} {
		for _, n := range []int{len(tc.ns) + 1, len(tc.ns) + 15, 100, tc.max - 1, tc.max} {
			a := tc.ns + nameOf("é", n-len(tc.ns))
			b, err := c.EncryptXattrName(a)
			if err != nil {
				t.Errorf("EncryptXattrName(%d-byte %s name) = %v", n, tc.ns, err)
				continue
			}
			if !strings.HasPrefix(b, tc.ns+"kmsfs.") || len(b) > 255 {
				t.Errorf("EncryptXattrName(%d-byte %s name) = %q (%d bytes)", n, tc.ns, b, len(b))
			}
			if b2, _ := c.EncryptXattrName(a); b2 != b {
				t.Errorf("EncryptXattrName is not deterministic: %q, %q", b, b2)
			}
			if got, err := c.DecryptXattrName(b); err != nil || got != a {
				t.Errorf("DecryptXattrName(EncryptXattrName(%q)) = %q, %v", a, got, err)
			}
		}
		a := tc.ns + nameOf("a", tc.max+1-len(tc.ns))
		if b, err := c.EncryptXattrName(a); !errors.Is(err, ErrTooLong) {
			t.Errorf("EncryptXattrName(%d-byte %s name) = %q (%d bytes), %v; want ErrTooLong", tc.max+1, tc.ns, b, len(b), err)
		}
	}
}

func TestXattrNameDamaged(t *testing.T) {
	c := newCipher(t)
	b, _ := c.EncryptXattrName("user.comment")
	tb, _ := c.EncryptXattrName("trusted.comment")
	enc := strings.TrimPrefix(b, "user.kmsfs.")
	alter := []byte(enc)
	alter[3] ^= 'A' ^ 'B'
	if alter[3] == enc[3] {
		alter[3] = 'C'
	}
	for what, name := range map[string]string{
		"no kmsfs.":              "user." + enc,
		"plain attribute":        "user.comment",
		"altered":                "user.kmsfs." + string(alter),
		"truncated":              b[:len(b)-2],
		"user name in trusted.":  "trusted.kmsfs." + enc,
		"trusted name in user.":  "user.kmsfs." + strings.TrimPrefix(tb, "trusted.kmsfs."),
		"security namespace":     "security.kmsfs." + enc,
		"empty":                  "",
		"only the prefix":        "user.kmsfs.",
		"kmsfs without a dot":    "user.kmsfs" + enc,
		"encrypted under no key": "user.kmsfs.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	} {
		if got, err := c.DecryptXattrName(name); !errors.Is(err, ErrUndecryptable) {
			t.Errorf("DecryptXattrName(%s: %q) = %q, %v; want ErrUndecryptable", what, name, got, err)
		}
	}
}

// TestXattrValue: values round-trip up to MaxXattrValue (65504 bytes,
// whose stored form is 64 KiB), are bound to their attribute's name, and
// are stored differently each time.
func TestXattrValue(t *testing.T) {
	c := newCipher(t)
	if MaxXattrValue != 65504 || Overhead != 32 {
		t.Errorf("MaxXattrValue = %d, Overhead = %d; want 65504 and 32", MaxXattrValue, Overhead)
	}
	for _, n := range []int{0, 1, 16, 100, MaxXattrValue} {
		v := bytes.Repeat([]byte{0xe9}, n)
		s1, err := c.EncryptXattrValue("user.a", v)
		if err != nil {
			t.Fatalf("EncryptXattrValue(%d bytes) = %v", n, err)
		}
		if len(s1) != n+Overhead || len(s1) > 65536 {
			t.Errorf("%d-byte value stored in %d bytes", n, len(s1))
		}
		s2, _ := c.EncryptXattrValue("user.a", v)
		if bytes.Equal(s1, s2) {
			t.Errorf("%d-byte value stored twice the same", n)
		}
		for _, s := range [][]byte{s1, s2} {
			if got, err := c.DecryptXattrValue("user.a", s); err != nil || !bytes.Equal(got, v) {
				t.Errorf("DecryptXattrValue(%d bytes) = %d bytes, %v", n, len(got), err)
			}
		}
		for _, other := range []string{"user.b", "trusted.a", "user.a ", "user."} {
			if _, err := c.DecryptXattrValue(other, s1); !errors.Is(err, ErrUndecryptable) {
				t.Errorf("DecryptXattrValue(value of user.a as %q) = %v, want ErrUndecryptable", other, err)
			}
		}
	}
	if _, err := c.EncryptXattrValue("user.a", make([]byte, MaxXattrValue+1)); !errors.Is(err, ErrTooLong) {
		t.Errorf("EncryptXattrValue(%d bytes) = %v, want ErrTooLong", MaxXattrValue+1, err)
	}
	s, _ := c.EncryptXattrValue("user.a", []byte("value"))
	for i := range s {
		b := bytes.Clone(s)
		b[i] ^= 0x80
		if _, err := c.DecryptXattrValue("user.a", b); !errors.Is(err, ErrUndecryptable) {
			t.Errorf("DecryptXattrValue with byte %d altered = %v, want ErrUndecryptable", i, err)
		}
	}
	for _, n := range []int{0, 1, Overhead - 1} {
		if _, err := c.DecryptXattrValue("user.a", s[:n]); !errors.Is(err, ErrUndecryptable) {
			t.Errorf("DecryptXattrValue(%d bytes) = %v, want ErrUndecryptable", n, err)
		}
	}
}

// fuzzCipher is shared by the fuzz targets: building it is much dearer
// than one decryption.
var fuzzCipher = func() *Cipher {
	c, err := New(testKey)
	if err != nil {
		panic(err)
	}
	return c
}()

func FuzzDecryptName(f *testing.F) {
	c := fuzzCipher
	for _, n := range []string{"a", "hello.txt", nameOf("é", 175), nameOf("a", 176), nameOf("🙂", 255)} {
		e, err := c.EncryptName(dirA, n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(dirA[:], e.Backing, e.Encoded)
		f.Add(dirB[:], e.Backing, e.Encoded)
	}
	f.Add([]byte{}, "", "")
	f.Add(dirA[:], "kmsfs.long.x", "x")
	f.Fuzz(func(t *testing.T, id []byte, backing, e string) {
		var dir [IDSize]byte
		copy(dir[:], id)
		name, err := c.DecryptName(dir, backing, e)
		if err != nil {
			if !errors.Is(err, ErrUndecryptable) {
				t.Fatalf("DecryptName error %v does not wrap ErrUndecryptable", err)
			}
			return
		}
		if checkName(name) != nil {
			t.Fatalf("DecryptName returned the invalid name %q", name)
		}
		// What decrypts is what the same name encrypts to (up to the
		// spelling of the base64).
		re, err := c.EncryptName(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := c.DecryptName(dir, re.Backing, re.Encoded); err != nil || back != name {
			t.Fatalf("round trip of %q = %q, %v", name, back, err)
		}
	})
}

func FuzzDecryptTarget(f *testing.F) {
	c := fuzzCipher
	for _, tg := range []string{"", "a", "../x/y", nameOf("é", 300)} {
		s, err := c.EncryptTarget([]byte(tg))
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(s))
	}
	f.Add([]byte("not base64 at all!"))
	f.Fuzz(func(t *testing.T, stored []byte) {
		if _, err := c.DecryptTarget(stored); err != nil && !errors.Is(err, ErrUndecryptable) {
			t.Fatalf("DecryptTarget error %v does not wrap ErrUndecryptable", err)
		}
	})
}

func FuzzDecryptXattrName(f *testing.F) {
	c := fuzzCipher
	for _, a := range []string{"user.a", "trusted.b", "user." + nameOf("é", 150)} {
		b, err := c.EncryptXattrName(a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add("user.kmsfs.")
	f.Add("security.selinux")
	f.Fuzz(func(t *testing.T, backing string) {
		a, err := c.DecryptXattrName(backing)
		if err != nil {
			if !errors.Is(err, ErrUndecryptable) {
				t.Fatalf("DecryptXattrName error %v does not wrap ErrUndecryptable", err)
			}
			return
		}
		if ns := xattrNS(a); ns == "" || !strings.HasPrefix(backing, ns) {
			t.Fatalf("DecryptXattrName(%q) = %q, of another namespace", backing, a)
		}
	})
}

func FuzzDecryptXattrValue(f *testing.F) {
	c := fuzzCipher
	for _, v := range []string{"", "v", strings.Repeat("value", 20)} {
		s, err := c.EncryptXattrValue("user.a", []byte(v))
		if err != nil {
			f.Fatal(err)
		}
		f.Add("user.a", s)
		f.Add("user.b", s)
	}
	f.Add("", []byte{})
	f.Fuzz(func(t *testing.T, attr string, stored []byte) {
		if _, err := c.DecryptXattrValue(attr, stored); err != nil && !errors.Is(err, ErrUndecryptable) {
			t.Fatalf("DecryptXattrValue error %v does not wrap ErrUndecryptable", err)
		}
	})
}

// TestLongNameHash pins LongName to FORMAT.md: "kmsfs.long." and the
// base64url of the SHA-256 of E.
func TestLongNameHash(t *testing.T) {
	e := strings.Repeat("E", 300)
	h := sha256.Sum256([]byte(e))
	if got, want := LongName(e), "kmsfs.long."+b64.EncodeToString(h[:]); got != want {
		t.Errorf("LongName = %q, want %q", got, want)
	}
}

// TestOneBackingSpelling: a name has exactly one backing entry. Another
// spelling of the same bytes (non-zero spare bits in the last base64
// character) and the long form of a short name are both refused.
func TestOneBackingSpelling(t *testing.T) {
	c := newCipher(t)
	for _, n := range []int{1, 2, 3, 100, 175} {
		e, err := c.EncryptName(dirA, nameOf("s", n))
		if err != nil {
			t.Fatal(err)
		}
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		if (16+n)%3 != 0 { // the last character has spare bits
			last := strings.IndexByte(alphabet, e.Encoded[len(e.Encoded)-1])
			alt := e.Encoded[:len(e.Encoded)-1] + string(alphabet[last|1])
			if alt != e.Encoded {
				if got, err := c.DecryptName(dirA, alt, alt); !errors.Is(err, ErrUndecryptable) {
					t.Errorf("DecryptName of another spelling of a %d-byte name = %q, %v; want ErrUndecryptable", n, got, err)
				}
			}
		}
		if got, err := c.DecryptName(dirA, LongName(e.Encoded), e.Encoded); !errors.Is(err, ErrUndecryptable) {
			t.Errorf("DecryptName of the long form of a %d-byte name = %q, %v; want ErrUndecryptable", n, got, err)
		}
	}
}
