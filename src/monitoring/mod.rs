//! What Prometheus and Grafana get for a `MonitoredService`: recording rules, threshold
//! and SLO burn-rate alerts ([`rules`]) and a dashboard ([`dashboard`]). Pure functions of
//! the spec, shared by the operator and `routemeter render`.

pub mod dashboard;
pub mod rules;

use crate::crd::{MonitoringSpec, RouteSpec};

/// Every latency threshold the rules compare against, in seconds: the proxy adds each as
/// a histogram boundary so the share of requests under it is exact, not interpolated.
pub fn latency_thresholds(monitoring: &MonitoringSpec, routes: &[RouteSpec]) -> Vec<f64> {
    let mut all = vec![
        monitoring.alerts.latency_p95_seconds,
        monitoring.slo.latency_threshold_seconds,
    ];
    all.extend(
        routes
            .iter()
            .filter_map(|r| r.slo.as_ref())
            .map(|s| s.latency_threshold_seconds),
    );
    all.retain(|v| v.is_finite() && *v > 0.0);
    all.sort_by(f64::total_cmp);
    all.dedup();
    all
}

/// How a bucket boundary appears in the `le` label (the proxy formats it the same way).
pub fn le_label(seconds: f64) -> String {
    format!("{seconds}")
}
