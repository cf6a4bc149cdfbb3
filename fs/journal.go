package fs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/header"
)

// The write journal makes every block write atomic against the death of
// the server (kill -9, a crash): Linux stops a pwrite of several pages
// part-way when the writer is killed, and a half-written AES-GCM block
// can be read neither as its old nor as its new content.
//
// Before kmsfs overwrites or appends ciphertext, it copies the ciphertext
// into a free slot of the journal file in the backing directory, then
// writes the slot's header (one page, which a kill cannot tear: the header
// is either there or not), then writes the file, then clears the header.
// When a volume is mounted, every slot with a header is replayed: the
// write it describes is done again (it is idempotent), so each block holds
// either its old content (the header was not written) or its new one.
//
// The journal relies on the page cache surviving the process, not on
// fsync: it protects against the death of the server, not against power
// loss (see docs/SECURITY.md).
//
// Only what can be damaged needs a copy: the part of a write that
// overwrites existing ciphertext, up to the end of the block the old end
// of file falls in. Bytes beyond that were not there before; if the server
// dies while writing them, the replay cuts the file back to the end of the
// copied part (the write was never acknowledged, so keeping its first
// blocks is allowed). A long append therefore costs two small journal
// writes, not a second copy of its data.
//
// Slot layout, at slot i * slotSize (page aligned):
//
//	offset 0:    magic "KMSFSJ2\x00" (8) | file ID (16) | inode (8) |
//	             cipher offset (8) | length of the copy (4) |
//	             cut the file here after the copy, or -1 (8) |
//	             path length (2) | path relative to the backing directory
//	offset 4096: the copy of the ciphertext
const (
	journalName  = "kmsfs.journal"
	journalSlots = 8
	journalHdr   = 4096
	maxJournPath = journalHdr - 54
)

var journalMagic = []byte("KMSFSJ2\x00")

type journal struct {
	fd       int
	slotSize int64
	free     chan int
}

// openJournal opens (creating) the journal of the volume and replays
// whatever a crash left in it. maxData is the largest ciphertext one
// write may produce.
func openJournal(v *Volume, maxData int) (*journal, error) {
	p := filepath.Join(v.Dir, journalName)
	fd, err := syscall.Open(p, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write journal %s: %w", p, err)
	}
	j := &journal{fd: fd, slotSize: int64(journalHdr + (maxData+4095)/4096*4096), free: make(chan int, journalSlots)}
	if err := j.replay(v); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	for i := 0; i < journalSlots; i++ {
		j.free <- i
	}
	return j, nil
}

func (j *journal) close() {
	if j != nil {
		syscall.Close(j.fd)
	}
}

// replay redoes the writes of every slot that holds a record.
func (j *journal) replay(v *Volume) error {
	hdr := make([]byte, journalHdr)
	for i := 0; i < journalSlots; i++ {
		off := int64(i) * j.slotSize
		n, err := syscall.Pread(j.fd, hdr, off)
		if err != nil {
			return fmt.Errorf("reading write journal: %w", err)
		}
		if n < 54 || string(hdr[:8]) != string(journalMagic) {
			continue
		}
		var fileID [16]byte
		copy(fileID[:], hdr[8:24])
		ino := binary.BigEndian.Uint64(hdr[24:32])
		coff := int64(binary.BigEndian.Uint64(hdr[32:40]))
		length := int(binary.BigEndian.Uint32(hdr[40:44]))
		cut := int64(binary.BigEndian.Uint64(hdr[44:52]))
		plen := int(binary.BigEndian.Uint16(hdr[52:54]))
		if plen > maxJournPath || int64(length) > j.slotSize-journalHdr || coff < 0 {
			v.Log.Printf("kmsfs: write journal slot %d is damaged; skipped", i)
		} else if err := j.redo(v, string(hdr[54:54+plen]), ino, fileID, coff, length, cut, off+journalHdr); err != nil {
			v.Log.Printf("kmsfs: write journal slot %d (%s): not replayed: %v", i, hdr[54:54+plen], err)
		} else {
			v.Log.Printf("kmsfs: completed an interrupted write to %s (%d bytes at %d)", hdr[54:54+plen], length, coff)
		}
		if err := pwriteFull(j.fd, make([]byte, 8), off); err != nil {
			return fmt.Errorf("clearing write journal: %w", err)
		}
	}
	return nil
}

