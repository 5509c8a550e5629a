//! The live summary of `/api/summary`: its JSON types, and how a window's counts become
//! figures, a score and recommendations. Pure: the proxy records the counts
//! (`proxy::recorder`), `routemeter compare` reads two summaries, and whatever else reads
//! the JSON shares these types.
//!
//! - [`window`]: windows, their slots, what a window adds up to, quantiles;
//! - [`score`]: the score, its status and the recommendations (docs/score.md);
//! - [`compare`]: `routemeter compare`, regressions between two summaries;
//! - [`top`]: `routemeter top`, a proxy's or a MonitoredService's summary live in a
//!   terminal;
//! - [`msvc`]: a MonitoredService's proxies read through the API server and merged, for
//!   `top --msvc` and `compare --msvc` (with `top`, the parts
//!   here that do I/O).
//!
//! Latencies are in seconds. Percentiles come from the counts per bucket of the same
//! boundaries as `http_server_request_duration_seconds`, interpolated inside the bucket as
//! Prometheus' `histogram_quantile` does: each is off by at most the width of the bucket
//! it falls in (with the default boundaries, 250 ms for a p95 between 0.25 s and 0.5 s),
//! and one beyond the last boundary is reported as that boundary. Over the same requests
//! they equal Prometheus' up to float rounding (docs/score.md). Means are exact.

pub mod compare;
pub mod msvc;
pub mod pagination;
pub mod score;
pub mod top;
pub mod window;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use pagination::{PaginationCounts, PaginationEntry};
use score::{Figures, Previous, Status};
pub use window::{Counts, Window};

/// How many routes `topByLatency` and `topByErrors` list.
pub const TOP_ROUTES: usize = 5;

/// The route of the `overall` entry.
pub const OVERALL_ROUTE: &str = "*";

/// Where the proxy's admin listener serves the summary.
pub const API_PATH: &str = "/api/summary";

/// The path and query of the summary of `window` on an admin listener:
/// `/api/summary?window=1m`.
pub fn api_path(window: Window) -> String {
    format!("{API_PATH}?window={window}")
}

/// `/api/summary`: one window of traffic, overall and per (route, method).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The window asked for.
    pub window: Window,
    /// Seconds of traffic the window covers (less than its length in a process younger
    /// than the window, and in the slot in progress); rates divide by this.
    pub seconds: f64,
    /// Upper boundaries of the latency buckets, in seconds (`+Inf` implied after the last).
    pub bounds: Vec<f64>,
    /// Every route and method together.
    pub overall: Entry,
    /// Each (route, method) with requests in the window or in flight, by route then method.
    pub routes: Vec<Entry>,
    /// The routes with the highest p95 (at least [`score::RECOMMENDATION_MIN_REQUESTS`]
    /// requests), at most [`TOP_ROUTES`].
    pub top_by_latency: Vec<Entry>,
    /// The routes with the highest 5xx ratio (at least one 5xx), at most [`TOP_ROUTES`].
    pub top_by_errors: Vec<Entry>,
    /// What to look at, worst route first, at most [`score::MAX_RECOMMENDATIONS`].
    pub recommendations: Vec<Recommendation>,
}

/// The figures of one (route, method), or of all of them for `overall`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The route template (`*` for `overall`).
    pub route: String,
    /// The method label (`*` for `overall`).
    pub method: String,
    /// Requests in the window.
    pub requests: u64,
    /// Requests per second over the window.
    pub rps: f64,
    /// Share of requests answered 5xx; `null` without requests.
    pub error_ratio: Option<f64>,
    /// Share of requests answered 4xx; `null` without requests.
    pub client_error_ratio: Option<f64>,
    /// Latency percentiles and mean, in seconds; `null` without requests.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
    /// Request and response body bytes over the window.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Requests in flight now.
    pub in_flight: i64,
    /// The latency objective the score holds the route to, in seconds.
    pub latency_objective: f64,
    /// p95 and 5xx ratio of the previous window of the same length; `null` without one.
    pub previous_p95: Option<f64>,
    pub previous_error_ratio: Option<f64>,
    /// Score 0–100 (docs/score.md); `null` without requests.
    pub score: Option<u8>,
    pub status: Option<Status>,
    /// Requests per latency bucket (one per boundary of `bounds`, then `+Inf`), so that
    /// summaries of several proxies merge exactly: add the buckets, then take quantiles.
    pub buckets: Vec<u64>,
    /// Page sizes, offsets and latency by offset range, for a route with pagination
    /// (docs/pagination.md); absent for other routes and for `overall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<PaginationEntry>,
}

