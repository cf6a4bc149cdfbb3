package cryptfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
)

// txnEnv is a backing file with a kmsfs header and some ciphertext, its
// File open (its key loaded), and the volume's journal.
type txnEnv struct {
	*env
	j  *Journal
	h  *Handle
	fd int
	// old is the backing file as it was made.
	old []byte
}

// newTxnEnv makes a txnEnv in a new backing directory, the journal
// logging to logger (nowhere if nil). The backing file is a little over
// 24 KiB.
func newTxnEnv(t *testing.T, logger *log.Logger) *txnEnv {
	t.Helper()
	dir := t.TempDir()
	l := layout(4096)
	j := openTestJournal(t, dir, journalMaxData(l), logger)
	e := newEnvIn(t, dir, "d/f", 4096, j)
	h := e.open()
	if _, err := h.WriteAt(ctx, randBytes(rand.New(rand.NewPCG(40, 0)), 20000), 0); err != nil {
		t.Fatal(err)
	}
	return &txnEnv{env: e, j: j, h: h, fd: h.Fd(), old: e.backing()}
}

// txn calls writeTxn as the engine does, with the file's lock held.
func (e *txnEnv) txn(ranges []wrange, cut int64) error {
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	return e.j.writeTxn(e.f, e.fd, ranges, cut)
}

// applyTxn returns b with ranges written into it (zeros filling any gap
// past its end), then cut or extended with zeros to cut if cut >= 0.
func applyTxn(b []byte, ranges []wrange, cut int64) []byte {
	b = bytes.Clone(b)
	for _, r := range ranges {
		if end := r.off + int64(len(r.data)); end > int64(len(b)) {
			b = append(b, make([]byte, end-int64(len(b)))...)
		}
		copy(b[r.off:], r.data)
	}
	if cut >= 0 {
		if cut <= int64(len(b)) {
			b = b[:cut]
		} else {
			b = append(b, make([]byte, cut-int64(len(b)))...)
		}
	}
	return b
}

// rangesOf makes the ranges of a test transaction: n bytes at each
// offset of offs (pairs: offset, length), random.
func rangesOf(r *rand.Rand, offs ...int64) []wrange {
	var rs []wrange
	for i := 0; i+1 < len(offs); i += 2 {
		rs = append(rs, wrange{off: offs[i], data: randBytes(r, offs[i+1])})
	}
	return rs
}

