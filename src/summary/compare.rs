//! `routemeter compare`: the regressions between two `/api/summary` snapshots, for a CI
//! pipeline that load-tests a release and fails it when it got slower than its baseline.
//!
//! Per (route, method) present in both, and for `overall`: a regression is a mean above
//! `--mean-ratio` × the baseline's (default 1.1), a p95 above `--p95-ratio` × (1.2), or a
//! 5xx ratio above `--error-ratio` × (2) that also grew by at least `--min-error-increase`
//! (0.001, a tenth of a percentage point, so that one error where there were none is not
//! a failed build). A route with fewer than `--min-requests` (20) in either summary is
//! skipped and listed as such; a route in one summary only is listed, never a regression.
//!
//! Only the fields compared are read (`route`, `method`, `requests`, `mean`, `p95`,
//! `errorRatio` of `overall` and of each of `routes`), so a summary with more fields
//! compares all the same. Exit status: 0 without regression, 1 with one, 2 on bad input.
//!
//! The two summaries are files (`--baseline`, `--current`), or two windows of a
//! MonitoredService's proxies (`--msvc`, `--baseline-window` 1h, `--current-window` 5m),
//! read and merged as `top --msvc` reads them ([`super::msvc`]). Those windows end at the
//! same moment, so the baseline contains the current window: a regression in it raises the
//! baseline too and shows smaller than against a separate run. A quick check of "worse
//! than the last hour", not a substitute for two runs.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use super::msvc::{self, MsvcError, parse_name, parse_window};
use super::score::{percent, seconds};
use super::{OVERALL_ROUTE, Summary, Window};

