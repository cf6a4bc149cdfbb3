package cryptfile

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/header"
)

// journalMaxData is the largest ciphertext of one write, as the mount
// computes it (JournalDataSize): that of a version-1 or 2 file, or of a
// version-3 file (its blocks, and the entries or metadata pages of the
// groups it touches).
func journalMaxData(l blockcipher.Layout) int {
	return max((MaxRequest/l.BlockSize+2)*l.CipherBlockSize(), MaxRequest+2*l.BlockSize+64<<10)
}

// journalSecret is the secret of the keyers of test journals: a journal
// opened again (a mount after a crash) with a keyer of the same secret
// loads the header the previous one wrote.
const journalSecret = 0x4a

// newJournalKeyer returns a keyer for test journals.
func newJournalKeyer(t testing.TB) *fakeKeyer {
	return newFakeKeyer(t, layout(4096), journalSecret)
}

// openTestJournal opens the journal of the backing directory dir for
// writing, as a read-write mount would, logging to logger (nowhere if
// nil); it is closed at the end of the test.
func openTestJournal(t testing.TB, dir string, maxData int, logger *log.Logger) *Journal {
	t.Helper()
	j, err := openJournalErr(t, dir, maxData, newJournalKeyer(t), true, logger)
	if err != nil {
		t.Fatalf("OpenJournal(%s) = %v, want nil", dir, err)
	}
	return j
}

// openJournals are the journals the tests hold, by directory: opening a
// directory's journal again, as a mount after a crash would, first closes
// (unlocks) the previous one, as the crash would have. Every directory is
// a test's own, so a second run of the tests starts afresh.
var openJournals sync.Map

// openJournalErr opens the journal of dir with keys, as a mount would
// (read-write if writable); logger nil logs nowhere.
func openJournalErr(t testing.TB, dir string, maxData int, keys Keyer, writable bool, logger *log.Logger) (*Journal, error) {
	t.Helper()
	if old, ok := openJournals.LoadAndDelete(dir); ok {
		old.(*Journal).Close()
	}
	bd, err := backing.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bd.Close() })
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	j, err := OpenJournal(ctx, bd, maxData, keys, writable, logger)
	if err == nil && j != nil {
		openJournals.Store(dir, j)
		t.Cleanup(func() {
			if openJournals.CompareAndDelete(dir, j) {
				j.Close()
			}
		})
	}
	return j, err
}

// journalBytes returns the journal file of dir.
func journalBytes(t testing.TB, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, JournalName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// slotPage returns the record page of slot i of the journal file jb (what
// of it there is).
func slotPage(jb []byte, slotSize int64, i int) []byte {
	off := journalBase + int64(i)*slotSize
	return jb[min(off, int64(len(jb))):min(off+journalHdr, int64(len(jb)))]
}

// liveSlots returns the slots of the journal file jb whose record page is
// not zero.
func liveSlots(jb []byte, slotSize int64) []int {
	var live []int
	for i := 0; i < journalSlots; i++ {
		if !isZero(slotPage(jb, slotSize, i)) {
			live = append(live, i)
		}
	}
	return live
}

// checkJournalClear fails the test unless the journal file of dir is its
// header followed by zero bytes only (every slot's record page and copy
// area, deallocated or overwritten, read as zeros) and holds none of
// secrets in clear.
func checkJournalClear(t testing.TB, dir string, slotSize int64, secrets ...string) {
	t.Helper()
	jb := journalBytes(t, dir)
	if len(jb) < journalBase {
		t.Fatalf("journal file of %d bytes, want a header of %d bytes", len(jb), journalBase)
	}
	if _, err := header.Parse(jb[:journalBase]); err != nil {
		t.Fatalf("journal header: header.Parse = %v, want nil", err)
	}
	if i := firstNonZero(jb[journalBase:]); i >= 0 {
		slot, at := int64(i)/slotSize, int64(i)%slotSize
		part := "record page"
		if at >= journalHdr {
			part = "copy area"
		}
		t.Fatalf("journal byte %d (slot %d, %s byte %d) is not zero, want every slot zero", journalBase+i, slot, part, at)
	}
	for _, s := range secrets {
		if bytes.Contains(jb, []byte(s)) {
			t.Fatalf("the journal file holds %q in clear", s)
		}
	}
}

// zeros is compared with, a chunk at a time, to find non-zero bytes in
// journal files of several MiB fast (a loop over the bytes is slow with
// -race).
var zeros [64 << 10]byte

// firstNonZero returns the index of the first byte of b that is not zero,
// or -1.
func firstNonZero(b []byte) int {
	for off := 0; off < len(b); off += len(zeros) {
		chunk := b[off:min(off+len(zeros), len(b))]
		if bytes.Equal(chunk, zeros[:len(chunk)]) {
			continue
		}
		for i, x := range chunk {
			if x != 0 {
				return off + i
			}
		}
	}
	return -1
}

// writeJournalAt writes b at off of the journal file of dir.
func writeJournalAt(t testing.TB, dir string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, JournalName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// writeSlot seals r with the key of the journal j, as j would for slot i,
// and writes it, with data as its copy (if not nil), into slot i of the
// journal file of dir. The record's copy hash is that of the first
// r.length bytes of data, if there are as many.
func writeSlot(t testing.TB, dir string, j *Journal, i int, r record, data []byte) {
	t.Helper()
	if len(data) >= r.length {
		r.copyHash = sha256.Sum256(data[:r.length])
	}
	writeJournalAt(t, dir, sealRecord(j.key.Cipher(), i, &r, make([]byte, journalHdr)), j.slotOffset(i))
	if data != nil {
		writeJournalAt(t, dir, data, j.slotOffset(i)+journalHdr)
	}
}

// framePage makes a record page of any plaintext as docs/FORMAT.md
// describes it, sealed with c for slot: "KMSFSJ3\0" | u16 n | sealed |
// zeros.
func framePage(c *blockcipher.Cipher, slot int, plain []byte) []byte {
	page := make([]byte, journalHdr)
	copy(page, "KMSFSJ3\x00")
	sealed := c.SealBlock(nil, plain, uint64(slot))
	binary.BigEndian.PutUint16(page[8:10], uint16(len(sealed)))
	copy(page[10:], sealed)
	return page
}

// oldJournal returns a journal file of kmsfs before the journal was
// sealed: r in clear in slot 0 of slotSize bytes, its copy data after it.
func oldJournal(r record, data []byte) []byte {
	b := []byte("KMSFSJ2\x00")
	b = append(b, r.fileID[:]...)
	b = binary.BigEndian.AppendUint64(b, r.ino)
	b = binary.BigEndian.AppendUint64(b, uint64(r.coff))
	b = binary.BigEndian.AppendUint32(b, uint32(r.length))
	b = binary.BigEndian.AppendUint64(b, uint64(r.cut))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.path)))
	b = append(b, r.path...)
	b = append(b, make([]byte, journalHdr-len(b))...)
	return append(b, data...)
}

// inode returns the inode number of path, not following a symlink.
func inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// fileID returns the file ID in the preamble of a backing file.
func fileID(t testing.TB, backingFile []byte) [16]byte {
	t.Helper()
	p, err := header.ParsePreamble(backingFile)
	if err != nil {
		t.Fatal(err)
	}
	return p.FileID
}

// journalWrite is one record the journal wrote, and the copy it wrote
// before it.
type journalWrite struct {
	slot int
	page []byte
	rec  record
	copy []byte
}

