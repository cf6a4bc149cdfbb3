package keyring

import (
	"context"
	"errors"
	"net/url"
)

// AsymAlg names the algorithm of an asymmetric decryption: what
// AsymmetricKey.Decrypt asks the key service to undo.
type AsymAlg int

// The asymmetric algorithms kmsfs uses (docs/FORMAT.md, "Public-key
// slots").
const (
	// RSAOAEPSHA256 is RSAES-OAEP with SHA-256, MGF1 with SHA-256 and an
	// empty label (PKCS #1 v2.2). The ciphertext is as long as the
	// modulus.
	RSAOAEPSHA256 AsymAlg = iota + 1
	// SM2 is SM2 public key encryption with SM3 (GB/T 32918.4). The
	// ciphertext is given in the one encoding public-key slots store, the
	// DER SM2Cipher of GM/T 0009 (SEQUENCE of the INTEGERs x and y of C1,
	// the OCTET STRINGs C3 and C2: C1C3C2); a provider whose service takes
	// another encoding converts it.
	SM2
)

// String names the algorithm as docs/FORMAT.md does.
func (a AsymAlg) String() string {
	switch a {
	case RSAOAEPSHA256:
		return "RSAES-OAEP-SHA-256"
	case SM2:
		return "SM2"
	}
	return "unknown asymmetric algorithm"
}

// AsymmetricKey is an asymmetric decryption key held by a key service: an
// RSA or SM2 key whose private half never leaves the service. kmsfs wraps
// data keys under its public key without calling the service (see
// package keyring/pubkey) and asks the service to decrypt them.
type AsymmetricKey interface {
	// URI is the key URI the key was opened from, in the provider's own
	// scheme (for example tencent-kms://REGION/KEYID).
	URI() string
	// PublicKey fetches the key's public key from the service, as a DER
	// SubjectPublicKeyInfo: an RSA key, or an SM2 key (id-ecPublicKey on
	// the curve 1.2.156.10197.1.301). A key of another kind wraps
	// ErrNotAsymmetric.
	PublicKey(ctx context.Context) ([]byte, error)
	// Decrypt has the service decrypt ciphertext with alg (see AsymAlg
	// for the encoding of each). The caller clears the returned
	// plaintext when done with it. Errors wrap the package's sentinels as
	// the provider's other calls do; a ciphertext the key cannot decrypt
	// wraps ErrUnwrap, and a key that is not a decryption key of alg's
	// kind wraps ErrNotAsymmetric.
	Decrypt(ctx context.Context, alg AsymAlg, ciphertext []byte) ([]byte, error)
}

// AsymmetricOpener opens the asymmetric key named by u, a URI in the
// provider's own scheme. Like Opener it resolves credentials but makes no
// call to the service.
type AsymmetricOpener func(ctx context.Context, u *url.URL) (AsymmetricKey, error)

// ErrNotAsymmetric means a key named as an asymmetric decryption key is
// not one of the kind its scheme names (a symmetric key, a signing key,
// an RSA key named +sm2 or an SM2 key named +rsa).
var ErrNotAsymmetric = errors.New("not an asymmetric decryption key of the kind named")

// ErrWriteOnly means a data key was needed from a key of which this mount
// holds only the public half: it can write new files but never read
// existing ones.
var ErrWriteOnly = errors.New("write-only: only the public key is held here, so existing files cannot be read")
