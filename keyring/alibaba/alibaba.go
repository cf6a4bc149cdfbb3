// Package alibaba is the Alibaba Cloud KMS keyring provider.
//
// Key URIs are alibaba-kms://REGION/KEY, where KEY is a key ID or
// alias/NAME, with an optional endpoint=https://HOST[:PORT] query
// parameter (http:// only for loopback hosts, as used with the kmsfs
// emulator). Data keys come from GenerateDataKey (32 bytes) and are
// unwrapped with Decrypt; Wrap uses Encrypt. The encryption context is
// passed as EncryptionContext.
//
// Credentials come only from the SDK's default chain: the environment
// (ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET,
// ALIBABA_CLOUD_SECURITY_TOKEN), OIDC, the CLI's ~/.aliyun/config.json,
// ~/.alibabacloud/credentials, then the ECS RAM role.
//
// The wrapped key kmsfs stores is the CiphertextBlob text exactly as KMS
// returned it.
package alibaba

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/cloud"
)

// Scheme is the URI scheme of this provider.
const Scheme = "alibaba-kms"

// poolSize is how many SDK clients a keyring keeps; it bounds the calls
// in flight per keyring (the SDK client is not safe for concurrent use).
const poolSize = 8

// Register adds the Alibaba Cloud KMS provider to reg under Scheme.
func Register(reg *keyring.Registry) {
	reg.Register(Scheme, func(ctx context.Context, u *url.URL, _ keyring.Options) (keyring.Keyring, error) {
		return Open(ctx, u)
	})
}

// Keyring is an Alibaba Cloud KMS key.
type Keyring struct {
	uri    *cloud.KeyURI
	keyID  bool // the URI names a key ID, not an alias
	pool   *cloud.Pool[*kms.Client]
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
	if strings.Contains(ku.Key, "/") && !strings.HasPrefix(ku.Key, "alias/") {
		return nil, fmt.Errorf("%s: %w: key %q: want a key ID or alias/NAME", keyring.RedactURI(ku.Raw), keyring.ErrBadURI, ku.Key)
	}
	k := &Keyring{uri: ku, keyID: !strings.HasPrefix(ku.Key, "alias/"), policy: cloud.DefaultPolicy}
	creds := &sharedProvider{inner: credentials.NewDefaultCredentialsProvider()}
	if err := k.checkCredentials(ctx, creds); err != nil {
		return nil, err
	}
	scheme, domain := "HTTPS", ""
	if ep := ku.Endpoint; ep != nil {
		scheme, domain = strings.ToUpper(ep.Scheme), ep.Host
	}
	base := cloud.NewTransport()
	k.pool, err = cloud.NewPool(poolSize, base, func(rt http.RoundTripper) (*kms.Client, error) {
		cfg := sdk.NewConfig()
		cfg.Scheme = scheme // the SDK's default is plain HTTP
		cfg.Transport = rt
		cfg.Timeout = k.policy.AttemptTimeout
		cfg.AutoRetry = false // retries are ours, with backoff
		c, err := kms.NewClientWithOptions(ku.Region, cfg, creds)
		if err != nil {
			return nil, err
		}
		if domain != "" {
			c.Domain = domain
		}
		c.SetCloseTrace(true)
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", keyring.RedactURI(ku.Raw), keyring.ErrBadURI, err)
	}
	return k, nil
}

// sharedProvider serializes the SDK's default credential chain, which
// remembers the provider that worked in an unguarded field and is shared
// by the keyring's clients.
type sharedProvider struct {
	mu    sync.Mutex
	inner credentials.CredentialsProvider
}

func (p *sharedProvider) GetCredentials() (*credentials.Credentials, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inner.GetCredentials()
}

func (p *sharedProvider) GetProviderName() string { return p.inner.GetProviderName() }

// checkCredentials resolves the credential chain once, within ctx and at
// most 10 s (the ECS role provider asks the instance metadata service).
func (k *Keyring) checkCredentials(ctx context.Context, p credentials.CredentialsProvider) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := p.GetCredentials()
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		return nil
	}
	return k.base("credentials").Credentials(err, "set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, configure the aliyun CLI, or run on ECS with a RAM role")
}

// URI returns the key URI.
func (k *Keyring) URI() string { return k.uri.Raw }

func (k *Keyring) base(op string) cloud.Error {
	return cloud.Error{Provider: Scheme, Op: op, Key: k.uri.Key, Region: k.uri.Region}
}

// call runs one KMS action with retries; do sends it on a pooled client.
func (k *Keyring) call(ctx context.Context, op string, do func(c *kms.Client) error) error {
	return k.policy.Do(ctx, k.base(op), func(actx context.Context) error {
		err := k.pool.Use(actx, do)
		if err == nil {
			return nil
		}
		return k.mapErr(op, err)
	})
}

func (k *Keyring) prepare(r *requests.RpcRequest) {
	r.SetReadTimeout(k.policy.AttemptTimeout)
	r.SetConnectTimeout(5 * time.Second)
}

