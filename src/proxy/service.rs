//! The pingora `ProxyHttp` implementation: route each request once, pick an endpoint, set
//! the forwarding headers ([`super::forward`]), and record the request exactly once in
//! `logging()`, which pingora calls for every request, failed ones included.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::balancer::InFlight;
use super::handles::{self, Finished, RouteSeries};
use super::metrics::ProxyMetrics;
use super::recorder::Pending;
use super::state::{SharedState, Snapshot};
use super::{connection, forward, framing};
use crate::route::{Inferred, MethodLabel, RouteId, learns_from};

/// Why the proxy, not the upstream, decided a request's outcome. The `error_type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The endpoint refused the connection.
    ConnectRefused,
    /// The connection was not established within `timeouts.connect`.
    ConnectTimeout,
    /// Any other failure to connect.
    ConnectError,
    /// The upstream did not answer within `timeouts.read`.
    UpstreamTimeout,
    /// The upstream closed or reset the connection mid-request.
    UpstreamReset,
    /// The upstream sent something that is not valid HTTP.
    UpstreamProtocol,
    /// There is no upstream endpoint (none resolved, or none configured).
    NoHealthyUpstream,
    /// The client went away before the response was complete.
    ClientAborted,
    /// The client sent an invalid request.
    BadRequest,
    /// The request head exceeded `limits.maxRequestHeaderBytes`.
    HeaderTooLarge,
    /// A failure inside the proxy.
    Internal,
}

impl Failure {
    /// The `error_type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::ConnectRefused => "connect_refused",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ConnectError => "connect_error",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::UpstreamReset => "upstream_reset",
            Failure::UpstreamProtocol => "upstream_protocol_error",
            Failure::NoHealthyUpstream => "no_healthy_upstream",
            Failure::ClientAborted => "client_aborted",
            Failure::BadRequest => "bad_request",
            Failure::HeaderTooLarge => "request_header_too_large",
            Failure::Internal => "internal",
        }
    }

    /// The status answered (or, for a client that left, recorded: 499 as nginx does).
    pub fn status(self) -> u16 {
        match self {
            Failure::ConnectRefused
            | Failure::ConnectError
            | Failure::UpstreamReset
            | Failure::UpstreamProtocol => 502,
            Failure::ConnectTimeout | Failure::UpstreamTimeout => 504,
            Failure::NoHealthyUpstream => 503,
            Failure::ClientAborted => 499,
            Failure::BadRequest => 400,
            Failure::HeaderTooLarge => 431,
            Failure::Internal => 500,
        }
    }

    /// Its `error_type` label, whose series have a table of their own in each (route,
    /// method)'s handles.
    pub fn label(self) -> handles::ErrorLabel {
        handles::ErrorLabel::failure(self as u8 + 1, self.as_str())
    }

    /// Whether the failure is the endpoint's: an error in its per-endpoint figures.
    pub fn on_endpoint(self) -> bool {
        matches!(
            self,
            Failure::ConnectRefused
                | Failure::ConnectTimeout
                | Failure::ConnectError
                | Failure::UpstreamTimeout
                | Failure::UpstreamReset
                | Failure::UpstreamProtocol
        )
    }

    fn message(self) -> &'static str {
        match self {
            Failure::ConnectRefused => "the upstream refused the connection",
            Failure::ConnectTimeout => "timed out connecting to the upstream",
            Failure::ConnectError => "could not connect to the upstream",
            Failure::UpstreamTimeout => "timed out waiting for the upstream",
            Failure::UpstreamReset => "the upstream closed the connection",
            Failure::UpstreamProtocol => "the upstream sent an invalid response",
            Failure::NoHealthyUpstream => "no upstream endpoint available",
            Failure::ClientAborted => "client closed the request",
            Failure::BadRequest => "bad request",
            Failure::HeaderTooLarge => "request header fields too large",
            Failure::Internal => "internal proxy error",
        }
    }

    /// Classifies a pingora error.
    pub fn classify(e: &Error) -> Self {
        use ErrorType::*;
        match (e.esource(), e.etype()) {
            (_, ConnectRefused) => Failure::ConnectRefused,
            (_, ConnectTimedout) => Failure::ConnectTimeout,
            (_, ConnectNoRoute | ConnectError | BindError | SocketError | ConnectProxyFailure) => {
                Failure::ConnectError
            }
            (_, HTTPStatus(503)) => Failure::NoHealthyUpstream,
            (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => Failure::UpstreamTimeout,
            (ErrorSource::Upstream, InvalidHTTPHeader | H1Error | H2Error | InvalidH2) => {
                Failure::UpstreamProtocol
            }
            (ErrorSource::Upstream, _) => Failure::UpstreamReset,
            (
                ErrorSource::Downstream,
                ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout,
            ) => Failure::ClientAborted,
            (ErrorSource::Downstream, _) => Failure::BadRequest,
            _ => Failure::Internal,
        }
    }
}

