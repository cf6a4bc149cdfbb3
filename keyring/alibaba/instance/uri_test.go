package instance

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
)

func TestURIParts(t *testing.T) {
	for _, tc := range []struct {
		uri, endpoint, key string
	}{
		{"alibaba-kms-instance://kst-hzz65f176a0ogplgq.cryptoservice.kms.aliyuncs.com/key-hzz62f1cb66fa42qo", "kst-hzz65f176a0ogplgq.cryptoservice.kms.aliyuncs.com", "key-hzz62f1cb66fa42qo"},
		{"alibaba-kms-instance://127.0.0.1:8443/key-1", "127.0.0.1:8443", "key-1"},
		{"alibaba-kms-instance://[::1]:8443/alias/backup", "[::1]:8443", "alias/backup"},
	} {
		u, err := url.Parse(tc.uri)
		if err != nil {
			t.Fatal(err)
		}
		ep, key, err := URIParts(u)
		if err != nil || ep != tc.endpoint || key != tc.key {
			t.Errorf("URIParts(%s) = %q, %q, %v; want %q, %q", tc.uri, ep, key, err, tc.endpoint, tc.key)
		}
	}
	for _, bad := range []string{
		"alibaba-kms://cn-hangzhou/key-1",
		"alibaba-kms-instance:///key-1",
		"alibaba-kms-instance://host",
		"alibaba-kms-instance://host/",
		"alibaba-kms-instance://user:pw@host/key-1",
		"alibaba-kms-instance://host/key-1?endpoint=https://evil",
		"alibaba-kms-instance://host/key/1",
		"alibaba-kms-instance://host/alias/",
		"alibaba-kms-instance://host/alias/a/b",
		"alibaba-kms-instance://host:0/key-1",
		"alibaba-kms-instance://host:99999/key-1",
		"alibaba-kms-instance://host/key-1#frag",
		"alibaba-kms-instance://host/key%201",
	} {
		u, err := url.Parse(bad)
		if err != nil {
			continue
		}
		if _, _, err := URIParts(u); !errors.Is(err, keyring.ErrBadURI) {
			t.Errorf("URIParts(%s) = %v, want ErrBadURI", bad, err)
		} else if strings.Contains(err.Error(), "pw@") {
			t.Errorf("URIParts(%s): the error shows the credentials: %v", bad, err)
		}
	}
}

// FuzzURIParts: any URI either parses into an endpoint and key that make
// the same URI again, or is refused with ErrBadURI; nothing panics.
func FuzzURIParts(f *testing.F) {
	for _, s := range []string{
		"alibaba-kms-instance://kst-a.cryptoservice.kms.aliyuncs.com/key-1",
		"alibaba-kms-instance://127.0.0.1:8443/alias/x",
		"alibaba-kms-instance://u@h/k",
		"alibaba-kms-instance://h/k?x=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		ep, key, err := URIParts(u)
		if err != nil {
			if !errors.Is(err, keyring.ErrBadURI) {
				t.Fatalf("URIParts(%q) error %v does not wrap ErrBadURI", s, err)
			}
			return
		}
		if ep == "" || key == "" || u.User != nil || u.RawQuery != "" {
			t.Fatalf("URIParts(%q) = %q, %q: accepted something it should not", s, ep, key)
		}
	})
}
