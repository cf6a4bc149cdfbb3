package volume

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
)

// Defaults of the data key reuse policy of new volumes (see
// docs/SECURITY.md for the trade-off).
const (
	// DefaultReuseFiles is how many new files one data key serves.
	DefaultReuseFiles = 1024
	// DefaultReuseSeconds is how long one data key serves new files.
	DefaultReuseSeconds = 300
	// prefetchDepth is how many data keys are fetched ahead.
	prefetchDepth = 2
	// prefetchStrictDepth is the depth when every file has its own key.
	prefetchStrictDepth = 4
)

// sharedKey is a data key with its key slots, serving new files until
// its policy runs out.
type sharedKey struct {
	dk    *keyring.Key
	slots []header.Slot
	uses  int
	since time.Time
}

func (s *sharedKey) destroy() {
	if s != nil {
		s.dk.Destroy()
	}
}

// keySource hands out data keys for new files: one key serves up to
// files new files or for up to age, and keys are generated ahead in the
// background so creating a file does not wait for the key service.
type keySource struct {
	v      *Volume
	uris   []string
	volID  string
	encCtx []byte
	files  int
	age    time.Duration
	// v1 makes headers of format version 1 whatever the volume's version
	// (the configuration file's).
	v1 bool

	mu     sync.Mutex
	cur    *sharedKey
	expire *time.Timer // drops cur when its reuse window ends
	ready  chan *sharedKey
	filing atomic.Int32 // prefetchers running
	closed bool

	// Prefetchers run under ctx; close cancels it and waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	generated atomic.Int64 // data keys made
	handedOut atomic.Int64 // new files given a key
	waited    atomic.Int64 // times a new file waited for the key service
	lastErr   atomic.Value // string
}

