//! Spec → children: every object the operator creates for a `MonitoredService`, built
//! as pure functions of their inputs so `routemeter render` and the reconciler produce the
//! very same objects, and tests need no cluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::core::ApiResource;
use serde_json::{Value, json};
use thiserror::Error;

use crate::config::{self, ProxyConfig};
use crate::crd::{self, MonitoredService};
use crate::monitoring;
use crate::proxy_pods::{ADMIN_PORT, ADMIN_PORT_NAME, selector_labels};

use super::convert;

/// Port the proxy accepts traffic on inside its pod.
pub const PROXY_PORT: i32 = 8080;
/// Label of the metrics Service, which the ServiceMonitor selects.
pub const METRICS_LABEL: &str = "routemeter.io/metrics";
/// Where the config ConfigMap is mounted in the proxy pod.
pub const CONFIG_DIR: &str = "/etc/routemeter";
/// Before the proxy gets SIGTERM, its pod sleeps this long (a `preStop` sleep action: the
/// image has no shell) while still serving, so that every node's kube-proxy and every
/// client has stopped sending new connections to it when it closes its listeners.
/// Measured on a node: 273 of 50,645 requests refused in a rollout without it, 0 with it.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// The proxy's grace period after SIGTERM, for the requests in flight.
pub const PROXY_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);
/// Pods get this long to stop, counted from the start of the `preStop` sleep: more than
/// the sleep, the proxy's grace period and pingora's runtime shutdown together (5 + 15 +
/// 1 s), so the kubelet never kills a proxy that is still draining.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;
/// Annotation on the pod template carrying a hash of the settings the proxy reads only at
/// start, so changing them rolls the pods while route changes are hot-reloaded.
pub const RESTART_HASH_ANNOTATION: &str = "routemeter.io/restart-hash";

/// Why children could not be built; the message names the field at fault.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("metadata.namespace: the MonitoredService has no namespace")]
    NoNamespace,
    /// The proxy config the spec implies is invalid; the message names the spec's field.
    #[error("{0}")]
    InvalidConfig(String),
    #[error("spec.proxy.timeouts.{field}: {message}")]
    Timeout {
        field: &'static str,
        message: String,
    },
}

/// What the operator learnt about the target Service.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInfo {
    /// The `host:port` the proxy sends traffic to.
    pub upstream: String,
    /// The port the proxy's Service exposes: the target Service's port, so clients only
    /// change the host name.
    pub service_port: i32,
    /// The Service whose EndpointSlices the proxies follow, and the port traffic goes to
    /// on its endpoints: the target itself, or in takeover mode the headless upstream
    /// Service; `None` when traffic goes through the target's address alone.
    pub slices: Option<(String, i32)>,
    /// In takeover mode, the application's pod selector and container ports (the one
    /// traffic goes to first), which the headless upstream Service follows: the target
    /// Service selects the proxies then.
    pub headless: Option<(BTreeMap<String, String>, Vec<i32>)>,
    /// In takeover mode, the ports the proxies listen on in place of the application.
    pub takeover: Option<TakeoverPorts>,
}

/// The ports the proxies listen on in takeover mode: every target port of the target
/// Service, a named one resolved through the application's pods as kube-proxy does, so
/// that the Service, once pointed at the proxies, finds each of its ports on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeoverPorts {
    /// The number behind `spec.target.port`.
    pub primary: i32,
    /// Every listener: its container port's name (a named target port's, so the Service's
    /// named `targetPort` finds it on the proxy pods) and number, the primary first. Each
    /// forwards to the same port of the application.
    pub listeners: Vec<(Option<String>, i32)>,
    /// Named ports and the numbers they resolved to, kept in the takeover record.
    pub named: BTreeMap<String, i32>,
}

/// Operator-wide settings that shape the children.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Proxy image when the spec names none.
    pub proxy_image: String,
    /// Labels for the ServiceMonitor and PrometheusRule (from `spec.monitoring.labels`, or
    /// those a Prometheus in the cluster selects on).
    pub monitoring_labels: BTreeMap<String, String>,
}

/// One child object and the API it belongs to.
#[derive(Debug, Clone)]
pub struct Child {
    pub resource: ApiResource,
    pub name: String,
    pub manifest: Value,
}

/// Every child, split by what it needs from the cluster.
#[derive(Debug, Clone)]
pub struct Children {
    /// The proxies' identity, one for every MonitoredService in the namespace
    /// ([`identity`]): applied by each, deleted by none.
    pub shared: Vec<Child>,
    /// Always created: ConfigMap, Deployment, Service.
    pub core: Vec<Child>,
    /// Created or deleted as the spec and the target say: the headless upstream Service,
    /// HPA, PDB, dashboard ConfigMap; and, always deleted, the identity of each
    /// MonitoredService's own that versions before the shared one made.
    pub optional: Vec<(ApiResource, String, Option<Value>)>,
    /// Needs the Prometheus Operator CRDs: ServiceMonitor, PrometheusRule.
    pub monitoring: Vec<(ApiResource, String, Option<Value>)>,
}

/// API resources of the children.
pub mod resources {
    use k8s_openapi::api::{
        apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1,
        policy::v1::PodDisruptionBudget,
    };
    use kube::core::{ApiResource, GroupVersionKind};

    pub fn config_map() -> ApiResource {
        ApiResource::erase::<v1::ConfigMap>(&())
    }
    pub fn service() -> ApiResource {
        ApiResource::erase::<v1::Service>(&())
    }
    pub fn deployment() -> ApiResource {
        ApiResource::erase::<Deployment>(&())
    }
    pub fn hpa() -> ApiResource {
        ApiResource::erase::<HorizontalPodAutoscaler>(&())
    }
    pub fn pdb() -> ApiResource {
        ApiResource::erase::<PodDisruptionBudget>(&())
    }
    pub fn service_account() -> ApiResource {
        ApiResource::erase::<v1::ServiceAccount>(&())
    }
    pub fn role() -> ApiResource {
        ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&())
    }
    pub fn role_binding() -> ApiResource {
        ApiResource::erase::<k8s_openapi::api::rbac::v1::RoleBinding>(&())
    }
    fn monitoring(kind: &str, plural: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind),
            plural,
        )
    }
    pub fn service_monitor() -> ApiResource {
        monitoring("ServiceMonitor", "servicemonitors")
    }
    pub fn prometheus_rule() -> ApiResource {
        monitoring("PrometheusRule", "prometheusrules")
    }
    pub fn prometheus() -> ApiResource {
        monitoring("Prometheus", "prometheuses")
    }
}

/// Name of the proxy's ConfigMap, Deployment, Service, HPA, PDB and monitoring objects.
pub fn proxy_name(msvc: &MonitoredService) -> String {
    format!("{}-routemeter", msvc.name_any())
}

/// Name of the Service exposing the proxies' admin port to Prometheus, apart from the
/// Service clients call.
pub fn metrics_name(msvc: &MonitoredService) -> String {
    format!("{}-routemeter-metrics", msvc.name_any())
}

/// Name of the headless Service that follows the target's pods.
pub fn upstream_name(msvc: &MonitoredService) -> String {
    format!("{}-routemeter-upstream", msvc.name_any())
}

/// Name of the dashboard ConfigMap.
pub fn dashboard_name(msvc: &MonitoredService) -> String {
    format!("{}-routemeter-dashboard", msvc.name_any())
}

