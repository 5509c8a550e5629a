//! The operator as processes: leader election between two operator replicas, each told
//! apart by its metrics. The proxy serving on the operator's config, and live traffic
//! figures, are tested with real pods in tests/pods.rs.

mod cluster_support;
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_support::*;
use common::{BIN, Process, free_port};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

async fn get(url: &str) -> Option<String> {
    let response = reqwest::get(url).await.ok()?;
    response.text().await.ok()
}

async fn is_leader(port: u16) -> Option<bool> {
    let text = get(&format!("http://127.0.0.1:{port}/metrics")).await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("routemeter_operator_leader "))?;
    Some(line.ends_with(" 1"))
}

fn operator(ns: &str, identity: &str, port: u16) -> Process {
    Process(
        Command::new(BIN)
            .args([
                "--log-format",
                "text",
                "operator",
                "--watch-namespace",
                ns,
                "--lease-namespace",
                ns,
            ])
            .args([
                "--identity",
                identity,
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .env("KUBECONFIG", kubeconfig_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start operator"),
    )
}

#[tokio::test]
async fn two_operators_elect_one_leader() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "leader").await;
    let (pa, pb) = (free_port(), free_port());
    let a = operator(&ns, "op-a", pa);
    let b = operator(&ns, "op-b", pb);
    let leader = wait_for("exactly one leader", Duration::from_secs(40), || async {
        match (is_leader(pa).await?, is_leader(pb).await?) {
            (true, false) => Some("op-a"),
            (false, true) => Some("op-b"),
            _ => None,
        }
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = leases.get("routemeter-operator").await.expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(leader)
    );

    // The leader stops: the other replica takes over.
    let (stopped, other_port) = if leader == "op-a" { (&a, pb) } else { (&b, pa) };
    stopped.terminate();
    wait_for(
        "the other replica to lead",
        Duration::from_secs(40),
        || async { is_leader(other_port).await.filter(|l| *l) },
    )
    .await;
    delete_namespace(&client, &ns).await;
}
