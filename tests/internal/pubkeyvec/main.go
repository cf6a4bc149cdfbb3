// Command pubkeyvec writes a public-key slot vector of docs/FORMAT.md
// ("Public-key slots"): with -alg rsa (the default) OUT/pubkey.txt, with
// -alg sm2 OUT/pubkey-sm2.txt. RSA-OAEP and SM2 encryption are
// randomised, so each file is written once and checked in;
// tests/vectors_pubkey_test.go checks them.
package main

import (
	"bytes"
	"context"
	"crypto"
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

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

const (
	ctxA = `{"kmsfs":"v1","volume":"00112233445566778899aabbccddeeff"}`
	ctxB = `{"kmsfs":"v1","volume":"ffeeddccbbaa99887766554433221100"}`
)

func main() {
	out := flag.String("out", "tests/testdata/vectors-v2", "output directory")
	alg := flag.String("alg", "rsa", "the key's algorithm: rsa (pubkey.txt) or sm2 (pubkey-sm2.txt)")
	flag.Parse()
	var (
		pub         crypto.PublicKey
		p8          []byte
		uri, file   string
		description string
		err         error
	)
	switch *alg {
	case "rsa":
		priv, gerr := rsa.GenerateKey(rand.Reader, 2048)
		if gerr != nil {
			log.Fatal(gerr)
		}
		pub, uri, file = &priv.PublicKey, "tencent-kms+rsa://ap-guangzhou/vector-key", "pubkey.txt"
		description = "an RSA-2048 key"
		p8, err = x509.MarshalPKCS8PrivateKey(priv)
	case "sm2":
		priv, gerr := sm2.GenerateKey(rand.Reader)
		if gerr != nil {
			log.Fatal(gerr)
		}
		pub, uri, file = &priv.PublicKey, "tencent-kms+sm2://ap-guangzhou/vector-key", "pubkey-sm2.txt"
		description = "an SM2 key (id-ecPublicKey on the curve 1.2.156.10197.1.301)"
		p8, err = smx509.MarshalPKCS8PrivateKey(priv)
	default:
		log.Fatalf("-alg %q: want rsa or sm2", *alg)
	}
	if err != nil {
		log.Fatal(err)
	}
	k, err := pubkey.New(uri, pub, nil)
	if err != nil {
		log.Fatal(err)
	}
	dkBytes, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	dk, err := keyring.NewKeyFrom(bytes.Clone(dkBytes)) // NewKeyFrom wipes its argument
	if err != nil {
		log.Fatal(err)
	}
	wrap := func(encCtx string) []byte {
		w, err := k.Wrap(context.Background(), dk, []byte(encCtx))
		if err != nil {
			log.Fatal(err)
		}
		return w
	}
	wA, wB := wrap(ctxA), wrap(ctxB)
	var b strings.Builder
	fmt.Fprintf(&b, "comment: public-key slots (docs/FORMAT.md): %s, PKCS #8 DER in hex\n", description)
	fmt.Fprintf(&b, "private-key: %x\n\n", p8)
	fmt.Fprintf(&b, "vector: ok\ncomment: a data key wrapped for volume 00112233...\ncontext: %s\nwrapped: %x\nexpect: ok\ndata-key: %x\n\n", ctxA, wA, dkBytes)
	fmt.Fprintf(&b, "vector: other-context\ncomment: the same data key wrapped for another volume, read as if for volume 00112233...: refused\ncontext: %s\nwrapped: %x\nexpect: refused\n", ctxA, wB)
	if *alg == "sm2" {
		plain, err := pubkey.SM2Plain(wA)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Fprintf(&b, "\nvector: plain-encoding\ncomment: the ok vector's ciphertext in the plain encoding 04 || x || y || C3 || C2, not the DER one: refused\ncontext: %s\nwrapped: %x\nexpect: refused\n", ctxA, plain)
		for wA[1] != 0x81 { // a SEQUENCE of 128 to 255 bytes, as nearly always
			wA = wrap(ctxA)
		}
		long := append([]byte{0x30, 0x82, 0x00}, wA[2:]...)
		fmt.Fprintf(&b, "\nvector: long-length\ncomment: a good ciphertext whose SEQUENCE length is written in three bytes (82 00 LL), not in DER's two: refused\ncontext: %s\nwrapped: %x\nexpect: refused\n", ctxA, long)
	}
	if err := os.WriteFile(filepath.Join(*out, file), []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}
