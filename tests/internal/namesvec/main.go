// Command namesvec writes the test vectors of format version 2's names
// (docs/FORMAT.md "Names (version 2)" and "Test vectors"), checked by
// tests/vectors_v2_test.go:
//
//	go run ./tests/internal/namesvec -out tests/testdata/vectors-v2
//
// Names and xattr names are deterministic and made with kmsfs's fs/names;
// the generator checks that the independent reader of
// tests/internal/v2reader makes the same. Symlink targets and xattr
// values take a random nonce, which fs/names draws itself: they are made
// with the independent reader and a fixed nonce, and the generator checks
// that fs/names decrypts them. The output is the same on every run.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/kmsfs/kmsfs/fs/names"
	"github.com/kmsfs/kmsfs/tests/internal/v2reader"
)

// seeded returns n deterministic pseudo-random bytes named by label.
func seeded(label string, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(sha256.Sum256([]byte("kmsfs namesvec " + label))).Read(b)
	return b
}

var (
	namesKey = seeded("names key", names.KeySize)
	// rootID is the root's directory ID: the volume ID
	// 6b6d736673207465737420766f6c2032 ("kmsfs test vol 2").
	rootID = [16]byte([]byte("kmsfs test vol 2"))
	dirID  = [16]byte(seeded("directory", 16))
)

// field is one "key: value" line.
type field struct{ key, value string }

// record is one vector.
type record []field

func (r *record) add(key, value string) { *r = append(*r, field{key, value}) }

type gen struct {
	kc      *names.Cipher
	ind     *v2reader.Names
	records []record
}

func (g *gen) emit(r record) { g.records = append(g.records, r) }

func check(ok bool, format string, args ...any) {
	if !ok {
		log.Fatalf(format, args...)
	}
}

// nameOf returns a name of exactly n bytes: unit repeated, padded with
// "x".
func nameOf(unit string, n int) string {
	s := strings.Repeat(unit, n/len(unit))
	return s + strings.Repeat("x", n-len(s))
}

func dirHex(id [16]byte) string { return hex.EncodeToString(id[:]) }

// name emits a vector of a name that reads, made by fs/names and checked
// with the independent reader.
func (g *gen) name(vec, comment string, dir [16]byte, name string) names.Entry {
	e, err := g.kc.EncryptName(dir, name)
	check(err == nil, "%s: %v", vec, err)
	b, enc := g.ind.EncryptName(dir[:], []byte(name))
	check(b == e.Backing && enc == e.Encoded, "%s: fs/names and v2reader disagree: %v, %s %s", vec, e, b, enc)
	r := record{{"vector", vec}, {"comment", comment}, {"kind", "name"}, {"expect", "ok"},
		{"dir-id", dirHex(dir)}, {"plaintext", hex.EncodeToString([]byte(name))}, {"backing", e.Backing}}
	if e.Long() {
		r.add("encoded", e.Encoded)
	}
	g.emit(r)
	return e
}

