package v2reader

import "testing"

// TestLayout3WorkedSizes checks the sizes formula against the worked
// sizes of docs/FORMAT.md "Layout and sizes (version 3)" (B = 4096,
// C = 1024) and the invalid sizes it lists.
func TestLayout3WorkedSizes(t *testing.T) {
	l, err := NewLayout3(4096, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if l.H != 2080 || l.G0 != 69 || l.InlineMax() != 1987 {
		t.Fatalf("H = %d, G0 = %d, inline max %d; want 2080, 69, 1987", l.H, l.G0, l.InlineMax())
	}
	for _, c := range []struct {
		c, size int64
		ok      bool
	}{
		{0, 0, true},
		{2080, 0, true},
		{2408, 300, true},
		{4095, 1987, true},
		{6084, 1988, true},
		{1060864, 1 << 20, true},
		{100, 0, false},
		{2080 + 28, 28, false},
		{4096, 4096 - 2080 - 28, false},
		{4096 + 69*4096 + 1, 69*4096 + 1, false},
		{4096 + 69*4096 + 4096, 70 * 4096, false},
		{4096 + 69*4096 + 4096 + 1, 69*4096 + 1, true},
	} {
		size, ok := l.PlainSize(c.c)
		if size != c.size || ok != c.ok {
			t.Errorf("PlainSize(%d) = %d, %v; want %d, %v", c.c, size, ok, c.size, c.ok)
		}
	}
	// 1 MiB: the metadata pages of groups 1 and 2 and the last block.
	if m1, m2 := l.MetaOff(1), l.MetaOff(2); m1 != 4096+69*4096 || m2 != m1+4096+128*4096 {
		t.Errorf("M(1) = %d, M(2) = %d", m1, m2)
	}
	if d := l.DataOff(255) + 4096; d != 1060864 {
		t.Errorf("end of block 255 = %d, want 1060864", d)
	}
}
