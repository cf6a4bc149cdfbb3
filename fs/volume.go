// Package fs is the kmsfs filesystem: a go-fuse loopback over a backing
// directory in which every regular file is stored in the kmsfs format
// (docs/FORMAT.md). It owns the FUSE side and the life of per-file keys;
// the format itself lives in packages header and blockcipher, and key
// services in package keyring.
package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
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
	// ErrCorrupt: a header or block failed authentication or parsing.
	ErrCorrupt = errors.New("file is corrupted or was tampered with")
)

// Config is the plaintext of the volume configuration (docs/FORMAT.md).
type Config struct {
	Format    string   `json:"format"`
	Version   int      `json:"version"`
	VolumeID  string   `json:"volume_id"`
	BlockSize int      `json:"block_size"`
	Keys      []string `json:"keys"`
}

// Volume is an opened kmsfs volume: its configuration and the keyrings new
// files are wrapped under.
type Volume struct {
	// Dir is the absolute path of the backing directory.
	Dir string
	// Config is the authenticated configuration.
	Config Config
	// Layout is the block geometry of every file.
	Layout blockcipher.Layout
	// Log receives one line per failed file or block; it never receives
	// key material or file contents.
	Log *log.Logger

	res   *keyring.Resolver
	extra []string // key URIs tried for slots of the same scheme
	// alias maps a key URI that failed to the extra key that opened its
	// slot instead; new files are wrapped with the extra key but keep the
	// configured URI in their slots.
	aliasMu sync.Mutex
	alias   map[string]string
	encCtx  []byte
	shift   uint8
}

// OpenOptions are the optional parts of opening a volume.
type OpenOptions struct {
	// Log receives warnings and per-file errors; nil discards them.
	Log *log.Logger
	// ExtraKeys are key URIs tried for every key slot of the same scheme
	// whose own key fails, for example a local key file that moved (key
	// slots name keys by their absolute path).
	ExtraKeys []string
}

// EncryptionContext returns the encryption context kmsfs gives every key
// service for a volume (docs/FORMAT.md).
func EncryptionContext(volumeID string) []byte {
	return []byte(`{"kmsfs":"v1","volume":"` + volumeID + `"}`)
}

// volumeFromContext extracts the volume ID from an encryption context.
func volumeFromContext(encCtx []byte) (string, error) {
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
func Init(ctx context.Context, dir string, keyURIs []string, blockSize int, res *keyring.Resolver) (*Config, error) {
	if len(keyURIs) == 0 {
		return nil, errors.New("init: no key given")
	}
	shift, err := blockShift(blockSize)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigName)); err == nil {
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
			return nil, fmt.Errorf("init: key %s given twice", u)
		}
		seen[u] = true
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	cfg := Config{Format: "kmsfs", Version: 1, VolumeID: hex.EncodeToString(id[:]), BlockSize: blockSize, Keys: keyURIs}
	v := &Volume{Dir: dir, Config: cfg, Layout: layoutFor(blockSize), res: res, encCtx: EncryptionContext(cfg.VolumeID), shift: shift, Log: log.New(io.Discard, "", 0)}
	plain, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	hdr, fk, err := v.newFileKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	defer fk.destroy()
	data := append(hdr, fk.cipher.SealBlocks(nil, plain, 0)...)
	tmp := filepath.Join(dir, ConfigName+".tmp")
	if err := writeFileSync(tmp, data, 0o600); err != nil {
		return nil, fmt.Errorf("init: writing configuration: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, ConfigName)); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	return &cfg, nil
}

func writeFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
	cpath := filepath.Join(abs, ConfigName)
	f, err := os.Open(cpath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", abs, ErrNotVolume)
	}
	if err != nil {
		return nil, fmt.Errorf("open volume: %w", err)
	}
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
	v := &Volume{Dir: abs, res: res, Log: logger, shift: h.Preamble.BlockShift, extra: o.ExtraKeys}
	v.Layout = layoutFor(h.Preamble.BlockSize())
	fk, err := v.unlock(ctx, h, cpath)
	if err != nil {
		return nil, err
	}
	defer fk.destroy()
	plain, err := fk.cipher.OpenBlocks(nil, raw[header.Size:], 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", cpath, ErrBadConfig, err)
	}
	if len(plain) > maxConfigSize {
		return nil, fmt.Errorf("%s: %w: too large", cpath, ErrBadConfig)
	}
	dec := json.NewDecoder(bytes.NewReader(plain))
	if err := dec.Decode(&v.Config); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", cpath, ErrBadConfig, err)
	}
	c := v.Config
	switch {
	case c.Format != "kmsfs" || c.Version != 1:
		return nil, fmt.Errorf("%s: %w: format %q version %d is not supported by this kmsfs", cpath, ErrBadConfig, c.Format, c.Version)
	case c.VolumeID != fk.volume:
		return nil, fmt.Errorf("%s: %w: volume ID %s does not match its key slots (%s)", cpath, ErrBadConfig, c.VolumeID, fk.volume)
	case c.BlockSize != h.Preamble.BlockSize():
		return nil, fmt.Errorf("%s: %w: block size %d does not match its header (%d)", cpath, ErrBadConfig, c.BlockSize, h.Preamble.BlockSize())
	case len(c.Keys) == 0:
		return nil, fmt.Errorf("%s: %w: no keys", cpath, ErrBadConfig)
	}
	v.encCtx = EncryptionContext(c.VolumeID)
	for _, u := range c.Keys {
		if _, err := res.Get(ctx, v.aliasOf(u)); err != nil {
			logger.Printf("kmsfs: key %s is not usable: %v", u, err)
		}
	}
	return v, nil
}

