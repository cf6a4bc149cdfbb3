package main

import (
	"flag"
	"fmt"
	"strings"
)

// Mount options in the style of mount(8) ("-o ro,key=URI"), as given to
// "kmsfs mount -o" and to the mount helper (mount.kmsfs) by mount(8) and
// /etc/fstab. Each kmsfs option stands for a "kmsfs mount" flag; the
// generic options of mount(8) and fstab that concern mount(8), systemd or
// the kernel defaults kmsfs always uses are accepted and ignored; anything
// else is refused, so that a typo in fstab fails the mount instead of
// being silently dropped.

// mountValueOptions are the options NAME=VALUE and the flag each sets.
var mountValueOptions = map[string]string{
	"key":             "key",
	"log_file":        "log-file",
	"passphrase_file": "passphrase-file",
	"key_cache_ttl":   "key-cache-ttl",
	"key_cache_size":  "key-cache-size",
}

// mountFlagOptions are the options without a value and the flag
// argument each stands for. A later option overrides an earlier one
// (ro,rw is read-write).
var mountFlagOptions = map[string]string{
	"ro":             "--ro",
	"rw":             "--ro=false",
	"allow_other":    "--allow-other",
	"nonempty":       "--nonempty",
	"allow_rollback": "--allow-rollback",
	"noexec":         "--noexec",
	"exec":           "--noexec=false",
}

// mountIgnoredOptions are accepted and have no effect on kmsfs: they are
// read by mount(8), systemd or the boot scripts (auto, _netdev, nofail,
// user...; x-* and comment=* too), or say what kmsfs always does
// (nosuid, nodev, async, default_permissions), or concern access times,
// which are the backing files'.
var mountIgnoredOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true,
	"_netdev": true, "nofail": true, "loud": true, "silent": true,
	"nosuid": true, "nodev": true, "async": true, "default_permissions": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true,
	"strictatime": true, "nostrictatime": true, "diratime": true,
	"nodiratime": true, "lazytime": true, "nolazytime": true,
}

// mountRefusedOptions are generic options kmsfs cannot honour, with the
// reason given to the user.
var mountRefusedOptions = map[string]string{
	"suid":       "kmsfs mounts are always nosuid",
	"dev":        "kmsfs mounts are always nodev",
	"sync":       "synchronous mounts are not supported (fsync works)",
	"dirsync":    "synchronous mounts are not supported (fsync works)",
	"allow_root": "not supported; use allow_other",
	"remount":    "not supported; unmount and mount again",
}

// mountOptionFlag is one mount option and the flag argument it maps to.
type mountOptionFlag struct {
	option string // as given, e.g. "key=local:///k"
	flag   string // e.g. "--key=local:///k"
}

// mountOptionFlags maps a comma-separated list of mount options to
// "kmsfs mount" flag arguments. Unknown options are an error, unless
// sloppy (mount -s), when they are returned in ignored.
func mountOptionFlags(opts string, sloppy bool) (flags []mountOptionFlag, ignored []string, err error) {
	for _, o := range splitMountOptions(opts) {
		name, val, hasVal := strings.Cut(o, "=")
		if name == "comment" || strings.HasPrefix(name, "x-") {
			continue // for fstab readers (x-systemd.automount, x-gvfs-show...)
		}
		if f, ok := mountValueOptions[name]; ok {
			val = unquote(val)
			if val == "" {
				return nil, nil, fmt.Errorf("mount option %s needs a value (%s=...)", name, name)
			}
			flags = append(flags, mountOptionFlag{o, "--" + f + "=" + val})
			continue
		}
		known := mountIgnoredOptions[name] || mountFlagOptions[name] != ""
		if known && hasVal {
			return nil, nil, fmt.Errorf("mount option %s takes no value (got %q)", name, o)
		}
		if f, ok := mountFlagOptions[name]; ok {
			flags = append(flags, mountOptionFlag{o, f})
			continue
		}
		if known {
			continue
		}
		if why, ok := mountRefusedOptions[name]; ok {
			return nil, nil, fmt.Errorf("mount option %s: %s", name, why)
		}
		if sloppy {
			ignored = append(ignored, o)
			continue
		}
		return nil, nil, fmt.Errorf("unknown mount option %q (kmsfs options: %s)", o, mountOptionNames())
	}
	return flags, ignored, nil
}

// mountOptionNames lists the kmsfs mount options for error messages.
func mountOptionNames() string {
	return "ro, rw, allow_other, nonempty, allow_rollback, noexec, exec, key=URI, log_file=F, passphrase_file=F, key_cache_ttl=D, key_cache_size=N"
}

// splitMountOptions splits a mount option list at commas outside double
// quotes (key="a,b" is one option) and drops empty entries.
func splitMountOptions(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] == '"' {
			quoted = !quoted
		}
		if i == len(s) || (s[i] == ',' && !quoted) {
			if o := strings.TrimSpace(s[start:i]); o != "" {
				out = append(out, o)
			}
			start = i + 1
		}
	}
	return out
}

// unquote removes one pair of surrounding double quotes.
func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// applyMountOptions sets the flags of fl that the "-o" option lists in
// opts stand for, after the flags given as such (a later one wins).
func applyMountOptions(fl *flag.FlagSet, opts []string) int {
	for _, o := range opts {
		flags, _, err := mountOptionFlags(o, false)
		if err != nil {
			return usageError("%v", err)
		}
		for _, f := range flags {
			if err := fl.Parse([]string{f.flag}); err != nil {
				_, val, _ := strings.Cut(f.option, "=")
				return usageError("mount option %s: invalid value %q", f.option, val)
			}
		}
	}
	return 0
}
