//! `routemeter operator`: reconciles each `MonitoredService` into a running proxy and its
//! monitoring.
//!
//! - [`caches`]: what the watches keep in memory, and what was applied, so a reconcile
//!   reads no object from the API server and writes only what changed;
//! - [`children`]: spec → the objects to apply (pure; `routemeter render` uses it too);
//! - [`reconcile`]: the reconciler and its writes;
//! - [`status`]: conditions and the status write;
//! - [`selection`]: which Prometheus selects the monitoring objects;
//! - [`takeover`]: takeover mode's steps on the target Service, and giving it back;
//! - [`render`]: `routemeter render`, offline;
//! - [`traffic`]: what is read from the proxies: their config state, and the live traffic
//!   figures (a loop of its own).

pub mod caches;
pub mod children;
pub mod reconcile;
pub mod render;
pub mod selection;
pub mod status;
pub mod takeover;
pub mod traffic;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use thiserror::Error;

use crate::crd::MonitoredService;

/// Why a reconcile failed.
#[derive(Debug, Error)]
pub enum Error {
    /// A call on one object failed: reading the target or the proxy Deployment, writing
    /// a child (the others are still written) or the status.
    #[error("cannot {verb} {kind} {name}: {source}")]
    Object {
        verb: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the object has no {0}")]
    MissingObjectKey(&'static str),
}

impl Error {
    /// The `error` label of the error counter: a closed set.
    pub fn metric_label(&self) -> &'static str {
        let kube = match self {
            Error::Object { source: e, .. } => e,
            Error::MissingObjectKey(_) => return "missing_key",
        };
        match kube {
            kube::Error::Api(s) if s.code == 409 => "conflict",
            kube::Error::Api(s) if s.code == 403 => "forbidden",
            kube::Error::Api(_) => "api",
            _ => "client",
        }
    }
}

/// Why the operator could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot configure a Kubernetes client (in-cluster or KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot serve metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
}

/// Operator metrics.
#[derive(Clone)]
pub struct Metrics {
    reconciles: IntCounter,
    errors: IntCounterVec,
    duration: Histogram,
    leader: IntGauge,
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
                    "What reconciles did to each child, by kind: applied, deleted, or nothing because the caches show it unchanged (or absent, for a child to delete).",
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
    fn child(&self, kind: &str, outcome: &'static str) {
        self.children.with_label_values(&[kind, outcome]).inc();
    }

    fn observe(&self, took: Duration, error: Option<&Error>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors.with_label_values(&[e.metric_label()]).inc();
        }
    }
}

/// Where this replica stands, for `/readyz`.
///
/// A replica is ready once it can do its job: the leader (or the only replica) once the
/// controller's cache of MonitoredServices has synced, since it reconciles from it; a
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
    /// Leading (or alone), the controller's cache not synced yet.
    Syncing = 2,
    /// Leading (or alone), reconciling from a synced cache.
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
                "not ready: the MonitoredService cache is syncing\n",
            ),
            Phase::Standby => (StatusCode::OK, "ready: standby, another replica leads\n"),
            Phase::Reconciling => (StatusCode::OK, "ready: reconciling\n"),
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
    /// Consecutive failures per object, for the error backoff.
    failures: Mutex<HashMap<ObjectRef<MonitoredService>, u32>>,
}

impl Context {
    /// A context for the reconciler.
    pub fn new(client: Client, metrics: Metrics, proxy_image: String) -> Self {
        Context {
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

/// Requeue after a failure: 5 s doubling to 5 min per object, so a broken object never
/// spins and a transient error heals quickly.
fn error_policy(msvc: Arc<MonitoredService>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(msvc.as_ref());
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let n = failures.entry(key).or_insert(0);
    *n = n.saturating_add(1);
    let backoff = Duration::from_secs(5)
        .saturating_mul(1 << (*n - 1).min(6))
        .min(Duration::from_secs(300));
    let object = format!(
        "{}/{}",
        msvc.metadata.namespace.as_deref().unwrap_or_default(),
        msvc.metadata.name.as_deref().unwrap_or_default()
    );
    tracing::warn!(msvc = %object, error = %error, retry_in = ?backoff, "reconcile of MonitoredService {object} failed: {error}");
    Action::requeue(backoff)
}

/// Arguments of `routemeter operator`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "ROUTEMETER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Proxy image used when a MonitoredService names none.
    #[arg(long, env = "ROUTEMETER_PROXY_IMAGE", default_value = concat!("routemeter/routemeter:", env!("CARGO_PKG_VERSION")))]
    pub proxy_image: String,
    /// The cluster's DNS domain: the proxies reach in-cluster Services by their fully
    /// qualified names in it (`<svc>.<ns>.svc.<domain>.`).
    #[arg(long, env = "ROUTEMETER_CLUSTER_DOMAIN", default_value = children::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Watch only this namespace (namespace-scoped install); all namespaces when unset.
    #[arg(long, env = "ROUTEMETER_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Elect a leader through a Lease, so several replicas can run.
    #[arg(long, env = "ROUTEMETER_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "ROUTEMETER_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "ROUTEMETER_LEASE_NAME",
        default_value = "routemeter-operator"
    )]
    pub lease_name: String,
    /// Identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How often the proxies' live figures are read into `status.traffic` (at least 1s);
    /// figures no proxy confirmed for two periods are cleared.
    #[arg(long, env = "ROUTEMETER_TRAFFIC_REFRESH", default_value = "30s", value_parser = parse_refresh)]
    pub traffic_refresh: Duration,
}

