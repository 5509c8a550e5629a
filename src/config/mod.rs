//! The proxy's configuration file: the schema `routemeter proxy --config` reads and the
//! operator writes into each proxy's ConfigMap.
//!
//! Field names are camelCase, like the Kubernetes objects the config comes from; durations
//! are strings such as `500ms`, `2s` or `1m`. Unknown fields are rejected so a typo is an
//! error, never a silently ignored setting.

use std::net::SocketAddr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::route::{RouteTable, TableError};

#[cfg(test)]
mod props;

/// OpenTelemetry's default boundaries for `http.server.request.duration`, in seconds.
pub const DEFAULT_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Why a config was rejected; every message starts with the field at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// serde_yaml's message starts with the path of the field at fault
    /// (`routes[2].methods: invalid type: ...`) when the YAML is well-formed.
    #[error("{0}")]
    Parse(#[from] serde_yaml::Error),
    /// A key that is itself a mapping or a list (`? {a: 1}: x`) names no field; serde
    /// says only "expected field identifier", without a path when it is at the top level.
    #[error("{location}a key is a {found}, not a field name: write `field: value`")]
    KeyNotAName { location: String, found: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Routes(#[from] TableError),
}

/// serde_yaml's error, or a clearer one for a key that is a mapping or a list (the field
/// it sits in, if any, then its line).
fn parse_error(error: serde_yaml::Error) -> ConfigError {
    let message = error.to_string();
    let key = message
        .split_once("invalid type: ")
        .and_then(|(path, rest)| {
            let (found, _) = rest.split_once(", expected field identifier")?;
            Some((path.to_string(), found.to_string()))
        });
    match key {
        Some((path, found)) => ConfigError::KeyNotAName {
            location: match error.location() {
                Some(l) => format!("{path}line {} column {}: ", l.line(), l.column()),
                None => path,
            },
            found,
        },
        None => ConfigError::Parse(error),
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole proxy configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the proxy accepts traffic on.
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// More addresses to accept traffic on. A request accepted on one goes to the same
    /// upstream endpoints, at the port it came in on: in takeover mode the proxies listen
    /// on every port of the Service they stand in for, each forwarded to the same port of
    /// the application.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_listeners: Vec<String>,
    /// Address of the admin listener: `/metrics`, `/healthz`, `/readyz`, `/config`.
    #[serde(default = "defaults::admin")]
    pub admin: String,
    /// Where requests go.
    pub upstream: UpstreamConfig,
    /// Declared routes; the most specific match labels the request.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// How requests that match no route are labelled.
    #[serde(default)]
    pub auto_template: AutoTemplate,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// The headers that tell the application who its client is: `X-Forwarded-For`,
    /// `X-Forwarded-Proto`, `X-Forwarded-Host`, and optionally `Forwarded` and `Via`.
    #[serde(default)]
    pub forwarding: Forwarding,
    /// Histogram settings.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// How `/api/summary` scores the traffic; applied on reload.
    #[serde(default)]
    pub summary: SummarySettings,
    /// Process settings; these take effect at start, not on reload.
    #[serde(default)]
    pub server: ServerSettings,
}

/// A declared route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Path template: literal segments, `{name}` for one segment, a final `*` or `{name...}`
    /// for the rest of the path. The template is the request's `http_route` label.
    pub path: String,
    /// HTTP methods this route is limited to; empty means any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// A short name for the route, used in rule and dashboard names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The p95 latency this route is held to by the score of `/api/summary` (`300ms`);
    /// `summary.latencyObjective` when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    #[schemars(with = "Option<String>")]
    pub latency_objective: Option<Duration>,
    /// The route's pagination parameters; with them the proxy records page sizes, offsets
    /// and latency by offset range (docs/pagination.md). `{}` means every default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
}

/// The query parameters that paginate a route's listings, each optional: an absent one
/// has its default name. Pages are 1-based (`offset = (page − 1) × size`); an offset
/// parameter wins over a page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pagination {
    /// The 1-based page number (default `page`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_param: Option<String>,
    /// The page size (default `limit`, else `size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_param: Option<String>,
    /// The offset, items skipped (default `offset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_param: Option<String>,
}

impl Pagination {
    /// The compiled parameter names.
    pub fn params(&self) -> Result<crate::pagination::Params, crate::pagination::ParamError> {
        crate::pagination::Params::new(
            self.page_param.as_deref(),
            self.size_param.as_deref(),
            self.offset_param.as_deref(),
        )
    }
}

impl Route {
    /// The compiled pagination parameters of the route at `index` of `routes`, if it has
    /// pagination; an error names the field at fault (`routes[2].pagination.sizeParam`).
    pub fn pagination_params(
        &self,
        index: usize,
    ) -> Result<Option<crate::pagination::Params>, ConfigError> {
        self.pagination
            .as_ref()
            .map(|p| {
                p.params().map_err(|e| {
                    invalid(
                        format!("routes[{index}].pagination.{}", e.param().field()),
                        e.to_string(),
                    )
                })
            })
            .transpose()
    }
}

/// How `/api/summary` scores the traffic (docs/score.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SummarySettings {
    /// The p95 latency a route without its own `latencyObjective`, and the overall
    /// traffic, is held to (default 500ms).
    #[serde(default = "defaults::latency_objective", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub latency_objective: Duration,
}

