package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/kmsfs/kmsfs/fs/trust"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

func init() {
	commands["trust"] = runTrust
}

const trustHelp = `Usage: kmsfs trust [--yes] [--key URI]... CIPHERDIR

Records, for this user, which keys are trusted for the volume in CIPHERDIR.
Key URIs stored in a volume are written by whoever holds its storage, so
kmsfs unlocks only slots that name a key of the volume's trust record
(kept in $XDG_CONFIG_HOME/kmsfs/trust, outside the volume) or a key named
with --key on the command line. "kmsfs init" records the keys it was given;
use trust for a volume met for the first time on this machine (a restored
backup, a copied disk).

Without --key, trust shows the volume ID and the keys its configuration
names, and asks before recording them. With --key, only the given keys
are recorded. Either way the keys must open the volume's configuration.

On a write-only machine (kmsfs init --write-only), --write-only --key
URI... [--public-key [URI=]PEM]... replaces the keys new files are wrapped
under by the given asymmetric keys, for example after "kmsfs rewrap" on a
reading machine changed the volume's keys: nothing is read from the
volume, since this machine cannot decrypt its configuration.

Options:
    -k, --key URI     trust this key (repeatable) instead of the ones the
                      configuration names
    -y, --yes         do not ask
    -p, --passphrase-file F   passphrase of a protected local key file
        --write-only  (write-only machine) set the keys of its copy of the
                      configuration to --key
        --public-key [URI=]F  the public key (PEM) of an asymmetric --key
`

func runTrust(args []string) int {
	fl := flag.NewFlagSet("trust", flag.ContinueOnError)
	keysP, pf := keyFlags(fl)
	yes := fl.Bool("yes", false, "")
	fl.BoolVar(yes, "y", false, "")
	writeOnly := fl.Bool("write-only", false, "")
	pubFlags := new(stringList)
	fl.Var(pubFlags, "public-key", "")
	pos, code, ok := parseFlags(fl, args, trustHelp)
	if !ok {
		return code
	}
	keys := *keysP
	if *writeOnly {
		if len(pos) != 1 || len(keys) == 0 {
			return usageError("trust --write-only takes --key URI... and one volume directory")
		}
		return retrustWriteOnly(pos[0], keys, *pubFlags)
	}
	if len(*pubFlags) > 0 {
		return usageError("--public-key goes with --write-only (a reading machine fetches public keys itself)")
	}
	if len(pos) != 1 {
		return usageError("trust takes one volume directory")
	}
	if code := checkKeyURIs(keys...); code != 0 {
		return code
	}
	dir, _ := filepath.Abs(pos[0])
	id, err := volume.PeekVolumeID(dir)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	store, err := trust.DefaultStore()
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	old, err := store.Load(id)
	switch {
	case errors.Is(err, trust.ErrNotTrusted):
		old = nil
	case err != nil:
		return errorf(exitError, "%v", err)
	case old.WriteOnly != nil:
		return errorf(exitKey, "volume %s: %v: this machine is write-only for it (kmsfs init --write-only); trust it on a machine that can decrypt", id, keyring.ErrWriteOnly)
	}
	named, err := volume.SlotKeys(dir)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	if len(keys) == 0 {
		keys = named
	}
	fmt.Printf("volume %s in %s\n", id, dir)
	for _, k := range named {
		fmt.Printf("  its configuration names key %s\n", keyring.RedactURI(k))
	}
	for _, k := range keys {
		fmt.Printf("  to trust: %s\n", keyring.RedactURI(k))
	}
	if !*yes {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return errorf(exitUsage, "not asking without a terminal: check the keys above and run again with --yes")
		}
		fmt.Print("trust these keys for this volume? [y/N] ")
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errorf(exitError, "nothing recorded")
		}
	}
	// The keys must open the configuration: trust is recorded only for
	// keys that really belong to the volume.
	src, used := trackedPassphraseSource(*pf)
	res := keyring.NewResolver(newRegistry(), keyring.Options{Passphrase: src})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vol, err := volume.Open(ctx, dir, res, volume.OpenOptions{Trusted: keys, Log: log.New(io.Discard, "", 0)})
	if err != nil {
		return errorf(exitCode(err), "the keys do not open the volume: %v", err)
	}
	gotID, epoch := vol.Config.VolumeID, vol.Config.Epoch
	if old != nil && old.Pins != nil && gotID == id {
		if err := vol.CheckPins(volume.Pins(*old.Pins)); err != nil {
			vol.Close()
			return errorf(exitCode(err), "%v", err)
		}
	}
	pins := trust.Pins(vol.Pins())
	vol.Close()
	if *pf != "" && !used() {
		return unusedPassphraseFile(*pf, "none of the keys is protected by a passphrase")
	}
	for _, k := range keys {
		if pubkey.IsURI(k) {
			if _, err := res.PublicKey(ctx, k); err != nil {
				return errorf(exitCode(err), "fetching the public key of %s: %v", keyring.RedactURI(k), err)
			}
		}
	}
	pubs := res.PublicKeys()
	if err := store.Update(gotID, func(r *trust.Record) {
		r.Epoch = max(r.Epoch, epoch)
		for _, k := range keys {
			if !slices.Contains(r.Keys, k) {
				r.Keys = append(r.Keys, k)
			}
			r.Retired = slices.DeleteFunc(r.Retired, func(x string) bool { return x == k })
		}
		addPublicKeys(r, pubs)
		r.Pins = &pins
	}); err != nil {
		return errorf(exitError, "%v", err)
	}
	fmt.Printf("kmsfs: trusted for volume %s: %s (recorded in %s)\n", gotID, strings.Join(keyring.RedactURIs(keys), " "), store.Dir)
	return exitOK
}

