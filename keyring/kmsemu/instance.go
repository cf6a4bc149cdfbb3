package kmsemu

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aliyun/alibabacloud-dkms-gcs-go-sdk/openapi-util/protobuf/api"
	"google.golang.org/protobuf/proto"
)

// Alibaba Cloud KMS instance (dedicated KMS, "dkms-gcs"), API version
// dkms-gcs-0.2, as github.com/aliyun/alibabacloud-dkms-gcs-go-sdk sends
// it: POST / with a protobuf body, RSA-signed headers.
//
// Symmetric keys serve GenerateDataKey, Encrypt, Decrypt and their
// Advance forms (AES_GCM). RSA keys (KeySpec.Spec one of RSASpecs) and
// SM2 keys (KeySpec.Spec EC_SM2) serve GetPublicKey (the
// SubjectPublicKeyInfo as a PEM "PUBLIC KEY"; an SM2 key's with
// id-ecPublicKey and the curve 1.2.156.10197.1.301) and Decrypt: with
// Algorithm RSAES_OAEP_SHA_256 for RSA keys (the CiphertextBlob is the
// raw RSA ciphertext), SM2PKE for SM2 keys (the CiphertextBlob is the
// plain encoding 0x04 || x || y || C3 || C2; the DER SM2Cipher does not
// decrypt). The instance's other asymmetric algorithms are refused with
// InvalidParameter, and a key used against its kind (a symmetric key
// with an asymmetric algorithm, an SM2 key with RSAES_OAEP_SHA_256, an
// RSA key with SM2PKE, an asymmetric key with AES_GCM) with
// UnsupportedOperation.

const (
	instAPIVersion   = "dkms-gcs-0.2"
	instSigMethod    = "RSA_PKCS1_SHA_256"
	instContentType  = "application/x-protobuf"
	instAlgorithm    = "AES_GCM"
	instOAEP         = "RSAES_OAEP_SHA_256"
	instSM2          = "SM2PKE"
	instMaxBody      = 1 << 20
	instMaxPlaintext = 6 * 1024
)

type instError struct {
	status  int
	code    string
	message string
}

func (e *instError) Error() string { return e.code + ": " + e.message }

func instErr(status int, code, msg string) *instError { return &instError{status, code, msg} }

func instWrite(w http.ResponseWriter, status int, m proto.Message) {
	b, err := proto.Marshal(m)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = proto.Marshal(&api.Error{
			StatusCode:   int32(status),
			ErrorCode:    "InternalFailure",
			ErrorMessage: "The emulator could not encode its answer: " + err.Error(),
			RequestId:    requestID(),
		})
	}
	w.Header().Set("Content-Type", instContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func instWriteErr(w http.ResponseWriter, e *instError, reqID string) {
	instWrite(w, e.status, &api.Error{
		StatusCode:   int32(e.status),
		ErrorCode:    e.code,
		ErrorMessage: e.message,
		RequestId:    reqID,
	})
}

func (s *Server) serveInstance(w http.ResponseWriter, r *http.Request) {
	action := r.Header.Get("X-Kms-Apiname")
	reqID := requestID()
	throttled := func() {
		instWriteErr(w, instErr(http.StatusTooManyRequests, "Rejected.Throttling", "The request was denied due to request throttling."), reqID)
	}
	unavailable := func() {
		instWriteErr(w, instErr(http.StatusServiceUnavailable, "ServiceUnavailableTemporary", "The service is temporarily unavailable."), reqID)
	}
	if out := s.applyFaults(w, r, AlibabaInstance, action, throttled, unavailable); out != "" {
		s.count(AlibabaInstance, action, out)
		return
	}
	resp, err := s.instance(r, action, reqID)
	if err != nil {
		s.count(AlibabaInstance, action, err.code)
		instWriteErr(w, err, reqID)
		return
	}
	s.count(AlibabaInstance, action, "ok")
	instWrite(w, http.StatusOK, resp)
}

// instHeader is one signed x-kms- header, its name in lower case.
type instHeader struct{ name, value string }

// instStringToSign is what the client key signs:
//
//	POST\n content-sha256\n content-type\n date\n
//	name:value\n for every x-kms- header, sorted by name
//	/
func instStringToSign(method, contentSHA256, contentType, date string, kms []instHeader) string {
	var b strings.Builder
	b.WriteString(method + "\n" + contentSHA256 + "\n" + contentType + "\n" + date + "\n")
	for _, h := range kms {
		b.WriteString(h.name + ":" + strings.Trim(h.value, " ") + "\n")
	}
	b.WriteString("/")
	return b.String()
}

// instancePublicKey parses the PEM of an RSA public key ("PUBLIC KEY",
// "RSA PUBLIC KEY") or of a certificate holding one ("CERTIFICATE").
func instancePublicKey(text string) (*rsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, errors.New("public key: no PEM block")
	}
	var pub any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = c.PublicKey
		}
	default:
		return nil, fmt.Errorf("public key: PEM block %q is not a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("public key: %s: %w", block.Type, err)
	}
	k, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key: %s holds a %T, not an RSA key", block.Type, pub)
	}
	return k, nil
}

