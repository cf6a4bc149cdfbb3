package kmsemu

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Tencent Cloud KMS, API version 2019-01-18, TC3-HMAC-SHA256.
//
// Actions: GenerateDataKey, Encrypt, Decrypt (symmetric keys) and
// GetPublicKey, AsymmetricRsaDecrypt, AsymmetricSm2Decrypt (asymmetric
// keys: KeySpec.Spec one of RSASpecs, or "SM2" for a key of KeyUsage
// ASYMMETRIC_DECRYPT_SM2). GetPublicKey answers KeyId, PublicKey (base64
// of the DER SubjectPublicKeyInfo; an SM2 key's with id-ecPublicKey and
// the curve 1.2.156.10197.1.301) and PublicKeyPem. AsymmetricRsaDecrypt
// takes KeyId, Ciphertext (base64) and Algorithm; it decrypts
// RSAES_OAEP_SHA_256 only: the service's other algorithms
// (RSAES_PKCS1_V1_5, RSAES_OAEP_SHA_1) and unknown ones are refused with
// InvalidParameterValue. AsymmetricSm2Decrypt takes KeyId and Ciphertext,
// the base64 of the DER SM2Cipher of GM/T 0009 ("C1C3C2_ASN1", at most 256
// bytes, as the API reference says); the plain C1C3C2 encoding does not
// decrypt. Error codes, as the SDK documents them for these actions:
//
//	ResourceUnavailable.CmkNotFound        unknown key or alias
//	ResourceUnavailable.CmkStateNotSupport asymmetric call on a disabled or
//	                                       pending-deletion key
//	InvalidParameterValue.InvalidKeyUsage  asymmetric call on a symmetric key
//	                                       or on a key of the other kind (an
//	                                       SM2 key for AsymmetricRsaDecrypt,
//	                                       an RSA key for AsymmetricSm2Decrypt),
//	                                       or symmetric call on an
//	                                       asymmetric key
//	FailedOperation.DecryptError           a ciphertext that does not decrypt
//	InvalidParameter                       Ciphertext not base64, or longer
//	                                       than 256 bytes (SM2)

type tcError struct{ code, message string }

func tcErr(code, msg string) *tcError { return &tcError{code, msg} }

func tcWrite(w http.ResponseWriter, resp map[string]any) {
	resp["RequestId"] = strings.ToLower(requestID())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(map[string]any{"Response": resp})
}

func tcWriteErr(w http.ResponseWriter, e *tcError) {
	tcWrite(w, map[string]any{"Error": map[string]string{"Code": e.code, "Message": e.message}})
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func (s *Server) serveTencent(w http.ResponseWriter, r *http.Request) {
	action := r.Header.Get("X-TC-Action")
	throttled := func() {
		tcWriteErr(w, tcErr("RequestLimitExceeded", "Your current request times exceeds the limit, please try again later."))
	}
	unavailable := func() {
		tcWriteErr(w, tcErr("InternalError", "An internal error has occurred. Retry your request, but if the problem persists, contact us."))
	}
	if out := s.applyFaults(w, r, Tencent, action, throttled, unavailable); out != "" {
		s.count(Tencent, action, out)
		return
	}
	resp, err := s.tencent(r, action)
	if err != nil {
		s.count(Tencent, action, err.code)
		tcWriteErr(w, err)
		return
	}
	s.count(Tencent, action, "ok")
	tcWrite(w, resp)
}

// tcAuth parses "TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request,
// SignedHeaders=a;b, Signature=HEX".
func tcAuth(h string) (id, date, service, signed, sig string, ok bool) {
	rest, found := strings.CutPrefix(h, "TC3-HMAC-SHA256 ")
	if !found {
		return
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			p := strings.Split(v, "/")
			if len(p) != 4 || p[3] != "tc3_request" {
				return
			}
			id, date, service = p[0], p[1], p[2]
		case "SignedHeaders":
			signed = v
		case "Signature":
			sig = v
		}
	}
	ok = id != "" && date != "" && service != "" && signed != "" && sig != ""
	return
}

