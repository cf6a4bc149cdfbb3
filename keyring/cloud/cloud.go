// Package cloud holds what the cloud KMS providers share: key URI parsing,
// the error type that names provider, key and the service's own code, the
// retry policy (backoff with jitter, bounded in attempts and time, ctx
// aware), the check that an encryption context is canonical JSON, and an
// HTTP transport that carries a call's context into SDKs that take none.
//
// It knows nothing about any SDK.
package cloud

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/kmsfs/kmsfs/keyring"
)

// KeyURI is a parsed cloud key URI: SCHEME://REGION/KEY[?endpoint=URL&...].
type KeyURI struct {
	// Raw is the URI as given.
	Raw string
	// Scheme is the provider scheme, e.g. "alibaba-kms".
	Scheme string
	// Region is the cloud region, e.g. "cn-hangzhou".
	Region string
	// Key is the key ID or alias, as written after the region.
	Key string
	// Endpoint, if set, overrides the service endpoint. It is
	// "https://HOST[:PORT]" or, for loopback hosts only, "http://...".
	Endpoint *url.URL
	// Query holds the other query parameters.
	Query url.Values
}

// ParseKeyURI parses u as SCHEME://REGION/KEY with an optional endpoint
// query parameter. allowed lists the query parameters besides endpoint the
// provider accepts; any other one is an error (a typo should not be
// silently ignored). Keys may contain one slash (e.g. "alias/NAME").
func ParseKeyURI(u *url.URL, allowed ...string) (*KeyURI, error) {
	raw := u.String()
	bad := func(format string, args ...any) error {
		// A refused URI may hold what does not belong in it (a password):
		// it is shown redacted.
		return fmt.Errorf("%s: %w: %s", keyring.RedactURI(raw), keyring.ErrBadURI, fmt.Sprintf(format, args...))
	}
	if u.Opaque != "" {
		return nil, bad("want %s://REGION/KEY", u.Scheme)
	}
	if u.User != nil {
		return nil, bad("credentials do not belong in a key URI; use the SDK's credential chain")
	}
	if u.Fragment != "" {
		return nil, bad("unexpected fragment")
	}
	k := &KeyURI{Raw: raw, Scheme: u.Scheme, Region: u.Host, Query: url.Values{}}
	if k.Region == "" || !validRegion(k.Region) {
		return nil, bad("region %q: want letters, digits and '-' (e.g. cn-hangzhou)", k.Region)
	}
	k.Key = strings.TrimPrefix(u.Path, "/")
	if k.Key == "" {
		return nil, bad("missing key after the region")
	}
	for _, r := range k.Key {
		if r <= ' ' || r == 0x7f || r == '?' || r == '#' {
			return nil, bad("key %q contains a space or control character", k.Key)
		}
	}
	if strings.Count(k.Key, "/") > 1 || strings.HasSuffix(k.Key, "/") {
		return nil, bad("key %q: want an ID or alias/NAME", k.Key)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, bad("query: %v", err)
	}
	for name, vals := range q {
		if len(vals) != 1 {
			return nil, bad("query parameter %q given %d times", name, len(vals))
		}
		if name == "endpoint" {
			ep, err := ParseEndpoint(vals[0])
			if err != nil {
				return nil, bad("%v", err)
			}
			k.Endpoint = ep
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return nil, bad("unknown query parameter %q", name)
		}
		k.Query.Set(name, vals[0])
	}
	return k, nil
}

func validRegion(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return len(s) <= 64
}

// ParseEndpoint checks an endpoint override: https://HOST[:PORT], or
// http://HOST[:PORT] when HOST is a loopback address or "localhost". No
// path, query or user info.
func ParseEndpoint(s string) (*url.URL, error) {
	shown := keyring.RedactURI(s)
	ep, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: not a URL", shown)
	}
	if ep.Host == "" || ep.User != nil || (ep.Path != "" && ep.Path != "/") || ep.RawQuery != "" || ep.Fragment != "" {
		return nil, fmt.Errorf("endpoint %q: want https://HOST[:PORT]", shown)
	}
	ep.Path = ""
	switch ep.Scheme {
	case "https":
	case "http":
		if !IsLoopback(ep.Hostname()) {
			return nil, fmt.Errorf("endpoint %q: plain http is allowed only for loopback hosts; use https", shown)
		}
	default:
		return nil, fmt.Errorf("endpoint %q: want https://HOST[:PORT]", shown)
	}
	return ep, nil
}

// IsLoopback reports whether host (no port) is "localhost" or a loopback IP.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Error is a failed call to a key service. Its message is one line naming
// the provider, operation, key and region, what went wrong in words a user
// can act on, and the service's code and message; errors.Is finds Kind (a
// keyring sentinel) and the underlying cause.
type Error struct {
	Provider  string // e.g. "alibaba-kms"
	Op        string // the service's API name, e.g. "GenerateDataKey"
	Key       string // key ID or alias
	Region    string
	Kind      error  // a keyring sentinel
	Code      string // the service's error code, if any
	Message   string // the service's message or the transport error
	RequestID string
	Hint      string // what to do, if the sentinel alone does not say
	Cause     error  // underlying error (transport, context), may be nil
	Attempts  int    // set when retries were exhausted
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s key %s in %s: %v", e.Provider, e.Op, e.Key, e.Region, e.Kind)
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
	}
	if msg := oneLine(e.Message); msg != "" {
		fmt.Fprintf(&b, ": %s", msg)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request %s)", e.RequestID)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (gave up after %d attempts)", e.Attempts)
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, "; %s", e.Hint)
	}
	return b.String()
}

// Unwrap returns the sentinel and the cause.
func (e *Error) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Kind, e.Cause}
	}
	return []error{e.Kind}
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// Hints shared by the providers.
const (
	HintUnwrap = "the wrapped key was made by another key or for another volume, or was altered"
)

// ErrWrappedTooLong is returned when a service returns a wrapped key longer
// than the volume format allows.
var ErrWrappedTooLong = errors.New("wrapped key longer than 2048 bytes")

// MaxWrapped is the largest wrapped key the volume format stores.
const MaxWrapped = 2048

// CanonicalBase64 reports whether b is standard padded base64 in its one
// canonical spelling (what the encoder writes for the decoded bytes).
// Services decode leniently, so without this check an altered spelling of
// a wrapped key could still unwrap.
func CanonicalBase64(b []byte) bool {
	raw, err := base64.StdEncoding.Strict().DecodeString(string(b))
	return err == nil && len(raw) > 0 && base64.StdEncoding.EncodeToString(raw) == string(b)
}

// UpperHex reports whether b is non-empty, even-length, upper-case hex
// (the spelling kmsfs stores; services accept either case).
func UpperHex(b []byte) bool {
	if len(b) == 0 || len(b)%2 != 0 {
		return false
	}
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
