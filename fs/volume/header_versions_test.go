package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kmsfs/kmsfs/fs/cryptfile"
	"github.com/kmsfs/kmsfs/header"
	"github.com/kmsfs/kmsfs/keyring/local"
)

// newCheckEnvVersion is newCheckEnv for a volume of the given format
// version (2: version-1 file headers; 3: version-3 ones).
func newCheckEnvVersion(t *testing.T, version int) *checkEnv {
	t.Helper()
	dir := t.TempDir()
	e := &checkEnv{dir: dir, vol: filepath.Join(dir, "vol")}
	for _, k := range []string{"a.key", "b.key"} {
		if err := local.Create(filepath.Join(dir, k), nil); err != nil {
			t.Fatal(err)
		}
	}
	e.uriA, e.uriB = local.URI(filepath.Join(dir, "a.key")), local.URI(filepath.Join(dir, "b.key"))
	if err := os.Mkdir(e.vol, 0o700); err != nil {
		t.Fatal(err)
	}
	o := InitOptions{Keys: []string{e.uriA, e.uriB}, ReuseFiles: 1, ReuseSeconds: 1, FormatVersion: version}
	if _, err := Init(context.Background(), e.vol, o, newLocalResolver()); err != nil {
		t.Fatal(err)
	}
	return e
}

