//! Harness for tests against the project's real control plane (`make cluster-up`).
//!
//! The kubeconfig comes from `ROUTEMETER_KUBECONFIG` or `target/cluster/kubeconfig`. When
//! there is none, a test is skipped with a message on a developer's machine, and fails in
//! CI (`CI` set), where the cluster must be up.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use routemeter::crd::MonitoredService;
use serde_json::json;
use tokio::sync::{OnceCell, RwLock};

pub use crate::common::wait_for;

/// Tests that remove cluster-wide things (the Prometheus Operator CRDs) take this for
/// writing; every other test holds it for reading.
pub static CLUSTER_WIDE: RwLock<()> = RwLock::const_new(());

static CRD_INSTALLED: OnceCell<()> = OnceCell::const_new();

pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("ROUTEMETER_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cluster/kubeconfig")
        })
}

/// A client for the test cluster, with the MonitoredService CRD installed; `None` (skip)
/// outside CI when no cluster is up.
pub async fn client() -> Option<Client> {
    let path = kubeconfig_path();
    if !path.exists() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "no cluster at {}: CI must run `make cluster-up` before the tests",
                path.display()
            );
        }
        eprintln!(
            "skipping: no cluster at {} (run `make cluster-up`)",
            path.display()
        );
        return None;
    }
    let kubeconfig = Kubeconfig::read_from(&path).expect("readable kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    let client = Client::try_from(config).expect("client");
    CRD_INSTALLED
        .get_or_init(|| install_crd(client.clone()))
        .await;
    Some(client)
}

async fn install_crd(client: Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&routemeter::crd::crd_yaml().expect("crd")).expect("crd yaml");
    crds.patch(
        "monitoredservices.routemeter.io",
        &PatchParams::apply("routemeter-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("install the CRD");
    wait_for("the CRD to be established", Duration::from_secs(30), || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("monitoredservices.routemeter.io").await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
}

/// The label on every namespace a test creates, so `tests/e2e-reset.sh` can remove those
/// a failed or interrupted run left behind (their pods hold the node's CPU).
pub const TEST_NAMESPACE_LABEL: &str = "routemeter.io/test-namespace";

/// Creates a namespace of its own for a test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", fastrand::u32(..) % 1_000_000);
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({ "metadata": { "name": name, "labels": { TEST_NAMESPACE_LABEL: "true" } } }),
        )
        .expect("ns"),
    )
    .await
    .expect("create namespace");
    name
}

/// Deletes a namespace (best effort, for cleanup).
pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// The image `make image` builds and loads into the node: the proxies the in-process
/// operator creates run from it, as the chart's do.
pub const PROXY_IMAGE: &str = concat!("routemeter/routemeter:", env!("CARGO_PKG_VERSION"));

/// Runs the real controller in this process, watching one namespace, until dropped.
pub struct Operator(tokio::task::JoinHandle<()>, prometheus::Registry);

impl Operator {
    pub fn start(client: &Client, ns: &str) -> Self {
        let registry = prometheus::Registry::new();
        let ctx = routemeter::operator::Context::new(
            client.clone(),
            routemeter::operator::Metrics::register(&registry).expect("metrics"),
            PROXY_IMAGE.into(),
        );
        let ctx = Arc::new(ctx);
        let ns = ns.to_string();
        Operator(
            tokio::spawn(async move { routemeter::operator::run_controller(ctx, Some(&ns)).await }),
            registry,
        )
    }

    /// The sum of the operator's metric `name` over its series whose labels include
    /// `labels` (`key="value"` each), as its `/metrics` shows them.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.1.gather())
            .expect("metrics encode");
        metric_in(&text, name, labels)
    }
}

/// The sum of metric `name` over its series whose labels include `labels` (`key="value"`
/// each) in a `/metrics` text.
pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                && labels.iter().all(|label| l.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A target Service selecting `app: <name>`, port 80 → 8080.
pub async fn create_target(client: &Client, ns: &str, name: &str) {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = json!({
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
    });
    api.create(
        &PostParams::default(),
        &serde_json::from_value(svc).expect("svc"),
    )
    .await
    .expect("create target");
}

/// Applies a MonitoredService from JSON.
pub async fn apply_msvc(client: &Client, ns: &str, msvc: serde_json::Value) -> MonitoredService {
    let api: Api<MonitoredService> = Api::namespaced(client.clone(), ns);
    let name = msvc["metadata"]["name"].as_str().expect("name").to_string();
    let mut msvc = msvc;
    msvc["apiVersion"] = json!("routemeter.io/v1alpha1");
    msvc["kind"] = json!("MonitoredService");
    api.patch(
        &name,
        &PatchParams::apply("routemeter-tests").force(),
        &Patch::Apply(&msvc),
    )
    .await
    .expect("apply msvc")
}

/// The status of a condition of a MonitoredService, with its reason and message.
pub async fn condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let api: Api<MonitoredService> = Api::namespaced(client.clone(), ns);
    let m = api.get(name).await.ok()?;
    m.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message))
}

/// Runs a project script (tests/cluster/*.sh) and checks it succeeded.
pub fn script(name: &str, args: &[&str]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cluster")
        .join(name);
    let status = std::process::Command::new("bash")
        .arg(&path)
        .args(args)
        .status()
        .expect("run script");
    assert!(status.success(), "{} {:?} failed", path.display(), args);
}

/// An Event on a MonitoredService, as `kubectl events` shows it.
#[derive(Debug, Clone)]
pub struct EventSeen {
    pub type_: String,
    pub reason: String,
    pub note: String,
    /// How many times it happened: 1, or its series' count.
    pub count: i32,
    pub reporter: String,
}

/// The events.k8s.io Events regarding the MonitoredService `name`.
pub async fn events_of(client: &Client, ns: &str, name: &str) -> Vec<EventSeen> {
    use k8s_openapi::api::events::v1::Event;
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .expect("list events");
    list.items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("MonitoredService") && r.name.as_deref() == Some(name)
            })
        })
        .map(|e| EventSeen {
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            note: e.note.unwrap_or_default(),
            count: e.series.map_or(1, |s| s.count),
            reporter: e.reporting_controller.unwrap_or_default(),
        })
        .collect()
}
