package cryptfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
)

// The version-3 engine (docs/FORMAT.md "Regular files, version 3").
//
// A version-3 file is inline (its whole plaintext sealed after the header
// in the first page) or paged (blocks at page-aligned offsets, their
// entries in the first page and in a metadata page per group, and two
// size records). Every change is an op: a set of writes to the backing
// file made atomic by the journal (writeTxn), bracketed, when it changes
// the size of a paged file, by the two size records: record A gets the
// new size before the op, record B after it, so that at every moment one
// record names the size on disk and, once done, no record names an older
// one.
//
// An op that grows a paged file never both overwrites and appends the
// same block: a partial last block is first extended in an op of its
// own; then the file's backing size is at a block boundary and the
// journal's cut (back to the old end) leaves the file as it was. Blocks
// skipped over become holes in ops of their own, at most holeChunk groups
// each.

// holeChunk is the number of groups one op makes holes in.
const holeChunk = 64

// v3 reports whether the volume's files are version 3.
func (f *File) v3() bool { return f.cfg.V3 != nil }

// StatSize3 translates a version-3 backing file size into the plaintext
// size users see; a damaged tail counts as plaintext, so that reads reach
// it and fail.
func StatSize3(l *blockcipher.Layout3, cipherSize int64) int64 {
	p, _ := l.PlainSize(cipherSize)
	return p
}

// meta3 is the entries (and group token) of one group as an op reads
// and changes them.
type meta3 struct {
	g uint64
	// base is the backing offset of buf[0]: H for group 0 (buf holds the
	// size records, then the entries), the metadata page for the others
	// (buf holds the token, then the entries).
	base int64
	buf  []byte
	// first is the offset in buf of entry 0.
	first int
	// lo, hi bound the bytes of buf the op changed.
	lo, hi int
	// exists is set when buf was read from the file (it lies below its
	// end), hole when the group token was valid then.
	exists, hole bool
}

func (m *meta3) dirty(lo, hi int) {
	if m.lo == m.hi {
		m.lo, m.hi = lo, hi
		return
	}
	m.lo, m.hi = min(m.lo, lo), max(m.hi, hi)
}

// entry returns the entry of the group's i-th block.
func (m *meta3) entry(i int) []byte {
	o := m.first + i*blockcipher.EntrySize
	return m.buf[o : o+blockcipher.EntrySize]
}

// tx3 gathers the writes of one op.
type tx3 struct {
	f      *File
	fd     int
	l      *blockcipher.Layout3
	cph    *blockcipher.Cipher
	c      int64 // backing size before the op
	fresh  bool  // the first page holds only the header: no records yet
	metas  map[uint64]*meta3
	ranges []wrange
	bufs   []*[]byte
}

func (f *File) newTx(fd int, c int64) *tx3 {
	return &tx3{f: f, fd: fd, l: f.cfg.V3, cph: f.key.Cipher(), c: c, fresh: c < blockcipher.PageSize, metas: map[uint64]*meta3{}}
}

// release returns the op's buffers.
func (t *tx3) release() {
	for _, b := range t.bufs {
		clear(*b)
		putBuf(b)
	}
	t.bufs = nil
}

// meta returns group g's entries, read from the file if they lie in it.
func (t *tx3) meta(g uint64) (*meta3, error) {
	if m := t.metas[g]; m != nil {
		return m, nil
	}
	m := &meta3{g: g}
	if g == 0 {
		m.base = int64(t.l.HeaderLen)
		m.buf = make([]byte, blockcipher.PageSize-t.l.HeaderLen)
		m.first = 2 * blockcipher.SizeRecordSize
		m.exists = !t.fresh
	} else {
		m.base = t.l.MetaOff(g)
		m.buf = make([]byte, blockcipher.EntrySize*(1+blockcipher.GroupBlocks))
		m.first = blockcipher.EntrySize
		m.exists = m.base < t.c
	}
	if m.exists {
		if err := preadFull(t.fd, m.buf, m.base); err != nil {
			return nil, fmt.Errorf("reading the entries of group %d: %w", g, err)
		}
		m.hole = g > 0 && t.cph.IsGroupToken(m.buf[:blockcipher.EntrySize], g)
	}
	t.metas[g] = m
	return m, nil
}

// setEntry gives block n the entry e. A block of a hole group turns the
// group into one of entries: the others become hole entries.
func (t *tx3) setEntry(n uint64, e []byte) error {
	g, i := t.l.Group(n)
	m, err := t.meta(g)
	if err != nil {
		return err
	}
	if m.hole {
		clear(m.buf[:blockcipher.EntrySize])
		first := t.l.GroupFirst(g)
		for k := 0; k < t.l.GroupLen(g); k++ {
			h := t.cph.HoleEntry(first + uint64(k))
			copy(m.entry(k), h[:])
		}
		m.hole = false
		m.dirty(0, len(m.buf))
	}
	copy(m.entry(i), e)
	o := m.first + i*blockcipher.EntrySize
	m.dirty(o, o+blockcipher.EntrySize)
	return nil
}

// holeBlock makes block n a hole.
func (t *tx3) holeBlock(n uint64) error {
	h := t.cph.HoleEntry(n)
	return t.setEntry(n, h[:])
}

// holeGroup makes the whole group g >= 1 a hole.
func (t *tx3) holeGroup(g uint64) error {
	m, err := t.meta(g)
	if err != nil {
		return err
	}
	tok := t.cph.GroupToken(g)
	copy(m.buf, tok[:])
	m.hole = true
	m.dirty(0, blockcipher.EntrySize)
	return nil
}

