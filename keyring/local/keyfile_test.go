package local

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
)

const (
	goodNone   = `{"kmsfs_local_key":1,"key_id":"07a72f446089ffd1","kdf":"none","key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}`
	goodScrypt = `{"kmsfs_local_key":1,"key_id":"07a72f446089ffd1","kdf":"scrypt","scrypt":{"n":1024,"r":8,"p":1,"salt":"QEFCQ0RFRkdISUpLTE1OTw=="},"sealed":"YGFiY2RlZmdoaWprZDfIXIa7CLhLedHA90XOptN7ly3B0zXv9MEKXRziR0dZdnpA+ks5n2+LggaqAN2J"}`
)

func TestParseKeyFile(t *testing.T) {
	// edit replaces old by new in s, failing if old is absent.
	edit := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("edit: %q not in %s", old, s)
		}
		return strings.Replace(s, old, new, 1)
	}
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"none", goodNone, true},
		{"scrypt", goodScrypt, true},
		{"white space", " {\n\t\"kmsfs_local_key\" : 1 ,\r\n" + goodNone[len(`{"kmsfs_local_key":1,`):] + "\n\n", true},
		{"field order", `{"kdf":"none","key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","key_id":"07a72f446089ffd1","kmsfs_local_key":1}`, true},

		{"empty", ``, false},
		{"not JSON", `kmsfs`, false},
		{"array", `[]`, false},
		{"empty object", `{}`, false},
		{"trailing data", goodNone + `{}`, false},
		{"truncated", goodNone[:len(goodNone)-1], false},
		{"version 2", edit(goodNone, `"kmsfs_local_key":1`, `"kmsfs_local_key":2`), false},
		{"version 0", edit(goodNone, `"kmsfs_local_key":1`, `"kmsfs_local_key":0`), false},
		{"version string", edit(goodNone, `"kmsfs_local_key":1`, `"kmsfs_local_key":"1"`), false},
		{"version float", edit(goodNone, `"kmsfs_local_key":1`, `"kmsfs_local_key":1.0`), false},
		{"version exponent", edit(goodNone, `"kmsfs_local_key":1`, `"kmsfs_local_key":1e0`), false},
		{"version negative", edit(goodNone, `"kmsfs_local_key":1`, `"kmsfs_local_key":-1`), false},
		{"version huge", edit(goodNone, `"kmsfs_local_key":1`, `"kmsfs_local_key":18446744073709551617`), false},
		{"version missing", edit(goodNone, `"kmsfs_local_key":1,`, ``), false},
		{"duplicate field", edit(goodNone, `"kdf":"none"`, `"kdf":"none","kdf":"none"`), false},
		{"unknown field", edit(goodNone, `"kdf":"none"`, `"kdf":"none","comment":"x"`), false},
		{"field case", edit(goodNone, `"kdf"`, `"KDF"`), false},
		{"escaped field name", edit(goodNone, `"kdf"`, `"kd\u0066"`), false},
		{"escape in value", edit(goodNone, `"none"`, `"non\u0065"`), false},
		{"key_id short", edit(goodNone, `07a72f446089ffd1`, `07a72f446089ff`), false},
		{"key_id upper", edit(goodNone, `07a72f446089ffd1`, `07A72F446089FFD1`), false},
		{"key_id not hex", edit(goodNone, `07a72f446089ffd1`, `07a72f446089ffdg`), false},
		{"key_id number", edit(goodNone, `"07a72f446089ffd1"`, `7`), false},
		{"key_id missing", edit(goodNone, `"key_id":"07a72f446089ffd1",`, ``), false},
		{"kdf unknown", edit(goodNone, `"none"`, `"argon2"`), false},
		{"kdf missing", edit(goodNone, `"kdf":"none",`, ``), false},
		{"kdf null", edit(goodNone, `"none"`, `null`), false},
		{"key missing", edit(goodNone, `,"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="`, ``), false},
		{"key short", edit(goodNone, `AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=`, `AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==`), false},
		{"key unpadded", edit(goodNone, `Hh8=`, `Hh8`), false},
		{"key url alphabet", edit(goodNone, `AAECAwQF`, `AAECAw-_`), false},
		{"key trailing bits", edit(goodNone, `Hh8=`, `Hh9=`), false},
		{"key with scrypt kdf", edit(goodNone, `"none"`, `"scrypt"`), false},
		{"none with sealed", edit(goodNone, `}`, `,"sealed":"YGFiY2RlZmdoaWprZDfIXIa7CLhLedHA90XOptN7ly3B0zXv9MEKXRziR0dZdnpA+ks5n2+LggaqAN2J"}`), false},
		{"scrypt with key", edit(goodScrypt, `"kdf":"scrypt",`, `"kdf":"scrypt","key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",`), false},
		{"scrypt without sealed", goodScrypt[:strings.Index(goodScrypt, `,"sealed"`)] + `}`, false},
		{"scrypt params missing", edit(goodScrypt, `"scrypt":{"n":1024,"r":8,"p":1,"salt":"QEFCQ0RFRkdISUpLTE1OTw=="},`, ``), false},
		{"scrypt not object", edit(goodScrypt, `{"n":1024,"r":8,"p":1,"salt":"QEFCQ0RFRkdISUpLTE1OTw=="}`, `"x"`), false},
		{"scrypt n missing", edit(goodScrypt, `"n":1024,`, ``), false},
		{"scrypt n not power of 2", edit(goodScrypt, `"n":1024`, `"n":1000`), false},
		{"scrypt n 1", edit(goodScrypt, `"n":1024`, `"n":1`), false},
		{"scrypt n 0", edit(goodScrypt, `"n":1024`, `"n":0`), false},
		{"scrypt n too big", edit(goodScrypt, `"n":1024`, `"n":2097152`), false},
		{"scrypt n*r too big", edit(edit(goodScrypt, `"n":1024`, `"n":1048576`), `"r":8`, `"r":16`), false},
		{"scrypt r 0", edit(goodScrypt, `"r":8`, `"r":0`), false},
		{"scrypt r 33", edit(goodScrypt, `"r":8`, `"r":33`), false},
		{"scrypt p 0", edit(goodScrypt, `"p":1`, `"p":0`), false},
		{"scrypt p 17", edit(goodScrypt, `"p":1`, `"p":17`), false},
		{"scrypt duplicate n", edit(goodScrypt, `"n":1024,`, `"n":1024,"n":1024,`), false},
		{"scrypt unknown field", edit(goodScrypt, `"p":1,`, `"p":1,"q":1,`), false},
		{"salt short", edit(goodScrypt, `QEFCQ0RFRkdISUpLTE1OTw==`, `QEFCQ0RFRkdISUpLTE1O`), false},
		{"salt missing", edit(goodScrypt, `,"salt":"QEFCQ0RFRkdISUpLTE1OTw=="`, ``), false},
		{"sealed short", edit(goodScrypt, `+ks5n2+LggaqAN2J`, `+ks5n2+Lggaq`), false},
		{"too big", goodNone + strings.Repeat(" ", MaxKeyFileSize), false},
	} {
		f, err := parseKeyFile([]byte(tc.in))
		if tc.ok {
			if err != nil {
				t.Errorf("%s: parseKeyFile() error = %v, want nil", tc.name, err)
			} else {
				f.wipe()
			}
			continue
		}
		if !errors.Is(err, ErrKeyFile) {
			t.Errorf("%s: parseKeyFile() error = %v, want ErrKeyFile", tc.name, err)
		}
	}
}

