package cryptfile

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/fs/names"
	"github.com/kmsfs/kmsfs/header"
)

// Re-encryption (docs/FORMAT.md "Re-encryption copies") replaces a
// file's data key and every block's ciphertext, keeping its inode, so
// that open handles and hard links carry on. It is crash-safe through a
// whole copy in the backing root:
//
//  1. the file is re-encrypted into ReencryptPrefix + "tmp" and synced;
//  2. the copy is renamed to ReencryptPrefix + "<ino>.<old ID>.<new ID>"
//     (the commit point) and the directory synced;
//  3. the copy's blocks, then its header, are written over the file in
//     place, and the file synced;
//  4. the copy is removed.
//
// A crash before 2 leaves the file as it was (the tmp copy is removed at
// the next mount); after 2, the next read-write mount finishes 3 and 4
// (ReplayReencrypt), naming the file by inode and header file ID.

// ReencryptPrefix starts the names of re-encryption copies in the backing
// root; they are kmsfs's own files, hidden from the mount.
const ReencryptPrefix = "kmsfs.reencrypt."

const reencryptTmp = ReencryptPrefix + "tmp"

// reencryptCommitted, if set (by tests), is called at the commit point;
// an error stops Reencrypt there, as a crash would.
var reencryptCommitted func() error

// copyChunk is how much Reencrypt reads, re-encrypts and writes at once,
// in whole blocks.
const copyChunk = 1 << 20

// Reencrypt re-encrypts the file under a new data key from the Keyer,
// through a crash-safe copy in dir (see above), and returns the file's
// plaintext size. fd is a read-write descriptor of the backing file,
// which Reencrypt does not close. Reads and writes of the file wait
// until it is done; open handles go on with the new key. The file's
// modification time is kept: its content did not change.
func (f *File) Reencrypt(ctx context.Context, fd int, dir *backing.Dir) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	if st.Size == 0 {
		return 0, nil // no header, no key: nothing to re-encrypt
	}
	l := f.cfg.Layout
	var plain int64
	var err error
	if f.v3() {
		plain, err = f.cfg.V3.PlainSize(st.Size)
	} else {
		plain, err = l.PlainSize(st.Size)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	old := f.key
	if old == nil || f.replacedLocked(fd) {
		kctx, cancel := keyContext(ctx)
		k, err := f.cfg.Keys.Load(kctx, fd, f.name)
		cancel()
		if err != nil {
			return 0, err
		}
		if k == nil {
			return 0, nil
		}
		defer k.Close()
		old = k
	}
	kctx, cancel := keyContext(ctx)
	hdr, nk, err := f.cfg.Keys.New(kctx)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("new data key: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			nk.Close()
		}
	}()

	// 1. The copy.
	unix.Unlinkat(dir.Fd(), reencryptTmp, 0)
	tfd, err := unix.Openat(dir.Fd(), reencryptTmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("creating the re-encryption copy: %w", err)
	}
	defer unix.Close(tfd)
	committed := ""
	defer func() {
		if committed == "" {
			unix.Unlinkat(dir.Fd(), reencryptTmp, 0)
		}
	}()
	if err := pwriteFull(tfd, hdr, 0); err != nil {
		return 0, fmt.Errorf("writing the re-encryption copy: %w", err)
	}
	if f.v3() {
		err = f.reencrypt3(ctx, fd, tfd, st.Size, plain, old.Cipher(), nk.Cipher())
	} else {
		err = reencryptBlocks(ctx, l, fd, tfd, st.Size, old.Cipher(), nk.Cipher())
	}
	if err != nil {
		return 0, err
	}
	if err := unix.Ftruncate(tfd, st.Size); err != nil {
		return 0, fmt.Errorf("sizing the re-encryption copy: %w", err)
	}
	if err := unix.Fsync(tfd); err != nil {
		return 0, fmt.Errorf("syncing the re-encryption copy: %w", err)
	}

	// 2. The commit point.
	oldID, newID := old.FileID(), nk.FileID()
	name := reencryptName(st.Ino, oldID, newID)
	if err := unix.Renameat(dir.Fd(), reencryptTmp, dir.Fd(), name); err != nil {
		return 0, fmt.Errorf("committing the re-encryption copy: %w", err)
	}
	committed = name
	if err := syncDir(dir); err != nil {
		return 0, fmt.Errorf("committing the re-encryption copy: syncing the backing directory: %w", err)
	}

	// 3 and 4. From here the change is made, now or at the next mount:
	// until it is, the file must not be read or written (it may hold
	// blocks of both keys, and a write would be undone by the replay).
	if reencryptCommitted != nil {
		if err := reencryptCommitted(); err != nil {
			f.breakLocked(err)
			return 0, err
		}
	}
	err = finishReencrypt(tfd, fd, st.Size, dir, name)
	for try := 1; err != nil && try < 3; try++ { // it is idempotent
		err = finishReencrypt(tfd, fd, st.Size, dir, name)
	}
	if err != nil {
		err = fmt.Errorf("re-encryption stopped after its commit point: %w (the next read-write mount finishes it; until then the file answers EIO)", err)
		f.breakLocked(err)
		return 0, err
	}
	// Keep the times the mount shows: re-encryption changes no content.
	unix.UtimesNanoAt(unix.AT_FDCWD, backing.ProcPath(fd), []unix.Timespec{st.Atim, st.Mtim}, 0)
	if f.key != nil {
		f.key.Close()
		f.key = nk
		keep = true
	}
	f.seenOK = false
	f.holes = holesMaybe
	return plain, nil
}