// TestWriteTxn makes transactions through writeTxn and checks the file
// they leave, the record each wrote (ranges copied, cut, copy and hash),
// and, for each, that a crash after its record, with none, part or all
// of its writes done, is replayed to the file the docs say: every copied
// range new, the file cut where the record says, and that this is the
// file the transaction makes, cut there.
func TestWriteTxn(t *testing.T) {
	size := int64(len(newTxnEnv(t, nil).old))
	if size < 20000 || size%4096 == 0 {
		t.Fatalf("test file of %d bytes, want more than 20000 and not a multiple of a page", size)
	}
	for _, tc := range []struct {
		name string
		// ranges returns the ranges, for a file of size bytes; cut is
		// that given to writeTxn.
		ranges func(r *rand.Rand) []wrange
		cut    int64
		// copied is how many of the ranges the record holds, wantCut its
		// cut; record false if there is none.
		record  bool
		copied  int
		wantCut int64
	}{
		{"two overwrites and an append", func(r *rand.Rand) []wrange {
			return rangesOf(r, 5000, 300, 9000, 5000, size+100, 6000)
		}, -1, true, 2, size},
		{"an overwrite across the end and an append", func(r *rand.Rand) []wrange {
			return rangesOf(r, 4200, 28, size-100, 300, size+1000, 50)
		}, -1, true, 2, size + 200},
		{"overwrites only", func(r *rand.Rand) []wrange {
			return rangesOf(r, 4096+72, 28, 8192, 4096, size-36, 36)
		}, -1, true, 3, -1},
		{"shrink", func(r *rand.Rand) []wrange {
			return rangesOf(r, 4096+36, 36, 4200, 28)
		}, 10000, true, 2, 10000},
		{"shrink with nothing else", func(*rand.Rand) []wrange { return nil }, 8192, true, 0, 8192},
		{"lengthen", func(r *rand.Rand) []wrange {
			// The range between the old end and the cut is copied: the file
			// keeps it; the one past the cut is not.
			return rangesOf(r, 4096, 36, size+10, 28, size+9000, 10)
		}, size + 8192, true, 2, size + 8192},
		{"appends only", func(r *rand.Rand) []wrange {
			return rangesOf(r, size, 5000, size+8000, 100)
		}, -1, true, 0, size},
		{"one append past a page", func(r *rand.Rand) []wrange {
			return rangesOf(r, size, 4096)
		}, -1, true, 0, size},
		{"one append within a page", func(r *rand.Rand) []wrange {
			return rangesOf(r, size, 4096-size%4096)
		}, -1, false, 0, 0},
		{"empty ranges are ignored", func(r *rand.Rand) []wrange {
			return append(rangesOf(r, 0, 0, 5000, 10, 5010, 0), rangesOf(r, 5010, 5, size, 0)...)
		}, -1, true, 2, -1},
		{"as many ranges as a record holds", func(r *rand.Rand) []wrange {
			var offs []int64
			for i := range int64(maxTxnRanges) {
				offs = append(offs, 4096+i*100, 50)
			}
			return rangesOf(r, append(offs, size, 10000)...)
		}, -1, true, maxTxnRanges, size},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The transaction, whole.
			e := newTxnEnv(t, nil)
			ranges := tc.ranges(rand.New(rand.NewPCG(41, 0)))
			stop := recordJournal(t, e.j)
			if err := e.txn(ranges, tc.cut); err != nil {
				t.Fatalf("writeTxn = %v, want nil", err)
			}
			ws := stop()
			full := e.backing()
			if want := applyTxn(e.old, ranges, tc.cut); !bytes.Equal(full, want) {
				t.Fatalf("file after writeTxn: %d bytes, first difference at %d; want %d bytes", len(full), firstDiff(full, want), len(want))
			}
			checkJournalClear(t, e.dir, e.j.slotSize, e.name)
			if !tc.record {
				if len(ws) != 0 {
					t.Fatalf("writeTxn wrote %d records, want none", len(ws))
				}
				return
			}
			if len(ws) != 1 {
				t.Fatalf("writeTxn wrote %d records, want 1", len(ws))
			}
			w := ws[0]
			rec := w.rec
			if !rec.v4 || !bytes.Equal(w.page[:8], []byte("KMSFSJ4\x00")) {
				t.Fatalf("record of version 4: %v, page magic %q; want a KMSFSJ4 record", rec.v4, w.page[:8])
			}
			if rec.path != e.name || rec.ino != inode(t, e.path) || rec.fileID != fileID(t, full) {
				t.Errorf("record of %q, inode %d, file ID %x; want %q, %d, %x", rec.path, rec.ino, rec.fileID, e.name, inode(t, e.path), fileID(t, full))
			}
			if bytes.Contains(w.page, []byte(e.name)) {
				t.Errorf("the record page holds the path in clear")
			}
			var live []wrange
			for _, r := range ranges {
				if len(r.data) > 0 {
					live = append(live, r)
				}
			}
			var wantRanges []span
			var wantCopy []byte
			for _, r := range live[:tc.copied] {
				wantRanges = append(wantRanges, span{r.off, len(r.data)})
				wantCopy = append(wantCopy, r.data...)
			}
			if !reflect.DeepEqual(rec.ranges, wantRanges) || rec.cut != tc.wantCut {
				t.Errorf("record of ranges %v, cut %d; want %v, %d", rec.ranges, rec.cut, wantRanges, tc.wantCut)
			}
			if !bytes.Equal(w.copy, wantCopy) || rec.length != len(wantCopy) || sha256.Sum256(w.copy) != rec.copyHash {
				t.Errorf("copy of %d bytes (record: %d, hash right: %v); want the %d bytes of the copied ranges", len(w.copy), rec.length, sha256.Sum256(w.copy) == rec.copyHash, len(wantCopy))
			}
			// What a replay must make: the copied ranges over the old file,
			// cut; and that is the file the transaction makes, cut there.
			want := applyTxn(e.old, live[:tc.copied], rec.cut)
			if cut := rec.cut; cut >= 0 && cut <= int64(len(full)) && !bytes.Equal(want, full[:cut]) || cut < 0 && !bytes.Equal(want, full) {
				t.Fatalf("the record's replay makes another file than the transaction (first difference at %d)", firstDiff(want, full))
			}

			// Crashes after the record. The journal each replay opens lives
			// as long as tt, for the next crash.
			tt := t
			r := rand.New(rand.NewPCG(42, 0))
			for _, crash := range []struct {
				name string
				file func() []byte
			}{
				{"nothing written", func() []byte { return e.old }},
				{"first range written, half of the next, appends torn", func() []byte {
					b := applyTxn(e.old, live[:min(1, len(live))], -1)
					if len(live) > 1 {
						half := live[1]
						half.data = half.data[:len(half.data)/2]
						b = applyTxn(b, []wrange{half}, -1)
					}
					// Each append half written, with garbage.
					for _, a := range live[tc.copied:] {
						b = applyTxn(b, []wrange{{a.off, randBytes(r, int64(len(a.data)/2))}}, -1)
					}
					return b
				}},
				{"every range written, not cut", func() []byte { return applyTxn(e.old, live, -1) }},
				{"every range written and cut", func() []byte { return full }},
			} {
				t.Run(crash.name, func(t *testing.T) {
					if err := os.WriteFile(e.path, crash.file(), 0o644); err != nil {
						t.Fatal(err)
					}
					// The page as writeTxn wrote it; sealed anew under the key of
					// the journal a replay started, after the first crash.
					writeJournalAt(t, e.dir, sealedAs(e.j, w), e.j.slotOffset(w.slot))
					writeJournalAt(t, e.dir, w.copy, e.j.slotOffset(w.slot)+journalHdr)
					var logBuf bytes.Buffer
					j2 := openTestJournal(tt, e.dir, journalMaxData(layout(4096)), log.New(&logBuf, "", 0))
					if !strings.Contains(logBuf.String(), "completed an interrupted write to d/f") {
						t.Errorf("replay log = %q, want a completed write", logBuf.String())
					}
					if got := e.backing(); !bytes.Equal(got, want) {
						t.Errorf("file after replay: %d bytes, first difference at %d; want %d bytes", len(got), firstDiff(got, want), len(want))
					}
					checkJournalClear(t, e.dir, j2.slotSize, e.name)
					e.j = j2
				})
			}
		})
	}
}