// recordJournal makes the journal j write into a file opened with
// O_APPEND instead of its own, until the returned function is called: on
// Linux, pwrite to such a file appends whatever the offset, so the file
// keeps every write of the journal, in order (the holes it punches fall
// in a prefix as large as the journal). The function puts j's own file
// back, checks that every record was written right after its copy and
// cleared right after, and returns the records. The journal is used by
// one writer at a time meanwhile.
func recordJournal(t *testing.T, j *Journal) func() []journalWrite {
	t.Helper()
	name := filepath.Join(t.TempDir(), "journal.log")
	fd, err := syscall.Open(name, syscall.O_RDWR|syscall.O_CREAT|syscall.O_APPEND|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	prefix := j.slotOffset(journalSlots)
	if err := syscall.Ftruncate(fd, prefix); err != nil {
		t.Fatal(err)
	}
	own := j.fd
	j.fd = fd
	stop := func() {
		if j.fd == fd {
			j.fd = own
			syscall.Close(fd)
		}
	}
	t.Cleanup(stop)
	return func() []journalWrite {
		t.Helper()
		stop()
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return parseJournalLog(t, j, b[prefix:])
	}
}

// parseJournalLog splits what the journal j appended (see recordJournal)
// into records: each is its copy, its record page, then the page cleared
// and, where holes cannot be punched, its copy area overwritten.
func parseJournalLog(t *testing.T, j *Journal, b []byte) []journalWrite {
	t.Helper()
	c := j.key.Cipher()
	var ws []journalWrite
	for pos := 0; pos < len(b); {
		w, at := journalWrite{slot: -1}, pos
		for w.slot < 0 {
			i := bytes.Index(b[at:], journalMagic[:6]) // "KMSFSJ": a record of version 3 or 4
			if i < 0 || at+i+journalHdr > len(b) {
				t.Fatalf("journal log: %d bytes at %d without a record after them", len(b)-pos, pos)
			}
			at += i
			for s := 0; s < journalSlots && w.slot < 0; s++ {
				if r, err := openRecord(c, s, b[at:at+journalHdr], j.slotSize-journalHdr); err == nil {
					w.slot, w.rec, w.page = s, r, b[at:at+journalHdr]
				}
			}
			if w.slot < 0 {
				at++
			}
		}
		w.copy = b[pos:at]
		end := at + journalHdr
		if len(w.copy) == 0 && w.rec.v4 && w.rec.length > 0 && w.rec.length <= clearSmall {
			// A version-4 record and a small copy are one write: the
			// record page, then the copy right after it.
			if end+w.rec.length > len(b) {
				t.Fatalf("journal log: the record of slot %d is not followed by its copy of %d bytes", w.slot, w.rec.length)
			}
			w.copy = b[end : end+w.rec.length]
			end += w.rec.length
		}
		if len(w.copy) != w.rec.length {
			t.Fatalf("journal log: %d bytes written before the record of slot %d, want its copy of %d", len(w.copy), w.slot, w.rec.length)
		}
		// Cleared right after the write: the record page and a copy of up
		// to clearSmall bytes in one write of zeros; a larger copy is
		// zeroed in place after the page (or overwritten, where that is
		// not supported).
		cleared := journalHdr
		if w.rec.length <= clearSmall {
			cleared += w.rec.length
		}
		if end+cleared > len(b) || !isZero(b[end:end+cleared]) {
			t.Fatalf("journal log: the record of slot %d is not cleared right after the write", w.slot)
		}
		end += cleared
		if n := (w.rec.length + 4095) &^ 4095; w.rec.length > clearSmall && end+n <= len(b) && isZero(b[end:end+n]) {
			end += n // the copy area overwritten with zeros
		}
		ws = append(ws, w)
		pos = end
	}
	return ws
}

// TestSealRecordFormat checks a sealed record against docs/FORMAT.md,
// with AES-GCM used directly: the page's framing, the associated data
// (file ID, slot index) and the plaintext's byte layout.
func TestSealRecordFormat(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	id := [16]byte{0xf1, 0xf2, 15: 0xff}
	c, err := blockcipher.New(key, id, layout(4096))
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		r     record
		plain string // hex of the plaintext, spaces ignored
	}{
		{"with a cut", record{fileID: [16]byte{1, 2, 15: 16}, ino: 0x0102030405060708, coff: 4096 + 4124, length: 4124, cut: 0x1234, copyHash: [32]byte{0xaa, 31: 0xbb}, path: "d/f"},
			"01020000000000000000000000000010 0102030405060708 000000000000201c 0000101c 0000000000001234" +
				"aa000000000000000000000000000000000000000000000000000000000000bb 0003 642f66"},
		{"no cut", record{ino: 1, length: 0, cut: -1, path: "x"},
			"00000000000000000000000000000000 0000000000000001 0000000000000000 00000000 ffffffffffffffff" +
				"0000000000000000000000000000000000000000000000000000000000000000 0001 78"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := hex.DecodeString(strings.ReplaceAll(tc.plain, " ", ""))
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.r.marshal(nil); !bytes.Equal(got, want) {
				t.Fatalf("marshal = %x, want %x", got, want)
			}
			for _, slot := range []int{0, 5} {
				page := sealRecord(c, slot, &tc.r, make([]byte, journalHdr))
				n := int(binary.BigEndian.Uint16(page[8:10]))
				if len(page) != journalHdr || string(page[:8]) != "KMSFSJ3\x00" || n != len(want)+blockcipher.Overhead || !isZero(page[10+n:]) {
					t.Fatalf("slot %d: page of %d bytes, magic %q, n = %d; want %d bytes, KMSFSJ3, n = %d, zeros after", slot, len(page), page[:8], n, journalHdr, len(want)+blockcipher.Overhead)
				}
				ad := binary.BigEndian.AppendUint64(id[:], uint64(slot))
				sealed := page[10 : 10+n]
				plain, err := aead.Open(nil, sealed[:blockcipher.NonceSize], sealed[blockcipher.NonceSize:], ad)
				if err != nil || !bytes.Equal(plain, want) {
					t.Fatalf("slot %d: AES-GCM open = %x, %v; want %x, nil", slot, plain, err, want)
				}
				got, err := openRecord(c, slot, page, 1<<20)
				if err != nil || !reflect.DeepEqual(got, tc.r) {
					t.Fatalf("openRecord(slot %d) = %+v, %v; want %+v, nil", slot, got, err, tc.r)
				}
			}
		})
	}
}

// TestJournalWrites writes through a journal and checks every record
// each step wrote: sealed for its slot, written right after its copy and
// cleared right after the write, and describing the write: the right
// file, a copy of the bytes it wrote and its hash, a cut that keeps them.
func TestJournalWrites(t *testing.T) {
	for _, bs := range []int{4096, 65536} {
		t.Run(fmt.Sprintf("B=%d", bs), func(t *testing.T) {
			B := int64(bs)
			dir := t.TempDir()
			l := layout(bs)
			j := openTestJournal(t, dir, journalMaxData(l), nil)
			e := newEnvIn(t, dir, "sub/dir/f", bs, j)
			h := e.open()
			var m model
			r := rand.New(rand.NewPCG(20, uint64(bs)))
			for _, o := range []op{
				wr(0, 100), wr(50, 100), wr(0, 3*B+10), wr(B-5, 10), wr(B, B),
				wr(3*B+10, 5), wr(5*B, 7), tr(6*B + 3), tr(2*B + 9), tr(B), wr(0, 300<<10), wr(7, 300<<10),
				wr(int64(MaxRequest), MaxRequest), wr(10, MaxRequest), tr(0),
			} {
				before := int64(max(len(e.backing()), header.Size))
				stop := recordJournal(t, j)
				e.apply(h, &m, o, r)
				ws := stop()
				e.check(h, m)
				b := e.backing()
				// Only an append within one page may go without a record
				// (the death of the process cannot tear it).
				if o.kind == opWrite && len(ws) == 0 && !(int64(len(b)) > before && onePage(before, len(b)-int(before))) {
					t.Fatalf("%v wrote no record", o)
				}
				for _, w := range ws {
					rec := w.rec
					if rec.path != e.name || rec.ino != inode(t, e.path) || rec.fileID != fileID(t, b) {
						t.Errorf("%v: slot %d record = %q, inode %d, file ID %x; want %q, %d, %x", o, w.slot, rec.path, rec.ino, rec.fileID, e.name, inode(t, e.path), fileID(t, b))
					}
					if bytes.Contains(w.page, []byte(e.name)) {
						t.Errorf("%v: slot %d: the record page holds the path in clear", o, w.slot)
					}
					if sha256.Sum256(w.copy) != rec.copyHash {
						t.Errorf("%v: slot %d: the record's hash is not that of its copy", o, w.slot)
					}
					if end := rec.coff + int64(rec.length); end > int64(len(b)) || !bytes.Equal(w.copy, b[rec.coff:end]) {
						t.Errorf("%v: slot %d: copy of %d bytes at %d is not what the file holds", o, w.slot, rec.length, rec.coff)
					}
					if rec.cut > int64(len(b)) || rec.cut >= 0 && rec.cut < rec.coff+int64(rec.length) {
						t.Errorf("%v: slot %d: cut at %d (copy %d bytes at %d, file %d bytes)", o, w.slot, rec.cut, rec.length, rec.coff, len(b))
					}
				}
			}
		})
	}
}

// TestJournalCleared writes, overwrites, appends and truncates through a
// journal and checks after each step that the journal file holds its
// header and zeros only: no file name and no ciphertext is left in it.
func TestJournalCleared(t *testing.T) {
	const B = 4096
	dir := t.TempDir()
	l := layout(B)
	j := openTestJournal(t, dir, journalMaxData(l), nil)
	const name = "private/tax return 2025.pdf"
	e := newEnvIn(t, dir, name, B, j)
	h := e.open()
	var m model
	r := rand.New(rand.NewPCG(25, 0))
	for _, o := range []op{
		wr(0, 100), wr(50, 100), wr(0, 3*B+10), wr(B-5, 10), wr(3*B+10, 5), wr(5*B, 7),
		tr(6*B + 3), tr(2*B + 9), wr(0, 300<<10), wr(7, 300<<10), wr(int64(MaxRequest), MaxRequest),
		tr(B + 1), wr(B, 2*B), tr(0),
	} {
		e.apply(h, &m, o, r)
		e.check(h, m)
		checkJournalClear(t, dir, j.slotSize, name, "tax return")
	}
	if jb := journalBytes(t, dir); len(jb) <= journalBase+journalHdr {
		t.Fatalf("journal file of %d bytes: the writes used no slot", len(jb))
	}
}

