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

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/keyringtest"
)

// fakeKey is an AsymmetricKey backed by private keys in memory, standing
// in for a key service: an RSA key, or (sm2 set) an SM2 key. Like the
// services, it decrypts SM2 ciphertexts in the DER encoding only.
type fakeKey struct {
	rsa               *rsa.PrivateKey
	sm2               *sm2.PrivateKey
	decrypts, fetches atomic.Int64
	err               error
}

func (f *fakeKey) URI() string { return "fake://k" }

func (f *fakeKey) PublicKey(context.Context) ([]byte, error) {
	f.fetches.Add(1)
	if f.sm2 != nil {
		return smx509.MarshalPKIXPublicKey(&f.sm2.PublicKey)
	}
	return x509.MarshalPKIXPublicKey(&f.rsa.PublicKey)
}

func (f *fakeKey) Decrypt(ctx context.Context, alg keyring.AsymAlg, ct []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.decrypts.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	switch {
	case alg == keyring.RSAOAEPSHA256 && f.rsa != nil:
		pt, err := rsa.DecryptOAEP(sha256.New(), nil, f.rsa, ct, nil)
		if err != nil {
			return nil, keyring.ErrUnwrap
		}
		return pt, nil
	case alg == keyring.SM2 && f.sm2 != nil:
		if len(ct) == 0 || ct[0] != 0x30 {
			return nil, keyring.ErrUnwrap
		}
		pt, err := f.sm2.Decrypt(nil, ct, nil)
		if err != nil {
			return nil, keyring.ErrUnwrap
		}
		return pt, nil
	}
	return nil, keyring.ErrNotAsymmetric
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

var sm2Key = sync.OnceValue(func() *sm2.PrivateKey {
	k, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
})

// kinds are the two public-key schemes with a key service stand-in each.
var kinds = []struct {
	name, uri string
	alg       keyring.AsymAlg
	label     string
	fake      func(t testing.TB) *fakeKey
	// open decrypts a wrapped key as FORMAT.md says, with the private key.
	open func(f *fakeKey, w []byte) ([]byte, error)
	// size checks the length of a wrapped key.
	size func(n int) bool
}{
	{
		name: "rsa", uri: "fake+rsa://k", alg: keyring.RSAOAEPSHA256, label: "kmsfs rsa-oaep v1",
		fake: func(t testing.TB) *fakeKey { return &fakeKey{rsa: rsaKey(t)} },
		open: func(f *fakeKey, w []byte) ([]byte, error) {
			return rsa.DecryptOAEP(sha256.New(), nil, f.rsa, w, nil)
		},
		size: func(n int) bool { return n == 256 },
	},
	{
		name: "sm2", uri: "fake+sm2://k", alg: keyring.SM2, label: "kmsfs sm2 v1",
		fake: func(testing.TB) *fakeKey { return &fakeKey{sm2: sm2Key()} },
		open: func(f *fakeKey, w []byte) ([]byte, error) {
			if w[0] != 0x30 {
				return nil, errors.New("not DER")
			}
			return f.sm2.Decrypt(nil, w, nil)
		},
		size: func(n int) bool { return n >= 108 && n <= MaxSM2Wrapped },
	},
}

func TestRoundTripAndContext(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			ctx := context.Background()
			f := kind.fake(t)
			k, err := New(kind.uri, nil, f)
			if err != nil {
				t.Fatal(err)
			}
			if k.Algorithm() != kind.alg {
				t.Errorf("Algorithm() = %v, want %v", k.Algorithm(), kind.alg)
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
			if !kind.size(len(w)) {
				t.Errorf("wrapped key is %d bytes", len(w))
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
			// FORMAT.md: DK || SHA-256(label || 0 || context).
			msg, err := kind.open(f, w)
			if err != nil {
				t.Fatal(err)
			}
			d := sha256.Sum256(append([]byte(kind.label+"\x00"), encCtx...))
			if len(msg) != 64 || !bytes.Equal(msg[:32], dk.Bytes()) || !bytes.Equal(msg[32:], d[:]) {
				t.Error("the wrapped message is not DK || digest of the context")
			}
			flipped := bytes.Clone(w)
			flipped[len(w)-10] ^= 1 // in C2 for SM2, in the ciphertext for RSA
			for name, tc := range map[string]struct {
				w, ctx []byte
			}{
				"other context": {w, []byte(`{"kmsfs":"v1","volume":"ffeeddccbbaa99887766554433221100"}`)},
				"truncated":     {w[:len(w)-1], encCtx},
				"flipped":       {flipped, encCtx},
				"extended":      {append(bytes.Clone(w), 0), encCtx},
				"empty":         {nil, encCtx},
			} {
				if _, err := k.Unwrap(ctx, tc.w, tc.ctx); !errors.Is(err, keyring.ErrUnwrap) {
					t.Errorf("%s: Unwrap error = %v, want ErrUnwrap", name, err)
				}
			}
		})
	}
}

