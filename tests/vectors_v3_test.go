package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/tests/internal/v2reader"
)

// vectorDirV3 holds the vectors of version-3 regular files (docs/FORMAT.md
// "Test vectors", "Version 3"), written once by tests/internal/vectorgen3.
const vectorDirV3 = "testdata/vectors-v3"

// errTornHeader is what vectorKeyer3 reports for a backing file shorter
// than its header.
var errTornHeader = errors.New("backing file shorter than its header")

// errPreamble3 is what vectorKeyer3 reports for a preamble the volume
// does not accept.
var errPreamble3 = errors.New("bad preamble")

// vectorKeyer3 is a cryptfile.Keyer for one vector: it reads headers with
// kmsfs's header package, as the volume does, with the data key given by
// the vector standing in for every slot's unwrapping.
type vectorKeyer3 struct {
	bs, cs int
	dk     []byte
}

type vectorKey3 struct {
	id [16]byte
	c  *blockcipher.Cipher
}

func (k *vectorKey3) FileID() [16]byte            { return k.id }
func (k *vectorKey3) Cipher() *blockcipher.Cipher { return k.c }
func (k *vectorKey3) Close()                      {}

func (k *vectorKeyer3) Load(ctx context.Context, fd int, name func() string) (cryptfile.Key, error) {
	buf := make([]byte, header.MaxLen)
	n, err := cryptfile.PreadHead(fd, buf)
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return nil, nil
	}
	p, err := header.ParsePreamble(buf[:n])
	if err != nil {
		if errors.Is(err, header.ErrShort) {
			return nil, fmt.Errorf("%w: %w", errTornHeader, err)
		}
		return nil, fmt.Errorf("%w: %w", errPreamble3, err)
	}
	if p.Version != header.Version3 || p.BlockSize() != k.bs || int(p.CopySize) != k.cs {
		return nil, fmt.Errorf("%w: version %d, block size %d, copy size %d", errPreamble3, p.Version, p.BlockSize(), p.CopySize)
	}
	if n < p.HeaderLen() {
		return nil, fmt.Errorf("%w: %d bytes", errTornHeader, n)
	}
	h, err := header.Parse(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errPreamble3, err)
	}
	if _, err := h.Accept(k.dk); err != nil {
		return nil, err
	}
	var ck [header.KeySize]byte
	if err := header.Derive(ck[:], k.dk, p.FileID, header.ContentKey); err != nil {
		return nil, err
	}
	c, err := blockcipher.New3(ck[:], p.FileID, k.bs)
	if err != nil {
		return nil, err
	}
	return &vectorKey3{id: p.FileID, c: c}, nil
}

func (k *vectorKeyer3) New(ctx context.Context) ([]byte, cryptfile.Key, error) {
	return nil, nil, errors.New("vectors are only read")
}

// engineResult3 is what kmsfs's engine (fs/cryptfile) makes of a vector.
type engineResult3 struct {
	expect string
	failed int64 // the first block whose read failed; -1 for none
	size   int64
	plain  []byte  // what reads before the first failing block
	holes  []int64 // blocks SEEK_HOLE reports as holes (success only)
}

// readWithEngine3 writes file to a temporary backing file and reads it
// through a cryptfile.File of the version-3 layout, block by block: the
// first block whose read fails, and why, is the outcome.
func readWithEngine3(t *testing.T, file []byte, bs, cs int, dk []byte) engineResult3 {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := blockcipher.NewLayout3(bs, header.PreambleSize+2*cs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &cryptfile.Config{Layout: blockcipher.Layout{BlockSize: bs, DataOffset: header.Size},
		Keys: &vectorKeyer3{bs: bs, cs: cs, dk: dk}, V3: &l}
	f := cryptfile.New(cfg, func() string { return "f" })
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, err := f.Open(context.Background(), fd)
	if err != nil {
		switch {
		case errors.Is(err, errTornHeader):
			return engineResult3{expect: "bad-size", size: 0}
		case errors.Is(err, errPreamble3):
			return engineResult3{expect: "bad-preamble", size: -1}
		case errors.Is(err, header.ErrWrongKey):
			return engineResult3{expect: "wrong-key", size: -1}
		case errors.Is(err, header.ErrNoValidCopy):
			return engineResult3{expect: "header-tampered", size: -1}
		}
		t.Fatalf("Open: %v", err)
	}
	defer h.Close()
	// A backing size no file has is reported with the size as if the
	// damaged tail were plaintext, and ErrBadCipherSize; reads fail.
	size, err := h.Size()
	if err != nil && !errors.Is(err, blockcipher.ErrBadCipherSize) {
		t.Fatalf("Size: %v", err)
	}
	r := engineResult3{size: size, plain: []byte{}, failed: -1}
	buf := make([]byte, bs)
	for n := int64(0); n == 0 || n*int64(bs) < size; n++ {
		want := min(int64(bs), size-n*int64(bs))
		got, err := h.Read(buf, n*int64(bs))
		if err == nil && int64(got) != want {
			err = fmt.Errorf("read %d bytes, want %d", got, want)
		}
		if err != nil {
			r.failed = n
			var be *blockcipher.BlockError
			msg := err.Error()
			switch {
			case errors.Is(err, blockcipher.ErrBadCipherSize):
				r.expect = "bad-size"
			case int64(len(file)) < blockcipher.PageSize && errors.Is(err, blockcipher.ErrAuth):
				r.expect = "inline-auth"
			case errors.As(err, &be) && errors.Is(err, cryptfile.ErrCorrupt):
				r.expect = fmt.Sprintf("block-auth (block %d)", be.Block)
			case strings.Contains(msg, "has no entry") && errors.Is(err, cryptfile.ErrCorrupt):
				r.expect = fmt.Sprintf("block-auth (block %d)", n)
			case strings.Contains(msg, "authenticated") && errors.Is(err, cryptfile.ErrCorrupt):
				r.expect = fmt.Sprintf("size-mismatch (block %d)", n)
			default:
				t.Fatalf("reading block %d: unclassified error %v", n, err)
			}
			if r.expect == "bad-size" || r.expect == "inline-auth" {
				r.plain = nil
			}
			return r
		}
		r.plain = append(r.plain, buf[:got]...)
	}
	r.expect = "success"
	for n := int64(0); n*int64(bs) < size; n++ {
		if o, err := h.Seek(n*int64(bs), unix.SEEK_HOLE); err != nil {
			t.Fatalf("SEEK_HOLE %d: %v", n*int64(bs), err)
		} else if o == n*int64(bs) {
			r.holes = append(r.holes, n)
		}
	}
	return r
}

// parseBlockList parses "none", or "2,3,7" with runs as "1-68".
func parseBlockList(s string) ([]int64, error) {
	if s == "none" {
		return nil, nil
	}
	var out []int64
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRun := strings.Cut(part, "-")
		a, err := strconv.ParseInt(lo, 10, 64)
		if err != nil {
			return nil, err
		}
		b := a
		if isRun {
			if b, err = strconv.ParseInt(hi, 10, 64); err != nil || b < a {
				return nil, fmt.Errorf("bad run %q", part)
			}
		}
		for k := a; k <= b; k++ {
			out = append(out, k)
		}
	}
	return out, nil
}

func sameInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestVectorsV3 checks every version-3 vector with kmsfs's engine and
// with the independent reader of tests/internal/v2reader, which must
// both reach the vector's expect line, size, plaintext and holes.
func TestVectorsV3(t *testing.T) {
	entries, err := os.ReadDir(vectorDirV3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".txt") {
			continue
		}
		t.Run(strings.TrimSuffix(e.Name(), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(vectorDirV3, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			v, err := parseFormatVector(data)
			if err != nil {
				t.Fatalf("parsing %s: %v", e.Name(), err)
			}
			expect := v.fields["expect"]
			kind, _, _ := strings.Cut(expect, " ")
			seen[kind]++
			bs, err := strconv.Atoi(v.fields["block-size"])
			if err != nil {
				t.Fatalf("block-size: %v", err)
			}
			cs, err := strconv.Atoi(v.fields["copy-size"])
			if err != nil {
				t.Fatalf("copy-size: %v", err)
			}
			dk, err := hex.DecodeString(v.fields["data-key"])
			if err != nil || len(dk) != header.KeySize {
				t.Fatalf("data-key = %q (%v)", v.fields["data-key"], err)
			}
			wantSize := int64(-1)
			if s, ok := v.fields["plaintext-size"]; ok {
				if wantSize, err = strconv.ParseInt(s, 10, 64); err != nil {
					t.Fatalf("plaintext-size: %v", err)
				}
			} else if kind != "bad-preamble" && kind != "wrong-key" && kind != "header-tampered" {
				t.Fatalf("no plaintext-size in a %s vector", kind)
			}
			wantSum, hasSum := v.fields["plaintext-sha256"]
			if !hasSum && (kind == "success" || kind == "size-mismatch" || kind == "block-auth") {
				t.Fatalf("no plaintext-sha256 in a %s vector", kind)
			}
			var wantHoles, wantGroups []int64
			if kind == "success" {
				if wantHoles, err = parseBlockList(v.fields["holes"]); err != nil {
					t.Fatalf("holes: %v", err)
				}
				if wantGroups, err = parseBlockList(v.fields["hole-groups"]); err != nil {
					t.Fatalf("hole-groups: %v", err)
				}
			}
			check := func(who, got string, size int64, plain []byte) {
				t.Helper()
				if got != expect {
					t.Errorf("%s: %q, want %q (%s)", who, got, expect, v.fields["comment"])
					return
				}
				if wantSize >= 0 && size != wantSize {
					t.Errorf("%s: plaintext size %d, want %d", who, size, wantSize)
				}
				if hasSum {
					if sum := sha256.Sum256(plain); hex.EncodeToString(sum[:]) != wantSum {
						t.Errorf("%s: sha256 of the %d bytes that read = %x, want %s", who, len(plain), sum, wantSum)
					}
				}
			}

			ind := v2reader.DecodeV3(v.file, dk, bs, cs)
			check("independent reader", ind.Expect(), ind.Size, ind.Plain)
			if kind == "success" {
				if !sameInts(ind.Holes, wantHoles) || !sameInts(ind.HoleGroups, wantGroups) {
					t.Errorf("independent reader: holes %v, hole groups %v; want %v, %v", ind.Holes, ind.HoleGroups, wantHoles, wantGroups)
				}
			}

			eng := readWithEngine3(t, v.file, bs, cs, dk)
			check("kmsfs", eng.expect, eng.size, eng.plain)
			if kind == "bad-size" && eng.failed > 0 {
				// "A reader MUST treat as damaged, and fail every read
				// of, a file with" a size no file has.
				t.Errorf("kmsfs: block 0 of a file of a size no file has reads (the first read that fails is of block %d)", eng.failed)
			}
			if kind == "success" && !sameInts(eng.holes, wantHoles) {
				t.Errorf("kmsfs: SEEK_HOLE finds holes at blocks %v, want %v", eng.holes, wantHoles)
			}
		})
	}
	for _, kind := range []string{"success", "bad-preamble", "header-tampered", "wrong-key", "bad-size", "inline-auth", "size-mismatch", "block-auth"} {
		if seen[kind] == 0 {
			t.Errorf("no vector expects %q", kind)
		}
	}
}
