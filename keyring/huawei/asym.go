package huawei

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	kms "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2/model"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/cloud"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// Operations of the asymmetric calls, as they appear in errors.
const (
	opGetPublicKey = "get-publickey"
	opDecryptData  = "decrypt-data"
)

// cipher_text is "^[0-9a-zA-Z+/=]{128,5648}$" (the SDK's model): the
// base64 of 96 to 4236 bytes. Every RSA ciphertext kmsfs sends fits, and
// so does every SM2 one (at least 108 bytes).
const (
	minCipherText = 96
	maxCipherText = 4236
)

// hintAsym says which key each scheme names, for a key of the wrong kind.
const hintAsym = "the key is not an ENCRYPT_DECRYPT key of the kind the scheme names: an RSA key (key_spec RSA_*) is named " +
	Scheme + pubkey.Suffix + "://REGION/KEYID?project=PROJECT_ID, an SM2 key (key_spec SM2) " + Scheme + pubkey.SuffixSM2 +
	"://REGION/KEYID?project=PROJECT_ID, a symmetric key " + Scheme + "://REGION/KEYID?project=PROJECT_ID"

// AsymKey is a Huawei Cloud KMS asymmetric key (key_spec RSA_2048,
// RSA_3072, RSA_4096 or SM2, key_usage ENCRYPT_DECRYPT), used by the
// Scheme+"+rsa" and Scheme+"+sm2" keyrings of package keyring/pubkey. It
// is safe for concurrent use.
//
// SM2: decrypt-data with encryption_algorithm SM2_ENCRYPT is sent the DER
// SM2Cipher of GM/T 0009 (C1C3C2) that public-key slots store, as it is.
// Huawei does not document the encoding it takes; the DER form is what
// its encrypt-data answers for SM2 keys ("HUAWEI Cloud KMS (DEW) sm2
// encryption result is ASN.1 encoding format", github.com/emmansun/gmsm
// issue 9, 2021), and decrypt-data takes back what encrypt-data makes.
// The public key of an SM2 key is taken as get-publickey answers it, PEM
// or base64 of a SubjectPublicKeyInfo, as for RSA keys.
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

// URI returns the key URI (in Scheme, not Scheme+"+rsa" or "+sm2").
func (a *AsymKey) URI() string { return a.k.URI() }

// PublicKey fetches the key's public key with get-publickey and returns
// it as a DER SubjectPublicKeyInfo. A key whose public key is neither an
// RSA key kmsfs can use nor an SM2 key is reported as
// keyring.ErrNotAsymmetric.
func (a *AsymKey) PublicKey(ctx context.Context) ([]byte, error) {
	var resp *model.ShowPublicKeyResponse
	err := a.k.call(ctx, opGetPublicKey, func(c *kms.KmsClient) error {
		r, err := c.ShowPublicKey(&model.ShowPublicKeyRequest{Body: &model.OperateKeyRequestBody{KeyId: a.k.uri.Key}})
		resp = r
		return err
	})
	if err != nil {
		return nil, asymHints(err)
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
		e := a.k.base(opGetPublicKey).With(keyring.ErrNotAsymmetric, "the key's public key: "+err.Error())
		e.Hint = hintAsym
		return nil, e
	}
	der, err := pubkey.MarshalPublicKey(pub)
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

// Decrypt has KMS decrypt ciphertext with decrypt-data:
// encryption_algorithm RSAES_OAEP_SHA_256 for keyring.RSAOAEPSHA256,
// SM2_ENCRYPT for keyring.SM2 (the DER ciphertext as it is). The caller
// clears the returned plaintext. A ciphertext the key does not decrypt
// is keyring.ErrUnwrap; a key that is not a decryption key of alg's kind
// is keyring.ErrNotAsymmetric.
func (a *AsymKey) Decrypt(ctx context.Context, alg keyring.AsymAlg, ciphertext []byte) ([]byte, error) {
	algs := model.GetDecryptDataRequestBodyEncryptionAlgorithmEnum()
	var ea model.DecryptDataRequestBodyEncryptionAlgorithm
	switch alg {
	case keyring.RSAOAEPSHA256:
		if n := len(ciphertext); n < pubkey.MinBits/8 || n > pubkey.MaxBits/8 {
			return nil, a.k.base(opDecryptData).With(keyring.ErrUnwrap, fmt.Sprintf("ciphertext of %d bytes: want %d to %d", n, pubkey.MinBits/8, pubkey.MaxBits/8))
		}
		ea = algs.RSAES_OAEP_SHA_256
	case keyring.SM2:
		if _, err := pubkey.SM2Plain(ciphertext); err != nil {
			return nil, a.k.base(opDecryptData).With(keyring.ErrUnwrap, fmt.Sprintf("a ciphertext of %d bytes is not a DER SM2 ciphertext", len(ciphertext)))
		}
		ea = algs.SM2_ENCRYPT
	default:
		return nil, a.k.base(opDecryptData).With(keyring.ErrUnwrap, "unsupported algorithm "+alg.String())
	}
	if n := len(ciphertext); n < minCipherText || n > maxCipherText {
		return nil, a.k.base(opDecryptData).With(keyring.ErrUnwrap, fmt.Sprintf("ciphertext of %d bytes: decrypt-data takes %d to %d", n, minCipherText, maxCipherText))
	}
	ct := base64.StdEncoding.EncodeToString(ciphertext)
	key := a.k.uri.Key
	var resp *model.DecryptDataResponse
	err := a.k.call(ctx, opDecryptData, func(c *kms.KmsClient) error {
		r, err := c.DecryptData(&model.DecryptDataRequest{Body: &model.DecryptDataRequestBody{
			CipherText:          ct,
			EncryptionAlgorithm: &ea,
			KeyId:               &key,
		}})
		resp = r
		return err
	})
	if err != nil {
		return nil, asymHints(err)
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

// asymHints replaces the hint of classify for a key of the wrong kind,
// which names RSA keys only, by one that names both kinds.
func asymHints(err error) error {
	var ce *cloud.Error
	if errors.As(err, &ce) && errors.Is(ce.Kind, keyring.ErrNotAsymmetric) {
		ce.Hint = hintAsym
	}
	return err
}
