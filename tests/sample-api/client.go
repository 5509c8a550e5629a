package main

// The `client` mode: `sample-api client --url URL` sends GET to URL in a loop and counts
// what came back, with a small control API to read, freeze, resume and zero the counts.
// Tests run it in a pod to call a Service by its DNS name from inside the cluster.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// How many of the latest transport errors /counts lists.
const lastErrorsKept = 10

// Error kinds: a closed set, so a test can assert on them.
const (
	kindRefused = "refused" // nothing listens: connection refused
	kindReset   = "reset"   // the connection was reset or closed before a full answer
	kindTimeout = "timeout" // no full answer within --timeout
	kindDNS     = "dns"     // the name did not resolve
	kindOther   = "other"
)

// counts is what GET /counts answers. Every request sent ends in exactly one of
// byStatus (a full answer, any status) or errors (no full answer), so once paused,
// sent == sum(byStatus) + sum(errors); ok is the 2xx answers.
type counts struct {
	Sent       int64            `json:"sent"`
	OK         int64            `json:"ok"`
	ByStatus   map[string]int64 `json:"byStatus"`
	Errors     map[string]int64 `json:"errors"`
	LastErrors []string         `json:"lastErrors"`
	Paused     bool             `json:"paused"`
}

func newCounts() counts {
	return counts{ByStatus: map[string]int64{}, Errors: map[string]int64{}, LastErrors: []string{}}
}

type loadClient struct {
	url      string
	interval time.Duration
	http     *http.Client

	mu       sync.Mutex
	changed  *sync.Cond // broadcast when paused or inflight changes, and on shutdown
	paused   bool
	inflight int
	counts   counts
}

func newLoadClient(target string, interval, timeout time.Duration, keepalive bool, concurrency int) *loadClient {
	transport := &http.Transport{
		Proxy:               nil, // straight to the URL, whatever the environment says
		DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
		DisableKeepAlives:   !keepalive,
		MaxIdleConnsPerHost: concurrency,
	}
	c := &loadClient{
		url:      target,
		interval: interval,
		http: &http.Client{
			Transport: transport,
			Timeout:   timeout, // the whole request, body included
			// A redirect is an answer, not a second request.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		counts: newCounts(),
	}
	c.changed = sync.NewCond(&c.mu)
	return c
}

// run sends with `concurrency` loops, each one request at a time, until ctx is done.
func (c *loadClient) run(ctx context.Context, concurrency int) {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.changed.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.loop(ctx)
		}()
	}
	wg.Wait()
}

func (c *loadClient) loop(ctx context.Context) {
	for c.begin(ctx) {
		status, err := c.once(ctx)
		c.end(status, err)
		timer := time.NewTimer(c.interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// begin waits while paused, then counts a request as sent and in flight; false once
// ctx is done.
func (c *loadClient) begin(ctx context.Context) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.paused && ctx.Err() == nil {
		c.changed.Wait()
	}
	if ctx.Err() != nil {
		return false
	}
	c.inflight++
	c.counts.Sent++
	return true
}

// once sends one GET and reads the whole answer. The transport never retries on a new
// connection (keepalive off); with --keepalive, Go's transport may resend a GET once
// when a reused connection turns out closed before the request reached the server.
func (c *loadClient) once(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "sample-api-client")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

func (c *loadClient) end(status int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	if err != nil {
		kind := errorKind(err)
		c.counts.Errors[kind]++
		c.counts.LastErrors = append(c.counts.LastErrors, kind+": "+err.Error())
		if n := len(c.counts.LastErrors); n > lastErrorsKept {
			c.counts.LastErrors = c.counts.LastErrors[n-lastErrorsKept:]
		}
	} else {
		c.counts.ByStatus[strconv.Itoa(status)]++
		if status >= 200 && status < 300 {
			c.counts.OK++
		}
	}
	c.changed.Broadcast()
}

// pause stops new requests and returns once none is in flight (at most --timeout).
func (c *loadClient) pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = true
	for c.inflight > 0 {
		c.changed.Wait()
	}
}

func (c *loadClient) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = false
	c.changed.Broadcast()
}

