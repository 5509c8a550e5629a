// loadgen: the constant-rate (open-loop) client of `make bench` (bench/run.sh).
//
// wrk is closed loop: each connection sends its next request when the previous answer
// arrives, so a slow answer delays the requests behind it and their wait is never
// measured (coordinated omission). loadgen plans every request in advance instead:
// request i is due at start + i/rate, on connection i mod connections, and its latency
// is counted from when it was due whenever the connection was still busy with an earlier
// answer then (the wait is the system's). When the connection was free, the latency is
// counted from when the request was written: a wake-up of this program later than due is
// its own scheduling (Go's timers wake up to 1 ms late on an idle core), not the target's,
// and is reported apart as "late".
//
// HTTP/1.1 keep-alive, one GET per request, answers read with net/http's parser.
// Prints one line of key=value figures (latencies in microseconds) on stdout.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"sync"
	"time"
)

type result struct {
	latencies  []time.Duration // of requests due after the warm-up
	errors     int
	late       int // written more than 1 ms after due while the connection was free
	behind     int // due while the connection was still busy (latency counted from due)
	lastAnswer time.Time
}

func main() {
	target := flag.String("url", "", "http://host:port/path")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "measured time, after the warm-up")
	warmup := flag.Duration("warmup", time.Second, "time at the rate before measuring")
	conns := flag.Int("connections", 32, "keep-alive connections")
	timeout := flag.Duration("timeout", 2*time.Second, "per request")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || u.Scheme != "http" || u.Host == "" || *rate <= 0 || *conns <= 0 {
		fmt.Fprintln(os.Stderr, "usage: loadgen -url http://host:port/path -rate N [-duration 10s] [-warmup 1s] [-connections 32]")
		os.Exit(2)
	}
	path := u.RequestURI()
	// The fields curl sends, as wrk does in bench/run.sh.
	request := []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: routemeter-bench\r\nAccept: */*\r\n\r\n")
	interval := time.Duration(float64(time.Second) / *rate)
	total := int((*warmup + *duration) / interval)
	first := int(*warmup / interval) // the first measured request

	start := time.Now().Add(50 * time.Millisecond)
	results := make([]result, *conns)
	var wg sync.WaitGroup
	for k := 0; k < *conns; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			r := &results[k]
			r.latencies = make([]time.Duration, 0, (total-first)/(*conns)+2)
			var conn net.Conn
			var rd *bufio.Reader
			ready := time.Time{} // when the previous answer on this connection arrived
			for i := k; i < total; i += *conns {
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				if conn == nil {
					c, err := net.DialTimeout("tcp", u.Host, *timeout)
					if err != nil {
						r.errors += boolInt(i >= first)
						ready = time.Now()
						continue
					}
					conn, rd = c, bufio.NewReaderSize(c, 4096)
				}
				sent := time.Now()
				basis := sent
				if ready.After(due) {
					basis = due
					r.behind += boolInt(i >= first)
				} else if sent.Sub(due) > time.Millisecond {
					r.late += boolInt(i >= first)
				}
				_ = conn.SetDeadline(sent.Add(*timeout))
				ok := false
				if _, err := conn.Write(request); err == nil {
					if resp, err := http.ReadResponse(rd, nil); err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						_ = resp.Body.Close()
						ok = err == nil && resp.StatusCode == 200
						if err == nil && resp.Close { // the next request opens a new connection
							_ = conn.Close()
							conn = nil
						}
					}
				}
				ready = time.Now()
				if !ok && conn != nil {
					_ = conn.Close()
					conn = nil
				}
				if i >= first {
					if ok {
						r.latencies = append(r.latencies, ready.Sub(basis))
					} else {
						r.errors++
					}
					r.lastAnswer = ready
				}
			}
			if conn != nil {
				_ = conn.Close()
			}
		}(k)
	}
	wg.Wait()

	var all []time.Duration
	errors, late, behind := 0, 0, 0
	end := start
	for _, r := range results {
		all = append(all, r.latencies...)
		errors += r.errors
		late += r.late
		behind += r.behind
		if r.lastAnswer.After(end) {
			end = r.lastAnswer
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	q := func(p float64) float64 {
		if len(all) == 0 {
			return -1
		}
		i := int(p * float64(len(all)-1))
		return float64(all[i].Nanoseconds()) / 1e3
	}
	measuredStart := start.Add(time.Duration(first) * interval)
	elapsed := end.Sub(measuredStart).Seconds()
	achieved := 0.0
	if elapsed > 0 {
		achieved = float64(len(all)) / elapsed
	}
	fmt.Printf("requests=%d errors=%d rate=%.0f achieved=%.0f p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f late=%d behind=%d\n",
		len(all), errors, *rate, achieved, q(0.50), q(0.90), q(0.99), q(1.0), late, behind)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
