//! Takeover mode: the target Service itself is pointed at the proxies, so clients change
//! nothing, and given back exactly as it was when routemeter lets go.
//!
//! Every step is one write whose precondition is checked by the API server (a JSON Patch
//! whose `test` operations compare the selector and the record with what the operator
//! read), so an operator killed between two steps leaves the Service in one of the states
//! below, never in between, and a write racing an edit by someone else fails instead of
//! overwriting it:
//!
//! 1. **Recorded**: the annotation [`RECORD_ANNOTATION`] holds the original selector, the
//!    proxies' selector and the named ports resolved at the start; the selector is still
//!    the original one. Written before anything else changes.
//! 2. **Taken over**: the selector is the proxies'; written only once the proxy Deployment
//!    has rolled out its takeover ports and has a ready replica, so the Service always
//!    has endpoints.
//! 3. **Restored**: the original selector back and the record removed, in one write.
//!
//! The record lives on the Service, not in the operator's memory, so it survives restarts;
//! the MonitoredService carries the finalizer [`FINALIZER`] while a record may exist, so
//! it cannot disappear before the Service is restored.
//!
//! A selector that is neither the original nor the proxies' was changed by someone else
//! while taken over. routemeter reports it (`TakenOver=False`, `SelectorChanged`) and does
//! not write it again; the one exception is a selector holding both the proxies' keys and
//! the original ones, which matches no pod and is what `kubectl apply` of the unchanged
//! Service manifest produces (its three-way merge puts the original keys back next to
//! ours): that one is set back to the proxies', reported, at most once per
//! [`REASSERT_INTERVAL`], so two writers never fight in a loop.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::apply::FIELD_MANAGER;
use super::children::TakeoverPorts as Ports;
use super::error::Error;
use crate::crd::MonitoredService;

/// Annotation on the target Service holding the takeover [`Record`] (JSON).
pub const RECORD_ANNOTATION: &str = "routemeter.io/takeover";
/// Finalizer on a MonitoredService in takeover mode, removed once the target is restored.
pub const FINALIZER: &str = "routemeter.io/takeover";
/// After a deleted MonitoredService's Service is given back, its proxies (and the upstream
/// Service they read) stay this long before the finalizer goes and the garbage collector
/// removes them: every kube-proxy must first send the Service's new connections to the
/// application again (the same reasoning as the proxies' `preStop` sleep).
pub const HANDBACK: Duration = Duration::from_secs(5);
/// Annotation on a deleted MonitoredService: when its Service was given back (RFC 3339).
pub const RELEASED_ANNOTATION: &str = "routemeter.io/released-at";

/// Records on the MonitoredService when its Service was given back.
pub async fn mark_released(client: &Client, msvc: &MonitoredService) -> Result<(), Error> {
    let ns = msvc.namespace().unwrap_or_default();
    let name = msvc.name_any();
    let patch = json!({ "metadata": { "annotations": { RELEASED_ANNOTATION: jiff_now() } } });
    let api: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    match api
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Object {
            verb: "patch",
            kind: "MonitoredService".into(),
            name: format!("{ns}/{name}"),
            source,
        }),
    }
}

/// How much longer the proxies of a MonitoredService whose Service was given back must
/// stay; `None` when they may go.
pub fn handback_left(msvc: &MonitoredService) -> Option<Duration> {
    let at = msvc
        .annotations()
        .get(RELEASED_ANNOTATION)?
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()?;
    let since = k8s_openapi::jiff::Timestamp::now().duration_since(at);
    let since = Duration::try_from(since).unwrap_or(Duration::ZERO);
    HANDBACK.checked_sub(since).filter(|d| !d.is_zero())
}

/// A selector re-applied with its original keys is set back at most this often.
pub const REASSERT_INTERVAL: Duration = Duration::from_secs(300);

/// What routemeter changed on the target Service, and how to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The MonitoredService that took the Service over.
    pub monitored_service: String,
    /// The Service's selector before the takeover; restored exactly.
    pub selector: BTreeMap<String, String>,
    /// The selector routemeter sets: the proxy pods' labels.
    pub proxy_selector: BTreeMap<String, String>,
    /// Named target ports, resolved through the application's pods when the takeover
    /// began, so the proxies keep their ports while the application has no pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, i32>,
    /// Whether the selector was pointed at the proxies once. A record whose Service has
    /// its original selector again after that was given back by someone else.
    #[serde(default)]
    pub repointed: bool,
    /// When routemeter last set a re-applied selector back (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasserted_at: Option<String>,
}

