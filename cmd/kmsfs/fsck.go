package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/names"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
)

func init() {
	commands["fsck"] = runFsck
}

const fsckHelp = `Usage: kmsfs fsck [--json] [--repair] [--key URI]... [--passphrase-file F] [--quiet] CIPHERDIR

Checks the volume in CIPHERDIR without mounting it: its configuration,
the header of every regular file (both copies), every key slot, every
block (each one is decrypted), the size of every file (a damaged tail),
and the write journal (a record left in it is a write the server did not
finish). In a volume with encrypted names it also checks that every name
and symlink target decrypts (an entry moved from another directory or
planted in the backing directory does not), every directory's ID
(kmsfs.dirid) and every long name's .name file. Each problem is listed
with its file, by its path as seen through a mount (or, if its name
cannot be decrypted, by its path in CIPHERDIR), and its block or header
copy. Keys are used only if trusted (as for mount); a slot naming a key
not trusted here is counted, never contacted.

With --repair, fsck first replays and clears the write journal (as a mount
would), then restores each damaged header copy from its valid twin (byte
for byte: both copies hold the same slots, and the valid one authenticates
itself), and removes the .name files of long names whose entry is gone
(harmless leftovers). Nothing else is repaired: a damaged block, a
damaged tail, a header with no valid copy, a name that does not decrypt
or a damaged directory ID is reported, never guessed. --repair refuses a
volume that is mounted read-write.

Options:
        --json                print the report as a JSON object on stdout
        --repair              replay the journal and restore damaged header
                              copies
    -k, --key URI             also trust this key (repeatable)
    -p, --passphrase-file F   passphrase of a protected local key file
    -q, --quiet               no progress bar (there is none unless stderr
                              is a terminal)

Exit status: 0 clean (after --repair: nothing left to repair; leftover
.name files do not count), 6 damage found (a header, a block, a tail, a
journal record, a name, a symlink target or a directory ID), 4 a key is
unavailable (a file could not be checked, or a trusted key of a slot
failed) and nothing is damaged, 3 not a kmsfs volume or its
configuration is damaged or unreadable, 1 any other error.
`

// Kinds of fsck problems.
const (
	probHeader     = "header"      // no valid copy, torn header: the file is unreadable
	probHeaderCopy = "header-copy" // one copy damaged, the other valid
	probSlot       = "slot"        // a damaged key slot
	probBlock      = "block"       // a block that does not decrypt
	probTail       = "tail"        // a damaged tail (1..28 bytes)
	probJournal    = "journal"     // a record left in the write journal
	probKey        = "key"         // the file could not be checked: no trusted key works
	probError      = "error"       // the file could not be read
	// Encrypted names (docs/FORMAT.md, "Names (version 2)").
	probName    = "name"        // a name that does not decrypt, or a long name whose .name file is missing or does not match
	probSymlink = "symlink"     // a symlink target that does not decrypt
	probDirID   = "dirid"       // a directory whose kmsfs.dirid is missing or damaged: its entries cannot be named
	probOrphan  = "orphan-name" // a long name's .name file whose entry is gone: harmless
)

// fsckProblem is one problem fsck found.
type fsckProblem struct {
	// File is the path as seen through a mount, or the backing path if
	// the name cannot be decrypted (NameError then says why).
	File string `json:"file"`
	// Backing is the path in the backing directory (volumes with
	// encrypted names only).
	Backing   string  `json:"backing,omitempty"`
	NameError string  `json:"name_error,omitempty"`
	Kind      string  `json:"kind"`
	Copy      *int    `json:"copy,omitempty"`
	Block     *uint64 `json:"block,omitempty"`
	Slot      *int    `json:"journal_slot,omitempty"`
	Key       string  `json:"key,omitempty"`
	Detail    string  `json:"detail"`
	Repaired  bool    `json:"repaired"`
}

// damage reports whether the problem is damage (as opposed to a key or
// an I/O problem, or a harmless leftover).
func (p *fsckProblem) damage() bool {
	return p.Kind != probKey && p.Kind != probError && p.Kind != probOrphan
}