fn parse_refresh(value: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if period < traffic::MIN_REFRESH {
        return Err(format!(
            "{value:?} is too short, at least {:?}",
            traffic::MIN_REFRESH
        ));
    }
    Ok(period)
}

impl Args {
    /// Runs the operator until SIGTERM or SIGINT.
    pub async fn run(self) -> Result<(), StartError> {
        let client = Client::try_default().await.map_err(StartError::Client)?;
        let registry = Registry::new();
        let metrics = Metrics::register(&registry)?;
        let mut ctx = Context::new(client.clone(), metrics.clone(), self.proxy_image.clone());
        ctx.cluster_domain = self.cluster_domain.clone();
        ctx.traffic_refresh = self.traffic_refresh;
        let ctx = Arc::new(ctx);
        let listener = tokio::net::TcpListener::bind(self.metrics_addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: self.metrics_addr,
                source,
            })?;
        tracing::info!(addr = %self.metrics_addr, "serving /metrics, /healthz, /readyz");
        tokio::spawn(serve_admin(listener, registry, ctx.phase.clone()));

        if !self.leader_election {
            metrics.leader.set(1);
            run_controller(ctx, self.watch_namespace.as_deref()).await;
            return Ok(());
        }
        let identity = self.identity.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "routemeter".into()),
                std::process::id()
            )
        });
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &self.lease_name)
            .with_namespace(&self.lease_namespace)
            .with_identity(&identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut leading, lease_task) = manager.watch().await;
        ctx.phase.set(Phase::Standby);
        tracing::info!(%identity, lease = %self.lease_name, "waiting to become leader");
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            while !*leading.borrow_and_update() {
                tokio::select! {
                    changed = leading.changed() => if changed.is_err() { return Ok(()) },
                    _ = &mut shutdown => return Ok(()),
                }
            }
            tracing::info!(%identity, "became leader");
            metrics.leader.set(1);
            tokio::select! {
                _ = run_controller(ctx.clone(), self.watch_namespace.as_deref()) => break,
                _ = async { while *leading.borrow() { if leading.changed().await.is_err() { break } } } => {
                    tracing::warn!("lost leadership; stopping the controller");
                    metrics.leader.set(0);
                    ctx.phase.set(Phase::Standby);
                }
                _ = &mut shutdown => break,
            }
        }
        // Dropping the channel makes the lease task release the lease for the next leader.
        drop(leading);
        if let Ok(Ok(manager)) = lease_task.await {
            let _ = manager.release().await;
        }
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Reconciles run at once, at most. A thousand MonitoredServices created together are
/// reconciled this many at a time, so neither the operator's memory (each reconcile holds
/// its built children) nor the API server's load grows with their number.
const RECONCILE_CONCURRENCY: u16 = 32;

