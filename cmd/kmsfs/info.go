package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/names"
	"github.com/kmsfs/kmsfs/fs/trust"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
)

func init() {
	commands["info"] = runInfo
}

const infoHelp = `Usage: kmsfs info [--json] [--key URI]... [--passphrase-file F] CIPHERDIR

Shows what the volume in CIPHERDIR is, without mounting it: its format
version, block size and volume ID, whether its names are encrypted, the
keys of its configuration and whether this machine can use each of them
(trusted for the volume here, and its key file or key service
reachable), the data key reuse policy, and how many files, directories
and symlinks it holds. No key, and nothing secret of the configuration
(such as the names key), is ever shown.

Only the configuration is unwrapped, and only with a trusted key: a key
that is not trusted here is never contacted. Without a trusted key, info
shows what the configuration's header tells (volume ID, block size, the
keys its slots name) and says that the configuration could not be read
(the format version and whether names are encrypted are then unknown).

Options:
        --json                print a JSON object instead of text
    -k, --key URI             also trust this key (repeatable)
    -p, --passphrase-file F   passphrase of a protected local key file

Exit status: 0 the configuration was read, 3 not a kmsfs volume or a
damaged configuration, 4 no trusted key could read the configuration
(what the header tells is still shown), 1 any other error.
`

// infoKey is one key of a volume as "kmsfs info" reports it.
type infoKey struct {
	URI string `json:"uri"`
	// NewFiles: the configuration wraps new files under it.
	NewFiles bool `json:"new_files"`
	// ConfigSlot: a key slot of the configuration names it.
	ConfigSlot bool `json:"config_slot"`
	// Trust is "trusted", "retired" (unlocks, wraps nothing new),
	// "named" (given with --key) or "untrusted".
	Trust string `json:"trust"`
	// Usable: trusted and its keyring opened; Error says why not.
	Usable bool   `json:"usable"`
	Error  string `json:"error,omitempty"`
}

// infoReport is the output of "kmsfs info".
type infoReport struct {
	Dir      string `json:"cipher_dir"`
	VolumeID string `json:"volume_id"`
	// FormatVersion is the configuration's version (1 or 2), 0 when it
	// could not be read.
	FormatVersion int `json:"format_version"`
	// Names is "siv" (entry names, symlink targets and xattrs encrypted)
	// or "plaintext" (version 1, or version 2 with names in clear); empty
	// when the configuration could not be read.
	Names      string `json:"names,omitempty"`
	BlockSize  int    `json:"block_size"`
	ConfigRead bool   `json:"config_read"`
	// WriteOnly: this machine holds only public keys for the volume; the
	// configuration shown is the copy in its trust record.
	WriteOnly    bool      `json:"write_only,omitempty"`
	ConfigError  string    `json:"config_error,omitempty"`
	Keys         []infoKey `json:"keys"`
	ReuseFiles   int       `json:"data_key_reuse_files,omitempty"`
	ReuseSeconds int       `json:"data_key_reuse_seconds,omitempty"`
	Files        int64     `json:"files"`
	Dirs         int64     `json:"directories"`
	Symlinks     int64     `json:"symlinks"`
	Other        int64     `json:"other_entries"`
	PlainBytes   int64     `json:"plaintext_bytes"`
}

func runInfo(args []string) int {
	fl := flag.NewFlagSet("info", flag.ContinueOnError)
	asJSON := fl.Bool("json", false, "")
	extraP, pf := keyFlags(fl)
	pos, code, ok := parseFlags(fl, args, infoHelp)
	if !ok {
		return code
	}
	extra := *extraP
	if len(pos) != 1 {
		return usageError("info takes one volume directory")
	}
	if code := checkKeyURIs(extra...); code != 0 {
		return code
	}
	dir, _ := filepath.Abs(pos[0])
	if code := checkCipherDir(dir); code != 0 {
		return code
	}
	// What the header tells, unauthenticated.
	id, err := volume.PeekVolumeID(dir)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	bs, err := volume.PeekBlockSize(dir)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	slotKeys, err := volume.SlotKeys(dir)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	// The format version and the names are only in the (encrypted)
	// configuration: unknown until it is read. (The preamble's version is
	// that of file headers, 1 in every volume.)
	r := infoReport{Dir: dir, VolumeID: id, BlockSize: bs}

	var rec trust.Record
	if store, err := trust.DefaultStore(); err == nil {
		if got, err := store.Load(id); err == nil {
			rec = *got
		} else if !errors.Is(err, trust.ErrNotTrusted) {
			return errorf(exitError, "%v", err)
		}
	}
	res := keyring.NewResolver(newRegistry(), keyring.Options{Passphrase: passphraseSource(*pf), PublicKeys: rec.PublicKeyMap(), WriteOnly: rec.WriteOnly != nil})
	ctx, cancel := context.WithTimeout(context.Background(), offlineTimeout)
	defer cancel()
	code = exitOK
	r.WriteOnly = rec.WriteOnly != nil
	var cfgKeys []string
	var l3 *blockcipher.Layout3
	if len(rec.Keys)+len(rec.Retired)+len(extra) == 0 {
		r.ConfigError = fmt.Sprintf("no key is trusted for this volume on this machine (see its keys and trust them with 'kmsfs trust %s', or name one with --key)", dir)
		code = exitKey
	} else {
		vol, err := volume.Open(ctx, dir, res, volume.OpenOptions{ExtraKeys: extra, Trusted: rec.Keys, Retired: rec.Retired, WriteOnly: rec.WriteOnly, Log: log.New(io.Discard, "", 0)})
		if err != nil {
			r.ConfigError = err.Error()
			code = exitCode(err)
		} else {
			// Only what is listed here is shown: the configuration also
			// holds the names key, which the Volume keeps to itself.
			c := vol.Config
			r.ConfigRead, r.VolumeID, r.FormatVersion, r.BlockSize = true, c.VolumeID, c.Version, c.BlockSize
			r.Names = volume.NamesPlaintext
			if c.EncryptedNames() {
				r.Names = volume.NamesSIV
			}
			r.ReuseFiles, r.ReuseSeconds = max(c.ReuseFiles, 1), max(c.ReuseSeconds, 1)
			cfgKeys = c.Keys
			l3 = vol.Layout3
			vol.Close()
		}
	}
	seen := map[string]bool{}
	for _, u := range append(slices.Clone(cfgKeys), slotKeys...) {
		if seen[u] {
			continue
		}
		seen[u] = true
		k := infoKey{URI: u, NewFiles: slices.Contains(cfgKeys, u), ConfigSlot: slices.Contains(slotKeys, u), Trust: "untrusted"}
		switch {
		case rec.Trusts(u):
			k.Trust = "trusted"
		case slices.Contains(extra, u):
			k.Trust = "named"
		case slices.Contains(rec.Retired, u):
			k.Trust = "retired"
		}
		if k.Trust != "untrusted" {
			// Only a trusted key is ever contacted.
			if _, err := res.Get(ctx, u); err != nil {
				k.Error = err.Error()
			} else {
				k.Usable = true
			}
		}
		k.URI = keyring.RedactURI(k.URI)
		r.Keys = append(r.Keys, k)
	}
	if err := countEntries(dir, bs, l3, &r); err != nil {
		return errorf(exitError, "%v", err)
	}
	if *asJSON {
		b, _ := json.MarshalIndent(&r, "", "  ")
		fmt.Printf("%s\n", b)
		return code
	}
	printInfo(&r)
	return code
}

