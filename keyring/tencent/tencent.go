// Package tencent is the Tencent Cloud KMS keyring provider.
//
// Key URIs are tencent-kms://REGION/KEYID with an optional
// endpoint=https://HOST[:PORT] query parameter (http:// only for loopback
// hosts, as used with the kmsfs emulator). Data keys come from
// GenerateDataKey (32 bytes) and are unwrapped with Decrypt; Wrap uses
// Encrypt. The encryption context is passed as EncryptionContext.
//
// Credentials come only from the SDK's default chain: the environment
// (TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY), the profile file
// ~/.tencentcloud/credentials, then the CVM role.
//
// The wrapped key kmsfs stores is the CiphertextBlob text exactly as KMS
// returned it.
//
// # Asymmetric keys
//
// Register also adds the scheme tencent-kms+rsa (see package
// keyring/pubkey), for keys of KeyUsage ASYMMETRIC_DECRYPT_RSA_2048 (and
// the larger RSA sizes where the service offers them):
// tencent-kms+rsa://REGION/KEYID with the same endpoint parameter and
// credential chain. Data keys are made locally and wrapped under the
// key's public key (GetPublicKey, fetched once unless the volume records
// it) with RSAES-OAEP SHA-256, and unwrapped with AsymmetricRsaDecrypt
// (Algorithm RSAES_OAEP_SHA_256): KMS is called only to read existing
// files. A symmetric key named with +rsa is keyring.ErrNotAsymmetric; an
// RSA key named with the plain scheme is keyring.ErrAccessDenied, with a
// hint naming the +rsa scheme.
package tencent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common"
	tcerr "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/errors"
	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/profile"
	kms "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/kms/v20190118"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/cloud"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// Scheme is the URI scheme of this provider.
const Scheme = "tencent-kms"

// Register adds the Tencent Cloud KMS provider to reg under Scheme, and
// its asymmetric keys under Scheme+"+rsa" (pubkey.Register).
func Register(reg *keyring.Registry) {
	reg.Register(Scheme, func(ctx context.Context, u *url.URL, _ keyring.Options) (keyring.Keyring, error) {
		return Open(ctx, u)
	})
	pubkey.Register(reg, Scheme, func(ctx context.Context, u *url.URL) (keyring.AsymmetricKey, error) {
		a, err := OpenAsymmetric(ctx, u)
		if err != nil {
			return nil, err
		}
		return a, nil
	})
}

// Keyring is a Tencent Cloud KMS key.
type Keyring struct {
	uri    *cloud.KeyURI
	client *kms.Client
	policy cloud.Policy
}

var (
	_ keyring.Keyring = (*Keyring)(nil)
	_ keyring.Wrapper = (*Keyring)(nil)
)

// Open opens the key named by u. It resolves credentials from the SDK's
// chain but makes no KMS call.
func Open(ctx context.Context, u *url.URL) (*Keyring, error) {
	ku, err := cloud.ParseKeyURI(u)
	if err != nil {
		return nil, err
	}
	if strings.Contains(ku.Key, "/") {
		return nil, fmt.Errorf("%s: %w: key %q: want a key ID", keyring.RedactURI(ku.Raw), keyring.ErrBadURI, ku.Key)
	}
	k := &Keyring{uri: ku, policy: cloud.DefaultPolicy}
	cred, err := k.credentials(ctx)
	if err != nil {
		return nil, err
	}
	// Always start from NewClientProfile: a zero ClientProfile turns on
	// the region circuit breaker, which may switch to a public backup
	// endpoint.
	cpf := profile.NewClientProfile()
	cpf.DisableRegionBreaker = true
	cpf.HttpProfile.ReqTimeout = int(math.Ceil(k.policy.AttemptTimeout.Seconds()))
	cpf.HttpProfile.Scheme = "HTTPS"
	if ep := ku.Endpoint; ep != nil {
		cpf.HttpProfile.Scheme = strings.ToUpper(ep.Scheme)
		cpf.HttpProfile.Endpoint = ep.Host
	}
	c, err := kms.NewClient(cred, ku.Region, cpf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", keyring.RedactURI(ku.Raw), keyring.ErrBadURI, err)
	}
	c.WithHttpTransport(cloud.NewTransport())
	k.client = c
	return k, nil
}

// credentials resolves the SDK's default chain within ctx and at most
// 10 s (the CVM role provider asks the instance metadata service).
func (k *Keyring) credentials(ctx context.Context) (common.CredentialIface, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	type result struct {
		c   common.CredentialIface
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := common.DefaultProviderChain().GetCredential()
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		r.err = ctx.Err()
	}
	if r.err == nil {
		return r.c, nil
	}
	return nil, k.base("credentials").Credentials(r.err, "set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY, write ~/.tencentcloud/credentials, or run on CVM with a role")
}

