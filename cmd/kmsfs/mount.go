package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/awnumar/memguard"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/kmsfs/kmsfs/fs"
	"github.com/kmsfs/kmsfs/fs/control"
	"github.com/kmsfs/kmsfs/fs/trust"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
)

const mountHelp = `Usage: kmsfs mount [options] CIPHERDIR MOUNTPOINT

Mounts the kmsfs volume CIPHERDIR at MOUNTPOINT. Returns once the mount is
ready (the server keeps running in the background) or fails with a one-line
error. Unmount with "kmsfs umount MOUNTPOINT"; SIGINT or SIGTERM to the
server unmounts too.

Options:
    -f, --foreground          stay in the foreground
        --ro                  mount read-only
        --allow-other         let other users in (permissions are enforced)
        --allow-rollback      accept a configuration older than one already
                              seen for this volume (a backup restored on
                              purpose); it is recorded as the one seen
        --nonempty            mount over a directory that is not empty (its
                              entries are hidden while mounted)
        --noexec              do not let programs be executed from the mount
    -o OPTIONS                mount(8)-style options, e.g. ro,key=URI: the
                              options of /etc/fstab (see "mount.kmsfs --help")
    -l, --log-file F          append the server's log to F
    -k, --key URI             also try this key for key slots of the same kind
                              (repeatable), e.g. a local key file that moved
    -p, --passphrase-file F   passphrase of a protected local key file
        --key-cache-ttl D     keep unwrapped data keys (sealed, in memory) for
                              D after their last use, e.g. 5m (default), 0 to
                              ask the key service on every open
        --key-cache-size N    keep at most N cached data keys (default 10000)
        --debug               log every FUSE request
        --cpuprofile F        write a CPU profile of the server to F (for
                              performance work)
`

// Key cache defaults: five minutes keeps a working set of files (a build,
// a backup run, an editing session) from calling the key service on every
// open, while a key revoked in the KMS stops working within minutes; 10,000
// sealed entries cost about 2 MiB of ordinary memory.
const (
	defaultCacheTTL  = 5 * time.Minute
	defaultCacheSize = 10000
)

// Environment of the re-executed background server: the descriptor it
// reports readiness on and the one it reads a passphrase from.
const (
	envReadyFD = "KMSFS_READY_FD"
	envPassFD  = "KMSFS_PASSPHRASE_FD"
)

