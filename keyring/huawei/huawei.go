// Package huawei is the Huawei Cloud KMS (DEW) keyring provider.
//
// Key URIs are huawei-kms://REGION/KEYID?project=PROJECT_ID with an
// optional endpoint=https://HOST[:PORT] query parameter (http:// only for
// loopback hosts, as used with the kmsfs emulator). Without project= the
// project ID comes from the credential chain (HUAWEICLOUD_SDK_PROJECT_ID
// or the profile); one of the two is required, so that the SDK never
// calls IAM to look it up. Data keys come from create-datakey (256 bits)
// and are unwrapped with decrypt-datakey; Wrap uses encrypt-datakey. The
// encryption context is passed as additional_authenticated_data, which
// binds its exact bytes.
//
// Credentials come only from the SDK's chain: the environment
// (HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK, HUAWEICLOUD_SDK_SECURITY_TOKEN,
// HUAWEICLOUD_SDK_PROJECT_ID), the profile ~/.huaweicloud/credentials,
// then the ECS metadata service (agency credentials).
//
// The wrapped key kmsfs stores is the cipher_text hex text exactly as KMS
// returned it.
//
// # Asymmetric keys
//
// Register also adds the scheme huawei-kms+rsa (see package
// keyring/pubkey), for keys of key_spec RSA_2048, RSA_3072 or RSA_4096
// and key_usage ENCRYPT_DECRYPT: huawei-kms+rsa://REGION/KEYID with the
// same project and endpoint parameters and credential chain. Data keys
// are made locally and wrapped under the key's public key (get-publickey,
// fetched once unless the volume records it) with RSAES-OAEP SHA-256, and
// unwrapped with decrypt-data (encryption_algorithm RSAES_OAEP_SHA_256,
// cipher_text the base64 of the RSA ciphertext, the plaintext read from
// plain_text_base64): KMS is called only to read existing files. A
// symmetric key named with +rsa is keyring.ErrNotAsymmetric; an RSA key
// named with the plain scheme is keyring.ErrAccessDenied, with a hint
// naming the +rsa scheme.
package huawei

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/provider"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/config"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/sdkerr"
	kms "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2/model"
	kmsregion "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/kms/v2/region"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/cloud"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// Scheme is the URI scheme of this provider.
const Scheme = "huawei-kms"

// poolSize is how many SDK clients a keyring keeps; it bounds the calls
// in flight per keyring.
const poolSize = 8

// Register adds the Huawei Cloud KMS provider to reg under Scheme, and its
// asymmetric keys under Scheme+"+rsa" (pubkey.Register).
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

// Keyring is a Huawei Cloud KMS key.
type Keyring struct {
	uri    *cloud.KeyURI
	pool   *cloud.Pool[*kms.KmsClient]
	policy cloud.Policy
}

var (
	_ keyring.Keyring = (*Keyring)(nil)
	_ keyring.Wrapper = (*Keyring)(nil)
)

var keyIDPattern = regexp.MustCompile(`^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$`)

