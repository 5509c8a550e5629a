//! The PrometheusRule groups for one MonitoredService.
//!
//! Series are selected by `namespace` and `monitored_service`, the label the generated
//! ServiceMonitor adds to every target. Names follow the `level:metric:operations`
//! convention; the docs list every rule (docs/rules.md).
//!
//! SLO alerts are the multi-window, multi-burn-rate alerts of the Google SRE workbook: page
//! when 2% of a 30-day budget burns in an hour (14.4×, 1h and 5m windows) or 5% in six
//! hours (6×, 6h and 30m); open a ticket at 3× (1d and 2h) or 1× (3d and 6h).

use serde_json::{Value, json};

use super::le_matcher;
use crate::crd::{MonitoringSpec, RouteSpec, SloSpec};
use crate::pagination;

/// Windows over which SLO ratios are recorded.
pub const SLO_WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// A burn-rate condition: long window, short window, burn factor.
pub type BurnWindow = (&'static str, &'static str, f64);

/// (severity, conditions) of the burn-rate alerts.
pub const BURN_RATES: [(&str, [BurnWindow; 2]); 2] = [
    ("critical", [("1h", "5m", 14.4), ("6h", "30m", 6.0)]),
    ("warning", [("1d", "2h", 3.0), ("3d", "6h", 1.0)]),
];

const COUNT: &str = "http_server_request_duration_seconds_count";
const BUCKET: &str = "http_server_request_duration_seconds_bucket";
const BY_ROUTE: &str = "namespace, monitored_service, http_route";
const BY_SERVICE: &str = "namespace, monitored_service";
const PAGINATION_REQUESTS: &str = "routemeter_pagination_requests_total";
const PAGINATION_COUNT: &str = "routemeter_pagination_request_duration_seconds_count";
const PAGINATION_BUCKET: &str = "routemeter_pagination_request_duration_seconds_bucket";
const PAGE_SIZE_BUCKET: &str = "routemeter_pagination_request_duration_by_page_size_seconds_bucket";
/// p95 latency per offset range of each paginated route, over 5m.
const OFFSET_RANGE_P95: &str = "routemeter:pagination_request_duration_seconds:p95_rate5m";
/// Requests per second per offset range of each paginated route, over 5m.
const OFFSET_RANGE_RATE: &str = "routemeter:pagination_offset_range_requests:rate5m";

/// Whether any route has pagination: only then are its rules written.
pub fn any_paginated(routes: &[RouteSpec]) -> bool {
    routes.iter().any(|r| r.pagination.is_some())
}

/// The rate over `window` of the requests that count as errors (docs/rules.md, "What
/// counts as an error"; [`crate::outcome`]): answers with a 5xx, and answers of any other
/// status that the service's side cut off after their head (an `error_type` of
/// [`crate::outcome::SERVER_ERROR_TYPES`]). The two selectors pick disjoint series (by
/// status), so `or` adds them without counting one twice; summed `by`.
fn errors_rate(by: &str, selector: &str, window: &str) -> String {
    let cut = crate::outcome::server_error_types_regex();
    format!(
        r#"sum by ({by}) (rate({COUNT}{{{selector},http_response_status_code=~"5.."}}[{window}]) or rate({COUNT}{{{selector},http_response_status_code!~"5..",error_type=~"{cut}"}}[{window}]))"#
    )
}

/// Escapes a route template for a PromQL regex inside a double-quoted string.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

fn rule(record: &str, expr: String) -> Value {
    json!({ "record": record, "expr": expr })
}

/// A rule of one objective: the `objective` label keeps the rules of the service-wide
/// objective and of each route's own apart (same name, different series).
fn objective_rule(record: &str, expr: String, objective: &str) -> Value {
    json!({ "record": record, "expr": expr, "labels": { "objective": objective } })
}

