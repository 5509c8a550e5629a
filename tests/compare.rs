//! `routemeter compare --msvc` end to end without a cluster: the real binary, real proxies
//! under known traffic, and in place of the API server the stand-in of
//! `tests/api_stand_in` (see there what it cannot show).
//!
//! Proxies started by a test are seconds old, so their 1h and 5m windows hold the same
//! requests: the first MonitoredService shows exactly that (no regression, equal counts,
//! and the note saying why). To show a regression found, the stand-in's pod proxy answers
//! the second MonitoredService's `window=1h` from a proxy that saw fast traffic and its
//! `window=5m` from one that saw the same route slow, as a proxy whose last five minutes
//! got slower would answer.

mod api_stand_in;
mod common;
#[allow(dead_code)] // the harness of tests/proxy.rs: this file uses part of it
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use api_stand_in::{Cluster, kubeconfig, pod, routemeter, stand_in};
use serde_json::{Value, json};
use support::{Proxy, client, send, upstream};

/// A proxy of route `/sleep/{ms}` to `up` that answered `requests` of `/sleep/{ms}`, and
/// counted them in its 5m and 1h windows.
async fn proxy_of_sleeps(up: std::net::SocketAddr, ms: u64, requests: u64) -> Proxy {
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes: [{{path: '/sleep/{{ms}}'}}]\n"
    ))
    .await;
    let http = client();
    let url = proxy.url(&format!("/sleep/{ms}"));
    let answers =
        futures::future::join_all((0..requests).map(|_| send(http.get(url.as_str())))).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    for window in ["5m", "1h"] {
        proxy.summary_after(window, requests).await;
    }
    proxy
}

fn requests_of(cluster: &Cluster) -> Vec<String> {
    std::mem::take(&mut *cluster.requests.lock().unwrap_or_else(|e| e.into_inner()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_msvc_reads_two_windows_of_the_same_proxies_and_fails_on_a_regression() {
    let up = upstream().await;
    let (a, b) = (
        proxy_of_sleeps(up, 2, 30).await,
        proxy_of_sleeps(up, 2, 30).await,
    );
    let slow = proxy_of_sleeps(up, 80, 30).await;

    // api: two ready pods on proxies a and b. planted: one pod, whose 1h window is a's
    // and whose 5m window is the slow proxy's.
    let cluster = Arc::new(Cluster {
        pods: BTreeMap::from([
            (
                "api".into(),
                vec![
                    pod("api-a", "api", true, 9901),
                    pod("api-b", "api", true, 9901),
                ],
            ),
            (
                "planted".into(),
                vec![pod("planted-a", "planted", true, 9901)],
            ),
        ]),
        admins: BTreeMap::from([
            ("api-a".into(), (9901, a.admin)),
            ("api-b".into(), (9901, b.admin)),
            ("planted-a".into(), (9901, a.admin)),
        ]),
        windows: BTreeMap::from([(("planted-a".into(), "5m".into()), slow.admin)]),
        requests: Mutex::default(),
    });
    let server = stand_in(cluster.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kubeconfig(dir.path(), server);
    let file = kubeconfig.to_str().expect("UTF-8 path");
    let compare = |args: &[&str]| {
        let line = [
            &["compare", "--kubeconfig", file, "--context", "stand-in"][..],
            args,
        ]
        .concat();
        let line: Vec<String> = line.iter().map(|s| s.to_string()).collect();
        async move {
            let line: Vec<&str> = line.iter().map(String::as_str).collect();
            routemeter(&line, &[]).await
        }
    };

    // The same proxies' 1h and 5m: the same 60 requests, nothing regressed, and the
    // heading says what was compared and why the two are alike.
    let (code, out, err) = compare(&["--msvc", "api"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "baseline: MonitoredService shop/api, last 1h (2 of 2 ready proxies); current: last \
         5m (2 of 2 ready proxies)",
        "{out}"
    );
    assert!(
        lines[1].starts_with("(the 1h baseline contains the last 5m: "),
        "{out}"
    );
    assert!(
        lines[2].starts_with("note: the proxies hold ")
            && lines[2].ends_with("both windows hold the same requests"),
        "{out}"
    );
    assert!(lines[3].starts_with("METHOD  ROUTE"), "{out}");
    for (line, route) in [(lines[4], "*"), (lines[5], "/sleep/{ms}")] {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[1], route, "{out}");
        assert_eq!(cells[2..5], ["60", "→", "60"], "{out}");
        assert!(line.ends_with("  ok"), "{out}");
    }
    assert_eq!(
        lines.last(),
        Some(&"0 regressed of 2 compared (0 skipped with too few requests)")
    );
    let requests = requests_of(&cluster);
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.starts_with("/api/v1/namespaces/shop/pods?"))
            .count(),
        1,
        "the proxies are found once for both windows: {requests:?}"
    );
    for pod in ["api-a", "api-b"] {
        for window in ["1h", "5m"] {
            let path = format!(
                "/api/v1/namespaces/shop/pods/{pod}:9901/proxy/api/summary?window={window}"
            );
            assert!(requests.contains(&path), "{path} in {requests:?}");
        }
    }

    // JSON: the report, with the MonitoredService and its two windows; the note on stderr.
    let (code, out, err) = compare(&["--msvc", "api", "-o", "json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(report["regressed"], false);
    assert_eq!(report["msvc"]["monitoredService"], "shop/api");
    assert_eq!(report["msvc"]["baseline"]["window"], "1h");
    assert_eq!(report["msvc"]["current"]["window"], "5m");
    assert_eq!(report["msvc"]["current"]["proxies"], 2);
    assert_eq!(report["routes"][0]["baseline"]["requests"], 60);
    assert_eq!(report["routes"][0]["current"]["requests"], 60);
    assert!(err.starts_with("note: the proxies hold "), "{err}");

    // Fast in the last hour, slow in the last five minutes: a regression, exit 1.
    let (code, out, err) = compare(&["--msvc", "planted"]).await;
    assert_eq!(code, 1, "{out}{err}");
    let route = out
        .lines()
        .find(|l| l.contains("/sleep/{ms}"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(route.contains("REGRESSION: mean, p95"), "{out}");
    assert_eq!(
        out.lines().last(),
        Some("2 regressed of 2 compared (0 skipped with too few requests)"),
        "overall as well as the route: {out}"
    );
    let (code, out, _) = compare(&["--msvc", "planted", "-o", "json"]).await;
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(report["regressed"], true);
    assert_eq!(report["routes"][1]["regressions"], json!(["mean", "p95"]));

    // What is missing is named, exit 2; flags of the two forms do not mix.
    let (code, _, err) = compare(&["--msvc", "gone"]).await;
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: no MonitoredService gone in namespace shop (kubectl get msvc -n shop)\n"
    );
    let (code, _, err) = compare(&["--msvc", "api", "--baseline", "base.json"]).await;
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: --msvc and --baseline name two sources: give --baseline and --current files, \
         or --msvc\n"
    );
}
