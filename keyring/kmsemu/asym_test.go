package kmsemu

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// asymKeys creates an RSA key and a symmetric key of cloud c and returns
// them with the RSA key's public key.
func asymKeys(t *testing.T, s *Server, c Cloud, region string) (rsaKey, symKey Key, pub *rsa.PublicKey) {
	t.Helper()
	spec := KeySpec{Cloud: c, Region: region, Spec: "RSA_2048"}
	if c == Huawei {
		spec.Project = project
	}
	rsaKey, err := s.CreateKey(spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.Spec = ""
	if symKey, err = s.CreateKey(spec); err != nil {
		t.Fatal(err)
	}
	s.store.mu.Lock()
	pub = &s.store.keys[rsaKey.ID].priv.PublicKey
	s.store.mu.Unlock()
	return rsaKey, symKey, pub
}

func encryptOAEP(t *testing.T, pub *rsa.PublicKey, msg []byte) []byte {
	t.Helper()
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// mustDER returns the DER SubjectPublicKeyInfo of pub.
func mustDER(t *testing.T, pub *rsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// tamperBody replaces a signed request's body (the signature then covers
// another body).
func tamperBody(v map[string]any) func(*http.Request) {
	return func(r *http.Request) {
		b, _ := json.Marshal(v)
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
	}
}

func TestTencentAsymmetric(t *testing.T) {
	s := start(t)
	key, sym, pub := asymKeys(t, s, Tencent, "ap-guangzhou")
	now := time.Now()
	msg := []byte("kmsemu asymmetric test message")
	ct := base64.StdEncoding.EncodeToString(encryptOAEP(t, pub, msg))

	t.Run("GetPublicKey", func(t *testing.T) {
		r := tcRequest(t, s, tcSecret, now, "GetPublicKey", map[string]any{"KeyId": key.ID}, nil)
		if code := tcCode(r); code != "" {
			t.Fatalf("GetPublicKey = %v", r)
		}
		want := mustDER(t, pub)
		got, err := base64.StdEncoding.DecodeString(r["PublicKey"].(string))
		if err != nil || !bytes.Equal(got, want) || r["KeyId"] != key.ID {
			t.Errorf("GetPublicKey PublicKey/KeyId = %v / %v, want the key's DER SubjectPublicKeyInfo and %s", r["PublicKey"], r["KeyId"], key.ID)
		}
		blk, _ := pem.Decode([]byte(r["PublicKeyPem"].(string)))
		if blk == nil || blk.Type != "PUBLIC KEY" || !bytes.Equal(blk.Bytes, want) {
			t.Errorf("GetPublicKey PublicKeyPem = %q, want the PEM of the same key", r["PublicKeyPem"])
		}
	})

	t.Run("AsymmetricRsaDecrypt", func(t *testing.T) {
		r := tcRequest(t, s, tcSecret, now, "AsymmetricRsaDecrypt", map[string]any{"KeyId": key.ID, "Ciphertext": ct, "Algorithm": "RSAES_OAEP_SHA_256"}, nil)
		if code := tcCode(r); code != "" {
			t.Fatalf("AsymmetricRsaDecrypt = %v", r)
		}
		if r["Plaintext"] != base64.StdEncoding.EncodeToString(msg) || r["KeyId"] != key.ID {
			t.Errorf("AsymmetricRsaDecrypt = %v, want the message back", r)
		}
	})

	tampered := encryptOAEP(t, pub, msg)
	tampered[10] ^= 1
	sha1CT, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	dec := func(keyID, ct, alg string) map[string]any {
		m := map[string]any{"KeyId": keyID, "Ciphertext": ct}
		if alg != "" {
			m["Algorithm"] = alg
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		action string
		secret string
		body   map[string]any
		mutate func(*http.Request)
		setup  func(t *testing.T)
		want   string
	}{
		{name: "GetPublicKey wrong secret", action: "GetPublicKey", secret: "nope", body: map[string]any{"KeyId": key.ID}, want: "AuthFailure.SignatureFailure"},
		{name: "decrypt wrong secret", action: "AsymmetricRsaDecrypt", secret: "nope", body: dec(key.ID, ct, "RSAES_OAEP_SHA_256"), want: "AuthFailure.SignatureFailure"},
		{name: "decrypt tampered body", action: "AsymmetricRsaDecrypt", body: dec(key.ID, ct, "RSAES_OAEP_SHA_256"),
			mutate: tamperBody(dec(sym.ID, ct, "RSAES_OAEP_SHA_256")), want: "AuthFailure.SignatureFailure"},
		{name: "PKCS1 v1.5 refused", action: "AsymmetricRsaDecrypt", body: dec(key.ID, ct, "RSAES_PKCS1_V1_5"), want: "InvalidParameterValue"},
		{name: "OAEP SHA-1 refused", action: "AsymmetricRsaDecrypt", body: dec(key.ID, base64.StdEncoding.EncodeToString(sha1CT), "RSAES_OAEP_SHA_1"), want: "InvalidParameterValue"},
		{name: "unknown algorithm", action: "AsymmetricRsaDecrypt", body: dec(key.ID, ct, "RSAES_OAEP_SHA_512"), want: "InvalidParameterValue"},
		{name: "no algorithm", action: "AsymmetricRsaDecrypt", body: dec(key.ID, ct, ""), want: "MissingParameter"},
		{name: "no ciphertext", action: "AsymmetricRsaDecrypt", body: dec(key.ID, "", "RSAES_OAEP_SHA_256"), want: "MissingParameter"},
		{name: "ciphertext not base64", action: "AsymmetricRsaDecrypt", body: dec(key.ID, "!!", "RSAES_OAEP_SHA_256"), want: "InvalidParameter"},
		{name: "tampered ciphertext", action: "AsymmetricRsaDecrypt", body: dec(key.ID, base64.StdEncoding.EncodeToString(tampered), "RSAES_OAEP_SHA_256"), want: "FailedOperation.DecryptError"},
		{name: "OAEP SHA-1 ciphertext as SHA-256", action: "AsymmetricRsaDecrypt", body: dec(key.ID, base64.StdEncoding.EncodeToString(sha1CT), "RSAES_OAEP_SHA_256"), want: "FailedOperation.DecryptError"},
		{name: "GetPublicKey symmetric key", action: "GetPublicKey", body: map[string]any{"KeyId": sym.ID}, want: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "decrypt symmetric key", action: "AsymmetricRsaDecrypt", body: dec(sym.ID, ct, "RSAES_OAEP_SHA_256"), want: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "GenerateDataKey RSA key", action: "GenerateDataKey", body: map[string]any{"KeyId": key.ID, "NumberOfBytes": 32}, want: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "Encrypt RSA key", action: "Encrypt", body: map[string]any{"KeyId": key.ID, "Plaintext": "AAAA"}, want: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "GetPublicKey unknown key", action: "GetPublicKey", body: map[string]any{"KeyId": "0b1c2d3e-0000-4000-8000-000000000000"}, want: "ResourceUnavailable.CmkNotFound"},
		{name: "decrypt unknown key", action: "AsymmetricRsaDecrypt", body: dec("0b1c2d3e-0000-4000-8000-000000000000", ct, "RSAES_OAEP_SHA_256"), want: "ResourceUnavailable.CmkNotFound"},
		{name: "GetPublicKey disabled", action: "GetPublicKey", body: map[string]any{"KeyId": key.ID}, setup: disable(s, key.ID, Disabled), want: "ResourceUnavailable.CmkStateNotSupport"},
		{name: "decrypt disabled", action: "AsymmetricRsaDecrypt", body: dec(key.ID, ct, "RSAES_OAEP_SHA_256"), setup: disable(s, key.ID, Disabled), want: "ResourceUnavailable.CmkStateNotSupport"},
		{name: "decrypt pending deletion", action: "AsymmetricRsaDecrypt", body: dec(key.ID, ct, "RSAES_OAEP_SHA_256"), setup: disable(s, key.ID, PendingDeletion), want: "ResourceUnavailable.CmkStateNotSupport"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			secret := tcSecret
			if tc.secret != "" {
				secret = tc.secret
			}
			r := tcRequest(t, s, secret, now, tc.action, tc.body, tc.mutate)
			if got := tcCode(r); got != tc.want {
				t.Errorf("%s code = %q, want %q (%v)", tc.action, got, tc.want, r)
			}
			if _, ok := r["Plaintext"]; ok {
				t.Errorf("%s refused but answered a Plaintext", tc.action)
			}
		})
	}
}

// disable returns a setup that puts key id in state st for one test.
func disable(s *Server, id string, st KeyState) func(t *testing.T) {
	return func(t *testing.T) {
		if err := s.SetKeyState(id, st); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.EnableKey(id) })
	}
}

func TestHuaweiAsymmetric(t *testing.T) {
	s := start(t)
	key, sym, pub := asymKeys(t, s, Huawei, "cn-north-4")
	now := time.Now()
	msg := []byte("kmsemu asymmetric test message\x00\xff")
	ct := base64.StdEncoding.EncodeToString(encryptOAEP(t, pub, msg))

	t.Run("get-publickey", func(t *testing.T) {
		status, m := hwRequest(t, s, hwSK, now, "get-publickey", map[string]any{"key_id": key.ID}, nil)
		if status != 200 || m["key_id"] != key.ID {
			t.Fatalf("get-publickey = %d %v", status, m)
		}
		blk, _ := pem.Decode([]byte(m["public_key"].(string)))
		if blk == nil || blk.Type != "PUBLIC KEY" || !bytes.Equal(blk.Bytes, mustDER(t, pub)) {
			t.Errorf("get-publickey public_key = %q, want the PEM of the key's DER SubjectPublicKeyInfo", m["public_key"])
		}
	})

	t.Run("decrypt-data", func(t *testing.T) {
		body := map[string]any{"key_id": key.ID, "cipher_text": ct, "encryption_algorithm": "RSAES_OAEP_SHA_256"}
		status, m := hwRequest(t, s, hwSK, now, "decrypt-data", body, nil)
		if status != 200 || m["key_id"] != key.ID || m["plain_text_base64"] != base64.StdEncoding.EncodeToString(msg) {
			t.Fatalf("decrypt-data = %d %v, want the message back in plain_text_base64", status, m)
		}
		if _, ok := m["plain_text"].(string); !ok {
			t.Errorf("decrypt-data answered no plain_text: %v", m)
		}
	})

	tampered := encryptOAEP(t, pub, msg)
	tampered[10] ^= 1
	dec := func(keyID, ct, alg string) map[string]any {
		m := map[string]any{"key_id": keyID, "cipher_text": ct}
		if alg != "" {
			m["encryption_algorithm"] = alg
		}
		return m
	}
	unknown := "0b1c2d3e-0000-4000-8000-000000000000"
	for _, tc := range []struct {
		name       string
		action     string
		secret     string
		body       map[string]any
		mutate     func(*http.Request)
		setup      func(t *testing.T)
		wantStatus int
		want       string
	}{
		{name: "get-publickey wrong secret", action: "get-publickey", secret: "nope", body: map[string]any{"key_id": key.ID}, wantStatus: 401, want: "APIGW.0301"},
		{name: "decrypt-data wrong secret", action: "decrypt-data", secret: "nope", body: dec(key.ID, ct, "RSAES_OAEP_SHA_256"), wantStatus: 401, want: "APIGW.0301"},
		{name: "decrypt-data tampered body", action: "decrypt-data", body: dec(key.ID, ct, "RSAES_OAEP_SHA_256"),
			mutate: tamperBody(dec(sym.ID, ct, "RSAES_OAEP_SHA_256")), wantStatus: 401, want: "APIGW.0301"},
		{name: "SYMMETRIC_DEFAULT refused", action: "decrypt-data", body: dec(key.ID, ct, "SYMMETRIC_DEFAULT"), wantStatus: 400, want: "KMS.0308"},
		{name: "no algorithm refused", action: "decrypt-data", body: dec(key.ID, ct, ""), wantStatus: 400, want: "KMS.0308"},
		{name: "SM2 refused", action: "decrypt-data", body: dec(key.ID, ct, "SM2_ENCRYPT"), wantStatus: 400, want: "KMS.0308"},
		{name: "unknown algorithm refused", action: "decrypt-data", body: dec(key.ID, ct, "RSAES_OAEP_SHA_1"), wantStatus: 400, want: "KMS.0308"},
		{name: "no cipher_text", action: "decrypt-data", body: dec(key.ID, "", "RSAES_OAEP_SHA_256"), wantStatus: 400, want: "KMS.0204"},
		{name: "cipher_text hex", action: "decrypt-data", body: dec(key.ID, "0A1B2C3D", "RSAES_OAEP_SHA_256"), wantStatus: 400, want: "KMS.2201"},
		{name: "tampered cipher_text", action: "decrypt-data", body: dec(key.ID, base64.StdEncoding.EncodeToString(tampered), "RSAES_OAEP_SHA_256"), wantStatus: 400, want: "KMS.2201"},
		{name: "decrypt-data no key_id", action: "decrypt-data", body: dec("", ct, "RSAES_OAEP_SHA_256"), wantStatus: 400, want: "KMS.0204"},
		{name: "get-publickey bad key_id", action: "get-publickey", body: map[string]any{"key_id": "alias/x"}, wantStatus: 400, want: "KMS.0205"},
		{name: "get-publickey symmetric key", action: "get-publickey", body: map[string]any{"key_id": sym.ID}, wantStatus: 400, want: "KMS.0308"},
		{name: "decrypt-data symmetric key", action: "decrypt-data", body: dec(sym.ID, ct, "RSAES_OAEP_SHA_256"), wantStatus: 400, want: "KMS.0308"},
		{name: "create-datakey RSA key", action: "create-datakey", body: map[string]any{"key_id": key.ID, "datakey_length": "256"}, wantStatus: 400, want: "KMS.0308"},
		{name: "get-publickey unknown key", action: "get-publickey", body: map[string]any{"key_id": unknown}, wantStatus: 404, want: "KMS.0207"},
		{name: "decrypt-data unknown key", action: "decrypt-data", body: dec(unknown, ct, "RSAES_OAEP_SHA_256"), wantStatus: 404, want: "KMS.0207"},
		{name: "get-publickey disabled", action: "get-publickey", body: map[string]any{"key_id": key.ID}, setup: disable(s, key.ID, Disabled), wantStatus: 400, want: "KMS.0209"},
		{name: "decrypt-data disabled", action: "decrypt-data", body: dec(key.ID, ct, "RSAES_OAEP_SHA_256"), setup: disable(s, key.ID, Disabled), wantStatus: 400, want: "KMS.0209"},
		{name: "decrypt-data pending deletion", action: "decrypt-data", body: dec(key.ID, ct, "RSAES_OAEP_SHA_256"), setup: disable(s, key.ID, PendingDeletion), wantStatus: 400, want: "KMS.0210"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			secret := hwSK
			if tc.secret != "" {
				secret = tc.secret
			}
			status, m := hwRequest(t, s, secret, now, tc.action, tc.body, tc.mutate)
			if status != tc.wantStatus || hwCode(m) != tc.want {
				t.Errorf("%s = %d %v, want %d %s", tc.action, status, m, tc.wantStatus, tc.want)
			}
			if _, ok := m["plain_text_base64"]; ok {
				t.Errorf("%s refused but answered a plaintext", tc.action)
			}
		})
	}
}

