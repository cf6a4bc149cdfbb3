package kmsemu_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alibabacloud-go/tea/tea"
	dedicatedkmsopenapi "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi"
	dedicatedkmsopenapiutil "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi-util"
	"github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi-util/protobuf/api"
	dedicatedkmssdk "github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/sdk"
	"google.golang.org/protobuf/proto"

	"github.com/kmsfs/kmsfs/keyring/kmsemu"
	"github.com/kmsfs/kmsfs/keyring/kmsemu/kmsemutest"
)

const (
	instClientKeyID = "KAAP.test"
	instID          = "kst-test"
	// The client key file fixture (testdata/instance/README).
	clientKeyFile     = "testdata/instance/clientKey_KAAP.test.json"
	clientKeyCertFile = "testdata/instance/clientKey_KAAP.test.cert.pem"
	clientKeyPassword = "kmsfs-test"
)

// testRSAKeys are RSA 2048 client keys, made once per test binary.
var testRSAKeys = sync.OnceValue(func() [3]*rsa.PrivateKey {
	var ks [3]*rsa.PrivateKey
	for i := range ks {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		ks[i] = k
	}
	return ks
})

func rsaKey(i int) *rsa.PrivateKey { return testRSAKeys()[i] }

func pkcs1PEM(k *rsa.PrivateKey) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
}

func publicPEM(t testing.TB, k *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func instCred(t testing.TB, id string, k *rsa.PrivateKey) kmsemu.Credential {
	return kmsemu.Credential{Cloud: kmsemu.AlibabaInstance, ID: id, PublicKey: publicPEM(t, k)}
}

// instClient is an SDK client with the runtime options to call it with.
type instClient struct {
	*dedicatedkmssdk.Client
	rt *dedicatedkmsopenapiutil.RuntimeOptions
}

var clientSeq atomic.Int32

// newInstClient makes an SDK client for s's TLS listener. The SDK pools
// its http.Clients by host:port and timeouts but not by CA or client
// certificate, so every client gets a read timeout of its own (and tests
// that need another TLS setup use a fresh emulator as well).
func newInstClient(t testing.TB, s *kmsemu.Server, cfg *dedicatedkmsopenapi.Config) instClient {
	t.Helper()
	cfg.Protocol = tea.String("https")
	cfg.Endpoint = tea.String(s.TLSAddr())
	if cfg.Ca == nil {
		cfg.Ca = tea.String(string(s.CACertPEM()))
	}
	c, err := dedicatedkmssdk.NewClient(cfg)
	if err != nil {
		t.Fatalf("dedicatedkmssdk.NewClient() error = %v", err)
	}
	return instClient{c, &dedicatedkmsopenapiutil.RuntimeOptions{
		Autoretry:   tea.Bool(false),
		ReadTimeout: tea.Int(30000 + int(clientSeq.Add(1))),
	}}
}

func pemClient(t testing.TB, s *kmsemu.Server, id string, k *rsa.PrivateKey) instClient {
	return newInstClient(t, s, &dedicatedkmsopenapi.Config{AccessKeyId: tea.String(id), PrivateKey: tea.String(pkcs1PEM(k))})
}

func (c instClient) generate(keyID string, aad []byte) (*dedicatedkmssdk.AdvanceGenerateDataKeyResponse, error) {
	return c.AdvanceGenerateDataKeyWithOptions(&dedicatedkmssdk.AdvanceGenerateDataKeyRequest{
		KeyId: tea.String(keyID), NumberOfBytes: tea.Int32(32), Aad: aad,
	}, c.rt)
}

func (c instClient) decrypt(blob, aad []byte) (*dedicatedkmssdk.AdvanceDecryptResponse, error) {
	return c.AdvanceDecryptWithOptions(&dedicatedkmssdk.AdvanceDecryptRequest{CiphertextBlob: blob, Aad: aad}, c.rt)
}

// sdkErr returns the code and HTTP status of an SDK error.
func sdkErr(t testing.TB, err error) (string, int) {
	t.Helper()
	var se *tea.SDKError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *tea.SDKError", err, err)
	}
	var data struct {
		HTTPCode int `json:"httpCode"`
	}
	if se.Data != nil {
		_ = json.Unmarshal([]byte(*se.Data), &data)
	}
	return tea.StringValue(se.Code), data.HTTPCode
}

