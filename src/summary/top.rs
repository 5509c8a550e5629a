//! `routemeter top`: the live summary in a terminal, like `kubectl top`. It reads
//! `/api/summary` every `--interval` and prints a table of the routes (the busiest first),
//! the overall line and the recommendations; on a terminal each refresh replaces the last
//! one, otherwise each is printed after the previous. `--once -o json` prints the summary's
//! JSON.
//!
//! Two sources:
//!
//! - `--admin URL`: one proxy's admin listener (`kubectl port-forward
//!   svc/<name>-routemeter-metrics 9901`, then `--admin localhost:9901`). It takes any URL
//!   below which `/api/summary` is served, so a path prefix (a proxy in between) works too;
//!   `-o json` prints the summary as the proxy served it.
//! - `--msvc NAME`: every ready proxy pod of a MonitoredService, found as the operator
//!   finds them ([`crate::proxy_pods`]) and each read through the API server's pod proxy,
//!   so it needs no port-forward and no route into the cluster, only `get` on the
//!   MonitoredService, `list` on pods and `get` on `pods/proxy`. The summaries are merged
//!   with [`super::merge`] (rates add, percentiles from the added buckets), as in the
//!   MonitoredService's status. The client is configured as kubectl's: `--kubeconfig`,
//!   `KUBECONFIG`, `~/.kube/config`, then in-cluster, `--context` or the current one.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use thiserror::Error;

use super::compare::Output;
use super::score::{Status, percent, seconds};
use super::{Entry, Summary, Window};
use crate::crd::MonitoredService;
use crate::proxy_pods::{self, PodsError, ReadyProxy};

/// The environment variable `--admin` falls back to.
const ADMIN_ENV: &str = "ROUTEMETER_ADMIN";

/// How long one read of the summary may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Moves the cursor home and clears the screen (ANSI), before a refresh on a terminal.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Why the summary could not be shown.
#[derive(Debug, Error)]
pub enum TopError {
    #[error("--interval: {0:?} is too short, at least 100ms")]
    Interval(Duration),
    #[error("cannot start the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot read {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: not a summary: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("give --admin URL or --msvc NAME")]
    NoSource,
    #[error("--admin and --msvc name two sources: give one")]
    TwoSources,
    #[error("{0} goes with --msvc, not --admin")]
    ClusterFlag(&'static str),
    #[error("cannot write to stdout: {0}")]
    Write(#[source] std::io::Error),
    #[error("cannot load the kubeconfig{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        path: Option<PathBuf>,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot configure a Kubernetes client (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    InferConfig(#[source] kube::config::InferConfigError),
    #[error("cannot start the Kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
    #[error("cannot read MonitoredService {namespace}/{name}: {source}")]
    ReadMonitoredService {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "no MonitoredService {name} in namespace {namespace} (kubectl get msvc -n {namespace})"
    )]
    NoMonitoredService { namespace: String, name: String },
    #[error("cannot find the proxies of MonitoredService {namespace}/{name}: {source}")]
    Pods {
        namespace: String,
        name: String,
        #[source]
        source: Box<PodsError>,
    },
    #[error("MonitoredService {namespace}/{name} has no ready proxy pod: {}", no_ready(*.matched, namespace, selector))]
    NoReadyProxy {
        namespace: String,
        name: String,
        matched: usize,
        selector: String,
    },
    #[error("no proxy of MonitoredService {namespace}/{name} answered through the API server's pod proxy: {}", failures.join("; "))]
    NoProxyAnswered {
        namespace: String,
        name: String,
        failures: Vec<String>,
    },
    #[error(
        "the summaries of MonitoredService {namespace}/{name}'s proxies do not merge: their windows or bucket boundaries differ (proxies of two configs, during a rollout?)"
    )]
    Unmergeable { namespace: String, name: String },
}

/// Why no proxy pod is ready, and where to look.
fn no_ready(matched: usize, namespace: &str, selector: &str) -> String {
    let look = format!("kubectl get pods -n {namespace} -l {selector}");
    match matched {
        0 => format!("no pod is labelled {selector} (is the operator running? {look})"),
        1 => format!("the 1 pod labelled {selector} is not ready ({look})"),
        n => format!("none of the {n} pods labelled {selector} is ready ({look})"),
    }
}

