package cryptfile

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
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
// A record of version 3 (write, for files of versions 1 and 2) describes
// one write; one of version 4 (writeTxn in txn.go, for version-3 files)
// a list of ranges of one file written as one change (a block, its entry
// and a size record lie in different places), whose copies lie one after
// the other in the slot. Replay takes both.
//
// The journal's layout is in docs/FORMAT.md ("Write journal"): a kmsfs
// header whose key (the journal key) seals every record, then the slots;
// each record page holds a sealed record, each copy area the ciphertext
// the record describes. A cleared slot holds zeros (its copy area is
// zeroed in place), so no path or old ciphertext stays behind.
const (
	// JournalName is the name of the journal file in the root of the
	// backing directory; it is invisible through the mount.
	JournalName = "kmsfs.journal"
	// ParkedJournalPrefix starts the names of parked journals: journals
	// with records a writable mount moved aside because it cannot load
	// their key (docs/FORMAT.md, "Write journal"). A mount that can
	// replays them.
	ParkedJournalPrefix = JournalName + "."
	journalSlots        = 8
	journalHdr          = 4096 // the record page of a slot
	journalBase         = header.Size
	// recordFixed is the fixed part of a record's plaintext.
	recordFixed = 16 + 8 + 8 + 4 + 8 + 32 + 2
	// maxRecord is the largest record plaintext that, sealed and framed,
	// fits a record page with the smallest block size.
	maxRecord    = journalHdr - 10 - 28
	maxJournPath = maxRecord - recordFixed
	noCut        = ^uint64(0)
)

// Version-4 records (txn.go writes them) describe a change made of several
// ranges of one file, made atomic together: a list of ranges instead of
// one offset and length.
const (
	// txnFixed is the fixed part of a version-4 record's plaintext: file
	// ID, inode, range count, cut, hash of the copy, path length.
	txnFixed = 16 + 8 + 2 + 8 + 32 + 2
	// txnRangeSize is the size of one range of a version-4 record: offset
	// (u64) and length (u32).
	txnRangeSize = 8 + 4
	// maxTxnRanges is the most ranges one version-4 record holds: the most
	// copied ranges one transaction (writeTxn) may have to be journaled.
	maxTxnRanges = 64
	// maxTxnPath is the longest path of a version-4 record: with
	// maxTxnRanges ranges, it still fits a record page.
	maxTxnPath = maxRecord - txnFixed - maxTxnRanges*txnRangeSize
)

var (
	journalMagic = []byte("KMSFSJ3\x00")
	// txnMagic starts the record pages of version-4 records.
	txnMagic = []byte("KMSFSJ4\x00")
	// oldJournalMagic starts the unauthenticated records of kmsfs before
	// the journal was sealed; they are never replayed.
	oldJournalMagic = []byte("KMSFSJ2\x00")
)

// ErrLocked means another process holds the volume's write journal: the
// volume is mounted read-write elsewhere on this machine.
var ErrLocked = errors.New("the volume is mounted read-write by another kmsfs server on this machine")

// Journal is the write journal of a volume.
type Journal struct {
	fd       int
	slotSize int64
	free     chan int
	log      *log.Logger

	// key is the journal key (its header): nil in a journal only
	// replayed, and while no key could be made (the key service is down);
	// writes are then not journaled, and every keyRetry a write tries
	// again.
	kept atomic.Int32 // slots holding a record kept for the next mount
	// unjournaledLogged is set once a change too large for a record was
	// logged (see writeTxn).
	unjournaledLogged atomic.Bool
	keyMu             sync.RWMutex
	key               Key
	keys              Keyer
	lastTry           time.Time
}

// slotReserve is how much of each slot's copy area a journal reserves
// when it starts (see startLocked).
const slotReserve = 128 << 10

// keyRetry is how often writes try again to make a journal key the key
// service refused.
const keyRetry = 10 * time.Second

// cipher returns the journal key's cipher, making the key first if there
// is none yet and it is time to try; nil if there is none.
func (j *Journal) cipher() *blockcipher.Cipher {
	j.keyMu.RLock()
	k := j.key
	j.keyMu.RUnlock()
	if k != nil {
		return k.Cipher()
	}
	if j.keys == nil {
		return nil
	}
	j.keyMu.Lock()
	defer j.keyMu.Unlock()
	if j.key == nil && time.Since(j.lastTry) >= keyRetry {
		j.lastTry = time.Now()
		if err := j.startLocked(context.Background(), j.keys); err != nil {
			j.log.Printf("kmsfs: %v; writes are not journaled (safe against a crash of the server) until it works", err)
		} else {
			j.log.Printf("kmsfs: the write journal has its key: writes are journaled again")
		}
	}
	if j.key == nil {
		return nil
	}
	return j.key.Cipher()
}

