package tests

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Writers of disjoint regions run concurrently on one file. The regions
// are not block aligned, so neighbours share blocks and kmsfs must
// serialise its read-modify-write of a block. Readers run alongside; they
// only check that nothing fails, since what they see of a region being
// rewritten may legitimately be old or new data. The final content is
// checked exactly, before and after a remount.

// concurrentReaders reads path whole until stop is closed and reports the
// first error or wrong size.
func concurrentReaders(t *testing.T, n int, path string, size int, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reads := 0
			for {
				select {
				case <-stop:
					if reads == 0 {
						t.Logf("reader %d: the writers finished before the first read", i)
					}
					return
				default:
				}
				b, err := os.ReadFile(path)
				if err != nil {
					t.Errorf("reader %d: os.ReadFile(%s) during writes = %v, want nil", i, path, err)
					return
				}
				if len(b) != size {
					t.Errorf("reader %d: os.ReadFile(%s) during writes = %d bytes, want %d", i, path, len(b), size)
					return
				}
				reads++
			}
		}()
	}
	return &wg
}

// checkRegions compares each region of the file with its final data.
func checkRegions(t *testing.T, path string, final [][]byte, region, bs int) {
	t.Helper()
	got := readFile(t, path)
	if len(got) != len(final)*region {
		t.Fatalf("os.ReadFile(%s) = %d bytes, want %d", path, len(got), len(final)*region)
	}
	for w, want := range final {
		if d := diffBytes(got[w*region:(w+1)*region], want, bs); d != "" {
			t.Errorf("region %d (bytes %d..%d) = %s", w, w*region, (w+1)*region, d)
		}
	}
}