/// Arguments of `routemeter top`.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("source")
        .required(true)
        .multiple(true)
        .args(["admin", "msvc"])
))]
pub struct Args {
    /// The proxy's admin listener: `http://host:port` (`host:port` alone means http), or
    /// any URL below which `/api/summary` is served. `--msvc` instead takes precedence over
    /// ROUTEMETER_ADMIN.
    #[arg(long, env = ADMIN_ENV)]
    pub admin: Option<String>,
    /// A MonitoredService: the summaries of its ready proxy pods, read through the API
    /// server's pod proxy and merged (rates add, percentiles from the added buckets).
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub msvc: Option<String>,
    /// The MonitoredService's namespace [default: the kubeconfig context's, or the pod's
    /// in a cluster].
    #[arg(long, short = 'n', value_parser = parse_name)]
    pub namespace: Option<String>,
    /// The kubeconfig file [default: KUBECONFIG, then ~/.kube/config, then in-cluster].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current context].
    #[arg(long)]
    pub context: Option<String>,
    /// The summary's window: 1m, 5m, 15m or 1h.
    #[arg(long, default_value = "1m", value_parser = parse_window)]
    pub window: Window,
    /// Time between refreshes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print once and exit (exit status 1 when the summary cannot be read).
    #[arg(long)]
    pub once: bool,
    /// Output format: a table, or the summary's JSON (one line per refresh).
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

fn parse_window(text: &str) -> Result<Window, String> {
    Window::parse(text).ok_or_else(|| format!("{text:?}: expected one of 1m, 5m, 15m, 1h"))
}

/// A Kubernetes object name (an RFC 1123 subdomain: lower-case letters, digits, `-` and
/// `.`, starting and ending with a letter or digit, at most 253 characters), so that it
/// goes into a request path as it is.
fn parse_name(text: &str) -> Result<String, String> {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| alphanumeric(c) || c == '-' || c == '.')
        && text.starts_with(alphanumeric)
        && text.ends_with(alphanumeric);
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a Kubernetes name: lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
        ))
    }
}

/// One reading of the source.
#[derive(Debug)]
struct Reading {
    /// What was read: the URL, or the MonitoredService and its proxies.
    source: String,
    /// The summary's JSON: as the proxy served it, or the merged summary's.
    json: String,
    summary: Summary,
    /// What went wrong without stopping the reading (a proxy that did not answer).
    warnings: Vec<String>,
}

