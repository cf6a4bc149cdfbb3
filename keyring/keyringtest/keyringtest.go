// Package keyringtest is the conformance suite every keyring provider
// passes. A provider's test calls Run with a constructor for a fresh
// keyring and, for the fault cases the suite cannot cause by itself (a
// disabled key, throttling, an outage), hooks that make the provider's
// service (usually a fake server) misbehave.
//
// It is imported by tests only.
package keyringtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keyring"
)

// DefaultOutageBound is how long a call may take to fail during an outage
// unless WithOutageBound says otherwise.
const DefaultOutageBound = 30 * time.Second

// cancelBound is how long a call may take to return once its context is
// canceled.
const cancelBound = 5 * time.Second

// Option adds a provider hook or changes a limit of the suite.
type Option func(*config)

type config struct {
	disable      func(t *testing.T)
	throttleOnce func(t *testing.T)
	outage       func(t *testing.T, on bool)
	outageBound  time.Duration
}

// WithDisable supplies a hook that disables the key behind the keyring
// most recently returned by newKeyring(t) (the suite calls it with the same
// t). Afterwards GenerateDataKey and Unwrap must fail with an error
// matching keyring.ErrKeyDisabled. The hook should undo itself with
// t.Cleanup if the provider's service outlives t.
func WithDisable(disable func(t *testing.T)) Option {
	return func(c *config) { c.disable = disable }
}

// WithThrottleOnce supplies a hook after which the service throttles the
// next request once. The keyring must retry and succeed.
func WithThrottleOnce(throttleOnce func(t *testing.T)) Option {
	return func(c *config) { c.throttleOnce = throttleOnce }
}

// WithOutage supplies a hook that starts (on) or ends (!on) an outage of
// the service. During an outage calls must fail with an error matching
// keyring.ErrUnavailable within the outage bound (see WithOutageBound),
// must not be permanent, and must return promptly when their context is
// canceled; after it they must succeed again. The suite ends an outage it
// started even if a check fails.
func WithOutage(outage func(t *testing.T, on bool)) Option {
	return func(c *config) { c.outage = outage }
}

// WithOutageBound sets how long a call may take to give up during an
// outage (DefaultOutageBound if not set).
func WithOutageBound(d time.Duration) Option {
	return func(c *config) { c.outageBound = d }
}

// EncryptionContext returns an encryption context in the form kmsfs uses,
// {"kmsfs":"v1","volume":"<32 hex digits>"}, for a random volume ID.
func EncryptionContext(t testing.TB) []byte {
	t.Helper()
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatalf("rand.Read: %v", err)
	}
	return []byte(`{"kmsfs":"v1","volume":"` + hex.EncodeToString(id[:]) + `"}`)
}

// Run runs the conformance suite as subtests of t. newKeyring is called
// once per subtest and must return a working keyring; the suite does not
// close it (providers register any cleanup with t.Cleanup).
//
// Some subtests compare keyring.KeysInUse before and after, to find keys
// leaked on error paths: do not run Run in parallel with other tests that
// allocate keys.
func Run(t *testing.T, newKeyring func(t *testing.T) keyring.Keyring, opts ...Option) {
	c := config{outageBound: DefaultOutageBound}
	for _, o := range opts {
		o(&c)
	}
	s := &suite{c: c, newKeyring: newKeyring}
	t.Run("URI", s.testURI)
	t.Run("GenerateUnwrap", s.testGenerateUnwrap)
	t.Run("GenerateDiffers", s.testGenerateDiffers)
	t.Run("WrongContext", s.testWrongContext)
	t.Run("Modified", s.testModified)
	t.Run("Concurrent", s.testConcurrent)
	t.Run("Canceled", s.testCanceled)
	t.Run("Wrap", s.testWrap)
	t.Run("NoKeyLeak", s.testNoKeyLeak)
	t.Run("Disabled", s.testDisabled)
	t.Run("ThrottleOnce", s.testThrottleOnce)
	t.Run("Outage", s.testOutage)
}

type suite struct {
	c          config
	newKeyring func(t *testing.T) keyring.Keyring
}