// setRecords puts both size records in the op (for a file that is made
// paged by it).
func (t *tx3) setRecords(size int64) error {
	m, err := t.meta(0)
	if err != nil {
		return err
	}
	for i := range 2 {
		r := t.cph.SizeRecord(uint64(size))
		copy(m.buf[i*blockcipher.SizeRecordSize:], r[:])
	}
	m.dirty(0, 2*blockcipher.SizeRecordSize)
	return nil
}

// putBlocks seals plain as the blocks from first on (every one but the
// last B bytes) and puts their data and entries in the op.
func (t *tx3) putBlocks(first uint64, plain []byte) error {
	if len(plain) == 0 {
		return nil
	}
	B := t.l.BlockSize
	nb := (len(plain) + B - 1) / B
	ctb := getBuf(len(plain) + blockcipher.TagSize)
	t.bufs = append(t.bufs, ctb)
	ct := (*ctb)[:len(plain)]
	ents := make([]byte, nb*blockcipher.EntrySize)
	sealRun3(t.cph, B, ct, ents, plain, first)
	for k := range nb {
		if err := t.setEntry(first+uint64(k), ents[k*blockcipher.EntrySize:(k+1)*blockcipher.EntrySize]); err != nil {
			return err
		}
	}
	// One range per run of blocks that lie together in one group and on
	// one side of the old end of the file.
	for k := 0; k < nb; {
		n := first + uint64(k)
		g, _ := t.l.Group(n)
		off := t.l.DataOff(n)
		before := off < t.c
		z := k + 1
		for z < nb {
			gz, _ := t.l.Group(first + uint64(z))
			if gz != g || (t.l.DataOff(first+uint64(z)) < t.c) != before {
				break
			}
			z++
		}
		t.ranges = append(t.ranges, wrange{off: off, data: ct[k*B : min(z*B, len(ct))]})
		k = z
	}
	return nil
}

// add puts a write of data at off in the op.
func (t *tx3) add(off int64, data []byte) { t.ranges = append(t.ranges, wrange{off: off, data: data}) }

