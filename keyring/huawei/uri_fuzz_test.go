package huawei

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
)

// FuzzOpenURI feeds key URIs to the opener that Register adds for huawei-kms,
// through keyring.Registry.Open. Credentials come from the environment, so Open
// resolves them without a network call and makes no KMS call.
//
// It checks that Open never panics, that every rejection wraps
// keyring.ErrBadURI, and that an accepted URI has a valid region, a key ID
// shaped like a UUID, a non-empty project (the environment gives none), no
// query parameter but project and endpoint, and an endpoint that is https,
// or http to a loopback host only. The URI an accepted keyring
// reports opens again to the same region, key, project and endpoint.
func FuzzOpenURI(f *testing.F) {
	f.Setenv("HUAWEICLOUD_SDK_AK", "HPUAFUZZAK01")
	f.Setenv("HUAWEICLOUD_SDK_SK", "fuzz-sk")
	f.Setenv("HUAWEICLOUD_SDK_PROJECT_ID", "")
	f.Setenv("HUAWEICLOUD_SDK_SECURITY_TOKEN", "")
	f.Setenv("HOME", f.TempDir())
	f.Add("huawei-kms://cn-north-4/0d0466b0-e727-4d9c-b35d-f84bb474a37f?project=0123456789abcdef0123456789abcdef")
	f.Add("huawei-kms://cn-north-4/0d0466b0-e727-4d9c-b35d-f84bb474a37f?project=p&endpoint=http://localhost:8080")
	f.Add("huawei-kms://cn-north-4/0d0466b0-e727-4d9c-b35d-f84bb474a37f?project=p&endpoint=http://kms.example.com")

	reg := keyring.NewRegistry(Register)
	f.Fuzz(func(t *testing.T, raw string) {
		if u, err := url.Parse(raw); err == nil && u.Scheme != Scheme {
			return // another provider's URI
		}
		kr, err := reg.Open(context.Background(), raw, keyring.Options{})
		if err != nil {
			if !errors.Is(err, keyring.ErrBadURI) {
				t.Fatalf("reg.Open(%q) error = %v, want keyring.ErrBadURI", raw, err)
			}
			return
		}
		k, ok := kr.(*Keyring)
		if !ok {
			t.Fatalf("reg.Open(%q) = %T, want *Keyring", raw, kr)
		}
		ku := k.uri
		if !validRegion(ku.Region) {
			t.Fatalf("reg.Open(%q) accepted region %q", raw, ku.Region)
		}
		if !validKey(ku.Key) {
			t.Fatalf("reg.Open(%q) accepted key %q", raw, ku.Key)
		}
		if len(ku.Query) != 1 || ku.Query.Get("project") == "" {
			t.Fatalf("reg.Open(%q) accepted query parameters %v, want a project", raw, ku.Query)
		}
		if ep := ku.Endpoint; ep != nil {
			if why := badEndpoint(ep); why != "" {
				t.Fatalf("reg.Open(%q) accepted endpoint %q: %s", raw, ep, why)
			}
		}

		again, err := reg.Open(context.Background(), k.URI(), keyring.Options{})
		if err != nil {
			t.Fatalf("reg.Open(%q) error = %v; it was rendered from %q", k.URI(), err, raw)
		}
		ku2 := again.(*Keyring).uri
		if ku2.Region != ku.Region || ku2.Key != ku.Key || endpointString(ku2.Endpoint) != endpointString(ku.Endpoint) || !reflect.DeepEqual(ku2.Query, ku.Query) {
			t.Fatalf("reg.Open(%q) = %+v, want %+v (the values parsed from %q)", k.URI(), ku2, ku, raw)
		}
	})
}

// validRegion reports whether s is a region as the provider documents it:
// 1 to 64 letters, digits, '-' or '_'.
func validRegion(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == ""
}

// validKey reports whether s is a key ID: five groups of 8, 4, 4, 4 and
// 12 lower-case letters or digits, joined by '-'.
func validKey(s string) bool {
	groups := strings.Split(s, "-")
	if len(groups) != 5 {
		return false
	}
	for i, g := range groups {
		if len(g) != []int{8, 4, 4, 4, 12}[i] || strings.Trim(g, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			return false
		}
	}
	return true
}

// badEndpoint says what is wrong with an accepted endpoint, or "".
// Plain http must name a loopback host; the check here is independent of
// cloud.IsLoopback.
func badEndpoint(ep *url.URL) string {
	switch {
	case ep.User != nil || ep.Path != "" || ep.RawQuery != "" || ep.Fragment != "" || ep.Opaque != "":
		return "want only scheme, host and port"
	case ep.Host == "":
		return "no host"
	case ep.Scheme == "https":
		return ""
	case ep.Scheme != "http":
		return "scheme is neither https nor http"
	}
	host := ep.Hostname()
	if host == "localhost" {
		return ""
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Unmap().IsLoopback() {
		return "plain http to a host that is not loopback"
	}
	return ""
}

func endpointString(ep *url.URL) string {
	if ep == nil {
		return ""
	}
	return ep.String()
}
