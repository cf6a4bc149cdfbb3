package cryptfile

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
)

// fuzzSlotData is how many bytes of copy a slot holds in the fuzz targets.
const fuzzSlotData = 1 << 20

// fuzzRecords are the seeds of the journal fuzz targets: records that
// parse, and records whose fields or paths are refused.
func fuzzRecords() []record {
	return []record{
		{fileID: [16]byte{1, 2, 3}, ino: 42, coff: 4096, length: 4124, cut: -1, copyHash: sha256.Sum256([]byte("copy")), path: "f"},
		{ino: 1, coff: 4096 + 3*4124, length: 0, cut: 4096 + 3*4124, path: "dir/sub/file.txt"},
		{coff: 1 << 40, length: fuzzSlotData, cut: 1<<40 + 4096, path: strings.Repeat("a/", 100) + "b"},
		{path: strings.Repeat("x", maxJournPath)},
		{path: "a..b/..c/c.."},
		{path: "../etc/passwd"},
		{path: "/etc/passwd"},
		{path: "a/../b"},
		{path: ".."},
		{path: "a\x00b"},
		{length: fuzzSlotData + 1, path: "f"},
		{coff: -1, path: "f"},
		{path: ""},
	}
}

// checkAccepted fails the test if r, which a parser accepted, is not a
// record that replay may act on: a path inside the backing directory
// (relative, with no ".." component and no NUL) and fields in range.
func checkAccepted(t *testing.T, r record) {
	t.Helper()
	if r.path == "" || len(r.path) > maxJournPath || strings.HasPrefix(r.path, "/") || strings.ContainsRune(r.path, 0) {
		t.Fatalf("accepted the path %q", r.path)
	}
	for _, c := range strings.Split(r.path, "/") {
		if c == ".." {
			t.Fatalf("accepted the path %q, which leaves the directory", r.path)
		}
	}
	if r.length < 0 || int64(r.length) > fuzzSlotData || r.coff < 0 || r.cut < -1 {
		t.Fatalf("accepted length %d, offset %d, cut %d", r.length, r.coff, r.cut)
	}
}

// FuzzParseRecord checks that parseRecord, which parses a record's
// plaintext, never panics, that a record it accepts marshals back to
// exactly the bytes it was parsed from, and that an accepted record is
// one replay may act on.
func FuzzParseRecord(f *testing.F) {
	for _, r := range fuzzRecords() {
		f.Add(r.marshal(nil))
	}
	good := fuzzRecords()[0].marshal(nil)
	badCut := bytes.Clone(good)
	binary.BigEndian.PutUint64(badCut[36:44], noCut-1)
	f.Add(badCut)
	f.Add(good[:recordFixed-1])
	f.Add(append(bytes.Clone(good), 'x'))
	f.Add([]byte{})
	f.Add(make([]byte, recordFixed))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRecord(b, fuzzSlotData)
		if err != nil {
			return
		}
		if got := r.marshal(nil); !bytes.Equal(got, b) {
			t.Fatalf("marshal(parseRecord(%q)) = %q, want the input", b, got)
		}
		checkAccepted(t, r)
	})
}

// FuzzOpenRecord checks that openRecord, given any page for any slot,
// never panics, reads an all-zero page as no record, and accepts only
// what sealRecord makes: for an accepted page, the page sealRecord makes
// of the record it returned, with the page's nonce, computed here with
// AES-GCM directly, is the page itself. The seeds are sealed records and
// their mutations: another slot, a flipped bit, a byte after the sealed
// record, another length, a page cut short.
func FuzzOpenRecord(f *testing.F) {
	key := bytes.Repeat([]byte{0x5c}, 32)
	id := [16]byte{0x10, 0x20, 15: 0x30}
	c, err := blockcipher.New(key, id, layout(4096))
	if err != nil {
		f.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		f.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		f.Fatal(err)
	}
	for i, r := range fuzzRecords() {
		if len(r.path) == 0 {
			continue // SealBlock refuses nothing to seal: no record is empty
		}
		slot := i % journalSlots
		page := sealRecord(c, slot, &r, make([]byte, journalHdr))
		f.Add(uint8(slot), page)
		f.Add(uint8(slot+1), page)
		flipped := bytes.Clone(page)
		flipped[10+i] ^= 1
		f.Add(uint8(slot), flipped)
		after := bytes.Clone(page)
		after[journalHdr-1-i] = 0xff
		f.Add(uint8(slot), after)
		length := bytes.Clone(page)
		length[9]--
		f.Add(uint8(slot), length)
		f.Add(uint8(slot), page[:10+int(binary.BigEndian.Uint16(page[8:10]))])
	}
	f.Add(uint8(0), make([]byte, journalHdr))
	f.Add(uint8(0), []byte{})
	f.Add(uint8(0), oldJournal(fuzzRecords()[0], nil))
	f.Fuzz(func(t *testing.T, slot uint8, page []byte) {
		r, err := openRecord(c, int(slot), page, fuzzSlotData)
		if err == errNoRecord || isZero(page) {
			if err != errNoRecord || !isZero(page) {
				t.Fatalf("openRecord = %v for a page that is all zero: %v", err, isZero(page))
			}
			return
		}
		if err != nil {
			return
		}
		checkAccepted(t, r)
		if len(page) != journalHdr {
			t.Fatalf("openRecord accepted a page of %d bytes", len(page))
		}
		nonce := page[10 : 10+blockcipher.NonceSize]
		ad := binary.BigEndian.AppendUint64(bytes.Clone(id[:]), uint64(slot))
		sealed := aead.Seal(bytes.Clone(nonce), nonce, r.marshal(nil), ad)
		want := make([]byte, journalHdr)
		copy(want, journalMagic)
		binary.BigEndian.PutUint16(want[8:10], uint16(len(sealed)))
		copy(want[10:], sealed)
		if !bytes.Equal(page, want) {
			t.Fatalf("openRecord(slot %d) accepted a page sealRecord does not make (first difference at byte %d)", slot, firstDiff(page, want))
		}
	})
}
