package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// exitFixture is a home directory with a volume made with the default
// local key, and what the exit code cases need around it.
type exitFixture struct {
	home, vol, key, keyURI string
	other, otherURI        string // a key file of another key
	empty, mnt             string // an empty directory; a mount point
	pass, openPass         string // passphrase files: mode 0600 and 0644
}

func newExitFixture(t *testing.T) *exitFixture {
	t.Helper()
	home := t.TempDir()
	f := &exitFixture{
		home: home, vol: filepath.Join(home, "vol"),
		key:   filepath.Join(home, ".config", "kmsfs", "local.key"),
		other: filepath.Join(home, "other.key"),
		empty: filepath.Join(home, "empty"), mnt: filepath.Join(home, "mnt"),
		pass: filepath.Join(home, "pass"), openPass: filepath.Join(home, "pass-open"),
	}
	f.keyURI, f.otherURI = "local://"+f.key, "local://"+f.other
	for _, d := range []string{f.vol, f.empty, f.mnt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if code, _, se := kmsfs(t, home, "init", f.vol); code != exitOK {
		t.Fatalf("init = %d (%s), want 0", code, se)
	}
	other := filepath.Join(home, "vol-other")
	os.Mkdir(other, 0o700)
	if code, _, se := kmsfs(t, home, "init", "--key", f.otherURI, other); code != exitOK {
		t.Fatalf("init --key %s = %d (%s), want 0", f.otherURI, code, se)
	}
	if err := os.WriteFile(f.pass, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.openPass, []byte("correct horse\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// swapKey puts the key file of another key where the volume's key file
// was, until the test ends.
func (f *exitFixture) swapKey(t *testing.T) {
	t.Helper()
	orig, err := os.ReadFile(f.key)
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(f.other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.key, other, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(f.key, orig, 0o600) })
}

// TestExitCodes checks every row of the exit code table in README.md
// ("Exit codes") through the built binary: the code, and the form of the
// message on stderr (checkErrorForm).
func TestExitCodes(t *testing.T) {
	f := newExitFixture(t)
	damaged := filepath.Join(f.home, "damaged")
	if out, err := exec.Command("cp", "-a", f.vol, damaged).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	conf := filepath.Join(damaged, "kmsfs.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-5] ^= 1
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, fuseErr := os.Stat("/dev/fuse")

	tests := []struct {
		name    string
		code    int
		setup   func(t *testing.T) // optional
		args    []string
		wantErr string // in stderr
	}{
		// 0: success.
		{"ok", exitOK, nil, []string{"version"}, ""},
		{"ok rewrap", exitOK, nil, []string{"rewrap", "--quiet", f.vol}, ""},

		// 1: any other error.
		{"init non-empty", exitError, nil, []string{"init", f.vol}, "already a kmsfs volume"},
		{"umount not mounted", exitError, nil, []string{"umount", f.mnt}, "not mounted"},
		{"passwd remove unprotected", exitError, nil, []string{"passwd", "--remove"}, "nothing to remove"},

		// 2: usage.
		{"no command", exitUsage, nil, nil, "Usage"},
		{"unknown command", exitUsage, nil, []string{"frobnicate"}, "unknown command"},
		{"unknown flag", exitUsage, nil, []string{"init", "--nope", f.empty}, "flag provided but not defined: --nope"},
		{"missing argument", exitUsage, nil, []string{"mount", f.vol}, "CIPHERDIR and MOUNTPOINT"},
		{"key URI unknown scheme", exitUsage, nil, []string{"init", "--key", "nosuch://x", f.empty}, "unknown scheme"},
		{"key URI unparsable", exitUsage, nil, []string{"init", "--key", "local://%zz/k", f.empty}, "bad key URI"},
		{"key URI relative local path", exitUsage, nil, []string{"init", "--key", "local://relative/key", f.empty}, "bad key URI"},
		{"key URI with credentials", exitUsage, nil, []string{"init", "--key", "alibaba-kms://ak:Hunter2@cn-hangzhou/key", f.empty}, "credentials do not belong"},
		{"key URI bad for its service", exitUsage, nil, []string{"init", "--key", "alibaba-kms://cn-hangzhou/a/b/c", f.empty}, "bad key URI"},
		{"rewrap bad key URI", exitUsage, nil, []string{"rewrap", "--add", "nosuch://x", f.vol}, "unknown scheme"},
		{"trust bad key URI", exitUsage, nil, []string{"trust", "--yes", "--key", "nosuch://x", f.vol}, "unknown scheme"},
		{"passphrase file for an unprotected key", exitUsage, nil, []string{"init", "--passphrase-file", f.pass, f.empty}, "is not used"},
		{"passphrase file for a cloud key", exitUsage, nil, []string{"init", "--key", "alibaba-kms://cn-hangzhou/key", "--passphrase-file", f.pass, f.empty}, "not a local key file"},
		{"passphrase asked without a terminal", exitUsage, nil, []string{"init", "--key", "local://" + filepath.Join(f.home, "new.key"), "--passphrase-file", "-", f.empty}, "there is none"},
		{"rewrap passphrase file no key needs", exitUsage, nil, []string{"rewrap", "--passphrase-file", f.pass, f.vol}, "is not used"},
		{"trust passphrase file no key needs", exitUsage, nil, []string{"trust", "--yes", "--passphrase-file", f.pass, f.vol}, "is not used"},
		{"passwd of a cloud key", exitUsage, nil, []string{"passwd", "--key", "alibaba-kms://cn-hangzhou/key"}, "not a local key file"},
		{"passwd old passphrase for an unprotected key", exitUsage, nil, []string{"passwd", "--passphrase-file", f.pass, "--new-passphrase-file", f.pass}, "is not used"},

		// 3: not a volume, or its configuration is damaged.
		{"not a volume", exitNotVolume, nil, []string{"rewrap", f.empty}, "not a kmsfs volume"},
		{"damaged configuration", exitNotVolume, nil, []string{"rewrap", damaged}, "damaged"},

		// 4: a key is unavailable.
		{"key file missing", exitKey, func(t *testing.T) {
			os.Rename(f.key, f.key+".moved")
			t.Cleanup(func() { os.Rename(f.key+".moved", f.key) })
		}, []string{"rewrap", f.vol}, "key not found"},
		{"key file open to others", exitKey, func(t *testing.T) {
			os.Chmod(f.key, 0o644)
			t.Cleanup(func() { os.Chmod(f.key, 0o600) })
		}, []string{"rewrap", f.vol}, "chmod 600"},
		{"passphrase file open to others", exitKey, nil, []string{"init", "--key", "local://" + filepath.Join(f.home, "new.key"), "--passphrase-file", f.openPass, f.empty}, "chmod 600 " + f.openPass},
		{"wrong key file", exitKey, f.swapKey, []string{"rewrap", f.vol}, "does not open this volume"},
		{"wrong key given", exitKey, func(t *testing.T) {
			os.Rename(f.key, f.key+".moved")
			t.Cleanup(func() { os.Rename(f.key+".moved", f.key) })
		}, []string{"rewrap", "--key", f.otherURI, f.vol}, "does not open this volume"},
		{"untrusted", exitKey, func(t *testing.T) {
			trust := filepath.Join(f.home, ".config", "kmsfs", "trust")
			os.Rename(trust, trust+".moved")
			t.Cleanup(func() { os.Rename(trust+".moved", trust) })
		}, []string{"rewrap", f.vol}, "kmsfs trust"},

		// 5: the mount failed.
		{"mount point missing", exitMount, nil, []string{"mount", f.vol, filepath.Join(f.home, "nope")}, "mount point"},
		{"mount point not a directory", exitMount, nil, []string{"mount", f.vol, f.pass}, "not a directory"},
	}
	if fuseErr == nil {
		tests = append(tests, struct {
			name    string
			code    int
			setup   func(t *testing.T)
			args    []string
			wantErr string
		}{"mount with a wrong key file", exitKey, f.swapKey, []string{"mount", f.vol, f.mnt}, "does not open this volume"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			code, _, se := kmsfs(t, f.home, tc.args...)
			if code != tc.code {
				t.Errorf("kmsfs %v = exit %d, want %d (stderr %q)", tc.args, code, tc.code, se)
			}
			if !strings.Contains(se, tc.wantErr) {
				t.Errorf("kmsfs %v stderr = %q, want it to contain %q", tc.args, se, tc.wantErr)
			}
			checkErrorForm(t, tc.args, code, se)
		})
	}
}

// checkErrorForm checks the form of what a command printed on stderr:
// nothing on success; otherwise "kmsfs: error: ..." on one line, then
// only hint lines "kmsfs: hint: ..." (or, for a usage error, the usage).
func checkErrorForm(t *testing.T, args []string, code int, stderr string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	switch {
	case code == exitOK:
		if stderr != "" {
			t.Errorf("kmsfs %v succeeded with stderr %q, want none", args, stderr)
		}
	case code == exitUsage && strings.HasPrefix(stderr, "kmsfs: an encrypted"):
		// The usage text itself.
	default:
		if !strings.HasPrefix(lines[0], "kmsfs: error: ") {
			t.Errorf("kmsfs %v stderr = %q, want it to start with \"kmsfs: error: \"", args, stderr)
		}
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, "kmsfs: hint: ") {
				t.Errorf("kmsfs %v stderr line %q, want one error line and hints", args, l)
			}
		}
		if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
			t.Errorf("kmsfs %v stderr = %q, want no panic", args, stderr)
		}
	}
}

// TestNoCredentialEchoed gives every command that takes a key URI one
// with a password in it, and checks that the password is never printed.
func TestNoCredentialEchoed(t *testing.T) {
	f := newExitFixture(t)
	const pw = "Hunter2Secret"
	for _, uri := range []string{
		"alibaba-kms://ak:" + pw + "@cn-hangzhou/key",
		"tencent-kms://ak:" + pw + "@ap-guangzhou/key",
		"huawei-kms://ak:" + pw + "@cn-north-4/key?project=p",
		"alibaba-kms://ak:" + pw + "%zz@cn-hangzhou/key",
		"alibaba-kms://ak:" + pw + "/x@cn-hangzhou/key",
		"alibaba-kms://cn-hangzhou/key?endpoint=https://ak:" + pw + "@kms.example",
		"alibaba-kms://cn-hangzhou/key?access_key_secret=" + pw,
		"local://ak:" + pw + "@/tmp/k",
		"nosuch://ak:" + pw + "@x/y",
	} {
		for _, args := range [][]string{
			{"init", "--key", uri, f.empty},
			{"mount", "--key", uri, f.vol, filepath.Join(f.home, "no-mount-point")},
			{"rewrap", "--add", uri, f.vol},
			{"rewrap", "--remove", uri, f.vol},
			{"trust", "--yes", "--key", uri, f.vol},
			{"passwd", "--key", uri},
		} {
			code, so, se := kmsfs(t, f.home, args...)
			if strings.Contains(so+se, pw) {
				t.Errorf("kmsfs %v printed the password: stdout %q, stderr %q", args, so, se)
			}
			// A URI that parses, with the password in a query parameter,
			// fails where the key is opened, and mount fails first on its
			// missing mount point: any error will do there.
			if code == exitOK || (args[0] == "init" || args[0] == "passwd") && code != exitUsage {
				t.Errorf("kmsfs %v = exit %d, want %d (stderr %q)", args, code, exitUsage, se)
			}
		}
	}
}

// TestPasswd adds, changes and removes the passphrase of the key of a
// volume, and checks that the volume keeps opening with it.
func TestPasswd(t *testing.T) {
	f := newExitFixture(t)
	second := filepath.Join(f.home, "second")
	if err := os.WriteFile(second, []byte("battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opens := func(t *testing.T, pass string) {
		t.Helper()
		args := []string{"rewrap", "--quiet", f.vol}
		if pass != "" {
			args = append(args, "--passphrase-file", pass)
		}
		if code, _, se := kmsfs(t, f.home, args...); code != exitOK {
			t.Fatalf("kmsfs %v = %d (%s), want 0: the volume no longer opens", args, code, se)
		}
	}
	keyBefore, _ := os.ReadFile(f.key)
	steps := []struct {
		name string
		args []string
		code int
		pass string // the key file's passphrase afterwards
	}{
		{"add", []string{"passwd", "--new-passphrase-file", f.pass}, exitOK, f.pass},
		{"old one wrong", []string{"passwd", "--passphrase-file", second, "--new-passphrase-file", second}, exitKey, f.pass},
		{"new file open to others", []string{"passwd", "--passphrase-file", f.pass, "--new-passphrase-file", f.openPass}, exitKey, f.pass},
		{"both new and remove", []string{"passwd", "--passphrase-file", f.pass, "--new-passphrase-file", second, "--remove"}, exitUsage, f.pass},
		{"no terminal for the old one", []string{"passwd", "--new-passphrase-file", second}, exitUsage, f.pass},
		{"no terminal for the new one", []string{"passwd", "--passphrase-file", f.pass}, exitUsage, f.pass},
		{"change", []string{"passwd", "--key", f.keyURI, "--passphrase-file", f.pass, "--new-passphrase-file", second}, exitOK, second},
		{"remove", []string{"passwd", "--passphrase-file", second, "--remove"}, exitOK, ""},
	}
	for _, st := range steps {
		before, _ := os.ReadFile(f.key)
		code, _, se := kmsfs(t, f.home, st.args...)
		if code != st.code {
			t.Fatalf("%s: kmsfs %v = %d (%s), want %d", st.name, st.args, code, se, st.code)
		}
		checkErrorForm(t, st.args, code, se)
		after, _ := os.ReadFile(f.key)
		if changed := !bytes.Equal(before, after); changed != (code == exitOK) {
			t.Errorf("%s: key file changed = %v, want %v", st.name, changed, code == exitOK)
		}
		if fi, err := os.Stat(f.key); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file mode = %v, %v, want 0600", st.name, fi, err)
		}
		opens(t, st.pass)
	}
	if after, _ := os.ReadFile(f.key); !bytes.Equal(after, keyBefore) {
		t.Errorf("key file after add and remove = %s, want the original %s (same key, no passphrase)", after, keyBefore)
	}
	if ents, _ := os.ReadDir(filepath.Dir(f.key)); len(ents) != 2 { // local.key and trust/
		t.Errorf("%s holds %d entries, want the key file and trust/ (no temporary files left)", filepath.Dir(f.key), len(ents))
	}
}

// ptyRun runs kmsfs with a new pseudo-terminal as its controlling
// terminal and stdin, stdout and stderr. Each time the output shows one
// more "passphrase" prompt, it types the next of answers. It returns the
// exit code and everything the terminal showed.
func ptyRun(t *testing.T, home string, answers []string, args ...string) (int, string) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening the pseudo-terminal: %v", err)
	}
	cmd := exec.Command(kmsfsBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME=")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	var mu sync.Mutex
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1024)
		for {
			k, err := ptmx.Read(buf)
			mu.Lock()
			out.Write(buf[:k])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < len(answers); {
		mu.Lock()
		prompts := strings.Count(out.String(), "passphrase for local key")
		mu.Unlock()
		if prompts > i {
			ptmx.Write([]byte(answers[i] + "\n"))
			i++
			continue
		}
		select {
		case <-done:
			i = len(answers) // it exited before asking everything
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("kmsfs %v: no prompt %d after 30 s; terminal: %q", args, i+1, out.String())
		}
	}
	err = cmd.Wait()
	<-done
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// TestNewPassphraseAskedTwice checks that a new passphrase typed on a
// terminal is asked twice, and that two different answers change nothing.
func TestNewPassphraseAskedTwice(t *testing.T) {
	home := t.TempDir()
	vol := filepath.Join(home, "vol")
	os.Mkdir(vol, 0o700)
	key := filepath.Join(home, ".config", "kmsfs", "local.key")

	code, out := ptyRun(t, home, []string{"one", "two"}, "init", "--passphrase-file", "-", vol)
	if code != exitError || !strings.Contains(out, "differ") || strings.Count(out, "new passphrase for local key") != 2 {
		t.Errorf("init --passphrase-file - with two different answers = %d, terminal %q; want exit %d, two prompts, and 'differ'", code, out, exitError)
	}
	if _, err := os.Stat(key); err == nil {
		t.Errorf("a key file was made although the passphrases differed")
	}
	if ents, _ := os.ReadDir(vol); len(ents) != 0 {
		t.Errorf("%s holds %d entries after a failed init, want none", vol, len(ents))
	}

	code, out = ptyRun(t, home, []string{"", ""}, "init", "--passphrase-file", "-", vol)
	if code != exitError || !strings.Contains(out, "empty") {
		t.Errorf("init --passphrase-file - with an empty answer = %d, terminal %q; want exit %d and 'empty'", code, out, exitError)
	}

	code, out = ptyRun(t, home, []string{"same", "same"}, "init", "--passphrase-file", "-", vol)
	if code != exitOK || strings.Count(out, "passphrase for local key") != 2 {
		t.Fatalf("init --passphrase-file - with the same answer twice = %d, terminal %q; want exit 0 after two prompts", code, out)
	}
	if b, _ := os.ReadFile(key); !bytes.Contains(b, []byte(`"kdf":"scrypt"`)) {
		t.Errorf("key file = %s, want it sealed", b)
	}

	// passwd: the old passphrase once, the new one twice.
	code, out = ptyRun(t, home, []string{"same", "new", "other"}, "passwd")
	if code != exitError || !strings.Contains(out, "differ") {
		t.Errorf("passwd with two different new passphrases = %d, terminal %q; want exit %d and 'differ'", code, out, exitError)
	}
	code, out = ptyRun(t, home, []string{"same", "new", "new"}, "passwd")
	if code != exitOK || strings.Count(out, "new passphrase for local key") != 2 {
		t.Fatalf("passwd on a terminal = %d, terminal %q; want exit 0 after the new passphrase was asked twice", code, out)
	}
	newPass := filepath.Join(home, "new")
	os.WriteFile(newPass, []byte("new\n"), 0o600)
	if code, _, se := kmsfs(t, home, "rewrap", "--quiet", "--passphrase-file", newPass, vol); code != exitOK {
		t.Errorf("rewrap with the new passphrase = %d (%s), want 0", code, se)
	}
}
