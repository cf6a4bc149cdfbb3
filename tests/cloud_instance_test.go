package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/keyring/kmsemu"
)

// A key in an Alibaba Cloud KMS instance, mounted for real: the kmsfs
// binary talks to the emulator's KMS instance protocol over TLS (checked
// against the emulator's CA) through the KMS Instance SDK, signing with
// a client key file as Alibaba issues them.

const (
	instXFixtures = "../keyring/kmsemu/testdata/instance"
	instXKeyID    = "KAAP.test"
	instXPassword = "kmsfs-test"
)

// instXStart starts the emulator with the fixture client key, creates a
// key and exports the client key, its password and the CA to the kmsfs
// commands. It returns the emulator, the key ID and the key URI.
func instXStart(t *testing.T) (*kmsemu.Server, string, string) {
	t.Helper()
	cert, err := os.ReadFile(filepath.Join(instXFixtures, "clientKey_KAAP.test.cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s := kmsemu.New(kmsemu.Config{TLSAddr: "127.0.0.1:0", Credentials: []kmsemu.Credential{
		{Cloud: kmsemu.AlibabaInstance, ID: instXKeyID, PublicKey: string(cert)},
	}})
	if err := s.Start(); err != nil {
		t.Fatalf("kmsemu Start() = %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	k, err := s.CreateKey(kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: "kst-mount-test"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "clientKey.json")
	b, err := os.ReadFile(filepath.Join(instXFixtures, "clientKey_KAAP.test.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(instXPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, s.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ALIBABA_KMS_INSTANCE_CLIENT_KEY_FILE", keyFile)
	t.Setenv("ALIBABA_KMS_INSTANCE_CLIENT_KEY_PASSWORD_FILE", pwFile)
	t.Setenv("ALIBABA_KMS_INSTANCE_CA_FILE", ca)
	return s, k.ID, "alibaba-kms-instance://" + s.TLSAddr() + "/" + k.ID
}

func TestKMSInstance(t *testing.T) {
	s, keyID, uri := instXStart(t)
	v := cloudVolume(t, uri)
	v.mountArgs = append(v.mountArgs, "--key-cache-ttl", "0")
	v.mount()
	data := pattern("instance", 3*defaultBlockSize+100)
	writeFile(t, v.path("f"), data)
	writeFile(t, v.path("g"), data)
	v.remount()
	checkContent(t, v.path("f"), data, v.blockSize)
	for _, op := range []string{"AdvanceGenerateDataKey", "AdvanceDecrypt"} {
		if n := s.Count(kmsemu.AlibabaInstance, op, "ok"); n == 0 {
			t.Errorf("the emulator served no %s", op)
		}
	}

	// The key disabled in the instance: its files open with EACCES.
	if err := s.DisableKey(keyID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(v.path("g")); errnoOf(err) != syscall.EACCES {
		t.Errorf("reading a file whose instance key was disabled: error = %v, want EACCES", err)
	}
	if !strings.Contains(v.log(), "Rejected.Disabled") {
		t.Errorf("daemon log does not name the instance's refusal:\n%s", v.log())
	}
	if err := s.EnableKey(keyID); err != nil {
		t.Fatal(err)
	}
	checkContent(t, v.path("g"), data, v.blockSize)
}

func TestKMSInstanceWrongClientKey(t *testing.T) {
	_, _, uri := instXStart(t)
	v := cloudVolume(t, uri)
	// The right key ID, signed with another RSA key: refused.
	b, err := os.ReadFile(filepath.Join(instXFixtures, "clientKey_KAAP.test.impostor.json"))
	if err != nil {
		t.Fatal(err)
	}
	impostor := filepath.Join(t.TempDir(), "impostor.json")
	if err := os.WriteFile(impostor, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ALIBABA_KMS_INSTANCE_CLIENT_KEY_FILE", impostor)
	r := v.kmsfs(v.mountCommand()...)
	if r.code == exitOK {
		v.mounted = true
		v.daemons = daemonsOf(v.mnt)
		t.Fatalf("%v\nmount with another client key succeeded", r)
	}
	if r.code != exitNoKey || !strings.Contains(r.stderr, "invalid credentials") {
		t.Errorf("%v\nwant exit %d saying invalid credentials", r, exitNoKey)
	}
	if regexp.MustCompile(`\b` + regexp.QuoteMeta(instXPassword) + `\b`).MatchString(r.stderr) {
		t.Errorf("%v\nthe error shows the client key's password", r)
	}
}
