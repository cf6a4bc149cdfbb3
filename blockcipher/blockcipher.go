// Package blockcipher encrypts and decrypts the blocks of kmsfs regular
// files and owns all plaintext/ciphertext offset and size math.
//
// Block n of a file is stored as
//
//	nonce (12 random bytes) || AES-256-GCM(CK, nonce, plaintext, fileID || u64(n))
//
// so a stored block is Overhead = 28 bytes longer than its plaintext. A
// stored full block of zero bytes is a hole and reads as BlockSize zero
// bytes. See docs/FORMAT.md "Blocks" and "Sizes".
//
// The package knows nothing about the header: the caller passes the content
// key, the file ID and the offset of block 0.
package blockcipher

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/kmsfs/kmsfs/keyring/secmem"
)

// Sizes of the parts of a stored block.
const (
	// NonceSize is the size of the random nonce that starts a stored block.
	NonceSize = 12
	// TagSize is the size of the GCM tag that ends a stored block.
	TagSize = 16
	// Overhead is how much longer a stored block is than its plaintext.
	Overhead = NonceSize + TagSize
	// KeySize is the size of the content key.
	KeySize = 32
	// FileIDSize is the size of the file ID in the additional data.
	FileIDSize = 16
)

// parallelMin is the amount of data from which SealBlocks and OpenBlocks
// split the work across goroutines.
const parallelMin = 512 << 10

// ErrAuth reports a block that does not authenticate under this file's
// content key, file ID and block number.
var ErrAuth = errors.New("blockcipher: block authentication failed (file may be corrupted or tampered with)")

// ErrBadCipherSize reports a ciphertext size no plaintext encrypts to: a
// backing file shorter than the header, or a block of 1..Overhead bytes.
var ErrBadCipherSize = errors.New("blockcipher: invalid ciphertext size (file may be truncated or corrupted)")

// BlockError reports a block that could not be decrypted.
type BlockError struct {
	// Block is the block number.
	Block uint64
	// Err wraps ErrAuth or ErrBadCipherSize.
	Err error
}

// Error returns a message naming the block.
func (e *BlockError) Error() string { return fmt.Sprintf("block %d: %v", e.Block, e.Err) }

// Unwrap returns the underlying error.
func (e *BlockError) Unwrap() error { return e.Err }

// Cipher encrypts and decrypts the blocks of one file. It is safe for
// concurrent use.
type Cipher struct {
	aead   cipher.AEAD
	fileID [FileIDSize]byte
	l      Layout
	// explicit is set when aead takes the nonce from the caller (a
	// version-3 file's Cipher, see New3); otherwise aead draws it and
	// stores it before the ciphertext.
	explicit bool
}

// New returns a Cipher for the file with the given 32-byte content key and
// file ID. The Cipher keeps its own expanded copy of the key, on the heap,
// until Wipe; the caller may wipe contentKey afterwards.
func New(contentKey []byte, fileID [FileIDSize]byte, l Layout) (*Cipher, error) {
	if len(contentKey) != KeySize {
		return nil, fmt.Errorf("blockcipher: content key is %d bytes, want %d", len(contentKey), KeySize)
	}
	if err := l.check(); err != nil {
		return nil, fmt.Errorf("blockcipher: layout: %w", err)
	}
	aead, err := secmem.NewAESGCM(contentKey, true)
	if err != nil {
		return nil, fmt.Errorf("blockcipher: %w", err)
	}
	if aead.Overhead() != Overhead {
		secmem.Wipe(aead)
		return nil, fmt.Errorf("blockcipher: gcm overhead is %d bytes, want %d", aead.Overhead(), Overhead)
	}
	return &Cipher{aead: aead, fileID: fileID, l: l}, nil
}

// New3 returns a Cipher for a version-3 file (docs/FORMAT.md "Regular
// files, version 3"): besides the methods of version 3 it has SealBlock and
// OpenBlock, with the stored form nonce || ciphertext || tag, as every
// Cipher has (the write journal seals its records with them).
func New3(contentKey []byte, fileID [FileIDSize]byte, blockSize int) (*Cipher, error) {
	if len(contentKey) != KeySize {
		return nil, fmt.Errorf("blockcipher: content key is %d bytes, want %d", len(contentKey), KeySize)
	}
	l := Layout{BlockSize: blockSize, DataOffset: PageSize}
	if err := l.check(); err != nil {
		return nil, fmt.Errorf("blockcipher: layout: %w", err)
	}
	aead, err := secmem.NewAESGCM(contentKey, false)
	if err != nil {
		return nil, fmt.Errorf("blockcipher: %w", err)
	}
	if aead.Overhead() != TagSize || aead.NonceSize() != NonceSize {
		secmem.Wipe(aead)
		return nil, fmt.Errorf("blockcipher: gcm tag is %d bytes, want %d", aead.Overhead(), TagSize)
	}
	return &Cipher{aead: aead, fileID: fileID, l: l, explicit: true}, nil
}