// TestAsymmetricCounted checks that the new actions are counted and can be
// faulted by name like the others.
func TestAsymmetricCounted(t *testing.T) {
	s := start(t)
	key, _, _ := asymKeys(t, s, Tencent, "ap-guangzhou")
	hk, _, _ := asymKeys(t, s, Huawei, "cn-north-4")
	now := time.Now()
	s.AddFault(Fault{Cloud: Tencent, Action: "GetPublicKey", Throttle: 1})
	s.AddFault(Fault{Cloud: Huawei, Action: "get-publickey", Throttle: 1})
	if got := tcCode(tcRequest(t, s, tcSecret, now, "GetPublicKey", map[string]any{"KeyId": key.ID}, nil)); got != "RequestLimitExceeded" {
		t.Errorf("throttled GetPublicKey code = %q", got)
	}
	if got := tcCode(tcRequest(t, s, tcSecret, now, "GetPublicKey", map[string]any{"KeyId": key.ID}, nil)); got != "" {
		t.Errorf("GetPublicKey after one throttle code = %q", got)
	}
	if status, _ := hwRequest(t, s, hwSK, now, "get-publickey", map[string]any{"key_id": hk.ID}, nil); status != 429 {
		t.Errorf("throttled get-publickey status = %d", status)
	}
	if status, m := hwRequest(t, s, hwSK, now, "get-publickey", map[string]any{"key_id": hk.ID}, nil); status != 200 {
		t.Errorf("get-publickey after one throttle = %d %v", status, m)
	}
	for _, c := range []struct {
		cloud   Cloud
		action  string
		outcome string
	}{{Tencent, "GetPublicKey", "ok"}, {Tencent, "GetPublicKey", "throttled"}, {Huawei, "get-publickey", "ok"}, {Huawei, "get-publickey", "throttled"}} {
		if got := s.Count(c.cloud, c.action, c.outcome); got != 1 {
			t.Errorf("Count(%s, %s, %s) = %d, want 1", c.cloud, c.action, c.outcome, got)
		}
	}
}