/// Why the summaries could not be compared; each names the file, and the field at fault.
#[derive(Debug, Error)]
pub enum CompareError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not JSON: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {field}: {message}")]
    Field {
        path: String,
        field: String,
        message: String,
    },
    #[error("--{flag}: {message}")]
    Threshold { flag: &'static str, message: String },
    #[error("cannot write the report: {0}")]
    Write(#[source] std::io::Error),
    #[error("give --baseline FILE and --current FILE, or --msvc NAME")]
    NoSource,
    #[error("--msvc and {0} name two sources: give --baseline and --current files, or --msvc")]
    TwoSources(&'static str),
    #[error("{given} without {missing}: give both summary files")]
    OneFile {
        given: &'static str,
        missing: &'static str,
    },
    #[error("{0} goes with --msvc, not --baseline/--current")]
    MsvcFlag(&'static str),
    #[error(
        "--current-window {current} is not shorter than --baseline-window {baseline}: the \
         current window is the recent part of the baseline's"
    )]
    Windows { baseline: Window, current: Window },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Reading the MonitoredService's proxies (`--msvc`).
    #[error(transparent)]
    Msvc(#[from] MsvcError),
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// The baseline window of `--msvc` when `--baseline-window` is not given.
pub const BASELINE_WINDOW: Window = Window::OneHour;
/// The current window of `--msvc` when `--current-window` is not given.
pub const CURRENT_WINDOW: Window = Window::FiveMinutes;

/// Arguments of `routemeter compare`: two summary files, or two windows of a
/// MonitoredService.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The baseline summary (JSON of `/api/summary`), with --current.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// The summary of the run under test, with --baseline.
    #[arg(long, value_name = "FILE")]
    pub current: Option<PathBuf>,
    /// Instead of files: a MonitoredService, whose ready proxies' merged summary of
    /// --current-window is compared with that of --baseline-window, both read through the
    /// API server's pod proxy as `top --msvc` reads them. The baseline window contains the
    /// current one, which dampens a regression: a quick check, not a second run.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub msvc: Option<String>,
    /// -n/--namespace, --kubeconfig, --context: with --msvc.
    #[command(flatten)]
    pub cluster: msvc::ClusterArgs,
    /// With --msvc, the baseline's window: 5m, 15m or 1h, longer than --current-window
    /// [default: 1h].
    #[arg(long, value_name = "WINDOW", value_parser = parse_window)]
    pub baseline_window: Option<Window>,
    /// With --msvc, the current window: 1m, 5m or 15m, shorter than --baseline-window
    /// [default: 5m].
    #[arg(long, value_name = "WINDOW", value_parser = parse_window)]
    pub current_window: Option<Window>,
    /// A mean latency above this factor of the baseline's is a regression.
    #[arg(long, default_value_t = Thresholds::default().mean_ratio)]
    pub mean_ratio: f64,
    /// A p95 above this factor of the baseline's is a regression.
    #[arg(long, default_value_t = Thresholds::default().p95_ratio)]
    pub p95_ratio: f64,
    /// A 5xx ratio above this factor of the baseline's is a regression (see
    /// --min-error-increase).
    #[arg(long, default_value_t = Thresholds::default().error_ratio)]
    pub error_ratio: f64,
    /// The least growth of the 5xx ratio that counts, as a ratio (0.001 = 0.1 point).
    #[arg(long, default_value_t = Thresholds::default().min_error_increase)]
    pub min_error_increase: f64,
    /// Routes with fewer requests than this in either summary are skipped.
    #[arg(long, default_value_t = Thresholds::default().min_requests)]
    pub min_requests: u64,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

/// What the flags compare.
#[derive(Debug, PartialEq, Eq)]
enum Inputs<'a> {
    /// Two summary files.
    Files {
        baseline: &'a Path,
        current: &'a Path,
    },
    /// Two windows of a MonitoredService's proxies.
    Msvc {
        name: &'a str,
        baseline: Window,
        current: Window,
    },
}

impl Args {
    /// Compares and prints; `Ok(true)` when a regression was found.
    pub fn run(self) -> Result<bool, CompareError> {
        let thresholds = Thresholds {
            mean_ratio: self.mean_ratio,
            p95_ratio: self.p95_ratio,
            error_ratio: self.error_ratio,
            min_error_increase: self.min_error_increase,
            min_requests: self.min_requests,
        };
        thresholds.validate()?;
        let report = match self.inputs()? {
            Inputs::Files { baseline, current } => {
                compare(&read(baseline)?, &read(current)?, &thresholds)
            }
            Inputs::Msvc {
                name,
                baseline,
                current,
            } => self.compare_msvc(name, (baseline, current), &thresholds)?,
        };
        let text = match self.output {
            Output::Table => report.table(),
            Output::Json => {
                let mut json = serde_json::to_string_pretty(&report).map_err(|e| {
                    CompareError::Write(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                })?;
                json.push('\n');
                json
            }
        };
        use std::io::Write;
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(CompareError::Write)?;
        Ok(report.regressed)
    }

    /// Which inputs the flags name, and whether the others go with them.
    fn inputs(&self) -> Result<Inputs<'_>, CompareError> {
        let files = [
            ("--baseline", self.baseline.as_deref()),
            ("--current", self.current.as_deref()),
        ];
        match (self.msvc.as_deref(), files) {
            (Some(name), [(_, None), (_, None)]) => {
                let baseline = self.baseline_window.unwrap_or(BASELINE_WINDOW);
                let current = self.current_window.unwrap_or(CURRENT_WINDOW);
                if current.seconds() >= baseline.seconds() {
                    return Err(CompareError::Windows { baseline, current });
                }
                Ok(Inputs::Msvc {
                    name,
                    baseline,
                    current,
                })
            }
            (Some(_), [(flag, Some(_)), _] | [_, (flag, Some(_))]) => {
                Err(CompareError::TwoSources(flag))
            }
            (None, [(_, Some(baseline)), (_, Some(current))]) => {
                let windows = [
                    ("--baseline-window", self.baseline_window.is_some()),
                    ("--current-window", self.current_window.is_some()),
                ]
                .into_iter()
                .find_map(|(flag, given)| given.then_some(flag));
                match self.cluster.given().or(windows) {
                    Some(flag) => Err(CompareError::MsvcFlag(flag)),
                    None => Ok(Inputs::Files { baseline, current }),
                }
            }
            (None, [(given, Some(_)), (missing, None)] | [(missing, None), (given, Some(_))]) => {
                Err(CompareError::OneFile { given, missing })
            }
            (None, [(_, None), (_, None)]) => Err(CompareError::NoSource),
        }
    }

    /// The comparison of two windows of MonitoredService `name`'s proxies, both read from
    /// the same proxies (found once); those that did not answer are warned of on stderr.
    fn compare_msvc(
        &self,
        name: &str,
        (baseline, current): (Window, Window),
        thresholds: &Thresholds,
    ) -> Result<Report, CompareError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CompareError::Runtime)?;
        let (proxies, base, cur) = runtime.block_on(async {
            let (client, namespace) = self.cluster.client().await?;
            let proxies = msvc::find(&client, &namespace, name).await?;
            let (base, cur) = futures::future::try_join(
                proxies.read(&client, baseline),
                proxies.read(&client, current),
            )
            .await?;
            Ok::<_, MsvcError>((proxies, base, cur))
        })?;
        for failure in base.failures.iter().chain(&cur.failures) {
            eprintln!("warning: {failure}");
        }
        let source = MsvcSource {
            monitored_service: proxies.key(),
            baseline: WindowSource::of(&base),
            current: WindowSource::of(&cur),
        };
        if let Some(note) = source.same_traffic()
            && self.output == Output::Json
        {
            // The table says it in its heading.
            eprintln!("note: {note}");
        }
        let key = &source.monitored_service;
        let report = compare(
            &snapshot(key, &base.summary)?,
            &snapshot(key, &cur.summary)?,
            thresholds,
        );
        Ok(Report {
            msvc: Some(source),
            ..report
        })
    }
}

