package tests

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/fs/names"
	"github.com/kmsfs/kmsfs/tests/internal/v2reader"
)

// namesVectorFile holds the names test vectors of format version 2
// (docs/FORMAT.md "Test vectors"), written once by tests/internal/namesvec.
var namesVectorFile = filepath.Join("testdata", "vectors-v2", "names.txt")

// parseNamesVectors parses records of "key: value" lines separated by
// blank lines; the first record is the file's header.
func parseNamesVectors(data []byte) ([]map[string]string, error) {
	var recs []map[string]string
	cur := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" {
			if len(cur) == 0 {
				return nil, fmt.Errorf("line %d: empty record", line)
			}
			recs = append(recs, cur)
			cur = map[string]string{}
			continue
		}
		key, value, ok := strings.Cut(text, ": ")
		if !ok {
			return nil, fmt.Errorf("line %d: %q is not a \"key: value\" line", line, text)
		}
		if _, dup := cur[key]; dup {
			return nil, fmt.Errorf("line %d: duplicate key %q", line, key)
		}
		cur[key] = value
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(cur) > 0 {
		recs = append(recs, cur)
	}
	return recs, nil
}

// vectorField returns a field of v, failing the test if it is missing;
// hexField decodes one in hex.
func vectorField(t *testing.T, v map[string]string, key string) string {
	t.Helper()
	s, ok := v[key]
	if !ok {
		t.Fatalf("vector %s has no %q field", v["vector"], key)
	}
	return s
}

func hexField(t *testing.T, v map[string]string, key string) []byte {
	t.Helper()
	b, err := hex.DecodeString(vectorField(t, v, key))
	if err != nil {
		t.Fatalf("vector %s: %s: %v", v["vector"], key, err)
	}
	return b
}

