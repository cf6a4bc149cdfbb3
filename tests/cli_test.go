package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// checkError checks a failed kmsfs command: the exit code, and an error
// line "kmsfs: error: ..." on stderr without a Go panic.
func checkError(t *testing.T, r result, wantCode int) {
	t.Helper()
	if r.err != nil {
		t.Errorf("%v", r)
	}
	if wantCode < 0 {
		if r.code <= 0 {
			t.Errorf("%v\nwant a non-zero exit", r)
		}
	} else if r.code != wantCode {
		t.Errorf("%v\nwant exit %d", r, wantCode)
	}
	if strings.Contains(r.stderr, "panic:") || strings.Contains(r.stderr, "goroutine ") {
		t.Errorf("%v\nwant no panic", r)
	}
	if r.code == exitUsage {
		return // usage errors may print the usage text instead
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if !strings.HasPrefix(lines[0], "kmsfs: error: ") {
		t.Errorf("%v\nwant stderr to start with \"kmsfs: error: \"", r)
	}
}

func TestCLIErrors(t *testing.T) {
	v := newVolume(t, notMounted())
	empty := t.TempDir()
	badConf := filepath.Join(t.TempDir(), "bad")
	copyDir(t, v.cipherDir, badConf)
	conf := filepath.Join(badConf, confName)
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-5] ^= 1 // in the last block of the configuration
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// The key file must be mode 0600.
	if fi, err := os.Stat(v.keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("os.Stat(key file made by init) = %v, %v, want mode 0600", fi, err)
	}
	confBefore, _ := os.ReadFile(v.backing(confName))

	cases := []struct {
		name string
		args []string
		code int // -1: any non-zero code
	}{
		{"no arguments", nil, exitUsage},
		{"unknown command", []string{"frobnicate"}, exitUsage},
		{"unknown flag", []string{"mount", "--no-such-flag", v.cipherDir, v.mnt}, exitUsage},
		{"mount without mount point", []string{"mount", v.cipherDir}, exitUsage},
		{"init without directory", []string{"init", "--key", v.keyURI}, exitUsage},
		{"init of an existing volume", []string{"init", "--key", v.keyURI, v.cipherDir}, -1},
		{"init with a bad block size", []string{"init", "--key", v.keyURI, "--block-size", "1000", filepath.Join(v.dir, "bs")}, -1},
		{"mount of a directory that is no volume", []string{"mount", empty, v.mnt}, exitBadVolume},
		{"mount of a missing directory", []string{"mount", filepath.Join(v.dir, "missing"), v.mnt}, exitBadVolume},
		{"mount with a damaged configuration", []string{"mount", badConf, v.mnt}, exitBadVolume},
		{"mount on a missing mount point", []string{"mount", v.cipherDir, filepath.Join(v.dir, "no-mnt")}, exitMount},
		{"umount of a directory that is not mounted", []string{"umount", v.mnt}, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkError(t, v.kmsfs(c.args...), c.code)
			if isMounted(v.mnt) {
				t.Fatalf("%s is mounted after a failed command", v.mnt)
			}
		})
	}
	if after, _ := os.ReadFile(v.backing(confName)); !bytes.Equal(after, confBefore) {
		t.Errorf("%s changed by a failed init", confName)
	}

	t.Run("mount with the key file missing", func(t *testing.T) {
		moved := v.keyPath + ".moved"
		if err := os.Rename(v.keyPath, moved); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(moved, v.keyPath)
		checkError(t, v.kmsfs(v.mountCommand()...), exitNoKey)
	})
	t.Run("mount with a world-readable key file", func(t *testing.T) {
		if err := os.Chmod(v.keyPath, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(v.keyPath, 0o600)
		checkError(t, v.kmsfs(v.mountCommand()...), exitNoKey)
	})
	t.Run("mount with the key file of another key", func(t *testing.T) {
		// Unwrapping fails as it does for an altered slot, but the
		// configuration is intact: a wrong key (4), not damage (3).
		other := newVolume(t, notMounted())
		orig, err := os.ReadFile(v.keyPath)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(v.keyPath, orig, 0o600)
		b, err := os.ReadFile(other.keyPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(v.keyPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r := v.kmsfs(v.mountCommand()...)
		checkError(t, r, exitNoKey)
		if !strings.Contains(r.stderr, "does not open this volume") {
			t.Errorf("%v\nwant the error to say the key does not open this volume", r)
		}
	})
	t.Run("mount on a busy mount point", func(t *testing.T) {
		v.mount()
		defer v.unmount()
		checkError(t, v.kmsfs(v.mountCommand()...), exitMount)
		other := newVolume(t, notMounted())
		checkError(t, other.kmsfs("mount", other.cipherDir, v.mnt), exitMount)
		writeFile(t, v.path("still-works"), []byte("x"))
	})
}

// copyDir copies a directory of regular files (a cipher dir) to dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if r := runCommand(os.Environ(), "/", "cp", "-a", src, dst); r.code != 0 {
		t.Fatalf("%v", r)
	}
}