// breakLocked makes every later read and write of the file fail with an
// error wrapping EIO and cause.
func (f *File) breakLocked(cause error) {
	f.broken = fmt.Errorf("%w: %w", syscall.EIO, cause)
	f.seenOK = false
	f.holes = holesMaybe
}

// reencryptBlocks decrypts the blocks of the backing file fd (size c)
// with from and writes them encrypted with to into tfd at the same
// offsets. Holes stay holes.
func reencryptBlocks(ctx context.Context, l blockcipher.Layout, fd, tfd int, c int64, from, to *blockcipher.Cipher) error {
	cb := int64(l.CipherBlockSize())
	per := max(1, copyChunk/l.BlockSize)
	cbuf := make([]byte, int64(per)*cb)
	pbuf := make([]byte, 0, per*l.BlockSize)
	out := make([]byte, 0, len(cbuf))
	hole := make([]byte, cb)
	defer clear(pbuf[:cap(pbuf)])
	for b := uint64(0); ; b += uint64(per) {
		if err := ctx.Err(); err != nil {
			return err
		}
		off := l.BlockCipherOff(b)
		if off >= c {
			return nil
		}
		n := min(int64(len(cbuf)), c-off)
		if err := preadFull(fd, cbuf[:n], off); err != nil {
			return fmt.Errorf("reading blocks from %d: %w", b, err)
		}
		// Block by block: a hole is left unwritten in the copy.
		for i := int64(0); i < n; i += cb {
			blk := cbuf[i:min(i+cb, n)]
			no := b + uint64(i/cb)
			if int64(len(blk)) == cb && bytes.Equal(blk, hole) {
				continue
			}
			p, err := from.OpenBlock(pbuf[:0], blk, no)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrCorrupt, err)
			}
			out = to.SealBlock(out[:0], p, no)
			clear(p)
			if err := pwriteFull(tfd, out, off+i); err != nil {
				return fmt.Errorf("writing the re-encryption copy: %w", err)
			}
		}
	}
}

// reencryptName is the name of a committed copy.
func reencryptName(ino uint64, oldID, newID [16]byte) string {
	return ReencryptPrefix + strconv.FormatUint(ino, 16) + "." + hex.EncodeToString(oldID[:]) + "." + hex.EncodeToString(newID[:])
}

// parseReencryptName parses a committed copy's name.
func parseReencryptName(name string) (ino uint64, oldID, newID [16]byte, ok bool) {
	parts := strings.Split(strings.TrimPrefix(name, ReencryptPrefix), ".")
	if !strings.HasPrefix(name, ReencryptPrefix) || len(parts) != 3 {
		return 0, oldID, newID, false
	}
	ino, err := strconv.ParseUint(parts[0], 16, 64)
	a, err1 := hex.DecodeString(parts[1])
	b, err2 := hex.DecodeString(parts[2])
	if err != nil || err1 != nil || err2 != nil || len(a) != 16 || len(b) != 16 {
		return 0, oldID, newID, false
	}
	copy(oldID[:], a)
	copy(newID[:], b)
	return ino, oldID, newID, true
}

