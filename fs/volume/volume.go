// Package volume is an opened kmsfs volume: its configuration
// (docs/FORMAT.md, "Volume configuration"), the key slots of its files
// and how they are unlocked, the data keys of new files, and rewrap.
// It hands file keys to the encrypted-file engine (package cryptfile)
// through the cryptfile.Keyer interface and knows nothing of FUSE.
package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/awnumar/memguard"
	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/names"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/pubkey"
)

// ConfigName is the name of the volume configuration file in the root of
// the backing directory. It is invisible through the mount.
const ConfigName = "kmsfs.conf"

// DefaultBlockSize is the plaintext block size of new volumes.
const DefaultBlockSize = 4096

// maxConfigSize caps the plaintext of the configuration file.
const maxConfigSize = 64 << 10

// Sentinel errors for callers (the CLI maps them to exit codes).
var (
	// ErrNotVolume: the directory holds no kmsfs configuration.
	ErrNotVolume = errors.New("not a kmsfs volume (no " + ConfigName + ")")
	// ErrBadConfig: the configuration exists but is damaged or invalid.
	ErrBadConfig = errors.New("volume configuration is damaged or invalid")
	// ErrNotEmpty: init refused a directory that is not empty.
	ErrNotEmpty = errors.New("directory is not empty")
	// ErrKeyUnavailable: no key slot of a file could be opened.
	ErrKeyUnavailable = errors.New("no key could open the file")
	// ErrWrongKey: every key tried on the configuration's slots refused
	// its slot (keyring.ErrUnwrap) and nothing else in its header was
	// damaged: the keys belong to another volume (a key file replaced by
	// another one, a --key naming the wrong file), or the slots were
	// altered. In a file's header the same failure is damage (ErrCorrupt).
	ErrWrongKey = errors.New("wrong key: it does not open this volume (it is another key, or the volume's key slot was altered)")
	// ErrUntrusted: no key slot names a key trusted for the volume (see
	// package trust); the URIs stored in the volume are not used.
	ErrUntrusted = errors.New("no key slot names a key trusted for this volume")
	// ErrCorrupt: a header or block failed authentication or parsing
	// (the engine's own error, so that both layers' failures match it).
	ErrCorrupt = cryptfile.ErrCorrupt
)

// Internal reports whether name, in the root of the backing directory,
// is one of kmsfs's own files: the configuration, its temporary copy,
// the write journal and parked journals, and re-encryption copies. They
// are invisible through the mount.
func Internal(name string) bool {
	return name == ConfigName || name == ConfigName+".tmp" || name == cryptfile.JournalName ||
		cryptfile.IsParkedJournal(name) || strings.HasPrefix(name, cryptfile.ReencryptPrefix)
}

// Config is the plaintext of the volume configuration (docs/FORMAT.md).
type Config struct {
	Format    string   `json:"format"`
	Version   int      `json:"version"`
	VolumeID  string   `json:"volume_id"`
	BlockSize int      `json:"block_size"`
	Keys      []string `json:"keys"`
	// ReuseFiles is how many new files one data key may serve (absent
	// or 1: every file gets its own data key).
	ReuseFiles int `json:"data_key_reuse_files,omitempty"`
	// ReuseSeconds is how long one data key may serve new files.
	ReuseSeconds int `json:"data_key_reuse_seconds,omitempty"`
	// Epoch is raised by every rewrite of the configuration (absent: 0),
	// so that a reader that remembers the last epoch it saw can refuse an
	// older configuration restored over a newer one.
	Epoch uint64 `json:"epoch,omitempty"`
	// Names is "siv" or "plaintext" in a version-2 configuration, empty
	// in version 1.
	Names string `json:"names,omitempty"`
	// NamesKey is the names key of an encrypted-names volume. The Volume
	// moves it into locked memory and clears this field after reading
	// (writeConfig puts it back for the write).
	NamesKey []byte `json:"names_key,omitempty"`
	// SlotKey authenticates public-key slots (docs/FORMAT.md). Like
	// NamesKey, the Volume moves it into locked memory and clears it.
	SlotKey []byte `json:"slot_key,omitempty"`
	// HeaderCopySize is the size C of the header copies of a version-3
	// volume's files (docs/FORMAT.md "Header (version 3)"); absent in
	// versions 1 and 2.
	HeaderCopySize int `json:"header_copy_size,omitempty"`
	// Pins, set by Init, are what a trust record pins of the new
	// configuration (not part of it).
	Pins Pins `json:"-"`
}

// Values of Config.Names.
const (
	NamesSIV       = "siv"
	NamesPlaintext = "plaintext"
)

// EncryptedNames reports whether the volume's names are encrypted.
func (c *Config) EncryptedNames() bool { return c.Names == NamesSIV }

// ErrRollback means the configuration is older than one this user has
// already seen for the volume (a restored backup, or an attacker undoing
// a key removal).
var ErrRollback = errors.New("the configuration is older than one already seen for this volume")

// InitOptions are the choices fixed when a volume is created.
type InitOptions struct {
	// Keys are the key URIs every data key is wrapped under (at least one).
	Keys []string
	// BlockSize is the plaintext block size (DefaultBlockSize if 0).
	BlockSize int
	// ReuseFiles and ReuseSeconds bound how many new files, and for how
	// long, one data key serves; 1 file means one data key per file.
	ReuseFiles, ReuseSeconds int
	// PlaintextNames keeps names, symlink targets and extended attributes
	// in clear (a version-2 volume with "names": "plaintext").
	PlaintextNames bool
	// FormatVersion is the configuration version to write: 3 (the
	// default, when 0) or 2, for volumes that older kmsfs releases must
	// read.
	FormatVersion int
	// WriteOnly leaves the names key in the returned configuration, for
	// the caller to keep in the trust record of a write-only host (which
	// cannot read kmsfs.conf back) and to clear.
	WriteOnly bool
}

// Volume is an opened kmsfs volume: its configuration and the keyrings new
// files are wrapped under.
type Volume struct {
	// Dir is the absolute path of the backing directory.
	Dir string
	// Config is the authenticated configuration.
	Config Config
	// Layout is the block geometry of every file of versions 1 and 2,
	// and of the configuration file.
	Layout blockcipher.Layout
	// Layout3 is the geometry of the files of a version-3 volume; nil in
	// versions 1 and 2.
	Layout3 *blockcipher.Layout3
	// Log receives one line per failed file or block; it never receives
	// key material or file contents.
	Log *log.Logger

	dir     *backing.Dir
	res     *keyring.Resolver
	keys    *keySource
	extra   []string        // key URIs tried for slots of the same scheme
	trusted map[string]bool // key URIs whose slots may be unlocked and new files wrapped under
	retired map[string]bool // key URIs whose slots may only be unlocked
	// alias maps a key URI that failed to the extra key that opened its
	// slot instead; new files are wrapped with the extra key but keep the
	// configured URI in their slots.
	cfgMu   sync.RWMutex // guards Config and keys against Reload
	warned  sync.Map     // messages logged once
	aliasMu sync.Mutex
	alias   map[string]string
	encCtx  []byte
	shift   uint8

	// names encrypts entry names (nil when they are in clear); its key is
	// namesKey, in locked memory.
	names    *names.Cipher
	namesKey *memguard.LockedBuffer

	// writeOnly: the configuration came from the trust record, not from
	// kmsfs.conf (OpenOptions.WriteOnly).
	writeOnly bool
	// slotKey authenticates public-key slots (nil for a volume without
	// one); guarded by cfgMu. loaded is set once a configuration is held:
	// until then the configuration's own slot tags are checked after it
	// is read (checkConfigSlot).
	slotKey *memguard.LockedBuffer
	loaded  atomic.Bool
}

