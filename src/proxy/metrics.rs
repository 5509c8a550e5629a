//! The proxy's metrics, registered on a registry owned by the caller.
//!
//! Names and labels follow the OpenTelemetry HTTP semantic conventions in their Prometheus
//! form (`http.server.request.duration` → `http_server_request_duration_seconds`, attribute
//! `http.route` → label `http_route`); the proxy's own metrics are prefixed `routemeter_`.
//! Every label is bounded: routes are templates or fixed fallbacks, methods a closed list,
//! error types a closed enum, endpoints the upstream addresses in use, endpoint sources a
//! closed enum.

use std::sync::Arc;
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use super::handles::{ErrorLabel, RequestFamilies};
use super::pagination::PaginationFamilies;
use super::recorder::Recorder;
use super::state::{SharedState, Snapshot};
use crate::route::MethodLabel;

/// Boundaries of `routemeter_proxy_overhead_seconds`: 10 µs to 50 ms, where a proxy's own
/// cost lives; anything above is a problem worth seeing whole.
pub const OVERHEAD_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05,
];

/// Boundaries of the body-size histograms: 64 B to 64 MiB in steps of ×4.
pub const BODY_SIZE_BUCKETS: [f64; 11] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Boundaries of the websocket connection-duration histogram: 1 s to 1 day.
pub const WEBSOCKET_DURATION_BUCKETS: [f64; 9] =
    [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

/// Labels of the request-duration histogram, in order.
pub const REQUEST_LABELS: [&str; 4] = [
    "http_route",
    "http_request_method",
    "http_response_status_code",
    "error_type",
];

/// The status codes of the zero series created for each declared route (see
/// [`ProxyMetrics::init_route_series`]): `500`, a code the 5xx rules select
/// (`http_response_status_code=~"5.."`), so a 5xx ratio is 0 rather than absent before
/// the first error; and `200`, the code most answers have, so the ratio's denominator has
/// its series from the first scrape too. Without it the 500 series would have a sample
/// before the traffic and the 200 series none: on the first scrape after a route's first
/// requests `rate()` would see the errors and not yet the successes, a 100% error ratio
/// for one scrape interval, and a burn-rate alert (which has no `for`) could page on it.
/// Both are the very series real answers land on, so no made-up label value appears.
pub const ZERO_SERIES_STATUSES: [u16; 2] = [200, 500];

/// The method of the zero series of a route that declares no method (it serves any): GET,
/// the method most such routes serve. Other methods get their series on first use.
pub const ZERO_SERIES_DEFAULT_METHOD: MethodLabel = MethodLabel::GET;

/// All the proxy's metrics.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    /// `http_server_request_duration_seconds{http_route, http_request_method,
    /// http_response_status_code, error_type}`: one observation per proxied request.
    pub request_duration: HistogramVec,
    /// `routemeter_proxy_overhead_seconds`: time spent in the proxy itself.
    pub overhead: Histogram,
    /// `http_server_active_requests{http_request_method}`.
    pub active_requests: IntGaugeVec,
    /// `http_server_request_body_size_bytes{http_route, http_request_method}`.
    pub request_body_size: HistogramVec,
    /// `http_server_response_body_size_bytes{http_route, http_request_method}`.
    pub response_body_size: HistogramVec,
    /// `routemeter_upstream_connect_errors_total{endpoint, error_type}`.
    pub upstream_connect_errors: IntCounterVec,
    /// `routemeter_upstream_timeouts_total{endpoint, phase}`, phase `connect` or `read`.
    pub upstream_timeouts: IntCounterVec,
    /// `routemeter_upstream_endpoints{source, state}`: the endpoints in use, by where they
    /// came from (`endpointslices` or `dns`, only the one in use has series) and state
    /// (`healthy` or `ejected`).
    pub upstream_endpoints: IntGaugeVec,
    /// `routemeter_upstream_discovery_errors_total{source}`: failed EndpointSlice lists and
    /// watches (`endpointslices`), failed DNS lookups (`dns`).
    pub upstream_discovery_errors: IntCounterVec,
    /// `routemeter_client_connections_closed_total{reason}`: client connections the proxy
    /// closed on a timeout of its own: `header_timeout` (a request head not complete within
    /// `limits.headerTimeout` of its first byte) and `idle_timeout` (no request within
    /// `limits.idleTimeout`).
    pub client_connections_closed: IntCounterVec,
    /// `routemeter_config_reloads_total`: successful reloads.
    pub config_reloads: IntCounter,
    /// `routemeter_config_reload_errors_total`: rejected configs.
    pub config_reload_errors: IntCounter,
    /// `routemeter_config_last_reload_successful`: 1 when the file on disk is the one in use.
    pub config_last_reload_successful: IntGauge,
    /// `routemeter_config_last_reload_success_timestamp_seconds`.
    pub config_last_reload_success_timestamp: Gauge,
    /// `routemeter_inferred_routes`: distinct templates inferred for unmatched requests.
    pub inferred_routes: IntGauge,
    /// `routemeter_websocket_connections_active{http_route}`.
    pub websocket_active: IntGaugeVec,
    /// `routemeter_websocket_connections_total{http_route}`.
    pub websocket_total: IntCounterVec,
    /// `routemeter_websocket_connection_duration_seconds{http_route}`.
    pub websocket_duration: HistogramVec,
    /// The `routemeter_pagination_*` families of routes with pagination.
    pub pagination: PaginationFamilies,
    /// The windows of `/api/summary`, on the same duration boundaries (not Prometheus).
    pub summary: Arc<Recorder>,
    /// The families above that requests record on, through their routes' handles
    /// ([`super::handles`]), and the per-method in-flight gauges.
    pub families: RequestFamilies,
}