func TestPassphrase(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	wrong := filepath.Join(dir, "wrong")
	if err := os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrong, []byte("incorrect horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := newVolume(t, withInitArgs("--passphrase-file", pass), notMounted())
	key, err := os.ReadFile(v.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(key, []byte(`"kdf":"scrypt"`)) || bytes.Contains(key, []byte(`"key":`)) {
		t.Errorf("key file made with --passphrase-file = %s, want a scrypt-sealed key", key)
	}
	t.Run("wrong passphrase", func(t *testing.T) {
		checkError(t, v.kmsfs(v.mountCommand("--passphrase-file", wrong)...), exitNoKey)
	})
	t.Run("no passphrase", func(t *testing.T) {
		checkError(t, v.kmsfs(v.mountCommand()...), -1)
	})
	t.Run("right passphrase", func(t *testing.T) {
		v.mountArgs = []string{"--passphrase-file", pass}
		v.mount()
		want := pattern("pass", 5000)
		writeFile(t, v.path("f"), want)
		v.remount()
		checkContent(t, v.path("f"), want, v.blockSize)
	})
}

// TestDefaultKey checks where init puts the local key without --key:
// $XDG_CONFIG_HOME/kmsfs/local.key, else $HOME/.config/kmsfs/local.key.
func TestDefaultKey(t *testing.T) {
	requireBinary(t)
	for _, xdg := range []bool{true, false} {
		name := "HOME"
		if xdg {
			name = "XDG_CONFIG_HOME"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			home := filepath.Join(dir, "home")
			xdgDir := filepath.Join(dir, "xdg")
			cipher := filepath.Join(dir, "cipher")
			for _, d := range []string{home, xdgDir, cipher} {
				if err := os.Mkdir(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			var env []string
			for _, kv := range os.Environ() {
				k := strings.SplitN(kv, "=", 2)[0]
				if k != "HOME" && k != "XDG_CONFIG_HOME" && k != "GORACE" {
					env = append(env, kv)
				}
			}
			env = append(env, "HOME="+home, "GORACE=log_path="+filepath.Join(dir, "race")+" atexit_sleep_ms=50")
			want := filepath.Join(home, ".config", "kmsfs", "local.key")
			if xdg {
				env = append(env, "XDG_CONFIG_HOME="+xdgDir)
				want = filepath.Join(xdgDir, "kmsfs", "local.key")
			}
			r := runCommand(env, dir, kmsfsBin, "init", cipher)
			if r.code != 0 || r.err != nil {
				t.Fatalf("%v\nwant exit 0", r)
			}
			if fi, err := os.Stat(want); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("os.Stat(%s) = %v, %v, want a key file of mode 0600", want, fi, err)
			}
			if reports, _ := filepath.Glob(filepath.Join(dir, "race*")); len(reports) > 0 {
				t.Errorf("race detector reports: %v", reports)
			}
		})
	}
}

// TestForeground runs "kmsfs mount -f": it serves until unmounted, or
// until SIGTERM, after which it unmounts and exits.
func TestForeground(t *testing.T) {
	for _, how := range []string{"umount", "SIGTERM", "SIGINT"} {
		t.Run(how, func(t *testing.T) {
			v := newVolume(t, notMounted())
			cmd := exec.Command(kmsfsBin, v.mountCommand("-f")...)
			cmd.Env = v.env()
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			stopped := false
			defer func() {
				if !stopped {
					cmd.Process.Kill()
					<-done
				}
			}()
			deadline := time.Now().Add(30 * time.Second)
			for !isMounted(v.mnt) {
				select {
				case err := <-done:
					stopped = true
					t.Fatalf("kmsfs mount -f exited before mounting: %v\n%s", err, out.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("kmsfs mount -f: %s not mounted after 30s\n%s", v.mnt, out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			v.mounted = true
			writeFile(t, v.path("f"), []byte("foreground"))
			switch how {
			case "umount":
				if r := v.kmsfs("umount", v.mnt); r.code != 0 {
					t.Errorf("%v\nwant exit 0", r)
				}
			case "SIGTERM":
				cmd.Process.Signal(syscall.SIGTERM)
			case "SIGINT":
				cmd.Process.Signal(syscall.SIGINT)
			}
			select {
			case err := <-done:
				stopped = true
				if err != nil && how == "umount" {
					t.Errorf("kmsfs mount -f after umount = %v, want exit 0\n%s", err, out.String())
				}
			case <-time.After(daemonExitTimeout):
				t.Fatalf("kmsfs mount -f still runs %v after %s", daemonExitTimeout, how)
			}
			if isMounted(v.mnt) {
				t.Errorf("%s still mounted after kmsfs mount -f got %s and exited", v.mnt, how)
			}
			v.mounted = false
			v.mount()
			checkContent(t, v.path("f"), []byte("foreground"), v.blockSize)
		})
	}
}
