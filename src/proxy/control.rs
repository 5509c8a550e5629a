//! The proxy's control loop: reloads the config file when it changes and keeps the
//! upstream endpoints current, off the request path.
//!
//! The file is re-read every `server.reloadInterval` and compared with what was last read,
//! which follows both in-place edits and the symlink swap kubelet uses to update a mounted
//! ConfigMap. A new config is validated and compiled before it replaces the old one in a
//! single atomic swap; an invalid one is logged, counted, and the old one stays.
//!
//! The endpoints come from the Service's EndpointSlices when `upstream.endpointSlices` is
//! set and the watch ([`SliceWatch`]) has a listed set; otherwise from `endpoints`,
//! re-resolved every `upstream.resolveInterval`. The loop owns the watch: a reload that
//! keeps the setting keeps it, one that changes it starts another, one that removes it
//! stops it. A set the watch publishes reaches the balancer as soon as the loop sees it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::balancer::EndpointSource;
use super::discovery::{SliceWatch, describe};
use super::metrics::ProxyMetrics;
use super::state::{SharedState, Snapshot, resolve};
use crate::config::{ProxyConfig, UpstreamConfig};

/// Reloads the config and keeps the upstream endpoints current until shutdown.
pub struct ControlLoop {
    state: SharedState,
    metrics: Arc<ProxyMetrics>,
    config_path: Option<PathBuf>,
    last_read: Mutex<Option<Vec<u8>>>,
}

impl ControlLoop {
    /// A loop watching `config_path` (if any) for the proxy's shared state; `last_read` is
    /// the content the current config was built from.
    pub fn new(
        state: SharedState,
        metrics: Arc<ProxyMetrics>,
        config_path: Option<PathBuf>,
        last_read: Option<Vec<u8>>,
    ) -> Self {
        ControlLoop {
            state,
            metrics,
            config_path,
            last_read: Mutex::new(last_read),
        }
    }

    /// Tries a TCP connection to every ejected endpoint, unless the last round's tries
    /// are still going: one that connects ends its ejection ([`super::balancer`]).
    fn probe_ejected(&self, probes: &mut tokio::task::JoinSet<()>) {
        while probes.try_join_next().is_some() {}
        if !probes.is_empty() {
            return;
        }
        let snapshot = self.state.load_full();
        let timeout = snapshot.config.timeouts.connect;
        for endpoint in snapshot.balancer.ejected() {
            let balancer = snapshot.balancer.clone();
            probes.spawn(async move {
                let connect = tokio::net::TcpStream::connect(endpoint.addr);
                if let Ok(Ok(_)) = tokio::time::timeout(timeout, connect).await {
                    balancer.report_connected(&endpoint);
                    tracing::info!(endpoint = %endpoint.label, "ejected endpoint accepts connections again");
                }
            });
        }
    }

    /// Brings the current upstream endpoints up to date.
    async fn refresh_endpoints(&self, discovery: &mut Discovery) {
        let snapshot = self.state.load_full();
        self.update_endpoints(&snapshot, discovery).await;
    }

    /// Sets the endpoints of `snapshot`: the listed EndpointSlices when the watch has
    /// them, DNS otherwise. Logs each switch from one to the other.
    async fn update_endpoints(&self, snapshot: &Snapshot, discovery: &mut Discovery) {
        let balancer = &snapshot.balancer;
        match (
            discovery.latest(),
            &snapshot.config.upstream.endpoint_slices,
        ) {
            (Some(addrs), Some(slices)) => {
                let now = addrs.len();
                let before = std::mem::replace(&mut discovery.ready, now);
                let target = describe(slices);
                if !discovery.from_slices {
                    tracing::info!(endpoint_slices = %target, ready = now, "upstream endpoints from the EndpointSlices of {target}: {now} ready");
                    discovery.from_slices = true;
                } else if now == 0 && before > 0 {
                    tracing::warn!(endpoint_slices = %target, "no ready endpoint in the EndpointSlices of {target}: every request is answered 503 (no_healthy_upstream) until one is");
                } else if now > 0 && before == 0 {
                    tracing::info!(endpoint_slices = %target, ready = now, "upstream endpoints are back");
                }
                balancer.set_addresses(addrs);
                balancer.set_source(EndpointSource::EndpointSlices);
                balancer.mark_looked_up();
            }
            _ => {
                if discovery.from_slices {
                    let endpoints = snapshot.config.upstream.endpoints.join(", ");
                    tracing::warn!(%endpoints, "the EndpointSlices are not known any more: upstream endpoints from DNS ({endpoints}) until they are listed again");
                    discovery.from_slices = false;
                }
                balancer.set_source(EndpointSource::Dns);
                resolve_endpoints(snapshot, &self.metrics).await;
            }
        }
    }

