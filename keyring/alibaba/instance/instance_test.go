package instance

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/cloud"
	"github.com/kmsfs/kmsfs/keyring/keyringtest"
	"github.com/kmsfs/kmsfs/keyring/kmsemu"
	"github.com/kmsfs/kmsfs/keyring/kmsemu/kmsemutest"
)

// The client key as Alibaba issues it (a test-only key; see its README).
const (
	fixtures     = "../../kmsemu/testdata/instance"
	clientKeyID  = "KAAP.test"
	clientKeyPW  = "kmsfs-test"
	clientKey    = fixtures + "/clientKey_KAAP.test.json"
	clientCert   = fixtures + "/clientKey_KAAP.test.cert.pem"
	testInstance = "kst-test"
)

// fastPolicy keeps the outage cases short.
var fastPolicy = cloud.Policy{
	AttemptTimeout: 2 * time.Second,
	Budget:         4 * time.Second,
	MaxAttempts:    4,
	BaseDelay:      20 * time.Millisecond,
	ThrottleDelay:  20 * time.Millisecond,
	MaxDelay:       200 * time.Millisecond,
}

// private copies a fixture to a file of mode 0600 (git keeps 0644).
func private(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// setup starts an emulator (TLS) that knows the client key, with one key
// and a denied client key, and points the environment at them.
func setup(t *testing.T) (*kmsemu.Server, kmsemu.Key) {
	t.Helper()
	cert, err := os.ReadFile(clientCert)
	if err != nil {
		t.Fatal(err)
	}
	s := kmsemutest.StartTLS(t,
		kmsemu.Credential{Cloud: kmsemu.AlibabaInstance, ID: clientKeyID, PublicKey: string(cert)})
	k := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: testInstance, Alias: "alias/kmsfs-test"})
	setEnv(t, s, private(t, clientKey), clientKeyPW)
	return s, k
}

func setEnv(t *testing.T, s *kmsemu.Server, keyFile, password string) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, s.CACertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvClientKeyFile, keyFile)
	t.Setenv(EnvClientKeyPassword, password)
	t.Setenv(EnvCAFile, ca)
}

func uri(s *kmsemu.Server, key string) string {
	return Scheme + "://" + s.TLSAddr() + "/" + key
}

func open(t *testing.T, raw string) *Keyring {
	t.Helper()
	k, err := openErr(raw)
	if err != nil {
		t.Fatalf("Open(%s) error = %v", raw, err)
	}
	return k
}

func openErr(raw string) (*Keyring, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	k, err := Open(context.Background(), u)
	if err != nil {
		return nil, err
	}
	k.policy = fastPolicy
	return k, nil
}

func TestConformance(t *testing.T) {
	s, key := setup(t)
	for name, ref := range map[string]string{"id": key.ID, "alias": "alias/kmsfs-test"} {
		t.Run(name, func(t *testing.T) {
			keyringtest.Run(t, func(t *testing.T) keyring.Keyring {
				return open(t, uri(s, ref))
			}, kmsemutest.Hooks(s, kmsemu.AlibabaInstance, key.ID, "")...)
		})
	}
	if n := s.Count(kmsemu.AlibabaInstance, "AdvanceDecrypt", "ok"); n == 0 {
		t.Error("no AdvanceDecrypt reached the emulator")
	}
}

func TestErrors(t *testing.T) {
	s, key := setup(t)
	encCtx := keyringtest.EncryptionContext(t)
	other := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: testInstance})
	// A client key with the right ID but another RSA key: the instance
	// must refuse its signatures.
	impostor := impostorKeyFile(t)
	for _, tc := range []struct {
		name    string
		uri     string
		setup   func(t *testing.T)
		want    error
		wantMsg string
	}{
		{name: "wrong password", uri: uri(s, key.ID), setup: func(t *testing.T) { t.Setenv(EnvClientKeyPassword, "wrong") }, want: keyring.ErrBadCredentials},
		{name: "another client key", uri: uri(s, key.ID), setup: func(t *testing.T) { t.Setenv(EnvClientKeyFile, impostor) }, want: keyring.ErrBadCredentials, wantMsg: "Unauthorized"},
		{name: "key file open to others", uri: uri(s, key.ID), setup: func(t *testing.T) {
			p := private(t, clientKey)
			os.Chmod(p, 0o644)
			t.Setenv(EnvClientKeyFile, p)
		}, want: keyring.ErrBadCredentials, wantMsg: "chmod 600"},
		{name: "no environment", uri: uri(s, key.ID), setup: func(t *testing.T) { t.Setenv(EnvCAFile, "") }, want: keyring.ErrBadCredentials, wantMsg: EnvCAFile},
		{name: "wrong CA", uri: "wrong-ca", want: keyring.ErrBadCredentials, wantMsg: "x509"},
		{name: "unknown key", uri: uri(s, "key-nope"), want: keyring.ErrKeyNotFound, wantMsg: "Forbidden.KeyNotFound"},
		{name: "disabled", uri: uri(s, other.ID), setup: func(t *testing.T) {
			s.DisableKey(other.ID)
			t.Cleanup(func() { s.EnableKey(other.ID) })
		}, want: keyring.ErrKeyDisabled, wantMsg: "Rejected.Disabled"},
		{name: "unreachable", uri: Scheme + "://127.0.0.1:1/" + key.ID, want: keyring.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, s, private(t, clientKey), clientKeyPW)
			if tc.setup != nil {
				tc.setup(t)
			}
			u := tc.uri
			if u == "wrong-ca" {
				// Another emulator (a port the SDK has no cached
				// connection to), checked against the first one's CA.
				cert, _ := os.ReadFile(clientCert)
				s2 := kmsemutest.StartTLS(t, kmsemu.Credential{Cloud: kmsemu.AlibabaInstance, ID: clientKeyID, PublicKey: string(cert)})
				k2 := kmsemutest.CreateKey(t, s2, kmsemu.KeySpec{Cloud: kmsemu.AlibabaInstance, Region: testInstance})
				u = uri(s2, k2.ID)
			}
			k, err := openErr(u)
			if err == nil {
				_, _, err = k.GenerateDataKey(context.Background(), encCtx)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, Scheme) || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error message %q: want one line naming %s and %q", msg, Scheme, tc.wantMsg)
			}
			if strings.Contains(msg, clientKeyPW) || strings.Contains(msg, "PrivateKeyData") {
				t.Errorf("error message %q shows the client key or its password", msg)
			}
		})
	}
}

// impostorKeyFile returns a client key file with the right key ID and
// password but another RSA key (a fixture made with openssl, like the
// real one; see kmsemu's testdata README).
func impostorKeyFile(t *testing.T) string {
	t.Helper()
	return private(t, filepath.Join(fixtures, "clientKey_KAAP.test.impostor.json"))
}
