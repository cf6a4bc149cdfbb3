package cloud

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// CheckContext reports whether encCtx is acceptable as an encryption
// context map (Alibaba's and Tencent's EncryptionContext): empty, or a JSON
// object of string values written compactly, with keys sorted and unique.
//
// Those services parse the context into a map, so two different byte
// strings that parse to the same map (other spacing, key order, escapes)
// would unwrap the same key. kmsfs promises that a key unwraps only under
// the exact context bytes it was wrapped with; accepting only the one
// canonical spelling of each map keeps that promise. kmsfs's own context,
// {"kmsfs":"v1","volume":"<hex>"}, is canonical.
func CheckContext(encCtx []byte) error {
	if len(encCtx) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(encCtx))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return errors.New("encryption context is not a JSON object")
	}
	var keys []string
	pairs := map[string]string{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return fmt.Errorf("encryption context: %v", err)
		}
		k := kt.(string)
		vt, err := dec.Token()
		if err != nil {
			return fmt.Errorf("encryption context: %v", err)
		}
		v, ok := vt.(string)
		if !ok {
			return fmt.Errorf("encryption context: value of %q is not a string", k)
		}
		if _, dup := pairs[k]; dup {
			return fmt.Errorf("encryption context: key %q repeated", k)
		}
		pairs[k] = v
		keys = append(keys, k)
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("encryption context: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("encryption context: trailing data after the JSON object")
	}
	if !sort.StringsAreSorted(keys) {
		return errors.New("encryption context: keys not in sorted order")
	}
	if !bytes.Equal(CanonicalContext(pairs), encCtx) {
		return errors.New("encryption context is not in canonical form (compact JSON, no escapes beyond the required)")
	}
	return nil
}

// CanonicalContext writes a string map as compact JSON with sorted keys
// and no HTML escaping: the one spelling CheckContext accepts.
func CanonicalContext(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, k)
		b.WriteByte(':')
		writeJSONString(&b, m[k])
	}
	b.WriteByte('}')
	return b.Bytes()
}

func writeJSONString(b *bytes.Buffer, s string) {
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.WriteString(strings.TrimSuffix(sb.String(), "\n"))
}
