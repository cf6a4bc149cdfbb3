package pubkey

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/keyringtest"
)

// fakeKey is an AsymmetricKey backed by a private key in memory, standing
// in for a key service.
type fakeKey struct {
	priv              *rsa.PrivateKey
	decrypts, fetches atomic.Int64
	err               error
}

func (f *fakeKey) URI() string { return "fake://k" }

func (f *fakeKey) PublicKey(context.Context) ([]byte, error) {
	f.fetches.Add(1)
	return x509.MarshalPKIXPublicKey(&f.priv.PublicKey)
}

func (f *fakeKey) DecryptOAEP(ctx context.Context, ct []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.decrypts.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, f.priv, ct, nil)
	if err != nil {
		return nil, keyring.ErrUnwrap
	}
	return pt, nil
}

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
)

func rsaKey(t testing.TB) *rsa.PrivateKey {
	keyOnce.Do(func() {
		var err error
		if testKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
	})
	return testKey
}

func TestRoundTripAndContext(t *testing.T) {
	ctx := context.Background()
	f := &fakeKey{priv: rsaKey(t)}
	k, err := New("fake+rsa://k", nil, f)
	if err != nil {
		t.Fatal(err)
	}
	encCtx := []byte(`{"kmsfs":"v1","volume":"00112233445566778899aabbccddeeff"}`)
	dk, w, err := k.GenerateDataKey(ctx, encCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Destroy()
	if f.fetches.Load() != 1 || f.decrypts.Load() != 0 {
		t.Errorf("GenerateDataKey: %d fetches, %d decrypts; want 1 and 0", f.fetches.Load(), f.decrypts.Load())
	}
	if len(w) != 256 {
		t.Errorf("wrapped key is %d bytes, want 256", len(w))
	}
	// A second key needs no call at all.
	dk2, _, err := k.GenerateDataKey(ctx, encCtx)
	if err != nil {
		t.Fatal(err)
	}
	dk2.Destroy()
	if f.fetches.Load() != 1 || k.KMSCalls() != 1 {
		t.Errorf("second GenerateDataKey called the service: fetches %d, KMSCalls %d", f.fetches.Load(), k.KMSCalls())
	}
	got, err := k.Unwrap(ctx, w, encCtx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), dk.Bytes()) {
		t.Error("Unwrap returned another key")
	}
	got.Destroy()
	// FORMAT.md: DK || SHA-256("kmsfs rsa-oaep v1" || 0 || context).
	msg, err := rsa.DecryptOAEP(sha256.New(), nil, f.priv, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(append([]byte("kmsfs rsa-oaep v1\x00"), encCtx...))
	if !bytes.Equal(msg[:32], dk.Bytes()) || !bytes.Equal(msg[32:], d[:]) {
		t.Error("the wrapped message is not DK || digest of the context")
	}
	for name, tc := range map[string]struct {
		w, ctx []byte
	}{
		"other context": {w, []byte(`{"kmsfs":"v1","volume":"ffeeddccbbaa99887766554433221100"}`)},
		"truncated":     {w[:255], encCtx},
		"flipped":       {append(append([]byte{}, w[:100]...), append([]byte{w[100] ^ 1}, w[101:]...)...), encCtx},
	} {
		if _, err := k.Unwrap(ctx, tc.w, tc.ctx); !errors.Is(err, keyring.ErrUnwrap) {
			t.Errorf("%s: Unwrap error = %v, want ErrUnwrap", name, err)
		}
	}
	// A message of the wrong shape, encrypted under the right key, is
	// refused too.
	short, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &f.priv.PublicKey, dk.Bytes(), nil)
	if _, err := k.Unwrap(ctx, short, encCtx); !errors.Is(err, keyring.ErrUnwrap) {
		t.Errorf("a 32-byte message: Unwrap error = %v, want ErrUnwrap", err)
	}
}

