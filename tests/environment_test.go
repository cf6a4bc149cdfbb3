package tests

// Bad environments: a backing directory that is gone (before the mount or
// while mounted), read-only backing storage, a mount point that is busy,
// and no usable /dev/fuse. Each must give a clear one-line error (or
// clean errno results through the mount) and must never hang: every
// command runs under a short time limit.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envXTimeout bounds every command of these tests: none should take more
// than a few seconds, so a command still running then is hung.
const envXTimeout = 30 * time.Second

// envXRun runs a program like runCommand, with a shorter time limit.
func envXRun(env []string, name string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), envXTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: append([]string{filepath.Base(name)}, args...), stdout: stdout.String(), stderr: stderr.String(), code: -1}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		r.err = fmt.Errorf("hung: killed after %v: %w", envXTimeout, err)
	case errors.As(err, &exitErr):
	case errors.Is(err, exec.ErrWaitDelay):
		r.err = fmt.Errorf("the process exited but something it started kept its stdout/stderr open: %w", err)
	default:
		r.err = err
	}
	return r
}

// envXCheckError checks a failed kmsfs command: it ended in time with one
// of the codes, its stderr is one "kmsfs: error: " line (plus optional
// "kmsfs: hint: " lines) that contains every one of want.
func envXCheckError(t *testing.T, r result, codes []int, want ...string) {
	t.Helper()
	if r.err != nil {
		t.Errorf("%v", r)
		return
	}
	if !slices.Contains(codes, r.code) {
		t.Errorf("%v\nwant exit code in %v", r, codes)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if !strings.HasPrefix(lines[0], "kmsfs: error: ") {
		t.Errorf("%v\nwant stderr to start with one \"kmsfs: error: \" line", r)
		return
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "kmsfs: hint: ") {
			t.Errorf("%v\nwant one error line and hints only, got extra line %q", r, l)
		}
	}
	t.Logf("exit %d: %s", r.code, strings.Join(lines, " | "))
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("%v\nwant the error line to mention %q", r, w)
		}
	}
}

// envXMountCommand is the "kmsfs mount" command line of v with another
// backing directory or mount point.
func envXMountCommand(v *volume, cipherDir, mnt string) []string {
	args := []string{"mount", "--log-file", v.logFile}
	args = append(args, v.mountArgs...)
	return append(args, cipherDir, mnt)
}

// envXDaemonAlive fails the test if no daemon serves v any more (it
// crashed instead of returning errors).
func envXDaemonAlive(t *testing.T, v *volume) {
	t.Helper()
	if len(daemonsOf(v.mnt)) == 0 {
		t.Errorf("daemonsOf(%s) = none: the daemon exited, want it to keep serving and return errors", v.mnt)
	}
}

