// Command vectorgen writes the kmsfs format test vectors checked by
// tests/vectors_test.go. Block nonces are random, so the output differs on
// every run: run it once when the vector set changes and check the files in.
//
//	go run ./tests/internal/vectorgen -out tests/testdata/vectors
//
// Each vector is a text file of "key: value" lines, a blank line, and the
// backing file in base64 wrapped at 76 columns (docs/FORMAT.md "Test
// vectors").
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
	"strings"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
)

// vector is one test vector file.
type vector struct {
	name    string
	comment string
	expect  string
	shift   uint8 // block size given to the reader; 0 means 12
	dataKey []byte
	file    []byte
	// plain is the plaintext a reader gets (the readable prefix for
	// bad-size); nil for vectors where the plaintext is not checked.
	plain []byte
	// size is the plaintext size a reader reports; -1 to leave it out.
	size int64
}

var (
	volumeID = "6b6d736673207465737420766f6c2031"
	context  = []byte(`{"kmsfs":"v1","volume":"` + volumeID + `"}`)
	localURI = "local:///root/.config/kmsfs/local.key"
	awsURI   = "aws-kms://arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	dataKey  = seeded("data key", 32)
	otherKey = seeded("other data key", 32)
)

// seeded returns n deterministic pseudo-random bytes named by label.
func seeded(label string, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(sha256.Sum256([]byte("kmsfs vectorgen " + label))).Read(b)
	return b
}

func fileID(label string) [16]byte { return [16]byte(seeded("file id "+label, 16)) }

func localSlot(label string) header.Slot {
	w := append([]byte{0x01}, seeded("local wrapped "+label, 68)...)
	return header.Slot{URI: localURI, Context: context, Wrapped: w}
}

func awsSlot(label string) header.Slot {
	return header.Slot{URI: awsURI, Context: context, Wrapped: seeded("aws wrapped "+label, 184)}
}

// file is a backing file under construction.
type file struct {
	shift uint8
	id    [16]byte
	dk    []byte
	hdr   []byte
	c     *blockcipher.Cipher
}

func newFile(label string, shift uint8, dk []byte, slots ...header.Slot) *file {
	if len(slots) == 0 {
		slots = []header.Slot{localSlot(label)}
	}
	f := &file{shift: shift, id: fileID(label), dk: dk}
	var err error
	if f.hdr, err = header.New(shift, f.id, slots, dk); err != nil {
		log.Fatalf("vectorgen: %s: %v", label, err)
	}
	var ck [32]byte
	if err := header.Derive(ck[:], dk, f.id, header.ContentKey); err != nil {
		log.Fatalf("vectorgen: %s: %v", label, err)
	}
	l := blockcipher.Layout{BlockSize: 1 << shift, DataOffset: header.Size}
	if f.c, err = blockcipher.New(ck[:], f.id, l); err != nil {
		log.Fatalf("vectorgen: %s: %v", label, err)
	}
	return f
}

// bytes returns the header followed by the encrypted plaintext.
func (f *file) bytes(plain []byte) []byte {
	return f.c.SealBlocks(bytes.Clone(f.hdr), plain, 0)
}

// rewrite parses the header, lets edit change it, and marshals it again.
func (f *file) rewrite(edit func(h *header.Header)) {
	h, err := header.Parse(f.hdr)
	if err != nil {
		log.Fatalf("vectorgen: rewrite: %v", err)
	}
	edit(h)
	if f.hdr, err = h.Marshal(); err != nil {
		log.Fatalf("vectorgen: rewrite: %v", err)
	}
}

func (f *file) seal(h *header.Header, i int) {
	if err := header.SealCopy(h.Preamble, h.Copies[i], f.dk); err != nil {
		log.Fatalf("vectorgen: seal: %v", err)
	}
}

func (f *file) cb() int { return (1 << f.shift) + blockcipher.Overhead }

func ok(name, comment string, f *file, plain []byte) vector {
	return vector{name: name, comment: comment, expect: "success", shift: f.shift, dataKey: f.dk,
		file: f.bytes(plain), plain: plain, size: int64(len(plain))}
}

