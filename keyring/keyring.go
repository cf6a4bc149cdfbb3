// Package keyring owns every key service kmsfs talks to and the life of
// every plaintext key.
//
// A Keyring wraps and unwraps 32-byte data keys. Keyrings are named by URI;
// the scheme picks the provider ("local", and the cloud providers in their
// own subpackages). There is no global list of providers: the program
// builds a Registry with the providers it wants (each subpackage has a
// Register function) and hands it to NewResolver. Plaintext keys
// returned by a Keyring live in locked memory (see Key) and must be
// destroyed by the caller when no longer needed.
package keyring

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// DataKeySize is the size in bytes of every data key kmsfs uses.
const DataKeySize = 32

// Sentinel errors that callers branch on. Providers wrap them with the
// provider, key and the service's own message; errors.Is finds them.
var (
	// ErrAccessDenied: the credentials are valid but lack permission, or
	// the key belongs to someone else.
	ErrAccessDenied = errors.New("access denied")
	// ErrBadCredentials: the service rejected the credentials or signature.
	ErrBadCredentials = errors.New("invalid credentials")
	// ErrKeyNotFound: no such key or alias.
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyDisabled: the key exists but is disabled or pending deletion.
	ErrKeyDisabled = errors.New("key disabled or pending deletion")
	// ErrThrottled: the service is rate limiting and retries were exhausted.
	ErrThrottled = errors.New("throttled by key service")
	// ErrUnavailable: the service could not be reached or failed; retrying
	// later may work.
	ErrUnavailable = errors.New("key service unavailable")
	// ErrUnwrap: the wrapped key was not produced by this key or its
	// encryption context differs, or it was altered.
	ErrUnwrap = errors.New("wrapped key does not belong to this key or context (or was altered)")
	// ErrBadURI: the key URI is malformed or names an unknown provider.
	ErrBadURI = errors.New("bad key URI")
)

