package fs

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/volume"
)

// maxWrite is the largest FUSE write request (the kernel's limit here).
const maxWrite = cryptfile.MaxRequest

// MountOptions are the user's choices for one mount.
type MountOptions struct {
	// ReadOnly mounts read-only.
	ReadOnly bool
	// AllowOther lets other users use the mount; the kernel then enforces
	// Unix permissions (default_permissions).
	AllowOther bool
	// Debug logs every FUSE request (never contents).
	Debug bool
	// NoExec forbids executing programs from the mount (mount -o noexec).
	NoExec bool
}

// Mount serves v at mountpoint and returns once the mount is ready. The
// caller unmounts with server.Unmount and waits with server.Wait.
func Mount(v *volume.Volume, mountpoint string, o MountOptions) (*Server, error) {
	// Replays writes a crash interrupted, before anything is read.
	maxData := cryptfile.JournalDataSize(v.Layout)
	j, err := cryptfile.OpenJournal(context.Background(), v.Backing(), maxData, v.JournalKeys(), !o.ReadOnly, v.Log)
	if err != nil {
		if !o.ReadOnly {
			return nil, fmt.Errorf("mount: %w", err)
		}
		v.Log.Printf("kmsfs: read-only mount without the write journal: %v", err)
	}
	if o.ReadOnly && j != nil {
		// Replayed; a read-only mount writes nothing, and must not keep a
		// read-write mount from starting.
		j.Close()
		j = nil
	}
	if o.ReadOnly {
		if pending, _ := cryptfile.PendingReencrypt(v.Backing()); pending {
			v.Log.Printf("kmsfs: a re-encryption was interrupted by a crash: a file may read as damaged until a read-write mount finishes it")
		}
	} else if err := cryptfile.ReplayReencrypt(v.Backing(), v.Log); err != nil {
		j.Close()
		return nil, fmt.Errorf("mount: %w", err)
	}
	root, err := NewRoot(v, &cryptfile.Config{Layout: v.Layout, Keys: v, Journal: j, V3: v.Layout3})
	if err != nil {
		j.Close()
		return nil, fmt.Errorf("mount: %w", err)
	}
	// The kernel has already applied the caller's umask to create modes;
	// the daemon must not apply its own a second time.
	syscall.Umask(0)
	opts := KernelOptions(v.Dir, "kmsfs")
	opts.MountOptions.AllowOther = o.AllowOther
	opts.MountOptions.Debug = o.Debug
	if o.Debug {
		// go-fuse's request log quotes the first bytes of data: keep the
		// names, drop the contents.
		opts.MountOptions.Logger = log.New(redactor{v.Log.Writer()}, "", log.LstdFlags)
	}
	if o.ReadOnly {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "ro")
	}
	if o.NoExec {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "noexec")
	}
	srv, err := gofs.Mount(mountpoint, root, opts)
	if err != nil {
		j.Close()
		if _, serr := os.Stat("/dev/fuse"); serr != nil {
			return nil, fmt.Errorf("mount %s: /dev/fuse: %w", mountpoint, serr)
		}
		return nil, fmt.Errorf("mount %s: %w (is /dev/fuse the FUSE device and the fuse module loaded?)", mountpoint, err)
	}
	if os.Geteuid() != 0 {
		// Only root may write /sys; users get the kernel's default.
	} else if err := SetReadahead(mountpoint, ReadaheadKB); err != nil {
		v.Log.Printf("kmsfs: %v (reads stay in the kernel's default request size)", err)
	}
	return &Server{Server: srv, journal: j, root: root, readOnly: o.ReadOnly}, nil
}

// Server is a running mount: go-fuse's server, and the write journal the
// mount writes through.
type Server struct {
	*fuse.Server
	journal *cryptfile.Journal
	once    sync.Once

	root     *Node
	readOnly bool
	// reencMu lets one re-encryption run at a time (they share the copy
	// in the backing root); closed, under it, refuses new ones once the
	// file system is unmounted.
	reencMu sync.Mutex
	closed  bool
}

