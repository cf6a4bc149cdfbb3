package volume

import (
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/awnumar/memguard"

	"github.com/kmsfs/kmsfs/fs/names"
)

// takeNamesKey moves the names key of cfg, just read, into locked memory
// (on the first read) or checks that it is the one already held (on a
// reload: a configuration whose names key changed would make every name
// unreadable, so it is refused). Either way cfg.NamesKey is wiped and
// cleared.
func (v *Volume) takeNamesKey(cfg *Config) error {
	defer func() { clear(cfg.NamesKey); cfg.NamesKey = nil }()
	if v.Config.Format != "" && (cfg.Names != v.Config.Names || cfg.Version != v.Config.Version) {
		return fmt.Errorf("%s: %w: names %q (version %d) changed to %q (version %d)", v.Dir, ErrBadConfig, v.Config.Names, v.Config.Version, cfg.Names, cfg.Version)
	}
	if !cfg.EncryptedNames() {
		return nil
	}
	if v.namesKey != nil {
		if subtle.ConstantTimeCompare(v.namesKey.Bytes(), cfg.NamesKey) != 1 {
			return fmt.Errorf("%s: %w: the names key changed", v.Dir, ErrBadConfig)
		}
		return nil
	}
	lb := memguard.NewBufferFromBytes(cfg.NamesKey) // wipes cfg.NamesKey
	c, err := names.New(lb.Bytes())
	if err != nil {
		lb.Destroy()
		return fmt.Errorf("%s: %w: %w", v.Dir, ErrBadConfig, err)
	}
	v.namesKey, v.names = lb, c
	return nil
}

// Names returns the cipher of the volume's names, or nil when names are
// stored in clear (version 1, or version 2 with plaintext names).
func (v *Volume) Names() *names.Cipher { return v.names }

// RootDirID returns the directory ID of the backing root: the volume ID.
func (v *Volume) RootDirID() ([names.IDSize]byte, error) {
	var id [names.IDSize]byte
	b, err := hex.DecodeString(v.volumeID())
	if err != nil || len(b) != len(id) {
		return id, errors.New("volume ID is not 16 bytes in hex")
	}
	copy(id[:], b)
	return id, nil
}

// closeNames destroys the names key.
func (v *Volume) closeNames() {
	if v.namesKey != nil {
		v.namesKey.Destroy()
	}
}

// BackingPath returns the backing path, relative to the backing
// directory, of the path plain seen through the mount: each component is
// encrypted under its directory's ID (read from its kmsfs.dirid). With
// names in clear it is plain itself. The entry need not exist; the
// directories on the way must.
func (v *Volume) BackingPath(plain string) (string, error) {
	plain = strings.Trim(plain, "/")
	if v.names == nil || plain == "" {
		return plain, nil
	}
	p := v.NewPaths()
	var out []string
	for _, comp := range strings.Split(plain, "/") {
		id, err := p.DirID(strings.Join(out, "/"))
		if err != nil {
			return "", fmt.Errorf("%s: %w", plain, err)
		}
		e, err := v.names.EncryptName(id, comp)
		if err != nil {
			return "", fmt.Errorf("%s: %w", plain, err)
		}
		out = append(out, e.Backing)
	}
	return strings.Join(out, "/"), nil
}
