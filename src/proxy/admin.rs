//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/config`, `/api/summary`
//! (`?window=1m|5m|15m|1h`, default `1m`: the live summary of [`crate::summary`]) and `/`
//! (a page charting that summary, `page.html`), on a port of its own so scraping and
//! probing never compete with, or get routed like, user traffic.
//!
//! The page is one file built into the binary, its script and style inline; it reads
//! `api/summary` of its own origin every 2 s and nothing else, which [`PAGE_CSP`] enforces
//! in the browser.
//!
//! `/readyz` says whether this proxy can take traffic, not whether the application behind
//! it is healthy: it answers 200 once the config is loaded, its endpoints were looked up
//! once and the traffic listener accepts connections, even with no healthy upstream
//! endpoint. A proxy that left its Service whenever the application had no ready pod
//! would turn an outage into "connection refused" that no metric counts; staying in, it
//! answers every request 503 (`no_healthy_upstream`) at once, and counts it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::Registry;

use super::balancer::EndpointSource;
use super::metrics::{ProxyMetrics, encode};
use super::state::SharedState;
use crate::config::ProxyConfig;
use crate::summary::{API_PATH, Objectives, Window};

/// The live page served at `/`.
const PAGE: &str = include_str!("page.html");

/// The page's Content-Security-Policy: its inline script and style, reads from its own
/// origin, nothing else (no other script, style, font, frame or form target). Inline is
/// needed because the page is one file; it writes every figure as text, never as HTML,
/// so no route name or message from the summary can become markup.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// How long `/readyz` waits for the traffic listener to accept a connection.
const LISTENER_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves the admin endpoints.
pub struct AdminApp {
    state: SharedState,
    registry: Registry,
    metrics: Arc<ProxyMetrics>,
    /// Where `/readyz` connects to see the traffic listener accept.
    listener: Option<SocketAddr>,
}

impl AdminApp {
    /// An admin app over the proxy's state and metrics, for a traffic listener on `listen`
    /// (read at start: the listener never moves while the process runs).
    pub fn new(
        state: SharedState,
        registry: Registry,
        metrics: Arc<ProxyMetrics>,
        listen: &str,
    ) -> Self {
        AdminApp {
            state,
            registry,
            metrics,
            listener: listen.parse().ok().map(reachable),
        }
    }

    /// `/readyz`: the status and a line saying why.
    async fn readiness(&self) -> (StatusCode, String) {
        let snapshot = self.state.load();
        if !snapshot.balancer.looked_up() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: upstream endpoints not looked up yet\n".into(),
            );
        }
        let accepting = match self.listener {
            Some(addr) => matches!(
                tokio::time::timeout(LISTENER_CHECK_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await,
                Ok(Ok(_))
            ),
            None => false,
        };
        if !accepting {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: the traffic listener {} does not accept connections\n",
                    snapshot.config.listen
                ),
            );
        }
        let (healthy, ejected) = snapshot.balancer.health();
        (StatusCode::OK, readiness_line(healthy, ejected))
    }

    fn metrics_text(&self) -> Vec<u8> {
        let balancer = &self.state.load().balancer;
        let (healthy, ejected) = balancer.health();
        let source = balancer.source();
        let gauge = &self.metrics.upstream_endpoints;
        for (state, count) in [("healthy", healthy), ("ejected", ejected)] {
            for other in EndpointSource::ALL.into_iter().filter(|s| *s != source) {
                // Absent, not 0: a sum over sources is the endpoint count.
                let _ = gauge.remove_label_values(&[other.as_str(), state]);
            }
            gauge
                .with_label_values(&[source.as_str(), state])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        encode(&self.registry)
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let length = body.len();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = content_type.parse() {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, length.into());
    response
}

/// `/`: the page, under its policy; never cached, so an upgraded proxy serves its own.
fn page() -> Response<Vec<u8>> {
    let mut response = respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        PAGE.as_bytes().to_vec(),
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(PAGE_CSP),
    );
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    response
}

