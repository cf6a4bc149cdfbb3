package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

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

// noAsyncPreempt is the GODEBUG setting every kmsfs process runs with.
const noAsyncPreempt = "asyncpreemptoff=1"

// execWithoutAsyncPreemption runs the program again, in place (same
// process ID), with asynchronous preemption off, unless it already is.
// Asynchronous preemption stops a goroutine with a signal, and the kernel
// saves the goroutine's registers in the signal frame: ordinary memory
// that runtime/secret does not erase. A goroutine stopped while deriving
// or expanding a file's key left 16 bytes of that key there (found by
// tests/memory_test.go TestKeysInMemory, under load, about one run in
// six). kmsfs's long loops are assembly cryptography, which is not
// preemptible anyway; goroutines are still preempted at function calls.
// If the program cannot be run again it goes on as it is.
func execWithoutAsyncPreemption() {
	cur := os.Getenv("GODEBUG")
	if strings.Contains(","+cur+",", ","+noAsyncPreempt+",") {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	v := noAsyncPreempt
	if cur != "" {
		v = cur + "," + noAsyncPreempt
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
	_ = unix.Exec(exe, os.Args, append(env, "GODEBUG="+v))
}