func TestEnvironment(t *testing.T) {
	requireTool(t, "mount")
	t.Run("backing dir removed before mount", func(t *testing.T) {
		v := newVolume(t, notMounted())
		if err := os.RemoveAll(v.cipherDir); err != nil {
			t.Fatal(err)
		}
		r := envXRun(v.env(), kmsfsBin, v.mountCommand()...)
		envXCheckError(t, r, []int{exitError, exitBadVolume}, v.cipherDir)
		if isMounted(v.mnt) {
			t.Errorf("%s is mounted after a failed mount", v.mnt)
		}
	})

	t.Run("backing dir removed while mounted", func(t *testing.T) {
		v := newVolume(t)
		want := pattern("kept open", 10000)
		writeFile(t, v.path("a"), want)
		if err := os.Mkdir(v.path("d"), 0o755); err != nil {
			t.Fatal(err)
		}
		open, err := os.Open(v.path("a"))
		if err != nil {
			t.Fatal(err)
		}
		defer open.Close()
		if err := os.RemoveAll(v.cipherDir); err != nil {
			t.Fatal(err)
		}
		// Each operation in its own process, so a hang is caught.
		mustFail := []struct {
			what string
			args []string
		}{
			{"list the root", []string{"ls", v.mnt}},
			{"read a file", []string{"cat", v.path("a")}},
			{"create a file", []string{"sh", "-c", "echo x > " + v.path("new")}},
			{"make a directory", []string{"mkdir", v.path("d2")}},
			{"list a directory", []string{"ls", v.path("d")}},
		}
		env := append(os.Environ(), "LC_ALL=C")
		for _, c := range mustFail {
			r := envXRun(env, c.args[0], c.args[1:]...)
			if r.err != nil {
				t.Errorf("%s after the backing dir was removed: %v", c.what, r)
			} else if r.code == 0 {
				t.Errorf("%s after the backing dir was removed: %v\nwant a failure", c.what, r)
			} else if strings.Contains(r.stderr, "not connected") {
				t.Errorf("%s after the backing dir was removed: %v\nwant an error from a live daemon, not ENOTCONN", c.what, r)
			}
		}
		for _, args := range [][]string{{"stat", v.mnt}, {"stat", v.path("a")}, {"df", v.mnt}} {
			if r := envXRun(env, args[0], args[1:]...); r.err != nil {
				t.Errorf("%v", r)
			}
		}
		// A file open before the removal still reads (its backing file
		// is open in the daemon) or fails; it must not hang.
		readDone := make(chan error, 1)
		go func() {
			buf := make([]byte, len(want))
			_, err := preadFull(open, buf, 0)
			if err == nil && !bytes.Equal(buf, want) {
				err = fmt.Errorf("read %d bytes that differ from what was written", len(buf))
			}
			readDone <- err
		}()
		select {
		case err := <-readDone:
			t.Logf("reading a file opened before the removal: %v", err)
		case <-time.After(envXTimeout):
			t.Errorf("reading a file opened before the removal still blocks after %v", envXTimeout)
		}
		open.Close()
		envXDaemonAlive(t, v)
		if err := v.unmountErr(); err != nil {
			t.Errorf("unmount after the backing dir was removed: %v", err)
		}
	})

	t.Run("read-only backing", func(t *testing.T) {
		v := newVolume(t)
		want := pattern("ro backing", 6000)
		writeFile(t, v.path("f"), want)
		if err := os.Mkdir(v.path("d"), 0o755); err != nil {
			t.Fatal(err)
		}
		v.unmount()
		// Root ignores permission bits, so a read-only bind mount of the
		// backing directory over itself makes it read-only.
		for _, args := range [][]string{{"--bind", v.cipherDir, v.cipherDir}, {"-o", "remount,bind,ro", v.cipherDir}} {
			if r := envXRun(os.Environ(), "mount", args...); r.code != 0 || r.err != nil {
				t.Fatalf("%v\nwant exit 0", r)
			}
		}
		t.Cleanup(func() {
			if isMounted(v.mnt) {
				if err := v.unmountErr(); err != nil {
					t.Errorf("unmount: %v", err)
					runCommand(os.Environ(), "/", "umount", "-l", v.mnt)
				}
			}
			if r := runCommand(os.Environ(), "/", "umount", v.cipherDir); r.code != 0 {
				t.Errorf("%v", r)
				runCommand(os.Environ(), "/", "umount", "-l", v.cipherDir)
			}
		})
		r := envXRun(v.env(), kmsfsBin, v.mountCommand()...)
		if r.code != exitOK || r.err != nil {
			// Refusing is acceptable, with a clear error.
			envXCheckError(t, r, []int{exitError, exitBadVolume, exitMount}, "read-only")
			return
		}
		v.mounted = true
		v.daemons = daemonsOf(v.mnt)
		checkContent(t, v.path("f"), want, v.blockSize)
		changes := map[string]func() error{
			"create": func() error { return os.WriteFile(v.path("new"), []byte("x"), 0o644) },
			"open O_WRONLY": func() error {
				f, err := os.OpenFile(v.path("f"), os.O_WRONLY, 0)
				if err == nil {
					_, err = f.WriteAt([]byte("x"), 0)
					f.Close()
				}
				return err
			},
			"truncate": func() error { return os.Truncate(v.path("f"), 1) },
			"mkdir":    func() error { return os.Mkdir(v.path("d2"), 0o755) },
			"remove":   func() error { return os.Remove(v.path("f")) },
			"rename":   func() error { return os.Rename(v.path("f"), v.path("g")) },
		}
		for _, name := range []string{"create", "open O_WRONLY", "truncate", "mkdir", "remove", "rename"} {
			if err := envXWithin(changes[name]); errnoOf(err) != syscall.EROFS && errnoOf(err) != syscall.EACCES {
				t.Errorf("%s on read-only backing storage = %v, want EROFS or EACCES", name, err)
			}
		}
		checkContent(t, v.path("f"), want, v.blockSize)
		envXDaemonAlive(t, v)
	})

	t.Run("mount point busy", func(t *testing.T) {
		v := newVolume(t)
		// The same volume again, and another volume, on the busy mount
		// point.
		other := newVolume(t, notMounted())
		for _, args := range [][]string{
			v.mountCommand(),
			envXMountCommand(other, other.cipherDir, v.mnt),
		} {
			r := envXRun(v.env(), kmsfsBin, args...)
			envXCheckError(t, r, []int{exitMount}, "busy")
		}
		// Something else mounted there.
		busy := filepath.Join(t.TempDir(), "tmpfs")
		if err := os.Mkdir(busy, 0o755); err != nil {
			t.Fatal(err)
		}
		if r := envXRun(os.Environ(), "mount", "-t", "tmpfs", "-o", "size=1m", "kmsfs-busy", busy); r.code != 0 || r.err != nil {
			t.Fatalf("%v\nwant exit 0", r)
		}
		t.Cleanup(func() { runCommand(os.Environ(), "/", "umount", "-l", busy) })
		r := envXRun(other.env(), kmsfsBin, envXMountCommand(other, other.cipherDir, busy)...)
		envXCheckError(t, r, []int{exitMount}, "busy")
		if got := readMounts(); slices.ContainsFunc(got, func(m mountEntry) bool { return m.dir == busy && strings.HasPrefix(m.fstype, "fuse") }) {
			t.Errorf("kmsfs mounted over %s although it was busy", busy)
		}
		// A missing mount point and a file as mount point.
		file := filepath.Join(other.dir, "file")
		writeFile(t, file, []byte("not a directory"))
		for _, mnt := range []string{filepath.Join(other.dir, "missing"), file} {
			r := envXRun(other.env(), kmsfsBin, envXMountCommand(other, other.cipherDir, mnt)...)
			envXCheckError(t, r, []int{exitMount}, mnt)
		}
		// The first mount is unharmed.
		writeFile(t, v.path("f"), []byte("still works"))
		checkContent(t, v.path("f"), []byte("still works"), v.blockSize)
	})

	t.Run("no /dev/fuse", func(t *testing.T) {
		unshare := requireTool(t, "unshare")
		v := newVolume(t, notMounted())
		cases := []struct {
			name  string
			setup string // shell commands run in a new mount namespace
			want  []string
		}{
			// /dev without a fuse device (a fresh tmpfs holding only
			// /dev/null).
			{"missing", "mount -t tmpfs -o mode=0755 kmsfs-dev /dev && mknod -m 0666 /dev/null c 1 3", []string{"/dev/fuse"}},
			// /dev/fuse is there but is not the FUSE device.
			{"not the FUSE device", "mount --bind /dev/null /dev/fuse", []string{"/dev/fuse"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				args := append([]string{"-m", "sh", "-c", c.setup + ` && exec "$0" "$@"`, kmsfsBin}, v.mountCommand()...)
				r := envXRun(v.env(), unshare, args...)
				envXCheckError(t, r, []int{exitMount}, c.want...)
				if isMounted(v.mnt) {
					t.Errorf("%s is mounted", v.mnt)
				}
				if pids := daemonsOf(v.mnt); len(pids) > 0 {
					t.Errorf("daemon processes %v still run after the failed mount", pids)
					killAll(pids)
				}
			})
		}
		// The volume still mounts normally.
		v.mount()
		writeFile(t, v.path("f"), []byte("ok"))
		checkContent(t, v.path("f"), []byte("ok"), v.blockSize)
	})
}

// envXWithin runs f, an operation on the mount, and turns a hang into an
// error (the goroutine is left blocked; the test then fails).
func envXWithin(f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(envXTimeout):
		return fmt.Errorf("hung for %v", envXTimeout)
	}
}
