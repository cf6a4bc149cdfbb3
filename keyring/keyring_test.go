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

// stubProvider is a test provider: opens counts calls per URI, and fail
// holds, per URI, the errors of its next calls (nil for a success). Each
// test makes its own, so counts never carry over between tests or runs.
type stubProvider struct {
	mu    sync.Mutex
	opens map[string]int
	fail  map[string][]error
}

// newStub returns a registry holding a fresh stub provider under the
// scheme "stub", and the provider.
func newStub() (*Registry, *stubProvider) {
	p := &stubProvider{opens: map[string]int{}, fail: map[string][]error{}}
	return NewRegistry(func(r *Registry) { r.Register("stub", p.open) }), p
}

func (p *stubProvider) open(ctx context.Context, u *url.URL, opts Options) (Keyring, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	uri := u.String()
	p.opens[uri]++
	if errs := p.fail[uri]; len(errs) > 0 {
		p.fail[uri] = errs[1:]
		if errs[0] != nil {
			return nil, errs[0]
		}
	}
	return &stubKeyring{uri: uri}, nil
}

// opensOf returns how many times uri was opened.
func (p *stubProvider) opensOf(uri string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opens[uri]
}

// failNext makes the next opens of uri return errs, one per call.
func (p *stubProvider) failNext(uri string, errs ...error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail[uri] = errs
}

func TestRegisterPanics(t *testing.T) {
	stubOpen := func(context.Context, *url.URL, Options) (Keyring, error) { return nil, nil }
	for _, tc := range []struct {
		name   string
		scheme string
		open   Opener
	}{
		{"twice", "stub", stubOpen},
		{"nil opener", "other", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, _ := newStub()
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", tc.scheme)
				}
			}()
			reg.Register(tc.scheme, tc.open)
		})
	}
}

