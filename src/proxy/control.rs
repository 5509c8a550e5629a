//! The proxy's control loop: reloads the config file when it changes and re-resolves
//! upstream hostnames, off the request path.
//!
//! The file is re-read every `server.reloadInterval` and compared with what was last read,
//! which follows both in-place edits and the symlink swap kubelet uses to update a mounted
//! ConfigMap. A new config is validated and compiled before it replaces the old one in a
//! single atomic swap; an invalid one is logged, counted, and the old one stays.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::metrics::ProxyMetrics;
use super::state::{SharedState, Snapshot, resolve};
use crate::config::ProxyConfig;

/// Reloads the config and re-resolves upstreams until shutdown.
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

    /// Re-resolves the current upstream endpoints.
    pub async fn refresh_endpoints(&self) {
        let snapshot = self.state.load_full();
        update_endpoints(&snapshot).await;
    }

    /// Reloads the config file if its content changed. Returns whether a new config is in use.
    pub async fn reload_if_changed(&self) -> bool {
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
        let snapshot =
            ProxyConfig::from_yaml(&text).and_then(|c| Snapshot::build(c, Some(&current)));
        match snapshot {
            Ok(next) => {
                warn_on_restart_only_changes(&current.config, &next.config);
                if !Arc::ptr_eq(&current.balancer, &next.balancer) {
                    update_endpoints(&next).await;
                }
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

/// Resolves the endpoints of `snapshot` into its balancer, and says when the proxy goes
/// from some endpoints to none (every request answered 503) and back.
async fn update_endpoints(snapshot: &Snapshot) {
    let balancer = &snapshot.balancer;
    if let Some(addrs) = resolve(&snapshot.config.upstream.endpoints).await {
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
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = reload.tick() => {
                    if self.reload_if_changed().await {
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
                        self.refresh_endpoints().await;
                    }
                }
                _ = resolve_tick.tick() => self.refresh_endpoints().await,
            }
        }
    }
}