/// How long the triggers of one MonitoredService are gathered into one reconcile: a
/// reconcile's own applies come back as watch events of its children, a burst that would
/// otherwise ask for as many reconciles again.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Runs the controller until a shutdown signal.
pub async fn run_controller(ctx: Arc<Context>, namespace: Option<&str>) {
    let client = ctx.client.clone();
    ctx.phase.set(Phase::Syncing);
    // The MonitoredServices' own watch: the replica is ready once its first list is in
    // the store (`InitDone`), seen on the stream itself. Waiting on the store instead
    // would race the controller, which waits on it too: its readiness signal wakes only
    // the last waiter, and a controller not woken reconciles nothing until some other
    // event polls it.
    let (store, writer) = kube::runtime::reflector::store();
    let phase = ctx.phase.clone();
    let msvcs = watcher(
        api::<MonitoredService>(&client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .inspect_ok(move |event| {
        if matches!(event, watcher::Event::InitDone) && phase.get() != Phase::Reconciling {
            phase.set(Phase::Reconciling);
            tracing::info!("MonitoredService cache synced; reconciling");
        }
    })
    .reflect(writer)
    .touched_objects();
    let controller = Controller::for_stream(msvcs, store.clone());
    let (caches, triggers) = caches::Caches::watch(&client, namespace);
    let caches = Arc::new(caches);
    ctx.caches.store(caches.clone());
    // Live traffic figures, in a loop of their own: never a reconcile.
    let traffic = tokio::spawn(traffic::refresh_loop(
        client.clone(),
        caches,
        store.clone(),
        ctx.proxy_admin_port,
        ctx.traffic_refresh,
    ));
    let mut controller = controller
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(RECONCILE_CONCURRENCY)
                .debounce(DEBOUNCE),
        )
        .owns_stream(triggers.deployments)
        .owns_stream(triggers.hpas)
        // Every Service: the proxies' own (their owner), and targets (who names them:
        // their appearance, deletion or port change).
        .watches_stream(triggers.services, {
            let store = store.clone();
            move |svc| {
                let mut refs = reconcile::targeting(&store, &svc);
                refs.extend(owners(&svc));
                refs
            }
        })
        // Read, never a trigger: a proxy pod's readiness shows in its Deployment.
        .watches_stream(triggers.pods, |_| None::<ObjectRef<MonitoredService>>)
        // A namespace's labels decide which Prometheus selects its monitoring.
        .watches_stream(triggers.namespaces, {
            let store = store.clone();
            move |ns| in_namespace(&store, ns.metadata.name.as_deref())
        })
        .watches_stream_with(
            triggers.prometheuses,
            {
                let store = store.clone();
                move |_| in_namespace(&store, None)
            },
            children::resources::prometheus(),
        )
        // The Prometheus Operator CRDs appearing: configure monitoring everywhere.
        .watches(
            Api::<CustomResourceDefinition>::all(client.clone()),
            watcher::Config::default()
                .fields("metadata.name=servicemonitors.monitoring.coreos.com"),
            {
                let store = store.clone();
                move |_| in_namespace(&store, None)
            },
        );
    for (resource, trigger) in triggers.children {
        controller = controller.owns_stream_with(trigger, resource);
    }
    controller
        .shutdown_on_signal()
        .run(reconcile::reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            let ctx = ctx.clone();
            async move {
                match result {
                    Ok((obj, _)) => {
                        ctx.failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&obj);
                        tracing::debug!(msvc = %obj.name, "reconciled");
                    }
                    Err(error) => tracing::debug!(%error, "controller event"),
                }
            }
        })
        .await;
    traffic.abort();
}

/// The MonitoredServices in namespace `ns`, or every one when `None`.
fn in_namespace(
    store: &kube::runtime::reflector::Store<MonitoredService>,
    ns: Option<&str>,
) -> Vec<ObjectRef<MonitoredService>> {
    store
        .state()
        .iter()
        .filter(|m| ns.is_none() || m.metadata.namespace.as_deref() == ns)
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// The MonitoredService owning an object, if one does.
fn owners(obj: &impl kube::Resource) -> Vec<ObjectRef<MonitoredService>> {
    let ns = obj.meta().namespace.as_deref();
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .filter_map(|o| ObjectRef::from_owner_ref(ns, o, ()))
        .collect()
}

async fn serve_admin(listener: tokio::net::TcpListener, registry: Registry, phase: PhaseCell) {
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

    #[test]
    fn child_errors_name_the_child_and_keep_their_metric_label() {
        let forbidden = kube::Error::Api(Box::new(
            kube::core::Status::failure("services is forbidden", "Forbidden").with_code(403),
        ));
        let e = Error::Object {
            verb: "delete",
            kind: "Service".into(),
            name: "shop/shop-routemeter-upstream".into(),
            source: forbidden,
        };
        assert!(
            e.to_string()
                .starts_with("cannot delete Service shop/shop-routemeter-upstream: "),
            "{e}"
        );
        assert_eq!(e.metric_label(), "forbidden");
    }
}
