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
//! Usage: `cargo run --release --example bare-pingora -- LISTEN UPSTREAM [WORKERS]`,
//! e.g. `127.0.0.1:8100 127.0.0.1:8080 2`. SIGINT stops it at once, SIGTERM after 1 s.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session, http_proxy};
use pingora::server::RunArgs;
use pingora::services::listening::Service;

#[path = "common.rs"]
mod common;

struct Bare {
    upstream: SocketAddr,
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
}

fn main() {
    let args = common::Args::parse("bare-pingora");
    let mut server = args.server();
    for shard in 0..args.workers {
        let bare = Bare {
            upstream: args.upstream,
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
