package main

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/awnumar/memguard"
	"golang.org/x/term"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
)

// errPassFileOpen is wrapped (with keyring.ErrAccessDenied, so that it
// exits like a key file open to others) by the error for a passphrase
// file that group or others may read or write, or that another user owns.
var errPassFileOpen = errors.New("passphrase file is not private to its owner")

// checkPassphraseFile refuses a passphrase file (not "-") that is not
// private to the user, as a local key file is refused: the passphrase is
// as good as the key it protects.
func checkPassphraseFile(file string) error {
	if file == "" || file == "-" {
		return nil
	}
	fi, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("passphrase file: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("passphrase file %s is owned by uid %d, not by you (uid %d): %w: %w", file, st.Uid, os.Geteuid(), errPassFileOpen, keyring.ErrAccessDenied)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("passphrase file %s has mode %04o, open to group or others (fix: chmod 600 %s): %w: %w", file, perm, file, errPassFileOpen, keyring.ErrAccessDenied)
	}
	return nil
}

// checkPassphraseFlag checks a --passphrase-file value before anything
// is done: "-" needs a terminal to ask on (a usage error without one), a
// file must be private (checkPassphraseFile). It returns 0 or the exit
// code of the error it printed.
func checkPassphraseFlag(file string) int {
	if file == "-" && !term.IsTerminal(int(os.Stdin.Fd())) {
		errorf(exitUsage, "--passphrase-file - asks on a terminal, and there is none")
		hintf("give the passphrase in a file (mode 0600): --passphrase-file F")
		return exitUsage
	}
	if err := checkPassphraseFile(file); err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	return 0
}

// isNewPassphrase reports whether a prompt asks for a passphrase to set
// (keyring/local asks "new passphrase for local key PATH"), which is
// asked twice on a terminal.
func isNewPassphrase(prompt string) bool {
	return strings.HasPrefix(prompt, "new passphrase")
}

// askPassphrase asks for a passphrase on the terminal; a new one is asked
// twice, and must be the same both times and not empty.
func askPassphrase(prompt string) ([]byte, error) {
	p, err := promptPassphrase(prompt)
	if err != nil || !isNewPassphrase(prompt) {
		return p, err
	}
	if len(p) == 0 {
		return nil, errors.New("the new passphrase is empty")
	}
	again, err := promptPassphrase(prompt + " (again)")
	if err != nil {
		memguard.WipeBytes(p)
		return nil, err
	}
	defer memguard.WipeBytes(again)
	if subtle.ConstantTimeCompare(p, again) != 1 {
		memguard.WipeBytes(p)
		return nil, errors.New("the two passphrases differ; nothing was changed")
	}
	return p, nil
}

// readPassphraseFile returns the first line of a passphrase file, which
// must be private (checkPassphraseFile) and not empty.
func readPassphraseFile(file string) ([]byte, error) {
	if err := checkPassphraseFile(file); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("passphrase file: %w", err)
	}
	defer memguard.WipeBytes(b)
	line, _, _ := bytes.Cut(b, []byte("\n"))
	p := bytes.Clone(bytes.TrimRight(line, "\r"))
	if len(p) == 0 {
		return nil, fmt.Errorf("passphrase file %s is empty", file)
	}
	return p, nil
}

// unusedPassphraseFile is the usage error for a --passphrase-file that no
// key needed: silently ignoring it would leave the user believing a key
// is protected, or that the file was checked.
func unusedPassphraseFile(file, why string) int {
	errorf(exitUsage, "--passphrase-file %s is not used: %s", file, why)
	hintf("protect a local key file, or change its passphrase, with 'kmsfs passwd'")
	return exitUsage
}

// initPassphraseUse says, before init creates anything, which of the
// volume's keys a --passphrase-file applies to: local key files to be
// created (it protects them) and existing protected ones (it opens
// them). It returns the keys it applies to, and the others with the
// reason (an existing unprotected key file, a key that is not local).
// An error is about a key file that cannot be read at all.
func initPassphraseUse(keys []string) (uses []string, others []string, err error) {
	for _, u := range keys {
		if !strings.HasPrefix(u, local.Scheme+":") {
			others = append(others, keyring.RedactURI(u)+" is not a local key file")
			continue
		}
		path, err := local.ParseURI(u)
		if err != nil {
			return nil, nil, err
		}
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			uses = append(uses, u)
			continue
		}
		protected, err := local.Protected(path)
		if err != nil {
			return nil, nil, err
		}
		if protected {
			uses = append(uses, u)
		} else {
			others = append(others, u+" exists and is not protected by a passphrase")
		}
	}
	return uses, others, nil
}

// trackedPassphraseSource returns passphraseSource(file) and a function
// that reports whether it has given a passphrase, for refusing a
// --passphrase-file that no key needed (unusedPassphraseFile).
func trackedPassphraseSource(file string) (func(prompt string) ([]byte, error), func() bool) {
	var used atomic.Bool
	src := passphraseSource(file)
	return func(prompt string) ([]byte, error) {
		p, err := src(prompt)
		if err == nil {
			used.Store(true)
		}
		return p, err
	}, used.Load
}