func runMount(args []string) int {
	fl := flag.NewFlagSet("mount", flag.ContinueOnError)
	fg := fl.Bool("foreground", false, "")
	fl.BoolVar(fg, "f", false, "")
	ro := fl.Bool("ro", false, "")
	allowOther := fl.Bool("allow-other", false, "")
	nonempty := fl.Bool("nonempty", false, "")
	allowRollback := fl.Bool("allow-rollback", false, "")
	noexec := fl.Bool("noexec", false, "")
	var mountOpts stringList
	fl.Var(&mountOpts, "o", "")
	logFile := fl.String("log-file", "", "")
	fl.StringVar(logFile, "l", "", "")
	pf := fl.String("passphrase-file", "", "")
	fl.StringVar(pf, "p", "", "")
	dbg := fl.Bool("debug", false, "")
	cpuProfile := fl.String("cpuprofile", "", "")
	cacheTTL := fl.Duration("key-cache-ttl", defaultCacheTTL, "")
	cacheSize := fl.Int("key-cache-size", defaultCacheSize, "")
	var extra stringList
	fl.Var(&extra, "key", "")
	fl.Var(&extra, "k", "")
	pos, code, ok := parseFlags(fl, args, mountHelp)
	if !ok {
		return code
	}
	if code := applyMountOptions(fl, mountOpts); code != 0 {
		return code
	}
	if len(pos) != 2 {
		return usageError("mount takes CIPHERDIR and MOUNTPOINT, got %d arguments", len(pos))
	}
	if code := checkKeyURIs(extra...); code != 0 {
		return code
	}
	cipherDir, _ := filepath.Abs(pos[0])
	mnt, _ := filepath.Abs(pos[1])
	if code := checkMountPoint(mnt); code != 0 {
		return code
	}
	if code := checkPlacement(cipherDir, mnt, *nonempty || os.Getenv(envReadyFD) != ""); code != 0 {
		return code
	}
	if fi, err := os.Stat(cipherDir); err != nil {
		return errorf(exitNotVolume, "cipher directory %s: %v", cipherDir, errors.Unwrap(err))
	} else if !fi.IsDir() {
		return errorf(exitNotVolume, "cipher directory %s is not a directory", cipherDir)
	}
	if _, err := os.Stat(filepath.Join(cipherDir, volume.ConfigName)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			errorf(exitNotVolume, "%s: %v", cipherDir, volume.ErrNotVolume)
			hintf("create one with 'kmsfs init %s'", cipherDir)
			return exitNotVolume
		}
		return errorf(exitNotVolume, "%v", err)
	}
	rec, store, err := trustedKeys(cipherDir, extra)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	openOpts := volume.OpenOptions{ExtraKeys: extra, Trusted: rec.Keys, Retired: rec.Retired, WriteOnly: rec.WriteOnly}
	keyOpts := keyring.Options{PublicKeys: rec.PublicKeyMap(), WriteOnly: rec.WriteOnly != nil}
	if !*fg && os.Getenv(envReadyFD) == "" {
		// Open the volume here first, so key problems and passphrase
		// prompts happen on the user's terminal.
		var pass []byte
		src := passphraseSource(*pf)
		o := keyOpts
		o.Passphrase = func(prompt string) ([]byte, error) {
			p, err := src(prompt)
			if err == nil {
				pass = bytes.Clone(p)
			}
			return p, err
		}
		res := keyring.NewResolver(newRegistry(), o)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		vol, err := volume.Open(ctx, cipherDir, res, openOpts)
		cancel()
		if err != nil {
			return errorf(exitCode(err), "%v", err)
		}
		err = checkEpoch(vol, rec, store, *allowRollback)
		vol.Close()
		if err != nil {
			return errorf(exitCode(err), "%v", err)
		}
		if *pf != "" && pass == nil {
			return unusedPassphraseFile(*pf, "no key of the volume is protected by a passphrase")
		}
		return spawnServer(args, pass)
	}

	background := os.Getenv(envReadyFD) != ""
	ready := readyReporter()
	logger, logCloser, err := serverLog(*logFile, background, mnt)
	if err != nil {
		return ready(exitError, err.Error())
	}
	defer logCloser.Close()

	opts := keyOpts
	opts.Passphrase = passphraseSource(*pf)
	if fdStr := os.Getenv(envPassFD); fdStr != "" {
		opts.Passphrase = passphraseFromFD(fdStr)
	}
	res := keyring.NewResolver(newRegistry(), opts)
	cache := keyring.NewCache(*cacheTTL, *cacheSize)
	res.SetCache(cache)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	openOpts.Log = logger
	vol, err := volume.Open(ctx, cipherDir, res, openOpts)
	cancel()
	clear(rec.WriteOnly) // the names and slot keys are in locked memory now
	if err != nil {
		return ready(exitCode(err), err.Error())
	}
	defer vol.Close()
	if err := checkEpoch(vol, rec, store, *allowRollback); err != nil {
		return ready(exitCode(err), err.Error())
	}
	// Catch signals before mounting: one that arrives while the mount
	// comes up is handled (unmount) once it is up, instead of killing the
	// process and leaving a dead mount.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	srv, err := fs.Mount(vol, mnt, fs.MountOptions{ReadOnly: *ro, AllowOther: *allowOther, Debug: *dbg, NoExec: *noexec})
	if err != nil {
		return ready(exitMount, err.Error())
	}
	if ctl, err := control.Serve(controlled{vol, srv}, mnt); err != nil {
		logger.Printf("kmsfs: %v (kmsfs stats and rewrap reloads will not reach this mount)", err)
	} else {
		defer ctl.Close()
	}
	logger.Printf("kmsfs: serving %s at %s (volume %s)", cipherDir, mnt, vol.Config.VolumeID)
	if vol.WriteOnly() {
		logger.Printf("kmsfs: write-only mount: this machine holds public keys only; it writes new files and cannot open files it did not create")
	}
	ready(0, "")
	// A foreground server started by systemd (Type=notify) tells it the
	// mount is ready, and when it stops.
	if err := sdNotify("READY=1\nSTATUS=serving " + mnt); err != nil {
		logger.Printf("kmsfs: %v", err)
	}
	stopping := sync.OnceFunc(func() {
		if err := sdNotify("STOPPING=1"); err != nil {
			logger.Printf("kmsfs: %v", err)
		}
	})

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	go func() {
		for s := range sig {
			logger.Printf("kmsfs: %v: unmounting %s", s, mnt)
			stopping()
			if err := srv.Unmount(); err != nil {
				// Busy: detach it now (new accesses fail, nothing new can
				// enter) and keep serving the open files until they are
				// closed; the server then exits.
				if derr := unix.Unmount(mnt, unix.MNT_DETACH); derr != nil {
					logger.Printf("kmsfs: unmount %s: %v; lazy unmount: %v", mnt, err, derr)
				} else {
					logger.Printf("kmsfs: unmount %s: %v; detached lazily, serving the files still open until they are closed", mnt, err)
				}
			}
		}
	}()
	srv.Wait()
	stopping()
	logger.Printf("kmsfs: %s unmounted", mnt)
	// The deferred vol.Close wipes the volume's keys; run() then purges
	// memguard.
	return exitOK
}