// TestJournalNoRecord checks the writes that go without a record: a
// file with no name, a name too long for a slot, a write larger than a
// slot, and a journal only replayed (of a read-only mount).
func TestJournalNoRecord(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rel      string
		maxData  int
		readOnly bool
		ops      []op
	}{
		{"no name", "", journalMaxData(layout(4096)), false, []op{wr(0, 100), wr(1, 100), tr(50)}},
		{"name too long", strings.Repeat("x", maxJournPath+1), journalMaxData(layout(4096)), false, []op{wr(0, 100), wr(1, 100), tr(50)}},
		{"write larger than a slot", "f", 4124, false, []op{wr(0, 3*4096), wr(1, 3*4096)}},
		{"journal only replayed", "f", journalMaxData(layout(4096)), true, []op{wr(0, 100), wr(1, 100), tr(50)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j := openTestJournal(t, dir, tc.maxData, nil)
			if tc.readOnly {
				var err error
				if j, err = openJournalErr(t, dir, tc.maxData, newJournalKeyer(t), false, nil); err != nil || j == nil {
					t.Fatalf("OpenJournal(read-only) = %v, %v; want a journal, nil", j, err)
				}
			}
			e := newEnvIn(t, dir, "f", 4096, j)
			e.f = New(e.cfg, func() string { return tc.rel })
			h := e.open()
			var m model
			r := rand.New(rand.NewPCG(21, 0))
			for _, o := range tc.ops {
				e.apply(h, &m, o, r)
				e.check(h, m)
			}
			if jb := journalBytes(t, dir); len(jb) != journalBase {
				t.Errorf("journal file = %d bytes, want %d (its header)", len(jb), journalBase)
			}
		})
	}
}

// tornCase is a write interrupted by a crash: the journal slot still
// holds its record and copy, and the backing file is torn.
type tornCase struct {
	name string
	// before makes the file, op interrupts.
	before, op []op
}

// TestJournalReplayTorn interrupts writes of the engine: it makes each
// write, then puts back the record and copy its slot held and tears the
// backing file between its old and new bytes, as a kill -9 in the middle
// of the pwrite would. Reopening the journal must give a file whose
// blocks all read: the new bytes where the copy reaches, the file cut
// where the record says; and a journal that holds nothing.
func TestJournalReplayTorn(t *testing.T) {
	const B = 4096
	for _, tc := range []tornCase{
		{"overwrite across blocks", []op{wr(0, 4*B)}, []op{wr(B-100, B+200)}},
		{"overwrite a partial last block", []op{wr(0, 2*B+300)}, []op{wr(2*B+10, 100)}},
		{"append over a partial last block", []op{wr(0, 2*B+100)}, []op{wr(2*B+100, 3*B)}},
		{"append at a block boundary", []op{wr(0, 2*B)}, []op{wr(2*B, 3*B)}},
		{"truncate inside a block", []op{wr(0, 3*B+500)}, []op{tr(B + 10)}},
		{"pipelined overwrite", []op{wr(0, 100*B)}, []op{wr(3, 70*B)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := layout(B)
			j := openTestJournal(t, dir, journalMaxData(l), nil)
			e := newEnvIn(t, dir, "f", B, j)
			h := e.open()
			var m model
			r := rand.New(rand.NewPCG(22, 0))
			for _, o := range tc.before {
				e.apply(h, &m, o, r)
			}
			old := e.backing()
			stop := recordJournal(t, j)
			for _, o := range tc.op {
				e.apply(h, &m, o, r)
			}
			ws := stop()
			h.Close()
			newB := e.backing()
			if len(ws) == 0 {
				t.Fatal("the write left no record")
			}
			// The record of the op (its last one), back in its slot.
			w := ws[len(ws)-1]
			rec := w.rec
			writeJournalAt(t, dir, w.page, j.slotOffset(w.slot))
			writeJournalAt(t, dir, w.copy, j.slotOffset(w.slot)+journalHdr)
			// Tear: the new bytes up to the middle of the copy, the old
			// ones after it, then garbage up to the new end.
			mid := rec.coff + int64(rec.length)/2
			torn := bytes.Clone(newB[:min(mid, int64(len(newB)))])
			if mid < int64(len(old)) {
				torn = append(torn, old[mid:]...)
			}
			if len(torn) < len(newB) {
				torn = append(torn, randBytes(r, int64(len(newB)-len(torn)))...)
			}
			if _, err := e.keyer.decrypt(torn); err == nil {
				t.Fatal("the torn file decodes: the tear damages nothing")
			}
			if err := os.WriteFile(e.path, torn, 0o644); err != nil {
				t.Fatal(err)
			}
			var logBuf bytes.Buffer
			j2 := openTestJournal(t, dir, journalMaxData(l), log.New(&logBuf, "", 0))
			if !strings.Contains(logBuf.String(), "completed an interrupted write to f") {
				t.Errorf("replay log = %q, want a completed write", logBuf.String())
			}
			checkJournalClear(t, dir, j2.slotSize)
			// The replayed file: the new bytes, cut where the record says.
			want := newB
			if rec.cut >= 0 {
				want = newB[:rec.cut]
			}
			if got := e.backing(); !bytes.Equal(got, want) {
				t.Fatalf("backing file after replay: %d bytes, first difference at %d; want %d bytes", len(got), firstDiff(got, want), len(want))
			}
			// It holds the new plaintext up to where it was cut.
			p, err := l.PlainSize(int64(len(want)))
			if err != nil || p > int64(len(m)) {
				t.Fatalf("plain size after replay = %d, %v; want at most %d", p, err, len(m))
			}
			m.truncate(p)
			e.check(e.open(), m)
		})
	}
}

// TestJournalReplayRecord crafts records by hand: a write whose copy is
// in the slot and whose block in the file is garbled, and an append
// torn past the end of the file, which replay cuts back.
func TestJournalReplayRecord(t *testing.T) {
	for _, bs := range []int{4096, 1 << 20} {
		t.Run(fmt.Sprintf("B=%d", bs), func(t *testing.T) {
			B := int64(bs)
			dir := t.TempDir()
			l := layout(bs)
			j := openTestJournal(t, dir, journalMaxData(l), nil)
			e := newEnvIn(t, dir, "a/b", bs, j)
			h := e.open()
			r := rand.New(rand.NewPCG(23, uint64(bs)))
			m := model(randBytes(r, 3*B))
			if _, err := h.WriteAt(ctx, m, 0); err != nil {
				t.Fatal(err)
			}
			h.Close()
			b := e.backing()
			id := fileID(t, b)
			c, err := e.keyer.cipher(id)
			if err != nil {
				t.Fatal(err)
			}
			// Slot 3: new content for block 1, which is garbled in the file.
			newBlock := randBytes(r, B)
			ct := c.SealBlock(nil, newBlock, 1)
			rec := record{fileID: id, ino: inode(t, e.path), coff: l.BlockCipherOff(1), length: len(ct), cut: -1, path: e.name}
			writeSlot(t, dir, j, 3, rec, ct)
			garbled := bytes.Clone(b)
			copy(garbled[l.BlockCipherOff(1)+10:], randBytes(r, B/2))
			// Slot 6: an append of blocks 3 and 4 that got no further
			// than some garbage: nothing to copy, cut at the old end.
			garbled = append(garbled, randBytes(r, B+55)...)
			rec2 := record{fileID: id, ino: rec.ino, coff: int64(len(b)), length: 0, cut: int64(len(b)), path: e.name}
			writeSlot(t, dir, j, 6, rec2, nil)
			if err := os.WriteFile(e.path, garbled, 0o644); err != nil {
				t.Fatal(err)
			}
			var logBuf bytes.Buffer
			j2 := openTestJournal(t, dir, journalMaxData(l), log.New(&logBuf, "", 0))
			if got := strings.Count(logBuf.String(), "completed an interrupted write to a/b"); got != 2 {
				t.Errorf("replay log = %q, want 2 completed writes", logBuf.String())
			}
			checkJournalClear(t, dir, j2.slotSize, e.name)
			m.write(newBlock, B)
			e.check(e.open(), m)
		})
	}
}

