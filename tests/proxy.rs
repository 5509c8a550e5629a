//! The proxy binary between real HTTP clients and upstreams on 127.0.0.1: what it
//! counts, how it labels, how it balances, reloads and drains. Every port comes from the
//! OS, every loop is bounded in count and time.

mod common;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use support::{
    Metrics, Proxy, REQUEST_COUNT as COUNT, client, free_port, raw_exchange, raw_upstream, send,
    status_of, upstream, upstream_on, wait_for,
};
use tokio_tungstenite::tungstenite::Message;

const BUCKET: &str = "http_server_request_duration_seconds_bucket";
const CONNECT_ERRORS: &str = "routemeter_upstream_connect_errors_total";
const ENDPOINT_REQUESTS: &str = "routemeter_upstream_endpoint_requests_total";
const ENDPOINT_ERRORS: &str = "routemeter_upstream_endpoint_errors_total";
const ENDPOINT_LATENCY: &str = "routemeter_upstream_endpoint_latency_ewma_seconds";

/// The request count of one (route, method, status) series.
fn count(m: &Metrics, route: &str, method: &str, status: &str) -> f64 {
    m.sum(
        COUNT,
        &[
            ("http_route", route),
            ("http_request_method", method),
            ("http_response_status_code", status),
        ],
    )
}

#[tokio::test]
async fn counts_every_request_once_per_route_method_and_status() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\n\
         routes:\n  - {{path: '/status/{{code}}', methods: [GET]}}\n  - {{path: '/users/{{id}}'}}\n"
    ))
    .await;
    let http = client();
    for (path, n, status) in [
        ("/status/200", 7, 200),
        ("/status/404", 3, 404),
        ("/status/500", 5, 500),
        ("/users/1?page=2", 4, 200),
    ] {
        for _ in 0..n {
            assert_eq!(send(http.get(proxy.url(path))).await.0, status);
        }
    }
    for _ in 0..2 {
        assert_eq!(send(http.post(proxy.url("/users/2"))).await.0, 200);
    }

    let m = proxy.metrics_after(21.0).await;
    assert_eq!(count(&m, "/status/{code}", "GET", "200"), 7.0);
    assert_eq!(count(&m, "/status/{code}", "GET", "404"), 3.0);
    assert_eq!(count(&m, "/status/{code}", "GET", "500"), 5.0);
    assert_eq!(count(&m, "/users/{id}", "GET", "200"), 4.0);
    assert_eq!(count(&m, "/users/{id}", "POST", "200"), 2.0);
    assert_eq!(
        m.sum(COUNT, &[]),
        21.0,
        "no request missed or counted twice"
    );
    assert_eq!(
        m.sum(COUNT, &[("error_type", "")]),
        21.0,
        "an upstream's 4xx and 5xx are its answers, not proxy errors"
    );
    assert_eq!(m.sum(ENDPOINT_REQUESTS, &[]), 21.0);
    assert_eq!(
        m.sum(ENDPOINT_ERRORS, &[]),
        5.0,
        "but its 5xx are errors of the endpoint"
    );
    assert_eq!(m.sum("http_server_active_requests", &[]), 0.0);
    assert_eq!(m.sum("routemeter_proxy_overhead_seconds_count", &[]), 21.0);
}

#[tokio::test]
async fn declared_routes_have_zero_series_before_any_request() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\n\
         routes:\n  - {{path: '/orders/{{id}}', methods: [GET, post]}}\n  - {{path: /health}}\n"
    ))
    .await;
    let m = proxy.metrics().await;
    let zero = [
        ("/orders/{id}", "GET"),
        ("/orders/{id}", "POST"),
        ("/health", "GET"),
    ];
    for (route, method) in zero {
        // 500 for the 5xx ratios' numerator, 200 for their denominator (docs/rules.md).
        for status in ["200", "500"] {
            let labels = [
                ("http_route", route),
                ("http_request_method", method),
                ("http_response_status_code", status),
                ("error_type", ""),
            ];
            let series = m.matching_count(COUNT, &labels);
            assert_eq!(
                series, 1,
                "{method} {route}: a zero {status} series from the start"
            );
            assert_eq!(m.sum(COUNT, &labels), 0.0);
        }
        assert_eq!(m.sum(BUCKET, &[("http_route", route), ("le", "+Inf")]), 0.0);
    }
    assert_eq!(
        m.label_values(COUNT, "http_response_status_code"),
        ["200".to_string(), "500".to_string()].into(),
        "only the zero series, no made-up code"
    );
    assert_eq!(m.sum(COUNT, &[]), 0.0, "nothing counted before a request");
    let methods = m.label_values(COUNT, "http_request_method");
    assert_eq!(methods, ["GET".to_string(), "POST".to_string()].into());

    // A request lands beside it; the zero series stays 0 until a 500.
    assert_eq!(send(client().get(proxy.url("/orders/1"))).await.0, 200);
    let m = proxy.metrics_after(1.0).await;
    assert_eq!(count(&m, "/orders/{id}", "GET", "200"), 1.0);
    assert_eq!(count(&m, "/orders/{id}", "GET", "500"), 0.0);
    assert_eq!(m.sum(COUNT, &[]), 1.0);
}

#[tokio::test]
async fn latency_lands_in_the_right_bucket() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes: [{{path: '/sleep/{{ms}}'}}]\n"
    ))
    .await;
    // The upstream sleeps 110 ms, so the proxy measures more than 0.1 s by construction.
    // Whether it measures at most 0.25 s depends on the machine's load: the histogram's sum
    // tells what it measured, and a machine too busy for 0.25 s gets a few more tries.
    let http = client();
    let route = ("http_route", "/sleep/{ms}");
    let (mut sum, mut under_quarter) = (0.0, 0.0);
    for requests in 1..=5 {
        assert_eq!(send(http.get(proxy.url("/sleep/110"))).await.0, 200);
        let m = proxy.metrics_after(f64::from(requests)).await;
        let bucket = |le| m.sum(BUCKET, &[route, ("le", le)]);
        assert_eq!(bucket("0.1"), 0.0, "110 ms is not under 100 ms");
        let took = m.sum("http_server_request_duration_seconds_sum", &[route]) - sum;
        assert!(took >= 0.11, "measured {took} s for 110 ms");
        let counted_under_quarter = bucket("0.25") - under_quarter;
        if took <= 0.25 {
            assert_eq!(counted_under_quarter, 1.0, "{took} s is under 250 ms");
            return;
        }
        assert_eq!(counted_under_quarter, 0.0, "{took} s is not under 250 ms");
        (sum, under_quarter) = (sum + took, bucket("0.25"));
    }
    panic!("no request measured under 250 ms in 5 tries: the machine is overloaded");
}

#[tokio::test]
async fn latency_thresholds_become_bucket_boundaries() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nmetrics: {{latencyThresholds: [0.3]}}\n"
    ))
    .await;
    assert_eq!(send(client().get(proxy.url("/sleep/10"))).await.0, 200);
    let m = proxy.metrics_after(1.0).await;
    assert_eq!(m.sum(BUCKET, &[("le", "0.3")]), 1.0);
}

/// `n` written in base 26 with the letters a to z: a word without digits, never ID-like.
fn word(mut n: usize) -> String {
    let mut s = String::new();
    loop {
        s.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return s;
        }
    }
}

/// Sends a GET to every path, `concurrency` at a time over kept-alive connections,
/// expecting 200 each time.
async fn get_all(proxy: &Proxy, paths: impl Iterator<Item = String>, concurrency: usize) {
    let http = client();
    futures::stream::iter(paths)
        .for_each_concurrent(concurrency, |path| {
            let request = http.get(proxy.url(&path));
            async move {
                assert_eq!(send(request).await.0, 200, "{path}");
            }
        })
        .await;
}

#[tokio::test]
async fn unknown_paths_never_explode_cardinality_and_ids_collapse() {
    let up = upstream().await;
    // The default cap: 100 inferred templates.
    let proxy = Proxy::start(&format!("upstream: {{endpoints: ['{up}']}}\n")).await;

    // IDs of every kind collapse into one template, which takes one slot of the cap.
    let ids = (0..100)
        .map(|i| format!("/orders/{}", 1000 + i))
        .chain((0..50).map(|i| format!("/orders/123e4567-e89b-12d3-a456-4266141740{i:02}")))
        .chain((0..50).map(|i| format!("/orders/5f2b8c9d0e1a{i:04}")));
    get_all(&proxy, ids, 8).await;
    let m = proxy.metrics_after(200.0).await;
    assert_eq!(m.sum(COUNT, &[("http_route", "/orders/{id}")]), 200.0);
    assert_eq!(m.sum("routemeter_inferred_routes", &[]), 1.0);

    // 10,000 distinct paths that are not IDs: 99 get a template of their own, the rest
    // share `_other`.
    get_all(&proxy, (0..10_000).map(|i| format!("/x{}", word(i))), 32).await;
    // A template inferred before the cap was reached keeps its label after.
    get_all(&proxy, (0..50).map(|i| format!("/orders/{i}")), 8).await;

    let m = proxy.metrics_after(10_250.0).await;
    let routes = m.label_values(COUNT, "http_route");
    assert_eq!(
        routes.len(),
        101,
        "the cap of 100 templates plus _other: {routes:?}"
    );
    assert!(routes.contains("_other") && routes.contains("/orders/{id}"));
    assert_eq!(m.sum(COUNT, &[("http_route", "_other")]), 10_000.0 - 99.0);
    assert_eq!(m.sum(COUNT, &[("http_route", "/orders/{id}")]), 250.0);
    assert_eq!(m.sum(COUNT, &[]), 10_250.0);
    assert_eq!(m.sum("routemeter_inferred_routes", &[]), 100.0);
}