    /// Reloads the config file if its content changed. Returns whether a new config is in use.
    async fn reload_if_changed(&self, discovery: &mut Discovery) -> bool {
        let Some(path) = &self.config_path else {
            return false;
        };
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                // A ConfigMap update swaps a symlink; a read can race it. Try next tick.
                tracing::debug!(path = %path.display(), %error, "cannot read config file");
                return false;
            }
        };
        {
            let mut last = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_deref() == Some(bytes.as_slice()) {
                return false;
            }
            *last = Some(bytes.clone());
        }
        let current = self.state.load_full();
        let text = String::from_utf8_lossy(&bytes);
        let snapshot = ProxyConfig::from_yaml(&text)
            .and_then(|c| Snapshot::build(c, Some(&current), &self.metrics.pagination));
        match snapshot {
            Ok(next) => {
                warn_on_restart_only_changes(&current.config, &next.config);
                discovery.follow(&next.config.upstream, &self.metrics).await;
                if !Arc::ptr_eq(&current.balancer, &next.balancer) {
                    self.update_endpoints(&next, discovery).await;
                }
                self.metrics.init_route_series(&next);
                self.state.store(Arc::new(next));
                self.metrics.config_reloads.inc();
                self.metrics.config_last_reload_successful.set(1);
                self.metrics
                    .config_last_reload_success_timestamp
                    .set(unix_now());
                tracing::info!(path = %path.display(), "config reloaded");
                true
            }
            Err(error) => {
                self.metrics.config_reload_errors.inc();
                self.metrics.config_last_reload_successful.set(0);
                tracing::error!(path = %path.display(), "config rejected, keeping the previous one: {error}");
                false
            }
        }
    }
}

/// The EndpointSlice watch of the control loop, when the config asks for one.
#[derive(Default)]
struct Discovery {
    /// The API client, built the first time a config sets `endpointSlices`, and only then;
    /// `Some(None)` when it could not be built (then the proxy stays on DNS).
    client: Option<Option<kube::Client>>,
    watch: Option<SliceWatch>,
    /// Whether the endpoints in use came from the slices, to log each switch once.
    from_slices: bool,
    /// How many ready endpoints the slices had when last applied, to log the changes
    /// from some to none and back.
    ready: usize,
}

impl Discovery {
    /// Starts, restarts or stops the watch to match `upstream.endpointSlices`; a watch of
    /// the same Service, namespace and port is kept.
    async fn follow(&mut self, upstream: &UpstreamConfig, metrics: &ProxyMetrics) {
        let wanted = upstream.endpoint_slices.as_ref();
        if self.watch.as_ref().map(SliceWatch::settings) == wanted {
            return;
        }
        if let Some(old) = self.watch.take() {
            let old = describe(old.settings());
            match wanted {
                Some(new) => {
                    tracing::info!(endpoint_slices = %describe(new), "endpointSlices changed from {old}: upstream endpoints from DNS until the new ones are listed")
                }
                None => tracing::info!(
                    "endpointSlices removed: upstream endpoints from DNS ({})",
                    upstream.endpoints.join(", ")
                ),
            }
            self.from_slices = false;
        }
        let Some(settings) = wanted else { return };
        let errors = metrics
            .upstream_discovery_errors
            .with_label_values(&[EndpointSource::EndpointSlices.as_str()]);
        if self.client.is_none() {
            self.client = Some(match kube::Client::try_default().await {
                Ok(client) => Some(client),
                Err(error) => {
                    errors.inc();
                    tracing::error!(%error, "no Kubernetes API client ({error}): endpointSlices ignored, upstream endpoints from DNS only");
                    None
                }
            });
        }
        let Some(Some(client)) = &self.client else {
            return;
        };
        tracing::info!(endpoint_slices = %describe(settings), "watching the EndpointSlices of {}; upstream endpoints from DNS until they are listed", describe(settings));
        self.watch = Some(SliceWatch::start(client.clone(), settings.clone(), errors));
    }

