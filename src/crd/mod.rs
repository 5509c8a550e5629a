//! The `MonitoredService` API (`routemeter.io/v1alpha1`): Rust types from which the CRD
//! and its schema are generated. No I/O here; `///` comments become the descriptions
//! `kubectl explain` shows.
//!
//! The API has types of its own, independent of the proxy's config file schema: the
//! operator converts them (`operator::convert`), so neither changes with the other by
//! accident.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of routemeter's resources.
pub const GROUP: &str = "routemeter.io";

/// A `MonitoredService` puts a metering proxy in front of a Service and monitors every
/// route of it: metrics per route, recording rules, alerts, SLOs and a dashboard.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "routemeter.io",
    version = "v1alpha1",
    kind = "MonitoredService",
    namespaced,
    shortname = "msvc",
    category = "routemeter",
    status = "MonitoredServiceStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.service"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Available","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"RPS","type":"string","jsonPath":".status.traffic.requestsPerSecond"}"#,
    printcolumn = r#"{"name":"P95","type":"string","jsonPath":".status.traffic.p95"}"#,
    printcolumn = r#"{"name":"Errors","type":"string","jsonPath":".status.traffic.errorRatio"}"#,
    printcolumn = r#"{"name":"Score","type":"integer","jsonPath":".status.traffic.score"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MonitoredServiceSpec {
    /// The Service to put the proxy in front of, in the same namespace.
    pub target: Target,
    /// How clients reach the proxy: `Parallel` (the default) adds a Service
    /// `<name>-routemeter` that clients call to be metered; `Takeover` repoints the target
    /// Service itself to the proxies, so clients change nothing, and restores its selector
    /// exactly when routemeter lets go (delete, back to `Parallel`, an invalid spec).
    #[serde(default)]
    pub mode: Mode,
    /// Routes of the service. Each request is labelled with the most specific matching
    /// route's path template, never the raw path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.all(r, !has(r.name) || self.exists_one(o, has(o.name) && o.name == r.name))").message("route names must be unique"))]
    pub routes: Vec<RouteSpec>,
    /// Labelling of requests that match no route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_template: Option<AutoTemplateSpec>,
    /// The proxy's deployment.
    #[serde(default)]
    pub proxy: ProxySpec,
    /// Autoscaling and disruption budget of the proxy.
    #[serde(default)]
    pub scaling: ScalingSpec,
    /// ServiceMonitor, alerts, SLOs and dashboard.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
}

/// How clients reach the proxy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    /// The proxy has a Service of its own, `<name>-routemeter`; the target is untouched.
    #[default]
    Parallel,
    /// The target Service's selector is pointed at the proxies, which forward to the
    /// application through `<name>-routemeter-upstream` (the original selector).
    Takeover,
}

/// The Service to monitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Name of the Service, in the MonitoredService's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub service: String,
    /// The Service port to proxy to, by name or number.
    pub port: IntOrString,
}

/// A route of the monitored service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Path template: literal segments, `{name}` for one segment, a final `*` or
    /// `{name...}` for the rest, e.g. `/users/{id}`.
    #[schemars(regex(pattern = r"^/"), length(max = 1024))]
    pub path: String,
    /// HTTP methods this route is limited to; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Short name used in rules and dashboards; unique within the MonitoredService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"), length(max = 63))]
    pub name: Option<String>,
    /// Objectives for this route, overriding the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloSpec>,
    /// The query parameters that paginate this route's listings. With them the proxy
    /// records the page sizes and offsets asked for and the latency by offset range, the
    /// dashboard gets a pagination row and the summary a `pagination` figure for the
    /// route (docs/pagination.md). `{}` means every default: `page`, `limit` or `size`,
    /// `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<PaginationSpec>,
}

/// A route's pagination parameters, each optional (an absent one has its default name).
/// Pages are 1-based: page `p` of size `s` starts at offset `(p − 1) × s`, and page 0
/// counts as invalid; an offset parameter wins over a page. Names are matched exactly
/// against the percent-decoded query keys.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaginationSpec {
    /// The 1-based page number (default `page`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-A-Za-z0-9_.~\[\]]{1,64}$"))]
    pub page_param: Option<String>,
    /// The page size, in items (default `limit`, else `size` when the query has no `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-A-Za-z0-9_.~\[\]]{1,64}$"))]
    pub size_param: Option<String>,
    /// The offset, in items skipped (default `offset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-A-Za-z0-9_.~\[\]]{1,64}$"))]
    pub offset_param: Option<String>,
}

