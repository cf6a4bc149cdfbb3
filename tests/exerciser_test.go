package tests

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The exerciser runs random file operations on a few files of one mount
// and checks every result against an in-memory model of the files.
//
// KMSFS_EXERCISER_SEED=N replaces the random seed (to reproduce a
// failure); KMSFS_EXERCISER_OPS=N changes the number of operations per
// seed.
const (
	exerciserOps     = 1500
	exerciserFiles   = 3
	exerciserMaxSize = 256 << 10
	exerciserHistory = 25
)

func TestExerciser(t *testing.T) {
	ops := exerciserOps
	if s := os.Getenv("KMSFS_EXERCISER_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("KMSFS_EXERCISER_OPS=%q: want a positive number", s)
		}
		ops = n
	}
	random := time.Now().UnixNano()
	if s := os.Getenv("KMSFS_EXERCISER_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("KMSFS_EXERCISER_SEED=%q: want a number", s)
		}
		random = n
	}
	for _, c := range []struct {
		name string
		seed int64
	}{{"fixed", 1}, {"random", random}} {
		t.Run(c.name, func(t *testing.T) {
			t.Logf("seed %d (reproduce with KMSFS_EXERCISER_SEED=%d go test -run 'TestExerciser/random' ./tests)", c.seed, c.seed)
			newExerciser(t, c.seed).run(ops)
		})
	}
}

// exFile is one file of the exerciser: its model content and two
// descriptors, one for writing (opened in a random mode) and one
// read-only.
type exFile struct {
	name   string
	model  []byte
	w, r   *os.File
	wFlags int
}

type exerciser struct {
	t       *testing.T
	v       *volume
	bs      int
	seed    int64
	rng     *rand.Rand
	files   []*exFile
	op      int
	desc    string
	history []string
}

func newExerciser(t *testing.T, seed int64) *exerciser {
	v := newVolume(t)
	e := &exerciser{
		t:    t,
		v:    v,
		bs:   v.blockSize,
		seed: seed,
		rng:  rand.New(rand.NewPCG(uint64(seed), 0x6b6d7366)),
	}
	for i := range exerciserFiles {
		f := &exFile{name: fmt.Sprintf("ex-%d", i), wFlags: os.O_RDWR}
		writeFile(t, v.path(f.name), nil)
		e.files = append(e.files, f)
	}
	e.openAll()
	t.Cleanup(func() {
		e.closeAll()
		if t.Failed() {
			t.Logf("exerciser seed was %d", seed)
		}
	})
	return e
}

// failf stops the test with the seed, the operation and the last
// operations before it.
func (e *exerciser) failf(format string, args ...any) {
	e.t.Helper()
	e.t.Fatalf("seed %d, op #%d (%s): %s\nlast operations, oldest first:\n  %s",
		e.seed, e.op, e.desc, fmt.Sprintf(format, args...), strings.Join(e.history, "\n  "))
}

func (e *exerciser) record(format string, args ...any) {
	e.desc = fmt.Sprintf(format, args...)
	e.history = append(e.history, fmt.Sprintf("#%d %s", e.op, e.desc))
	if len(e.history) > exerciserHistory {
		e.history = e.history[1:]
	}
}

func (e *exerciser) open(f *exFile) {
	e.t.Helper()
	var err error
	if f.w, err = os.OpenFile(e.v.path(f.name), f.wFlags, 0); err != nil {
		e.failf("os.OpenFile(%s, %#o) = %v, want nil", f.name, f.wFlags, err)
	}
	if f.r, err = os.Open(e.v.path(f.name)); err != nil {
		e.failf("os.Open(%s) = %v, want nil", f.name, err)
	}
}

func (e *exerciser) close(f *exFile) {
	e.t.Helper()
	for _, fd := range []*os.File{f.w, f.r} {
		if fd == nil {
			continue
		}
		if err := fd.Close(); err != nil {
			e.failf("Close(%s) = %v, want nil", f.name, err)
		}
	}
	f.w, f.r = nil, nil
}

func (e *exerciser) openAll() {
	for _, f := range e.files {
		e.open(f)
	}
}

func (e *exerciser) closeAll() {
	for _, f := range e.files {
		for _, fd := range []*os.File{f.w, f.r} {
			if fd != nil {
				fd.Close()
			}
		}
		f.w, f.r = nil, nil
	}
}

// offset picks an offset: often on or next to a block edge, sometimes
// anywhere up to a little past the end of the file.
func (e *exerciser) offset(size int) int {
	limit := size + 2*e.bs
	if e.rng.IntN(2) == 0 {
		k := e.rng.IntN(limit/e.bs + 1)
		return max(0, k*e.bs+e.rng.IntN(5)-2)
	}
	return e.rng.IntN(limit + 1)
}

// length picks a length: small, one block, or up to three blocks.
func (e *exerciser) length() int {
	switch e.rng.IntN(4) {
	case 0:
		return 1 + e.rng.IntN(16)
	case 1:
		return e.bs + e.rng.IntN(3) - 1
	default:
		return 1 + e.rng.IntN(3*e.bs)
	}
}