func wantSDKErr(t testing.TB, what string, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want %s (HTTP %d)", what, code, status)
	}
	if got, st := sdkErr(t, err); got != code || st != status {
		t.Fatalf("%s error = %v (code %q, HTTP %d), want %s (HTTP %d)", what, err, got, st, code, status)
	}
}

// startInstance starts a TLS emulator accepting KAAP.test (rsaKey(0))
// with one enabled key.
func startInstance(t *testing.T, creds ...kmsemu.Credential) (*kmsemu.Server, kmsemu.Key) {
	t.Helper()
	s := kmsemutest.StartTLS(t, append([]kmsemu.Credential{instCred(t, instClientKeyID, rsaKey(0))}, creds...)...)
	k := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID})
	return s, k
}

func TestInstanceDataKeys(t *testing.T) {
	s, key := startInstance(t)
	c := pemClient(t, s, instClientKeyID, rsaKey(0))
	aad := []byte("kmsfs volume 1")

	t.Run("AdvanceGenerateDataKey then AdvanceDecrypt with only the blob and Aad", func(t *testing.T) {
		g, err := c.generate(key.ID, aad)
		if err != nil {
			t.Fatalf("AdvanceGenerateDataKey() error = %v", err)
		}
		if len(g.Plaintext) != 32 || len(g.CiphertextBlob) == 0 || tea.StringValue(g.KeyId) != key.ID || tea.StringValue(g.Algorithm) != "AES_GCM" {
			t.Fatalf("AdvanceGenerateDataKey() = %v, want 32 bytes under %s", g, key.ID)
		}
		d, err := c.decrypt(g.CiphertextBlob, aad)
		if err != nil {
			t.Fatalf("AdvanceDecrypt() error = %v", err)
		}
		if !bytes.Equal(d.Plaintext, g.Plaintext) || tea.StringValue(d.KeyId) != key.ID {
			t.Fatalf("AdvanceDecrypt() = %v, want the data key under %s", d, key.ID)
		}
		_, err = c.decrypt(g.CiphertextBlob, []byte("kmsfs volume 2"))
		wantSDKErr(t, "AdvanceDecrypt with another Aad", err, "InvalidParameter", 400)
		_, err = c.decrypt(g.CiphertextBlob, nil)
		wantSDKErr(t, "AdvanceDecrypt without the Aad", err, "InvalidParameter", 400)
		altered := bytes.Clone(g.CiphertextBlob)
		altered[len(altered)-1] ^= 1
		_, err = c.decrypt(altered, aad)
		wantSDKErr(t, "AdvanceDecrypt of an altered blob", err, "InvalidParameter", 400)
	})

	t.Run("AdvanceEncrypt AdvanceDecrypt", func(t *testing.T) {
		e, err := c.AdvanceEncryptWithOptions(&dedicatedkmssdk.AdvanceEncryptRequest{KeyId: tea.String(key.ID), Plaintext: []byte("secret"), Aad: aad}, c.rt)
		if err != nil {
			t.Fatalf("AdvanceEncrypt() error = %v", err)
		}
		d, err := c.decrypt(e.CiphertextBlob, aad)
		if err != nil || string(d.Plaintext) != "secret" {
			t.Fatalf("AdvanceDecrypt() = %v, %v, want secret", d, err)
		}
	})

	t.Run("GenerateDataKey Encrypt Decrypt", func(t *testing.T) {
		g, err := c.GenerateDataKeyWithOptions(&dedicatedkmssdk.GenerateDataKeyRequest{KeyId: tea.String(key.ID), NumberOfBytes: tea.Int32(16), Aad: aad}, c.rt)
		if err != nil || len(g.Plaintext) != 16 || len(g.Iv) != 12 {
			t.Fatalf("GenerateDataKey() = %v, %v, want 16 bytes and a 12-byte Iv", g, err)
		}
		d, err := c.DecryptWithOptions(&dedicatedkmssdk.DecryptRequest{KeyId: tea.String(key.ID), CiphertextBlob: g.CiphertextBlob, Iv: g.Iv, Aad: aad}, c.rt)
		if err != nil || !bytes.Equal(d.Plaintext, g.Plaintext) {
			t.Fatalf("Decrypt() = %v, %v, want the data key", d, err)
		}
		iv := []byte("0123456789ab")
		e, err := c.EncryptWithOptions(&dedicatedkmssdk.EncryptRequest{KeyId: tea.String(key.ID), Plaintext: []byte("p"), Aad: aad, Iv: iv}, c.rt)
		if err != nil || !bytes.Equal(e.Iv, iv) {
			t.Fatalf("Encrypt() with an Iv = %v, %v, want that Iv", e, err)
		}
		d, err = c.DecryptWithOptions(&dedicatedkmssdk.DecryptRequest{KeyId: tea.String(key.ID), CiphertextBlob: e.CiphertextBlob, Iv: iv, Aad: aad}, c.rt)
		if err != nil || string(d.Plaintext) != "p" {
			t.Fatalf("Decrypt() = %v, %v, want p", d, err)
		}
		other := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID})
		_, err = c.DecryptWithOptions(&dedicatedkmssdk.DecryptRequest{KeyId: tea.String(other.ID), CiphertextBlob: e.CiphertextBlob, Aad: aad}, c.rt)
		wantSDKErr(t, "Decrypt naming another key", err, "InvalidParameter", 400)
		_, err = c.DecryptWithOptions(&dedicatedkmssdk.DecryptRequest{KeyId: tea.String(key.ID), CiphertextBlob: e.CiphertextBlob, Iv: []byte("ba9876543210"), Aad: aad}, c.rt)
		wantSDKErr(t, "Decrypt with another Iv", err, "InvalidParameter", 400)
	})

	t.Run("alias", func(t *testing.T) {
		if err := s.CreateAlias(key.ID, "alias/backup"); err != nil {
			t.Fatal(err)
		}
		g, err := c.generate("alias/backup", aad)
		if err != nil || tea.StringValue(g.KeyId) != key.ID {
			t.Fatalf("AdvanceGenerateDataKey(alias/backup) = %v, %v, want key %s", g, err, key.ID)
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		_, err := c.generate("no-such-key", aad)
		wantSDKErr(t, "AdvanceGenerateDataKey of an unknown key", err, "Forbidden.KeyNotFound", 404)
		_, err = c.AdvanceGenerateDataKeyWithOptions(&dedicatedkmssdk.AdvanceGenerateDataKeyRequest{KeyId: tea.String(key.ID), NumberOfBytes: tea.Int32(2000)}, c.rt)
		wantSDKErr(t, "AdvanceGenerateDataKey of 2000 bytes", err, "InvalidParameter", 400)
		_, err = c.AdvanceEncryptWithOptions(&dedicatedkmssdk.AdvanceEncryptRequest{KeyId: tea.String(key.ID), Plaintext: []byte("x"), Algorithm: tea.String("SM4_GCM")}, c.rt)
		wantSDKErr(t, "AdvanceEncrypt with SM4_GCM", err, "InvalidParameter", 400)
	})

	if n := s.Count(kmsemu.AlibabaInstance, "AdvanceGenerateDataKey", "ok"); n != 2 {
		t.Errorf("Count(AdvanceGenerateDataKey, ok) = %d, want 2", n)
	}
}

