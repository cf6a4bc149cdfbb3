package volume

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/awnumar/memguard"

	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// SlotKeySize is the size of a volume's slot key (docs/FORMAT.md,
// "Public-key slots").
const SlotKeySize = 32

// slotTagSize is the size of the tag after a public-key slot's
// encryption.
const slotTagSize = sha256.Size

// ErrNoSlotKey means a public-key slot met a volume without a slot key.
var ErrNoSlotKey = errors.New("a public-key slot, but the volume has no slot key to authenticate it")

// errSlotTag means a public-key slot's tag does not verify: it was not
// made by a writer of this volume (whoever holds a public key can encrypt
// under it), or it was altered.
var errSlotTag = errors.New("public-key slot not authentic (its tag does not verify under the volume's slot key)")

// slotTag computes T of docs/FORMAT.md, "Public-key slots".
func slotTag(sk []byte, uri string, encCtx, e []byte) []byte {
	m := hmac.New(sha256.New, sk)
	m.Write([]byte("kmsfs slot tag v1\x00"))
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], uint16(len(uri)))
	m.Write(n[:])
	m.Write([]byte(uri))
	binary.BigEndian.PutUint16(n[:], uint16(len(encCtx)))
	m.Write(n[:])
	m.Write(encCtx)
	m.Write(e)
	return m.Sum(nil)
}

// splitTag splits the stored wrapped key of a public-key slot into its
// encryption E and tag T; ok is false if it is too short to hold both.
func splitTag(s header.Slot) (e, t []byte, ok bool) {
	n := len(s.Wrapped) - slotTagSize
	if n <= 0 {
		return nil, nil, false
	}
	return s.Wrapped[:n], s.Wrapped[n:], true
}

// tagSlot returns the stored wrapped key of a slot of key uri: e itself
// for a symmetric key, e and its tag for a public-key one.
func (v *Volume) tagSlot(uri string, encCtx, e []byte) ([]byte, error) {
	if !pubkey.IsURI(uri) {
		return e, nil
	}
	v.cfgMu.RLock()
	sk := v.slotKey
	v.cfgMu.RUnlock()
	if sk == nil {
		return nil, fmt.Errorf("wrapping under %s: %w", keyring.RedactURI(uri), ErrNoSlotKey)
	}
	return append(e[:len(e):len(e)], slotTag(sk.Bytes(), uri, encCtx, e)...), nil
}

// slotCiphertext returns the encryption E of a public-key slot after
// checking its tag, or the wrapped key of a symmetric one. With defer
// set (the configuration being read, whose slot key is not known yet) the
// tag is split off unchecked; checkConfigSlot checks it later.
func (v *Volume) slotCiphertext(s header.Slot, deferTag bool) ([]byte, error) {
	if !pubkey.IsURI(s.URI) {
		return s.Wrapped, nil
	}
	e, t, ok := splitTag(s)
	if !ok {
		return nil, fmt.Errorf("%s: %w: %w", keyring.RedactURI(s.URI), keyring.ErrUnwrap, errSlotTag)
	}
	v.cfgMu.RLock()
	sk := v.slotKey
	v.cfgMu.RUnlock()
	switch {
	case sk == nil && deferTag:
		return e, nil
	case sk == nil:
		return nil, fmt.Errorf("%s: %w", keyring.RedactURI(s.URI), ErrNoSlotKey)
	case !hmac.Equal(t, slotTag(sk.Bytes(), s.URI, s.Context, e)):
		return nil, fmt.Errorf("%s: %w: %w", keyring.RedactURI(s.URI), keyring.ErrUnwrap, errSlotTag)
	}
	return e, nil
}

// checkConfigSlot verifies, with the slot key cfg holds, the tag of the
// public-key slot that opened the configuration.
func checkConfigSlot(cfg *Config, s header.Slot) error {
	if !pubkey.IsURI(s.URI) {
		return nil
	}
	if len(cfg.SlotKey) != SlotKeySize {
		return fmt.Errorf("%w: opened by a public-key slot, but it holds no slot key", ErrBadConfig)
	}
	e, t, ok := splitTag(s)
	if !ok || !hmac.Equal(t, slotTag(cfg.SlotKey, s.URI, s.Context, e)) {
		return fmt.Errorf("%w: %w", ErrBadConfig, errSlotTag)
	}
	return nil
}