impl Default for SummarySettings {
    fn default() -> Self {
        SummarySettings {
            latency_objective: defaults::latency_objective(),
        }
    }
}

/// The upstream endpoints and how requests are spread over them.
///
/// Where the endpoints come from: with `endpointSlices`, the ready endpoints of that
/// Service's EndpointSlices, followed through a watch on the Kubernetes API; `endpoints`
/// is then the fallback, used until the first successful list and whenever the API cannot
/// be reached. Without it, `endpoints` alone, re-resolved through DNS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` endpoints. A hostname is resolved to all its addresses and re-resolved
    /// every `resolveInterval`, so a headless Service's ready pods are followed. With
    /// `endpointSlices`, these are the fallback for when the API cannot be reached.
    pub endpoints: Vec<String>,
    /// Follow the EndpointSlices of this Service instead of DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_slices: Option<EndpointSlices>,
    /// How an endpoint is chosen for each request.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// How often hostnames are resolved again.
    #[serde(default = "defaults::resolve_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub resolve_interval: Duration,
    /// How long an endpoint that failed to connect is left out; doubled on each further
    /// failure up to `ejectionMax`.
    #[serde(default = "defaults::ejection_base", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ejection_base: Duration,
    /// The longest an endpoint is left out.
    #[serde(default = "defaults::ejection_max", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ejection_max: Duration,
    /// The most endpoints, in percent, left out at once (rounded down). Past it the
    /// balancer ignores ejections and spreads over every endpoint, as Envoy's panic mode
    /// does: a lone endpoint is never ejected, so a blip never turns into seconds of 503s.
    #[serde(default = "defaults::max_ejection_percent")]
    pub max_ejection_percent: u8,
}

/// The Service whose EndpointSlices are the upstream endpoints.
///
/// The proxy lists and watches the EndpointSlices labelled
/// `kubernetes.io/service-name=<service>` in `namespace` (it needs get, list and watch on
/// `discovery.k8s.io` `endpointslices` there). Its endpoints are the addresses, IPv4 and
/// IPv6, of every endpoint that is ready (`conditions.ready` true or absent) and not
/// terminating, each at `port`. A terminating endpoint gets no new request; those in
/// flight on it finish. No ready endpoint means every request is answered 503
/// (`no_healthy_upstream`) at once. Changes apply within a second of the slice's update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSlices {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service (the `kubernetes.io/service-name` label of its slices).
    pub service: String,
    /// Port the endpoints are reached on, the same for every address: the target port as
    /// a number (the ports listed in the slices are not used).
    pub port: u16,
}

/// Load-balancing policy: `roundRobin` (each endpoint in turn), `leastRequest` (the
/// fewer requests in flight of two random endpoints) or `peakEwma` (the lower latency
/// estimate × (requests in flight + 1) of two random endpoints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancing {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The less loaded of two random endpoints (power of two choices on in-flight requests).
    LeastRequest,
    /// The cheaper of two random endpoints, the cost being the endpoint's latency estimate
    /// × (its requests in flight + 1). The estimate is a peak-EWMA of the time from choosing
    /// the endpoint to its response head: a slower answer raises it at once, and it decays
    /// with a time constant of 10 s, so an endpoint that turned slow gets little traffic
    /// within one request and is tried again as it decays. An endpoint that has not
    /// answered yet is tried at once, then gets one request at a time until it answers.
    PeakEwma,
}