func (j *journal) redo(v *Volume, rel string, ino uint64, fileID [16]byte, coff int64, length int, cut int64, dataOff int64) error {
	if strings.Contains("/"+rel+"/", "/../") {
		return errors.New("bad path")
	}
	fd, err := syscall.Open(filepath.Join(v.Dir, rel), syscall.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Ino != ino {
		return errors.New("the file was replaced")
	}
	pre := make([]byte, header.PreambleSize)
	if err := preadFull(fd, pre, 0); err != nil {
		return fmt.Errorf("reading its header: %w", err)
	}
	p, err := header.ParsePreamble(pre)
	if err != nil || p.FileID != fileID {
		return errors.New("the file has another file ID")
	}
	data := make([]byte, length)
	if err := preadFull(j.fd, data, dataOff); err != nil {
		return fmt.Errorf("reading the journal: %w", err)
	}
	if err := pwriteFull(fd, data, coff); err != nil {
		return err
	}
	if cut >= 0 {
		return syscall.Ftruncate(fd, cut)
	}
	return nil
}

// pwrite writes data at off of the backing file fd of node n, atomically
// with respect to the death of the server. If the journal cannot take the
// record (no space, say), nothing is written and the error is returned.
func (j *journal) pwrite(n *Node, fd int, data *sealed, off int64) error {
	return j.write(n, fd, data, off, false)
}

// pwriteEnd is pwrite for a write that becomes the end of the file: the
// file is cut to end with it (truncation to a size inside a block).
func (j *journal) pwriteEnd(n *Node, fd int, data []byte, off int64) error {
	return j.write(n, fd, complete(data), off, true)
}

// write writes ct, which may still be being sealed; it returns once every
// step of ct is sealed, whether it failed or not.
func (j *journal) write(n *Node, fd int, ct *sealed, off int64, end bool) error {
	defer ct.wait()
	data := ct.data
	rel := n.Path(n.Root())
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	// An append (nothing existing is overwritten) needs no reservation: if
	// the disk fills up under it, the file is cut back to its old end,
	// which is all the append changed. Leaving its space to the file
	// system's delayed allocation keeps the file in one extent.
	appending := off >= st.Size
	if !appending && !n.allocated(fd, &st, off, int64(len(data))) {
		if err := reserve(fd, off, int64(len(data))); err != nil {
			return err
		}
	}
	if off > st.Size {
		n.holes = holesMaybe // the gap before off is a hole
	}
	writeData := func() error {
		err := ct.pwrite(fd, off)
		if err != nil && appending {
			if terr := syscall.Ftruncate(fd, st.Size); terr != nil {
				return errors.Join(err, fmt.Errorf("cutting back a failed append: %w", terr))
			}
		}
		return err
	}
	if j == nil || len(rel) > maxJournPath || int64(len(data)) > j.slotSize-journalHdr || n.keys == nil {
		if end {
			if err := syscall.Ftruncate(fd, off+int64(len(data))); err != nil {
				return err
			}
		}
		return writeData()
	}
	// Copy what overwrites existing ciphertext, up to the end of the block
	// holding the old end of file; cut back to there if the rest is lost.
	copyLen, cut := int64(len(data)), int64(-1)
	if end {
		cut = off + int64(len(data))
	} else if off+int64(len(data)) > st.Size {
		cb := int64(n.vol.Layout.CipherBlockSize())
		copyLen = 0
		if st.Size > off {
			copyLen = min((st.Size-off+cb-1)/cb*cb, int64(len(data)))
		}
		cut = max(off+copyLen, st.Size)
	}
	slot := <-j.free
	defer func() { j.free <- slot }()
	base := int64(slot) * j.slotSize
	if copyLen > 0 {
		ct.wait()
		if err := pwriteFull(j.fd, data[:copyLen], base+journalHdr); err != nil {
			return fmt.Errorf("write journal: %w", err)
		}
	}
	hb := getBuf(journalHdr)
	defer putBuf(hb)
	h := (*hb)[:54+len(rel)]
	copy(h, journalMagic)
	copy(h[8:24], n.keys.fileID[:])
	binary.BigEndian.PutUint64(h[24:32], st.Ino)
	binary.BigEndian.PutUint64(h[32:40], uint64(off))
	binary.BigEndian.PutUint32(h[40:44], uint32(copyLen))
	binary.BigEndian.PutUint64(h[44:52], uint64(cut))
	binary.BigEndian.PutUint16(h[52:54], uint16(len(rel)))
	copy(h[54:], rel)
	if err := pwriteFull(j.fd, h, base); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	var err error
	if end {
		err = syscall.Ftruncate(fd, off+int64(len(data)))
	}
	if err == nil {
		err = writeData()
	}
	// Clear the record whether the write worked or not: a failed write
	// must not be redone at the next mount.
	if cerr := pwriteFull(j.fd, make([]byte, 8), base); cerr != nil && err == nil {
		err = fmt.Errorf("write journal: %w", cerr)
	}
	return err
}

// allocated reports whether [off, off+size) of the backing file, whose
// stat is st, certainly has disk space already: it lies inside the file
// and the file has no holes. Asking the file system whether it has holes
// costs one lseek per node, instead of one fallocate per write; n.mu is
// held exclusively.
func (n *Node) allocated(fd int, st *syscall.Stat_t, off, size int64) bool {
	if off+size > st.Size {
		return false
	}
	if n.holes == holesUnknown {
		// Space fallocated but not yet written also counts as a hole here:
		// a false "maybe" only costs the fallocate calls.
		n.holes = holesMaybe
		if hole, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err == nil && hole >= st.Size {
			n.holes = holesNone
		}
	}
	return n.holes == holesNone
}

// reserve makes sure the backing file has space for [off, off+n) before
// it is written, so that a full disk fails the write before any byte is
// written instead of leaving a torn block.
func reserve(fd int, off, n int64) error {
	err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		return nil
	}
	return err
}
