// Package control is the control socket of a running mount: kmsfs
// commands ask the server of a mount point for its counters ("stats")
// and make it re-read its configuration ("reload").
package control

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Server is what the control socket serves: a mounted volume.
type Server interface {
	// Stats returns the counters "kmsfs stats" prints, as a value that
	// encodes to JSON.
	Stats() any
	// Reload reads the volume configuration again.
	Reload(ctx context.Context) error
	// Keys returns the key URIs new files are wrapped under.
	Keys() []string
	// RotateNewFileKeys makes the next new file's data key a fresh one.
	RotateNewFileKeys()
	// Reencrypt re-encrypts the regular file at path (relative to the
	// mount point) under a new data key and returns its size.
	Reencrypt(ctx context.Context, path string) (int64, error)
}

// The socket is an abstract Unix socket named after the mount point; only
// the user running the server and root may use it.

func controlAddr(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	return "@kmsfs-" + hex.EncodeToString(sum[:12])
}

// Serve answers control requests for v mounted at mountpoint until
// the returned listener is closed.
//
// The socket is blocking and served with plain system calls rather than
// through the net package: a socket in Go's network poller makes every
// idle thread of the process wait in epoll instead of on a futex, which
// costs each FUSE request an epoll call and a slower wakeup. (A pending
// timer does the same, hence keyring.Cache's timer only while it holds
// keys; without both, 4 KiB random reads with one job went from about
// 20k to 26k IOPS here.)
func Serve(v Server, mountpoint string) (io.Closer, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: controlAddr(mountpoint)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l := &controlListener{fd: fd, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			cfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			if err != nil {
				return // shut down by Close
			}
			go serveConn(v, cfd)
		}
	}()
	return l, nil
}

// controlListener is the listening control socket.
type controlListener struct {
	fd   int
	once sync.Once
	done chan struct{}
}

// Close stops accepting and closes the socket. Shutting a listening
// socket down wakes an accept blocked on it; closing it would not.
func (l *controlListener) Close() error {
	var err error
	l.once.Do(func() {
		unix.Shutdown(l.fd, unix.SHUT_RDWR)
		<-l.done
		err = unix.Close(l.fd)
	})
	return err
}

// peerAllowed says whether the process at the other end of the
// connection fd runs as root or as the server's user.
func peerAllowed(fd int) bool {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	return err == nil && (cred.Uid == 0 || int(cred.Uid) == os.Getuid())
}

// maxRequest bounds a request line: a path of PATH_MAX bytes, escaped.
const maxRequest = 64 << 10

// controlTimeout bounds each read and write of a control connection.
const controlTimeout = 2 * time.Minute

func serveConn(v Server, fd int) {
	tv := unix.NsecToTimeval(controlTimeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	// A blocking descriptor: os.NewFile leaves it out of the poller.
	c := os.NewFile(uintptr(fd), "kmsfs control connection")
	defer c.Close()
	// Read the request first, also from a peer that is refused: closing a
	// socket with unread data resets the connection, and the client would
	// see "connection reset" instead of the refusal.
	line, err := bufio.NewReader(io.LimitReader(c, maxRequest)).ReadString('\n')
	if !peerAllowed(fd) {
		fmt.Fprintln(c, `{"error":"permission denied: only the user running this mount, or root, may use it"}`)
		return
	}
	if err != nil {
		return
	}
	var out any
	line = strings.TrimSpace(line)
	if arg, ok := strings.CutPrefix(line, "reencrypt "); ok {
		var path string
		if err := json.Unmarshal([]byte(arg), &path); err != nil {
			out = map[string]string{"error": "reencrypt: bad path"}
		} else if size, err := v.Reencrypt(context.Background(), path); err != nil {
			out = map[string]string{"error": err.Error()}
		} else {
			out = map[string]any{"ok": true, "size": size}
		}
		json.NewEncoder(c).Encode(out)
		return
	}
	switch line {
	case "stats":
		out = v.Stats()
	case "rotate":
		v.RotateNewFileKeys()
		out = map[string]any{"ok": true}
	case "reload":
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := v.Reload(ctx)
		cancel()
		if err != nil {
			out = map[string]string{"error": err.Error()}
		} else {
			out = map[string]any{"ok": true, "keys": v.Keys()}
		}
	default:
		out = map[string]string{"error": "unknown request"}
	}
	json.NewEncoder(c).Encode(out)
}

// ReencryptRequest is the request that re-encrypts the file at path
// (relative to the mount point); the answer is {"ok":true,"size":N}.
func ReencryptRequest(path string) string {
	b, _ := json.Marshal(path)
	return "reencrypt " + string(b)
}

// ErrNoServer means no kmsfs server answers for the mount point.
var ErrNoServer = errors.New("no kmsfs server is running for this mount point")

// ErrImpostor means the control socket of the mount point is held by a
// process of another user: not a kmsfs server this user may trust.
var ErrImpostor = errors.New("the control socket is held by a process of another user, not by this user's kmsfs server")

// checkServer checks that the process at the other end of c runs as
// root or as this user.
func checkServer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("checking the control socket's owner: %w", cerr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("%w (uid %d, pid %d)", ErrImpostor, cred.Uid, cred.Pid)
	}
	return nil
}

// Request sends a request ("stats" or "reload") to the server of
// mountpoint and returns its JSON answer.
func Request(mountpoint, request string) ([]byte, error) {
	return RequestWait(mountpoint, request, 2*time.Minute)
}

// RequestWait is Request that waits up to timeout for the answer (a
// re-encryption takes as long as its file is large).
func RequestWait(mountpoint, request string, timeout time.Duration) ([]byte, error) {
	c, err := net.DialTimeout("unix", controlAddr(mountpoint), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mountpoint, ErrNoServer)
	}
	defer c.Close()
	// Abstract socket names are first come, first served across users:
	// talk only to a server run by this user or by root.
	if err := checkServer(c.(*net.UnixConn)); err != nil {
		return nil, fmt.Errorf("%s: %w", mountpoint, err)
	}
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintln(c, request); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(c, 1<<20))
	if err != nil {
		return nil, err
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return b, fmt.Errorf("%s: %s", mountpoint, e.Error)
	}
	return b, nil
}