/// Labelling of requests that match no declared route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoTemplateSpec {
    /// Infer a template by replacing ID-like segments with `{id}`; when off, unmatched
    /// requests count as route `_unmatched`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The most distinct templates inferred; past it, requests count as route `_other`.
    #[serde(default = "default_max_inferred_routes")]
    pub max_routes: usize,
}

impl Default for AutoTemplateSpec {
    fn default() -> Self {
        AutoTemplateSpec {
            enabled: true,
            max_routes: default_max_inferred_routes(),
        }
    }
}

/// The proxy's deployment settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// Replicas when autoscaling is off (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Container resources (default: requests 50m CPU, 64Mi memory, 64Mi ephemeral
    /// storage; limits 256Mi memory, 128Mi ephemeral storage, and no CPU limit, which would
    /// throttle the proxy in bursts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Worker threads of each proxy, each an event loop of its own (default: the CPU
    /// limit rounded up, else the CPU request rounded up, at most 64: one with the default
    /// resources). Never the node's CPU count: each worker holds about 2 MB and its own
    /// upstream connections, so a proxy on a 64-core node would need 140 MB idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub workers: Option<u16>,
    /// Image of the proxy, overriding the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Upstream timeouts, as durations like `500ms`, `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    /// How requests are spread over the target's endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancingPolicy>,
    /// The forwarding headers (`X-Forwarded-For`, `-Proto`, `-Host`, `Forwarded`, `Via`)
    /// the proxy sets for the application, and how many proxies in front of it are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<ForwardingSpec>,
}

/// Load-balancing policy: `roundRobin` (each endpoint in turn), `leastRequest` (the
/// fewer requests in flight of two random endpoints) or `peakEwma` (the lower latency
/// estimate × (requests in flight + 1) of two random endpoints).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancingPolicy {
    /// Each endpoint in turn (the default).
    #[default]
    RoundRobin,
    /// The less loaded of two random endpoints: the one with fewer requests in flight.
    LeastRequest,
    /// The cheaper of two random endpoints, the cost being the endpoint's latency estimate
    /// × (its requests in flight + 1). The estimate follows a slower answer at once and
    /// decays over about 10 s, so an endpoint that turned slow soon gets little traffic and
    /// is tried again as it recovers.
    PeakEwma,
}

