package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
)

func init() {
	commands["encrypt"] = runEncrypt
	commands["decrypt"] = runDecrypt
}

const encryptHelp = `Usage: kmsfs encrypt [--key URI]... [--block-size N] [--passphrase-file F] IN OUT

Encrypts the file IN into OUT, a standalone file in the kmsfs file format
(a header and AES-256-GCM blocks, docs/FORMAT.md "Standalone files"), for
use without a volume or FUSE: backups, transfers. Its data key is wrapped
under each --key; any one of them decrypts it. IN may be "-" (stdin). OUT
must not exist; it is created with mode 0600.

Options:
    -k, --key URI             key to wrap the data key under (repeatable);
                              default local://$HOME/.config/kmsfs/local.key
    -b, --block-size N        plaintext block size, a power of two from 4096
                              to 1048576 (default 4096)
    -p, --passphrase-file F   passphrase of a protected local key file

Exit status: 0 ok, 4 a key is unavailable, 1 any other error.
`

const decryptHelp = `Usage: kmsfs decrypt [--key URI]... [--passphrase-file F] IN OUT

Decrypts IN, a standalone kmsfs file made by "kmsfs encrypt" (or one
regular file of a volume's backing directory), into OUT. OUT may be "-"
(stdout); otherwise it must not exist, and is created with mode 0600 and
removed again if decryption fails.

Only the keys given with --key are used; without --key, only the local
key local://$HOME/.config/kmsfs/local.key. The key URIs stored in IN are
never used by themselves: whoever wrote IN chose them. A given key is
also tried on slots naming another key of the same kind (a local key
file that moved).

Options:
    -k, --key URI             key to unwrap with (repeatable)
    -p, --passphrase-file F   passphrase of a protected local key file

Exit status: 0 ok, 6 IN is damaged (a header or block fails
authentication: the error names the block), 4 no given key opens it,
3 IN is not a kmsfs file, 1 any other error.
`

// standaloneKeys returns the keys of encrypt and decrypt: those given,
// or the user's default local key.
func standaloneKeys(keys []string) ([]string, error) {
	if len(keys) > 0 {
		return keys, nil
	}
	def, err := defaultKeyURI()
	if err != nil {
		return nil, err
	}
	return []string{def}, nil
}

func runEncrypt(args []string) int {
	fl := flag.NewFlagSet("encrypt", flag.ContinueOnError)
	keysP, pf := keyFlags(fl)
	bs := fl.Int("block-size", volume.DefaultBlockSize, "")
	fl.IntVar(bs, "b", volume.DefaultBlockSize, "")
	pos, code, ok := parseFlags(fl, args, encryptHelp)
	if !ok {
		return code
	}
	keys := *keysP
	if len(pos) != 2 {
		return usageError("encrypt takes IN and OUT, got %d arguments", len(pos))
	}
	in, out := pos[0], pos[1]
	if out == "-" {
		return usageError("encrypt writes OUT at any offset: it must be a file, not stdout")
	}
	if code := checkKeyURIs(keys...); code != 0 {
		return code
	}
	ks, err := standaloneKeys(keys)
	if err != nil {
		return errorf(exitKey, "%v", err)
	}
	res := keyring.NewResolver(newRegistry(), keyring.Options{Passphrase: passphraseSource(*pf)})
	s, err := volume.NewStandalone(res, ks, *bs, nil)
	if err != nil {
		return errorf(exitError, "%v", err)
	}
	var r io.Reader = os.Stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return errorf(exitError, "%v", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			return errorf(exitError, "%s is a directory", in)
		}
		r = f
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fd, err := unix.Open(out, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return errorf(exitError, "%s exists; encrypt does not overwrite it", out)
		}
		return errorf(exitError, "%s: %v", out, err)
	}
	if err := encryptTo(ctx, s, r, fd, out); err != nil {
		os.Remove(out)
		return errorf(exitCode(err), "%v", err)
	}
	return exitOK
}

