package cloud

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keyring"
)

func TestCheckContext(t *testing.T) {
	for _, tc := range []struct {
		ctx string
		ok  bool
	}{
		{``, true},
		{`{}`, true},
		{`{"kmsfs":"v1","volume":"00ff"}`, true},
		{`{"a":"<&>"}`, true},
		{`{"volume":"00ff","kmsfs":"v1"}`, false}, // not sorted
		{`{"kmsfs": "v1"}`, false},                // space
		{`{"kmsfs":"v1"} `, false},                // trailing space
		{`{"kmsfs":"\u0076"}`, false},             // needless escape
		{`{"a":"1","a":"1"}`, false},              // repeated key
		{`{"a":1}`, false},                        // not a string
		{`["a"]`, false},
		{`{"a":"1"`, false},
	} {
		if err := CheckContext([]byte(tc.ctx)); (err == nil) != tc.ok {
			t.Errorf("CheckContext(%s) = %v, want ok %v", tc.ctx, err, tc.ok)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"https://kms.cn-hangzhou.aliyuncs.com", true},
		{"https://kms-vpc.example:8443", true},
		{"http://127.0.0.1:8900", true},
		{"http://[::1]:8900", true},
		{"http://localhost:8900", true},
		{"http://10.0.0.1", false},
		{"https://host/path", false},
		{"https://user:pw@host", false},
		{"ftp://host", false},
		{"host:443", false},
	} {
		if _, err := ParseEndpoint(tc.in); (err == nil) != tc.ok {
			t.Errorf("ParseEndpoint(%s) = %v, want ok %v", tc.in, err, tc.ok)
		}
	}
}

func TestCanonicalEncodings(t *testing.T) {
	for in, want := range map[string]bool{"AAAA": true, "AAA=": true, "AAB=": false, "AA": false, "": false, "A A=": false} {
		if got := CanonicalBase64([]byte(in)); got != want {
			t.Errorf("CanonicalBase64(%q) = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[string]bool{"00FF": true, "00ff": false, "0F0": false, "": false, "0G": false} {
		if got := UpperHex([]byte(in)); got != want {
			t.Errorf("UpperHex(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestPolicyDo(t *testing.T) {
	p := Policy{AttemptTimeout: time.Second, Budget: 2 * time.Second, MaxAttempts: 3, BaseDelay: time.Millisecond, ThrottleDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
	base := Error{Provider: "test", Op: "Op", Key: "k", Region: "r"}
	fail := func(kind error) func(context.Context) error {
		return func(context.Context) error { e := base; e.Kind = kind; return &e }
	}
	for _, tc := range []struct {
		kind  error
		calls int
	}{
		{keyring.ErrKeyDisabled, 1},
		{keyring.ErrBadCredentials, 1},
		{keyring.ErrThrottled, 3},
		{keyring.ErrUnavailable, 3},
	} {
		n := 0
		op := fail(tc.kind)
		err := p.Do(context.Background(), base, func(ctx context.Context) error { n++; return op(ctx) })
		if !errors.Is(err, tc.kind) || n != tc.calls {
			t.Errorf("Do(always %v) = %v after %d calls, want that error after %d", tc.kind, err, n, tc.calls)
		}
	}
	n := 0
	if err := p.Do(context.Background(), base, func(ctx context.Context) error {
		n++
		if n < 2 {
			return fail(keyring.ErrThrottled)(ctx)
		}
		return nil
	}); err != nil || n != 2 {
		t.Errorf("Do(throttled once) = %v after %d calls, want nil after 2", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := p.Do(ctx, base, fail(keyring.ErrUnavailable))
	if !errors.Is(err, context.Canceled) || keyring.IsPermanent(err) {
		t.Errorf("Do(canceled) = %v, want transient context.Canceled", err)
	}
	// A hanging attempt is cut by the attempt timeout, and the budget
	// bounds the call.
	p.AttemptTimeout, p.Budget = 50*time.Millisecond, 200*time.Millisecond
	start := time.Now()
	err = p.Do(context.Background(), base, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if took := time.Since(start); took > time.Second || !errors.Is(err, keyring.ErrUnavailable) {
		t.Errorf("Do(hang) = %v after %v, want ErrUnavailable within the budget", err, took)
	}
}

// TestParseKeyURIRedacts checks that a refused URI is never echoed with
// the credentials a user put in it.
func TestParseKeyURIRedacts(t *testing.T) {
	const pw = "Hunter2Secret"
	for _, raw := range []string{
		"alibaba-kms://ak:" + pw + "@cn-hangzhou/key",
		"alibaba-kms://cn-hangzhou/key?endpoint=https://ak:" + pw + "@kms.example",
		"alibaba-kms://cn-hangzhou/key?access_key_secret=" + pw,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseKeyURI(u)
		if !errors.Is(err, keyring.ErrBadURI) || strings.Contains(err.Error(), pw) {
			t.Errorf("ParseKeyURI(%q) = %v, want ErrBadURI without the password", raw, err)
		}
	}
	if _, err := ParseEndpoint("https://ak:" + pw + "@kms.example"); err == nil || strings.Contains(err.Error(), pw) {
		t.Errorf("ParseEndpoint(with a password) = %v, want an error without the password", err)
	}
}
