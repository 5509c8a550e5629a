//! What the operator reads from the proxies.
//!
//! - **Config state**, for `ProxyConfigApplied`, read by the reconciler from the ready
//!   proxy pods' `/metrics` (`routemeter_config_last_reload_successful`): a proxy that
//!   rejected an edit keeps its last good config, and the status says how many do.
//!   Readings are at least [`MIN_INTERVAL`] apart, so the status write they cause (and the
//!   reconcile it triggers) never turns into a loop.
//! - **Live traffic**, for `status.traffic` and `kubectl get msvc`, in a loop of its own
//!   ([`refresh_loop`]), apart from the reconciler: every refresh period (`--traffic-refresh`,
//!   [`DEFAULT_REFRESH`] by default) it reads each ready
//!   proxy's `/api/summary?window=1m`, merges them (rates add, percentiles from the added
//!   buckets) and writes the figures, under a field manager of its own, only when one
//!   changed meaningfully (or every [`HEARTBEAT`]). Figures no proxy has confirmed for two
//!   refresh periods are cleared, and the `TrafficObserved` condition says why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::caches::Caches;
use crate::crd::{MonitoredService, TrafficStatus};
use crate::proxy_pods::{self, ReadyProxy};
use crate::summary::{self, Summary, Window};

/// Shortest time between two config readings of the same MonitoredService.
pub const MIN_INTERVAL: Duration = Duration::from_secs(15);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the traffic figures are read, unless `--traffic-refresh` says otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
/// The shortest refresh period `--traffic-refresh` takes.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Unchanged figures are written again this often, so `observedAt` stays recent.
pub const HEARTBEAT: Duration = Duration::from_secs(300);
/// The field manager of the traffic figures and the `TrafficObserved` condition.
pub const TRAFFIC_MANAGER: &str = "routemeter-traffic";
/// The condition the traffic loop owns.
pub const TRAFFIC_CONDITION: &str = "TrafficObserved";

/// Whether the proxy of a `/metrics` page runs the config its file holds now; `None` when
/// the page has no such sample.
pub fn config_applied(text: &str) -> Option<bool> {
    text.lines().find_map(|line| {
        let value = line
            .strip_prefix("routemeter_config_last_reload_successful ")?
            .trim();
        value.parse::<f64>().ok().map(|v| v == 1.0)
    })
}

/// How many proxies were read, and how many of them rejected their current config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigHealth {
    pub proxies: u32,
    pub stale: u32,
}

/// The last config reading of one MonitoredService's proxies.
#[derive(Debug, Clone, Copy)]
struct Last {
    at: Instant,
    config: ConfigHealth,
}

/// The last reading per MonitoredService.
#[derive(Default)]
pub struct Readings(Mutex<HashMap<ObjectRef<MonitoredService>, Last>>);

impl Readings {
    /// The config state of the proxies of `msvc`: read again when the last reading is
    /// old enough, else the last one; `None` when no proxy could be read.
    pub async fn read(
        &self,
        client: &Client,
        caches: &Caches,
        msvc: &MonitoredService,
        admin_port: u16,
    ) -> Option<ConfigHealth> {
        let key = ObjectRef::from_obj(msvc);
        let previous = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied();
        if let Some(p) = previous.filter(|p| p.at.elapsed() < MIN_INTERVAL) {
            return Some(p.config);
        }
        let config = scrape_config(client, caches, msvc, admin_port).await?;
        let now = Last {
            at: Instant::now(),
            config,
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, now);
        Some(config)
    }

    /// Forgets a MonitoredService.
    pub fn forget(&self, msvc: &MonitoredService) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(msvc));
    }
}