// sealedAs returns the record page of w if the journal j had written
// it: w.page itself while j is the journal that wrote it.
func sealedAs(j *Journal, w journalWrite) []byte {
	if _, err := openRecord(j.key.Cipher(), w.slot, w.page, j.slotSize-journalHdr); err == nil {
		return w.page
	}
	return sealRecord(j.key.Cipher(), w.slot, &w.rec, make([]byte, journalHdr))
}

// TestWriteTxnErrors checks the ranges writeTxn refuses, before writing
// anything.
func TestWriteTxnErrors(t *testing.T) {
	e := newTxnEnv(t, nil)
	r := rand.New(rand.NewPCG(43, 0))
	for _, tc := range []struct {
		name   string
		ranges []wrange
	}{
		{"overlapping", rangesOf(r, 5000, 100, 5099, 10)},
		{"not sorted", rangesOf(r, 6000, 100, 5000, 10)},
		{"negative offset", rangesOf(r, -10, 100)},
		{"end past the largest offset", []wrange{{off: 1<<63 - 5, data: make([]byte, 10)}}},
	} {
		if err := e.txn(tc.ranges, -1); !errors.Is(err, errTxnRanges) {
			t.Errorf("%s: writeTxn = %v, want errTxnRanges", tc.name, err)
		}
		if got := e.backing(); !bytes.Equal(got, e.old) {
			t.Errorf("%s: the file changed", tc.name)
		}
	}
	checkJournalClear(t, e.dir, e.j.slotSize)
}

