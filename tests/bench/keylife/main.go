// Command keylife measures what the key service costs a kmsfs user: it
// creates many small files on a volume whose key is held by the KMS
// emulator (each provider's protocol, through its real SDK), remounts,
// reads them all, and rewraps them under a second key — once with no
// added KMS latency and once with a realistic one — and prints KMS calls
// and elapsed time for each phase as a Markdown table per provider.
//
// Usage (as root, from the repository root):
//
//	go run ./tests/bench/keylife [-files 10000] [-latency 20ms] [-reps 2] [-kmsfs bin/kmsfs]
//	    [-providers alibaba-kms,alibaba-kms-instance,tencent-kms,huawei-kms]
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kmsfs/kmsfs/keyring/kmsemu"
)

const (
	akID, akSecret = "LTAI5tKeylifeBench", "keylife-bench-secret"
	tcID, tcSecret = "AKIDKeylifeBench", "keylife-bench-secret"
	hwAK, hwSK     = "HWKEYLIFEBENCH", "keylife-bench-secret"
	hwProject      = "00112233445566778899aabbccddeeff"
	// The KMS instance client key: the emulator's test fixture.
	instFixtures = "keyring/kmsemu/testdata/instance"
	instKeyID    = "KAAP.test"
	instPassword = "kmsfs-test"
)

// provider is one key service as keylife drives it.
type provider struct {
	scheme string
	cloud  kmsemu.Cloud
	region string // region, or instance ID
	uri    func(emu *kmsemu.Server, k kmsemu.Key) string
	// spec makes the keys asymmetric (kmsemu.RSASpecs); writeOnly has a
	// write-only machine (public key only, no credential) create the
	// files, and another machine, which may decrypt, read and rewrap them.
	spec      string
	writeOnly bool
}

var providers = []provider{
	{"alibaba-kms", kmsemu.Alibaba, "cn-hangzhou", func(emu *kmsemu.Server, k kmsemu.Key) string {
		return "alibaba-kms://" + k.Region + "/" + k.ID + "?endpoint=" + emu.URL()
	}, "", false},
	{"alibaba-kms-instance", kmsemu.AlibabaInstance, "kst-keylife", func(emu *kmsemu.Server, k kmsemu.Key) string {
		return "alibaba-kms-instance://" + emu.TLSAddr() + "/" + k.ID
	}, "", false},
	{"tencent-kms", kmsemu.Tencent, "ap-guangzhou", func(emu *kmsemu.Server, k kmsemu.Key) string {
		return "tencent-kms://" + k.Region + "/" + k.ID + "?endpoint=" + emu.URL()
	}, "", false},
	{"huawei-kms", kmsemu.Huawei, "cn-north-4", func(emu *kmsemu.Server, k kmsemu.Key) string {
		return "huawei-kms://" + k.Region + "/" + k.ID + "?project=" + hwProject + "&endpoint=" + emu.URL()
	}, "", false},
	{"tencent-kms+rsa", kmsemu.Tencent, "ap-guangzhou", func(emu *kmsemu.Server, k kmsemu.Key) string {
		return "tencent-kms+rsa://" + k.Region + "/" + k.ID + "?endpoint=" + emu.URL()
	}, "RSA_2048", false},
	{"tencent-kms+rsa write-only", kmsemu.Tencent, "ap-guangzhou", func(emu *kmsemu.Server, k kmsemu.Key) string {
		return "tencent-kms+rsa://" + k.Region + "/" + k.ID + "?endpoint=" + emu.URL()
	}, "RSA_2048", true},
}

type phase struct {
	name    string
	calls   int
	elapsed time.Duration
}

func main() {
	files := flag.Int("files", 10000, "number of small files")
	latency := flag.Duration("latency", 20*time.Millisecond, "KMS latency to compare against none")
	bin := flag.String("kmsfs", "bin/kmsfs", "kmsfs binary")
	reps := flag.Int("reps", 2, "repetitions of each latency (the fastest counts)")
	which := flag.String("providers", "alibaba-kms,alibaba-kms-instance,tencent-kms,huawei-kms,tencent-kms+rsa,tencent-kms+rsa write-only", "providers to measure, comma-separated")
	flag.Parse()
	log.SetFlags(0)

	cert, err := os.ReadFile(filepath.Join(instFixtures, "clientKey_KAAP.test.cert.pem"))
	if err != nil {
		log.Fatalf("%v (run keylife from the repository root)", err)
	}
	emu := kmsemu.New(kmsemu.Config{TLSAddr: "127.0.0.1:0", Credentials: []kmsemu.Credential{
		{Cloud: kmsemu.Alibaba, ID: akID, Secret: akSecret},
		{Cloud: kmsemu.Tencent, ID: tcID, Secret: tcSecret},
		{Cloud: kmsemu.Huawei, ID: hwAK, Secret: hwSK},
		{Cloud: kmsemu.AlibabaInstance, ID: instKeyID, PublicKey: string(cert)},
	}})
	if err := emu.Start(); err != nil {
		log.Fatal(err)
	}
	defer emu.Close()
	if err := setEnv(emu); err != nil {
		log.Fatal(err)
	}

	for _, p := range providers {
		if !strings.Contains(","+*which+",", ","+p.scheme+",") {
			continue
		}
		// Alternate the latencies over the repetitions and keep each
		// phase's fastest run: a create right after the previous run's
		// files were deleted is slowed by the backing filesystem,
		// whichever latency runs.
		results := map[time.Duration][]phase{}
		for r := 0; r < *reps; r++ {
			for _, lat := range []time.Duration{*latency, 0} {
				got := run(emu, p, *bin, *files, lat)
				if results[lat] == nil {
					results[lat] = got
					continue
				}
				for i := range got {
					if got[i].elapsed < results[lat][i].elapsed {
						results[lat][i] = got[i]
					}
				}
			}
		}
		fmt.Printf("\n%s:\n\n", p.scheme)
		fmt.Printf("| phase (%d files) | KMS calls, 0 ms | elapsed, 0 ms | KMS calls, %v | elapsed, %v | ratio |\n", *files, *latency, *latency)
		fmt.Println("|---|---:|---:|---:|---:|---:|")
		for i, ph := range results[0] {
			q := results[*latency][i]
			fmt.Printf("| %s | %d | %.2f s | %d | %.2f s | %.2f |\n", ph.name, ph.calls, ph.elapsed.Seconds(), q.calls, q.elapsed.Seconds(), q.elapsed.Seconds()/ph.elapsed.Seconds())
		}
	}
}

