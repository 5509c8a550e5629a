//! Upstream endpoints from a Service's EndpointSlices, followed through a watch on the
//! Kubernetes API (`upstream.endpointSlices`).
//!
//! One task per watched Service owns the watch and publishes the ready address set on a
//! `tokio::sync::watch` channel; the control loop applies what it publishes to the
//! balancer in use. The task publishes `None` ("use DNS") until its first successful list,
//! and again once the API has failed for [`FALLBACK_AFTER`] without a good answer since.
//! Any watch error restarts the watch, after a backoff, from a fresh list: the set
//! published after an outage is always one the API listed whole, never events from before
//! it stitched to events after it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use prometheus::IntCounter;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::EndpointSlices;

/// How long the watch may fail, with no good answer from the API, before the proxy stops
/// trusting the last set it listed and goes back to the DNS `endpoints`.
pub const FALLBACK_AFTER: Duration = Duration::from_secs(10);

/// The wait before the first restart of a failed watch; doubled on each failure in a row
/// up to [`RETRY_MAX`], so an API that is down costs a request every few seconds.
const RETRY_FIRST: Duration = Duration::from_millis(500);

/// The longest wait between two attempts to watch again.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What the watch says of the endpoints: `Some` ready set (possibly empty) once slices
/// were listed, `None` while they are not known (not listed yet, no slice yet, or the API
/// has not answered for [`FALLBACK_AFTER`]): use DNS. Once some slice was seen, the set
/// stays when the last slice goes (see `Follow::publish`).
pub type Discovered = Option<Vec<SocketAddr>>;

/// The addresses of every endpoint of `slices` that is ready (`conditions.ready` true or
/// absent: unknown counts as ready, per the API) and not terminating, each at `port`;
/// sorted, without duplicates (an address may sit in two slices while it moves). Slices of
/// type `FQDN`, and addresses that are not IPs, are skipped. `serving` is not looked at: a
/// terminating endpoint that still serves finishes its requests but gets no new one.
pub fn ready_addresses<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: u16,
) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = slices
        .into_iter()
        .filter(|s| matches!(s.address_type.as_str(), "IPv4" | "IPv6"))
        .flat_map(|s| &s.endpoints)
        .filter(|e| {
            let conditions = e.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            ready && !terminating
        })
        .flat_map(|e| &e.addresses)
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// `namespace/service`, for logs.
pub fn describe(settings: &EndpointSlices) -> String {
    format!("{}/{}", settings.namespace, settings.service)
}

/// A running watch of one Service's EndpointSlices; stopped when dropped.
#[derive(Debug)]
pub struct SliceWatch {
    settings: EndpointSlices,
    updates: watch::Receiver<Discovered>,
    task: JoinHandle<()>,
}

impl SliceWatch {
    /// Starts watching the slices `settings` name; each watch error counts on `errors`.
    pub fn start(client: Client, settings: EndpointSlices, errors: IntCounter) -> Self {
        let (tx, updates) = watch::channel(None);
        let api: Api<EndpointSlice> = Api::namespaced(client, &settings.namespace);
        let selector = format!("kubernetes.io/service-name={}", settings.service);
        let config = watcher::Config::default().labels(&selector);
        let follow = Follow {
            api,
            config,
            port: settings.port,
            target: describe(&settings),
            tx,
            errors,
        };
        SliceWatch {
            settings,
            updates,
            task: tokio::spawn(follow.run()),
        }
    }

    /// What this watch follows.
    pub fn settings(&self) -> &EndpointSlices {
        &self.settings
    }

    /// The latest set published.
    pub fn latest(&self) -> Discovered {
        self.updates.borrow().clone()
    }