impl ProxyMetrics {
    /// Creates and registers every metric; `duration_buckets` are the request-duration
    /// boundaries (the config's buckets with its latency thresholds added).
    pub fn register(
        registry: &Registry,
        duration_buckets: Vec<f64>,
    ) -> Result<Self, prometheus::Error> {
        let route_method = ["http_route", "http_request_method"];
        let summary = Arc::new(Recorder::new(duration_buckets.clone()));
        let pagination = PaginationFamilies::register(registry, &duration_buckets)?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests.",
            )
            .buckets(duration_buckets),
            &REQUEST_LABELS,
        )?;
        let active_requests = IntGaugeVec::new(
            Opts::new(
                "http_server_active_requests",
                "Number of active HTTP server requests.",
            ),
            &["http_request_method"],
        )?;
        let request_body_size = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_body_size_bytes",
                "Size of HTTP server request bodies.",
            )
            .buckets(BODY_SIZE_BUCKETS.to_vec()),
            &route_method,
        )?;
        let response_body_size = HistogramVec::new(
            HistogramOpts::new(
                "http_server_response_body_size_bytes",
                "Size of HTTP server response bodies.",
            )
            .buckets(BODY_SIZE_BUCKETS.to_vec()),
            &route_method,
        )?;
        let websocket_active = IntGaugeVec::new(
            Opts::new(
                "routemeter_websocket_connections_active",
                "Open websocket connections.",
            ),
            &["http_route"],
        )?;
        let websocket_total = IntCounterVec::new(
            Opts::new(
                "routemeter_websocket_connections_total",
                "Websocket connections upgraded.",
            ),
            &["http_route"],
        )?;
        let websocket_duration = HistogramVec::new(
            HistogramOpts::new(
                "routemeter_websocket_connection_duration_seconds",
                "Lifetime of websocket connections.",
            )
            .buckets(WEBSOCKET_DURATION_BUCKETS.to_vec()),
            &["http_route"],
        )?;
        let families = RequestFamilies {
            request_duration: request_duration.clone(),
            request_body_size: request_body_size.clone(),
            response_body_size: response_body_size.clone(),
            active_requests: active_requests.clone(),
            websocket_active: websocket_active.clone(),
            websocket_total: websocket_total.clone(),
            websocket_duration: websocket_duration.clone(),
            summary: summary.clone(),
            active: Default::default(),
        };
        let m = ProxyMetrics {
            families,
            summary,
            pagination,
            request_duration,
            overhead: Histogram::with_opts(
                HistogramOpts::new(
                    "routemeter_proxy_overhead_seconds",
                    "Time from the first byte of a request read to the choice of its endpoint: pingora's parsing of the head, then routemeter's routing, checks and choice (for a head that arrives in pieces, also the wait for the rest). Excludes connecting to or checking out an upstream connection, handing on the response head, writing the response and body streaming: a lower bound of the proxy's added latency.",
                )
                .buckets(OVERHEAD_BUCKETS.to_vec()),
            )?,
            active_requests,
            request_body_size,
            response_body_size,
            upstream_connect_errors: IntCounterVec::new(
                Opts::new("routemeter_upstream_connect_errors_total", "Failed connection attempts to upstream endpoints."),
                &["endpoint", "error_type"],
            )?,
            upstream_timeouts: IntCounterVec::new(
                Opts::new("routemeter_upstream_timeouts_total", "Upstream timeouts, by endpoint and phase."),
                &["endpoint", "phase"],
            )?,
            upstream_endpoints: IntGaugeVec::new(
                Opts::new(
                    "routemeter_upstream_endpoints",
                    "Upstream endpoints in use, by source (endpointslices: the ready endpoints of the Service's EndpointSlices; dns: the configured endpoints, resolved) and state (healthy or ejected).",
                ),
                &["source", "state"],
            )?,
            upstream_discovery_errors: IntCounterVec::new(
                Opts::new(
                    "routemeter_upstream_discovery_errors_total",
                    "Failures to discover upstream endpoints, by source: EndpointSlice lists and watches that failed (endpointslices), DNS lookups that got no answer (dns).",
                ),
                &["source"],
            )?,
            client_connections_closed: IntCounterVec::new(
                Opts::new(
                    "routemeter_client_connections_closed_total",
                    "Client connections closed by the proxy on a timeout: header_timeout (a request head not complete in time), idle_timeout (no request in time).",
                ),
                &["reason"],
            )?,
            config_reloads: IntCounter::new("routemeter_config_reloads_total", "Successful config reloads.")?,
            config_reload_errors: IntCounter::new(
                "routemeter_config_reload_errors_total",
                "Config reloads rejected because the new config was invalid.",
            )?,
            config_last_reload_successful: IntGauge::new(
                "routemeter_config_last_reload_successful",
                "Whether the last config reload attempt succeeded.",
            )?,
            config_last_reload_success_timestamp: Gauge::new(
                "routemeter_config_last_reload_success_timestamp_seconds",
                "Time of the last successful config load.",
            )?,
            inferred_routes: IntGauge::new(
                "routemeter_inferred_routes",
                "Distinct route templates inferred for requests matching no declared route.",
            )?,
            websocket_active,
            websocket_total,
            websocket_duration,
        };
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.overhead.clone()))?;
        registry.register(Box::new(m.active_requests.clone()))?;
        registry.register(Box::new(m.request_body_size.clone()))?;
        registry.register(Box::new(m.response_body_size.clone()))?;
        registry.register(Box::new(m.upstream_connect_errors.clone()))?;
        registry.register(Box::new(m.upstream_timeouts.clone()))?;
        registry.register(Box::new(m.upstream_endpoints.clone()))?;
        registry.register(Box::new(m.upstream_discovery_errors.clone()))?;
        registry.register(Box::new(m.client_connections_closed.clone()))?;
        for reason in ["header_timeout", "idle_timeout"] {
            m.client_connections_closed.with_label_values(&[reason]);
        }
        registry.register(Box::new(m.config_reloads.clone()))?;
        registry.register(Box::new(m.config_reload_errors.clone()))?;
        registry.register(Box::new(m.config_last_reload_successful.clone()))?;
        registry.register(Box::new(m.config_last_reload_success_timestamp.clone()))?;
        registry.register(Box::new(m.inferred_routes.clone()))?;
        registry.register(Box::new(m.websocket_active.clone()))?;
        registry.register(Box::new(m.websocket_total.clone()))?;
        registry.register(Box::new(m.websocket_duration.clone()))?;
        Ok(m)
    }
}

