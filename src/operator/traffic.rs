//! Live traffic figures for `kubectl get msvc`: the operator reads the ready proxy pods'
//! `/metrics` and turns the growth of their request counters between two readings into
//! requests per second and a 5xx ratio. The same pages say whether each proxy runs the
//! config now in its ConfigMap (`routemeter_config_last_reload_successful`): a proxy that
//! rejected an edit keeps its last good config, and the status says how many do.
//!
//! Readings are at least [`MIN_INTERVAL`] apart, so the status write they cause (and the
//! reconcile it triggers) never turns into a loop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::children::selector_labels;
use crate::crd::{MonitoredService, TrafficStatus};

/// Shortest time between two readings of the same MonitoredService.
pub const MIN_INTERVAL: Duration = Duration::from_secs(15);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Request and 5xx totals of one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    pub requests: f64,
    pub errors: f64,
}

/// Sums `http_server_request_duration_seconds_count` over a `/metrics` page, and the part
/// of it with a 5xx status.
pub fn totals(text: &str) -> Totals {
    let mut t = Totals {
        requests: 0.0,
        errors: 0.0,
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("http_server_request_duration_seconds_count{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        t.requests += value;
        if labels.contains("http_response_status_code=\"5") {
            t.errors += value;
        }
    }
    t
}

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

/// What one reading of the proxies gives the status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Traffic figures, when there is a previous reading to compare with.
    pub traffic: Option<TrafficStatus>,
    /// The proxies' config state, from this reading or the last one.
    pub config: Option<ConfigHealth>,
}

/// The figures between two readings, or `None` if the counters went back (a pod restarted).
pub fn figures(previous: (Instant, Totals), now: (Instant, Totals)) -> Option<TrafficStatus> {
    let seconds = now.0.duration_since(previous.0).as_secs_f64();
    let requests = now.1.requests - previous.1.requests;
    let errors = now.1.errors - previous.1.errors;
    if seconds <= 0.0 || requests < 0.0 || errors < 0.0 {
        return None;
    }
    let ratio = if requests > 0.0 {
        errors / requests
    } else {
        0.0
    };
    Some(TrafficStatus {
        requests_per_second: format!("{:.1}", requests / seconds),
        error_ratio: format!("{:.2}%", ratio * 100.0),
        observed_at: k8s_openapi::jiff::Timestamp::now().to_string(),
    })
}

/// The last reading of one MonitoredService's proxies.
#[derive(Debug, Clone, Copy)]
struct Last {
    at: Instant,
    totals: Totals,
    config: ConfigHealth,
}

/// The last reading per MonitoredService.
#[derive(Default)]
pub struct Readings(Mutex<HashMap<ObjectRef<MonitoredService>, Last>>);

impl Readings {
    /// Reads the proxies of `msvc` if the last reading is old enough: traffic figures when
    /// there is a previous reading to compare with, and the config state (the last one
    /// known when it is too early to read again).
    pub async fn read(&self, client: &Client, msvc: &MonitoredService, admin_port: u16) -> Reading {
        let key = ObjectRef::from_obj(msvc);
        let previous = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied();
        if let Some(p) = previous.filter(|p| p.at.elapsed() < MIN_INTERVAL) {
            return Reading {
                traffic: None,
                config: Some(p.config),
            };
        }
        let Some((totals, config)) = scrape(client, msvc, admin_port).await else {
            return Reading::default();
        };
        let now = Last {
            at: Instant::now(),
            totals,
            config,
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, now);
        Reading {
            traffic: previous.and_then(|p| figures((p.at, p.totals), (now.at, now.totals))),
            config: Some(config),
        }
    }

    /// Forgets a MonitoredService.
    pub fn forget(&self, msvc: &MonitoredService) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(msvc));
    }
}

/// Sums the totals of every ready proxy pod and counts those running an older config than
/// their file's; `None` if none could be read.
async fn scrape(
    client: &Client,
    msvc: &MonitoredService,
    admin_port: u16,
) -> Option<(Totals, ConfigHealth)> {
    let ns = msvc.namespace()?;
    let selector: Vec<String> = selector_labels(msvc)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pods = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .ok()?;
    let http = reqwest::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .build()
        .ok()?;
    let mut sum: Option<Totals> = None;
    let mut config = ConfigHealth::default();
    for pod in pods.items {
        let status = pod.status.unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let Some(ip) = status.pod_ip.filter(|_| ready) else {
            continue;
        };
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        let url = format!("http://{host}:{admin_port}/metrics");
        let text = match http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(error) => {
                tracing::debug!(%url, %error, "cannot read proxy metrics");
                continue;
            }
        };
        let t = totals(&text);
        let s = sum.get_or_insert(Totals {
            requests: 0.0,
            errors: 0.0,
        });
        s.requests += t.requests;
        s.errors += t.errors;
        config.proxies += 1;
        if config_applied(&text) == Some(false) {
            config.stale += 1;
        }
    }
    sum.map(|s| (s, config))
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

    #[test]
    fn sums_requests_and_errors() {
        assert_eq!(
            totals(PAGE),
            Totals {
                requests: 100.0,
                errors: 10.0
            }
        );
    }

    #[test]
    fn figures_between_readings() {
        let t0 = Instant::now();
        let f = figures(
            (
                t0,
                Totals {
                    requests: 100.0,
                    errors: 10.0,
                },
            ),
            (
                t0 + Duration::from_secs(10),
                Totals {
                    requests: 300.0,
                    errors: 14.0,
                },
            ),
        )
        .expect("figures");
        assert_eq!(f.requests_per_second, "20.0");
        assert_eq!(f.error_ratio, "2.00%");
        // A restarted pod resets its counters: no figures rather than negative ones.
        assert!(
            figures(
                (
                    t0,
                    Totals {
                        requests: 100.0,
                        errors: 0.0
                    }
                ),
                (
                    t0 + Duration::from_secs(10),
                    Totals {
                        requests: 5.0,
                        errors: 0.0
                    }
                )
            )
            .is_none()
        );
    }
}
