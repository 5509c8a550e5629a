//! Real Prometheus servers scraping a real proxy under traffic, each test on Prometheus 2
//! (Debian's package) and on Prometheus 3 (built from its Go module by
//! tests/cluster/build-monitoring.sh):
//!
//! - the generated rules and dashboard: the recording rules give the values the traffic
//!   implies, the 5xx alert goes pending then firing, and every dashboard query (the
//!   pagination row's too, `/slow` being paginated) parses and returns data;
//! - the live summary: after known traffic with a known latency mix over several routes,
//!   `/api/summary?window=1m` and Prometheus' own queries over the same minute agree:
//!   p50 / p95 / p99 and 5xx ratios per route and overall up to float rounding, request
//!   rates within what the two windows' spans imply (docs/score.md, "Percentiles");
//! - latency thresholds of a whole number of seconds (1 s, 2 s) and a fractional one
//!   (0.3 s): Prometheus 3 stores `le="2"` as `le="2.0"`, and the SLO rules select the
//!   threshold's bucket on both; the latency alerts fire on both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
#[allow(dead_code)] // the harness of tests/proxy.rs: this file uses part of it
mod support;

use common::{BIN, Process, free_port, wait_for};
use routemeter::crd::{MonitoringSpec, RouteSpec};
use serde_json::Value;
use support::Proxy;

/// The histogram both sides read.
const HISTOGRAM: &str = "http_server_request_duration_seconds";

/// A Prometheus server scraping one proxy's admin listener every second.
struct Prom {
    base: String,
    http: reqwest::Client,
    _process: Process,
}

impl Prom {
    /// Starts Prometheus with its data in `dir`, scraping `127.0.0.1:{admin}` every second
    /// as job `routemeter` (labels `namespace: e2e, monitored_service: live`), with
    /// `rules` if any evaluated every second, and waits until it has scraped the proxy.
    async fn start(server: &Path, dir: &Path, admin: u16, rules: Option<&Path>) -> Prom {
        let port = free_port();
        let rule_files = rules.map_or_else(String::new, |r| {
            format!("rule_files: ['{}']\n", r.display())
        });
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n{rule_files}scrape_configs:\n  - job_name: routemeter\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n        labels: {{namespace: e2e, monitored_service: live}}\n",
            ),
        )
        .expect("prometheus config");
        let process = Process(
            Command::new(server)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("prometheus"),
        );
        let prom = Prom {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _process: process,
        };
        wait_for(
            "prometheus to scrape the proxy",
            Duration::from_secs(30),
            || async {
                prom.value(r#"up{job="routemeter"}"#)
                    .await
                    .filter(|v| *v == 1.0)
            },
        )
        .await;
        prom
    }

    /// The result of a query evaluated at `at` (milliseconds since the epoch; now when
    /// `None`); `None` if Prometheus did not answer. A query that fails to run fails the
    /// test.
    async fn result_at(&self, q: &str, at: Option<i64>) -> Option<Vec<Value>> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.base)).ok()?;
        url.query_pairs_mut().append_pair("query", q);
        if let Some(ms) = at {
            url.query_pairs_mut()
                .append_pair("time", &format!("{}.{:03}", ms / 1000, ms % 1000));
        }
        let r: Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
        if r["status"] != "success" {
            panic!("query {q:?} failed: {r}");
        }
        r["data"]["result"].as_array().cloned()
    }

    /// The samples of an instant query at `at` (now when `None`), with their labels.
    async fn query_at(&self, q: &str, at: Option<i64>) -> Option<Vec<(Value, f64)>> {
        Some(
            self.result_at(q, at)
                .await?
                .iter()
                .filter_map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse().ok()?)))
                .collect(),
        )
    }

    /// The samples of an instant query now.
    async fn query(&self, q: &str) -> Option<Vec<(Value, f64)>> {
        self.query_at(q, None).await
    }

    /// The first sample of an instant query now, if finite.
    async fn value(&self, q: &str) -> Option<f64> {
        self.query(q)
            .await?
            .first()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
    }

    /// The timestamps (ms) of the raw samples of each series of a range selector at `at`.
    async fn timestamps_at(&self, selector: &str, at: Option<i64>) -> Vec<(Value, Vec<i64>)> {
        self.result_at(selector, at)
            .await
            .unwrap_or_else(|| panic!("Prometheus did not answer {selector}"))
            .iter()
            .map(|s| {
                let times = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v[0].as_f64())
                    .map(|t| (t * 1000.0).round() as i64)
                    .collect();
                (s["metric"].clone(), times)
            })
            .collect()
    }

    async fn alert_state(&self, name: &str) -> Option<String> {
        let r: Value = self
            .http
            .get(format!("{}/api/v1/alerts", self.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        r["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }
}

/// The Prometheus server of major version `major`: 2 is Debian's package (`prometheus`
/// on PATH, tests/tools.sh), 3 the one tests/cluster/build-monitoring.sh builds from the
/// pinned Go module. Without it the test skips, saying so, except in CI, where it fails.
fn server(major: u32) -> Option<PathBuf> {
    let bin = match major {
        2 => Some(PathBuf::from("prometheus")),
        _ => Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/cluster/build-monitoring.sh"
            ))
            .arg("--if-built")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("PROMETHEUS_BIN=").map(str::to_string))
            })
            .map(|dir| Path::new(&dir).join("prometheus")),
    };
    let version = bin.as_ref().and_then(|b| {
        let out = Command::new(b).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        text.lines().next().map(str::to_string)
    });
    match version {
        Some(v) if v.contains(&format!("version {major}.")) => {
            eprintln!("on {v}");
            bin
        }
        other => {
            let why = format!(
                "no Prometheus {major} (found: {other:?}); tests/tools.sh installs 2, tests/cluster/build-monitoring.sh builds 3"
            );
            assert!(std::env::var_os("CI").is_none(), "CI must have it: {why}");
            eprintln!("SKIPPING: {why}");
            None
        }
    }
}

