package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func server(t *testing.T) (*app, *httptest.Server) {
	t.Helper()
	a := newApp()
	// Through the access log too, so its ResponseWriter wrapper is exercised (Hijack).
	srv := httptest.NewServer(logRequests(slog.New(slog.NewJSONHandler(io.Discard, nil)), a.routes()))
	t.Cleanup(srv.Close)
	return a, srv
}

func do(t *testing.T, srv *httptest.Server, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, data
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, data)
	}
	return v
}

func TestListTrips(t *testing.T) {
	_, srv := server(t)

	code, hdr, body := do(t, srv, "GET", "/api/trips", "")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/trips: %d %q", code, hdr.Get("Content-Type"))
	}
	p := decode[tripPage](t, body)
	if p.Page != 1 || p.Limit != 20 || len(p.Items) != 20 || p.Total != 1000 || p.Pages != 50 {
		t.Fatalf("defaults: page %d limit %d items %d total %d pages %d", p.Page, p.Limit, len(p.Items), p.Total, p.Pages)
	}
	if p.Items[0].ID != 1 || p.Next == nil || *p.Next != "/api/trips?page=2&limit=20" {
		t.Fatalf("first page: id %d next %v", p.Items[0].ID, p.Next)
	}

	_, _, body = do(t, srv, "GET", "/api/trips?page=3&limit=7", "")
	p = decode[tripPage](t, body)
	if len(p.Items) != 7 || p.Items[0].ID != 15 || p.Items[6].ID != 21 {
		t.Fatalf("page 3 of 7: %+v", p.Items)
	}

	_, _, body = do(t, srv, "GET", "/api/trips?page=10&limit=100", "")
	p = decode[tripPage](t, body)
	if len(p.Items) != 100 || p.Items[99].ID != 1000 || p.Next != nil {
		t.Fatalf("last page: %d items, next %v", len(p.Items), p.Next)
	}

	_, _, body = do(t, srv, "GET", "/api/trips?page=11&limit=100", "")
	p = decode[tripPage](t, body)
	if len(p.Items) != 0 || !strings.Contains(string(body), `"items":[]`) {
		t.Fatalf("past the end: %s", body)
	}

	for _, q := range []string{"page=0", "page=-1", "page=x", "limit=0", "limit=101", "limit=abc", "page=1&limit=1.5"} {
		code, _, body := do(t, srv, "GET", "/api/trips?"+q, "")
		if code != 400 || decode[map[string]string](t, body)["error"] == "" {
			t.Errorf("?%s: %d %s", q, code, body)
		}
	}
}

func TestDeepPagesAreSlower(t *testing.T) {
	_, srv := server(t)
	start := time.Now()
	do(t, srv, "GET", "/api/trips?page=10&limit=100", "") // offset 900: 90 ms
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Fatalf("offset 900 took %v, want >= 90ms", d)
	}
}

func TestTripsAreDeterministic(t *testing.T) {
	a, b := makeTrips(tripCount), makeTrips(tripCount)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Fatal("two data sets differ")
	}
	for _, trip := range a {
		if trip.From == trip.To || trip.DistanceKm <= 0 || trip.Fare.Amount <= 0 {
			t.Fatalf("odd trip: %+v", trip)
		}
	}
}

func TestGetTrip(t *testing.T) {
	_, srv := server(t)
	code, _, body := do(t, srv, "GET", "/api/trips/42", "")
	if trip := decode[Trip](t, body); code != 200 || trip.ID != 42 || trip.From == "" {
		t.Fatalf("GET /api/trips/42: %d %s", code, body)
	}
	for _, id := range []string{"0", "1001", "abc", "-3"} {
		code, _, body := do(t, srv, "GET", "/api/trips/"+id, "")
		if code != 404 || !strings.Contains(decode[map[string]string](t, body)["error"], "not found") {
			t.Errorf("GET /api/trips/%s: %d %s", id, code, body)
		}
	}
	if code, _, _ := do(t, srv, "DELETE", "/api/trips/1", ""); code != 405 {
		t.Errorf("DELETE /api/trips/1: %d, want 405", code)
	}
}

func TestCreateTrip(t *testing.T) {
	_, srv := server(t)
	code, hdr, body := do(t, srv, "POST", "/api/trips", `{"rider":"Ada","from":"Stadium","to":"Opera House"}`)
	trip := decode[Trip](t, body)
	if code != 201 || trip.ID != 1001 || hdr.Get("Location") != "/api/trips/1001" || trip.Status != "requested" {
		t.Fatalf("POST /api/trips: %d %v %s", code, hdr, body)
	}
	if code, _, _ := do(t, srv, "POST", "/api/trips", `{"rider":"Ada"}`); code != 400 {
		t.Fatalf("missing fields: %d", code)
	}
}

