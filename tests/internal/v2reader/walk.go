package v2reader

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is one file, directory or symlink of a volume, as seen through a
// mount, with where it lives in the backing directory.
type Entry struct {
	// Path is the plaintext path, relative to the root, "/"-separated.
	Path string
	// Backing is the backing path, relative to the backing directory.
	Backing string
	// Type is the entry's type bits (fs.ModeDir, fs.ModeSymlink, 0 for
	// a regular file, ...).
	Type fs.FileMode
	// Target is a symlink's plaintext target.
	Target string
	// Xattrs are the extended attributes: those of user. and trusted.
	// decrypted, the others as they are.
	Xattrs map[string][]byte
}

// Tree is the plaintext tree of a volume.
type Tree struct {
	// Entries, sorted by Path; the root is not one of them.
	Entries []Entry
	// RootXattrs are the root directory's extended attributes.
	RootXattrs map[string][]byte
	// Problems lists what a reader must report and not show: entries
	// that do not decrypt, directories without a valid ID, ...
	Problems []string
}

// rootInternal reports whether a backing name in the root is one of the
// files of "The backing directory" rather than an entry.
func rootInternal(b string) bool {
	return b == "kmsfs.conf" || b == "kmsfs.conf.tmp" || b == "kmsfs.journal" || strings.HasPrefix(b, "kmsfs.reencrypt.")
}

// Walk lists the volume whose backing directory is dir and whose names
// are encrypted under the names key nk, the root's directory ID being
// rootID (the volume ID).
func Walk(dir string, nk, rootID []byte) (*Tree, error) {
	n, err := NewNames(nk)
	if err != nil {
		return nil, err
	}
	if len(rootID) != DirIDSize {
		return nil, fmt.Errorf("v2reader: root directory ID of %d bytes", len(rootID))
	}
	t := &Tree{}
	w := walker{n: n, base: dir, t: t}
	if t.RootXattrs, err = w.xattrs(""); err != nil {
		return nil, err
	}
	if err := w.dir("", "", rootID); err != nil {
		return nil, err
	}
	sort.Slice(t.Entries, func(i, j int) bool { return t.Entries[i].Path < t.Entries[j].Path })
	return t, nil
}

type walker struct {
	n    *Names
	base string
	t    *Tree
}

func (w *walker) problem(format string, args ...any) {
	w.t.Problems = append(w.t.Problems, fmt.Sprintf(format, args...))
}

// readDirID reads the ID of the backing directory rel: kmsfs.dirid, a
// regular file of exactly 16 bytes.
func (w *walker) readDirID(rel string) ([]byte, error) {
	p := filepath.Join(w.base, rel, DirIDFile)
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != DirIDSize {
		return nil, fmt.Errorf("%s is not a regular file of %d bytes", DirIDFile, DirIDSize)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if len(b) != DirIDSize {
		return nil, fmt.Errorf("%s is %d bytes", DirIDFile, len(b))
	}
	return b, nil
}

// dir lists the backing directory rel (plaintext path plain), whose ID
// is id, and the directories below it.
func (w *walker) dir(rel, plain string, id []byte) error {
	ents, err := os.ReadDir(filepath.Join(w.base, rel))
	if err != nil {
		return err
	}
	for _, de := range ents {
		b := de.Name()
		switch {
		case b == DirIDFile, strings.HasPrefix(b, LongPrefix) && strings.HasSuffix(b, LongSuffix):
			continue // kmsfs's own
		case rel == "" && rootInternal(b):
			continue
		case strings.Contains(b, ".") && !IsLongBacking(b):
			w.problem("%s: not written by kmsfs (a name with a dot)", path.Join(rel, b))
			continue
		}
		brel := path.Join(rel, b)
		var long []byte
		if IsLongBacking(b) {
			lp := filepath.Join(w.base, brel+LongSuffix)
			fi, err := os.Lstat(lp)
			if err == nil && !fi.Mode().IsRegular() {
				err = fmt.Errorf("not a regular file")
			}
			if err == nil {
				long, err = os.ReadFile(lp)
			}
			if err != nil {
				w.problem("%s: its %s file: %v", brel, LongSuffix, err)
				continue
			}
		}
		name, err := w.n.DecryptName(id, b, long)
		if err != nil {
			w.problem("%s: %v", brel, err)
			continue
		}
		e := Entry{Path: path.Join(plain, string(name)), Backing: brel, Type: de.Type()}
		switch {
		case de.Type()&fs.ModeSymlink != 0:
			stored, err := os.Readlink(filepath.Join(w.base, brel))
			if err != nil {
				return err
			}
			t, err := w.n.DecryptTarget(stored)
			if err != nil {
				w.problem("%s (%s): %v", brel, e.Path, err)
				continue
			}
			e.Target = string(t)
		default:
			if e.Xattrs, err = w.xattrs(brel); err != nil {
				return err
			}
		}
		w.t.Entries = append(w.t.Entries, e)
		if de.IsDir() {
			cid, err := w.readDirID(brel)
			if err != nil {
				w.problem("%s (%s): directory ID: %v; its entries cannot be named", brel, e.Path, err)
				continue
			}
			if err := w.dir(brel, e.Path, cid); err != nil {
				return err
			}
		}
	}
	return nil
}

// xattrs returns the extended attributes of the backing entry rel (not
// following a symlink).
func (w *walker) xattrs(rel string) (map[string][]byte, error) {
	p := filepath.Join(w.base, rel)
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	out := map[string][]byte{}
	for _, b := range strings.Split(string(buf[:sz]), "\x00") {
		if b == "" {
			continue
		}
		vsz, err := unix.Lgetxattr(p, b, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, b, err)
		}
		v := make([]byte, vsz)
		vsz, err = unix.Lgetxattr(p, b, v)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, b, err)
		}
		v = v[:vsz]
		if XattrNamespace(b) == "" {
			out[b] = v
			continue
		}
		a, err := w.n.DecryptXattrName(b)
		if err != nil {
			w.problem("%s: attribute %q: %v", rel, b, err)
			continue
		}
		pv, err := w.n.DecryptXattrValue(a, v)
		if err != nil {
			w.problem("%s: attribute %q (%s): %v", rel, b, a, err)
			continue
		}
		out[a] = pv
	}
	return out, nil
}
