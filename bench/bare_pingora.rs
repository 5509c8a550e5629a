//! `bare-pingora`: the floor of routemeter's engine, for `make bench` (bench/run.sh).
//!
//! A minimal `ProxyHttp` that forwards every request to one upstream and records nothing:
//! the same pingora version (this package's Cargo.lock) and the same server settings as
//! `routemeter proxy` (src/proxy/mod.rs): one single-threaded pingora service per worker,
//! each with its own listening socket on the shared port (SO_REUSEPORT) and its own
//! upstream connection pool, no work stealing, a 4 KiB L4 read buffer per client
//! connection, and upstream peers with routemeter's default timeouts (connect 2 s,
//! read 60 s, idle 60 s). What routemeter costs above this is its own code: routing,
//! metering, balancing, forwarding headers, the connection wrapper.
//!
//! With `BARE_FORWARDING=1` in its environment it also sets the forwarding headers
//! routemeter sets by default (`X-Forwarded-For` with the client's address,
//! `X-Forwarded-Proto: http`, `X-Forwarded-Host` with the `Host`), the plain way with
//! pingora's `insert_header`: what routemeter costs above that is its routing, metering,
//! balancing and connection wrapper, the part of its cost that is metering's.
//!
//! Usage: `cargo run --release --example bare-pingora -- LISTEN UPSTREAM [WORKERS]`,
//! e.g. `127.0.0.1:8100 127.0.0.1:8080 2`. SIGINT stops it at once, SIGTERM after 1 s.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session, http_proxy};
use pingora::server::RunArgs;
use pingora::services::listening::Service;

#[path = "common.rs"]
mod common;

struct Bare {
    upstream: SocketAddr,
    /// Sets the three forwarding headers (`BARE_FORWARDING=1`).
    forwarding: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(Duration::from_secs(60));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> pingora::Result<()> {
        if !self.forwarding {
            return Ok(());
        }
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream_request.insert_header("X-Forwarded-For", client.ip().to_string())?;
        }
        upstream_request.insert_header("X-Forwarded-Proto", "http")?;
        if let Some(host) = upstream_request.headers.get(http::header::HOST).cloned() {
            upstream_request.insert_header("X-Forwarded-Host", host)?;
        }
        Ok(())
    }
}

fn main() {
    let args = common::Args::parse("bare-pingora");
    let forwarding = std::env::var_os("BARE_FORWARDING").is_some_and(|v| v == "1");
    let mut server = args.server();
    for shard in 0..args.workers {
        let bare = Bare {
            upstream: args.upstream,
            forwarding,
        };
        let mut proxy = Service::new(
            format!("bare pingora {shard}"),
            http_proxy(&server.configuration, bare),
        );
        proxy.threads = Some(1);
        proxy.add_listener(args.listener(shard));
        server.add_service(proxy);
    }
    server.run(RunArgs::default());
}