/// A recommendation for one route, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    pub route: String,
    pub method: String,
    /// Names the route and the figure that triggered it.
    pub message: String,
}

/// The traffic of one (route, method) over a window and the one before.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesWindow {
    pub route: String,
    pub method: String,
    pub current: Counts,
    /// `None` when the recorder has not run a whole previous window yet.
    pub previous: Option<Counts>,
    pub in_flight: i64,
}

/// The latency objective of each route: per route template where known, else a default.
#[derive(Debug, Clone, PartialEq)]
pub struct Objectives {
    /// For routes without one of their own, in seconds.
    pub default: f64,
    /// By route template, in seconds.
    pub routes: BTreeMap<String, f64>,
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            default: score::DEFAULT_LATENCY_OBJECTIVE,
            routes: BTreeMap::new(),
        }
    }
}

impl Objectives {
    /// The objective of `route`.
    pub fn of(&self, route: &str) -> f64 {
        self.routes.get(route).copied().unwrap_or(self.default)
    }
}

/// Builds the summary of `window` from each series' counts; `seconds` is the time the
/// window covers. The overall entry adds every series' buckets and counters (so its
/// percentiles are those of all requests, not an average of the routes') and is held to
/// the default objective.
pub fn build(
    window: Window,
    seconds: f64,
    bounds: &[f64],
    series: &[SeriesWindow],
    objectives: &Objectives,
) -> Summary {
    let mut total = SeriesWindow {
        route: OVERALL_ROUTE.into(),
        method: OVERALL_ROUTE.into(),
        current: Counts::empty(bounds.len()),
        previous: None,
        in_flight: 0,
    };
    for s in series {
        total.current.add(&s.current);
        if let Some(p) = &s.previous {
            total
                .previous
                .get_or_insert_with(|| Counts::empty(bounds.len()))
                .add(p);
        }
        total.in_flight += s.in_flight;
    }
    // Offsets of different routes are not one listing's: `overall` has no pagination.
    total.current.pagination = None;
    let rate_seconds = seconds.max(1.0);
    let overall = entry(&total, bounds, rate_seconds, objectives.default);

    let mut routes: Vec<Entry> = series
        .iter()
        .filter(|s| s.current.requests() > 0 || s.in_flight > 0)
        .map(|s| entry(s, bounds, rate_seconds, objectives.of(&s.route)))
        .collect();
    routes.sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));

    let mut top_by_latency: Vec<Entry> = routes
        .iter()
        .filter(|e| e.requests >= score::RECOMMENDATION_MIN_REQUESTS)
        .cloned()
        .collect();
    top_by_latency.sort_by(|a, b| b.p95.unwrap_or(0.0).total_cmp(&a.p95.unwrap_or(0.0)));
    top_by_latency.truncate(TOP_ROUTES);
    let mut top_by_errors: Vec<Entry> = routes
        .iter()
        .filter(|e| e.error_ratio.unwrap_or(0.0) > 0.0)
        .cloned()
        .collect();
    top_by_errors.sort_by(|a, b| {
        let ratio = |e: &Entry| e.error_ratio.unwrap_or(0.0);
        ratio(b)
            .total_cmp(&ratio(a))
            .then(b.requests.cmp(&a.requests))
    });
    top_by_errors.truncate(TOP_ROUTES);

    Summary {
        window,
        seconds,
        bounds: bounds.to_vec(),
        recommendations: recommendations(window, bounds, series, &routes, objectives),
        overall,
        routes,
        top_by_latency,
        top_by_errors,
    }
}

