package keyring

import (
	"context"
	"errors"
	"net/url"
)

// AsymmetricKey is an asymmetric decryption key held by a key service: an
// RSA key whose private half never leaves the service. kmsfs wraps data
// keys under its public key without calling the service (see package
// keyring/pubkey) and asks the service to decrypt them.
type AsymmetricKey interface {
	// URI is the key URI the key was opened from, in the provider's own
	// scheme (for example tencent-kms://REGION/KEYID).
	URI() string
	// PublicKey fetches the key's public key from the service, as a DER
	// SubjectPublicKeyInfo.
	PublicKey(ctx context.Context) ([]byte, error)
	// DecryptOAEP has the service decrypt ciphertext, RSAES-OAEP with
	// SHA-256 (MGF1 with SHA-256, empty label). The caller clears the
	// returned plaintext when done with it. Errors wrap the package's
	// sentinels as the provider's other calls do; a ciphertext the key
	// cannot decrypt wraps ErrUnwrap, and a key that is not an RSA
	// decryption key wraps ErrNotAsymmetric.
	DecryptOAEP(ctx context.Context, ciphertext []byte) ([]byte, error)
}

// AsymmetricOpener opens the asymmetric key named by u, a URI in the
// provider's own scheme. Like Opener it resolves credentials but makes no
// call to the service.
type AsymmetricOpener func(ctx context.Context, u *url.URL) (AsymmetricKey, error)

// ErrNotAsymmetric means a key named as an asymmetric decryption key is
// not one (a symmetric key, or a signing key).
var ErrNotAsymmetric = errors.New("not an asymmetric RSA decryption key")

// ErrWriteOnly means a data key was needed from a key of which this mount
// holds only the public half: it can write new files but never read
// existing ones.
var ErrWriteOnly = errors.New("write-only: only the public key is held here, so existing files cannot be read")
