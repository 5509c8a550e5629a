//! The views of the live summary, against the real binary and known traffic: the admin
//! listener's page in a real headless Chromium (the figures it renders equal
//! `/api/summary`, a screenshot under `target/page/`, not one console message), and
//! `routemeter top`.
//!
//! The browser is Debian's `chromium-headless-shell` or `chromium` (`tests/tools.sh`
//! installs the first). Without either the browser tests are skipped, loudly, on a
//! developer's machine, and fail in CI (`CI` set). The browser is kept off the network:
//! no background services, and every host name but 127.0.0.1 resolves to nothing.

mod common;
#[allow(dead_code)] // the harness of tests/proxy.rs: this file uses part of it
mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Proxy, client, send, upstream};

/// Virtual time the page gets before the DOM is dumped: its first read of the summary
/// and two refreshes (fetches pause virtual time until they complete).
const VIRTUAL_TIME_MS: u32 = 5_000;

/// Real time a browser run may take, on a loaded CI machine.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// The page as the binary serves it.
const PAGE: &str = include_str!("../src/proxy/page.html");

/// A proxy that served 50 requests to `GET /fast` and 10 answered 500 on
/// `GET /status/{code}`, all recorded in its summary.
async fn proxy_with_known_traffic() -> Proxy {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\n\
         routes: [{{path: /fast}}, {{path: '/status/{{code}}'}}]\n"
    ))
    .await;
    let http = client();
    for _ in 0..50 {
        assert_eq!(send(http.get(proxy.url("/fast"))).await.0, 200);
    }
    for _ in 0..10 {
        assert_eq!(send(http.get(proxy.url("/status/500"))).await.0, 500);
    }
    proxy.summary_after("1m", 60).await;
    proxy
}

/// The headless browser on `PATH`; `None` (skip) when there is none, except in CI.
fn browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["chromium-headless-shell", "chromium"]
        .iter()
        .find_map(|name| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        let message = "no chromium-headless-shell or chromium on PATH (tests/tools.sh installs \
                       chromium-headless-shell)";
        if std::env::var_os("CI").is_some() {
            panic!("{message}: CI must run tests/tools.sh before the tests");
        }
        eprintln!("\n*** SKIPPING the page's browser test: {message} ***\n");
    }
    found
}

/// What one browser run printed.
struct Run {
    stdout: String,
    stderr: String,
}

/// Runs the browser on `url` with `action` (`--dump-dom`, `--screenshot=…`), in a fresh
/// profile, until it exits; fails the test if it fails or outlives [`BROWSER_TIMEOUT`].
async fn run_browser(browser: &Path, action: &[&str], url: &str) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut command = Command::new(browser);
    if browser.ends_with("chromium") {
        command.arg("--headless");
    }
    // Chromium refuses to run as root with its sandbox; tests run as root in containers.
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        command.arg("--no-sandbox");
    }
    command
        .args([
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-proxy-server",
            // Off the network whatever the page asked for: only 127.0.0.1 is reachable.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--virtual-time-budget={VIRTUAL_TIME_MS}"),
            &format!("--user-data-dir={}", dir.path().join("profile").display()),
        ])
        .args(action)
        .arg(url)
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    let mut child = common::Process(command.spawn().expect("start the browser"));
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("poll the browser") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the browser did not exit within {BROWSER_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let run = Run {
        stdout: read(&out),
        stderr: read(&err),
    };
    assert!(
        status.success(),
        "the browser failed: {status}\n{}",
        run.stderr
    );
    run
}

/// The console messages of a run. This chromium logs each as an INFO line
/// `[…:INFO:CONSOLE:<line>] "<text>", source: <url> (<line>)` whatever its level (older
/// ones print `CONSOLE(<line>)`), so `console.error` cannot be told from `console.log`:
/// the page logs nothing, and any console line (an error, an uncaught exception, a
/// Content-Security-Policy violation) is a failure.
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

fn unescape(html: &str) -> String {
    html.replace("&nbsp;", "\u{a0}")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The text of an HTML fragment: its tags dropped, its entities read.
fn text_of(fragment: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in fragment.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    unescape(text.trim())
}

/// The value of attribute `name` in the tag that `element` starts with.
fn attr(element: &str, name: &str) -> Option<String> {
    let tag = &element[..element.find('>')?];
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + len]))
}