// all returns the op's writes in offset order.
func (t *tx3) all() []wrange {
	out := slices.Clone(t.ranges)
	for _, m := range t.metas {
		if m.lo < m.hi {
			out = append(out, wrange{off: m.base + int64(m.lo), data: m.buf[m.lo:m.hi]})
		}
	}
	slices.SortFunc(out, func(a, b wrange) int {
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
	return out
}

// apply writes the op through the journal (cut, if >= 0, truncates the
// file after it). newSize >= 0 is the plaintext size of the paged file
// after the op: its size records are written around it, unless the op
// itself holds them (a file it makes paged).
func (f *File) apply3(t *tx3, newSize, cut int64) error {
	l := f.cfg.V3
	records := newSize >= 0 && !t.fresh
	if records {
		r := t.cph.SizeRecord(uint64(newSize))
		if err := pwriteFull(t.fd, r[:], l.RecordOff(0)); err != nil {
			return fmt.Errorf("writing a size record: %w", err)
		}
	}
	if err := f.cfg.Journal.writeTxn(f, t.fd, t.all(), cut); err != nil {
		return err
	}
	if records {
		r := t.cph.SizeRecord(uint64(newSize))
		if err := pwriteFull(t.fd, r[:], l.RecordOff(1)); err != nil {
			return fmt.Errorf("writing a size record: %w", err)
		}
	}
	f.okSize.Store(0)
	if newSize >= 0 {
		f.okSize.Store(l.PagedSize(newSize))
	}
	return nil
}

// sealRun3 seals plain as consecutive blocks from first on into ct (same
// length, with TagSize bytes of spare capacity) and their entries into
// ents. Large runs are sealed by several goroutines; the last block of
// each goroutine's share is sealed into a scratch buffer, since sealing
// writes the tag just past the block, where the next share begins.
func sealRun3(c *blockcipher.Cipher, B int, ct, ents, plain []byte, first uint64) {
	nb := (len(plain) + B - 1) / B
	one := func(k int, scratch bool) {
		lo, hi := k*B, min((k+1)*B, len(plain))
		e := ents[k*blockcipher.EntrySize : (k+1)*blockcipher.EntrySize]
		if !scratch {
			c.SealData3(ct[lo:hi:hi+blockcipher.TagSize], plain[lo:hi], first+uint64(k), e)
			return
		}
		sb := getBuf(B + blockcipher.TagSize)
		c.SealData3((*sb)[:hi-lo], plain[lo:hi], first+uint64(k), e)
		copy(ct[lo:hi], (*sb)[:hi-lo])
		putBuf(sb)
	}
	w := 1
	if len(plain) >= pipeMin {
		w = min(2, nb)
	}
	if w == 1 {
		for k := range nb {
			one(k, false)
		}
		return
	}
	var wg sync.WaitGroup
	per := (nb + w - 1) / w
	for lo := 0; lo < nb; lo += per {
		hi := min(lo+per, nb)
		wg.Go(func() {
			for k := lo; k < hi; k++ {
				one(k, k == hi-1 && hi < nb)
			}
		})
	}
	wg.Wait()
}

// errDamaged3 describes a paged file whose size no record names.
type sizeError3 struct {
	size, recorded int64
	block          uint64
}

func (e *sizeError3) Error() string {
	if e.recorded < 0 {
		return fmt.Sprintf("size %d is not authenticated (no valid size record): damaged from block %d", e.size, e.block)
	}
	return fmt.Sprintf("size %d differs from its authenticated size %d (cut or lengthened behind kmsfs): damaged from block %d", e.size, e.recorded, e.block)
}

// consistent3 checks a paged file's plaintext size p (backing size c)
// against its size records. It returns the first block that must not be
// read (math.MaxUint64 when the file is consistent) and why.
func (f *File) consistent3(fd int, p, c int64) (uint64, error) {
	if f.okSize.Load() == c {
		return math.MaxUint64, nil
	}
	return f.consistentWith(fd, f.key.Cipher(), p, c)
}

// consistentWith is consistent3 with the file's cipher c3.
func (f *File) consistentWith(fd int, c3 *blockcipher.Cipher, p, c int64) (uint64, error) {
	l := f.cfg.V3
	var rec [2 * blockcipher.SizeRecordSize]byte
	if err := preadFull(fd, rec[:], l.RecordOff(0)); err != nil {
		return 0, fmt.Errorf("reading the size records: %w", err)
	}
	R := int64(-1)
	for i := range 2 {
		s, ok := c3.CheckSizeRecord(rec[i*blockcipher.SizeRecordSize : (i+1)*blockcipher.SizeRecordSize])
		if !ok || s > math.MaxInt64 {
			continue
		}
		if int64(s) == p {
			f.okSize.Store(c)
			return math.MaxUint64, nil
		}
		R = max(R, int64(s))
	}
	// The last block both sizes share is the first one that cannot be
	// trusted: a cut at a block boundary leaves it last, and blocks
	// appended follow it.
	bad := uint64(0)
	if m := min(p, max(R, 0)); m > 0 {
		bad = uint64((m - 1) / int64(l.BlockSize))
	}
	return bad, fmt.Errorf("%w: %w", ErrCorrupt, &sizeError3{size: p, recorded: R, block: bad})
}

// readInline3 returns the plaintext of an inline file of backing size c
// in a buffer from getBuf.
func (f *File) readInline3(fd int, c int64) (*[]byte, []byte, error) {
	l := f.cfg.V3
	if c == int64(l.HeaderLen) {
		return nil, nil, nil
	}
	sb := getBuf(int(c) - l.HeaderLen)
	defer putBuf(sb)
	if err := preadFull(fd, *sb, int64(l.HeaderLen)); err != nil {
		return nil, nil, fmt.Errorf("reading inline content: %w", err)
	}
	pb := getBuf(blockcipher.PageSize)
	plain, err := f.key.Cipher().OpenInline((*pb)[:0], *sb)
	if err != nil {
		putBuf(pb)
		return nil, nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return pb, plain, nil
}

// readBlocks3 decrypts blocks first..last of a paged file of plaintext
// size p into out (from offset 0; it needs TagSize bytes of spare
// capacity past the last block's plaintext).
func (f *File) readBlocks3(fd int, first, last uint64, p int64, out []byte) error {
	l := f.cfg.V3
	c3 := f.key.Cipher()
	B := int64(l.BlockSize)
	endBlock := uint64((p - 1) / B)
	t := &tx3{f: f, fd: fd, l: l, cph: c3, c: math.MaxInt64, metas: map[uint64]*meta3{}}
	for n := first; n <= last; {
		g, _ := l.Group(n)
		z := min(last, l.GroupFirst(g)+uint64(l.GroupLen(g))-1)
		if first == last {
			// A small random read needs the block and its entry, which
			// lie apart: ask for the block before reading the entry, so
			// that on a cold cache the two disk reads overlap.
			unix.Fadvise(fd, l.DataOff(n), B, unix.FADV_WILLNEED)
		}
		m, err := t.meta(g)
		if err != nil {
			return err
		}
		delete(t.metas, g)
		lastLen := B
		if z == endBlock {
			lastLen = p - int64(z)*B
		}
		k := int64(n-first) * B
		region := out[k : k+int64(z-n)*B+lastLen]
		if m.hole {
			clear(region)
			n = z + 1
			continue
		}
		if err := preadFull(fd, region, l.DataOff(n)); err != nil {
			return fmt.Errorf("reading blocks %d-%d: %w", n, z, err)
		}
		_, i0 := l.Group(n)
		for b := n; b <= z; b++ {
			e := m.entry(i0 + int(b-n))
			kk := int64(b-first) * B
			mlen := B
			if b == endBlock {
				mlen = lastLen
			}
			switch {
			case blockcipher.ZeroEntry(e):
				clear(out[kk : kk+mlen])
				return fmt.Errorf("%w: block %d has no entry (zeroed or never written)", ErrCorrupt, b)
			case maybeHole(out[kk:kk+mlen]) && c3.IsHoleEntry(e, b):
				clear(out[kk : kk+mlen])
			default:
				if err := c3.OpenData3(out[kk:], int(mlen), b, e); err != nil {
					// Stored bytes that are not zeros, of a hole (a file
					// system that cannot punch): rare, so checked last.
					if !c3.IsHoleEntry(e, b) {
						return fmt.Errorf("%w: %w", ErrCorrupt, err)
					}
					clear(out[kk : kk+mlen])
				}
			}
		}
		n = z + 1
	}
	return nil
}

// readLocked3 is readLocked for version 3.
func (f *File) readLocked3(fd int, direct *directFd, dest []byte, off int64) (int, error) {
	p, c, err := f.sizes(fd)
	if err != nil && !errors.Is(err, blockcipher.ErrBadCipherSize) {
		return 0, err
	}
	damaged := err
	if off >= p || len(dest) == 0 {
		if damaged != nil && p == 0 {
			return 0, fmt.Errorf("%w: %w", ErrCorrupt, damaged)
		}
		return 0, nil
	}
	if f.key == nil {
		return 0, fmt.Errorf("%w: no header", ErrCorrupt)
	}
	l := f.cfg.V3
	end := min(off+int64(len(dest)), p)
	if l.IsInline(c) {
		if damaged != nil {
			return 0, fmt.Errorf("%w: %w", ErrCorrupt, damaged)
		}
		pb, plain, err := f.readInline3(fd, c)
		if err != nil {
			return 0, err
		}
		n := copy(dest, plain[off:end])
		clear(plain)
		putBuf(pb)
		return n, nil
	}
	B := int64(l.BlockSize)
	first, last := uint64(off/B), uint64((end-1)/B)
	limit := uint64(math.MaxUint64)
	var whyLimit error
	if damaged != nil {
		// A size no file has (docs/FORMAT.md): every read fails; the
		// damage is from the block the size ends in.
		limit, whyLimit = 0, fmt.Errorf("%w: %w (damaged from block %d)", ErrCorrupt, damaged, uint64(max(p-1, 0)/B))
	} else if limit, whyLimit = f.consistent3(fd, p, c); limit != math.MaxUint64 && whyLimit != nil && !errors.Is(whyLimit, ErrCorrupt) {
		return 0, whyLimit
	}
	if last >= limit {
		return 0, whyLimit
	}
	need := int(last-first+1) * int(B)
	pb := getBuf(need + blockcipher.TagSize)
	defer putBuf(pb)
	out := *pb
	err = errDirect
	if need >= directMin && direct != nil {
		if dfd := direct.get(fd); dfd >= 0 {
			if err = f.readBlocks3Direct(fd, dfd, first, last, p, out); err == errDirect {
				direct.disable()
			}
		}
	}
	if err == errDirect {
		err = f.readBlocks3(fd, first, last, p, out)
	}
	if err != nil {
		return 0, err
	}
	skip := off - int64(first)*B
	n := copy(dest, out[skip:skip+(end-off)])
	clear(out[:need])
	return n, nil
}

// readBlock3 returns the plaintext of block n of a paged file of size p
// in buf (which has room for a block and a tag).
func (f *File) readBlock3(fd int, n uint64, p int64, buf []byte) ([]byte, error) {
	B := int64(f.cfg.V3.BlockSize)
	ln := min(B, p-int64(n)*B)
	if ln <= 0 {
		return buf[:0], nil
	}
	if err := f.readBlocks3(fd, n, n, p, buf); err != nil {
		return nil, err
	}
	return buf[:ln], nil
}

// checkWritable3 refuses to change a paged file that is not consistent:
// its damage must be seen, not written over.
func (f *File) checkWritable3(fd int, p, c int64, err error) error {
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if f.cfg.V3.IsInline(c) || c == 0 {
		return nil
	}
	if _, err := f.consistent3(fd, p, c); err != nil {
		return err
	}
	return nil
}

// writeLocked3 is writeLocked for version 3.
func (f *File) writeLocked3(ctx context.Context, fd int, data []byte, off int64) error {
	f.seenOK = false
	if len(data) == 0 {
		return nil
	}
	p, c, err := f.sizes(fd)
	if err := f.checkWritable3(fd, p, c, err); err != nil {
		return err
	}
	if err := f.ensureHeaderLocked(ctx, fd, c); err != nil {
		return err
	}
	l := f.cfg.V3
	c = max(c, int64(l.HeaderLen))
	end := off + int64(len(data))
	if l.IsInline(c) {
		if max(end, p) <= l.InlineMax() {
			return f.rewriteInline3(fd, c, p, func(b []byte) { copy(b[off:], data) }, max(end, p))
		}
		if p > 0 {
			if c, err = f.makePaged3(fd, c, p); err != nil {
				return err
			}
		}
	}
	return f.writePaged3(fd, c, p, data, off)
}

// rewriteInline3 rewrites an inline file of backing size c and plaintext
// size p with size newSize, its plaintext changed by edit.
func (f *File) rewriteInline3(fd int, c, p int64, edit func([]byte), newSize int64) error {
	l := f.cfg.V3
	pb := getBuf(blockcipher.PageSize)
	defer putBuf(pb)
	plain := (*pb)[:newSize]
	clear(plain)
	if p > 0 {
		ob, old, err := f.readInline3(fd, c)
		if err != nil {
			return err
		}
		copy(plain, old[:min(p, newSize)])
		clear(old)
		putBuf(ob)
	}
	edit(plain)
	defer clear(plain)
	if newSize == 0 {
		f.okSize.Store(0)
		return syscall.Ftruncate(fd, int64(l.HeaderLen))
	}
	sb := getBuf(0)
	defer putBuf(sb)
	st := f.key.Cipher().SealInline((*sb)[:0], plain)
	cut := int64(-1)
	if newSize < p {
		cut = l.InlineSize(newSize)
	}
	return f.cfg.Journal.writeTxn(f, fd, []wrange{{off: int64(l.HeaderLen), data: st}}, cut)
}

// makePaged3 rewrites an inline file of p > 0 bytes as a paged one and
// returns its new backing size: one op over the first page's tail and
// block 0, copied whole into the journal (it overwrites the inline bytes).
func (f *File) makePaged3(fd int, c, p int64) (int64, error) {
	l := f.cfg.V3
	ob, old, err := f.readInline3(fd, c)
	if err != nil {
		return 0, err
	}
	defer putBuf(ob)
	defer clear(old)
	c3 := f.key.Cipher()
	img := make([]byte, blockcipher.PageSize-l.HeaderLen+int(p)+blockcipher.TagSize)
	for i := range 2 {
		r := c3.SizeRecord(uint64(p))
		copy(img[i*blockcipher.SizeRecordSize:], r[:])
	}
	e := img[2*blockcipher.SizeRecordSize : 2*blockcipher.SizeRecordSize+blockcipher.EntrySize]
	data := img[blockcipher.PageSize-l.HeaderLen:]
	c3.SealData3(data[:p], old, 0, e)
	img = img[:len(img)-blockcipher.TagSize]
	if err := f.cfg.Journal.writeTxn(f, fd, []wrange{{off: int64(l.HeaderLen), data: img}}, -1); err != nil {
		return 0, err
	}
	nc := l.PagedSize(p)
	f.okSize.Store(nc)
	return nc, nil
}

// writePaged3 writes data at off of a file that is paged, or empty (only
// a header, c = H) and to become paged; p is its plaintext size.
func (f *File) writePaged3(fd int, c, p int64, data []byte, off int64) error {
	l := f.cfg.V3
	B := int64(l.BlockSize)
	end := off + int64(len(data))
	// A partial last block the write goes beyond is extended first.
	if end > p && p%B != 0 {
		L := uint64(p / B)
		top := int64(L+1) * B
		newLen := min(B, end-int64(L)*B)
		edit := func(b []byte) {
			if off < top {
				lo := max(off, int64(L)*B)
				copy(b[lo-int64(L)*B:], data[lo-off:min(end, top)-off])
			}
		}
		var err error
		if c, err = f.extendLast3(fd, c, p, newLen, edit); err != nil {
			return err
		}
		p = int64(L)*B + newLen
		// The part of the write before block L overwrites blocks that
		// exist: an op of its own.
		if lo := int64(L) * B; off < lo {
			if err := f.writePaged3(fd, c, p, data[:lo-off], off); err != nil {
				return err
			}
		}
		if end <= top {
			return nil
		}
		if off < top {
			data, off = data[top-off:], top
		}
	}
	// Blocks skipped over become holes.
	if gap := off / B * B; gap > p {
		var err error
		if c, err = f.growHoles3(fd, c, p, gap); err != nil {
			return err
		}
		p = gap
	}
	if off == p && p%B == 0 && c > blockcipher.PageSize && len(data) >= pipeMin {
		return f.appendPipelined3(fd, c, p, data)
	}
	first, last := uint64(off/B), uint64((end-1)/B)
	start := int64(first) * B
	newP := max(p, end)
	stop := min(int64(last+1)*B, newP)
	t := f.newTx(fd, c)
	defer t.release()
	plain := data
	if off != start || (end < stop && end < p) {
		pb := getBuf(int(stop-start) + blockcipher.TagSize)
		t.bufs = append(t.bufs, pb)
		plain = (*pb)[:stop-start]
		clear(plain)
		tmp := getBuf(int(B) + blockcipher.TagSize)
		defer putBuf(tmp)
		if off > start && start < p {
			old, err := f.readBlock3(fd, first, p, *tmp)
			if err != nil {
				return err
			}
			copy(plain, old)
			clear(old)
		}
		if lastStart := int64(last) * B; end < stop && lastStart < p && (last != first || off == start) {
			old, err := f.readBlock3(fd, last, p, *tmp)
			if err != nil {
				return err
			}
			copy(plain[lastStart-start:], old)
			clear(old)
		}
		copy(plain[off-start:], data)
	}
	if t.fresh {
		if err := t.setRecords(newP); err != nil {
			return err
		}
	}
	if err := t.putBlocks(first, plain); err != nil {
		return err
	}
	newSize := int64(-1)
	if newP != p {
		newSize = newP
	}
	if err := f.apply3(t, newSize, -1); err != nil {
		return err
	}
	if newSize < 0 {
		f.okSize.Store(c)
	}
	return nil
}

// extendLast3 rewrites the partial last block of a paged file of size p
// with newLen bytes: its old bytes, zeros, then edit. It returns the new
// backing size.
func (f *File) extendLast3(fd int, c, p, newLen int64, edit func([]byte)) (int64, error) {
	l := f.cfg.V3
	B := int64(l.BlockSize)
	L := uint64(p / B)
	tmp := getBuf(int(B) + blockcipher.TagSize)
	defer putBuf(tmp)
	old, err := f.readBlock3(fd, L, p, *tmp)
	if err != nil {
		return 0, err
	}
	buf := (*tmp)[:newLen]
	clear(buf[len(old):])
	edit(buf)
	t := f.newTx(fd, c)
	defer t.release()
	if err := t.putBlocks(L, buf); err != nil {
		return 0, err
	}
	clear(buf)
	np := int64(L)*B + newLen
	if err := f.apply3(t, np, -1); err != nil {
		return 0, err
	}
	return l.PagedSize(np), nil
}

// growHoles3 grows a file that is paged (or empty, c = H) from p, a
// multiple of the block size, to s with holes, in ops of at most
// holeChunk groups. It returns the new backing size.
func (f *File) growHoles3(fd int, c, p, s int64) (int64, error) {
	l := f.cfg.V3
	B := int64(l.BlockSize)
	for p < s {
		firstB := uint64(p / B)
		g, _ := l.Group(firstB)
		lastG := g + holeChunk
		chunkEnd := min(s, int64(l.GroupFirst(lastG))*B)
		lastB := uint64((chunkEnd - 1) / B)
		t := f.newTx(fd, c)
		if t.fresh {
			if err := t.setRecords(chunkEnd); err != nil {
				return 0, err
			}
		}
		for n := firstB; n <= lastB; {
			g, i := l.Group(n)
			if g > 0 && i == 0 && l.MetaOff(g) >= c {
				if err := t.holeGroup(g); err != nil {
					return 0, err
				}
				n = l.GroupFirst(g + 1)
				continue
			}
			if err := t.holeBlock(n); err != nil {
				return 0, err
			}
			n++
		}
		// The file ends with the last block's stored bytes (a hole).
		nc := l.PagedSize(chunkEnd)
		t.add(nc-1, []byte{0})
		err := f.apply3(t, chunkEnd, -1)
		t.release()
		if err != nil {
			return 0, err
		}
		p, c = chunkEnd, nc
	}
	f.holes = holesMaybe
	return c, nil
}

// truncateLocked3 is truncateLocked for version 3.
func (f *File) truncateLocked3(ctx context.Context, fd int, size int64) error {
	f.seenOK = false
	p, c, err := f.sizes(fd)
	if err != nil && !errors.Is(err, blockcipher.ErrBadCipherSize) {
		return err
	}
	bad := err != nil
	if c == 0 && size == 0 {
		return nil
	}
	if err := f.ensureHeaderLocked(ctx, fd, c); err != nil {
		return err
	}
	l := f.cfg.V3
	c = max(c, int64(l.HeaderLen))
	if size == 0 {
		f.okSize.Store(0)
		return syscall.Ftruncate(fd, int64(l.HeaderLen))
	}
	if bad {
		// A damaged tail: only a truncation to a size whose blocks are
		// all there (and whose size then needs records) repairs it.
		return fmt.Errorf("%w: %w (truncate it to 0 to start over)", ErrCorrupt, err)
	}
	if !l.IsInline(c) {
		if _, err := f.consistent3(fd, p, c); err != nil && size > 0 {
			return err
		}
	}
	if size == p {
		return nil
	}
	if l.IsInline(c) {
		if size <= l.InlineMax() {
			return f.rewriteInline3(fd, c, p, func([]byte) {}, size)
		}
		if p > 0 {
			if c, err = f.makePaged3(fd, c, p); err != nil {
				return err
			}
		}
	}
	B := int64(l.BlockSize)
	if size > p {
		if p%B != 0 {
			L := p / B
			newLen := min(B, size-L*B)
			if c, err = f.extendLast3(fd, c, p, newLen, func([]byte) {}); err != nil {
				return err
			}
			p = L*B + newLen
		}
		if size > p {
			_, err = f.growHoles3(fd, c, p, size)
		}
		return err
	}
	// Shrinking a paged file: a new partial last block is re-encrypted
	// short, unless it is a hole.
	t := f.newTx(fd, c)
	defer t.release()
	if r := size % B; r != 0 {
		L := uint64(size / B)
		tmp := getBuf(int(B) + blockcipher.TagSize)
		defer putBuf(tmp)
		g, i := l.Group(L)
		m, err := t.meta(g)
		if err != nil {
			return err
		}
		if !m.hole && !f.key.Cipher().IsHoleEntry(m.entry(i), L) {
			old, err := f.readBlock3(fd, L, p, *tmp)
			if err != nil {
				return err
			}
			if err := t.putBlocks(L, old[:r]); err != nil {
				return err
			}
			clear(old)
		}
	}
	return f.apply3(t, size, l.PagedSize(size))
}

// zero3 makes the plaintext [off, end) of a file of size p (end <= p)
// read as zeros: whole blocks of a paged file become holes, the rest is
// rewritten with zeros.
func (f *File) zero3(fd int, off, end int64) error {
	p, c, err := f.sizes(fd)
	if err := f.checkWritable3(fd, p, c, err); err != nil {
		return err
	}
	end = min(end, p)
	if off >= end || f.key == nil {
		return nil
	}
	l := f.cfg.V3
	if l.IsInline(c) {
		return f.rewriteInline3(fd, c, p, func(b []byte) { clear(b[off:end]) }, p)
	}
	B := int64(l.BlockSize)
	// Whole blocks: [hl, hh). The partial block at each end is rewritten.
	hl, hh := (off+B-1)/B, end/B
	if end == p {
		hh = (end + B - 1) / B
	}
	zeroPart := func(lo, hi int64) error {
		if lo >= hi {
			return nil
		}
		z := make([]byte, hi-lo)
		return f.writePaged3(fd, c, p, z, lo)
	}
	if hl >= hh {
		return zeroPart(off, end)
	}
	if err := zeroPart(off, hl*B); err != nil {
		return err
	}
	if err := zeroPart(min(hh*B, end), end); err != nil {
		return err
	}
	// Whole blocks, in ops of at most holeChunk groups.
	for n := uint64(hl); n < uint64(hh); {
		t := f.newTx(fd, c)
		g0, _ := l.Group(n)
		for n < uint64(hh) {
			g, i := l.Group(n)
			if g >= g0+holeChunk {
				break
			}
			if g > 0 && i == 0 && l.GroupFirst(g)+blockcipher.GroupBlocks <= uint64(hh) {
				if err := t.holeGroup(g); err != nil {
					t.release()
					return err
				}
				n = l.GroupFirst(g + 1)
				continue
			}
			if err := t.holeBlock(n); err != nil {
				t.release()
				return err
			}
			n++
		}
		err := f.apply3(t, -1, -1)
		t.release()
		if err != nil {
			return err
		}
		f.okSize.Store(c)
	}
	f.holes = holesMaybe
	f.punch3(fd, uint64(hl), uint64(hh), p)
	return nil
}

// punch3 punches the stored bytes of blocks lo..hi-1 (now holes) out of
// the backing file, run by run within groups; where the file system
// cannot, they stay as they are (a hole's stored bytes are never read).
func (f *File) punch3(fd int, lo, hi uint64, p int64) {
	l := f.cfg.V3
	B := int64(l.BlockSize)
	for n := lo; n < hi; {
		g, _ := l.Group(n)
		z := min(hi, l.GroupFirst(g)+uint64(l.GroupLen(g)))
		from := l.DataOff(n)
		to := l.DataOff(z-1) + min(B, p-int64(z-1)*B)
		if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, from, to-from); err != nil {
			return
		}
		n = z
	}
}

// seek3 is Seek for version 3: holes are the blocks whose entries (or
// group tokens) say so.
func (f *File) seek3(fd int, off int64, whence int) (int64, error) {
	p, c, err := f.sizes(fd)
	if err != nil && !errors.Is(err, blockcipher.ErrBadCipherSize) {
		return 0, err
	}
	if off >= p {
		return 0, syscall.ENXIO
	}
	l := f.cfg.V3
	if l.IsInline(c) || f.key == nil {
		if whence == unix.SEEK_DATA {
			return off, nil
		}
		return p, nil
	}
	B := int64(l.BlockSize)
	last := uint64((p - 1) / B)
	c3 := f.key.Cipher()
	t := &tx3{f: f, fd: fd, l: l, cph: c3, c: c, metas: map[uint64]*meta3{}}
	for n := uint64(off / B); n <= last; {
		g, i := l.Group(n)
		m, err := t.meta(g)
		if err != nil {
			return 0, err
		}
		delete(t.metas, g)
		z := min(last, l.GroupFirst(g)+uint64(l.GroupLen(g))-1)
		for b := n; b <= z; b, i = b+1, i+1 {
			hole := m.hole || c3.IsHoleEntry(m.entry(i), b)
			if hole == (whence == unix.SEEK_HOLE) {
				return max(off, int64(b)*B), nil
			}
		}
		n = z + 1
	}
	if whence == unix.SEEK_DATA {
		return 0, syscall.ENXIO
	}
	return p, nil
}

// reserve3 is fallocate's reservation for version 3: the stored bytes of
// [off, end) get disk space.
func (f *File) reserve3(fd int, off, end int64) error {
	p, c, err := f.sizes(fd)
	if err != nil {
		return err
	}
	l := f.cfg.V3
	end = min(end, p)
	if l.IsInline(c) || off >= end {
		return nil
	}
	B := int64(l.BlockSize)
	from := l.DataOff(uint64(off / B))
	to := l.PagedSize(end)
	err = unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, from, to-from)
	if err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
		return err
	}
	return nil
}