impl ProxyMetrics {
    /// Creates, at 0, the request-duration series of every declared route × declared
    /// method (GET for a route without methods) with the statuses [`ZERO_SERIES_STATUSES`] and no
    /// error type. The rules then find their series from the first scrape: a 5xx ratio is
    /// 0, not absent, until the first error, and the burn-rate alerts are never blind to
    /// a route that has not failed yet. Called when a config is loaded or reloaded (not
    /// per request); a route removed by a reload keeps its series, as counters do.
    pub fn init_route_series(&self, snapshot: &Snapshot) {
        for (id, route) in snapshot.config.routes.iter().enumerate() {
            let series = snapshot.series(id);
            let zero = |method: MethodLabel| {
                // Resolving the handle creates the series: its buckets, count and sum at 0.
                for status in ZERO_SERIES_STATUSES {
                    series
                        .method(method)
                        .duration(&self.families, status, ErrorLabel::NONE);
                }
            };
            if route.methods.is_empty() {
                zero(ZERO_SERIES_DEFAULT_METHOD);
            }
            for method in &route.methods {
                // The label a request of this method gets (`_OTHER` for an unknown one).
                let m = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_or(MethodLabel::OTHER, |m| MethodLabel::of(&m));
                zero(m);
            }
        }
    }
}