func (e *exerciser) run(ops int) {
	for e.op = 0; e.op < ops; e.op++ {
		f := e.files[e.rng.IntN(len(e.files))]
		switch r := e.rng.IntN(1000); {
		case r < 330:
			e.write(f)
		case r < 580:
			e.read(f)
		case r < 660:
			e.truncate(f)
		case r < 720:
			e.reopen(f)
		case r < 760:
			e.record("fsync %s", f.name)
			if err := f.w.Sync(); err != nil {
				e.failf("Sync = %v, want nil", err)
			}
		case r < 860:
			e.stat(f)
		case r < 996:
			e.readAll(f)
		default:
			e.remount()
		}
	}
	e.op = ops
	e.remount()
	for _, f := range e.files {
		checkBacking(e.t, e.v, f.name, int64(len(f.model)))
	}
}

func (e *exerciser) write(f *exFile) {
	off, n := e.offset(len(f.model)), e.length()
	appending := f.wFlags&os.O_APPEND != 0
	if appending {
		off = len(f.model)
	}
	if off+n > exerciserMaxSize {
		e.truncateTo(f, exerciserMaxSize/2, true)
		return
	}
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(e.rng.Uint32())
	}
	e.record("pwrite %s %d bytes at %d (append %v)", f.name, n, off, appending)
	// pwrite on an O_APPEND descriptor appends whatever the offset.
	at := int64(off)
	if appending {
		at = int64(e.rng.IntN(len(f.model) + 1))
	}
	got, err := unix.Pwrite(int(f.w.Fd()), data, at)
	if err != nil || got != n {
		e.failf("pwrite = %d, %v, want %d, nil", got, err, n)
	}
	if end := off + n; end > len(f.model) {
		f.model = append(f.model, make([]byte, end-len(f.model))...)
	}
	copy(f.model[off:], data)
}

func (e *exerciser) read(f *exFile) {
	off, n := e.offset(len(f.model)), e.length()
	e.record("pread %s %d bytes at %d", f.name, n, off)
	buf := make([]byte, n)
	got, err := preadFull(f.r, buf, int64(off))
	var want []byte
	if off < len(f.model) {
		want = f.model[off:min(len(f.model), off+n)]
	}
	if got != len(want) {
		e.failf("ReadAt = %d bytes, %v, want %d bytes (file size %d)", got, err, len(want), len(f.model))
	}
	if got == n && err != nil {
		e.failf("ReadAt = %v, want nil", err)
	}
	if d := diffBytes(buf[:got], want, e.bs); d != "" {
		e.failf("ReadAt = %s (offsets relative to %d)", d, off)
	}
}

func (e *exerciser) readAll(f *exFile) {
	e.record("read all of %s", f.name)
	got, err := os.ReadFile(e.v.path(f.name))
	if err != nil {
		e.failf("os.ReadFile = %v, want nil", err)
	}
	if d := diffBytes(got, f.model, e.bs); d != "" {
		e.failf("os.ReadFile = %s", d)
	}
}

func (e *exerciser) truncate(f *exFile) {
	var size int
	if e.rng.IntN(2) == 0 {
		size = e.offset(len(f.model))
	} else {
		size = e.rng.IntN(exerciserMaxSize / 2)
	}
	e.truncateTo(f, size, e.rng.IntN(2) == 0)
}

func (e *exerciser) truncateTo(f *exFile, size int, byPath bool) {
	var err error
	if byPath {
		e.record("truncate(path) %s to %d", f.name, size)
		err = os.Truncate(e.v.path(f.name), int64(size))
	} else {
		e.record("ftruncate %s to %d", f.name, size)
		err = f.w.Truncate(int64(size))
	}
	if err != nil {
		e.failf("truncate = %v, want nil", err)
	}
	if size <= len(f.model) {
		f.model = f.model[:size]
	} else {
		f.model = append(f.model, make([]byte, size-len(f.model))...)
	}
}

func (e *exerciser) reopen(f *exFile) {
	modes := []int{os.O_RDWR, os.O_WRONLY, os.O_RDWR | os.O_APPEND, os.O_WRONLY | os.O_APPEND}
	f.wFlags = modes[e.rng.IntN(len(modes))]
	e.record("reopen %s with flags %#o", f.name, f.wFlags)
	e.close(f)
	e.open(f)
}

func (e *exerciser) stat(f *exFile) {
	e.record("stat %s", f.name)
	for _, fd := range []*os.File{f.w, f.r} {
		fi, err := fd.Stat()
		if err != nil || fi.Size() != int64(len(f.model)) {
			e.failf("Fstat = %v, %v, want size %d", fi, err, len(f.model))
		}
	}
	fi, err := os.Stat(e.v.path(f.name))
	if err != nil || fi.Size() != int64(len(f.model)) {
		e.failf("os.Stat = %v, %v, want size %d", fi, err, len(f.model))
	}
}

// remount closes every file, remounts the volume, reopens the files and
// reads each one whole.
func (e *exerciser) remount() {
	e.record("remount")
	for _, f := range e.files {
		e.close(f)
	}
	e.v.remount()
	e.openAll()
	for _, f := range e.files {
		e.readAll(f)
	}
}
