package main

import (
	"flag"
	"strings"

	"github.com/kmsfs/kmsfs/keyring/local"
)

// checkKeyURIs checks key URIs given on the command line before anything
// uses them: each must parse, name a known key service and hold no
// credentials, and a local one must name an absolute, clean path. A bad
// one is a usage error (exit 2), shown redacted (keyring.RedactURI).
// Checks that need the key service (region, key ID) happen when the key
// is opened; their failures exit 2 too (exitCode).
func checkKeyURIs(uris ...string) int {
	reg := newRegistry()
	for _, u := range uris {
		err := reg.Check(u)
		if err == nil && strings.HasPrefix(u, local.Scheme+":") {
			_, err = local.ParseURI(u)
		}
		if err != nil {
			return usageError("%v", err)
		}
	}
	return 0
}

// keyFlags adds the key options most commands share to fl: --key/-k
// (repeatable) and --passphrase-file/-p.
func keyFlags(fl *flag.FlagSet) (keys *stringList, passphraseFile *string) {
	keys = new(stringList)
	fl.Var(keys, "key", "")
	fl.Var(keys, "k", "")
	passphraseFile = fl.String("passphrase-file", "", "")
	fl.StringVar(passphraseFile, "p", "", "")
	return keys, passphraseFile
}
