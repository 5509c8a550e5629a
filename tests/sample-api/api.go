package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const (
	tripCount    = 1000
	defaultLimit = 20
	maxLimit     = 100
	// A listing costs offset/10 ms, up to this: deep pages are slow, as with SQL OFFSET.
	maxPageDelay = 250 * time.Millisecond
	maxDelayMs   = 10000
	maxBodyBytes = 1 << 20
)

type app struct {
	trips     []Trip
	unhealthy atomic.Bool
	nextID    atomic.Int64
	upgrader  websocket.Upgrader

	mu         sync.Mutex
	websockets map[*websocket.Conn]struct{}
}

func newApp() *app {
	a := &app{
		trips: makeTrips(tripCount),
		upgrader: websocket.Upgrader{
			// A sample API behind a proxy: any origin may open the echo socket.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		websockets: map[*websocket.Conn]struct{}{},
	}
	a.nextID.Store(tripCount)
	return a
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("GET /api/trips", a.listTrips)
	mux.HandleFunc("POST /api/trips", a.createTrip)
	mux.HandleFunc("GET /api/trips/{id}", a.getTrip)
	mux.HandleFunc("POST /navigate", a.navigate)
	mux.HandleFunc("GET /status/{code}", a.status)
	mux.HandleFunc("GET /delay/{ms}", a.delay)
	mux.HandleFunc("GET /ws", a.echo)
	mux.HandleFunc("GET /ws/positions", a.echo)
	mux.HandleFunc("GET /healthz", a.health)
	mux.HandleFunc("GET /readyz", a.health)
	mux.HandleFunc("POST /admin/unhealthy", a.setHealth(false))
	mux.HandleFunc("POST /admin/healthy", a.setHealth(true))
	mux.HandleFunc("GET /whoami", a.whoami)
	return servedBy(mux)
}

// servedBy names the pod that answered in an X-Served-By header, so a client can see how
// requests are spread over the pods.
func servedBy(next http.Handler) http.Handler {
	host, _ := os.Hostname()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", host)
		next.ServeHTTP(w, r)
	})
}

// whoami says who the application thinks its client is, as an application behind a
// proxy reads it: the first address of X-Forwarded-For, else the connection's peer; and
// the forwarding headers it received.
func (a *app) whoami(w http.ResponseWriter, r *http.Request) {
	host, _ := os.Hostname()
	peer, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		peer = r.RemoteAddr
	}
	client := peer
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		client = strings.TrimSpace(strings.Split(xff, ",")[0])
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"pod":             host,
		"peer":            peer,
		"client":          client,
		"host":            r.Host,
		"xForwardedFor":   strings.Join(r.Header.Values("X-Forwarded-For"), ", "),
		"xForwardedProto": r.Header.Get("X-Forwarded-Proto"),
		"xForwardedHost":  r.Header.Get("X-Forwarded-Host"),
		"forwarded":       r.Header.Get("Forwarded"),
		"via":             r.Header.Get("Via"),
	})
}

type Money struct {
	Amount   float64 `json:"amount"`
	Currency string  `json:"currency"`
}

