// Package local implements the embedded default keyring: a 256-bit master
// key kept in a file on the local machine, optionally sealed under a
// passphrase, that wraps data keys with AES-256-GCM.
//
// Key URIs have the form local:///ABSOLUTE/PATH/TO/KEYFILE. The key file
// and the wrapped key layout are specified in docs/FORMAT.md ("Local
// keyring key file"). Register adds the "local" scheme to a
// keyring.Registry.
//
// The master key and the key-wrapping key derived from it live in locked
// memory (keyring.Key) for the life of a Keyring and nowhere else between
// calls: the AES-GCM state a wrap or unwrap needs, and the HMAC state of a
// derivation, are made for the call and wiped after it (keyring/secmem).
package local

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/awnumar/memguard"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/secmem"
)

// Scheme is the URI scheme of the local keyring.
const Scheme = "local"

// WrappedSize is the size in bytes of a data key wrapped by the local
// keyring: 0x01 || key_id (8) || nonce (12) || GCM ciphertext and tag (48).
const WrappedSize = 1 + KeyIDSize + nonceSize + keyring.DataKeySize + tagSize

const (
	wrapVersion = 0x01
	wrapInfo    = "kmsfs local wrap v1"
	wrapADLabel = "kmsfs local v1"
)

var (
	// ErrInsecureKeyFile is wrapped (together with keyring.ErrAccessDenied)
	// by the error for a key file that others may read or write, or that
	// belongs to another user.
	ErrInsecureKeyFile = errors.New("local key file is not private to its owner")
	// ErrClosed is returned by a Keyring used after Close.
	ErrClosed = errors.New("local keyring is closed")
)

// Register adds the local keyring to reg under Scheme.
func Register(reg *keyring.Registry) {
	reg.Register(Scheme, open)
}

// URI returns the key URI naming the key file at the absolute path.
func URI(path string) string {
	u := url.URL{Scheme: Scheme, Path: path}
	return u.String()
}

// ParseURI returns the key file path named by a local key URI. The URI
// must be exactly local:///ABSOLUTE/PATH with a clean path and no host,
// user, query or fragment; errors wrap keyring.ErrBadURI.
func ParseURI(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("local: %q: %w: not a URI", keyring.RedactURI(uri), keyring.ErrBadURI)
	}
	return pathOf(u)
}

func pathOf(u *url.URL) (string, error) {
	var why string
	switch {
	case u.Scheme != Scheme:
		why = fmt.Sprintf("scheme is %q, not %q", u.Scheme, Scheme)
	case u.Opaque != "" || (u.Path != "" && !filepath.IsAbs(u.Path)):
		why = "path is not absolute"
	case u.User != nil || u.Host != "":
		why = "a local key URI has no host"
	case u.OmitHost:
		why = "want three slashes after local:"
	case u.RawQuery != "" || u.ForceQuery:
		why = "a local key URI has no query"
	case u.Fragment != "" || u.RawFragment != "":
		why = "a local key URI has no fragment"
	case u.Path == "":
		why = "no path"
	case filepath.Clean(u.Path) != u.Path:
		why = fmt.Sprintf("path is not clean (want %s)", filepath.Clean(u.Path))
	case u.RawPath != "":
		why = "path is not in canonical percent-encoding"
	default:
		return u.Path, nil
	}
	return "", fmt.Errorf("local: %q: %w: %s (want local:///ABSOLUTE/PATH)", keyring.RedactURI(u.String()), keyring.ErrBadURI, why)
}

func open(ctx context.Context, u *url.URL, opts keyring.Options) (keyring.Keyring, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: opening %s: %w", keyring.RedactURI(u.String()), err)
	}
	path, err := pathOf(u)
	if err != nil {
		return nil, err
	}
	return Open(path, opts)
}

