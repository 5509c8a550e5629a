//! routemeter: per-route Prometheus metrics, alerts and dashboards for any HTTP service on
//! Kubernetes, without touching its code.
//!
//! - [`crd`]: the `MonitoredService` API types (no I/O; types of their own, which the
//!   operator converts into the proxy's [`config`]);
//! - [`operator`]: reconciliation of a `MonitoredService` into a proxy and its monitoring;
//! - [`proxy`]: the metering reverse proxy;
//! - shared: [`config`] (the proxy config the operator writes), [`route`] (templates and
//!   matching), [`outcome`] (what counts as a failed request), [`pagination`]
//!   (pagination parameters, their ranges and the query reader),
//!   [`proxy_pods`] (how a MonitoredService's proxy pods are found and reached),
//!   [`summary`] (the live summary's JSON, windows, score, `compare` and `top`), [`cli`]
//!   and [`telemetry`].

pub mod cli;
pub mod config;
pub mod crd;
pub mod monitoring;
pub mod operator;
pub mod outcome;
pub mod pagination;
pub mod proxy;
pub mod proxy_pods;
pub mod route;
pub mod summary;
pub mod telemetry;
