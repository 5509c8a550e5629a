//! Harness for tests that run routemeter as users run it: in pods on the project's real
//! node (`make cluster-up`), from the images `make image` built and loaded, with the
//! operator installed by the Helm chart. Builds on [`crate::cluster_support`].
//!
//! Traffic goes from this process to ClusterIPs and pod IPs of the node's bridge
//! (10.244.0.0/24, 10.96.0.0/16), which the node scripts keep on this machine.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Mutex, OnceCell};

use crate::cluster_support::{kubeconfig_path, wait_for};
use crate::support::{Metrics, REQUEST_COUNT};

/// The namespace and release of the chart install all tests share.
pub const RELEASE_NS: &str = "routemeter-system";
pub const RELEASE: &str = "routemeter";
/// The sample application's image (tests/sample-api), loaded into the node by `make image`.
pub const SAMPLE_IMAGE: &str = "routemeter/sample-api:dev";

static INSTALLED: OnceCell<()> = OnceCell::const_new();

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command to completion and returns its stdout; panics with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// kubectl of the cluster's release, with the cluster's admin kubeconfig.
pub fn kubectl(args: &[&str]) -> String {
    let bins = run("bash", &["tests/cluster/build.sh", "--if-built"]);
    let dir = bins
        .lines()
        .find_map(|l| l.strip_prefix("K8S_BIN="))
        .expect("the cluster's binaries are built (make cluster-up)")
        .to_string();
    let kubeconfig = kubeconfig_path();
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    run(&format!("{dir}/kubectl"), &all)
}

/// Evicts a pod as `kubectl drain` does (a policy/v1 Eviction posted to the pod's
/// `eviction` subresource); Err with the API server's answer when it refuses.
pub fn evict(ns: &str, pod: &str) -> Result<(), String> {
    let body = json!({ "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": { "name": pod, "namespace": ns } });
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), body.to_string()).expect("write the Eviction");
    let bins = run("bash", &["tests/cluster/build.sh", "--if-built"]);
    let dir = bins
        .lines()
        .find_map(|l| l.strip_prefix("K8S_BIN="))
        .expect("the cluster's binaries are built");
    let out = Command::new(format!("{dir}/kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args([
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction"),
            "-f",
        ])
        .arg(file.path())
        .output()
        .expect("run kubectl");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Deletes a test's namespace when dropped, whether the test passed or panicked, so a
/// failure never leaves pods holding the node's CPU for the tests after it.
pub struct DeleteOnDrop(pub String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let kubeconfig = kubeconfig_path();
        let bins = Command::new("bash")
            .args(["tests/cluster/build.sh", "--if-built"])
            .current_dir(repo())
            .output();
        let dir = bins.ok().and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("K8S_BIN=").map(str::to_string))
        });
        if let Some(dir) = dir {
            // A MonitoredService in takeover mode holds a finalizer that only a running
            // operator removes; the whole namespace goes, so nothing needs restoring.
            let kubectl = |args: &[&str]| {
                Command::new(format!("{dir}/kubectl"))
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["-n", &self.0])
                    .args(args)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            };
            for msvc in kubectl(&["get", "monitoredservices", "-o", "name"]).lines() {
                kubectl(&[
                    "patch",
                    msvc,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
            }
            let _ = Command::new(format!("{dir}/kubectl"))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["delete", "namespace", &self.0, "--wait=false"])
                .output();
        }
    }
}

/// The chart installed once for the whole test binary: `helm upgrade --install` of
/// charts/routemeter with two operator replicas (leader election), waiting until the
/// operator pods are Ready by their own probes. The Makefile uninstalls it afterwards.
pub async fn chart_installed(client: &Client) {
    INSTALLED
        .get_or_init(|| async {
            node_ready(client).await;
            let helm = run("bash", &["tests/helm.sh"]);
            let kubeconfig = kubeconfig_path();
            run(
                helm.trim(),
                &[
                    "--kubeconfig",
                    kubeconfig.to_str().expect("utf-8 path"),
                    "upgrade",
                    "--install",
                    RELEASE,
                    "charts/routemeter",
                    "--namespace",
                    RELEASE_NS,
                    "--create-namespace",
                    "--skip-crds",
                    "--set",
                    "replicas=2",
                    // Live figures every 5 s (pods.rs TRAFFIC_REFRESH), so a test sees them
                    // cleared after 10 s without a reading rather than a minute.
                    "--set",
                    "trafficRefresh=5s",
                    "--wait",
                    "--timeout",
                    "180s",
                ],
            );
        })
        .await;
}