/// The compared fields of a merged summary of MonitoredService `key`.
fn snapshot(key: &str, summary: &Summary) -> Result<Snapshot, CompareError> {
    let path = format!("MonitoredService {key}, window {}", summary.window);
    let value = serde_json::to_value(summary).map_err(|source| CompareError::Json {
        path: path.clone(),
        source,
    })?;
    parse(&value).map_err(|(field, message)| CompareError::Field {
        path,
        field,
        message,
    })
}

/// Where the two summaries of `compare --msvc` come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MsvcSource {
    /// `namespace/name`.
    pub monitored_service: String,
    pub baseline: WindowSource,
    pub current: WindowSource,
}

/// One window of `compare --msvc`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowSource {
    pub window: Window,
    /// Seconds of traffic the window covers: less than its length in proxies younger than
    /// the window.
    pub seconds: f64,
    /// Proxies merged.
    pub proxies: usize,
    /// Proxies ready and asked.
    pub ready_proxies: usize,
}

impl WindowSource {
    fn of(m: &msvc::Merged) -> Self {
        WindowSource {
            window: m.summary.window,
            seconds: m.summary.seconds,
            proxies: m.answered,
            ready_proxies: m.ready,
        }
    }

    /// `last 1h (2 of 3 ready proxies)`.
    fn describe(&self) -> String {
        format!(
            "last {} ({} of {} ready proxies)",
            self.window, self.proxies, self.ready_proxies
        )
    }
}

impl MsvcSource {
    /// The table's heading: what was compared, and that the baseline contains the current
    /// window.
    fn heading(&self) -> String {
        let (b, c) = (&self.baseline, &self.current);
        let mut out = format!(
            "baseline: MonitoredService {}, {}; current: {}\n\
             (the {} baseline contains the last {}: a regression there raises the baseline \
             too, and shows smaller than it is)\n",
            self.monitored_service,
            b.describe(),
            c.describe(),
            b.window,
            c.window,
        );
        if let Some(note) = self.same_traffic() {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    /// When the baseline covers no more time than the current window: then both hold the
    /// same requests, and nothing can regress.
    fn same_traffic(&self) -> Option<String> {
        let (b, c) = (&self.baseline, &self.current);
        (b.seconds <= c.window.seconds() as f64).then(|| {
            format!(
                "the proxies hold {:.0} s of traffic, no more than the {} window: both windows \
                 hold the same requests",
                b.seconds, c.window
            )
        })
    }
}

/// What counts as a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    pub mean_ratio: f64,
    pub p95_ratio: f64,
    pub error_ratio: f64,
    pub min_error_increase: f64,
    pub min_requests: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            mean_ratio: 1.1,
            p95_ratio: 1.2,
            error_ratio: 2.0,
            min_error_increase: 0.001,
            min_requests: 20,
        }
    }
}

