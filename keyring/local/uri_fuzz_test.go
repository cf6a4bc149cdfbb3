package local

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
)

// FuzzParseURI checks that ParseURI never panics, that every rejection
// wraps keyring.ErrBadURI, and that an accepted URI names a clean absolute
// path which URI renders back to the input and which parses again to the
// same path. Two spellings are tolerated because url.Parse erases them
// before pathOf sees the URL: the case of the scheme and an empty
// fragment (a trailing "#").
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"local:///home/alice/.config/kmsfs/local.key",
		"local:///k",
		"local:///dir/with%20space/key",
		"local://host/key",
		"local:relative/key",
		"local:///a/../key",
		"local:///key?x=1",
		"local:///key#frag",
		"local:/key",
		"LOCAL:///key",
		"local:///a%2Fb",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		path, err := ParseURI(s)
		if err != nil {
			if !errors.Is(err, keyring.ErrBadURI) {
				t.Fatalf("ParseURI(%q) error = %v, want keyring.ErrBadURI", s, err)
			}
			return
		}
		if path == "" || !filepath.IsAbs(path) || filepath.Clean(path) != path {
			t.Fatalf("ParseURI(%q) = %q, want a clean absolute path", s, path)
		}
		r := URI(path)
		scheme, rest, _ := strings.Cut(strings.TrimSuffix(s, "#"), ":")
		if !strings.EqualFold(scheme, Scheme) || Scheme+":"+rest != r {
			t.Fatalf("URI(ParseURI(%q)) = %q, want the input back", s, r)
		}
		again, err := ParseURI(r)
		if err != nil || again != path {
			t.Fatalf("ParseURI(URI(%q)) = %q, %v, want %q", path, again, err, path)
		}
	})
}
