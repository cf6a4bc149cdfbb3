package instance

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"

	"github.com/alibabacloud-go/tea/tea"
	dkms "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/sdk"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// AlgorithmOAEP is the instance's name for RSAES-OAEP with SHA-256 and
// MGF1 with SHA-256, the only asymmetric algorithm kmsfs uses.
const AlgorithmOAEP = "RSAES_OAEP_SHA_256"

// The API names of the asymmetric calls, as errors show them.
const (
	opGetPublicKey = "GetPublicKey"
	opDecryptOAEP  = "Decrypt"
)

// asymmetricOp reports whether op is one of the calls only an asymmetric
// key serves.
func asymmetricOp(op string) bool { return op == opGetPublicKey || op == opDecryptOAEP }

// maxCiphertext is the RSAES-OAEP ciphertext of the largest key
// accepted, in bytes.
const maxCiphertext = pubkey.MaxBits / 8

// AsymKey is an RSA decryption key in a KMS instance: its private half
// stays in the instance, which decrypts with it. It implements
// keyring.AsymmetricKey and is safe for concurrent use.
type AsymKey struct {
	k *Keyring // the endpoint, key, SDK client and call policy
}

var _ keyring.AsymmetricKey = (*AsymKey)(nil)

// OpenAsymmetric opens the RSA key named by u, a URI of the form
// alibaba-kms-instance://ENDPOINT/KEY as for Open: it reads the client
// key, its password and the CA from the environment and builds the SDK
// client, but makes no call to the instance.
func OpenAsymmetric(ctx context.Context, u *url.URL) (*AsymKey, error) {
	k, err := Open(ctx, u)
	if err != nil {
		return nil, err
	}
	return &AsymKey{k: k}, nil
}

// URI returns the key URI (in Scheme).
func (a *AsymKey) URI() string { return a.k.raw }

// PublicKey fetches the key's public key with GetPublicKey and returns it
// as a DER SubjectPublicKeyInfo. A key whose public key is not RSA (an
// EC or SM2 key) is an error wrapping keyring.ErrNotAsymmetric.
func (a *AsymKey) PublicKey(ctx context.Context) ([]byte, error) {
	k := a.k
	var resp *dkms.GetPublicKeyResponse
	err := k.call(ctx, opGetPublicKey, func() error {
		r, err := k.client.GetPublicKeyWithOptions(&dkms.GetPublicKeyRequest{KeyId: tea.String(k.key)}, k.runtime())
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	if id := tea.StringValue(resp.KeyId); k.keyID && id != k.key {
		return nil, k.base(opGetPublicKey).Malformed("the public key of key " + id)
	}
	block, _ := pem.Decode([]byte(tea.StringValue(resp.PublicKey)))
	if block == nil {
		return nil, k.base(opGetPublicKey).Malformed("PublicKey is not PEM")
	}
	var pub any
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, k.base(opGetPublicKey).Malformed(fmt.Sprintf("PublicKey is a PEM %q, not a PUBLIC KEY", block.Type))
	}
	if err != nil {
		return nil, k.base(opGetPublicKey).Malformed("PublicKey: " + err.Error())
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		e := k.base(opGetPublicKey).With(keyring.ErrNotAsymmetric, fmt.Sprintf("its public key is a %T, not RSA", pub))
		e.Hint = "kmsfs wraps data keys under RSA keys only (RSA_2048, RSA_3072, RSA_4096)"
		return nil, e
	}
	der, err := x509.MarshalPKIXPublicKey(rk)
	if err != nil {
		return nil, k.base(opGetPublicKey).Malformed("PublicKey: " + err.Error())
	}
	return der, nil
}

// DecryptOAEP has the instance decrypt ciphertext with Decrypt, Algorithm
// RSAES_OAEP_SHA_256. The returned plaintext is the caller's to clear. A
// ciphertext the key does not decrypt is an error wrapping
// keyring.ErrUnwrap; a key that is not an RSA decryption key one wrapping
// keyring.ErrNotAsymmetric.
func (a *AsymKey) DecryptOAEP(ctx context.Context, ciphertext []byte) ([]byte, error) {
	k := a.k
	if len(ciphertext) == 0 || len(ciphertext) > maxCiphertext {
		return nil, k.base(opDecryptOAEP).With(keyring.ErrUnwrap, fmt.Sprintf("a ciphertext of %d bytes is no RSA ciphertext of at most %d bits", len(ciphertext), pubkey.MaxBits))
	}
	var resp *dkms.DecryptResponse
	err := k.call(ctx, opDecryptOAEP, func() error {
		r, err := k.client.DecryptWithOptions(&dkms.DecryptRequest{
			KeyId: tea.String(k.key), CiphertextBlob: ciphertext, Algorithm: tea.String(AlgorithmOAEP),
		}, k.runtime())
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	if id := tea.StringValue(resp.KeyId); k.keyID && id != k.key {
		clear(resp.Plaintext)
		return nil, k.base(opDecryptOAEP).Malformed("decrypted by key " + id)
	}
	if len(resp.Plaintext) == 0 {
		return nil, k.base(opDecryptOAEP).Malformed("no Plaintext")
	}
	// The SDK made resp.Plaintext for this call alone (it decodes the
	// answer into fresh buffers): it is the caller's.
	return resp.Plaintext, nil
}
