//! The proxy following a Service's EndpointSlices on the real API server
//! (`make cluster-up`), and falling back to its DNS `endpoints` without it.
//!
//! The slices are written by hand, for a Service that does not exist (so no controller
//! writes slices of that name) and with a `managed-by` label of ours (so the EndpointSlice
//! controllers leave them alone). The API refuses loopback addresses in a slice, so the
//! upstreams listen, in this process, on the machine's own addresses (the node's bridge,
//! the main interface), all on one port as the slices' addresses share the proxy's port.

mod cluster_support;
mod common;
#[allow(dead_code)]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_support::{CLUSTER_WIDE, client, delete_namespace, kubeconfig_path, namespace};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use support::{Proxy, config_yaml, named_upstream_on, upstream, wait_for};

/// The bound on applying a slice change: the proxy aims at 1 s, on a loaded machine.
const APPLY_BOUND: Duration = Duration::from_secs(3);

/// Longest a request answered 503 for want of an endpoint may take.
const NO_ENDPOINT_BOUND: Duration = Duration::from_millis(500);

/// The field manager of the slices the tests write.
const MANAGER: &str = "routemeter-tests";

/// What a test sets in an endpoint's `conditions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Ready,
    NotReady,
    /// Shutting down, still serving its requests (ready false, serving true).
    Terminating,
}

impl Condition {
    fn json(self) -> serde_json::Value {
        let (ready, serving, terminating) = match self {
            Condition::Ready => (true, true, false),
            Condition::NotReady => (false, false, false),
            Condition::Terminating => (false, true, true),
        };
        json!({ "ready": ready, "serving": serving, "terminating": terminating })
    }
}

/// This machine's own unicast addresses that a slice accepts (neither loopback nor
/// link-local): IPv4 from the kernel's local routes, then global IPv6.
fn own_addresses() -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let mut last: Option<Ipv4Addr> = None;
    for line in trie.lines() {
        let line = line.trim_start_matches([' ', '|', '-', '+']).trim();
        if let Ok(ip) = line.parse::<Ipv4Addr>() {
            last = Some(ip);
        } else if line.starts_with("/32 host LOCAL")
            && let Some(ip) = last
            && !ip.is_loopback()
            && !ip.is_link_local()
            && !found.contains(&IpAddr::V4(ip))
        {
            found.push(IpAddr::V4(ip));
        }
    }
    let inet6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    for line in inet6.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(hex), Some(scope), Some(flags)) = (fields.first(), fields.get(3), fields.get(4))
        else {
            continue;
        };
        // Global scope, neither tentative (0x40) nor failed duplicate detection (0x08).
        let usable = *scope == "00" && u8::from_str_radix(flags, 16).is_ok_and(|f| f & 0x48 == 0);
        if let (true, Ok(bits)) = (usable, u128::from_str_radix(hex, 16)) {
            found.push(IpAddr::V6(Ipv6Addr::from(bits)));
        }
    }
    found
}

/// Upstreams on `count` of this machine's addresses, on one port; each answers its address.
async fn upstreams_on_own_addresses(count: usize) -> (Vec<IpAddr>, u16) {
    let mut ips = own_addresses();
    ips.truncate(count);
    assert!(
        ips.len() >= 2,
        "the test needs two addresses of this machine that an EndpointSlice accepts (not loopback), found {ips:?}"
    );
    for _ in 0..10 {
        let first = tokio::net::TcpListener::bind(SocketAddr::new(ips[0], 0))
            .await
            .expect("bind an upstream");
        let port = first.local_addr().expect("address").port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match tokio::net::TcpListener::bind(SocketAddr::new(*ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => break, // the port is taken there: another one
            }
        }
        if listeners.len() == ips.len() {
            for (listener, ip) in listeners.into_iter().zip(&ips) {
                named_upstream_on(listener, ip.to_string()).await;
            }
            eprintln!("upstreams on {ips:?}, port {port}");
            return (ips, port);
        }
    }
    panic!("no port free on every one of {ips:?}");
}

