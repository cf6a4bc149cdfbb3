package keyring

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// KeyStats counts the calls made to one key service key.
type KeyStats struct {
	URI      string `json:"uri"`
	Generate int64  `json:"generate_calls"`
	Unwrap   int64  `json:"unwrap_calls"`
	Wrap     int64  `json:"wrap_calls"`
	// KMSCalls counts the calls that reached the key service: for most
	// keys every generate, unwrap and wrap; for a local key none; for an
	// asymmetric key (keyring/pubkey) only decryptions and public key
	// fetches, since it wraps locally.
	KMSCalls  int64  `json:"kms_calls"`
	Errors    int64  `json:"errors"`
	TotalMs   int64  `json:"total_ms"`
	MaxMs     int64  `json:"max_ms"`
	LastError string `json:"last_error,omitempty"`
}

// meteredKeyring counts calls, errors and latency of the keyring it wraps.
type meteredKeyring struct {
	Keyring
	generate, unwrap, wrap, errors, totalNs, maxNs atomic.Int64

	mu      sync.Mutex
	lastErr string
}

func (m *meteredKeyring) done(start time.Time, err error) {
	d := time.Since(start).Nanoseconds()
	m.totalNs.Add(d)
	for {
		cur := m.maxNs.Load()
		if d <= cur || m.maxNs.CompareAndSwap(cur, d) {
			break
		}
	}
	if err != nil {
		m.errors.Add(1)
		m.mu.Lock()
		m.lastErr = err.Error()
		m.mu.Unlock()
	}
}

func (m *meteredKeyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*Key, []byte, error) {
	m.generate.Add(1)
	start := time.Now()
	dk, w, err := m.Keyring.GenerateDataKey(ctx, encCtx)
	m.done(start, err)
	return dk, w, err
}

func (m *meteredKeyring) Unwrap(ctx context.Context, wrapped, encCtx []byte) (*Key, error) {
	m.unwrap.Add(1)
	start := time.Now()
	dk, err := m.Keyring.Unwrap(ctx, wrapped, encCtx)
	m.done(start, err)
	return dk, err
}

func (m *meteredKeyring) Wrap(ctx context.Context, dk *Key, encCtx []byte) ([]byte, error) {
	w, ok := m.Keyring.(Wrapper)
	if !ok {
		return nil, errNoWrap(m.URI())
	}
	m.wrap.Add(1)
	start := time.Now()
	out, err := w.Wrap(ctx, dk, encCtx)
	m.done(start, err)
	return out, err
}

func (m *meteredKeyring) stats() KeyStats {
	m.mu.Lock()
	last := m.lastErr
	m.mu.Unlock()
	st := KeyStats{
		URI: m.URI(), Generate: m.generate.Load(), Unwrap: m.unwrap.Load(), Wrap: m.wrap.Load(),
		Errors: m.errors.Load(), TotalMs: m.totalNs.Load() / 1e6, MaxMs: m.maxNs.Load() / 1e6, LastError: last,
	}
	switch k := m.Keyring.(type) {
	case interface{ KMSCalls() int64 }:
		st.KMSCalls = k.KMSCalls()
	default:
		if !strings.HasPrefix(m.URI(), "local:") {
			st.KMSCalls = st.Generate + st.Unwrap + st.Wrap
		}
	}
	return st
}

func errNoWrap(uri string) error {
	return fmt.Errorf("keyring: %s cannot wrap an existing data key", RedactURI(uri))
}
