package tests

// Safety of the backing directory: the daemon must never act outside the
// backing directory, even when someone who can write it replaces one of
// its directories with a symlink while the mount has that directory open;
// it must work at any depth, however long the backing path; and it must
// show the permissions it stores, 0000 included, so that the kernel
// (default_permissions) refuses what they refuse.

import (
	"crypto/sha256"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// safetyXVictim is the content of the file outside the volume that the
// symlink swap aims at.
const safetyXVictim = "victim: a file of root's outside the volume\n"

// safetyXOp is one operation through a directory of the mount whose
// backing directory was replaced by a symlink to a directory outside.
type safetyXOp struct {
	name string
	// call names the operation in failure messages.
	call string
	// do runs the operation as root, relative to dfd, a descriptor of the
	// directory opened through the mount before the swap.
	do func(dfd int) error
	// sh is the same operation as a shell command run by the second user
	// with its working directory in that directory. It is "" where the
	// kernel's own permission checks stop that user before the daemon
	// sees the request (the victim is root's, mode 0600).
	sh string
}

var safetyXOps = []safetyXOp{
	{
		name: "create",
		call: `openat(d, "new", O_CREAT|O_EXCL|O_WRONLY, 0644) and write`,
		do: func(dfd int) error {
			fd, err := unix.Openat(dfd, "new", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			_, werr := unix.Write(fd, []byte("planted\n"))
			return errors.Join(werr, unix.Close(fd))
		},
		sh: "echo planted > new",
	},
	{
		// An empty file is one kmsfs would take for its own.
		name: "write",
		call: `openat(d, "empty", O_WRONLY) and pwrite at 0`,
		do: func(dfd int) error {
			fd, err := unix.Openat(dfd, "empty", unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			_, werr := unix.Pwrite(fd, []byte("overwritten"), 0)
			return errors.Join(werr, unix.Close(fd))
		},
	},
	{
		name: "truncate",
		call: `openat(d, "victim", O_WRONLY|O_TRUNC)`,
		do: func(dfd int) error {
			fd, err := unix.Openat(dfd, "victim", unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			return unix.Close(fd)
		},
	},
	{
		name: "unlink",
		call: `unlinkat(d, "victim", 0)`,
		do:   func(dfd int) error { return unix.Unlinkat(dfd, "victim", 0) },
		sh:   "unlink victim",
	},
	{
		name: "mkdir",
		call: `mkdirat(d, "sub", 0755)`,
		do:   func(dfd int) error { return unix.Mkdirat(dfd, "sub", 0o755) },
		sh:   "mkdir sub",
	},
	{
		name: "mknod",
		call: `mknodat(d, "fifo", S_IFIFO|0644, 0)`,
		do:   func(dfd int) error { return unix.Mknodat(dfd, "fifo", unix.S_IFIFO|0o644, 0) },
		sh:   "mkfifo fifo",
	},
	{
		name: "symlink",
		call: `symlinkat("victim", d, "link")`,
		do:   func(dfd int) error { return unix.Symlinkat("victim", dfd, "link") },
		sh:   "ln -s victim link",
	},
	{
		name: "rename",
		call: `renameat(d, "victim", d, "moved")`,
		do:   func(dfd int) error { return unix.Renameat(dfd, "victim", dfd, "moved") },
		// rename(2), without flags (mv asks for RENAME_NOREPLACE).
		sh: `perl -e 'rename("victim", "moved") or die "rename: $!\n"'`,
	},
	{
		name: "rename2",
		call: `renameat2(d, "victim", d, "moved", RENAME_NOREPLACE)`,
		do: func(dfd int) error {
			return unix.Renameat2(dfd, "victim", dfd, "moved", unix.RENAME_NOREPLACE)
		},
		sh: "mv victim moved",
	},
	{
		// fs.protected_hardlinks stops the second user from linking
		// root's file.
		name: "link",
		call: `linkat(d, "victim", d, "hardlink", 0)`,
		do:   func(dfd int) error { return unix.Linkat(dfd, "victim", dfd, "hardlink", 0) },
	},
	{
		name: "setxattr",
		call: `setxattr("/proc/self/fd/<d>/victim", "user.x", "planted")`,
		do: func(dfd int) error {
			return unix.Setxattr(fmt.Sprintf("/proc/self/fd/%d/victim", dfd), "user.x", []byte("planted"), 0)
		},
	},
	{
		name: "chmod",
		call: `fchmodat(d, "victim", 0666, 0)`,
		do:   func(dfd int) error { return unix.Fchmodat(dfd, "victim", 0o666, 0) },
	},
}

// safetyXEntry is what TestBackingSymlinkSwap compares of one entry of
// the directory outside the volume.
type safetyXEntry struct {
	mode     uint32 // type and permission bits
	uid, gid uint32
	size     int64
	sum      [sha256.Size]byte // of a regular file's content or a symlink's target
	xattrs   string            // "name=value" pairs, sorted
}

func (e safetyXEntry) String() string {
	return fmt.Sprintf("mode %#o owner %d:%d size %d sha256 %x xattrs {%s}", e.mode, e.uid, e.gid, e.size, e.sum[:6], e.xattrs)
}

// safetyXSnapshot returns every entry below dir (dir itself as "."), by
// path relative to dir.
func safetyXSnapshot(t *testing.T, dir string) map[string]safetyXEntry {
	t.Helper()
	tree := map[string]safetyXEntry{}
	err := filepath.WalkDir(dir, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := safetyXEntry{mode: st.Mode, uid: st.Uid, gid: st.Gid, size: st.Size}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256(b)
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256([]byte(target))
		}
		if e.xattrs, err = safetyXXattrs(p); err != nil {
			return err
		}
		tree[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot of %s: %v", dir, err)
	}
	return tree
}

// safetyXXattrs lists the extended attributes of p (not following a
// symlink) with their values.
func safetyXXattrs(p string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err == unix.ENOTSUP {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("llistxattr %s: %w", p, err)
	}
	var pairs []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return "", fmt.Errorf("lgetxattr %s %s: %w", p, name, err)
		}
		pairs = append(pairs, fmt.Sprintf("%s=%q", name, val[:m]))
	}
	slices.Sort(pairs)
	return strings.Join(pairs, " "), nil
}

// safetyXDiff describes how the tree after differs from the tree before,
// or returns "".
func safetyXDiff(after, before map[string]safetyXEntry) string {
	var d []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("%s removed (was %v)", p, b))
		case a != b:
			d = append(d, fmt.Sprintf("%s changed to %v (was %v)", p, a, b))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			d = append(d, fmt.Sprintf("%s created (%v)", p, a))
		}
	}
	slices.Sort(d)
	return strings.Join(d, "; ")
}

