package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestFlagsOf(t *testing.T) {
	tests := []struct {
		name, help string
		want       []string
	}{
		{"no options", "Usage: kmsfs umount MOUNTPOINT\n\nUnmounts.\n", []string{"--help"}},
		{"synopsis and option lines", `Usage: kmsfs x [--key URI]... [-q] DIR
           [--more N]

Does x. Mentions --not-a-flag in prose.

Options:
    -k, --key URI             a key (see --other)
        --ro                  read-only
    --alibaba ID:SECRET, --tencent ID:SECRET
                      credentials
    -o OPTIONS                options
`, []string{"--key", "-q", "--more", "-k", "--ro", "--alibaba", "--tencent", "-o", "--help"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := flagsOf(tc.help); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("flagsOf = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCommandNames(t *testing.T) {
	usage := `kmsfs: an encrypted directory

Usage:
    kmsfs init [--key URI]... CIPHERDIR
    kmsfs mount CIPHERDIR MOUNTPOINT
    kmsfs kms-emulator [options]
    kmsfs mount --again
    kmsfs COMMAND --help

Not usage:
    kmsfs other
`
	if got, want := commandNames(usage), []string{"init", "mount", "kms-emulator"}; !reflect.DeepEqual(got, want) {
		t.Errorf("commandNames = %q, want %q", got, want)
	}
}

func TestRoff(t *testing.T) {
	got := roff(".dot\n'quote\nC:\\path --flag\n")
	want := "\\&.dot\n\\&'quote\nC:\\epath \\-\\-flag\n"
	if got != want {
		t.Errorf("roff = %q, want %q", got, want)
	}
}

// TestGenerated runs the generator on a real kmsfs binary and checks the
// man page (with groff, if installed) and the completions (with bash).
func TestGenerated(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "kmsfs")
	if out, err := exec.Command("go", "build", "-o", bin, "../..").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	h, err := readHelp(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.commands) < 5 {
		t.Fatalf("readHelp found commands %q, want those of kmsfs help", names(h))
	}
	man := manPage(h)
	if !strings.HasPrefix(man, `.\"`) || !strings.Contains(man, "\n.TH KMSFS 1 ") {
		t.Errorf("man page does not start with a comment and .TH:\n%.200s", man)
	}
	for _, c := range h.commands {
		if c.help != "" && !strings.Contains(man, `.SS "kmsfs `+c.name+`"`) {
			t.Errorf("man page has no section for kmsfs %s", c.name)
		}
	}
	if !strings.Contains(man, `x\-systemd.automount`) || !strings.Contains(man, `key_cache_ttl`) {
		t.Errorf("man page lacks the mount helper's options")
	}
	if groff, err := exec.LookPath("groff"); err == nil {
		cmd := exec.Command(groff, "-man", "-ww", "-z")
		cmd.Stdin = strings.NewReader(man)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff -man -ww -z = %v, %s; want no warnings", err, out)
		}
	}

	bashFile := filepath.Join(t.TempDir(), "kmsfs.bash")
	if err := os.WriteFile(bashFile, []byte(bashCompletion(h)), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		script := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _kmsfs; echo "${COMPREPLY[*]}"`
		out, err := exec.Command("bash", append([]string{"-c", script, "bash", bashFile}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %q: %v\n%s", words, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete("kmsfs", "mo"); got != "mount" {
		t.Errorf("bash completion of 'kmsfs mo' = %q, want mount", got)
	}
	if got := complete("kmsfs", "mount", "--allow-o"); got != "--allow-other" {
		t.Errorf("bash completion of 'kmsfs mount --allow-o' = %q, want --allow-other", got)
	}
	if got := complete("kmsfs", "init", "--block"); got != "--block-size" {
		t.Errorf("bash completion of 'kmsfs init --block' = %q, want --block-size", got)
	}

	zsh := zshCompletion(h)
	if !strings.HasPrefix(zsh, "#compdef kmsfs\n") {
		t.Errorf("zsh completion does not start with #compdef kmsfs")
	}
	if z, err := exec.LookPath("zsh"); err == nil {
		cmd := exec.Command(z, "-n")
		cmd.Stdin = strings.NewReader(zsh)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
	}
}
