package cryptfile

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
)

// fakeKeyer is a Keyer without a key service: the data key of a file is
// HMAC(secret, file ID), a fixed 32-byte key per file, and its headers
// are real ones (header.New), so that Load checks them as a volume
// would. Two fakeKeyers with the same secret read each other's files.
type fakeKeyer struct {
	l      blockcipher.Layout
	secret []byte
	// newErr, when set, is what New returns.
	newErr error

	loads, news atomic.Int64
	// live counts the keys handed out and not yet closed; misuse counts
	// keys closed twice or used after Close.
	live, misuse atomic.Int64
}

// newFakeKeyer returns a fakeKeyer for layout l whose secret is made of
// the byte secret. At the end of the test it fails the test if a key
// was misused.
func newFakeKeyer(t testing.TB, l blockcipher.Layout, secret byte) *fakeKeyer {
	k := &fakeKeyer{l: l, secret: bytes.Repeat([]byte{secret}, 32)}
	t.Cleanup(func() {
		if n := k.misuse.Load(); n != 0 {
			t.Errorf("keys closed twice or used after Close: %d times", n)
		}
	})
	return k
}

// dataKey returns the data key of the file with the given ID.
func (k *fakeKeyer) dataKey(id [16]byte) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write(id[:])
	return m.Sum(nil)
}

// cipher returns the block cipher of the file with the given ID.
func (k *fakeKeyer) cipher(id [16]byte) (*blockcipher.Cipher, error) {
	var ck [header.KeySize]byte
	if err := header.Derive(ck[:], k.dataKey(id), id, header.ContentKey); err != nil {
		return nil, err
	}
	return blockcipher.New(ck[:], id, k.l)
}

func (k *fakeKeyer) key(id [16]byte) (Key, error) {
	c, err := k.cipher(id)
	if err != nil {
		return nil, err
	}
	k.live.Add(1)
	return &fakeKey{k: k, id: id, c: c}, nil
}

// header returns a valid header of a file with the given ID.
func (k *fakeKeyer) header(id [16]byte) ([]byte, error) {
	slots := []header.Slot{{URI: "test:///fake", Context: []byte(`{"test":1}`), Wrapped: []byte("wrapped")}}
	return header.New(uint8(bits.TrailingZeros(uint(k.l.BlockSize))), id, slots, k.dataKey(id))
}

// Load implements Keyer.
func (k *fakeKeyer) Load(ctx context.Context, fd int, name func() string) (Key, error) {
	k.loads.Add(1)
	var buf [header.Size]byte
	n, err := PreadHead(fd, buf[:])
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return nil, nil
	case n < header.Size:
		return nil, fmt.Errorf("%s: header of %d bytes: %w", name(), n, ErrCorrupt)
	}
	h, err := header.Parse(buf[:])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name(), errors.Join(ErrCorrupt, err))
	}
	if h.Preamble.BlockSize() != k.l.BlockSize {
		return nil, fmt.Errorf("%s: block size %d: %w", name(), h.Preamble.BlockSize(), ErrCorrupt)
	}
	if _, err := h.Accept(k.dataKey(h.Preamble.FileID)); err != nil {
		return nil, fmt.Errorf("%s: %w", name(), err)
	}
	return k.key(h.Preamble.FileID)
}

// New implements Keyer.
func (k *fakeKeyer) New(ctx context.Context) ([]byte, Key, error) {
	if k.newErr != nil {
		return nil, nil, k.newErr
	}
	k.news.Add(1)
	var id [16]byte
	rand.Read(id[:])
	hdr, err := k.header(id)
	if err != nil {
		return nil, nil, err
	}
	key, err := k.key(id)
	return hdr, key, err
}

// decrypt decodes a whole backing file on its own, without the engine:
// the header must be valid and every block must open (docs/FORMAT.md),
// so that it also checks what the engine wrote, not only what it reads
// back.
func (k *fakeKeyer) decrypt(backing []byte) ([]byte, error) {
	if len(backing) == 0 {
		return nil, nil
	}
	if len(backing) < header.Size {
		return nil, fmt.Errorf("backing file of %d bytes", len(backing))
	}
	h, err := header.Parse(backing[:header.Size])
	if err != nil {
		return nil, err
	}
	if _, err := h.Accept(k.dataKey(h.Preamble.FileID)); err != nil {
		return nil, err
	}
	c, err := k.cipher(h.Preamble.FileID)
	if err != nil {
		return nil, err
	}
	if _, err := k.l.PlainSize(int64(len(backing))); err != nil {
		return nil, err
	}
	return c.OpenBlocks(nil, backing[header.Size:], 0)
}

// fakeKey is the Key of fakeKeyer.
type fakeKey struct {
	k      *fakeKeyer
	id     [16]byte
	c      *blockcipher.Cipher
	closed atomic.Bool
}

func (k *fakeKey) FileID() [16]byte { return k.id }

func (k *fakeKey) Cipher() *blockcipher.Cipher {
	if k.closed.Load() {
		k.k.misuse.Add(1)
	}
	return k.c
}

