package volume

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
)

// This file holds what an offline check of a volume ("kmsfs fsck",
// "kmsfs info") needs beyond opening files: the whole of a header
// checked, both copies and every key slot, and a damaged copy restored
// from its valid twin.

// ErrUnusedCopy is the CopyCheck.Err of a header copy that is all zero
// bytes. The format allows it, but kmsfs always writes both copies, so
// an unused copy next to a used one was lost.
var ErrUnusedCopy = errors.New("unused (all zero bytes)")

// CopyCheck is what CheckHeader found in one header copy: Valid, or Err
// saying why not. Neither means the copy was not checked (no key opened
// the file).
type CopyCheck struct {
	Valid bool
	Err   error
}

// SlotCheck is what CheckHeader found in one key slot.
type SlotCheck struct {
	// URI is the key the slot names.
	URI string
	// Err is nil if the slot opens the file. Otherwise it wraps
	// ErrUntrusted for a slot not tried (no trusted key for it),
	// ErrCorrupt for a damaged slot (another volume's, or one that
	// unwraps to another data key), or the key's own error.
	Err error
}

// HeaderCheck is the result of CheckHeader.
type HeaderCheck struct {
	// Copies are the states of header copy 0 and 1.
	Copies [2]CopyCheck
	// Slots are the distinct key slots of the valid copies, each once,
	// in the order they were found; empty when no key opened the file.
	Slots []SlotCheck

	raw      []byte          // the header as checked, its HeaderLen bytes
	pre      header.Preamble // its preamble: copy size and offsets
	accepted int             // the valid copy used for repairs
}

// CheckHeader reads the header of the backing file fd and checks all of
// it: both copies (each against the data key) and every key slot (each
// slot naming a trusted key is unwrapped; this calls key services). It
// returns the file's key as Load does, nil for an empty file; the key is
// the caller's to close. If no copy can be unlocked the error is Load's,
// and the check holds what could be learnt without a key (copies that do
// not parse).
func (v *Volume) CheckHeader(ctx context.Context, fd int, name string) (*HeaderCheck, cryptfile.Key, error) {
	// header.MaxLen bytes, or up to the end of the file, hold the whole
	// header; its preamble says how long it is (4096 bytes in version 1,
	// 32 + 2*C in version 3, followed by the file's content).
	buf := make([]byte, header.MaxLen)
	n, err := cryptfile.PreadHead(fd, buf)
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	case n == 0:
		return nil, nil, nil
	}
	h, err := header.Parse(buf[:n])
	switch {
	case errors.Is(err, header.ErrShort):
		return nil, nil, fmt.Errorf("%s: %w", name, errors.Join(ErrCorrupt, errors.New("backing file shorter than its header")))
	case err != nil:
		return nil, nil, fmt.Errorf("%s: %w", name, errors.Join(ErrCorrupt, err))
	}
	c := &HeaderCheck{raw: buf[:h.Preamble.HeaderLen()], pre: h.Preamble, accepted: -1}
	for i := range c.Copies {
		switch {
		case h.CopyErrs[i] != nil:
			c.Copies[i].Err = h.CopyErrs[i]
		case h.Copies[i] == nil:
			c.Copies[i].Err = ErrUnusedCopy
		}
	}
	var u *unlocked
	var dkErr error
	fk, err := newFileKeysV(h.Preamble.Version, h.Preamble.FileID, v.Layout, func(ck []byte) error {
		u, dkErr = v.unlockDK(ctx, h, name, ck)
		return dkErr
	})
	switch {
	case dkErr != nil:
		return c, nil, dkErr
	case err != nil:
		if u != nil {
			u.dk.Destroy()
		}
		return c, nil, fmt.Errorf("%s: %w", name, err)
	}
	defer u.dk.Destroy()
	fk.v, fk.volume, fk.hdr, fk.accepted, fk.slot = v, u.volume, h, u.accepted, u.slot
	c.accepted = u.accepted
	for i, cp := range h.Copies {
		if cp == nil {
			continue
		}
		if i == u.accepted {
			c.Copies[i].Valid = true
		} else if err := header.VerifyCopy(h.Preamble, cp, u.dk.Bytes()); err != nil {
			c.Copies[i].Err = err
		} else {
			c.Copies[i].Valid = true
		}
	}
	seen := map[string]bool{}
	for _, ci := range h.Candidates() {
		if !c.Copies[ci].Valid {
			continue // unauthenticated: its slots say nothing
		}
		for _, s := range h.Copies[ci].Slots {
			id := s.URI + "\x00" + string(s.Wrapped) + "\x00" + string(s.Context)
			if seen[id] {
				continue
			}
			seen[id] = true
			c.Slots = append(c.Slots, SlotCheck{URI: s.URI, Err: v.checkSlot(ctx, s, u)})
		}
	}
	return c, fk, nil
}

