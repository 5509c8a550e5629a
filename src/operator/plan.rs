//! What a reconcile decides, with no client and no await: from a `MonitoredService` and
//! what [`super::reconcile`] observed of the cluster, the children to apply (built by
//! [`children`]), what to do with the takeover finalizer and the target Service, the
//! takeover step, the conditions and when to look again.
//!
//! The reconcile writes between three pure steps, because what a write learns decides
//! what follows:
//! 1. [`decide`], from what was observed: an early stop (invalid spec, target missing, a
//!    port the target lacks, children that cannot be built) with its conditions, or the
//!    children to apply;
//! 2. [`Serve::conclude`], once the children are written and the proxy Deployment is read
//!    (after the apply, as it always was): the monitoring, apply and proxy conditions,
//!    and the takeover step to write;
//! 3. [`Conclusion::finish`], once that step is written and the proxies' config state
//!    read: the status to write and the next look.
//!
//! [`Stopped::finish`] ends an early stop. Every path ends in one [`Outcome`], whose
//! status the reconcile writes once.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::children::{self, Children, TargetInfo};
use super::selection::Selection;
use super::status::{Condition, Report};
use super::takeover::{self, Phase, Record, Step};
use super::traffic::ConfigHealth;
use crate::crd::{Mode, MonitoredService, MonitoredServiceStatus};

/// How often a ready object is looked at again (its proxies' config state).
pub const TRAFFIC_REFRESH: Duration = Duration::from_secs(30);
/// How soon to look again while the proxy is not available yet or the target is missing.
pub const RETRY: Duration = Duration::from_secs(30);
/// How soon to look again while a takeover or a restore waits for its next step.
pub const TAKEOVER_STEP: Duration = Duration::from_secs(2);

/// The operator's settings the decisions read.
#[derive(Debug, Clone, Copy)]
pub struct OperatorSettings<'a> {
    /// Proxy image when the spec names none.
    pub proxy_image: &'a str,
    /// The cluster's DNS domain, for the proxies' fully qualified upstream names.
    pub cluster_domain: &'a str,
}

/// What a reconcile read of the cluster before deciding. What was not read (everything,
/// for an invalid spec; the pods, outside a takeover) is left empty.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The target Service; `None` when it does not exist.
    pub target: Option<Service>,
    /// In takeover mode, the application's pods (those its original selector matches),
    /// through which named target ports resolve.
    pub application_pods: Vec<Pod>,
    /// Which Prometheus selects the monitoring, and the labels that make it do so; read
    /// once the target is usable.
    pub selection: Selection,
    /// The MonitoredService the namespace's shared children name as their owner
    /// ([`children::anchor`]); `None` for the MonitoredService itself.
    pub anchor: Option<std::sync::Arc<MonitoredService>>,
}

/// What to do with the takeover finalizer and the target Service, before the children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Neither.
    Keep,
    /// A takeover goes on: the finalizer is added before anything is written to the
    /// Service.
    Finalizer,
    /// No takeover goes on, and the MonitoredService holds the finalizer: the Service is
    /// given back if it took it over, then the finalizer goes (unless the give-back
    /// raced an edit).
    LetGo,
}

/// What a reconcile does, decided from what it observed.
#[derive(Debug)]
pub struct Plan<'a> {
    pub hold: Hold,
    pub course: Course<'a>,
}

/// Whether a reconcile stops before the children, or applies them.
#[derive(Debug)]
pub enum Course<'a> {
    Stop(Stopped),
    Serve(Box<Serve<'a>>),
}

/// Why a reconcile stops before the children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Input the API server could not check (the message names the field): nothing will
    /// change until the spec does, unless giving the target back raced an edit.
    InvalidSpec(String),
    /// The target is missing, or lacks the port: look again soon.
    Retry,
    /// The children cannot be built: the watch brings the next edit.
    UntilChanged,
}

/// An early stop and its conditions.
#[derive(Debug)]
pub struct Stopped {
    report: Report,
    pub stop: Stop,
}

/// The children to apply, and what the rest of the reconcile needs.
#[derive(Debug)]
pub struct Serve<'a> {
    msvc: &'a MonitoredService,
    target: &'a Service,
    selection: &'a Selection,
    pub children: Children,
    report: Report,
    takeover: Option<TakeoverPlan>,
}

/// A takeover that can go on: the original selector and the proxies' ports.
#[derive(Debug, Clone)]
struct TakeoverPlan {
    record: Option<Record>,
    original: BTreeMap<String, String>,
    ports: children::TakeoverPorts,
}

/// What writing the children came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Each child that could not be written, the error naming it, in order.
    pub failures: Vec<String>,
    /// Whether the Prometheus Operator's CRDs are missing (a monitoring child got a 404).
    pub crds_missing: bool,
}

/// A guarded write of the takeover protocol on the target Service.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The record as read, which the write's guard tests.
    pub record: Option<Record>,
    pub step: Step,
}

/// Where the takeover stands after a step.
#[derive(Debug, Clone, PartialEq)]
struct Stepped {
    condition: Condition,
    /// Whether the target Service points at the proxies.
    taken_over: bool,
    /// How soon to look again while a step is still to come.
    next: Option<Duration>,
}

/// The takeover step: its write, if any, and where it stands once the write went through
/// (or when there is none) or raced an edit.
#[derive(Debug, Clone, PartialEq)]
struct TakeoverMove {
    write: Option<Write>,
    done: Stepped,
    raced: Stepped,
}

/// Everything but the takeover write's result and the proxies' config state.
#[derive(Debug)]
pub struct Conclusion<'a> {
    msvc: &'a MonitoredService,
    target: &'a Service,
    report: Report,
    replicas: i32,
    ready: i32,
    selected_by: Vec<String>,
    takeover: Option<TakeoverMove>,
}

/// What a reconcile ends with: the status to write, and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: MonitoredServiceStatus,
    pub action: Action,
}

/// Whether the MonitoredService holds the takeover finalizer.
pub fn holds_finalizer(msvc: &MonitoredService) -> bool {
    msvc.finalizers().iter().any(|f| f == takeover::FINALIZER)
}

