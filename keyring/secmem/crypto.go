package secmem

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"reflect"
)

// NewAESGCM returns AES-GCM under key. With randomNonce, Seal draws the
// nonce and stores it with the ciphertext (cipher.NewGCMWithRandomNonce);
// otherwise the caller gives it (cipher.NewGCM). The key expansion runs
// under Do, and the expanded key is left only in the AEAD, which the
// caller passes to Wipe when done.
func NewAESGCM(key []byte, randomNonce bool) (cipher.AEAD, error) {
	var (
		aead cipher.AEAD
		err  error
	)
	Do(func() {
		var b cipher.Block
		if b, err = aes.NewCipher(key); err != nil {
			err = fmt.Errorf("aes: %w", err)
			return
		}
		// GCM keeps its own copy of the AES state, unless that state
		// points into b (s390x keeps the key in a slice): wipe b only if
		// nothing can point into it.
		if t := reflect.TypeOf(b); t.Kind() == reflect.Pointer && !hasPointers(t.Elem()) {
			defer Wipe(b)
		}
		if randomNonce {
			aead, err = cipher.NewGCMWithRandomNonce(b)
		} else {
			aead, err = cipher.NewGCM(b)
		}
		if err != nil {
			err = fmt.Errorf("gcm: %w", err)
		}
	})
	return aead, err
}

// HKDF writes HKDF-SHA256(secret, salt, info) (RFC 5869) into dst, at
// most one SHA-256 output (32 bytes) long, under Do, with every
// intermediate value on the stack and wiped.
func HKDF(dst, secret, salt []byte, info string) error {
	if len(dst) > sha256.Size {
		return fmt.Errorf("hkdf: %d bytes asked, at most %d", len(dst), sha256.Size)
	}
	var err error
	Do(func() {
		var zero [sha256.Size]byte
		s := salt
		if s == nil {
			s = zero[:]
		}
		var prk, out [sha256.Size]byte
		defer clear(prk[:])
		defer clear(out[:])
		if err = HMACSHA256(&prk, s, secret); err != nil {
			return
		}
		if err = HMACSHA256(&out, prk[:], []byte(info), []byte{1}); err != nil {
			return
		}
		copy(dst, out[:])
	})
	if err != nil {
		return fmt.Errorf("hkdf: %w", err)
	}
	return nil
}

// MaxHMACInput is the longest message HMACSHA256 takes.
const MaxHMACInput = 4096

// HMACSHA256 writes HMAC-SHA256(key, the concatenated parts) (RFC 2104)
// into out. The key may be at most one SHA-256 block (64 bytes) long and
// the message at most MaxHMACInput bytes. Unlike crypto/hmac it allocates
// nothing: the padded keys and the inner hash live on the stack and are
// cleared before it returns. (Every heap allocation made under Do is
// tracked by the runtime until it is erased, which made crypto/hmac's
// half a dozen allocations per use the main cost of opening a file.)
func HMACSHA256(out *[sha256.Size]byte, key []byte, parts ...[]byte) error {
	if len(key) > sha256.BlockSize {
		return fmt.Errorf("hmac: key of %d bytes, at most %d", len(key), sha256.BlockSize)
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > MaxHMACInput {
		return fmt.Errorf("hmac: message of %d bytes, at most %d", n, MaxHMACInput)
	}
	var inner [sha256.BlockSize + MaxHMACInput]byte
	defer clear(inner[:])
	copy(inner[:], key)
	for i := range sha256.BlockSize {
		inner[i] ^= 0x36
	}
	k := sha256.BlockSize
	for _, p := range parts {
		k += copy(inner[k:], p)
	}
	ih := sha256.Sum256(inner[:k])
	defer clear(ih[:])
	var outer [sha256.BlockSize + sha256.Size]byte
	defer clear(outer[:])
	copy(outer[:], key)
	for i := range sha256.BlockSize {
		outer[i] ^= 0x5c
	}
	copy(outer[sha256.BlockSize:], ih[:])
	*out = sha256.Sum256(outer[:])
	return nil
}
