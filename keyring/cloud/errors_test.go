package cloud

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kmsfs/kmsfs/keyring"
)

func TestErrorConstructors(t *testing.T) {
	base := Error{Provider: "p-kms", Op: "Decrypt", Key: "k1", Region: "r1"}
	for _, tc := range []struct {
		name     string
		err      *Error
		kind     error
		contains []string
	}{
		{"With", base.With(keyring.ErrUnwrap, "bad blob"), keyring.ErrUnwrap, []string{"p-kms", "Decrypt", "k1", "r1", "bad blob"}},
		{"Malformed", base.Malformed("no KeyId"), keyring.ErrUnavailable, []string{"malformed answer: no KeyId"}},
		{"Credentials", base.Credentials(errors.New("no profile"), "set X"), keyring.ErrBadCredentials, []string{"no profile", "set X"}},
		{"Credentials cut short", base.Credentials(fmt.Errorf("chain: %w", context.DeadlineExceeded), "set X"), keyring.ErrUnavailable, []string{"deadline"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.kind) {
				t.Errorf("errors.Is(%v, %v) = false", tc.err, tc.kind)
			}
			for _, s := range tc.contains {
				if !strings.Contains(tc.err.Error(), s) {
					t.Errorf("%q does not contain %q", tc.err.Error(), s)
				}
			}
		})
	}
	if base.Kind != nil || base.Message != "" {
		t.Errorf("constructors changed their receiver: %+v", base)
	}
}

func TestDataKey(t *testing.T) {
	base := Error{Provider: "p-kms", Op: "GenerateDataKey", Key: "k1", Region: "r1"}
	good := make([]byte, keyring.DataKeySize)
	for i := range good {
		good[i] = byte(i)
	}
	for _, tc := range []struct {
		name string
		b64  string
		ok   bool
	}{
		{"32 bytes", base64.StdEncoding.EncodeToString(good), true},
		{"31 bytes", base64.StdEncoding.EncodeToString(good[:31]), false},
		{"not base64", "!!!", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := DataKey(base, tc.b64, keyring.ErrUnavailable)
			if tc.ok {
				if err != nil || string(k.Bytes()) != string(good) {
					t.Fatalf("DataKey = %v, want the key", err)
				}
				k.Destroy()
				return
			}
			if k != nil || !errors.Is(err, keyring.ErrUnavailable) || !strings.Contains(err.Error(), "32-byte key") {
				t.Fatalf("DataKey = %v, %v; want an ErrUnavailable error naming the size", k, err)
			}
		})
	}
}