    /// The ready set the watch last published; `None` with no watch or no listed set.
    fn latest(&self) -> Option<Vec<std::net::SocketAddr>> {
        self.watch.as_ref().and_then(SliceWatch::latest)
    }

    /// Waits for the watch to publish a new set; never returns without a watch.
    async fn changed(&mut self) {
        match &mut self.watch {
            Some(watch) => watch.changed().await,
            None => std::future::pending().await,
        }
    }
}

/// Resolves the endpoints of `snapshot` into its balancer, and says when the proxy goes
/// from some endpoints to none (every request answered 503) and back.
async fn resolve_endpoints(snapshot: &Snapshot, metrics: &ProxyMetrics) {
    let balancer = &snapshot.balancer;
    let resolved = resolve(&snapshot.config.upstream.endpoints).await;
    if resolved.failed > 0 {
        metrics
            .upstream_discovery_errors
            .with_label_values(&[EndpointSource::Dns.as_str()])
            .inc_by(resolved.failed);
    }
    if let Some(addrs) = resolved.addrs {
        let (before, now) = (balancer.endpoints().len(), addrs.len());
        balancer.set_addresses(addrs);
        let endpoints = snapshot.config.upstream.endpoints.join(", ");
        if now == 0 && (before > 0 || !balancer.looked_up()) {
            tracing::warn!(%endpoints, "no upstream endpoint resolved from {endpoints}: every request is answered 503 (no_healthy_upstream) until one is");
        } else if now > 0 && before == 0 && balancer.looked_up() {
            tracing::info!(%endpoints, addresses = now, "upstream endpoints are back");
        }
        // Only an answer counts: a proxy whose first lookup failed (the resolver timed
        // out or refused) knows nothing of its endpoints yet and stays unready, so a
        // rollout never replaces a proxy that routes with one that can only answer 503.
        balancer.mark_looked_up();
    }
}

fn warn_on_restart_only_changes(old: &ProxyConfig, new: &ProxyConfig) {
    for (field, changed) in [
        ("listen", old.listen != new.listen),
        ("admin", old.admin != new.admin),
        ("metrics", old.metrics != new.metrics),
        ("server", old.server != new.server),
    ] {
        if changed {
            tracing::warn!(
                field,
                "this setting changed but takes effect only on restart"
            );
        }
    }
}

/// An interval whose first tick is immediate and that never bursts to catch up.
fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Seconds since the Unix epoch, for timestamp gauges.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[async_trait]
impl BackgroundService for ControlLoop {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let snapshot = self.state.load_full();
        let mut reload = ticker(snapshot.config.server.reload_interval);
        let mut resolve_tick = ticker(snapshot.config.upstream.resolve_interval);
        let mut probe = ticker(super::balancer::PROBE_INTERVAL);
        let mut probes = tokio::task::JoinSet::new();
        let mut discovery = Discovery::default();
        discovery
            .follow(&snapshot.config.upstream, &self.metrics)
            .await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = discovery.changed() => self.refresh_endpoints(&mut discovery).await,
                _ = reload.tick() => {
                    if self.reload_if_changed(&mut discovery).await {
                        // A reload may change how often hostnames are re-resolved.
                        let wanted = self.state.load().config.upstream.resolve_interval;
                        if wanted != resolve_tick.period() {
                            tracing::info!(interval = ?wanted, "upstream re-resolution interval changed");
                            resolve_tick = ticker(wanted);
                        }
                    } else if self.state.load().balancer.endpoints().is_empty() {
                        // With no endpoint every request is answered 503: look again at
                        // each tick instead of waiting for the next re-resolution (a
                        // headless Service has no DNS records until its first pod is
                        // ready, and an application coming back should be found at once).
                        // From EndpointSlices, the set in use is already the latest.
                        self.refresh_endpoints(&mut discovery).await;
                    }
                }
                _ = resolve_tick.tick() => self.refresh_endpoints(&mut discovery).await,
                _ = probe.tick() => self.probe_ejected(&mut probes),
            }
        }
    }
}
