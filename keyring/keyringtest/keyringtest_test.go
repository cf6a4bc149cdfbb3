package keyringtest_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/keyringtest"
)

// fakeService stands in for a key service with faults the hooks turn on.
type fakeService struct {
	aead cipher.AEAD

	mu           sync.Mutex
	disabled     bool
	throttleNext bool
	outage       bool
}

var errThrottled = errors.New("fake: throttled")

// call simulates one request to the service.
func (s *fakeService) call(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.outage:
		return keyring.ErrUnavailable
	case s.throttleNext:
		s.throttleNext = false
		return errThrottled
	case s.disabled:
		return keyring.ErrKeyDisabled
	}
	return nil
}

// fakeKeyring is a client of fakeService that retries throttling and
// outages a few times.
type fakeKeyring struct{ s *fakeService }

func (k *fakeKeyring) URI() string { return "fake://key" }

func (k *fakeKeyring) do(ctx context.Context) error {
	var err error
	for range 3 {
		if err = k.s.call(ctx); err == nil || !(errors.Is(err, errThrottled) || errors.Is(err, keyring.ErrUnavailable)) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fake: %w: %w", keyring.ErrUnavailable, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return err
}

func (k *fakeKeyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*keyring.Key, []byte, error) {
	dk, err := keyring.NewRandomKey()
	if err != nil {
		return nil, nil, err
	}
	w, err := k.Wrap(ctx, dk, encCtx)
	if err != nil {
		dk.Destroy()
		return nil, nil, err
	}
	return dk, w, nil
}

func (k *fakeKeyring) Wrap(ctx context.Context, dk *keyring.Key, encCtx []byte) ([]byte, error) {
	if err := k.do(ctx); err != nil {
		return nil, err
	}
	nonce := make([]byte, k.s.aead.NonceSize())
	rand.Read(nonce)
	return k.s.aead.Seal(nonce, nonce, dk.Bytes(), encCtx), nil
}

func (k *fakeKeyring) Unwrap(ctx context.Context, wrapped, encCtx []byte) (*keyring.Key, error) {
	if err := k.do(ctx); err != nil {
		return nil, err
	}
	n := k.s.aead.NonceSize()
	if len(wrapped) < n {
		return nil, keyring.ErrUnwrap
	}
	pt, err := k.s.aead.Open(nil, wrapped[:n], wrapped[n:], encCtx)
	if err != nil {
		return nil, keyring.ErrUnwrap
	}
	return keyring.NewKeyFrom(pt)
}

func TestRunFake(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	svc := map[*testing.T]*fakeService{}
	var mu sync.Mutex
	get := func(t *testing.T) *fakeService {
		mu.Lock()
		defer mu.Unlock()
		if svc[t] == nil {
			svc[t] = &fakeService{aead: aead}
		}
		return svc[t]
	}
	keyringtest.Run(t,
		func(t *testing.T) keyring.Keyring { return &fakeKeyring{s: get(t)} },
		keyringtest.WithDisable(func(t *testing.T) {
			s := get(t)
			s.mu.Lock()
			s.disabled = true
			s.mu.Unlock()
		}),
		keyringtest.WithThrottleOnce(func(t *testing.T) {
			s := get(t)
			s.mu.Lock()
			s.throttleNext = true
			s.mu.Unlock()
		}),
		keyringtest.WithOutage(func(t *testing.T, on bool) {
			s := get(t)
			s.mu.Lock()
			s.outage = on
			s.mu.Unlock()
		}),
		keyringtest.WithOutageBound(5*time.Second),
	)
}
