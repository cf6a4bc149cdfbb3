package tests

// Stress: fio with data verification (several jobs on one file, and on
// many files) and stress-ng's file system stressors run against a mount.
// None may report an error or a data mismatch. Afterwards, with nothing
// open, the daemon must hold no backing file open, its descriptor and
// thread counts must be back near their level before the stress, and it
// must run no more goroutines than a fresh daemon that did a little work
// (counted from the goroutine dump a Go program prints on SIGQUIT).

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stressXDaemon is a "kmsfs mount -f" the test started itself, so that
// its standard error (where a SIGQUIT goroutine dump goes) is captured.
type stressXDaemon struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

// stressXMount mounts v with "kmsfs mount -f" and returns the daemon.
func stressXMount(t *testing.T, v *volume) *stressXDaemon {
	t.Helper()
	d := &stressXDaemon{done: make(chan struct{})}
	d.cmd = exec.Command(kmsfsBin, v.mountCommand("-f")...)
	d.cmd.Env = append(v.env(), "GOTRACEBACK=all")
	d.cmd.Stdout, d.cmd.Stderr = &d.stderr, &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting kmsfs mount -f: %v", err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		// This runs before v's own cleanup (registered earlier): unmount
		// if this daemon still serves, then wait for it to exit.
		select {
		case <-d.done:
			return
		default:
		}
		if isMounted(v.mnt) {
			if err := v.unmountErr(); err != nil {
				t.Errorf("unmount: %v", err)
			}
		}
		select {
		case <-d.done:
		case <-time.After(daemonExitTimeout):
			d.cmd.Process.Kill()
			<-d.done
			t.Errorf("kmsfs mount -f (pid %d) still ran after the test; killed it", d.cmd.Process.Pid)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !isMounted(v.mnt) {
		select {
		case <-d.done:
			t.Fatalf("kmsfs mount -f exited before mounting: %v\n%s", d.err, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kmsfs mount -f: %s not mounted after 30s", v.mnt)
		}
		time.Sleep(10 * time.Millisecond)
	}
	v.mounted = true
	v.daemons = []int{d.cmd.Process.Pid}
	return d
}

// goroutines makes the daemon dump its goroutines and exit (SIGQUIT),
// detaches the dead mount, and returns the goroutines' top functions.
func (d *stressXDaemon) goroutines(t *testing.T, v *volume) []string {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatalf("SIGQUIT to the daemon: %v", err)
	}
	select {
	case <-d.done:
	case <-time.After(daemonExitTimeout):
		d.cmd.Process.Kill()
		<-d.done
		t.Fatalf("the daemon did not exit %v after SIGQUIT", daemonExitTimeout)
	}
	if r := runCommand(os.Environ(), "/", "umount", "-l", v.mnt); r.code != 0 {
		t.Errorf("%v", r)
	}
	v.mounted = false
	v.daemons = nil
	// A dump is "goroutine N ... [state]:", then the function of the top
	// frame on the next line.
	var tops []string
	lines := strings.Split(d.stderr.String(), "\n")
	head := regexp.MustCompile(`^goroutine \d+ .*\[.*\]:$`)
	for i, l := range lines {
		if head.MatchString(l) && i+1 < len(lines) {
			fn := lines[i+1]
			if j := strings.LastIndexByte(fn, '('); j > 0 {
				fn = fn[:j]
			}
			tops = append(tops, fn)
		}
	}
	if len(tops) == 0 {
		t.Fatalf("no goroutine dump after SIGQUIT; daemon output:\n%s", d.stderr.String())
	}
	return tops
}

// stressXSample is what the test measures of the daemon.
type stressXSample struct {
	fds, threads int
	backing      []string // descriptors open on files of the backing directory
}

func (s stressXSample) String() string {
	return fmt.Sprintf("%d fds (%d on backing files), %d threads", s.fds, len(s.backing), s.threads)
}

// stressXMeasure samples the daemon pid of v.
func stressXMeasure(t *testing.T, v *volume, pid int) stressXSample {
	t.Helper()
	var s stressXSample
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("os.ReadDir(%s) = %v", dir, err)
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		s.fds++
		// The write journal stays open for the whole mount.
		if strings.HasPrefix(target, v.cipherDir+"/") && target != v.cipherDir+"/kmsfs.journal" {
			s.backing = append(s.backing, target)
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading the daemon's status: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if n, ok := strings.CutPrefix(l, "Threads:"); ok {
			s.threads, _ = strconv.Atoi(strings.TrimSpace(n))
		}
	}
	return s
}