/// Checks what the schema cannot: the proxy config the spec implies must be valid.
pub fn validate(msvc: &MonitoredService) -> Result<(), String> {
    let placeholder = TargetInfo {
        upstream: "target:80".into(),
        service_port: 80,
        slices: None,
        headless: None,
        takeover: None,
    };
    children::proxy_config(msvc, &placeholder)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A takeover's record, if any, and the Service's original selector.
struct Start {
    record: Option<Record>,
    original: BTreeMap<String, String>,
}

/// Where a takeover of `svc` starts from: `Ok(None)` in Parallel mode; the `TakenOver`
/// condition saying why when it cannot go on; else its record, if any, and the Service's
/// original selector.
fn takeover_start(msvc: &MonitoredService, svc: &Service) -> Result<Option<Start>, Condition> {
    if msvc.spec.mode != Mode::Takeover {
        return Ok(None);
    }
    let record = Record::of(svc)
        .map_err(|message| Condition::taken_over(false, "RecordUnreadable", message))?;
    if let Some(message) = takeover::refusal(svc, record.as_ref(), &msvc.name_any()) {
        return Err(Condition::taken_over(false, "Refused", message));
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
    Ok(Some(Start { record, original }))
}

/// The selector of the application's pods, whose ports a takeover of `svc` resolves;
/// `None` when no takeover goes on, and no pod is to be read.
pub fn application_selector(
    msvc: &MonitoredService,
    svc: &Service,
) -> Option<BTreeMap<String, String>> {
    takeover_start(msvc, svc).ok().flatten().map(|s| s.original)
}

/// Whether the takeover of `svc` can go on, on which ports; `Ok(None)` in Parallel mode,
/// the condition saying why when it cannot.
fn plan_takeover(
    msvc: &MonitoredService,
    svc: &Service,
    pods: &[Pod],
) -> Result<Option<TakeoverPlan>, Condition> {
    let Some(Start { record, original }) = takeover_start(msvc, svc)? else {
        return Ok(None);
    };
    let ports = takeover::ports(
        msvc,
        svc,
        pods,
        record.as_ref(),
        crate::proxy_pods::ADMIN_PORT,
    )
    .map_err(|message| Condition::taken_over(false, "PortsUnresolved", message))?;
    Ok(Some(TakeoverPlan {
        record,
        original,
        ports,
    }))
}

/// The takeover (if one can go on, else why not) and where the proxies send traffic, or
/// why the target cannot be used.
fn resolve(
    msvc: &MonitoredService,
    svc: &Service,
    pods: &[Pod],
    cluster_domain: &str,
) -> (
    Result<Option<TakeoverPlan>, Condition>,
    Result<TargetInfo, String>,
) {
    let takeover = plan_takeover(msvc, svc, pods);
    let target = match &takeover {
        Ok(Some(p)) => Ok(children::takeover_target_info(
            msvc,
            svc,
            p.original.clone(),
            p.ports.clone(),
            cluster_domain,
        )),
        _ => children::target_info(msvc, svc, cluster_domain),
    };
    (takeover, target)
}

/// Whether the proxies can be pointed at `svc`: only then are the children built, and
/// the Prometheus selection read.
pub fn target_usable(
    msvc: &MonitoredService,
    svc: &Service,
    pods: &[Pod],
    cluster_domain: &str,
) -> bool {
    resolve(msvc, svc, pods, cluster_domain).1.is_ok()
}

/// Decides a reconcile from what it observed: stop early, or the children to apply.
pub fn decide<'a>(
    msvc: &'a MonitoredService,
    seen: &'a Observed,
    settings: &OperatorSettings<'_>,
) -> Plan<'a> {
    let mut report = Report::new(msvc);
    // Whenever no takeover goes on, a Service this MonitoredService took over is given back.
    let let_go = if holds_finalizer(msvc) {
        Hold::LetGo
    } else {
        Hold::Keep
    };
    let stop = |hold, report, stop| Plan {
        hold,
        course: Course::Stop(Stopped { report, stop }),
    };

    // Input the API server could not check: route templates, durations.
    if let Err(message) = validate(msvc) {
        if msvc.spec.mode == Mode::Takeover {
            report.set(Condition::taken_over(
                false,
                "InvalidSpec",
                "the target Service has its original selector back until the spec is fixed",
            ));
        }
        report.set(Condition::invalid_spec(&message));
        return stop(let_go, report, Stop::InvalidSpec(message));
    }

    let target_name = &msvc.spec.target.service;
    let Some(svc) = &seen.target else {
        let ns = msvc.namespace().unwrap_or_default();
        report.set(Condition::target_missing(target_name, &ns));
        return stop(Hold::Keep, report, Stop::Retry);
    };
    // Takeover: what the record says, whether the Service can be served, on which ports.
    let (takeover, target) = resolve(msvc, svc, &seen.application_pods, settings.cluster_domain);
    let takeover = takeover.unwrap_or_else(|why| {
        report.set(why);
        None
    });
    let hold = if takeover.is_some() {
        Hold::Finalizer
    } else {
        let_go
    };
    let target = match target {
        Ok(t) => t,
        Err(message) => {
            report.set(Condition::target_unusable(&message));
            return stop(hold, report, Stop::Retry);
        }
    };
    report.set(Condition::target_found(target_name));

    let child_settings = children::Settings {
        proxy_image: settings.proxy_image.to_string(),
        monitoring_labels: seen.selection.labels.clone(),
    };
    let anchor = seen.anchor.as_deref().unwrap_or(msvc);
    let children = match children::build(msvc, anchor, &target, &child_settings) {
        Ok(c) => c,
        Err(e) => {
            report.set(Condition::invalid_spec(&e.to_string()));
            return stop(hold, report, Stop::UntilChanged);
        }
    };
    Plan {
        hold,
        course: Course::Serve(Box::new(Serve {
            msvc,
            target: svc,
            selection: &seen.selection,
            children,
            report,
            takeover,
        })),
    }
}

impl Stopped {
    /// The status of an early stop, and the next look; `released` says whether giving the
    /// target Service back went through (or was not needed).
    pub fn finish(self, released: bool) -> Outcome {
        let action = match self.stop {
            Stop::InvalidSpec(_) if !released => Action::requeue(TAKEOVER_STEP),
            Stop::InvalidSpec(_) | Stop::UntilChanged => Action::await_change(),
            Stop::Retry => Action::requeue(RETRY),
        };
        Outcome {
            status: self.report.finish(None, None),
            action,
        }
    }
}