impl Thresholds {
    fn validate(&self) -> Result<(), CompareError> {
        for (flag, value) in [
            ("mean-ratio", self.mean_ratio),
            ("p95-ratio", self.p95_ratio),
            ("error-ratio", self.error_ratio),
        ] {
            if !(value.is_finite() && value >= 1.0) {
                return Err(CompareError::Threshold {
                    flag,
                    message: format!("{value} is not a factor of at least 1"),
                });
            }
        }
        if !(self.min_error_increase.is_finite() && self.min_error_increase >= 0.0) {
            return Err(CompareError::Threshold {
                flag: "min-error-increase",
                message: format!("{} is not a ratio of at least 0", self.min_error_increase),
            });
        }
        Ok(())
    }
}

/// The figures compared, of one (route, method) of one summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub requests: u64,
    pub mean: Option<f64>,
    pub p95: Option<f64>,
    pub error_ratio: Option<f64>,
}

/// One summary as `compare` reads it: `overall` first, then the routes.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot(pub Vec<(String, String, Figures)>);

/// A figure that regressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Figure {
    Mean,
    P95,
    ErrorRatio,
}

impl Figure {
    fn as_str(self) -> &'static str {
        match self {
            Figure::Mean => "mean",
            Figure::P95 => "p95",
            Figure::ErrorRatio => "errors",
        }
    }
}

/// What became of one (route, method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Compared; nothing past its threshold.
    Ok,
    /// Compared; see `regressions`.
    Regressed,
    /// Fewer than `minRequests` in either summary.
    TooFewRequests,
    /// In the baseline only.
    MissingInCurrent,
    /// In the current summary only.
    NewInCurrent,
}

/// The comparison of one (route, method).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteComparison {
    pub route: String,
    pub method: String,
    pub verdict: Verdict,
    pub baseline: Option<Figures>,
    pub current: Option<Figures>,
    pub regressions: Vec<Figure>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// With `--msvc`: the MonitoredService and the two windows compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msvc: Option<MsvcSource>,
    /// Whether any route (or `overall`) regressed.
    pub regressed: bool,
    pub thresholds: Thresholds,
    /// `overall` first, then every route of either summary.
    pub routes: Vec<RouteComparison>,
}

/// Reads a summary file.
pub fn read(path: &Path) -> Result<Snapshot, CompareError> {
    let name = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| CompareError::Read {
        path: name.clone(),
        source,
    })?;
    let value: Value = serde_json::from_slice(&text).map_err(|source| CompareError::Json {
        path: name.clone(),
        source,
    })?;
    parse(&value).map_err(|(field, message)| CompareError::Field {
        path: name,
        field,
        message,
    })
}

/// Reads the compared fields of a summary; `Err((field, message))` names what is wrong.
pub fn parse(value: &Value) -> Result<Snapshot, (String, String)> {
    let overall = value
        .get("overall")
        .ok_or_else(|| ("overall".to_string(), "missing".to_string()))?;
    let mut entries = vec![(
        OVERALL_ROUTE.to_string(),
        OVERALL_ROUTE.to_string(),
        figures(overall, "overall")?,
    )];
    let routes = value
        .get("routes")
        .ok_or_else(|| ("routes".to_string(), "missing".to_string()))?
        .as_array()
        .ok_or_else(|| ("routes".to_string(), "expected a list".to_string()))?;
    for (i, route) in routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        let name = string(route, &at, "route")?;
        let method = string(route, &at, "method")?;
        entries.push((name, method, figures(route, &at)?));
    }
    Ok(Snapshot(entries))
}

fn string(v: &Value, at: &str, name: &str) -> Result<String, (String, String)> {
    match v.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err((
            format!("{at}.{name}"),
            format!("expected a string, found {other}"),
        )),
        None => Err((format!("{at}.{name}"), "missing".into())),
    }
}

