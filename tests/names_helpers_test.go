package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Helpers of names_test.go: the tests of encrypted names (docs/FORMAT.md,
// "Names (version 2)"). They compute what the format says from the text of
// docs/FORMAT.md, not from the implementation.

const (
	// namesXDirID is the file holding a directory's ID.
	namesXDirID = "kmsfs.dirid"
	// namesXLongPrefix starts the backing name of a long entry.
	namesXLongPrefix = "kmsfs.long."
	// namesXLongSuffix ends the file holding a long entry's encoded name.
	namesXLongSuffix = ".name"
	// namesXTimeout bounds an operation that must not hang the mount.
	namesXTimeout = 20 * time.Second
)

// namesXName returns a name of exactly n bytes: tag, then ASCII letters.
func namesXName(tag string, n int) string {
	b := []byte(tag)
	for i := 0; len(b) < n; i++ {
		b = append(b, byte('a'+i%26))
	}
	return string(b[:n])
}

// namesXRunes returns a name of exactly n bytes: tag, as many r as fit,
// then ASCII padding.
func namesXRunes(tag string, r rune, n int) string {
	var b strings.Builder
	b.WriteString(tag)
	for b.Len()+utf8.RuneLen(r) <= n {
		b.WriteRune(r)
	}
	for b.Len() < n {
		b.WriteByte('z')
	}
	return b.String()
}

// namesXIsLong reports whether a backing name is that of a long entry
// (not its .name file).
func namesXIsLong(b string) bool {
	return strings.HasPrefix(b, namesXLongPrefix) && !strings.HasSuffix(b, namesXLongSuffix)
}

// namesXOwn reports whether a backing name in a directory is one of
// kmsfs's own files beside the entries.
func namesXOwn(b string) bool {
	return b == namesXDirID || (strings.HasPrefix(b, namesXLongPrefix) && strings.HasSuffix(b, namesXLongSuffix))
}

// namesXLongName is the backing name of a long entry whose encoded name is
// e (docs/FORMAT.md: kmsfs.long. || b64(SHA-256(E))).
func namesXLongName(e []byte) string {
	h := sha256.Sum256(e)
	return namesXLongPrefix + base64.RawURLEncoding.EncodeToString(h[:])
}

// namesXList lists a directory through the mount, sorted; a failure is
// returned.
func namesXList(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out, err
}

// namesXExpectList checks that dir lists exactly want (in any order).
func namesXExpectList(t *testing.T, dir string, want ...string) {
	t.Helper()
	got, err := namesXList(dir)
	want = slices.Clone(want)
	sort.Strings(want)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("os.ReadDir(%s) = %q, %v; want %q, nil", namesXShort(dir), got, err, want)
	}
}

// namesXShort shortens a long path for messages.
func namesXShort(p string) string {
	if len(p) <= 120 {
		return p
	}
	return fmt.Sprintf("%s...(%d bytes)...%s", p[:50], len(p), p[len(p)-50:])
}