func fail(name, comment, expect string, f *file, b []byte) vector {
	return vector{name: name, comment: comment, expect: expect, shift: f.shift, dataKey: f.dk, file: b, size: -1}
}

func flip(b []byte, off int, mask byte) []byte { b = bytes.Clone(b); b[off] ^= mask; return b }

func vectors() []vector {
	var vs []vector
	add := func(v vector) { vs = append(vs, v) }
	p := func(label string, n int) []byte { return seeded("plaintext "+label, n) }
	c0 := int(header.CopyOffset(0))
	c1 := int(header.CopyOffset(1))

	// Valid files.
	f := newFile("empty", 12, dataKey)
	add(vector{name: "valid-empty", comment: "a 0-byte backing file is a 0-byte plaintext file with no header yet",
		expect: "success", shift: 12, dataKey: dataKey, file: []byte{}, plain: []byte{}, size: 0})
	add(ok("valid-header-only", "a header and no blocks: 0 bytes of plaintext", newFile("header-only", 12, dataKey), []byte{}))
	for _, n := range []int{1, 4095, 4096, 4097} {
		name := fmt.Sprintf("valid-%d-bytes", n)
		if n == 1 {
			name = "valid-1-byte"
		}
		add(ok(name, fmt.Sprintf("%s of plaintext with 4 KiB blocks", strings.TrimPrefix(name, "valid-")), newFile(name, 12, dataKey), p(name, n)))
	}
	add(ok("valid-3-blocks", "10000 bytes: two full blocks and a last block of 1808 bytes",
		newFile("3-blocks", 12, dataKey), p("3-blocks", 10000)))
	add(ok("valid-block-size-65536", "block size 65536 (shift 16): one full block and a last block of 4464 bytes",
		newFile("bs-65536", 16, dataKey), p("bs-65536", 70000)))
	add(ok("valid-block-size-1mib", "block size 1 MiB (shift 20), 5 bytes of plaintext",
		newFile("bs-1mib", 20, dataKey), []byte("hello")))
	add(ok("valid-two-slots", "two key slots (local and aws-kms) in both copies",
		newFile("two-slots", 12, dataKey, localSlot("two-slots"), awsSlot("two-slots")), p("two-slots", 300)))
	var eight []header.Slot
	for i := range header.MaxSlots {
		eight = append(eight, header.Slot{URI: fmt.Sprintf("local:///keys/%d.key", i), Context: context, Wrapped: seeded(fmt.Sprint("eight ", i), 69)})
	}
	add(ok("valid-eight-slots", "the maximum of eight key slots", newFile("eight-slots", 12, dataKey, eight...), p("eight", 50)))

	f = newFile("copy0-damaged", 12, dataKey)
	copy(f.hdr[c0+8:], []byte{9}) // slot count 9: copy 0 does not parse
	add(ok("valid-copy0-damaged", "copy 0 has slot count 9 and does not parse; copy 1 is valid", f, p("copy0-damaged", 100)))

	f = newFile("copy0-tampered", 12, dataKey)
	f.hdr[c0+header.MACOffset+5] ^= 0x10
	add(ok("valid-copy0-tampered", "a bit of copy 0's mac is flipped; copy 1 is valid", f, p("copy0-tampered", 100)))

	f = newFile("copy1-unused", 12, dataKey)
	clear(f.hdr[c1:])
	add(ok("valid-copy1-unused", "copy 1 is all zero (unused); copy 0 is valid", f, p("copy1-unused", 100)))

	f = newFile("copy1-rewritten", 12, dataKey)
	f.rewrite(func(h *header.Header) {
		i, seq := h.NextCopy(0)
		h.Copies[i] = &header.Copy{Seq: seq, Slots: []header.Slot{localSlot("copy1-rewritten"), awsSlot("copy1-rewritten")}}
		f.seal(h, i)
	})
	add(ok("valid-copy1-rewritten", "after adding a key: copy 1 has sequence 2 and two slots, copy 0 sequence 1 and one slot", f, p("copy1-rewritten", 5000)))

	f = newFile("copy0-seq3", 12, dataKey)
	f.rewrite(func(h *header.Header) {
		h.Copies[1] = &header.Copy{Seq: 2, Slots: []header.Slot{awsSlot("copy0-seq3")}}
		f.seal(h, 1)
		h.Copies[0] = &header.Copy{Seq: 3, Slots: []header.Slot{awsSlot("copy0-seq3"), localSlot("copy0-seq3")}}
		f.seal(h, 0)
	})
	add(ok("valid-copy0-seq3", "after two rewrites: copy 0 has sequence 3, copy 1 sequence 2", f, p("copy0-seq3", 10)))

	f = newFile("hole", 12, dataKey)
	plain := p("hole", 3*4096+10)
	clear(plain[4096 : 2*4096])
	b := f.bytes(plain)
	clear(b[header.Size+f.cb() : header.Size+2*f.cb()])
	add(vector{name: "valid-hole-middle", comment: "block 1 of 3 is a hole (4124 zero bytes) and reads as 4096 zero bytes",
		expect: "success", shift: 12, dataKey: dataKey, file: b, plain: plain, size: int64(len(plain))})

	f = newFile("hole-end", 12, dataKey)
	plain = p("hole-end", 2*4096)
	clear(plain[4096:])
	b = f.bytes(plain)
	clear(b[header.Size+f.cb():])
	add(vector{name: "valid-hole-last", comment: "a 2-block file extended by truncate: the last full block is a hole",
		expect: "success", shift: 12, dataKey: dataKey, file: b, plain: plain, size: int64(len(plain))})

	// Bad preambles.
	f = newFile("bad-preamble", 12, dataKey)
	good := f.bytes(p("bad-preamble", 100))
	add(fail("bad-magic", "magic starts with \"kMSFS\"", "bad-preamble", f, flip(good, 0, 0x20)))
	add(fail("bad-version-2", "version 2", "bad-preamble", f, flip(good, 7, 0x03)))
	add(fail("bad-reserved", "reserved byte 12 is 0x01", "bad-preamble", f, flip(good, 12, 0x01)))
	add(fail("bad-block-shift-21", "block shift 21 is out of range", "bad-preamble", f, flip(good, 8, 0x19)))
	v := fail("bad-block-size-mismatch", "the file has 8 KiB blocks but the volume 4 KiB", "bad-preamble", f, nil)
	f13 := newFile("bs-mismatch", 13, dataKey)
	v.file, v.shift = f13.bytes(p("bs-mismatch", 100)), 12
	add(v)

	// Bad headers.
	f = newFile("tampered", 12, dataKey)
	b = f.bytes(p("tampered", 100))
	wrapped := 9 + 2 + len(localURI) + 2 + len(context) + 2 + 10 // a byte of the wrapped key
	b = flip(flip(b, c0+wrapped, 0x04), c1+wrapped, 0x04)
	add(fail("header-tampered-slot", "a bit of the wrapped key is flipped in both copies: the mac fails", "header-tampered", f, b))

	f = newFile("tampered-seq", 12, dataKey)
	b = f.bytes(p("tampered-seq", 100))
	add(fail("header-tampered-seq", "the sequence of both copies is changed from 1 to 3", "header-tampered", f,
		flip(flip(b, c0+7, 0x02), c1+7, 0x02)))

	f = newFile("both-damaged", 12, dataKey)
	b = f.bytes(p("both-damaged", 100))
	b[c0+8] = 0                     // copy 0: slot count 0
	b[c1+header.MACOffset-1] = 0xff // copy 1: non-zero padding
	add(fail("header-both-copies-damaged", "copy 0 has slot count 0 and copy 1 non-zero padding: neither parses", "header-tampered", f, b))

	f = newFile("both-unused", 12, dataKey)
	b = f.bytes(p("both-unused", 100))
	clear(b[c0:header.Size])
	add(fail("header-both-copies-unused", "both copies are all zero", "header-tampered", f, b))

	f = newFile("wrong-key", 12, otherKey)
	v = fail("wrong-key", "the file was written under another data key: its commitment differs", "wrong-key", f, f.bytes(p("wrong-key", 100)))
	v.dataKey = dataKey
	add(v)

	f = newFile("file-id", 12, dataKey)
	add(fail("wrong-key-file-id-changed", "a bit of the file ID is flipped: the commitment (salted with the file ID) differs", "wrong-key", f,
		flip(f.bytes(p("file-id", 100)), 20, 0x01)))

	// Bad blocks.
	f = newFile("blocks", 12, dataKey)
	plain = p("blocks", 3*4096+1000)
	b = f.bytes(plain)
	blk := func(n int) int { return header.Size + n*f.cb() }
	v = fail("block-flipped-bit", "a ciphertext bit of block 1 is flipped", "block-auth (block 1)", f, flip(b, blk(1)+500, 0x08))
	v.size = int64(len(plain))
	add(v)
	sw := bytes.Clone(b)
	copy(sw[blk(0):blk(1)], b[blk(1):blk(2)])
	copy(sw[blk(1):blk(2)], b[blk(0):blk(1)])
	v = fail("block-swapped", "blocks 0 and 1 are swapped", "block-auth (block 0)", f, sw)
	v.size = int64(len(plain))
	add(v)
	other := newFile("blocks-other", 12, dataKey)
	ob := other.bytes(p("blocks-other", 3*4096))
	mixed := bytes.Clone(b)
	copy(mixed[blk(2):blk(3)], ob[blk(2):blk(3)])
	v = fail("block-from-other-file", "block 2 is block 2 of another file with the same data key", "block-auth (block 2)", f, mixed)
	v.size = int64(len(plain))
	add(v)
	zt := append(bytes.Clone(b[:blk(3)]), make([]byte, 1028)...)
	v = fail("block-zero-tail", "the last, partial block is all zero: only a full block of zeros is a hole", "block-auth (block 3)", f, zt)
	v.size = 3*4096 + 1000
	add(v)

	// Bad sizes.
	for _, r := range []int{1, 28} {
		tb := bytes.Clone(b[:blk(3)+r])
		add(vector{name: fmt.Sprintf("bad-size-tail-%d", r),
			comment: fmt.Sprintf("the last block has %d bytes and no plaintext; the size is reported as 3 blocks", r),
			expect:  "bad-size", shift: 12, dataKey: dataKey, file: tb, plain: plain[:3*4096], size: 3 * 4096})
	}
	add(vector{name: "bad-size-torn-header", comment: "the first 100 bytes of a header (a torn create)",
		expect: "bad-size", shift: 12, dataKey: dataKey, file: bytes.Clone(b[:100]), plain: []byte{}, size: 0})
	return vs
}

