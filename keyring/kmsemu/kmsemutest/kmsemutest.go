// Package kmsemutest starts the KMS emulator for tests and turns its
// fault controls into keyringtest hooks. It is imported by tests only.
package kmsemutest

import (
	"testing"

	"github.com/kmsfs/kmsfs/keyring/keyringtest"
	"github.com/kmsfs/kmsfs/keyring/kmsemu"
)

// Start starts an emulator accepting creds and closes it when t ends.
func Start(t testing.TB, creds ...kmsemu.Credential) *kmsemu.Server {
	t.Helper()
	s := kmsemu.New(kmsemu.Config{Credentials: creds})
	if err := s.Start(); err != nil {
		t.Fatalf("kmsemu.Start() error = %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// StartTLS starts an emulator accepting creds that also serves TLS (the
// KMS instance protocol's transport; see Server.TLSAddr and
// Server.CACertPEM), and closes it when t ends.
func StartTLS(t testing.TB, creds ...kmsemu.Credential) *kmsemu.Server {
	t.Helper()
	s := kmsemu.New(kmsemu.Config{Addr: "127.0.0.1:0", TLSAddr: "127.0.0.1:0", Credentials: creds})
	if err := s.Start(); err != nil {
		t.Fatalf("kmsemu.Start() with TLS error = %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// CreateKey creates a key or fails the test.
func CreateKey(t testing.TB, s *kmsemu.Server, spec kmsemu.KeySpec) kmsemu.Key {
	t.Helper()
	k, err := s.CreateKey(spec)
	if err != nil {
		t.Fatalf("CreateKey(%+v) error = %v", spec, err)
	}
	return k
}

// Hooks returns the conformance suite's disable, throttle-once and outage
// hooks for one key of one cloud. The outage drops connections (an
// unreachable endpoint); outage selects another mode if not empty.
func Hooks(s *kmsemu.Server, c kmsemu.Cloud, keyID string, outage kmsemu.Outage) []keyringtest.Option {
	if outage == "" {
		outage = kmsemu.OutageDrop
	}
	return []keyringtest.Option{
		keyringtest.WithDisable(func(t *testing.T) {
			if err := s.DisableKey(keyID); err != nil {
				t.Fatalf("DisableKey(%s) error = %v", keyID, err)
			}
			t.Cleanup(func() { _ = s.EnableKey(keyID) })
		}),
		keyringtest.WithThrottleOnce(func(t *testing.T) {
			s.AddFault(kmsemu.Fault{Cloud: c, Throttle: 1})
		}),
		keyringtest.WithOutage(func(t *testing.T, on bool) {
			if on {
				s.AddFault(kmsemu.Fault{Cloud: c, Outage: outage})
			} else {
				s.ClearFaults()
			}
		}),
	}
}