// fsckSlotKey sums up the key slots naming one key across the volume.
type fsckSlotKey struct {
	URI string `json:"uri"`
	// Files is how many files have a slot naming the key.
	Files int `json:"files"`
	// Opened slots unwrapped to their file's data key; Untrusted ones
	// were not tried (the key is not trusted here); Failed ones were
	// tried and the key failed (Error is the first failure).
	Opened    int    `json:"opened"`
	Untrusted int    `json:"untrusted"`
	Failed    int    `json:"failed"`
	Error     string `json:"error,omitempty"`
}

// fsckReport is the output of "kmsfs fsck".
type fsckReport struct {
	Dir      string `json:"cipher_dir"`
	VolumeID string `json:"volume_id,omitempty"`
	// FormatVersion and Names are the configuration's: Names is "siv"
	// (encrypted) or "plaintext", empty in version 1.
	FormatVersion int            `json:"format_version,omitempty"`
	Names         string         `json:"names,omitempty"`
	Files         int            `json:"files"` // regular files, not counting the configuration
	Blocks        uint64         `json:"blocks"`
	Problems      []fsckProblem  `json:"problems"`
	Keys          []fsckSlotKey  `json:"key_slots"`
	Notes         []string       `json:"notes,omitempty"`
	Result        string         `json:"result"`
	Exit          int            `json:"exit_code"`
	Error         string         `json:"error,omitempty"`
	keys          map[string]int // index in Keys by URI
}

func runFsck(args []string) int {
	fl := flag.NewFlagSet("fsck", flag.ContinueOnError)
	asJSON := fl.Bool("json", false, "")
	repair := fl.Bool("repair", false, "")
	extraP, pf := keyFlags(fl)
	quiet := fl.Bool("quiet", false, "")
	fl.BoolVar(quiet, "q", false, "")
	pos, code, ok := parseFlags(fl, args, fsckHelp)
	if !ok {
		return code
	}
	extra := *extraP
	if len(pos) != 1 {
		return usageError("fsck takes one volume directory")
	}
	if code := checkKeyURIs(extra...); code != 0 {
		return code
	}
	dir, _ := filepath.Abs(pos[0])
	if code := checkCipherDir(dir); code != 0 {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := &fsck{r: &fsckReport{Dir: dir, Problems: []fsckProblem{}, Keys: []fsckSlotKey{}, keys: map[string]int{}}, repair: *repair,
		bar: newProgressBar("fsck", *quiet)}
	code = c.run(ctx, extra, *pf)
	c.bar.done()
	r := c.r
	r.Exit = code
	r.Result = map[int]string{exitOK: "clean", exitDamaged: "damaged", exitKey: "key-unavailable", exitNotVolume: "not-a-volume"}[code]
	if r.Result == "" {
		r.Result = "error"
	}
	if *asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Printf("%s\n", b)
		if r.Error != "" {
			fmt.Fprintf(os.Stderr, "kmsfs: error: %s\n", r.Error)
		}
		return code
	}
	if r.Error != "" && r.Files == 0 && len(r.Problems) == 0 {
		return errorf(code, "%s", printable(r.Error))
	}
	c.print()
	if r.Error != "" {
		return errorf(code, "%s", printable(r.Error))
	}
	return code
}

// fsck is one run of "kmsfs fsck".
type fsck struct {
	r      *fsckReport
	repair bool
	vol    *volume.Volume
	paths  *volume.Paths // names backing paths (encrypted names)
	bar    *progressBar
	// total and done count backing bytes, for the progress bar.
	total, done int64
}

// fail records the error that stopped the check and returns its code.
func (c *fsck) fail(code int, err error) int {
	c.r.Error = err.Error()
	return code
}