/// The objectives in force: the service's for every route without its own, then each
/// route's own. Each comes with the label matcher selecting its routes.
fn objectives<'a>(
    monitoring: &'a MonitoringSpec,
    routes: &'a [RouteSpec],
) -> Vec<(String, &'a SloSpec, String)> {
    let overridden: Vec<&RouteSpec> = routes.iter().filter(|r| r.slo.is_some()).collect();
    let mut out = Vec::new();
    if overridden.is_empty() {
        out.push((String::new(), &monitoring.slo, "service".to_string()));
    } else {
        let alternatives: Vec<String> = overridden.iter().map(|r| regex_escape(&r.path)).collect();
        out.push((
            format!(r#",http_route!~"{}""#, alternatives.join("|")),
            &monitoring.slo,
            "service".to_string(),
        ));
        for r in overridden {
            if let Some(slo) = &r.slo {
                let label = r.name.clone().unwrap_or_else(|| r.path.clone());
                out.push((
                    format!(
                        r#",http_route="{}""#,
                        r.path.replace('\\', "\\\\").replace('"', "\\\"")
                    ),
                    slo,
                    label,
                ));
            }
        }
    }
    out
}

/// The error budget of each objective in force, by its `objective` label: what the
/// dashboard's burn-rate panel divides each route's error ratio by.
pub fn error_budgets(monitoring: &MonitoringSpec, routes: &[RouteSpec]) -> Vec<(String, String)> {
    objectives(monitoring, routes)
        .into_iter()
        .map(|(_, slo, objective)| (objective, budget_of(slo.availability)))
        .collect()
}

/// The rule groups, as the PrometheusRule's `spec.groups`.
pub fn groups(
    namespace: &str,
    service: &str,
    monitoring: &MonitoringSpec,
    routes: &[RouteSpec],
) -> Value {
    let sel = format!(r#"namespace="{namespace}",monitored_service="{service}""#);
    let mut recording = Vec::new();
    for (level, by) in [("routemeter", BY_ROUTE), ("routemeter_service", BY_SERVICE)] {
        recording.push(rule(
            &format!("{level}:http_requests:rate5m"),
            format!("sum by ({by}) (rate({COUNT}{{{sel}}}[5m]))"),
        ));
        recording.push(rule(
            &format!("{level}:http_errors:ratio_rate5m"),
            format!(
                "{} / sum by ({by}) (rate({COUNT}{{{sel}}}[5m]))",
                errors_rate(by, &sel, "5m")
            ),
        ));
        for (q, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
            recording.push(rule(
                &format!("{level}:http_request_duration_seconds:{name}_rate5m"),
                format!("histogram_quantile({q}, sum by ({by}, le) (rate({BUCKET}{{{sel}}}[5m])))"),
            ));
        }
    }

    if any_paginated(routes) {
        recording.extend(pagination_rules(&sel));
    }

    let mut slo_rules = Vec::new();
    let mut budget = Vec::new();
    let objectives = objectives(monitoring, routes);
    for (matcher, slo, objective) in &objectives {
        let le = le_matcher(slo.latency_threshold_seconds);
        let windows = SLO_WINDOWS
            .iter()
            .copied()
            .chain(std::iter::once(slo.window.as_str()));
        for w in windows {
            let total = format!("sum by ({BY_ROUTE}) (rate({COUNT}{{{sel}{matcher}}}[{w}]))");
            slo_rules.push(objective_rule(
                &format!("routemeter_slo:errors:ratio_rate{w}"),
                format!(
                    "{} / {total}",
                    errors_rate(BY_ROUTE, &format!("{sel}{matcher}"), w)
                ),
                objective,
            ));
            slo_rules.push(objective_rule(
                &format!("routemeter_slo:slow_requests:ratio_rate{w}"),
                format!(r#"1 - sum by ({BY_ROUTE}) (rate({BUCKET}{{{sel}{matcher},{le}}}[{w}])) / {total}"#),
                objective,
            ));
        }
        // The request rate of each burn-rate condition's long window, which the alerts
        // require to reach `alerts.minRequestsPerSecond`.
        for (_, pairs) in BURN_RATES {
            for (long, _, _) in pairs {
                slo_rules.push(objective_rule(
                    &format!("routemeter_slo:http_requests:rate{long}"),
                    format!("sum by ({BY_ROUTE}) (rate({COUNT}{{{sel}{matcher}}}[{long}]))"),
                    objective,
                ));
            }
        }
        let (err_budget, lat_budget) = (
            budget_of(slo.availability),
            budget_of(slo.latency_objective),
        );
        let w = &slo.window;
        budget.push(objective_rule(
            "routemeter_slo:error_budget_remaining:ratio",
            format!("1 - routemeter_slo:errors:ratio_rate{w}{{{sel}{matcher}}} / {err_budget}"),
            objective,
        ));
        budget.push(objective_rule(
            "routemeter_slo:latency_budget_remaining:ratio",
            format!(
                "1 - routemeter_slo:slow_requests:ratio_rate{w}{{{sel}{matcher}}} / {lat_budget}"
            ),
            objective,
        ));
    }
    // Rules sharing a name and window differ by their route matchers: keep each once.
    dedup_records(&mut slo_rules);
    slo_rules.extend(budget);

    let mut alerts = alert_rules(&sel, service, monitoring, &objectives);
    if any_paginated(routes) {
        alerts.extend(deep_pages_alerts(&sel, service, monitoring, &objectives));
    }
    json!([
        { "name": format!("routemeter.{namespace}.{service}.recording"), "rules": recording },
        { "name": format!("routemeter.{namespace}.{service}.slo"), "interval": "1m", "rules": slo_rules },
        { "name": format!("routemeter.{namespace}.{service}.alerts"), "rules": alerts },
    ])
}

/// The recording rules of routes with pagination, per route and range (methods added).
fn pagination_rules(sel: &str) -> Vec<Value> {
    vec![
        rule(
            "routemeter:pagination_requests:rate5m",
            format!("sum by ({BY_ROUTE}, outcome) (rate({PAGINATION_REQUESTS}{{{sel}}}[5m]))"),
        ),
        rule(
            OFFSET_RANGE_RATE,
            format!("sum by ({BY_ROUTE}, offset_range) (rate({PAGINATION_COUNT}{{{sel}}}[5m]))"),
        ),
        rule(
            OFFSET_RANGE_P95,
            format!(
                "histogram_quantile(0.95, sum by ({BY_ROUTE}, offset_range, le) (rate({PAGINATION_BUCKET}{{{sel}}}[5m])))"
            ),
        ),
        rule(
            "routemeter:pagination_request_duration_by_page_size_seconds:p95_rate5m",
            format!(
                "histogram_quantile(0.95, sum by ({BY_ROUTE}, page_size_range, le) (rate({PAGE_SIZE_BUCKET}{{{sel}}}[5m])))"
            ),
        ),
    ]
}

/// `RoutemeterDeepPagesSlow`, one rule per objective (each route held to its own latency
/// threshold): when enabled, the p95 of an offset range from `deepPages.minOffset` over
/// the route's threshold, with at least `deepPages.minRequestsPerSecond` in that range.
fn deep_pages_alerts(
    sel: &str,
    service: &str,
    m: &MonitoringSpec,
    objectives: &[(String, &SloSpec, String)],
) -> Vec<Value> {
    let (a, deep) = (&m.alerts, &m.alerts.deep_pages);
    if !(a.enabled && deep.enabled) {
        return Vec::new();
    }
    let ranges: Vec<String> = pagination::ranges_from(deep.min_offset)
        .iter()
        .map(|r| regex_escape(r))
        .collect();
    let ranges = ranges.join("|");
    let min_rate = deep.min_requests_per_second;
    objectives
        .iter()
        .map(|(matcher, slo, objective)| {
            let threshold = slo.latency_threshold_seconds;
            let m = format!(r#"{sel}{matcher},offset_range=~"{ranges}""#);
            json!({
                "alert": "RoutemeterDeepPagesSlow",
                "expr": format!("{OFFSET_RANGE_P95}{{{m}}} > {threshold} and on ({BY_ROUTE}, offset_range) {OFFSET_RANGE_RATE}{{{m}}} >= {min_rate}"),
                "for": a.for_,
                "labels": { "severity": "warning", "objective": objective },
                "annotations": annotations(
                    format!("Deep pages are slow on {service} {{{{ $labels.http_route }}}}"),
                    format!("p95 latency of {service} route {{{{ $labels.http_route }}}} in namespace {{{{ $labels.namespace }}}} at offsets {{{{ $labels.offset_range }}}} is {{{{ $value | humanizeDuration }}}} (threshold {threshold}s). An OFFSET query reads every row it skips: paginate with a cursor, or cap the offset."),
                    &a.runbook_url),
            })
        })
        .collect()
}

fn dedup_records(rules: &mut Vec<Value>) {
    let mut seen = std::collections::HashSet::new();
    rules.retain(|r| seen.insert(r.to_string()));
}

/// The share of requests an objective allows to fail, e.g. 0.001 for 99.9%.
fn budget_of(objective_percent: f64) -> String {
    let b = (100.0 - objective_percent) / 100.0;
    // Round off float noise (99.9 → 0.0010000000000000009).
    format!("{}", (b * 1e9).round() / 1e9)
}

fn annotations(summary: String, description: String, runbook: &Option<String>) -> Value {
    let mut a = json!({ "summary": summary, "description": description });
    if let Some(url) = runbook {
        a["runbook_url"] = json!(url);
    }
    a
}

/// The guard of a burn-rate condition over `long`: as many requests over `long` as the
/// ratio alerts need over their 5m (`min` × 300), as a rate over `long`. A service too
/// quiet for the 5m alerts still has its SLO judged over hours and days, where it has the
/// requests to judge by; 0 (off) stays 0.
fn burn_guard_rate(min: f64, long: &str) -> f64 {
    const RATIO_WINDOW_SECONDS: f64 = 300.0;
    match humantime::parse_duration(long) {
        Ok(window) if window.as_secs_f64() > 0.0 => {
            min * RATIO_WINDOW_SECONDS / window.as_secs_f64()
        }
        _ => min,
    }
}

/// ` and REQUESTS >= min`: the traffic a ratio or quantile needs to mean something
/// (`alerts.minRequestsPerSecond`); nothing when the guard is off (0).
fn traffic_guard(min: f64, requests: &str) -> String {
    if min.is_finite() && min > 0.0 {
        format!(" and {requests} >= {min}")
    } else {
        String::new()
    }
}

fn alert_rules(
    sel: &str,
    service: &str,
    m: &MonitoringSpec,
    objectives: &[(String, &SloSpec, String)],
) -> Vec<Value> {
    let a = &m.alerts;
    let min = a.min_requests_per_second;
    let mut out = Vec::new();
    if a.enabled {
        let guard = traffic_guard(min, &format!("routemeter:http_requests:rate5m{{{sel}}}"));
        out.push(json!({
            "alert": "RoutemeterHighErrorRate",
            "expr": format!("routemeter:http_errors:ratio_rate5m{{{sel}}} > {}{guard}", a.error_ratio),
            "for": a.for_,
            "labels": { "severity": "critical" },
            "annotations": annotations(
                format!("High 5xx ratio on {service} {{{{ $labels.http_route }}}}"),
                format!("{{{{ $value | humanizePercentage }}}} of requests to {service} route {{{{ $labels.http_route }}}} in namespace {{{{ $labels.namespace }}}} failed with a 5xx or were cut off over the last 5m (threshold {}).", a.error_ratio),
                &a.runbook_url),
        }));
        out.push(json!({
            "alert": "RoutemeterHighLatency",
            "expr": format!("routemeter:http_request_duration_seconds:p95_rate5m{{{sel}}} > {}{guard}", a.latency_p95_seconds),
            "for": a.for_,
            "labels": { "severity": "warning" },
            "annotations": annotations(
                format!("High p95 latency on {service} {{{{ $labels.http_route }}}}"),
                format!("p95 latency of {service} route {{{{ $labels.http_route }}}} in namespace {{{{ $labels.namespace }}}} is {{{{ $value | humanizeDuration }}}} (threshold {}s).", a.latency_p95_seconds),
                &a.runbook_url),
        }));
        out.push(json!({
            "alert": "RoutemeterProxyDown",
            "expr": format!("sum by ({BY_SERVICE}) (up{{{sel}}}) == 0 or absent(up{{{sel}}})"),
            "for": "5m",
            "labels": { "severity": "critical" },
            "annotations": annotations(
                format!("routemeter proxy of {service} is down"),
                format!("No routemeter proxy of {service} has been scraped successfully for 5m: its traffic is not metered, and may not be served."),
                &a.runbook_url),
        }));
        out.push(json!({
            "alert": "RoutemeterNoHealthyUpstream",
            "expr": format!(r#"max by ({BY_SERVICE}) (routemeter_upstream_endpoints{{{sel},state="healthy"}}) == 0"#),
            "for": "1m",
            "labels": { "severity": "critical" },
            "annotations": annotations(
                format!("{service} has no healthy endpoint"),
                format!("The routemeter proxy of {service} has had no healthy upstream endpoint for 1m: requests fail with 503."),
                &a.runbook_url),
        }));
    }
    for (matcher, slo, objective) in objectives {
        for (kind, record, target) in [
            ("Error", "errors", slo.availability),
            ("Latency", "slow_requests", slo.latency_objective),
        ] {
            let budget = budget_of(target);
            for (severity, pairs) in BURN_RATES {
                let expr = pairs
                    .iter()
                    .map(|(long, short, factor)| {
                        let guard = traffic_guard(
                            burn_guard_rate(min, long),
                            &format!("routemeter_slo:http_requests:rate{long}{{{sel}{matcher}}}"),
                        );
                        format!(
                            "(routemeter_slo:{record}:ratio_rate{long}{{{sel}{matcher}}} > ({factor} * {budget}) and routemeter_slo:{record}:ratio_rate{short}{{{sel}{matcher}}} > ({factor} * {budget}){guard})"
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" or ");
                let what = if kind == "Error" {
                    format!("availability objective {target}%")
                } else {
                    format!(
                        "latency objective {target}% under {}s",
                        slo.latency_threshold_seconds
                    )
                };
                out.push(json!({
                    "alert": format!("Routemeter{kind}BudgetBurn"),
                    "expr": expr,
                    "labels": { "severity": severity, "slo": record, "objective": objective },
                    "annotations": annotations(
                        format!("{service} {{{{ $labels.http_route }}}} is burning its {} budget {}", kind.to_lowercase(), if severity == "critical" { "fast" } else { "steadily" }),
                        format!("{service} route {{{{ $labels.http_route }}}} in namespace {{{{ $labels.namespace }}}} is consuming the error budget of its {what} over {} faster than it can afford.", slo.window),
                        &m.alerts.runbook_url),
                }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MonitoringSpec {
        MonitoringSpec::default()
    }

    #[test]
    fn default_thresholds_are_the_seeds() {
        let g = groups("shop", "api", &spec(), &[]).to_string();
        assert!(g.contains(r#"routemeter:http_errors:ratio_rate5m{namespace=\"shop\",monitored_service=\"api\"} > 0.05"#), "{g}");
        assert!(g.contains("p95_rate5m{namespace=\\\"shop\\\",monitored_service=\\\"api\\\"} > 1"));
        assert!(g.contains(r#""for":"5m""#));
    }

    #[test]
    fn burn_rates_follow_the_workbook() {
        let g = groups("shop", "api", &spec(), &[]).to_string();
        for needle in [
            "(14.4 * 0.001)",
            "(6 * 0.001)",
            "(3 * 0.001)",
            "(1 * 0.001)",
            "ratio_rate3d",
            "(14.4 * 0.01)",
        ] {
            assert!(g.contains(needle), "missing {needle}");
        }
        assert!(
            g.contains(r#"le=\"0.5\""#),
            "latency SLO uses the 0.5s boundary"
        );
    }

    #[test]
    fn route_objectives_override_the_service() {
        let slo = SloSpec {
            availability: 99.0,
            latency_threshold_seconds: 2.0,
            ..Default::default()
        };
        let routes = vec![RouteSpec {
            path: "/navigate".into(),
            methods: vec![],
            name: None,
            slo: Some(slo),
            pagination: None,
        }];
        let g = groups("shop", "api", &spec(), &routes).to_string();
        assert!(g.contains(r#"http_route!~\"/navigate\""#), "{g}");
        assert!(g.contains(r#"http_route=\"/navigate\""#));
        assert!(g.contains("(14.4 * 0.01)"));
        assert!(g.contains(r#"le=~\"2|2\\\\.0\""#), "{g}");
    }

    fn paginated(path: &str) -> RouteSpec {
        RouteSpec {
            path: path.into(),
            methods: vec![],
            name: None,
            slo: None,
            pagination: Some(Default::default()),
        }
    }

    #[test]
    fn pagination_rules_only_for_routes_with_pagination() {
        let plain = groups("shop", "api", &spec(), &[]).to_string();
        assert!(!plain.contains("pagination"), "{plain}");
        let g = groups("shop", "api", &spec(), &[paginated("/items")]).to_string();
        for record in [
            "routemeter:pagination_requests:rate5m",
            "routemeter:pagination_offset_range_requests:rate5m",
            "routemeter:pagination_request_duration_seconds:p95_rate5m",
            "routemeter:pagination_request_duration_by_page_size_seconds:p95_rate5m",
        ] {
            assert!(g.contains(record), "{record}");
        }
        assert!(!g.contains("RoutemeterDeepPagesSlow"), "off by default");
    }

    #[test]
    fn the_deep_pages_alert_holds_each_route_to_its_threshold() {
        let mut m = spec();
        m.alerts.deep_pages.enabled = true;
        m.alerts.deep_pages.min_offset = 10_000;
        let mut own = paginated("/search");
        own.slo = Some(SloSpec {
            latency_threshold_seconds: 2.0,
            ..Default::default()
        });
        let g = groups("shop", "api", &m, &[paginated("/items"), own]);
        let alerts: Vec<&Value> = g[2]["rules"]
            .as_array()
            .expect("alerts")
            .iter()
            .filter(|r| r["alert"] == "RoutemeterDeepPagesSlow")
            .collect();
        assert_eq!(alerts.len(), 2, "the service's objective and /search's");
        assert_eq!(
            alerts[0]["expr"],
            r#"routemeter:pagination_request_duration_seconds:p95_rate5m{namespace="shop",monitored_service="api",http_route!~"/search",offset_range=~"10000-99999|100000\\+"} > 0.5 and on (namespace, monitored_service, http_route, offset_range) routemeter:pagination_offset_range_requests:rate5m{namespace="shop",monitored_service="api",http_route!~"/search",offset_range=~"10000-99999|100000\\+"} >= 0.1"#
        );
        assert!(
            alerts[1]["expr"]
                .as_str()
                .expect("expr")
                .contains(r#"http_route="/search",offset_range=~"10000-99999|100000\\+"} > 2 and"#)
        );
        assert_eq!(alerts[1]["labels"]["objective"], "/search");
        // The threshold alerts' switch turns it off too.
        m.alerts.enabled = false;
        let g = groups("shop", "api", &m, &[paginated("/items")]).to_string();
        assert!(!g.contains("RoutemeterDeepPagesSlow"));
    }

    fn alert<'a>(g: &'a Value, name: &str, severity: &str) -> Vec<&'a str> {
        g[2]["rules"]
            .as_array()
            .expect("alerts")
            .iter()
            .filter(|r| r["alert"] == name && r["labels"]["severity"] == severity)
            .filter_map(|r| r["expr"].as_str())
            .collect()
    }

    #[test]
    fn ratio_alerts_need_the_minimum_traffic() {
        let g = groups("shop", "api", &spec(), &[]);
        let sel = r#"{namespace="shop",monitored_service="api"}"#;
        assert_eq!(
            alert(&g, "RoutemeterHighErrorRate", "critical"),
            [format!(
                "routemeter:http_errors:ratio_rate5m{sel} > 0.05 and routemeter:http_requests:rate5m{sel} >= 1"
            )]
        );
        assert_eq!(
            alert(&g, "RoutemeterHighLatency", "warning"),
            [format!(
                "routemeter:http_request_duration_seconds:p95_rate5m{sel} > 1 and routemeter:http_requests:rate5m{sel} >= 1"
            )]
        );
        let page = alert(&g, "RoutemeterErrorBudgetBurn", "critical");
        assert_eq!(
            page,
            [format!(
                "(routemeter_slo:errors:ratio_rate1h{sel} > (14.4 * 0.001) and routemeter_slo:errors:ratio_rate5m{sel} > (14.4 * 0.001) and routemeter_slo:http_requests:rate1h{sel} >= 0.08333333333333333) or (routemeter_slo:errors:ratio_rate6h{sel} > (6 * 0.001) and routemeter_slo:errors:ratio_rate30m{sel} > (6 * 0.001) and routemeter_slo:http_requests:rate6h{sel} >= 0.013888888888888888)"
            )]
        );
        // 300 requests over each long window, as the 5m alerts need over theirs.
        let ticket = alert(&g, "RoutemeterLatencyBudgetBurn", "warning");
        assert!(
            ticket[0].contains(&format!("http_requests:rate1d{sel} >= {}", 300.0 / 86400.0)),
            "{ticket:?}"
        );
        assert!(
            ticket[0].contains(&format!(
                "http_requests:rate3d{sel} >= {}",
                300.0 / 259200.0
            )),
            "{ticket:?}"
        );
        // Each long window's request rate is recorded, per objective.
        let text = g.to_string();
        for w in ["1h", "6h", "1d", "3d"] {
            assert!(
                text.contains(&format!(
                    r#""record":"routemeter_slo:http_requests:rate{w}""#
                )),
                "{w}"
            );
        }

        // 0 turns the guard off: the expressions of before.
        let mut m = spec();
        m.alerts.min_requests_per_second = 0.0;
        m.alerts.error_ratio = 0.1;
        let g = groups("shop", "api", &m, &[]);
        assert_eq!(
            alert(&g, "RoutemeterHighErrorRate", "critical"),
            [format!("routemeter:http_errors:ratio_rate5m{sel} > 0.1")]
        );
        assert!(!alert(&g, "RoutemeterErrorBudgetBurn", "critical")[0].contains("http_requests"));
    }

    #[test]
    fn route_objectives_guard_with_their_own_routes_traffic() {
        let routes = vec![RouteSpec {
            path: "/navigate".into(),
            methods: vec![],
            name: Some("navigate".into()),
            slo: Some(SloSpec {
                availability: 99.5,
                ..Default::default()
            }),
            pagination: None,
        }];
        let mut m = spec();
        m.alerts.min_requests_per_second = 0.5;
        let g = groups("shop", "api", &m, &routes);
        let page = alert(&g, "RoutemeterErrorBudgetBurn", "critical");
        assert_eq!(page.len(), 2);
        assert!(page[0].contains(r#"routemeter_slo:http_requests:rate1h{namespace="shop",monitored_service="api",http_route!~"/navigate"} >= 0.041666666666666664"#), "{}", page[0]);
        assert!(page[1].contains(r#"routemeter_slo:http_requests:rate1h{namespace="shop",monitored_service="api",http_route="/navigate"} >= 0.041666666666666664"#), "{}", page[1]);
    }

    #[test]
    fn regex_escaping_of_templates() {
        assert_eq!(regex_escape("/users/{id}"), r"/users/\\{id\\}");
        assert_eq!(regex_escape("/static/*"), r"/static/\\*");
    }
}
