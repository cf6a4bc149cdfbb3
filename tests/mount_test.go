// Package tests holds the integration tests of kmsfs: they build the real
// kmsfs binary, create volumes with "kmsfs init", mount them with
// "kmsfs mount" and use them the way a user would.
//
// The helpers in this file build the binary (once, with -race), create
// volumes in temporary directories, mount and unmount them, and make sure
// that no mount and no daemon outlives the test that made it.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Exit codes of the kmsfs command.
const (
	exitOK        = 0
	exitError     = 1
	exitUsage     = 2
	exitBadVolume = 3
	exitNoKey     = 4
	exitMount     = 5
)

const (
	// defaultBlockSize is the plaintext block size of a volume made
	// without --block-size.
	defaultBlockSize = 4096
	// headerSize is the size of a version-1 header (docs/FORMAT.md,
	// "Header"): the header of kmsfs.conf and of the write journal in
	// every format version, and of regular files in format versions 1
	// and 2. A regular file of version 3 has a header of 32 + 2*C bytes
	// (volume.headerLen).
	headerSize = 4096
	// blockOverhead is what a stored block of version 1 or 2 adds to its
	// plaintext: a 12-byte nonce and a 16-byte GCM tag. (In version 3 a
	// block's nonce and tag are its entry, stored apart from it, and the
	// inline content of a small file has the same overhead.)
	blockOverhead = 28
	// defaultCopySize is the header copy size C that "kmsfs init" gives a
	// version-3 volume whose key slots fit in it, as those of the tests'
	// volumes with one or two local keys do (docs/FORMAT.md, "Volume
	// configuration").
	defaultCopySize = 1024
	// confName is the volume configuration file in the cipher directory.
	confName = "kmsfs.conf"

	// commandTimeout bounds every kmsfs command a test runs.
	commandTimeout = 2 * time.Minute
	// daemonExitTimeout is how long a daemon may take to exit after its
	// file system was unmounted.
	daemonExitTimeout = 15 * time.Second
)

var (
	// tmpBase is the directory all temporary files of this test binary go
	// to (TMPDIR points at it while the tests run), so that a mount left
	// behind is easy to recognise by its path.
	tmpBase string

	buildOnce sync.Once
	// kmsfsBin is the path of the race-enabled kmsfs binary.
	kmsfsBin string
	// kmsfsPlainBin is the path of a kmsfs binary built as "make build"
	// builds it, without the race detector (see requirePlainBinary).
	kmsfsPlainBin string
	plainOnce     sync.Once
	plainErr      error
	// buildErr is the error of building kmsfsBin, if any.
	buildErr error

	// mountPoints records every mount point a volume used, so TestMain
	// can check that none is left mounted.
	mountPointsMu sync.Mutex
	mountPoints   = map[string]bool{}
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	if name := os.Getenv(controlSquatEnv); name != "" {
		os.Exit(squatControl(name))
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	base, err := os.MkdirTemp("", "kmsfs-tests-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "kmsfs tests: %v\n", err)
		return 1
	}
	tmpBase = base
	oldTmp, hadTmp := os.LookupEnv("TMPDIR")
	os.Setenv("TMPDIR", base)
	kmsfsBin = filepath.Join(base, "bin", "kmsfs")
	kmsfsPlainBin = filepath.Join(base, "bin", "plain", "kmsfs")

	code := m.Run()

	if leaks := leftovers(); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "kmsfs tests: left behind after the tests:\n\t%s\n", strings.Join(leaks, "\n\t"))
		if code == 0 {
			code = 1
		}
	}
	if hadTmp {
		os.Setenv("TMPDIR", oldTmp)
	} else {
		os.Unsetenv("TMPDIR")
	}
	if err := os.RemoveAll(base); err != nil {
		fmt.Fprintf(os.Stderr, "kmsfs tests: removing %s: %v\n", base, err)
	}
	return code
}

// requireBinary builds the kmsfs binary the first time a test needs it
// and fails the test if it does not build. Tests that never mount (the
// format vectors) do not pay for the build.
func requireBinary(t testing.TB) {
	t.Helper()
	buildOnce.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			buildErr = err
			return
		}
		goCmd := "go"
		if p, err := exec.LookPath("go"); err == nil {
			goCmd = p
		}
		cmd := exec.Command(goCmd, "build", "-race", "-o", kmsfsBin, "./cmd/kmsfs")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build -race ./cmd/kmsfs: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// requirePlainBinary builds kmsfsPlainBin once: kmsfs as "make build"