// checkMountPoint fails early, with a clear message, for the problems a
// mount would otherwise report obscurely.
func checkMountPoint(mnt string) int {
	fi, err := os.Stat(mnt)
	if err != nil {
		return errorf(exitMount, "mount point %s: %v", mnt, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return errorf(exitMount, "mount point %s is not a directory", mnt)
	}
	var st, pst unix.Stat_t
	if unix.Stat(mnt, &st) == nil && unix.Stat(filepath.Dir(mnt), &pst) == nil && st.Dev != pst.Dev && mnt != "/" {
		errorf(exitMount, "mount point %s is busy: something is already mounted there", mnt)
		hintf("unmount it first with 'kmsfs umount %s'", mnt)
		return exitMount
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		errorf(exitMount, "/dev/fuse is missing: the FUSE kernel module is not available")
		hintf("load it with 'modprobe fuse' (or run where /dev/fuse exists)")
		return exitMount
	}
	return 0
}

// checkPlacement refuses a mount point that is the volume's directory,
// inside it (the server would serve requests to itself and hang) or
// above it (the mount would hide the volume), and, unless nonempty, a
// mount point that is not empty (its files would be hidden).
func checkPlacement(cipherDir, mnt string, nonempty bool) int {
	c, err1 := filepath.EvalSymlinks(cipherDir)
	m, err2 := filepath.EvalSymlinks(mnt)
	if err1 != nil || err2 != nil {
		return 0 // reported by the checks that follow
	}
	inside := func(a, b string) bool { return a == b || b == "/" || strings.HasPrefix(a, b+"/") }
	switch {
	case c == m:
		return errorf(exitMount, "mount point %s is the volume's own directory", mnt)
	case inside(m, c):
		return errorf(exitMount, "mount point %s is inside the volume's directory %s", mnt, cipherDir)
	case inside(c, m):
		return errorf(exitMount, "mount point %s is above the volume's directory %s: the mount would hide it", mnt, cipherDir)
	}
	if !nonempty {
		if ents, err := os.ReadDir(mnt); err == nil && len(ents) > 0 {
			errorf(exitMount, "mount point %s is not empty (%d entries would be hidden while mounted)", mnt, len(ents))
			hintf("mount over them anyway with --nonempty")
			return exitMount
		}
	}
	return 0
}

// readyReporter returns the function the server calls once: with code 0
// when the mount is ready, or with an exit code and message when it failed.
// In the foreground it just prints errors.
func readyReporter() func(code int, msg string) int {
	fdStr := os.Getenv(envReadyFD)
	if fdStr == "" {
		return func(code int, msg string) int {
			if code != 0 {
				return errorf(code, "%s", msg)
			}
			return 0
		}
	}
	os.Unsetenv(envReadyFD)
	fd, _ := strconv.Atoi(fdStr)
	w := os.NewFile(uintptr(fd), "ready")
	return func(code int, msg string) int {
		fmt.Fprintf(w, "%d %s\n", code, strings.ReplaceAll(msg, "\n", " "))
		w.Close()
		return code
	}
}

// spawnServer re-executes kmsfs in the foreground in a new session and
// waits for it to report that the mount is ready.
func spawnServer(args []string, pass []byte) int {
	exe, err := os.Executable()
	if err != nil {
		return errorf(exitError, "finding own executable: %v", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	cmd := exec.Command(exe, append([]string{"mount"}, args...)...)
	cmd.Args[0] = "kmsfs" // not mount.kmsfs, when run as the mount helper
	// The server is not the process a service manager started: it must
	// not answer on its $NOTIFY_SOCKET.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envNotifySocket+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, envReadyFD+"=3")
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	defer devnull.Close()
	// The server logs to --log-file, syslog or a file (serverLog), never
	// to the terminal it outlives.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	if pass != nil {
		// The server has no terminal: hand it the passphrase over a pipe.
		ppr, ppw, err := os.Pipe()
		if err != nil {
			return errorf(exitError, "%v", err)
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, ppr)
		cmd.Env = append(cmd.Env, envPassFD+"=4")
		go func() {
			ppw.Write(pass)
			memguard.WipeBytes(pass)
			ppw.Close()
		}()
		defer ppr.Close()
	}
	if err := cmd.Start(); err != nil {
		return errorf(exitError, "starting server: %v", err)
	}
	pw.Close()
	line, _ := bufio.NewReader(pr).ReadString('\n')
	pr.Close()
	code, msg, found := strings.Cut(strings.TrimSpace(line), " ")
	if !found && code == "" {
		err := cmd.Wait()
		return errorf(exitError, "server exited before the mount was ready (%v)", err)
	}
	c, _ := strconv.Atoi(code)
	if c != 0 {
		cmd.Wait()
		return errorf(c, "%s", msg)
	}
	cmd.Process.Release()
	return exitOK
}

// passphraseSource returns how to get a passphrase: from the first line of
// a private file (readPassphraseFile), or "-" (or no file, on a terminal)
// from a prompt, twice for a new passphrase (askPassphrase).
func passphraseSource(file string) func(prompt string) ([]byte, error) {
	return func(prompt string) ([]byte, error) {
		if file != "" && file != "-" {
			return readPassphraseFile(file)
		}
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return nil, errors.New("a passphrase is needed and there is no terminal: use --passphrase-file")
		}
		return askPassphrase(prompt)
	}
}

func promptPassphrase(prompt string) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening terminal for passphrase: %w", err)
	}
	defer tty.Close()
	fmt.Fprintf(tty, "kmsfs: %s: ", prompt)
	p, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	if err != nil {
		return nil, fmt.Errorf("reading passphrase: %w", err)
	}
	return p, nil
}

