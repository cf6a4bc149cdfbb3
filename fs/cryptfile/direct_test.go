package cryptfile

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// directWorks reports whether the file system holding path serves
// O_DIRECT reads.
func directWorks(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer syscall.Close(fd)
	buf := getDirect(directAlign)
	defer directPool.Put(buf)
	_, err = syscall.Pread(fd, *buf, 0)
	return err == nil
}

// testDirs returns the directories the direct path is tried in: the
// test's temporary directory and, if there is one, a directory on
// /dev/shm (tmpfs, which may refuse O_DIRECT).
func testDirs(t *testing.T) map[string]string {
	dirs := map[string]string{"tempdir": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "cryptfile-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			dirs["shm"] = d
		}
	}
	return dirs
}

// TestDirectRead checks large reads, which go through the O_DIRECT
// descriptor where the backing file system allows it, against a handle
// kept on buffered reads and against the model, right after buffered
// writes too.
func TestDirectRead(t *testing.T) {
	for name, dir := range testDirs(t) {
		for _, bs := range []int{4096, 65536, 1 << 20} {
			t.Run(fmt.Sprintf("%s/B=%d", name, bs), func(t *testing.T) {
				B := int64(bs)
				e := newEnvIn(t, dir, fmt.Sprintf("direct-%d", bs), bs, nil)
				hd, hb := e.open(), e.open()
				hb.direct.off = true // buffered only
				r := rand.New(rand.NewPCG(30, uint64(bs)))
				var m model
				size := int64(3<<20 + 1234)
				for off := int64(0); off < size; off += MaxRequest {
					e.apply(hd, &m, wr(off, min(MaxRequest, size-off)), r)
				}
				works := directWorks(e.path)
				for _, tc := range []struct {
					name   string
					off, n int64
				}{
					{"aligned 1 MiB", 0, 1 << 20},
					{"unaligned 1 MiB", 1, 1 << 20},
					{"from the end of a block", B - 1, 300 << 10},
					{"second block on", B, 2 << 20},
					{"across the end", size - 300<<10, 400 << 10},
					{"the last bytes", size - 10, 1 << 20},
					{"small", 5, 100},
					{"whole file", 0, size + 5},
				} {
					for _, h := range []*Handle{hd, hb} {
						e.checkRead(h, m, tc.off, int(tc.n))
					}
				}
				// Right after buffered writes, whose pages may still be
				// dirty.
				e.apply(hd, &m, wr(12345, 500<<10), r)
				e.apply(hd, &m, wr(2<<20, 7), r)
				e.checkRead(hd, m, 0, 3<<20)
				// Read into a buffer with room to spare: decrypted in
				// place.
				big := make([]byte, 1<<20, 2<<20)
				if n, err := hd.Read(big, 0); n != len(big) || err != nil || !bytes.Equal(big, m[:len(big)]) {
					t.Errorf("Read(1 MiB with spare capacity, 0) = %d, %v; want the model", n, err)
				}
				hd.direct.mu.Lock()
				ok, off := hd.direct.ok, hd.direct.off
				hd.direct.mu.Unlock()
				switch {
				case works && !ok:
					t.Errorf("direct descriptor open = %v, want true (%s serves O_DIRECT)", ok, name)
				case !works && !off:
					t.Errorf("direct reads off = %v, want true (%s refuses O_DIRECT)", off, name)
				case !works:
					t.Logf("%s refuses O_DIRECT: the handle fell back to buffered reads", name)
				}
				if hb.direct.ok {
					t.Errorf("a handle with direct reads off opened a direct descriptor")
				}
				e.check(hb, m)
			})
		}
	}
}