// generate calls GenerateDataKey and checks the result's shape.
func generate(t *testing.T, kr keyring.Keyring, encCtx []byte) (*keyring.Key, []byte) {
	t.Helper()
	k, wrapped, err := kr.GenerateDataKey(context.Background(), encCtx)
	if err != nil {
		t.Fatalf("GenerateDataKey(%s) error = %v, want nil", encCtx, err)
	}
	if k == nil {
		t.Fatalf("GenerateDataKey(%s) key = nil, want a key", encCtx)
	}
	t.Cleanup(k.Destroy)
	if got := len(k.Bytes()); got != keyring.DataKeySize {
		t.Fatalf("GenerateDataKey(%s) key length = %d, want %d", encCtx, got, keyring.DataKeySize)
	}
	if len(wrapped) == 0 {
		t.Fatalf("GenerateDataKey(%s) wrapped = empty, want a wrapped key", encCtx)
	}
	return k, wrapped
}

// unwrap calls Unwrap, expects success and checks the key equals want.
func unwrap(t *testing.T, kr keyring.Keyring, wrapped, encCtx []byte, want *keyring.Key) {
	t.Helper()
	k, err := kr.Unwrap(context.Background(), wrapped, encCtx)
	if err != nil {
		t.Fatalf("Unwrap(%x, %s) error = %v, want nil", wrapped, encCtx, err)
	}
	defer k.Destroy()
	if !bytes.Equal(k.Bytes(), want.Bytes()) {
		t.Fatalf("Unwrap(%x, %s) returned a different key than GenerateDataKey", wrapped, encCtx)
	}
}

// wantUnwrapFailure calls Unwrap and expects a permanent failure.
func wantUnwrapFailure(t *testing.T, kr keyring.Keyring, what string, wrapped, encCtx []byte) {
	t.Helper()
	k, err := kr.Unwrap(context.Background(), wrapped, encCtx)
	if err == nil {
		k.Destroy()
		t.Errorf("Unwrap(%s) error = nil, want an error", what)
		return
	}
	if k != nil {
		t.Errorf("Unwrap(%s) returned a key with error %v, want nil key", what, err)
	}
	if !errors.Is(err, keyring.ErrUnwrap) && !keyring.IsPermanent(err) {
		t.Errorf("Unwrap(%s) error = %v, want keyring.ErrUnwrap or another permanent error", what, err)
	}
}

func (s *suite) testURI(t *testing.T) {
	kr := s.newKeyring(t)
	if kr.URI() == "" {
		t.Errorf("URI() = %q, want the key URI", kr.URI())
	}
}

func (s *suite) testGenerateUnwrap(t *testing.T) {
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	k, wrapped := generate(t, kr, encCtx)
	if bytes.Equal(k.Bytes(), make([]byte, keyring.DataKeySize)) {
		t.Errorf("GenerateDataKey key = all zero, want random")
	}
	if bytes.Contains(wrapped, k.Bytes()) {
		t.Errorf("GenerateDataKey wrapped blob contains the plaintext key")
	}
	unwrap(t, kr, wrapped, encCtx, k)
	// A copy of the context in another slice must work just as well.
	unwrap(t, kr, wrapped, append([]byte(nil), encCtx...), k)
}

func (s *suite) testGenerateDiffers(t *testing.T) {
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	k1, w1 := generate(t, kr, encCtx)
	k2, w2 := generate(t, kr, encCtx)
	if bytes.Equal(k1.Bytes(), k2.Bytes()) {
		t.Errorf("two GenerateDataKey calls returned the same key")
	}
	if bytes.Equal(w1, w2) {
		t.Errorf("two GenerateDataKey calls returned the same wrapped key %x", w1)
	}
}

func (s *suite) testWrongContext(t *testing.T) {
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	_, wrapped := generate(t, kr, encCtx)
	for _, tc := range []struct {
		name   string
		encCtx []byte
	}{
		{"other volume", EncryptionContext(t)},
		{"empty", []byte{}},
		{"prefix", encCtx[:len(encCtx)-1]},
		{"extended", append(append([]byte(nil), encCtx...), ' ')},
	} {
		wantUnwrapFailure(t, kr, "context "+tc.name, wrapped, tc.encCtx)
	}
}