// TestNamesVectorsV2 checks every names vector with kmsfs's fs/names and
// with the independent reader of tests/internal/v2reader: both reach the
// expected outcome and plaintext, and both encrypt the deterministic
// kinds (names, xattr names) to the stored form; the independent reader
// also re-makes the nonce-based ones (targets, xattr values) from their
// nonce.
func TestNamesVectorsV2(t *testing.T) {
	data, err := os.ReadFile(namesVectorFile)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := parseNamesVectors(data)
	if err != nil {
		t.Fatalf("parsing %s: %v", namesVectorFile, err)
	}
	if len(recs) < 2 {
		t.Fatalf("%s has %d records", namesVectorFile, len(recs))
	}
	nk := hexField(t, recs[0], "names-key")
	kc, err := names.New(nk)
	if err != nil {
		t.Fatal(err)
	}
	ind, err := v2reader.NewNames(nk)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	nameLens := map[int]bool{}
	nonASCII := false
	for _, v := range recs[1:] {
		vec, kind, expect := v["vector"], v["kind"], v["expect"]
		if expect != "ok" && expect != "refused" {
			t.Errorf("vector %s: expect %q", vec, expect)
			continue
		}
		seen[kind+" "+expect]++
		t.Run(vec, func(t *testing.T) {
			switch kind {
			case "name":
				var dir [names.IDSize]byte
				copy(dir[:], hexField(t, v, "dir-id"))
				backing := vectorField(t, v, "backing")
				encoded, long := v["encoded"]
				if long != names.IsLong(backing) {
					t.Fatalf("backing %q with encoded field %v", backing, long)
				}
				if !long {
					encoded = backing
				}
				got, kerr := kc.DecryptName(dir, backing, encoded)
				iGot, ierr := ind.DecryptName(dir[:], backing, []byte(v["encoded"]))
				if expect == "refused" {
					if !errors.Is(kerr, names.ErrUndecryptable) {
						t.Errorf("fs/names: DecryptName = %q, %v; want ErrUndecryptable", got, kerr)
					}
					if !errors.Is(ierr, v2reader.ErrRefused) {
						t.Errorf("v2reader: DecryptName = %q, %v; want ErrRefused", iGot, ierr)
					}
					return
				}
				plain := hexField(t, v, "plaintext")
				nameLens[len(plain)] = true
				nonASCII = nonASCII || bytes.ContainsFunc(plain, func(r rune) bool { return r > 127 })
				if kerr != nil || got != string(plain) {
					t.Errorf("fs/names: DecryptName = %q, %v; want %q", got, kerr, plain)
				}
				if ierr != nil || !bytes.Equal(iGot, plain) {
					t.Errorf("v2reader: DecryptName = %q, %v; want %q", iGot, ierr, plain)
				}
				e, err := kc.EncryptName(dir, string(plain))
				if err != nil || e.Backing != backing || e.Encoded != encoded {
					t.Errorf("fs/names: EncryptName = %+v, %v; want backing %q, E %q", e, err, backing, encoded)
				}
				if b, enc := ind.EncryptName(dir[:], plain); b != backing || enc != encoded {
					t.Errorf("v2reader: EncryptName = %q, %q; want %q, %q", b, enc, backing, encoded)
				}
			case "target":
				stored := vectorField(t, v, "stored")
				got, kerr := kc.DecryptTarget([]byte(stored))
				iGot, ierr := ind.DecryptTarget(stored)
				if expect == "refused" {
					if !errors.Is(kerr, names.ErrUndecryptable) {
						t.Errorf("fs/names: DecryptTarget = %q, %v; want ErrUndecryptable", got, kerr)
					}
					if !errors.Is(ierr, v2reader.ErrRefused) {
						t.Errorf("v2reader: DecryptTarget = %q, %v; want ErrRefused", iGot, ierr)
					}
					return
				}
				plain, nonce := hexField(t, v, "plaintext"), hexField(t, v, "nonce")
				if kerr != nil || !bytes.Equal(got, plain) {
					t.Errorf("fs/names: DecryptTarget = %q, %v; want %q", got, kerr, plain)
				}
				if ierr != nil || !bytes.Equal(iGot, plain) {
					t.Errorf("v2reader: DecryptTarget = %q, %v; want %q", iGot, ierr, plain)
				}
				if s := ind.EncryptTarget(nonce, plain); s != stored {
					t.Errorf("v2reader: EncryptTarget = %q, want %q", s, stored)
				}
				if len(stored) > 4095 {
					t.Errorf("stored target of %d bytes does not fit 4095", len(stored))
				}
				// fs/names draws its own nonce: what it stores reads back.
				if len(plain) <= names.MaxTarget {
					s, err := kc.EncryptTarget(plain)
					if err != nil {
						t.Fatal(err)
					}
					if back, err := ind.DecryptTarget(s); err != nil || !bytes.Equal(back, plain) {
						t.Errorf("v2reader: DecryptTarget(fs/names' own) = %q, %v", back, err)
					}
				}
			case "xattr-name":
				backing := vectorField(t, v, "backing")
				got, kerr := kc.DecryptXattrName(backing)
				iGot, ierr := ind.DecryptXattrName(backing)
				if expect == "refused" {
					if !errors.Is(kerr, names.ErrUndecryptable) {
						t.Errorf("fs/names: DecryptXattrName = %q, %v; want ErrUndecryptable", got, kerr)
					}
					if !errors.Is(ierr, v2reader.ErrRefused) {
						t.Errorf("v2reader: DecryptXattrName = %q, %v; want ErrRefused", iGot, ierr)
					}
					return
				}
				plain := string(hexField(t, v, "plaintext"))
				if kerr != nil || got != plain {
					t.Errorf("fs/names: DecryptXattrName = %q, %v; want %q", got, kerr, plain)
				}
				if ierr != nil || iGot != plain {
					t.Errorf("v2reader: DecryptXattrName = %q, %v; want %q", iGot, ierr, plain)
				}
				if b, err := kc.EncryptXattrName(plain); err != nil || b != backing {
					t.Errorf("fs/names: EncryptXattrName = %q, %v; want %q", b, err, backing)
				}
				if b, err := ind.EncryptXattrName(plain); err != nil || b != backing {
					t.Errorf("v2reader: EncryptXattrName = %q, %v; want %q", b, err, backing)
				}
				if len(backing) > 255 {
					t.Errorf("backing attribute name of %d bytes", len(backing))
				}
			case "xattr-value":
				attr := string(hexField(t, v, "attribute"))
				stored := hexField(t, v, "stored")
				got, kerr := kc.DecryptXattrValue(attr, stored)
				iGot, ierr := ind.DecryptXattrValue(attr, stored)
				if expect == "refused" {
					if !errors.Is(kerr, names.ErrUndecryptable) {
						t.Errorf("fs/names: DecryptXattrValue = %q, %v; want ErrUndecryptable", got, kerr)
					}
					if !errors.Is(ierr, v2reader.ErrRefused) {
						t.Errorf("v2reader: DecryptXattrValue = %q, %v; want ErrRefused", iGot, ierr)
					}
					return
				}
				plain, nonce := hexField(t, v, "plaintext"), hexField(t, v, "nonce")
				if kerr != nil || !bytes.Equal(got, plain) {
					t.Errorf("fs/names: DecryptXattrValue = %q, %v; want %q", got, kerr, plain)
				}
				if ierr != nil || !bytes.Equal(iGot, plain) {
					t.Errorf("v2reader: DecryptXattrValue = %q, %v; want %q", iGot, ierr, plain)
				}
				if s := ind.EncryptXattrValue(nonce, attr, plain); !bytes.Equal(s, stored) {
					t.Errorf("v2reader: EncryptXattrValue = %x, want %x", s, stored)
				}
				s, err := kc.EncryptXattrValue(attr, plain)
				if err != nil {
					t.Fatal(err)
				}
				if back, err := ind.DecryptXattrValue(attr, s); err != nil || !bytes.Equal(back, plain) {
					t.Errorf("v2reader: DecryptXattrValue(fs/names' own) = %q, %v", back, err)
				}
			default:
				t.Fatalf("unknown kind %q", kind)
			}
		})
	}
	// The set covers what FORMAT.md's limits and rules are about.
	for _, n := range []int{1, 175, 176, 255} {
		if !nameLens[n] {
			t.Errorf("no name vector of %d bytes", n)
		}
	}
	if !nonASCII {
		t.Errorf("no non-ASCII name vector")
	}
	for _, k := range []string{"name", "target", "xattr-name", "xattr-value"} {
		if seen[k+" ok"] == 0 || seen[k+" refused"] == 0 {
			t.Errorf("kind %s: %d ok and %d refused vectors, want some of each", k, seen[k+" ok"], seen[k+" refused"])
		}
	}
}

