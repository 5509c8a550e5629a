//! The operator against a real kube-apiserver, kube-controller-manager and etcd
//! (`make cluster-up`), with the official Prometheus Operator CRDs installed.

mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use cluster_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use routemeter::config::ProxyConfig;
use routemeter::crd::MonitoredService;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn monitoring(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind),
        plural,
    )
}

fn msvc(name: &str, target: &str, routes: serde_json::Value) -> serde_json::Value {
    json!({ "metadata": { "name": name }, "spec": { "target": { "service": target, "port": 80 }, "routes": routes } })
}

async fn config_of(client: &Client, ns: &str, name: &str) -> Option<ProxyConfig> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = cms.get_opt(&format!("{name}-routemeter")).await.ok()??;
    let text = cm.data?.get("config.yaml")?.clone();
    Some(ProxyConfig::from_yaml(&text).expect("the operator writes a valid proxy config"))
}

#[tokio::test]
async fn creates_every_child_with_owner_references() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "create").await;
    let _op = Operator::start(&client, &ns);
    create_target(&client, &ns, "web").await;
    let created = apply_msvc(
        &client,
        &ns,
        msvc(
            "web",
            "web",
            json!([{ "path": "/users/{id}", "methods": ["GET"] }]),
        ),
    )
    .await;
    let uid = created.uid().expect("uid");

    let config = wait_for("the proxy ConfigMap", WAIT, || {
        config_of(&client, &ns, "web")
    })
    .await;
    assert_eq!(config.routes[0].path, "/users/{id}");
    // The proxies follow the target's own EndpointSlices at its target port; its
    // address is the fallback.
    assert_eq!(
        config.upstream.endpoints,
        vec![format!("web.{ns}.svc.cluster.local.:80")]
    );
    let slices = config.upstream.endpoint_slices.expect("endpointSlices");
    assert_eq!(
        (
            slices.namespace.as_str(),
            slices.service.as_str(),
            slices.port
        ),
        (ns.as_str(), "web", 8080)
    );
    assert!(
        config.metrics.effective_buckets().contains(&0.5),
        "the SLO threshold is a bucket boundary"
    );

    let owned_by_msvc = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let refs = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(refs.len(), 1, "{:?}", meta.name);
        assert_eq!(refs[0].uid, uid);
        assert_eq!(refs[0].kind, "MonitoredService");
        assert_eq!(refs[0].controller, Some(true));
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = wait_for("the Deployment", WAIT, || async {
        deployments.get_opt("web-routemeter").await.ok()?
    })
    .await;
    owned_by_msvc(&d.metadata);
    let pod = d.spec.expect("spec").template.spec.expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(
        container.args.as_deref(),
        Some(
            &[
                "proxy".to_string(),
                "--config".into(),
                "/etc/routemeter/config.yaml".into()
            ][..]
        )
    );
    let sc = container
        .security_context
        .clone()
        .expect("security context");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        pod.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    // No Service of the proxies' own for the target's pods: that is only for takeover.
    assert!(
        services
            .get_opt("web-routemeter-upstream")
            .await
            .expect("get")
            .is_none()
    );
    for (name, headless) in [("web-routemeter", false), ("web-routemeter-metrics", true)] {
        let s = wait_for(name, WAIT, || async { services.get_opt(name).await.ok()? }).await;
        owned_by_msvc(&s.metadata);
        let ip = s.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        assert_eq!(ip == "None", headless, "{name}: cluster IP {ip}");
    }
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    owned_by_msvc(
        &wait_for("the HPA", WAIT, || async {
            hpas.get_opt("web-routemeter").await.ok()?
        })
        .await
        .metadata,
    );
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    owned_by_msvc(
        &wait_for("the PDB", WAIT, || async {
            pdbs.get_opt("web-routemeter").await.ok()?
        })
        .await
        .metadata,
    );
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ] {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &monitoring(kind, plural));
        let o = wait_for(kind, WAIT, || async {
            api.get_opt("web-routemeter").await.ok()?
        })
        .await;
        owned_by_msvc(&o.metadata);
    }
    let (status, _, _) = wait_for("TargetFound=True", WAIT, || async {
        condition(&client, &ns, "web", "TargetFound")
            .await
            .filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(status, "True");
    // No kubelet runs here: no pod becomes available, and the status says so.
    let (status, reason, _) = condition(&client, &ns, "web", "Ready")
        .await
        .expect("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NoReplicasAvailable")
    );
    // The proxies' identity is the namespace's, one for every MonitoredService there,
    // owned (not controlled) by the oldest; its RoleBinding is bound once its Role is in
    // the operator's cache, and nothing failed on the way: a binding sent together with
    // its new Role used to be refused (404), an ApplyFailed Warning on most new
    // MonitoredServices.
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(routemeter::operator::children::PROXY_IDENTITY)
    );
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), &ns);
    let binding = wait_for("the RoleBinding", WAIT, || async {
        bindings
            .get_opt(routemeter::operator::children::PROXY_IDENTITY)
            .await
            .ok()?
    })
    .await;
    let owners = binding
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].uid.as_str(), owners[0].controller),
        (uid.as_str(), None)
    );
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", routemeter::operator::children::PROXY_IDENTITY)
    );
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        (
            "ServiceAccount",
            routemeter::operator::children::PROXY_IDENTITY
        )
    );
    let failed: Vec<_> = events_of(&client, &ns, "web")
        .await
        .into_iter()
        .filter(|e| e.reason == "ApplyFailed")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    delete_namespace(&client, &ns).await;
}