// takeSlotKey moves the slot key of cfg into locked memory (first read)
// or checks that it is the one held (reload; a configuration may gain one
// if the volume had none). cfg.SlotKey is wiped and cleared.
func (v *Volume) takeSlotKey(cfg *Config) error {
	defer func() { clear(cfg.SlotKey); cfg.SlotKey = nil }()
	if cfg.SlotKey == nil {
		if v.slotKey != nil {
			return fmt.Errorf("%s: %w: the slot key is gone", v.Dir, ErrBadConfig)
		}
		return nil
	}
	if v.slotKey != nil {
		if subtle.ConstantTimeCompare(v.slotKey.Bytes(), cfg.SlotKey) != 1 {
			return fmt.Errorf("%s: %w: the slot key changed", v.Dir, ErrBadConfig)
		}
		return nil
	}
	lb := memguard.NewBufferFromBytes(cfg.SlotKey) // wipes cfg.SlotKey
	v.cfgMu.Lock()
	v.slotKey = lb
	v.cfgMu.Unlock()
	return nil
}

// ensureSlotKey makes sure the volume holds a slot key: the one it has,
// else sk (copied) if not nil, else a new one.
func (v *Volume) ensureSlotKey(sk []byte) error {
	v.cfgMu.Lock()
	defer v.cfgMu.Unlock()
	if v.slotKey != nil {
		if sk != nil && subtle.ConstantTimeCompare(v.slotKey.Bytes(), sk) != 1 {
			return errors.New("the configuration's slot key differs from the volume's")
		}
		return nil
	}
	if sk == nil {
		fresh, err := newSlotKey()
		if err != nil {
			return err
		}
		v.slotKey = memguard.NewBufferFromBytes(fresh)
		return nil
	}
	v.slotKey = memguard.NewBufferFromBytes(bytes.Clone(sk))
	return nil
}

// closeSlotKey destroys the slot key.
func (v *Volume) closeSlotKey() {
	v.cfgMu.Lock()
	defer v.cfgMu.Unlock()
	if v.slotKey != nil {
		v.slotKey.Destroy()
		v.slotKey = nil
	}
}

// newSlotKey returns a fresh random slot key.
func newSlotKey() ([]byte, error) {
	sk := make([]byte, SlotKeySize)
	if _, err := rand.Read(sk); err != nil {
		return nil, err
	}
	return sk, nil
}

// Pins are what no configuration of a volume may change, as a trust
// record keeps them (docs/FORMAT.md, "Which keys a reader may use").
type Pins struct {
	Names          string `json:"names"`
	NamesKeySHA256 string `json:"names_key_sha256"`
	SlotKeySHA256  string `json:"slot_key_sha256"`
	BlockSize      int    `json:"block_size"`
}

// PinDigest returns the digest a trust record pins of a secret key
// (empty for none).
func PinDigest(key []byte) string {
	if key == nil {
		return ""
	}
	h := sha256.New()
	h.Write([]byte("kmsfs pin\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil))
}

// Pins returns the pins of the volume's configuration.
func (v *Volume) Pins() Pins {
	v.cfgMu.RLock()
	defer v.cfgMu.RUnlock()
	p := Pins{Names: v.Config.Names, BlockSize: v.Config.BlockSize}
	if v.namesKey != nil {
		p.NamesKeySHA256 = PinDigest(v.namesKey.Bytes())
	}
	if v.slotKey != nil {
		p.SlotKeySHA256 = PinDigest(v.slotKey.Bytes())
	}
	return p
}

// ErrPins means the configuration differs from what the user's trust
// record pins: forged (a public key suffices to make a configuration that
// decrypts) or replaced.
var ErrPins = errors.New("the configuration differs from what this user's trust record pins for the volume")

// CheckPins refuses a configuration that differs from want. A volume
// whose pins gain a slot key it had none of (a rewrap added the first
// public key) passes; every other difference is refused.
func (v *Volume) CheckPins(want Pins) error {
	got := v.Pins()
	if want.SlotKeySHA256 == "" {
		got.SlotKeySHA256 = ""
	}
	if got != want {
		return fmt.Errorf("%s: %w (pinned %+v, found %+v)", v.Dir, ErrPins, want, got)
	}
	return nil
}
