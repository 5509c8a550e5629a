//! The proxy binary with real HTTP upstreams and clients on 127.0.0.1. Every port comes
//! from the OS, every loop is bounded in count and time.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::routing::{any, get};
use futures::{SinkExt, StreamExt};

const BIN: &str = env!("CARGO_BIN_EXE_routemeter");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An upstream: `/status/{code}`, `/sleep/{ms}`, `/ws` (echo), anything else 200 with its
/// own port in the body (to see which upstream answered).
async fn upstream_on(listener: tokio::net::TcpListener) -> SocketAddr {
    let addr = listener.local_addr().expect("addr");
    let port = addr.port();
    let app = axum::Router::new()
        .route(
            "/status/{code}",
            get(
                |axum::extract::Path(code): axum::extract::Path<u16>| async move {
                    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
                },
            ),
        )
        .route(
            "/sleep/{ms}",
            get(
                |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "slept"
                },
            ),
        )
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .fallback(move || async move { port.to_string() });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if matches!(msg, Message::Close(_)) || socket.send(msg).await.is_err() {
            break;
        }
    }
}

async fn upstream() -> SocketAddr {
    upstream_on(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    )
    .await
}

/// A running proxy process; killed when dropped, its log printed if the test failed.
struct Proxy {
    child: Child,
    listen: u16,
    admin: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- proxy log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Config YAML with `listen` and `admin` filled in; `body` holds the rest.
fn start_with(body: &str) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin) = (free_port(), free_port());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\n{body}"),
    )
    .expect("write");
    spawn(
        dir,
        &["--config", config.to_str().expect("utf8 path")],
        listen,
        admin,
    )
}

fn spawn(dir: tempfile::TempDir, args: &[&str], listen: u16, admin: u16) -> Proxy {
    let log = dir.path().join("proxy.log");
    let child = Command::new(BIN)
        .args(["--log-format", "text", "proxy"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start the proxy");
    Proxy {
        child,
        listen,
        admin,
        log,
        _dir: dir,
    }
}

impl Proxy {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen)
    }

    async fn admin(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", self.admin))
            .await
            .ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    }

    async fn ready(&self) {
        wait_for("the proxy to be ready", Duration::from_secs(20), || async {
            self.admin("/readyz").await.filter(|(s, _)| *s == 200)
        })
        .await;
    }

    async fn metrics(&self) -> Metrics {
        Metrics(self.admin("/metrics").await.expect("metrics").1)
    }

    /// The metrics once `requests` requests are recorded: the proxy records a request in
    /// `logging()`, just after the client got its response.
    async fn metrics_after(&self, requests: f64) -> Metrics {
        wait_for(
            &format!("{requests} requests to be recorded"),
            Duration::from_secs(10),
            || async {
                let m = self.metrics().await;
                (m.sum(COUNT, &[]) >= requests).then_some(m)
            },
        )
        .await
    }
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prometheus text, queried by metric name and a subset of labels.
struct Metrics(String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include every `(label, value)`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }

    fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0.lines().filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels, value.parse().ok()?))
        })
    }

    /// Distinct values of `label` across the samples of `name`.
    fn label_values(&self, name: &str, label: &str) -> HashSet<String> {
        let key = format!("{label}=\"");
        self.samples(name)
            .filter_map(|(l, _)| {
                let start = l.find(&key)? + key.len();
                Some(l[start..].split('"').next()?.to_string())
            })
            .collect()
    }
}

const COUNT: &str = "http_server_request_duration_seconds_count";

