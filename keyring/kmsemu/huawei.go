package kmsemu

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Huawei Cloud KMS (DEW), API v1.0, SDK-HMAC-SHA256 (APIG AK/SK signing).
//
// Actions: create-datakey, encrypt-datakey, decrypt-datakey (symmetric
// keys) and get-publickey, decrypt-data (asymmetric keys, KeySpec.Spec one
// of RSASpecs or key_spec "SM2"):
//
//	get-publickey  {"key_id"} -> {"key_id", "public_key"}, public_key the
//	               PEM ("-----BEGIN PUBLIC KEY-----") of the DER
//	               SubjectPublicKeyInfo (an SM2 key's with id-ecPublicKey
//	               and the curve 1.2.156.10197.1.301)
//	decrypt-data   {"key_id", "cipher_text", "encryption_algorithm":
//	               "RSAES_OAEP_SHA_256" or "SM2_ENCRYPT"} -> {"key_id",
//	               "plain_text", "plain_text_base64"}, cipher_text the
//	               base64 of the RSA ciphertext or of the DER SM2Cipher of
//	               GM/T 0009 (the form encrypt-data answers for SM2 keys;
//	               the plain C1C3C2 encoding does not decrypt), in the SDK's
//	               pattern ^[0-9a-zA-Z+/=]{128,5648}$, plain_text the
//	               plaintext as a string (lossy for binary plaintexts, as
//	               the service documents) and plain_text_base64 its base64
//
// decrypt-data decrypts RSAES_OAEP_SHA_256 with RSA keys and SM2_ENCRYPT
// with SM2 keys only: SYMMETRIC_DEFAULT (the emulator has no
// encrypt-data) and unknown algorithms are refused. Where the service's
// codes for these cases are not documented, the emulator's choices are:
//
//	400 KMS.0308 key of the wrong kind (a symmetric key for get-publickey or
//	             decrypt-data, an SM2 key with RSAES_OAEP_SHA_256 or an RSA
//	             key with SM2_ENCRYPT, an asymmetric key for the data key
//	             calls), or an encryption_algorithm not emulated ("Invalid
//	             XXX", the documented generic code)
//	400 KMS.2201 cipher_text not base64 of the right form, or not
//	             decrypting under the key (as decrypt-datakey answers)

type hwError struct {
	status  int
	code    string
	message string
}

func hwErr(status int, code, msg string) *hwError { return &hwError{status, code, msg} }

func hwWrite(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("X-Request-Id", strings.ToLower(strings.ReplaceAll(requestID(), "-", "")))
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func hwWriteErr(w http.ResponseWriter, e *hwError) {
	hwWrite(w, e.status, map[string]any{"error": map[string]string{"error_code": e.code, "error_msg": e.message}})
}

var hwKeyIDPattern = regexp.MustCompile(`^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$`)

// hwEscape percent-encodes all but A-Z a-z 0-9 _ - ~ . (upper-case hex).
func hwEscape(s string) string { return aliEncode(s) }

func (s *Server) serveHuawei(w http.ResponseWriter, r *http.Request) {
	// /v1.0/{project_id}/kms/{action}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	action := ""
	if len(parts) == 4 && parts[0] == "v1.0" && parts[2] == "kms" {
		action = parts[3]
	}
	throttled := func() {
		hwWriteErr(w, hwErr(http.StatusTooManyRequests, "APIGW.0308", "The throttling threshold has been reached: policy user over ratelimit"))
	}
	unavailable := func() {
		hwWriteErr(w, hwErr(http.StatusInternalServerError, "KMS.0101", "kms error."))
	}
	if out := s.applyFaults(w, r, Huawei, action, throttled, unavailable); out != "" {
		s.count(Huawei, action, out)
		return
	}
	status, resp, err := s.huawei(r, parts, action)
	if err != nil {
		s.count(Huawei, action, err.code)
		hwWriteErr(w, err)
		return
	}
	s.count(Huawei, action, "ok")
	hwWrite(w, status, resp)
}

func hwAuth(h string) (ak, signed, sig string, ok bool) {
	rest, found := strings.CutPrefix(h, "SDK-HMAC-SHA256 ")
	if !found {
		return
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Access":
			ak = v
		case "SignedHeaders":
			signed = v
		case "Signature":
			sig = v
		}
	}
	ok = ak != "" && signed != "" && sig != ""
	return
}