// namesXBackingList lists a backing directory, sorted.
func namesXBackingList(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("os.ReadDir(backing %s) = %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// namesXBacking returns the backing path of rel (a path inside the mount)
// by matching inode numbers component by component: kmsfs reports the
// backing inode number of an entry when the backing directory is on one
// file system.
func namesXBacking(t *testing.T, v *volume, rel string) string {
	t.Helper()
	cur, mp := v.cipherDir, v.mnt
	for _, c := range strings.Split(rel, "/") {
		mp = filepath.Join(mp, c)
		var st unix.Stat_t
		if err := unix.Lstat(mp, &st); err != nil {
			t.Fatalf("unix.Lstat(%s) = %v, want nil", namesXShort(mp), err)
		}
		var found []string
		for _, b := range namesXBackingList(t, cur) {
			var bst unix.Stat_t
			if namesXOwn(b) || unix.Lstat(filepath.Join(cur, b), &bst) != nil {
				continue
			}
			if bst.Ino == st.Ino {
				found = append(found, b)
			}
		}
		if len(found) != 1 {
			t.Fatalf("backing entries of %q (inode %d) in %s: %q, want exactly one", rel, st.Ino, cur, found)
		}
		cur = filepath.Join(cur, found[0])
	}
	return cur
}

// namesXLogMark is a position in a volume's daemon log: what the daemon
// logs after it (the log is written as each line is logged).
type namesXLogMark struct {
	v   *volume
	off int64
}

func namesXMark(v *volume) namesXLogMark {
	fi, err := os.Stat(v.logFile)
	if err != nil {
		return namesXLogMark{v: v}
	}
	return namesXLogMark{v: v, off: fi.Size()}
}

// text is what was logged since the mark.
func (m namesXLogMark) text() string {
	b, err := os.ReadFile(m.v.logFile)
	if err != nil || int64(len(b)) < m.off {
		return ""
	}
	return string(b[m.off:])
}

// expect checks that one line logged since the mark contains every one of
// subs; what says what the line should report.
func (m namesXLogMark) expect(t *testing.T, what string, subs ...string) {
	t.Helper()
	for _, l := range strings.Split(m.text(), "\n") {
		ok := l != ""
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			return
		}
	}
	t.Errorf("daemon log has no line containing all of %q (%s); logged since the operation:\n%s", subs, what, m.text())
}

// namesXWithin runs f, an operation on the mount, and turns a hang into
// an error (the goroutine is left blocked; the test fails, and its
// cleanup unmounts lazily).
func namesXWithin(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(namesXTimeout):
		t.Errorf("%s hung for %v: a backing entry must not hang the mount", what, namesXTimeout)
		return fmt.Errorf("hung for %v", namesXTimeout)
	}
}

// namesXWalk calls fn for every entry under the directory root (not root
// itself), parents before children, with a descriptor of its directory,
// so that paths of any length work. dir is the entry's directory relative
// to root ("" for root).
func namesXWalk(t *testing.T, root string, fn func(dirfd int, dir, name string, st *unix.Stat_t)) {
	t.Helper()
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("unix.Open(%s) = %v", root, err)
	}
	namesXWalkFd(t, fd, "", fn)
}

func namesXWalkFd(t *testing.T, fd int, dir string, fn func(dirfd int, dir, name string, st *unix.Stat_t)) {
	t.Helper()
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		t.Errorf("listing %s: %v", namesXShort(dir), err)
	}
	sort.Strings(names)
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Errorf("stat %s: %v", namesXShort(path.Join(dir, name)), err)
			continue
		}
		fn(fd, dir, name, &st)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Errorf("opening %s: %v", namesXShort(path.Join(dir, name)), err)
				continue
			}
			namesXWalkFd(t, sub, path.Join(dir, name), fn)
		}
	}
}

// namesXReadAt reads a small regular file name in dirfd (O_NONBLOCK, in
// case it is not a regular file after all).
func namesXReadAt(dirfd int, name string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}

// namesXCheckBacking checks the backing directory of an encrypted-names
// volume against docs/FORMAT.md: every directory but the root holds a
// regular kmsfs.dirid of 16 bytes; every long entry has its .name file,
// whose content hashes to the entry's name; and no .name file is left
// without its entry. It returns the number of long entries.
func namesXCheckBacking(t *testing.T, v *volume) int {
	t.Helper()
	type dirInfo struct{ names []string }
	dirs := map[string]*dirInfo{"": {}}
	long := 0
	namesXWalk(t, v.cipherDir, func(dirfd int, dir, name string, st *unix.Stat_t) {
		rel := path.Join(dir, name)
		dirs[dir].names = append(dirs[dir].names, name)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			dirs[rel] = &dirInfo{}
		}
		switch {
		case name == namesXDirID:
			b, err := namesXReadAt(dirfd, name)
			if st.Mode&unix.S_IFMT != unix.S_IFREG || err != nil || len(b) != 16 {
				t.Errorf("backing %s: mode %o, %d bytes, %v; want a regular file of 16 bytes", namesXShort(rel), st.Mode, len(b), err)
			}
		case strings.HasPrefix(name, namesXLongPrefix) && strings.HasSuffix(name, namesXLongSuffix):
			b, err := namesXReadAt(dirfd, name)
			if st.Mode&unix.S_IFMT != unix.S_IFREG || err != nil {
				t.Errorf("backing %s: mode %o, %v; want a regular file", namesXShort(rel), st.Mode, err)
			} else if got, want := namesXLongName(b), strings.TrimSuffix(name, namesXLongSuffix); got != want {
				t.Errorf("backing %s holds %q, whose hash names %s", namesXShort(rel), b, got)
			}
		case namesXIsLong(name):
			long++
		}
	})
	for d, info := range dirs {
		if d != "" && !slices.Contains(info.names, namesXDirID) {
			t.Errorf("backing directory %s has no %s", namesXShort(d), namesXDirID)
		}
		for _, n := range info.names {
			if namesXIsLong(n) && !slices.Contains(info.names, n+namesXLongSuffix) {
				t.Errorf("backing long entry %s has no %s file beside it", namesXShort(path.Join(d, n)), namesXLongSuffix)
			}
			if base, ok := strings.CutSuffix(n, namesXLongSuffix); ok && strings.HasPrefix(n, namesXLongPrefix) && !slices.Contains(info.names, base) {
				t.Errorf("backing %s is left without its entry %s", namesXShort(path.Join(d, n)), base)
			}
		}
	}
	return long
}