// reset zeroes the counts; requests in flight count as sent in the new period, so
// sent == sum(byStatus) + sum(errors) + in flight still holds.
func (c *loadClient) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts = newCounts()
	c.counts.Sent = int64(c.inflight)
}

func (c *loadClient) snapshot() counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.counts
	s.ByStatus = make(map[string]int64, len(c.counts.ByStatus))
	for k, v := range c.counts.ByStatus {
		s.ByStatus[k] = v
	}
	s.Errors = make(map[string]int64, len(c.counts.Errors))
	for k, v := range c.counts.Errors {
		s.Errors[k] = v
	}
	s.LastErrors = append([]string{}, c.counts.LastErrors...)
	s.Paused = c.paused
	return s
}

// routes is the control API; /pause, /resume and /reset answer with the counts after.
func (c *loadClient) routes() http.Handler {
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter) { writeJSON(w, http.StatusOK, c.snapshot()) }
	mux.HandleFunc("GET /counts", func(w http.ResponseWriter, _ *http.Request) { answer(w) })
	mux.HandleFunc("POST /pause", func(w http.ResponseWriter, _ *http.Request) { c.pause(); answer(w) })
	mux.HandleFunc("POST /resume", func(w http.ResponseWriter, _ *http.Request) { c.resume(); answer(w) })
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) { c.reset(); answer(w) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

// errorKind sorts a transport error into one of the kinds above.
func errorKind(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		return kindDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return kindRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return kindReset
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return kindTimeout
	default:
		return kindOther
	}
}

// clientMain is `sample-api client ...`; it returns the exit code.
func clientMain(args []string) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	target := fs.String("url", "", "the URL to GET in a loop (required)")
	interval := fs.Duration("interval", 10*time.Millisecond, "pause after each answer, per loop")
	concurrency := fs.Int("concurrency", 1, "loops sending at once, each one request at a time")
	keepalive := fs.Bool("keepalive", false, "reuse connections (default: a new connection per request)")
	listen := fs.String("listen", ":8081", "address of the control API")
	timeout := fs.Duration("timeout", 5*time.Second, "per-request timeout, connecting to the last body byte")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	if err := checkClientFlags(*target, *interval, *timeout, *concurrency, fs.NArg()); err != nil {
		fmt.Fprintf(os.Stderr, "sample-api client: %v\n", err)
		return 2
	}

	c := newLoadClient(*target, *interval, *timeout, *keepalive, *concurrency)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Error("cannot listen", "addr", *listen, "error", err.Error())
		return 1
	}
	srv := &http.Server{Handler: c.routes(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger.Info("client started", "url", *target, "interval", interval.String(),
		"concurrency", *concurrency, "keepalive", *keepalive, "timeout", timeout.String(),
		"control", ln.Addr().String())
	sent := make(chan struct{})
	go func() { c.run(ctx, *concurrency); close(sent) }()

	select {
	case err := <-served:
		logger.Error("control API stopped", "error", err.Error())
		return 1
	case <-ctx.Done():
	}
	<-sent
	shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	s := c.snapshot()
	logger.Info("stopped", "sent", s.Sent, "ok", s.OK, "errors", s.Errors)
	return 0
}

func checkClientFlags(target string, interval, timeout time.Duration, concurrency, extra int) error {
	u, err := url.Parse(target)
	switch {
	case target == "":
		return errors.New("--url is required")
	case err != nil:
		return fmt.Errorf("--url: %v", err)
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("--url %q: want http://host[:port]/path or https://...", target)
	case interval < 0:
		return errors.New("--interval must not be negative")
	case timeout <= 0:
		return errors.New("--timeout must be positive")
	case concurrency < 1:
		return errors.New("--concurrency must be at least 1")
	case extra > 0:
		return errors.New("unexpected arguments after the flags")
	}
	return nil
}