/// The forwarding headers the proxy sets on every request it sends to the application, so
/// the application sees its real client rather than the proxy. Whether a header the proxy
/// sets replaces or extends the incoming one depends on `trustedHops`; see
/// docs/forwarding.md.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForwardingSpec {
    /// Set `X-Forwarded-For` to the trusted part of the incoming list (see `trustedHops`)
    /// followed by the client's address (default true).
    #[serde(default = "yes")]
    pub x_forwarded_for: bool,
    /// Set `X-Forwarded-Proto: http`, the scheme the proxy listens on; with `trustedHops`
    /// above 0 an incoming value is kept (default true).
    #[serde(default = "yes")]
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Host` to the request's `Host`; with `trustedHops` above 0 an
    /// incoming value is kept (default true).
    #[serde(default = "yes")]
    pub x_forwarded_host: bool,
    /// Add an RFC 7239 `Forwarded` element (`for=`, `proto=`, `host=`) after the trusted
    /// part of the incoming ones (default false).
    #[serde(default)]
    pub forwarded: bool,
    /// Append `<version> routemeter` (such as `1.1 routemeter`) to `Via` (default false).
    #[serde(default)]
    pub via: bool,
    /// How many proxies in front of this one are trusted to set the forwarding headers
    /// (default 0). 0: every incoming `X-Forwarded-*` and `Forwarded` header is the
    /// client's word and is dropped or overwritten. N: the last N entries of the incoming
    /// `X-Forwarded-For` and `Forwarded` lists are kept (they were written by those
    /// proxies), the entries left of them dropped; incoming `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` are kept; a header switched off passes through untouched.
    #[serde(default)]
    pub trusted_hops: u8,
}

impl Default for ForwardingSpec {
    fn default() -> Self {
        ForwardingSpec {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            forwarded: false,
            via: false,
            trusted_hops: 0,
        }
    }
}

/// Upstream timeouts; each a duration such as `500ms`, `2s` or `1m`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsSpec {
    /// Time to connect to an endpoint (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub connect: Option<String>,
    /// Longest wait for each read from the upstream (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub read: Option<String>,
    /// How long idle upstream connections are pooled (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub idle: Option<String>,
}

/// Horizontal autoscaling and the disruption budget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct ScalingSpec {
    /// Whether a HorizontalPodAutoscaler scales the proxy (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Fewest replicas (default 2).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most replicas (default 5).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilisation the autoscaler aims for, in percent of requests (default 75).
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// Whether a PodDisruptionBudget keeps at least one proxy up during voluntary
    /// disruptions (default true; only with two or more replicas).
    #[serde(default = "yes")]
    pub pod_disruption_budget: bool,
}

impl Default for ScalingSpec {
    fn default() -> Self {
        ScalingSpec {
            enabled: true,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_cpu_utilization_percentage: default_cpu_target(),
            pod_disruption_budget: true,
        }
    }
}

/// What the operator sets up in Prometheus Operator and Grafana.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// The ServiceMonitor scraping the proxy.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
    /// Labels added to the ServiceMonitor and PrometheusRule, for a Prometheus whose
    /// selectors need them. When empty, the operator copies the labels the Prometheus
    /// objects in the cluster select on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Threshold alerts.
    #[serde(default)]
    pub alerts: AlertsSpec,
    /// Service level objectives, with multi-window multi-burn-rate alerts.
    #[serde(default)]
    pub slo: SloSpec,
    /// The Grafana dashboard ConfigMap.
    #[serde(default)]
    pub dashboard: DashboardSpec,
}

/// The ServiceMonitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Whether to create it (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Scrape interval (default 30s).
    #[serde(default = "default_interval")]
    #[schemars(regex(
        pattern = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    ))]
    pub interval: String,
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        ServiceMonitorSpec {
            enabled: true,
            interval: default_interval(),
        }
    }
}

/// Threshold alerts on the proxy's metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertsSpec {
    /// Whether to create the alerts (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Fire when the share of 5xx responses exceeds this ratio (default 0.05).
    #[serde(default = "default_error_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_ratio: f64,
    /// Fire when p95 latency exceeds this many seconds (default 1).
    #[serde(default = "default_latency_p95")]
    #[schemars(range(min = 0.0))]
    pub latency_p95_seconds: f64,
    /// The fewest requests per second a route needs for its ratio and latency alerts to
    /// fire (default 1, 300 requests in 5m): a 5xx ratio or a p95 of a handful of
    /// requests is noise, not an outage. Applied to `RoutemeterHighErrorRate` and
    /// `RoutemeterHighLatency` over their 5m window, and to each burn-rate condition
    /// with as many requests (min × 300) over its long window (1h, 6h, 1d, 3d). 0 turns the
    /// guard off.
    #[serde(default = "default_min_requests_per_second")]
    #[schemars(range(min = 0.0))]
    pub min_requests_per_second: f64,
    /// How long a condition must hold before the alert fires (default 5m).
    #[serde(default = "default_for", rename = "for")]
    #[schemars(regex(pattern = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?)$"))]
    pub for_: String,
    /// Link added to every alert's annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
    /// The "deep pages are slow" alert of routes with pagination (off by default).
    #[serde(default)]
    pub deep_pages: DeepPagesSpec,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        AlertsSpec {
            enabled: true,
            error_ratio: default_error_ratio(),
            latency_p95_seconds: default_latency_p95(),
            min_requests_per_second: default_min_requests_per_second(),
            for_: default_for(),
            runbook_url: None,
            deep_pages: DeepPagesSpec::default(),
        }
    }
}

/// `RoutemeterDeepPagesSlow`: fires, for `for`, when the p95 latency of a deep offset
/// range of a paginated route exceeds the route's latency threshold
/// (`slo.latencyThresholdSeconds`, the route's own or the service's) while that range
/// gets at least `minRequestsPerSecond`. Needs `enabled` here and in `alerts`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeepPagesSpec {
    /// Whether to create the alert (default false).
    #[serde(default)]
    pub enabled: bool,
    /// The offset from which pages are deep: the start of an offset range, 100, 1000
    /// (the default), 10000 or 100000.
    #[serde(default = "default_deep_offset")]
    #[schemars(extend("enum" = [100, 1000, 10000, 100000]))]
    pub min_offset: u64,
    /// The fewest requests per second an offset range needs over 5m for its p95 to
    /// count (default 0.1, 30 requests in 5m).
    #[serde(default = "default_deep_pages_min_rate")]
    #[schemars(range(min = 0.0))]
    pub min_requests_per_second: f64,
}

impl Default for DeepPagesSpec {
    fn default() -> Self {
        DeepPagesSpec {
            enabled: false,
            min_offset: default_deep_offset(),
            min_requests_per_second: default_deep_pages_min_rate(),
        }
    }
}

/// Service level objectives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloSpec {
    /// Percentage of requests that must not fail with a 5xx (default 99.9).
    #[serde(default = "default_availability")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub availability: f64,
    /// Requests slower than this many seconds count against the latency objective (default 0.5).
    #[serde(default = "default_latency_threshold")]
    #[schemars(range(min = 0.0))]
    pub latency_threshold_seconds: f64,
    /// Percentage of requests that must be faster than the threshold (default 99).
    #[serde(default = "default_latency_objective")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub latency_objective: f64,
    /// The SLO window (default 30d).
    #[serde(default = "default_window")]
    #[schemars(regex(pattern = r"^[0-9]+(d|w)$"))]
    pub window: String,
}

impl Default for SloSpec {
    fn default() -> Self {
        SloSpec {
            availability: default_availability(),
            latency_threshold_seconds: default_latency_threshold(),
            latency_objective: default_latency_objective(),
            window: default_window(),
        }
    }
}

/// The Grafana dashboard.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardSpec {
    /// Whether to create the dashboard ConfigMap (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Labels the Grafana sidecar discovers dashboards by (default `grafana_dashboard: "1"`).
    #[serde(default = "default_dashboard_labels")]
    pub labels: BTreeMap<String, String>,
}

impl Default for DashboardSpec {
    fn default() -> Self {
        DashboardSpec {
            enabled: true,
            labels: default_dashboard_labels(),
        }
    }
}

/// What the operator observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoredServiceStatus {
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `TargetFound`, `ProxyAvailable`, `ProxyConfigApplied`, `MonitoringConfigured`,
    /// `TrafficObserved`, and `TakenOver` in takeover mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The Service clients should call to be metered: the target itself once taken over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_service: Option<String>,
    /// Proxy replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Proxy replicas ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The Prometheus objects (`namespace/name`) that select the ServiceMonitor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_by: Vec<String>,
    /// Live traffic figures, read from the proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficStatus>,
}

/// Live traffic through the proxies over the last minute, from their `/api/summary`
/// merged (rates add; percentiles from the added buckets). Refreshed every 30 s and written
/// when a figure changes meaningfully (or every 5 minutes); cleared when no proxy could be
/// read for a minute, which the `TrafficObserved` condition says.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficStatus {
    /// Requests per second.
    pub requests_per_second: String,
    /// Share of 5xx responses.
    pub error_ratio: String,
    /// 95th percentile latency (`123ms`, `1.2s`); absent without requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<String>,
    /// Performance score 0–100 (docs/score.md); absent without requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// `excellent` (≥ 80), `good` (≥ 60), `fair` (≥ 40) or `poor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<String>,
    /// The route with the lowest score, and its score (`GET /api/trips/{id}: 41`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_route: Option<String>,
    /// When the figures were read.
    pub observed_at: String,
}

