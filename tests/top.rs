//! `routemeter top --msvc` end to end without a cluster: the real binary, real proxies
//! under known traffic, and in place of the API server a stand-in on 127.0.0.1 (plain
//! HTTP, axum) that answers the three requests the command makes: the MonitoredService,
//! its pods by label selector, and the pod proxy, which it forwards to the proxies as the
//! API server would connect to the pods. The kubeconfig, its contexts and namespaces are
//! read by the command's own client.
//!
//! What this cannot show is the real API server's side: its pod proxy to pods on a node,
//! and the RBAC a user needs (`get` on `pods/proxy`). See README, "Live summary".

mod common;
#[allow(dead_code)] // the harness of tests/proxy.rs: this file uses part of it
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use routemeter::summary::Summary;
use serde_json::{Value, json};
use support::{Proxy, client, send, upstream};

/// What the stand-in serves: the pods of each MonitoredService of namespace `shop`, and
/// the admin port on 127.0.0.1 each ready pod's proxy listens on.
#[derive(Default)]
struct Cluster {
    /// MonitoredService name → its pods (JSON).
    pods: BTreeMap<String, Vec<Value>>,
    /// Pod name → (the admin port in its spec, where its proxy listens).
    admins: BTreeMap<String, (u16, u16)>,
    /// Every request path and query received, in order.
    requests: Mutex<Vec<String>>,
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A `Status` as the API server answers errors.
fn status(code: StatusCode, reason: &str, message: String) -> Response {
    json_response(
        code,
        &json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": message, "reason": reason, "code": code.as_u16() }),
    )
}

fn pod(name: &str, msvc: &str, ready: bool, admin_port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "shop", "labels": {
            "app.kubernetes.io/name": "routemeter-proxy",
            "app.kubernetes.io/instance": msvc,
            "routemeter.io/monitored-service": msvc,
        } },
        "spec": { "containers": [{ "name": "proxy", "image": "routemeter", "ports": [
            { "name": "http", "containerPort": 8080 },
            { "name": "rm-admin", "containerPort": admin_port },
        ] }] },
        "status": {
            "podIP": "10.0.0.1",
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
        },
    })
}

async fn monitored_service(
    State(cluster): State<Arc<Cluster>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    if ns != "shop" || !cluster.pods.contains_key(&name) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("monitoredservices.routemeter.io \"{name}\" not found"),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService",
            "metadata": { "name": name, "namespace": ns, "uid": "u-1" },
            "spec": { "target": { "service": name, "port": 80 } },
        }),
    )
}

async fn pods(
    State(cluster): State<Arc<Cluster>>,
    UrlPath(ns): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let wanted = |msvc: &str| {
        [
            "app.kubernetes.io%2Fname%3Droutemeter-proxy".to_string(),
            format!("app.kubernetes.io%2Finstance%3D{msvc}"),
            format!("routemeter.io%2Fmonitored-service%3D{msvc}"),
        ]
        .iter()
        .all(|label| query.contains(label.as_str()))
    };
    let items: Vec<Value> = cluster
        .pods
        .iter()
        .filter(|(msvc, _)| ns == "shop" && wanted(msvc))
        .flat_map(|(_, pods)| pods.clone())
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "apiVersion": "v1", "kind": "PodList", "metadata": { "resourceVersion": "1" },
                 "items": items }),
    )
}

/// The pod proxy: `pods/{name}:{port}/proxy/{path}` to the pod's port, here the proxy
/// on 127.0.0.1 standing for that pod; refused as the API server reports a pod that does
/// not answer.
async fn pod_proxy(
    State(cluster): State<Arc<Cluster>>,
    UrlPath((_, pod_port, path)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some((pod, port)) = pod_port.split_once(':') else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "no port".into());
    };
    let Some(&(spec_port, listening)) = cluster.admins.get(pod) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{pod}\" not found"),
        );
    };
    if port != spec_port.to_string() {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "error trying to reach service: dial tcp 10.0.0.1:{port}: connect: connection refused"
            ),
        );
    }
    let url = format!(
        "http://127.0.0.1:{listening}/{path}?{}",
        query.unwrap_or_default()
    );
    match client().get(url).send().await {
        Ok(r) => {
            let code = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            (
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                body,
            )
                .into_response()
        }
        Err(e) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("error trying to reach service: {e}"),
        ),
    }
}

