package trust

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const id = "00112233445566778899aabbccddeeff"

func TestSaveLoadUpdate(t *testing.T) {
	s := &Store{Dir: filepath.Join(t.TempDir(), "trust")}
	if _, err := s.Load(id); !errors.Is(err, ErrNotTrusted) {
		t.Fatalf("Load(unknown) = %v, want ErrNotTrusted", err)
	}
	r := &Record{VolumeID: id, Keys: []string{"local:///a"}}
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.path(id))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if di, err := os.Stat(s.Dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("store directory mode = %v, %v; want 0700", di.Mode().Perm(), err)
	}
	if err := s.Update(id, func(r *Record) {
		r.Keys = append(r.Keys, "local:///b")
		r.Retired = []string{"local:///c"}
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Keys, []string{"local:///a", "local:///b"}) || !slices.Equal(got.Retired, []string{"local:///c"}) {
		t.Errorf("Load after Update = %+v", got)
	}
	if !got.Trusts("local:///b") || got.Trusts("local:///c") || got.Trusts("local:///b?endpoint=x") {
		t.Errorf("Trusts: want exact matches of Keys only")
	}
	if err := s.Update("00112233445566778899aabbccddee00", func(r *Record) { r.Keys = []string{"k:x"} }); err != nil {
		t.Errorf("Update(new volume) = %v, want nil", err)
	}
}

func TestBadInput(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	for _, bad := range []string{"", "../etc", "00112233445566778899AABBCCDDEEFF", id + "0"} {
		if _, err := s.Load(bad); err == nil || errors.Is(err, ErrNotTrusted) {
			t.Errorf("Load(%q) = %v, want a bad-ID error", bad, err)
		}
		if err := s.Save(&Record{VolumeID: bad}); err == nil {
			t.Errorf("Save(%q) = nil, want an error", bad)
		}
	}
	tests := []struct {
		name, body string
	}{
		{"not JSON", "{"},
		{"other volume", `{"volume_id":"ffffffffffffffffffffffffffffffff","keys":[]}`},
		{"unknown field", `{"volume_id":"` + id + `","keys":[],"x":1}`},
		{"empty key", `{"volume_id":"` + id + `","keys":[""]}`},
		{"empty retired key", `{"volume_id":"` + id + `","keys":[],"retired":[""]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(s.path(id), []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(id); err == nil {
				t.Errorf("Load(%s) = nil error, want one", tc.body)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"volume_id":"` + id + `","keys":["local:///a"],"retired":["x"]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parse(b, id, "f")
		if err != nil {
			return
		}
		if r.VolumeID != id {
			t.Fatalf("parse accepted volume %q", r.VolumeID)
		}
		for _, k := range append(slices.Clone(r.Keys), r.Retired...) {
			if k == "" {
				t.Fatalf("parse accepted an empty key")
			}
		}
	})
}
