package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

var kmsfsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kmsfs-cli-test")
	if err != nil {
		panic(err)
	}
	kmsfsBin = filepath.Join(dir, "kmsfs")
	out, err := exec.Command("go", "build", "-o", kmsfsBin, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// kmsfs runs the binary with HOME pointed at home and returns its exit
// code, stdout and stderr.
func kmsfs(t *testing.T, home string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(kmsfsBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME=")
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running kmsfs %v: %v", args, err)
	}
	return code, so.String(), se.String()
}

func canMount(t *testing.T) {
	t.Helper()
	_, err := os.Stat("/dev/fuse")
	if err == nil && os.Getuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot mount (need root and /dev/fuse): %v", err)
	}
	t.Skip("needs root and /dev/fuse")
}

func TestCLIErrors(t *testing.T) {
	home := t.TempDir()
	vol := filepath.Join(home, "vol")
	os.Mkdir(vol, 0o755)
	if code, _, se := kmsfs(t, home, "init", vol); code != 0 {
		t.Fatalf("init = %d (%s), want 0", code, se)
	}
	key := filepath.Join(home, ".config", "kmsfs", "local.key")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("default key %s: %v %v, want mode 0600", key, fi, err)
	}
	nonEmpty := filepath.Join(home, "nonempty")
	os.MkdirAll(filepath.Join(nonEmpty, "x"), 0o755)
	plain := filepath.Join(home, "plain")
	os.Mkdir(plain, 0o755)
	mnt := filepath.Join(home, "mnt")
	os.Mkdir(mnt, 0o755)
	file := filepath.Join(home, "file")
	os.WriteFile(file, nil, 0o644)

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no args", nil, exitUsage, "Usage"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"init twice", []string{"init", vol}, exitError, "already a kmsfs volume"},
		{"init non-empty", []string{"init", nonEmpty}, exitError, "not empty"},
		{"init bad block size", []string{"init", "--block-size", "5000", plain}, exitError, "power of two"},
		{"init bad key URI", []string{"init", "--key", "nosuch://x", plain}, exitUsage, "unknown scheme"},
		{"init relative local key", []string{"init", "--key", "local://relative/key", plain}, exitUsage, "bad key URI"},
		{"mount not a volume", []string{"mount", plain, mnt}, exitNotVolume, "not a kmsfs volume"},
		{"mount missing mount point", []string{"mount", vol, filepath.Join(home, "nope")}, exitMount, "mount point"},
		{"mount point is a file", []string{"mount", vol, file}, exitMount, "not a directory"},
		{"mount one arg", []string{"mount", vol}, exitUsage, "CIPHERDIR and MOUNTPOINT"},
		{"mount bad flag", []string{"mount", "--nope", vol, plain}, exitUsage, "flag provided but not defined"},
		{"umount not mounted", []string{"umount", plain}, exitError, "unmount"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, se := kmsfs(t, home, tc.args...)
			if code != tc.wantCode {
				t.Errorf("kmsfs %v = exit %d, want %d (stderr %q)", tc.args, code, tc.wantCode, se)
			}
			if !strings.Contains(se, tc.wantErr) {
				t.Errorf("kmsfs %v stderr = %q, want it to contain %q", tc.args, se, tc.wantErr)
			}
			if tc.wantCode != exitUsage && strings.Count(strings.TrimSpace(se), "\n") > 1 {
				t.Errorf("kmsfs %v stderr has %d lines, want one error line (and a hint)", tc.args, strings.Count(se, "\n"))
			}
		})
	}
}

func TestHelpEverywhere(t *testing.T) {
	for _, c := range []string{"init", "mount", "umount"} {
		code, so, _ := kmsfs(t, t.TempDir(), c, "--help")
		if code != 0 || !strings.Contains(so, "Usage: kmsfs "+c) {
			t.Errorf("kmsfs %s --help = %d, %q; want 0 and its usage", c, code, so)
		}
	}
	if code, so, _ := kmsfs(t, t.TempDir(), "version"); code != 0 || !strings.Contains(so, "kmsfs ") {
		t.Errorf("kmsfs version = %d %q", code, so)
	}
}