#[tokio::test]
async fn counts_every_request_once_per_route_and_status() {
    let up = upstream().await;
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes:\n  - {{path: '/status/{{code}}', methods: [GET]}}\n  - {{path: '/users/{{id}}'}}\n"
    ));
    proxy.ready().await;
    let http = reqwest::Client::new();
    for (path, n) in [
        ("/status/200", 7),
        ("/status/404", 3),
        ("/status/500", 5),
        ("/users/1?x=2", 4),
    ] {
        for _ in 0..n {
            http.get(proxy.url(path)).send().await.expect("request");
        }
    }
    http.post(proxy.url("/users/2"))
        .send()
        .await
        .expect("request");
    let m = proxy.metrics_after(20.0).await;
    let count = |route, method, code| {
        m.sum(
            COUNT,
            &[
                ("http_route", route),
                ("http_request_method", method),
                ("http_response_status_code", code),
            ],
        )
    };
    assert_eq!(count("/status/{code}", "GET", "200"), 7.0);
    assert_eq!(count("/status/{code}", "GET", "404"), 3.0);
    assert_eq!(count("/status/{code}", "GET", "500"), 5.0);
    assert_eq!(count("/users/{id}", "GET", "200"), 4.0);
    assert_eq!(count("/users/{id}", "POST", "200"), 1.0);
    assert_eq!(
        m.sum(COUNT, &[]),
        20.0,
        "no request counted twice or missed"
    );
    assert_eq!(m.sum("http_server_active_requests", &[]), 0.0);
    assert_eq!(m.sum("routemeter_proxy_overhead_seconds_count", &[]), 20.0);
}

#[tokio::test]
async fn latency_lands_in_the_right_bucket() {
    let up = upstream().await;
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes: [{{path: '/sleep/{{ms}}'}}]\n"
    ));
    proxy.ready().await;
    reqwest::get(proxy.url("/sleep/200"))
        .await
        .expect("request");
    let m = proxy.metrics_after(1.0).await;
    let bucket = |le| {
        m.sum(
            "http_server_request_duration_seconds_bucket",
            &[("http_route", "/sleep/{ms}"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.1"), 0.0, "a 200 ms request is not under 100 ms");
    assert_eq!(bucket("0.25"), 1.0, "a 200 ms request is under 250 ms");
}

#[tokio::test]
async fn latency_thresholds_become_bucket_boundaries() {
    let up = upstream().await;
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{up}']}}\nmetrics: {{latencyThresholds: [0.3]}}\n"
    ));
    proxy.ready().await;
    reqwest::get(proxy.url("/sleep/10")).await.expect("request");
    let m = proxy.metrics_after(1.0).await;
    assert_eq!(
        m.sum(
            "http_server_request_duration_seconds_bucket",
            &[("le", "0.3")]
        ),
        1.0
    );
}

/// `n` as a word of letters only, so it is never taken for an ID.
fn word(mut n: usize) -> String {
    let mut s = String::new();
    loop {
        s.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return s;
        }
    }
}

#[tokio::test]
async fn unknown_paths_never_explode_cardinality() {
    let up = upstream().await;
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{up}']}}\nautoTemplate: {{maxRoutes: 50}}\n"
    ));
    proxy.ready().await;
    let http = reqwest::Client::new();
    let paths: Vec<String> = (0..10_000).map(|i| format!("/x{}", word(i))).collect();
    futures::stream::iter(paths)
        .for_each_concurrent(32, |path| {
            let http = http.clone();
            let url = proxy.url(&path);
            async move {
                http.get(url).send().await.expect("request");
            }
        })
        .await;
    for i in 0..100 {
        http.get(proxy.url(&format!("/orders/{i}/items")))
            .send()
            .await
            .expect("request");
    }
    let m = proxy.metrics_after(10_100.0).await;
    assert_eq!(m.sum(COUNT, &[]), 10_100.0);
    let routes = m.label_values(COUNT, "http_route");
    assert!(
        routes.len() <= 51,
        "{} route labels for 10,000 paths: cap 50 plus _other",
        routes.len()
    );
    assert!(routes.contains("_other"));
    // /orders/{id}/items came after the cap: it is counted under _other too, once.
    assert!(m.sum(COUNT, &[("http_route", "_other")]) >= 10_000.0 - 50.0);
}

