package main

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestHardenProcess(t *testing.T) {
	if err := hardenProcess(); err != nil {
		t.Fatal(err)
	}
	got, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil || got != 0 {
		t.Errorf("PR_GET_DUMPABLE after hardenProcess = %d, %v; want 0", got, err)
	}
}