/// An application where only `/items/...` exists: 200 there, 400 under `/bad`, 404
/// anywhere else, as a scanner probing random paths would see.
async fn items_only_upstream() -> std::net::SocketAddr {
    use axum::http::{StatusCode, Uri};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an upstream");
    let addr = listener.local_addr().expect("upstream address");
    let app = axum::Router::new().fallback(|uri: Uri| async move {
        if uri.path().starts_with("/items/") {
            StatusCode::OK
        } else if uri.path().starts_with("/bad") {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::NOT_FOUND
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn scanners_answered_404_or_400_never_fill_the_inference_cap() {
    let up = items_only_upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nautoTemplate: {{maxRoutes: 10}}\n"
    ))
    .await;
    // 200 distinct paths, twenty times the cap: 150 answered 404, 50 answered 400.
    let http = client();
    let scans = (0..150)
        .map(|i| (format!("/wp-{}.php", word(i)), 404))
        .chain((0..50).map(|i| (format!("/bad{}", word(i)), 400)));
    futures::stream::iter(scans)
        .for_each_concurrent(8, |(path, expected)| {
            let request = http.get(proxy.url(&path));
            async move {
                assert_eq!(send(request).await.0, expected, "{path}");
            }
        })
        .await;
    let m = proxy.metrics_after(200.0).await;
    let routes = m.label_values(COUNT, "http_route");
    assert_eq!(
        routes.into_iter().collect::<Vec<_>>(),
        ["_other"],
        "no template inferred from a 404 or a 400"
    );
    assert_eq!(count(&m, "_other", "GET", "404"), 150.0);
    assert_eq!(count(&m, "_other", "GET", "400"), 50.0);
    assert_eq!(m.sum("routemeter_inferred_routes", &[]), 0.0);

    // The cap is untouched: the application's real routes still get their template.
    get_all(&proxy, (1..=20).map(|i| format!("/items/{i}")), 4).await;
    let m = proxy.metrics_after(220.0).await;
    assert_eq!(count(&m, "/items/{id}", "GET", "200"), 20.0);
    assert_eq!(m.sum("routemeter_inferred_routes", &[]), 1.0);
    let routes = m.label_values(COUNT, "http_route");
    assert_eq!(
        routes.into_iter().collect::<Vec<_>>(),
        ["/items/{id}", "_other"]
    );
}

#[tokio::test]
async fn unmatched_requests_share_one_label_without_inference() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nautoTemplate: {{enabled: false}}\n"
    ))
    .await;
    let paths = ["/a", "/b/1", "/c/d/e"].map(String::from);
    get_all(&proxy, paths.into_iter(), 1).await;
    let m = proxy.metrics_after(3.0).await;
    assert_eq!(m.sum(COUNT, &[("http_route", "_unmatched")]), 3.0);
    assert_eq!(m.sum(COUNT, &[]), 3.0);
}

#[tokio::test]
async fn the_most_specific_route_wins_whatever_the_order() {
    let up = upstream().await;
    // Declared from the least to the most specific.
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\n\
         routes:\n  - {{path: '/users/*'}}\n  - {{path: '/users/{{id}}'}}\n  - {{path: '/users/me'}}\n"
    )).await;
    let paths = [
        "/users/me",
        "/users/42",
        "/users/42/posts",
        "/users/7/posts/1",
    ];
    get_all(&proxy, paths.map(String::from).into_iter(), 1).await;
    let m = proxy.metrics_after(4.0).await;
    assert_eq!(m.sum(COUNT, &[("http_route", "/users/me")]), 1.0);
    assert_eq!(m.sum(COUNT, &[("http_route", "/users/{id}")]), 1.0);
    assert_eq!(m.sum(COUNT, &[("http_route", "/users/*")]), 2.0);
    assert_eq!(m.sum(COUNT, &[]), 4.0);
}

/// Updates `config.yaml` in `dir` the way kubelet updates a mounted ConfigMap: the content
/// goes into a new timestamped directory, the `..data` symlink is swapped to it by an
/// atomic rename, and the previous directory is deleted. `config.yaml` itself is a symlink
/// to `..data/config.yaml`, made once.
fn configmap_update(dir: &Path, generation: u32, content: &str) {
    let versioned = format!("..2025_01_01_00_00_{generation:02}.000000001");
    std::fs::create_dir(dir.join(&versioned)).expect("mkdir");
    std::fs::write(dir.join(&versioned).join("config.yaml"), content).expect("write");
    let previous = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&versioned, &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).expect("remove the old version");
    }
    let link = dir.join("config.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/config.yaml", &link).expect("link config.yaml");
    }
}

/// The route templates of the config the proxy serves, from `/config`.
async fn served_routes(proxy: &Proxy) -> Vec<String> {
    let (status, body) = proxy.admin("/config").await.expect("/config");
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    config["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r["path"].as_str().expect("path").to_string())
        .collect()
}

#[tokio::test]
async fn reloads_a_swapped_configmap_and_refuses_a_bad_one() {
    let up = upstream().await;
    let config = |listen, admin, routes: &str| {
        support::config_yaml(
            listen,
            admin,
            &format!(
                "upstream: {{endpoints: ['{up}']}}\nserver: {{reloadInterval: 100ms}}\nroutes: {routes}\n"
            ),
        )
    };
    let proxy = Proxy::launch(|listen, admin| {
        let dir = tempfile::tempdir().expect("tempdir");
        configmap_update(dir.path(), 1, &config(listen, admin, "[{path: /a}]"));
        let path = support::path_arg(&dir.path().join("config.yaml"));
        (dir, vec!["--config".to_string(), path])
    })
    .await;
    let dir = proxy.dir();
    let config = |routes| config(proxy.listen, proxy.admin, routes);
    assert_eq!(served_routes(&proxy).await, ["/a"]);

    // One client with kept-alive connections throughout: reloads leave them be.
    let http = client();
    let get = |path: &str| send(http.get(proxy.url(path)));
    assert_eq!(get("/b/first").await.0, 200);

    configmap_update(dir, 2, &config("[{path: /a}, {path: '/b/{id}'}]"));
    proxy
        .wait_for_metric("routemeter_config_reloads_total", &[], 1.0)
        .await;
    assert_eq!(served_routes(&proxy).await, ["/a", "/b/{id}"]);
    assert_eq!(get("/b/second").await.0, 200);
    let m = proxy.metrics_after(2.0).await;
    assert_eq!(m.sum(COUNT, &[("http_route", "/b/{id}")]), 1.0, "new route");
    assert_eq!(
        m.sum(COUNT, &[("http_route", "/b/first")]),
        1.0,
        "inferred before the reload"
    );
    assert_eq!(m.sum("routemeter_config_last_reload_successful", &[]), 1.0);

    // A template without its leading slash: rejected, the previous config stays.
    configmap_update(dir, 3, &config("[{path: /a}, {path: 'no-slash'}]"));
    proxy
        .wait_for_metric("routemeter_config_reload_errors_total", &[], 1.0)
        .await;
    assert_eq!(served_routes(&proxy).await, ["/a", "/b/{id}"]);
    assert_eq!(get("/b/third").await.0, 200);
    let m = proxy.metrics_after(3.0).await;
    assert_eq!(m.sum(COUNT, &[("http_route", "/b/{id}")]), 2.0);
    assert_eq!(m.sum("routemeter_config_reloads_total", &[]), 1.0);
    assert_eq!(m.sum("routemeter_config_last_reload_successful", &[]), 0.0);
    wait_for(
        "the rejection in the log",
        Duration::from_secs(5),
        || async { proxy.log().contains("config rejected").then_some(()) },
    )
    .await;

    // Fixing the file is picked up.
    configmap_update(dir, 4, &config("[{path: '/c/{id}'}]"));
    proxy
        .wait_for_metric("routemeter_config_reloads_total", &[], 2.0)
        .await;
    assert_eq!(served_routes(&proxy).await, ["/c/{id}"]);
    let m = proxy.metrics().await;
    assert_eq!(m.sum("routemeter_config_reload_errors_total", &[]), 1.0);
    assert_eq!(m.sum("routemeter_config_last_reload_successful", &[]), 1.0);
}

/// The request headers the upstream received for a GET of `/headers` through `proxy`,
/// sent with `headers`.
async fn received(proxy: &Proxy, headers: &[(&str, &str)]) -> support::Received {
    let mut request = client().get(proxy.url("/headers"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (status, body) = send(request).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("the upstream's JSON")
}

/// The values of `name` the upstream received, one per header line.
fn values<'a>(received: &'a support::Received, name: &str) -> Vec<&'a str> {
    received
        .get(name)
        .map_or_else(Vec::new, |v| v.iter().map(String::as_str).collect())
}

/// What a client that claims to come through other proxies sends.
const SPOOFED: [(&str, &str); 6] = [
    ("Host", "shop.example"),
    ("X-Forwarded-For", "6.6.6.6, 198.51.100.1"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "admin.example"),
    ("Forwarded", "for=198.51.100.1;proto=https"),
    ("Via", "1.1 lb"),
];

#[tokio::test]
async fn the_application_sees_its_client_and_nothing_a_client_made_up() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!("upstream: {{endpoints: ['{up}']}}\n")).await;

    let plain = received(&proxy, &[]).await;
    let authority = format!("127.0.0.1:{}", proxy.listen);
    assert_eq!(values(&plain, "host"), [authority.as_str()]);
    assert_eq!(values(&plain, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&plain, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&plain, "x-forwarded-host"), [authority.as_str()]);
    assert!(values(&plain, "forwarded").is_empty(), "off by default");
    assert!(values(&plain, "via").is_empty(), "off by default");

    // trustedHops 0: the client's claims are replaced by what the proxy saw.
    let spoofed = received(&proxy, &SPOOFED).await;
    assert_eq!(values(&spoofed, "host"), ["shop.example"], "Host as sent");
    assert_eq!(values(&spoofed, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&spoofed, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&spoofed, "x-forwarded-host"), ["shop.example"]);
    assert!(values(&spoofed, "forwarded").is_empty(), "{spoofed:?}");
    assert_eq!(values(&spoofed, "via"), ["1.1 lb"], "Via passes through");
}

#[tokio::test]
async fn trusted_hops_forwarded_and_via_change_on_reload() {
    let up = upstream().await;
    let config = |forwarding: &str| {
        format!(
            "upstream: {{endpoints: ['{up}']}}\nserver: {{reloadInterval: 100ms}}\n\
             forwarding: {forwarding}\n"
        )
    };
    let proxy = Proxy::start(&config("{trustedHops: 1, forwarded: true, via: true}")).await;

    // One trusted proxy in front: its entry is kept, what is left of it dropped.
    let trusted = received(&proxy, &SPOOFED).await;
    assert_eq!(values(&trusted, "host"), ["shop.example"]);
    assert_eq!(
        values(&trusted, "x-forwarded-for"),
        ["198.51.100.1, 127.0.0.1"]
    );
    assert_eq!(values(&trusted, "x-forwarded-proto"), ["https"]);
    assert_eq!(values(&trusted, "x-forwarded-host"), ["admin.example"]);
    assert_eq!(
        values(&trusted, "forwarded"),
        ["for=198.51.100.1;proto=https, for=127.0.0.1;proto=http;host=shop.example"]
    );
    assert_eq!(values(&trusted, "via"), ["1.1 lb, 1.1 routemeter"]);

    // Back to the defaults, atomically as a ConfigMap update is: the next request follows.
    let file = proxy.dir().join("config.yaml");
    let next = proxy.dir().join("config.yaml.next");
    let text = support::config_yaml(proxy.listen, proxy.admin, &config("{}"));
    std::fs::write(&next, text).expect("write the next config");
    std::fs::rename(&next, &file).expect("swap the config");
    proxy
        .wait_for_metric("routemeter_config_reloads_total", &[], 1.0)
        .await;
    let untrusted = received(&proxy, &SPOOFED).await;
    assert_eq!(values(&untrusted, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&untrusted, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&untrusted, "x-forwarded-host"), ["shop.example"]);
    assert!(values(&untrusted, "forwarded").is_empty(), "{untrusted:?}");
    assert_eq!(values(&untrusted, "via"), ["1.1 lb"]);
    let m = proxy.metrics_after(2.0).await;
    assert_eq!(m.sum("routemeter_config_reload_errors_total", &[]), 0.0);
    assert_eq!(
        count(&m, "/headers", "GET", "200"),
        2.0,
        "one process throughout"
    );
}