#[tokio::test]
async fn ids_collapse_into_one_inferred_route() {
    let up = upstream().await;
    let proxy = start_with(&format!("upstream: {{endpoints: ['{up}']}}\n"));
    proxy.ready().await;
    for i in 0..50 {
        reqwest::get(proxy.url(&format!("/orders/{}", 1000 + i)))
            .await
            .expect("request");
    }
    reqwest::get(proxy.url("/orders/123e4567-e89b-12d3-a456-426614174000"))
        .await
        .expect("request");
    let m = proxy.metrics_after(51.0).await;
    assert_eq!(m.sum(COUNT, &[("http_route", "/orders/{id}")]), 51.0);
    assert_eq!(m.sum("routemeter_inferred_routes", &[]), 1.0);
}

#[tokio::test]
async fn unmatched_requests_share_one_label_without_inference() {
    let up = upstream().await;
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{up}']}}\nautoTemplate: {{enabled: false}}\n"
    ));
    proxy.ready().await;
    for p in ["/a", "/b/1", "/c/d/e"] {
        reqwest::get(proxy.url(p)).await.expect("request");
    }
    assert_eq!(
        proxy
            .metrics_after(3.0)
            .await
            .sum(COUNT, &[("http_route", "_unmatched")]),
        3.0
    );
}

#[tokio::test]
async fn the_most_specific_route_wins() {
    let up = upstream().await;
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes:\n  - {{path: '/users/*'}}\n  - {{path: '/users/{{id}}'}}\n  - {{path: '/users/me'}}\n"
    ));
    proxy.ready().await;
    for p in ["/users/me", "/users/42", "/users/42/posts"] {
        reqwest::get(proxy.url(p)).await.expect("request");
    }
    let m = proxy.metrics_after(3.0).await;
    for route in ["/users/me", "/users/{id}", "/users/*"] {
        assert_eq!(m.sum(COUNT, &[("http_route", route)]), 1.0, "{route}");
    }
}

/// Points `config.yaml` at a new file the way kubelet updates a mounted ConfigMap: a new
/// timestamped directory, then an atomic rename of the `..data` symlink.
fn configmap_update(dir: &Path, generation: u32, content: &str) {
    let versioned = dir.join(format!("..{generation}"));
    std::fs::create_dir(&versioned).expect("mkdir");
    std::fs::write(versioned.join("config.yaml"), content).expect("write");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{generation}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
    let link = dir.join("config.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/config.yaml", &link).expect("link");
    }
}

#[tokio::test]
async fn reloads_a_swapped_configmap_and_refuses_a_bad_one() {
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin) = (free_port(), free_port());
    let base = format!(
        "listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\nupstream: {{endpoints: ['{up}']}}\n"
    );
    configmap_update(
        dir.path(),
        1,
        &format!("{base}routes: [{{path: /a}}]\nserver: {{reloadInterval: 100ms}}\n"),
    );
    let config = dir.path().join("config.yaml");
    let proxy = spawn(
        dir,
        &["--config", config.to_str().expect("utf8")],
        listen,
        admin,
    );
    proxy.ready().await;
    let dir = config.parent().expect("dir").to_path_buf();

    // A kept-alive client connection must survive the reload.
    let http = reqwest::Client::new();
    // Before the reload, /b/first is unmatched (inferred as itself: not ID-like).
    http.get(proxy.url("/b/first"))
        .send()
        .await
        .expect("request");
    configmap_update(
        &dir,
        2,
        &format!(
            "{base}routes: [{{path: /a}}, {{path: '/b/{{id}}'}}]\nserver: {{reloadInterval: 100ms}}\n"
        ),
    );
    wait_for("the reload", Duration::from_secs(10), || async {
        (proxy
            .metrics()
            .await
            .sum("routemeter_config_reloads_total", &[])
            == 1.0)
            .then_some(())
    })
    .await;
    http.get(proxy.url("/b/second"))
        .send()
        .await
        .expect("request on the same connection");
    let m = proxy.metrics_after(2.0).await;
    assert_eq!(m.sum(COUNT, &[("http_route", "/b/{id}")]), 1.0);
    assert_eq!(m.sum(COUNT, &[("http_route", "/b/first")]), 1.0);

    configmap_update(&dir, 3, &format!("{base}routes: [{{path: 'no-slash'}}]\n"));
    wait_for("the rejection", Duration::from_secs(10), || async {
        (proxy
            .metrics()
            .await
            .sum("routemeter_config_reload_errors_total", &[])
            == 1.0)
            .then_some(())
    })
    .await;
    let (_, config) = proxy.admin("/config").await.expect("config");
    assert!(
        config.contains("/b/{id}"),
        "the previous config stays in force: {config}"
    );
    let m = proxy.metrics().await;
    assert_eq!(m.sum("routemeter_config_last_reload_successful", &[]), 0.0);
    assert_eq!(
        http.get(proxy.url("/b/3"))
            .send()
            .await
            .expect("request")
            .status(),
        200
    );
}