func (c *fsck) run(ctx context.Context, extra []string, pf string) int {
	var logBuf bytes.Buffer
	logger := log.New(&logBuf, "", 0)
	res := keyring.NewResolver(newRegistry(), keyring.Options{Passphrase: passphraseSource(pf)})
	// Files that share a data key (data key reuse) share its wrapped keys:
	// each is unwrapped once.
	res.SetCache(keyring.NewCache(time.Hour, 1<<16))
	vol, err := openOffline(ctx, c.r.Dir, extra, res, logger)
	if err != nil {
		return c.fail(exitCode(err), err)
	}
	defer vol.Close()
	c.notes(&logBuf) // what opening said: keys not trusted or not usable
	c.vol = vol
	c.paths = vol.NewPaths()
	c.r.VolumeID, c.r.FormatVersion, c.r.Names = vol.Config.VolumeID, vol.Config.Version, vol.Config.Names
	bd := vol.Backing()
	maxData := cryptfile.JournalDataSize(vol.Layout)

	pending, err := cryptfile.PendingWrites(ctx, bd, maxData, vol.JournalKeys())
	if err != nil {
		return c.fail(exitError, err)
	}
	left := pending
	if c.repair {
		logBuf.Reset()
		j, err := cryptfile.OpenJournal(ctx, bd, maxData, vol.JournalKeys(), false, logger)
		if errors.Is(err, cryptfile.ErrLocked) {
			return c.fail(exitError, fmt.Errorf("%w: unmount it before 'kmsfs fsck --repair' (or run fsck without --repair)", err))
		}
		if err != nil {
			return c.fail(exitError, err)
		}
		// Held to the end: no read-write mount starts while fsck repairs.
		defer j.Close()
		c.notes(&logBuf) // what the replay did
		if left, err = cryptfile.PendingWrites(ctx, bd, maxData, vol.JournalKeys()); err != nil {
			return c.fail(exitError, err)
		}
		// And an interrupted re-encryption, as a mount would.
		logBuf.Reset()
		if err := cryptfile.ReplayReencrypt(bd, logger); err != nil {
			return c.fail(exitError, err)
		}
		c.notes(&logBuf)
	} else if mnt := mountPointOf(c.r.Dir); mnt != "" {
		c.r.Notes = append(c.r.Notes, fmt.Sprintf("the volume is mounted at %s: a file written during the check may be reported damaged", mnt))
		// Its journal holds the writes in progress, not interrupted ones.
		for _, p := range pending {
			c.r.Notes = append(c.r.Notes, fmt.Sprintf("%s: slot %d holds a write in progress (or one the mount's server did not finish)", cryptfile.JournalName, p.Slot))
		}
		pending, left = nil, nil
	}
	c.journal(pending, left)
	if ents, err := backing.List(bd.Fd(), "."); err == nil {
		for _, name := range ents {
			if cryptfile.IsParkedJournal(name) {
				c.r.Notes = append(c.r.Notes, fmt.Sprintf("%s: the journal of an interrupted write-only mount, kept for a mount that can decrypt: the next read-write mount (or 'kmsfs fsck --repair') replays it; until then a block it covers may be reported damaged", name))
			}
		}
	}
	if p, _ := cryptfile.PendingReencrypt(bd); p {
		c.r.Notes = append(c.r.Notes, "an interrupted re-encryption is pending (a kmsfs.reencrypt.* copy): its file may be reported damaged until a read-write mount or 'kmsfs fsck --repair' finishes it")
	}

	type entry struct {
		rel  string
		size int64
	}
	var files []entry
	var orphans []string
	err = bd.Walk(func(rel string, dirfd int, name string, st *unix.Stat_t) error {
		if vol.Names() != nil {
			// Names, directory IDs, long-name files and symlink targets.
			if c.checkNames(rel, dirfd, name, st) {
				orphans = append(orphans, rel)
			}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil
		}
		// The configuration is a kmsfs file like any other; its temporary
		// copy, the journal, directory IDs and long-name files are not.
		if vol.Internal(rel) && rel != volume.ConfigName {
			return nil
		}
		files = append(files, entry{rel, st.Size})
		c.total += st.Size
		return nil
	})
	if err != nil {
		return c.fail(exitError, fmt.Errorf("listing %s: %w", c.r.Dir, err))
	}
	c.orphans(orphans)
	for i, f := range files {
		if err := ctx.Err(); err != nil {
			return c.fail(exitError, fmt.Errorf("interrupted after %d of %d files", i, len(files)))
		}
		c.checkFile(ctx, f.rel)
		c.done += f.size
		if f.rel != volume.ConfigName {
			c.r.Files++
		}
	}
	return c.exitCode()
}

// at returns p with its file named: by its plaintext path where it can
// be decrypted, else by its backing path and why (volumes with encrypted
// names); rel is the backing path.
func (c *fsck) at(rel string, p fsckProblem) fsckProblem {
	p.File = rel
	if c.vol.Names() == nil {
		return p
	}
	p.Backing = rel
	name, err := c.paths.Plain(rel)
	if err == nil {
		p.File = name
		return p
	}
	p.NameError = nameError(rel, err)
	return p
}

