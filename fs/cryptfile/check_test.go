package cryptfile

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/backing"
)

// checkAll runs CheckBlocks on e's backing file and returns the blocks
// it reported bad, the tails it reported, and the count of blocks.
func checkAll(t *testing.T, e *env) (bad, tails []uint64, n uint64) {
	t.Helper()
	id := fileID(t, e.backing())
	c, err := e.keyer.cipher(id)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(e.path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	var last int64
	n, err = CheckBlocks(c, e.cfg.Layout, fd, func(err error) {
		var be *blockcipher.BlockError
		if !errors.As(err, &be) {
			t.Fatalf("CheckBlocks reported %v, want a *blockcipher.BlockError", err)
		}
		if errors.Is(err, blockcipher.ErrBadCipherSize) {
			tails = append(tails, be.Block)
		} else {
			bad = append(bad, be.Block)
		}
	}, func(off int64) {
		if off < last {
			t.Errorf("progress went back from %d to %d", last, off)
		}
		last = off
	})
	if err != nil {
		t.Fatalf("CheckBlocks = %v", err)
	}
	if size := int64(len(e.backing())); last != size {
		t.Errorf("progress ended at %d, want the file size %d", last, size)
	}
	return bad, tails, n
}

// TestCheckBlocks checks that CheckBlocks names every damaged block, and
// a damaged tail, and passes holes.
func TestCheckBlocks(t *testing.T) {
	for _, bs := range []int{4096, 65536} {
		t.Run(fmt.Sprintf("B=%d", bs), func(t *testing.T) {
			B := int64(bs)
			e := newEnv(t, bs)
			h := e.open()
			r := rand.New(rand.NewPCG(5, uint64(bs)))
			// Enough blocks for several chunks; a hole in the middle.
			nb := int64(3*checkChunk)/B + 5
			if _, err := h.WriteAt(context.Background(), randBytes(r, 2*B), 0); err != nil {
				t.Fatal(err)
			}
			if _, err := h.WriteAt(context.Background(), randBytes(r, B+7), (nb-1)*B); err != nil {
				t.Fatal(err)
			}
			h.Close()
			bad, tails, n := checkAll(t, e)
			if len(bad) != 0 || len(tails) != 0 || n != uint64(nb+1) {
				t.Fatalf("clean file: bad %v, tails %v, %d blocks; want none and %d blocks", bad, tails, n, nb+1)
			}
			l := e.cfg.Layout
			want := []uint64{1, uint64(nb / 2), uint64(nb)}
			for _, b := range want {
				e.flipBit(l.BlockCipherOff(b) + 20)
			}
			if bad, tails, _ := checkAll(t, e); !slices.Equal(bad, want) || len(tails) != 0 {
				t.Errorf("damaged blocks = %v, tails %v; want %v", bad, tails, want)
			}
			// A tail of 5 bytes after the last block, padded to full.
			f, err := os.OpenFile(e.path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			f.Truncate(st.Size() + int64(l.CipherBlockSize()) - (7 + 28) + 5)
			f.Close()
			if _, tails, _ := checkAll(t, e); !slices.Equal(tails, []uint64{uint64(nb + 1)}) {
				t.Errorf("tails = %v, want [%d]", tails, nb+1)
			}
		})
	}
}

// TestPendingWrites checks that the records of a journal are read
// without being replayed, and that a record page that is not authentic
// is reported as such.
func TestPendingWrites(t *testing.T) {
	dir := t.TempDir()
	l := layout(4096)
	maxData := JournalDataSize(l)
	if maxData != journalMaxData(l) {
		t.Fatalf("JournalDataSize = %d, want %d (as the mount computes it)", maxData, journalMaxData(l))
	}
	bd, err := backing.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer bd.Close()
	keys := newJournalKeyer(t)
	if p, err := PendingWrites(context.Background(), bd, maxData, keys); err != nil || len(p) != 0 {
		t.Fatalf("PendingWrites without a journal = %v, %v; want none", p, err)
	}
	j := openTestJournal(t, dir, maxData, nil)
	e := newEnvIn(t, dir, "a/b", 4096, j)
	h := e.open()
	if _, err := h.WriteAt(context.Background(), make([]byte, 5000), 0); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if p, err := PendingWrites(context.Background(), bd, maxData, keys); err != nil || len(p) != 0 {
		t.Fatalf("PendingWrites of a clear journal = %v, %v; want none", p, err)
	}
	rec := record{fileID: fileID(t, e.backing()), ino: inode(t, e.path), coff: l.BlockCipherOff(1), length: 100, cut: -1, path: e.name}
	writeSlot(t, dir, j, 3, rec, make([]byte, 100))
	page := make([]byte, journalHdr)
	copy(page, journalMagic)
	page[9] = 60
	writeJournalAt(t, dir, page, j.slotOffset(6))
	before, _ := os.ReadFile(dir + "/" + JournalName)
	p, err := PendingWrites(context.Background(), bd, maxData, keys)
	if err != nil || len(p) != 2 {
		t.Fatalf("PendingWrites = %+v, %v; want 2 records", p, err)
	}
	if p[0].Slot != 3 || p[0].Path != "a/b" || p[0].Offset != rec.coff || p[0].Length != 100 || p[0].Err != nil {
		t.Errorf("PendingWrites[0] = %+v, want slot 3, a/b", p[0])
	}
	if p[1].Slot != 6 || p[1].Err == nil || p[1].Path != "" {
		t.Errorf("PendingWrites[1] = %+v, want slot 6 not authentic", p[1])
	}
	if after, _ := os.ReadFile(dir + "/" + JournalName); string(after) != string(before) {
		t.Errorf("PendingWrites changed the journal")
	}
	// Another keyer cannot load the journal key: the records are still
	// reported, as not readable.
	other := newFakeKeyer(t, l, 0x77)
	if p, err := PendingWrites(context.Background(), bd, maxData, other); err != nil || len(p) != 2 || p[0].Err == nil {
		t.Errorf("PendingWrites with another key = %+v, %v; want 2 records that cannot be read", p, err)
	}
}
