package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// controlSquatEnv makes the test binary, run as a child, squat the
// control socket name given in it instead of running tests (TestMain).
const controlSquatEnv = "KMSFS_TEST_SQUAT_CONTROL"

// squatAnswer is what the squatter answers every request with: stats
// that would look genuine to a client that did not check.
const squatAnswer = `{"volume":"squatted","cipher_dir":"/squatter"}`

// squatControl binds the abstract socket name and answers every
// connection with squatAnswer, until killed.
func squatControl(name string) int {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: name})
	}
	if err == nil {
		err = unix.Listen(fd, 4)
	}
	if err != nil {
		fmt.Println("squat failed:", err)
		return 1
	}
	fmt.Println("squatting")
	for {
		c, _, err := unix.Accept(fd)
		if err != nil {
			return 1
		}
		req := make([]byte, 256)
		unix.Read(c, req)
		unix.Write(c, []byte(squatAnswer+"\n"))
		unix.Close(c)
	}
}

// controlName is the abstract socket name of a mount point's control
// socket (fs/control: "@kmsfs-" and 12 bytes of the SHA-256 of the mount
// point, in hex).
func controlName(mnt string) string {
	sum := sha256.Sum256([]byte(mnt))
	return "@kmsfs-" + hex.EncodeToString(sum[:12])
}

// TestControlSocketSquatted has another user bind the control socket
// name of a mount point before kmsfs mounts there: "kmsfs stats" must
// refuse to believe the squatter, and say why.
func TestControlSocketSquatted(t *testing.T) {
	v := newVolume(t, notMounted())
	// The test binary lives in a directory only root may enter: copy it
	// where the other user can run it.
	dir, err := os.MkdirTemp("/tmp", "kmsfs-squat-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "squat")
	self, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(bin, self, 0o755)
	}
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), controlSquatEnv+"="+controlName(v.mnt))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the squatter as uid 65534: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if got := strings.TrimSpace(string(buf[:n])); got != "squatting" {
		t.Fatalf("squatter said %q, want \"squatting\"", got)
	}
	v.mount()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := v.kmsfs("stats", "--json", v.mnt)
		if strings.Contains(r.stdout, "squatted") {
			t.Fatalf("kmsfs stats believed the squatter: %v", r)
		}
		if r.code != exitOK && strings.Contains(r.stderr, "another user") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kmsfs stats with the control socket squatted = %v, want a failure that names another user", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestControlSocketOtherUser runs "kmsfs stats" as another user: the
// server refuses, and the user reads why.
func TestControlSocketOtherUser(t *testing.T) {
	v := newVolume(t)
	// kmsfsBin lives where only root may enter: a copy the other user
	// can run.
	dir, err := os.MkdirTemp("/tmp", "kmsfs-otheruser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "kmsfs")
	b, err := os.ReadFile(kmsfsBin)
	if err == nil {
		err = os.WriteFile(bin, b, 0o755)
	}
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	accessXDenied(t, "kmsfs stats of root's mount", "permission denied", bin, "stats", v.mnt)
}