/// The source the flags name.
#[derive(Debug, PartialEq, Eq)]
enum Choice<'a> {
    Admin(&'a str),
    Msvc(&'a str),
}

/// Where summaries are read from.
enum Source {
    /// One proxy's admin listener.
    Admin { url: String, http: reqwest::Client },
    /// The ready proxies of a MonitoredService, through the API server.
    Cluster {
        client: kube::Client,
        namespace: String,
        name: String,
        window: Window,
    },
}

impl Args {
    /// Shows the summary, once or until interrupted. A read that fails after the first
    /// one is shown in place of the table and retried at the next refresh: a proxy that
    /// restarts, or a rollout, does not end the view.
    pub fn run(self) -> Result<(), TopError> {
        if self.interval < Duration::from_millis(100) {
            return Err(TopError::Interval(self.interval));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TopError::Runtime)?;
        let terminal = std::io::stdout().is_terminal();
        runtime.block_on(async {
            let source = self.source().await?;
            let mut first = true;
            loop {
                let text = match source.read().await {
                    Ok(reading) => {
                        if self.output == Output::Json {
                            for w in &reading.warnings {
                                eprintln!("warning: {w}");
                            }
                        }
                        self.render(&reading)
                    }
                    Err(error) if first || self.once => return Err(error),
                    Err(error) => format!("error: {error}\n"),
                };
                first = false;
                let screen = if terminal && !self.once {
                    format!("{CLEAR_SCREEN}{text}")
                } else {
                    text
                };
                let mut out = std::io::stdout().lock();
                out.write_all(screen.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(TopError::Write)?;
                drop(out);
                if self.once {
                    return Ok(());
                }
                tokio::time::sleep(self.interval).await;
            }
        })
    }

    /// The source the arguments name. clap makes sure there is one; an `--admin` that
    /// came from [`ADMIN_ENV`] gives way to `--msvc` (clap would take any two as a
    /// conflict, the environment's included).
    async fn source(&self) -> Result<Source, TopError> {
        let admin_from_env = self.admin.is_some() && std::env::var(ADMIN_ENV).ok() == self.admin;
        match self.choice(admin_from_env)? {
            Choice::Msvc(name) => {
                let mut config =
                    kube_config(self.kubeconfig.as_deref(), self.context.as_deref()).await?;
                // The API server answers 503 for a pod that does not answer, which the
                // client would retry with backoff past the next refresh: the view
                // reports it and reads again at the next one instead.
                config.default_retry = false;
                let namespace = self
                    .namespace
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone());
                let client = kube::Client::try_from(config).map_err(TopError::KubeClient)?;
                Ok(Source::Cluster {
                    client,
                    namespace,
                    name: name.to_string(),
                    window: self.window,
                })
            }
            Choice::Admin(admin) => {
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .map_err(TopError::Client)?;
                Ok(Source::Admin {
                    url: summary_url(admin, self.window),
                    http,
                })
            }
        }
    }

    /// Which source the flags name, and whether the others go with it.
    fn choice(&self, admin_from_env: bool) -> Result<Choice<'_>, TopError> {
        match (self.msvc.as_deref(), self.admin.as_deref()) {
            (Some(_), Some(_)) if !admin_from_env => Err(TopError::TwoSources),
            (Some(name), _) => Ok(Choice::Msvc(name)),
            (None, Some(admin)) => {
                let cluster_flags = [
                    ("-n/--namespace", self.namespace.is_some()),
                    ("--kubeconfig", self.kubeconfig.is_some()),
                    ("--context", self.context.is_some()),
                ];
                match cluster_flags.into_iter().find(|(_, given)| *given) {
                    Some((flag, _)) => Err(TopError::ClusterFlag(flag)),
                    None => Ok(Choice::Admin(admin)),
                }
            }
            (None, None) => Err(TopError::NoSource),
        }
    }

    fn render(&self, r: &Reading) -> String {
        let mut text = match self.output {
            Output::Json => return format!("{}\n", r.json.trim_end()),
            Output::Table => table(&r.source, &r.summary),
        };
        for w in &r.warnings {
            text.push_str(&format!("warning: {w}\n"));
        }
        if !self.once {
            // One refresh after another, apart when they follow in a file or pipe.
            text.push('\n');
        }
        text
    }
}

/// The Kubernetes client's config, as kubectl finds it: the file of `--kubeconfig`, or
/// `KUBECONFIG` / `~/.kube/config` (then in-cluster when neither is asked for by flag),
/// with `--context` or the current context.
async fn kube_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, TopError> {
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..KubeConfigOptions::default()
    };
    let error = |path: Option<&Path>| {
        let path = path.map(Path::to_path_buf);
        move |source| TopError::Kubeconfig { path, source }
    };
    match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(error(Some(path)))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(error(Some(path)))
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(error(None)),
        (None, None) => kube::Config::infer().await.map_err(TopError::InferConfig),
    }
}

impl Source {
    async fn read(&self) -> Result<Reading, TopError> {
        match self {
            Source::Admin { url, http } => {
                let (json, summary) = read(http, url).await?;
                Ok(Reading {
                    source: url.clone(),
                    json,
                    summary,
                    warnings: Vec::new(),
                })
            }
            Source::Cluster {
                client,
                namespace,
                name,
                window,
            } => read_cluster(client, namespace, name, *window).await,
        }
    }
}

/// The URL of the summary of `window` below `admin`.
pub fn summary_url(admin: &str, window: Window) -> String {
    let admin = admin.trim_end_matches('/');
    let scheme = if admin.contains("://") { "" } else { "http://" };
    format!("{scheme}{admin}{}", super::api_path(window))
}

