//! `lean-pingora`: bare-pingora's job (bench/bare_pingora.rs) without pingora-proxy, for the
//! measurement of issue 13 (bench/README.md, "A leaner data path on pingora-core").
//!
//! The same command line and server settings as `bare-pingora`: one single-threaded pingora
//! service per worker on the shared port (SO_REUSEPORT), its own upstream connection pool, no
//! work stealing, a 4 KiB L4 read buffer, upstream timeouts connect 2 s, read 60 s, idle 60 s.
//! What differs is the request loop: a `ServerApp` on pingora-core's parts that serves every
//! request of a downstream connection in one future, strictly in sequence:
//!
//! 1. `v1::server::HttpSession::read_request` (pingora-core's parser, framing, keep-alive);
//! 2. `connectors::http::v1::Connector::get_http_session` (the pool, or a new connection);
//! 3. the request header, cloned once, hop-by-hop fields stripped, written upstream; the body,
//!    if any (Content-Length or chunked), streamed through chunk by chunk, then finished;
//! 4. the response header read, cloned once, written downstream; the body streamed back
//!    through borrowed slices (`read_body_ref`, no copy into a new `Bytes`);
//! 5. the upstream connection released to the pool, the downstream one reused for the next
//!    request (or closed: `Connection: close` from either side, HTTP/1.0, an error).
//!
//! What pingora-proxy does per request that this does not: `HttpServerApp`'s `ServerSession`
//! enum and a `Box<HttpSession>` per request, `HttpPersistentSettings` carried between them;
//! a `Session` with its downstream modules, a `CTX`, the `ProxyHttp` phase callbacks (each an
//! `async_trait` boxed future); a `Box<HttpPeer>` per request (here one peer, built once);
//! two `mpsc` channels of `HttpTask`s and a `try_join!` of a downstream and an upstream half
//! for every request, even one without a body, with the response header cloned into a task
//! and every body chunk copied into a `Bytes`; the retry buffer for the request body; the
//! cache, compression and subrequest hooks it checks. The pool itself (and its idle-watch
//! task per released connection) is pingora-core's, and the same here.
//!
//! Left out (an experiment, not a replacement): HTTP/2 and TLS, cache, the request body
//! and the response read at once (the body is sent whole before the response is read, so an
//! upstream that answers early and stops reading a large body stalls it), trailers,
//! retrying a reused upstream connection that failed once a request body was sent (a
//! bodyless request is retried once, as pingora-proxy does). `Expect: 100-continue` is
//! answered here and not forwarded. Upgrades (101) are passed through, both ways at once.
//!
//! Usage: `cargo run --release --example lean-pingora -- LISTEN UPSTREAM [WORKERS]`,
//! e.g. `127.0.0.1:8100 127.0.0.1:8080 2`. SIGINT stops it at once, SIGTERM after 1 s.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Version, header};
use pingora::apps::ServerApp;
use pingora::connectors::ConnectorOptions;
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::Stream;
use pingora::protocols::http::v1::client::HttpSession as Upstream;
use pingora::protocols::http::v1::server::HttpSession as Downstream;
use pingora::server::{RunArgs, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::{Error, ErrorType, Result};

#[path = "common.rs"]
mod common;

/// routemeter's default `timeouts.idle`, for the upstream pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

struct Lean {
    /// Built once: pingora-proxy asks `upstream_peer` for a new `Box<HttpPeer>` per request.
    peer: HttpPeer,
    connector: Connector,
}

/// How a request ended, for the downstream connection.
enum Outcome {
    /// The response went out whole: the connection may serve the next request.
    Done,
    /// The upstream failed before anything was written downstream: answer 502.
    BadGateway(Box<Error>),
    /// Failed halfway (or upgraded and over): close the connection.
    Close,
}

#[async_trait]
impl ServerApp for Lean {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // One future for the whole connection: no `ServerSession`, no `ReusedHttpStream`
        // round trip through `HttpServerApp` between requests.
        let mut shutdown = shutdown.clone();
        let mut down = Downstream::new(stream);
        let mut keepalive = Some(60); // as HttpServerApp's first session
        loop {
            if *shutdown.borrow() {
                keepalive = None;
            }
            down.set_server_keepalive(keepalive);
            // As pingora-proxy: a connection idle in read_request stops at shutdown.
            let read = tokio::select! {
                biased;
                read = down.read_request() => read,
                _ = shutdown.changed() => return None,
            };
            match read {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => {
                    if e.etype == ErrorType::InvalidHTTPHeader {
                        respond_error(&mut down, 400).await;
                    }
                    return None;
                }
            }
            if down.req_header().method == Method::CONNECT {
                respond_error(&mut down, 405).await;
                return None;
            }
            match self.proxy(&mut down).await {
                Outcome::Done => {}
                Outcome::BadGateway(e) => {
                    eprintln!("lean-pingora: upstream: {e}");
                    respond_error(&mut down, 502).await;
                    return None;
                }
                Outcome::Close => return None,
            }
            keepalive = down.get_keepalive_timeout();
            // Drains an unread request body, or closes (keep-alive off, pipelined bytes).
            let reusable = down.reuse().await.ok().flatten()?;
            let (stream, prefix) = reusable.into_parts();
            down = Downstream::new(stream);
            if let Some(prefix) = prefix {
                down.set_pipelined_prefix(prefix);
            }
        }
    }
}

