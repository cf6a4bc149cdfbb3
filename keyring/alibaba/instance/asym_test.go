package instance

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
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

const rsaAlias = "alias/kmsfs-rsa"

// asymEnv is an emulator (TLS) holding a symmetric key and an RSA key,
// with the environment pointing at it.
type asymEnv struct {
	s      *kmsemu.Server
	sym    kmsemu.Key
	rsa    kmsemu.Key
	pubDER []byte // the RSA key's public key, from the emulator's store
	reg    *keyring.Registry
}

func asymSetup(t *testing.T) *asymEnv {
	t.Helper()
	cert, err := os.ReadFile(clientCert)
	if err != nil {
		t.Fatal(err)
	}
	s := kmsemutest.StartTLS(t, kmsemu.Credential{Cloud: kmsemu.AlibabaInstance, ID: clientKeyID, PublicKey: string(cert)})
	e := &asymEnv{
		s:   s,
		sym: kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: testInstance}),
		rsa: kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: testInstance, Spec: "RSA_2048", Alias: rsaAlias}),
		reg: keyring.NewRegistry(Register),
	}
	// From the emulator's store, not through GetPublicKey.
	p, err := s.PublicKeyPEM(e.rsa.ID)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(p)
	if block == nil {
		t.Fatalf("PublicKeyPEM(%s) is not PEM", e.rsa.ID)
	}
	e.pubDER = block.Bytes
	setEnv(t, s, private(t, clientKey), clientKeyPW)
	return e
}