impl Record {
    /// The record on `svc`, if any; an unreadable one is an error naming the annotation.
    pub fn of(svc: &Service) -> Result<Option<Record>, String> {
        let Some(text) = svc.annotations().get(RECORD_ANNOTATION) else {
            return Ok(None);
        };
        serde_json::from_str(text).map(Some).map_err(|e| {
            format!(
                "the annotation {RECORD_ANNOTATION} of Service {} is not a routemeter record ({e}); \
                 restore the Service's selector by hand and remove the annotation",
                svc.name_any()
            )
        })
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where the target Service stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No record: untouched by routemeter.
    Free,
    /// Another MonitoredService took it over.
    Foreign(String),
    /// Recorded, the original selector still in place (step 1).
    Recorded,
    /// The proxies' selector in place (step 2).
    TakenOver,
    /// Given back to its original selector by someone else after the repoint.
    Reverted,
    /// The proxies' keys and the original ones together: a re-applied manifest.
    Reapplied,
    /// Any other selector, set by someone else.
    Changed,
}

fn selector(svc: &Service) -> BTreeMap<String, String> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default()
}

/// Where `svc` stands for the MonitoredService `owner`.
pub fn phase(svc: &Service, record: Option<&Record>, owner: &str) -> Phase {
    let Some(record) = record else {
        return Phase::Free;
    };
    if record.monitored_service != owner {
        return Phase::Foreign(record.monitored_service.clone());
    }
    let current = selector(svc);
    if current == record.proxy_selector {
        return Phase::TakenOver;
    }
    if current == record.selector {
        return if record.repointed {
            Phase::Reverted
        } else {
            Phase::Recorded
        };
    }
    let mut union = record.selector.clone();
    union.extend(record.proxy_selector.clone());
    if current == union {
        return Phase::Reapplied;
    }
    Phase::Changed
}

/// Why a Service cannot be taken over, naming what is in the way; `None` when it can.
pub fn refusal(svc: &Service, record: Option<&Record>, owner: &str) -> Option<String> {
    let name = svc.name_any();
    let spec = svc.spec.clone().unwrap_or_default();
    if let Some(r) = record.filter(|r| r.monitored_service != owner) {
        return Some(format!(
            "Service {name} is already taken over by MonitoredService {}; one Service has one takeover",
            r.monitored_service
        ));
    }
    let why = if spec.type_.as_deref() == Some("ExternalName") {
        "is an ExternalName (a DNS alias): it has no endpoints to take over".to_string()
    } else if spec.cluster_ip.as_deref() == Some("None") {
        "is headless: its clients resolve the application's pods by DNS and would bypass the proxies"
            .to_string()
    } else if record.is_none()
        && spec
            .selector
            .as_ref()
            .is_some_and(|s| s.contains_key(crate::proxy_pods::INSTANCE_LABEL))
    {
        format!(
            "selects routemeter's proxies but has lost the record of its original selector \
             (the annotation {RECORD_ANNOTATION}): set its selector back to the application's pods"
        )
    } else if record.is_none() && spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
        "has no selector: its endpoints are managed by hand, and there is nothing to repoint"
            .to_string()
    } else if spec.session_affinity.as_deref() == Some("ClientIP") {
        "has sessionAffinity: ClientIP: the proxies balance each request and would break the affinity to one pod"
            .to_string()
    } else if spec.external_traffic_policy.as_deref() == Some("Local") {
        "has externalTrafficPolicy: Local: external clients would reach the application through a proxy on another node"
            .to_string()
    } else if spec.internal_traffic_policy.as_deref() == Some("Local") {
        "has internalTrafficPolicy: Local: clients would reach the application through a proxy on another node"
            .to_string()
    } else if let Some(p) = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.protocol.as_deref().is_some_and(|proto| proto != "TCP"))
    {
        format!(
            "has a {} port ({}): the proxies serve HTTP over TCP only",
            p.protocol.as_deref().unwrap_or_default(),
            p.port
        )
    } else if let Some(p) = spec.ports.iter().flatten().find(|p| {
        p.app_protocol
            .as_deref()
            .is_some_and(|a| !a.eq_ignore_ascii_case("http"))
    }) {
        format!(
            "has port {} with appProtocol {}: the proxies serve plain HTTP/1.1 only",
            p.port,
            p.app_protocol.as_deref().unwrap_or_default()
        )
    } else {
        return None;
    };
    Some(format!(
        "spec.mode: Takeover: Service {name} {why}; use mode Parallel"
    ))
}

