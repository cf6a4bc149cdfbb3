package tests

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"os"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// vectorRSA stands in for a key service holding the vector's private key.
type vectorRSA struct{ priv *rsa.PrivateKey }

func (v vectorRSA) URI() string { return "vector://key" }

func (v vectorRSA) PublicKey(context.Context) ([]byte, error) {
	return x509.MarshalPKIXPublicKey(&v.priv.PublicKey)
}

func (v vectorRSA) DecryptOAEP(_ context.Context, ct []byte) ([]byte, error) {
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, v.priv, ct, nil)
	if err != nil {
		return nil, keyring.ErrUnwrap
	}
	return pt, nil
}

// TestPubkeyVectorsV2 checks tests/testdata/vectors-v2/pubkey.txt
// (docs/FORMAT.md, "Public-key slots") twice: with kmsfs's keyring/pubkey,
// and by following the text alone (RSA-OAEP SHA-256 decryption, then the
// 64-byte message and its context digest).
func TestPubkeyVectorsV2(t *testing.T) {
	data, err := os.ReadFile("testdata/vectors-v2/pubkey.txt")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := parseNamesVectors(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 3 {
		t.Fatalf("%d records, want the key and at least two vectors", len(recs))
	}
	p, err := x509.ParsePKCS8PrivateKey(hexField(t, recs[0], "private-key"))
	if err != nil {
		t.Fatal(err)
	}
	priv := p.(*rsa.PrivateKey)
	k, err := pubkey.New("tencent-kms+rsa://ap-guangzhou/vector-key", nil, vectorRSA{priv})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, v := range recs[1:] {
		t.Run(v["vector"], func(t *testing.T) {
			encCtx := []byte(vectorField(t, v, "context"))
			wrapped := hexField(t, v, "wrapped")
			expect := vectorField(t, v, "expect")
			seen[expect] = true

			// From FORMAT.md alone.
			var indep []byte
			msg, err := rsa.DecryptOAEP(sha256.New(), nil, priv, wrapped, nil)
			if err == nil && len(msg) == 64 {
				d := sha256.Sum256(append([]byte("kmsfs rsa-oaep v1\x00"), encCtx...))
				if subtle.ConstantTimeCompare(msg[32:], d[:]) == 1 {
					indep = msg[:32]
				}
			}
			// With kmsfs.
			got, kerr := k.Unwrap(context.Background(), wrapped, encCtx)
			switch expect {
			case "ok":
				want := hexField(t, v, "data-key")
				if !bytes.Equal(indep, want) {
					t.Errorf("FORMAT.md reading: data key %x, want %x", indep, want)
				}
				if kerr != nil {
					t.Fatalf("kmsfs: %v", kerr)
				}
				defer got.Destroy()
				if !bytes.Equal(got.Bytes(), want) {
					t.Errorf("kmsfs: data key differs")
				}
			case "refused":
				if indep != nil {
					t.Error("FORMAT.md reading accepted it")
				}
				if !errors.Is(kerr, keyring.ErrUnwrap) {
					t.Errorf("kmsfs: error = %v, want ErrUnwrap", kerr)
				}
			default:
				t.Fatalf("unknown expect %q", expect)
			}
		})
	}
	if !seen["ok"] || !seen["refused"] {
		t.Errorf("the vectors lack an ok or a refused case: %v", seen)
	}
}