// OpenOptions are the optional parts of opening a volume.
type OpenOptions struct {
	// Log receives warnings and per-file errors; nil discards them.
	Log *log.Logger
	// ExtraKeys are key URIs tried for every key slot of the same scheme
	// whose own key fails or is not trusted, for example a local key file
	// that moved (key slots name keys by their absolute path). They are
	// trusted: the user named them.
	ExtraKeys []string
	// Trusted are the key URIs, from outside the backing directory (the
	// volume's trust record), whose slots may be unlocked. A slot naming
	// any other key is skipped and logged, whatever it says; new files are
	// wrapped only under trusted keys of the configuration.
	Trusted []string
	// Retired are key URIs whose slots may still be unlocked but which no
	// new file is wrapped under, whatever the configuration says (a key
	// being removed by rewrap).
	Retired []string
	// WriteOnly, when not nil, is the plaintext of the configuration a
	// write-only host keeps in its trust record (kmsfs init --write-only):
	// kmsfs.conf is not read (the host cannot unwrap it), this one is used
	// instead, and the volume reports WriteOnly. The caller clears it.
	WriteOnly []byte
}

// EncryptionContext returns the encryption context kmsfs gives every key
// service for a volume (docs/FORMAT.md).
func EncryptionContext(volumeID string) []byte {
	return []byte(`{"kmsfs":"v1","volume":"` + volumeID + `"}`)
}

// volumeFromContext extracts the volume ID from an encryption context.
func volumeFromContext(encCtx []byte) (string, error) {
	// The canonical form with a hex volume ID, as kmsfs writes it, without
	// a JSON decoder: this runs for every key slot of every open.
	const pre, suf = `{"kmsfs":"v1","volume":"`, `"}`
	if len(encCtx) == len(pre)+32+len(suf) && string(encCtx[:len(pre)]) == pre && string(encCtx[len(pre)+32:]) == suf {
		if id := encCtx[len(pre) : len(pre)+32]; isLowerHex(id) {
			return string(id), nil
		}
	}
	var c struct {
		Kmsfs  string `json:"kmsfs"`
		Volume string `json:"volume"`
	}
	if err := json.Unmarshal(encCtx, &c); err != nil || c.Kmsfs != "v1" || len(c.Volume) != 32 {
		return "", fmt.Errorf("%w: unexpected encryption context %q", ErrBadConfig, encCtx)
	}
	if !bytes.Equal(EncryptionContext(c.Volume), encCtx) {
		return "", fmt.Errorf("%w: non-canonical encryption context %q", ErrBadConfig, encCtx)
	}
	return c.Volume, nil
}

func isLowerHex(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func blockShift(bs int) (uint8, error) {
	for s := uint8(header.MinBlockShift); s <= header.MaxBlockShift; s++ {
		if 1<<s == bs {
			return s, nil
		}
	}
	return 0, fmt.Errorf("block size %d is not a power of two from 4096 to 1048576", bs)
}

func layoutFor(bs int) blockcipher.Layout {
	return blockcipher.Layout{BlockSize: bs, DataOffset: header.Size}
}

// Init creates a new volume in dir, which must exist and be empty, with
// new files wrapped under every key in keyURIs (at least one).
func Init(ctx context.Context, dir string, o InitOptions, res *keyring.Resolver) (*Config, error) {
	keyURIs, blockSize := o.Keys, o.BlockSize
	if blockSize == 0 {
		blockSize = DefaultBlockSize
	}
	if o.ReuseFiles < 1 || o.ReuseSeconds < 1 {
		return nil, errors.New("init: data key reuse needs at least 1 file and 1 second")
	}
	if len(keyURIs) == 0 {
		return nil, errors.New("init: no key given")
	}
	shift, err := blockShift(blockSize)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	d, err := backing.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	defer d.Close()
	var st unix.Stat_t
	if unix.Fstatat(d.Fd(), ConfigName, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return nil, fmt.Errorf("init %s: already a kmsfs volume", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if len(ents) > 0 {
		return nil, fmt.Errorf("init %s: %w (kmsfs only initialises an empty directory)", dir, ErrNotEmpty)
	}
	seen := map[string]bool{}
	for _, u := range keyURIs {
		if seen[u] {
			return nil, fmt.Errorf("init: key %s given twice", keyring.RedactURI(u))
		}
		seen[u] = true
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	version := o.FormatVersion
	if version == 0 {
		version = 3
	}
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("init: format version %d; this kmsfs writes 2 and 3", version)
	}
	cfg := Config{Format: "kmsfs", Version: version, VolumeID: hex.EncodeToString(id[:]), BlockSize: blockSize, Keys: keyURIs,
		ReuseFiles: o.ReuseFiles, ReuseSeconds: o.ReuseSeconds, Names: NamesPlaintext}
	if !o.PlaintextNames {
		cfg.Names = NamesSIV
		cfg.NamesKey = make([]byte, names.KeySize)
		if _, err := rand.Read(cfg.NamesKey); err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
		if !o.WriteOnly {
			defer func() { clear(cfg.NamesKey); cfg.NamesKey = nil }()
		}
	}
	if cfg.SlotKey, err = newSlotKey(); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	cfg.Pins = Pins{Names: cfg.Names, NamesKeySHA256: PinDigest(cfg.NamesKey), SlotKeySHA256: PinDigest(cfg.SlotKey), BlockSize: blockSize}
	if !o.WriteOnly {
		defer func() { clear(cfg.SlotKey); cfg.SlotKey = nil }()
	}
	v := &Volume{Dir: dir, dir: d, Config: cfg, Layout: layoutFor(blockSize), res: res, encCtx: EncryptionContext(cfg.VolumeID), shift: shift, Log: log.New(io.Discard, "", 0), trusted: map[string]bool{}, retired: map[string]bool{}}
	for _, u := range keyURIs {
		v.trusted[u] = true
	}
	if version == 3 {
		// The header copies must hold the slots of every key: wrap a
		// throwaway data key under each to learn their size (public-key
		// slots are tagged with the slot key, held first).
		if err := v.ensureSlotKey(cfg.SlotKey); err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
		c, err := v.copySizeFor(ctx, keyURIs)
		if err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
		cfg.HeaderCopySize = c
	}
	defer v.closeSlotKey()
	if err := v.writeConfig(ctx, &cfg); err != nil {
		clear(cfg.NamesKey)
		clear(cfg.SlotKey)
		return nil, fmt.Errorf("init: %w", err)
	}
	return &cfg, nil
}

// writeFileSync creates name in the root of d with data, synced; a
// file of that name must not exist.
func writeFileSync(d *backing.Dir, name string, data []byte, mode uint32) error {
	fd, err := d.Open(name, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL, mode)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.Path, name))
	if _, err := f.Write(data); err != nil {
		f.Close()
		unix.Unlinkat(d.Fd(), name, 0)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		unix.Unlinkat(d.Fd(), name, 0)
		return err
	}
	return f.Close()
}

// syncDir syncs the root directory of d.
func syncDir(d *backing.Dir) error {
	fd, err := d.Open(".", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return syscall.Fsync(fd)
}

// Open opens the volume in dir: it reads and authenticates the
// configuration with the first of its keys that works, and checks that
// the keys for new files can be opened.
func Open(ctx context.Context, dir string, res *keyring.Resolver, o OpenOptions) (*Volume, error) {
	logger := o.Log
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("open volume: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open volume %s: not a directory", abs)
	}
	d, err := backing.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("open volume: %w", err)
	}
	v := &Volume{Dir: abs, dir: d, res: res, Log: logger, extra: o.ExtraKeys, trusted: map[string]bool{}, retired: map[string]bool{}}
	for _, u := range append(slices.Clone(o.Trusted), o.ExtraKeys...) {
		v.trusted[u] = true
	}
	for _, u := range o.Retired {
		if !v.trusted[u] {
			v.retired[u] = true
		}
	}
	var cfg *Config
	if o.WriteOnly != nil {
		v.writeOnly = true
		cfg, err = v.writerConfig(o.WriteOnly)
	} else {
		cfg, err = v.readConfig(ctx)
	}
	if err == nil {
		err = v.takeSlotKey(cfg)
	}
	if err == nil {
		err = v.takeNamesKey(cfg)
	}
	if cfg != nil {
		clear(cfg.SlotKey)
		clear(cfg.NamesKey)
	}
	if err != nil {
		v.closeSlotKey()
		v.closeNames()
		v.closeSlotKey()
		d.Close()
		return nil, err
	}
	v.setConfig(cfg)
	usable := 0
	for _, u := range cfg.Keys {
		if !v.wrapsUnder(v.aliasOf(u)) {
			logger.Printf("kmsfs: the configuration names key %s, which is not trusted for this volume: new files are not wrapped under it", keyring.RedactURI(u))
			continue
		}
		usable++
		if _, err := res.Get(ctx, v.aliasOf(u)); err != nil {
			logger.Printf("kmsfs: key %s is not usable: %v", keyring.RedactURI(u), err)
		}
	}
	if usable == 0 {
		d.Close()
		return nil, fmt.Errorf("%s: %w: none of the keys %v for new files is trusted", abs, ErrUntrusted, keyring.RedactURIs(cfg.Keys))
	}
	return v, nil
}