/// Resolves the takeover ports of `svc`. Named target ports are looked up in the
/// containers of `pods` (the application's), which must agree; when there is no pod, the
/// numbers in `record` (resolved when the takeover began) are used.
pub fn ports(
    msvc: &MonitoredService,
    svc: &Service,
    pods: &[Pod],
    record: Option<&Record>,
    admin_port: i32,
) -> Result<Ports, String> {
    let name = svc.name_any();
    let service_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let wanted = &msvc.spec.target.port;
    let mut named = BTreeMap::new();
    let mut listeners: Vec<(Option<String>, i32)> = Vec::new();
    let mut primary = None;
    for p in &service_ports {
        let (container_name, number) = match &p.target_port {
            None => (None, p.port),
            Some(IntOrString::Int(n)) => (None, *n),
            Some(IntOrString::String(port_name)) => {
                // The pods' number when they agree on one; the record's while they do not
                // (a rollout changing it) or while there is no pod, so a Service taken
                // over keeps its ports.
                let recorded = record.and_then(|r| r.ports.get(port_name).copied());
                let resolved = match (resolve_named(port_name, pods), recorded) {
                    (Ok(Some(n)), _) => Some(n),
                    (Ok(None) | Err(_), Some(n)) => Some(n),
                    (Err(e), None) => return Err(e),
                    (Ok(None), None) => None,
                };
                let number = resolved
                    .ok_or_else(|| {
                        format!(
                            "spec.mode: Takeover: Service {name} port {} sends to the named port {port_name:?}, \
                             and no pod of the application is there to say its number; waiting for one",
                            p.port
                        )
                    })?;
                named.insert(port_name.clone(), number);
                (Some(port_name.clone()), number)
            }
        };
        if number == admin_port {
            return Err(format!(
                "spec.mode: Takeover: Service {name} port {} sends to port {number}, the proxies' admin port; \
                 the application must listen elsewhere",
                p.port
            ));
        }
        let is_primary = match wanted {
            IntOrString::Int(n) => p.port == *n,
            IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
        };
        if is_primary {
            primary = Some(number);
        }
        match listeners.iter_mut().find(|(_, n)| *n == number) {
            Some(existing) => {
                if existing.0.is_none() {
                    existing.0 = container_name;
                }
            }
            None => listeners.push((container_name, number)),
        }
    }
    let primary = primary
        .ok_or_else(|| format!("spec.target.port: Service {name} has no port {wanted:?}"))?;
    listeners.sort_by_key(|(_, n)| *n != primary);
    Ok(Ports {
        primary,
        listeners,
        named,
    })
}

/// The number of the container port `port_name` in `pods`; `None` when no pod has it;
/// an error when pods disagree.
fn resolve_named(port_name: &str, pods: &[Pod]) -> Result<Option<i32>, String> {
    let mut found: Option<(i32, String)> = None;
    for pod in pods {
        let number = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(port_name))
            .map(|p| p.container_port);
        let Some(number) = number else { continue };
        match &found {
            None => found = Some((number, pod.name_any())),
            Some((n, other)) if *n != number => {
                return Err(format!(
                    "spec.mode: Takeover: the named port {port_name:?} is {n} in pod {other} and {number} in pod {}; \
                     the proxies need one number per port",
                    pod.name_any()
                ));
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(n, _)| n))
}