// TestDirectRefused checks the fallback of a handle whose direct
// descriptor refuses reads with EINVAL (as a file system does for
// alignment it does not accept): the read is served buffered and the
// handle stays buffered.
func TestDirectRefused(t *testing.T) {
	const B = 4096
	e := newEnv(t, B)
	h := e.open()
	r := rand.New(rand.NewPCG(31, 0))
	var m model
	e.apply(h, &m, wr(0, 1<<20), r)
	// A descriptor whose reads at the offset the read will use fail
	// with EINVAL.
	probe := getDirect(directAlign)
	defer directPool.Put(probe)
	dfd := -1
	for _, p := range []string{"/proc/self/attr/current", "/proc/self/clear_refs", "/proc/self/attr/exec"} {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if _, err := syscall.Pread(fd, *probe, directAlign); err == syscall.EINVAL {
			dfd = fd
			break
		}
		syscall.Close(fd)
	}
	if dfd < 0 {
		t.Skip("no descriptor here refuses reads with EINVAL")
	}
	h.direct.mu.Lock()
	h.direct.fd, h.direct.ok = dfd, true
	h.direct.mu.Unlock()
	e.checkRead(h, m, 0, 1<<20)
	if h.direct.ok || !h.direct.off {
		t.Errorf("direct descriptor after EINVAL: open = %v, off = %v; want false, true", h.direct.ok, h.direct.off)
	}
	if _, err := unix.FcntlInt(uintptr(dfd), unix.F_GETFD, 0); err != syscall.EBADF {
		t.Errorf("fcntl(F_GETFD) of the refused descriptor = %v, want EBADF (closed)", err)
	}
	e.checkRead(h, m, 1, 1<<20)
}

// TestDirectFdOpenRefused checks that a handle whose backing file cannot
// be reopened with O_DIRECT stays on buffered reads for good.
func TestDirectFdOpenRefused(t *testing.T) {
	var d directFd
	if got := d.get(-1); got != -1 || !d.off {
		t.Fatalf("get(-1) = %d, off = %v; want -1, true", got, d.off)
	}
	fd, err := syscall.Open(t.TempDir(), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if got := d.get(fd); got != -1 {
		t.Errorf("get(a valid descriptor) after a refusal = %d, want -1", got)
	}
	d.close()
}

// TestPipelinedWrite checks writes of at least pipeMin bytes, which are
// sealed in steps on several goroutines, against the same bytes written
// in requests below pipeMin, and against the model.
func TestPipelinedWrite(t *testing.T) {
	for _, bs := range []int{4096, 65536, 1 << 20} {
		B := int64(bs)
		for _, tc := range []struct {
			name   string
			off, n int64
			big    bool // also with 1 MiB blocks (slow under -race)
		}{
			{"just below pipeMin", 0, pipeMin - 1, false},
			{"pipeMin", 0, pipeMin, false},
			{"pipeMin plus one, unaligned", 1, pipeMin + 1, true},
			{"1 MiB from the end of a block", B - 1, 1 << 20, true},
			{"over the old end, unaligned", 100, 1<<20 + B + 3, true},
			{"past the old end", 2<<20 + 5, 1<<20 + 1, true},
			{"2 MiB aligned", 0, 2 << 20, false},
		} {
			if bs == 1<<20 && !tc.big {
				continue
			}
			t.Run(fmt.Sprintf("B=%d/%s", bs, tc.name), func(t *testing.T) {
				dir := t.TempDir()
				pipe := newEnvIn(t, dir, "pipe", bs, nil)
				simple := newEnvIn(t, dir, "simple", bs, nil)
				hp, hs := pipe.open(), simple.open()
				r := rand.New(rand.NewPCG(32, uint64(bs)))
				old := randBytes(r, 3<<19+7)
				data := randBytes(r, tc.n)
				var m model
				m.write(old, 0)
				m.write(data, tc.off)
				for _, h := range []*Handle{hp, hs} {
					if _, err := h.WriteAt(ctx, old, 0); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := hp.WriteAt(ctx, data, tc.off); err != nil {
					t.Fatalf("WriteAt(%d bytes, %d) = %v, want nil", tc.n, tc.off, err)
				}
				const chunk = 100_003
				for i := int64(0); i < tc.n; i += chunk {
					if _, err := hs.WriteAt(ctx, data[i:min(i+chunk, tc.n)], tc.off+i); err != nil {
						t.Fatal(err)
					}
				}
				pipe.check(hp, m)
				simple.check(hs, m)
				if len(pipe.backing()) != len(simple.backing()) {
					t.Errorf("backing sizes = %d (pipelined), %d (simple); want equal", len(pipe.backing()), len(simple.backing()))
				}
			})
		}
	}
}

// TestLargeRequests checks requests larger than MaxRequest, whose
// buffers do not come from the pools.
func TestLargeRequests(t *testing.T) {
	e := newEnv(t, 4096)
	h := e.open()
	r := rand.New(rand.NewPCG(33, 0))
	var m model
	for _, o := range []op{wr(0, 5<<20), wr(3, 5<<20), rd(1, 6<<20), rd(0, 5<<20)} {
		e.apply(h, &m, o, r)
	}
	e.check(h, m)
}