// builds it, with GOEXPERIMENT=runtimesecret (unless the environment
// sets GOEXPERIMENT) and without the race detector, whose shadow memory
// would make a scan of the daemon's memory (TestKeysInMemory) read
// terabytes.
func requirePlainBinary(t testing.TB) {
	t.Helper()
	plainOnce.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			plainErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", kmsfsPlainBin, "./cmd/kmsfs")
		cmd.Dir = root
		cmd.Env = os.Environ()
		if os.Getenv("GOEXPERIMENT") == "" {
			cmd.Env = append(cmd.Env, "GOEXPERIMENT=runtimesecret")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			plainErr = fmt.Errorf("go build ./cmd/kmsfs: %v\n%s", err, out)
		}
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
}

// inCI reports whether the tests run in CI, where nothing may be skipped.
func inCI() bool {
	return os.Getenv("CI") == "true"
}

// fuseUnavailable says why this machine cannot mount FUSE file systems,
// or returns "" if it should be able to.
func fuseUnavailable() string {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Sprintf("no /dev/fuse: %v", err)
	}
	if os.Geteuid() != 0 {
		return "not running as root"
	}
	return ""
}

// requireTool returns the path of a program the test needs. A missing
// program fails the test in CI ("make deps" installs it) and skips it
// elsewhere.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if inCI() {
		t.Fatalf("exec.LookPath(%q) = %v; run \"make deps\"", name, err)
	}
	t.Skipf("%s not installed (run \"make deps\")", name)
	return ""
}

// result is the outcome of running a command.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int   // exit code; -1 if the command did not exit normally
	err    error // set when the command could not be run or timed out
}

func (r result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: exit %d", strings.Join(r.args, " "), r.code)
	if r.err != nil {
		fmt.Fprintf(&b, " (%v)", r.err)
	}
	if s := strings.TrimSpace(r.stderr); s != "" {
		fmt.Fprintf(&b, "\nstderr:\n%s", s)
	}
	if s := strings.TrimSpace(r.stdout); s != "" {
		fmt.Fprintf(&b, "\nstdout:\n%s", s)
	}
	return b.String()
}

// runCommand runs a program with a time limit. Its standard input is
// empty. If the program leaves its standard output or error open in a
// child after it exits (a daemon that did not detach its stdio), the
// copy stops after a few seconds and r.err says so.
func runCommand(env []string, dir string, name string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	r := result{
		args:   append([]string{filepath.Base(name)}, args...),
		stdout: stdout.String(),
		stderr: stderr.String(),
		code:   -1,
	}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && ctx.Err() == nil:
		// A plain non-zero exit: the code says it all.
	case errors.Is(err, exec.ErrWaitDelay):
		r.err = fmt.Errorf("the process exited but something it started kept its stdout/stderr open: %w", err)
	case ctx.Err() != nil:
		r.err = fmt.Errorf("timed out after %v: %w", commandTimeout, err)
	default:
		r.err = err
	}
	return r
}

// volumeOptions configure newVolume.
type volumeOptions struct {
	blockSize int
	initArgs  []string
	mountArgs []string
	noMount   bool
	tmpfs     bool
	plain     bool
}

// volumeOption changes one volumeOptions field.
type volumeOption func(*volumeOptions)

// withBlockSize makes the volume with "--block-size n".
func withBlockSize(n int) volumeOption {
	return func(o *volumeOptions) { o.blockSize = n }
}

// withInitArgs adds arguments to "kmsfs init".
func withInitArgs(args ...string) volumeOption {
	return func(o *volumeOptions) { o.initArgs = append(o.initArgs, args...) }
}

// withPlainBinary runs the volume's commands and daemon with the binary
// "make build" makes (no race detector; see requirePlainBinary).
func withPlainBinary() volumeOption {
	return func(o *volumeOptions) { o.plain = true }
}

// withMountArgs adds arguments to every "kmsfs mount" of the volume.
func withMountArgs(args ...string) volumeOption {
	return func(o *volumeOptions) { o.mountArgs = append(o.mountArgs, args...) }
}

// cipherOnTmpfs puts the cipher dir on a tmpfs of its own, for tests
// that need more of the backing file system than the machine's may offer
// (ext4 refuses extended attributes larger than about one block).
func cipherOnTmpfs() volumeOption {
	return func(o *volumeOptions) { o.tmpfs = true }
}

// notMounted makes newVolume stop after "kmsfs init".
func notMounted() volumeOption {
	return func(o *volumeOptions) { o.noMount = true }
}