// TestWrongShapeRefused: a message of the wrong shape, encrypted under the
// right key, is refused.
func TestWrongShapeRefused(t *testing.T) {
	ctx := context.Background()
	dk := bytes.Repeat([]byte{7}, 32)
	fr := &fakeKey{rsa: rsaKey(t)}
	kr, _ := New("fake+rsa://k", nil, fr)
	short, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &fr.rsa.PublicKey, dk, nil)
	if _, err := kr.Unwrap(ctx, short, []byte("c")); !errors.Is(err, keyring.ErrUnwrap) {
		t.Errorf("RSA, a 32-byte message: Unwrap error = %v, want ErrUnwrap", err)
	}
	fs := &fakeKey{sm2: sm2Key()}
	ks, _ := New("fake+sm2://k", nil, fs)
	for name, msg := range map[string][]byte{"32 bytes": dk, "65 bytes": make([]byte, 65)} {
		ct, err := sm2.EncryptASN1(rand.Reader, &fs.sm2.PublicKey, msg)
		if err != nil {
			t.Fatal(err)
		}
		before := fs.decrypts.Load()
		if _, err := ks.Unwrap(ctx, ct, []byte("c")); !errors.Is(err, keyring.ErrUnwrap) {
			t.Errorf("SM2, a message of %s: Unwrap error = %v, want ErrUnwrap", name, err)
		}
		if fs.decrypts.Load() != before {
			t.Errorf("SM2, a message of %s: the service was asked to decrypt it", name)
		}
	}
	// The plain encoding of a good wrapped key is refused before any call:
	// public-key slots store the DER encoding only.
	dkKey, w, err := ks.GenerateDataKey(ctx, []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	dkKey.Destroy()
	plain, err := SM2Plain(w)
	if err != nil {
		t.Fatal(err)
	}
	before := fs.decrypts.Load()
	if _, err := ks.Unwrap(ctx, plain, []byte("c")); !errors.Is(err, keyring.ErrUnwrap) || fs.decrypts.Load() != before {
		t.Errorf("SM2 plain encoding: Unwrap error = %v (service asked: %v), want ErrUnwrap without a call", err, fs.decrypts.Load() != before)
	}
}

// TestConformance runs the keyring conformance suite on public-key
// keyrings over a key service stand-in.
func TestConformance(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			keyringtest.Run(t, func(t *testing.T) keyring.Keyring {
				k, err := New(kind.uri, nil, kind.fake(t))
				if err != nil {
					t.Fatal(err)
				}
				return k
			})
		})
	}
}

func TestServiceErrorPassesThrough(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			f := kind.fake(t)
			f.err = keyring.ErrKeyDisabled
			k, _ := New(kind.uri, nil, f)
			dk, w, err := k.GenerateDataKey(context.Background(), []byte("c"))
			if err != nil {
				t.Fatal(err)
			}
			dk.Destroy()
			if _, err := k.Unwrap(context.Background(), w, []byte("c")); !errors.Is(err, keyring.ErrKeyDisabled) || !keyring.IsPermanent(err) {
				t.Errorf("Unwrap error = %v, want ErrKeyDisabled", err)
			}
		})
	}
}