// configHeader reads and parses the header of the configuration of the
// volume in dir, without unwrapping anything.
func configHeader(dir string) (*header.Header, error) {
	d, err := backing.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	cpath := filepath.Join(dir, ConfigName)
	fd, err := d.Open(ConfigName, syscall.O_RDONLY, 0)
	if errors.Is(err, syscall.ENOENT) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotVolume)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cpath, err)
	}
	defer syscall.Close(fd)
	buf := make([]byte, header.Size)
	if n, err := cryptfile.PreadHead(fd, buf); err != nil || n < len(buf) {
		return nil, fmt.Errorf("%s: %w: too short or unreadable", cpath, ErrBadConfig)
	}
	h, err := header.Parse(buf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", cpath, ErrBadConfig, err)
	}
	return h, nil
}

// PeekVolumeID returns the volume ID the configuration of the volume in
// dir claims, from its key slots, without unwrapping anything: it says
// which trust record to use, and is not itself trusted.
func PeekVolumeID(dir string) (string, error) {
	h, err := configHeader(dir)
	if err != nil {
		return "", err
	}
	for _, ci := range h.Candidates() {
		for _, s := range h.Copies[ci].Slots {
			if id, err := volumeFromContext(s.Context); err == nil {
				return id, nil
			}
		}
	}
	return "", fmt.Errorf("%s: %w: no key slot names the volume", filepath.Join(dir, ConfigName), ErrBadConfig)
}