#[tokio::test]
async fn upstream_down_then_back() {
    let (reserved, port) = support::refusing_port();
    let endpoint = format!("127.0.0.1:{port}");
    // Ready at first all the same: the endpoint has not failed yet.
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{endpoint}'], ejectionBase: 100ms, ejectionMax: 200ms}}\n\
         routes: [{{path: /x}}]\n"
    ))
    .await;
    let http = client();

    // Each request fails to connect and answers 502 (or, were a lone endpoint ever left
    // out, 503), and the proxy stays ready all along: it can take traffic, and answers
    // (and counts) every request, whatever the upstream does.
    let (mut bad_gateway, mut unavailable) = (0.0, 0.0);
    for _ in 0..5 {
        let (status, body) = send(http.get(proxy.url("/x"))).await;
        match status {
            502 => bad_gateway += 1.0,
            503 => unavailable += 1.0,
            other => panic!("upstream down answered {other}"),
        }
        assert!(body.starts_with("routemeter: "), "a clear error: {body:?}");
        let (ready, why) = proxy.admin("/readyz").await.expect("/readyz answers");
        assert_eq!(ready, 200, "ready with the upstream down: {why}");
    }
    assert!(bad_gateway >= 1.0);
    let m = proxy.metrics_after(bad_gateway + unavailable).await;
    let refused = [
        ("http_route", "/x"),
        ("http_response_status_code", "502"),
        ("error_type", "connect_refused"),
    ];
    assert_eq!(m.sum(COUNT, &refused), bad_gateway);
    let unhealthy = [
        ("http_response_status_code", "503"),
        ("error_type", "no_healthy_upstream"),
    ];
    assert_eq!(m.sum(COUNT, &unhealthy), unavailable);
    assert_eq!(m.sum(COUNT, &[]), bad_gateway + unavailable);
    assert_eq!(
        m.sum(
            CONNECT_ERRORS,
            &[("endpoint", &endpoint), ("error_type", "connect_refused")]
        ),
        bad_gateway,
        "one connection attempt per 502: there is no other endpoint to retry on"
    );

    // The upstream comes back on the same port: once the ejection backoff (200 ms at
    // most) is over, requests go through again.
    let listener = reserved
        .listen(1024)
        .expect("listen on the upstream's port");
    upstream_on(listener).await;
    wait_for("requests to succeed", Duration::from_secs(10), || async {
        let r = http.get(proxy.url("/x")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert_eq!(proxy.readyz().await, Some(200));
}

#[tokio::test]
async fn no_upstream_endpoint_is_ready_and_answers_503_at_once() {
    // A name that does not exist, as a headless Service answers while none of its pods
    // is ready (the application scaled to 0): no endpoint at all.
    let proxy =
        Proxy::start("upstream: {endpoints: ['no-such-host.invalid:80']}\nroutes: [{path: /x}]\n")
            .await;
    let (ready, why) = proxy.admin("/readyz").await.expect("/readyz answers");
    assert_eq!(
        ready, 200,
        "a proxy with no endpoint still takes traffic: {why}"
    );
    assert!(why.contains("no upstream endpoint"), "{why}");
    let http = client();
    for _ in 0..10 {
        let started = Instant::now();
        let (status, body) = send(http.get(proxy.url("/x"))).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("no_healthy_upstream"), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered at once, not after a timeout: {:?}",
            started.elapsed()
        );
    }
    let m = proxy.metrics_after(10.0).await;
    let unavailable = [
        ("http_route", "/x"),
        ("http_response_status_code", "503"),
        ("error_type", "no_healthy_upstream"),
    ];
    assert_eq!(m.sum(COUNT, &unavailable), 10.0, "every refusal is counted");
    assert_eq!(m.sum(COUNT, &[]), 10.0);
    assert_eq!(m.sum(CONNECT_ERRORS, &[]), 0.0, "nothing to connect to");
}

#[tokio::test]
async fn json_logs_are_readable_lines_without_build_paths() {
    let up = upstream().await;
    let mut proxy = Proxy::start_with_logs(
        "json",
        &format!("upstream: {{endpoints: ['{up}']}}\nserver: {{gracePeriod: 1s}}\n"),
    )
    .await;
    assert_eq!(send(client().get(proxy.url("/a"))).await.0, 200);
    // A hand-edited config that cannot be used: rejected, reported, the old one kept.
    let config = proxy.dir().join("config.yaml");
    let good = std::fs::read_to_string(&config).expect("the config");
    std::fs::write(
        &config,
        format!("{good}routes: [{{path: /ok}}, {{path: 'x/{{id}}'}}]\n"),
    )
    .expect("write a bad config");
    proxy
        .wait_for_metric("routemeter_config_last_reload_successful", &[], 0.0)
        .await;
    assert_eq!(
        send(client().get(proxy.url("/a"))).await.0,
        200,
        "still serving"
    );
    // pingora logs its shutdown through the `log` crate: those lines too must be clean.
    proxy.sigterm();
    let status = proxy.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let lines = support::json_lines(&proxy.log());
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "routemeter proxy starting"),
        "our own start line: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("pingora"))),
        "pingora's lines, under pingora's targets: {lines:?}"
    );
    let rejected: Vec<_> = lines
        .iter()
        .filter(|l| l["level"] == "ERROR")
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(
        rejected.len() == 1
            && rejected[0].contains("config rejected")
            && rejected[0].contains("routes[1].path"),
        "one error line naming the field: {rejected:?}"
    );
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} in {line}");
        }
    }
}

#[tokio::test]
async fn an_invalid_config_at_start_is_one_json_line_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    let rest = "upstream: {endpoints: ['127.0.0.1:1']}\n\
                routes: [{path: /a}, {path: /b}, {path: '/c/*/d'}]\n";
    std::fs::write(
        &config,
        support::config_yaml(free_port(), free_port(), rest),
    )
    .expect("write the config");
    let args = ["--config".to_string(), support::path_arg(&config)];
    let (status, stderr) =
        support::run_to_exit_with_logs("json", &args, Duration::from_secs(10)).await;
    assert!(!status.success(), "an invalid config is refused: {stderr}");
    let lines = support::json_lines(&stderr);
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert_eq!(lines[0]["level"], "ERROR");
    let message = lines[0]["message"].as_str().expect("a message");
    assert_eq!(
        message.matches("routes[2].path").count(),
        1,
        "names the field, once: {message}"
    );
}

#[tokio::test]
async fn round_robin_spreads_evenly_over_upstreams() {
    let (a, b, c) = (upstream().await, upstream().await, upstream().await);
    let proxy = Proxy::start(&format!("upstream: {{endpoints: ['{a}', '{b}', '{c}']}}\n")).await;
    let http = client();
    let mut per_upstream = HashMap::<String, u32>::new();
    for _ in 0..300 {
        let (status, upstream) = send(http.get(proxy.url("/"))).await;
        assert_eq!(status, 200);
        *per_upstream.entry(upstream).or_default() += 1;
    }
    assert_eq!(per_upstream.len(), 3, "{per_upstream:?}");
    assert!(
        per_upstream.values().all(|n| (80..=120).contains(n)),
        "each upstream gets about a third: {per_upstream:?}"
    );
}

/// Requests, and clients sending them at once, of each run of [`slow_share`].
const LOAD: (u64, usize) = (400, 8);

/// How long the slow upstream of [`slow_share`] takes to answer.
const SLOW: Duration = Duration::from_millis(50);

/// Sends [`LOAD`] through a proxy balancing with `policy` over a slow upstream ([`SLOW`])
/// and a fast one; returns the share of the requests the slow one served, as it counted
/// them. Checks the proxy's per-endpoint figures against what each upstream served.
async fn slow_share(policy: &str) -> f64 {
    let (requests, concurrency) = LOAD;
    let slow = support::delayed_upstream(SLOW).await;
    let fast = support::delayed_upstream(Duration::ZERO).await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{}', '{}'], loadBalancing: {policy}}}\n",
        slow.addr, fast.addr
    ))
    .await;
    let started = Instant::now();
    let paths = (0..requests).map(|_| "/".to_string());
    tokio::time::timeout(Duration::from_secs(60), get_all(&proxy, paths, concurrency))
        .await
        .expect("the load served within a minute");
    let took = started.elapsed();

    let m = proxy.metrics_after(requests as f64).await;
    let since_start = started.elapsed().as_secs_f64();
    let (to_slow, to_fast) = (slow.served(), fast.served());
    assert_eq!(to_slow + to_fast, requests, "every request served once");
    for (upstream, served) in [(&slow, to_slow), (&fast, to_fast)] {
        let endpoint = [("endpoint", &*upstream.addr.to_string())];
        assert_eq!(
            m.sum(ENDPOINT_REQUESTS, &endpoint),
            served as f64,
            "the proxy counts on {} what it served",
            upstream.addr
        );
        assert_eq!(m.sum(ENDPOINT_ERRORS, &endpoint), 0.0);
    }
    let latency = |upstream: &support::DelayedUpstream| {
        m.sum(
            ENDPOINT_LATENCY,
            &[("endpoint", &upstream.addr.to_string())],
        )
    };
    // Each slow sample is over 50 ms; since the last one, the estimate decayed for less
    // than the whole run, with its 10 s time constant.
    let floor = SLOW.as_secs_f64() * (-since_start / 10.0).exp();
    assert!(
        latency(&slow) >= floor,
        "slow estimate {} s, at least {floor} s",
        latency(&slow)
    );
    assert!(latency(&fast) > 0.0, "the fast one has an estimate");

    let share = to_slow as f64 / requests as f64;
    println!(
        "{policy}: {to_slow} of {requests} requests to the {SLOW:?} endpoint ({:.1} %), \
         {concurrency} clients, {took:.2?}; latency estimates: slow {:.1} ms, fast {:.2} ms",
        share * 100.0,
        latency(&slow) * 1e3,
        latency(&fast) * 1e3,
    );
    share
}

#[tokio::test]
async fn peak_ewma_sends_less_to_a_slow_endpoint_than_round_robin() {
    let round_robin = slow_share("roundRobin").await;
    assert!(
        (0.4..=0.6).contains(&round_robin),
        "round robin sends about half to the slow endpoint: {round_robin}"
    );
    let peak_ewma = slow_share("peakEwma").await;
    assert!(
        peak_ewma < 0.25,
        "peak-EWMA sends the slow endpoint less than a quarter: {peak_ewma}"
    );
}

