package cryptfile

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseRecord checks that parseRecord never panics, that a record it
// accepts marshals back to the bytes it was parsed from, and that an
// accepted path stays inside the backing directory: relative, with no
// ".." component and no NUL.
func FuzzParseRecord(f *testing.F) {
	const slotData = 1 << 20
	buf := make([]byte, journalHdr)
	for _, r := range []record{
		{fileID: [16]byte{1, 2, 3}, ino: 42, coff: 4096, length: 4124, cut: -1, path: "f"},
		{ino: 1, coff: 4096 + 3*4124, length: 0, cut: 4096 + 3*4124, path: "dir/sub/file.txt"},
		{coff: 1 << 40, length: slotData, cut: 1<<40 + 4096, path: strings.Repeat("a/", 100) + "b"},
		{path: "a..b/..c/c.."},
		{path: "../etc/passwd"},
		{path: "/etc/passwd"},
		{path: "a/../b"},
		{path: ".."},
		{path: "a\x00b"},
		{length: slotData + 1, path: "f"},
		{coff: -1, path: "f"},
		{cut: -2, path: "f"},
		{path: ""},
	} {
		f.Add(bytes.Clone(r.marshal(buf)))
	}
	f.Add([]byte{})
	f.Add(journalMagic)
	f.Add(make([]byte, recordFixed))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRecord(b, slotData)
		if err != nil {
			if err == errNoRecord && len(b) >= recordFixed && bytes.Equal(b[:8], journalMagic) {
				t.Fatalf("parseRecord(%q) = errNoRecord for a slot with the magic", b)
			}
			return
		}
		n := recordFixed + len(r.path)
		if n > len(b) {
			t.Fatalf("parseRecord accepted a %d-byte record from %d bytes", n, len(b))
		}
		if got := r.marshal(make([]byte, journalHdr)); !bytes.Equal(got, b[:n]) {
			t.Fatalf("marshal(parseRecord(%q)) = %q, want the first %d bytes of the input", b, got, n)
		}
		if r.path == "" || strings.HasPrefix(r.path, "/") || strings.ContainsRune(r.path, 0) {
			t.Fatalf("parseRecord accepted the path %q", r.path)
		}
		for _, c := range strings.Split(r.path, "/") {
			if c == ".." {
				t.Fatalf("parseRecord accepted the path %q, which leaves the directory", r.path)
			}
		}
		if r.length < 0 || int64(r.length) > slotData || r.coff < 0 || r.cut < -1 {
			t.Fatalf("parseRecord accepted length %d, offset %d, cut %d", r.length, r.coff, r.cut)
		}
	})
}
