// Package pubkey wraps data keys under the public half of an asymmetric
// key held by a key service, and has the service unwrap them.
//
// A provider that can decrypt with asymmetric keys registers, next to its
// own scheme S, the schemes S+rsa (RSA keys, for example
// tencent-kms+rsa://REGION/KEYID) and S+sm2 (SM2 keys,
// tencent-kms+sm2://REGION/KEYID) through Register. A keyring of those
// schemes:
//
//   - makes new data keys locally, from crypto/rand, and wraps them under
//     the public key: RSAES-OAEP (SHA-256, MGF1 SHA-256, empty label) for
//     +rsa, SM2 public key encryption (GB/T 32918.4, with SM3) for +sm2;
//     no call to the key service;
//   - unwraps by asking the service to decrypt (AsymmetricKey.Decrypt);
//   - in a write-only mount (keyring.Options.WriteOnly) holds the public
//     key only and opens nothing of the provider: every unwrap fails with
//     keyring.ErrWriteOnly.
//
// The public key comes from keyring.Options.PublicKeys (kept in the
// volume's trust record, or given as a PEM file) or, when absent and the
// mount is not write-only, from the service once (GetPublicKey).
//
// The encrypted message is the data key followed by a digest of the
// encryption context (docs/FORMAT.md, "Public-key slots"):
//
//	DK (32 bytes) || SHA-256(label || 0x00 || context)
//
// with the label "kmsfs rsa-oaep v1" (RSA) or "kmsfs sm2 v1" (SM2),
// because the clouds' asymmetric decrypt calls take no context or label:
// the digest, checked after decryption, binds the wrapped key to its
// volume as the symmetric providers' encryption context does. An SM2
// wrapped key is stored in one encoding whatever the cloud, the DER
// SM2Cipher of GM/T 0009 (C1C3C2); SM2Plain converts it for a service
// that takes the plain encoding.
package pubkey

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"github.com/kmsfs/kmsfs/keyring"
)

// Suffix is added to a provider's scheme to name its RSA keys.
const Suffix = "+rsa"

// SuffixSM2 is added to a provider's scheme to name its SM2 keys.
const SuffixSM2 = "+sm2"

// RSA key sizes accepted, in bits. 4096-bit ciphertexts (512 bytes) still
// leave room for three slots in a header copy.
const (
	MinBits = 2048
	MaxBits = 4096
)

// MaxSM2Wrapped is the longest SM2 wrapped key, in bytes: the DER
// SM2Cipher of a msgSize-byte message is a SEQUENCE (3 bytes of header)
// of two INTEGERs of at most 33 bytes each (2 bytes of header), a 32-byte
// OCTET STRING and a 64-byte one (2 bytes of header each). Coordinates
// with leading zero bytes make it shorter, down to 108 bytes.
const MaxSM2Wrapped = 3 + 2*(2+33) + (2 + 32) + (2 + msgSize)

// sm2PlainSize is the plain encoding 0x04 || x || y || C3 || C2 of an SM2
// ciphertext of a msgSize-byte message.
const sm2PlainSize = 1 + 2*32 + 32 + msgSize

// maxPublicKeyText bounds what ParsePublicKey reads: a PEM RSA-4096
// public key is about 800 bytes.
const maxPublicKeyText = 16 << 10

// msgSize is the size of the encrypted message.
const msgSize = keyring.DataKeySize + sha256.Size

// algorithm is what a scheme suffix selects: the kind of public key, how
// to encrypt under it and the label of the context digest.
type algorithm struct {
	suffix string
	asym   keyring.AsymAlg
	kind   string // "RSA" or "SM2", as errors name it
	label  string // starts the digest of the encryption context
	// accept checks that pub is a public key of this kind that kmsfs
	// takes.
	accept func(pub crypto.PublicKey) error
	// encrypt encrypts msg under pub (accepted).
	encrypt func(pub crypto.PublicKey, msg []byte) ([]byte, error)
	// check refuses, before any call to the key service, a wrapped key
	// that cannot be a ciphertext of this algorithm (under pub when it is
	// not nil).
	check func(wrapped []byte, pub crypto.PublicKey) error
}

