package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
)

// RewrapOptions say how to change the keys of a volume.
type RewrapOptions struct {
	// Add are key URIs to wrap every data key under as well.
	Add []string
	// Remove are key URIs no file may need any more.
	Remove []string
	// Progress, if set, is called after every file with the counts so far.
	Progress func(done, total int)
	// BeforeFiles, if set, is called once the configuration holds the new
	// key list, before any file is rewritten (to tell a running mount).
	BeforeFiles func()
}

// RewrapResult counts what a rewrap did.
type RewrapResult struct {
	Keys      []string // the volume's key list afterwards
	Files     int      // files with a header
	Rewritten int      // files whose key slots changed
	Failed    int      // files that could not be rewrapped (logged)
}

// Rewrap changes the key list of the volume and re-wraps the data key of
// every file under it, rewriting header key slots only (blocks are never
// touched). It is crash-safe and resumable:
//
//  1. The configuration is replaced atomically with the new key list, so
//     new files use it (a running mount picks it up on reload).
//  2. Every file whose slots differ from the key list gets a new header
//     copy with a higher sequence number written over the copy that was
//     not valid-and-current, synced; then the other copy is overwritten
//     with the same content and synced. A crash leaves one valid copy.
//
// Running it again finishes an interrupted run; files already done are
// skipped. Data keys are unwrapped once per distinct data key (through
// the resolver's cache), and wrapped once per distinct data key and new
// key, so the key service sees calls per data key, not per file.
func Rewrap(ctx context.Context, v *Volume, o RewrapOptions) (RewrapResult, error) {
	var r RewrapResult
	if c := v.res.Cache(); c == nil {
		v.res.SetCache(keyring.NewCache(24*time.Hour, 1<<20))
	}
	keys := slices.Clone(v.Config.Keys)
	for _, u := range o.Remove {
		if !slices.Contains(v.Config.Keys, u) {
			return r, fmt.Errorf("rewrap: %s is not a key of this volume (its keys: %v)", keyring.RedactURI(u), keyring.RedactURIs(v.Config.Keys))
		}
	}
	for _, u := range o.Add {
		if _, err := v.res.Get(ctx, u); err != nil {
			return r, fmt.Errorf("rewrap: key to add: %w", err)
		}
		v.trust(u) // the user named it
		if !slices.Contains(keys, u) {
			keys = append(keys, u)
		}
	}
	keys = slices.DeleteFunc(keys, func(u string) bool { return slices.Contains(o.Remove, u) })
	for _, u := range o.Remove {
		// Its slots still unlock the files being rewrapped; no new file is
		// wrapped under it again.
		v.retire(u)
	}
	if len(keys) == 0 {
		return r, errors.New("rewrap: that would leave the volume without keys")
	}
	for _, u := range keys {
		if !v.wrapsUnder(v.aliasOf(u)) {
			// Named by a configuration the user did not make (or restored
			// from before a removal): never wrap files under it.
			return r, fmt.Errorf("rewrap: %w: the configuration names %s; remove it with --remove, or trust it first", ErrUntrusted, u)
		}
	}
	r.Keys = keys
	added := slices.ContainsFunc(keys, func(u string) bool { return !slices.Contains(v.Config.Keys, u) })
	if v.Layout3 != nil && added {
		// Every file's header copies must hold the new slots: measured
		// before anything changes.
		need, err := v.copyNeeded(ctx, keys)
		if err == nil && need > v.Config.HeaderCopySize {
			err = fmt.Errorf("the key slots of %v need %d bytes per header copy; this volume's files hold %d (its header_copy_size): leave a key out", keyring.RedactURIs(keys), need, v.Config.HeaderCopySize)
		}
		if err != nil {
			return r, fmt.Errorf("rewrap: %w", err)
		}
	}
	if !slices.Equal(keys, v.Config.Keys) {
		cfg := v.Config
		cfg.Keys = keys
		if err := v.writeConfig(ctx, &cfg); err != nil {
			return r, fmt.Errorf("rewrap: %w", err)
		}
		v.setConfig(&cfg)
	}
	if o.BeforeFiles != nil {
		o.BeforeFiles()
	}

	// The walk and every open go through directory descriptors and never
	// follow a symlink (package backing): a directory replaced by a
	// symlink during the walk is not entered. kmsfs's own files are
	// skipped: the configuration was rewritten above, and the journal,
	// re-encryption copies, directory IDs and long-name files have no
	// key slots of their own.
	var files []string
	err := v.dir.Walk(func(rel string, _ int, _ string, st *unix.Stat_t) error {
		if st.Mode&unix.S_IFMT == unix.S_IFREG && !v.Internal(rel) {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("rewrap: listing %s: %w", v.Dir, err)
	}
	wrapped := map[string][]byte{} // (data key's first slot, key URI) → wrapped key
	paths := v.NewPaths()
	for i, p := range files {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		// Named as seen through the mount where its name decrypts, in
		// errors and in the volume's log lines.
		name, nerr := paths.Plain(p)
		if nerr != nil {
			name = p
		}
		changed, had, err := v.rewrapFile(ctx, p, name, keys, wrapped)
		if had {
			r.Files++
		}
		if changed {
			r.Rewritten++
		}
		if err != nil {
			r.Failed++
			msg := strings.TrimPrefix(err.Error(), name+": ")
			switch {
			case nerr != nil:
				v.Log.Printf("kmsfs: rewrap %s (backing path: it cannot be named, %v): %s", p, nerr, msg)
			case name != p:
				v.Log.Printf("kmsfs: rewrap %s (backing path %s): %s", name, p, msg)
			default:
				v.Log.Printf("kmsfs: rewrap %s: %s", p, msg)
			}
		}
		if o.Progress != nil {
			o.Progress(i+1, len(files))
		}
	}
	if r.Failed > 0 {
		return r, fmt.Errorf("rewrap: %d of %d files failed (see the log); run rewrap again once their keys are available", r.Failed, r.Files)
	}
	return r, nil
}

// rewrapFile brings the key slots of one file, path relative to the
// backing directory (name in messages), in line with keys.
func (v *Volume) rewrapFile(ctx context.Context, path, name string, keys []string, memo map[string][]byte) (changed, hadHeader bool, err error) {
	fd, err := v.dir.Open(path, syscall.O_RDWR|unix.O_NOATIME, 0)
	if errors.Is(err, syscall.EPERM) {
		fd, err = v.dir.Open(path, syscall.O_RDWR, 0)
	}
	if err != nil {
		return false, false, err
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return false, false, err
	}
	if st.Size == 0 {
		return false, false, nil // no header yet: gets the new keys when written
	}
	// header.MaxLen bytes, or up to the end of the file, hold the whole
	// header; its preamble says how long it is (4096 bytes in version 1,
	// 32 + 2*C in version 3, followed by the file's content).
	buf := make([]byte, header.MaxLen)
	n, err := cryptfile.PreadHead(fd, buf)
	if err != nil {
		return false, true, fmt.Errorf("reading header: %w", err)
	}
	h, err := header.Parse(buf[:n])
	if errors.Is(err, header.ErrShort) {
		return false, true, fmt.Errorf("reading header: %w", io.ErrUnexpectedEOF)
	}
	if err != nil {
		return false, true, errors.Join(ErrCorrupt, err)
	}
	u, err := v.unlockDK(ctx, h, name, nil)
	if err != nil {
		return false, true, err
	}
	defer u.dk.Destroy()
	cur := h.Copies[u.accepted]

	// The data key is named by the slot that opened it.
	dkName := u.slot.URI + "\x00" + string(u.slot.Wrapped)
	var slots []header.Slot
	for _, k := range keys {
		if i := slices.IndexFunc(cur.Slots, func(s header.Slot) bool { return s.URI == k }); i >= 0 {
			slots = append(slots, cur.Slots[i])
			continue
		}
		w, ok := memo[dkName+"\x00"+k]
		if !ok {
			kr, err := v.res.Get(ctx, v.aliasOf(k))
			if err != nil {
				return false, true, err
			}
			wr, ok := kr.(keyring.Wrapper)
			if !ok {
				return false, true, fmt.Errorf("key %s cannot wrap an existing data key", k)
			}
			if w, err = wr.Wrap(ctx, u.dk, u.slot.Context); err == nil {
				w, err = v.tagSlot(k, u.slot.Context, w)
			}
			if err != nil {
				return false, true, err
			}
			memo[dkName+"\x00"+k] = w
		}
		slots = append(slots, header.Slot{URI: k, Context: u.slot.Context, Wrapped: w})
	}
	other := 1 - u.accepted
	if slotsEqual(slots, cur.Slots) && h.Copies[other] != nil && slotsEqual(h.Copies[other].Slots, cur.Slots) {
		return false, true, nil
	}
	idx, seq := h.NextCopy(u.accepted)
	next := &header.Copy{Seq: seq, Slots: slots}
	if err := header.SealCopy(h.Preamble, next, u.dk.Bytes()); err != nil {
		return false, true, err
	}
	// A copy is the preamble's copy size, at its offset: the bytes after
	// the header (a version-3 file's content) are not touched.
	cb := make([]byte, h.Preamble.CopyLen())
	if err := next.MarshalTo(cb); err != nil {
		return false, true, err
	}
	// New copy first, durable; then the old one, so no copy keeps a slot
	// of a removed key.
	for _, i := range []int{idx, 1 - idx} {
		if n, err := syscall.Pwrite(fd, cb, h.Preamble.CopyOffset(i)); err != nil || n < len(cb) {
			if err == nil {
				err = io.ErrShortWrite
			}
			return false, true, fmt.Errorf("writing header copy %d: %w", i, err)
		}
		if err := unix.Fdatasync(fd); err != nil {
			return false, true, fmt.Errorf("syncing header copy %d: %w", i, err)
		}
	}
	return true, true, nil
}

func slotsEqual(a, b []header.Slot) bool {
	return slices.EqualFunc(a, b, func(x, y header.Slot) bool {
		return x.URI == y.URI && bytes.Equal(x.Context, y.Context) && bytes.Equal(x.Wrapped, y.Wrapped)
	})
}
