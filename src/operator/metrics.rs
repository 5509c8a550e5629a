//! The operator's own metrics, served on its admin listener.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::error::Error;

/// Operator metrics.
#[derive(Clone)]
pub struct Metrics {
    reconciles: IntCounter,
    errors: IntCounterVec,
    duration: Histogram,
    pub(super) leader: IntGauge,
    children: IntCounterVec,
}

impl Metrics {
    /// Registers the operator's metrics on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            reconciles: IntCounter::new(
                "routemeter_operator_reconciliations_total",
                "Reconciliations run.",
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "routemeter_operator_reconcile_errors_total",
                    "Reconciliations that failed, by error.",
                ),
                &["error"],
            )?,
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "routemeter_operator_reconcile_duration_seconds",
                    "Duration of reconciliations.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )?,
            leader: IntGauge::new(
                "routemeter_operator_leader",
                "1 while this replica holds the leader lease.",
            )?,
            children: IntCounterVec::new(
                Opts::new(
                    "routemeter_operator_child_writes_total",
                    "What reconciles did to each child, by kind: applied, replaced (deleted and made anew: a cluster IP cannot change once set), deleted, or nothing because the caches show it unchanged (or absent, for a child to delete), or a RoleBinding waiting for its Role.",
                ),
                &["kind", "outcome"],
            )?,
        };
        registry.register(Box::new(m.reconciles.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.children.clone()))?;
        // process_resident_memory_bytes and the rest: what the operator costs.
        crate::proxy::metrics::register_process_metrics(registry)?;
        Ok(m)
    }

    /// Counts what a reconcile did to a child of kind `kind`.
    pub(super) fn child(&self, kind: &str, outcome: &'static str) {
        self.children.with_label_values(&[kind, outcome]).inc();
    }

    pub(super) fn observe(&self, took: Duration, error: Option<&Error>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors.with_label_values(&[e.metric_label()]).inc();
        }
    }
}
