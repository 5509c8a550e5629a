//! `routemeter proxy`: a pingora reverse proxy that records per-route Prometheus metrics.
//!
//! - [`service`]: the request path (routing, endpoint choice, metrics in `logging()`);
//! - [`forward`]: the forwarding headers (`X-Forwarded-*`, `Forwarded`, `Via`);
//! - [`framing`]: request framing refused or rewritten against request smuggling;
//! - [`connection`]: the client connection: its timeouts, and counting the requests
//!   pingora answers before any hook sees them;
//! - [`balancer`]: endpoint choice, passive ejection, per-endpoint figures;
//! - [`ewma`]: the endpoints' latency estimate (peak-EWMA);
//! - [`metrics`]: the metric families and their buckets;
//! - [`handles`]: each route's series, resolved once, and the record of a request on them;
//! - [`pagination`]: the pagination series of routes with pagination;
//! - [`recorder`]: the sliding windows behind `/api/summary`;
//! - [`admin`]: the admin listener, and the live page it serves at `/` (`page.html`);
//! - [`control`]: config reload, and keeping the endpoints current;
//! - [`discovery`]: the endpoints from the Service's EndpointSlices;
//! - [`state`]: the compiled config that requests use, swapped atomically.

pub mod admin;
pub mod balancer;
pub mod connection;
pub mod control;
pub mod discovery;
pub mod ewma;
pub mod forward;
pub mod framing;
pub mod handles;
pub mod metrics;
pub mod pagination;
pub mod recorder;
pub mod service;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::GenBackgroundService;
use pingora::services::listening::Service;
use prometheus::Registry;
use thiserror::Error;

use crate::config::{ConfigError, ProxyConfig, Route};
use admin::AdminApp;
use control::ControlLoop;
use metrics::ProxyMetrics;
use service::MeteringProxy;
use state::Snapshot;

/// After the grace period, how long pingora gives its runtimes to stop before it exits
/// anyway. A pod's `terminationGracePeriodSeconds` must cover its `preStop` sleep, the
/// grace period and this.
pub const RUNTIME_SHUTDOWN_TIMEOUT_SECONDS: u64 = 1;

/// pingora's grace period for a configured one: whole seconds, rounded up, so `500ms` is
/// not zero. After SIGTERM pingora stops accepting and then waits this long, always, for
/// the requests in flight, before it stops its runtimes.
pub fn grace_period_seconds(grace_period: std::time::Duration) -> u64 {
    grace_period
        .as_secs()
        .saturating_add(u64::from(grace_period.subsec_nanos() > 0))
}

/// Why the proxy could not start.
#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    #[error("--route {0:?}: expected '[METHOD[,METHOD...]] /path/template'")]
    RouteFlag(String),
    #[error("give either --config or --upstream")]
    NoUpstream,
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Arguments of `routemeter proxy`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Config file (YAML), the schema the operator writes; reloaded when it changes.
    #[arg(long, short = 'c', env = "ROUTEMETER_CONFIG", conflicts_with_all = ["upstream", "route"])]
    pub config: Option<PathBuf>,
    /// Address to accept traffic on (quick form, without --config).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// Address of the admin listener: /metrics, /healthz, /readyz, /config, /api/summary
    /// (quick form).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// Upstream endpoint host:port; repeat for several (quick form).
    #[arg(long)]
    pub upstream: Vec<String>,
    /// Route: optional methods then a path template, e.g. 'GET /users/{id}' or '/static/*'.
    #[arg(long)]
    pub route: Vec<String>,
}

impl Args {
    /// The config these arguments describe: the file, or one built from the flags.
    pub fn to_config(&self) -> Result<ProxyConfig, ProxyError> {
        self.load().map(|(config, _)| config)
    }