// instAuth checks a request's framing, signature, date and API version,
// and returns the credential that signed it and its body.
func (s *Server) instAuth(r *http.Request) (Credential, []byte, *instError) {
	bad := func(format string, args ...any) (Credential, []byte, *instError) {
		return Credential{}, nil, instErr(http.StatusBadRequest, "InvalidParam", fmt.Sprintf(format, args...))
	}
	if r.Method != http.MethodPost {
		return bad("The request method is %s; the KMS instance API takes POST.", r.Method)
	}
	if r.URL.Path != "/" {
		return bad("The request path is %q; the KMS instance API takes /.", r.URL.Path)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, instMaxBody+1))
	if err != nil {
		return bad("The request body could not be read.")
	}
	if len(body) > instMaxBody {
		return bad("The request body is larger than %d bytes.", instMaxBody)
	}

	// Every header the signature covers must appear once.
	var kms []instHeader
	seen := map[string]bool{}
	for name, vs := range r.Header {
		lname := strings.ToLower(name)
		signed := strings.HasPrefix(lname, "x-kms-")
		if !signed && lname != "date" && lname != "content-sha256" && lname != "content-type" && lname != "authorization" {
			continue
		}
		if len(vs) != 1 || seen[lname] {
			return bad("The header %s appears more than once.", lname)
		}
		seen[lname] = true
		if signed {
			kms = append(kms, instHeader{lname, vs[0]})
		}
	}
	sort.Slice(kms, func(i, j int) bool { return kms[i].name < kms[j].name })
	for _, h := range []string{"x-kms-acccesskeyid", "x-kms-apiversion", "x-kms-apiname", "x-kms-signaturemethod", "date", "content-sha256", "authorization"} {
		if r.Header.Get(h) == "" {
			return bad("The header %s is missing.", h)
		}
	}
	if m := r.Header.Get("X-Kms-Signaturemethod"); m != instSigMethod {
		return bad("The x-kms-signaturemethod %q is not supported; want %s.", m, instSigMethod)
	}
	b64, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sig, err := base64.StdEncoding.DecodeString(b64)
	if !ok || err != nil || len(sig) == 0 {
		return bad("The Authorization header is not \"Bearer <base64 signature>\".")
	}
	date := r.Header.Get("Date")
	t, err := time.Parse(http.TimeFormat, date)
	if err != nil {
		return bad("The date header %q is not an RFC 1123 date in GMT (%s).", date, http.TimeFormat)
	}
	contentSHA := r.Header.Get("Content-Sha256")
	sum, err := hex.DecodeString(contentSHA)
	if err != nil || len(sum) != sha256.Size {
		return bad("The content-sha256 header is not the hex of a SHA-256 digest.")
	}
	if h := sha256.Sum256(body); !bytes.Equal(sum, h[:]) {
		return bad("The content-sha256 header does not match the SHA-256 of the request body.")
	}

	id := r.Header.Get("X-Kms-Acccesskeyid")
	cred, ok := s.credential(AlibabaInstance, id)
	if !ok {
		return Credential{}, nil, instErr(http.StatusUnauthorized, "Unauthorized", fmt.Sprintf("The client key %q is not registered with this instance.", id))
	}
	pub, err := instancePublicKey(cred.PublicKey)
	if err != nil {
		return Credential{}, nil, instErr(http.StatusUnauthorized, "Unauthorized", fmt.Sprintf("The public key registered for client key %q is not usable: %v.", id, err))
	}
	sts := instStringToSign(r.Method, contentSHA, r.Header.Get("Content-Type"), date, kms)
	digest := sha256.Sum256([]byte(sts))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) != nil {
		return Credential{}, nil, instErr(http.StatusUnauthorized, "Unauthorized", "The request signature does not verify with the client key's public key. Server string to sign is: "+sts)
	}
	if !s.fresh(AlibabaInstance, t) {
		return Credential{}, nil, instErr(http.StatusBadRequest, "RequestTimeTooSkewed", fmt.Sprintf("The request date %s is more than %s away from the server's time.", date, s.skew(AlibabaInstance)))
	}
	if v := r.Header.Get("X-Kms-Apiversion"); v != instAPIVersion {
		return Credential{}, nil, instErr(http.StatusBadRequest, "InvalidApiVersion", fmt.Sprintf("The x-kms-apiversion %q is not supported; want %s.", v, instAPIVersion))
	}
	return cred, body, nil
}

