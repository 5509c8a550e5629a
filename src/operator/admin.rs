//! The operator's admin listener: `/metrics`, `/healthz`, and `/readyz` from this
//! replica's [`Phase`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use prometheus::Registry;

/// Where this replica stands, for `/readyz`.
///
/// A replica is ready once it can do its job: the leader (or the only replica) once its
/// caches have synced (the MonitoredServices', and every one a reconcile reads from but
/// the Prometheus Operator's kinds, whose CRDs may be missing), so that it reconciles
/// from memory; a
/// replica waiting for the leader Lease as soon as it watches the Lease, since a standby
/// is what it should be. A standby reported unready would never let a rolling update of
/// the chart's Deployment go on (the new pod waits for the old one's Lease, which the old
/// pod only releases when it stops), and its pod would drop out of the metrics Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Connecting, building the Lease manager.
    Starting = 0,
    /// Watching the leader Lease held by another replica.
    Standby = 1,
    /// Leading (or alone), the caches not all synced yet (the MonitoredServices', and
    /// those of [`super::caches::Caches::unsynced`]).
    Syncing = 2,
    /// Leading (or alone), reconciling from synced caches.
    Reconciling = 3,
}

impl Phase {
    /// The `/readyz` status and body.
    pub fn readiness(self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode;
        match self {
            Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n"),
            Phase::Syncing => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: leading, the caches are syncing\n",
            ),
            Phase::Standby => (StatusCode::OK, "ready: standby, another replica leads\n"),
            Phase::Reconciling => (StatusCode::OK, "ready: leading, reconciling\n"),
        }
    }
}

/// The shared [`Phase`] of this replica.
#[derive(Debug, Clone, Default)]
pub struct PhaseCell(Arc<AtomicU8>);

impl PhaseCell {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Relaxed);
    }
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Relaxed) {
            1 => Phase::Standby,
            2 => Phase::Syncing,
            3 => Phase::Reconciling,
            _ => Phase::Starting,
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the listener fails.
pub async fn serve_admin(listener: tokio::net::TcpListener, registry: Registry, phase: PhaseCell) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { crate::proxy::metrics::encode(&registry) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move { phase.get().readiness() }),
        );
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_reconciling_from_a_synced_cache_or_standing_by() {
        let cell = PhaseCell::default();
        let status = |cell: &PhaseCell| cell.get().readiness().0.as_u16();
        assert_eq!(status(&cell), 503, "starting");
        cell.set(Phase::Standby);
        assert_eq!(status(&cell), 200, "a standby is what it should be");
        cell.set(Phase::Syncing);
        assert_eq!(status(&cell), 503, "leading on an empty cache");
        cell.set(Phase::Reconciling);
        assert_eq!(status(&cell), 200);
    }
}