func hwCanonicalQuery(r *http.Request) string {
	q := r.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var a []string
	for _, k := range keys {
		vs := append([]string(nil), q[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			a = append(a, hwEscape(k)+"="+hwEscape(v))
		}
	}
	return strings.Join(a, "&")
}

func (s *Server) huawei(r *http.Request, parts []string, action string) (int, map[string]any, *hwError) {
	authFail := func(msg string) *hwError {
		return hwErr(http.StatusUnauthorized, "APIGW.0301", "Incorrect IAM authentication information: "+msg)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return 0, nil, hwErr(http.StatusBadRequest, "KMS.0202", "Invalid JSON format of the request message.")
	}
	ak, signed, sig, ok := hwAuth(r.Header.Get("Authorization"))
	if !ok {
		return 0, nil, authFail("Authorization header missing or malformed")
	}
	date := r.Header.Get("X-Sdk-Date")
	t, perr := time.Parse("20060102T150405Z", date)
	if perr != nil {
		return 0, nil, authFail("X-Sdk-Date missing or malformed")
	}
	cred, found := s.credential(Huawei, ak)
	if !found {
		return 0, nil, authFail("ak " + ak + " not found")
	}
	var ch strings.Builder
	for _, name := range strings.Split(signed, ";") {
		var vals []string
		if name == "host" {
			vals = []string{r.Host}
		} else {
			vals = append(vals, r.Header.Values(name)...)
		}
		sort.Strings(vals)
		for _, v := range vals {
			ch.WriteString(name + ":" + strings.TrimSpace(v) + "\n")
		}
	}
	segs := strings.Split(r.URL.Path, "/")
	for i, seg := range segs {
		segs[i] = hwEscape(seg)
	}
	uri := strings.Join(segs, "/")
	if !strings.HasSuffix(uri, "/") {
		uri += "/"
	}
	payloadHash := sha256Hex(body)
	if v := r.Header.Get("X-Sdk-Content-Sha256"); v == "UNSIGNED-PAYLOAD" {
		payloadHash = v
	}
	canonical := strings.Join([]string{r.Method, uri, hwCanonicalQuery(r), ch.String(), signed, payloadHash}, "\n")
	sts := "SDK-HMAC-SHA256\n" + date + "\n" + sha256Hex([]byte(canonical))
	want := hex.EncodeToString(hmacSHA256([]byte(cred.Secret), sts))
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) != 1 {
		return 0, nil, authFail("verify aksk signature fail")
	}
	if !s.fresh(Huawei, t) {
		return 0, nil, authFail("the request has expired (X-Sdk-Date too far from server time)")
	}
	if !strings.Contains(";"+signed+";", ";x-sdk-date;") {
		return 0, nil, authFail("x-sdk-date is not signed")
	}
	if action == "" {
		return 0, nil, hwErr(http.StatusNotFound, "KMS.0201", "Invalid request URL.")
	}
	project := parts[1]
	switch action {
	case "create-datakey", "decrypt-datakey", "encrypt-datakey", "get-publickey", "decrypt-data":
	default:
		return 0, nil, hwErr(http.StatusNotFound, "KMS.0201", "Invalid request URL.")
	}
	if r.Method != http.MethodPost {
		return 0, nil, hwErr(http.StatusNotFound, "KMS.0201", "Invalid request URL.")
	}
	if cred.Denied {
		return 0, nil, hwErr(http.StatusForbidden, "KMS.0307", "The user role does not have the permission to access this API.")
	}
	if action == "get-publickey" || action == "decrypt-data" {
		return s.huaweiAsym(project, action, body)
	}
	var req struct {
		KeyID               string  `json:"key_id"`
		KeySpec             string  `json:"key_spec"`
		DatakeyLength       string  `json:"datakey_length"`
		PlainText           string  `json:"plain_text"`
		DatakeyPlainLength  string  `json:"datakey_plain_length"`
		CipherText          string  `json:"cipher_text"`
		DatakeyCipherLength string  `json:"datakey_cipher_length"`
		AAD                 *string `json:"additional_authenticated_data"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		return 0, nil, hwErr(http.StatusBadRequest, "KMS.0202", "Invalid JSON format of the request message.")
	}
	if req.KeyID == "" {
		return 0, nil, hwErr(http.StatusBadRequest, "KMS.0204", "Parameters missing in the request message: key_id.")
	}
	if !hwKeyIDPattern.MatchString(req.KeyID) {
		return 0, nil, hwErr(http.StatusBadRequest, "KMS.0205", "Invalid key ID.")
	}
	var aad []byte
	if req.AAD != nil {
		aad = []byte(*req.AAD)
	}
	k, err := s.store.resolve(Huawei, "", project, req.KeyID)
	if err == nil {
		err = s.store.usable(k)
	}
	if err != nil {
		return 0, nil, hwStoreErr(err)
	}
	switch action {
	case "create-datakey":
		bits := 256
		switch req.KeySpec {
		case "", "AES_256":
		case "AES_128":
			bits = 128
		default:
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.0308", "key_spec is invalid.")
		}
		if req.DatakeyLength != "" {
			n, err := strconv.Atoi(req.DatakeyLength)
			if err != nil || n < 8 || n > 8192 || n%8 != 0 {
				return 0, nil, hwErr(http.StatusBadRequest, "KMS.0308", "datakey_length is invalid.")
			}
			bits = n
		}
		dk := make([]byte, bits/8)
		_, _ = rand.Read(dk)
		return http.StatusOK, map[string]any{
			"key_id":      k.ID,
			"plain_text":  strings.ToUpper(hex.EncodeToString(dk)),
			"cipher_text": strings.ToUpper(hex.EncodeToString(k.seal(dk, aad))),
		}, nil
	case "encrypt-datakey":
		n, err := strconv.Atoi(req.DatakeyPlainLength)
		if err != nil || n < 1 || n > 1024 {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.2102", "datakey_plain_length is invalid.")
		}
		raw, err := hex.DecodeString(req.PlainText)
		if err != nil || len(raw) != n+sha256.Size {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.2101", "plain_text is invalid: want hex of the data key followed by its SHA-256.")
		}
		dk, dgst := raw[:n], raw[n:]
		if sum := sha256.Sum256(dk); subtle.ConstantTimeCompare(sum[:], dgst) != 1 {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.2103", "Data key hash verification failed.")
		}
		return http.StatusOK, map[string]any{
			"key_id":         k.ID,
			"cipher_text":    strings.ToUpper(hex.EncodeToString(k.seal(dk, aad))),
			"datakey_length": strconv.Itoa(n),
		}, nil
	default: // decrypt-datakey
		n, err := strconv.Atoi(req.DatakeyCipherLength)
		if err != nil || n < 1 || n > 1024 {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.2202", "datakey_cipher_length is invalid.")
		}
		blob, err := hex.DecodeString(req.CipherText)
		if err != nil || len(blob) == 0 {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.2201", "cipher_text is invalid.")
		}
		if id, err := blobKeyID(blob); err != nil || id != k.ID {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.2201", "cipher_text is invalid or was not made by this key.")
		}
		dk, err := k.open(blob, aad)
		if err != nil {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.2201", "cipher_text is invalid or additional_authenticated_data does not match.")
		}
		if len(dk) != n {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.2202", "datakey_cipher_length does not match the data key.")
		}
		sum := sha256.Sum256(dk)
		return http.StatusOK, map[string]any{
			"data_key":       strings.ToUpper(hex.EncodeToString(dk)),
			"datakey_length": strconv.Itoa(n),
			"datakey_dgst":   strings.ToUpper(hex.EncodeToString(sum[:])),
		}, nil
	}
}

// hwCipherText is the form of decrypt-data's cipher_text: the SDK's
// ^[0-9a-zA-Z+/=]{128,5648}$, with the length checked apart (Go's regexp
// allows repeat counts up to 1000).
var hwCipherText = regexp.MustCompile(`^[0-9a-zA-Z+/=]+$`)

// huaweiAsym serves get-publickey and decrypt-data.
func (s *Server) huaweiAsym(project, action string, body []byte) (int, map[string]any, *hwError) {
	var req struct {
		KeyID               string `json:"key_id"`
		CipherText          string `json:"cipher_text"`
		EncryptionAlgorithm string `json:"encryption_algorithm"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return 0, nil, hwErr(http.StatusBadRequest, "KMS.0202", "Invalid JSON format of the request message.")
	}
	if action == "decrypt-data" {
		if req.CipherText == "" {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.0204", "Parameters missing in the request message: cipher_text.")
		}
		if req.EncryptionAlgorithm != "RSAES_OAEP_SHA_256" && req.EncryptionAlgorithm != "SM2_ENCRYPT" {
			return 0, nil, hwErr(http.StatusBadRequest, "KMS.0308", "Invalid encryption_algorithm: the emulator decrypts RSAES_OAEP_SHA_256 and SM2_ENCRYPT only.")
		}
	}
	if req.KeyID == "" {
		return 0, nil, hwErr(http.StatusBadRequest, "KMS.0204", "Parameters missing in the request message: key_id.")
	}
	if !hwKeyIDPattern.MatchString(req.KeyID) {
		return 0, nil, hwErr(http.StatusBadRequest, "KMS.0205", "Invalid key ID.")
	}
	if action == "get-publickey" {
		k, der, err := s.store.publicKey(Huawei, "", project, req.KeyID)
		if err != nil {
			return 0, nil, hwAsymErr(err)
		}
		return http.StatusOK, map[string]any{
			"key_id":     k.ID,
			"public_key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		}, nil
	}
	ct, err := base64.StdEncoding.Strict().DecodeString(req.CipherText)
	if n := len(req.CipherText); err != nil || n < 128 || n > 5648 || !hwCipherText.MatchString(req.CipherText) {
		return 0, nil, hwErr(http.StatusBadRequest, "KMS.2201", "cipher_text is invalid: want the base64 of the ciphertext.")
	}
	var k *cmk
	var pt []byte
	if req.EncryptionAlgorithm == "SM2_ENCRYPT" {
		k, pt, err = s.store.decryptSM2(Huawei, "", project, req.KeyID, ct, sm2DER)
	} else {
		k, pt, err = s.store.decryptOAEP(Huawei, "", project, req.KeyID, ct)
	}
	if err != nil {
		return 0, nil, hwAsymErr(err)
	}
	defer clear(pt)
	return http.StatusOK, map[string]any{
		"key_id":            k.ID,
		"plain_text":        string(pt),
		"plain_text_base64": base64.StdEncoding.EncodeToString(pt),
	}, nil
}

// hwAsymErr maps a store error of get-publickey or decrypt-data.
func hwAsymErr(err error) *hwError {
	switch err {
	case errUsage:
		return hwErr(http.StatusBadRequest, "KMS.0308", "Invalid key_id: the key is not an asymmetric ENCRYPT_DECRYPT key (of the kind encryption_algorithm needs).")
	case errAuth:
		return hwErr(http.StatusBadRequest, "KMS.2201", "cipher_text is invalid or was not made by this key.")
	case errNoKey, errNoAlias, errDisabled, errPending:
		return hwStoreErr(err)
	default:
		return hwErr(http.StatusInternalServerError, "KMS.0101", "kms error.")
	}
}

func hwStoreErr(err error) *hwError {
	switch err {
	case errNoKey, errNoAlias:
		return hwErr(http.StatusNotFound, "KMS.0207", "The key does not exist.")
	case errDisabled:
		return hwErr(http.StatusBadRequest, "KMS.0209", "The key has been disabled.")
	case errPending:
		return hwErr(http.StatusBadRequest, "KMS.0210", "The key is in Scheduled deletion state and cannot be used.")
	case errUsage:
		return hwErr(http.StatusBadRequest, "KMS.0308", "Invalid key_id: the key is an asymmetric key, not a symmetric ENCRYPT_DECRYPT key.")
	default:
		return hwErr(http.StatusBadRequest, "KMS.2201", "cipher_text is invalid.")
	}
}
