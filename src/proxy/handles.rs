//! The handles of each route's series, and the record of a finished request on them.
//!
//! A request records with atomic adds on handles its route carries ([`RouteSeries`], one
//! per declared route in the [`super::state::Snapshot`], one per inferred template, made
//! when it is admitted): no hashing of label values, no lock, no lookup by string. A
//! series is resolved, through its typed labels ([`RequestLabels`], [`RouteMethodLabels`],
//! [`RouteLabels`], [`MethodLabels`]: the only code that hands values to a family), on its
//! first use and kept; so exactly the series there were before handles exist, each
//! created by the same request as before.
//!
//! Per (route, method), `http_server_request_duration_seconds` has a table per error type,
//! of a slot per common status code ([`COMMON_STATUSES`]), each resolved on its first
//! request; a code without a slot is looked up in the family on each request, as every
//! code was before handles. A reload hands the routes it keeps the handles they had, and
//! the families keep every series they made, so counting goes on in the same series; a
//! removed route's series stay, as counters do.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::recorder::{Observation, Pending, Recorder, Series};
use crate::outcome;
use crate::pagination::Reading;
use crate::route::{METHOD_LABELS, MethodLabel};

/// The status codes with a slot of their own in each (route, method, error type)'s table:
/// those most answers carry, and those the proxy answers itself (400, 431, 499, 502, 503,
/// 504). Any other code is looked up in the family on each request.
pub const COMMON_STATUSES: [u16; 32] = [
    200, 201, 202, 204, 206, //
    301, 302, 303, 304, 307, 308, //
    400, 401, 403, 404, 405, 406, 408, 409, 410, 412, 413, 415, 422, 429, 431, 499, //
    500, 501, 502, 503, 504,
];

/// Error-type tables per (route, method): one for requests that did not fail, one per
/// failure of the proxy's taxonomy (11); an error type of a slot beyond is looked up.
pub const ERROR_SLOTS: usize = 12;

/// No slot: the code is not in [`COMMON_STATUSES`].
const NO_SLOT: u8 = u8::MAX;

/// The slot of every code below 600 in [`COMMON_STATUSES`], [`NO_SLOT`] for the others.
const STATUS_SLOTS: [u8; 600] = {
    let mut slots = [NO_SLOT; 600];
    let mut i = 0;
    while i < COMMON_STATUSES.len() {
        slots[COMMON_STATUSES[i] as usize] = i as u8;
        i += 1;
    }
    slots
};

/// The slot of `status` in a table, if it has one.
fn status_slot(status: u16) -> Option<usize> {
    match STATUS_SLOTS.get(usize::from(status)) {
        Some(&slot) if slot != NO_SLOT => Some(usize::from(slot)),
        _ => None,
    }
}

/// An `error_type` label value, typed: `""` for a request that did not fail, else the name
/// of a failure ([`super::service::Failure`]), with the slot of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorLabel {
    slot: u8,
    name: &'static str,
}

impl ErrorLabel {
    /// No failure: `error_type=""`.
    pub const NONE: ErrorLabel = ErrorLabel { slot: 0, name: "" };

    /// The failure named `name`, whose tables are in slot `slot` (from 1; 0 is
    /// [`ErrorLabel::NONE`]'s).
    pub const fn failure(slot: u8, name: &'static str) -> Self {
        ErrorLabel { slot, name }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        self.name
    }

    /// Its slot among a (route, method)'s [`ERROR_SLOTS`] tables.
    pub fn slot(self) -> usize {
        usize::from(self.slot)
    }
}

#[cfg(test)]
thread_local! {
    /// Counts resolutions by label values on this thread, for the tests that check the
    /// request path makes none.
    static LOOKUPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Notes one resolution by label values (counted in tests, nothing otherwise).
fn looked_up() {
    #[cfg(test)]
    LOOKUPS.with(|n| n.set(n.get() + 1));
}

/// The resolutions by label values made on this thread so far.
#[cfg(test)]
pub(crate) fn lookups() -> u64 {
    LOOKUPS.with(std::cell::Cell::get)
}

/// The labels of an `http_server_request_duration_seconds` series.
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels<'a> {
    pub route: &'a str,
    pub method: MethodLabel,
    pub status: u16,
    pub error: ErrorLabel,
}

