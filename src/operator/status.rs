//! Status conditions a user can act on, and writing them back.
//!
//! `Ready` sums up `TargetFound`, `ProxyAvailable` and, in takeover mode, `TakenOver`
//! (whether the target Service points at the proxies); `MonitoringConfigured` says whether
//! the ServiceMonitor and rules exist and a Prometheus selects them; `ProxyConfigApplied`
//! whether the proxies read run the config in their ConfigMap. A condition keeps its
//! `lastTransitionTime` while its status does not change, so writes are idempotent and a
//! reconcile that changes nothing writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::apply::FIELD_MANAGER;
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

/// Writes the status if it changed.
pub async fn write(
    client: &Client,
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
    api.patch_status(
        &msvc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Object {
        verb: "write the status of",
        kind: "MonitoredService".into(),
        name: format!("{ns}/{}", msvc.name_any()),
        source,
    })?;
    Ok(())
}
