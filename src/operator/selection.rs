//! Which Prometheus selects the ServiceMonitor and rules, and what labels make it do so.
//!
//! A ServiceMonitor that no Prometheus selects is the most common silent failure of the
//! Prometheus Operator stack. So the operator reads the `Prometheus` objects, and unless
//! the user set `spec.monitoring.labels`, copies the `matchLabels` of the first one whose
//! namespace selectors admit the MonitoredService's namespace, first in namespace/name
//! order as `kubectl get prometheus -A` lists them (never in the cache's order, which
//! changes: the choice would flip between reconciles); then it reports, in status, every
//! Prometheus that selects both the ServiceMonitor and the rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};

use super::caches::Caches;
use super::children::resources;
use super::status::Condition;

/// The labels to put on the ServiceMonitor and PrometheusRule, and who selects them.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub labels: BTreeMap<String, String>,
    pub selected_by: Vec<String>,
    /// Whether any Prometheus object was found.
    pub prometheus_found: bool,
}

impl Selection {
    /// The `MonitoringConfigured` condition for this selection.
    pub fn condition(&self, service_monitor_enabled: bool) -> Condition {
        if !service_monitor_enabled {
            return Condition::monitoring(
                true,
                "ServiceMonitorDisabled",
                "rules applied; spec.monitoring.serviceMonitor.enabled is false",
            );
        }
        if !self.selected_by.is_empty() {
            return Condition::monitoring(
                true,
                "Selected",
                format!("selected by Prometheus {}", self.selected_by.join(", ")),
            );
        }
        let why = if self.prometheus_found {
            "no Prometheus selects the ServiceMonitor and rules: set spec.monitoring.labels to match a Prometheus's serviceMonitorSelector and ruleSelector, or widen its namespace selectors"
        } else {
            "no Prometheus object exists in the cluster, so nothing scrapes the proxy yet"
        };
        Condition::monitoring(false, "NotSelected", why)
    }
}

/// Whether a label selector matches labels. `None` selects nothing, as the Prometheus
/// Operator reads a missing selector.
pub fn matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(s) = selector else { return false };
    let by_labels = s
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = s.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

