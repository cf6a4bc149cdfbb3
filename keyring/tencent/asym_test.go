package tencent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/keyringtest"
	"github.com/kmsfs/kmsfs/keyring/kmsemu"
	"github.com/kmsfs/kmsfs/keyring/kmsemu/kmsemutest"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// asymEnv is an emulator (with a state file) holding an RSA key and a
// symmetric key of Tencent Cloud, with the environment's credentials
// accepted by it.
type asymEnv struct {
	s      *kmsemu.Server
	rsa    kmsemu.Key
	sym    kmsemu.Key
	pubDER []byte // the RSA key's public key, read from the state file
	reg    *keyring.Registry
}

func asymSetup(t *testing.T) *asymEnv {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state.json")
	s := kmsemu.New(kmsemu.Config{StateFile: state, Credentials: []kmsemu.Credential{
		{Cloud: kmsemu.Tencent, ID: testID, Secret: testSecret},
		{Cloud: kmsemu.Tencent, ID: "AKIDDenied", Secret: testSecret, Denied: true},
	}})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	e := &asymEnv{
		s:   s,
		rsa: kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: testRegion, Spec: "RSA_2048"}),
		sym: kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: testRegion}),
		reg: keyring.NewRegistry(Register),
	}
	e.pubDER = statePublicKey(t, state, e.rsa.ID)
	setEnv(t, testID, testSecret)
	return e
}