    /// Waits until a new set is published (never returns if the task is gone).
    pub async fn changed(&mut self) {
        if self.updates.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for SliceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The task behind a [`SliceWatch`].
struct Follow {
    api: Api<EndpointSlice>,
    config: watcher::Config,
    port: u16,
    target: String,
    tx: watch::Sender<Discovered>,
    errors: IntCounter,
}

impl Follow {
    async fn run(self) {
        let mut retry = RETRY_FIRST;
        // Since when the API has failed with no good answer since; `None` while it answers.
        let mut failing_since: Option<Instant> = None;
        loop {
            let error = self.watch_until_error(&mut failing_since).await;
            self.errors.inc();
            if failing_since.is_none() {
                // The first failure after a good answer (or of the first attempt).
                tracing::warn!(endpoint_slices = %self.target, %error, "cannot watch the EndpointSlices of {}: {error}; retrying", self.target);
                failing_since = Some(Instant::now());
                retry = RETRY_FIRST;
            } else {
                tracing::debug!(endpoint_slices = %self.target, %error, "watching the EndpointSlices failed again");
            }
            let resume = Instant::now() + retry;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(resume) => break,
                    () = self.fallback_due(failing_since) => self.fall_back(),
                }
            }
            retry = retry.saturating_mul(2).min(RETRY_MAX);
        }
    }

    /// Runs one watcher, from its initial list, publishing every change of the ready set,
    /// until it fails; returns the error.
    async fn watch_until_error(&self, failing_since: &mut Option<Instant>) -> watcher::Error {
        let mut events = std::pin::pin!(watcher(self.api.clone(), self.config.clone()));
        let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut listing: Option<BTreeMap<String, EndpointSlice>> = None;
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = self.fallback_due(*failing_since) => {
                    self.fall_back();
                    continue;
                }
            };
            match event {
                Some(Ok(Event::Init)) => listing = Some(BTreeMap::new()),
                Some(Ok(Event::InitApply(slice))) => {
                    listing.get_or_insert_default().insert(key(&slice), slice);
                }
                Some(Ok(Event::InitDone)) => {
                    slices = listing.take().unwrap_or_default();
                    if failing_since.take().is_some() {
                        tracing::info!(endpoint_slices = %self.target, "the EndpointSlices of {} are listed again", self.target);
                    }
                    self.publish(&slices);
                }
                Some(Ok(Event::Apply(slice))) => {
                    slices.insert(key(&slice), slice);
                    self.publish(&slices);
                }
                Some(Ok(Event::Delete(slice))) => {
                    slices.remove(&key(&slice));
                    self.publish(&slices);
                }
                Some(Err(error)) => return error,
                // A watcher stream does not end; if it did, start over from a list.
                None => return watcher::Error::NoResourceVersion,
            }
        }
    }

    /// Publishes the ready set of `slices` if it changed. No slice at all is no answer:
    /// the EndpointSlice controller keeps a placeholder slice for a Service with a selector
    /// and no endpoints, so zero slices means the Service itself is gone (or is being
    /// replaced). What was published stays: the proxies of a MonitoredService being
    /// deleted lose their upstream Service while clients still reach them, and the
    /// application's pods behind it still serve.
    fn publish(&self, slices: &BTreeMap<String, EndpointSlice>) {
        if slices.is_empty() {
            if let Some(kept) = self.tx.borrow().as_ref() {
                tracing::info!(endpoint_slices = %self.target, kept = kept.len(), "{} has no EndpointSlice left: keeping its last {} endpoints", self.target, kept.len());
            }
            return;
        }
        let next = ready_addresses(slices.values(), self.port);
        self.tx.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&next);
            if changed {
                *current = Some(next);
            }
            changed
        });
    }

    /// Resolves once the API has been failing for [`FALLBACK_AFTER`] while a listed set is
    /// still published; never otherwise.
    async fn fallback_due(&self, failing_since: Option<Instant>) {
        match failing_since {
            Some(since) if self.tx.borrow().is_some() => {
                tokio::time::sleep_until(since + FALLBACK_AFTER).await;
            }
            _ => std::future::pending().await,
        }
    }

    /// Withdraws the listed set: the control loop goes back to DNS.
    fn fall_back(&self) {
        tracing::warn!(endpoint_slices = %self.target, "the Kubernetes API has failed for {FALLBACK_AFTER:?}: no longer trusting the last EndpointSlices of {} listed", self.target);
        self.tx.send_replace(None);
    }
}

