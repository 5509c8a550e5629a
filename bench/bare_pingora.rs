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
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session, http_proxy};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

/// routemeter's allocator (src/main.rs): the same engine, allocating the same way.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// routemeter's `server.readBufferBytes` default.
const READ_BUFFER_BYTES: usize = 4096;

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

/// As routemeter's `shard_address`: pingora keeps one listening socket per address
/// string, so worker `shard` spells the port with `shard` leading zeros to get its own.
fn shard_address(listen: SocketAddr, shard: usize) -> String {
    let port = format!("{}{}", "0".repeat(shard), listen.port());
    match listen {
        SocketAddr::V4(v4) => format!("{}:{port}", v4.ip()),
        SocketAddr::V6(v6) => format!("[{}]:{port}", v6.ip()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bare-pingora LISTEN UPSTREAM [WORKERS]";
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let parse = |s: &str| -> SocketAddr {
        s.parse().unwrap_or_else(|e| {
            eprintln!("{s}: {e}; {usage}");
            std::process::exit(2)
        })
    };
    let (listen, upstream) = (parse(listen), parse(upstream));
    let workers: usize = match args.get(2).map(|w| w.parse()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("WORKERS: a number above 0; {usage}");
            std::process::exit(2)
        }
    };

    let conf = ServerConf {
        threads: workers,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    for shard in 0..workers {
        let mut proxy = Service::new(
            format!("bare pingora {shard}"),
            http_proxy(&server.configuration, Bare { upstream }),
        );
        proxy.threads = Some(1);
        let mut options = TcpSocketOptions::default();
        options.so_reuseport = Some(workers > 1);
        proxy.add_listener(
            ListenerConfig::tcp(shard_address(listen, shard))
                .tcp_socket_options(options)
                .l4_buffer(L4BufferSettings::default().read(READ_BUFFER_BYTES)),
        );
        server.add_service(proxy);
    }
    server.run(RunArgs::default());
}
