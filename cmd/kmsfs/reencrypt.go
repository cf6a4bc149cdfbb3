package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/fs/control"
)

const reencryptHelp = `Usage: kmsfs reencrypt [--restart] [--quiet] MOUNTPOINT [PATH]...

Re-encrypts the content of every regular file of a mounted volume (or of
the files under each PATH, relative to the mount point) under new data
keys: a new file ID, a new data key wrapped under the volume's current
keys, every block encrypted again. Use it when a data key, or a key that
wrapped data keys, may have leaked: "kmsfs rewrap --remove" stops a key
from opening files, but whoever kept an old header and the removed key
(or a file's data key) can still decrypt what is stored until the content
is re-encrypted. See docs/KEYS.md.

The mount does the work, so files stay in use: a file being re-encrypted
waits for a moment, open files carry on under their new key, hard links
and modification times are kept. Each file is crash-safe (a whole copy is
made first in the backing directory, so a file needs its size in free
space; a crash is finished by the next mount). The run is resumable:
interrupted (Ctrl-C, a crash, an error), run it again and it goes on after
the last file done; files that failed are retried.

Options:
        --restart             forget an interrupted run and start over
    -q, --quiet               no progress bar
`

// reencryptState is what a run remembers between interruptions, per
// user and volume, outside the backing directory (whose holder must not
// be able to make a run skip files).
type reencryptState struct {
	VolumeID string    `json:"volume_id"`
	Scope    []string  `json:"scope"`
	Started  time.Time `json:"started"`
	// After is the last path done, in walk order.
	After  string   `json:"after"`
	Files  int64    `json:"files"`
	Bytes  int64    `json:"bytes"`
	Failed []string `json:"failed,omitempty"`
}

func reencryptStatePath(volumeID string) (string, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "kmsfs", "reencrypt", volumeID+".json"), nil
}

func (s *reencryptState) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// walkBefore reports whether a comes before b in the order
// filepath.WalkDir visits paths: by component, each compared as a string.
func walkBefore(a, b string) bool {
	return slices.Compare(strings.Split(a, "/"), strings.Split(b, "/")) < 0
}

