// Command pubkeyvec writes the public-key slot vector of docs/FORMAT.md
// ("Public-key slots") to OUT/pubkey.txt. RSA-OAEP is randomised, so the
// file is written once and checked in; tests/vectors_v2_test.go checks it.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

func main() {
	out := flag.String("out", "tests/testdata/vectors-v2", "output directory")
	flag.Parse()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		log.Fatal(err)
	}
	k, err := pubkey.New("tencent-kms+rsa://ap-guangzhou/vector-key", &priv.PublicKey, nil)
	if err != nil {
		log.Fatal(err)
	}
	dkBytes, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	dk, err := keyring.NewKeyFrom(bytes.Clone(dkBytes)) // NewKeyFrom wipes its argument
	if err != nil {
		log.Fatal(err)
	}
	ctxA := `{"kmsfs":"v1","volume":"00112233445566778899aabbccddeeff"}`
	ctxB := `{"kmsfs":"v1","volume":"ffeeddccbbaa99887766554433221100"}`
	wA, err := k.Wrap(context.Background(), dk, []byte(ctxA))
	if err != nil {
		log.Fatal(err)
	}
	wB, err := k.Wrap(context.Background(), dk, []byte(ctxB))
	if err != nil {
		log.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "comment: public-key slots (docs/FORMAT.md): an RSA-2048 key, PKCS #8 DER in hex\n")
	fmt.Fprintf(&b, "private-key: %x\n\n", p8)
	fmt.Fprintf(&b, "vector: ok\ncomment: a data key wrapped for volume 00112233...\ncontext: %s\nwrapped: %x\nexpect: ok\ndata-key: %x\n\n", ctxA, wA, dkBytes)
	fmt.Fprintf(&b, "vector: other-context\ncomment: the same data key wrapped for another volume, read as if for volume 00112233...: refused\ncontext: %s\nwrapped: %x\nexpect: refused\n", ctxA, wB)
	if err := os.WriteFile(filepath.Join(*out, "pubkey.txt"), []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}