func (s *Server) instance(r *http.Request, action, reqID string) (proto.Message, *instError) {
	cred, body, ierr := s.instAuth(r)
	if ierr != nil {
		return nil, ierr
	}
	switch action {
	case "GenerateDataKey", "AdvanceGenerateDataKey", "Encrypt", "AdvanceEncrypt", "Decrypt", "AdvanceDecrypt", "GetPublicKey":
	default:
		return nil, instErr(http.StatusBadRequest, "InvalidApiName", fmt.Sprintf("The x-kms-apiname %q is not an operation the emulator serves.", action))
	}
	if cred.Denied {
		return nil, instErr(http.StatusForbidden, "Forbidden.NoPermission", "The client key has no permission for this operation.")
	}
	switch action {
	case "GenerateDataKey":
		var req api.GenerateDataKeyRequest
		if err := instParse(body, &req); err != nil {
			return nil, err
		}
		if err := instCheckAlgorithm(req.Algorithm); err != nil {
			return nil, err
		}
		k, pt, blob, err := s.instDataKey(req.KeyId, req.NumberOfBytes, req.Aad)
		if err != nil {
			return nil, err
		}
		return &api.GenerateDataKeyResponse{KeyId: k.ID, Iv: blobNonce(blob), Plaintext: pt, CiphertextBlob: blob, RequestId: reqID, Algorithm: instAlgorithm}, nil
	case "AdvanceGenerateDataKey":
		var req api.AdvanceGenerateDataKeyRequest
		if err := instParse(body, &req); err != nil {
			return nil, err
		}
		k, pt, blob, err := s.instDataKey(req.KeyId, req.NumberOfBytes, req.Aad)
		if err != nil {
			return nil, err
		}
		return &api.AdvanceGenerateDataKeyResponse{KeyId: k.ID, Iv: blobNonce(blob), Plaintext: pt, CiphertextBlob: blob, RequestId: reqID, Algorithm: instAlgorithm, KeyVersionId: k.ID}, nil
	case "Encrypt":
		var req api.EncryptRequest
		if err := instParse(body, &req); err != nil {
			return nil, err
		}
		k, blob, err := s.instEncrypt(req.KeyId, req.Algorithm, req.Plaintext, req.Aad, req.Iv)
		if err != nil {
			return nil, err
		}
		return &api.EncryptResponse{KeyId: k.ID, CiphertextBlob: blob, Iv: blobNonce(blob), RequestId: reqID, Algorithm: instAlgorithm, PaddingMode: req.PaddingMode}, nil
	case "AdvanceEncrypt":
		var req api.AdvanceEncryptRequest
		if err := instParse(body, &req); err != nil {
			return nil, err
		}
		k, blob, err := s.instEncrypt(req.KeyId, req.Algorithm, req.Plaintext, req.Aad, req.Iv)
		if err != nil {
			return nil, err
		}
		return &api.AdvanceEncryptResponse{KeyId: k.ID, CiphertextBlob: blob, Iv: blobNonce(blob), RequestId: reqID, Algorithm: instAlgorithm, PaddingMode: req.PaddingMode, KeyVersionId: k.ID}, nil
	case "GetPublicKey":
		var req api.GetPublicKeyRequest
		if err := instParse(body, &req); err != nil {
			return nil, err
		}
		k, der, err := s.instPublicKey(req.KeyId)
		if err != nil {
			return nil, err
		}
		return &api.GetPublicKeyResponse{KeyId: k.ID, PublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), RequestId: reqID}, nil
	case "Decrypt":
		var req api.DecryptRequest
		if err := instParse(body, &req); err != nil {
			return nil, err
		}
		if instAsymmetric(req.Algorithm) {
			k, pt, err := s.instDecryptAsym(req.KeyId, req.Algorithm, req.CiphertextBlob, req.Aad, req.Iv)
			if err != nil {
				return nil, err
			}
			return &api.DecryptResponse{KeyId: k.ID, Plaintext: pt, RequestId: reqID, Algorithm: req.Algorithm}, nil
		}
		k, pt, err := s.instDecrypt(req.KeyId, req.Algorithm, req.CiphertextBlob, req.Aad, req.Iv)
		if err != nil {
			return nil, err
		}
		return &api.DecryptResponse{KeyId: k.ID, Plaintext: pt, RequestId: reqID, Algorithm: instAlgorithm, PaddingMode: req.PaddingMode}, nil
	default: // AdvanceDecrypt
		var req api.AdvanceDecryptRequest
		if err := instParse(body, &req); err != nil {
			return nil, err
		}
		k, pt, err := s.instDecrypt(req.KeyId, req.Algorithm, req.CiphertextBlob, req.Aad, req.Iv)
		if err != nil {
			return nil, err
		}
		return &api.AdvanceDecryptResponse{KeyId: k.ID, Plaintext: pt, RequestId: reqID, Algorithm: instAlgorithm, PaddingMode: req.PaddingMode, KeyVersionId: k.ID}, nil
	}
}