fn yes() -> bool {
    true
}
fn default_max_inferred_routes() -> usize {
    100
}
fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    5
}
fn default_cpu_target() -> i32 {
    75
}
fn default_interval() -> String {
    "30s".into()
}
fn default_error_ratio() -> f64 {
    0.05
}
fn default_latency_p95() -> f64 {
    1.0
}
fn default_min_requests_per_second() -> f64 {
    1.0
}
fn default_for() -> String {
    "5m".into()
}
fn default_deep_offset() -> u64 {
    crate::pagination::DEEP_OFFSET
}
fn default_deep_pages_min_rate() -> f64 {
    0.1
}
fn default_availability() -> f64 {
    99.9
}
fn default_latency_threshold() -> f64 {
    0.5
}
fn default_latency_objective() -> f64 {
    99.0
}
fn default_window() -> String {
    "30d".into()
}
fn default_dashboard_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("grafana_dashboard".to_string(), "1".to_string())])
}

/// The CRD as YAML, as `routemeter crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&MonitoredService::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_gets_documented_defaults() {
        let spec: MonitoredServiceSpec =
            serde_json::from_value(serde_json::json!({"target": {"service": "api", "port": 80}}))
                .expect("valid");
        assert_eq!(spec.scaling.min_replicas, 2);
        assert_eq!(spec.monitoring.alerts.error_ratio, 0.05);
        assert_eq!(spec.monitoring.alerts.latency_p95_seconds, 1.0);
        assert_eq!(spec.monitoring.alerts.for_, "5m");
        assert_eq!(spec.monitoring.alerts.min_requests_per_second, 1.0);
        assert!(!spec.monitoring.alerts.deep_pages.enabled);
        assert_eq!(spec.monitoring.alerts.deep_pages.min_offset, 1000);
        assert_eq!(
            spec.monitoring.alerts.deep_pages.min_requests_per_second,
            0.1
        );
        assert_eq!(
            spec.monitoring
                .dashboard
                .labels
                .get("grafana_dashboard")
                .map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn pagination_and_proxy_settings_parse_and_are_documented() {
        let spec: MonitoredServiceSpec = serde_json::from_value(serde_json::json!({
            "target": {"service": "api", "port": 80},
            "routes": [
                {"path": "/items", "pagination": {}},
                {"path": "/users", "pagination": {"pageParam": "p", "sizeParam": "page[size]"}},
                {"path": "/plain"},
            ],
            "autoTemplate": {},
            "proxy": {"loadBalancing": "peakEwma", "forwarding": {"trustedHops": 1}},
        }))
        .expect("valid");
        assert_eq!(spec.routes[0].pagination, Some(PaginationSpec::default()));
        assert_eq!(
            spec.routes[1].pagination,
            Some(PaginationSpec {
                page_param: Some("p".into()),
                size_param: Some("page[size]".into()),
                offset_param: None,
            })
        );
        assert_eq!(spec.routes[2].pagination, None);
        assert_eq!(spec.auto_template, Some(AutoTemplateSpec::default()));
        assert_eq!(
            spec.proxy.load_balancing,
            Some(LoadBalancingPolicy::PeakEwma)
        );
        assert_eq!(
            spec.proxy.forwarding,
            Some(ForwardingSpec {
                trusted_hops: 1,
                ..ForwardingSpec::default()
            })
        );
        let yaml = crd_yaml().expect("crd");
        assert!(
            yaml.contains("sizeParam"),
            "the schema documents the fields"
        );
        assert!(yaml.contains("deepPages"));
        assert!(yaml.contains("xForwardedFor"));
        assert!(yaml.contains("- leastRequest"));
    }

    /// The serde defaults (what an absent field gets) and the `Default` impls agree.
    #[test]
    fn empty_objects_get_the_default_values() {
        let auto: AutoTemplateSpec = serde_json::from_value(serde_json::json!({})).expect("{}");
        assert_eq!(auto, AutoTemplateSpec::default());
        assert!(auto.enabled);
        assert_eq!(auto.max_routes, 100);
        let forwarding: ForwardingSpec = serde_json::from_value(serde_json::json!({})).expect("{}");
        assert_eq!(forwarding, ForwardingSpec::default());
        assert!(forwarding.x_forwarded_for && forwarding.x_forwarded_proto);
        assert!(forwarding.x_forwarded_host && !forwarding.forwarded && !forwarding.via);
        assert_eq!(forwarding.trusted_hops, 0);
        assert_eq!(
            LoadBalancingPolicy::default(),
            LoadBalancingPolicy::RoundRobin
        );
    }

    #[test]
    fn crd_carries_cel_rules_and_printer_columns() {
        let yaml = crd_yaml().expect("crd");
        assert!(yaml.contains("self.minReplicas <= self.maxReplicas"));
        assert!(yaml.contains("route names must be unique"));
        assert!(yaml.contains("x-kubernetes-list-type: map"));
        assert!(yaml.contains("shortNames:\n    - msvc"));
        assert!(yaml.contains("jsonPath: .spec.target.service"));
        assert!(yaml.contains("x-kubernetes-int-or-string: true"));
    }
}