// TestKindMismatch: a key of the other kind than the scheme names is
// refused as not asymmetric, whether recorded or fetched.
func TestKindMismatch(t *testing.T) {
	rsaDER, _ := x509.MarshalPKIXPublicKey(&rsaKey(t).PublicKey)
	sm2DER, _ := smx509.MarshalPKIXPublicKey(&sm2Key().PublicKey)
	reg := keyring.NewRegistry(func(r *keyring.Registry) {
		Register(r, "fake", func(_ context.Context, u *url.URL) (keyring.AsymmetricKey, error) {
			if u.Host == "sm2" {
				return &fakeKey{sm2: sm2Key()}, nil
			}
			return &fakeKey{rsa: rsaKey(t)}, nil
		})
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name, uri string
		rec       []byte // the recorded public key, if any
	}{
		{"SM2 key named +rsa, fetched", "fake+rsa://sm2/k", nil},
		{"RSA key named +sm2, fetched", "fake+sm2://rsa/k", nil},
		{"SM2 key named +rsa, recorded", "fake+rsa://sm2/k", sm2DER},
		{"RSA key named +sm2, recorded", "fake+sm2://rsa/k", rsaDER},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := keyring.Options{}
			if tc.rec != nil {
				opts.PublicKeys = map[string][]byte{tc.uri: PEM(tc.rec)}
			}
			kr, err := reg.Open(ctx, tc.uri, opts)
			if err == nil {
				var dk *keyring.Key
				dk, _, err = kr.GenerateDataKey(ctx, []byte("c"))
				dk.Destroy()
			}
			if !errors.Is(err, keyring.ErrNotAsymmetric) || !keyring.IsPermanent(err) {
				t.Errorf("error = %v, want ErrNotAsymmetric", err)
			}
		})
	}
	if _, err := New("fake+sm2://k", &rsaKey(t).PublicKey, nil); !errors.Is(err, keyring.ErrNotAsymmetric) {
		t.Errorf("New(+sm2, an RSA key) error = %v, want ErrNotAsymmetric", err)
	}
	if _, err := New("fake://k", &rsaKey(t).PublicKey, nil); !errors.Is(err, keyring.ErrBadURI) {
		t.Errorf("New(a scheme without suffix) error = %v, want ErrBadURI", err)
	}
	var typedNil *rsa.PublicKey
	if _, err := New("fake+rsa://k", typedNil, nil); err == nil {
		t.Error("New(a typed nil public key, no key service) succeeded")
	}
}

