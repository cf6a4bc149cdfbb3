// Package names encrypts what a version-2 volume hides besides file
// contents: entry names, symlink targets and extended attributes
// (docs/FORMAT.md, "Names (version 2)"). It owns the encodings and the
// backing names kmsfs keeps beside them (kmsfs.dirid, kmsfs.long.*.name);
// it does no I/O.
//
// The primitive is AES-SIV (RFC 5297) from tink-go: deterministic, so
// that a name is looked up by encrypting it, and misuse resistant, so
// that equal names in one directory leak only their equality.
package names

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/tink-crypto/tink-go/v2/daead/subtle"
)

// KeySize is the size of a volume's names key.
const KeySize = subtle.AESSIVKeySize

// IDSize is the size of a directory ID.
const IDSize = 16

// nonceSize is the size of the random nonce of symlink targets and xattr
// values.
const nonceSize = 16

// sivSize is how much longer AES-SIV makes its plaintext.
const sivSize = 16

// Backing names of kmsfs's own files beside encrypted entries.
const (
	// DirIDName is the file holding a directory's ID.
	DirIDName = "kmsfs.dirid"
	// LongPrefix starts the backing name of an entry whose encoded name
	// is longer than MaxBackingName.
	LongPrefix = "kmsfs.long."
	// LongSuffix ends the file beside a long entry holding its encoded
	// name.
	LongSuffix = ".name"
)

// Limits of what can be stored.
const (
	// MaxName is the longest plaintext name (NAME_MAX).
	MaxName = 255
	// MaxBackingName is the longest backing name.
	MaxBackingName = 255
	// MaxTarget is the longest plaintext symlink target whose stored form
	// fits the backing filesystem's 4095 bytes.
	MaxTarget = 3039
	// MaxXattrValue is the longest plaintext xattr value whose stored
	// form fits the backing 64 KiB.
	MaxXattrValue = 65536 - nonceSize - sivSize
)

// Associated-data labels (docs/FORMAT.md).
const (
	labelName       = "kmsfs v2 name"
	labelSymlink    = "kmsfs v2 symlink"
	labelXattrName  = "kmsfs v2 xattr name"
	labelXattrValue = "kmsfs v2 xattr value"
)

// Errors of decoding; all wrap ErrUndecryptable except for length limits.
var (
	// ErrUndecryptable reports a stored name, target or attribute that
	// does not decrypt under this volume's key and context: damaged,
	// moved from another directory or attribute, or not written by kmsfs.
	ErrUndecryptable = errors.New("names: does not decrypt (damaged, moved, or not written by kmsfs)")
	// ErrTooLong reports a name or target longer than the format allows.
	ErrTooLong = errors.New("names: too long")
)

// b64 is strict: a name has exactly one backing spelling (the spare bits
// of the last character must be zero).
var b64 = base64.RawURLEncoding.Strict()

// Cipher encrypts names under one volume's names key. It is safe for
// concurrent use.
type Cipher struct {
	siv *subtle.AESSIV
}

// New returns a Cipher for the 64-byte names key. tink's AES-SIV keeps a
// reference to key (its CTR half), so key must stay unchanged and alive as
// long as the Cipher is used; kmsfs passes memory from a memguard buffer.
func New(key []byte) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("names: key is %d bytes, want %d", len(key), KeySize)
	}
	s, err := subtle.NewAESSIV(key)
	if err != nil {
		return nil, fmt.Errorf("names: %w", err)
	}
	return &Cipher{siv: s}, nil
}

func ad(label string, ctx ...[]byte) []byte {
	n := len(label) + 1
	for _, c := range ctx {
		n += len(c)
	}
	b := make([]byte, 0, n)
	b = append(b, label...)
	b = append(b, 0)
	for _, c := range ctx {
		b = append(b, c...)
	}
	return b
}

// checkName reports whether n may be an entry name.
func checkName(n string) error {
	switch {
	case n == "" || n == "." || n == "..":
		return fmt.Errorf("names: %q is not an entry name", n)
	case len(n) > MaxName:
		return fmt.Errorf("%w: name of %d bytes, at most %d", ErrTooLong, len(n), MaxName)
	case strings.ContainsAny(n, "/\x00"):
		return fmt.Errorf("names: name contains / or NUL")
	}
	return nil
}

