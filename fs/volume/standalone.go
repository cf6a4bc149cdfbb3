package volume

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"slices"
	"time"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
)

// Standalone is the key source of standalone files (docs/FORMAT.md,
// "Standalone files"): kmsfs files that belong to no volume, made and read
// by "kmsfs encrypt" and "kmsfs decrypt". Each file is keyed as a volume
// of its own, with no configuration: a fresh random volume ID in the
// encryption context of its key slots, and a data key of its own. It
// implements cryptfile.Keyer.
type Standalone struct {
	keys   []string
	res    *keyring.Resolver
	layout blockcipher.Layout
	shift  uint8
	log    *log.Logger
}

var _ cryptfile.Keyer = (*Standalone)(nil)

// NewStandalone returns the key source of standalone files of block size
// blockSize (DefaultBlockSize if 0). New files are wrapped under every
// key of keys, and slots are unlocked only with them: they are the keys
// the user named, never URIs read from a file. A slot naming another key
// is tried with the keys of the same scheme, as mount's --key does (a
// local key file that moved). logger (nil: discard) gets the warnings of
// Load, such as a damaged header copy.
func NewStandalone(res *keyring.Resolver, keys []string, blockSize int, logger *log.Logger) (*Standalone, error) {
	if blockSize == 0 {
		blockSize = DefaultBlockSize
	}
	shift, err := blockShift(blockSize)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("standalone file: no key given")
	}
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	return &Standalone{keys: slices.Clone(keys), res: res, layout: layoutFor(blockSize), shift: shift, log: logger}, nil
}

// Layout returns the block geometry of the files.
func (s *Standalone) Layout() blockcipher.Layout { return s.layout }

// volume returns the key machinery of a volume with ID id that has no
// directory and trusts exactly s.keys.
func (s *Standalone) volume(id string) *Volume {
	v := &Volume{
		Config: Config{Format: "kmsfs", Version: 1, VolumeID: id, BlockSize: s.layout.BlockSize, Keys: s.keys, ReuseFiles: 1, ReuseSeconds: 1},
		Layout: s.layout, Log: s.log, res: s.res, extra: s.keys, shift: s.shift,
		trusted: map[string]bool{}, retired: map[string]bool{}, encCtx: EncryptionContext(id),
	}
	for _, k := range s.keys {
		v.trusted[k] = true
	}
	return v
}

// New returns the header and key of a new standalone file: a fresh volume
// ID and a fresh data key wrapped under every key (cryptfile.Keyer).
func (s *Standalone) New(ctx context.Context) ([]byte, cryptfile.Key, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, err
	}
	ks := newKeySource(s.volume(hex.EncodeToString(id[:])), s.keys, 1, time.Second, 0)
	defer ks.close()
	hdr, fk, err := ks.fileKeys(ctx)
	if err != nil {
		return nil, nil, err
	}
	return hdr, fk, nil
}

// Load reads and unlocks the header of a standalone file
// (cryptfile.Keyer). Its volume is the one its first key slot names;
// a slot naming another volume is rejected as damage. If the only
// failure is slots that the keys given refuse, the error is
// ErrWrongKey, as for a volume's configuration.
func (s *Standalone) Load(ctx context.Context, fd int, name func() string) (cryptfile.Key, error) {
	buf := make([]byte, header.Size)
	n, err := cryptfile.PreadHead(fd, buf)
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return nil, nil
	}
	h, err := parseHead(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name(), errors.Join(ErrCorrupt, err))
	}
	id := ""
	for _, ci := range h.Candidates() {
		for _, sl := range h.Copies[ci].Slots {
			if vol, err := volumeFromContext(sl.Context); err == nil && id == "" {
				id = vol
			}
		}
	}
	if id == "" {
		return nil, fmt.Errorf("%s: %w: no key slot names a volume", name(), ErrCorrupt)
	}
	v := s.volume(id)
	fk, err := v.unlock(ctx, h, name())
	if sr := (*slotsRefused)(nil); errors.As(err, &sr) {
		// As for a volume's configuration: the keys given are not the
		// file's (or its slots were altered).
		return nil, fmt.Errorf("%s: %w: %w", name(), ErrWrongKey, sr.refused)
	}
	if err != nil {
		return nil, err
	}
	fk.v = v
	return fk, nil
}
