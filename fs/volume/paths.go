package volume

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/fs/names"
)

// This file holds what the tools that walk a backing directory (fsck,
// info, rewrap) need to tell kmsfs's own files from the volume's entries
// and to name an entry by its plaintext path in a volume with encrypted
// names (docs/FORMAT.md, "Names (version 2)").

// Errors of naming a backing entry in a volume with encrypted names.
var (
	// ErrNoDirID: the directory's kmsfs.dirid is missing, not a regular
	// file or not 16 bytes, so the names of its entries cannot be
	// decrypted. A missing one also matches syscall.ENOENT.
	ErrNoDirID = errors.New("directory ID (" + names.DirIDName + ") missing or damaged: the names in the directory cannot be decrypted")
	// ErrLongName: the file beside a long entry that holds its encoded
	// name (kmsfs.long.*.name) is missing or not a regular file. A
	// missing one also matches syscall.ENOENT. (One whose content does
	// not hash to the entry's name is names.ErrUndecryptable.)
	ErrLongName = errors.New("its long-name file (" + names.LongPrefix + "*" + names.LongSuffix + ") is missing or not a regular file")
)

// maxEncodedName bounds what is read from a long-name file: an encoded
// name is at most 22 + ⌈4·255/3⌉ = 362 characters.
const maxEncodedName = 4096

// Internal reports whether rel, a path relative to the backing directory,
// is one of kmsfs's own files rather than an entry of the volume: in the
// root, the configuration, its temporary copy, the write journal and the
// re-encryption copies (Internal); in a volume with encrypted names, also
// every kmsfs.dirid and long-name file (names.Internal). None of them is
// a kmsfs encrypted file but the configuration. In a volume whose names
// are in clear, a file named kmsfs.dirid below the root is the user's.
func (v *Volume) Internal(rel string) bool {
	dir, name := backing.Split(strings.Trim(rel, "/"))
	if dir == "" && Internal(name) {
		return true
	}
	return v.names != nil && names.Internal(name)
}

// PlainPath returns the plaintext path (as seen through a mount) of the
// backing path rel, relative to the backing directory; see Paths.Plain.
// It reads every directory ID on the way: a walk uses one Paths instead.
func (v *Volume) PlainPath(rel string) (string, error) {
	return v.NewPaths().Plain(rel)
}

// PathError is the error of naming a backing path: the name of the entry
// Backing (the path up to the component that failed) could not be
// decrypted. Err is ErrNoDirID (its directory's ID), ErrLongName,
// names.ErrUndecryptable (damaged, moved from another directory, or not
// written by kmsfs) or an I/O error.
type PathError struct {
	// Backing is the backing path of the entry that could not be named.
	Backing string
	// Plain is the plaintext path of its directory, if that could be
	// named ("" for the root).
	Plain string
	Err   error
}

func (e *PathError) Error() string {
	return fmt.Sprintf("%s: %v", e.Backing, e.Err)
}

func (e *PathError) Unwrap() error { return e.Err }

// Paths names the entries of a volume's backing directory by their
// plaintext paths, reading each directory's ID (and plaintext path) once:
// it is meant for one walk, and does not see a directory renamed or an
// ID rewritten after it read them. It is safe for concurrent use.
type Paths struct {
	v    *Volume
	mu   sync.Mutex
	dirs map[string]*pathDir // by backing path
}

// pathDir is what a Paths knows of one directory.
type pathDir struct {
	idDone    bool
	id        [names.IDSize]byte
	idErr     error
	plainDone bool
	plain     string
	plainErr  error
}

// NewPaths returns a Paths for a walk of the volume's backing directory.
func (v *Volume) NewPaths() *Paths {
	return &Paths{v: v, dirs: map[string]*pathDir{}}
}

// Plain returns the plaintext path of the backing path rel (relative to
// the backing directory). With names in clear it is rel. kmsfs's own
// files are named by their plaintext directory and their backing name
// (the root's as they are). An entry that cannot be named, or one inside
// a directory that cannot be, is a *PathError saying which component
// failed.
func (p *Paths) Plain(rel string) (string, error) {
	rel = strings.Trim(rel, "/")
	if p.v.names == nil || rel == "" {
		return rel, nil
	}
	dir, name := backing.Split(rel)
	if dir == "" && Internal(name) {
		return rel, nil
	}
	dp, err := p.dirPlain(dir)
	if err != nil {
		return "", err
	}
	n, err := p.Name(rel)
	if err != nil {
		return "", err
	}
	if dp == "" {
		return n, nil
	}
	return dp + "/" + n, nil
}