// finishReencrypt writes the committed copy cfd (c bytes) over the file
// fd in place, blocks first and the header last, syncs it and removes the
// copy.
func finishReencrypt(cfd, fd int, c int64, dir *backing.Dir, name string) error {
	if err := copyOver(cfd, fd, header.Size, c); err != nil {
		return err
	}
	if err := copyOver(cfd, fd, 0, min(c, header.Size)); err != nil {
		return err
	}
	if err := unix.Ftruncate(fd, c); err != nil {
		return fmt.Errorf("re-encryption: %w", err)
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("re-encryption: syncing: %w", err)
	}
	// The removal must be durable before the file is written again: a
	// copy found at the next mount would be written over newer content.
	if err := unix.Unlinkat(dir.Fd(), name, 0); err != nil {
		return fmt.Errorf("re-encryption: removing the copy: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("re-encryption: removing the copy: syncing the backing directory: %w", err)
	}
	return nil
}

// copyOver copies bytes [from, to) of cfd over fd: the data regions, and
// the holes as holes (punched, or written as zeros where the file system
// cannot punch).
func copyOver(cfd, fd int, from, to int64) error {
	buf := make([]byte, copyChunk)
	for off := from; off < to; {
		data, err := unix.Seek(cfd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			data = to // only a hole up to the end
		} else if err != nil {
			data = off // no SEEK_DATA: copy everything
		}
		data = min(data, to)
		if data > off {
			if err := punch(fd, off, data-off); err != nil {
				return fmt.Errorf("re-encryption: %w", err)
			}
			off = data
			continue
		}
		end, err := unix.Seek(cfd, off, unix.SEEK_HOLE)
		if err != nil {
			end = to
		}
		end = min(end, to, off+int64(len(buf)))
		if end <= off {
			end = min(to, off+int64(len(buf)))
		}
		if err := preadFull(cfd, buf[:end-off], off); err != nil {
			return fmt.Errorf("re-encryption: reading the copy: %w", err)
		}
		if err := pwriteFull(fd, buf[:end-off], off); err != nil {
			return fmt.Errorf("re-encryption: writing over the file: %w", err)
		}
		off = end
	}
	return nil
}

// punch makes [off, off+n) of fd read as zeros, as a hole where it can.
func punch(fd int, off, n int64) error {
	err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	zeros := make([]byte, min(n, copyChunk))
	for done := int64(0); done < n; {
		m := min(int64(len(zeros)), n-done)
		if err := pwriteFull(fd, zeros[:m], off+done); err != nil {
			return err
		}
		done += m
	}
	return nil
}

// ReplayReencrypt finishes the re-encryptions a crash interrupted after
// their commit point and removes unfinished copies. It runs at the start
// of a read-write mount, after the write journal's replay, before any
// file is opened.
func ReplayReencrypt(dir *backing.Dir, lg *log.Logger) error {
	d, err := unix.Openat(dir.Fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readNames(d)
	unix.Close(d)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir.Path, err)
	}
	for _, name := range names {
		if !strings.HasPrefix(name, ReencryptPrefix) {
			continue
		}
		if name == reencryptTmp {
			lg.Printf("kmsfs: removing an unfinished re-encryption copy (the file it was for is unchanged)")
			unix.Unlinkat(dir.Fd(), name, 0)
			continue
		}
		ino, oldID, newID, ok := parseReencryptName(name)
		if !ok {
			lg.Printf("kmsfs: %s: not a re-encryption copy kmsfs made; left alone", name)
			continue
		}
		if err := replayOne(dir, name, ino, oldID, newID, lg); err != nil {
			return fmt.Errorf("finishing an interrupted re-encryption (%s): %w", name, err)
		}
	}
	return nil
}

