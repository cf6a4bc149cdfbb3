package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fsConfig is one filesystem under test: a plain directory (ext4) or a
// FUSE daemon serving a backing directory on the same disk.
type fsConfig struct {
	name    string
	backing string // what the daemon serves; the directory itself for ext4
	mnt     string // where the workloads run
	logFile string
	// server returns the argv of the daemon, run in the foreground so the
	// harness knows its PID; nil for ext4.
	server func() []string
	// display is the mount command as the documentation shows it.
	display string

	d *daemon
}

// daemon is a running FUSE server.
type daemon struct {
	cmd    *exec.Cmd
	pid    int
	exited chan struct{}
	err    error
	samp   *sampler
}

func (c *fsConfig) isFUSE() bool { return c.server != nil }

// pid returns the PID of the running daemon, or 0.
func (c *fsConfig) pid() int {
	if c.d == nil {
		return 0
	}
	return c.d.pid
}

// cpu returns the daemon's CPU seconds so far (0 without a daemon).
func (c *fsConfig) cpu() float64 {
	if c.d == nil {
		return 0
	}
	s, _ := cpuSeconds(c.d.pid)
	return s
}

// mount starts the daemon and waits until the kernel shows the mount.
func (c *fsConfig) mount(readaheadKB int) error {
	if !c.isFUSE() {
		return nil
	}
	if c.d != nil {
		return fmt.Errorf("%s: already mounted", c.name)
	}
	if _, ok := mountAt(c.mnt); ok {
		return fmt.Errorf("%s: something is already mounted at %s", c.name, c.mnt)
	}
	argv := c.server()
	logf, err := os.OpenFile(c.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: a ^C for the harness must not reach the daemon
	// before the harness has unmounted.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: starting %s: %w", c.name, argv[0], err)
	}
	d := &daemon{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()
	daemons.add(d)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m, ok := mountAt(c.mnt); ok && strings.HasPrefix(m.fstype, "fuse") {
			if readaheadKB > 0 {
				if err := setReadahead(m, readaheadKB); err != nil {
					c.d = d
					return err
				}
			}
			break
		}
		select {
		case <-d.exited:
			daemons.remove(d)
			return fmt.Errorf("%s: server exited before the mount was ready (%v); log: %s", c.name, d.err, tail(c.logFile))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.d = d
			return fmt.Errorf("%s: mount not ready after 30 s; log: %s", c.name, tail(c.logFile))
		}
	}
	d.samp = startSampler(d.pid)
	c.d = d
	return nil
}

// unmount unmounts, waits for the daemon to exit and returns its peak RSS
// and peak locked memory in KiB.
func (c *fsConfig) unmount() (hwm, locked int64, err error) {
	if c.d == nil {
		return 0, 0, nil
	}
	d := c.d
	c.d = nil
	if d.samp != nil {
		hwm, locked = d.samp.finish()
	}
	defer daemons.remove(d)
	start := time.Now()
	for {
		err = unix.Unmount(c.mnt, 0)
		if !errors.Is(err, unix.EBUSY) || time.Since(start) > 30*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if errors.Is(err, unix.EINVAL) { // not mounted (any more)
		err = nil
	}
	if err != nil {
		err = &busyError{cfg: c.name, mnt: c.mnt, err: err, holders: holders(c.mnt)}
		unix.Unmount(c.mnt, unix.MNT_DETACH)
	}
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		if err == nil {
			err = fmt.Errorf("%s: server did not exit after unmount; killed", c.name)
		}
	}
	return hwm, locked, err
}

// setReadahead sets the kernel readahead of a FUSE mount.
func setReadahead(m mountEntry, kb int) error {
	p := "/sys/class/bdi/" + m.dev + "/read_ahead_kb"
	if err := os.WriteFile(p, []byte(fmt.Sprint(kb)), 0); err != nil {
		return fmt.Errorf("setting readahead: %w", err)
	}
	return nil
}

// readahead returns the kernel readahead of the mount at dir in KiB.
func readahead(dir string) string {
	m, ok := mountAt(dir)
	if !ok {
		return "?"
	}
	b, err := os.ReadFile("/sys/class/bdi/" + m.dev + "/read_ahead_kb")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	if s == "" {
		return "(empty)"
	}
	return s
}

// daemons tracks every server the harness started, so that cleanup can
// find them whatever failed.
var daemons = &daemonSet{m: map[*daemon]bool{}}

type daemonSet struct {
	mu sync.Mutex
	m  map[*daemon]bool
}

func (s *daemonSet) add(d *daemon) {
	s.mu.Lock()
	s.m[d] = true
	s.mu.Unlock()
}

func (s *daemonSet) remove(d *daemon) {
	s.mu.Lock()
	delete(s.m, d)
	s.mu.Unlock()
}

// cleanup unmounts every mount under work, then stops the servers the
// harness started (each by its own PID) and reports what it had to do.
func cleanup(cfgs []*fsConfig, work string) []string {
	var notes []string
	for _, c := range cfgs {
		if c.d != nil {
			if _, _, err := c.unmount(); err != nil {
				notes = append(notes, err.Error())
			}
		}
	}
	if ms, err := mounts(); err == nil {
		for i := len(ms) - 1; i >= 0; i-- {
			if strings.HasPrefix(ms[i].dir, work+"/") {
				if err := unix.Unmount(ms[i].dir, 0); err != nil {
					unix.Unmount(ms[i].dir, unix.MNT_DETACH)
				}
				notes = append(notes, "unmounted leftover "+ms[i].dir)
			}
		}
	}
	daemons.mu.Lock()
	left := make([]*daemon, 0, len(daemons.m))
	for d := range daemons.m {
		left = append(left, d)
	}
	daemons.mu.Unlock()
	for _, d := range left {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
		notes = append(notes, fmt.Sprintf("stopped server %d", d.pid))
		daemons.remove(d)
	}
	return notes
}

// busyError is an unmount that failed (the mount was then detached
// lazily); holders names the processes that used the mount.
type busyError struct {
	cfg, mnt string
	err      error
	holders  []string
}

func (e *busyError) Error() string {
	h := "no process found using it"
	if len(e.holders) > 0 {
		h = "used by " + strings.Join(e.holders, ", ")
	}
	return fmt.Sprintf("%s: unmount %s: %v (%s); detached lazily", e.cfg, e.mnt, e.err, h)
}

func (e *busyError) Unwrap() error { return e.err }

// holders lists the processes whose working directory, root, open files
// or mappings are under dir.
func holders(dir string) []string {
	procs, _ := os.ReadDir("/proc")
	var out []string
	under := func(p string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	for _, p := range procs {
		pid := p.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		var why []string
		for _, l := range []string{"cwd", "root"} {
			if t, err := os.Readlink("/proc/" + pid + "/" + l); err == nil && under(t) {
				why = append(why, l)
			}
		}
		fds, _ := os.ReadDir("/proc/" + pid + "/fd")
		for _, fd := range fds {
			if t, err := os.Readlink("/proc/" + pid + "/fd/" + fd.Name()); err == nil && under(t) {
				why = append(why, "fd "+fd.Name()+" "+t)
			}
		}
		if b, err := os.ReadFile("/proc/" + pid + "/maps"); err == nil && strings.Contains(string(b), dir+"/") {
			why = append(why, "mapping")
		}
		if len(why) > 0 {
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			out = append(out, fmt.Sprintf("%s (%s: %s)", pid, strings.TrimSpace(string(comm)), strings.Join(why, "; ")))
		}
	}
	return out
}
