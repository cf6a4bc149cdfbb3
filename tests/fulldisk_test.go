package tests

// Full disk: the backing directory lives on a small file system (a tmpfs
// with size=, or a loop-mounted ext4 image) that is filled up through the
// mount. Writes must then fail with ENOSPC, nothing written before may be
// damaged (not the files already there, not the file being filled up, not
// a file whose append failed), and the mount must keep working once space
// is freed.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// fullXBacking puts the backing directory of the (unmounted) volume v on a
// small file system of the given kind ("tmpfs" or "ext4") and size in
// MiB: it moves the configuration aside, mounts the small file system
// over v.cipherDir and moves the configuration back. The small file
// system is unmounted when the test ends, after the kmsfs mount.
func fullXBacking(t *testing.T, v *volume, kind string, mib int) {
	t.Helper()
	conf, err := os.ReadFile(v.backing(confName))
	if err != nil {
		t.Fatalf("os.ReadFile(%s) = %v", confName, err)
	}
	switch kind {
	case "tmpfs":
		if r := runCommand(os.Environ(), "/", "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", mib), "kmsfs-full", v.cipherDir); r.code != 0 || r.err != nil {
			t.Fatalf("%v\nwant exit 0", r)
		}
	case "ext4":
		mkfs := requireTool(t, "mkfs.ext4")
		img := filepath.Join(v.dir, "backing.img")
		f, err := os.Create(img)
		if err == nil {
			err = f.Truncate(int64(mib) << 20)
			f.Close()
		}
		if err != nil {
			t.Fatalf("creating %s: %v", img, err)
		}
		if r := runCommand(os.Environ(), "/", mkfs, "-q", "-F", "-m", "0", img); r.code != 0 || r.err != nil {
			t.Fatalf("%v\nwant exit 0", r)
		}
		if r := runCommand(os.Environ(), "/", "mount", "-o", "loop", img, v.cipherDir); r.code != 0 || r.err != nil {
			t.Fatalf("%v\nwant exit 0", r)
		}
		os.Remove(filepath.Join(v.cipherDir, "lost+found"))
		os.Chmod(v.cipherDir, 0o700)
	default:
		t.Fatalf("fullXBacking: unknown kind %q", kind)
	}
	t.Cleanup(func() {
		// Runs before the volume's own cleanup: the kmsfs mount must go
		// first or the small file system stays busy.
		if isMounted(v.mnt) {
			if err := v.unmountErr(); err != nil {
				t.Errorf("unmount: %v", err)
				runCommand(os.Environ(), "/", "umount", "-l", v.mnt)
			}
		}
		if r := runCommand(os.Environ(), "/", "umount", v.cipherDir); r.code != 0 {
			t.Errorf("%v\nwant exit 0", r)
			runCommand(os.Environ(), "/", "umount", "-l", v.cipherDir)
		}
	})
	if err := os.WriteFile(v.backing(confName), conf, 0o600); err != nil {
		t.Fatalf("os.WriteFile(%s on the small file system) = %v", confName, err)
	}
}

// fullXAppend appends data to path in chunks of chunk bytes until an
// error, and returns how many bytes were written and the error.
func fullXAppend(path string, data []byte, chunk int) (int, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	done := 0
	for done < len(data) {
		n, err := f.Write(data[done:min(done+chunk, len(data))])
		done += n
		if err != nil {
			f.Close()
			return done, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return done, err
	}
	return done, f.Close()
}

// fullXCheck compares a file seen through the mount with want.
func fullXCheck(t *testing.T, when, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s: os.ReadFile(%s) = %v, want %d bytes", when, filepath.Base(path), err, len(want))
		return
	}
	if d := diffBytes(got, want, defaultBlockSize); d != "" {
		t.Errorf("%s: os.ReadFile(%s) = %s", when, filepath.Base(path), d)
	}
}

func TestFullDisk(t *testing.T) {
	for _, kind := range []string{"tmpfs", "ext4"} {
		t.Run(kind, func(t *testing.T) {
			testFullDisk(t, kind)
		})
	}
}