/// The ready proxy pods of `msvc`, as URL hosts; `None` when they cannot be listed.
async fn ready_proxies(
    client: &Client,
    caches: &Caches,
    msvc: &MonitoredService,
) -> Option<Vec<String>> {
    if caches.pods.synced() {
        let selector = proxy_pods::selector_labels(msvc);
        let ns = msvc.metadata.namespace.as_deref();
        let pods = caches
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == ns
                    && p.metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
            })
            .map(|p| p.as_ref().clone())
            .collect();
        let proxies = proxy_pods::Proxies::of(pods);
        return Some(proxies.ready.iter().map(ReadyProxy::host).collect());
    }
    match proxy_pods::list(client, msvc).await {
        Ok(proxies) => Some(proxies.ready.iter().map(ReadyProxy::host).collect()),
        Err(error) => {
            tracing::debug!(%error, "cannot list the proxy pods");
            None
        }
    }
}

fn http_client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .build()
        .ok()
}

/// How many ready proxies were read, and how many run an older config than their file's;
/// `None` if none could be read.
async fn scrape_config(
    client: &Client,
    caches: &Caches,
    msvc: &MonitoredService,
    admin_port: u16,
) -> Option<ConfigHealth> {
    let http = http_client()?;
    let mut config = ConfigHealth::default();
    for host in ready_proxies(client, caches, msvc).await? {
        let url = format!("http://{host}:{admin_port}/metrics");
        let text = match http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(error) => {
                tracing::debug!(%url, %error, "cannot read proxy metrics");
                continue;
            }
        };
        config.proxies += 1;
        if config_applied(&text) == Some(false) {
            config.stale += 1;
        }
    }
    (config.proxies > 0).then_some(config)
}

/// The ready proxies' summaries of the last minute.
async fn scrape_summaries(
    client: &Client,
    caches: &Caches,
    msvc: &MonitoredService,
    admin_port: u16,
) -> Vec<Summary> {
    let (Some(http), Some(hosts)) = (http_client(), ready_proxies(client, caches, msvc).await)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for host in hosts {
        let url = format!(
            "http://{host}:{admin_port}{}",
            summary::api_path(Window::OneMinute)
        );
        match http.get(&url).send().await {
            Ok(r) => {
                let body = r.bytes().await.unwrap_or_default();
                match serde_json::from_slice::<Summary>(&body) {
                    Ok(s) => out.push(s),
                    Err(error) => tracing::debug!(%url, %error, "unreadable proxy summary"),
                }
            }
            Err(error) => tracing::debug!(%url, %error, "cannot read proxy summary"),
        }
    }
    out
}

/// The status figures of a merged summary.
pub fn traffic_status(s: &Summary, observed_at: String) -> TrafficStatus {
    let o = &s.overall;
    let worst = s
        .routes
        .iter()
        .filter(|e| e.requests >= summary::score::RECOMMENDATION_MIN_REQUESTS)
        .filter_map(|e| Some((e.score?, e)))
        .min_by_key(|(score, _)| *score);
    TrafficStatus {
        requests_per_second: format!("{:.1}", o.rps),
        error_ratio: format!("{:.2}%", o.error_ratio.unwrap_or(0.0) * 100.0),
        p95: o.p95.map(|p| {
            if p < 1.0 {
                format!("{}ms", (p * 1000.0).round())
            } else {
                format!("{p:.2}s")
            }
        }),
        score: o.score,
        performance: o.status.and_then(|st| {
            serde_json::to_value(st)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
        }),
        worst_route: worst.map(|(score, e)| format!("{} {}: {score}", e.method, e.route)),
        observed_at,
    }
}

