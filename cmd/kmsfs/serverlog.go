package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"log/syslog"
	"os"
	"path/filepath"
	"strings"
)

// envSyslogAddr replaces the system's syslog socket (/dev/log) for a
// background server: the path of a unix datagram socket. Tests listen on
// one; it has no other use.
const envSyslogAddr = "KMSFS_SYSLOG_ADDR"

// syslogPriority is the facility and level of every line a background
// server sends to syslog.
const syslogPriority = syslog.LOG_DAEMON | syslog.LOG_INFO

// serverLog returns the logger of a mount's server and what to close when
// it is done. The log goes to file if one is given; else a foreground
// server logs to its standard error, and a background one, whose terminal
// is gone, to syslog, or if there is none (no /dev/log) to a file of its
// mount point under $XDG_STATE_HOME/kmsfs (~/.local/state/kmsfs).
func serverLog(file string, background bool, mnt string) (*log.Logger, io.Closer, error) {
	if file != "" {
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("log file: %w", err)
		}
		return log.New(f, "", log.LstdFlags), f, nil
	}
	if !background {
		return log.New(os.Stderr, "", log.LstdFlags), nopCloser{}, nil
	}
	w, serr := dialSyslog()
	if serr == nil {
		return log.New(syslogLines{w}, "", 0), w, nil
	}
	path, err := stateLogPath(mnt)
	if err != nil {
		return nil, nil, fmt.Errorf("no syslog (%v) and no log file: %w", serr, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("no syslog (%v) and no log file: %w", serr, err)
	}
	l := log.New(f, "", log.LstdFlags)
	l.Printf("kmsfs: logging to %s: no syslog (%v)", path, serr)
	return l, f, nil
}

// nopCloser closes nothing.
type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// dialSyslog connects to the system's syslog, or to $KMSFS_SYSLOG_ADDR.
func dialSyslog() (*syslog.Writer, error) {
	if addr := os.Getenv(envSyslogAddr); addr != "" {
		return syslog.Dial("unixgram", addr, syslogPriority, "kmsfs")
	}
	return syslog.New(syslogPriority, "kmsfs")
}

// syslogLines sends each log line as one syslog message, without the
// "kmsfs: " that starts it (syslog's tag already says kmsfs).
type syslogLines struct{ w *syslog.Writer }

func (s syslogLines) Write(p []byte) (int, error) {
	if _, err := s.w.Write(bytes.TrimPrefix(p, []byte("kmsfs: "))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// stateLogPath returns the fallback log file of the server of mnt,
// creating its directory: $XDG_STATE_HOME/kmsfs/MNT.log, where MNT is
// the mount point with its slashes turned into dashes.
func stateLogPath(mnt string) (string, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		if home == "" {
			return "", errors.New("$HOME is not set")
		}
		dir = filepath.Join(home, ".local", "state")
	}
	dir = filepath.Join(dir, "kmsfs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	name := strings.ReplaceAll(strings.Trim(mnt, "/"), "/", "-")
	if name == "" {
		name = "root"
	}
	return filepath.Join(dir, name+".log"), nil
}
