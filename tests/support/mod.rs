//! Harness of the proxy's integration tests: the real `routemeter` binary as a child
//! process, axum upstreams in the test process, and a reader of the Prometheus text the
//! admin listener serves. Everything listens on 127.0.0.1 with ports from the OS, and every
//! wait is bounded. Builds on [`crate::common`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{any, get};

use crate::common::{BIN, Process};
pub use crate::common::{free_port, wait_for};

/// The count of the request-duration histogram: one per request the proxy recorded.
pub const REQUEST_COUNT: &str = "http_server_request_duration_seconds_count";

/// Longest any single HTTP request of a test may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a proxy may take to start and report ready, on a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times a proxy is started on fresh ports when one was taken meanwhile.
const START_ATTEMPTS: u32 = 3;

/// An HTTP client for traffic through the proxy: no system proxy, keep-alive, bounded.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("http client")
}

/// Sends a request and reads its whole answer, which hands the connection back to the
/// client's pool for the next request. Fails the test if there is no answer.
pub async fn send(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    (status, response.text().await.expect("the body"))
}

/// A port on 127.0.0.1 that refuses connections and that no other test can take: the
/// socket is bound and not listening for as long as it is kept (`listen` on it brings an
/// upstream up on the same port, with no window for another test to take it). A port
/// from `free_port` alone may be given to a parallel test's listener meanwhile, which
/// then answers, or hangs, in its place.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a port");
    let port = socket.local_addr().expect("its address").port();
    (socket, port)
}

/// Starts an upstream on a port of its own; see [`upstream_on`].
pub async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an upstream");
    upstream_on(listener).await
}

/// Serves, until the test ends: `/status/{code}` answers that status, `/sleep/{ms}` sleeps
/// then answers `slept`, `/headers` answers the request headers it received as a JSON
/// object of lower-case name to values (one per header line, see [`Received`]), `/ws`
/// echoes websocket messages, anything else answers 200 with the upstream's port as the
/// body, so a test sees which upstream answered.
pub async fn upstream_on(listener: tokio::net::TcpListener) -> SocketAddr {
    let port = listener.local_addr().expect("upstream address").port();
    named_upstream_on(listener, port.to_string()).await
}

/// [`upstream_on`] answering `name` instead of its port, for upstreams that share a port
/// on different addresses; `/sleep/{ms}` says `name` in an `x-upstream` header.
pub async fn named_upstream_on(listener: tokio::net::TcpListener, name: String) -> SocketAddr {
    let addr = listener.local_addr().expect("upstream address");
    let header = name.clone();
    let app = axum::Router::new()
        .route(
            "/status/{code}",
            get(|UrlPath(code): UrlPath<u16>| async move {
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
            }),
        )
        .route(
            "/sleep/{ms}",
            get(move |UrlPath(ms): UrlPath<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ([("x-upstream", header)], "slept")
            }),
        )
        .route(
            "/headers",
            any(|headers: HeaderMap| async move { echo_headers(&headers) }),
        )
        .route(
            "/ws",
            any(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        )
        .fallback(move || async move { name });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An upstream that answers every request after the same delay, and counts what it served.
#[allow(dead_code)] // only tests/proxy.rs uses it
pub struct DelayedUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    served: Arc<AtomicU64>,
}

#[allow(dead_code)] // only tests/proxy.rs uses it
impl DelayedUpstream {
    /// Requests it received so far (counted on arrival, so every answered one is in).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// Starts an upstream that answers every path, after `delay`, with 200 and its port as
/// the body: two of them with different delays stand for a slow and a fast endpoint of
/// the same application.
#[allow(dead_code)] // only tests/proxy.rs uses it
pub async fn delayed_upstream(delay: Duration) -> DelayedUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an upstream");
    let addr = listener.local_addr().expect("upstream address");
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(delay).await;
            addr.port().to_string()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    DelayedUpstream { addr, served }
}

/// The request headers an upstream's `/headers` received, by lower-case name.
pub type Received = BTreeMap<String, Vec<String>>;