/// The summary at `url`: its JSON as served, and read.
async fn read(http: &reqwest::Client, url: &str) -> Result<(String, Summary), TopError> {
    let request = |source| TopError::Request {
        url: url.to_string(),
        source,
    };
    let response = http.get(url).send().await.map_err(request)?;
    let status = response.status();
    let body = response.text().await.map_err(request)?;
    if !status.is_success() {
        return Err(TopError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body: body.trim_end().to_string(),
        });
    }
    let summary = serde_json::from_str(&body).map_err(|source| TopError::Json {
        url: url.to_string(),
        source,
    })?;
    Ok((body, summary))
}

/// The merged summary of the ready proxies of MonitoredService `namespace/name`, each
/// read through the API server's pod proxy. Proxies that do not answer are left out and
/// named in the warnings; it fails when none answers.
async fn read_cluster(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    window: Window,
) -> Result<Reading, TopError> {
    let (ns, n) = (namespace.to_string(), name.to_string());
    let msvc = Api::<MonitoredService>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| TopError::ReadMonitoredService {
            namespace: ns.clone(),
            name: n.clone(),
            source,
        })?
        .ok_or_else(|| TopError::NoMonitoredService {
            namespace: ns.clone(),
            name: n.clone(),
        })?;
    let proxies = proxy_pods::list(client, &msvc)
        .await
        .map_err(|source| TopError::Pods {
            namespace: ns.clone(),
            name: n.clone(),
            source: Box::new(source),
        })?;
    if proxies.ready.is_empty() {
        return Err(TopError::NoReadyProxy {
            namespace: ns,
            name: n,
            matched: proxies.matched,
            selector: proxy_pods::label_selector(&msvc),
        });
    }
    let path = super::api_path(window);
    let answers = futures::future::join_all(
        proxies
            .ready
            .iter()
            .map(|p| read_pod(client, namespace, p, &path)),
    )
    .await;
    let (mut summaries, mut failures) = (Vec::new(), Vec::new());
    for answer in answers {
        match answer {
            Ok(summary) => summaries.push(summary),
            Err(failure) => failures.push(failure),
        }
    }
    if summaries.is_empty() {
        return Err(TopError::NoProxyAnswered {
            namespace: ns,
            name: n,
            failures,
        });
    }
    let merged = super::merge(&summaries).ok_or_else(|| TopError::Unmergeable {
        namespace: ns.clone(),
        name: n.clone(),
    })?;
    Ok(Reading {
        source: format!(
            "MonitoredService {ns}/{n}, {} of {} ready proxies",
            summaries.len(),
            proxies.ready.len()
        ),
        json: serde_json::to_string(&merged).map_err(|source| TopError::Json {
            url: format!("MonitoredService {ns}/{n}"),
            source,
        })?,
        summary: merged,
        warnings: failures,
    })
}

/// An API error as `403 Forbidden: message`, others as they print.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    }
}

/// The summary of one proxy pod through the API server; `Err` says which pod and why.
async fn read_pod(
    client: &kube::Client,
    namespace: &str,
    proxy: &ReadyProxy,
    path: &str,
) -> Result<Summary, String> {
    let failed = |why: String| format!("pod {} did not answer {path}: {why}", proxy.name);
    let request = http::Request::get(proxy.api_server_path(namespace, path))
        .body(Vec::new())
        .map_err(|e| failed(e.to_string()))?;
    let body = tokio::time::timeout(REQUEST_TIMEOUT, client.request_text(request))
        .await
        .map_err(|_| failed(format!("no answer within {REQUEST_TIMEOUT:?}")))?
        .map_err(|e| failed(api_message(&e)))?;
    serde_json::from_str(&body).map_err(|e| format!("pod {}: not a summary: {e}", proxy.name))
}