/// An earlier version made the proxies' metrics Service with a cluster IP; it is headless
/// now, and a cluster IP cannot change once set: the operator makes the Service anew.
#[tokio::test]
async fn a_metrics_service_with_a_cluster_ip_is_made_anew_headless() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "headless").await;
    create_target(&client, &ns, "web").await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let old = services
        .patch(
            "web-routemeter-metrics",
            &PatchParams::apply("routemeter").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "web-routemeter-metrics",
                    "labels": { "app.kubernetes.io/managed-by": "routemeter" },
                },
                "spec": {
                    "type": "ClusterIP",
                    "selector": { "app.kubernetes.io/instance": "web-routemeter" },
                    "ports": [{ "name": "admin", "port": 9901, "targetPort": "admin" }],
                },
            })),
        )
        .await
        .expect("the earlier metrics Service");
    let old_ip = old.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    assert_ne!(old_ip, "None");
    let op = Operator::start(&client, &ns);
    apply_msvc(&client, &ns, msvc("web", "web", json!([{ "path": "/" }]))).await;
    let anew = wait_for("the metrics Service headless", WAIT, || async {
        let s = services.get_opt("web-routemeter-metrics").await.ok()??;
        let ip = s.spec.as_ref()?.cluster_ip.clone()?;
        (ip == "None").then_some(s)
    })
    .await;
    assert_ne!(anew.metadata.uid, old.metadata.uid, "made anew");
    let owners = anew.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].kind, "MonitoredService");
    // Counted once the apply that made it anew has answered.
    let replaced = || {
        op.metric(
            "routemeter_operator_child_writes_total",
            &["kind=\"Service\"", "outcome=\"replaced\""],
        )
    };
    wait_for("the replacement counted", WAIT, || async {
        (replaced() > 0.0).then_some(())
    })
    .await;
    assert_eq!(replaced(), 1.0);
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn spec_changes_reach_the_children() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "update").await;
    let _op = Operator::start(&client, &ns);
    create_target(&client, &ns, "api").await;
    apply_msvc(&client, &ns, msvc("api", "api", json!([{ "path": "/a" }]))).await;
    wait_for("the first config", WAIT, || config_of(&client, &ns, "api")).await;

    let mut changed = msvc(
        "api",
        "api",
        json!([{ "path": "/a" }, { "path": "/b/{id}" }]),
    );
    changed["spec"]["scaling"] = json!({ "minReplicas": 3, "maxReplicas": 9 });
    apply_msvc(&client, &ns, changed).await;
    let config = wait_for("the new route in the config", WAIT, || async {
        config_of(&client, &ns, "api")
            .await
            .filter(|c| c.routes.len() == 2)
    })
    .await;
    assert_eq!(config.routes[1].path, "/b/{id}");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    wait_for("maxReplicas 9", WAIT, || async {
        hpas.get_opt("api-routemeter")
            .await
            .ok()?
            .filter(|h| h.spec.as_ref().is_some_and(|s| s.max_replicas == 9))
    })
    .await;

    // Turning autoscaling off deletes the HPA and gives the Deployment its replicas.
    let mut off = msvc("api", "api", json!([{ "path": "/a" }]));
    off["spec"]["scaling"] = json!({ "enabled": false });
    off["spec"]["proxy"] = json!({ "replicas": 4 });
    apply_msvc(&client, &ns, off).await;
    wait_for("the HPA to go", WAIT, || async {
        hpas.get_opt("api-routemeter")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for("replicas 4", WAIT, || async {
        deployments
            .get_opt("api-routemeter")
            .await
            .ok()?
            .filter(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(4))
    })
    .await;

    // The proxies follow the target's EndpointSlices at its numeric target port.
    let config = config_of(&client, &ns, "api").await.expect("config");
    assert_eq!(
        config.upstream.endpoint_slices.map(|s| (s.service, s.port)),
        Some(("api".to_string(), 8080))
    );
    // A headless Service an earlier version made for the target's pods (only takeover
    // needs one now) is deleted by the next reconcile.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let legacy: Service = serde_json::from_value(json!({
        "metadata": { "name": "api-routemeter-upstream", "labels": { "app.kubernetes.io/managed-by": "routemeter" } },
        "spec": { "clusterIP": "None", "selector": { "app": "api" }, "ports": [{ "port": 8080 }] },
    }))
    .expect("a Service");
    services
        .create(&Default::default(), &legacy)
        .await
        .expect("create");
    // The target switches to a named container port, which only its pods know: traffic
    // goes through the target's own address alone.
    services
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "ports": [
                { "name": "http", "port": 80, "targetPort": "web" }
            ] } })),
        )
        .await
        .expect("patch the target");
    let config = wait_for(
        "the upstream to be the target Service alone",
        WAIT,
        || async {
            config_of(&client, &ns, "api")
                .await
                .filter(|c| c.upstream.endpoint_slices.is_none())
        },
    )
    .await;
    assert_eq!(
        config.upstream.endpoints,
        [format!("api.{ns}.svc.cluster.local.:80")]
    );
    assert_eq!(config.routes.len(), 1);
    wait_for("the old headless Service to go", WAIT, || async {
        services
            .get_opt("api-routemeter-upstream")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn missing_target_is_reported_and_recovered() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "target").await;
    let _op = Operator::start(&client, &ns);
    apply_msvc(&client, &ns, msvc("late", "late", json!([]))).await;
    let (_, reason, message) = wait_for("TargetFound=False", WAIT, || async {
        condition(&client, &ns, "late", "TargetFound")
            .await
            .filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "ServiceNotFound");
    assert!(message.contains("late"), "{message}");
    // The Service watch brings the recovery, well before the 30 s retry.
    create_target(&client, &ns, "late").await;
    wait_for("TargetFound=True", Duration::from_secs(20), || async {
        condition(&client, &ns, "late", "TargetFound")
            .await
            .filter(|c| c.0 == "True")
    })
    .await;
    wait_for("the ConfigMap", WAIT, || config_of(&client, &ns, "late")).await;
    delete_namespace(&client, &ns).await;
}

/// Every kind of invalid input, one object each: what the API server's schema and CEL
/// rules can say is refused at the door naming the field; what only the operator can
/// check (templates, durations, routes matching the same requests, a port the Service
/// lacks) is a condition and a Warning Event naming the field. No object is reconciled
/// more than a few times: an invalid spec waits for the next edit, never loops.
#[tokio::test]
async fn every_invalid_field_is_named_and_never_reconciled_in_a_loop() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "invalid").await;
    let op = Operator::start(&client, &ns);
    create_target(&client, &ns, "svc").await;
    let api: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    let spec = |extra: serde_json::Value| {
        let mut spec = json!({ "target": { "service": "svc", "port": 80 } });
        for (k, v) in extra.as_object().expect("an object") {
            spec[k] = v.clone();
        }
        spec
    };

    // Refused by the API server: (what, spec, the field its message names).
    let refused = [
        (
            "a path without /",
            json!({ "routes": [{ "path": "users" }] }),
            "spec.routes[0].path",
        ),
        (
            "duplicate route names",
            json!({ "routes": [{ "path": "/a", "name": "x" }, { "path": "/b", "name": "x" }] }),
            "route names must be unique",
        ),
        (
            "min > max replicas",
            json!({ "scaling": { "minReplicas": 5, "maxReplicas": 2 } }),
            "minReplicas must not exceed maxReplicas",
        ),
        (
            "an error ratio above 1",
            json!({ "monitoring": { "alerts": { "errorRatio": 1.5 } } }),
            "spec.monitoring.alerts.errorRatio",
        ),
        (
            "an availability above 100",
            json!({ "monitoring": { "slo": { "availability": 101 } } }),
            "spec.monitoring.slo.availability",
        ),
        (
            "a duration that is no duration",
            json!({ "proxy": { "timeouts": { "connect": "soon" } } }),
            "spec.proxy.timeouts.connect",
        ),
        (
            "0 workers",
            json!({ "proxy": { "workers": 0 } }),
            "spec.proxy.workers",
        ),
        (
            "a negative rate",
            json!({ "monitoring": { "alerts": { "minRequestsPerSecond": -1 } } }),
            "spec.monitoring.alerts.minRequestsPerSecond",
        ),
        (
            "an SLO window in hours",
            json!({ "monitoring": { "slo": { "window": "12h" } } }),
            "spec.monitoring.slo.window",
        ),
        (
            "an unknown load-balancing policy",
            json!({ "proxy": { "loadBalancing": "random" } }),
            "spec.proxy.loadBalancing",
        ),
    ];
    for (i, (what, extra, field)) in refused.iter().enumerate() {
        let body = json!({
            "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService",
            "metadata": { "name": format!("refused-{i}") }, "spec": spec(extra.clone()),
        });
        let err = api
            .patch(
                &format!("refused-{i}"),
                &PatchParams::apply("routemeter-tests"),
                &Patch::Apply(&body),
            )
            .await
            .expect_err(what);
        assert!(err.to_string().contains(field), "{what}: {err}");
    }

    // Accepted by the API server, refused by the operator: (name, spec, condition type,
    // reason, the field its message names).
    let reported = [
        (
            "template",
            json!({ "routes": [{ "path": "/a/*/b" }] }),
            "Ready",
            "InvalidSpec",
            "spec.routes[0].path",
        ),
        (
            "same-requests",
            json!({ "routes": [{ "path": "/u/{id}" }, { "path": "/u/{name}" }] }),
            "Ready",
            "InvalidSpec",
            "spec.routes[1]",
        ),
        (
            "zero-timeout",
            json!({ "proxy": { "timeouts": { "read": "0s" } } }),
            "Ready",
            "InvalidSpec",
            "spec.proxy.timeouts.read",
        ),
        (
            "bad-method",
            json!({ "routes": [{ "path": "/a", "methods": ["GE T"] }] }),
            "Ready",
            "InvalidSpec",
            "spec.routes[0].methods",
        ),
        (
            "unknown-port",
            json!({ "target": { "service": "svc", "port": "metrics" } }),
            "TargetFound",
            "PortNotFound",
            "metrics",
        ),
        (
            "missing-target",
            json!({ "target": { "service": "nowhere", "port": 80 } }),
            "TargetFound",
            "ServiceNotFound",
            "spec.target.service",
        ),
    ];
    for (name, extra, ..) in &reported {
        apply_msvc(
            &client,
            &ns,
            json!({ "metadata": { "name": name }, "spec": spec(extra.clone()) }),
        )
        .await;
    }
    for (name, _, type_, reason, field) in &reported {
        let (_, _, message) = wait_for(&format!("{name}: {type_}={reason}"), WAIT, || async {
            condition(&client, &ns, name, type_)
                .await
                .filter(|c| c.0 == "False" && c.1 == *reason)
        })
        .await;
        assert!(message.contains(field), "{name}: {message}");
        let ready = condition(&client, &ns, name, "Ready").await.expect("Ready");
        assert_eq!(ready.0, "False", "{name}: {ready:?}");
        let event = wait_for(
            &format!("{name}: a Warning Event {reason}"),
            WAIT,
            || async {
                events_of(&client, &ns, name)
                    .await
                    .into_iter()
                    .find(|e| e.type_ == "Warning" && e.reason == *reason)
            },
        )
        .await;
        assert!(event.note.contains(field), "{name}: {event:?}");
        assert_eq!(event.reporter, "routemeter.io/operator");
    }

    // At rest: over 10 s, a few more reconciles per object, never a loop (which, at the
    // controller's 500 ms debounce, would be up to 20 each). A few: the 30 s retry of a
    // missing target or port, and a Prometheus created or deleted anywhere (the test
    // beside this one does both) asks for every MonitoredService to be looked at again.
    // Each Event was written once.
    let objects = reported.len() as f64;
    let before = op.metric("routemeter_operator_reconciliations_total", &[]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = op.metric("routemeter_operator_reconciliations_total", &[]);
    assert!(
        after - before <= 3.0 * objects,
        "{} reconciles of {objects} invalid objects in 10 s at rest",
        after - before
    );
    assert!(
        after <= 6.0 * objects,
        "{after} reconciles of {objects} objects in all"
    );
    for (name, _, _, reason, _) in &reported {
        let warnings: Vec<_> = events_of(&client, &ns, name)
            .await
            .into_iter()
            .filter(|e| e.type_ == "Warning")
            .collect();
        assert!(
            warnings.len() == 1 && warnings[0].reason == *reason && warnings[0].count <= 2,
            "{name}: {warnings:?}"
        );
    }

    // A fix is seen at once: the template corrected, the condition clears.
    apply_msvc(&client, &ns, json!({ "metadata": { "name": "template" }, "spec": spec(json!({ "routes": [{ "path": "/a/{id}/b" }] })) })).await;
    wait_for(
        "the fixed template's Ready no longer InvalidSpec",
        WAIT,
        || async {
            condition(&client, &ns, "template", "Ready")
                .await
                .filter(|c| c.1 != "InvalidSpec")
        },
    )
    .await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn prometheus_selection_is_applied_and_reported() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "select").await;
    let _op = Operator::start(&client, &ns);
    let proms: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &monitoring("Prometheus", "prometheuses"),
    );
    let prom = json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus", "metadata": { "name": "kps" },
        "spec": { "serviceMonitorSelector": { "matchLabels": { "release": "kps" } },
                  "ruleSelector": { "matchLabels": { "release": "kps" } } },
    });
    proms
        .patch(
            "kps",
            &PatchParams::apply("routemeter-tests"),
            &Patch::Apply(&prom),
        )
        .await
        .expect("Prometheus");
    create_target(&client, &ns, "shop").await;
    apply_msvc(&client, &ns, msvc("shop", "shop", json!([]))).await;
    let (_, reason, message) = wait_for("MonitoringConfigured=True", WAIT, || async {
        condition(&client, &ns, "shop", "MonitoringConfigured")
            .await
            .filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(reason, "Selected");
    assert!(message.contains(&format!("{ns}/kps")), "{message}");
    let sms: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &monitoring("ServiceMonitor", "servicemonitors"),
    );
    let sm = sms.get("shop-routemeter").await.expect("ServiceMonitor");
    assert_eq!(sm.labels().get("release").map(String::as_str), Some("kps"));
    // The Prometheus gone: not selected, said by the condition and a Warning Event.
    proms
        .delete("kps", &DeleteParams::default())
        .await
        .expect("delete the Prometheus");
    let (_, _, message) = wait_for("MonitoringConfigured=False NotSelected", WAIT, || async {
        condition(&client, &ns, "shop", "MonitoringConfigured")
            .await
            .filter(|c| c.0 == "False" && c.1 == "NotSelected")
    })
    .await;
    let event = wait_for("a Warning Event NotSelected", WAIT, || async {
        events_of(&client, &ns, "shop")
            .await
            .into_iter()
            .find(|e| e.type_ == "Warning" && e.reason == "NotSelected")
    })
    .await;
    assert_eq!(event.note, message);
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn deletion_garbage_collects_children() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use routemeter::operator::children::PROXY_IDENTITY;
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "delete").await;
    // The identity of its own an earlier version made for each MonitoredService.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let legacy: ServiceAccount = serde_json::from_value(json!({
        "metadata": { "name": "second-routemeter", "labels": { "app.kubernetes.io/managed-by": "routemeter" } },
    }))
    .expect("a ServiceAccount");
    accounts
        .create(&Default::default(), &legacy)
        .await
        .expect("create");
    let _op = Operator::start(&client, &ns);
    create_target(&client, &ns, "gone").await;
    let gone = apply_msvc(&client, &ns, msvc("gone", "gone", json!([]))).await;
    create_target(&client, &ns, "second").await;
    let second = apply_msvc(&client, &ns, msvc("second", "second", json!([]))).await;
    wait_for("the ConfigMaps", WAIT, || async {
        config_of(&client, &ns, "gone").await?;
        config_of(&client, &ns, "second").await
    })
    .await;
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    // The namespace's proxy identity: whose owner it names (`None` once all three are gone).
    let identity_owner = || async {
        let account = accounts.get_opt(PROXY_IDENTITY).await.expect("get");
        let role = roles.get_opt(PROXY_IDENTITY).await.expect("get");
        let binding = bindings.get_opt(PROXY_IDENTITY).await.expect("get");
        let owner = |meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| {
            meta.and_then(|m| m.owner_references.clone())
                .and_then(|o| o.first().map(|o| o.uid.clone()))
        };
        let owners = [
            owner(account.as_ref().map(|a| &a.metadata)),
            owner(role.as_ref().map(|r| &r.metadata)),
            owner(binding.as_ref().map(|b| &b.metadata)),
        ];
        (owners[0] == owners[1] && owners[1] == owners[2]).then(|| owners[0].clone())
    };
    // One identity for both, owned by the oldest (here, by name: the same second); the
    // one an earlier version made is deleted.
    wait_for("the identity, owned by the first", WAIT, || async {
        (identity_owner().await? == gone.uid()).then_some(())
    })
    .await;
    wait_for("the old identity gone", WAIT, || async {
        accounts
            .get_opt("second-routemeter")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let api: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    api.delete("gone", &DeleteParams::foreground())
        .await
        .expect("delete");
    // The garbage collector rescans API discovery every 30 s: allow for a full cycle.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "children to be collected",
        Duration::from_secs(120),
        || async {
            let cm = cms.get_opt("gone-routemeter").await.ok()?;
            let d = deployments.get_opt("gone-routemeter").await.ok()?;
            (cm.is_none() && d.is_none()).then_some(())
        },
    )
    .await;
    // The identity outlives the MonitoredService that owned it: the other one owns it now.
    wait_for(
        "the identity, owned by the second",
        Duration::from_secs(120),
        || async { (identity_owner().await? == second.uid()).then_some(()) },
    )
    .await;
    // And goes with the last one.
    api.delete("second", &DeleteParams::foreground())
        .await
        .expect("delete");
    wait_for(
        "the identity collected",
        Duration::from_secs(120),
        || async { identity_owner().await?.is_none().then_some(()) },
    )
    .await;
    // The user's Services are never touched.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    assert!(services.get_opt("gone").await.expect("get").is_some());
    assert!(services.get_opt("second").await.expect("get").is_some());
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn monitoring_waits_for_the_prometheus_operator_crds() {
    let Some(client) = client().await else { return };
    let _exclusive = CLUSTER_WIDE.write().await;
    script("prom-crds.sh", &["uninstall"]);
    let ns = namespace(&client, "nocrds").await;
    let _op = Operator::start(&client, &ns);
    create_target(&client, &ns, "plain").await;
    apply_msvc(&client, &ns, msvc("plain", "plain", json!([]))).await;
    let (_, reason, _) = wait_for("MonitoringConfigured=False", WAIT, || async {
        condition(&client, &ns, "plain", "MonitoringConfigured")
            .await
            .filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "CRDsNotInstalled");
    // Everything else works without them.
    wait_for("the ConfigMap", WAIT, || config_of(&client, &ns, "plain")).await;

    script("prom-crds.sh", &["install"]);
    wait_for(
        "MonitoringConfigured to leave CRDsNotInstalled",
        Duration::from_secs(60),
        || async {
            condition(&client, &ns, "plain", "MonitoringConfigured")
                .await
                .filter(|c| c.1 != "CRDsNotInstalled")
        },
    )
    .await;
    let sms: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &monitoring("ServiceMonitor", "servicemonitors"),
    );
    wait_for("the ServiceMonitor", WAIT, || async {
        sms.get_opt("plain-routemeter").await.ok()?
    })
    .await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn render_output_applies_as_printed() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "render").await;
    // The example, moved into the test's namespace.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples/trips-api.yaml"),
    )
    .expect("the example");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("msvc.yaml");
    std::fs::write(
        &file,
        example.replace("namespace: default", &format!("namespace: {ns}")),
    )
    .expect("write");
    let args = routemeter::operator::render::Args {
        file,
        targets: None,
        proxy_image: "routemeter/routemeter:test".into(),
        cluster_domain: "cluster.local".into(),
        rules_only: false,
    };
    let text = args.render().expect("render");
    let mut applied = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let object: DynamicObject = serde::Deserialize::deserialize(doc).expect("an object");
        let types = object.types.clone().expect("apiVersion and kind");
        let (group, version) = types
            .api_version
            .split_once('/')
            .unwrap_or(("", &types.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, _) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .expect("a served kind");
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
        // What `kubectl apply --server-side --dry-run=server` of a new object does: the
        // operator's own apply, fully validated and admitted, not stored; with strict
        // field validation, so a field the API server does not know is refused here (the
        // operator applies with validation off: `apply::params`).
        let params = routemeter::operator::apply::params()
            .dry_run()
            .validation_strict();
        if let Err(e) = api
            .patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await
        {
            panic!("{} {}: refused: {e}", types.kind, object.name_any());
        }
        applied.push(types.kind);
    }
    // Every kind the operator writes, so each is checked for fields the API server does
    // not know.
    for kind in [
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(
            applied.iter().any(|k| k == kind),
            "{kind} rendered: {applied:?}"
        );
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn an_operator_that_cannot_reach_a_cluster_logs_one_json_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("operator.log");
    let child = std::process::Command::new(common::BIN)
        .args([
            "--log-format",
            "json",
            "operator",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("RUST_LOG")
        .env_remove("ROUTEMETER_LOG_FORMAT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .spawn()
        .expect("start the operator");
    let mut operator = common::Process(child);
    let status = wait_for("the operator to exit", Duration::from_secs(20), || {
        let exited = operator.0.try_wait().expect("poll the operator");
        async move { exited }
    })
    .await;
    assert!(!status.success());
    let stderr = std::fs::read_to_string(&log).expect("the log");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        !stderr.contains("/root/") && !stderr.contains(".cargo"),
        "no build-machine path: {stderr}"
    );
    assert_eq!(lines[0]["level"], "ERROR");
    let message = lines[0]["message"].as_str().expect("a message");
    assert!(
        message.contains("Kubernetes client"),
        "says what failed: {message}"
    );
}

#[tokio::test]
async fn a_hand_edited_config_map_is_put_back_at_once() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "handedit").await;
    let _op = Operator::start(&client, &ns);
    create_target(&client, &ns, "edited").await;
    apply_msvc(
        &client,
        &ns,
        msvc("edited", "edited", json!([{ "path": "/a" }])),
    )
    .await;
    let written = wait_for("the config", WAIT, || config_of(&client, &ns, "edited")).await;
    // What `kubectl edit` does: an update by another manager, here a route that breaks
    // the config (a proxy would reject it and keep its last good one).
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let broken = "upstream: {endpoints: ['x:1']}\nroutes: [{path: 'no-slash'}]\n";
    cms.patch(
        "edited-routemeter",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({ "data": { "config.yaml": broken } })),
    )
    .await
    .expect("edit the ConfigMap");
    // The ConfigMap is owned and watched: the edit triggers a reconcile, whose forced
    // server-side apply puts the operator's config back, well before the 30 s requeue.
    wait_for(
        "the operator's config back",
        Duration::from_secs(20),
        || async {
            let cm = cms.get_opt("edited-routemeter").await.ok()??;
            let text = cm.data?.get("config.yaml")?.clone();
            ProxyConfig::from_yaml(&text).ok().filter(|c| *c == written)
        },
    )
    .await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn leader_and_standby_are_both_ready() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "readyz").await;
    let start = |identity: &str, port: u16| {
        common::Process(
            std::process::Command::new(common::BIN)
                .args(["--log-format", "text", "operator", "--watch-namespace", &ns])
                .args(["--lease-namespace", &ns, "--identity", identity])
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                .env("KUBECONFIG", kubeconfig_path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start an operator"),
        )
    };
    let readyz = |port: u16| async move {
        let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    };
    let (a, b) = (common::free_port(), common::free_port());
    let _first = start("first", a);
    // The first one takes the Lease (it stands by for the moment it takes), then leads:
    // ready once its cache of MonitoredServices has synced.
    wait_for("the leader ready and reconciling", WAIT, || async {
        readyz(a)
            .await
            .filter(|(s, w)| *s == 200 && w.contains("reconciling"))
    })
    .await;
    // The second one stands by, and is ready as such.
    let _second = start("second", b);
    let why = wait_for("the standby ready", WAIT, || async {
        readyz(b).await.filter(|(s, _)| *s == 200).map(|(_, w)| w)
    })
    .await;
    assert!(why.contains("standby"), "{why}");
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_reconcile_that_changes_nothing_writes_nothing() {
    let Some(client) = client().await else { return };
    let _shared = CLUSTER_WIDE.read().await;
    let ns = namespace(&client, "atrest").await;
    let op = Operator::start(&client, &ns);
    create_target(&client, &ns, "calm").await;
    apply_msvc(
        &client,
        &ns,
        msvc("calm", "calm", json!([{ "path": "/users/{id}" }])),
    )
    .await;
    let msvcs: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    wait_for("a status", WAIT, || async {
        msvcs
            .get_opt("calm")
            .await
            .ok()??
            .status
            .filter(|s| !s.conditions.is_empty())
    })
    .await;
    let applied = || {
        op.metric(
            "routemeter_operator_child_writes_total",
            &[r#"outcome="applied""#],
        )
    };
    let unchanged = || {
        op.metric(
            "routemeter_operator_child_writes_total",
            &[r#"outcome="unchanged""#],
        )
    };
    let reconciles = || op.metric("routemeter_operator_reconciliations_total", &[]);
    // Settled: the caches have seen the operator's own applies (a pass right after an
    // apply may still see the object as it was before, and apply once more).
    let mut last = applied();
    wait_for("the applies to stop", WAIT, || {
        let now = applied();
        let settled = now == last && unchanged() > 0.0;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            settled.then_some(())
        }
    })
    .await;
    let (before, seen, skipped) = (applied(), reconciles(), unchanged());

    // Reconciles that find everything as it was: an annotation on the MonitoredService
    // (a watch event, no spec change), three times.
    for i in 0..3 {
        msvcs
            .patch(
                "calm",
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "annotations": { "poke": i.to_string() } } })),
            )
            .await
            .expect("annotate");
        let target = seen + f64::from(i + 1);
        wait_for("a reconcile", WAIT, || async move {
            (reconciles() >= target).then_some(())
        })
        .await;
    }
    assert_eq!(
        applied(),
        before,
        "no child applied by reconciles that change nothing"
    );
    assert!(
        unchanged() >= skipped + 9.0,
        "each reconcile found its children unchanged: {} -> {}",
        skipped,
        unchanged()
    );

    // A second field manager adds a label to the proxy Service and edits the PDB's spec;
    // the HPA is deleted by hand. The operator puts back what it owns, leaves the label
    // (its own apply does not own it) and recreates the HPA.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let other = PatchParams::apply("someone-else");
    services
        .patch(
            "calm-routemeter",
            &other,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "calm-routemeter", "labels": { "team": "payments" } },
            })),
        )
        .await
        .expect("label the proxy Service");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let pdb = pdbs.get("calm-routemeter").await.expect("the PDB");
    let owned = pdb.spec.clone().expect("spec");
    pdbs.patch(
        "calm-routemeter",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "maxUnavailable": 2 } })),
    )
    .await
    .expect("edit the PDB");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    hpas.delete("calm-routemeter", &DeleteParams::default())
        .await
        .expect("delete the HPA");
    wait_for("the HPA back and the PDB as owned", WAIT, || async {
        let pdb = pdbs.get_opt("calm-routemeter").await.ok()??;
        let hpa = hpas.get_opt("calm-routemeter").await.ok()??;
        (pdb.spec == Some(owned.clone()) && hpa.spec.is_some()).then_some(())
    })
    .await;
    let svc = services.get("calm-routemeter").await.expect("the Service");
    assert_eq!(
        svc.labels().get("team").map(String::as_str),
        Some("payments"),
        "another manager's label stays"
    );
    assert!(applied() > before, "the edits were written back");
    delete_namespace(&client, &ns).await;
}