#[tokio::test]
async fn a_dead_upstream_is_retried_around_and_ejected() {
    let (a, b) = (upstream().await, upstream().await);
    let (_dead_port, port) = support::refusing_port();
    let dead = format!("127.0.0.1:{port}");
    // A long ejection, so the dead endpoint stays out for the whole test.
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{a}', '{b}', '{dead}'], ejectionBase: 30s, ejectionMax: 30s}}\n"
    ))
    .await;
    let http = client();
    let mut per_upstream = HashMap::<String, u32>::new();
    for _ in 0..60 {
        let (status, upstream) = send(http.get(proxy.url("/"))).await;
        assert_eq!(status, 200, "a GET is retried on another endpoint");
        *per_upstream.entry(upstream).or_default() += 1;
    }
    assert_eq!(
        per_upstream.len(),
        2,
        "both live upstreams serve: {per_upstream:?}"
    );

    let m = proxy.metrics_after(60.0).await;
    assert_eq!(
        m.sum(
            CONNECT_ERRORS,
            &[("endpoint", &dead), ("error_type", "connect_refused")]
        ),
        1.0,
        "tried once, then left out"
    );
    assert_eq!(m.sum(CONNECT_ERRORS, &[]), 1.0);
    let on_dead = [("endpoint", dead.as_str())];
    assert_eq!(m.sum(ENDPOINT_REQUESTS, &on_dead), 1.0, "one attempt...");
    assert_eq!(m.sum(ENDPOINT_ERRORS, &on_dead), 1.0, "...which failed");
    assert_eq!(
        m.sum(ENDPOINT_REQUESTS, &[]),
        61.0,
        "the retries count where they went"
    );
    assert_eq!(m.sum(ENDPOINT_ERRORS, &[]), 1.0);
    assert_eq!(count(&m, "/", "GET", "200"), 60.0);
    assert_eq!(m.sum(COUNT, &[]), 60.0);
    let endpoints = "routemeter_upstream_endpoints";
    assert_eq!(m.sum(endpoints, &[("state", "ejected")]), 1.0);
    assert_eq!(m.sum(endpoints, &[("state", "healthy")]), 2.0);
    assert_eq!(proxy.readyz().await, Some(200));
}

#[tokio::test]
async fn websockets_pass_through_and_stay_out_of_the_request_histogram() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes: [{{path: /ws}}]\n"
    ))
    .await;
    let route = [("http_route", "/ws")];
    let in_time = Duration::from_secs(10);

    let url = format!("ws://127.0.0.1:{}/ws", proxy.listen);
    let (mut ws, response) = tokio::time::timeout(in_time, tokio_tungstenite::connect_async(url))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    for text in ["hello", "world"] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = tokio::time::timeout(in_time, ws.next())
            .await
            .expect("an echo in time")
            .expect("an echo")
            .expect("a message");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
    let m = proxy.metrics().await;
    assert_eq!(
        m.sum("routemeter_websocket_connections_active", &route),
        1.0
    );
    assert_eq!(m.sum("routemeter_websocket_connections_total", &route), 1.0);

    tokio::time::timeout(in_time, ws.close(None))
        .await
        .expect("close in time")
        .expect("close");
    drop(ws);
    proxy
        .wait_for_metric("routemeter_websocket_connections_active", &route, 0.0)
        .await;
    let m = proxy.metrics().await;
    assert_eq!(m.sum("routemeter_websocket_connections_total", &route), 1.0);
    assert_eq!(
        m.sum(
            "routemeter_websocket_connection_duration_seconds_count",
            &route
        ),
        1.0
    );
    assert_eq!(m.sum(COUNT, &route), 0.0, "not a request of the histogram");
    assert_eq!(m.sum(COUNT, &[]), 0.0);
}

/// A GET of `url` in a task of its own: its status and body once complete.
fn get_in_background(url: String) -> tokio::task::JoinHandle<reqwest::Result<(u16, String)>> {
    tokio::spawn(async move {
        let r = client().get(url).send().await?;
        Ok((r.status().as_u16(), r.text().await?))
    })
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let up = upstream().await;
    let grace = Duration::from_secs(2);
    let mut proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nserver: {{gracePeriod: 2s}}\n"
    ))
    .await;
    let in_flight = get_in_background(proxy.url("/sleep/1000"));
    // SIGTERM once the request is in the proxy, about 200 ms into its second.
    proxy
        .wait_for_metric("http_server_active_requests", &[], 1.0)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let terminated = Instant::now();
    proxy.sigterm();

    // The listener closes: new connections are refused, well within the grace period.
    wait_for(
        "new connections to be refused",
        Duration::from_millis(1500),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", proxy.listen))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let outcome = in_flight.await.expect("join");
    let (status, body) = outcome.expect("the in-flight request completes");
    assert_eq!((status, body.as_str()), (200, "slept"));

    // The exit comes after the grace period, plus the proxy's 1 s for its runtimes to stop.
    let status = proxy.exit_status(grace + Duration::from_secs(5)).await;
    assert!(status.success(), "a clean exit: {status}");
    assert!(
        terminated.elapsed() >= grace,
        "the grace period is honoured"
    );
}

#[tokio::test]
async fn ctrl_c_under_load_exits_at_once() {
    // Found by the benchmark: with one multi-threaded pingora service, a listener could be
    // registered on one runtime thread and accepted on another; on SIGINT the first
    // thread's reactor went away and the accept loop spun on "runtime is shutting down"
    // errors, never exiting, writing gigabytes of log. Every worker now owns its listener.
    let up = upstream().await;
    let mut proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nserver: {{workers: 2, gracePeriod: 5s}}\n"
    ))
    .await;
    // Clients that open a new connection for every request keep both workers accepting.
    let url = proxy.url("/users/1");
    let load: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .expect("client");
                let mut ok = 0u32;
                while let Ok(r) = client.get(&url).send().await {
                    ok += u32::from(r.status() == 200);
                }
                ok
            })
        })
        .collect();
    wait_for("200 requests served", Duration::from_secs(10), || async {
        let served = proxy
            .metrics()
            .await
            .sum("http_server_request_duration_seconds_count", &[]);
        (served >= 200.0).then_some(())
    })
    .await;
    let interrupted = Instant::now();
    proxy.interrupt();
    let status = proxy.exit_status(Duration::from_secs(5)).await;
    let took = interrupted.elapsed();
    let mut served = 0;
    for client in load {
        served += client.await.expect("join");
    }
    assert!(
        served >= 200,
        "the load was served before the interrupt: {served}"
    );
    // SIGINT is the quick shutdown: no grace period, a prompt exit, and a log that did not
    // fill with errors on the way out.
    assert!(
        took < Duration::from_secs(4),
        "exited in {took:?}: {status}"
    );
    let log = proxy.log();
    assert!(
        log.len() < 256 * 1024,
        "the log grew to {} bytes",
        log.len()
    );
}

#[tokio::test]
async fn a_sub_second_grace_period_still_drains() {
    // pingora counts the grace period in whole seconds: 500ms must not become zero, which
    // would cut every in-flight request at SIGTERM.
    let up = upstream().await;
    let mut proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nserver: {{gracePeriod: 500ms}}\n"
    ))
    .await;
    let in_flight = get_in_background(proxy.url("/sleep/500"));
    proxy
        .wait_for_metric("http_server_active_requests", &[], 1.0)
        .await;
    proxy.sigterm();
    let outcome = in_flight.await.expect("join");
    let (status, body) = outcome.expect("the in-flight request completes");
    assert_eq!((status, body.as_str()), (200, "slept"));
    let status = proxy.exit_status(Duration::from_secs(5)).await;
    assert!(status.success(), "a clean exit: {status}");
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nlimits: {{maxRequestHeaderBytes: 2048}}\n\
         routes: [{{path: /big}}]\n"
    ))
    .await;
    let http = client();
    let with_header = |size: usize| {
        let request = http.get(proxy.url("/big"));
        send(request.header("x-big", "a".repeat(size)))
    };
    assert_eq!(with_header(4096).await.0, 431);
    assert_eq!(with_header(1024).await.0, 200, "under the limit");

    let m = proxy.metrics_after(2.0).await;
    let too_large = [
        ("http_route", "/big"),
        ("http_response_status_code", "431"),
        ("error_type", "request_header_too_large"),
    ];
    assert_eq!(m.sum(COUNT, &too_large), 1.0);
    assert_eq!(count(&m, "/big", "GET", "200"), 1.0);
    assert_eq!(m.sum(COUNT, &[]), 2.0);
}

/// Writes `request` on a new connection to the proxy and returns the response head.
async fn raw_head(proxy: &Proxy, request: &str) -> String {
    raw_exchange(proxy, request, |received| {
        received.windows(4).any(|w| w == b"\r\n\r\n")
    })
    .await
}