// TestNamesAgreeV2 compares fs/names with the independent reader on
// random names, directories, targets and attributes (a fixed seed).
func TestNamesAgreeV2(t *testing.T) {
	src := rand.NewChaCha8([32]byte{'k', 'm', 's', 'f', 's'})
	rng := rand.New(src)
	nk := make([]byte, names.KeySize)
	src.Read(nk)
	kc, err := names.New(nk)
	if err != nil {
		t.Fatal(err)
	}
	ind, err := v2reader.NewNames(nk)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		var dir [names.IDSize]byte
		src.Read(dir[:])
		name := make([]byte, 1+rng.IntN(255))
		for j := range name {
			name[j] = byte(1 + rng.IntN(255))
			if name[j] == '/' {
				name[j] = 'x'
			}
		}
		if s := string(name); s == "." || s == ".." {
			continue
		}
		e, err := kc.EncryptName(dir, string(name))
		if err != nil {
			t.Fatalf("EncryptName(%q) = %v", name, err)
		}
		if b, enc := ind.EncryptName(dir[:], name); b != e.Backing || enc != e.Encoded {
			t.Fatalf("%d-byte name: fs/names %+v, v2reader %q %q", len(name), e, b, enc)
		}
		target := name[:rng.IntN(len(name))]
		s, err := kc.EncryptTarget(target)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ind.DecryptTarget(s); err != nil || !bytes.Equal(got, target) {
			t.Fatalf("v2reader: DecryptTarget(fs/names' %q) = %q, %v", target, got, err)
		}
		attr := "user." + string(name[:min(len(name), 150)])
		if i%2 == 1 {
			attr = "trusted." + string(name[:min(len(name), 150)])
		}
		b, err := kc.EncryptXattrName(attr)
		if err != nil {
			t.Fatal(err)
		}
		if ib, err := ind.EncryptXattrName(attr); err != nil || ib != b {
			t.Fatalf("xattr name %q: fs/names %q, v2reader %q, %v", attr, b, ib, err)
		}
		val, err := kc.EncryptXattrValue(attr, name)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ind.DecryptXattrValue(attr, val); err != nil || !bytes.Equal(got, name) {
			t.Fatalf("v2reader: DecryptXattrValue = %q, %v", got, err)
		}
	}
}