/// The per-endpoint families, read from the endpoints of the snapshot in use at each
/// scrape ([`EndpointCollector`]).
#[derive(Debug, Clone)]
struct EndpointFamilies {
    /// `routemeter_upstream_endpoint_requests_total{endpoint}`.
    requests: IntCounterVec,
    /// `routemeter_upstream_endpoint_errors_total{endpoint}`.
    errors: IntCounterVec,
    /// `routemeter_upstream_endpoint_latency_ewma_seconds{endpoint}`.
    latency: GaugeVec,
}

impl EndpointFamilies {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(EndpointFamilies {
            requests: IntCounterVec::new(
                Opts::new(
                    "routemeter_upstream_endpoint_requests_total",
                    "Requests sent to each upstream endpoint in use, counted when they end, answered or failed; a request retried on another endpoint counts on both. An endpoint that leaves takes its series with it, and one that comes back, or any endpoint after a change of the upstream settings, starts again from 0.",
                ),
                &["endpoint"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "routemeter_upstream_endpoint_errors_total",
                    "Of routemeter_upstream_endpoint_requests_total, the requests that failed on the endpoint: a 5xx answer, or a failure to connect, a reset, a timeout or an invalid response (a client that went away is not the endpoint's error).",
                ),
                &["endpoint"],
            )?,
            latency: GaugeVec::new(
                Opts::new(
                    "routemeter_upstream_endpoint_latency_ewma_seconds",
                    "Peak-EWMA of the time from choosing the endpoint to its response head (to the failure, when none came), as the peakEwma policy weighs it now: raised at once by a slower answer, decaying by e every 10 s, held up by the recent answers. Absent until the endpoint's first answer.",
                ),
                &["endpoint"],
            )?,
        })
    }
}

/// The per-endpoint figures (requests, errors, latency estimate), read at each scrape from
/// the endpoints of the snapshot in use. Their counts live in the endpoints themselves,
/// where requests update them with atomics only; here they become series, so there is a
/// series for each endpoint in use and for no other: the label is bounded by the endpoint
/// set, and an endpoint that leaves takes its series with it.
pub struct EndpointCollector {
    state: SharedState,
    /// The families' descriptions, for [`Collector::desc`]; each scrape fills new ones.
    template: EndpointFamilies,
}

impl EndpointCollector {
    /// A collector over the endpoints of `state`'s current snapshot.
    pub fn new(state: SharedState) -> Result<Self, prometheus::Error> {
        Ok(EndpointCollector {
            state,
            template: EndpointFamilies::new()?,
        })
    }
}