func TestSchemes(t *testing.T) {
	stubOpen := func(context.Context, *url.URL, Options) (Keyring, error) { return nil, nil }
	var zero Registry
	zero.Register("b", stubOpen)
	zero.Register("a", stubOpen)
	zero.Register("c", stubOpen)
	for _, tc := range []struct {
		name string
		reg  *Registry
		want []string
	}{
		{"nil", nil, nil},
		{"empty", NewRegistry(), nil},
		{"stub", func() *Registry { r, _ := newStub(); return r }(), []string{"stub"}},
		{"zero value filled", &zero, []string{"a", "b", "c"}},
	} {
		if got := tc.reg.Schemes(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Schemes() = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	const uri = "stub://independent/a"
	a, pa := newStub()
	b, pb := newStub()
	for i, tc := range []struct {
		reg      *Registry
		wantA    int
		wantB    int
		fromWhom string
	}{
		{a, 1, 0, "a"},
		{b, 1, 1, "b"},
		{a, 2, 1, "a"},
	} {
		if _, err := tc.reg.Open(context.Background(), uri, Options{}); err != nil {
			t.Fatalf("#%d: %s.Open(%q) error = %v", i, tc.fromWhom, uri, err)
		}
		if na, nb := pa.opensOf(uri), pb.opensOf(uri); na != tc.wantA || nb != tc.wantB {
			t.Errorf("#%d: after %s.Open opens by a, b = %d, %d, want %d, %d", i, tc.fromWhom, na, nb, tc.wantA, tc.wantB)
		}
	}
	if _, err := NewRegistry().Open(context.Background(), uri, Options{}); !errors.Is(err, ErrBadURI) {
		t.Errorf("empty registry Open(%q) error = %v, want ErrBadURI", uri, err)
	}
}

func TestOpen(t *testing.T) {
	reg, _ := newStub()
	// A provider that fails with a typed nil pointer, as providers whose
	// own Open returns *Keyring do.
	reg.Register("typednil", func(context.Context, *url.URL, Options) (Keyring, error) {
		var kr *stubKeyring
		return kr, ErrKeyNotFound
	})
	for _, tc := range []struct {
		name string
		reg  *Registry
		uri  string
		want error
	}{
		{"registered", reg, "stub://open/a", nil},
		{"unknown scheme", reg, "nosuchscheme://x", ErrBadURI},
		{"empty", reg, "", ErrBadURI},
		{"unparsable", reg, "%zz", ErrBadURI},
		{"nil registry", nil, "stub://open/a", ErrBadURI},
		{"typed nil", reg, "typednil://k", ErrKeyNotFound},
	} {
		kr, err := tc.reg.Open(context.Background(), tc.uri, Options{})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Open(%q) error = %v, want %v", tc.name, tc.uri, err, tc.want)
		}
		if err == nil && kr.URI() != tc.uri {
			t.Errorf("%s: Open(%q).URI() = %q, want %q", tc.name, tc.uri, kr.URI(), tc.uri)
		}
		if err != nil && kr != nil {
			t.Errorf("%s: Open(%q) = %v, %v, want a nil Keyring with the error", tc.name, tc.uri, kr, err)
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
	reg, stub := newStub()
	r := NewResolver(reg, Options{})
	a, err := r.Get(context.Background(), uri)
	if err != nil {
		t.Fatalf("Get() error = %v", err)
	}
	b, err := r.Get(context.Background(), uri)
	if err != nil || a != b {
		t.Errorf("second Get() = %p, %v, want %p, nil", b, err, a)
	}
	if n := stub.opensOf(uri); n != 1 {
		t.Errorf("opens after two Gets = %d, want 1", n)
	}
}

func TestResolverConcurrent(t *testing.T) {
	const uri = "stub://concurrent/a"
	reg, stub := newStub()
	r := NewResolver(reg, Options{})
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
	if n := stub.opensOf(uri); n != 1 {
		t.Errorf("opens after 16 concurrent Gets = %d, want 1", n)
	}
}

func TestResolverRetriesTransient(t *testing.T) {
	const uri = "stub://transient/a"
	reg, stub := newStub()
	stub.failNext(uri, fmt.Errorf("stub: %w", ErrUnavailable), context.DeadlineExceeded)
	r := NewResolver(reg, Options{})
	for i, want := range []error{ErrUnavailable, context.DeadlineExceeded, nil} {
		if _, err := r.Get(context.Background(), uri); !errors.Is(err, want) {
			t.Errorf("Get() #%d error = %v, want %v", i, err, want)
		}
	}
	if n := stub.opensOf(uri); n != 3 {
		t.Errorf("opens = %d, want 3 (two transient failures retried)", n)
	}
	if _, err := r.Get(context.Background(), uri); err != nil {
		t.Errorf("Get() after success error = %v, want nil", err)
	}
	if n := stub.opensOf(uri); n != 3 {
		t.Errorf("opens after success = %d, want 3 (cached)", n)
	}
}

func TestResolverRemembersPermanent(t *testing.T) {
	const uri = "stub://permanent/a"
	reg, stub := newStub()
	stub.failNext(uri, fmt.Errorf("stub: %w", ErrAccessDenied))
	r := NewResolver(reg, Options{})
	for i := range 3 {
		if _, err := r.Get(context.Background(), uri); !errors.Is(err, ErrAccessDenied) {
			t.Errorf("Get() #%d error = %v, want ErrAccessDenied", i, err)
		}
	}
	if n := stub.opensOf(uri); n != 1 {
		t.Errorf("opens = %d, want 1 (permanent failure remembered)", n)
	}
	// Another resolver starts afresh.
	if _, err := NewResolver(reg, Options{}).Get(context.Background(), uri); err != nil {
		t.Errorf("new Resolver Get() error = %v, want nil", err)
	}
}

func TestResolverAdd(t *testing.T) {
	kr := &stubKeyring{uri: "stub://added/a"}
	reg, stub := newStub()
	r := NewResolver(reg, Options{})
	r.Add(kr)
	got, err := r.Get(context.Background(), kr.uri)
	if err != nil || got != kr {
		t.Errorf("Get() after Add = %p, %v, want %p, nil", got, err, kr)
	}
	if n := stub.opensOf(kr.uri); n != 0 {
		t.Errorf("opens after Add and Get = %d, want 0", n)
	}
}

func TestResolverPassesOptions(t *testing.T) {
	var called atomic.Bool
	opts := Options{Passphrase: func(string) ([]byte, error) { called.Store(true); return nil, nil }}
	reg := NewRegistry(func(r *Registry) {
		r.Register("stubopts", func(ctx context.Context, u *url.URL, o Options) (Keyring, error) {
			if o.Passphrase != nil {
				o.Passphrase("x")
			}
			return &stubKeyring{uri: u.String()}, nil
		})
	})
	if _, err := NewResolver(reg, opts).Get(context.Background(), "stubopts://k"); err != nil {
		t.Fatalf("Get() error = %v", err)
	}
	if !called.Load() {
		t.Errorf("provider did not receive the resolver's Options")
	}
}
