//! `routemeter operator`'s arguments, and its start: the admin listener, then the
//! controller, alone or under leader election.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use prometheus::Registry;
use thiserror::Error;

use super::admin;
use super::context::Context;
use super::controller::run_controller;
use super::leader;
use super::metrics::Metrics;
use super::{children, traffic};

/// Why the operator could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot configure a Kubernetes client (in-cluster or KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot serve metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
}

/// Arguments of `routemeter operator`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "ROUTEMETER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Proxy image used when a MonitoredService names none.
    #[arg(long, env = "ROUTEMETER_PROXY_IMAGE", default_value = concat!("routemeter/routemeter:", env!("CARGO_PKG_VERSION")))]
    pub proxy_image: String,
    /// The cluster's DNS domain: the proxies reach in-cluster Services by their fully
    /// qualified names in it (`<svc>.<ns>.svc.<domain>.`).
    #[arg(long, env = "ROUTEMETER_CLUSTER_DOMAIN", default_value = children::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Watch only this namespace (namespace-scoped install); all namespaces when unset.
    #[arg(long, env = "ROUTEMETER_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Elect a leader through a Lease, so several replicas can run.
    #[arg(long, env = "ROUTEMETER_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "ROUTEMETER_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "ROUTEMETER_LEASE_NAME",
        default_value = "routemeter-operator"
    )]
    pub lease_name: String,
    /// Identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How often the proxies' live figures are read into `status.traffic` (at least 1s);
    /// figures no proxy confirmed for two periods are cleared.
    #[arg(long, env = "ROUTEMETER_TRAFFIC_REFRESH", default_value = "30s", value_parser = parse_refresh)]
    pub traffic_refresh: Duration,
}

fn parse_refresh(value: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if period < traffic::MIN_REFRESH {
        return Err(format!(
            "{value:?} is too short, at least {:?}",
            traffic::MIN_REFRESH
        ));
    }
    Ok(period)
}

impl Args {
    /// Runs the operator until SIGTERM or SIGINT.
    pub async fn run(self) -> Result<(), StartError> {
        let client = Client::try_default().await.map_err(StartError::Client)?;
        let registry = Registry::new();
        let metrics = Metrics::register(&registry)?;
        let mut ctx = Context::new(client.clone(), metrics.clone(), self.proxy_image.clone());
        ctx.cluster_domain = self.cluster_domain.clone();
        ctx.traffic_refresh = self.traffic_refresh;
        let ctx = Arc::new(ctx);
        let listener = tokio::net::TcpListener::bind(self.metrics_addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: self.metrics_addr,
                source,
            })?;
        tracing::info!(addr = %self.metrics_addr, "serving /metrics, /healthz, /readyz");
        tokio::spawn(admin::serve_admin(listener, registry, ctx.phase.clone()));

        if !self.leader_election {
            metrics.leader.set(1);
            run_controller(ctx, self.watch_namespace.as_deref()).await;
            return Ok(());
        }
        let identity = self.identity.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "routemeter".into()),
                std::process::id()
            )
        });
        let lease = leader::Lease {
            namespace: &self.lease_namespace,
            name: &self.lease_name,
            identity: &identity,
        };
        leader::lead(client, lease, ctx, self.watch_namespace.as_deref()).await?;
        Ok(())
    }
}