// sm2Key creates an SM2 decryption key of cloud c (spec its name there)
// and returns it with its public key.
func sm2Key(t *testing.T, s *Server, c Cloud, region, spec string) (Key, *ecdsa.PublicKey) {
	t.Helper()
	ks := KeySpec{Cloud: c, Region: region, Spec: spec}
	if c == Huawei {
		ks.Project = project
	}
	k, err := s.CreateKey(ks)
	if err != nil {
		t.Fatal(err)
	}
	s.store.mu.Lock()
	pub := &s.store.keys[k.ID].sm2.PublicKey
	s.store.mu.Unlock()
	return k, pub
}

// sm2Ciphertexts encrypts msg under pub in the DER (GM/T 0009) and the
// plain (0x04 || C1 || C3 || C2) encodings.
func sm2Ciphertexts(t *testing.T, pub *ecdsa.PublicKey, msg []byte) (der, plain []byte) {
	t.Helper()
	der, err := sm2.EncryptASN1(rand.Reader, pub, msg)
	if err != nil {
		t.Fatal(err)
	}
	if plain, err = sm2.ASN1Ciphertext2Plain(der, nil); err != nil {
		t.Fatal(err)
	}
	return der, plain
}

// mustSM2DER returns the DER SubjectPublicKeyInfo of an SM2 key.
func mustSM2DER(t *testing.T, pub *ecdsa.PublicKey) []byte {
	t.Helper()
	der, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSM2Specs(t *testing.T) {
	s := start(t)
	for _, tc := range []struct {
		cloud Cloud
		spec  string
		ok    bool
	}{
		{Tencent, "SM2", true},
		{Huawei, "SM2", true},
		{AlibabaInstance, "EC_SM2", true},
		{Tencent, "EC_SM2", false},
		{AlibabaInstance, "SM2", false},
		{Alibaba, "EC_SM2", false},
		{Huawei, "SM2_256", false},
	} {
		spec := KeySpec{Cloud: tc.cloud, Region: "r", Project: project, Spec: tc.spec}
		k, err := s.CreateKey(spec)
		if (err == nil) != tc.ok {
			t.Errorf("CreateKey(%s, %s) error = %v, want ok %v", tc.cloud, tc.spec, err, tc.ok)
			continue
		}
		if err != nil {
			continue
		}
		p, err := s.PublicKeyPEM(k.ID)
		blk, _ := pem.Decode(p)
		if err != nil || blk == nil {
			t.Fatalf("PublicKeyPEM(%s) = %q, %v", k.ID, p, err)
		}
		pub, err := smx509.ParsePKIXPublicKey(blk.Bytes)
		if ek, ok := pub.(*ecdsa.PublicKey); err != nil || !ok || ek.Curve != sm2.P256() {
			t.Errorf("PublicKeyPEM(%s) holds %T (%v), want an SM2 key", k.ID, pub, err)
		}
	}
}

func TestTencentSM2(t *testing.T) {
	s := start(t)
	key, pub := sm2Key(t, s, Tencent, "ap-guangzhou", "SM2")
	rsaK, _, rsaPub := asymKeys(t, s, Tencent, "ap-guangzhou")
	now := time.Now()
	msg := []byte("kmsemu SM2 test message\x00\xff")
	der, plain := sm2Ciphertexts(t, pub, msg)
	ct := base64.StdEncoding.EncodeToString(der)

	t.Run("GetPublicKey", func(t *testing.T) {
		r := tcRequest(t, s, tcSecret, now, "GetPublicKey", map[string]any{"KeyId": key.ID}, nil)
		want := mustSM2DER(t, pub)
		got, err := base64.StdEncoding.DecodeString(r["PublicKey"].(string))
		if tcCode(r) != "" || err != nil || !bytes.Equal(got, want) || r["KeyId"] != key.ID {
			t.Fatalf("GetPublicKey = %v, want the key's DER SubjectPublicKeyInfo", r)
		}
		// id-ecPublicKey with the SM2 curve, as the service answers it.
		if !bytes.HasPrefix(got, []byte{0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d}) {
			t.Errorf("GetPublicKey PublicKey = %x, want id-ecPublicKey on 1.2.156.10197.1.301", got)
		}
		blk, _ := pem.Decode([]byte(r["PublicKeyPem"].(string)))
		if blk == nil || !bytes.Equal(blk.Bytes, want) {
			t.Errorf("GetPublicKey PublicKeyPem = %q, want the PEM of the same key", r["PublicKeyPem"])
		}
	})

	t.Run("AsymmetricSm2Decrypt", func(t *testing.T) {
		r := tcRequest(t, s, tcSecret, now, "AsymmetricSm2Decrypt", map[string]any{"KeyId": key.ID, "Ciphertext": ct}, nil)
		if tcCode(r) != "" || r["Plaintext"] != base64.StdEncoding.EncodeToString(msg) || r["KeyId"] != key.ID {
			t.Fatalf("AsymmetricSm2Decrypt = %v, want the message back", r)
		}
	})

	tampered := bytes.Clone(der)
	tampered[len(tampered)-3] ^= 1
	long, _ := sm2Ciphertexts(t, pub, make([]byte, 160))
	dec := func(keyID, ct string) map[string]any { return map[string]any{"KeyId": keyID, "Ciphertext": ct} }
	b64 := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name, action string
		secret       string
		body         map[string]any
		setup        func(t *testing.T)
		want         string
	}{
		{name: "wrong secret", action: "AsymmetricSm2Decrypt", secret: "nope", body: dec(key.ID, ct), want: "AuthFailure.SignatureFailure"},
		{name: "plain C1C3C2 encoding", action: "AsymmetricSm2Decrypt", body: dec(key.ID, b64(plain)), want: "FailedOperation.DecryptError"},
		{name: "tampered ciphertext", action: "AsymmetricSm2Decrypt", body: dec(key.ID, b64(tampered)), want: "FailedOperation.DecryptError"},
		{name: "longer than 256 bytes", action: "AsymmetricSm2Decrypt", body: dec(key.ID, b64(long)), want: "InvalidParameter"},
		{name: "not base64", action: "AsymmetricSm2Decrypt", body: dec(key.ID, "!!"), want: "InvalidParameter"},
		{name: "no ciphertext", action: "AsymmetricSm2Decrypt", body: dec(key.ID, ""), want: "MissingParameter"},
		{name: "RSA key", action: "AsymmetricSm2Decrypt", body: dec(rsaK.ID, ct), want: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "RSA decrypt of an SM2 key", action: "AsymmetricRsaDecrypt",
			body: map[string]any{"KeyId": key.ID, "Ciphertext": b64(encryptOAEP(t, rsaPub, msg)), "Algorithm": "RSAES_OAEP_SHA_256"}, want: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "GenerateDataKey SM2 key", action: "GenerateDataKey", body: map[string]any{"KeyId": key.ID, "NumberOfBytes": 32}, want: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "unknown key", action: "AsymmetricSm2Decrypt", body: dec("0b1c2d3e-0000-4000-8000-000000000000", ct), want: "ResourceUnavailable.CmkNotFound"},
		{name: "disabled", action: "AsymmetricSm2Decrypt", body: dec(key.ID, ct), setup: disable(s, key.ID, Disabled), want: "ResourceUnavailable.CmkStateNotSupport"},
		{name: "pending deletion", action: "AsymmetricSm2Decrypt", body: dec(key.ID, ct), setup: disable(s, key.ID, PendingDeletion), want: "ResourceUnavailable.CmkStateNotSupport"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			secret := tcSecret
			if tc.secret != "" {
				secret = tc.secret
			}
			r := tcRequest(t, s, secret, now, tc.action, tc.body, nil)
			if got := tcCode(r); got != tc.want {
				t.Errorf("%s code = %q, want %q (%v)", tc.action, got, tc.want, r)
			}
			if _, ok := r["Plaintext"]; ok {
				t.Errorf("%s refused but answered a Plaintext", tc.action)
			}
		})
	}
	if n := s.Count(Tencent, "AsymmetricSm2Decrypt", "ok"); n != 1 {
		t.Errorf("Count(AsymmetricSm2Decrypt, ok) = %d, want 1", n)
	}
}

