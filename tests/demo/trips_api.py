#!/usr/bin/env python3
"""A sample JSON API for the demo: paginated trips, a navigation endpoint, health checks.

About 3% of requests fail with 500 and /navigate is slow, so the metrics have something
to show. Standard library only; listens on 127.0.0.1 at the port given.
"""
import json
import random
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TRIPS = [{"id": i, "from": f"stop-{i}", "to": f"stop-{i + 1}"} for i in range(1, 501)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path in ("/healthz", "/readyz"):
            return self.reply(200, {"status": "ok"})
        if random.random() < 0.03:
            return self.reply(500, {"error": "database unavailable"})
        if url.path == "/api/trips":
            q = parse_qs(url.query)
            page, limit = int(q.get("page", ["1"])[0]), int(q.get("limit", ["20"])[0])
            time.sleep(random.uniform(0.005, 0.04))
            return self.reply(200, {"page": page, "items": TRIPS[(page - 1) * limit: page * limit]})
        parts = url.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["api", "trips"] and parts[2].isdigit():
            return self.reply(200, TRIPS[int(parts[2]) % len(TRIPS)])
        return self.reply(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if self.path == "/navigate":
            time.sleep(random.uniform(0.1, 0.6))
            return self.reply(200, {"route": ["stop-1", "stop-7", "stop-9"]})
        return self.reply(404, {"error": "not found"})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections under the demo's bursts


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
