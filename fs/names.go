package fs

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/fs/names"
)

// errNoDirID reports a directory of an encrypted-names volume whose
// kmsfs.dirid is missing or damaged: its entries cannot be named.
var errNoDirID = errors.New("directory ID (kmsfs.dirid) missing or damaged: its entries cannot be decrypted")

// nameState is what a node of an encrypted-names volume caches: its
// directory ID (directories), and its backing name under its last known
// parent and name.
type nameState struct {
	mu      sync.Mutex
	id      [names.IDSize]byte
	idOK    bool
	parent  *gofs.Inode
	name    string
	backing string
}

// plainName is the backing form of a name in a volume whose names are in
// clear.
func plainName(name string) names.Entry { return names.Entry{Backing: name, Encoded: name} }

// rel is the node's backing path relative to the backing directory (""
// for the root). With encrypted names every component is the encrypted
// name under its parent's directory ID. A node no longer in the tree
// (unlinked) has none: ENOENT.
func (n *Node) rel() (string, error) {
	if n.t.names == nil {
		return n.Path(n.Root()), nil
	}
	var parts []string
	cur, root := n.EmbeddedInode(), n.Root()
	for cur != root {
		name, p := cur.Parent()
		if p == nil {
			return "", syscall.ENOENT
		}
		cn, ok1 := cur.Operations().(*Node)
		pn, ok2 := p.Operations().(*Node)
		if !ok1 || !ok2 {
			return "", syscall.EIO
		}
		b, err := cn.backingName(pn, p, name)
		if err != nil {
			return "", err
		}
		parts = append(parts, b)
		cur = p
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/"), nil
}

// backingName returns the node's backing name as the child name of the
// directory node pn (whose Inode is p), cached.
func (n *Node) backingName(pn *Node, p *gofs.Inode, name string) (string, error) {
	n.ns.mu.Lock()
	if n.ns.parent == p && n.ns.name == name && n.ns.backing != "" {
		b := n.ns.backing
		n.ns.mu.Unlock()
		return b, nil
	}
	n.ns.mu.Unlock()
	id, err := pn.dirIDLoaded()
	if err != nil {
		return "", err
	}
	e, err := n.t.names.EncryptName(id, name)
	if err != nil {
		return "", err
	}
	n.ns.mu.Lock()
	n.ns.parent, n.ns.name, n.ns.backing = p, name, e.Backing
	n.ns.mu.Unlock()
	return e.Backing, nil
}

// dirIDLoaded returns the directory ID of this directory node, reading it
// if it is not cached yet.
func (n *Node) dirIDLoaded() ([names.IDSize]byte, error) {
	if id, ok := n.cachedDirID(); ok {
		return id, nil
	}
	var id [names.IDSize]byte
	err := n.inDir(func(dirfd int) error {
		var err error
		id, err = n.dirID(dirfd)
		return err
	})
	return id, err
}

func (n *Node) cachedDirID() ([names.IDSize]byte, bool) {
	if n.isRoot() {
		return n.t.rootID, true
	}
	n.ns.mu.Lock()
	defer n.ns.mu.Unlock()
	return n.ns.id, n.ns.idOK
}

func (n *Node) setDirID(id [names.IDSize]byte) {
	n.ns.mu.Lock()
	n.ns.id, n.ns.idOK = id, true
	n.ns.mu.Unlock()
}

// dirID returns the directory ID of this directory node, whose descriptor
// is dirfd. A directory without one gets one if it is empty (a mkdir
// interrupted before the ID was written); otherwise its entries cannot be
// named and the error says so.
func (n *Node) dirID(dirfd int) ([names.IDSize]byte, error) {
	if id, ok := n.cachedDirID(); ok {
		return id, nil
	}
	id, err := readDirID(dirfd)
	if errors.Is(err, syscall.ENOENT) {
		var empty bool
		if empty, err = emptyDir(dirfd); err == nil {
			if !empty {
				err = errNoDirID
			} else {
				id, err = writeDirID(dirfd)
			}
		}
	}
	if err != nil {
		return id, fmt.Errorf("%s: %w", n.name(), err)
	}
	n.setDirID(id)
	return id, nil
}

// readDirID reads kmsfs.dirid in dirfd. A missing one is ENOENT; one
// that is not a 16-byte regular file is errNoDirID.
func readDirID(dirfd int) ([names.IDSize]byte, error) {
	var id [names.IDSize]byte
	b, err := backing.ReadSmall(dirfd, names.DirIDName, names.IDSize+1)
	if errors.Is(err, syscall.ENOENT) {
		return id, err
	}
	if err != nil {
		return id, fmt.Errorf("%w: %v", errNoDirID, err)
	}
	if len(b) != names.IDSize {
		return id, fmt.Errorf("%w: it is %d bytes", errNoDirID, len(b))
	}
	copy(id[:], b)
	return id, nil
}

// writeDirID gives the directory dirfd a new random ID, synced with the
// directory before it is used.
func writeDirID(dirfd int) ([names.IDSize]byte, error) {
	var id [names.IDSize]byte
	if _, err := rand.Read(id[:]); err != nil {
		return id, err
	}
	if err := writeSmall(dirfd, names.DirIDName, id[:]); err != nil {
		return id, fmt.Errorf("writing %s: %w", names.DirIDName, err)
	}
	return id, nil
}

// writeSmall creates name in dirfd with data (0400: kmsfs never rewrites
// it), synced: it must be durable before any entry that needs it. The
// directory is not synced as well: on ext4, XFS and btrfs the fsync of a
// new file also makes its directory entry durable, and a directory sync
// per mkdir cost a tree copy a second (measured on Go's source tree,
// 1,324 directories). An existing file of that name with the same
// content is kept; another content is an error (EEXIST).
func writeSmall(dirfd int, name string, data []byte) error {
	fd, err := backing.OpenAt(dirfd, name, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o400)
	if errors.Is(err, syscall.EEXIST) {
		if got, rerr := backing.ReadSmall(dirfd, name, len(data)+1); rerr == nil && bytes.Equal(got, data) {
			return nil
		}
		return err
	}
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(dirfd, name, 0)
		return err
	}
	return nil
}

