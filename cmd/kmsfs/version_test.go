package main

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kmsfs/kmsfs/keyring/secmem"
)

// secretLine is the second line of "kmsfs version": go build passes the
// GOEXPERIMENT this test was built with on to the binary it builds.
var secretLine = "runtime/secret: " + onOff(secmem.Erasing) + "\n"

// TestVersion builds kmsfs the way the Makefile does and the way a plain
// "go build" does, and checks what "kmsfs version" says.
func TestVersion(t *testing.T) {
	tests := []struct {
		name  string
		flags []string
		want  string
	}{
		{"make", []string{"-ldflags", "-X main.version=1.2.3 -X main.commit=abc1234"}, "kmsfs 1.2.3 (commit abc1234, format version 3, reads 1 and 2)\n" + secretLine},
		{"go build", nil, "kmsfs dev (commit unknown, format version 3, reads 1 and 2)\n" + secretLine},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "kmsfs")
			args := append([]string{"build", "-buildvcs=false", "-o", bin}, tc.flags...)
			if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
				t.Fatalf("go %v: %v\n%s", args, err, out)
			}
			out, err := exec.Command(bin, "version").Output()
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("kmsfs version = %q, want %q", out, tc.want)
			}
		})
	}
}