type Trip struct {
	ID          int       `json:"id"`
	Rider       string    `json:"rider"`
	Driver      string    `json:"driver,omitempty"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	DistanceKm  float64   `json:"distance_km"`
	DurationMin int       `json:"duration_min"`
	Fare        Money     `json:"fare"`
	Status      string    `json:"status"`
	RequestedAt time.Time `json:"requested_at"`
}

var (
	places = []string{
		"Central Station", "Airport Terminal 2", "Harbour Front", "Old Town Square",
		"University Campus", "Riverside Park", "Tech Park North", "Stadium",
		"City Hospital", "Exhibition Centre", "Market Street", "Lakeside Mall",
		"Opera House", "Museum Quarter", "Ferry Terminal", "Bus Depot East",
	}
	people = []string{
		"Ada", "Grace", "Linus", "Ken", "Barbara", "Dennis", "Margaret", "Edsger",
		"Frances", "Donald", "Radia", "Tim", "Sophie", "Alan", "Katherine", "John",
	}
	statuses = []string{"completed", "completed", "completed", "completed", "cancelled", "in_progress"}
	epoch    = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
)

// splitmix64: a fixed generator, so the data set is the same on every run and every
// Go version.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round2(x float64) float64 { return math.Round(x*100) / 100 }

func makeTrips(n int) []Trip {
	trips := make([]Trip, n)
	for i := range trips {
		id := i + 1
		r := mix(uint64(id))
		from := int(r % uint64(len(places)))
		to := (from + 1 + int(r>>8%uint64(len(places)-1))) % len(places)
		km := round1(1.5 + float64(r>>16%300)/10)
		minutes := int(km*2.2) + int(r>>28%10)
		trips[i] = Trip{
			ID:          id,
			Rider:       people[r>>36%uint64(len(people))],
			Driver:      people[r>>44%uint64(len(people))],
			From:        places[from],
			To:          places[to],
			DistanceKm:  km,
			DurationMin: minutes,
			Fare:        Money{Amount: round2(2.5 + km*1.35), Currency: "EUR"},
			Status:      statuses[r>>52%uint64(len(statuses))],
			RequestedAt: epoch.Add(time.Duration(id) * 37 * time.Minute),
		}
	}
	return trips
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // `&` in a `next` link stays `&`
	if err := enc.Encode(body); err != nil {
		http.Error(w, `{"error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	data := buf.Bytes()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// sleep waits d, or less if the client goes away; false then.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func (a *app) index(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"name": "sample-api",
		"routes": []string{
			"GET /api/trips?page=&limit=", "POST /api/trips", "GET /api/trips/{id}",
			"POST /navigate", "GET /status/{code}", "GET /delay/{ms}", "GET /ws",
			"GET /healthz", "POST /admin/unhealthy", "POST /admin/healthy",
		},
	})
}

type tripPage struct {
	Items []Trip  `json:"items"`
	Page  int     `json:"page"`
	Limit int     `json:"limit"`
	Total int     `json:"total"`
	Pages int     `json:"pages"`
	Next  *string `json:"next"`
}

func (a *app) listTrips(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page, limit := 1, defaultLimit
	if s := q.Get("page"); s != "" {
		n, ok := atoiRange(s, 1, math.MaxInt32)
		if !ok {
			writeError(w, http.StatusBadRequest, "page must be an integer >= 1, got %q", s)
			return
		}
		page = n
	}
	if s := q.Get("limit"); s != "" {
		n, ok := atoiRange(s, 1, maxLimit)
		if !ok {
			writeError(w, http.StatusBadRequest, "limit must be an integer from 1 to %d, got %q", maxLimit, s)
			return
		}
		limit = n
	}
	offset := (page - 1) * limit
	delay := time.Duration(offset/10) * time.Millisecond
	if delay > maxPageDelay || delay < 0 {
		delay = maxPageDelay
	}
	if !sleep(r, delay) {
		return
	}
	body := tripPage{Items: []Trip{}, Page: page, Limit: limit, Total: len(a.trips),
		Pages: (len(a.trips) + limit - 1) / limit}
	if offset < len(a.trips) {
		body.Items = a.trips[offset:min(offset+limit, len(a.trips))]
	}
	if page < body.Pages {
		next := fmt.Sprintf("/api/trips?page=%d&limit=%d", page+1, limit)
		body.Next = &next
	}
	writeJSON(w, http.StatusOK, body)
}

func (a *app) getTrip(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	id, ok := atoiRange(raw, 1, len(a.trips))
	if !ok {
		writeError(w, http.StatusNotFound, "trip %q not found", raw)
		return
	}
	writeJSON(w, http.StatusOK, a.trips[id-1])
}

// readJSON decodes a JSON object body into v; it answers 400 (or 413) itself and
// returns false when the body is not one.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "body larger than %d bytes", maxBodyBytes)
		} else {
			writeError(w, http.StatusBadRequest, "body is not valid JSON: %v", err)
		}
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "body has data after the JSON object")
		return false
	}
	return true
}

type tripRequest struct {
	Rider string `json:"rider"`
	From  string `json:"from"`
	To    string `json:"to"`
}

func (a *app) createTrip(w http.ResponseWriter, r *http.Request) {
	var req tripRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Rider == "" || req.From == "" || req.To == "" {
		writeError(w, http.StatusBadRequest, `"rider", "from" and "to" are required`)
		return
	}
	plan := planRoute(req.From, req.To)
	id := int(a.nextID.Add(1))
	w.Header().Set("Location", fmt.Sprintf("/api/trips/%d", id))
	writeJSON(w, http.StatusCreated, Trip{
		ID: id, Rider: req.Rider, From: req.From, To: req.To,
		DistanceKm: plan.DistanceKm, DurationMin: plan.DurationMin,
		Fare:   Money{Amount: round2(2.5 + plan.DistanceKm*1.35), Currency: "EUR"},
		Status: "requested", RequestedAt: time.Now().UTC().Truncate(time.Second),
	})
}

