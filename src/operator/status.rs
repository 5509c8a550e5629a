//! Status conditions a user can act on, and writing them back.
//!
//! `Ready` sums up `TargetFound`, `ProxyAvailable` and, in takeover mode, `TakenOver`
//! (whether the target Service points at the proxies); `MonitoringConfigured` says whether
//! the ServiceMonitor and rules exist and a Prometheus selects them; `ProxyConfigApplied`
//! whether the proxies read run the config in their ConfigMap. A condition keeps its
//! `lastTransitionTime` while its status does not change, so writes are idempotent and a
//! reconcile that changes nothing writes nothing.
//!
//! A condition a user must act on (target missing, invalid spec, no Prometheus selecting
//! the monitoring, a write refused, a config rejected, a takeover refused) is also a
//! `Warning` Event on the MonitoredService when it appears or its message changes, and
//! becoming ready (or taking the Service over) a `Normal` one: `kubectl describe msvc`
//! and `kubectl events` tell the story, once per change, never once per reconcile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};
use kube::api::{Api, Patch};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::apply;
use super::error::Error;
use crate::crd::{MonitoredService, MonitoredServiceStatus};

/// A condition before it is stamped with a generation and a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    pub fn invalid_spec(message: &str) -> Self {
        Self::new("Ready", false, "InvalidSpec", message)
    }
    pub fn target_missing(service: &str, ns: &str) -> Self {
        Self::new(
            "TargetFound",
            false,
            "ServiceNotFound",
            format!("Service {ns}/{service} does not exist; create it or fix spec.target.service"),
        )
    }
    pub fn target_unusable(message: &str) -> Self {
        Self::new("TargetFound", false, "PortNotFound", message)
    }
    pub fn target_found(service: &str) -> Self {
        Self::new(
            "TargetFound",
            true,
            "ServiceFound",
            format!("proxying to Service {service}"),
        )
    }
    pub fn proxy_availability(ready: i32, replicas: i32) -> Self {
        if ready > 0 {
            Self::new(
                "ProxyAvailable",
                true,
                "MinimumReplicasAvailable",
                format!("{ready}/{replicas} proxy replicas available"),
            )
        } else {
            Self::new(
                "ProxyAvailable",
                false,
                "NoReplicasAvailable",
                format!(
                    "0/{replicas} proxy replicas available; see the proxy Deployment's events and pods"
                ),
            )
        }
    }
    /// Whether every proxy read runs the config in its ConfigMap. A proxy that rejects a
    /// config (a hand edit, or an operator newer than the proxy image) keeps serving on
    /// its last good one; this says so, and how many.
    pub fn proxy_config(health: crate::operator::traffic::ConfigHealth, config_map: &str) -> Self {
        if health.stale == 0 {
            Self::new(
                "ProxyConfigApplied",
                true,
                "Applied",
                format!(
                    "the {} proxies read run the config in ConfigMap {config_map}",
                    health.proxies
                ),
            )
        } else {
            Self::new(
                "ProxyConfigApplied",
                false,
                "ReloadFailed",
                format!(
                    "{} of {} proxies rejected the config in ConfigMap {config_map} and run an older one; \
                     their log names the field at fault (\"config rejected\"), routemeter_config_last_reload_successful is 0",
                    health.stale, health.proxies
                ),
            )
        }
    }
    /// Takeover mode: where the target Service stands (`TakenOver`).
    pub fn taken_over(status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self::new("TakenOver", status, reason, message)
    }
    pub fn monitoring_crds_missing() -> Self {
        Self::new(
            "MonitoringConfigured",
            false,
            "CRDsNotInstalled",
            "the Prometheus Operator CRDs (monitoring.coreos.com/v1 ServiceMonitor, PrometheusRule) are not installed; \
             install them and the operator configures monitoring on its own",
        )
    }
    /// Writing a child failed (`count` of them); `first` names the child and the error.
    pub fn apply_failed(first: &str, count: usize) -> Self {
        let more = match count {
            0 | 1 => String::new(),
            n => format!(" (and {} more; see the operator's log)", n - 1),
        };
        Self::new("Ready", false, "ApplyFailed", format!("{first}{more}"))
    }
    pub fn monitoring(status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self::new("MonitoringConfigured", status, reason, message)
    }
}

/// Conditions gathered during one reconcile.
#[derive(Debug)]
pub struct Report {
    generation: Option<i64>,
    previous: Vec<K8sCondition>,
    conditions: Vec<Condition>,
}