/// The target Service as a takeover leaves it: the proxies' selector, and the record of
/// the original in its annotation (what `routemeter render` shows).
pub fn taken_over(
    msvc: &MonitoredService,
    svc: &Service,
    ports: &Ports,
    original: BTreeMap<String, String>,
) -> Value {
    let record = Record {
        monitored_service: msvc.name_any(),
        selector: original,
        proxy_selector: crate::proxy_pods::selector_labels(msvc),
        ports: ports.named.clone(),
        repointed: true,
        reasserted_at: None,
    };
    let mut out = svc.clone();
    out.metadata.managed_fields = None;
    out.metadata.resource_version = None;
    out.metadata.uid = None;
    out.metadata.creation_timestamp = None;
    out.metadata.namespace = out.metadata.namespace.or_else(|| msvc.namespace());
    out.status = None;
    out.annotations_mut()
        .insert(RECORD_ANNOTATION.to_string(), record.to_json());
    if let Some(spec) = out.spec.as_mut() {
        spec.selector = Some(record.proxy_selector.clone());
    }
    let mut value = serde_json::to_value(&out).unwrap_or_default();
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Service");
    value
}

/// One JSON Patch on the target Service; its `test` operations make it fail (422) if the
/// Service changed since it was read.
fn patch_ops(svc: &Service, record: Option<&Record>, ops: Vec<Value>) -> Vec<Value> {
    let mut all = vec![json!({ "op": "test", "path": "/spec/selector", "value": selector(svc) })];
    if let Some(r) = record {
        all.push(json!({ "op": "test", "path": annotation_path(), "value": r.to_json() }));
    }
    all.extend(ops);
    all
}

fn annotation_path() -> String {
    format!(
        "/metadata/annotations/{}",
        RECORD_ANNOTATION.replace('~', "~0").replace('/', "~1")
    )
}

fn put_record(svc: &Service, record: &Record) -> Value {
    if svc.metadata.annotations.is_none() {
        json!({ "op": "add", "path": "/metadata/annotations", "value": { RECORD_ANNOTATION: record.to_json() } })
    } else {
        json!({ "op": "add", "path": annotation_path(), "value": record.to_json() })
    }
}

fn set_selector(to: &BTreeMap<String, String>) -> Value {
    json!({ "op": "replace", "path": "/spec/selector", "value": to })
}

/// What one write does to the target Service.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Step 1: record the original selector.
    Record(Record),
    /// Step 2: point the selector at the proxies (or back at them, after a re-apply).
    Repoint { reassert: bool },
    /// Step 3: the original selector back (when it is still routemeter's) and the record
    /// removed.
    Restore { selector: bool },
}

/// The JSON Patch of `step` on `svc`, whose record is `record`.
pub fn patch(svc: &Service, record: Option<&Record>, step: &Step, now: &str) -> Vec<Value> {
    match step {
        Step::Record(new) => patch_ops(svc, None, vec![put_record(svc, new)]),
        Step::Repoint { reassert } => {
            let Some(r) = record else { return Vec::new() };
            let mut next = r.clone();
            next.repointed = true;
            if *reassert {
                next.reasserted_at = Some(now.to_string());
            }
            patch_ops(
                svc,
                record,
                vec![
                    json!({ "op": "replace", "path": annotation_path(), "value": next.to_json() }),
                    set_selector(&r.proxy_selector),
                ],
            )
        }
        Step::Restore { selector } => {
            let Some(r) = record else { return Vec::new() };
            let mut ops = Vec::new();
            if *selector {
                ops.push(set_selector(&r.selector));
            }
            ops.push(json!({ "op": "remove", "path": annotation_path() }));
            patch_ops(svc, record, ops)
        }
    }
}

/// The step that gives the Service back, if it needs one: the original selector where
/// routemeter's (or the re-applied union) is in place; only the record removed where
/// someone else set the selector since.
pub fn restore_step(phase: &Phase) -> Option<Step> {
    match phase {
        Phase::Free | Phase::Foreign(_) => None,
        Phase::TakenOver | Phase::Reapplied => Some(Step::Restore { selector: true }),
        Phase::Recorded | Phase::Reverted | Phase::Changed => {
            Some(Step::Restore { selector: false })
        }
    }
}

