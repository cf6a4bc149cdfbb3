package tencent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	tcerr "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/errors"
	kms "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/kms/v20190118"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/cloud"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// AlgorithmOAEPSHA256 is the AsymmetricRsaDecrypt algorithm kmsfs uses:
// RSAES-OAEP with SHA-256 (and MGF1 with SHA-256, empty label).
const AlgorithmOAEPSHA256 = "RSAES_OAEP_SHA_256"

// Operations of the asymmetric calls, as they appear in errors.
const (
	opGetPublicKey = "GetPublicKey"
	opRSADecrypt   = "AsymmetricRsaDecrypt"
	opSM2Decrypt   = "AsymmetricSm2Decrypt"
)

// maxSM2Ciphertext is the longest ciphertext AsymmetricSm2Decrypt takes,
// in bytes ("the length of the original ciphertext cannot exceed 256
// bytes"); kmsfs's are at most pubkey.MaxSM2Wrapped.
const maxSM2Ciphertext = 256

// hintAsym says which key each scheme names, for a key of the wrong kind.
const hintAsym = "the key is not a decryption key of the kind the scheme names: an RSA key (KeyUsage ASYMMETRIC_DECRYPT_RSA_*) is named " +
	Scheme + pubkey.Suffix + "://REGION/KEYID, an SM2 key (ASYMMETRIC_DECRYPT_SM2) " + Scheme + pubkey.SuffixSM2 +
	"://REGION/KEYID, a symmetric key " + Scheme + "://REGION/KEYID"

// hintAsymAccess is the permission an asymmetric key needs.
const hintAsymAccess = "grant kms:GetPublicKey and kms:AsymmetricRsaDecrypt (RSA keys) or kms:AsymmetricSm2Decrypt (SM2 keys) on the key to this CAM identity"

// AsymKey is a Tencent Cloud KMS asymmetric decryption key (KeyUsage
// ASYMMETRIC_DECRYPT_RSA_* or ASYMMETRIC_DECRYPT_SM2), used by the
// Scheme+"+rsa" and Scheme+"+sm2" keyrings of package keyring/pubkey. It
// is safe for concurrent use.
//
// SM2: AsymmetricSm2Decrypt takes the ciphertext "in the C1C3C2_ASN1
// format" (the API reference of 2025), the DER SM2Cipher of GM/T 0009
// that public-key slots store, so it is sent as it is; GetPublicKey
// answers an SM2 key as a SubjectPublicKeyInfo with id-ecPublicKey and
// the curve 1.2.156.10197.1.301, as for RSA keys in PublicKey (base64
// DER) and PublicKeyPem.
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

// URI returns the key URI (in Scheme, not Scheme+"+rsa" or "+sm2").
func (a *AsymKey) URI() string { return a.k.URI() }

// PublicKey fetches the key's public key with GetPublicKey and returns it
// as a DER SubjectPublicKeyInfo. A key whose public key is neither an RSA
// key kmsfs can use nor an SM2 key is reported as
// keyring.ErrNotAsymmetric.
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
		return nil, asymHints(err)
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

// Decrypt has KMS decrypt ciphertext: AsymmetricRsaDecrypt with
// RSAES_OAEP_SHA_256 for keyring.RSAOAEPSHA256, AsymmetricSm2Decrypt
// for keyring.SM2 (the DER ciphertext as it is). The caller clears the
// returned plaintext. A ciphertext the key does not decrypt is
// keyring.ErrUnwrap; a key that is not a decryption key of alg's kind is
// keyring.ErrNotAsymmetric.
func (a *AsymKey) Decrypt(ctx context.Context, alg keyring.AsymAlg, ciphertext []byte) ([]byte, error) {
	switch alg {
	case keyring.RSAOAEPSHA256:
		return a.decryptRSA(ctx, ciphertext)
	case keyring.SM2:
		return a.decryptSM2(ctx, ciphertext)
	}
	return nil, a.k.base("asymmetric decrypt").With(keyring.ErrUnwrap, "unsupported algorithm "+alg.String())
}

func (a *AsymKey) decryptRSA(ctx context.Context, ciphertext []byte) ([]byte, error) {
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
		return nil, asymHints(err)
	}
	return a.plaintext(opRSADecrypt, str(out.KeyId), str(out.Plaintext))
}

func (a *AsymKey) decryptSM2(ctx context.Context, ciphertext []byte) ([]byte, error) {
	if _, err := pubkey.SM2Plain(ciphertext); err != nil || len(ciphertext) > maxSM2Ciphertext {
		return nil, a.k.base(opSM2Decrypt).With(keyring.ErrUnwrap, fmt.Sprintf("a ciphertext of %d bytes is not a DER SM2 ciphertext", len(ciphertext)))
	}
	ct := base64.StdEncoding.EncodeToString(ciphertext)
	var out *kms.AsymmetricSm2DecryptResponseParams
	err := a.k.call(ctx, opSM2Decrypt, func(actx context.Context) error {
		req := kms.NewAsymmetricSm2DecryptRequest()
		req.KeyId = ptr(a.k.uri.Key)
		req.Ciphertext = ptr(ct)
		resp, err := a.k.client.AsymmetricSm2DecryptWithContext(actx, req)
		if err != nil {
			return a.sm2Err(err)
		}
		if resp.Response == nil {
			return a.k.malformed(opSM2Decrypt, "empty Response")
		}
		out = resp.Response
		return nil
	})
	if err != nil {
		return nil, asymHints(err)
	}
	return a.plaintext(opSM2Decrypt, str(out.KeyId), str(out.Plaintext))
}

// sm2Err maps an error answer of AsymmetricSm2Decrypt. Its codes are
// those of AsymmetricRsaDecrypt, with the same meanings, so classify
// takes it as one; what is not the service's answer is left to mapErr.
func (a *AsymKey) sm2Err(err error) error {
	var se *tcerr.TencentCloudSDKError
	if !errors.As(err, &se) || strings.HasPrefix(se.Code, "ClientError.") {
		return err
	}
	e := a.k.base(opSM2Decrypt)
	e.Code, e.Message, e.RequestID = se.Code, se.Message, se.RequestId
	e.Kind, e.Hint = classify(opRSADecrypt, se.Code)
	return &e
}

// asymHints replaces the hints of classify, which name RSA keys, by ones
// that name both kinds.
func asymHints(err error) error {
	var ce *cloud.Error
	if errors.As(err, &ce) {
		switch {
		case errors.Is(ce.Kind, keyring.ErrNotAsymmetric):
			ce.Hint = hintAsym
		case errors.Is(ce.Kind, keyring.ErrAccessDenied) && strings.HasPrefix(ce.Code, "UnauthorizedOperation"):
			ce.Hint = hintAsymAccess
		}
	}
	return err
}

// plaintext decodes the Plaintext of a decrypt answer of key id.
func (a *AsymKey) plaintext(op, id, b64 string) ([]byte, error) {
	if id != "" && id != a.k.uri.Key {
		return nil, a.k.malformed(op, "answer names key "+id)
	}
	// The SDK hands the plaintext over as a base64 string: that copy stays
	// on the heap until the garbage collector reuses it.
	pt, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		clear(pt)
		return nil, a.k.malformed(op, "Plaintext is not base64")
	}
	return pt, nil
}
