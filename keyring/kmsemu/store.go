package kmsemu

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// Cloud names one of the emulated services.
type Cloud string

// The emulated clouds.
const (
	Alibaba Cloud = "alibaba"
	Tencent Cloud = "tencent"
	Huawei  Cloud = "huawei"
	// AlibabaInstance is an Alibaba Cloud KMS instance (dedicated KMS,
	// "dkms-gcs"). Its keys' Region is the instance ID (e.g. "kst-test");
	// its credentials are client keys (ID and PublicKey).
	AlibabaInstance Cloud = "alibaba-instance"
)

func (c Cloud) valid() bool {
	return c == Alibaba || c == Tencent || c == Huawei || c == AlibabaInstance
}

// KeyState is the life-cycle state of a CMK.
type KeyState string

// The CMK states kmsfs cares about.
const (
	Enabled         KeyState = "Enabled"
	Disabled        KeyState = "Disabled"
	PendingDeletion KeyState = "PendingDeletion"
)

// Key describes a customer master key held by the emulator. Its secret
// never leaves the emulator.
type Key struct {
	Cloud   Cloud    `json:"cloud"`
	ID      string   `json:"id"`
	Region  string   `json:"region"`
	Project string   `json:"project,omitempty"` // Huawei project ID
	State   KeyState `json:"state"`
	Aliases []string `json:"aliases,omitempty"`
	// DeletionDate is set while PendingDeletion.
	DeletionDate time.Time `json:"deletion_date,omitzero"`
	// Spec is empty for a symmetric key (AES-256, ENCRYPT_DECRYPT) or
	// names an asymmetric decryption key: one of RSASpecs, or the cloud's
	// name in SM2Specs.
	Spec string `json:"spec,omitempty"`
}