// URI returns the key URI.
func (k *Keyring) URI() string { return k.uri.Raw }

func (k *Keyring) base(op string) cloud.Error {
	return cloud.Error{Provider: Scheme, Op: op, Key: k.uri.Key, Region: k.uri.Region}
}

func (k *Keyring) call(ctx context.Context, op string, do func(ctx context.Context) error) error {
	return k.policy.Do(ctx, k.base(op), func(actx context.Context) error {
		if err := do(actx); err != nil {
			return k.mapErr(op, err)
		}
		return nil
	})
}

func ptr[T any](v T) *T { return &v }

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// optContext is nil for an empty context (no EncryptionContext sent).
func optContext(encCtx []byte) *string {
	if len(encCtx) == 0 {
		return nil
	}
	return ptr(string(encCtx))
}

// GenerateDataKey asks KMS for a 32-byte data key bound to encCtx.
func (k *Keyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*keyring.Key, []byte, error) {
	if err := cloud.CheckContext(encCtx); err != nil {
		return nil, nil, fmt.Errorf("%s: GenerateDataKey key %s: %w", Scheme, k.uri.Key, err)
	}
	var out *kms.GenerateDataKeyResponseParams
	err := k.call(ctx, "GenerateDataKey", func(actx context.Context) error {
		req := kms.NewGenerateDataKeyRequest()
		req.KeyId = ptr(k.uri.Key)
		req.NumberOfBytes = ptr(uint64(keyring.DataKeySize))
		req.EncryptionContext = optContext(encCtx)
		resp, err := k.client.GenerateDataKeyWithContext(actx, req)
		if err != nil {
			return err
		}
		if resp.Response == nil {
			return k.malformed("GenerateDataKey", "empty Response")
		}
		out = resp.Response
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	wrapped := []byte(str(out.CiphertextBlob))
	if len(wrapped) > cloud.MaxWrapped || !cloud.CanonicalBase64(wrapped) {
		return nil, nil, k.malformed("GenerateDataKey", fmt.Sprintf("CiphertextBlob of %d bytes", len(wrapped)))
	}
	dk, err := k.plaintext("GenerateDataKey", str(out.Plaintext), keyring.ErrUnavailable)
	if err != nil {
		return nil, nil, err
	}
	return dk, wrapped, nil
}

// Unwrap decrypts wrapped (a CiphertextBlob) with encCtx.
func (k *Keyring) Unwrap(ctx context.Context, wrapped, encCtx []byte) (*keyring.Key, error) {
	if len(wrapped) > cloud.MaxWrapped || !cloud.CanonicalBase64(wrapped) {
		return nil, k.unwrapErr(fmt.Sprintf("wrapped key of %d bytes is not canonical base64", len(wrapped)))
	}
	if err := cloud.CheckContext(encCtx); err != nil {
		return nil, k.unwrapErr(err.Error())
	}
	var out *kms.DecryptResponseParams
	err := k.call(ctx, "Decrypt", func(actx context.Context) error {
		req := kms.NewDecryptRequest()
		req.CiphertextBlob = ptr(string(wrapped))
		req.EncryptionContext = optContext(encCtx)
		resp, err := k.client.DecryptWithContext(actx, req)
		if err != nil {
			return err
		}
		if resp.Response == nil {
			return k.malformed("Decrypt", "empty Response")
		}
		out = resp.Response
		return nil
	})
	if err != nil {
		return nil, err
	}
	if id := str(out.KeyId); id != "" && id != k.uri.Key {
		return nil, k.unwrapErr("it was made by key " + id)
	}
	return k.plaintext("Decrypt", str(out.Plaintext), keyring.ErrUnwrap)
}

// Wrap encrypts the data key dk under the key with Encrypt.
func (k *Keyring) Wrap(ctx context.Context, dk *keyring.Key, encCtx []byte) ([]byte, error) {
	if err := cloud.CheckContext(encCtx); err != nil {
		return nil, fmt.Errorf("%s: Encrypt key %s: %w", Scheme, k.uri.Key, err)
	}
	// The SDK takes a string: this base64 copy of the key stays on the
	// heap until the garbage collector reuses it.
	pt := base64.StdEncoding.EncodeToString(dk.Bytes())
	var out *kms.EncryptResponseParams
	err := k.call(ctx, "Encrypt", func(actx context.Context) error {
		req := kms.NewEncryptRequest()
		req.KeyId = ptr(k.uri.Key)
		req.Plaintext = ptr(pt)
		req.EncryptionContext = optContext(encCtx)
		resp, err := k.client.EncryptWithContext(actx, req)
		if err != nil {
			return err
		}
		if resp.Response == nil {
			return k.malformed("Encrypt", "empty Response")
		}
		out = resp.Response
		return nil
	})
	if err != nil {
		return nil, err
	}
	wrapped := []byte(str(out.CiphertextBlob))
	if len(wrapped) > cloud.MaxWrapped || !cloud.CanonicalBase64(wrapped) {
		return nil, k.malformed("Encrypt", fmt.Sprintf("CiphertextBlob of %d bytes", len(wrapped)))
	}
	return wrapped, nil
}

// plaintext decodes a base64 data key into locked memory.
func (k *Keyring) plaintext(op, b64 string, kind error) (*keyring.Key, error) {
	return cloud.DataKey(k.base(op), b64, kind)
}

func (k *Keyring) unwrapErr(msg string) error {
	return k.base("Decrypt").With(keyring.ErrUnwrap, msg)
}

func (k *Keyring) malformed(op, what string) error { return k.base(op).Malformed(what) }

func (k *Keyring) mapErr(op string, err error) error {
	var ce *cloud.Error
	if errors.As(err, &ce) {
		return err
	}
	e := k.base(op)
	var se *tcerr.TencentCloudSDKError
	if errors.As(err, &se) && !strings.HasPrefix(se.Code, "ClientError.") {
		e.Code, e.Message, e.RequestID = se.Code, se.Message, se.RequestId
		e.Kind, e.Hint = classify(op, se.Code)
		return &e
	}
	if se != nil && se.Unwrap() == nil {
		// ClientError.* without a cause: a non-200 status from a proxy or
		// gateway, an unreadable or unparsable body.
		e.Code, e.Message = se.Code, se.Message
		e.Kind = keyring.ErrUnavailable
		return &e
	}
	return cloud.Classify(e, err)
}

// classify maps a Tencent Cloud error code to a keyring sentinel.
func classify(op, code string) (error, string) {
	asym := op == opGetPublicKey || op == opRSADecrypt
	switch {
	case code == "ResourceUnavailable.CmkNotFound" || code == "ResourceNotFound" || code == "InvalidParameterValue.InvalidKeyId":
		return keyring.ErrKeyNotFound, "check the key ID and the region"
	case code == "ResourceUnavailable.CmkDisabled" || code == "ResourceUnavailable.KeyDisabled" ||
		code == "ResourceUnavailable.KeyPendingDelete" || code == "ResourceUnavailable.CmkArchived" ||
		code == "ResourceUnavailable.CmkStateNotSupport":
		return keyring.ErrKeyDisabled, "enable the key (or cancel its deletion) in KMS"
	case code == "AuthFailure.SignatureExpire":
		return keyring.ErrBadCredentials, "check this machine's clock"
	case code == "AuthFailure.UnauthorizedOperation" || code == "AuthFailure.MFAFailure" || strings.HasPrefix(code, "UnauthorizedOperation"):
		if asym {
			return keyring.ErrAccessDenied, "grant kms:GetPublicKey and kms:AsymmetricRsaDecrypt on the key to this CAM identity"
		}
		return keyring.ErrAccessDenied, "grant kms:GenerateDataKey, kms:Decrypt and kms:Encrypt on the key to this CAM identity"
	case strings.HasPrefix(code, "AuthFailure"):
		return keyring.ErrBadCredentials, "check TENCENTCLOUD_SECRET_ID/KEY or the profile in use"
	case strings.HasPrefix(code, "RequestLimitExceeded"):
		return keyring.ErrThrottled, ""
	case strings.HasPrefix(code, "InternalError") || code == "UnsupportedOperation.ServiceTemporaryUnavailable" ||
		code == "ServiceUnavailable" || code == "FailedOperation.EncryptionError":
		return keyring.ErrUnavailable, ""
	case code == "InvalidParameterValue.InvalidKeyUsage" && asym:
		return keyring.ErrNotAsymmetric, "the key is not an ASYMMETRIC_DECRYPT_RSA key; name a symmetric key " + Scheme + "://REGION/KEYID"
	case code == "InvalidParameterValue.InvalidKeyUsage" && op != "Decrypt":
		return keyring.ErrAccessDenied, "the key is not a symmetric ENCRYPT_DECRYPT key; name an RSA decryption key " + Scheme + pubkey.Suffix + "://REGION/KEYID"
	case (op == "Decrypt" || op == opRSADecrypt) && (code == "InvalidParameterValue.InvalidCiphertext" || code == "FailedOperation.DecryptError" ||
		strings.HasPrefix(code, "InvalidParameter")):
		return keyring.ErrUnwrap, cloud.HintUnwrap
	case code == "ResourceUnavailable.NotPurchased":
		return keyring.ErrAccessDenied, "KMS is not activated for this account"
	}
	return keyring.ErrAccessDenied, "the service refused the request"
}
