package cryptfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/fs/backing"
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
	// JournalName is the name of the journal file in the root of the
	// backing directory; it is invisible through the mount.
	JournalName  = "kmsfs.journal"
	journalSlots = 8
	journalHdr   = 4096
	recordFixed  = 54
	maxJournPath = journalHdr - recordFixed
)

var journalMagic = []byte("KMSFSJ2\x00")

// ErrLocked means another process holds the volume's write journal: the
// volume is mounted read-write elsewhere on this machine.
var ErrLocked = errors.New("the volume is mounted read-write by another kmsfs server on this machine")

// Journal is the write journal of a volume.
type Journal struct {
	fd       int
	slotSize int64
	free     chan int
	log      *log.Logger
}

// record is one journal slot's header.
type record struct {
	fileID [16]byte
	ino    uint64
	coff   int64 // where the copy goes in the file
	length int   // length of the copy
	cut    int64 // cut the file here after the copy, or -1
	path   string
}

// errNoRecord means a slot holds no record.
var errNoRecord = errors.New("no record")

// parseRecord parses a slot header; slotData is how many bytes of copy
// a slot holds. It returns errNoRecord for a cleared slot.
func parseRecord(b []byte, slotData int64) (record, error) {
	var r record
	if len(b) < recordFixed || string(b[:8]) != string(journalMagic) {
		return r, errNoRecord
	}
	copy(r.fileID[:], b[8:24])
	r.ino = binary.BigEndian.Uint64(b[24:32])
	r.coff = int64(binary.BigEndian.Uint64(b[32:40]))
	r.length = int(binary.BigEndian.Uint32(b[40:44]))
	r.cut = int64(binary.BigEndian.Uint64(b[44:52]))
	plen := int(binary.BigEndian.Uint16(b[52:54]))
	switch {
	case plen == 0 || plen > maxJournPath || recordFixed+plen > len(b):
		return r, fmt.Errorf("path length %d out of range", plen)
	case int64(r.length) > slotData || r.length < 0:
		return r, fmt.Errorf("copy of %d bytes does not fit a slot", r.length)
	case r.coff < 0:
		return r, fmt.Errorf("negative offset %d", r.coff)
	case r.cut < -1:
		return r, fmt.Errorf("bad cut %d", r.cut)
	}
	r.path = string(b[recordFixed : recordFixed+plen])
	if r.path[0] == '/' || strings.Contains("/"+r.path+"/", "/../") || strings.ContainsRune(r.path, 0) {
		return r, fmt.Errorf("path %q leaves the backing directory", r.path)
	}
	return r, nil
}

// marshal writes the record into b, which has room for it.
func (r *record) marshal(b []byte) []byte {
	h := b[:recordFixed+len(r.path)]
	copy(h, journalMagic)
	copy(h[8:24], r.fileID[:])
	binary.BigEndian.PutUint64(h[24:32], r.ino)
	binary.BigEndian.PutUint64(h[32:40], uint64(r.coff))
	binary.BigEndian.PutUint32(h[40:44], uint32(r.length))
	binary.BigEndian.PutUint64(h[44:52], uint64(r.cut))
	binary.BigEndian.PutUint16(h[52:54], uint16(len(r.path)))
	copy(h[recordFixed:], r.path)
	return h
}

// OpenJournal opens (creating) the journal in the root of the backing
// directory dir and replays whatever a crash left in it; maxData is the
// largest ciphertext one write may produce. Problems with single records
// are logged to logger and skipped.
func OpenJournal(dir *backing.Dir, maxData int, logger *log.Logger) (*Journal, error) {
	fd, err := dir.Open(JournalName, syscall.O_RDWR|syscall.O_CREAT, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write journal %s/%s: %w", dir.Path, JournalName, err)
	}
	// One writer per volume on this machine: the lock lives as long as the
	// descriptor (the mount), and dies with the process.
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		syscall.Close(fd)
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("%s: %w", dir.Path, ErrLocked)
		}
		return nil, fmt.Errorf("locking the write journal: %w", err)
	}
	j := &Journal{fd: fd, slotSize: int64(journalHdr + (maxData+4095)/4096*4096), free: make(chan int, journalSlots), log: logger}
	if err := j.replay(dir); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	for i := 0; i < journalSlots; i++ {
		j.free <- i
	}
	return j, nil
}

// Close closes the journal file.
func (j *Journal) Close() {
	if j != nil {
		syscall.Close(j.fd)
	}
}

