// Package instance is the keyring provider for keys in an Alibaba Cloud
// KMS instance (a dedicated KMS: software or hardware key management,
// reached at its own endpoint), through the KMS Instance SDK
// (github.com/aliyun/alibabacloud-dkms-gcs-go-sdk).
//
// Key URIs are alibaba-kms-instance://ENDPOINT/KEY, where ENDPOINT is the
// instance's VPC endpoint (kst-....cryptoservice.kms.aliyuncs.com, with a
// port if not 443) and KEY a key ID or alias/NAME. New data keys come
// from AdvanceGenerateDataKey (32 bytes), are unwrapped with
// AdvanceDecrypt and wrapped with AdvanceEncrypt, as Alibaba recommends
// for symmetric keys; the encryption context is the GCM additional data
// (Aad). The wrapped key kmsfs stores is the standard base64 of the
// CiphertextBlob.
//
// An RSA decryption key of the instance (RSA_2048, RSA_3072 or RSA_4096,
// usage ENCRYPT/DECRYPT) is used through its public key under the scheme
// alibaba-kms-instance+rsa://ENDPOINT/KEY (package keyring/pubkey): data
// keys are wrapped locally with RSAES-OAEP SHA-256 under the public key
// (fetched once with GetPublicKey, or recorded in the volume), and
// unwrapped by the instance's Decrypt with Algorithm RSAES_OAEP_SHA_256.
// See OpenAsymmetric.
//
// The instance authenticates the application access point's client key:
// a key file (clientKey_*.json, as the console issues it) and its
// password, and the instance's CA certificate checks the server. They
// come from the user's environment, never from the URI or the volume:
//
//	ALIBABA_KMS_INSTANCE_CLIENT_KEY_FILE       the client key file
//	ALIBABA_KMS_INSTANCE_CLIENT_KEY_PASSWORD   its password, or
//	ALIBABA_KMS_INSTANCE_CLIENT_KEY_PASSWORD_FILE  a file holding it
//	ALIBABA_KMS_INSTANCE_CA_FILE               the instance CA (PEM)
//
// The files must belong to the user and be closed to others.
package instance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/alibabacloud-go/tea/tea"
	dkmsopenapi "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi"
	dkmsutil "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi-util"
	dkms "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/sdk"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/cloud"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// Scheme is the URI scheme of this provider.
const Scheme = "alibaba-kms-instance"

// The environment variables the provider reads.
const (
	EnvClientKeyFile     = "ALIBABA_KMS_INSTANCE_CLIENT_KEY_FILE"
	EnvClientKeyPassword = "ALIBABA_KMS_INSTANCE_CLIENT_KEY_PASSWORD"
	EnvPasswordFile      = "ALIBABA_KMS_INSTANCE_CLIENT_KEY_PASSWORD_FILE"
	EnvCAFile            = "ALIBABA_KMS_INSTANCE_CA_FILE"
)

// maxInFlight bounds the calls in flight per keyring.
const maxInFlight = 8

// maxFile bounds the client key, password and CA files.
const maxFile = 64 << 10

// Register adds the provider to reg under Scheme, and its RSA keys under
// Scheme+pubkey.Suffix (alibaba-kms-instance+rsa).
func Register(reg *keyring.Registry) {
	reg.Register(Scheme, func(ctx context.Context, u *url.URL, _ keyring.Options) (keyring.Keyring, error) {
		return Open(ctx, u)
	})
	pubkey.Register(reg, Scheme, func(ctx context.Context, u *url.URL) (keyring.AsymmetricKey, error) {
		a, err := OpenAsymmetric(ctx, u)
		if err != nil {
			// Not a: a typed nil pointer would be a non-nil interface.
			return nil, err
		}
		return a, nil
	})
}

// Keyring is a key in a KMS instance.
type Keyring struct {
	raw      string
	endpoint string // host[:port]
	key      string // key ID or alias/NAME
	keyID    bool   // key names a key ID
	client   *dkms.Client
	slots    chan struct{}
	policy   cloud.Policy
}

var (
	_ keyring.Keyring = (*Keyring)(nil)
	_ keyring.Wrapper = (*Keyring)(nil)
)