#[tokio::test]
async fn upstream_down_then_back() {
    let port = free_port();
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['127.0.0.1:{port}'], ejectionBase: 100ms, ejectionMax: 200ms}}\n"
    ));
    let http = reqwest::Client::new();
    let first = http.get(proxy.url("/x")).send().await;
    // The proxy may not listen yet for the very first attempt: wait for its admin.
    wait_for("the admin listener", Duration::from_secs(20), || {
        proxy.admin("/healthz")
    })
    .await;
    let status = match first {
        Ok(r) if r.status() != 502 && r.status() != 503 => http
            .get(proxy.url("/x"))
            .send()
            .await
            .expect("request")
            .status(),
        Ok(r) => r.status(),
        Err(_) => http
            .get(proxy.url("/x"))
            .send()
            .await
            .expect("request")
            .status(),
    };
    assert!(
        status == 502 || status == 503,
        "upstream down answers 502/503, got {status}"
    );
    let body = http
        .get(proxy.url("/x"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(
        body.starts_with("routemeter: "),
        "a clear error body: {body:?}"
    );
    let m = proxy.metrics_after(2.0).await;
    assert!(
        m.sum(
            COUNT,
            &[
                ("http_response_status_code", "502"),
                ("error_type", "connect_refused")
            ]
        ) >= 1.0
    );
    assert_eq!(proxy.admin("/readyz").await.map(|r| r.0), Some(503));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind the upstream port");
    upstream_on(listener).await;
    wait_for("recovery", Duration::from_secs(10), || async {
        let r = http.get(proxy.url("/x")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert_eq!(proxy.admin("/readyz").await.map(|r| r.0), Some(200));
}

#[tokio::test]
async fn spreads_over_upstreams_and_ejects_a_dead_one() {
    let (a, b, c) = (upstream().await, upstream().await, upstream().await);
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{a}', '{b}', '{c}']}}\nserver: {{workers: 1}}\n"
    ));
    proxy.ready().await;
    let http = reqwest::Client::new();
    let mut per_port = std::collections::HashMap::<String, u32>::new();
    for _ in 0..300 {
        let body = http
            .get(proxy.url("/"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        *per_port.entry(body).or_default() += 1;
    }
    assert_eq!(per_port.len(), 3, "{per_port:?}");
    assert!(
        per_port.values().all(|n| (80..=120).contains(n)),
        "round robin spreads evenly: {per_port:?}"
    );

    let dead = free_port();
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{a}', '{b}', '127.0.0.1:{dead}']}}\n"
    ));
    proxy.ready().await;
    for _ in 0..60 {
        let r = http.get(proxy.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200, "a GET retries on another endpoint");
    }
    let m = proxy.metrics().await;
    let dead_label = format!("127.0.0.1:{dead}");
    assert!(
        m.sum(
            "routemeter_upstream_connect_errors_total",
            &[("endpoint", &dead_label)]
        ) >= 1.0
    );
    assert_eq!(
        m.sum("routemeter_upstream_endpoints", &[("state", "ejected")]),
        1.0
    );
    assert_eq!(proxy.admin("/readyz").await.map(|r| r.0), Some(200));
}

#[tokio::test]
async fn websockets_pass_through_and_stay_out_of_the_latency_histogram() {
    let up = upstream().await;
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes: [{{path: /ws}}]\n"
    ));
    proxy.ready().await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", proxy.listen))
            .await
            .expect("upgrade");
    for text in ["hello", "world"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("send");
        let back = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(back.into_text().expect("text").as_str(), text);
    }
    let m = proxy.metrics().await;
    assert_eq!(
        m.sum(
            "routemeter_websocket_connections_active",
            &[("http_route", "/ws")]
        ),
        1.0
    );
    ws.close(None).await.expect("close");
    drop(ws);
    wait_for(
        "the websocket to close",
        Duration::from_secs(10),
        || async {
            let m = proxy.metrics().await;
            (m.sum(
                "routemeter_websocket_connections_active",
                &[("http_route", "/ws")],
            ) == 0.0)
                .then_some(m)
        },
    )
    .await;
    let m = proxy.metrics().await;
    assert_eq!(
        m.sum(
            "routemeter_websocket_connections_total",
            &[("http_route", "/ws")]
        ),
        1.0
    );
    assert_eq!(m.sum(COUNT, &[("http_route", "/ws")]), 0.0);
    assert_eq!(
        m.sum(
            "routemeter_websocket_connection_duration_seconds_count",
            &[("http_route", "/ws")]
        ),
        1.0
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let up = upstream().await;
    let mut proxy = start_with(&format!(
        "upstream: {{endpoints: ['{up}']}}\nserver: {{gracePeriod: 3s}}\n"
    ));
    proxy.ready().await;
    let url = proxy.url("/sleep/1000");
    let in_flight =
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = proxy.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        reqwest::Client::new()
            .get(proxy.url("/"))
            .send()
            .await
            .is_err(),
        "no new connection is accepted after SIGTERM"
    );
    assert_eq!(
        in_flight
            .await
            .expect("join")
            .expect("the in-flight request completes"),
        200
    );
    let started = Instant::now();
    let status = loop {
        if let Some(s) = proxy.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the proxy exits after its grace period"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "clean exit: {status}");
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let up = upstream().await;
    let proxy = start_with(&format!(
        "upstream: {{endpoints: ['{up}']}}\nlimits: {{maxRequestHeaderBytes: 2048}}\n"
    ));
    proxy.ready().await;
    let r = reqwest::Client::new()
        .get(proxy.url("/big"))
        .header("x-big", "a".repeat(4096))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 431);
    let m = proxy.metrics_after(1.0).await;
    assert_eq!(
        m.sum(
            COUNT,
            &[
                ("http_response_status_code", "431"),
                ("error_type", "request_header_too_large")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn quick_form_flags_and_their_errors() {
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin) = (free_port(), free_port());
    let l = format!("127.0.0.1:{listen}");
    let a = format!("127.0.0.1:{admin}");
    let u = up.to_string();
    let proxy = spawn(
        dir,
        &[
            "--listen",
            &l,
            "--admin",
            &a,
            "--upstream",
            &u,
            "--route",
            "GET /users/{id}",
        ],
        listen,
        admin,
    );
    proxy.ready().await;
    reqwest::get(proxy.url("/users/9")).await.expect("request");
    assert_eq!(
        proxy
            .metrics_after(1.0)
            .await
            .sum(COUNT, &[("http_route", "/users/{id}")]),
        1.0
    );

    let out = Command::new(BIN)
        .args(["proxy", "--upstream", &u, "--route", "GET /a/*/b"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[0].path"),
        "the error names the route: {err}"
    );
}