// TestJournalReplaySkips checks that replay leaves alone, and logs,
// every record that does not describe a write to a regular file of the
// backing directory as it is (another file in its place, a path leading
// out or through a symlink), every record page that is not one (damaged,
// of another format), every record that is not authentic (sealed under
// another key or for another slot, altered) and every record whose copy
// was altered; and that nothing outside the backing directory changes.
func TestJournalReplaySkips(t *testing.T) {
	const B = 4096
	l := layout(B)
	maxData := journalMaxData(l)
	dir, outside := t.TempDir(), t.TempDir()
	j := openTestJournal(t, dir, maxData, nil)

	// Kmsfs files inside and outside the backing directory.
	mk := func(d, name string) (*env, record) {
		e := newEnvIn(t, d, name, B, nil)
		h := e.open()
		if _, err := h.WriteAt(ctx, randBytes(rand.New(rand.NewPCG(24, 0)), 2*B), 0); err != nil {
			t.Fatal(err)
		}
		h.Close()
		// A record that would overwrite block 0 with garbage.
		return e, record{fileID: fileID(t, e.backing()), ino: inode(t, e.path), coff: l.BlockCipherOff(0), length: 100, cut: -1, path: name}
	}
	victim, vrec := mk(outside, "victim")
	inside, irec := mk(dir, "inside")
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim.path, filepath.Join(dir, "flink")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	with := func(r record, f func(*record)) record { f(&r); return r }
	garbage := bytes.Repeat([]byte{0xEE}, 100)
	hashed := func(r record) record {
		if r.length <= len(garbage) {
			r.copyHash = sha256.Sum256(garbage[:r.length])
		}
		return r
	}

	// A slot's content: its record page and its copy.
	type slotFunc func(slot int) (page, copy []byte)
	// sealed is r sealed for the slot under the journal's key, with
	// garbage as its copy.
	sealed := func(r record) slotFunc {
		return func(slot int) ([]byte, []byte) {
			r := hashed(r)
			return sealRecord(j.key.Cipher(), slot, &r, make([]byte, journalHdr)), garbage
		}
	}
	// raw is the plaintext p sealed for the slot under the journal's key.
	raw := func(p []byte) slotFunc {
		return func(slot int) ([]byte, []byte) { return framePage(j.key.Cipher(), slot, p), garbage }
	}
	// changed is f's page and copy changed by g.
	changed := func(f slotFunc, g func(page, copy []byte)) slotFunc {
		return func(slot int) ([]byte, []byte) {
			page, copy := f(slot)
			page, copy = bytes.Clone(page), bytes.Clone(copy)
			g(page, copy)
			return page, copy
		}
	}
	hrec := hashed(irec)
	plain := hrec.marshal(nil)
	patched := func(off int, v ...byte) []byte { p := bytes.Clone(plain); copy(p[off:], v); return p }
	// underKey is irec sealed for the slot with the key of a new header
	// of keys (an earlier journal, another volume).
	underKey := func(keys Keyer) slotFunc {
		return func(slot int) ([]byte, []byte) {
			_, k, err := keys.New(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			r := hashed(irec)
			return sealRecord(k.Cipher(), slot, &r, make([]byte, journalHdr)), garbage
		}
	}

	type slotCase struct {
		name string
		slot slotFunc
		want string // in the slot's log line
	}
	rounds := [][]slotCase{{
		{"other inode", sealed(with(irec, func(r *record) { r.ino++ })), "not replayed: the file was replaced"},
		{"other file ID", sealed(with(irec, func(r *record) { r.fileID[0] ^= 1 })), "not replayed: the file has another file ID"},
		{"dot-dot path", sealed(with(vrec, func(r *record) { r.path = "../" + filepath.Base(outside) + "/victim" })), "leaves the backing directory; skipped"},
		{"absolute path", sealed(with(vrec, func(r *record) { r.path = victim.path })), "leaves the backing directory; skipped"},
		{"through a symlinked directory", sealed(with(vrec, func(r *record) { r.path = "link/victim" })), "not replayed"},
		{"a symlink", sealed(with(vrec, func(r *record) { r.path = "flink" })), "not replayed"},
		{"missing file", sealed(with(irec, func(r *record) { r.path = "missing" })), "not replayed: no such file"},
		{"file without a header", sealed(with(irec, func(r *record) { r.path = "empty"; r.ino = inode(t, filepath.Join(dir, "empty")) })), "not replayed: reading its header"},
	}, {
		{"a directory", sealed(with(irec, func(r *record) { r.path = "sub"; r.ino = inode(t, filepath.Join(dir, "sub")) })), "not replayed"},
		{"a fifo", sealed(with(irec, func(r *record) { r.path = "fifo"; r.ino = inode(t, filepath.Join(dir, "fifo")) })), "not replayed: the file was replaced"},
		{"empty path", sealed(with(irec, func(r *record) { r.path = "" })), "path length 0 does not fit"},
		{"copy larger than a slot", sealed(with(irec, func(r *record) { r.length = int(j.slotSize) })), "copy of"},
		{"negative offset", sealed(with(irec, func(r *record) { r.coff = -5 })), "negative offset"},
		{"bad cut", raw(patched(36, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE)), "bad cut"},
		{"NUL in the path", sealed(with(irec, func(r *record) { r.path = "inside\x00" })), "leaves the backing directory"},
		// Last: its copy lies past the end of the journal file.
		{"copy missing", func(slot int) ([]byte, []byte) {
			page, _ := sealed(with(irec, func(r *record) { r.length = 200 }))(slot)
			return page, nil
		}, "not replayed: reading the journal"},
	}, {
		{"path length past the record", raw(patched(76, 0xFF, 0xFF)), "path length 65535 does not fit"},
		{"path cut short", raw(plain[:recordFixed+3]), "does not fit a record of"},
		{"record shorter than its fixed part", raw(plain[:40]), "record of 40 bytes"},
		{"not a record", func(int) ([]byte, []byte) { return bytes.Repeat([]byte{0xEE}, journalHdr), garbage }, "not a record"},
		{"a record of the old format", func(int) ([]byte, []byte) {
			return oldJournal(irec, nil), garbage
		}, "not a record"},
		{"sealed length past the page", changed(sealed(irec), func(page, _ []byte) { page[8], page[9] = 0x10, 0 }), "does not fit the page"},
		{"sealed length of a tag only", changed(sealed(irec), func(page, _ []byte) { page[8], page[9] = 0, blockcipher.Overhead }), "does not fit the page"},
	}, {
		{"sealed under an earlier journal's key", underKey(newJournalKeyer(t)), "not authentic"},
		{"sealed under another volume's key", underKey(newFakeKeyer(t, l, 2)), "not authentic"},
		{"a flipped bit", changed(sealed(irec), func(page, _ []byte) { page[10+40] ^= 0x08 }), "not authentic"},
		{"sealed for slot 2, in slot 3", func(slot int) ([]byte, []byte) {
			if slot != 3 {
				t.Fatalf("the case is in slot %d, want 3", slot)
			}
			return sealed(irec)(2)
		}, "not authentic"},
		{"a flipped bit in the tag", changed(sealed(irec), func(page, _ []byte) {
			page[10+binary.BigEndian.Uint16(page[8:10])-1] ^= 0x80
		}), "not authentic"},
		{"a byte after the sealed record", changed(sealed(irec), func(page, _ []byte) { page[journalHdr-1] = 1 }), "after the sealed record"},
		{"copy altered", changed(sealed(irec), func(_, copy []byte) { copy[5] ^= 1 }), "not replayed: its copy does not match the record"},
	}}
	keep := map[string][]byte{victim.path: victim.backing(), inside.path: inside.backing()}
	for round, cases := range rounds {
		for i, c := range cases {
			page, data := c.slot(i)
			writeJournalAt(t, dir, page, j.slotOffset(i))
			if data != nil {
				writeJournalAt(t, dir, data, j.slotOffset(i)+journalHdr)
			}
		}
		var logBuf bytes.Buffer
		j = openTestJournal(t, dir, maxData, log.New(&logBuf, "", 0))
		lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
		for i, c := range cases {
			prefix := fmt.Sprintf("kmsfs: write journal slot %d", i)
			found := ""
			for _, line := range lines {
				if strings.HasPrefix(line, prefix+" ") || strings.HasPrefix(line, prefix+":") {
					found = line
				}
			}
			if !strings.Contains(found, c.want) {
				t.Errorf("round %d, %s: log line of slot %d = %q, want one with %q", round, c.name, i, found, c.want)
			}
		}
		if len(lines) != len(cases) {
			t.Errorf("round %d: %d log lines, want %d:\n%s", round, len(lines), len(cases), logBuf.String())
		}
		checkJournalClear(t, dir, j.slotSize, "inside", "victim")
		for p, want := range keep {
			if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
				t.Errorf("round %d: %s changed by replay (%v)", round, p, err)
			}
		}
		if st, err := os.Lstat(filepath.Join(dir, "flink")); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Errorf("round %d: the symlink flink is gone or replaced (%v)", round, err)
		}
	}
}