// URIParts splits a key URI into the instance endpoint and the key.
func URIParts(u *url.URL) (endpoint, key string, err error) {
	bad := func(why string) error {
		return fmt.Errorf("%s: %w: %s (want %s://ENDPOINT/KEY_ID or %s://ENDPOINT/alias/NAME)", keyring.RedactURI(u.String()), keyring.ErrBadURI, why, Scheme, Scheme)
	}
	switch {
	case u.Scheme != Scheme:
		return "", "", bad("scheme is not " + Scheme)
	case u.User != nil:
		return "", "", bad("credentials do not belong in a key URI; they come from the environment")
	case u.Host == "":
		return "", "", bad("no instance endpoint")
	case u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", "", bad("unexpected query, fragment or form")
	}
	host := u.Hostname()
	if host == "" || strings.ContainsAny(host, "%[]") && net.ParseIP(host) == nil {
		return "", "", bad("bad endpoint host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", "", bad("bad endpoint port")
		}
	}
	key = strings.TrimPrefix(u.Path, "/")
	switch {
	case key == "":
		return "", "", bad("no key")
	case strings.HasPrefix(key, "alias/"):
		if n := strings.TrimPrefix(key, "alias/"); n == "" || strings.Contains(n, "/") {
			return "", "", bad("bad alias")
		}
	case strings.Contains(key, "/"):
		return "", "", bad("a key ID has no '/'")
	}
	for _, c := range key {
		if c <= ' ' || c == 0x7f {
			return "", "", bad("control or space character in the key")
		}
	}
	return u.Host, key, nil
}

// Open opens the key named by u: it reads the client key, its password
// and the CA from the environment and builds the SDK client, but makes
// no call to the instance.
func Open(ctx context.Context, u *url.URL) (*Keyring, error) {
	endpoint, key, err := URIParts(u)
	if err != nil {
		return nil, err
	}
	k := &Keyring{raw: u.String(), endpoint: endpoint, key: key, keyID: !strings.HasPrefix(key, "alias/"),
		slots: make(chan struct{}, maxInFlight), policy: cloud.DefaultPolicy}
	cfg, err := k.config()
	if err != nil {
		return nil, err
	}
	if k.client, err = dkms.NewClient(cfg); err != nil {
		return nil, k.base("credentials").Credentials(err, "check the client key file and its password ("+EnvClientKeyFile+", "+EnvClientKeyPassword+")")
	}
	return k, nil
}

