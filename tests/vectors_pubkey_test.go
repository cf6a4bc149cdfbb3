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

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// vectorKey stands in for a key service holding a vector's private key:
// an RSA key or an SM2 key. Like the services, it decrypts SM2
// ciphertexts given in the DER encoding only.
type vectorKey struct {
	rsa *rsa.PrivateKey
	sm2 *sm2.PrivateKey
}

func (v vectorKey) URI() string { return "vector://key" }

func (v vectorKey) PublicKey(context.Context) ([]byte, error) {
	if v.sm2 != nil {
		return smx509.MarshalPKIXPublicKey(&v.sm2.PublicKey)
	}
	return x509.MarshalPKIXPublicKey(&v.rsa.PublicKey)
}

func (v vectorKey) Decrypt(_ context.Context, alg keyring.AsymAlg, ct []byte) ([]byte, error) {
	switch {
	case alg == keyring.RSAOAEPSHA256 && v.rsa != nil:
		if pt, err := rsa.DecryptOAEP(sha256.New(), nil, v.rsa, ct, nil); err == nil {
			return pt, nil
		}
	case alg == keyring.SM2 && v.sm2 != nil && len(ct) > 0 && ct[0] == 0x30:
		if pt, err := v.sm2.Decrypt(nil, ct, sm2.ASN1DecrypterOpts); err == nil {
			return pt, nil
		}
	}
	return nil, keyring.ErrUnwrap
}

// TestPubkeyVectorsV2 checks tests/testdata/vectors-v2/pubkey.txt (RSA)
// and pubkey-sm2.txt (SM2) (docs/FORMAT.md, "Public-key slots") twice:
// with kmsfs's keyring/pubkey, and by following the text alone
// (decryption with the private key, then the 64-byte message and its
// context digest; for SM2 only the DER encoding of the ciphertext).
func TestPubkeyVectorsV2(t *testing.T) {
	for _, f := range []struct {
		file, uri, label string
		// key parses the PKCS #8 private key into a key service
		// stand-in.
		key func(t *testing.T, p8 []byte) vectorKey
		// decrypt decrypts wrapped as FORMAT.md says, with the gmsm or
		// Go library directly: nil if it does not decrypt.
		decrypt func(k vectorKey, wrapped []byte) []byte
	}{
		{
			file: "testdata/vectors-v2/pubkey.txt", uri: "tencent-kms+rsa://ap-guangzhou/vector-key", label: "kmsfs rsa-oaep v1",
			key: func(t *testing.T, p8 []byte) vectorKey {
				p, err := x509.ParsePKCS8PrivateKey(p8)
				if err != nil {
					t.Fatal(err)
				}
				return vectorKey{rsa: p.(*rsa.PrivateKey)}
			},
			decrypt: func(k vectorKey, w []byte) []byte {
				msg, _ := rsa.DecryptOAEP(sha256.New(), nil, k.rsa, w, nil)
				return msg
			},
		},
		{
			file: "testdata/vectors-v2/pubkey-sm2.txt", uri: "tencent-kms+sm2://ap-guangzhou/vector-key", label: "kmsfs sm2 v1",
			key: func(t *testing.T, p8 []byte) vectorKey {
				p, err := smx509.ParsePKCS8PrivateKey(p8)
				if err != nil {
					t.Fatal(err)
				}
				k, ok := p.(*sm2.PrivateKey)
				if !ok {
					t.Fatalf("the private key is a %T, want SM2", p)
				}
				return vectorKey{sm2: k}
			},
			decrypt: func(k vectorKey, w []byte) []byte {
				// The DER SM2Cipher (SEQUENCE of x, y, C3, C2) and no
				// other spelling: it must encode back to the same bytes.
				plain, err := sm2.ASN1Ciphertext2Plain(w, nil)
				if err != nil {
					return nil
				}
				if again, err := sm2.PlainCiphertext2ASN1(plain, sm2.C1C3C2); err != nil || !bytes.Equal(again, w) {
					return nil
				}
				msg, err := k.sm2.Decrypt(nil, w, sm2.ASN1DecrypterOpts)
				if err != nil {
					return nil
				}
				return msg
			},
		},
	} {
		t.Run(f.file, func(t *testing.T) {
			data, err := os.ReadFile(f.file)
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
			vk := f.key(t, hexField(t, recs[0], "private-key"))
			k, err := pubkey.New(f.uri, nil, vk)
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
					if msg := f.decrypt(vk, wrapped); len(msg) == 64 {
						d := sha256.Sum256(append([]byte(f.label+"\x00"), encCtx...))
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
		})
	}
}
