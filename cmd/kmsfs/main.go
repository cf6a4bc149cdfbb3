// Command kmsfs creates, mounts and manages kmsfs encrypted directories.
//
// Run "kmsfs help" for usage. Exit codes are documented in exitcodes.go
// and in the README.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/awnumar/memguard"

	"github.com/kmsfs/kmsfs/keyring/secmem"
)

// version and commit name the release and the commit kmsfs was built
// from; the Makefile sets them with -ldflags "-X main.version=... -X
// main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

// Exit codes of every kmsfs command.
const (
	exitOK        = 0 // success
	exitError     = 1 // any other error
	exitUsage     = 2 // bad command line
	exitNotVolume = 3 // not a kmsfs volume, or its configuration is damaged
	exitKey       = 4 // a key could not be opened or used
	exitMount     = 5 // the mount itself failed (mount point, /dev/fuse)
)

// commands maps a subcommand name to its implementation. Files of this
// package add to it in init.
var commands = map[string]func(args []string) int{}

func init() {
	commands["init"] = runInit
	commands["mount"] = runMount
	commands["umount"] = runUmount
	commands["unmount"] = runUmount
	commands["version"] = runVersion
	commands["stats"] = runStats
	commands["rewrap"] = runRewrap
	commands["reencrypt"] = runReencrypt
}

const usage = `kmsfs: an encrypted directory whose file keys are held by a KMS

Usage:
    kmsfs init [--key URI]... [--block-size N] [--passphrase-file F] CIPHERDIR
    kmsfs mount [-f] [--ro] [--allow-other] [--nonempty] [--log-file F] [--key URI]... [-o OPTIONS] CIPHERDIR MOUNTPOINT
    kmsfs umount MOUNTPOINT
    kmsfs stats MOUNTPOINT
    kmsfs rewrap [--add URI]... [--remove URI]... CIPHERDIR
    kmsfs reencrypt [--restart] MOUNTPOINT [PATH]...
    kmsfs trust [--yes] [--key URI]... CIPHERDIR
    kmsfs passwd [--key URI] [--passphrase-file OLD] [--new-passphrase-file NEW | --remove]
    kmsfs info [--json] CIPHERDIR
    kmsfs fsck [--json] [--repair] CIPHERDIR
    kmsfs cat CIPHERDIR PATH
    kmsfs encrypt [--key URI]... [--block-size N] IN OUT
    kmsfs decrypt [--key URI]... IN OUT
    kmsfs kms-emulator [options]
    kmsfs version
    kmsfs COMMAND --help

CIPHERDIR holds the encrypted files; MOUNTPOINT shows them decrypted.
Keys are named by URI; the default is a local key file,
local://$HOME/.config/kmsfs/local.key, created by init if absent.

Exit codes: 0 ok, 1 error, 2 usage, 3 not a kmsfs volume or bad
configuration, 4 key unavailable, 5 mount failed, 6 damage found (fsck,
cat, decrypt).
`

func main() {
	execWithoutAsyncPreemption()
	if isMountHelper(os.Args[0]) {
		os.Exit(runMountHelper(os.Args[1:]))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	defer memguard.Purge()
	if err := hardenProcess(); err != nil {
		fmt.Fprintf(os.Stderr, "kmsfs: warning: %v\n", err)
	}
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Print(usage)
		return exitOK
	case "-v", "--version":
		return runVersion(nil)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		var names []string
		for k := range commands {
			names = append(names, k)
		}
		sort.Strings(names)
		return usageError("unknown command %q (commands: %s)", args[0], strings.Join(names, ", "))
	}
	return cmd(args[1:])
}

func runVersion(args []string) int {
	v, c := version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		// Built without the Makefile: "go install ...@v1.2.3" records the
		// module version, a build in a git checkout the commit.
		if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && c == "unknown" && len(s.Value) >= 7 {
				c = s.Value[:7]
			}
		}
	}
	fmt.Printf("kmsfs %s (commit %s, format version 3, reads 1 and 2)\n", v, c)
	// Whether key derivations run under runtime/secret (the Makefile
	// builds with GOEXPERIMENT=runtimesecret; docs/SECURITY.md).
	fmt.Printf("runtime/secret: %s\n", onOff(secmem.Erasing))
	return exitOK
}

// onOff returns "on" or "off".
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// errorf prints "kmsfs: error: ..." and returns code.
func errorf(code int, format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "kmsfs: error: "+format+"\n", a...)
	return code
}

func hintf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "kmsfs: hint: "+format+"\n", a...)
}

func usageError(format string, a ...any) int {
	errorf(exitUsage, format, a...)
	hintf("run 'kmsfs --help' for usage")
	return exitUsage
}

// flagDashes finds flag names in the flag package's messages.
var flagDashes = regexp.MustCompile(` -[A-Za-z][A-Za-z0-9-]*`)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// parseFlags parses flags anywhere among the arguments (before, between or
// after positional ones) and returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string, help string) ([]string, int, bool) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Print(help)
				return nil, exitOK, false
			}
			// The flag package names flags with one dash; kmsfs documents
			// them with two (one-letter ones with one).
			msg := flagDashes.ReplaceAllStringFunc(err.Error(), func(m string) string {
				if len(m) > 3 { // " -xy..." is a long flag
					return m[:1] + "-" + m[1:]
				}
				return m
			})
			return nil, usageError("%s", msg), false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