// Entry is the backing form of one entry name.
type Entry struct {
	// Backing is the name of the backing entry.
	Backing string
	// Encoded is the encoded name E; it differs from Backing for long
	// names, whose E is stored in the file named Backing+LongSuffix.
	Encoded string
}

// Long reports whether the entry needs a LongSuffix file beside it.
func (e Entry) Long() bool { return e.Backing != e.Encoded }

// EncryptName returns the backing form of name in the directory dirID.
func (c *Cipher) EncryptName(dirID [IDSize]byte, name string) (Entry, error) {
	if err := checkName(name); err != nil {
		return Entry{}, err
	}
	ct, err := c.siv.EncryptDeterministically([]byte(name), ad(labelName, dirID[:]))
	if err != nil {
		return Entry{}, fmt.Errorf("names: %w", err)
	}
	e := b64.EncodeToString(ct)
	if len(e) <= MaxBackingName {
		return Entry{Backing: e, Encoded: e}, nil
	}
	return Entry{Backing: LongName(e), Encoded: e}, nil
}

// LongName is the backing name of an entry whose encoded name e is too
// long to be one.
func LongName(e string) string {
	h := sha256.Sum256([]byte(e))
	return LongPrefix + b64.EncodeToString(h[:])
}

// IsLong reports whether a backing name is that of a long entry.
func IsLong(backing string) bool {
	return strings.HasPrefix(backing, LongPrefix) && !strings.HasSuffix(backing, LongSuffix)
}

// DecryptName returns the plaintext name of the encoded name e (for a long
// entry, the content of its LongSuffix file) in the directory dirID.
// backing is the entry's backing name: a long entry's e must hash to it.
func (c *Cipher) DecryptName(dirID [IDSize]byte, backing, e string) (string, error) {
	if backing != e && (len(e) <= MaxBackingName || LongName(e) != backing) {
		// A long entry must hold an encoded name too long to be one
		// itself: every name has exactly one backing entry.
		return "", fmt.Errorf("%w: %s does not match the name stored beside it", ErrUndecryptable, backing)
	}
	ct, err := b64.DecodeString(e)
	if err != nil || len(ct) <= sivSize {
		return "", ErrUndecryptable
	}
	p, err := c.siv.DecryptDeterministically(ct, ad(labelName, dirID[:]))
	if err != nil {
		return "", ErrUndecryptable
	}
	name := string(p)
	if checkName(name) != nil {
		return "", ErrUndecryptable
	}
	return name, nil
}

// Internal reports whether a backing name in a directory of an
// encrypted-names volume is one of kmsfs's own files beside the entries
// (not counting the root's configuration and journal).
func Internal(backing string) bool {
	return backing == DirIDName || (strings.HasPrefix(backing, LongPrefix) && strings.HasSuffix(backing, LongSuffix))
}

// OnlyInternal reports whether the backing entries of a directory are
// all kmsfs's own (Internal): the directory is empty as seen through the
// mount.
func OnlyInternal(entries []string) bool {
	for _, e := range entries {
		if !Internal(e) {
			return false
		}
	}
	return true
}

func nonce() ([]byte, error) {
	n := make([]byte, nonceSize)
	if _, err := rand.Read(n); err != nil {
		return nil, fmt.Errorf("names: %w", err)
	}
	return n, nil
}

// EncryptTarget returns the stored form of a symlink target.
func (c *Cipher) EncryptTarget(target []byte) (string, error) {
	if len(target) > MaxTarget {
		return "", fmt.Errorf("%w: symlink target of %d bytes, at most %d", ErrTooLong, len(target), MaxTarget)
	}
	n, err := nonce()
	if err != nil {
		return "", err
	}
	ct, err := c.siv.EncryptDeterministically(target, ad(labelSymlink, n))
	if err != nil {
		return "", fmt.Errorf("names: %w", err)
	}
	return b64.EncodeToString(append(n, ct...)), nil
}