// TestJournalReplayUnreadable checks that a journal whose records cannot
// be authenticated, because no key opens its header or because it is of
// the older format, is not replayed, is logged, and is started anew.
func TestJournalReplayUnreadable(t *testing.T) {
	const B = 4096
	l := layout(B)
	maxData := journalMaxData(l)
	for _, tc := range []struct {
		name string
		// change changes the journal file jb, with a record in slot 0 that
		// would garble the file inside; keys opens it again.
		change func(jb []byte, r record, data []byte) []byte
		keys   func(t testing.TB) *fakeKeyer
		want   string
	}{
		{"another volume's key", nil, func(t testing.TB) *fakeKeyer { return newFakeKeyer(t, l, 2) }, "the write journal's key cannot be loaded"},
		{"both header copies altered", func(jb []byte, _ record, _ []byte) []byte {
			jb[header.PreambleSize+100] ^= 1
			jb[header.PreambleSize+header.CopySize+100] ^= 1
			return jb
		}, newJournalKeyer, "the write journal's key cannot be loaded"},
		{"header zeroed", func(jb []byte, _ record, _ []byte) []byte { clear(jb[:journalBase]); return jb }, newJournalKeyer, "the write journal's key cannot be loaded"},
		{"old format", func(_ []byte, r record, data []byte) []byte { return oldJournal(r, data) }, newJournalKeyer, "the write journal is of an older kmsfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j := openTestJournal(t, dir, maxData, nil)
			e := newEnvIn(t, dir, "inside", B, nil)
			h := e.open()
			if _, err := h.WriteAt(ctx, randBytes(rand.New(rand.NewPCG(26, 0)), 2*B), 0); err != nil {
				t.Fatal(err)
			}
			h.Close()
			before := e.backing()
			garbage := bytes.Repeat([]byte{0xEE}, 100)
			r := record{fileID: fileID(t, before), ino: inode(t, e.path), coff: l.BlockCipherOff(0), length: len(garbage), cut: -1, path: e.name}
			writeSlot(t, dir, j, 0, r, garbage)
			jb := journalBytes(t, dir)
			if tc.change != nil {
				if err := os.WriteFile(filepath.Join(dir, JournalName), tc.change(bytes.Clone(jb), r, garbage), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var logBuf bytes.Buffer
			keys := tc.keys(t)
			j2, err := openJournalErr(t, dir, maxData, keys, true, log.New(&logBuf, "", 0))
			if err != nil {
				t.Fatalf("OpenJournal = %v, want nil", err)
			}
			if got := logBuf.String(); !strings.Contains(got, tc.want) || strings.Contains(got, "completed") {
				t.Errorf("replay log = %q, want %q and no completed write", got, tc.want)
			}
			if got := e.backing(); !bytes.Equal(got, before) {
				t.Errorf("the file changed: the record was replayed")
			}
			// Started anew: a new header only, of a key keys made.
			if got := keys.news.Load(); got != 1 {
				t.Errorf("keys made %d headers, want 1", got)
			}
			checkJournalClear(t, dir, j2.slotSize, "inside", "KMSFSJ2")
			// A new header in place; the rest (the slots, which keep their
			// disk space) all zeros.
			if got := journalBytes(t, dir); len(got) < journalBase || bytes.Equal(got[:journalBase], jb[:journalBase]) || !isZero(got[journalBase:]) {
				t.Errorf("journal file of %d bytes after the replay, want a new header of %d and zeros after it", len(got), journalBase)
			}
			// And it takes records.
			e2 := newEnvIn(t, dir, "inside", B, j2)
			h2 := e2.open()
			m := model(bytes.Repeat([]byte{1}, 3*B))
			if _, err := h2.WriteAt(ctx, m, 0); err != nil {
				t.Fatal(err)
			}
			stop := recordJournal(t, j2)
			if _, err := h2.WriteAt(ctx, []byte("new"), B); err != nil {
				t.Fatal(err)
			}
			if ws := stop(); len(ws) != 1 {
				t.Errorf("an overwrite wrote %d records, want 1", len(ws))
			}
			m.write([]byte("new"), B)
			e2.check(h2, m)
		})
	}
}

// TestOpenJournalReadOnly checks the journal of a read-only mount: none
// is created where there is none; one that is there is replayed and
// cleared, but not started anew (its header stays, no key is made), and
// it takes no records.
func TestOpenJournalReadOnly(t *testing.T) {
	const B = 4096
	l := layout(B)
	maxData := journalMaxData(l)
	t.Run("missing", func(t *testing.T) {
		dir := t.TempDir()
		keys := newJournalKeyer(t)
		j, err := openJournalErr(t, dir, maxData, keys, false, nil)
		if j != nil || err != nil {
			t.Fatalf("OpenJournal(no journal, read-only) = %v, %v; want nil, nil", j, err)
		}
		if _, err := os.Lstat(filepath.Join(dir, JournalName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Lstat(journal) = %v, want ErrNotExist", err)
		}
		if n, l := keys.news.Load(), keys.loads.Load(); n != 0 || l != 0 {
			t.Errorf("keys made %d and loaded %d headers, want none", n, l)
		}
		j.Close()
	})
	t.Run("replayed", func(t *testing.T) {
		dir := t.TempDir()
		j := openTestJournal(t, dir, maxData, nil)
		e := newEnvIn(t, dir, "inside", B, nil)
		h := e.open()
		r := rand.New(rand.NewPCG(27, 0))
		m := model(randBytes(r, 3*B))
		if _, err := h.WriteAt(ctx, m, 0); err != nil {
			t.Fatal(err)
		}
		h.Close()
		b := e.backing()
		id := fileID(t, b)
		c, err := e.keyer.cipher(id)
		if err != nil {
			t.Fatal(err)
		}
		// Slot 2: new content for block 1, garbled in the file. Slot 5: a
		// copy whose record was never written.
		newBlock := randBytes(r, B)
		ct := c.SealBlock(nil, newBlock, 1)
		writeSlot(t, dir, j, 2, record{fileID: id, ino: inode(t, e.path), coff: l.BlockCipherOff(1), length: len(ct), cut: -1, path: e.name}, ct)
		writeJournalAt(t, dir, ct, j.slotOffset(5)+journalHdr)
		garbled := bytes.Clone(b)
		copy(garbled[l.BlockCipherOff(1)+10:], randBytes(r, 100))
		if err := os.WriteFile(e.path, garbled, 0o644); err != nil {
			t.Fatal(err)
		}
		hdr := journalBytes(t, dir)[:journalBase]

		var logBuf bytes.Buffer
		keys := newJournalKeyer(t)
		ro, err := openJournalErr(t, dir, maxData, keys, false, log.New(&logBuf, "", 0))
		if ro == nil || err != nil {
			t.Fatalf("OpenJournal(read-only) = %v, %v; want a journal, nil", ro, err)
		}
		if !strings.Contains(logBuf.String(), "completed an interrupted write to inside") {
			t.Errorf("replay log = %q, want a completed write", logBuf.String())
		}
		m.write(newBlock, B)
		e.check(e.open(), m)
		jb := journalBytes(t, dir)
		if !bytes.Equal(jb[:journalBase], hdr) || keys.news.Load() != 0 {
			t.Errorf("the read-only replay wrote a new header (%d made)", keys.news.Load())
		}
		if len(jb) <= int(ro.slotOffset(5)) {
			t.Errorf("journal file of %d bytes after a read-only replay, want its slots kept", len(jb))
		}
		checkJournalClear(t, dir, ro.slotSize, "inside")
		if n := keys.live.Load(); n != 0 {
			t.Errorf("%d keys open after the read-only replay, want 0", n)
		}

		// It takes no records: writes go without.
		e2 := newEnvIn(t, dir, "inside", B, ro)
		h2 := e2.open()
		if _, err := h2.WriteAt(ctx, []byte("new"), 10); err != nil {
			t.Fatal(err)
		}
		m.write([]byte("new"), 10)
		e2.check(h2, m)
		if got := journalBytes(t, dir); !bytes.Equal(got, jb) {
			t.Errorf("a write through a read-only journal changed the journal file")
		}
	})
}

// TestOpenJournalErrors checks that a journal that cannot be opened or
// started fails OpenJournal, and that a nil journal closes.
func TestOpenJournalErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, JournalName), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := openJournalErr(t, dir, 4096, newJournalKeyer(t), true, nil); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("OpenJournal(journal is a directory) = %v, want EISDIR", err)
	}
	(*Journal)(nil).Close()
}

// TestJournalKeyLater checks a journal that gets no key when it is opened
// (the key service is down): it opens all the same and says so, writes go
// without records meanwhile, and once keyRetry has passed a write makes
// the key and the writes are journaled again.
func TestJournalKeyLater(t *testing.T) {
	const B = 4096
	dir := t.TempDir()
	keys := newJournalKeyer(t)
	keys.newErr = errors.New("key service down")
	var logBuf bytes.Buffer
	j, err := openJournalErr(t, dir, journalMaxData(layout(B)), keys, true, log.New(&logBuf, "", 0))
	if err != nil {
		t.Fatalf("OpenJournal(no key) = %v, want nil", err)
	}
	if !strings.Contains(logBuf.String(), "key service down") {
		t.Errorf("log = %q, want the key service's error", logBuf.String())
	}
	const name = "later/secret name"
	e := newEnvIn(t, dir, name, B, j)
	h := e.open()
	r := rand.New(rand.NewPCG(28, 0))
	var m model
	e.apply(h, &m, wr(0, 2*B+5), r)
	keys.newErr = nil
	e.apply(h, &m, wr(10, 100), r)
	if jb := journalBytes(t, dir); len(jb) != 0 || keys.news.Load() != 0 {
		t.Fatalf("journal of %d bytes, %d keys made before keyRetry passed; want none", len(jb), keys.news.Load())
	}
	j.keyMu.Lock()
	j.lastTry = j.lastTry.Add(-keyRetry)
	j.keyMu.Unlock()
	e.apply(h, &m, wr(20, 100), r)
	if keys.news.Load() != 1 || !strings.Contains(logBuf.String(), "writes are journaled again") {
		t.Fatalf("%d keys made after keyRetry, log %q; want 1 and the journal back", keys.news.Load(), logBuf.String())
	}
	stop := recordJournal(t, j)
	e.apply(h, &m, wr(30, 100), r)
	if ws := stop(); len(ws) != 1 || ws[0].rec.path != name {
		t.Fatalf("an overwrite wrote %d records, want 1 for %q", len(ws), name)
	}
	e.check(h, m)
	checkJournalClear(t, dir, j.slotSize, name)
}