// setEnv gives the kmsfs commands every provider's credentials.
func setEnv(emu *kmsemu.Server) error {
	dir, err := os.MkdirTemp("", "kmsfs-keylife-creds")
	if err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(instFixtures, "clientKey_KAAP.test.json"))
	if err != nil {
		return err
	}
	keyFile, caFile := filepath.Join(dir, "clientKey.json"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(caFile, emu.CACertPEM(), 0o644); err != nil {
		return err
	}
	for k, v := range map[string]string{
		"ALIBABA_CLOUD_ACCESS_KEY_ID": akID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": akSecret,
		"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true", "ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true",
		"TENCENTCLOUD_SECRET_ID": tcID, "TENCENTCLOUD_SECRET_KEY": tcSecret,
		"HUAWEICLOUD_SDK_AK": hwAK, "HUAWEICLOUD_SDK_SK": hwSK,
		"ALIBABA_KMS_INSTANCE_CLIENT_KEY_FILE": keyFile, "ALIBABA_KMS_INSTANCE_CLIENT_KEY_PASSWORD": instPassword,
		"ALIBABA_KMS_INSTANCE_CA_FILE": caFile,
	} {
		os.Setenv(k, v)
	}
	return nil
}

func run(emu *kmsemu.Server, p provider, bin string, n int, lat time.Duration) []phase {
	emu.ClearFaults()
	spec := kmsemu.KeySpec{Cloud: p.cloud, Region: p.region, Spec: p.spec}
	if p.cloud == kmsemu.Huawei {
		spec.Project = hwProject
	}
	keyA, err := emu.CreateKey(spec)
	if err != nil {
		log.Fatal(err)
	}
	keyB, err := emu.CreateKey(spec)
	if err != nil {
		log.Fatal(err)
	}
	uri := func(k kmsemu.Key) string { return p.uri(emu, k) }
	dir, err := os.MkdirTemp("", "kmsfs-keylife")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cipher, mnt := filepath.Join(dir, "cipher"), filepath.Join(dir, "mnt")
	os.Mkdir(cipher, 0o700)
	os.Mkdir(mnt, 0o700)
	// The writing machine and the reading one have trust stores of their
	// own; unless the provider is write-only they are the same.
	writer, reader := filepath.Join(dir, "writer"), filepath.Join(dir, "reader")
	if !p.writeOnly {
		reader = writer
	}
	home := writer
	kmsfs := func(args ...string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
		if home == writer && p.writeOnly {
			// The write-only machine holds no credential at all.
			cmd.Env = append(cmd.Env, "TENCENTCLOUD_SECRET_ID=", "TENCENTCLOUD_SECRET_KEY=")
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			log.Fatalf("kmsfs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if p.writeOnly {
		pub, err := emu.PublicKeyPEM(keyA.ID)
		if err != nil {
			log.Fatal(err)
		}
		pemFile := filepath.Join(dir, "public.pem")
		if err := os.WriteFile(pemFile, pub, 0o644); err != nil {
			log.Fatal(err)
		}
		kmsfs("init", "--write-only", "--key", uri(keyA), "--public-key", pemFile, cipher)
	} else {
		kmsfs("init", "--key", uri(keyA), cipher)
	}
	if lat > 0 {
		emu.SetFaults(kmsemu.Fault{Latency: kmsemu.Duration(lat)})
	}
	calls := func() int { return emu.Count(p.cloud, "", "") }
	var out []phase
	measure := func(name string, f func()) {
		c0, t0 := calls(), time.Now()
		f()
		out = append(out, phase{name, calls() - c0, time.Since(t0)})
	}
	kmsfs("mount", cipher, mnt)
	defer exec.Command("umount", "-l", mnt).Run()
	measure("create (mounted)", func() {
		for i := 0; i < n; i++ {
			p := filepath.Join(mnt, fmt.Sprintf("d%02d", i%100), fmt.Sprintf("f%05d", i))
			if i < 100 {
				os.Mkdir(filepath.Dir(p), 0o755)
			}
			if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
				log.Fatal(err)
			}
		}
	})
	kmsfs("umount", mnt)
	if home != reader {
		home = reader
		kmsfs("trust", "--yes", cipher)
	}
	measure("mount and read all", func() {
		kmsfs("mount", cipher, mnt)
		for i := 0; i < n; i++ {
			p := filepath.Join(mnt, fmt.Sprintf("d%02d", i%100), fmt.Sprintf("f%05d", i))
			if b, err := os.ReadFile(p); err != nil || string(b) != p {
				log.Fatalf("read %s: %v", p, err)
			}
		}
	})
	kmsfs("umount", mnt)
	measure("rewrap --add (unmounted)", func() {
		kmsfs("rewrap", "--quiet", "--add", uri(keyB), cipher)
	})
	return out
}
