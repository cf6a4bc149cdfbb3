package cryptfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
)

// TestPipeline checks that the stepwise seal and open give exactly what
// the one-step SealBlocks and OpenBlocks give, around step boundaries and
// for every block size class, and that a damaged block fails the read
// with that block's number. The direct read (openDirect) is checked the
// same way.
func TestPipeline(t *testing.T) {
	for _, tc := range []struct {
		bs, size int
	}{
		{4096, pipeMin - 1},
		{4096, pipeMin},
		{4096, pipeMin + 1},
		{4096, 1 << 20},
		{4096, 1<<20 + 4095},
		{65536, 1<<20 - 7},
		{1 << 20, 1 << 20},
		{1 << 20, 300 << 10},
	} {
		t.Run(fmt.Sprintf("B=%d/size=%d", tc.bs, tc.size), func(t *testing.T) {
			l := blockcipher.Layout{BlockSize: tc.bs, DataOffset: 4096}
			c, err := blockcipher.New(bytes.Repeat([]byte{7}, 32), [16]byte{1, 2, 3}, l)
			if err != nil {
				t.Fatal(err)
			}
			plain := make([]byte, tc.size)
			for i := range plain {
				plain[i] = byte(i*7 + i/4096)
			}
			const first = 5
			s := sealPipelined(c, l, nil, plain, first)
			f, err := os.Create(filepath.Join(t.TempDir(), "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fd := int(f.Fd())
			coff := l.BlockCipherOff(first)
			if err := s.pwrite(fd, coff); err != nil {
				t.Fatalf("pwrite = %v", err)
			}
			s.wait()
			if got, want := len(s.data), l.SealedSize(len(plain)); got != want {
				t.Fatalf("sealed %d bytes, want %d", got, want)
			}
			// The stepwise ciphertext opens with the one-step OpenBlocks.
			back, err := c.OpenBlocks(nil, s.data, first)
			if err != nil || !bytes.Equal(back, plain) {
				t.Fatalf("OpenBlocks(sealPipelined) = %d bytes, %v; want the plaintext", len(back), err)
			}
			out := make([]byte, 0, len(plain)+tc.bs)
			m, err := openSteps(c, l, fd, coff, len(s.data), out, first)
			if err != nil || m != len(plain) || !bytes.Equal(out[:m], plain) {
				t.Fatalf("openSteps = %d, %v; want %d bytes of plaintext", m, err, len(plain))
			}
			// Through O_DIRECT, from the first block and from the second
			// (unaligned in the file), right after buffered writes.
			var d directFd
			defer d.close()
			dfd := d.get(fd)
			if dfd < 0 {
				t.Logf("%s refuses O_DIRECT: only the buffered read is checked", t.TempDir())
			}
			for _, skip := range []int{0, 1} {
				if dfd < 0 || skip*tc.bs >= len(plain) {
					break
				}
				soff := l.BlockCipherOff(first + uint64(skip))
				out := make([]byte, 0, len(plain))
				m, err := openDirect(c, l, dfd, soff, len(s.data)-skip*l.CipherBlockSize(), out, first+uint64(skip))
				if err != nil || m != len(plain)-skip*tc.bs || !bytes.Equal(out[:m], plain[skip*tc.bs:]) {
					t.Fatalf("openDirect from block %d = %d, %v; want %d bytes of plaintext", first+skip, m, err, len(plain)-skip*tc.bs)
				}
			}
			// Damage the last block: the error names it.
			lastBlock := uint64(first + (len(plain)-1)/tc.bs)
			at := l.BlockCipherOff(lastBlock) + 20
			b := []byte{0}
			if _, err := f.ReadAt(b, at); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{b[0] ^ 1}, at); err != nil {
				t.Fatal(err)
			}
			_, err = openSteps(c, l, fd, coff, len(s.data), out, first)
			var be *blockcipher.BlockError
			if !errors.As(err, &be) || be.Block != lastBlock || !errors.Is(err, blockcipher.ErrAuth) {
				t.Fatalf("openSteps of a damaged block %d = %v, want a BlockError for it", lastBlock, err)
			}
			if dfd >= 0 {
				_, err = openDirect(c, l, dfd, coff, len(s.data), out, first)
				if !errors.As(err, &be) || be.Block != lastBlock || !errors.Is(err, blockcipher.ErrAuth) {
					t.Fatalf("openDirect of a damaged block %d = %v, want a BlockError for it", lastBlock, err)
				}
			}
		})
	}
}