impl<'a> Serve<'a> {
    /// The conditions once the children are `written` and the proxy `deployment` read,
    /// and the takeover step to take (`now` says whether a re-applied selector may be set
    /// back).
    pub fn conclude(
        self,
        written: &Written,
        deployment: Option<&Deployment>,
        now: Timestamp,
    ) -> Conclusion<'a> {
        let Serve {
            msvc,
            target,
            selection,
            mut report,
            takeover,
            ..
        } = self;
        // The Prometheus Operator's CRDs may be missing: everything else still works.
        if written.crds_missing {
            report.set(Condition::monitoring_crds_missing());
        } else {
            report.set(selection.condition(msvc.spec.monitoring.service_monitor.enabled));
        }
        if let Some(first) = written.failures.first() {
            report.set(Condition::apply_failed(first, written.failures.len()));
        }
        let rolled_out = deployment.is_some_and(rolled_out);
        let (replicas, ready) = deployment
            .and_then(|d| d.status.as_ref())
            .map_or((0, 0), |s| {
                (s.replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
            });
        report.set(Condition::proxy_availability(ready, replicas));
        let takeover = takeover.map(|plan| step_takeover(msvc, target, &plan, rolled_out, now));
        Conclusion {
            msvc,
            target,
            report,
            replicas,
            ready,
            selected_by: selection.selected_by.clone(),
            takeover,
        }
    }
}

impl Conclusion<'_> {
    /// The takeover step's write on the target Service (as read), if it takes one.
    pub fn write(&self) -> Option<(&Service, &Write)> {
        let write = self.takeover.as_ref()?.write.as_ref()?;
        Some((self.target, write))
    }

    /// Whether a proxy replica is available: only then is their config state read.
    pub fn proxies_available(&self) -> bool {
        self.ready > 0
    }

    /// The status and the next look, once the takeover write went through (`true` when
    /// there was none) or not, with the proxies' `config` state when it was read.
    pub fn finish(self, went_through: bool, config: Option<ConfigHealth>) -> Outcome {
        let Conclusion {
            msvc,
            mut report,
            replicas,
            ready,
            selected_by,
            takeover,
            ..
        } = self;
        let (taken_over, next) = match takeover {
            Some(m) => {
                let stepped = if went_through { m.done } else { m.raced };
                report.set(stepped.condition);
                (stepped.taken_over, stepped.next)
            }
            None => (false, None),
        };
        // The config state; the traffic figures are the traffic loop's (operator::traffic).
        let proxy_name = children::proxy_name(msvc);
        if let Some(health) = config {
            report.set(Condition::proxy_config(health, &proxy_name));
        }
        let mut status = report.finish(Some(replicas), Some(ready));
        status.selected_by = selected_by;
        status.proxy_service = Some(if taken_over {
            msvc.spec.target.service.clone()
        } else {
            proxy_name
        });
        let ready_now = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        // Ready proxies are read again for live traffic figures; otherwise look again
        // soon, and sooner while a takeover waits for its next step.
        let action =
            Action::requeue(next.unwrap_or(if ready_now { TRAFFIC_REFRESH } else { RETRY }));
        Outcome { status, action }
    }
}