// encryptTo encrypts everything r gives into the new, empty file fd (and
// closes it).
func encryptTo(ctx context.Context, s *volume.Standalone, r io.Reader, fd int, name string) error {
	f := cryptfile.New(&cryptfile.Config{Layout: s.Layout(), Keys: s}, func() string { return name })
	h, err := f.Open(ctx, fd)
	if err != nil {
		return err
	}
	defer h.Close()
	buf := make([]byte, cryptfile.MaxRequest)
	var off int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if _, err := h.WriteAt(ctx, buf[:n], off); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading input: %w", rerr)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if off == 0 {
		// Even an empty plaintext gets a header: it names its keys, and
		// decrypt checks that it was made with one of them.
		hdr, k, err := s.New(ctx)
		if err != nil {
			return err
		}
		k.Close()
		if n, err := unix.Pwrite(h.Fd(), hdr, 0); err != nil || n < len(hdr) {
			if err == nil {
				err = io.ErrShortWrite
			}
			return fmt.Errorf("%s: writing header: %w", name, err)
		}
	}
	if err := h.Sync(false); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func runDecrypt(args []string) int {
	fl := flag.NewFlagSet("decrypt", flag.ContinueOnError)
	keysP, pf := keyFlags(fl)
	pos, code, ok := parseFlags(fl, args, decryptHelp)
	if !ok {
		return code
	}
	keys := *keysP
	if len(pos) != 2 {
		return usageError("decrypt takes IN and OUT, got %d arguments", len(pos))
	}
	in, out := pos[0], pos[1]
	if code := checkKeyURIs(keys...); code != 0 {
		return code
	}
	ks, err := standaloneKeys(keys)
	if err != nil {
		return errorf(exitKey, "%v", err)
	}
	fd, err := unix.Open(in, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return errorf(exitError, "%s: %v", in, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = errors.New("not a regular file")
		}
		return errorf(exitError, "%s: %v", in, err)
	}
	var pre [header.PreambleSize]byte
	n, err := cryptfile.PreadHead(fd, pre[:])
	if err != nil {
		unix.Close(fd)
		return errorf(exitError, "%s: %v", in, err)
	}
	p, err := header.ParsePreamble(pre[:n])
	if err != nil {
		unix.Close(fd)
		return errorf(exitNotVolume, "%s is not a kmsfs file: %v", in, err)
	}
	res := keyring.NewResolver(newRegistry(), keyring.Options{Passphrase: passphraseSource(*pf)})
	s, err := volume.NewStandalone(res, ks, p.BlockSize(), log.New(os.Stderr, "", 0))
	if err != nil {
		unix.Close(fd)
		return errorf(exitError, "%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg := &cryptfile.Config{Layout: s.Layout(), Keys: s}
	if p.Version == header.Version3 {
		// A file of a version-3 volume: its layout follows from its
		// preamble.
		l3, err := blockcipher.NewLayout3(p.BlockSize(), p.HeaderLen())
		if err != nil {
			unix.Close(fd)
			return errorf(exitNotVolume, "%s: %v", in, err)
		}
		cfg.V3 = &l3
	}
	f := cryptfile.New(cfg, func() string { return in })
	h, err := f.Open(ctx, fd)
	if err != nil {
		return errorf(fileExitCode(err), "%s", printable(err.Error()))
	}
	defer h.Close()
	if out == "-" {
		w := bufio.NewWriterSize(os.Stdout, 1<<20)
		if err := copyPlain(w, h); err != nil {
			w.Flush()
			return errorf(fileExitCode(err), "%s: %s", in, printable(err.Error()))
		}
		if err := w.Flush(); err != nil {
			return errorf(exitError, "writing output: %v", err)
		}
		return exitOK
	}
	o, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return errorf(exitError, "%s exists; decrypt does not overwrite it", out)
		}
		return errorf(exitError, "%v", err)
	}
	err = copyPlain(o, h)
	if err == nil {
		err = o.Sync()
	}
	if cerr := o.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return errorf(fileExitCode(err), "%s: %s", in, printable(err.Error()))
	}
	return exitOK
}
