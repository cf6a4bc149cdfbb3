package cloud

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// NewTransport returns the HTTP transport the providers share among their
// SDK clients: proxy from the environment, TLS 1.2 or later with
// certificate verification, bounded dial and handshake times, keep-alive.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       60 * time.Second,
		ForceAttemptHTTP2:     true,
	}
}

// CtxTransport gives a context to requests made by an SDK client that
// accepts none: while a call holds the client (see Pool), Set installs the
// call's context and every request the client sends runs under it, so
// cancellation and the attempt timeout reach the socket.
type CtxTransport struct {
	Base http.RoundTripper
	mu   sync.Mutex
	ctx  context.Context
}

// Set installs ctx for the requests that follow; nil removes it.
func (t *CtxTransport) Set(ctx context.Context) {
	t.mu.Lock()
	t.ctx = ctx
	t.mu.Unlock()
}

// RoundTrip sends req under the installed context.
func (t *CtxTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	ctx := t.ctx
	t.mu.Unlock()
	if ctx != nil {
		req = req.WithContext(ctx)
	}
	return t.Base.RoundTrip(req)
}

// Pool lends SDK clients to one call at a time. Some SDK clients write to
// their own fields on every request (Alibaba's sets its http.Client
// timeout per request), so they must not be shared by concurrent calls;
// the pool holds a few, built once when the keyring is opened.
type Pool[C any] struct {
	free chan *Pooled[C]
}

// Pooled is a client and the transport that carries its context.
type Pooled[C any] struct {
	Client    C
	Transport *CtxTransport
}

// NewPool builds n clients with build, each given its own CtxTransport
// over base.
func NewPool[C any](n int, base http.RoundTripper, build func(rt http.RoundTripper) (C, error)) (*Pool[C], error) {
	p := &Pool[C]{free: make(chan *Pooled[C], n)}
	for range n {
		t := &CtxTransport{Base: base}
		c, err := build(t)
		if err != nil {
			return nil, err
		}
		p.free <- &Pooled[C]{Client: c, Transport: t}
	}
	return p, nil
}

// Use runs fn with a free client whose requests carry ctx. It waits for a
// client as long as ctx allows.
func (p *Pool[C]) Use(ctx context.Context, fn func(c C) error) error {
	var pc *Pooled[C]
	select {
	case pc = <-p.free:
	case <-ctx.Done():
		return ctx.Err()
	}
	pc.Transport.Set(ctx)
	defer func() {
		pc.Transport.Set(nil)
		p.free <- pc
	}()
	return fn(pc.Client)
}