// SlotKeys returns the key URIs named by the slots of the configuration
// of the volume in dir, as stored (not trusted): what "kmsfs trust" shows
// before recording them.
func SlotKeys(dir string) ([]string, error) {
	h, err := configHeader(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ci := range h.Candidates() {
		for _, s := range h.Copies[ci].Slots {
			if !slices.Contains(out, s.URI) {
				out = append(out, s.URI)
			}
		}
	}
	return out, nil
}

// writerConfig parses the configuration a write-only host keeps, checks
// it against what the backing directory claims (its volume ID and block
// size, from kmsfs.conf's header) and sets the volume's geometry.
func (v *Volume) writerConfig(plain []byte) (*Config, error) {
	c, err := ParseConfig(plain)
	if err != nil {
		return nil, fmt.Errorf("the write-only configuration in the trust record: %w", err)
	}
	h, err := configHeader(v.Dir)
	if err == nil {
		var id string
		if id, err = PeekVolumeID(v.Dir); err == nil && id != c.VolumeID {
			err = fmt.Errorf("%w: the backing directory holds volume %s, the trust record's write-only configuration is volume %s", ErrBadConfig, id, c.VolumeID)
		}
	}
	if err == nil && h.Preamble.BlockSize() != c.BlockSize {
		err = fmt.Errorf("%w: block size %d in the trust record, %d in %s", ErrBadConfig, c.BlockSize, h.Preamble.BlockSize(), ConfigName)
	}
	if err == nil {
		// The configuration cannot be read here, but its slots name its
		// keys: a key it no longer has (removed by rewrap on a reading
		// machine, perhaps because it leaked) must not wrap new files.
		var named []string
		if named, err = SlotKeys(v.Dir); err == nil {
			for _, k := range c.Keys {
				if !slices.Contains(named, k) {
					err = fmt.Errorf("%w: the volume's configuration no longer names key %s, which this write-only machine's copy does (was it removed with kmsfs rewrap?); refusing to wrap new files under it: set this machine up again for the volume's keys", ErrBadConfig, keyring.RedactURI(k))
					break
				}
			}
			for _, k := range named {
				if !slices.Contains(c.Keys, k) {
					v.Log.Printf("kmsfs: the volume's configuration names key %s, which this write-only machine's copy does not: new files written here are not wrapped under it", keyring.RedactURI(k))
				}
			}
		}
	}
	if err != nil {
		clear(c.NamesKey)
		return nil, err
	}
	v.shift = h.Preamble.BlockShift
	v.Layout = layoutFor(c.BlockSize)
	return c, nil
}

// WriteOnly reports whether the volume was opened write-only: it holds
// only public keys, writes new files and reads no other.
func (v *Volume) WriteOnly() bool { return v.writeOnly }

// MarshalConfig returns the JSON of cfg as kmsfs.conf holds it, with
// cfg.NamesKey. The caller wipes the result.
func MarshalConfig(cfg *Config) ([]byte, error) {
	return marshalConfig(cfg, cfg.NamesKey, cfg.SlotKey)
}

// readConfig reads and authenticates the volume configuration. On the
// first call it also sets the volume's geometry from it.
func (v *Volume) readConfig(ctx context.Context) (*Config, error) {
	cpath := filepath.Join(v.Dir, ConfigName)
	fd, err := v.dir.Open(ConfigName, syscall.O_RDONLY, 0)
	if errors.Is(err, syscall.ENOENT) {
		return nil, fmt.Errorf("%s: %w", v.Dir, ErrNotVolume)
	}
	if err != nil {
		return nil, fmt.Errorf("open volume: %s: %w", cpath, err)
	}
	f := os.NewFile(uintptr(fd), cpath)
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, header.Size+2*maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", cpath, err)
	}
	if len(raw) < header.Size {
		return nil, fmt.Errorf("%s: %w: too short (%d bytes)", cpath, ErrBadConfig, len(raw))
	}
	h, err := header.Parse(raw[:header.Size])
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", cpath, ErrBadConfig, err)
	}
	if v.Layout.BlockSize == 0 {
		v.shift = h.Preamble.BlockShift
		v.Layout = layoutFor(h.Preamble.BlockSize())
	}
	fk, err := v.unlock(ctx, h, cpath)
	if sr := (*slotsRefused)(nil); errors.As(err, &sr) {
		return nil, fmt.Errorf("%s: %w: %w", cpath, ErrWrongKey, sr.refused)
	}
	if err != nil {
		return nil, err
	}
	defer fk.destroy()
	plain, err := fk.cipher.OpenBlocks(nil, raw[header.Size:], 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", cpath, ErrBadConfig, err)
	}
	defer clear(plain)
	c, err := ParseConfig(plain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cpath, err)
	}
	wipe := func() { clear(c.NamesKey); clear(c.SlotKey) }
	if !v.loaded.Load() {
		if err := checkConfigSlot(c, fk.slot); err != nil {
			wipe()
			return nil, fmt.Errorf("%s: %w", cpath, err)
		}
	}
	switch {
	case c.VolumeID != fk.volume:
		wipe()
		return nil, fmt.Errorf("%s: %w: volume ID %s does not match its key slots (%s)", cpath, ErrBadConfig, c.VolumeID, fk.volume)
	case v.volumeID() != "" && c.VolumeID != v.volumeID():
		wipe()
		return nil, fmt.Errorf("%s: %w: volume ID changed from %s to %s", cpath, ErrBadConfig, v.volumeID(), c.VolumeID)
	case c.BlockSize != h.Preamble.BlockSize() || c.BlockSize != v.Layout.BlockSize:
		wipe()
		return nil, fmt.Errorf("%s: %w: block size %d does not match its header (%d)", cpath, ErrBadConfig, c.BlockSize, h.Preamble.BlockSize())
	}
	return c, nil
}

// ParseConfig parses and checks the plaintext of a volume configuration
// (docs/FORMAT.md). Errors wrap ErrBadConfig.
func ParseConfig(plain []byte) (*Config, error) {
	if len(plain) > maxConfigSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadConfig, len(plain), maxConfigSize)
	}
	var c Config
	// Unmarshal, not a Decoder: a Decoder copies the plaintext (names key
	// included) into a buffer of its own that nobody wipes. Unmarshal
	// also refuses data after the object.
	if err := json.Unmarshal(plain, &c); err != nil {
		clear(c.NamesKey)
		clear(c.SlotKey)
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	ok := false
	defer func() {
		if !ok {
			clear(c.NamesKey)
			clear(c.SlotKey)
		}
	}()
	id, err := hex.DecodeString(c.VolumeID)
	switch {
	case c.Format != "kmsfs" || c.Version < 1 || c.Version > 3:
		return nil, fmt.Errorf("%w: format %q version %d is not supported by this kmsfs", ErrBadConfig, c.Format, c.Version)
	case c.Version == 1 && (c.Names != "" || c.NamesKey != nil):
		return nil, fmt.Errorf("%w: a version-1 configuration with names settings", ErrBadConfig)
	case c.Version == 3 && (c.HeaderCopySize < header.MinCopySize || c.HeaderCopySize > header.MaxCopySize3 || c.HeaderCopySize%16 != 0):
		return nil, fmt.Errorf("%w: header copy size %d, want a multiple of 16 from %d to %d", ErrBadConfig, c.HeaderCopySize, header.MinCopySize, header.MaxCopySize3)
	case c.Version < 3 && c.HeaderCopySize != 0:
		return nil, fmt.Errorf("%w: a header copy size in a version-%d configuration", ErrBadConfig, c.Version)
	case c.Version >= 2 && c.Names != NamesSIV && c.Names != NamesPlaintext:
		return nil, fmt.Errorf("%w: names %q, want %q or %q", ErrBadConfig, c.Names, NamesSIV, NamesPlaintext)
	case c.Names == NamesSIV && len(c.NamesKey) != names.KeySize:
		return nil, fmt.Errorf("%w: names key of %d bytes, want %d", ErrBadConfig, len(c.NamesKey), names.KeySize)
	case c.Names == NamesPlaintext && c.NamesKey != nil:
		return nil, fmt.Errorf("%w: a names key with plaintext names", ErrBadConfig)
	case c.SlotKey != nil && len(c.SlotKey) != SlotKeySize:
		return nil, fmt.Errorf("%w: slot key of %d bytes, want %d", ErrBadConfig, len(c.SlotKey), SlotKeySize)
	case err != nil || len(id) != 16 || hex.EncodeToString(id) != c.VolumeID:
		return nil, fmt.Errorf("%w: volume ID %q is not 32 lowercase hex digits", ErrBadConfig, c.VolumeID)
	case len(c.Keys) == 0 || len(c.Keys) > header.MaxSlots:
		return nil, fmt.Errorf("%w: %d keys, want 1 to %d", ErrBadConfig, len(c.Keys), header.MaxSlots)
	case c.ReuseFiles < 0 || c.ReuseSeconds < 0:
		return nil, fmt.Errorf("%w: negative data key reuse", ErrBadConfig)
	}
	if _, err := blockShift(c.BlockSize); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	seen := map[string]bool{}
	for _, k := range c.Keys {
		if k == "" || len(k) > header.MaxURILen || seen[k] {
			return nil, fmt.Errorf("%w: bad or repeated key URI %q", ErrBadConfig, keyring.RedactURI(k))
		}
		seen[k] = true
	}
	ok = true
	return &c, nil
}