func TestRegisterWriteOnly(t *testing.T) {
	rsaDER, _ := x509.MarshalPKIXPublicKey(&rsaKey(t).PublicKey)
	sm2DER, _ := smx509.MarshalPKIXPublicKey(&sm2Key().PublicKey)
	for _, kind := range []struct {
		uri string
		der []byte
	}{{"fake+rsa://region/key", rsaDER}, {"fake+sm2://region/key", sm2DER}} {
		t.Run(kind.uri, func(t *testing.T) {
			opened := 0
			reg := keyring.NewRegistry(func(r *keyring.Registry) {
				Register(r, "fake", func(_ context.Context, u *url.URL) (keyring.AsymmetricKey, error) {
					opened++
					if u.Scheme != "fake" {
						t.Errorf("the opener got scheme %q, want fake", u.Scheme)
					}
					return &fakeKey{rsa: rsaKey(t), sm2: sm2Key()}, nil
				})
			})
			uri := kind.uri
			ctx := context.Background()
			if _, err := reg.Open(ctx, uri, keyring.Options{WriteOnly: true}); !errors.Is(err, keyring.ErrBadURI) {
				t.Errorf("write-only without a public key: error = %v, want ErrBadURI", err)
			}
			kr, err := reg.Open(ctx, uri, keyring.Options{WriteOnly: true, PublicKeys: map[string][]byte{uri: PEM(kind.der)}})
			if err != nil {
				t.Fatal(err)
			}
			if opened != 0 {
				t.Error("a write-only keyring opened the provider")
			}
			if kr.URI() != uri {
				t.Errorf("URI() = %q, want %q", kr.URI(), uri)
			}
			if got := kr.(*Keyring).KnownPublicKey(); !bytes.Equal(got, kind.der) {
				t.Error("KnownPublicKey() is not the recorded key")
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
		})
	}
}

func TestIsURI(t *testing.T) {
	for uri, want := range map[string]bool{
		"fake+rsa://region/key": true,
		"fake+sm2://region/key": true,
		"fake://region/key":     false,
		"+rsa://x":              false,
		"+sm2://x":              false,
		"fake+sm3://x":          false,
		"fake+sm2":              false,
	} {
		if got := IsURI(uri); got != want {
			t.Errorf("IsURI(%q) = %v, want %v", uri, got, want)
		}
	}
	if !IsScheme("tencent-kms+sm2") || !IsScheme("tencent-kms+rsa") || IsScheme("tencent-kms") {
		t.Error("IsScheme")
	}
}

func TestParsePublicKey(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub := &rsaKey(t).PublicKey
	spki, _ := x509.MarshalPKIXPublicKey(pub)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	sm2DER, _ := smx509.MarshalPKIXPublicKey(&sm2Key().PublicKey)
	pkcs1 := x509.MarshalPKCS1PublicKey(pub)
	// An SM2 key under the SM2 algorithm OID instead of id-ecPublicKey,
	// as some implementations write it: 1.2.840.10045.2.1 -> 1.2.156.10197.1.301.
	sm2AlgOID := bytes.Replace(sm2DER, []byte{0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01}, []byte{0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d}, 1)
	sm2AlgOID[1]++ // the outer SEQUENCE is one byte longer
	sm2AlgOID[3]++ // and so is the AlgorithmIdentifier
	for _, tc := range []struct {
		name string
		in   []byte
		sm2  bool
		ok   bool
	}{
		{"spki der", spki, false, true},
		{"spki pem", PEM(spki), false, true},
		{"pkcs1 pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1}), false, true},
		{"pkcs1 der", pkcs1, false, true},
		{"sm2 der", sm2DER, true, true},
		{"sm2 pem", PEM(sm2DER), true, true},
		{"sm2 algorithm OID", sm2AlgOID, true, true},
		{"1024 bits", PEM(smallDER), false, false},
		{"ecdsa P-256", PEM(ecDER), false, false},
		{"sm2 as RSA PUBLIC KEY", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: sm2DER}), false, false},
		{"private key pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: spki}), false, false},
		{"too long", append(PEM(spki), make([]byte, maxPublicKeyText)...), false, false},
		{"garbage", []byte("not a key"), false, false},
		{"empty", nil, false, false},
	} {
		got, err := ParsePublicKey(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%s: ParsePublicKey error = %v, want ok %v", tc.name, err, tc.ok)
			continue
		}
		if err != nil {
			continue
		}
		if isSM2(got) != tc.sm2 {
			t.Errorf("%s: ParsePublicKey = %s key, want SM2 %v", tc.name, kindOf(got), tc.sm2)
		}
		der, err := MarshalPublicKey(got)
		if err != nil {
			t.Errorf("%s: MarshalPublicKey error = %v", tc.name, err)
		}
		if tc.sm2 && !bytes.Equal(der, sm2DER) {
			t.Errorf("%s: MarshalPublicKey is not the id-ecPublicKey SubjectPublicKeyInfo", tc.name)
		}
	}
	if _, err := MarshalPublicKey(&ec.PublicKey); err == nil {
		t.Error("MarshalPublicKey(an ECDSA P-256 key) succeeded")
	}
}

func TestSM2Plain(t *testing.T) {
	pub := &sm2Key().PublicKey
	msg := bytes.Repeat([]byte{0x5a}, 64)
	der, err := sm2.EncryptASN1(rand.Reader, pub, msg)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := SM2Plain(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != sm2PlainSize || plain[0] != 0x04 {
		t.Fatalf("SM2Plain = %d bytes starting %#x, want %d starting 0x04", len(plain), plain[0], sm2PlainSize)
	}
	// The plain form is C1C3C2: the SM2 library reads it back as such.
	pt, err := sm2Key().Decrypt(nil, plain, sm2.NewPlainDecrypterOpts(sm2.C1C3C2))
	if err != nil || !bytes.Equal(pt, msg) {
		t.Fatalf("decrypting the plain form: %v", err)
	}
	// A long DER length form of the same ciphertext (0x82 0x00 LL instead
	// of 0x81 LL) is another spelling: refused.
	if der[1] == 0x81 {
		long := append([]byte{0x30, 0x82, 0x00}, der[2:]...)
		if _, err := SM2Plain(long); err == nil {
			t.Error("SM2Plain accepted a non-DER length")
		}
	}
	long, _ := sm2.EncryptASN1(rand.Reader, pub, make([]byte, 65))
	for name, in := range map[string][]byte{
		"plain":           plain,
		"empty":           nil,
		"trailing byte":   append(bytes.Clone(der), 0),
		"65-byte message": long,
		"too long":        make([]byte, MaxSM2Wrapped+1),
	} {
		if _, err := SM2Plain(in); err == nil {
			t.Errorf("SM2Plain(%s) succeeded", name)
		}
	}
}

// FuzzSM2Plain checks that SM2Plain accepts only the one DER spelling:
// whatever it accepts encodes back to the same bytes.
func FuzzSM2Plain(f *testing.F) {
	der, _ := sm2.EncryptASN1(rand.Reader, &sm2Key().PublicKey, make([]byte, 64))
	f.Add(der)
	f.Add(der[:40])
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, err := SM2Plain(b)
		if err != nil {
			return
		}
		if len(b) > MaxSM2Wrapped || plain[0] != 0x04 || len(plain) > sm2PlainSize {
			t.Fatalf("accepted %d bytes as %d plain bytes", len(b), len(plain))
		}
		again, err := sm2.PlainCiphertext2ASN1(plain, sm2.C1C3C2)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical encoding %x", b)
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	spki, _ := x509.MarshalPKIXPublicKey(&rsaKey(f).PublicKey)
	sm2DER, _ := smx509.MarshalPKIXPublicKey(&sm2Key().PublicKey)
	f.Add(spki)
	f.Add(PEM(spki))
	f.Add(sm2DER)
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pub, err := ParsePublicKey(b)
		if err != nil {
			return
		}
		switch p := pub.(type) {
		case *rsa.PublicKey:
			if p.N.BitLen() < MinBits || p.N.BitLen() > MaxBits {
				t.Fatalf("accepted a %d-bit key", p.N.BitLen())
			}
		case *ecdsa.PublicKey:
			if !isSM2(p) {
				t.Fatalf("accepted %s key", kindOf(p))
			}
		default:
			t.Fatalf("accepted %s key", kindOf(pub))
		}
		if _, err := MarshalPublicKey(pub); err != nil {
			t.Fatalf("MarshalPublicKey of an accepted key: %v", err)
		}
	})
}

// BenchmarkWrap measures wrapping a data key under an RSA-2048 public key
// (what a new data key costs a write-only machine; docs/KEYS.md).
func BenchmarkWrap(b *testing.B) {
	k, err := New("fake+rsa://k", &rsaKey(b).PublicKey, nil)
	if err != nil {
		b.Fatal(err)
	}
	dk, err := keyring.NewRandomKey()
	if err != nil {
		b.Fatal(err)
	}
	defer dk.Destroy()
	ctx := context.Background()
	for b.Loop() {
		if _, err := k.Wrap(ctx, dk, []byte("context")); err != nil {
			b.Fatal(err)
		}
	}
}
