package tests

// Holes on demand through the mount: fallocate PUNCH_HOLE and
// ZERO_RANGE, and lseek SEEK_DATA / SEEK_HOLE.

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// holesXExtents lists the data extents of f with SEEK_DATA/SEEK_HOLE.
func holesXExtents(t *testing.T, f *os.File, size int64) [][2]int64 {
	t.Helper()
	var ext [][2]int64
	for off := int64(0); off < size; {
		d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA(%d) = %v", off, err)
		}
		h, err := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE(%d) = %v", d, err)
		}
		if h <= d {
			t.Fatalf("SEEK_DATA(%d) = %d, SEEK_HOLE(%d) = %d: no progress", off, d, d, h)
		}
		ext = append(ext, [2]int64{d, h})
		off = h
	}
	return ext
}

func TestHolesThroughMount(t *testing.T) {
	v := newVolume(t)
	bs := int64(v.blockSize)

	t.Run("punch", func(t *testing.T) {
		data := pattern("punch", 4<<20)
		writeFile(t, v.path("punch"), data)
		f, err := os.OpenFile(v.path("punch"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Sync()
		var before, after syscall.Stat_t
		syscall.Stat(v.backing("punch"), &before)
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 1<<20+10, 2<<20); err != nil {
			t.Fatalf("fallocate(PUNCH_HOLE) = %v, want it to work", err)
		}
		clear(data[1<<20+10 : 3<<20+10])
		checkContent(t, v.path("punch"), data, v.blockSize)
		syscall.Stat(v.backing("punch"), &after)
		if freed := (before.Blocks - after.Blocks) * 512; freed < 1<<20 {
			t.Errorf("punching 2 MiB freed %d bytes of the backing file", freed)
		}
		ext := holesXExtents(t, f, int64(len(data)))
		if len(ext) != 2 || ext[0][0] != 0 || ext[0][1] < 1<<20 || ext[0][1] > 1<<20+3*bs || ext[1][0] > 3<<20+10 || ext[1][0] < 3<<20-3*bs || ext[1][1] != int64(len(data)) {
			t.Errorf("extents after the punch = %v, want data to about 1 MiB and from about 3 MiB", ext)
		}
	})

	t.Run("zero range", func(t *testing.T) {
		data := pattern("zero", 1<<20)
		writeFile(t, v.path("zero"), data)
		f, err := os.OpenFile(v.path("zero"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_ZERO_RANGE, 1000, 2<<20); err != nil {
			t.Fatalf("fallocate(ZERO_RANGE) = %v, want it to work", err)
		}
		want := append(data[:1000], make([]byte, 2<<20)...)
		checkContent(t, v.path("zero"), want, v.blockSize)
	})

	t.Run("sparse file", func(t *testing.T) {
		f, err := os.Create(v.path("sparse"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		const size = 1 << 30
		head, tail := pattern("head", 1<<20), pattern("tail", 1<<20)
		if _, err := f.WriteAt(head, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(tail, size-1<<20); err != nil {
			t.Fatal(err)
		}
		ext := holesXExtents(t, f, size)
		var total int64
		for _, e := range ext {
			total += e[1] - e[0]
		}
		if len(ext) != 2 || total > 2<<20+4*bs {
			t.Errorf("extents of a 1 GiB file with 2 MiB of data: %v (%d bytes of data), want two of about 1 MiB", ext, total)
		}
		buf := make([]byte, 1<<20)
		if _, err := f.ReadAt(buf, size-1<<20); err != nil || !bytes.Equal(buf, tail) {
			t.Errorf("tail reads back wrong: %v", err)
		}
		if _, err := unix.Seek(int(f.Fd()), size, unix.SEEK_DATA); err != unix.ENXIO {
			t.Errorf("SEEK_DATA at the end = %v, want ENXIO", err)
		}
	})
}