// statePublicKey reads the public key of key id from the emulator's state
// file: a source independent of GetPublicKey.
func statePublicKey(t *testing.T, file, id string) []byte {
	t.Helper()
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
	for _, k := range st.Keys {
		if k.ID != id {
			continue
		}
		p, err := x509.ParsePKCS8PrivateKey(k.Private)
		if err != nil {
			t.Fatalf("state file: key %s: %v", id, err)
		}
		rk, ok := p.(*rsa.PrivateKey)
		if !ok {
			t.Fatalf("state file: key %s is a %T", id, p)
		}
		der, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	t.Fatalf("state file: no key %s", id)
	return nil
}

func rsaURI(s *kmsemu.Server, region, key string) string {
	return Scheme + pubkey.Suffix + "://" + region + "/" + key + "?endpoint=" + url.QueryEscape(s.URL())
}

// openRSA opens a +rsa keyring through the registry.
func (e *asymEnv) openRSA(t *testing.T, uri string, opts keyring.Options) *pubkey.Keyring {
	t.Helper()
	kr, err := e.reg.Open(context.Background(), uri, opts)
	if err != nil {
		t.Fatalf("Open(%s) error = %v", uri, err)
	}
	pk, ok := kr.(*pubkey.Keyring)
	if !ok {
		t.Fatalf("Open(%s) = %T, want *pubkey.Keyring", uri, kr)
	}
	return pk
}

// calls counts the requests the emulator answered.
func (e *asymEnv) calls() int { return e.s.Count(kmsemu.Tencent, "", "") }

// unsetenv removes an environment variable for the rest of the test.
func unsetenv(t *testing.T, name string) {
	t.Setenv(name, "") // restores it when the test ends
	os.Unsetenv(name)
}

func TestAsymRoundTrip(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	uri := rsaURI(e.s, testRegion, e.rsa.ID)
	kr := e.openRSA(t, uri, keyring.Options{})
	if kr.URI() != uri || kr.WriteOnly() {
		t.Fatalf("URI() = %q, WriteOnly() = %v, want %q, false", kr.URI(), kr.WriteOnly(), uri)
	}
	encCtx := keyringtest.EncryptionContext(t)
	type pair struct {
		dk      *keyring.Key
		wrapped []byte
	}
	var made []pair
	for range 3 {
		dk, w, err := kr.GenerateDataKey(ctx, encCtx)
		if err != nil {
			t.Fatalf("GenerateDataKey() error = %v", err)
		}
		t.Cleanup(dk.Destroy)
		if len(w) != 256 {
			t.Errorf("wrapped key of %d bytes, want 256 (RSA 2048)", len(w))
		}
		made = append(made, pair{dk, w})
	}
	der, err := kr.PublicKey(ctx)
	if err != nil {
		t.Fatalf("PublicKey() error = %v", err)
	}
	if !bytes.Equal(der, e.pubDER) {
		t.Error("PublicKey() is not the emulator key's public key")
	}
	// One GetPublicKey, then nothing: wrapping is local.
	if n := kr.KMSCalls(); n != 1 {
		t.Errorf("KMSCalls() after 3 GenerateDataKey and PublicKey = %d, want 1", n)
	}
	if n, pk := e.calls(), e.s.Count(kmsemu.Tencent, "GetPublicKey", "ok"); n != 1 || pk != 1 {
		t.Errorf("emulator calls = %d (GetPublicKey ok %d), want one GetPublicKey", n, pk)
	}
	for i, p := range made {
		u, err := kr.Unwrap(ctx, p.wrapped, encCtx)
		if err != nil {
			t.Fatalf("Unwrap(%d) error = %v", i, err)
		}
		if !bytes.Equal(u.Bytes(), p.dk.Bytes()) {
			t.Errorf("Unwrap(%d) returned another key", i)
		}
		u.Destroy()
	}
	if n := e.s.Count(kmsemu.Tencent, "AsymmetricRsaDecrypt", "ok"); n != 3 || kr.KMSCalls() != 4 {
		t.Errorf("after 3 Unwrap: AsymmetricRsaDecrypt ok = %d, KMSCalls() = %d, want 3 and 4", n, kr.KMSCalls())
	}
	k, err := kr.Unwrap(ctx, made[0].wrapped, keyringtest.EncryptionContext(t))
	if !errors.Is(err, keyring.ErrUnwrap) {
		k.Destroy()
		t.Fatalf("Unwrap with another encryption context error = %v, want keyring.ErrUnwrap", err)
	}

	// Wrap (a new slot for an existing data key) is local as well.
	before := e.calls()
	w, err := kr.Wrap(ctx, made[0].dk, encCtx)
	if err != nil {
		t.Fatalf("Wrap() error = %v", err)
	}
	if e.calls() != before {
		t.Errorf("Wrap() made %d calls, want 0", e.calls()-before)
	}
	u, err := kr.Unwrap(ctx, w, encCtx)
	if err != nil || !bytes.Equal(u.Bytes(), made[0].dk.Bytes()) {
		t.Fatalf("Unwrap() of Wrap() = %v, want the data key", err)
	}
	u.Destroy()
}

// TestAsymKnownPublicKey opens the key with its public key given (as the
// volume's trust record does): wrapping never calls KMS, even once it is
// gone.
func TestAsymKnownPublicKey(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	uri := rsaURI(e.s, testRegion, e.rsa.ID)
	for name, pub := range map[string][]byte{"DER": e.pubDER, "PEM": pubkey.PEM(e.pubDER)} {
		t.Run(name, func(t *testing.T) {
			kr := e.openRSA(t, uri, keyring.Options{PublicKeys: map[string][]byte{uri: pub}})
			before := e.calls()
			encCtx := keyringtest.EncryptionContext(t)
			dk, w, err := kr.GenerateDataKey(ctx, encCtx)
			if err != nil {
				t.Fatalf("GenerateDataKey() error = %v", err)
			}
			defer dk.Destroy()
			if kr.KMSCalls() != 0 || e.calls() != before {
				t.Fatalf("GenerateDataKey with a known public key made %d calls (emulator saw %d), want 0", kr.KMSCalls(), e.calls()-before)
			}
			u, err := kr.Unwrap(ctx, w, encCtx)
			if err != nil || !bytes.Equal(u.Bytes(), dk.Bytes()) {
				t.Fatalf("Unwrap() = %v, want the data key", err)
			}
			u.Destroy()
		})
	}

	t.Run("KMS gone", func(t *testing.T) {
		kr := e.openRSA(t, uri, keyring.Options{PublicKeys: map[string][]byte{uri: e.pubDER}})
		if err := e.s.Close(); err != nil {
			t.Fatal(err)
		}
		encCtx := keyringtest.EncryptionContext(t)
		dk, w, err := kr.GenerateDataKey(ctx, encCtx)
		if err != nil {
			t.Fatalf("GenerateDataKey() with KMS gone: %v", err)
		}
		defer dk.Destroy()
		if kr.KMSCalls() != 0 {
			t.Errorf("KMSCalls() = %d, want 0", kr.KMSCalls())
		}
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if k, err := kr.Unwrap(tctx, w, encCtx); !errors.Is(err, keyring.ErrUnavailable) || keyring.IsPermanent(err) {
			k.Destroy()
			t.Fatalf("Unwrap() with KMS gone: error = %v, want transient keyring.ErrUnavailable", err)
		}
	})
}

// TestAsymWriteOnly opens the key with its public key only and no
// credentials in the environment: new data keys wrap, nothing unwraps.
func TestAsymWriteOnly(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	uri := rsaURI(e.s, testRegion, e.rsa.ID)
	encCtx := keyringtest.EncryptionContext(t)
	var dk *keyring.Key
	var wrapped []byte
	t.Run("write-only", func(t *testing.T) {
		unsetenv(t, "TENCENTCLOUD_SECRET_ID")
		unsetenv(t, "TENCENTCLOUD_SECRET_KEY")
		kr := e.openRSA(t, uri, keyring.Options{WriteOnly: true, PublicKeys: map[string][]byte{uri: e.pubDER}})
		if !kr.WriteOnly() {
			t.Error("WriteOnly() = false, want true")
		}
		var err error
		if dk, wrapped, err = kr.GenerateDataKey(ctx, encCtx); err != nil {
			t.Fatalf("GenerateDataKey() error = %v", err)
		}
		if k, err := kr.Unwrap(ctx, wrapped, encCtx); !errors.Is(err, keyring.ErrWriteOnly) || !keyring.IsPermanent(err) {
			k.Destroy()
			t.Fatalf("Unwrap() error = %v, want keyring.ErrWriteOnly", err)
		}
		if n := e.calls(); n != 0 {
			t.Errorf("a write-only keyring made %d calls to KMS, want 0", n)
		}
		if _, err := e.reg.Open(ctx, uri, keyring.Options{WriteOnly: true}); !errors.Is(err, keyring.ErrBadURI) {
			t.Errorf("Open() write-only without a public key: error = %v, want keyring.ErrBadURI", err)
		}
	})
	if dk == nil {
		t.FailNow()
	}
	defer dk.Destroy()
	t.Run("read back with credentials", func(t *testing.T) {
		kr := e.openRSA(t, uri, keyring.Options{})
		u, err := kr.Unwrap(ctx, wrapped, encCtx)
		if err != nil || !bytes.Equal(u.Bytes(), dk.Bytes()) {
			t.Fatalf("Unwrap() of a write-only keyring's data key = %v, want the data key", err)
		}
		u.Destroy()
	})
}

func TestAsymThrottled(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	kr := e.openRSA(t, rsaURI(e.s, testRegion, e.rsa.ID), keyring.Options{})
	encCtx := keyringtest.EncryptionContext(t)
	e.s.AddFault(kmsemu.Fault{Cloud: kmsemu.Tencent, Action: "GetPublicKey", Throttle: 1})
	dk, w, err := kr.GenerateDataKey(ctx, encCtx)
	if err != nil {
		t.Fatalf("GenerateDataKey() after a throttled GetPublicKey: %v", err)
	}
	defer dk.Destroy()
	e.s.AddFault(kmsemu.Fault{Cloud: kmsemu.Tencent, Action: "AsymmetricRsaDecrypt", Throttle: 1})
	u, err := kr.Unwrap(ctx, w, encCtx)
	if err != nil || !bytes.Equal(u.Bytes(), dk.Bytes()) {
		t.Fatalf("Unwrap() after a throttled AsymmetricRsaDecrypt = %v, want the data key", err)
	}
	u.Destroy()
	for _, op := range []string{"GetPublicKey", "AsymmetricRsaDecrypt"} {
		if n := e.s.Count(kmsemu.Tencent, op, "throttled"); n != 1 {
			t.Errorf("Count(%s, throttled) = %d, want 1", op, n)
		}
	}
}

func TestAsymErrors(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	encCtx := keyringtest.EncryptionContext(t)
	good := e.openRSA(t, rsaURI(e.s, testRegion, e.rsa.ID), keyring.Options{})
	dk, wrapped, err := good.GenerateDataKey(ctx, encCtx)
	if err != nil {
		t.Fatal(err)
	}
	dk.Destroy()
	tampered := bytes.Clone(wrapped)
	tampered[len(tampered)/2] ^= 0x20
	disabled := kmsemutest.CreateKey(t, e.s, kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: testRegion, Spec: "RSA_2048"})
	if err := e.s.DisableKey(disabled.ID); err != nil {
		t.Fatal(err)
	}
	pending := kmsemutest.CreateKey(t, e.s, kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: testRegion, Spec: "RSA_2048"})
	if err := e.s.ScheduleKeyDeletion(pending.ID); err != nil {
		t.Fatal(err)
	}
	const unknown = "0b1c2d3e-0000-4000-8000-000000000000"
	// withPub gives the keyring of uri a public key, so that Unwrap goes
	// straight to AsymmetricRsaDecrypt.
	withPub := func(uri string) keyring.Options {
		return keyring.Options{PublicKeys: map[string][]byte{uri: e.pubDER}}
	}
	rsaU := func(key string) string { return rsaURI(e.s, testRegion, key) }

	type call int
	const (
		publicKey call = iota // PublicKey (GetPublicKey)
		unwrap                // Unwrap of wrapped (AsymmetricRsaDecrypt)
		generate              // GenerateDataKey
	)
	for _, tc := range []struct {
		name    string
		uri     string
		opts    keyring.Options
		id, sec string
		call    call
		blob    []byte
		want    error
		wantMsg string
	}{
		{name: "disabled key, GetPublicKey", uri: rsaU(disabled.ID), call: generate, want: keyring.ErrKeyDisabled, wantMsg: "ResourceUnavailable.CmkStateNotSupport"},
		{name: "disabled key, AsymmetricRsaDecrypt", uri: rsaU(disabled.ID), opts: withPub(rsaU(disabled.ID)), call: unwrap, want: keyring.ErrKeyDisabled, wantMsg: "ResourceUnavailable.CmkStateNotSupport"},
		{name: "pending deletion, AsymmetricRsaDecrypt", uri: rsaU(pending.ID), opts: withPub(rsaU(pending.ID)), call: unwrap, want: keyring.ErrKeyDisabled, wantMsg: "ResourceUnavailable.CmkStateNotSupport"},
		{name: "symmetric key as +rsa, GetPublicKey", uri: rsaU(e.sym.ID), call: generate, want: keyring.ErrNotAsymmetric, wantMsg: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "symmetric key as +rsa, AsymmetricRsaDecrypt", uri: rsaU(e.sym.ID), opts: withPub(rsaU(e.sym.ID)), call: unwrap, want: keyring.ErrNotAsymmetric, wantMsg: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "RSA key as a symmetric key", uri: uri(e.s, testRegion, e.rsa.ID), call: generate, want: keyring.ErrAccessDenied, wantMsg: Scheme + pubkey.Suffix + "://"},
		{name: "wrong secret, GetPublicKey", uri: rsaU(e.rsa.ID), id: testID, sec: "wrong", call: publicKey, want: keyring.ErrBadCredentials, wantMsg: "AuthFailure.SignatureFailure"},
		{name: "wrong secret, AsymmetricRsaDecrypt", uri: rsaU(e.rsa.ID), opts: withPub(rsaU(e.rsa.ID)), id: testID, sec: "wrong", call: unwrap, want: keyring.ErrBadCredentials, wantMsg: "AuthFailure.SignatureFailure"},
		{name: "denied", uri: rsaU(e.rsa.ID), id: "AKIDDenied", sec: testSecret, call: publicKey, want: keyring.ErrAccessDenied, wantMsg: "kms:GetPublicKey"},
		{name: "tampered ciphertext", uri: rsaU(e.rsa.ID), call: unwrap, blob: tampered, want: keyring.ErrUnwrap, wantMsg: "FailedOperation.DecryptError"},
		{name: "truncated ciphertext", uri: rsaU(e.rsa.ID), call: unwrap, blob: wrapped[:100], want: keyring.ErrUnwrap},
		{name: "unknown key, GetPublicKey", uri: rsaU(unknown), call: publicKey, want: keyring.ErrKeyNotFound, wantMsg: "ResourceUnavailable.CmkNotFound"},
		{name: "unknown key, AsymmetricRsaDecrypt", uri: rsaU(unknown), opts: withPub(rsaU(unknown)), call: unwrap, want: keyring.ErrKeyNotFound, wantMsg: "ResourceUnavailable.CmkNotFound"},
		{name: "other region", uri: rsaURI(e.s, "ap-shanghai", e.rsa.ID), call: publicKey, want: keyring.ErrKeyNotFound},
		{name: "bad URI", uri: Scheme + pubkey.Suffix + "://" + testRegion + "/alias/x", call: publicKey, want: keyring.ErrBadURI},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, sec := testID, testSecret
			if tc.id != "" {
				id, sec = tc.id, tc.sec
			}
			setEnv(t, id, sec)
			blob := tc.blob
			if blob == nil {
				blob = wrapped
			}
			kr, err := e.reg.Open(ctx, tc.uri, tc.opts)
			if err == nil {
				switch tc.call {
				case publicKey:
					pk, ok := kr.(*pubkey.Keyring)
					if !ok {
						t.Fatalf("Open(%s) = %T, want *pubkey.Keyring", tc.uri, kr)
					}
					_, err = pk.PublicKey(ctx)
				case unwrap:
					var k *keyring.Key
					if k, err = kr.Unwrap(ctx, blob, encCtx); err == nil {
						k.Destroy()
					}
				case generate:
					var k *keyring.Key
					if k, _, err = kr.GenerateDataKey(ctx, encCtx); err == nil {
						k.Destroy()
					}
				}
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
			if !keyring.IsPermanent(err) {
				t.Errorf("error %v is transient, want permanent", err)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, Scheme) || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error message %q: want one line naming %s and %q", msg, Scheme, tc.wantMsg)
			}
			if strings.Contains(msg, testSecret) {
				t.Errorf("error message %q shows the secret key", msg)
			}
		})
	}
}