// Keyring is a local keyring. It implements keyring.Keyring and
// keyring.Wrapper and is safe for concurrent use.
type Keyring struct {
	path  string
	keyID [KeyIDSize]byte

	mu     sync.RWMutex
	master *keyring.Key // nil after Close
	kek    *keyring.Key // KEK' = HKDF(master, "", "kmsfs local wrap v1", 32)
}

var (
	_ keyring.Keyring = (*Keyring)(nil)
	_ keyring.Wrapper = (*Keyring)(nil)
)

// Create writes a new key file at the absolute path holding a random
// 256-bit master key. With an empty passphrase the key is stored in clear
// (kdf "none"); otherwise it is sealed under scrypt(passphrase) with
// N=32768, r=8, p=1. The file is created with mode 0600 and must not
// exist; missing parent directories are created with mode 0700. The file
// and its directory are synced before Create returns.
func Create(path string, passphrase []byte) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("local: creating key file %q: path is not absolute", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("local: creating key file %s: %w", path, err)
	}
	master, err := keyring.NewRandomKey()
	if err != nil {
		return fmt.Errorf("local: creating key file %s: %w", path, err)
	}
	defer master.Destroy()
	data, err := marshalKeyFile(master, passphrase)
	if err != nil {
		return fmt.Errorf("local: creating key file %s: %w", path, err)
	}
	defer memguard.WipeBytes(data)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("local: creating key file: %w", err)
	}
	err = f.Chmod(0o600) // whatever the umask
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("local: writing key file %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("local: creating key file %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// Open opens the key file at the absolute path.
//
// If opts.Create is set and the file does not exist, it is created first:
// unprotected if opts.Passphrase is nil, otherwise with the passphrase
// that opts.Passphrase returns for a prompt starting with "new passphrase"
// (an empty answer creates an unprotected file). The new file is then
// opened with that passphrase, without asking again.
//
// The file must be a regular file owned by the current user and not
// accessible by group or others. If it is protected, opts.Passphrase is
// asked for the passphrase; a wrong one gives an error wrapping
// keyring.ErrBadCredentials.
func Open(path string, opts keyring.Options) (*Keyring, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("local: key file path %q: %w: not absolute", path, keyring.ErrBadURI)
	}
	ask := opts.Passphrase
	if opts.Create {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			pass, err := createWith(path, opts)
			if err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err
			}
			if err == nil && len(pass) > 0 {
				defer memguard.WipeBytes(pass)
				ask = func(string) ([]byte, error) { return bytes.Clone(pass), nil }
			}
		}
	}
	master, err := loadMaster(path, ask)
	if err != nil {
		return nil, err
	}
	k, err := newKeyring(path, master)
	if err != nil {
		master.Destroy()
		return nil, fmt.Errorf("local: key file %s: %w", path, err)
	}
	return k, nil
}

// loadMaster reads the key file at path and returns its master key,
// asking ask for the passphrase if the file is protected. The caller
// destroys the key.
func loadMaster(path string, ask func(prompt string) ([]byte, error)) (*keyring.Key, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	defer memguard.WipeBytes(data)
	kf, err := parseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("local: key file %s: %w", path, err)
	}
	defer kf.wipe()

	var master *keyring.Key
	switch kf.kdf {
	case kdfNone:
		master, err = keyring.NewKeyFrom(kf.key)
		kf.key = nil // wiped by NewKeyFrom
		if err != nil {
			return nil, fmt.Errorf("local: key file %s: %w", path, err)
		}
	case kdfScrypt:
		if ask == nil {
			return nil, fmt.Errorf("local: key file %s is protected by a passphrase and there is no way to ask for it: %w", path, keyring.ErrBadCredentials)
		}
		pass, err := ask("passphrase for local key " + path)
		if err != nil {
			return nil, fmt.Errorf("local: reading passphrase for key file %s: %w", path, err)
		}
		master, err = unseal(kf, pass)
		memguard.WipeBytes(pass)
		if errors.Is(err, errWrongPassphrase) {
			return nil, fmt.Errorf("local: key file %s: wrong passphrase (or the file was altered): %w", path, keyring.ErrBadCredentials)
		}
		if err != nil {
			return nil, fmt.Errorf("local: key file %s: %w", path, err)
		}
	}
	if id := keyIDOf(master.Bytes()); id != kf.keyID {
		master.Destroy()
		return nil, fmt.Errorf("local: key file %s: %w: key_id %x does not match the key (whose ID is %x)", path, ErrKeyFile, kf.keyID, id)
	}
	return master, nil
}