/// The view of one summary read from `source`: a heading line, the routes by requests (then
/// by route and method), the overall line, the recommendations.
pub fn table(source: &str, s: &Summary) -> String {
    let mut routes: Vec<&Entry> = s.routes.iter().collect();
    routes.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| (&a.route, &a.method).cmp(&(&b.route, &b.method)))
    });
    let mut rows = vec![
        [
            "METHOD", "ROUTE", "REQUESTS", "RPS", "ERRORS", "P50", "P95", "P99", "SCORE", "STATUS",
        ]
        .map(String::from),
    ];
    rows.extend(routes.iter().map(|e| cells(e)));
    let mut out = format!(
        "{source}: window {}, {:.0} s of traffic\n",
        s.window, s.seconds
    );
    out.push_str(&columns(&rows));
    if routes.is_empty() {
        out.push_str("(no request in this window)\n");
    }
    let o = &s.overall;
    out.push_str(&format!(
        "overall: {} requests, {:.2} req/s, {} 5xx, p50 {}, p95 {}, p99 {}, score {}\n",
        o.requests,
        o.rps,
        or_dash(o.error_ratio, percent),
        or_dash(o.p50, seconds),
        or_dash(o.p95, seconds),
        or_dash(o.p99, seconds),
        score(o),
    ));
    if !s.recommendations.is_empty() {
        out.push_str("\nrecommendations:\n");
        for r in &s.recommendations {
            out.push_str(&format!("  {}\n", r.message));
        }
    }
    out
}

fn cells(e: &Entry) -> [String; 10] {
    [
        e.method.clone(),
        e.route.clone(),
        e.requests.to_string(),
        format!("{:.2}", e.rps),
        or_dash(e.error_ratio, percent),
        or_dash(e.p50, seconds),
        or_dash(e.p95, seconds),
        or_dash(e.p99, seconds),
        e.score.map_or_else(|| "-".into(), |s| s.to_string()),
        e.status.map_or("-", word).into(),
    ]
}

/// `87 (excellent)`, `-` without requests.
fn score(e: &Entry) -> String {
    match (e.score, e.status) {
        (Some(score), Some(status)) => format!("{score} ({})", word(status)),
        _ => "-".into(),
    }
}

/// A status as in the JSON.
fn word(status: Status) -> &'static str {
    match status {
        Status::Excellent => "excellent",
        Status::Good => "good",
        Status::Fair => "fair",
        Status::Poor => "poor",
    }
}

fn or_dash(value: Option<f64>, format: fn(f64) -> String) -> String {
    value.map_or_else(|| "-".into(), format)
}