var rsaOAEP = &algorithm{
	suffix: Suffix,
	asym:   keyring.RSAOAEPSHA256,
	kind:   "RSA",
	label:  "kmsfs rsa-oaep v1",
	accept: func(pub crypto.PublicKey) error {
		p, ok := pub.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("%s public key: want RSA", kindOf(pub))
		}
		return checkRSA(p)
	},
	encrypt: func(pub crypto.PublicKey, msg []byte) ([]byte, error) {
		return rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), msg, nil)
	},
	check: func(w []byte, pub crypto.PublicKey) error {
		if p, ok := pub.(*rsa.PublicKey); ok && len(w) != p.Size() {
			return fmt.Errorf("%d bytes, want %d", len(w), p.Size())
		}
		if len(w) < MinBits/8 || len(w) > MaxBits/8 {
			return fmt.Errorf("%d bytes, want %d to %d", len(w), MinBits/8, MaxBits/8)
		}
		return nil
	},
}

var sm2PKE = &algorithm{
	suffix: SuffixSM2,
	asym:   keyring.SM2,
	kind:   "SM2",
	label:  "kmsfs sm2 v1",
	accept: func(pub crypto.PublicKey) error {
		if !isSM2(pub) {
			return fmt.Errorf("%s public key: want SM2", kindOf(pub))
		}
		return nil
	},
	encrypt: func(pub crypto.PublicKey, msg []byte) ([]byte, error) {
		return sm2.EncryptASN1(rand.Reader, pub.(*ecdsa.PublicKey), msg)
	},
	check: func(w []byte, _ crypto.PublicKey) error {
		plain, err := SM2Plain(w)
		if err != nil {
			return err
		}
		if len(plain) != sm2PlainSize {
			return fmt.Errorf("an SM2 ciphertext of a %d-byte message, want %d", len(plain)-(sm2PlainSize-msgSize), msgSize)
		}
		return nil
	},
}

// algorithms are the public-key schemes, by suffix.
var algorithms = []*algorithm{rsaOAEP, sm2PKE}

// schemeAlgorithm returns the algorithm a scheme names, or nil.
func schemeAlgorithm(scheme string) *algorithm {
	for _, a := range algorithms {
		if strings.HasSuffix(scheme, a.suffix) && len(scheme) > len(a.suffix) {
			return a
		}
	}
	return nil
}

// uriAlgorithm returns the algorithm a URI's scheme names, or nil.
func uriAlgorithm(uri string) *algorithm {
	s, _, ok := strings.Cut(uri, "://")
	if !ok {
		return nil
	}
	return schemeAlgorithm(s)
}

// IsScheme reports whether scheme names a public-key keyring (it ends in
// Suffix or SuffixSM2).
func IsScheme(scheme string) bool { return schemeAlgorithm(scheme) != nil }

// IsURI reports whether uri names a public-key keyring (by its scheme).
func IsURI(uri string) bool { return uriAlgorithm(uri) != nil }

// Register adds base+Suffix and base+SuffixSM2 to reg: keys of the
// provider registered as base, used through their public key. open opens
// the provider's key from the URI with the base scheme; the same key
// serves both kinds, which Decrypt tells apart by its algorithm.
func Register(reg *keyring.Registry, base string, open keyring.AsymmetricOpener) {
	for _, a := range algorithms {
		reg.Register(base+a.suffix, func(ctx context.Context, u *url.URL, opts keyring.Options) (keyring.Keyring, error) {
			return openKeyring(ctx, a, base, u, opts, open)
		})
	}
}