func runReencrypt(args []string) int {
	fl := flag.NewFlagSet("reencrypt", flag.ContinueOnError)
	restart := fl.Bool("restart", false, "")
	quiet := fl.Bool("quiet", false, "")
	fl.BoolVar(quiet, "q", false, "")
	pos, code, ok := parseFlags(fl, args, reencryptHelp)
	if !ok {
		return code
	}
	if len(pos) < 1 {
		return usageError("reencrypt takes a mount point, and paths below it")
	}
	mnt, err := filepath.Abs(pos[0])
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	scope := []string{}
	for _, p := range pos[1:] {
		rel := p
		if filepath.IsAbs(p) {
			if rel, err = filepath.Rel(mnt, p); err != nil {
				return usageError("%s is not below %s", p, mnt)
			}
		}
		rel = filepath.Clean(rel)
		if rel == ".." || strings.HasPrefix(rel, "../") {
			return usageError("%s is not below %s", p, mnt)
		}
		scope = append(scope, rel)
	}
	if len(scope) == 0 {
		scope = []string{"."}
	}
	slices.Sort(scope)

	b, err := control.Request(mnt, "stats")
	if err != nil {
		return errorf(exitError, "%v (reencrypt works on a mounted volume: mount it first)", err)
	}
	var stats struct {
		Volume string `json:"volume"`
	}
	if err := json.Unmarshal(b, &stats); err != nil || stats.Volume == "" {
		return errorf(exitError, "%s: the server did not say its volume", mnt)
	}
	statePath, err := reencryptStatePath(stats.Volume)
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	st := &reencryptState{VolumeID: stats.Volume, Scope: scope, Started: time.Now().UTC()}
	if old, err := os.ReadFile(statePath); err == nil && !*restart {
		var prev reencryptState
		if json.Unmarshal(old, &prev) == nil && prev.VolumeID == stats.Volume && slices.Equal(prev.Scope, scope) {
			st = &prev
			fmt.Fprintf(os.Stderr, "kmsfs: resuming the re-encryption started %s: %d files done, going on after %q\n",
				st.Started.Local().Format(time.DateTime), st.Files, st.After)
		} else if err == nil {
			hintf("an interrupted re-encryption of other paths is recorded in %s; it is replaced", statePath)
		}
	}

	// Re-encrypted files must not share a data key with any file from
	// before the run (new files share one; see docs/KEYS.md).
	if _, err := control.Request(mnt, "rotate"); err != nil {
		return errorf(exitError, "%v", err)
	}

	// Count what there is to do, for the progress bar.
	var totalFiles, totalBytes int64
	for _, s := range scope {
		filepath.WalkDir(filepath.Join(mnt, s), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					totalFiles++
					totalBytes += fi.Size()
				}
			}
			return nil
		})
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	bar := newProgressBar("re-encrypting", *quiet)
	start := time.Now()
	var files, bytes int64 // this run's
	lastSave := time.Now()
	failed := st.Failed
	st.Failed = nil
	var failures []string
	interrupted := false

	// A file of several hard links is done once per run.
	linked := map[uint64]bool{}
	one := func(rel string) {
		size, did, err := reencryptOne(mnt, rel, linked)
		if err != nil {
			fmt.Fprintf(os.Stderr, "\r\033[Kkmsfs: %s: %v\n", rel, err)
			failures = append(failures, rel)
			return
		}
		if !did {
			return
		}
		files++
		bytes += size
		st.Files++
		st.Bytes += size
	}
	progress := func() {
		el := max(time.Since(start).Seconds(), 0.001)
		bar.show(st.Bytes, totalBytes, fmt.Sprintf("%d/%d files, %s, %.0f files/s, %.1f MB/s",
			st.Files, totalFiles, humanBytes(st.Bytes), float64(files)/el, float64(bytes)/el/1e6))
	}
	stop := func() bool {
		select {
		case <-sig:
			interrupted = true
		default:
		}
		return interrupted
	}
	// Files that failed last time first.
	for _, rel := range failed {
		if stop() {
			break
		}
		one(rel)
	}
	for _, s := range scope {
		if interrupted {
			break
		}
		root := filepath.Join(mnt, s)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if stop() {
				return filepath.SkipAll
			}
			rel, _ := filepath.Rel(mnt, p)
			if err != nil {
				fmt.Fprintf(os.Stderr, "\r\033[Kkmsfs: %s: %v\n", rel, err)
				failures = append(failures, rel)
				return nil
			}
			if st.After != "" && !walkBefore(st.After, rel) {
				return nil // done in an earlier run
			}
			if d.Type().IsRegular() {
				one(rel)
				progress()
			}
			st.After = rel
			if time.Since(lastSave) > time.Second {
				st.Failed = failures
				st.save(statePath)
				lastSave = time.Now()
			}
			return nil
		})
		if err != nil {
			bar.done()
			return errorf(exitError, "%v", err)
		}
	}
	bar.done()
	el := max(time.Since(start).Seconds(), 0.001)
	fmt.Fprintf(os.Stderr, "kmsfs: re-encrypted %d files, %s, in %.1f s (%.0f files/s, %.1f MB/s)\n",
		files, humanBytes(bytes), el, float64(files)/el, float64(bytes)/el/1e6)
	st.Failed = failures
	if interrupted || len(failures) > 0 {
		if err := st.save(statePath); err != nil {
			return errorf(exitError, "saving where the re-encryption stopped: %v", err)
		}
		if interrupted {
			return errorf(exitError, "interrupted; run the same command again to go on")
		}
		return errorf(exitError, "%d files were not re-encrypted (see above); run the same command again to retry them", len(failures))
	}
	os.Remove(statePath)
	return exitOK
}

// reencryptOne asks the server of mnt to re-encrypt the file at rel,
// holding a descriptor of it meanwhile so that the mount knows it. It
// reports whether there was a file to do: not one removed since, nor
// another link of one done already.
func reencryptOne(mnt, rel string, linked map[uint64]bool) (int64, bool, error) {
	fd, err := unix.Open(filepath.Join(mnt, rel), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, false, nil // removed since: nothing to protect
		}
		return 0, false, err
	}
	defer unix.Close(fd)
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		return 0, false, err
	}
	if s.Mode&unix.S_IFMT != unix.S_IFREG || linked[s.Ino] {
		return 0, false, nil
	}
	if s.Nlink > 1 {
		linked[s.Ino] = true
	}
	b, err := control.RequestWait(mnt, control.ReencryptRequest(rel), 24*time.Hour)
	if err != nil {
		return 0, false, errors.New(strings.TrimPrefix(err.Error(), mnt+": "))
	}
	var r struct {
		Size int64 `json:"size"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, false, fmt.Errorf("the server's answer: %w", err)
	}
	return r.Size, true, nil
}
