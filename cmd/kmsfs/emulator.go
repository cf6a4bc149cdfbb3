package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kmsfs/kmsfs/keyring/kmsemu"
)

func init() {
	commands["kms-emulator"] = runEmulator
}

const emulatorUsage = `Usage: kmsfs kms-emulator [--listen 127.0.0.1:PORT] [--state FILE]
           [--alibaba ID:SECRET] [--tencent ID:SECRET] [--huawei AK:SK]
           [--key CLOUD:REGION[:PROJECT][:alias/NAME]]...
           [--tls-listen 127.0.0.1:PORT --ca-out FILE
            --alibaba-instance KEY_ID:CERT.pem]

Runs a local emulator of the Alibaba Cloud, Tencent Cloud and Huawei Cloud
KMS APIs on a loopback address, for trying kmsfs and for tests. It checks
request signatures against its credentials and keeps real keys.

Without --alibaba/--tencent/--huawei it makes up one credential per cloud;
without --key (and no keys in --state) it creates one key per cloud. It
prints the environment variables and key URIs to use, then serves until
interrupted. Faults and key states are controlled over HTTP under
/_emulator/ (see docs/KMS.md).

Options:
    --listen ADDR     loopback address to listen on (default 127.0.0.1:8900)
    --state FILE      load keys and credentials from FILE and save changes
                      to it (key secrets included: keep it private)
    --alibaba ID:SECRET, --tencent ID:SECRET, --huawei AK:SK
                      accept this access key (repeatable)
    --key CLOUD:REGION[:PROJECT][:alias/NAME]
                      create a key (PROJECT for huawei; alias for alibaba;
                      CLOUD alibaba-instance with REGION the instance ID)
    --tls-listen ADDR also serve over TLS on this loopback address: the
                      KMS instance protocol (alibaba-kms-instance) needs it
    --ca-out FILE     write the CA certificate of the TLS listener there
                      (ALIBABA_KMS_INSTANCE_CA_FILE)
    --alibaba-instance KEY_ID:CERT.pem
                      accept this KMS instance client key (its ID, and its
                      certificate or public key in PEM; repeatable)
`

func runEmulator(args []string) int {
	fs := flag.NewFlagSet("kms-emulator", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8900", "")
	state := fs.String("state", "", "")
	var ali, tc, hw, keys stringList
	fs.Var(&ali, "alibaba", "")
	fs.Var(&tc, "tencent", "")
	fs.Var(&hw, "huawei", "")
	fs.Var(&keys, "key", "")
	tlsListen := fs.String("tls-listen", "", "")
	caOut := fs.String("ca-out", "", "")
	var inst stringList
	fs.Var(&inst, "alibaba-instance", "")
	pos, code, ok := parseFlags(fs, args, emulatorUsage)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return usageError("kms-emulator takes no arguments")
	}
	var creds []kmsemu.Credential
	for _, c := range []struct {
		cloud kmsemu.Cloud
		list  stringList
	}{{kmsemu.Alibaba, ali}, {kmsemu.Tencent, tc}, {kmsemu.Huawei, hw}} {
		for _, v := range c.list {
			id, secret, found := strings.Cut(v, ":")
			if !found || id == "" || secret == "" {
				return usageError("--%s %q: want ID:SECRET", c.cloud, v)
			}
			creds = append(creds, kmsemu.Credential{Cloud: c.cloud, ID: id, Secret: secret})
		}
	}
	for _, v := range inst {
		id, certFile, found := strings.Cut(v, ":")
		if !found || id == "" || certFile == "" {
			return usageError("--alibaba-instance %q: want KEY_ID:CERT.pem", v)
		}
		pem, err := os.ReadFile(certFile)
		if err != nil {
			return errorf(exitError, "--alibaba-instance: %v", err)
		}
		creds = append(creds, kmsemu.Credential{Cloud: kmsemu.AlibabaInstance, ID: id, PublicKey: string(pem)})
	}
	if len(inst) > 0 && *tlsListen == "" {
		return usageError("--alibaba-instance needs --tls-listen (the KMS instance protocol is served over TLS only)")
	}
	var specs []kmsemu.KeySpec
	for _, v := range keys {
		spec, err := parseKeySpec(v)
		if err != nil {
			return usageError("--key %q: %v", v, err)
		}
		specs = append(specs, spec)
	}
	s := kmsemu.New(kmsemu.Config{Addr: *listen, TLSAddr: *tlsListen, StateFile: *state})
	if err := s.Start(); err != nil {
		return errorf(exitError, "%v", err)
	}
	defer s.Close()
	if *caOut != "" {
		if *tlsListen == "" {
			return usageError("--ca-out needs --tls-listen")
		}
		if err := os.WriteFile(*caOut, s.CACertPEM(), 0o644); err != nil {
			return errorf(exitError, "--ca-out: %v", err)
		}
	}
	// Credentials and keys: the ones asked for, else those in the state
	// file, else made up.
	have := map[kmsemu.Cloud]kmsemu.Credential{}
	for _, c := range creds {
		if err := s.AddCredential(c); err != nil {
			return errorf(exitError, "%v", err)
		}
		if _, ok := have[c.Cloud]; !ok {
			have[c.Cloud] = c
		}
	}
	for _, c := range []kmsemu.Cloud{kmsemu.Alibaba, kmsemu.Tencent, kmsemu.Huawei} {
		if _, ok := have[c]; ok || *state != "" && s.HasCredential(c) {
			continue
		}
		cr := kmsemu.Credential{Cloud: c, ID: strings.ToUpper(string(c[:3])) + "EMU" + randHex(8), Secret: randHex(16)}
		if err := s.AddCredential(cr); err != nil {
			return errorf(exitError, "%v", err)
		}
		have[c] = cr
	}
	if len(specs) == 0 && len(s.Keys()) == 0 {
		specs = []kmsemu.KeySpec{
			{Cloud: kmsemu.Alibaba, Region: "cn-hangzhou", Alias: "alias/kmsfs"},
			{Cloud: kmsemu.Tencent, Region: "ap-guangzhou"},
			{Cloud: kmsemu.Huawei, Region: "cn-north-4", Project: randHex(16)},
		}
	}
	for _, sp := range specs {
		if _, err := s.CreateKey(sp); err != nil {
			return errorf(exitError, "%v", err)
		}
	}
	printEmulator(s, have)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return exitOK
}