/// Applies `step` to the target Service. A 422 (a `test` failed: the Service changed
/// since it was read) or 409 is left to the next reconcile, which reads it again.
pub async fn write(
    client: &Client,
    svc: &Service,
    record: Option<&Record>,
    step: &Step,
) -> Result<bool, Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let now = jiff_now();
    let ops = patch(svc, record, step, &now);
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    match guarded_patch(&api, &name, Value::Array(ops)).await {
        Ok(_) => {
            tracing::info!(service = %format!("{ns}/{name}"), step = ?step_name(step), "takeover of Service {ns}/{name}: {}", step_name(step));
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => {
            tracing::info!(service = %format!("{ns}/{name}"), "Service {ns}/{name} changed while routemeter wrote it; reading it again");
            Ok(false)
        }
        Err(source) => Err(Error::Object {
            verb: "patch",
            kind: "Service".into(),
            name: format!("{ns}/{name}"),
            source,
        }),
    }
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Record(_) => "original selector recorded",
        Step::Repoint { reassert: false } => "selector pointed at the proxies",
        Step::Repoint { reassert: true } => "re-applied selector pointed at the proxies again",
        Step::Restore { selector: true } => "original selector restored",
        Step::Restore { selector: false } => "record removed, selector left as set by others",
    }
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Patches `name` with the JSON Patch `ops` as the operator: an update, whose `test`
/// operations are its guard (a 422 when the object changed since it was read).
async fn guarded_patch<K>(api: &Api<K>, name: &str, ops: Value) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Json::<()>(patch))
        .await
        .map(drop)
}

/// Whether a re-applied selector may be set back now (the last time was long enough ago).
pub fn may_reassert(record: &Record, now: k8s_openapi::jiff::Timestamp) -> bool {
    record
        .reasserted_at
        .as_deref()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .is_none_or(|at| now.duration_since(at).unsigned_abs().ge(&REASSERT_INTERVAL))
}

/// The application's pods: those the original selector matches.
pub async fn application_pods(
    client: &Client,
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Result<Vec<Pod>, Error> {
    if selector.is_empty() {
        return Ok(Vec::new());
    }
    let labels = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels(&labels))
        .await
        .map(|l| l.items)
        .map_err(|source| Error::Object {
            verb: "list",
            kind: "Pod".into(),
            name: format!("{ns}/{labels}"),
            source,
        })
}

