//! A stand-in for the API server, for `routemeter top --msvc` and `routemeter compare
//! --msvc` without a cluster: plain HTTP (axum) on 127.0.0.1, answering the three requests
//! the commands make: the MonitoredService, its pods by label selector, and the pod proxy,
//! which it forwards to real proxies as the API server would connect to the pods. The
//! kubeconfig, its contexts and namespaces are read by the command's own client.
//!
//! What this cannot show is the real API server's side: its pod proxy to pods on a node,
//! and the RBAC a user needs (`get` on `pods/proxy`). See README, "Live summary".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::common;
use crate::support::{self, client};

/// What the stand-in serves: the pods of each MonitoredService of namespace `shop`, and
/// the admin port on 127.0.0.1 each ready pod's proxy listens on.
#[derive(Default)]
pub struct Cluster {
    /// MonitoredService name → its pods (JSON).
    pub pods: BTreeMap<String, Vec<Value>>,
    /// Pod name → (the admin port in its spec, where its proxy listens).
    pub admins: BTreeMap<String, (u16, u16)>,
    /// (pod name, window) → where the pod proxy forwards `/api/summary?window=WINDOW`
    /// instead: two windows of one pod that saw different traffic, which real proxies
    /// younger than both windows cannot have.
    pub windows: BTreeMap<(String, String), u16>,
    /// Every request path and query received, in order.
    pub requests: Mutex<Vec<String>>,
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

pub fn pod(name: &str, msvc: &str, ready: bool, admin_port: u16) -> Value {
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
    let query = query.unwrap_or_default();
    let window = query
        .strip_prefix("window=")
        .unwrap_or_default()
        .to_string();
    let listening = cluster
        .windows
        .get(&(pod.to_string(), window))
        .copied()
        .unwrap_or(listening);
    let url = format!("http://127.0.0.1:{listening}/{path}?{query}");
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
pub async fn stand_in(cluster: Arc<Cluster>) -> SocketAddr {
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
pub fn kubeconfig(dir: &std::path::Path, server: SocketAddr) -> std::path::PathBuf {
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

/// Runs `routemeter ARGS` with `env` (and no Kubernetes or routemeter variables of the
/// caller's); its exit code, stdout and stderr.
pub async fn routemeter(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(common::BIN);
    command
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("ROUTEMETER_ADMIN")
        .envs(env.iter().copied());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run routemeter");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8");
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}