// safetyXOutside makes the directory outside the volume that the swapped
// symlink points to, with two files of root's, mode 0600, in it: victim
// and empty (of size 0).
func safetyXOutside(t *testing.T) string {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatalf("os.Mkdir(%q) = %v, want nil", outside, err)
	}
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte(safetyXVictim), 0o600); err != nil {
		t.Fatalf("os.WriteFile(%q) = %v, want nil", victim, err)
	}
	if err := os.Chmod(victim, 0o600); err != nil {
		t.Fatalf("os.Chmod(%q, 0600) = %v, want nil", victim, err)
	}
	empty := filepath.Join(outside, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatalf("os.WriteFile(%q) = %v, want nil", empty, err)
	}
	return outside
}

// safetyXMkdir makes the directory name in the mount, mode 0777.
func safetyXMkdir(t *testing.T, v *volume, name string) {
	t.Helper()
	if err := os.Mkdir(v.path(name), 0o777); err != nil {
		t.Fatalf("os.Mkdir(%q) = %v, want nil", v.path(name), err)
	}
	if err := os.Chmod(v.path(name), 0o777); err != nil {
		t.Fatalf("os.Chmod(%q, 0777) = %v, want nil", v.path(name), err)
	}
}

// TestBackingSymlinkSwap opens a directory of the mount, then replaces
// its backing directory with a symlink to a directory outside the volume
// and works through the open directory: every operation must fail, and
// nothing outside may change. The kernel keeps sending the requests with
// the node ID of the directory it has open, so a daemon that turns that
// node back into a path and follows symlinks in it acts outside.
func TestBackingSymlinkSwap(t *testing.T) {
	t.Run("root", func(t *testing.T) {
		v := newVolume(t)
		for _, op := range safetyXOps {
			t.Run(op.name, func(t *testing.T) {
				outside := safetyXOutside(t)
				safetyXMkdir(t, v, op.name)
				dfd, err := unix.Open(v.path(op.name), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatalf("unix.Open(%q, O_DIRECTORY) = %v, want nil", v.path(op.name), err)
				}
				defer unix.Close(dfd)
				before := safetyXSnapshot(t, outside)

				// Behind the mount's back (and within the 1 s the kernel
				// trusts its attributes of the directory).
				b := v.backing(op.name)
				if err := os.Rename(b, b+".real"); err != nil {
					t.Fatalf("os.Rename(%q, %q) = %v, want nil", b, b+".real", err)
				}
				if err := os.Symlink(outside, b); err != nil {
					t.Fatalf("os.Symlink(%q, %q) = %v, want nil", outside, b, err)
				}

				if err := op.do(dfd); err == nil {
					t.Errorf("%s = nil, want an error (the backing directory is now a symlink to %s)", op.call, outside)
				} else {
					t.Logf("%s = %v", op.call, err)
				}
				if d := safetyXDiff(safetyXSnapshot(t, outside), before); d != "" {
					t.Errorf("after %s: the directory outside the volume = %s, want it unchanged", op.call, d)
				}
			})
		}
	})

	t.Run("uid "+accessXUID, func(t *testing.T) {
		requireTool(t, "setpriv")
		v := newVolume(t, withMountArgs("--allow-other"))
		accessXTraversable(t, v.mnt)
		// The mount root is the backing directory: the second user may
		// write it.
		if err := os.Chmod(v.mnt, 0o777); err != nil {
			t.Fatalf("os.Chmod(%q, 0777) = %v, want nil", v.mnt, err)
		}
		// The second user does it all: enters the directory through the
		// mount, swaps its backing directory for a symlink, then works
		// in its working directory. Exit codes 90 and 91 say that a step
		// before the operation failed, 126 and 127 that its command could
		// not run.
		const script = `cd "$1" || exit 90
mv "$2" "$2.real" && ln -s "$3" "$2" || exit 91
`
		for _, op := range safetyXOps {
			if op.sh == "" {
				continue
			}
			t.Run(op.name, func(t *testing.T) {
				outside := safetyXOutside(t)
				safetyXMkdir(t, v, op.name)
				before := safetyXSnapshot(t, outside)

				r := accessXAs(t, "sh", "-c", script+op.sh, "sh", v.path(op.name), v.backing(op.name), outside)
				switch {
				case r.code == 90 || r.code == 91:
					t.Fatalf("uid %s: setting up %q: %v", accessXUID, op.sh, r)
				case r.code == 126 || r.code == 127:
					t.Fatalf("uid %s: %q could not run: %v", accessXUID, op.sh, r)
				case r.code == 0:
					t.Errorf("uid %s: %s = exit 0, want an error (the backing directory is now a symlink to %s)", accessXUID, op.sh, outside)
				default:
					t.Logf("uid %s: %s = exit %d: %s", accessXUID, op.sh, r.code, strings.TrimSpace(r.stderr))
				}
				if d := safetyXDiff(safetyXSnapshot(t, outside), before); d != "" {
					t.Errorf("uid %s: after %s: the directory outside the volume = %s, want it unchanged", accessXUID, op.sh, d)
				}
			})
		}
	})
}