/// Fails (in CI) or skips loudly unless the node is Ready and the images are loaded.
async fn node_ready(client: &Client) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    let ready = list.items.iter().any(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    assert!(
        ready,
        "no Ready node: `make cluster-up` starts one (see target/cluster/logs)"
    );
    let sock = repo().join("target/cluster/node/containerd.sock");
    let images = run(
        "ctr",
        &[
            "--address",
            sock.to_str().expect("utf-8 path"),
            "-n",
            "k8s.io",
            "images",
            "ls",
            "-q",
        ],
    );
    for image in ["routemeter/routemeter:", "routemeter/sample-api:dev"] {
        assert!(
            images.contains(image),
            "image {image} is not in the node: run `make image` (loaded: {images})"
        );
    }
}

/// The sample application: a Deployment of `replicas` pods labelled `app: <name>` with
/// container port 8080 named `http`, probed on /healthz, and a Service `<name>` on port 80
/// whose targetPort is `target_port` (8080 or "http").
pub async fn sample_app(
    client: &Client,
    ns: &str,
    name: &str,
    replicas: i32,
    target_port: serde_json::Value,
) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "api", "image": SAMPLE_IMAGE, "imagePullPolicy": "Never",
                        "ports": [{ "name": "http", "containerPort": 8080 }],
                        "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" },
                            "periodSeconds": 1, "failureThreshold": 1 },
                        "securityContext": { "runAsNonRoot": true, "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true, "capabilities": { "drop": ["ALL"] } },
                    }],
                },
            },
        },
    });
    deployments
        .patch(name, &apply(), &Patch::Apply(&deployment))
        .await
        .expect("apply the sample app Deployment");
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "spec": { "selector": { "app": name },
            "ports": [{ "name": "http", "port": 80, "targetPort": target_port }] },
    });
    services
        .patch(name, &apply(), &Patch::Apply(&service))
        .await
        .expect("apply the sample app Service");
}

/// Scales a Deployment.
pub async fn scale(client: &Client, ns: &str, name: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .expect("scale");
}

pub fn apply() -> PatchParams {
    PatchParams::apply("routemeter-tests").force()
}

/// The pods with `label` (e.g. `app=web`), Ready or not.
pub async fn pods(client: &Client, ns: &str, label: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(label))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until exactly `n` pods with `label` are Ready (and none other is left) and
/// returns their IPs.
pub async fn ready_pods(client: &Client, ns: &str, label: &str, n: usize) -> Vec<String> {
    wait_for(
        &format!("{n} Ready pods {label} in {ns}"),
        Duration::from_secs(120),
        || async {
            let all = pods(client, ns, label).await;
            let ready: Vec<String> = all
                .iter()
                .filter(|p| is_ready(p))
                .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
                .collect();
            (ready.len() == n && all.len() == n).then_some(ready)
        },
    )
    .await
}

/// Waits until exactly `n` pods with `label` exist, all Ready, none of them in `gone`
/// (a rollout or a deletion is over).
pub async fn replaced(client: &Client, ns: &str, label: &str, gone: &[String], n: usize) {
    wait_for(
        &format!("{n} Ready pods {label} in {ns}, none of {gone:?}"),
        Duration::from_secs(120),
        || async {
            let now = pods(client, ns, label).await;
            let fresh = now
                .iter()
                .filter(|p| !gone.contains(&p.name_any()) && is_ready(p))
                .count();
            (fresh == n && now.len() == n).then_some(())
        },
    )
    .await;
}

/// The label selecting a MonitoredService's proxy pods.
pub fn proxy_label(msvc: &str) -> String {
    format!("app.kubernetes.io/name=routemeter-proxy,app.kubernetes.io/instance={msvc}")
}

/// The ClusterIP of a Service.
pub async fn cluster_ip(client: &Client, ns: &str, name: &str) -> String {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Service {ns}/{name}"),
        Duration::from_secs(60),
        || async { api.get(name).await.ok()?.spec?.cluster_ip },
    )
    .await
}

