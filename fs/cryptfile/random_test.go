package cryptfile

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestRandomOps runs random writes, truncations, reads, preallocations
// and reopens on the engine and on the model, and compares them, for
// every block size and several seeds, with the journal on for odd seeds.
func TestRandomOps(t *testing.T) {
	ops := map[int]int{4096: 150, 16384: 100, 65536: 100, 1 << 20: 20}
	for _, bs := range blockSizes {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("B=%d/seed=%d", bs, seed), func(t *testing.T) {
				dir := t.TempDir()
				var j *Journal
				if seed%2 == 1 {
					j = openTestJournal(t, dir, journalMaxData(layout(bs)), nil)
				}
				e := newEnvIn(t, dir, "f", bs, j)
				r := rand.New(rand.NewPCG(seed, uint64(bs)))
				g := opGen{r: r, B: int64(bs), max: max(5*int64(bs), 3<<19)}
				hs := []*Handle{e.open(), e.open()}
				var m model
				for i := range ops[bs] {
					h := hs[r.IntN(len(hs))]
					switch k := r.IntN(100); {
					case k < 45:
						e.apply(h, &m, wr(g.off(int64(len(m))), g.length()), r)
					case k < 60:
						e.apply(h, &m, tr(g.off(int64(len(m)))), r)
					case k < 85:
						e.apply(h, &m, rd(g.off(int64(len(m))), g.length()), r)
					case k < 90:
						off, n := g.off(int64(len(m))), 1+r.Int64N(2*g.B)
						if err := h.Allocate(ctx, off, n, 0); err != nil {
							t.Fatalf("Allocate(%d, %d, 0) = %v, want nil", off, n, err)
						}
						if off+n > int64(len(m)) {
							m.truncate(off + n)
						}
					case k < 95:
						// Reopen one handle, or both: the key is dropped and
						// loaded again.
						for i := range hs {
							if i == 0 || k < 93 {
								hs[i].Close()
								hs[i] = e.open()
							}
						}
					default:
						e.check(h, m)
					}
					if i%40 == 0 {
						e.check(h, m)
					}
				}
				e.check(hs[0], m)
				e.checkBoundaries(hs[1], m)
				if j != nil {
					checkJournalClear(t, dir, j.slotSize)
				}
			})
		}
	}
}

// opGen draws offsets and lengths that favour the edges of blocks.
type opGen struct {
	r   *rand.Rand
	B   int64
	max int64 // offsets stay below about this
}

// off returns an offset around a file of size bytes: inside it, at its
// end, or past it, often on or next to a block boundary.
func (g opGen) off(size int64) int64 {
	lim := min(size+2*g.B, g.max)
	o := g.r.Int64N(lim + 1)
	switch g.r.IntN(6) {
	case 0:
		o = o / g.B * g.B
	case 1:
		o = max(0, o/g.B*g.B-1)
	case 2:
		o = size
	case 3:
		o = max(0, size-1-g.r.Int64N(10))
	}
	return o
}

// length returns a request length: a few bytes, up to a block, about a
// whole number of blocks, or large enough for the pipelined and direct
// paths.
func (g opGen) length() int64 {
	switch g.r.IntN(5) {
	case 0:
		return 1 + g.r.Int64N(16)
	case 1:
		return 1 + g.r.Int64N(g.B)
	case 2:
		return max(1, (1+g.r.Int64N(3))*g.B+g.r.Int64N(7)-3)
	case 3:
		return pipeMin + g.r.Int64N(MaxRequest-pipeMin+1)
	}
	return g.r.Int64N(3 * g.B)
}