fn echo_headers(headers: &HeaderMap) -> String {
    let mut received = Received::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        received.entry(name.to_string()).or_default().push(value);
    }
    serde_json::to_string(&received).expect("headers as JSON")
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if matches!(msg, Message::Close(_)) || socket.send(msg).await.is_err() {
            break;
        }
    }
}

/// What [`raw_exchange_within`] got back on its connection.
pub struct Exchange {
    /// Every byte the proxy sent, lossily as text.
    pub received: String,
    /// Whether the proxy closed (or reset) the connection, rather than `done` saying
    /// enough or the time running out.
    pub closed: bool,
}

/// Writes `request` on a new connection to the proxy and returns the response bytes:
/// see [`raw_exchange_within`]; fails the test unless `done` or a close ends it within
/// 10 s.
pub async fn raw_exchange(proxy: &Proxy, request: &str, done: impl Fn(&[u8]) -> bool) -> String {
    let exchange = raw_exchange_within(proxy, request.as_bytes(), &done, REQUEST_TIMEOUT).await;
    assert!(
        exchange.closed || done(exchange.received.as_bytes()),
        "a response within {REQUEST_TIMEOUT:?}, got: {}",
        exchange.received
    );
    exchange.received
}

/// Writes `request` (bytes as given: several requests, bare LFs, anything) on a new
/// connection to the proxy and reads until `done` says what was received is enough, the
/// proxy closes or resets the connection, or `patience` has passed.
pub async fn raw_exchange_within(
    proxy: &Proxy,
    request: &[u8],
    done: impl Fn(&[u8]) -> bool,
    patience: Duration,
) -> Exchange {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", proxy.listen))
        .await
        .expect("connect to the proxy");
    stream.write_all(request).await.expect("write the request");
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + patience;
    let closed = loop {
        if done(&received) {
            break false;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            // A close with unread bytes in the proxy's buffer arrives as a reset.
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    };
    Exchange {
        received: String::from_utf8_lossy(&received).into_owned(),
        closed,
    }
}

/// The status code of a response head's status line.
pub fn status_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or_default()
}

/// A listener on 127.0.0.1 that hands every connection it accepts, until the test ends,
/// to `serve` in a task of its own.
pub async fn raw_listener<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// An upstream on a raw socket: each connection reads a request head, then `answer`
/// writes (and drops) the connection as it likes.
pub async fn raw_upstream<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let answer = Arc::new(answer);
    raw_listener(move |mut s| {
        let answer = answer.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            answer(s).await;
        }
    })
    .await
}

/// A running `routemeter proxy`: killed when dropped, its log printed if the test failed.
pub struct Proxy {
    process: Process,
    /// Port of the traffic listener.
    pub listen: u16,
    /// Port of the admin listener.
    pub admin: u16,
    log: PathBuf,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        if std::thread::panicking() {
            eprintln!("--- proxy log ---\n{}--- end of proxy log ---", self.log());
        }
    }
}

impl Proxy {
    /// Starts the proxy on a config file, `listen` and `admin` on free ports then `rest`
    /// (YAML, at least the `upstream`), and waits until it is ready.
    pub async fn start(rest: &str) -> Self {
        Self::start_with_logs("text", rest).await
    }

    /// [`Proxy::start`] with logs in `format` (`text` or `json`, as `--log-format`).
    pub async fn start_with_logs(format: &'static str, rest: &str) -> Self {
        Self::start_with(format, &[], rest).await
    }

    /// [`Proxy::start`] with these variables added to the proxy's environment (e.g.
    /// `KUBECONFIG`, which it does not inherit).
    #[allow(dead_code)] // tests/proxy.rs does not use it
    pub async fn start_with_env(env: &[(&str, &str)], rest: &str) -> Self {
        Self::start_with("text", env, rest).await
    }

    async fn start_with(format: &'static str, env: &[(&str, &str)], rest: &str) -> Self {
        Self::launch_with(format, env, |listen, admin| {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("config.yaml");
            std::fs::write(&config, config_yaml(listen, admin, rest)).expect("write the config");
            (dir, vec!["--config".to_string(), path_arg(&config)])
        })
        .await
    }

