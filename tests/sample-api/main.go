// Command sample-api is the application the tests and the demo put routemeter in front
// of: a small JSON API with the routes a person recognises from a real one (a paginated
// list, item reads, a navigation POST, a websocket) plus routes that answer a chosen
// status or delay, and a health check that tests can turn off. `sample-api client ...`
// is a load client instead, with a control API for its counts (client.go). See README.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "client" {
		os.Exit(clientMain(os.Args[2:]))
	}
	addr := flag.String("addr", envOr("SAMPLE_API_ADDR", ":8080"), "listen address (env SAMPLE_API_ADDR)")
	accessLog := flag.Bool("access-log", envOr("SAMPLE_API_ACCESS_LOG", "true") == "true",
		"log one JSON line per request to stdout (env SAMPLE_API_ACCESS_LOG=false turns it off)")
	grace := flag.Duration("shutdown-timeout", 10*time.Second, "how long in-flight requests get after SIGTERM")
	flag.Parse()

	logger := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	app := newApp()
	var handler http.Handler = app.routes()
	if *accessLog {
		handler = logRequests(logger, handler)
	}
	srv := &http.Server{
		Addr:              *addr,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		// Longer than any proxy's idle pool timeout in front of it, so the proxy, not
		// this server, closes an idle connection (no reset on a reused one).
		IdleTimeout: 120 * time.Second,
		ErrorLog:    slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(app.closeWebsockets)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		logger.Error("cannot listen", "addr", *addr, "error", err.Error())
		os.Exit(1)
	}
	logger.Info("listening", "addr", ln.Addr().String())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		logger.Error("server stopped", "error", err.Error())
		os.Exit(1)
	case sig := <-stop:
		logger.Info("shutting down", "signal", sig.String(), "timeout", grace.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Warn("shutdown incomplete", "error", err.Error())
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Error("server stopped", "error", err.Error())
	}
	logger.Info("stopped")
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// logRequests writes one JSON line per request once it is answered.
func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		logger.Info("request",
			"method", r.Method,
			"path", r.URL.Path,
			"query", r.URL.RawQuery,
			"status", status,
			"bytes", rec.bytes,
			"duration_ms", float64(time.Since(start).Microseconds())/1000,
			"remote", r.RemoteAddr,
		)
	})
}

// recorder notes the status and the body size; it passes Flush and Hijack through (the
// websocket route needs Hijack).
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("hijack not supported")
	}
	r.status = http.StatusSwitchingProtocols
	return h.Hijack()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// atoiRange parses a decimal integer within [lo, hi].
func atoiRange(s string, lo, hi int) (int, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return n, true
}