// checkSlot says whether slot s opens the file whose data key u holds.
func (v *Volume) checkSlot(ctx context.Context, s header.Slot, u *unlocked) error {
	if s.URI == u.slot.URI && bytes.Equal(s.Wrapped, u.slot.Wrapped) && bytes.Equal(s.Context, u.slot.Context) {
		return nil
	}
	vol, err := volumeFromContext(s.Context)
	if err != nil {
		return errors.Join(ErrCorrupt, err)
	}
	if vol != u.volume {
		return fmt.Errorf("%w: the slot belongs to volume %s, not %s", ErrCorrupt, vol, u.volume)
	}
	dk, err := v.unwrapSlot(ctx, s)
	switch {
	case err == nil:
	case errors.Is(err, ErrUntrusted):
		return err // not tried with its own key: other keys failing says nothing
	case errors.Is(err, keyring.ErrUnwrap):
		// Its own key refuses it: altered, or wrapped by another key
		// (as unlockDK counts it).
		return errors.Join(ErrCorrupt, err)
	default:
		return err
	}
	defer dk.Destroy()
	if subtle.ConstantTimeCompare(dk.Bytes(), u.dk.Bytes()) != 1 {
		return fmt.Errorf("%w: the slot unwraps to another data key than the file's", ErrCorrupt)
	}
	return nil
}

// Damaged reports whether a copy of the checked header is not valid
// while the other is: what Repair restores.
func (c *HeaderCheck) Damaged() bool {
	return c.accepted >= 0 && (!c.Copies[0].Valid || !c.Copies[1].Valid)
}

// Repair writes the valid copy of a checked header, byte for byte, over
// the copy that is not valid, and syncs the file. fd is the descriptor
// that was checked, open for writing; the header must not have changed
// since. It returns the index of the copy rewritten, or -1 if there was
// nothing to restore (no damaged copy, or no valid one to restore it
// from). The valid copy authenticates the preamble and itself, so the
// restored copy is valid too; nothing is guessed.
func (c *HeaderCheck) Repair(fd int) (int, error) {
	if !c.Damaged() {
		return -1, nil
	}
	// Only the header is compared and written: bytes at and after its
	// end are the file's content (version 3: inline data or metadata).
	now := make([]byte, len(c.raw))
	if n, err := cryptfile.PreadHead(fd, now); err != nil || n < len(now) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return -1, fmt.Errorf("reading header: %w", err)
	}
	if !bytes.Equal(now, c.raw) {
		return -1, errors.New("the header changed since it was checked")
	}
	good, bad := c.accepted, 1-c.accepted
	from := c.pre.CopyOffset(good)
	cb := c.raw[from : from+int64(c.pre.CopyLen())]
	if n, err := syscall.Pwrite(fd, cb, c.pre.CopyOffset(bad)); err != nil || n < len(cb) {
		if err == nil {
			err = io.ErrShortWrite
		}
		return -1, fmt.Errorf("writing header copy %d: %w", bad, err)
	}
	if err := unix.Fdatasync(fd); err != nil {
		return -1, fmt.Errorf("syncing header copy %d: %w", bad, err)
	}
	return bad, nil
}

// PeekBlockSize returns the block size the preamble of the configuration
// of the volume in dir gives, without unwrapping anything (and so
// without authenticating it).
func PeekBlockSize(dir string) (int, error) {
	h, err := configHeader(dir)
	if err != nil {
		return 0, err
	}
	return h.Preamble.BlockSize(), nil
}
