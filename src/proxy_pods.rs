//! A MonitoredService's proxy pods as others find them: the labels that select them, their
//! admin port, which of them are ready, and the API server's path to one's admin
//! listener. The operator builds the pods with these labels and port and reads the ready
//! ones' figures from their IPs (`operator::traffic`); `routemeter top --msvc` reads the
//! same pods through the API server's pod proxy (`summary::top`). Below both, above only
//! the API types.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use thiserror::Error;

use crate::crd::MonitoredService;

/// Port of the proxy's admin listener (metrics, probes, summary).
pub const ADMIN_PORT: i32 = 9901;
/// Name of the admin container port: not one an application's named `targetPort` is
/// likely to use, since in takeover mode the target Service looks its named ports up on
/// the proxy pods.
pub const ADMIN_PORT_NAME: &str = "rm-admin";
/// Label naming the MonitoredService a child belongs to.
pub const INSTANCE_LABEL: &str = "routemeter.io/monitored-service";

/// Why the proxy pods could not be listed.
#[derive(Debug, Error)]
pub enum PodsError {
    #[error("the MonitoredService has no namespace")]
    MissingNamespace,
    #[error("cannot list the pods of {namespace} labelled {selector}: {source}")]
    List {
        namespace: String,
        selector: String,
        #[source]
        source: kube::Error,
    },
}

/// Labels on every child of `msvc`; the three of them select its proxy pods.
pub fn selector_labels(msvc: &MonitoredService) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "routemeter-proxy".into()),
        ("app.kubernetes.io/instance".into(), msvc.name_any()),
        (INSTANCE_LABEL.into(), msvc.name_any()),
    ])
}

/// The label selector of the proxy pods of `msvc`, as a list call takes it.
pub fn label_selector(msvc: &MonitoredService) -> String {
    selector_labels(msvc)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A proxy pod that is ready (its `Ready` condition `True`) and has an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyProxy {
    /// The pod's name.
    pub name: String,
    /// The pod's IP.
    pub ip: String,
    /// The container port named [`ADMIN_PORT_NAME`]; [`ADMIN_PORT`] when the pod names
    /// none.
    pub admin_port: u16,
}

impl ReadyProxy {
    /// The pod's IP as the host of a URL (an IPv6 address in brackets).
    pub fn host(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]", self.ip)
        } else {
            self.ip.clone()
        }
    }

    /// The API server's path to `path` (with its query) on this pod's admin listener,
    /// through the pod proxy: the API server connects to the pod, so the caller needs no
    /// route into the cluster, only `get` on `pods/proxy` in `namespace`.
    pub fn api_server_path(&self, namespace: &str, path: &str) -> String {
        format!(
            "/api/v1/namespaces/{namespace}/pods/{}:{}/proxy{path}",
            self.name, self.admin_port
        )
    }
}

/// The proxy pods of one list: how many matched, and the ready ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proxies {
    /// Pods the selector matched, ready or not.
    pub matched: usize,
    /// The ready ones, by name.
    pub ready: Vec<ReadyProxy>,
}

impl Proxies {
    /// Sorts `pods` (already selected) into the ready ones: `Ready=True` and an IP. A
    /// terminating pod stays in while it is ready: it still serves (its `preStop` sleep),
    /// and its last minute of traffic is part of the service's.
    pub fn of(pods: Vec<Pod>) -> Self {
        let matched = pods.len();
        let mut ready: Vec<ReadyProxy> = pods.into_iter().filter_map(ready_proxy).collect();
        ready.sort_by(|a, b| a.name.cmp(&b.name));
        Proxies { matched, ready }
    }
}

fn ready_proxy(pod: Pod) -> Option<ReadyProxy> {
    let name = pod.metadata.name?;
    let admin_port = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
        .map_or(ADMIN_PORT, |p| p.container_port);
    let status = pod.status?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.filter(|ip| ready && !ip.is_empty())?;
    Some(ReadyProxy {
        name,
        ip,
        admin_port: u16::try_from(admin_port).ok()?,
    })
}

/// Lists the proxy pods of `msvc`.
pub async fn list(client: &Client, msvc: &MonitoredService) -> Result<Proxies, PodsError> {
    let namespace = msvc.namespace().ok_or(PodsError::MissingNamespace)?;
    let selector = label_selector(msvc);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| PodsError::List {
            namespace,
            selector,
            source,
        })?;
    Ok(Proxies::of(list.items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ready: bool, ip: Option<&str>, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "containers": [{ "name": "proxy", "ports": ports }] },
            "status": {
                "podIP": ip,
                "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }]
            }
        }))
        .expect("a pod")
    }

    #[test]
    fn the_selector_is_the_three_labels_of_the_proxy_pods() {
        let msvc: MonitoredService = serde_json::from_value(json!({
            "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService",
            "metadata": { "name": "api", "namespace": "shop" },
            "spec": { "target": { "service": "api", "port": 80 } }
        }))
        .expect("a MonitoredService");
        assert_eq!(
            label_selector(&msvc),
            "app.kubernetes.io/instance=api,app.kubernetes.io/name=routemeter-proxy,\
             routemeter.io/monitored-service=api"
        );
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_read_on_their_named_admin_port() {
        let admin = json!([
            { "name": "http", "containerPort": 8080 },
            { "name": ADMIN_PORT_NAME, "containerPort": 9911 }
        ]);
        let proxies = Proxies::of(vec![
            pod("c-v6", true, Some("fd00::5"), json!([])),
            pod("b-unready", false, Some("10.0.0.2"), admin.clone()),
            pod("a-ready", true, Some("10.0.0.1"), admin.clone()),
            pod("d-no-ip", true, None, admin),
        ]);
        assert_eq!(proxies.matched, 4);
        let names: Vec<&str> = proxies.ready.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a-ready", "c-v6"], "sorted by name");
        let (a, v6) = (&proxies.ready[0], &proxies.ready[1]);
        assert_eq!((a.host(), a.admin_port), ("10.0.0.1".into(), 9911));
        assert_eq!(
            (v6.host(), v6.admin_port),
            ("[fd00::5]".into(), 9901),
            "no named port: the default"
        );
    }

    #[test]
    fn the_api_server_proxies_to_the_pods_admin_port() {
        let p = ReadyProxy {
            name: "api-routemeter-7d9f-x2b4q".into(),
            ip: "10.0.0.1".into(),
            admin_port: 9901,
        };
        assert_eq!(
            p.api_server_path("shop", "/api/summary?window=5m"),
            "/api/v1/namespaces/shop/pods/api-routemeter-7d9f-x2b4q:9901/proxy/api/summary?window=5m"
        );
    }
}
