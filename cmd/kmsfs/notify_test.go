package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSdNotify(t *testing.T) {
	for _, addr := range []string{
		filepath.Join(t.TempDir(), "notify"),
		fmt.Sprintf("@kmsfs-test-notify-%d", os.Getpid()),
	} {
		t.Run(addr, func(t *testing.T) {
			conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			t.Setenv(envNotifySocket, addr)
			if err := sdNotify("READY=1\nSTATUS=ok"); err != nil {
				t.Fatalf("sdNotify = %v, want nil", err)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1024)
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(buf[:n]), "READY=1\nSTATUS=ok"; got != want {
				t.Errorf("datagram = %q, want %q", got, want)
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		t.Setenv(envNotifySocket, "")
		if err := sdNotify("READY=1"); err != nil {
			t.Errorf("sdNotify without %s = %v, want nil", envNotifySocket, err)
		}
	})
	t.Run("not a unix socket", func(t *testing.T) {
		t.Setenv(envNotifySocket, "vsock:2:1234")
		if err := sdNotify("READY=1"); err == nil || !strings.Contains(err.Error(), "not a unix socket") {
			t.Errorf("sdNotify = %v, want 'not a unix socket'", err)
		}
	})
	t.Run("nobody listens", func(t *testing.T) {
		t.Setenv(envNotifySocket, filepath.Join(t.TempDir(), "nobody"))
		if err := sdNotify("READY=1"); err == nil {
			t.Errorf("sdNotify to a missing socket = nil, want an error")
		}
	})
}
