package tests

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Mounting is safe: no mount point in, at or above the volume, no hidden
// files without --nonempty, one read-write mount per volume, and
// "kmsfs umount" touches only kmsfs mounts.

func TestMountPlacementRefused(t *testing.T) {
	v := newVolume(t, notMounted())
	if err := os.Mkdir(v.backing("inner"), 0o755); err != nil {
		t.Fatal(err)
	}
	nonempty := filepath.Join(v.dir, "nonempty")
	if err := os.MkdirAll(filepath.Join(nonempty, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, mnt, want string
	}{
		{"the volume directory", v.cipherDir, "volume's own directory"},
		{"inside the volume", v.backing("inner"), "inside the volume"},
		{"above the volume", v.dir, "above the volume"},
		{"not empty", nonempty, "not empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := v.kmsfs("mount", "--log-file", v.logFile, v.cipherDir, tc.mnt)
			if isMounted(tc.mnt) {
				syscall.Unmount(tc.mnt, syscall.MNT_DETACH)
			}
			if r.code != exitMount || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("mount at %s: %v\nwant exit %d and %q", tc.name, r, exitMount, tc.want)
			}
		})
	}
	t.Run("not empty with --nonempty", func(t *testing.T) {
		r := v.kmsfs("mount", "--nonempty", "--log-file", v.logFile, v.cipherDir, nonempty)
		if r.code != exitOK {
			t.Fatalf("mount --nonempty: %v\nwant exit 0", r)
		}
		defer func() {
			if r := v.kmsfs("umount", nonempty); r.code != exitOK {
				syscall.Unmount(nonempty, syscall.MNT_DETACH)
				t.Errorf("umount: %v", r)
			}
		}()
		if !isMounted(nonempty) {
			t.Errorf("%s is not mounted after mount --nonempty", nonempty)
		}
	})
}

// TestSecondReadWriteMount mounts a volume twice: a second read-write
// mount is refused while the first runs; a read-only one is allowed.
func TestSecondReadWriteMount(t *testing.T) {
	v := newVolume(t)
	writeFile(t, v.path("a"), []byte("one writer"))
	second := filepath.Join(v.dir, "second")
	if err := os.Mkdir(second, 0o755); err != nil {
		t.Fatal(err)
	}
	r := v.kmsfs("mount", "--log-file", v.logFile, v.cipherDir, second)
	if isMounted(second) {
		syscall.Unmount(second, syscall.MNT_DETACH)
	}
	if r.code == exitOK || !strings.Contains(r.stderr, "mounted read-write") {
		t.Errorf("second read-write mount: %v\nwant a failure that says the volume is mounted read-write", r)
	}
	r = v.kmsfs("mount", "--ro", "--log-file", v.logFile, v.cipherDir, second)
	if r.code != exitOK {
		t.Fatalf("read-only mount beside a read-write one: %v\nwant exit 0", r)
	}
	defer func() {
		if r := v.kmsfs("umount", second); r.code != exitOK {
			syscall.Unmount(second, syscall.MNT_DETACH)
			t.Errorf("umount: %v", r)
		}
	}()
	if got, err := os.ReadFile(filepath.Join(second, "a")); err != nil || string(got) != "one writer" {
		t.Errorf("ReadFile through the read-only mount = %q, %v; want the file", got, err)
	}
}

// TestUmountOnlyKmsfs checks that "kmsfs umount" says "not mounted" for a
// plain directory and refuses a mount of another kind.
func TestUmountOnlyKmsfs(t *testing.T) {
	v := newVolume(t, notMounted())
	if r := v.kmsfs("umount", v.mnt); r.code == exitOK || !strings.Contains(r.stderr, "not mounted") {
		t.Errorf("umount of a plain directory: %v\nwant a failure that says not mounted", r)
	}
	tmp := filepath.Join(v.dir, "tmpfs")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("kmsfs-test", tmp, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mounting a tmpfs: %v", err)
	}
	defer syscall.Unmount(tmp, syscall.MNT_DETACH)
	if r := v.kmsfs("umount", tmp); r.code == exitOK || !strings.Contains(r.stderr, "not a kmsfs mount") {
		t.Errorf("umount of a tmpfs: %v\nwant a failure that says it is not a kmsfs mount", r)
	}
	if !isMounted(tmp) {
		t.Errorf("kmsfs umount unmounted a tmpfs")
	}
}

// TestSigtermWhileBusy sends SIGTERM to the server while a file is open:
// the mount is detached at once (logged), the open file keeps working,
// and the server exits once it is closed.
func TestSigtermWhileBusy(t *testing.T) {
	v := newVolume(t)
	writeFile(t, v.path("a"), []byte("still open"))
	f, err := os.Open(v.path("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pids := v.daemons
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for isMounted(v.mnt) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if isMounted(v.mnt) {
		t.Fatalf("%s still mounted 10 s after SIGTERM with a file open", v.mnt)
	}
	v.mounted = false
	buf := make([]byte, 64)
	if n, err := f.ReadAt(buf, 0); string(buf[:n]) != "still open" {
		t.Errorf("ReadAt on the file open across the lazy unmount = %q, %v; want its content", buf[:n], err)
	}
	f.Close()
	if alive := waitExit(pids, daemonExitTimeout); len(alive) > 0 {
		killAll(alive)
		t.Errorf("server %v still ran after its last file was closed", alive)
	}
	if l := v.log(); !strings.Contains(l, "lazily") {
		t.Errorf("daemon log = %q, want a line saying it detached lazily", l)
	}
}