// readBlocks3Direct is readBlocks3 through dfd, the O_DIRECT descriptor
// of the backing file (see direct.go): the pages from block first to the
// end of block last, metadata pages between them included, in one read
// that bypasses the page cache. It returns errDirect, with nothing read,
// if the backing file system refuses the read.
func (f *File) readBlocks3Direct(fd, dfd int, first, last uint64, p int64, out []byte) error {
	l := f.cfg.V3
	c3 := f.key.Cipher()
	B := int64(l.BlockSize)
	endBlock := uint64((p - 1) / B)
	blockLen := func(b uint64) int64 {
		if b == endBlock {
			return p - int64(b)*B
		}
		return B
	}
	a0 := l.DataOff(first)
	end := l.DataOff(last) + blockLen(last)
	a1 := (end + directAlign - 1) &^ (directAlign - 1)
	directSlots <- struct{}{}
	defer func() { <-directSlots }()
	// A page more than read: decrypting the last block puts its tag, for
	// a moment, after it.
	pb := getDirect(int(a1-a0) + directAlign)
	defer directPool.Put(pb)
	buf := &[]byte{}
	*buf = (*pb)[:a1-a0]
	got := 0
	for got < len(*buf) {
		m, err := syscall.Pread(dfd, (*buf)[got:], a0+int64(got))
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EINVAL && got == 0 {
			return errDirect
		}
		if err != nil {
			return err
		}
		got += m
		if m == 0 || got%directAlign != 0 {
			break // end of file
		}
	}
	if int64(got) < end-a0 {
		return fmt.Errorf("reading blocks %d-%d: %w", first, last, io.ErrUnexpectedEOF)
	}
	t := &tx3{f: f, fd: fd, l: l, cph: c3, c: math.MaxInt64, metas: map[uint64]*meta3{}}
	for n := first; n <= last; {
		g, i0 := l.Group(n)
		z := min(last, l.GroupFirst(g)+uint64(l.GroupLen(g))-1)
		var m *meta3
		if g > 0 && l.MetaOff(g) >= a0 {
			// The metadata page came with the blocks.
			o := l.MetaOff(g) - a0
			m = &meta3{g: g, buf: (*buf)[o : o+blockcipher.EntrySize*(1+blockcipher.GroupBlocks)], first: blockcipher.EntrySize}
			m.hole = c3.IsGroupToken(m.buf[:blockcipher.EntrySize], g)
		} else {
			var err error
			if m, err = t.meta(g); err != nil {
				return err
			}
			delete(t.metas, g)
		}
		for b := n; b <= z; b++ {
			k := int64(b-first) * B
			mlen := blockLen(b)
			e := m.entry(i0 + int(b-n))
			switch {
			case m.hole:
				clear(out[k : k+mlen])
			case blockcipher.ZeroEntry(e):
				return fmt.Errorf("%w: block %d has no entry (zeroed or never written)", ErrCorrupt, b)
			case maybeHole((*buf)[l.DataOff(b)-a0:][:mlen]) && c3.IsHoleEntry(e, b):
				clear(out[k : k+mlen])
			default:
				// Straight from the direct buffer (the tag goes, for a
				// moment, over the bytes after the block there).
				src := l.DataOff(b) - a0
				if err := c3.OpenData3To(out[k:k+mlen], (*buf)[src:], int(mlen), b, e); err != nil {
					if !c3.IsHoleEntry(e, b) {
						return fmt.Errorf("%w: %w", ErrCorrupt, err)
					}
					clear(out[k : k+mlen])
				}
			}
		}
		n = z + 1
	}
	return nil
}