#[tokio::test]
async fn http11_without_host_gets_400_and_is_not_forwarded() {
    let up = support::delayed_upstream(Duration::ZERO).await;
    let proxy = Proxy::start(&format!("upstream: {{endpoints: ['{}']}}\n", up.addr)).await;

    let head = raw_head(&proxy, "GET / HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    let m = proxy.metrics_after(1.0).await;
    let missing_host = [
        ("http_response_status_code", "400"),
        ("error_type", "bad_request"),
    ];
    assert_eq!(m.sum(COUNT, &missing_host), 1.0);
    // Answered before any upstream: its path `/` is not learnt as a template either.
    assert_eq!(count(&m, "_other", "GET", "400"), 1.0);
    assert_eq!(m.sum("routemeter_inferred_routes", &[]), 0.0);
    assert_eq!(up.served(), 0, "the request never reached the upstream");

    // HTTP/1.0 did not require Host: still forwarded.
    let head = raw_head(&proxy, "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&head), "200", "{head}");
    let m = proxy.metrics_after(2.0).await;
    assert_eq!(count(&m, "/", "GET", "200"), 1.0);
    assert_eq!(m.sum(COUNT, &[]), 2.0);
    assert_eq!(up.served(), 1);
}

/// An endpoint ejected for a long backoff (30 s here) that comes back is served again
/// within a second, not when the backoff ends: the proxy tries to connect to it every
/// 250 ms. The probes that fail while it is down are not requests: the metrics show the one
/// failed attempt that ejected it.
#[tokio::test]
async fn an_ejected_endpoint_that_comes_back_is_served_within_a_second() {
    let live = upstream().await;
    let mut returning = Killable::start(0).await;
    let port = returning.port;
    returning.kill();
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{live}', '127.0.0.1:{port}'], ejectionBase: 30s, ejectionMax: 30s}}\n"
    ))
    .await;
    let http = client();
    for _ in 0..20 {
        let (status, _) = send(http.get(proxy.url("/"))).await;
        assert_eq!(status, 200, "a GET is retried on the live endpoint");
    }
    // Down for a second: every probe in it fails.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = proxy.metrics_after(20.0).await;
    let dead = format!("127.0.0.1:{port}");
    assert_eq!(
        m.sum(CONNECT_ERRORS, &[("endpoint", &dead)]),
        1.0,
        "one failed attempt ejected it; the probes are not counted"
    );
    let back = Killable::start(port).await;
    let returned = Instant::now();
    let served = loop {
        let (status, _) = send(http.get(proxy.url("/"))).await;
        assert_eq!(status, 200);
        if let Some(at) = back.first.get() {
            break at.saturating_duration_since(returned);
        }
        assert!(
            returned.elapsed() < Duration::from_secs(5),
            "the returned endpoint got no request in 5 s (its ejection lasts 30 s)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "served again {:.0} ms after its return",
        served.as_secs_f64() * 1e3
    );
    assert!(
        served <= Duration::from_secs(1),
        "served again only {served:?} after its return"
    );
}

/// HTTP/1.1 pipelining (RFC 9112 §9.3.2): three requests written at once on one
/// connection, one of them with a body, are each forwarded, answered in the order sent and
/// counted once; a fourth after a `Connection: close` request is neither.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_each_counted() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes:\n  - {{path: '/status/{{code}}', methods: [GET]}}\n  - {{path: /headers, methods: [POST]}}\n"
    ))
    .await;
    let request = |line: &str, extra: &str| format!("{line} HTTP/1.1\r\nHost: app\r\n{extra}\r\n");
    let pipelined = [
        request("GET /status/201", ""),
        request("POST /headers", "Content-Length: 5\r\nX-Pipelined: 2\r\n") + "hello",
        request("GET /status/203", "Connection: close\r\n"),
        // After a request that closes the connection: never read.
        request("GET /status/202", ""),
    ]
    .concat();
    let received = raw_exchange(&proxy, &pipelined, |_| false).await;
    let statuses: Vec<&str> = received
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &received[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["201", "200", "203"], "{received}");
    assert!(received.contains("\"x-pipelined\":[\"2\"]"), "{received}");

    let m = proxy.metrics_after(3.0).await;
    assert_eq!(count(&m, "/status/{code}", "GET", "201"), 1.0);
    assert_eq!(count(&m, "/headers", "POST", "200"), 1.0);
    assert_eq!(count(&m, "/status/{code}", "GET", "203"), 1.0);
    assert_eq!(
        m.sum(COUNT, &[]),
        3.0,
        "the request after the close is not counted"
    );
}

/// Idle keep-alive connections cost little memory each: 500 clients that each made a
/// request and keep their connection open add less than 40 KB apiece to the proxy's RSS
/// (measured: 30 KB with the 4 KiB read buffer, 26 KB with none, 88 KB with pingora's default
/// 64 KiB, all in a debug build).
#[tokio::test]
async fn idle_keep_alive_connections_cost_a_bounded_memory_each() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // ROUTEMETER_IDLE_CONNECTIONS=10000 for the figure in bench/README.md.
    let connections: usize = env_or("ROUTEMETER_IDLE_CONNECTIONS", 500);
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nserver: {{workers: 1}}\n"
    ))
    .await;
    let rss = || async {
        proxy
            .metrics()
            .await
            .sum("process_resident_memory_bytes", &[])
    };
    // Warm up the allocator and the upstream pool on connections that are then closed.
    for _ in 0..20 {
        let head = raw_head(
            &proxy,
            "GET /warm HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&head), "200", "{head}");
    }
    let before = rss().await;
    let mut open = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", proxy.listen))
            .await
            .expect("connect to the proxy");
        stream
            .write_all(b"GET /idle HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write the request");
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        // The body (the upstream's port) comes with the head or right after it.
        while !received.windows(4).any(|w| w == b"\r\n\r\n")
            || !received.ends_with(up.port().to_string().as_bytes())
        {
            let n = stream.read(&mut buf).await.expect("read the response");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buf[..n]);
        }
        open.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss().await;
    let per_connection = (after - before) / connections as f64;
    eprintln!(
        "{connections} idle keep-alive connections: RSS {:.1} MB -> {:.1} MB, {:.1} KB each",
        before / 1e6,
        after / 1e6,
        per_connection / 1e3
    );
    assert!(
        per_connection < 40_000.0,
        "{per_connection} bytes per idle connection"
    );
    // They are all still served.
    for stream in open.iter_mut().step_by(50) {
        stream
            .write_all(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write on an idle connection");
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200 "),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

#[tokio::test]
async fn quick_form_flags_and_their_errors() {
    let up = upstream().await;
    let flags = |listen, admin, route: &str| {
        [
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--upstream",
            &up.to_string(),
            "--route",
            route,
        ]
        .map(String::from)
        .to_vec()
    };
    let proxy = Proxy::launch(|listen, admin| {
        let dir = tempfile::tempdir().expect("tempdir");
        (dir, flags(listen, admin, "GET /users/{id}"))
    })
    .await;
    assert_eq!(send(client().get(proxy.url("/users/9"))).await.0, 200);
    let m = proxy.metrics_after(1.0).await;
    assert_eq!(count(&m, "/users/{id}", "GET", "200"), 1.0);
    drop(proxy);

    for (route, named) in [("GET /a/*/b", "/a/*/b"), ("GET users", "GET users")] {
        let args = flags(free_port(), free_port(), route);
        let (status, stderr) = support::run_to_exit(&args, Duration::from_secs(10)).await;
        assert!(!status.success(), "--route {route:?} is refused");
        assert!(
            stderr.contains(named),
            "the error names the route {named:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_busy_listen_address_fails_at_once() {
    // Held for the whole test: the proxy cannot have it. (pingora alone would retry for
    // 30 s, then run on without a traffic listener, /readyz still answering 200.)
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("address").to_string();
    let up = upstream().await.to_string();
    let admin = format!("127.0.0.1:{}", free_port());
    let args = ["--listen", &busy, "--admin", &admin, "--upstream", &up].map(String::from);
    let (status, stderr) = support::run_to_exit(&args, Duration::from_secs(10)).await;
    assert!(!status.success(), "a proxy that cannot listen exits");
    assert!(
        stderr.contains(&format!("cannot listen on {busy}")),
        "the error names the address: {stderr}"
    );
}

#[tokio::test]
async fn a_draining_proxy_tells_keep_alive_clients_to_close() {
    let up = upstream().await;
    let mut proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nserver: {{gracePeriod: 3s}}\n"
    ))
    .await;
    let http = client();
    let before = http.get(proxy.url("/a")).send().await.expect("an answer");
    assert_ne!(
        before
            .headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close"),
        "keep-alive while serving"
    );
    before.text().await.expect("body");
    // A request in flight when SIGTERM comes: its answer says the connection closes.
    let slow = tokio::spawn({
        let http = http.clone();
        let url = proxy.url("/sleep/1000");
        async move { http.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.sigterm();
    let answer = slow.await.expect("join").expect("answered while draining");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer
            .headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close"),
        "{:?}",
        answer.headers()
    );
    assert!(proxy.exit_status(Duration::from_secs(10)).await.success());
}

/// The entry of `route` and `method` in a summary's `routes`.
fn summary_route<'a>(
    summary: &'a serde_json::Value,
    route: &str,
    method: &str,
) -> &'a serde_json::Value {
    summary["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|e| e["route"] == route && e["method"] == method)
        .unwrap_or_else(|| panic!("no {method} {route} in {summary:#}"))
}

#[tokio::test]
async fn the_summary_reports_known_traffic() {
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\n\
         routes: [{{path: /fast}}, {{path: '/sleep/{{ms}}', latencyObjective: 200ms}}, {{path: '/status/{{code}}'}}]\n\
         summary: {{latencyObjective: 1s}}\n"
    ))
    .await;
    get_all(&proxy, (0..100).map(|_| "/fast".to_string()), 8).await;
    get_all(&proxy, (0..20).map(|_| "/sleep/300".to_string()), 20).await;
    let http = client();
    for _ in 0..10 {
        assert_eq!(send(http.get(proxy.url("/status/500"))).await.0, 500);
    }

    let s = proxy.summary_after("1m", 130).await;
    assert_eq!(s["window"], "1m");
    let overall = &s["overall"];
    assert_eq!(overall["errorRatio"], 10.0 / 130.0);
    assert_eq!(overall["clientErrorRatio"], 0.0);
    assert_eq!(overall["inFlight"], 0);
    assert!(overall["rps"].as_f64().expect("rps") > 0.0);
    assert_eq!(s["routes"].as_array().expect("routes").len(), 3, "{s:#}");

    let fast = summary_route(&s, "/fast", "GET");
    assert_eq!(
        (fast["requests"].as_u64(), fast["errorRatio"].as_f64()),
        (Some(100), Some(0.0))
    );
    assert_eq!(fast["status"], "excellent");

    // The buckets are the Prometheus histogram's, request for request.
    let m = proxy.metrics_after(130.0).await;
    let slow = summary_route(&s, "/sleep/{ms}", "GET");
    assert_eq!(slow["requests"], 20);
    let bounds: Vec<f64> = serde_json::from_value(s["bounds"].clone()).expect("bounds");
    let buckets: Vec<u64> = serde_json::from_value(slow["buckets"].clone()).expect("buckets");
    let route = ("http_route", "/sleep/{ms}");
    let mut below = 0.0;
    for (bound, count) in bounds.iter().zip(&buckets) {
        let cumulative = m.sum(BUCKET, &[route, ("le", &bound.to_string())]);
        assert_eq!(cumulative - below, *count as f64, "bucket le={bound}");
        below = cumulative;
    }
    // Slept 300 ms: p95 is in the bucket of the 19th slowest, within its bounds.
    let p95 = slow["p95"].as_f64().expect("p95");
    let rank_bucket = buckets
        .iter()
        .scan(0, |sum, c| {
            *sum += c;
            Some(*sum)
        })
        .position(|cumulative| cumulative >= 19)
        .expect("a bucket holds rank 19");
    let upper = bounds.get(rank_bucket).copied().unwrap_or(f64::INFINITY);
    let lower = if rank_bucket == 0 {
        0.0
    } else {
        bounds[rank_bucket - 1]
    };
    assert!(lower >= 0.25, "300 ms is above 250 ms: {buckets:?}");
    assert!(
        (lower..=upper).contains(&p95),
        "p95 {p95} in ({lower}, {upper}]"
    );
    assert!(slow["mean"].as_f64().expect("mean") >= 0.3);
    // Each route is held to its own objective, the others and overall to the default.
    assert_eq!(slow["latencyObjective"], 0.2);
    assert_eq!(fast["latencyObjective"], 1.0);
    assert_eq!(overall["latencyObjective"], 1.0);
    let about_slow: Vec<&str> = s["recommendations"]
        .as_array()
        .expect("recommendations")
        .iter()
        .filter(|r| r["route"] == "/sleep/{ms}")
        .filter_map(|r| r["message"].as_str())
        .collect();
    assert!(
        about_slow.len() == 1 && about_slow[0].contains("over its 200 ms objective"),
        "{about_slow:?}"
    );

    let failing = summary_route(&s, "/status/{code}", "GET");
    assert_eq!(failing["requests"], 10);
    assert_eq!(failing["errorRatio"], 1.0);
    assert!(
        failing["score"].as_u64().expect("score") < 60,
        "{failing:#}"
    );
    assert_eq!(failing["status"], "poor");
    assert_eq!(s["topByErrors"][0]["route"], "/status/{code}");
    let recommendations = s["recommendations"].as_array().expect("recommendations");
    let about_failing: Vec<&str> = recommendations
        .iter()
        .filter(|r| r["route"] == "/status/{code}" && r["method"] == "GET")
        .filter_map(|r| r["message"].as_str())
        .collect();
    assert_eq!(
        about_failing,
        [
            "GET /status/{code}: 100.0 % of its requests answered 5xx in the last 1m, over the 1.0 % target; see the application's logs for this route"
        ]
    );

    // The longer windows hold the same requests; an unknown window is refused.
    for window in ["5m", "15m", "1h"] {
        let longer = proxy.summary_after(window, 130).await;
        assert_eq!(
            summary_route(&longer, "/status/{code}", "GET")["requests"],
            10
        );
    }
    let (status, body) = proxy.admin("/api/summary?window=2m").await.expect("answer");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("1m, 5m, 15m, 1h"), "{body}");
}

