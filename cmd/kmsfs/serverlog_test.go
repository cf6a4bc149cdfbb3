package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServerLog(t *testing.T) {
	t.Run("log file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "kmsfs.log")
		l, c, err := serverLog(p, true, "/mnt/x")
		if err != nil {
			t.Fatal(err)
		}
		l.Printf("kmsfs: hello")
		c.Close()
		if b, _ := os.ReadFile(p); !strings.HasSuffix(string(b), "kmsfs: hello\n") {
			t.Errorf("log file = %q, want the line", b)
		}
	})
	t.Run("foreground", func(t *testing.T) {
		l, _, err := serverLog("", false, "/mnt/x")
		if err != nil || l.Writer() != os.Stderr {
			t.Errorf("serverLog(foreground) = %v, %v; want a logger on stderr", l.Writer(), err)
		}
	})
	t.Run("syslog", func(t *testing.T) {
		addr := filepath.Join(t.TempDir(), "log")
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		t.Setenv(envSyslogAddr, addr)
		state := t.TempDir()
		t.Setenv("XDG_STATE_HOME", state)
		l, c, err := serverLog("", true, "/mnt/x")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		l.Printf("kmsfs: damaged block 3 of %s", "secret.txt")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		msg := string(buf[:n])
		// <30> is facility daemon (3), level info (6).
		if !strings.HasPrefix(msg, "<30>") || !strings.Contains(msg, "kmsfs[") || !strings.HasSuffix(msg, ": damaged block 3 of secret.txt\n") {
			t.Errorf("syslog message = %q, want <30>... kmsfs[PID]: damaged block 3 of secret.txt", msg)
		}
		if ents, _ := os.ReadDir(state); len(ents) > 0 {
			t.Errorf("%s has %d entries, want none with syslog working", state, len(ents))
		}
	})
	t.Run("no syslog", func(t *testing.T) {
		t.Setenv(envSyslogAddr, filepath.Join(t.TempDir(), "missing"))
		state := t.TempDir()
		t.Setenv("XDG_STATE_HOME", state)
		l, c, err := serverLog("", true, "/srv/plain")
		if err != nil {
			t.Fatal(err)
		}
		l.Printf("kmsfs: damaged block 3 of secret.txt")
		c.Close()
		p := filepath.Join(state, "kmsfs", "srv-plain.log")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("fallback log: %v", err)
		}
		if !strings.Contains(string(b), "no syslog") || !strings.Contains(string(b), "damaged block 3 of secret.txt") {
			t.Errorf("fallback log %s = %q, want why and the line", p, b)
		}
	})
	t.Run("no syslog, no XDG_STATE_HOME", func(t *testing.T) {
		t.Setenv(envSyslogAddr, filepath.Join(t.TempDir(), "missing"))
		t.Setenv("XDG_STATE_HOME", "")
		home := t.TempDir()
		t.Setenv("HOME", home)
		_, c, err := serverLog("", true, "/")
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if _, err := os.Stat(filepath.Join(home, ".local", "state", "kmsfs", "root.log")); err != nil {
			t.Errorf("fallback log under ~/.local/state: %v", err)
		}
	})
}