// config builds the SDK configuration from the environment.
func (k *Keyring) config() (*dkmsopenapi.Config, error) {
	cred := func(msg string) error {
		e := k.base("credentials").With(keyring.ErrBadCredentials, msg)
		e.Hint = "set " + EnvClientKeyFile + ", " + EnvClientKeyPassword + " (or " + EnvPasswordFile + ") and " + EnvCAFile + " (docs/KMS.md)"
		return e
	}
	keyPath := os.Getenv(EnvClientKeyFile)
	caPath := os.Getenv(EnvCAFile)
	if keyPath == "" || caPath == "" {
		return nil, cred("no client key file or CA certificate in the environment")
	}
	keyData, err := readPrivate(keyPath)
	if err != nil {
		return nil, cred(err.Error())
	}
	var ck struct {
		KeyID      string `json:"KeyId"`
		PrivateKey string `json:"PrivateKeyData"`
	}
	if err := json.Unmarshal(keyData, &ck); err != nil || ck.KeyID == "" || ck.PrivateKey == "" {
		return nil, cred(fmt.Sprintf("client key file %s: not a KMS instance client key (JSON with KeyId and PrivateKeyData)", keyPath))
	}
	pass, ok := os.LookupEnv(EnvClientKeyPassword)
	if !ok {
		p := os.Getenv(EnvPasswordFile)
		if p == "" {
			return nil, cred("no client key password in the environment")
		}
		b, err := readPrivate(p)
		if err != nil {
			return nil, cred(err.Error())
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	ca, err := readFile(caPath)
	if err != nil {
		return nil, cred(err.Error())
	}
	if !strings.Contains(string(ca), "-----BEGIN CERTIFICATE-----") {
		return nil, cred(fmt.Sprintf("CA file %s holds no PEM certificate", caPath))
	}
	return &dkmsopenapi.Config{
		Protocol:         tea.String("https"),
		Endpoint:         tea.String(k.endpoint),
		ClientKeyContent: tea.String(string(keyData)),
		Password:         tea.String(pass),
		Ca:               tea.String(string(ca)),
		IgnoreSSL:        tea.Bool(false),
		ReadTimeout:      tea.Int(int(k.policy.AttemptTimeout.Milliseconds())),
		ConnectTimeout:   tea.Int(5), // seconds, in this SDK
	}, nil
}

// readPrivate reads a secret file: it must be a regular file of the
// user's, closed to group and others.
func readPrivate(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("%s is owned by uid %d, not by you", path, st.Uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o, open to group or others (fix: chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	return readFile(path)
}

// readFile reads a small regular file.
func readFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxFile {
		return nil, fmt.Errorf("%s: %w: not a regular file of at most %d bytes", path, fs.ErrInvalid, maxFile)
	}
	return os.ReadFile(path)
}

// URI returns the key URI.
func (k *Keyring) URI() string { return k.raw }

func (k *Keyring) base(op string) cloud.Error {
	return cloud.Error{Provider: Scheme, Op: op, Key: k.key, Region: k.endpoint}
}

// runtime is every call's runtime options: the SDK's own retries are off
// (they sleep seconds, without a context); ours are in call.
func (k *Keyring) runtime() *dkmsutil.RuntimeOptions {
	return &dkmsutil.RuntimeOptions{Autoretry: tea.Bool(false), IgnoreSSL: tea.Bool(false)}
}

// call runs one instance API call with retries. The SDK takes no
// context: a call cut short by ctx returns at once and its request runs
// out in the background (bounded by the attempt timeout), holding its
// slot.
func (k *Keyring) call(ctx context.Context, op string, do func() error) error {
	return k.policy.Do(ctx, k.base(op), func(actx context.Context) error {
		select {
		case k.slots <- struct{}{}:
		case <-actx.Done():
			return cloud.Classify(k.base(op), actx.Err())
		}
		done := make(chan error, 1)
		go func() {
			defer func() { <-k.slots }()
			done <- do()
		}()
		select {
		case err := <-done:
			if err == nil {
				return nil
			}
			return k.mapErr(op, err)
		case <-actx.Done():
			return cloud.Classify(k.base(op), actx.Err())
		}
	})
}

// GenerateDataKey asks the instance for a 32-byte data key bound to
// encCtx.
func (k *Keyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*keyring.Key, []byte, error) {
	if err := cloud.CheckContext(encCtx); err != nil {
		return nil, nil, fmt.Errorf("%s: AdvanceGenerateDataKey key %s: %w", Scheme, k.key, err)
	}
	var resp *dkms.AdvanceGenerateDataKeyResponse
	err := k.call(ctx, "AdvanceGenerateDataKey", func() error {
		r, err := k.client.AdvanceGenerateDataKeyWithOptions(&dkms.AdvanceGenerateDataKeyRequest{
			KeyId: tea.String(k.key), NumberOfBytes: tea.Int32(keyring.DataKeySize), Aad: encCtx,
		}, k.runtime())
		resp = r
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	wrapped, err := k.wrapped("AdvanceGenerateDataKey", resp.CiphertextBlob)
	if err != nil {
		clear(resp.Plaintext)
		return nil, nil, err
	}
	dk, err := k.plaintext("AdvanceGenerateDataKey", resp.Plaintext, keyring.ErrUnavailable)
	if err != nil {
		return nil, nil, err
	}
	return dk, wrapped, nil
}

// Unwrap decrypts wrapped with encCtx (AdvanceDecrypt: the blob names
// its key).
func (k *Keyring) Unwrap(ctx context.Context, wrapped, encCtx []byte) (*keyring.Key, error) {
	if len(wrapped) > cloud.MaxWrapped || !cloud.CanonicalBase64(wrapped) {
		return nil, k.unwrapErr(fmt.Sprintf("wrapped key of %d bytes is not canonical base64", len(wrapped)))
	}
	if err := cloud.CheckContext(encCtx); err != nil {
		return nil, k.unwrapErr(err.Error())
	}
	blob, err := base64.StdEncoding.DecodeString(string(wrapped))
	if err != nil {
		return nil, k.unwrapErr("wrapped key is not base64")
	}
	var resp *dkms.AdvanceDecryptResponse
	err = k.call(ctx, "AdvanceDecrypt", func() error {
		r, err := k.client.AdvanceDecryptWithOptions(&dkms.AdvanceDecryptRequest{CiphertextBlob: blob, Aad: encCtx}, k.runtime())
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	if k.keyID && tea.StringValue(resp.KeyId) != k.key {
		clear(resp.Plaintext)
		return nil, k.unwrapErr("it was made by key " + tea.StringValue(resp.KeyId))
	}
	return k.plaintext("AdvanceDecrypt", resp.Plaintext, keyring.ErrUnwrap)
}

// Wrap encrypts the data key dk under the key with AdvanceEncrypt.
func (k *Keyring) Wrap(ctx context.Context, dk *keyring.Key, encCtx []byte) ([]byte, error) {
	if err := cloud.CheckContext(encCtx); err != nil {
		return nil, fmt.Errorf("%s: AdvanceEncrypt key %s: %w", Scheme, k.key, err)
	}
	// The SDK marshals the request on the heap: this copy is wiped after
	// the call, the SDK's own when the garbage collector reuses it.
	pt := make([]byte, keyring.DataKeySize)
	copy(pt, dk.Bytes())
	defer clear(pt)
	var resp *dkms.AdvanceEncryptResponse
	err := k.call(ctx, "AdvanceEncrypt", func() error {
		r, err := k.client.AdvanceEncryptWithOptions(&dkms.AdvanceEncryptRequest{KeyId: tea.String(k.key), Plaintext: pt, Aad: encCtx}, k.runtime())
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	return k.wrapped("AdvanceEncrypt", resp.CiphertextBlob)
}

// wrapped encodes a CiphertextBlob for a header slot.
func (k *Keyring) wrapped(op string, blob []byte) ([]byte, error) {
	w := []byte(base64.StdEncoding.EncodeToString(blob))
	if len(blob) == 0 || len(w) > cloud.MaxWrapped {
		return nil, k.base(op).Malformed(fmt.Sprintf("CiphertextBlob of %d bytes", len(blob)))
	}
	return w, nil
}

// plaintext moves a returned data key into locked memory (and wipes the
// response's copy).
func (k *Keyring) plaintext(op string, b []byte, kind error) (*keyring.Key, error) {
	if len(b) != keyring.DataKeySize {
		clear(b)
		return nil, k.base(op).With(kind, fmt.Sprintf("service returned a plaintext that is not a %d-byte key", keyring.DataKeySize))
	}
	return keyring.NewKeyFrom(b)
}

func (k *Keyring) unwrapErr(msg string) error {
	return k.base("AdvanceDecrypt").With(keyring.ErrUnwrap, msg)
}

// mapErr turns an SDK error into a *cloud.Error with the matching kind.
func (k *Keyring) mapErr(op string, err error) error {
	e := k.base(op)
	var se *tea.SDKError
	if errors.As(err, &se) && se.Code != nil && *se.Code != "" {
		e.Code, e.Message = tea.StringValue(se.Code), tea.StringValue(se.Message)
		var data struct {
			HTTPCode  int    `json:"httpCode"`
			RequestID string `json:"requestId"`
		}
		if se.Data != nil {
			_ = json.Unmarshal([]byte(*se.Data), &data)
		}
		e.RequestID = data.RequestID
		e.Kind, e.Hint = classify(op, e.Code, data.HTTPCode)
		return &e
	}
	msg := err.Error()
	if se != nil && se.Message != nil {
		msg = *se.Message
	}
	if strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:") && strings.Contains(msg, "certificate") {
		e.Kind, e.Message = keyring.ErrBadCredentials, msg
		e.Hint = "the instance's certificate does not check against " + EnvCAFile + " (the instance CA) for " + k.endpoint
		return &e
	}
	return cloud.Classify(e, errors.New(msg))
}

// classify maps a KMS instance error code to a keyring sentinel.
func classify(op, code string, status int) (error, string) {
	switch {
	case code == "Forbidden.KeyNotFound" || code == "Forbidden.AliasNotFound":
		return keyring.ErrKeyNotFound, "check the key ID or alias and the instance endpoint"
	case code == "Rejected.Disabled" || code == "Rejected.PendingDeletion" || code == "Forbidden.KeyNotEnabled":
		return keyring.ErrKeyDisabled, "enable the key (or cancel its deletion) in the KMS instance"
	case code == "Unauthorized" || code == "InvalidAccessKeyId.NotFound" || code == "IncompleteSignature" ||
		code == "MissingParameter" || code == "InvalidParam" || status == http.StatusUnauthorized:
		return keyring.ErrBadCredentials, "check the client key file and its password (" + EnvClientKeyFile + ") and that the application access point is enabled"
	case code == "RequestTimeTooSkewed":
		return keyring.ErrBadCredentials, "check this machine's clock"
	case code == "Rejected.Throttling" || strings.HasPrefix(code, "Throttling") || status == http.StatusTooManyRequests:
		return keyring.ErrThrottled, ""
	case status >= 500 || code == "InternalFailure" || strings.HasPrefix(code, "ServiceUnavailable"):
		return keyring.ErrUnavailable, ""
	case strings.HasPrefix(code, "Forbidden"):
		return keyring.ErrAccessDenied, "the application access point's policy must allow this key (cryptoservice/key/...)"
	case code == "UnsupportedOperation" || code == "Rejected.UnsupportedOperation":
		// The key's spec or usage does not allow the call.
		if asymmetricOp(op) {
			return keyring.ErrNotAsymmetric, "the key is not an RSA key for ENCRYPT/DECRYPT; a symmetric key is used as " + Scheme + "://ENDPOINT/KEY"
		}
		return keyring.ErrAccessDenied, "the key is not a symmetric key; an RSA key is used as " + Scheme + pubkey.Suffix + "://ENDPOINT/KEY"
	case (op == "AdvanceDecrypt" || op == opDecryptOAEP) && (code == "InvalidParameter" || code == "InvalidCiphertext" || code == "Rejected.ValueError"):
		return keyring.ErrUnwrap, cloud.HintUnwrap
	case code == "InvalidParameter":
		return keyring.ErrKeyNotFound, "the key ID or alias is not valid"
	}
	return keyring.ErrAccessDenied, "the service refused the request"
}