/// Starts the stand-in; every request is recorded in `cluster.requests`.
async fn stand_in(cluster: Arc<Cluster>) -> SocketAddr {
    let recorder = cluster.clone();
    let app = axum::Router::new()
        .route(
            "/apis/routemeter.io/v1alpha1/namespaces/{ns}/monitoredservices/{name}",
            get(monitored_service),
        )
        .route("/api/v1/namespaces/{ns}/pods", get(pods))
        .route(
            "/api/v1/namespaces/{ns}/pods/{pod_port}/proxy/{*path}",
            get(pod_proxy),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let recorder = recorder.clone();
                async move {
                    let uri = req.uri().to_string();
                    recorder
                        .requests
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(uri);
                    next.run(req).await
                }
            },
        ))
        .with_state(cluster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stand-in");
    let addr = listener.local_addr().expect("stand-in address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A kubeconfig with two contexts: `stand-in` (namespace `shop`) and the current one,
/// `elsewhere`, whose server refuses connections.
fn kubeconfig(dir: &std::path::Path, server: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let closed = support::free_port();
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: elsewhere\n\
             clusters:\n\
             - {{name: stand-in, cluster: {{server: 'http://{server}'}}}}\n\
             - {{name: nowhere, cluster: {{server: 'http://127.0.0.1:{closed}'}}}}\n\
             contexts:\n\
             - {{name: stand-in, context: {{cluster: stand-in, user: nobody, namespace: shop}}}}\n\
             - {{name: elsewhere, context: {{cluster: nowhere, user: nobody}}}}\n\
             users:\n- {{name: nobody, user: {{}}}}\n"
        ),
    )
    .expect("write the kubeconfig");
    path
}

/// Runs `routemeter top ARGS` with `env` (and no Kubernetes or routemeter variables of the
/// caller's); its exit code, stdout and stderr.
async fn top(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(common::BIN);
    command
        .arg("top")
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("ROUTEMETER_ADMIN")
        .envs(env.iter().copied());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run routemeter top");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8");
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