func passphraseFromFD(fdStr string) func(string) ([]byte, error) {
	fd, _ := strconv.Atoi(fdStr)
	f := os.NewFile(uintptr(fd), "passphrase")
	return func(string) ([]byte, error) {
		b, err := io.ReadAll(io.LimitReader(f, 4096))
		f.Close()
		if err != nil || len(b) == 0 {
			return nil, errors.New("no passphrase was entered")
		}
		return b, nil
	}
}

const umountHelp = `Usage: kmsfs umount MOUNTPOINT

Unmounts a kmsfs mount; its server then exits.
`

func runUmount(args []string) int {
	fl := flag.NewFlagSet("umount", flag.ContinueOnError)
	pos, code, ok := parseFlags(fl, args, umountHelp)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError("umount takes one mount point")
	}
	mnt, _ := filepath.Abs(pos[0])
	switch fstype := mountTypeOf(mnt); fstype {
	case "":
		return errorf(exitError, "unmount %s: not mounted", mnt)
	case "fuse.kmsfs":
	default:
		return errorf(exitError, "unmount %s: not a kmsfs mount (it is %s); use umount(8) for it", mnt, fstype)
	}
	err := unix.Unmount(mnt, 0)
	if errors.Is(err, unix.EPERM) {
		if out, ferr := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); ferr == nil {
			err = nil
		} else {
			err = fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		}
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			errorf(exitError, "unmount %s: busy (files are open or a process is inside)", mnt)
			hintf("close them, or detach lazily with 'umount -l %s'", mnt)
			return exitError
		}
		return errorf(exitError, "unmount %s: %v", mnt, err)
	}
	return exitOK
}

// mountTypeOf returns the file system type of the mount whose mount
// point is exactly mnt, from /proc/self/mountinfo, or "" if nothing is
// mounted there.
func mountTypeOf(mnt string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	fstype := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeOctal(fields[4]) != mnt {
			continue
		}
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) {
				fstype = fields[i+1] // the last mount there is the one seen
				break
			}
		}
	}
	return fstype
}

// controlled is a mounted volume as the control socket serves it.
type controlled struct {
	*volume.Volume
	srv *fs.Server
}

// Reencrypt re-encrypts one file of the mount (fs.Server.Reencrypt).
func (c controlled) Reencrypt(ctx context.Context, path string) (int64, error) {
	return c.srv.Reencrypt(ctx, path)
}

// Reload reads the volume's trust record, which "kmsfs rewrap" updates
// before it asks for the reload, and then the configuration.
func (c controlled) Reload(ctx context.Context) error {
	store, err := trust.DefaultStore()
	if err != nil {
		return err
	}
	rec, err := store.Load(c.Config.VolumeID)
	if err != nil && !errors.Is(err, trust.ErrNotTrusted) {
		return err
	}
	if err == nil {
		c.SetTrust(rec.Keys, rec.Retired)
	}
	return c.Volume.Reload(ctx)
}

// Stats returns the volume's counters.
func (c controlled) Stats() any { return c.Volume.Stats() }