/// The latency objectives the config holds routes to: each route's own, else
/// `summary.latencyObjective`.
fn objectives(config: &ProxyConfig) -> Objectives {
    Objectives {
        default: config.summary.latency_objective.as_secs_f64(),
        routes: config
            .routes
            .iter()
            .filter_map(|r| Some((r.path.clone(), r.latency_objective?.as_secs_f64())))
            .collect(),
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        const TEXT: &str = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/" => page(),
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics_text(),
            ),
            "/healthz" => respond(StatusCode::OK, TEXT, b"ok\n".to_vec()),
            "/readyz" => {
                let (status, line) = self.readiness().await;
                respond(status, TEXT, line.into_bytes())
            }
            API_PATH => match window_param(session.req_header().uri.query()) {
                Ok(window) => {
                    let objectives = objectives(&self.state.load().config);
                    let summary = self.metrics.summary.summary(window, &objectives);
                    match serde_json::to_vec(&summary) {
                        Ok(json) => respond(StatusCode::OK, "application/json", json),
                        Err(e) => respond(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            TEXT,
                            e.to_string().into_bytes(),
                        ),
                    }
                }
                Err(message) => respond(StatusCode::BAD_REQUEST, TEXT, message.into_bytes()),
            },
            "/config" => match serde_json::to_vec_pretty(&self.state.load().config) {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    e.to_string().into_bytes(),
                ),
            },
            _ => respond(
                StatusCode::NOT_FOUND,
                TEXT,
                b"not found: try /, /metrics, /healthz, /readyz, /config or /api/summary\n"
                    .to_vec(),
            ),
        }
    }
}

/// The `window` of a query string: `1m` when absent, an error naming the choices when
/// it is none of them.
fn window_param(query: Option<&str>) -> Result<Window, String> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("window="));
    match value {
        None => Ok(Window::OneMinute),
        Some(text) => Window::parse(text)
            .ok_or_else(|| format!("window {text:?}: expected one of 1m, 5m, 15m, 1h\n")),
    }
}

/// The address to connect to for a listener on `addr`: loopback for a wildcard address.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

/// The body of a ready `/readyz`: ready whatever the endpoints, which it reports.
fn readiness_line(healthy: usize, ejected: usize) -> String {
    if healthy + ejected == 0 {
        "ready; no upstream endpoint: requests are answered 503 (no_healthy_upstream)\n".into()
    } else {
        format!("ready; upstream endpoints: {healthy} healthy, {ejected} ejected\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_checked_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(reachable(v4), "127.0.0.1:8080".parse().expect("addr"));
        let v6: SocketAddr = "[::]:8080".parse().expect("addr");
        assert_eq!(reachable(v6), "[::1]:8080".parse().expect("addr"));
        let own: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        assert_eq!(reachable(own), own);
    }

    #[test]
    fn summary_windows_come_from_the_query() {
        assert_eq!(window_param(None), Ok(Window::OneMinute));
        assert_eq!(window_param(Some("a=b")), Ok(Window::OneMinute));
        assert_eq!(
            window_param(Some("a=b&window=15m")),
            Ok(Window::FifteenMinutes)
        );
        assert_eq!(window_param(Some("window=1h")), Ok(Window::OneHour));
        let bad = window_param(Some("window=2m")).expect_err("no such window");
        assert!(
            bad.contains("\"2m\"") && bad.contains("1m, 5m, 15m, 1h"),
            "{bad}"
        );
    }

    #[test]
    fn the_page_is_one_small_file_that_reads_its_own_origin_only() {
        assert!(PAGE.len() < 32 * 1024, "{} bytes", PAGE.len());
        for external in [
            "http://",
            "https://",
            "//cdn",
            "<script src",
            "<link rel=\"stylesheet",
        ] {
            let found = PAGE.replace("http://www.w3.org/2000/svg", "");
            assert!(!found.contains(external), "the page refers to {external}");
        }
        assert!(PAGE.contains("fetch(\"api/summary?window="));
        let response = page();
        let csp = &response.headers()[header::CONTENT_SECURITY_POLICY];
        assert!(
            csp.to_str()
                .expect("ASCII")
                .starts_with("default-src 'none'")
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn ready_says_what_it_knows_of_the_endpoints() {
        assert!(readiness_line(0, 0).contains("503"));
        assert_eq!(
            readiness_line(1, 2),
            "ready; upstream endpoints: 1 healthy, 2 ejected\n"
        );
    }
}
