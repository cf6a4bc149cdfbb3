package tencent

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
	testID     = "AKIDEmulatorTestSecretId01"
	testSecret = "emulator-secret-key-0123456789"
	testRegion = "ap-guangzhou"
)

var fastPolicy = cloud.Policy{
	AttemptTimeout: 2 * time.Second,
	Budget:         4 * time.Second,
	MaxAttempts:    4,
	BaseDelay:      20 * time.Millisecond,
	ThrottleDelay:  20 * time.Millisecond,
	MaxDelay:       200 * time.Millisecond,
}

func setup(t *testing.T) (*kmsemu.Server, kmsemu.Key) {
	t.Helper()
	s := kmsemutest.Start(t,
		kmsemu.Credential{Cloud: kmsemu.Tencent, ID: testID, Secret: testSecret},
		kmsemu.Credential{Cloud: kmsemu.Tencent, ID: "AKIDDenied", Secret: testSecret, Denied: true})
	k := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: testRegion})
	setEnv(t, testID, testSecret)
	return s, k
}

func setEnv(t *testing.T, id, secret string) {
	t.Setenv("TENCENTCLOUD_SECRET_ID", id)
	t.Setenv("TENCENTCLOUD_SECRET_KEY", secret)
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
	keyringtest.Run(t, func(t *testing.T) keyring.Keyring {
		return open(t, uri(s, testRegion, key.ID))
	}, kmsemutest.Hooks(s, kmsemu.Tencent, key.ID, "")...)
}

func TestOutageModes(t *testing.T) {
	s, key := setup(t)
	for _, mode := range []kmsemu.Outage{kmsemu.OutageError, kmsemu.OutageHang} {
		t.Run(string(mode), func(t *testing.T) {
			keyringtest.Run(t, func(t *testing.T) keyring.Keyring {
				return open(t, uri(s, testRegion, key.ID))
			}, append(kmsemutest.Hooks(s, kmsemu.Tencent, key.ID, mode), keyringtest.WithOutageBound(6*time.Second))...)
		})
	}
}

func TestErrors(t *testing.T) {
	s, key := setup(t)
	encCtx := keyringtest.EncryptionContext(t)
	other := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.Tencent, Region: testRegion})
	for _, tc := range []struct {
		name    string
		uri     string
		id, sec string
		setup   func()
		want    error
		wantMsg string
	}{
		{name: "wrong secret", uri: uri(s, testRegion, key.ID), id: testID, sec: "wrong", want: keyring.ErrBadCredentials, wantMsg: "AuthFailure.SignatureFailure"},
		{name: "unknown secret id", uri: uri(s, testRegion, key.ID), id: "AKIDNobody", sec: testSecret, want: keyring.ErrBadCredentials, wantMsg: "AuthFailure.SecretIdNotFound"},
		{name: "denied", uri: uri(s, testRegion, key.ID), id: "AKIDDenied", sec: testSecret, want: keyring.ErrAccessDenied, wantMsg: "UnauthorizedOperation"},
		{name: "unknown key", uri: uri(s, testRegion, "0b1c2d3e-0000-4000-8000-000000000000"), want: keyring.ErrKeyNotFound, wantMsg: "ResourceUnavailable.CmkNotFound"},
		{name: "other region", uri: uri(s, "ap-shanghai", key.ID), want: keyring.ErrKeyNotFound},
		{name: "pending deletion", uri: uri(s, testRegion, other.ID), setup: func() { _ = s.ScheduleKeyDeletion(other.ID) }, want: keyring.ErrKeyDisabled, wantMsg: "ResourceUnavailable.KeyPendingDelete"},
		{name: "unreachable", uri: Scheme + "://" + testRegion + "/" + key.ID + "?endpoint=http://127.0.0.1:1", want: keyring.ErrUnavailable, wantMsg: "unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, sec := testID, testSecret
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
			if !strings.Contains(msg, Scheme) || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error message %q: want one line naming %s and %q", msg, Scheme, tc.wantMsg)
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
	s.AddFault(kmsemu.Fault{Cloud: kmsemu.Tencent, Throttle: 100})
	_, _, err := k.GenerateDataKey(context.Background(), keyringtest.EncryptionContext(t))
	if !errors.Is(err, keyring.ErrThrottled) || keyring.IsPermanent(err) {
		t.Fatalf("GenerateDataKey() under constant throttling error = %v, want transient keyring.ErrThrottled", err)
	}
	if got := s.Count(kmsemu.Tencent, "GenerateDataKey", "throttled"); got != fastPolicy.MaxAttempts {
		t.Errorf("requests made = %d, want %d (MaxAttempts)", got, fastPolicy.MaxAttempts)
	}
}

func TestBadURI(t *testing.T) {
	setEnv(t, testID, testSecret)
	for _, raw := range []string{
		"tencent-kms:///key",
		"tencent-kms://ap-guangzhou/",
		"tencent-kms://ap-guangzhou/alias/x",
		"tencent-kms://ap-guangzhou/key?endpoint=http://kms.example.com",
		"tencent-kms://ap-guangzhou/key?region=x",
	} {
		u, _ := url.Parse(raw)
		if _, err := Open(context.Background(), u); !errors.Is(err, keyring.ErrBadURI) {
			t.Errorf("Open(%s) error = %v, want keyring.ErrBadURI", raw, err)
		}
	}
}
