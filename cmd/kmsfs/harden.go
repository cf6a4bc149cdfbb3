package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// hardenProcess makes the process non-dumpable: no core file, and no
// other user's ptrace or /proc/PID/mem reads (gcore of a running mount),
// whatever RLIMIT_CORE says. Keys in kmsfs's memory are still readable by
// root (docs/SECURITY.md, "Keys in memory").
func hardenProcess() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}
