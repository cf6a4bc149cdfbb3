package kmsemu

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	aliID, aliSecret = "LTAI5tTest", "ali-secret"
	tcID, tcSecret   = "AKIDTest", "tc-secret"
	hwAK, hwSK       = "HWAKTEST", "hw-secret"
	project          = "0123456789abcdef0123456789abcdef"
)

func start(t *testing.T) *Server {
	t.Helper()
	s := New(Config{Credentials: []Credential{
		{Cloud: Alibaba, ID: aliID, Secret: aliSecret},
		{Cloud: Tencent, ID: tcID, Secret: tcSecret},
		{Cloud: Huawei, ID: hwAK, Secret: hwSK},
	}})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// aliRequest signs an Alibaba RPC request; mutate runs after signing.
func aliRequest(t *testing.T, s *Server, secret string, at time.Time, nonce string, params map[string]string, mutate func(url.Values)) (int, map[string]any) {
	t.Helper()
	q := url.Values{}
	for k, v := range map[string]string{
		"Format": "JSON", "Version": "2016-01-20", "AccessKeyId": aliID, "SignatureMethod": "HMAC-SHA1",
		"SignatureVersion": "1.0", "SignatureNonce": nonce, "Timestamp": at.UTC().Format("2006-01-02T15:04:05Z"),
		"RegionId": "cn-hangzhou",
	} {
		q.Set(k, v)
	}
	for k, v := range params {
		q.Set(k, v)
	}
	q.Set("Signature", aliSign(aliStringToSign("POST", q), secret))
	if mutate != nil {
		mutate(q)
	}
	resp, err := http.Post(s.URL()+"/?"+q.Encode(), "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, resp)
}

func decode(t *testing.T, resp *http.Response) (int, map[string]any) {
	t.Helper()
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("response %q: %v", b, err)
	}
	return resp.StatusCode, m
}

func nonce() string { return newUUID() }

func TestAlibabaSignature(t *testing.T) {
	s := start(t)
	key, err := s.CreateKey(KeySpec{Cloud: Alibaba, Region: "cn-hangzhou"})
	if err != nil {
		t.Fatal(err)
	}
	gdk := map[string]string{"Action": "GenerateDataKey", "KeyId": key.ID, "EncryptionContext": `{"a":"b"}`}
	now := time.Now()

	status, m := aliRequest(t, s, aliSecret, now, nonce(), gdk, nil)
	if status != 200 || m["CiphertextBlob"] == nil {
		t.Fatalf("valid request = %d %v, want 200 with CiphertextBlob", status, m)
	}
	blob := m["CiphertextBlob"].(string)
	plain := m["Plaintext"].(string)

	for _, tc := range []struct {
		name     string
		secret   string
		at       time.Time
		mutate   func(url.Values)
		wantCode string
	}{
		{"wrong secret", "not-the-secret", now, nil, "SignatureDoesNotMatch"},
		{"tampered parameter", aliSecret, now, func(q url.Values) { q.Set("KeyId", "alias/other") }, "SignatureDoesNotMatch"},
		{"tampered signature", aliSecret, now, func(q url.Values) {
			sig := []byte(q.Get("Signature"))
			sig[3] ^= 1
			q.Set("Signature", string(sig))
		}, "SignatureDoesNotMatch"},
		{"unknown access key", aliSecret, now, func(q url.Values) { q.Set("AccessKeyId", "LTAI5tNobody") }, "InvalidAccessKeyId.NotFound"},
		{"stale timestamp", aliSecret, now.Add(-20 * time.Minute), nil, "InvalidTimeStamp.Expired"},
		{"future timestamp", aliSecret, now.Add(20 * time.Minute), nil, "InvalidTimeStamp.Expired"},
		{"no signature", aliSecret, now, func(q url.Values) { q.Del("Signature") }, "IncompleteSignature"},
		{"other method", aliSecret, now, func(q url.Values) { q.Set("SignatureMethod", "HMAC-SHA256") }, "IncompleteSignature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := aliRequest(t, s, tc.secret, tc.at, nonce(), gdk, tc.mutate)
			if status < 400 || m["Code"] != tc.wantCode {
				t.Errorf("request = %d %v, want Code %s", status, m, tc.wantCode)
			}
		})
	}

	t.Run("nonce replay", func(t *testing.T) {
		n := nonce()
		if status, m := aliRequest(t, s, aliSecret, now, n, gdk, nil); status != 200 {
			t.Fatalf("first request = %d %v", status, m)
		}
		if _, m := aliRequest(t, s, aliSecret, now, n, gdk, nil); m["Code"] != "SignatureNonceUsed" {
			t.Errorf("replayed request = %v, want SignatureNonceUsed", m)
		}
	})

	t.Run("decrypt", func(t *testing.T) {
		dec := map[string]string{"Action": "Decrypt", "CiphertextBlob": blob, "EncryptionContext": `{"a":"b"}`}
		status, m := aliRequest(t, s, aliSecret, now, nonce(), dec, nil)
		if status != 200 || m["Plaintext"] != plain || m["KeyId"] != key.ID {
			t.Fatalf("Decrypt = %d %v, want Plaintext %s KeyId %s", status, m, plain, key.ID)
		}
		dec["EncryptionContext"] = `{"a":"c"}`
		if status, m := aliRequest(t, s, aliSecret, now, nonce(), dec, nil); status != 400 || m["Code"] != "InvalidParameter" {
			t.Errorf("Decrypt with other context = %d %v, want InvalidParameter", status, m)
		}
		dec["EncryptionContext"] = ""
		if status, m := aliRequest(t, s, aliSecret, now, nonce(), dec, nil); status != 400 {
			t.Errorf("Decrypt without context = %d %v, want 400", status, m)
		}
	})

	t.Run("key states", func(t *testing.T) {
		for _, tc := range []struct {
			state KeyState
			code  string
		}{{Disabled, "Rejected.Disabled"}, {PendingDeletion, "Rejected.PendingDeletion"}} {
			if err := s.SetKeyState(key.ID, tc.state); err != nil {
				t.Fatal(err)
			}
			if status, m := aliRequest(t, s, aliSecret, now, nonce(), gdk, nil); status != 409 || m["Code"] != tc.code {
				t.Errorf("GenerateDataKey on %s key = %d %v, want 409 %s", tc.state, status, m, tc.code)
			}
		}
		if err := s.EnableKey(key.ID); err != nil {
			t.Fatal(err)
		}
	})
}