// record is what one journal slot describes: a version-3 record (one
// range) or, with v4 set, a version-4 one (a list of ranges).
type record struct {
	fileID   [16]byte
	ino      uint64
	coff     int64 // where the copy goes in the file; in v4, the first range's offset (the cut if none)
	length   int   // length of the copy; in v4, that of all ranges
	cut      int64 // cut the file here after the copy, or -1
	copyHash [32]byte
	path     string
	// v4 marks a version-4 record, whose copy goes to ranges: the first
	// ranges[0].length bytes of the copy at ranges[0].off, and so on.
	v4     bool
	ranges []span
}

// span is one range of a version-4 record: length bytes of the copy go
// at off of the file.
type span struct {
	off    int64
	length int
}

// spans returns where the record's copy goes, in order.
func (r *record) spans() []span {
	if r.v4 {
		return r.ranges
	}
	return []span{{r.coff, r.length}}
}

// describe says what the record does, for log lines.
func (r *record) describe() string {
	if !r.v4 {
		return fmt.Sprintf("%d bytes at %d", r.length, r.coff)
	}
	s := fmt.Sprintf("%d bytes in %d ranges", r.length, len(r.ranges))
	if len(r.ranges) == 1 {
		s = fmt.Sprintf("%d bytes at %d", r.length, r.coff)
	}
	if r.cut >= 0 {
		s += fmt.Sprintf(", cut at %d", r.cut)
	}
	return s
}

// errNoRecord means a slot holds no record.
var errNoRecord = errors.New("no record")

// parseRecord parses a record's plaintext; slotData is how many bytes of
// copy a slot holds.
func parseRecord(b []byte, slotData int64) (record, error) {
	var r record
	if len(b) < recordFixed {
		return r, fmt.Errorf("record of %d bytes, want at least %d", len(b), recordFixed)
	}
	copy(r.fileID[:], b[0:16])
	r.ino = binary.BigEndian.Uint64(b[16:24])
	r.coff = int64(binary.BigEndian.Uint64(b[24:32]))
	r.length = int(binary.BigEndian.Uint32(b[32:36]))
	cut := binary.BigEndian.Uint64(b[36:44])
	copy(r.copyHash[:], b[44:76])
	plen := int(binary.BigEndian.Uint16(b[76:78]))
	r.cut = int64(cut)
	if cut == noCut {
		r.cut = -1
	}
	switch {
	case plen == 0 || plen > maxJournPath || recordFixed+plen != len(b):
		return r, fmt.Errorf("path length %d does not fit a record of %d bytes", plen, len(b))
	case int64(r.length) > slotData:
		return r, fmt.Errorf("copy of %d bytes does not fit a slot", r.length)
	case r.coff < 0:
		return r, fmt.Errorf("negative offset %d", r.coff)
	case r.cut < -1:
		return r, fmt.Errorf("bad cut %d", cut)
	}
	r.path = string(b[recordFixed:])
	if err := checkRecordPath(r.path); err != nil {
		return r, err
	}
	return r, nil
}

// checkRecordPath returns an error unless path, of a record, stays
// beneath the backing directory.
func checkRecordPath(path string) error {
	if path == "" || path[0] == '/' || strings.Contains("/"+path+"/", "/../") || strings.ContainsRune(path, 0) {
		return fmt.Errorf("path %q leaves the backing directory", path)
	}
	return nil
}

// parseRecordV4 parses a version-4 record's plaintext (docs/FORMAT.md,
// "Write journal"); slotData is how many bytes of copy a slot holds.
// Only what marshal makes of a record writeTxn could write is accepted:
// 1 to maxTxnRanges ranges, sorted, disjoint, none empty, each inside
// what an int64 offset reaches, all of them in the slot; or no range
// and a cut.
func parseRecordV4(b []byte, slotData int64) (record, error) {
	r := record{v4: true}
	if len(b) < txnFixed {
		return r, fmt.Errorf("record of %d bytes, want at least %d", len(b), txnFixed)
	}
	copy(r.fileID[:], b[0:16])
	r.ino = binary.BigEndian.Uint64(b[16:24])
	n := int(binary.BigEndian.Uint16(b[24:26]))
	cut := binary.BigEndian.Uint64(b[26:34])
	copy(r.copyHash[:], b[34:66])
	plen := int(binary.BigEndian.Uint16(b[66:68]))
	r.cut = int64(cut)
	if cut == noCut {
		r.cut = -1
	}
	switch {
	case n > maxTxnRanges:
		return r, fmt.Errorf("%d ranges, want at most %d", n, maxTxnRanges)
	case plen == 0 || plen > maxTxnPath || txnFixed+n*txnRangeSize+plen != len(b):
		return r, fmt.Errorf("%d ranges and a path length of %d do not fit a record of %d bytes", n, plen, len(b))
	case r.cut < -1:
		return r, fmt.Errorf("bad cut %d", cut)
	case n == 0 && r.cut < 0:
		return r, errors.New("no range and no cut: a record that does nothing")
	}
	if n > 0 {
		r.ranges = make([]span, n)
	}
	var total, end int64
	for i := range r.ranges {
		p := b[txnFixed+i*txnRangeSize:]
		off := int64(binary.BigEndian.Uint64(p[0:8]))
		length := int64(binary.BigEndian.Uint32(p[8:12]))
		switch {
		case off < 0:
			return r, fmt.Errorf("range %d: negative offset %d", i, off)
		case length == 0:
			return r, fmt.Errorf("range %d: empty", i)
		case off > 1<<63-1-length:
			return r, fmt.Errorf("range %d: %d bytes at %d end past the largest offset", i, length, off)
		case i > 0 && off < end:
			return r, fmt.Errorf("range %d at %d does not start after the end of range %d (%d)", i, off, i-1, end)
		}
		total += length
		if total > slotData {
			return r, fmt.Errorf("copy of at least %d bytes does not fit a slot", total)
		}
		end = off + length
		r.ranges[i] = span{off: off, length: int(length)}
	}
	r.length = int(total)
	r.coff = r.cut
	if n > 0 {
		r.coff = r.ranges[0].off
	}
	r.path = string(b[txnFixed+n*txnRangeSize:])
	if err := checkRecordPath(r.path); err != nil {
		return r, err
	}
	return r, nil
}