/// Runs `routemeter ARGS`: exit code, stdout, stderr.
fn routemeter(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::BIN)
        .args(args)
        .output()
        .expect("run routemeter");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8");
    (
        out.status.code().expect("exited"),
        text(out.stdout),
        text(out.stderr),
    )
}

/// A summary of 25 requests to `/sleep/{ms}` sleeping `ms`, from a proxy of its own.
async fn summary_of_sleeps(up: std::net::SocketAddr, ms: u64) -> serde_json::Value {
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nroutes: [{{path: '/sleep/{{ms}}'}}]\n"
    ))
    .await;
    get_all(&proxy, (0..25).map(|_| format!("/sleep/{ms}")), 5).await;
    proxy.summary_after("5m", 25).await
}

#[tokio::test]
async fn compare_finds_a_planted_regression_and_passes_an_unchanged_run() {
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let save = |name: &str, value: &serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(value).expect("JSON")).expect("save");
        support::path_arg(&path)
    };
    let base = save("base.json", &summary_of_sleeps(up, 2).await);
    let slower = save("slower.json", &summary_of_sleeps(up, 60).await);

    let (code, out, err) = routemeter(&["compare", "--baseline", &base, "--current", &base]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 regressed of 2 compared"), "{out}");

    let (code, out, err) = routemeter(&["compare", "--baseline", &base, "--current", &slower]);
    assert_eq!(code, 1, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("/sleep/{ms}"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("REGRESSION: mean, p95"), "{out}");

    let (code, out, _) = routemeter(&[
        "compare",
        "--baseline",
        &base,
        "--current",
        &slower,
        "-o",
        "json",
    ]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["regressed"], true);
    assert_eq!(
        report["routes"][1]["regressions"],
        serde_json::json!(["mean", "p95"])
    );

    // Thresholds loose enough let it pass.
    let (code, out, err) = routemeter(&[
        "compare",
        "--baseline",
        &base,
        "--current",
        &slower,
        "--mean-ratio",
        "1000",
        "--p95-ratio",
        "1000",
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // Bad input: exit 2, naming the file and the field.
    let mut broken: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&base).expect("read")).expect("JSON");
    broken["routes"][0]["p95"] = "slow".into();
    let broken = save("broken.json", &broken);
    let (code, _, err) = routemeter(&["compare", "--baseline", &base, "--current", &broken]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("broken.json: routes[0].p95: expected a number"),
        "{err}"
    );
    let missing = support::path_arg(&dir.path().join("missing.json"));
    let (code, _, err) = routemeter(&["compare", "--baseline", &missing, "--current", &base]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot read") && err.contains("missing.json"),
        "{err}"
    );
}

/// The cumulative count of histogram `name` of `route` at `le`.
fn cumulative(m: &Metrics, name: &str, route: &str, le: &str) -> f64 {
    m.sum(name, &[("http_route", route), ("le", le)])
}

#[tokio::test]
async fn pagination_of_known_traffic_gives_known_histograms_and_summary() {
    const REQUESTS: &str = "routemeter_pagination_requests_total";
    const PAGE_SIZE: &str = "routemeter_pagination_page_size";
    const OFFSET: &str = "routemeter_pagination_offset";
    const BY_OFFSET: &str = "routemeter_pagination_request_duration_seconds";
    const BY_SIZE: &str = "routemeter_pagination_request_duration_by_page_size_seconds";
    let up = upstream().await;
    let proxy = Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\n\
         routes:\n\
         \x20 - {{path: /items, methods: [GET], pagination: {{}}}}\n\
         \x20 - {{path: '/sleep/{{ms}}', pagination: {{pageParam: p, sizeParam: 'page[size]', offsetParam: skip}}}}\n\
         \x20 - {{path: /plain}}\n"
    ))
    .await;
    // /items, with the default parameters: (query, requests).
    let items = [
        ("?page=1&limit=20", 10),             // size 20, offset 0
        ("?page=3&limit=50", 6),              // size 50, offset 100
        ("?offset=2000&size=100", 4),         // size 100, offset 2000
        ("?limit=500", 8),                    // size 500, the first page
        ("?page=2", 3),                       // no size: no offset either
        ("", 5),                              // absent
        ("?page=abc&limit=10", 2),            // invalid
        ("?page=0&limit=10", 1),              // invalid: pages are 1-based
        ("?li%6Dit=%32%30&page=4&page=9", 1), // limit=20, the first page=4: offset 60
        ("?limit=10&limit=1000&page=2", 1),   // the first limit: offset 10
    ];
    let paths = items
        .iter()
        .flat_map(|(query, n)| std::iter::repeat_n(format!("/items{query}"), *n));
    get_all(&proxy, paths, 4).await;
    // /sleep/{ms}, with its own names: fast first pages, slow deep ones.
    let sleeps = [
        ("/sleep/1?p=1&page%5Bsize%5D=25", 6),
        ("/sleep/600?skip=5000&page[size]=25", 6),
        ("/sleep/1?skip=99999999999999999999999999&page[size]=25", 1), // saturates
        ("/sleep/1?limit=10", 1),                                      // not its parameter: absent
    ];
    let paths = sleeps
        .iter()
        .flat_map(|(path, n)| std::iter::repeat_n(path.to_string(), *n));
    get_all(&proxy, paths, 8).await;
    get_all(
        &proxy,
        (0..2).map(|_| "/plain?page=2&limit=10".to_string()),
        2,
    )
    .await;

    let m = proxy.metrics_after(57.0).await;
    let outcome = |route: &str, outcome: &str| {
        m.sum(REQUESTS, &[("http_route", route), ("outcome", outcome)])
    };
    assert_eq!(
        [
            outcome("/items", "paginated"),
            outcome("/items", "absent"),
            outcome("/items", "invalid")
        ],
        [33.0, 5.0, 3.0]
    );
    assert_eq!(
        [
            outcome("/sleep/{ms}", "paginated"),
            outcome("/sleep/{ms}", "absent"),
            outcome("/sleep/{ms}", "invalid")
        ],
        [13.0, 1.0, 0.0]
    );
    assert_eq!(
        m.label_values(REQUESTS, "http_route"),
        ["/items", "/sleep/{ms}"].map(String::from).into(),
        "a route without pagination has no pagination series"
    );
    let bucket = |name: &str| format!("{name}_bucket");
    let sizes: Vec<f64> = ["10", "20", "50", "100", "200", "500", "1000", "+Inf"]
        .iter()
        .map(|le| cumulative(&m, &bucket(PAGE_SIZE), "/items", le))
        .collect();
    assert_eq!(sizes, [1.0, 12.0, 18.0, 22.0, 22.0, 30.0, 30.0, 30.0]);
    assert_eq!(
        m.sum(&format!("{PAGE_SIZE}_sum"), &[("http_route", "/items")]),
        4930.0
    );
    let offsets: Vec<f64> = ["0", "99", "999", "9999", "99999", "+Inf"]
        .iter()
        .map(|le| cumulative(&m, &bucket(OFFSET), "/items", le))
        .collect();
    assert_eq!(offsets, [18.0, 20.0, 26.0, 30.0, 30.0, 30.0]);
    assert_eq!(
        m.sum(&format!("{OFFSET}_sum"), &[("http_route", "/items")]),
        8670.0
    );
    let per = |name: &str, label: &str, route: &str, value: &str| {
        m.sum(
            &format!("{name}_count"),
            &[("http_route", route), (label, value)],
        )
    };
    let by_offset: Vec<f64> = [
        "0",
        "1-99",
        "100-999",
        "1000-9999",
        "10000-99999",
        "100000+",
    ]
    .iter()
    .map(|r| per(BY_OFFSET, "offset_range", "/items", r))
    .collect();
    assert_eq!(by_offset, [18.0, 2.0, 6.0, 4.0, 0.0, 0.0]);
    assert_eq!(
        m.label_values(&format!("{BY_OFFSET}_count"), "offset_range"),
        ["0", "1-99", "100-999", "1000-9999", "100000+"]
            .map(String::from)
            .into(),
        "only the ranges requested have series"
    );
    let by_size: Vec<f64> = ["0-10", "11-20", "21-50", "51-100", "101-200", "201-500"]
        .iter()
        .map(|r| per(BY_SIZE, "page_size_range", "/items", r))
        .collect();
    assert_eq!(by_size, [1.0, 11.0, 6.0, 4.0, 0.0, 8.0]);
    assert_eq!(
        m.sum(&format!("{OFFSET}_sum"), &[("http_route", "/sleep/{ms}")]),
        30_000.0 + 4_294_967_295.0,
        "a huge offset saturates at 2^32 - 1"
    );

    // The summary: the same figures, and the buckets of the histograms.
    let s = proxy.summary_after("1m", 57).await;
    let items = summary_route(&s, "/items", "GET");
    assert_eq!(items["requests"], 41);
    let p = &items["pagination"];
    assert_eq!(
        (&p["paginated"], &p["absent"], &p["invalid"]),
        (
            &serde_json::json!(33),
            &serde_json::json!(5),
            &serde_json::json!(3)
        )
    );
    assert_eq!(
        p["pageSize"],
        serde_json::json!({
            "requests": 30, "mean": 4930.0 / 30.0, "p50": 50, "p95": 500, "p99": 500,
            "bounds": [10, 20, 50, 100, 200, 500, 1000], "buckets": [1, 11, 6, 4, 0, 8, 0, 0],
        })
    );
    assert_eq!(
        p["offset"],
        serde_json::json!({
            "requests": 30, "mean": 289.0, "p50": 0, "p95": 9999, "p99": 9999,
            "bounds": [0, 99, 999, 9999, 99999], "buckets": [18, 2, 6, 4, 0, 0],
        })
    );
    let ranges: Vec<(String, u64)> = p["offsetRanges"]
        .as_array()
        .expect("offsetRanges")
        .iter()
        .map(|r| {
            (
                r["range"].as_str().expect("range").to_string(),
                r["requests"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        ranges,
        [
            ("0", 18),
            ("1-99", 2),
            ("100-999", 6),
            ("1000-9999", 4),
            ("10000-99999", 0),
            ("100000+", 0)
        ]
        .map(|(r, n)| (r.to_string(), n))
    );
    let sleep = summary_route(&s, "/sleep/{ms}", "GET");
    let p = &sleep["pagination"];
    assert_eq!(
        (&p["paginated"], &p["absent"]),
        (&serde_json::json!(13), &serde_json::json!(1))
    );
    assert_eq!(
        p["pageSize"]["buckets"],
        serde_json::json!([0, 0, 13, 0, 0, 0, 0, 0])
    );
    assert_eq!(p["pageSize"]["mean"], 25.0);
    assert_eq!(
        p["offset"]["buckets"],
        serde_json::json!([6, 0, 0, 6, 0, 1])
    );
    assert_eq!(p["offset"]["mean"], 4_294_997_295.0 / 13.0);
    assert_eq!(
        (&p["offset"]["p50"], &p["offset"]["p95"]),
        (&serde_json::json!(9999), &serde_json::json!(99999))
    );
    assert!(
        summary_route(&s, "/plain", "GET")
            .get("pagination")
            .is_none()
    );
    assert!(s["overall"].get("pagination").is_none());

    // Each offset range's latency buckets are its Prometheus histogram's, request for
    // request; the 600 ms deep pages are above 500 ms.
    let bounds: Vec<f64> = serde_json::from_value(s["bounds"].clone()).expect("bounds");
    let mut deep = vec![0u64; bounds.len() + 1];
    for (i, range) in p["offsetRanges"]
        .as_array()
        .expect("ranges")
        .iter()
        .enumerate()
    {
        let name = range["range"].as_str().expect("range");
        let buckets: Vec<u64> = serde_json::from_value(range["buckets"].clone()).expect("buckets");
        let mut below = 0.0;
        for (bound, count) in bounds.iter().zip(&buckets) {
            let at = m.sum(
                &bucket(BY_OFFSET),
                &[
                    ("http_route", "/sleep/{ms}"),
                    ("offset_range", name),
                    ("le", &bound.to_string()),
                ],
            );
            assert_eq!(at - below, *count as f64, "{name} le={bound}");
            below = at;
        }
        if i >= 3 {
            for (d, b) in deep.iter_mut().zip(&buckets) {
                *d += b;
            }
        }
    }
    let slow = &p["offsetRanges"][3];
    assert_eq!(slow["requests"], 6);
    assert!(slow["p50"].as_f64().expect("p50") > 0.5, "{slow}");
    assert!(slow["mean"].as_f64().expect("mean") >= 0.6, "{slow}");

    // The recommendations say what the figures say.
    let about = |route: &str| -> Vec<String> {
        s["recommendations"]
            .as_array()
            .expect("recommendations")
            .iter()
            .filter(|r| r["route"] == route)
            .filter_map(|r| r["message"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        about("/items"),
        [
            "GET /items: 26.7 % of the requests giving a page size ask for more than 100 items in the last 1m; large pages are slow to build and to send: lower the largest page size it allows"
        ]
    );
    use routemeter::summary::score::seconds;
    let deep_p95 = routemeter::summary::window::quantile(0.95, &bounds, &deep).expect("deep");
    let first_p95 = p["offsetRanges"][0]["p95"].as_f64().expect("first page");
    let expected = format!(
        "GET /sleep/{{ms}}: p95 {} at offsets of 1000 and more in the last 1m, over its 500 ms objective (the first page: {}); an OFFSET query reads every row it skips: paginate with a cursor (keyset) instead, or cap the offset",
        seconds(deep_p95),
        seconds(first_p95)
    );
    assert!(
        about("/sleep/{ms}").contains(&expected),
        "{:#?}",
        about("/sleep/{ms}")
    );
}

/// Failures are never counted as successes (docs/rules.md, "What counts as an error"):
/// an answer the upstream cuts off after a 200 head, closing or resetting the
/// connection, is recorded as the client saw it (200) with `error_type="upstream_reset"`,
/// and the summary counts it as an error; a client that leaves before its answer is
/// recorded as 499 `client_aborted`, a client error, not the service's.
#[tokio::test]
async fn answers_cut_off_mid_body_count_as_errors_and_clients_that_leave_do_not() {
    use tokio::io::AsyncWriteExt;
    let closes = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b")
            .await;
        // Closed mid-body: 10 bytes of 1000.
    })
    .await;
    let resets = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await;
        let _ = s.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // SO_LINGER 0: the close is a reset, right after the head.
        let _ = s.set_zero_linger();
    })
    .await;
    let slow = raw_upstream(|mut s| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
    })
    .await;
    let fine = upstream().await;
    for (up, path) in [
        (closes, "/closes"),
        (resets, "/resets"),
        (slow, "/slow"),
        (fine, "/fine"),
    ] {
        let proxy = Proxy::start(&format!(
            "upstream: {{endpoints: ['{up}']}}\nroutes: [{{path: {path}}}]\n"
        ))
        .await;
        match path {
            "/slow" => {
                // The client gives up after 200 ms.
                let r = client()
                    .get(proxy.url(path))
                    .timeout(Duration::from_millis(200))
                    .send()
                    .await;
                assert!(r.is_err(), "the client left before the answer");
            }
            _ => {
                let r = client().get(proxy.url(path)).send().await.expect("a head");
                assert_eq!(r.status(), 200, "{path}: the head the client got");
                let body = r.bytes().await;
                if path == "/fine" {
                    body.expect("a whole body");
                } else {
                    assert!(body.is_err(), "{path}: the body is cut off");
                }
            }
        }
        let m = proxy.metrics_after(1.0).await;
        let (status, error_type) = match path {
            "/closes" | "/resets" => ("200", "upstream_reset"),
            "/slow" => ("499", "client_aborted"),
            _ => ("200", ""),
        };
        assert_eq!(
            m.sum(
                COUNT,
                &[
                    ("http_route", path),
                    ("http_response_status_code", status),
                    ("error_type", error_type)
                ]
            ),
            1.0,
            "{path}: recorded as {status} {error_type:?}: {:?}",
            m.label_values(COUNT, "error_type")
        );
        let (_, body) = proxy
            .admin("/api/summary?window=1m")
            .await
            .expect("/api/summary");
        let summary: routemeter::summary::Summary = serde_json::from_str(&body).expect("a summary");
        let route = summary
            .routes
            .iter()
            .find(|e| e.route == path)
            .unwrap_or_else(|| panic!("{path} in {body}"));
        let expected = match path {
            "/closes" | "/resets" => (Some(1.0), Some(0.0)),
            "/slow" => (Some(0.0), Some(1.0)),
            _ => (Some(0.0), Some(0.0)),
        };
        assert_eq!(
            (route.error_ratio, route.client_error_ratio),
            expected,
            "{path}: (error ratio, client error ratio)"
        );
    }
}