fn labels(msvc: &MonitoredService) -> BTreeMap<String, String> {
    let mut l = selector_labels(msvc);
    l.insert("app.kubernetes.io/managed-by".into(), "routemeter".into());
    l.insert("app.kubernetes.io/component".into(), "proxy".into());
    l
}

/// A child's metadata. The owner reference (the garbage collector deletes children with
/// their MonitoredService) needs the owner's `uid`, which only an object read from the
/// API server has: `routemeter render` works on files, so its objects have none, and
/// apply as printed (an owner reference with an empty `uid` is rejected).
fn metadata(msvc: &MonitoredService, name: &str, extra: &BTreeMap<String, String>) -> Value {
    let mut all = labels(msvc);
    all.extend(extra.clone());
    let mut meta = json!({ "name": name, "namespace": msvc.namespace(), "labels": all });
    if let Some(uid) = msvc.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
        meta["ownerReferences"] = json!([{
            "apiVersion": "routemeter.io/v1alpha1",
            "kind": "MonitoredService",
            "name": msvc.name_any(),
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
    }
    meta
}

fn manifest(resource: &ApiResource, meta: Value, body: Value) -> Value {
    let mut m =
        json!({ "apiVersion": resource.api_version, "kind": resource.kind, "metadata": meta });
    if let (Some(m), Value::Object(b)) = (m.as_object_mut(), body) {
        m.extend(b);
    }
    m
}

/// The proxy config the operator writes for a MonitoredService.
pub fn proxy_config(
    msvc: &MonitoredService,
    target: &TargetInfo,
) -> Result<ProxyConfig, BuildError> {
    let spec = &msvc.spec;
    let mut c = ProxyConfig::new(
        vec![target.upstream.clone()],
        spec.routes.iter().map(convert::route).collect(),
    );
    match &target.takeover {
        Some(t) => {
            c.listen = format!("0.0.0.0:{}", t.primary);
            c.additional_listeners = t
                .listeners
                .iter()
                .filter(|(_, n)| *n != t.primary)
                .map(|(_, n)| format!("0.0.0.0:{n}"))
                .collect();
        }
        None => c.listen = format!("0.0.0.0:{PROXY_PORT}"),
    }
    c.admin = format!("0.0.0.0:{ADMIN_PORT}");
    if let Some(auto) = &spec.auto_template {
        c.auto_template = convert::auto_template(auto);
    }
    // The proxies follow the ready endpoints of the target (or, taken over, of the
    // headless upstream Service) from its EndpointSlices; its DNS name stays the fallback.
    if let Some((service, port)) = &target.slices
        && let Ok(port) = u16::try_from(*port)
    {
        c.upstream.endpoint_slices = Some(config::EndpointSlices {
            namespace: msvc.namespace().unwrap_or_default(),
            service: service.clone(),
            port,
        });
    }
    if let Some(policy) = spec.proxy.load_balancing {
        c.upstream.load_balancing = convert::load_balancing(policy);
    }
    if let Some(forwarding) = &spec.proxy.forwarding {
        c.forwarding = convert::forwarding(forwarding);
    }
    if let Some(t) = &spec.proxy.timeouts {
        for (field, value, slot) in [
            ("connect", &t.connect, &mut c.timeouts.connect),
            ("read", &t.read, &mut c.timeouts.read),
            ("idle", &t.idle, &mut c.timeouts.idle),
        ] {
            if let Some(v) = value {
                *slot = humantime::parse_duration(v).map_err(|e| BuildError::Timeout {
                    field,
                    message: format!("{v:?}: {e}"),
                })?;
            }
        }
    }
    c.server.grace_period = PROXY_GRACE_PERIOD;
    c.server.workers = proxy_workers(&spec.proxy);
    c.metrics.latency_thresholds = monitoring::latency_thresholds(&spec.monitoring, &spec.routes);
    if let Some(objective) = convert::seconds(spec.monitoring.slo.latency_threshold_seconds) {
        c.summary.latency_objective = objective;
    }
    c.validate()
        .map_err(|e| BuildError::InvalidConfig(spec_error(&e)))?;
    Ok(c)
}

/// A proxy config error as the MonitoredService's field at fault: the config's
/// `timeouts.connect` is the spec's `spec.proxy.timeouts.connect`, its `routes[2].path`
/// the spec's `spec.routes[2].path`.
fn spec_error(e: &config::ConfigError) -> String {
    /// Config field prefix → the spec field it is built from; the rest are the same.
    const FROM: &[(&str, &str)] = &[
        ("timeouts.", "proxy.timeouts."),
        ("forwarding.", "proxy.forwarding."),
        ("upstream.loadBalancing", "proxy.loadBalancing"),
        ("server.workers", "proxy.workers"),
        (
            "summary.latencyObjective",
            "monitoring.slo.latencyThresholdSeconds",
        ),
        (
            "metrics.latencyThresholds",
            "monitoring.slo.latencyThresholdSeconds",
        ),
    ];
    match e {
        config::ConfigError::Invalid { field, message } => {
            let field = FROM
                .iter()
                .find_map(|(from, to)| field.strip_prefix(from).map(|rest| format!("{to}{rest}")))
                .unwrap_or_else(|| field.clone());
            format!("spec.{field}: {message}")
        }
        other => format!("spec.{other}"),
    }
}

/// The name of the proxies' ServiceAccount, Role and RoleBinding in each namespace.
pub const PROXY_IDENTITY: &str = "routemeter-proxy";

/// The MonitoredService the namespace's shared children ([`identity`]) name as their
/// owner: the oldest one there that is not being deleted (by creation time, then name),
/// so every reconcile in the namespace builds the same owner, and it changes only when
/// that one goes. `None` when `msvcs` holds none in `ns`.
pub fn anchor<'a>(
    msvcs: impl IntoIterator<Item = &'a MonitoredService>,
    ns: &str,
) -> Option<&'a MonitoredService> {
    msvcs
        .into_iter()
        .filter(|m| m.metadata.namespace.as_deref() == Some(ns))
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .min_by(|a, b| {
            let created = |m: &MonitoredService| m.metadata.creation_timestamp.clone();
            created(a)
                .cmp(&created(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })
}

/// The proxies' identity, one per namespace for every MonitoredService there: a
/// ServiceAccount, and a Role and RoleBinding giving it read access to EndpointSlices in
/// the namespace, the only API the proxies call. RBAC cannot narrow that to one Service's
/// slices (their names are generated; the proxy's label selector does), so an identity per
/// MonitoredService would grant nothing less, and cost the API server three objects (and
/// the RBAC checks of writing them) for each.
///
/// Owned by `anchor` ([`anchor`]), not as its controller and without blocking its
/// deletion: when the last MonitoredService in the namespace goes, the garbage collector
/// deletes the identity; when only the anchor goes, the others' reconciles (an identity
/// deleted, or its owner changed, triggers every MonitoredService in its namespace) name
/// the next oldest.
pub fn identity(ns: &str, anchor: &MonitoredService) -> Vec<Child> {
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "routemeter".to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "proxy-identity".to_string(),
        ),
    ]);
    let mut meta = json!({ "name": PROXY_IDENTITY, "namespace": ns, "labels": labels });
    if let Some(uid) = anchor.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
        meta["ownerReferences"] = json!([{
            "apiVersion": "routemeter.io/v1alpha1",
            "kind": "MonitoredService",
            "name": anchor.name_any(),
            "uid": uid,
        }]);
    }
    let child = |resource: ApiResource, body: Value| Child {
        name: PROXY_IDENTITY.to_string(),
        manifest: manifest(&resource, meta.clone(), body),
        resource,
    };
    vec![
        child(
            resources::service_account(),
            json!({ "automountServiceAccountToken": false }),
        ),
        child(
            resources::role(),
            json!({ "rules": [{
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["get", "list", "watch"],
            }] }),
        ),
        child(
            resources::role_binding(),
            json!({
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PROXY_IDENTITY },
                "subjects": [{ "kind": "ServiceAccount", "name": PROXY_IDENTITY, "namespace": ns }],
            }),
        ),
    ]
}

