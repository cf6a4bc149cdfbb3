package local

import (
	"bytes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/awnumar/memguard"
	"golang.org/x/crypto/scrypt"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/secmem"
)

// Key file constants, from docs/FORMAT.md ("Local keyring key file").
const (
	// MaxKeyFileSize is the largest key file accepted, in bytes.
	MaxKeyFileSize = 64 << 10
	// KeyIDSize is the size of a key ID in bytes (16 hex digits in the file).
	KeyIDSize = 8
	// ScryptN, ScryptR and ScryptP are the scrypt parameters Create uses.
	ScryptN, ScryptR, ScryptP = 32768, 8, 1

	keyFileVersion = 1
	masterKeySize  = 32
	saltSize       = 16
	nonceSize      = 12
	tagSize        = 16
	sealedSize     = nonceSize + masterKeySize + tagSize

	kdfNone   = "none"
	kdfScrypt = "scrypt"

	keyIDLabel = "kmsfs local key id"
	sealAD     = "kmsfs local key v1"

	// Bounds on scrypt parameters read from a file, so a hostile file
	// cannot make kmsfs allocate more than 1 GiB or spin for hours.
	maxScryptN  = 1 << 20
	maxScryptR  = 32
	maxScryptP  = 16
	maxScryptNR = 1 << 23 // 128*N*r bytes of memory = 1 GiB
)

// ErrKeyFile is wrapped by every error about a malformed key file.
var ErrKeyFile = errors.New("malformed local key file")

// b64 is the base64 of the key file: the standard alphabet with padding
// (RFC 4648 section 4), rejecting non-zero trailing bits.
var b64 = base64.StdEncoding.Strict()

// keyFile is a parsed key file. Exactly one of key (kdf "none") and
// sealed (kdf "scrypt") is set. key is secret: wipe it after use.
type keyFile struct {
	keyID   [KeyIDSize]byte
	kdf     string
	key     []byte
	n, r, p int
	salt    []byte
	sealed  []byte
}

// wipe clears the secret fields of f.
func (f *keyFile) wipe() {
	memguard.WipeBytes(f.key)
}