// show names the backing path rel in a message: by its plaintext path
// where it can be decrypted, else as a backing path.
func (c *fsck) show(rel string) string {
	if c.vol.Names() == nil {
		return rel
	}
	if name, err := c.paths.Plain(rel); err == nil {
		return name
	}
	return "backing path " + rel
}

// nameErrOwn is the nameError of an entry whose own name does not
// decrypt (its problem of kind probName says more).
const nameErrOwn = "its name does not decrypt"

// nameError says briefly why the backing path rel cannot be named.
func nameError(rel string, err error) string {
	var pe *volume.PathError
	switch {
	case !errors.As(err, &pe):
		return err.Error()
	case errors.Is(err, volume.ErrNoDirID):
		return fmt.Sprintf("the directory ID of %s is missing or damaged", dirOrRoot(pe.Backing))
	case pe.Backing != rel:
		return fmt.Sprintf("the name of %s does not decrypt", pe.Backing)
	case errors.Is(err, names.ErrUndecryptable), errors.Is(err, volume.ErrLongName):
		return nameErrOwn
	}
	return pe.Err.Error()
}

// dirOrRoot names the directory of the backing path rel.
func dirOrRoot(rel string) string {
	if d, _ := backing.Split(rel); d != "" {
		return d
	}
	return "the root"
}

// checkNames checks one backing entry of a volume with encrypted names
// (as Walk gives it): that its name decrypts, a directory's ID, a
// symlink's target. It reports whether the entry is a long name's .name
// file whose entry is gone.
func (c *fsck) checkNames(rel string, dirfd int, name string, st *unix.Stat_t) (orphan bool) {
	dir, _ := backing.Split(rel)
	typ := st.Mode & unix.S_IFMT
	switch {
	case dir == "" && volume.Internal(name):
		return false // the root's own files (checked as files)
	case name == names.DirIDName:
		if dir == "" {
			c.r.Notes = append(c.r.Notes, fmt.Sprintf("%s in the root is not used (the root's directory ID is the volume ID); it can be removed", names.DirIDName))
		}
		return false // checked with its directory
	case names.Internal(name):
		if typ != unix.S_IFREG {
			c.problem(c.at(rel, fsckProblem{Kind: probName, Detail: fmt.Sprintf("not a regular file: kmsfs keeps only a long name's %s file under this name; not written by kmsfs", names.LongSuffix)}))
			return false
		}
		var est unix.Stat_t
		err := unix.Fstatat(dirfd, strings.TrimSuffix(name, names.LongSuffix), &est, unix.AT_SYMLINK_NOFOLLOW)
		return errors.Is(err, unix.ENOENT)
	}
	if _, err := c.paths.Name(rel); err != nil {
		long := names.IsLong(name)
		in := "the root"
		if dir != "" {
			in = c.show(dir)
		}
		var detail string
		switch {
		case errors.Is(err, volume.ErrNoDirID):
			// Reported once, with its directory.
		case errors.Is(err, volume.ErrLongName):
			detail = fmt.Sprintf("a long name (in %s) whose %s file is missing or not a regular file: the entry cannot be named, and does not show through the mount", in, names.LongSuffix)
		case errors.Is(err, names.ErrUndecryptable) && long:
			detail = fmt.Sprintf("a long name (in %s) whose %s file does not match it or does not decrypt: the entry does not show through the mount", in, names.LongSuffix)
		case errors.Is(err, names.ErrUndecryptable):
			detail = fmt.Sprintf("the name does not decrypt in its directory (%s): an entry moved there from another directory, damaged, or not written by kmsfs; it does not show through the mount", in)
		default:
			c.problem(c.at(rel, fsckProblem{Kind: probError, Detail: fmt.Sprintf("naming the entry: %v", err)}))
		}
		if detail != "" {
			c.problem(c.at(rel, fsckProblem{Kind: probName, Detail: detail}))
		}
	}
	switch typ {
	case unix.S_IFDIR:
		c.checkDirID(rel, dirfd, name)
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax+1)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			c.problem(c.at(rel, fsckProblem{Kind: probError, Detail: fmt.Sprintf("reading the symlink: %v", err)}))
		} else if _, err := c.vol.Names().DecryptTarget(buf[:n]); err != nil {
			c.problem(c.at(rel, fsckProblem{Kind: probSymlink, Detail: "the symlink's target does not decrypt: damaged or not written by kmsfs"}))
		}
	}
	return false
}