// setConfig makes cfg the volume's configuration; new files are keyed by
// its key list and reuse policy from now on.
func (v *Volume) setConfig(cfg *Config) {
	defer v.loaded.Store(true)
	if cfg.Version >= 3 && v.Layout3 == nil {
		if l, err := blockcipher.NewLayout3(cfg.BlockSize, header.PreambleSize+2*cfg.HeaderCopySize); err == nil {
			v.Layout3 = &l
		}
	}
	v.cfgMu.Lock()
	v.Config = *cfg
	v.encCtx = EncryptionContext(cfg.VolumeID)
	old := v.keys
	reuse, age := max(cfg.ReuseFiles, 1), max(cfg.ReuseSeconds, 1)
	v.keys = newKeySource(v, cfg.Keys, reuse, time.Duration(age)*time.Second, -1)
	v.cfgMu.Unlock()
	if old != nil {
		old.close()
	}
}

// Reload reads the configuration again (after "kmsfs rewrap" changed the
// key list of a mounted volume). A write-only volume cannot read it.
func (v *Volume) Reload(ctx context.Context) error {
	if v.writeOnly {
		return fmt.Errorf("%s: a write-only mount cannot read the configuration; it keeps the one in its trust record", v.Dir)
	}
	cfg, err := v.readConfig(ctx)
	if err == nil {
		err = v.takeSlotKey(cfg)
	}
	if err == nil {
		err = v.takeNamesKey(cfg)
	}
	if cfg != nil {
		clear(cfg.SlotKey)
		clear(cfg.NamesKey)
	}
	if err != nil {
		return err
	}
	if cur := v.epoch(); cfg.Epoch < cur {
		return fmt.Errorf("%s: %w (epoch %d, the mount has %d); not reloaded", v.Dir, ErrRollback, cfg.Epoch, cur)
	}
	v.setConfig(cfg)
	v.Log.Printf("kmsfs: configuration reloaded: keys %v", keyring.RedactURIs(cfg.Keys))
	return nil
}

// writeConfig replaces the configuration file with cfg, atomically: a new
// file with a new data key wrapped under cfg.Keys, synced, renamed over
// the old one, and the directory synced.
func (v *Volume) writeConfig(ctx context.Context, cfg *Config) error {
	cfg.Epoch++
	nk := cfg.NamesKey
	if cfg.EncryptedNames() && nk == nil {
		// The key lives in locked memory; it is carried over unchanged.
		if v.namesKey == nil {
			return errors.New("writing configuration: the names key is not loaded")
		}
		nk = v.namesKey.Bytes()
	}
	// The slot key is carried over, or made now if the volume has none,
	// and held before any slot of the new configuration is tagged with it.
	if err := v.ensureSlotKey(cfg.SlotKey); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}
	v.cfgMu.RLock()
	sk := v.slotKey.Bytes()
	v.cfgMu.RUnlock()
	plain, err := marshalConfig(cfg, nk, sk)
	if err != nil {
		return err
	}
	defer clear(plain)
	ks := newKeySource(v, cfg.Keys, 1, time.Second, 0)
	ks.v1 = true // the configuration file keeps the layout of version 1
	defer ks.close()
	hdr, fk, err := ks.fileKeys(ctx)
	if err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}
	defer fk.destroy()
	data := append(hdr, fk.cipher.SealBlocks(nil, plain, 0)...)
	tmp := ConfigName + ".tmp"
	unix.Unlinkat(v.dir.Fd(), tmp, 0)
	if err := writeFileSync(v.dir, tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}
	if err := unix.Renameat(v.dir.Fd(), tmp, v.dir.Fd(), ConfigName); err != nil {
		return fmt.Errorf("writing configuration: %w", err)
	}
	return syncDir(v.dir)
}

// copySizeFor returns the header copy size of a new version-3 volume
// whose files are wrapped under uris: room for their slots, measured by
// wrapping a throwaway data key, with some to spare (a wrapped key's
// length may vary a little), and at least 1024 bytes.
func (v *Volume) copySizeFor(ctx context.Context, uris []string) (int, error) {
	need, err := v.copyNeeded(ctx, uris)
	if err != nil {
		return 0, err
	}
	need += 64
	c := max(1024, (need+15)/16*16)
	if c > header.MaxCopySize3 {
		return 0, fmt.Errorf("the key slots of %d keys need %d bytes per header copy; format version 3 holds at most %d (use fewer keys, or --format-version 2)", len(uris), need, header.MaxCopySize3)
	}
	return c, nil
}

// copyNeeded returns the header copy size the slots of a data key
// wrapped under uris need, measured by wrapping a throwaway one.
func (v *Volume) copyNeeded(ctx context.Context, uris []string) (int, error) {
	ks := newKeySource(v, uris, 1, time.Second, 0)
	defer ks.close()
	k, err := ks.generate(ctx)
	if err != nil {
		return 0, err
	}
	defer k.destroy()
	return header.CopyNeeded(k.slots), nil
}

// marshalConfig returns the JSON of cfg with the names key nk (nil for
// none). The key is spliced in by hand, into a buffer the caller wipes:
// encoding/json would leave its base64 in buffers of its own.
func marshalConfig(cfg *Config, nk, sk []byte) ([]byte, error) {
	c := *cfg
	c.NamesKey, c.SlotKey = nil, nil
	j, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, err
	}
	if nk == nil && sk == nil {
		return j, nil
	}
	if len(j) < 2 || j[len(j)-1] != '}' {
		return nil, errors.New("configuration JSON does not end its object")
	}
	body := bytes.TrimRight(j[:len(j)-1], " \n")
	n := len(body) + 2 + 2*40 + base64.StdEncoding.EncodedLen(len(nk)) + base64.StdEncoding.EncodedLen(len(sk))
	out := append(make([]byte, 0, n), body...)
	for _, f := range []struct {
		name string
		key  []byte
	}{{"names_key", nk}, {"slot_key", sk}} {
		if f.key == nil {
			continue
		}
		out = append(out, ",\n  \""+f.name+"\": \""...)
		k := len(out)
		if k+base64.StdEncoding.EncodedLen(len(f.key)) > cap(out) {
			return nil, errors.New("configuration JSON: buffer too small") // never: n counts every byte
		}
		out = out[:k+base64.StdEncoding.EncodedLen(len(f.key))]
		base64.StdEncoding.Encode(out[k:], f.key)
		out = append(out, '"')
	}
	if len(out)+2 > cap(out) {
		return nil, errors.New("configuration JSON: buffer too small")
	}
	return append(out, "\n}"...), nil
}

// fileKeys is what an opened header yields: the content cipher, with its
// key in locked memory. It is the cryptfile.Key of the file.
type fileKeys struct {
	v        *Volume // set for keys unlocked from a header
	fileID   [16]byte
	ck       *keyring.Key
	cipher   *blockcipher.Cipher
	volume   string
	hdr      *header.Header
	accepted int
	slot     header.Slot // the slot that opened the file
}

