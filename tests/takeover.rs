//! Takeover mode against the real cluster: the operator (in this process, so a test can
//! kill it between two steps) points the sample application's own Service at the proxies
//! running on the node, and gives it back exactly.
//!
//! Each step the operator takes is one guarded write, so an operator killed at any moment
//! leaves the Service in the state of one step. Each test kills it at one step, restarts
//! it, and checks the Service ends either taken over or with its original selector, never
//! lost and never pointing at nothing.

mod cluster_support;
mod common;
mod node_support;
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_support::*;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use node_support::{DeleteOnDrop, ready_pods, sample_app};
use routemeter::crd::MonitoredService;
use routemeter::operator::takeover::{FINALIZER, RECORD_ANNOTATION, Record};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

fn original() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "trips-api".to_string())])
}

fn proxies() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/instance".to_string(),
            "trips-api".to_string(),
        ),
        (
            "app.kubernetes.io/name".to_string(),
            "routemeter-proxy".to_string(),
        ),
        (
            "routemeter.io/monitored-service".to_string(),
            "trips-api".to_string(),
        ),
    ])
}

/// The sample app (its Service's targetPort is the named port `http`) and a
/// MonitoredService taking it over, with the operator not running yet.
async fn setup(client: &Client, prefix: &str) -> (String, DeleteOnDrop) {
    let ns = namespace(client, prefix).await;
    let guard = DeleteOnDrop(ns.clone());
    sample_app(client, &ns, "trips-api", 1, json!("http")).await;
    ready_pods(client, &ns, "app=trips-api", 1).await;
    apply_msvc(
        client,
        &ns,
        json!({ "metadata": { "name": "trips-api" }, "spec": {
            "mode": "Takeover",
            "target": { "service": "trips-api", "port": 80 },
            "scaling": { "enabled": false },
            "proxy": { "replicas": 1 },
        }}),
    )
    .await;
    (ns, guard)
}

async fn service(client: &Client, ns: &str) -> Service {
    Api::<Service>::namespaced(client.clone(), ns)
        .get("trips-api")
        .await
        .expect("the target Service")
}

fn selector(svc: &Service) -> BTreeMap<String, String> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default()
}

/// Waits until the Service's selector is `want` (and its record present or not).
async fn service_becomes(
    client: &Client,
    ns: &str,
    want: &BTreeMap<String, String>,
    recorded: bool,
) -> Service {
    wait_for(
        &format!("Service trips-api to have selector {want:?}, record {recorded}"),
        WAIT,
        || async {
            let svc = service(client, ns).await;
            let has_record = svc.annotations().contains_key(RECORD_ANNOTATION);
            (selector(&svc) == *want && has_record == recorded).then_some(svc)
        },
    )
    .await
}

async fn taken_over(client: &Client, ns: &str) {
    wait_for("TakenOver=True", WAIT, || async {
        let (status, _, _) = condition(client, ns, "trips-api", "TakenOver").await?;
        (status == "True").then_some(())
    })
    .await;
    let svc = service_becomes(client, ns, &proxies(), true).await;
    let record = Record::of(&svc).expect("readable").expect("a record");
    assert_eq!(
        record.selector,
        original(),
        "the original selector, exactly"
    );
    assert_eq!(
        record.ports,
        BTreeMap::from([("http".to_string(), 8080)]),
        "the named port, resolved through the app's pods"
    );
}

async fn msvc_gone(client: &Client, ns: &str) {
    let api: Api<MonitoredService> = Api::namespaced(client.clone(), ns);
    wait_for("the MonitoredService to be gone", WAIT, || async {
        api.get_opt("trips-api")
            .await
            .ok()
            .and_then(|m| m.is_none().then_some(()))
    })
    .await;
}