func openKeyring(ctx context.Context, a *algorithm, base string, u *url.URL, opts keyring.Options, open keyring.AsymmetricOpener) (keyring.Keyring, error) {
	uri := u.String()
	bu := *u
	bu.Scheme = base
	var pub crypto.PublicKey
	if b, ok := opts.PublicKeys[uri]; ok {
		p, err := ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: the recorded public key: %w", keyring.RedactURI(uri), err)
		}
		if err := a.accept(p); err != nil {
			return nil, fmt.Errorf("%s: the recorded public key: %w: %v", keyring.RedactURI(uri), keyring.ErrNotAsymmetric, err)
		}
		pub = p
	}
	if opts.WriteOnly {
		if pub == nil {
			return nil, fmt.Errorf("%s: %w: a write-only mount needs the key's public key, and none is recorded for it (kmsfs init --public-key, kmsfs trust --public-key)", keyring.RedactURI(uri), keyring.ErrBadURI)
		}
		return &Keyring{uri: uri, alg: a, pub: pub}, nil
	}
	ak, err := open(ctx, &bu)
	if err != nil {
		return nil, err
	}
	return &Keyring{uri: uri, alg: a, pub: pub, ak: ak}, nil
}

// Keyring wraps data keys under an RSA or SM2 public key and unwraps them
// with the key service. It is safe for concurrent use.
type Keyring struct {
	uri string
	alg *algorithm
	ak  keyring.AsymmetricKey // nil: write-only

	mu    sync.Mutex
	pub   crypto.PublicKey // nil until fetched
	calls atomic.Int64
}

var (
	_ keyring.Keyring = (*Keyring)(nil)
	_ keyring.Wrapper = (*Keyring)(nil)
)

// New returns a keyring for uri (a URI of a scheme ending in Suffix or
// SuffixSM2, which chooses the algorithm) wrapping under pub and
// unwrapping with ak; ak nil makes it write-only, pub nil has it fetched
// from ak on first use. pub is an *rsa.PublicKey or an SM2
// *ecdsa.PublicKey, as ParsePublicKey returns them.
func New(uri string, pub crypto.PublicKey, ak keyring.AsymmetricKey) (*Keyring, error) {
	a := uriAlgorithm(uri)
	if a == nil {
		return nil, fmt.Errorf("pubkey: %s: %w: the scheme must end in %s or %s", keyring.RedactURI(uri), keyring.ErrBadURI, Suffix, SuffixSM2)
	}
	if isNil(pub) {
		pub = nil
	}
	if pub == nil && ak == nil {
		return nil, errors.New("pubkey: a write-only keyring needs a public key")
	}
	if pub != nil {
		if err := a.accept(pub); err != nil {
			return nil, fmt.Errorf("pubkey: %s: %w: %v", keyring.RedactURI(uri), keyring.ErrNotAsymmetric, err)
		}
	}
	return &Keyring{uri: uri, alg: a, pub: pub, ak: ak}, nil
}

// URI is the key URI the keyring was opened from.
func (k *Keyring) URI() string { return k.uri }

// Algorithm is the algorithm the keyring wraps with, as its scheme names
// it.
func (k *Keyring) Algorithm() keyring.AsymAlg { return k.alg.asym }

// WriteOnly reports whether the keyring holds only the public key.
func (k *Keyring) WriteOnly() bool { return k.ak == nil }

// KnownPublicKey returns the public key (DER SubjectPublicKeyInfo) if the
// keyring has it, without fetching it.
func (k *Keyring) KnownPublicKey() []byte {
	pub := k.known()
	if pub == nil {
		return nil
	}
	der, err := MarshalPublicKey(pub)
	if err != nil {
		return nil
	}
	return der
}

// known returns the public key if the keyring has it.
func (k *Keyring) known() crypto.PublicKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pub
}

// KMSCalls counts the calls made to the key service.
func (k *Keyring) KMSCalls() int64 { return k.calls.Load() }

// PublicKey returns the public key (DER SubjectPublicKeyInfo), fetching
// it from the service on first use if it was not given.
func (k *Keyring) PublicKey(ctx context.Context) ([]byte, error) {
	pub, err := k.public(ctx)
	if err != nil {
		return nil, err
	}
	return MarshalPublicKey(pub)
}

func (k *Keyring) public(ctx context.Context) (crypto.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pub != nil {
		return k.pub, nil
	}
	k.calls.Add(1)
	der, err := k.ak.PublicKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetching the public key of %s: %w", keyring.RedactURI(k.uri), err)
	}
	pub, err := ParsePublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("the public key of %s: %w", keyring.RedactURI(k.uri), err)
	}
	if err := k.alg.accept(pub); err != nil {
		return nil, fmt.Errorf("the public key of %s: %w: %v (the scheme ends in %s)", keyring.RedactURI(k.uri), keyring.ErrNotAsymmetric, err, k.alg.suffix)
	}
	k.pub = pub
	return pub, nil
}