type navigateRequest struct {
	From string `json:"from"`
	To   string `json:"to"`
}

type step struct {
	Instruction string  `json:"instruction"`
	DistanceKm  float64 `json:"distance_km"`
}

type route struct {
	From        string  `json:"from"`
	To          string  `json:"to"`
	DistanceKm  float64 `json:"distance_km"`
	DurationMin int     `json:"duration_min"`
	Steps       []step  `json:"steps"`
	computeMs   int
}

// planRoute is a deterministic stand-in for route planning: the same from/to always
// gives the same route, and takes the same (20-99 ms) time to compute.
func planRoute(from, to string) route {
	h := fnv.New64a()
	_, _ = h.Write([]byte(from))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(to))
	r := mix(h.Sum64())
	turns := []string{"Turn left onto", "Turn right onto", "Continue straight on", "Keep left onto", "Take the exit to"}
	n := 2 + int(r%4)
	steps := make([]step, 0, n+1)
	steps = append(steps, step{Instruction: "Head north from " + from, DistanceKm: 0.3})
	total := 0.3
	for i := 0; i < n; i++ {
		x := mix(r + uint64(i))
		km := round1(0.4 + float64(x%60)/10)
		steps = append(steps, step{
			Instruction: fmt.Sprintf("%s %s", turns[x>>8%uint64(len(turns))], places[x>>16%uint64(len(places))]),
			DistanceKm:  km,
		})
		total += km
	}
	steps = append(steps, step{Instruction: "Arrive at " + to, DistanceKm: 0})
	total = round1(total)
	return route{
		From: from, To: to, DistanceKm: total, DurationMin: int(total*2.2) + 1, Steps: steps,
		computeMs: 20 + int(r>>32%80),
	}
}

func (a *app) navigate(w http.ResponseWriter, r *http.Request) {
	var req navigateRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.From == "" || req.To == "" {
		writeError(w, http.StatusBadRequest, `"from" and "to" are required`)
		return
	}
	plan := planRoute(req.From, req.To)
	if !sleep(r, time.Duration(plan.computeMs)*time.Millisecond) {
		return
	}
	writeJSON(w, http.StatusOK, plan)
}

// status answers with the status in the path. 1xx codes are refused: in HTTP they are
// interim responses, never a request's answer.
func (a *app) status(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("code")
	code, ok := atoiRange(raw, 200, 599)
	if !ok {
		writeError(w, http.StatusBadRequest, "status must be an integer from 200 to 599, got %q", raw)
		return
	}
	if code == http.StatusNoContent || code == http.StatusNotModified {
		w.WriteHeader(code)
		return
	}
	text := http.StatusText(code)
	if text == "" {
		text = "status " + raw
	}
	writeJSON(w, code, map[string]any{"status": code, "text": text})
}

func (a *app) delay(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("ms")
	ms, ok := atoiRange(raw, 0, maxDelayMs)
	if !ok {
		writeError(w, http.StatusBadRequest, "delay must be an integer from 0 to %d ms, got %q", maxDelayMs, raw)
		return
	}
	if !sleep(r, time.Duration(ms)*time.Millisecond) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"delayed_ms": ms})
}

// echo is a websocket that sends every message back as it came (text or binary).
func (a *app) echo(w http.ResponseWriter, r *http.Request) {
	conn, err := a.upgrader.Upgrade(w, r, nil) // answers 400 itself when it is not a websocket
	if err != nil {
		return
	}
	conn.SetReadLimit(maxBodyBytes)
	a.mu.Lock()
	a.websockets[conn] = struct{}{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.websockets, conn)
		a.mu.Unlock()
		_ = conn.Close()
	}()
	for {
		kind, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if err := conn.WriteMessage(kind, msg); err != nil {
			return
		}
	}
}

// closeWebsockets tells every open websocket that the server is going away (the HTTP
// server's graceful shutdown does not track hijacked connections).
func (a *app) closeWebsockets() {
	a.mu.Lock()
	defer a.mu.Unlock()
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
	for conn := range a.websockets {
		_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	}
}

func (a *app) health(w http.ResponseWriter, _ *http.Request) {
	if a.unhealthy.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *app) setHealth(healthy bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		a.unhealthy.Store(!healthy)
		state := "ok"
		if !healthy {
			state = "unhealthy"
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": state})
	}
}