func (s *Server) tencent(r *http.Request, action string) (map[string]any, *tcError) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, tcErr("InvalidParameter", "The request body could not be read.")
	}
	id, date, service, signed, sig, ok := tcAuth(r.Header.Get("Authorization"))
	if !ok {
		return nil, tcErr("AuthFailure.InvalidAuthorization", "Authorization in the request header is invalid.")
	}
	tsStr := r.Header.Get("X-TC-Timestamp")
	ts, perr := strconv.ParseInt(tsStr, 10, 64)
	if perr != nil {
		return nil, tcErr("MissingParameter", "The request is missing a valid X-TC-Timestamp.")
	}
	cred, found := s.credential(Tencent, id)
	if !found {
		return nil, tcErr("AuthFailure.SecretIdNotFound", "The SecretId is not found, please ensure that your SecretId is correct.")
	}
	// Canonical request over the headers the client says it signed.
	var ch strings.Builder
	for _, name := range strings.Split(signed, ";") {
		v := r.Header.Get(name)
		if name == "host" {
			v = r.Host
		}
		ch.WriteString(name + ":" + strings.ToLower(strings.TrimSpace(v)) + "\n")
	}
	payloadHash := sha256Hex(body)
	if r.Header.Get("X-TC-Content-SHA256") == "UNSIGNED-PAYLOAD" {
		payloadHash = sha256Hex([]byte("UNSIGNED-PAYLOAD"))
	}
	canonical := strings.Join([]string{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, ch.String(), signed, payloadHash}, "\n")
	scope := date + "/" + service + "/tc3_request"
	sts := "TC3-HMAC-SHA256\n" + tsStr + "\n" + scope + "\n" + sha256Hex([]byte(canonical))
	kDate := hmacSHA256([]byte("TC3"+cred.Secret), date)
	kService := hmacSHA256(kDate, service)
	kSigning := hmacSHA256(kService, "tc3_request")
	want := hex.EncodeToString(hmacSHA256(kSigning, sts))
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) != 1 {
		return nil, tcErr("AuthFailure.SignatureFailure", "The provided credentials could not be validated. Please check your signature is correct.")
	}
	t := time.Unix(ts, 0)
	if !s.fresh(Tencent, t) || t.UTC().Format("2006-01-02") != date {
		return nil, tcErr("AuthFailure.SignatureExpire", "Signature expired. Timestamp and server time cannot differ by more than five minutes.")
	}
	if service != "kms" {
		return nil, tcErr("AuthFailure.InvalidAuthorization", "Credential scope names service "+service+", want kms.")
	}
	if v := r.Header.Get("X-TC-Version"); v != "2019-01-18" {
		return nil, tcErr("InvalidParameterValue", "The value of X-TC-Version is not valid.")
	}
	switch action {
	case "GenerateDataKey", "Decrypt", "Encrypt", "GetPublicKey", "AsymmetricRsaDecrypt", "AsymmetricSm2Decrypt":
	default:
		return nil, tcErr("InvalidAction", "The requested action "+action+" does not exist.")
	}
	region := r.Header.Get("X-TC-Region")
	if region == "" {
		return nil, tcErr("MissingParameter", "The request is missing a required parameter `Region`.")
	}
	if cred.Denied {
		return nil, tcErr("UnauthorizedOperation", "You are not authorized to perform this operation. Check your CAM policies.")
	}
	var req struct {
		KeyId             *string
		KeySpec           *string
		NumberOfBytes     *uint64
		EncryptionContext *string
		CiphertextBlob    *string
		Plaintext         *string
		Ciphertext        *string
		Algorithm         *string
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, tcErr("InvalidParameter", "The request body is not valid JSON.")
	}
	var encCtx []byte
	if req.EncryptionContext != nil && *req.EncryptionContext != "" {
		var m map[string]string
		if err := json.Unmarshal([]byte(*req.EncryptionContext), &m); err != nil {
			return nil, tcErr("InvalidParameterValue", "EncryptionContext is not a valid JSON string map.")
		}
		encCtx, _ = json.Marshal(m)
	}
	switch action {
	case "GetPublicKey":
		if req.KeyId == nil || *req.KeyId == "" {
			return nil, tcErr("MissingParameter", "The request is missing a required parameter `KeyId`.")
		}
		k, der, err := s.store.publicKey(Tencent, region, "", *req.KeyId)
		if err != nil {
			return nil, tcAsymErr(err, "ASYMMETRIC_DECRYPT_RSA_* or ASYMMETRIC_DECRYPT_SM2")
		}
		return map[string]any{
			"KeyId":        k.ID,
			"PublicKey":    base64.StdEncoding.EncodeToString(der),
			"PublicKeyPem": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		}, nil
	case "AsymmetricRsaDecrypt":
		return s.tcAsymmetricRsaDecrypt(region, req.KeyId, req.Ciphertext, req.Algorithm)
	case "AsymmetricSm2Decrypt":
		return s.tcAsymmetricSm2Decrypt(region, req.KeyId, req.Ciphertext)
	case "GenerateDataKey":
		k, terr := s.tcKey(region, req.KeyId)
		if terr != nil {
			return nil, terr
		}
		n := 32
		if req.KeySpec != nil {
			switch *req.KeySpec {
			case "AES_256":
			case "AES_128":
				n = 16
			default:
				return nil, tcErr("InvalidParameterValue", "KeySpec must be AES_128 or AES_256.")
			}
		}
		if req.NumberOfBytes != nil {
			if *req.NumberOfBytes < 1 || *req.NumberOfBytes > 1024 {
				return nil, tcErr("InvalidParameterValue", "NumberOfBytes must be within 1 and 1024.")
			}
			n = int(*req.NumberOfBytes)
		}
		dk := make([]byte, n)
		_, _ = rand.Read(dk)
		return map[string]any{
			"KeyId":          k.ID,
			"Plaintext":      base64.StdEncoding.EncodeToString(dk),
			"CiphertextBlob": base64.StdEncoding.EncodeToString(k.seal(dk, encCtx)),
		}, nil
	case "Encrypt":
		k, terr := s.tcKey(region, req.KeyId)
		if terr != nil {
			return nil, terr
		}
		if req.Plaintext == nil {
			return nil, tcErr("MissingParameter", "The request is missing a required parameter `Plaintext`.")
		}
		pt, err := base64.StdEncoding.Strict().DecodeString(*req.Plaintext)
		if err != nil || len(pt) == 0 || len(pt) > 4096 {
			return nil, tcErr("InvalidParameterValue.InvalidPlaintext", "Plaintext must be base64 of 1 to 4096 bytes.")
		}
		return map[string]any{
			"KeyId":          k.ID,
			"CiphertextBlob": base64.StdEncoding.EncodeToString(k.seal(pt, encCtx)),
		}, nil
	default: // Decrypt
		if req.CiphertextBlob == nil {
			return nil, tcErr("MissingParameter", "The request is missing a required parameter `CiphertextBlob`.")
		}
		blob, err := base64.StdEncoding.DecodeString(*req.CiphertextBlob)
		if err != nil || len(blob) == 0 {
			return nil, tcErr("InvalidParameterValue.InvalidCiphertext", "The ciphertext format is incorrect.")
		}
		k, pt, err := s.store.decryptBlob(Tencent, region, "", blob, encCtx)
		if err != nil {
			return nil, tcStoreErr(err)
		}
		return map[string]any{"KeyId": k.ID, "Plaintext": base64.StdEncoding.EncodeToString(pt)}, nil
	}
}