/// Whether `new` differs from `old` enough to be written: a figure appearing or going, the
/// rate or p95 by more than 10 %, the error ratio by 0.1 point, the score by 3, the
/// performance word or the worst route.
pub fn changed_meaningfully(old: &TrafficStatus, new: &TrafficStatus) -> bool {
    let number = |s: &str| {
        s.trim_end_matches(['%', 's'])
            .trim_end_matches('m')
            .parse::<f64>()
            .ok()
    };
    let seconds = |s: &Option<String>| {
        s.as_deref().and_then(|p| {
            if let Some(ms) = p.strip_suffix("ms") {
                ms.parse::<f64>().ok().map(|v| v / 1000.0)
            } else {
                p.strip_suffix('s').and_then(|v| v.parse::<f64>().ok())
            }
        })
    };
    let relative = |a: Option<f64>, b: Option<f64>, floor: f64| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() > floor.max(0.1 * a.abs().max(b.abs())),
        (None, None) => false,
        _ => true,
    };
    relative(
        number(&old.requests_per_second),
        number(&new.requests_per_second),
        0.1,
    ) || match (number(&old.error_ratio), number(&new.error_ratio)) {
        (Some(a), Some(b)) => (a - b).abs() >= 0.1,
        _ => old.error_ratio != new.error_ratio,
    } || relative(seconds(&old.p95), seconds(&new.p95), 0.001)
        || match (old.score, new.score) {
            (Some(a), Some(b)) => a.abs_diff(b) >= 3,
            (a, b) => a != b,
        }
        || old.performance != new.performance
        || old.worst_route != new.worst_route
}

/// What the loop last wrote and read, per MonitoredService.
#[derive(Debug, Clone, Default)]
struct Observed {
    /// When a proxy last answered.
    read_at: Option<Instant>,
    /// When the figures were last written.
    written_at: Option<Instant>,
}

/// Refreshes the traffic figures of every MonitoredService in `store` every `period` until
/// the task is stopped; figures no reading confirmed for two periods are cleared. One
/// MonitoredService's failure never stops the others'.
pub async fn refresh_loop(
    client: Client,
    caches: Arc<Caches>,
    store: Store<MonitoredService>,
    admin_port: u16,
    period: Duration,
) {
    let stale_after = period.saturating_mul(2);
    let mut observed: HashMap<ObjectRef<MonitoredService>, Observed> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let msvcs = store.state();
        observed.retain(|k, _| msvcs.iter().any(|m| ObjectRef::from_obj(m.as_ref()) == *k));
        for msvc in msvcs {
            if msvc.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let key = ObjectRef::from_obj(msvc.as_ref());
            let seen = observed.entry(key).or_default();
            if let Err(error) =
                refresh(&client, &caches, &msvc, admin_port, stale_after, seen).await
            {
                tracing::warn!(msvc = %format!("{}/{}", msvc.namespace().unwrap_or_default(), msvc.name_any()), %error, "cannot write the traffic figures: {error}");
            }
        }
    }
}