func (k *fakeKey) Close() {
	if k.closed.Swap(true) {
		k.k.misuse.Add(1)
		return
	}
	k.k.live.Add(-1)
}

// layout returns the layout of a volume with block size bs.
func layout(bs int) blockcipher.Layout {
	return blockcipher.Layout{BlockSize: bs, DataOffset: header.Size}
}

// blockSizes are the block size classes every engine test runs with.
var blockSizes = []int{4096, 16384, 65536, 1 << 20}

// env is one backing file and the File of it.
type env struct {
	t     testing.TB
	dir   string
	name  string // relative to dir
	path  string
	keyer *fakeKeyer
	cfg   *Config
	f     *File
}

// newEnv makes an empty backing file "f" in a new directory, with block
// size bs and no journal. At the end of the test it closes the handles
// the test left open and checks that every key was closed.
func newEnv(t testing.TB, bs int) *env {
	return newEnvIn(t, t.TempDir(), "f", bs, nil)
}

// newEnvIn is newEnv for the backing file dir/name, made empty unless it
// exists, with journal j.
func newEnvIn(t testing.TB, dir, name string, bs int, j *Journal) *env {
	e := &env{t: t, dir: dir, name: name, path: filepath.Join(dir, name)}
	e.keyer = newFakeKeyer(t, layout(bs), 1)
	e.cfg = &Config{Layout: layout(bs), Keys: e.keyer, Journal: j}
	e.f = New(e.cfg, func() string { return e.name })
	if err := os.MkdirAll(filepath.Dir(e.path), 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(e.path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	t.Cleanup(func() {
		if e.f.opens != 0 {
			return // the test failed with handles open
		}
		if n := e.keyer.live.Load(); n != 0 {
			t.Errorf("%d keys not closed after the last handle", n)
		}
	})
	return e
}

// open opens a handle of the backing file, read-write.
func (e *env) open() *Handle {
	e.t.Helper()
	h, err := e.openFlags(syscall.O_RDWR)
	if err != nil {
		e.t.Fatalf("Open(%s) = %v, want nil", e.name, err)
	}
	return h
}

// openFlags opens a handle of the backing file with flags.
func (e *env) openFlags(flags int) (*Handle, error) {
	fd, err := syscall.Open(e.path, flags|syscall.O_CLOEXEC, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	h, err := e.f.Open(context.Background(), fd)
	if err == nil {
		e.t.Cleanup(func() { h.Close() })
	}
	return h, err
}

// backing returns the backing file's bytes.
func (e *env) backing() []byte {
	e.t.Helper()
	b, err := os.ReadFile(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// model is the reference: the plaintext as a plain byte slice.
type model []byte

func (m *model) write(p []byte, off int64) {
	if len(p) == 0 {
		return
	}
	if end := off + int64(len(p)); end > int64(len(*m)) {
		*m = append(*m, make([]byte, end-int64(len(*m)))...)
	}
	copy((*m)[off:], p)
}

func (m *model) truncate(size int64) {
	if size <= int64(len(*m)) {
		*m = (*m)[:size]
		return
	}
	*m = append(*m, make([]byte, size-int64(len(*m)))...)
}

// read returns what pread of n bytes at off gives.
func (m model) read(n int, off int64) []byte {
	if off >= int64(len(m)) {
		return nil
	}
	return m[off:min(off+int64(n), int64(len(m)))]
}

// check compares the file behind h with the model: its size, its
// content through h, the backing file's size, and the backing file
// decoded without the engine.
func (e *env) check(h *Handle, m model) {
	e.t.Helper()
	if got, err := h.Size(); err != nil || got != int64(len(m)) {
		e.t.Fatalf("Size() = %d, %v; want %d, nil", got, err, len(m))
	}
	got := make([]byte, len(m)+100)
	n, err := h.ReadAt(got, 0)
	if n != len(m) || err != io.EOF {
		e.t.Fatalf("ReadAt(%d bytes, 0) = %d, %v; want %d, EOF", len(got), n, err, len(m))
	}
	if i := firstDiff(got[:n], m); i >= 0 {
		e.t.Fatalf("ReadAt(0) differs from the model at byte %d (size %d)", i, len(m))
	}
	b := e.backing()
	if len(b) != 0 || len(m) != 0 {
		if want := e.cfg.Layout.CipherSize(int64(len(m))); int64(len(b)) != want {
			e.t.Fatalf("backing size = %d, want %d (plaintext %d)", len(b), want, len(m))
		}
	}
	plain, err := e.keyer.decrypt(b)
	if err != nil {
		e.t.Fatalf("decoding the backing file = %v, want nil", err)
	}
	if i := firstDiff(plain, m); i >= 0 {
		e.t.Fatalf("decoded backing file differs from the model at byte %d (%d bytes, want %d)", i, len(plain), len(m))
	}
}

// firstDiff returns the first index at which a and b differ, or -1.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
