// Package kmsemu is a local emulator of the Alibaba Cloud, Tencent Cloud
// and Huawei Cloud KMS APIs that kmsfs uses, for tests and for trying
// kmsfs without a cloud account.
//
// One HTTP server on a loopback address (and, if Config.TLSAddr is set, on
// a second loopback address with TLS) speaks the four wire protocols (told
// apart by their requests) and a small admin API under /_emulator/:
//
//   - Alibaba: RPC style, POST /?Action=...&<params>, HMAC-SHA1 signature
//     version 1.0; Timestamp freshness and SignatureNonce replay checked;
//     errors as non-2xx {"Code","Message","RequestId","HostId"}.
//   - Tencent: TC3-HMAC-SHA256 over a JSON body; X-TC-Timestamp freshness;
//     every answer HTTP 200 {"Response":{...}} with Response.Error on
//     failure.
//   - Huawei: POST /v1.0/{project_id}/kms/<action> with SDK-HMAC-SHA256;
//     X-Sdk-Date freshness; errors as 4xx/5xx {"error":{"error_code",
//     "error_msg"}}.
//   - Alibaba KMS instance (dedicated KMS, "dkms-gcs", API version
//     dkms-gcs-0.2, as the alibabacloud-dkms-gcs-go-sdk sends it): POST /
//     with a protobuf body, the operation in x-kms-apiname, signed with
//     RSA PKCS#1 v1.5 SHA-256 by a client key whose public key the
//     credential holds; date freshness and content-sha256 checked; errors
//     as 4xx/5xx protobuf api.Error. Served on both listeners (the real
//     service is HTTPS only).
//
// The KMS instance's error codes are the emulator's choices where the
// real service's are not documented:
//
//	401 Unauthorized                 bad or missing signature, unknown client key ID
//	400 InvalidParam                 malformed Authorization, date, content-sha256 or
//	                                 x-kms- headers, content-sha256 not the body's
//	400 RequestTimeTooSkewed         date outside the skew window
//	400 InvalidApiVersion            x-kms-apiversion is not dkms-gcs-0.2
//	400 InvalidApiName               operation not emulated
//	403 Forbidden.NoPermission       credential marked Denied
//	404 Forbidden.KeyNotFound        unknown key (or alias: Forbidden.AliasNotFound)
//	400 Rejected.Disabled            key disabled
//	400 Rejected.PendingDeletion     key pending deletion
//	400 InvalidParameter             bad request body or field; a ciphertext that
//	                                 does not open (other AAD, altered, other key)
//	429 Rejected.Throttling          injected throttling
//	503 ServiceUnavailableTemporary  injected outage
//
// Every request's signature is verified against the configured
// credentials; CMKs are real AES-256-GCM keys and wrapped data keys are
// bound to the key and the encryption context (or AAD), with the key ID
// inside so that Decrypt needs no key ID. Faults (latency, throttling,
// outages) can be injected per cloud and API action, through the Go API
// or the admin API.
package kmsemu

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Credential is an access key the emulator accepts.
type Credential struct {
	Cloud  Cloud  `json:"cloud"`
	ID     string `json:"id"`     // AccessKeyId / SecretId / AK
	Secret string `json:"secret"` // AccessKeySecret / SecretKey / SK
	// Denied makes every KMS call by this credential fail with the
	// cloud's access-denied error (valid signature, no permission).
	Denied bool `json:"denied,omitempty"`
	// PublicKey is, for AlibabaInstance credentials (whose ID is the
	// client key ID, e.g. "KAAP.test", and whose Secret is unused), the
	// PEM of the client key's RSA public key ("PUBLIC KEY" or "RSA PUBLIC
	// KEY") or of its X.509 certificate ("CERTIFICATE").
	PublicKey string `json:"public_key,omitempty"`
}

// Config configures a Server.
type Config struct {
	// Addr is the listen address; "127.0.0.1:0" if empty. Only loopback
	// addresses are accepted.
	Addr string
	// TLSAddr, if set (e.g. "127.0.0.1:0"; loopback only), is a second
	// listen address where the same API is served over TLS, with a server
	// certificate for 127.0.0.1, ::1 and localhost signed by a CA that
	// Start generates (see CACertPEM). Client certificates are requested
	// but not required.
	TLSAddr string
	// Credentials are the access keys requests may be signed with.
	Credentials []Credential
	// MaxSkew is how far a request's timestamp may be from the
	// emulator's clock: 15 minutes (Alibaba, Alibaba KMS instance,
	// Huawei) and 5 minutes (Tencent) if zero.
	MaxSkew time.Duration
	// Now is the emulator's clock; time.Now if nil.
	Now func() time.Time
	// StateFile, if set, is where keys and credentials are loaded from at
	// Start and saved to after every change.
	StateFile string
}