// TestOpenAsymmetric uses the AsymmetricKey directly.
func TestOpenAsymmetric(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	raw := uri(e.s, testRegion, e.rsa.ID)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	a, err := OpenAsymmetric(ctx, u)
	if err != nil {
		t.Fatalf("OpenAsymmetric() error = %v", err)
	}
	a.k.policy = fastPolicy
	if a.URI() != raw {
		t.Errorf("URI() = %q, want %q", a.URI(), raw)
	}
	der, err := a.PublicKey(ctx)
	if err != nil || !bytes.Equal(der, e.pubDER) {
		t.Fatalf("PublicKey() = %v, want the emulator key's", err)
	}
	pub, err := pubkey.ParsePublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("a message of any bytes \x00\xff")
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := a.Decrypt(ctx, keyring.RSAOAEPSHA256, ct)
	if err != nil || !bytes.Equal(pt, msg) {
		t.Fatalf("Decrypt(RSA) = %v, want the message", err)
	}
	clear(pt)
	for name, blob := range map[string][]byte{"empty": nil, "short": make([]byte, 100), "too long": make([]byte, pubkey.MaxBits/8+1)} {
		before := e.calls()
		if _, err := a.Decrypt(ctx, keyring.RSAOAEPSHA256, blob); !errors.Is(err, keyring.ErrUnwrap) {
			t.Errorf("Decrypt(RSA, %s) error = %v, want keyring.ErrUnwrap", name, err)
		}
		if e.calls() != before {
			t.Errorf("Decrypt(RSA, %s) called KMS", name)
		}
	}
	if _, err := a.Decrypt(ctx, keyring.AsymAlg(99), ct); !errors.Is(err, keyring.ErrUnwrap) {
		t.Errorf("Decrypt(an unknown algorithm) error = %v, want keyring.ErrUnwrap", err)
	}

	// An SM2 key: the DER ciphertext goes as it is.
	sk := kmsemutest.CreateKey(t, e.s, kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: testRegion, Spec: "SM2"})
	su, _ := url.Parse(uri(e.s, testRegion, sk.ID))
	sa, err := OpenAsymmetric(ctx, su)
	if err != nil {
		t.Fatal(err)
	}
	sa.k.policy = fastPolicy
	sder, err := sa.PublicKey(ctx)
	if err != nil || !bytes.Equal(sder, emulatorPublicKey(t, e.s, sk.ID)) {
		t.Fatalf("PublicKey() of an SM2 key = %v, want the emulator key's", err)
	}
	spub, err := pubkey.ParsePublicKey(sder)
	if err != nil {
		t.Fatal(err)
	}
	sct, err := sm2.EncryptASN1(rand.Reader, spub.(*ecdsa.PublicKey), msg)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := sa.Decrypt(ctx, keyring.SM2, sct); err != nil || !bytes.Equal(pt, msg) {
		t.Fatalf("Decrypt(SM2) = %v, want the message", err)
	}
	plain, _ := sm2.ASN1Ciphertext2Plain(sct, nil)
	for name, blob := range map[string][]byte{"empty": nil, "plain encoding": plain, "trailing byte": append(bytes.Clone(sct), 0)} {
		before := e.calls()
		if _, err := sa.Decrypt(ctx, keyring.SM2, blob); !errors.Is(err, keyring.ErrUnwrap) {
			t.Errorf("Decrypt(SM2, %s) error = %v, want keyring.ErrUnwrap", name, err)
		}
		if e.calls() != before {
			t.Errorf("Decrypt(SM2, %s) called KMS", name)
		}
	}
	// Each algorithm with a key of the other kind.
	if _, err := sa.Decrypt(ctx, keyring.RSAOAEPSHA256, ct); !errors.Is(err, keyring.ErrNotAsymmetric) {
		t.Errorf("Decrypt(RSA) with an SM2 key: error = %v, want keyring.ErrNotAsymmetric", err)
	}
	if _, err := a.Decrypt(ctx, keyring.SM2, sct); !errors.Is(err, keyring.ErrNotAsymmetric) {
		t.Errorf("Decrypt(SM2) with an RSA key: error = %v, want keyring.ErrNotAsymmetric", err)
	}

	// Open refuses what the symmetric Open refuses.
	bad, _ := url.Parse(Scheme + "://" + testRegion + "/alias/x")
	if _, err := OpenAsymmetric(ctx, bad); !errors.Is(err, keyring.ErrBadURI) {
		t.Errorf("OpenAsymmetric(alias) error = %v, want keyring.ErrBadURI", err)
	}
}

