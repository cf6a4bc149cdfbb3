package fs

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
	"time"

	"golang.org/x/sys/unix"
)

// The control socket lets kmsfs commands talk to a running mount: "stats"
// returns the volume's counters as JSON and "reload" re-reads its
// configuration. It is an abstract Unix socket named after the mount
// point; only the user running the server and root may use it.

func controlAddr(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	return "@kmsfs-" + hex.EncodeToString(sum[:12])
}

// ServeControl answers control requests for v mounted at mountpoint until
// the returned listener is closed.
func ServeControl(v *Volume, mountpoint string) (io.Closer, error) {
	l, err := net.Listen("unix", controlAddr(mountpoint))
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveControlConn(v, c.(*net.UnixConn))
		}
	}()
	return l, nil
}

func peerAllowed(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return err == nil && cred != nil && (cred.Uid == 0 || int(cred.Uid) == os.Getuid())
}

func serveControlConn(v *Volume, c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	if !peerAllowed(c) {
		fmt.Fprintln(c, `{"error":"permission denied"}`)
		return
	}
	line, err := bufio.NewReader(io.LimitReader(c, 256)).ReadString('\n')
	if err != nil {
		return
	}
	var out any
	switch strings.TrimSpace(line) {
	case "stats":
		out = v.Stats()
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

// ErrNoServer means no kmsfs server answers for the mount point.
var ErrNoServer = errors.New("no kmsfs server is running for this mount point")

// Control sends a request ("stats" or "reload") to the server of
// mountpoint and returns its JSON answer.
func Control(mountpoint, request string) ([]byte, error) {
	c, err := net.DialTimeout("unix", controlAddr(mountpoint), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mountpoint, ErrNoServer)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
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