/// Merges the summaries of several proxies of one service, over the same window and
/// bucket boundaries: per (route, method) the buckets and counters add, so percentiles are
/// those of every request (never an average of the proxies'), and rates add. The previous
/// window does not merge (a summary carries its figures, not its counts), so the merged
/// score has no trend. `None` when there is nothing to merge, or the parts disagree on the
/// window or the boundaries.
pub fn merge(parts: &[Summary]) -> Option<Summary> {
    let first = parts.first()?;
    if parts
        .iter()
        .any(|p| p.window != first.window || p.bounds != first.bounds)
    {
        return None;
    }
    let n = first.bounds.len();
    let mut series: BTreeMap<(String, String), SeriesWindow> = BTreeMap::new();
    let mut objectives = Objectives {
        default: first.overall.latency_objective,
        routes: BTreeMap::new(),
    };
    for part in parts {
        for e in &part.routes {
            if e.buckets.len() != n + 1 {
                return None;
            }
            objectives
                .routes
                .insert(e.route.clone(), e.latency_objective);
            let s = series
                .entry((e.route.clone(), e.method.clone()))
                .or_insert_with(|| SeriesWindow {
                    route: e.route.clone(),
                    method: e.method.clone(),
                    current: Counts::empty(n),
                    previous: None,
                    in_flight: 0,
                });
            s.current.add(&counts_of(e, n + 1)?);
            s.in_flight += e.in_flight;
        }
    }
    let seconds = parts.iter().map(|p| p.seconds).fold(0.0, f64::max);
    let series: Vec<SeriesWindow> = series.into_values().collect();
    Some(build(
        first.window,
        seconds,
        &first.bounds,
        &series,
        &objectives,
    ))
}

/// The counts behind an entry: its buckets exactly; errors and the latency sum from its
/// ratios and mean (exact up to rounding). `None` when its pagination buckets are not of
/// `buckets` latency buckets per range.
fn counts_of(e: &Entry, buckets: usize) -> Option<Counts> {
    let requests = e.requests as f64;
    let count = |x: f64| {
        let x = x.round();
        if x.is_finite() && x > 0.0 {
            x as u64
        } else {
            0
        }
    };
    let pagination = match &e.pagination {
        Some(p) => Some(PaginationCounts::from_entry(p, buckets)?),
        None => None,
    };
    Some(Counts {
        buckets: e.buckets.clone(),
        server_errors: count(e.error_ratio.unwrap_or(0.0) * requests),
        client_errors: count(e.client_error_ratio.unwrap_or(0.0) * requests),
        latency_micros: count(e.mean.unwrap_or(0.0) * requests * 1e6),
        request_bytes: e.request_bytes,
        response_bytes: e.response_bytes,
        pagination,
    })
}

/// Every route's recommendations, the lowest score first, capped.
fn recommendations(
    window: Window,
    bounds: &[f64],
    series: &[SeriesWindow],
    routes: &[Entry],
    objectives: &Objectives,
) -> Vec<Recommendation> {
    let mut worst_first: Vec<&Entry> = routes.iter().filter(|e| e.score.is_some()).collect();
    worst_first.sort_by_key(|e| e.score);
    let mut out = Vec::new();
    for e in worst_first {
        let Some(s) = series
            .iter()
            .find(|s| s.route == e.route && s.method == e.method)
        else {
            continue;
        };
        let Some(now) = figures(&s.current, bounds) else {
            continue;
        };
        let previous = s.previous.as_ref().and_then(|p| previous(p, bounds));
        let subject = format!("{} {}", e.method, e.route);
        let objective = objectives.of(&e.route);
        let mut messages =
            score::recommendations(&subject, &now, previous.as_ref(), objective, window);
        if let Some(p) = &s.current.pagination {
            messages.extend(score::pagination_recommendations(
                &subject,
                &p.figures(bounds),
                objective,
                window,
            ));
        }
        for message in messages {
            out.push(Recommendation {
                route: e.route.clone(),
                method: e.method.clone(),
                message,
            });
        }
    }
    out.truncate(score::MAX_RECOMMENDATIONS);
    out
}

