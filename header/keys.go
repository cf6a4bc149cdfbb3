package header

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
)

// Purpose selects which key Derive produces from a data key.
type Purpose int

const (
	// ContentKey is the AES-256-GCM key that encrypts the file's blocks.
	ContentKey Purpose = iota
	// MACKey is the HMAC-SHA256 key of the header copies.
	MACKey
	// Commitment is the key commitment stored in each copy.
	Commitment
)

// info returns the HKDF info string of the purpose.
func (p Purpose) info() (string, error) {
	switch p {
	case ContentKey:
		return "kmsfs v1 content key", nil
	case MACKey:
		return "kmsfs v1 header mac", nil
	case Commitment:
		return "kmsfs v1 key commitment", nil
	}
	return "", fmt.Errorf("unknown purpose %d", int(p))
}

// String returns the name of the purpose.
func (p Purpose) String() string {
	switch p {
	case ContentKey:
		return "content key"
	case MACKey:
		return "mac key"
	case Commitment:
		return "commitment"
	}
	return fmt.Sprintf("Purpose(%d)", int(p))
}

// Derive writes the KeySize-byte key for purpose p, derived from the data
// key and the file ID with HKDF-SHA256 (docs/FORMAT.md "Keys"), into dst.
// dst and dataKey must be KeySize bytes. The intermediate copies Derive
// makes on the heap are wiped before it returns.
func Derive(dst, dataKey []byte, fileID [FileIDSize]byte, p Purpose) error {
	if len(dst) != KeySize {
		return fmt.Errorf("header: derive %v: destination is %d bytes, want %d", p, len(dst), KeySize)
	}
	if len(dataKey) != KeySize {
		return fmt.Errorf("header: derive %v: data key is %d bytes, want %d", p, len(dataKey), KeySize)
	}
	info, err := p.info()
	if err != nil {
		return fmt.Errorf("header: derive: %w", err)
	}
	prk, err := hkdf.Extract(sha256.New, dataKey, fileID[:])
	if err != nil {
		return fmt.Errorf("header: derive %v: extract: %w", p, err)
	}
	defer clear(prk)
	out, err := hkdf.Expand(sha256.New, prk, info, KeySize)
	if err != nil {
		return fmt.Errorf("header: derive %v: expand: %w", p, err)
	}
	copy(dst, out)
	clear(out)
	return nil
}

// copyMAC computes HMAC(MK, preamble || copy[0:MACOffset]) into mac.
func copyMAC(mac *[32]byte, p Preamble, c *Copy, dataKey []byte) error {
	var buf [CopySize]byte
	if err := c.MarshalTo(buf[:]); err != nil {
		return err
	}
	var mk [KeySize]byte
	defer clear(mk[:])
	if err := Derive(mk[:], dataKey, p.FileID, MACKey); err != nil {
		return err
	}
	h := hmac.New(sha256.New, mk[:])
	pre := p.Marshal()
	h.Write(pre[:])
	h.Write(buf[:MACOffset])
	h.Sum(mac[:0])
	return nil
}

// SealCopy sets c.Commitment and c.MAC for the data key: the commitment
// derived from dataKey and p.FileID, and the MAC over the preamble and the
// first MACOffset bytes of the marshalled copy.
func SealCopy(p Preamble, c *Copy, dataKey []byte) error {
	if err := Derive(c.Commitment[:], dataKey, p.FileID, Commitment); err != nil {
		return fmt.Errorf("header: seal copy: %w", err)
	}
	if err := copyMAC(&c.MAC, p, c, dataKey); err != nil {
		return fmt.Errorf("header: seal copy: %w", err)
	}
	return nil
}

// VerifyCopy reports whether c is valid under dataKey. It returns an error
// wrapping ErrWrongKey if the commitment does not match (the key is not the
// one the file was written with) and ErrTampered if the commitment matches
// but the MAC does not. Both comparisons are constant time.
func VerifyCopy(p Preamble, c *Copy, dataKey []byte) error {
	var want [32]byte
	if err := Derive(want[:], dataKey, p.FileID, Commitment); err != nil {
		return fmt.Errorf("header: verify copy: %w", err)
	}
	if subtle.ConstantTimeCompare(want[:], c.Commitment[:]) != 1 {
		return fmt.Errorf("header: verify copy (sequence %d): %w", c.Seq, ErrWrongKey)
	}
	if err := copyMAC(&want, p, c, dataKey); err != nil {
		return fmt.Errorf("header: verify copy: %w", err)
	}
	if !hmac.Equal(want[:], c.MAC[:]) {
		return fmt.Errorf("header: verify copy (sequence %d): %w", c.Seq, ErrTampered)
	}
	return nil
}
