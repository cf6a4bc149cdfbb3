package cryptfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/backing"
)

// This file holds what an offline check of a volume ("kmsfs fsck")
// needs from the engine: every block of a file decrypted, each failure
// reported, and the write journal read without replaying it.

// checkChunk is how much ciphertext CheckBlocks reads and decrypts at a
// time: large enough that OpenBlocks spreads a chunk over the cores, small
// enough to stay in cache.
const checkChunk = 1 << 20

// CheckBlocks decrypts every block of the backing file fd, whose content
// cipher is c and geometry l, and calls bad once for each block that does
// not decrypt (a *blockcipher.BlockError naming it) and once for a
// damaged tail of 1..28 bytes (a *blockcipher.BlockError wrapping
// blockcipher.ErrBadCipherSize, with the number the block would have).
// progress, if not nil, is called with the offset of the backing file
// checked up to. It returns the number of blocks checked; an error only when
// the file cannot be read.
func CheckBlocks(c *blockcipher.Cipher, l blockcipher.Layout, fd int, bad func(error), progress func(int64)) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, err
	}
	size := st.Size
	if size == 0 {
		return 0, nil
	}
	plain, err := l.PlainSize(size)
	end := size
	if err != nil {
		if size < l.DataOffset {
			return 0, err // a torn header: the caller cannot have a key
		}
		// Whole blocks, then a tail with no plaintext.
		end = l.CipherSize(plain)
		n := l.BlockNo(plain)
		bad(&blockcipher.BlockError{Block: n, Err: fmt.Errorf("%d-byte damaged tail: %w", size-end, blockcipher.ErrBadCipherSize)})
	}
	bs := uint64(l.BlockSize)
	nblocks := (uint64(plain) + bs - 1) / bs
	cb := l.CipherBlockSize()
	per := uint64(max(1, checkChunk/cb))
	buf := make([]byte, int(per)*cb)
	out := make([]byte, 0, int(per)*l.BlockSize)
	for first := uint64(0); first < nblocks; first += per {
		last := min(first+per, nblocks) // exclusive
		coff := l.BlockCipherOff(first)
		cend := min(l.BlockCipherOff(last), end)
		chunk := buf[:cend-coff]
		if err := preadFull(fd, chunk, coff); err != nil {
			return first, fmt.Errorf("reading blocks %d-%d: %w", first, last-1, err)
		}
		if _, err := c.OpenBlocks(out[:0], chunk, first); err != nil {
			// One at a time, to name every bad block of the chunk.
			for b := first; b < last; b++ {
				lo := int(b-first) * cb
				blk := chunk[lo:min(lo+cb, len(chunk))]
				if _, err := c.OpenBlock(out[:0], blk, b); err != nil {
					bad(err)
				}
			}
		}
		if progress != nil {
			progress(cend)
		}
	}
	if progress != nil {
		progress(size)
	}
	return nblocks, nil
}

// JournalDataSize returns the largest ciphertext one write to a file of
// geometry l produces (the largest request, and a partial block at either
// end of it): the maxData the journal of a volume of that geometry is
// opened with. The slots of the journal lie at offsets derived from it,
// so every opener of a volume's journal (the mount, "kmsfs fsck") uses
// this one value.
func JournalDataSize(l blockcipher.Layout) int {
	// Also room for the largest write of a version-3 file: its blocks,
	// and the entries (or whole metadata pages) of the groups it touches.
	return max((MaxRequest/l.BlockSize+2)*l.CipherBlockSize(), MaxRequest+2*l.BlockSize+64<<10)
}

// PendingWrite is a record of the write journal: a write the server did
// not finish (it died), which the next opening of the journal replays.
type PendingWrite struct {
	// Slot is the journal slot holding the record.
	Slot int
	// Path is the file's path relative to the backing directory.
	Path string
	// Offset and Length say where the write goes in the backing file and
	// how much of it the journal holds.
	Offset int64
	Length int
	// Err is set when the slot holds a record that is not authentic or
	// cannot be read (Path is then empty): a replay skips it.
	Err error
}

// ErrOldJournal is the PendingWrite.Err of a record in the journal of an
// older kmsfs: it cannot be authenticated and is never replayed (the next
// read-write mount starts the journal anew).
var ErrOldJournal = errors.New("a record of an older kmsfs's write journal, which is never replayed")