/// Faults, with no help from anyone: the operator killed (SIGKILL) while it writes the
/// children of eight MonitoredServices, one of them taking its Service over; a new one
/// started; the API server killed and started again while the new one reconciles. The
/// end state is whole: every child exists, every status is current, the takeover record
/// is kept, the Service is given back exactly on deletion, and the operator at rest
/// writes nothing.
#[tokio::test]
async fn a_killed_operator_and_a_restarted_apiserver_converge_without_help() {
    let Some(client) = client().await else { return };
    let _exclusive = CLUSTER_WIDE.write().await;
    let ns = namespace(&client, "faults").await;
    let start = |port: u16| {
        common::Process(
            std::process::Command::new(common::BIN)
                .args(["--log-format", "text", "operator", "--watch-namespace", &ns])
                .args(["--leader-election", "false"])
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                .args(["--proxy-image", PROXY_IMAGE])
                .env("KUBECONFIG", kubeconfig_path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start an operator"),
        )
    };
    let metrics = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    const N: usize = 8;
    for i in 0..N {
        create_target(&client, &ns, &format!("svc-{i}")).await;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let original = services
        .get("svc-7")
        .await
        .expect("svc-7")
        .spec
        .and_then(|s| s.selector)
        .expect("a selector");

    // The first operator, killed as soon as it has written a child.
    let a = common::free_port();
    let mut first = start(a);
    for i in 0..N {
        let mut m = msvc(
            &format!("m-{i}"),
            &format!("svc-{i}"),
            json!([{ "path": "/u/{id}" }]),
        );
        if i == N - 1 {
            m["spec"]["mode"] = json!("Takeover");
        }
        apply_msvc(&client, &ns, m).await;
    }
    wait_for("the first operator's first child write", WAIT, || async {
        let text = metrics(a).await?;
        (metric_in(
            &text,
            "routemeter_operator_child_writes_total",
            &["outcome=\"applied\""],
        ) > 0.0)
            .then_some(())
    })
    .await;
    first.0.kill().expect("SIGKILL the operator");
    let _ = first.0.wait();

    // The second, and the API server killed under it a moment later.
    let b = common::free_port();
    let _second = start(b);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    script("restart-apiserver.sh", &["3"]);

    // Whole again.
    let msvcs: Api<MonitoredService> = Api::namespaced(client.clone(), &ns);
    for i in 0..N {
        let name = format!("m-{i}");
        wait_for(
            &format!("{name}: its config and a current status"),
            Duration::from_secs(90),
            || async {
                config_of(&client, &ns, &name).await?;
                let m = msvcs.get(&name).await.ok()?;
                let status = m.status?;
                let found = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "TargetFound" && c.status == "True");
                (found && status.observed_generation == m.metadata.generation).then_some(())
            },
        )
        .await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        deployments
            .get(&format!("{name}-routemeter"))
            .await
            .unwrap_or_else(|e| panic!("{name}: its Deployment: {e}"));
    }
    // The takeover's record of the original selector survived both faults.
    let svc = services.get("svc-7").await.expect("svc-7");
    let record = svc
        .annotations()
        .get("routemeter.io/takeover")
        .cloned()
        .expect("the takeover record");
    assert!(
        record.contains("svc-7") || record.contains("app"),
        "{record}"
    );

    // At rest: an 8 s window with no child written comes within a minute (the last
    // writes of the recovery may still be under way when the statuses are current), and
    // stays: a loop would never give one.
    let applied = |text: &str| {
        metric_in(
            text,
            "routemeter_operator_child_writes_total",
            &["outcome=\"applied\""],
        )
    };
    let quiet = Instant::now();
    loop {
        let before = applied(&metrics(b).await.expect("metrics"));
        tokio::time::sleep(Duration::from_secs(8)).await;
        let after = applied(&metrics(b).await.expect("metrics"));
        if after == before {
            break;
        }
        assert!(
            quiet.elapsed() < Duration::from_secs(60),
            "children still applied a minute after the faults ({} in the last 8 s)",
            after - before
        );
    }

    // Given back exactly: the original selector, no record left.
    msvcs
        .delete("m-7", &DeleteParams::default())
        .await
        .expect("delete m-7");
    wait_for(
        "m-7 gone (its finalizer released)",
        Duration::from_secs(60),
        || async { msvcs.get_opt("m-7").await.ok()?.is_none().then_some(()) },
    )
    .await;
    let svc = services.get("svc-7").await.expect("svc-7");
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.selector.clone()),
        Some(original)
    );
    assert!(
        !svc.annotations().contains_key("routemeter.io/takeover"),
        "{:?}",
        svc.metadata.annotations
    );
    delete_namespace(&client, &ns).await;
}
