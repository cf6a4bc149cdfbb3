package cryptfile

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
)

// TestConcurrentHandles runs writers and readers on separate handles of
// one File at once (run it with -race). Each writer owns a region of the
// file, regions share their edge blocks, and every byte a writer writes
// carries its number, so a reader can tell a byte out of place even
// while the writers run; in the end the file must hold exactly what each
// writer wrote last.
func TestConcurrentHandles(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bs      int
		journal bool
		iters   int // writes per writer
	}{
		{"B=4096", 4096, false, 25},
		{"B=65536 with journal", 65536, true, 20},
		{"B=1048576", 1 << 20, false, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const writers, readers = 4, 3
			// Not a multiple of any block size: neighbours share blocks.
			const region = 300<<10 + 123
			const size = writers * region
			dir := t.TempDir()
			var j *Journal
			if tc.journal {
				j = openTestJournal(t, dir, journalMaxData(layout(tc.bs)), nil)
			}
			e := newEnvIn(t, dir, "f", tc.bs, j)
			m := make(model, size)
			for i := range m {
				m[i] = byte(i / region * 32)
			}
			if _, err := e.open().WriteAt(ctx, m, 0); err != nil {
				t.Fatal(err)
			}
			wh := make([]*Handle, writers)
			rh := make([]*Handle, readers)
			for i := range wh {
				wh[i] = e.open()
			}
			for i := range rh {
				rh[i] = e.open()
			}
			errs := make(chan error, writers+readers+1)
			var wwg, rwg sync.WaitGroup
			for w := range writers {
				wwg.Go(func() {
					r := rand.New(rand.NewPCG(40, uint64(w)))
					own := m[w*region : (w+1)*region]
					for k := range tc.iters {
						off := r.Int64N(region)
						n := 1 + r.Int64N(min(region-off, []int64{100, 5000, 300 << 10}[r.IntN(3)]))
						data := bytes.Repeat([]byte{byte(w*32 + 1 + k%31)}, int(n))
						if _, err := wh[w].WriteAt(ctx, data, int64(w*region)+off); err != nil {
							errs <- fmt.Errorf("writer %d: WriteAt(%d bytes, %d) = %v", w, n, int64(w*region)+off, err)
							return
						}
						copy(own[off:], data)
					}
				})
			}
			stop := make(chan struct{})
			for i := range readers {
				rwg.Go(func() {
					r := rand.New(rand.NewPCG(41, uint64(i)))
					buf := make([]byte, 700<<10)
					for {
						select {
						case <-stop:
							return
						default:
						}
						off := r.Int64N(size)
						n := 1 + r.IntN(len(buf))
						got, err := rh[i].Read(buf[:n], off)
						if want := min(n, int(size-off)); got != want || err != nil {
							errs <- fmt.Errorf("reader %d: Read(%d bytes, %d) = %d, %v; want %d, nil", i, n, off, got, err, want)
							return
						}
						for k, b := range buf[:got] {
							if at := off + int64(k); int64(b/32) != at/region {
								errs <- fmt.Errorf("reader %d: byte %d = %#x, which no writer of region %d wrote", i, at, b, at/region)
								return
							}
						}
					}
				})
			}
			// Opens, closes, sizes and cache stamps alongside.
			rwg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					fd, err := syscall.Open(e.path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
					if err != nil {
						errs <- err
						return
					}
					h, err := e.f.Open(ctx, fd)
					if err != nil {
						errs <- fmt.Errorf("Open = %v, want nil", err)
						return
					}
					h.KeepCache()
					s, err := h.Size()
					h.Close()
					if s != size || err != nil {
						errs <- fmt.Errorf("Size() = %d, %v; want %d, nil", s, err, size)
						return
					}
				}
			})
			wwg.Wait()
			close(stop)
			rwg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for _, h := range wh {
				h.Close()
			}
			e.check(rh[0], m)
			if j != nil {
				checkJournalClear(t, dir, j.slotSize)
			}
		})
	}
}