// Open opens the key named by u. It resolves credentials from the SDK's
// chain but makes no KMS call.
func Open(ctx context.Context, u *url.URL) (*Keyring, error) {
	ku, err := cloud.ParseKeyURI(u, "project")
	if err != nil {
		return nil, err
	}
	if !keyIDPattern.MatchString(ku.Key) {
		return nil, fmt.Errorf("%s: %w: key %q: want a key ID like 0d0466b0-e727-4d9c-b35d-f84bb474a37f", keyring.RedactURI(ku.Raw), keyring.ErrBadURI, ku.Key)
	}
	k := &Keyring{uri: ku, policy: cloud.DefaultPolicy}
	cred, err := k.credentials(ctx)
	if err != nil {
		return nil, err
	}
	if p := ku.Query.Get("project"); p != "" {
		cred.ProjectId = p
	}
	if cred.ProjectId == "" {
		return nil, fmt.Errorf("%s: %w: no project ID: add ?project=PROJECT_ID or set HUAWEICLOUD_SDK_PROJECT_ID", keyring.RedactURI(ku.Raw), keyring.ErrBadURI)
	}
	endpoint := "https://kms." + ku.Region + ".myhuaweicloud.com"
	if r, err := kmsregion.SafeValueOf(ku.Region); err == nil && len(r.Endpoints) > 0 {
		endpoint = r.Endpoints[0]
	}
	if ku.Endpoint != nil {
		endpoint = ku.Endpoint.String()
	}
	base := cloud.NewTransport()
	k.pool, err = cloud.NewPool(poolSize, base, func(rt http.RoundTripper) (*kms.KmsClient, error) {
		hc := config.DefaultHttpConfig().
			WithTimeout(k.policy.AttemptTimeout).
			WithHttpRoundTripper(rt).
			WithRetries(0)
		c, err := kms.KmsClientBuilder().
			WithEndpoints([]string{endpoint}).
			WithCredential(cred).
			WithHttpConfig(hc).
			SafeBuild()
		if err != nil {
			return nil, err
		}
		return kms.NewKmsClient(c), nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", keyring.RedactURI(ku.Raw), keyring.ErrBadURI, err)
	}
	return k, nil
}

// credentials resolves the SDK's basic credential chain within ctx and at
// most 10 s (the metadata provider asks the ECS metadata service).
func (k *Keyring) credentials(ctx context.Context) (*auth.BasicCredentials, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	type result struct {
		c   auth.ICredential
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := provider.BasicCredentialProviderChain().GetCredentials()
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		r.err = ctx.Err()
	}
	if r.err == nil {
		if bc, ok := r.c.(*auth.BasicCredentials); ok {
			return bc, nil
		}
		r.err = fmt.Errorf("credential chain returned %T, want basic (AK/SK) credentials", r.c)
	}
	return nil, k.base("credentials").Credentials(r.err, "set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK, write ~/.huaweicloud/credentials, or run on ECS with an agency")
}

// URI returns the key URI.
func (k *Keyring) URI() string { return k.uri.Raw }

func (k *Keyring) base(op string) cloud.Error {
	return cloud.Error{Provider: Scheme, Op: op, Key: k.uri.Key, Region: k.uri.Region}
}

func (k *Keyring) call(ctx context.Context, op string, do func(c *kms.KmsClient) error) error {
	return k.policy.Do(ctx, k.base(op), func(actx context.Context) error {
		err := k.pool.Use(actx, do)
		if err == nil {
			return nil
		}
		return k.mapErr(op, err)
	})
}

func optAAD(encCtx []byte) *string {
	if len(encCtx) == 0 {
		return nil
	}
	s := string(encCtx)
	return &s
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// GenerateDataKey asks KMS for a 256-bit data key bound to encCtx.
func (k *Keyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*keyring.Key, []byte, error) {
	var resp *model.CreateDatakeyResponse
	spec := model.GetCreateDatakeyRequestBodyKeySpecEnum().AES_256
	bits := strconv.Itoa(keyring.DataKeySize * 8)
	err := k.call(ctx, "create-datakey", func(c *kms.KmsClient) error {
		r, err := c.CreateDatakey(&model.CreateDatakeyRequest{Body: &model.CreateDatakeyRequestBody{
			KeyId:                       k.uri.Key,
			KeySpec:                     &spec,
			DatakeyLength:               &bits,
			AdditionalAuthenticatedData: optAAD(encCtx),
		}})
		resp = r
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	wrapped := []byte(strings.ToUpper(str(resp.CipherText)))
	if len(wrapped) > cloud.MaxWrapped || !cloud.UpperHex(wrapped) {
		return nil, nil, k.malformed("create-datakey", fmt.Sprintf("cipher_text of %d bytes", len(wrapped)))
	}
	dk, err := k.plaintext("create-datakey", str(resp.PlainText), "", keyring.ErrUnavailable)
	if err != nil {
		return nil, nil, err
	}
	return dk, wrapped, nil
}

// Unwrap decrypts wrapped (a cipher_text) with encCtx as AAD.
func (k *Keyring) Unwrap(ctx context.Context, wrapped, encCtx []byte) (*keyring.Key, error) {
	if len(wrapped) > cloud.MaxWrapped || !cloud.UpperHex(wrapped) {
		return nil, k.unwrapErr(fmt.Sprintf("wrapped key of %d bytes is not upper-case hex", len(wrapped)))
	}
	var resp *model.DecryptDatakeyResponse
	err := k.call(ctx, "decrypt-datakey", func(c *kms.KmsClient) error {
		r, err := c.DecryptDatakey(&model.DecryptDatakeyRequest{Body: &model.DecryptDatakeyRequestBody{
			KeyId:                       k.uri.Key,
			CipherText:                  string(wrapped),
			DatakeyCipherLength:         strconv.Itoa(keyring.DataKeySize),
			AdditionalAuthenticatedData: optAAD(encCtx),
		}})
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	return k.plaintext("decrypt-datakey", str(resp.DataKey), str(resp.DatakeyDgst), keyring.ErrUnwrap)
}

// Wrap encrypts the data key dk under the key with encrypt-datakey.
func (k *Keyring) Wrap(ctx context.Context, dk *keyring.Key, encCtx []byte) ([]byte, error) {
	// encrypt-datakey takes hex(DEK || SHA-256(DEK)). The SDK takes a
	// string: this copy stays on the heap until the garbage collector
	// reuses it.
	sum := sha256.Sum256(dk.Bytes())
	pt := strings.ToUpper(hex.EncodeToString(dk.Bytes()) + hex.EncodeToString(sum[:]))
	var resp *model.EncryptDatakeyResponse
	err := k.call(ctx, "encrypt-datakey", func(c *kms.KmsClient) error {
		r, err := c.EncryptDatakey(&model.EncryptDatakeyRequest{Body: &model.EncryptDatakeyRequestBody{
			KeyId:                       k.uri.Key,
			PlainText:                   pt,
			DatakeyPlainLength:          strconv.Itoa(keyring.DataKeySize),
			AdditionalAuthenticatedData: optAAD(encCtx),
		}})
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	wrapped := []byte(strings.ToUpper(str(resp.CipherText)))
	if len(wrapped) > cloud.MaxWrapped || !cloud.UpperHex(wrapped) {
		return nil, k.malformed("encrypt-datakey", fmt.Sprintf("cipher_text of %d bytes", len(wrapped)))
	}
	return wrapped, nil
}

// plaintext decodes a hex data key into locked memory, checking its
// SHA-256 digest when the service sent one.
func (k *Keyring) plaintext(op, hexKey, hexDigest string, kind error) (*keyring.Key, error) {
	raw, err := hex.DecodeString(hexKey)
	bad := err != nil || len(raw) != keyring.DataKeySize
	if !bad && hexDigest != "" {
		sum := sha256.Sum256(raw)
		want, err := hex.DecodeString(hexDigest)
		bad = err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1
	}
	if bad {
		clear(raw)
		return nil, k.base(op).With(kind, fmt.Sprintf("service returned a data key that is not %d bytes or does not match its digest", keyring.DataKeySize))
	}
	return keyring.NewKeyFrom(raw)
}

func (k *Keyring) unwrapErr(msg string) error {
	return k.base("decrypt-datakey").With(keyring.ErrUnwrap, msg)
}

func (k *Keyring) malformed(op, what string) error { return k.base(op).Malformed(what) }

func (k *Keyring) mapErr(op string, err error) error {
	e := k.base(op)
	var se *sdkerr.ServiceResponseError
	if errors.As(err, &se) {
		e.Code, e.Message, e.RequestID = se.ErrorCode, se.ErrorMessage, se.RequestId
		e.Kind, e.Hint = classify(op, se.ErrorCode, se.ErrorMessage, se.StatusCode)
		return &e
	}
	return cloud.Classify(e, err)
}

// classify maps a Huawei Cloud error code and status to a keyring
// sentinel.
func classify(op, code, msg string, status int) (error, string) {
	asym := op == opGetPublicKey || op == opDecryptData
	switch {
	case code == "KMS.0207" || code == "KMS.0205":
		return keyring.ErrKeyNotFound, "check the key ID, the region and the project"
	case code == "KMS.0209" || code == "KMS.0210":
		return keyring.ErrKeyDisabled, "enable the key (or cancel its deletion) in KMS"
	case (code == "KMS.0306" || code == "KMS.0307") && asym:
		return keyring.ErrAccessDenied, "grant kms:cmk:getPublicKey and kms:cmk:decryptData on the key to this IAM user or agency"
	case code == "KMS.0306" || code == "KMS.0307":
		return keyring.ErrAccessDenied, "grant kms:dek:create and kms:dek:crypto on the key to this IAM user or agency"
	case (op == "decrypt-datakey" || op == opDecryptData) && (code == "KMS.2201" || code == "KMS.2202" || code == "KMS.2203" || code == "KMS.0208"):
		return keyring.ErrUnwrap, cloud.HintUnwrap
	case code == "KMS.0308" && asym:
		// "Invalid XXX": the only parameters sent are the key ID and,
		// for decrypt-data, the algorithm, which every RSA key takes.
		return keyring.ErrNotAsymmetric, "the key is not an RSA ENCRYPT_DECRYPT key; name a symmetric key " + Scheme + "://REGION/KEYID?project=PROJECT_ID"
	case code == "KMS.0308":
		return keyring.ErrAccessDenied, "the service refused a parameter; if the key is an RSA key, name it " + Scheme + pubkey.Suffix + "://REGION/KEYID?project=PROJECT_ID"
	case status == http.StatusTooManyRequests || code == "APIGW.0308":
		return keyring.ErrThrottled, ""
	case status >= 500 || code == "KMS.0101" || code == "KMS.0102":
		return keyring.ErrUnavailable, ""
	case status == http.StatusUnauthorized || code == "APIGW.0301" || code == "KMS.0301" || code == "KMS.0302" || code == "KMS.0303":
		if strings.Contains(strings.ToLower(msg), "expire") {
			return keyring.ErrBadCredentials, "check this machine's clock"
		}
		return keyring.ErrBadCredentials, "check HUAWEICLOUD_SDK_AK/SK or the profile in use"
	case status == http.StatusNotFound:
		return keyring.ErrKeyNotFound, "check the key ID, the region and the project"
	}
	return keyring.ErrAccessDenied, "the service refused the request"
}