    /// Starts `routemeter proxy` with what `setup` makes for two free ports (a directory
    /// kept as long as the proxy, and the arguments), and waits until it is ready. Ports
    /// are handed over by number, so another process may take one before the proxy binds
    /// it: then the proxy is started again on fresh ports.
    pub async fn launch(setup: impl FnMut(u16, u16) -> (tempfile::TempDir, Vec<String>)) -> Self {
        Self::launch_with("text", &[], setup).await
    }

    async fn launch_with(
        format: &'static str,
        env: &[(&str, &str)],
        mut setup: impl FnMut(u16, u16) -> (tempfile::TempDir, Vec<String>),
    ) -> Self {
        let mut attempt = 1;
        loop {
            let (listen, admin) = (free_port(), free_port());
            let (dir, args) = setup(listen, admin);
            let mut proxy = Self::spawn(dir, &args, env, listen, admin, format);
            match proxy.ready().await {
                Ok(()) => return proxy,
                Err(busy) if attempt < START_ATTEMPTS => {
                    eprintln!("{busy}; starting again on other ports");
                    attempt += 1;
                }
                Err(busy) => panic!("{busy}, {START_ATTEMPTS} times"),
            }
        }
    }

    fn spawn(
        dir: tempfile::TempDir,
        args: &[String],
        env: &[(&str, &str)],
        listen: u16,
        admin: u16,
        format: &str,
    ) -> Self {
        let log = dir.path().join("proxy.log");
        let child = proxy_command(format, args, &log)
            .envs(env.iter().copied())
            .spawn()
            .expect("start the proxy");
        Proxy {
            process: Process(child),
            listen,
            admin,
            log,
            http: client(),
            dir,
        }
    }

    /// Waits until `/readyz` answers 200 and the traffic listener accepts connections
    /// (each pingora service binds its listener on its own, so one may be up before the
    /// other). `Err` when a port was taken; any other failure fails the test.
    async fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self.process.0.try_wait().expect("poll the proxy");
            let log = self.log();
            if log.contains("cannot listen on") || log.contains("is in use") {
                return Err(format!("a port of the proxy was taken: {log}"));
            }
            if let Some(status) = exited {
                panic!("the proxy exited during startup: {status}");
            }
            let listening = tokio::net::TcpStream::connect(("127.0.0.1", self.listen))
                .await
                .is_ok();
            if listening && self.readyz().await == Some(200) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "the proxy was not ready within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The directory given at the start, which holds the proxy's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of `path` on the traffic listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen)
    }

    /// Status and body of a GET on the admin listener; `None` if it did not answer.
    pub async fn admin(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin);
        let response = self.http.get(url).send().await.ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    /// The status of `/readyz`; `None` if the admin listener did not answer.
    pub async fn readyz(&self) -> Option<u16> {
        self.admin("/readyz").await.map(|(status, _)| status)
    }

    /// A scrape of `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        let (status, text) = self.admin("/metrics").await.expect("scrape /metrics");
        assert_eq!(status, 200, "/metrics answered {status}: {text}");
        Metrics::parse(&text)
    }

    /// A scrape once `requests` requests are recorded. The proxy records a request in
    /// pingora's `logging()`, which runs just after the response went out, so a scrape
    /// right after a client got its answer may not count it yet.
    pub async fn metrics_after(&self, requests: f64) -> Metrics {
        let what = format!("{requests} requests to be recorded");
        wait_for(&what, Duration::from_secs(10), || async {
            let m = self.metrics().await;
            (m.sum(REQUEST_COUNT, &[]) >= requests).then_some(m)
        })
        .await
    }

    /// `/api/summary?window=WINDOW` once its `overall.requests` is `requests`: the proxy
    /// records a request in `logging()`, just after the client got its answer.
    #[allow(dead_code)] // only tests/proxy.rs reads summaries
    pub async fn summary_after(&self, window: &str, requests: u64) -> serde_json::Value {
        let what = format!("/api/summary?window={window} to count {requests} requests");
        wait_for(&what, Duration::from_secs(10), || async {
            let (status, body) = self.admin(&format!("/api/summary?window={window}")).await?;
            assert_eq!(status, 200, "/api/summary answered {status}: {body}");
            let summary: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            (summary["overall"]["requests"] == requests).then_some(summary)
        })
        .await
    }

    /// Waits until the sum of the samples of `name` matching `labels` is `value`.
    pub async fn wait_for_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let what = format!("{name}{labels:?} to be {value}");
        wait_for(&what, Duration::from_secs(10), || async {
            (self.metrics().await.sum(name, labels) == value).then_some(())
        })
        .await;
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn sigterm(&self) {
        self.process.terminate();
    }

    /// Sends SIGINT, as Ctrl-C at a terminal does.
    pub fn interrupt(&self) {
        self.process.signal("INT");
    }

    /// Waits for the process to exit by itself, failing the test after `timeout`.
    pub async fn exit_status(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.0.try_wait().expect("poll the proxy") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A config file's text: the listeners on `listen` and `admin`, then `rest`.
pub fn config_yaml(listen: u16, admin: u16, rest: &str) -> String {
    format!("listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\n{rest}")
}

/// A path as a command-line argument.
pub fn path_arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temp path").to_string()
}