// TestJournalLock checks that one journal (one read-write mount) per
// volume can be open at a time, that a read-only one is refused while it
// is, that closing it frees the volume, and that closing wipes its key.
func TestJournalLock(t *testing.T) {
	dir := t.TempDir()
	bd, err := backing.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer bd.Close()
	logger := log.New(io.Discard, "", 0)
	keys := newJournalKeyer(t)
	j, err := OpenJournal(ctx, bd, 1<<16, keys, true, logger)
	if err != nil {
		t.Fatal(err)
	}
	for _, writable := range []bool{true, false} {
		if _, err := OpenJournal(ctx, bd, 1<<16, keys, writable, logger); !errors.Is(err, ErrLocked) {
			t.Errorf("OpenJournal(writable=%v) while another holds it = %v, want ErrLocked", writable, err)
		}
	}
	j.Close()
	if n := keys.live.Load(); n != 0 {
		t.Errorf("%d keys open after Close, want 0", n)
	}
	j2, err := OpenJournal(ctx, bd, 1<<16, keys, true, logger)
	if err != nil {
		t.Fatalf("OpenJournal after Close = %v, want nil", err)
	}
	j2.Close()
}

// writeOnlyKeyer is the keyer of a write-only mount: it makes keys (under
// its own secret) and loads none.
type writeOnlyKeyer struct{ *fakeKeyer }

func (writeOnlyKeyer) WriteOnly() bool { return true }

func (writeOnlyKeyer) Load(context.Context, int, func() string) (Key, error) {
	return nil, errors.New("write-only: only the public key is held here")
}

// TestJournalParked checks docs/FORMAT.md's parked journals: a write-only
// mount that finds records it cannot open moves the journal aside instead
// of clearing it, and starts a new one; the next mount that can load keys
// replays the parked journal and removes it.
func TestJournalParked(t *testing.T) {
	dir := t.TempDir()
	l := layout(4096)
	B := int64(4096)
	j := openTestJournal(t, dir, journalMaxData(l), nil)
	e := newEnvIn(t, dir, "f", 4096, j)
	h := e.open()
	r := rand.New(rand.NewPCG(5, 6))
	m := model(randBytes(r, 3*B))
	if _, err := h.WriteAt(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	h.Close()
	b := e.backing()
	id := fileID(t, b)
	c, err := e.keyer.cipher(id)
	if err != nil {
		t.Fatal(err)
	}
	newBlock := randBytes(r, B)
	ct := c.SealBlock(nil, newBlock, 1)
	rec := record{fileID: id, ino: inode(t, e.path), coff: l.BlockCipherOff(1), length: len(ct), cut: -1, path: e.name}
	writeSlot(t, dir, j, 2, rec, ct)
	garbled := bytes.Clone(b)
	copy(garbled[l.BlockCipherOff(1)+10:], randBytes(r, B/2))
	if err := os.WriteFile(e.path, garbled, 0o644); err != nil {
		t.Fatal(err)
	}

	var logBuf bytes.Buffer
	wo := writeOnlyKeyer{newFakeKeyer(t, l, 0x77)}
	if _, err := openJournalErr(t, dir, journalMaxData(l), wo, true, log.New(&logBuf, "", 0)); err != nil {
		t.Fatalf("write-only OpenJournal = %v", err)
	}
	parked, _ := filepath.Glob(filepath.Join(dir, ParkedJournalPrefix+"*"))
	if len(parked) != 1 || !IsParkedJournal(filepath.Base(parked[0])) {
		t.Fatalf("parked journals %v, want one", parked)
	}
	if !strings.Contains(logBuf.String(), "kept as "+filepath.Base(parked[0])) {
		t.Errorf("log = %q, want it to say where the records were kept", logBuf.String())
	}
	if got, _ := os.ReadFile(e.path); !bytes.Equal(got, garbled) {
		t.Error("the write-only mount changed the file")
	}
	if wo.news.Load() != 1 {
		t.Errorf("the write-only mount made %d journal keys, want 1", wo.news.Load())
	}

	logBuf.Reset()
	openTestJournal(t, dir, journalMaxData(l), log.New(&logBuf, "", 0))
	if !strings.Contains(logBuf.String(), "completed an interrupted write to f") || !strings.Contains(logBuf.String(), "replayed and removed") {
		t.Errorf("log = %q, want the parked write replayed", logBuf.String())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ParkedJournalPrefix+"*")); len(left) != 0 {
		t.Errorf("parked journals left after replay: %v", left)
	}
	m.write(newBlock, B)
	e.check(e.open(), m)

	for _, tc := range []struct {
		name string
		ok   bool
	}{{"kmsfs.journal.0123456789abcdef", true}, {"kmsfs.journal.0123456789ABCDEF", false}, {"kmsfs.journal.", false}, {"kmsfs.journal.0123456789abcdef0", false}, {"kmsfs.journal", false}} {
		if IsParkedJournal(tc.name) != tc.ok {
			t.Errorf("IsParkedJournal(%q) = %v", tc.name, !tc.ok)
		}
	}
}

// slotWrite is a record for a slot of a test journal, and its copy.
type slotWrite struct {
	slot int
	rec  record
	data []byte
}