impl Report {
    pub fn new(msvc: &MonitoredService) -> Self {
        Report {
            generation: msvc.metadata.generation,
            previous: msvc
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default(),
            conditions: Vec::new(),
        }
    }

    /// Sets (or replaces) a condition.
    pub fn set(&mut self, c: Condition) {
        self.conditions.retain(|o| o.type_ != c.type_);
        self.conditions.push(c);
    }

    /// The status, with `Ready` derived unless set explicitly.
    pub fn finish(
        mut self,
        replicas: Option<i32>,
        ready_replicas: Option<i32>,
    ) -> MonitoredServiceStatus {
        if !self.conditions.iter().any(|c| c.type_ == "Ready") {
            let failing = self
                .conditions
                .iter()
                .find(|c| {
                    matches!(c.type_, "TargetFound" | "ProxyAvailable" | "TakenOver") && !c.status
                })
                .cloned();
            self.set(match failing {
                Some(f) => Condition::new("Ready", false, f.reason, f.message),
                None => Condition::new(
                    "Ready",
                    true,
                    "Available",
                    "the proxy is serving and metering the target",
                ),
            });
        }
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let conditions = self
            .conditions
            .iter()
            .map(|c| {
                let status = if c.status { "True" } else { "False" }.to_string();
                let since = self
                    .previous
                    .iter()
                    .find(|p| p.type_ == c.type_ && p.status == status)
                    .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
                K8sCondition {
                    type_: c.type_.to_string(),
                    status,
                    reason: c.reason.to_string(),
                    message: c.message.clone(),
                    observed_generation: self.generation,
                    last_transition_time: since,
                }
            })
            .collect();
        MonitoredServiceStatus {
            observed_generation: self.generation,
            conditions,
            replicas,
            ready_replicas,
            ..Default::default()
        }
    }
}

/// The conditions a user must act on, by type and reason: each is a `Warning` Event.
/// `ProxyAvailable=False` is not one: every new proxy starts so, and the Deployment's own
/// Events say why one stays so. `Ready` carries its own reason only for these two; its
/// other reasons repeat a condition below it.
const WARNINGS: &[(&str, &str)] = &[
    ("Ready", "InvalidSpec"),
    ("Ready", "ApplyFailed"),
    ("TargetFound", "ServiceNotFound"),
    ("TargetFound", "PortNotFound"),
    ("MonitoringConfigured", "NotSelected"),
    ("MonitoringConfigured", "CRDsNotInstalled"),
    ("ProxyConfigApplied", "ReloadFailed"),
    ("TakenOver", "Refused"),
    ("TakenOver", "RecordUnreadable"),
    ("TakenOver", "PortsUnresolved"),
];

/// An Event to publish about a MonitoredService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// What changed between two sets of conditions that deserves an Event: a warning
/// condition that appeared or changed its message, `Ready` or `TakenOver` turning true.
pub fn notices(previous: &[K8sCondition], new: &[K8sCondition]) -> Vec<Notice> {
    let before = |type_: &str| previous.iter().find(|p| p.type_ == type_);
    let mut out = Vec::new();
    for c in new {
        let old = before(&c.type_);
        let same = old.is_some_and(|o| o.status == c.status && o.reason == c.reason);
        let warning = c.status == "False"
            && WARNINGS
                .iter()
                .any(|(t, r)| *t == c.type_ && *r == c.reason);
        if warning && !(same && old.is_some_and(|o| o.message == c.message)) {
            out.push(Notice {
                warning: true,
                reason: c.reason.clone(),
                note: c.message.clone(),
            });
        } else if c.status == "True"
            && matches!(c.type_.as_str(), "Ready" | "TakenOver")
            && old.is_none_or(|o| o.status != "True")
        {
            out.push(Notice {
                warning: false,
                reason: c.type_.clone(),
                note: c.message.clone(),
            });
        }
    }
    out
}