// replay redoes the writes of every slot that holds a record.
func (j *Journal) replay(dir *backing.Dir) error {
	hdr := make([]byte, journalHdr)
	for i := 0; i < journalSlots; i++ {
		off := int64(i) * j.slotSize
		n, err := syscall.Pread(j.fd, hdr, off)
		if err != nil {
			return fmt.Errorf("reading write journal: %w", err)
		}
		r, err := parseRecord(hdr[:n], j.slotSize-journalHdr)
		switch {
		case err == errNoRecord:
			continue
		case err != nil:
			j.log.Printf("kmsfs: write journal slot %d is damaged (%v); skipped", i, err)
		default:
			if err := j.redo(dir, &r, off+journalHdr); err != nil {
				j.log.Printf("kmsfs: write journal slot %d (%s): not replayed: %v", i, r.path, err)
			} else {
				j.log.Printf("kmsfs: completed an interrupted write to %s (%d bytes at %d)", r.path, r.length, r.coff)
			}
		}
		if err := pwriteFull(j.fd, make([]byte, 8), off); err != nil {
			return fmt.Errorf("clearing write journal: %w", err)
		}
	}
	return nil
}

// redo does the write of record r again; its copy is at dataOff of the
// journal.
func (j *Journal) redo(dir *backing.Dir, r *record, dataOff int64) error {
	fd, err := dir.Open(r.path, syscall.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Ino != r.ino || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return errors.New("the file was replaced")
	}
	pre := make([]byte, header.PreambleSize)
	if err := preadFull(fd, pre, 0); err != nil {
		return fmt.Errorf("reading its header: %w", err)
	}
	p, err := header.ParsePreamble(pre)
	if err != nil || p.FileID != r.fileID {
		return errors.New("the file has another file ID")
	}
	data := make([]byte, r.length)
	if err := preadFull(j.fd, data, dataOff); err != nil {
		return fmt.Errorf("reading the journal: %w", err)
	}
	if err := pwriteFull(fd, data, r.coff); err != nil {
		return err
	}
	if r.cut >= 0 {
		return syscall.Ftruncate(fd, r.cut)
	}
	return nil
}

// write writes ct at off of the backing file fd of f, atomically with
// respect to the death of the process; with end set, the file is cut to
// end with it (truncation to a size inside a block). If the journal
// cannot take the record (no space, say), nothing is written and the
// error is returned. ct may still be being sealed; write returns once
// every step of it is sealed, whether it failed or not. f.mu is held
// exclusively. A nil journal writes without a record.
func (j *Journal) write(f *File, fd int, ct *sealed, off int64, end bool) error {
	defer ct.wait()
	data := ct.data
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	// An append (nothing existing is overwritten) needs no reservation: if
	// the disk fills up under it, the file is cut back to its old end,
	// which is all the append changed. Leaving its space to the file
	// system's delayed allocation keeps the file in one extent.
	appending := off >= st.Size
	if !appending && !f.allocated(fd, &st, off, int64(len(data))) {
		if err := reserve(fd, off, int64(len(data))); err != nil {
			return err
		}
	}
	if off > st.Size {
		f.holes = holesMaybe // the gap before off is a hole
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
	var rel string
	if j != nil {
		rel = f.name()
	}
	if j == nil || rel == "" || len(rel) > maxJournPath || int64(len(data)) > j.slotSize-journalHdr || f.key == nil {
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
		cb := int64(f.cfg.Layout.CipherBlockSize())
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
	r := record{fileID: f.key.FileID(), ino: st.Ino, coff: off, length: int(copyLen), cut: cut, path: rel}
	if err := pwriteFull(j.fd, r.marshal(*hb), base); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	var err error
	if end {
		err = syscall.Ftruncate(fd, off+int64(len(data)))
	}
	if err == nil {
		err = writeData()
	}
	if err != nil && copyLen > 0 {
		// The write stopped part-way (EIO, EFBIG) after it may have begun
		// to overwrite blocks: do now what a replay would, so that every
		// block holds its old or its new content. If that fails too, the
		// record stays for the next mount to finish.
		rerr := pwriteFull(fd, data[:copyLen], off)
		if rerr == nil && cut >= 0 {
			rerr = syscall.Ftruncate(fd, cut)
		}
		if rerr != nil {
			return fmt.Errorf("%w (left in the write journal for the next mount: %v)", err, rerr)
		}
	}
	// Clear the record: the write is done, or failed without touching
	// what existed.
	if cerr := pwriteFull(j.fd, make([]byte, 8), base); cerr != nil && err == nil {
		err = fmt.Errorf("write journal: %w", cerr)
	}
	return err
}

// allocated reports whether [off, off+size) of the backing file, whose
// stat is st, certainly has disk space already: it lies inside the file
// and the file has no holes. Asking the file system whether it has holes
// costs one lseek per file, instead of one fallocate per write; f.mu is
// held exclusively.
func (f *File) allocated(fd int, st *syscall.Stat_t, off, size int64) bool {
	if off+size > st.Size {
		return false
	}
	if f.holes == holesUnknown {
		// Space fallocated but not yet written also counts as a hole here:
		// a false "maybe" only costs the fallocate calls.
		f.holes = holesMaybe
		if hole, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err == nil && hole >= st.Size {
			f.holes = holesNone
		}
	}
	return f.holes == holesNone
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
