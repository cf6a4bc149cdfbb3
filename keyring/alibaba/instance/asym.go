package instance

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"

	"github.com/alibabacloud-go/tea/tea"
	dkms "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/sdk"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/cloud"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// AlgorithmOAEP is the instance's name for RSAES-OAEP with SHA-256 and
// MGF1 with SHA-256, the RSA algorithm kmsfs uses.
const AlgorithmOAEP = "RSAES_OAEP_SHA_256"

// AlgorithmSM2 is the instance's name for SM2 public key encryption, the
// algorithm of EC_SM2 keys.
const AlgorithmSM2 = "SM2PKE"

// The API names of the asymmetric calls, as errors show them.
// opDecryptOAEP is Decrypt, for RSA and SM2 keys alike.
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

// hintAsym says which key each scheme names, for a key of the wrong kind.
const hintAsym = "the key is not an ENCRYPT/DECRYPT key of the kind the scheme names: an RSA key (RSA_2048, RSA_3072, RSA_4096) is used as " +
	Scheme + pubkey.Suffix + "://ENDPOINT/KEY, an EC_SM2 key as " + Scheme + pubkey.SuffixSM2 + "://ENDPOINT/KEY, a symmetric key as " +
	Scheme + "://ENDPOINT/KEY"

// AsymKey is an RSA or SM2 (EC_SM2) decryption key in a KMS instance: its
// private half stays in the instance, which decrypts with it. It
// implements keyring.AsymmetricKey and is safe for concurrent use.
//
// SM2: Decrypt with Algorithm SM2PKE is sent the plain encoding
// 0x04 || x || y || C3 || C2 (C1C3C2), converted from the DER SM2Cipher
// that public-key slots store (pubkey.SM2Plain). Alibaba does not
// document the encoding; the plain one is what the evidence supports:
// the limits of its asymmetric calls (6047 bytes of plaintext, 6144 of
// SM2PKE ciphertext) differ by 97 bytes, the size of 0x04 || C1 || C3,
// and github.com/emmansun/gmsm v0.1.0 was tested against Alibaba KMS
// EC_SM2 keys decrypting what it encrypted locally, in that plain form,
// before it could write ASN.1. GetPublicKey answers an EC_SM2 key as a
// PEM "PUBLIC KEY" with id-ecPublicKey and the curve
// 1.2.156.10197.1.301.
type AsymKey struct {
	k *Keyring // the endpoint, key, SDK client and call policy
}

var _ keyring.AsymmetricKey = (*AsymKey)(nil)

// OpenAsymmetric opens the asymmetric key named by u, a URI of the form
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
// as a DER SubjectPublicKeyInfo. A key whose public key is neither RSA
// nor SM2 (an EC key on another curve) is an error wrapping
// keyring.ErrNotAsymmetric.
func (a *AsymKey) PublicKey(ctx context.Context) ([]byte, error) {
	k := a.k
	var resp *dkms.GetPublicKeyResponse
	err := k.call(ctx, opGetPublicKey, func() error {
		r, err := k.client.GetPublicKeyWithOptions(&dkms.GetPublicKeyRequest{KeyId: tea.String(k.key)}, k.runtime())
		resp = r
		return err
	})
	if err != nil {
		return nil, asymHints(err)
	}
	if id := tea.StringValue(resp.KeyId); k.keyID && id != k.key {
		return nil, k.base(opGetPublicKey).Malformed("the public key of key " + id)
	}
	text := []byte(tea.StringValue(resp.PublicKey))
	block, _ := pem.Decode(text)
	if block == nil {
		return nil, k.base(opGetPublicKey).Malformed("PublicKey is not PEM")
	}
	if block.Type != "PUBLIC KEY" && block.Type != "RSA PUBLIC KEY" {
		return nil, k.base(opGetPublicKey).Malformed(fmt.Sprintf("PublicKey is a PEM %q, not a PUBLIC KEY", block.Type))
	}
	pub, err := pubkey.ParsePublicKey(text)
	if err != nil {
		e := k.base(opGetPublicKey).With(keyring.ErrNotAsymmetric, "its public key: "+err.Error())
		e.Hint = hintAsym
		return nil, e
	}
	der, err := pubkey.MarshalPublicKey(pub)
	if err != nil {
		return nil, k.base(opGetPublicKey).Malformed("PublicKey: " + err.Error())
	}
	return der, nil
}

// Decrypt has the instance decrypt ciphertext with Decrypt: Algorithm
// RSAES_OAEP_SHA_256 for keyring.RSAOAEPSHA256, SM2PKE for keyring.SM2
// (the DER ciphertext converted to the plain encoding). The returned
// plaintext is the caller's to clear. A ciphertext the key does not
// decrypt is an error wrapping keyring.ErrUnwrap; a key that is not a
// decryption key of alg's kind one wrapping keyring.ErrNotAsymmetric.
func (a *AsymKey) Decrypt(ctx context.Context, alg keyring.AsymAlg, ciphertext []byte) ([]byte, error) {
	k := a.k
	var algorithm string
	blob := ciphertext
	switch alg {
	case keyring.RSAOAEPSHA256:
		if len(ciphertext) == 0 || len(ciphertext) > maxCiphertext {
			return nil, k.base(opDecryptOAEP).With(keyring.ErrUnwrap, fmt.Sprintf("a ciphertext of %d bytes is no RSA ciphertext of at most %d bits", len(ciphertext), pubkey.MaxBits))
		}
		algorithm = AlgorithmOAEP
	case keyring.SM2:
		plain, err := pubkey.SM2Plain(ciphertext)
		if err != nil {
			return nil, k.base(opDecryptOAEP).With(keyring.ErrUnwrap, fmt.Sprintf("a ciphertext of %d bytes is not a DER SM2 ciphertext", len(ciphertext)))
		}
		algorithm, blob = AlgorithmSM2, plain
	default:
		return nil, k.base(opDecryptOAEP).With(keyring.ErrUnwrap, "unsupported algorithm "+alg.String())
	}
	var resp *dkms.DecryptResponse
	err := k.call(ctx, opDecryptOAEP, func() error {
		r, err := k.client.DecryptWithOptions(&dkms.DecryptRequest{
			KeyId: tea.String(k.key), CiphertextBlob: blob, Algorithm: tea.String(algorithm),
		}, k.runtime())
		resp = r
		return err
	})
	if err != nil {
		return nil, asymHints(err)
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

// asymHints replaces the hint of classify for a key of the wrong kind,
// which names RSA keys only, by one that names both kinds.
func asymHints(err error) error {
	var ce *cloud.Error
	if errors.As(err, &ce) && errors.Is(ce.Kind, keyring.ErrNotAsymmetric) {
		ce.Hint = hintAsym
	}
	return err
}
