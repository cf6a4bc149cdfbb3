package main

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
)

// The kmsfs binary is also the mount(8) helper: "make install" links
// /sbin/mount.fuse.kmsfs and /sbin/mount.kmsfs to it, and mount(8) runs
// /sbin/mount.TYPE for "mount -t TYPE" and fstab lines of that type.

// mountHelperNames are the names under which kmsfs acts as the helper.
var mountHelperNames = map[string]bool{"mount.fuse.kmsfs": true, "mount.kmsfs": true}

// isMountHelper reports whether argv0 names the mount helper.
func isMountHelper(argv0 string) bool {
	return mountHelperNames[filepath.Base(argv0)]
}

const mountHelperHelp = `Usage: mount.kmsfs CIPHERDIR MOUNTPOINT [-fnsv] [-o OPTIONS] [-t fuse.kmsfs]

The mount(8) helper of kmsfs, run by "mount -t fuse.kmsfs CIPHERDIR
MOUNTPOINT -o OPTIONS" and for /etc/fstab lines of type fuse.kmsfs, e.g.

    /srv/cipher  /srv/plain  fuse.kmsfs  defaults,key=local:///etc/kmsfs/srv.key,_netdev  0  0

It runs "kmsfs mount" with the flags the options stand for and returns
once the mount is ready, with the exit codes of kmsfs mount.

Options (also accepted by "kmsfs mount -o"):
    ro, rw                    read-only or read-write (default rw)
    allow_other               --allow-other
    nonempty                  --nonempty
    noexec, exec              --noexec (default exec)
    key=URI                   --key URI (repeatable)
    log_file=F                --log-file F
    passphrase_file=F         --passphrase-file F
    key_cache_ttl=D           --key-cache-ttl D
    key_cache_size=N          --key-cache-size N
Accepted and ignored: defaults, auto, noauto, user, users, nouser, owner,
group, _netdev, nofail, nosuid, nodev, async, default_permissions, the
access time options (atime, noatime, relatime...), comment=... and x-*
(x-systemd.automount...). Any other option fails the mount.

Flags (set by mount(8)):
    -f    fake: check the options, do not mount
    -s    sloppy: ignore unknown options (with a warning)
    -n, -v
          accepted and ignored
`

// runMountHelper runs the helper. mount(8) calls it as
// "mount.TYPE SPEC DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t TYPE]".
func runMountHelper(args []string) int {
	name := filepath.Base(os.Args[0])
	helperUsage := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "%s: error: "+format+"\n", append([]any{name}, a...)...)
		fmt.Fprintf(os.Stderr, "%s: hint: run '%s --help' for usage\n", name, name)
		return exitUsage
	}
	var pos, opts []string
	fake, sloppy := false, false
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func() (string, bool) {
			if len(a) > 2 {
				return a[2:], true // -oOPTIONS
			}
			if i+1 < len(args) {
				i++
				return args[i], true
			}
			return "", false
		}
		switch {
		case a == "-h" || a == "--help":
			fmt.Print(mountHelperHelp)
			return exitOK
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-o"):
			v, ok := value()
			if !ok {
				return helperUsage("-o needs a list of options")
			}
			opts = append(opts, v)
		case strings.HasPrefix(a, "-t"):
			v, ok := value()
			if !ok {
				return helperUsage("-t needs a file system type")
			}
			if v != "fuse.kmsfs" && v != "kmsfs" {
				return helperUsage("file system type %q is not kmsfs's (fuse.kmsfs)", v)
			}
		case strings.HasPrefix(a, "-N"):
			return helperUsage("-N (mount in another namespace) is not supported")
		case len(a) > 1 && a[0] == '-':
			for _, c := range a[1:] {
				switch c {
				case 'f':
					fake = true
				case 's':
					sloppy = true
				case 'n', 'v':
				default:
					return helperUsage("unknown flag -%c", c)
				}
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return helperUsage("takes CIPHERDIR and MOUNTPOINT, got %d arguments", len(pos))
	}
	flags, ignored, err := mountOptionFlags(strings.Join(opts, ","), sloppy)
	if err != nil {
		return helperUsage("%v", err)
	}
	if len(ignored) > 0 {
		fmt.Fprintf(os.Stderr, "%s: warning: ignoring unknown mount options %s (sloppy mount)\n", name, strings.Join(ignored, ","))
	}
	if fake {
		return exitOK
	}
	ensureHome()
	mountArgs := []string{"mount"}
	for _, f := range flags {
		mountArgs = append(mountArgs, f.flag)
	}
	return run(append(mountArgs, "--", pos[0], pos[1]))
}

// ensureHome sets $HOME from the user database when it is unset, as it
// is for mounts made at boot: kmsfs finds its trust records and default
// key under ~/.config/kmsfs.
func ensureHome() {
	if os.Getenv("HOME") != "" {
		return
	}
	if u, err := user.Current(); err == nil && u.HomeDir != "" {
		os.Setenv("HOME", u.HomeDir)
	}
}
