package kmsemu

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// The admin API, on the same port as the emulated services:
//
//	GET  /_emulator/keys                      list keys
//	POST /_emulator/keys                      {"cloud","region","project","id","alias","spec"} -> key
//	POST /_emulator/keys/{id}/state           {"state":"Enabled"|"Disabled"|"PendingDeletion"}
//	POST /_emulator/keys/{id}/aliases         {"alias":"alias/NAME"}
//	GET  /_emulator/faults                    list faults
//	PUT  /_emulator/faults                    [Fault...] replaces all faults
//	POST /_emulator/faults                    Fault, added
//	DELETE /_emulator/faults                  clear
//	POST /_emulator/credentials               Credential, added: {"cloud","id","secret","denied"},
//	                                          or {"cloud":"alibaba-instance","id","public_key"}
//
// Requests must come from a loopback address (the server only listens on
// one) and, for writes, carry Content-Type: application/json, which a web
// page cannot send cross-origin without a preflight the emulator never
// answers.
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") && r.Method != http.MethodDelete {
		adminErr(w, http.StatusUnsupportedMediaType, errors.New("admin writes need Content-Type: application/json"))
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/_emulator")
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	switch {
	case path == "/keys" && r.Method == http.MethodGet:
		adminJSON(w, s.Keys())
	case path == "/keys" && r.Method == http.MethodPost:
		var req struct {
			Cloud   Cloud  `json:"cloud"`
			Region  string `json:"region"`
			Project string `json:"project"`
			ID      string `json:"id"`
			Alias   string `json:"alias"`
			Spec    string `json:"spec"`
		}
		if err := dec.Decode(&req); err != nil {
			adminErr(w, http.StatusBadRequest, err)
			return
		}
		k, err := s.CreateKey(KeySpec(req))
		if err != nil {
			adminErr(w, http.StatusBadRequest, err)
			return
		}
		adminJSON(w, k)
	case strings.HasPrefix(path, "/keys/") && r.Method == http.MethodPost:
		rest := strings.TrimPrefix(path, "/keys/")
		id, sub, _ := strings.Cut(rest, "/")
		var err error
		switch sub {
		case "state":
			var req struct {
				State KeyState `json:"state"`
			}
			if err = dec.Decode(&req); err == nil {
				err = s.SetKeyState(id, req.State)
			}
		case "aliases":
			var req struct {
				Alias string `json:"alias"`
			}
			if err = dec.Decode(&req); err == nil {
				err = s.CreateAlias(id, req.Alias)
			}
		default:
			http.NotFound(w, r)
			return
		}
		if err != nil {
			adminErr(w, http.StatusBadRequest, err)
			return
		}
		adminJSON(w, map[string]string{"id": id})
	case path == "/faults" && r.Method == http.MethodGet:
		adminJSON(w, s.Faults())
	case path == "/faults" && r.Method == http.MethodPut:
		var fs []Fault
		if err := dec.Decode(&fs); err != nil {
			adminErr(w, http.StatusBadRequest, err)
			return
		}
		s.SetFaults(fs...)
		adminJSON(w, s.Faults())
	case path == "/faults" && r.Method == http.MethodPost:
		var f Fault
		if err := dec.Decode(&f); err != nil {
			adminErr(w, http.StatusBadRequest, err)
			return
		}
		s.AddFault(f)
		adminJSON(w, s.Faults())
	case path == "/faults" && r.Method == http.MethodDelete:
		s.ClearFaults()
		adminJSON(w, []Fault{})
	case path == "/credentials" && r.Method == http.MethodPost:
		var c Credential
		if err := dec.Decode(&c); err != nil {
			adminErr(w, http.StatusBadRequest, err)
			return
		}
		if err := s.AddCredential(c); err != nil {
			adminErr(w, http.StatusBadRequest, err)
			return
		}
		adminJSON(w, map[string]string{"id": c.ID})
	default:
		http.NotFound(w, r)
	}
}

func adminJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func adminErr(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// state is what the state file holds. Key secrets are stored so that
// wrapped keys survive a restart; the file is written 0600.
type state struct {
	Credentials []Credential `json:"credentials"`
	Keys        []stateKey   `json:"keys"`
}

type stateKey struct {
	Key
	Secret []byte `json:"secret,omitempty"`
	// Private is an asymmetric key's private key, PKCS #8 DER (an SM2
	// key's as id-ecPublicKey on the curve 1.2.156.10197.1.301).
	Private []byte `json:"private,omitempty"`
}

func (s *Server) load() error {
	b, err := os.ReadFile(s.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return s.save()
	}
	if err != nil {
		return fmt.Errorf("kmsemu: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("kmsemu: state file %s: %w", s.cfg.StateFile, err)
	}
	s.mu.Lock()
	for _, c := range st.Credentials {
		s.creds[string(c.Cloud)+"|"+c.ID] = c
	}
	s.mu.Unlock()
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	for _, k := range st.Keys {
		c := &cmk{Key: k.Key, secret: k.Secret}
		if k.Spec != "" {
			bits, isSM2, known := specKind(k.Cloud, k.Spec)
			p, err := smx509.ParsePKCS8PrivateKey(k.Private)
			rk, isRSA := p.(*rsa.PrivateKey)
			sk, _ := p.(*sm2.PrivateKey)
			switch {
			case err != nil || !known || len(k.Secret) != 0:
				return fmt.Errorf("kmsemu: state file %s: key %s is malformed", s.cfg.StateFile, k.ID)
			case isSM2 && sk != nil:
				c.sm2 = sk
			case !isSM2 && isRSA && rk.N.BitLen() == bits:
				c.priv = rk
			default:
				return fmt.Errorf("kmsemu: state file %s: key %s is malformed", s.cfg.StateFile, k.ID)
			}
		} else if len(k.Secret) != 32 {
			return fmt.Errorf("kmsemu: state file %s: key %s is malformed", s.cfg.StateFile, k.ID)
		}
		if !k.Cloud.valid() {
			return fmt.Errorf("kmsemu: state file %s: key %s is malformed", s.cfg.StateFile, k.ID)
		}
		s.store.keys[k.ID] = c
		for _, a := range k.Aliases {
			s.store.aliases[aliasKey(k.Cloud, k.Region, a)] = k.ID
		}
	}
	return nil
}

func (s *Server) save() error {
	if s.cfg.StateFile == "" {
		return nil
	}
	var st state
	s.mu.Lock()
	for _, c := range s.creds {
		st.Credentials = append(st.Credentials, c)
	}
	s.mu.Unlock()
	s.store.mu.Lock()
	for _, k := range s.store.keys {
		sk := stateKey{Key: k.snapshot(), Secret: k.secret}
		switch {
		case k.priv != nil:
			sk.Private, _ = x509.MarshalPKCS8PrivateKey(k.priv)
		case k.sm2 != nil:
			sk.Private, _ = smx509.MarshalPKCS8PrivateKey(k.sm2)
		}
		st.Keys = append(st.Keys, sk)
	}
	s.store.mu.Unlock()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.cfg.StateFile), ".kmsemu-state-*")
	if err != nil {
		return fmt.Errorf("kmsemu: saving state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("kmsemu: saving state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("kmsemu: saving state: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.cfg.StateFile); err != nil {
		return fmt.Errorf("kmsemu: saving state: %w", err)
	}
	return nil
}
