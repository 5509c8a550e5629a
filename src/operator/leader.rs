//! Leader election through a Lease: one replica reconciles, the others stand by and
//! take over when its Lease lapses.

use std::sync::Arc;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};

use super::admin::Phase;
use super::context::Context;
use super::controller::run_controller;

/// The Lease a replica competes for, and the name it holds it under.
pub struct Lease<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub identity: &'a str,
}

/// Runs the controller whenever this replica holds `lease`, until SIGTERM or SIGINT;
/// stands by while another replica holds it. The Lease is released on the way out, so
/// the next replica leads at once rather than after the Lease's duration.
pub async fn lead(
    client: Client,
    lease: Lease<'_>,
    ctx: Arc<Context>,
    namespace: Option<&str>,
) -> Result<(), LeaseManagerError> {
    let Lease {
        namespace: lease_namespace,
        name,
        identity,
    } = lease;
    let metrics = ctx.metrics.clone();
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(lease_namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    ctx.phase.set(Phase::Standby);
    tracing::info!(%identity, lease = %name, "waiting to become leader");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return Ok(()) },
                _ = &mut shutdown => return Ok(()),
            }
        }
        tracing::info!(%identity, "became leader");
        metrics.leader.set(1);
        tokio::select! {
            _ = run_controller(ctx.clone(), namespace) => break,
            _ = async { while *leading.borrow() { if leading.changed().await.is_err() { break } } } => {
                tracing::warn!("lost leadership; stopping the controller");
                metrics.leader.set(0);
                ctx.phase.set(Phase::Standby);
            }
            _ = &mut shutdown => break,
        }
    }
    // Dropping the channel makes the lease task release the lease for the next leader.
    drop(leading);
    if let Ok(Ok(manager)) = lease_task.await {
        let _ = manager.release().await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