/// Adds or removes the finalizer on the MonitoredService, guarded by a `test` of the list
/// read, so another controller's finalizers are never lost.
pub async fn set_finalizer(
    client: &Client,
    msvc: &MonitoredService,
    present: bool,
) -> Result<(), Error> {
    let current = msvc.finalizers().to_vec();
    let has = current.iter().any(|f| f == FINALIZER);
    if has == present {
        return Ok(());
    }
    let ns = msvc.namespace().unwrap_or_default();
    let name = msvc.name_any();
    let ops = if present && msvc.metadata.finalizers.is_none() {
        json!([{ "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }])
    } else {
        let others = current
            .iter()
            .map(String::as_str)
            .filter(|f| *f != FINALIZER);
        let next: Vec<&str> = if present {
            others.chain([FINALIZER]).collect()
        } else {
            others.collect()
        };
        json!([
            { "op": "test", "path": "/metadata/finalizers", "value": current },
            { "op": "replace", "path": "/metadata/finalizers", "value": next },
        ])
    };
    let api: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    match guarded_patch(&api, &name, ops).await {
        Ok(_) => Ok(()),
        // Gone already, or changed since read: nothing to do, or the next reconcile does it.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 || s.code == 409 => Ok(()),
        Err(source) => Err(Error::Object {
            verb: "patch",
            kind: "MonitoredService".into(),
            name: format!("{ns}/{name}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value, annotations: Option<Value>) -> Service {
        let mut meta = json!({ "name": "shop", "namespace": "apps" });
        if let Some(a) = annotations {
            meta["annotations"] = a;
        }
        serde_json::from_value(json!({ "metadata": meta, "spec": spec })).expect("a Service")
    }

    fn msvc(port: Value) -> MonitoredService {
        serde_json::from_value(json!({
            "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService",
            "metadata": { "name": "shop", "namespace": "apps" },
            "spec": { "target": { "service": "shop", "port": port }, "mode": "Takeover" },
        }))
        .expect("a MonitoredService")
    }

    fn record() -> Record {
        Record {
            monitored_service: "shop".into(),
            selector: BTreeMap::from([("app".into(), "shop".into())]),
            proxy_selector: BTreeMap::from([(
                "routemeter.io/monitored-service".into(),
                "shop".into(),
            )]),
            ports: BTreeMap::new(),
            repointed: false,
            reasserted_at: None,
        }
    }

    fn pod(name: &str, port_name: &str, number: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "containers": [{ "name": "app", "ports": [{ "name": port_name, "containerPort": number }] }] },
        }))
        .expect("a Pod")
    }

    #[test]
    fn phases_follow_the_selector_and_the_record() {
        let r = record();
        let with = |selector: Value, r: &Record| {
            let s = svc(json!({ "selector": selector }), None);
            phase(&s, Some(r), "shop")
        };
        assert_eq!(phase(&svc(json!({}), None), None, "shop"), Phase::Free);
        assert_eq!(with(json!({ "app": "shop" }), &r), Phase::Recorded);
        assert_eq!(
            with(json!({ "routemeter.io/monitored-service": "shop" }), &r),
            Phase::TakenOver
        );
        let repointed = Record {
            repointed: true,
            ..r.clone()
        };
        assert_eq!(with(json!({ "app": "shop" }), &repointed), Phase::Reverted);
        assert_eq!(
            with(
                json!({ "app": "shop", "routemeter.io/monitored-service": "shop" }),
                &repointed
            ),
            Phase::Reapplied
        );
        assert_eq!(
            with(json!({ "app": "shop-v2" }), &repointed),
            Phase::Changed
        );
        let s = svc(json!({ "selector": { "app": "shop" } }), None);
        assert_eq!(phase(&s, Some(&r), "other"), Phase::Foreign("shop".into()));
    }

    #[test]
    fn services_the_proxies_would_break_are_refused_naming_why() {
        let ok = svc(
            json!({ "selector": { "app": "shop" }, "ports": [{ "port": 80 }] }),
            None,
        );
        assert_eq!(refusal(&ok, None, "shop"), None);
        for (spec, why) in [
            (
                json!({ "type": "ExternalName", "externalName": "a.example" }),
                "ExternalName",
            ),
            (
                json!({ "selector": { "app": "shop" }, "clusterIP": "None" }),
                "headless",
            ),
            (json!({ "ports": [{ "port": 80 }] }), "no selector"),
            (
                json!({ "selector": { "app": "shop" }, "sessionAffinity": "ClientIP" }),
                "sessionAffinity",
            ),
            (
                json!({ "selector": { "app": "shop" }, "type": "NodePort", "externalTrafficPolicy": "Local" }),
                "externalTrafficPolicy",
            ),
            (
                json!({ "selector": { "app": "shop" }, "internalTrafficPolicy": "Local" }),
                "internalTrafficPolicy",
            ),
            (
                json!({ "selector": { "app": "shop" }, "ports": [{ "port": 53, "protocol": "UDP" }] }),
                "UDP",
            ),
            (
                json!({ "selector": { "app": "shop" }, "ports": [{ "port": 443, "appProtocol": "https" }] }),
                "appProtocol",
            ),
            (
                json!({ "selector": { "routemeter.io/monitored-service": "shop" } }),
                "lost the record",
            ),
        ] {
            let message = refusal(&svc(spec, None), None, "shop").expect(why);
            assert!(
                message.starts_with("spec.mode: Takeover: Service shop "),
                "{message}"
            );
            assert!(message.contains(why), "{why}: {message}");
        }
        let taken = refusal(&ok, Some(&record()), "other").expect("another owner");
        assert!(
            taken.contains("already taken over by MonitoredService shop"),
            "{taken}"
        );
    }

    #[test]
    fn every_target_port_is_a_listener_and_named_ports_resolve_through_the_pods() {
        let s = svc(
            json!({ "selector": { "app": "shop" }, "ports": [
                { "name": "metrics", "port": 9090, "targetPort": 9090 },
                { "name": "web", "port": 80, "targetPort": "http" },
                { "name": "alt", "port": 8081, "targetPort": 8080 },
            ] }),
            None,
        );
        let pods = [pod("a", "http", 8080), pod("b", "http", 8080)];
        let p = ports(&msvc(json!("web")), &s, &pods, None, 9901).expect("ports");
        assert_eq!(p.primary, 8080);
        assert_eq!(
            p.listeners,
            vec![(Some("http".to_string()), 8080), (None, 9090)],
            "the primary first; 80 and 8081 both go to 8080: one listener, named as the Service asks"
        );
        assert_eq!(p.named, BTreeMap::from([("http".to_string(), 8080)]));

        // No pod: the record's numbers; neither: an error that says so.
        let mut r = record();
        r.ports.insert("http".into(), 8080);
        assert_eq!(
            ports(&msvc(json!("web")), &s, &[], Some(&r), 9901)
                .expect("from the record")
                .primary,
            8080
        );
        let waiting = ports(&msvc(json!("web")), &s, &[], None, 9901).expect_err("unresolved");
        assert!(waiting.contains("named port \"http\""), "{waiting}");
        // Pods that disagree, and the admin port.
        let split = ports(
            &msvc(json!("web")),
            &s,
            &[pod("a", "http", 8080), pod("b", "http", 8000)],
            None,
            9901,
        )
        .expect_err("pods disagree");
        assert!(split.contains("8080 in pod a and 8000 in pod b"), "{split}");
        let admin = ports(&msvc(json!(9090)), &s, &pods, None, 9090).expect_err("admin port");
        assert!(admin.contains("the proxies' admin port"), "{admin}");
    }

    #[test]
    fn every_write_is_guarded_by_what_was_read() {
        let s = svc(
            json!({ "selector": { "app": "shop" } }),
            Some(json!({ "team": "a" })),
        );
        let r = record();
        let record_ops = patch(&s, None, &Step::Record(r.clone()), "t");
        assert_eq!(
            record_ops[0],
            json!({ "op": "test", "path": "/spec/selector", "value": { "app": "shop" } })
        );
        assert_eq!(
            record_ops[1]["path"],
            "/metadata/annotations/routemeter.io~1takeover"
        );
        assert_eq!(
            record_ops.len(),
            2,
            "only the record: the selector changes later"
        );

        let repoint = patch(&s, Some(&r), &Step::Repoint { reassert: false }, "t");
        assert_eq!(repoint[1]["op"], "test", "the record as read");
        let written: Record =
            serde_json::from_str(repoint[2]["value"].as_str().expect("json")).expect("record");
        assert!(written.repointed);
        assert_eq!(
            repoint[3],
            json!({ "op": "replace", "path": "/spec/selector", "value": r.proxy_selector })
        );

        let restore = patch(&s, Some(&r), &Step::Restore { selector: true }, "t");
        assert_eq!(
            restore[2],
            json!({ "op": "replace", "path": "/spec/selector", "value": { "app": "shop" } })
        );
        assert_eq!(restore[3]["op"], "remove");
        // Someone else's selector is left alone: only the record goes.
        assert_eq!(
            restore_step(&Phase::Changed),
            Some(Step::Restore { selector: false })
        );
        assert_eq!(
            restore_step(&Phase::Reapplied),
            Some(Step::Restore { selector: true })
        );
        assert_eq!(restore_step(&Phase::Foreign("x".into())), None);
        // A Service without annotations gets the whole map.
        let bare = svc(json!({ "selector": { "app": "shop" } }), None);
        assert_eq!(
            patch(&bare, None, &Step::Record(r), "t")[1]["path"],
            "/metadata/annotations"
        );
    }

    #[test]
    fn the_proxies_outlive_the_handback_by_its_delay() {
        let mut m = msvc(json!(80));
        assert_eq!(
            handback_left(&m),
            None,
            "never given back: nothing to wait for"
        );
        let now = k8s_openapi::jiff::Timestamp::now();
        m.annotations_mut()
            .insert(RELEASED_ANNOTATION.into(), now.to_string());
        let left = handback_left(&m).expect("just given back");
        assert!(
            left <= HANDBACK && left > Duration::from_secs(4),
            "{left:?}"
        );
        let earlier = now - k8s_openapi::jiff::SignedDuration::from_secs(6);
        m.annotations_mut()
            .insert(RELEASED_ANNOTATION.into(), earlier.to_string());
        assert_eq!(handback_left(&m), None);
    }

    #[test]
    fn a_reapplied_selector_is_set_back_at_most_once_per_interval() {
        let now: k8s_openapi::jiff::Timestamp = "2026-12-02T10:00:00Z".parse().expect("time");
        let mut r = record();
        assert!(may_reassert(&r, now));
        r.reasserted_at = Some("2026-12-02T09:58:00Z".into());
        assert!(!may_reassert(&r, now));
        r.reasserted_at = Some("2026-12-02T09:54:59Z".into());
        assert!(may_reassert(&r, now));
    }
}
