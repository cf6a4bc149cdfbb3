package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/term"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
)

// What the offline tools (info, fsck, cat, encrypt, decrypt) share: they
// read a volume or a file without mounting it.

// exitDamaged is the exit code of fsck, cat and decrypt when they find a
// damaged header, block or journal record (README, "Exit codes").
const exitDamaged = 6

// offlineTimeout bounds opening a volume's keys and configuration.
const offlineTimeout = 2 * time.Minute

// openOffline opens the volume in dir as a mount would: with the keys of
// its trust record and those named with --key (extra), never with a URI
// read from the volume. res is the resolver to use; logger receives the
// volume's warnings.
func openOffline(ctx context.Context, dir string, extra []string, res *keyring.Resolver, logger *log.Logger) (*volume.Volume, error) {
	rec, _, err := trustedKeys(dir, extra)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, offlineTimeout)
	defer cancel()
	if rec.WriteOnly != nil {
		return nil, fmt.Errorf("%s: %w: this machine holds only public keys for the volume (write-only); run this where the key service decrypts", dir, keyring.ErrWriteOnly)
	}
	vol, err := volume.Open(ctx, dir, res, volume.OpenOptions{ExtraKeys: extra, Trusted: rec.Keys, Retired: rec.Retired, Log: logger})
	if err == nil && rec.Pins != nil {
		if err = vol.CheckPins(volume.Pins(*rec.Pins)); err != nil {
			vol.Close()
			return nil, err
		}
	}
	return vol, err
}

// printable escapes what is not printable in s (a message may quote a
// key URI or a name read from a volume, which its writer chose), so that
// a report cannot drive the terminal.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == unicode.ReplacementChar:
			b.WriteString(`\ufffd`)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

// showURI returns a key URI for a message or a report: redacted
// (keyring.RedactURI), and quoted if it holds anything but printable
// characters (a URI read from a volume is whatever its writer chose).
func showURI(u string) string {
	u = keyring.RedactURI(u)
	for _, r := range u {
		if !unicode.IsPrint(r) {
			return strconv.Quote(u)
		}
	}
	return u
}

// checkCipherDir says, as mount does, that a missing CIPHERDIR or one
// that is not a directory is not a volume (exit 3); 0 if it is a
// directory.
func checkCipherDir(dir string) int {
	fi, err := os.Stat(dir)
	if err != nil {
		return errorf(exitNotVolume, "cipher directory %s: %v", dir, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return errorf(exitNotVolume, "cipher directory %s is not a directory", dir)
	}
	return 0
}

// isDamage reports whether err says that a header, a block or a size
// failed authentication or parsing.
func isDamage(err error) bool {
	return errors.Is(err, volume.ErrCorrupt) || errors.Is(err, blockcipher.ErrAuth) || errors.Is(err, blockcipher.ErrBadCipherSize)
}

// fileExitCode maps an error about one file of a volume (not its
// configuration) to an exit code: damage is exitDamaged.
func fileExitCode(err error) int {
	if errors.Is(err, volume.ErrWrongKey) {
		return exitKey
	}
	if isDamage(err) {
		return exitDamaged
	}
	return exitCode(err)
}

// progressBar draws a progress bar on stderr, at most every 100 ms, only
// when stderr is a terminal: none in a pipe or a log file.
type progressBar struct {
	label string
	on    bool
	last  time.Time
	drawn bool
}

func newProgressBar(label string, quiet bool) *progressBar {
	return &progressBar{label: label, on: !quiet && term.IsTerminal(int(os.Stderr.Fd()))}
}

// show draws done of total, with a note after the bar.
func (p *progressBar) show(done, total int64, note string) {
	if !p.on || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	const width = 30
	n := int(width * done / max(total, 1))
	n = min(max(n, 0), width)
	fmt.Fprintf(os.Stderr, "\r\033[Kkmsfs: %s [%s%s] %s", p.label, strings.Repeat("=", n), strings.Repeat(" ", width-n), note)
	p.drawn = true
}

// done clears the bar.
func (p *progressBar) done() {
	if p.drawn {
		fmt.Fprint(os.Stderr, "\r\033[K")
		p.drawn = false
	}
}
