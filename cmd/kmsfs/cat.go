package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/fs/volume"
	"github.com/kmsfs/kmsfs/keyring"
)

func init() {
	commands["cat"] = runCat
}

const catHelp = `Usage: kmsfs cat [--key URI]... [--passphrase-file F] CIPHERDIR PATH

Writes one file of the volume in CIPHERDIR to stdout, without mounting it.
PATH is the file's path inside the volume, as seen through a mount
(with encrypted names, cat encrypts each component to find the backing
file). Symlinks are not followed, neither in PATH nor to it. Keys are used only if trusted, as for mount.

If a block of the file is damaged, the output stops before it and cat
fails with an error naming the block.

Options:
    -k, --key URI             also trust this key (repeatable)
    -p, --passphrase-file F   passphrase of a protected local key file

Exit status: 0 ok, 6 the file is damaged (a header or block fails
authentication), 4 no trusted key opens it, 3 not a kmsfs volume or a
damaged configuration, 1 any other error (no such file, a directory).
`

func runCat(args []string) int {
	fl := flag.NewFlagSet("cat", flag.ContinueOnError)
	extraP, pf := keyFlags(fl)
	pos, code, ok := parseFlags(fl, args, catHelp)
	if !ok {
		return code
	}
	extra := *extraP
	if len(pos) != 2 {
		return usageError("cat takes CIPHERDIR and PATH, got %d arguments", len(pos))
	}
	if code := checkKeyURIs(extra...); code != 0 {
		return code
	}
	dir, _ := filepath.Abs(pos[0])
	if code := checkCipherDir(dir); code != 0 {
		return code
	}
	rel := strings.Trim(pos[1], "/")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res := keyring.NewResolver(newRegistry(), keyring.Options{Passphrase: passphraseSource(*pf)})
	vol, err := openOffline(ctx, dir, extra, res, log.New(os.Stderr, "", 0))
	if err != nil {
		return errorf(exitCode(err), "%s", printable(err.Error()))
	}
	defer vol.Close()
	switch {
	case rel == "" || rel == ".":
		return errorf(exitError, "%s: the volume's root is a directory; name a file in it", pos[1])
	case vol.Names() == nil && volume.Internal(rel):
		return errorf(exitError, "%s is kmsfs's own file, not part of the volume's contents", rel)
	}
	brel, err := vol.BackingPath(rel)
	if err != nil {
		return errorf(exitError, "%s: %s", rel, printable(err.Error()))
	}
	fd, err := vol.Backing().Open(brel, syscall.O_RDONLY, 0)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT):
			return errorf(exitError, "%s: no such file in the volume", rel)
		case errors.Is(err, backing.ErrSymlink):
			return errorf(exitError, "%s: is or leads through a symlink (cat does not follow symlinks)", rel)
		}
		return errorf(exitError, "%s: %v", rel, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return errorf(exitError, "%s: %v", rel, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		syscall.Close(fd)
		what := "not a regular file"
		if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			what = "a directory"
		}
		return errorf(exitError, "%s: %s", rel, what)
	}
	f := cryptfile.New(&cryptfile.Config{Layout: vol.Layout, Keys: vol, V3: vol.Layout3}, func() string { return rel })
	h, err := f.Open(ctx, fd)
	if err != nil {
		return errorf(fileExitCode(err), "%s", printable(err.Error()))
	}
	defer h.Close()
	if err := copyPlain(os.Stdout, h); err != nil {
		return errorf(fileExitCode(err), "%s: %s", rel, printable(err.Error()))
	}
	return exitOK
}

// copyPlain writes the plaintext of h to w, in order; a damaged block
// stops it with an error naming the block, and so does a damaged tail.
func copyPlain(w io.Writer, h *cryptfile.Handle) error {
	buf := make([]byte, cryptfile.MaxRequest)
	var off int64
	for {
		// Read, not ReadAt: it reports a damaged tail when it gets there
		// instead of an early end of file.
		n, err := h.Read(buf, off)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		off += int64(n)
	}
}