// Name returns the plaintext of the last component of the backing path
// rel, decrypted under its directory's ID (whether or not the
// directory's own name decrypts); a *PathError if it does not decrypt.
// kmsfs's own files are named by their backing name. With names in clear
// it is the backing name.
func (p *Paths) Name(rel string) (string, error) {
	rel = strings.Trim(rel, "/")
	dir, name := backing.Split(rel)
	if p.v.names == nil || p.v.Internal(rel) {
		return name, nil
	}
	pe := func(err error) error {
		dp, _ := p.dirPlain(dir)
		return &PathError{Backing: rel, Plain: dp, Err: err}
	}
	id, err := p.DirID(dir)
	if err != nil {
		return "", pe(err)
	}
	enc := name
	if names.IsLong(name) {
		raw, err := p.readSmall(rel+names.LongSuffix, maxEncodedName, ErrLongName)
		if err != nil {
			return "", pe(err)
		}
		enc = string(raw)
	}
	n, err := p.v.names.DecryptName(id, name, enc)
	if err != nil {
		return "", pe(err)
	}
	return n, nil
}

// DirID returns the ID of the backing directory rel ("" is the root,
// whose ID is the volume ID), reading its kmsfs.dirid once. A missing,
// non-regular or wrong-sized one is ErrNoDirID.
func (p *Paths) DirID(rel string) ([names.IDSize]byte, error) {
	rel = strings.Trim(rel, "/")
	d := p.dir(rel)
	p.mu.Lock()
	if d.idDone {
		id, err := d.id, d.idErr
		p.mu.Unlock()
		return id, err
	}
	p.mu.Unlock()
	var id [names.IDSize]byte
	var err error
	if rel == "" {
		id, err = p.v.RootDirID()
	} else {
		var b []byte
		b, err = p.readSmall(rel+"/"+names.DirIDName, names.IDSize+1, ErrNoDirID)
		switch {
		case err != nil:
		case len(b) != names.IDSize:
			err = fmt.Errorf("%w: it is %d bytes, want %d", ErrNoDirID, len(b), names.IDSize)
		default:
			copy(id[:], b)
		}
	}
	p.mu.Lock()
	d.id, d.idErr, d.idDone = id, err, true
	p.mu.Unlock()
	return id, err
}

// dir returns the cache entry of the directory rel.
func (p *Paths) dir(rel string) *pathDir {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.dirs[rel]
	if d == nil {
		d = &pathDir{}
		p.dirs[rel] = d
	}
	return d
}

// dirPlain returns the plaintext path of the backing directory rel,
// once.
func (p *Paths) dirPlain(rel string) (string, error) {
	if rel == "" {
		return "", nil
	}
	d := p.dir(rel)
	p.mu.Lock()
	if d.plainDone {
		s, err := d.plain, d.plainErr
		p.mu.Unlock()
		return s, err
	}
	p.mu.Unlock()
	s, err := p.Plain(rel)
	p.mu.Lock()
	d.plain, d.plainErr, d.plainDone = s, err, true
	p.mu.Unlock()
	return s, err
}

// readSmall reads at most max bytes of the regular file rel, without
// following a symlink anywhere on the way and without opening anything
// but a regular file (backing.ReadSmall). A missing file, or one that is
// not a regular file, is an error wrapping what (and ENOENT for a missing
// one).
func (p *Paths) readSmall(rel string, max int, what error) ([]byte, error) {
	dir, name := backing.Split(rel)
	dirfd, err := p.v.dir.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dirfd)
	b, err := backing.ReadSmall(dirfd, name, max)
	switch {
	case errors.Is(err, syscall.ENOENT):
		return nil, fmt.Errorf("%w: %w", what, err)
	case errors.Is(err, backing.ErrNotRegular):
		return nil, fmt.Errorf("%w: it is not a regular file", what)
	}
	return b, err
}