// marshal appends the record's plaintext to b.
func (r *record) marshal(b []byte) []byte {
	if r.v4 {
		return r.marshalV4(b)
	}
	var fixed [recordFixed]byte
	copy(fixed[0:16], r.fileID[:])
	binary.BigEndian.PutUint64(fixed[16:24], r.ino)
	binary.BigEndian.PutUint64(fixed[24:32], uint64(r.coff))
	binary.BigEndian.PutUint32(fixed[32:36], uint32(r.length))
	cut := noCut
	if r.cut >= 0 {
		cut = uint64(r.cut)
	}
	binary.BigEndian.PutUint64(fixed[36:44], cut)
	copy(fixed[44:76], r.copyHash[:])
	binary.BigEndian.PutUint16(fixed[76:78], uint16(len(r.path)))
	return append(append(b, fixed[:]...), r.path...)
}

// marshalV4 appends the plaintext of the version-4 record r to b.
func (r *record) marshalV4(b []byte) []byte {
	var fixed [txnFixed]byte
	copy(fixed[0:16], r.fileID[:])
	binary.BigEndian.PutUint64(fixed[16:24], r.ino)
	binary.BigEndian.PutUint16(fixed[24:26], uint16(len(r.ranges)))
	cut := noCut
	if r.cut >= 0 {
		cut = uint64(r.cut)
	}
	binary.BigEndian.PutUint64(fixed[26:34], cut)
	copy(fixed[34:66], r.copyHash[:])
	binary.BigEndian.PutUint16(fixed[66:68], uint16(len(r.path)))
	b = append(b, fixed[:]...)
	for _, s := range r.ranges {
		b = binary.BigEndian.AppendUint64(b, uint64(s.off))
		b = binary.BigEndian.AppendUint32(b, uint32(s.length))
	}
	return append(b, r.path...)
}

// size is the length of the record's plaintext.
func (r *record) size() int {
	if r.v4 {
		return txnFixed + len(r.ranges)*txnRangeSize + len(r.path)
	}
	return recordFixed + len(r.path)
}

// magic is the magic of the record's page.
func (r *record) magic() []byte {
	if r.v4 {
		return txnMagic
	}
	return journalMagic
}

// isRecordMagic reports whether b starts with the magic of a record page
// (version 3 or 4).
func isRecordMagic(b []byte) bool {
	return len(b) >= len(journalMagic) && (bytes.Equal(b[:len(journalMagic)], journalMagic) || bytes.Equal(b[:len(txnMagic)], txnMagic))
}

// sealRecord frames r for slot, sealed with c, into page (journalHdr
// bytes, returned).
func sealRecord(c *blockcipher.Cipher, slot int, r *record, page []byte) []byte {
	plain := r.marshal(make([]byte, 0, r.size()))
	page = page[:journalHdr]
	clear(page)
	copy(page, r.magic())
	sealed := c.SealBlock(page[10:10], plain, uint64(slot))
	binary.BigEndian.PutUint16(page[8:10], uint16(len(sealed)))
	return page
}