// volume is a kmsfs volume in a temporary directory.
type volume struct {
	t         *testing.T
	dir       string // everything of this volume lives under dir
	cipherDir string // the backing directory
	mnt       string // the mount point
	home      string // HOME and XDG_CONFIG_HOME of the kmsfs commands
	keyPath   string // the local key file
	keyURI    string // local://<keyPath>
	logFile   string // the daemon's --log-file
	raceDir   string // where race-enabled kmsfs processes write reports
	blockSize int
	// formatVersion is the volume's format version: 3 (what "kmsfs
	// init" makes), or 2 when its init arguments say "--format-version 2".
	formatVersion int
	// copySize is the header copy size C of the regular files of a
	// version-3 volume (defaultCopySize); 0 in version 2, whose files
	// have a version-1 header.
	copySize  int
	mountArgs []string
	bin       string // the kmsfs binary of the volume's commands

	mounted bool
	daemons []int // process IDs of the daemon serving the mount
}

// newVolume creates a kmsfs volume in a temporary directory with its own
// local key and mounts it. The volume is unmounted when the test ends,
// whether it passed or not; the daemon log is printed if it failed.
func newVolume(t *testing.T, opts ...volumeOption) *volume {
	t.Helper()
	requireBinary(t)
	o := volumeOptions{blockSize: defaultBlockSize}
	for _, opt := range opts {
		opt(&o)
	}
	dir := t.TempDir()
	v := &volume{
		t:         t,
		dir:       dir,
		cipherDir: filepath.Join(dir, "cipher"),
		mnt:       filepath.Join(dir, "mnt"),
		home:      filepath.Join(dir, "home"),
		keyPath:   filepath.Join(dir, "keys", "local.key"),
		logFile:   filepath.Join(dir, "kmsfs.log"),
		raceDir:   filepath.Join(dir, "race"),
		blockSize: o.blockSize,
		mountArgs: o.mountArgs,
		bin:       kmsfsBin,
	}
	v.formatVersion = initFormatVersion(o.initArgs)
	if v.formatVersion >= 3 {
		v.copySize = defaultCopySize
	}
	if o.plain {
		requirePlainBinary(t)
		v.bin = kmsfsPlainBin
	}
	v.keyURI = "local://" + v.keyPath
	for _, d := range []string{v.cipherDir, v.mnt, v.home, filepath.Dir(v.keyPath), v.raceDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("os.MkdirAll(%q) = %v, want nil", d, err)
		}
	}
	if o.tmpfs {
		if err := syscall.Mount("kmsfs-test", v.cipherDir, "tmpfs", 0, "mode=0700"); err != nil {
			if why := fuseUnavailable(); why != "" && !inCI() {
				t.Skipf("cannot mount here (%s): mounting a tmpfs on %s: %v", why, v.cipherDir, err)
			}
			t.Fatalf("mounting a tmpfs on %s: %v", v.cipherDir, err)
		}
		t.Cleanup(func() {
			if err := syscall.Unmount(v.cipherDir, 0); err != nil {
				t.Errorf("unmounting the tmpfs on %s: %v", v.cipherDir, err)
				syscall.Unmount(v.cipherDir, syscall.MNT_DETACH)
			}
		})
	}
	mountPointsMu.Lock()
	mountPoints[v.mnt] = true
	mountPointsMu.Unlock()
	t.Cleanup(v.cleanup)

	args := []string{"init", "--key", v.keyURI}
	if o.blockSize != defaultBlockSize {
		args = append(args, "--block-size", strconv.Itoa(o.blockSize))
	}
	args = append(args, o.initArgs...)
	args = append(args, v.cipherDir)
	if r := v.kmsfs(args...); r.code != exitOK || r.err != nil {
		t.Fatalf("%v\nwant exit 0", r)
	}
	if !o.noMount {
		v.mount()
	}
	return v
}

// initFormatVersion returns the format version "kmsfs init" makes with
// the arguments args: the one named by --format-version, 3 by default.
func initFormatVersion(args []string) int {
	version := 3
	for i, a := range args {
		// The flag package takes -flag as well as --flag.
		a = strings.TrimPrefix(a, "-")
		val, ok := strings.CutPrefix(a, "-format-version=")
		if !ok && a == "-format-version" && i+1 < len(args) {
			val, ok = args[i+1], true
		}
		if ok {
			if n, err := strconv.Atoi(val); err == nil {
				version = n
			}
		}
	}
	return version
}