// parseKeyFile parses a key file. It accepts JSON with exactly the fields
// of docs/FORMAT.md, each once, with no escapes in strings, and checks
// every value's form and length; it does not check key_id against the key
// (see verifyKeyID).
//
// It does not use encoding/json to decode: that would copy the base64 text
// of the key into strings the program cannot wipe. The input is checked
// with json.Valid (which copies nothing) and then walked in place.
func parseKeyFile(data []byte) (*keyFile, error) {
	if len(data) > MaxKeyFileSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrKeyFile, len(data), MaxKeyFileSize)
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("%w: not valid JSON", ErrKeyFile)
	}
	f := &keyFile{}
	ok := false
	defer func() {
		if !ok {
			f.wipe()
		}
	}()
	s := &scanner{data: data}
	var version, keyID, kdf, key, scr, sealed bool
	err := s.object(func(name string) error {
		switch name {
		case "kmsfs_local_key":
			v, err := s.uint()
			if err != nil {
				return err
			}
			if v != keyFileVersion {
				return fmt.Errorf("unsupported key file version %d (this kmsfs reads version %d)", v, keyFileVersion)
			}
			version = true
		case "key_id":
			v, err := s.str()
			if err != nil {
				return err
			}
			if len(v) != 2*KeyIDSize || !isLowerHex(v) {
				return fmt.Errorf("key_id %q is not %d lowercase hex digits", v, 2*KeyIDSize)
			}
			hex.Decode(f.keyID[:], v)
			keyID = true
		case "kdf":
			v, err := s.str()
			if err != nil {
				return err
			}
			switch string(v) {
			case kdfNone, kdfScrypt:
				f.kdf = string(v)
			default:
				return fmt.Errorf("unknown kdf %q (want %q or %q)", v, kdfNone, kdfScrypt)
			}
			kdf = true
		case "key":
			v, err := s.str()
			if err != nil {
				return err
			}
			if f.key, err = decodeB64(v, masterKeySize); err != nil {
				return fmt.Errorf("key: %v", err)
			}
			key = true
		case "scrypt":
			if err := s.scryptParams(f); err != nil {
				return fmt.Errorf("scrypt: %v", err)
			}
			scr = true
		case "sealed":
			v, err := s.str()
			if err != nil {
				return err
			}
			if f.sealed, err = decodeB64(v, sealedSize); err != nil {
				return fmt.Errorf("sealed: %v", err)
			}
			sealed = true
		default:
			return fmt.Errorf("unknown field %q", name)
		}
		return nil
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	switch {
	case !version:
		err = errors.New(`missing field "kmsfs_local_key"`)
	case !keyID:
		err = errors.New(`missing field "key_id"`)
	case !kdf:
		err = errors.New(`missing field "kdf"`)
	case f.kdf == kdfNone && !key:
		err = errors.New(`kdf "none" without field "key"`)
	case f.kdf == kdfNone && (scr || sealed):
		err = errors.New(`kdf "none" with field "scrypt" or "sealed"`)
	case f.kdf == kdfScrypt && (!scr || !sealed):
		err = errors.New(`kdf "scrypt" needs fields "scrypt" and "sealed"`)
	case f.kdf == kdfScrypt && key:
		err = errors.New(`kdf "scrypt" with a clear "key"`)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	ok = true
	return f, nil
}

// scryptParams parses the "scrypt" object into f.
func (s *scanner) scryptParams(f *keyFile) error {
	var n, r, p, salt bool
	err := s.object(func(name string) error {
		var err error
		switch name {
		case "n", "r", "p":
			var v uint64
			if v, err = s.uint(); err != nil {
				return err
			}
			// The bounds checks below keep v small; cap it first so the
			// conversion to int cannot wrap.
			v = min(v, maxScryptN+1)
			switch name {
			case "n":
				f.n, n = int(v), true
			case "r":
				f.r, r = int(v), true
			case "p":
				f.p, p = int(v), true
			}
		case "salt":
			var v []byte
			if v, err = s.str(); err != nil {
				return err
			}
			if f.salt, err = decodeB64(v, saltSize); err != nil {
				return fmt.Errorf("salt: %v", err)
			}
			salt = true
		default:
			return fmt.Errorf("unknown field %q", name)
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case !n || !r || !p || !salt:
		return errors.New(`needs fields "n", "r", "p" and "salt"`)
	case f.n < 2 || f.n > maxScryptN || f.n&(f.n-1) != 0:
		return fmt.Errorf("n = %d, want a power of two from 2 to %d", f.n, maxScryptN)
	case f.r < 1 || f.r > maxScryptR:
		return fmt.Errorf("r = %d, want 1 to %d", f.r, maxScryptR)
	case f.p < 1 || f.p > maxScryptP:
		return fmt.Errorf("p = %d, want 1 to %d", f.p, maxScryptP)
	case f.n*f.r > maxScryptNR:
		return fmt.Errorf("n*r = %d needs more than 1 GiB, limit %d", f.n*f.r, maxScryptNR)
	}
	return nil
}

// decodeB64 decodes src, which must hold exactly size bytes. The result
// may be secret: the caller wipes it.
func decodeB64(src []byte, size int) ([]byte, error) {
	if len(src) != b64.EncodedLen(size) {
		return nil, fmt.Errorf("%d base64 characters, want %d (%d bytes)", len(src), b64.EncodedLen(size), size)
	}
	dst := make([]byte, b64.DecodedLen(len(src)))
	n, err := b64.Decode(dst, src)
	if err != nil || n != size {
		memguard.WipeBytes(dst)
		return nil, fmt.Errorf("bad base64 (want %d bytes, standard alphabet, padded)", size)
	}
	return dst[:n:n], nil
}

func isLowerHex(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// scanner walks a JSON text already checked by json.Valid, accepting the
// subset key files use: objects, strings without escapes, and unsigned
// integers without fraction or exponent.
type scanner struct {
	data []byte
	off  int
}

func (s *scanner) ws() {
	for s.off < len(s.data) {
		switch s.data[s.off] {
		case ' ', '\t', '\n', '\r':
			s.off++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.off >= len(s.data) {
		return 0
	}
	return s.data[s.off]
}

func (s *scanner) expect(c byte) error {
	if got := s.peek(); got != c {
		return fmt.Errorf("offset %d: got %s, want %q", s.off, describe(got), c)
	}
	s.off++
	return nil
}

func describe(c byte) string {
	if c == 0 {
		return "end of file"
	}
	return strconv.QuoteRune(rune(c))
}

// end checks that only white space is left.
func (s *scanner) end() error {
	if c := s.peek(); c != 0 {
		return fmt.Errorf("offset %d: trailing data", s.off)
	}
	return nil
}

// str returns the bytes of a string (a subslice of the input).
func (s *scanner) str() ([]byte, error) {
	if err := s.expect('"'); err != nil {
		return nil, err
	}
	start := s.off
	i := bytes.IndexByte(s.data[start:], '"')
	if i < 0 {
		return nil, fmt.Errorf("offset %d: unterminated string", start)
	}
	v := s.data[start : start+i]
	if bytes.IndexByte(v, '\\') >= 0 {
		return nil, fmt.Errorf("offset %d: escape in string (key files use none)", start)
	}
	s.off = start + i + 1
	return v, nil
}

// uint returns an unsigned decimal integer of at most 9 digits.
func (s *scanner) uint() (uint64, error) {
	s.ws()
	start := s.off
	for s.off < len(s.data) && s.data[s.off] >= '0' && s.data[s.off] <= '9' {
		s.off++
	}
	digits := s.data[start:s.off]
	if len(digits) == 0 || len(digits) > 9 {
		return 0, fmt.Errorf("offset %d: want an unsigned integer of 1 to 9 digits", start)
	}
	if s.off < len(s.data) {
		switch s.data[s.off] {
		case '.', 'e', 'E':
			return 0, fmt.Errorf("offset %d: want an integer", start)
		}
	}
	v, _ := strconv.ParseUint(string(digits), 10, 64)
	return v, nil
}

// object walks an object, calling member for each field name with the
// scanner positioned at its value; member must consume the value. Each
// name may appear once.
func (s *scanner) object(member func(name string) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	seen := map[string]bool{}
	if s.peek() == '}' {
		s.off++
		return nil
	}
	for {
		name, err := s.str()
		if err != nil {
			return err
		}
		if seen[string(name)] {
			return fmt.Errorf("field %q twice", name)
		}
		seen[string(name)] = true
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(string(name)); err != nil {
			return err
		}
		switch c := s.peek(); c {
		case ',':
			s.off++
		case '}':
			s.off++
			return nil
		default:
			return fmt.Errorf("offset %d: got %s, want ',' or '}'", s.off, describe(c))
		}
	}
}

// keyIDOf returns the key ID of a master key: the first 8 bytes of
// HMAC-SHA256(master key, "kmsfs local key id").
func keyIDOf(master []byte) [KeyIDSize]byte {
	m := hmac.New(sha256.New, master)
	defer secmem.Wipe(m)
	m.Write([]byte(keyIDLabel))
	sum := m.Sum(nil)
	var id [KeyIDSize]byte
	copy(id[:], sum)
	return id
}

// newSealAEAD returns AES-256-GCM under a passphrase-derived KEK; the
// caller wipes it (secmem.Wipe) after its one seal or unseal.
func newSealAEAD(kek []byte) (cipher.AEAD, error) {
	return secmem.NewAESGCM(kek, false)
}

// deriveKEK returns scrypt(passphrase, salt, n, r, p, 32). The caller
// wipes the result.
func deriveKEK(passphrase, salt []byte, n, r, p int) ([]byte, error) {
	kek, err := scrypt.Key(passphrase, salt, n, r, p, masterKeySize)
	if err != nil {
		return nil, fmt.Errorf("scrypt: %w", err)
	}
	return kek, nil
}

// unseal opens f.sealed with the passphrase into a new key.
func unseal(f *keyFile, passphrase []byte) (*keyring.Key, error) {
	kek, err := deriveKEK(passphrase, f.salt, f.n, f.r, f.p)
	if err != nil {
		return nil, err
	}
	defer memguard.WipeBytes(kek)
	aead, err := newSealAEAD(kek)
	if err != nil {
		return nil, err
	}
	defer secmem.Wipe(aead)
	master, err := keyring.NewKey()
	if err != nil {
		return nil, err
	}
	// Open decrypts straight into the locked key: its slice has exactly
	// the capacity of the plaintext.
	if _, err := aead.Open(master.Bytes()[:0], f.sealed[:nonceSize], f.sealed[nonceSize:], []byte(sealAD)); err != nil {
		master.Destroy()
		return nil, errWrongPassphrase
	}
	return master, nil
}

var errWrongPassphrase = errors.New("wrong passphrase")

// marshalKeyFile returns the key file for master, sealed under passphrase
// if it is not empty. The result holds the master key (clear or sealed):
// the caller wipes it.
func marshalKeyFile(master *keyring.Key, passphrase []byte) ([]byte, error) {
	id := keyIDOf(master.Bytes())
	// Room for the whole file, so append never leaves a stale copy of the
	// key behind in a discarded array.
	out := make([]byte, 0, 512)
	out = append(out, `{"kmsfs_local_key":1,"key_id":"`...)
	out = hex.AppendEncode(out, id[:])
	if len(passphrase) == 0 {
		out = append(out, `","kdf":"none","key":"`...)
		out = b64.AppendEncode(out, master.Bytes())
		out = append(out, "\"}\n"...)
		return out, nil
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("reading random salt: %w", err)
	}
	kek, err := deriveKEK(passphrase, salt, ScryptN, ScryptR, ScryptP)
	if err != nil {
		return nil, err
	}
	defer memguard.WipeBytes(kek)
	aead, err := newSealAEAD(kek)
	if err != nil {
		return nil, err
	}
	defer secmem.Wipe(aead)
	sealed := make([]byte, nonceSize, sealedSize)
	if _, err := rand.Read(sealed); err != nil {
		return nil, fmt.Errorf("reading random nonce: %w", err)
	}
	sealed = aead.Seal(sealed, sealed, master.Bytes(), []byte(sealAD))
	out = append(out, `","kdf":"scrypt","scrypt":{"n":`...)
	out = strconv.AppendInt(out, ScryptN, 10)
	out = append(out, `,"r":`...)
	out = strconv.AppendInt(out, ScryptR, 10)
	out = append(out, `,"p":`...)
	out = strconv.AppendInt(out, ScryptP, 10)
	out = append(out, `,"salt":"`...)
	out = b64.AppendEncode(out, salt)
	out = append(out, `"},"sealed":"`...)
	out = b64.AppendEncode(out, sealed)
	out = append(out, "\"}\n"...)
	return out, nil
}
