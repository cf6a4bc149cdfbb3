package keyring

import "strings"

// redacted replaces a secret in a printed key URI.
const redacted = "REDACTED"

// RedactURI returns uri fit to print in an error or a log line: user
// information ("user:password@") becomes "REDACTED@", and so does the
// value of a query parameter whose name suggests a secret (password,
// secret, token, key, credential, signature) or whose value holds user
// information itself (an endpoint URL with a password). Key URIs carry no
// credentials — cloud credentials come from each SDK's chain — but a user
// may paste some into one, and every message that shows a URI goes
// through RedactURI so that they are never echoed.
//
// It works on the text alone, so that a URI that does not parse is
// redacted too; when unsure it redacts more rather than less.
func RedactURI(uri string) string {
	s := redactUserinfo(uri)
	body, frag, hasFrag := strings.Cut(s, "#")
	body, query, hasQuery := strings.Cut(body, "?")
	if hasQuery {
		body += "?" + redactQuery(query)
	}
	if hasFrag {
		body += "#" + frag
	}
	return body
}

// RedactURIs returns RedactURI of each of uris.
func RedactURIs(uris []string) []string {
	out := make([]string, len(uris))
	for i, u := range uris {
		out[i] = RedactURI(u)
	}
	return out
}

// redactUserinfo redacts what comes before the last '@' of the authority
// of s. A password holding a '/', '?' or '#' ends the authority early
// ("s://user:pa/ss@host/key"): after an authority with a ':' that is not
// a port, everything up to the last '@' of s is redacted.
func redactUserinfo(s string) string {
	colon := strings.IndexByte(s, ':')
	if colon < 0 || !strings.Contains(s, "@") {
		return s
	}
	start := colon + 1 // opaque form: "scheme:user:pw@..."
	if strings.HasPrefix(s[start:], "//") {
		start += 2
	}
	rest := s[start:]
	auth := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		auth = rest[:i]
	}
	at := strings.LastIndexByte(auth, '@')
	if at < 0 {
		c := strings.IndexByte(auth, ':')
		if c < 0 || allDigits(auth[c+1:]) {
			return s // no user information: "local:///a@b", "s://host:443/a@b"
		}
		at = strings.LastIndexByte(rest, '@')
		if at < 0 {
			return s // the '@' is before the scheme's ':': no user information
		}
	}
	if at == 0 {
		return s // "s://@host": nothing to hide
	}
	return s[:start] + redacted + rest[at:]
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// secretWords are parts of query parameter names whose values are
// redacted.
var secretWords = []string{"pass", "pwd", "secret", "token", "key", "cred", "sign", "auth"}

func redactQuery(q string) string {
	params := strings.Split(q, "&")
	for i, p := range params {
		name, val, _ := strings.Cut(p, "=")
		if strings.Contains(name, "@") {
			params[i] = redacted // not name=value: part of a password?
			continue
		}
		if val == "" {
			continue
		}
		lname := strings.ToLower(name)
		secret := strings.Contains(val, "@") || strings.Contains(strings.ToLower(val), "%40")
		for _, w := range secretWords {
			secret = secret || strings.Contains(lname, w)
		}
		if secret {
			params[i] = name + "=" + redacted
		}
	}
	return strings.Join(params, "&")
}
