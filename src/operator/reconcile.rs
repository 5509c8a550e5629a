//! The reconciler: one `MonitoredService` in, its children applied and its status written.
//!
//! One straight line: `observe` reads what the decision needs (from the caches once they
//! have synced), [`plan::decide`] decides from it, with no client, what to do; `hold`
//! adds the takeover finalizer or gives the target Service back, `write_children` writes
//! the children; the proxy Deployment is read (after the apply, as it always was: until
//! the caches sync that read goes to the API server and sees what was just applied), the
//! takeover step is written, the proxies' config state read; and the status is written
//! once, at one call site, whatever the path. Only a MonitoredService being deleted
//! (`finalize`) writes no status. The decisions, and their tests, are in [`plan`].

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use super::apply::apply_or_delete;
use super::caches::{self, Caches};
use super::children::{self, Children};
use super::context::Context;
use super::error::Error;
use super::plan::{self, Course, Hold, Observed, OperatorSettings, TAKEOVER_STEP, Written};
use super::selection;
use super::status;
use super::takeover::{self, Record};
use crate::crd::MonitoredService;

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
    if msvc.metadata.deletion_timestamp.is_some() {
        return finalize(msvc, ctx).await;
    }
    let client = &ctx.client;
    let caches = ctx.caches.load();
    let settings = OperatorSettings {
        proxy_image: &ctx.proxy_image,
        cluster_domain: &ctx.cluster_domain,
    };

    // 1. Observe; 2. decide.
    let observed = observe(client, &caches, msvc, &ns, &settings).await?;
    let plan = plan::decide(msvc, &observed, &settings);

    // 3. Apply: the finalizer and the target Service's hand-back, then the children, then
    // the takeover step.
    let released = hold(client, msvc, plan.hold).await?;
    let mut failure = None;
    let mut invalid = None;
    let outcome = match plan.course {
        Course::Stop(stopped) => {
            if let plan::Stop::InvalidSpec(message) = &stopped.stop {
                invalid = Some(message.clone());
            }
            stopped.finish(released)
        }
        Course::Serve(serve) => {
            let written;
            (written, failure) = write_children(ctx, &ns, msvc, &serve.children).await;
            let proxy_name = children::proxy_name(msvc);
            let deployment = caches.deployments.read(client, &ns, &proxy_name).await?;
            let conclusion = serve.conclude(
                &written,
                deployment.as_ref(),
                k8s_openapi::jiff::Timestamp::now(),
            );
            let went_through = match conclusion.write() {
                Some((svc, w)) => takeover::write(client, svc, w.record.as_ref(), &w.step).await?,
                None => true,
            };
            // The config state; the traffic figures are the traffic loop's (operator::traffic).
            let config = if conclusion.proxies_available() {
                ctx.readings
                    .read(client, &caches, msvc, ctx.proxy_admin_port)
                    .await
            } else {
                None
            };
            conclusion.finish(went_through, config)
        }
    };

    // 4. The status, once.
    status::write(client, &ctx.recorder, msvc, outcome.status).await?;
    if let Some(message) = invalid {
        tracing::warn!(msvc = %msvc.name_any(), namespace = %ns, %message, "invalid spec");
    }
    // A child that could not be written is retried with the error policy's backoff.
    if let Some(first) = failure {
        return Err(first);
    }
    Ok(outcome.action)
}

