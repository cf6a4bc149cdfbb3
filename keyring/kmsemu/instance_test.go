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
	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
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
		post("keys", map[string]string{"cloud": "alibaba-instance", "region": "kst-admin", "id": "key-admin-rsa", "spec": "RSA_4096"})
		if _, pub, err := pemClient(t, s, "KAAP.admin", rsaKey(2)).getPublicKey(t, "key-admin-rsa"); err != nil || pub.N.BitLen() != 4096 {
			t.Fatalf("GetPublicKey of an RSA_4096 key made through the admin API: %v", err)
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
	rsaK, err := s.CreateKey(kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID, Spec: "RSA_2048"})
	if err != nil {
		t.Fatal(err)
	}
	_, pub, err := pemClient(t, s, instClientKeyID, rsaKey(0)).getPublicKey(t, rsaK.ID)
	if err != nil {
		t.Fatal(err)
	}
	ct := encryptOAEP(t, pub, []byte("kept"))
	sm2K, err := s.CreateKey(kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID, Spec: "EC_SM2"})
	if err != nil {
		t.Fatal(err)
	}
	_, sm2Pub := pemClient(t, s, instClientKeyID, rsaKey(0)).getSM2PublicKey(t, sm2K.ID)
	sm2CT := encryptSM2Plain(t, sm2Pub, []byte("kept too"))
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
	c2 := pemClient(t, s2, instClientKeyID, rsaKey(0))
	d, err := c2.decrypt(g.CiphertextBlob, nil)
	if err != nil || !bytes.Equal(d.Plaintext, g.Plaintext) {
		t.Fatalf("AdvanceDecrypt after a restart = %v, %v, want the data key", d, err)
	}
	if _, pub2, err := c2.getPublicKey(t, rsaK.ID); err != nil || !pub2.Equal(pub) {
		t.Fatalf("GetPublicKey after a restart = %v, want the same public key", err)
	}
	if d, err := c2.decryptOAEP(rsaK.ID, "RSAES_OAEP_SHA_256", ct); err != nil || string(d.Plaintext) != "kept" {
		t.Fatalf("Decrypt after a restart = %v, %v, want the message", d, err)
	}
	if _, pub2 := c2.getSM2PublicKey(t, sm2K.ID); !pub2.Equal(sm2Pub) {
		t.Fatal("GetPublicKey of the SM2 key after a restart is another key")
	}
	if d, err := c2.decryptOAEP(sm2K.ID, "SM2PKE", sm2CT); err != nil || string(d.Plaintext) != "kept too" {
		t.Fatalf("SM2PKE Decrypt after a restart = %v, %v, want the message", d, err)
	}

	// The public key handed out is the state file's private key's.
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Keys []struct {
			ID      string `json:"id"`
			Private []byte `json:"private"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range st.Keys {
		if k.ID != rsaK.ID {
			continue
		}
		found = true
		priv, err := x509.ParsePKCS8PrivateKey(k.Private)
		if err != nil {
			t.Fatalf("state file: key %s: %v", k.ID, err)
		}
		if rk, ok := priv.(*rsa.PrivateKey); !ok || !rk.PublicKey.Equal(pub) {
			t.Errorf("state file: key %s's private key does not match the public key GetPublicKey gave", k.ID)
		}
	}
	if !found {
		t.Errorf("state file holds no key %s", rsaK.ID)
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

// getPublicKey calls GetPublicKey and parses the PEM it returns.
func (c instClient) getPublicKey(t testing.TB, keyID string) (*dedicatedkmssdk.GetPublicKeyResponse, *rsa.PublicKey, error) {
	t.Helper()
	r, err := c.GetPublicKeyWithOptions(&dedicatedkmssdk.GetPublicKeyRequest{KeyId: tea.String(keyID)}, c.rt)
	if err != nil {
		return nil, nil, err
	}
	block, rest := pem.Decode([]byte(tea.StringValue(r.PublicKey)))
	if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("GetPublicKey(%s).PublicKey = %q, want one PEM PUBLIC KEY", keyID, tea.StringValue(r.PublicKey))
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatalf("GetPublicKey(%s): %v", keyID, err)
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("GetPublicKey(%s) is a %T, want RSA", keyID, pub)
	}
	return r, rk, nil
}

// decryptOAEP calls the asymmetric Decrypt.
func (c instClient) decryptOAEP(keyID, alg string, blob []byte) (*dedicatedkmssdk.DecryptResponse, error) {
	return c.DecryptWithOptions(&dedicatedkmssdk.DecryptRequest{KeyId: tea.String(keyID), CiphertextBlob: blob, Algorithm: tea.String(alg)}, c.rt)
}

// getSM2PublicKey calls GetPublicKey of an SM2 key and parses the PEM it
// returns.
func (c instClient) getSM2PublicKey(t testing.TB, keyID string) (*dedicatedkmssdk.GetPublicKeyResponse, *ecdsa.PublicKey) {
	t.Helper()
	r, err := c.GetPublicKeyWithOptions(&dedicatedkmssdk.GetPublicKeyRequest{KeyId: tea.String(keyID)}, c.rt)
	if err != nil {
		t.Fatalf("GetPublicKey(%s) error = %v", keyID, err)
	}
	block, rest := pem.Decode([]byte(tea.StringValue(r.PublicKey)))
	if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("GetPublicKey(%s).PublicKey = %q, want one PEM PUBLIC KEY", keyID, tea.StringValue(r.PublicKey))
	}
	pub, err := smx509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatalf("GetPublicKey(%s): %v", keyID, err)
	}
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok || ek.Curve != sm2.P256() {
		t.Fatalf("GetPublicKey(%s) is a %T, want SM2", keyID, pub)
	}
	return r, ek
}

// encryptSM2Plain encrypts msg under pub in the plain encoding
// 0x04 || x || y || C3 || C2 the instance takes.
func encryptSM2Plain(t testing.TB, pub *ecdsa.PublicKey, msg []byte) []byte {
	t.Helper()
	ct, err := sm2.Encrypt(rand.Reader, pub, msg, sm2.NewPlainEncrypterOpts(sm2.MarshalUncompressed, sm2.C1C3C2))
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

func TestInstanceSM2(t *testing.T) {
	s, sym := startInstance(t)
	c := pemClient(t, s, instClientKeyID, rsaKey(0))
	key := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID, Spec: "EC_SM2", Alias: "alias/sm2"})
	rsaK := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID, Spec: "RSA_2048"})

	r, pub := c.getSM2PublicKey(t, key.ID)
	if tea.StringValue(r.KeyId) != key.ID {
		t.Fatalf("GetPublicKey() = %v, want key %s", r, key.ID)
	}
	if want, err := s.PublicKeyPEM(key.ID); err != nil || string(want) != tea.StringValue(r.PublicKey) {
		t.Fatalf("GetPublicKey() PublicKey = %q, want PublicKeyPEM() %q (%v)", tea.StringValue(r.PublicKey), want, err)
	}
	_, rsaPub, err := c.getPublicKey(t, rsaK.ID)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("a data key and its context digest")
	ct := encryptSM2Plain(t, pub, msg)
	for _, ref := range []string{key.ID, "alias/sm2"} {
		d, err := c.decryptOAEP(ref, "SM2PKE", ct)
		if err != nil {
			t.Fatalf("Decrypt(%s) error = %v", ref, err)
		}
		if !bytes.Equal(d.Plaintext, msg) || tea.StringValue(d.KeyId) != key.ID || tea.StringValue(d.Algorithm) != "SM2PKE" {
			t.Fatalf("Decrypt(%s) = %v, want the message under %s", ref, d, key.ID)
		}
	}
	der, err := sm2.PlainCiphertext2ASN1(ct, sm2.C1C3C2)
	if err != nil {
		t.Fatal(err)
	}
	c1c2c3, err := sm2.AdjustCiphertextSplicingOrder(ct, sm2.C1C3C2, sm2.C1C2C3)
	if err != nil {
		t.Fatal(err)
	}
	altered := bytes.Clone(ct)
	altered[len(altered)-3] ^= 1
	for _, tc := range []struct {
		name   string
		call   func() error
		code   string
		status int
	}{
		{"the DER encoding", func() error { _, err := c.decryptOAEP(key.ID, "SM2PKE", der); return err }, "InvalidParameter", 400},
		{"C1C2C3", func() error { _, err := c.decryptOAEP(key.ID, "SM2PKE", c1c2c3); return err }, "InvalidParameter", 400},
		{"altered", func() error { _, err := c.decryptOAEP(key.ID, "SM2PKE", altered); return err }, "InvalidParameter", 400},
		{"RSAES_OAEP_SHA_256 with an SM2 key", func() error {
			_, err := c.decryptOAEP(key.ID, "RSAES_OAEP_SHA_256", encryptOAEP(t, rsaPub, msg))
			return err
		}, "UnsupportedOperation", 400},
		{"SM2PKE with a symmetric key", func() error { _, err := c.decryptOAEP(sym.ID, "SM2PKE", ct); return err }, "UnsupportedOperation", 400},
		{"AdvanceGenerateDataKey under an SM2 key", func() error { _, err := c.generate(key.ID, nil); return err }, "UnsupportedOperation", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantSDKErr(t, tc.name, tc.call(), tc.code, tc.status)
		})
	}
	if err := s.DisableKey(key.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.decryptOAEP(key.ID, "SM2PKE", ct)
	wantSDKErr(t, "SM2PKE Decrypt under a disabled key", err, "Rejected.Disabled", 400)
}

func encryptOAEP(t testing.TB, pub *rsa.PublicKey, msg []byte) []byte {
	t.Helper()
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

func TestInstanceAsymmetric(t *testing.T) {
	s, sym := startInstance(t)
	c := pemClient(t, s, instClientKeyID, rsaKey(0))
	key := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID, Spec: "RSA_3072", Alias: "alias/rsa"})
	other := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID, Spec: "RSA_2048"})

	r, pub, err := c.getPublicKey(t, key.ID)
	if err != nil {
		t.Fatalf("GetPublicKey() error = %v", err)
	}
	if tea.StringValue(r.KeyId) != key.ID || tea.StringValue(r.RequestId) == "" || pub.N.BitLen() != 3072 {
		t.Fatalf("GetPublicKey() = %v, want a 3072-bit key %s and a RequestId", r, key.ID)
	}
	if want, err := s.PublicKeyPEM(key.ID); err != nil || string(want) != tea.StringValue(r.PublicKey) {
		t.Fatalf("GetPublicKey() PublicKey = %q, want PublicKeyPEM() %q (%v)", tea.StringValue(r.PublicKey), want, err)
	}
	r, byAlias, err := c.getPublicKey(t, "alias/rsa")
	if err != nil || tea.StringValue(r.KeyId) != key.ID || !byAlias.Equal(pub) {
		t.Fatalf("GetPublicKey(alias/rsa) = %v, %v, want key %s's", r, err, key.ID)
	}
	_, otherPub, err := c.getPublicKey(t, other.ID)
	if err != nil {
		t.Fatal(err)
	}

	msg := []byte("a data key and its context digest")
	ct := encryptOAEP(t, pub, msg)
	for _, ref := range []string{key.ID, "alias/rsa"} {
		d, err := c.decryptOAEP(ref, "RSAES_OAEP_SHA_256", ct)
		if err != nil {
			t.Fatalf("Decrypt(%s) error = %v", ref, err)
		}
		if !bytes.Equal(d.Plaintext, msg) || tea.StringValue(d.KeyId) != key.ID || tea.StringValue(d.Algorithm) != "RSAES_OAEP_SHA_256" || tea.StringValue(d.RequestId) == "" {
			t.Fatalf("Decrypt(%s) = %v, want the message under %s", ref, d, key.ID)
		}
	}
	if n := s.Count(kmsemu.AlibabaInstance, "Decrypt", "ok"); n != 2 {
		t.Errorf("Count(Decrypt, ok) = %d, want 2", n)
	}

	altered := bytes.Clone(ct)
	altered[len(altered)/2] ^= 1
	gen, err := c.generate(sym.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		call   func() error
		code   string
		status int
	}{
		{"Decrypt with RSAES_OAEP_SHA_1", func() error { _, err := c.decryptOAEP(key.ID, "RSAES_OAEP_SHA_1", ct); return err }, "InvalidParameter", 400},
		{"Decrypt with RSAES_PKCS1_V1_5", func() error { _, err := c.decryptOAEP(key.ID, "RSAES_PKCS1_V1_5", ct); return err }, "InvalidParameter", 400},
		{"Decrypt with SM2PKE", func() error { _, err := c.decryptOAEP(key.ID, "SM2PKE", ct); return err }, "UnsupportedOperation", 400},
		{"Decrypt of an altered ciphertext", func() error { _, err := c.decryptOAEP(key.ID, "RSAES_OAEP_SHA_256", altered); return err }, "InvalidParameter", 400},
		{"Decrypt with another RSA key", func() error { _, err := c.decryptOAEP(other.ID, "RSAES_OAEP_SHA_256", ct); return err }, "InvalidParameter", 400},
		{"Decrypt of a short ciphertext", func() error { _, err := c.decryptOAEP(key.ID, "RSAES_OAEP_SHA_256", ct[:10]); return err }, "InvalidParameter", 400},
		{"Decrypt of another key's ciphertext", func() error {
			_, err := c.decryptOAEP(key.ID, "RSAES_OAEP_SHA_256", encryptOAEP(t, otherPub, msg))
			return err
		}, "InvalidParameter", 400},
		{"Decrypt without a ciphertext", func() error { _, err := c.decryptOAEP(key.ID, "RSAES_OAEP_SHA_256", nil); return err }, "InvalidParameter", 400},
		{"Decrypt without a KeyId", func() error { _, err := c.decryptOAEP("", "RSAES_OAEP_SHA_256", ct); return err }, "InvalidParameter", 400},
		{"Decrypt with an Aad", func() error {
			_, err := c.DecryptWithOptions(&dedicatedkmssdk.DecryptRequest{KeyId: tea.String(key.ID), CiphertextBlob: ct, Algorithm: tea.String("RSAES_OAEP_SHA_256"), Aad: []byte("x")}, c.rt)
			return err
		}, "InvalidParameter", 400},
		{"Decrypt under an unknown key", func() error { _, err := c.decryptOAEP("no-such-key", "RSAES_OAEP_SHA_256", ct); return err }, "Forbidden.KeyNotFound", 404},
		{"Decrypt under an unknown alias", func() error { _, err := c.decryptOAEP("alias/nope", "RSAES_OAEP_SHA_256", ct); return err }, "Forbidden.AliasNotFound", 404},
		{"GetPublicKey of an unknown key", func() error { _, _, err := c.getPublicKey(t, "no-such-key"); return err }, "Forbidden.KeyNotFound", 404},
		{"GetPublicKey without a KeyId", func() error { _, _, err := c.getPublicKey(t, ""); return err }, "InvalidParameter", 400},
		{"GetPublicKey of a symmetric key", func() error { _, _, err := c.getPublicKey(t, sym.ID); return err }, "UnsupportedOperation", 400},
		{"RSA Decrypt under a symmetric key", func() error { _, err := c.decryptOAEP(sym.ID, "RSAES_OAEP_SHA_256", ct); return err }, "UnsupportedOperation", 400},
		{"AES_GCM Decrypt naming an RSA key", func() error {
			_, err := c.DecryptWithOptions(&dedicatedkmssdk.DecryptRequest{KeyId: tea.String(key.ID), CiphertextBlob: gen.CiphertextBlob, Algorithm: tea.String("AES_GCM")}, c.rt)
			return err
		}, "UnsupportedOperation", 400},
		{"AdvanceGenerateDataKey under an RSA key", func() error { _, err := c.generate(key.ID, nil); return err }, "UnsupportedOperation", 400},
		{"AdvanceEncrypt under an RSA key", func() error {
			_, err := c.AdvanceEncryptWithOptions(&dedicatedkmssdk.AdvanceEncryptRequest{KeyId: tea.String(key.ID), Plaintext: []byte("x")}, c.rt)
			return err
		}, "UnsupportedOperation", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantSDKErr(t, tc.name, tc.call(), tc.code, tc.status)
		})
	}

	t.Run("key states", func(t *testing.T) {
		for _, st := range []struct {
			set  func(string) error
			code string
		}{{s.DisableKey, "Rejected.Disabled"}, {s.ScheduleKeyDeletion, "Rejected.PendingDeletion"}} {
			if err := st.set(key.ID); err != nil {
				t.Fatal(err)
			}
			_, _, err := c.getPublicKey(t, key.ID)
			wantSDKErr(t, "GetPublicKey of a key not enabled", err, st.code, 400)
			_, err = c.decryptOAEP(key.ID, "RSAES_OAEP_SHA_256", ct)
			wantSDKErr(t, "Decrypt under a key not enabled", err, st.code, 400)
		}
		if err := s.EnableKey(key.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := c.decryptOAEP(key.ID, "RSAES_OAEP_SHA_256", ct); err != nil {
			t.Fatalf("Decrypt after enabling the key again: %v", err)
		}
	})

	t.Run("authentication", func(t *testing.T) {
		okBefore := s.Count(kmsemu.AlibabaInstance, "", "ok")
		impostor := pemClient(t, s, instClientKeyID, rsaKey(1))
		_, _, err := impostor.getPublicKey(t, key.ID)
		wantSDKErr(t, "GetPublicKey signed with another RSA key", err, "Unauthorized", 401)
		_, err = impostor.decryptOAEP(key.ID, "RSAES_OAEP_SHA_256", ct)
		wantSDKErr(t, "Decrypt signed with another RSA key", err, "Unauthorized", 401)
		s2 := kmsemutest.StartTLS(t, instCred(t, instClientKeyID, rsaKey(0)), kmsemu.Credential{Cloud: kmsemu.AlibabaInstance, ID: "KAAP.denied", PublicKey: publicPEM(t, rsaKey(2)), Denied: true})
		k2 := kmsemutest.CreateKey(t, s2, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID, Spec: "RSA_2048"})
		denied := pemClient(t, s2, "KAAP.denied", rsaKey(2))
		_, _, err = denied.getPublicKey(t, k2.ID)
		wantSDKErr(t, "GetPublicKey by a denied client key", err, "Forbidden.NoPermission", 403)
		_, err = denied.decryptOAEP(k2.ID, "RSAES_OAEP_SHA_256", ct)
		wantSDKErr(t, "Decrypt by a denied client key", err, "Forbidden.NoPermission", 403)
		if n := s.Count(kmsemu.AlibabaInstance, "", "ok"); n != okBefore {
			t.Errorf("refused requests made %d key operations", n-okBefore)
		}
	})
}

// TestInstanceAsymmetricHandBuilt sends GetPublicKey and Decrypt requests
// built from the protocol: the signature is checked as for the other
// actions, and the bodies are the SDK's protobuf messages.
func TestInstanceAsymmetricHandBuilt(t *testing.T) {
	s, _ := startInstance(t)
	key := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: instID, Spec: "RSA_2048"})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CACertPEM())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(hc.CloseIdleConnections)

	// send posts m as apiName, signed with k (not signed if k is nil).
	send := func(t *testing.T, apiName string, m proto.Message, k *rsa.PrivateKey) (int, []byte) {
		t.Helper()
		body, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		r, err := http.NewRequest(http.MethodPost, "https://"+s.TLSAddr()+"/", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		for h, v := range map[string]string{
			"accept": "application/x-protobuf", "content-type": "application/x-protobuf",
			"date": time.Now().UTC().Format(http.TimeFormat), "x-kms-apiversion": "dkms-gcs-0.2",
			"x-kms-apiname": apiName, "x-kms-signaturemethod": "RSA_PKCS1_SHA_256",
			"x-kms-acccesskeyid": instClientKeyID, "content-sha256": strings.ToUpper(hex.EncodeToString(sum[:])),
		} {
			r.Header.Set(h, v)
		}
		if k != nil {
			instSign(r, k)
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

	status, b := send(t, "GetPublicKey", &api.GetPublicKeyRequest{KeyId: key.ID}, rsaKey(0))
	var pk api.GetPublicKeyResponse
	if err := proto.Unmarshal(b, &pk); status != 200 || err != nil || pk.KeyId != key.ID || pk.RequestId == "" {
		t.Fatalf("GetPublicKey = HTTP %d %v (%v), want key %s", status, &pk, err, key.ID)
	}
	block, _ := pem.Decode([]byte(pk.PublicKey))
	if block == nil {
		t.Fatalf("GetPublicKey PublicKey %q is not PEM", pk.PublicKey)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("wrapped")
	ct := encryptOAEP(t, pub.(*rsa.PublicKey), msg)
	status, b = send(t, "Decrypt", &api.DecryptRequest{KeyId: key.ID, CiphertextBlob: ct, Algorithm: "RSAES_OAEP_SHA_256"}, rsaKey(0))
	var d api.DecryptResponse
	if err := proto.Unmarshal(b, &d); status != 200 || err != nil || !bytes.Equal(d.Plaintext, msg) || d.KeyId != key.ID || d.Algorithm != "RSAES_OAEP_SHA_256" {
		t.Fatalf("Decrypt = HTTP %d %v (%v), want the message under %s", status, &d, err, key.ID)
	}

	okBefore := s.Count(kmsemu.AlibabaInstance, "", "ok")
	for _, tc := range []struct {
		name    string
		apiName string
		m       proto.Message
		k       *rsa.PrivateKey
		status  int
		code    string
	}{
		{"unsigned GetPublicKey", "GetPublicKey", &api.GetPublicKeyRequest{KeyId: key.ID}, nil, 400, "InvalidParam"},
		{"unsigned Decrypt", "Decrypt", &api.DecryptRequest{KeyId: key.ID, CiphertextBlob: ct, Algorithm: "RSAES_OAEP_SHA_256"}, nil, 400, "InvalidParam"},
		{"GetPublicKey signed with another key", "GetPublicKey", &api.GetPublicKeyRequest{KeyId: key.ID}, rsaKey(1), 401, "Unauthorized"},
		{"Decrypt signed with another key", "Decrypt", &api.DecryptRequest{KeyId: key.ID, CiphertextBlob: ct, Algorithm: "RSAES_OAEP_SHA_256"}, rsaKey(1), 401, "Unauthorized"},
		{"Decrypt with an unsupported algorithm", "Decrypt", &api.DecryptRequest{KeyId: key.ID, CiphertextBlob: ct, Algorithm: "RSAES_OAEP_SHA_1"}, rsaKey(0), 400, "InvalidParameter"},
		{"Decrypt with an Iv", "Decrypt", &api.DecryptRequest{KeyId: key.ID, CiphertextBlob: ct, Algorithm: "RSAES_OAEP_SHA_256", Iv: []byte("0123456789ab")}, rsaKey(0), 400, "InvalidParameter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, b := send(t, tc.apiName, tc.m, tc.k)
			var e api.Error
			if err := proto.Unmarshal(b, &e); err != nil {
				t.Fatalf("HTTP %d body %q is not an api.Error: %v", status, b, err)
			}
			if status != tc.status || e.ErrorCode != tc.code || int(e.StatusCode) != status || e.ErrorMessage == "" || e.RequestId == "" {
				t.Fatalf("answer = HTTP %d %v, want HTTP %d %s", status, &e, tc.status, tc.code)
			}
			if strings.Contains(e.ErrorMessage, string(msg)) {
				t.Errorf("error message %q shows the plaintext", e.ErrorMessage)
			}
		})
	}
	if n := s.Count(kmsemu.AlibabaInstance, "", "ok"); n != okBefore {
		t.Errorf("refused requests made %d key operations", n-okBefore)
	}
}