/// Rows in columns two spaces apart, the last one unpadded.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(route: &str, method: &str, requests: u64, error_ratio: f64) -> Entry {
        Entry {
            route: route.into(),
            method: method.into(),
            requests,
            rps: requests as f64 / 10.0,
            error_ratio: Some(error_ratio),
            client_error_ratio: Some(0.0),
            p50: Some(0.0025),
            p95: Some(0.3),
            p99: Some(1.5),
            mean: Some(0.01),
            request_bytes: 0,
            response_bytes: 0,
            in_flight: 0,
            latency_objective: 0.5,
            previous_p95: None,
            previous_error_ratio: None,
            score: Some(if error_ratio > 0.0 { 30 } else { 90 }),
            status: Some(if error_ratio > 0.0 {
                Status::Poor
            } else {
                Status::Excellent
            }),
            buckets: vec![],
            pagination: None,
        }
    }

    #[test]
    fn admin_addresses_become_summary_urls() {
        assert_eq!(
            summary_url("127.0.0.1:9901", Window::FiveMinutes),
            "http://127.0.0.1:9901/api/summary?window=5m"
        );
        assert_eq!(
            summary_url("https://proxy.example/a/", Window::OneMinute),
            "https://proxy.example/a/api/summary?window=1m"
        );
        assert_eq!(parse_window("1h"), Ok(Window::OneHour));
        assert!(
            parse_window("2m")
                .expect_err("no such window")
                .contains("1m, 5m")
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Command {
        #[command(flatten)]
        top: Args,
    }

    fn args(line: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser as _;
        Command::try_parse_from(std::iter::once("top").chain(line.iter().copied())).map(|c| c.top)
    }

    #[test]
    fn the_flags_name_one_source_and_the_cluster_flags_go_with_msvc() {
        let msvc = args(&["--msvc", "api", "-n", "shop", "--context", "kind"]).expect("parses");
        assert_eq!(msvc.choice(false).expect("a source"), Choice::Msvc("api"));
        assert_eq!(msvc.namespace.as_deref(), Some("shop"));
        let admin = args(&["--admin", "localhost:9901"]).expect("parses");
        assert_eq!(
            admin.choice(false).expect("a source"),
            Choice::Admin("localhost:9901")
        );
        let both = args(&["--admin", "localhost:9901", "--msvc", "api"]).expect("parses");
        assert!(matches!(both.choice(false), Err(TopError::TwoSources)));
        assert_eq!(
            both.choice(true)
                .expect("the environment's --admin gives way"),
            Choice::Msvc("api")
        );
        let stray = args(&["--admin", "a:1", "--kubeconfig", "k"]).expect("parses");
        assert_eq!(
            stray
                .choice(false)
                .expect_err("not with --admin")
                .to_string(),
            "--kubeconfig goes with --msvc, not --admin"
        );
        for bad in ["Api", "api/x", ".api", "api-", ""] {
            let error = args(&[&format!("--msvc={bad}")])
                .expect_err("not a name")
                .to_string();
            assert!(error.contains("is not a Kubernetes name"), "{bad}: {error}");
        }
        assert!(args(&["--msvc", "api", "-n", "a_b"]).is_err());
        assert_eq!(parse_name("trips-api.v2"), Ok("trips-api.v2".into()));
    }

    #[test]
    fn missing_proxies_are_named_with_where_to_look() {
        let error = |matched| {
            TopError::NoReadyProxy {
                namespace: "shop".into(),
                name: "api".into(),
                matched,
                selector: "a=b".into(),
            }
            .to_string()
        };
        assert_eq!(
            error(0),
            "MonitoredService shop/api has no ready proxy pod: no pod is labelled a=b (is the \
             operator running? kubectl get pods -n shop -l a=b)"
        );
        assert_eq!(
            error(3),
            "MonitoredService shop/api has no ready proxy pod: none of the 3 pods labelled a=b \
             is ready (kubectl get pods -n shop -l a=b)"
        );
        let forbidden = kube::Error::Api(
            kube::core::Status::failure("pods \"x\" is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        assert_eq!(
            api_message(&forbidden),
            "403 Forbidden: pods \"x\" is forbidden"
        );
    }

    #[test]
    fn the_table_lists_the_busiest_routes_first_then_overall_and_recommendations() {
        let summary = Summary {
            window: Window::OneMinute,
            seconds: 10.0,
            bounds: vec![],
            overall: Entry {
                route: "*".into(),
                method: "*".into(),
                error_ratio: Some(10.0 / 60.0),
                score: Some(70),
                status: Some(Status::Good),
                ..entry("*", "*", 60, 0.0)
            },
            routes: vec![
                entry("/fail", "POST", 10, 1.0),
                entry("/users/{id}", "GET", 50, 0.0),
            ],
            top_by_latency: vec![],
            top_by_errors: vec![],
            recommendations: vec![super::super::Recommendation {
                route: "/fail".into(),
                method: "POST".into(),
                message: "POST /fail: 100.0 % of its requests answered 5xx".into(),
            }],
        };
        let text = table("http://a:1/api/summary?window=1m", &summary);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "http://a:1/api/summary?window=1m: window 1m, 10 s of traffic"
        );
        assert_eq!(
            lines[1],
            "METHOD  ROUTE        REQUESTS  RPS   ERRORS   P50   P95     P99    SCORE  STATUS"
        );
        assert_eq!(
            lines[2],
            "GET     /users/{id}  50        5.00  0.0 %    3 ms  300 ms  1.5 s  90     excellent"
        );
        assert_eq!(
            lines[3],
            "POST    /fail        10        1.00  100.0 %  3 ms  300 ms  1.5 s  30     poor"
        );
        assert_eq!(
            lines[4],
            "overall: 60 requests, 6.00 req/s, 16.7 % 5xx, p50 3 ms, p95 300 ms, p99 1.5 s, score 70 (good)"
        );
        assert_eq!(
            lines[5..],
            [
                "",
                "recommendations:",
                "  POST /fail: 100.0 % of its requests answered 5xx"
            ]
        );
    }
}
