//! The reconciler: one `MonitoredService` in, its children applied and its status written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use std::collections::BTreeMap;

use super::apply::apply_or_delete;
use super::children::{self, Settings};
use super::context::Context;
use super::error::Error;
use super::status::{self, Condition};
use super::takeover::{self, Record, Step};
use crate::crd::{Mode, MonitoredService};

/// How often a ready object is looked at again (its proxies' config state).
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
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let holds_finalizer = msvc.finalizers().iter().any(|f| f == takeover::FINALIZER);
    if msvc.metadata.deletion_timestamp.is_some() {
        ctx.readings.forget(msvc);
        // A Service taken over is given back before the proxies go.
        if holds_finalizer {
            match let_go(client, &services, msvc).await? {
                Release::Retry => return Ok(Action::requeue(TAKEOVER_STEP)),
                // Given back just now: the proxies (and the upstream Service they read)
                // stay a little longer, until every kube-proxy sends the Service's new
                // connections to the application again.
                Release::Done => {
                    takeover::mark_released(client, msvc).await?;
                    return Ok(Action::requeue(takeover::HANDBACK));
                }
                Release::Nothing => {
                    if let Some(wait) = takeover::handback_left(msvc) {
                        return Ok(Action::requeue(wait));
                    }
                }
            }
            takeover::set_finalizer(client, msvc, false).await?;
        }
        // Being deleted: the garbage collector removes the children. Applying them again
        // would race it, and hold a foreground deletion open for as long as we do.
        return Ok(Action::await_change());
    }
    let mut report = status::Report::new(msvc);

    // Input the API server could not check: route templates, durations.
    if let Err(message) = validate(msvc) {
        let released = !holds_finalizer || let_go(client, &services, msvc).await? != Release::Retry;
        if holds_finalizer && released {
            takeover::set_finalizer(client, msvc, false).await?;
        }
        if msvc.spec.mode == Mode::Takeover {
            report.set(Condition::taken_over(
                false,
                "InvalidSpec",
                "the target Service has its original selector back until the spec is fixed",
            ));
        }
        report.set(Condition::invalid_spec(&message));
        status::write(client, &ctx.recorder, msvc, report.finish(None, None)).await?;
        tracing::warn!(msvc = %name, namespace = %ns, %message, "invalid spec");
        // Nothing will change until the spec does; the watch brings the next edit.
        return Ok(if released {
            Action::await_change()
        } else {
            Action::requeue(TAKEOVER_STEP)
        });
    }

    let caches = ctx.caches.load();
    let target_name = &msvc.spec.target.service;
    let Some(target_svc) = caches.services.read(client, &ns, target_name).await? else {
        report.set(Condition::target_missing(target_name, &ns));
        status::write(client, &ctx.recorder, msvc, report.finish(None, None)).await?;
        return Ok(Action::requeue(RETRY));
    };
    // Takeover: what the record says, whether the Service can be served, on which ports.
    let plan = plan_takeover(client, msvc, &target_svc, &mut report).await?;
    if plan.is_none() && holds_finalizer && let_go(client, &services, msvc).await? != Release::Retry
    {
        takeover::set_finalizer(client, msvc, false).await?;
    }
    let info = match &plan {
        Some(p) => Ok(children::takeover_target_info(
            msvc,
            &target_svc,
            p.original.clone(),
            p.ports.clone(),
            &ctx.cluster_domain,
        )),
        None => children::target_info(msvc, &target_svc, &ctx.cluster_domain),
    };
    let target = match info {
        Ok(t) => t,
        Err(message) => {
            report.set(Condition::target_unusable(&message));
            status::write(client, &ctx.recorder, msvc, report.finish(None, None)).await?;
            return Ok(Action::requeue(RETRY));
        }
    };
    report.set(Condition::target_found(target_name));

    let user_labels = msvc.spec.monitoring.labels.clone();
    let selection = super::selection::selection_with(
        client,
        &caches,
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
            status::write(client, &ctx.recorder, msvc, report.finish(None, None)).await?;
            return Ok(Action::await_change());
        }
    };

    // Every child is written even when one fails (a 403 on one must not leave the others
    // stale): each failure is logged naming the child, the first one is reported in the
    // status and returned, so the error policy retries with backoff.
    // The writes go out together (each child on its own; the API server orders nothing
    // between them), so a reconcile waits for one round trip, not one per child.
    let core = built
        .core
        .iter()
        .map(|c| (&c.resource, &c.name, Some(&c.manifest)))
        .chain(built.optional.iter().map(|(r, n, m)| (r, n, m.as_ref())));
    let writes = futures::future::join_all(core.map(|(resource, child_name, manifest)| {
        apply_or_delete(ctx, &ns, resource, child_name, manifest)
    }));
    let monitoring = futures::future::join_all(built.monitoring.iter().map(
        |(resource, child_name, manifest)| {
            apply_or_delete(ctx, &ns, resource, child_name, manifest.as_ref())
        },
    ));
    let (written, monitored) = futures::future::join(writes, monitoring).await;
    let mut failures: Vec<Error> = written.into_iter().filter_map(Result::err).collect();
    // The Prometheus Operator's CRDs may be missing: everything else still works.
    let mut crds_missing = false;
    for result in monitored {
        match result {
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

    let proxy_name = children::proxy_name(msvc);
    let deployment = caches.deployments.read(client, &ns, &proxy_name).await?;
    let rolled_out = deployment.as_ref().is_some_and(rolled_out);
    let (replicas, ready) = deployment.and_then(|d| d.status).map_or((0, 0), |s| {
        (s.replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
    });
    report.set(Condition::proxy_availability(ready, replicas));
    let mut next = None;
    let mut taken_over = false;
    if let Some(plan) = &plan {
        (taken_over, next) =
            step_takeover(client, msvc, &target_svc, plan, rolled_out, &mut report).await?;
    }
    // The config state; the traffic figures are the traffic loop's (operator::traffic).
    let config = if ready > 0 {
        ctx.readings
            .read(client, &caches, msvc, ctx.proxy_admin_port)
            .await
    } else {
        None
    };
    if let Some(health) = config {
        report.set(Condition::proxy_config(health, &children::proxy_name(msvc)));
    }
    let mut new_status = report.finish(Some(replicas), Some(ready));
    new_status.selected_by = selection.selected_by;
    new_status.proxy_service = Some(if taken_over {
        target_name.clone()
    } else {
        children::proxy_name(msvc)
    });
    let ready_now = new_status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    status::write(client, &ctx.recorder, msvc, new_status).await?;
    if let Some(first) = failures.into_iter().next() {
        return Err(first);
    }
    // Ready proxies are read again for live traffic figures; otherwise look again soon,
    // and sooner while a takeover waits for its next step.
    Ok(Action::requeue(next.unwrap_or(if ready_now {
        TRAFFIC_REFRESH
    } else {
        RETRY
    })))
}

/// How soon to look again while a takeover or a restore waits for its next step.
const TAKEOVER_STEP: Duration = Duration::from_secs(2);

/// A takeover that can go on: the original selector and the proxies' ports.
struct TakeoverPlan {
    record: Option<Record>,
    original: BTreeMap<String, String>,
    ports: children::TakeoverPorts,
}

/// Whether the MonitoredService's takeover can go on; `None` in Parallel mode or when it
/// cannot, with the condition saying why set in `report`. Adds the finalizer before
/// anything is written to the Service.
async fn plan_takeover(
    client: &Client,
    msvc: &MonitoredService,
    svc: &Service,
    report: &mut status::Report,
) -> Result<Option<TakeoverPlan>, Error> {
    if msvc.spec.mode != Mode::Takeover {
        return Ok(None);
    }
    let name = msvc.name_any();
    let record = match Record::of(svc) {
        Ok(r) => r,
        Err(message) => {
            report.set(Condition::taken_over(false, "RecordUnreadable", message));
            return Ok(None);
        }
    };
    if let Some(message) = takeover::refusal(svc, record.as_ref(), &name) {
        report.set(Condition::taken_over(false, "Refused", message));
        return Ok(None);
    }
    let original = record.as_ref().map_or_else(
        || {
            svc.spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default()
        },
        |r| r.selector.clone(),
    );
    let ns = msvc.namespace().unwrap_or_default();
    let pods = takeover::application_pods(client, &ns, &original).await?;
    let ports = match takeover::ports(
        msvc,
        svc,
        &pods,
        record.as_ref(),
        crate::proxy_pods::ADMIN_PORT,
    ) {
        Ok(p) => p,
        Err(message) => {
            report.set(Condition::taken_over(false, "PortsUnresolved", message));
            return Ok(None);
        }
    };
    takeover::set_finalizer(client, msvc, true).await?;
    Ok(Some(TakeoverPlan {
        record,
        original,
        ports,
    }))
}

/// Takes the next takeover step on the target Service. Returns whether it points at the
/// proxies, and how soon to look again when a step is still to come.
async fn step_takeover(
    client: &Client,
    msvc: &MonitoredService,
    svc: &Service,
    plan: &TakeoverPlan,
    rolled_out: bool,
    report: &mut status::Report,
) -> Result<(bool, Option<Duration>), Error> {
    let name = msvc.name_any();
    let svc_name = svc.name_any();
    let record = plan.record.as_ref();
    let soon = Some(TAKEOVER_STEP);
    let taken = |reason, message: String| Condition::taken_over(true, reason, message);
    let waiting = |reason, message: String| Condition::taken_over(false, reason, message);
    let phase = takeover::phase(svc, record, &name);
    let (condition, result) = match phase {
        takeover::Phase::Free => {
            let new = Record {
                monitored_service: name.clone(),
                selector: plan.original.clone(),
                proxy_selector: crate::proxy_pods::selector_labels(msvc),
                ports: plan.ports.named.clone(),
                repointed: false,
                reasserted_at: None,
            };
            takeover::write(client, svc, None, &Step::Record(new)).await?;
            (
                waiting(
                    "Recorded",
                    format!(
                        "the selector of Service {svc_name} is recorded in its annotation {}; it is pointed at the proxies once they are ready",
                        takeover::RECORD_ANNOTATION
                    ),
                ),
                (false, soon),
            )
        }
        takeover::Phase::Recorded if !rolled_out => (
            waiting(
                "WaitingForProxy",
                format!(
                    "Service {svc_name} is pointed at the proxies once the proxy Deployment has rolled out a ready replica listening on its ports"
                ),
            ),
            (false, soon),
        ),
        takeover::Phase::Recorded => {
            let done =
                takeover::write(client, svc, record, &Step::Repoint { reassert: false }).await?;
            if done {
                (
                    taken("TakenOver", taken_message(&svc_name, plan)),
                    (true, None),
                )
            } else {
                (
                    waiting(
                        "WaitingForProxy",
                        format!("Service {svc_name} changed while being repointed; trying again"),
                    ),
                    (false, soon),
                )
            }
        }
        takeover::Phase::TakenOver => (
            taken("TakenOver", taken_message(&svc_name, plan)),
            (true, None),
        ),
        takeover::Phase::Reapplied
            if record.is_some_and(|r| {
                takeover::may_reassert(r, k8s_openapi::jiff::Timestamp::now())
            }) =>
        {
            let done =
                takeover::write(client, svc, record, &Step::Repoint { reassert: true }).await?;
            (
                taken(
                    "SelectorReasserted",
                    format!(
                        "the selector of Service {svc_name} was re-applied with its original keys next to the proxies' (what `kubectl apply` of its unchanged manifest does), which matches no pod; routemeter set the proxies' selector again{}",
                        if done { "" } else { " (retrying)" }
                    ),
                ),
                (done, (!done).then_some(TAKEOVER_STEP)),
            )
        }
        takeover::Phase::Reapplied | takeover::Phase::Reverted | takeover::Phase::Changed => {
            let current = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            (
                waiting(
                    "SelectorChanged",
                    format!(
                        "the selector of Service {svc_name} was changed by someone else to {current:?} while taken over; routemeter leaves it so. \
                     To hand the Service to routemeter again, remove its annotation {} (the selector it has then is the one restored later); \
                     to give it up, set spec.mode: Parallel",
                        takeover::RECORD_ANNOTATION
                    ),
                ),
                (false, None),
            )
        }
        takeover::Phase::Foreign(_) => (
            waiting("Refused", "taken over by another MonitoredService".into()),
            (false, None),
        ),
    };
    report.set(condition);
    Ok(result)
}

fn taken_message(svc_name: &str, plan: &TakeoverPlan) -> String {
    format!(
        "Service {svc_name} points at the proxies on ports {:?}; its original selector {:?} is kept in its annotation {} and restored when routemeter lets go",
        plan.ports
            .listeners
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>(),
        plan.original,
        takeover::RECORD_ANNOTATION
    )
}

/// What giving the target Service back did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Nothing was left to undo.
    Nothing,
    /// The Service was given back now.
    Done,
    /// A write raced an edit: look again.
    Retry,
}

/// Gives the target Service back, if this MonitoredService took it over.
async fn let_go(
    client: &Client,
    services: &Api<Service>,
    msvc: &MonitoredService,
) -> Result<Release, Error> {
    let target = &msvc.spec.target.service;
    let Some(svc) = services
        .get_opt(target)
        .await
        .map_err(|source| Error::Object {
            verb: "read",
            kind: "Service".into(),
            name: format!("{}/{target}", msvc.namespace().unwrap_or_default()),
            source,
        })?
    else {
        return Ok(Release::Nothing);
    };
    let record = match Record::of(&svc) {
        Ok(r) => r,
        Err(message) => {
            tracing::warn!(service = %target, "{message}");
            return Ok(Release::Nothing);
        }
    };
    let phase = takeover::phase(&svc, record.as_ref(), &msvc.name_any());
    match takeover::restore_step(&phase) {
        None => Ok(Release::Nothing),
        Some(step) => Ok(
            if takeover::write(client, &svc, record.as_ref(), &step).await? {
                Release::Done
            } else {
                Release::Retry
            },
        ),
    }
}

/// Whether the proxy Deployment runs its current template only, with a ready replica.
fn rolled_out(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (&d.spec, &d.status) else {
        return false;
    };
    let wanted = spec.replicas.unwrap_or(1);
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0)
        && status.available_replicas.unwrap_or(0) >= 1
}

/// Checks what the schema cannot: the proxy config the spec implies must be valid.
fn validate(msvc: &MonitoredService) -> Result<(), String> {
    let placeholder = children::TargetInfo {
        upstream: "target:80".into(),
        service_port: 80,
        headless: None,
        takeover: None,
    };
    children::proxy_config(msvc, &placeholder)
        .map(|_| ())
        .map_err(|e| e.to_string())
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
