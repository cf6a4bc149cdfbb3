package blockcipher

import (
	"errors"
	"testing"
)

const hdr = 4096

var (
	l4k = Layout{BlockSize: 4096, DataOffset: hdr}
	l1m = Layout{BlockSize: 1 << 20, DataOffset: hdr}
)

func TestCipherSize(t *testing.T) {
	tests := []struct {
		name  string
		l     Layout
		plain int64
		want  int64
	}{
		{"4k/empty", l4k, 0, 4096},
		{"4k/1 byte", l4k, 1, 4125},
		{"4k/B-1", l4k, 4095, 4096 + 4095 + 28},
		{"4k/B", l4k, 4096, 8220},
		{"4k/B+1", l4k, 4097, 8249},
		{"4k/2B", l4k, 8192, 4096 + 2*4124},
		{"4k/1MiB", l4k, 1 << 20, 1059840},
		{"4k/many blocks plus 5", l4k, 1000*4096 + 5, 4096 + 1000*4124 + 33},
		{"1m/empty", l1m, 0, 4096},
		{"1m/1 byte", l1m, 1, 4096 + 29},
		{"1m/B-1", l1m, 1<<20 - 1, 4096 + 1<<20 - 1 + 28},
		{"1m/B", l1m, 1 << 20, 4096 + 1<<20 + 28},
		{"1m/B+1", l1m, 1<<20 + 1, 4096 + 1<<20 + 28 + 29},
		{"1m/100 blocks", l1m, 100 << 20, 4096 + 100*(1<<20+28)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.l.CipherSize(tt.plain); got != tt.want {
				t.Errorf("CipherSize(%d) = %d, want %d", tt.plain, got, tt.want)
			}
			got, err := tt.l.PlainSize(tt.want)
			if got != tt.plain || err != nil {
				t.Errorf("PlainSize(%d) = %d, %v, want %d, nil", tt.want, got, err, tt.plain)
			}
		})
	}
}

func TestPlainSize(t *testing.T) {
	tests := []struct {
		name    string
		l       Layout
		cipher  int64
		want    int64
		wantErr bool
	}{
		{"empty backing file", l4k, 0, 0, false},
		{"torn header 1", l4k, 1, 0, true},
		{"torn header 100", l4k, 100, 0, true},
		{"torn header 4095", l4k, 4095, 0, true},
		{"negative", l4k, -1, 0, true},
		{"header only", l4k, 4096, 0, false},
		{"tail 1", l4k, 4097, 0, true},
		{"tail 28", l4k, 4096 + 28, 0, true},
		{"tail 29", l4k, 4096 + 29, 1, false},
		{"full block", l4k, 4096 + 4124, 4096, false},
		{"full block tail 1", l4k, 4096 + 4124 + 1, 4096, true},
		{"full block tail 28", l4k, 4096 + 4124 + 28, 4096, true},
		{"full block tail 29", l4k, 4096 + 4124 + 29, 4097, false},
		{"3 blocks tail 28", l4k, 4096 + 3*4124 + 28, 3 * 4096, true},
		{"1m tail 28", l1m, 4096 + (1<<20 + 28) + 28, 1 << 20, true},
		{"1m tail 29", l1m, 4096 + (1<<20 + 28) + 29, 1<<20 + 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.l.PlainSize(tt.cipher)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("PlainSize(%d) = %d, %v, want %d, error %v", tt.cipher, got, err, tt.want, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadCipherSize) {
				t.Errorf("PlainSize(%d) error = %v, want ErrBadCipherSize", tt.cipher, err)
			}
		})
	}
}

// TestSizeProperties checks that PlainSize inverts CipherSize and that
// CipherSize never decreases, for every size around many block edges.
func TestSizeProperties(t *testing.T) {
	for _, l := range []Layout{l4k, l1m, {BlockSize: 4096, DataOffset: 0}} {
		b := int64(l.BlockSize)
		var sizes []int64
		for n := int64(0); n < 6; n++ {
			for d := int64(-30); d <= 30; d++ {
				if s := n*b + d; s >= 0 {
					sizes = append(sizes, s)
				}
			}
		}
		for s := int64(0); s < 3*b; s += 97 {
			sizes = append(sizes, s)
		}
		for _, p := range sizes {
			c := l.CipherSize(p)
			if got, err := l.PlainSize(c); got != p || err != nil {
				t.Errorf("B=%d: PlainSize(CipherSize(%d) = %d) = %d, %v, want %d, nil", b, p, c, got, err, p)
			}
			if p > 0 && l.CipherSize(p-1) >= c {
				t.Errorf("B=%d: CipherSize(%d) = %d >= CipherSize(%d) = %d, want increasing", b, p-1, l.CipherSize(p-1), p, c)
			}
			if p > 0 {
				if got, want := l.SealedSize(int(p)), int(c-l.DataOffset); got != want {
					t.Errorf("B=%d: SealedSize(%d) = %d, want %d", b, p, got, want)
				}
				if got, err := l.OpenedSize(int(c - l.DataOffset)); got != int(p) || err != nil {
					t.Errorf("B=%d: OpenedSize(%d) = %d, %v, want %d, nil", b, c-l.DataOffset, got, err, p)
				}
			}
		}
	}
}

func TestBlockMath(t *testing.T) {
	tests := []struct {
		name        string
		l           Layout
		off, n      int64
		first, last uint64
	}{
		{"first byte", l4k, 0, 1, 0, 0},
		{"whole block 0", l4k, 0, 4096, 0, 0},
		{"B-1..B", l4k, 4095, 2, 0, 1},
		{"block 1 start", l4k, 4096, 1, 1, 1},
		{"B+1 one block", l4k, 4097, 4095, 1, 1},
		{"B+1 spill", l4k, 4097, 4096, 1, 2},
		{"1 MiB request", l4k, 0, 1 << 20, 0, 255},
		{"1m layout", l1m, 1<<20 - 1, 2, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, last := tt.l.BlockRange(tt.off, tt.n)
			if first != tt.first || last != tt.last {
				t.Errorf("BlockRange(%d, %d) = %d, %d, want %d, %d", tt.off, tt.n, first, last, tt.first, tt.last)
			}
			if got := tt.l.BlockCipherOff(first); got != tt.l.DataOffset+int64(first)*int64(tt.l.CipherBlockSize()) {
				t.Errorf("BlockCipherOff(%d) = %d", first, got)
			}
		})
	}
	if got, want := l4k.BlockCipherOff(2), int64(4096+2*4124); got != want {
		t.Errorf("BlockCipherOff(2) = %d, want %d", got, want)
	}
	if got, want := l4k.BlockPlainOff(3), int64(3*4096); got != want {
		t.Errorf("BlockPlainOff(3) = %d, want %d", got, want)
	}
	if got, want := l1m.CipherBlockSize(), 1<<20+28; got != want {
		t.Errorf("CipherBlockSize() = %d, want %d", got, want)
	}
}