// fileKeys is what an opened header yields: the content cipher, with its
// key in locked memory.
type fileKeys struct {
	fileID   [16]byte
	ck       *keyring.Key
	cipher   *blockcipher.Cipher
	volume   string
	hdr      *header.Header
	accepted int
}

func (fk *fileKeys) destroy() {
	if fk == nil {
		return
	}
	fk.ck.Destroy()
	fk.ck = nil
	fk.cipher = nil
}

func newFileKeysFrom(dk *keyring.Key, fileID [16]byte, l blockcipher.Layout) (*fileKeys, error) {
	ck, err := keyring.NewKey()
	if err != nil {
		return nil, err
	}
	if err := header.Derive(ck.Bytes(), dk.Bytes(), fileID, header.ContentKey); err != nil {
		ck.Destroy()
		return nil, err
	}
	c, err := blockcipher.New(ck.Bytes(), fileID, l)
	if err != nil {
		ck.Destroy()
		return nil, err
	}
	return &fileKeys{fileID: fileID, ck: ck, cipher: c}, nil
}

// newFileKeys makes a fresh data key wrapped under every key of the
// volume and returns the new file header and the file's keys.
func (v *Volume) newFileKeys(ctx context.Context) ([]byte, *fileKeys, error) {
	var slots []header.Slot
	var dk *keyring.Key
	defer func() { dk.Destroy() }()
	for i, u := range v.Config.Keys {
		kr, err := v.res.Get(ctx, v.aliasOf(u))
		if err != nil {
			return nil, nil, fmt.Errorf("new file key: %w", err)
		}
		var wrapped []byte
		if i == 0 {
			dk, wrapped, err = kr.GenerateDataKey(ctx, v.encCtx)
		} else {
			w, ok := kr.(keyring.Wrapper)
			if !ok {
				return nil, nil, fmt.Errorf("new file key: key %s cannot wrap an existing data key", u)
			}
			wrapped, err = w.Wrap(ctx, dk, v.encCtx)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("new file key: %w", err)
		}
		slots = append(slots, header.Slot{URI: u, Context: v.encCtx, Wrapped: wrapped})
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, err
	}
	hdr, err := header.New(v.shift, id, slots, dk.Bytes())
	if err != nil {
		return nil, nil, fmt.Errorf("new file header: %w", err)
	}
	fk, err := newFileKeysFrom(dk, id, v.Layout)
	if err != nil {
		return nil, nil, err
	}
	fk.volume = v.Config.VolumeID
	return hdr, fk, nil
}

// unlock finds a key slot of h that opens and authenticates it. name is
// used in errors and log lines. Slots of local keys are tried first
// (cheap); a slot that fails is logged and the next is tried.
func (v *Volume) unlock(ctx context.Context, h *header.Header, name string) (*fileKeys, error) {
	if h.Preamble.BlockSize() != v.Layout.BlockSize {
		return nil, fmt.Errorf("%s: %w: block size %d, volume uses %d", name, ErrCorrupt, h.Preamble.BlockSize(), v.Layout.BlockSize)
	}
	var keyErrs, hdrErrs []error
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
			if v.Config.VolumeID != "" && vol != v.Config.VolumeID {
				failed[id] = true
				hdrErrs = append(hdrErrs, fmt.Errorf("key slot %s belongs to volume %s, not this volume %s", s.URI, vol, v.Config.VolumeID))
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
					} else {
						keyErrs = append(keyErrs, err)
					}
					continue
				}
				unwrapped[id] = dk
			}
			if err := header.VerifyCopy(h.Preamble, c, dk.Bytes()); err != nil {
				hdrErrs = append(hdrErrs, fmt.Errorf("header copy %d: %w", ci, err))
				break // the other slots of this copy hold the same key
			}
			fk, err := newFileKeysFrom(dk, h.Preamble.FileID, v.Layout)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			fk.volume = vol
			fk.hdr = h
			fk.accepted = ci
			for _, e := range keyErrs {
				v.Log.Printf("kmsfs: %s: a key slot failed (another worked): %v", name, e)
			}
			for _, e := range hdrErrs {
				v.Log.Printf("kmsfs: %s: damaged header copy (the other copy is good): %v", name, e)
			}
			return fk, nil
		}
	}
	if len(hdrErrs) == 0 && len(keyErrs) > 0 {
		return nil, fmt.Errorf("%s: %w: %w", name, ErrKeyUnavailable, joinErrs(keyErrs))
	}
	if len(hdrErrs) == 0 {
		hdrErrs = append(hdrErrs, header.ErrNoValidCopy)
	}
	return nil, fmt.Errorf("%s: %w: %w", name, ErrCorrupt, joinErrs(append(hdrErrs, keyErrs...)))
}

// unwrapSlot unwraps the data key of slot s with its own key, or failing
// that with an extra key of the same scheme.
func (v *Volume) unwrapSlot(ctx context.Context, s header.Slot) (*keyring.Key, error) {
	var errs []error
	try := func(uri string) *keyring.Key {
		kr, err := v.res.Get(ctx, uri)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		dk, err := kr.Unwrap(ctx, s.Wrapped, s.Context)
		if err != nil {
			errs = append(errs, fmt.Errorf("unwrap with %s: %w", uri, err))
			return nil
		}
		return dk
	}
	if dk := try(s.URI); dk != nil {
		return dk, nil
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

// orderSlots puts local keys (no network) first, keeping the order
// otherwise.
func orderSlots(s []header.Slot) []header.Slot {
	out := make([]header.Slot, 0, len(s))
	for _, x := range s {
		if strings.HasPrefix(x.URI, "local:") {
			out = append(out, x)
		}
	}
	for _, x := range s {
		if !strings.HasPrefix(x.URI, "local:") {
			out = append(out, x)
		}
	}
	return out
}
