"""Sums the request counts of the proxies' /metrics pages (read from stdin) by route,
method and status, and prints them as a table, with the websocket sessions per route:
what the demo shows a user."""

import collections
import re
import sys

PREFIX = "http_server_request_duration_seconds_count{"
WEBSOCKETS = "routemeter_websocket_connections_total{"
counts = collections.Counter()
websockets = collections.Counter()
for line in sys.stdin:
    if line.startswith(WEBSOCKETS):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        websockets[labels.get("http_route", "")] += float(line.rsplit(" ", 1)[1])
        continue
    if not line.startswith(PREFIX):
        continue
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
    key = (labels.get("http_route", ""), labels.get("http_request_method", ""),
           labels.get("http_response_status_code", ""))
    counts[key] += float(line.rsplit(" ", 1)[1])

print(f"{'route':<22} {'method':<7} {'status':<6} {'requests':>9}")
for (route, method, status), n in sorted(counts.items()):
    print(f"{route:<22} {method:<7} {status:<6} {int(n):>9}")
print(f"{'total':<37} {int(sum(counts.values())):>9}")
for route, n in sorted(websockets.items()):
    print(f"{route:<22} websocket sessions (kept out of the request histogram): {int(n)}")