// env is the environment of the kmsfs commands of this volume: HOME
// points into the volume's directory (never the real ~/.config) and
// race reports go to raceDir.
func (v *volume) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "HOME", "XDG_CONFIG_HOME", "GORACE":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+v.home,
		"XDG_CONFIG_HOME="+filepath.Join(v.home, ".config"),
		// The race runtime sleeps 1 s at exit by default (atexit_sleep_ms)
		// so that late reports get out; 50 ms makes every command and every
		// remount seconds faster.
		"GORACE=log_path="+filepath.Join(v.raceDir, "race")+" halt_on_error=0 atexit_sleep_ms=50",
	)
}

// kmsfs runs the kmsfs binary with the volume's environment.
func (v *volume) kmsfs(args ...string) result {
	return runCommand(v.env(), v.dir, v.bin, args...)
}

// path returns the path of name inside the mount.
func (v *volume) path(name string) string {
	return filepath.Join(v.mnt, name)
}

// backing returns the path of the backing entry of name (a path as seen
// through the mount) in the cipher dir: with encrypted names, each
// component's encrypted name (see backingRel).
func (v *volume) backing(name string) string {
	return filepath.Join(v.cipherDir, v.backingRel(name))
}

// mountCommand is the "kmsfs mount" command line of the volume.
func (v *volume) mountCommand(extra ...string) []string {
	args := []string{"mount", "--log-file", v.logFile}
	args = append(args, v.mountArgs...)
	args = append(args, extra...)
	return append(args, v.cipherDir, v.mnt)
}

// mount mounts the volume. If that fails the test fails, except outside
// CI on a machine that cannot mount FUSE file systems at all, where it is
// skipped.
func (v *volume) mount() {
	v.t.Helper()
	r := v.kmsfs(v.mountCommand()...)
	if r.code != exitOK {
		v.t.Logf("daemon log:\n%s", v.log())
		msg := fmt.Sprintf("%v\nwant exit 0", r)
		if why := fuseUnavailable(); why != "" && !inCI() {
			v.t.Skipf("cannot mount FUSE here (%s): %s", why, msg)
		}
		v.t.Fatal(msg)
	}
	if r.err != nil {
		// Mounted, but the command misbehaved (for example it left its
		// output pipes to the daemon).
		v.t.Errorf("%v", r)
	}
	if !isMounted(v.mnt) {
		v.t.Fatalf("%v\nexit 0, but %s is not in /proc/mounts: mount must return only once the file system is ready", r, v.mnt)
	}
	v.mounted = true
	v.daemons = daemonsOf(v.mnt)
}

// unmountErr runs "kmsfs umount" and waits for the daemon to exit. An
// unmount that fails is retried for a few seconds (a process that scans
// the machine's directories may be inside the mount for a moment); if it
// keeps failing, the error lists the processes using the mount.
func (v *volume) unmountErr() error {
	if !isMounted(v.mnt) {
		v.mounted = false
		return fmt.Errorf("%s is not mounted", v.mnt)
	}
	var r result
	for try := 0; ; try++ {
		r = v.kmsfs("umount", v.mnt)
		if r.code == exitOK && r.err == nil {
			break
		}
		if try == 20 || !isMounted(v.mnt) {
			return fmt.Errorf("%v\nwant exit 0; processes using the mount: %s", r, mountUsers(v.mnt))
		}
		time.Sleep(250 * time.Millisecond)
	}
	if isMounted(v.mnt) {
		return fmt.Errorf("%v\nexit 0, but %s is still in /proc/mounts", r, v.mnt)
	}
	v.mounted = false
	if alive := waitExit(v.daemons, daemonExitTimeout); len(alive) > 0 {
		killAll(alive)
		return fmt.Errorf("daemon processes %v still ran %v after kmsfs umount; killed them", alive, daemonExitTimeout)
	}
	v.daemons = nil
	return nil
}

// mountUsers lists the processes whose working directory, root or open
// files are inside mnt.
func mountUsers(mnt string) string {
	var users []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var uses []string
		for _, link := range []string{"cwd", "root"} {
			if p, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, link)); err == nil && inside(p, mnt) {
				uses = append(uses, link+" "+p)
			}
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if p, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && inside(p, mnt) {
				uses = append(uses, "fd "+fd.Name()+" "+p)
			}
		}
		if len(uses) > 0 {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			users = append(users, fmt.Sprintf("pid %d (%s): %s", pid,
				strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "), strings.Join(uses, ", ")))
		}
	}
	if len(users) == 0 {
		return "none found"
	}
	return strings.Join(users, "; ")
}

