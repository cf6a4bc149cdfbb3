package tests

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/keyring/kmsemu"
)

// The cloud key providers, mounted for real: the kmsfs binary talks to an
// in-process KMS emulator through each cloud's SDK. Credentials reach the
// kmsfs processes through the environment, as the SDKs' chains read it.

const (
	cloudAliID, cloudAliSecret = "LTAI5tMountTest", "alibaba-mount-secret"
	cloudTcID, cloudTcSecret   = "AKIDMountTest", "tencent-mount-secret"
	cloudHwAK, cloudHwSK       = "HWMOUNTTEST", "huawei-mount-secret"
	cloudHwProject             = "00112233445566778899aabbccddeeff"
)

type cloudEmu struct {
	s *kmsemu.Server
}

// startCloudEmulator starts an emulator with one credential per cloud and
// exports those credentials to the kmsfs commands.
func startCloudEmulator(t *testing.T) *cloudEmu {
	t.Helper()
	s := kmsemu.New(kmsemu.Config{Credentials: []kmsemu.Credential{
		{Cloud: kmsemu.Alibaba, ID: cloudAliID, Secret: cloudAliSecret},
		{Cloud: kmsemu.Tencent, ID: cloudTcID, Secret: cloudTcSecret},
		{Cloud: kmsemu.Huawei, ID: cloudHwAK, Secret: cloudHwSK},
	}})
	if err := s.Start(); err != nil {
		t.Fatalf("kmsemu Start() = %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	setCloudEnv(t, cloudAliSecret, cloudTcSecret, cloudHwSK)
	return &cloudEmu{s: s}
}

func setCloudEnv(t *testing.T, aliSecret, tcSecret, hwSK string) {
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", cloudAliID)
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", aliSecret)
	t.Setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
	t.Setenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")
	t.Setenv("TENCENTCLOUD_SECRET_ID", cloudTcID)
	t.Setenv("TENCENTCLOUD_SECRET_KEY", tcSecret)
	t.Setenv("HUAWEICLOUD_SDK_AK", cloudHwAK)
	t.Setenv("HUAWEICLOUD_SDK_SK", hwSK)
}

// key creates a key in the emulator and returns its ID and URI.
func (e *cloudEmu) key(t *testing.T, c kmsemu.Cloud) (string, string) {
	t.Helper()
	spec := kmsemu.KeySpec{Cloud: c}
	switch c {
	case kmsemu.Alibaba:
		spec.Region = "cn-hangzhou"
	case kmsemu.Tencent:
		spec.Region = "ap-guangzhou"
	case kmsemu.Huawei:
		spec.Region, spec.Project = "cn-north-4", cloudHwProject
	}
	k, err := e.s.CreateKey(spec)
	if err != nil {
		t.Fatalf("CreateKey(%+v) = %v", spec, err)
	}
	u := string(c) + "-kms://" + k.Region + "/" + k.ID + "?endpoint=" + e.s.URL()
	if c == kmsemu.Huawei {
		u = string(c) + "-kms://" + k.Region + "/" + k.ID + "?project=" + cloudHwProject + "&endpoint=" + e.s.URL()
	}
	return k.ID, u
}

// cloudVolume makes a volume whose files are wrapped under the given
// cloud keys only: the volume newVolume made (with a local key) is
// replaced by one made with "kmsfs init --key URI...".
func cloudVolume(t *testing.T, uris ...string) *volume {
	t.Helper()
	v := newVolume(t, notMounted())
	if err := os.RemoveAll(v.cipherDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(v.cipherDir, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"init"}
	for _, u := range uris {
		args = append(args, "--key", u)
	}
	if r := v.kmsfs(append(args, v.cipherDir)...); r.code != exitOK || r.err != nil {
		t.Fatalf("%v\nwant exit 0", r)
	}
	if err := os.Remove(v.keyPath); err != nil {
		t.Fatalf("removing the local key: %v", err)
	}
	return v
}

func TestCloudProviders(t *testing.T) {
	e := startCloudEmulator(t)
	for _, c := range []kmsemu.Cloud{kmsemu.Alibaba, kmsemu.Tencent, kmsemu.Huawei} {
		t.Run(string(c), func(t *testing.T) {
			_, uri := e.key(t, c)
			v := cloudVolume(t, uri)
			v.mount()
			data := pattern(string(c), 3*defaultBlockSize+100)
			writeFile(t, v.path("f"), data)
			v.remount()
			checkContent(t, v.path("f"), data, v.blockSize)
			if n := e.s.Count(c, "", "ok"); n == 0 {
				t.Errorf("the emulator served no %s request", c)
			}
		})
	}
}

func TestCloudWrongSecretFailsMount(t *testing.T) {
	e := startCloudEmulator(t)
	for _, c := range []kmsemu.Cloud{kmsemu.Alibaba, kmsemu.Tencent, kmsemu.Huawei} {
		t.Run(string(c), func(t *testing.T) {
			_, uri := e.key(t, c)
			v := cloudVolume(t, uri)
			setCloudEnv(t, "wrong", "wrong", "wrong")
			r := v.kmsfs(v.mountCommand()...)
			if r.code == exitOK {
				v.mounted = true
				v.daemons = daemonsOf(v.mnt)
				t.Fatalf("%v\nmount with a wrong secret succeeded", r)
			}
			if r.code != exitNoKey {
				t.Errorf("%v\nwant exit %d (key unavailable)", r, exitNoKey)
			}
			if !bytes.Contains([]byte(r.stderr), []byte("invalid credentials")) {
				t.Errorf("%v\nwant stderr to say invalid credentials", r)
			}
		})
	}
}

func TestCloudKeyDisabledAfterMount(t *testing.T) {
	e := startCloudEmulator(t)
	aliID, aliURI := e.key(t, kmsemu.Alibaba)
	_, tcURI := e.key(t, kmsemu.Tencent)
	va := cloudVolume(t, aliURI)
	vb := cloudVolume(t, tcURI)
	// Without the key cache, a key disabled in the KMS stops opening
	// files at once (with it, after the cache TTL: docs/KEYS.md).
	va.mountArgs = append(va.mountArgs, "--key-cache-ttl", "0")
	va.mount()
	vb.mount()
	da, db := pattern("a", 5000), pattern("b", 5000)
	writeFile(t, va.path("first"), da)
	writeFile(t, va.path("second"), da)
	writeFile(t, vb.path("other"), db)
	va.remount()
	checkContent(t, va.path("first"), da, va.blockSize)

	if err := e.s.DisableKey(aliID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.s.EnableKey(aliID) })
	_, err := os.ReadFile(va.path("second"))
	if errnoOf(err) != syscall.EACCES {
		t.Errorf("reading a file whose key was disabled: error = %v, want EACCES", err)
	}
	if err := os.WriteFile(va.path("new"), []byte("x"), 0o644); errnoOf(err) != syscall.EACCES {
		t.Errorf("creating a file under a disabled key: error = %v, want EACCES", err)
	}
	checkContent(t, vb.path("other"), db, vb.blockSize)
}

func TestCloudTwoProvidersOneDisabled(t *testing.T) {
	e := startCloudEmulator(t)
	aliID, aliURI := e.key(t, kmsemu.Alibaba)
	_, hwURI := e.key(t, kmsemu.Huawei)
	v := cloudVolume(t, aliURI, hwURI)
	v.mount()
	data := pattern("two", 2*defaultBlockSize)
	writeFile(t, v.path("f"), data)
	v.unmount()

	if err := e.s.DisableKey(aliID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.s.EnableKey(aliID) })
	v.mount()
	checkContent(t, v.path("f"), data, v.blockSize)
	if n := e.s.Count(kmsemu.Huawei, "decrypt-datakey", "ok"); n == 0 {
		t.Errorf("no decrypt-datakey answered by the Huawei key, want the file opened through it")
	}
}