// appendPipelined3 appends data to a paged file of size p (a multiple of
// the block size, backing size c), sealing it in steps on several cores
// and writing each step's blocks as soon as they are sealed, so that the
// writes overlap the encryption of what follows (a sequential writer
// sends one request at a time). Instead of copying anything, the journal
// holds a record that cuts the file back to c: until the record is
// cleared a crash undoes the whole append, and the entries it writes into
// pages that exist (of blocks past the old end) are then unused. Record A
// names the new size first; record B once the journal record is cleared.
func (f *File) appendPipelined3(fd int, c, p int64, data []byte) error {
	l := f.cfg.V3
	c3 := f.key.Cipher()
	B := l.BlockSize
	first := uint64(p / int64(B))
	newP := p + int64(len(data))
	nb := (len(data) + B - 1) / B
	ra := c3.SizeRecord(uint64(newP))
	if err := pwriteFull(fd, ra[:], l.RecordOff(0)); err != nil {
		return fmt.Errorf("writing a size record: %w", err)
	}
	end, err := f.cfg.Journal.beginCut(f, fd, c)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		// Back to where the append started, and its record cleared.
		if terr := cutBack(fd, c); terr != nil {
			err = errors.Join(err, fmt.Errorf("cutting back a failed append: %w", terr))
		}
		end()
		return err
	}
	ctb := getBuf(len(data) + blockcipher.TagSize)
	defer putBuf(ctb)
	ct := (*ctb)[:len(data)]
	ents := make([]byte, nb*blockcipher.EntrySize)
	sb := max(1, pipeStep/B) // blocks per step
	nsteps := (nb + sb - 1) / sb
	done := make([]chan struct{}, nsteps)
	for s := range nsteps {
		done[s] = make(chan struct{})
		k0, k1 := s*sb, min((s+1)*sb, nb)
		go func() {
			defer close(done[s])
			for k := k0; k < k1; k++ {
				lo, hi := k*B, min((k+1)*B, len(data))
				e := ents[k*blockcipher.EntrySize : (k+1)*blockcipher.EntrySize]
				if k == k1-1 && k1 < nb {
					// The tag would land on the next step's first block.
					tmp := getBuf(B + blockcipher.TagSize)
					c3.SealData3((*tmp)[:hi-lo], data[lo:hi], first+uint64(k), e)
					copy(ct[lo:hi], (*tmp)[:hi-lo])
					putBuf(tmp)
					continue
				}
				c3.SealData3(ct[lo:hi:hi+blockcipher.TagSize], data[lo:hi], first+uint64(k), e)
			}
		}()
	}
	var werr error
	for s := range nsteps {
		<-done[s]
		if werr != nil {
			continue
		}
		k0, k1 := s*sb, min((s+1)*sb, nb)
		for k := k0; k < k1 && werr == nil; {
			g, i := l.Group(first + uint64(k))
			z := min(k1, k+l.GroupLen(g)-i) // blocks of this group in the step
			werr = pwriteFull(fd, ct[k*B:min(z*B, len(ct))], l.DataOff(first+uint64(k)))
			k = z
		}
	}
	if werr != nil {
		return fail(werr)
	}
	t := f.newTx(fd, c)
	defer t.release()
	for k := range nb {
		if err := t.setEntry(first+uint64(k), ents[k*blockcipher.EntrySize:(k+1)*blockcipher.EntrySize]); err != nil {
			return fail(err)
		}
	}
	for _, r := range t.all() {
		if err := pwriteFull(fd, r.data, r.off); err != nil {
			return fail(err)
		}
	}
	end()
	rb := c3.SizeRecord(uint64(newP))
	if err := pwriteFull(fd, rb[:], l.RecordOff(1)); err != nil {
		return fmt.Errorf("writing a size record: %w", err)
	}
	f.okSize.Store(l.PagedSize(newP))
	return nil
}

// zeroPage is compared against by maybeHole.
var zeroPage [blockcipher.PageSize]byte

// maybeHole reports whether stored bytes are all zeros, as a hole's are
// (punched, or never written): only then is a block's entry first
// checked as a hole entry. A data block's ciphertext is never all zeros,
// so a read of data pays no hole check.
func maybeHole(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
