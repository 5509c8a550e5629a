package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// startClient runs a load client against target until the test ends.
func startClient(t *testing.T, target string, timeout time.Duration, concurrency int) *loadClient {
	t.Helper()
	c := newLoadClient(target, time.Millisecond, timeout, false, concurrency)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.run(ctx, concurrency); close(done) }()
	t.Cleanup(func() { cancel(); c.resume(); <-done })
	return c
}

func waitSent(t *testing.T, c *loadClient, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.snapshot().Sent < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d requests sent in 5 s: %+v", n, c.snapshot())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientCountsEveryRequestAndPauseFreezes(t *testing.T) {
	var served atomic.Int64
	_, api := server(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		api.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(upstream.Close)
	c := startClient(t, upstream.URL+"/api/trips", 5*time.Second, 3)
	waitSent(t, c, 30)

	c.pause()
	frozen := c.snapshot()
	if !frozen.Paused || frozen.Sent != frozen.OK || frozen.ByStatus["200"] != frozen.Sent || len(frozen.Errors) != 0 {
		t.Fatalf("want every request answered 200, paused: %+v", frozen)
	}
	if got := served.Load(); got != frozen.Sent {
		t.Fatalf("the server saw %d requests, the client counted %d", got, frozen.Sent)
	}
	time.Sleep(50 * time.Millisecond)
	if again := c.snapshot(); again.Sent != frozen.Sent {
		t.Fatalf("paused, yet sent went from %d to %d", frozen.Sent, again.Sent)
	}

	c.resume()
	waitSent(t, c, frozen.Sent+10)
	c.pause()
	c.reset()
	if s := c.snapshot(); s.Sent != 0 || s.OK != 0 || len(s.ByStatus) != 0 {
		t.Fatalf("reset left %+v", s)
	}
}

func TestClientCountsStatusesAndErrorsByKind(t *testing.T) {
	_, api := server(t)
	c := startClient(t, api.URL+"/status/503", time.Second, 1)
	waitSent(t, c, 5)
	c.pause()
	s := c.snapshot()
	if s.OK != 0 || s.ByStatus["503"] != s.Sent {
		t.Fatalf("want only 503s: %+v", s)
	}

	// Nothing listens on a port just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// A server that takes the connection and closes it without answering.
	hangUp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(hangUp.Close)

	for _, tc := range []struct{ url, kind string }{
		{"http://" + closed + "/", kindRefused},
		{hangUp.URL + "/", kindReset},
		{api.URL + "/delay/2000", kindTimeout},
	} {
		c := startClient(t, tc.url, 200*time.Millisecond, 1)
		waitSent(t, c, 2)
		c.pause()
		s := c.snapshot()
		if s.Errors[tc.kind] != s.Sent || len(s.ByStatus) != 0 || len(s.LastErrors) == 0 {
			t.Errorf("%s: want only %s errors: %+v", tc.url, tc.kind, s)
		}
	}
}

func TestErrorKind(t *testing.T) {
	// No lookup here: the error a resolver returns, as the HTTP client wraps it.
	dns := &url.Error{Op: "Get", URL: "http://example.com/", Err: &net.OpError{
		Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "server misbehaving", Name: "example.com"}}}
	for err, want := range map[error]string{
		dns:                                   kindDNS,
		fmt.Errorf("x: %w", context.Canceled): kindOther,
		errors.New("something else"):          kindOther,
	} {
		if got := errorKind(err); got != want {
			t.Errorf("errorKind(%v) = %s, want %s", err, got, want)
		}
	}
}

func TestClientControlAPI(t *testing.T) {
	_, api := server(t)
	c := startClient(t, api.URL+"/api/trips", 5*time.Second, 1)
	control := httptest.NewServer(c.routes())
	t.Cleanup(control.Close)
	waitSent(t, c, 3)

	code, _, body := do(t, control, "POST", "/pause", "")
	paused := decode[counts](t, body)
	if code != 200 || !paused.Paused || paused.Sent != paused.OK {
		t.Fatalf("POST /pause: %d %s", code, body)
	}
	_, _, body = do(t, control, "GET", "/counts", "")
	if again := decode[counts](t, body); again.Sent != paused.Sent || !again.Paused {
		t.Fatalf("GET /counts after pause: %s, want sent %d", body, paused.Sent)
	}
	if code, _, body := do(t, control, "POST", "/reset", ""); code != 200 || decode[counts](t, body).Sent != 0 {
		t.Fatalf("POST /reset: %d %s", code, body)
	}
	if code, _, body := do(t, control, "POST", "/resume", ""); code != 200 || decode[counts](t, body).Paused {
		t.Fatalf("POST /resume: %d %s", code, body)
	}
	if code, _, _ := do(t, control, "GET", "/healthz", ""); code != 200 {
		t.Fatalf("GET /healthz: %d", code)
	}
	if code, _, _ := do(t, control, "GET", "/pause", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /pause: %d, want 405", code)
	}
}
