package huawei

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	kms "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2/model"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// Operations of the asymmetric calls, as they appear in errors.
const (
	opGetPublicKey = "get-publickey"
	opDecryptData  = "decrypt-data"
)

// AsymKey is a Huawei Cloud KMS asymmetric key (key_spec RSA_2048,
// RSA_3072 or RSA_4096, key_usage ENCRYPT_DECRYPT), used by the
// Scheme+"+rsa" keyrings of package keyring/pubkey. It is safe for
// concurrent use.
type AsymKey struct {
	k *Keyring
}

var _ keyring.AsymmetricKey = (*AsymKey)(nil)

// OpenAsymmetric opens the asymmetric key named by u, a URI of the form
// Open takes (huawei-kms://REGION/KEYID?project=...&endpoint=...). It
// resolves credentials from the SDK's chain but makes no KMS call.
func OpenAsymmetric(ctx context.Context, u *url.URL) (*AsymKey, error) {
	k, err := Open(ctx, u)
	if err != nil {
		return nil, err
	}
	return &AsymKey{k: k}, nil
}

// URI returns the key URI (in Scheme, not Scheme+"+rsa").
func (a *AsymKey) URI() string { return a.k.URI() }

// PublicKey fetches the key's public key with get-publickey and returns
// it as a DER SubjectPublicKeyInfo. A key whose public key is not an RSA
// key kmsfs can use is reported as keyring.ErrNotAsymmetric.
func (a *AsymKey) PublicKey(ctx context.Context) ([]byte, error) {
	var resp *model.ShowPublicKeyResponse
	err := a.k.call(ctx, opGetPublicKey, func(c *kms.KmsClient) error {
		r, err := c.ShowPublicKey(&model.ShowPublicKeyRequest{Body: &model.OperateKeyRequestBody{KeyId: a.k.uri.Key}})
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	if id := str(resp.KeyId); id != "" && id != a.k.uri.Key {
		return nil, a.k.malformed(opGetPublicKey, "answer names key "+id)
	}
	raw, err := publicKeyBytes(str(resp.PublicKey))
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

// publicKeyBytes returns public_key as pubkey.ParsePublicKey takes it: the
// PEM the service sends, or the DER inside a bare base64 text.
func publicKeyBytes(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return nil, errors.New("no public_key")
	case strings.HasPrefix(s, "-----BEGIN"):
		return []byte(s), nil
	}
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		return nil, errors.New("public_key is neither PEM nor base64")
	}
	return der, nil
}

// DecryptOAEP has KMS decrypt ciphertext with decrypt-data,
// RSAES_OAEP_SHA_256. The caller clears the returned plaintext. A
// ciphertext the key does not decrypt is keyring.ErrUnwrap; a key that is
// not an RSA decryption key is keyring.ErrNotAsymmetric.
func (a *AsymKey) DecryptOAEP(ctx context.Context, ciphertext []byte) ([]byte, error) {
	if n := len(ciphertext); n < pubkey.MinBits/8 || n > pubkey.MaxBits/8 {
		return nil, a.k.base(opDecryptData).With(keyring.ErrUnwrap, fmt.Sprintf("ciphertext of %d bytes: want %d to %d", n, pubkey.MinBits/8, pubkey.MaxBits/8))
	}
	ct := base64.StdEncoding.EncodeToString(ciphertext)
	alg := model.GetDecryptDataRequestBodyEncryptionAlgorithmEnum().RSAES_OAEP_SHA_256
	key := a.k.uri.Key
	var resp *model.DecryptDataResponse
	err := a.k.call(ctx, opDecryptData, func(c *kms.KmsClient) error {
		r, err := c.DecryptData(&model.DecryptDataRequest{Body: &model.DecryptDataRequestBody{
			CipherText:          ct,
			EncryptionAlgorithm: &alg,
			KeyId:               &key,
		}})
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	if id := str(resp.KeyId); id != "" && id != a.k.uri.Key {
		return nil, a.k.malformed(opDecryptData, "answer names key "+id)
	}
	// plain_text holds the plaintext as text, which binary plaintexts do
	// not survive: plain_text_base64 is the one to read. The SDK hands it
	// over as a string: that copy stays on the heap until the garbage
	// collector reuses it.
	b64 := str(resp.PlainTextBase64)
	if b64 == "" {
		return nil, a.k.malformed(opDecryptData, "no plain_text_base64")
	}
	pt, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		clear(pt)
		return nil, a.k.malformed(opDecryptData, "plain_text_base64 is not base64")
	}
	return pt, nil
}
