// Command vectorgen3 writes the test vectors of version-3 regular files
// (docs/FORMAT.md "Regular files, version 3") checked by
// tests/vectors_v3_test.go. Nonces are random, so the output differs on
// every run: run it once when the vector set changes and check the files
// in.
//
//	go run ./tests/internal/vectorgen3 -out tests/testdata/vectors-v3
//
// Each vector is a text file of "key: value" lines, a blank line, and the
// backing file in base64 wrapped at 76 columns, as the version-1 vectors
// (docs/FORMAT.md "Test vectors"), with the keys of "Version 3".
// The files are built with kmsfs's own blockcipher and header packages.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
)

// vector is one test vector file.
type vector struct {
	name     string
	comment  string
	expect   string
	bs       int // the volume's block size
	copySize int // the volume's header copy size C
	dataKey  []byte
	file     []byte
	// size is the plaintext size a reader reports; -1 to leave it out.
	size int64
	// plain is what reads (the blocks before the failing one for
	// size-mismatch and block-auth); nil to leave it out.
	plain []byte
	// holes and holeGroups are the blocks that read as holes and the
	// groups that are holes (success vectors only).
	holes, holeGroups []int64
}

var (
	volumeID = "6b6d736673207465737420766f6c2033"
	encCtx   = []byte(`{"kmsfs":"v1","volume":"` + volumeID + `"}`)
	localURI = "local:///root/.config/kmsfs/local.key"
	dataKey  = seeded("data key", 32)
	otherKey = seeded("other data key", 32)
)

// seeded returns n deterministic pseudo-random bytes named by label.
func seeded(label string, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(sha256.Sum256([]byte("kmsfs vectorgen3 " + label))).Read(b)
	return b
}

// file is a version-3 backing file under construction.
type file struct {
	label string
	bs    int
	cs    int
	dk    []byte
	id    [16]byte
	hdr   []byte
	l     blockcipher.Layout3
	c     *blockcipher.Cipher
}

func shiftOf(bs int) uint8 {
	s := uint8(0)
	for 1<<s < bs {
		s++
	}
	return s
}

func newFile(label string, bs, cs int, dk []byte) *file {
	f := &file{label: label, bs: bs, cs: cs, dk: dk, id: [16]byte(seeded("file id "+label, 16))}
	slot := header.Slot{URI: localURI, Context: encCtx, Wrapped: append([]byte{0x01}, seeded("local wrapped "+label, 68)...)}
	var err error
	if f.hdr, err = header.NewV3(shiftOf(bs), cs, f.id, []header.Slot{slot}, dk); err != nil {
		log.Fatalf("vectorgen3: %s: %v", label, err)
	}
	if f.l, err = blockcipher.NewLayout3(bs, len(f.hdr)); err != nil {
		log.Fatalf("vectorgen3: %s: %v", label, err)
	}
	var ck [32]byte
	if err := header.Derive(ck[:], dk, f.id, header.ContentKey); err != nil {
		log.Fatalf("vectorgen3: %s: %v", label, err)
	}
	if f.c, err = blockcipher.New3(ck[:], f.id, bs); err != nil {
		log.Fatalf("vectorgen3: %s: %v", label, err)
	}
	return f
}

// inline returns the header followed by the sealed inline content.
func (f *file) inline(plain []byte) []byte {
	if len(plain) > int(f.l.InlineMax()) {
		log.Fatalf("vectorgen3: %s: %d bytes do not fit inline", f.label, len(plain))
	}
	b := bytes.Clone(f.hdr)
	if len(plain) == 0 {
		return b
	}
	return f.c.SealInline(b, plain)
}

