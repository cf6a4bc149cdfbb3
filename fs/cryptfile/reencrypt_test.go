package cryptfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/fs/backing"
	"github.com/kmsfs/kmsfs/header"
)

// fileIDOf reads the file ID in the preamble of a backing file.
func fileIDOf(t *testing.T, b []byte) [16]byte {
	t.Helper()
	p, err := header.ParsePreamble(b[:header.PreambleSize])
	if err != nil {
		t.Fatal(err)
	}
	return p.FileID
}

// reencryptEnv writes a file with data, a hole in the middle and a short
// last block, and returns the env, an open handle and its model.
func reencryptEnv(t *testing.T, bs int) (*env, *Handle, model, *backing.Dir) {
	e := newEnv(t, bs)
	h := e.open()
	var m model
	data := bytes.Repeat([]byte("re-encrypt me "), 3*bs/14+1)[:3*bs]
	for _, w := range []struct {
		off int64
		n   int
	}{{0, 3 * bs}, {int64(10 * bs), bs + 100}} {
		if _, err := h.WriteAt(context.Background(), data[:w.n], w.off); err != nil {
			t.Fatal(err)
		}
		m.write(data[:w.n], w.off)
	}
	dir, err := backing.Open(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	return e, h, m, dir
}

// leftovers returns the re-encryption copies left in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ReencryptPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestReencrypt(t *testing.T) {
	for _, bs := range []int{4096, 65536} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			e, h, m, dir := reencryptEnv(t, bs)
			before := e.backing()
			var st0 syscall.Stat_t
			if err := syscall.Stat(e.path, &st0); err != nil {
				t.Fatal(err)
			}
			fd, err := syscall.Open(e.path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer syscall.Close(fd)
			size, err := e.f.Reencrypt(context.Background(), fd, dir)
			if err != nil {
				t.Fatalf("Reencrypt = %v", err)
			}
			if size != int64(len(m)) {
				t.Errorf("Reencrypt size = %d, want %d", size, len(m))
			}
			after := e.backing()
			if fileIDOf(t, before) == fileIDOf(t, after) {
				t.Error("the file ID did not change")
			}
			if len(after) != len(before) {
				t.Errorf("backing size %d, was %d", len(after), len(before))
			}
			// Every stored block is new, except holes, which stay holes.
			l := e.cfg.Layout
			cb := l.CipherBlockSize()
			for b := 0; int64(header.Size+b*cb) < int64(len(after)); b++ {
				lo := header.Size + b*cb
				hi := min(lo+cb, len(after))
				hole := bytes.Equal(before[lo:hi], make([]byte, hi-lo))
				if hole != bytes.Equal(after[lo:hi], make([]byte, hi-lo)) {
					t.Errorf("block %d: hole %v before, not after", b, hole)
				}
				if !hole && bytes.Equal(before[lo:hi], after[lo:hi]) {
					t.Errorf("block %d unchanged", b)
				}
			}
			var st1 syscall.Stat_t
			if err := syscall.Stat(e.path, &st1); err != nil {
				t.Fatal(err)
			}
			if st1.Ino != st0.Ino || st1.Mtim != st0.Mtim {
				t.Errorf("inode %d mtime %v, was %d %v", st1.Ino, st1.Mtim, st0.Ino, st0.Mtim)
			}
			if st1.Blocks > st0.Blocks {
				t.Errorf("backing file takes %d blocks, was %d: holes filled", st1.Blocks, st0.Blocks)
			}
			// The open handle goes on under the new key.
			e.check(h, m)
			if _, err := h.WriteAt(context.Background(), []byte("after"), int64(bs+3)); err != nil {
				t.Fatal(err)
			}
			m.write([]byte("after"), int64(bs+3))
			e.check(h, m)
			if l := leftovers(t, e.dir); len(l) != 0 {
				t.Errorf("copies left: %v", l)
			}
		})
	}
}