func TestParseKeyFileFields(t *testing.T) {
	f, err := parseKeyFile([]byte(goodScrypt))
	if err != nil {
		t.Fatalf("parseKeyFile() error = %v", err)
	}
	if got, want := [3]int{f.n, f.r, f.p}, [3]int{1024, 8, 1}; got != want {
		t.Errorf("parseKeyFile() n, r, p = %v, want %v", got, want)
	}
	if f.kdf != kdfScrypt || len(f.salt) != saltSize || len(f.sealed) != sealedSize || f.key != nil {
		t.Errorf("parseKeyFile() = kdf %q, %d-byte salt, %d-byte sealed, key %v; want scrypt, %d, %d, nil",
			f.kdf, len(f.salt), len(f.sealed), f.key != nil, saltSize, sealedSize)
	}
}

// FuzzParseKeyFile checks that the parser never panics and that whatever
// it accepts is a JSON object that encoding/json reads with the same field
// names, and respects the limits.
func FuzzParseKeyFile(f *testing.F) {
	f.Add([]byte(goodNone))
	f.Add([]byte(goodScrypt))
	for _, name := range []string{"testdata/key-none.json", "testdata/key-scrypt.json"} {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"kmsfs_local_key":1,"scrypt":{"n":2,"r":1,"p":1}}`))
	f.Add([]byte(`{"kdf":"none","kdf":"scrypt"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := parseKeyFile(data)
		if err != nil {
			if !errors.Is(err, ErrKeyFile) {
				t.Fatalf("parseKeyFile() error = %v, want ErrKeyFile", err)
			}
			return
		}
		defer kf.wipe()
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("parseKeyFile accepted %q, encoding/json error = %v", data, err)
		}
		var names []string
		for k := range m {
			names = append(names, k)
		}
		sort.Strings(names)
		var want []string
		switch kf.kdf {
		case kdfNone:
			want = []string{"kdf", "key", "key_id", "kmsfs_local_key"}
			if len(kf.key) != masterKeySize {
				t.Fatalf("kdf none: key is %d bytes", len(kf.key))
			}
		case kdfScrypt:
			want = []string{"kdf", "key_id", "kmsfs_local_key", "scrypt", "sealed"}
			if len(kf.salt) != saltSize || len(kf.sealed) != sealedSize || kf.n > maxScryptN || kf.n*kf.r > maxScryptNR {
				t.Fatalf("kdf scrypt: out of bounds: %+v", kf)
			}
		default:
			t.Fatalf("kdf = %q", kf.kdf)
		}
		if !reflect.DeepEqual(names, want) {
			t.Fatalf("parseKeyFile accepted fields %q, want %q", names, want)
		}
	})
}
