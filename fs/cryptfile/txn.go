package cryptfile

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/kmsfs/kmsfs/blockcipher"
)

// wrange is one write of a transaction: data goes at off of the backing
// file.
type wrange struct {
	off  int64
	data []byte
}

// errTxnRanges means the ranges given to writeTxn are not sorted and
// disjoint, or one has a negative offset.
var errTxnRanges = errors.New("write journal: the ranges of a transaction must be sorted, disjoint and at offsets >= 0")

// writeTxn writes the ranges of one change of the backing file fd of f,
// and then cuts the file at cut if cut >= 0 (cut < 0: no cut), atomically
// with respect to the death of the process, through a version-4 record
// (docs/FORMAT.md, "Write journal"). If the process dies during the
// change, either its record was not written yet and the file was not
// touched, or the next mount's replay leaves every copied range (below)
// with its new bytes and the file cut at the record's cut, so that the
// appends are either whole or gone; this is the change itself, or the
// change without its appends. f.mu is held exclusively. It is the entry
// point of the version-3 engine; write stays that of versions 1 and 2.
//
// ranges must be sorted by offset and disjoint (errTxnRanges otherwise,
// before anything is written); empty ones are ignored. Let size be the
// backing file's size when writeTxn is called, and top = max(size, cut).
//
//   - A range that starts below top is copied whole into a journal slot:
//     below size it overwrites existing bytes; between size and a cut
//     above size it lies in what the file keeps, so its bytes must be
//     there after a replay too. Ranges that start at or after top are
//     appends, not copied: if the process dies while they are written,
//     the replay cuts them away.
//   - The record's cut is the given cut if it is >= 0 (a truncation, or a
//     lengthening: the replay cuts there after writing the copies);
//     otherwise, if any range is an append, max(size, end of the last
//     copied range), which cuts a torn append back; otherwise none.
//   - A transaction of a single append that lies within one page of the
//     backing file, and no cut, is written without a record (see
//     onePage); a transaction of appends only gets a record with no range
//     and the cut at size.
//
// After the record, every range is written in order (copied or not),
// then the file is cut to cut if cut >= 0, then the slot is cleared. If
// a write fails part-way (EIO, ENOSPC, EFBIG), appends are cut back,
// then what a replay would do is done at once (the copied ranges written
// again, the file cut to the record's cut), and the error is returned; if
// that fails too, the record is kept for the next mount. An error writing
// the journal itself is returned before the file is touched. So after an
// error the file holds its old content or the new one in every copied
// range, never a torn one. Copied ranges of a file that may have holes,
// or that reach past its end, get their disk space reserved first
// (fallocate KEEP_SIZE), so that a full disk fails the change before
// anything is written.
//
// Without a journal key (nil j, a journal only replayed, a key service
// down), for a file with no name or no key, with all but one slot kept
// for the next mount, and when the change does not fit a record (more
// than maxTxnRanges copied ranges, a copy larger than a slot, a path
// longer than maxTxnPath), the ranges are written and the file cut
// without a record, as write does (a failed append cut back); the last
// three are logged once per mount. A caller that must stay atomic splits
// its changes so that each copies at most maxTxnRanges ranges and at most
// one write's worth of bytes.
func (j *Journal) writeTxn(f *File, fd int, ranges []wrange, cut int64) error {
	var end int64
	empty := false
	for _, r := range ranges {
		if len(r.data) == 0 {
			empty = true
			continue
		}
		if r.off < 0 || r.off < end || r.off > 1<<63-1-int64(len(r.data)) {
			return errTxnRanges
		}
		end = r.off + int64(len(r.data))
	}
	if empty {
		ranges = slices.DeleteFunc(slices.Clone(ranges), func(r wrange) bool { return len(r.data) == 0 })
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	size := st.Size
	top := max(size, cut)
	// The copied ranges are the first ncopy ones (the ranges are sorted).
	ncopy, copyLen := 0, int64(0)
	for _, r := range ranges {
		if r.off >= top {
			break
		}
		ncopy++
		copyLen += int64(len(r.data))
	}
	copied := ranges[:ncopy]
	appends := len(ranges) > ncopy
	// Every copied range gets its disk space first, unless it certainly
	// has it: a full disk then fails the change before anything is
	// written. Appends need none: if the disk fills up under one, it is
	// cut back (see write).
	for _, r := range copied {
		if !f.allocated(fd, &st, r.off, int64(len(r.data))) {
			if err := reserve(fd, r.off, int64(len(r.data))); err != nil {
				return err
			}
		}
	}
	// A gap past the old end, or a cut past the last range, is a hole.
	pos := size
	for _, r := range ranges {
		if e := r.off + int64(len(r.data)); e > size {
			if r.off > pos {
				f.holes = holesMaybe
			}
			pos = max(pos, e)
		}
	}
	if cut > pos {
		f.holes = holesMaybe
	}
	// keptEnd is where the file ends with the copied ranges and without
	// the appends: where a failed append is cut back to.
	keptEnd := size
	if ncopy > 0 {
		last := copied[ncopy-1]
		keptEnd = max(size, last.off+int64(len(last.data)))
	}
	recCut := cut
	if cut < 0 && appends {
		recCut = keptEnd
	}
	apply := func() error {
		for i, r := range ranges {
			if err := pwriteFull(fd, r.data, r.off); err != nil {
				if i >= ncopy {
					if terr := cutBack(fd, keptEnd); terr != nil {
						return errors.Join(err, fmt.Errorf("cutting back a failed append: %w", terr))
					}
				}
				return err
			}
		}
		if cut >= 0 {
			return syscall.Ftruncate(fd, cut)
		}
		return nil
	}

	var rel string
	if j != nil {
		rel = f.name()
	}
	var jc *blockcipher.Cipher
	if j != nil && rel != "" && f.key != nil {
		switch {
		case ncopy > maxTxnRanges:
			j.unjournaled(rel, fmt.Sprintf("%d ranges to copy, more than the %d of a record", ncopy, maxTxnRanges))
		case copyLen > j.slotSize-journalHdr:
			j.unjournaled(rel, fmt.Sprintf("a copy of %d bytes, more than the %d of a slot", copyLen, j.slotSize-journalHdr))
		case len(rel) > maxTxnPath:
			j.unjournaled(rel, fmt.Sprintf("a path of %d bytes, longer than the %d of a record", len(rel), maxTxnPath))
		default:
			jc = j.cipher()
		}
	}
	if jc != nil && j.kept.Load() >= journalSlots-1 {
		jc = nil // as in write: the slots are kept for the next mount
	}
	if jc == nil {
		return apply()
	}
	if ncopy == 0 && cut < 0 && (!appends || len(ranges) == 1 && onePage(ranges[0].off, len(ranges[0].data))) {
		// Nothing at all, or one append within one page, which the death of
		// the process cannot tear (see write).
		return apply()
	}

	slot := <-j.free
	keep := false
	defer func() {
		if keep {
			j.kept.Add(1)
			return
		}
		j.free <- slot
	}()
	base := j.slotOffset(slot)
	r := record{v4: true, fileID: f.key.FileID(), ino: st.Ino, cut: recCut, path: rel, length: int(copyLen)}
	if ncopy > 0 {
		r.ranges = make([]span, ncopy)
		r.coff = copied[0].off
	} else {
		r.coff = recCut
	}
	h := sha256.New()
	for i, c := range copied {
		r.ranges[i] = span{off: c.off, length: len(c.data)}
		h.Write(c.data)
	}
	h.Sum(r.copyHash[:0])
	if copyLen <= clearSmall {
		// The record page and the copy after it in one write: a death of
		// the process in it leaves the record with a copy that does not
		// match its hash, which a replay skips, and the file untouched.
		hb := getBuf(journalHdr + int(copyLen))
		defer putBuf(hb)
		sealRecord(jc, slot, &r, (*hb)[:journalHdr])
		at := journalHdr
		for _, c := range copied {
			at += copy((*hb)[at:], c.data)
		}
		if err := pwriteFull(j.fd, (*hb)[:at], base); err != nil {
			j.clearUsed(slot, copyLen)
			return fmt.Errorf("write journal: %w", err)
		}
	} else {
		if err := j.writeCopy(slot, copied, copyLen); err != nil {
			j.clearCopy(slot, copyLen)
			return fmt.Errorf("write journal: %w", err)
		}
		hb := getBuf(journalHdr)
		defer putBuf(hb)
		if err := pwriteFull(j.fd, sealRecord(jc, slot, &r, *hb), base); err != nil {
			j.clearCopy(slot, copyLen)
			return fmt.Errorf("write journal: %w", err)
		}
	}
	err := apply()
	if err != nil && (ncopy > 0 || recCut >= 0) {
		// As in write: do now what a replay would, so that every copied
		// range holds its old or its new bytes; if that fails too, the
		// record stays for the next mount.
		var rerr error
		for _, c := range copied {
			if rerr = pwriteFull(fd, c.data, c.off); rerr != nil {
				break
			}
		}
		if rerr == nil && recCut >= 0 {
			rerr = syscall.Ftruncate(fd, recCut)
		}
		if rerr != nil {
			keep = true
			j.log.Printf("kmsfs: write to %s failed part-way (%v) and could not be finished (%v): journal slot %d is kept for the next mount to replay", rel, err, rerr, slot)
			return fmt.Errorf("%w (left in the write journal for the next mount: %v)", err, rerr)
		}
	}
	if cerr := j.clearUsed(slot, copyLen); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// cutBack truncates fd to size if it is longer.
func cutBack(fd int, size int64) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Size <= size {
		return nil
	}
	return syscall.Ftruncate(fd, size)
}

// writeCopy writes the copied ranges, n bytes in all, one after the
// other into the copy area of slot: a small copy gathered into one
// write.
func (j *Journal) writeCopy(slot int, copied []wrange, n int64) error {
	at := j.slotOffset(slot) + journalHdr
	if len(copied) == 1 || n > clearSmall {
		for _, c := range copied {
			if err := pwriteFull(j.fd, c.data, at); err != nil {
				return err
			}
			at += int64(len(c.data))
		}
		return nil
	}
	buf := getBuf(int(n))
	defer putBuf(buf)
	b := (*buf)[:0]
	for _, c := range copied {
		b = append(b, c.data...)
	}
	return pwriteFull(j.fd, b, at)
}

// unjournaled logs, once per mount, that a change of the file rel was
// written without a record, and why.
func (j *Journal) unjournaled(rel, why string) {
	if j.unjournaledLogged.CompareAndSwap(false, true) {
		j.log.Printf("kmsfs: a change of %s was written without the write journal (%s): a crash of the server during it may leave it torn; further such changes are not logged", rel, why)
	}
}

// beginCut writes a record that only cuts the file behind fd back to
// size bytes (its size now) if the server dies before end is called: an
// append that writes its pages itself, as they are ready, and whose other
// writes (entries of the new blocks) lie where a cut back leaves them
// unused. end clears the record; the caller calls it once every write of
// the append is done, and writes nothing the cut would not undo before.
// Without a journal key it returns an end that does nothing.
func (j *Journal) beginCut(f *File, fd int, size int64) (end func(), err error) {
	nothing := func() {}
	if j == nil || f.key == nil {
		return nothing, nil
	}
	rel := f.name()
	if rel == "" || len(rel) > maxTxnPath {
		return nothing, nil
	}
	jc := j.cipher()
	if jc == nil || j.kept.Load() >= journalSlots-1 {
		return nothing, nil
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, err
	}
	slot := <-j.free
	r := record{v4: true, fileID: f.key.FileID(), ino: st.Ino, cut: size, coff: size, path: rel}
	r.copyHash = sha256.Sum256(nil)
	hb := getBuf(journalHdr)
	defer putBuf(hb)
	if err := pwriteFull(j.fd, sealRecord(jc, slot, &r, *hb), j.slotOffset(slot)); err != nil {
		j.clearUsed(slot, 0)
		j.free <- slot
		return nil, fmt.Errorf("write journal: %w", err)
	}
	return func() {
		if err := j.clearUsed(slot, 0); err != nil {
			// The record stays; the next mount cuts the file back to
			// where it was, as if the append had not happened.
			j.log.Printf("kmsfs: write to %s: %v: journal slot %d is kept for the next mount", rel, err, slot)
			j.kept.Add(1)
			return
		}
		j.free <- slot
	}, nil
}
