package huawei

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
	testAK      = "HPUAEMULATORTESTAK01"
	testSK      = "emulator-sk-0123456789abcdef0123456789"
	testRegion  = "cn-north-4"
	testProject = "0123456789abcdef0123456789abcdef"
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
		kmsemu.Credential{Cloud: kmsemu.Huawei, ID: testAK, Secret: testSK},
		kmsemu.Credential{Cloud: kmsemu.Huawei, ID: "HPUADENIED", Secret: testSK, Denied: true})
	k := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.Huawei, Region: testRegion, Project: testProject})
	setEnv(t, testAK, testSK)
	return s, k
}

func setEnv(t *testing.T, ak, sk string) {
	t.Setenv("HUAWEICLOUD_SDK_AK", ak)
	t.Setenv("HUAWEICLOUD_SDK_SK", sk)
	t.Setenv("HUAWEICLOUD_SDK_PROJECT_ID", "")
	t.Setenv("HUAWEICLOUD_SDK_SECURITY_TOKEN", "")
	t.Setenv("HOME", t.TempDir())
}

func uri(s *kmsemu.Server, project, key string) string {
	return Scheme + "://" + testRegion + "/" + key + "?project=" + project + "&endpoint=" + url.QueryEscape(s.URL())
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
		return open(t, uri(s, testProject, key.ID))
	}, kmsemutest.Hooks(s, kmsemu.Huawei, key.ID, "")...)
}

func TestOutageModes(t *testing.T) {
	s, key := setup(t)
	for _, mode := range []kmsemu.Outage{kmsemu.OutageError, kmsemu.OutageHang} {
		t.Run(string(mode), func(t *testing.T) {
			keyringtest.Run(t, func(t *testing.T) keyring.Keyring {
				return open(t, uri(s, testProject, key.ID))
			}, append(kmsemutest.Hooks(s, kmsemu.Huawei, key.ID, mode), keyringtest.WithOutageBound(6*time.Second))...)
		})
	}
}

func TestProjectFromEnvironment(t *testing.T) {
	s, key := setup(t)
	t.Setenv("HUAWEICLOUD_SDK_PROJECT_ID", testProject)
	k := open(t, Scheme+"://"+testRegion+"/"+key.ID+"?endpoint="+url.QueryEscape(s.URL()))
	dk, _, err := k.GenerateDataKey(context.Background(), keyringtest.EncryptionContext(t))
	if err != nil {
		t.Fatalf("GenerateDataKey() error = %v", err)
	}
	dk.Destroy()
}

func TestErrors(t *testing.T) {
	s, key := setup(t)
	encCtx := keyringtest.EncryptionContext(t)
	other := kmsemutest.CreateKey(t, s, kmsemu.KeySpec{Cloud: kmsemu.Huawei, Region: testRegion, Project: testProject})
	for _, tc := range []struct {
		name    string
		uri     string
		id, sec string
		setup   func()
		want    error
		wantMsg string
	}{
		{name: "wrong secret", uri: uri(s, testProject, key.ID), id: testAK, sec: "wrong", want: keyring.ErrBadCredentials, wantMsg: "APIGW.0301"},
		{name: "unknown access key", uri: uri(s, testProject, key.ID), id: "HPUANOBODY", sec: testSK, want: keyring.ErrBadCredentials, wantMsg: "APIGW.0301"},
		{name: "denied", uri: uri(s, testProject, key.ID), id: "HPUADENIED", sec: testSK, want: keyring.ErrAccessDenied, wantMsg: "KMS.0307"},
		{name: "unknown key", uri: uri(s, testProject, "0b1c2d3e-0000-4000-8000-000000000000"), want: keyring.ErrKeyNotFound, wantMsg: "KMS.0207"},
		{name: "other project", uri: uri(s, "fedcba9876543210fedcba9876543210", key.ID), want: keyring.ErrKeyNotFound},
		{name: "pending deletion", uri: uri(s, testProject, other.ID), setup: func() { _ = s.ScheduleKeyDeletion(other.ID) }, want: keyring.ErrKeyDisabled, wantMsg: "KMS.0210"},
		{name: "unreachable", uri: Scheme + "://" + testRegion + "/" + key.ID + "?project=" + testProject + "&endpoint=http://127.0.0.1:1", want: keyring.ErrUnavailable, wantMsg: "unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, sec := testAK, testSK
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
	k := open(t, uri(s, testProject, key.ID))
	s.AddFault(kmsemu.Fault{Cloud: kmsemu.Huawei, Throttle: 100})
	_, _, err := k.GenerateDataKey(context.Background(), keyringtest.EncryptionContext(t))
	if !errors.Is(err, keyring.ErrThrottled) || keyring.IsPermanent(err) {
		t.Fatalf("GenerateDataKey() under constant throttling error = %v, want transient keyring.ErrThrottled", err)
	}
	if got := s.Count(kmsemu.Huawei, "create-datakey", "throttled"); got != fastPolicy.MaxAttempts {
		t.Errorf("requests made = %d, want %d (MaxAttempts)", got, fastPolicy.MaxAttempts)
	}
}

func TestBadURI(t *testing.T) {
	setEnv(t, testAK, testSK)
	for _, raw := range []string{
		"huawei-kms:///0b1c2d3e-0000-4000-8000-000000000000?project=p",
		"huawei-kms://cn-north-4/not-a-uuid?project=p",
		"huawei-kms://cn-north-4/0b1c2d3e-0000-4000-8000-000000000000",
		"huawei-kms://cn-north-4/0b1c2d3e-0000-4000-8000-000000000000?project=p&endpoint=http://kms.example.com",
		"huawei-kms://cn-north-4/0b1c2d3e-0000-4000-8000-000000000000?project=p&ak=x",
	} {
		u, _ := url.Parse(raw)
		if _, err := Open(context.Background(), u); !errors.Is(err, keyring.ErrBadURI) {
			t.Errorf("Open(%s) error = %v, want keyring.ErrBadURI", raw, err)
		}
	}
}
