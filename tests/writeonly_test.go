package tests

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	kmsvolume "github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring/kmsemu"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// otherMachine returns the volume v as another machine (or user) sees
// it: the same backing directory, with a home (trust store), mount point
// and log of its own. It is unmounted when the test ends.
func otherMachine(t *testing.T, v *volume) *volume {
	t.Helper()
	dir := t.TempDir()
	o := &volume{
		t: t, dir: dir, cipherDir: v.cipherDir, keyPath: v.keyPath, keyURI: v.keyURI,
		mnt: filepath.Join(dir, "mnt"), home: filepath.Join(dir, "home"),
		logFile: filepath.Join(dir, "kmsfs.log"), raceDir: filepath.Join(dir, "race"),
		blockSize: v.blockSize, bin: v.bin,
	}
	for _, d := range []string{o.mnt, o.home, o.raceDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mountPointsMu.Lock()
	mountPoints[o.mnt] = true
	mountPointsMu.Unlock()
	t.Cleanup(o.cleanup)
	return o
}

// rsaKeyVolume creates a Tencent RSA-2048 key in e and a volume whose
// cipher dir is empty (not initialised, no local key), and writes the
// key's public key as a PEM file beside it, as a user downloads it.
func rsaKeyVolume(t *testing.T, e *cloudEmu) (v *volume, keyID, uri, pemPath string) {
	t.Helper()
	k, err := e.s.CreateKey(kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: "ap-guangzhou", Spec: "RSA_2048"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := e.s.PublicKeyPEM(k.ID)
	if err != nil {
		t.Fatal(err)
	}
	v = newVolume(t, notMounted())
	if err := os.RemoveAll(v.cipherDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(v.cipherDir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Remove(v.keyPath)
	pemPath = filepath.Join(v.dir, "backup-key.pem")
	if err := os.WriteFile(pemPath, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return v, k.ID, "tencent-kms+rsa://ap-guangzhou/" + k.ID + "?endpoint=" + e.s.URL(), pemPath
}

// TestWriteOnlyMount is the backup-host pattern of docs/KEYS.md: a
// machine holding only the public key of a KMS key (no credential that
// works) writes a tree through a write-only mount, making no KMS call;
// it reads back what it created while the mount keeps the keys, and
// nothing after a remount; a machine whose credentials may decrypt then
// reads every byte; a disabled key stops it.
func TestWriteOnlyMount(t *testing.T) {
	e := startCloudEmulator(t)
	w, keyID, uri, pemPath := rsaKeyVolume(t, e)
	// The writing machine holds no credential that works: any call it
	// made would be refused (and counted).
	setCloudEnv(t, "wrong", "wrong", "wrong")
	calls := func() int { return e.s.Count(kmsemu.Tencent, "", "") }
	before := calls()
	if r := w.kmsfs("init", "--write-only", "--key", uri, "--public-key", pemPath, w.cipherDir); r.code != exitOK || !strings.Contains(r.stdout, "write-only") {
		t.Fatalf("%v\nwant exit 0 and a word on write-only", r)
	}
	w.mount()
	bs := w.blockSize
	want := map[string][]byte{
		"a.txt":                               pattern("a", 100),
		"dir/b.bin":                           pattern("b", 3*bs+17),
		"dir/sub/empty":                       {},
		"dir/sub/" + strings.Repeat("n", 200): pattern("long", 5000),
	}
	for _, d := range []string{"dir", "dir/sub"} {
		if err := os.Mkdir(w.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range want {
		writeFile(t, w.path(name), data)
	}
	if err := os.Symlink("../a.txt", w.path("dir/link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(w.path("a.txt"), "user.note", []byte("kept by the backup host"), 0); err != nil {
		t.Fatal(err)
	}
	// What this mount created stays readable and rewritable while it keeps
	// the keys.
	f, err := os.OpenFile(w.path("dir/b.bin"), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("reopening a file this mount created: %v", err)
	}
	if _, err := f.WriteAt([]byte("PATCHED"), int64(bs)-3); err != nil {
		t.Fatal(err)
	}
	f.Close()
	copy(want["dir/b.bin"][bs-3:], "PATCHED")
	af, err := os.OpenFile(w.path("a.txt"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	af.Write([]byte("+appended"))
	af.Close()
	want["a.txt"] = append(want["a.txt"], "+appended"...)
	if err := os.Rename(w.path("dir/sub/empty"), w.path("dir/sub/renamed")); err != nil {
		t.Fatal(err)
	}
	want["dir/sub/renamed"] = want["dir/sub/empty"]
	delete(want, "dir/sub/empty")
	for name, data := range want {
		checkContent(t, w.path(name), data, bs)
	}
	checkWriterMadeNoCalls := func(when string) {
		t.Helper()
		for _, ks := range w.stats(t).Keys {
			if ks.KMSCalls != 0 {
				t.Errorf("%s: kmsfs stats: %d KMS calls for %s, want 0", when, ks.KMSCalls, ks.URI)
			}
		}
		if n := calls() - before; n != 0 {
			t.Errorf("%s: the emulator got %d requests from the write-only machine, want 0", when, n)
		}
	}
	checkWriterMadeNoCalls("after writing")

	// After a remount the writer holds no file's key: it cannot read.
	w.remount()
	if _, err := os.ReadFile(w.path("a.txt")); errnoOf(err) != syscall.EACCES {
		t.Errorf("write-only mount reading an existing file: error = %v, want EACCES", err)
	}
	if _, err := os.OpenFile(w.path("dir/b.bin"), os.O_WRONLY, 0); errnoOf(err) != syscall.EACCES {
		t.Errorf("write-only mount opening an existing file for writing: error = %v, want EACCES", err)
	}
	if lg := w.log(); !strings.Contains(lg, "write-only") || !strings.Contains(lg, "a.txt") {
		t.Errorf("daemon log does not say the read was refused as write-only, naming the file:\n%s", lg)
	}
	ents, err := os.ReadDir(w.path("dir"))
	if err != nil || len(ents) != 3 {
		t.Errorf("listing dir on the write-only mount: %d entries, %v; want 3", len(ents), err)
	}
	want["dir/after-remount"] = pattern("after", 999)
	writeFile(t, w.path("dir/after-remount"), want["dir/after-remount"])
	checkContent(t, w.path("dir/after-remount"), want["dir/after-remount"], bs)
	checkWriterMadeNoCalls("after the remount")
	w.unmount()
	if r := w.kmsfs("info", w.cipherDir); r.code != exitOK || !strings.Contains(r.stdout, "write-only") || !strings.Contains(r.stdout, "names encrypted") {
		t.Errorf("%v\nwant kmsfs info on the write-only machine to read its configuration and say write-only", r)
	}
	if n := calls() - before; n != 0 {
		t.Errorf("kmsfs info on the write-only machine made %d KMS requests, want 0", n)
	}
	if lg := w.log(); strings.Contains(lg, "PATCHED") || strings.Contains(lg, "kept by the backup host") {
		t.Errorf("the daemon log holds file content:\n%s", lg)
	}

	// The reading machine: credentials that may decrypt with the key.
	setCloudEnv(t, cloudAliSecret, cloudTcSecret, cloudHwSK)
	rd := otherMachine(t, w)
	if r := rd.kmsfs("trust", "--yes", rd.cipherDir); r.code != exitOK {
		t.Fatalf("%v\nwant exit 0", r)
	}
	rd.mountArgs = append(rd.mountArgs, "--key-cache-ttl", "0")
	rd.mount()
	unread := "dir/sub/" + strings.Repeat("n", 200)
	for name, data := range want {
		if name != unread {
			checkContent(t, rd.path(name), data, bs)
		}
	}
	if tgt, err := os.Readlink(rd.path("dir/link")); err != nil || tgt != "../a.txt" {
		t.Errorf("symlink on the reading mount: %q, %v", tgt, err)
	}
	buf := make([]byte, 100)
	if n, err := unix.Getxattr(rd.path("a.txt"), "user.note", buf); err != nil || !bytes.Equal(buf[:n], []byte("kept by the backup host")) {
		t.Errorf("xattr on the reading mount: %q, %v", buf[:max(n, 0)], err)
	}
	if n := e.s.Count(kmsemu.Tencent, "AsymmetricRsaDecrypt", "ok"); n == 0 {
		t.Error("the reading mount read without the key service decrypting")
	}
	// A file the reading mount writes is readable by it as well.
	writeFile(t, rd.path("from-reader"), pattern("r", 3000))
	checkContent(t, rd.path("from-reader"), pattern("r", 3000), bs)

	// The key disabled in the KMS: decryption is refused, files open with
	// EACCES.
	if err := e.s.DisableKey(keyID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.s.EnableKey(keyID) })
	if _, err := os.ReadFile(rd.path(unread)); errnoOf(err) != syscall.EACCES {
		t.Errorf("reading with the key disabled: error = %v, want EACCES", err)
	}
	if err := e.s.EnableKey(keyID); err != nil {
		t.Fatal(err)
	}
	checkContent(t, rd.path(unread), want[unread], bs)
}

// asymCase is an RSA or SM2 key in one cloud of the emulators: its +rsa
// or +sm2 URI, the emulator that holds it and the name of its decrypt
// action.
type asymCase struct {
	name, uri, keyID, decrypt string
	cloud                     kmsemu.Cloud
	s                         *kmsemu.Server
}

// asymCases creates an RSA key and an SM2 key in each cloud that has
// asymmetric decryption (Tencent, Huawei, an Alibaba KMS instance).
func asymCases(t *testing.T) []asymCase {
	t.Helper()
	inst, _, _ := instXStart(t)
	e := startCloudEmulator(t)
	var out []asymCase
	for _, c := range []struct {
		cloud          kmsemu.Cloud
		s              *kmsemu.Server
		region, spec   string
		suffix, action string
	}{
		{kmsemu.Tencent, e.s, "ap-guangzhou", "RSA_3072", "+rsa", "AsymmetricRsaDecrypt"},
		{kmsemu.Huawei, e.s, "cn-north-4", "RSA_3072", "+rsa", "decrypt-data"},
		{kmsemu.AlibabaInstance, inst, "kst-mount-test", "RSA_3072", "+rsa", "Decrypt"},
		{kmsemu.Tencent, e.s, "ap-guangzhou", "SM2", "+sm2", "AsymmetricSm2Decrypt"},
		{kmsemu.Huawei, e.s, "cn-north-4", "SM2", "+sm2", "decrypt-data"},
		{kmsemu.AlibabaInstance, inst, "kst-mount-test", "EC_SM2", "+sm2", "Decrypt"},
	} {
		spec := kmsemu.KeySpec{Cloud: c.cloud, Region: c.region, Spec: c.spec}
		if c.cloud == kmsemu.Huawei {
			spec.Project = cloudHwProject
		}
		k, err := c.s.CreateKey(spec)
		if err != nil {
			t.Fatal(err)
		}
		var uri string
		switch c.cloud {
		case kmsemu.Tencent:
			uri = "tencent-kms" + c.suffix + "://" + c.region + "/" + k.ID + "?endpoint=" + e.s.URL()
		case kmsemu.Huawei:
			uri = "huawei-kms" + c.suffix + "://" + c.region + "/" + k.ID + "?project=" + cloudHwProject + "&endpoint=" + e.s.URL()
		default:
			uri = "alibaba-kms-instance" + c.suffix + "://" + inst.TLSAddr() + "/" + k.ID
		}
		name := string(c.cloud)
		if c.suffix == "+sm2" {
			name += "-sm2"
		}
		out = append(out, asymCase{name: name, uri: uri, keyID: k.ID, decrypt: c.action, cloud: c.cloud, s: c.s})
	}
	return out
}

// TestAsymmetricKeysMount mounts a volume under an RSA key and an SM2
// key of each cloud on a machine allowed to decrypt: init checks that
// the key decrypts, new files are wrapped with no KMS call, and after a
// remount every file is read through the key service's decryption.
func TestAsymmetricKeysMount(t *testing.T) {
	for _, c := range asymCases(t) {
		t.Run(c.name, func(t *testing.T) {
			v := cloudVolume(t, c.uri)
			if n := c.s.Count(c.cloud, c.decrypt, "ok"); n == 0 {
				t.Errorf("init did not check that the key decrypts (no %s)", c.decrypt)
			}
			v.mount()
			before := c.s.Count(c.cloud, "", "")
			const n = 20
			for i := 0; i < n; i++ {
				writeFile(t, v.path(fmt.Sprintf("f%02d", i)), pattern(fmt.Sprint(i), 1000+i*977))
			}
			if got := c.s.Count(c.cloud, "", "") - before; got != 0 {
				t.Errorf("creating %d files made %d KMS requests, want 0 (wrapped under the public key)", n, got)
			}
			decrypts := c.s.Count(c.cloud, c.decrypt, "ok")
			v.remount()
			for i := 0; i < n; i++ {
				checkContent(t, v.path(fmt.Sprintf("f%02d", i)), pattern(fmt.Sprint(i), 1000+i*977), v.blockSize)
			}
			if c.s.Count(c.cloud, c.decrypt, "ok") == decrypts {
				t.Errorf("the files were read without a %s", c.decrypt)
			}
		})
	}
}

// TestAsymmetricInitRefusesUndecryptable: on a machine whose credentials
// cannot decrypt with the key, init without --write-only fails before
// making the volume, and says so.
func TestAsymmetricInitRefusesUndecryptable(t *testing.T) {
	e := startCloudEmulator(t)
	v, _, uri, pemPath := rsaKeyVolume(t, e)
	setCloudEnv(t, "wrong", "wrong", "wrong")
	r := v.kmsfs("init", "--key", uri, "--public-key", pemPath, v.cipherDir)
	if r.code != exitNoKey || !strings.Contains(r.stderr, "--write-only") {
		t.Errorf("%v\nwant exit %d and a hint at --write-only", r, exitNoKey)
	}
	if ents, _ := os.ReadDir(v.cipherDir); len(ents) != 0 {
		t.Errorf("a refused init left %d entries in the cipher dir", len(ents))
	}
	// A symmetric key named as asymmetric is refused as well.
	_, symURI := e.key(t, kmsemu.Tencent)
	setCloudEnv(t, cloudAliSecret, cloudTcSecret, cloudHwSK)
	r = v.kmsfs("init", "--key", strings.Replace(symURI, "tencent-kms://", "tencent-kms+rsa://", 1), v.cipherDir)
	if r.code == exitOK || !strings.Contains(r.stderr, "not an asymmetric") {
		t.Errorf("%v\nwant a symmetric key named +rsa refused as not asymmetric", r)
	}
}

// forgePub writes at path a kmsfs file of volume volID holding plain,
// made by someone who has only the public key of uri: a data key of their
// own, wrapped under the public key, and a slot tag made with sk (the
// attacker's guess of the slot key, or a slot key of their own).
// copySize is as forge's: 0 for a version-1 header (kmsfs.conf), the
// volume's header copy size for a regular file of a version-3 volume.
func forgePub(t *testing.T, path, uri string, pub []byte, sk []byte, volID string, copySize int, plain []byte) {
	t.Helper()
	p, err := pubkey.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pubkey.New(uri, p.(*rsa.PublicKey), nil)
	if err != nil {
		t.Fatal(err)
	}
	encCtx := kmsvolume.EncryptionContext(volID)
	dk, e, err := k.GenerateDataKey(context.Background(), encCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Destroy()
	// T per docs/FORMAT.md, "Public-key slots".
	m := hmac.New(sha256.New, sk)
	m.Write([]byte("kmsfs slot tag v1\x00"))
	m.Write(binary.BigEndian.AppendUint16(nil, uint16(len(uri))))
	m.Write([]byte(uri))
	m.Write(binary.BigEndian.AppendUint16(nil, uint16(len(encCtx))))
	m.Write(encCtx)
	m.Write(e)
	b := forgedFile(t, copySize, []header.Slot{{URI: uri, Context: encCtx, Wrapped: m.Sum(e[:len(e):len(e)])}}, dk.Bytes(), plain)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPublicKeyForgeryRefused: whoever holds the public key of a volume's
// asymmetric key (it is not secret) and can write the storage cannot make
// a file or a configuration that a reading mount accepts: the slot tag
// needs the volume's slot key, and a configuration with a slot key of the
// attacker's differs from what the trust record pins.
func TestPublicKeyForgeryRefused(t *testing.T) {
	e := startCloudEmulator(t)
	k, err := e.s.CreateKey(kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: "ap-guangzhou", Spec: "RSA_2048"})
	if err != nil {
		t.Fatal(err)
	}
	uri := "tencent-kms+rsa://ap-guangzhou/" + k.ID + "?endpoint=" + e.s.URL()
	pub, _ := e.s.PublicKeyPEM(k.ID)
	v := cloudVolume(t, uri)
	v.mount()
	want := pattern("genuine", 5000)
	writeFile(t, v.path("genuine"), want)
	writeFile(t, v.path("victim"), pattern("victim", 100))
	victim := v.backing("victim")
	v.unmount()
	copySize := backingCopySize(t, victim)
	volID := v.volumeID(t)

	// A file: a data key of the attacker's under the public key.
	guess := bytes.Repeat([]byte{0x42}, 32)
	// Laid out as the volume's files are (the victim's copy size), so
	// that it is refused for its slot, not for its layout.
	forgePub(t, victim, uri, pub, guess, volID, copySize, []byte("FORGED by the storage holder"))
	v.mount()
	decrypts := e.s.Count(kmsemu.Tencent, "AsymmetricRsaDecrypt", "")
	if got, err := os.ReadFile(v.path("victim")); err == nil {
		t.Errorf("a file forged with the public key read as %q", got)
	}
	if n := e.s.Count(kmsemu.Tencent, "AsymmetricRsaDecrypt", "") - decrypts; n != 0 {
		t.Errorf("%d decrypt calls for the forged file; its slot must be refused before any call", n)
	}
	checkContent(t, v.path("genuine"), want, v.blockSize)
	if !strings.Contains(v.log(), "not authentic") {
		t.Errorf("daemon log does not say the forged slot is not authentic:\n%s", v.log())
	}
	v.unmount()

	// The configuration: of the volume's format version, names in
	// clear, a slot key of the attacker's (so the tag verifies), a high
	// epoch.
	version := `"version":2`
	if copySize != 0 {
		version = fmt.Sprintf(`"version":3,"header_copy_size":%d`, copySize)
	}
	cfg := fmt.Sprintf(`{"format":"kmsfs",%s,"volume_id":%q,"block_size":4096,"keys":[%q],"names":"plaintext","epoch":1000000,"slot_key":%q}`,
		version, volID, uri, base64.StdEncoding.EncodeToString(guess))
	forgePub(t, filepath.Join(v.cipherDir, "kmsfs.conf"), uri, pub, guess, volID, 0, []byte(cfg)) // a version-1 header, as every kmsfs.conf
	r := v.kmsfs(v.mountCommand()...)
	if r.code == exitOK {
		v.mounted, v.daemons = true, daemonsOf(v.mnt)
		t.Fatalf("%v\na configuration forged with the public key was mounted", r)
	}
	if !strings.Contains(r.stderr, "pins") {
		t.Errorf("%v\nwant the refusal to say the configuration differs from the pinned one", r)
	}
	rec, err := os.ReadFile(filepath.Join(v.home, ".config", "kmsfs", "trust", volID+".json"))
	if err != nil || bytes.Contains(rec, []byte("1000000")) {
		t.Errorf("the trust record took the forged configuration's epoch (%v):\n%s", err, rec)
	}
}

// TestWriteOnlyReadBackAfterIdle: a data key that new files share stays
// in the write-only mount's cache while files are made with it, however
// long ago it was generated: a file created after an idle spell longer
// than the cache's time to live reads back.
func TestWriteOnlyReadBackAfterIdle(t *testing.T) {
	e := startCloudEmulator(t)
	w, _, uri, pemPath := rsaKeyVolume(t, e)
	setCloudEnv(t, "wrong", "wrong", "wrong")
	if r := w.kmsfs("init", "--write-only", "--key", uri, "--public-key", pemPath, w.cipherDir); r.code != exitOK {
		t.Fatalf("%v\nwant exit 0", r)
	}
	w.mountArgs = append(w.mountArgs, "--key-cache-ttl", "2s")
	w.mount()
	writeFile(t, w.path("first"), pattern("first", 100))
	time.Sleep(3 * time.Second)
	writeFile(t, w.path("second"), pattern("second", 100))
	checkContent(t, w.path("second"), pattern("second", 100), w.blockSize)
	checkContent(t, w.path("first"), pattern("first", 100), w.blockSize)
}

// TestWriteOnlyAfterRewrap: after a reading machine replaced the volume's
// key (kmsfs rewrap), a write-only machine refuses to wrap new files under
// the removed key until it is told the new one (kmsfs trust --write-only);
// then the reading machine reads what it writes.
func TestWriteOnlyAfterRewrap(t *testing.T) {
	e := startCloudEmulator(t)
	var uris, pems []string
	w := newVolume(t, notMounted())
	for i := 0; i < 2; i++ {
		k, err := e.s.CreateKey(kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: "ap-guangzhou", Spec: "RSA_2048"})
		if err != nil {
			t.Fatal(err)
		}
		uris = append(uris, "tencent-kms+rsa://ap-guangzhou/"+k.ID+"?endpoint="+e.s.URL())
		pub, _ := e.s.PublicKeyPEM(k.ID)
		p := filepath.Join(w.dir, fmt.Sprintf("pub%d.pem", i))
		os.WriteFile(p, pub, 0o644)
		pems = append(pems, p)
	}
	os.RemoveAll(w.cipherDir)
	os.Mkdir(w.cipherDir, 0o700)
	setCloudEnv(t, "wrong", "wrong", "wrong")
	if r := w.kmsfs("init", "--write-only", "--key", uris[0], "--public-key", pems[0], w.cipherDir); r.code != exitOK {
		t.Fatalf("%v\nwant exit 0", r)
	}
	w.mount()
	writeFile(t, w.path("before"), pattern("before", 3000))
	w.unmount()

	setCloudEnv(t, cloudAliSecret, cloudTcSecret, cloudHwSK)
	rd := otherMachine(t, w)
	if r := rd.kmsfs("trust", "--yes", rd.cipherDir); r.code != exitOK {
		t.Fatalf("%v\nwant exit 0", r)
	}
	if r := rd.kmsfs("rewrap", "--add", uris[1], "--remove", uris[0], rd.cipherDir); r.code != exitOK {
		t.Fatalf("%v\nwant exit 0", r)
	}

	setCloudEnv(t, "wrong", "wrong", "wrong")
	r := w.kmsfs(w.mountCommand()...)
	if r.code == exitOK {
		w.mounted, w.daemons = true, daemonsOf(w.mnt)
		t.Fatalf("%v\nthe write-only machine mounted with a key the volume no longer has", r)
	}
	if !strings.Contains(r.stderr, "no longer names key") {
		t.Errorf("%v\nwant the refusal to name the removed key", r)
	}
	if r := w.kmsfs("trust", "--write-only", "--key", uris[1], "--public-key", pems[1], w.cipherDir); r.code != exitOK {
		t.Fatalf("%v\nwant exit 0", r)
	}
	w.mount()
	writeFile(t, w.path("after"), pattern("after", 3000))
	w.unmount()

	setCloudEnv(t, cloudAliSecret, cloudTcSecret, cloudHwSK)
	rd.mount()
	checkContent(t, rd.path("before"), pattern("before", 3000), rd.blockSize)
	checkContent(t, rd.path("after"), pattern("after", 3000), rd.blockSize)
}