impl RequestLabels<'_> {
    /// Its series in `family`, created at 0 the first time; the values go in the order of
    /// [`super::metrics::REQUEST_LABELS`].
    pub fn resolve<T: MetricVecBuilder>(&self, family: &MetricVec<T>) -> T::M {
        looked_up();
        let mut code = itoa::Buffer::new();
        family.with_label_values(&[
            self.route,
            self.method.as_str(),
            code.format(self.status),
            self.error.as_str(),
        ])
    }
}

/// The labels `http_route`, `http_request_method` (the body-size histograms).
#[derive(Debug, Clone, Copy)]
pub struct RouteMethodLabels<'a> {
    pub route: &'a str,
    pub method: MethodLabel,
}

impl RouteMethodLabels<'_> {
    /// Its series in `family`, created at 0 the first time.
    pub fn resolve<T: MetricVecBuilder>(&self, family: &MetricVec<T>) -> T::M {
        looked_up();
        family.with_label_values(&[self.route, self.method.as_str()])
    }
}

/// The label `http_route` (the websocket families).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabels<'a> {
    pub route: &'a str,
}

impl RouteLabels<'_> {
    /// Its series in `family`, created at 0 the first time.
    pub fn resolve<T: MetricVecBuilder>(&self, family: &MetricVec<T>) -> T::M {
        looked_up();
        family.with_label_values(&[self.route])
    }
}

/// The label `http_request_method` (`http_server_active_requests`).
#[derive(Debug, Clone, Copy)]
pub struct MethodLabels {
    pub method: MethodLabel,
}

impl MethodLabels {
    /// Its series in `family`, created at 0 the first time.
    pub fn resolve<T: MetricVecBuilder>(&self, family: &MetricVec<T>) -> T::M {
        looked_up();
        family.with_label_values(&[self.method.as_str()])
    }
}

/// The families a request records on (the same as [`super::metrics::ProxyMetrics`]'),
/// and the handles every route shares: the in-flight gauge of each method.
#[derive(Debug, Clone)]
pub struct RequestFamilies {
    pub(super) request_duration: HistogramVec,
    pub(super) request_body_size: HistogramVec,
    pub(super) response_body_size: HistogramVec,
    pub(super) active_requests: IntGaugeVec,
    pub(super) websocket_active: IntGaugeVec,
    pub(super) websocket_total: IntCounterVec,
    pub(super) websocket_duration: HistogramVec,
    pub(super) summary: Arc<Recorder>,
    /// `http_server_active_requests` of each method, resolved on its first request
    /// (`Default::default()`: none yet).
    pub(super) active: [OnceLock<IntGauge>; METHOD_LABELS.len()],
}

impl RequestFamilies {
    /// `http_server_active_requests` of `method`.
    pub fn active(&self, method: MethodLabel) -> &IntGauge {
        self.active[method.index()]
            .get_or_init(|| MethodLabels { method }.resolve(&self.active_requests))
    }
}

/// The handles of one route: per method, and its websockets'.
#[derive(Debug)]
pub struct RouteSeries {
    label: Arc<str>,
    /// Whether its `/api/summary` windows hold pagination figures.
    paginated: bool,
    methods: [OnceLock<Box<MethodSeries>>; METHOD_LABELS.len()],
    websocket: OnceLock<WebsocketSeries>,
    websocket_duration: OnceLock<Histogram>,
}

/// `routemeter_websocket_connections_active` and `_total` of a route.
#[derive(Debug)]
struct WebsocketSeries {
    active: IntGauge,
    total: IntCounter,
}

impl RouteSeries {
    /// The handles of the route labelled `label`, none resolved yet; `paginated` when the
    /// route has pagination.
    pub fn new(label: Arc<str>, paginated: bool) -> Self {
        RouteSeries {
            label,
            paginated,
            methods: Default::default(),
            websocket: OnceLock::new(),
            websocket_duration: OnceLock::new(),
        }
    }

    /// The `http_route` label.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// Whether the route has pagination.
    pub fn paginated(&self) -> bool {
        self.paginated
    }

    /// The handles of its requests of `method`.
    pub fn method(&self, method: MethodLabel) -> &MethodSeries {
        self.methods[method.index()].get_or_init(|| {
            Box::new(MethodSeries {
                route: self.label.clone(),
                method,
                paginated: self.paginated,
                durations: Default::default(),
                bodies: OnceLock::new(),
                summary: ArcSwapOption::empty(),
            })
        })
    }