/// Writes the slices of `service`: one per address family, each endpoint as given.
async fn apply_slices(
    slices: &Api<EndpointSlice>,
    service: &str,
    port: u16,
    endpoints: &[(IpAddr, Condition)],
) {
    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
        let of_family: Vec<serde_json::Value> = endpoints
            .iter()
            .filter(|(ip, _)| ip.is_ipv6() == v6)
            .map(|(ip, c)| json!({ "addresses": [ip.to_string()], "conditions": c.json() }))
            .collect();
        if of_family.is_empty() {
            continue;
        }
        let name = format!("{service}-{}", family.to_lowercase());
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": MANAGER,
                },
            },
            "addressType": family,
            "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
            "endpoints": of_family,
        });
        slices
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&slice),
            )
            .await
            .expect("apply an EndpointSlice");
    }
}

/// Every endpoint in `condition`.
fn all(ips: &[IpAddr], condition: Condition) -> Vec<(IpAddr, Condition)> {
    ips.iter().map(|ip| (*ip, condition)).collect()
}

/// The proxy's config: the fallback `endpoints`, then the slices of `service`.
fn config(fallback: SocketAddr, ns: &str, service: &str, port: u16) -> String {
    format!(
        "upstream:\n  endpoints: ['{fallback}']\n  endpointSlices: {{namespace: {ns}, service: {service}, port: {port}}}\n\
         routes: [{{path: '/sleep/{{ms}}'}}]\n"
    )
}

