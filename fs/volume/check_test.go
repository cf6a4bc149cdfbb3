package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/local"
)

// checkEnv is a volume wrapped under two local keys, A and B.
type checkEnv struct {
	dir, vol   string
	uriA, uriB string
}

func newCheckEnv(t *testing.T) *checkEnv {
	t.Helper()
	dir := t.TempDir()
	e := &checkEnv{dir: dir, vol: filepath.Join(dir, "vol")}
	for _, k := range []string{"a.key", "b.key"} {
		if err := local.Create(filepath.Join(dir, k), nil); err != nil {
			t.Fatal(err)
		}
	}
	e.uriA, e.uriB = local.URI(filepath.Join(dir, "a.key")), local.URI(filepath.Join(dir, "b.key"))
	if err := os.Mkdir(e.vol, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(context.Background(), e.vol, InitOptions{Keys: []string{e.uriA, e.uriB}, ReuseFiles: 1, ReuseSeconds: 1}, newLocalResolver()); err != nil {
		t.Fatal(err)
	}
	return e
}

func newLocalResolver() *keyring.Resolver {
	return keyring.NewResolver(keyring.NewRegistry(local.Register), keyring.Options{})
}

// open opens the volume trusting keys.
func (e *checkEnv) open(t *testing.T, keys ...string) *Volume {
	t.Helper()
	v, err := Open(context.Background(), e.vol, newLocalResolver(), OpenOptions{Trusted: keys})
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// put writes a file of n bytes through the engine.
func (e *checkEnv) put(t *testing.T, v *Volume, name string, n int) {
	t.Helper()
	fd, err := v.Backing().Open(name, syscall.O_RDWR|syscall.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f := cryptfile.New(&cryptfile.Config{Layout: v.Layout, Keys: v, V3: v.Layout3}, func() string { return name })
	h, err := f.Open(context.Background(), fd)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.WriteAt(context.Background(), make([]byte, n), 0); err != nil {
		t.Fatal(err)
	}
}

// String shows a check in failure messages.
func (c *HeaderCheck) String() string {
	if c == nil {
		return "<nil>"
	}
	return fmt.Sprintf("copies %+v, slots %+v", c.Copies, c.Slots)
}

// check runs CheckHeader on name.
func (e *checkEnv) check(t *testing.T, v *Volume, name string, flags int) (*HeaderCheck, int, error) {
	t.Helper()
	fd, err := v.Backing().Open(name, flags, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	c, k, err := v.CheckHeader(context.Background(), fd, name)
	if k != nil {
		k.Close()
	}
	return c, fd, err
}

func damage(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 1
	f.WriteAt(b, off)
}

func TestCheckHeader(t *testing.T) {
	e := newCheckEnv(t)
	v := e.open(t, e.uriA, e.uriB)
	e.put(t, v, "f", 5000)
	c, _, err := e.check(t, v, "f", syscall.O_RDONLY)
	if err != nil || !c.Copies[0].Valid || !c.Copies[1].Valid || len(c.Slots) != 2 || c.Slots[0].Err != nil || c.Slots[1].Err != nil || c.Damaged() {
		t.Fatalf("CheckHeader of a good file = %v, %v; want both copies and slots good", c, err)
	}

	// Offsets in the file's header, whatever its version.
	path := filepath.Join(e.vol, "f")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := header.ParsePreamble(raw)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(i int) int64 { return p.CopyOffset(i) + int64(p.MACOffset()) }

	// Copy 1's MAC damaged: found, and restored from copy 0.
	damage(t, path, mac(1))
	c, fd, err := e.check(t, v, "f", syscall.O_RDWR)
	if err != nil || !c.Copies[0].Valid || c.Copies[1].Valid || !errors.Is(c.Copies[1].Err, header.ErrTampered) || !c.Damaged() {
		t.Fatalf("CheckHeader with copy 1 damaged = %v, %v; want copy 1 tampered", c, err)
	}
	if i, err := c.Repair(fd); i != 1 || err != nil {
		t.Fatalf("Repair = %d, %v; want 1, nil", i, err)
	}
	if c, _, err := e.check(t, v, "f", syscall.O_RDONLY); err != nil || c.Damaged() || !c.Copies[1].Valid {
		t.Errorf("CheckHeader after Repair = %v, %v; want both valid", c, err)
	}

	// Copy 0 zeroed: unused, restored from copy 1. A header that changed
	// since the check is not touched.
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt(make([]byte, p.CopyLen()), p.CopyOffset(0))
	f.Close()
	c, fd, err = e.check(t, v, "f", syscall.O_RDWR)
	if err != nil || !errors.Is(c.Copies[0].Err, ErrUnusedCopy) || !c.Copies[1].Valid {
		t.Fatalf("CheckHeader with copy 0 zeroed = %+v, %v", c, err)
	}
	damage(t, path, p.CopyOffset(1)+5)
	if i, err := c.Repair(fd); i != -1 || err == nil {
		t.Errorf("Repair of a header changed since = %d, %v; want an error", i, err)
	}
	damage(t, path, p.CopyOffset(1)+5)
	if i, err := c.Repair(fd); i != 0 || err != nil {
		t.Errorf("Repair = %d, %v; want 0", i, err)
	}

	// Both copies damaged: no key, no repair.
	damage(t, path, mac(0))
	damage(t, path, mac(1))
	c, fd, err = e.check(t, v, "f", syscall.O_RDWR)
	if !errors.Is(err, ErrCorrupt) || c == nil || c.Damaged() {
		t.Errorf("CheckHeader with both copies damaged = %v, %v; want ErrCorrupt", c, err)
	}
	if i, err := c.Repair(fd); i != -1 || err != nil {
		t.Errorf("Repair with no valid copy = %d, %v; want -1, nil", i, err)
	}
}

func TestCheckHeaderSlots(t *testing.T) {
	e := newCheckEnv(t)
	e.put(t, e.open(t, e.uriA, e.uriB), "f", 10)
	// Only A trusted: B's slot is not tried.
	c, _, err := e.check(t, e.open(t, e.uriA), "f", syscall.O_RDONLY)
	if err != nil || len(c.Slots) != 2 || c.Slots[0].Err != nil || !errors.Is(c.Slots[1].Err, ErrUntrusted) {
		t.Errorf("CheckHeader trusting A = %v, %v; want B untrusted", c, err)
	}
	// B trusted but gone: its slot fails, not as damage.
	os.Remove(filepath.Join(e.dir, "b.key"))
	c, _, err = e.check(t, e.open(t, e.uriA, e.uriB), "f", syscall.O_RDONLY)
	if err != nil || len(c.Slots) != 2 || c.Slots[1].Err == nil || errors.Is(c.Slots[1].Err, ErrCorrupt) || errors.Is(c.Slots[1].Err, ErrUntrusted) {
		t.Errorf("CheckHeader with B gone = %v, %v; want B failing", c, err)
	}
	// B is now another key: its slot is refused, as damage.
	if err := local.Create(filepath.Join(e.dir, "b.key"), nil); err != nil {
		t.Fatal(err)
	}
	c, _, err = e.check(t, e.open(t, e.uriA, e.uriB), "f", syscall.O_RDONLY)
	if err != nil || len(c.Slots) != 2 || c.Slots[0].Err != nil || !errors.Is(c.Slots[1].Err, ErrCorrupt) {
		t.Errorf("CheckHeader with B replaced = %v, %v; want B's slot damaged", c, err)
	}
}

func TestStandalone(t *testing.T) {
	e := newCheckEnv(t)
	ctx := context.Background()
	s, err := NewStandalone(newLocalResolver(), []string{e.uriA}, 16384, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.dir, "file")
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f := cryptfile.New(&cryptfile.Config{Layout: s.Layout(), Keys: s}, func() string { return "file" })
	h, err := f.Open(ctx, fd)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("standalone plaintext")
	if _, err := h.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	h.Close()
	raw, _ := os.ReadFile(path)
	hdr, err := header.Parse(raw[:header.Size])
	if err != nil || hdr.Preamble.BlockSize() != 16384 {
		t.Fatalf("header = %v, %v; want block size 16384", hdr, err)
	}
	id, err := volumeFromContext(hdr.Copies[0].Slots[0].Context)
	if err != nil {
		t.Fatal(err)
	}
	// Each file is a volume of its own.
	hdr2, k2, err := s.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k2.Close()
	h2, _ := header.Parse(hdr2)
	if id2, _ := volumeFromContext(h2.Copies[0].Slots[0].Context); id2 == id {
		t.Errorf("two standalone files share volume ID %s", id)
	}

	read := func(keys ...string) ([]byte, error) {
		r, err := NewStandalone(newLocalResolver(), keys, 16384, nil)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := syscall.Open(path, syscall.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		h, err := cryptfile.New(&cryptfile.Config{Layout: r.Layout(), Keys: r}, func() string { return "file" }).Open(ctx, fd)
		if err != nil {
			return nil, err
		}
		defer h.Close()
		buf := make([]byte, 100)
		n, err := h.Read(buf, 0)
		return buf[:n], err
	}
	if got, err := read(e.uriA); err != nil || string(got) != string(data) {
		t.Errorf("read with A = %q, %v", got, err)
	}
	if _, err := read(e.uriB); !errors.Is(err, ErrWrongKey) || errors.Is(err, ErrCorrupt) {
		t.Errorf("read with B = %v, want ErrWrongKey", err)
	}
	if _, err := NewStandalone(newLocalResolver(), nil, 0, nil); err == nil {
		t.Errorf("NewStandalone without keys = nil error")
	}
	if _, err := NewStandalone(newLocalResolver(), []string{e.uriA}, 5000, nil); err == nil {
		t.Errorf("NewStandalone with block size 5000 = nil error")
	}
}