// badName emits a vector of a backing entry that must be refused; long
// is the content of its .name file, "" for a short entry.
func (g *gen) badName(vec, comment string, dir [16]byte, backing, long string) {
	got, err := g.kc.DecryptName(dir, backing, cmpOr(long, backing))
	check(err != nil, "%s: fs/names decrypts it to %q", vec, got)
	_, err = g.ind.DecryptName(dir[:], backing, []byte(long))
	check(err != nil, "%s: v2reader decrypts it", vec)
	r := record{{"vector", vec}, {"comment", comment}, {"kind", "name"}, {"expect", "refused"},
		{"dir-id", dirHex(dir)}, {"backing", backing}}
	if long != "" {
		r.add("encoded", long)
	}
	g.emit(r)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// nonce returns a fixed nonce for a vector.
func nonce(vec string) []byte { return seeded("nonce "+vec, v2reader.NonceSize) }

func (g *gen) target(vec, comment string, target []byte) string {
	n := nonce(vec)
	s := g.ind.EncryptTarget(n, target)
	got, err := g.kc.DecryptTarget([]byte(s))
	check(err == nil && bytes.Equal(got, target), "%s: fs/names decrypts it to %q, %v", vec, got, err)
	g.emit(record{{"vector", vec}, {"comment", comment}, {"kind", "target"}, {"expect", "ok"},
		{"plaintext", hex.EncodeToString(target)}, {"nonce", hex.EncodeToString(n)}, {"stored", s}})
	return s
}

func (g *gen) badTarget(vec, comment, stored string) {
	got, err := g.kc.DecryptTarget([]byte(stored))
	check(err != nil, "%s: fs/names decrypts it to %q", vec, got)
	_, err = g.ind.DecryptTarget(stored)
	check(err != nil, "%s: v2reader decrypts it", vec)
	g.emit(record{{"vector", vec}, {"comment", comment}, {"kind", "target"}, {"expect", "refused"}, {"stored", stored}})
}

func (g *gen) xattrName(vec, comment, attr string) string {
	b, err := g.kc.EncryptXattrName(attr)
	check(err == nil, "%s: %v", vec, err)
	ib, err := g.ind.EncryptXattrName(attr)
	check(err == nil && ib == b, "%s: fs/names and v2reader disagree: %s, %s (%v)", vec, b, ib, err)
	g.emit(record{{"vector", vec}, {"comment", comment}, {"kind", "xattr-name"}, {"expect", "ok"},
		{"plaintext", hex.EncodeToString([]byte(attr))}, {"backing", b}})
	return b
}

func (g *gen) badXattrName(vec, comment, backing string) {
	got, err := g.kc.DecryptXattrName(backing)
	check(err != nil, "%s: fs/names decrypts it to %q", vec, got)
	_, err = g.ind.DecryptXattrName(backing)
	check(err != nil, "%s: v2reader decrypts it", vec)
	g.emit(record{{"vector", vec}, {"comment", comment}, {"kind", "xattr-name"}, {"expect", "refused"}, {"backing", backing}})
}

func (g *gen) xattrValue(vec, comment, attr string, value []byte) []byte {
	n := nonce(vec)
	s := g.ind.EncryptXattrValue(n, attr, value)
	got, err := g.kc.DecryptXattrValue(attr, s)
	check(err == nil && bytes.Equal(got, value), "%s: fs/names decrypts it to %q, %v", vec, got, err)
	g.emit(record{{"vector", vec}, {"comment", comment}, {"kind", "xattr-value"}, {"expect", "ok"},
		{"attribute", hex.EncodeToString([]byte(attr))}, {"plaintext", hex.EncodeToString(value)},
		{"nonce", hex.EncodeToString(n)}, {"stored", hex.EncodeToString(s)}})
	return s
}

func (g *gen) badXattrValue(vec, comment, attr string, stored []byte) {
	got, err := g.kc.DecryptXattrValue(attr, stored)
	check(err != nil, "%s: fs/names decrypts it to %q", vec, got)
	_, err = g.ind.DecryptXattrValue(attr, stored)
	check(err != nil, "%s: v2reader decrypts it", vec)
	g.emit(record{{"vector", vec}, {"comment", comment}, {"kind", "xattr-value"}, {"expect", "refused"},
		{"attribute", hex.EncodeToString([]byte(attr))}, {"stored", hex.EncodeToString(stored)}})
}

// alter replaces the character at i of a base64url string by another.
func alter(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func b64(b []byte) string {
	var sb strings.Builder
	// base64url without padding, spelled out here so that no library's
	// leniency creeps into the vectors.
	for i := 0; i < len(b); i += 3 {
		var v uint32
		n := min(3, len(b)-i)
		for j := 0; j < 3; j++ {
			v <<= 8
			if j < n {
				v |= uint32(b[i+j])
			}
		}
		for j := 0; j < n+1; j++ {
			sb.WriteByte(b64Alphabet[(v>>(18-6*j))&63])
		}
	}
	return sb.String()
}

func main() {
	out := flag.String("out", "tests/testdata/vectors-v2", "output directory")
	flag.Parse()
	kc, err := names.New(namesKey)
	check(err == nil, "%v", err)
	ind, err := v2reader.NewNames(namesKey)
	check(err == nil, "%v", err)
	g := &gen{kc: kc, ind: ind}
	siv, err := v2reader.NewSIV(namesKey)
	check(err == nil, "%v", err)

	// Entry names.
	g.name("name-1-byte", "a 1-byte name in the root (directory ID = volume ID)", rootID, "a")
	g.name("name-1-byte-subdir", "the same name in another directory: another encoding", dirID, "a")
	hello := g.name("name-ascii", "an ASCII name with a dot", rootID, "hello.txt")
	g.name("name-utf8", "a non-ASCII UTF-8 name", dirID, "café ☕ 日本語.txt")
	g.name("name-dots", "a name of three dots (only . and .. are not names)", dirID, "...")
	n175 := nameOf("é", 175)
	g.name("name-175-bytes", "175 bytes of UTF-8 (é, then x): the longest name whose E (255 characters) is its backing name", dirID, n175)
	long176 := g.name("name-176-bytes", "176 ASCII bytes: the shortest long name (E of 256 characters)", dirID, nameOf("L", 176))
	g.name("name-255-bytes", "255 bytes of UTF-8 (85 three-byte characters): the longest name", dirID, nameOf("日", 255))
	g.name("name-255-bytes-ascii", "255 ASCII bytes in the root", rootID, nameOf("z", 255))

	g.badName("name-wrong-dir", "the backing name of hello.txt in the root, read in another directory", dirID, hello.Backing, "")
	g.badName("name-altered", "hello.txt's backing name with one character changed", rootID, alter(hello.Backing, 10), "")
	g.badName("name-truncated", "hello.txt's backing name without its last 4 characters", rootID, hello.Backing[:len(hello.Backing)-4], "")
	g.badName("name-plaintext", "a name with a dot that is not kmsfs.long.: not written by kmsfs", rootID, "hello.txt", "")
	other176, err := kc.EncryptName(dirID, nameOf("M", 176))
	check(err == nil, "%v", err)
	g.badName("name-long-hash-mismatch", "a long entry whose .name file holds the E of another (valid) long name: its SHA-256 does not match",
		dirID, long176.Backing, other176.Encoded)
	bad := alter(long176.Encoded, 100)
	g.badName("name-long-altered", "a long entry whose .name content has one character changed (and the backing name its hash): SIV fails",
		dirID, v2reader.LongBacking(bad), bad)
	for _, c := range []struct{ vec, comment, plain string }{
		{"name-decrypts-to-slash", "SIV under the right key and directory of \"a/b\": not an entry name", "a/b"},
		{"name-decrypts-to-dotdot", "SIV of \"..\": not an entry name", ".."},
		{"name-decrypts-to-empty", "SIV of the empty string (22 characters): not an entry name", ""},
	} {
		e := b64(siv.Seal([]byte(c.plain), append([]byte("kmsfs v2 name\x00"), dirID[:]...)))
		g.badName(c.vec, c.comment, dirID, e, "")
	}

	// Symlink targets.
	rel := g.target("target-relative", "a relative target", []byte("hello.txt"))
	g.target("target-1-byte", "a 1-byte target", []byte("a"))
	g.target("target-utf8", "a relative target through a non-ASCII directory", []byte("../café ☕/日本語.txt"))
	g.target("target-absolute", "an absolute target", []byte("/etc/passwd"))
	g.target("target-3038-bytes", "the longest target, 3038 bytes: its stored form has 4094 characters", []byte(nameOf("../dir/", 3038)))
	raw, err := b64Decode(rel)
	check(err == nil, "%v", err)
	flip := func(i int) []byte {
		b := bytes.Clone(raw)
		b[i] ^= 1
		return b
	}
	g.badTarget("target-altered", "target-relative with a ciphertext byte changed", b64(flip(len(raw)-1)))
	g.badTarget("target-nonce-altered", "target-relative with a nonce byte changed", b64(flip(0)))
	g.badTarget("target-iv-altered", "target-relative with a synthetic IV byte changed", b64(flip(16)))
	g.badTarget("target-too-short", "31 bytes: shorter than a nonce and a synthetic IV", b64(raw[:31]))
	g.badTarget("target-plaintext", "a target in clear (not base64url)", "hello.txt")

	// Extended attributes.
	comment := g.xattrName("xattr-name-user", "a user. attribute", "user.comment")
	g.xattrName("xattr-name-trusted", "a trusted. attribute", "trusted.comment")
	g.xattrName("xattr-name-1-byte", "the shortest user. name", "user.a")
	g.xattrName("xattr-name-utf8", "a non-ASCII user. attribute", "user.café ☕")
	g.xattrName("xattr-name-user-167", "the longest user. name (167 bytes): backing name of 255 bytes", "user."+nameOf("u", 162))
	g.xattrName("xattr-name-trusted-164", "the longest trusted. name (164 bytes): backing name of 254 bytes", "trusted."+nameOf("t", 156))
	enc := strings.TrimPrefix(comment, "user.kmsfs.")
	g.badXattrName("xattr-name-no-kmsfs", "a user. attribute without kmsfs. after the namespace", "user.comment")
	g.badXattrName("xattr-name-altered", "user.comment's backing name with one character changed", "user.kmsfs."+alter(enc, 5))
	g.badXattrName("xattr-name-other-namespace", "user.comment's encryption stored in trusted.: A's namespace is not the one it is stored in", "trusted.kmsfs."+enc)

	val := g.xattrValue("xattr-value", "a value of user.comment", "user.comment", []byte("hello"))
	g.xattrValue("xattr-value-empty", "an empty value", "user.comment", []byte{})
	g.xattrValue("xattr-value-utf8", "a non-ASCII value of a non-ASCII attribute", "user.café ☕", []byte("thé vert"))
	g.xattrValue("xattr-value-binary", "300 bytes of binary value of a trusted. attribute", "trusted.comment", seeded("binary value", 300))
	g.badXattrValue("xattr-value-other-attribute", "xattr-value's stored value read as the value of user.other: a value is bound to its name", "user.other", val)
	alt := bytes.Clone(val)
	alt[len(alt)-1] ^= 1
	g.badXattrValue("xattr-value-altered", "xattr-value with its last byte changed", "user.comment", alt)
	alt = bytes.Clone(val)
	alt[3] ^= 1
	g.badXattrValue("xattr-value-nonce-altered", "xattr-value with a nonce byte changed", "user.comment", alt)
	g.badXattrValue("xattr-value-too-short", "31 bytes: shorter than a nonce and a synthetic IV", "user.comment", val[:31])

	var sb strings.Builder
	fmt.Fprintf(&sb, "comment: kmsfs format version 2, names test vectors; written by go run ./tests/internal/namesvec (docs/FORMAT.md \"Test vectors\")\n")
	fmt.Fprintf(&sb, "names-key: %x\n", namesKey)
	for _, r := range g.records {
		sb.WriteString("\n")
		for _, f := range r {
			check(!strings.ContainsAny(f.value, "\n"), "newline in %s", f.key)
			fmt.Fprintf(&sb, "%s: %s\n", f.key, f.value)
		}
	}
	check(os.MkdirAll(*out, 0o755) == nil, "mkdir %s", *out)
	p := filepath.Join(*out, "names.txt")
	check(os.WriteFile(p, []byte(sb.String()), 0o644) == nil, "writing %s", p)
	fmt.Printf("%s: %d vectors\n", p, len(g.records))
}

// b64Decode decodes base64url without padding, strictly.
func b64Decode(s string) ([]byte, error) {
	var out []byte
	var v uint32
	bits := 0
	for i := 0; i < len(s); i++ {
		k := strings.IndexByte(b64Alphabet, s[i])
		if k < 0 {
			return nil, fmt.Errorf("bad character %q", s[i])
		}
		v = v<<6 | uint32(k)
		bits += 6
		if bits >= 8 {
			bits -= 8
			out = append(out, byte(v>>bits))
			v &= 1<<bits - 1
		}
	}
	if v != 0 || bits >= 6 {
		return nil, fmt.Errorf("bad length or trailing bits")
	}
	return out, nil
}
