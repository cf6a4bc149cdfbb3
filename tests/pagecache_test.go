package tests

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The tests here look at the backing files' pages in the kernel's page
// cache, which is how kmsfs's large reads and writes differ from small
// ones. They need a backing directory on a disk: a tmpfs keeps every
// page resident and never writes it back.

// requireDiskBacking skips t if v's backing directory is held in memory.
func requireDiskBacking(t *testing.T, v *volume) {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(v.cipherDir, &fs); err != nil {
		t.Fatalf("statfs %s = %v", v.cipherDir, err)
	}
	if fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC {
		t.Skipf("%s is in memory: its pages are always resident and never written back", v.cipherDir)
	}
}

// TestLargeReadsBypassBackingCache reads a file through the mount, cold,
// and checks that its backing file's blocks did not enter the page cache:
// large reads go to the disk with O_DIRECT, since the plaintext is cached
// on the mount and caching the ciphertext too would hold every byte
// twice. The file's content must of course still read back.
func TestLargeReadsBypassBackingCache(t *testing.T) {
	v := newVolume(t)
	requireDiskBacking(t, v)
	data := pattern("direct", 8<<20+4321)
	writeFile(t, v.path("big"), data)
	v.remount() // cold on the mount
	// Cold in the backing file too: written back, then dropped.
	bf, err := os.Open(v.backing("big"))
	if err != nil {
		t.Fatalf("os.Open = %v", err)
	}
	defer bf.Close()
	if err := bf.Sync(); err != nil {
		t.Fatalf("fsync %s = %v", v.backing("big"), err)
	}
	if err := unix.Fadvise(int(bf.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatalf("fadvise %s = %v", v.backing("big"), err)
	}
	if res, pages := residentPages(t, bf, headerSize); res > pages/20 {
		t.Fatalf("%d of %d pages still cached after POSIX_FADV_DONTNEED: cannot tell reads apart", res, pages)
	}
	checkContent(t, v.path("big"), data, v.blockSize)
	// The first requests of a sequential read are small and go through
	// the page cache; the rest must not.
	if res, pages := residentPages(t, bf, headerSize); res > pages/4 {
		t.Errorf("after a cold read through the mount, %d of the %d pages of the backing file's blocks are in the page cache, want at most a quarter", res, pages)
	}
}

// residentPagesOf opens path and counts its pages in the page cache.
func residentPagesOf(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, _ := residentPages(t, f, 0)
	return n
}

// residentPages returns how many pages of the file f from byte from on are
// in the page cache, and how many pages that is (mincore(2)).
func residentPages(t *testing.T, f *os.File, from int64) (resident, pages int) {
	t.Helper()
	st, err := f.Stat()
	if err != nil {
		t.Fatalf("stat %s = %v", f.Name(), err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s = %v", f.Name(), err)
	}
	defer unix.Munmap(m)
	ps := int64(os.Getpagesize())
	vec := make([]byte, (int64(len(m))+ps-1)/ps)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore %s = %v", f.Name(), e)
	}
	for _, b := range vec[from/ps:] {
		resident += int(b & 1)
	}
	return resident, len(vec) - int(from/ps)
}

// TestLargeWritesStartWriteback writes a file through the mount in large
// requests and checks that its backing pages go to disk by themselves,
// without an fsync, well before the kernel's own 30-second expiry: kmsfs
// starts their writeback as it writes them, so that a later fsync finds
// little left to do. Page state comes from /proc/kpageflags (root only).
func TestLargeWritesStartWriteback(t *testing.T) {
	v := newVolume(t) // fails under CI=true if it cannot mount
	requireDiskBacking(t, v)
	if os.Geteuid() != 0 {
		t.Skip("reading page flags needs root")
	}
	f, err := os.Create(v.path("stream"))
	if err != nil {
		t.Fatalf("os.Create = %v", err)
	}
	data := pattern("stream", 1<<20)
	for range 8 {
		if _, err := f.Write(data); err != nil {
			t.Fatalf("write = %v", err)
		}
	}
	// Close sends the last writes to the daemon and waits for them; it
	// does not sync.
	if err := f.Close(); err != nil {
		t.Fatalf("close = %v", err)
	}
	var dirty, pages int
	for range 100 {
		// The header is written in a small request of its own and may stay
		// dirty: only the blocks count.
		dirty, pages = dirtyPages(t, v.backing("stream"), headerSize)
		if dirty == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if pages < 2048 || dirty != 0 {
		t.Errorf("%d of the %d cached pages of the backing file's blocks are still dirty 10 s after close, want 0", dirty, pages)
	}
	checkContent(t, v.path("stream"), bytes.Repeat(data, 8), v.blockSize)
}

// pageSink keeps the loads that map pages in dirtyPages.
var pageSink byte

// dirtyPages maps the file at path and returns how many of its pages from
// byte from on are dirty in the page cache, and how many it looked at.
func dirtyPages(t *testing.T, path string, from int64) (dirty, pages int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("os.Open = %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatalf("stat %s = %v", path, err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s = %v", path, err)
	}
	defer unix.Munmap(m)
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatalf("os.Open = %v", err)
	}
	defer pagemap.Close()
	kflags, err := os.Open("/proc/kpageflags")
	if err != nil {
		t.Fatalf("os.Open = %v", err)
	}
	defer kflags.Close()
	const (
		present  = 1 << 63
		pfnMask  = 1<<55 - 1
		kpfDirty = 1 << 4
	)
	ps := int64(os.Getpagesize())
	base := int64(uintptr(unsafe.Pointer(&m[0])))
	var e [8]byte
	for off := from &^ (ps - 1); off < st.Size(); off += ps {
		pageSink ^= m[off] // map the page: it is in the page cache, or read clean
		if _, err := pagemap.ReadAt(e[:], (base+off)/ps*8); err != nil {
			t.Fatalf("reading /proc/self/pagemap: %v", err)
		}
		pe := binary.LittleEndian.Uint64(e[:])
		if pe&present == 0 || pe&pfnMask == 0 {
			t.Fatalf("page at %d of %s: pagemap entry %#x has no frame number", off, path, pe)
		}
		if _, err := kflags.ReadAt(e[:], int64(pe&pfnMask)*8); err != nil {
			t.Fatalf("reading /proc/kpageflags: %v", err)
		}
		if binary.LittleEndian.Uint64(e[:])&kpfDirty != 0 {
			dirty++
		}
		pages++
	}
	return dirty, pages
}