/// Publishes `notices` on `msvc`. An Event that cannot be written is logged, never a
/// failed reconcile: the status already says it.
async fn publish(recorder: &Recorder, msvc: &MonitoredService, notices: Vec<Notice>) {
    let reference = msvc.object_ref(&());
    for n in notices {
        let event = Event {
            type_: if n.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: n.reason.clone(),
            // The Events API caps a note at 1 kB.
            note: Some(truncate(&n.note, 1024)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(
                msvc = %format!("{}/{}", msvc.namespace().unwrap_or_default(), msvc.name_any()),
                reason = %n.reason,
                %error,
                "cannot publish an Event"
            );
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Writes the status if it changed, then the Events its changes call for.
pub async fn write(
    client: &Client,
    recorder: &Recorder,
    msvc: &MonitoredService,
    mut status: MonitoredServiceStatus,
) -> Result<(), Error> {
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    // The traffic figures and their condition belong to the traffic loop, under a field
    // manager of its own: never written here, and left out of the comparison.
    status.traffic = None;
    status
        .conditions
        .retain(|c| c.type_ != super::traffic::TRAFFIC_CONDITION);
    let previous = msvc
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let notices = notices(previous, &status.conditions);
    if let Some(old) = &msvc.status {
        let mut old = old.clone();
        old.traffic = None;
        old.conditions
            .retain(|c| c.type_ != super::traffic::TRAFFIC_CONDITION);
        old.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        if old == status {
            return Ok(());
        }
    }
    let ns = msvc
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let api: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    let patch = json!({ "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService", "status": status });
    api.patch_status(&msvc.name_any(), &apply::params(), &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Object {
            verb: "write the status of",
            kind: "MonitoredService".into(),
            name: format!("{ns}/{}", msvc.name_any()),
            source,
        })?;
    publish(recorder, msvc, notices).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: bool, reason: &str, message: &str) -> K8sCondition {
        K8sCondition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }
    }

    fn reasons(notices: &[Notice]) -> Vec<(bool, &str)> {
        notices
            .iter()
            .map(|n| (n.warning, n.reason.as_str()))
            .collect()
    }

    #[test]
    fn what_a_user_must_act_on_is_a_warning_once_per_change() {
        let missing = [
            condition(
                "TargetFound",
                false,
                "ServiceNotFound",
                "Service a/b does not exist",
            ),
            condition(
                "Ready",
                false,
                "ServiceNotFound",
                "Service a/b does not exist",
            ),
        ];
        // Appearing: one warning (Ready only repeats TargetFound's reason).
        let first = notices(&[], &missing);
        assert_eq!(reasons(&first), [(true, "ServiceNotFound")]);
        assert_eq!(first[0].note, "Service a/b does not exist");
        // The same again: nothing.
        assert!(notices(&missing, &missing).is_empty());
        // Another field at fault: a new warning, though the reason is the same.
        let a = [condition(
            "Ready",
            false,
            "InvalidSpec",
            "routes[0].path: bad",
        )];
        let b = [condition(
            "Ready",
            false,
            "InvalidSpec",
            "routes[1].path: bad",
        )];
        assert_eq!(reasons(&notices(&a, &b)), [(true, "InvalidSpec")]);
        assert!(notices(&b, &b).is_empty());
    }

    #[test]
    fn becoming_ready_is_normal_and_starting_up_is_not_a_warning() {
        let starting = [
            condition("TargetFound", true, "ServiceFound", "proxying to Service b"),
            condition("ProxyAvailable", false, "NoReplicasAvailable", "0/2"),
            condition("Ready", false, "NoReplicasAvailable", "0/2"),
            condition("MonitoringConfigured", true, "Selected", "selected by p"),
        ];
        assert!(
            notices(&[], &starting).is_empty(),
            "a new proxy starts unavailable"
        );
        let ready = [
            condition("TargetFound", true, "ServiceFound", "proxying to Service b"),
            condition("ProxyAvailable", true, "MinimumReplicasAvailable", "2/2"),
            condition("Ready", true, "Available", "serving"),
            condition(
                "TakenOver",
                true,
                "TakenOver",
                "the Service points at the proxies",
            ),
        ];
        assert_eq!(
            reasons(&notices(&starting, &ready)),
            [(false, "Ready"), (false, "TakenOver")]
        );
        assert!(notices(&ready, &ready).is_empty());
    }

    #[test]
    fn each_warning_condition_is_named() {
        for (type_, reason) in WARNINGS {
            let c = [condition(type_, false, reason, "why")];
            assert_eq!(reasons(&notices(&[], &c)), [(true, *reason)], "{type_}");
            let fixed = [condition(type_, true, "Fine", "fine")];
            let back = notices(&c, &fixed);
            assert!(back.iter().all(|n| !n.warning), "{type_}: {back:?}");
        }
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 1024), "abc");
    }
}