/// Per-request state, created when the request head has been read.
pub struct RequestCtx {
    start: Instant,
    snapshot: Arc<Snapshot>,
    /// The route's series handles, once decided: at once for a declared route or a known
    /// template.
    route: Option<Arc<RouteSeries>>,
    /// A template inferred for the path but not admitted yet: admitted once the answer's
    /// status shows the path is a route (not 404 nor 400), see [`MeteringProxy::settle_route`].
    new_template: Option<String>,
    /// The declared route matched, if any: its pagination, if it has one, is recorded.
    route_id: Option<RouteId>,
    method: MethodLabel,
    /// Whether it is counted in `http_server_active_requests`.
    active: bool,
    /// The attempt on the endpoint chosen, counted on the endpoint when dropped.
    endpoint: Option<InFlight>,
    failed_endpoint: Option<SocketAddr>,
    retried: bool,
    /// From the request's first byte to the first endpoint chosen.
    overhead: Duration,
    failure: Option<Failure>,
    websocket: bool,
    /// In flight on the route's `/api/summary` windows, recorded there in `logging()`.
    summary: Option<Pending>,
    /// The one `Content-Length` the request goes upstream with, where it came repeated.
    collapsed_length: Option<u64>,
}

/// The metering reverse proxy.
pub struct MeteringProxy {
    state: SharedState,
    metrics: Arc<ProxyMetrics>,
    /// When it was made: a request context's start until `early_request_filter` sets it
    /// (a clock reading fewer per request than reading it in `new_ctx`).
    started: Instant,
}

impl MeteringProxy {
    /// A proxy serving the current snapshot of `state`.
    pub fn new(state: SharedState, metrics: Arc<ProxyMetrics>) -> Self {
        MeteringProxy {
            state,
            metrics,
            started: Instant::now(),
        }
    }

    /// The route of a request as it arrives: its series handles if already decided, else
    /// the new template inferred for its path; and the declared route it matched.
    fn resolve_route(
        ctx: &Snapshot,
        method: &http::Method,
        path: &str,
    ) -> (Inferred<RouteSeries>, Option<RouteId>) {
        match ctx.routes.find(method, path) {
            Some(id) => (Inferred::Known(ctx.series(id).clone()), Some(id)),
            None if ctx.config.auto_template.enabled => (ctx.inferred.lookup(path), None),
            None => (Inferred::Known(ctx.unmatched.clone()), None),
        }
    }

    /// The route of a request answered `status`, decided once: a new template is
    /// admitted, its handles made, only if the status shows the path is a route
    /// ([`learns_from`]); a 404 or 400 for a path of no known template counts as `_other`
    /// and admits nothing.
    fn settle_route(&self, ctx: &mut RequestCtx, status: u16) -> Arc<RouteSeries> {
        if let Some(route) = &ctx.route {
            return route.clone();
        }
        let inferred = &ctx.snapshot.inferred;
        let route = match ctx.new_template.take() {
            Some(template) if learns_from(status) => {
                let route =
                    inferred.admit_with(template, |label| Arc::new(RouteSeries::new(label, false)));
                self.metrics
                    .inferred_routes
                    .set(i64::try_from(inferred.len()).unwrap_or(i64::MAX));
                route
            }
            Some(_) => inferred.other().clone(),
            None => ctx.snapshot.unmatched.clone(),
        };
        ctx.route = Some(route.clone());
        route
    }
}

/// Size of a request head that came without its raw bytes (not HTTP/1): its request line
/// and header lines counted. On HTTP/1 the size is the raw head's length.
fn counted_head_bytes(req: &RequestHeader) -> usize {
    let headers: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len());
    req.method.as_str().len() + target + 12 + headers
}

