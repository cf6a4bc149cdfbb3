package cryptfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/header"
)

// journalMaxData is the largest ciphertext of one write, as the mount
// computes it.
func journalMaxData(l blockcipher.Layout) int {
	return (MaxRequest/l.BlockSize + 2) * l.CipherBlockSize()
}

// openTestJournal opens the journal of the backing directory dir, which
// logs to logger (nowhere if nil), and closes it at the end of the test.
func openTestJournal(t testing.TB, dir string, maxData int, logger *log.Logger) *Journal {
	t.Helper()
	j, err := openJournalErr(t, dir, maxData, logger)
	if err != nil {
		t.Fatalf("OpenJournal(%s) = %v, want nil", dir, err)
	}
	return j
}

// openJournals are the journals the tests hold, by directory: opening a
// directory's journal again, as a mount after a crash would, first closes
// (unlocks) the previous one, as the crash would have.
var openJournals sync.Map

func openJournalErr(t testing.TB, dir string, maxData int, logger *log.Logger) (*Journal, error) {
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
	j, err := OpenJournal(bd, maxData, logger)
	if err == nil {
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

// slotHeader returns the header bytes of slot i of a journal file (or
// what of them there is).
func slotHeader(jb []byte, slotSize int64, i int) []byte {
	off := int64(i) * slotSize
	if off >= int64(len(jb)) {
		return nil
	}
	return jb[off:min(off+journalHdr, int64(len(jb)))]
}

// checkSlotsClear fails the test if a slot of the journal in dir holds
// a record.
func checkSlotsClear(t testing.TB, dir string, slotSize int64) {
	t.Helper()
	jb := journalBytes(t, dir)
	for i := 0; i < journalSlots; i++ {
		if _, err := parseRecord(slotHeader(jb, slotSize, i), slotSize-journalHdr); err != errNoRecord {
			t.Fatalf("journal slot %d after the write: parseRecord = %v, want errNoRecord", i, err)
		}
	}
}

// writeSlot writes record r, and its copy if any, into slot i of the
// journal file of dir.
func writeSlot(t testing.TB, dir string, slotSize int64, i int, r *record, data []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, JournalName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, journalHdr)
	if _, err := f.WriteAt(r.marshal(buf), int64(i)*slotSize); err != nil {
		t.Fatal(err)
	}
	if data != nil {
		if _, err := f.WriteAt(data, int64(i)*slotSize+journalHdr); err != nil {
			t.Fatal(err)
		}
	}
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

// TestJournalWrites writes through a journal and checks, after every
// step, that no record is left and that the records the step wrote
// describe it: the right file, and a copy of the bytes it wrote.
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
			jb := journalBytes(t, dir)
			for _, o := range []op{
				wr(0, 100), wr(50, 100), wr(0, 3*B+10), wr(B-5, 10), wr(B, B),
				wr(3*B+10, 5), wr(5*B, 7), tr(6*B + 3), tr(2*B + 9), tr(B), wr(0, 300<<10), wr(7, 300<<10),
				wr(int64(MaxRequest), MaxRequest), wr(10, MaxRequest), tr(0),
			} {
				e.apply(h, &m, o, r)
				e.check(h, m)
				checkSlotsClear(t, dir, j.slotSize)
				after := journalBytes(t, dir)
				b := e.backing()
				for i := 0; i < journalSlots; i++ {
					hdr := slotHeader(after, j.slotSize, i)
					if bytes.Equal(hdr, slotHeader(jb, j.slotSize, i)) {
						continue
					}
					rec, err := parseRecord(append(bytes.Clone(journalMagic), hdr[len(journalMagic):]...), j.slotSize-journalHdr)
					if err != nil {
						t.Fatalf("%v: slot %d: parseRecord(restored) = %v, want nil", o, i, err)
					}
					if rec.path != e.name || rec.ino != inode(t, e.path) || rec.fileID != fileID(t, b) {
						t.Errorf("%v: slot %d record = %q, inode %d, file ID %x; want %q, %d, %x", o, i, rec.path, rec.ino, rec.fileID, e.name, inode(t, e.path), fileID(t, b))
					}
					if rec.length > 0 {
						copyOff := int64(i)*j.slotSize + journalHdr
						if end := rec.coff + int64(rec.length); end > int64(len(b)) || !bytes.Equal(after[copyOff:copyOff+int64(rec.length)], b[rec.coff:end]) {
							t.Errorf("%v: slot %d: copy of %d bytes at %d is not what the file holds", o, i, rec.length, rec.coff)
						}
					}
					if rec.cut > int64(len(b)) || rec.cut >= 0 && rec.cut < rec.coff+int64(rec.length) {
						t.Errorf("%v: slot %d: cut at %d (copy %d bytes at %d, file %d bytes)", o, i, rec.cut, rec.length, rec.coff, len(b))
					}
				}
				jb = after
			}
		})
	}
}