// FileID returns the file ID of the header.
func (fk *fileKeys) FileID() [16]byte { return fk.fileID }

// Cipher returns the content cipher.
func (fk *fileKeys) Cipher() *blockcipher.Cipher { return fk.cipher }

// Close wipes the content key once no handle needs it. The data key of a
// cloud key slot stays in the resolver's cache for its TTL from now (local
// keys are never cached).
func (fk *fileKeys) Close() {
	if fk.v != nil {
		fk.v.touchSlot(fk.slot)
	}
	fk.destroy()
}

// keepSlot caches dk as the data key of slot s (a cloud key's), or
// restarts the time to live of its cached copy.
func (v *Volume) keepSlot(s header.Slot, dk *keyring.Key) {
	if s.URI == "" || isLocal(s.URI) {
		return
	}
	v.res.Cache().Keep(v.aliasOf(s.URI), slotE(s), s.Context, dk)
}

// slotE is the wrapped key of s as its keyring knows it: without the tag
// of a public-key slot.
func slotE(s header.Slot) []byte {
	if e, _, ok := splitTag(s); ok && pubkey.IsURI(s.URI) {
		return e
	}
	return s.Wrapped
}

// touchSlot restarts the cache time to live of the data key of slot s
// (a cloud key's: local keys are not cached). The cache knows a
// public-key slot's data key by its encryption, without the tag.
func (v *Volume) touchSlot(s header.Slot) {
	if s.URI == "" || isLocal(s.URI) {
		return
	}
	v.res.Cache().Touch(v.aliasOf(s.URI), slotE(s), s.Context)
}

func (fk *fileKeys) destroy() {
	if fk == nil {
		return
	}
	fk.ck.Destroy()
	fk.ck = nil
	if fk.cipher != nil {
		fk.cipher.Wipe()
		fk.cipher = nil
	}
}

func newFileKeysFrom(dk *keyring.Key, fileID [16]byte, l blockcipher.Layout) (*fileKeys, error) {
	return newFileKeysWith(fileID, l, func(ck []byte) error {
		return header.Derive(ck, dk.Bytes(), fileID, header.ContentKey)
	})
}

// newFileKeysWith returns the keys of file fileID with the content key
// that fill writes into locked memory, for a file of format version 1.
func newFileKeysWith(fileID [16]byte, l blockcipher.Layout, fill func(ck []byte) error) (*fileKeys, error) {
	return newFileKeysV(header.Version, fileID, l, fill)
}

// newFileKeysV is newFileKeysWith for a file whose header has the given
// version: version 3 files get a Cipher of version 3.
func newFileKeysV(version uint16, fileID [16]byte, l blockcipher.Layout, fill func(ck []byte) error) (*fileKeys, error) {
	ck, err := keyring.NewKey()
	if err != nil {
		return nil, err
	}
	if err := fill(ck.Bytes()); err != nil {
		ck.Destroy()
		return nil, err
	}
	var c *blockcipher.Cipher
	if version == header.Version3 {
		c, err = blockcipher.New3(ck.Bytes(), fileID, l.BlockSize)
	} else {
		c, err = blockcipher.New(ck.Bytes(), fileID, l)
	}
	if err != nil {
		ck.Destroy()
		return nil, err
	}
	return &fileKeys{fileID: fileID, ck: ck, cipher: c}, nil
}

// Compile-time checks of the interfaces the engine takes.
var (
	_ cryptfile.Keyer = (*Volume)(nil)
	_ cryptfile.Key   = (*fileKeys)(nil)
)

// New returns a new file's header and key (cryptfile.Keyer).
func (v *Volume) New(ctx context.Context) ([]byte, cryptfile.Key, error) {
	v.cfgMu.RLock()
	ks := v.keys
	v.cfgMu.RUnlock()
	hdr, fk, err := ks.fileKeys(ctx)
	if err != nil {
		return nil, nil, err
	}
	return hdr, fk, nil
}

// newHeader returns the header of a new file of the given version.
func (v *Volume) newHeader(version uint16, id [16]byte, slots []header.Slot, dk []byte) ([]byte, error) {
	if version == header.Version3 {
		return header.NewV3(v.shift, v.Config.HeaderCopySize, id, slots, dk)
	}
	return header.New(v.shift, id, slots, dk)
}

// RotateNewFileKeys drops the data key new files share and those fetched
// ahead: the next new file (or re-encrypted one) gets a data key no file
// had before. kmsfs reencrypt calls it as a run starts.
func (v *Volume) RotateNewFileKeys() {
	v.cfgMu.RLock()
	ks := v.keys
	v.cfgMu.RUnlock()
	ks.reset()
}

// JournalKeys returns the Keyer of the volume's write journal: it loads
// the journal's key like any file's, and each new journal key comes from
// a data key of its own, neither shared with new files (whose data key
// reuse it would otherwise extend) nor counted among them.
func (v *Volume) JournalKeys() cryptfile.Keyer { return journalKeys{v} }

// journalKeys is the Keyer JournalKeys returns.
type journalKeys struct{ v *Volume }

// WriteOnly reports whether the volume is write-only: journal keys it
// makes, it cannot load.
func (j journalKeys) WriteOnly() bool { return j.v.writeOnly }

// Load reads and unlocks the journal's header.
func (j journalKeys) Load(ctx context.Context, fd int, name func() string) (cryptfile.Key, error) {
	return j.v.load(ctx, fd, name, true)
}

// New returns a header and key under a fresh data key.
func (j journalKeys) New(ctx context.Context) ([]byte, cryptfile.Key, error) {
	v := j.v
	v.cfgMu.RLock()
	ks := v.keys
	v.cfgMu.RUnlock()
	k, err := ks.generate(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer k.destroy()
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, err
	}
	hdr, err := header.New(v.shift, id, k.slots, k.dk.Bytes())
	if err != nil {
		return nil, nil, fmt.Errorf("journal header: %w", err)
	}
	fk, err := newFileKeysFrom(k.dk, id, v.Layout)
	if err != nil {
		return nil, nil, err
	}
	fk.volume = ks.volID
	return hdr, fk, nil
}

// headerPool recycles the buffers headers are read into (Parse copies
// what it keeps).
var headerPool = sync.Pool{New: func() any { return new([header.Size]byte) }}

// openReadahead is how much file content Load asks the kernel to read
// along with the header.
const openReadahead = 128 << 10

// Load reads and unlocks the header of the backing file fd
// (cryptfile.Keyer): a nil key for an empty file (it has no header yet).
// name names the file in errors and log lines; it is called only for
// them.
func (v *Volume) Load(ctx context.Context, fd int, name func() string) (cryptfile.Key, error) {
	return v.load(ctx, fd, name, false)
}

