//! The controller: the watches, what each one triggers, and the error backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::admin::{Phase, PhaseCell};
use super::context::Context;
use super::error::Error;
use super::{caches, children, reconcile, traffic};
use crate::crd::MonitoredService;

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
    // The MonitoredServices' own watch; its first list in (`InitDone`) is seen on the
    // stream itself. Waiting on the store instead would race the controller, which waits
    // on it too: its readiness signal wakes only the last waiter, and a controller not
    // woken reconciles nothing until some other event polls it.
    let (store, writer) = kube::runtime::reflector::store();
    let listed = Arc::new(AtomicBool::new(false));
    let msvcs = watcher(
        api::<MonitoredService>(&client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    // Never read, and most of an object's size in memory.
    .modify(|m: &mut MonitoredService| m.metadata.managed_fields = None)
    .inspect_ok({
        let listed = listed.clone();
        move |event| {
            if matches!(event, watcher::Event::InitDone) {
                listed.store(true, Ordering::Release);
            }
        }
    })
    .reflect(writer)
    .touched_objects();
    let msvcs = caches::without_errors("MonitoredService".into(), msvcs);
    let controller = Controller::for_stream(msvcs, store.clone());
    let (caches, triggers) = caches::Caches::watch(&client, namespace, store.clone());
    let caches = Arc::new(caches);
    ctx.caches.store(caches.clone());
    // Ready once every cache a reconcile reads from has synced, so a replica that says
    // ready reads memory, not the API server.
    let ready = tokio::spawn(report_ready(ctx.phase.clone(), listed, caches.clone()));
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
        .watches_stream(
            caches::without_errors(
                "CustomResourceDefinition".into(),
                watcher(
                    Api::<CustomResourceDefinition>::all(client.clone()),
                    watcher::Config::default()
                        .fields("metadata.name=servicemonitors.monitoring.coreos.com"),
                )
                .default_backoff()
                .touched_objects(),
            ),
            {
                let store = store.clone();
                move |_| in_namespace(&store, None)
            },
        );
    for (resource, trigger) in triggers.children {
        // The proxies' identity is the namespace's (`children::identity`): a change of it
        // (deleted, or its owner gone) concerns every MonitoredService there, and a
        // binding waiting for its Role waits in each of them.
        let store = store.clone();
        controller = controller.watches_stream_with(
            trigger,
            move |child| {
                if child.metadata.name.as_deref() == Some(children::PROXY_IDENTITY) {
                    in_namespace(&store, child.metadata.namespace.as_deref())
                } else {
                    owners(&child)
                }
            },
            resource,
        );
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
    ready.abort();
}

/// Sets [`Phase::Reconciling`] once the MonitoredServices are `listed` and the
/// [`caches::Caches::unsynced`] list is empty; logs what it waits for every 10 s.
async fn report_ready(phase: PhaseCell, listed: Arc<AtomicBool>, caches: Arc<caches::Caches>) {
    let started = tokio::time::Instant::now();
    let mut told = started;
    loop {
        let mut waiting = caches.unsynced();
        if !listed.load(Ordering::Acquire) {
            waiting.insert(0, "MonitoredService".into());
        }
        if waiting.is_empty() {
            phase.set(Phase::Reconciling);
            tracing::info!(took = ?started.elapsed(), "caches synced; ready");
            return;
        }
        if told.elapsed() >= Duration::from_secs(10) {
            told = tokio::time::Instant::now();
            tracing::info!(waiting = %waiting.join(", "), "caches still syncing");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
