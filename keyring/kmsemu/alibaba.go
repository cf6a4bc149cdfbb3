package kmsemu

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Alibaba Cloud KMS, API version 2016-01-20, RPC style.

type aliError struct {
	status  int
	code    string
	message string
}

func (e *aliError) Error() string { return e.code + ": " + e.message }

func aliErr(status int, code, msg string) *aliError { return &aliError{status, code, msg} }

func aliWrite(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func aliWriteErr(w http.ResponseWriter, e *aliError) {
	aliWrite(w, e.status, map[string]string{
		"RequestId": requestID(),
		"HostId":    "kms.emulator",
		"Code":      e.code,
		"Message":   e.message,
		"Recommend": "https://api.alibabacloud.com/troubleshoot?q=" + e.code,
	})
}

// aliEncode is the RFC 3986 percent-encoding the RPC signature uses:
// everything but A-Z a-z 0-9 - _ . ~ is encoded, with upper-case hex.
func aliEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		}
	}
	return b.String()
}

// aliStringToSign builds METHOD&%2F&encode(sorted encoded k=v pairs).
func aliStringToSign(method string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		if k != "Signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var pairs []string
	for _, k := range keys {
		for _, v := range params[k] {
			pairs = append(pairs, aliEncode(k)+"="+aliEncode(v))
		}
	}
	return method + "&" + aliEncode("/") + "&" + aliEncode(strings.Join(pairs, "&"))
}