// emptyDir reports whether the directory dirfd has no entries but kmsfs's
// own (kmsfs.dirid and long-name files).
func emptyDir(dirfd int) (bool, error) {
	ents, err := backing.List(dirfd, ".")
	return err == nil && names.OnlyInternal(ents), err
}

// entry returns the backing form of name in this directory (dirfd).
func (n *Node) entry(dirfd int, name string) (names.Entry, error) {
	if n.t.names == nil {
		return plainName(name), nil
	}
	id, err := n.dirID(dirfd)
	if err != nil {
		return names.Entry{}, err
	}
	return n.t.names.EncryptName(id, name)
}

// ensureLong writes the file that holds a long entry's encoded name, so
// that it exists before the entry does. The returned undo removes it
// again if this call made it (for when the entry is not created after
// all).
func ensureLong(dirfd int, e names.Entry) (undo func(), err error) {
	undo = func() {}
	if !e.Long() {
		return undo, nil
	}
	name := e.Backing + names.LongSuffix
	var st unix.Stat_t
	existed := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	if err := writeSmall(dirfd, name, []byte(e.Encoded)); err != nil {
		return undo, fmt.Errorf("writing the long name file: %w", err)
	}
	if !existed {
		undo = func() { unix.Unlinkat(dirfd, name, 0) }
	}
	return undo, nil
}

// removeLong removes a long entry's name file once the entry is gone.
func removeLong(dirfd int, e names.Entry) {
	if e.Long() {
		unix.Unlinkat(dirfd, e.Backing+names.LongSuffix, 0)
	}
}

// decryptEntry returns the plaintext name of the backing entry b in the
// directory dirfd with ID id; skip is true for kmsfs's own files.
func (t *tree) decryptEntry(dirfd int, id [names.IDSize]byte, b string) (name string, skip bool, err error) {
	if names.Internal(b) {
		return "", true, nil
	}
	enc := b
	if names.IsLong(b) {
		raw, err := backing.ReadSmall(dirfd, b+names.LongSuffix, 4096)
		if err != nil {
			return "", false, fmt.Errorf("reading its long name file: %w", err)
		}
		enc = string(raw)
	}
	name, err = t.names.DecryptName(id, b, enc)
	return name, false, err
}

// linkSize is the size a symlink reports: the length of its plaintext
// target, computed from the stored one's.
func linkSize(stored uint64) uint64 {
	raw := stored * 3 / 4
	if raw < names.Overhead {
		return 0
	}
	return raw - names.Overhead
}

// rmdirAt removes the empty directory name (backing) in dirfd: kmsfs's
// own files in it go first. A directory with entries is ENOTEMPTY.
func rmdirAt(dirfd int, name string) error {
	if err := clearOwn(dirfd, name); err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// clearOwn removes kmsfs's own files (directory ID, long-name files) from
// the directory name in dirfd if it has no other entry, so that it can be
// removed or renamed over; otherwise it is ENOTEMPTY. A directory left
// without its ID (the removal then failed) is empty, and gets a new ID
// when next used.
func clearOwn(dirfd int, name string) error {
	fd, err := backing.OpenAt(dirfd, name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	ents, err := backing.List(fd, ".")
	if err != nil {
		return err
	}
	if !names.OnlyInternal(ents) {
		return syscall.ENOTEMPTY
	}
	for _, e := range ents {
		if err := unix.Unlinkat(fd, e, 0); err != nil && err != syscall.ENOENT {
			return err
		}
	}
	return nil
}
