package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
)

const initHelp = `Usage: kmsfs init [--key URI]... [--block-size N] [--reuse-files N] [--reuse-seconds S] [--one-key-per-file] [--passphrase-file F] CIPHERDIR

Makes the empty directory CIPHERDIR a kmsfs volume. Every file written
through its mount gets a data key wrapped under each --key (any one of them
opens the file).

Options:
    -k, --key URI             key to wrap file keys under (repeatable); default
                              local://$HOME/.config/kmsfs/local.key
    -b, --block-size N        plaintext block size, a power of two from 4096
                              to 1048576 (default 4096)
        --reuse-files N       one data key (one KMS call) serves up to N new
                              files (default 1024); each file still gets its
                              own content key
        --reuse-seconds S     ... and for at most S seconds (default 300)
        --one-key-per-file    a data key of its own for every file (same as
                              --reuse-files 1)
    -p, --passphrase-file F   protect a newly created local key file with the
                              passphrase in F (first line); use "-" to be
                              asked on the terminal
        --plaintext-names     keep file names, symlink targets and extended
                              attributes in clear in the backing directory
                              (by default they are encrypted)
`

func runInit(args []string) int {
	fl := flag.NewFlagSet("init", flag.ContinueOnError)
	keysP, pf := keyFlags(fl)
	bs := fl.Int("block-size", volume.DefaultBlockSize, "")
	fl.IntVar(bs, "b", volume.DefaultBlockSize, "")
	reuseFiles := fl.Int("reuse-files", volume.DefaultReuseFiles, "")
	reuseSecs := fl.Int("reuse-seconds", volume.DefaultReuseSeconds, "")
	strict := fl.Bool("one-key-per-file", false, "")
	plainNames := fl.Bool("plaintext-names", false, "")
	pos, code, ok := parseFlags(fl, args, initHelp)
	if !ok {
		return code
	}
	keys := *keysP
	if len(pos) != 1 {
		return usageError("init takes one directory, got %d arguments", len(pos))
	}
	dir, err := filepath.Abs(pos[0])
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	if len(keys) == 0 {
		def, err := defaultKeyURI()
		if err != nil {
			return errorf(exitKey, "%v", err)
		}
		keys = append(keys, def)
	}
	if code := checkKeyURIs(keys...); code != 0 {
		return code
	}
	opts := keyring.Options{Create: true}
	if *pf != "" {
		if code := checkPassphraseFlag(*pf); code != 0 {
			return code
		}
		uses, others, err := initPassphraseUse(keys)
		if err != nil {
			return errorf(exitCode(err), "%v", err)
		}
		if len(uses) == 0 {
			return unusedPassphraseFile(*pf, strings.Join(others, "; "))
		}
		for _, o := range others {
			fmt.Fprintf(os.Stderr, "kmsfs: warning: --passphrase-file does not apply to every key: %s\n", o)
		}
		opts.Passphrase = passphraseSource(*pf)
	}
	// Which local key files exist before init: init says which it made.
	existed := map[string]bool{}
	for _, k := range keys {
		if path, err := local.ParseURI(k); err == nil && strings.HasPrefix(k, "local:") {
			_, serr := os.Stat(path)
			existed[path] = serr == nil
		}
	}
	res := keyring.NewResolver(newRegistry(), opts)
	if *strict {
		*reuseFiles = 1
	}
	cfg, err := volume.Init(context.Background(), dir, volume.InitOptions{Keys: keys, BlockSize: *bs, ReuseFiles: *reuseFiles, ReuseSeconds: *reuseSecs, PlaintextNames: *plainNames}, res)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	if err := recordInit(cfg); err != nil {
		return errorf(exitError, "recording the volume's keys as trusted: %v", err)
	}
	fmt.Printf("kmsfs: initialised %s (volume %s, format version %d, block size %d, a data key serves up to %d files for %d s)\n", dir, cfg.VolumeID, cfg.Version, cfg.BlockSize, cfg.ReuseFiles, cfg.ReuseSeconds)
	if cfg.EncryptedNames() {
		fmt.Println("kmsfs: names, symlink targets and extended attributes are encrypted")
	} else {
		fmt.Println("kmsfs: names, symlink targets and extended attributes are stored in clear (--plaintext-names)")
	}
	for _, k := range cfg.Keys {
		fmt.Printf("kmsfs: file keys wrapped under %s\n", keyring.RedactURI(k))
	}
	for path, was := range existed {
		if was {
			fmt.Printf("kmsfs: using the existing local key file %s: keep a backup of it; without it the files cannot be read\n", path)
		} else {
			fmt.Printf("kmsfs: created the local key file %s (mode 0600): back it up somewhere safe now; without it the files cannot be read\n", path)
		}
	}
	fmt.Printf("kmsfs: mount it with: kmsfs mount %s MOUNTPOINT\n", dir)
	return exitOK
}

// defaultKeyURI names the local key file in the user's config directory.
func defaultKeyURI() (string, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no --key given and no config directory for a local key: %w", err)
	}
	return "local://" + filepath.Join(d, "kmsfs", "local.key"), nil
}

// exitCode maps an error to the documented exit code (README, "Exit
// codes"). The order matters: a key that does not open the volume is a
// key problem although its slot failed like damage; a damaged volume is
// damage whatever key errors came with it; a bad key URI is a usage
// error although a key could not be opened.
func exitCode(err error) int {
	switch {
	case errors.Is(err, volume.ErrWrongKey):
		return exitKey
	case errors.Is(err, volume.ErrNotVolume), errors.Is(err, volume.ErrBadConfig), errors.Is(err, volume.ErrCorrupt), errors.Is(err, volume.ErrRollback):
		return exitNotVolume
	case errors.Is(err, keyring.ErrBadURI):
		return exitUsage
	case errors.Is(err, volume.ErrKeyUnavailable), errors.Is(err, volume.ErrUntrusted), keyring.IsPermanent(err),
		errors.Is(err, keyring.ErrUnavailable), errors.Is(err, keyring.ErrThrottled):
		return exitKey
	}
	return exitError
}