func testFullDisk(t *testing.T, kind string) {
	const mib = 12
	requireTool(t, "mount")
	v := newVolume(t, notMounted())
	fullXBacking(t, v, kind, mib)
	v.mount()

	// Files written before the disk fills up; "grow" ends in a partial
	// block, which an append rewrites.
	kept := map[string][]byte{
		"small":  pattern("small", 3000),
		"blocks": pattern("blocks", 5*defaultBlockSize),
		"big":    pattern("big", 1<<20+17),
		"grow":   pattern("grow", 5000),
	}
	for name, data := range kept {
		if n, err := fullXAppend(v.path(name), data, 64<<10); err != nil {
			t.Fatalf("writing %s: %d bytes, %v", name, n, err)
		}
	}
	checkKept := func(when string) {
		t.Helper()
		for name, data := range kept {
			fullXCheck(t, when, v.path(name), data)
		}
	}

	// Fill the disk: appends of an odd size until ENOSPC.
	// kmsfs reserves space before it writes, so a write that does not fit
	// fails whole and leaves what it did not use: keep filling with ever
	// smaller writes until not even one byte fits.
	fill := pattern("filler", 2*mib<<20)
	acked, err := fullXAppend(v.path("filler"), fill, 64<<10+123)
	for chunk := 32 << 10; chunk >= 1 && errnoOf(err) == syscall.ENOSPC; chunk /= 2 {
		var n int
		var e error
		for e == nil && acked < len(fill) {
			n, e = fullXAppend(v.path("filler"), fill[acked:], chunk)
			acked += n
			if n == 0 {
				break
			}
		}
		if e != nil && errnoOf(e) != syscall.ENOSPC {
			err = e
		}
	}
	if err == nil {
		t.Fatalf("filling the disk: wrote all %d bytes to a %d MiB file system, want ENOSPC", acked, mib)
	}
	if errnoOf(err) != syscall.ENOSPC {
		t.Errorf("filling the disk: %d bytes, then %v, want ENOSPC", acked, err)
	}
	t.Logf("%s of %d MiB full after %d bytes of filler", kind, mib, acked)
	// The file being filled must read without error and hold what was
	// acknowledged; bytes past that may exist only if they are the data
	// of the failed write.
	checkFiller := func(when string) {
		t.Helper()
		got, err := os.ReadFile(v.path("filler"))
		if err != nil {
			t.Errorf("%s: os.ReadFile(filler) = %v, want the %d bytes written before ENOSPC", when, err, acked)
			return
		}
		if len(got) < acked || len(got) > len(fill) {
			t.Errorf("%s: os.ReadFile(filler) = %d bytes, want at least the %d written before ENOSPC", when, len(got), acked)
			return
		}
		if d := diffBytes(got, fill[:len(got)], defaultBlockSize); d != "" {
			t.Errorf("%s: os.ReadFile(filler) = %s", when, d)
		}
	}

	// While full: an append that rewrites a partial block fails with
	// ENOSPC and leaves the file as it was; a new file's first write fails
	// and leaves it empty (or absent); overwriting existing bytes of a
	// whole block needs no space and works.
	if n, err := fullXAppend(v.path("grow"), pattern("more", 300<<10), 300<<10); errnoOf(err) != syscall.ENOSPC {
		t.Errorf("appending 300 KiB to grow on a full disk = %d bytes, %v, want ENOSPC", n, err)
	} else if n > 0 {
		kept["grow"] = append(kept["grow"], pattern("more", 300<<10)[:n]...)
	}
	if n, err := fullXAppend(v.path("new"), pattern("new", 10000), 10000); errnoOf(err) != syscall.ENOSPC {
		t.Errorf("writing a new file on a full disk = %d bytes, %v, want ENOSPC", n, err)
	}
	checkNew := func(when string) {
		t.Helper()
		got, err := os.ReadFile(v.path("new"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: os.ReadFile(new) = %v, want an empty file (or none)", when, err)
		} else if len(got) != 0 {
			t.Errorf("%s: os.ReadFile(new) = %d bytes, want an empty file (or none)", when, len(got))
		}
	}
	over := pattern("overwrite", defaultBlockSize)
	if f, err := os.OpenFile(v.path("blocks"), os.O_WRONLY, 0); err != nil {
		t.Errorf("os.OpenFile(blocks) on a full disk = %v", err)
	} else {
		if _, err := f.WriteAt(over, 2*defaultBlockSize); err != nil {
			t.Errorf("overwriting block 2 of blocks on a full disk = %v, want nil", err)
		} else {
			copy(kept["blocks"][2*defaultBlockSize:], over)
		}
		f.Close()
	}
	checkKept("on the full disk")
	checkFiller("on the full disk")
	checkNew("on the full disk")

	// Again from the backing files alone.
	v.remount()
	checkKept("full disk, after a remount")
	checkFiller("full disk, after a remount")
	checkNew("full disk, after a remount")

	// Free the space: everything works again.
	if err := os.Remove(v.path("filler")); err != nil {
		t.Fatalf("os.Remove(filler) = %v", err)
	}
	more := pattern("after", 100<<10)
	if n, err := fullXAppend(v.path("grow"), more, 7000); err != nil {
		t.Errorf("appending to grow after freeing space = %d bytes, %v, want nil", n, err)
	}
	kept["grow"] = append(kept["grow"], more...)
	kept["new"] = pattern("new after", 1<<20)
	if n, err := fullXAppend(v.path("new"), kept["new"], 64<<10); err != nil {
		t.Errorf("writing new after freeing space = %d bytes, %v, want nil", n, err)
	}
	checkKept("after freeing space")
	v.remount()
	checkKept("after freeing space and a remount")
	for name, data := range kept {
		checkBacking(t, v, name, int64(len(data)))
	}
}
