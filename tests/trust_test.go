package tests

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
	kmsvolume "github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
)

// Attacks by someone who holds only the backing storage, through a real
// mount: key URIs written into the volume must never be trusted by
// themselves (docs/SECURITY.md, "Trusted keys").

// forge writes a kmsfs file with content plain at path, whose data key is
// wrapped by the attacker's local key file keyPath and whose one slot
// names slotURI (by default the attacker's key), for volume volID.
// copySize is that of forgedFile: 0 for a version-1 header (kmsfs.conf,
// the files of format version 2), the volume's header copy size for a
// regular file of a version-3 volume (the attacker copies it from a
// file of the volume, see backingCopySize), so that the file is refused
// for its key slot, not for its layout.
func forge(t *testing.T, path, keyPath, slotURI, volID string, copySize int, plain []byte) {
	t.Helper()
	ctx := context.Background()
	reg := keyring.NewRegistry(local.Register)
	kr, err := reg.Open(ctx, local.URI(keyPath), keyring.Options{Create: true})
	if err != nil {
		t.Fatalf("the attacker's key: %v", err)
	}
	encCtx := kmsvolume.EncryptionContext(volID)
	dk, wrapped, err := kr.GenerateDataKey(ctx, encCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Destroy()
	if slotURI == "" {
		slotURI = local.URI(keyPath)
	}
	b := forgedFile(t, copySize, []header.Slot{{URI: slotURI, Context: encCtx, Wrapped: wrapped}}, dk.Bytes(), plain)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// forgedFile returns a kmsfs file holding plain (block size 4096) under
// the data key dk, with a fresh file ID and the key slots slots. With
// copySize 0 it has a version-1 header and blocks (docs/FORMAT.md,
// "Header", "Blocks"): kmsfs.conf, or a regular file of format version 2.
// Otherwise it is a regular file of version 3 with copies of copySize
// bytes ("Regular files, version 3"), its content inline, which plain must
// be short enough for.
func forgedFile(t *testing.T, copySize int, slots []header.Slot, dk, plain []byte) []byte {
	t.Helper()
	var fileID [16]byte
	rand.Read(fileID[:])
	var hdr []byte
	var err error
	if copySize == 0 {
		hdr, err = header.New(12, fileID, slots, dk)
	} else {
		hdr, err = header.NewV3(12, copySize, fileID, slots, dk)
	}
	if err != nil {
		t.Fatal(err)
	}
	ck := make([]byte, 32)
	if err := header.Derive(ck, dk, fileID, header.ContentKey); err != nil {
		t.Fatal(err)
	}
	if copySize == 0 {
		c, err := blockcipher.New(ck, fileID, blockcipher.Layout{BlockSize: 4096, DataOffset: header.Size})
		if err != nil {
			t.Fatal(err)
		}
		return append(hdr, c.SealBlocks(nil, plain, 0)...)
	}
	c, err := blockcipher.New3(ck, fileID, 4096)
	if err != nil {
		t.Fatal(err)
	}
	l, err := blockcipher.NewLayout3(4096, len(hdr))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(plain)) > l.InlineMax() {
		t.Fatalf("forgedFile: %d bytes do not fit inline (at most %d)", len(plain), l.InlineMax())
	}
	if len(plain) == 0 {
		return hdr
	}
	return c.SealInline(hdr, plain)
}

// backingCopySize returns the header copy size C in the preamble of the
// backing file p: the volume's for a regular file of format version 3, 0
// for a file with a version-1 header.
func backingCopySize(t *testing.T, p string) int {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	pre, err := header.ParsePreamble(b)
	if err != nil {
		t.Fatalf("preamble of %s: %v", p, err)
	}
	return int(pre.CopySize)
}

// volumeID is the ID of v's volume (from its configuration's key slots).
func (v *volume) volumeID(t *testing.T) string {
	t.Helper()
	id, err := kmsvolume.PeekVolumeID(v.cipherDir)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestForgedConfiguration replaces the configuration with one of the
// same volume ID whose only key slot (and new-file key) is the
// attacker's, kept in the backing directory under a name the mount
// hides. The mount must refuse it: the attacker's key is not trusted.
func TestForgedConfiguration(t *testing.T) {
	v := newVolume(t, notMounted())
	id := v.volumeID(t)
	attackerKey := v.backing("kmsfs.conf.tmp")
	cfg, _ := json.Marshal(map[string]any{"format": "kmsfs", "version": 1, "volume_id": id, "block_size": 4096,
		"keys": []string{local.URI(attackerKey)}, "data_key_reuse_files": 1, "data_key_reuse_seconds": 1})
	forge(t, v.backing(kmsvolume.ConfigName), attackerKey, "", id, 0, cfg) // a version-1 header, as every kmsfs.conf
	r := v.kmsfs(v.mountCommand()...)
	if r.code != exitNoKey || !strings.Contains(r.stderr, "trusted") {
		if r.code == exitOK {
			v.mounted = true
		}
		t.Fatalf("mount with a forged configuration: %v\nwant exit %d and a message about untrusted keys", r, exitNoKey)
	}
}

// TestForgedFile puts a file whose key slot names the attacker's key
// into a mounted volume: it must open with EACCES, say why in the log,
// and leave the volume's own files readable.
func TestForgedFile(t *testing.T) {
	v := newVolume(t)
	want := pattern("genuine", 5000)
	writeFile(t, v.path("genuine"), want)
	forge(t, v.backing("forged"), filepath.Join(v.dir, "attacker.key"), "", v.volumeID(t), backingCopySize(t, v.backing("genuine")), []byte("attacker's content"))
	_, err := os.ReadFile(v.path("forged"))
	if errnoOf(err) != syscall.EACCES {
		t.Errorf("ReadFile(forged) = %v, want EACCES", err)
	}
	if got, err := os.ReadFile(v.path("genuine")); err != nil || string(got) != string(want) {
		t.Errorf("ReadFile(genuine) = %d bytes, %v; want the file", len(got), err)
	}
	if l := v.log(); !strings.Contains(l, "forged") || !strings.Contains(l, "trusted") {
		t.Errorf("daemon log = %q, want a line naming forged and the untrusted key", l)
	}
}

// TestUntrustedEndpoint puts a file whose key slot names a cloud key
// with an endpoint of the attacker's: no request may reach that
// endpoint, and the file opens with EACCES.
func TestUntrustedEndpoint(t *testing.T) {
	v := newVolume(t)
	// A file of the volume, to copy the layout of its files from.
	writeFile(t, v.path("genuine"), []byte("genuine"))
	copySize := backingCopySize(t, v.backing("genuine"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var hits atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			c.Close()
		}
	}()
	for _, slot := range []string{
		"alibaba-kms://cn-hangzhou/key-attacker?endpoint=http://" + ln.Addr().String(),
		"tencent-kms://ap-guangzhou/key-attacker?endpoint=http://" + ln.Addr().String(),
		"huawei-kms://cn-north-4/key-attacker?project=" + cloudHwProject + "&endpoint=http://" + ln.Addr().String(),
	} {
		name := strings.SplitN(slot, ":", 2)[0]
		forge(t, v.backing(name), filepath.Join(v.dir, "attacker.key"), slot, v.volumeID(t), copySize, []byte("attacker's content"))
		_, err := os.ReadFile(v.path(name))
		if errnoOf(err) != syscall.EACCES {
			t.Errorf("ReadFile(%s) = %v, want EACCES", name, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the attacker's endpoint got %d connections, want 0", n)
	}
}

// TestFirstSight mounts a volume on a machine (a HOME) that has never
// seen it: refused with a hint, until "kmsfs trust" records its keys
// (or a key is named with --key).
func TestFirstSight(t *testing.T) {
	v := newVolume(t, notMounted())
	trustDir := filepath.Join(v.home, ".config", "kmsfs", "trust")
	if err := os.RemoveAll(trustDir); err != nil {
		t.Fatal(err)
	}
	r := v.kmsfs(v.mountCommand()...)
	if r.code != exitNoKey || !strings.Contains(r.stderr, "kmsfs trust") {
		if r.code == exitOK {
			v.mounted = true
		}
		t.Fatalf("mount of a volume never trusted here: %v\nwant exit %d and a hint to run kmsfs trust", r, exitNoKey)
	}
	if r := v.kmsfs("trust", v.cipherDir); r.code != exitUsage || !strings.Contains(r.stdout, v.keyURI) {
		t.Errorf("trust without a terminal or --yes: %v\nwant exit %d after showing %s", r, exitUsage, v.keyURI)
	}
	if r := v.kmsfs("trust", "--yes", v.cipherDir); r.code != exitOK {
		t.Fatalf("trust --yes: %v\nwant exit 0", r)
	}
	v.mount()
	writeFile(t, v.path("a"), []byte("trusted now"))
	v.unmount()

	// --key alone also works, without a record.
	if err := os.RemoveAll(trustDir); err != nil {
		t.Fatal(err)
	}
	v.mountArgs = append(v.mountArgs, "--key", v.keyURI)
	v.mount()
	if got, err := os.ReadFile(v.path("a")); err != nil || string(got) != "trusted now" {
		t.Errorf("ReadFile(a) with --key = %q, %v; want the file", got, err)
	}
}

// TestRemovedKeyNotReused removes a key with rewrap, then restores the
// configuration from before: new files must not be wrapped under the
// removed key again.
func TestRemovedKeyNotReused(t *testing.T) {
	second := local.URI(filepath.Join(t.TempDir(), "second.key"))
	v := newVolume(t, notMounted(), withInitArgs("--key", second))
	old, err := os.ReadFile(v.backing(kmsvolume.ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if r := v.kmsfs("rewrap", "--remove", second, v.cipherDir); r.code != exitOK {
		t.Fatalf("%v\nwant exit 0", r)
	}
	if err := os.WriteFile(v.backing(kmsvolume.ConfigName), old, 0o600); err != nil {
		t.Fatal(err)
	}
	// Even accepted on purpose (an older epoch is refused otherwise, see
	// TestConfigRollbackRefused), it wraps nothing under the removed key.
	v.mountArgs = append(v.mountArgs, "--allow-rollback")
	v.mount()
	writeFile(t, v.path("new"), []byte("after the restore"))
	h := backingHeader(t, v.backing("new"))
	for _, uris := range slotURIs(h) {
		for _, u := range uris {
			if u == second {
				t.Errorf("slots of a new file = %v, want no slot of the removed key %s", uris, second)
			}
		}
	}
	if l := v.log(); !strings.Contains(l, second) {
		t.Errorf("daemon log = %q, want a line about the removed key %s in the restored configuration", l, second)
	}
}

// TestRewrapUnknownRemove checks that removing a key the volume does not
// have fails before anything changes.
func TestRewrapUnknownRemove(t *testing.T) {
	v := newVolume(t, notMounted())
	before, _ := os.ReadFile(v.backing(kmsvolume.ConfigName))
	r := v.kmsfs("rewrap", "--remove", "local:///nonexistent.key", v.cipherDir)
	if r.code == exitOK || !strings.Contains(r.stderr, "not a key of this volume") {
		t.Errorf("rewrap --remove of an unknown key: %v\nwant a failure that says so", r)
	}
	after, _ := os.ReadFile(v.backing(kmsvolume.ConfigName))
	if string(before) != string(after) {
		t.Errorf("the configuration changed after a failed rewrap")
	}
}

// TestConfigRollbackRefused restores the configuration from before a
// rewrap: the mount refuses it (exit 3, saying why) until the user
// overrides it explicitly; a running mount refuses to reload it.
func TestConfigRollbackRefused(t *testing.T) {
	second := local.URI(filepath.Join(t.TempDir(), "second.key"))
	v := newVolume(t, notMounted())
	old, err := os.ReadFile(v.backing(kmsvolume.ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if r := v.kmsfs("rewrap", "--add", second, v.cipherDir); r.code != exitOK {
		t.Fatalf("%v\nwant exit 0", r)
	}
	newer, err := os.ReadFile(v.backing(kmsvolume.ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v.backing(kmsvolume.ConfigName), old, 0o600); err != nil {
		t.Fatal(err)
	}
	r := v.kmsfs(v.mountCommand()...)
	if r.code == exitOK {
		v.mounted = true
		t.Fatalf("mount of a rolled-back configuration: %v\nwant a refusal", r)
	}
	if r.code != exitBadVolume || !strings.Contains(r.stderr, "older") || !strings.Contains(r.stderr, "--allow-rollback") {
		t.Errorf("mount of a rolled-back configuration: %v\nwant exit %d, a message saying it is older, and the override", r, exitBadVolume)
	}
	if r := v.kmsfs("rewrap", "--add", second, v.cipherDir); r.code == exitOK {
		t.Errorf("rewrap of a rolled-back configuration: %v\nwant a refusal", r)
	}

	// The newer configuration mounts; a rollback under the mount is not
	// reloaded.
	if err := os.WriteFile(v.backing(kmsvolume.ConfigName), newer, 0o600); err != nil {
		t.Fatal(err)
	}
	v.mount()
	if err := os.WriteFile(v.backing(kmsvolume.ConfigName), old, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := v.kmsfs("rewrap", v.cipherDir); r.code == exitOK {
		t.Errorf("rewrap with a rolled-back configuration under a mount: %v\nwant a refusal", r)
	}
	v.unmount()

	// The explicit override mounts it, and records it as the one seen.
	v.mountArgs = append(v.mountArgs, "--allow-rollback")
	v.mount()
	v.unmount()
	v.mountArgs = v.mountArgs[:len(v.mountArgs)-1]
	v.mount()
}
