package cloud

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/url"
	"syscall"
	"time"

	"github.com/kmsfs/kmsfs/keyring"
)

// Policy bounds every call a provider makes: each HTTP attempt has its own
// timeout, the whole call (attempts plus backoff) has a total budget, and
// only throttling and transient failures are retried, with exponential
// backoff and full jitter. The caller's context ends it sooner.
type Policy struct {
	// AttemptTimeout bounds one request (connect, send, wait, read).
	AttemptTimeout time.Duration
	// Budget bounds the whole call, retries and sleeps included.
	Budget time.Duration
	// MaxAttempts caps the number of requests per call.
	MaxAttempts int
	// BaseDelay is the first backoff ceiling after a transient failure;
	// it doubles per attempt up to MaxDelay.
	BaseDelay time.Duration
	// ThrottleDelay is the first backoff ceiling after throttling.
	ThrottleDelay time.Duration
	// MaxDelay caps one backoff sleep.
	MaxDelay time.Duration
}

// DefaultPolicy is what the providers use: a call gives up after 20 s at
// most, an attempt after 8 s.
var DefaultPolicy = Policy{
	AttemptTimeout: 8 * time.Second,
	Budget:         20 * time.Second,
	MaxAttempts:    6,
	BaseDelay:      100 * time.Millisecond,
	ThrottleDelay:  400 * time.Millisecond,
	MaxDelay:       4 * time.Second,
}

// Do runs op until it succeeds, fails permanently, or the attempts, the
// budget or ctx run out. op gets a context bounded by the attempt timeout
// and must return nil or an *Error whose Kind says whether to retry
// (ErrThrottled, ErrUnavailable) or not (anything else). If ctx ends, Do
// returns an *Error of kind ErrUnavailable wrapping ctx.Err() (fill wraps
// it with the call's provider, op and key).
func (p Policy) Do(ctx context.Context, base Error, op func(ctx context.Context) error) error {
	start := time.Now()
	deadline := start.Add(p.Budget)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var last *Error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return canceled(base, err, last)
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return exhausted(base, last, attempt-1)
		}
		actx, cancel := context.WithTimeout(ctx, min(p.AttemptTimeout, remaining))
		err := op(actx)
		attemptErr := actx.Err()
		cancel()
		if err == nil {
			return nil
		}
		var ce *Error
		if !errors.As(err, &ce) {
			ce = Classify(base, err)
		}
		if ctx.Err() != nil {
			return canceled(base, ctx.Err(), ce)
		}
		if attemptErr == context.DeadlineExceeded && ce.Kind == keyring.ErrUnavailable && ce.Code == "" {
			ce.Message = "no answer within " + min(p.AttemptTimeout, remaining).Round(time.Millisecond).String()
		}
		last = ce
		var ceiling time.Duration
		switch ce.Kind {
		case keyring.ErrThrottled:
			ceiling = p.ThrottleDelay
		case keyring.ErrUnavailable:
			ceiling = p.BaseDelay
		default:
			return ce
		}
		if attempt >= p.MaxAttempts {
			return exhausted(base, last, attempt)
		}
		for i := 1; i < attempt && ceiling < p.MaxDelay; i++ {
			ceiling *= 2
		}
		ceiling = min(ceiling, p.MaxDelay)
		sleep := ceiling/2 + rand.N(ceiling/2+1) // "equal jitter": never zero
		if time.Now().Add(sleep).After(deadline) {
			return exhausted(base, last, attempt)
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return canceled(base, ctx.Err(), last)
		case <-t.C:
		}
	}
}

func canceled(base Error, err error, last *Error) error {
	e := base
	e.Kind = keyring.ErrUnavailable
	e.Cause = err
	e.Message = err.Error()
	if last != nil {
		e.Message += " (last failure: " + last.Kind.Error()
		if last.Code != "" {
			e.Message += ": " + last.Code
		}
		e.Message += ")"
	}
	return &e
}

func exhausted(base Error, last *Error, attempts int) error {
	if last == nil {
		e := base
		e.Kind = keyring.ErrUnavailable
		e.Message = "no time left for a request"
		e.Cause = context.DeadlineExceeded
		return &e
	}
	e := *last
	e.Attempts = attempts
	return &e
}

// Classify turns an error that did not come from the service's answer
// (transport, context, SDK client errors) into an *Error. Transport
// failures are ErrUnavailable; anything else the SDK reports before
// sending is treated as ErrUnavailable too, unless it is a context error.
func Classify(base Error, err error) *Error {
	e := base
	e.Cause = err
	e.Kind = keyring.ErrUnavailable
	e.Message = err.Error()
	var ue *url.Error
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, context.Canceled):
		e.Message = "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		e.Message = "timed out"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Message = "endpoint unreachable: connection refused"
	case errors.As(err, &oe) && oe.Op == "dial":
		e.Message = "endpoint unreachable: " + oe.Err.Error()
	case errors.As(err, &ne) && ne.Timeout():
		e.Message = "endpoint did not answer in time"
	case errors.As(err, &ue):
		e.Message = "endpoint unreachable or connection lost: " + ue.Err.Error()
	}
	return &e
}
