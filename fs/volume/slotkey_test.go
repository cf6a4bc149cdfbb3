package volume

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring"
)

// TestSlotTagVectors checks slotTag and slotCiphertext against
// tests/testdata/vectors-v2/slot-tag.txt (docs/FORMAT.md, "Public-key
// slots").
func TestSlotTagVectors(t *testing.T) {
	f, err := os.Open("../../tests/testdata/vectors-v2/slot-tag.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []map[string]string
	cur := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if sc.Text() == "" {
			recs, cur = append(recs, cur), map[string]string{}
			continue
		}
		k, val, _ := strings.Cut(sc.Text(), ": ")
		cur[k] = val
	}
	recs = append(recs, cur)
	sk, err := hex.DecodeString(recs[0]["slot-key"])
	if err != nil || len(sk) != SlotKeySize {
		t.Fatalf("slot-key: %v", err)
	}
	v := &Volume{}
	if err := v.ensureSlotKey(sk); err != nil {
		t.Fatal(err)
	}
	defer v.closeSlotKey()
	v.loaded.Store(true)
	for _, r := range recs[1:] {
		e, _ := hex.DecodeString(r["e"])
		tag, _ := hex.DecodeString(r["tag"])
		s := header.Slot{URI: r["uri"], Context: []byte(r["context"]), Wrapped: append(bytes.Clone(e), tag...)}
		got, err := v.slotCiphertext(s, false)
		switch r["expect"] {
		case "ok":
			if err != nil || !bytes.Equal(got, e) {
				t.Errorf("%s: slotCiphertext = %v", r["vector"], err)
			}
			if !hmac.Equal(slotTag(sk, s.URI, s.Context, e), tag) {
				t.Errorf("%s: slotTag differs from the vector", r["vector"])
			}
			w, err := v.tagSlot(s.URI, s.Context, e)
			if err != nil || !bytes.Equal(w, s.Wrapped) {
				t.Errorf("%s: tagSlot = %x, %v", r["vector"], w, err)
			}
		case "refused":
			if !errors.Is(err, keyring.ErrUnwrap) {
				t.Errorf("%s: slotCiphertext error = %v, want ErrUnwrap", r["vector"], err)
			}
		default:
			t.Fatalf("%s: expect %q", r["vector"], r["expect"])
		}
	}
	// No slot key: refused, unless the configuration is being read.
	none := &Volume{}
	none.loaded.Store(true)
	s := header.Slot{URI: recs[1]["uri"], Context: []byte("c"), Wrapped: bytes.Repeat([]byte{1}, 300)}
	if _, err := none.slotCiphertext(s, false); !errors.Is(err, ErrNoSlotKey) {
		t.Errorf("no slot key: error = %v, want ErrNoSlotKey", err)
	}
	if _, err := none.tagSlot(s.URI, s.Context, []byte("e")); !errors.Is(err, ErrNoSlotKey) {
		t.Errorf("tagSlot with no slot key: error = %v, want ErrNoSlotKey", err)
	}
	// A symmetric slot passes through untouched.
	sym := header.Slot{URI: "local:///k", Wrapped: []byte("w")}
	if got, err := v.slotCiphertext(sym, false); err != nil || string(got) != "w" {
		t.Errorf("symmetric slot: %q, %v", got, err)
	}
}
