//! The operator and proxy as processes: leader election between two operator replicas,
//! and the proxy serving on the config the operator wrote (no kubelet runs in the test
//! cluster, so the proxy runs locally, in front of a local upstream).

mod cluster_support;
mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_support::*;
use common::{BIN, Process, free_port};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use routemeter::config::ProxyConfig;
use serde_json::json;

async fn get(url: &str) -> Option<String> {
    let response = reqwest::get(url).await.ok()?;
    response.text().await.ok()
}

async fn is_leader(port: u16) -> Option<bool> {
    let text = get(&format!("http://127.0.0.1:{port}/metrics")).await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("routemeter_operator_leader "))?;
    Some(line.ends_with(" 1"))
}

fn operator(ns: &str, identity: &str, port: u16) -> Process {
    Process(
        Command::new(BIN)
            .args([
                "--log-format",
                "text",
                "operator",
                "--watch-namespace",
                ns,
                "--lease-namespace",
                ns,
            ])
            .args([
                "--identity",
                identity,
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .env("KUBECONFIG", kubeconfig_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start operator"),
    )
}

#[tokio::test]
async fn two_operators_elect_one_leader() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "leader").await;
    let (pa, pb) = (free_port(), free_port());
    let a = operator(&ns, "op-a", pa);
    let b = operator(&ns, "op-b", pb);
    let leader = wait_for("exactly one leader", Duration::from_secs(40), || async {
        match (is_leader(pa).await?, is_leader(pb).await?) {
            (true, false) => Some("op-a"),
            (false, true) => Some("op-b"),
            _ => None,
        }
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = leases.get("routemeter-operator").await.expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(leader)
    );

    // The leader stops: the other replica takes over.
    let (stopped, other_port) = if leader == "op-a" { (&a, pb) } else { (&b, pa) };
    stopped.terminate();
    wait_for(
        "the other replica to lead",
        Duration::from_secs(40),
        || async { is_leader(other_port).await.filter(|l| *l) },
    )
    .await;
    delete_namespace(&client, &ns).await;
}

/// An upstream answering every path with 200, and `/fail` with 500.
async fn upstream() -> SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/fail",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .fallback(|| async { "ok" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Runs the proxy here on a config the operator wrote, with the addresses only a pod in
/// the cluster has (listen, admin, the upstream Service) swapped for local ones.
async fn local_proxy(config_yaml: &str, listen: u16, admin: u16) -> (Process, tempfile::TempDir) {
    let mut config =
        ProxyConfig::from_yaml(config_yaml).expect("the operator writes a valid config");
    config.listen = format!("127.0.0.1:{listen}");
    config.admin = format!("127.0.0.1:{admin}");
    config.upstream.endpoints = vec![upstream().await.to_string()];
    config.server.grace_period = Duration::from_secs(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config.to_yaml().expect("yaml")).expect("write config");
    let process = Process(
        Command::new(BIN)
            .args(["--log-format", "text", "proxy", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start proxy"),
    );
    (process, dir)
}

#[tokio::test]
async fn proxy_serves_the_config_the_operator_wrote() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "serve").await;
    let _op = Operator::start(&client, &ns);
    create_target(&client, &ns, "trips").await;
    apply_msvc(
        &client,
        &ns,
        json!({ "metadata": { "name": "trips" }, "spec": {
            "target": { "service": "trips", "port": 80 },
            "routes": [{ "path": "/api/trips", "methods": ["GET"] }, { "path": "/api/trips/{id}" }, { "path": "/fail" }],
        }}),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let text = wait_for("the proxy ConfigMap", Duration::from_secs(30), || async {
        cms.get_opt("trips-routemeter")
            .await
            .ok()??
            .data?
            .get("config.yaml")
            .cloned()
    })
    .await;

    let (listen, admin) = (free_port(), free_port());
    let _proxy = local_proxy(&text, listen, admin).await;
    wait_for("the proxy to be ready", Duration::from_secs(20), || async {
        get(&format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .filter(|t| t.starts_with("ready"))
    })
    .await;

    let http = reqwest::Client::new();
    for path in [
        "/api/trips?page=2&limit=20",
        "/api/trips?page=3&limit=20",
        "/api/trips/17",
        "/fail",
    ] {
        http.get(format!("http://127.0.0.1:{listen}{path}"))
            .send()
            .await
            .expect("request");
    }
    let metrics = get(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("metrics");
    let count = |route: &str, code: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("http_server_request_duration_seconds_count{")
                    && l.contains(&format!("http_route=\"{route}\""))
                    && l.contains(&format!("http_response_status_code=\"{code}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(
        count("/api/trips", "200").as_deref(),
        Some("2"),
        "{metrics}"
    );
    assert_eq!(count("/api/trips/{id}", "200").as_deref(), Some("1"));
    assert_eq!(count("/fail", "500").as_deref(), Some("1"));
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn ready_proxy_reports_ready_and_live_traffic() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "traffic").await;
    let admin = free_port();
    let _op = Operator::start_reading_proxies_on(&client, &ns, admin);
    create_target(&client, &ns, "live").await;
    apply_msvc(
        &client,
        &ns,
        json!({ "metadata": { "name": "live" }, "spec": {
            "target": { "service": "live", "port": 80 },
            "routes": [{ "path": "/items/{id}" }],
            "scaling": { "enabled": false }, "proxy": { "replicas": 1 },
        }}),
    )
    .await;

    // The proxy pod the ReplicaSet created; no kubelet runs it, so it runs here, on the
    // ConfigMap's config, and the test reports the pod running and ready at 127.0.0.1.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let pod = wait_for("the proxy pod", Duration::from_secs(30), || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels("routemeter.io/monitored-service=live"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let text = cms
        .get("live-routemeter")
        .await
        .expect("ConfigMap")
        .data
        .expect("data")["config.yaml"]
        .clone();
    let listen = free_port();
    let _proxy = local_proxy(&text, listen, admin).await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({ "status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{ "ip": "127.0.0.1" }], "hostIP": "127.0.0.1",
        "conditions": [
            { "type": "Ready", "status": "True", "lastTransitionTime": now },
            { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
        ],
    }});
    pods.patch_status(
        &pod.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await
    .expect("pod status");

    // Traffic through the proxy while the operator takes two readings.
    let traffic = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for i in 0..100_000u32 {
            let path = if i % 10 == 0 {
                "/fail".to_string()
            } else {
                format!("/items/{i}")
            };
            let _ = http
                .get(format!("http://127.0.0.1:{listen}{path}"))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    wait_for("Ready=True", Duration::from_secs(60), || async {
        condition(&client, &ns, "live", "Ready")
            .await
            .filter(|c| c.0 == "True")
    })
    .await;
    let api: Api<routemeter::crd::MonitoredService> = Api::namespaced(client.clone(), &ns);
    let figures = wait_for(
        "traffic figures in status",
        Duration::from_secs(90),
        || async { api.get("live").await.ok()?.status?.traffic },
    )
    .await;
    traffic.abort();
    let rps: f64 = figures.requests_per_second.parse().expect("a number");
    assert!(
        rps > 5.0,
        "about 90 requests per second were sent: {figures:?}"
    );
    let errors: f64 = figures
        .error_ratio
        .trim_end_matches('%')
        .parse()
        .expect("a percentage");
    assert!(
        (5.0..=15.0).contains(&errors),
        "1 in 10 requests fails: {figures:?}"
    );
    let status = api.get("live").await.expect("msvc").status.expect("status");
    assert_eq!((status.replicas, status.ready_replicas), (Some(1), Some(1)));
    delete_namespace(&client, &ns).await;
}