/// The part of `dom` from the element with `id` to the first `</end` after it.
fn element<'a>(dom: &'a str, id: &str, end: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let start = dom[..at].rfind('<').expect("an element");
    let len = dom[start..]
        .find(&format!("</{end}"))
        .unwrap_or_else(|| panic!("#{id} does not end"));
    &dom[start..start + len]
}

/// The text of the element with `id` (which holds no element of the same kind).
fn text_by_id(dom: &str, id: &str, tag: &str) -> String {
    let e = element(dom, id, tag);
    text_of(&e[e.find('>').expect("a tag") + 1..])
}

/// One row of the routes table: per `data-field`, the text shown and the `data-value`.
type Row = BTreeMap<String, (String, String)>;

/// The routes table's rows by (method, route); the overall row is `("*", "*")`.
fn table_rows(dom: &str) -> BTreeMap<(String, String), Row> {
    let table = element(dom, "routes", "table");
    let mut rows = BTreeMap::new();
    for tr in table.split("<tr").skip(1) {
        let (Some(route), Some(method)) = (attr(tr, "data-route"), attr(tr, "data-method")) else {
            continue;
        };
        let mut row = Row::new();
        for td in tr.split("<td").skip(1) {
            let Some(field) = attr(td, "data-field") else {
                continue;
            };
            let content = &td[td.find('>').expect("a tag") + 1..];
            let content = &content[..content.find("</td>").unwrap_or(content.len())];
            row.insert(
                field,
                (text_of(content), attr(td, "data-value").unwrap_or_default()),
            );
        }
        rows.insert((method, route), row);
    }
    rows
}

/// The items of a list: `data-route`, `data-method` and text of each.
fn list_items(dom: &str, id: &str, tag: &str) -> Vec<(Option<String>, Option<String>, String)> {
    element(dom, id, tag)
        .split("<li")
        .skip(1)
        .map(|li| {
            let content = &li[li.find('>').expect("a tag") + 1..];
            (
                attr(li, "data-route"),
                attr(li, "data-method"),
                text_of(&content[..content.find("</li>").unwrap_or(content.len())]),
            )
        })
        .collect()
}

/// A ratio as the page shows it.
fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p > 0.0 && p < 1.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

/// Checks one row of the page against an entry of the summary.
fn assert_row_shows(row: &Row, entry: &serde_json::Value) {
    let what = format!("{} {}", entry["method"], entry["route"]);
    let shown = |field: &str| {
        &row.get(field)
            .unwrap_or_else(|| panic!("{what}: no {field}"))
            .0
    };
    let value = |field: &str| -> f64 {
        let v = &row[field].1;
        v.parse()
            .unwrap_or_else(|_| panic!("{what}: {field} data-value {v:?}"))
    };
    assert_eq!(*shown("requests"), entry["requests"].to_string(), "{what}");
    let errors = entry["errorRatio"].as_f64().expect("errorRatio");
    assert_eq!(value("errorRatio"), errors, "{what}");
    assert_eq!(*shown("errorRatio"), percent(errors), "{what}");
    assert_eq!(*shown("score"), entry["score"].to_string(), "{what}");
    assert_eq!(
        Some(shown("status").as_str()),
        entry["status"].as_str(),
        "{what}"
    );
    // The same figure, to the last few bits (the page's number went through JavaScript).
    for q in ["p50", "p95", "p99"] {
        let want = entry[q].as_f64().expect(q);
        assert!(
            (value(q) - want).abs() <= 1e-9 * want.abs().max(1e-3),
            "{what} {q}: {} vs {want}",
            value(q)
        );
    }
    // The rate divides by the time the window covers, which grew since the page read it.
    let rps = entry["rps"].as_f64().expect("rps");
    assert!(
        value("rps") >= rps && rps > 0.0,
        "{what}: {} vs {rps}",
        value("rps")
    );
}

