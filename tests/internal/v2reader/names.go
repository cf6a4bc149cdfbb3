package v2reader

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// docs/FORMAT.md, "Names (version 2)".
const (
	// NamesKeySize is the size of a volume's names key NK.
	NamesKeySize = 64
	// DirIDSize is the size of a directory ID.
	DirIDSize = 16
	// NonceSize is the size of the random N of symlink targets and xattr
	// values.
	NonceSize = 16
	// DirIDFile is the file holding a directory's ID.
	DirIDFile = "kmsfs.dirid"
	// LongPrefix starts the backing name of a long entry.
	LongPrefix = "kmsfs.long."
	// LongSuffix ends the file beside a long entry that holds its E.
	LongSuffix = ".name"
	// MaxBackingName is the longest backing name.
	MaxBackingName = 255
)

// Associated-data labels (the table of "The primitive").
const (
	labelName       = "kmsfs v2 name"
	labelSymlink    = "kmsfs v2 symlink"
	labelXattrName  = "kmsfs v2 xattr name"
	labelXattrValue = "kmsfs v2 xattr value"
)

// ErrRefused reports a stored name, long name, target or attribute that
// a reader must refuse: it does not decode or decrypt, it is not in the
// form kmsfs writes, or it decrypts to something that cannot be one.
var ErrRefused = errors.New("v2reader: refused")

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// b64 is base64url without padding (RFC 4648 5). Strict: the unused
// low bits of the last character must be zero, so that every byte string
// has exactly one encoding and a reader accepts only what b64 produces.
var b64 = base64.RawURLEncoding.Strict()

// decodeB64 decodes s, accepting only the one encoding b64 gives.
func decodeB64(s string) ([]byte, error) {
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if b64.EncodeToString(b) != s { // belt and braces: also refuses "\n"
		return nil, errors.New("not the canonical encoding")
	}
	return b, nil
}

// ad is an associated-data string: label, one zero byte, then context.
func ad(label string, ctx ...[]byte) []byte {
	b := append([]byte(label), 0)
	for _, c := range ctx {
		b = append(b, c...)
	}
	return b
}

// Names is the names cipher of one volume.
type Names struct {
	siv *SIV
}

// NewNames returns the names cipher for the 64-byte names key NK.
func NewNames(nk []byte) (*Names, error) {
	if len(nk) != NamesKeySize {
		return nil, fmt.Errorf("v2reader: names key of %d bytes, want %d", len(nk), NamesKeySize)
	}
	s, err := NewSIV(nk)
	if err != nil {
		return nil, err
	}
	return &Names{siv: s}, nil
}

