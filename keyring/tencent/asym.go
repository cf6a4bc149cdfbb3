package tencent

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"

	kms "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/kms/v20190118"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// AlgorithmOAEPSHA256 is the AsymmetricRsaDecrypt algorithm kmsfs uses:
// RSAES-OAEP with SHA-256 (and MGF1 with SHA-256, empty label).
const AlgorithmOAEPSHA256 = "RSAES_OAEP_SHA_256"

// Operations of the asymmetric calls, as they appear in errors.
const (
	opGetPublicKey = "GetPublicKey"
	opRSADecrypt   = "AsymmetricRsaDecrypt"
)

// AsymKey is a Tencent Cloud KMS asymmetric key (KeyUsage
// ASYMMETRIC_DECRYPT_RSA_*), used by the Scheme+"+rsa" keyrings of package
// keyring/pubkey. It is safe for concurrent use.
type AsymKey struct {
	k *Keyring
}

var _ keyring.AsymmetricKey = (*AsymKey)(nil)

// OpenAsymmetric opens the asymmetric key named by u, a URI of the form
// Open takes (tencent-kms://REGION/KEYID?endpoint=...). It resolves
// credentials from the SDK's chain but makes no KMS call.
func OpenAsymmetric(ctx context.Context, u *url.URL) (*AsymKey, error) {
	k, err := Open(ctx, u)
	if err != nil {
		return nil, err
	}
	return &AsymKey{k: k}, nil
}

// URI returns the key URI (in Scheme, not Scheme+"+rsa").
func (a *AsymKey) URI() string { return a.k.URI() }

// PublicKey fetches the key's public key with GetPublicKey and returns it
// as a DER SubjectPublicKeyInfo. A key whose public key is not an RSA key
// kmsfs can use is reported as keyring.ErrNotAsymmetric.
func (a *AsymKey) PublicKey(ctx context.Context) ([]byte, error) {
	var out *kms.GetPublicKeyResponseParams
	err := a.k.call(ctx, opGetPublicKey, func(actx context.Context) error {
		req := kms.NewGetPublicKeyRequest()
		req.KeyId = ptr(a.k.uri.Key)
		resp, err := a.k.client.GetPublicKeyWithContext(actx, req)
		if err != nil {
			return err
		}
		if resp.Response == nil {
			return a.k.malformed(opGetPublicKey, "empty Response")
		}
		out = resp.Response
		return nil
	})
	if err != nil {
		return nil, err
	}
	if id := str(out.KeyId); id != "" && id != a.k.uri.Key {
		return nil, a.k.malformed(opGetPublicKey, "answer names key "+id)
	}
	raw, err := publicKeyBytes(str(out.PublicKey), str(out.PublicKeyPem))
	if err != nil {
		return nil, a.k.malformed(opGetPublicKey, err.Error())
	}
	pub, err := pubkey.ParsePublicKey(raw)
	if err != nil {
		return nil, a.k.base(opGetPublicKey).With(keyring.ErrNotAsymmetric, "the key's public key: "+err.Error())
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, a.k.malformed(opGetPublicKey, "public key: "+err.Error())
	}
	return der, nil
}

// publicKeyBytes returns the DER in PublicKey (base64) or, if that is
// empty, the PEM in PublicKeyPem.
func publicKeyBytes(b64, pemText string) ([]byte, error) {
	if b64 != "" {
		der, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, errors.New("PublicKey is not base64")
		}
		return der, nil
	}
	if pemText != "" {
		return []byte(pemText), nil
	}
	return nil, errors.New("no PublicKey or PublicKeyPem")
}

// DecryptOAEP has KMS decrypt ciphertext with AsymmetricRsaDecrypt,
// RSAES_OAEP_SHA_256. The caller clears the returned plaintext. A
// ciphertext the key does not decrypt is keyring.ErrUnwrap; a key that is
// not an RSA decryption key is keyring.ErrNotAsymmetric.
func (a *AsymKey) DecryptOAEP(ctx context.Context, ciphertext []byte) ([]byte, error) {
	if n := len(ciphertext); n < pubkey.MinBits/8 || n > pubkey.MaxBits/8 {
		return nil, a.k.base(opRSADecrypt).With(keyring.ErrUnwrap, fmt.Sprintf("ciphertext of %d bytes: want %d to %d", n, pubkey.MinBits/8, pubkey.MaxBits/8))
	}
	ct := base64.StdEncoding.EncodeToString(ciphertext)
	var out *kms.AsymmetricRsaDecryptResponseParams
	err := a.k.call(ctx, opRSADecrypt, func(actx context.Context) error {
		req := kms.NewAsymmetricRsaDecryptRequest()
		req.KeyId = ptr(a.k.uri.Key)
		req.Ciphertext = ptr(ct)
		req.Algorithm = ptr(AlgorithmOAEPSHA256)
		resp, err := a.k.client.AsymmetricRsaDecryptWithContext(actx, req)
		if err != nil {
			return err
		}
		if resp.Response == nil {
			return a.k.malformed(opRSADecrypt, "empty Response")
		}
		out = resp.Response
		return nil
	})
	if err != nil {
		return nil, err
	}
	if id := str(out.KeyId); id != "" && id != a.k.uri.Key {
		return nil, a.k.malformed(opRSADecrypt, "answer names key "+id)
	}
	// The SDK hands the plaintext over as a base64 string: that copy stays
	// on the heap until the garbage collector reuses it.
	pt, err := base64.StdEncoding.DecodeString(str(out.Plaintext))
	if err != nil {
		clear(pt)
		return nil, a.k.malformed(opRSADecrypt, "Plaintext is not base64")
	}
	return pt, nil
}