fn selector(spec: &serde_json::Value, field: &str) -> Option<LabelSelector> {
    spec.get(field)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// Whether a Prometheus in `prom_ns` looks in namespace `ns` (labels `ns_labels`) by its
/// namespace selector `field`. A missing selector means its own namespace only.
fn admits(
    spec: &serde_json::Value,
    field: &str,
    prom_ns: &str,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
) -> bool {
    match selector(spec, field) {
        None => prom_ns == ns,
        Some(s) => matches(Some(&s), ns_labels),
    }
}

/// Works out the selection for namespace `ns` from the cluster's Prometheus objects: with
/// `user_labels` as given, or else the labels the first suitable Prometheus wants. Reads
/// the caches once they have synced, the API server before.
pub async fn selection_with(
    client: &Client,
    caches: &Caches,
    ns: &str,
    user_labels: Option<BTreeMap<String, String>>,
) -> Selection {
    let list = if caches.prometheuses.synced() {
        caches.prometheuses.state()
    } else {
        let prometheuses: Api<DynamicObject> =
            Api::all_with(client.clone(), &resources::prometheus());
        match prometheuses.list(&ListParams::default()).await {
            Ok(list) => list.items.into_iter().map(Arc::new).collect(),
            Err(error) => {
                tracing::debug!(%error, "cannot list Prometheus objects");
                return Selection {
                    labels: user_labels.unwrap_or_default(),
                    ..Default::default()
                };
            }
        }
    };
    let ns_labels = match caches.namespace_labels(ns) {
        Some(labels) => labels,
        None => match Api::<Namespace>::all(client.clone()).get_opt(ns).await {
            Ok(Some(n)) => n.labels().clone(),
            _ => BTreeMap::new(),
        },
    };
    choose(list, ns, &ns_labels, user_labels)
}

/// The selection among the Prometheus objects `list` for a MonitoredService in namespace
/// `ns` (labelled `ns_labels`): the user's labels, or those of the first Prometheus in
/// namespace/name order that admits the namespace; and every Prometheus selecting them.
pub fn choose(
    mut list: Vec<Arc<DynamicObject>>,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
    user_labels: Option<BTreeMap<String, String>>,
) -> Selection {
    list.sort_by_key(|p| (p.namespace(), p.name_any()));
    let mut labels = user_labels.clone().unwrap_or_default();
    if user_labels.is_none() {
        let candidate = list.iter().find(|p| {
            let spec = &p.data["spec"];
            let pns = p.namespace().unwrap_or_default();
            admits(spec, "serviceMonitorNamespaceSelector", &pns, ns, ns_labels)
                && admits(spec, "ruleNamespaceSelector", &pns, ns, ns_labels)
        });
        if let Some(p) = candidate {
            for field in ["serviceMonitorSelector", "ruleSelector"] {
                if let Some(ml) = selector(&p.data["spec"], field).and_then(|s| s.match_labels) {
                    labels.extend(ml);
                }
            }
        }
    }
    let mut with_ours = labels.clone();
    with_ours.insert("app.kubernetes.io/managed-by".into(), "routemeter".into());
    let selected_by = list
        .iter()
        .filter(|p| {
            let spec = &p.data["spec"];
            let pns = p.namespace().unwrap_or_default();
            matches(
                selector(spec, "serviceMonitorSelector").as_ref(),
                &with_ours,
            ) && matches(selector(spec, "ruleSelector").as_ref(), &with_ours)
                && admits(spec, "serviceMonitorNamespaceSelector", &pns, ns, ns_labels)
                && admits(spec, "ruleNamespaceSelector", &pns, ns, ns_labels)
        })
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    Selection {
        labels,
        selected_by,
        prometheus_found: !list.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn prometheus(ns: &str, name: &str, release: &str) -> Arc<DynamicObject> {
        let any_namespace = serde_json::json!({});
        let selector = serde_json::json!({ "matchLabels": { "release": release } });
        let object = serde_json::json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
            "metadata": { "name": name, "namespace": ns },
            "spec": {
                "serviceMonitorSelector": selector, "ruleSelector": selector,
                "serviceMonitorNamespaceSelector": any_namespace,
                "ruleNamespaceSelector": any_namespace,
            },
        });
        Arc::new(serde_json::from_value(object).expect("a Prometheus"))
    }

    /// Whatever order the cache holds them in, the first in namespace/name order is the
    /// one whose labels are copied, and only it selects the result.
    #[test]
    fn the_choice_never_depends_on_the_cache_order() {
        let kps = prometheus("monitoring", "kps", "kps");
        let other = prometheus("monitoring", "other", "other");
        let later = prometheus("zz", "aaa", "zz");
        for list in [
            vec![kps.clone(), other.clone(), later.clone()],
            vec![later.clone(), other.clone(), kps.clone()],
            vec![other.clone(), kps.clone(), later.clone()],
        ] {
            let chosen = choose(list, "shop", &BTreeMap::new(), None);
            assert_eq!(chosen.labels, labels(&[("release", "kps")]));
            assert_eq!(chosen.selected_by, ["monitoring/kps"]);
        }
        // The user's labels win, and say who selects them.
        let chosen = choose(
            vec![kps, other],
            "shop",
            &BTreeMap::new(),
            Some(labels(&[("release", "other")])),
        );
        assert_eq!(chosen.selected_by, ["monitoring/other"]);
    }

    #[test]
    fn selectors_follow_prometheus_operator_semantics() {
        let l = labels(&[("release", "kps"), ("team", "a")]);
        assert!(!matches(None, &l), "a missing selector selects nothing");
        assert!(
            matches(Some(&LabelSelector::default()), &l),
            "an empty selector selects everything"
        );
        let s = LabelSelector {
            match_labels: Some(labels(&[("release", "kps")])),
            match_expressions: None,
        };
        assert!(matches(Some(&s), &l));
        let s = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: "NotIn".into(),
                values: Some(vec!["a".into()]),
            }]),
        };
        assert!(!matches(Some(&s), &l));
    }

    #[test]
    fn missing_namespace_selector_means_own_namespace() {
        let spec = serde_json::json!({});
        assert!(admits(
            &spec,
            "serviceMonitorNamespaceSelector",
            "monitoring",
            "monitoring",
            &BTreeMap::new()
        ));
        assert!(!admits(
            &spec,
            "serviceMonitorNamespaceSelector",
            "monitoring",
            "shop",
            &BTreeMap::new()
        ));
        let all = serde_json::json!({"serviceMonitorNamespaceSelector": {}});
        assert!(admits(
            &all,
            "serviceMonitorNamespaceSelector",
            "monitoring",
            "shop",
            &BTreeMap::new()
        ));
    }
}