// inside reports whether path is dir or below it.
func inside(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// unmount unmounts the volume and fails the test if that fails.
func (v *volume) unmount() {
	v.t.Helper()
	if err := v.unmountErr(); err != nil {
		v.t.Fatalf("unmount: %v", err)
	}
}

// remount unmounts and mounts the volume again: whatever is read after
// it comes from the backing files, not from any cache.
func (v *volume) remount() {
	v.t.Helper()
	v.unmount()
	v.mount()
}

// cleanup runs when the test ends: it unmounts the volume (falling back
// to a lazy unmount), makes sure the daemon is gone, reports race
// detector findings and prints the daemon log if the test failed.
func (v *volume) cleanup() {
	t := v.t
	if isMounted(v.mnt) {
		if err := v.unmountErr(); err != nil {
			t.Errorf("unmount at cleanup: %v", err)
		}
		if isMounted(v.mnt) {
			runCommand(os.Environ(), "/", "umount", "-l", v.mnt)
		}
		if isMounted(v.mnt) {
			runCommand(os.Environ(), "/", "fusermount3", "-u", "-z", v.mnt)
		}
		if isMounted(v.mnt) {
			t.Errorf("%s is still mounted after umount -l and fusermount3 -u -z", v.mnt)
		}
	}
	if alive := waitExit(append(v.daemons, daemonsOf(v.mnt)...), daemonExitTimeout); len(alive) > 0 {
		killAll(alive)
		t.Errorf("daemon processes %v of %s still ran after unmount; killed them", alive, v.mnt)
	}
	if reports, _ := filepath.Glob(filepath.Join(v.raceDir, "race*")); len(reports) > 0 {
		for _, f := range reports {
			b, _ := os.ReadFile(f)
			t.Errorf("race detector report from a kmsfs process (%s):\n%s", f, b)
		}
	}
	if t.Failed() {
		t.Logf("daemon log %s:\n%s", v.logFile, v.log())
	}
}

// log returns the end of the daemon log.
func (v *volume) log() string {
	b, err := os.ReadFile(v.logFile)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const max = 32 << 10
	if len(b) > max {
		return "...\n" + string(b[len(b)-max:])
	}
	return string(b)
}

// isMounted reports whether dir is a mount point in /proc/mounts.
func isMounted(dir string) bool {
	for _, m := range readMounts() {
		if m.dir == dir {
			return true
		}
	}
	return false
}

// mountEntry is one line of /proc/mounts.
type mountEntry struct {
	source, dir, fstype string
}

func readMounts() []mountEntry {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return nil
	}
	var ms []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		ms = append(ms, mountEntry{unescapeMount(f[0]), unescapeMount(f[1]), f[2]})
	}
	return ms
}

// unescapeMount undoes the octal escapes (\040 for a space...) of
// /proc/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// kmsfsProcesses returns the process IDs running the kmsfs binary built
// for these tests, with their command lines.
func kmsfsProcesses() map[int][]string {
	procs := map[int][]string{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return procs
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if exe = strings.TrimSuffix(exe, " (deleted)"); err != nil || exe != kmsfsBin && exe != kmsfsPlainBin {
			continue
		}
		if exited(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		procs[pid] = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	}
	return procs
}

// daemonsOf returns the kmsfs processes whose command line names mnt.
func daemonsOf(mnt string) []int {
	var pids []int
	for pid, args := range kmsfsProcesses() {
		for _, a := range args {
			if a == mnt || strings.HasSuffix(a, "="+mnt) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// exited reports whether pid is gone or a zombie.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// waitExit waits until every process in pids has exited and returns those
// still running after timeout.
func waitExit(pids []int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var alive []int
		for _, pid := range pids {
			if !exited(pid) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killAll kills processes this test binary started, one by one.
func killAll(pids []int) {
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// leftovers lists mounts and daemons that outlived their tests, after
// unmounting (lazily) and killing them.
func leftovers() []string {
	var leaks []string
	mountPointsMu.Lock()
	defer mountPointsMu.Unlock()
	for mnt := range mountPoints {
		if isMounted(mnt) {
			leaks = append(leaks, "mount "+mnt)
			runCommand(os.Environ(), "/", "umount", "-l", mnt)
		}
	}
	for _, m := range readMounts() {
		if strings.HasPrefix(m.dir, tmpBase+"/") && !mountPoints[m.dir] {
			leaks = append(leaks, "mount "+m.dir)
			runCommand(os.Environ(), "/", "umount", "-l", m.dir)
		}
	}
	if kmsfsBin != "" {
		for pid, args := range kmsfsProcesses() {
			leaks = append(leaks, fmt.Sprintf("process %d: %s", pid, strings.Join(args, " ")))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return leaks
}
