//! Grafana dashboards: one per MonitoredService (in a ConfigMap the Grafana sidecar of
//! kube-prometheus-stack discovers), and one overall dashboard shipped in the chart. Both
//! are built on the recording rules of [`super::rules`], so panels stay cheap to query.

use serde_json::{Value, json};

/// A time-series panel at a grid position.
fn panel(
    id: u32,
    title: &str,
    unit: &str,
    (x, y, w): (u32, u32, u32),
    targets: &[(&str, &str)],
) -> Value {
    let targets: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, (expr, legend))| {
            json!({ "refId": char::from(b'A' + u8::try_from(i).unwrap_or(0)).to_string(), "expr": expr, "legendFormat": legend,
                    "datasource": { "type": "prometheus", "uid": "${datasource}" } })
        })
        .collect();
    json!({
        "id": id, "type": "timeseries", "title": title,
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "gridPos": { "x": x, "y": y, "w": w, "h": 8 },
        "fieldConfig": { "defaults": { "unit": unit }, "overrides": [] },
        "targets": targets,
    })
}

/// The PromQL of every panel, with `$namespace`, `$service` and `$route` variables.
pub fn panels() -> Vec<Value> {
    let s = r#"namespace="$namespace",monitored_service=~"$service""#;
    let r = format!(r#"{s},http_route=~"$route""#);
    vec![
        panel(
            1,
            "Request rate by route",
            "reqps",
            (0, 0, 12),
            &[(
                &format!("sum by (http_route) (routemeter:http_requests:rate5m{{{r}}})"),
                "{{http_route}}",
            )],
        ),
        panel(
            2,
            "5xx ratio by route",
            "percentunit",
            (12, 0, 12),
            &[(
                &format!("max by (http_route) (routemeter:http_errors:ratio_rate5m{{{r}}})"),
                "{{http_route}}",
            )],
        ),
        panel(
            3,
            "Latency p50 / p95 / p99",
            "s",
            (0, 8, 12),
            &[
                (
                    &format!(
                        "max by (http_route) (routemeter:http_request_duration_seconds:p50_rate5m{{{r}}})"
                    ),
                    "p50 {{http_route}}",
                ),
                (
                    &format!(
                        "max by (http_route) (routemeter:http_request_duration_seconds:p95_rate5m{{{r}}})"
                    ),
                    "p95 {{http_route}}",
                ),
                (
                    &format!(
                        "max by (http_route) (routemeter:http_request_duration_seconds:p99_rate5m{{{r}}})"
                    ),
                    "p99 {{http_route}}",
                ),
            ],
        ),
        panel(
            4,
            "SLO burn rate (1h, errors)",
            "none",
            (12, 8, 12),
            &[(
                &format!("max by (http_route) (routemeter_slo:errors:ratio_rate1h{{{r}}}) / 0.001"),
                "{{http_route}}",
            )],
        ),
        panel(
            5,
            "Error budget left",
            "percentunit",
            (0, 16, 12),
            &[
                (
                    &format!(
                        "min by (http_route) (routemeter_slo:error_budget_remaining:ratio{{{r}}})"
                    ),
                    "errors {{http_route}}",
                ),
                (
                    &format!(
                        "min by (http_route) (routemeter_slo:latency_budget_remaining:ratio{{{r}}})"
                    ),
                    "latency {{http_route}}",
                ),
            ],
        ),
        panel(
            6,
            "In-flight requests",
            "none",
            (12, 16, 12),
            &[(
                &format!("sum by (http_request_method) (http_server_active_requests{{{s}}})"),
                "{{http_request_method}}",
            )],
        ),
        panel(
            7,
            "Upstream errors",
            "ops",
            (0, 24, 12),
            &[
                (
                    &format!(
                        "sum by (error_type) (rate(routemeter_upstream_connect_errors_total{{{s}}}[5m]))"
                    ),
                    "connect {{error_type}}",
                ),
                (
                    &format!(
                        "sum by (phase) (rate(routemeter_upstream_timeouts_total{{{s}}}[5m]))"
                    ),
                    "timeout {{phase}}",
                ),
                (
                    &format!("sum by (state) (routemeter_upstream_endpoints{{{s}}})"),
                    "endpoints {{state}}",
                ),
            ],
        ),
        panel(
            8,
            "Websocket connections",
            "none",
            (12, 24, 12),
            &[
                (
                    &format!(
                        "sum by (http_route) (routemeter_websocket_connections_active{{{r}}})"
                    ),
                    "open {{http_route}}",
                ),
                (
                    &format!(
                        "sum by (http_route) (rate(routemeter_websocket_connections_total{{{r}}}[5m]))"
                    ),
                    "new/s {{http_route}}",
                ),
            ],
        ),
        panel(
            9,
            "Proxy overhead p99",
            "s",
            (0, 32, 12),
            &[(
                &format!(
                    "histogram_quantile(0.99, sum by (le) (rate(routemeter_proxy_overhead_seconds_bucket{{{s}}}[5m])))"
                ),
                "p99",
            )],
        ),
    ]
}

fn variable(name: &str, query: &str, multi: bool) -> Value {
    json!({
        "name": name, "type": "query", "refresh": 2, "includeAll": multi, "multi": multi,
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "query": { "query": query, "refId": name }, "definition": query,
    })
}

fn dashboard(uid: String, title: String, namespace: Option<&str>, service: Option<&str>) -> Value {
    let mut ns = variable(
        "namespace",
        "label_values(routemeter:http_requests:rate5m, namespace)",
        false,
    );
    if let Some(n) = namespace {
        ns["current"] = json!({ "text": n, "value": n });
    }
    let mut svc = variable(
        "service",
        r#"label_values(routemeter:http_requests:rate5m{namespace="$namespace"}, monitored_service)"#,
        true,
    );
    if let Some(s) = service {
        svc["current"] = json!({ "text": s, "value": s });
    }
    json!({
        "uid": uid, "title": title, "tags": ["routemeter"], "schemaVersion": 39, "version": 1,
        "time": { "from": "now-1h", "to": "now" }, "refresh": "30s",
        "templating": { "list": [
            { "name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source" },
            ns, svc,
            variable("route", r#"label_values(routemeter:http_requests:rate5m{namespace="$namespace",monitored_service=~"$service"}, http_route)"#, true),
        ]},
        "panels": panels(),
    })
}

/// The dashboard of one MonitoredService, opening on it.
pub fn for_service(namespace: &str, service: &str) -> Value {
    let uid = format!("routemeter-{namespace}-{service}");
    let uid: String = uid.chars().take(40).collect();
    dashboard(
        uid,
        format!("routemeter / {namespace} / {service}"),
        Some(namespace),
        Some(service),
    )
}

/// The overall dashboard, over every monitored service.
pub fn overview() -> Value {
    dashboard(
        "routemeter-overview".into(),
        "routemeter / overview".into(),
        None,
        None,
    )
}