func (v vector) encode() []byte {
	var w bytes.Buffer
	fmt.Fprintf(&w, "comment: %s\n", v.comment)
	fmt.Fprintf(&w, "expect: %s\n", v.expect)
	fmt.Fprintf(&w, "block-size: %d\n", 1<<v.shift)
	fmt.Fprintf(&w, "data-key: %s\n", hex.EncodeToString(v.dataKey))
	if v.size >= 0 {
		fmt.Fprintf(&w, "plaintext-size: %d\n", v.size)
	}
	if v.plain != nil {
		sum := sha256.Sum256(v.plain)
		fmt.Fprintf(&w, "plaintext-sha256: %s\n", hex.EncodeToString(sum[:]))
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

func main() {
	out := flag.String("out", "tests/testdata/vectors", "directory to write the vectors to")
	flag.Parse()
	log.SetFlags(0)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatalf("vectorgen: %v", err)
	}
	old, _ := filepath.Glob(filepath.Join(*out, "*.txt"))
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			log.Fatalf("vectorgen: %v", err)
		}
	}
	for _, v := range vectors() {
		if strings.ContainsAny(v.comment, "\n") {
			log.Fatalf("vectorgen: %s: comment has a newline", v.name)
		}
		p := filepath.Join(*out, v.name+".txt")
		if err := os.WriteFile(p, v.encode(), 0o644); err != nil {
			log.Fatalf("vectorgen: %v", err)
		}
	}
}
