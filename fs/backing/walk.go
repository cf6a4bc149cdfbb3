package backing

import (
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// WalkFunc is called by Walk for every entry: rel is its path below the
// root, dirfd a descriptor of its directory (valid during the call) and
// name its last component, st its lstat.
type WalkFunc func(rel string, dirfd int, name string, st *unix.Stat_t) error

// Walk calls fn for every entry below the root, in lexical order, depth
// first; directories are entered through descriptors (never through a
// symlink, whatever replaces them during the walk), so trees deeper
// than PATH_MAX are walked too.
func (d *Dir) Walk(fn WalkFunc) error {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", d.Path, err)
	}
	return walk(fd, "", fn)
}

// walk lists the directory fd (and closes it), then descends.
func walk(fd int, prefix string, fn WalkFunc) error {
	f := os.NewFile(uintptr(fd), prefix)
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return fmt.Errorf("listing %q: %w", prefix, err)
	}
	defer f.Close()
	sort.Strings(names)
	for _, name := range names {
		rel := name
		if prefix != "" {
			rel = prefix + "/" + name
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue // removed since the listing
			}
			return fmt.Errorf("%s: %w", rel, err)
		}
		if err := fn(rel, fd, name, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		sub, err := OpenAt(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if err := walk(sub, rel, fn); err != nil {
			return err
		}
	}
	return nil
}