// tcRSAAlgorithms are the Algorithm values AsymmetricRsaDecrypt takes,
// with whether the emulator decrypts them.
var tcRSAAlgorithms = map[string]bool{"RSAES_OAEP_SHA_256": true, "RSAES_PKCS1_V1_5": false, "RSAES_OAEP_SHA_1": false}

func (s *Server) tcAsymmetricRsaDecrypt(region string, ref, ciphertext, algorithm *string) (map[string]any, *tcError) {
	for _, p := range []struct {
		name string
		v    *string
	}{{"KeyId", ref}, {"Ciphertext", ciphertext}, {"Algorithm", algorithm}} {
		if p.v == nil || *p.v == "" {
			return nil, tcErr("MissingParameter", "The request is missing a required parameter `"+p.name+"`.")
		}
	}
	emulated, known := tcRSAAlgorithms[*algorithm]
	switch {
	case !known:
		return nil, tcErr("InvalidParameterValue", "Algorithm must be one of RSAES_PKCS1_V1_5, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256.")
	case !emulated:
		return nil, tcErr("InvalidParameterValue", "Algorithm "+*algorithm+" is not supported by the emulator: use RSAES_OAEP_SHA_256.")
	}
	ct, err := base64.StdEncoding.Strict().DecodeString(*ciphertext)
	if err != nil || len(ct) == 0 {
		return nil, tcErr("InvalidParameter", "Ciphertext must be base64.")
	}
	k, pt, err := s.store.decryptOAEP(Tencent, region, "", *ref, ct)
	if err != nil {
		return nil, tcAsymErr(err, "ASYMMETRIC_DECRYPT_RSA")
	}
	defer clear(pt)
	return map[string]any{"KeyId": k.ID, "Plaintext": base64.StdEncoding.EncodeToString(pt)}, nil
}

