// Package trust keeps, outside the backing directory, the keys a user
// trusts for each volume.
//
// Key URIs stored in a volume (in its configuration and in every file's
// key slots) are written by whoever holds the storage: a URI read from
// there is never trusted by itself. A mount unlocks only slots that name
// a key of the volume's trust record, kept per user and per volume ID in
// the user's configuration directory ($XDG_CONFIG_HOME/kmsfs/trust, by
// default ~/.config/kmsfs/trust), or a key the user names on the command
// line. "kmsfs init" writes the record; "kmsfs rewrap" keeps it in step;
// "kmsfs trust" records a volume met for the first time, after showing
// its keys.
package trust

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// ErrNotTrusted means the store has no record of the volume.
var ErrNotTrusted = errors.New("volume is not trusted on this machine")

// maxRecord caps the size of a record file.
const maxRecord = 64 << 10

// Record is what a user trusts of one volume.
type Record struct {
	// VolumeID is the volume's ID (32 lowercase hex digits).
	VolumeID string `json:"volume_id"`
	// Keys are the key URIs whose slots this user's mounts unlock and
	// which new files may be wrapped under.
	Keys []string `json:"keys"`
	// Retired are key URIs whose slots still unlock files but which no
	// new file is wrapped under: keys being removed by "kmsfs rewrap".
	Retired []string `json:"retired,omitempty"`
	// Epoch is the highest configuration epoch this user has accepted for
	// the volume: an older configuration is refused unless the user
	// overrides it.
	Epoch uint64 `json:"epoch,omitempty"`
	// PublicKeys are the PEM public keys of trusted asymmetric keys
	// (key URIs of a +rsa scheme), by URI: new files are wrapped under
	// them without calling the key service.
	PublicKeys map[string]string `json:"public_keys,omitempty"`
	// WriteOnly, when set, is the volume configuration (kmsfs.conf's
	// plaintext, names key included) of a write-only host, which holds
	// only public keys and so cannot read kmsfs.conf: every mount of the
	// volume by this user is write-only and uses it.
	WriteOnly json.RawMessage `json:"write_only,omitempty"`
	// Pins are what no configuration of the volume may change (see
	// docs/FORMAT.md): set from the first configuration this user accepts.
	Pins *Pins `json:"pins,omitempty"`
}

// Pins are the parts of a volume's configuration a trust record pins:
// the names mode, digests of the names key and the slot key, the block
// size.
type Pins struct {
	Names          string `json:"names"`
	NamesKeySHA256 string `json:"names_key_sha256"`
	SlotKeySHA256  string `json:"slot_key_sha256"`
	BlockSize      int    `json:"block_size"`
}

// PublicKeyMap returns the record's public keys in the form
// keyring.Options takes.
func (r *Record) PublicKeyMap() map[string][]byte {
	if r == nil || len(r.PublicKeys) == 0 {
		return nil
	}
	m := make(map[string][]byte, len(r.PublicKeys))
	for u, p := range r.PublicKeys {
		m[u] = []byte(p)
	}
	return m
}

// Trusts reports whether uri is one of the record's keys.
func (r *Record) Trusts(uri string) bool { return r != nil && slices.Contains(r.Keys, uri) }

// Store is a directory of trust records, one file per volume.
type Store struct {
	// Dir is the directory of the records (created 0700 on first save).
	Dir string
}

// DefaultStore returns the store in the user's configuration directory.
func DefaultStore() (*Store, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return nil, fmt.Errorf("trust store: %w", err)
	}
	return &Store{Dir: filepath.Join(d, "kmsfs", "trust")}, nil
}

// validID reports whether id is a volume ID: 32 lowercase hex digits.
func validID(id string) bool {
	b, err := hex.DecodeString(id)
	return err == nil && len(b) == 16 && hex.EncodeToString(b) == id
}

func (s *Store) path(volumeID string) string {
	return filepath.Join(s.Dir, volumeID+".json")
}

// Load returns the record of volumeID, or an error wrapping ErrNotTrusted
// if there is none.
func (s *Store) Load(volumeID string) (*Record, error) {
	if !validID(volumeID) {
		return nil, fmt.Errorf("trust store: bad volume ID %q", volumeID)
	}
	f, err := os.Open(s.path(volumeID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: %w", volumeID, ErrNotTrusted)
	}
	if err != nil {
		return nil, fmt.Errorf("trust store: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	defer clear(b) // a write-only record holds the names key
	if err != nil {
		return nil, fmt.Errorf("trust store: %w", err)
	}
	return parse(b, volumeID, s.path(volumeID))
}

// knownFields are the JSON fields of a Record.
var knownFields = map[string]bool{"volume_id": true, "keys": true, "retired": true, "epoch": true, "public_keys": true, "write_only": true, "pins": true}

// parse checks a record file's contents.
func parse(b []byte, volumeID, name string) (*Record, error) {
	if len(b) > maxRecord {
		return nil, fmt.Errorf("trust store: %s is larger than %d bytes", name, maxRecord)
	}
	// Unmarshal, not a Decoder: a Decoder copies the record (the names
	// key of a write-only record included) into a buffer nobody wipes.
	// Unknown fields are still refused: a typo must not be ignored.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("trust store: %s: %w", name, err)
	}
	for k, raw := range fields {
		clear(raw)
		if !knownFields[k] {
			return nil, fmt.Errorf("trust store: %s: unknown field %q", name, k)
		}
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("trust store: %s: %w", name, err)
	}
	if r.VolumeID != volumeID {
		return nil, fmt.Errorf("trust store: %s names volume %q", name, r.VolumeID)
	}
	for _, k := range append(slices.Clone(r.Keys), r.Retired...) {
		if k == "" {
			return nil, fmt.Errorf("trust store: %s: empty key URI", name)
		}
	}
	return &r, nil
}

// Save writes r atomically (a temporary file, synced, renamed), mode 0600.
func (s *Store) Save(r *Record) error {
	if !validID(r.VolumeID) {
		return fmt.Errorf("trust store: bad volume ID %q", r.VolumeID)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("trust store: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	defer clear(b)
	tmp, err := os.CreateTemp(s.Dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("trust store: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err = tmp.Write(b); err == nil {
		_, err = tmp.Write([]byte{'\n'})
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path(r.VolumeID))
	}
	if err != nil {
		return fmt.Errorf("trust store: saving %s: %w", r.VolumeID, err)
	}
	return nil
}

// Update loads the record of volumeID (an empty one if there is none),
// lets change edit it and saves it.
func (s *Store) Update(volumeID string, change func(r *Record)) error {
	r, err := s.Load(volumeID)
	if errors.Is(err, ErrNotTrusted) {
		r, err = &Record{VolumeID: volumeID}, nil
	}
	if err != nil {
		return err
	}
	change(r)
	return s.Save(r)
}