/// One test function per Prometheus major version, each running `$body(server path)`.
macro_rules! on_each_prometheus {
    ($body:ident: $($name:ident => $major:literal),+) => {$(
        #[tokio::test]
        async fn $name() {
            if let Some(server) = server($major) {
                $body(&server, $major).await;
            }
        }
    )+};
}

on_each_prometheus!(rules_and_dashboard:
    rules_and_dashboard_work_on_prometheus_2 => 2,
    rules_and_dashboard_work_on_prometheus_3 => 3);
on_each_prometheus!(latency_thresholds:
    latency_alerts_fire_at_whole_and_fractional_thresholds_on_prometheus_2 => 2,
    latency_alerts_fire_at_whole_and_fractional_thresholds_on_prometheus_3 => 3);
on_each_prometheus!(summary_agrees:
    the_summary_agrees_with_prometheus_2_over_the_same_minute => 2,
    the_summary_agrees_with_prometheus_3_over_the_same_minute => 3);

async fn rules_and_dashboard(server: &Path, _major: u32) {
    // An upstream: /slow takes 30 ms; `failing` turns every answer into a 500.
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                "slow"
            }),
        )
        .fallback(|| async { "ok" })
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let f = f.clone();
                async move {
                    if f.load(Ordering::Relaxed) {
                        return axum::response::IntoResponse::into_response(
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        );
                    }
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin) = (free_port(), free_port());
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\nupstream: {{endpoints: ['{upstream}']}}\nroutes: [{{path: /slow, pagination: {{}}}}, {{path: '/items/{{id}}'}}]\nmetrics: {{latencyThresholds: [0.5]}}\n"
        ),
    )
    .expect("proxy config");
    let _proxy = Process(
        Command::new(BIN)
            .args(["--log-format", "text", "proxy", "--config"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("proxy"),
    );

    // The rules the operator would write for MonitoredService e2e/live, with a short `for`
    // so the alert can fire within the test, and every group evaluated each second.
    let mut monitoring = MonitoringSpec::default();
    monitoring.alerts.for_ = "10s".into();
    let routes: Vec<RouteSpec> = vec![RouteSpec {
        path: "/slow".into(),
        methods: Vec::new(),
        name: None,
        slo: None,
        pagination: Some(Default::default()),
    }];
    let mut groups = routemeter::monitoring::rules::groups("e2e", "live", &monitoring, &routes);
    for g in groups.as_array_mut().expect("groups") {
        g["interval"] = "1s".into();
    }
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        serde_yaml::to_string(&serde_json::json!({ "groups": groups })).expect("yaml"),
    )
    .expect("rules");
    let prom = Prom::start(server, dir.path(), admin, Some(&rules)).await;

    // Steady traffic for ~12 s: 9 in 10 requests to /items/{id}, 1 in 10 to /slow (30 ms),
    // the first page or page 60 (offset 1180) of 20.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0u32;
    while started.elapsed() < Duration::from_secs(12) {
        for i in 0..10 {
            let path = if i == 0 {
                format!(
                    "/slow?page={}&limit=20",
                    if sent.is_multiple_of(20) { 1 } else { 60 }
                )
            } else {
                format!("/items/{i}")
            };
            http.get(format!("http://127.0.0.1:{listen}{path}"))
                .send()
                .await
                .expect("request");
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every request reached Prometheus, counted once.
    let total = f64::from(sent);
    wait_for("every request to be scraped", Duration::from_secs(20), || async {
        prom.value(r#"sum(http_server_request_duration_seconds_count{namespace="e2e",monitored_service="live"})"#)
            .await
            .filter(|v| *v == total)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // rate over 5m of traffic that lasted ~12 s: the window's average, so rate x 300 s is
    // the number of requests (within Prometheus' extrapolation at the series' start).
    let rate = prom
        .value(
            r#"routemeter_service:http_requests:rate5m{namespace="e2e",monitored_service="live"}"#,
        )
        .await
        .expect("the request-rate recording rule");
    assert!(
        (rate * 300.0 - total).abs() / total < 0.25,
        "recorded rate {rate:.2}/s over 5m, sent {total}"
    );
    let p95 = prom
        .value(r#"routemeter:http_request_duration_seconds:p95_rate5m{http_route="/slow"}"#)
        .await
        .expect("p95 of /slow");
    // The rule's p95 lies in the bucket where the proxy's own cumulative counts (as
    // scraped) reach 95 % of /slow's requests: with every request 30 ms or more, never
    // below 25 ms, and above 50 ms only when the machine made more than 5 % of them slow.
    let (low, high) = p95_bucket(
        &prom
            .query(&format!(
                r#"sum by (le) ({HISTOGRAM}_bucket{{http_route="/slow"}})"#
            ))
            .await
            .expect("the buckets of /slow"),
    );
    assert!(
        low >= 0.025,
        "p95 of a 30 ms route above 25 ms: ({low}, {high}]"
    );
    assert!(
        p95 > low && p95 <= high,
        "p95 of /slow {p95} in the bucket ({low}, {high}] its scraped counts put it in"
    );
    // No errors yet: the ratio is 0, not absent, thanks to the proxy's zero 500 series
    // of each declared route (pyrra-dev/pyrra#1259).
    for route in ["/slow", "/items/{id}"] {
        for record in [
            "routemeter:http_errors:ratio_rate5m",
            "routemeter_slo:errors:ratio_rate1h",
        ] {
            let q = format!(r#"{record}{{http_route="{route}"}}"#);
            let v = prom.value(&q).await;
            assert_eq!(v, Some(0.0), "{q} before the first error");
        }
    }

    // The upstream starts failing: the 5xx alert goes pending, then firing.
    failing.store(true, Ordering::Relaxed);
    let traffic = {
        let http = http.clone();
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                let _ = http
                    .get(format!("http://127.0.0.1:{listen}/items/1"))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let ratio = wait_for(
        "the error ratio to rise",
        Duration::from_secs(20),
        || async {
            prom.value(r#"routemeter:http_errors:ratio_rate5m{http_route="/items/{id}"}"#)
                .await
                .filter(|v| *v > 0.05)
        },
    )
    .await;
    assert!(ratio <= 1.0);
    wait_for(
        "RoutemeterHighErrorRate pending",
        Duration::from_secs(20),
        || async {
            prom.alert_state("RoutemeterHighErrorRate")
                .await
                .filter(|s| s == "pending")
        },
    )
    .await;
    wait_for(
        "RoutemeterHighErrorRate firing",
        Duration::from_secs(30),
        || async {
            prom.alert_state("RoutemeterHighErrorRate")
                .await
                .filter(|s| s == "firing")
        },
    )
    .await;
    traffic.abort();

    // Every dashboard query parses; the ones about traffic that happened return data, the
    // error-budget and burn-rate panels (from the SLO rules) included.
    let no_data_expected = ["Websocket", "Upstream errors"];
    let pagination = routemeter::monitoring::dashboard::pagination_panels();
    let budgets = [(Some("service".to_string()), "0.001".to_string())];
    for panel in routemeter::monitoring::dashboard::panels(&budgets)
        .into_iter()
        .chain(pagination)
    {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let q = expr
                .replace("$namespace", "e2e")
                .replace("$service", "live")
                .replace("$route", ".*");
            let result = prom
                .query(&q)
                .await
                .unwrap_or_else(|| panic!("{title}: {q} did not run"));
            if !no_data_expected.iter().any(|t| title.starts_with(t)) {
                assert!(!result.is_empty(), "{title}: {q} returned no data");
            }
        }
    }
}

/// The alerts of name `name` in state `state`, by their `http_route` label.
async fn alerting_routes(prom: &Prom, name: &str, state: &str) -> BTreeSet<String> {
    let Ok(r) = prom
        .http
        .get(format!("{}/api/v1/alerts", prom.base))
        .send()
        .await
    else {
        return BTreeSet::new();
    };
    let r: Value = r.json().await.unwrap_or_default();
    r["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == name && a["state"] == state)
        .filter_map(|a| a["labels"]["http_route"].as_str().map(str::to_string))
        .collect()
}

/// Latency objectives at 1 s, 2 s and 0.3 s, each route answering slower than its own,
/// and one answering in 1.2 s against a 2 s objective: the SLO rules select each
/// threshold's bucket whatever the spelling Prometheus stores (`le="2"` on 2, `le="2.0"`
/// on 3), so the slow share is exactly 1 on the slow routes and 0 on the other, and the
/// latency alerts fire on the slow ones only.
async fn latency_thresholds(server: &Path, major: u32) {
    // An upstream that answers after `?ms=` milliseconds.
    let app = axum::Router::new().fallback(
        |axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
            let ms = q
                .as_deref()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            "ok"
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // (route, its latency threshold, how long its answers take)
    let plan = [
        ("/one", 1.0, 1200),
        ("/two", 2.0, 2200),
        ("/frac", 0.3, 400),
        ("/under-two", 2.0, 1200),
    ];
    let routes: Vec<RouteSpec> = plan
        .iter()
        .map(|(path, threshold, _)| RouteSpec {
            path: (*path).into(),
            methods: Vec::new(),
            name: None,
            slo: Some(routemeter::crd::SloSpec {
                latency_threshold_seconds: *threshold,
                ..Default::default()
            }),
            pagination: None,
        })
        .collect();
    let mut monitoring = MonitoringSpec::default();
    monitoring.alerts.for_ = "5s".into();
    // 0.1/s: 30 requests over 5m, and 30 over the fast burn's 1h, which ~20 s of traffic
    // at these latencies holds.
    monitoring.alerts.min_requests_per_second = 0.1;
    // The histogram boundaries the operator gives the proxy: its thresholds added.
    let bounds = routemeter::monitoring::latency_thresholds(&monitoring, &routes);
    let dir = tempfile::tempdir().expect("tempdir");
    let (listen, admin) = (free_port(), free_port());
    let config = dir.path().join("proxy.yaml");
    let paths: Vec<String> = plan
        .iter()
        .map(|(p, ..)| format!("{{path: {p}}}"))
        .collect();
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\nupstream: {{endpoints: ['{upstream}']}}\nroutes: [{}]\nmetrics: {{latencyThresholds: {bounds:?}}}\n",
            paths.join(", ")
        ),
    )
    .expect("proxy config");
    let _proxy = Process(
        Command::new(BIN)
            .args(["--log-format", "text", "proxy", "--config"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("proxy"),
    );
    let mut groups = routemeter::monitoring::rules::groups("e2e", "live", &monitoring, &routes);
    for g in groups.as_array_mut().expect("groups") {
        g["interval"] = "1s".into();
    }
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        serde_yaml::to_string(&serde_json::json!({ "groups": groups })).expect("yaml"),
    )
    .expect("rules");
    let prom = Prom::start(server, dir.path(), admin, Some(&rules)).await;

    // 8 clients per route for 20 s.
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(20);
    let mut clients = Vec::new();
    for (path, _, ms) in plan {
        for _ in 0..8 {
            let http = http.clone();
            clients.push(tokio::spawn(async move {
                let mut sent = 0u32;
                while Instant::now() < until {
                    let r = http
                        .get(format!("http://127.0.0.1:{listen}{path}?ms={ms}"))
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(r.status(), 200);
                    sent += 1;
                }
                sent
            }));
        }
    }
    let mut total = 0u32;
    for c in clients {
        total += c.await.expect("a client");
    }
    wait_for(
        "every request to be scraped",
        Duration::from_secs(20),
        || async {
            prom.value(r#"sum(http_server_request_duration_seconds_count{http_route!=""})"#)
                .await
                .filter(|v| *v == f64::from(total))
        },
    )
    .await;

    // What each version stores: the proxy writes le="2"; Prometheus 3 normalises it.
    let stored = |le: &'static str| {
        let prom = &prom;
        async move {
            prom.value(&format!(
                r#"count(http_server_request_duration_seconds_bucket{{http_route="/two",le="{le}"}})"#
            ))
            .await
            .unwrap_or(0.0)
        }
    };
    let (plain, float) = (stored("2").await, stored("2.0").await);
    if major >= 3 {
        assert!(
            plain == 0.0 && float > 0.0,
            "Prometheus 3 stores le=\"2.0\": {plain} {float}"
        );
    } else {
        assert!(
            plain > 0.0 && float == 0.0,
            "Prometheus 2 stores le=\"2\": {plain} {float}"
        );
    }

    let slow_share = |route: &'static str| {
        let prom = &prom;
        async move {
            prom.value(&format!(
                r#"routemeter_slo:slow_requests:ratio_rate5m{{http_route="{route}"}}"#
            ))
            .await
        }
    };
    for (route, threshold, ms) in plan {
        let expected = if f64::from(ms) / 1000.0 > threshold {
            1.0
        } else {
            0.0
        };
        let share = wait_for(
            &format!("the slow share of {route} (threshold {threshold} s)"),
            Duration::from_secs(15),
            || async { slow_share(route).await },
        )
        .await;
        assert!(
            (share - expected).abs() < 1e-9,
            "{route}: {ms} ms answers against a {threshold} s threshold: slow share {share}, expected {expected}"
        );
    }
    let burning: BTreeSet<String> = ["/one", "/two", "/frac"].map(String::from).into();
    let fired = wait_for(
        "RoutemeterLatencyBudgetBurn to fire on the slow routes",
        Duration::from_secs(20),
        || async {
            Some(alerting_routes(&prom, "RoutemeterLatencyBudgetBurn", "firing").await)
                .filter(|f| burning.is_subset(f))
        },
    )
    .await;
    assert_eq!(
        fired, burning,
        "no latency burn on /under-two (1.2 s against 2 s)"
    );
    // p95 over alerts.latencyP95Seconds (1 s, a whole number) for 5 s.
    let slow: BTreeSet<String> = ["/one", "/two", "/under-two"].map(String::from).into();
    let fired = wait_for(
        "RoutemeterHighLatency to fire on the routes with p95 over 1 s",
        Duration::from_secs(30),
        || async {
            Some(alerting_routes(&prom, "RoutemeterHighLatency", "firing").await)
                .filter(|f| slow.is_subset(f))
        },
    )
    .await;
    assert_eq!(fired, slow, "/frac (0.4 s) is under the 1 s p95 threshold");
}

/// One request of the known mix: what the test sends, and what the upstream does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    method: &'static str,
    path: String,
    /// The route template the proxy labels it with.
    route: &'static str,
    /// How long the upstream waits before answering.
    ms: u64,
    /// The status the upstream answers.
    status: u16,
}

/// The `i`-th request of the mix. Per 20: 8 `GET /fast` (0 to 6 ms), 6 `GET /items/{id}`
/// (3 to 120 ms; every other lap one of them answers 503, every third another 404), 3
/// `POST /items/{id}` (40 ms, one in 12 of them 200 ms), 2 `GET /slow` (150 ms to 0.7 s,
/// across the 0.3 s threshold) and 1 `GET /fail` (500 after 10 ms): ranks fall inside
/// buckets of every size, some buckets stay empty, and the boundary of a latency
/// threshold is crossed.
fn planned(i: u64) -> Planned {
    let (slot, lap) = (i % 20, i / 20);
    let get = |path: String, route, ms, status| Planned {
        method: "GET",
        path,
        route,
        ms,
        status,
    };
    match slot {
        0..=7 => get(
            "/fast".into(),
            "/fast",
            [0, 0, 1, 2, 6, 0, 0, 3][slot as usize],
            200,
        ),
        8..=13 => {
            let status = match slot {
                9 if lap % 2 == 0 => 503,
                12 if lap % 3 == 0 => 404,
                _ => 200,
            };
            let ms = [3, 8, 15, 30, 60, 120][(slot - 8) as usize];
            get(format!("/items/{}", lap % 50), "/items/{id}", ms, status)
        }
        14..=16 => Planned {
            method: "POST",
            path: format!("/items/{}", lap % 50),
            route: "/items/{id}",
            ms: if slot == 16 && lap % 4 == 0 { 200 } else { 40 },
            status: 201,
        },
        17 | 18 => get(
            "/slow".into(),
            "/slow",
            [150, 280, 320, 450, 700][((lap * 2 + slot) % 5) as usize],
            200,
        ),
        _ => get("/fail".into(), "/fail", 10, 500),
    }
}

/// What the clients sent, per (route, method): requests, and of them answered 5xx.
type Sent = BTreeMap<(String, String), (u64, u64)>;

/// An upstream that waits `?ms=` milliseconds, then answers `?status=` (200 without one),
/// on any path and method.
async fn scripted_upstream() -> SocketAddr {
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        let (mut ms, mut status) = (0, 200);
        for pair in uri.query().unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("ms", v)) => ms = v.parse().unwrap_or(0),
                Some(("status", v)) => status = v.parse().unwrap_or(200),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the upstream");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Sends `p` to the proxy at `base` (its latency replaced by `ms` if given) and checks
/// the status: an unexpected one would be a new series, which Prometheus' `rate` sees only
/// from its first scrape on.
async fn send(http: &reqwest::Client, base: &str, p: &Planned, ms: Option<u64>) {
    let url = format!(
        "{base}{}?ms={}&status={}",
        p.path,
        ms.unwrap_or(p.ms),
        p.status
    );
    let request = match p.method {
        "POST" => http.post(url),
        _ => http.get(url),
    };
    let (status, _) = support::send(request).await;
    assert_eq!(status, p.status, "{} {}", p.method, p.path);
}

/// Milliseconds since the epoch, as Prometheus' timestamps.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn sleep_until_ms(at: i64) {
    let wait = at - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
    }
}

/// A (route, method) of the summary from a Prometheus sample's labels; `("*", "*")` for
/// one aggregated over both, as the summary's `overall`.
/// The buckets `(low, high]` holding the 95th percentile of a histogram's cumulative
/// counts (one sample per `le`), give or take 1 % of the requests: a rate per bucket
/// extrapolates each series on its own, which may move a rank this close to a boundary.
fn p95_bucket(buckets: &[(Value, f64)]) -> (f64, f64) {
    let mut counts: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|(m, count)| Some((m["le"].as_str()?.parse::<f64>().ok()?, *count)))
        .collect();
    counts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = counts.last().map_or(0.0, |(_, c)| *c);
    assert!(total > 0.0, "no requests in the buckets {buckets:?}");
    let first = |fraction: f64| {
        counts
            .iter()
            .position(|(_, c)| *c >= fraction * total)
            .expect("the +Inf bucket holds every request")
    };
    let (from, to) = (first(0.94), first(0.96));
    let low = if from == 0 { 0.0 } else { counts[from - 1].0 };
    (low, counts[to].0)
}

fn key(metric: &Value) -> (String, String) {
    let label = |name: &str| metric[name].as_str().unwrap_or("*").to_string();
    (label("http_route"), label("http_request_method"))
}

/// Equal up to float rounding (Prometheus adds rates, the summary counts).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-3)
}

/// Whether `theirs` is, as much as `ours`, the `q` quantile of requests counted in
/// `buckets` (one per boundary of `bounds`, then `+Inf`): equal up to float rounding, or
/// both in the gap that follows a bucket whose cumulative count is exactly the rank
/// q × count, with empty buckets after it. Every value across that gap is the quantile,
/// and a rank computed from rates (Prometheus) may round to either side of the count.
fn same_quantile(q: f64, ours: f64, theirs: f64, buckets: &[u64], bounds: &[f64]) -> bool {
    if close(ours, theirs) {
        return true;
    }
    let total: u64 = buckets.iter().sum();
    let rank = q * total as f64;
    let mut cumulative = 0;
    for (i, &count) in buckets.iter().enumerate() {
        cumulative += count;
        if count == 0 || !close(cumulative as f64, rank) {
            continue;
        }
        let Some(&from) = bounds.get(i) else {
            return false;
        };
        let next = buckets[i + 1..].iter().position(|c| *c > 0);
        let to = next.map_or(from, |j| bounds[i + j]);
        let within = |v: f64| v >= from - 1e-12 && v <= to + 1e-12;
        return within(ours) && within(theirs);
    }
    false
}

async fn summary_agrees(server: &Path, _major: u32) {
    let upstream = scripted_upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{upstream}']}}\n\
         routes: [{{path: /fast}}, {{path: '/items/{{id}}'}}, {{path: /slow}}, {{path: /fail}}]\n\
         metrics: {{latencyThresholds: [0.3]}}\n"
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = Prom::start(server, dir.path(), proxy.admin, None).await;
    let http = support::client();
    let selector = r#"{job="routemeter"}"#;

    // Every series the traffic will touch (route, method, status) is created first, at
    // 0 ms, and scraped: Prometheus' `rate` counts a series' increase from its first
    // sample in the range on, so a series born inside the minute would lose the requests
    // before its first scrape. These requests are more than a minute old when both sides
    // are read, so neither window holds them.
    let mut kinds: BTreeMap<(&str, &str, u16), Planned> = BTreeMap::new();
    for i in 0..20 * 12 {
        let p = planned(i);
        kinds.entry((p.method, p.route, p.status)).or_insert(p);
    }
    let base = proxy.url("");
    for p in kinds.values() {
        send(&http, &base, p, Some(0)).await;
    }
    let warm_up = kinds.len() as f64;
    wait_for(
        "the warm-up to be scraped",
        Duration::from_secs(20),
        || async {
            prom.value(&format!("sum({HISTOGRAM}_count{selector})"))
                .await
                .filter(|v| *v == warm_up)
        },
    )
    .await;
    // t0: the newest scrape, which holds the warm-up and nothing more. Prometheus' window
    // will be [t0 - 1 ms, t0 + 60 s - 1 ms]: Prometheus 2 includes a range's left edge and
    // Prometheus 3 does not, so a window starting 1 ms before t0 holds the scrape at t0 on
    // both. Its first sample is then 1 ms from its left edge for every series, so `rate`
    // extrapolates that 1 ms alike for all, and every series, bucket and status alike, is
    // scaled by the same factor.
    let scrapes = prom
        .timestamps_at(&format!("{HISTOGRAM}_bucket{selector}[5s]"), None)
        .await;
    let t0 = scrapes
        .iter()
        .filter_map(|(_, times)| times.last().copied())
        .max()
        .expect("scraped series");
    assert!(
        scrapes.iter().all(|(_, times)| times.last() == Some(&t0)),
        "every series is in the scrape at {t0}: {scrapes:?}"
    );
    let at = t0 + 60_000;

    // The traffic: 6 clients for 20 s, starting 12 s after t0, so that it is all inside
    // the summary's minute (the slot in progress and the 5 before: its first slot starts
    // at most 60 s and at least 50 s before it is read) as well as Prometheus' [t0, at].
    sleep_until_ms(t0 + 12_000).await;
    let next = Arc::new(AtomicU64::new(0));
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(20);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (http, next, sent) = (http.clone(), next.clone(), sent.clone());
            let base = base.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    let p = planned(next.fetch_add(1, Ordering::Relaxed));
                    send(&http, &base, &p, None).await;
                    let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
                    let e = sent
                        .entry((p.route.to_string(), p.method.to_string()))
                        .or_default();
                    e.0 += 1;
                    e.1 += u64::from(p.status >= 500);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("a client");
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()));
    let total: u64 = sent.values().map(|(n, _)| n).sum();
    wait_for(
        "the traffic to be scraped",
        Duration::from_secs(20),
        || async {
            prom.value(&format!("sum({HISTOGRAM}_count{selector})"))
                .await
                .filter(|v| *v == warm_up + total as f64)
        },
    )
    .await;
    assert!(
        now_ms() < at,
        "the traffic and its scrape took past t0 + 60 s; the comparison needs them inside"
    );

    // Both sides at `at`: the summary read then, Prometheus evaluated then.
    sleep_until_ms(at).await;
    let (status, body) = proxy
        .admin("/api/summary?window=1m")
        .await
        .expect("/api/summary");
    let late = now_ms() - at;
    assert_eq!(status, 200, "{body}");
    assert!(
        late < 2_000,
        "the summary was read {late} ms after t0 + 60 s"
    );
    let summary: routemeter::summary::Summary = serde_json::from_str(&body).expect("a summary");
    sleep_until_ms(at + 1_500).await;

    let at = Some(at - 1);
    let mut prometheus: BTreeMap<(String, String), BTreeMap<&str, f64>> = BTreeMap::new();
    for by in ["http_route, http_request_method", ""] {
        let buckets = format!(
            "sum by (le{}) (rate({HISTOGRAM}_bucket{selector}[1m]))",
            if by.is_empty() {
                String::new()
            } else {
                format!(", {by}")
            }
        );
        let count = |matcher: &str| {
            format!("sum by ({by}) (rate({HISTOGRAM}_count{{job=\"routemeter\"{matcher}}}[1m]))")
        };
        let queries = [
            ("p50", format!("histogram_quantile(0.5, {buckets})")),
            ("p95", format!("histogram_quantile(0.95, {buckets})")),
            ("p99", format!("histogram_quantile(0.99, {buckets})")),
            ("rate", count("")),
            (
                "errorRatio",
                format!(
                    "({} or {} * 0) / {}",
                    count(r#",http_response_status_code=~"5..""#),
                    count(""),
                    count("")
                ),
            ),
        ];
        for (figure, q) in queries {
            for (metric, v) in prom.query_at(&q, at).await.expect("Prometheus answers") {
                prometheus
                    .entry(key(&metric))
                    .or_default()
                    .insert(figure, v);
            }
        }
    }

    // Prometheus' rate is the increase over its samples' span, extrapolated to the
    // range's edges (1 ms on the left, up to 1.1 scrape intervals on the right): × 60 s
    // it is the requests times a factor between 1 and 1 + (1.1 × the scrape interval +
    // 1 ms) over the sampled span.
    let scrapes = prom
        .timestamps_at(&format!("up{selector}[1m]"), at)
        .await
        .into_iter()
        .next()
        .map(|(_, times)| times)
        .unwrap_or_default();
    assert_eq!(
        scrapes.first().copied(),
        Some(t0),
        "the range's left edge holds the scrape at t0"
    );
    let sampled = (scrapes.last().copied().unwrap_or(t0) - t0) as f64 / 1000.0;
    let interval = sampled / (scrapes.len().max(2) - 1) as f64;
    let extrapolation = (1.1 * interval + 0.001) / sampled;

    let ours: BTreeMap<(String, String), &routemeter::summary::Entry> = summary
        .routes
        .iter()
        .chain([&summary.overall])
        .map(|e| ((e.route.clone(), e.method.clone()), e))
        .collect();
    assert_eq!(
        ours.keys().collect::<BTreeSet<_>>(),
        prometheus.keys().collect::<BTreeSet<_>>(),
        "the same routes and methods on both sides"
    );
    eprintln!(
        "summary over {:.1} s, Prometheus over {sampled:.1} s of samples (every {interval:.2} s)",
        summary.seconds
    );
    for (k, e) in &ours {
        let theirs = &prometheus[k];
        let what = format!("{} {}", k.1, k.0);
        let figure = |name: &str| {
            theirs
                .get(name)
                .copied()
                .unwrap_or_else(|| panic!("{what}: no {name} from Prometheus"))
        };
        let (expected, errors) = if k.0 == "*" {
            sent.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        } else {
            sent.get(k).copied().unwrap_or_default()
        };
        assert_eq!(
            e.requests, expected,
            "{what}: the summary counts what was sent"
        );
        assert!(
            close(
                e.error_ratio.expect("requests"),
                errors as f64 / expected as f64
            ),
            "{what}: the summary's 5xx ratio"
        );
        for (name, q, mine) in [
            ("p50", 0.5, e.p50),
            ("p95", 0.95, e.p95),
            ("p99", 0.99, e.p99),
        ] {
            let (mine, prom) = (mine.expect("requests"), figure(name));
            eprintln!("{what:>20} {name}: summary {mine:.6} s, Prometheus {prom:.6} s");
            assert!(
                same_quantile(q, mine, prom, &e.buckets, &summary.bounds),
                "{what}: {name} {mine} in the summary, {prom} from histogram_quantile; buckets {:?}",
                e.buckets
            );
        }
        let (mine, prom) = (e.error_ratio.expect("requests"), figure("errorRatio"));
        assert!(close(mine, prom), "{what}: 5xx ratio {mine} against {prom}");
        // The rates divide the same requests by their windows' spans: the summary by the
        // seconds its slots cover (50 to 60 s, in its JSON), Prometheus by 60 s after
        // extrapolating. Put on the same span they agree within the extrapolation.
        let (mine, prom) = (e.rps, figure("rate"));
        eprintln!(
            "{what:>20} rate: summary {mine:.3}/s over {:.1} s, Prometheus {prom:.3}/s over 60 s",
            summary.seconds
        );
        assert!(
            close(mine * summary.seconds, e.requests as f64),
            "{what}: rps × seconds is the requests"
        );
        let factor = prom * 60.0 / (mine * summary.seconds);
        assert!(
            factor >= 1.0 - 1e-9 && factor <= 1.0 + extrapolation,
            "{what}: {mine}/s over {} s against {prom}/s over 60 s: {factor}, beyond 1 + {extrapolation}",
            summary.seconds
        );
    }
}