// TestConformance runs the keyring conformance suite on a public-key
// keyring over a key service stand-in.
func TestConformance(t *testing.T) {
	keyringtest.Run(t, func(t *testing.T) keyring.Keyring {
		k, err := New("fake+rsa://k", nil, &fakeKey{priv: rsaKey(t)})
		if err != nil {
			t.Fatal(err)
		}
		return k
	})
}

func TestServiceErrorPassesThrough(t *testing.T) {
	f := &fakeKey{priv: rsaKey(t), err: keyring.ErrKeyDisabled}
	k, _ := New("fake+rsa://k", &rsaKey(t).PublicKey, f)
	dk, w, err := k.GenerateDataKey(context.Background(), []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	dk.Destroy()
	if _, err := k.Unwrap(context.Background(), w, []byte("c")); !errors.Is(err, keyring.ErrKeyDisabled) || !keyring.IsPermanent(err) {
		t.Errorf("Unwrap error = %v, want ErrKeyDisabled", err)
	}
}

func TestRegisterWriteOnly(t *testing.T) {
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey(t).PublicKey)
	opened := 0
	reg := keyring.NewRegistry(func(r *keyring.Registry) {
		Register(r, "fake", func(context.Context, *url.URL) (keyring.AsymmetricKey, error) {
			opened++
			return &fakeKey{priv: rsaKey(t)}, nil
		})
	})
	const uri = "fake+rsa://region/key"
	ctx := context.Background()
	if _, err := reg.Open(ctx, uri, keyring.Options{WriteOnly: true}); !errors.Is(err, keyring.ErrBadURI) {
		t.Errorf("write-only without a public key: error = %v, want ErrBadURI", err)
	}
	kr, err := reg.Open(ctx, uri, keyring.Options{WriteOnly: true, PublicKeys: map[string][]byte{uri: PEM(der)}})
	if err != nil {
		t.Fatal(err)
	}
	if opened != 0 {
		t.Error("a write-only keyring opened the provider")
	}
	if kr.URI() != uri {
		t.Errorf("URI() = %q, want %q", kr.URI(), uri)
	}
	dk, w, err := kr.GenerateDataKey(ctx, []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Destroy()
	if _, err := kr.Unwrap(ctx, w, []byte("c")); !errors.Is(err, keyring.ErrWriteOnly) || !keyring.IsPermanent(err) {
		t.Errorf("write-only Unwrap error = %v, want ErrWriteOnly", err)
	}
	// The same URI with decryption reads what the write-only one wrote.
	full, err := reg.Open(ctx, uri, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := full.Unwrap(ctx, w, []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Destroy()
	if !bytes.Equal(got.Bytes(), dk.Bytes()) || opened != 1 {
		t.Errorf("reading keyring: key equal %v, provider opened %d times", bytes.Equal(got.Bytes(), dk.Bytes()), opened)
	}
	if !IsURI(uri) || IsURI("fake://region/key") || IsURI("+rsa://x") {
		t.Error("IsURI")
	}
}

func TestParsePublicKey(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub := &rsaKey(t).PublicKey
	spki, _ := x509.MarshalPKIXPublicKey(pub)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	pkcs1 := x509.MarshalPKCS1PublicKey(pub)
	for _, tc := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"spki der", spki, true},
		{"spki pem", PEM(spki), true},
		{"pkcs1 pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1}), true},
		{"pkcs1 der", pkcs1, true},
		{"1024 bits", PEM(smallDER), false},
		{"ecdsa", PEM(ecDER), false},
		{"private key pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: spki}), false},
		{"garbage", []byte("not a key"), false},
		{"empty", nil, false},
	} {
		_, err := ParsePublicKey(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%s: ParsePublicKey error = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func FuzzParsePublicKey(f *testing.F) {
	spki, _ := x509.MarshalPKIXPublicKey(&rsaKey(f).PublicKey)
	f.Add(spki)
	f.Add(PEM(spki))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pub, err := ParsePublicKey(b)
		if err == nil && (pub.N.BitLen() < MinBits || pub.N.BitLen() > MaxBits) {
			t.Fatalf("accepted a %d-bit key", pub.N.BitLen())
		}
	})
}
