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
//! - `--msvc NAME`: every ready proxy pod of a MonitoredService, each read through the
//!   API server's pod proxy and merged ([`super::msvc`], which `routemeter compare
//!   --msvc` reads with too), so it needs no port-forward and no route into the cluster.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use thiserror::Error;

use super::compare::Output;
use super::msvc::{self, MsvcError, REQUEST_TIMEOUT, parse_name, parse_window};
use super::score::{Status, percent, seconds};
use super::{Entry, Summary, Window};

/// The environment variable `--admin` falls back to.
const ADMIN_ENV: &str = "ROUTEMETER_ADMIN";

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
    /// Reading the MonitoredService's proxies (`--msvc`).
    #[error(transparent)]
    Msvc(#[from] MsvcError),
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
    /// -n/--namespace, --kubeconfig, --context: with --msvc.
    #[command(flatten)]
    pub cluster: msvc::ClusterArgs,
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
                // Without retries: a proxy that does not answer is reported, and read
                // again at the next refresh.
                let (client, namespace) = self.cluster.client().await?;
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
            (None, Some(admin)) => match self.cluster.given() {
                Some(flag) => Err(TopError::ClusterFlag(flag)),
                None => Ok(Choice::Admin(admin)),
            },
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
            } => {
                let merged = msvc::read(client, namespace, name, *window).await?;
                Ok(Reading {
                    source: format!("MonitoredService {namespace}/{name}, {}", merged.proxies()),
                    json: serde_json::to_string(&merged.summary).map_err(|source| {
                        TopError::Json {
                            url: format!("MonitoredService {namespace}/{name}"),
                            source,
                        }
                    })?,
                    summary: merged.summary,
                    warnings: merged.failures,
                })
            }
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
        assert_eq!(msvc.cluster.namespace.as_deref(), Some("shop"));
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