// namesXSnapshot describes every entry under root, seen through the mount:
// its type, permissions, content (files), target (symlinks) and extended
// attributes in user. (files and directories).
func namesXSnapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	namesXWalk(t, root, func(dirfd int, dir, name string, st *unix.Stat_t) {
		rel := path.Join(dir, name)
		var d string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			d = fmt.Sprintf("dir %o", st.Mode&0o7777)
		case unix.S_IFREG:
			b, err := namesXReadAt(dirfd, name)
			if err != nil {
				t.Errorf("reading %s: %v", namesXShort(rel), err)
			}
			h := sha256.Sum256(b)
			d = fmt.Sprintf("file %o size %d sha256 %x nlink %d", st.Mode&0o7777, st.Size, h[:8], st.Nlink)
			if int64(len(b)) != st.Size {
				t.Errorf("%s: stat size %d, read %d bytes", namesXShort(rel), st.Size, len(b))
			}
		case unix.S_IFLNK:
			buf := make([]byte, 8192)
			n, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				t.Errorf("readlink %s: %v", namesXShort(rel), err)
				n = 0
			}
			d = fmt.Sprintf("symlink size %d -> %q", st.Size, buf[:n])
		default:
			d = fmt.Sprintf("mode %o", st.Mode)
		}
		if t := st.Mode & unix.S_IFMT; t == unix.S_IFDIR || t == unix.S_IFREG {
			d += " xattrs " + namesXFdXattrs(dirfd, name)
		}
		out[rel] = d
	})
	return out
}

// namesXFdXattrs describes the user. attributes of name in dirfd.
func namesXFdXattrs(dirfd int, name string) string {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "open: " + err.Error()
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	n, err := unix.Flistxattr(fd, buf)
	if err != nil {
		return "list: " + err.Error()
	}
	var parts []string
	for _, a := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(a, "user.") {
			continue
		}
		vb := make([]byte, 64<<10)
		k, err := unix.Fgetxattr(fd, a, vb)
		if err != nil {
			parts = append(parts, a+": "+err.Error())
			continue
		}
		h := sha256.Sum256(vb[:k])
		parts = append(parts, fmt.Sprintf("%s=%x", a, h[:6]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// namesXCompare reports every difference between two snapshots.
func namesXCompare(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	bad := 0
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range want {
			if !yield(p) {
				return
			}
		}
	}) {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: %s missing (want %s)", what, namesXShort(p), want[p])
			bad++
		} else if g != want[p] {
			t.Errorf("%s: %s = %s, want %s", what, namesXShort(p), g, want[p])
			bad++
		}
		if bad > 20 {
			t.Fatalf("%s: too many differences", what)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %s = %s", what, namesXShort(p), got[p])
		}
	}
}

// namesXBackingXattrs returns the extended attributes of a backing entry.
func namesXBackingXattrs(t *testing.T, p string) map[string][]byte {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("unix.Llistxattr(%s) = %v", p, err)
	}
	out := map[string][]byte{}
	for _, a := range strings.Split(string(buf[:n]), "\x00") {
		if a == "" {
			continue
		}
		vb := make([]byte, 64<<10)
		k, err := unix.Lgetxattr(p, a, vb)
		if err != nil {
			t.Fatalf("unix.Lgetxattr(%s, %q) = %v", p, a, err)
		}
		out[a] = vb[:k]
	}
	return out
}
