//! routemeter as users run it: the operator installed by the Helm chart (two replicas,
//! leader election) and the proxies it creates, all in pods on the project's real node,
//! from the images `make image` built; the sample application (tests/sample-api) behind
//! them; traffic from this process through ClusterIPs, as a client in the cluster sends it.
//!
//! Each test has a namespace of its own; they share the chart install. `make test` runs
//! this binary after the others (the chart's operator watches every namespace) and
//! uninstalls the chart afterwards.

mod cluster_support;
mod common;
mod node_support;
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_support::*;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use node_support::*;
use routemeter::crd::MonitoredService;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

/// A MonitoredService in front of `target` (port 80) with the sample app's routes.
/// The text a proxy pod's admin port answers at `path`, if it answers.
async fn admin_text(http: &reqwest::Client, ip: &str, path: &str) -> Option<String> {
    http.get(format!("http://{ip}:9901{path}"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

fn msvc(name: &str, target: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "target": { "service": target, "port": 80 },
        "routes": [
            { "path": "/api/trips", "methods": ["GET"] },
            { "path": "/api/trips/{id}", "methods": ["GET"] },
            { "path": "/navigate", "methods": ["POST"] },
            { "path": "/status/{code}" },
            { "path": "/delay/{ms}" },
        ],
        "scaling": { "enabled": false },
        "proxy": { "replicas": 2 },
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({ "metadata": { "name": name }, "spec": spec })
}

/// A namespace with the chart installed and the sample app `app` (2 pods) behind a
/// MonitoredService of the same name, its proxies Ready by their own probes and the
/// MonitoredService Ready. Returns the namespace (deleted when the guard drops), the
/// proxies' pod IPs and the proxy Service's address.
async fn monitored_app(
    client: &Client,
    prefix: &str,
    extra: serde_json::Value,
) -> (DeleteOnDrop, String, Vec<String>, String) {
    chart_installed(client).await;
    let ns = namespace(client, prefix).await;
    let guard = DeleteOnDrop(ns.clone());
    sample_app(client, &ns, "app", 2, json!(8080)).await;
    apply_msvc(client, &ns, msvc("app", "app", extra)).await;
    let proxies = ready_pods(client, &ns, &proxy_label("app"), 2).await;
    wait_for("the MonitoredService Ready=True", WAIT, || async {
        condition(client, &ns, "app", "Ready")
            .await
            .filter(|c| c.0 == "True")
    })
    .await;
    // Ready proxies take traffic; wait until each has found the application's pods too
    // (from the target's EndpointSlices), so the tests' load starts on a working service.
    let http = http_client(true);
    for ip in &proxies {
        wait_for(
            &format!("proxy {ip} to have upstream endpoints"),
            WAIT,
            || async {
                let body = admin_text(&http, ip, "/readyz").await?;
                (body.contains(" healthy") && !body.contains(" 0 healthy")).then_some(())
            },
        )
        .await;
    }
    // And kube-proxy has the proxy Service's endpoints: a new Service answers only once
    // it has synced them, which takes longer while other tests churn Services too.
    let ip = cluster_ip(client, &ns, "app-routemeter").await;
    // A connection, no request: the proxies count requests, and the tests count them all.
    wait_for("the proxy Service to accept connections", WAIT, || async {
        tokio::net::TcpStream::connect(format!("{ip}:80"))
            .await
            .ok()
            .map(drop)
    })
    .await;
    (guard, ns, proxies, format!("http://{ip}"))
}

/// The proxies' counts summed by status code.
fn by_status(counts: &BTreeMap<(String, String, String), u64>) -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for ((_, _, status), n) in counts {
        *out.entry(status.parse().expect("a status code"))
            .or_insert(0) += n;
    }
    out
}

fn tally_by_status(tally: &Tally) -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for ((_, status), n) in &tally.answers {
        *out.entry(*status).or_insert(0) += n;
    }
    out
}

/// A Prometheus of the pinned Prometheus Operator release, as kube-prometheus-stack has
/// it: the operator (installed once) and a Prometheus 3 named `release` in namespace
/// `monitoring`, selecting ServiceMonitors and PrometheusRules labelled
/// `release: <release>` in every namespace, scraping and evaluating every 5 s
/// (tests/cluster/prometheus-stack.sh). Returns its API's address (its pod's: this
/// process reaches pods, never Service addresses).
fn prometheus_stack(release: &str) -> String {
    let out = run(
        "bash",
        &[
            "tests/cluster/prometheus-stack.sh",
            "install",
            "--release",
            release,
        ],
    );
    out.lines()
        .find_map(|l| l.strip_prefix("PROMETHEUS_URL="))
        .unwrap_or_else(|| panic!("prometheus-stack.sh printed no PROMETHEUS_URL: {out}"))
        .to_string()
}

/// Removes the Prometheus of a release when dropped (the operator stays for the others).
struct UninstallOnDrop(&'static str);

impl Drop for UninstallOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .args([
                "tests/cluster/prometheus-stack.sh",
                "uninstall",
                "--release",
                self.0,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output();
    }
}

/// `GET {prometheus}{path}`'s `data`, when Prometheus answers with success.
async fn prometheus_api(
    http: &reqwest::Client,
    prometheus: &str,
    path: &str,
) -> Option<serde_json::Value> {
    let r: serde_json::Value = http
        .get(format!("{prometheus}{path}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    (r["status"] == "success").then(|| r["data"].clone())
}

/// The active scrape targets of namespace `ns` by `monitored_service`, with their health.
async fn targets_of(http: &reqwest::Client, prometheus: &str, ns: &str) -> Vec<(String, String)> {
    let data = prometheus_api(http, prometheus, "/api/v1/targets?state=active")
        .await
        .unwrap_or_default();
    data["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["labels"]["namespace"] == ns)
        .map(|t| {
            (
                t["labels"]["monitored_service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                t["health"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The alerts of `name` about namespace `ns`: (monitored_service, http_route, state).
async fn alerts_of(
    http: &reqwest::Client,
    prometheus: &str,
    ns: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    let data = prometheus_api(http, prometheus, "/api/v1/alerts")
        .await
        .unwrap_or_default();
    data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == name && a["labels"]["namespace"] == ns)
        .map(|a| {
            let label = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_string();
            (
                label("monitored_service"),
                label("http_route"),
                a["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The value of an instant query's first sample.
async fn prometheus_value(http: &reqwest::Client, prometheus: &str, q: &str) -> Option<f64> {
    let mut url = reqwest::Url::parse(&format!("{prometheus}/api/v1/query")).ok()?;
    url.query_pairs_mut().append_pair("query", q);
    let data = prometheus_api(http, "", url.as_str()).await?;
    data["result"][0]["value"][1].as_str()?.parse().ok()
}

/// The tests, in a module of their own so `make test` can run them apart from the
/// in-process operator tests (`--skip in_pods::`), with which the chart's operator would
/// otherwise share namespaces.
mod in_pods {
    use super::*;

    #[tokio::test]
    async fn proxies_in_pods_are_ready_and_count_every_request_exactly() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        let (_cleanup, ns, proxies, base) = monitored_app(&client, "exact", json!({})).await;

        // The default resources set no CPU limit, so each proxy could use every CPU of the
        // node: the operator gives them one worker, not one per CPU.
        for ip in &proxies {
            let config: serde_json::Value = http_client(true)
                .get(format!("http://{ip}:9901/config"))
                .send()
                .await
                .expect("/config")
                .json()
                .await
                .expect("/config as JSON");
            assert_eq!(config["server"]["workers"], 1, "proxy {ip}: {config}");
        }

        // The image sets MIMALLOC_ALLOW_THP=0: every routemeter process on the node, the
        // chart's operators and the proxies, has transparent huge pages disabled (prctl),
        // so a node that gives them to every process does not inflate their RSS.
        let processes = routemeter_processes();
        let running_proxies = processes.iter().filter(|(_, c, _)| c == "proxy").count();
        assert!(
            running_proxies >= proxies.len() && processes.iter().any(|(_, c, _)| c == "operator"),
            "the node runs this test's {} proxies and the chart's operator: {processes:?}",
            proxies.len()
        );
        for (pid, command, thp) in &processes {
            assert_eq!(
                thp, "0",
                "/routemeter {command} (pid {pid}) may get huge pages"
            );
        }

        // 1,000 requests through the proxy Service's ClusterIP, 8 at a time, each on a new
        // connection (kube-proxy balances connections, so both proxies take a share).
        let http = http_client(false);
        let requests: Vec<(&str, String, &str)> = (0..1000)
            .map(|i| match i % 10 {
                0..=4 => (
                    "GET",
                    format!("/api/trips?page={}&limit={}", i % 7 + 1, 10 + i % 3 * 10),
                    "/api/trips",
                ),
                5..=7 => (
                    "GET",
                    format!("/api/trips/{}", i % 500 + 1),
                    "/api/trips/{id}",
                ),
                8 => ("POST", "/navigate".to_string(), "/navigate"),
                _ => ("GET", "/status/503".to_string(), "/status/{code}"),
            })
            .collect();
        let answers: Vec<((String, String, String), bool)> =
            futures::stream::iter(requests.iter().map(|(method, path, route)| {
                let http = http.clone();
                let base = base.clone();
                async move {
                    let request = if *method == "POST" {
                        http.post(format!("{base}{path}"))
                            .header("content-type", "application/json")
                            .body(r#"{"from":"Lisbon","to":"Porto"}"#)
                    } else {
                        http.get(format!("{base}{path}"))
                    };
                    match request.send().await {
                        Ok(r) => (
                            (
                                route.to_string(),
                                method.to_string(),
                                r.status().as_u16().to_string(),
                            ),
                            true,
                        ),
                        Err(e) => (
                            (route.to_string(), method.to_string(), e.to_string()),
                            false,
                        ),
                    }
                }
            }))
            .buffer_unordered(8)
            .collect()
            .await;
        let failed: Vec<_> = answers.iter().filter(|(_, ok)| !ok).collect();
        assert!(failed.is_empty(), "requests without an answer: {failed:?}");
        let mut sent = BTreeMap::new();
        for (key, _) in answers {
            *sent.entry(key).or_insert(0u64) += 1;
        }
        assert_eq!(
            sent.get(&("/status/{code}".into(), "GET".into(), "503".into())),
            Some(&100),
            "the sample app answers /status/503 with 503: {sent:?}"
        );

        // The proxies' own counts, summed over both pods, equal what was sent, per route,
        // method and status (recording runs just after each response: poll briefly).
        let counted = wait_for(
            "the proxies to have counted all 1,000 requests",
            Duration::from_secs(15),
            || async {
                let c = proxy_counts(&proxies).await;
                (c.values().sum::<u64>() >= 1000).then_some(c)
            },
        )
        .await;
        assert_eq!(
            counted, sent,
            "per route, method and status, the proxies count what the client saw"
        );
        let per_pod: Vec<u64> = futures::future::join_all(proxies.iter().map(|ip| async move {
            proxy_counts(std::slice::from_ref(ip))
                .await
                .values()
                .sum::<u64>()
        }))
        .await;
        assert!(
            per_pod.iter().all(|n| *n > 0),
            "both proxies took traffic: {per_pod:?}"
        );

        // Live figures in the status and in `kubectl get msvc`, under steady traffic with
        // 1 request in 10 failing.
        let paths: Vec<String> = (0..10)
            .map(|i| {
                if i == 0 {
                    "/status/500".to_string()
                } else {
                    format!("/api/trips/{i}")
                }
            })
            .collect();
        let load = Load::start(base.clone(), paths, 2, Duration::from_millis(20));
        let api: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
        // The worst route is named once it has enough requests in the minute to be scored
        // with confidence (20, as a recommendation needs): a few refreshes (5 s here).
        let figures = wait_for("traffic figures in status", WAIT, || async {
            let t = api.get("app").await.ok()?.status?.traffic?;
            let rps: f64 = t.requests_per_second.parse().ok()?;
            let worst_known = t
                .worst_route
                .as_deref()
                .is_some_and(|w| w.starts_with("GET /status/{code}"));
            (rps > 5.0 && worst_known).then_some(t)
        })
        .await;
        let printed = kubectl(&["get", "msvc", "app", "-n", &ns]);
        let tally = load.stop().await;
        assert_eq!(tally.failed(), 0, "{tally:?}");
        let errors: f64 = figures
            .error_ratio
            .trim_end_matches('%')
            .parse()
            .expect("a percentage");
        assert!(
            (5.0..=15.0).contains(&errors),
            "1 request in 10 fails: {figures:?}"
        );
        assert!(
            printed.contains(&figures.requests_per_second)
                || printed.contains(&figures.error_ratio),
            "kubectl get msvc shows the live figures {figures:?}:\n{printed}"
        );
        let header = printed.lines().next().unwrap_or_default();
        for column in ["MODE", "READY", "RPS", "P95", "ERRORS", "SCORE"] {
            assert!(header.contains(column), "column {column}: {printed}");
        }
        // Merged from both proxies' /api/summary: a p95, a score, the failing route the worst.
        assert!(
            figures.p95.is_some() && figures.score.is_some(),
            "{figures:?}"
        );
        assert!(
            figures
                .worst_route
                .as_deref()
                .is_some_and(|w| w.starts_with("GET /status/{code}")),
            "{figures:?}"
        );
        let observed = api
            .get("app")
            .await
            .expect("msvc")
            .status
            .expect("status")
            .conditions
            .into_iter()
            .find(|c| c.type_ == "TrafficObserved")
            .expect("TrafficObserved");
        assert_eq!(observed.status, "True", "{observed:?}");

        // Logs, as a person reads them: JSON lines, with no build-machine paths.
        let proxy_pod = pods(&client, &ns, &proxy_label("app")).await;
        let operator_pods = pods(
            &client,
            RELEASE_NS,
            "app.kubernetes.io/name=routemeter,app.kubernetes.io/instance=routemeter",
        )
        .await;
        assert_eq!(operator_pods.len(), 2, "{:?}", names(&operator_pods));
        for (pod_ns, pod) in proxy_pod
            .iter()
            .map(|p| (ns.as_str(), p))
            .chain(operator_pods.iter().map(|p| (RELEASE_NS, p)))
        {
            let logs = kubectl(&["logs", "-n", pod_ns, &pod.name_any()]);
            assert!(!logs.trim().is_empty(), "{} logs something", pod.name_any());
            for line in logs.lines().filter(|l| !l.trim().is_empty()) {
                let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}: not a JSON line ({e}): {line}", pod.name_any())
                });
                assert!(value.get("level").is_some(), "a level: {line}");
                for build_path in ["/root/", ".cargo/registry", "/rustc/", "/src/"] {
                    assert!(
                        !line.contains(build_path),
                        "{}: a build-machine path in the log: {line}",
                        pod.name_any()
                    );
                }
            }
        }

        // `routemeter top --msvc` through the real API server's pod proxy: the merged
        // summary of both proxies equals what each proxy's own /api/summary says, merged.
        let direct: Vec<routemeter::summary::Summary> = {
            let http = http_client(true);
            let mut parts = Vec::new();
            for ip in &proxies {
                let part = http
                    .get(format!("http://{ip}:9901/api/summary?window=1h"))
                    .send()
                    .await
                    .expect("a proxy's summary")
                    .json()
                    .await
                    .expect("summary JSON");
                parts.push(part);
            }
            parts
        };
        let kubeconfig = kubeconfig_path();
        let out = std::process::Command::new(common::BIN)
            .args([
                "top", "--msvc", "app", "-n", &ns, "--window", "1h", "--once", "-o", "json",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env_remove("ROUTEMETER_ADMIN")
            .output()
            .expect("run routemeter top");
        assert!(
            out.status.success(),
            "routemeter top --msvc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let through_api: routemeter::summary::Summary =
            serde_json::from_slice(&out.stdout).expect("top's JSON");
        let merged = routemeter::summary::merge(&direct).expect("mergeable");
        assert_eq!(
            (through_api.overall.requests, through_api.routes.len()),
            (merged.overall.requests, merged.routes.len()),
            "top --msvc merged both proxies through the pod proxy"
        );
        assert!(
            through_api.overall.requests >= 1000,
            "{:?}",
            through_api.overall
        );
        // And `routemeter compare --msvc` over its two windows, which hold the same traffic
        // here (all of it within the last 5 minutes): no regression, exit 0.
        let out = std::process::Command::new(common::BIN)
            .args(["compare", "--msvc", "app", "-n", &ns, "-o", "json"])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .expect("run routemeter compare");
        assert_eq!(
            out.status.code(),
            Some(0),
            "routemeter compare --msvc: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("compare's JSON");
        assert!(
            report["msvc"].is_object() && report["regressed"] == false,
            "{report:#}"
        );
    }

    /// The chart's `trafficRefresh` in these tests (node_support installs it so): figures no
    /// proxy confirmed for two periods are cleared.
    const TRAFFIC_REFRESH: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn traffic_figures_no_proxy_confirms_are_cleared_and_come_back() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        let (_cleanup, ns, _proxies, base) = monitored_app(&client, "stale", json!({})).await;
        let api: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
        let traffic_condition = || async {
            api.get("app")
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "TrafficObserved")
        };
        let paths = (1..=10).map(|i| format!("/api/trips/{i}")).collect();
        let load = Load::start(base, paths, 1, Duration::from_millis(20));
        wait_for("traffic figures in status", WAIT, || async {
            let t = api.get("app").await.ok()?.status?.traffic?;
            (t.requests_per_second.parse::<f64>().ok()? > 1.0).then_some(())
        })
        .await;
        assert_eq!(load.stop().await.failed(), 0);

        // No proxy left to answer: the figures go, and the condition says why.
        api.patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "proxy": { "replicas": 0 } } })),
        )
        .await
        .expect("scale the proxies to 0");
        let scaled = Instant::now();
        let label = proxy_label("app");
        wait_for("the proxies to be gone", WAIT, || async {
            pods(&client, &ns, &label).await.is_empty().then_some(())
        })
        .await;
        let gone = scaled.elapsed();
        let cleared = wait_for("the figures cleared", WAIT, || async {
            let status = api.get("app").await.ok()?.status?;
            let c = status
                .conditions
                .iter()
                .find(|c| c.type_ == "TrafficObserved")?;
            (status.traffic.is_none() && c.status == "False").then(|| c.clone())
        })
        .await;
        let after = scaled.elapsed();
        eprintln!(
            "figures cleared {after:?} after the scale to 0 (the proxies gone after {gone:?})"
        );
        assert_eq!(cleared.reason, "NoReading", "{cleared:?}");
        assert!(
            cleared
                .message
                .contains("no ready proxy answered /api/summary for 10 s"),
            "{cleared:?}"
        );
        // A draining proxy stops being read once it is no longer Ready; then two periods
        // without a reading, noticed at most one period late.
        assert!(
            after <= gone + TRAFFIC_REFRESH * 3 + Duration::from_secs(5),
            "cleared {after:?} after the scale to 0, the proxies gone after {gone:?}"
        );
        assert!(
            kubectl(&[
                "get",
                "msvc",
                "app",
                "-n",
                &ns,
                "-o",
                "jsonpath={.status.traffic}"
            ])
            .trim()
            .is_empty(),
            "kubectl get msvc shows no stale figure"
        );

        // A proxy again: figures again (of an idle minute), and the condition True.
        api.patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "proxy": { "replicas": 1 } } })),
        )
        .await
        .expect("scale the proxies to 1");
        let back = wait_for("the figures back", WAIT, || async {
            let c = traffic_condition().await?;
            let traffic = api.get("app").await.ok()?.status?.traffic?;
            (c.status == "True").then_some(traffic)
        })
        .await;
        assert!(back.observed_at.len() > 10, "{back:?}");
    }

    #[tokio::test]
    async fn the_chart_runs_two_operators_one_leader_both_ready() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        chart_installed(&client).await;
        let label = "app.kubernetes.io/name=routemeter,app.kubernetes.io/instance=routemeter";
        let operators = ready_pods(&client, RELEASE_NS, label, 2).await;
        assert_eq!(operators.len(), 2);
        let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE_NS);
        let holder = wait_for("a leader", WAIT, || async {
            leases.get(RELEASE).await.ok()?.spec?.holder_identity
        })
        .await;
        let names = names(&pods(&client, RELEASE_NS, label).await);
        assert!(
            names.contains(&holder),
            "the Lease is held by one of the operator pods {names:?}: {holder}"
        );
        // Each replica's /readyz, as its probe sees it: ready once its caches synced,
        // whether leader or standby.
        let http = http_client(true);
        for ip in &operators {
            let pods_in_ns: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NS);
            let port = pods_in_ns
                .list(&ListParams::default().labels(label))
                .await
                .expect("pods")
                .items
                .iter()
                .find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()) == Some(ip))
                .and_then(|p| {
                    p.spec.as_ref()?.containers[0]
                        .readiness_probe
                        .as_ref()?
                        .http_get
                        .as_ref()
                        .map(|g| g.port.clone())
                })
                .expect("a readiness probe on HTTP");
            let port = match port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => p,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_) => 8080,
            };
            let status = http
                .get(format!("http://{ip}:{port}/readyz"))
                .send()
                .await
                .expect("/readyz answers")
                .status();
            assert!(status.is_success(), "{ip}: /readyz {status}");
        }
    }

    #[tokio::test]
    async fn named_port_selectorless_and_external_name_targets_reconcile_to_the_end() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        chart_installed(&client).await;
        let ns = namespace(&client, "targets").await;
        let _cleanup = DeleteOnDrop(ns.clone());
        // `named`: the usual Deployment and Service, with `targetPort: http`.
        sample_app(&client, &ns, "named", 1, json!("http")).await;
        let app_ip = ready_pods(&client, &ns, "app=named", 1).await.remove(0);
        // `manual`: no selector, endpoints written by hand (an EndpointSlice to the app pod).
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let manual = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "manual" },
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] } });
        services
            .patch("manual", &apply(), &Patch::Apply(&manual))
            .await
            .expect("manual Service");
        let slices: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice"),
                "endpointslices",
            ),
        );
        let slice = json!({ "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "manual-1", "labels": { "kubernetes.io/service-name": "manual" } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        "endpoints": [{ "addresses": [app_ip], "conditions": { "ready": true } }] });
        slices
            .patch("manual-1", &apply(), &Patch::Apply(&slice))
            .await
            .expect("manual EndpointSlice");
        // `external`: an ExternalName to `named` through cluster DNS.
        let external = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "external" },
        "spec": { "type": "ExternalName", "externalName": format!("named.{ns}.svc.cluster.local") } });
        services
            .patch("external", &apply(), &Patch::Apply(&external))
            .await
            .expect("ExternalName Service");

        for target in ["named", "manual", "external"] {
            let name = format!("via-{target}");
            // Scaling on (the default): the HPA and the PDB are part of "to the end".
            apply_msvc(
                &client,
                &ns,
                msvc(
                    &name,
                    target,
                    json!({ "scaling": { "enabled": true, "minReplicas": 2, "maxReplicas": 3 } }),
                ),
            )
            .await;
        }
        for target in ["named", "manual", "external"] {
            let name = format!("via-{target}");
            wait_for(&format!("{name} Ready=True"), WAIT, || async {
                condition(&client, &ns, &name, "Ready")
                    .await
                    .filter(|c| c.0 == "True")
            })
            .await;
            // Reconciled to the end: the monitoring step ran and reported (no Prometheus
            // runs here, so nothing selects the objects: NotSelected).
            let (_, reason, message) = condition(&client, &ns, &name, "MonitoringConfigured")
                .await
                .expect("MonitoringConfigured");
            assert!(
                ["Selected", "NotSelected"].contains(&reason.as_str()),
                "{name}: {reason}: {message}"
            );
            for (kind, plural, group) in [
                (
                    "HorizontalPodAutoscaler",
                    "horizontalpodautoscalers",
                    "autoscaling/v2",
                ),
                ("PodDisruptionBudget", "poddisruptionbudgets", "policy/v1"),
                (
                    "ServiceMonitor",
                    "servicemonitors",
                    "monitoring.coreos.com/v1",
                ),
                (
                    "PrometheusRule",
                    "prometheusrules",
                    "monitoring.coreos.com/v1",
                ),
            ] {
                let (g, v) = group.split_once('/').unwrap_or(("", group));
                let api: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &ns,
                    &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, kind), plural),
                );
                assert!(
                    api.get_opt(&format!("{name}-routemeter"))
                        .await
                        .expect("get")
                        .is_some(),
                    "{name}: no {kind}"
                );
            }
            // The proxy goes through the target Service itself: no headless Service.
            assert!(
                services
                    .get_opt(&format!("{name}-routemeter-upstream"))
                    .await
                    .expect("get")
                    .is_none(),
                "{name}: the headless upstream Service is not for this target"
            );
            // And it works: every request through the proxy reaches the app.
            let ip = cluster_ip(&client, &ns, &format!("{name}-routemeter")).await;
            let http = http_client(false);
            // A Service created a moment ago: kube-proxy writes its rules within a
            // second or two, as for any new Service.
            wait_for(
                &format!("{name}: the proxy Service to answer"),
                WAIT,
                || async {
                    http.get(format!("http://{ip}/healthz"))
                        .send()
                        .await
                        .ok()
                        .map(|_| ())
                },
            )
            .await;
            for i in 1..=20 {
                let status = http
                    .get(format!("http://{ip}/api/trips/{i}"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{name}: no answer: {e}"))
                    .status();
                assert_eq!(status, 200, "{name}: /api/trips/{i}");
            }
        }
    }

    #[tokio::test]
    async fn a_proxy_rollout_under_load_fails_no_request() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        let (_cleanup, ns, _, base) = monitored_app(&client, "rollout", json!({})).await;
        let before: Vec<String> = names(&pods(&client, &ns, &proxy_label("app")).await);

        // Steady load, a new connection per request (what kube-proxy reroutes).
        let paths = (1..=50).map(|i| format!("/api/trips/{i}")).collect();
        let load = Load::start(base, paths, 4, Duration::from_millis(5));
        tokio::time::sleep(Duration::from_secs(3)).await;
        // A change that needs new pods: a new latency threshold is a new histogram bucket,
        // read at start.
        let mut changed = msvc("app", "app", json!({}));
        changed["spec"]["monitoring"] = json!({ "slo": { "latencyThresholdSeconds": 0.4 } });
        apply_msvc(&client, &ns, changed).await;
        replaced(&client, &ns, &proxy_label("app"), &before, 2).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let tally = load.stop().await;
        assert!(tally.total() > 300, "steady load was sent: {tally:?}");
        assert_eq!(
            tally.failed(),
            0,
            "no request fails during a rollout: {:?}",
            tally.failures
        );
        assert_eq!(
            tally.with_status(200),
            tally.total(),
            "every request answered 200: {tally:?}"
        );
    }

    /// One request through the proxies, its outcome added to `seen`: the status, or None
    /// when there was no answer (a failure the proxies could not count).
    async fn probe(
        http: &reqwest::Client,
        url: &str,
        seen: &tokio::sync::Mutex<Tally>,
    ) -> Option<u16> {
        let mut t = seen.lock().await;
        match http.get(url).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                *t.answers.entry((url.to_string(), status)).or_insert(0) += 1;
                Some(status)
            }
            Err(e) => {
                *t.failures.entry(e.to_string()).or_insert(0) += 1;
                None
            }
        }
    }

    #[tokio::test]
    async fn with_the_application_down_proxies_stay_and_answer_503_counted() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        let (_cleanup, ns, proxies, base) = monitored_app(&client, "appdown", json!({})).await;
        let app_ips = ready_pods(&client, &ns, "app=app", 2).await;
        let paths = (1..=20).map(|i| format!("/api/trips/{i}")).collect();
        let load = Load::start(base.clone(), paths, 2, Duration::from_millis(20));
        let http = http_client(false);
        let probes = tokio::sync::Mutex::new(Tally::default());
        let url = format!("{base}/api/trips/1");
        let answers = |status: u16| {
            let (http, url, probes) = (&http, &url, &probes);
            move || async move { (probe(http, url, probes).await? == status).then_some(()) }
        };

        // Every application pod fails its readiness probe: it leaves the endpoints, and the
        // proxies, still Ready themselves, answer 503 at once.
        for ip in &app_ips {
            http.post(format!("http://{ip}:8080/admin/unhealthy"))
                .send()
                .await
                .expect("the sample app's health toggle");
        }
        // Each proxy finds out at its next lookup (resolveInterval): wait for all of them.
        let readyz = http_client(true);
        for ip in &proxies {
            wait_for(&format!("proxy {ip} to see no endpoint"), WAIT, || async {
                let body = readyz
                    .get(format!("http://{ip}:9901/readyz"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                body.contains("no upstream endpoint").then_some(())
            })
            .await;
        }
        wait_for("the proxies to answer 503", WAIT, answers(503)).await;
        let started = Instant::now();
        assert_eq!(probe(&http, &url, &probes).await, Some(503));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "503 at once, not after a connect timeout: {:?}",
            started.elapsed()
        );
        assert_eq!(
            ready_pods(&client, &ns, &proxy_label("app"), 2).await.len(),
            2,
            "the proxies stay Ready (in their Service) while the application is down"
        );
        for ip in &app_ips {
            http.post(format!("http://{ip}:8080/admin/healthy"))
                .send()
                .await
                .expect("the sample app's health toggle");
        }
        wait_for("the application to answer again", WAIT, answers(200)).await;

        // Scaled to 0 and back.
        scale(&client, &ns, "app", 0).await;
        wait_for("the application pods to be gone", WAIT, || async {
            pods(&client, &ns, "app=app").await.is_empty().then_some(())
        })
        .await;
        wait_for("the proxies to answer 503", WAIT, answers(503)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        scale(&client, &ns, "app", 2).await;
        ready_pods(&client, &ns, "app=app", 2).await;
        wait_for("the application to answer again", WAIT, answers(200)).await;
        let tally = load.stop().await;
        let probes = probes.into_inner();

        // What the clients saw, every failure included, is exactly what the proxies counted.
        assert_eq!(
            tally.failed() + probes.failed(),
            0,
            "every request got an answer: {tally:?} {probes:?}"
        );
        assert!(
            tally.with_status(503) > 0,
            "the load saw the outage: {tally:?}"
        );
        let mut seen = tally_by_status(&tally);
        for (status, n) in tally_by_status(&probes) {
            *seen.entry(status).or_insert(0) += n;
        }
        let counted = wait_for(
            "the proxies' counts to settle",
            Duration::from_secs(10),
            || async {
                let c = by_status(&proxy_counts(&proxies).await);
                (c.values().sum::<u64>() >= seen.values().sum::<u64>()).then_some(c)
            },
        )
        .await;
        assert_eq!(
            counted, seen,
            "by status, the proxies count what the clients saw"
        );
    }

    #[tokio::test]
    async fn a_proxy_pod_deleted_under_load_and_evictions_respect_the_pdb() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        let (_cleanup, ns, _, base) = monitored_app(
            &client,
            "evict",
            json!({ "scaling": { "enabled": true, "minReplicas": 2, "maxReplicas": 2 } }),
        )
        .await;
        let paths = (1..=50).map(|i| format!("/api/trips/{i}")).collect();
        let load = Load::start(base, paths, 4, Duration::from_millis(5));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let victim = pods(&client, &ns, &proxy_label("app")).await[0].name_any();
        api.delete(&victim, &DeleteParams::default())
            .await
            .expect("delete a proxy pod");
        replaced(
            &client,
            &ns,
            &proxy_label("app"),
            std::slice::from_ref(&victim),
            2,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tally = load.stop().await;
        assert!(tally.total() > 200, "{tally:?}");
        assert_eq!(
            tally.failed(),
            0,
            "the other proxy took the traffic: {tally:?}"
        );
        assert_eq!(tally.with_status(200), tally.total(), "{tally:?}");

        // The PDB allows one proxy down at a time: a second eviction while the first pod is
        // still going is refused.
        ready_pods(&client, &ns, &proxy_label("app"), 2).await;
        let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
            Api::namespaced(client.clone(), &ns);
        wait_for("the PDB to allow one disruption", WAIT, || async {
            let s = pdbs.get("app-routemeter").await.ok()?.status?;
            (s.disruptions_allowed == 1).then_some(())
        })
        .await;
        let two = names(&pods(&client, &ns, &proxy_label("app")).await);
        evict(&ns, &two[0]).expect("the first eviction is allowed");
        // The other proxy, Ready, is the only one left to serve: evicting it too would
        // leave none, and the PDB refuses.
        let other = api.get(&two[1]).await.expect("the other proxy pod");
        assert!(
            is_ready(&other),
            "the other proxy is Ready: {:?}",
            other.status.and_then(|s| s.conditions)
        );
        match evict(&ns, &two[1]) {
            Err(answer) => assert!(
                answer.contains("TooManyRequests") && answer.contains("disruption budget"),
                "{answer}"
            ),
            Ok(()) => panic!(
                "the second eviction must be refused by the PDB; PDB status {:?}",
                pdbs.get("app-routemeter").await.ok().and_then(|p| p.status),
            ),
        }
    }

    #[tokio::test]
    async fn a_bad_configmap_edit_never_takes_a_proxy_down() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        let (_cleanup, ns, proxies, base) = monitored_app(&client, "badcfg", json!({})).await;
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
        let good = cms
            .get("app-routemeter")
            .await
            .expect("the proxy ConfigMap");
        let text = good.data.as_ref().expect("data")["config.yaml"].clone();
        assert!(text.contains("loadBalancing: roundRobin"), "{text}");
        // A hand edit that the operator does not notice at once (the label it watches
        // by removed too): a load-balancing policy the proxy does not know.
        let bad = text.replace("loadBalancing: roundRobin", "loadBalancing: fastest");
        cms.patch(
            "app-routemeter",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": { "labels": { "app.kubernetes.io/managed-by": null } },
                "data": { "config.yaml": bad },
            })),
        )
        .await
        .expect("edit the ConfigMap by hand");

        // The ConfigMap is the operator's: the edit is an event on an object it owns,
        // and its forced apply puts its config (and label) back. Whether kubelet syncs the
        // edit into the pods before that is a race (it syncs every 10 s here): a proxy
        // that gets the bad file rejects it and keeps its last good config, then loads the
        // operator's again. Either way the proxies serve as before, and the end state is
        // every proxy on a good config with no help from anyone.
        let load = Load::start(
            base,
            vec!["/api/trips/1".into()],
            2,
            Duration::from_millis(20),
        );
        wait_for(
            "the operator's config back in the ConfigMap",
            WAIT,
            || async {
                let cm = cms.get("app-routemeter").await.ok()?;
                let labelled = cm
                    .metadata
                    .labels
                    .as_ref()?
                    .get("app.kubernetes.io/managed-by")
                    == Some(&"routemeter".to_string());
                (cm.data?.get("config.yaml")? == &text && labelled).then_some(())
            },
        )
        .await;
        // Past kubelet's sync period, under load, then until every proxy reports that the
        // file it reads is one it runs.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let http = http_client(true);
        let mut rejected = 0.0;
        for ip in &proxies {
            let metrics = wait_for(&format!("proxy {ip} on a good config"), WAIT, || async {
                let text = admin_text(&http, ip, "/metrics").await?;
                text.lines()
                    .any(|l| l == "routemeter_config_last_reload_successful 1")
                    .then_some(text)
            })
            .await;
            rejected +=
                support::Metrics::parse(&metrics).sum("routemeter_config_reload_errors_total", &[]);
        }
        let tally = load.stop().await;
        assert_eq!(tally.with_status(200), tally.total(), "{tally:?}");
        assert!(tally.total() > 100, "{tally:?}");
        eprintln!(
            "bad ConfigMap edit: {rejected} rejected reload(s) across {} proxies, {} requests all 200",
            proxies.len(),
            tally.total()
        );
        wait_for("ProxyConfigApplied=True", WAIT, || async {
            let (status, reason, _) = condition(&client, &ns, "app", "ProxyConfigApplied").await?;
            (status == "True" && reason == "Applied").then_some(())
        })
        .await;
    }

    /// Takeover as a client in the cluster sees it: a pod calls `trips-api` by name in a
    /// loop, on a new connection each time and with no retries, before the takeover,
    /// while it happens, while it holds (when the proxies count exactly what the client
    /// sent), and after the MonitoredService is deleted. Not one request fails.
    #[tokio::test]
    async fn a_service_taken_over_and_given_back_never_fails_a_client() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        chart_installed(&client).await;
        let ns = namespace(&client, "takeover").await;
        let _cleanup = DeleteOnDrop(ns.clone());
        sample_app(&client, &ns, "trips-api", 2, json!("http")).await;
        ready_pods(&client, &ns, "app=trips-api", 2).await;
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let original = services.get("trips-api").await.expect("the Service");
        let ip = cluster_ip(&client, &ns, "trips-api").await;
        let http = http_client(false);
        wait_for("the trips-api Service to answer", WAIT, || async {
            let r = http.get(format!("http://{ip}/healthz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        let caller = ClientPod::start(
            &client,
            &ns,
            "caller",
            "http://trips-api/api/trips",
            &["--interval", "5ms"],
        )
        .await;
        // Every request answered 2xx; read while the client runs, one request (its
        // concurrency) may still be in flight.
        let no_failure = |phase: &str, c: &Counts| {
            assert!(c.sent > 0, "{phase}: {c:?}");
            let answered: u64 = c.by_status.values().sum();
            assert!(
                c.errors.is_empty() && c.ok == answered && c.sent - answered <= 1,
                "{phase}: every request 2xx: {c:?}"
            );
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        no_failure("before", &caller.counts().await);

        apply_msvc(
            &client,
            &ns,
            msvc("trips-api", "trips-api", json!({ "mode": "Takeover" })),
        )
        .await;
        wait_for("TakenOver=True", WAIT, || async {
            condition(&client, &ns, "trips-api", "TakenOver")
                .await
                .filter(|c| c.0 == "True")
        })
        .await;
        let proxies = ready_pods(&client, &ns, &proxy_label("trips-api"), 2).await;
        no_failure("during the takeover", &caller.counts().await);

        // Taken over: once kube-proxy has moved the Service to the proxies (every request
        // counted by them), the client's and the proxies' counts grow by the same amount.
        let measured = wait_for("the proxies to count every request", WAIT, || async {
            let c0 = caller.pause().await;
            let p0: u64 = proxy_counts(&proxies).await.values().sum();
            caller.resume().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let c1 = caller.pause().await;
            let p1: u64 = proxy_counts(&proxies).await.values().sum();
            caller.resume().await;
            let sent = c1.sent - c0.sent;
            (sent > 0 && p1 - p0 == sent).then_some(sent)
        })
        .await;
        let c0 = caller.pause().await;
        let p0 = proxy_counts(&proxies).await;
        caller.resume().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let c1 = caller.pause().await;
        let p1 = proxy_counts(&proxies).await;
        caller.resume().await;
        let key = (
            "/api/trips".to_string(),
            "GET".to_string(),
            "200".to_string(),
        );
        let counted = p1.get(&key).copied().unwrap_or(0) - p0.get(&key).copied().unwrap_or(0);
        assert_eq!(
            counted,
            c1.sent - c0.sent,
            "taken over, the proxies count exactly what the client sent (after {measured} in 3 s)"
        );
        no_failure("taken over", &c1);

        // A proxy rollout while taken over: the Service's endpoints move from the old
        // proxy pods to the new ones, and nothing fails.
        Api::<MonitoredService>::namespaced(client.clone(), &ns)
            .patch(
                "trips-api",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "proxy": { "resources": {
                    "requests": { "cpu": "60m", "memory": "64Mi" },
                    "limits": { "memory": "256Mi" },
                } } } })),
            )
            .await
            .expect("change the proxy's resources");
        replaced(&client, &ns, &proxy_label("trips-api"), &proxies, 2).await;
        // Until the old proxies have drained and gone.
        wait_for("the old proxies to be gone", WAIT, || async {
            let left = pods(&client, &ns, &proxy_label("trips-api")).await;
            (left.len() == 2).then_some(())
        })
        .await;
        no_failure("during a proxy rollout", &caller.counts().await);

        // Deleted: the Service gets its selector back exactly, and nothing fails.
        Api::<MonitoredService>::namespaced(client.clone(), &ns)
            .delete("trips-api", &DeleteParams::default())
            .await
            .expect("delete the MonitoredService");
        let restored = wait_for("the Service restored", WAIT, || async {
            let svc = services.get("trips-api").await.ok()?;
            let clean = !svc.annotations().contains_key("routemeter.io/takeover");
            (clean && svc.spec.as_ref()?.selector == original.spec.as_ref()?.selector)
                .then_some(svc)
        })
        .await;
        assert_eq!(
            restored.spec.as_ref().map(|s| &s.ports),
            original.spec.as_ref().map(|s| &s.ports)
        );
        // The proxies drain and go; the client keeps calling the application.
        wait_for("the proxies to be gone", WAIT, || async {
            pods(&client, &ns, &proxy_label("trips-api"))
                .await
                .is_empty()
                .then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let end = caller.pause().await;
        no_failure("after the delete", &end);
        eprintln!(
            "takeover: {} requests by name, 0 failed, {counted} counted by the proxies in 5 s taken over",
            end.sent
        );
    }

    /// Which pod answered each of `n` requests to `url` (the sample app's X-Served-By).
    async fn served_by(http: &reqwest::Client, url: &str, n: usize) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for _ in 0..n {
            let r = http.get(url).send().await.expect("an answer");
            assert!(r.status().is_success(), "{url}: {}", r.status());
            let pod = r
                .headers()
                .get("x-served-by")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            *by.entry(pod).or_insert(0) += 1;
        }
        by
    }

    /// The proxies follow the application's ready pods from the EndpointSlices of its
    /// own Service: scaling 1 → 3 → 1 under load fails no request, new pods get
    /// traffic about as soon as they are ready, and a pod marked unready gets nothing.
    #[tokio::test]
    async fn proxies_follow_ready_endpoints_from_endpoint_slices() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        let (_cleanup, ns, proxies, base) = monitored_app(&client, "slices", json!({})).await;
        let http = http_client(false);
        let metrics = http
            .get(format!("http://{}:9901/metrics", proxies[0]))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("routemeter_upstream_endpoints{source=\"endpointslices\""),
            "the proxy follows EndpointSlices, not DNS"
        );
        let load = Load::start(
            base.clone(),
            vec!["/api/trips".into()],
            4,
            Duration::from_millis(5),
        );
        let whoami = format!("{base}/whoami");

        scale(&client, &ns, "app", 1).await;
        let one = wait_for("one pod serving", WAIT, || async {
            let by = served_by(&http, &whoami, 20).await;
            (by.len() == 1).then_some(by)
        })
        .await;

        scale(&client, &ns, "app", 3).await;
        let ready = ready_pods(&client, &ns, "app=app", 3).await;
        let since = Instant::now();
        wait_for("all three pods serving", WAIT, || async {
            (served_by(&http, &whoami, 30).await.len() == 3).then_some(())
        })
        .await;
        let followed = since.elapsed();
        eprintln!("slices: a third ready pod served within {followed:?} of being seen ready");
        assert!(followed < Duration::from_secs(3), "{followed:?}");

        // One pod unready (its readiness probe fails within a second): it gets nothing
        // once its endpoint is not ready.
        // `ready` holds the ready pods' IPs.
        let pod_ips: Vec<(String, String)> = pods(&client, &ns, "app=app")
            .await
            .iter()
            .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
            .filter(|(_, ip)| ready.contains(ip))
            .collect();
        let (sick, sick_ip) = pod_ips[0].clone();
        http.post(format!("http://{sick_ip}:8080/admin/unhealthy"))
            .send()
            .await
            .expect("mark unhealthy");
        let slices: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
            )),
        );
        wait_for("its endpoint not ready in the slice", WAIT, || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=app"))
                .await
                .ok()?;
            let unready = list
                .items
                .iter()
                .flat_map(|s| s.data["endpoints"].as_array().cloned().unwrap_or_default())
                .any(|e| {
                    e["addresses"][0] == sick_ip.as_str() && e["conditions"]["ready"] == false
                });
            unready.then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = served_by(&http, &whoami, 60).await;
        assert!(
            !after.contains_key(&sick),
            "{sick} is unready and got {after:?}"
        );

        scale(&client, &ns, "app", 1).await;
        wait_for("one pod serving again", WAIT, || async {
            (served_by(&http, &whoami, 20).await.len() == 1).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tally = load.stop().await;
        assert!(tally.total() > 100, "{tally:?}");
        assert_eq!(
            tally.failed(),
            0,
            "no request failed through 1 → 3 → 1: {tally:?}"
        );
        eprintln!(
            "slices: {} requests through 1 → 3 → 1 (from {one:?}), 0 failed",
            tally.total()
        );
    }

    /// The application sees its client's address in X-Forwarded-For, not the proxy's; a
    /// client's own X-Forwarded-For is not trusted (the default, `trustedHops: 0`).
    #[tokio::test]
    async fn the_application_sees_its_client_through_the_proxy() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        let (_cleanup, ns, proxies, base) = monitored_app(&client, "forwarded", json!({})).await;
        let http = http_client(false);
        // The host's address as the application sees it when called directly.
        let app_ip = pods(&client, &ns, "app=app").await[0]
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("a pod IP");
        let direct: serde_json::Value = http
            .get(format!("http://{app_ip}:8080/whoami"))
            .send()
            .await
            .expect("direct")
            .json()
            .await
            .expect("json");
        let me = direct["peer"].as_str().expect("peer").to_string();
        let proxied: serde_json::Value = http
            .get(format!("{base}/whoami"))
            .header("X-Forwarded-For", "6.6.6.6")
            .header("Host", "trips.example")
            .send()
            .await
            .expect("through the proxy")
            .json()
            .await
            .expect("json");
        assert_eq!(proxied["client"], me.as_str(), "{proxied}");
        assert_eq!(
            proxied["xForwardedFor"],
            me.as_str(),
            "the spoofed entry is dropped: {proxied}"
        );
        assert!(
            proxies.iter().any(|p| proxied["peer"] == p.as_str()),
            "the connection comes from a proxy: {proxied}"
        );
        assert_eq!(proxied["host"], "trips.example", "Host preserved");
        assert_eq!(proxied["xForwardedHost"], "trips.example");
        assert_eq!(proxied["xForwardedProto"], "http");
    }

    #[tokio::test]
    async fn a_client_pod_calls_a_service_by_name_and_its_counts_freeze_exactly() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        // No chart: the sample app and a client pod calling its Service by name.
        let ns = namespace(&client, "client").await;
        let _cleanup = DeleteOnDrop(ns.clone());
        sample_app(&client, &ns, "trips-api", 1, json!("http")).await;
        ready_pods(&client, &ns, "app=trips-api", 1).await;
        // The Service answers (kube-proxy has its endpoint) before the client's first
        // request, so every request the client ever sends should be answered.
        let ip = cluster_ip(&client, &ns, "trips-api").await;
        let http = http_client(false);
        wait_for("the trips-api Service to answer", WAIT, || async {
            let r = http.get(format!("http://{ip}/healthz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;

        let caller = ClientPod::start(
            &client,
            &ns,
            "caller",
            "http://trips-api/api/trips",
            &["--interval", "10ms"],
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let frozen = caller.pause().await;
        assert!(frozen.paused && frozen.sent > 0, "{frozen:?}");
        assert_eq!(
            frozen.ok, frozen.sent,
            "every request answered 2xx: {frozen:?}"
        );
        assert!(frozen.errors.is_empty(), "{frozen:?}");
        assert_eq!(
            frozen.by_status,
            BTreeMap::from([("200".to_string(), frozen.sent)]),
            "{frozen:?}"
        );
        // Paused, nothing is in flight and nothing is sent: the counts stay exact.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(caller.counts().await, frozen, "counts moved while paused");

        assert!(!caller.resume().await.paused);
        let resumed = wait_for("the client to send again", WAIT, || async {
            let c = caller.counts().await;
            (c.sent >= frozen.sent + 10).then_some(c)
        })
        .await;
        let after = caller.pause().await;
        assert!(resumed.sent > frozen.sent, "{resumed:?}");
        assert_eq!((after.ok, after.errors.len()), (after.sent, 0), "{after:?}");
        let zero = caller.reset().await;
        assert_eq!(
            (zero.sent, zero.ok, zero.by_status.len()),
            (0, 0, 0),
            "{zero:?}"
        );

        // A name outside the cluster's zone: the cluster DNS refuses it (no forwarding),
        // so the request fails as `dns` and nothing leaves the cluster.
        let outside = ClientPod::start(
            &client,
            &ns,
            "outside",
            "http://example.com/",
            &["--interval", "100ms"],
        )
        .await;
        wait_for("the outside client to try twice", WAIT, || async {
            (outside.counts().await.sent >= 2).then_some(())
        })
        .await;
        let failed = outside.pause().await;
        assert_eq!(
            failed.errors,
            BTreeMap::from([("dns".to_string(), failed.sent)]),
            "{failed:?}"
        );
        assert!(
            failed.by_status.is_empty() && !failed.last_errors.is_empty(),
            "{failed:?}"
        );
    }

    #[tokio::test]
    async fn the_service_range_stays_on_this_machine() {
        let Some(_client) = client().await else {
            return;
        };
        // The host's route to a Service address is the bridge, never the default route, and
        // the guard that drops anything to the pod or Service range leaving elsewhere is in
        // place.
        let route = run("ip", &["route", "get", "10.96.0.1"]);
        assert!(route.contains(" dev cni0 "), "{route}");
        let route = run("ip", &["route", "get", "10.96.200.200"]);
        assert!(route.contains(" dev cni0 "), "{route}");
        let guard = run(
            "iptables",
            &["-w", "-t", "mangle", "-S", "ROUTEMETER-GUARD"],
        );
        assert!(
            guard.contains("-d 10.96.0.0/16 -j DROP") && guard.contains("-d 10.244.0.0/16 -j DROP"),
            "{guard}"
        );
        let postrouting = run("iptables", &["-w", "-t", "mangle", "-S", "POSTROUTING"]);
        assert!(postrouting.contains("-j ROUTEMETER-GUARD"), "{postrouting}");
    }

    /// The Prometheus Operator of the pinned release managing a Prometheus 3 with
    /// kube-prometheus-stack's selectors (`release: kps`), and a second Prometheus
    /// (`release: other`): MonitoredServices without any label of the user's are selected
    /// by kps alone (status.selectedBy), their proxies are its targets and up, their rules
    /// are loaded, 6% of 5xx fires the 5xx alert, 4% never does, a slow route fires the
    /// latency alert; `other` scrapes none of them.
    #[tokio::test]
    async fn the_prometheus_operator_selects_scrapes_and_fires_the_alerts() {
        let Some(client) = client().await else { return };
        let _shared = CLUSTER_WIDE.read().await;
        chart_installed(&client).await;
        let (kps, other) = (prometheus_stack("kps"), prometheus_stack("other"));
        let _other = UninstallOnDrop("other");
        let ns = namespace(&client, "prom").await;
        let _cleanup = DeleteOnDrop(ns.clone());
        sample_app(&client, &ns, "app", 1, json!(8080)).await;
        // `loud`: scraped every 5 s, alerts after 10 s; `quiet`: every monitoring setting
        // at its default. Neither has spec.monitoring.labels.
        let one = json!({ "replicas": 1 });
        apply_msvc(
            &client,
            &ns,
            msvc(
                "loud",
                "app",
                json!({ "proxy": one,
            "monitoring": { "serviceMonitor": { "interval": "5s" }, "alerts": { "for": "10s" } } }),
            ),
        )
        .await;
        apply_msvc(&client, &ns, msvc("quiet", "app", json!({ "proxy": one }))).await;

        let api: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
        for name in ["loud", "quiet"] {
            let by = wait_for(
                &format!("{name} selected by monitoring/kps"),
                WAIT,
                || async {
                    let status = api.get(name).await.ok()?.status?;
                    (!status.selected_by.is_empty()).then_some(status.selected_by)
                },
            )
            .await;
            assert_eq!(
                by,
                ["monitoring/kps"],
                "{name}: only kps selects it, not other"
            );
            let (status, reason, message) = condition(&client, &ns, name, "MonitoringConfigured")
                .await
                .expect("MonitoringConfigured");
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("True", "Selected"),
                "{message}"
            );
        }
        let loud = ready_pods(&client, &ns, &proxy_label("loud"), 1).await;
        let quiet = ready_pods(&client, &ns, &proxy_label("quiet"), 1).await;

        // kps scrapes both proxies (the admin port the ServiceMonitor names) and they are up.
        let http = http_client(true);
        let up = wait_for(
            "kps to scrape both proxies, up",
            Duration::from_secs(150),
            || async {
                let mut t = targets_of(&http, &kps, &ns).await;
                t.sort();
                (t.len() == 2 && t.iter().all(|(_, h)| h == "up")).then_some(t)
            },
        )
        .await;
        assert_eq!(
            up.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
            ["loud", "quiet"]
        );
        // Their rules are loaded: every group of both.
        let groups = wait_for(
            "kps to load both rule sets",
            Duration::from_secs(150),
            || async {
                let data = prometheus_api(&http, &kps, "/api/v1/rules").await?;
                let names: Vec<String> = data["groups"]
                    .as_array()?
                    .iter()
                    .filter_map(|g| g["name"].as_str())
                    .filter(|n| n.starts_with(&format!("routemeter.{ns}.")))
                    .map(str::to_string)
                    .collect();
                (["loud", "quiet"].iter().all(|m| {
                    ["recording", "slo", "alerts"]
                        .iter()
                        .all(|g| names.contains(&format!("routemeter.{ns}.{m}.{g}")))
                }))
                .then_some(names)
            },
        )
        .await;
        eprintln!("kps loaded {groups:?}");

        // Traffic: loud's /status/{code} answers 500 to 6 requests in 100, quiet's to 4 in
        // 100; loud's /delay/{ms} takes 1.2 s (its p95 is over the 1 s threshold), 10 at a
        // time: 8 requests a second, so its traffic guard (1/s over 5m: 300 requests in the
        // window) is met within 40 s.
        // Errors spread evenly, never first: the ratio over any prefix of the traffic is
        // at most the target's.
        let mix = |errors: usize| -> Vec<String> {
            (1..=100)
                .map(|i| {
                    let error = i * errors / 100 != (i - 1) * errors / 100;
                    if error { "/status/500" } else { "/status/200" }.to_string()
                })
                .collect()
        };
        let pause = Duration::from_millis(20);
        let loads = [
            Load::start(format!("http://{}:8080", loud[0]), mix(6), 2, pause),
            Load::start(format!("http://{}:8080", quiet[0]), mix(4), 2, pause),
            Load::start(
                format!("http://{}:8080", loud[0]),
                vec!["/delay/1200".into()],
                10,
                pause,
            ),
        ];
        let started = Instant::now();
        let fired = wait_for(
            "RoutemeterHighErrorRate and RoutemeterHighLatency firing for loud",
            Duration::from_secs(240),
            || async {
                // Never any alert for quiet's 4%, pending or firing, all along.
                let quiet_alerts: Vec<_> = alerts_of(&http, &kps, &ns, "RoutemeterHighErrorRate")
                    .await
                    .into_iter()
                    .filter(|(m, ..)| m == "quiet")
                    .collect();
                assert!(quiet_alerts.is_empty(), "4% of 5xx fired: {quiet_alerts:?}");
                let errors = alerts_of(&http, &kps, &ns, "RoutemeterHighErrorRate").await;
                let latency = alerts_of(&http, &kps, &ns, "RoutemeterHighLatency").await;
                let firing = |a: &[(String, String, String)], route: &str| {
                    a.iter()
                        .any(|(m, r, s)| m == "loud" && r == route && s == "firing")
                };
                (firing(&errors, "/status/{code}") && firing(&latency, "/delay/{ms}"))
                    .then_some((errors, latency))
            },
        )
        .await;
        eprintln!(
            "fired after {:.0} s: {fired:?}",
            started.elapsed().as_secs_f64()
        );
        // quiet's ratio is there (4%), under the 5% threshold, and stays quiet a while more
        // than loud needed to fire.
        let ratio = wait_for("quiet's 5xx ratio", WAIT, || async {
            prometheus_value(
                &http,
                &kps,
                &format!(r#"routemeter:http_errors:ratio_rate5m{{namespace="{ns}",monitored_service="quiet",http_route="/status/{{code}}"}}"#),
            )
            .await
        })
        .await;
        assert!((0.03..0.05).contains(&ratio), "quiet's 5xx ratio {ratio}");
        tokio::time::sleep(Duration::from_secs(15)).await;
        let quiet_alerts: Vec<_> = alerts_of(&http, &kps, &ns, "RoutemeterHighErrorRate")
            .await
            .into_iter()
            .filter(|(m, ..)| m == "quiet")
            .collect();
        assert!(quiet_alerts.is_empty(), "4% of 5xx fired: {quiet_alerts:?}");
        for load in loads {
            load.stop().await;
        }
        // The second Prometheus selects none of it: no target, no rule of this namespace.
        assert!(
            targets_of(&http, &other, &ns).await.is_empty(),
            "other scrapes nothing here"
        );
        let rules = prometheus_api(&http, &other, "/api/v1/rules")
            .await
            .expect("other's rules");
        assert!(
            !rules.to_string().contains(&format!("routemeter.{ns}.")),
            "other loaded no rule of {ns}"
        );
    }
}