// Reencrypt re-encrypts the regular file at rel (a path relative to the
// mount point) under a new data key (cryptfile.File.Reencrypt) and
// returns its size. The caller must hold the file open, or a descriptor
// of it (O_PATH will do), so that the kernel keeps it known to the mount.
func (s *Server) Reencrypt(ctx context.Context, rel string) (int64, error) {
	if s.readOnly {
		return 0, fmt.Errorf("%s: %w (read-only mount)", rel, syscall.EROFS)
	}
	n := s.root
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." {
			continue
		}
		if c == ".." || n.hidden(c) {
			return 0, fmt.Errorf("%s: %w", rel, syscall.EINVAL)
		}
		ch := n.GetChild(c)
		if ch == nil {
			return 0, fmt.Errorf("%s: not known to the mount (open it, or a descriptor of it, while asking): %w", rel, syscall.ENOENT)
		}
		n = ch.Operations().(*Node)
	}
	if n.file == nil {
		return 0, fmt.Errorf("%s: not a regular file: %w", rel, syscall.EINVAL)
	}
	fd, err := n.openBacking(syscall.O_RDWR)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", rel, err)
	}
	defer syscall.Close(fd)
	// The path must still lead to this node's inode (another file may
	// have been put there behind the mount).
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("%s: %w", rel, err)
	}
	if n.t.stableAttr(&st, 0).Ino != n.StableAttr().Ino {
		return 0, fmt.Errorf("%s: the backing file changed behind the mount; try again: %w", rel, syscall.EAGAIN)
	}
	s.reencMu.Lock()
	defer s.reencMu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("%s: the file system is being unmounted: %w", rel, syscall.ESHUTDOWN)
	}
	size, err := n.file.Reencrypt(ctx, fd, n.t.dir)
	if err != nil {
		n.t.vol.Log.Printf("kmsfs: %s: re-encryption failed: %v", n.name(), err)
		return 0, fmt.Errorf("%s: %w", rel, err)
	}
	return size, nil
}

// Wait returns once the file system is unmounted and the write journal is
// closed (its key wiped): the caller may then close the volume and purge
// locked memory.
func (s *Server) Wait() {
	s.Server.Wait()
	// A re-encryption asked for over the control socket may still run:
	// let it finish (it is safe to stop anywhere, but not to have the
	// backing directory closed under it).
	s.reencMu.Lock()
	s.closed = true
	s.reencMu.Unlock()
	s.once.Do(func() { s.journal.Close() })
}

// ReadaheadKB is the kernel readahead kmsfs sets on its mounts: four
// of the largest FUSE requests. The kernel's default of 128 KiB splits a
// sequential read into requests of 128 KiB, each paying a round trip,
// a backing read and a decryption pass of its own; a window of several
// requests keeps more than one of them in the daemon at a time, so the
// decryption of one overlaps the backing read and reply of another
// (measured: a 1 GiB read with the backing file cached took 0.6 s
// instead of 0.8 s).
const ReadaheadKB = 4 * maxWrite >> 10

// KernelOptions returns the go-fuse options every kmsfs mount starts
// from: one-second entry, attribute and negative timeouts, requests of
// up to 1 MiB, POSIX locks, permissions checked by the kernel against
// the modes exactly as stored (NullPermissions: go-fuse would otherwise
// show a mode of 0000 as 0644, and the kernel would enforce that). The
// benchmark baseline mounts with the same options, so that it differs
// from kmsfs only in what the daemon does with the bytes.
func KernelOptions(fsName, name string) *gofs.Options {
	timeout := time.Second
	return &gofs.Options{
		NullPermissions: true,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		MountOptions: fuse.MountOptions{
			DirectMount: true,
			// As root, a failed mount(2) is the real error; falling back to
			// fusermount3 would only hide it.
			DirectMountStrict: os.Geteuid() == 0,
			FsName:            fsName,
			Name:              name,
			MaxWrite:          maxWrite,
			EnableLocks:       true,
			// Every read reply is a buffer the daemon filled (plaintext
			// it decrypted), never a descriptor to splice from: without
			// this go-fuse still tries a splice first for every read
			// reply (a pipe write, a failed load, a splice of the pipe
			// to /dev/null and an ioctl) before falling back to writev;
			// about three system calls of a random 4 KiB read's eight.
			DisableSplice: true,
			Options:       []string{"default_permissions"},
		},
	}
}

// SetReadahead sets the kernel readahead of the FUSE mount at mountpoint
// to kb KiB, through /sys/class/bdi of its device. It needs root; a
// mount without it works, with smaller read requests.
func SetReadahead(mountpoint string, kb int) error {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return fmt.Errorf("setting readahead of %s: %w", mountpoint, err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(kb)), 0); err != nil {
		return fmt.Errorf("setting readahead of %s: %w", mountpoint, err)
	}
	return nil
}

// Data previews in go-fuse's debug lines: `"abc"... 20b` in requests and
// `20b data "abc"...` in replies.
var (
	inData  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"(?:\.\.\.)? (\d+b)`)
	outData = regexp.MustCompile(`(\d+b data) "(?:[^"\\]|\\.)*"(?:\.\.\.)?`)
)

// redactor removes file contents from debug log lines.
type redactor struct{ w io.Writer }

func (r redactor) Write(p []byte) (int, error) {
	q := outData.ReplaceAll(p, []byte("$1 <contents not logged>"))
	q = inData.ReplaceAll(q, []byte("<contents not logged> $1"))
	if _, err := r.w.Write(q); err != nil {
		return 0, err
	}
	return len(p), nil
}