// parseHead parses the header at the start of b, the first bytes of a
// backing file (up to a page): the whole header must be there.
func parseHead(b []byte) (*header.Header, error) {
	p, err := header.ParsePreamble(b)
	if err != nil {
		return nil, err
	}
	if len(b) < p.HeaderLen() {
		return nil, fmt.Errorf("backing file of %d bytes, shorter than its %d-byte header", len(b), p.HeaderLen())
	}
	return header.Parse(b[:p.HeaderLen()])
}

// checkVersion checks that a header is of the version the volume's files
// have: version 3 with the volume's copy size in a version-3 volume,
// version 1 otherwise. The journal's header is always version 1.
func (v *Volume) checkVersion(p header.Preamble, journal bool) error {
	want3 := v.Layout3 != nil && !journal
	switch {
	case want3 && p.Version != header.Version3:
		return fmt.Errorf("a file of format version %d in a volume of version 3", p.Version)
	case !want3 && p.Version != header.Version:
		return fmt.Errorf("a file of format version %d in a volume of version %d", p.Version, v.Config.Version)
	case want3 && p.HeaderLen() != v.Layout3.HeaderLen:
		return fmt.Errorf("header of %d bytes, the volume's files have %d", p.HeaderLen(), v.Layout3.HeaderLen)
	}
	return nil
}

// load is Load, for the journal (whose header is always version 1) if
// journal is set.
func (v *Volume) load(ctx context.Context, fd int, name func() string, journal bool) (cryptfile.Key, error) {
	// Ask for the header and the first blocks in one disk read: a reader
	// of the file comes for them next, and the kernel's readahead for a
	// lone header read would stop short of them.
	unix.Fadvise(fd, 0, header.Size+openReadahead, unix.FADV_WILLNEED)
	buf := headerPool.Get().(*[header.Size]byte)
	defer headerPool.Put(buf)
	n, err := cryptfile.PreadHead(fd, buf[:])
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return nil, nil // no header yet
	}
	h, err := parseHead(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name(), errors.Join(ErrCorrupt, err))
	}
	if err := v.checkVersion(h.Preamble, journal); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", name(), ErrCorrupt, err)
	}
	fk, err := v.unlock(ctx, h, name())
	if err != nil {
		return nil, err
	}
	fk.v = v
	return fk, nil
}

// Close wipes the keys the volume holds for new files and the cache.
func (v *Volume) Close() {
	v.cfgMu.RLock()
	ks := v.keys
	v.cfgMu.RUnlock()
	if ks != nil {
		ks.close()
	}
	v.res.Cache().Purge()
	v.closeNames()
	v.dir.Close()
}

// Backing returns the volume's backing directory.
func (v *Volume) Backing() *backing.Dir { return v.dir }

// Resolver returns the volume's keyring resolver.
func (v *Volume) Resolver() *keyring.Resolver { return v.res }

// Stats are a volume's counters, for "kmsfs stats".
type Stats struct {
	Volume   string             `json:"volume"`
	Dir      string             `json:"cipher_dir"`
	NewKeys  KeySourceStats     `json:"new_file_keys"`
	Cache    keyring.CacheStats `json:"key_cache"`
	Keys     []keyring.KeyStats `json:"kms"`
	OpenKeys int                `json:"keys_in_locked_memory"`
	Locked   int64              `json:"locked_bytes"`
}

// Stats returns the volume's counters.
func (v *Volume) Stats() Stats {
	v.cfgMu.RLock()
	ks, id := v.keys, v.Config.VolumeID
	v.cfgMu.RUnlock()
	n, locked := keyring.KeysInUse()
	return Stats{
		Volume: id, Dir: v.Dir, NewKeys: ks.stats(), Cache: v.res.Cache().Stats(),
		Keys: v.res.Stats(), OpenKeys: n, Locked: locked,
	}
}

