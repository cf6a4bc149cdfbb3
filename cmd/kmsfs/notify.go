package main

import (
	"fmt"
	"net"
	"os"
)

// envNotifySocket names the socket of the service manager's notification
// protocol (sd_notify(3)): systemd sets it for units of Type=notify.
const envNotifySocket = "NOTIFY_SOCKET"

// sdNotify sends state, newline-separated VAR=VALUE assignments such as
// "READY=1", to the service manager that started this process, as one
// datagram on the unix socket $NOTIFY_SOCKET (a name starting with "@"
// is in the abstract namespace). Without $NOTIFY_SOCKET it does nothing.
func sdNotify(state string) error {
	addr := os.Getenv(envNotifySocket)
	if addr == "" {
		return nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return fmt.Errorf("notifying the service manager: %s=%q is not a unix socket", envNotifySocket, addr)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notifying the service manager: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notifying the service manager: %w", err)
	}
	return nil
}