// retrustWriteOnly sets the keys of a write-only machine's copy of the
// volume's configuration (kmsfs trust --write-only).
func retrustWriteOnly(dir string, keys, pubFlags []string) int {
	if code := checkKeyURIs(keys...); code != 0 {
		return code
	}
	dir, _ = filepath.Abs(dir)
	id, err := volume.PeekVolumeID(dir)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	store, err := trust.DefaultStore()
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	rec, err := store.Load(id)
	if err != nil {
		return errorf(exitKey, "%v", err)
	}
	if rec.WriteOnly == nil {
		return usageError("volume %s is not write-only on this machine; --write-only only changes the keys of a write-only machine", id)
	}
	pubs, err := publicKeyFlags(pubFlags, keys)
	if err != nil {
		return usageError("%v", err)
	}
	for u, p := range rec.PublicKeyMap() {
		if _, ok := pubs[u]; !ok {
			pubs[u] = p
		}
	}
	if pubs, err = writeOnlyKeys(keys, pubs); err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	cfg, err := volume.ParseConfig(rec.WriteOnly)
	clear(rec.WriteOnly)
	if err != nil {
		return errorf(exitError, "the write-only configuration in the trust record: %v", err)
	}
	defer func() { clear(cfg.NamesKey); clear(cfg.SlotKey) }()
	cfg.Keys = slices.Clone(keys)
	plain, err := volume.MarshalConfig(cfg)
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	defer clear(plain)
	if err := store.Update(id, func(r *trust.Record) {
		r.Keys = slices.Clone(keys)
		r.WriteOnly = plain
		r.PublicKeys = nil
		for _, k := range keys {
			if r.PublicKeys == nil {
				r.PublicKeys = map[string]string{}
			}
			r.PublicKeys[k] = string(pubs[k])
		}
	}); err != nil {
		return errorf(exitError, "%v", err)
	}
	fmt.Printf("kmsfs: write-only machine: new files of volume %s are wrapped under %s\n", id, strings.Join(keyring.RedactURIs(keys), " "))
	return exitOK
}