#[tokio::test]
async fn killed_after_the_record_the_takeover_completes_on_restart() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let (ns, _guard) = setup(&client, "takeover-record").await;

    let operator = Operator::start(&client, &ns);
    // Step 1 first: the record, the selector untouched (the proxy is not ready yet).
    let svc = service_becomes(&client, &ns, &original(), true).await;
    drop(operator);
    let record = Record::of(&svc).expect("readable").expect("a record");
    assert!(!record.repointed);
    let msvcs: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    let m = msvcs.get("trips-api").await.expect("msvc");
    assert!(
        m.finalizers().iter().any(|f| f == FINALIZER),
        "the finalizer comes before the record"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        selector(&service(&client, &ns).await),
        original(),
        "killed: the Service keeps its original selector"
    );

    let _operator = Operator::start(&client, &ns);
    taken_over(&client, &ns).await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn killed_after_the_repoint_a_delete_waits_and_restores_exactly() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let (ns, _guard) = setup(&client, "takeover-delete").await;
    let operator = Operator::start(&client, &ns);
    taken_over(&client, &ns).await;
    drop(operator);

    // Deleted while no operator runs: the finalizer keeps the MonitoredService (and so
    // its proxies, which the Service points at) until the Service is given back.
    let msvcs: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    msvcs
        .delete("trips-api", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = msvcs
        .get("trips-api")
        .await
        .expect("still there: the finalizer");
    assert!(m.metadata.deletion_timestamp.is_some());
    assert_eq!(selector(&service(&client, &ns).await), proxies());

    let _operator = Operator::start(&client, &ns);
    let svc = service_becomes(&client, &ns, &original(), false).await;
    msvc_gone(&client, &ns).await;
    // Exactly as it was: the selector, and nothing of routemeter left on it.
    assert!(
        !svc.annotations()
            .keys()
            .any(|k| k.starts_with("routemeter.io/")),
        "{:?}",
        svc.annotations()
    );
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn an_invalid_spec_and_parallel_mode_give_the_service_back() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let (ns, _guard) = setup(&client, "takeover-parallel").await;
    let _operator = Operator::start(&client, &ns);
    taken_over(&client, &ns).await;
    let msvcs: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    let merge = |spec: serde_json::Value| {
        let msvcs = msvcs.clone();
        async move {
            msvcs
                .patch(
                    "trips-api",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": spec })),
                )
                .await
                .expect("patch the MonitoredService");
        }
    };

    // A route template the schema cannot check: the spec is invalid, the Service restored.
    merge(json!({ "routes": [{ "path": "/a/*/b" }] })).await;
    service_becomes(&client, &ns, &original(), false).await;
    // The status is written just after the Service.
    wait_for("TakenOver=False, InvalidSpec", WAIT, || async {
        let (status, reason, _) = condition(&client, &ns, "trips-api", "TakenOver").await?;
        (status == "False" && reason == "InvalidSpec").then_some(())
    })
    .await;
    // Fixed: taken over again.
    merge(json!({ "routes": [{ "path": "/api/trips" }] })).await;
    taken_over(&client, &ns).await;

    // Back to Parallel: the original selector, no record, no finalizer; still Ready.
    merge(json!({ "mode": "Parallel" })).await;
    service_becomes(&client, &ns, &original(), false).await;
    wait_for("the finalizer to be removed", WAIT, || async {
        let m = msvcs.get("trips-api").await.ok()?;
        (!m.finalizers().iter().any(|f| f == FINALIZER)).then_some(())
    })
    .await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_selector_changed_by_someone_else_is_reported_not_fought() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let (ns, _guard) = setup(&client, "takeover-drift").await;
    let _operator = Operator::start(&client, &ns);
    taken_over(&client, &ns).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let set_selector = |selector: serde_json::Value| {
        let services = services.clone();
        async move {
            let patch: json_patch::Patch = serde_json::from_value(json!([
                { "op": "replace", "path": "/spec/selector", "value": selector }
            ]))
            .expect("patch");
            services
                .patch(
                    "trips-api",
                    &PatchParams::default(),
                    &Patch::Json::<()>(patch),
                )
                .await
                .expect("edit the selector");
        }
    };

    // `kubectl apply` of the unchanged manifest merges the original keys back next to
    // routemeter's: a selector matching no pod, set back to the proxies' once, reported.
    let mut union = proxies();
    union.extend(original());
    set_selector(json!(union)).await;
    service_becomes(&client, &ns, &proxies(), true).await;
    wait_for("SelectorReasserted", WAIT, || async {
        let (_, reason, _) = condition(&client, &ns, "trips-api", "TakenOver").await?;
        (reason == "SelectorReasserted").then_some(())
    })
    .await;

    // Someone points the Service elsewhere: reported, never overwritten.
    set_selector(json!({ "app": "trips-api-v2" })).await;
    let (status, _, message) = wait_for("SelectorChanged", WAIT, || async {
        let c = condition(&client, &ns, "trips-api", "TakenOver").await?;
        (c.1 == "SelectorChanged").then_some(c)
    })
    .await;
    assert_eq!(status, "False");
    assert!(message.contains("trips-api-v2"), "{message}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        selector(&service(&client, &ns).await),
        BTreeMap::from([("app".to_string(), "trips-api-v2".to_string())]),
        "left as the user set it"
    );
    // Deleted: the record goes, the user's selector stays.
    Api::<MonitoredService>::namespaced(client.clone(), &ns)
        .delete("trips-api", &DeleteParams::default())
        .await
        .expect("delete");
    msvc_gone(&client, &ns).await;
    let svc = service(&client, &ns).await;
    assert_eq!(selector(&svc)["app"], "trips-api-v2");
    assert!(!svc.annotations().contains_key(RECORD_ANNOTATION));
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn services_the_proxies_cannot_serve_are_refused_with_a_condition() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "takeover-refused").await;
    let _guard = DeleteOnDrop(ns.clone());
    let _operator = Operator::start(&client, &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    for (name, spec, why) in [
        (
            "alias",
            json!({ "type": "ExternalName", "externalName": "trips.example.", "ports": [{ "port": 80 }] }),
            "ExternalName",
        ),
        (
            "sticky",
            json!({ "selector": { "app": "x" }, "sessionAffinity": "ClientIP", "ports": [{ "port": 80 }] }),
            "sessionAffinity",
        ),
        (
            "manual",
            json!({ "ports": [{ "port": 80 }] }),
            "no selector",
        ),
    ] {
        services
            .patch(
                name,
                &PatchParams::apply("routemeter-tests"),
                &Patch::Apply(json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": name }, "spec": spec })),
            )
            .await
            .expect("a Service");
        apply_msvc(
            &client,
            &ns,
            json!({ "metadata": { "name": name }, "spec": {
                "mode": "Takeover", "target": { "service": name, "port": 80 },
            }}),
        )
        .await;
        let (status, reason, message) = wait_for(&format!("{name}: TakenOver"), WAIT, || async {
            condition(&client, &ns, name, "TakenOver").await
        })
        .await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "Refused"),
            "{name}"
        );
        assert!(
            message.starts_with(&format!("spec.mode: Takeover: Service {name} "))
                && message.contains(why),
            "{message}"
        );
        let (ready, _, _) = condition(&client, &ns, name, "Ready").await.expect("Ready");
        assert_eq!(
            ready, "False",
            "{name}: not Ready while the takeover is refused"
        );
        let svc = services.get(name).await.expect("svc");
        assert!(
            !svc.annotations().contains_key(RECORD_ANNOTATION),
            "{name}: untouched"
        );
    }
    delete_namespace(&client, &ns).await;
}