func TestHuaweiSM2(t *testing.T) {
	s := start(t)
	key, pub := sm2Key(t, s, Huawei, "cn-north-4", "SM2")
	rsaK, _, rsaPub := asymKeys(t, s, Huawei, "cn-north-4")
	now := time.Now()
	msg := []byte("kmsemu SM2 test message\x00\xff")
	der, plain := sm2Ciphertexts(t, pub, msg)
	ct := base64.StdEncoding.EncodeToString(der)
	b64 := base64.StdEncoding.EncodeToString

	t.Run("get-publickey", func(t *testing.T) {
		status, m := hwRequest(t, s, hwSK, now, "get-publickey", map[string]any{"key_id": key.ID}, nil)
		blk, _ := pem.Decode([]byte(m["public_key"].(string)))
		if status != 200 || blk == nil || blk.Type != "PUBLIC KEY" || !bytes.Equal(blk.Bytes, mustSM2DER(t, pub)) {
			t.Fatalf("get-publickey = %d %v, want the PEM of the key's SubjectPublicKeyInfo", status, m)
		}
	})

	t.Run("decrypt-data", func(t *testing.T) {
		body := map[string]any{"key_id": key.ID, "cipher_text": ct, "encryption_algorithm": "SM2_ENCRYPT"}
		status, m := hwRequest(t, s, hwSK, now, "decrypt-data", body, nil)
		if status != 200 || m["key_id"] != key.ID || m["plain_text_base64"] != b64(msg) {
			t.Fatalf("decrypt-data = %d %v, want the message back in plain_text_base64", status, m)
		}
	})

	tampered := bytes.Clone(der)
	tampered[len(tampered)-3] ^= 1
	dec := func(keyID, ct, alg string) map[string]any {
		return map[string]any{"key_id": keyID, "cipher_text": ct, "encryption_algorithm": alg}
	}
	for _, tc := range []struct {
		name       string
		action     string
		secret     string
		body       map[string]any
		setup      func(t *testing.T)
		wantStatus int
		want       string
	}{
		{name: "wrong secret", action: "decrypt-data", secret: "nope", body: dec(key.ID, ct, "SM2_ENCRYPT"), wantStatus: 401, want: "APIGW.0301"},
		{name: "plain C1C3C2 encoding", action: "decrypt-data", body: dec(key.ID, b64(plain), "SM2_ENCRYPT"), wantStatus: 400, want: "KMS.2201"},
		{name: "tampered cipher_text", action: "decrypt-data", body: dec(key.ID, b64(tampered), "SM2_ENCRYPT"), wantStatus: 400, want: "KMS.2201"},
		{name: "RSAES_OAEP_SHA_256 with an SM2 key", action: "decrypt-data", body: dec(key.ID, b64(encryptOAEP(t, rsaPub, msg)), "RSAES_OAEP_SHA_256"), wantStatus: 400, want: "KMS.0308"},
		{name: "SM2_ENCRYPT with an RSA key", action: "decrypt-data", body: dec(rsaK.ID, ct, "SM2_ENCRYPT"), wantStatus: 400, want: "KMS.0308"},
		{name: "create-datakey SM2 key", action: "create-datakey", body: map[string]any{"key_id": key.ID, "datakey_length": "256"}, wantStatus: 400, want: "KMS.0308"},
		{name: "disabled", action: "decrypt-data", body: dec(key.ID, ct, "SM2_ENCRYPT"), setup: disable(s, key.ID, Disabled), wantStatus: 400, want: "KMS.0209"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			secret := hwSK
			if tc.secret != "" {
				secret = tc.secret
			}
			status, m := hwRequest(t, s, secret, now, tc.action, tc.body, nil)
			if status != tc.wantStatus || hwCode(m) != tc.want {
				t.Errorf("%s = %d %v, want %d %s", tc.action, status, m, tc.wantStatus, tc.want)
			}
			if _, ok := m["plain_text_base64"]; ok {
				t.Errorf("%s refused but answered a plaintext", tc.action)
			}
		})
	}
}

// TestSM2StateFile: an SM2 key survives a restart, in the state file as
// a PKCS #8 key.
func TestSM2StateFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	s := New(Config{StateFile: file})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	key, pub := sm2Key(t, s, Tencent, "ap-guangzhou", "SM2")
	der, _ := sm2Ciphertexts(t, pub, []byte("kept"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := New(Config{StateFile: file})
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	_, pt, err := s2.store.decryptSM2(Tencent, "ap-guangzhou", "", key.ID, der, sm2DER)
	if err != nil || string(pt) != "kept" {
		t.Fatalf("decrypting after a restart = %q, %v, want the message", pt, err)
	}
	b, err := json.Marshal(s2.store.keys[key.ID].Key)
	if err != nil || !bytes.Contains(b, []byte(`"spec":"SM2"`)) {
		t.Errorf("the key after a restart = %s, want spec SM2", b)
	}
}