// ValidName reports whether n may be an entry name: 1 to 255 bytes, no
// "/" or NUL, not "." or "..".
func ValidName(n []byte) bool {
	s := string(n)
	return len(n) >= 1 && len(n) <= 255 && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

// LongBacking is the backing name of a long entry whose encoded name is e.
func LongBacking(e string) string {
	h := sha256.Sum256([]byte(e))
	return LongPrefix + b64.EncodeToString(h[:])
}

// EncryptName returns the backing name of name in the directory dirID
// and its encoded name E (equal to the backing name unless the entry is
// long: then E is the content of backing+LongSuffix). It does not check
// that name is valid, so that tests can make entries kmsfs never would.
func (n *Names) EncryptName(dirID []byte, name []byte) (backing, encoded string) {
	e := b64.EncodeToString(n.siv.Seal(name, ad(labelName, dirID)))
	if len(e) <= MaxBackingName {
		return e, e
	}
	return LongBacking(e), e
}

// IsLongBacking reports whether a backing name is that of a long entry
// (and not the file holding its encoded name).
func IsLongBacking(b string) bool {
	return strings.HasPrefix(b, LongPrefix) && !strings.HasSuffix(b, LongSuffix)
}

// DecryptName returns the plaintext name of the backing entry named
// backing in the directory dirID. For a long entry, long is the content
// of backing+LongSuffix (ignored otherwise).
func (n *Names) DecryptName(dirID []byte, backing string, long []byte) ([]byte, error) {
	e := backing
	if IsLongBacking(backing) {
		e = string(long)
		if LongBacking(e) != backing {
			return nil, refused("%s: the SHA-256 of its %s file does not match its name", backing, LongSuffix)
		}
		// The long form is only for an E that cannot be a name itself.
		if len(e) <= MaxBackingName {
			return nil, refused("%s: long entry for an encoded name of %d characters", backing, len(e))
		}
	}
	ct, err := decodeB64(e)
	if err != nil {
		return nil, refused("%q is not base64url: %v", e, err)
	}
	p, err := n.siv.Open(ct, ad(labelName, dirID))
	if err != nil {
		return nil, refused("%s does not decrypt in this directory", backing)
	}
	if !ValidName(p) {
		return nil, refused("%s decrypts to %q, not an entry name", backing, p)
	}
	return p, nil
}

// EncryptTarget returns the stored form of the symlink target t with the
// nonce N.
func (n *Names) EncryptTarget(nonce, t []byte) string {
	return b64.EncodeToString(append(append([]byte(nil), nonce...), n.siv.Seal(t, ad(labelSymlink, nonce))...))
}

// DecryptTarget returns the target of a symlink whose stored target is
// stored.
func (n *Names) DecryptTarget(stored string) ([]byte, error) {
	raw, err := decodeB64(stored)
	if err != nil {
		return nil, refused("stored target is not base64url: %v", err)
	}
	if len(raw) < NonceSize+16 {
		return nil, refused("stored target of %d bytes", len(raw))
	}
	nonce := raw[:NonceSize]
	p, err := n.siv.Open(raw[NonceSize:], ad(labelSymlink, nonce))
	if err != nil {
		return nil, refused("symlink target does not decrypt")
	}
	return p, nil
}

// XattrNamespace returns the namespace prefix ("user." or "trusted.") of
// an attribute name that is stored encrypted, or "" for one stored as it
// is.
func XattrNamespace(a string) string {
	for _, ns := range []string{"user.", "trusted."} {
		if strings.HasPrefix(a, ns) {
			return ns
		}
	}
	return ""
}

// EncryptXattrName returns the backing name of the attribute a (in the
// user. or trusted. namespace).
func (n *Names) EncryptXattrName(a string) (string, error) {
	ns := XattrNamespace(a)
	if ns == "" {
		return "", fmt.Errorf("v2reader: attribute %q is not stored encrypted", a)
	}
	return ns + "kmsfs." + b64.EncodeToString(n.siv.Seal([]byte(a), ad(labelXattrName))), nil
}

// DecryptXattrName returns the attribute name A of a backing attribute
// name b in the user. or trusted. namespace. A must be in the namespace b
// is stored in (ns is A's own prefix).
func (n *Names) DecryptXattrName(b string) (string, error) {
	ns := XattrNamespace(b)
	if ns == "" {
		return "", fmt.Errorf("v2reader: attribute %q is not stored encrypted", b)
	}
	enc, ok := strings.CutPrefix(b[len(ns):], "kmsfs.")
	if !ok {
		return "", refused("backing attribute %q has no kmsfs. after its namespace", b)
	}
	ct, err := decodeB64(enc)
	if err != nil {
		return "", refused("backing attribute %q is not base64url: %v", b, err)
	}
	p, err := n.siv.Open(ct, ad(labelXattrName))
	if err != nil {
		return "", refused("backing attribute %q does not decrypt", b)
	}
	if XattrNamespace(string(p)) != ns {
		return "", refused("backing attribute %q in %s decrypts to %q, of another namespace", b, ns, p)
	}
	return string(p), nil
}

// EncryptXattrValue returns the stored value of the attribute a with the
// nonce N.
func (n *Names) EncryptXattrValue(nonce []byte, a string, v []byte) []byte {
	return append(append([]byte(nil), nonce...), n.siv.Seal(v, ad(labelXattrValue, nonce, []byte(a)))...)
}

// DecryptXattrValue returns the value of the attribute a from its stored
// form.
func (n *Names) DecryptXattrValue(a string, stored []byte) ([]byte, error) {
	if len(stored) < NonceSize+16 {
		return nil, refused("stored value of %d bytes", len(stored))
	}
	nonce := stored[:NonceSize]
	p, err := n.siv.Open(stored[NonceSize:], ad(labelXattrValue, nonce, []byte(a)))
	if err != nil {
		return nil, refused("value of %q does not decrypt", a)
	}
	return p, nil
}