// unlock finds a key slot of h that opens and authenticates it. name is
// used in errors and log lines. Slots of local keys are tried first
// (cheap); a slot that fails is logged and the next is tried.
func (v *Volume) unlock(ctx context.Context, h *header.Header, name string) (*fileKeys, error) {
	var u *unlocked
	var dkErr error
	fk, err := newFileKeysV(h.Preamble.Version, h.Preamble.FileID, v.Layout, func(ck []byte) error {
		u, dkErr = v.unlockDK(ctx, h, name, ck)
		return dkErr
	})
	if u != nil {
		u.dk.Destroy()
	}
	switch {
	case dkErr != nil:
		return nil, dkErr // it names the file already
	case err != nil:
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	fk.volume, fk.hdr, fk.accepted, fk.slot = u.volume, h, u.accepted, u.slot
	return fk, nil
}

// unlocked is an authenticated header copy and its data key.
type unlocked struct {
	dk       *keyring.Key
	accepted int         // index of the valid copy
	slot     header.Slot // the slot that opened it
	volume   string
}

// unlockDK finds a key slot of h that opens and authenticates it and
// returns the data key; the caller destroys it. If ck is not nil, the
// file's content key is written into it.
func (v *Volume) unlockDK(ctx context.Context, h *header.Header, name string, ck []byte) (*unlocked, error) {
	if h.Preamble.BlockSize() != v.Layout.BlockSize {
		return nil, fmt.Errorf("%s: %w: block size %d, volume uses %d", name, ErrCorrupt, h.Preamble.BlockSize(), v.Layout.BlockSize)
	}
	var keyErrs, hdrErrs []error
	refused := 0 // of hdrErrs, slots their key refused
	for i, ce := range h.CopyErrs {
		if ce != nil {
			hdrErrs = append(hdrErrs, fmt.Errorf("header copy %d: %w", i, ce))
		}
	}
	// Both copies usually hold the same slots: unwrap each distinct slot
	// once, and check every copy against what it unwrapped to.
	unwrapped := map[string]*keyring.Key{}
	failed := map[string]bool{}
	defer func() {
		for _, dk := range unwrapped {
			dk.Destroy()
		}
	}()
	for _, ci := range h.Candidates() {
		c := h.Copies[ci]
		for _, s := range orderSlots(c.Slots) {
			id := s.URI + "\x00" + string(s.Wrapped) + "\x00" + string(s.Context)
			if failed[id] {
				continue
			}
			vol, err := volumeFromContext(s.Context)
			if err != nil {
				failed[id] = true
				hdrErrs = append(hdrErrs, err)
				continue
			}
			if want := v.volumeID(); want != "" && vol != want {
				failed[id] = true
				hdrErrs = append(hdrErrs, fmt.Errorf("key slot %s belongs to volume %s, not this volume %s", keyring.RedactURI(s.URI), vol, want))
				continue
			}
			dk := unwrapped[id]
			if dk == nil {
				dk, err = v.unwrapSlot(ctx, s)
				if err != nil {
					failed[id] = true
					// A wrapped key its own key refuses to open was altered
					// (or wrapped by another key): damage, not an outage.
					if errors.Is(err, keyring.ErrUnwrap) {
						hdrErrs = append(hdrErrs, err)
						refused++
					} else {
						keyErrs = append(keyErrs, err)
					}
					continue
				}
				unwrapped[id] = dk
			}
			if err := header.UnlockCopy(h.Preamble, c, dk.Bytes(), ck); err != nil {
				hdrErrs = append(hdrErrs, fmt.Errorf("header copy %d: %w", ci, err))
				break // the other slots of this copy hold the same key
			}
			delete(unwrapped, id) // handed to the caller
			u := &unlocked{dk: dk, accepted: ci, slot: s, volume: vol}
			for _, e := range keyErrs {
				v.warnOnce(e, "kmsfs: %s: a key slot failed (another worked; further failures of this kind are not logged): %v", name, e)
			}
			for _, e := range hdrErrs {
				v.Log.Printf("kmsfs: %s: damaged header copy (the other copy is good): %v", name, e)
			}
			return u, nil
		}
	}
	if len(hdrErrs) == 0 && len(keyErrs) > 0 {
		return nil, fmt.Errorf("%s: %w: %w", name, ErrKeyUnavailable, joinErrs(keyErrs))
	}
	if len(hdrErrs) == 0 {
		hdrErrs = append(hdrErrs, header.ErrNoValidCopy)
	}
	errs := joinErrs(append(hdrErrs, keyErrs...))
	err := fmt.Errorf("%s: %w: %w", name, ErrCorrupt, errs)
	if refused == len(hdrErrs) {
		return nil, &slotsRefused{error: err, refused: errs}
	}
	return nil, err
}

// slotsRefused is the error of unlockDK when the only damage seen is key
// slots that their key refused (keyring.ErrUnwrap). It reads and matches
// as the ErrCorrupt error it wraps; readConfig reports it as ErrWrongKey.
type slotsRefused struct {
	error         // the ErrCorrupt error
	refused error // the slots' errors
}

func (e *slotsRefused) Unwrap() error { return e.error }

// keyTimeout bounds the key service calls of one unwrap.
const keyTimeout = 2 * time.Minute

// unwrapSlot unwraps the data key of slot s with its own key, or failing
// that with an extra key of the same scheme. Calls to a key service end
// within keyTimeout; local keys need no timer.
func (v *Volume) unwrapSlot(ctx context.Context, s header.Slot) (*keyring.Key, error) {
	if !isLocal(s.URI) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, keyTimeout)
		defer cancel()
	}
	var errs []error
	if !v.trusts(s.URI) {
		errs = append(errs, fmt.Errorf("%w: slot names %s", ErrUntrusted, keyring.RedactURI(s.URI)))
	}
	try := func(uri string) *keyring.Key {
		kr, err := v.res.Get(ctx, uri)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		e, err := v.slotCiphertext(s, !v.loaded.Load())
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		dk, err := kr.Unwrap(ctx, e, s.Context)
		if err != nil {
			errs = append(errs, fmt.Errorf("unwrap with %s: %w", keyring.RedactURI(uri), err))
			return nil
		}
		return dk
	}
	if v.trusts(s.URI) {
		if dk := try(s.URI); dk != nil {
			return dk, nil
		}
	}
	scheme, _, _ := strings.Cut(s.URI, ":")
	for _, u := range v.extra {
		if u != s.URI && strings.HasPrefix(u, scheme+":") {
			if dk := try(u); dk != nil {
				v.aliasMu.Lock()
				if v.alias == nil {
					v.alias = map[string]string{}
				}
				v.alias[s.URI] = u
				v.aliasMu.Unlock()
				return dk, nil
			}
		}
	}
	return nil, joinErrs(errs)
}

// errList joins errors on one line (log lines and CLI errors are one
// line each); errors.Is and errors.As see every member.
type errList []error

func (l errList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (l errList) Unwrap() []error { return l }

func joinErrs(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return errList(errs)
}

func (v *Volume) aliasOf(uri string) string {
	v.aliasMu.Lock()
	defer v.aliasMu.Unlock()
	if a, ok := v.alias[uri]; ok {
		return a
	}
	return uri
}

// trusts reports whether slots naming uri may be unlocked.
func (v *Volume) trusts(uri string) bool {
	v.aliasMu.Lock()
	defer v.aliasMu.Unlock()
	return v.trusted[uri] || v.retired[uri]
}

// wrapsUnder reports whether new files may be wrapped under uri.
func (v *Volume) wrapsUnder(uri string) bool {
	v.aliasMu.Lock()
	defer v.aliasMu.Unlock()
	return v.trusted[uri]
}

// SetTrust replaces the trusted and retired keys (from the trust record,
// read again when a running mount reloads its configuration); keys named
// on the command line stay trusted.
func (v *Volume) SetTrust(trusted, retired []string) {
	v.aliasMu.Lock()
	defer v.aliasMu.Unlock()
	v.trusted, v.retired = map[string]bool{}, map[string]bool{}
	for _, u := range append(slices.Clone(trusted), v.extra...) {
		v.trusted[u] = true
	}
	for _, u := range retired {
		if !v.trusted[u] {
			v.retired[u] = true
		}
	}
}

// trust makes uri a trusted key (rewrap --add: the user named it).
func (v *Volume) trust(uri string) {
	v.aliasMu.Lock()
	defer v.aliasMu.Unlock()
	v.trusted[uri] = true
	delete(v.retired, uri)
}

// retire keeps uri for unlocking only (rewrap --remove).
func (v *Volume) retire(uri string) {
	v.aliasMu.Lock()
	defer v.aliasMu.Unlock()
	if v.trusted[uri] {
		delete(v.trusted, uri)
		v.retired[uri] = true
	}
}

// isLocal reports whether uri names a key of the embedded local keyring
// (no network).
func isLocal(uri string) bool { return strings.HasPrefix(uri, "local:") }

// orderSlots puts local keys first, keeping the order otherwise.
func orderSlots(s []header.Slot) []header.Slot {
	if len(s) == 1 {
		return s
	}
	out := make([]header.Slot, 0, len(s))
	for _, x := range s {
		if isLocal(x.URI) {
			out = append(out, x)
		}
	}
	for _, x := range s {
		if !isLocal(x.URI) {
			out = append(out, x)
		}
	}
	return out
}

// epoch returns the epoch of the configuration in use.
func (v *Volume) epoch() uint64 {
	v.cfgMu.RLock()
	defer v.cfgMu.RUnlock()
	return v.Config.Epoch
}

func (v *Volume) volumeID() string {
	v.cfgMu.RLock()
	defer v.cfgMu.RUnlock()
	return v.Config.VolumeID
}

// Keys returns the key URIs new files are wrapped under.
func (v *Volume) Keys() []string {
	v.cfgMu.RLock()
	defer v.cfgMu.RUnlock()
	return append([]string(nil), v.Config.Keys...)
}

// warnOnce logs a failure the first time its message is seen: a key that
// is gone fails for every file it wraps, and one line says it.
func (v *Volume) warnOnce(err error, format string, a ...any) {
	if _, dup := v.warned.LoadOrStore(err.Error(), true); !dup {
		v.Log.Printf(format, a...)
	}
}