// countEntries counts what the volume holds, from the backing directory
// alone: the plaintext size of a file follows from its backing size.
// kmsfs's own files are not counted: those of the root, and with
// encrypted names the kmsfs.dirid and long-name files of every directory
// (also when the configuration could not be read, since then the names
// are more likely encrypted, the default, than in clear and a file of
// the volume named so).
func countEntries(dir string, bs int, l3 *blockcipher.Layout3, r *infoReport) error {
	d, err := backing.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	l := blockcipher.Layout{BlockSize: bs, DataOffset: header.Size}
	return d.Walk(func(rel string, _ int, name string, st *unix.Stat_t) error {
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if rel == name && volume.Internal(name) {
				return nil
			}
			if r.Names != volume.NamesPlaintext && names.Internal(name) {
				return nil
			}
			r.Files++
			if l3 != nil {
				r.PlainBytes += cryptfile.StatSize3(l3, st.Size)
			} else {
				r.PlainBytes += cryptfile.StatSize(l, st.Size)
			}
		case unix.S_IFDIR:
			r.Dirs++
		case unix.S_IFLNK:
			r.Symlinks++
		default:
			r.Other++
		}
		return nil
	})
}

func printInfo(r *infoReport) {
	fmt.Printf("volume %s in %s\n", r.VolumeID, r.Dir)
	switch r.Names {
	case volume.NamesSIV:
		fmt.Printf("format version %d, block size %d, names encrypted (entry names, symlink targets and extended attributes)\n", r.FormatVersion, r.BlockSize)
	case volume.NamesPlaintext:
		fmt.Printf("format version %d, block size %d, names in clear\n", r.FormatVersion, r.BlockSize)
	default:
		fmt.Printf("format version unknown, block size %d (from the configuration's header), names encrypted or not: unknown\n", r.BlockSize)
	}
	if r.WriteOnly {
		fmt.Println("write-only on this machine: it holds public keys only; the configuration shown is the copy in its trust record")
	}
	if r.ConfigRead {
		fmt.Println("keys:")
	} else {
		fmt.Printf("configuration: could not be read: %s\n", printable(r.ConfigError))
		fmt.Println("keys named by the configuration's key slots (not authenticated):")
	}
	for _, k := range r.Keys {
		var what []string
		if k.NewFiles {
			what = append(what, "new files")
		}
		switch k.Trust {
		case "trusted":
			what = append(what, "trusted here")
		case "named":
			what = append(what, "named with --key")
		case "retired":
			what = append(what, "retired (unlocks, wraps nothing new)")
		default:
			what = append(what, "not trusted here (not contacted)")
		}
		switch {
		case k.Usable:
			what = append(what, "usable")
		case k.Error != "":
			what = append(what, "not usable: "+printable(k.Error))
		}
		fmt.Printf("  %s: %s\n", showURI(k.URI), strings.Join(what, ", "))
	}
	if r.ConfigRead {
		if r.ReuseFiles <= 1 {
			fmt.Println("data key reuse: none, every new file gets a data key of its own")
		} else {
			fmt.Printf("data key reuse: one data key serves up to %d new files for at most %d s\n", r.ReuseFiles, r.ReuseSeconds)
		}
	}
	fmt.Printf("contents: %s in %s, %s, %s\n", plural(r.Files, "file"), humanBytes(r.PlainBytes), plural(r.Dirs, "directory"), plural(r.Symlinks, "symlink"))
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if strings.HasSuffix(what, "y") {
		return fmt.Sprintf("%d %sies", n, what[:len(what)-1])
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB (%d bytes)", float64(n)/float64(div), "KMGTPE"[exp], n)
}