func TestPublicKeyBytes(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		b64, pem string
		wantErr  bool
	}{
		{name: "PublicKey", b64: base64.StdEncoding.EncodeToString(der), pem: "ignored"},
		{name: "PublicKeyPem only", pem: string(pubkey.PEM(der))},
		{name: "neither", wantErr: true},
		{name: "PublicKey not base64", b64: "!!", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := publicKeyBytes(tc.b64, tc.pem)
			if tc.wantErr {
				if err == nil {
					t.Errorf("publicKeyBytes() = %q, want an error", raw)
				}
				return
			}
			if err != nil {
				t.Fatalf("publicKeyBytes() error = %v", err)
			}
			pub, err := pubkey.ParsePublicKey(raw)
			if err != nil || !priv.PublicKey.Equal(pub) {
				t.Errorf("ParsePublicKey(publicKeyBytes()) = %v, want the key", err)
			}
		})
	}
}

// emulatorPublicKey is the DER SubjectPublicKeyInfo of an emulator key,
// from its store rather than through GetPublicKey.
func emulatorPublicKey(t *testing.T, s *kmsemu.Server, id string) []byte {
	t.Helper()
	p, err := s.PublicKeyPEM(id)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(p)
	if blk == nil {
		t.Fatalf("PublicKeyPEM(%s) is not PEM", id)
	}
	return blk.Bytes
}