func TestMountLifecycle(t *testing.T) {
	canMount(t)
	home := t.TempDir()
	vol, mnt := filepath.Join(home, "vol"), filepath.Join(home, "mnt")
	os.Mkdir(vol, 0o755)
	os.Mkdir(mnt, 0o755)
	if code, _, se := kmsfs(t, home, "init", "--plaintext-names", vol); code != 0 {
		t.Fatalf("init = %d (%s)", code, se)
	}
	if code, _, se := kmsfs(t, home, "mount", vol, mnt); code != 0 {
		t.Fatalf("mount = %d (%s), want 0", code, se)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("secret words"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Busy: a second mount at the same place fails clearly.
	if code, _, se := kmsfs(t, home, "mount", vol, mnt); code != exitMount || !strings.Contains(se, "busy") {
		t.Errorf("second mount = %d %q, want %d and 'busy'", code, se, exitMount)
	}
	// The ciphertext does not contain the plaintext.
	raw, err := os.ReadFile(filepath.Join(vol, "f"))
	if err != nil || bytes.Contains(raw, []byte("secret words")) {
		t.Errorf("backing file: err %v, contains plaintext %v", err, bytes.Contains(raw, []byte("secret")))
	}
	if code, _, se := kmsfs(t, home, "umount", mnt); code != 0 {
		t.Fatalf("umount = %d (%s)", code, se)
	}
	// Foreground server: SIGTERM unmounts and exits 0.
	cmd := exec.Command(kmsfsBin, "mount", "-f", vol, mnt)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME=")
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		b, err := os.ReadFile(filepath.Join(mnt, "f"))
		return err == nil && string(b) == "secret words"
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("foreground server after SIGTERM: %v (%s)", err, se.String())
	}
	if _, err := os.Stat(filepath.Join(mnt, "f")); err == nil {
		t.Errorf("mount still up after SIGTERM")
	}
	// Key file gone: exit 4 with a message naming the key.
	key := filepath.Join(home, ".config", "kmsfs", "local.key")
	moved := filepath.Join(home, "moved.key")
	if err := os.Rename(key, moved); err != nil {
		t.Fatal(err)
	}
	code, _, msg := kmsfs(t, home, "mount", vol, mnt)
	if code != exitKey || !strings.Contains(msg, key) {
		t.Errorf("mount with missing key = %d %q, want %d naming %s", code, msg, exitKey, key)
	}
	// Moved key file given with --key: mounts.
	if code, _, msg := kmsfs(t, home, "mount", "--key", "local://"+moved, vol, mnt); code != 0 {
		t.Fatalf("mount --key moved = %d %q, want 0", code, msg)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "secret words" {
		t.Errorf("read after mount with moved key = %q, %v", b, err)
	}
	kmsfs(t, home, "umount", mnt)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		exec.Command("sleep", "0.05").Run()
	}
	t.Fatal("timed out waiting")
}

// TestFlagErrorsUseTwoDashes checks that flag errors name long flags as
// the help texts do.
func TestFlagErrorsUseTwoDashes(t *testing.T) {
	home := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad value of a long flag", []string{"mount", "--key-cache-ttl", "x", "a", "b"}, "flag --key-cache-ttl"},
		{"unknown long flag", []string{"mount", "--bogus", "a", "b"}, "not defined: --bogus"},
		{"bad value of a short flag", []string{"init", "-b", "x", "d"}, "flag -b:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := kmsfs(t, home, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("kmsfs %v = exit %d, %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
			}
		})
	}
}

// TestInitSaysKeyFile checks that init says whether it created the local
// key file or used an existing one, and to back it up; and that rewrap
// draws no progress bar into a pipe.
func TestInitSaysKeyFile(t *testing.T) {
	home := t.TempDir()
	for i, want := range []string{"created the local key file", "using the existing local key file"} {
		dir := filepath.Join(home, "v"+string(rune('0'+i)))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := kmsfs(t, home, "init", dir)
		if code != 0 || !strings.Contains(stdout, want) || !strings.Contains(stdout, "back") {
			t.Errorf("init #%d = exit %d, %q, %q; want exit 0 and %q with a word on backing it up", i+1, code, stdout, stderr, want)
		}
	}
	second := "local://" + filepath.Join(home, "second.key")
	code, _, stderr := kmsfs(t, home, "rewrap", "--add", second, filepath.Join(home, "v0"))
	if code != 0 || strings.Contains(stderr, "[") {
		t.Errorf("rewrap into a pipe = exit %d, stderr %q; want exit 0 and no progress bar", code, stderr)
	}
}
