package header

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"sync"

	"github.com/kmsfs/kmsfs/keyring/secmem"
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

// infos are the HKDF info strings of the purposes, by Purpose.
var infos = [...][]byte{
	ContentKey: []byte("kmsfs v1 content key"),
	MACKey:     []byte("kmsfs v1 header mac"),
	Commitment: []byte("kmsfs v1 key commitment"),
}

// info returns the HKDF info string of the purpose.
func (p Purpose) info() ([]byte, error) {
	if p < 0 || int(p) >= len(infos) {
		return nil, fmt.Errorf("unknown purpose %d", int(p))
	}
	return infos[p], nil
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
// dst and dataKey must be KeySize bytes. Every intermediate value (the
// PRK, the HMAC states, the output buffer) is wiped before it returns.
func Derive(dst, dataKey []byte, fileID [FileIDSize]byte, p Purpose) error {
	err := withDeriver(dataKey, fileID, func(d *deriver) error { return d.derive(dst, p) })
	if err != nil {
		return fmt.Errorf("header: derive %v: %w", p, err)
	}
	return nil
}

// deriver derives several of one file's keys from a single HKDF-Extract.
// Every key is KeySize = 32 bytes, one SHA-256 output, so its
// HKDF-Expand is the single HMAC(PRK, info || 0x01) (RFC 5869, section
// 2.3): the keys share the PRK. Each HMAC runs on the stack
// (secmem.HMACSHA256), cleared when it returns.
type deriver struct {
	prk [sha256.Size]byte
}

// withDeriver calls f with the deriver of dataKey and fileID, under
// secmem.Do, and wipes the PRK when f returns.
func withDeriver(dataKey []byte, fileID [FileIDSize]byte, f func(d *deriver) error) error {
	if len(dataKey) != KeySize {
		return fmt.Errorf("data key is %d bytes, want %d", len(dataKey), KeySize)
	}
	var err error
	secmem.Do(func() {
		// HKDF-Extract(salt = file ID, IKM = data key) = HMAC(salt, IKM),
		// on the stack (secmem.HMACSHA256 allocates nothing).
		var d deriver
		defer clear(d.prk[:])
		if err = secmem.HMACSHA256(&d.prk, fileID[:], dataKey); err != nil {
			return
		}
		err = f(&d)
	})
	return err
}

// expandSuffix ends the one-block HKDF-Expand input: the block counter.
var expandSuffix = []byte{1}

// derive writes the key for purpose p into dst, which must be KeySize
// bytes.
func (d *deriver) derive(dst []byte, p Purpose) error {
	if len(dst) != KeySize {
		return fmt.Errorf("%v: destination is %d bytes, want %d", p, len(dst), KeySize)
	}
	info, err := p.info()
	if err != nil {
		return err
	}
	var out [sha256.Size]byte
	defer clear(out[:])
	if err := secmem.HMACSHA256(&out, d.prk[:], info, expandSuffix); err != nil {
		return err
	}
	copy(dst, out[:])
	return nil
}

// copyBufs recycles the buffers copyMAC marshals copies into (a reader
// MACs a copy on every open).
var copyBufs = sync.Pool{New: func() any { return new([CopySize]byte) }}

// copyMAC computes HMAC(MK, preamble || copy[0:C-32]) into mac, C the
// preamble's copy size (CopySize in version 1, so the MAC offset is
// MACOffset).
func copyMAC(mac *[32]byte, p Preamble, c *Copy, d *deriver) error {
	if err := p.checkCopyLen(); err != nil {
		return fmt.Errorf("preamble: %w", err)
	}
	n := p.CopyLen()
	buf := copyBufs.Get().(*[CopySize]byte)
	defer copyBufs.Put(buf)
	if err := c.MarshalTo(buf[:n]); err != nil {
		return err
	}
	var mk [KeySize]byte
	defer clear(mk[:])
	if err := d.derive(mk[:], MACKey); err != nil {
		return err
	}
	pre := p.Marshal()
	return secmem.HMACSHA256(mac, mk[:], pre[:], buf[:n-macSize])
}

// SealCopy sets c.Commitment and c.MAC for the data key: the commitment
// derived from dataKey and p.FileID, and the MAC over the preamble and the
// marshalled copy (p.CopyLen bytes) up to its MAC offset, p.MACOffset().
func SealCopy(p Preamble, c *Copy, dataKey []byte) error {
	err := withDeriver(dataKey, p.FileID, func(d *deriver) error { return sealCopy(p, c, d) })
	if err != nil {
		return fmt.Errorf("header: seal copy: %w", err)
	}
	return nil
}

func sealCopy(p Preamble, c *Copy, d *deriver) error {
	if err := d.derive(c.Commitment[:], Commitment); err != nil {
		return fmt.Errorf("header: seal copy: %w", err)
	}
	if err := copyMAC(&c.MAC, p, c, d); err != nil {
		return fmt.Errorf("header: seal copy: %w", err)
	}
	return nil
}

// VerifyCopy reports whether c is valid under dataKey. It returns an error
// wrapping ErrWrongKey if the commitment does not match (the key is not the
// one the file was written with) and ErrTampered if the commitment matches
// but the MAC does not. Both comparisons are constant time.
func VerifyCopy(p Preamble, c *Copy, dataKey []byte) error {
	return UnlockCopy(p, c, dataKey, nil)
}

// UnlockCopy verifies c under dataKey as VerifyCopy does and, if it is
// valid and contentKey is not nil, writes the file's content key (Derive
// with ContentKey) into contentKey, which must then be KeySize bytes. It
// spends one key derivation where VerifyCopy and Derive would spend two:
// a reader calls it on every open.
func UnlockCopy(p Preamble, c *Copy, dataKey, contentKey []byte) error {
	return withDeriver(dataKey, p.FileID, func(d *deriver) error {
		return unlockCopy(p, c, d, contentKey)
	})
}

func unlockCopy(p Preamble, c *Copy, d *deriver, contentKey []byte) error {
	var want [32]byte
	if err := d.derive(want[:], Commitment); err != nil {
		return fmt.Errorf("header: verify copy: %w", err)
	}
	if subtle.ConstantTimeCompare(want[:], c.Commitment[:]) != 1 {
		return fmt.Errorf("header: verify copy (sequence %d): %w", c.Seq, ErrWrongKey)
	}
	if err := copyMAC(&want, p, c, d); err != nil {
		return fmt.Errorf("header: verify copy: %w", err)
	}
	if !hmac.Equal(want[:], c.MAC[:]) {
		return fmt.Errorf("header: verify copy (sequence %d): %w", c.Seq, ErrTampered)
	}
	if contentKey != nil {
		if err := d.derive(contentKey, ContentKey); err != nil {
			return fmt.Errorf("header: unlock copy: %w", err)
		}
	}
	return nil
}