// pattern returns n bytes of plaintext.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// putData writes data as the content of a new file through the engine.
func putData(t *testing.T, v *Volume, name string, data []byte) {
	t.Helper()
	fd, err := v.Backing().Open(name, syscall.O_RDWR|syscall.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	h, err := cryptfile.New(&cryptfile.Config{Layout: v.Layout, Keys: v, V3: v.Layout3}, func() string { return name }).Open(context.Background(), fd)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.WriteAt(context.Background(), data, 0); err != nil {
		t.Fatal(err)
	}
}

// getData reads the whole content of a file through the engine.
func getData(t *testing.T, v *Volume, name string) ([]byte, error) {
	t.Helper()
	fd, err := v.Backing().Open(name, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, err := cryptfile.New(&cryptfile.Config{Layout: v.Layout, Keys: v, V3: v.Layout3}, func() string { return name }).Open(context.Background(), fd)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	n, err := h.Size()
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := h.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// headerCases are the files the header tests run on: in a version-3
// volume an inline file (content in the header's page, right after the
// header) and a paged one; in a version-2 volume a file with a version-1
// header.
var headerCases = []struct {
	name    string
	version int
	size    int
	want    uint16 // the header's version
}{
	{"v3 inline", 3, 300, header.Version3},
	{"v3 paged", 3, 10000, header.Version3},
	{"v2", 2, 5000, header.Version},
}

// TestCheckHeaderVersions checks CheckHeader and Repair on headers of
// both versions: copies found at the preamble's offsets, repaired in
// place, and nothing at or after the header's end touched.
func TestCheckHeaderVersions(t *testing.T) {
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newCheckEnvVersion(t, tc.version)
			v := e.open(t, e.uriA, e.uriB)
			data := pattern(tc.size)
			putData(t, v, "f", data)
			path := filepath.Join(e.vol, "f")
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			p, err := header.ParsePreamble(orig)
			if err != nil || p.Version != tc.want {
				t.Fatalf("ParsePreamble = %+v, %v; want version %d", p, err, tc.want)
			}
			hl := p.HeaderLen()
			if tc.want == header.Version3 && hl >= header.Size || tc.want == header.Version && hl != header.Size {
				t.Fatalf("HeaderLen = %d", hl)
			}
			// An inline file ends in the header's page.
			if inline := len(orig) < header.Size; inline != (tc.name == "v3 inline") {
				t.Fatalf("backing file of %d bytes for %d bytes of content", len(orig), tc.size)
			}
			chk, _, err := e.check(t, v, "f", syscall.O_RDONLY)
			if err != nil || !chk.Copies[0].Valid || !chk.Copies[1].Valid || len(chk.Slots) != 2 || chk.Slots[0].Err != nil || chk.Slots[1].Err != nil || chk.Damaged() {
				t.Fatalf("CheckHeader of a good file = %v, %v; want both copies and slots good", chk, err)
			}

			// Copy 1's MAC damaged: restored from copy 0, and nothing
			// past the header written.
			damage(t, path, p.CopyOffset(1)+int64(p.MACOffset()))
			chk, fd, err := e.check(t, v, "f", syscall.O_RDWR)
			if err != nil || !chk.Copies[0].Valid || chk.Copies[1].Valid || !errors.Is(chk.Copies[1].Err, header.ErrTampered) {
				t.Fatalf("CheckHeader with copy 1's MAC damaged = %v, %v; want copy 1 tampered", chk, err)
			}
			// A change to the content is not a change to the header.
			damage(t, path, int64(hl))
			if i, err := chk.Repair(fd); i != 1 || err != nil {
				t.Fatalf("Repair = %d, %v; want 1, nil", i, err)
			}
			damage(t, path, int64(hl))
			if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
				t.Errorf("file after Repair differs from the original (%d bytes, want %d)", len(now), len(orig))
			}

			// Copy 0's last padding byte: the copy does not parse;
			// restored.
			damage(t, path, p.CopyOffset(0)+int64(p.MACOffset())-1)
			chk, fd, err = e.check(t, v, "f", syscall.O_RDWR)
			if err != nil || chk.Copies[0].Valid || chk.Copies[0].Err == nil || !chk.Copies[1].Valid {
				t.Fatalf("CheckHeader with copy 0's padding damaged = %v, %v", chk, err)
			}
			if i, err := chk.Repair(fd); i != 0 || err != nil {
				t.Fatalf("Repair = %d, %v; want 0, nil", i, err)
			}
			if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
				t.Errorf("file after Repair differs from the original")
			}
			if got, err := getData(t, v, "f"); err != nil || !bytes.Equal(got, data) {
				t.Errorf("content after Repair = %d bytes, %v; want the %d bytes written", len(got), err, len(data))
			}

			// A file shorter than its header is damage.
			os.WriteFile(path, orig[:hl-1], 0o600)
			if _, _, err := e.check(t, v, "f", syscall.O_RDONLY); !errors.Is(err, ErrCorrupt) {
				t.Errorf("CheckHeader of a file one byte shorter than its header = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestRewrapVersions checks that Rewrap rewrites the copies of headers of
// both versions in place and leaves the rest of the file as it was.
func TestRewrapVersions(t *testing.T) {
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newCheckEnvVersion(t, tc.version)
			v := e.open(t, e.uriA, e.uriB)
			data := pattern(tc.size)
			putData(t, v, "f", data)
			path := filepath.Join(e.vol, "f")
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := header.ParsePreamble(orig)
			hl := p.HeaderLen()
			if _, err := Rewrap(context.Background(), v, RewrapOptions{Remove: []string{e.uriB}}); err != nil {
				t.Fatalf("Rewrap = %v", err)
			}
			now, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(now) != len(orig) || !bytes.Equal(now[hl:], orig[hl:]) || !bytes.Equal(now[:header.PreambleSize], orig[:header.PreambleSize]) {
				t.Fatalf("Rewrap changed the file's length, content or preamble (%d bytes, want %d)", len(now), len(orig))
			}
			h, err := header.Parse(now)
			if err != nil || h.CopyErrs != [2]error{} {
				t.Fatalf("Parse after Rewrap = %v, %v", err, h.CopyErrs)
			}
			for i, cp := range h.Copies {
				if cp.Seq != 2 || len(cp.Slots) != 1 || cp.Slots[0].URI != e.uriA {
					t.Errorf("copy %d after Rewrap: seq %d, %d slots, want seq 2 with key A only", i, cp.Seq, len(cp.Slots))
				}
			}
			va := e.open(t, e.uriA)
			chk, _, err := e.check(t, va, "f", syscall.O_RDONLY)
			if err != nil || !chk.Copies[0].Valid || !chk.Copies[1].Valid || len(chk.Slots) != 1 {
				t.Errorf("CheckHeader after Rewrap = %v, %v; want both copies valid, one slot", chk, err)
			}
			if got, err := getData(t, va, "f"); err != nil || !bytes.Equal(got, data) {
				t.Errorf("content after Rewrap = %d bytes, %v; want the %d bytes written", len(got), err, len(data))
			}
		})
	}
}