impl Lean {
    /// One request: steps 2 to 5 of the header comment.
    async fn proxy(&self, down: &mut Downstream) -> Outcome {
        if expects_continue(down.req_header()) {
            // Answered here: the body follows the 100, and the upstream never sees the Expect.
            // The 100 must not switch keep-alive off as an early final response would.
            down.set_close_on_response_before_downstream_finish(false);
            let sent = down.write_continue_response().await;
            down.set_close_on_response_before_downstream_finish(true);
            if sent.is_err() {
                return Outcome::Close;
            }
        }

        // Connect (or take a pooled connection) and send the request. A pooled connection the
        // upstream closed in the meantime fails here: a bodyless request is retried once on a
        // new connection (pingora-proxy retries too, with its retry buffer for bodies).
        let mut up = match self.connect_and_send(down).await {
            Ok(up) => up,
            Err(e) => return Outcome::BadGateway(e),
        };
        // The request body, chunk by chunk, in the framing the upstream request header says.
        while !down.is_body_done() {
            match down.read_body_bytes().await {
                Ok(Some(chunk)) => {
                    if let Err(e) = up.write_body(&chunk).await {
                        return Outcome::BadGateway(e);
                    }
                }
                Ok(None) => break,
                Err(_) => return Outcome::Close, // the client went away mid-body
            }
        }
        // The last chunk of a chunked body; a flush for Content-Length.
        if !down.is_body_empty()
            && let Err(e) = up.finish_body().await
        {
            return Outcome::BadGateway(e);
        }

        // The response header; 1xx (but 101) are passed on and the next one read.
        loop {
            if let Err(e) = up.read_response().await {
                return Outcome::BadGateway(e);
            }
            let Some(resp) = up.resp_header() else {
                return Outcome::BadGateway(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "no response header",
                ));
            };
            let informational = resp.status.is_informational() && resp.status != 101;
            // One clone (the session keeps its own): pingora-proxy clones it into an HttpTask
            // and writes a copy of that downstream.
            if down
                .write_response_header(Box::new(resp.clone()))
                .await
                .is_err()
            {
                return Outcome::Close;
            }
            if !informational {
                break;
            }
        }

        if up.was_upgraded() {
            up.maybe_upgrade_body_writer();
            return tunnel(down, &mut up).await;
        }