/// Every child of a MonitoredService.
///
/// `anchor` is the MonitoredService the namespace's shared children name as their owner
/// ([`anchor`]; `msvc` itself when it is alone).
pub fn build(
    msvc: &MonitoredService,
    anchor: &MonitoredService,
    target: &TargetInfo,
    settings: &Settings,
) -> Result<Children, BuildError> {
    let ns = msvc.namespace().ok_or(BuildError::NoNamespace)?;
    let spec = &msvc.spec;
    let name = proxy_name(msvc);
    let none = BTreeMap::new();
    let config = proxy_config(msvc, target)?;
    let config_yaml = config
        .to_yaml()
        .map_err(|e| BuildError::InvalidConfig(e.to_string()))?;

    let mut core = Vec::new();
    let cm = resources::config_map();
    core.push(Child {
        name: name.clone(),
        manifest: manifest(
            &cm,
            metadata(msvc, &name, &none),
            json!({ "data": { "config.yaml": config_yaml } }),
        ),
        resource: cm,
    });
    core.push(deployment(msvc, &name, &config, settings, target));
    let svc = resources::service();
    let traffic_port = target
        .takeover
        .as_ref()
        .map_or(json!("http"), |t| json!(t.primary));
    core.push(Child {
        name: name.clone(),
        manifest: manifest(
            &svc,
            metadata(msvc, &name, &none),
            json!({ "spec": {
                "type": "ClusterIP",
                "selector": selector_labels(msvc),
                "ports": [
                    { "name": "http", "port": target.service_port, "targetPort": traffic_port, "protocol": "TCP" },
                ],
            }}),
        ),
        resource: svc.clone(),
    });
    // The admin port (/metrics, /config, /api) is not on the Service clients call: a
    // Service of its own, which the ServiceMonitor selects by its label. Headless:
    // Prometheus scrapes each pod from the Service's endpoints and `kubectl port-forward`
    // picks a pod, so a cluster IP would serve no one, and each one costs the API server
    // an allocation (serialised, and the slowest write of 1,000 MonitoredServices created
    // at once) and every node's kube-proxy its rules.
    let metrics_labels = BTreeMap::from([(METRICS_LABEL.to_string(), "true".to_string())]);
    core.push(Child {
        name: metrics_name(msvc),
        manifest: manifest(
            &svc,
            metadata(msvc, &metrics_name(msvc), &metrics_labels),
            json!({ "spec": {
                "clusterIP": "None",
                "selector": selector_labels(msvc),
                "ports": [
                    { "name": "admin", "port": ADMIN_PORT, "targetPort": ADMIN_PORT_NAME, "protocol": "TCP" },
                ],
            }}),
        ),
        resource: svc.clone(),
    });
    // The headless Service exists only in takeover mode (the target Service selects the
    // proxies then); otherwise it is deleted, and the proxies follow the target's own
    // EndpointSlices.
    let upstream_manifest =
        target.headless.as_ref().map(|(selector, ports)| {
            let ports: Vec<Value> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let port_name = if i == 0 { "http".to_string() } else { format!("port-{port}") };
                json!({ "name": port_name, "port": port, "targetPort": port, "protocol": "TCP" })
            })
            .collect();
            manifest(
                &svc,
                metadata(msvc, &upstream_name(msvc), &none),
                json!({ "spec": {
                    "clusterIP": "None",
                    "selector": selector,
                    "publishNotReadyAddresses": false,
                    "ports": ports,
                }}),
            )
        });

    let scaling = &spec.scaling;
    let hpa = resources::hpa();
    let hpa_manifest = scaling.enabled.then(|| {
        manifest(
            &hpa,
            metadata(msvc, &name, &none),
            json!({ "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name },
                "minReplicas": scaling.min_replicas,
                "maxReplicas": scaling.max_replicas,
                "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": scaling.target_cpu_utilization_percentage } } }],
            }}),
        )
    });
    let pdb = resources::pdb();
    let pdb_manifest = (scaling.pod_disruption_budget && min_replicas(msvc) >= 2).then(|| {
        manifest(
            &pdb,
            metadata(msvc, &name, &none),
            json!({ "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector_labels(msvc) } } }),
        )
    });
    let dashboard_cm = resources::config_map();
    let dashboard = spec.monitoring.dashboard.enabled.then(|| {
        let dash = monitoring::dashboard::for_service(
            &ns,
            &msvc.name_any(),
            &spec.monitoring,
            &spec.routes,
        );
        manifest(
            &dashboard_cm,
            metadata(
                msvc,
                &dashboard_name(msvc),
                &spec.monitoring.dashboard.labels,
            ),
            json!({ "data": { format!("{}.json", dashboard_name(msvc)): dash.to_string() } }),
        )
    });
    let optional = vec![
        (svc, upstream_name(msvc), upstream_manifest),
        // The identity of its own that each MonitoredService had before the shared one.
        (resources::role_binding(), name.clone(), None),
        (resources::role(), name.clone(), None),
        (resources::service_account(), name.clone(), None),
        (hpa, name.clone(), hpa_manifest),
        (pdb, name.clone(), pdb_manifest),
        (dashboard_cm, dashboard_name(msvc), dashboard),
    ];

    let sm = resources::service_monitor();
    let mut sm_selector = selector_labels(msvc);
    sm_selector.extend(metrics_labels);
    let sm_manifest = spec.monitoring.service_monitor.enabled.then(|| {
        manifest(
            &sm,
            metadata(msvc, &name, &settings.monitoring_labels),
            json!({ "spec": {
                "selector": { "matchLabels": sm_selector },
                "namespaceSelector": { "matchNames": [ns] },
                "endpoints": [{
                    "port": "admin",
                    "path": "/metrics",
                    "interval": spec.monitoring.service_monitor.interval,
                    "relabelings": [{ "action": "replace", "targetLabel": "monitored_service", "replacement": msvc.name_any() }],
                }],
            }}),
        )
    });
    let rule = resources::prometheus_rule();
    let groups = monitoring::rules::groups(&ns, &msvc.name_any(), &spec.monitoring, &spec.routes);
    let rule_manifest = Some(manifest(
        &rule,
        metadata(msvc, &name, &settings.monitoring_labels),
        json!({ "spec": { "groups": groups } }),
    ));
    let monitoring = vec![(sm, name.clone(), sm_manifest), (rule, name, rule_manifest)];

    Ok(Children {
        shared: identity(&ns, anchor),
        core,
        optional,
        monitoring,
    })
}

fn min_replicas(msvc: &MonitoredService) -> i32 {
    if msvc.spec.scaling.enabled {
        msvc.spec.scaling.min_replicas
    } else {
        msvc.spec.proxy.replicas.unwrap_or(2)
    }
}

/// Hash of the settings the proxy reads only at start: a digest of their JSON form, so the
/// same settings give the same hash whatever Rust version built the operator (an operator
/// upgrade must not roll every proxy for nothing).
fn restart_hash(config: &ProxyConfig) -> String {
    use blake2::{Blake2s256, Digest};
    let mut settings = json!({
        "listen": config.listen,
        "admin": config.admin,
        "metrics": config.metrics,
        "server": config.server,
    });
    // Only when set, so proxies without them keep their hash across the upgrade that
    // brought the setting.
    if !config.additional_listeners.is_empty() {
        settings["additionalListeners"] = json!(config.additional_listeners);
    }
    Blake2s256::digest(settings.to_string().as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn deployment(
    msvc: &MonitoredService,
    name: &str,
    config: &ProxyConfig,
    settings: &Settings,
    target: &TargetInfo,
) -> Child {
    let spec = &msvc.spec;
    let resource = resources::deployment();
    let image = spec
        .proxy
        .image
        .clone()
        .unwrap_or_else(|| settings.proxy_image.clone());
    let resources = spec
        .proxy
        .resources
        .clone()
        .map_or_else(default_resources, |r| {
            serde_json::to_value(r).unwrap_or_else(|_| default_resources())
        });
    let probe = |path: &str, period: i32| json!({ "httpGet": { "path": path, "port": ADMIN_PORT_NAME }, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3 });
    // In takeover mode the proxies listen where the application did, under the names its
    // Service's named target ports look for.
    let mut ports: Vec<Value> = match &target.takeover {
        Some(t) => t
            .listeners
            .iter()
            .map(|(port_name, number)| match port_name {
                Some(n) => json!({ "name": n, "containerPort": number, "protocol": "TCP" }),
                None => json!({ "containerPort": number, "protocol": "TCP" }),
            })
            .collect(),
        None => vec![json!({ "name": "http", "containerPort": PROXY_PORT, "protocol": "TCP" })],
    };
    ports.push(json!({ "name": ADMIN_PORT_NAME, "containerPort": ADMIN_PORT, "protocol": "TCP" }));
    let mut pod_security = json!({
        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    // An application on a port below 1024 (say 80): the proxy runs without privileges,
    // and the namespaced sysctl lets it bind there (a safe sysctl, allowed by default).
    if let Some(lowest) = target
        .takeover
        .as_ref()
        .and_then(|t| t.listeners.iter().map(|(_, n)| *n).min())
        .filter(|n| *n < 1024)
    {
        pod_security["sysctls"] =
            json!([{ "name": "net.ipv4.ip_unprivileged_port_start", "value": lowest.to_string() }]);
    }
    let mut deployment_spec = json!({
        "selector": { "matchLabels": selector_labels(msvc) },
        "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
        "template": {
            "metadata": {
                "labels": labels(msvc),
                "annotations": { RESTART_HASH_ANNOTATION: restart_hash(config) },
            },
            "spec": {
                "serviceAccountName": PROXY_IDENTITY,
                // The token only where it is used: the proxies watch EndpointSlices.
                "automountServiceAccountToken": config.upstream.endpoint_slices.is_some(),
                "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                "securityContext": pod_security,
                "topologySpreadConstraints": [{
                    "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": { "matchLabels": selector_labels(msvc) },
                }],
                // Replicas on different nodes when there are nodes enough: a node lost
                // takes one proxy, not all of them.
                "affinity": { "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": { "matchLabels": selector_labels(msvc) },
                    },
                }] } },
                "containers": [{
                    "name": "proxy",
                    "image": image,
                    // Versioned (or digest-pinned) images never change under a tag, and
                    // images loaded into a node without a registry must not be pulled.
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["proxy", "--config", format!("{CONFIG_DIR}/config.yaml")],
                    "env": [{ "name": "ROUTEMETER_LOG_FORMAT", "value": "json" }],
                    "ports": ports,
                    "readinessProbe": probe("/readyz", 5),
                    "livenessProbe": probe("/healthz", 10),
                    "lifecycle": { "preStop": { "sleep": { "seconds": PRE_STOP_SLEEP_SECONDS } } },
                    "resources": resources,
                    "securityContext": {
                        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                        "privileged": false, "capabilities": { "drop": ["ALL"] },
                    },
                    "volumeMounts": [{ "name": "config", "mountPath": CONFIG_DIR, "readOnly": true }],
                }],
                "volumes": [{ "name": "config", "configMap": { "name": name } }],
            },
        },
    });
    // With autoscaling on, the HPA owns `replicas`: leaving it out of the applied object
    // keeps the operator from fighting the autoscaler.
    if !spec.scaling.enabled {
        deployment_spec["replicas"] = json!(spec.proxy.replicas.unwrap_or(2));
    }
    Child {
        name: name.to_string(),
        manifest: manifest(
            &resource,
            metadata(msvc, name, &BTreeMap::new()),
            json!({ "spec": deployment_spec }),
        ),
        resource,
    }
}

/// Most workers the operator gives a proxy from its CPU resources.
pub const MAX_WORKERS: u16 = 64;

/// Worker threads of each proxy: `spec.proxy.workers`, else its CPU limit rounded up,
/// else its CPU request rounded up, between 1 and [`MAX_WORKERS`]. The proxy's own default
/// (the CPUs it may use, from its cgroup's CPU quota) would be the node's CPU count in a
/// pod with no CPU limit, as the default resources have, and every worker costs memory.
pub fn proxy_workers(proxy: &crd::ProxySpec) -> usize {
    if let Some(n) = proxy.workers {
        return usize::from(n.clamp(1, MAX_WORKERS));
    }
    let resources = proxy.resources.as_ref();
    let cpu = |list: Option<&BTreeMap<String, Quantity>>| {
        list.and_then(|l| l.get("cpu"))
            .and_then(|q| cpu_cores(&q.0))
    };
    let cores = cpu(resources.and_then(|r| r.limits.as_ref()))
        .or_else(|| cpu(resources.and_then(|r| r.requests.as_ref())))
        .unwrap_or(0.0);
    // In range, so the cast neither truncates nor wraps.
    cores.ceil().clamp(1.0, f64::from(MAX_WORKERS)) as usize
}

/// A CPU quantity in cores: `2`, `1.5`, `500m`, `250000u`, `100000000n`; `None` for
/// anything else (the API server's own check on the pod reports it then).
fn cpu_cores(quantity: &str) -> Option<f64> {
    let (number, scale) = match quantity.trim() {
        q if q.ends_with('m') => (&q[..q.len() - 1], 1e-3),
        q if q.ends_with('u') => (&q[..q.len() - 1], 1e-6),
        q if q.ends_with('n') => (&q[..q.len() - 1], 1e-9),
        q => (q, 1.0),
    };
    let cores = number.parse::<f64>().ok()? * scale;
    (cores.is_finite() && cores >= 0.0).then_some(cores)
}

/// The proxy container's resources when the spec sets none. No CPU limit: a CFS quota
/// throttles a proxy in bursts, which shows as tail latency on every request it meters.
/// The proxy writes no file; its ephemeral storage is its log, which the kubelet rotates
/// (by default 5 files of 10 MiB), hence the limit.
fn default_resources() -> Value {
    json!({
        "requests": { "cpu": "50m", "memory": "64Mi", "ephemeral-storage": "64Mi" },
        "limits": { "memory": "256Mi", "ephemeral-storage": "128Mi" },
    })
}

/// The cluster's DNS domain when the operator is told none.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// The fully qualified name of Service `name` in `namespace`, with a final dot: one DNS
/// query, no search list. It matters for the headless upstream Service: while none of the
/// target's pods is ready its name has no address, and the proxy must learn that as a
/// plain NXDOMAIN to answer 503 at once. A short name (`x.ns.svc`) would go through the
/// pod's search list and end with the name as given, outside the cluster zone, which a
/// CoreDNS without a forwarder refuses: glibc reports that as a temporary failure, and the
/// proxy would keep sending to the pods that are gone.
pub fn service_host(name: &str, namespace: &str, cluster_domain: &str) -> String {
    format!(
        "{name}.{namespace}.svc.{}.",
        cluster_domain.trim_end_matches('.')
    )
}

/// Resolves where the proxy sends traffic, from the target Service.
///
/// When the target selects pods and names a numeric target port, the proxies follow its
/// ready endpoints from its own EndpointSlices, at that port, and its address is the
/// fallback; otherwise (no selector, a named target port, an ExternalName) traffic goes
/// through the target Service's own address. In-cluster names are fully qualified in
/// `cluster_domain` (see [`service_host`]).
pub fn target_info(
    msvc: &MonitoredService,
    target: &k8s_openapi::api::core::v1::Service,
    cluster_domain: &str,
) -> Result<TargetInfo, String> {
    let namespace = msvc.namespace().unwrap_or_default();
    let port = &msvc.spec.target.port;
    let spec = target.spec.clone().unwrap_or_default();
    let name = target.metadata.name.clone().unwrap_or_default();
    let ports = spec.ports.unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        // An ExternalName Service is a DNS alias: it usually lists no port, and clients
        // connect to the name on whatever port they use. A listed port (by number or
        // name) is taken from the list; an unlisted number is used as it is.
        let service_port = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(s) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.port)
                .ok_or_else(|| {
                    format!(
                        "spec.target.port: ExternalName Service {name} has no port named {s:?}: give the port number"
                    )
                })?,
        };
        // The alias names a fully qualified host: a trailing dot keeps the resolver
        // from trying it under each search domain first.
        let host = spec.external_name.unwrap_or_default();
        let host = host.trim_end_matches('.');
        return Ok(TargetInfo {
            upstream: format!("{host}.:{service_port}"),
            service_port,
            slices: None,
            headless: None,
            takeover: None,
        });
    }
    let entry = ports
        .iter()
        .find(|p| match port {
            IntOrString::Int(n) => p.port == *n,
            IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
        })
        .ok_or_else(|| {
            let have: Vec<String> = ports
                .iter()
                .map(|p| format!("{}/{}", p.name.clone().unwrap_or_default(), p.port))
                .collect();
            format!("spec.target.port: Service {name} has no port {port:?} (it has {have:?})")
        })?;
    let container_port = match &entry.target_port {
        None => Some(entry.port),
        Some(IntOrString::Int(n)) => Some(*n),
        // A named container port is only known per pod: go through the ClusterIP.
        Some(IntOrString::String(_)) => None,
    };
    let follows = spec.selector.is_some_and(|s| !s.is_empty());
    Ok(TargetInfo {
        upstream: format!(
            "{}:{}",
            service_host(&name, &namespace, cluster_domain),
            entry.port
        ),
        service_port: entry.port,
        slices: container_port
            .filter(|_| follows)
            .map(|cport| (name.clone(), cport)),
        headless: None,
        takeover: None,
    })
}