// TestWriteTxnUnjournaled checks the transactions written without a
// record: too many ranges to copy, a copy larger than a slot, a path
// too long, no journal; the first three logged once per mount.
func TestWriteTxnUnjournaled(t *testing.T) {
	many := func(r *rand.Rand, size int64) []wrange {
		var offs []int64
		for i := range int64(maxTxnRanges + 1) {
			offs = append(offs, 4096+i*100, 50)
		}
		return rangesOf(r, append(offs, size, 100)...)
	}
	large := func(r *rand.Rand, size int64) []wrange {
		return rangesOf(r, 4096, 10000, size, int64(journalMaxData(layout(4096))))
	}
	for _, tc := range []struct {
		name    string
		ranges  func(r *rand.Rand, size int64) []wrange
		rel     string
		noJourn bool
		logged  string
	}{
		{"too many ranges", many, "d/f", false, "more than the 64 of a record"},
		{"a copy larger than a slot", func(r *rand.Rand, size int64) []wrange {
			// Copied whole: it starts below the end.
			return rangesOf(r, 4096, int64(journalMaxData(layout(4096)))+8192)
		}, "d/f", false, "of a slot"},
		{"a path too long", large, strings.Repeat("x", maxTxnPath+1), false, "longer than the"},
		{"no journal", many, "d/f", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			e := newTxnEnv(t, log.New(&logBuf, "", 0))
			e.f.name = func() string { return tc.rel }
			if tc.noJourn {
				e.j = nil
			}
			r := rand.New(rand.NewPCG(44, 0))
			want := e.old
			for range 2 {
				ranges := tc.ranges(r, int64(len(want)))
				var stop func() []journalWrite
				if e.j != nil {
					stop = recordJournal(t, e.j)
				}
				if err := e.txn(ranges, -1); err != nil {
					t.Fatalf("writeTxn = %v, want nil", err)
				}
				if stop != nil {
					if ws := stop(); len(ws) != 0 {
						t.Fatalf("writeTxn wrote %d records, want none", len(ws))
					}
				}
				want = applyTxn(want, ranges, -1)
				if got := e.backing(); !bytes.Equal(got, want) {
					t.Fatalf("file after writeTxn: %d bytes, first difference at %d; want %d bytes", len(got), firstDiff(got, want), len(want))
				}
			}
			if got := strings.Count(logBuf.String(), "written without the write journal"); tc.logged != "" && (got != 1 || !strings.Contains(logBuf.String(), tc.logged)) || tc.logged == "" && got != 0 {
				t.Errorf("log = %q, want %q once", logBuf.String(), tc.logged)
			}
		})
	}
}

// TestWriteTxnFails makes the append of a transaction fail part-way
// (past the file size limit): the append is cut back, the copied ranges
// hold their new bytes (what a replay would make), the error is returned
// and the slot is cleared.
func TestWriteTxnFails(t *testing.T) {
	e := newTxnEnv(t, nil)
	size := int64(len(e.old))
	r := rand.New(rand.NewPCG(45, 0))
	// The append lies past the journal's slots, which the limit must not
	// stop.
	far := size + 16<<20
	if end := e.j.slotOffset(journalSlots); far < end {
		t.Fatalf("journal of %d bytes, past the append at %d", end, far)
	}
	ranges := rangesOf(r, 5000, 100, size-50, 100, far, 3*4096)
	restore := limitFileSizeUntil(t, far+4096)
	err := e.txn(ranges, -1)
	restore()
	if err == nil {
		t.Fatal("writeTxn past the size limit = nil, want an error")
	}
	want := applyTxn(e.old, ranges[:2], -1)
	if got := e.backing(); !bytes.Equal(got, want) {
		t.Fatalf("file after the failed writeTxn: %d bytes, first difference at %d; want %d bytes (the copied ranges new, the append cut back)", len(got), firstDiff(got, want), len(want))
	}
	checkJournalClear(t, e.dir, e.j.slotSize, e.name)
}

// sealV4 seals the plaintext of a version-4 record for slot with c, as
// docs/FORMAT.md describes the page: "KMSFSJ4\0" | u16 n | sealed | zeros.
func sealV4(c *blockcipher.Cipher, slot int, plain []byte) []byte {
	page := framePage(c, slot, plain)
	copy(page, "KMSFSJ4\x00")
	return page
}

