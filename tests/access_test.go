package tests

// Access by other users: with --allow-other the kernel enforces the Unix
// permissions of the files (default_permissions) for a second user; without
// it, other users cannot even stat the mount.

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// accessXUID is the second user (nobody on Debian).
const accessXUID = "65534"

// accessXAs runs a command as accessXUID with no supplementary groups.
func accessXAs(t *testing.T, args ...string) result {
	t.Helper()
	setpriv := requireTool(t, "setpriv")
	all := append([]string{"--reuid=" + accessXUID, "--regid=" + accessXUID, "--clear-groups", "--"}, args...)
	r := envXRun(append(os.Environ(), "LC_ALL=C"), setpriv, all...)
	if r.err != nil {
		t.Fatalf("%v", r)
	}
	return r
}

// accessXAllowed checks that a command run as the second user succeeded.
func accessXAllowed(t *testing.T, what string, args ...string) result {
	t.Helper()
	r := accessXAs(t, args...)
	if r.code != 0 {
		t.Errorf("uid %s: %s: %v\nwant exit 0", accessXUID, what, r)
	}
	return r
}

// accessXDenied checks that a command run as the second user failed with
// the given error text ("Permission denied" for EACCES).
func accessXDenied(t *testing.T, what, errText string, args ...string) {
	t.Helper()
	r := accessXAs(t, args...)
	if r.code == 0 || !strings.Contains(r.stderr, errText) {
		t.Errorf("uid %s: %s: %v\nwant a failure with %q", accessXUID, what, r, errText)
	}
}

// accessXTraversable lets every user search the directories above dir
// (t.TempDir makes them 0700), until the test ends.
func accessXTraversable(t *testing.T, dir string) {
	t.Helper()
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode&0o001 == 0 {
			if err := os.Chmod(d, mode|0o001); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(d, mode) })
		}
		if d == "/" {
			return
		}
	}
}

func TestAccess(t *testing.T) {
	requireTool(t, "setpriv")
	v := newVolume(t, withMountArgs("--allow-other"))
	accessXTraversable(t, v.mnt)
	public := []byte("readable by everyone\n")
	mk := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		writeFile(t, v.path(name), data)
		if err := os.Chmod(v.path(name), mode); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(name string, mode os.FileMode) {
		t.Helper()
		if err := os.Mkdir(v.path(name), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(v.path(name), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(v.mnt, 0o755); err != nil {
		t.Fatalf("os.Chmod(mount root, 0755) = %v", err)
	}
	mk("public", public, 0o644)
	mk("private", []byte("root only\n"), 0o600)
	mk("writable", []byte("anyone may write\n"), 0o666)
	mkdir("rootdir", 0o755)
	mkdir("shared", 0o777)

	t.Run("allow-other", func(t *testing.T) {
		if r := accessXAllowed(t, "cat a 0644 file", "cat", v.path("public")); r.stdout != string(public) {
			t.Errorf("uid %s: cat public = %q, want %q", accessXUID, r.stdout, public)
		}
		accessXAllowed(t, "list the root", "ls", v.mnt)
		accessXDenied(t, "cat a 0600 file of root", "Permission denied", "cat", v.path("private"))
		accessXDenied(t, "write a 0644 file of root", "Permission denied", "sh", "-c", "echo x >> "+v.path("public"))
		accessXDenied(t, "create in a 0755 dir of root", "Permission denied", "touch", v.path("rootdir/new"))
		accessXDenied(t, "mkdir in a 0755 dir of root", "Permission denied", "mkdir", v.path("rootdir/sub"))
		accessXDenied(t, "remove from a 0755 dir of root", "Permission denied", "rm", "-f", v.path("public"))
		accessXDenied(t, "chmod a file of root", "Operation not permitted", "chmod", "0666", v.path("public"))

		accessXAllowed(t, "append to a 0666 file", "sh", "-c", "echo more >> "+v.path("writable"))
		checkContent(t, v.path("writable"), []byte("anyone may write\nmore\n"), v.blockSize)
		accessXAllowed(t, "create in a 0777 dir", "sh", "-c", "echo mine > "+v.path("shared/mine"))
		checkContent(t, v.path("shared/mine"), []byte("mine\n"), v.blockSize)
		// The new file belongs to its creator, in the mount and in the
		// backing directory.
		for _, p := range []string{v.path("shared/mine"), v.backing("shared/mine")} {
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				t.Errorf("stat %s: %v", p, err)
			} else if got := st.Uid; got != 65534 || st.Gid != 65534 {
				t.Errorf("owner of %s = %d:%d, want %s:%s", p, st.Uid, st.Gid, accessXUID, accessXUID)
			}
		}
		// The private file is not readable in the backing directory
		// either, and root's files are unchanged.
		accessXDenied(t, "cat the backing file of a 0600 file", "Permission denied", "cat", v.backing("private"))
		checkContent(t, v.path("public"), public, v.blockSize)
		checkContent(t, v.path("private"), []byte("root only\n"), v.blockSize)
	})

	t.Run("without allow-other", func(t *testing.T) {
		v.unmount()
		v.mountArgs = nil
		v.mount()
		accessXDenied(t, "stat the mount point", "Permission denied", "stat", v.mnt)
		accessXDenied(t, "list the root", "Permission denied", "ls", v.mnt)
		accessXDenied(t, "cat a 0644 file", "Permission denied", "cat", v.path("public"))
		accessXDenied(t, "create in a 0777 dir", "Permission denied", "touch", v.path("shared/other"))
		// Root (who mounted it) still can.
		checkContent(t, v.path("public"), public, v.blockSize)
	})
}
