package tests

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The operations tests check kmsfs as a system runs it: mounted by
// mount(8) and /etc/fstab through its mount helper, started by systemd
// (sd_notify), logging to syslog, and installed by "make install".

// mountHelperPath is where mount(8) looks for the helper of type
// fuse.kmsfs (it searches /sbin, /sbin/fs.d and /sbin/fs only).
const mountHelperPath = "/sbin/mount.fuse.kmsfs"

// installMountHelper links mountHelperPath to the kmsfs binary of the
// tests until the test ends. A helper already there (a "make install"
// on this machine) is moved aside and put back; a lock serializes test
// binaries running at the same time.
func installMountHelper(t *testing.T) {
	t.Helper()
	requireBinary(t)
	if why := fuseUnavailable(); why != "" && !inCI() {
		t.Skipf("cannot mount FUSE here (%s)", why)
	}
	requireTool(t, "mount")
	lock, err := os.OpenFile("/run/kmsfs-tests-mount-helper.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("lock for %s: %v", mountHelperPath, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		t.Fatalf("locking %s: %v", lock.Name(), err)
	}
	saved := ""
	if _, err := os.Lstat(mountHelperPath); err == nil {
		target, _ := os.Readlink(mountHelperPath)
		if _, err := os.Stat(target); err != nil && strings.Contains(target, "/kmsfs-tests-") {
			// Left by a test binary that was killed: its binary is gone.
			os.Remove(mountHelperPath)
		} else {
			saved = fmt.Sprintf("%s.kmsfs-tests-saved.%d", mountHelperPath, os.Getpid())
			if err := os.Rename(mountHelperPath, saved); err != nil {
				lock.Close()
				t.Fatalf("moving the installed %s aside: %v", mountHelperPath, err)
			}
		}
	}
	t.Cleanup(func() {
		if target, _ := os.Readlink(mountHelperPath); target == kmsfsBin {
			if err := os.Remove(mountHelperPath); err != nil {
				t.Errorf("removing %s: %v", mountHelperPath, err)
			}
		}
		if saved != "" {
			if err := os.Rename(saved, mountHelperPath); err != nil {
				t.Errorf("putting back %s: %v", mountHelperPath, err)
			}
		}
		lock.Close()
	})
	if err := os.Symlink(kmsfsBin, mountHelperPath); err != nil {
		t.Fatalf("installing the mount helper: %v", err)
	}
}

// adoptMount records that v was mounted by some other command (r), so
// that the test's cleanup unmounts it and waits for its server.
func (v *volume) adoptMount(r result) {
	v.t.Helper()
	if r.code != exitOK || r.err != nil {
		v.t.Logf("daemon log:\n%s", v.log())
		v.t.Fatalf("%v\nwant exit 0", r)
	}
	if !isMounted(v.mnt) {
		v.t.Fatalf("%v\nexit 0, but %s is not in /proc/mounts", r, v.mnt)
	}
	v.mounted = true
	v.daemons = daemonsOf(v.mnt)
	if len(v.daemons) == 0 {
		v.t.Errorf("no kmsfs server found for %s", v.mnt)
	}
}

// fstypeOf returns the type of the mount at dir in /proc/mounts.
func fstypeOf(dir string) string {
	for _, m := range readMounts() {
		if m.dir == dir {
			return m.fstype
		}
	}
	return ""
}