// seal appends nonce || GCM ciphertext || tag of plain to dst, drawing the
// nonce.
func (c *Cipher) seal(dst, plain, ad []byte) []byte {
	if !c.explicit {
		return c.aead.Seal(dst, nil, plain, ad)
	}
	start := len(dst)
	dst = grow(dst, NonceSize)
	if _, err := rand.Read(dst[start:]); err != nil {
		panic(fmt.Sprintf("blockcipher: random nonce: %v", err))
	}
	return c.aead.Seal(dst, dst[start:start+NonceSize], plain, ad)
}

// open is the inverse of seal.
func (c *Cipher) open(dst, stored, ad []byte) ([]byte, error) {
	if !c.explicit {
		return c.aead.Open(dst, nil, stored, ad)
	}
	if len(stored) < NonceSize+TagSize {
		return dst, ErrAuth
	}
	return c.aead.Open(dst, stored[:NonceSize], stored[NonceSize:], ad)
}

// Wipe overwrites the Cipher's copy of the content key (the AES key
// schedule and GHASH table) with zeros. The Cipher must not be used
// afterwards, nor concurrently: a use panics.
func (c *Cipher) Wipe() {
	a := c.aead
	c.aead = nil
	secmem.Wipe(a)
}

// Layout returns the layout the Cipher was made with.
func (c *Cipher) Layout() Layout { return c.l }

// adBuf holds the additional data of one block: file ID || u64(block number).
type adBuf [FileIDSize + 8]byte

// adPool recycles additional data buffers: they escape to the heap through
// the cipher.AEAD interface, and pooling them keeps the hot path free of
// allocations.
var adPool = sync.Pool{New: func() any { return new(adBuf) }}

func getAD() *adBuf   { return adPool.Get().(*adBuf) }
func putAD(ad *adBuf) { adPool.Put(ad) }

func (c *Cipher) ad(ad *adBuf, n uint64) []byte {
	copy(ad[:], c.fileID[:])
	binary.BigEndian.PutUint64(ad[FileIDSize:], n)
	return ad[:]
}

// SealBlock encrypts plain as block blockNo and appends nonce || ciphertext
// || tag to dst, drawing a fresh random nonce. plain must be 1..BlockSize
// bytes and must not overlap the capacity of dst; SealBlock panics
// otherwise.
func (c *Cipher) SealBlock(dst, plain []byte, blockNo uint64) []byte {
	if len(plain) == 0 || len(plain) > c.l.BlockSize {
		panic(fmt.Sprintf("blockcipher: SealBlock of %d bytes, want 1..%d", len(plain), c.l.BlockSize))
	}
	ad := getAD()
	defer putAD(ad)
	return c.seal(dst, plain, c.ad(ad, blockNo))
}

// OpenBlock decrypts block, the stored bytes of block blockNo, and appends
// its plaintext to dst. A block of BlockSize+Overhead zero bytes is a hole
// and appends BlockSize zero bytes. On failure it returns dst unchanged and
// a *BlockError wrapping ErrBadCipherSize (len(block) <= Overhead or >
// BlockSize+Overhead) or ErrAuth.
func (c *Cipher) OpenBlock(dst, block []byte, blockNo uint64) ([]byte, error) {
	ad := getAD()
	defer putAD(ad)
	return c.openAppend(dst, block, blockNo, ad)
}

func (c *Cipher) openAppend(dst, block []byte, blockNo uint64, ad *adBuf) ([]byte, error) {
	if len(block) <= Overhead || len(block) > c.l.CipherBlockSize() {
		return dst, &BlockError{Block: blockNo, Err: fmt.Errorf("%d bytes, want %d..%d: %w",
			len(block), Overhead+1, c.l.CipherBlockSize(), ErrBadCipherSize)}
	}
	if len(block) == c.l.CipherBlockSize() && isHole(block) {
		n := len(dst)
		dst = grow(dst, c.l.BlockSize)
		clear(dst[n:])
		return dst, nil
	}
	out, err := c.open(dst, block, c.ad(ad, blockNo))
	if err != nil {
		return dst, &BlockError{Block: blockNo, Err: ErrAuth}
	}
	return out, nil
}

// isHole reports whether a full stored block is all zeros. A stored block
// starts with a random nonce, so checking the nonce first makes the common
// case cheap.
func isHole(block []byte) bool {
	for _, v := range block[:NonceSize] {
		if v != 0 {
			return false
		}
	}
	for _, v := range block[NonceSize:] {
		if v != 0 {
			return false
		}
	}
	return true
}

// grow extends dst by n bytes, reallocating at most once.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) < n {
		nd := make([]byte, len(dst), len(dst)+n)
		copy(nd, dst)
		dst = nd
	}
	return dst[:len(dst)+n]
}