func aliSign(stringToSign, secret string) string {
	m := hmac.New(sha1.New, []byte(secret+"&"))
	m.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func (s *Server) serveAlibaba(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	action := params.Get("Action")
	throttled := func() {
		aliWriteErr(w, aliErr(http.StatusBadRequest, "Throttling.User", "Request was denied due to user flow control."))
	}
	unavailable := func() {
		aliWriteErr(w, aliErr(http.StatusServiceUnavailable, "ServiceUnavailableTemporary", "Service Unavailable Temporary."))
	}
	if out := s.applyFaults(w, r, Alibaba, action, throttled, unavailable); out != "" {
		s.count(Alibaba, action, out)
		return
	}
	resp, err := s.alibaba(r, params)
	if err != nil {
		s.count(Alibaba, action, err.code)
		aliWriteErr(w, err)
		return
	}
	s.count(Alibaba, action, "ok")
	resp["RequestId"] = requestID()
	aliWrite(w, http.StatusOK, resp)
}

func (s *Server) alibaba(r *http.Request, params url.Values) (map[string]any, *aliError) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return nil, aliErr(http.StatusForbidden, "UnsupportedHTTPMethod", "This http method is not supported.")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, aliErr(http.StatusBadRequest, "InvalidParameter", "The request body could not be read.")
	}
	if len(body) > 0 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, aliErr(http.StatusBadRequest, "InvalidParameter", "The request body is not valid form data.")
		}
		for k, vs := range form {
			params[k] = append(params[k], vs...)
		}
	}
	for _, p := range []string{"AccessKeyId", "Signature", "SignatureMethod", "SignatureVersion", "SignatureNonce"} {
		if params.Get(p) == "" {
			return nil, aliErr(http.StatusBadRequest, "IncompleteSignature", "The request signature does not conform to Alibaba Cloud standards: "+p+" is missing.")
		}
	}
	if params.Get("SignatureMethod") != "HMAC-SHA1" || params.Get("SignatureVersion") != "1.0" {
		return nil, aliErr(http.StatusBadRequest, "IncompleteSignature", "The request signature does not conform to Alibaba Cloud standards: unsupported SignatureMethod or SignatureVersion.")
	}
	ts := params.Get("Timestamp")
	if ts == "" {
		return nil, aliErr(http.StatusBadRequest, "IllegalTimestamp", `The input parameter "Timestamp" that is mandatory for processing this request is not supplied.`)
	}
	t, perr := time.Parse("2006-01-02T15:04:05Z", ts)
	if perr != nil {
		return nil, aliErr(http.StatusBadRequest, "IllegalTimestamp", `The input parameter "Timestamp" is not in ISO 8601 UTC form (yyyy-MM-ddTHH:mm:ssZ).`)
	}
	cred, ok := s.credential(Alibaba, params.Get("AccessKeyId"))
	if !ok {
		return nil, aliErr(http.StatusNotFound, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
	}
	sts := aliStringToSign(r.Method, params)
	want := aliSign(sts, cred.Secret)
	if subtle.ConstantTimeCompare([]byte(want), []byte(params.Get("Signature"))) != 1 {
		return nil, aliErr(http.StatusBadRequest, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation. server string to sign is:"+sts)
	}
	if !s.fresh(Alibaba, t) {
		return nil, aliErr(http.StatusBadRequest, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
	}
	if s.nonceSeen(cred.ID, params.Get("SignatureNonce")) {
		return nil, aliErr(http.StatusBadRequest, "SignatureNonceUsed", "Specified signature nonce was used already.")
	}
	if v := params.Get("Version"); v != "2016-01-20" {
		return nil, aliErr(http.StatusBadRequest, "InvalidVersion", "Specified parameter Version is not valid.")
	}
	action := params.Get("Action")
	switch action {
	case "GenerateDataKey", "Decrypt", "Encrypt":
	default:
		return nil, aliErr(http.StatusNotFound, "InvalidAction.NotFound", "Specified api is not found, please check your url and method.")
	}
	if cred.Denied {
		return nil, aliErr(http.StatusForbidden, "Forbidden.NoPermission", "This operation is forbidden by permission system.")
	}
	region := params.Get("RegionId")
	encCtx, aerr := aliContext(params.Get("EncryptionContext"))
	if aerr != nil {
		return nil, aerr
	}
	switch action {
	case "GenerateDataKey":
		k, aerr := s.aliKey(region, params.Get("KeyId"))
		if aerr != nil {
			return nil, aerr
		}
		n := 32
		switch params.Get("KeySpec") {
		case "", "AES_256":
		case "AES_128":
			n = 16
		default:
			return nil, aliErr(http.StatusBadRequest, "InvalidParameter", `The specified parameter "KeySpec" is not valid.`)
		}
		if v := params.Get("NumberOfBytes"); v != "" {
			nb, err := strconv.Atoi(v)
			if err != nil || nb < 1 || nb > 1024 {
				return nil, aliErr(http.StatusBadRequest, "InvalidParameter", `The specified parameter "NumberOfBytes" is not valid.`)
			}
			n = nb
		}
		dk := make([]byte, n)
		_, _ = rand.Read(dk)
		pt := base64.StdEncoding.EncodeToString(dk)
		return map[string]any{
			"KeyId":          k.ID,
			"KeyVersionId":   k.ID,
			"Plaintext":      pt,
			"CiphertextBlob": base64.StdEncoding.EncodeToString(k.seal([]byte(pt), encCtx)),
		}, nil
	case "Encrypt":
		k, aerr := s.aliKey(region, params.Get("KeyId"))
		if aerr != nil {
			return nil, aerr
		}
		pt := params.Get("Plaintext")
		if pt == "" || len(pt) > 6*1024 {
			return nil, aliErr(http.StatusBadRequest, "InvalidParameter", `The specified parameter "Plaintext" is not valid.`)
		}
		return map[string]any{
			"KeyId":          k.ID,
			"KeyVersionId":   k.ID,
			"CiphertextBlob": base64.StdEncoding.EncodeToString(k.seal([]byte(pt), encCtx)),
		}, nil
	default: // Decrypt
		blob, err := base64.StdEncoding.DecodeString(params.Get("CiphertextBlob"))
		if err != nil || len(blob) == 0 {
			return nil, aliErr(http.StatusBadRequest, "InvalidParameter", `The specified parameter "CiphertextBlob" is not valid.`)
		}
		k, pt, err := s.store.decryptBlob(Alibaba, region, "", blob, encCtx)
		if err != nil {
			return nil, aliStoreErr(err, "CiphertextBlob")
		}
		return map[string]any{"KeyId": k.ID, "KeyVersionId": k.ID, "Plaintext": string(pt)}, nil
	}
}

// aliContext parses EncryptionContext, a JSON map of strings, and returns
// the canonical bytes the blob is bound to (as the real service binds the
// map, not its spelling).
func aliContext(v string) ([]byte, *aliError) {
	if v == "" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(v), &m); err != nil {
		return nil, aliErr(http.StatusBadRequest, "InvalidParameter", `The specified parameter "EncryptionContext" is not valid.`)
	}
	b, _ := json.Marshal(m)
	return b, nil
}

func (s *Server) aliKey(region, ref string) (*cmk, *aliError) {
	if ref == "" {
		return nil, aliErr(http.StatusBadRequest, "MissingParameter", `The parameter "KeyId" is needed but not provided.`)
	}
	k, err := s.store.resolve(Alibaba, region, "", ref)
	if err == nil {
		err = s.store.usable(k)
	}
	if err != nil {
		return nil, aliStoreErr(err, "KeyId")
	}
	return k, nil
}

func aliStoreErr(err error, param string) *aliError {
	switch err {
	case errNoKey:
		return aliErr(http.StatusNotFound, "Forbidden.KeyNotFound", "The specified Key is not found.")
	case errNoAlias:
		return aliErr(http.StatusNotFound, "Forbidden.AliasNotFound", "The specified Alias is not found.")
	case errDisabled:
		return aliErr(http.StatusConflict, "Rejected.Disabled", "The request was rejected because the key state is Disabled.")
	case errPending:
		return aliErr(http.StatusConflict, "Rejected.PendingDeletion", "The request was rejected because the key state is PendingDeletion.")
	default:
		return aliErr(http.StatusBadRequest, "InvalidParameter", `The specified parameter "`+param+`" is not valid.`)
	}
}
