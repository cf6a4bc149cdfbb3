package tests

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/blockcipher"
	"github.com/kmsfs/kmsfs/header"
)

// vectorDir holds the format test vectors (docs/FORMAT.md "Test vectors"),
// written once by tests/internal/vectorgen.
const vectorDir = "testdata/vectors"

// formatVector is one parsed vector file.
type formatVector struct {
	fields map[string]string
	file   []byte
}

// parseFormatVector parses "key: value" lines, a blank line and the
// backing file in base64.
func parseFormatVector(data []byte) (*formatVector, error) {
	v := &formatVector{fields: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	var body strings.Builder
	inBody := false
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if inBody {
			body.WriteString(text)
			continue
		}
		if text == "" {
			inBody = true
			continue
		}
		key, value, ok := strings.Cut(text, ": ")
		if !ok {
			return nil, fmt.Errorf("line %d: %q is not a \"key: value\" line", line, text)
		}
		if _, dup := v.fields[key]; dup {
			return nil, fmt.Errorf("line %d: duplicate key %q", line, key)
		}
		v.fields[key] = value
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !inBody {
		return nil, errors.New("no blank line before the base64 body")
	}
	var err error
	if v.file, err = base64.StdEncoding.DecodeString(body.String()); err != nil {
		return nil, fmt.Errorf("base64 body: %w", err)
	}
	return v, nil
}

// vectorResult is what a reader makes of a backing file.
type vectorResult struct {
	expect string // the outcome, in the words of the "expect" field
	size   int64  // the reported plaintext size; -1 when unknown
	plain  []byte // the readable plaintext, when there is any
}

// decodeBackingFile reads a backing file as docs/FORMAT.md says, with
// blockSize the volume's block size and dataKey the key every slot unwraps to.
func decodeBackingFile(file []byte, blockSize int, dataKey []byte) vectorResult {
	// "Sizes": an empty file is an empty plaintext; a shorter file than a
	// header is torn.
	if len(file) == 0 {
		return vectorResult{expect: "success", size: 0, plain: []byte{}}
	}
	if len(file) < header.Size {
		return vectorResult{expect: "bad-size", size: 0, plain: []byte{}}
	}
	// "Reading a header", step 1.
	h, err := header.Parse(file[:header.Size])
	if err != nil {
		return vectorResult{expect: "bad-preamble", size: -1}
	}
	if h.Preamble.BlockSize() != blockSize {
		return vectorResult{expect: "bad-preamble", size: -1}
	}
	// Step 2: copies in order of descending sequence, copy 0 first on a tie.
	accepted := -1
	allWrongKey := true
	for _, i := range h.Candidates() {
		err := header.VerifyCopy(h.Preamble, h.Copies[i], dataKey)
		if err == nil {
			accepted = i
			break
		}
		allWrongKey = allWrongKey && errors.Is(err, header.ErrWrongKey)
	}
	// Step 3.
	if accepted < 0 {
		if allWrongKey && len(h.Candidates()) > 0 {
			return vectorResult{expect: "wrong-key", size: -1}
		}
		return vectorResult{expect: "header-tampered", size: -1}
	}
	var ck [header.KeySize]byte
	if err := header.Derive(ck[:], dataKey, h.Preamble.FileID, header.ContentKey); err != nil {
		panic(err)
	}
	l := blockcipher.Layout{BlockSize: blockSize, DataOffset: header.Size}
	c, err := blockcipher.New(ck[:], h.Preamble.FileID, l)
	if err != nil {
		panic(err)
	}
	size, sizeErr := l.PlainSize(int64(len(file)))
	// With a damaged tail, the blocks before it still read.
	blocks := file[header.Size:l.CipherSize(size)]
	plain, err := c.OpenBlocks(nil, blocks, 0)
	if err != nil {
		var be *blockcipher.BlockError
		if !errors.As(err, &be) {
			panic(err)
		}
		return vectorResult{expect: fmt.Sprintf("block-auth (block %d)", be.Block), size: size}
	}
	if sizeErr != nil {
		return vectorResult{expect: "bad-size", size: size, plain: plain}
	}
	return vectorResult{expect: "success", size: size, plain: plain}
}

func TestVectors(t *testing.T) {
	entries, err := os.ReadDir(vectorDir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		t.Run(strings.TrimSuffix(e.Name(), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(vectorDir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			v, err := parseFormatVector(data)
			if err != nil {
				t.Fatalf("parsing %s: %v", e.Name(), err)
			}
			expect := v.fields["expect"]
			kind, _, _ := strings.Cut(expect, " ")
			seen[kind]++
			blockSize, err := strconv.Atoi(v.fields["block-size"])
			if err != nil {
				t.Fatalf("block-size: %v", err)
			}
			dataKey, err := hex.DecodeString(v.fields["data-key"])
			if err != nil || len(dataKey) != header.KeySize {
				t.Fatalf("data-key = %q, want %d bytes of hex (%v)", v.fields["data-key"], header.KeySize, err)
			}
			got := decodeBackingFile(v.file, blockSize, dataKey)
			if got.expect != expect {
				t.Fatalf("decoding %s (%s) = %q, want %q", e.Name(), v.fields["comment"], got.expect, expect)
			}
			if s, ok := v.fields["plaintext-size"]; ok {
				want, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					t.Fatalf("plaintext-size: %v", err)
				}
				if got.size != want {
					t.Errorf("plaintext size = %d, want %d", got.size, want)
				}
			} else if expect == "success" || expect == "bad-size" {
				t.Errorf("no plaintext-size field in a %s vector", expect)
			}
			if s, ok := v.fields["plaintext-sha256"]; ok {
				sum := sha256.Sum256(got.plain)
				if hex.EncodeToString(sum[:]) != s {
					t.Errorf("plaintext sha256 = %x (%d bytes), want %s", sum, len(got.plain), s)
				}
			} else if expect == "success" {
				t.Errorf("no plaintext-sha256 field in a success vector")
			}
		})
	}
	// Every outcome class has at least one vector.
	for _, kind := range []string{"success", "bad-preamble", "header-tampered", "wrong-key", "block-auth", "bad-size"} {
		if seen[kind] == 0 {
			t.Errorf("no vector expects %q", kind)
		}
	}
}