// PendingWrites returns the records of the write journal of dir, opened
// with maxData (see JournalDataSize), without locking, replaying or
// changing it; keys loads the journal key as a replay does (trusted keys
// only). A volume without a journal has none.
func PendingWrites(ctx context.Context, dir *backing.Dir, maxData int, keys Keyer) ([]PendingWrite, error) {
	fd, err := dir.Open(JournalName, syscall.O_RDONLY, 0)
	if errors.Is(err, syscall.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("write journal %s/%s: %w", dir.Path, JournalName, err)
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("write journal: %w", err)
	}
	if st.Size == 0 {
		return nil, nil
	}
	head := make([]byte, len(oldJournalMagic))
	if n, _ := preadAll(fd, head, 0); n == len(head) && bytes.Equal(head, oldJournalMagic) {
		return []PendingWrite{{Err: ErrOldJournal}}, nil
	}
	// Laid out as OpenJournal lays it out.
	j := &Journal{fd: fd, slotSize: int64(journalHdr + (maxData+4095)/4096*4096)}
	k, kerr := keys.Load(context.WithoutCancel(ctx), fd, func() string { return JournalName })
	if kerr == nil && k == nil {
		kerr = errors.New("no header")
	}
	if k != nil {
		defer k.Close()
	}
	var out []PendingWrite
	page := make([]byte, journalHdr)
	for i := 0; i < journalSlots; i++ {
		n, err := preadAll(fd, page, j.slotOffset(i))
		if err != nil {
			return nil, fmt.Errorf("reading write journal: %w", err)
		}
		if kerr != nil {
			if !isZero(page[:n]) {
				out = append(out, PendingWrite{Slot: i, Err: fmt.Errorf("the journal key cannot be loaded: %w", kerr)})
			}
			continue
		}
		r, err := openRecord(k.Cipher(), i, page[:n], j.slotSize-journalHdr)
		switch {
		case err == errNoRecord:
		case err != nil:
			out = append(out, PendingWrite{Slot: i, Err: err})
		default:
			out = append(out, PendingWrite{Slot: i, Path: r.path, Offset: r.coff, Length: r.length})
		}
	}
	return out, nil
}

// CheckBlocks3 is CheckBlocks for a version-3 file of geometry l: it
// checks the inline content, or the size records and every block of a
// paged file (holes included), and reports each failure to bad as a
// *blockcipher.BlockError (a size that no record names wraps
// blockcipher.ErrBadCipherSize, with the first block that cannot be
// trusted).
func CheckBlocks3(c *blockcipher.Cipher, l *blockcipher.Layout3, fd int, bad func(error), progress func(int64)) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, err
	}
	size := st.Size
	if size == 0 || size == int64(l.HeaderLen) {
		return 0, nil
	}
	p, err := l.PlainSize(size)
	if err != nil {
		if size < int64(l.HeaderLen) {
			return 0, err
		}
		bad(&blockcipher.BlockError{Block: uint64(p / int64(l.BlockSize)), Err: fmt.Errorf("backing size %d: %w", size, blockcipher.ErrBadCipherSize)})
		return 0, nil
	}
	if l.IsInline(size) {
		buf := make([]byte, size-int64(l.HeaderLen))
		if err := preadFull(fd, buf, int64(l.HeaderLen)); err != nil {
			return 0, err
		}
		plain, err := c.OpenInline(nil, buf)
		clear(plain)
		if err != nil {
			bad(&blockcipher.BlockError{Block: 0, Err: err})
		}
		return 1, nil
	}
	B := int64(l.BlockSize)
	f := &File{cfg: &Config{V3: l}}
	if first, err := f.consistentWith(fd, c, p, size); err != nil {
		bad(&blockcipher.BlockError{Block: first, Err: fmt.Errorf("%v: %w", err, blockcipher.ErrBadCipherSize)})
	}
	nblocks := uint64((p + B - 1) / B)
	t := &tx3{fd: fd, l: l, cph: c, c: size, metas: map[uint64]*meta3{}}
	buf := make([]byte, B+blockcipher.TagSize)
	for n := uint64(0); n < nblocks; {
		g, i0 := l.Group(n)
		z := min(nblocks-1, l.GroupFirst(g)+uint64(l.GroupLen(g))-1)
		m, err := t.meta(g)
		if err != nil {
			return n, err
		}
		delete(t.metas, g)
		if !m.hole {
			for b := n; b <= z; b++ {
				e := m.entry(i0 + int(b-n))
				mlen := min(B, p-int64(b)*B)
				switch {
				case blockcipher.ZeroEntry(e):
					bad(&blockcipher.BlockError{Block: b, Err: fmt.Errorf("no entry (zeroed or never written): %w", blockcipher.ErrAuth)})
				case c.IsHoleEntry(e, b):
				default:
					if err := preadFull(fd, buf[:mlen], l.DataOff(b)); err != nil {
						return b, fmt.Errorf("reading block %d: %w", b, err)
					}
					if err := c.OpenData3(buf, int(mlen), b, e); err != nil {
						bad(err)
					}
				}
			}
		}
		if progress != nil {
			progress(l.DataOff(z))
		}
		n = z + 1
	}
	clear(buf)
	if progress != nil {
		progress(size)
	}
	return nblocks, nil
}
