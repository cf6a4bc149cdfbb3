package keyring

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// stubKeyring is returned by the "stub" test provider.
type stubKeyring struct{ uri string }

func (s *stubKeyring) URI() string { return s.uri }
func (s *stubKeyring) GenerateDataKey(context.Context, []byte) (*Key, []byte, error) {
	return nil, nil, errors.New("stub")
}
func (s *stubKeyring) Unwrap(context.Context, []byte, []byte) (*Key, error) {
	return nil, errors.New("stub")
}

// stub is the behaviour of the "stub" provider: opens counts calls per
// URI, and fail (if set) returns the error for the next call of a URI.
var stub struct {
	mu    sync.Mutex
	opens map[string]int
	fail  map[string][]error
}

func init() {
	stub.opens = map[string]int{}
	stub.fail = map[string][]error{}
	Register("stub", func(ctx context.Context, u *url.URL, opts Options) (Keyring, error) {
		stub.mu.Lock()
		defer stub.mu.Unlock()
		uri := u.String()
		stub.opens[uri]++
		if errs := stub.fail[uri]; len(errs) > 0 {
			stub.fail[uri] = errs[1:]
			if errs[0] != nil {
				return nil, errs[0]
			}
		}
		return &stubKeyring{uri: uri}, nil
	})
}

func stubOpens(uri string) int {
	stub.mu.Lock()
	defer stub.mu.Unlock()
	return stub.opens[uri]
}

func stubFail(uri string, errs ...error) {
	stub.mu.Lock()
	defer stub.mu.Unlock()
	stub.fail[uri] = errs
}

func TestRegisterTwicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Errorf("Register(stub) twice did not panic")
		}
	}()
	Register("stub", nil)
}

func TestSchemes(t *testing.T) {
	if s := Schemes(); !slices.Contains(s, "stub") || !slices.IsSorted(s) {
		t.Errorf("Schemes() = %q, want a sorted list containing stub", s)
	}
}

func TestOpen(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want error
	}{
		{"stub://open/a", nil},
		{"nosuchscheme://x", ErrBadURI},
		{"", ErrBadURI},
		{"%zz", ErrBadURI},
	} {
		kr, err := Open(context.Background(), tc.uri, Options{})
		if !errors.Is(err, tc.want) {
			t.Errorf("Open(%q) error = %v, want %v", tc.uri, err, tc.want)
		}
		if err == nil && kr.URI() != tc.uri {
			t.Errorf("Open(%q).URI() = %q, want %q", tc.uri, kr.URI(), tc.uri)
		}
	}
}

func TestIsPermanent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{ErrAccessDenied, true},
		{ErrBadCredentials, true},
		{ErrKeyNotFound, true},
		{ErrKeyDisabled, true},
		{ErrUnwrap, true},
		{ErrBadURI, true},
		{fmt.Errorf("aws: %w: KMSInvalidStateException", ErrKeyDisabled), true},
		{ErrThrottled, false},
		{ErrUnavailable, false},
		{ErrKeyMemory, false},
		{context.Canceled, false},
		{errors.New("other"), false},
		{nil, false},
	} {
		if got := IsPermanent(tc.err); got != tc.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestResolverCaches(t *testing.T) {
	const uri = "stub://cache/a"
	r := NewResolver(Options{})
	a, err := r.Get(context.Background(), uri)
	if err != nil {
		t.Fatalf("Get() error = %v", err)
	}
	b, err := r.Get(context.Background(), uri)
	if err != nil || a != b {
		t.Errorf("second Get() = %p, %v, want %p, nil", b, err, a)
	}
	if n := stubOpens(uri); n != 1 {
		t.Errorf("opens after two Gets = %d, want 1", n)
	}
}

func TestResolverConcurrent(t *testing.T) {
	const uri = "stub://concurrent/a"
	r := NewResolver(Options{})
	got := make([]Keyring, 16)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			kr, err := r.Get(context.Background(), uri)
			if err != nil {
				t.Errorf("Get() error = %v", err)
			}
			got[i] = kr
		})
	}
	wg.Wait()
	for i, kr := range got {
		if kr != got[0] {
			t.Errorf("Get() #%d = %p, want %p (one keyring)", i, kr, got[0])
		}
	}
	if n := stubOpens(uri); n != 1 {
		t.Errorf("opens after 16 concurrent Gets = %d, want 1", n)
	}
}

func TestResolverRetriesTransient(t *testing.T) {
	const uri = "stub://transient/a"
	stubFail(uri, fmt.Errorf("stub: %w", ErrUnavailable), context.DeadlineExceeded)
	r := NewResolver(Options{})
	for i, want := range []error{ErrUnavailable, context.DeadlineExceeded, nil} {
		if _, err := r.Get(context.Background(), uri); !errors.Is(err, want) {
			t.Errorf("Get() #%d error = %v, want %v", i, err, want)
		}
	}
	if n := stubOpens(uri); n != 3 {
		t.Errorf("opens = %d, want 3 (two transient failures retried)", n)
	}
	if _, err := r.Get(context.Background(), uri); err != nil {
		t.Errorf("Get() after success error = %v, want nil", err)
	}
	if n := stubOpens(uri); n != 3 {
		t.Errorf("opens after success = %d, want 3 (cached)", n)
	}
}

func TestResolverRemembersPermanent(t *testing.T) {
	const uri = "stub://permanent/a"
	stubFail(uri, fmt.Errorf("stub: %w", ErrAccessDenied))
	r := NewResolver(Options{})
	for i := range 3 {
		if _, err := r.Get(context.Background(), uri); !errors.Is(err, ErrAccessDenied) {
			t.Errorf("Get() #%d error = %v, want ErrAccessDenied", i, err)
		}
	}
	if n := stubOpens(uri); n != 1 {
		t.Errorf("opens = %d, want 1 (permanent failure remembered)", n)
	}
	// Another resolver starts afresh.
	if _, err := NewResolver(Options{}).Get(context.Background(), uri); err != nil {
		t.Errorf("new Resolver Get() error = %v, want nil", err)
	}
}

func TestResolverAdd(t *testing.T) {
	kr := &stubKeyring{uri: "stub://added/a"}
	r := NewResolver(Options{})
	r.Add(kr)
	got, err := r.Get(context.Background(), kr.uri)
	if err != nil || got != kr {
		t.Errorf("Get() after Add = %p, %v, want %p, nil", got, err, kr)
	}
	if n := stubOpens(kr.uri); n != 0 {
		t.Errorf("opens after Add and Get = %d, want 0", n)
	}
}

func TestResolverPassesOptions(t *testing.T) {
	var called atomic.Bool
	opts := Options{Passphrase: func(string) ([]byte, error) { called.Store(true); return nil, nil }}
	Register("stubopts", func(ctx context.Context, u *url.URL, o Options) (Keyring, error) {
		if o.Passphrase != nil {
			o.Passphrase("x")
		}
		return &stubKeyring{uri: u.String()}, nil
	})
	if _, err := NewResolver(opts).Get(context.Background(), "stubopts://k"); err != nil {
		t.Fatalf("Get() error = %v", err)
	}
	if !called.Load() {
		t.Errorf("provider did not receive the resolver's Options")
	}
}