func TestInstanceAuthentication(t *testing.T) {
	s, key := startInstance(t, kmsemu.Credential{Cloud: kmsemu.AlibabaInstance, ID: "KAAP.denied", PublicKey: publicPEM(t, rsaKey(2)), Denied: true})

	t.Run("other RSA key", func(t *testing.T) {
		before := s.Count(kmsemu.AlibabaInstance, "", "")
		_, err := pemClient(t, s, instClientKeyID, rsaKey(1)).generate(key.ID, nil)
		wantSDKErr(t, "a call signed with another RSA key", err, "Unauthorized", 401)
		if n := s.Count(kmsemu.AlibabaInstance, "", ""); n != before+1 {
			t.Errorf("requests counted = %d, want %d", n, before+1)
		}
		if n := s.Count(kmsemu.AlibabaInstance, "", "ok"); n != 0 {
			t.Errorf("successful requests = %d, want 0", n)
		}
	})

	t.Run("unknown client key", func(t *testing.T) {
		_, err := pemClient(t, s, "KAAP.nobody", rsaKey(0)).generate(key.ID, nil)
		wantSDKErr(t, "a call by an unknown client key", err, "Unauthorized", 401)
	})

	t.Run("denied", func(t *testing.T) {
		_, err := pemClient(t, s, "KAAP.denied", rsaKey(2)).generate(key.ID, nil)
		wantSDKErr(t, "a call by a denied client key", err, "Forbidden.NoPermission", 403)
	})

	t.Run("valid", func(t *testing.T) {
		if _, err := pemClient(t, s, instClientKeyID, rsaKey(0)).generate(key.ID, nil); err != nil {
			t.Fatalf("AdvanceGenerateDataKey() error = %v", err)
		}
	})
}