impl Collector for EndpointCollector {
    fn desc(&self) -> Vec<&Desc> {
        let t = &self.template;
        [t.requests.desc(), t.errors.desc(), t.latency.desc()]
            .into_iter()
            .flatten()
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // The options were checked when the collector was made.
        let Ok(families) = EndpointFamilies::new() else {
            return Vec::new();
        };
        let now = Instant::now();
        for endpoint in self.state.load().balancer.endpoints().iter() {
            let label = [endpoint.label.as_str()];
            families
                .requests
                .with_label_values(&label)
                .inc_by(endpoint.requests());
            families
                .errors
                .with_label_values(&label)
                .inc_by(endpoint.errors());
            if let Some(latency) = endpoint.latency(now) {
                families.latency.with_label_values(&label).set(latency);
            }
        }
        [
            families.requests.collect(),
            families.errors.collect(),
            families.latency.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Registers the process collector (CPU, RSS, open fds) and `routemeter_build_info`.
pub fn register_process_metrics(registry: &Registry) -> Result<(), prometheus::Error> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let info = IntGaugeVec::new(
        Opts::new(
            "routemeter_build_info",
            "Build information; the value is always 1.",
        ),
        &["version"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(info))
}

/// Renders a registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> Vec<u8> {
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec cannot fail on I/O; a metric that fails to encode is skipped by
    // returning what was written so far rather than failing the whole scrape.
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_on_an_owned_registry_twice() {
        // Two registries, two sets of metrics: nothing global leaks between them.
        for _ in 0..2 {
            let registry = Registry::new();
            let m = ProxyMetrics::register(&registry, vec![0.1, 1.0]).expect("register");
            m.request_duration
                .with_label_values(&["/a", "GET", "200", ""])
                .observe(0.05);
            register_process_metrics(&registry).expect("process metrics");
            let text = String::from_utf8(encode(&registry)).expect("utf8");
            assert!(text.contains(r#"http_server_request_duration_seconds_bucket{error_type="",http_request_method="GET",http_response_status_code="200",http_route="/a",le="0.1"} 1"#), "{text}");
            assert!(text.contains("routemeter_build_info"));
        }
    }

    #[test]
    fn declared_routes_have_zero_series_from_the_start() {
        use crate::config::{ProxyConfig, Route};

        let route = |path: &str, methods: &[&str]| Route {
            path: path.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            name: None,
            latency_objective: None,
            pagination: None,
        };
        let config = ProxyConfig::new(
            vec!["127.0.0.1:1".into()],
            vec![
                route("/any", &[]),
                route("/items", &["get", "POST", "PURGE"]),
            ],
        );
        let registry = Registry::new();
        let m = ProxyMetrics::register(&registry, vec![0.5]).expect("register");
        let snapshot = Snapshot::build(config, None, &m.pagination).expect("valid");
        m.init_route_series(&snapshot);
        m.init_route_series(&snapshot);
        let text = String::from_utf8(encode(&registry)).expect("utf8");
        for (route, method) in [
            ("/any", "GET"),
            ("/items", "GET"),
            ("/items", "POST"),
            ("/items", "_OTHER"),
        ] {
            for status in ["200", "500"] {
                let series = format!(
                    r#"http_server_request_duration_seconds_count{{error_type="",http_request_method="{method}",http_response_status_code="{status}",http_route="{route}"}} 0"#
                );
                assert!(text.contains(&series), "{series} in {text}");
            }
        }
        assert_eq!(
            text.matches("http_server_request_duration_seconds_count{")
                .count(),
            8,
            "two series per route and method, however often: {text}"
        );
    }

    #[test]
    fn endpoint_series_follow_the_endpoints_in_use() {
        use super::super::state::Snapshot;
        use crate::config::ProxyConfig;
        use std::sync::Arc;

        let config = ProxyConfig::new(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()], vec![]);
        let families =
            super::super::pagination::PaginationFamilies::register(&Registry::new(), &[1.0])
                .expect("families");
        let snapshot = Snapshot::build(config, None, &families).expect("valid");
        let balancer = snapshot.balancer.clone();
        let state: SharedState = Arc::new(arc_swap::ArcSwap::from_pointee(snapshot));
        let registry = Registry::new();
        registry
            .register(Box::new(EndpointCollector::new(state).expect("collector")))
            .expect("register");
        let text = || String::from_utf8(encode(&registry)).expect("utf8");
        assert!(
            !text().contains("routemeter_upstream_endpoint_latency_ewma_seconds{"),
            "no latency before an answer: {}",
            text()
        );

        for status in [200, 502, 200] {
            let mut attempt = balancer
                .pick(None, std::time::Instant::now())
                .expect("endpoint");
            attempt.record_head(status, std::time::Instant::now());
        }
        let text = text();
        for line in [
            r#"routemeter_upstream_endpoint_requests_total{endpoint="127.0.0.1:1"} 2"#,
            r#"routemeter_upstream_endpoint_requests_total{endpoint="127.0.0.1:2"} 1"#,
            r#"routemeter_upstream_endpoint_errors_total{endpoint="127.0.0.1:1"} 0"#,
            r#"routemeter_upstream_endpoint_errors_total{endpoint="127.0.0.1:2"} 1"#,
            "# TYPE routemeter_upstream_endpoint_requests_total counter",
            "# TYPE routemeter_upstream_endpoint_latency_ewma_seconds gauge",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert_eq!(text.matches("_latency_ewma_seconds{endpoint=").count(), 2);

        // An endpoint that leaves takes its series with it.
        balancer.set_addresses(vec!["127.0.0.1:2".parse().expect("addr")]);
        let text = String::from_utf8(encode(&registry)).expect("utf8");
        assert!(!text.contains("127.0.0.1:1"), "{text}");
        assert!(text.contains(r#"requests_total{endpoint="127.0.0.1:2"} 1"#));
    }
}