/// A slice's key in the store: its name (the watch is in one namespace).
fn key(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    /// An endpoint; `None` conditions leave the field out.
    fn endpoint(
        addresses: &[&str],
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Endpoint {
        let any = ready.is_some() || serving.is_some() || terminating.is_some();
        let conditions = any.then_some(EndpointConditions {
            ready,
            serving,
            terminating,
        });
        Endpoint {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            conditions,
            ..Endpoint::default()
        }
    }

    fn slice(address_type: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.into(),
            endpoints,
            ..EndpointSlice::default()
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("addr")).collect()
    }

    #[test]
    fn only_ready_endpoints_that_are_not_terminating() {
        let s = slice(
            "IPv4",
            vec![
                endpoint(&["10.0.0.1"], Some(true), Some(true), Some(false)),
                endpoint(&["10.0.0.2"], Some(false), Some(false), Some(false)),
                // Terminating but still serving: finishes its requests, gets no new one.
                endpoint(&["10.0.0.3"], Some(false), Some(true), Some(true)),
                // Inconsistent, but terminating wins.
                endpoint(&["10.0.0.4"], Some(true), Some(true), Some(true)),
                // Ready is what counts, not serving.
                endpoint(&["10.0.0.5"], Some(true), Some(false), None),
            ],
        );
        assert_eq!(
            ready_addresses([&s], 8080),
            addrs(&["10.0.0.1:8080", "10.0.0.5:8080"])
        );
    }

    #[test]
    fn absent_conditions_count_as_ready() {
        let s = slice(
            "IPv4",
            vec![
                endpoint(&["10.0.0.1"], None, None, None),
                endpoint(&["10.0.0.2"], None, Some(false), None),
                endpoint(&["10.0.0.3"], None, None, Some(true)),
                Endpoint {
                    addresses: vec!["10.0.0.4".into()],
                    conditions: Some(EndpointConditions::default()),
                    ..Endpoint::default()
                },
            ],
        );
        assert_eq!(
            ready_addresses([&s], 80),
            addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80"])
        );
    }

    #[test]
    fn ipv6_and_ipv4_slices_together_without_duplicates() {
        let v4 = slice(
            "IPv4",
            vec![
                endpoint(&["10.0.0.2"], Some(true), None, None),
                endpoint(&["10.0.0.1"], Some(true), None, None),
            ],
        );
        // The same pod in two slices while it moves from one to the other.
        let v4_again = slice(
            "IPv4",
            vec![endpoint(&["10.0.0.1"], Some(true), None, None)],
        );
        let v6 = slice(
            "IPv6",
            vec![
                endpoint(&["fd00::2"], Some(true), None, None),
                endpoint(&["fd00::3"], Some(false), None, None),
            ],
        );
        assert_eq!(
            ready_addresses([&v4, &v6, &v4_again], 8080),
            addrs(&["10.0.0.1:8080", "10.0.0.2:8080", "[fd00::2]:8080"])
        );
    }

    #[test]
    fn fqdn_slices_and_bad_addresses_are_skipped() {
        let fqdn = slice(
            "FQDN",
            vec![endpoint(&["api.example.com"], None, None, None)],
        );
        let odd = slice(
            "IPv4",
            vec![endpoint(&["not-an-ip", "10.0.0.1"], None, None, None)],
        );
        assert_eq!(ready_addresses([&fqdn, &odd], 80), addrs(&["10.0.0.1:80"]));
        assert!(ready_addresses([], 80).is_empty());
        assert!(ready_addresses([&slice("IPv4", vec![])], 80).is_empty());
    }
}