func TestInstanceOtherCA(t *testing.T) {
	s, key := startInstance(t)
	other := kmsemutest.StartTLS(t)
	c := newInstClient(t, s, &dedicatedkmsopenapi.Config{
		AccessKeyId: tea.String(instClientKeyID), PrivateKey: tea.String(pkcs1PEM(rsaKey(0))),
		Ca: tea.String(string(other.CACertPEM())),
	})
	_, err := c.generate(key.ID, nil)
	var unknownCA x509.UnknownAuthorityError
	if !errors.As(err, &unknownCA) {
		t.Fatalf("call to an emulator whose CA the client does not trust: error = %v, want x509.UnknownAuthorityError", err)
	}
	if n := s.Count(kmsemu.AlibabaInstance, "", ""); n != 0 {
		t.Errorf("requests counted = %d, want 0", n)
	}
}

func TestInstanceKeyStatesAndFaults(t *testing.T) {
	s, key := startInstance(t)
	c := pemClient(t, s, instClientKeyID, rsaKey(0))
	g, err := c.generate(key.ID, nil)
	if err != nil {
		t.Fatal(err)
	}

	if err := s.DisableKey(key.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.generate(key.ID, nil)
	wantSDKErr(t, "AdvanceGenerateDataKey of a disabled key", err, "Rejected.Disabled", 400)
	_, err = c.decrypt(g.CiphertextBlob, nil)
	wantSDKErr(t, "AdvanceDecrypt under a disabled key", err, "Rejected.Disabled", 400)
	if err := s.ScheduleKeyDeletion(key.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.decrypt(g.CiphertextBlob, nil)
	wantSDKErr(t, "AdvanceDecrypt under a key pending deletion", err, "Rejected.PendingDeletion", 400)
	if err := s.EnableKey(key.ID); err != nil {
		t.Fatal(err)
	}

	s.AddFault(kmsemu.Fault{Cloud: kmsemu.AlibabaInstance, Action: "AdvanceDecrypt", Throttle: 1})
	_, err = c.decrypt(g.CiphertextBlob, nil)
	wantSDKErr(t, "throttled AdvanceDecrypt", err, "Rejected.Throttling", 429)
	if _, err := c.decrypt(g.CiphertextBlob, nil); err != nil {
		t.Fatalf("AdvanceDecrypt after the throttling = %v", err)
	}
	if n := s.Count(kmsemu.AlibabaInstance, "AdvanceDecrypt", "throttled"); n != 1 {
		t.Errorf("Count(AdvanceDecrypt, throttled) = %d, want 1", n)
	}

	s.SetFaults(kmsemu.Fault{Cloud: kmsemu.AlibabaInstance, Outage: kmsemu.OutageError})
	_, err = c.decrypt(g.CiphertextBlob, nil)
	wantSDKErr(t, "AdvanceDecrypt during an outage", err, "ServiceUnavailableTemporary", 503)
	s.ClearFaults()
}

// TestInstanceClientKeyFile signs with a client key file as Alibaba
// Cloud issues them (a legacy PKCS#12 in JSON, with a password).
func TestInstanceClientKeyFile(t *testing.T) {
	cert, err := os.ReadFile(clientKeyCertFile)
	if err != nil {
		t.Fatal(err)
	}
	content, err := os.ReadFile(clientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := kmsemutest.StartTLS(t, kmsemu.Credential{Cloud: kmsemu.AlibabaInstance, ID: instClientKeyID, PublicKey: string(cert)})
	key := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID})
	for name, cfg := range map[string]*dedicatedkmsopenapi.Config{
		"ClientKeyFile":    {ClientKeyFile: tea.String(clientKeyFile), Password: tea.String(clientKeyPassword)},
		"ClientKeyContent": {ClientKeyContent: tea.String(string(content)), Password: tea.String(clientKeyPassword)},
	} {
		t.Run(name, func(t *testing.T) {
			c := newInstClient(t, s, cfg)
			g, err := c.generate(key.ID, []byte("aad"))
			if err != nil {
				t.Fatalf("AdvanceGenerateDataKey() error = %v", err)
			}
			d, err := c.decrypt(g.CiphertextBlob, []byte("aad"))
			if err != nil || !bytes.Equal(d.Plaintext, g.Plaintext) {
				t.Fatalf("AdvanceDecrypt() = %v, %v, want the data key", d, err)
			}
		})
	}
	if _, err := dedicatedkmssdk.NewClient(&dedicatedkmsopenapi.Config{
		Endpoint: tea.String(s.TLSAddr()), ClientKeyFile: tea.String(clientKeyFile), Password: tea.String("wrong"),
	}); err == nil {
		t.Error("NewClient() with the wrong client key password succeeded")
	}
}

// instSign signs a hand-built request as the SDK does (written here from
// the protocol, not with the emulator's code).
func instSign(r *http.Request, k *rsa.PrivateKey) {
	var names []string
	for name := range r.Header {
		if l := strings.ToLower(name); strings.HasPrefix(l, "x-kms-") {
			names = append(names, l)
		}
	}
	sort.Strings(names)
	sts := "POST\n" + r.Header.Get("content-sha256") + "\n" + r.Header.Get("content-type") + "\n" + r.Header.Get("date") + "\n"
	for _, n := range names {
		sts += n + ":" + strings.Trim(r.Header.Get(n), " ") + "\n"
	}
	sts += "/"
	h := sha256.Sum256([]byte(sts))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
	if err != nil {
		panic(err)
	}
	r.Header.Set("authorization", "Bearer "+base64.StdEncoding.EncodeToString(sig))
}

func TestInstanceHandBuiltRequests(t *testing.T) {
	s, key := startInstance(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CACertPEM())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(hc.CloseIdleConnections)
	body, err := proto.Marshal(&api.AdvanceGenerateDataKeyRequest{KeyId: key.ID, NumberOfBytes: 32})
	if err != nil {
		t.Fatal(err)
	}

	// send builds a request for body, lets before change it, signs it with
	// the client key, lets after change it, and sends it.
	send := func(t *testing.T, date time.Time, before, after func(*http.Request)) (int, []byte) {
		t.Helper()
		r, err := http.NewRequest(http.MethodPost, "https://"+s.TLSAddr()+"/", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		for k, v := range map[string]string{
			"accept": "application/x-protobuf", "content-type": "application/x-protobuf",
			"date": date.UTC().Format(http.TimeFormat), "x-kms-apiversion": "dkms-gcs-0.2",
			"x-kms-apiname": "AdvanceGenerateDataKey", "x-kms-signaturemethod": "RSA_PKCS1_SHA_256",
			"x-kms-acccesskeyid": instClientKeyID, "content-sha256": strings.ToUpper(hex.EncodeToString(sum[:])),
		} {
			r.Header.Set(k, v)
		}
		if before != nil {
			before(r)
		}
		instSign(r, rsaKey(0))
		if after != nil {
			after(r)
		}
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	wantErr := func(t *testing.T, status int, b []byte, wantStatus int, code string) {
		t.Helper()
		var e api.Error
		if err := proto.Unmarshal(b, &e); err != nil {
			t.Fatalf("HTTP %d body %q is not an api.Error: %v", status, b, err)
		}
		if status != wantStatus || e.ErrorCode != code || int(e.StatusCode) != status || e.ErrorMessage == "" || e.RequestId == "" {
			t.Fatalf("answer = HTTP %d %v, want HTTP %d %s", status, &e, wantStatus, code)
		}
	}
	setBody := func(b []byte) func(*http.Request) {
		return func(r *http.Request) {
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
		}
	}
	other, err := proto.Marshal(&api.AdvanceGenerateDataKeyRequest{KeyId: key.ID, NumberOfBytes: 64})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	t.Run("valid", func(t *testing.T) {
		status, b := send(t, now, nil, nil)
		var resp api.AdvanceGenerateDataKeyResponse
		if err := proto.Unmarshal(b, &resp); status != 200 || err != nil || len(resp.Plaintext) != 32 || resp.KeyId != key.ID {
			t.Fatalf("valid request = HTTP %d %v (%v), want 32 bytes under %s", status, &resp, err, key.ID)
		}
	})
	okBefore := s.Count(kmsemu.AlibabaInstance, "", "ok")
	for _, tc := range []struct {
		name          string
		date          time.Time
		before, after func(*http.Request)
		status        int
		code          string
	}{
		{"stale date", now.Add(-20 * time.Minute), nil, nil, 400, "RequestTimeTooSkewed"},
		{"future date", now.Add(20 * time.Minute), nil, nil, 400, "RequestTimeTooSkewed"},
		{"tampered body", now, nil, setBody(other), 400, "InvalidParam"},
		{"tampered body and content-sha256", now, nil, func(r *http.Request) {
			setBody(other)(r)
			sum := sha256.Sum256(other)
			r.Header.Set("content-sha256", strings.ToUpper(hex.EncodeToString(sum[:])))
		}, 401, "Unauthorized"},
		{"tampered x-kms header", now, nil, func(r *http.Request) { r.Header.Set("x-kms-apiname", "AdvanceEncrypt") }, 401, "Unauthorized"},
		{"added x-kms header", now, nil, func(r *http.Request) { r.Header.Set("x-kms-extra", "1") }, 401, "Unauthorized"},
		{"no signature", now, nil, func(r *http.Request) { r.Header.Del("authorization") }, 400, "InvalidParam"},
		{"not Bearer", now, nil, func(r *http.Request) { r.Header.Set("authorization", "Basic eA==") }, 400, "InvalidParam"},
		{"bad date", now, func(r *http.Request) { r.Header.Set("date", "yesterday") }, nil, 400, "InvalidParam"},
		{"other signature method", now, func(r *http.Request) { r.Header.Set("x-kms-signaturemethod", "RSA_PSS_SHA_256") }, nil, 400, "InvalidParam"},
		{"other API version", now, func(r *http.Request) { r.Header.Set("x-kms-apiversion", "dkms-gcs-0.1") }, nil, 400, "InvalidApiVersion"},
		{"unknown API name", now, func(r *http.Request) { r.Header.Set("x-kms-apiname", "GetSecretValue") }, nil, 400, "InvalidApiName"},
		{"body not protobuf", now, func(r *http.Request) {
			b := []byte{0xff, 0xff, 0xff}
			setBody(b)(r)
			sum := sha256.Sum256(b)
			r.Header.Set("content-sha256", hex.EncodeToString(sum[:]))
		}, nil, 400, "InvalidParameter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, b := send(t, tc.date, tc.before, tc.after)
			wantErr(t, status, b, tc.status, tc.code)
		})
	}
	if n := s.Count(kmsemu.AlibabaInstance, "", "ok"); n != okBefore {
		t.Errorf("refused requests made %d key operations", n-okBefore)
	}

	t.Run("plain HTTP listener", func(t *testing.T) {
		r, _ := http.NewRequest(http.MethodPost, s.URL()+"/", bytes.NewReader(body))
		r.Header.Set("x-kms-apiname", "AdvanceGenerateDataKey")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantErr(t, resp.StatusCode, b, 400, "InvalidParam")
	})
}

func TestInstanceCredentials(t *testing.T) {
	s, key := startInstance(t)
	k := rsaKey(1)
	for _, tc := range []struct {
		name string
		pub  string
		ok   bool
	}{
		{"no public key", "", false},
		{"not PEM", "ssh-rsa AAAA", false},
		{"RSA PUBLIC KEY", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.PublicKey)})), true},
		{"private key", pkcs1PEM(k), false},
		{"EC public key", func() string {
			ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
			return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		}(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.AddCredential(kmsemu.Credential{Cloud: kmsemu.AlibabaInstance, ID: "KAAP.rsa", PublicKey: tc.pub})
			if (err == nil) != tc.ok {
				t.Fatalf("AddCredential(%s) error = %v, want ok %v", tc.name, err, tc.ok)
			}
		})
	}
	if _, err := pemClient(t, s, "KAAP.rsa", k).generate(key.ID, nil); err != nil {
		t.Fatalf("call by a client key registered as RSA PUBLIC KEY: %v", err)
	}

	t.Run("admin API", func(t *testing.T) {
		post := func(path string, v any) {
			t.Helper()
			b, _ := json.Marshal(v)
			resp, err := http.Post(s.URL()+"/_emulator/"+path, "application/json", bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("POST /_emulator/%s = HTTP %d %s", path, resp.StatusCode, msg)
			}
		}
		post("credentials", map[string]string{"cloud": "alibaba-instance", "id": "KAAP.admin", "public_key": publicPEM(t, rsaKey(2))})
		post("keys", map[string]string{"cloud": "alibaba-instance", "region": "kst-admin", "id": "key-admin"})
		if _, err := pemClient(t, s, "KAAP.admin", rsaKey(2)).generate("key-admin", nil); err != nil {
			t.Fatalf("call by a client key added through the admin API: %v", err)
		}
	})
}

func TestInstanceStateFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	s := kmsemu.New(kmsemu.Config{TLSAddr: "127.0.0.1:0", StateFile: file})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCredential(instCred(t, instClientKeyID, rsaKey(0))); err != nil {
		t.Fatal(err)
	}
	key, err := s.CreateKey(kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID})
	if err != nil {
		t.Fatal(err)
	}
	g, err := pemClient(t, s, instClientKeyID, rsaKey(0)).generate(key.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", s.TLSAddr(), time.Second); err == nil {
		t.Error("TLS listener still accepts connections after Close")
	}

	s2 := kmsemu.New(kmsemu.Config{TLSAddr: "127.0.0.1:0", StateFile: file})
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	d, err := pemClient(t, s2, instClientKeyID, rsaKey(0)).decrypt(g.CiphertextBlob, nil)
	if err != nil || !bytes.Equal(d.Plaintext, g.Plaintext) {
		t.Fatalf("AdvanceDecrypt after a restart = %v, %v, want the data key", d, err)
	}
}

func TestInstanceTLSConfig(t *testing.T) {
	if err := kmsemu.New(kmsemu.Config{TLSAddr: "0.0.0.0:0"}).Start(); err == nil {
		t.Error("Start() with a TLSAddr off loopback succeeded")
	}
	s := kmsemutest.Start(t)
	if s.TLSAddr() != "" || s.CACertPEM() != nil {
		t.Errorf("without TLSAddr: TLSAddr() = %q, CACertPEM() = %q, want none", s.TLSAddr(), s.CACertPEM())
	}
	s = kmsemutest.StartTLS(t)
	block, _ := pem.Decode(s.CACertPEM())
	if block == nil {
		t.Fatal("CACertPEM() is not PEM")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, name := range []string{"127.0.0.1", "localhost"} {
		conn, err := tls.Dial("tcp", s.TLSAddr(), &tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Fatalf("TLS handshake for %s: %v", name, err)
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if d := time.Until(leaf.NotAfter); d < 9*365*24*time.Hour {
			t.Errorf("server certificate expires in %v, want about 10 years", d)
		}
	}
}