// checkDirID checks the directory ID of the directory rel (name in
// dirfd). A directory without one that is empty is a mkdir a crash
// interrupted: a mount gives it an ID when it is used.
func (c *fsck) checkDirID(rel string, dirfd int, name string) {
	_, err := c.paths.DirID(rel)
	switch {
	case err == nil:
		return
	case !errors.Is(err, volume.ErrNoDirID):
		c.problem(c.at(rel, fsckProblem{Kind: probError, Detail: fmt.Sprintf("reading its directory ID: %v", err)}))
		return
	case errors.Is(err, unix.ENOENT):
		if ents, lerr := backing.List(dirfd, name); lerr == nil && names.OnlyInternal(ents) {
			c.r.Notes = append(c.r.Notes, fmt.Sprintf("%s: an empty directory without a directory ID (%s), left by an interrupted mkdir: a mount gives it one", c.show(rel), names.DirIDName))
			return
		}
	}
	what := "its directory ID (" + names.DirIDName + ") is missing"
	if !errors.Is(err, unix.ENOENT) {
		what = "its directory ID (" + names.DirIDName + ") is damaged: " + strings.TrimPrefix(err.Error(), volume.ErrNoDirID.Error()+": ")
	}
	c.problem(c.at(rel, fsckProblem{Kind: probDirID, Detail: what + "; the names in the directory cannot be decrypted (its entries do not show through the mount; fsck names them by their backing paths)"}))
}

// orphans reports the long names' .name files whose entry is gone, and
// removes them with --repair.
func (c *fsck) orphans(rels []string) {
	for _, rel := range rels {
		p := c.at(rel, fsckProblem{Kind: probOrphan, Detail: "a long name's " + names.LongSuffix + " file whose entry is gone: harmless; 'kmsfs fsck --repair' removes it"})
		if c.repair {
			if err := c.removeOrphan(rel); err != nil {
				p.Detail += fmt.Sprintf("; not removed: %v", err)
			} else {
				p.Detail, p.Repaired = "a long name's "+names.LongSuffix+" file whose entry was gone: removed", true
			}
		}
		c.problem(p)
	}
}

// removeOrphan removes the .name file rel if its entry is still gone.
func (c *fsck) removeOrphan(rel string) error {
	dir, name := backing.Split(rel)
	dirfd, err := c.vol.Backing().OpenDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, strings.TrimSuffix(name, names.LongSuffix), &st, unix.AT_SYMLINK_NOFOLLOW); !errors.Is(err, unix.ENOENT) {
		return errors.New("its entry is back")
	}
	return unix.Unlinkat(dirfd, name, 0)
}

// notes adds the lines logged to b as notes, and empties b.
func (c *fsck) notes(b *bytes.Buffer) {
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l != "" {
			c.r.Notes = append(c.r.Notes, strings.TrimPrefix(l, "kmsfs: "))
		}
	}
	b.Reset()
}

// journal reports the records of the write journal: pending before a
// repair, left after it.
func (c *fsck) journal(pending, left []cryptfile.PendingWrite) {
	for _, p := range pending {
		if errors.Is(p.Err, cryptfile.ErrOldJournal) {
			c.r.Notes = append(c.r.Notes, fmt.Sprintf("%s: %v; the next read-write mount starts it anew", cryptfile.JournalName, p.Err))
			continue
		}
		slot := p.Slot
		pr := fsckProblem{File: cryptfile.JournalName, Kind: probJournal, Slot: &slot, Repaired: true}
		for _, l := range left {
			if l.Slot == p.Slot {
				pr.Repaired = false
			}
		}
		switch {
		case p.Err == nil:
			pr.Detail = fmt.Sprintf("slot %d: an interrupted write to %s (%d bytes at offset %d), which a replay completes", p.Slot, c.show(p.Path), p.Length, p.Offset)
		case exitCode(p.Err) == exitKey && !isDamage(p.Err):
			pr.Kind = probKey
			pr.Detail = fmt.Sprintf("slot %d: %v", p.Slot, p.Err)
		default:
			pr.Detail = fmt.Sprintf("slot %d: %v (a replay skips it)", p.Slot, p.Err)
		}
		c.problem(pr)
	}
}

