//! The admin listener: `/metrics`, `/healthz`, `/readyz` and `/config`, on a port of its
//! own so scraping and probing never compete with, or get routed like, user traffic.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::Registry;

use super::metrics::{ProxyMetrics, encode};
use super::state::SharedState;

/// Serves the admin endpoints.
pub struct AdminApp {
    state: SharedState,
    registry: Registry,
    metrics: Arc<ProxyMetrics>,
}

impl AdminApp {
    /// An admin app over the proxy's state and metrics.
    pub fn new(state: SharedState, registry: Registry, metrics: Arc<ProxyMetrics>) -> Self {
        AdminApp {
            state,
            registry,
            metrics,
        }
    }

    fn metrics_text(&self) -> Vec<u8> {
        let (healthy, ejected) = self.state.load().balancer.health();
        let gauge = &self.metrics.upstream_endpoints;
        gauge
            .with_label_values(&["healthy"])
            .set(i64::try_from(healthy).unwrap_or(i64::MAX));
        gauge
            .with_label_values(&["ejected"])
            .set(i64::try_from(ejected).unwrap_or(i64::MAX));
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

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        const TEXT: &str = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics_text(),
            ),
            "/healthz" => respond(StatusCode::OK, TEXT, b"ok\n".to_vec()),
            "/readyz" => {
                if self.state.load().ready() {
                    respond(StatusCode::OK, TEXT, b"ready\n".to_vec())
                } else {
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        b"no healthy upstream endpoint\n".to_vec(),
                    )
                }
            }
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
                b"not found: try /metrics, /healthz, /readyz or /config\n".to_vec(),
            ),
        }
    }
}