/// Where the proxy sends traffic in takeover mode: the headless upstream Service with the
/// target's original `selector`, on every port the proxies listen on; the proxy's own
/// Service keeps the target's port number.
pub fn takeover_target_info(
    msvc: &MonitoredService,
    target: &k8s_openapi::api::core::v1::Service,
    selector: BTreeMap<String, String>,
    ports: TakeoverPorts,
    cluster_domain: &str,
) -> TargetInfo {
    let namespace = msvc.namespace().unwrap_or_default();
    let wanted = &msvc.spec.target.port;
    let service_port = target
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| match wanted {
            IntOrString::Int(n) => p.port == *n,
            IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
        })
        .map_or(ports.primary, |p| p.port);
    TargetInfo {
        upstream: format!(
            "{}:{}",
            service_host(&upstream_name(msvc), &namespace, cluster_domain),
            ports.primary
        ),
        service_port,
        slices: Some((upstream_name(msvc), ports.primary)),
        headless: Some((selector, ports.listeners.iter().map(|(_, n)| *n).collect())),
        takeover: Some(ports),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Route;
    use k8s_openapi::api::apps::v1::Deployment;

    fn msvc(uid: Option<&str>) -> MonitoredService {
        let mut m: MonitoredService = serde_json::from_value(json!({
            "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService",
            "metadata": { "name": "shop", "namespace": "apps" },
            "spec": { "target": { "service": "shop", "port": 80 } },
        }))
        .expect("a MonitoredService");
        m.metadata.uid = uid.map(String::from);
        m
    }

    /// A target of one endpoint, with no EndpointSlices followed nor takeover.
    fn plain_target() -> TargetInfo {
        TargetInfo {
            upstream: "a:1".into(),
            service_port: 80,
            slices: None,
            headless: None,
            takeover: None,
        }
    }

    fn built(msvc: &MonitoredService) -> Children {
        built_with(msvc, msvc)
    }

    fn built_with(msvc: &MonitoredService, anchor: &MonitoredService) -> Children {
        let target = TargetInfo {
            upstream: "shop.apps.svc.cluster.local.:80".into(),
            service_port: 80,
            slices: Some(("shop".into(), 8080)),
            headless: None,
            takeover: None,
        };
        let settings = Settings {
            proxy_image: "routemeter/routemeter:test".into(),
            monitoring_labels: BTreeMap::new(),
        };
        build(msvc, anchor, &target, &settings).expect("children")
    }

    fn deployment_of(c: &Children) -> &Value {
        &c.core
            .iter()
            .find(|c| c.manifest["kind"] == "Deployment")
            .expect("a Deployment")
            .manifest
    }

    fn every_manifest(c: &Children) -> Vec<&Value> {
        c.shared
            .iter()
            .chain(&c.core)
            .map(|c| &c.manifest)
            .chain(c.optional.iter().filter_map(|(_, _, m)| m.as_ref()))
            .chain(c.monitoring.iter().filter_map(|(_, _, m)| m.as_ref()))
            .collect()
    }

    /// Each spec the schema lets through but the proxy config refuses is named by its own
    /// field of the spec, never the proxy config's.
    #[test]
    fn config_errors_name_the_spec_field() {
        let cases = [
            (
                json!({ "proxy": { "timeouts": { "connect": "0s" } } }),
                "spec.proxy.timeouts.connect: must be greater than zero",
            ),
            (
                json!({ "proxy": { "timeouts": { "idle": "0ms" } } }),
                "spec.proxy.timeouts.idle: ",
            ),
            (
                json!({ "routes": [{ "path": "/a" }, { "path": "/b/*/c" }] }),
                "spec.routes[1].path ",
            ),
            (
                json!({ "routes": [{ "path": "/a/{id}" }, { "path": "/a/{x}" }] }),
                "spec.routes[1] ",
            ),
            (
                json!({ "autoTemplate": { "maxRoutes": 0 } }),
                "spec.autoTemplate.maxRoutes: must be at least 1",
            ),
        ];
        for (spec, want) in cases {
            let mut m = msvc(None);
            let mut value = serde_json::to_value(&m.spec).expect("spec");
            for (k, v) in spec.as_object().expect("an object") {
                value[k] = v.clone();
            }
            m.spec = serde_json::from_value(value).expect("a spec");
            match proxy_config(&m, &plain_target()) {
                Err(e) => assert!(e.to_string().starts_with(want), "{spec}: {e}"),
                Ok(_) => panic!("{spec}: accepted"),
            }
        }
    }

    fn service(spec: Value) -> k8s_openapi::api::core::v1::Service {
        serde_json::from_value(
            json!({ "metadata": { "name": "shop", "namespace": "apps" }, "spec": spec }),
        )
        .expect("a Service")
    }

    #[test]
    fn in_cluster_upstreams_are_fully_qualified_names() {
        let m = msvc(None);
        let followed = target_info(
            &m,
            &service(json!({ "selector": { "app": "shop" }, "ports": [{ "port": 80, "targetPort": 8080 }] })),
            "cluster.local",
        )
        .expect("usable");
        // The proxies follow the target's own EndpointSlices at its numeric target port;
        // its address is the fallback. No Service of their own for it.
        assert_eq!(followed.upstream, "shop.apps.svc.cluster.local.:80");
        assert_eq!(followed.slices, Some(("shop".into(), 8080)));
        assert!(followed.headless.is_none());
        let config = proxy_config(&m, &followed).expect("valid");
        assert_eq!(
            config.upstream.endpoint_slices,
            Some(config::EndpointSlices {
                namespace: "apps".into(),
                service: "shop".into(),
                port: 8080
            })
        );
        assert_eq!(
            config.upstream.endpoints,
            ["shop.apps.svc.cluster.local.:80"]
        );
        let named = target_info(
            &m,
            &service(json!({ "selector": { "app": "shop" }, "ports": [{ "port": 80, "targetPort": "http" }] })),
            "corp.example.",
        )
        .expect("usable");
        assert_eq!(named.upstream, "shop.apps.svc.corp.example.:80");
        assert!(
            named.slices.is_none() && named.headless.is_none(),
            "a named targetPort goes through the ClusterIP"
        );
        let unselected = target_info(
            &m,
            &service(json!({ "ports": [{ "port": 80, "targetPort": 8080 }] })),
            "cluster.local",
        )
        .expect("usable");
        assert!(
            unselected.slices.is_none(),
            "no selector: its address alone"
        );
        let external = target_info(
            &m,
            &service(json!({ "type": "ExternalName", "externalName": "api.example.com", "ports": [{ "port": 80 }] })),
            "cluster.local",
        )
        .expect("usable");
        assert_eq!(
            external.upstream, "api.example.com.:80",
            "the user's name, fully qualified"
        );
        // An ExternalName usually lists no port: the number is used as it is; a name
        // cannot be resolved and is refused, naming the field.
        let portless = target_info(
            &m,
            &service(json!({ "type": "ExternalName", "externalName": "api.example.com." })),
            "cluster.local",
        )
        .expect("usable without ports");
        assert_eq!(portless.upstream, "api.example.com.:80");
        let mut by_name = m.clone();
        by_name.spec.target.port = IntOrString::String("http".into());
        let error = target_info(
            &by_name,
            &service(json!({ "type": "ExternalName", "externalName": "api.example.com" })),
            "cluster.local",
        )
        .expect_err("a port name an ExternalName does not list");
        assert!(error.starts_with("spec.target.port:"), "{error}");
        // Every one is a valid proxy endpoint.
        for t in [followed, named, unselected, external, portless] {
            crate::config::split_host_port(&t.upstream).expect("host:port");
        }
    }

    #[test]
    fn the_score_holds_routes_to_their_slo_thresholds() {
        let m: MonitoredService = serde_json::from_value(json!({
            "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService",
            "metadata": { "name": "shop", "namespace": "apps" },
            "spec": {
                "target": { "service": "shop", "port": 80 },
                "routes": [
                    { "path": "/search", "slo": { "latencyThresholdSeconds": 2 } },
                    { "path": "/users/{id}" },
                ],
                "monitoring": { "slo": { "latencyThresholdSeconds": 0.3 } },
            },
        }))
        .expect("a MonitoredService");
        let target = TargetInfo {
            upstream: "shop:80".into(),
            service_port: 80,
            slices: None,
            headless: None,
            takeover: None,
        };
        let c = proxy_config(&m, &target).expect("valid");
        assert_eq!(
            c.summary.latency_objective,
            std::time::Duration::from_millis(300)
        );
        let objectives: Vec<_> = c.routes.iter().map(|r| r.latency_objective).collect();
        assert_eq!(
            objectives,
            [Some(std::time::Duration::from_secs(2)), None],
            "a route's own threshold, else the service's"
        );
        assert_eq!(
            proxy_config(&msvc(None), &target)
                .expect("valid")
                .summary
                .latency_objective,
            std::time::Duration::from_millis(500),
            "the SLO's default threshold"
        );
    }

    #[test]
    fn proxy_settings_reach_the_proxy_config_and_default_to_the_proxys() {
        let defaults = proxy_config(&msvc(None), &plain_target()).expect("valid");
        assert_eq!(defaults.auto_template, config::AutoTemplate::default());
        assert_eq!(defaults.forwarding, config::Forwarding::default());
        assert_eq!(
            defaults.upstream.load_balancing,
            config::LoadBalancing::default()
        );
        let mut m = msvc(None);
        m.spec.auto_template =
            Some(serde_json::from_value(json!({ "maxRoutes": 5 })).expect("auto"));
        m.spec.proxy = serde_json::from_value(json!({
            "loadBalancing": "leastRequest",
            "forwarding": { "via": true, "trustedHops": 2 },
        }))
        .expect("proxy");
        let c = proxy_config(&m, &plain_target()).expect("valid");
        assert_eq!(
            c.auto_template,
            config::AutoTemplate {
                enabled: true,
                max_routes: 5
            }
        );
        assert_eq!(
            c.upstream.load_balancing,
            config::LoadBalancing::LeastRequest
        );
        assert_eq!(
            c.forwarding,
            config::Forwarding {
                via: true,
                trusted_hops: 2,
                ..config::Forwarding::default()
            }
        );
    }

    #[test]
    fn pagination_reaches_the_proxy_config_the_dashboard_and_the_rules() {
        let mut m = msvc(Some("u"));
        m.spec.routes = serde_json::from_value(json!([
            { "path": "/items", "methods": ["GET"], "pagination": {} },
            { "path": "/users", "pagination": { "sizeParam": "per_page" } },
        ]))
        .expect("routes");
        let target = TargetInfo {
            upstream: "shop:80".into(),
            service_port: 80,
            slices: None,
            headless: None,
            takeover: None,
        };
        let config = proxy_config(&m, &target).expect("valid");
        assert_eq!(
            config.routes[0].pagination,
            Some(crate::config::Pagination::default())
        );
        assert_eq!(
            config.routes[1]
                .pagination
                .as_ref()
                .and_then(|p| p.size_param.as_deref()),
            Some("per_page")
        );
        let children = built(&m);
        let dashboard = children
            .optional
            .iter()
            .find(|(_, name, _)| *name == dashboard_name(&m))
            .and_then(|(_, _, manifest)| manifest.as_ref())
            .expect("a dashboard");
        assert!(
            dashboard
                .to_string()
                .contains("Latency p95 by offset range")
        );
        let rules = children
            .monitoring
            .iter()
            .filter_map(|(_, _, manifest)| manifest.as_ref())
            .find(|manifest| manifest["kind"] == "PrometheusRule")
            .expect("rules");
        assert!(
            rules
                .to_string()
                .contains("routemeter:pagination_offset_range_requests:rate5m")
        );

        // An invalid name is an invalid spec, naming the field.
        m.spec.routes[1]
            .pagination
            .as_mut()
            .expect("pagination")
            .size_param = Some("page".into());
        let error = proxy_config(&m, &target).expect_err("shares the page's name");
        assert_eq!(
            error.to_string(),
            "spec.routes[1].pagination.sizeParam: \"page\" is also the page parameter"
        );
    }

    #[test]
    fn the_proxies_identity_is_the_namespaces_owned_by_its_oldest_monitored_service() {
        let at = |name: &str, ns: &str, created: &str, uid: &str| {
            let mut m = msvc(Some(uid));
            m.metadata.name = Some(name.into());
            m.metadata.namespace = Some(ns.into());
            m.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    created.parse().expect("a time"),
                ));
            m
        };
        let old = at("zeta", "apps", "2026-01-01T00:00:00Z", "u-old");
        let tie = at("alpha", "apps", "2026-01-01T00:00:00Z", "u-tie");
        let new = at("beta", "apps", "2026-02-01T00:00:00Z", "u-new");
        let elsewhere = at("aaa", "other", "2025-01-01T00:00:00Z", "u-other");
        let all = [old.clone(), tie.clone(), new.clone(), elsewhere.clone()];
        // The oldest in the namespace, the name breaking a tie; another namespace's never.
        assert_eq!(
            anchor(&all, "apps").map(ResourceExt::name_any),
            Some("alpha".into())
        );
        assert_eq!(
            anchor(&all, "other").map(ResourceExt::name_any),
            Some("aaa".into())
        );
        assert!(anchor(&all, "none").is_none());
        // One being deleted is not named: it is going.
        let mut going = tie.clone();
        going.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        let all = [old.clone(), going, new.clone()];
        assert_eq!(
            anchor(&all, "apps").map(ResourceExt::name_any),
            Some("zeta".into())
        );

        // Every MonitoredService in the namespace builds the very same identity.
        let (a, b) = (built_with(&old, &old), built_with(&new, &old));
        let manifests = |c: &Children| {
            c.shared
                .iter()
                .map(|c| c.manifest.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(manifests(&a), manifests(&b));
        let kinds: Vec<_> = a
            .shared
            .iter()
            .map(|c| (c.manifest["kind"].clone(), c.name.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (json!("ServiceAccount"), PROXY_IDENTITY.to_string()),
                (json!("Role"), PROXY_IDENTITY.to_string()),
                (json!("RoleBinding"), PROXY_IDENTITY.to_string()),
            ]
        );
        // Owned, for the garbage collector, but neither controlled nor blocking its
        // owner's deletion.
        for child in &a.shared {
            assert_eq!(
                child.manifest["metadata"]["ownerReferences"],
                json!([{ "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService", "name": "zeta", "uid": "u-old" }]),
            );
            assert_eq!(child.manifest["metadata"]["namespace"], "apps");
        }
        let binding = &a.shared[2].manifest;
        assert_eq!(binding["roleRef"]["name"], PROXY_IDENTITY);
        assert_eq!(
            binding["subjects"],
            json!([{ "kind": "ServiceAccount", "name": PROXY_IDENTITY, "namespace": "apps" }])
        );
        // The identity of its own an earlier version made is deleted.
        let legacy: Vec<_> = b
            .optional
            .iter()
            .filter(|(r, _, _)| {
                ["ServiceAccount", "Role", "RoleBinding"].contains(&r.kind.as_str())
            })
            .map(|(r, n, m)| (r.kind.as_str(), n.as_str(), m.is_none()))
            .collect();
        assert_eq!(
            legacy,
            [
                ("RoleBinding", "beta-routemeter", true),
                ("Role", "beta-routemeter", true),
                ("ServiceAccount", "beta-routemeter", true),
            ]
        );
        assert!(b.core.iter().all(|c| {
            !["ServiceAccount", "Role", "RoleBinding"].contains(&c.resource.kind.as_str())
        }));
    }

    #[test]
    fn owner_references_only_with_the_owner_uid() {
        let with = built(&msvc(Some("0b9f6c8e-1")));
        for m in every_manifest(&with) {
            let owner = &m["metadata"]["ownerReferences"][0];
            assert_eq!(owner["uid"], "0b9f6c8e-1", "{}", m["kind"]);
            // The namespace's shared identity is owned, not controlled.
            let shared = m["metadata"]["name"] == PROXY_IDENTITY;
            assert_eq!(
                owner["controller"],
                if shared { Value::Null } else { json!(true) }
            );
        }
        // Read from a file (render): no uid, so no owner reference rather than an empty one.
        for uid in [None, Some("")] {
            let without = built(&msvc(uid));
            for m in every_manifest(&without) {
                assert!(
                    m["metadata"].get("ownerReferences").is_none(),
                    "{}: {}",
                    m["kind"],
                    m["metadata"]
                );
            }
        }
    }

    #[test]
    fn the_proxy_drains_before_it_stops() {
        let children = built(&msvc(Some("u")));
        let manifest = deployment_of(&children);
        assert_eq!(manifest["kind"], "Deployment");
        let deployment: Deployment =
            serde_json::from_value(manifest.clone()).expect("a valid Deployment");
        let pod = deployment
            .spec
            .and_then(|s| s.template.spec)
            .expect("a pod spec");
        let container = &pod.containers[0];
        let sleep = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .expect("a preStop sleep action (the image has no shell)");
        assert_eq!(sleep.seconds, PRE_STOP_SLEEP_SECONDS);
        assert!(
            container
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .is_some_and(|h| h.exec.is_none())
        );
        // The kubelet's clock starts with the preStop hook: the sleep, the proxy's grace
        // period and pingora's runtime shutdown must all fit, with room to spare.
        let config = proxy_config(&msvc(None), &plain_target()).expect("config");
        let needed = PRE_STOP_SLEEP_SECONDS
            + i64::try_from(crate::proxy::grace_period_seconds(
                config.server.grace_period,
            ))
            .expect("small")
            + i64::try_from(crate::proxy::RUNTIME_SHUTDOWN_TIMEOUT_SECONDS).expect("small");
        let granted = pod.termination_grace_period_seconds.expect("set");
        assert!(granted > needed, "{granted} s granted, {needed} s needed");
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let resources = container.resources.as_ref().expect("resources");
        let limits = resources.limits.as_ref().expect("limits");
        assert!(limits.contains_key("memory") && limits.contains_key("ephemeral-storage"));
        assert!(
            !limits.contains_key("cpu"),
            "no CPU limit: it would throttle the proxy"
        );
    }

    #[test]
    fn takeover_listens_where_the_application_did_and_keeps_admin_off_client_services() {
        let m = msvc(Some("u"));
        let target = service(json!({ "selector": { "app": "shop" }, "ports": [
            { "name": "web", "port": 80, "targetPort": "http" },
            { "name": "metrics", "port": 9090, "targetPort": 9090 },
        ] }));
        let ports = TakeoverPorts {
            primary: 8080,
            listeners: vec![(Some("http".into()), 8080), (None, 9090)],
            named: BTreeMap::from([("http".into(), 8080)]),
        };
        let mut by_number = m.clone();
        by_number.spec.target.port = IntOrString::Int(80);
        let info = takeover_target_info(
            &by_number,
            &target,
            BTreeMap::from([("app".into(), "shop".into())]),
            ports,
            "cluster.local",
        );
        assert_eq!(
            info.upstream,
            "shop-routemeter-upstream.apps.svc.cluster.local.:8080"
        );
        assert_eq!(info.service_port, 80);
        let config = proxy_config(&by_number, &info).expect("config");
        assert_eq!(config.listen, "0.0.0.0:8080");
        assert_eq!(config.additional_listeners, ["0.0.0.0:9090"]);
        assert_eq!(
            config.upstream.endpoint_slices,
            Some(config::EndpointSlices {
                namespace: "apps".into(),
                service: "shop-routemeter-upstream".into(),
                port: 8080,
            }),
            "the proxies follow the upstream Service's EndpointSlices"
        );
        let settings = Settings {
            proxy_image: "routemeter/routemeter:test".into(),
            monitoring_labels: BTreeMap::new(),
        };
        let children = build(&by_number, &by_number, &info, &settings).expect("children");
        let deployment: Deployment =
            serde_json::from_value(deployment_of(&children).clone()).expect("a Deployment");
        let container = &deployment
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod")
            .containers[0];
        let ports: Vec<(Option<&str>, i32)> = container
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        let pod = deployment_of(&children)["spec"]["template"]["spec"].clone();
        assert_eq!(pod["serviceAccountName"], PROXY_IDENTITY);
        assert_eq!(
            pod["automountServiceAccountToken"], true,
            "the watch needs the token"
        );
        let role = children
            .shared
            .iter()
            .find(|c| c.manifest["kind"] == "Role")
            .expect("a Role");
        assert_eq!(
            role.manifest["rules"],
            json!([{ "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"] }]),
            "read-only, EndpointSlices only"
        );
        assert_eq!(
            ports,
            [
                (Some("http"), 8080),
                (None, 9090),
                (Some(ADMIN_PORT_NAME), ADMIN_PORT)
            ],
            "the Service's named targetPort finds its port on the proxy pods"
        );
        // The upstream Service follows the application on every port.
        let upstream = children
            .optional
            .iter()
            .find(|(_, n, _)| n == "shop-routemeter-upstream")
            .and_then(|(_, _, m)| m.clone())
            .expect("upstream Service");
        assert_eq!(upstream["spec"]["selector"], json!({ "app": "shop" }));
        let numbers: Vec<&Value> = upstream["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| &p["port"])
            .collect();
        assert_eq!(numbers, [&json!(8080), &json!(9090)]);
        // No client-facing Service carries the admin port; the metrics Service does, and
        // is the one the ServiceMonitor selects.
        let services: Vec<&Value> = children
            .core
            .iter()
            .map(|c| &c.manifest)
            .filter(|m| m["kind"] == "Service")
            .collect();
        for s in &services {
            let has_admin = s["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["port"] == ADMIN_PORT);
            let is_metrics = s["metadata"]["name"] == metrics_name(&m);
            assert_eq!(has_admin, is_metrics, "{}", s["metadata"]["name"]);
            // Scraped pod by pod: no cluster IP to allocate for it.
            if is_metrics {
                assert_eq!(s["spec"]["clusterIP"], "None");
            }
        }
        let sm = children.monitoring[0].2.clone().expect("ServiceMonitor");
        assert_eq!(sm["spec"]["selector"]["matchLabels"][METRICS_LABEL], "true");
        // A port below 1024 is bound through the namespaced sysctl, not a capability.
        let mut low = info.clone();
        if let Some(t) = low.takeover.as_mut() {
            t.listeners.push((None, 80));
        }
        let children = build(&by_number, &by_number, &low, &settings).expect("children");
        let sysctls =
            &deployment_of(&children)["spec"]["template"]["spec"]["securityContext"]["sysctls"];
        assert_eq!(sysctls[0]["name"], "net.ipv4.ip_unprivileged_port_start");
        assert_eq!(sysctls[0]["value"], "80");
    }

    #[test]
    fn workers_follow_the_proxys_cpu_never_the_nodes() {
        let proxy = |extra: Value| -> crd::ProxySpec {
            serde_json::from_value(extra).expect("a proxy spec")
        };
        let cases = [
            (json!({}), 1),
            (json!({ "resources": { "requests": { "cpu": "50m" } } }), 1),
            (json!({ "resources": { "requests": { "cpu": "3" } } }), 3),
            (
                json!({ "resources": { "requests": { "cpu": "500m" }, "limits": { "cpu": "1500m" } } }),
                2,
            ),
            (json!({ "resources": { "limits": { "cpu": "2" } } }), 2),
            (json!({ "resources": { "limits": { "cpu": "0.25" } } }), 1),
            (json!({ "resources": { "limits": { "cpu": "200" } } }), 64),
            (
                json!({ "resources": { "limits": { "cpu": "lots" }, "requests": { "cpu": "2" } } }),
                2,
            ),
            (
                json!({ "workers": 4, "resources": { "limits": { "cpu": "1" } } }),
                4,
            ),
        ];
        for (spec, workers) in cases {
            assert_eq!(proxy_workers(&proxy(spec.clone())), workers, "{spec}");
        }
        // The default resources, as the operator writes them, give one worker.
        let config = proxy_config(&msvc(None), &plain_target()).expect("config");
        assert_eq!(config.server.workers, 1);
        assert_eq!(cpu_cores("250000u"), Some(0.25));
        assert_eq!(cpu_cores("100000000n"), Some(0.1));
        assert_eq!(cpu_cores("-1"), None);
    }

    #[test]
    fn restart_hash_is_stable_and_follows_only_start_settings() {
        let base = ProxyConfig::new(vec!["backend:8080".into()], Vec::new());
        let hash = restart_hash(&base);
        // A fixed value: if it changes, every proxy in every cluster rolls on upgrade.
        assert_eq!(hash, "95110ae75df6e8d1");

        let mut routes = base.clone();
        routes.routes.push(Route {
            path: "/users/{id}".into(),
            methods: Vec::new(),
            name: None,
            latency_objective: None,
            pagination: Some(Default::default()),
        });
        assert_eq!(
            restart_hash(&routes),
            hash,
            "routes are reloaded, not restarted"
        );

        let mut workers = base.clone();
        workers.server.workers = 4;
        assert_ne!(restart_hash(&workers), hash, "workers are read at start");
    }
}