// TestSealRecordV4Format checks the plaintext of a version-4 record
// against docs/FORMAT.md, byte by byte, and that it opens as it was made.
func TestSealRecordV4Format(t *testing.T) {
	c, err := blockcipher.New(bytes.Repeat([]byte{7}, 32), [16]byte{1}, layout(4096))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		r     record
		plain string // hex, spaces ignored
	}{
		{"two ranges and a cut", record{v4: true, fileID: [16]byte{1, 2, 15: 16}, ino: 0x0102030405060708, coff: 0x1000, length: 0x1024, cut: 0x5000,
			copyHash: [32]byte{0xaa, 31: 0xbb}, path: "d/f", ranges: []span{{0x1000, 0x1000}, {0x4000, 0x24}}},
			"01020000000000000000000000000010 0102030405060708 0002 0000000000005000" +
				"aa000000000000000000000000000000000000000000000000000000000000bb 0003" +
				"0000000000001000 00001000 0000000000004000 00000024 642f66"},
		{"a cut only", record{v4: true, ino: 1, coff: 7, cut: 7, path: "x"},
			"00000000000000000000000000000000 0000000000000001 0000 0000000000000007" +
				"0000000000000000000000000000000000000000000000000000000000000000 0001 78"},
		{"no cut", record{v4: true, coff: 9, length: 1, cut: -1, path: "x", ranges: []span{{9, 1}}},
			"00000000000000000000000000000000 0000000000000000 0001 ffffffffffffffff" +
				"0000000000000000000000000000000000000000000000000000000000000000 0001 0000000000000009 00000001 78"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := mustHex(t, tc.plain)
			if got := tc.r.marshal(nil); !bytes.Equal(got, want) {
				t.Fatalf("marshal = %x, want %x", got, want)
			}
			page := sealRecord(c, 3, &tc.r, make([]byte, journalHdr))
			if n := int(binary.BigEndian.Uint16(page[8:10])); string(page[:8]) != "KMSFSJ4\x00" || n != len(want)+blockcipher.Overhead || !isZero(page[10+n:]) {
				t.Fatalf("page magic %q, n = %d; want KMSFSJ4, n = %d, zeros after", page[:8], n, len(want)+blockcipher.Overhead)
			}
			got, err := openRecord(c, 3, page, 1<<20)
			if err != nil || !reflect.DeepEqual(got, tc.r) {
				t.Fatalf("openRecord = %+v, %v; want %+v, nil", got, err, tc.r)
			}
			if _, err := openRecord(c, 3, sealV4(c, 3, want), 1<<20); err != nil {
				t.Fatalf("openRecord of the page as docs/FORMAT.md frames it = %v, want nil", err)
			}
		})
	}
}

// mustHex decodes hex with spaces.
func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// v4Plain builds the plaintext of a version-4 record field by field, so
// that the tests can make ones marshal never does.
func v4Plain(r record, n int, ranges [][2]uint64, path string) []byte {
	b := append([]byte(nil), r.fileID[:]...)
	b = binary.BigEndian.AppendUint64(b, r.ino)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = binary.BigEndian.AppendUint64(b, uint64(r.cut)) // -1: none
	b = append(b, r.copyHash[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(path)))
	for _, s := range ranges {
		b = binary.BigEndian.AppendUint64(b, s[0])
		b = binary.BigEndian.AppendUint32(b, uint32(s[1]))
	}
	return append(b, path...)
}