#[async_trait]
impl ProxyHttp for MeteringProxy {
    /// Boxed: pingora moves the context by value into and through its request future,
    /// a copy of every field each time; a box is one pointer (bench/README.md, "Where
    /// routemeter's instructions go").
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx {
            // Set by `early_request_filter`, which pingora calls first on every request.
            start: self.started,
            snapshot: self.state.load_full(),
            route: None,
            new_template: None,
            route_id: None,
            method: MethodLabel::OTHER,
            active: false,
            endpoint: None,
            failed_endpoint: None,
            retried: false,
            overhead: Duration::ZERO,
            failure: None,
            websocket: false,
            summary: None,
            collapsed_length: None,
        })
    }

    /// HTTP/1.1 pipelining (RFC 9112 §9.3.2): requests a client sends before reading the
    /// answers to the earlier ones are served one after the other on that connection, each
    /// answered in order and each counted once. Without this pingora answers the first,
    /// closes, and drops the rest unanswered and uncounted. The setting carries over to
    /// the connection's next requests.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        session.downstream_session.set_pipelining_enabled(true);
        // A request is timed from its first byte, as nginx's `$request_time` and Envoy's
        // `%DURATION%` are; one that came with an earlier one's bytes (pipelined), from
        // now, when pingora has its head.
        ctx.start = connection::mark_head(session).unwrap_or_else(Instant::now);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let req = session.req_header();
        ctx.method = MethodLabel::of(&req.method);
        let (route, id) = Self::resolve_route(&ctx.snapshot, &req.method, req.uri.path());
        let families = &self.metrics.families;
        match route {
            Inferred::Known(route) => {
                ctx.summary = Some(route.method(ctx.method).start(families));
                ctx.route = Some(route);
            }
            // Its label waits for the status; its summary starts in `logging()`.
            Inferred::New(template) => ctx.new_template = Some(template),
        }
        ctx.route_id = id;
        families.active(ctx.method).inc();
        ctx.active = true;

        // The head as received: its size, and its framing (below).
        let raw = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        let head_bytes = raw
            .as_deref()
            .map_or_else(|| counted_head_bytes(session.req_header()), <[u8]>::len);
        if head_bytes > ctx.snapshot.config.limits.max_request_header_bytes {
            let body = Bytes::from_static(b"routemeter: request header fields too large\n");
            return refuse(session, ctx, Failure::HeaderTooLarge, 431, body).await;
        }
        // An HTTP/1.1 request without Host (RFC 9112 §3.2), and framing that another
        // parser on the way could read differently (§11.2): refused with 400, which also
        // closes the connection, before anything goes upstream; see [`framing::check`].
        match framing::check(session.req_header(), raw.as_deref().unwrap_or_default()) {
            Err(ambiguous) => {
                let body = Bytes::from(format!("routemeter: {ambiguous}\n"));
                return refuse(session, ctx, Failure::BadRequest, 400, body).await;
            }
            Ok(accepted) => {
                ctx.collapsed_length = accepted.collapsed_length;
                if accepted.close {
                    session.set_keepalive(None);
                }
            }
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let now = Instant::now();
        if ctx.endpoint.is_none() && !ctx.retried {
            ctx.overhead = now.saturating_duration_since(ctx.start);
        }
        let Some(endpoint) = ctx.snapshot.balancer.pick(ctx.failed_endpoint, now) else {
            ctx.failure = Some(Failure::NoHealthyUpstream);
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no healthy upstream endpoint",
            ));
        };
        let timeouts = &ctx.snapshot.config.timeouts;
        let mut addr = endpoint.endpoint().addr;
        // A request accepted on an additional listener goes to the port it came in on.
        if ctx.snapshot.listen_port.is_some()
            && let Some(local) = session.server_addr().and_then(|a| a.as_inet())
            && Some(local.port()) != ctx.snapshot.listen_port
        {
            addr.set_port(local.port());
        }
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.read_timeout = Some(timeouts.read);
        peer.options.idle_timeout = Some(timeouts.idle);
        ctx.endpoint = Some(endpoint);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(length) = ctx.collapsed_length {
            framing::collapse_length(upstream_request, length)?;
        }
        let client = session.client_addr().and_then(|a| a.as_inet());
        forward::apply(
            upstream_request,
            &ctx.snapshot.config.forwarding,
            client.map(SocketAddr::ip),
            session.req_header().version,
        )
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(endpoint) = &ctx.endpoint {
            ctx.snapshot.balancer.report_connected(endpoint.endpoint());
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let failure = Failure::classify(&e);
        let mut retry = false;
        if let Some(mut in_flight) = ctx.endpoint.take() {
            in_flight.record_failure();
            let endpoint = in_flight.endpoint();
            self.metrics
                .upstream_connect_errors
                .with_label_values(&[endpoint.label.as_str(), failure.as_str()])
                .inc();
            if failure == Failure::ConnectTimeout {
                self.metrics
                    .upstream_timeouts
                    .with_label_values(&[endpoint.label.as_str(), "connect"])
                    .inc();
            }
            let backoff = ctx.snapshot.balancer.report_connect_failure(endpoint);
            tracing::warn!(endpoint = %endpoint.label, error = failure.as_str(), ?backoff, "upstream endpoint ejected");
            ctx.failed_endpoint = Some(endpoint.addr);
            // Nothing reached the upstream: an idempotent request may go to another
            // endpoint, once.
            retry = !ctx.retried
                && session.req_header().method.is_idempotent()
                && ctx.snapshot.balancer.has_other_available(endpoint.addr);
        }
        ctx.retried |= retry;
        ctx.failure = (!retry).then_some(failure);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        if let Some(attempt) = &mut ctx.endpoint
            && Failure::classify(&e).on_endpoint()
        {
            attempt.record_failure();
        }
        if matches!(e.etype(), ErrorType::ReadTimedout)
            && e.esource() == &ErrorSource::Upstream
            && let Some(endpoint) = &ctx.endpoint
        {
            self.metrics
                .upstream_timeouts
                .with_label_values(&[endpoint.endpoint().label.as_str(), "read"])
                .inc();
        }
        // pingora's own policy: retry only idempotent requests whose body was kept, and
        // only errors that a stale pooled connection explains.
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let now = Instant::now();
        if let Some(attempt) = &mut ctx.endpoint {
            attempt.record_head(upstream_response.status.as_u16(), now);
        }
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS && !ctx.websocket {
            ctx.websocket = true;
            let route = self.settle_route(ctx, 101);
            route.websocket_opened(&self.metrics.families);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Draining: pingora closes each keep-alive connection after its response. Saying
        // so in the response keeps a client from sending its next request on a connection
        // about to close (which it would see as a reset), and it reconnects elsewhere.
        if session.is_process_shutting_down() && !ctx.websocket {
            upstream_response.insert_header(http::header::CONNECTION, "close")?;
            session.set_keepalive(None);
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let failure = *ctx.failure.get_or_insert_with(|| Failure::classify(e));
        let can_answer = failure != Failure::ClientAborted && session.response_written().is_none();
        if can_answer {
            let body = Bytes::from(format!(
                "routemeter: {} ({})\n",
                failure.message(),
                failure.as_str()
            ));
            if let Err(error) = session
                .respond_error_with_body(failure.status(), body)
                .await
            {
                tracing::debug!(%error, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: if can_answer { failure.status() } else { 0 },
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let now = Instant::now();
        connection::mark_recorded(session, now);
        let elapsed = now.saturating_duration_since(ctx.start);
        let families = &self.metrics.families;
        if std::mem::take(&mut ctx.active) {
            families.active(ctx.method).dec();
        }
        if ctx.failure.is_none() {
            ctx.failure = e.map(Failure::classify);
        }
        // The attempt ends here, and is counted on its endpoint as it is dropped.
        if let Some(mut attempt) = ctx.endpoint.take()
            && ctx.failure.is_some_and(Failure::on_endpoint)
        {
            attempt.record_failure();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.failure.map(Failure::status))
            .unwrap_or(0);
        let route = self.settle_route(ctx, status);

        if ctx.websocket {
            route.websocket_closed(families, elapsed);
            return;
        }

        self.metrics.overhead.observe(ctx.overhead.as_secs_f64());
        let downstream = session.as_downstream();
        // The query is read once the request is done, off the path to the upstream.
        let pagination = ctx.route_id.and_then(|id| ctx.snapshot.pagination(id));
        let reading = pagination.map(|p| {
            let reading = p.read(session.req_header().uri.query());
            p.record(ctx.method, reading, elapsed.as_secs_f64());
            reading
        });
        let series = route.method(ctx.method);
        let summary = ctx.summary.take().unwrap_or_else(|| series.start(families));
        let finished = Finished {
            status,
            error: error_label(ctx.failure),
            elapsed,
            at: now,
            request_bytes: downstream.body_bytes_read(),
            response_bytes: downstream.body_bytes_sent(),
            pagination: reading,
        };
        finished.record(series, families, summary);
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, _error: &Error) -> bool {
        // Metrics carry these; the log would only repeat them once per request.
        matches!(
            ctx.failure,
            Some(Failure::ClientAborted | Failure::NoHealthyUpstream)
        )
    }
}

/// Answers a request `status` with `body` instead of forwarding it, recorded as
/// `failure`; pingora closes the connection after an error answer. The result is
/// `request_filter`'s: the request is done.
async fn refuse(
    session: &mut Session,
    ctx: &mut RequestCtx,
    failure: Failure,
    status: u16,
    body: Bytes,
) -> Result<bool> {
    ctx.failure = Some(failure);
    session.respond_error_with_body(status, body).await?;
    Ok(true)
}

/// The `error_type` label of a request that failed so, or of one that did not.
fn error_label(failure: Option<Failure>) -> handles::ErrorLabel {
    failure.map_or(handles::ErrorLabel::NONE, Failure::label)
}

/// Records a request that pingora answered `status` itself, `elapsed` after its first
/// bytes, before any hook saw it ([`connection`]): as a `bad_request` under the label of
/// requests of no route, its method unknown.
pub(super) fn record_refused(
    metrics: &ProxyMetrics,
    snapshot: &Snapshot,
    status: u16,
    elapsed: Duration,
) {
    let route = if snapshot.config.auto_template.enabled {
        snapshot.inferred.other()
    } else {
        &snapshot.unmatched
    };
    let series = route.method(MethodLabel::OTHER);
    let summary = series.start(&metrics.families);
    let finished = Finished {
        status,
        error: Failure::BadRequest.label(),
        elapsed,
        at: Instant::now(),
        request_bytes: 0,
        response_bytes: 0,
        pagination: None,
    };
    finished.record(series, &metrics.families, summary);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_connect_and_upstream_errors() {
        let mut e = Error::new(ErrorType::ConnectRefused);
        assert_eq!(Failure::classify(&e), Failure::ConnectRefused);
        e = Error::new(ErrorType::ConnectTimedout);
        assert_eq!(Failure::classify(&e).status(), 504);
        assert_eq!(
            Failure::classify(&Error::new_up(ErrorType::ReadTimedout)),
            Failure::UpstreamTimeout
        );
        assert_eq!(
            Failure::classify(&Error::new_down(ErrorType::ReadTimedout)),
            Failure::ClientAborted
        );
        assert_eq!(
            Failure::classify(&Error::new_up(ErrorType::ConnectionClosed)).status(),
            502
        );
        assert_eq!(Failure::ClientAborted.status(), 499);
    }

    #[test]
    fn every_failure_has_its_own_table_of_series() {
        use Failure::*;
        let all = [
            ConnectRefused,
            ConnectTimeout,
            ConnectError,
            UpstreamTimeout,
            UpstreamReset,
            UpstreamProtocol,
            NoHealthyUpstream,
            ClientAborted,
            BadRequest,
            HeaderTooLarge,
            Internal,
        ];
        // A new failure is a compile error here until it is listed above.
        let listed = |f: Failure| match f {
            ConnectRefused | ConnectTimeout | ConnectError | UpstreamTimeout | UpstreamReset
            | UpstreamProtocol | NoHealthyUpstream | ClientAborted | BadRequest
            | HeaderTooLarge | Internal => all.contains(&f),
        };
        let mut slots: Vec<usize> = all.iter().map(|f| f.label().slot()).collect();
        slots.push(error_label(None).slot());
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots, (0..handles::ERROR_SLOTS).collect::<Vec<_>>());
        for f in all {
            assert!(listed(f));
            assert_eq!(f.label().as_str(), f.as_str());
        }
        assert_eq!(error_label(None), handles::ErrorLabel::NONE);
    }
}