// openRecord opens the record page of slot with c: errNoRecord for a
// cleared page, an error for one that is not an authentic record. Only
// what sealRecord makes is accepted: a whole page, zero after the sealed
// record. The page's magic says the record's version (3 or 4).
func openRecord(c *blockcipher.Cipher, slot int, page []byte, slotData int64) (record, error) {
	if len(page) < 10 || !isRecordMagic(page) {
		if isZero(page) {
			return record{}, errNoRecord
		}
		return record{}, errors.New("not a record")
	}
	if len(page) != journalHdr {
		return record{}, fmt.Errorf("record page of %d bytes, want %d", len(page), journalHdr)
	}
	n := int(binary.BigEndian.Uint16(page[8:10]))
	if n > len(page)-10 || n <= blockcipher.Overhead {
		return record{}, fmt.Errorf("sealed record of %d bytes does not fit the page", n)
	}
	if !isZero(page[10+n:]) {
		return record{}, errors.New("bytes after the sealed record")
	}
	plain, err := c.OpenBlock(nil, page[10:10+n], uint64(slot))
	if err != nil {
		return record{}, fmt.Errorf("not authentic: %w", err)
	}
	if bytes.Equal(page[:8], txnMagic) {
		return parseRecordV4(plain, slotData)
	}
	return parseRecord(plain, slotData)
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// slotOffset is where slot i starts in the journal file.
func (j *Journal) slotOffset(i int) int64 { return journalBase + int64(i)*j.slotSize }

// OpenJournal opens the write journal in the root of the backing
// directory dir, replays whatever a crash left in it, and, if writable,
// starts it anew under a new journal key from keys; maxData is the
// largest ciphertext one write may produce. Parked journals are replayed
// first (they are older), unless keys is write-only. Records that are not
// authentic or no longer apply are logged to logger and skipped. A
// writable journal whose records' key cannot be loaded is parked, not
// cleared. A journal another process holds for writing fails with
// ErrLocked; a journal that is not writable is replayed only if no one
// holds it, and is not created if missing (nil, nil).
func OpenJournal(ctx context.Context, dir *backing.Dir, maxData int, keys Keyer, writable bool, logger *log.Logger) (*Journal, error) {
	flags := syscall.O_RDWR
	if writable {
		flags |= syscall.O_CREAT
	}
	fd, err := openJournalFile(dir, flags)
	if !writable && errors.Is(err, syscall.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	slotSize := int64(journalHdr + (maxData+4095)/4096*4096)
	j := &Journal{fd: fd, slotSize: slotSize, free: make(chan int, journalSlots), log: logger}
	// Parked journals first: each was parked as a mount started, and the
	// journal's records are of that mount or a later one, so theirs are
	// older. The lock on the journal, held meanwhile, keeps other
	// writable mounts out.
	if !writeOnly(keys) {
		replayParked(ctx, dir, slotSize, keys, logger)
	}
	keyErr, err := j.replay(ctx, dir, keys, replayOpts{name: JournalName})
	if err != nil {
		syscall.Close(j.fd)
		return nil, err
	}
	// Records this mount cannot open are kept for a mount that can, never
	// cleared: moved aside if this mount is to write a journal.
	if keyErr != nil {
		if !writable {
			j.log.Printf("kmsfs: the write journal's key cannot be loaded (%v); its records are not replayed", keyErr)
		} else if err := j.park(dir, keyErr, func() (int, error) { return openJournalFile(dir, flags) }); err != nil {
			syscall.Close(j.fd) // park left it as it was
			return nil, err
		}
	}
	if !writable {
		return j, nil
	}
	j.keys = keys
	j.lastTry = time.Now()
	if err := j.startLocked(ctx, keys); err != nil {
		// Not fatal: files stay readable and writable (a key list that
		// names an unreachable key fails new files, not the mount).
		j.log.Printf("kmsfs: %v; writes are not journaled (safe against a crash of the server) until it works", err)
	}
	for i := 0; i < journalSlots; i++ {
		j.free <- i
	}
	return j, nil
}

// openJournalFile opens the journal file of dir with flags and locks it
// for this process: one writer per volume on this machine. The lock lives
// as long as the descriptor (the mount), and dies with the process.
func openJournalFile(dir *backing.Dir, flags int) (int, error) {
	fd, err := dir.Open(JournalName, flags, 0o600)
	if err != nil {
		return -1, fmt.Errorf("write journal %s/%s: %w", dir.Path, JournalName, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		syscall.Close(fd)
		if err == unix.EWOULDBLOCK {
			return -1, fmt.Errorf("%s: %w", dir.Path, ErrLocked)
		}
		return -1, fmt.Errorf("locking the write journal %s/%s: %w", dir.Path, JournalName, err)
	}
	return fd, nil
}

// startLocked truncates the journal and writes a new header: a new
// journal key for this mount's records. No slot may be in use (none is
// while there is no key); j.keyMu is held, or j is not shared yet.
func (j *Journal) startLocked(ctx context.Context, keys Keyer) error {
	kctx, cancel := keyContext(ctx)
	defer cancel()
	hdr, k, err := keys.New(kctx)
	if err != nil {
		return fmt.Errorf("write journal: a key for its records: %w", err)
	}
	// Rewritten in place, not truncated: the space the slots already have
	// stays theirs, so that overwrites keep working on a full disk.
	if err := pwriteFull(j.fd, hdr, 0); err != nil {
		k.Close()
		return fmt.Errorf("write journal: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(j.fd, &st); err != nil {
		k.Close()
		return fmt.Errorf("write journal: %w", err)
	}
	for i := 0; i < journalSlots && j.slotOffset(i) < st.Size; i++ {
		err := j.clear(i)
		if err == nil {
			err = j.clearCopy(i, min(j.slotSize-journalHdr, st.Size-j.slotOffset(i)-journalHdr))
		}
		if err != nil {
			k.Close()
			return err
		}
	}
	// Every slot gets disk space for its record page and a small copy
	// now, while there is some: an overwrite must keep working on a full
	// disk, and an overwrite of a version-3 file (a block and its entry)
	// always has a copy, also where no earlier write gave the slot space.
	for i := 0; i < journalSlots; i++ {
		err := unix.Fallocate(j.fd, unix.FALLOC_FL_KEEP_SIZE, j.slotOffset(i), journalHdr+min(slotReserve, j.slotSize-journalHdr))
		if err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
			j.log.Printf("kmsfs: write journal: reserving space for its slots: %v (overwrites on a full disk may fail)", err)
			break
		}
	}
	j.key = k
	return nil
}

// Close wipes the journal key and closes the journal file.
func (j *Journal) Close() {
	if j == nil {
		return
	}
	j.keyMu.Lock()
	if j.key != nil {
		j.key.Close()
		j.key = nil
	}
	j.keyMu.Unlock()
	syscall.Close(j.fd)
}

// writeOnly reports whether keys can make keys but not load them (a
// write-only mount's).
func writeOnly(keys Keyer) bool {
	w, ok := keys.(interface{ WriteOnly() bool })
	return ok && w.WriteOnly()
}

// errWriteOnly is why a write-only mount does not replay a journal with
// records: it cannot load any key.
var errWriteOnly = errors.New("this write-only mount cannot load it")

// park moves the journal file (j.fd, locked) aside to a new parked name
// because the key of its records cannot be loaded (keyErr), syncs the
// directory, opens and locks a new journal with reopen, and only then
// closes the parked file's descriptor, so that the volume stays locked
// throughout. On success j.fd is the new journal's. On error j.fd is left
// as it was, still open (the parked file's, once the rename is done), and
// the caller closes it.
func (j *Journal) park(dir *backing.Dir, keyErr error, reopen func() (int, error)) error {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("write journal: a parked name: %w", err)
	}
	name := ParkedJournalPrefix + hex.EncodeToString(rnd[:])
	if err := unix.Renameat2(dir.Fd(), JournalName, dir.Fd(), name, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("write journal: parking its records as %s: %w", name, err)
	}
	if err := syncRoot(dir); err != nil {
		return fmt.Errorf("write journal: parking its records as %s: syncing %s: %w", name, dir.Path, err)
	}
	if errors.Is(keyErr, errWriteOnly) {
		j.log.Printf("kmsfs: the write journal holds writes of an interrupted mount that this write-only mount cannot open; kept as %s for the next mount that can read the volume", name)
	} else {
		j.log.Printf("kmsfs: the write journal's key cannot be loaded (%v); its records are not replayed but kept as %s for the next mount that can load it", keyErr, name)
	}
	fd, err := reopen()
	if err != nil {
		return err
	}
	syscall.Close(j.fd)
	j.fd = fd
	return nil
}

// maxParked is how many parked journals one mount looks at, oldest first;
// the others wait for a later mount. Each may cost a call to the key
// service and a few log lines at mount time, and names under the parked
// prefix can be planted by whoever writes the backing directory. A
// journal is parked only when a mount starts and cannot load the key of
// records a crash left, so a volume rarely has more than a few.
const maxParked = 64

// fileKey identifies a file by device and inode.
type fileKey struct{ dev, ino uint64 }

// replayParked replays the parked journals in dir, oldest (by ctime)
// first and at most maxParked of them, and removes each once replayed;
// the others stay, logged. Only a regular file that looks like a journal
// (checkJournalFile) is replayed or removed; anything else under a parked
// name is logged and left alone, unopened unless it is a regular file.
func replayParked(ctx context.Context, dir *backing.Dir, slotSize int64, keys Keyer, logger *log.Logger) {
	names, err := backing.List(dir.Fd(), ".")
	if err != nil {
		logger.Printf("kmsfs: looking for parked write journals: %v", err)
		return
	}
	type parked struct {
		name string
		st   unix.Stat_t
	}
	var found []parked
	for _, name := range names {
		if !IsParkedJournal(name) {
			continue
		}
		p := parked{name: name}
		if err := unix.Fstatat(dir.Fd(), name, &p.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if !errors.Is(err, unix.ENOENT) {
				logger.Printf("kmsfs: parked write journal %s: %v", name, err)
			}
			continue
		}
		found = append(found, p)
	}
	slices.SortFunc(found, func(a, b parked) int {
		if c := compareTime(a.st.Ctim, b.st.Ctim); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	if len(found) > maxParked {
		logger.Printf("kmsfs: %d parked write journals: this mount looks at the %d oldest and leaves the other %d for later mounts", len(found), maxParked, len(found)-maxParked)
		found = found[:maxParked]
	}
	// What each file's ctime was before this mount's replay wrote it: a
	// record is stale if its file changed after its journal was parked,
	// not if an older parked journal's record was replayed into it.
	before := make(map[fileKey]unix.Timespec)
	for _, p := range found {
		if p.st.Mode&unix.S_IFMT != unix.S_IFREG {
			logger.Printf("kmsfs: parked write journal %s: not a regular file (%s); left alone", p.name, fileType(p.st.Mode))
			continue
		}
		replayParkedFile(ctx, dir, p.name, slotSize, keys, logger, before)
	}
}

// replayParkedFile replays the parked journal name of dir and removes it,
// logging what it does; before is as for replayOpts.
func replayParkedFile(ctx context.Context, dir *backing.Dir, name string, slotSize int64, keys Keyer, logger *log.Logger, before map[fileKey]unix.Timespec) {
	// Read only: a parked journal is never written, so its ctime stays
	// that of the rename that parked it. O_NONBLOCK: should a FIFO take
	// the name after the check above, the open does not wait for a
	// writer.
	fd, err := dir.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY, 0)
	if err != nil {
		logger.Printf("kmsfs: parked write journal %s: %v", name, err)
		return
	}
	defer syscall.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		logger.Printf("kmsfs: parked write journal %s: %v", name, err)
		return
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		logger.Printf("kmsfs: parked write journal %s: not a regular file (%s); left alone", name, fileType(st.Mode))
		return
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if err != unix.EWOULDBLOCK {
			logger.Printf("kmsfs: parked write journal %s: locking it: %v", name, err)
		}
		return // or another mount is replaying it
	}
	if err := checkJournalFile(fd, st.Size, slotSize); err != nil {
		logger.Printf("kmsfs: parked write journal %s: not a write journal (%v); left untouched", name, err)
		return
	}
	p := &Journal{fd: fd, slotSize: slotSize, log: logger}
	keyErr, err := p.replay(ctx, dir, keys, replayOpts{name: name, parked: true, parkedAt: st.Ctim, before: before})
	switch {
	case err != nil:
		logger.Printf("kmsfs: parked write journal %s: %v; kept", name, err)
		return
	case keyErr != nil:
		logger.Printf("kmsfs: parked write journal %s: its key cannot be loaded (%v); its records are not replayed, and it is kept", name, keyErr)
		return
	}
	// Removed only if the name still leads to the file replayed.
	var now unix.Stat_t
	err = unix.Fstatat(dir.Fd(), name, &now, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && (now.Dev != st.Dev || now.Ino != st.Ino) {
		err = errors.New("replaced while it was replayed")
	}
	if err == nil {
		err = unix.Unlinkat(dir.Fd(), name, 0)
	}
	if err == nil {
		err = syncRoot(dir)
	}
	if err != nil {
		logger.Printf("kmsfs: parked write journal %s: replayed, but not removed: %v", name, err)
		return
	}
	logger.Printf("kmsfs: parked write journal %s replayed and removed", name)
}

// fileType names the file type in mode, for log lines.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return fmt.Sprintf("type %#o", mode&unix.S_IFMT)
}

// checkJournalFile returns an error unless the file fd, of size bytes,
// looks like a write journal with slots of slotSize bytes: at least a
// header, and every record page that is not all zero starting with the
// journal magic; or a journal of an older kmsfs (which is not replayed).
// Whatever else has a parked name (an old user file, on a volume with
// names in clear) is never cleared or removed.
func checkJournalFile(fd int, size, slotSize int64) error {
	if size < journalBase {
		return fmt.Errorf("%d bytes, want at least a header of %d", size, journalBase)
	}
	page := make([]byte, journalHdr)
	if n, _ := preadAll(fd, page[:len(oldJournalMagic)], 0); n == len(oldJournalMagic) && bytes.Equal(page[:n], oldJournalMagic) {
		return nil
	}
	for i := 0; i < journalSlots; i++ {
		off := journalBase + int64(i)*slotSize
		n, err := preadAll(fd, page, off)
		if err != nil {
			return fmt.Errorf("reading slot %d: %w", i, err)
		}
		if isZero(page[:n]) {
			continue
		}
		if !isRecordMagic(page[:n]) {
			return fmt.Errorf("the record page of slot %d does not start with the journal magic", i)
		}
	}
	return nil
}

// compareTime compares two timestamps, to the nanosecond.
func compareTime(a, b unix.Timespec) int {
	if c := cmp.Compare(a.Sec, b.Sec); c != 0 {
		return c
	}
	return cmp.Compare(a.Nsec, b.Nsec)
}

// syncRoot syncs the root directory of dir (whose own descriptor is
// O_PATH).
func syncRoot(dir *backing.Dir) error {
	fd, err := dir.Open(".", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return syscall.Fsync(fd)
}

// IsParkedJournal reports whether name (in the root of the backing
// directory) is a parked journal's.
func IsParkedJournal(name string) bool {
	rest, ok := strings.CutPrefix(name, ParkedJournalPrefix)
	if !ok || len(rest) != 16 {
		return false
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// replayOpts is what differs between the replay of the journal and that
// of a parked journal.
type replayOpts struct {
	// name is the journal file's name, for log lines.
	name string
	// parked marks a parked journal: it is only read, never cleared (it
	// is removed once replayed), and a record whose file changed after
	// parkedAt, the journal's ctime (set by the rename that parked it),
	// is stale: not replayed.
	parked   bool
	parkedAt unix.Timespec
	// before holds, by file, the ctime a file had before the first record
	// of this mount's replay was written to it; replay fills it.
	before map[fileKey]unix.Timespec
}

// label names the journal in log lines and errors.
func (o *replayOpts) label() string {
	if o.parked {
		return "parked write journal " + o.name
	}
	return "write journal"
}

// errStale means a parked record's file changed after the journal was
// parked: its copy is older than what the file holds.
var errStale = errors.New("the file changed after the journal was parked")

// replay redoes the writes of every slot that holds an authentic record,
// and, unless the journal is parked, clears every slot. keyErr says why
// records were left: the journal's key could not be loaded.
func (j *Journal) replay(ctx context.Context, dir *backing.Dir, keys Keyer, opts replayOpts) (keyErr, err error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(j.fd, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", opts.label(), err)
	}
	if st.Size == 0 {
		return nil, nil
	}
	head := make([]byte, len(oldJournalMagic))
	if n, _ := preadAll(j.fd, head, 0); n == len(head) && bytes.Equal(head, oldJournalMagic) {
		if opts.parked {
			j.log.Printf("kmsfs: %s is of an older kmsfs; its records cannot be authenticated and are not replayed", opts.label())
		} else {
			j.log.Printf("kmsfs: the write journal is of an older kmsfs; its records cannot be authenticated and are not replayed")
		}
		return nil, nil
	}
	if !j.anyRecord() {
		return nil, nil // a clean journal: nothing to replay, no key needed
	}
	if writeOnly(keys) {
		return errWriteOnly, nil
	}
	k, err := keys.Load(context.WithoutCancel(ctx), j.fd, func() string { return opts.name })
	if err != nil || k == nil {
		if err == nil {
			err = errors.New("no header")
		}
		return err, nil
	}
	defer k.Close()
	c := k.Cipher()
	page := make([]byte, journalHdr)
	for i := 0; i < journalSlots; i++ {
		off := j.slotOffset(i)
		n, err := preadAll(j.fd, page, off)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", opts.label(), err)
		}
		r, err := openRecord(c, i, page[:n], j.slotSize-journalHdr)
		switch {
		case err == errNoRecord:
			// The copy area may still hold a copy whose record was never
			// written.
		case err != nil:
			j.log.Printf("kmsfs: %s slot %d: %v; skipped", opts.label(), i, err)
		default:
			if err := j.redo(dir, &r, off+journalHdr, &opts); err != nil {
				j.log.Printf("kmsfs: %s slot %d (%s): not replayed: %v", opts.label(), i, r.path, err)
			} else if opts.parked {
				j.log.Printf("kmsfs: completed an interrupted write to %s (%s) from %s", r.path, r.describe(), opts.label())
			} else {
				j.log.Printf("kmsfs: completed an interrupted write to %s (%s)", r.path, r.describe())
			}
		}
		if opts.parked {
			continue
		}
		if err != errNoRecord {
			if err := j.clear(i); err != nil {
				return nil, err
			}
		}
		if err := j.clearCopy(i, min(j.slotSize, st.Size-off)-journalHdr); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// anyRecord reports whether a slot's record page is not all zeros (or
// cannot be read).
func (j *Journal) anyRecord() bool {
	page := make([]byte, journalHdr)
	for i := 0; i < journalSlots; i++ {
		n, err := preadAll(j.fd, page, j.slotOffset(i))
		if err != nil || !isZero(page[:n]) {
			return true
		}
	}
	return false
}

// clear zeroes the record page of slot i (clearCopy clears its copy
// area).
func (j *Journal) clear(i int) error {
	off := j.slotOffset(i)
	zero := getBuf(journalHdr)
	defer putBuf(zero)
	clear(*zero)
	if err := pwriteFull(j.fd, *zero, off); err != nil {
		return fmt.Errorf("clearing write journal: %w", err)
	}
	return nil
}

// clearCopy zeroes the first n bytes of slot i's copy area: in place
// where the file system can (its disk space stays allocated),
// overwritten with zeros otherwise.
func (j *Journal) clearCopy(i int, n int64) error {
	if n <= 0 {
		return nil
	}
	off := j.slotOffset(i) + journalHdr
	n = (n + 4095) &^ 4095
	// Zeroed in place, not punched out: the slot keeps its disk space, so
	// the next write through it needs none (a full disk).
	err := unix.Fallocate(j.fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("clearing write journal: %w", err)
	}
	zero := getBuf(int(n))
	defer putBuf(zero)
	clear(*zero)
	if err := pwriteFull(j.fd, *zero, off); err != nil {
		return fmt.Errorf("clearing write journal: %w", err)
	}
	return nil
}

// redo does the write of record r again: its copy is at dataOff of the
// journal, and goes to the record's ranges in order (one for version 3),
// then the file is cut if the record says so. For a parked journal's
// record (opts.parked), a file whose ctime is later than the journal's is
// not written (errStale).
func (j *Journal) redo(dir *backing.Dir, r *record, dataOff int64, opts *replayOpts) error {
	data := make([]byte, r.length)
	if err := preadFull(j.fd, data, dataOff); err != nil {
		return fmt.Errorf("reading the journal: %w", err)
	}
	if sha256.Sum256(data) != r.copyHash {
		return errors.New("its copy does not match the record")
	}
	fd, err := dir.Open(r.path, syscall.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Ino != r.ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errors.New("the file was replaced")
	}
	if opts.parked {
		// Replaying an older copy over newer writes would undo them.
		fk := fileKey{dev: st.Dev, ino: st.Ino}
		ctime, ok := opts.before[fk]
		if !ok {
			ctime = st.Ctim
		}
		if compareTime(ctime, opts.parkedAt) > 0 {
			return errStale
		}
		if !ok && opts.before != nil {
			opts.before[fk] = ctime
		}
	}
	pre := make([]byte, header.PreambleSize)
	if err := preadFull(fd, pre, 0); err != nil {
		return fmt.Errorf("reading its header: %w", err)
	}
	p, err := header.ParsePreamble(pre)
	if err != nil || p.FileID != r.fileID {
		return errors.New("the file has another file ID")
	}
	for _, s := range r.spans() {
		if err := pwriteFull(fd, data[:s.length], s.off); err != nil {
			return err
		}
		data = data[s.length:]
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
	var jc *blockcipher.Cipher
	if j != nil && rel != "" && len(rel) <= maxJournPath && int64(len(data)) <= j.slotSize-journalHdr && f.key != nil {
		jc = j.cipher()
	}
	if jc != nil && j.kept.Load() >= journalSlots-1 {
		// All but one slot hold records kept for the next mount (writes
		// that failed twice: a failing disk): write without the journal
		// rather than wait for slots that never come back.
		jc = nil
	}
	if jc == nil {
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
	if copyLen == 0 && !end && off >= st.Size && onePage(off, len(data)) {
		// An append that lies within one page of the backing file needs
		// no record: the kernel copies a write page by page and stops
		// between pages for a fatal signal, never inside one, so the
		// death of the process leaves all of it or none. (Most small
		// files are written this way.)
		return writeData()
	}
	slot := <-j.free
	keep := false // the record must survive for the next mount
	defer func() {
		if keep {
			// Never reused while this mount runs: a later write would
			// overwrite the record the next mount needs.
			j.kept.Add(1)
			return
		}
		j.free <- slot
	}()
	base := j.slotOffset(slot)
	r := record{fileID: f.key.FileID(), ino: st.Ino, coff: off, length: int(copyLen), cut: cut, path: rel}
	if copyLen > 0 {
		ct.wait()
		if err := pwriteFull(j.fd, data[:copyLen], base+journalHdr); err != nil {
			j.clearCopy(slot, copyLen)
			return fmt.Errorf("write journal: %w", err)
		}
	}
	r.copyHash = sha256.Sum256(data[:copyLen])
	hb := getBuf(journalHdr)
	defer putBuf(hb)
	if err := pwriteFull(j.fd, sealRecord(jc, slot, &r, *hb), base); err != nil {
		j.clearCopy(slot, copyLen)
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
			keep = true
			j.log.Printf("kmsfs: write to %s failed part-way (%v) and could not be finished (%v): journal slot %d is kept for the next mount to replay", rel, err, rerr, slot)
			return fmt.Errorf("%w (left in the write journal for the next mount: %v)", err, rerr)
		}
	}
	// Clear the slot: the write is done, or failed without touching what
	// existed. Only the record page's sealed bytes and the copy are not
	// zero, and they lie next to each other: a small write clears both
	// with one pwrite of zeros into pages the slot already has (no
	// fallocate per write: on ext4 each one is a metadata change, and it
	// cost 4 KiB random overwrites about a tenth of their speed).
	if cerr := j.clearUsed(slot, copyLen); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// pageSize is the unit in which the kernel copies a write into the page
// cache.
const pageSize = 4096

// onePage reports whether n bytes at off lie within one page.
func onePage(off int64, n int) bool {
	return n > 0 && off/pageSize == (off+int64(n)-1)/pageSize
}

// clearSmall is the largest copy clearUsed clears with a pwrite of zeros;
// a larger one is zeroed in place with fallocate.
const clearSmall = 128 << 10

// clearUsed clears slot i after a write whose copy was copyLen bytes: the
// record page and the copy.
func (j *Journal) clearUsed(i int, copyLen int64) error {
	if copyLen > clearSmall {
		if err := j.clear(i); err != nil {
			return err
		}
		return j.clearCopy(i, copyLen)
	}
	n := journalHdr + int(copyLen)
	zero := getBuf(n)
	defer putBuf(zero)
	clear(*zero)
	if err := pwriteFull(j.fd, *zero, j.slotOffset(i)); err != nil {
		return fmt.Errorf("clearing write journal: %w", err)
	}
	return nil
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
