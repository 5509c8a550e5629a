"""Prints the pagination figures of a summary's routes (`routemeter top -o json`, read
from stdin): what the demo shows of GET /api/trips's pages."""

import json
import sys

summary = json.load(sys.stdin)
for route in summary["routes"]:
    p = route.get("pagination")
    if not p:
        continue
    print(f"pagination of {route['method']} {route['route']}: {p['paginated']} paginated, "
          f"{p['absent']} without parameters, {p['invalid']} invalid")
    size, offset = p["pageSize"], p["offset"]
    print(f"  page size: p50 <= {size['p50']}, p95 <= {size['p95']}; "
          f"offset: mean {offset['mean'] or 0:.0f}, p95 <= {offset['p95']}")
    for r in p["offsetRanges"]:
        if r["requests"]:
            print(f"  offsets {r['range']:>12}: {r['requests']:>5} requests, "
                  f"p95 {r['p95'] * 1000:.0f} ms")
