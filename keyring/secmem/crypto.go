package secmem

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
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
// most one SHA-256 output (32 bytes) long, under Do, and wipes every HMAC
// state it used.
func HKDF(dst, secret, salt []byte, info string) error {
	if len(dst) > sha256.Size {
		return fmt.Errorf("hkdf: %d bytes asked, at most %d", len(dst), sha256.Size)
	}
	Do(func() {
		if salt == nil {
			salt = make([]byte, sha256.Size)
		}
		var prk, out [sha256.Size]byte
		defer clear(prk[:])
		defer clear(out[:])
		x := hmac.New(sha256.New, salt)
		defer Wipe(x)
		x.Write(secret)
		x.Sum(prk[:0])
		e := hmac.New(sha256.New, prk[:])
		defer Wipe(e)
		e.Write([]byte(info))
		e.Write([]byte{1})
		e.Sum(out[:0])
		copy(dst, out[:])
	})
	return nil
}
