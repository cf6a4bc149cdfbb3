package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kmsfs/kmsfs/fs/control"
	"github.com/kmsfs/kmsfs/fs/trust"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
)

const statsHelp = `Usage: kmsfs stats [--json] MOUNTPOINT

Shows the key service calls, key cache hits and misses, and data key
reuse of a running mount.
`

func runStats(args []string) int {
	fl := flag.NewFlagSet("stats", flag.ContinueOnError)
	asJSON := fl.Bool("json", false, "")
	pos, code, ok := parseFlags(fl, args, statsHelp)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError("stats takes one mount point")
	}
	mnt, _ := filepath.Abs(pos[0])
	b, err := control.Request(mnt, "stats")
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	if *asJSON {
		os.Stdout.Write(b)
		return exitOK
	}
	var s volume.Stats
	if err := json.Unmarshal(b, &s); err != nil {
		return errorf(exitError, "stats: %v", err)
	}
	fmt.Printf("volume %s (%s)\n", s.Volume, s.Dir)
	fmt.Printf("new files: %d keyed with %d data keys (reuse up to %d files / %d s), %d waited for the key service\n",
		s.NewKeys.FilesKeyed, s.NewKeys.DataKeysGenerated, s.NewKeys.ReuseFiles, s.NewKeys.ReuseSeconds, s.NewKeys.CreatesWaited)
	fmt.Printf("key cache: %d entries, %d hits, %d misses\n", s.Cache.Entries, s.Cache.Hits, s.Cache.Misses)
	fmt.Printf("keys in locked memory: %d (%d bytes locked)\n", s.OpenKeys, s.Locked)
	for _, k := range s.Keys {
		calls := k.Generate + k.Unwrap + k.Wrap
		avg := int64(0)
		if calls > 0 {
			avg = k.TotalMs / calls
		}
		fmt.Printf("%s: %d generate, %d unwrap, %d wrap, %d KMS calls, %d errors, avg %d ms, max %d ms\n",
			keyring.RedactURI(k.URI), k.Generate, k.Unwrap, k.Wrap, k.KMSCalls, k.Errors, avg, k.MaxMs)
		if k.LastError != "" {
			fmt.Printf("    last error: %s\n", k.LastError)
		}
	}
	return exitOK
}

const rewrapHelp = `Usage: kmsfs rewrap [--add URI]... [--remove URI]... [--passphrase-file F] CIPHERDIR

Changes the keys of a volume: wraps every file's data key under each --add
key and drops the slots of each --remove key, rewriting header key slots
only (data is never re-encrypted). Crash-safe and resumable: run it again
after an interruption. Works on a mounted volume (the mount is told to use
the new keys for new files). Without --add or --remove it brings every file
in line with the volume's key list.

Options:
    -a, --add URI             key to add (repeatable)
    -r, --remove URI          key to remove (repeatable)
    -k, --key URI             also try this key for existing slots (a moved
                              local key file)
    -p, --passphrase-file F   passphrase of a protected local key file
    -q, --quiet               no progress bar
`

