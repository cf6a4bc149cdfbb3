package volume

import (
	"bytes"
	"context"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/header"
)

// slotURIs returns the key URIs of both header copies of a backing file.
func slotURIs(t *testing.T, path string) [2]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < header.PreambleSize {
		t.Fatalf("reading the header of %s: %d bytes, %v", path, len(b), err)
	}
	h, err := header.Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out [2]string
	for i, c := range h.Copies {
		if c == nil {
			out[i] = "<unused or damaged>"
			continue
		}
		var u []string
		for _, s := range c.Slots {
			u = append(u, s.URI)
		}
		out[i] = strings.Join(u, " ")
	}
	return out
}

// internalFiles returns the content of every kmsfs.dirid and long-name
// file of the backing directory, by path.
func internalFiles(t *testing.T, v *Volume, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if fi.Mode().IsRegular() && v.Internal(rel) && !Internal(rel) {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = fi.ModTime().String() + " " + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRewrapEncryptedNames rewraps a volume with encrypted names, nested
// directories and long names: every file is rewrapped, kmsfs.dirid and
// long-name files are left alone, and a failure names the file by its
// plaintext path.
func TestRewrapEncryptedNames(t *testing.T) {
	s := newSivTree(t)
	tree := s.sample()
	var logBuf bytes.Buffer
	s.v.Log = log.New(&logBuf, "", 0)
	before := internalFiles(t, s.v, s.e.vol)
	if len(before) != 5 { // 3 kmsfs.dirid, 2 .name
		t.Fatalf("kmsfs's own files: %v, want 3 kmsfs.dirid and 2 .name files", before)
	}
	withHeader := []string{}
	for plain, rel := range tree {
		if fi, err := os.Stat(s.path(rel)); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
			withHeader = append(withHeader, plain)
		}
	}
	if len(withHeader) != 4 {
		t.Fatalf("files with a header: %v, want 4", withHeader)
	}

	r, err := Rewrap(context.Background(), s.v, RewrapOptions{Remove: []string{s.e.uriB}})
	if err != nil || r.Files != 4 || r.Rewritten != 4 || r.Failed != 0 {
		t.Fatalf("Rewrap = %+v, %v; want 4 files rewritten, none failed (log: %s)", r, err, logBuf.String())
	}
	for _, plain := range withHeader {
		if got := slotURIs(t, s.path(tree[plain])); got != [2]string{s.e.uriA, s.e.uriA} {
			t.Errorf("%s: slots after Rewrap = %q, want only %s", plain, got, s.e.uriA)
		}
	}
	if after := internalFiles(t, s.v, s.e.vol); len(after) != len(before) {
		t.Errorf("kmsfs's own files after Rewrap: %v, want %v", after, before)
	} else {
		for k, v := range before {
			if after[k] != v {
				t.Errorf("%s changed by Rewrap", k)
			}
		}
	}
	// (A prefetch of the old key list may warn that B is no longer
	// trusted for new files: only failures matter here.)
	if strings.Contains(logBuf.String(), "rewrap") {
		t.Errorf("Rewrap logged failures: %q", logBuf.String())
	}

	// Failures are named by their plaintext path, or by their backing
	// path when the name does not decrypt.
	damaged := tree["docs/sub dir/x"]
	os.WriteFile(s.path(damaged), bytes.Repeat([]byte{7}, header.Size+100), 0o600)
	foreign := tree["docs"] + "/planted"
	os.WriteFile(s.path(foreign), bytes.Repeat([]byte{7}, header.Size+100), 0o600)
	r, err = Rewrap(context.Background(), s.v, RewrapOptions{})
	if err == nil || r.Failed != 2 || r.Rewritten != 0 {
		t.Errorf("Rewrap with two damaged files = %+v, %v; want 2 failed", r, err)
	}
	out := logBuf.String()
	for _, want := range []string{
		"rewrap docs/sub dir/x (backing path " + damaged + "): ",
		"rewrap " + foreign + " (backing path: it cannot be named, ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q does not contain %q", out, want)
		}
	}
}
