//! What the operator knows of the cluster without asking: reflector stores filled by the
//! controller's own watches, and the record of what it applied.
//!
//! A reconcile reads the target Service, the proxy Deployment and pods, the namespace's
//! labels and the Prometheus objects from memory, and looks at each child's metadata in
//! memory before writing it: a child whose desired manifest and whose metadata are what
//! they were after the operator's last apply is not applied again. So a reconcile that
//! changes nothing makes no API call at all (issue 14: 1,000 MonitoredServices at rest).
//!
//! A child is "what it was" when its fingerprint ([`fingerprint`]) is: its `uid`, its
//! owners, the labels and annotations the operator sets, and its `generation` (which moves with every change of
//! its spec, never with its status) or, for kinds without one, its `resourceVersion`. The
//! HorizontalPodAutoscaler has a status its controller rewrites and no `generation`: its
//! store holds its metadata and spec (not its status), and its spec stands for the
//! generation. So an edit by
//! another field manager, or a deletion, is written back on the next pass; the status
//! the Deployment, HPA and PDB controllers write is not.
//!
//! Until a store has synced, its reads go to the API server as before, and every child is
//! applied: a cache is used only once it can be trusted. The Prometheus Operator's kinds
//! may not exist; their stores then never sync, and the reconcile does what it did
//! without them.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::children::resources;
use crate::crd::MonitoredService;

/// The label every child carries: its watches select on it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=routemeter";

/// The metadata of a child kept in memory.
pub type Meta = PartialObjectMeta<DynamicObject>;

/// A reflector store, and whether it has synced.
pub struct Cache<K: Resource + 'static>
where
    K::DynamicType: Hash + Eq,
{
    store: Store<K>,
    dyntype: K::DynamicType,
    synced: Arc<AtomicBool>,
}

impl<K> Cache<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    fn new(store: Store<K>, dyntype: K::DynamicType) -> Self {
        let synced = Arc::new(AtomicBool::new(false));
        let (flag, waiting) = (synced.clone(), store.clone());
        tokio::spawn(async move {
            if waiting.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
            }
        });
        Cache {
            store,
            dyntype,
            synced,
        }
    }

    /// Whether the store holds what the API server has (its first list is in).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The object `ns/name`: `None` while the store has not synced (ask the API server),
    /// `Some(None)` when it does not exist.
    pub fn get(&self, ns: &str, name: &str) -> Option<Option<Arc<K>>> {
        self.synced().then(|| {
            self.store
                .get(&ObjectRef::new_with(name, self.dyntype.clone()).within(ns))
        })
    }

    /// The object `ns/name`: from the store once it has synced, else read from the API
    /// server. An error names the object.
    pub async fn read(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<K>, super::error::Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + DeserializeOwned
            + std::fmt::Debug,
    {
        if let Some(cached) = self.get(ns, name) {
            return Ok(cached.map(|o| o.as_ref().clone()));
        }
        Api::<K>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|source| super::error::Error::Object {
                verb: "read",
                kind: K::kind(&()).into_owned(),
                name: format!("{ns}/{name}"),
                source,
            })
    }

    /// Every object in the store, synced or not.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }
}

/// A watch stream as the controller takes it.
pub type Trigger<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The watches behind [`Caches`], for the controller to drive: each touched object
/// triggers the MonitoredServices it concerns ([`super::run_controller`]).
pub struct Triggers {
    pub services: Trigger<Service>,
    pub deployments: Trigger<Deployment>,
    pub hpas: Trigger<HorizontalPodAutoscaler>,
    pub pods: Trigger<Pod>,
    pub namespaces: Trigger<PartialObjectMeta<Namespace>>,
    pub prometheuses: Trigger<DynamicObject>,
    /// The other children's metadata, one watch per kind.
    pub children: Vec<(ApiResource, Trigger<Meta>)>,
}

/// The operator's caches, shared by every reconcile and the traffic loop.
pub struct Caches {
    /// Every Service in the watched namespaces: the targets and the proxies' own.
    pub services: Cache<Service>,
    /// The proxies' Deployments.
    pub deployments: Cache<Deployment>,
    /// The proxies' HorizontalPodAutoscalers.
    pub hpas: Cache<HorizontalPodAutoscaler>,
    /// The proxies' pods.
    pub pods: Cache<Pod>,
    /// The watched namespaces' labels, which Prometheus namespace selectors match.
    pub namespaces: Cache<PartialObjectMeta<Namespace>>,
    /// Every Prometheus object in the cluster.
    pub prometheuses: Cache<DynamicObject>,
    /// The MonitoredServices: the controller's own store.
    pub monitored: Store<MonitoredService>,
    /// The metadata of the other children, by `(group, kind)`.
    children: HashMap<(String, String), Cache<Meta>>,
    /// What the last apply of each child wrote and gave back.
    applied: Mutex<HashMap<ChildKey, Applied>>,
}