// IsPermanent reports whether err means the key will not work until the
// user changes something (credentials, key state, configuration), as
// opposed to a transient failure. The FUSE edge maps permanent failures to
// EACCES and transient ones to EIO.
func IsPermanent(err error) bool {
	for _, e := range []error{ErrAccessDenied, ErrBadCredentials, ErrKeyNotFound, ErrKeyDisabled, ErrUnwrap, ErrBadURI, ErrNotAsymmetric, ErrWriteOnly} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Keyring wraps and unwraps data keys under one key-encryption key held by
// a key service. Implementations are safe for concurrent use.
type Keyring interface {
	// URI is the key URI this keyring was opened from.
	URI() string
	// GenerateDataKey returns a fresh random data key of DataKeySize bytes
	// and the same key wrapped under this keyring's key, bound to encCtx.
	GenerateDataKey(ctx context.Context, encCtx []byte) (*Key, []byte, error)
	// Unwrap returns the data key inside wrapped. encCtx must equal the
	// context the key was wrapped with.
	Unwrap(ctx context.Context, wrapped, encCtx []byte) (*Key, error)
}

// Wrapper is implemented by keyrings that can wrap an existing data key
// (used to add a key slot to a file without changing its data key).
type Wrapper interface {
	// Wrap wraps the plaintext data key dk bound to encCtx.
	Wrap(ctx context.Context, dk *Key, encCtx []byte) ([]byte, error)
}

// Options carries what a provider may need from the caller to open a key.
type Options struct {
	// Passphrase, when not nil, is called to obtain the passphrase of a
	// protected key (for example a passphrase-protected local key file).
	// prompt names the key. The caller wipes the returned slice after use.
	Passphrase func(prompt string) ([]byte, error)
	// Create asks providers that keep keys locally to create the key if it
	// does not exist yet (kmsfs init).
	Create bool
	// PublicKeys are the public keys (DER SubjectPublicKeyInfo or PEM) of
	// asymmetric keys, by key URI (keyring/pubkey), as the trust record
	// keeps them.
	PublicKeys map[string][]byte
	// WriteOnly opens asymmetric keys with their public key only: nothing
	// of the provider is opened, no credential is needed, and no unwrap
	// can succeed (a write-only mount).
	WriteOnly bool
}

// Opener opens the keyring named by u.
type Opener func(ctx context.Context, u *url.URL, opts Options) (Keyring, error)

// Registry maps URI schemes to the providers that open them. A program
// builds one, fills it with Register before use, and passes it to
// NewResolver; nothing is registered globally. The zero value is an empty
// registry ready for use. Register must not run concurrently with other
// methods; once filled, a Registry is safe for concurrent use.
type Registry struct {
	openers map[string]Opener
}

// NewRegistry returns a registry filled by calling each of register on it,
// in order, typically the Register functions of provider packages:
//
//	reg := keyring.NewRegistry(local.Register, alibaba.Register)
func NewRegistry(register ...func(*Registry)) *Registry {
	r := &Registry{}
	for _, f := range register {
		f(r)
	}
	return r
}

// Register makes a provider available for URIs with the given scheme. It
// panics if the scheme is already registered in r or open is nil.
func (r *Registry) Register(scheme string, open Opener) {
	if open == nil {
		panic("keyring: nil opener for scheme " + scheme)
	}
	if _, dup := r.openers[scheme]; dup {
		panic("keyring: provider registered twice: " + scheme)
	}
	if r.openers == nil {
		r.openers = map[string]Opener{}
	}
	r.openers[scheme] = open
}

// Schemes lists the schemes registered in r, sorted. A nil Registry has
// none.
func (r *Registry) Schemes() []string {
	if r == nil {
		return nil
	}
	s := make([]string, 0, len(r.openers))
	for k := range r.openers {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Open opens the keyring named by uri with the provider registered in r
// for its scheme. A URI that Check refuses is an error wrapping ErrBadURI.
func (r *Registry) Open(ctx context.Context, uri string, opts Options) (Keyring, error) {
	u, open, err := r.parse(uri)
	if err != nil {
		return nil, err
	}
	kr, err := open(ctx, u, opts)
	if err != nil {
		// Not kr: a provider's typed nil pointer would be a non-nil Keyring.
		return nil, err
	}
	return kr, nil
}

// Check reports whether uri could name a keyring of r without opening it:
// it must parse, name a registered scheme and hold no user information
// (credentials come from each provider's own chain, never from a URI).
// Errors wrap ErrBadURI and show the URI through RedactURI. Checks of a
// provider's own (region, key, path) happen when it is opened.
func (r *Registry) Check(uri string) error {
	_, _, err := r.parse(uri)
	return err
}

func (r *Registry) parse(uri string) (*url.URL, Opener, error) {
	shown := RedactURI(uri)
	u, err := url.Parse(uri)
	if err != nil {
		why := "not a URI"
		var ue *url.Error
		if shown == uri && errors.As(err, &ue) {
			why = ue.Err.Error() // the URI holds no secret: say what is wrong
		}
		return nil, nil, fmt.Errorf("keyring: %q: %w: %s", shown, ErrBadURI, why)
	}
	var open Opener
	if r != nil {
		open = r.openers[u.Scheme]
	}
	switch {
	case open == nil:
		return nil, nil, fmt.Errorf("keyring: %q: %w: unknown scheme %q (known: %v)", shown, ErrBadURI, u.Scheme, r.Schemes())
	case u.User != nil:
		return nil, nil, fmt.Errorf("keyring: %q: %w: credentials do not belong in a key URI (each key service takes them from its own configuration)", shown, ErrBadURI)
	}
	return u, open, nil
}

// Resolver opens keyrings on first use and keeps them for later calls. It
// is safe for concurrent use.
//
// Every keyring it opens is metered (see Stats), and, when a Cache is set,
// keyrings that call a remote service answer repeated unwraps from it.
type Resolver struct {
	reg   *Registry
	opts  Options
	cache *Cache
	mu    sync.Mutex
	open  map[string]*resolved
}

type resolved struct {
	once sync.Once
	kr   Keyring
	err  error
}

// NewResolver returns a Resolver that opens keyrings with the providers
// of reg, passing them opts. reg must not change while the Resolver is in
// use.
func NewResolver(reg *Registry, opts Options) *Resolver {
	return &Resolver{reg: reg, opts: opts, open: map[string]*resolved{}}
}

// Get returns the keyring for uri, opening it on first use. A failure to
// open is remembered only if it is permanent; transient failures are
// retried on the next call.
func (r *Resolver) Get(ctx context.Context, uri string) (Keyring, error) {
	r.mu.Lock()
	e := r.open[uri]
	if e == nil {
		e = &resolved{}
		r.open[uri] = e
	}
	r.mu.Unlock()
	e.once.Do(func() {
		e.kr, e.err = r.reg.Open(ctx, uri, r.opts)
		if e.err == nil {
			e.kr = r.decorate(e.kr)
		}
	})
	if e.err != nil && !IsPermanent(e.err) {
		r.mu.Lock()
		if r.open[uri] == e {
			delete(r.open, uri)
		}
		r.mu.Unlock()
	}
	return e.kr, e.err
}

// SetCache makes keyrings opened from now on cache unwrapped keys in c.
// Local keyrings are not cached: unwrapping locally is cheaper than
// opening a sealed cache entry.
func (r *Resolver) SetCache(c *Cache) {
	r.mu.Lock()
	r.cache = c
	r.mu.Unlock()
}

// Cache returns the resolver's cache (nil if none).
func (r *Resolver) Cache() *Cache {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cache
}

func (r *Resolver) decorate(kr Keyring) Keyring {
	m := &meteredKeyring{Keyring: kr}
	r.mu.Lock()
	c := r.cache
	r.mu.Unlock()
	if c.enabled() && !strings.HasPrefix(kr.URI(), "local:") {
		return &cachingKeyring{Keyring: m, c: c}
	}
	return m
}

// Stats returns the call counters of every keyring opened so far, sorted
// by URI.
func (r *Resolver) Stats() []KeyStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []KeyStats
	for _, e := range r.open {
		var m *meteredKeyring
		switch k := e.kr.(type) {
		case *meteredKeyring:
			m = k
		case *cachingKeyring:
			m, _ = k.Keyring.(*meteredKeyring)
		}
		if m != nil {
			out = append(out, m.stats())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].URI < out[j].URI })
	return out
}

// PublicKeys returns the public keys (DER SubjectPublicKeyInfo) the
// keyrings opened so far hold, by URI: those of asymmetric keys
// (keyring/pubkey) that were given one or have fetched it, for the trust
// record.
func (r *Resolver) PublicKeys() map[string][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]byte{}
	for uri, e := range r.open {
		if e.kr == nil {
			continue
		}
		if h, ok := underlying(e.kr).(interface{ KnownPublicKey() []byte }); ok {
			if der := h.KnownPublicKey(); der != nil {
				out[uri] = der
			}
		}
	}
	return out
}

// PublicKey returns the public key (DER SubjectPublicKeyInfo) of the
// asymmetric key uri, opening it and fetching the key from the service if
// needed. It fails for a key that is not asymmetric.
func (r *Resolver) PublicKey(ctx context.Context, uri string) ([]byte, error) {
	kr, err := r.Get(ctx, uri)
	if err != nil {
		return nil, err
	}
	h, ok := underlying(kr).(interface {
		PublicKey(context.Context) ([]byte, error)
	})
	if !ok {
		return nil, fmt.Errorf("%s: %w", RedactURI(uri), ErrNotAsymmetric)
	}
	return h.PublicKey(ctx)
}

// underlying returns the keyring beneath the resolver's decorations.
func underlying(kr Keyring) Keyring {
	for {
		switch k := kr.(type) {
		case *cachingKeyring:
			kr = k.Keyring
		case *meteredKeyring:
			kr = k.Keyring
		default:
			return kr
		}
	}
}

// Add registers an already opened keyring with the resolver.
func (r *Resolver) Add(kr Keyring) {
	e := &resolved{kr: kr}
	e.once.Do(func() {})
	r.mu.Lock()
	r.open[kr.URI()] = e
	r.mu.Unlock()
}