fn figures(v: &Value, at: &str) -> Result<Figures, (String, String)> {
    let requests = match v.get("requests") {
        Some(n) => n.as_u64().ok_or_else(|| {
            (
                format!("{at}.requests"),
                format!("expected a count, found {n}"),
            )
        })?,
        None => return Err((format!("{at}.requests"), "missing".into())),
    };
    let number = |name: &str| -> Result<Option<f64>, (String, String)> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(Some)
                .ok_or_else(|| {
                    (
                        format!("{at}.{name}"),
                        format!("expected a number of at least 0 or null, found {n}"),
                    )
                }),
        }
    };
    Ok(Figures {
        requests,
        mean: number("mean")?,
        p95: number("p95")?,
        error_ratio: number("errorRatio")?,
    })
}

/// Compares `current` with `baseline`.
pub fn compare(baseline: &Snapshot, current: &Snapshot, t: &Thresholds) -> Report {
    let find = |s: &Snapshot, route: &str, method: &str| {
        s.0.iter()
            .find(|(r, m, _)| r == route && m == method)
            .map(|(_, _, f)| *f)
    };
    let mut routes = Vec::new();
    for (route, method, base) in &baseline.0 {
        let cur = find(current, route, method);
        let (verdict, regressions) = match cur {
            None => (Verdict::MissingInCurrent, Vec::new()),
            Some(cur) if base.requests < t.min_requests || cur.requests < t.min_requests => {
                (Verdict::TooFewRequests, Vec::new())
            }
            Some(cur) => {
                let r = regressions(base, &cur, t);
                let verdict = if r.is_empty() {
                    Verdict::Ok
                } else {
                    Verdict::Regressed
                };
                (verdict, r)
            }
        };
        routes.push(RouteComparison {
            route: route.clone(),
            method: method.clone(),
            verdict,
            baseline: Some(*base),
            current: cur,
            regressions,
        });
    }
    for (route, method, cur) in &current.0 {
        if find(baseline, route, method).is_none() {
            routes.push(RouteComparison {
                route: route.clone(),
                method: method.clone(),
                verdict: Verdict::NewInCurrent,
                baseline: None,
                current: Some(*cur),
                regressions: Vec::new(),
            });
        }
    }
    Report {
        msvc: None,
        regressed: routes.iter().any(|r| r.verdict == Verdict::Regressed),
        thresholds: *t,
        routes,
    }
}

/// The figures of `cur` past their threshold over `base`. A figure missing on either side
/// is not compared.
fn regressions(base: &Figures, cur: &Figures, t: &Thresholds) -> Vec<Figure> {
    let mut out = Vec::new();
    if let (Some(b), Some(c)) = (base.mean, cur.mean)
        && c > b * t.mean_ratio
    {
        out.push(Figure::Mean);
    }
    if let (Some(b), Some(c)) = (base.p95, cur.p95)
        && c > b * t.p95_ratio
    {
        out.push(Figure::P95);
    }
    if let (Some(b), Some(c)) = (base.error_ratio, cur.error_ratio)
        && c > b * t.error_ratio
        && c - b >= t.min_error_increase
    {
        out.push(Figure::ErrorRatio);
    }
    out
}