#[tokio::test]
async fn the_page_shows_the_summary_in_a_real_browser() {
    let Some(browser) = browser() else { return };
    let proxy = proxy_with_known_traffic().await;
    let page = format!("http://127.0.0.1:{}/", proxy.admin);

    let run = run_browser(&browser, &["--dump-dom"], &page).await;
    let (status, body) = proxy
        .admin("/api/summary?window=1m")
        .await
        .expect("summary");
    assert_eq!(status, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        console_lines(&run.stderr),
        Vec::<&str>::new(),
        "{}",
        run.stderr
    );
    let dom = &run.stdout;

    assert_eq!(text_by_id(dom, "error", "p"), "", "{dom}");
    assert!(
        text_by_id(dom, "updated", "span").starts_with("1m window, "),
        "{dom}"
    );
    let rows = table_rows(dom);
    let routes = summary["routes"].as_array().expect("routes");
    assert_eq!(
        rows.len(),
        routes.len() + 1,
        "each route and overall: {rows:#?}"
    );
    for entry in routes {
        let key = (
            entry["method"].as_str().expect("method").to_string(),
            entry["route"].as_str().expect("route").to_string(),
        );
        let row = rows
            .get(&key)
            .unwrap_or_else(|| panic!("no row {key:?}: {rows:#?}"));
        assert_row_shows(row, entry);
    }
    let overall = &summary["overall"];
    assert_row_shows(&rows[&("*".into(), "*".into())], overall);
    assert_eq!(
        text_by_id(dom, "overall-score", "div"),
        overall["score"].to_string()
    );
    assert_eq!(
        Some(text_by_id(dom, "overall-status", "div").as_str()),
        overall["status"].as_str()
    );
    assert_eq!(text_by_id(dom, "overall-requests", "dd"), "60");
    assert_eq!(text_by_id(dom, "overall-errors", "dd"), "16.7 %");

    // The known traffic, as the page shows it.
    let fast = &rows[&("GET".into(), "/fast".into())];
    assert_eq!(
        (fast["requests"].0.as_str(), fast["status"].0.as_str()),
        ("50", "excellent")
    );
    let failing = &rows[&("GET".into(), "/status/{code}".into())];
    assert_eq!(
        (
            failing["requests"].0.as_str(),
            failing["errorRatio"].0.as_str()
        ),
        ("10", "100.0 %")
    );
    assert_eq!(failing["status"].0, "poor");

    let shown: Vec<String> = list_items(dom, "recommendations", "ul")
        .into_iter()
        .map(|(_, _, text)| text)
        .collect();
    let expected: Vec<&str> = summary["recommendations"]
        .as_array()
        .expect("recommendations")
        .iter()
        .filter_map(|r| r["message"].as_str())
        .collect();
    assert!(!expected.is_empty(), "{summary:#}");
    assert_eq!(shown, expected);
    let top_errors = list_items(dom, "top-errors", "ol");
    assert_eq!(
        (top_errors[0].0.as_deref(), top_errors[0].1.as_deref()),
        (Some("/status/{code}"), Some("GET"))
    );
    // Every chart drew something for the two routes.
    for chart in ["chart-rate", "chart-errors", "chart-p95", "chart-latency"] {
        let svg = element(dom, chart, "svg");
        assert!(
            svg.contains("<circle") || svg.contains("<polyline") || svg.contains("<rect"),
            "#{chart} is empty: {svg}"
        );
    }

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/page/summary.png");
    std::fs::create_dir_all(shot.parent().expect("a directory")).expect("target/page");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    let run = run_browser(&browser, &[&arg, "--window-size=1280,1000"], &page).await;
    assert_eq!(
        console_lines(&run.stderr),
        Vec::<&str>::new(),
        "{}",
        run.stderr
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 20_000, "{} bytes: a blank page?", png.len());
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());
}

