package v2reader

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"unicode/utf8"
)

// docs/FORMAT.md, "Regular files" and "Local keyring key file".
const (
	headerSize    = 4096
	preambleSize  = 32
	copySize      = 2032
	blockOverhead = 28
)

// LocalKey is a key of the local keyring (a key file with "kdf": "none").
type LocalKey struct {
	id  []byte // key_id: the first 8 bytes of HMAC(master, "kmsfs local key id")
	kek []byte // KEK' = HKDF(master, "", "kmsfs local wrap v1", 32)
}

// ReadLocalKey reads a local key file.
func ReadLocalKey(path string) (*LocalKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f struct {
		Version int    `json:"kmsfs_local_key"`
		KeyID   string `json:"key_id"`
		KDF     string `json:"kdf"`
		Key     string `json:"key"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.Version != 1 || f.KDF != "none" {
		return nil, fmt.Errorf("%s: version %d kdf %q: only version 1 without passphrase is read here", path, f.Version, f.KDF)
	}
	master, err := base64.StdEncoding.DecodeString(f.Key)
	if err != nil || len(master) != 32 {
		return nil, fmt.Errorf("%s: key is not 32 bytes of base64", path)
	}
	m := hmac.New(sha256.New, master)
	m.Write([]byte("kmsfs local key id"))
	id := m.Sum(nil)[:8]
	if hex.EncodeToString(id) != f.KeyID {
		return nil, fmt.Errorf("%s: key_id %s does not match the key", path, f.KeyID)
	}
	kek, err := hkdf.Key(sha256.New, master, nil, "kmsfs local wrap v1", 32)
	if err != nil {
		return nil, err
	}
	return &LocalKey{id: id, kek: kek}, nil
}

// unwrap returns the data key wrapped by this key for the encryption
// context ctx; ok is false if the wrapped key names another key.
func (k *LocalKey) unwrap(wrapped, ctx []byte) (dk []byte, ok bool, err error) {
	if len(wrapped) < 1+8+12+16 || wrapped[0] != 1 {
		return nil, false, errors.New("not a local keyring wrapped key")
	}
	if !bytes.Equal(wrapped[1:9], k.id) {
		return nil, false, nil
	}
	g, err := gcm(k.kek)
	if err != nil {
		return nil, true, err
	}
	dk, err = g.Open(nil, wrapped[9:21], wrapped[21:], append([]byte("kmsfs local v1"), ctx...))
	if err != nil {
		return nil, true, errors.New("wrapped key does not open")
	}
	return dk, true, nil
}

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// slot is one key slot of a header copy.
type slot struct {
	uri, ctx, wrapped []byte
}

// headerCopy is one parsed, non-empty header copy.
type headerCopy struct {
	index      int
	seq        uint64
	slots      []slot
	commitment []byte
	raw        []byte
}

// parseCopy parses a header copy of len(b) bytes (2032 in version 1, C in
// version 3), whose MAC is its last 32 bytes; nil, nil for an unused one.
func parseCopy(b []byte, index int) (*headerCopy, error) {
	if bytes.Equal(b, make([]byte, len(b))) {
		return nil, nil
	}
	macOffset := len(b) - 32
	c := &headerCopy{index: index, raw: b, seq: binary.BigEndian.Uint64(b[0:8])}
	n := int(b[8])
	if c.seq < 1 || n < 1 || n > 8 {
		return nil, fmt.Errorf("copy %d: sequence %d, %d slots", index, c.seq, n)
	}
	off := 9
	field := func(lo, hi int) ([]byte, error) {
		if off+2 > macOffset {
			return nil, errors.New("slots overrun the copy")
		}
		l := int(binary.BigEndian.Uint16(b[off:]))
		off += 2
		if l < lo || l > hi || off+l > macOffset {
			return nil, fmt.Errorf("field of %d bytes", l)
		}
		f := b[off : off+l]
		off += l
		return f, nil
	}
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		var s slot
		var err error
		if s.uri, err = field(1, 512); err != nil {
			return nil, fmt.Errorf("copy %d slot %d uri: %w", index, i, err)
		}
		if s.ctx, err = field(0, 1024); err != nil {
			return nil, fmt.Errorf("copy %d slot %d context: %w", index, i, err)
		}
		if s.wrapped, err = field(1, 2048); err != nil {
			return nil, fmt.Errorf("copy %d slot %d wrapped key: %w", index, i, err)
		}
		if !utf8.Valid(s.uri) || seen[string(s.uri)] {
			return nil, fmt.Errorf("copy %d slot %d: bad or repeated URI", index, i)
		}
		seen[string(s.uri)] = true
		c.slots = append(c.slots, s)
	}
	if off+32 > macOffset {
		return nil, fmt.Errorf("copy %d: no room for the commitment", index)
	}
	c.commitment = b[off : off+32]
	if !bytes.Equal(b[off+32:macOffset], make([]byte, macOffset-off-32)) {
		return nil, fmt.Errorf("copy %d: padding is not zero", index)
	}
	return c, nil
}

// contextVolume returns the volume ID named by an encryption context.
func contextVolume(ctx []byte) (string, error) {
	var c struct {
		V      string `json:"kmsfs"`
		Volume string `json:"volume"`
	}
	if err := json.Unmarshal(ctx, &c); err != nil || c.V != "v1" {
		return "", fmt.Errorf("encryption context %q", ctx)
	}
	if want := `{"kmsfs":"v1","volume":"` + c.Volume + `"}`; string(ctx) != want {
		return "", fmt.Errorf("encryption context %q is not in kmsfs's form", ctx)
	}
	return c.Volume, nil
}

// File is a decrypted regular backing file.
type File struct {
	BlockSize int
	VolumeID  string // the volume named by the accepted slot's context
	Plain     []byte
	// Version 3 only: whether the file is inline, the blocks that read
	// as holes and the groups that are holes.
	Inline     bool
	Holes      []int64
	HoleGroups []int64
}

// DecryptFile decrypts a regular backing file with key. volumeID, if not
// empty, is the volume the file must belong to; blockSize, if not 0, the
// volume's block size.
func DecryptFile(data []byte, key *LocalKey, volumeID string, blockSize int) (*File, error) {
	if len(data) == 0 {
		return &File{BlockSize: blockSize, VolumeID: volumeID, Plain: []byte{}}, nil
	}
	if len(data) < headerSize {
		return nil, fmt.Errorf("torn header: %d bytes", len(data))
	}
	pre := data[:preambleSize]
	if string(pre[:6]) != "KMSFS\x00" || binary.BigEndian.Uint16(pre[6:8]) != 1 ||
		pre[8] < 12 || pre[8] > 20 || !bytes.Equal(pre[9:16], make([]byte, 7)) {
		return nil, errors.New("bad preamble")
	}
	bs := 1 << pre[8]
	if blockSize != 0 && bs != blockSize {
		return nil, fmt.Errorf("block size %d, the volume's is %d", bs, blockSize)
	}
	fileID := pre[16:32]
	var copies []*headerCopy
	for i := 0; i < 2; i++ {
		off := preambleSize + i*copySize
		c, err := parseCopy(data[off:off+copySize], i)
		if err == nil && c != nil {
			copies = append(copies, c)
		}
	}
	// Descending sequence, copy 0 first on a tie (a stable sort keeps it
	// first).
	slices.SortStableFunc(copies, func(a, b *headerCopy) int {
		switch {
		case a.seq > b.seq:
			return -1
		case a.seq < b.seq:
			return 1
		}
		return 0
	})
	var dk []byte
	var vol string
	for _, c := range copies {
		for _, s := range c.slots {
			v, err := contextVolume(s.ctx)
			if err != nil || (volumeID != "" && v != volumeID) {
				continue // damage, or another volume's slot
			}
			k, ok, err := key.unwrap(s.wrapped, s.ctx)
			if !ok || err != nil {
				continue
			}
			if validCopy(pre, fileID, c, k) {
				dk, vol = k, v
				break
			}
		}
		if dk != nil {
			break
		}
	}
	if dk == nil {
		return nil, errors.New("no header copy is valid under the key")
	}
	ck, err := hkdf.Key(sha256.New, dk, fileID, "kmsfs v1 content key", 32)
	if err != nil {
		return nil, err
	}
	g, err := gcm(ck)
	if err != nil {
		return nil, err
	}
	cb := bs + blockOverhead
	d := len(data) - headerSize
	if r := d % cb; r >= 1 && r <= blockOverhead {
		return nil, fmt.Errorf("bad size %d: a block with no plaintext", len(data))
	}
	plain := []byte{}
	zero := make([]byte, cb)
	for n := 0; headerSize+n*cb < len(data); n++ {
		blk := data[headerSize+n*cb : min(headerSize+(n+1)*cb, len(data))]
		if bytes.Equal(blk, zero) {
			plain = append(plain, make([]byte, bs)...) // a hole
			continue
		}
		ad := binary.BigEndian.AppendUint64(append([]byte(nil), fileID...), uint64(n))
		p, err := g.Open(nil, blk[:12], blk[12:], ad)
		if err != nil {
			return nil, fmt.Errorf("block %d does not decrypt", n)
		}
		plain = append(plain, p...)
	}
	return &File{BlockSize: bs, VolumeID: vol, Plain: plain}, nil
}

// validCopy reports whether c is valid under the data key dk: its
// commitment and then its mac check.
func validCopy(pre, fileID []byte, c *headerCopy, dk []byte) bool {
	commit, err := hkdf.Key(sha256.New, dk, fileID, "kmsfs v1 key commitment", 32)
	if err != nil || !hmac.Equal(commit, c.commitment) {
		return false
	}
	mk, err := hkdf.Key(sha256.New, dk, fileID, "kmsfs v1 header mac", 32)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, mk)
	m.Write(pre)
	m.Write(c.raw[:len(c.raw)-32])
	return hmac.Equal(m.Sum(nil), c.raw[len(c.raw)-32:])
}

// Config is the volume configuration ("Volume configuration").
type Config struct {
	Format    string   `json:"format"`
	Version   int      `json:"version"`
	VolumeID  string   `json:"volume_id"`
	BlockSize int      `json:"block_size"`
	Keys      []string `json:"keys"`
	Names     string   `json:"names"`
	NamesKey  []byte   `json:"names_key"` // standard base64 in the JSON
	// HeaderCopySize is C, the header copy size of the regular files of
	// a version-3 volume ("Regular files, version 3"); 0 before.
	HeaderCopySize int `json:"header_copy_size"`
}

// DecryptFile decrypts a regular backing file of the volume c
// configures, with the layout of its version.
func (c *Config) DecryptFile(data []byte, key *LocalKey) (*File, error) {
	if c.Version >= 3 {
		return DecryptFileV3(data, key, c.VolumeID, c.BlockSize, c.HeaderCopySize)
	}
	return DecryptFile(data, key, c.VolumeID, c.BlockSize)
}

// VolumeIDBytes is the volume ID as 16 bytes: the root's directory ID.
func (c *Config) VolumeIDBytes() ([]byte, error) {
	b, err := hex.DecodeString(c.VolumeID)
	if err != nil || len(b) != DirIDSize || hex.EncodeToString(b) != c.VolumeID {
		return nil, fmt.Errorf("volume_id %q is not 32 lowercase hex digits", c.VolumeID)
	}
	return b, nil
}

// ReadConfig decrypts and checks the configuration of the volume in dir.
func ReadConfig(dir string, key *LocalKey) (*Config, error) {
	p := filepath.Join(dir, "kmsfs.conf")
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	f, err := DecryptFile(data, key, "", 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	var c Config
	if err := json.Unmarshal(f.Plain, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	switch {
	case c.Format != "kmsfs" || c.Version < 1 || c.Version > 3:
		return nil, fmt.Errorf("%s: format %q version %d", p, c.Format, c.Version)
	case c.Version == 3 && !validCopySize3(c.HeaderCopySize):
		return nil, fmt.Errorf("%s: header_copy_size %d", p, c.HeaderCopySize)
	case c.Version < 3 && c.HeaderCopySize != 0:
		return nil, fmt.Errorf("%s: header_copy_size in a version-%d configuration", p, c.Version)
	case c.VolumeID != f.VolumeID:
		return nil, fmt.Errorf("%s: volume_id %s, its key slot names %s", p, c.VolumeID, f.VolumeID)
	case c.BlockSize != f.BlockSize:
		return nil, fmt.Errorf("%s: block_size %d, its preamble says %d", p, c.BlockSize, f.BlockSize)
	case c.Version == 1 && (c.Names != "" || c.NamesKey != nil):
		return nil, fmt.Errorf("%s: version 1 with names settings", p)
	case c.Version >= 2 && c.Names != "siv" && c.Names != "plaintext":
		return nil, fmt.Errorf("%s: names %q", p, c.Names)
	case c.Names == "siv" && len(c.NamesKey) != NamesKeySize:
		return nil, fmt.Errorf("%s: names_key of %d bytes", p, len(c.NamesKey))
	case c.Names != "siv" && c.NamesKey != nil:
		return nil, fmt.Errorf("%s: names_key without \"names\": \"siv\"", p)
	}
	if _, err := c.VolumeIDBytes(); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &c, nil
}