/// The two states no single test can stop the operator in reliably are made by hand,
/// exactly as the operator leaves them: its finalizer on the MonitoredService and nothing
/// on the Service yet (killed before the record), and a Service already given back while
/// the deleted MonitoredService still holds the finalizer (killed between the restore and
/// the finalizer's removal).
#[tokio::test]
async fn killed_before_the_record_or_after_the_restore_it_carries_on() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let (ns, _guard) = setup(&client, "takeover-edges").await;
    let msvcs: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    // Before the record: the finalizer only.
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }
    ]))
    .expect("patch");
    msvcs
        .patch(
            "trips-api",
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .expect("the finalizer");
    let operator = Operator::start(&client, &ns);
    taken_over(&client, &ns).await;
    drop(operator);

    // After the restore: the Service given back by hand as the operator does it, then
    // the MonitoredService deleted while no operator runs.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let restore: json_patch::Patch = serde_json::from_value(json!([
        { "op": "replace", "path": "/spec/selector", "value": original() },
        { "op": "remove", "path": format!("/metadata/annotations/{}", RECORD_ANNOTATION.replace('/', "~1")) },
    ]))
    .expect("patch");
    services
        .patch(
            "trips-api",
            &PatchParams::default(),
            &Patch::Json::<()>(restore),
        )
        .await
        .expect("restore by hand");
    msvcs
        .delete("trips-api", &DeleteParams::default())
        .await
        .expect("delete");
    let _operator = Operator::start(&client, &ns);
    msvc_gone(&client, &ns).await;
    let svc = service(&client, &ns).await;
    assert_eq!(selector(&svc), original());
    assert!(!svc.annotations().contains_key(RECORD_ANNOTATION));
    delete_namespace(&client, &ns).await;
}