// parseKeySpec parses CLOUD:REGION[:PROJECT][:alias/NAME].
func parseKeySpec(v string) (kmsemu.KeySpec, error) {
	p := strings.Split(v, ":")
	if len(p) < 2 || len(p) > 4 {
		return kmsemu.KeySpec{}, fmt.Errorf("want CLOUD:REGION[:PROJECT][:alias/NAME]")
	}
	spec := kmsemu.KeySpec{Cloud: kmsemu.Cloud(p[0]), Region: p[1]}
	for _, extra := range p[2:] {
		if strings.HasPrefix(extra, "alias/") {
			spec.Alias = extra
		} else {
			spec.Project = extra
		}
	}
	if spec.Cloud == kmsemu.Huawei && spec.Project == "" {
		spec.Project = randHex(16)
	}
	return spec, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func printEmulator(s *kmsemu.Server, creds map[kmsemu.Cloud]kmsemu.Credential) {
	ep := s.URL()
	fmt.Printf("kmsfs KMS emulator listening on %s (admin API: %s/_emulator/keys, /_emulator/faults)\n\n", s.URL(), s.URL())
	fmt.Println("# Credentials (use in the shell that runs kmsfs):")
	if c, ok := creds[kmsemu.Alibaba]; ok {
		fmt.Printf("export ALIBABA_CLOUD_ACCESS_KEY_ID=%s ALIBABA_CLOUD_ACCESS_KEY_SECRET=%s\n", c.ID, c.Secret)
	}
	if c, ok := creds[kmsemu.Tencent]; ok {
		fmt.Printf("export TENCENTCLOUD_SECRET_ID=%s TENCENTCLOUD_SECRET_KEY=%s\n", c.ID, c.Secret)
	}
	if c, ok := creds[kmsemu.Huawei]; ok {
		fmt.Printf("export HUAWEICLOUD_SDK_AK=%s HUAWEICLOUD_SDK_SK=%s\n", c.ID, c.Secret)
	}
	if s.TLSAddr() != "" {
		fmt.Printf("# KMS instance protocol over TLS on %s; client keys from --alibaba-instance:\n", s.TLSAddr())
		fmt.Println("export ALIBABA_KMS_INSTANCE_CLIENT_KEY_FILE=... ALIBABA_KMS_INSTANCE_CLIENT_KEY_PASSWORD=... ALIBABA_KMS_INSTANCE_CA_FILE=<--ca-out>")
	}
	fmt.Println("\n# Key URIs:")
	for _, k := range s.Keys() {
		state := ""
		if k.State != kmsemu.Enabled {
			state = "   # " + string(k.State)
		}
		switch k.Cloud {
		case kmsemu.Alibaba:
			fmt.Printf("alibaba-kms://%s/%s?endpoint=%s%s\n", k.Region, k.ID, ep, state)
			for _, a := range k.Aliases {
				fmt.Printf("alibaba-kms://%s/%s?endpoint=%s%s\n", k.Region, a, ep, state)
			}
		case kmsemu.Tencent:
			fmt.Printf("tencent-kms://%s/%s?endpoint=%s%s\n", k.Region, k.ID, ep, state)
		case kmsemu.Huawei:
			fmt.Printf("huawei-kms://%s/%s?project=%s&endpoint=%s%s\n", k.Region, k.ID, k.Project, ep, state)
		case kmsemu.AlibabaInstance:
			if s.TLSAddr() != "" {
				fmt.Printf("alibaba-kms-instance://%s/%s%s\n", s.TLSAddr(), k.ID, state)
			}
		}
	}
	fmt.Println("\n# Example: kmsfs init --key 'URI' CIPHERDIR   (quote the URI)")
}
