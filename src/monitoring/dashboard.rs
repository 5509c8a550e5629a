//! Grafana dashboards: one per MonitoredService (in a ConfigMap the Grafana sidecar of
//! kube-prometheus-stack discovers), and one overall dashboard shipped in the chart. Both
//! are built on the recording rules of [`super::rules`], so panels stay cheap to query.
//! The dashboard of a MonitoredService with a paginated route gets a pagination row
//! ([`pagination_panels`]); the overall one has none, as most services have no pagination.

use serde_json::{Value, json};

use super::rules::{any_paginated, error_budgets};
use crate::crd::{MonitoringSpec, RouteSpec};

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

/// The burn rate over 1h of each route: its error ratio divided by the error budget of
/// its objective. `budgets` holds `(objective label, budget)` per objective in force
/// ([`super::rules::error_budgets`]); the routes of different objectives are disjoint, so
/// the terms are joined with `or`. An objective of `None` selects every route.
fn burn_rate_expr(r: &str, budgets: &[(Option<String>, String)]) -> String {
    budgets
        .iter()
        .map(|(objective, budget)| {
            let objective = objective.as_ref().map_or(String::new(), |o| {
                format!(
                    r#",objective="{}""#,
                    o.replace('\\', "\\\\").replace('"', "\\\"")
                )
            });
            format!("max by (http_route) (routemeter_slo:errors:ratio_rate1h{{{r}{objective}}}) / {budget}")
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The PromQL of every panel, with `$namespace`, `$service` and `$route` variables; the
/// burn-rate panel divides by `budgets` (see [`burn_rate_expr`]).
pub fn panels(budgets: &[(Option<String>, String)]) -> Vec<Value> {
    let s = r#"namespace="$namespace",monitored_service=~"$service""#;
    let r = format!(r#"{s},http_route=~"$route""#);
    let burn_title = match budgets {
        [(None, budget)] => format!("SLO burn rate (1h, errors, budget {budget})"),
        _ => "SLO burn rate (1h, errors)".to_string(),
    };
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
            &burn_title,
            "none",
            (12, 8, 12),
            &[(&burn_rate_expr(&r, budgets), "{{http_route}}")],
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

/// Where the pagination row starts: below the last of [`panels`].
const PAGINATION_ROW_Y: u32 = 40;

/// The panels of the pagination row, below its row header: p95 latency by page size and
/// by offset range, the most requested offset ranges, and what the queries carried
/// (paginated, absent, invalid parameters).
pub fn pagination_panels() -> Vec<Value> {
    let s = r#"namespace="$namespace",monitored_service=~"$service""#;
    let r = format!(r#"{s},http_route=~"$route""#);
    let y = PAGINATION_ROW_Y + 1;
    let mut most_requested = panel(
        13,
        "Most requested pages (offset ranges)",
        "reqps",
        (0, y + 8, 12),
        &[(
            &format!(
                "topk(10, sum by (http_route, offset_range) (routemeter:pagination_offset_range_requests:rate5m{{{r}}}))"
            ),
            "{{http_route}} offset {{offset_range}}",
        )],
    );
    most_requested["type"] = json!("bargauge");
    most_requested["options"] = json!({
        "orientation": "horizontal", "displayMode": "gradient",
        "reduceOptions": { "calcs": ["lastNotNull"], "values": false },
    });
    most_requested["targets"][0]["instant"] = json!(true);
    vec![
        panel(
            11,
            "Latency p95 by page size",
            "s",
            (0, y, 12),
            &[(
                &format!(
                    "max by (http_route, page_size_range) (routemeter:pagination_request_duration_by_page_size_seconds:p95_rate5m{{{r}}})"
                ),
                "{{http_route}} size {{page_size_range}}",
            )],
        ),
        panel(
            12,
            "Latency p95 by offset range",
            "s",
            (12, y, 12),
            &[(
                &format!(
                    "max by (http_route, offset_range) (routemeter:pagination_request_duration_seconds:p95_rate5m{{{r}}})"
                ),
                "{{http_route}} offset {{offset_range}}",
            )],
        ),
        most_requested,
        panel(
            14,
            "Pagination parameters",
            "reqps",
            (12, y + 8, 12),
            &[(
                &format!(
                    "sum by (http_route, outcome) (routemeter:pagination_requests:rate5m{{{r}}})"
                ),
                "{{http_route}} {{outcome}}",
            )],
        ),
    ]
}

/// The row header of the pagination panels.
fn pagination_row() -> Value {
    json!({
        "id": 10, "type": "row", "title": "Pagination", "collapsed": false, "panels": [],
        "gridPos": { "x": 0, "y": PAGINATION_ROW_Y, "w": 24, "h": 1 },
    })
}

fn variable(name: &str, query: &str, multi: bool) -> Value {
    json!({
        "name": name, "type": "query", "refresh": 2, "includeAll": multi, "multi": multi,
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "query": { "query": query, "refId": name }, "definition": query,
    })
}

fn dashboard(
    uid: String,
    title: String,
    namespace: Option<&str>,
    service: Option<&str>,
    budgets: &[(Option<String>, String)],
    pagination: bool,
) -> Value {
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
        "panels": all_panels(budgets, pagination),
    })
}

fn all_panels(budgets: &[(Option<String>, String)], pagination: bool) -> Vec<Value> {
    let mut all = panels(budgets);
    if pagination {
        all.push(pagination_row());
        all.extend(pagination_panels());
    }
    all
}

/// The dashboard of one MonitoredService, opening on it: the burn rate against each
/// route's objective (the service's or the route's own), with the pagination row when one
/// of its routes has pagination.
pub fn for_service(
    namespace: &str,
    service: &str,
    monitoring: &MonitoringSpec,
    routes: &[RouteSpec],
) -> Value {
    let uid = format!("routemeter-{namespace}-{service}");
    let uid: String = uid.chars().take(40).collect();
    let budgets: Vec<(Option<String>, String)> = error_budgets(monitoring, routes)
        .into_iter()
        .map(|(objective, budget)| (Some(objective), budget))
        .collect();
    dashboard(
        uid,
        format!("routemeter / {namespace} / {service}"),
        Some(namespace),
        Some(service),
        &budgets,
        any_paginated(routes),
    )
}

/// The overall dashboard, over every monitored service. It knows no spec, so its
/// burn-rate panel is against the default objective, which its title says.
pub fn overview() -> Value {
    let budget = error_budgets(&MonitoringSpec::default(), &[])
        .into_iter()
        .map(|(_, budget)| (None, budget))
        .collect::<Vec<_>>();
    dashboard(
        "routemeter-overview".into(),
        "routemeter / overview".into(),
        None,
        None,
        &budget,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SloSpec;

    #[test]
    fn the_pagination_row_comes_with_pagination_only() {
        let titles = |d: &Value| -> Vec<String> {
            d["panels"]
                .as_array()
                .expect("panels")
                .iter()
                .filter_map(|p| p["title"].as_str().map(str::to_string))
                .collect()
        };
        let m = MonitoringSpec::default();
        let plain = for_service("shop", "api", &m, &[]);
        assert!(!titles(&plain).iter().any(|t| t == "Pagination"));
        let paged = for_service("shop", "api", &m, &[route("/items", None, true)]);
        let t = titles(&paged);
        assert_eq!(
            t[t.len() - 5..],
            [
                "Pagination",
                "Latency p95 by page size",
                "Latency p95 by offset range",
                "Most requested pages (offset ranges)",
                "Pagination parameters"
            ]
        );
        // Every panel id is unique and below the last panel of the main rows.
        let all = paged["panels"].as_array().expect("panels");
        let mut ids: Vec<u64> = all.iter().filter_map(|p| p["id"].as_u64()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        let bottom = panels(&[(None, "0.001".into())])
            .iter()
            .filter_map(|p| Some(p["gridPos"]["y"].as_u64()? + p["gridPos"]["h"].as_u64()?))
            .max();
        assert_eq!(bottom, Some(u64::from(PAGINATION_ROW_Y)));
        assert!(!titles(&overview()).iter().any(|t| t == "Pagination"));
    }

    fn route(path: &str, slo: Option<SloSpec>, paginated: bool) -> RouteSpec {
        RouteSpec {
            path: path.into(),
            methods: vec![],
            name: None,
            slo,
            pagination: paginated.then(Default::default),
        }
    }

    fn burn_query(d: &Value) -> String {
        let panel = d["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .find(|p| p["id"] == 4)
            .expect("the burn-rate panel");
        panel["targets"][0]["expr"]
            .as_str()
            .expect("expr")
            .to_string()
    }

    #[test]
    fn the_burn_rate_is_against_each_routes_objective() {
        let r = r#"namespace="$namespace",monitored_service=~"$service",http_route=~"$route""#;
        let mut m = MonitoringSpec::default();
        m.slo.availability = 99.0;
        assert_eq!(
            burn_query(&for_service("shop", "api", &m, &[])),
            format!(
                r#"max by (http_route) (routemeter_slo:errors:ratio_rate1h{{{r},objective="service"}}) / 0.01"#
            )
        );
        let own = SloSpec {
            availability: 99.5,
            ..Default::default()
        };
        let d = for_service("shop", "api", &m, &[route("/navigate", Some(own), false)]);
        assert_eq!(
            burn_query(&d),
            format!(
                r#"max by (http_route) (routemeter_slo:errors:ratio_rate1h{{{r},objective="service"}}) / 0.01 or max by (http_route) (routemeter_slo:errors:ratio_rate1h{{{r},objective="/navigate"}}) / 0.005"#
            )
        );
        // The overview knows no spec: the default objective, named in the title.
        let o = overview();
        assert_eq!(
            burn_query(&o),
            format!("max by (http_route) (routemeter_slo:errors:ratio_rate1h{{{r}}}) / 0.001")
        );
        assert!(
            o.to_string()
                .contains("SLO burn rate (1h, errors, budget 0.001)")
        );
    }
}
