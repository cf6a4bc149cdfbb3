package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

const initHelp = `Usage: kmsfs init [--key URI]... [--block-size N] [--reuse-files N] [--reuse-seconds S] [--one-key-per-file] [--passphrase-file F] [--public-key [URI=]PEMFILE]... [--write-only] CIPHERDIR

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
        --format-version N    3 (the default: page-aligned blocks, file
                              sizes and holes authenticated, small files in
                              one page) or 2 (the layout kmsfs releases
                              before format 3 read)
        --public-key [URI=]F  the public key (PEM) of an asymmetric --key
                              (SCHEME+rsa:// or SCHEME+sm2://); URI= may be
                              left out when there is one such key. Without
                              it the public key is fetched from the key
                              service once
        --write-only          this machine holds public keys only: it
                              writes new files and never reads others (every
                              --key must be asymmetric). Its mounts call no
                              key service; the names key is kept in this
                              user's trust record, which it needs to find
                              names (docs/KEYS.md, "Write-only volumes")
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
	formatVersion := fl.Int("format-version", 3, "")
	pubFlags := new(stringList)
	fl.Var(pubFlags, "public-key", "")
	writeOnly := fl.Bool("write-only", false, "")
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
	pubs, err := publicKeyFlags(*pubFlags, keys)
	if err != nil {
		return usageError("%v", err)
	}
	if *writeOnly {
		if pubs, err = writeOnlyKeys(keys, pubs); err != nil {
			return errorf(exitCode(err), "%v", err)
		}
		opts.WriteOnly = true
	}
	opts.PublicKeys = pubs
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
	if !*writeOnly {
		if err := probeAsymmetric(res, keys); err != nil {
			return errorf(exitCode(err), "%v", err)
		}
	}
	if *strict {
		*reuseFiles = 1
	}
	cfg, err := volume.Init(context.Background(), dir, volume.InitOptions{Keys: keys, BlockSize: *bs, ReuseFiles: *reuseFiles, ReuseSeconds: *reuseSecs, PlaintextNames: *plainNames, WriteOnly: *writeOnly, FormatVersion: *formatVersion}, res)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	if err := recordInit(cfg, res.PublicKeys(), *writeOnly); err != nil {
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
	if *writeOnly {
		fmt.Println("kmsfs: write-only: mounts on this machine write new files and cannot read existing ones; a machine whose credentials may decrypt with the key reads everything (kmsfs trust)")
		for _, k := range keys {
			if p, err := pubkey.ParsePublicKey(pubs[k]); err == nil {
				if der, err := pubkey.MarshalPublicKey(p); err == nil {
					fmt.Printf("kmsfs: public key of %s: SHA-256 %x; check it against the console, and run 'kmsfs trust' on a reading machine now: a wrong public key makes every file unreadable\n", keyring.RedactURI(k), sha256.Sum256(der))
				}
			}
		}
	}
	fmt.Printf("kmsfs: mount it with: kmsfs mount %s MOUNTPOINT\n", dir)
	return exitOK
}

// publicKeyFlags reads the --public-key flags: URI=FILE, or FILE alone
// when exactly one of keys is asymmetric. It returns the keys' PEM by URI.
func publicKeyFlags(flags []string, keys []string) (map[string][]byte, error) {
	var asym []string
	for _, k := range keys {
		if pubkey.IsURI(k) {
			asym = append(asym, k)
		}
	}
	out := map[string][]byte{}
	for _, f := range flags {
		uri, file, found := strings.Cut(f, "=")
		if !found || !strings.Contains(uri, "://") {
			if len(asym) != 1 {
				return nil, fmt.Errorf("--public-key %s: say which key it is for (URI=FILE): %d asymmetric keys given", f, len(asym))
			}
			uri, file = asym[0], f
		}
		if !slices.Contains(asym, uri) {
			return nil, fmt.Errorf("--public-key: %s is not one of the asymmetric (SCHEME+rsa:// or SCHEME+sm2://) keys given with --key", keyring.RedactURI(uri))
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--public-key: %w", err)
		}
		if _, err := pubkey.ParsePublicKey(b); err != nil {
			return nil, fmt.Errorf("--public-key %s: %w", file, err)
		}
		out[uri] = b
	}
	return out, nil
}

// probeAsymmetric wraps a throw-away key under each asymmetric key and has
// the key service unwrap it (one call each), before the volume exists: a
// key that hands out a public key but does not decrypt (a signing key, or
// credentials without the decrypt permission) would otherwise make every
// file unreadable.
func probeAsymmetric(res *keyring.Resolver, keys []string) error {
	encCtx := volume.EncryptionContext(strings.Repeat("0", 32))
	for _, k := range keys {
		if !pubkey.IsURI(k) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		kr, err := res.Get(ctx, k)
		var dk, back *keyring.Key
		var w []byte
		if err == nil {
			dk, w, err = kr.GenerateDataKey(ctx, encCtx)
		}
		if err == nil {
			back, err = kr.Unwrap(ctx, w, encCtx)
		}
		cancel()
		same := err == nil && bytes.Equal(dk.Bytes(), back.Bytes())
		dk.Destroy()
		back.Destroy()
		if err != nil {
			return fmt.Errorf("key %s: a test key wrapped under its public key did not come back from the key service (for a machine that only writes, use --write-only): %w", keyring.RedactURI(k), err)
		}
		if !same {
			return fmt.Errorf("key %s: %w: the key service returned another key than the one wrapped", keyring.RedactURI(k), keyring.ErrUnwrap)
		}
	}
	return nil
}

// writeOnlyKeys checks that every key is asymmetric and returns the
// public keys of all of them, fetching from the key service (one call
// each) those not given.
func writeOnlyKeys(keys []string, pubs map[string][]byte) (map[string][]byte, error) {
	reg := newRegistry()
	for _, k := range keys {
		if !pubkey.IsURI(k) {
			return nil, fmt.Errorf("--write-only: %w: %s is not an asymmetric key (SCHEME+rsa:// or SCHEME+sm2://): a write-only machine must hold public keys only", keyring.ErrBadURI, keyring.RedactURI(k))
		}
		if pubs[k] != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		kr, err := reg.Open(ctx, k, keyring.Options{})
		var der []byte
		if err == nil {
			der, err = kr.(interface {
				PublicKey(context.Context) ([]byte, error)
			}).PublicKey(ctx)
		}
		cancel()
		if err != nil {
			return nil, fmt.Errorf("--write-only: fetching the public key of %s (or give it with --public-key): %w", keyring.RedactURI(k), err)
		}
		pubs[k] = pubkey.PEM(der)
	}
	return pubs, nil
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
	case errors.Is(err, volume.ErrNotVolume), errors.Is(err, volume.ErrBadConfig), errors.Is(err, volume.ErrCorrupt), errors.Is(err, volume.ErrRollback), errors.Is(err, volume.ErrPins):
		return exitNotVolume
	case errors.Is(err, keyring.ErrBadURI):
		return exitUsage
	case errors.Is(err, volume.ErrKeyUnavailable), errors.Is(err, volume.ErrUntrusted), keyring.IsPermanent(err),
		errors.Is(err, keyring.ErrUnavailable), errors.Is(err, keyring.ErrThrottled):
		return exitKey
	}
	return exitError
}