func runRewrap(args []string) int {
	fl := flag.NewFlagSet("rewrap", flag.ContinueOnError)
	var add, remove, extra stringList
	fl.Var(&add, "add", "")
	fl.Var(&add, "a", "")
	fl.Var(&remove, "remove", "")
	fl.Var(&remove, "r", "")
	fl.Var(&extra, "key", "")
	fl.Var(&extra, "k", "")
	pf := fl.String("passphrase-file", "", "")
	fl.StringVar(pf, "p", "", "")
	quiet := fl.Bool("quiet", false, "")
	fl.BoolVar(quiet, "q", false, "")
	pos, code, ok := parseFlags(fl, args, rewrapHelp)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError("rewrap takes one volume directory")
	}
	if code := checkKeyURIs(slices.Concat(add, remove, extra)...); code != 0 {
		return code
	}
	dir, _ := filepath.Abs(pos[0])
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var logBuf bytes.Buffer
	reg := newRegistry()
	src, used := trackedPassphraseSource(*pf)
	res := keyring.NewResolver(reg, keyring.Options{Passphrase: src, Create: false})
	res.SetCache(keyring.NewCache(24*time.Hour, 1<<20))
	for _, u := range add {
		// Like init, create a local key file that does not exist yet.
		if strings.HasPrefix(u, "local:") {
			kr, err := reg.Open(ctx, u, keyring.Options{Create: true})
			if err != nil {
				return errorf(exitCode(err), "key to add: %v", err)
			}
			if c, ok := kr.(interface{ Close() error }); ok {
				c.Close()
			}
		}
	}
	rec, store, err := trustedKeys(dir, extra)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	if rec.WriteOnly != nil {
		return errorf(exitKey, "%s: %v: rewrap needs a machine that can decrypt with the volume's keys", dir, keyring.ErrWriteOnly)
	}
	res = keyring.NewResolver(reg, keyring.Options{Passphrase: src, PublicKeys: rec.PublicKeyMap()})
	res.SetCache(keyring.NewCache(24*time.Hour, 1<<20))
	vol, err := volume.Open(ctx, dir, res, volume.OpenOptions{ExtraKeys: extra, Trusted: rec.Keys, Retired: rec.Retired, Log: log.New(&logBuf, "", 0)})
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	if err := checkEpoch(vol, rec, store, false); err != nil {
		vol.Close()
		return errorf(exitCode(err), "%v", err)
	}
	defer vol.Close()
	if *pf != "" && !used() {
		return unusedPassphraseFile(*pf, "no key of the volume is protected by a passphrase")
	}
	mnt := mountPointOf(dir)
	// A bar on a terminal only: none in a pipe or a log file.
	bar := newProgressBar("rewrap", *quiet)
	progress := func(done, total int) {
		bar.show(int64(done), int64(total), fmt.Sprintf("%d/%d files", done, total))
		if done == total {
			bar.done()
		}
	}
	// The trust record learns the new key list before the configuration
	// does, so that a rewrap killed at any point leaves a volume this
	// user can mount and rewrap again: added keys are trusted, removed
	// ones are kept for unlocking only (never for new files) until every
	// file is rewrapped.
	if store != nil {
		err := store.Update(vol.Config.VolumeID, func(r *trust.Record) {
			for _, u := range add {
				if !slices.Contains(r.Keys, u) {
					r.Keys = append(r.Keys, u)
				}
			}
			for _, u := range remove {
				if slices.Contains(vol.Config.Keys, u) && slices.Contains(r.Keys, u) {
					r.Keys = slices.DeleteFunc(r.Keys, func(x string) bool { return x == u })
					r.Retired = append(r.Retired, u)
				}
			}
		})
		if err != nil {
			return errorf(exitError, "updating the trust record before the rewrap: %v", err)
		}
	}
	var trustErr error
	r, err := volume.Rewrap(ctx, vol, volume.RewrapOptions{Add: add, Remove: remove, Progress: progress, BeforeFiles: func() {
		// The configuration now holds the new key list and epoch.
		if store == nil {
			return // keys named with --key only: nothing recorded
		}
		trustErr = store.Update(vol.Config.VolumeID, func(r *trust.Record) {
			r.Epoch = max(r.Epoch, vol.Config.Epoch)
		})
		if mnt != "" {
			if _, err := control.Request(mnt, "reload"); err != nil {
				fmt.Fprintf(os.Stderr, "kmsfs: warning: the mount at %s did not reload its keys: %v\n", mnt, err)
			}
		}
	}})
	for _, l := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
		if l != "" {
			fmt.Fprintln(os.Stderr, l)
		}
	}
	if trustErr != nil {
		fmt.Fprintf(os.Stderr, "kmsfs: warning: the trust record was not updated: %v\n", trustErr)
	} else if err == nil && len(remove) > 0 && store != nil {
		// Every file is rewrapped: the removed keys open nothing any more.
		if terr := store.Update(vol.Config.VolumeID, func(r *trust.Record) {
			r.Retired = slices.DeleteFunc(r.Retired, func(x string) bool { return slices.Contains(remove, x) })
		}); terr != nil {
			fmt.Fprintf(os.Stderr, "kmsfs: warning: the trust record was not updated: %v\n", terr)
		}
	}
	var calls int64
	for _, k := range res.Stats() {
		calls += k.Generate + k.Unwrap + k.Wrap
	}
	fmt.Printf("kmsfs: rewrap: %d files, %d rewritten, %d failed, %d key service calls; keys now %s\n",
		r.Files, r.Rewritten, r.Failed, calls, strings.Join(keyring.RedactURIs(r.Keys), " "))
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	return exitOK
}

// mountPointOf finds where the volume in dir is mounted, from
// /proc/self/mountinfo (kmsfs mounts name their backing directory as the
// source), or "".
func mountPointOf(dir string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) || len(fields) < 5 {
			continue
		}
		if strings.HasPrefix(fields[sep+1], "fuse") && unescapeOctal(fields[sep+2]) == dir {
			return unescapeOctal(fields[4])
		}
	}
	return ""
}

func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