/// The console check itself: the page with an error planted, served by the test under
/// the same policy, gives console lines (the exception, and the blocked read from
/// another origin).
#[tokio::test]
async fn the_console_check_catches_a_planted_error() {
    let Some(browser) = browser() else { return };
    let planted = PAGE.replace(
        "  refresh();\n  setInterval",
        "  fetch(\"http://127.0.0.2:9/x\").catch(function () {});\n  no_such_function();\n  refresh();\n  setInterval",
    );
    assert_ne!(planted, PAGE, "the planting point moved");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = axum::Router::new().fallback(move || {
        let planted = planted.clone();
        async move {
            (
                [
                    ("content-type", "text/html; charset=utf-8"),
                    (
                        "content-security-policy",
                        routemeter::proxy::admin::PAGE_CSP,
                    ),
                ],
                planted,
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let run = run_browser(&browser, &["--dump-dom"], &format!("http://{addr}/")).await;
    let lines = console_lines(&run.stderr);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Uncaught ReferenceError: no_such_function")),
        "{}",
        run.stderr
    );
    assert!(
        lines.iter().any(|l| l.contains("Content Security Policy")),
        "{}",
        run.stderr
    );
}

/// Runs `routemeter ARGS` to its end: exit code, stdout, stderr.
fn routemeter(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::BIN)
        .args(args)
        .env_remove("ROUTEMETER_ADMIN")
        .stdin(Stdio::null())
        .output()
        .expect("run routemeter");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8");
    (
        out.status.code().expect("exited"),
        text(out.stdout),
        text(out.stderr),
    )
}

#[tokio::test]
async fn top_shows_the_summary_once_as_json_and_as_a_table_and_refreshes() {
    let proxy = proxy_with_known_traffic().await;
    let admin = format!("127.0.0.1:{}", proxy.admin);

    let (code, out, err) = routemeter(&["top", "--admin", &admin, "--once", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("the summary's JSON");
    assert_eq!(json["window"], "1m");
    assert_eq!(json["overall"]["requests"], 60);
    assert_eq!(json["routes"].as_array().expect("routes").len(), 2);
    let (code, out, _) = routemeter(&[
        "top",
        "--admin",
        &format!("http://{admin}/"),
        "--window",
        "5m",
        "--once",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON")["window"],
        "5m"
    );

    let (code, out, err) = routemeter(&["top", "--admin", &admin, "--once"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let heading = format!("http://{admin}/api/summary?window=1m: window 1m, ");
    assert!(
        lines[0].starts_with(&heading) && lines[0].ends_with(" s of traffic"),
        "{out}"
    );
    let words = |line: &str| {
        line.split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(lines[1]),
        [
            "METHOD", "ROUTE", "REQUESTS", "RPS", "ERRORS", "P50", "P95", "P99", "SCORE", "STATUS"
        ]
    );
    let fast = words(lines[2]);
    assert_eq!(&fast[..3], ["GET", "/fast", "50"]);
    assert_eq!(&fast[fast.len() - 2..], ["100", "excellent"], "{out}");
    let failing = words(lines[3]);
    assert_eq!(&failing[..3], ["GET", "/status/{code}", "10"]);
    assert_eq!(&failing[4..6], ["100.0", "%"]);
    assert_eq!(failing.last().map(String::as_str), Some("poor"));
    assert!(
        lines[4].starts_with("overall: 60 requests, ") && lines[4].contains(", 16.7 % 5xx, "),
        "{out}"
    );
    assert!(lines[4].ends_with("(poor)"), "{out}");
    assert_eq!(lines[5..7], ["", "recommendations:"], "{out}");
    assert!(
        lines[7].starts_with("  GET /status/{code}: 100.0 % of its requests answered 5xx"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no screen control off a terminal");

    // Refreshing into a pipe: one table after the other, never a screen control.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("top.txt");
    let child = Command::new(common::BIN)
        .args(["top", "--admin", &admin, "--interval", "200ms"])
        .stdout(std::fs::File::create(&file).expect("output file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start top");
    let _running = common::Process(child);
    let text = support::wait_for("three refreshes", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        (text.matches("\nMETHOD ").count() >= 3).then_some(text)
    })
    .await;
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("recommendations:\n  GET /status/{code}: 100.0 % of its requests answered 5xx in the last 1m, over the 1.0 % target; see the application's logs for this route\n\nhttp://"), "{text}");

    // A proxy that does not answer: exit 1, saying which URL.
    let (_gone_port, port) = support::refusing_port();
    let gone = format!("127.0.0.1:{port}");
    let (code, _, err) = routemeter(&["top", "--admin", &gone, "--once"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: cannot read http://{gone}/api/summary?window=1m"
        )),
        "{err}"
    );
    let (code, _, err) = routemeter(&["top", "--admin", &admin, "--window", "2m"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("1m, 5m, 15m, 1h"), "{err}");
}