// GenerateDataKey returns a new random data key wrapped under the public
// key. It calls the key service only to fetch a public key it does not
// have yet.
func (k *Keyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*keyring.Key, []byte, error) {
	dk, err := keyring.NewRandomKey()
	if err != nil {
		return nil, nil, err
	}
	w, err := k.Wrap(ctx, dk, encCtx)
	if err != nil {
		dk.Destroy()
		return nil, nil, err
	}
	return dk, w, nil
}

// Wrap wraps dk under the public key, bound to encCtx.
func (k *Keyring) Wrap(ctx context.Context, dk *keyring.Key, encCtx []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wrapping under %s: %w", keyring.RedactURI(k.uri), err)
	}
	pub, err := k.public(ctx)
	if err != nil {
		return nil, err
	}
	var msg [msgSize]byte
	defer clear(msg[:])
	copy(msg[:], dk.Bytes())
	d := contextDigest(k.alg.label, encCtx)
	copy(msg[keyring.DataKeySize:], d[:])
	w, err := k.alg.encrypt(pub, msg[:])
	if err != nil {
		return nil, fmt.Errorf("wrapping under %s: %w", keyring.RedactURI(k.uri), err)
	}
	return w, nil
}

// Unwrap has the key service decrypt wrapped and checks that it was made
// for encCtx.
func (k *Keyring) Unwrap(ctx context.Context, wrapped, encCtx []byte) (*keyring.Key, error) {
	if k.ak == nil {
		return nil, fmt.Errorf("%s: %w", keyring.RedactURI(k.uri), keyring.ErrWriteOnly)
	}
	if err := k.alg.check(wrapped, k.known()); err != nil {
		return nil, fmt.Errorf("%s: %w: not an %s wrapped key: %v", keyring.RedactURI(k.uri), keyring.ErrUnwrap, k.alg.kind, err)
	}
	k.calls.Add(1)
	msg, err := k.ak.Decrypt(ctx, k.alg.asym, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(msg)
	d := contextDigest(k.alg.label, encCtx)
	if len(msg) != msgSize || subtle.ConstantTimeCompare(msg[keyring.DataKeySize:], d[:]) != 1 {
		return nil, fmt.Errorf("%s: %w", keyring.RedactURI(k.uri), keyring.ErrUnwrap)
	}
	return keyring.NewKeyFrom(msg[:keyring.DataKeySize])
}

func contextDigest(label string, encCtx []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write(encCtx)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// ParsePublicKey parses a public key given as DER or PEM: a
// SubjectPublicKeyInfo ("PUBLIC KEY") of an RSA key of MinBits to MaxBits
// bits or of an SM2 key (id-ecPublicKey, or the SM2 algorithm OID, with
// the curve 1.2.156.10197.1.301), or an RSA key in PKCS #1 ("RSA PUBLIC
// KEY"). It returns an *rsa.PublicKey or, for SM2, an *ecdsa.PublicKey on
// sm2.P256(); other kinds of keys are refused.
func ParsePublicKey(b []byte) (crypto.PublicKey, error) {
	if len(b) > maxPublicKeyText {
		return nil, fmt.Errorf("a public key of %d bytes: want at most %d", len(b), maxPublicKeyText)
	}
	der := b
	pkcs1 := false
	if blk, _ := pem.Decode(b); blk != nil {
		switch blk.Type {
		case "PUBLIC KEY":
		case "RSA PUBLIC KEY":
			pkcs1 = true
		default:
			return nil, fmt.Errorf("PEM block %q: want PUBLIC KEY", blk.Type)
		}
		der = blk.Bytes
	}
	var pub crypto.PublicKey
	if pkcs1 {
		p, err := x509.ParsePKCS1PublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("not an RSA public key: %w", err)
		}
		pub = p
	} else {
		p, err := smx509.ParsePKIXPublicKey(der)
		if err != nil {
			p1, err1 := x509.ParsePKCS1PublicKey(der)
			if err1 != nil {
				return nil, fmt.Errorf("not a public key: %w", err)
			}
			p = p1
		}
		pub = p
	}
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if err := checkRSA(p); err != nil {
			return nil, err
		}
	case *ecdsa.PublicKey:
		if !isSM2(p) {
			return nil, fmt.Errorf("%s public key: want RSA or SM2", kindOf(p))
		}
	default:
		return nil, fmt.Errorf("%s public key: want RSA or SM2", kindOf(p))
	}
	return pub, nil
}

