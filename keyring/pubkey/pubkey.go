// Package pubkey wraps data keys under the public half of an asymmetric
// key held by a key service, and has the service unwrap them.
//
// A provider that can decrypt with an RSA key registers, next to its own
// scheme S, the scheme S+rsa (for example tencent-kms+rsa://REGION/KEYID)
// through Register. A keyring of that scheme:
//
//   - makes new data keys locally, from crypto/rand, and wraps them with
//     RSAES-OAEP (SHA-256, MGF1 SHA-256, empty label) under the public
//     key: no call to the key service;
//   - unwraps by asking the service to decrypt (AsymmetricKey.DecryptOAEP);
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
//	DK (32 bytes) || SHA-256("kmsfs rsa-oaep v1" || 0x00 || context)
//
// because the clouds' asymmetric decrypt calls take no context or label:
// the digest, checked after decryption, binds the wrapped key to its
// volume as the symmetric providers' encryption context does.
package pubkey

import (
	"context"
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

	"github.com/kmsfs/kmsfs/keyring"
)

// Suffix is added to a provider's scheme to name its asymmetric keys.
const Suffix = "+rsa"

// Key sizes accepted, in bits. 4096-bit ciphertexts (512 bytes) still
// leave room for three slots in a header copy.
const (
	MinBits = 2048
	MaxBits = 4096
)

// msgLabel starts the digest of the encryption context.
const msgLabel = "kmsfs rsa-oaep v1"

// msgSize is the size of the encrypted message.
const msgSize = keyring.DataKeySize + sha256.Size

// IsScheme reports whether scheme names a public-key keyring.
func IsScheme(scheme string) bool {
	return strings.HasSuffix(scheme, Suffix) && len(scheme) > len(Suffix)
}

// IsURI reports whether uri names a public-key keyring (by its scheme).
func IsURI(uri string) bool {
	s, _, ok := strings.Cut(uri, "://")
	return ok && IsScheme(s)
}

// Register adds base+Suffix to reg: keys of the provider registered as
// base, used through their public key. open opens the provider's key from
// the URI with the base scheme.
func Register(reg *keyring.Registry, base string, open keyring.AsymmetricOpener) {
	reg.Register(base+Suffix, func(ctx context.Context, u *url.URL, opts keyring.Options) (keyring.Keyring, error) {
		uri := u.String()
		bu := *u
		bu.Scheme = base
		var pub *rsa.PublicKey
		if der, ok := opts.PublicKeys[uri]; ok {
			p, err := ParsePublicKey(der)
			if err != nil {
				return nil, fmt.Errorf("%s: the recorded public key: %w", keyring.RedactURI(uri), err)
			}
			pub = p
		}
		if opts.WriteOnly {
			if pub == nil {
				return nil, fmt.Errorf("%s: %w: a write-only mount needs the key's public key, and none is recorded for it (kmsfs init --public-key, kmsfs trust --public-key)", keyring.RedactURI(uri), keyring.ErrBadURI)
			}
			return &Keyring{uri: uri, pub: pub}, nil
		}
		ak, err := open(ctx, &bu)
		if err != nil {
			return nil, err
		}
		return &Keyring{uri: uri, pub: pub, ak: ak}, nil
	})
}

// Keyring wraps data keys under an RSA public key and unwraps them with
// the key service. It is safe for concurrent use.
type Keyring struct {
	uri string
	ak  keyring.AsymmetricKey // nil: write-only

	mu    sync.Mutex
	pub   *rsa.PublicKey // nil until fetched
	calls atomic.Int64
}

var (
	_ keyring.Keyring = (*Keyring)(nil)
	_ keyring.Wrapper = (*Keyring)(nil)
)

// New returns a keyring for uri (a URI of a scheme ending in Suffix)
// wrapping under pub and unwrapping with ak; ak nil makes it write-only,
// pub nil has it fetched from ak on first use.
func New(uri string, pub *rsa.PublicKey, ak keyring.AsymmetricKey) (*Keyring, error) {
	if pub == nil && ak == nil {
		return nil, errors.New("pubkey: a write-only keyring needs a public key")
	}
	if pub != nil {
		if err := checkKey(pub); err != nil {
			return nil, err
		}
	}
	return &Keyring{uri: uri, pub: pub, ak: ak}, nil
}

// URI is the key URI the keyring was opened from.
func (k *Keyring) URI() string { return k.uri }

// WriteOnly reports whether the keyring holds only the public key.
func (k *Keyring) WriteOnly() bool { return k.ak == nil }

// KnownPublicKey returns the public key (DER SubjectPublicKeyInfo) if the
// keyring has it, without fetching it.
func (k *Keyring) KnownPublicKey() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pub == nil {
		return nil
	}
	der, err := x509.MarshalPKIXPublicKey(k.pub)
	if err != nil {
		return nil
	}
	return der
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
	return x509.MarshalPKIXPublicKey(pub)
}

func (k *Keyring) public(ctx context.Context) (*rsa.PublicKey, error) {
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
	d := contextDigest(encCtx)
	copy(msg[keyring.DataKeySize:], d[:])
	w, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, msg[:], nil)
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
	if k.pub != nil && len(wrapped) != k.pub.Size() {
		return nil, fmt.Errorf("%s: %w: %d bytes, want %d", keyring.RedactURI(k.uri), keyring.ErrUnwrap, len(wrapped), k.pub.Size())
	}
	k.calls.Add(1)
	msg, err := k.ak.DecryptOAEP(ctx, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(msg)
	d := contextDigest(encCtx)
	if len(msg) != msgSize || subtle.ConstantTimeCompare(msg[keyring.DataKeySize:], d[:]) != 1 {
		return nil, fmt.Errorf("%s: %w", keyring.RedactURI(k.uri), keyring.ErrUnwrap)
	}
	return keyring.NewKeyFrom(msg[:keyring.DataKeySize])
}

func contextDigest(encCtx []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(msgLabel))
	h.Write([]byte{0})
	h.Write(encCtx)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// ParsePublicKey parses an RSA public key given as DER or PEM, either a
// SubjectPublicKeyInfo ("PUBLIC KEY") or PKCS #1 ("RSA PUBLIC KEY"), of
// MinBits to MaxBits bits.
func ParsePublicKey(b []byte) (*rsa.PublicKey, error) {
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
	var pub *rsa.PublicKey
	if pkcs1 {
		p, err := x509.ParsePKCS1PublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("not an RSA public key: %w", err)
		}
		pub = p
	} else {
		p, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			if p1, err1 := x509.ParsePKCS1PublicKey(der); err1 == nil {
				p, err = p1, nil
			} else {
				return nil, fmt.Errorf("not a public key: %w", err)
			}
		}
		rp, ok := p.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("a %T public key: want RSA", p)
		}
		pub = rp
	}
	if err := checkKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

func checkKey(pub *rsa.PublicKey) error {
	if n := pub.N.BitLen(); n < MinBits || n > MaxBits {
		return fmt.Errorf("RSA key of %d bits: want %d to %d", n, MinBits, MaxBits)
	}
	return nil
}

// PEM encodes a DER SubjectPublicKeyInfo as PEM.
func PEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