// newKeySource returns a source of data keys for new files under uris;
// depth is how many keys to fetch ahead (-1: the default for the policy).
func newKeySource(v *Volume, uris []string, files int, age time.Duration, depth int) *keySource {
	if depth < 0 {
		depth = prefetchDepth
		if files <= 1 {
			depth = prefetchStrictDepth
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &keySource{v: v, uris: uris, volID: v.Config.VolumeID, encCtx: EncryptionContext(v.Config.VolumeID),
		files: max(files, 1), age: age, ready: make(chan *sharedKey, depth), ctx: ctx, cancel: cancel}
}

// generate makes a data key wrapped under every key of the volume.
func (ks *keySource) generate(ctx context.Context) (*sharedKey, error) {
	v := ks.v
	var slots []header.Slot
	var dk *keyring.Key
	fail := func(err error) (*sharedKey, error) {
		dk.Destroy()
		return nil, fmt.Errorf("new data key: %w", err)
	}
	for _, u := range ks.uris {
		if !v.wrapsUnder(v.aliasOf(u)) {
			// Named by the configuration, which whoever holds the storage
			// can write: never wrap under a key the user does not trust.
			v.warnOnce(fmt.Errorf("untrusted new-file key %s", u), "kmsfs: the configuration names %s, which is not trusted for this volume: new files are not wrapped under it", u)
			continue
		}
		kr, err := v.res.Get(ctx, v.aliasOf(u))
		if err != nil {
			return fail(err)
		}
		var wrapped []byte
		if dk == nil {
			dk, wrapped, err = kr.GenerateDataKey(ctx, ks.encCtx)
		} else {
			w, ok := kr.(keyring.Wrapper)
			if !ok {
				return fail(fmt.Errorf("key %s cannot wrap an existing data key", u))
			}
			wrapped, err = w.Wrap(ctx, dk, ks.encCtx)
		}
		if err == nil {
			wrapped, err = v.tagSlot(u, ks.encCtx, wrapped)
		}
		if err != nil {
			return fail(err)
		}
		slots = append(slots, header.Slot{URI: u, Context: ks.encCtx, Wrapped: wrapped})
	}
	if dk == nil {
		return nil, fmt.Errorf("new data key: %w: the configuration's keys %v", ErrUntrusted, keyring.RedactURIs(ks.uris))
	}
	ks.generated.Add(1)
	return &sharedKey{dk: dk, slots: slots}, nil
}

// prefetch fills the ready queue in the background, with at most the
// queue's capacity of key service calls at once. ks.mu is held.
func (ks *keySource) prefetch() {
	if ks.closed || cap(ks.ready) == 0 {
		return
	}
	for ks.filing.Load() < int32(cap(ks.ready)) {
		n := ks.filing.Add(1)
		if n > int32(cap(ks.ready)) {
			ks.filing.Add(-1)
			return
		}
		ks.wg.Add(1)
		go func() {
			defer ks.wg.Done()
			defer ks.filing.Add(-1)
			for len(ks.ready) < cap(ks.ready) {
				ctx, cancel := context.WithTimeout(ks.ctx, time.Minute)
				k, err := ks.generate(ctx)
				cancel()
				if err != nil {
					if ks.ctx.Err() == nil {
						ks.lastErr.Store(err.Error())
						ks.v.Log.Printf("kmsfs: fetching a data key ahead: %v", err)
					}
					return
				}
				ks.mu.Lock()
				if ks.closed {
					ks.mu.Unlock()
					k.destroy()
					return
				}
				select {
				case ks.ready <- k:
					ks.mu.Unlock()
				default:
					ks.mu.Unlock()
					k.destroy()
					return
				}
			}
		}()
	}
}

// fileKeys returns a new file's header and keys, under a shared data key.
func (ks *keySource) fileKeys(ctx context.Context) ([]byte, *fileKeys, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.closed {
		return nil, nil, fmt.Errorf("volume is closing")
	}
	now := time.Now()
	if ks.cur == nil || ks.cur.uses >= ks.files || now.Sub(ks.cur.since) >= ks.age {
		ks.cur.destroy()
		ks.cur = nil
		var k *sharedKey
		select {
		case k = <-ks.ready:
		default:
			ks.waited.Add(1)
			var err error
			if k, err = ks.generate(ctx); err != nil {
				return nil, nil, err
			}
		}
		k.since = now
		ks.cur = k
		// An idle mount does not keep the key past its window: the files
		// made with it are then safe from a later look at its memory
		// (the key cache keeps a sealed copy for its own time to live).
		if ks.expire != nil {
			ks.expire.Stop()
		}
		ks.expire = time.AfterFunc(ks.age, func() {
			ks.mu.Lock()
			defer ks.mu.Unlock()
			if ks.cur == k {
				k.destroy()
				ks.cur = nil
			}
		})
		ks.prefetch()
	}
	ks.cur.uses++
	ks.handedOut.Add(1)
	// A new file's data key stays in the cache while files use it: a
	// write-only mount can reopen what it created only from there.
	var slot header.Slot
	for _, s := range ks.cur.slots {
		if !isLocal(s.URI) {
			slot = s
			ks.v.keepSlot(s, ks.cur.dk)
			break
		}
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, err
	}
	version := uint16(header.Version)
	if ks.v.Layout3 != nil && !ks.v1 {
		version = header.Version3
	}
	hdr, err := ks.v.newHeader(version, id, ks.cur.slots, ks.cur.dk.Bytes())
	if err != nil {
		return nil, nil, fmt.Errorf("new file header: %w", err)
	}
	dk := ks.cur.dk
	fk, err := newFileKeysV(version, id, ks.v.Layout, func(ck []byte) error {
		return header.Derive(ck, dk.Bytes(), id, header.ContentKey)
	})
	if err != nil {
		return nil, nil, err
	}
	fk.volume = ks.volID
	if slot.URI != "" {
		fk.v, fk.slot = ks.v, slot // Close keeps the key cached
	}
	if ks.files <= 1 {
		// One key per file: nothing to keep it for.
		ks.cur.destroy()
		ks.cur = nil
	}
	return hdr, fk, nil
}

// reset drops the current and prefetched keys (the key list changed).
func (ks *keySource) reset() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.cur.destroy()
	ks.cur = nil
	for {
		select {
		case k := <-ks.ready:
			k.destroy()
		default:
			return
		}
	}
}

// close stops prefetching and wipes every key the source holds.
func (ks *keySource) close() {
	ks.mu.Lock()
	ks.closed = true
	if ks.expire != nil {
		ks.expire.Stop()
	}
	ks.mu.Unlock()
	ks.cancel()
	ks.wg.Wait()
	ks.reset()
}

// KeySourceStats are counters of the data keys made for new files.
type KeySourceStats struct {
	DataKeysGenerated int64  `json:"data_keys_generated"`
	FilesKeyed        int64  `json:"files_keyed"`
	CreatesWaited     int64  `json:"creates_waited_for_kms"`
	ReuseFiles        int    `json:"reuse_files"`
	ReuseSeconds      int    `json:"reuse_seconds"`
	LastError         string `json:"last_prefetch_error,omitempty"`
}

func (ks *keySource) stats() KeySourceStats {
	s, _ := ks.lastErr.Load().(string)
	return KeySourceStats{
		DataKeysGenerated: ks.generated.Load(), FilesKeyed: ks.handedOut.Load(), CreatesWaited: ks.waited.Load(),
		ReuseFiles: ks.files, ReuseSeconds: int(ks.age / time.Second), LastError: s,
	}
}