func instParse(body []byte, m proto.Message) *instError {
	if err := proto.Unmarshal(body, m); err != nil {
		return instErr(http.StatusBadRequest, "InvalidParameter", fmt.Sprintf("The request body is not a valid %s message: %v.", m.ProtoReflect().Descriptor().Name(), err))
	}
	return nil
}

func instInvalid(format string, args ...any) *instError {
	return instErr(http.StatusBadRequest, "InvalidParameter", fmt.Sprintf(format, args...))
}

func instCheckAlgorithm(alg string) *instError {
	if alg != "" && alg != instAlgorithm {
		return instInvalid("The Algorithm %q is not supported by the emulator; it does %s only.", alg, instAlgorithm)
	}
	return nil
}

// instKey resolves the key a request names (ID or alias, in any instance)
// and checks that it is usable for symmetric cryptography.
func (s *Server) instKey(ref string) (*cmk, *instError) {
	k, ierr := s.instResolve(ref)
	if ierr != nil {
		return nil, ierr
	}
	if err := s.store.usable(k); err != nil {
		return nil, instStoreErr(err)
	}
	return k, nil
}

func (s *Server) instDataKey(ref string, n int32, aad []byte) (*cmk, []byte, []byte, *instError) {
	if n == 0 {
		n = 32
	}
	if n < 1 || n > 1024 {
		return nil, nil, nil, instInvalid("The NumberOfBytes %d is not within 1 and 1024.", n)
	}
	k, err := s.instKey(ref)
	if err != nil {
		return nil, nil, nil, err
	}
	pt := make([]byte, n)
	_, _ = rand.Read(pt)
	return k, pt, k.seal(pt, aad), nil
}

