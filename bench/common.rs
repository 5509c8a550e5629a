//! What the engine examples (`bare-pingora`, `lean-pingora`) share, so that they differ
//! only in their data path: routemeter's allocator, its read buffer, its server settings
//! (src/proxy/mod.rs), its per-worker listening sockets, and the command line
//! `LISTEN UPSTREAM [WORKERS]`. Each example includes it with `#[path]`.

use std::net::SocketAddr;

use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

/// routemeter's allocator (src/main.rs): the same engine, allocating the same way.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// routemeter's `server.readBufferBytes` default.
const READ_BUFFER_BYTES: usize = 4096;

/// The command line: where to listen, where to forward, how many workers.
pub struct Args {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub workers: usize,
}

impl Args {
    /// The process's arguments, or exit 2 with `name`'s usage.
    pub fn parse(name: &str) -> Args {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let usage = format!("usage: {name} LISTEN UPSTREAM [WORKERS]");
        let fail = |what: String| -> ! {
            eprintln!("{what}; {usage}");
            std::process::exit(2)
        };
        let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
            fail("LISTEN and UPSTREAM are needed".into())
        };
        let address =
            |s: &str| -> SocketAddr { s.parse().unwrap_or_else(|e| fail(format!("{s}: {e}"))) };
        let workers = match args.get(2).map(|w| w.parse()) {
            None => 1,
            Some(Ok(n)) if n > 0 => n,
            Some(_) => fail("WORKERS: a number above 0".into()),
        };
        Args {
            listen: address(listen),
            upstream: address(upstream),
            workers,
        }
    }

    /// A bootstrapped server with routemeter's settings: one thread per worker, no work
    /// stealing, 1 s to drain.
    pub fn server(&self) -> Server {
        let conf = ServerConf {
            threads: self.workers,
            grace_period_seconds: Some(1),
            graceful_shutdown_timeout_seconds: Some(1),
            work_stealing: false,
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        server
    }

    /// Worker `shard`'s listener: its own socket on the shared port (SO_REUSEPORT when
    /// there are several), routemeter's read buffer.
    pub fn listener(&self, shard: usize) -> ListenerConfig {
        let mut options = TcpSocketOptions::default();
        options.so_reuseport = Some(self.workers > 1);
        ListenerConfig::tcp(shard_address(self.listen, shard))
            .tcp_socket_options(options)
            .l4_buffer(L4BufferSettings::default().read(READ_BUFFER_BYTES))
    }
}

/// As routemeter's `shard_address` (the examples cannot reach the crate's private items):
/// pingora keeps one listening socket per address string, so worker `shard` spells the
/// port with `shard` leading zeros to get its own.
fn shard_address(listen: SocketAddr, shard: usize) -> String {
    let port = format!("{}{}", "0".repeat(shard), listen.port());
    match listen {
        SocketAddr::V4(v4) => format!("{}:{port}", v4.ip()),
        SocketAddr::V6(v6) => format!("[{}]:{port}", v6.ip()),
    }
}
