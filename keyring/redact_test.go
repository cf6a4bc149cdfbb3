package keyring

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestRedactURI(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"local", "local:///root/.config/kmsfs/local.key", "local:///root/.config/kmsfs/local.key"},
		{"local with @ in path", "local:///home/a@b/key", "local:///home/a@b/key"},
		{"cloud", "alibaba-kms://cn-hangzhou/alias/k?endpoint=https://kms.example:8443", "alibaba-kms://cn-hangzhou/alias/k?endpoint=https://kms.example:8443"},
		{"cloud with a port", "alibaba-kms://host:443/a@b", "alibaba-kms://host:443/a@b"},
		{"user and password", "alibaba-kms://user:pw@cn-hangzhou/key", "alibaba-kms://REDACTED@cn-hangzhou/key"},
		{"user only", "tencent-kms://AKID@ap-guangzhou/key", "tencent-kms://REDACTED@ap-guangzhou/key"},
		{"password with @", "alibaba-kms://user:p@w@cn/key", "alibaba-kms://REDACTED@cn/key"},
		{"password with /", "alibaba-kms://user:pa/ss@cn/key", "alibaba-kms://REDACTED@cn/key"},
		{"password with ?", "alibaba-kms://user:pa?ss@cn/key", "alibaba-kms://REDACTED@cn/key"},
		{"password with #", "alibaba-kms://user:pa#ss@cn/key", "alibaba-kms://REDACTED@cn/key"},
		{"bad escape", "alibaba-kms://user:p%zz@cn/x", "alibaba-kms://REDACTED@cn/x"},
		{"opaque", "local:user:pw@/x", "local:REDACTED@/x"},
		{"local with host", "local://user:pw@/x", "local://REDACTED@/x"},
		{"empty user", "s://@host/k", "s://@host/k"},
		{"secret parameter", "huawei-kms://r/k?project=p&access_key_secret=abc&sk=1", "huawei-kms://r/k?project=p&access_key_secret=REDACTED&sk=1"},
		{"password parameter", "s://r/k?Password=abc", "s://r/k?Password=REDACTED"},
		{"token parameter", "s://r/k?security_token=abc", "s://r/k?security_token=REDACTED"},
		{"endpoint with password", "s://r/k?endpoint=https://u:p@host", "s://r/k?endpoint=REDACTED"},
		{"encoded endpoint with password", "s://r/k?endpoint=https%3A%2F%2Fu%3Ap%40host", "s://r/k?endpoint=REDACTED"},
		{"not a URI", "just text", "just text"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RedactURI(tc.in); got != tc.want {
				t.Errorf("RedactURI(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestRedactURINeverEchoesPasswords puts a password in every place of a
// URI a user could put one and checks it never survives.
func TestRedactURINeverEchoesPasswords(t *testing.T) {
	const pw = "Hunter2Secret"
	for _, in := range []string{
		"alibaba-kms://ak:" + pw + "@cn-hangzhou/key",
		"alibaba-kms://ak:" + pw + "/x@cn-hangzhou/key",
		"alibaba-kms://" + pw + "@cn-hangzhou/key",
		"alibaba-kms:ak:" + pw + "@cn-hangzhou/key",
		"alibaba-kms://ak:" + pw + "@cn-hangzhou/key?endpoint=https://x",
		"alibaba-kms://cn-hangzhou/key?endpoint=https://ak:" + pw + "@x",
		"alibaba-kms://cn-hangzhou/key?secret=" + pw,
		"alibaba-kms://ak:" + pw + "%zz@cn-hangzhou/key",
	} {
		if got := RedactURI(in); strings.Contains(got, pw) {
			t.Errorf("RedactURI(%q) = %q, still holding the password", in, got)
		}
	}
}

func TestOpenErrorsRedact(t *testing.T) {
	reg, _ := newStub()
	for _, uri := range []string{"nosuch://user:Hunter2@x/y", "stub://user:Hunter2@x/y", "stub://user:Hunter2%zz@x/y", "::user:Hunter2@x"} {
		err := reg.Check(uri)
		if err == nil {
			t.Fatalf("Registry.Check(%q) = nil, want an error", uri)
		}
		if strings.Contains(err.Error(), "Hunter2") {
			t.Errorf("Registry.Check(%q) = %q, holding the password", uri, err)
		}
		if !errors.Is(err, ErrBadURI) {
			t.Errorf("Registry.Check(%q) = %v, want ErrBadURI", uri, err)
		}
		_, err = reg.Open(t.Context(), uri, Options{})
		if err == nil || strings.Contains(err.Error(), "Hunter2") {
			t.Errorf("Registry.Open(%q) = %v, want an error without the password", uri, err)
		}
	}
}

func TestCheck(t *testing.T) {
	reg, p := newStub()
	for _, tc := range []struct {
		uri string
		ok  bool
	}{
		{"stub://a/b", true},
		{"stub:///abs/path", true},
		{"nosuch://a/b", false},
		{"", false},
		{"%zz", false},
		{"stub://u@a/b", false},
	} {
		if err := reg.Check(tc.uri); (err == nil) != tc.ok {
			t.Errorf("Registry.Check(%q) = %v, want ok %v", tc.uri, err, tc.ok)
		}
	}
	if n := p.opensOf("stub://a/b"); n != 0 {
		t.Errorf("Registry.Check opened the keyring %d times, want 0", n)
	}
}

// FuzzRedactURI checks that RedactURI never panics, whatever it is
// given, and that a password in the user information of a URI that
// parses never survives it.
func FuzzRedactURI(f *testing.F) {
	for _, s := range []string{"alibaba-kms://user:pw@cn/k", "a\x00@::/b", "s://@h", "local:///a@b", "x:y:z@w?key=1#f", "@:", ":@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := RedactURI(s)
		if u, err := url.Parse(s); err == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok && len(pw) >= 4 && strings.Contains(out, "@") && strings.Contains(out, ":"+pw+"@") {
				t.Fatalf("RedactURI(%q) = %q, still holds the password %q", s, out, pw)
			}
		}
	})
}