func (s *Server) instEncrypt(ref, alg string, pt, aad, iv []byte) (*cmk, []byte, *instError) {
	if err := instCheckAlgorithm(alg); err != nil {
		return nil, nil, err
	}
	if len(pt) == 0 || len(pt) > instMaxPlaintext {
		return nil, nil, instInvalid("The Plaintext must be 1 to %d bytes; it is %d.", instMaxPlaintext, len(pt))
	}
	if len(iv) != 0 && len(iv) != blobNonceSize {
		return nil, nil, instInvalid("The Iv must be %d bytes for %s; it is %d.", blobNonceSize, instAlgorithm, len(iv))
	}
	k, err := s.instKey(ref)
	if err != nil {
		return nil, nil, err
	}
	if len(iv) == 0 {
		return k, k.seal(pt, aad), nil
	}
	return k, k.sealNonce(pt, aad, iv), nil
}

func (s *Server) instDecrypt(ref, alg string, blob, aad, iv []byte) (*cmk, []byte, *instError) {
	if err := instCheckAlgorithm(alg); err != nil {
		return nil, nil, err
	}
	if len(blob) == 0 {
		return nil, nil, instInvalid("The CiphertextBlob is missing.")
	}
	var named *cmk
	if ref != "" {
		var ierr *instError
		if named, ierr = s.instKey(ref); ierr != nil {
			return nil, nil, ierr
		}
	}
	k, pt, err := s.store.decryptBlob(AlibabaInstance, "", "", blob, aad)
	if err != nil {
		return nil, nil, instStoreErr(err)
	}
	if named != nil && named.ID != k.ID {
		return nil, nil, instInvalid("The CiphertextBlob is invalid: it was not made with key %s.", named.ID)
	}
	if len(iv) != 0 && !bytes.Equal(iv, blobNonce(blob)) {
		return nil, nil, instInvalid("The CiphertextBlob is invalid: the Iv is not the one it was made with.")
	}
	return k, pt, nil
}

// instAsymmetric reports whether alg names one of the instance's
// asymmetric encryption algorithms (RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1,
// SM2PKE): a Decrypt with one of them is an asymmetric decryption.
func instAsymmetric(alg string) bool {
	return strings.HasPrefix(alg, "RSAES_") || alg == "SM2PKE"
}

// instResolve resolves the key a request names (ID or alias, in any
// instance) without checking its state or kind.
func (s *Server) instResolve(ref string) (*cmk, *instError) {
	if ref == "" {
		return nil, instInvalid("The KeyId is missing.")
	}
	k, err := s.store.resolveAnyRegion(AlibabaInstance, ref)
	if err != nil {
		return nil, instStoreErr(err)
	}
	return k, nil
}

// instPublicKey returns the DER SubjectPublicKeyInfo of the asymmetric
// key ref names.
func (s *Server) instPublicKey(ref string) (*cmk, []byte, *instError) {
	k, ierr := s.instResolve(ref)
	if ierr != nil {
		return nil, nil, ierr
	}
	k, der, err := s.store.publicKey(AlibabaInstance, "", "", k.ID)
	if err != nil {
		return nil, nil, instStoreErr(err)
	}
	return k, der, nil
}