// GenerateDataKey asks KMS for a 32-byte data key bound to encCtx.
func (k *Keyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*keyring.Key, []byte, error) {
	if err := cloud.CheckContext(encCtx); err != nil {
		return nil, nil, fmt.Errorf("%s: GenerateDataKey key %s: %w", Scheme, k.uri.Key, err)
	}
	var resp *kms.GenerateDataKeyResponse
	err := k.call(ctx, "GenerateDataKey", func(c *kms.Client) error {
		req := kms.CreateGenerateDataKeyRequest()
		k.prepare(req.RpcRequest)
		req.KeyId = k.uri.Key
		req.NumberOfBytes = requests.NewInteger(keyring.DataKeySize)
		req.EncryptionContext = string(encCtx)
		r, err := c.GenerateDataKey(req)
		resp = r
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	wrapped := []byte(resp.CiphertextBlob)
	if len(wrapped) > cloud.MaxWrapped || !cloud.CanonicalBase64(wrapped) {
		return nil, nil, k.malformed("GenerateDataKey", fmt.Sprintf("CiphertextBlob of %d bytes", len(wrapped)))
	}
	dk, err := k.plaintext("GenerateDataKey", resp.Plaintext, keyring.ErrUnavailable)
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
	var resp *kms.DecryptResponse
	err := k.call(ctx, "Decrypt", func(c *kms.Client) error {
		req := kms.CreateDecryptRequest()
		k.prepare(req.RpcRequest)
		req.CiphertextBlob = string(wrapped)
		req.EncryptionContext = string(encCtx)
		r, err := c.Decrypt(req)
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	if k.keyID && resp.KeyId != k.uri.Key {
		return nil, k.unwrapErr("it was made by key " + resp.KeyId)
	}
	return k.plaintext("Decrypt", resp.Plaintext, keyring.ErrUnwrap)
}

// Wrap encrypts the data key dk under the key with Encrypt.
func (k *Keyring) Wrap(ctx context.Context, dk *keyring.Key, encCtx []byte) ([]byte, error) {
	if err := cloud.CheckContext(encCtx); err != nil {
		return nil, fmt.Errorf("%s: Encrypt key %s: %w", Scheme, k.uri.Key, err)
	}
	// The SDK takes a string: this copy of the key in base64 is on the
	// heap until the garbage collector reuses it.
	pt := base64.StdEncoding.EncodeToString(dk.Bytes())
	var resp *kms.EncryptResponse
	err := k.call(ctx, "Encrypt", func(c *kms.Client) error {
		req := kms.CreateEncryptRequest()
		k.prepare(req.RpcRequest)
		req.KeyId = k.uri.Key
		req.Plaintext = pt
		req.EncryptionContext = string(encCtx)
		r, err := c.Encrypt(req)
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	wrapped := []byte(resp.CiphertextBlob)
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

// mapErr turns an SDK error into a *cloud.Error with the matching kind.
func (k *Keyring) mapErr(op string, err error) error {
	e := k.base(op)
	var se *sdkerrors.ServerError
	var ce *sdkerrors.ClientError
	switch {
	case errors.As(err, &se):
		e.Code, e.Message, e.RequestID = se.ErrorCode(), se.Message(), se.RequestId()
		e.Kind, e.Hint = classify(op, se.ErrorCode(), se.HttpStatus())
		return &e
	case errors.As(err, &ce) && ce.OriginError() != nil:
		return cloud.Classify(e, ce.OriginError())
	case strings.Contains(err.Error(), "unable to get credentials"):
		e.Kind = keyring.ErrBadCredentials
		e.Message = err.Error()
		return &e
	}
	return cloud.Classify(e, err)
}

// classify maps an Alibaba Cloud error code to a keyring sentinel.
func classify(op, code string, status int) (error, string) {
	switch {
	case code == "Forbidden.KeyNotFound" || code == "Forbidden.AliasNotFound" || code == "Forbidden.KeyVersionNotFound":
		return keyring.ErrKeyNotFound, "check the key ID or alias and the region"
	case code == "Rejected.Disabled" || code == "Rejected.PendingDeletion" || code == "Rejected.PendingImport" ||
		code == "Forbidden.KeyNotEnabled":
		return keyring.ErrKeyDisabled, "enable the key (or cancel its deletion) in KMS"
	case code == "InvalidAccessKeyId.NotFound" || code == "InvalidAccessKeyId" || code == "InvalidAccessKeyId.Inactive" ||
		code == "SignatureDoesNotMatch" || code == "IncompleteSignature" || code == "Forbidden.AccessKey" ||
		strings.HasPrefix(code, "InvalidSecurityToken"):
		return keyring.ErrBadCredentials, "check ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET or the profile in use"
	case code == "InvalidTimeStamp.Expired" || code == "IllegalTimestamp":
		return keyring.ErrBadCredentials, "check this machine's clock"
	case strings.HasPrefix(code, "Throttling") || code == "Rejected.Throttling" || status == http.StatusTooManyRequests:
		return keyring.ErrThrottled, ""
	case code == "SignatureNonceUsed" || status >= 500 || code == "InternalFailure" || strings.HasPrefix(code, "ServiceUnavailable"):
		return keyring.ErrUnavailable, ""
	case strings.HasPrefix(code, "Forbidden"):
		return keyring.ErrAccessDenied, "grant kms:GenerateDataKey, kms:Decrypt and kms:Encrypt on the key to this RAM identity"
	case op == "Decrypt" && (code == "InvalidParameter" || code == "InvalidCiphertext" || code == "Rejected.ValueError"):
		return keyring.ErrUnwrap, cloud.HintUnwrap
	case code == "InvalidParameter" && op != "Decrypt":
		return keyring.ErrKeyNotFound, "the key ID or alias is not valid"
	}
	return keyring.ErrAccessDenied, "the service refused the request"
}
