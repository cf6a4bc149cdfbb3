package keyring

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/awnumar/memguard"
	"golang.org/x/sys/unix"
)

// Plaintext keys are kept in a few large memguard LockedBuffers ("chunks")
// cut into fixed slots, not one LockedBuffer per key: a LockedBuffer costs
// three pages, two mappings and hundreds of microseconds, and a process
// can hold only a few thousand of them (RLIMIT_MEMLOCK, vm.max_map_count).
// One 64 KiB chunk holds 2048 keys, so 10,000 open files need a handful of
// chunks and well under 1 MiB of locked memory.
const (
	slotSize      = 32
	chunkSize     = 64 << 10
	slotsPerChunk = chunkSize / slotSize
)

// ErrKeyMemory is returned when no more locked memory can be obtained for
// keys (RLIMIT_MEMLOCK would be exceeded).
var ErrKeyMemory = errors.New("keyring: out of locked memory for keys (raise RLIMIT_MEMLOCK, ulimit -l)")

// Key is a 32-byte secret held in locked, guarded memory. Its bytes are
// wiped by Destroy. A Key is not safe for concurrent Destroy; reading
// Bytes concurrently is fine.
type Key struct {
	c *chunk
	i int
}

type chunk struct {
	buf  *memguard.LockedBuffer
	used int
	free []int // free slot indexes
}

type arena struct {
	mu     sync.Mutex
	chunks []*chunk
	locked int64 // bytes locked by the chunks
}

var keys arena

// NewKey returns a zeroed key in locked memory.
func NewKey() (*Key, error) {
	return keys.alloc()
}

// NewRandomKey returns a key filled from crypto/rand.
func NewRandomKey() (*Key, error) {
	k, err := NewKey()
	if err != nil {
		return nil, err
	}
	if _, err := rand.Read(k.Bytes()); err != nil {
		k.Destroy()
		return nil, fmt.Errorf("keyring: reading random key: %w", err)
	}
	return k, nil
}

// NewKeyFrom copies src (which must be DataKeySize bytes) into a new key
// and wipes src.
func NewKeyFrom(src []byte) (*Key, error) {
	defer memguard.WipeBytes(src)
	if len(src) != slotSize {
		return nil, fmt.Errorf("keyring: key is %d bytes, want %d", len(src), slotSize)
	}
	k, err := NewKey()
	if err != nil {
		return nil, err
	}
	copy(k.Bytes(), src)
	return k, nil
}

// Bytes returns the key's 32 bytes. The slice points into locked memory
// and is valid until Destroy; do not keep it or copy it to the heap.
func (k *Key) Bytes() []byte {
	b := k.c.buf.Bytes()
	return b[k.i*slotSize : (k.i+1)*slotSize : (k.i+1)*slotSize]
}

// Clone returns a new key with the same bytes.
func (k *Key) Clone() (*Key, error) {
	n, err := NewKey()
	if err != nil {
		return nil, err
	}
	copy(n.Bytes(), k.Bytes())
	return n, nil
}

// Destroy wipes the key and returns its slot. It is safe to call on a nil
// key and more than once.
func (k *Key) Destroy() {
	if k == nil || k.c == nil {
		return
	}
	memguard.WipeBytes(k.Bytes())
	keys.release(k.c, k.i)
	k.c = nil
}

// KeysInUse reports how many keys are alive and how many bytes of locked
// memory hold them.
func KeysInUse() (n int, lockedBytes int64) {
	keys.mu.Lock()
	defer keys.mu.Unlock()
	for _, c := range keys.chunks {
		n += c.used
	}
	return n, keys.locked
}

func (a *arena) alloc() (*Key, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.chunks {
		if n := len(c.free); n > 0 {
			i := c.free[n-1]
			c.free = c.free[:n-1]
			c.used++
			return &Key{c: c, i: i}, nil
		}
	}
	if err := a.checkLimit(); err != nil {
		return nil, err
	}
	buf := memguard.NewBuffer(chunkSize)
	if !buf.IsAlive() {
		return nil, ErrKeyMemory
	}
	c := &chunk{buf: buf, free: make([]int, 0, slotsPerChunk)}
	for i := slotsPerChunk - 1; i >= 1; i-- {
		c.free = append(c.free, i)
	}
	c.used = 1
	a.chunks = append(a.chunks, c)
	a.locked += chunkSize
	return &Key{c: c, i: 0}, nil
}

// checkLimit refuses a new chunk that would exceed RLIMIT_MEMLOCK:
// memguard panics (and purges every key) when mlock fails, so kmsfs must
// never let it get that far.
func (a *arena) checkLimit() error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		return nil
	}
	if rl.Cur == unix.RLIM_INFINITY {
		return nil
	}
	// Leave a quarter of the limit for memguard's own buffers and others.
	if uint64(a.locked+chunkSize) > rl.Cur-rl.Cur/4 {
		return fmt.Errorf("%w: %d bytes locked, limit %d", ErrKeyMemory, a.locked, rl.Cur)
	}
	return nil
}

func (a *arena) release(c *chunk, i int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c.free = append(c.free, i)
	c.used--
	if c.used > 0 || len(a.chunks) == 1 {
		return
	}
	// Give an empty chunk back, keeping one for the next key.
	for j, x := range a.chunks {
		if x == c {
			a.chunks = append(a.chunks[:j], a.chunks[j+1:]...)
			break
		}
	}
	c.buf.Destroy()
	a.locked -= chunkSize
}