// createWith creates the key file for Open with opts.Create set and
// returns the passphrase it was sealed under (nil for none), which the
// caller wipes.
func createWith(path string, opts keyring.Options) ([]byte, error) {
	var pass []byte
	if opts.Passphrase != nil {
		var err error
		pass, err = opts.Passphrase("new passphrase for local key " + path)
		if err != nil {
			return nil, fmt.Errorf("local: reading new passphrase for key file %s: %w", path, err)
		}
	}
	if err := Create(path, pass); err != nil {
		memguard.WipeBytes(pass)
		return nil, err
	}
	return pass, nil
}

// readKeyFile checks the file's type, owner and mode and returns its
// contents, which the caller wipes.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("local: %w: %w", keyring.ErrKeyNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("local: opening key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("local: key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("local: key file %s: %w: not a regular file (%v)", path, ErrKeyFile, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("local: key file %s is owned by uid %d, not by you (uid %d): %w: %w", path, st.Uid, os.Geteuid(), ErrInsecureKeyFile, keyring.ErrAccessDenied)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("local: key file %s has mode %04o, open to group or others (fix: chmod 600 %s): %w: %w", path, perm, path, ErrInsecureKeyFile, keyring.ErrAccessDenied)
	}
	if fi.Size() > MaxKeyFileSize {
		return nil, fmt.Errorf("local: key file %s: %w: %d bytes, limit %d", path, ErrKeyFile, fi.Size(), MaxKeyFileSize)
	}
	// One buffer of the final size: growing it would leave copies of the
	// key behind.
	buf := make([]byte, MaxKeyFileSize+1)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		memguard.WipeBytes(buf)
		return nil, fmt.Errorf("local: reading key file %s: %w", path, err)
	}
	if n > MaxKeyFileSize {
		memguard.WipeBytes(buf)
		return nil, fmt.Errorf("local: key file %s: %w: larger than %d bytes", path, ErrKeyFile, MaxKeyFileSize)
	}
	return buf[:n], nil
}

// newKeyring derives KEK' from master and returns a keyring owning master.
func newKeyring(path string, master *keyring.Key) (*Keyring, error) {
	kek, err := keyring.NewKey()
	if err != nil {
		return nil, err
	}
	if err := secmem.HKDF(kek.Bytes(), master.Bytes(), nil, wrapInfo); err != nil {
		kek.Destroy()
		return nil, fmt.Errorf("deriving wrapping key: %w", err)
	}
	return &Keyring{path: path, keyID: keyIDOf(master.Bytes()), master: master, kek: kek}, nil
}

// withAEAD calls f with AES-256-GCM under KEK'. The AEAD, whose AES and
// GHASH state would otherwise hold the wrapping key on the heap, is made
// for the call and wiped after it: the wrapping key lives only in locked
// memory between calls.
func (k *Keyring) withAEAD(f func(aead cipher.AEAD) error) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.kek == nil {
		return ErrClosed
	}
	aead, err := secmem.NewAESGCM(k.kek.Bytes(), false)
	if err != nil {
		return err
	}
	defer secmem.Wipe(aead)
	return f(aead)
}

// URI returns the key URI of the keyring, local:///PATH.
func (k *Keyring) URI() string { return URI(k.path) }

// Path returns the key file path.
func (k *Keyring) Path() string { return k.path }

// KeyID returns the key ID of the master key in hex, as in the key file.
func (k *Keyring) KeyID() string { return hex.EncodeToString(k.keyID[:]) }