// tcRequest signs a Tencent TC3 request; mutate runs on the signed request.
func tcRequest(t *testing.T, s *Server, secret string, at time.Time, action string, body map[string]any, mutate func(*http.Request)) map[string]any {
	t.Helper()
	payload, _ := json.Marshal(body)
	host := s.Addr()
	ts := strconv.FormatInt(at.Unix(), 10)
	date := at.UTC().Format("2006-01-02")
	canonical := "POST\n/\n\ncontent-type:application/json\nhost:" + host + "\n\ncontent-type;host\n" + sha256Hex(payload)
	scope := date + "/kms/tc3_request"
	sts := "TC3-HMAC-SHA256\n" + ts + "\n" + scope + "\n" + sha256Hex([]byte(canonical))
	k := hmacSHA256(hmacSHA256(hmacSHA256([]byte("TC3"+secret), date), "kms"), "tc3_request")
	sig := hex.EncodeToString(hmacSHA256(k, sts))
	req, _ := http.NewRequest("POST", s.URL()+"/", bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-TC-Action", action)
	req.Header.Set("X-TC-Version", "2019-01-18")
	req.Header.Set("X-TC-Timestamp", ts)
	req.Header.Set("X-TC-Region", "ap-guangzhou")
	req.Header.Set("Authorization", "TC3-HMAC-SHA256 Credential="+tcID+"/"+scope+", SignedHeaders=content-type;host, Signature="+sig)
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	status, m := decode(t, resp)
	if status != 200 {
		t.Fatalf("Tencent answered HTTP %d, want 200 always", status)
	}
	return m["Response"].(map[string]any)
}

func tcCode(r map[string]any) string {
	if e, ok := r["Error"].(map[string]any); ok {
		return e["Code"].(string)
	}
	return ""
}

func TestTencentSignature(t *testing.T) {
	s := start(t)
	key, err := s.CreateKey(KeySpec{Cloud: Tencent, Region: "ap-guangzhou"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	gdk := map[string]any{"KeyId": key.ID, "NumberOfBytes": 32, "EncryptionContext": `{"a":"b"}`}
	r := tcRequest(t, s, tcSecret, now, "GenerateDataKey", gdk, nil)
	if tcCode(r) != "" || r["CiphertextBlob"] == nil {
		t.Fatalf("valid request = %v", r)
	}
	for _, tc := range []struct {
		name   string
		secret string
		at     time.Time
		mutate func(*http.Request)
		want   string
	}{
		{"wrong secret", "nope", now, nil, "AuthFailure.SignatureFailure"},
		{"tampered body", tcSecret, now, func(r *http.Request) {
			b, _ := json.Marshal(map[string]any{"KeyId": "other", "NumberOfBytes": 32})
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
		}, "AuthFailure.SignatureFailure"},
		{"tampered signature", tcSecret, now, func(r *http.Request) {
			a := r.Header.Get("Authorization")
			last := a[len(a)-1]
			repl := byte('0')
			if last == '0' {
				repl = '1'
			}
			r.Header.Set("Authorization", a[:len(a)-1]+string(repl))
		}, "AuthFailure.SignatureFailure"},
		{"unknown secret id", tcSecret, now, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), tcID, "AKIDNobody", 1))
		}, "AuthFailure.SecretIdNotFound"},
		{"stale timestamp", tcSecret, now.Add(-10 * time.Minute), nil, "AuthFailure.SignatureExpire"},
		{"no authorization", tcSecret, now, func(r *http.Request) { r.Header.Del("Authorization") }, "AuthFailure.InvalidAuthorization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Without Authorization the request is still routed to the
			// Tencent protocol by its X-TC-Action header.
			if got := tcCode(tcRequest(t, s, tc.secret, tc.at, "GenerateDataKey", gdk, tc.mutate)); got != tc.want {
				t.Errorf("code = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("decrypt", func(t *testing.T) {
		dec := map[string]any{"CiphertextBlob": r["CiphertextBlob"], "EncryptionContext": `{"a":"b"}`}
		d := tcRequest(t, s, tcSecret, now, "Decrypt", dec, nil)
		if d["Plaintext"] != r["Plaintext"] {
			t.Fatalf("Decrypt = %v, want Plaintext %v", d, r["Plaintext"])
		}
		dec["EncryptionContext"] = `{"a":"x"}`
		if got := tcCode(tcRequest(t, s, tcSecret, now, "Decrypt", dec, nil)); got != "FailedOperation.DecryptError" {
			t.Errorf("Decrypt with other context code = %q", got)
		}
	})
	t.Run("throttle", func(t *testing.T) {
		s.AddFault(Fault{Cloud: Tencent, Throttle: 1})
		if got := tcCode(tcRequest(t, s, tcSecret, now, "GenerateDataKey", gdk, nil)); got != "RequestLimitExceeded" {
			t.Errorf("code = %q, want RequestLimitExceeded", got)
		}
		if got := tcCode(tcRequest(t, s, tcSecret, now, "GenerateDataKey", gdk, nil)); got != "" {
			t.Errorf("after one throttle code = %q, want success", got)
		}
	})
}

// hwRequest signs a Huawei SDK-HMAC-SHA256 request.
func hwRequest(t *testing.T, s *Server, secret string, at time.Time, action string, body map[string]any, mutate func(*http.Request)) (int, map[string]any) {
	t.Helper()
	payload, _ := json.Marshal(body)
	path := "/v1.0/" + project + "/kms/" + action
	date := at.UTC().Format("20060102T150405Z")
	headers := map[string]string{"host": s.Addr(), "x-sdk-date": date, "x-project-id": project}
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	sort.Strings(names)
	var ch strings.Builder
	for _, n := range names {
		ch.WriteString(n + ":" + headers[n] + "\n")
	}
	signed := strings.Join(names, ";")
	canonical := "POST\n" + path + "/\n\n" + ch.String() + "\n" + signed + "\n" + sha256Hex(payload)
	sts := "SDK-HMAC-SHA256\n" + date + "\n" + sha256Hex([]byte(canonical))
	sig := hex.EncodeToString(hmacSHA256([]byte(secret), sts))
	req, _ := http.NewRequest("POST", s.URL()+path, bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("X-Sdk-Date", date)
	req.Header.Set("X-Project-Id", project)
	req.Header.Set("Authorization", "SDK-HMAC-SHA256 Access="+hwAK+", SignedHeaders="+signed+", Signature="+sig)
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, resp)
}

func hwCode(m map[string]any) string {
	if e, ok := m["error"].(map[string]any); ok {
		return e["error_code"].(string)
	}
	return ""
}

func TestHuaweiSignature(t *testing.T) {
	s := start(t)
	key, err := s.CreateKey(KeySpec{Cloud: Huawei, Region: "cn-north-4", Project: project})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	aad := `{"a":"b"}`
	create := map[string]any{"key_id": key.ID, "datakey_length": "256", "additional_authenticated_data": aad}
	status, m := hwRequest(t, s, hwSK, now, "create-datakey", create, nil)
	if status != 200 || m["cipher_text"] == nil {
		t.Fatalf("valid request = %d %v", status, m)
	}
	for _, tc := range []struct {
		name   string
		secret string
		at     time.Time
		mutate func(*http.Request)
	}{
		{"wrong secret", "nope", now, nil},
		{"tampered body", hwSK, now, func(r *http.Request) {
			b, _ := json.Marshal(map[string]any{"key_id": key.ID, "datakey_length": "128"})
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
		}},
		{"tampered date", hwSK, now, func(r *http.Request) {
			r.Header.Set("X-Sdk-Date", now.Add(time.Second).UTC().Format("20060102T150405Z"))
		}},
		{"unknown ak", hwSK, now, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), hwAK, "NOBODY", 1))
		}},
		{"stale date", hwSK, now.Add(-20 * time.Minute), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := hwRequest(t, s, tc.secret, tc.at, "create-datakey", create, tc.mutate)
			if status != 401 || hwCode(m) != "APIGW.0301" {
				t.Errorf("request = %d %v, want 401 APIGW.0301", status, m)
			}
		})
	}
	t.Run("decrypt", func(t *testing.T) {
		dec := map[string]any{"key_id": key.ID, "cipher_text": m["cipher_text"], "datakey_cipher_length": "32", "additional_authenticated_data": aad}
		status, d := hwRequest(t, s, hwSK, now, "decrypt-datakey", dec, nil)
		if status != 200 || d["data_key"] != m["plain_text"] {
			t.Fatalf("decrypt-datakey = %d %v, want data_key %v", status, d, m["plain_text"])
		}
		dec["additional_authenticated_data"] = "other"
		if status, d := hwRequest(t, s, hwSK, now, "decrypt-datakey", dec, nil); status != 400 || hwCode(d) != "KMS.2201" {
			t.Errorf("decrypt-datakey with other AAD = %d %v, want 400 KMS.2201", status, d)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		_ = s.DisableKey(key.ID)
		defer s.EnableKey(key.ID)
		if status, d := hwRequest(t, s, hwSK, now, "create-datakey", create, nil); status != 400 || hwCode(d) != "KMS.0209" {
			t.Errorf("create-datakey on disabled key = %d %v, want 400 KMS.0209", status, d)
		}
	})
}