// Outage says how the emulator fails a request during an injected outage.
type Outage string

// Outage modes.
const (
	// OutageError answers with the cloud's "internal error / service
	// unavailable" response.
	OutageError Outage = "error"
	// OutageDrop closes the connection without an answer.
	OutageDrop Outage = "drop"
	// OutageHang never answers; the request waits until the client gives
	// up or the emulator closes.
	OutageHang Outage = "hang"
)

// Fault is a misbehaviour injected into matching requests.
type Fault struct {
	// Cloud limits the fault to one cloud; all if empty.
	Cloud Cloud `json:"cloud,omitempty"`
	// Action limits the fault to one API action (e.g. "Decrypt",
	// "GenerateDataKey", "create-datakey"); all if empty.
	Action string `json:"action,omitempty"`
	// Latency is added before the request is handled.
	Latency Duration `json:"latency,omitempty"`
	// Throttle is how many of the next matching requests are answered
	// with the cloud's throttling error; it counts down.
	Throttle int `json:"throttle,omitempty"`
	// ThrottleRate is the probability (0..1) that a matching request is
	// throttled.
	ThrottleRate float64 `json:"throttle_rate,omitempty"`
	// Outage, if set, fails every matching request that way.
	Outage Outage `json:"outage,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as "1.5s".
type Duration time.Duration

// MarshalText writes d like time.Duration.String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses "250ms", "2s"...
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Server is a running (or ready to run) emulator. Its methods are safe for
// concurrent use.
type Server struct {
	cfg   Config
	store *store

	mu     sync.Mutex
	creds  map[string]Credential // cloud|id
	faults []*Fault
	nonces map[string]time.Time // Alibaba SignatureNonce -> seen at
	stats  map[string]int       // cloud/action/outcome -> count

	ln      net.Listener
	tlsLn   net.Listener // nil without Config.TLSAddr
	caPEM   []byte       // the TLS listener's CA certificate
	srv     *http.Server
	closing chan struct{}
	once    sync.Once
}

// New returns a Server for cfg. Call Start to serve.
func New(cfg Config) *Server {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:     cfg,
		store:   newStore(),
		creds:   map[string]Credential{},
		nonces:  map[string]time.Time{},
		stats:   map[string]int{},
		closing: make(chan struct{}),
	}
	for _, c := range cfg.Credentials {
		s.creds[string(c.Cloud)+"|"+c.ID] = c
	}
	return s
}

// Start listens on the configured loopback address and serves in the
// background.
func (s *Server) Start() error {
	if err := checkLoopback(s.cfg.Addr); err != nil {
		return err
	}
	if s.cfg.TLSAddr != "" {
		if err := checkLoopback(s.cfg.TLSAddr); err != nil {
			return err
		}
	}
	if s.cfg.StateFile != "" {
		if err := s.load(); err != nil {
			return err
		}
	}
	var tlsCfg *tls.Config
	if s.cfg.TLSAddr != "" {
		var err error
		if tlsCfg, s.caPEM, err = newTLSConfig(); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("kmsemu: %w", err)
	}
	if tlsCfg != nil {
		tl, err := net.Listen("tcp", s.cfg.TLSAddr)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("kmsemu: TLS listener: %w", err)
		}
		s.tlsLn = tls.NewListener(tl, tlsCfg)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	go func() { _ = s.srv.Serve(ln) }()
	if s.tlsLn != nil {
		go func() { _ = s.srv.Serve(s.tlsLn) }()
	}
	return nil
}

// checkLoopback accepts host:port listen addresses on loopback only.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("kmsemu: listen address %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("kmsemu: listen address %q: the emulator serves loopback addresses only", addr)
	}
	return nil
}

// Addr is the address the server listens on, e.g. "127.0.0.1:41234".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server's base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return "http://" + s.Addr() }

// TLSAddr is the address the TLS listener listens on, e.g.
// "127.0.0.1:41235", or "" if there is none (no Config.TLSAddr, or not
// started).
func (s *Server) TLSAddr() string {
	if s.tlsLn == nil {
		return ""
	}
	return s.tlsLn.Addr().String()
}

// CACertPEM is the PEM of the CA certificate that signed the TLS
// listener's certificate (generated at Start), for clients to trust; nil
// if there is no TLS listener.
func (s *Server) CACertPEM() []byte {
	if s.tlsLn == nil {
		return nil
	}
	return append([]byte(nil), s.caPEM...)
}

// Close stops the server; hung requests are released.
func (s *Server) Close() error {
	s.once.Do(func() { close(s.closing) })
	if s.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	if s.tlsLn != nil {
		// Shutdown closes it unless its Serve had not started yet.
		_ = s.tlsLn.Close()
	}
	return err
}

// AddCredential adds (or replaces) an accepted access key (for
// AlibabaInstance, a client key: ID and PublicKey).
func (s *Server) AddCredential(c Credential) error {
	switch {
	case c.Cloud == AlibabaInstance:
		if c.ID == "" {
			return fmt.Errorf("kmsemu: %s credential needs a client key ID", c.Cloud)
		}
		if _, err := instancePublicKey(c.PublicKey); err != nil {
			return fmt.Errorf("kmsemu: %s credential %s: %w", c.Cloud, c.ID, err)
		}
	case !c.Cloud.valid() || c.ID == "" || c.Secret == "":
		return fmt.Errorf("kmsemu: credential needs a cloud, an ID and a secret")
	}
	s.mu.Lock()
	s.creds[string(c.Cloud)+"|"+c.ID] = c
	s.mu.Unlock()
	return s.save()
}

func (s *Server) credential(c Cloud, id string) (Credential, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cr, ok := s.creds[string(c)+"|"+id]
	return cr, ok
}

// CreateKey creates an enabled CMK.
func (s *Server) CreateKey(spec KeySpec) (Key, error) {
	k, err := s.store.create(spec)
	if err != nil {
		return Key{}, fmt.Errorf("kmsemu: %w", err)
	}
	return k, s.save()
}

// CreateAlias points alias (alias/NAME) at the key.
func (s *Server) CreateAlias(keyID, alias string) error {
	if err := s.store.alias(keyID, alias); err != nil {
		return fmt.Errorf("kmsemu: %w", err)
	}
	return s.save()
}

// SetKeyState enables, disables or schedules the deletion of a key.
func (s *Server) SetKeyState(keyID string, st KeyState) error {
	if err := s.store.setState(keyID, st); err != nil {
		return fmt.Errorf("kmsemu: %s: %w", keyID, err)
	}
	return s.save()
}

// PublicKeyPEM returns the public key of an asymmetric key as PEM, as a
// user would download it from the cloud's console.
func (s *Server) PublicKeyPEM(keyID string) ([]byte, error) {
	s.store.mu.Lock()
	k := s.store.keys[keyID]
	s.store.mu.Unlock()
	if k == nil {
		return nil, fmt.Errorf("kmsemu: %w", errNoKey)
	}
	if !k.asymmetric() {
		return nil, fmt.Errorf("kmsemu: key %s: %w", keyID, errUsage)
	}
	der, err := k.publicKeyDER()
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// DisableKey disables a key.
func (s *Server) DisableKey(keyID string) error { return s.SetKeyState(keyID, Disabled) }

// EnableKey enables a key (also cancels a scheduled deletion).
func (s *Server) EnableKey(keyID string) error { return s.SetKeyState(keyID, Enabled) }

// ScheduleKeyDeletion puts a key in the PendingDeletion state.
func (s *Server) ScheduleKeyDeletion(keyID string) error {
	return s.SetKeyState(keyID, PendingDeletion)
}

// Keys lists the keys.
func (s *Server) Keys() []Key { return s.store.list() }

// AddFault adds a fault; it applies to requests that arrive afterwards.
func (s *Server) AddFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fc := f
	s.faults = append(s.faults, &fc)
}

// SetFaults replaces all faults.
func (s *Server) SetFaults(fs ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	for _, f := range fs {
		fc := f
		s.faults = append(s.faults, &fc)
	}
}

// ClearFaults removes all faults.
func (s *Server) ClearFaults() { s.SetFaults() }

// Faults returns the current faults (Throttle shows what is left).
func (s *Server) Faults() []Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Fault, len(s.faults))
	for i, f := range s.faults {
		out[i] = *f
	}
	return out
}

// Count returns how many requests for cloud and action ended with outcome
// ("ok", an error code, "throttled", "outage"); action or outcome "" sums
// over all.
func (s *Server) Count(c Cloud, action, outcome string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.stats {
		p := strings.SplitN(k, "/", 3)
		if p[0] == string(c) && (action == "" || p[1] == action) && (outcome == "" || p[2] == outcome) {
			n += v
		}
	}
	return n
}

func (s *Server) count(c Cloud, action, outcome string) {
	s.mu.Lock()
	s.stats[string(c)+"/"+action+"/"+outcome]++
	s.mu.Unlock()
}

// decision is what the faults say about one request.
type decision struct {
	latency  time.Duration
	throttle bool
	outage   Outage
}

func (s *Server) decide(c Cloud, action string) decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d decision
	for _, f := range s.faults {
		if (f.Cloud != "" && f.Cloud != c) || (f.Action != "" && !strings.EqualFold(f.Action, action)) {
			continue
		}
		d.latency += time.Duration(f.Latency)
		if f.Outage != "" {
			d.outage = f.Outage
		}
		if f.Throttle > 0 {
			f.Throttle--
			d.throttle = true
		} else if f.ThrottleRate > 0 && mrand.Float64() < f.ThrottleRate {
			d.throttle = true
		}
	}
	return d
}

// applyFaults sleeps, drops, hangs or reports an outage/throttle. It
// returns "" when the request should go on, or the outcome it produced
// ("outage", "throttled") after writing whatever answer there is.
func (s *Server) applyFaults(w http.ResponseWriter, r *http.Request, c Cloud, action string, throttled, unavailable func()) string {
	d := s.decide(c, action)
	if d.latency > 0 {
		t := time.NewTimer(d.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		case <-s.closing:
			t.Stop()
		}
	}
	switch d.outage {
	case OutageHang:
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		drop(w)
		return "outage"
	case OutageDrop:
		drop(w)
		return "outage"
	case OutageError:
		unavailable()
		return "outage"
	}
	if d.throttle {
		throttled()
		return "throttled"
	}
	return ""
}

// drop closes the client connection without an answer.
func drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// ServeHTTP routes a request to the admin API or to the protocol its
// shape belongs to.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/_emulator/"):
		s.serveAdmin(w, r)
	case r.Header.Get("X-Kms-Apiname") != "":
		s.serveInstance(w, r)
	case strings.HasPrefix(r.URL.Path, "/v1.0/") || strings.HasPrefix(r.Header.Get("Authorization"), "SDK-HMAC-SHA256"):
		s.serveHuawei(w, r)
	case r.Header.Get("X-TC-Action") != "" || strings.HasPrefix(r.Header.Get("Authorization"), "TC3-"):
		s.serveTencent(w, r)
	case r.URL.Query().Get("Action") != "" || r.URL.Query().Get("SignatureMethod") != "":
		s.serveAlibaba(w, r)
	default:
		http.Error(w, "kmsemu: request matches no emulated protocol", http.StatusNotFound)
	}
}

func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := strings.ToUpper(hex.EncodeToString(b[:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// skew returns the allowed clock difference for cloud c.
func (s *Server) skew(c Cloud) time.Duration {
	if s.cfg.MaxSkew > 0 {
		return s.cfg.MaxSkew
	}
	if c == Tencent {
		return 5 * time.Minute
	}
	return 15 * time.Minute
}

func (s *Server) fresh(c Cloud, t time.Time) bool {
	d := s.cfg.Now().Sub(t)
	return d <= s.skew(c) && d >= -s.skew(c)
}

// nonceSeen records an Alibaba SignatureNonce and reports whether it was
// already used within the freshness window.
func (s *Server) nonceSeen(id, nonce string) bool {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.nonces) > 4096 {
		for k, t := range s.nonces {
			if now.Sub(t) > 2*s.skew(Alibaba) {
				delete(s.nonces, k)
			}
		}
	}
	k := id + "|" + nonce
	if _, ok := s.nonces[k]; ok {
		return true
	}
	s.nonces[k] = now
	return false
}

var errBadRequest = errors.New("bad request")

// HasCredential reports whether any access key of cloud c is accepted.
func (s *Server) HasCredential(c Cloud) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cr := range s.creds {
		if cr.Cloud == c {
			return true
		}
	}
	return false
}