impl Report {
    /// The report as a table, one line per (route, method), then a line of totals.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "METHOD".to_string(),
            "ROUTE".into(),
            "REQUESTS".into(),
            "MEAN".into(),
            "P95".into(),
            "ERRORS".into(),
            "RESULT".into(),
        ]];
        for r in &self.routes {
            let (b, c) = (r.baseline.as_ref(), r.current.as_ref());
            let requests = pair(b.map(|f| f.requests), c.map(|f| f.requests), |n| {
                n.to_string()
            });
            rows.push([
                r.method.clone(),
                r.route.clone(),
                requests,
                change(b.and_then(|f| f.mean), c.and_then(|f| f.mean), seconds),
                change(b.and_then(|f| f.p95), c.and_then(|f| f.p95), seconds),
                change(
                    b.and_then(|f| f.error_ratio),
                    c.and_then(|f| f.error_ratio),
                    percent,
                ),
                match r.verdict {
                    Verdict::Ok => "ok".into(),
                    Verdict::Regressed => format!(
                        "REGRESSION: {}",
                        r.regressions
                            .iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Verdict::TooFewRequests => format!(
                        "skipped: fewer than {} requests",
                        self.thresholds.min_requests
                    ),
                    Verdict::MissingInCurrent => "not in current".into(),
                    Verdict::NewInCurrent => "new".into(),
                },
            ]);
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = self
            .msvc
            .as_ref()
            .map(MsvcSource::heading)
            .unwrap_or_default();
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(w - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let count = |v: Verdict| self.routes.iter().filter(|r| r.verdict == v).count();
        let compared = count(Verdict::Ok) + count(Verdict::Regressed);
        out.push_str(&format!(
            "{} regressed of {compared} compared ({} skipped with too few requests)\n",
            count(Verdict::Regressed),
            count(Verdict::TooFewRequests),
        ));
        out
    }
}

fn pair<T: Copy>(b: Option<T>, c: Option<T>, show: impl Fn(T) -> String) -> String {
    let side = |v: Option<T>| v.map_or("-".to_string(), &show);
    format!("{} → {}", side(b), side(c))
}

fn change(b: Option<f64>, c: Option<f64>, show: impl Fn(f64) -> String) -> String {
    let text = pair(b, c, show);
    match (b, c) {
        (Some(b), Some(c)) if b > 0.0 => format!("{text} (×{:.2})", c / b),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(routes: &[(&str, u64, f64, f64, f64)]) -> Value {
        let entry = |(route, requests, mean, p95, errors): &(&str, u64, f64, f64, f64)| {
            json!({"route": route, "method": "GET", "requests": requests, "mean": mean,
                   "p95": p95, "errorRatio": errors, "extra": "ignored"})
        };
        json!({
            "window": "5m",
            "overall": {"route": "*", "method": "*", "requests": 1000, "mean": 0.02,
                        "p95": 0.1, "errorRatio": 0.001},
            "routes": routes.iter().map(entry).collect::<Vec<_>>(),
        })
    }

    fn run(base: &Value, cur: &Value) -> Report {
        compare(
            &parse(base).expect("baseline"),
            &parse(cur).expect("current"),
            &Thresholds::default(),
        )
    }

    fn verdict(report: &Report, route: &str) -> (Verdict, Vec<Figure>) {
        let r = report
            .routes
            .iter()
            .find(|r| r.route == route)
            .expect("route");
        (r.verdict, r.regressions.clone())
    }

    #[test]
    fn an_unchanged_run_passes() {
        let s = summary(&[("/a", 500, 0.02, 0.09, 0.01), ("/b", 100, 0.2, 0.4, 0.0)]);
        let report = run(&s, &s);
        assert!(!report.regressed);
        assert!(report.routes.iter().all(|r| r.verdict == Verdict::Ok));
        assert!(report.table().contains("0 regressed of 3 compared"));
    }

    #[test]
    fn a_planted_regression_is_found() {
        let base = summary(&[("/a", 500, 0.02, 0.09, 0.01), ("/b", 100, 0.2, 0.4, 0.0)]);
        let cur = summary(&[("/a", 500, 0.02, 0.2, 0.01), ("/b", 100, 0.2, 0.4, 0.0)]);
        let report = run(&base, &cur);
        assert!(report.regressed);
        assert_eq!(
            verdict(&report, "/a"),
            (Verdict::Regressed, vec![Figure::P95])
        );
        assert_eq!(verdict(&report, "/b").0, Verdict::Ok);
        let table = report.table();
        assert!(table.contains("REGRESSION: p95"), "{table}");
        assert!(table.contains("90 ms → 200 ms (×2.22)"), "{table}");
    }

    #[test]
    fn each_threshold_below_at_and_above() {
        let e = 1e-9;
        let base = |m, p, r| summary(&[("/a", 100, m, p, r)]);
        let cases = [
            (base(0.1, 0.1, 0.01), base(0.11, 0.1, 0.01), vec![]),
            (
                base(0.1, 0.1, 0.01),
                base(0.11 + e, 0.1, 0.01),
                vec![Figure::Mean],
            ),
            (base(0.1, 0.1, 0.01), base(0.1, 0.12, 0.01), vec![]),
            (
                base(0.1, 0.1, 0.01),
                base(0.1, 0.12 + e, 0.01),
                vec![Figure::P95],
            ),
            (base(0.1, 0.1, 0.01), base(0.1, 0.1, 0.02), vec![]),
            (
                base(0.1, 0.1, 0.01),
                base(0.1, 0.1, 0.02 + e),
                vec![Figure::ErrorRatio],
            ),
            // From no error: less than 0.1 point more is no regression.
            (base(0.1, 0.1, 0.0), base(0.1, 0.1, 0.000_9), vec![]),
            (
                base(0.1, 0.1, 0.0),
                base(0.1, 0.1, 0.001),
                vec![Figure::ErrorRatio],
            ),
            (
                base(0.1, 0.1, 0.0),
                base(0.2, 0.2, 0.5),
                vec![Figure::Mean, Figure::P95, Figure::ErrorRatio],
            ),
        ];
        for (b, c, want) in cases {
            assert_eq!(verdict(&run(&b, &c), "/a").1, want, "{b} → {c}");
        }
    }

    #[test]
    fn routes_with_too_few_requests_or_on_one_side_are_listed_not_failed() {
        let base = summary(&[("/few", 19, 0.1, 0.1, 0.0), ("/gone", 100, 0.1, 0.1, 0.0)]);
        let cur = summary(&[("/few", 100, 9.0, 9.0, 1.0), ("/new", 100, 9.0, 9.0, 1.0)]);
        let report = run(&base, &cur);
        assert!(!report.regressed);
        assert_eq!(verdict(&report, "/few").0, Verdict::TooFewRequests);
        assert_eq!(verdict(&report, "/gone").0, Verdict::MissingInCurrent);
        assert_eq!(verdict(&report, "/new").0, Verdict::NewInCurrent);
        let enough = summary(&[("/few", 20, 0.1, 0.1, 0.0)]);
        assert_eq!(verdict(&run(&enough, &cur), "/few").0, Verdict::Regressed);
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (json!({"routes": []}), "overall"),
            (json!({"overall": {"requests": 1}}), "routes"),
            (
                json!({"overall": {"requests": 1}, "routes": [{"route": "/a", "method": "GET"}]}),
                "routes[0].requests",
            ),
            (
                json!({"overall": {"requests": 1}, "routes": [{"route": "/a", "method": "GET", "requests": 5, "p95": "slow"}]}),
                "routes[0].p95",
            ),
            (
                json!({"overall": {"requests": -1}, "routes": []}),
                "overall.requests",
            ),
            (
                json!({"overall": {"requests": 1}, "routes": [{"method": "GET", "requests": 1}]}),
                "routes[0].route",
            ),
        ];
        for (value, field) in cases {
            let (at, message) = parse(&value).expect_err("invalid");
            assert_eq!(at, field, "{value}: {message}");
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Command {
        #[command(flatten)]
        compare: Args,
    }

    fn args(line: &[&str]) -> Args {
        use clap::Parser as _;
        Command::try_parse_from(std::iter::once("compare").chain(line.iter().copied()))
            .map(|c| c.compare)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn inputs_error(line: &[&str]) -> String {
        args(line).inputs().expect_err("refused").to_string()
    }

    #[test]
    fn the_flags_name_two_files_or_a_monitored_services_two_windows() {
        let files = args(&["--baseline", "b.json", "--current", "c.json"]);
        assert_eq!(
            files.inputs().expect("files"),
            Inputs::Files {
                baseline: Path::new("b.json"),
                current: Path::new("c.json")
            }
        );
        let msvc = args(&["--msvc", "api", "-n", "shop", "--context", "kind"]);
        assert_eq!(
            msvc.inputs().expect("a MonitoredService"),
            Inputs::Msvc {
                name: "api",
                baseline: Window::OneHour,
                current: Window::FiveMinutes
            },
            "1h against 5m by default"
        );
        let windows = args(&[
            "--msvc",
            "api",
            "--baseline-window",
            "15m",
            "--current-window",
            "1m",
        ]);
        assert_eq!(
            windows.inputs().expect("a MonitoredService"),
            Inputs::Msvc {
                name: "api",
                baseline: Window::FifteenMinutes,
                current: Window::OneMinute
            }
        );
        assert_eq!(
            inputs_error(&[]),
            "give --baseline FILE and --current FILE, or --msvc NAME"
        );
        assert_eq!(
            inputs_error(&["--current", "c.json"]),
            "--current without --baseline: give both summary files"
        );
        assert_eq!(
            inputs_error(&["--baseline", "b.json"]),
            "--baseline without --current: give both summary files"
        );
        for file in ["--baseline", "--current"] {
            assert_eq!(
                inputs_error(&["--msvc", "api", file, "x.json"]),
                format!(
                    "--msvc and {file} name two sources: give --baseline and --current \
                     files, or --msvc"
                )
            );
        }
        let files = ["--baseline", "b.json", "--current", "c.json"];
        for (flag, value) in [
            ("--kubeconfig", "k"),
            ("--context", "kind"),
            ("--baseline-window", "1h"),
            ("--current-window", "1m"),
        ] {
            assert_eq!(
                inputs_error(&[&files[..], &[flag, value]].concat()),
                format!("{flag} goes with --msvc, not --baseline/--current")
            );
        }
        assert_eq!(
            inputs_error(&[&files[..], &["-n", "shop"]].concat()),
            "-n/--namespace goes with --msvc, not --baseline/--current"
        );
        for (baseline, current) in [("5m", "5m"), ("5m", "1h")] {
            assert_eq!(
                inputs_error(&[
                    "--msvc",
                    "api",
                    "--baseline-window",
                    baseline,
                    "--current-window",
                    current
                ]),
                format!(
                    "--current-window {current} is not shorter than --baseline-window \
                     {baseline}: the current window is the recent part of the baseline's"
                )
            );
        }
        assert_eq!(
            inputs_error(&["--msvc", "api", "--current-window", "1h"]),
            "--current-window 1h is not shorter than --baseline-window 1h: the current \
             window is the recent part of the baseline's",
            "against the default baseline window"
        );
        use clap::Parser as _;
        for bad in [
            &["--msvc", "Api"][..],
            &["--msvc", "api", "--current-window", "2m"],
        ] {
            assert!(
                Command::try_parse_from(std::iter::once("compare").chain(bad.iter().copied()))
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_msvc_heading_names_both_windows_and_that_one_contains_the_other() {
        let source = |seconds| MsvcSource {
            monitored_service: "shop/api".into(),
            baseline: WindowSource {
                window: Window::OneHour,
                seconds,
                proxies: 2,
                ready_proxies: 3,
            },
            current: WindowSource {
                window: Window::FiveMinutes,
                seconds: 300.0,
                proxies: 3,
                ready_proxies: 3,
            },
        };
        let s = summary(&[("/a", 500, 0.02, 0.09, 0.01)]);
        let report = Report {
            msvc: Some(source(3600.0)),
            ..run(&s, &s)
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[..2],
            [
                "baseline: MonitoredService shop/api, last 1h (2 of 3 ready proxies); current: \
                 last 5m (3 of 3 ready proxies)",
                "(the 1h baseline contains the last 5m: a regression there raises the baseline \
                 too, and shows smaller than it is)"
            ]
        );
        assert!(lines[2].starts_with("METHOD  ROUTE"), "{table}");
        let json = serde_json::to_value(&report).expect("JSON");
        assert_eq!(
            json["msvc"],
            json!({"monitoredService": "shop/api",
                   "baseline": {"window": "1h", "seconds": 3600.0, "proxies": 2, "readyProxies": 3},
                   "current": {"window": "5m", "seconds": 300.0, "proxies": 3, "readyProxies": 3}})
        );
        // Proxies younger than the current window: both windows hold the same requests.
        let young = Report {
            msvc: Some(source(42.0)),
            ..run(&s, &s)
        };
        assert_eq!(
            young.table().lines().nth(2),
            Some(
                "note: the proxies hold 42 s of traffic, no more than the 5m window: both \
                 windows hold the same requests"
            )
        );
        assert!(
            serde_json::to_value(run(&s, &s))
                .expect("JSON")
                .get("msvc")
                .is_none(),
            "files: no msvc in the JSON"
        );
    }

    #[test]
    fn thresholds_below_one_are_refused() {
        let t = Thresholds {
            p95_ratio: 0.9,
            ..Thresholds::default()
        };
        assert!(
            t.validate()
                .expect_err("below 1")
                .to_string()
                .starts_with("--p95-ratio")
        );
        assert!(Thresholds::default().validate().is_ok());
    }
}
