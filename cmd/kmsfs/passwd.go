package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
)

func init() {
	commands["passwd"] = runPasswd
}

const passwdHelp = `Usage: kmsfs passwd [--key URI] [--passphrase-file OLD] [--new-passphrase-file NEW | --remove]

Adds, changes or removes the passphrase of a local key file. The key
itself does not change: every volume and file it opened still opens. The
new key file is written next to the old one, synced, and renamed over it;
an interruption leaves the old file or the new one, never neither.

Without --passphrase-file the current passphrase (of a protected file) is
asked on the terminal; without --new-passphrase-file or --remove the new
one is asked on the terminal, twice. Passphrase files must be private to
you (mode 0600); their first line is the passphrase.

Options:
    -k, --key URI                 the local key file, local:///PATH (default
                                  local://$HOME/.config/kmsfs/local.key)
    -p, --passphrase-file OLD     the current passphrase ("-": ask)
    -n, --new-passphrase-file NEW the new passphrase ("-": ask, twice)
        --remove                  store the key without a passphrase
`

func runPasswd(args []string) int {
	fl := flag.NewFlagSet("passwd", flag.ContinueOnError)
	key := fl.String("key", "", "")
	fl.StringVar(key, "k", "", "")
	oldFile := fl.String("passphrase-file", "", "")
	fl.StringVar(oldFile, "p", "", "")
	newFile := fl.String("new-passphrase-file", "", "")
	fl.StringVar(newFile, "n", "", "")
	remove := fl.Bool("remove", false, "")
	pos, code, ok := parseFlags(fl, args, passwdHelp)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return usageError("passwd takes no arguments (name the key file with --key)")
	}
	if *remove && *newFile != "" {
		return usageError("--remove and --new-passphrase-file exclude each other")
	}
	if *key == "" {
		def, err := defaultKeyURI()
		if err != nil {
			return errorf(exitKey, "%v", err)
		}
		*key = def
	}
	if code := checkKeyURIs(*key); code != 0 {
		return code
	}
	if !strings.HasPrefix(*key, local.Scheme+":") {
		return usageError("%s is not a local key file: passwd changes the passphrase of local:///PATH keys only (a key service protects its own keys)", keyring.RedactURI(*key))
	}
	path, err := local.ParseURI(*key)
	if err != nil {
		return usageError("%v", err)
	}
	for _, f := range []string{*oldFile, *newFile} {
		if err := checkPassphraseFile(f); err != nil {
			return errorf(exitCode(err), "%v", err)
		}
	}
	protected, err := local.Protected(path)
	if err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	noTTY := !term.IsTerminal(int(os.Stdin.Fd()))
	switch {
	case protected && (*oldFile == "" || *oldFile == "-") && noTTY:
		errorf(exitUsage, "%s is protected by a passphrase, asked on a terminal, and there is none", path)
		hintf("give it with --passphrase-file F")
		return exitUsage
	case !protected && *oldFile != "":
		return unusedPassphraseFile(*oldFile, path+" is not protected by a passphrase")
	case !protected && *remove:
		return errorf(exitError, "%s is not protected by a passphrase: nothing to remove", path)
	case !*remove && (*newFile == "" || *newFile == "-") && noTTY:
		errorf(exitUsage, "the new passphrase is asked on a terminal, and there is none")
		hintf("give it with --new-passphrase-file F, or remove the passphrase with --remove")
		return exitUsage
	}
	var newPass func(string) ([]byte, error)
	if !*remove {
		newPass = passphraseSource(*newFile)
	}
	if err := local.ChangePassphrase(path, passphraseSource(*oldFile), newPass); err != nil {
		return errorf(exitCode(err), "%v", err)
	}
	if *remove {
		fmt.Printf("kmsfs: %s is no longer protected by a passphrase; keep it as safe as the data it opens\n", path)
	} else {
		fmt.Printf("kmsfs: %s is protected by the new passphrase (the key is unchanged)\n", path)
	}
	return exitOK
}
