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
        headless: None,
        takeover: None,
    };
    children::proxy_config(msvc, &placeholder)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Where a takeover of `svc` starts from: `Ok(None)` in Parallel mode; the `TakenOver`
/// condition saying why when it cannot go on; else its record, if any, and the Service's
/// original selector.
#[allow(clippy::type_complexity)]
fn takeover_start(
    msvc: &MonitoredService,
    svc: &Service,
) -> Result<Option<(Option<Record>, BTreeMap<String, String>)>, Condition> {
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
    Ok(Some((record, original)))
}

/// The selector of the application's pods, whose ports a takeover of `svc` resolves;
/// `None` when no takeover goes on, and no pod is to be read.
pub fn application_selector(
    msvc: &MonitoredService,
    svc: &Service,
) -> Option<BTreeMap<String, String>> {
    takeover_start(msvc, svc).ok().flatten().map(|(_, s)| s)
}

/// Whether the takeover of `svc` can go on, on which ports; `Ok(None)` in Parallel mode,
/// the condition saying why when it cannot.
fn plan_takeover(
    msvc: &MonitoredService,
    svc: &Service,
    pods: &[Pod],
) -> Result<Option<TakeoverPlan>, Condition> {
    let Some((record, original)) = takeover_start(msvc, svc)? else {
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
#[allow(clippy::type_complexity)]
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
    let children = match children::build(msvc, &target, &child_settings) {
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
