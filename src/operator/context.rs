//! What every reconcile shares: the client, the metrics, the settings, the caches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;

use super::admin::PhaseCell;
use super::metrics::Metrics;
use super::{caches, children, traffic};
use crate::crd::MonitoredService;

/// The `reportingController` of the operator's Events.
pub const REPORTER: &str = "routemeter.io/operator";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub proxy_image: String,
    /// Port of the proxies' admin listener, where traffic figures are read.
    pub proxy_admin_port: u16,
    /// The cluster's DNS domain, for the proxies' fully qualified upstream names.
    pub cluster_domain: String,
    /// How often the proxies' live figures are read into `status.traffic`.
    pub traffic_refresh: Duration,
    /// Last traffic reading per MonitoredService.
    pub readings: traffic::Readings,
    /// Where this replica stands, for `/readyz`.
    pub phase: PhaseCell,
    /// The running controller's caches ([`run_controller`] sets them).
    pub caches: arc_swap::ArcSwap<caches::Caches>,
    /// Publishes the MonitoredServices' Events (see [`super::status`]).
    pub recorder: Recorder,
    /// Consecutive failures per object, for the error backoff.
    pub(super) failures: Mutex<HashMap<ObjectRef<MonitoredService>, u32>>,
}

impl Context {
    /// A context for the reconciler.
    pub fn new(client: Client, metrics: Metrics, proxy_image: String) -> Self {
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            proxy_image,
            proxy_admin_port: crate::proxy_pods::ADMIN_PORT as u16,
            cluster_domain: children::DEFAULT_CLUSTER_DOMAIN.to_string(),
            traffic_refresh: traffic::DEFAULT_REFRESH,
            readings: traffic::Readings::default(),
            phase: PhaseCell::default(),
            caches: arc_swap::ArcSwap::from_pointee(caches::Caches::unwatched()),
            failures: Mutex::default(),
        }
    }
}