// stressXSettle waits until the daemon has released every backing file
// (FUSE sends RELEASE asynchronously after the last close) and returns
// the sample; it fails the test if backing files stay open.
func stressXSettle(t *testing.T, v *volume, pid int, after string) stressXSample {
	t.Helper()
	if exited(pid) {
		t.Fatalf("the daemon (pid %d) exited during %s; %s is mounted: %v", pid, after, v.mnt, isMounted(v.mnt))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := stressXMeasure(t, v, pid)
		if len(s.backing) == 0 {
			t.Logf("after %s: %v", after, s)
			return s
		}
		if time.Now().After(deadline) {
			t.Errorf("after %s, with nothing open through the mount, the daemon still holds %d backing files open: %s",
				after, len(s.backing), strings.Join(s.backing, ", "))
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stressXRun runs a stress program and fails the test if it fails, if a
// line of its output matches bad, or if no line matches good (when
// given). Lines matching note are logged.
func stressXRun(t *testing.T, bad, good, note *regexp.Regexp, name string, args ...string) {
	t.Helper()
	start := time.Now()
	r := runCommand(append(os.Environ(), "LC_ALL=C"), "/", name, args...)
	t.Logf("%s: exit %d in %v", filepath.Base(name), r.code, time.Since(start).Round(100*time.Millisecond))
	if r.code != 0 || r.err != nil {
		t.Errorf("%v\nwant exit 0", r)
		return
	}
	found := good == nil
	for _, l := range strings.Split(r.stdout+r.stderr, "\n") {
		switch {
		case bad.MatchString(l):
			t.Errorf("%s reports: %s", filepath.Base(name), l)
		case good != nil && good.MatchString(l):
			found = true
		case note != nil && note.MatchString(l):
			t.Logf("%s: %s", filepath.Base(name), l)
		}
	}
	if !found {
		t.Errorf("%v\nwant a line matching %q", r, good)
	}
}

// stressXLittleWork is the warm-up before the baseline: a few files
// written, read back and removed.
func stressXLittleWork(t *testing.T, v *volume) {
	t.Helper()
	for i := range 4 {
		p := v.path(fmt.Sprintf("warm-%d", i))
		data := pattern(p, 100<<10)
		writeFile(t, p, data)
		checkContent(t, p, data, v.blockSize)
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStress(t *testing.T) {
	fio := requireTool(t, "fio")
	stressNG := requireTool(t, "stress-ng")
	v := newVolume(t, notMounted())
	d := stressXMount(t, v)
	pid := d.cmd.Process.Pid

	stressXLittleWork(t, v)
	base := stressXSettle(t, v, pid, "warm-up (baseline)")

	fioBad := regexp.MustCompile(`(?i)verify|bad magic|crc|error|mismatch`)
	fioCommon := []string{"--ioengine=psync", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
		"--verify_state_save=0", "--group_reporting", "--minimal"}
	// Four jobs on disjoint regions of one file, unaligned sizes: kmsfs
	// serialises the read-modify-write of blocks the regions share.
	oneFile := append([]string{"--name=onefile", "--filename=" + v.path("fio-one"),
		"--size=6M", "--offset_increment=6M", "--numjobs=4",
		"--rw=randwrite", "--bsrange=1k-64k", "--fsync=32"}, fioCommon...)
	stressXRun(t, fioBad, nil, nil, fio, oneFile...)
	afterOne := stressXSettle(t, v, pid, "fio on one file")

	// Four jobs on eight files each; one half with O_DIRECT.
	for _, direct := range []string{"0", "1"} {
		dir := v.path("fio-many-" + direct)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		manyFiles := append([]string{"--name=many" + direct, "--directory=" + dir,
			"--nrfiles=8", "--filesize=512k", "--numjobs=4", "--file_service_type=random",
			"--rw=randwrite", "--bsrange=4k-64k", "--blockalign=4k", "--direct=" + direct}, fioCommon...)
		stressXRun(t, fioBad, nil, nil, fio, manyFiles...)
	}
	stressXSettle(t, v, pid, "fio on many files")

	// stress-ng: data stressors (with verification where they have it),
	// then metadata stressors; all of them should pass on a POSIX file
	// system.
	// ("failed: 0" is stress-ng's summary of a good run.)
	ngBad := regexp.MustCompile(`(?i)\bfail:|\bfailed(:\s*[1-9]|[^:]|$)|mismatch|unexpected|errno=`)
	ngGood := regexp.MustCompile(`successful run completed`)
	ngNote := regexp.MustCompile(`(?i)skipp|not supported|not implemented`)
	for i, set := range [][]string{
		{"--hdd", "2", "--hdd-bytes", "16M", "--seek", "1", "--fallocate", "1", "--iomix", "1",
			"--sync-file", "1", "--mmap", "1", "--mmap-file", "--copy-file", "1", "--readahead", "1", "--msync", "1"},
		{"--dentry", "1", "--dir", "1", "--link", "1", "--symlink", "1", "--rename", "1",
			"--lockf", "1", "--flock", "1", "--fcntl", "1", "--utime", "1", "--chmod", "1",
			"--xattr", "1", "--open", "1", "--filename", "1"},
	} {
		dir := v.path(fmt.Sprintf("stress-ng-%d", i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"--temp-path", dir, "--timeout", "10s", "--verify", "--metrics-brief"}, set...)
		stressXRun(t, ngBad, ngGood, ngNote, stressNG, args...)
	}
	end := stressXSettle(t, v, pid, "stress-ng")

	// Descriptors: none on backing files (checked above); the rest are
	// go-fuse's and the runtime's, which may grow with concurrency but
	// not with the amount of work.
	if end.fds > base.fds+8 || end.fds > afterOne.fds+4 {
		t.Errorf("daemon descriptors: %d after the stress, %d at the baseline, %d after the first fio run; want at most baseline+8 and first run+4",
			end.fds, base.fds, afterOne.fds)
	}
	// Threads: the Go runtime keeps the threads it once needed, so the
	// count may exceed the baseline, but must not keep growing.
	if end.threads > base.threads+16 || end.threads > afterOne.threads+8 {
		t.Errorf("daemon threads: %d after the stress, %d at the baseline, %d after the first fio run; want at most baseline+16 and first run+8",
			end.threads, base.threads, afterOne.threads)
	}

	// Goroutines: the stressed daemon against a fresh one that did the
	// warm-up only.
	stressed := d.goroutines(t, v)
	d2 := stressXMount(t, v)
	stressXLittleWork(t, v)
	stressXSettle(t, v, d2.cmd.Process.Pid, "a fresh mount's warm-up")
	fresh := d2.goroutines(t, v)
	t.Logf("goroutines: %d in the stressed daemon, %d in a fresh one", len(stressed), len(fresh))
	if len(stressed) > len(fresh)+4 {
		t.Errorf("goroutines of the daemon after the stress = %d, want at most %d (a fresh daemon has %d):\n%s",
			len(stressed), len(fresh)+4, len(fresh), stressXCount(stressed))
	}

	// The data is all still there after a clean mount.
	v.mount()
	ents, err := os.ReadDir(v.path("fio-many-0"))
	if err != nil || len(ents) != 32 {
		t.Errorf("os.ReadDir(fio-many-0) = %d entries, %v, want 32", len(ents), err)
	}
	if fi, err := os.Stat(v.path("fio-one")); err != nil || fi.Size() != 24<<20 {
		t.Errorf("os.Stat(fio-one) = %v, %v, want 24 MiB", fi, err)
	}
}

// stressXCount summarises goroutine top functions with their counts.
func stressXCount(tops []string) string {
	n := map[string]int{}
	for _, f := range tops {
		n[f]++
	}
	var lines []string
	for f, c := range n {
		lines = append(lines, fmt.Sprintf("%4d %s", c, f))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