// TestJournalNoRecord checks the writes that go without a record: a
// file with no name, a name too long for a slot, a write larger than a
// slot.
func TestJournalNoRecord(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rel     string
		maxData int
		ops     []op
	}{
		{"no name", "", journalMaxData(layout(4096)), []op{wr(0, 100), wr(1, 100), tr(50)}},
		{"name too long", strings.Repeat("x", maxJournPath+1), journalMaxData(layout(4096)), []op{wr(0, 100), wr(1, 100), tr(50)}},
		{"write larger than a slot", "f", 4124, []op{wr(0, 3*4096), wr(1, 3*4096)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j := openTestJournal(t, dir, tc.maxData, nil)
			e := newEnvIn(t, dir, "f", 4096, j)
			e.f = New(e.cfg, func() string { return tc.rel })
			h := e.open()
			var m model
			r := rand.New(rand.NewPCG(21, 0))
			for _, o := range tc.ops {
				e.apply(h, &m, o, r)
				e.check(h, m)
			}
			if jb := journalBytes(t, dir); len(jb) != 0 {
				t.Errorf("journal file = %d bytes, want 0", len(jb))
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
// write, then puts back the record its slot held and tears the backing
// file between its old and new bytes, as a kill -9 in the middle of the
// pwrite would. Reopening the journal must give a file whose blocks all
// read: the new bytes where the copy reaches, the file cut where the
// record says.
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
			var logBuf bytes.Buffer
			j := openTestJournal(t, dir, journalMaxData(l), nil)
			e := newEnvIn(t, dir, "f", B, j)
			h := e.open()
			var m model
			r := rand.New(rand.NewPCG(22, 0))
			for _, o := range tc.before {
				e.apply(h, &m, o, r)
			}
			old, jOld := e.backing(), journalBytes(t, dir)
			for _, o := range tc.op {
				e.apply(h, &m, o, r)
			}
			h.Close()
			newB, jNew := e.backing(), journalBytes(t, dir)
			// The slot of the op (the last one it used).
			slot := -1
			for i := 0; i < journalSlots; i++ {
				if !bytes.Equal(slotHeader(jNew, j.slotSize, i), slotHeader(jOld, j.slotSize, i)) {
					slot = i
				}
			}
			if slot < 0 {
				t.Fatal("the write left no trace in the journal")
			}
			hdr := slotHeader(jNew, j.slotSize, slot)
			rec, err := parseRecord(append(bytes.Clone(journalMagic), hdr[len(journalMagic):]...), j.slotSize-journalHdr)
			if err != nil {
				t.Fatal(err)
			}
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
			writeSlot(t, dir, j.slotSize, slot, &rec, nil)
			openTestJournal(t, dir, journalMaxData(l), log.New(&logBuf, "", 0))
			if !strings.Contains(logBuf.String(), "completed an interrupted write to f") {
				t.Errorf("replay log = %q, want a completed write", logBuf.String())
			}
			checkSlotsClear(t, dir, j.slotSize)
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
			writeSlot(t, dir, j.slotSize, 3, &rec, ct)
			garbled := bytes.Clone(b)
			copy(garbled[l.BlockCipherOff(1)+10:], randBytes(r, B/2))
			// Slot 6: an append of blocks 3 and 4 that got no further
			// than some garbage: nothing to copy, cut at the old end.
			garbled = append(garbled, randBytes(r, B+55)...)
			rec2 := record{fileID: id, ino: rec.ino, coff: int64(len(b)), length: 0, cut: int64(len(b)), path: e.name}
			writeSlot(t, dir, j.slotSize, 6, &rec2, nil)
			if err := os.WriteFile(e.path, garbled, 0o644); err != nil {
				t.Fatal(err)
			}
			var logBuf bytes.Buffer
			openTestJournal(t, dir, journalMaxData(l), log.New(&logBuf, "", 0))
			if got := strings.Count(logBuf.String(), "completed an interrupted write to a/b"); got != 2 {
				t.Errorf("replay log = %q, want 2 completed writes", logBuf.String())
			}
			checkSlotsClear(t, dir, j.slotSize)
			m.write(newBlock, B)
			e.check(e.open(), m)
		})
	}
}