/// The request counts the proxies at `ips` recorded, summed over pods, by
/// (route, method, status).
pub async fn proxy_counts(ips: &[String]) -> BTreeMap<(String, String, String), u64> {
    let http = http_client(true);
    let mut counts = BTreeMap::new();
    for ip in ips {
        let text = http
            .get(format!("http://{ip}:9901/metrics"))
            .send()
            .await
            .expect("a proxy's /metrics")
            .text()
            .await
            .expect("metrics text");
        let metrics = Metrics::parse(&text);
        for route in metrics.label_values(REQUEST_COUNT, "http_route") {
            for method in metrics.label_values(REQUEST_COUNT, "http_request_method") {
                for status in metrics.label_values(REQUEST_COUNT, "http_response_status_code") {
                    let n = metrics.sum(
                        REQUEST_COUNT,
                        &[
                            ("http_route", &route),
                            ("http_request_method", &method),
                            ("http_response_status_code", &status),
                        ],
                    );
                    if n > 0.0 {
                        *counts
                            .entry((route.clone(), method.clone(), status.clone()))
                            .or_insert(0) += n as u64;
                    }
                }
            }
        }
    }
    counts
}

/// A client without system proxies; `keep_alive: false` opens a new connection per
/// request, as many short-lived clients do (and as kube-proxy balances: per connection).
/// The routemeter processes running on this node, found from the host's `/proc` (the
/// node's containers are processes of this machine): for each, its subcommand (`proxy`,
/// `operator`) and the `THP_enabled` line of its `/proc/PID/status` (`1` when the kernel
/// may give it transparent huge pages).
pub fn routemeter_processes() -> Vec<(u32, String, String)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
        if args.next().as_deref() != Some("/routemeter") {
            continue;
        }
        let command = args.next().map(|a| a.into_owned()).unwrap_or_default();
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let thp = status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "(no THP_enabled line)".into());
        found.push((pid, command, thp));
    }
    found
}

pub fn http_client(keep_alive: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10));
    let builder = if keep_alive {
        builder
    } else {
        builder.pool_max_idle_per_host(0)
    };
    builder.build().expect("http client")
}