// MarshalPublicKey returns the DER SubjectPublicKeyInfo of an RSA or SM2
// public key (an SM2 key as id-ecPublicKey on the curve
// 1.2.156.10197.1.301).
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p != nil {
			return x509.MarshalPKIXPublicKey(p)
		}
	case *ecdsa.PublicKey:
		if isSM2(p) {
			return smx509.MarshalPKIXPublicKey(p)
		}
	}
	return nil, fmt.Errorf("%s public key: want RSA or SM2", kindOf(pub))
}

// SM2Plain returns the SM2 ciphertext der, in the encoding public-key
// slots store (the DER SM2Cipher of GM/T 0009: SEQUENCE { INTEGER x,
// INTEGER y, OCTET STRING C3, OCTET STRING C2 }), in the plain encoding
// 0x04 || x || y || C3 || C2 (C1C3C2 with the uncompressed point, each
// coordinate in 32 bytes). It fails unless der is the one DER encoding of
// such a ciphertext (a 32-byte C3, a C2 of 1 to msgSize bytes), so that a
// wrapped key has exactly one spelling.
func SM2Plain(der []byte) ([]byte, error) {
	if len(der) > MaxSM2Wrapped {
		return nil, fmt.Errorf("%d bytes, want at most %d", len(der), MaxSM2Wrapped)
	}
	plain, err := sm2.ASN1Ciphertext2Plain(der, nil)
	if err != nil {
		return nil, errors.New("not a DER SM2 ciphertext")
	}
	if len(plain) <= sm2PlainSize-msgSize || len(plain) > sm2PlainSize || plain[0] != 0x04 {
		return nil, errors.New("not a DER SM2 ciphertext of a key")
	}
	// The C3/C2 split is by length: encoding the plain form again gives
	// der back only if C3 was 32 bytes and der was the DER encoding.
	again, err := sm2.PlainCiphertext2ASN1(plain, sm2.C1C3C2)
	if err != nil || !bytes.Equal(again, der) {
		return nil, errors.New("not the DER encoding of an SM2 ciphertext")
	}
	return plain, nil
}

func checkRSA(pub *rsa.PublicKey) error {
	if pub == nil || pub.N == nil {
		return errors.New("an empty RSA public key")
	}
	if n := pub.N.BitLen(); n < MinBits || n > MaxBits {
		return fmt.Errorf("RSA key of %d bits: want %d to %d", n, MinBits, MaxBits)
	}
	return nil
}

// isSM2 reports whether pub is a public key on the SM2 curve. (The
// parsers check that the point is on the curve, and so does encryption.)
func isSM2(pub crypto.PublicKey) bool {
	p, ok := pub.(*ecdsa.PublicKey)
	return ok && p != nil && p.Curve == sm2.P256() && p.X != nil && p.Y != nil
}

// isNil reports whether pub is nil, also as a typed nil pointer.
func isNil(pub crypto.PublicKey) bool {
	switch p := pub.(type) {
	case nil:
		return true
	case *rsa.PublicKey:
		return p == nil
	case *ecdsa.PublicKey:
		return p == nil
	}
	return false
}

// kindOf names the kind of a public key in errors.
func kindOf(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return "an RSA"
	case *ecdsa.PublicKey:
		if p != nil && p.Curve == sm2.P256() {
			return "an SM2"
		}
		if p != nil && p.Curve != nil {
			return "an ECDSA " + p.Curve.Params().Name
		}
		return "an ECDSA"
	case nil:
		return "no"
	}
	return fmt.Sprintf("a %T", pub)
}

// PEM encodes a DER SubjectPublicKeyInfo as PEM.
func PEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