        // The response body, from the upstream session's buffer straight to the client's.
        loop {
            match up.read_body_ref().await {
                Ok(Some(chunk)) => {
                    if down.write_body(chunk).await.is_err() {
                        return Outcome::Close;
                    }
                }
                Ok(None) => break,
                Err(_) => return Outcome::Close, // the header is out: no 502 any more
            }
        }
        if down.finish_body().await.is_err() {
            return Outcome::Close;
        }
        // Back to the pool (respect_keepalive and reuse inside), or closed.
        self.connector
            .release_http_session(up, &self.peer, Some(IDLE_TIMEOUT))
            .await;
        Outcome::Done
    }

    async fn connect_and_send(&self, down: &mut Downstream) -> Result<Upstream> {
        let (upgrade, has_body) = (down.is_upgrade_req(), !down.is_body_empty());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut up, reused) = self.connector.get_http_session(&self.peer).await?;
            up.read_timeout = self.peer.options.read_timeout;
            up.write_timeout = self.peer.options.write_timeout;
            // One clone of the request header per attempt, as pingora-proxy's proxy_1to1:
            // write_request_header takes a Box and keeps it (for keep-alive, HEAD, upgrades).
            let mut req = Box::new(down.req_header().clone());
            upstream_request(&mut req, upgrade, has_body);
            match up.write_request_header(req).await {
                Ok(_) => return Ok(up),
                Err(e) if reused && !has_body && attempt == 1 => drop(e),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Hop-by-hop fields off, as pingora-proxy's default `HttpUpstreamRequestPolicy` (without
/// its parse of the fields `Connection` nominates); a websocket upgrade kept; a body without
/// `Content-Length` sent chunked. Other upgrades are not forwarded (as the default policy).
fn upstream_request(req: &mut RequestHeader, upgrade: bool, has_body: bool) {
    req.set_version(Version::HTTP_11);
    let websocket = upgrade
        && req
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        req.remove_header(&name);
    }
    req.remove_header("keep-alive");
    // Answered by the proxy itself (Lean::proxy), not forwarded.
    req.remove_header(&header::EXPECT);
    req.remove_header("proxy-connection");
    // Best effort: a header pingora-http accepted on the way in is accepted again.
    if websocket {
        let _ = req.insert_header(header::CONNECTION, "Upgrade");
        let _ = req.insert_header(header::UPGRADE, "websocket");
    }
    if has_body && req.headers.get(header::CONTENT_LENGTH).is_none() {
        let _ = req.insert_header(header::TRANSFER_ENCODING, "chunked");
    }
}

/// Whether the client waits for a `100 Continue` before its body.
fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// After a 101: bytes both ways until both sides are done (the sessions' readers and writers
/// are close-delimited now). pingora-proxy runs the same through its two task channels.
async fn tunnel(down: &mut Downstream, up: &mut Upstream) -> Outcome {
    let (mut down_done, mut up_done) = (false, false);
    while !(down_done && up_done) {
        tokio::select! {
            read = down.read_body_bytes(), if !down_done => match read {
                Ok(Some(chunk)) => {
                    if up.write_body(&chunk).await.is_err() {
                        break;
                    }
                }
                Ok(None) | Err(_) => {
                    down_done = true;
                    let _ = up.finish_body().await;
                }
            },
            read = up.read_body_bytes(), if !up_done => match read {
                Ok(Some(chunk)) => {
                    if down.write_body(&chunk).await.is_err() {
                        break;
                    }
                }
                Ok(None) | Err(_) => {
                    up_done = true;
                    let _ = down.finish_body().await;
                }
            },
        }
    }
    Outcome::Close
}

/// A bodyless error response, and the connection closed after it.
async fn respond_error(down: &mut Downstream, code: u16) {
    let Ok(mut resp) = ResponseHeader::build(code, Some(2)) else {
        return;
    };
    let _ = resp.insert_header(header::CONTENT_LENGTH, "0");
    down.set_server_keepalive(None);
    if down.write_response_header(Box::new(resp)).await.is_ok() {
        let _ = down.finish_body().await;
    }
    down.shutdown().await;
}

fn main() {
    let args = common::Args::parse("lean-pingora");
    let mut server = args.server();
    for shard in 0..args.workers {
        let mut peer = HttpPeer::new(args.upstream, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(Duration::from_secs(60));
        peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        // As pingora-proxy's HttpProxy::new: the pool sized from the server's configuration.
        let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
            &server.configuration,
        )));
        let mut service = Service::new(format!("lean pingora {shard}"), Lean { peer, connector });
        service.threads = Some(1);
        service.add_listener(args.listener(shard));
        server.add_service(service);
    }
    server.run(RunArgs::default());
}
