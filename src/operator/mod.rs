//! `routemeter operator`: reconciles each `MonitoredService` into a running proxy and its
//! monitoring.
//!
//! From the top down; each module uses only those below it:
//! - [`args`]: `routemeter operator`'s arguments, and its start;
//! - [`leader`]: leader election through a Lease;
//! - [`controller`]: the watches, what each triggers, the error backoff;
//! - [`reconcile`]: one MonitoredService in, its children applied and its status written:
//!   observe, decide, apply, the status once;
//! - [`plan`]: what a reconcile decides from what it observed (pure: no client, no await);
//! - [`takeover`]: takeover mode's steps on the target Service, and giving it back;
//! - [`status`]: conditions and the status write;
//! - [`selection`]: which Prometheus selects the monitoring objects;
//! - [`apply`]: server-side apply, skipped when nothing would change;
//! - [`context`]: what every reconcile shares;
//! - [`traffic`]: what is read from the proxies: their config state, and the live traffic
//!   figures (a loop of its own);
//! - [`caches`]: what the watches keep in memory, and what was applied, so a reconcile
//!   reads no object from the API server and writes only what changed;
//! - [`admin`], [`metrics`], [`error`]: the admin listener and readiness, the operator's
//!   metrics, the reconcile error;
//! - [`children`]: spec → the objects to apply (pure; `routemeter render` uses it too);
//! - [`render`]: `routemeter render`, offline;
//! - [`convert`]: the API's types → the proxy config file's (routes, pagination, auto
//!   template, forwarding, load balancing); it uses only [`crate::crd`] and
//!   [`crate::config`].

pub mod admin;
pub mod apply;
pub mod args;
pub mod caches;
pub mod children;
pub mod context;
pub mod controller;
pub mod convert;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod selection;
pub mod status;
pub mod takeover;
pub mod traffic;

pub use admin::{Phase, PhaseCell};
pub use args::{Args, StartError};
pub use context::Context;
pub use controller::run_controller;
pub use error::Error;
pub use metrics::Metrics;
