// Command mangen writes the man page and the bash and zsh completions of
// kmsfs, generated from the help texts of a built kmsfs binary, so that
// they say what the binary says:
//
//	go run ./cmd/kmsfs/internal/mangen [-o FILE] man|bash|zsh bin/kmsfs
//
// It reads "kmsfs help" for the commands (the "kmsfs NAME ..." lines of
// its Usage block), "kmsfs NAME --help" for each command's text and
// flags, "kmsfs version" for the release, and the mount helper's help
// (the binary run as mount.kmsfs). "make install" runs it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

func main() {
	out := flag.String("o", "", "write to this file instead of standard output")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: mangen [-o FILE] man|bash|zsh KMSFS-BINARY")
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	h, err := readHelp(flag.Arg(1))
	if err != nil {
		fmt.Fprintf(os.Stderr, "mangen: %v\n", err)
		os.Exit(1)
	}
	var text string
	switch flag.Arg(0) {
	case "man":
		text = manPage(h)
	case "bash":
		text = bashCompletion(h)
	case "zsh":
		text = zshCompletion(h)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if *out == "" {
		fmt.Print(text)
		return
	}
	if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "mangen: %v\n", err)
		os.Exit(1)
	}
}

// help is what a kmsfs binary says about itself.
type help struct {
	version  string    // the release, "0.1.0-dev"
	usage    string    // "kmsfs help"
	commands []command // in the order of the Usage block
	helper   string    // the mount helper's --help
}

// command is one kmsfs command and its help text ("" if it has none).
type command struct {
	name, help string
}

// readHelp runs the kmsfs binary bin for its help texts.
func readHelp(bin string) (*help, error) {
	run := func(argv0 string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Args[0] = argv0
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
		}
		return string(out), nil
	}
	h := &help{}
	v, err := run("kmsfs", "version")
	if err != nil {
		return nil, err
	}
	if f := strings.Fields(v); len(f) >= 2 {
		h.version = f[1]
	}
	if h.usage, err = run("kmsfs", "help"); err != nil {
		return nil, err
	}
	for _, name := range commandNames(h.usage) {
		text, err := run("kmsfs", name, "--help")
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(text, "Usage:") {
			text = "" // "kmsfs version" has no help of its own
		}
		h.commands = append(h.commands, command{name, text})
	}
	if h.helper, err = run("mount.kmsfs", "--help"); err != nil {
		return nil, err
	}
	return h, nil
}

// commandLine matches a command's line in the Usage block of "kmsfs help".
var commandLine = regexp.MustCompile(`^\s+kmsfs ([a-z][a-z0-9-]*)`)

// commandNames returns the commands of the Usage block of the usage text.
func commandNames(usage string) []string {
	var names []string
	seen := map[string]bool{}
	for _, line := range usageBlock(usage) {
		if m := commandLine.FindStringSubmatch(line); m != nil && !seen[m[1]] {
			seen[m[1]] = true
			names = append(names, m[1])
		}
	}
	return names
}

// usageBlock returns the lines after "Usage:" up to the first blank line.
func usageBlock(usage string) []string {
	lines := strings.Split(usage, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == "Usage:" {
			var block []string
			for _, b := range lines[i+1:] {
				if strings.TrimSpace(b) == "" {
					break
				}
				block = append(block, b)
			}
			return block
		}
	}
	return nil
}

var (
	// flagName matches a flag name where options are listed.
	flagName = regexp.MustCompile(`(?:^|[\s,|])(--?[A-Za-z][A-Za-z0-9-]*)`)
	// bracketFlag matches a flag in a synopsis: "[--key URI]".
	bracketFlag = regexp.MustCompile(`\[(--?[A-Za-z][A-Za-z0-9-]*)`)
	// columnGap separates an option's names from its description.
	columnGap = regexp.MustCompile(`\s{2,}`)
)

// flagsOf returns the flags a command's help text names: in its synopsis
// (the text before the first blank line) and at the start of its option
// lines, plus --help.
func flagsOf(text string) []string {
	var flags []string
	seen := map[string]bool{}
	add := func(f string) {
		if !seen[f] {
			seen[f] = true
			flags = append(flags, f)
		}
	}
	synopsis, rest, _ := strings.Cut(text, "\n\n")
	for _, m := range bracketFlag.FindAllStringSubmatch(synopsis, -1) {
		add(m[1])
	}
	for _, line := range strings.Split(rest, "\n") {
		t := strings.TrimSpace(line)
		if !strings.HasPrefix(t, "-") {
			continue
		}
		names := columnGap.Split(t, 2)[0]
		for _, m := range flagName.FindAllStringSubmatch(names, -1) {
			add(m[1])
		}
	}
	add("--help")
	return flags
}

