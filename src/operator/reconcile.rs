//! The reconciler: one `MonitoredService` in, its children applied and its status written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use super::children::{self, Settings};
use super::status::{self, Condition};
use super::{Context, Error};
use crate::crd::MonitoredService;

/// Every write by the operator is a server-side apply under this field manager.
pub const FIELD_MANAGER: &str = "routemeter";

/// How often a ready object is looked at again, refreshing its traffic figures.
const TRAFFIC_REFRESH: Duration = Duration::from_secs(30);
/// How soon to look again while the proxy is not available yet or the target is missing.
const RETRY: Duration = Duration::from_secs(30);

/// Reconciles one MonitoredService.
pub async fn reconcile(msvc: Arc<MonitoredService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&msvc, &ctx).await;
    ctx.metrics
        .observe(started.elapsed(), result.as_ref().err());
    result
}

async fn reconcile_inner(msvc: &MonitoredService, ctx: &Context) -> Result<Action, Error> {
    let ns = msvc
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = msvc.name_any();
    let client = &ctx.client;
    if msvc.metadata.deletion_timestamp.is_some() {
        ctx.readings.forget(msvc);
        // Being deleted: the garbage collector removes the children. Applying them again
        // would race it, and hold a foreground deletion open for as long as we do.
        return Ok(Action::await_change());
    }
    let mut report = status::Report::new(msvc);

    // Input the API server could not check: route templates, durations.
    if let Err(message) = validate(msvc) {
        report.set(Condition::invalid_spec(&message));
        status::write(client, msvc, report.finish(None, None)).await?;
        tracing::warn!(msvc = %name, namespace = %ns, %message, "invalid spec");
        // Nothing will change until the spec does; the watch brings the next edit.
        return Ok(Action::await_change());
    }

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let target_name = &msvc.spec.target.service;
    let Some(target) = services
        .get_opt(target_name)
        .await
        .map_err(|source| Error::Object {
            verb: "read",
            kind: "Service".into(),
            name: format!("{ns}/{target_name}"),
            source,
        })?
    else {
        report.set(Condition::target_missing(target_name, &ns));
        status::write(client, msvc, report.finish(None, None)).await?;
        return Ok(Action::requeue(RETRY));
    };
    let target = match children::target_info(msvc, &target, &ctx.cluster_domain) {
        Ok(t) => t,
        Err(message) => {
            report.set(Condition::target_unusable(&message));
            status::write(client, msvc, report.finish(None, None)).await?;
            return Ok(Action::requeue(RETRY));
        }
    };
    report.set(Condition::target_found(target_name));

    let user_labels = msvc.spec.monitoring.labels.clone();
    let selection = super::selection::selection_with(
        client,
        &ns,
        (!user_labels.is_empty()).then_some(user_labels),
    )
    .await;
    let settings = Settings {
        proxy_image: ctx.proxy_image.clone(),
        monitoring_labels: selection.labels.clone(),
    };
    let built = match children::build(msvc, &target, &settings) {
        Ok(c) => c,
        Err(e) => {
            report.set(Condition::invalid_spec(&e.to_string()));
            status::write(client, msvc, report.finish(None, None)).await?;
            return Ok(Action::await_change());
        }
    };

    // Every child is written even when one fails (a 403 on one must not leave the others
    // stale): each failure is logged naming the child, the first one is reported in the
    // status and returned, so the error policy retries with backoff.
    let mut failures = Vec::new();
    for child in &built.core {
        let manifest = Some(&child.manifest);
        if let Err(e) = apply_or_delete(client, &ns, &child.resource, &child.name, manifest).await {
            failures.push(e);
        }
    }
    for (resource, child_name, manifest) in &built.optional {
        if let Err(e) = apply_or_delete(client, &ns, resource, child_name, manifest.as_ref()).await
        {
            failures.push(e);
        }
    }

    // The Prometheus Operator's CRDs may be missing: everything else still works.
    let mut crds_missing = false;
    for (resource, child_name, manifest) in &built.monitoring {
        match apply_or_delete(client, &ns, resource, child_name, manifest.as_ref()).await {
            Ok(()) => {}
            Err(Error::Object {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => crds_missing = true,
            Err(e) => failures.push(e),
        }
    }
    if crds_missing {
        report.set(Condition::monitoring_crds_missing());
    } else {
        report.set(selection.condition(msvc.spec.monitoring.service_monitor.enabled));
    }
    for failure in &failures {
        tracing::warn!(msvc = %format!("{ns}/{name}"), error = %failure, "MonitoredService {ns}/{name}: {failure}");
    }
    if let Some(first) = failures.first() {
        report.set(Condition::apply_failed(&first.to_string(), failures.len()));
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = deployments
        .get_opt(&children::proxy_name(msvc))
        .await
        .map_err(|source| Error::Object {
            verb: "read",
            kind: "Deployment".into(),
            name: format!("{ns}/{}", children::proxy_name(msvc)),
            source,
        })?;
    let (replicas, ready) = deployment.and_then(|d| d.status).map_or((0, 0), |s| {
        (s.replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
    });
    report.set(Condition::proxy_availability(ready, replicas));
    let reading = if ready > 0 {
        ctx.readings.read(client, msvc, ctx.proxy_admin_port).await
    } else {
        Default::default()
    };
    if let Some(health) = reading.config {
        report.set(Condition::proxy_config(health, &children::proxy_name(msvc)));
    }
    let mut new_status = report.finish(Some(replicas), Some(ready));
    new_status.selected_by = selection.selected_by;
    new_status.proxy_service = Some(children::proxy_name(msvc));
    new_status.traffic = reading.traffic;
    let ready_now = new_status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    status::write(client, msvc, new_status).await?;
    if let Some(first) = failures.into_iter().next() {
        return Err(first);
    }
    // Ready proxies are read again for live traffic figures; otherwise look again soon.
    Ok(Action::requeue(if ready_now {
        TRAFFIC_REFRESH
    } else {
        RETRY
    }))
}

/// Checks what the schema cannot: the proxy config the spec implies must be valid.
fn validate(msvc: &MonitoredService) -> Result<(), String> {
    let placeholder = children::TargetInfo {
        upstream: "target:80".into(),
        service_port: 80,
        headless: None,
    };
    children::proxy_config(msvc, &placeholder)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies `manifest` to the child `name`, or deletes the child when there is none. An
/// error names the child and what was done to it.
async fn apply_or_delete(
    client: &Client,
    ns: &str,
    resource: &kube::core::ApiResource,
    name: &str,
    manifest: Option<&serde_json::Value>,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
    let child = |verb, source| Error::Object {
        verb,
        kind: resource.kind.clone(),
        name: format!("{ns}/{name}"),
        source,
    };
    match manifest {
        Some(m) => {
            api.patch(name, &params(), &Patch::Apply(m))
                .await
                .map_err(|e| child("apply", e))?;
        }
        None => match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            // Already gone is what we wanted.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(child("delete", e)),
        },
    }
    Ok(())
}

/// Lists the MonitoredServices that target a Service, for the Service watch.
pub fn targeting(
    store: &kube::runtime::reflector::Store<MonitoredService>,
    svc: &Service,
) -> Vec<kube::runtime::reflector::ObjectRef<MonitoredService>> {
    let (ns, name) = (svc.namespace(), svc.name_any());
    store
        .state()
        .iter()
        .filter(|m| m.namespace() == ns && m.spec.target.service == name)
        .map(|m| kube::runtime::reflector::ObjectRef::from_obj(m.as_ref()))
        .collect()
}
