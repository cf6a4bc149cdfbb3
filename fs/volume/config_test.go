package volume

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const goodConfig = `{"format":"kmsfs","version":1,"volume_id":"00112233445566778899aabbccddeeff","block_size":4096,"keys":["local:///k"],"data_key_reuse_files":1024,"data_key_reuse_seconds":300}`

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"good", goodConfig, true},
		{"no reuse fields (one key per file)", `{"format":"kmsfs","version":1,"volume_id":"00112233445566778899aabbccddeeff","block_size":65536,"keys":["local:///k","local:///j"]}`, true},
		{"unknown fields ignored", strings.Replace(goodConfig, `"format"`, `"future":{"x":1},"format"`, 1), true},
		{"version 2", strings.Replace(goodConfig, `"version":1`, `"version":2`, 1), false},
		{"other format", strings.Replace(goodConfig, `"kmsfs"`, `"gocryptfs"`, 1), false},
		{"upper-case volume ID", strings.Replace(goodConfig, "aabbcc", "AABBCC", 1), false},
		{"short volume ID", strings.Replace(goodConfig, "00112233", "", 1), false},
		{"block size not a power of two", strings.Replace(goodConfig, "4096", "5000", 1), false},
		{"block size too big", strings.Replace(goodConfig, "4096", "2097152", 1), false},
		{"no keys", strings.Replace(goodConfig, `["local:///k"]`, `[]`, 1), false},
		{"repeated key", strings.Replace(goodConfig, `["local:///k"]`, `["local:///k","local:///k"]`, 1), false},
		{"empty key", strings.Replace(goodConfig, `["local:///k"]`, `[""]`, 1), false},
		{"negative reuse", strings.Replace(goodConfig, `:1024`, `:-1`, 1), false},
		{"trailing data", goodConfig + `{}`, false},
		{"not JSON", `kmsfs`, false},
		{"too large", `{"x":"` + strings.Repeat("a", maxConfigSize) + `"}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.in))
			if tc.ok && err != nil {
				t.Fatalf("ParseConfig = %v, want nil", err)
			}
			if !tc.ok && (err == nil || !errors.Is(err, ErrBadConfig)) {
				t.Fatalf("ParseConfig = %+v, %v; want an error wrapping ErrBadConfig", c, err)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte(`{"format":"kmsfs","version":1,"volume_id":"00112233445566778899aabbccddeeff","block_size":1048576,"keys":["alibaba-kms://cn-hangzhou/alias/x?endpoint=https://kms.example"]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("ParseConfig error %v does not wrap ErrBadConfig", err)
			}
			return
		}
		// What is accepted survives a round trip unchanged.
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseConfig(out)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip of %q = %+v, %v; want %+v", out, c2, err, c)
		}
	})
}

func FuzzEncryptionContext(f *testing.F) {
	f.Add([]byte(EncryptionContext("00112233445566778899aabbccddeeff")))
	f.Add([]byte(`{"volume":"00112233445566778899aabbccddeeff","kmsfs":"v1"}`))
	f.Add([]byte(`{"kmsfs":"v1"}`))
	f.Add([]byte(EncryptionContext("00112233445566778899AABBCCDDEEFF")))
	f.Add([]byte(EncryptionContext("0011223344556677889\\u0061aabbccddeeff")))
	f.Fuzz(func(t *testing.T, b []byte) {
		vol, err := volumeFromContext(b)
		if err != nil {
			return
		}
		// Only the canonical spelling is accepted.
		if got := EncryptionContext(vol); got == nil || string(got) != string(b) {
			t.Fatalf("volumeFromContext(%q) accepted a non-canonical context (canonical %q)", b, got)
		}
	})
}

// TestMarshalConfigNamesKey checks that the names key spliced into the
// configuration JSON by hand parses back, with every other field.
func TestMarshalConfigNamesKey(t *testing.T) {
	nk := bytes.Repeat([]byte{0xa5, 0x01, 0xff}, 22)[:64]
	cfg := &Config{Format: "kmsfs", Version: 2, VolumeID: strings.Repeat("ab", 16), BlockSize: 4096,
		Keys: []string{"local:///k"}, ReuseFiles: 3, ReuseSeconds: 4, Epoch: 9, Names: NamesSIV}
	sk := bytes.Repeat([]byte{0x5a}, SlotKeySize)
	for _, tc := range []struct {
		name    string
		names   string
		key, sk []byte
	}{
		{"encrypted names", NamesSIV, nk, sk},
		{"plaintext names", NamesPlaintext, nil, sk},
		{"plaintext names, no slot key", NamesPlaintext, nil, nil},
		{"encrypted names, no slot key", NamesSIV, nk, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *cfg
			c.Names = tc.names
			plain, err := marshalConfig(&c, tc.key, tc.sk)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseConfig(plain)
			if err != nil {
				t.Fatalf("ParseConfig(%s) = %v", plain, err)
			}
			if !bytes.Equal(got.NamesKey, tc.key) || !bytes.Equal(got.SlotKey, tc.sk) {
				t.Errorf("names key = %x, slot key %x; want %x, %x", got.NamesKey, got.SlotKey, tc.key, tc.sk)
			}
			got.NamesKey, got.SlotKey = nil, nil
			if !reflect.DeepEqual(*got, c) {
				t.Errorf("ParseConfig = %+v, want %+v", *got, c)
			}
		})
	}
}