/// A child, `(group, kind, namespace, name)`, as its hash: 8 bytes a child instead of
/// four strings (2.5 MB with 1,000 MonitoredServices). Two children of one hash could
/// only cost an apply: a skip needs the same manifest hash and fingerprint too.
type ChildKey = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    /// Hash of the manifest applied.
    manifest: u64,
    /// [`fingerprint`] of the object the API server answered.
    fingerprint: u64,
}

/// The child kinds kept as metadata only: every child but Services, Deployments and
/// HorizontalPodAutoscalers, whose stores hold typed objects (each trimmed to what is
/// read of it).
fn metadata_kinds() -> [ApiResource; 7] {
    [
        resources::config_map(),
        resources::pdb(),
        resources::service_account(),
        resources::role(),
        resources::role_binding(),
        resources::service_monitor(),
        resources::prometheus_rule(),
    ]
}

/// A store of `K` from `api`, and the watch that fills it: each object trimmed by `trim`
/// to what is read of it, and its managed fields dropped (never read, and most of an
/// object's size).
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    trim: fn(&mut K),
) -> (Cache<K>, Trigger<K>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype.clone());
    let store = writer.as_reader();
    let kind = K::kind(&dyntype).into_owned();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |o: &mut K| {
            o.meta_mut().managed_fields = None;
            trim(o);
        })
        .reflect(writer)
        .touched_objects();
    (Cache::new(store, dyntype), without_errors(kind, stream))
}

/// A watch stream that never yields its errors: each is logged, naming the kind, and
/// the watch's own backoff (every watch here has one, before this) spaces its retries.
///
/// The controller runs all its trigger streams under one backoff: an error from any
/// one would stop it polling every watch until that backoff ends. A request of another
/// watch caught mid-handshake then sits unread until the API server gives up on it, and
/// fails when polled again; its error lengthens the shared backoff, and so on: after an
/// API server restart the operator would never see an event again (tests/operator.rs,
/// `a_killed_operator_and_a_restarted_apiserver_converge_without_help`, found it).
pub fn without_errors<K, S>(kind: String, stream: S) -> Trigger<K>
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    stream
        .filter_map(move |item| {
            let kept = match item {
                Ok(object) => Some(Ok(object)),
                Err(error) => {
                    tracing::warn!(%kind, %error, "watch of {kind} failed; retrying with backoff");
                    None
                }
            };
            std::future::ready(kept)
        })
        .boxed()
}

/// Keeps all of an object.
fn whole<K>(_: &mut K) {}

/// Keeps of a Service all but its status (load-balancer ingress and conditions, which
/// nothing here reads), and of the proxies' own Services (three for each
/// MonitoredService) only the metadata their fingerprint reads: a target is read whole,
/// and a target that is one of them is read from the API server ([`is_trimmed`]).
fn service_spec(s: &mut Service) {
    s.status = None;
    if is_ours(&s.metadata) {
        s.spec = None;
    }
}

/// Whether a Service from the store lost its spec to [`service_spec`].
pub fn is_trimmed(s: &Service) -> bool {
    s.spec.is_none() && is_ours(&s.metadata)
}

/// Whether an object carries the label of what the operator made ([`MANAGED_BY`]).
pub fn is_ours(meta: &ObjectMeta) -> bool {
    let (key, value) = MANAGED_BY.split_once('=').unwrap_or_default();
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == value)
}

/// Keeps of a HorizontalPodAutoscaler its metadata and spec (its fingerprint), not the
/// status its controller rewrites.
fn hpa_spec(h: &mut HorizontalPodAutoscaler) {
    h.status = None;
}

/// Keeps of a Deployment what [`super::reconcile`] reads: its metadata, replicas and
/// status, not its pod template.
fn deployment_status(d: &mut Deployment) {
    if let Some(spec) = &mut d.spec {
        spec.template = Default::default();
    }
}