/// What a load run saw: answers by (path, status), and failures (no answer) by message.
#[derive(Debug, Default)]
pub struct Tally {
    pub answers: BTreeMap<(String, u16), u64>,
    pub failures: BTreeMap<String, u64>,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.answers.values().sum::<u64>() + self.failures.values().sum::<u64>()
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Answers with this status.
    pub fn with_status(&self, status: u16) -> u64 {
        self.answers
            .iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Steady load: `workers` loops each sending the paths in turn to `base` (with a pause
/// of `pause` after each answer), until stopped or `max` requests were sent in all.
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(base: String, paths: Vec<String>, workers: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let http = http_client(false);
        let tasks = (0..workers)
            .map(|w| {
                let (stop, tally, http, base, paths) = (
                    stop.clone(),
                    tally.clone(),
                    http.clone(),
                    base.clone(),
                    paths.clone(),
                );
                tokio::spawn(async move {
                    // Bounded whatever happens: at most 10 minutes of requests.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                        let path = &paths[i % paths.len()];
                        i += 1;
                        let result = http.get(format!("{base}{path}")).send().await;
                        let mut t = tally.lock().await;
                        match result {
                            Ok(r) => {
                                *t.answers
                                    .entry((path.clone(), r.status().as_u16()))
                                    .or_insert(0) += 1;
                            }
                            Err(e) => {
                                let mut message = e.to_string();
                                let mut source = std::error::Error::source(&e);
                                while let Some(s) = source {
                                    message = format!("{message}: {s}");
                                    source = s.source();
                                }
                                *t.failures.entry(message).or_insert(0) += 1;
                            }
                        }
                        drop(t);
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load { stop, tally, tasks }
    }

    /// Stops the load, waits for the requests in flight, and returns what was seen.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        Arc::try_unwrap(self.tally)
            .map(Mutex::into_inner)
            .unwrap_or_default()
    }

    /// Requests answered or failed so far.
    pub async fn sent(&self) -> u64 {
        self.tally.lock().await.total()
    }
}

/// The names of pods, for messages.
pub fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

/// The control port of the sample app's client mode (`sample-api client`).
pub const CLIENT_PORT: u16 = 8081;

/// What a [`ClientPod`] counted (`GET /counts`). Every request sent ends in `by_status`
/// (a full answer) or `errors` (none, by kind: refused, reset, timeout, dns, other), so
/// while paused `sent` is their sum; `ok` is the 2xx answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    pub by_status: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// The latest few transport errors, `kind: message`.
    pub last_errors: Vec<String>,
    pub paused: bool,
}

/// A client inside the cluster: a bare Pod running `sample-api client --url <url>` (GET
/// in a loop, one at a time unless `--concurrency`, a new connection per request, no
/// retries), resolving names through the cluster DNS as any pod does. Its counts are
/// read from this process at the pod IP (the node's bridge), on [`CLIENT_PORT`].
/// `restartPolicy: Never`: a restart would zero the counts unseen, so it fails instead.
pub struct ClientPod {
    pub name: String,
    pub ip: String,
    http: reqwest::Client,
}

impl ClientPod {
    /// Creates the Pod `name` (label `client: <name>`) with `extra_args` after `--url`
    /// (e.g. `["--interval", "10ms"]`) and waits until it is Running and Ready.
    pub async fn start(
        client: &Client,
        ns: &str,
        name: &str,
        url: &str,
        extra_args: &[&str],
    ) -> ClientPod {
        let port = CLIENT_PORT.to_string();
        let listen = format!(":{port}");
        let mut args = vec!["client", "--url", url, "--listen", &listen];
        args.extend_from_slice(extra_args);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "labels": { "client": name } },
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 2,
                // The client resolves the Service's name for every request (hundreds a
                // second). Over UDP the cluster DNS lost one query in a few thousand in
                // these runs (`lookup trips-api: i/o timeout` after 5 s, with or without
                // routemeter in the path); over TCP (`use-vc`, which Go's resolver
                // honours) none is lost, so a failure the tests see is the hop's.
                "dnsConfig": { "options": [{ "name": "use-vc" }] },
                "containers": [{
                    "name": "client", "image": SAMPLE_IMAGE, "imagePullPolicy": "Never",
                    "args": args,
                    "ports": [{ "name": "control", "containerPort": CLIENT_PORT }],
                    "readinessProbe": { "httpGet": { "path": "/healthz", "port": "control" },
                        "periodSeconds": 1 },
                    "securityContext": { "runAsNonRoot": true, "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true, "capabilities": { "drop": ["ALL"] } },
                }],
            },
        });
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        api.patch(name, &apply(), &Patch::Apply(&pod))
            .await
            .expect("apply the client Pod");
        let ip = wait_for(
            &format!("client pod {ns}/{name} Running and Ready"),
            Duration::from_secs(120),
            || async {
                let pod = api.get(name).await.ok()?;
                let status = pod.status.as_ref()?;
                let phase = status.phase.as_deref().unwrap_or_default();
                if phase == "Failed" || phase == "Succeeded" {
                    let logs = kubectl(&["-n", ns, "logs", name]);
                    panic!("client pod {ns}/{name} exited ({phase}):\n{logs}");
                }
                (phase == "Running" && is_ready(&pod))
                    .then(|| status.pod_ip.clone())
                    .flatten()
            },
        )
        .await;
        ClientPod {
            name: name.to_string(),
            ip,
            http: http_client(true),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> Counts {
        let url = format!("http://{}:{CLIENT_PORT}{path}", self.ip);
        let response = self
            .http
            .request(method, &url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("client pod {}: {url}: {e}", self.name));
        assert!(
            response.status().is_success(),
            "client pod {}: {url}: {}",
            self.name,
            response.status()
        );
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("client pod {}: {url}: not counts: {e}", self.name))
    }

    /// The counts so far.
    pub async fn counts(&self) -> Counts {
        self.call(reqwest::Method::GET, "/counts").await
    }

    /// Stops sending; returns once no request is in flight, with the counts, which then
    /// stay as they are until [`ClientPod::resume`].
    pub async fn pause(&self) -> Counts {
        self.call(reqwest::Method::POST, "/pause").await
    }

    pub async fn resume(&self) -> Counts {
        self.call(reqwest::Method::POST, "/resume").await
    }

    /// Zeroes the counts (requests in flight then count as sent in the new period).
    pub async fn reset(&self) -> Counts {
        self.call(reqwest::Method::POST, "/reset").await
    }
}