func replayOne(dir *backing.Dir, name string, ino uint64, oldID, newID [16]byte, lg *log.Logger) error {
	cfd, err := unix.Openat(dir.Fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(cfd)
	// The copy must be what step 1 wrote: a header with the new file ID.
	var cst unix.Stat_t
	if err := unix.Fstat(cfd, &cst); err != nil {
		return err
	}
	var cpre [header.PreambleSize]byte
	m, err := PreadHead(cfd, cpre[:])
	p, perr := header.ParsePreamble(cpre[:])
	if err != nil || m < len(cpre) || (perr == nil && cst.Size < int64(p.HeaderLen())) {
		lg.Printf("kmsfs: %s is not a complete re-encryption copy; left alone", name)
		return nil
	}
	if perr != nil || p.FileID != newID {
		lg.Printf("kmsfs: %s does not hold the file ID its name says; left alone", name)
		return nil
	}
	var root unix.Stat_t
	if err := unix.Fstat(dir.Fd(), &root); err != nil {
		return err
	}
	// The file: a regular file of the backing file system with that
	// inode.
	target := ""
	err = dir.Walk(func(rel string, _ int, base string, st *unix.Stat_t) error {
		if names.Internal(base) && st.Size < header.PreambleSize+2*header.MinCopySize {
			// A kmsfs.dirid or long-name file of a volume with encrypted
			// names (never a re-encryption's file, which has a header;
			// in a volume with names in clear a file of that name too
			// small for a header is not one either).
			return nil
		}
		if st.Ino == ino && st.Dev == root.Dev && st.Mode&unix.S_IFMT == unix.S_IFREG && rel != name {
			target = rel
			return errFound
		}
		return nil
	})
	if err != nil && err != errFound {
		return err
	}
	if target == "" {
		// Gone, or the tree was copied elsewhere (new inode numbers):
		// keep the copy, which may be the only good one.
		lg.Printf("kmsfs: no file has inode %d any more for the interrupted re-encryption %s; the copy is kept (remove it if the file was deleted)", ino, name)
		return nil
	}
	fd, err := dir.Open(target, unix.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", target, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	var pre [header.PreambleSize]byte
	m, rerr := PreadHead(fd, pre[:])
	tp, tperr := header.ParsePreamble(pre[:])
	switch {
	case rerr == nil && m == len(pre) && tperr == nil && tp.FileID != oldID && tp.FileID != newID:
		// Another file has that inode now: the re-encryption's file was
		// deleted and its inode reused.
		lg.Printf("kmsfs: %s is not the file an interrupted re-encryption was for; removing the copy %s", target, name)
		if err := unix.Unlinkat(dir.Fd(), name, 0); err != nil {
			return err
		}
		return syncDir(dir)
	case st.Size != cst.Size && (rerr != nil || m < len(pre) || tperr != nil):
		// A damaged header and another size: not provably ours.
		lg.Printf("kmsfs: %s has a damaged header and is not the size of the interrupted re-encryption %s; the copy is kept", target, name)
		return nil
	}
	if err := finishReencrypt(cfd, fd, cst.Size, dir, name); err != nil {
		return fmt.Errorf("%s: %w", target, err)
	}
	unix.UtimesNanoAt(unix.AT_FDCWD, backing.ProcPath(fd), []unix.Timespec{st.Atim, st.Mtim}, 0)
	lg.Printf("kmsfs: %s: finished its interrupted re-encryption", target)
	return nil
}

// PendingReencrypt reports whether dir holds a committed re-encryption
// copy that a read-write mount has yet to finish.
func PendingReencrypt(dir *backing.Dir) (bool, error) {
	d, err := unix.Openat(dir.Fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	names, err := readNames(d)
	unix.Close(d)
	for _, name := range names {
		if _, _, _, ok := parseReencryptName(name); ok {
			return true, nil
		}
	}
	return false, err
}

// syncDir syncs the backing root (dir's own descriptor is O_PATH).
func syncDir(dir *backing.Dir) error {
	d, err := unix.Openat(dir.Fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(d)
	return unix.Fsync(d)
}

// errFound stops a walk that found what it looked for.
var errFound = errors.New("found")

// readNames lists the directory fd.
func readNames(fd int) ([]string, error) {
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// reencrypt3 is reencryptBlocks for a version-3 file of backing size c
// and plaintext size p: every sealed thing (inline content, size
// records, group tokens, hole entries, blocks and their entries) is
// opened with from and sealed anew with to into tfd, at the same place.
func (f *File) reencrypt3(ctx context.Context, fd, tfd int, c, p int64, from, to *blockcipher.Cipher) error {
	l := f.cfg.V3
	if c <= int64(l.HeaderLen) {
		return nil
	}
	if l.IsInline(c) {
		buf := make([]byte, c-int64(l.HeaderLen))
		if err := preadFull(fd, buf, int64(l.HeaderLen)); err != nil {
			return err
		}
		plain, err := from.OpenInline(nil, buf)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		defer clear(plain)
		return pwriteFull(tfd, to.SealInline(nil, plain), int64(l.HeaderLen))
	}
	if _, err := f.consistentWith(fd, from, p, c); err != nil {
		return err
	}
	var recs [2 * blockcipher.SizeRecordSize]byte
	for i := range 2 {
		r := to.SizeRecord(uint64(p))
		copy(recs[i*blockcipher.SizeRecordSize:], r[:])
	}
	if err := pwriteFull(tfd, recs[:], l.RecordOff(0)); err != nil {
		return fmt.Errorf("writing the re-encryption copy: %w", err)
	}
	B := int64(l.BlockSize)
	nblocks := uint64((p + B - 1) / B)
	src := &tx3{fd: fd, l: l, cph: from, c: c, metas: map[uint64]*meta3{}}
	data := make([]byte, int64(blockcipher.GroupBlocks)*B+blockcipher.TagSize)
	defer clear(data)
	// Sealing writes the tag just past the block: into a buffer of its
	// own, not over the next block, still to be opened.
	sealed := make([]byte, B+blockcipher.TagSize)
	for n := uint64(0); n < nblocks; {
		if err := ctx.Err(); err != nil {
			return err
		}
		g, _ := l.Group(n)
		z := min(nblocks-1, l.GroupFirst(g)+uint64(l.GroupLen(g))-1)
		m, err := src.meta(g)
		if err != nil {
			return err
		}
		delete(src.metas, g)
		out := make([]byte, len(m.buf))
		copy(out[:m.first], m.buf[:m.first]) // the records, written above, are overwritten below for group 0
		if m.hole {
			tok := to.GroupToken(g)
			copy(out, tok[:])
		} else {
			if g > 0 {
				clear(out[:blockcipher.EntrySize])
			}
			first := l.DataOff(n)
			last := l.DataOff(z) + min(B, p-int64(z)*B)
			region := data[:last-first]
			if err := preadFull(fd, region, first); err != nil {
				return fmt.Errorf("reading blocks %d-%d: %w", n, z, err)
			}
			for b := n; b <= z; b++ {
				i := int(b - l.GroupFirst(g))
				e := m.entry(i)
				ne := out[m.first+i*blockcipher.EntrySize : m.first+(i+1)*blockcipher.EntrySize]
				k := int64(b-n) * B
				mlen := min(B, p-int64(b)*B)
				switch {
				case blockcipher.ZeroEntry(e):
					return fmt.Errorf("%w: block %d has no entry", ErrCorrupt, b)
				case from.IsHoleEntry(e, b):
					h := to.HoleEntry(b)
					copy(ne, h[:])
					clear(region[k : k+mlen])
				default:
					if err := from.OpenData3(data[k:], int(mlen), b, e); err != nil {
						return fmt.Errorf("%w: %w", ErrCorrupt, err)
					}
					to.SealData3(sealed[:mlen], data[k:k+mlen], b, ne)
					copy(data[k:k+mlen], sealed[:mlen])
				}
			}
			// Holes stay holes in the copy: only data blocks are written.
			for b := n; b <= z; b++ {
				i := int(b - l.GroupFirst(g))
				if to.IsHoleEntry(out[m.first+i*blockcipher.EntrySize:m.first+(i+1)*blockcipher.EntrySize], b) {
					continue
				}
				k := int64(b-n) * B
				mlen := min(B, p-int64(b)*B)
				if err := pwriteFull(tfd, data[k:k+mlen], l.DataOff(b)); err != nil {
					return fmt.Errorf("writing the re-encryption copy: %w", err)
				}
			}
		}
		lo := m.first
		if g > 0 {
			lo = 0
		}
		if err := pwriteFull(tfd, out[lo:], m.base+int64(lo)); err != nil {
			return fmt.Errorf("writing the re-encryption copy: %w", err)
		}
		n = z + 1
	}
	return nil
}