func TestReencryptClosedAndEmpty(t *testing.T) {
	e, h, m, dir := reencryptEnv(t, 4096)
	h.Close()
	fd, err := syscall.Open(e.path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if _, err := e.f.Reencrypt(context.Background(), fd, dir); err != nil {
		t.Fatal(err)
	}
	if n := e.keyer.live.Load(); n != 0 {
		t.Errorf("%d keys left open by the re-encryption of a closed file", n)
	}
	e.check(e.open(), m)

	empty := newEnv(t, 4096)
	efd, err := syscall.Open(empty.path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(efd)
	if n, err := empty.f.Reencrypt(context.Background(), efd, dir); n != 0 || err != nil {
		t.Errorf("Reencrypt(empty file) = %d, %v", n, err)
	}
}

func TestReencryptDamaged(t *testing.T) {
	e, h, _, dir := reencryptEnv(t, 4096)
	h.Close()
	b := e.backing()
	b[header.Size+4096+28+40] ^= 1 // block 1
	if err := os.WriteFile(e.path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(e.path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	_, err = e.f.Reencrypt(context.Background(), fd, dir)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "block 1") {
		t.Errorf("Reencrypt(damaged) = %v, want ErrCorrupt naming block 1", err)
	}
	if !bytes.Equal(e.backing(), b) {
		t.Error("a failed re-encryption changed the file")
	}
	if l := leftovers(t, e.dir); len(l) != 0 {
		t.Errorf("copies left: %v", l)
	}
}

// TestReencryptCrash stops a re-encryption at its commit point, copies
// part of the new content over the file (a crash in the middle of step
// 3), and lets ReplayReencrypt finish it.
func TestReencryptCrash(t *testing.T) {
	for _, partial := range []int64{0, 4096 + 5000, -1} {
		e, h, m, dir := reencryptEnv(t, 4096)
		h.Close()
		reencryptCommitted = func() error { return errors.New("crash") }
		fd, err := syscall.Open(e.path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.f.Reencrypt(context.Background(), fd, dir)
		reencryptCommitted = nil
		syscall.Close(fd)
		if err == nil {
			t.Fatal("Reencrypt went on past the injected crash")
		}
		l := leftovers(t, e.dir)
		if len(l) != 1 || l[0] == reencryptTmp {
			t.Fatalf("copies after the crash: %v, want one committed", l)
		}
		cp, err := os.ReadFile(filepath.Join(e.dir, l[0]))
		if err != nil {
			t.Fatal(err)
		}
		old := e.backing()
		switch {
		case partial > 0: // some blocks written, header not yet
			mixed := bytes.Clone(old)
			copy(mixed[header.Size:header.Size+partial], cp[header.Size:])
			os.WriteFile(e.path, mixed, 0o644)
		case partial < 0: // all written, copy not removed
			os.WriteFile(e.path, cp, 0o644)
		}
		var buf bytes.Buffer
		if err := ReplayReencrypt(dir, log.New(&buf, "", 0)); err != nil {
			t.Fatalf("ReplayReencrypt = %v", err)
		}
		if !bytes.Equal(e.backing(), cp) {
			t.Errorf("partial %d: the file is not the committed copy after the replay", partial)
		}
		if l := leftovers(t, e.dir); len(l) != 0 {
			t.Errorf("copies left after the replay: %v", l)
		}
		if !strings.Contains(buf.String(), "finished its interrupted re-encryption") {
			t.Errorf("replay log %q", buf.String())
		}
		// The File that failed past its commit point refuses service
		// until a new mount (a new File) finds the file finished.
		if _, err := e.openFlags(syscall.O_RDWR); !errors.Is(err, syscall.EIO) {
			t.Errorf("Open after a failure past the commit point = %v, want EIO", err)
		}
		e.f = New(e.cfg, func() string { return e.name })
		e.check(e.open(), m)
	}
}

func TestReplayReencryptStrays(t *testing.T) {
	e, h, _, dir := reencryptEnv(t, 4096)
	h.Close()
	want := e.backing()
	var st syscall.Stat_t
	if err := syscall.Stat(e.path, &st); err != nil {
		t.Fatal(err)
	}
	// withID is a well-formed copy whose header names file ID id.
	withID := func(id [16]byte) []byte {
		b := bytes.Clone(want)
		copy(b[16:32], id[:])
		return b
	}
	var o1, o2, g1, g2 [16]byte
	o1[0], o2[0], g1[0], g2[0] = 1, 2, 3, 4
	for _, tc := range []struct {
		name    string
		content []byte
		kept    bool
	}{
		{reencryptTmp, want, false},                                               // unfinished: removed
		{reencryptName(st.Ino, o1, o2), withID(o2), false},                        // the file has another ID: removed
		{reencryptName(st.Ino+1000, g1, g2), withID(g2), true},                    // no such inode: kept, it may be the only copy
		{reencryptName(st.Ino+2000, g1, g2), bytes.Repeat([]byte{1}, 5000), true}, // not a copy: left alone
		{ReencryptPrefix + "junk", nil, true},                                     // not a name kmsfs makes
	} {
		if err := os.WriteFile(filepath.Join(e.dir, tc.name), tc.content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := ReplayReencrypt(dir, log.New(&buf, "", 0)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.backing(), want) {
		t.Error("a stray copy changed the file")
	}
	left := strings.Join(leftovers(t, e.dir), " ")
	for _, n := range []string{reencryptName(st.Ino+1000, g1, g2), reencryptName(st.Ino+2000, g1, g2), ReencryptPrefix + "junk"} {
		if !strings.Contains(left, n) {
			t.Errorf("%s was removed", n)
		}
	}
	for _, n := range []string{reencryptTmp, reencryptName(st.Ino, o1, o2)} {
		if strings.Contains(left, n) {
			t.Errorf("%s was kept", n)
		}
	}
	if !strings.Contains(buf.String(), "the copy is kept") {
		t.Errorf("log %q does not say a copy was kept", buf.String())
	}
}

func TestReencryptName(t *testing.T) {
	var a, b [16]byte
	a[3], b[15] = 0xab, 0xcd
	n := reencryptName(0x1234, a, b)
	ino, x, y, ok := parseReencryptName(n)
	if !ok || ino != 0x1234 || x != a || y != b {
		t.Errorf("parse(%q) = %x %x %x %v", n, ino, x, y, ok)
	}
	for _, bad := range []string{reencryptTmp, ReencryptPrefix, ReencryptPrefix + "1.2.3", ReencryptPrefix + "zz." + strings.Repeat("0", 32) + "." + strings.Repeat("0", 32), "other"} {
		if _, _, _, ok := parseReencryptName(bad); ok {
			t.Errorf("parse(%q) ok", bad)
		}
	}
}