fn figures(c: &Counts, bounds: &[f64]) -> Option<Figures> {
    Some(Figures {
        requests: c.requests(),
        p95: c.quantile(0.95, bounds)?,
        error_ratio: c.error_ratio()?,
        client_error_ratio: c.client_error_ratio()?,
    })
}

fn previous(c: &Counts, bounds: &[f64]) -> Option<Previous> {
    Some(Previous {
        requests: c.requests(),
        p95: c.quantile(0.95, bounds)?,
        error_ratio: c.error_ratio()?,
    })
}

fn entry(s: &SeriesWindow, bounds: &[f64], rate_seconds: f64, objective: f64) -> Entry {
    let c = &s.current;
    let requests = c.requests();
    let previous = s.previous.as_ref().and_then(|p| previous(p, bounds));
    let score = figures(c, bounds).map(|now| score::score(&now, previous.as_ref(), objective));
    Entry {
        route: s.route.clone(),
        method: s.method.clone(),
        requests,
        rps: requests as f64 / rate_seconds,
        error_ratio: c.error_ratio(),
        client_error_ratio: c.client_error_ratio(),
        p50: c.quantile(0.5, bounds),
        p95: c.quantile(0.95, bounds),
        p99: c.quantile(0.99, bounds),
        mean: c.mean(),
        request_bytes: c.request_bytes,
        response_bytes: c.response_bytes,
        in_flight: s.in_flight,
        latency_objective: objective,
        previous_p95: previous.map(|p| p.p95),
        previous_error_ratio: previous.map(|p| p.error_ratio),
        score,
        status: score.map(Status::of),
        buckets: c.buckets.clone(),
        pagination: c.pagination.as_ref().map(|p| p.entry(bounds)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::DEFAULT_DURATION_BUCKETS;

    fn series(route: &str, method: &str, requests: &[(u64, u16, u64)]) -> SeriesWindow {
        let mut current = Counts::empty(DEFAULT_DURATION_BUCKETS.len());
        for &(ms, status, n) in requests {
            for _ in 0..n {
                current.observe(
                    &DEFAULT_DURATION_BUCKETS,
                    Duration::from_millis(ms),
                    status,
                    (10, 100),
                );
            }
        }
        SeriesWindow {
            route: route.into(),
            method: method.into(),
            current,
            previous: None,
            in_flight: 0,
        }
    }

    fn known() -> Summary {
        let s = [
            series("/fast", "GET", &[(3, 200, 100)]),
            series("/slow", "GET", &[(300, 200, 20)]),
            series("/fail", "POST", &[(3, 500, 10)]),
            series("/idle", "GET", &[]),
        ];
        build(
            Window::OneMinute,
            10.0,
            &DEFAULT_DURATION_BUCKETS,
            &s,
            &Objectives::default(),
        )
    }

    #[test]
    fn proxies_merge_by_their_buckets_not_by_averaging() {
        let build_one = |s: &[SeriesWindow]| {
            build(
                Window::OneMinute,
                10.0,
                &DEFAULT_DURATION_BUCKETS,
                s,
                &Objectives::default(),
            )
        };
        // One proxy saw the fast requests, the other the slow ones and the failures.
        let a = build_one(&[series("/api", "GET", &[(3, 200, 90)])]);
        let b = build_one(&[series("/api", "GET", &[(300, 200, 8), (3, 500, 2)])]);
        let all = build_one(&[series(
            "/api",
            "GET",
            &[(3, 200, 90), (300, 200, 8), (3, 500, 2)],
        )]);
        let merged = merge(&[a.clone(), b]).expect("merged");
        assert_eq!(merged.overall.requests, 100);
        assert_eq!(merged.overall.rps, 10.0, "rates add");
        assert_eq!(merged.routes[0].error_ratio, Some(0.02));
        assert_eq!(
            merged.routes[0].p95, all.routes[0].p95,
            "the p95 of every request, as one proxy seeing them all would say"
        );
        assert_eq!(merged.routes[0].buckets, all.routes[0].buckets);
        assert!(
            (merged.routes[0].mean.expect("mean") - all.routes[0].mean.expect("mean")).abs() < 1e-6
        );
        assert_eq!(merged.routes[0].score, all.routes[0].score);
        // Other windows or boundaries do not merge.
        let mut other = a.clone();
        other.window = Window::FiveMinutes;
        assert!(merge(&[a, other]).is_none());
        assert!(merge(&[]).is_none());
    }

    #[test]
    fn known_traffic_gives_known_figures() {
        let s = known();
        assert_eq!(s.overall.requests, 130);
        assert_eq!(s.overall.rps, 13.0);
        assert_eq!(s.overall.error_ratio, Some(10.0 / 130.0));
        assert_eq!(
            s.routes
                .iter()
                .map(|e| e.route.as_str())
                .collect::<Vec<_>>(),
            ["/fail", "/fast", "/slow"],
            "sorted, idle routes left out"
        );
        let slow = &s.routes[2];
        let p95 = slow.p95.expect("p95");
        assert!((0.25..=0.5).contains(&p95), "{p95}");
        assert_eq!(slow.mean, Some(0.3));
        assert_eq!(slow.status, Some(Status::Excellent));
        assert_eq!((slow.request_bytes, slow.response_bytes), (200, 2000));
        let fail = &s.routes[0];
        assert_eq!(fail.error_ratio, Some(1.0));
        assert!(fail.score.expect("score") < 60);
        assert_eq!(fail.status, Some(Status::Poor));
        assert_eq!(s.top_by_errors.len(), 1);
        assert_eq!(s.top_by_latency[0].route, "/slow");
        assert_eq!(s.recommendations.len(), 1, "{:#?}", s.recommendations);
        assert_eq!(s.recommendations[0].route, "/fail");
        assert!(
            s.recommendations[0]
                .message
                .starts_with("POST /fail: 100.0 % of its requests answered 5xx in the last 1m")
        );
    }

    /// `/items` with pagination: 20 fast first pages of 20, 10 deep pages of 500 items
    /// taking 800 ms, 2 without parameters.
    fn paginated() -> SeriesWindow {
        use crate::pagination::Reading;
        let bounds = DEFAULT_DURATION_BUCKETS;
        let mut s = series("/items", "GET", &[]);
        let mut p = pagination::PaginationCounts::empty(bounds.len());
        let mut add = |ms: u64, reading: Reading, n: usize| {
            for _ in 0..n {
                let latency = Duration::from_millis(ms);
                s.current.observe(&bounds, latency, 200, (0, 100));
                p.observe(&bounds, latency, reading);
            }
        };
        let first = Reading::Paginated {
            size: Some(20),
            offset: Some(0),
        };
        let deep = Reading::Paginated {
            size: Some(500),
            offset: Some(5000),
        };
        add(20, first, 20);
        add(800, deep, 10);
        add(20, Reading::Absent, 2);
        s.current.pagination = Some(p);
        s
    }

    #[test]
    fn a_paginated_route_has_its_figures_and_recommendations() {
        let bounds = DEFAULT_DURATION_BUCKETS;
        let s = build(
            Window::FiveMinutes,
            300.0,
            &bounds,
            &[paginated(), series("/plain", "GET", &[(3, 200, 10)])],
            &Objectives::default(),
        );
        assert!(s.overall.pagination.is_none(), "no pagination overall");
        assert!(s.routes[1].pagination.is_none(), "/plain has none");
        let p = s.routes[0]
            .pagination
            .as_ref()
            .expect("/items has pagination");
        assert_eq!((p.paginated, p.absent, p.invalid), (30, 2, 0));
        assert_eq!(p.page_size.buckets, [0, 20, 0, 0, 0, 10, 0, 0]);
        assert_eq!(p.page_size.mean, Some(5400.0 / 30.0));
        assert_eq!((p.page_size.p50, p.page_size.p95), (Some(20), Some(500)));
        assert_eq!(p.offset.buckets, [20, 0, 0, 10, 0, 0]);
        assert_eq!(p.offset.mean, Some(50_000.0 / 30.0));
        assert_eq!(p.offset_ranges[3].range, "1000-9999");
        assert_eq!(p.offset_ranges[3].requests, 10);
        assert_eq!(p.offset_ranges[3].mean, Some(0.8));
        let deep_p95 = p.offset_ranges[3].p95.expect("deep p95");
        let first_p95 = p.offset_ranges[0].p95.expect("first-page p95");
        let messages: Vec<&str> = s
            .recommendations
            .iter()
            .filter(|r| r.route == "/items")
            .map(|r| r.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                format!(
                    "GET /items: p95 {} over its 500 ms objective in the last 5m; look at what it waits on (queries, calls to other services) or cache its answers",
                    score::seconds(s.routes[0].p95.expect("p95"))
                ),
                format!(
                    "GET /items: p95 {} at offsets of 1000 and more in the last 5m, over its 500 ms objective (the first page: {}); an OFFSET query reads every row it skips: paginate with a cursor (keyset) instead, or cap the offset",
                    score::seconds(deep_p95),
                    score::seconds(first_p95)
                ),
                "GET /items: 33.3 % of the requests giving a page size ask for more than 100 items in the last 5m; large pages are slow to build and to send: lower the largest page size it allows".to_string(),
            ]
        );

        // In the JSON only where there is pagination; read back and merged exactly.
        let json = serde_json::to_value(&s).expect("json");
        assert!(json["routes"][1].get("pagination").is_none());
        assert!(json["overall"].get("pagination").is_none());
        assert_eq!(
            json["routes"][0]["pagination"]["offsetRanges"][3]["range"],
            "1000-9999"
        );
        assert_eq!(json["routes"][0]["pagination"]["pageSize"]["p95"], 500);
        let back: Summary = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, s);
        let merged = merge(&[s.clone(), back]).expect("merged");
        let twice = merged.routes[0]
            .pagination
            .as_ref()
            .expect("merged pagination");
        assert_eq!((twice.paginated, twice.absent), (60, 4));
        assert_eq!(twice.offset.buckets, [40, 0, 0, 20, 0, 0]);
        assert_eq!(twice.offset_ranges[3].p95, Some(deep_p95));
        let mut broken = s.clone();
        if let Some(p) = broken.routes[0].pagination.as_mut() {
            p.offset_ranges.pop();
        }
        assert!(merge(&[s, broken]).is_none(), "a broken pagination object");
    }

    #[test]
    fn the_json_keeps_its_shape() {
        let json = serde_json::to_value(known()).expect("json");
        for key in [
            "window",
            "overall",
            "routes",
            "topByLatency",
            "topByErrors",
            "recommendations",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert_eq!(json["window"], "1m");
        let route = &json["routes"][1];
        for key in [
            "route",
            "method",
            "requests",
            "rps",
            "errorRatio",
            "clientErrorRatio",
            "p50",
            "p95",
            "p99",
            "mean",
            "requestBytes",
            "responseBytes",
            "inFlight",
            "score",
            "status",
        ] {
            assert!(route.get(key).is_some(), "routes[1].{key}");
            assert!(json["overall"].get(key).is_some(), "overall.{key}");
        }
        assert_eq!(route["status"], "excellent");
        let back: Summary = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, known());
    }

    #[test]
    fn the_previous_window_feeds_the_trend() {
        let mut s = series("/a", "GET", &[(300, 200, 50)]);
        s.previous = Some(series("/a", "GET", &[(20, 200, 50)]).current);
        let summary = build(
            Window::FiveMinutes,
            300.0,
            &DEFAULT_DURATION_BUCKETS,
            &[s],
            &Objectives::default(),
        );
        let e = &summary.routes[0];
        assert!(e.previous_p95.expect("previous") < 0.025);
        assert_eq!(e.score, Some(85), "30 latency + 50 errors + 5 trend");
        assert!(
            summary.recommendations[0].message.contains("p95 rose from"),
            "{:?}",
            summary.recommendations
        );
        assert_eq!(summary.overall.previous_error_ratio, Some(0.0));
    }
}
