"""What the demo's Prometheus (the Prometheus Operator's, tests/cluster/prometheus-stack.sh)
has of one MonitoredService: its scrape targets, the rule groups and alerts it loaded from
the PrometheusRule, and a recording rule's values.

Usage: prometheus.py PROMETHEUS_URL NAMESPACE MONITORED_SERVICE
"""

import json
import sys
import urllib.parse
import urllib.request


def api(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"{path}: {body}")
    return body["data"]


def main():
    base, ns, name = sys.argv[1:4]
    targets = [
        t
        for t in api(base, "/api/v1/targets?state=active")["activeTargets"]
        if t["labels"].get("namespace") == ns and t["labels"].get("monitored_service") == name
    ]
    up = sum(1 for t in targets if t["health"] == "up")
    print(f"scrape targets of {ns}/{name}: {len(targets)}, {up} up")
    for t in targets:
        print(f"  {t['scrapeUrl']:<40} {t['health']:<6} every {t['labels'].get('__scrape_interval__', t.get('scrapeInterval', '?'))}")
    prefix = f"routemeter.{ns}.{name}."
    groups = [g for g in api(base, "/api/v1/rules")["groups"] if g["name"].startswith(prefix)]
    print(f"rule groups loaded from the PrometheusRule: {len(groups)}")
    for g in groups:
        alerts = [r for r in g["rules"] if r["type"] == "alerting"]
        print(f"  {g['name']:<45} {len(g['rules']):>4} rules, {len(alerts)} alerts, every {g['interval']}s")
    states = {}
    for g in groups:
        for r in g["rules"]:
            if r["type"] == "alerting":
                states.setdefault(r["name"], []).append(r["state"])
    print("alerts (state of each rule):")
    for alert, s in sorted(states.items()):
        counts = ", ".join(f"{n} {state}" for state, n in sorted({x: s.count(x) for x in s}.items()))
        print(f"  {alert:<32} {counts}")
    q = f'routemeter:http_requests:rate5m{{namespace="{ns}",monitored_service="{name}"}}'
    result = api(base, "/api/v1/query?" + urllib.parse.urlencode({"query": q}))["result"]
    print("routemeter:http_requests:rate5m, requests per second by route:")
    for s in sorted(result, key=lambda s: -float(s["value"][1])):
        print(f"  {s['metric'].get('http_route', '?'):<24} {float(s['value'][1]):8.2f}")


if __name__ == "__main__":
    main()