func sm2URI(s *kmsemu.Server, region, key string) string {
	return Scheme + pubkey.SuffixSM2 + "://" + region + "/" + key + "?endpoint=" + url.QueryEscape(s.URL())
}

// TestAsymSM2 wraps under an SM2 key (tencent-kms+sm2) and unwraps with
// AsymmetricSm2Decrypt, through the SDK and the emulator.
func TestAsymSM2(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	key := kmsemutest.CreateKey(t, e.s, kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: testRegion, Spec: "SM2"})
	pubDER := emulatorPublicKey(t, e.s, key.ID)
	u := sm2URI(e.s, testRegion, key.ID)
	kr := e.openRSA(t, u, keyring.Options{})
	if kr.Algorithm() != keyring.SM2 || kr.URI() != u {
		t.Fatalf("Algorithm() = %v, URI() = %q, want SM2 and %q", kr.Algorithm(), kr.URI(), u)
	}
	encCtx := keyringtest.EncryptionContext(t)
	dk, w, err := kr.GenerateDataKey(ctx, encCtx)
	if err != nil {
		t.Fatalf("GenerateDataKey() error = %v", err)
	}
	defer dk.Destroy()
	if len(w) > pubkey.MaxSM2Wrapped || w[0] != 0x30 {
		t.Errorf("wrapped key of %d bytes starting %#x, want a DER SM2 ciphertext", len(w), w[0])
	}
	if der, err := kr.PublicKey(ctx); err != nil || !bytes.Equal(der, pubDER) {
		t.Errorf("PublicKey() = %v, want the emulator key's public key", err)
	}
	u2, err := kr.Unwrap(ctx, w, encCtx)
	if err != nil || !bytes.Equal(u2.Bytes(), dk.Bytes()) {
		t.Fatalf("Unwrap() = %v, want the data key", err)
	}
	u2.Destroy()
	if n := e.s.Count(kmsemu.Tencent, "AsymmetricSm2Decrypt", "ok"); n != 1 || kr.KMSCalls() != 2 {
		t.Errorf("AsymmetricSm2Decrypt ok = %d, KMSCalls() = %d, want 1 and 2 (GetPublicKey, one decrypt)", n, kr.KMSCalls())
	}
	if k, err := kr.Unwrap(ctx, w, keyringtest.EncryptionContext(t)); !errors.Is(err, keyring.ErrUnwrap) {
		k.Destroy()
		t.Errorf("Unwrap with another encryption context error = %v, want keyring.ErrUnwrap", err)
	}

	t.Run("write-only", func(t *testing.T) {
		unsetenv(t, "TENCENTCLOUD_SECRET_ID")
		unsetenv(t, "TENCENTCLOUD_SECRET_KEY")
		before := e.calls()
		wo := e.openRSA(t, u, keyring.Options{WriteOnly: true, PublicKeys: map[string][]byte{u: pubkey.PEM(pubDER)}})
		dk2, w2, err := wo.GenerateDataKey(ctx, encCtx)
		if err != nil {
			t.Fatal(err)
		}
		defer dk2.Destroy()
		if k, err := wo.Unwrap(ctx, w2, encCtx); !errors.Is(err, keyring.ErrWriteOnly) {
			k.Destroy()
			t.Errorf("write-only Unwrap() error = %v, want keyring.ErrWriteOnly", err)
		}
		if e.calls() != before {
			t.Errorf("the write-only keyring made %d calls", e.calls()-before)
		}
		setEnv(t, testID, testSecret)
		back, err := kr.Unwrap(ctx, w2, encCtx)
		if err != nil || !bytes.Equal(back.Bytes(), dk2.Bytes()) {
			t.Fatalf("reading back what the write-only keyring wrapped: %v", err)
		}
		back.Destroy()
	})

	tampered := bytes.Clone(w)
	tampered[len(tampered)-5] ^= 1
	disabled := kmsemutest.CreateKey(t, e.s, kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: testRegion, Spec: "SM2"})
	if err := e.s.DisableKey(disabled.ID); err != nil {
		t.Fatal(err)
	}
	withPub := func(uri string) keyring.Options {
		return keyring.Options{PublicKeys: map[string][]byte{uri: pubDER}}
	}
	for _, tc := range []struct {
		name    string
		uri     string
		opts    keyring.Options
		id, sec string
		blob    []byte
		want    error
		wantMsg string
	}{
		{name: "tampered ciphertext", uri: u, blob: tampered, want: keyring.ErrUnwrap, wantMsg: "FailedOperation.DecryptError"},
		{name: "disabled key", uri: sm2URI(e.s, testRegion, disabled.ID), opts: withPub(sm2URI(e.s, testRegion, disabled.ID)), want: keyring.ErrKeyDisabled, wantMsg: "ResourceUnavailable.CmkStateNotSupport"},
		{name: "RSA key named +sm2", uri: sm2URI(e.s, testRegion, e.rsa.ID), opts: withPub(sm2URI(e.s, testRegion, e.rsa.ID)), want: keyring.ErrNotAsymmetric, wantMsg: "ASYMMETRIC_DECRYPT_SM2"},
		{name: "symmetric key named +sm2", uri: sm2URI(e.s, testRegion, e.sym.ID), opts: withPub(sm2URI(e.s, testRegion, e.sym.ID)), want: keyring.ErrNotAsymmetric, wantMsg: "InvalidParameterValue.InvalidKeyUsage"},
		{name: "wrong secret", uri: u, id: testID, sec: "wrong", want: keyring.ErrBadCredentials, wantMsg: "AuthFailure.SignatureFailure"},
		{name: "denied", uri: u, id: "AKIDDenied", sec: testSecret, want: keyring.ErrAccessDenied, wantMsg: "kms:AsymmetricSm2Decrypt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, sec := testID, testSecret
			if tc.id != "" {
				id, sec = tc.id, tc.sec
			}
			setEnv(t, id, sec)
			blob := tc.blob
			if blob == nil {
				blob = w
			}
			opts := tc.opts
			if opts.PublicKeys == nil {
				opts = withPub(tc.uri)
			}
			k, err := e.openRSA(t, tc.uri, opts).Unwrap(ctx, blob, encCtx)
			if !errors.Is(err, tc.want) || !keyring.IsPermanent(err) {
				k.Destroy()
				t.Fatalf("Unwrap() error = %v, want permanent %v", err, tc.want)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.wantMsg) || !strings.Contains(msg, opSM2Decrypt) || strings.Contains(msg, testSecret) {
				t.Errorf("error message %q: want %q and %s, not the secret", msg, tc.wantMsg, opSM2Decrypt)
			}
		})
	}

	// A key of the other kind is refused when its public key is fetched.
	for name, ku := range map[string]string{
		"RSA key named +sm2": sm2URI(e.s, testRegion, e.rsa.ID),
		"SM2 key named +rsa": rsaURI(e.s, testRegion, key.ID),
	} {
		if _, _, err := e.openRSA(t, ku, keyring.Options{}).GenerateDataKey(ctx, encCtx); !errors.Is(err, keyring.ErrNotAsymmetric) {
			t.Errorf("%s: GenerateDataKey() error = %v, want keyring.ErrNotAsymmetric", name, err)
		}
	}

	// Throttling is retried.
	e.s.AddFault(kmsemu.Fault{Cloud: kmsemu.Tencent, Action: "AsymmetricSm2Decrypt", Throttle: 1})
	back, err := kr.Unwrap(ctx, w, encCtx)
	if err != nil || !bytes.Equal(back.Bytes(), dk.Bytes()) {
		t.Fatalf("Unwrap() after a throttled AsymmetricSm2Decrypt = %v, want the data key", err)
	}
	back.Destroy()
}