// roff escapes text for a man page: backslashes, minus signs (so that
// flags copied from the page work), and a dot or quote starting a line.
func roff(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		line = strings.ReplaceAll(line, `\`, `\e`)
		line = strings.ReplaceAll(line, "-", `\-`)
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
			line = `\&` + line
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// preformatted is text kept as it is laid out, in a man page.
func preformatted(text string) string {
	return ".nf\n" + roff(text) + ".fi\n"
}

// paragraphs is text filled by the man page reader, one .PP per
// paragraph of the source.
func paragraphs(text string) string {
	var b strings.Builder
	for _, p := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if p = strings.TrimSpace(p); p != "" {
			b.WriteString(".PP\n" + roff(p))
		}
	}
	return b.String()
}

// manPage returns kmsfs(1).
func manPage(h *help) string {
	var b strings.Builder
	b.WriteString(`.\" kmsfs(1), generated by cmd/kmsfs/internal/mangen from the help texts of kmsfs; do not edit.` + "\n")
	fmt.Fprintf(&b, ".TH KMSFS 1 \"\" \"kmsfs %s\" \"kmsfs manual\"\n", strings.ReplaceAll(h.version, `"`, ""))
	title, rest, _ := strings.Cut(h.usage, "\n")
	b.WriteString(".SH NAME\n")
	b.WriteString(roff("kmsfs - " + strings.TrimPrefix(title, "kmsfs: ")))
	b.WriteString(".SH SYNOPSIS\n")
	var synopsis []string
	for _, l := range usageBlock(h.usage) {
		synopsis = append(synopsis, strings.TrimSpace(l))
	}
	b.WriteString(preformatted(strings.Join(synopsis, "\n")))
	b.WriteString(".SH DESCRIPTION\n")
	// The usage text after its Usage block.
	if _, after, ok := strings.Cut(rest, "Usage:"); ok {
		if i := strings.Index(after, "\n\n"); i >= 0 {
			b.WriteString(paragraphs(after[i:]))
		}
	}
	b.WriteString(".SH COMMANDS\n")
	for _, c := range h.commands {
		if c.help == "" {
			continue
		}
		fmt.Fprintf(&b, ".SS \"kmsfs %s\"\n", c.name)
		b.WriteString(preformatted(c.help))
	}
	b.WriteString(".SH \"MOUNT HELPER AND FSTAB\"\n")
	b.WriteString(paragraphs(`The kmsfs binary is also the mount(8) helper: installed as
/sbin/mount.fuse.kmsfs (and /sbin/mount.kmsfs), it mounts volumes for
"mount -t fuse.kmsfs" and for /etc/fstab lines of type fuse.kmsfs. With the
fstab option x-systemd.automount, systemd mounts the volume on first
access instead of at boot.`))
	b.WriteString(preformatted(h.helper))
	b.WriteString(".SH SERVICES\n")
	b.WriteString(paragraphs(`The systemd unit template kmsfs@.service runs "kmsfs mount --foreground"
as a service of Type=notify: kmsfs tells systemd when the mount is ready
(READY=1) and when it unmounts (STOPPING=1). The instance is the escaped
mount point (systemd-escape --path); /etc/kmsfs/INSTANCE.conf sets
KMSFS_CIPHERDIR and KMSFS_OPTIONS.

A server in the background (kmsfs mount without -f) without --log-file
logs to syslog, or to $XDG_STATE_HOME/kmsfs/MOUNTPOINT.log
(~/.local/state/kmsfs) where there is no syslog; a server in the
foreground logs to its standard error. The log has one line per damaged
file or block, refused key and key service failure, naming the file;
never keys or contents.`))
	b.WriteString(".SH FILES\n")
	b.WriteString(preformatted(`~/.config/kmsfs/local.key       the default local key
~/.config/kmsfs/trust/          the keys this user trusts, per volume
CIPHERDIR/kmsfs.conf            the volume's configuration
/etc/kmsfs/INSTANCE.conf        settings of kmsfs@INSTANCE.service`))
	b.WriteString(".SH \"SEE ALSO\"\n")
	b.WriteString("mount(8), fstab(5), systemd.mount(5), systemd.automount(5), fusermount3(1)\n")
	return b.String()
}

// bashCompletion returns the bash completion of kmsfs.
func bashCompletion(h *help) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# bash completion for kmsfs %s, generated by cmd/kmsfs/internal/mangen
# from the help texts of kmsfs; do not edit.

_kmsfs() {
	local cur=${COMP_WORDS[COMP_CWORD]} flags=
	if ((COMP_CWORD == 1)); then
		COMPREPLY=($(compgen -W "%s help --help --version" -- "$cur"))
		return
	fi
	case ${COMP_WORDS[1]} in
`, h.version, strings.Join(names(h), " "))
	for _, c := range h.commands {
		fmt.Fprintf(&b, "\t%s) flags=\"%s\" ;;\n", c.name, strings.Join(flagsOf(c.help), " "))
	}
	b.WriteString(`	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	fi
}
complete -o default -F _kmsfs kmsfs
`)
	return b.String()
}

// zshCompletion returns the zsh completion of kmsfs (the file _kmsfs).
func zshCompletion(h *help) string {
	var b strings.Builder
	fmt.Fprintf(&b, `#compdef kmsfs
# zsh completion for kmsfs %s, generated by cmd/kmsfs/internal/mangen
# from the help texts of kmsfs; do not edit.

_kmsfs() {
	local -a flags
	if (( CURRENT == 2 )); then
		compadd -- %s help
		return
	fi
	case $words[2] in
`, h.version, strings.Join(names(h), " "))
	for _, c := range h.commands {
		fmt.Fprintf(&b, "\t%s) flags=(%s) ;;\n", c.name, strings.Join(flagsOf(c.help), " "))
	}
	b.WriteString(`	esac
	if [[ $PREFIX == -* ]]; then
		compadd -- $flags
	else
		_files
	fi
}

_kmsfs "$@"
`)
	return b.String()
}

// names returns the command names.
func names(h *help) []string {
	var n []string
	for _, c := range h.commands {
		n = append(n, c.name)
	}
	return n
}