// trustedKeys returns the trust record of the volume in dir for
// volume.OpenOptions. A volume without a record can still be opened
// with keys named on the command line (extra); without them it is an
// error that says what to do.
func trustedKeys(dir string, extra []string) (*trust.Record, *trust.Store, error) {
	store, err := trust.DefaultStore()
	if err != nil {
		return nil, nil, err
	}
	id, err := volume.PeekVolumeID(dir)
	if err != nil {
		return nil, nil, err
	}
	rec, err := store.Load(id)
	if errors.Is(err, trust.ErrNotTrusted) {
		if len(extra) > 0 {
			// Keys named on the command line are trusted for this run only:
			// nothing is recorded (no store).
			return &trust.Record{VolumeID: id}, nil, nil
		}
		return nil, nil, fmt.Errorf("%w: %w; see its keys and trust them with 'kmsfs trust %s', or name a key with --key", volume.ErrUntrusted, err, dir)
	}
	if err != nil {
		return nil, nil, err
	}
	return rec, store, nil
}

// recordInit records the keys a new volume was made with as trusted,
// with the public keys of its asymmetric keys (DER, by URI) and, for a
// write-only machine, its configuration (names key included; cleared
// from cfg here).
func recordInit(cfg *volume.Config, pubs map[string][]byte, writeOnly bool) error {
	defer func() { clear(cfg.NamesKey); cfg.NamesKey = nil; clear(cfg.SlotKey); cfg.SlotKey = nil }()
	store, err := trust.DefaultStore()
	if err != nil {
		return err
	}
	pins := trust.Pins(cfg.Pins)
	rec := &trust.Record{VolumeID: cfg.VolumeID, Keys: slices.Clone(cfg.Keys), Epoch: cfg.Epoch, Pins: &pins}
	addPublicKeys(rec, pubs)
	if writeOnly {
		plain, err := volume.MarshalConfig(cfg)
		if err != nil {
			return err
		}
		defer clear(plain)
		rec.WriteOnly = plain
	}
	return store.Save(rec)
}

// addPublicKeys records the public keys (DER, by URI) of rec's keys.
func addPublicKeys(rec *trust.Record, pubs map[string][]byte) {
	for uri, der := range pubs {
		if !slices.Contains(rec.Keys, uri) && !slices.Contains(rec.Retired, uri) {
			continue
		}
		if rec.PublicKeys == nil {
			rec.PublicKeys = map[string]string{}
		}
		rec.PublicKeys[uri] = string(pubkey.PEM(der))
	}
}

// checkPins refuses a configuration that differs from what rec pins (a
// configuration forged with a public key, or replaced), and pins the
// volume's configuration in a record that has no pins yet, or none of a
// slot key the volume gained since.
func checkPins(vol *volume.Volume, rec *trust.Record, store *trust.Store) error {
	got := trust.Pins(vol.Pins())
	if rec.Pins != nil {
		if err := vol.CheckPins(volume.Pins(*rec.Pins)); err != nil {
			return err
		}
		if *rec.Pins == got {
			return nil
		}
	}
	if store == nil || vol.WriteOnly() {
		return nil
	}
	if err := store.Update(vol.Config.VolumeID, func(r *trust.Record) { r.Pins = &got }); err != nil {
		return fmt.Errorf("recording the configuration's pins: %w", err)
	}
	rec.Pins = &got
	return nil
}

// checkEpoch refuses a configuration older than the last one this user
// accepted for the volume (rec, from store), unless allow, and records a
// newer one, or an older one allowed explicitly. A nil store (keys named
// on the command line, no record) checks nothing.
func checkEpoch(vol *volume.Volume, rec *trust.Record, store *trust.Store, allow bool) error {
	if store == nil {
		return nil
	}
	if err := checkPins(vol, rec, store); err != nil {
		return err
	}
	got := vol.Config.Epoch
	if got < rec.Epoch && !allow {
		return fmt.Errorf("%s: %w: epoch %d, but this user already saw epoch %d; if you restored it on purpose, mount once with --allow-rollback", vol.Dir, volume.ErrRollback, got, rec.Epoch)
	}
	if got == rec.Epoch {
		return nil
	}
	if err := store.Update(vol.Config.VolumeID, func(r *trust.Record) { r.Epoch = got }); err != nil {
		return fmt.Errorf("recording the configuration's epoch: %w", err)
	}
	return nil
}