// TestMountHelper mounts volumes with mount(8): "mount -t fuse.kmsfs" and
// an fstab line, which run /sbin/mount.fuse.kmsfs.
func TestMountHelper(t *testing.T) {
	installMountHelper(t)

	t.Run("mount -t", func(t *testing.T) {
		v := newVolume(t, notMounted())
		r := runCommand(v.env(), v.dir, "mount", "-t", "fuse.kmsfs", v.cipherDir, v.mnt,
			"-o", "key="+v.keyURI+",log_file="+v.logFile+",allow_other,_netdev,nofail")
		v.adoptMount(r)
		if got := fstypeOf(v.mnt); got != "fuse.kmsfs" {
			t.Errorf("type of %s in /proc/mounts = %q, want fuse.kmsfs", v.mnt, got)
		}
		writeFile(t, v.path("f"), []byte("through mount(8)"))
		checkBacking(t, v, "f", int64(len("through mount(8)")))
		// umount(8) unmounts it (no helper needed) and the server exits.
		if r := runCommand(v.env(), v.dir, "umount", v.mnt); r.code != 0 {
			t.Fatalf("%v\nwant exit 0", r)
		}
		if alive := waitExit(v.daemons, daemonExitTimeout); len(alive) > 0 {
			t.Errorf("servers %v still run after umount(8)", alive)
		}
		v.mounted = false
		v.mount()
		checkContent(t, v.path("f"), []byte("through mount(8)"), v.blockSize)
	})

	t.Run("fstab", func(t *testing.T) {
		v := newVolume(t, notMounted())
		fstab := filepath.Join(v.dir, "fstab")
		line := fmt.Sprintf("%s %s fuse.kmsfs defaults,key=%s,log_file=%s,_netdev,nofail,x-systemd.automount 0 0\n",
			v.cipherDir, v.mnt, v.keyURI, v.logFile)
		writeFile(t, fstab, []byte("# kmsfs test\n"+line))
		// mount --fstab reads this file instead of /etc/fstab.
		v.adoptMount(runCommand(v.env(), v.dir, "mount", "--fstab", fstab, v.mnt))
		writeFile(t, v.path("f"), []byte("fstab"))
		checkContent(t, v.path("f"), []byte("fstab"), v.blockSize)
	})

	t.Run("read-only", func(t *testing.T) {
		v := newVolume(t)
		writeFile(t, v.path("f"), []byte("before"))
		v.unmount()
		v.adoptMount(runCommand(v.env(), v.dir, "mount", "-t", "fuse.kmsfs", "-o", "ro,noexec,key="+v.keyURI, v.cipherDir, v.mnt))
		checkContent(t, v.path("f"), []byte("before"), v.blockSize)
		if err := os.WriteFile(v.path("g"), []byte("x"), 0o644); errnoOf(err) != syscall.EROFS {
			t.Errorf("os.WriteFile on a mount -o ro = %v, want EROFS", err)
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(v.mnt, &st); err != nil {
			t.Fatal(err)
		}
		const stRdonly, stNoexec = 0x1, 0x8
		if st.Flags&stRdonly == 0 || st.Flags&stNoexec == 0 {
			t.Errorf("statfs(%s).Flags = %#x, want ST_RDONLY and ST_NOEXEC", v.mnt, st.Flags)
		}
	})

	t.Run("kmsfs mount -o", func(t *testing.T) {
		v := newVolume(t, notMounted())
		v.adoptMount(v.kmsfs("mount", "-o", "ro,key="+v.keyURI+",log_file="+v.logFile, v.cipherDir, v.mnt))
		if err := os.WriteFile(v.path("g"), []byte("x"), 0o644); errnoOf(err) != syscall.EROFS {
			t.Errorf("os.WriteFile on kmsfs mount -o ro = %v, want EROFS", err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		v := newVolume(t, notMounted())
		for _, opts := range []string{"frobnicate", "sync", "dirsync"} {
			r := runCommand(v.env(), v.dir, "mount", "-t", "fuse.kmsfs", "-o", opts, v.cipherDir, v.mnt)
			if r.code == 0 || isMounted(v.mnt) {
				v.adoptMount(r)
				t.Fatalf("%v\nwant a failure for option %s", r, opts)
			}
			if !strings.Contains(r.stderr, opts) {
				t.Errorf("%v\nwant stderr naming option %s", r, opts)
			}
		}
	})

	t.Run("fake", func(t *testing.T) {
		v := newVolume(t, notMounted())
		r := runCommand(v.env(), v.dir, "mount", "-f", "-t", "fuse.kmsfs", "-o", "key="+v.keyURI, v.cipherDir, v.mnt)
		if r.code != 0 || isMounted(v.mnt) {
			t.Errorf("%v\nwant exit 0 and nothing mounted (mount -f)", r)
		}
	})
}

// notifyListener collects the datagrams sent to a NOTIFY_SOCKET.
type notifyListener struct {
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T, addr string) *notifyListener {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	l := &notifyListener{conn: conn, msgs: make(chan string, 16)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(l.msgs)
				return
			}
			l.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return l
}

// next returns the next datagram, or "" after timeout.
func (l *notifyListener) next(timeout time.Duration) string {
	select {
	case m := <-l.msgs:
		return m
	case <-time.After(timeout):
		return ""
	}
}

// TestSystemdNotify runs "kmsfs mount --foreground" as systemd runs a
// unit of Type=notify: READY=1 must come once the mount is in
// /proc/mounts, STOPPING=1 when it is unmounted.
func TestSystemdNotify(t *testing.T) {
	for _, sock := range []string{"path", "abstract"} {
		t.Run(sock, func(t *testing.T) {
			v := newVolume(t, notMounted())
			addr := filepath.Join(v.dir, "notify")
			if sock == "abstract" {
				addr = fmt.Sprintf("@kmsfs-tests-%d-%s", os.Getpid(), filepath.Base(v.dir))
			}
			l := listenNotify(t, addr)
			cmd := exec.Command(kmsfsBin, v.mountCommand("--foreground")...)
			cmd.Env = append(v.env(), "NOTIFY_SOCKET="+addr)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			exited := false
			defer func() {
				if !exited {
					cmd.Process.Kill()
					<-done
				}
			}()

			var msg string
			select {
			case msg = <-l.msgs:
			case err := <-done:
				exited = true
				if why := fuseUnavailable(); why != "" && !inCI() {
					t.Skipf("cannot mount FUSE here (%s): %v\n%s", why, err, out.String())
				}
				t.Fatalf("kmsfs mount --foreground exited before READY=1: %v\n%s", err, out.String())
			case <-time.After(commandTimeout):
				t.Fatalf("no notification %v after kmsfs mount --foreground\n%s", commandTimeout, out.String())
			}
			mountedAtReady := isMounted(v.mnt)
			if mountedAtReady {
				v.mounted = true
				v.daemons = []int{cmd.Process.Pid}
			}
			if !strings.Contains("\n"+msg+"\n", "\nREADY=1\n") {
				t.Errorf("first notification = %q, want READY=1", msg)
			}
			if !mountedAtReady {
				t.Fatalf("READY=1 came before %s was in /proc/mounts", v.mnt)
			}
			writeFile(t, v.path("f"), []byte("notify"))

			if r := v.kmsfs("umount", v.mnt); r.code != 0 {
				t.Fatalf("%v\nwant exit 0", r)
			}
			v.mounted = false
			if msg := l.next(daemonExitTimeout); !strings.Contains("\n"+msg+"\n", "\nSTOPPING=1\n") {
				t.Errorf("notification after kmsfs umount = %q, want STOPPING=1", msg)
			}
			select {
			case err := <-done:
				exited = true
				if err != nil {
					t.Errorf("kmsfs mount --foreground after umount = %v, want exit 0\n%s", err, out.String())
				}
			case <-time.After(daemonExitTimeout):
				t.Errorf("kmsfs mount --foreground still runs %v after umount", daemonExitTimeout)
			}
			if msg := l.next(100 * time.Millisecond); msg != "" {
				t.Errorf("notification after STOPPING=1: %q, want none", msg)
			}
		})
	}

	// A background server is not the process systemd started: neither it
	// nor "kmsfs mount" notifies.
	t.Run("background", func(t *testing.T) {
		v := newVolume(t, notMounted())
		addr := filepath.Join(v.dir, "notify")
		l := listenNotify(t, addr)
		v.adoptMount(runCommand(append(v.env(), "NOTIFY_SOCKET="+addr), v.dir, kmsfsBin, v.mountCommand()...))
		v.unmount()
		if msg := l.next(500 * time.Millisecond); msg != "" {
			t.Errorf("notification from a background mount: %q, want none", msg)
		}
	})
}

// syslogListener collects the messages sent to a fake /dev/log.
type syslogListener struct {
	mu   sync.Mutex
	msgs []string
}

func listenSyslog(t *testing.T, addr string) *syslogListener {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	l := &syslogListener{}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.msgs = append(l.msgs, string(buf[:n]))
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return l
}

// wait returns the first message containing all of want, waiting up to
// timeout for it; "" if none came.
func (l *syslogListener) wait(timeout time.Duration, want ...string) string {
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		for _, m := range l.msgs {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(m, w)
			}
			if ok {
				l.mu.Unlock()
				return m
			}
		}
		l.mu.Unlock()
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *syslogListener) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// tamperedVolume makes a volume holding "victim" (three blocks), flips a
// bit in block 1 of its backing file and returns the volume, unmounted.
func tamperedVolume(t *testing.T) *volume {
	t.Helper()
	v := newVolume(t)
	writeFile(t, v.path("victim"), pattern("victim", 3*v.blockSize))
	v.unmount()
	f, err := os.OpenFile(v.backing("victim"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	off := v.blockOffset(t, 1) + 40
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestServerLogDestination checks where a background server without
// --log-file logs: to syslog (here a socket named by KMSFS_SYSLOG_ADDR
// instead of /dev/log), or without syslog to a file under
// $XDG_STATE_HOME/kmsfs; never to the terminal.
func TestServerLogDestination(t *testing.T) {
	t.Run("syslog", func(t *testing.T) {
		v := tamperedVolume(t)
		addr := filepath.Join(v.dir, "log")
		l := listenSyslog(t, addr)
		state := filepath.Join(v.dir, "state")
		env := append(v.env(), "KMSFS_SYSLOG_ADDR="+addr, "XDG_STATE_HOME="+state)
		r := runCommand(env, v.dir, kmsfsBin, "mount", v.cipherDir, v.mnt)
		v.adoptMount(r)
		if r.stderr != "" || r.stdout != "" {
			t.Errorf("%v\nwant no output from a mount that worked", r)
		}
		if _, err := os.ReadFile(v.path("victim")); errnoOf(err) != syscall.EIO {
			t.Errorf("reading the tampered file = %v, want EIO", err)
		}
		msg := l.wait(10*time.Second, "victim", "block 1")
		if msg == "" {
			t.Fatalf("syslog messages = %q, want one naming victim and block 1", l.all())
		}
		if !strings.HasPrefix(msg, "<30>") || !strings.Contains(msg, "kmsfs[") {
			t.Errorf("syslog message = %q, want <30> (daemon.info) and tag kmsfs[PID]", msg)
		}
		if l.wait(0, "serving "+v.cipherDir) == "" {
			t.Errorf("syslog messages = %q, want the serving line", l.all())
		}
		if _, err := os.Stat(state); err == nil {
			t.Errorf("%s exists: with syslog there is no log file", state)
		}
		v.unmount()
		if l.wait(5*time.Second, v.mnt+" unmounted") == "" {
			t.Errorf("syslog messages = %q, want the unmounted line", l.all())
		}
	})

	t.Run("no syslog", func(t *testing.T) {
		v := tamperedVolume(t)
		state := filepath.Join(v.dir, "state")
		env := append(v.env(), "KMSFS_SYSLOG_ADDR="+filepath.Join(v.dir, "no-such-socket"), "XDG_STATE_HOME="+state)
		r := runCommand(env, v.dir, kmsfsBin, "mount", v.cipherDir, v.mnt)
		v.adoptMount(r)
		if r.stderr != "" || r.stdout != "" {
			t.Errorf("%v\nwant no output from a mount that worked", r)
		}
		if _, err := os.ReadFile(v.path("victim")); errnoOf(err) != syscall.EIO {
			t.Errorf("reading the tampered file = %v, want EIO", err)
		}
		v.unmount()
		p := filepath.Join(state, "kmsfs", strings.ReplaceAll(strings.Trim(v.mnt, "/"), "/", "-")+".log")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("log file of a server without syslog: %v", err)
		}
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			found = found || strings.Contains(line, "victim") && strings.Contains(line, "block 1")
		}
		if !found || !strings.Contains(string(b), "no syslog") {
			t.Errorf("log file %s = %q, want why there is no syslog and a line naming victim and block 1", p, b)
		}
	})
}

// TestMakeInstall runs "make install" into a temporary DESTDIR and checks
// what it installed.
func TestMakeInstall(t *testing.T) {
	makeCmd := requireTool(t, "make")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	r := runCommand(os.Environ(), root, makeCmd, "install", "DESTDIR="+dest, "PREFIX=/usr")
	if r.code != 0 || r.err != nil {
		t.Fatalf("%v\nwant exit 0", r)
	}
	bin := filepath.Join(dest, "usr/bin/kmsfs")

	// The version names the release and the commit.
	v := runCommand(os.Environ(), "/", bin, "version")
	if v.code != 0 || !strings.HasPrefix(v.stdout, "kmsfs ") || strings.HasPrefix(v.stdout, "kmsfs dev ") {
		t.Errorf("%v\nwant the release named", v)
	}
	wantCommit := "unknown"
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		wantCommit = strings.TrimSpace(string(out))
	}
	if !strings.Contains(v.stdout, "\nruntime/secret: on\n") {
		t.Errorf("installed kmsfs version = %q, want runtime/secret on (the Makefile builds with GOEXPERIMENT=runtimesecret)", v.stdout)
	}
	if !strings.Contains(v.stdout, "(commit "+wantCommit+",") {
		t.Errorf("installed kmsfs version = %q, want commit %s", v.stdout, wantCommit)
	}

	for _, helper := range []string{"sbin/mount.fuse.kmsfs", "sbin/mount.kmsfs"} {
		if target, err := os.Readlink(filepath.Join(dest, helper)); err != nil || target != "/usr/bin/kmsfs" {
			t.Errorf("os.Readlink(%s) = %q, %v; want /usr/bin/kmsfs", helper, target, err)
		}
	}

	man := filepath.Join(dest, "usr/share/man/man1/kmsfs.1")
	page, err := os.ReadFile(man)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(page, []byte("\n.TH KMSFS 1 ")) {
		t.Errorf("%s has no .TH line:\n%.300s", man, page)
	}
	if manCmd, err := exec.LookPath("man"); err == nil {
		r := runCommand(append(os.Environ(), "MANWIDTH=80"), "/", manCmd, "-l", man)
		if r.code != 0 || !strings.Contains(r.stdout, "kmsfs mount") || !strings.Contains(r.stdout, "x-systemd.automount") {
			t.Errorf("%v\nwant the page rendered, with kmsfs mount and the fstab options", r)
		}
	}

	unit := filepath.Join(dest, "usr/lib/systemd/system/kmsfs@.service")
	u, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "ExecStart=/usr/bin/kmsfs mount --foreground ", "ExecStop=/usr/bin/kmsfs umount %f"} {
		if !bytes.Contains(u, []byte(want)) {
			t.Errorf("%s lacks %q:\n%s", unit, want, u)
		}
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		// Verify an instance of the unit, with the binary where it is here.
		dir := t.TempDir()
		body := bytes.ReplaceAll(u, []byte("/usr/bin/kmsfs"), []byte(bin))
		writeFile(t, filepath.Join(dir, "kmsfs@.service"), body)
		if err := os.Symlink("kmsfs@.service", filepath.Join(dir, "kmsfs@srv-plain.service")); err != nil {
			t.Fatal(err)
		}
		r := runCommand(os.Environ(), dir, sa, "verify", "--man=no", filepath.Join(dir, "kmsfs@srv-plain.service"))
		if r.code != 0 || strings.Contains(r.stderr, "kmsfs@") {
			t.Errorf("%v\nwant the unit verified", r)
		}
	}

	for _, f := range []string{"usr/share/bash-completion/completions/kmsfs", "usr/share/zsh/site-functions/_kmsfs"} {
		b, err := os.ReadFile(filepath.Join(dest, f))
		if err != nil {
			t.Errorf("completion %s: %v", f, err)
			continue
		}
		if !bytes.Contains(b, []byte("kms-emulator")) || !bytes.Contains(b, []byte("--allow-other")) {
			t.Errorf("completion %s lacks the commands and flags:\n%s", f, b)
		}
	}
	if r := runCommand(os.Environ(), "/", "bash", "-n", filepath.Join(dest, "usr/share/bash-completion/completions/kmsfs")); r.code != 0 {
		t.Errorf("%v\nwant valid bash", r)
	}
}