    fn websocket(&self, families: &RequestFamilies) -> &WebsocketSeries {
        self.websocket.get_or_init(|| {
            let labels = RouteLabels { route: &self.label };
            WebsocketSeries {
                active: labels.resolve(&families.websocket_active),
                total: labels.resolve(&families.websocket_total),
            }
        })
    }

    /// Counts a websocket connection upgraded on the route.
    pub fn websocket_opened(&self, families: &RequestFamilies) {
        let websocket = self.websocket(families);
        websocket.active.inc();
        websocket.total.inc();
    }

    /// Counts the end of a websocket connection opened `lifetime` ago.
    pub fn websocket_closed(&self, families: &RequestFamilies, lifetime: Duration) {
        self.websocket(families).active.dec();
        self.websocket_duration
            .get_or_init(|| {
                RouteLabels { route: &self.label }.resolve(&families.websocket_duration)
            })
            .observe(lifetime.as_secs_f64());
    }
}

/// A (route, method)'s duration series of one error type, by status slot.
type StatusTable = [OnceLock<Histogram>; COMMON_STATUSES.len()];

/// The handles of one (route, method).
#[derive(Debug)]
pub struct MethodSeries {
    route: Arc<str>,
    method: MethodLabel,
    paginated: bool,
    /// `http_server_request_duration_seconds` by error slot, then status slot; each table
    /// made with the first request of its error type.
    durations: [OnceLock<Box<StatusTable>>; ERROR_SLOTS],
    bodies: OnceLock<BodySeries>,
    /// Its `/api/summary` windows; replaced when the recorder forgot them (idle for two
    /// hours), so a route that comes back has windows that are listed.
    summary: ArcSwapOption<Series>,
}

/// The body-size histograms of a (route, method).
#[derive(Debug)]
struct BodySeries {
    request: Histogram,
    response: Histogram,
}

impl MethodSeries {
    fn labels(&self, status: u16, error: ErrorLabel) -> RequestLabels<'_> {
        RequestLabels {
            route: &self.route,
            method: self.method,
            status,
            error,
        }
    }

    /// The duration series of (`status`, `error`) if it has a slot, resolved the first time.
    pub fn duration(
        &self,
        families: &RequestFamilies,
        status: u16,
        error: ErrorLabel,
    ) -> Option<&Histogram> {
        let table = self.durations.get(error.slot())?;
        let slot = status_slot(status)?;
        let table = table.get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        Some(table[slot].get_or_init(|| {
            self.labels(status, error)
                .resolve(&families.request_duration)
        }))
    }

    fn bodies(&self, families: &RequestFamilies) -> &BodySeries {
        self.bodies.get_or_init(|| {
            let labels = RouteMethodLabels {
                route: &self.route,
                method: self.method,
            };
            BodySeries {
                request: labels.resolve(&families.request_body_size),
                response: labels.resolve(&families.response_body_size),
            }
        })
    }

    /// Counts a request in flight on its `/api/summary` windows until the handle is dropped.
    pub fn start(&self, families: &RequestFamilies) -> Pending {
        if let Some(pending) = self.summary.load().as_ref().and_then(Series::enter) {
            return pending;
        }
        // First request, or windows the recorder forgot: found (or made) by their key.
        looked_up();
        let pending = families
            .summary
            .start(&self.route, self.method.as_str(), self.paginated);
        self.summary.store(Some(pending.series().clone()));
        pending
    }
}

/// A finished request, as every figure records it.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// The status answered (or recorded: 499 for a client that left), 0 for none.
    pub status: u16,
    pub error: ErrorLabel,
    pub elapsed: Duration,
    /// When it finished: the clock reading `elapsed` was taken from.
    pub at: Instant,
    pub request_bytes: usize,
    pub response_bytes: usize,
    /// What its query said, on a route with pagination.
    pub pagination: Option<Reading>,
}

impl Finished {
    /// Records it on the handles of its (route, method): the request histogram, the body
    /// sizes and the `/api/summary` windows (`summary`, started when it arrived).
    pub fn record(&self, series: &MethodSeries, families: &RequestFamilies, summary: Pending) {
        let seconds = self.elapsed.as_secs_f64();
        match series.duration(families, self.status, self.error) {
            Some(histogram) => histogram.observe(seconds),
            None => series
                .labels(self.status, self.error)
                .resolve(&families.request_duration)
                .observe(seconds),
        }
        let bodies = series.bodies(families);
        bodies.request.observe(self.request_bytes as f64);
        bodies.response.observe(self.response_bytes as f64);
        summary.record(&self.observation(), self.at);
    }