async fn refresh(
    client: &Client,
    caches: &Caches,
    msvc: &MonitoredService,
    admin_port: u16,
    stale_after: Duration,
    seen: &mut Observed,
) -> Result<(), kube::Error> {
    let now = Instant::now();
    let summaries = scrape_summaries(client, caches, msvc, admin_port).await;
    let current = msvc.status.as_ref().and_then(|s| s.traffic.clone());
    let condition = msvc.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == TRAFFIC_CONDITION)
            .cloned()
    });
    let (traffic, ok, reason, message) = match summary::merge(&summaries) {
        Some(merged) => {
            seen.read_at = Some(now);
            let fresh = traffic_status(&merged, k8s_openapi::jiff::Timestamp::now().to_string());
            let due = seen
                .written_at
                .is_none_or(|t| now.duration_since(t) >= HEARTBEAT);
            let keep = current
                .as_ref()
                .filter(|c| !due && !changed_meaningfully(c, &fresh))
                .cloned();
            (
                Some(keep.unwrap_or(fresh)),
                true,
                "Read",
                format!(
                    "figures of the last minute, from the /api/summary of {} ready proxies",
                    summaries.len()
                ),
            )
        }
        None => {
            let stale = seen
                .read_at
                .is_none_or(|t| now.duration_since(t) >= stale_after);
            if !stale {
                return Ok(());
            }
            (
                None,
                false,
                "NoReading",
                format!(
                    "no ready proxy answered /api/summary for {} s; the traffic figures are cleared until one does",
                    stale_after.as_secs()
                ),
            )
        }
    };
    let status_word = if ok { "True" } else { "False" };
    let unchanged = traffic == current
        && condition
            .as_ref()
            .is_some_and(|c| c.status == status_word && c.message == message);
    if unchanged {
        return Ok(());
    }
    let since = condition.filter(|c| c.status == status_word).map_or_else(
        || Time(k8s_openapi::jiff::Timestamp::now()),
        |c| c.last_transition_time,
    );
    let condition = K8sCondition {
        type_: TRAFFIC_CONDITION.into(),
        status: status_word.into(),
        reason: reason.into(),
        message,
        observed_generation: msvc.metadata.generation,
        last_transition_time: since,
    };
    let mut status = json!({ "conditions": [condition] });
    if let Some(t) = &traffic {
        status["traffic"] = json!(t);
    }
    let patch = json!({ "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService", "status": status });
    let api: Api<MonitoredService> =
        Api::namespaced(client.clone(), &msvc.namespace().unwrap_or_default());
    api.patch_status(
        &msvc.name_any(),
        &PatchParams::apply(TRAFFIC_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if traffic != current {
        seen.written_at = Some(now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{error_type="",http_request_method="GET",http_response_status_code="200",http_route="/a",le="0.1"} 7
http_server_request_duration_seconds_count{error_type="",http_request_method="GET",http_response_status_code="200",http_route="/a"} 90
http_server_request_duration_seconds_count{error_type="",http_request_method="GET",http_response_status_code="503",http_route="/a"} 10
routemeter_config_reloads_total 3
routemeter_config_last_reload_successful 1
"#;

    #[test]
    fn reads_whether_the_proxy_runs_its_current_config() {
        assert_eq!(config_applied(PAGE), Some(true));
        let rejected = PAGE.replace(
            "routemeter_config_last_reload_successful 1",
            "routemeter_config_last_reload_successful 0",
        );
        assert_eq!(config_applied(&rejected), Some(false));
        // `..._success_timestamp_seconds` is another metric, not this one.
        assert_eq!(
            config_applied("routemeter_config_last_reload_success_timestamp_seconds 1.7e9\n"),
            None
        );
    }

    fn traffic(rps: &str, errors: &str, p95: Option<&str>, score: Option<u8>) -> TrafficStatus {
        TrafficStatus {
            requests_per_second: rps.into(),
            error_ratio: errors.into(),
            p95: p95.map(String::from),
            score,
            performance: None,
            worst_route: None,
            observed_at: "t".into(),
        }
    }

    #[test]
    fn only_meaningful_changes_are_written() {
        let base = traffic("20.0", "1.00%", Some("120ms"), Some(85));
        assert!(!changed_meaningfully(
            &base,
            &traffic("21.0", "1.05%", Some("125ms"), Some(84))
        ));
        assert!(
            changed_meaningfully(&base, &traffic("23.0", "1.00%", Some("120ms"), Some(85))),
            "rate +15 %"
        );
        assert!(
            changed_meaningfully(&base, &traffic("20.0", "1.20%", Some("120ms"), Some(85))),
            "errors +0.2 point"
        );
        assert!(
            changed_meaningfully(&base, &traffic("20.0", "1.00%", Some("1.20s"), Some(85))),
            "p95 10×"
        );
        assert!(
            changed_meaningfully(&base, &traffic("20.0", "1.00%", Some("120ms"), Some(82))),
            "score -3"
        );
        assert!(
            changed_meaningfully(&base, &traffic("20.0", "1.00%", None, None)),
            "figures gone"
        );
        // Near zero, small absolute changes are noise.
        let idle = traffic("0.0", "0.00%", None, None);
        assert!(!changed_meaningfully(
            &idle,
            &traffic("0.1", "0.00%", None, None)
        ));
    }
}