// RSASpecs are the RSA key specs the emulator creates, for RSAES-OAEP
// with SHA-256 (the clouds call them RSA_2048 and so on).
var RSASpecs = map[string]int{"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}

// SM2Specs are the names of SM2 decryption keys in the clouds that have
// them: Tencent's KeyUsage ASYMMETRIC_DECRYPT_SM2 ("SM2" here), Huawei's
// key_spec SM2 and a KMS instance's KeySpec EC_SM2.
var SM2Specs = map[Cloud]string{Tencent: "SM2", Huawei: "SM2", AlibabaInstance: "EC_SM2"}

type cmk struct {
	Key
	secret []byte          // 32 bytes, symmetric keys only
	priv   *rsa.PrivateKey // RSA keys only
	sm2    *sm2.PrivateKey // SM2 keys only
}

// asymmetric reports whether k is an asymmetric (RSA or SM2) key.
func (k *cmk) asymmetric() bool { return k.priv != nil || k.sm2 != nil }

// specKind tells what spec names in cloud c: an RSA key of bits bits, or
// an SM2 key; ok is false for a spec the emulator does not create there.
func specKind(c Cloud, spec string) (bits int, isSM2, ok bool) {
	if bits, ok := RSASpecs[spec]; ok {
		return bits, false, true
	}
	if n, ok := SM2Specs[c]; ok && n == spec {
		return 0, true, true
	}
	return 0, false, false
}

// Errors of the key store, mapped to each cloud's codes by the handlers.
var (
	errNoKey      = errors.New("key not found")
	errNoAlias    = errors.New("alias not found")
	errDisabled   = errors.New("key disabled")
	errPending    = errors.New("key pending deletion")
	errCiphertext = errors.New("ciphertext malformed")
	errAuth       = errors.New("ciphertext does not authenticate (wrong context or altered)")
	// errUsage: a symmetric operation on an asymmetric key or the
	// reverse (the clouds answer with their own usage error).
	errUsage = errors.New("the key's usage does not allow this operation")
)

type store struct {
	mu      sync.Mutex
	keys    map[string]*cmk   // by ID
	aliases map[string]string // cloud|region|alias -> ID
}

func newStore() *store {
	return &store{keys: map[string]*cmk{}, aliases: map[string]string{}}
}

func aliasKey(c Cloud, region, alias string) string {
	return string(c) + "|" + region + "|" + alias
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// KeySpec describes a key to create.
type KeySpec struct {
	Cloud   Cloud
	Region  string
	Project string // Huawei: the project the key belongs to
	ID      string // optional; a random UUID if empty
	Alias   string // optional, e.g. "alias/backup" (Alibaba)
	// Spec is empty for a symmetric key, or names an asymmetric
	// decryption key: one of RSASpecs, or SM2Specs[Cloud].
	Spec string
}

func (s *store) create(spec KeySpec) (Key, error) {
	if !spec.Cloud.valid() {
		return Key{}, fmt.Errorf("unknown cloud %q", spec.Cloud)
	}
	if spec.Region == "" {
		return Key{}, errors.New("region required")
	}
	if spec.Cloud == Huawei && spec.Project == "" {
		return Key{}, errors.New("huawei keys need a project ID")
	}
	var priv *rsa.PrivateKey
	var sm2priv *sm2.PrivateKey
	if spec.Spec != "" {
		bits, isSM2, ok := specKind(spec.Cloud, spec.Spec)
		var err error
		switch {
		case !ok:
			return Key{}, fmt.Errorf("unknown key spec %q for %s", spec.Spec, spec.Cloud)
		case isSM2:
			sm2priv, err = sm2.GenerateKey(rand.Reader)
		default:
			priv, err = rsa.GenerateKey(rand.Reader, bits)
		}
		if err != nil {
			return Key{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := spec.ID
	if id == "" {
		id = newUUID()
	}
	if _, dup := s.keys[id]; dup {
		return Key{}, fmt.Errorf("key %s already exists", id)
	}
	k := &cmk{Key: Key{Cloud: spec.Cloud, ID: id, Region: spec.Region, Project: spec.Project, State: Enabled, Spec: spec.Spec}}
	if priv != nil || sm2priv != nil {
		k.priv, k.sm2 = priv, sm2priv
	} else {
		k.secret = make([]byte, 32)
		_, _ = rand.Read(k.secret)
	}
	s.keys[id] = k
	if spec.Alias != "" {
		if err := s.aliasLocked(k, spec.Alias); err != nil {
			delete(s.keys, id)
			return Key{}, err
		}
	}
	return k.snapshot(), nil
}

func (k *cmk) snapshot() Key {
	c := k.Key
	c.Aliases = append([]string(nil), k.Aliases...)
	return c
}

func (s *store) alias(id, alias string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[id]
	if k == nil {
		return errNoKey
	}
	return s.aliasLocked(k, alias)
}

func (s *store) aliasLocked(k *cmk, alias string) error {
	if !strings.HasPrefix(alias, "alias/") || len(alias) <= len("alias/") {
		return fmt.Errorf("alias %q: want alias/NAME", alias)
	}
	ak := aliasKey(k.Cloud, k.Region, alias)
	if _, dup := s.aliases[ak]; dup {
		return fmt.Errorf("alias %s already exists", alias)
	}
	s.aliases[ak] = k.ID
	k.Aliases = append(k.Aliases, alias)
	return nil
}

func (s *store) setState(id string, st KeyState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[id]
	if k == nil {
		return errNoKey
	}
	switch st {
	case Enabled, Disabled:
		k.DeletionDate = time.Time{}
	case PendingDeletion:
		k.DeletionDate = time.Now().Add(7 * 24 * time.Hour).UTC().Truncate(time.Second)
	default:
		return fmt.Errorf("unknown key state %q", st)
	}
	k.State = st
	return nil
}

func (s *store) list() []Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// resolve finds the key a request names (ID or alias) in cloud and region.
func (s *store) resolve(c Cloud, region, project, ref string) (*cmk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := ref
	if strings.HasPrefix(ref, "alias/") {
		id = s.aliases[aliasKey(c, region, ref)]
		if id == "" {
			return nil, errNoAlias
		}
	}
	k := s.keys[id]
	if k == nil || k.Cloud != c || (region != "" && k.Region != region) || (project != "" && k.Project != project) {
		return nil, errNoKey
	}
	return k, nil
}

// usable reports whether k can be used for symmetric cryptography now.
func (s *store) usable(k *cmk) error {
	if err := s.state(k); err != nil {
		return err
	}
	if k.asymmetric() {
		return errUsage
	}
	return nil
}

// usableAsym reports whether k can be used for asymmetric decryption now.
func (s *store) usableAsym(k *cmk) error {
	if err := s.state(k); err != nil {
		return err
	}
	if !k.asymmetric() {
		return errUsage
	}
	return nil
}

func (s *store) state(k *cmk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch k.State {
	case Disabled:
		return errDisabled
	case PendingDeletion:
		return errPending
	}
	return nil
}

// publicKeyDER returns the DER SubjectPublicKeyInfo of an asymmetric key:
// an SM2 key as id-ecPublicKey on the curve 1.2.156.10197.1.301, as the
// clouds hand it out.
func (k *cmk) publicKeyDER() ([]byte, error) {
	switch {
	case k.priv != nil:
		return x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
	case k.sm2 != nil:
		return smx509.MarshalPKIXPublicKey(&k.sm2.PublicKey)
	}
	return nil, errUsage
}

// publicKey returns the DER SubjectPublicKeyInfo of the asymmetric key a
// request names. The clouds hand out public keys of enabled keys only.
func (s *store) publicKey(c Cloud, region, project, ref string) (*cmk, []byte, error) {
	k, err := s.resolve(c, region, project, ref)
	if err != nil {
		return nil, nil, err
	}
	if err := s.usableAsym(k); err != nil {
		return k, nil, err
	}
	der, err := k.publicKeyDER()
	return k, der, err
}

// decryptOAEP opens ciphertext, RSAES-OAEP with SHA-256 (and MGF1 with
// SHA-256, empty label), under the RSA key a request names.
func (s *store) decryptOAEP(c Cloud, region, project, ref string, ciphertext []byte) (*cmk, []byte, error) {
	k, err := s.resolve(c, region, project, ref)
	if err != nil {
		return nil, nil, err
	}
	if err := s.usableAsym(k); err != nil {
		return k, nil, err
	}
	if k.priv == nil {
		return k, nil, errUsage
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, k.priv, ciphertext, nil)
	if err != nil {
		return k, nil, errAuth
	}
	return k, pt, nil
}

// sm2Encoding is the encoding of SM2 ciphertexts a service takes.
type sm2Encoding int

const (
	// sm2DER is the DER SM2Cipher of GM/T 0009 (SEQUENCE of x, y, C3,
	// C2), which Tencent and Huawei take.
	sm2DER sm2Encoding = iota
	// sm2Plain is 0x04 || x || y || C3 || C2, which a KMS instance takes.
	sm2Plain
)

// decryptSM2 opens ciphertext, SM2 public key encryption (with SM3) in
// the encoding enc and no other, under the SM2 key a request names.
func (s *store) decryptSM2(c Cloud, region, project, ref string, ciphertext []byte, enc sm2Encoding) (*cmk, []byte, error) {
	k, err := s.resolve(c, region, project, ref)
	if err != nil {
		return nil, nil, err
	}
	if err := s.usableAsym(k); err != nil {
		return k, nil, err
	}
	if k.sm2 == nil {
		return k, nil, errUsage
	}
	// The SM2 library tells the encodings apart by the first byte: keep
	// to the one the service takes.
	var opts *sm2.DecrypterOpts
	switch {
	case len(ciphertext) == 0:
		return k, nil, errAuth
	case enc == sm2DER && ciphertext[0] == 0x30:
		opts = sm2.ASN1DecrypterOpts
	case enc == sm2Plain && ciphertext[0] == 0x04:
		opts = sm2.NewPlainDecrypterOpts(sm2.C1C3C2)
	default:
		return k, nil, errAuth
	}
	pt, err := k.sm2.Decrypt(nil, ciphertext, opts)
	if err != nil {
		return k, nil, errAuth
	}
	return k, pt, nil
}

// Wrapped blob layout (before the cloud's text encoding):
//
//	version   1 byte = 1
//	idLen     1 byte
//	keyID     idLen bytes
//	nonce     12 bytes
//	sealed    GCM(secret, nonce, plaintext, ad)
//
// with ad = "kmsemu v1" || cloud || 0 || keyID || 0 || u32(len(ctx)) || ctx,
// so a blob opens only under its key and its exact (canonical) context.
const blobVersion = 1

func blobAD(c Cloud, id string, ctx []byte) []byte {
	ad := []byte("kmsemu v1")
	ad = append(ad, c...)
	ad = append(ad, 0)
	ad = append(ad, id...)
	ad = append(ad, 0)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(ctx)))
	return append(ad, ctx...)
}

func (k *cmk) seal(plaintext, ctx []byte) []byte {
	nonce := make([]byte, blobNonceSize)
	_, _ = rand.Read(nonce)
	return k.sealNonce(plaintext, ctx, nonce)
}

// blobNonceSize is the length of a blob's GCM nonce.
const blobNonceSize = 12

// sealNonce is seal with a caller-chosen nonce of blobNonceSize bytes
// (the KMS instance API lets the caller pass the IV).
func (k *cmk) sealNonce(plaintext, ctx, nonce []byte) []byte {
	block, _ := aes.NewCipher(k.secret)
	gcm, _ := cipher.NewGCM(block)
	out := []byte{blobVersion, byte(len(k.ID))}
	out = append(out, k.ID...)
	out = append(out, nonce...)
	return gcm.Seal(out, nonce, plaintext, blobAD(k.Cloud, k.ID, ctx))
}

// blobNonce returns the GCM nonce recorded in a well-formed blob.
func blobNonce(blob []byte) []byte {
	n := 2 + int(blob[1])
	return blob[n : n+blobNonceSize]
}

// blobKeyID returns the key ID recorded in a blob.
func blobKeyID(blob []byte) (string, error) {
	if len(blob) < 2 || blob[0] != blobVersion || len(blob) < 2+int(blob[1])+12+16 {
		return "", errCiphertext
	}
	return string(blob[2 : 2+int(blob[1])]), nil
}

func (k *cmk) open(blob, ctx []byte) ([]byte, error) {
	id, err := blobKeyID(blob)
	if err != nil {
		return nil, err
	}
	if id != k.ID {
		return nil, errAuth
	}
	block, _ := aes.NewCipher(k.secret)
	gcm, _ := cipher.NewGCM(block)
	rest := blob[2+len(id):]
	pt, err := gcm.Open(nil, rest[:12], rest[12:], blobAD(k.Cloud, k.ID, ctx))
	if err != nil {
		return nil, errAuth
	}
	return pt, nil
}

// decryptBlob finds the key inside blob (in cloud c) and opens it.
func (s *store) decryptBlob(c Cloud, region, project string, blob, ctx []byte) (*cmk, []byte, error) {
	id, err := blobKeyID(blob)
	if err != nil {
		return nil, nil, err
	}
	k, err := s.resolve(c, region, project, id)
	if err != nil {
		// A blob naming a key this account cannot see: the real services
		// report the key as not found.
		return nil, nil, err
	}
	if err := s.usable(k); err != nil {
		return k, nil, err
	}
	pt, err := k.open(blob, ctx)
	return k, pt, err
}
