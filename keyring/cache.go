package keyring

import (
	"container/list"
	"context"
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"

	"github.com/awnumar/memguard"
)

// Cache keeps unwrapped data keys for a bounded time and number, so that
// opening many files whose data keys are shared, or opening one file
// repeatedly, does not call the key service each time. Cached keys are
// sealed memguard Enclaves (encrypted in ordinary memory, no limit on
// their number); they are opened into locked memory only for the moment a
// caller needs one. A Cache is safe for concurrent use.
type Cache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[[32]byte]*list.Element
	lru     *list.List  // front: most recently used
	sweep   *time.Timer // armed while there are entries: calls Expire

	hits, misses atomic.Int64
}

type cacheEntry struct {
	id   [32]byte
	key  *memguard.Enclave
	used time.Time
}

// NewCache returns a cache that keeps at most max keys, each until ttl
// has passed since it was last used. ttl <= 0 or max <= 0 disables it.
func NewCache(ttl time.Duration, max int) *Cache {
	return &Cache{ttl: ttl, max: max, now: time.Now, entries: map[[32]byte]*list.Element{}, lru: list.New()}
}

func (c *Cache) enabled() bool { return c != nil && c.ttl > 0 && c.max > 0 }

// cacheID names a wrapped key of one keyring under one context.
func cacheID(uri string, wrapped, encCtx []byte) [32]byte {
	h := sha256.New()
	for _, b := range [][]byte{[]byte(uri), wrapped, encCtx} {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(b)>>24), byte(len(b)>>16), byte(len(b)>>8), byte(len(b))
		h.Write(n[:])
		h.Write(b)
	}
	var id [32]byte
	h.Sum(id[:0])
	return id
}

// get returns a copy of the cached key in locked memory, or nil.
func (c *Cache) get(id [32]byte) *Key {
	c.mu.Lock()
	el, ok := c.entries[id]
	if ok {
		e := el.Value.(*cacheEntry)
		if c.now().Sub(e.used) > c.ttl {
			c.removeLocked(el)
			ok = false
		} else {
			e.used = c.now()
			c.lru.MoveToFront(el)
		}
	}
	var enc *memguard.Enclave
	if ok {
		enc = el.Value.(*cacheEntry).key
	}
	c.mu.Unlock()
	if enc == nil {
		c.misses.Add(1)
		return nil
	}
	buf, err := enc.Open()
	if err != nil {
		c.misses.Add(1)
		return nil
	}
	defer buf.Destroy()
	k, err := NewKey()
	if err != nil {
		c.misses.Add(1)
		return nil
	}
	copy(k.Bytes(), buf.Bytes())
	c.hits.Add(1)
	return k
}

// put caches a copy of k under id.
func (c *Cache) put(id [32]byte, k *Key) {
	// NewEnclave wipes its source: give it a copy.
	tmp := make([]byte, len(k.Bytes()))
	copy(tmp, k.Bytes())
	enc := memguard.NewEnclave(tmp)
	if enc == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[id]; ok {
		el.Value.(*cacheEntry).used = c.now()
		c.lru.MoveToFront(el)
		return
	}
	c.entries[id] = c.lru.PushFront(&cacheEntry{id: id, key: enc, used: c.now()})
	for c.lru.Len() > c.max {
		c.removeLocked(c.lru.Back())
	}
	c.armLocked()
}

// armLocked sets the sweep timer, if there are entries and it is not
// set, to when the least recently used entry expires (no sooner than a
// second from now). An empty cache has no timer: a Go program with no
// timers and no sockets to wait for parks its idle threads more cheaply,
// which a FUSE daemon feels on every request.
func (c *Cache) armLocked() {
	back := c.lru.Back()
	if c.sweep != nil || back == nil {
		return
	}
	d := max(time.Second, c.ttl-c.now().Sub(back.Value.(*cacheEntry).used))
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		c.Expire()
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.sweep == t { // not replaced after a Purge
			c.sweep = nil
			c.armLocked()
		}
	})
	c.sweep = t
}

// touch restarts the time to live of id (the last handle of a file using
// it was just closed) and reports whether id is cached.
func (c *Cache) touch(id [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[id]
	if ok {
		el.Value.(*cacheEntry).used = c.now()
		c.lru.MoveToFront(el)
	}
	return ok
}

func (c *Cache) removeLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	delete(c.entries, e.id)
	c.lru.Remove(el)
}

// Expire drops every entry older than the time to live. The cache calls
// it itself, so that keys do not outlive their TTL in memory by more than
// a second.
func (c *Cache) Expire() {
	if !c.enabled() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.lru.Back(); el != nil; {
		prev := el.Prev()
		if c.now().Sub(el.Value.(*cacheEntry).used) > c.ttl {
			c.removeLocked(el)
		}
		el = prev
	}
}

// Purge drops every cached key.
func (c *Cache) Purge() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = map[[32]byte]*list.Element{}
	c.lru.Init()
	if c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
	}
}

// CacheStats are counters of a Cache.
type CacheStats struct {
	Entries int   `json:"entries"`
	Hits    int64 `json:"hits"`
	Misses  int64 `json:"misses"`
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	if c == nil {
		return CacheStats{}
	}
	c.mu.Lock()
	n := c.lru.Len()
	c.mu.Unlock()
	return CacheStats{Entries: n, Hits: c.hits.Load(), Misses: c.misses.Load()}
}

// cachingKeyring answers Unwrap from the cache when it can, and caches
// what it generates and unwraps.
type cachingKeyring struct {
	Keyring
	c *Cache
}

// Keep caches a copy of dk as the key of a wrapped key, or restarts the
// time to live of the copy already cached: a data key handed to new
// files stays cached while they are made, even if it was generated long
// before (fetched ahead).
func (c *Cache) Keep(uri string, wrapped, encCtx []byte, dk *Key) {
	if !c.enabled() {
		return
	}
	// Called for every new file: touch the entry in place, and seal a new
	// copy only when there is none.
	id := cacheID(uri, wrapped, encCtx)
	if !c.touch(id) {
		c.put(id, dk)
	}
}

// Touch restarts the time to live of the cached key of a wrapped key.
func (c *Cache) Touch(uri string, wrapped, encCtx []byte) {
	if c.enabled() {
		c.touch(cacheID(uri, wrapped, encCtx))
	}
}

func (k *cachingKeyring) GenerateDataKey(ctx context.Context, encCtx []byte) (*Key, []byte, error) {
	dk, wrapped, err := k.Keyring.GenerateDataKey(ctx, encCtx)
	if err == nil {
		k.c.put(cacheID(k.URI(), wrapped, encCtx), dk)
	}
	return dk, wrapped, err
}

func (k *cachingKeyring) Unwrap(ctx context.Context, wrapped, encCtx []byte) (*Key, error) {
	id := cacheID(k.URI(), wrapped, encCtx)
	if dk := k.c.get(id); dk != nil {
		return dk, nil
	}
	dk, err := k.Keyring.Unwrap(ctx, wrapped, encCtx)
	if err == nil {
		k.c.put(id, dk)
	}
	return dk, err
}

// Wrap passes through to the underlying keyring.
func (k *cachingKeyring) Wrap(ctx context.Context, dk *Key, encCtx []byte) ([]byte, error) {
	w, ok := k.Keyring.(Wrapper)
	if !ok {
		return nil, errNoWrap(k.URI())
	}
	wrapped, err := w.Wrap(ctx, dk, encCtx)
	if err == nil {
		k.c.put(cacheID(k.URI(), wrapped, encCtx), dk)
	}
	return wrapped, err
}
