package kmsemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The fuzzed emulator runs on a fixed clock, so that the signed seeds stay
// fresh, and answers for one fixed host.
var (
	fuzzNow  = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	fuzzHost = "127.0.0.1:4040"
)

// Keys of the fuzzed emulator, one per cloud, with fixed IDs so that the
// signed seeds name them.
const (
	fuzzAliKey    = "1b2c3d4e-0000-4000-8000-00000000a11b"
	fuzzAliRegion = "cn-hangzhou"
	fuzzTcKey     = "1b2c3d4e-0000-4000-8000-0000000007c0"
	fuzzTcRegion  = "ap-guangzhou"
	fuzzHwKey     = "1b2c3d4e-0000-4000-8000-0000000000a3"
	fuzzHwRegion  = "cn-north-4"
)

// fuzzRequest is one fuzz input: a request as the emulator sees it.
// Header holds "Name: value" lines.
type fuzzRequest struct {
	Method, Target, Header string
	Body                   []byte
}

func (in fuzzRequest) equal(o fuzzRequest) bool {
	return in.Method == o.Method && in.Target == o.Target && in.Header == o.Header && bytes.Equal(in.Body, o.Body)
}

// newFuzzServer returns an emulator with one credential and one key per
// cloud, not listening: the fuzz target calls ServeHTTP directly.
func newFuzzServer(t testing.TB) *Server {
	s := New(Config{
		Credentials: []Credential{
			{Cloud: Alibaba, ID: aliID, Secret: aliSecret},
			{Cloud: Tencent, ID: tcID, Secret: tcSecret},
			{Cloud: Huawei, ID: hwAK, Secret: hwSK},
		},
		Now: func() time.Time { return fuzzNow },
	})
	for _, spec := range []KeySpec{
		{Cloud: Alibaba, Region: fuzzAliRegion, ID: fuzzAliKey},
		{Cloud: Tencent, Region: fuzzTcRegion, ID: fuzzTcKey},
		{Cloud: Huawei, Region: fuzzHwRegion, Project: project, ID: fuzzHwKey},
	} {
		if _, err := s.CreateKey(spec); err != nil {
			t.Fatalf("CreateKey(%+v) error = %v", spec, err)
		}
	}
	return s
}

// signedAlibaba is a GenerateDataKey request signed with HMAC-SHA1 as the
// emulator's own tests sign one.
func signedAlibaba() fuzzRequest {
	q := url.Values{}
	for k, v := range map[string]string{
		"Format": "JSON", "Version": "2016-01-20", "AccessKeyId": aliID, "SignatureMethod": "HMAC-SHA1",
		"SignatureVersion": "1.0", "SignatureNonce": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
		"Timestamp": fuzzNow.Format("2006-01-02T15:04:05Z"), "RegionId": fuzzAliRegion,
		"Action": "GenerateDataKey", "KeyId": fuzzAliKey, "NumberOfBytes": "32", "EncryptionContext": `{"a":"b"}`,
	} {
		q.Set(k, v)
	}
	q.Set("Signature", aliSign(aliStringToSign("POST", q), aliSecret))
	return fuzzRequest{"POST", "/?" + q.Encode(), "Content-Type: application/x-www-form-urlencoded\n", nil}
}

// signedTencent is a GenerateDataKey request signed with TC3-HMAC-SHA256
// over content-type and host.
func signedTencent() fuzzRequest {
	body := []byte(`{"EncryptionContext":"{\"a\":\"b\"}","KeyId":"` + fuzzTcKey + `","NumberOfBytes":32}`)
	ts := strconv.FormatInt(fuzzNow.Unix(), 10)
	date := fuzzNow.Format("2006-01-02")
	canonical := "POST\n/\n\ncontent-type:application/json\nhost:" + fuzzHost + "\n\ncontent-type;host\n" + sha256Hex(body)
	scope := date + "/kms/tc3_request"
	sts := "TC3-HMAC-SHA256\n" + ts + "\n" + scope + "\n" + sha256Hex([]byte(canonical))
	k := hmacSHA256(hmacSHA256(hmacSHA256([]byte("TC3"+tcSecret), date), "kms"), "tc3_request")
	sig := hex.EncodeToString(hmacSHA256(k, sts))
	header := "Content-Type: application/json\n" +
		"X-TC-Action: GenerateDataKey\n" +
		"X-TC-Version: 2019-01-18\n" +
		"X-TC-Timestamp: " + ts + "\n" +
		"X-TC-Region: " + fuzzTcRegion + "\n" +
		"Authorization: TC3-HMAC-SHA256 Credential=" + tcID + "/" + scope + ", SignedHeaders=content-type;host, Signature=" + sig + "\n"
	return fuzzRequest{"POST", "/", header, body}
}

