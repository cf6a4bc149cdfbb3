package cloud

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/kmsfs/kmsfs/keyring"
)

// With returns a copy of e, the provider, operation, key and region of a
// call, with what went wrong set.
func (e Error) With(kind error, msg string) *Error {
	e.Kind, e.Message = kind, msg
	return &e
}

// Malformed is the error for an answer of the service that cannot be used.
func (e Error) Malformed(what string) *Error {
	return e.With(keyring.ErrUnavailable, "malformed answer: "+what)
}

// Credentials is the error for a credential chain that gave no
// credentials: ErrBadCredentials with hint, or ErrUnavailable if the
// lookup was cut short by its context.
func (e Error) Credentials(err error, hint string) *Error {
	e.Kind, e.Message, e.Hint = keyring.ErrBadCredentials, err.Error(), hint
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		e.Kind, e.Cause = keyring.ErrUnavailable, err
	}
	return &e
}

// DataKey decodes a base64 data key returned by the service (for the call
// e) into locked memory. Anything but a DataKeySize key is an error of the
// given kind.
func DataKey(e Error, b64 string, kind error) (*keyring.Key, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != keyring.DataKeySize {
		clear(raw)
		return nil, e.With(kind, fmt.Sprintf("service returned a plaintext that is not a %d-byte key", keyring.DataKeySize))
	}
	return keyring.NewKeyFrom(raw)
}
