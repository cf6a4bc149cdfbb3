package alibaba

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kmsfs/kmsfs/keyring"
	"github.com/kmsfs/kmsfs/keyring/cloud"
	"github.com/kmsfs/kmsfs/keyring/keyringtest"
	"github.com/kmsfs/kmsfs/keyring/kmsemu"
	"github.com/kmsfs/kmsfs/keyring/kmsemu/kmsemutest"
)

const (
	testAK     = "LTAI5tEmulatorTestKey01"
	testSecret = "emulator-secret-0123456789abcdef"
	testRegion = "cn-hangzhou"
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

// setup starts an emulator with one key and points the SDK's credential
// chain (environment) at its access key.
func setup(t *testing.T) (*kmsemu.Server, kmsemu.Key) {
	t.Helper()
	s := kmsemutest.Start(t,
		kmsemu.Credential{Cloud: kmsemu.Alibaba, ID: testAK, Secret: testSecret},
		kmsemu.Credential{Cloud: kmsemu.Alibaba, ID: "LTAI5tDenied", Secret: testSecret, Denied: true})
	k := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.Alibaba, Region: testRegion, Alias: "alias/kmsfs-test"})
	setEnv(t, testAK, testSecret)
	return s, k
}

func setEnv(t *testing.T, id, secret string) {
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", id)
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret)
	t.Setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "")
	t.Setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
	t.Setenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")
	t.Setenv("HOME", t.TempDir())
}

func uri(s *kmsemu.Server, region, key string) string {
	return Scheme + "://" + region + "/" + key + "?endpoint=" + url.QueryEscape(s.URL())
}

func open(t *testing.T, raw string) *Keyring {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	k, err := Open(context.Background(), u)
	if err != nil {
		t.Fatalf("Open(%s) error = %v", raw, err)
	}
	k.policy = fastPolicy
	return k
}

func TestConformance(t *testing.T) {
	s, key := setup(t)
	for name, ref := range map[string]string{"id": key.ID, "alias": "alias/kmsfs-test"} {
		t.Run(name, func(t *testing.T) {
			keyringtest.Run(t, func(t *testing.T) keyring.Keyring {
				return open(t, uri(s, testRegion, ref))
			}, kmsemutest.Hooks(s, kmsemu.Alibaba, key.ID, "")...)
		})
	}
}

func TestOutageModes(t *testing.T) {
	s, key := setup(t)
	for _, mode := range []kmsemu.Outage{kmsemu.OutageError, kmsemu.OutageHang} {
		t.Run(string(mode), func(t *testing.T) {
			keyringtest.Run(t, func(t *testing.T) keyring.Keyring {
				return open(t, uri(s, testRegion, key.ID))
			}, append(kmsemutest.Hooks(s, kmsemu.Alibaba, key.ID, mode), keyringtest.WithOutageBound(6*time.Second))...)
		})
	}
}

func TestErrors(t *testing.T) {
	s, key := setup(t)
	encCtx := keyringtest.EncryptionContext(t)
	other := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.Alibaba, Region: testRegion})
	for _, tc := range []struct {
		name    string
		uri     string
		id, sec string
		setup   func()
		want    error
		wantMsg string
	}{
		{name: "wrong secret", uri: uri(s, testRegion, key.ID), id: testAK, sec: "wrong", want: keyring.ErrBadCredentials, wantMsg: "SignatureDoesNotMatch"},
		{name: "unknown access key", uri: uri(s, testRegion, key.ID), id: "LTAI5tNobody", sec: testSecret, want: keyring.ErrBadCredentials, wantMsg: "InvalidAccessKeyId.NotFound"},
		{name: "denied", uri: uri(s, testRegion, key.ID), id: "LTAI5tDenied", sec: testSecret, want: keyring.ErrAccessDenied, wantMsg: "Forbidden.NoPermission"},
		{name: "unknown key", uri: uri(s, testRegion, "0b1c2d3e-0000-4000-8000-000000000000"), want: keyring.ErrKeyNotFound, wantMsg: "Forbidden.KeyNotFound"},
		{name: "unknown alias", uri: uri(s, testRegion, "alias/nope"), want: keyring.ErrKeyNotFound, wantMsg: "Forbidden.AliasNotFound"},
		{name: "other region", uri: uri(s, "cn-shanghai", key.ID), want: keyring.ErrKeyNotFound},
		{name: "pending deletion", uri: uri(s, testRegion, other.ID), setup: func() { _ = s.ScheduleKeyDeletion(other.ID) }, want: keyring.ErrKeyDisabled, wantMsg: "Rejected.PendingDeletion"},
		{name: "unreachable", uri: Scheme + "://" + testRegion + "/" + key.ID + "?endpoint=http://127.0.0.1:1", want: keyring.ErrUnavailable, wantMsg: "unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, sec := testAK, testSecret
			if tc.id != "" {
				id, sec = tc.id, tc.sec
			}
			setEnv(t, id, sec)
			if tc.setup != nil {
				tc.setup()
			}
			k := open(t, tc.uri)
			_, _, err := k.GenerateDataKey(context.Background(), encCtx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("GenerateDataKey() error = %v, want %v", err, tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, "alibaba-kms") || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error message %q: want one line naming alibaba-kms and %q", msg, tc.wantMsg)
			}
			if keyring.IsPermanent(err) == (tc.want == keyring.ErrUnavailable) {
				t.Errorf("IsPermanent(%v) = %v", err, keyring.IsPermanent(err))
			}
		})
	}
}

