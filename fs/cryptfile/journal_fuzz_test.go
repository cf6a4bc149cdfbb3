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

// fuzzRecordsV4 are the version-4 seeds of the journal fuzz targets:
// records that parse, and records whose ranges, fields or paths are
// refused.
func fuzzRecordsV4() []record {
	v4 := func(cut int64, path string, ranges ...span) record {
		r := record{v4: true, fileID: [16]byte{9, 8, 7}, ino: 77, cut: cut, copyHash: sha256.Sum256([]byte("copies")), path: path, ranges: ranges}
		r.coff = cut
		for i, s := range ranges {
			if i == 0 {
				r.coff = s.off
			}
			r.length += s.length
		}
		return r
	}
	many := make([]span, maxTxnRanges)
	for i := range many {
		many[i] = span{int64(4096 + 100*i), 28}
	}
	return []record{
		v4(-1, "f", span{4096, 4096}, span{3 * 4096, 28}),
		v4(1<<20, "dir/sub/file.txt", span{4096 + 36, 36}),
		v4(12345, "a/b"),
		v4(-1, strings.Repeat("x", maxTxnPath), many...),
		v4(-1, "f", append(many, span{1 << 30, 1})...),
		v4(-1, "f", span{0, fuzzSlotData}),
		v4(-1, "f", span{0, fuzzSlotData}, span{fuzzSlotData, 1}),
		v4(-1, "f", span{100, 10}, span{105, 10}),
		v4(-1, "f", span{100, 10}, span{50, 10}),
		v4(-1, "f", span{100, 0}),
		v4(-1, "f", span{1<<63 - 5, 10}),
		v4(-1, "f"),
		v4(5, "../x", span{1, 1}),
		v4(5, "", span{1, 1}),
		v4(-1, strings.Repeat("y", maxTxnPath+1), span{1, 1}),
	}
}

// checkAccepted fails the test if r, which a parser accepted, is not a
// record that replay may act on: a path inside the backing directory
// (relative, with no ".." component and no NUL) and fields in range; for
// a version-4 record, 1 to maxTxnRanges sorted, disjoint, non-empty
// ranges within the slot that end at an int64 offset, or none and a cut.
func checkAccepted(t *testing.T, r record) {
	t.Helper()
	maxPath := maxJournPath
	if r.v4 {
		maxPath = maxTxnPath
		if len(r.ranges) > maxTxnRanges || len(r.ranges) == 0 && r.cut < 0 {
			t.Fatalf("accepted %d ranges, cut %d", len(r.ranges), r.cut)
		}
		var end, total int64
		for i, s := range r.ranges {
			if s.off < 0 || s.length <= 0 || s.off > 1<<63-1-int64(s.length) || i > 0 && s.off < end {
				t.Fatalf("accepted range %d: %d bytes at %d (previous end %d)", i, s.length, s.off, end)
			}
			end = s.off + int64(s.length)
			total += int64(s.length)
		}
		if total != int64(r.length) {
			t.Fatalf("accepted ranges of %d bytes, length %d", total, r.length)
		}
	}
	if r.path == "" || len(r.path) > maxPath || strings.HasPrefix(r.path, "/") || strings.ContainsRune(r.path, 0) {
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

// FuzzParseRecordV4 checks that parseRecordV4, which parses a version-4
// record's plaintext, never panics, that a record it accepts marshals
// back to exactly the bytes it was parsed from, and that an accepted
// record is one replay may act on.
func FuzzParseRecordV4(f *testing.F) {
	for _, r := range fuzzRecordsV4() {
		f.Add(r.marshal(nil))
	}
	good := fuzzRecordsV4()[0].marshal(nil)
	badCut := bytes.Clone(good)
	binary.BigEndian.PutUint64(badCut[26:34], noCut-1)
	f.Add(badCut)
	bigCount := bytes.Clone(good)
	binary.BigEndian.PutUint16(bigCount[24:26], 0xffff)
	f.Add(bigCount)
	f.Add(good[:txnFixed-1])
	f.Add(append(bytes.Clone(good), 'x'))
	f.Add([]byte{})
	f.Add(make([]byte, txnFixed))
	f.Add(fuzzRecords()[0].marshal(nil)) // a version-3 record
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRecordV4(b, fuzzSlotData)
		if err != nil {
			return
		}
		if !r.v4 {
			t.Fatal("parseRecordV4 returned a record of version 3")
		}
		if got := r.marshal(nil); !bytes.Equal(got, b) {
			t.Fatalf("marshal(parseRecordV4(%q)) = %q, want the input", b, got)
		}
		checkAccepted(t, r)
	})
}

// FuzzOpenRecord checks that openRecord, given any page for any slot,
// never panics, reads an all-zero page as no record, and accepts only
// what sealRecord makes: for an accepted page, the page sealRecord makes
// of the record it returned, with the page's nonce, computed here with
// AES-GCM directly, is the page itself. The seeds are sealed records, of
// versions 3 and 4, and their mutations: another slot, a flipped bit, a
// byte after the sealed record, another length, a page cut short.
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
	for i, r := range append(fuzzRecords(), fuzzRecordsV4()...) {
		if len(r.path) == 0 || r.size() > maxRecord {
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
		copy(want, r.magic())
		binary.BigEndian.PutUint16(want[8:10], uint16(len(sealed)))
		copy(want[10:], sealed)
		if !bytes.Equal(page, want) {
			t.Fatalf("openRecord(slot %d) accepted a page sealRecord does not make (first difference at byte %d)", slot, firstDiff(page, want))
		}
	})
}