async fn summary(proxy: &Proxy, requests: u64) -> Summary {
    serde_json::from_value(proxy.summary_after("1m", requests).await).expect("a summary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_merges_a_monitored_services_proxies_through_the_api_server() {
    // Two proxies: one saw 30 fast requests, the other 20 fast ones and 10 failures.
    let up = upstream().await;
    let config = format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes: [{{path: /fast}}, {{path: '/status/{{code}}'}}]\n"
    );
    let (a, b) = (Proxy::start(&config).await, Proxy::start(&config).await);
    let http = client();
    for _ in 0..30 {
        assert_eq!(send(http.get(a.url("/fast"))).await.0, 200);
    }
    for _ in 0..20 {
        assert_eq!(send(http.get(b.url("/fast"))).await.0, 200);
    }
    for _ in 0..10 {
        assert_eq!(send(http.get(b.url("/status/500"))).await.0, 500);
    }
    let expected = routemeter::summary::merge(&[summary(&a, 30).await, summary(&b, 30).await])
        .expect("they merge");

    // MonitoredService api: two ready pods on their proxies (admin ports 9901 and 9911 in
    // their specs), one unready, and one ready whose proxy does not answer. idle: one
    // unready pod.
    let cluster = Arc::new(Cluster {
        pods: BTreeMap::from([
            (
                "api".into(),
                vec![
                    pod("api-a", "api", true, 9901),
                    pod("api-b", "api", true, 9911),
                    pod("api-c", "api", false, 9901),
                    pod("api-d", "api", true, 9901),
                ],
            ),
            ("idle".into(), vec![pod("idle-a", "idle", false, 9901)]),
        ]),
        admins: BTreeMap::from([
            ("api-a".into(), (9901, a.admin)),
            ("api-b".into(), (9911, b.admin)),
            ("api-d".into(), (9901, support::free_port())),
        ]),
        requests: Mutex::default(),
    });
    let server = stand_in(cluster.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kubeconfig(dir.path(), server);
    let file = kubeconfig.to_str().expect("UTF-8 path");
    let base = ["--kubeconfig", file, "--context", "stand-in", "--once"];

    // JSON: the merged summary, as the operator's status would merge it.
    let (code, out, err) = top(&[&base[..], &["--msvc", "api", "-o", "json"]].concat(), &[]).await;
    assert_eq!(code, 0, "{err}");
    let merged: Summary = serde_json::from_str(&out).expect("one summary of JSON");
    assert_eq!(merged.overall.requests, 60);
    assert_eq!(merged.overall.buckets, expected.overall.buckets);
    assert_eq!(merged.overall.p95, expected.overall.p95);
    assert_eq!(merged.overall.error_ratio, Some(10.0 / 60.0));
    let routes: Vec<(&str, u64)> = merged
        .routes
        .iter()
        .map(|e| (e.route.as_str(), e.requests))
        .collect();
    assert_eq!(routes, [("/fast", 50), ("/status/{code}", 10)]);
    assert!(
        err.starts_with("warning: pod api-d did not answer /api/summary?window=1m: "),
        "the proxy that did not answer is named on stderr, stdout stays JSON: {err}"
    );
    let requests = cluster
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(
        requests[0],
        "/apis/routemeter.io/v1alpha1/namespaces/shop/monitoredservices/api"
    );
    assert!(
        requests[1].starts_with("/api/v1/namespaces/shop/pods?"),
        "{requests:?}"
    );
    for path in [
        "/api/v1/namespaces/shop/pods/api-a:9901/proxy/api/summary?window=1m",
        "/api/v1/namespaces/shop/pods/api-b:9911/proxy/api/summary?window=1m",
    ] {
        assert!(requests.iter().any(|r| r == path), "{path} in {requests:?}");
    }
    assert!(
        !requests.iter().any(|r| r.contains("api-c")),
        "the unready pod is not read: {requests:?}"
    );

    // The table: the MonitoredService and how many proxies answered, then the warning.
    let (code, out, err) = top(
        &[&base[..], &["--msvc", "api", "--window", "5m"]].concat(),
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("MonitoredService shop/api, 2 of 3 ready proxies: window 5m, "),
        "{out}"
    );
    assert!(
        lines[4].starts_with("overall: 60 requests, ") && lines[4].contains(", 16.7 % 5xx, "),
        "{out}"
    );
    assert!(
        lines.last().is_some_and(
            |l| l.starts_with("warning: pod api-d did not answer /api/summary?window=5m: ")
        ),
        "{out}"
    );

    // What is missing is named: the MonitoredService, its ready proxies.
    let (code, _, err) = top(
        &[&base[..], &["--msvc", "api", "-n", "other"]].concat(),
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: no MonitoredService api in namespace other (kubectl get msvc -n other)\n"
    );
    let (code, _, err) = top(&[&base[..], &["--msvc", "idle"]].concat(), &[]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "error: MonitoredService shop/idle has no ready proxy pod: the 1 pod labelled \
             app.kubernetes.io/instance=idle,app.kubernetes.io/name=routemeter-proxy,\
             routemeter.io/monitored-service=idle is not ready (kubectl get pods -n shop -l "
        ),
        "{err}"
    );

    // KUBECONFIG and its current context when no flag says otherwise: `elsewhere`, whose
    // server refuses, in namespace `default`.
    let (code, _, err) = top(&["--msvc", "api", "--once"], &[("KUBECONFIG", file)]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot read MonitoredService default/api: "),
        "{err}"
    );
    // ROUTEMETER_ADMIN in the environment gives way to --msvc; --admin with it does not.
    let (code, _, err) = top(
        &[&base[..], &["--msvc", "api", "-o", "json"]].concat(),
        &[("ROUTEMETER_ADMIN", "127.0.0.1:1")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = top(
        &[&base[..], &["--msvc", "api", "--admin", "127.0.0.1:1"]].concat(),
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: --admin and --msvc name two sources: give one\n"
    );
}