/// Sends GETs to `/` one after another until 20 answers in a row pass `ok`; returns the
/// time from `since` to the sending of the first of them (0 when the first request after
/// `since` passed already). Fails after `timeout`.
async fn settle(
    proxy: &Proxy,
    since: Instant,
    timeout: Duration,
    what: &str,
    ok: impl Fn(u16, &str) -> bool,
) -> Duration {
    const STREAK: usize = 20;
    let http = support::client();
    let mut first_good: Option<Instant> = None;
    let mut good = 0;
    loop {
        let sent = Instant::now();
        let (status, body) = support::send(http.get(proxy.url("/"))).await;
        if ok(status, &body) {
            first_good.get_or_insert(sent);
            good += 1;
            if good == STREAK {
                return first_good.map_or(Duration::ZERO, |t| t.duration_since(since));
            }
        } else {
            (first_good, good) = (None, 0);
        }
        assert!(
            since.elapsed() < timeout,
            "not {what} within {timeout:?}: last answer {status} {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Which upstream answered each of `n` GETs to `/`.
async fn spread(proxy: &Proxy, n: usize) -> HashMap<String, usize> {
    let http = support::client();
    let mut per_upstream = HashMap::new();
    for _ in 0..n {
        let (status, body) = support::send(http.get(proxy.url("/"))).await;
        assert_eq!(status, 200, "{body}");
        *per_upstream.entry(body).or_default() += 1;
    }
    per_upstream
}

fn names(ips: &[IpAddr]) -> BTreeSet<String> {
    ips.iter().map(IpAddr::to_string).collect()
}

#[tokio::test]
async fn follows_ready_endpoints_of_the_slices() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "eps").await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let (ips, port) = upstreams_on_own_addresses(3).await;
    let fallback = upstream().await;
    apply_slices(&slices, "api", port, &all(&ips, Condition::Ready)).await;

    let kubeconfig = kubeconfig_path();
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path"))];
    let proxy = Proxy::start_with_env(&env, &config(fallback, &ns, "api", port)).await;
    let everyone = names(&ips);
    let listed = settle(
        &proxy,
        Instant::now(),
        Duration::from_secs(15),
        "served by the slices",
        |status, body| status == 200 && everyone.contains(body),
    )
    .await;
    eprintln!("served from the EndpointSlices {listed:?} after ready");
    let per_upstream = spread(&proxy, 30).await;
    assert_eq!(
        per_upstream.keys().cloned().collect::<BTreeSet<_>>(),
        everyone,
        "round robin over every ready endpoint, never the fallback: {per_upstream:?}"
    );
    let m = proxy.metrics().await;
    let gauge = "routemeter_upstream_endpoints";
    assert_eq!(
        m.sum(gauge, &[("source", "endpointslices")]),
        ips.len() as f64
    );
    assert_eq!(m.sum(gauge, &[("source", "dns")]), 0.0);
    assert_eq!(proxy.readyz().await, Some(200));

    // One endpoint not ready: no more traffic to it.
    let (kept, dropped) = (&ips[..ips.len() - 1], ips[ips.len() - 1]);
    let mut states: Vec<_> = all(kept, Condition::Ready);
    states.push((dropped, Condition::NotReady));
    let updated = Instant::now();
    apply_slices(&slices, "api", port, &states).await;
    let dropped_name = dropped.to_string();
    let gone = settle(
        &proxy,
        updated,
        APPLY_BOUND,
        "rid of the endpoint not ready",
        |status, body| status == 200 && body != dropped_name,
    )
    .await;
    eprintln!(
        "an endpoint marked not ready got its last request {gone:?} after the patch was sent"
    );
    assert!(gone < APPLY_BOUND, "{gone:?}");

    // One endpoint terminating while slow requests run on it: they finish, no new one.
    let http = support::client();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let request = http.get(proxy.url("/sleep/3000"));
            tokio::spawn(async move {
                let response = request.send().await.expect("an answer");
                let upstream = response
                    .headers()
                    .get("x-upstream")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let status = response.status().as_u16();
                (status, upstream, response.text().await.unwrap_or_default())
            })
        })
        .collect();
    proxy
        .wait_for_metric("http_server_active_requests", &[], 4.0)
        .await;
    // The one marked not ready comes back meanwhile, so some endpoint is left.
    let terminating = ips[0];
    let mut states: Vec<_> = all(&ips[1..], Condition::Ready);
    states.push((terminating, Condition::Terminating));
    let updated = Instant::now();
    apply_slices(&slices, "api", port, &states).await;
    let terminating_name = terminating.to_string();
    let gone = settle(
        &proxy,
        updated,
        APPLY_BOUND,
        "rid of the terminating endpoint",
        |status, body| status == 200 && body != terminating_name,
    )
    .await;
    eprintln!("a terminating endpoint got its last new request {gone:?} after the patch was sent");
    let mut finished_on_terminating = 0;
    for request in slow {
        let (status, upstream, body) = request.await.expect("the slow request");
        assert_eq!((status, body.as_str()), (200, "slept"), "on {upstream}");
        finished_on_terminating += usize::from(upstream == terminating_name);
    }
    assert!(
        finished_on_terminating > 0,
        "a slow request in flight on the terminating endpoint finished"
    );

    // No endpoint ready: 503 at once.
    let updated = Instant::now();
    apply_slices(&slices, "api", port, &all(&ips, Condition::NotReady)).await;
    let empty = settle(
        &proxy,
        updated,
        APPLY_BOUND,
        "answered 503 with no ready endpoint",
        |status, _| status == 503,
    )
    .await;
    eprintln!("no ready endpoint: 503 from {empty:?} after the patch was sent");
    let http = support::client();
    for _ in 0..10 {
        let sent = Instant::now();
        let (status, _) = support::send(http.get(proxy.url("/"))).await;
        let took = sent.elapsed();
        assert_eq!(status, 503);
        assert!(took < NO_ENDPOINT_BOUND, "a 503 took {took:?}");
    }
    let m = proxy.metrics().await;
    assert!(
        m.sum(
            support::REQUEST_COUNT,
            &[("error_type", "no_healthy_upstream")]
        ) >= 10.0
    );
    assert_eq!(
        proxy.readyz().await,
        Some(200),
        "still ready, answering 503"
    );

    // Back.
    let updated = Instant::now();
    apply_slices(&slices, "api", port, &all(&ips, Condition::Ready)).await;
    let back = settle(
        &proxy,
        updated,
        APPLY_BOUND,
        "served again",
        |status, body| status == 200 && everyone.contains(body),
    )
    .await;
    eprintln!("endpoints ready again: served {back:?} after the patch was sent");
    assert_eq!(spread(&proxy, 30).await.len(), ips.len());

    // Every slice deleted (the Service is gone): the proxy keeps its last endpoints rather
    // than answering 503, as the proxies of a deleted MonitoredService must for the few
    // seconds they outlive their upstream Service.
    slices
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("kubernetes.io/service-name=api"),
        )
        .await
        .expect("delete the slices");
    let deadline = Instant::now() + APPLY_BOUND;
    while !proxy.log().contains("has no EndpointSlice left") {
        assert!(
            Instant::now() < deadline,
            "the deletion of the last slice was not seen within {APPLY_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slices go one by one (one per address family here), so what is kept is the set
    // of the last slice to go: every answer 200, from endpoints that were listed.
    let kept = spread(&proxy, 30).await;
    assert!(
        kept.keys().all(|k| everyone.contains(k)),
        "the last endpoints kept: {kept:?}"
    );

    // A reload naming another Service watches its slices instead.
    apply_slices(&slices, "other", port, &[(ips[0], Condition::Ready)]).await;
    let file = proxy.dir().join("config.yaml");
    rewrite_config(&proxy, &file, &config(fallback, &ns, "other", port));
    let only = ips[0].to_string();
    settle(
        &proxy,
        Instant::now(),
        Duration::from_secs(10),
        "served by the other Service's slices",
        |status, body| status == 200 && body == only,
    )
    .await;

    // A reload without endpointSlices goes back to DNS (here, the literal fallback).
    rewrite_config(
        &proxy,
        &file,
        &format!("upstream: {{endpoints: ['{fallback}']}}\n"),
    );
    let fallback_name = fallback.port().to_string();
    settle(
        &proxy,
        Instant::now(),
        Duration::from_secs(10),
        "served by the DNS endpoints",
        |status, body| status == 200 && body == fallback_name,
    )
    .await;
    let m = proxy.metrics().await;
    assert_eq!(
        m.sum("routemeter_upstream_endpoints", &[("source", "dns")]),
        1.0
    );
    assert_eq!(
        m.sum(
            "routemeter_upstream_endpoints",
            &[("source", "endpointslices")]
        ),
        0.0
    );
    assert_eq!(
        m.sum(
            "routemeter_upstream_discovery_errors_total",
            &[("source", "endpointslices")]
        ),
        0.0
    );
    delete_namespace(&client, &ns).await;
}

/// Replaces the proxy's config file, keeping its listeners.
fn rewrite_config(proxy: &Proxy, file: &Path, rest: &str) {
    std::fs::write(file, config_yaml(proxy.listen, proxy.admin, rest)).expect("write the config");
}

#[tokio::test]
async fn serves_through_the_dns_endpoints_when_the_api_is_unreachable() {
    let fallback = upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let (_closed_port, closed) = support::refusing_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: closed\n\
             clusters: [{{name: closed, cluster: {{server: 'https://127.0.0.1:{closed}', insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: nobody, user: {{token: none}}}}]\n\
             contexts: [{{name: closed, context: {{cluster: closed, user: nobody}}}}]\n"
        ),
    )
    .expect("write the kubeconfig");
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path"))];
    let proxy = Proxy::start_with_env(&env, &config(fallback, "apps", "api", 8080)).await;
    let per_upstream = spread(&proxy, 10).await;
    assert_eq!(
        per_upstream.get(&fallback.port().to_string()),
        Some(&10),
        "{per_upstream:?}"
    );
    proxy
        .wait_for_metric(
            "routemeter_upstream_endpoints",
            &[("source", "dns"), ("state", "healthy")],
            1.0,
        )
        .await;
    wait_for(
        "a discovery error counted",
        Duration::from_secs(10),
        || async {
            let m = proxy.metrics().await;
            (m.sum(
                "routemeter_upstream_discovery_errors_total",
                &[("source", "endpointslices")],
            ) >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert!(
        proxy
            .log()
            .contains("cannot watch the EndpointSlices of apps/api"),
        "{}",
        proxy.log()
    );
    assert_eq!(spread(&proxy, 10).await.len(), 1, "still the DNS endpoints");
}

/// A TCP relay to the API server that a test can cut and restore, as a network would.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(bind: IpAddr, target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind, 0))
            .await
            .expect("bind the relay");
        let relay = Relay {
            addr: listener.local_addr().expect("relay address"),
            target,
            tasks: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let copy = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().expect("tasks").push(copy);
            }
        });
        self.tasks.lock().expect("tasks").push(accept);
    }

    /// Closes the listener and every connection: the API is unreachable.
    fn cut(&self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same address.
    async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the relay again");
        self.serve(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test]
async fn falls_back_to_dns_while_the_api_is_gone_and_returns() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "eps-gone").await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let (ips, port) = upstreams_on_own_addresses(2).await;
    let fallback = upstream().await;
    apply_slices(&slices, "api", port, &all(&ips, Condition::Ready)).await;

    // The test kubeconfig, through a relay bound on the API server's own address (so its
    // certificate still matches).
    let path = kubeconfig_path();
    let text = std::fs::read_to_string(&path).expect("the test kubeconfig");
    let server = kube::config::Kubeconfig::read_from(&path)
        .expect("kubeconfig")
        .clusters
        .into_iter()
        .find_map(|c| c.cluster?.server)
        .expect("a server");
    let target: SocketAddr = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .expect("the server as ip:port");
    let relay = Relay::start(target.ip(), target).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let relayed = dir.path().join("kubeconfig");
    std::fs::write(
        &relayed,
        text.replace(&server, &format!("https://{}", relay.addr)),
    )
    .expect("write the kubeconfig");
    let env = [("KUBECONFIG", relayed.to_str().expect("UTF-8 path"))];
    let proxy = Proxy::start_with_env(&env, &config(fallback, &ns, "api", port)).await;
    let everyone = names(&ips);
    settle(
        &proxy,
        Instant::now(),
        Duration::from_secs(15),
        "served by the slices",
        |status, body| status == 200 && everyone.contains(body),
    )
    .await;

    relay.cut();
    let cut = Instant::now();
    let fallback_name = fallback.port().to_string();
    let fell_back = settle(
        &proxy,
        cut,
        Duration::from_secs(25),
        "served by the DNS endpoints",
        |status, body| status == 200 && body == fallback_name,
    )
    .await;
    eprintln!("the API cut: served from the DNS endpoints {fell_back:?} later");
    assert!(
        fell_back >= Duration::from_secs(8),
        "kept the listed endpoints through a short outage: {fell_back:?}"
    );

    relay.restore().await;
    let restored = Instant::now();
    let back = settle(
        &proxy,
        restored,
        Duration::from_secs(15),
        "served by the slices again",
        |status, body| status == 200 && everyone.contains(body),
    )
    .await;
    eprintln!("the API back: served from the EndpointSlices {back:?} later");
    let m = proxy.metrics().await;
    assert!(
        m.sum(
            "routemeter_upstream_discovery_errors_total",
            &[("source", "endpointslices")]
        ) >= 1.0
    );
    let log = proxy.log();
    assert!(log.contains("upstream endpoints from DNS"), "{log}");
    delete_namespace(&client, &ns).await;
}
