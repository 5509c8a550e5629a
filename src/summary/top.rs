//! `routemeter top`: the live summary of one proxy in a terminal, like `kubectl top`. It
//! reads `/api/summary` of the proxy's admin listener every `--interval` and prints a table
//! of its routes (the busiest first), the overall line and the recommendations; on a
//! terminal each refresh replaces the last one, otherwise each is printed after the
//! previous. `--once -o json` prints the summary's JSON as the proxy served it.
//!
//! Against a proxy in a cluster: `kubectl port-forward svc/<name>-routemeter-metrics 9901`
//! then `--admin localhost:9901`. `--admin` takes any URL below which `/api/summary` is
//! served, so a path prefix (a proxy in between) works too.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use thiserror::Error;

use super::compare::Output;
use super::score::{Status, percent, seconds};
use super::{Entry, Summary, Window};

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
    #[error("cannot write to stdout: {0}")]
    Write(#[source] std::io::Error),
}

/// Arguments of `routemeter top`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The proxy's admin listener: `http://host:port` (`host:port` alone means http), or
    /// any URL below which `/api/summary` is served.
    #[arg(long, env = "ROUTEMETER_ADMIN")]
    pub admin: String,
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

impl Args {
    /// Shows the summary, once or until interrupted. A read that fails after the first
    /// one is shown in place of the table and retried at the next refresh: a proxy that
    /// restarts does not end the view.
    pub fn run(self) -> Result<(), TopError> {
        if self.interval < Duration::from_millis(100) {
            return Err(TopError::Interval(self.interval));
        }
        let url = summary_url(&self.admin, self.window);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(TopError::Client)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TopError::Runtime)?;
        let terminal = std::io::stdout().is_terminal();
        runtime.block_on(async {
            let mut first = true;
            loop {
                let text = match read(&http, &url).await {
                    Ok((body, summary)) => self.render(&url, &body, &summary),
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

    fn render(&self, url: &str, body: &str, summary: &Summary) -> String {
        match self.output {
            Output::Json => format!("{}\n", body.trim_end()),
            Output::Table if self.once => table(url, summary),
            // One refresh after another, apart when they follow in a file or pipe.
            Output::Table => format!("{}\n", table(url, summary)),
        }
    }
}

/// The URL of the summary of `window` below `admin`.
pub fn summary_url(admin: &str, window: Window) -> String {
    let admin = admin.trim_end_matches('/');
    let scheme = if admin.contains("://") { "" } else { "http://" };
    format!("{scheme}{admin}/api/summary?window={window}")
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

/// The view of one summary read from `url`: a heading line, the routes by requests (then
/// by route and method), the overall line, the recommendations.
pub fn table(url: &str, s: &Summary) -> String {
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
        "{url}: window {}, {:.0} s of traffic\n",
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