// instDecryptAsym decrypts blob with the asymmetric key ref names: an
// RSAES-OAEP (SHA-256) ciphertext with an RSA key, an SM2 one in the
// plain encoding with an SM2 key.
func (s *Server) instDecryptAsym(ref, alg string, blob, aad, iv []byte) (*cmk, []byte, *instError) {
	if alg != instOAEP && alg != instSM2 {
		return nil, nil, instInvalid("The Algorithm %q is not supported by the emulator for asymmetric keys; it does %s and %s only.", alg, instOAEP, instSM2)
	}
	if len(aad) != 0 || len(iv) != 0 {
		return nil, nil, instInvalid("The Aad and Iv are for symmetric keys; %s takes neither.", alg)
	}
	if len(blob) == 0 {
		return nil, nil, instInvalid("The CiphertextBlob is missing.")
	}
	k, ierr := s.instResolve(ref)
	if ierr != nil {
		return nil, nil, ierr
	}
	var pt []byte
	var err error
	if alg == instSM2 {
		k, pt, err = s.store.decryptSM2(AlibabaInstance, "", "", k.ID, blob, sm2Plain)
	} else {
		k, pt, err = s.store.decryptOAEP(AlibabaInstance, "", "", k.ID, blob)
	}
	switch {
	case err == errAuth:
		return nil, nil, instInvalid("The CiphertextBlob is invalid: it does not decrypt with key %s and %s.", k.ID, alg)
	case err != nil:
		return nil, nil, instStoreErr(err)
	}
	return k, pt, nil
}

func instStoreErr(err error) *instError {
	switch err {
	case errNoKey:
		return instErr(http.StatusNotFound, "Forbidden.KeyNotFound", "The specified key is not found.")
	case errNoAlias:
		return instErr(http.StatusNotFound, "Forbidden.AliasNotFound", "The specified alias is not found.")
	case errDisabled:
		return instErr(http.StatusBadRequest, "Rejected.Disabled", "The request was rejected because the key state is Disabled.")
	case errPending:
		return instErr(http.StatusBadRequest, "Rejected.PendingDeletion", "The request was rejected because the key state is PendingDeletion.")
	case errAuth:
		return instInvalid("The CiphertextBlob is invalid: the ciphertext does not authenticate (other Aad, altered, or another key's).")
	case errUsage:
		return instErr(http.StatusBadRequest, "UnsupportedOperation", "Rejected.UnsupportedOperation: the operation does not suit the key's spec and usage (a symmetric key used as an asymmetric one, or the reverse).")
	default:
		return instInvalid("The CiphertextBlob is invalid: %v.", err)
	}
}

// resolveAnyRegion is resolve over every region (KMS instance) of cloud
// c; an alias must name exactly one key.
func (s *store) resolveAnyRegion(c Cloud, ref string) (*cmk, error) {
	if strings.HasPrefix(ref, "alias/") {
		s.mu.Lock()
		id, n := "", 0
		for _, k := range s.keys {
			if k.Cloud == c && slices.Contains(k.Aliases, ref) {
				id, n = k.ID, n+1
			}
		}
		s.mu.Unlock()
		if n != 1 {
			return nil, errNoAlias
		}
		ref = id
	}
	return s.resolve(c, "", "", ref)
}

// newTLSConfig generates a self-signed CA and a server certificate it
// signs for 127.0.0.1, ::1 and localhost, both valid for 10 years, and
// returns the TLS listener's configuration and the CA certificate's PEM.
func newTLSConfig() (*tls.Config, []byte, error) {
	fail := func(err error) (*tls.Config, []byte, error) {
		return nil, nil, fmt.Errorf("kmsemu: generating the TLS certificates: %w", err)
	}
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		return n
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fail(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kmsemu test CA", Organization: []string{"kmsfs KMS emulator"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fail(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fail(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fail(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"kmsfs KMS emulator"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fail(err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}},
		// The SDK presents the client key's certificate when it signs
		// with a client key file; the signature is what authenticates.
		ClientAuth: tls.RequestClientCert,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
	}
	return cfg, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}