/// Reads what the reconcile of `msvc` decides on: the target Service, in takeover mode the
/// application's pods, and once the target is usable the Prometheus selection. What the
/// decision will not look at is not read: nothing for an invalid spec, nothing past a
/// missing target.
async fn observe(
    client: &Client,
    caches: &Caches,
    msvc: &MonitoredService,
    ns: &str,
    settings: &OperatorSettings<'_>,
) -> Result<Observed, Error> {
    let mut seen = Observed::default();
    if plan::validate(msvc).is_err() {
        return Ok(seen);
    }
    seen.target = caches
        .services
        .read(client, ns, &msvc.spec.target.service)
        .await?;
    // A target that is a proxy's own Service (one MonitoredService in front of
    // another's proxy) is kept without its spec in the store: read it whole.
    if seen.target.as_ref().is_some_and(caches::is_trimmed) {
        seen.target = Api::<Service>::namespaced(client.clone(), ns)
            .get_opt(&msvc.spec.target.service)
            .await
            .map_err(|source| Error::Object {
                verb: "read",
                kind: "Service".into(),
                name: format!("{ns}/{}", msvc.spec.target.service),
                source,
            })?;
    }
    let Some(svc) = &seen.target else {
        return Ok(seen);
    };
    if let Some(selector) = plan::application_selector(msvc, svc) {
        seen.application_pods = takeover::application_pods(client, ns, &selector).await?;
    }
    seen.anchor = children::anchor(caches.monitored.state().iter().map(AsRef::as_ref), ns)
        .map(|m| Arc::new(m.clone()));
    if plan::target_usable(msvc, svc, &seen.application_pods, settings.cluster_domain) {
        let user_labels = msvc.spec.monitoring.labels.clone();
        seen.selection = selection::selection_with(
            client,
            caches,
            ns,
            (!user_labels.is_empty()).then_some(user_labels),
        )
        .await;
    }
    Ok(seen)
}

/// Does what `hold` says with the finalizer and the target Service. Returns whether the
/// Service is given back, or needed not be (`false`: giving it back raced an edit).
async fn hold(client: &Client, msvc: &MonitoredService, hold: Hold) -> Result<bool, Error> {
    match hold {
        Hold::Keep => Ok(true),
        Hold::Finalizer => {
            takeover::set_finalizer(client, msvc, true).await?;
            Ok(true)
        }
        Hold::LetGo => {
            let services: Api<Service> =
                Api::namespaced(client.clone(), &msvc.namespace().unwrap_or_default());
            let released = let_go(client, &services, msvc).await? != Release::Retry;
            if released {
                takeover::set_finalizer(client, msvc, false).await?;
            }
            Ok(released)
        }
    }
}

/// Writes every child, even when one fails (a 403 on one must not leave the others
/// stale): each failure is logged naming the child, and the first one is returned for the
/// error policy to retry with backoff.
///
/// The writes go out together (each child on its own; the API server orders nothing
/// between them), so a reconcile waits for one round trip, not one per child.
async fn write_children(
    ctx: &Context,
    ns: &str,
    msvc: &MonitoredService,
    built: &Children,
) -> (Written, Option<Error>) {
    let core = built
        .shared
        .iter()
        .chain(&built.core)
        .map(|c| (&c.resource, &c.name, Some(&c.manifest)))
        .chain(built.optional.iter().map(|(r, n, m)| (r, n, m.as_ref())));
    let writes = futures::future::join_all(core.map(|(resource, child_name, manifest)| {
        apply_or_delete(ctx, ns, resource, child_name, manifest)
    }));
    let monitoring = futures::future::join_all(built.monitoring.iter().map(
        |(resource, child_name, manifest)| {
            apply_or_delete(ctx, ns, resource, child_name, manifest.as_ref())
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
    let name = msvc.name_any();
    for failure in &failures {
        tracing::warn!(msvc = %format!("{ns}/{name}"), error = %failure, "MonitoredService {ns}/{name}: {failure}");
    }
    let written = Written {
        failures: failures.iter().map(ToString::to_string).collect(),
        crds_missing,
    };
    (written, failures.into_iter().next())
}

/// A MonitoredService being deleted: a Service taken over is given back before the
/// proxies go. Writes no status.
async fn finalize(msvc: &MonitoredService, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    ctx.readings.forget(msvc);
    if plan::holds_finalizer(msvc) {
        let services: Api<Service> =
            Api::namespaced(client.clone(), &msvc.namespace().unwrap_or_default());
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
    Ok(Action::await_change())
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