// TestJournalReplaySkips checks that replay leaves alone, and logs,
// every record that does not describe a write to a regular file of the
// backing directory as it is: another file in its place, a path leading
// out or through a symlink, a damaged record.
func TestJournalReplaySkips(t *testing.T) {
	const B = 4096
	l := layout(B)
	dir, outside := t.TempDir(), t.TempDir()
	j := openTestJournal(t, dir, journalMaxData(l), nil)

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
	with := func(r record, f func(*record)) *record { f(&r); return &r }
	garbage := bytes.Repeat([]byte{0xEE}, 100)

	type slotCase struct {
		name string
		rec  *record
		// raw, if set, is written as the slot header instead of rec.
		raw  []byte
		want string // in the slot's log line
	}
	rounds := [][]slotCase{{
		{"other inode", with(irec, func(r *record) { r.ino++ }), nil, "not replayed: the file was replaced"},
		{"other file ID", with(irec, func(r *record) { r.fileID[0] ^= 1 }), nil, "not replayed: the file has another file ID"},
		{"dot-dot path", with(vrec, func(r *record) { r.path = "../" + filepath.Base(outside) + "/victim" }), nil, "is damaged"},
		{"absolute path", with(vrec, func(r *record) { r.path = victim.path }), nil, "is damaged"},
		{"through a symlinked directory", with(vrec, func(r *record) { r.path = "link/victim" }), nil, "not replayed"},
		{"a symlink", with(vrec, func(r *record) { r.path = "flink" }), nil, "not replayed"},
		{"missing file", with(irec, func(r *record) { r.path = "missing" }), nil, "not replayed: no such file"},
		{"file without a header", with(irec, func(r *record) { r.path = "empty"; r.ino = inode(t, filepath.Join(dir, "empty")) }), nil, "not replayed: reading its header"},
	}, {
		{"a directory", with(irec, func(r *record) { r.path = "sub"; r.ino = inode(t, filepath.Join(dir, "sub")) }), nil, "not replayed"},
		{"a fifo", with(irec, func(r *record) { r.path = "fifo"; r.ino = inode(t, filepath.Join(dir, "fifo")) }), nil, "not replayed: the file was replaced"},
		{"empty path", with(irec, func(r *record) { r.path = "" }), nil, "is damaged (path length 0"},
		{"copy larger than a slot", with(irec, func(r *record) { r.length = int(j.slotSize) }), nil, "is damaged (copy of"},
		{"negative offset", with(irec, func(r *record) { r.coff = -5 }), nil, "is damaged (negative offset"},
		{"bad cut", with(irec, func(r *record) { r.cut = -2 }), nil, "is damaged (bad cut"},
		{"NUL in the path", with(irec, func(r *record) { r.path = "inside\x00" }), nil, "is damaged"},
		// Last: its copy lies past the end of the journal file.
		{"copy missing", with(irec, func(r *record) { r.length = 200 }), nil, "not replayed: reading the journal"},
	}, {
		{"path length past the header", nil, func() []byte {
			b := (&record{path: "inside"}).marshal(make([]byte, journalHdr))
			b[52], b[53] = 0xFF, 0xFF
			return b
		}(), "is damaged (path length 65535"},
		{"path cut short", nil, func() []byte {
			b := bytes.Clone((&record{path: "inside"}).marshal(make([]byte, journalHdr)))
			return b[:recordFixed+3]
		}(), "is damaged"},
	}}
	keep := map[string][]byte{victim.path: victim.backing(), inside.path: inside.backing()}
	for round, cases := range rounds {
		jf := filepath.Join(dir, JournalName)
		if err := os.Truncate(jf, 0); err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			if c.raw != nil {
				f, err := os.OpenFile(jf, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteAt(c.raw, int64(i)*j.slotSize)
				f.Close()
				continue
			}
			var data []byte
			if c.name != "copy missing" && c.rec.length <= 100 {
				data = garbage
			}
			writeSlot(t, dir, j.slotSize, i, c.rec, data)
		}
		var logBuf bytes.Buffer
		openTestJournal(t, dir, journalMaxData(l), log.New(&logBuf, "", 0))
		lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
		for i, c := range cases {
			prefix := fmt.Sprintf("kmsfs: write journal slot %d ", i)
			found := ""
			for _, line := range lines {
				if strings.HasPrefix(line, prefix) {
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
		checkSlotsClear(t, dir, j.slotSize)
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

// TestOpenJournalErrors checks that a journal that cannot be opened
// fails OpenJournal, and that a nil journal closes.
func TestOpenJournalErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, JournalName), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := openJournalErr(t, dir, 4096, nil); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("OpenJournal(journal is a directory) = %v, want EISDIR", err)
	}
	(*Journal)(nil).Close()
}

// TestJournalLock checks that one journal (one read-write mount) per
// volume can be open at a time, and that closing it frees the volume.
func TestJournalLock(t *testing.T) {
	dir := t.TempDir()
	bd, err := backing.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer bd.Close()
	logger := log.New(io.Discard, "", 0)
	j, err := OpenJournal(bd, 1<<16, logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenJournal(bd, 1<<16, logger); !errors.Is(err, ErrLocked) {
		t.Errorf("OpenJournal while another holds it = %v, want ErrLocked", err)
	}
	j.Close()
	j2, err := OpenJournal(bd, 1<<16, logger)
	if err != nil {
		t.Fatalf("OpenJournal after Close = %v, want nil", err)
	}
	j2.Close()
}