// signedHuawei is a create-datakey request signed with SDK-HMAC-SHA256
// over host, x-project-id and x-sdk-date.
func signedHuawei() fuzzRequest {
	body := []byte(`{"datakey_length":"256","key_id":"` + fuzzHwKey + `"}`)
	path := "/v1.0/" + project + "/kms/create-datakey"
	date := fuzzNow.Format("20060102T150405Z")
	signed := "host;x-project-id;x-sdk-date"
	canonical := "POST\n" + path + "/\n\nhost:" + fuzzHost + "\nx-project-id:" + project + "\nx-sdk-date:" + date + "\n\n" + signed + "\n" + sha256Hex(body)
	sts := "SDK-HMAC-SHA256\n" + date + "\n" + sha256Hex([]byte(canonical))
	sig := hex.EncodeToString(hmacSHA256([]byte(hwSK), sts))
	header := "Content-Type: application/json;charset=UTF-8\n" +
		"X-Sdk-Date: " + date + "\n" +
		"X-Project-Id: " + project + "\n" +
		"Authorization: SDK-HMAC-SHA256 Access=" + hwAK + ", SignedHeaders=" + signed + ", Signature=" + sig + "\n"
	return fuzzRequest{"POST", path, header, body}
}

// build turns a fuzz input into a request, or returns nil for input that
// net/http would not deliver to a handler or that targets the admin API
// (unauthenticated by design, and able to inject latency and hangs).
func (in fuzzRequest) build() *http.Request {
	if in.Method == "" || strings.ContainsAny(in.Method, " \t\r\n") {
		return nil
	}
	u, err := url.ParseRequestURI(in.Target)
	if err != nil || u.Host != "" || strings.HasPrefix(u.Path, "/_emulator/") {
		return nil
	}
	h := http.Header{}
	for _, line := range strings.Split(in.Header, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t\r") {
			continue
		}
		h.Add(name, strings.TrimSpace(value))
	}
	return &http.Request{
		Method:        in.Method,
		URL:           u,
		RequestURI:    in.Target,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Host:          fuzzHost,
		Body:          io.NopCloser(bytes.NewReader(in.Body)),
		ContentLength: int64(len(in.Body)),
		RemoteAddr:    "127.0.0.1:50000",
	}
}

// succeeded reports whether an answer is a success in the shape of any of
// the three clouds: HTTP 200 without Alibaba's Code, Tencent's
// Response.Error or Huawei's error. An HTTP 200 that is not JSON counts as
// a success.
func succeeded(status int, body []byte) bool {
	if status != http.StatusOK {
		return false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return true
	}
	if _, ok := m["Code"]; ok {
		return false
	}
	if _, ok := m["error"]; ok {
		return false
	}
	if r, ok := m["Response"]; ok {
		var resp map[string]json.RawMessage
		if json.Unmarshal(r, &resp) != nil {
			return true
		}
		if _, ok := resp["Error"]; ok {
			return false
		}
	}
	return true
}

// signedView is what a cloud's signature covers in a request: two
// requests with the same view and the same signature are equally valid.
// It is computed here from the protocols' definitions, not by the
// emulator's code.
func signedView(c Cloud, r *http.Request, body []byte) any {
	switch c {
	case Alibaba:
		params, _ := url.ParseQuery(r.URL.RawQuery)
		if len(body) > 0 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
			form, _ := url.ParseQuery(string(body))
			for k, vs := range form {
				params[k] = append(params[k], vs...)
			}
		}
		delete(params, "Signature")
		for _, vs := range params {
			sort.Strings(vs)
		}
		return []any{r.Method, params}
	case Tencent:
		return []any{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, string(body), r.Host,
			strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Type"))), r.Header.Get("X-TC-Timestamp"),
			r.Header.Get("X-TC-Content-SHA256") == "UNSIGNED-PAYLOAD"}
	default:
		q := r.URL.Query()
		for _, vs := range q {
			sort.Strings(vs)
		}
		return []any{r.Method, r.URL.Path, q, string(body), r.Host, r.Header.Values("X-Sdk-Date"),
			r.Header.Values("X-Project-Id"), r.Header.Get("X-Sdk-Content-Sha256") == "UNSIGNED-PAYLOAD"}
	}
}

