package backing

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// tree makes root/{a/b/f, link -> outside, a/dlink -> outside, flink -> a/b/f}
// and an outside directory with a victim file.
func tree(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(root, "a", "b"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(root, "a", "b", "f"), filepath.Join(outside, "victim")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		filepath.Join(root, "link"):       outside,
		filepath.Join(root, "a", "dlink"): outside,
		filepath.Join(root, "flink"):      "a/b/f",
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	return root, outside
}

// withOpenat2 runs f once with openat2 and once with the component walk.
func withOpenat2(t *testing.T, f func(t *testing.T)) {
	t.Run("openat2", f)
	t.Run("walk", func(t *testing.T) {
		noOpenat2.Store(true)
		defer noOpenat2.Store(false)
		f(t)
	})
}

func TestOpenRefusesSymlinks(t *testing.T) {
	withOpenat2(t, func(t *testing.T) {
		root, outside := tree(t)
		d, err := Open(root)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		tests := []struct {
			name  string
			rel   string
			flags int
			ok    bool
		}{
			{"plain file", "a/b/f", unix.O_RDONLY, true},
			{"directory", "a/b", unix.O_PATH | unix.O_DIRECTORY, true},
			{"root", "", unix.O_PATH | unix.O_DIRECTORY, true},
			{"dot dot", "a/../a/b/f", unix.O_RDONLY, false},
			{"escape", "../outside/victim", unix.O_RDONLY, false},
			{"through a directory symlink", "link/victim", unix.O_RDONLY, false},
			{"through a nested directory symlink", "a/dlink/victim", unix.O_RDWR, false},
			{"create through a symlink", "link/new", unix.O_RDWR | unix.O_CREAT, false},
			{"last component a symlink", "flink", unix.O_RDONLY, false},
			{"symlink as itself with O_PATH", "flink", unix.O_PATH, true},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				fd, err := d.Open(tc.rel, tc.flags, 0o644)
				if fd >= 0 {
					unix.Close(fd)
				}
				if (err == nil) != tc.ok {
					t.Fatalf("Open(%q) = %v, want ok=%v", tc.rel, err, tc.ok)
				}
			})
		}
		if _, err := os.Stat(filepath.Join(outside, "new")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Stat(outside/new) = %v, want it not created", err)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	root, _ := tree(t)
	d, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.Open("link/victim", unix.O_RDONLY, 0)
	if !errors.Is(err, ErrSymlink) {
		t.Errorf("Open(link/victim) = %v, want ErrSymlink", err)
	}
	if got := ErrnoOf(err); got != syscall.ELOOP && got != syscall.EXDEV {
		t.Errorf("ErrnoOf(%v) = %v, want ELOOP or EXDEV", err, got)
	}
	_, err = d.Open("a/missing", unix.O_RDONLY, 0)
	if got := ErrnoOf(err); got != syscall.ENOENT {
		t.Errorf("ErrnoOf(Open(a/missing)) = %v, want ENOENT", got)
	}
	if got := ErrnoOf(nil); got != 0 {
		t.Errorf("ErrnoOf(nil) = %v, want 0", got)
	}
	if got := ErrnoOf(errors.New("x")); got != syscall.EIO {
		t.Errorf("ErrnoOf(other) = %v, want EIO", got)
	}
	if _, err := Open(filepath.Join(root, "missing")); err == nil {
		t.Errorf("Open(missing root) = nil, want an error")
	}
	if dir, name := Split("a/b/c"); dir != "a/b" || name != "c" {
		t.Errorf("Split(a/b/c) = %q, %q; want a/b, c", dir, name)
	}
	if dir, name := Split("c"); dir != "" || name != "c" {
		t.Errorf("Split(c) = %q, %q; want \"\", c", dir, name)
	}
}

// TestLongPaths makes a tree deeper than PATH_MAX and opens its bottom
// through Open and OpenDir.
func TestLongPaths(t *testing.T) {
	withOpenat2(t, func(t *testing.T) {
		root := t.TempDir()
		d, err := Open(root)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		var parts []string
		cur, err := unix.Dup(d.Fd())
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 25; i++ {
			name := strings.Repeat(string(rune('a'+i)), 200)
			parts = append(parts, name)
			if err := unix.Mkdirat(cur, name, 0o755); err != nil {
				t.Fatal(err)
			}
			next, err := unix.Openat(cur, name, unix.O_PATH|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(cur)
			cur = next
		}
		unix.Close(cur)
		rel := strings.Join(parts, "/")
		if len(rel) <= unix.PathMax {
			t.Fatalf("path of %d bytes, want more than PATH_MAX", len(rel))
		}
		fd, err := d.Open(rel+"/f", unix.O_RDWR|unix.O_CREAT, 0o600)
		if err != nil {
			t.Fatalf("Open(<%d bytes>/f, O_CREAT) = %v, want nil", len(rel)+2, err)
		}
		unix.Close(fd)
		dfd, err := d.OpenDir(rel)
		if err != nil {
			t.Fatalf("OpenDir(<%d bytes>) = %v, want nil", len(rel), err)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, "f", &st, 0); err != nil {
			t.Errorf("Fstatat(bottom, f) = %v, want nil", err)
		}
		unix.Close(dfd)
		n := 0
		if err := d.Walk(func(rel string, dirfd int, name string, st *unix.Stat_t) error {
			n++
			return nil
		}); err != nil {
			t.Fatalf("Walk = %v", err)
		}
		if n != 26 {
			t.Errorf("Walk saw %d entries, want 26", n)
		}
	})
}

// TestWalkDoesNotFollow checks that Walk lists symlinks as symlinks and
// does not descend through them.
func TestWalkDoesNotFollow(t *testing.T) {
	root, _ := tree(t)
	d, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var got []string
	err = d.Walk(func(rel string, dirfd int, name string, st *unix.Stat_t) error {
		kind := "f"
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			kind = "d"
		case unix.S_IFLNK:
			kind = "l"
		}
		got = append(got, kind+":"+rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "d:a d:a/b f:a/b/f l:a/dlink l:flink l:link"
	if strings.Join(got, " ") != want {
		t.Errorf("Walk = %q, want %q", strings.Join(got, " "), want)
	}
	stop := errors.New("stop")
	if err := d.Walk(func(string, int, string, *unix.Stat_t) error { return stop }); err != stop {
		t.Errorf("Walk with a failing callback = %v, want its error", err)
	}
}