// DecryptTarget returns the target of a symlink from its stored form.
func (c *Cipher) DecryptTarget(stored []byte) ([]byte, error) {
	raw := make([]byte, b64.DecodedLen(len(stored)))
	k, err := b64.Decode(raw, stored)
	if err != nil || k < nonceSize+sivSize {
		return nil, ErrUndecryptable
	}
	raw = raw[:k]
	p, err := c.siv.DecryptDeterministically(raw[nonceSize:], ad(labelSymlink, raw[:nonceSize]))
	if err != nil {
		return nil, ErrUndecryptable
	}
	return p, nil
}

// Xattr namespaces whose attributes are encrypted.
var encryptedNS = []string{"user.", "trusted."}

// xattrNS returns the namespace prefix of an encrypted attribute name, or
// "" if attributes of its namespace are stored as they are.
func xattrNS(attr string) string {
	for _, ns := range encryptedNS {
		if strings.HasPrefix(attr, ns) {
			return ns
		}
	}
	return ""
}

// XattrEncrypted reports whether the attribute attr is stored encrypted
// (user. and trusted.) rather than as it is (security., system.: the
// kernel reads them).
func XattrEncrypted(attr string) bool { return xattrNS(attr) != "" }

// EncryptXattrName returns the backing name of the attribute attr, which
// must be one XattrEncrypted reports.
func (c *Cipher) EncryptXattrName(attr string) (string, error) {
	ns := xattrNS(attr)
	if ns == "" {
		return "", fmt.Errorf("names: attribute %q is not stored encrypted", attr)
	}
	ct, err := c.siv.EncryptDeterministically([]byte(attr), ad(labelXattrName))
	if err != nil {
		return "", fmt.Errorf("names: %w", err)
	}
	b := ns + "kmsfs." + b64.EncodeToString(ct)
	if len(b) > MaxBackingName {
		return "", fmt.Errorf("%w: attribute name of %d bytes", ErrTooLong, len(attr))
	}
	return b, nil
}

// DecryptXattrName returns the plaintext name of a backing attribute
// name in an encrypted namespace; a name kmsfs did not write, or one that
// fails to decrypt, is ErrUndecryptable.
func (c *Cipher) DecryptXattrName(backing string) (attr string, err error) {
	ns := xattrNS(backing)
	if ns == "" || !strings.HasPrefix(backing[len(ns):], "kmsfs.") {
		return "", ErrUndecryptable
	}
	ct, err := b64.DecodeString(backing[len(ns)+len("kmsfs."):])
	if err != nil || len(ct) <= sivSize {
		return "", ErrUndecryptable
	}
	p, err := c.siv.DecryptDeterministically(ct, ad(labelXattrName))
	if err != nil || xattrNS(string(p)) != ns {
		return "", ErrUndecryptable
	}
	return string(p), nil
}

// EncryptXattrValue returns the stored form of the value of attr.
func (c *Cipher) EncryptXattrValue(attr string, value []byte) ([]byte, error) {
	if len(value) > MaxXattrValue {
		return nil, fmt.Errorf("%w: attribute value of %d bytes, at most %d", ErrTooLong, len(value), MaxXattrValue)
	}
	n, err := nonce()
	if err != nil {
		return nil, err
	}
	ct, err := c.siv.EncryptDeterministically(value, ad(labelXattrValue, n, []byte(attr)))
	if err != nil {
		return nil, fmt.Errorf("names: %w", err)
	}
	return append(n, ct...), nil
}

// DecryptXattrValue returns the value of attr from its stored form.
func (c *Cipher) DecryptXattrValue(attr string, stored []byte) ([]byte, error) {
	if len(stored) < nonceSize+sivSize {
		return nil, ErrUndecryptable
	}
	p, err := c.siv.DecryptDeterministically(stored[nonceSize:], ad(labelXattrValue, stored[:nonceSize], []byte(attr)))
	if err != nil {
		return nil, ErrUndecryptable
	}
	return p, nil
}

// Overhead is how much longer a stored xattr value is than its
// plaintext.
const Overhead = nonceSize + sivSize
