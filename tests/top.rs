//! `routemeter top --msvc` end to end without a cluster: the real binary, real proxies
//! under known traffic, and in place of the API server the stand-in of
//! `tests/api_stand_in` (see there what it cannot show).

mod api_stand_in;
mod common;
#[allow(dead_code)] // the harness of tests/proxy.rs: this file uses part of it
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use api_stand_in::{Cluster, kubeconfig, pod, routemeter, stand_in};
use routemeter::summary::Summary;
use support::{Proxy, client, send, upstream};

/// Runs `routemeter top ARGS`; see [`routemeter`].
async fn top(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    routemeter(&[&["top"][..], args].concat(), env).await
}

async fn summary(proxy: &Proxy, requests: u64) -> Summary {
    serde_json::from_value(proxy.summary_after("1m", requests).await).expect("a summary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_merges_a_monitored_services_proxies_through_the_api_server() {
    // Two proxies: one saw 30 fast requests, the other 20 fast ones and 10 failures.
    let up = upstream().await;
    let config = format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes: [{{path: /fast}}, {{path: '/status/{{code}}'}}]\n"
    );
    let (a, b) = (Proxy::start(&config).await, Proxy::start(&config).await);
    let http = client();
    for _ in 0..30 {
        assert_eq!(send(http.get(a.url("/fast"))).await.0, 200);
    }
    for _ in 0..20 {
        assert_eq!(send(http.get(b.url("/fast"))).await.0, 200);
    }
    for _ in 0..10 {
        assert_eq!(send(http.get(b.url("/status/500"))).await.0, 500);
    }
    let expected = routemeter::summary::merge(&[summary(&a, 30).await, summary(&b, 30).await])
        .expect("they merge");

    // MonitoredService api: two ready pods on their proxies (admin ports 9901 and 9911 in
    // their specs), one unready, and one ready whose proxy does not answer. idle: one
    // unready pod.
    let cluster = Arc::new(Cluster {
        pods: BTreeMap::from([
            (
                "api".into(),
                vec![
                    pod("api-a", "api", true, 9901),
                    pod("api-b", "api", true, 9911),
                    pod("api-c", "api", false, 9901),
                    pod("api-d", "api", true, 9901),
                ],
            ),
            ("idle".into(), vec![pod("idle-a", "idle", false, 9901)]),
        ]),
        admins: BTreeMap::from([
            ("api-a".into(), (9901, a.admin)),
            ("api-b".into(), (9911, b.admin)),
            ("api-d".into(), (9901, support::free_port())),
        ]),
        windows: BTreeMap::new(),
        requests: Mutex::default(),
    });
    let server = stand_in(cluster.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kubeconfig(dir.path(), server);
    let file = kubeconfig.to_str().expect("UTF-8 path");
    let base = ["--kubeconfig", file, "--context", "stand-in", "--once"];

    // JSON: the merged summary, as the operator's status would merge it.
    let (code, out, err) = top(&[&base[..], &["--msvc", "api", "-o", "json"]].concat(), &[]).await;
    assert_eq!(code, 0, "{err}");
    let merged: Summary = serde_json::from_str(&out).expect("one summary of JSON");
    assert_eq!(merged.overall.requests, 60);
    assert_eq!(merged.overall.buckets, expected.overall.buckets);
    assert_eq!(merged.overall.p95, expected.overall.p95);
    assert_eq!(merged.overall.error_ratio, Some(10.0 / 60.0));
    let routes: Vec<(&str, u64)> = merged
        .routes
        .iter()
        .map(|e| (e.route.as_str(), e.requests))
        .collect();
    assert_eq!(routes, [("/fast", 50), ("/status/{code}", 10)]);
    assert!(
        err.starts_with("warning: pod api-d did not answer /api/summary?window=1m: "),
        "the proxy that did not answer is named on stderr, stdout stays JSON: {err}"
    );
    let requests = cluster
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(
        requests[0],
        "/apis/routemeter.io/v1alpha1/namespaces/shop/monitoredservices/api"
    );
    assert!(
        requests[1].starts_with("/api/v1/namespaces/shop/pods?"),
        "{requests:?}"
    );
    for path in [
        "/api/v1/namespaces/shop/pods/api-a:9901/proxy/api/summary?window=1m",
        "/api/v1/namespaces/shop/pods/api-b:9911/proxy/api/summary?window=1m",
    ] {
        assert!(requests.iter().any(|r| r == path), "{path} in {requests:?}");
    }
    assert!(
        !requests.iter().any(|r| r.contains("api-c")),
        "the unready pod is not read: {requests:?}"
    );

    // The table: the MonitoredService and how many proxies answered, then the warning.
    let (code, out, err) = top(
        &[&base[..], &["--msvc", "api", "--window", "5m"]].concat(),
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("MonitoredService shop/api, 2 of 3 ready proxies: window 5m, "),
        "{out}"
    );
    assert!(
        lines[4].starts_with("overall: 60 requests, ") && lines[4].contains(", 16.7 % 5xx, "),
        "{out}"
    );
    assert!(
        lines.last().is_some_and(
            |l| l.starts_with("warning: pod api-d did not answer /api/summary?window=5m: ")
        ),
        "{out}"
    );

    // What is missing is named: the MonitoredService, its ready proxies.
    let (code, _, err) = top(
        &[&base[..], &["--msvc", "api", "-n", "other"]].concat(),
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: no MonitoredService api in namespace other (kubectl get msvc -n other)\n"
    );
    let (code, _, err) = top(&[&base[..], &["--msvc", "idle"]].concat(), &[]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "error: MonitoredService shop/idle has no ready proxy pod: the 1 pod labelled \
             app.kubernetes.io/instance=idle,app.kubernetes.io/name=routemeter-proxy,\
             routemeter.io/monitored-service=idle is not ready (kubectl get pods -n shop -l "
        ),
        "{err}"
    );

    // KUBECONFIG and its current context when no flag says otherwise: `elsewhere`, whose
    // server refuses, in namespace `default`.
    let (code, _, err) = top(&["--msvc", "api", "--once"], &[("KUBECONFIG", file)]).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot read MonitoredService default/api: "),
        "{err}"
    );
    // ROUTEMETER_ADMIN in the environment gives way to --msvc; --admin with it does not.
    let (code, _, err) = top(
        &[&base[..], &["--msvc", "api", "-o", "json"]].concat(),
        &[("ROUTEMETER_ADMIN", "127.0.0.1:1")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = top(
        &[&base[..], &["--msvc", "api", "--admin", "127.0.0.1:1"]].concat(),
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: --admin and --msvc name two sources: give one\n"
    );
}