// TestJournalReplayV4 crafts version-4 records by hand next to version-3
// ones: authentic ones are replayed in slot order (a J3 record of an
// older mount still is), and every one that is altered, not authentic or
// out of range is refused and logged, its file untouched.
func TestJournalReplayV4(t *testing.T) {
	const B = 4096
	l := layout(B)
	maxData := journalMaxData(l)
	e := newTxnEnv(t, nil)
	e.h.Close()
	j := e.j
	slotData := j.slotSize - journalHdr
	size := int64(len(e.old))
	r := rand.New(rand.NewPCG(46, 0))
	base := record{v4: true, fileID: fileID(t, e.old), ino: inode(t, e.path), cut: -1, path: e.name}
	copyA, copyB := randBytes(r, 300), randBytes(r, 28)
	data := append(bytes.Clone(copyA), copyB...)
	good := base
	good.ranges = []span{{5000, 300}, {size - 28, 28}}
	good.coff, good.length = 5000, len(data)
	good.copyHash = sha256.Sum256(data)
	hashOf := func(n uint64) [32]byte { return sha256.Sum256(make([]byte, n)) }
	// raw is a plaintext sealed for the slot under the journal's key,
	// with zeros as its copy (hash set to theirs by the caller).
	raw := func(plain []byte) func(int) ([]byte, []byte) {
		return func(slot int) ([]byte, []byte) { return sealV4(j.key.Cipher(), slot, plain), make([]byte, 4096) }
	}
	zeroHash := func(n uint64) record { b := base; b.copyHash = hashOf(n); return b }
	type slotCase struct {
		name string
		slot func(int) ([]byte, []byte)
		want string
	}
	cases := []slotCase{
		{"a flipped byte", func(slot int) ([]byte, []byte) {
			page := sealRecord(j.key.Cipher(), slot, &good, make([]byte, journalHdr))
			page[10+50] ^= 1
			return page, data
		}, "not authentic"},
		{"wrong hash", func(slot int) ([]byte, []byte) {
			return sealRecord(j.key.Cipher(), slot, &good, make([]byte, journalHdr)), append(bytes.Clone(data[:len(data)-1]), data[len(data)-1]^1)
		}, "its copy does not match the record"},
		{"ranges beyond the slot", raw(v4Plain(zeroHash(0), 2, [][2]uint64{{4096, uint64(slotData) - 100}, {2 * uint64(slotData), 101}}, e.name)), "does not fit a slot"},
		{"overlapping ranges", raw(v4Plain(zeroHash(200), 2, [][2]uint64{{5000, 100}, {5099, 100}}, e.name)), "does not start after the end of range 0"},
		{"unsorted ranges", raw(v4Plain(zeroHash(200), 2, [][2]uint64{{6000, 100}, {5000, 100}}, e.name)), "does not start after the end of range 0"},
		{"no range and no cut", raw(v4Plain(zeroHash(0), 0, nil, e.name)), "no range and no cut"},
		{"too many ranges", raw(v4Plain(zeroHash(0), maxTxnRanges+1, nil, e.name)), "65 ranges, want at most 64"},
		{"a range count past the record", raw(v4Plain(zeroHash(100), 3, [][2]uint64{{5000, 100}}, e.name)), "do not fit a record"},
	}
	cases2 := []slotCase{
		{"negative offset", raw(v4Plain(zeroHash(100), 1, [][2]uint64{{1 << 63, 100}}, e.name)), "negative offset"},
		{"offset and length overflowing", raw(v4Plain(zeroHash(100), 1, [][2]uint64{{1<<63 - 50, 100}}, e.name)), "end past the largest offset"},
		{"an empty range", raw(v4Plain(zeroHash(0), 1, [][2]uint64{{5000, 0}}, e.name)), "range 0: empty"},
		{"bad cut", raw(v4Plain(func() record { b := zeroHash(100); b.cut = -2; return b }(), 1, [][2]uint64{{5000, 100}}, e.name)), "bad cut"},
		{"dot-dot path", raw(v4Plain(zeroHash(100), 1, [][2]uint64{{5000, 100}}, "../d/f")), "leaves the backing directory"},
		{"path too long", raw(v4Plain(zeroHash(100), 1, [][2]uint64{{5000, 100}}, strings.Repeat("x", maxTxnPath+1))), "do not fit a record"},
		{"other inode", raw(v4Plain(func() record { b := zeroHash(100); b.ino++; return b }(), 1, [][2]uint64{{5000, 100}}, e.name)), "the file was replaced"},
		{"other file ID", raw(v4Plain(func() record { b := zeroHash(100); b.fileID[3] ^= 1; return b }(), 1, [][2]uint64{{5000, 100}}, e.name)), "another file ID"},
	}
	for round, cs := range [][]slotCase{cases, cases2} {
		for i, c := range cs {
			page, copy := c.slot(i)
			writeJournalAt(t, e.dir, page, j.slotOffset(i))
			writeJournalAt(t, e.dir, copy, j.slotOffset(i)+journalHdr)
		}
		var logBuf bytes.Buffer
		j = openTestJournal(t, e.dir, maxData, log.New(&logBuf, "", 0))
		lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
		if len(lines) != len(cs) {
			t.Errorf("round %d: %d log lines, want %d:\n%s", round, len(lines), len(cs), logBuf.String())
		}
		for i, c := range cs {
			found := ""
			for _, line := range lines {
				if strings.HasPrefix(line, fmt.Sprintf("kmsfs: write journal slot %d", i)) {
					found = line
				}
			}
			if !strings.Contains(found, c.want) {
				t.Errorf("round %d, %s: log line of slot %d = %q, want one with %q", round, c.name, i, found, c.want)
			}
		}
		if got := e.backing(); !bytes.Equal(got, e.old) {
			t.Fatalf("round %d: the file changed (first difference at %d)", round, firstDiff(got, e.old))
		}
		checkJournalClear(t, e.dir, j.slotSize, e.name)
	}

	// Authentic records, in slot order: a J3 record (an older mount's),
	// a J4 one over it, a J4 one with a cut only.
	j3Data := randBytes(r, 400)
	j3 := record{fileID: base.fileID, ino: base.ino, coff: 4900, length: len(j3Data), cut: -1, path: e.name}
	writeSlot(t, e.dir, j, 1, j3, j3Data)
	writeJournalAt(t, e.dir, sealRecord(j.key.Cipher(), 2, &good, make([]byte, journalHdr)), j.slotOffset(2))
	writeJournalAt(t, e.dir, data, j.slotOffset(2)+journalHdr)
	cutOnly := base
	cutOnly.cut, cutOnly.coff, cutOnly.copyHash = size-10, size-10, sha256.Sum256(nil)
	writeSlot(t, e.dir, j, 5, cutOnly, nil)
	torn := append(bytes.Clone(e.old), randBytes(r, 5000)...)
	if err := os.WriteFile(e.path, torn, 0o644); err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	j = openTestJournal(t, e.dir, maxData, log.New(&logBuf, "", 0))
	want := applyTxn(e.old, []wrange{{4900, j3Data}, {5000, copyA}, {size - 28, copyB}}, size-10)
	if got := e.backing(); !bytes.Equal(got, want) {
		t.Fatalf("file after replay: %d bytes, first difference at %d; want %d", len(got), firstDiff(got, want), len(want))
	}
	for _, s := range []string{"(400 bytes at 4900)", "(328 bytes in 2 ranges)", fmt.Sprintf("(0 bytes in 0 ranges, cut at %d)", size-10)} {
		if !strings.Contains(logBuf.String(), "completed an interrupted write to d/f "+s) {
			t.Errorf("replay log = %q, want a line with %q", logBuf.String(), s)
		}
	}
	checkJournalClear(t, e.dir, j.slotSize, e.name)
}