// putJournal makes a journal file whose header holds a journal key keys
// made, with the records of slots sealed under it, and moves it into the
// backing directory dir as name: JournalName (replacing the journal
// there, closed first as a crash would close it) or a parked name. The
// rename sets the file's ctime, as parking does.
func putJournal(t testing.TB, dir, name string, maxData int, keys Keyer, slots ...slotWrite) {
	t.Helper()
	scratch := t.TempDir()
	bd, err := backing.Open(scratch)
	if err != nil {
		t.Fatal(err)
	}
	defer bd.Close()
	j, err := OpenJournal(ctx, bd, maxData, keys, true, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatalf("OpenJournal(%s) = %v, want nil", scratch, err)
	}
	for _, s := range slots {
		writeSlot(t, scratch, j, s.slot, s.rec, s.data)
	}
	j.Close()
	if old, ok := openJournals.LoadAndDelete(dir); ok {
		old.(*Journal).Close()
	}
	if err := os.Rename(filepath.Join(scratch, JournalName), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// ctimeOf returns the ctime of path, not following a symlink.
func ctimeOf(t testing.TB, path string) unix.Timespec {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ctim
}

// waitCtimeAfter waits until a file changed now gets a ctime later than
// that of path: a file system may keep time in ticks of a few
// milliseconds, and a change in the tick of the one that set path's
// ctime would not be later.
func waitCtimeAfter(t testing.TB, path string) {
	t.Helper()
	ref := ctimeOf(t, path)
	probe := filepath.Join(t.TempDir(), "probe")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if err := os.WriteFile(probe, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if compareTime(ctimeOf(t, probe), ref) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ctime later than %s's after 5s", path)
		}
	}
}

// tornFile makes the file name in dir through the engine, of nblocks
// blocks of B bytes of random plaintext, then tears the given blocks in
// the backing file, as a crash in the middle of a write would. It returns
// the file, its plaintext before the tear, and the cipher of its blocks.
func tornFile(t testing.TB, dir, name string, B, nblocks int64, r *rand.Rand, torn ...uint64) (*env, model, *blockcipher.Cipher) {
	t.Helper()
	l := layout(int(B))
	e := newEnvIn(t, dir, name, int(B), nil)
	h := e.open()
	m := model(randBytes(r, nblocks*B))
	if _, err := h.WriteAt(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	h.Close()
	b := e.backing()
	c, err := e.keyer.cipher(fileID(t, b))
	if err != nil {
		t.Fatal(err)
	}
	for _, blk := range torn {
		copy(b[l.BlockCipherOff(blk)+10:], randBytes(r, B/2))
	}
	if err := os.WriteFile(e.path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return e, m, c
}

// sealBlocks returns the ciphertext of plain, whole blocks of c from
// block first on, and the record of a write of it into e's file.
func sealBlocks(t testing.TB, e *env, c *blockcipher.Cipher, first uint64, plain []byte) (record, []byte) {
	t.Helper()
	bs := e.cfg.Layout.BlockSize
	var ct []byte
	for i := 0; i*bs < len(plain); i++ {
		ct = c.SealBlock(ct, plain[i*bs:min((i+1)*bs, len(plain))], first+uint64(i))
	}
	r := record{fileID: fileID(t, e.backing()), ino: inode(t, e.path), coff: e.cfg.Layout.BlockCipherOff(first), length: len(ct), cut: -1, path: e.name}
	return r, ct
}

// parkedNames returns the names of the parked journals in dir.
func parkedNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if IsParkedJournal(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestJournalParkedStale checks that a parked record is replayed only if
// its file has not changed since the journal was parked: a mount that
// could not replay the parked journal (its key service was down) and
// wrote the file since must not see its write undone by a later mount.
func TestJournalParkedStale(t *testing.T) {
	const B = 4096
	const name = "kmsfs.journal.00000000000000a1"
	maxData := journalMaxData(layout(B))
	for _, tc := range []struct {
		name string
		// after says whether the file is written after the journal was
		// parked.
		after bool
		want  string // a log line holds it
	}{
		{"unchanged since it was parked", false, "kmsfs: completed an interrupted write to f (4124 bytes at 8220) from parked write journal " + name},
		{"written after it was parked", true, "kmsfs: parked write journal " + name + " slot 2 (f): not replayed: the file changed after the journal was parked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := rand.New(rand.NewPCG(40, 1))
			e, m, c := tornFile(t, dir, "f", B, 3, r, 1)
			parkedBlock := randBytes(r, B)
			rec, ct := sealBlocks(t, e, c, 1, parkedBlock)
			putJournal(t, dir, name, maxData, newJournalKeyer(t), slotWrite{2, rec, ct})
			m.write(parkedBlock, B)
			if tc.after {
				waitCtimeAfter(t, filepath.Join(dir, name))
				newer := randBytes(r, B)
				h := e.open()
				if _, err := h.WriteAt(ctx, newer, B); err != nil {
					t.Fatal(err)
				}
				h.Close()
				m.write(newer, B)
			}
			var logBuf bytes.Buffer
			openTestJournal(t, dir, maxData, log.New(&logBuf, "", 0))
			if !strings.Contains(logBuf.String(), tc.want) {
				t.Errorf("log = %q, want a line with %q", logBuf.String(), tc.want)
			}
			e.check(e.open(), m)
			if left := parkedNames(t, dir); len(left) != 0 {
				t.Errorf("parked journals left after replay: %v, want none", left)
			}
		})
	}
}

// TestJournalReplayOrder checks that parked journals are replayed before
// the journal, whose records are newer: a write the parked journal holds
// (blocks 1 and 2, torn in the file) and a later one the journal holds
// (block 1, recorded but not begun when the mount died) both end up in
// the file, the later one last.
func TestJournalReplayOrder(t *testing.T) {
	const B = 4096
	const name = "kmsfs.journal.00000000000000a2"
	maxData := journalMaxData(layout(B))
	for _, writable := range []bool{true, false} {
		t.Run(fmt.Sprintf("writable=%v", writable), func(t *testing.T) {
			dir := t.TempDir()
			r := rand.New(rand.NewPCG(41, 1))
			e, m, c := tornFile(t, dir, "f", B, 3, r, 1, 2)
			older := randBytes(r, 2*B)
			rec, ct := sealBlocks(t, e, c, 1, older)
			putJournal(t, dir, name, maxData, newJournalKeyer(t), slotWrite{0, rec, ct})
			later := randBytes(r, B)
			rec2, ct2 := sealBlocks(t, e, c, 1, later)
			putJournal(t, dir, JournalName, maxData, newJournalKeyer(t), slotWrite{5, rec2, ct2})

			var logBuf bytes.Buffer
			j, err := openJournalErr(t, dir, maxData, newJournalKeyer(t), writable, log.New(&logBuf, "", 0))
			if err != nil || j == nil {
				t.Fatalf("OpenJournal = %v, %v; want a journal, nil", j, err)
			}
			m.write(older, B)
			m.write(later, B)
			e.check(e.open(), m)
			// The same write's line, but for the journal it came from.
			parkedAt, mainAt := -1, -1
			for i, line := range strings.Split(logBuf.String(), "\n") {
				switch line {
				case "kmsfs: completed an interrupted write to f (8248 bytes at 8220) from parked write journal " + name:
					parkedAt = i
				case "kmsfs: completed an interrupted write to f (4124 bytes at 8220)":
					mainAt = i
				}
			}
			if parkedAt < 0 || mainAt < 0 || parkedAt > mainAt {
				t.Errorf("log = %q, want the parked journal's write (line %d) completed before the journal's (line %d)", logBuf.String(), parkedAt, mainAt)
			}
		})
	}
}

// failLoadKeyer is a keyer whose key service fails: it loads no key.
type failLoadKeyer struct {
	*fakeKeyer
	err error
}

func (k failLoadKeyer) Load(context.Context, int, func() string) (Key, error) {
	return nil, k.err
}

// TestJournalParkUnloadable checks that a writable mount that cannot
// load the key of the records in the journal, whatever its keyer, parks
// the journal (the same bytes, under a parked name) instead of clearing
// it, logs it and starts a new journal; that a read-only mount leaves it
// in place; and that a later mount that loads the key replays it.
func TestJournalParkUnloadable(t *testing.T) {
	const B = 4096
	l := layout(B)
	maxData := journalMaxData(l)
	for _, tc := range []struct {
		name string
		// journal made the journal's key, mount cannot load it, later can.
		journal, mount, later func(t testing.TB) Keyer
		want                  string // in the log of the writable mount
	}{
		{"another volume's key",
			func(t testing.TB) Keyer { return newFakeKeyer(t, l, 2) },
			func(t testing.TB) Keyer { return newJournalKeyer(t) },
			func(t testing.TB) Keyer { return newFakeKeyer(t, l, 2) },
			"the write journal's key cannot be loaded"},
		{"key service down",
			func(t testing.TB) Keyer { return newJournalKeyer(t) },
			func(t testing.TB) Keyer { return failLoadKeyer{newJournalKeyer(t), errors.New("key service down")} },
			func(t testing.TB) Keyer { return newJournalKeyer(t) },
			"the write journal's key cannot be loaded (key service down)"},
		{"write-only mount",
			func(t testing.TB) Keyer { return newJournalKeyer(t) },
			func(t testing.TB) Keyer { return writeOnlyKeyer{newFakeKeyer(t, l, 0x77)} },
			func(t testing.TB) Keyer { return newJournalKeyer(t) },
			"this write-only mount cannot open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := rand.New(rand.NewPCG(42, 1))
			e, m, c := tornFile(t, dir, "f", B, 3, r, 1)
			newBlock := randBytes(r, B)
			rec, ct := sealBlocks(t, e, c, 1, newBlock)
			putJournal(t, dir, JournalName, maxData, tc.journal(t), slotWrite{3, rec, ct})
			jb := journalBytes(t, dir)
			torn := e.backing()

			// Read-only: replayed if it can be, never moved or cleared.
			if _, err := openJournalErr(t, dir, maxData, tc.mount(t), false, nil); err != nil {
				t.Fatalf("read-only OpenJournal = %v, want nil", err)
			}
			if got := journalBytes(t, dir); !bytes.Equal(got, jb) || len(parkedNames(t, dir)) != 0 {
				t.Fatalf("a read-only mount changed or parked the journal (parked: %v)", parkedNames(t, dir))
			}

			var logBuf bytes.Buffer
			j, err := openJournalErr(t, dir, maxData, tc.mount(t), true, log.New(&logBuf, "", 0))
			if err != nil {
				t.Fatalf("OpenJournal = %v, want nil", err)
			}
			parked := parkedNames(t, dir)
			if len(parked) != 1 {
				t.Fatalf("parked journals %v, want one", parked)
			}
			if got, err := os.ReadFile(filepath.Join(dir, parked[0])); err != nil || !bytes.Equal(got, jb) {
				t.Errorf("the parked journal is not the journal as it was (%v)", err)
			}
			if !strings.Contains(logBuf.String(), tc.want) || !strings.Contains(logBuf.String(), "kept as "+parked[0]) {
				t.Errorf("log = %q, want %q and where the records were kept", logBuf.String(), tc.want)
			}
			if !bytes.Equal(e.backing(), torn) {
				t.Errorf("the file changed: the record was replayed")
			}
			checkJournalClear(t, dir, j.slotSize)

			logBuf.Reset()
			openJournalErr(t, dir, maxData, tc.later(t), true, log.New(&logBuf, "", 0))
			if want := "completed an interrupted write to f (4124 bytes at 8220) from parked write journal " + parked[0]; !strings.Contains(logBuf.String(), want) {
				t.Errorf("log of the later mount = %q, want %q", logBuf.String(), want)
			}
			if left := parkedNames(t, dir); len(left) != 0 {
				t.Errorf("parked journals left after replay: %v, want none", left)
			}
			m.write(newBlock, B)
			e.check(e.open(), m)
		})
	}
}

// TestJournalParkedPlanted checks that whatever has a parked name but is
// not a journal is left as it is, and logged: nothing but a regular file
// is opened (a FIFO or device must neither hang the mount nor be
// removed), and a regular file that does not look like a journal (an old
// file of a volume with names in clear) is neither cleared nor removed,
// even when the volume's key opens its header.
func TestJournalParkedPlanted(t *testing.T) {
	const B = 4096
	const name = "kmsfs.journal.00000000000000b3"
	maxData := journalMaxData(layout(B))
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir, path string)
		want  string // in the log line naming the file
	}{
		{"fifo", func(t *testing.T, _, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file (a FIFO)"},
		{"character device", func(t *testing.T, _, path string) {
			if err := syscall.Mknod(path, syscall.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
				t.Skipf("mknod: %v", err)
			}
		}, "not a regular file (a device)"},
		{"symlink", func(t *testing.T, _, path string) {
			if err := os.Symlink(outside, path); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file (a symlink)"},
		{"directory", func(t *testing.T, _, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file (a directory)"},
		{"empty file", func(t *testing.T, _, path string) {
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a write journal (0 bytes"},
		{"short file", func(t *testing.T, _, path string) {
			if err := os.WriteFile(path, []byte("shopping list"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a write journal (13 bytes"},
		{"file of the volume", func(t *testing.T, dir, _ string) {
			// Its header opens with the volume's key, as a journal's would.
			e := newEnvIn(t, dir, name, B, nil)
			e.keyer = newJournalKeyer(t)
			e.cfg.Keys = e.keyer
			h := e.open()
			if _, err := h.WriteAt(ctx, randBytes(rand.New(rand.NewPCG(43, 1)), 3*B), 0); err != nil {
				t.Fatal(err)
			}
			h.Close()
		}, "not a write journal (the record page of slot 0 does not start with the journal magic)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, name)
			tc.plant(t, dir, path)
			var before unix.Stat_t
			if err := unix.Lstat(path, &before); err != nil {
				t.Fatal(err)
			}
			var content []byte
			if before.Mode&unix.S_IFMT == unix.S_IFREG {
				content, _ = os.ReadFile(path)
			}
			bd, err := backing.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer bd.Close()
			var logBuf bytes.Buffer
			type opened struct {
				j   *Journal
				err error
			}
			done := make(chan opened, 1)
			go func() {
				j, err := OpenJournal(ctx, bd, maxData, newJournalKeyer(t), true, log.New(&logBuf, "", 0))
				done <- opened{j, err}
			}()
			select {
			case o := <-done:
				if o.err != nil {
					t.Fatalf("OpenJournal = %v, want nil", o.err)
				}
				o.j.Close()
			case <-time.After(10 * time.Second):
				t.Fatal("OpenJournal hangs")
			}
			if want := "kmsfs: parked write journal " + name + ": " + tc.want; !strings.Contains(logBuf.String(), want) {
				t.Errorf("log = %q, want %q", logBuf.String(), want)
			}
			var after unix.Stat_t
			if err := unix.Lstat(path, &after); err != nil {
				t.Fatalf("%s is gone: %v", name, err)
			}
			if after.Ino != before.Ino || after.Mode != before.Mode {
				t.Errorf("%s was replaced: mode %#o, want %#o", name, after.Mode, before.Mode)
			}
			if content != nil {
				if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
					t.Errorf("%s changed", name)
				}
			}
			if got, _ := os.ReadFile(outside); string(got) != "outside" {
				t.Errorf("the file outside changed: %q", got)
			}
		})
	}
}

// TestJournalParkedCap checks that a mount replays at most maxParked
// parked journals, the oldest, and says so; the next mount does the
// rest.
func TestJournalParkedCap(t *testing.T) {
	const B = 4096
	const n = maxParked + 6
	maxData := journalMaxData(layout(B))
	dir := t.TempDir()
	keys := newJournalKeyer(t)
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("kmsfs.journal.%016x", i))
		putJournal(t, dir, names[i], maxData, keys)
	}
	var logBuf bytes.Buffer
	openTestJournal(t, dir, maxData, log.New(&logBuf, "", 0))
	if got := parkedNames(t, dir); !slices.Equal(got, names[maxParked:]) {
		t.Errorf("parked journals left after a mount: %v, want the newest %v", got, names[maxParked:])
	}
	if want := fmt.Sprintf("%d parked write journals: this mount looks at the %d oldest and leaves the other 6", n, maxParked); !strings.Contains(logBuf.String(), want) {
		t.Errorf("log = %q, want %q", logBuf.String(), want)
	}
	openTestJournal(t, dir, maxData, nil)
	if got := parkedNames(t, dir); len(got) != 0 {
		t.Errorf("parked journals left after two mounts: %v, want none", got)
	}
}

// TestJournalParkedLog checks that what is logged about a parked journal
// whose records are not replayed names the parked file.
func TestJournalParkedLog(t *testing.T) {
	const B = 4096
	const name = "kmsfs.journal.00000000000000c4"
	l := layout(B)
	maxData := journalMaxData(l)
	for _, tc := range []struct {
		name string
		keys func(t testing.TB) Keyer
		// change changes the record of slot 1.
		change func(r *record)
		want   string
	}{
		{"key cannot be loaded", func(t testing.TB) Keyer { return newFakeKeyer(t, l, 2) }, nil,
			"kmsfs: parked write journal " + name + ": its key cannot be loaded ("},
		{"another file ID", func(t testing.TB) Keyer { return newJournalKeyer(t) }, func(r *record) { r.fileID[0] ^= 1 },
			"kmsfs: parked write journal " + name + " slot 1 (f): not replayed: the file has another file ID"},
		{"missing file", func(t testing.TB) Keyer { return newJournalKeyer(t) }, func(r *record) { r.path = "gone" },
			"kmsfs: parked write journal " + name + " slot 1 (gone): not replayed: no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := rand.New(rand.NewPCG(44, 1))
			e, _, c := tornFile(t, dir, "f", B, 2, r, 1)
			rec, ct := sealBlocks(t, e, c, 1, randBytes(r, B))
			if tc.change != nil {
				tc.change(&rec)
			}
			putJournal(t, dir, name, maxData, tc.keys(t), slotWrite{1, rec, ct})
			torn := e.backing()
			var logBuf bytes.Buffer
			openTestJournal(t, dir, maxData, log.New(&logBuf, "", 0))
			if !strings.Contains(logBuf.String(), tc.want) {
				t.Errorf("log = %q, want %q", logBuf.String(), tc.want)
			}
			if !bytes.Equal(e.backing(), torn) {
				t.Errorf("the file changed")
			}
		})
	}
}

// TestJournalParkReopenFails checks who closes what when park cannot
// open the new journal after moving the old one aside: the descriptor
// of the parked file stays open and in j.fd, for the caller to close
// once; and that when it can, j.fd is the new journal and the parked
// file's descriptor is closed.
func TestJournalParkReopenFails(t *testing.T) {
	maxData := journalMaxData(layout(4096))
	for _, fail := range []bool{true, false} {
		t.Run(fmt.Sprintf("reopen fails=%v", fail), func(t *testing.T) {
			dir := t.TempDir()
			bd, err := backing.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer bd.Close()
			j := openTestJournal(t, dir, maxData, nil)
			old := j.fd
			oldIno := inode(t, filepath.Join(dir, JournalName))
			reopen := func() (int, error) { return openJournalFile(bd, syscall.O_RDWR|syscall.O_CREAT) }
			if fail {
				reopen = func() (int, error) { return -1, errors.New("no new journal") }
			}
			err = j.park(bd, errors.New("key service down"), reopen)
			parked := parkedNames(t, dir)
			if len(parked) != 1 || inode(t, filepath.Join(dir, parked[0])) != oldIno {
				t.Fatalf("parked journals %v, want the journal", parked)
			}
			var st syscall.Stat_t
			if fail {
				if err == nil || !strings.Contains(err.Error(), "no new journal") {
					t.Fatalf("park = %v, want the reopen's error", err)
				}
				if j.fd != old || syscall.Fstat(j.fd, &st) != nil || st.Ino != oldIno {
					t.Fatalf("after a failed park, j.fd = %d (inode %d), want %d still open on the parked file (inode %d)", j.fd, st.Ino, old, oldIno)
				}
				return
			}
			if err != nil {
				t.Fatalf("park = %v, want nil", err)
			}
			if syscall.Fstat(j.fd, &st) != nil || st.Ino != inode(t, filepath.Join(dir, JournalName)) {
				t.Errorf("after park, j.fd = %d is not the new journal", j.fd)
			}
			if _, err := unix.FcntlInt(uintptr(old), unix.F_GETFD, 0); err != unix.EBADF {
				t.Errorf("after park, the parked file's descriptor %d: F_GETFD = %v, want EBADF (closed)", old, err)
			}
		})
	}
}