/// Labelling of requests that match no declared route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoTemplate {
    /// Infer a template by replacing ID-like segments with `{id}`; when off, unmatched
    /// requests count as route `_unmatched`.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// The most distinct templates inferred; past it, requests count as route `_other`.
    #[serde(default = "defaults::max_inferred_routes")]
    pub max_routes: usize,
}

impl Default for AutoTemplate {
    fn default() -> Self {
        AutoTemplate {
            enabled: true,
            max_routes: defaults::max_inferred_routes(),
        }
    }
}

/// Timeouts towards the upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Time to establish a TCP connection to an endpoint (answered with 504 when exceeded).
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub connect: Duration,
    /// Longest wait for each read from the upstream, the response head included (504).
    #[serde(default = "defaults::read_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub read: Duration,
    /// How long an idle pooled upstream connection is kept.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: defaults::connect_timeout(),
            read: defaults::read_timeout(),
            idle: defaults::idle_timeout(),
        }
    }
}

/// Limits on what clients send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted, in bytes; larger ones are
    /// answered with 431.
    #[serde(default = "defaults::max_request_header_bytes")]
    pub max_request_header_bytes: usize,
    /// Longest time from the first byte of a request head to its end; a client slower than
    /// that (a slowloris trickling its headers) has its connection closed, unanswered, as
    /// nginx does past `client_header_timeout`. pingora alone only bounds each read.
    #[serde(default = "defaults::header_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub header_timeout: Duration,
    /// Longest time a client connection may wait for its next request (or its first)
    /// before the proxy closes it. pingora alone keeps an HTTP/1.1 keep-alive connection
    /// open forever after its first request.
    #[serde(default = "defaults::client_idle_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: defaults::max_request_header_bytes(),
            header_timeout: defaults::header_timeout(),
            idle_timeout: defaults::client_idle_timeout(),
        }
    }
}