// workers returns how many goroutines to use for nblocks blocks holding
// size bytes.
func workers(nblocks, size int) int {
	if size < parallelMin || nblocks < 2 {
		return 1
	}
	return min(runtime.GOMAXPROCS(0), nblocks)
}

// forChunks calls f on w contiguous ranges [lo, hi) that together cover
// blocks 0..nblocks-1, concurrently when w > 1.
func forChunks(nblocks, w int, f func(lo, hi int)) {
	if w <= 1 {
		f(0, nblocks)
		return
	}
	var wg sync.WaitGroup
	per, extra := nblocks/w, nblocks%w
	lo := 0
	for i := range w {
		hi := lo + per
		if i < extra {
			hi++
		}
		a, z := lo, hi
		wg.Go(func() { f(a, z) })
		lo = hi
	}
	wg.Wait()
}

// SealBlocks encrypts plain as consecutive blocks starting at firstBlock and
// appends the stored blocks to dst. Every block but the last is BlockSize
// bytes; the last may be shorter (the end of the file). dst is grown at most
// once; plain must not overlap the capacity of dst. Large inputs are
// encrypted by up to GOMAXPROCS goroutines.
func (c *Cipher) SealBlocks(dst, plain []byte, firstBlock uint64) []byte {
	if len(plain) == 0 {
		return dst
	}
	b := c.l.BlockSize
	nblocks := (len(plain) + b - 1) / b
	start := len(dst)
	dst = grow(dst, c.l.SealedSize(len(plain)))
	out := dst[start:]
	w := workers(nblocks, len(plain))
	if w == 1 {
		c.sealRange(out, plain, firstBlock, 0, nblocks)
		return dst
	}
	forChunks(nblocks, w, func(lo, hi int) { c.sealRange(out, plain, firstBlock, lo, hi) })
	return dst
}

// sealRange encrypts blocks lo..hi-1 of plain into their places in out.
func (c *Cipher) sealRange(out, plain []byte, firstBlock uint64, lo, hi int) {
	b, cb := c.l.BlockSize, c.l.CipherBlockSize()
	ad := getAD()
	defer putAD(ad)
	for i := lo; i < hi; i++ {
		p := plain[i*b : min((i+1)*b, len(plain))]
		c.seal(out[i*cb:i*cb], p, c.ad(ad, firstBlock+uint64(i)))
	}
}

// openRange decrypts blocks lo..hi-1 of cipher into their places in out,
// which has room for all of them, and stops at the first bad block.
func (c *Cipher) openRange(out, cipher []byte, firstBlock uint64, lo, hi int) (bad int, err error) {
	b, cb := c.l.BlockSize, c.l.CipherBlockSize()
	ad := getAD()
	defer putAD(ad)
	for i := lo; i < hi; i++ {
		blk := cipher[i*cb : min((i+1)*cb, len(cipher))]
		if _, err := c.openAppend(out[i*b:i*b], blk, firstBlock+uint64(i), ad); err != nil {
			return i, err
		}
	}
	return -1, nil
}

// OpenBlocks decrypts cipher, consecutive stored blocks starting at
// firstBlock, and appends the plaintext to dst. Every block but the last
// must be a full stored block; the last may be shorter (the end of the
// file). Holes read as zeros. On failure it returns dst unchanged (the
// bytes past len(dst) are cleared) and a *BlockError for the first bad block.
// cipher must not overlap the capacity of dst. Large inputs are decrypted
// by up to GOMAXPROCS goroutines.
func (c *Cipher) OpenBlocks(dst, cipher []byte, firstBlock uint64) ([]byte, error) {
	if len(cipher) == 0 {
		return dst, nil
	}
	cb := c.l.CipherBlockSize()
	nblocks := (len(cipher) + cb - 1) / cb
	// A bad tail size is reported by openAppend for the last block, after
	// the blocks before it have been checked.
	size, _ := c.l.OpenedSize(len(cipher))
	start := len(dst)
	dst = grow(dst, size)
	out := dst[start:]
	var badErr error
	if w := workers(nblocks, len(cipher)); w == 1 {
		_, badErr = c.openRange(out, cipher, firstBlock, 0, nblocks)
	} else {
		badErr = c.openParallel(out, cipher, firstBlock, nblocks, w)
	}
	if badErr != nil {
		clear(out)
		return dst[:start], badErr
	}
	return dst, nil
}

// openParallel decrypts nblocks blocks with w goroutines and returns the
// error of the first bad block.
func (c *Cipher) openParallel(out, cipher []byte, firstBlock uint64, nblocks, w int) error {
	var (
		mu       sync.Mutex
		firstBad = -1
		badErr   error
	)
	forChunks(nblocks, w, func(lo, hi int) {
		if i, err := c.openRange(out, cipher, firstBlock, lo, hi); err != nil {
			mu.Lock()
			if firstBad < 0 || i < firstBad {
				firstBad, badErr = i, err
			}
			mu.Unlock()
		}
	})
	return badErr
}