func (s *suite) testModified(t *testing.T) {
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	_, wrapped := generate(t, kr, encCtx)
	// XOR with 0x20 rather than 0x01: if the provider stores base64 text,
	// flipping the lowest bit of the last character can leave the decoded
	// bytes unchanged, while 0x20 always changes them or makes the text
	// invalid.
	flip := func(i int) []byte {
		b := append([]byte(nil), wrapped...)
		b[i] ^= 0x20
		return b
	}
	for _, tc := range []struct {
		name    string
		wrapped []byte
	}{
		{"first byte flipped", flip(0)},
		{"middle byte flipped", flip(len(wrapped) / 2)},
		{"last byte flipped", flip(len(wrapped) - 1)},
		{"last byte dropped", wrapped[:len(wrapped)-1]},
		{"half", wrapped[:len(wrapped)/2]},
		{"empty", []byte{}},
	} {
		wantUnwrapFailure(t, kr, tc.name, tc.wrapped, encCtx)
	}
}

func (s *suite) testConcurrent(t *testing.T) {
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	const goroutines, rounds = 16, 8
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			ctx := context.Background()
			for r := range rounds {
				k, wrapped, err := kr.GenerateDataKey(ctx, encCtx)
				if err != nil {
					t.Errorf("goroutine %d round %d: GenerateDataKey error = %v, want nil", g, r, err)
					return
				}
				u, err := kr.Unwrap(ctx, wrapped, encCtx)
				if err != nil {
					k.Destroy()
					t.Errorf("goroutine %d round %d: Unwrap error = %v, want nil", g, r, err)
					return
				}
				if !bytes.Equal(k.Bytes(), u.Bytes()) {
					t.Errorf("goroutine %d round %d: Unwrap returned a different key", g, r)
				}
				k.Destroy()
				u.Destroy()
			}
		})
	}
	wg.Wait()
}