/// The forwarding headers set on every request sent upstream, so the application sees its
/// real client rather than the proxy. A header the proxy sets replaces or extends the one
/// that came in according to `trustedHops`; see docs/forwarding.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Forwarding {
    /// Set `X-Forwarded-For` to the trusted part of the incoming list (see `trustedHops`)
    /// followed by the client's address (default true).
    #[serde(default = "defaults::yes")]
    pub x_forwarded_for: bool,
    /// Set `X-Forwarded-Proto: http`, the scheme the proxy listens on; with `trustedHops`
    /// above 0 an incoming value is kept (default true).
    #[serde(default = "defaults::yes")]
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Host` to the request's `Host`; with `trustedHops` above 0 an
    /// incoming value is kept (default true).
    #[serde(default = "defaults::yes")]
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

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            forwarded: false,
            via: false,
            trusted_hops: 0,
        }
    }
}

/// Histogram settings. They are read at start: a reload that changes them is logged and
/// takes effect on the next restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSettings {
    /// Boundaries of the request-duration histogram, in seconds.
    #[serde(default = "defaults::buckets")]
    pub duration_buckets: Vec<f64>,
    /// Latency thresholds (SLO or alert thresholds), in seconds, added as boundaries so
    /// the share of requests under each threshold is exact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_thresholds: Vec<f64>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            duration_buckets: defaults::buckets(),
            latency_thresholds: Vec::new(),
        }
    }
}

impl MetricsSettings {
    /// The histogram boundaries: the buckets with every threshold added, sorted, deduplicated.
    pub fn effective_buckets(&self) -> Vec<f64> {
        let mut all: Vec<f64> = self
            .duration_buckets
            .iter()
            .chain(&self.latency_thresholds)
            .copied()
            .collect();
        all.sort_by(f64::total_cmp);
        all.dedup();
        all
    }
}

/// Process settings, read at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSettings {
    /// Worker threads serving traffic; 0 means one per CPU this process may use: its CPU
    /// affinity and its cgroup's CPU quota (v1 or v2), as the standard library reads them.
    /// In a pod with no CPU limit that is the node's CPU count; the operator sets it.
    #[serde(default)]
    pub workers: usize,
    /// Let idle worker threads steal tasks from busy ones. Off by default: each worker
    /// then keeps its connections on its own thread, as nginx workers do, which saves the
    /// cross-thread wake-ups that dominate a proxy's cost under load.
    #[serde(default)]
    pub work_stealing: bool,
    /// After SIGTERM, how long in-flight requests may take to finish.
    #[serde(default = "defaults::grace_period", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub grace_period: Duration,
    /// How often the config file is checked for changes.
    #[serde(default = "defaults::reload_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub reload_interval: Duration,
    /// Bytes of the read buffer of each client connection, held for as long as it is open
    /// (pingora's default is 65536; 0 reads straight into the request's own buffers).
    #[serde(default = "defaults::read_buffer_bytes")]
    pub read_buffer_bytes: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            workers: 0,
            work_stealing: false,
            grace_period: defaults::grace_period(),
            reload_interval: defaults::reload_interval(),
            read_buffer_bytes: defaults::read_buffer_bytes(),
        }
    }
}

/// Default values, one function each so serde and the `Default` impls agree.
pub mod defaults {
    use std::time::Duration;

    pub fn latency_objective() -> Duration {
        Duration::from_millis(500)
    }

    pub fn listen() -> String {
        "0.0.0.0:8080".into()
    }
    pub fn admin() -> String {
        "0.0.0.0:9901".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_inferred_routes() -> usize {
        100
    }
    pub fn resolve_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn ejection_base() -> Duration {
        Duration::from_secs(1)
    }
    pub fn ejection_max() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_ejection_percent() -> u8 {
        50
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn read_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_request_header_bytes() -> usize {
        64 * 1024
    }
    pub fn buckets() -> Vec<f64> {
        super::DEFAULT_DURATION_BUCKETS.to_vec()
    }
    pub fn grace_period() -> Duration {
        Duration::from_secs(15)
    }
    pub fn reload_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn client_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn read_buffer_bytes() -> usize {
        4096
    }
}

impl UpstreamConfig {
    /// Endpoints with the other settings at their defaults.
    pub fn new(endpoints: Vec<String>) -> Self {
        UpstreamConfig {
            endpoints,
            endpoint_slices: None,
            load_balancing: LoadBalancing::default(),
            resolve_interval: defaults::resolve_interval(),
            ejection_base: defaults::ejection_base(),
            ejection_max: defaults::ejection_max(),
            max_ejection_percent: defaults::max_ejection_percent(),
        }
    }
}

impl ProxyConfig {
    /// A config with defaults everywhere but the upstream endpoints and routes.
    pub fn new(endpoints: Vec<String>, routes: Vec<Route>) -> Self {
        ProxyConfig {
            listen: defaults::listen(),
            additional_listeners: Vec::new(),
            admin: defaults::admin(),
            upstream: UpstreamConfig::new(endpoints),
            routes,
            auto_template: AutoTemplate::default(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            forwarding: Forwarding::default(),
            metrics: MetricsSettings::default(),
            summary: SummarySettings::default(),
            server: ServerSettings::default(),
        }
    }

    /// Parses and validates a YAML (or JSON) document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: ProxyConfig = serde_yaml::from_str(text).map_err(parse_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a config file. The bytes read come back too, so a
    /// watcher can tell a later change from this content without reading the file again.
    pub fn load(path: &std::path::Path) -> Result<(Self, Vec<u8>), ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config = Self::from_yaml(&String::from_utf8_lossy(&bytes))?;
        Ok((config, bytes))
    }

    /// The config as YAML, as the operator writes it.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        Ok(serde_yaml::to_string(self)?)
    }

    /// Compiles the routes; the table is what the proxy matches with.
    pub fn route_table(&self) -> Result<RouteTable, TableError> {
        RouteTable::build(self.routes.iter().map(|r| crate::route::RouteSpec {
            path: &r.path,
            methods: &r.methods,
        }))
    }

    /// Checks everything serde cannot: addresses, endpoints, routes, numbers in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, addr) in [("listen", &self.listen), ("admin", &self.admin)] {
            addr.parse::<SocketAddr>()
                .map_err(|e| invalid(field, format!("{addr:?} is not an ip:port address ({e})")))?;
        }
        if self.listen == self.admin {
            return Err(invalid("admin", "must differ from listen"));
        }
        for (i, addr) in self.additional_listeners.iter().enumerate() {
            let field = format!("additionalListeners[{i}]");
            addr.parse::<SocketAddr>().map_err(|e| {
                invalid(&field, format!("{addr:?} is not an ip:port address ({e})"))
            })?;
            if addr == &self.listen
                || addr == &self.admin
                || self.additional_listeners[..i].contains(addr)
            {
                return Err(invalid(field, format!("{addr:?} is listed twice")));
            }
        }
        if self.upstream.endpoints.is_empty() {
            return Err(invalid(
                "upstream.endpoints",
                "at least one host:port endpoint is required",
            ));
        }
        for (i, endpoint) in self.upstream.endpoints.iter().enumerate() {
            split_host_port(endpoint)
                .map_err(|m| invalid(format!("upstream.endpoints[{i}]"), m))?;
        }
        if let Some(slices) = &self.upstream.endpoint_slices {
            for (field, name) in [
                ("upstream.endpointSlices.namespace", &slices.namespace),
                ("upstream.endpointSlices.service", &slices.service),
            ] {
                if !is_dns_label(name) {
                    return Err(invalid(
                        field,
                        format!("{name:?} is not a Kubernetes name (a DNS label)"),
                    ));
                }
            }
            if slices.port == 0 {
                return Err(invalid("upstream.endpointSlices.port", "must not be 0"));
            }
        }
        for (field, d) in [
            ("upstream.resolveInterval", self.upstream.resolve_interval),
            ("upstream.ejectionBase", self.upstream.ejection_base),
            ("timeouts.connect", self.timeouts.connect),
            ("timeouts.read", self.timeouts.read),
            ("timeouts.idle", self.timeouts.idle),
            ("server.reloadInterval", self.server.reload_interval),
            ("limits.headerTimeout", self.limits.header_timeout),
            ("limits.idleTimeout", self.limits.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "must be greater than zero"));
            }
        }
        if self.upstream.ejection_max < self.upstream.ejection_base {
            return Err(invalid(
                "upstream.ejectionMax",
                "must not be less than upstream.ejectionBase",
            ));
        }
        if self.upstream.max_ejection_percent > 100 {
            return Err(invalid(
                "upstream.maxEjectionPercent",
                "must be at most 100",
            ));
        }
        if self.auto_template.max_routes == 0 {
            return Err(invalid("autoTemplate.maxRoutes", "must be at least 1"));
        }
        if self.limits.max_request_header_bytes < 1024 {
            return Err(invalid(
                "limits.maxRequestHeaderBytes",
                "must be at least 1024",
            ));
        }
        for (field, values) in [
            ("metrics.durationBuckets", &self.metrics.duration_buckets),
            (
                "metrics.latencyThresholds",
                &self.metrics.latency_thresholds,
            ),
        ] {
            if let Some(bad) = values.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                return Err(invalid(
                    field,
                    format!("{bad} is not a positive number of seconds"),
                ));
            }
        }
        if self.metrics.duration_buckets.is_empty() {
            return Err(invalid(
                "metrics.durationBuckets",
                "at least one boundary is required",
            ));
        }
        self.route_table()?;
        for (i, route) in self.routes.iter().enumerate() {
            route.pagination_params(i)?;
        }
        Ok(())
    }
}

/// Whether `name` is a DNS label (RFC 1123): what namespace and Service names are, and a
/// valid label value for the slices' selector.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// Splits `host:port` (or `[v6]:port`), checking the port.
pub fn split_host_port(endpoint: &str) -> Result<(&str, u16), String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("{endpoint:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{endpoint:?} has no host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{endpoint:?} has no valid port"))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
listen: 127.0.0.1:8000
admin: 127.0.0.1:9901
upstream:
  endpoints: ["127.0.0.1:8080", "api.default.svc:80"]
  loadBalancing: leastRequest
  resolveInterval: 2s
routes:
  - path: /users/{id}
    methods: [GET]
    name: get-user
  - path: /static/*
timeouts: { connect: 500ms, read: 30s }
metrics:
  latencyThresholds: [0.3, 1]
"#;

    #[test]
    fn parses_with_defaults() {
        let c = ProxyConfig::from_yaml(FULL).expect("valid");
        assert_eq!(c.upstream.load_balancing, LoadBalancing::LeastRequest);
        assert_eq!(c.upstream.resolve_interval, Duration::from_secs(2));
        assert_eq!(c.timeouts.connect, Duration::from_millis(500));
        assert_eq!(c.timeouts.idle, defaults::idle_timeout());
        assert!(c.auto_template.enabled);
        assert_eq!(c.auto_template.max_routes, 100);
        assert_eq!(c.routes[0].name.as_deref(), Some("get-user"));
        assert_eq!(c.forwarding, Forwarding::default());
        assert!(c.forwarding.x_forwarded_for && !c.forwarding.forwarded);
        assert_eq!(c.forwarding.trusted_hops, 0);
    }

    #[test]
    fn load_balancing_policies_are_camel_case() {
        for (yaml, policy) in [
            ("roundRobin", LoadBalancing::RoundRobin),
            ("leastRequest", LoadBalancing::LeastRequest),
            ("peakEwma", LoadBalancing::PeakEwma),
        ] {
            let c = ProxyConfig::from_yaml(&format!(
                "upstream: {{endpoints: ['127.0.0.1:1'], loadBalancing: {yaml}}}\n"
            ))
            .expect("valid");
            assert_eq!(c.upstream.load_balancing, policy);
        }
        assert!(
            ProxyConfig::from_yaml("upstream: {endpoints: ['127.0.0.1:1'], loadBalancing: ewma}\n")
                .is_err()
        );
    }

    #[test]
    fn forwarding_fields_are_camel_case_and_checked() {
        let c = ProxyConfig::from_yaml(
            "upstream: {endpoints: ['a:1']}\n\
             forwarding: {xForwardedHost: false, forwarded: true, via: true, trustedHops: 2}",
        )
        .expect("valid");
        assert!(c.forwarding.x_forwarded_for && !c.forwarding.x_forwarded_host);
        assert!(c.forwarding.forwarded && c.forwarding.via);
        assert_eq!(c.forwarding.trusted_hops, 2);
        let err = ProxyConfig::from_yaml("upstream: {endpoints: ['a:1']}\nforwarding: {xff: true}")
            .expect_err("typo");
        assert!(err.to_string().contains("xff"), "{err}");
    }

    #[test]
    fn round_trips_through_yaml() {
        let c = ProxyConfig::from_yaml(FULL).expect("valid");
        let again = ProxyConfig::from_yaml(&c.to_yaml().expect("serializes")).expect("valid");
        assert_eq!(c, again);
    }

    #[test]
    fn thresholds_become_bucket_boundaries() {
        let c = ProxyConfig::from_yaml(FULL).expect("valid");
        let b = c.metrics.effective_buckets();
        assert!(b.contains(&0.3) && b.contains(&1.0));
        assert!(
            b.windows(2).all(|w| w[0] < w[1]),
            "sorted and unique: {b:?}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("upstream: {endpoints: []}", "upstream.endpoints:"),
            (
                "upstream: {endpoints: ['nohost']}",
                "upstream.endpoints[0]:",
            ),
            ("upstream: {endpoints: ['a:0']}", "upstream.endpoints[0]:"),
            ("listen: nope\nupstream: {endpoints: ['a:1']}", "listen:"),
            (
                "upstream: {endpoints: ['a:1']}\nroutes: [{path: users}]",
                "routes[0].path",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nautoTemplate: {maxRoutes: 0}",
                "autoTemplate.maxRoutes:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nmetrics: {latencyThresholds: [-1]}",
                "metrics.latencyThresholds:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\ntimeouts: {connect: 0s}",
                "timeouts.connect:",
            ),
            // A key that is a mapping: no field to name, so the line, and what it is.
            (
                "upstream: {endpoints: ['a:1']}\n? {routes: []}\n: x",
                "line 2 column 3: a key is a map, not a field name",
            ),
            (
                "upstream: {endpoints: ['a:1'], ? [a]: x}",
                "upstream: line 1 column 34: a key is a sequence, not a field name",
            ),
            // Type errors, caught by serde: its path names the field.
            (
                "upstream: {endpoints: ['a:1']}\nroutes: [{path: /a}, {path: /b}, {path: /c, methods: GET}]",
                "routes[2].methods:",
            ),
            (
                "upstream: {endpoints: ['a:1'], resolveInterval: soon}",
                "upstream.resolveInterval:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nserver: {workers: many}",
                "server.workers:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nforwarding: {trustedHops: 256}",
                "forwarding.trustedHops:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nforwarding: {trustedHops: -1}",
                "forwarding.trustedHops:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nforwarding: {xForwardedFor: append}",
                "forwarding.xForwardedFor:",
            ),
            (
                "upstream: {endpoints: ['a:1'], endpointSlices: {namespace: Apps, service: api, port: 80}}",
                "upstream.endpointSlices.namespace:",
            ),
            (
                "upstream: {endpoints: ['a:1'], endpointSlices: {namespace: apps, service: '', port: 80}}",
                "upstream.endpointSlices.service:",
            ),
            (
                "upstream: {endpoints: ['a:1'], endpointSlices: {namespace: apps, service: api, port: 0}}",
                "upstream.endpointSlices.port:",
            ),
            (
                "upstream: {endpoints: ['a:1'], endpointSlices: {namespace: apps, service: api}}",
                "upstream.endpointSlices:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nroutes: [{path: /a}, {path: /b}, {path: /c, pagination: {sizeParam: 'per page'}}]",
                "routes[2].pagination.sizeParam:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nroutes: [{path: /a, pagination: {pageParam: limit}}]",
                "routes[0].pagination.pageParam:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nroutes: [{path: /a, pagination: {offsetParam: ''}}]",
                "routes[0].pagination.offsetParam:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nroutes: [{path: /a, pagination: {sizeParam: [limit]}}]",
                "routes[0].pagination.sizeParam:",
            ),
            (
                "upstream: {endpoints: ['a:1']}\nroutes: [{path: /a, pagination: {size: limit}}]",
                "routes[0].pagination:",
            ),
        ];
        for (yaml, field) in cases {
            let err = ProxyConfig::from_yaml(yaml).expect_err(yaml).to_string();
            assert!(
                err.starts_with(field),
                "{yaml:?} gave {err:?}, wanted it to start with {field:?}"
            );
        }
    }

    #[test]
    fn endpoint_slices_are_optional_and_round_trip() {
        let c = ProxyConfig::from_yaml(
            "upstream:\n  endpoints: ['api.apps.svc:8080']\n  endpointSlices: {namespace: apps, service: api, port: 8080}\n",
        )
        .expect("valid");
        assert_eq!(
            c.upstream.endpoint_slices,
            Some(EndpointSlices {
                namespace: "apps".into(),
                service: "api".into(),
                port: 8080
            })
        );
        let yaml = c.to_yaml().expect("serializes");
        assert_eq!(ProxyConfig::from_yaml(&yaml).expect("valid"), c);
        let without = ProxyConfig::from_yaml(FULL).expect("valid");
        assert!(without.upstream.endpoint_slices.is_none());
        assert!(!without.to_yaml().expect("yaml").contains("endpointSlices"));
    }

    #[test]
    fn pagination_is_optional_and_empty_means_the_defaults() {
        let c = ProxyConfig::from_yaml(
            "upstream: {endpoints: ['a:1']}\n\
             routes:\n  - {path: /items, pagination: {}}\n  - {path: /users, pagination: {sizeParam: per_page}}\n  - {path: /plain}\n",
        )
        .expect("valid");
        assert_eq!(c.routes[0].pagination, Some(Pagination::default()));
        let params = c.routes[0]
            .pagination
            .as_ref()
            .expect("set")
            .params()
            .expect("valid");
        assert_eq!(params.sizes().collect::<Vec<_>>(), ["limit", "size"]);
        assert_eq!(
            c.routes[1]
                .pagination
                .as_ref()
                .and_then(|p| p.size_param.as_deref()),
            Some("per_page")
        );
        assert_eq!(c.routes[2].pagination, None);
        let yaml = c.to_yaml().expect("yaml");
        assert!(yaml.contains("pagination: {}"), "{yaml}");
        assert_eq!(ProxyConfig::from_yaml(&yaml).expect("valid"), c);
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err =
            ProxyConfig::from_yaml("upstream: {endpoints: ['a:1']}\nroutez: []").expect_err("typo");
        assert!(err.to_string().contains("routez"), "{err}");
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a.b:80"), Ok(("a.b", 80)));
        assert_eq!(split_host_port("[::1]:8080"), Ok(("::1", 8080)));
        assert!(split_host_port("a.b").is_err());
        assert!(split_host_port(":80").is_err());
    }
}