// carries reports whether a request carries signature sig where cloud c
// puts signatures: anywhere in the Authorization header (Tencent,
// Huawei), or as any Signature parameter in the query or form (Alibaba).
func carries(c Cloud, r *http.Request, body []byte, sig string) bool {
	if c != Alibaba {
		return strings.Contains(r.Header.Get("Authorization"), sig)
	}
	params, _ := url.ParseQuery(r.URL.RawQuery)
	form, _ := url.ParseQuery(string(body))
	for _, v := range append(params["Signature"], form["Signature"]...) {
		if v == sig {
			return true
		}
	}
	return false
}

// FuzzServeHTTP sends requests built from fuzz input to the emulator's
// handler. It checks that the handler never panics, that JSON answers are
// JSON, and that no request succeeds unless it is correctly signed.
//
// Fuzz input cannot forge an HMAC, so a success must carry the signature
// of one of the three seeds signed here (one per cloud) and what that
// signature covers must be the seed's; what it does not cover (unsigned
// headers such as X-TC-Action, spelling of the Authorization header) may
// differ. The signed seeds themselves must succeed, so that the check is
// not vacuous.
func FuzzServeHTTP(f *testing.F) {
	type seed struct {
		cloud Cloud
		in    fuzzRequest
		sig   string
		view  any
	}
	var signed []seed
	for _, s := range []struct {
		cloud Cloud
		in    fuzzRequest
	}{{Alibaba, signedAlibaba()}, {Tencent, signedTencent()}, {Huawei, signedHuawei()}} {
		r := s.in.build()
		sig := r.URL.Query().Get("Signature")
		if s.cloud != Alibaba {
			_, sig, _ = strings.Cut(r.Header.Get("Authorization"), "Signature=")
		}
		signed = append(signed, seed{s.cloud, s.in, sig, signedView(s.cloud, r, s.in.Body)})
		f.Add(s.in.Method, s.in.Target, s.in.Header, s.in.Body)
	}

	// A KMS instance request (protobuf body, x-kms-* headers) with a
	// signature the emulator refuses: it leads the fuzzer into the
	// instance handler's parsing.
	body := []byte{0x0a, 0x04, 'k', 'e', 'y', '1', 0x22, 0x02, 'a', 'd'}
	sum := sha256.Sum256(body)
	f.Add("POST", "/", "Content-Type: application/x-protobuf\nDate: "+fuzzNow.Format(http.TimeFormat)+
		"\nContent-Sha256: "+strings.ToUpper(hex.EncodeToString(sum[:]))+
		"\nX-Kms-Apiname: AdvanceDecrypt\nX-Kms-Apiversion: dkms-gcs-0.2\nX-Kms-Signaturemethod: RSA_PKCS1_SHA_256"+
		"\nX-Kms-Acccesskeyid: KAAP.fuzz\nAuthorization: Bearer AAAA", body)

	f.Fuzz(func(t *testing.T, method, target, header string, body []byte) {
		in := fuzzRequest{method, target, header, body}
		r := in.build()
		if r == nil {
			return
		}
		s := newFuzzServer(t)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		resp := w.Result()
		got, _ := io.ReadAll(resp.Body)
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && !json.Valid(got) {
			t.Fatalf("answer to %s %s is not JSON: %q", method, target, got)
		}
		ok := succeeded(resp.StatusCode, got)

		for _, sd := range signed {
			if in.equal(sd.in) && !ok {
				t.Fatalf("%s seed signed by the test failed: HTTP %d %s", sd.cloud, resp.StatusCode, got)
			}
		}
		if !ok {
			return
		}
		// Check the success against the signed seeds with the request as
		// the handler received it, before it read the body.
		r = in.build()
		for _, sd := range signed {
			if !carries(sd.cloud, r, body, sd.sig) {
				continue
			}
			if view := signedView(sd.cloud, r, body); !reflect.DeepEqual(view, sd.view) {
				t.Fatalf("request with the %s seed's signature but other signed content succeeded: HTTP %d %s\nsigned content %q\nseed's %q",
					sd.cloud, resp.StatusCode, got, view, sd.view)
			}
			return
		}
		t.Fatalf("request that no seed signed succeeded: %s %s, headers %q, body %q: HTTP %d %s",
			method, target, header, body, resp.StatusCode, got)
	})
}