/// The number in environment variable `name`, or `default` when it is unset; a value
/// that is not a number is an error naming the variable.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The `i`-th hostile path: what scanners and fuzzers send. Every one is distinct.
fn hostile_path(i: usize) -> String {
    let w = word(i);
    match i % 10 {
        0 => format!("/wp-content/plugins/{w}/readme.txt"),
        1 => format!("/..%2f..%2f{w}/etc/passwd"),
        2 => format!("/a/%2e%2e/%2E%2e/{w}"),
        // Segments of 64 bytes and more are ID-like: one template for all of them.
        3 => format!("/files/{}{w}", "x".repeat(64 + i % 3000)),
        // Invalid UTF-8 once decoded.
        4 => format!("/%ff%fe%{:02x}/{w}", i % 256),
        // Deeper than inference goes: `_other`.
        5 => format!("/{}{w}", "s/".repeat(30)),
        6 => format!("/.env.{w}"),
        7 => format!("/{w}?q=%00%ff&x={i}"),
        8 => format!("//{w}//x/"),
        _ => format!("/api%2F{w}/%c3%28"),
    }
}

/// Reads one response from `stream` (its head, then `Content-Length` bytes of body):
/// the status, and whether the proxy said it closes the connection.
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(u16, bool)> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let close = head
        .lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"));
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + length);
    Some((status, close))
}