// Depth and name length of TestDeepPaths: the path of the bottom
// directory (25 × 201 bytes) is longer than PATH_MAX (4096).
const (
	safetyXDepth   = 25
	safetyXNameLen = 200
)

// TestDeepPaths works in a directory deeper than PATH_MAX allows a path
// to name, reaching every level relative to the one above it.
func TestDeepPaths(t *testing.T) {
	v := newVolume(t)
	rootFd, err := unix.Open(v.mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("unix.Open(%q, O_DIRECTORY) = %v, want nil", v.mnt, err)
	}
	// fds[i] is the directory at depth i (fds[0] the root); every one is
	// closed before the volume is unmounted.
	fds := []int{rootFd}
	t.Cleanup(func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	})
	names := make([]string, safetyXDepth)
	for i := range names {
		names[i] = fmt.Sprintf("%02d-", i+1) + strings.Repeat(string(rune('a'+i%26)), safetyXNameLen-3)
	}
	bottom := func() int { return fds[len(fds)-1] }
	data := pattern("deep", 10<<10)

	if !t.Run("mkdir", func(t *testing.T) {
		for i, name := range names {
			if err := unix.Mkdirat(bottom(), name, 0o755); err != nil {
				t.Fatalf("unix.Mkdirat(<depth %d>, %.10q..., 0755) = %v, want nil (depth %d, path %d bytes)", i, name, err, i+1, (i+1)*(safetyXNameLen+1))
			}
			fd, err := unix.Openat(bottom(), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatalf("unix.Openat(<depth %d>, %.10q..., O_DIRECTORY) = %v, want nil (depth %d)", i, name, err, i+1)
			}
			fds = append(fds, fd)
		}
	}) {
		return
	}

	t.Run("create, write and read", func(t *testing.T) {
		fd, err := unix.Openat(bottom(), "file", unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatalf(`unix.Openat(<bottom>, "file", O_CREAT|O_EXCL|O_RDWR, 0644) = %v, want nil`, err)
		}
		if n, err := unix.Pwrite(fd, data, 0); n != len(data) || err != nil {
			t.Errorf("unix.Pwrite(file, %d bytes, 0) = %d, %v, want %d, nil", len(data), n, err, len(data))
		}
		if err := unix.Close(fd); err != nil {
			t.Errorf("unix.Close(file) = %v, want nil", err)
		}
		fd, err = unix.Openat(bottom(), "file", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf(`unix.Openat(<bottom>, "file", O_RDONLY) = %v, want nil`, err)
		}
		defer unix.Close(fd)
		got := make([]byte, len(data)+1)
		n, err := unix.Pread(fd, got, 0)
		if err != nil {
			t.Fatalf("unix.Pread(file, %d bytes, 0) = %d, %v, want %d, nil", len(got), n, err, len(data))
		}
		if d := diffBytes(got[:n], data, v.blockSize); d != "" {
			t.Errorf("unix.Pread(file) = %s", d)
		}
	})

	t.Run("stat", func(t *testing.T) {
		var st unix.Stat_t
		if err := unix.Fstatat(bottom(), "file", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf(`unix.Fstatat(<bottom>, "file") = %v, want nil`, err)
		}
		if got, want := st.Mode&unix.S_IFMT, uint32(unix.S_IFREG); got != want {
			t.Errorf(`unix.Fstatat(<bottom>, "file") type = %#o, want %#o`, got, want)
		}
		if got, want := st.Size, int64(len(data)); got != want {
			t.Errorf(`unix.Fstatat(<bottom>, "file") size = %d, want %d`, got, want)
		}
	})

	t.Run("rename", func(t *testing.T) {
		if err := unix.Renameat(bottom(), "file", bottom(), "renamed"); err != nil {
			t.Fatalf(`unix.Renameat(<bottom>, "file", <bottom>, "renamed") = %v, want nil`, err)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(bottom(), "file", &st, unix.AT_SYMLINK_NOFOLLOW); err != unix.ENOENT {
			t.Errorf(`unix.Fstatat(<bottom>, "file") after the rename = %v, want ENOENT`, err)
		}
		fd, err := unix.Openat(bottom(), "renamed", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf(`unix.Openat(<bottom>, "renamed", O_RDONLY) = %v, want nil`, err)
		}
		defer unix.Close(fd)
		got := make([]byte, len(data)+1)
		n, err := unix.Pread(fd, got, 0)
		if err != nil {
			t.Fatalf("unix.Pread(renamed, %d bytes, 0) = %d, %v, want %d, nil", len(got), n, err, len(data))
		}
		if d := diffBytes(got[:n], data, v.blockSize); d != "" {
			t.Errorf("unix.Pread(renamed) = %s", d)
		}
	})

	t.Run("list", func(t *testing.T) {
		// A descriptor opened now, so that the listing is not one made
		// before the file was there.
		fd, err := unix.Openat(fds[len(fds)-2], names[len(names)-1], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("unix.Openat(<depth %d>, %.10q..., O_DIRECTORY) = %v, want nil", len(names)-1, names[len(names)-1], err)
		}
		f := os.NewFile(uintptr(fd), "bottom")
		defer f.Close()
		got, err := f.Readdirnames(-1)
		if err != nil {
			t.Fatalf("Readdirnames(<bottom>) = %q, %v, want nil error", got, err)
		}
		if want := []string{"renamed"}; !slices.Equal(got, want) {
			t.Errorf("Readdirnames(<bottom>) = %q, want %q", got, want)
		}
	})

	t.Run("unlink", func(t *testing.T) {
		if err := unix.Unlinkat(bottom(), "renamed", 0); err != nil {
			t.Fatalf(`unix.Unlinkat(<bottom>, "renamed", 0) = %v, want nil`, err)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(bottom(), "renamed", &st, unix.AT_SYMLINK_NOFOLLOW); err != unix.ENOENT {
			t.Errorf(`unix.Fstatat(<bottom>, "renamed") after the unlink = %v, want ENOENT`, err)
		}
	})

	t.Run("rmdir", func(t *testing.T) {
		for i := len(names); i >= 1; i-- {
			unix.Close(fds[i])
			fds[i] = -1
			if err := unix.Unlinkat(fds[i-1], names[i-1], unix.AT_REMOVEDIR); err != nil {
				t.Fatalf("unix.Unlinkat(<depth %d>, %.10q..., AT_REMOVEDIR) = %v, want nil", i-1, names[i-1], err)
			}
		}
		fds = fds[:1]
		for _, dir := range []string{v.mnt, v.cipherDir} {
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatalf("os.ReadDir(%q) = %v, want nil", dir, err)
			}
			for _, e := range entries {
				if e.Name() == names[0] {
					t.Errorf("os.ReadDir(%q) lists %.10q... after the rmdir, want it gone", dir, e.Name())
				}
			}
		}
	})
}

