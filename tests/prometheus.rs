//! The generated rules and dashboard on a real Prometheus server (Debian's package) that
//! scrapes a real proxy under traffic: the recording rules give the values the traffic
//! implies, the 5xx alert goes pending then firing, and every dashboard query (the
//! pagination row's too, `/slow` being paginated) parses and returns data.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, Process, free_port, wait_for};
use routemeter::crd::{MonitoringSpec, RouteSpec};
use serde_json::Value;

struct Prom {
    base: String,
    http: reqwest::Client,
}

impl Prom {
    /// The samples of an instant query; `None` if the query failed to run.
    async fn query(&self, q: &str) -> Option<Vec<(Value, f64)>> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.base)).ok()?;
        url.query_pairs_mut().append_pair("query", q);
        let r: Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
        if r["status"] != "success" {
            panic!("query {q:?} failed: {r}");
        }
        Some(
            r["data"]["result"]
                .as_array()?
                .iter()
                .filter_map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse().ok()?)))
                .collect(),
        )
    }

    async fn value(&self, q: &str) -> Option<f64> {
        self.query(q)
            .await?
            .first()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
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

#[tokio::test]
async fn rules_and_dashboard_work_on_a_real_prometheus() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install prometheus (tests/tools.sh)"
        );
        eprintln!("skipping: no prometheus binary (run tests/tools.sh)");
        return;
    }
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
    let (listen, admin, prom_port) = (free_port(), free_port(), free_port());
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
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: ['{}']\nscrape_configs:\n  - job_name: routemeter\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n        labels: {{namespace: e2e, monitored_service: live}}\n",
            rules.display()
        ),
    )
    .expect("prometheus config");
    let _prometheus = Process(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );
    let prom = Prom {
        base: format!("http://127.0.0.1:{prom_port}"),
        http: reqwest::Client::new(),
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
    assert!(
        p95 > 0.025 && p95 <= 0.05,
        "p95 of a 30 ms route is in its bucket (0.025, 0.05]: {p95}"
    );
    assert!(
        prom.query(r#"routemeter:http_errors:ratio_rate5m{http_route="/slow"}"#)
            .await
            .expect("query")
            .iter()
            .all(|(_, v)| *v == 0.0),
        "no errors yet"
    );

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

    // Every dashboard query parses; the ones about traffic that happened return data.
    let no_data_expected = ["Websocket", "Upstream errors", "Error budget"];
    let pagination = routemeter::monitoring::dashboard::pagination_panels();
    for panel in routemeter::monitoring::dashboard::panels()
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