func TestAdminAPIAndState(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "state.json")
	s := New(Config{StateFile: stateFile})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	post := func(path, body string) (int, []byte) {
		resp, err := http.Post(s.URL()+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := post("/_emulator/credentials", `{"cloud":"alibaba","id":"LTAI5tAdmin","secret":"s"}`); code != 200 {
		t.Fatalf("POST credentials = %d %s", code, b)
	}
	code, b := post("/_emulator/keys", `{"cloud":"alibaba","region":"cn-hangzhou","alias":"alias/admin"}`)
	if code != 200 {
		t.Fatalf("POST keys = %d %s", code, b)
	}
	var k Key
	if err := json.Unmarshal(b, &k); err != nil || k.ID == "" {
		t.Fatalf("POST keys answer %s: %v", b, err)
	}
	if code, b := post("/_emulator/keys/"+k.ID+"/state", `{"state":"Disabled"}`); code != 200 {
		t.Fatalf("POST state = %d %s", code, b)
	}
	if code, b := post("/_emulator/faults", `{"cloud":"tencent","latency":"10ms","throttle":2}`); code != 200 {
		t.Fatalf("POST faults = %d %s", code, b)
	}
	if f := s.Faults(); len(f) != 1 || f[0].Throttle != 2 || time.Duration(f[0].Latency) != 10*time.Millisecond {
		t.Errorf("Faults() = %+v", f)
	}
	if code, _ := post("/_emulator/keys", `{"cloud":"nowhere","region":"x"}`); code != 400 {
		t.Errorf("POST keys for unknown cloud = %d, want 400", code)
	}
	resp, err := http.Post(s.URL()+"/_emulator/faults", "text/plain", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("admin write without JSON content type = %d, want 415", resp.StatusCode)
	}
	_ = s.Close()

	// A new emulator on the same state file knows the key, its state,
	// alias and secret, and the credential.
	s2 := New(Config{StateFile: stateFile})
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	keys := s2.Keys()
	if len(keys) != 1 || keys[0].ID != k.ID || keys[0].State != Disabled || len(keys[0].Aliases) != 1 {
		t.Fatalf("Keys() after reload = %+v", keys)
	}
	if _, ok := s2.credential(Alibaba, "LTAI5tAdmin"); !ok {
		t.Errorf("credential lost across reload")
	}
	c1, _ := s.store.resolve(Alibaba, "cn-hangzhou", "", k.ID)
	c2, _ := s2.store.resolve(Alibaba, "cn-hangzhou", "", "alias/admin")
	blob := c1.seal([]byte("x"), nil)
	if pt, err := c2.open(blob, nil); err != nil || string(pt) != "x" {
		t.Errorf("blob sealed before reload does not open after: %v", err)
	}
}

func TestLoopbackOnly(t *testing.T) {
	s := New(Config{Addr: "0.0.0.0:0"})
	if err := s.Start(); err == nil {
		s.Close()
		t.Fatal("Start on 0.0.0.0 succeeded, want an error")
	}
}

func TestBlobBinding(t *testing.T) {
	st := newStore()
	a, _ := st.create(KeySpec{Cloud: Alibaba, Region: "r"})
	b, _ := st.create(KeySpec{Cloud: Alibaba, Region: "r"})
	ka, _ := st.resolve(Alibaba, "r", "", a.ID)
	kb, _ := st.resolve(Alibaba, "r", "", b.ID)
	blob := ka.seal([]byte("secret"), []byte("ctx"))
	if _, err := ka.open(blob, []byte("ctx")); err != nil {
		t.Fatalf("open own blob: %v", err)
	}
	if _, err := ka.open(blob, []byte("ctx2")); err != errAuth {
		t.Errorf("open with other context = %v, want errAuth", err)
	}
	if _, err := kb.open(blob, []byte("ctx")); err != errAuth {
		t.Errorf("open with other key = %v, want errAuth", err)
	}
	// Rewriting the key ID inside the blob to the other key fails too.
	forged := bytes.Replace(blob, []byte(a.ID), []byte(b.ID), 1)
	if _, err := kb.open(forged, []byte("ctx")); err != errAuth {
		t.Errorf("open forged blob = %v, want errAuth", err)
	}
	if _, err := ka.open(blob[:10], []byte("ctx")); err != errCiphertext {
		t.Errorf("open truncated blob = %v, want errCiphertext", err)
	}
}