/// Hostile paths for `ROUTEMETER_SOAK_SECONDS` (60 by default, and at least 100,000
/// distinct paths; the note's figure is a 600 s run), from eight keep-alive clients, to an
/// application answering 200 to anything so that inference is pressed to its cap: the
/// labels stay within the cap, none is longer than the documented bound, every request is
/// counted, and the proxy's RSS stays flat once the cap is reached (sampled every 10 s,
/// printed).
#[tokio::test]
async fn hostile_paths_leave_bounded_labels_and_flat_memory() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    const MIN_PATHS: usize = 100_000;
    /// The longest inferred label: 16 segments of under 64 bytes (README, Routes).
    const MAX_LABEL: usize = 16 * 64;
    let seconds: u64 = env_or("ROUTEMETER_SOAK_SECONDS", 60);
    let up = upstream().await;
    let proxy = Proxy::start(&format!("upstream: {{endpoints: ['{up}']}}\n")).await;
    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let port = proxy.listen;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (next, answered, stop) = (next.clone(), answered.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = HashMap::<u16, usize>::new();
                'connection: while !stop.load(Ordering::Relaxed) {
                    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .expect("connect to the proxy");
                    let mut buf = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let request =
                            format!("GET {} HTTP/1.1\r\nHost: a\r\n\r\n", hostile_path(i));
                        if stream.write_all(request.as_bytes()).await.is_err() {
                            panic!("the proxy closed a connection unasked, at path {i}");
                        }
                        let (status, close) = read_response(&mut stream, &mut buf)
                            .await
                            .unwrap_or_else(|| panic!("no answer to {:?}", hostile_path(i)));
                        *statuses.entry(status).or_default() += 1;
                        answered.fetch_add(1, Ordering::Relaxed);
                        if close {
                            continue 'connection;
                        }
                    }
                }
                statuses
            })
        })
        .collect();
    let rss = || async {
        proxy
            .metrics()
            .await
            .sum("process_resident_memory_bytes", &[])
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let deadline = Duration::from_secs(seconds);
    let limit = deadline + Duration::from_secs(240);
    while (started.elapsed() < deadline || answered.load(Ordering::Relaxed) < MIN_PATHS)
        && started.elapsed() < limit
    {
        tokio::time::sleep(Duration::from_secs(10)).await;
        samples.push((
            started.elapsed().as_secs(),
            answered.load(Ordering::Relaxed),
            rss().await,
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let mut statuses = HashMap::<u16, usize>::new();
    for client in clients {
        for (status, n) in client.await.expect("a client") {
            *statuses.entry(status).or_default() += n;
        }
    }
    let total = answered.load(Ordering::Relaxed);
    eprintln!(
        "{total} hostile paths in {:.0} s, answers {statuses:?}",
        started.elapsed().as_secs_f64()
    );
    for (at, n, bytes) in &samples {
        eprintln!("  {at:>4} s  {n:>8} answered  RSS {:.1} MB", bytes / 1e6);
    }
    assert!(
        total >= MIN_PATHS,
        "only {total} paths answered in {limit:?}"
    );

    let m = proxy.metrics_after(total as f64).await;
    assert_eq!(
        m.sum(COUNT, &[]),
        total as f64,
        "every request counted once"
    );
    let routes = m.label_values(COUNT, "http_route");
    assert!(
        routes.len() <= 100 + 1,
        "{} labels: more than the cap and _other",
        routes.len()
    );
    assert!(routes.contains("_other"), "{routes:?}");
    let longest = routes.iter().map(String::len).max().unwrap_or(0);
    assert!(longest <= MAX_LABEL, "a label of {longest} bytes");
    // Flat: from the third sample on (the cap long reached), RSS grows by at most 10 %
    // and 4 MB, though the requests go on.
    let settled = samples[2].2;
    let last = samples.last().expect("samples").2;
    assert!(
        last <= settled * 1.10 + 4e6,
        "RSS {:.1} MB after {:.1} MB",
        last / 1e6,
        settled / 1e6
    );
}

/// A minimal HTTP/1.1 upstream that can be killed outright: every connection's task is
/// aborted with it (an axum server would keep serving its open connections). `GET
/// /s/{code}/...` answers that status, `/slow/...` answers 200 after 40 ms (so a kill
/// finds requests in flight), anything else 200 at once; each body is the port.
struct Killable {
    port: u16,
    /// Its accept loop, which owns every connection's task.
    task: tokio::task::JoinHandle<()>,
    /// When it answered its first request.
    first: std::sync::Arc<std::sync::OnceLock<Instant>>,
}

impl Killable {
    async fn start(port: u16) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind a killable upstream");
        let port = listener.local_addr().expect("address").port();
        let mut connections = tokio::task::JoinSet::new();
        let first = std::sync::Arc::new(std::sync::OnceLock::new());
        let answered = first.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut s, _)) = accepted else { continue };
                        let answered = answered.clone();
                        connections.spawn(async move {
                            let mut buf = Vec::new();
                            let mut chunk = [0u8; 4096];
                            loop {
                                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                                    match s.read(&mut chunk).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                    }
                                    continue;
                                };
                                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                                buf.drain(..end + 4);
                                let path = head.split(' ').nth(1).unwrap_or("/");
                                let code = path
                                    .strip_prefix("/s/")
                                    .and_then(|r| r.get(..3))
                                    .and_then(|c| c.parse::<u16>().ok())
                                    .unwrap_or(200);
                                if path.starts_with("/slow/") {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                let body = port.to_string();
                                let answer = format!(
                                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                if s.write_all(answer.as_bytes()).await.is_err() {
                                    return;
                                }
                                let _ = answered.set(Instant::now());
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Killable { port, task, first }
    }

    /// Kills it: the listener and every connection go at once (the connections'
    /// `JoinSet` goes with the accept loop).
    fn kill(&mut self) {
        self.task.abort();
    }
}

/// Counting under faults: keep-alive clients send `ROUTEMETER_FAULT_REQUESTS` requests
/// (60,000 by default; the note's figure is 1,000,000) over four routes (one answering
/// after 20 ms, so kills find requests in flight) and three upstream endpoints, while
/// every 1.5 s an endpoint is killed (its open connections cut) and started again 0.7 s
/// later, every fourth time all three at once (the proxy has nowhere to send: 502s), and
/// the config is reloaded every 2 s. The proxy's count per route and status equals the
/// clients' exactly, the 502s included; no request goes unanswered; and each endpoint
/// answers its first request again within 1 s of its return, with the default ejection
/// backoff (1 s doubling up to 10 s): the proxy probes ejected endpoints every 250 ms and
/// ends an ejection at the first connection (README "Load balancing").
#[tokio::test]
async fn counts_stay_exact_while_endpoints_die_and_the_config_reloads() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let total: usize = env_or("ROUTEMETER_FAULT_REQUESTS", 60_000);
    let mut ends = Vec::new();
    for _ in 0..3 {
        ends.push(Killable::start(0).await);
    }
    let endpoints: Vec<String> = ends
        .iter()
        .map(|e| format!("'127.0.0.1:{}'", e.port))
        .collect();
    let config = |via: bool| {
        format!(
            "upstream: {{endpoints: [{}]}}\n\
             routes: [{{path: '/users/{{id}}'}}, {{path: '/s/{{code}}/{{id}}'}}, {{path: '/static/*'}}, {{path: '/slow/{{id}}'}}]\n\
             server: {{reloadInterval: 100ms}}\nforwarding: {{via: {via}}}\n",
            endpoints.join(", ")
        )
    };
    let proxy = Proxy::start(&config(false)).await;

    let next = Arc::new(AtomicUsize::new(0));
    let port = proxy.listen;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut tally = BTreeMap::<(&'static str, u16), u64>::new();
                let mut buf = Vec::new();
                let mut stream = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return tally;
                    }
                    let (route, path) = match i % 10 {
                        0..=4 => ("/users/{id}", format!("/users/{i}")),
                        5 | 6 => ("/static/*", format!("/static/app-{}.js", i % 50)),
                        7 | 8 => ("/s/{code}/{id}", format!("/s/500/{i}")),
                        _ => ("/slow/{id}", format!("/slow/{i}")),
                    };
                    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
                    // A connection the proxy closed after an answer is opened again; a
                    // request is never sent twice.
                    if stream.is_none() {
                        buf.clear();
                        stream = Some(
                            tokio::net::TcpStream::connect(("127.0.0.1", port))
                                .await
                                .expect("connect to the proxy"),
                        );
                    }
                    let s = stream.as_mut().expect("a connection");
                    s.write_all(request.as_bytes())
                        .await
                        .expect("send a request");
                    let (status, close) = read_response(s, &mut buf)
                        .await
                        .unwrap_or_else(|| panic!("request {i} ({path}) got no answer"));
                    *tally.entry((route, status)).or_default() += 1;
                    if close {
                        stream = None;
                    }
                }
            })
        })
        .collect();

    // Faults until the clients are done.
    let started = Instant::now();
    let mut kills = 0;
    let mut reloads = 0;
    let mut worst_recovery = Duration::ZERO;
    let mut last_reload = Instant::now();
    let mut victim = 0;
    let mut tally = BTreeMap::<(&'static str, u16), u64>::new();
    while next.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(800)).await;
        if next.load(Ordering::Relaxed) >= total {
            break;
        }
        let all = kills % 4 == 3;
        let victims: Vec<usize> = if all {
            (0..ends.len()).collect()
        } else {
            vec![victim]
        };
        for &v in &victims {
            ends[v].kill();
        }
        kills += 1;
        tokio::time::sleep(Duration::from_millis(if all { 300 } else { 700 })).await;
        for &v in &victims {
            let p = ends[v].port;
            ends[v] = Killable::start(p).await;
        }
        let back = Instant::now();
        // Served again: the first request an endpoint answers after its return, which
        // the clients' traffic brings once the proxy stops ejecting it.
        for &v in &victims {
            let served = loop {
                if let Some(at) = ends[v].first.get() {
                    break at.saturating_duration_since(back);
                }
                assert!(
                    back.elapsed() < Duration::from_secs(5)
                        || next.load(Ordering::Relaxed) >= total,
                    "endpoint {} not served 5 s after its return",
                    ends[v].port
                );
                if next.load(Ordering::Relaxed) >= total {
                    break Duration::ZERO;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            worst_recovery = worst_recovery.max(served);
        }
        victim = (victim + 1) % ends.len();
        if last_reload.elapsed() >= Duration::from_secs(2) {
            let file = proxy.dir().join("config.yaml");
            let tmp = proxy.dir().join("config.yaml.next");
            let text = support::config_yaml(proxy.listen, proxy.admin, &config(reloads % 2 == 0));
            std::fs::write(&tmp, text).expect("write the next config");
            std::fs::rename(&tmp, &file).expect("swap the config");
            reloads += 1;
            last_reload = Instant::now();
        }
    }
    for client in clients {
        for (key, n) in client.await.expect("a client") {
            *tally.entry(key).or_default() += n;
        }
    }
    let took = started.elapsed();
    let sent: u64 = tally.values().sum();
    eprintln!(
        "{sent} requests in {:.1} s under {kills} endpoint kills and {reloads} reloads; \
         by route and status {tally:?}; worst recovery {:.0} ms",
        took.as_secs_f64(),
        worst_recovery.as_secs_f64() * 1e3
    );
    assert!(
        kills >= 4 && reloads >= 1,
        "{kills} kills and {reloads} reloads only"
    );
    let failed: u64 = tally
        .iter()
        .filter(|((_, s), _)| *s >= 502)
        .map(|(_, n)| n)
        .sum();
    assert!(
        failed > 0,
        "no request failed while every endpoint was down: {tally:?}"
    );
    let m = proxy.metrics_after(sent as f64).await;
    assert_eq!(
        m.sum(COUNT, &[]),
        sent as f64,
        "the proxy counted other requests"
    );
    for ((route, status), n) in &tally {
        let status = status.to_string();
        let counted = m.sum(
            COUNT,
            &[
                ("http_route", route),
                ("http_response_status_code", &status),
            ],
        );
        assert_eq!(
            counted, *n as f64,
            "{route} {status}: the proxy counted {counted}, the clients saw {n}"
        );
    }
    assert!(
        worst_recovery <= Duration::from_secs(1),
        "an endpoint served again only {worst_recovery:?} after its return"
    );
}