func rsaURI(s *kmsemu.Server, key string) string {
	return Scheme + pubkey.Suffix + "://" + s.TLSAddr() + "/" + key
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
func (e *asymEnv) calls() int { return e.s.Count(kmsemu.AlibabaInstance, "", "") }

// unsetenv removes an environment variable for the rest of the test.
func unsetenv(t *testing.T, name string) {
	t.Setenv(name, "") // restores it when the test ends
	os.Unsetenv(name)
}

func TestAsymRoundTrip(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	for _, ref := range []string{e.rsa.ID, rsaAlias} {
		t.Run(ref, func(t *testing.T) {
			kr := e.openRSA(t, rsaURI(e.s, ref), keyring.Options{})
			if kr.URI() != rsaURI(e.s, ref) || kr.WriteOnly() {
				t.Fatalf("URI() = %q, WriteOnly() = %v, want %q, false", kr.URI(), kr.WriteOnly(), rsaURI(e.s, ref))
			}
			before, pubBefore := e.calls(), e.s.Count(kmsemu.AlibabaInstance, "GetPublicKey", "ok")
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
			if n := e.calls() - before; n != 1 || e.s.Count(kmsemu.AlibabaInstance, "GetPublicKey", "ok") != pubBefore+1 {
				t.Errorf("emulator calls = %d, want one GetPublicKey", n)
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
			if n := kr.KMSCalls(); n != 4 {
				t.Errorf("KMSCalls() after 3 Unwrap = %d, want 4", n)
			}
			k, err := kr.Unwrap(ctx, made[0].wrapped, keyringtest.EncryptionContext(t))
			if !errors.Is(err, keyring.ErrUnwrap) {
				k.Destroy()
				t.Fatalf("Unwrap with another encryption context error = %v, want keyring.ErrUnwrap", err)
			}
		})
	}
	if n := e.s.Count(kmsemu.AlibabaInstance, "Decrypt", "ok"); n != 8 {
		t.Errorf("Count(Decrypt, ok) = %d, want 8", n)
	}
}

// TestAsymKnownPublicKey opens the key with its public key given (as the
// volume's trust record does): wrapping never calls the instance, even
// once it is gone.
func TestAsymKnownPublicKey(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	for name, pub := range map[string][]byte{"DER": e.pubDER, "PEM": pubkey.PEM(e.pubDER)} {
		t.Run(name, func(t *testing.T) {
			uri := rsaURI(e.s, e.rsa.ID)
			kr := e.openRSA(t, uri, keyring.Options{PublicKeys: map[string][]byte{uri: pub}})
			before := e.calls()
			encCtx := keyringtest.EncryptionContext(t)
			dk, w, err := kr.GenerateDataKey(ctx, encCtx)
			if err != nil {
				t.Fatalf("GenerateDataKey() error = %v", err)
			}
			defer dk.Destroy()
			if der, err := kr.PublicKey(ctx); err != nil || !bytes.Equal(der, e.pubDER) {
				t.Fatalf("PublicKey() = %v, want the given key", err)
			}
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

	t.Run("instance gone", func(t *testing.T) {
		uri := rsaURI(e.s, e.rsa.ID)
		kr := e.openRSA(t, uri, keyring.Options{PublicKeys: map[string][]byte{uri: e.pubDER}})
		if err := e.s.Close(); err != nil {
			t.Fatal(err)
		}
		encCtx := keyringtest.EncryptionContext(t)
		dk, w, err := kr.GenerateDataKey(ctx, encCtx)
		if err != nil {
			t.Fatalf("GenerateDataKey() with the instance gone: %v", err)
		}
		defer dk.Destroy()
		if kr.KMSCalls() != 0 {
			t.Errorf("KMSCalls() = %d, want 0", kr.KMSCalls())
		}
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if k, err := kr.Unwrap(tctx, w, encCtx); !errors.Is(err, keyring.ErrUnavailable) {
			k.Destroy()
			t.Fatalf("Unwrap() with the instance gone: error = %v, want keyring.ErrUnavailable", err)
		}
	})
}

// TestAsymWriteOnly opens the key with its public key only and no client
// key in the environment: new data keys wrap, nothing unwraps.
func TestAsymWriteOnly(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	uri := rsaURI(e.s, e.rsa.ID)
	encCtx := keyringtest.EncryptionContext(t)
	var dk *keyring.Key
	var wrapped []byte
	t.Run("write-only", func(t *testing.T) {
		for _, v := range []string{EnvClientKeyFile, EnvClientKeyPassword, EnvPasswordFile, EnvCAFile} {
			unsetenv(t, v)
		}
		if _, err := e.reg.Open(ctx, uri, keyring.Options{}); !errors.Is(err, keyring.ErrBadCredentials) {
			t.Fatalf("Open() of a full keyring without credentials: error = %v, want keyring.ErrBadCredentials", err)
		}
		kr := e.openRSA(t, uri, keyring.Options{WriteOnly: true, PublicKeys: map[string][]byte{uri: e.pubDER}})
		if !kr.WriteOnly() {
			t.Error("WriteOnly() = false, want true")
		}
		before := e.calls()
		var err error
		if dk, wrapped, err = kr.GenerateDataKey(ctx, encCtx); err != nil {
			t.Fatalf("GenerateDataKey() error = %v", err)
		}
		if k, err := kr.Unwrap(ctx, wrapped, encCtx); !errors.Is(err, keyring.ErrWriteOnly) {
			k.Destroy()
			t.Fatalf("Unwrap() error = %v, want keyring.ErrWriteOnly", err)
		}
		if e.calls() != before {
			t.Errorf("a write-only keyring made %d calls to the instance, want 0", e.calls()-before)
		}
		if _, err := e.reg.Open(ctx, uri, keyring.Options{WriteOnly: true}); err == nil {
			t.Error("Open() write-only without a public key succeeded")
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
	kr := e.openRSA(t, rsaURI(e.s, e.rsa.ID), keyring.Options{})
	encCtx := keyringtest.EncryptionContext(t)
	e.s.AddFault(kmsemu.Fault{Cloud: kmsemu.AlibabaInstance, Action: "GetPublicKey", Throttle: 1})
	dk, w, err := kr.GenerateDataKey(ctx, encCtx)
	if err != nil {
		t.Fatalf("GenerateDataKey() after a throttled GetPublicKey: %v", err)
	}
	defer dk.Destroy()
	e.s.AddFault(kmsemu.Fault{Cloud: kmsemu.AlibabaInstance, Action: "Decrypt", Throttle: 1})
	u, err := kr.Unwrap(ctx, w, encCtx)
	if err != nil || !bytes.Equal(u.Bytes(), dk.Bytes()) {
		t.Fatalf("Unwrap() after a throttled Decrypt = %v, want the data key", err)
	}
	u.Destroy()
	for _, op := range []string{"GetPublicKey", "Decrypt"} {
		if n := e.s.Count(kmsemu.AlibabaInstance, op, "throttled"); n != 1 {
			t.Errorf("Count(%s, throttled) = %d, want 1", op, n)
		}
	}
}

func TestAsymErrors(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	encCtx := keyringtest.EncryptionContext(t)
	good := e.openRSA(t, rsaURI(e.s, e.rsa.ID), keyring.Options{})
	dk, wrapped, err := good.GenerateDataKey(ctx, encCtx)
	if err != nil {
		t.Fatal(err)
	}
	dk.Destroy()
	tampered := bytes.Clone(wrapped)
	tampered[len(tampered)/2] ^= 0x20
	impostor := impostorKeyFile(t)
	disabled := kmsemutest.CreateKey(t, e.s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: testInstance, Spec: "RSA_2048"})
	if err := e.s.DisableKey(disabled.ID); err != nil {
		t.Fatal(err)
	}
	// withPub gives the keyring of uri a public key, so that Unwrap goes
	// straight to Decrypt.
	withPub := func(uri string) keyring.Options {
		return keyring.Options{PublicKeys: map[string][]byte{uri: e.pubDER}}
	}

	type call int
	const (
		publicKey call = iota // PublicKey (GetPublicKey)
		unwrap                // Unwrap of wrapped (Decrypt)
		generate              // GenerateDataKey
	)
	for _, tc := range []struct {
		name    string
		uri     string
		opts    keyring.Options
		setup   func(t *testing.T)
		call    call
		blob    []byte
		want    error
		wantMsg string
	}{
		{name: "disabled key, GetPublicKey", uri: rsaURI(e.s, disabled.ID), call: publicKey, want: keyring.ErrKeyDisabled, wantMsg: "Rejected.Disabled"},
		{name: "disabled key, Decrypt", uri: rsaURI(e.s, disabled.ID), opts: withPub(rsaURI(e.s, disabled.ID)), call: unwrap, want: keyring.ErrKeyDisabled, wantMsg: "Rejected.Disabled"},
		{name: "symmetric key as +rsa, GetPublicKey", uri: rsaURI(e.s, e.sym.ID), call: publicKey, want: keyring.ErrNotAsymmetric, wantMsg: "UnsupportedOperation"},
		{name: "symmetric key as +rsa, Decrypt", uri: rsaURI(e.s, e.sym.ID), opts: withPub(rsaURI(e.s, e.sym.ID)), call: unwrap, want: keyring.ErrNotAsymmetric, wantMsg: "UnsupportedOperation"},
		{name: "RSA key as a symmetric key", uri: uri(e.s, e.rsa.ID), call: generate, want: keyring.ErrAccessDenied, wantMsg: Scheme + pubkey.Suffix + "://"},
		{name: "wrong password", uri: rsaURI(e.s, e.rsa.ID), setup: func(t *testing.T) { t.Setenv(EnvClientKeyPassword, "wrong") }, call: publicKey, want: keyring.ErrBadCredentials},
		{name: "another client key, GetPublicKey", uri: rsaURI(e.s, e.rsa.ID), setup: func(t *testing.T) { t.Setenv(EnvClientKeyFile, impostor) }, call: publicKey, want: keyring.ErrBadCredentials, wantMsg: "Unauthorized"},
		{name: "another client key, Decrypt", uri: rsaURI(e.s, e.rsa.ID), opts: withPub(rsaURI(e.s, e.rsa.ID)), setup: func(t *testing.T) { t.Setenv(EnvClientKeyFile, impostor) }, call: unwrap, want: keyring.ErrBadCredentials, wantMsg: "Unauthorized"},
		{name: "tampered ciphertext", uri: rsaURI(e.s, e.rsa.ID), call: unwrap, blob: tampered, want: keyring.ErrUnwrap, wantMsg: "InvalidParameter"},
		{name: "truncated ciphertext", uri: rsaURI(e.s, e.rsa.ID), opts: withPub(rsaURI(e.s, e.rsa.ID)), call: unwrap, blob: wrapped[:100], want: keyring.ErrUnwrap},
		{name: "unknown key", uri: rsaURI(e.s, "key-nope"), call: publicKey, want: keyring.ErrKeyNotFound, wantMsg: "Forbidden.KeyNotFound"},
		{name: "unknown alias", uri: rsaURI(e.s, "alias/nope"), call: publicKey, want: keyring.ErrKeyNotFound, wantMsg: "Forbidden.AliasNotFound"},
		{name: "unknown key, Decrypt", uri: rsaURI(e.s, "key-nope"), opts: withPub(rsaURI(e.s, "key-nope")), call: unwrap, want: keyring.ErrKeyNotFound, wantMsg: "Forbidden.KeyNotFound"},
		{name: "bad URI", uri: Scheme + pubkey.Suffix + "://" + e.s.TLSAddr() + "/", call: publicKey, want: keyring.ErrBadURI},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, e.s, private(t, clientKey), clientKeyPW)
			if tc.setup != nil {
				tc.setup(t)
			}
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
			t.Logf("error: %s", msg)
			if !strings.Contains(msg, Scheme) || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error message %q: want one line naming %s and %q", msg, Scheme, tc.wantMsg)
			}
			if strings.Contains(msg, clientKeyPW) || strings.Contains(msg, "PrivateKeyData") {
				t.Errorf("error message %q shows the client key or its password", msg)
			}
		})
	}
}

// TestOpenAsymmetric uses the AsymmetricKey directly.
func TestOpenAsymmetric(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	raw := uri(e.s, e.rsa.ID)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	a, err := OpenAsymmetric(ctx, u)
	if err != nil {
		t.Fatalf("OpenAsymmetric() error = %v", err)
	}
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
	msg := []byte("thirty-two bytes and a digest..")
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := a.Decrypt(ctx, keyring.RSAOAEPSHA256, ct)
	if err != nil || !bytes.Equal(pt, msg) {
		t.Fatalf("Decrypt(RSA) = %v, want the message", err)
	}
	for name, blob := range map[string][]byte{"empty": nil, "too long": make([]byte, pubkey.MaxBits/8+1)} {
		before := e.calls()
		if _, err := a.Decrypt(ctx, keyring.RSAOAEPSHA256, blob); !errors.Is(err, keyring.ErrUnwrap) {
			t.Errorf("Decrypt(RSA, %s) error = %v, want keyring.ErrUnwrap", name, err)
		}
		if e.calls() != before {
			t.Errorf("Decrypt(RSA, %s) called the instance", name)
		}
	}
	if _, err := a.Decrypt(ctx, keyring.AsymAlg(99), ct); !errors.Is(err, keyring.ErrUnwrap) {
		t.Errorf("Decrypt(an unknown algorithm) error = %v, want keyring.ErrUnwrap", err)
	}

	// An EC_SM2 key: the DER ciphertext is sent in the plain encoding.
	sk := kmsemutest.CreateKey(t, e.s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: testInstance, Spec: "EC_SM2"})
	su, _ := url.Parse(uri(e.s, sk.ID))
	sa, err := OpenAsymmetric(ctx, su)
	if err != nil {
		t.Fatal(err)
	}
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
			t.Errorf("Decrypt(SM2, %s) called the instance", name)
		}
	}
	if _, err := sa.Decrypt(ctx, keyring.RSAOAEPSHA256, ct); !errors.Is(err, keyring.ErrNotAsymmetric) {
		t.Errorf("Decrypt(RSA) with an SM2 key: error = %v, want keyring.ErrNotAsymmetric", err)
	}
	if _, err := a.Decrypt(ctx, keyring.SM2, sct); !errors.Is(err, keyring.ErrNotAsymmetric) {
		t.Errorf("Decrypt(SM2) with an RSA key: error = %v, want keyring.ErrNotAsymmetric", err)
	}
	if _, err := OpenAsymmetric(ctx, &url.URL{Scheme: Scheme, Host: e.s.TLSAddr()}); !errors.Is(err, keyring.ErrBadURI) {
		t.Errorf("OpenAsymmetric() of a URI without a key: error = %v, want keyring.ErrBadURI", err)
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

func sm2URI(s *kmsemu.Server, key string) string {
	return Scheme + pubkey.SuffixSM2 + "://" + s.TLSAddr() + "/" + key
}

// TestAsymSM2 wraps under an EC_SM2 key (alibaba-kms-instance+sm2) and
// unwraps with Decrypt SM2PKE, through the SDK and the emulator.
func TestAsymSM2(t *testing.T) {
	e := asymSetup(t)
	ctx := context.Background()
	const sm2Alias = "alias/kmsfs-sm2"
	key := kmsemutest.CreateKey(t, e.s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: testInstance, Spec: "EC_SM2", Alias: sm2Alias})
	pubDER := emulatorPublicKey(t, e.s, key.ID)
	encCtx := keyringtest.EncryptionContext(t)
	var w []byte
	var dk *keyring.Key
	for _, ref := range []string{key.ID, sm2Alias} {
		kr := e.openRSA(t, sm2URI(e.s, ref), keyring.Options{})
		if kr.Algorithm() != keyring.SM2 {
			t.Fatalf("Algorithm() = %v, want SM2", kr.Algorithm())
		}
		d, wr, err := kr.GenerateDataKey(ctx, encCtx)
		if err != nil {
			t.Fatalf("GenerateDataKey(%s) error = %v", ref, err)
		}
		t.Cleanup(d.Destroy)
		if der, err := kr.PublicKey(ctx); err != nil || !bytes.Equal(der, pubDER) {
			t.Errorf("PublicKey(%s) = %v, want the emulator key's public key", ref, err)
		}
		back, err := kr.Unwrap(ctx, wr, encCtx)
		if err != nil || !bytes.Equal(back.Bytes(), d.Bytes()) {
			t.Fatalf("Unwrap(%s) = %v, want the data key", ref, err)
		}
		back.Destroy()
		if k, err := kr.Unwrap(ctx, wr, keyringtest.EncryptionContext(t)); !errors.Is(err, keyring.ErrUnwrap) {
			k.Destroy()
			t.Errorf("Unwrap(%s) with another encryption context error = %v, want keyring.ErrUnwrap", ref, err)
		}
		dk, w = d, wr
	}
	// Two per reference: the service decrypts for another context too
	// (the digest is kmsfs's to check).
	if n := e.s.Count(kmsemu.AlibabaInstance, "Decrypt", "ok"); n != 4 {
		t.Errorf("Count(Decrypt, ok) = %d, want 4", n)
	}
	u := sm2URI(e.s, key.ID)

	t.Run("write-only", func(t *testing.T) {
		for _, v := range []string{EnvClientKeyFile, EnvClientKeyPassword, EnvPasswordFile, EnvCAFile} {
			unsetenv(t, v)
		}
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
	})

	tampered := bytes.Clone(w)
	tampered[len(tampered)-5] ^= 1
	disabled := kmsemutest.CreateKey(t, e.s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: testInstance, Spec: "EC_SM2"})
	if err := e.s.DisableKey(disabled.ID); err != nil {
		t.Fatal(err)
	}
	impostor := impostorKeyFile(t)
	for _, tc := range []struct {
		name    string
		uri     string
		setup   func(t *testing.T)
		blob    []byte
		want    error
		wantMsg string
	}{
		{name: "tampered ciphertext", uri: u, blob: tampered, want: keyring.ErrUnwrap, wantMsg: "InvalidParameter"},
		{name: "disabled key", uri: sm2URI(e.s, disabled.ID), want: keyring.ErrKeyDisabled, wantMsg: "Rejected.Disabled"},
		{name: "RSA key named +sm2", uri: sm2URI(e.s, e.rsa.ID), want: keyring.ErrNotAsymmetric, wantMsg: Scheme + pubkey.SuffixSM2 + "://"},
		{name: "symmetric key named +sm2", uri: sm2URI(e.s, e.sym.ID), want: keyring.ErrNotAsymmetric, wantMsg: "UnsupportedOperation"},
		{name: "another client key", uri: u, setup: func(t *testing.T) { t.Setenv(EnvClientKeyFile, impostor) }, want: keyring.ErrBadCredentials, wantMsg: "Unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, e.s, private(t, clientKey), clientKeyPW)
			if tc.setup != nil {
				tc.setup(t)
			}
			blob := tc.blob
			if blob == nil {
				blob = w
			}
			opts := keyring.Options{PublicKeys: map[string][]byte{tc.uri: pubDER}}
			k, err := e.openRSA(t, tc.uri, opts).Unwrap(ctx, blob, encCtx)
			if !errors.Is(err, tc.want) || !keyring.IsPermanent(err) {
				k.Destroy()
				t.Fatalf("Unwrap() error = %v, want permanent %v", err, tc.want)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.wantMsg) || !strings.Contains(msg, Scheme) || strings.Contains(msg, clientKeyPW) {
				t.Errorf("error message %q: want %q and %s, not the password", msg, tc.wantMsg, Scheme)
			}
		})
	}

	// A key of the other kind is refused when its public key is fetched.
	for name, ku := range map[string]string{
		"RSA key named +sm2": sm2URI(e.s, e.rsa.ID),
		"SM2 key named +rsa": rsaURI(e.s, key.ID),
	} {
		if _, _, err := e.openRSA(t, ku, keyring.Options{}).GenerateDataKey(ctx, encCtx); !errors.Is(err, keyring.ErrNotAsymmetric) {
			t.Errorf("%s: GenerateDataKey() error = %v, want keyring.ErrNotAsymmetric", name, err)
		}
	}

	e.s.AddFault(kmsemu.Fault{Cloud: kmsemu.AlibabaInstance, Action: "Decrypt", Throttle: 1})
	back, err := e.openRSA(t, u, keyring.Options{}).Unwrap(ctx, w, encCtx)
	if err != nil || !bytes.Equal(back.Bytes(), dk.Bytes()) {
		t.Fatalf("Unwrap() after a throttled Decrypt = %v, want the data key", err)
	}
	back.Destroy()
}
