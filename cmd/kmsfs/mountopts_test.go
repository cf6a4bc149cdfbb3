package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestMountOptionFlags(t *testing.T) {
	tests := []struct {
		name        string
		opts        string
		sloppy      bool
		wantFlags   []string
		wantIgnored []string
		wantErr     string
	}{
		{name: "empty", opts: ""},
		{name: "fstab defaults", opts: "defaults"},
		{name: "what mount(8) passes for defaults", opts: "rw", wantFlags: []string{"--ro=false"}},
		{name: "read-only", opts: "ro", wantFlags: []string{"--ro"}},
		{name: "later wins", opts: "ro,rw", wantFlags: []string{"--ro", "--ro=false"}},
		{name: "kmsfs flags", opts: "allow_other,nonempty,noexec",
			wantFlags: []string{"--allow-other", "--nonempty", "--noexec"}},
		{name: "exec", opts: "exec", wantFlags: []string{"--noexec=false"}},
		{name: "values", opts: "key=local:///etc/kmsfs/a.key,log_file=/var/log/kmsfs.log,passphrase_file=/etc/kmsfs/pass,key_cache_ttl=1m,key_cache_size=10",
			wantFlags: []string{"--key=local:///etc/kmsfs/a.key", "--log-file=/var/log/kmsfs.log",
				"--passphrase-file=/etc/kmsfs/pass", "--key-cache-ttl=1m", "--key-cache-size=10"}},
		{name: "repeated key", opts: "key=local:///a,key=local:///b",
			wantFlags: []string{"--key=local:///a", "--key=local:///b"}},
		{name: "value with = inside", opts: "key=huawei-kms://r/k?project=p",
			wantFlags: []string{"--key=huawei-kms://r/k?project=p"}},
		{name: "quoted value with commas", opts: `key="local:///a,b",ro`,
			wantFlags: []string{"--key=local:///a,b", "--ro"}},
		{name: "generic options ignored", opts: "defaults,auto,noauto,user,users,nouser,owner,group,_netdev,nofail,nosuid,nodev,async,relatime,noatime,default_permissions"},
		{name: "what mount(8) passes for user", opts: "rw,noexec,nosuid,nodev,user", wantFlags: []string{"--ro=false", "--noexec"}},
		{name: "x- and comment ignored", opts: "x-systemd.automount,x-systemd.requires=network-online.target,x-gvfs-show,comment=systemd.automount"},
		{name: "empty entries", opts: ",ro,,", wantFlags: []string{"--ro"}},
		{name: "unknown", opts: "ro,frobnicate", wantErr: `unknown mount option "frobnicate"`},
		{name: "unknown sloppy", opts: "ro,frobnicate,fsname=x", sloppy: true,
			wantFlags: []string{"--ro"}, wantIgnored: []string{"frobnicate", "fsname=x"}},
		{name: "refused even sloppy", opts: "suid", sloppy: true, wantErr: "always nosuid"},
		{name: "sync refused", opts: "sync", wantErr: "synchronous mounts are not supported"},
		{name: "remount refused", opts: "remount,ro", wantErr: "unmount and mount again"},
		{name: "key without value", opts: "key", wantErr: "needs a value"},
		{name: "key empty", opts: "key=", wantErr: "needs a value"},
		{name: "flag with value", opts: "ro=1", wantErr: "takes no value"},
		{name: "ignored option with value", opts: "defaults=yes", wantErr: "takes no value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			flags, ignored, err := mountOptionFlags(tc.opts, tc.sloppy)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("mountOptionFlags(%q) error = %v, want one containing %q", tc.opts, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("mountOptionFlags(%q) error = %v, want nil", tc.opts, err)
			}
			var got []string
			for _, f := range flags {
				got = append(got, f.flag)
			}
			if !reflect.DeepEqual(got, tc.wantFlags) {
				t.Errorf("mountOptionFlags(%q) flags = %q, want %q", tc.opts, got, tc.wantFlags)
			}
			if !reflect.DeepEqual(ignored, tc.wantIgnored) {
				t.Errorf("mountOptionFlags(%q) ignored = %q, want %q", tc.opts, ignored, tc.wantIgnored)
			}
		})
	}
}

// TestMountOptionsAsFlags checks that "kmsfs mount -o" sets the flags the
// options stand for, and names a bad value.
func TestMountOptionsAsFlags(t *testing.T) {
	code, _, se := kmsfs(t, t.TempDir(), "mount", "-o", "ro,frobnicate", "a", "b")
	if code != exitUsage || !strings.Contains(se, `unknown mount option "frobnicate"`) {
		t.Errorf("kmsfs mount -o ro,frobnicate = %d, %q; want %d and the unknown option named", code, se, exitUsage)
	}
	code, _, se = kmsfs(t, t.TempDir(), "mount", "-o", "key_cache_ttl=soon", "a", "b")
	if code != exitUsage || !strings.Contains(se, "key_cache_ttl=soon") {
		t.Errorf("kmsfs mount -o key_cache_ttl=soon = %d, %q; want %d and the option named", code, se, exitUsage)
	}
	// Valid options get as far as the mount point check.
	code, _, se = kmsfs(t, t.TempDir(), "mount", "-o", "ro,key=local:///nowhere,x-systemd.automount", "a", "/nonexistent-mount-point")
	if code != exitMount || !strings.Contains(se, "mount point") {
		t.Errorf("kmsfs mount -o ro,key=... a /nonexistent-mount-point = %d, %q; want %d (mount point missing)", code, se, exitMount)
	}
}

func TestMountHelperArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"fake mount", []string{"/c", "/m", "-f", "-o", "rw,key=local:///k,_netdev"}, exitOK},
		{"fake, flags together", []string{"/c", "/m", "-fnv", "-orw"}, exitOK},
		{"fake with type", []string{"/c", "/m", "-f", "-t", "fuse.kmsfs"}, exitOK},
		{"fake sloppy", []string{"/c", "/m", "-sf", "-o", "rw,frobnicate"}, exitOK},
		{"unknown option", []string{"/c", "/m", "-f", "-o", "rw,frobnicate"}, exitUsage},
		{"other type", []string{"/c", "/m", "-f", "-t", "ext4"}, exitUsage},
		{"namespace", []string{"/c", "/m", "-N", "1234"}, exitUsage},
		{"one argument", []string{"/c", "-f"}, exitUsage},
		{"-o without value", []string{"/c", "/m", "-o"}, exitUsage},
		{"unknown flag", []string{"/c", "/m", "-x"}, exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := runMountHelper(tc.args); got != tc.want {
				t.Errorf("runMountHelper(%q) = %d, want %d", tc.args, got, tc.want)
			}
		})
	}
	for _, name := range []string{"mount.kmsfs", "/sbin/mount.fuse.kmsfs", "/usr/sbin/mount.kmsfs"} {
		if !isMountHelper(name) {
			t.Errorf("isMountHelper(%q) = false, want true", name)
		}
	}
	for _, name := range []string{"kmsfs", "/usr/bin/kmsfs", "mount.fuse", "mount.kmsfs.old"} {
		if isMountHelper(name) {
			t.Errorf("isMountHelper(%q) = true, want false", name)
		}
	}
}
