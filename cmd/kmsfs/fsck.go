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
	"github.com/kmsfs/kmsfs/fs/cryptfile"
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
finish). Each problem is listed with its file, and its block or header
copy. Keys are used only if trusted (as for mount); a slot naming a key
not trusted here is counted, never contacted.

With --repair, fsck first replays and clears the write journal (as a mount
would), then restores each damaged header copy from its valid twin (byte
for byte: both copies hold the same slots, and the valid one authenticates
itself). Nothing else is repaired: a damaged block, a damaged tail, or a
header with no valid copy is reported, never guessed. --repair refuses a
volume that is mounted read-write.

Options:
        --json                print the report as a JSON object on stdout
        --repair              replay the journal and restore damaged header
                              copies
    -k, --key URI             also trust this key (repeatable)
    -p, --passphrase-file F   passphrase of a protected local key file
    -q, --quiet               no progress bar (there is none unless stderr
                              is a terminal)

Exit status: 0 clean (after --repair: nothing left to repair), 6 damage
found (a header, a block, a tail or a journal record), 4 a key is
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
)

// fsckProblem is one problem fsck found.
type fsckProblem struct {
	File     string  `json:"file"`
	Kind     string  `json:"kind"`
	Copy     *int    `json:"copy,omitempty"`
	Block    *uint64 `json:"block,omitempty"`
	Slot     *int    `json:"journal_slot,omitempty"`
	Key      string  `json:"key,omitempty"`
	Detail   string  `json:"detail"`
	Repaired bool    `json:"repaired"`
}

// damage reports whether the problem is damage (as opposed to a key or
// an I/O problem).
func (p *fsckProblem) damage() bool {
	return p.Kind != probKey && p.Kind != probError
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
	Dir      string         `json:"cipher_dir"`
	VolumeID string         `json:"volume_id,omitempty"`
	Files    int            `json:"files"` // regular files, not counting the configuration
	Blocks   uint64         `json:"blocks"`
	Problems []fsckProblem  `json:"problems"`
	Keys     []fsckSlotKey  `json:"key_slots"`
	Notes    []string       `json:"notes,omitempty"`
	Result   string         `json:"result"`
	Exit     int            `json:"exit_code"`
	Error    string         `json:"error,omitempty"`
	keys     map[string]int // index in Keys by URI
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
	c.r.VolumeID = vol.Config.VolumeID
	bd := vol.Backing()
	maxData := cryptfile.JournalDataSize(vol.Layout)

	pending, err := cryptfile.PendingWrites(ctx, bd, maxData, vol)
	if err != nil {
		return c.fail(exitError, err)
	}
	left := pending
	if c.repair {
		logBuf.Reset()
		j, err := cryptfile.OpenJournal(ctx, bd, maxData, vol, false, logger)
		if errors.Is(err, cryptfile.ErrLocked) {
			return c.fail(exitError, fmt.Errorf("%w: unmount it before 'kmsfs fsck --repair' (or run fsck without --repair)", err))
		}
		if err != nil {
			return c.fail(exitError, err)
		}
		// Held to the end: no read-write mount starts while fsck repairs.
		defer j.Close()
		c.notes(&logBuf) // what the replay did
		if left, err = cryptfile.PendingWrites(ctx, bd, maxData, vol); err != nil {
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
	if p, _ := cryptfile.PendingReencrypt(bd); p {
		c.r.Notes = append(c.r.Notes, "an interrupted re-encryption is pending (a kmsfs.reencrypt.* copy): its file may be reported damaged until a read-write mount or 'kmsfs fsck --repair' finishes it")
	}

	type entry struct {
		rel  string
		size int64
	}
	var files []entry
	err = bd.Walk(func(rel string, _ int, name string, st *unix.Stat_t) error {
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil
		}
		// The configuration is a kmsfs file like any other; its temporary
		// copy and the journal are not.
		if rel == name && volume.Internal(name) && name != volume.ConfigName {
			return nil
		}
		files = append(files, entry{rel, st.Size})
		c.total += st.Size
		return nil
	})
	if err != nil {
		return c.fail(exitError, fmt.Errorf("listing %s: %w", c.r.Dir, err))
	}
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
			pr.Detail = fmt.Sprintf("slot %d: an interrupted write to %s (%d bytes at offset %d), which a replay completes", p.Slot, p.Path, p.Length, p.Offset)
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
		case p.Repaired:
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
		c.problem(fsckProblem{File: rel, Kind: probError, Detail: err.Error()})
		return
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		c.problem(fsckProblem{File: rel, Kind: probError, Detail: err.Error()})
		return
	}
	l := c.vol.Layout
	if st.Size > 0 && st.Size < l.DataOffset {
		c.problem(fsckProblem{File: rel, Kind: probHeader, Detail: fmt.Sprintf("torn header: the file is %d bytes, shorter than its %d-byte header", st.Size, l.DataOffset)})
		return
	}
	hc, key, err := c.vol.CheckHeader(ctx, fd, rel)
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
		c.problem(fsckProblem{File: rel, Kind: kind, Detail: strings.TrimPrefix(err.Error(), rel+": ")})
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
	n, err := cryptfile.CheckBlocks(key.Cipher(), l, fd, func(err error) {
		var be *blockcipher.BlockError
		if !errors.As(err, &be) {
			c.problem(fsckProblem{File: rel, Kind: probError, Detail: err.Error()})
			return
		}
		b, kind := be.Block, probBlock
		if errors.Is(err, blockcipher.ErrBadCipherSize) {
			kind = probTail // the bytes after the last whole block
		}
		c.problem(fsckProblem{File: rel, Kind: kind, Block: &b, Detail: fmt.Sprintf("block %d: %v", b, be.Err)})
	}, func(off int64) {
		c.bar.show(base+off, c.total, fmt.Sprintf("%d files", c.r.Files))
	})
	c.r.Blocks += n
	if err != nil {
		c.problem(fsckProblem{File: rel, Kind: probError, Detail: err.Error()})
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
		c.problem(fsckProblem{File: rel, Kind: probHeaderCopy, Copy: &copyNo, Detail: detail, Repaired: repaired})
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
		c.problem(fsckProblem{File: rel, Kind: probSlot, Key: keyring.RedactURI(s.URI), Detail: fmt.Sprintf("key slot %s: %v", showURI(s.URI), s.Err)})
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
	var damaged, repaired, other int
	for _, p := range r.Problems {
		switch {
		case p.Repaired:
			repaired++
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
	fmt.Println(summary)
}