    /// The config, and the file's bytes when it came from a file.
    fn load(&self) -> Result<(ProxyConfig, Option<Vec<u8>>), ProxyError> {
        if let Some(path) = &self.config {
            let (config, bytes) = ProxyConfig::load(path)?;
            return Ok((config, Some(bytes)));
        }
        if self.upstream.is_empty() {
            return Err(ProxyError::NoUpstream);
        }
        let routes = self
            .route
            .iter()
            .map(|r| parse_route_flag(r))
            .collect::<Result<_, _>>()?;
        let mut config = ProxyConfig::new(self.upstream.clone(), routes);
        config.listen = self.listen.clone();
        config.admin = self.admin.clone();
        config.validate()?;
        Ok((config, None))
    }

    /// Runs the proxy until SIGTERM (drain) or SIGINT.
    pub fn run(self) -> Result<(), ProxyError> {
        let (config, config_bytes) = self.load()?;
        let registry = Registry::new();
        let metrics = Arc::new(ProxyMetrics::register(
            &registry,
            config.metrics.effective_buckets(),
        )?);
        metrics::register_process_metrics(&registry)?;
        metrics.config_last_reload_successful.set(1);
        metrics
            .config_last_reload_success_timestamp
            .set(control::unix_now());

        let server_settings = config.server.clone();
        let (listen, admin_addr) = (config.listen.clone(), config.admin.clone());
        // pingora retries a busy address for 30 s, then panics in the service's thread and
        // leaves the process running without that listener, /readyz still at 200. Fail now
        // instead, so the container restarts with a clear error.
        let additional = config.additional_listeners.clone();
        for addr in [&listen, &admin_addr].into_iter().chain(&additional) {
            std::net::TcpListener::bind(addr.as_str()).map_err(|source| ProxyError::Listen {
                addr: addr.clone(),
                source,
            })?;
        }
        let state = Arc::new(ArcSwap::from_pointee(Snapshot::build(
            config,
            None,
            &metrics.pagination,
        )?));
        metrics.init_route_series(&state.load());
        registry.register(Box::new(metrics::EndpointCollector::new(state.clone())?))?;

        let workers = match server_settings.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let conf = ServerConf {
            threads: workers,
            // In-flight requests get the grace period after SIGTERM; then the runtimes stop.
            grace_period_seconds: Some(grace_period_seconds(server_settings.grace_period)),
            graceful_shutdown_timeout_seconds: Some(RUNTIME_SHUTDOWN_TIMEOUT_SECONDS),
            work_stealing: server_settings.work_stealing,
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();

        // Without work stealing, every worker is a pingora service of its own: one thread,
        // its own listening socket on the shared port (SO_REUSEPORT, the kernel spreads
        // connections) and its own upstream connection pool. A request then never leaves
        // its thread, as in an nginx worker. One multi-threaded service would hand pooled
        // upstream connections, and the tasks watching them, from thread to thread, and
        // the wake-ups that costs were measured at more than the rest of the request.
        let (services, threads) = if server_settings.work_stealing {
            (1, None) // one service on `workers` threads
        } else {
            (workers, Some(1))
        };
        for shard in 0..services {
            let mut proxy = Service::new(
                format!("routemeter proxy {shard}"),
                connection::Counted::new(
                    pingora::proxy::http_proxy(
                        &server.configuration,
                        MeteringProxy::new(state.clone(), metrics.clone()),
                    ),
                    state.clone(),
                    metrics.clone(),
                ),
            );
            proxy.threads = threads;
            let mut options = TcpSocketOptions::default();
            options.so_reuseport = Some(services > 1);
            // pingora's default L4 read buffer is 64 KiB per connection, most of what an idle
            // keep-alive connection costs; the request head and bodies have buffers of their own.
            let buffers = L4BufferSettings::default().read(server_settings.read_buffer_bytes);
            for addr in std::iter::once(&listen).chain(&additional) {
                proxy.add_listener(
                    ListenerConfig::tcp(shard_address(addr, shard))
                        .tcp_socket_options(options.clone())
                        .l4_buffer(buffers),
                );
            }
            server.add_service(proxy);
        }

        let mut admin = Service::new(
            "routemeter admin".to_string(),
            AdminApp::new(state.clone(), registry, metrics.clone(), &listen),
        );
        admin.threads = Some(1);
        admin.add_tcp(&admin_addr);

        let control = GenBackgroundService::new(
            "routemeter control".to_string(),
            Arc::new(ControlLoop::new(
                state,
                metrics,
                self.config.clone(),
                config_bytes,
            )),
        );

        tracing::info!(%listen, ?additional, admin = %admin_addr, workers, work_stealing = server_settings.work_stealing, "routemeter proxy starting");
        server.add_service(admin);
        server.add_service(control);
        server.run(RunArgs::default());
        tracing::info!("routemeter proxy stopped");
        Ok(())
    }
}

/// The listen address of worker `shard`, spelled differently for each worker: pingora keeps
/// one listening socket per address *string* (its table of sockets handed over on upgrade),
/// so two workers given the same string would share one socket and both close it. A port
/// with leading zeros is the same address to the kernel (`127.0.0.1:08080` is port 8080),
/// and gives each worker a socket of its own on the shared port.
fn shard_address(listen: &str, shard: usize) -> String {
    if shard == 0 {
        return listen.to_string();
    }
    let Some(addr) = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .ok()
        .and_then(|mut addrs| addrs.next())
    else {
        return listen.to_string();
    };
    let port = format!("{}{}", "0".repeat(shard), addr.port());
    match addr {
        std::net::SocketAddr::V4(v4) => format!("{}:{port}", v4.ip()),
        std::net::SocketAddr::V6(v6) => format!("[{}]:{port}", v6.ip()),
    }
}

/// Parses `--route 'GET,POST /path'` or `--route /path`.
pub fn parse_route_flag(flag: &str) -> Result<Route, ProxyError> {
    let flag = flag.trim();
    let (methods, path) = match flag.split_once(char::is_whitespace) {
        Some((methods, path)) => (
            methods.split(',').map(str::to_string).collect(),
            path.trim(),
        ),
        None => (Vec::new(), flag),
    };
    if !path.starts_with('/') {
        return Err(ProxyError::RouteFlag(flag.to_string()));
    }
    Ok(Route {
        path: path.to_string(),
        methods,
        name: None,
        latency_objective: None,
        pagination: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_flags() {
        let r = parse_route_flag("GET,POST /users/{id}").expect("valid");
        assert_eq!(
            (r.methods, r.path.as_str()),
            (vec!["GET".to_string(), "POST".to_string()], "/users/{id}")
        );
        assert!(
            parse_route_flag("/static/*")
                .expect("valid")
                .methods
                .is_empty()
        );
        assert!(parse_route_flag("GET users").is_err());
    }

    #[test]
    fn every_worker_gets_its_own_spelling_of_the_same_address() {
        let spellings: Vec<String> = (0..3)
            .map(|shard| shard_address("127.0.0.1:8080", shard))
            .collect();
        assert_eq!(
            spellings,
            ["127.0.0.1:8080", "127.0.0.1:08080", "127.0.0.1:008080"]
        );
        for s in &spellings {
            let addr: std::net::SocketAddr = s.parse().expect("a valid address");
            assert_eq!(addr, "127.0.0.1:8080".parse().expect("valid"));
        }
        assert_eq!(shard_address("[::]:80", 1), "[::]:080");
    }

    #[test]
    fn grace_periods_round_up_to_whole_seconds() {
        use std::time::Duration;
        assert_eq!(grace_period_seconds(Duration::from_millis(500)), 1);
        assert_eq!(grace_period_seconds(Duration::from_secs(15)), 15);
        assert_eq!(grace_period_seconds(Duration::from_millis(15_001)), 16);
    }

    #[test]
    fn quick_form_builds_a_valid_config() {
        let args = Args {
            config: None,
            listen: "127.0.0.1:8000".into(),
            admin: "127.0.0.1:9901".into(),
            upstream: vec!["127.0.0.1:8080".into()],
            route: vec!["GET /users/{id}".into()],
        };
        let c = args.to_config().expect("valid");
        assert_eq!(c.routes.len(), 1);
        let bad = Args {
            route: vec!["GET /a/*/b".into()],
            ..args
        };
        assert!(
            bad.to_config()
                .expect_err("invalid")
                .to_string()
                .contains("routes[0].path")
        );
    }
}