// wantCanceled checks the result of a call made with a canceled context.
func wantCanceled(t *testing.T, call string, k *keyring.Key, err error, took time.Duration) {
	t.Helper()
	if took > cancelBound {
		t.Errorf("%s with canceled context took %v, want < %v", call, took, cancelBound)
	}
	if err == nil {
		k.Destroy()
		t.Errorf("%s with canceled context error = nil, want an error matching context.Canceled", call)
		return
	}
	if k != nil {
		t.Errorf("%s returned a key with error %v, want nil key", call, err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("%s with canceled context error = %v, want an error matching context.Canceled", call, err)
	}
	if keyring.IsPermanent(err) {
		t.Errorf("%s with canceled context error = %v is permanent, want transient", call, err)
	}
}

func (s *suite) testCanceled(t *testing.T) {
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	_, wrapped := generate(t, kr, encCtx)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	start := time.Now()
	k, _, err := kr.GenerateDataKey(ctx, encCtx)
	wantCanceled(t, "GenerateDataKey", k, err, time.Since(start))

	start = time.Now()
	k, err = kr.Unwrap(ctx, wrapped, encCtx)
	wantCanceled(t, "Unwrap", k, err, time.Since(start))
}

func (s *suite) testWrap(t *testing.T) {
	kr := s.newKeyring(t)
	w, ok := kr.(keyring.Wrapper)
	if !ok {
		t.Skip("keyring does not implement keyring.Wrapper")
	}
	encCtx := EncryptionContext(t)
	dk, err := keyring.NewRandomKey()
	if err != nil {
		t.Fatalf("NewRandomKey() error = %v", err)
	}
	defer dk.Destroy()
	wrapped, err := w.Wrap(context.Background(), dk, encCtx)
	if err != nil {
		t.Fatalf("Wrap() error = %v, want nil", err)
	}
	if len(wrapped) == 0 {
		t.Fatalf("Wrap() = empty, want a wrapped key")
	}
	unwrap(t, kr, wrapped, encCtx, dk)
	wantUnwrapFailure(t, kr, "Wrap result, other context", wrapped, EncryptionContext(t))

	again, err := w.Wrap(context.Background(), dk, encCtx)
	if err != nil {
		t.Fatalf("Wrap() second call error = %v, want nil", err)
	}
	if bytes.Equal(again, wrapped) {
		t.Errorf("two Wrap calls of one key returned the same blob %x, want randomized wrapping", wrapped)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Wrap(ctx, dk, encCtx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wrap() with canceled context error = %v, want an error matching context.Canceled", err)
	}
}

func (s *suite) testNoKeyLeak(t *testing.T) {
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	k, wrapped, err := kr.GenerateDataKey(context.Background(), encCtx)
	if err != nil {
		t.Fatalf("GenerateDataKey() error = %v, want nil", err)
	}
	k.Destroy()
	before, _ := keyring.KeysInUse()
	for range 4 {
		if k, err := kr.Unwrap(context.Background(), wrapped, EncryptionContext(t)); err == nil {
			k.Destroy()
			t.Fatalf("Unwrap with wrong context error = nil, want an error")
		}
		bad := append([]byte(nil), wrapped...)
		bad[len(bad)/2] ^= 0x20
		if k, err := kr.Unwrap(context.Background(), bad, encCtx); err == nil {
			k.Destroy()
			t.Fatalf("Unwrap of modified blob error = nil, want an error")
		}
		k, err := kr.Unwrap(context.Background(), wrapped, encCtx)
		if err != nil {
			t.Fatalf("Unwrap() error = %v, want nil", err)
		}
		k.Destroy()
	}
	if after, _ := keyring.KeysInUse(); after != before {
		t.Errorf("KeysInUse() after failed and successful unwraps = %d, want %d (a key leaked)", after, before)
	}
}

func (s *suite) testDisabled(t *testing.T) {
	if s.c.disable == nil {
		t.Skip("no WithDisable hook")
	}
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	_, wrapped := generate(t, kr, encCtx)
	s.c.disable(t)
	if k, _, err := kr.GenerateDataKey(context.Background(), encCtx); !errors.Is(err, keyring.ErrKeyDisabled) {
		k.Destroy()
		t.Errorf("GenerateDataKey() on disabled key error = %v, want keyring.ErrKeyDisabled", err)
	} else if !keyring.IsPermanent(err) {
		t.Errorf("GenerateDataKey() on disabled key error = %v is transient, want permanent", err)
	}
	if k, err := kr.Unwrap(context.Background(), wrapped, encCtx); !errors.Is(err, keyring.ErrKeyDisabled) {
		k.Destroy()
		t.Errorf("Unwrap() on disabled key error = %v, want keyring.ErrKeyDisabled", err)
	}
}

func (s *suite) testThrottleOnce(t *testing.T) {
	if s.c.throttleOnce == nil {
		t.Skip("no WithThrottleOnce hook")
	}
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	s.c.throttleOnce(t)
	k, wrapped := generate(t, kr, encCtx)
	s.c.throttleOnce(t)
	unwrap(t, kr, wrapped, encCtx, k)
}

// wantUnavailable checks the result of a call made during an outage.
func (s *suite) wantUnavailable(t *testing.T, call string, k *keyring.Key, err error, took time.Duration) {
	t.Helper()
	if took > s.c.outageBound {
		t.Errorf("%s during outage took %v, want < %v", call, took, s.c.outageBound)
	}
	if err == nil {
		k.Destroy()
		t.Errorf("%s during outage error = nil, want keyring.ErrUnavailable", call)
		return
	}
	if !errors.Is(err, keyring.ErrUnavailable) {
		t.Errorf("%s during outage error = %v, want keyring.ErrUnavailable", call, err)
	}
	if keyring.IsPermanent(err) {
		t.Errorf("%s during outage error = %v is permanent, want transient", call, err)
	}
}

func (s *suite) testOutage(t *testing.T) {
	if s.c.outage == nil {
		t.Skip("no WithOutage hook")
	}
	kr := s.newKeyring(t)
	encCtx := EncryptionContext(t)
	k, wrapped := generate(t, kr, encCtx)

	s.c.outage(t, true)
	on := true
	t.Cleanup(func() {
		if on {
			s.c.outage(t, false)
		}
	})

	start := time.Now()
	gk, _, err := kr.GenerateDataKey(context.Background(), encCtx)
	s.wantUnavailable(t, "GenerateDataKey", gk, err, time.Since(start))
	start = time.Now()
	uk, err := kr.Unwrap(context.Background(), wrapped, encCtx)
	s.wantUnavailable(t, "Unwrap", uk, err, time.Since(start))

	// A call stuck in retries must give up soon after its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	uk, err = kr.Unwrap(ctx, wrapped, encCtx)
	if took := time.Since(start); took > 200*time.Millisecond+cancelBound {
		t.Errorf("Unwrap during outage with 200ms deadline took %v, want < %v", took, 200*time.Millisecond+cancelBound)
	}
	if err == nil {
		uk.Destroy()
		t.Errorf("Unwrap during outage with deadline error = nil, want an error")
	} else if keyring.IsPermanent(err) {
		t.Errorf("Unwrap during outage with deadline error = %v is permanent, want transient", err)
	}

	s.c.outage(t, false)
	on = false
	generate(t, kr, encCtx)
	unwrap(t, kr, wrapped, encCtx, k)
}
