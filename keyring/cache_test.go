package keyring

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// countingKeyring "wraps" by xoring with a fixed pad and counts calls.
type countingKeyring struct {
	uri              string
	generate, unwrap atomic.Int64
}

func (c *countingKeyring) URI() string { return c.uri }

func (c *countingKeyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*Key, []byte, error) {
	c.generate.Add(1)
	k, err := NewRandomKey()
	if err != nil {
		return nil, nil, err
	}
	w := make([]byte, DataKeySize)
	for i, b := range k.Bytes() {
		w[i] = b ^ 0x5a
	}
	return k, w, nil
}

func (c *countingKeyring) Unwrap(ctx context.Context, wrapped, encCtx []byte) (*Key, error) {
	c.unwrap.Add(1)
	k, err := NewKey()
	if err != nil {
		return nil, err
	}
	for i, b := range wrapped {
		k.Bytes()[i] = b ^ 0x5a
	}
	return k, nil
}

// countingRegistry returns a registry whose "counting" provider opens kr
// for kr's URI.
func countingRegistry(kr *countingKeyring) *Registry {
	return NewRegistry(func(r *Registry) {
		r.Register("counting", func(ctx context.Context, u *url.URL, o Options) (Keyring, error) {
			if u.String() != kr.uri {
				return nil, fmt.Errorf("counting: %s: %w", u, ErrKeyNotFound)
			}
			return kr, nil
		})
	})
}

func TestCacheAnswersRepeatedUnwraps(t *testing.T) {
	const uri = "counting://cache/a"
	inner := &countingKeyring{uri: uri}
	r := NewResolver(countingRegistry(inner), Options{})
	c := NewCache(time.Minute, 10)
	r.SetCache(c)
	kr, err := r.Get(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	encCtx := []byte(`{"kmsfs":"v1","volume":"00"}`)
	dk, wrapped, err := kr.GenerateDataKey(context.Background(), encCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Destroy()
	for i := 0; i < 5; i++ {
		got, err := kr.Unwrap(context.Background(), wrapped, encCtx)
		if err != nil || !bytes.Equal(got.Bytes(), dk.Bytes()) {
			t.Fatalf("Unwrap #%d = %v, want the generated key", i, err)
		}
		got.Destroy()
	}
	if n := inner.unwrap.Load(); n != 0 {
		t.Errorf("service unwrap calls = %d, want 0 (all from cache)", n)
	}
	// Another context is another cache entry.
	got, err := kr.Unwrap(context.Background(), wrapped, []byte("other"))
	if err != nil {
		t.Fatal(err)
	}
	got.Destroy()
	if n := inner.unwrap.Load(); n != 1 {
		t.Errorf("service unwrap calls after a new context = %d, want 1", n)
	}
	st := c.Stats()
	if st.Hits != 5 || st.Misses != 1 || st.Entries != 2 {
		t.Errorf("Stats() = %+v, want 5 hits, 1 miss, 2 entries", st)
	}
	ks := r.Stats()
	if len(ks) != 1 || ks[0].Generate != 1 || ks[0].Unwrap != 1 {
		t.Errorf("resolver Stats() = %+v, want 1 generate and 1 unwrap call", ks)
	}
}

func TestCacheTTLAndSize(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewCache(time.Minute, 3)
	c.now = func() time.Time { return now }
	keys := make([]*Key, 5)
	for i := range keys {
		k, err := NewRandomKey()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Destroy()
		keys[i] = k
		var id [32]byte
		id[0] = byte(i)
		c.put(id, k)
	}
	if st := c.Stats(); st.Entries != 3 {
		t.Errorf("entries after 5 puts into a cache of 3 = %d, want 3", st.Entries)
	}
	var oldest, newest [32]byte
	oldest[0], newest[0] = 0, 4
	if k := c.get(oldest); k != nil {
		k.Destroy()
		t.Errorf("get(least recently used) = a key, want evicted")
	}
	if k := c.get(newest); k == nil || !bytes.Equal(k.Bytes(), keys[4].Bytes()) {
		t.Errorf("get(newest) = %v, want the key", k)
	} else {
		k.Destroy()
	}
	now = now.Add(2 * time.Minute)
	if k := c.get(newest); k != nil {
		k.Destroy()
		t.Errorf("get after the TTL = a key, want expired")
	}
	c.Expire()
	if st := c.Stats(); st.Entries != 0 {
		t.Errorf("entries after Expire = %d, want 0", st.Entries)
	}
}

func TestCacheDisabled(t *testing.T) {
	const uri = "counting://cache/off"
	inner := &countingKeyring{uri: uri}
	r := NewResolver(countingRegistry(inner), Options{})
	r.SetCache(NewCache(0, 100))
	kr, _ := r.Get(context.Background(), uri)
	dk, wrapped, _ := kr.GenerateDataKey(context.Background(), nil)
	dk.Destroy()
	for i := 0; i < 3; i++ {
		k, err := kr.Unwrap(context.Background(), wrapped, nil)
		if err != nil {
			t.Fatal(err)
		}
		k.Destroy()
	}
	if n := inner.unwrap.Load(); n != 3 {
		t.Errorf("unwrap calls with TTL 0 = %d, want 3", n)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	c := NewCache(time.Hour, 10)
	k, _ := NewRandomKey()
	defer k.Destroy()
	var id [32]byte
	rand.Read(id[:])
	c.put(id, k)
	for b.Loop() {
		c.get(id).Destroy()
	}
}

// TestCacheExpiresByItself checks that cached keys go once their time to
// live has passed, with no caller running Expire, and that an empty cache
// keeps no timer.
func TestCacheExpiresByItself(t *testing.T) {
	c := NewCache(50*time.Millisecond, 10)
	k, err := NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	var id [32]byte
	id[0] = 1
	c.put(id, k)
	if st := c.Stats(); st.Entries != 1 {
		t.Fatalf("entries after put = %d, want 1", st.Entries)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Entries != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("entries 10 s after a 50 ms TTL = %d, want 0", c.Stats().Entries)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		c.mu.Lock()
		armed := c.sweep != nil
		c.mu.Unlock()
		if !armed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweep timer is still set on an empty cache")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.put(id, k)
	c.Purge()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sweep != nil {
		t.Error("the sweep timer is still set after Purge")
	}
}