// exitCode is the exit code the problems found call for.
func (c *fsck) exitCode() int {
	code := exitOK
	for _, k := range c.r.Keys {
		if k.Failed > 0 {
			code = exitKey
		}
	}
	for _, p := range c.r.Problems {
		switch {
		case p.Repaired, p.Kind == probOrphan:
		case p.damage():
			return exitDamaged
		case p.Kind == probKey:
			code = exitKey
		case code == exitOK:
			code = exitError
		}
	}
	return code
}

func (c *fsck) problem(p fsckProblem) { c.r.Problems = append(c.r.Problems, p) }

// checkFile checks one regular file, rel below the backing directory.
func (c *fsck) checkFile(ctx context.Context, rel string) {
	bd := c.vol.Backing()
	fd, err := bd.Open(rel, syscall.O_RDONLY|unix.O_NOATIME, 0)
	if errors.Is(err, syscall.EPERM) {
		fd, err = bd.Open(rel, syscall.O_RDONLY, 0)
	}
	if err != nil {
		c.problem(c.at(rel, fsckProblem{Kind: probError, Detail: err.Error()}))
		return
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		c.problem(c.at(rel, fsckProblem{Kind: probError, Detail: err.Error()}))
		return
	}
	l := c.vol.Layout
	hlen := l.DataOffset
	if c.vol.Layout3 != nil {
		hlen = int64(c.vol.Layout3.HeaderLen)
	}
	if st.Size > 0 && st.Size < hlen {
		c.problem(c.at(rel, fsckProblem{Kind: probHeader, Detail: fmt.Sprintf("torn header: the file is %d bytes, shorter than its %d-byte header", st.Size, hlen)}))
		return
	}
	// Errors and log lines name the file as the user knows it.
	shown := c.show(rel)
	hc, key, err := c.vol.CheckHeader(ctx, fd, shown)
	if hc != nil {
		c.checkCopies(rel, &st, hc, err == nil)
	}
	if err != nil {
		kind := probError
		switch {
		case errors.Is(err, volume.ErrCorrupt):
			kind = probHeader
		case exitCode(err) == exitKey:
			kind = probKey
		}
		c.problem(c.at(rel, fsckProblem{Kind: kind, Detail: strings.TrimPrefix(err.Error(), shown+": ")}))
		return
	}
	if key == nil {
		return // empty: no header yet
	}
	defer key.Close()
	for _, s := range hc.Slots {
		c.countSlot(rel, s)
	}
	base := c.done
	check := cryptfile.CheckBlocks
	if key.Cipher().V3() && c.vol.Layout3 != nil {
		check = func(ci *blockcipher.Cipher, _ blockcipher.Layout, fd int, bad func(error), progress func(int64)) (uint64, error) {
			return cryptfile.CheckBlocks3(ci, c.vol.Layout3, fd, bad, progress)
		}
	}
	n, err := check(key.Cipher(), l, fd, func(err error) {
		var be *blockcipher.BlockError
		if !errors.As(err, &be) {
			c.problem(c.at(rel, fsckProblem{Kind: probError, Detail: err.Error()}))
			return
		}
		b, kind := be.Block, probBlock
		if errors.Is(err, blockcipher.ErrBadCipherSize) {
			kind = probTail // the bytes after the last whole block
		}
		c.problem(c.at(rel, fsckProblem{Kind: kind, Block: &b, Detail: fmt.Sprintf("block %d: %v", b, be.Err)}))
	}, func(off int64) {
		c.bar.show(base+off, c.total, fmt.Sprintf("%d files", c.r.Files))
	})
	c.r.Blocks += n
	if err != nil {
		c.problem(c.at(rel, fsckProblem{Kind: probError, Detail: err.Error()}))
	}
}

