package keyring

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func TestManyKeys(t *testing.T) {
	const count = 10000
	n0, locked0 := KeysInUse()
	ks := make([]*Key, 0, count)
	for i := range count {
		k, err := NewRandomKey()
		if err != nil {
			t.Fatalf("NewRandomKey() #%d error = %v", i, err)
		}
		ks = append(ks, k)
	}
	n, locked := KeysInUse()
	if n != n0+count {
		t.Errorf("KeysInUse() with %d keys alive = %d, want %d", count, n, n0+count)
	}
	if locked >= 1<<20 {
		t.Errorf("KeysInUse() locked bytes with %d keys = %d, want < 1 MiB", count, locked)
	}
	seen := map[[32]byte]bool{}
	for _, k := range ks {
		seen[[32]byte(k.Bytes())] = true
	}
	if len(seen) != count {
		t.Errorf("%d random keys hold %d distinct values, want %d", count, len(seen), count)
	}
	for _, k := range ks {
		k.Destroy()
	}
	n, locked = KeysInUse()
	if n != n0 {
		t.Errorf("KeysInUse() after Destroy = %d, want %d", n, n0)
	}
	if locked > max(locked0, chunkSize) {
		t.Errorf("KeysInUse() locked bytes after Destroy = %d, want <= %d", locked, max(locked0, chunkSize))
	}
}

func TestDestroyWipes(t *testing.T) {
	// Keep a second key in the same chunk alive so the chunk stays mapped
	// and the destroyed slot can be read.
	var k, keep *Key
	var held []*Key
	defer func() {
		for _, h := range held {
			h.Destroy()
		}
	}()
	for {
		a, err := NewRandomKey()
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewRandomKey()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, b)
		if a.c == b.c {
			k, keep = a, b
			break
		}
		held = append(held, a)
	}
	slot := k.Bytes()
	if bytes.Equal(slot, make([]byte, 32)) {
		t.Fatalf("NewRandomKey() = all zero")
	}
	k.Destroy()
	if !bytes.Equal(slot, make([]byte, 32)) {
		t.Errorf("slot after Destroy = %x, want all zero", slot)
	}
	k.Destroy() // twice is fine
	(*Key)(nil).Destroy()
	if keep.Bytes() == nil {
		t.Errorf("other key in the chunk lost its bytes")
	}
}

func TestNewKeyFrom(t *testing.T) {
	src := bytes.Repeat([]byte{7}, 32)
	k, err := NewKeyFrom(src)
	if err != nil {
		t.Fatalf("NewKeyFrom() error = %v", err)
	}
	defer k.Destroy()
	if !bytes.Equal(k.Bytes(), bytes.Repeat([]byte{7}, 32)) {
		t.Errorf("NewKeyFrom() = %x, want 07 x 32", k.Bytes())
	}
	if !bytes.Equal(src, make([]byte, 32)) {
		t.Errorf("NewKeyFrom() left src = %x, want wiped", src)
	}
	c, err := k.Clone()
	if err != nil {
		t.Fatalf("Clone() error = %v", err)
	}
	defer c.Destroy()
	if !bytes.Equal(c.Bytes(), k.Bytes()) || &c.Bytes()[0] == &k.Bytes()[0] {
		t.Errorf("Clone() is not an equal, separate key")
	}
	short := []byte{1, 2, 3}
	if _, err := NewKeyFrom(short); err == nil {
		t.Errorf("NewKeyFrom(3 bytes) error = nil, want an error")
	}
	if !bytes.Equal(short, []byte{0, 0, 0}) {
		t.Errorf("NewKeyFrom(3 bytes) left src = %x, want wiped", short)
	}
}

func TestKeysConcurrent(t *testing.T) {
	n0, _ := KeysInUse()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			var held []*Key
			for i := range 3000 {
				k, err := NewKey()
				if err != nil {
					t.Errorf("goroutine %d: NewKey() error = %v", g, err)
					return
				}
				b := k.Bytes()
				for j := range b {
					b[j] = byte(g)
				}
				held = append(held, k)
				// Release in bursts so chunks fill and empty.
				if i%700 == 699 {
					for _, h := range held {
						if !bytes.Equal(h.Bytes(), bytes.Repeat([]byte{byte(g)}, 32)) {
							t.Errorf("goroutine %d: key = %x, another goroutine wrote it", g, h.Bytes())
						}
						h.Destroy()
					}
					held = held[:0]
				}
			}
			for _, h := range held {
				h.Destroy()
			}
		})
	}
	wg.Wait()
	if n, _ := KeysInUse(); n != n0 {
		t.Errorf("KeysInUse() after concurrent use = %d, want %d", n, n0)
	}
}

