package main

import (
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