// TestJournalParkedV4 checks that a parked journal holding a version-4
// record is recognised as a journal, replayed and removed.
func TestJournalParkedV4(t *testing.T) {
	e := newTxnEnv(t, nil)
	e.h.Close()
	maxData := journalMaxData(layout(4096))
	r := rand.New(rand.NewPCG(47, 0))
	d1, d2 := randBytes(r, 100), randBytes(r, 36)
	rec := record{v4: true, fileID: fileID(t, e.old), ino: inode(t, e.path), coff: 4200, length: 136, cut: -1, path: e.name,
		ranges: []span{{4200, 100}, {8000, 36}}}
	name := ParkedJournalPrefix + "0123456789abcdef"
	putJournal(t, e.dir, name, maxData, newJournalKeyer(t), slotWrite{slot: 4, rec: rec, data: append(bytes.Clone(d1), d2...)})
	var logBuf bytes.Buffer
	openTestJournal(t, e.dir, maxData, log.New(&logBuf, "", 0))
	if !strings.Contains(logBuf.String(), "parked write journal "+name+" replayed and removed") {
		t.Errorf("log = %q, want the parked journal replayed and removed", logBuf.String())
	}
	if _, err := os.Stat(filepath.Join(e.dir, name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the parked journal is still there (%v)", err)
	}
	if got, want := e.backing(), applyTxn(e.old, []wrange{{4200, d1}, {8000, d2}}, -1); !bytes.Equal(got, want) {
		t.Errorf("file after replay: first difference at %d", firstDiff(got, want))
	}
}