    /// What the `/api/summary` windows keep of it.
    pub fn observation(&self) -> Observation {
        Observation {
            latency: self.elapsed,
            status: self.status,
            error: outcome::is_error(self.status, self.error.as_str()),
            request_bytes: self.request_bytes as u64,
            response_bytes: self.response_bytes as u64,
            pagination: self.pagination,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hint::black_box;
    use std::time::Instant;

    use prometheus::Registry;

    use super::*;
    use crate::config::{Pagination, ProxyConfig, Route};
    use crate::proxy::metrics::{ProxyMetrics, encode};
    use crate::proxy::state::Snapshot;
    use crate::summary::{Objectives, Window};

    fn route(path: &str, methods: &[&str], paginated: bool) -> Route {
        Route {
            path: path.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            name: None,
            latency_objective: None,
            pagination: paginated.then(Pagination::default),
        }
    }

    fn config(routes: Vec<Route>) -> ProxyConfig {
        ProxyConfig::new(vec!["127.0.0.1:1".into()], routes)
    }

    fn metrics() -> (Registry, ProxyMetrics) {
        let registry = Registry::new();
        let m = ProxyMetrics::register(&registry, vec![0.01, 0.1, 1.0]).expect("register");
        (registry, m)
    }

    fn text(registry: &Registry) -> String {
        String::from_utf8(encode(registry)).expect("utf8")
    }

    /// One request through the handles, as `request_filter` and `logging` record it.
    fn request(
        route: &RouteSeries,
        families: &RequestFamilies,
        method: MethodLabel,
        done: Finished,
    ) {
        let series = route.method(method);
        let summary = series.start(families);
        families.active(method).inc();
        families.active(method).dec();
        done.record(series, families, summary);
    }

    fn answered(status: u16, error: ErrorLabel) -> Finished {
        Finished {
            status,
            error,
            elapsed: Duration::from_millis(5),
            at: Instant::now(),
            request_bytes: 10,
            response_bytes: 100,
            pagination: None,
        }
    }

    const RESET: ErrorLabel = ErrorLabel::failure(5, "upstream_reset");

    #[test]
    fn status_slots_are_the_common_codes() {
        for (i, code) in COMMON_STATUSES.iter().enumerate() {
            assert_eq!(status_slot(*code), Some(i));
        }
        for rare in [0, 100, 218, 418, 599, 600, 999, u16::MAX] {
            assert_eq!(status_slot(rare), None, "{rare}");
        }
        assert!(COMMON_STATUSES.len() < usize::from(NO_SLOT));
    }

    #[test]
    fn a_known_route_resolves_its_series_once_then_never() {
        let (registry, m) = metrics();
        let snapshot = Snapshot::build(
            config(vec![route("/items/{id}", &[], false)]),
            None,
            &m.pagination,
        )
        .expect("valid");
        m.init_route_series(&snapshot);
        let families = &m.families;
        let items = snapshot.series(0);
        let get =
            |status, error| request(items, families, MethodLabel::GET, answered(status, error));
        let before = lookups();
        get(200, ErrorLabel::NONE);
        // The 200 series was resolved with the config; the rest on this first request:
        // the in-flight gauge, the two body sizes and the summary windows.
        assert_eq!(lookups() - before, 4);
        let first = lookups();
        for _ in 0..1000 {
            get(200, ErrorLabel::NONE);
        }
        assert_eq!(lookups(), first, "1,000 requests, no lookup");

        // A status or error type met for the first time is resolved once.
        get(503, ErrorLabel::NONE);
        get(200, RESET);
        assert_eq!(lookups(), first + 2);
        for _ in 0..100 {
            get(503, ErrorLabel::NONE);
            get(200, RESET);
        }
        assert_eq!(lookups(), first + 2);

        // A code without a slot is looked up on each request, as before handles.
        for _ in 0..3 {
            get(418, ErrorLabel::NONE);
        }
        assert_eq!(lookups(), first + 5);

        let text = text(&registry);
        for (status, error, count) in [
            ("200", "", 1001),
            ("503", "", 101),
            ("200", "upstream_reset", 101),
            ("418", "", 3),
        ] {
            let series = format!(
                r#"http_server_request_duration_seconds_count{{error_type="{error}",http_request_method="GET",http_response_status_code="{status}",http_route="/items/{{id}}"}} {count}"#
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
        assert!(text.contains(r#"http_server_request_body_size_bytes_count{http_request_method="GET",http_route="/items/{id}"} 1206"#), "{text}");
        assert!(text.contains(r#"http_server_active_requests{http_request_method="GET"} 0"#));
        let summary = m.summary.summary(Window::OneMinute, &Objectives::default());
        assert_eq!(summary.overall.requests, 1206);
    }

    #[test]
    fn an_inferred_template_gets_its_handles_when_admitted() {
        let (registry, m) = metrics();
        let snapshot = Snapshot::build(config(vec![]), None, &m.pagination).expect("valid");
        let inferred = &snapshot.inferred;
        let families = &m.families;
        let crate::route::Inferred::New(template) = inferred.lookup("/orders/1") else {
            panic!("a new template");
        };
        let orders =
            inferred.admit_with(template, |label| Arc::new(RouteSeries::new(label, false)));
        request(
            &orders,
            families,
            MethodLabel::from("POST"),
            answered(201, ErrorLabel::NONE),
        );
        let first = lookups();
        for i in 2..1000 {
            let crate::route::Inferred::Known(route) = inferred.lookup(&format!("/orders/{i}"))
            else {
                panic!("known");
            };
            assert!(Arc::ptr_eq(&route, &orders));
            request(
                &route,
                families,
                MethodLabel::from("POST"),
                answered(201, ErrorLabel::NONE),
            );
        }
        assert_eq!(lookups(), first, "no lookup by label once admitted");
        assert!(text(&registry).contains(r#"http_server_request_duration_seconds_count{error_type="",http_request_method="POST",http_response_status_code="201",http_route="/orders/{id}"} 999"#));
    }

    #[test]
    fn a_reload_keeps_counting_into_the_same_series() {
        let (registry, m) = metrics();
        let families = &m.families;
        let first = Snapshot::build(
            config(vec![
                route("/a", &[], false),
                route("/gone", &[], false),
                route("/p", &[], false),
            ]),
            None,
            &m.pagination,
        )
        .expect("valid");
        m.init_route_series(&first);
        for id in 0..3 {
            request(
                first.series(id),
                families,
                MethodLabel::GET,
                answered(200, ErrorLabel::NONE),
            );
        }
        // `/a` stays, `/gone` goes, `/p` gains pagination, `/new` comes.
        let second = Snapshot::build(
            config(vec![
                route("/new", &[], false),
                route("/a", &[], false),
                route("/p", &[], true),
            ]),
            Some(&first),
            &m.pagination,
        )
        .expect("valid");
        m.init_route_series(&second);
        assert!(
            Arc::ptr_eq(first.series(0), second.series(1)),
            "/a keeps its handles"
        );
        assert!(
            !Arc::ptr_eq(first.series(2), second.series(2)),
            "/p's windows change layout"
        );
        assert!(second.series(2).paginated());
        assert!(Arc::ptr_eq(&first.unmatched, &second.unmatched));
        assert!(Arc::ptr_eq(first.inferred.other(), second.inferred.other()));
        let before = lookups();
        request(
            second.series(1),
            families,
            MethodLabel::GET,
            answered(200, ErrorLabel::NONE),
        );
        assert_eq!(lookups(), before, "/a resolved nothing again");
        request(
            second.series(2),
            families,
            MethodLabel::GET,
            answered(200, ErrorLabel::NONE),
        );
        request(
            second.series(0),
            families,
            MethodLabel::GET,
            answered(200, ErrorLabel::NONE),
        );

        let text = text(&registry);
        for (route, count) in [("/a", 2), ("/gone", 1), ("/p", 2), ("/new", 1)] {
            let series = format!(
                r#"http_server_request_duration_seconds_count{{error_type="",http_request_method="GET",http_response_status_code="200",http_route="{route}"}} {count}"#
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
    }

    #[test]
    fn windows_the_recorder_forgot_are_found_again() {
        let (_, m) = metrics();
        let families = &m.families;
        let route = RouteSeries::new(Arc::from("/a"), false);
        let series = route.method(MethodLabel::GET);
        drop(series.start(families));
        let o = Objectives::default();
        // Idle for longer than the coarse ring: dropped at the next summary.
        m.summary
            .summary_at(Window::OneHour, Duration::from_secs(60 * 123), &o);
        assert!(m.summary.is_empty());
        let before = lookups();
        let pending = series.start(families);
        assert_eq!(lookups(), before + 1, "found again through the recorder");
        assert_eq!(m.summary.len(), 1);
        let summary = m.summary.summary_at(Window::OneMinute, m.summary.now(), &o);
        assert_eq!(summary.overall.in_flight, 1);
        drop(pending);
        drop(series.start(families));
        assert_eq!(lookups(), before + 1);
    }

    /// The request path before handles, kept to compare with: every series found by its
    /// label values on each request.
    fn record_by_labels(m: &ProxyMetrics, route: &Arc<str>, done: &Finished) {
        let active = m.active_requests.with_label_values(&["GET"]);
        active.inc();
        let summary = m.summary.start(route, "GET", false);
        active.dec();
        let mut code = itoa::Buffer::new();
        m.request_duration
            .with_label_values(&[route, "GET", code.format(done.status), done.error.as_str()])
            .observe(done.elapsed.as_secs_f64());
        let sizes = [&**route, "GET"];
        m.request_body_size
            .with_label_values(&sizes)
            .observe(done.request_bytes as f64);
        m.response_body_size
            .with_label_values(&sizes)
            .observe(done.response_bytes as f64);
        summary.record(&done.observation(), done.at);
    }

    #[test]
    fn handles_write_what_label_lookups_wrote() {
        let requests = [
            answered(200, ErrorLabel::NONE),
            answered(418, ErrorLabel::NONE),
            answered(200, RESET),
            answered(0, ErrorLabel::failure(8, "client_aborted")),
            answered(502, ErrorLabel::failure(1, "connect_refused")),
        ];
        let (by_labels, old) = metrics();
        let (by_handles, new) = metrics();
        let label: Arc<str> = Arc::from("/users/{id}");
        let route = RouteSeries::new(label.clone(), false);
        for done in requests.iter().cycle().take(50) {
            record_by_labels(&old, &label, done);
            request(&route, &new.families, MethodLabel::GET, *done);
        }
        assert_eq!(text(&by_handles), text(&by_labels));
    }

    /// The cost of recording a request, by label lookups (before) and on handles (after),
    /// and of finding a known inferred template. `cargo test --release --lib
    /// record_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: run in release"]
    fn record_cost() {
        const N: u32 = 1_000_000;
        let (_, m) = metrics();
        let label: Arc<str> = Arc::from("/api/v1/users/{id}/orders");
        let route = RouteSeries::new(label.clone(), false);
        let done = answered(200, ErrorLabel::NONE);
        let time = |name: &str, f: &dyn Fn()| {
            for _ in 0..N / 10 {
                f();
            }
            let start = Instant::now();
            for _ in 0..N {
                f();
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
            println!("{name}: {ns:.1} ns per request");
            ns
        };
        let before = time("record by label lookups", &|| {
            record_by_labels(&m, black_box(&label), black_box(&done))
        });
        let after = time("record on handles", &|| {
            request(
                black_box(&route),
                &m.families,
                MethodLabel::GET,
                black_box(done),
            )
        });
        println!("handles: {:.0}% less", 100.0 * (1.0 - after / before));

        // Finding a known inferred template: before, a String per request and a read lock.
        let old = std::sync::RwLock::new(std::collections::HashSet::<Arc<str>>::new());
        old.write()
            .expect("lock")
            .insert(Arc::from("/orders/{id}/items"));
        let inferred = crate::route::InferredRoutes::new(100);
        inferred.label("/orders/1/items");
        let path = "/orders/123456/items";
        time(
            "known inferred template, allocated and read-locked",
            &|| {
                let mut template = String::with_capacity(path.len().min(256));
                let mut rest = black_box(path);
                while let Some((segment, tail)) = crate::route::next_segment(rest) {
                    template.push('/');
                    let id = crate::route::is_id_like(segment);
                    template.push_str(if id { "{id}" } else { segment });
                    rest = tail;
                }
                let seen = old.read().expect("lock");
                black_box(seen.get(template.as_str()).cloned());
            },
        );
        time("known inferred template, lookup", &|| {
            black_box(inferred.lookup(black_box(path)));
        });
    }
}