/// Keeps of a pod what [`crate::proxy_pods::Proxies::of`] reads: its name, labels,
/// container ports, IP and conditions.
fn pod_address(p: &mut Pod) {
    p.metadata.annotations = None;
    if let Some(spec) = &mut p.spec {
        let containers = std::mem::take(&mut spec.containers)
            .into_iter()
            .map(|c| k8s_openapi::api::core::v1::Container {
                name: c.name,
                ports: c.ports,
                ..Default::default()
            })
            .collect();
        *spec = k8s_openapi::api::core::v1::PodSpec {
            containers,
            ..Default::default()
        };
    }
    if let Some(status) = &mut p.status {
        *status = k8s_openapi::api::core::v1::PodStatus {
            pod_ip: status.pod_ip.take(),
            conditions: status.conditions.take(),
            ..Default::default()
        };
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn scoped_meta(client: &Client, namespace: Option<&str>, ar: &ApiResource) -> Api<Meta> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

impl Caches {
    /// The caches of an operator watching `namespace` (all when `None`), and the watches
    /// that fill them.
    pub fn watch(
        client: &Client,
        namespace: Option<&str>,
        monitored: Store<MonitoredService>,
    ) -> (Self, Triggers) {
        let ours = || watcher::Config::default().labels(MANAGED_BY);
        let (services, services_watch) = reflect(
            scoped::<Service>(client, namespace),
            watcher::Config::default(),
            (),
            service_spec,
        );
        let (deployments, deployments_watch) = reflect(
            scoped::<Deployment>(client, namespace),
            ours(),
            (),
            deployment_status,
        );
        let (hpas, hpas_watch) = reflect(
            scoped::<HorizontalPodAutoscaler>(client, namespace),
            ours(),
            (),
            hpa_spec,
        );
        let (pods, pods_watch) = reflect(
            scoped::<Pod>(client, namespace),
            watcher::Config::default().labels(crate::proxy_pods::INSTANCE_LABEL),
            (),
            pod_address,
        );
        let namespace_config = match namespace {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        let (namespaces, namespaces_watch) = reflect(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            namespace_config,
            (),
            whole,
        );
        let prometheus = resources::prometheus();
        let (prometheuses, prometheuses_watch) = reflect(
            Api::<DynamicObject>::all_with(client.clone(), &prometheus),
            watcher::Config::default(),
            prometheus,
            whole,
        );
        let mut children = HashMap::new();
        let mut children_watch = Vec::new();
        for ar in metadata_kinds() {
            let (cache, watch) = reflect(
                scoped_meta(client, namespace, &ar),
                ours(),
                ar.clone(),
                whole,
            );
            children.insert((ar.group.clone(), ar.kind.clone()), cache);
            children_watch.push((ar, watch));
        }
        let caches = Caches {
            services,
            deployments,
            hpas,
            pods,
            namespaces,
            prometheuses,
            monitored,
            children,
            applied: Mutex::default(),
        };
        let triggers = Triggers {
            services: services_watch,
            deployments: deployments_watch,
            hpas: hpas_watch,
            pods: pods_watch,
            namespaces: namespaces_watch,
            prometheuses: prometheuses_watch,
            children: children_watch,
        };
        (caches, triggers)
    }

    /// The caches a replica needs before it reports ready, by kind, that have not synced
    /// yet: every one but the Prometheus Operator's kinds (Prometheus, ServiceMonitor,
    /// PrometheusRule), whose CRDs may never be installed; without them the operator
    /// still does its job, and says so in `MonitoringConfigured`.
    pub fn unsynced(&self) -> Vec<String> {
        let optional = |kind: &str| matches!(kind, "ServiceMonitor" | "PrometheusRule");
        let mut out: Vec<String> = [
            ("Service", self.services.synced()),
            ("Deployment", self.deployments.synced()),
            ("HorizontalPodAutoscaler", self.hpas.synced()),
            ("Pod", self.pods.synced()),
            ("Namespace", self.namespaces.synced()),
        ]
        .into_iter()
        .filter(|(_, synced)| !synced)
        .map(|(kind, _)| kind.to_string())
        .collect();
        let mut children: Vec<String> = self
            .children
            .iter()
            .filter(|((_, kind), cache)| !optional(kind) && !cache.synced())
            .map(|((_, kind), _)| kind.clone())
            .collect();
        children.sort();
        out.extend(children);
        out
    }

    /// The caches behind no watch: nothing ever syncs, so every read goes to the API
    /// server and every child is applied (the in-process tests of single reconciles).
    pub fn unwatched() -> Self {
        fn empty<K>(dyntype: K::DynamicType) -> Cache<K>
        where
            K: Resource + Clone + Send + Sync + 'static,
            K::DynamicType: Eq + Hash + Clone + Send + Sync,
        {
            let writer = reflector::store::Writer::new(dyntype.clone());
            let store = writer.as_reader();
            drop(writer);
            Cache::new(store, dyntype)
        }
        Caches {
            services: empty(()),
            deployments: empty(()),
            hpas: empty(()),
            pods: empty(()),
            namespaces: empty(()),
            prometheuses: empty(resources::prometheus()),
            monitored: reflector::store::Writer::default().as_reader(),
            children: metadata_kinds()
                .into_iter()
                .map(|ar| ((ar.group.clone(), ar.kind.clone()), empty(ar)))
                .collect(),
            applied: Mutex::default(),
        }
    }

    /// The [`fingerprint`] of the child `ns/name` of kind `resource`, as [`Cache::get`]
    /// says it: `None` while its store has not synced, `Some(None)` if it does not exist.
    /// Only the labels and annotations `manifest` sets count ([`fingerprint`]).
    pub fn child(
        &self,
        resource: &ApiResource,
        ns: &str,
        name: &str,
        manifest: &serde_json::Value,
    ) -> Option<Option<u64>> {
        let ours = Ours::of(manifest);
        match (resource.group.as_str(), resource.kind.as_str()) {
            ("", "Service") => self
                .services
                .get(ns, name)
                .map(|o| o.map(|s| fingerprint(&s.metadata, None, &ours))),
            ("apps", "Deployment") => self
                .deployments
                .get(ns, name)
                .map(|o| o.map(|d| fingerprint(&d.metadata, None, &ours))),
            ("autoscaling", "HorizontalPodAutoscaler") => self
                .hpas
                .get(ns, name)
                .map(|o| o.map(|h| fingerprint(&h.metadata, Some(spec_hash(&h.spec)), &ours))),
            (group, kind) => self
                .children
                .get(&(group.to_string(), kind.to_string()))?
                .get(ns, name)
                .map(|o| o.map(|m| fingerprint(&m.metadata, None, &ours))),
        }
    }

    /// Whether applying `manifest` to the child would change nothing: the last apply
    /// wrote the same manifest, and the child is still what that apply left.
    pub fn unchanged(
        &self,
        resource: &ApiResource,
        ns: &str,
        name: &str,
        manifest: &serde_json::Value,
    ) -> bool {
        let Some(Some(now)) = self.child(resource, ns, name, manifest) else {
            return false;
        };
        let applied = self.lock().get(&key(resource, ns, name)).copied();
        applied
            == Some(Applied {
                manifest: hash_manifest(manifest),
                fingerprint: now,
            })
    }

    /// Records an apply of `manifest` to the child, and the object it gave back.
    pub fn applied(
        &self,
        resource: &ApiResource,
        ns: &str,
        name: &str,
        manifest: &serde_json::Value,
        answer: &DynamicObject,
    ) {
        let spec = (resource.kind == "HorizontalPodAutoscaler")
            .then(|| {
                let typed = answer.clone().try_parse::<HorizontalPodAutoscaler>();
                typed.ok().map(|h| spec_hash(&h.spec))
            })
            .flatten();
        self.lock().insert(
            key(resource, ns, name),
            Applied {
                manifest: hash_manifest(manifest),
                fingerprint: fingerprint(&answer.metadata, spec, &Ours::of(manifest)),
            },
        );
    }

    /// Whether the child is known not to exist (so nothing is left to delete).
    pub fn absent(&self, resource: &ApiResource, ns: &str, name: &str) -> bool {
        matches!(
            self.child(resource, ns, name, &serde_json::Value::Null),
            Some(None)
        )
    }

    /// Forgets what was applied to the child (it is being deleted).
    pub fn forget(&self, resource: &ApiResource, ns: &str, name: &str) {
        self.lock().remove(&key(resource, ns, name));
    }

    /// The labels of namespace `ns`: `None` while the store has not synced.
    pub fn namespace_labels(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get("", ns).map(|n| {
            n.and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChildKey, Applied>> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(resource: &ApiResource, ns: &str, name: &str) -> ChildKey {
    let mut h = DefaultHasher::new();
    (&resource.group, &resource.kind, ns, name).hash(&mut h);
    h.finish()
}

fn spec_hash(spec: &impl serde::Serialize) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

fn hash_manifest(manifest: &serde_json::Value) -> u64 {
    let mut h = DefaultHasher::new();
    manifest.to_string().hash(&mut h);
    h.finish()
}

/// The label and annotation keys a manifest sets: what of a child's labels and
/// annotations is the operator's. Others' (the Deployment controller's
/// `deployment.kubernetes.io/revision`, a team label) are left alone by an apply, so a
/// change of theirs needs none.
pub struct Ours<'a> {
    labels: Vec<&'a str>,
    annotations: Vec<&'a str>,
}

impl<'a> Ours<'a> {
    pub fn of(manifest: &'a serde_json::Value) -> Self {
        let keys = |field: &str| {
            manifest["metadata"][field]
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default()
        };
        Ours {
            labels: keys("labels"),
            annotations: keys("annotations"),
        }
    }
}

/// What says a child is still what the operator's last apply left: its identity, owners
/// and deletion, the values of the labels and annotations the operator sets (`ours`),
/// and `spec` (the hash of its spec, when its store has it), else its `generation`, else
/// its `resourceVersion` (kinds without a status): what a status write never moves.
pub fn fingerprint(meta: &ObjectMeta, spec: Option<u64>, ours: &Ours<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    meta.uid.hash(&mut h);
    match (spec, meta.generation) {
        (Some(spec), _) => spec.hash(&mut h),
        (None, Some(generation)) => generation.hash(&mut h),
        (None, None) => meta.resource_version.hash(&mut h),
    }
    for (keys, values) in [
        (&ours.labels, &meta.labels),
        (&ours.annotations, &meta.annotations),
    ] {
        for key in keys {
            (key, values.as_ref().and_then(|v| v.get(*key))).hash(&mut h);
        }
    }
    meta.deletion_timestamp.is_some().hash(&mut h);
    for owner in meta.owner_references.iter().flatten() {
        (&owner.api_version, &owner.kind, &owner.name, &owner.uid).hash(&mut h);
        (owner.controller, owner.block_owner_deletion).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
impl Caches {
    /// Puts a store of `resource` (a kind kept as metadata) in place of its unsynced one,
    /// synced and empty, and gives back its writer for a test to fill.
    pub async fn synced_metadata(
        &mut self,
        resource: &ApiResource,
    ) -> reflector::store::Writer<Meta> {
        let mut writer = reflector::store::Writer::<Meta>::new(resource.clone());
        let cache = Cache::new(writer.as_reader(), resource.clone());
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        // `Cache::new` learns of the sync on a task of its own.
        for _ in 0..200 {
            if cache.synced() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(cache.synced(), "the {} store synced", resource.kind);
        self.children
            .insert((resource.group.clone(), resource.kind.clone()), cache);
        writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint_of(meta: &ObjectMeta) -> u64 {
        let manifest = serde_json::json!({"metadata": {"labels": {"app": "shop"}}});
        fingerprint(meta, None, &Ours::of(&manifest))
    }

    fn answer(meta: ObjectMeta) -> DynamicObject {
        let mut object = DynamicObject::new("c", &resources::config_map());
        object.metadata = meta;
        object
    }

    fn meta(generation: Option<i64>, version: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some("shop-routemeter".into()),
            namespace: Some("shop".into()),
            uid: Some("u1".into()),
            generation,
            resource_version: Some(version.into()),
            labels: Some(BTreeMap::from([("app".into(), "shop".into())])),
            ..Default::default()
        }
    }

    #[test]
    fn the_store_keeps_a_targets_spec_and_only_the_metadata_of_a_proxys_service() {
        let service = |labels: &[(&str, &str)]| Service {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(Default::default()),
            status: Some(Default::default()),
        };
        let mut target = service(&[("app.kubernetes.io/managed-by", "helm")]);
        service_spec(&mut target);
        assert!(target.spec.is_some() && target.status.is_none());
        assert!(!is_trimmed(&target));
        let mut proxy = service(&[("app.kubernetes.io/managed-by", "routemeter")]);
        service_spec(&mut proxy);
        assert!(proxy.spec.is_none() && proxy.status.is_none());
        assert!(
            is_trimmed(&proxy),
            "a target that is a proxy's Service is read whole"
        );
        assert!(
            proxy.metadata.labels.is_some(),
            "its fingerprint reads the labels"
        );
    }

    #[test]
    fn child_keys_differ_by_kind_namespace_and_name() {
        let (cm, rule) = (resources::config_map(), resources::prometheus_rule());
        let k = key(&cm, "shop", "a");
        assert_eq!(k, key(&cm, "shop", "a"));
        for other in [
            key(&rule, "shop", "a"),
            key(&cm, "shop2", "a"),
            key(&cm, "shop", "b"),
        ] {
            assert_ne!(k, other);
        }
        // The parts are hashed apart: ("ab", "c") is not ("a", "bc").
        assert_ne!(key(&cm, "ab", "c"), key(&cm, "a", "bc"));
    }

    #[test]
    fn a_status_write_keeps_the_fingerprint_and_an_edit_does_not() {
        let applied = fingerprint_of(&meta(Some(3), "100"));
        // The Deployment controller's status write: a new resourceVersion, the same
        // generation.
        assert_eq!(fingerprint_of(&meta(Some(3), "117")), applied);
        // Its spec edited by someone else.
        assert_ne!(fingerprint_of(&meta(Some(4), "118")), applied);
        // A label of the operator's changed by another field manager.
        let mut labelled = meta(Some(3), "119");
        labelled
            .labels
            .get_or_insert_default()
            .insert("app".into(), "x".into());
        assert_ne!(fingerprint_of(&labelled), applied);
        // A label of someone else's added, an annotation of the Deployment controller's:
        // an apply would leave them as they are.
        let mut theirs = meta(Some(3), "120");
        theirs
            .labels
            .get_or_insert_default()
            .insert("team".into(), "x".into());
        theirs.annotations = Some(BTreeMap::from([(
            "deployment.kubernetes.io/revision".into(),
            "2".into(),
        )]));
        assert_eq!(fingerprint_of(&theirs), applied);
        // Deleted and created again: another uid.
        let mut again = meta(Some(3), "100");
        again.uid = Some("u2".into());
        assert_ne!(fingerprint_of(&again), applied);
        // A ConfigMap has no generation: any write is a change.
        assert_ne!(
            fingerprint_of(&meta(None, "101")),
            fingerprint_of(&meta(None, "100"))
        );
    }

    #[tokio::test]
    async fn nothing_is_skipped_before_the_caches_sync() {
        let caches = Caches::unwatched();
        let cm = resources::config_map();
        let manifest = serde_json::json!({"data": {"a": "1"}});
        caches.applied(&cm, "shop", "c", &manifest, &answer(meta(None, "1")));
        assert!(!caches.unchanged(&cm, "shop", "c", &manifest));
        assert!(!caches.absent(&cm, "shop", "c"));
        assert_eq!(caches.namespace_labels("shop"), None);
        // Readiness waits for every cache but the Prometheus Operator's kinds.
        assert_eq!(
            caches.unsynced(),
            [
                "Service",
                "Deployment",
                "HorizontalPodAutoscaler",
                "Pod",
                "Namespace",
                "ConfigMap",
                "PodDisruptionBudget",
                "Role",
                "RoleBinding",
                "ServiceAccount",
            ]
        );
    }

    #[tokio::test]
    async fn a_child_is_skipped_only_while_manifest_and_metadata_are_as_applied() {
        let cm = resources::config_map();
        let object = |version: &str| Meta {
            types: None,
            metadata: meta(None, version),
            _phantom: Default::default(),
        };
        let mut caches = Caches::unwatched();
        let mut writer = caches.synced_metadata(&cm).await;
        writer.apply_watcher_event(&watcher::Event::Apply(object("7")));

        let manifest = serde_json::json!({"data": {"a": "1"}});
        let (ns, name) = ("shop", "shop-routemeter");
        assert!(!caches.unchanged(&cm, ns, name, &manifest), "never applied");
        caches.applied(&cm, ns, name, &manifest, &answer(meta(None, "7")));
        assert!(caches.unchanged(&cm, ns, name, &manifest));
        let other = serde_json::json!({"data": {"a": "2"}});
        assert!(!caches.unchanged(&cm, ns, name, &other), "a new manifest");
        writer.apply_watcher_event(&watcher::Event::Apply(object("8")));
        assert!(!caches.unchanged(&cm, ns, name, &manifest), "edited since");
        assert!(!caches.absent(&cm, ns, name));
        writer.apply_watcher_event(&watcher::Event::Delete(object("8")));
        assert!(caches.absent(&cm, ns, name));
        assert!(!caches.unchanged(&cm, ns, name, &manifest), "deleted since");
    }
}