// paged returns the paged file of plain, with both size records naming
// its size, the blocks in holes as hole entries (stored bytes zero) and
// the groups in holeGroups as hole groups (a metadata page holding only
// a group token).
func (f *file) paged(plain []byte, holes, holeGroups map[int64]bool) []byte {
	S := int64(len(plain))
	B := int64(f.bs)
	b := make([]byte, f.l.PagedSize(S))
	copy(b, f.hdr)
	for r := range 2 {
		rec := f.c.SizeRecord(uint64(S))
		copy(b[f.l.RecordOff(r):], rec[:])
	}
	tmp := make([]byte, B+blockcipher.TagSize)
	for n := int64(0); n*B < S; n++ {
		blk := plain[n*B : min(S, (n+1)*B)]
		g, _ := f.l.Group(uint64(n))
		switch {
		case g > 0 && holeGroups[int64(g)]:
			tok := f.c.GroupToken(g)
			copy(b[f.l.MetaOff(g):], tok[:])
		case holes[n]:
			e := f.c.HoleEntry(uint64(n))
			copy(b[f.l.EntryOff(uint64(n)):], e[:])
		default:
			e := b[f.l.EntryOff(uint64(n)) : f.l.EntryOff(uint64(n))+blockcipher.EntrySize]
			f.c.SealData3(tmp[:len(blk)], blk, uint64(n), e)
			copy(b[f.l.DataOff(uint64(n)):], tmp[:len(blk)])
		}
	}
	return b
}

// plainWith returns n bytes of plaintext with the given blocks (and the
// blocks of the given groups) zero.
func (f *file) plainWith(n int, holes, holeGroups map[int64]bool) []byte {
	p := seeded("plaintext "+f.label, n)
	B := f.bs
	for k := 0; k*B < n; k++ {
		g, _ := f.l.Group(uint64(k))
		if holes[int64(k)] || (g > 0 && holeGroups[int64(g)]) {
			clear(p[k*B : min(n, (k+1)*B)])
		}
	}
	return p
}

func (f *file) vector(name, comment, expect string, b []byte) vector {
	return vector{name: name, comment: comment, expect: expect, bs: f.bs, copySize: f.cs, dataKey: f.dk, file: b, size: -1}
}