// Close destroys the master key and the wrapping key. Later calls return
// ErrClosed. The AEAD's heap copy of the wrapping key is left to the
// garbage collector.
func (k *Keyring) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.master.Destroy()
	k.kek.Destroy()
	k.master, k.kek = nil, nil
	return nil
}

// GenerateDataKey returns a new random data key and the key wrapped under
// the master key, bound to encCtx.
func (k *Keyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*keyring.Key, []byte, error) {
	dk, err := keyring.NewRandomKey()
	if err != nil {
		return nil, nil, fmt.Errorf("local: generating data key: %w", err)
	}
	wrapped, err := k.Wrap(ctx, dk, encCtx)
	if err != nil {
		dk.Destroy()
		return nil, nil, err
	}
	return dk, wrapped, nil
}

// wrapAD returns the associated data of a wrapped key:
// "kmsfs local v1" || encCtx.
func wrapAD(encCtx []byte) []byte {
	ad := make([]byte, 0, len(wrapADLabel)+len(encCtx))
	return append(append(ad, wrapADLabel...), encCtx...)
}

// Wrap wraps dk under the master key, bound to encCtx, with a fresh
// random nonce: 0x01 || key_id || nonce || GCM(KEK', nonce, dk, AD).
func (k *Keyring) Wrap(ctx context.Context, dk *keyring.Key, encCtx []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: wrapping key: %w", err)
	}
	out := make([]byte, 1+KeyIDSize+nonceSize, WrappedSize)
	out[0] = wrapVersion
	copy(out[1:], k.keyID[:])
	nonce := out[1+KeyIDSize:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("local: wrapping key: reading random nonce: %w", err)
	}
	err := k.withAEAD(func(aead cipher.AEAD) error {
		out = aead.Seal(out, nonce, dk.Bytes(), wrapAD(encCtx))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("local: wrapping key with %s: %w", k.path, err)
	}
	return out, nil
}

// Unwrap returns the data key inside wrapped. Errors for a blob that is
// malformed, wrapped by another local key, bound to another context or
// altered wrap keyring.ErrUnwrap.
func (k *Keyring) Unwrap(ctx context.Context, wrapped, encCtx []byte) (*keyring.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: unwrapping key: %w", err)
	}
	if len(wrapped) != WrappedSize {
		return nil, fmt.Errorf("local: wrapped key is %d bytes, want %d: %w", len(wrapped), WrappedSize, keyring.ErrUnwrap)
	}
	if wrapped[0] != wrapVersion {
		return nil, fmt.Errorf("local: wrapped key has version %d, want %d: %w", wrapped[0], wrapVersion, keyring.ErrUnwrap)
	}
	if id := wrapped[1 : 1+KeyIDSize]; string(id) != string(k.keyID[:]) {
		return nil, fmt.Errorf("local: key was wrapped by a different local key (key_id %x), not by %s (key_id %x): %w", id, k.path, k.keyID, keyring.ErrUnwrap)
	}
	dk, err := keyring.NewKey()
	if err != nil {
		return nil, fmt.Errorf("local: unwrapping key: %w", err)
	}
	nonce := wrapped[1+KeyIDSize : 1+KeyIDSize+nonceSize]
	err = k.withAEAD(func(aead cipher.AEAD) error {
		// Open decrypts straight into locked memory: dk's slice has
		// exactly the capacity of the plaintext, so nothing lands on the
		// heap.
		if _, err := aead.Open(dk.Bytes()[:0], nonce, wrapped[1+KeyIDSize+nonceSize:], wrapAD(encCtx)); err != nil {
			return fmt.Errorf("key_id %x: %w", k.keyID, keyring.ErrUnwrap)
		}
		return nil
	})
	if err != nil {
		dk.Destroy()
		return nil, fmt.Errorf("local: unwrapping key with %s: %w", k.path, err)
	}
	return dk, nil
}
