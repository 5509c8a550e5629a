"""Traffic of the kind routemeter's users' monitoring guides load-test, against the sample
trips API (tests/sample-api) through routemeter's proxy Service.

Four kinds of users, weighted like a real mix (70/20/7/3):
- riders browsing: paginated trip listings with varied page sizes and offsets, and trip
  reads (some of them for trips that do not exist: 404s);
- riders planning a route: `POST /navigate`, now and then with a malformed body (400);
- a live map: a websocket session on `/ws/positions`, a few position updates echoed back;
- the rest: slow calls (`/delay/{ms}`) and a small share of server errors
  (`/status/500`, `/status/503`), so the error panels and alerts have something to show.

Run headless and bounded, e.g.:
    locust -f tests/demo/locustfile.py --headless -u 20 -r 10 --run-time 60s \
        --host http://<ClusterIP of trips-api-routemeter>
"""

import json
import random
import time

import websocket
from locust import HttpUser, User, between, events, task


class Browsing(HttpUser):
    """Lists trips page by page, as a mobile app's infinite scroll does, and opens some."""

    weight = 70
    wait_time = between(0.2, 1.0)

    @task(5)
    def list_trips(self):
        limit = random.choice([10, 20, 20, 50, 100])
        # Most people stay on the first pages; a few scroll deep (deep pages are slower).
        page = random.choice([1, 1, 1, 2, 2, 3, 5, 8, 13, 40])
        self.client.get(f"/api/trips?page={page}&limit={limit}", name="/api/trips?page&limit")

    @task(3)
    def read_trip(self):
        # ids past the last trip answer 404: part of normal traffic, not an error.
        trip = random.randint(1, 1100)
        with self.client.get(f"/api/trips/{trip}", name="/api/trips/{id}", catch_response=True) as r:
            if r.status_code == 404:
                r.success()


class Navigating(HttpUser):
    """Plans routes between places."""

    weight = 20
    wait_time = between(0.5, 2.0)
    places = ["Airport Terminal 2", "Central Station", "Old Town", "Harbour", "Stadium", "University"]

    @task(9)
    def navigate(self):
        src, dst = random.sample(self.places, 2)
        self.client.post("/navigate", json={"from": src, "to": dst})

    @task(1)
    def malformed(self):
        with self.client.post("/navigate", data="{not json", headers={"content-type": "application/json"},
                              name="/navigate (malformed)", catch_response=True) as r:
            if r.status_code == 400:
                r.success()


class LiveMap(User):
    """Follows a trip on a map: a websocket session with a few position updates."""

    weight = 7
    wait_time = between(1.0, 3.0)

    @task
    def session(self):
        url = self.host.replace("http://", "ws://", 1) + "/ws/positions"
        started = time.perf_counter()
        sent = 0
        error = None
        try:
            ws = websocket.create_connection(url, timeout=5)
            try:
                for i in range(random.randint(3, 8)):
                    message = json.dumps({"trip": random.randint(1, 1000), "seq": i,
                                          "lat": 38.7 + random.random() / 10, "lon": -9.1 - random.random() / 10})
                    ws.send(message)
                    if ws.recv() != message:
                        raise RuntimeError("the echo differs from what was sent")
                    sent += len(message)
                    time.sleep(0.1)
            finally:
                ws.close()
        except Exception as e:  # reported to Locust, never raised into its loop
            error = e
        events.request.fire(request_type="WS", name="/ws/positions (session)",
                            response_time=(time.perf_counter() - started) * 1000,
                            response_length=sent, exception=error, context={})


class Unlucky(HttpUser):
    """Slow calls and server errors: a few percent of the traffic."""

    weight = 3
    wait_time = between(0.5, 1.5)

    @task(3)
    def slow(self):
        self.client.get(f"/delay/{random.choice([300, 600, 1200])}", name="/delay/{ms}")

    @task(2)
    def server_error(self):
        code = random.choice([500, 503])
        with self.client.get(f"/status/{code}", name="/status/{code}", catch_response=True) as r:
            if r.status_code == code:
                r.failure(f"the server answered {code}")