func TestConcurrentGoroutines(t *testing.T) {
	v := newVolume(t)
	bs := v.blockSize
	const (
		workers     = 4
		generations = 4
	)
	region := 3*bs + 1000
	size := workers * region
	p := v.path("shared")
	writeFile(t, p, pattern("initial", size))
	data := func(w, g int) []byte { return pattern(fmt.Sprintf("w%d-g%d", w, g), region) }

	stop := make(chan struct{})
	readers := concurrentReaders(t, 2, p, size, stop)
	var writers sync.WaitGroup
	for w := range workers {
		writers.Add(1)
		go func() {
			defer writers.Done()
			flags := os.O_RDWR
			if w%2 == 0 {
				flags = os.O_WRONLY
			}
			f, err := os.OpenFile(p, flags, 0)
			if err != nil {
				t.Errorf("writer %d: os.OpenFile = %v, want nil", w, err)
				return
			}
			defer f.Close()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for g := 1; g <= generations; g++ {
				d := data(w, g)
				// Cut the region into chunks of random length and
				// write them in random order.
				type chunk struct{ off, n int }
				var chunks []chunk
				for off := 0; off < region; {
					n := min(region-off, 1+rng.IntN(2*bs))
					chunks = append(chunks, chunk{off, n})
					off += n
				}
				rng.Shuffle(len(chunks), func(i, j int) { chunks[i], chunks[j] = chunks[j], chunks[i] })
				for _, c := range chunks {
					at := int64(w*region + c.off)
					if _, err := f.WriteAt(d[c.off:c.off+c.n], at); err != nil {
						t.Errorf("writer %d: WriteAt(%d bytes at %d) = %v, want nil", w, c.n, at, err)
						return
					}
				}
			}
		}()
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	if t.Failed() {
		t.FailNow()
	}
	final := make([][]byte, workers)
	for w := range final {
		final[w] = data(w, generations)
	}
	checkRegions(t, p, final, region, bs)
	v.remount()
	checkRegions(t, p, final, region, bs)
	checkBacking(t, v, "shared", int64(size))
}

func TestConcurrentProcesses(t *testing.T) {
	sh := requireTool(t, "sh")
	requireTool(t, "dd")
	v := newVolume(t)
	bs := v.blockSize

	t.Run("disjoint regions", func(t *testing.T) {
		const (
			workers     = 4
			generations = 3
		)
		region := 5*bs + 123
		size := workers * region
		p := v.path("regions")
		writeFile(t, p, pattern("initial", size))
		src := t.TempDir()
		data := func(w, g int) []byte { return pattern(fmt.Sprintf("proc%d-g%d", w, g), region) }
		var cmds []*exec.Cmd
		var outs []*bytes.Buffer
		for w := range workers {
			var script []string
			for g := 1; g <= generations; g++ {
				s := filepath.Join(src, fmt.Sprintf("%d-%d", w, g))
				if err := os.WriteFile(s, data(w, g), 0o644); err != nil {
					t.Fatal(err)
				}
				// Odd block sizes for dd so its writes straddle
				// kmsfs blocks.
				script = append(script, fmt.Sprintf(
					"dd if=%s of=%s bs=%d seek=%d oflag=seek_bytes conv=notrunc status=none || exit 1",
					s, p, 1000+w*777, w*region))
			}
			cmd := exec.Command(sh, "-c", strings.Join(script, "\n"))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmds = append(cmds, cmd)
			outs = append(outs, &out)
		}
		stop := make(chan struct{})
		readers := concurrentReaders(t, 2, p, size, stop)
		waitAll(t, cmds, outs)
		close(stop)
		readers.Wait()
		final := make([][]byte, workers)
		for w := range final {
			final[w] = data(w, generations)
		}
		checkRegions(t, p, final, region, bs)
		v.remount()
		checkRegions(t, p, final, region, bs)
		checkBacking(t, v, "regions", int64(size))
	})

	t.Run("O_APPEND", func(t *testing.T) {
		// Processes append whole chunks concurrently: every chunk
		// must end up in the file exactly once and unbroken.
		const (
			workers = 4
			chunks  = 20
			chunkN  = 3000
		)
		p := v.path("appended")
		writeFile(t, p, nil)
		src := t.TempDir()
		ids := map[string]string{} // chunk content -> its name
		var cmds []*exec.Cmd
		var outs []*bytes.Buffer
		for w := range workers {
			var all []byte
			for c := range chunks {
				name := fmt.Sprintf("p%d-c%02d", w, c)
				d := pattern(name, chunkN)
				ids[string(d)] = name
				all = append(all, d...)
			}
			s := filepath.Join(src, fmt.Sprint(w))
			if err := os.WriteFile(s, all, 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sh, "-c", fmt.Sprintf("dd if=%s of=%s bs=%d oflag=append conv=notrunc status=none", s, p, chunkN))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmds = append(cmds, cmd)
			outs = append(outs, &out)
		}
		waitAll(t, cmds, outs)
		check := func() {
			t.Helper()
			got := readFile(t, p)
			if len(got) != workers*chunks*chunkN {
				t.Fatalf("os.ReadFile(%s) = %d bytes, want %d", p, len(got), workers*chunks*chunkN)
			}
			seen := map[string]bool{}
			last := map[int]int{}
			for i := 0; i < len(got); i += chunkN {
				name, ok := ids[string(got[i:i+chunkN])]
				if !ok {
					t.Fatalf("bytes %d..%d of %s are no chunk that was appended: %q...", i, i+chunkN, p, got[i:i+60])
				}
				if seen[name] {
					t.Fatalf("chunk %s appears twice", name)
				}
				seen[name] = true
				var w, c int
				fmt.Sscanf(name, "p%d-c%d", &w, &c)
				if prev, ok := last[w]; ok && prev > c {
					t.Errorf("chunk %s follows chunk c%02d of the same process", name, prev)
				}
				last[w] = c
			}
		}
		check()
		v.remount()
		check()
		checkBacking(t, v, "appended", workers*chunks*chunkN)
	})
}

// waitAll starts the commands together and waits for all of them.
func waitAll(t *testing.T, cmds []*exec.Cmd, outs []*bytes.Buffer) {
	t.Helper()
	for i, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting process %d: %v", i, err)
		}
	}
	done := make(chan struct{})
	timer := time.AfterFunc(commandTimeout, func() {
		for _, cmd := range cmds {
			cmd.Process.Kill()
		}
		close(done)
	})
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("process %d: %v = %v, want nil\n%s", i, cmd.Args, err, outs[i])
		}
	}
	if !timer.Stop() {
		<-done
		t.Fatalf("processes killed after %v", commandTimeout)
	}
}