// checkCopies reports the damaged copies of a checked header, and
// restores them with --repair. unlocked says whether a key opened the
// header; if none did, the file's own problem says what is wrong with
// its copies, and nothing can be restored.
func (c *fsck) checkCopies(rel string, st *syscall.Stat_t, hc *volume.HeaderCheck, unlocked bool) {
	if !unlocked {
		return
	}
	repaired, repairErr := false, error(nil)
	if c.repair && hc.Damaged() {
		repairErr = c.repairHeader(rel, st, hc)
		repaired = repairErr == nil
	}
	for i, cp := range hc.Copies {
		if cp.Valid || cp.Err == nil {
			continue
		}
		copyNo := i
		detail := fmt.Sprintf("header copy %d: %v", i, cp.Err)
		if hc.Damaged() {
			detail += " (the other copy is valid)"
		}
		if repairErr != nil {
			detail += fmt.Sprintf("; not repaired: %v", repairErr)
		}
		c.problem(c.at(rel, fsckProblem{Kind: probHeaderCopy, Copy: &copyNo, Detail: detail, Repaired: repaired}))
	}
}

// repairHeader restores the damaged copy of rel's header from the valid
// one, through a descriptor open for writing on the same inode.
func (c *fsck) repairHeader(rel string, st *syscall.Stat_t, hc *volume.HeaderCheck) error {
	fd, err := c.vol.Backing().Open(rel, syscall.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var now syscall.Stat_t
	if err := syscall.Fstat(fd, &now); err != nil {
		return err
	}
	if now.Ino != st.Ino || now.Dev != st.Dev {
		return errors.New("the file was replaced during the check")
	}
	_, err = hc.Repair(fd)
	return err
}

// countSlot adds one file's key slot to the volume's slot table, and
// reports a damaged slot.
func (c *fsck) countSlot(rel string, s volume.SlotCheck) {
	i, ok := c.r.keys[s.URI]
	if !ok {
		i = len(c.r.Keys)
		c.r.keys[s.URI] = i
		c.r.Keys = append(c.r.Keys, fsckSlotKey{URI: keyring.RedactURI(s.URI)})
	}
	k := &c.r.Keys[i]
	k.Files++
	switch {
	case s.Err == nil:
		k.Opened++
	case errors.Is(s.Err, volume.ErrCorrupt):
		c.problem(c.at(rel, fsckProblem{Kind: probSlot, Key: keyring.RedactURI(s.URI), Detail: fmt.Sprintf("key slot %s: %v", showURI(s.URI), s.Err)}))
	case errors.Is(s.Err, volume.ErrUntrusted):
		k.Untrusted++
	default:
		k.Failed++
		if k.Error == "" {
			k.Error = s.Err.Error()
		}
	}
}

// print writes the report as text on stdout.
func (c *fsck) print() {
	r := c.r
	for _, n := range r.Notes {
		fmt.Printf("note: %s\n", printable(n))
	}
	sort.SliceStable(r.Problems, func(i, j int) bool { return r.Problems[i].File < r.Problems[j].File })
	for _, p := range r.Problems {
		line := fmt.Sprintf("%s: %s", p.File, p.Detail)
		if p.NameError != "" && !(p.Kind == probName && p.NameError == nameErrOwn) {
			line += fmt.Sprintf(" (named by its backing path: %s)", p.NameError)
		}
		if p.Repaired {
			line += " [repaired]"
		}
		fmt.Println(printable(line))
	}
	for _, k := range r.Keys {
		if k.Untrusted > 0 {
			fmt.Printf("key %s: not trusted here, not tried (slots in %s)\n", showURI(k.URI), plural(int64(k.Untrusted), "file"))
		}
		if k.Failed > 0 {
			fmt.Printf("key %s: failed for %s: %s\n", showURI(k.URI), plural(int64(k.Failed), "file"), printable(k.Error))
		}
	}
	var damaged, repaired, other, leftovers int
	for _, p := range r.Problems {
		switch {
		case p.Repaired:
			repaired++
		case p.Kind == probOrphan:
			leftovers++
		case p.damage():
			damaged++
		default:
			other++
		}
	}
	summary := fmt.Sprintf("kmsfs: fsck %s (volume %s): the configuration and %s, %s checked: ", r.Dir, r.VolumeID, plural(int64(r.Files), "file"), plural(int64(r.Blocks), "block"))
	if damaged+repaired+other == 0 {
		summary += "no problems"
	} else {
		summary += fmt.Sprintf("%d damaged, %d repaired, %d not checked", damaged, repaired, other)
	}
	if leftovers > 0 {
		summary += fmt.Sprintf("; %s of long names left over (harmless: 'kmsfs fsck --repair' removes them)", plural(int64(leftovers), names.LongSuffix+" file"))
	}
	fmt.Println(summary)
}