// memlockEnv selects TestMemlockHelper's mode in a child test process.
const memlockEnv = "KMSFS_TEST_MEMLOCK_HELPER"

// TestMemlockLimit runs TestMemlockHelper in child processes with
// RLIMIT_MEMLOCK lowered, so the limit does not affect this process.
func TestMemlockLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for _, mode := range []string{"exceed", "8MiB"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMemlockHelper$", "-test.v")
			cmd.Env = append(os.Environ(), memlockEnv+"="+mode)
			out, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("--- PASS: TestMemlockHelper")) {
				t.Errorf("child with %s=%s: error = %v, output:\n%s", memlockEnv, mode, err, out)
			} else {
				t.Logf("child output:\n%s", out)
			}
		})
	}
}

// TestMemlockHelper runs only in the child processes of TestMemlockLimit.
func TestMemlockHelper(t *testing.T) {
	mode := os.Getenv(memlockEnv)
	if mode == "" {
		t.Skip("runs only as a child of TestMemlockLimit")
	}
	limit := uint64(256 << 10)
	if mode == "8MiB" {
		limit = 8 << 20
	}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		t.Fatalf("Setrlimit(RLIMIT_MEMLOCK, %d) error = %v", limit, err)
	}
	// Root ignores RLIMIT_MEMLOCK (CAP_IPC_LOCK). Capabilities are per
	// thread, so drop it on this thread and allocate only from it: then a
	// locked chunk beyond the limit really fails, and memguard would
	// panic if the arena tried one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dropIPCLock(t)
	enforced := mlockFails(t, int(limit)+os.Getpagesize())
	t.Logf("limit %d bytes, enforced by the kernel on this thread: %v", limit, enforced)

	var ks []*Key
	defer func() {
		for _, k := range ks {
			k.Destroy()
		}
	}()
	switch mode {
	case "exceed":
		var err error
		for len(ks) < 1<<20 {
			var k *Key
			if k, err = NewKey(); err != nil {
				break
			}
			ks = append(ks, k)
		}
		if !errors.Is(err, ErrKeyMemory) {
			t.Fatalf("NewKey() beyond the limit after %d keys: error = %v, want ErrKeyMemory", len(ks), err)
		}
		if _, locked := KeysInUse(); uint64(locked) > limit {
			t.Errorf("KeysInUse() locked = %d, want <= limit %d", locked, limit)
		}
		t.Logf("%d keys fit, then: %v", len(ks), err)
		// Keys come back after some are released.
		for _, k := range ks[len(ks)-slotsPerChunk:] {
			k.Destroy()
		}
		ks = ks[:len(ks)-slotsPerChunk]
		k, err := NewKey()
		if err != nil {
			t.Fatalf("NewKey() after releasing a chunk error = %v, want nil", err)
		}
		ks = append(ks, k)
	case "8MiB":
		for i := range 10000 {
			k, err := NewRandomKey()
			if err != nil {
				t.Fatalf("NewRandomKey() #%d under 8 MiB RLIMIT_MEMLOCK error = %v", i, err)
			}
			ks = append(ks, k)
		}
	default:
		t.Fatalf("unknown %s=%q", memlockEnv, mode)
	}
}

// dropIPCLock removes CAP_IPC_LOCK from the calling thread's effective set.
func dropIPCLock(t *testing.T) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Logf("Capget: %v", err)
		return
	}
	data[0].Effective &^= 1 << unix.CAP_IPC_LOCK
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Logf("Capset: %v", err)
	}
}

// mlockFails reports whether locking size bytes fails on this thread.
// (The test locks just over the limit to learn whether the kernel
// enforces it here.)
func mlockFails(t *testing.T, size int) bool {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("Mmap: %v", err)
	}
	defer unix.Munmap(b)
	if err := unix.Mlock(b); err != nil {
		return true
	}
	unix.Munlock(b)
	return false
}