/// `routemeter --log-format FORMAT proxy ARGS`, stderr to `log`, untouched by the
/// caller's `ROUTEMETER_*`, `RUST_LOG` and Kubernetes client variables.
fn proxy_command(format: &str, args: &[String], log: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["--log-format", format, "proxy"])
        .env_remove("RUST_LOG")
        .args(args)
        .env_remove("ROUTEMETER_CONFIG")
        .env_remove("ROUTEMETER_LOG_FORMAT")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the log file"));
    command
}

/// Runs `routemeter proxy ARGS` expecting it to exit on its own within `timeout` (a
/// startup error); returns its exit status and stderr. Killed if it is still running.
pub async fn run_to_exit(args: &[String], timeout: Duration) -> (ExitStatus, String) {
    run_to_exit_with_logs("text", args, timeout).await
}

/// [`run_to_exit`] with logs in `format` (`text` or `json`).
pub async fn run_to_exit_with_logs(
    format: &str,
    args: &[String],
    timeout: Duration,
) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = Proxy::spawn(dir, args, &[], 0, 0, format);
    let status = proxy.exit_status(timeout).await;
    (status, proxy.log())
}

/// Parses a log as JSON lines, failing the test on any line that is not a JSON object or
/// that carries a path of the build machine (its home or cargo registry).
pub fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(value.is_object(), "not a JSON object: {line}");
            assert!(
                !line.contains("/root/") && !line.contains(".cargo") && !line.contains("log."),
                "a build-machine path or log.* field in: {line}"
            );
            value
        })
        .collect()
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A parsed scrape, queried by metric name and a subset of labels.
#[derive(Debug)]
pub struct Metrics(Vec<Sample>);

impl Metrics {
    /// Parses the Prometheus text format; comments and malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        Metrics(text.lines().filter_map(parse_sample).collect())
    }

    /// The sum of the samples of `name` whose labels include every `(label, value)`;
    /// 0 when there is none, as for a series never created.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .fold(0.0, |sum, s| sum + s.value)
    }

    /// How many samples of `name` have labels including every `(label, value)`.
    #[allow(dead_code)] // only tests/proxy.rs uses it
    pub fn matching_count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.matching(name, labels).count()
    }

    /// The distinct values of `label` across the samples of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.matching(name, &[])
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }
}

/// `name{label="value",...} value [timestamp]`, with `\\`, `\"` and `\n` escapes.
fn parse_sample(line: &str) -> Option<Sample> {
    if line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, quoted) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => value.push(match chars.next()?.1 {
                        'n' => '\n',
                        c => c,
                    }),
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            inner = &quoted[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}