/// The next takeover step on the target Service `svc`, and where it stands after it.
fn step_takeover(
    msvc: &MonitoredService,
    svc: &Service,
    plan: &TakeoverPlan,
    rolled_out: bool,
    now: Timestamp,
) -> TakeoverMove {
    let name = msvc.name_any();
    let svc_name = svc.name_any();
    let record = plan.record.as_ref();
    let soon = Some(TAKEOVER_STEP);
    let stepped = |condition, taken_over, next| Stepped {
        condition,
        taken_over,
        next,
    };
    let taken = |reason, message: String| Condition::taken_over(true, reason, message);
    let waiting = |reason, message: String| Condition::taken_over(false, reason, message);
    let stays = |s: Stepped| TakeoverMove {
        write: None,
        done: s.clone(),
        raced: s,
    };
    let repoint = |reassert| Write {
        record: plan.record.clone(),
        step: Step::Repoint { reassert },
    };
    match takeover::phase(svc, record, &name) {
        Phase::Free => {
            let new = Record {
                monitored_service: name.clone(),
                selector: plan.original.clone(),
                proxy_selector: crate::proxy_pods::selector_labels(msvc),
                ports: plan.ports.named.clone(),
                repointed: false,
                reasserted_at: None,
            };
            // Recorded whether or not the write raced: the next look reads it again.
            let recorded = stepped(
                waiting(
                    "Recorded",
                    format!(
                        "the selector of Service {svc_name} is recorded in its annotation {}; it is pointed at the proxies once they are ready",
                        takeover::RECORD_ANNOTATION
                    ),
                ),
                false,
                soon,
            );
            TakeoverMove {
                write: Some(Write {
                    record: None,
                    step: Step::Record(new),
                }),
                done: recorded.clone(),
                raced: recorded,
            }
        }
        Phase::Recorded if !rolled_out => stays(stepped(
            waiting(
                "WaitingForProxy",
                format!(
                    "Service {svc_name} is pointed at the proxies once the proxy Deployment has rolled out a ready replica listening on its ports"
                ),
            ),
            false,
            soon,
        )),
        Phase::Recorded => TakeoverMove {
            write: Some(repoint(false)),
            done: stepped(
                taken("TakenOver", taken_message(&svc_name, plan)),
                true,
                None,
            ),
            raced: stepped(
                waiting(
                    "WaitingForProxy",
                    format!("Service {svc_name} changed while being repointed; trying again"),
                ),
                false,
                soon,
            ),
        },
        Phase::TakenOver => stays(stepped(
            taken("TakenOver", taken_message(&svc_name, plan)),
            true,
            None,
        )),
        Phase::Reapplied if record.is_some_and(|r| takeover::may_reassert(r, now)) => {
            let reasserted = |retrying: bool| {
                taken(
                    "SelectorReasserted",
                    format!(
                        "the selector of Service {svc_name} was re-applied with its original keys next to the proxies' (what `kubectl apply` of its unchanged manifest does), which matches no pod; routemeter set the proxies' selector again{}",
                        if retrying { " (retrying)" } else { "" }
                    ),
                )
            };
            TakeoverMove {
                write: Some(repoint(true)),
                done: stepped(reasserted(false), true, None),
                raced: stepped(reasserted(true), false, soon),
            }
        }
        Phase::Reapplied | Phase::Reverted | Phase::Changed => {
            let current = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            stays(stepped(
                waiting(
                    "SelectorChanged",
                    format!(
                        "the selector of Service {svc_name} was changed by someone else to {current:?} while taken over; routemeter leaves it so. \
                     To hand the Service to routemeter again, remove its annotation {} (the selector it has then is the one restored later); \
                     to give it up, set spec.mode: Parallel",
                        takeover::RECORD_ANNOTATION
                    ),
                ),
                false,
                None,
            ))
        }
        Phase::Foreign(_) => stays(stepped(
            waiting("Refused", "taken over by another MonitoredService".into()),
            false,
            None,
        )),
    }
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

#[cfg(test)]
mod tests {
    //! Every branch of the decisions, on built objects: no cluster, no client.

    use super::*;
    use serde_json::{Value, json};

    const SETTINGS: OperatorSettings<'static> = OperatorSettings {
        proxy_image: "routemeter/routemeter:test",
        cluster_domain: "cluster.local",
    };

    fn now() -> Timestamp {
        "2026-12-02T10:00:00Z".parse().expect("a time")
    }

    /// A MonitoredService `apps/shop` targeting Service `shop` port 80, with `spec`'s
    /// fields on top.
    fn msvc(spec: Value) -> MonitoredService {
        let mut full = json!({ "target": { "service": "shop", "port": 80 } });
        for (k, v) in spec.as_object().expect("an object") {
            full[k] = v.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "routemeter.io/v1alpha1", "kind": "MonitoredService",
            "metadata": { "name": "shop", "namespace": "apps", "uid": "u-1", "generation": 3 },
            "spec": full,
        }))
        .expect("a MonitoredService")
    }

    fn takeover_msvc() -> MonitoredService {
        msvc(json!({ "mode": "Takeover" }))
    }

    fn holding(mut m: MonitoredService) -> MonitoredService {
        m.metadata.finalizers = Some(vec![takeover::FINALIZER.into()]);
        m
    }

    /// An invalid spec the schema lets through.
    fn invalid(mode: &str) -> MonitoredService {
        msvc(json!({ "mode": mode, "proxy": { "timeouts": { "connect": "0s" } } }))
    }

    fn service(spec: Value, record: Option<&Record>) -> Service {
        let mut meta = json!({ "name": "shop", "namespace": "apps" });
        if let Some(r) = record {
            meta["annotations"] = json!({
                takeover::RECORD_ANNOTATION: serde_json::to_string(r).expect("json"),
            });
        }
        serde_json::from_value(json!({ "metadata": meta, "spec": spec })).expect("a Service")
    }

    /// The application's Service: port 80 to the pods' 8080.
    fn app_service() -> Service {
        service(app_spec(json!({ "app": "shop" })), None)
    }

    fn app_spec(selector: Value) -> Value {
        json!({ "selector": selector, "ports": [{ "name": "web", "port": 80, "targetPort": 8080 }] })
    }

    fn proxy_selector() -> BTreeMap<String, String> {
        crate::proxy_pods::selector_labels(&takeover_msvc())
    }

    /// The record of a takeover of `app_service` by `shop`.
    fn record(repointed: bool, reasserted_at: Option<&str>) -> Record {
        Record {
            monitored_service: "shop".into(),
            selector: BTreeMap::from([("app".into(), "shop".into())]),
            proxy_selector: proxy_selector(),
            ports: BTreeMap::new(),
            repointed,
            reasserted_at: reasserted_at.map(String::from),
        }
    }

    /// `app_service` taken over as far as `record` says, its selector being `selector`.
    fn recorded_service(selector: Value, record: &Record) -> Service {
        service(app_spec(selector), Some(record))
    }

    fn seen(target: Option<Service>) -> Observed {
        Observed {
            target,
            ..Observed::default()
        }
    }

    /// The proxy Deployment with `available` of 2 replicas, its current template rolled
    /// out or not.
    fn deployment(available: i32, rolled_out: bool) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "shop-routemeter", "namespace": "apps", "generation": 2 },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": {
                "observedGeneration": if rolled_out { 2 } else { 1 },
                "replicas": 2,
                "updatedReplicas": if rolled_out { 2 } else { 1 },
                "availableReplicas": available,
            },
        }))
        .expect("a Deployment")
    }

    fn stopped(plan: Plan<'_>) -> Stopped {
        match plan.course {
            Course::Stop(s) => s,
            Course::Serve(_) => panic!("expected an early stop, got children to apply"),
        }
    }

    fn serving(plan: Plan<'_>) -> Box<Serve<'_>> {
        match plan.course {
            Course::Serve(s) => s,
            Course::Stop(s) => panic!("expected children to apply, got {:?}", s.stop),
        }
    }

    /// A reconcile that applies its children: written as `written` says, the Deployment
    /// read as `deployment`, the takeover write (if any) going through or not, the
    /// proxies' config state `config`. Returns the write it made, and the outcome.
    fn serve(
        m: &MonitoredService,
        observed: &Observed,
        written: &Written,
        deployment: Option<&Deployment>,
        went_through: bool,
        config: Option<ConfigHealth>,
    ) -> (Option<Write>, Outcome) {
        let conclusion =
            serving(decide(m, observed, &SETTINGS)).conclude(written, deployment, now());
        let write = conclusion.write().map(|(_, w)| w.clone());
        (write, conclusion.finish(went_through, config))
    }

    /// The usual reconcile of a valid object with a usable target: every child written,
    /// the Deployment as given, any takeover write going through.
    fn applied(
        m: &MonitoredService,
        target: Service,
        deployment: Option<&Deployment>,
    ) -> (Option<Write>, Outcome) {
        serve(
            m,
            &seen(Some(target)),
            &Written::default(),
            deployment,
            true,
            None,
        )
    }

    /// The condition `type_` of `status`: its status and reason.
    fn condition<'s>(
        status: &'s MonitoredServiceStatus,
        type_: &str,
    ) -> Option<(&'s str, &'s str)> {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.as_str(), c.reason.as_str()))
    }

    fn message<'s>(status: &'s MonitoredServiceStatus, type_: &str) -> &'s str {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map_or("", |c| c.message.as_str())
    }

    /// The conditions of `out` without their times.
    fn untimed(out: &Outcome) -> Vec<(&str, &str, &str, &str)> {
        out.status
            .conditions
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_str(),
                    c.message.as_str(),
                )
            })
            .collect()
    }

    #[track_caller]
    fn assert_condition(status: &MonitoredServiceStatus, type_: &str, want: (&str, &str)) {
        assert_eq!(
            condition(status, type_),
            Some(want),
            "{type_} in {:#?}",
            status.conditions
        );
    }

    #[test]
    fn an_invalid_spec_stops_naming_the_field_and_waits_for_an_edit() {
        let m = invalid("Parallel");
        // Nothing is read for an invalid spec: the decision needs nothing.
        let nothing = Observed::default();
        let plan = decide(&m, &nothing, &SETTINGS);
        assert_eq!(plan.hold, Hold::Keep);
        let stop = stopped(plan);
        assert!(
            matches!(&stop.stop, Stop::InvalidSpec(m) if m.starts_with("spec.proxy.timeouts.connect")),
            "{:?}",
            stop.stop
        );
        let out = stop.finish(true);
        assert_condition(&out.status, "Ready", ("False", "InvalidSpec"));
        assert!(
            message(&out.status, "Ready").starts_with("spec.proxy.timeouts.connect: "),
            "{}",
            message(&out.status, "Ready")
        );
        assert_eq!(condition(&out.status, "TakenOver"), None, "Parallel mode");
        assert_eq!(
            condition(&out.status, "TargetFound"),
            None,
            "never looked at"
        );
        assert_eq!(out.status.replicas, None);
        assert_eq!(out.status.observed_generation, Some(3));
        assert_eq!(out.action, Action::await_change());
    }

    #[test]
    fn an_invalid_spec_in_takeover_mode_gives_the_service_back() {
        let m = holding(invalid("Takeover"));
        let nothing = Observed::default();
        let plan = decide(&m, &nothing, &SETTINGS);
        assert_eq!(plan.hold, Hold::LetGo, "the finalizer is held: let go");
        let out = stopped(plan).finish(true);
        assert_condition(&out.status, "TakenOver", ("False", "InvalidSpec"));
        assert_condition(&out.status, "Ready", ("False", "InvalidSpec"));
        assert_eq!(out.action, Action::await_change());
        // Giving the Service back raced an edit: look again soon, not at the next edit.
        let raced = stopped(decide(&m, &Observed::default(), &SETTINGS)).finish(false);
        assert_condition(&raced.status, "Ready", ("False", "InvalidSpec"));
        assert_eq!(raced.action, Action::requeue(TAKEOVER_STEP));
        // Not holding the finalizer: nothing to let go.
        let free = invalid("Takeover");
        assert_eq!(
            decide(&free, &Observed::default(), &SETTINGS).hold,
            Hold::Keep
        );
    }

    #[test]
    fn a_missing_target_is_looked_for_again_and_nothing_is_let_go() {
        let m = holding(takeover_msvc());
        let missing = seen(None);
        let plan = decide(&m, &missing, &SETTINGS);
        assert_eq!(plan.hold, Hold::Keep, "a missing Service is not given back");
        let out = stopped(plan).finish(true);
        assert_condition(&out.status, "TargetFound", ("False", "ServiceNotFound"));
        assert_condition(&out.status, "Ready", ("False", "ServiceNotFound"));
        assert!(
            message(&out.status, "TargetFound").starts_with("Service apps/shop does not exist"),
            "{}",
            message(&out.status, "TargetFound")
        );
        assert_eq!(out.action, Action::requeue(RETRY));
    }

    #[test]
    fn a_port_the_service_lacks_is_named_and_looked_for_again() {
        let m = msvc(json!({ "target": { "service": "shop", "port": 81 } }));
        assert!(!target_usable(&m, &app_service(), &[], "cluster.local"));
        let observed = seen(Some(app_service()));
        let plan = decide(&m, &observed, &SETTINGS);
        assert_eq!(plan.hold, Hold::Keep);
        let out = stopped(plan).finish(true);
        assert_condition(&out.status, "TargetFound", ("False", "PortNotFound"));
        assert_condition(&out.status, "Ready", ("False", "PortNotFound"));
        assert!(
            message(&out.status, "TargetFound").contains("has no port Int(81)"),
            "{}",
            message(&out.status, "TargetFound")
        );
        assert_eq!(out.action, Action::requeue(RETRY));
        // Back in Parallel mode with the finalizer still held: the Service is given back.
        assert_eq!(decide(&holding(m), &observed, &SETTINGS).hold, Hold::LetGo);
    }

    #[test]
    fn children_that_cannot_be_built_are_an_invalid_spec() {
        // The spec is valid with any target, but this target gives the proxy an upstream
        // on a port that does not exist.
        let m = msvc(json!({ "target": { "service": "shop", "port": 70000 } }));
        assert_eq!(validate(&m), Ok(()));
        let target = service(
            json!({ "type": "ExternalName", "externalName": "shop.example.com" }),
            None,
        );
        let observed = seen(Some(target));
        let plan = decide(&m, &observed, &SETTINGS);
        assert_eq!(plan.hold, Hold::Keep);
        let stop = stopped(plan);
        assert_eq!(stop.stop, Stop::UntilChanged);
        let out = stop.finish(true);
        assert_condition(&out.status, "TargetFound", ("True", "ServiceFound"));
        assert_condition(&out.status, "Ready", ("False", "InvalidSpec"));
        assert!(
            message(&out.status, "Ready").contains("upstream.endpoints[0]"),
            "{}",
            message(&out.status, "Ready")
        );
        assert_eq!(out.action, Action::await_change());
    }

    #[test]
    fn an_available_proxy_makes_the_object_ready_and_is_read_again_for_traffic() {
        let m = msvc(json!({}));
        let observed = seen(Some(app_service()));
        let serve_plan = decide(&m, &observed, &SETTINGS);
        assert_eq!(serve_plan.hold, Hold::Keep);
        let plan = serving(serve_plan);
        let kinds: Vec<&str> = plan
            .children
            .core
            .iter()
            .map(|c| c.resource.kind.as_str())
            .collect();
        assert!(kinds.contains(&"Deployment"), "{kinds:?}");
        let d = deployment(2, true);
        let (write, out) = applied(&m, app_service(), Some(&d));
        assert_eq!(write, None, "Parallel mode writes nothing to the target");
        assert_condition(&out.status, "TargetFound", ("True", "ServiceFound"));
        assert_condition(
            &out.status,
            "ProxyAvailable",
            ("True", "MinimumReplicasAvailable"),
        );
        assert_condition(&out.status, "Ready", ("True", "Available"));
        assert_eq!(condition(&out.status, "TakenOver"), None);
        assert_eq!(
            condition(&out.status, "ProxyConfigApplied"),
            None,
            "not read"
        );
        assert_eq!(
            (out.status.replicas, out.status.ready_replicas),
            (Some(2), Some(2))
        );
        assert_eq!(out.status.proxy_service.as_deref(), Some("shop-routemeter"));
        assert_eq!(out.action, Action::requeue(TRAFFIC_REFRESH));
    }

    #[test]
    fn a_proxy_not_yet_available_keeps_the_object_unready_and_looks_again_soon() {
        let m = msvc(json!({}));
        for (d, replicas) in [(None, 0), (Some(deployment(0, false)), 2)] {
            let (_, out) = applied(&m, app_service(), d.as_ref());
            assert_condition(
                &out.status,
                "ProxyAvailable",
                ("False", "NoReplicasAvailable"),
            );
            assert_condition(&out.status, "Ready", ("False", "NoReplicasAvailable"));
            assert_eq!(
                message(&out.status, "Ready"),
                format!(
                    "0/{replicas} proxy replicas available; see the proxy Deployment's events and pods"
                )
            );
            assert_eq!(
                (out.status.replicas, out.status.ready_replicas),
                (Some(replicas), Some(0))
            );
            assert_eq!(out.action, Action::requeue(RETRY));
        }
    }

    #[test]
    fn monitoring_is_reported_whether_crds_exist_and_a_prometheus_selects_it() {
        let m = msvc(json!({}));
        let d = deployment(1, true);
        let crds_missing = Written {
            failures: Vec::new(),
            crds_missing: true,
        };
        let (_, out) = serve(
            &m,
            &seen(Some(app_service())),
            &crds_missing,
            Some(&d),
            true,
            None,
        );
        assert_condition(
            &out.status,
            "MonitoringConfigured",
            ("False", "CRDsNotInstalled"),
        );
        assert_condition(&out.status, "Ready", ("True", "Available"));

        // No Prometheus at all, and one that selects nothing of ours.
        let (_, out) = applied(&m, app_service(), Some(&d));
        assert_condition(
            &out.status,
            "MonitoringConfigured",
            ("False", "NotSelected"),
        );
        assert!(
            message(&out.status, "MonitoringConfigured").contains("no Prometheus object exists")
        );
        let mut observed = seen(Some(app_service()));
        observed.selection.prometheus_found = true;
        let (_, out) = serve(&m, &observed, &Written::default(), Some(&d), true, None);
        assert_condition(
            &out.status,
            "MonitoringConfigured",
            ("False", "NotSelected"),
        );
        assert!(
            message(&out.status, "MonitoringConfigured").contains("no Prometheus selects"),
            "{}",
            message(&out.status, "MonitoringConfigured")
        );

        // Selected: said so, and the labels that select it are on the monitoring children.
        observed.selection = Selection {
            labels: BTreeMap::from([("release".into(), "kps".into())]),
            selected_by: vec!["monitoring/kps".into()],
            prometheus_found: true,
        };
        let plan = serving(decide(&m, &observed, &SETTINGS));
        let labelled = plan
            .children
            .monitoring
            .iter()
            .filter_map(|(_, _, manifest)| manifest.as_ref())
            .all(|manifest| manifest["metadata"]["labels"]["release"] == "kps");
        assert!(labelled && !plan.children.monitoring.is_empty());
        let out = plan
            .conclude(&Written::default(), Some(&d), now())
            .finish(true, None);
        assert_condition(&out.status, "MonitoringConfigured", ("True", "Selected"));
        assert_eq!(out.status.selected_by, ["monitoring/kps"]);

        let disabled = msvc(json!({ "monitoring": { "serviceMonitor": { "enabled": false } } }));
        let (_, out) = applied(&disabled, app_service(), Some(&d));
        assert_condition(
            &out.status,
            "MonitoringConfigured",
            ("True", "ServiceMonitorDisabled"),
        );
    }

    #[test]
    fn apply_failures_make_the_object_unready_with_their_count() {
        let m = msvc(json!({}));
        let d = deployment(2, true);
        let observed = seen(Some(app_service()));
        let three = Written {
            failures: vec![
                "cannot apply Role apps/shop-routemeter: forbidden".into(),
                "second".into(),
                "third".into(),
            ],
            crds_missing: false,
        };
        let (_, out) = serve(&m, &observed, &three, Some(&d), true, None);
        assert_condition(&out.status, "Ready", ("False", "ApplyFailed"));
        assert_eq!(
            message(&out.status, "Ready"),
            "cannot apply Role apps/shop-routemeter: forbidden (and 2 more; see the operator's log)"
        );
        // The proxies are still reported as they are.
        assert_condition(
            &out.status,
            "ProxyAvailable",
            ("True", "MinimumReplicasAvailable"),
        );
        let one = Written {
            failures: vec!["cannot apply Role apps/shop-routemeter: forbidden".into()],
            crds_missing: false,
        };
        let (_, out) = serve(&m, &observed, &one, Some(&d), true, None);
        assert_condition(&out.status, "Ready", ("False", "ApplyFailed"));
        assert_eq!(
            message(&out.status, "Ready"),
            "cannot apply Role apps/shop-routemeter: forbidden"
        );
        assert_eq!(out.action, Action::requeue(RETRY), "not ready");
    }

    #[test]
    fn a_proxy_rejecting_its_config_is_reported_without_unreadying_the_object() {
        let m = msvc(json!({}));
        let d = deployment(2, true);
        let observed = seen(Some(app_service()));
        let stale = ConfigHealth {
            proxies: 2,
            stale: 1,
        };
        let (_, out) = serve(
            &m,
            &observed,
            &Written::default(),
            Some(&d),
            true,
            Some(stale),
        );
        assert_condition(&out.status, "ProxyConfigApplied", ("False", "ReloadFailed"));
        assert!(message(&out.status, "ProxyConfigApplied").starts_with("1 of 2 proxies"));
        assert_condition(&out.status, "Ready", ("True", "Available"));
        let fine = ConfigHealth {
            proxies: 2,
            stale: 0,
        };
        let (_, out) = serve(
            &m,
            &observed,
            &Written::default(),
            Some(&d),
            true,
            Some(fine),
        );
        assert_condition(&out.status, "ProxyConfigApplied", ("True", "Applied"));
    }

    #[test]
    fn a_free_service_is_recorded_first_with_the_finalizer_held() {
        let m = takeover_msvc();
        let observed = seen(Some(app_service()));
        assert_eq!(
            application_selector(&m, &app_service()),
            Some(BTreeMap::from([("app".into(), "shop".into())])),
            "the application's pods are read"
        );
        assert_eq!(decide(&m, &observed, &SETTINGS).hold, Hold::Finalizer);
        let d = deployment(2, true);
        let (write, out) = applied(&m, app_service(), Some(&d));
        assert_eq!(
            write,
            Some(Write {
                record: None,
                step: Step::Record(record(false, None)),
            })
        );
        assert_condition(&out.status, "TakenOver", ("False", "Recorded"));
        assert_condition(&out.status, "Ready", ("False", "Recorded"));
        assert_eq!(out.status.proxy_service.as_deref(), Some("shop-routemeter"));
        assert_eq!(out.action, Action::requeue(TAKEOVER_STEP));
        // The record's write racing an edit changes nothing: the next look reads it again.
        let (_, raced) = serve(&m, &observed, &Written::default(), Some(&d), false, None);
        assert_eq!(untimed(&raced), untimed(&out));
        assert_eq!(raced.action, out.action);
    }

    #[test]
    fn a_recorded_service_waits_for_the_proxies_to_roll_out() {
        let m = takeover_msvc();
        let r = record(false, None);
        let svc = recorded_service(json!({ "app": "shop" }), &r);
        // Available, but the current template is not rolled out yet.
        let (write, out) = applied(&m, svc, Some(&deployment(1, false)));
        assert_eq!(write, None, "no write before the rollout");
        assert_condition(&out.status, "TakenOver", ("False", "WaitingForProxy"));
        assert_condition(&out.status, "Ready", ("False", "WaitingForProxy"));
        assert_eq!(out.action, Action::requeue(TAKEOVER_STEP));
    }

    #[test]
    fn a_rolled_out_proxy_takes_the_service_over() {
        let m = takeover_msvc();
        let r = record(false, None);
        let observed = seen(Some(recorded_service(json!({ "app": "shop" }), &r)));
        let d = deployment(2, true);
        let (write, out) = serve(&m, &observed, &Written::default(), Some(&d), true, None);
        assert_eq!(
            write,
            Some(Write {
                record: Some(r.clone()),
                step: Step::Repoint { reassert: false },
            }),
            "guarded by the record as read"
        );
        assert_condition(&out.status, "TakenOver", ("True", "TakenOver"));
        assert_condition(&out.status, "Ready", ("True", "Available"));
        assert_eq!(out.status.proxy_service.as_deref(), Some("shop"));
        assert_eq!(out.action, Action::requeue(TRAFFIC_REFRESH));

        // The Service changed while being repointed: not taken over, try again soon.
        let (_, raced) = serve(&m, &observed, &Written::default(), Some(&d), false, None);
        assert_condition(&raced.status, "TakenOver", ("False", "WaitingForProxy"));
        assert!(message(&raced.status, "TakenOver").contains("changed while being repointed"));
        assert_condition(&raced.status, "Ready", ("False", "WaitingForProxy"));
        assert_eq!(
            raced.status.proxy_service.as_deref(),
            Some("shop-routemeter")
        );
        assert_eq!(raced.action, Action::requeue(TAKEOVER_STEP));
    }

    #[test]
    fn a_taken_over_service_stays_so_and_an_unavailable_proxy_names_ready() {
        let m = takeover_msvc();
        let r = record(true, None);
        let svc = recorded_service(json!(proxy_selector()), &r);
        let (write, out) = applied(&m, svc.clone(), Some(&deployment(2, true)));
        assert_eq!(write, None);
        assert_condition(&out.status, "TakenOver", ("True", "TakenOver"));
        assert!(message(&out.status, "TakenOver").contains("on ports [8080]"));
        assert_condition(&out.status, "Ready", ("True", "Available"));
        assert_eq!(out.status.proxy_service.as_deref(), Some("shop"));
        // The proxies gone: Ready says so (ProxyAvailable comes before TakenOver).
        let (_, out) = applied(&m, svc, None);
        assert_condition(&out.status, "Ready", ("False", "NoReplicasAvailable"));
        assert_eq!(out.action, Action::requeue(RETRY));
    }

    #[test]
    fn a_reapplied_selector_is_set_back_at_most_once_per_interval() {
        let m = takeover_msvc();
        let mut union = r_selector();
        union.extend(proxy_selector());
        let d = deployment(2, true);
        let r = record(true, None);
        let observed = seen(Some(recorded_service(json!(union), &r)));
        let (write, out) = serve(&m, &observed, &Written::default(), Some(&d), true, None);
        assert_eq!(
            write.map(|w| w.step),
            Some(Step::Repoint { reassert: true })
        );
        assert_condition(&out.status, "TakenOver", ("True", "SelectorReasserted"));
        assert!(!message(&out.status, "TakenOver").ends_with("(retrying)"));
        assert_eq!(out.status.proxy_service.as_deref(), Some("shop"));
        assert_eq!(out.action, Action::requeue(TRAFFIC_REFRESH));
        let (_, raced) = serve(&m, &observed, &Written::default(), Some(&d), false, None);
        assert_condition(&raced.status, "TakenOver", ("True", "SelectorReasserted"));
        assert!(message(&raced.status, "TakenOver").ends_with("(retrying)"));
        assert_eq!(
            raced.status.proxy_service.as_deref(),
            Some("shop-routemeter")
        );
        assert_eq!(raced.action, Action::requeue(TAKEOVER_STEP));

        // Set back two minutes ago: left alone, and reported.
        let recent = record(true, Some("2026-12-02T09:58:00Z"));
        let (write, out) = applied(&m, recorded_service(json!(union), &recent), Some(&d));
        assert_eq!(write, None);
        assert_condition(&out.status, "TakenOver", ("False", "SelectorChanged"));
        assert_condition(&out.status, "Ready", ("False", "SelectorChanged"));
        assert_eq!(out.action, Action::requeue(RETRY));
    }

    fn r_selector() -> BTreeMap<String, String> {
        BTreeMap::from([("app".into(), "shop".into())])
    }

    #[test]
    fn a_selector_changed_by_someone_else_is_left_alone() {
        let m = takeover_msvc();
        for selector in [json!({ "app": "shop-v2" }), json!({ "app": "shop" })] {
            // Another selector, or the original one back after the repoint.
            let svc = recorded_service(selector, &record(true, None));
            let (write, out) = applied(&m, svc, Some(&deployment(2, true)));
            assert_eq!(write, None);
            assert_condition(&out.status, "TakenOver", ("False", "SelectorChanged"));
            assert_eq!(out.status.proxy_service.as_deref(), Some("shop-routemeter"));
            assert_eq!(out.action, Action::requeue(RETRY));
        }
    }

    #[test]
    fn a_service_that_cannot_be_taken_over_is_refused_and_given_back() {
        let m = holding(takeover_msvc());
        let headless = service(
            json!({ "selector": { "app": "shop" }, "clusterIP": "None", "ports": [{ "port": 80, "targetPort": 8080 }] }),
            None,
        );
        assert_eq!(application_selector(&m, &headless), None, "no pod is read");
        let observed = seen(Some(headless.clone()));
        assert_eq!(decide(&m, &observed, &SETTINGS).hold, Hold::LetGo);
        assert_eq!(
            decide(&takeover_msvc(), &observed, &SETTINGS).hold,
            Hold::Keep,
            "no finalizer: nothing to let go"
        );
        // Served in parallel meanwhile; Ready names the refusal, set before the rest.
        let (write, out) = applied(&m, headless.clone(), Some(&deployment(2, true)));
        assert_eq!(write, None);
        assert_condition(&out.status, "TakenOver", ("False", "Refused"));
        assert!(message(&out.status, "TakenOver").contains("is headless"));
        assert_condition(
            &out.status,
            "ProxyAvailable",
            ("True", "MinimumReplicasAvailable"),
        );
        assert_condition(&out.status, "Ready", ("False", "Refused"));
        assert_eq!(out.status.proxy_service.as_deref(), Some("shop-routemeter"));
        assert_eq!(out.action, Action::requeue(RETRY));

        // Ready names the first failing condition as they were set: the refusal comes
        // before the proxies, and before a port the Service lacks.
        let (_, out) = applied(&m, headless.clone(), None);
        assert_condition(
            &out.status,
            "ProxyAvailable",
            ("False", "NoReplicasAvailable"),
        );
        assert_condition(&out.status, "Ready", ("False", "Refused"));
        let wrong_port = holding(msvc(
            json!({ "mode": "Takeover", "target": { "service": "shop", "port": 81 } }),
        ));
        let observed = seen(Some(headless.clone()));
        let out = stopped(decide(&wrong_port, &observed, &SETTINGS)).finish(true);
        assert_condition(&out.status, "TargetFound", ("False", "PortNotFound"));
        assert_condition(&out.status, "Ready", ("False", "Refused"));
        assert_eq!(out.action, Action::requeue(RETRY));

        // Taken over by another MonitoredService.
        let mut theirs = record(true, None);
        theirs.monitored_service = "other".into();
        let (_, out) = applied(
            &m,
            recorded_service(json!(proxy_selector()), &theirs),
            Some(&deployment(2, true)),
        );
        assert_condition(&out.status, "TakenOver", ("False", "Refused"));
        assert!(message(&out.status, "TakenOver").contains("MonitoredService other"));
    }

    #[test]
    fn named_ports_resolve_through_the_application_pods_or_wait_for_one() {
        let m = holding(takeover_msvc());
        let svc = service(
            json!({ "selector": { "app": "shop" }, "ports": [{ "name": "web", "port": 80, "targetPort": "http" }] }),
            None,
        );
        let observed = seen(Some(svc.clone()));
        assert_eq!(decide(&m, &observed, &SETTINGS).hold, Hold::LetGo);
        let (_, out) = applied(&m, svc.clone(), Some(&deployment(2, true)));
        assert_condition(&out.status, "TakenOver", ("False", "PortsUnresolved"));
        assert!(message(&out.status, "TakenOver").contains("named port \"http\""));
        assert_condition(&out.status, "Ready", ("False", "PortsUnresolved"));

        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "shop-1" },
            "spec": { "containers": [{ "name": "app", "ports": [{ "name": "http", "containerPort": 8080 }] }] },
        }))
        .expect("a Pod");
        let with_pod = Observed {
            target: Some(svc),
            application_pods: vec![pod],
            ..Observed::default()
        };
        assert_eq!(decide(&m, &with_pod, &SETTINGS).hold, Hold::Finalizer);
        let (write, out) = serve(&m, &with_pod, &Written::default(), None, true, None);
        match write.map(|w| w.step) {
            Some(Step::Record(r)) => {
                assert_eq!(r.ports, BTreeMap::from([("http".into(), 8080)]));
            }
            other => panic!("expected the record, got {other:?}"),
        }
        assert_condition(&out.status, "TakenOver", ("False", "Recorded"));
        // The proxies gone: ProxyAvailable comes first in Ready.
        assert_condition(&out.status, "Ready", ("False", "NoReplicasAvailable"));
    }

    #[test]
    fn an_unreadable_record_is_reported_and_the_service_given_back() {
        let m = holding(takeover_msvc());
        let mut svc = app_service();
        svc.metadata.annotations = Some(BTreeMap::from([(
            takeover::RECORD_ANNOTATION.into(),
            "not a record".into(),
        )]));
        assert_eq!(application_selector(&m, &svc), None);
        assert_eq!(
            decide(&m, &seen(Some(svc.clone())), &SETTINGS).hold,
            Hold::LetGo
        );
        let (write, out) = applied(&m, svc, Some(&deployment(2, true)));
        assert_eq!(write, None);
        assert_condition(&out.status, "TakenOver", ("False", "RecordUnreadable"));
        assert_condition(&out.status, "Ready", ("False", "RecordUnreadable"));
    }

    #[test]
    fn parallel_mode_reads_no_pods_and_lets_a_held_service_go() {
        let m = msvc(json!({}));
        assert_eq!(application_selector(&m, &app_service()), None);
        assert!(target_usable(&m, &app_service(), &[], "cluster.local"));
        let observed = seen(Some(app_service()));
        assert_eq!(decide(&holding(m), &observed, &SETTINGS).hold, Hold::LetGo);
    }
}
