package local

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/awnumar/memguard"

	"github.com/kmsfs/kmsfs/keyring"
)

// ErrSameKeyFile is wrapped by the error of ChangePassphrase when the new
// key file, read back before it replaces the old one, does not hold the
// same master key (the old file is then left as it was).
var ErrSameKeyFile = errors.New("the new key file does not hold the same key")

// Protected reports whether the key file at the absolute path is sealed
// under a passphrase. The file is checked as Open checks it (a regular
// file owned by the current user, private to them, well formed); its key
// is not unsealed.
func Protected(path string) (bool, error) {
	if !filepath.IsAbs(path) {
		return false, fmt.Errorf("local: key file path %q: %w: not absolute", path, keyring.ErrBadURI)
	}
	data, err := readKeyFile(path)
	if err != nil {
		return false, err
	}
	defer memguard.WipeBytes(data)
	kf, err := parseKeyFile(data)
	if err != nil {
		return false, fmt.Errorf("local: key file %s: %w", path, err)
	}
	defer kf.wipe()
	return kf.kdf == kdfScrypt, nil
}

// ChangePassphrase rewrites the key file at the absolute path with the
// same master key sealed under a new passphrase, or in clear if the new
// passphrase is empty or newPass is nil. Volumes keep opening with it:
// the key, and so its key ID, does not change.
//
// If the file is protected, oldPass is asked for its passphrase (prompt
// "passphrase for local key PATH"); a wrong one is an error wrapping
// keyring.ErrBadCredentials and changes nothing. Only then is newPass
// asked (prompt "new passphrase for local key PATH").
//
// The change is crash-safe: the new file is written under a temporary
// name in the same directory (mode of the old file, at most 0600),
// synced, read back and checked to hold the same key, renamed over the
// old file, and the directory is synced. The old file is untouched until
// the new one is on disk, so after a crash the path holds the key under
// the old passphrase or the new one; a leftover temporary file
// (.NAME.tmp-*) holds the key under the new passphrase and may be
// deleted. If path is a symbolic link, the file it points to is replaced.
func ChangePassphrase(path string, oldPass, newPass func(prompt string) ([]byte, error)) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("local: key file path %q: %w: not absolute", path, keyring.ErrBadURI)
	}
	master, err := loadMaster(path, oldPass)
	if err != nil {
		return err
	}
	defer master.Destroy()
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("local: key file %s: %w", path, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("local: key file %s: %w", path, err)
	}
	var pass []byte
	if newPass != nil {
		if pass, err = newPass("new passphrase for local key " + path); err != nil {
			return fmt.Errorf("local: reading new passphrase for key file %s: %w", path, err)
		}
		defer memguard.WipeBytes(pass)
	}
	data, err := marshalKeyFile(master, pass)
	if err != nil {
		return fmt.Errorf("local: key file %s: %w", path, err)
	}
	defer memguard.WipeBytes(data)
	if err := replaceKeyFile(real, data, fi.Mode().Perm()&0o600, func(tmp string) error {
		return checkSameKey(tmp, master, pass)
	}); err != nil {
		return fmt.Errorf("local: rewriting key file %s: %w", path, err)
	}
	return nil
}

// checkSameKey reads the key file at path back and checks that it holds
// master, sealed under pass if pass is not empty.
func checkSameKey(path string, master *keyring.Key, pass []byte) error {
	got, err := loadMaster(path, func(string) ([]byte, error) {
		p := make([]byte, len(pass))
		copy(p, pass)
		return p, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSameKeyFile, err)
	}
	defer got.Destroy()
	if subtle.ConstantTimeCompare(got.Bytes(), master.Bytes()) != 1 {
		return ErrSameKeyFile
	}
	return nil
}

// replaceKeyFile replaces the file at path with data: it writes a
// temporary file in the same directory with mode perm, syncs it, calls
// check on it, renames it over path and syncs the directory. On failure
// before the rename the temporary file is removed and path is untouched.
func replaceKeyFile(path string, data []byte, perm os.FileMode, check func(tmp string) error) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = check(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Clean(dir))
}