func TestThrottleExhausted(t *testing.T) {
	s, key := setup(t)
	k := open(t, uri(s, testRegion, key.ID))
	s.AddFault(kmsemu.Fault{Cloud: kmsemu.Alibaba, Throttle: 100})
	_, _, err := k.GenerateDataKey(context.Background(), keyringtest.EncryptionContext(t))
	if !errors.Is(err, keyring.ErrThrottled) || keyring.IsPermanent(err) {
		t.Fatalf("GenerateDataKey() under constant throttling error = %v, want transient keyring.ErrThrottled", err)
	}
	if got := s.Count(kmsemu.Alibaba, "GenerateDataKey", "throttled"); got != fastPolicy.MaxAttempts {
		t.Errorf("requests made = %d, want %d (MaxAttempts)", got, fastPolicy.MaxAttempts)
	}
}

func TestNonCanonicalContext(t *testing.T) {
	s, key := setup(t)
	k := open(t, uri(s, testRegion, key.ID))
	encCtx := []byte(`{"kmsfs":"v1","volume":"00112233445566778899aabbccddeeff"}`)
	dk, wrapped, err := k.GenerateDataKey(context.Background(), encCtx)
	if err != nil {
		t.Fatal(err)
	}
	dk.Destroy()
	// The same map spelled differently must not unwrap: the service would
	// accept it, the keyring must not.
	for _, c := range []string{
		`{"volume":"00112233445566778899aabbccddeeff","kmsfs":"v1"}`,
		`{"kmsfs": "v1","volume":"00112233445566778899aabbccddeeff"}`,
		`{"kmsfs":"\u00761","volume":"00112233445566778899aabbccddeeff"}`,
	} {
		if k2, err := k.Unwrap(context.Background(), wrapped, []byte(c)); !errors.Is(err, keyring.ErrUnwrap) {
			k2.Destroy()
			t.Errorf("Unwrap(context %s) error = %v, want keyring.ErrUnwrap", c, err)
		}
	}
}

func TestBadURI(t *testing.T) {
	setEnv(t, testAK, testSecret)
	for _, raw := range []string{
		"alibaba-kms:///key",
		"alibaba-kms://cn-hangzhou/",
		"alibaba-kms://cn-hangzhou/a/b/c",
		"alibaba-kms://cn-hangzhou/key?endpoint=http://kms.example.com",
		"alibaba-kms://cn-hangzhou/key?endpoint=ftp://127.0.0.1",
		"alibaba-kms://cn-hangzhou/key?timeout=3",
		"alibaba-kms://cn-hangzhou/other/x",
		"alibaba-kms://ak:sk@cn-hangzhou/key",
	} {
		u, _ := url.Parse(raw)
		if _, err := Open(context.Background(), u); !errors.Is(err, keyring.ErrBadURI) {
			t.Errorf("Open(%s) error = %v, want keyring.ErrBadURI", raw, err)
		}
	}
}