// TestModeZero makes files and directories with no permission bits and
// checks that the mount shows them as such, and that the kernel then
// keeps the second user out of them.
func TestModeZero(t *testing.T) {
	v := newVolume(t, withMountArgs("--allow-other"))
	secret := []byte("root's file, mode 0000\n")
	cases := []struct {
		name string
		path string
		typ  uint32
		make func(p string) error
		call string
	}{
		{
			name: "chmod 000 file",
			path: v.path("z"),
			typ:  unix.S_IFREG,
			make: func(p string) error {
				if err := os.WriteFile(p, secret, 0o644); err != nil {
					return err
				}
				return os.Chmod(p, 0)
			},
			call: `write z, chmod(z, 0)`,
		},
		{
			name: "mkdir 000",
			path: v.path("dz"),
			typ:  unix.S_IFDIR,
			make: func(p string) error { return unix.Mkdir(p, 0) },
			call: `mkdir(dz, 0)`,
		},
		{
			name: "mknod fifo 000",
			path: v.path("fz"),
			typ:  unix.S_IFIFO,
			make: func(p string) error { return unix.Mknod(p, unix.S_IFIFO, 0) },
			call: `mknod(fz, S_IFIFO|0, 0)`,
		},
		{
			name: "create 000",
			path: v.path("cz"),
			typ:  unix.S_IFREG,
			make: func(p string) error {
				fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					return err
				}
				return unix.Close(fd)
			},
			call: `open(cz, O_CREAT|O_EXCL|O_WRONLY, 0)`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.make(c.path); err != nil {
				t.Fatalf("%s = %v, want nil", c.call, err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(c.path, &st); err != nil {
				t.Fatalf("unix.Lstat(%q) = %v, want nil", c.path, err)
			}
			if got, want := st.Mode, c.typ; got != want {
				t.Errorf("after %s: unix.Lstat(%q).Mode = %#o, want %#o", c.call, c.path, got, want)
			}
		})
	}

	t.Run("uid "+accessXUID, func(t *testing.T) {
		requireTool(t, "setpriv")
		accessXTraversable(t, v.mnt)
		if err := os.Chmod(v.mnt, 0o755); err != nil {
			t.Fatalf("os.Chmod(mount root, 0755) = %v, want nil", err)
		}
		t.Run("read chmod 000 file", func(t *testing.T) {
			accessXDenied(t, "cat a file of root's chmod 000", "Permission denied", "cat", v.path("z"))
		})
		t.Run("read created 000 file", func(t *testing.T) {
			accessXDenied(t, "cat a file of root's created with mode 0", "Permission denied", "cat", v.path("cz"))
		})
		t.Run("list mkdir 000 dir", func(t *testing.T) {
			accessXDenied(t, "ls a directory of root's made with mode 0", "Permission denied", "ls", v.path("dz"))
		})
		t.Run("enter mkdir 000 dir", func(t *testing.T) {
			accessXDenied(t, "stat a name in a directory of root's made with mode 0", "Permission denied", "stat", v.path("dz/x"))
		})
	})
}