func TestNavigate(t *testing.T) {
	_, srv := server(t)
	req := `{"from":"Central Station","to":"Airport Terminal 2"}`
	code, _, body := do(t, srv, "POST", "/navigate", req)
	r := decode[route](t, body)
	if code != 200 || r.From != "Central Station" || r.To != "Airport Terminal 2" || len(r.Steps) < 4 || r.DistanceKm <= 0 {
		t.Fatalf("POST /navigate: %d %s", code, body)
	}
	if _, _, again := do(t, srv, "POST", "/navigate", req); !bytes.Equal(body, again) {
		t.Fatalf("same request, different routes:\n%s\n%s", body, again)
	}
	for _, bad := range []string{``, `{`, `not json`, `{"from":"a"}`, `{"from":"a","to":""}`, `{"from":"a","to":"b"} {}`, `{"from":1,"to":2}`} {
		code, _, body := do(t, srv, "POST", "/navigate", bad)
		if code != 400 || decode[map[string]string](t, body)["error"] == "" {
			t.Errorf("POST /navigate %q: %d %s", bad, code, body)
		}
	}
	huge := `{"from":"` + strings.Repeat("x", maxBodyBytes) + `","to":"b"}`
	if code, _, _ := do(t, srv, "POST", "/navigate", huge); code != 413 {
		t.Errorf("1 MiB body: %d, want 413", code)
	}
	if code, _, _ := do(t, srv, "GET", "/navigate", ""); code != 405 {
		t.Errorf("GET /navigate: %d, want 405", code)
	}
}

func TestStatus(t *testing.T) {
	_, srv := server(t)
	for _, c := range []int{200, 201, 204, 301, 304, 404, 429, 500, 503, 599} {
		code, _, body := do(t, srv, "GET", "/status/"+strconv.Itoa(c), "")
		if code != c {
			t.Errorf("/status/%d answered %d", c, code)
		}
		if c != 204 && c != 304 && decode[map[string]any](t, body)["status"] != float64(c) {
			t.Errorf("/status/%d body %s", c, body)
		}
	}
	for _, bad := range []string{"100", "199", "600", "abc", "-1", "2000"} {
		if code, _, _ := do(t, srv, "GET", "/status/"+bad, ""); code != 400 {
			t.Errorf("/status/%s answered %d, want 400", bad, code)
		}
	}
}

func TestDelay(t *testing.T) {
	_, srv := server(t)
	start := time.Now()
	code, _, body := do(t, srv, "GET", "/delay/150", "")
	if d := time.Since(start); code != 200 || d < 150*time.Millisecond || decode[map[string]int](t, body)["delayed_ms"] != 150 {
		t.Fatalf("/delay/150: %d after %v: %s", code, d, body)
	}
	if code, _, _ := do(t, srv, "GET", "/delay/0", ""); code != 200 {
		t.Fatalf("/delay/0: %d", code)
	}
	for _, bad := range []string{"10001", "-5", "soon"} {
		if code, _, _ := do(t, srv, "GET", "/delay/"+bad, ""); code != 400 {
			t.Errorf("/delay/%s: %d, want 400", bad, code)
		}
	}
}

func TestWebsocketEcho(t *testing.T) {
	a, srv := server(t)
	for _, path := range []string{"/ws", "/ws/positions"} {
		url := "ws" + strings.TrimPrefix(srv.URL, "http") + path
		conn, resp, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", path, err)
		}
		if resp.StatusCode != 101 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		for _, m := range []struct {
			kind int
			data string
		}{{websocket.TextMessage, "hello"}, {websocket.BinaryMessage, "\x00\x01\x02"}, {websocket.TextMessage, `{"lat":52.5,"lon":13.4}`}} {
			if err := conn.WriteMessage(m.kind, []byte(m.data)); err != nil {
				t.Fatal(err)
			}
			kind, data, err := conn.ReadMessage()
			if err != nil || kind != m.kind || string(data) != m.data {
				t.Fatalf("%s echo of %q: %d %q %v", path, m.data, kind, data, err)
			}
		}
		// The server's shutdown hook says goodbye to open sockets.
		a.closeWebsockets()
		_, _, err = conn.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("after closeWebsockets: %v", err)
		}
		conn.Close()
	}
	// A plain GET is not an upgrade.
	if code, _, _ := do(t, srv, "GET", "/ws", ""); code != 400 {
		t.Fatalf("plain GET /ws: %d, want 400", code)
	}
}

func TestHealthToggle(t *testing.T) {
	_, srv := server(t)
	check := func(want int) {
		t.Helper()
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, _, _ := do(t, srv, "GET", path, ""); code != want {
				t.Fatalf("%s: %d, want %d", path, code, want)
			}
		}
	}
	check(200)
	if code, _, _ := do(t, srv, "POST", "/admin/unhealthy", ""); code != 200 {
		t.Fatal("POST /admin/unhealthy")
	}
	check(503)
	// Only health changes: the API keeps answering.
	if code, _, _ := do(t, srv, "GET", "/api/trips/1", ""); code != 200 {
		t.Fatal("API while unhealthy")
	}
	if code, _, _ := do(t, srv, "POST", "/admin/healthy", ""); code != 200 {
		t.Fatal("POST /admin/healthy")
	}
	check(200)
	if code, _, _ := do(t, srv, "GET", "/admin/unhealthy", ""); code != 405 {
		t.Fatal("GET /admin/unhealthy must not toggle")
	}
}

func TestIndexAndUnknown(t *testing.T) {
	_, srv := server(t)
	if code, _, body := do(t, srv, "GET", "/", ""); code != 200 || !strings.Contains(string(body), "/api/trips") {
		t.Fatalf("GET /: %d %s", code, body)
	}
	if code, _, _ := do(t, srv, "GET", "/nope", ""); code != 404 {
		t.Fatalf("GET /nope: %d", code)
	}
}