// tcMaxSM2Ciphertext is the longest ciphertext AsymmetricSm2Decrypt
// takes, in bytes.
const tcMaxSM2Ciphertext = 256

func (s *Server) tcAsymmetricSm2Decrypt(region string, ref, ciphertext *string) (map[string]any, *tcError) {
	for _, p := range []struct {
		name string
		v    *string
	}{{"KeyId", ref}, {"Ciphertext", ciphertext}} {
		if p.v == nil || *p.v == "" {
			return nil, tcErr("MissingParameter", "The request is missing a required parameter `"+p.name+"`.")
		}
	}
	ct, err := base64.StdEncoding.Strict().DecodeString(*ciphertext)
	if err != nil || len(ct) == 0 {
		return nil, tcErr("InvalidParameter", "Ciphertext must be base64.")
	}
	if len(ct) > tcMaxSM2Ciphertext {
		return nil, tcErr("InvalidParameter", "The length of the ciphertext cannot exceed 256 bytes.")
	}
	k, pt, err := s.store.decryptSM2(Tencent, region, "", *ref, ct, sm2DER)
	if err != nil {
		return nil, tcAsymErr(err, "ASYMMETRIC_DECRYPT_SM2")
	}
	defer clear(pt)
	return map[string]any{"KeyId": k.ID, "Plaintext": base64.StdEncoding.EncodeToString(pt)}, nil
}

// tcAsymErr maps a store error of GetPublicKey, AsymmetricRsaDecrypt or
// AsymmetricSm2Decrypt; usage is the KeyUsage the call wants.
func tcAsymErr(err error, usage string) *tcError {
	switch err {
	case errNoKey, errNoAlias:
		return tcErr("ResourceUnavailable.CmkNotFound", "The CMK does not exist.")
	case errDisabled:
		return tcErr("ResourceUnavailable.CmkStateNotSupport", "The CMK is disabled: only an Enabled asymmetric key can be used.")
	case errPending:
		return tcErr("ResourceUnavailable.CmkStateNotSupport", "The CMK is pending deletion: only an Enabled asymmetric key can be used.")
	case errUsage:
		return tcErr("InvalidParameterValue.InvalidKeyUsage", "The CMK's KeyUsage is not "+usage+".")
	case errAuth:
		return tcErr("FailedOperation.DecryptError", "Decryption failed.")
	default:
		return tcErr("InternalError", "An internal error has occurred.")
	}
}

func (s *Server) tcKey(region string, ref *string) (*cmk, *tcError) {
	if ref == nil || *ref == "" {
		return nil, tcErr("MissingParameter", "The request is missing a required parameter `KeyId`.")
	}
	k, err := s.store.resolve(Tencent, region, "", *ref)
	if err == nil {
		err = s.store.usable(k)
	}
	if err != nil {
		return nil, tcStoreErr(err)
	}
	return k, nil
}

func tcStoreErr(err error) *tcError {
	switch err {
	case errNoKey, errNoAlias:
		return tcErr("ResourceUnavailable.CmkNotFound", "The CMK does not exist.")
	case errDisabled:
		return tcErr("ResourceUnavailable.CmkDisabled", "The CMK is disabled.")
	case errPending:
		return tcErr("ResourceUnavailable.KeyPendingDelete", "The CMK is pending deletion.")
	case errAuth:
		return tcErr("FailedOperation.DecryptError", "Decryption failed.")
	case errUsage:
		return tcErr("InvalidParameterValue.InvalidKeyUsage", "The CMK's KeyUsage is not ENCRYPT_DECRYPT.")
	default:
		return tcErr("InvalidParameterValue.InvalidCiphertext", "The ciphertext format is incorrect.")
	}
}