func set(xs ...int64) map[int64]bool {
	m := map[int64]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func keys(m map[int64]bool) []int64 {
	var out []int64
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func rangeSet(lo, hi int64) map[int64]bool {
	m := map[int64]bool{}
	for k := lo; k < hi; k++ {
		m[k] = true
	}
	return m
}

func flip(b []byte, off int64, mask byte) []byte { b = bytes.Clone(b); b[off] ^= mask; return b }

func vectors() []vector {
	var vs []vector
	const B, C = 4096, 1024
	ok := func(f *file, name, comment string, plain []byte, b []byte, holes, groups map[int64]bool) {
		v := f.vector(name, comment, "success", b)
		v.size, v.plain = int64(len(plain)), plain
		// Holes: the hole entries and every block of a hole group.
		all := map[int64]bool{}
		for k := range holes {
			all[k] = true
		}
		for k := int64(0); k*int64(f.bs) < int64(len(plain)); k++ {
			if g, _ := f.l.Group(uint64(k)); g > 0 && groups[int64(g)] {
				all[k] = true
			}
		}
		v.holes, v.holeGroups = keys(all), keys(groups)
		vs = append(vs, v)
	}
	bad := func(f *file, name, comment, expect string, b []byte, size int64, plain []byte) {
		v := f.vector(name, comment, expect, b)
		v.size, v.plain = size, plain
		vs = append(vs, v)
	}

	// Valid files.
	f := newFile("empty", B, C, dataKey)
	ok(f, "valid-empty", "a 0-byte backing file is a 0-byte plaintext file with no header yet", []byte{}, []byte{}, nil, nil)
	f = newFile("header-only", B, C, dataKey)
	ok(f, "valid-header-only", "a header only (c = H = 2080): 0 bytes of plaintext, inline", []byte{}, f.inline(nil), nil, nil)
	f = newFile("inline-300", B, C, dataKey)
	p := f.plainWith(300, nil, nil)
	ok(f, "valid-inline-300", "300 bytes inline: H + 28 + 300 = 2408 bytes", p, f.inline(p), nil, nil)
	f = newFile("inline-max", B, C, dataKey)
	p = f.plainWith(int(f.l.InlineMax()), nil, nil)
	ok(f, "valid-inline-max", "the largest inline file, 4067 - H = 1987 bytes: 4095 bytes on disk", p, f.inline(p), nil, nil)
	f = newFile("paged-smallest", B, C, dataKey)
	p = f.plainWith(int(f.l.InlineMax())+1, nil, nil)
	ok(f, "valid-paged-smallest", "the smallest file written paged, 1988 bytes: 4096 + 1988 = 6084 bytes", p, f.paged(p, nil, nil), nil, nil)
	f = newFile("paged-10", B, C, dataKey)
	p = f.plainWith(10, nil, nil)
	ok(f, "valid-paged-small", "a paged file of 10 bytes (one that was larger and was truncated stays paged): 4106 bytes", p, f.paged(p, nil, nil), nil, nil)
	f = newFile("partial-last", B, C, dataKey)
	p = f.plainWith(10000, nil, nil)
	ok(f, "valid-partial-last", "10000 bytes: two full blocks and a last block of 1808 bytes, stored as 1808 bytes", p, f.paged(p, nil, nil), nil, nil)
	f = newFile("full-last", B, C, dataKey)
	p = f.plainWith(3*B, nil, nil)
	ok(f, "valid-full-last", "three full blocks: 4096 + 3*4096 bytes", p, f.paged(p, nil, nil), nil, nil)
	f = newFile("multi-group", B, C, dataKey)
	p = f.plainWith(199*B+1234, nil, nil)
	ok(f, "valid-multi-group", "200 blocks (69 in the first page's group, 128 in group 1, 3 in group 2), the last of 1234 bytes: two metadata pages", p, f.paged(p, nil, nil), nil, nil)
	f = newFile("hole-entries", B, C, dataKey)
	holes := set(2, 3, 7)
	p = f.plainWith(9*B+500, holes, nil)
	ok(f, "valid-hole-entries", "10 blocks, blocks 2, 3 and 7 are holes (hole entries, stored bytes zero)", p, f.paged(p, holes, nil), holes, nil)
	f = newFile("hole-last", B, C, dataKey)
	holes = set(2)
	p = f.plainWith(2*B+700, holes, nil)
	ok(f, "valid-hole-last", "3 blocks, the last (700 bytes) is a hole: a hole entry, 700 zero bytes stored", p, f.paged(p, holes, nil), holes, nil)
	f = newFile("hole-group", B, C, dataKey)
	holes, groups := rangeSet(1, 69), set(1)
	p = f.plainWith(199*B+10, holes, groups)
	ok(f, "valid-hole-group", "200 blocks: block 0 is data, 1-68 hole entries, group 1 (blocks 69-196) a hole group (a metadata page holding only a group token), blocks 197-199 data (the last 10 bytes)",
		p, f.paged(p, holes, groups), holes, groups)
	f = newFile("hole-group-last", B, C, dataKey)
	holes, groups = rangeSet(0, 69), set(1)
	p = f.plainWith(69*B+5*B+3, holes, groups)
	ok(f, "valid-hole-group-last", "75 blocks, all holes: 0-68 hole entries, group 1 a hole group that holds the last block (3 bytes); grown by truncate",
		p, f.paged(p, holes, groups), holes, groups)
	f = newFile("bs-16384", 16384, C, dataKey)
	p = f.plainWith(2*16384+500, nil, nil)
	ok(f, "valid-block-size-16384", "block size 16384: two full blocks and a last block of 500 bytes", p, f.paged(p, nil, nil), nil, nil)
	f = newFile("cs-512", B, 512, dataKey)
	p = f.plainWith(5000, nil, nil)
	ok(f, "valid-copy-size-512", "copy size 512: H = 1056, G0 = 106, 5000 bytes paged", p, f.paged(p, nil, nil), nil, nil)
	f = newFile("cs-512-inline", B, 512, dataKey)
	p = f.plainWith(int(f.l.InlineMax()), nil, nil)
	ok(f, "valid-copy-size-512-inline", "copy size 512: the largest inline file, 4067 - 1056 = 3011 bytes", p, f.inline(p), nil, nil)
	f = newFile("records-differ", B, C, dataKey)
	p = f.plainWith(3*B+100, nil, nil)
	b := f.paged(p, nil, nil)
	old := f.c.SizeRecord(2 * B)
	copy(b[f.l.RecordOff(1):], old[:])
	ok(f, "valid-records-differ", "a crash while growing from 8192 to 12388 bytes: record A names the new size, record B the old one", p, b, nil, nil)
	f = newFile("copy0-tampered", B, C, dataKey)
	p = f.plainWith(5000, nil, nil)
	b = f.paged(p, nil, nil)
	b[32+C-32+3] ^= 0x10 // copy 0's mac
	ok(f, "valid-copy0-tampered", "a bit of copy 0's mac (at copy offset C - 32 + 3) is flipped; copy 1 is valid", p, b, nil, nil)

	// Headers.
	f = newFile("bad-copy-size", B, 1040, dataKey)
	v := f.vector("bad-copy-size", "the file's copy size is 1040 (a valid size, and its header is valid under it), the volume's 1024", "bad-preamble", f.paged(f.plainWith(5000, nil, nil), nil, nil))
	v.copySize = C
	vs = append(vs, v)
	f = newFile("bad-copy-size-range", B, C, dataKey)
	b = f.inline(f.plainWith(100, nil, nil))
	b[9], b[10] = 0x04, 0x08 // 1032: not a multiple of 16
	bad(f, "bad-copy-size-1032", "copy size 1032 in the preamble, not a multiple of 16", "bad-preamble", b, -1, nil)
	f = newFile("bad-reserved", B, C, dataKey)
	bad(f, "bad-reserved", "reserved byte 11 is 0x01", "bad-preamble", flip(f.inline(f.plainWith(100, nil, nil)), 11, 0x01), -1, nil)
	f = newFile("bad-version", B, C, dataKey)
	bad(f, "bad-version-1", "version 1 in the preamble of a version-3 volume's file", "bad-preamble", flip(f.inline(f.plainWith(100, nil, nil)), 7, 0x02), -1, nil)
	f = newFile("wrong-key", B, C, otherKey)
	v = f.vector("wrong-key", "the file was written under another data key: its commitment differs", "wrong-key", f.inline(f.plainWith(100, nil, nil)))
	v.dataKey = dataKey
	vs = append(vs, v)
	f = newFile("tampered", B, C, dataKey)
	b = f.inline(f.plainWith(100, nil, nil))
	b[32+C-40] ^= 0x01   // copy 0: last byte of its padding
	b[32+2*C-32] ^= 0x01 // copy 1: first byte of its mac
	bad(f, "header-tampered", "copy 0 has a non-zero padding byte, the first byte of copy 1's mac is flipped", "header-tampered", b, -1, nil)

	// Sizes.
	f = newFile("sizes", B, C, dataKey)
	bad(f, "bad-size-torn-header", "the first 100 bytes of a header", "bad-size", bytes.Clone(f.hdr[:100]), 0, nil)
	b = append(bytes.Clone(f.hdr), make([]byte, 28)...)
	bad(f, "bad-size-inline-28", "H + 28 bytes: an inline file with no plaintext; reported size 28", "bad-size", b, 28, nil)
	b = f.paged(f.plainWith(3*B, nil, nil), nil, nil)[:4096]
	bad(f, "bad-size-4096", "c = 4096: a header page and no block (a paged file cut after its first page); reported size 4096 - H - 28 = 1988, as if it were inline", "bad-size", b, 4096-int64(len(f.hdr))-blockcipher.Overhead, nil)
	f = newFile("meta", B, C, dataKey)
	holes = rangeSet(0, 69)
	p = f.plainWith(71*B, holes, nil)
	pb := f.paged(p, holes, nil)
	g0end := int64(4096 + 69*B)
	bad(f, "bad-size-metadata-page", "a 71-block file cut 100 bytes into group 1's metadata page; reported size 69*4096 + 100", "bad-size", pb[:g0end+100], 69*B+100, nil)
	bad(f, "bad-size-metadata-page-whole", "the same file cut at the end of group 1's metadata page; reported size 69*4096 + 4096", "bad-size", pb[:g0end+4096], 70*B, nil)
	b = bytes.Clone(pb)
	clear(b[g0end : g0end+4096])
	bad(f, "bad-zeroed-metadata-page", "71 blocks (0-68 hole entries, 69-70 data): group 1's metadata page is zeroed", "block-auth (block 69)", b, 71*B, p[:69*B])

	f = newFile("inline-flip", B, C, dataKey)
	p = f.plainWith(300, nil, nil)
	b = f.inline(p)
	bad(f, "bad-inline-flipped", "300 bytes inline, a ciphertext bit (byte H + 12 + 150) is flipped", "inline-auth", flip(b, int64(len(f.hdr))+12+150, 0x04), 300, nil)
	bad(f, "bad-inline-cut", "300 bytes inline, the last byte (of the tag) cut off: 299 bytes", "inline-auth", b[:len(b)-1], 299, nil)

	// Blocks and whole-file integrity.
	f = newFile("blocks", B, C, dataKey)
	p = f.plainWith(5*B+700, nil, nil)
	b = f.paged(p, nil, nil)
	l := f.l
	bad(f, "bad-cut-block-boundary", "6 blocks (the last of 700 bytes) cut after block 4: no record names 20480, records name 21180: block 4 on fails",
		"size-mismatch (block 4)", b[:l.PagedSize(5*B)], 5*B, p[:4*B])
	bad(f, "bad-cut-two-blocks", "the same file cut after block 3: block 3 on fails",
		"size-mismatch (block 3)", b[:l.PagedSize(4*B)], 4*B, p[:3*B])
	z := bytes.Clone(b)
	clear(z[l.DataOff(2) : l.DataOff(2)+B])
	bad(f, "bad-zeroed-block", "block 2's stored bytes are zeroed (its entry is intact)", "block-auth (block 2)", z, 5*B+700, p[:2*B])
	z = bytes.Clone(b)
	clear(z[l.EntryOff(3) : l.EntryOff(3)+blockcipher.EntrySize])
	bad(f, "bad-zeroed-entry", "block 3's entry is zeroed: an entry of zeros is damage, not a hole", "block-auth (block 3)", z, 5*B+700, p[:3*B])
	z = bytes.Clone(b)
	clear(z[l.DataOff(3) : l.DataOff(3)+B])
	clear(z[l.EntryOff(3) : l.EntryOff(3)+blockcipher.EntrySize])
	bad(f, "bad-zeroed-block-and-entry", "block 3's stored bytes and its entry are zeroed", "block-auth (block 3)", z, 5*B+700, p[:3*B])
	z = bytes.Clone(b)
	copy(z[l.DataOff(1):l.DataOff(1)+B], b[l.DataOff(2):l.DataOff(2)+B])
	copy(z[l.DataOff(2):l.DataOff(2)+B], b[l.DataOff(1):l.DataOff(1)+B])
	bad(f, "bad-swapped-blocks", "the stored bytes of blocks 1 and 2 are swapped", "block-auth (block 1)", z, 5*B+700, p[:B])
	for _, k := range []int64{1, 2} {
		o := 3 - k
		copy(z[l.EntryOff(uint64(k)):l.EntryOff(uint64(k))+blockcipher.EntrySize], b[l.EntryOff(uint64(o)):l.EntryOff(uint64(o))+blockcipher.EntrySize])
	}
	bad(f, "bad-swapped-blocks-and-entries", "blocks 1 and 2 are swapped with their entries: the AD binds the block number", "block-auth (block 1)", z, 5*B+700, p[:B])
	z = bytes.Clone(b)
	clear(z[l.RecordOff(0) : l.RecordOff(1)+blockcipher.SizeRecordSize])
	bad(f, "bad-zeroed-size-records", "both size records are zeroed: no valid record, R = 0, block 0 on fails", "size-mismatch (block 0)", z, 5*B+700, []byte{})
	z = bytes.Clone(b)
	rec := f.c.SizeRecord(5*B + 700)
	copy(z[l.RecordOff(0):], rec[:])
	z[l.RecordOff(0)+7] ^= 0x01 // the size field: 21181
	z[l.RecordOff(1)+20] ^= 0x01
	bad(f, "bad-size-records-altered", "record A's size field is changed to 21181, a bit of record B's nonce flipped: neither is valid", "size-mismatch (block 0)", z, 5*B+700, []byte{})

	f = newFile("blocks-full", B, C, dataKey)
	p = f.plainWith(5*B, nil, nil)
	b = f.paged(p, nil, nil)
	bad(f, "bad-appended-block", "5 full blocks with 4096 random bytes appended: the size 24576 is not recorded (20480 is): block 4 on fails",
		"size-mismatch (block 4)", append(bytes.Clone(b), seeded("appended", B)...), 6*B, p[:4*B])
	bad(f, "bad-appended-bytes", "5 full blocks with 100 zero bytes appended: block 4 on fails",
		"size-mismatch (block 4)", append(bytes.Clone(b), make([]byte, 100)...), 5*B+100, p[:4*B])

	f = newFile("holes-tamper", B, C, dataKey)
	holes = set(2)
	p = f.plainWith(4*B, holes, nil)
	b = f.paged(p, holes, nil)
	z = bytes.Clone(b)
	copy(z[f.l.EntryOff(3):f.l.EntryOff(3)+blockcipher.EntrySize], b[f.l.EntryOff(2):f.l.EntryOff(2)+blockcipher.EntrySize])
	bad(f, "bad-hole-entry-moved", "block 2's hole entry is copied over block 3's entry: a hole entry is bound to its block", "block-auth (block 3)", z, 4*B, p[:3*B])

	f = newFile("group-tamper", B, C, dataKey)
	holes, groups = rangeSet(0, 69), set(1)
	p = f.plainWith(69*B+128*B+2*B, holes, groups)
	b = f.paged(p, holes, groups)
	z = bytes.Clone(b)
	clear(z[f.l.MetaOff(1) : f.l.MetaOff(1)+blockcipher.EntrySize])
	bad(f, "bad-zeroed-group-token", "the group token of hole group 1 is zeroed: its entries (zero) are then damage", "block-auth (block 69)", z, int64(len(p)), p[:69*B])
	return vs
}

func (v vector) encode() []byte {
	var w bytes.Buffer
	fmt.Fprintf(&w, "comment: %s\n", v.comment)
	fmt.Fprintf(&w, "expect: %s\n", v.expect)
	fmt.Fprintf(&w, "block-size: %d\n", v.bs)
	fmt.Fprintf(&w, "copy-size: %d\n", v.copySize)
	fmt.Fprintf(&w, "data-key: %s\n", hex.EncodeToString(v.dataKey))
	if v.size >= 0 {
		fmt.Fprintf(&w, "plaintext-size: %d\n", v.size)
	}
	if v.plain != nil {
		sum := sha256.Sum256(v.plain)
		fmt.Fprintf(&w, "plaintext-sha256: %s\n", hex.EncodeToString(sum[:]))
	}
	if v.expect == "success" {
		fmt.Fprintf(&w, "holes: %s\n", list(v.holes))
		fmt.Fprintf(&w, "hole-groups: %s\n", list(v.holeGroups))
	}
	w.WriteString("\n")
	s := base64.StdEncoding.EncodeToString(v.file)
	for len(s) > 0 {
		n := min(76, len(s))
		w.WriteString(s[:n] + "\n")
		s = s[n:]
	}
	return w.Bytes()
}

// list writes block or group numbers as "2,3,7", runs as "1-68", or
// "none".
func list(xs []int64) string {
	if len(xs) == 0 {
		return "none"
	}
	var parts []string
	for i := 0; i < len(xs); {
		j := i
		for j+1 < len(xs) && xs[j+1] == xs[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", xs[i], xs[j]))
		} else {
			parts = append(parts, fmt.Sprint(xs[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func main() {
	out := flag.String("out", "tests/testdata/vectors-v3", "directory to write the vectors to")
	flag.Parse()
	log.SetFlags(0)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatalf("vectorgen3: %v", err)
	}
	old, _ := filepath.Glob(filepath.Join(*out, "*.txt"))
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			log.Fatalf("vectorgen3: %v", err)
		}
	}
	seen := map[string]bool{}
	for _, v := range vectors() {
		if strings.ContainsAny(v.comment, "\n") || seen[v.name] {
			log.Fatalf("vectorgen3: %s: comment has a newline, or a name used twice", v.name)
		}
		seen[v.name] = true
		p := filepath.Join(*out, v.name+".txt")
		if err := os.WriteFile(p, v.encode(), 0o644); err != nil {
			log.Fatalf("vectorgen3: %v", err)
		}
	}
}
