//! Choosing an upstream endpoint for each request, and what is known of each endpoint.
//!
//! Three policies: round robin; the less loaded of two random endpoints (power of two
//! choices on in-flight requests), which steers traffic away from a slow endpoint without
//! any shared state beyond one counter per endpoint; and peak-EWMA, the same two choices on
//! a cost that also weighs each endpoint's latency ([`Endpoint::peak_ewma_cost`]).
//!
//! Every endpoint keeps its own figures whatever the policy: requests, errors and a
//! latency estimate ([`super::ewma`]), updated through the [`InFlight`] guard of each
//! request with atomics only, and read by the metrics at scrape time.
//!
//! Ejection is passive: an endpoint that fails to connect is left out for a backoff period
//! (`ejectionBase`, doubled on each further failure up to `ejectionMax`); when it ends the
//! endpoint gets traffic again, and one successful connection clears its record. While it
//! is out, the control loop tries a TCP connection to it every [`PROBE_INTERVAL`]
//! ([`super::control`]): one that connects ends the ejection at once, so an endpoint that
//! comes back gets traffic within a probe interval, however long its backoff had grown; a
//! probe that fails changes nothing and is not counted as a request. At most
//! `maxEjectionPercent` of the endpoints are left out at once: past that (a lone endpoint,
//! or most of them failing) the balancer spreads over all of them, so a short outage of
//! the upstream costs the requests it fails, never seconds of 503s after it is back. Only
//! an empty endpoint set answers 503 (`no_healthy_upstream`), at once: no endpoint
//! resolved, e.g. a headless Service none of whose pods is ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::ewma::PeakEwma;
use crate::config::LoadBalancing;

/// The latency, in seconds, that peak-EWMA assumes of an endpoint that has not answered
/// yet while a request is in flight on it: an hour, longer than any timeout, so that such
/// an endpoint gets one request at a time until its first answer. Idle, it costs nothing,
/// so a new endpoint is tried at once.
pub const UNTRIED_BUSY_LATENCY_SECONDS: f64 = 3600.0;

/// How often the control loop tries to connect to each ejected endpoint.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Where a balancer's endpoints come from: the `source` label of
/// `routemeter_upstream_endpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointSource {
    /// The configured `endpoints`: IP literals, or hostnames resolved through DNS.
    Dns,
    /// The ready endpoints of the Service's EndpointSlices (`endpointSlices`).
    EndpointSlices,
}

impl EndpointSource {
    /// Every source, for clearing the series of the one not in use.
    pub const ALL: [EndpointSource; 2] = [EndpointSource::Dns, EndpointSource::EndpointSlices];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointSource::Dns => "dns",
            EndpointSource::EndpointSlices => "endpointslices",
        }
    }
}

/// One upstream address and what the balancer knows of it.
#[derive(Debug)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `endpoint` label of the upstream metrics.
    pub label: String,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    /// Milliseconds since the balancer's epoch until which the endpoint is left out.
    ejected_until: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: PeakEwma,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            label: addr.to_string(),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: PeakEwma::new(Instant::now()),
        }
    }

    /// Requests currently sent to this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests that went to this endpoint and have ended, answered or failed (a failed
    /// connection included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Of [`Self::requests`], those that failed on the endpoint: a 5xx answer, or a failure
    /// to connect, a reset, a timeout or an invalid response.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The endpoint's latency estimate at `now`, in seconds: the peak-EWMA of the time from
    /// choosing it to its response head (or to the failure, when none came). `None` before
    /// its first answer.
    pub fn latency(&self, now: Instant) -> Option<f64> {
        self.latency.estimate(now)
    }

    /// What peak-EWMA minimises: the latency estimate × (requests in flight + 1), the
    /// expected wait of one more request. An endpoint that has not answered yet costs 0
    /// while idle and [`UNTRIED_BUSY_LATENCY_SECONDS`] per request while busy.
    pub fn peak_ewma_cost(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight();
        let load = in_flight as f64 + 1.0;
        match self.latency(now) {
            Some(latency) => latency * load,
            None if in_flight == 0 => 0.0,
            None => UNTRIED_BUSY_LATENCY_SECONDS * load,
        }
    }
}

/// One request's use of an endpoint, from the choice to its end: holds the endpoint's
/// in-flight count up meanwhile, takes its latency sample, and when dropped counts the
/// request (and its error) on the endpoint, so every choice is counted once however the
/// request ends.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    chosen_at: Instant,
    sampled: bool,
    failed: bool,
}

impl InFlight {
    fn new(endpoint: Arc<Endpoint>, chosen_at: Instant) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint,
            chosen_at,
            sampled: false,
            failed: false,
        }
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The upstream's response head arrived with `status` at `now`: the time since the
    /// endpoint was chosen is a latency sample (the first head only), and a 5xx is an error.
    pub fn record_head(&mut self, status: u16, now: Instant) {
        self.sample(now);
        self.failed |= status >= 500;
    }

    /// The request failed on the endpoint (connect, reset, timeout, invalid response): an
    /// error, and, when no head came, the time until the failure is the latency sample. A
    /// sample never lowers an estimate ([`super::ewma`]), so a quick failure cannot make an
    /// endpoint that answered before look faster, while a timeout says it is at least that
    /// slow.
    pub fn record_failure(&mut self) {
        self.sample(Instant::now());
        self.failed = true;
    }

    fn sample(&mut self, now: Instant) {
        if !self.sampled {
            self.sampled = true;
            let latency = now.saturating_duration_since(self.chosen_at);
            self.endpoint.latency.observe(latency, now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let endpoint = &self.endpoint;
        endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        endpoint.requests.fetch_add(1, Ordering::Relaxed);
        if self.failed {
            endpoint.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The endpoints of one upstream and the policy spreading requests over them.
#[derive(Debug)]
pub struct Balancer {
    policy: LoadBalancing,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    cursor: AtomicUsize,
    epoch: Instant,
    ejection_base: Duration,
    ejection_max: Duration,
    max_ejection_percent: usize,
    /// Whether the endpoints have been looked up once (whatever DNS answered).
    looked_up: AtomicBool,
    /// Whether the endpoints come from EndpointSlices rather than DNS.
    from_slices: AtomicBool,
}

impl Balancer {
    /// A balancer with no endpoints yet.
    pub fn new(
        policy: LoadBalancing,
        ejection_base: Duration,
        ejection_max: Duration,
        max_ejection_percent: u8,
    ) -> Self {
        Balancer {
            policy,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            cursor: AtomicUsize::new(0),
            epoch: Instant::now(),
            ejection_base,
            ejection_max,
            max_ejection_percent: usize::from(max_ejection_percent),
            looked_up: AtomicBool::new(false),
            from_slices: AtomicBool::new(false),
        }
    }

    /// Records where the endpoints now come from.
    pub fn set_source(&self, source: EndpointSource) {
        self.from_slices
            .store(source == EndpointSource::EndpointSlices, Ordering::Relaxed);
    }

    /// Where the endpoints come from.
    pub fn source(&self) -> EndpointSource {
        if self.from_slices.load(Ordering::Relaxed) {
            EndpointSource::EndpointSlices
        } else {
            EndpointSource::Dns
        }
    }

    /// Records that the endpoints were looked up once: from then on the endpoint set,
    /// even an empty one, is what DNS (or the EndpointSlices) says rather than "not known
    /// yet".
    pub fn mark_looked_up(&self) {
        self.looked_up.store(true, Ordering::Relaxed);
    }

    /// Whether the endpoints were looked up at least once.
    pub fn looked_up(&self) -> bool {
        self.looked_up.load(Ordering::Relaxed)
    }

    /// Whether ejections are ignored because too many endpoints are out.
    fn panicking(&self, endpoints: &[Arc<Endpoint>], now: u64) -> bool {
        let ejected = endpoints.iter().filter(|e| !self.available(e, now)).count();
        ejected > endpoints.len() * self.max_ejection_percent / 100
    }

    /// Replaces the endpoint set; endpoints that stay keep their in-flight count and
    /// ejection state, so re-resolving DNS does not forget a dead pod. An endpoint removed
    /// gets no new request; requests in flight on it hold it ([`InFlight`]) and finish.
    pub fn set_addresses(&self, mut addrs: Vec<SocketAddr>) {
        addrs.sort();
        addrs.dedup();
        let current = self.endpoints.load();
        if current.len() == addrs.len() && current.iter().zip(&addrs).all(|(e, a)| e.addr == *a) {
            return;
        }
        let next = addrs
            .into_iter()
            .map(|addr| {
                current
                    .iter()
                    .find(|e| e.addr == addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(addr)))
            })
            .collect();
        self.endpoints.store(Arc::new(next));
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `at` in the milliseconds since the balancer was made that ejections are kept in.
    fn ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn available(&self, endpoint: &Endpoint, now: u64) -> bool {
        endpoint.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// The endpoints left out now, to be probed.
    pub fn ejected(&self) -> Vec<Arc<Endpoint>> {
        let now = self.now_ms();
        self.endpoints
            .load()
            .iter()
            .filter(|e| !self.available(e, now))
            .cloned()
            .collect()
    }

    /// Counts of (healthy, ejected) endpoints.
    pub fn health(&self) -> (usize, usize) {
        let now = self.now_ms();
        let endpoints = self.endpoints.load();
        let healthy = endpoints.iter().filter(|e| self.available(e, now)).count();
        (healthy, endpoints.len() - healthy)
    }

    /// Whether an endpoint other than `addr` can take a request now.
    pub fn has_other_available(&self, addr: SocketAddr) -> bool {
        let now = self.now_ms();
        self.endpoints
            .load()
            .iter()
            .any(|e| e.addr != addr && self.available(e, now))
    }

    /// Chooses an endpoint at `at`, avoiding `avoid` (the one a retry failed on) when
    /// another is available. `None` only when there are no endpoints. The caller's clock
    /// reading serves the ejections, the latency estimates and the attempt's start.
    pub fn pick(&self, avoid: Option<SocketAddr>, at: Instant) -> Option<InFlight> {
        let endpoints = self.endpoints.load();
        let now = self.ms_at(at);
        let panic = self.panicking(&endpoints, now);
        let usable =
            |e: &&Arc<Endpoint>| (panic || self.available(e, now)) && Some(e.addr) != avoid;
        let chosen = match self.policy {
            LoadBalancing::RoundRobin => self.round_robin(&endpoints, usable),
            LoadBalancing::LeastRequest => {
                two_choices(&endpoints, usable, |e| e.in_flight() as f64)
            }
            LoadBalancing::PeakEwma => two_choices(&endpoints, usable, |e| e.peak_ewma_cost(at)),
        };
        chosen
            .or_else(|| {
                // Nothing but the endpoint to avoid: better it than nothing.
                avoid.and_then(|a| {
                    endpoints
                        .iter()
                        .find(|e| e.addr == a && (panic || self.available(e, now)))
                })
            })
            .map(|e| InFlight::new(e.clone(), at))
    }

    fn round_robin<'e>(
        &self,
        endpoints: &'e [Arc<Endpoint>],
        usable: impl Fn(&&'e Arc<Endpoint>) -> bool,
    ) -> Option<&'e Arc<Endpoint>> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &endpoints[(start + i) % n])
            .find(|e| usable(e))
    }

    /// Records a failed connection: the endpoint is ejected for its backoff period.
    /// Returns how long.
    pub fn report_connect_failure(&self, endpoint: &Endpoint) -> Duration {
        let failures = endpoint.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = self
            .ejection_base
            .saturating_mul(1 << failures)
            .min(self.ejection_max);
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX));
        endpoint.ejected_until.store(until, Ordering::Relaxed);
        backoff
    }

    /// Records a successful connection, clearing the endpoint's failure record.
    pub fn report_connected(&self, endpoint: &Endpoint) {
        if endpoint.failures.load(Ordering::Relaxed) != 0 {
            endpoint.failures.store(0, Ordering::Relaxed);
            endpoint.ejected_until.store(0, Ordering::Relaxed);
        }
    }
}

/// Power of two choices: the cheaper of two distinct random endpoints (ties to the first
/// drawn). Drawing them distinct matters with few endpoints: with two, drawing the same one
/// twice would send it a quarter of the traffic whatever its cost.
fn two_choices<'e>(
    endpoints: &'e [Arc<Endpoint>],
    usable: impl Fn(&&'e Arc<Endpoint>) -> bool,
    cost: impl Fn(&Endpoint) -> f64,
) -> Option<&'e Arc<Endpoint>> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let first = fastrand::usize(..n);
    let second = (first + 1 + fastrand::usize(..n.max(2) - 1)) % n;
    let (a, b) = (&endpoints[first], &endpoints[second]);
    match (usable(&a), usable(&b)) {
        (true, true) => Some(if cost(b) < cost(a) { b } else { a }),
        (true, false) => Some(a),
        (false, true) => Some(b),
        // Both draws out: fall back to the cheapest usable endpoint.
        (false, false) => endpoints
            .iter()
            .filter(|e| usable(e))
            .min_by(|x, y| cost(x).total_cmp(&cost(y))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn balancer(policy: LoadBalancing, ports: &[u16]) -> Balancer {
        let b = Balancer::new(
            policy,
            Duration::from_secs(60),
            Duration::from_secs(600),
            50,
        );
        b.set_addresses(ports.iter().map(|p| addr(*p)).collect());
        b
    }

    #[test]
    fn round_robin_cycles_evenly() {
        let b = balancer(LoadBalancing::RoundRobin, &[1, 2, 3]);
        let mut counts = [0; 3];
        for _ in 0..300 {
            let picked = attempt(&b, None);
            counts[usize::from(picked.endpoint().addr.port()) - 1] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn ejected_endpoints_get_no_traffic_until_backoff_ends() {
        let b = balancer(LoadBalancing::RoundRobin, &[1, 2]);
        let first = attempt(&b, None);
        assert_eq!(
            b.report_connect_failure(first.endpoint()),
            Duration::from_secs(60)
        );
        let dead = first.endpoint().addr;
        for _ in 0..10 {
            assert_ne!(picked(&b, None), dead);
        }
        assert_eq!(b.health(), (1, 1));
        // A second failure doubles the backoff.
        assert_eq!(
            b.report_connect_failure(first.endpoint()),
            Duration::from_secs(120)
        );
        b.report_connected(first.endpoint());
        assert_eq!(b.health(), (2, 0));
    }

    #[test]
    fn a_lone_endpoint_is_never_left_out() {
        let b = balancer(LoadBalancing::LeastRequest, &[1]);
        let only = attempt(&b, None);
        b.report_connect_failure(only.endpoint());
        assert_eq!(b.health(), (0, 1), "reported unhealthy");
        assert!(
            b.pick(None, Instant::now()).is_some(),
            "but still tried: ejecting it would refuse every request"
        );
        assert!(!b.has_other_available(addr(1)));
        assert!(
            Balancer::new(
                LoadBalancing::RoundRobin,
                Duration::ZERO,
                Duration::ZERO,
                50
            )
            .pick(None, Instant::now())
            .is_none()
        );
    }

    #[test]
    fn at_most_the_max_percent_is_left_out() {
        let b = balancer(LoadBalancing::RoundRobin, &[1, 2, 3, 4]);
        for port in [1, 2, 3] {
            let e = b
                .endpoints()
                .iter()
                .find(|e| e.addr == addr(port))
                .expect("ep")
                .clone();
            b.report_connect_failure(&e);
        }
        // Three of four out is past 50%: traffic spreads over all four again.
        let picked: HashSet<u16> = (0..8).map(|_| picked(&b, None).port()).collect();
        assert_eq!(picked.len(), 4);
    }

    #[test]
    fn retries_avoid_the_failed_endpoint_when_they_can() {
        let b = balancer(LoadBalancing::RoundRobin, &[1, 2]);
        for _ in 0..10 {
            assert_eq!(picked(&b, Some(addr(1))), addr(2));
        }
        let single = balancer(LoadBalancing::RoundRobin, &[1]);
        assert_eq!(picked(&single, Some(addr(1))), addr(1));
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let b = balancer(LoadBalancing::LeastRequest, &[1, 2]);
        let busy: Vec<InFlight> = (0..50)
            .map(|_| {
                InFlight::new(
                    b.endpoints()
                        .iter()
                        .find(|e| e.addr == addr(1))
                        .expect("ep")
                        .clone(),
                    Instant::now(),
                )
            })
            .collect();
        let to_idle = (0..200).filter(|_| picked(&b, None) == addr(2)).count();
        // The two draws are distinct: with two endpoints, the busy one never wins.
        assert_eq!(to_idle, 200);
        drop(busy);
        assert!(b.endpoints().iter().all(|e| e.in_flight() == 0));
    }

    fn endpoint(b: &Balancer, port: u16) -> Arc<Endpoint> {
        b.endpoints()
            .iter()
            .find(|e| e.addr == addr(port))
            .expect("ep")
            .clone()
    }

    /// An attempt on the endpoint `b` picks now.
    fn attempt(b: &Balancer, avoid: Option<SocketAddr>) -> InFlight {
        b.pick(avoid, Instant::now()).expect("an endpoint")
    }

    /// The address of the endpoint `b` picks now.
    fn picked(b: &Balancer, avoid: Option<SocketAddr>) -> SocketAddr {
        attempt(b, avoid).endpoint().addr
    }

    fn hold(e: &Arc<Endpoint>, n: usize) -> Vec<InFlight> {
        (0..n)
            .map(|_| InFlight::new(e.clone(), Instant::now()))
            .collect()
    }

    #[test]
    fn peak_ewma_cost_is_latency_times_load() {
        let now = Instant::now();
        let slow = Arc::new(Endpoint::new(addr(1)));
        let fast = Arc::new(Endpoint::new(addr(2)));
        slow.latency.observe(Duration::from_millis(10), now);
        fast.latency.observe(Duration::from_millis(2), now);
        assert!((slow.peak_ewma_cost(now) - 0.010).abs() < 1e-9);
        assert!(fast.peak_ewma_cost(now) < slow.peak_ewma_cost(now));
        // Four requests waiting on the fast one: 2 ms × 5 equals 10 ms × 1.
        let waiting = hold(&fast, 4);
        assert!((fast.peak_ewma_cost(now) - 0.010).abs() < 1e-9);
        let more = hold(&fast, 1);
        assert!(fast.peak_ewma_cost(now) > slow.peak_ewma_cost(now));
        drop((waiting, more));
        // Untried: free while idle, an hour per request while busy.
        let new = Arc::new(Endpoint::new(addr(3)));
        assert_eq!(new.peak_ewma_cost(now), 0.0);
        let first = hold(&new, 1);
        assert_eq!(new.peak_ewma_cost(now), 2.0 * UNTRIED_BUSY_LATENCY_SECONDS);
        drop(first);
    }

    #[test]
    fn peak_ewma_avoids_the_slow_endpoint_until_the_fast_one_queues() {
        let b = balancer(LoadBalancing::PeakEwma, &[1, 2]);
        let now = Instant::now();
        let (slow, fast) = (endpoint(&b, 1), endpoint(&b, 2));
        slow.latency.observe(Duration::from_millis(50), now);
        fast.latency.observe(Duration::from_millis(1), now);
        for _ in 0..100 {
            assert_eq!(picked(&b, None), addr(2));
        }
        // 60 requests in flight on the fast one: 61 ms expected against 50 ms.
        let queued = hold(&fast, 60);
        assert_eq!(picked(&b, None), addr(1));
        drop(queued);
    }

    #[test]
    fn a_new_endpoint_is_tried_at_once_then_one_request_at_a_time() {
        let b = balancer(LoadBalancing::PeakEwma, &[1, 2]);
        endpoint(&b, 1)
            .latency
            .observe(Duration::from_millis(1), Instant::now());
        let first = attempt(&b, None);
        assert_eq!(first.endpoint().addr, addr(2), "untried and idle: free");
        for _ in 0..20 {
            assert_eq!(
                picked(&b, None),
                addr(1),
                "until its first answer, one request at a time"
            );
        }
        drop(first);
    }

    #[test]
    fn every_request_is_counted_once_with_its_errors_and_latency() {
        let b = balancer(LoadBalancing::RoundRobin, &[1]);
        let e = endpoint(&b, 1);
        assert_eq!(
            (e.requests(), e.errors(), e.latency(Instant::now())),
            (0, 0, None)
        );
        let mut ok = attempt(&b, None);
        ok.record_head(200, Instant::now());
        assert_eq!(e.requests(), 0, "counted when it ends");
        drop(ok);
        let mut server_error = attempt(&b, None);
        server_error.record_head(503, Instant::now());
        // A failure after the head (a reset mid-body) is the same request's error.
        server_error.record_failure();
        drop(server_error);
        let mut reset = attempt(&b, None);
        reset.record_failure();
        drop(reset);
        drop(attempt(&b, None)); // e.g. the client went away
        assert_eq!((e.requests(), e.errors(), e.in_flight()), (4, 2, 0));
        assert!(e.latency(Instant::now()).is_some());
    }

    #[test]
    fn a_removed_endpoint_serves_its_requests_in_flight_but_gets_no_new_one() {
        let b = balancer(LoadBalancing::RoundRobin, &[1, 2]);
        let on_two = (0..2)
            .filter_map(|_| b.pick(None, Instant::now()))
            .find(|f| f.endpoint().addr == addr(2))
            .expect("a request on endpoint 2");
        b.set_addresses(vec![addr(1)]);
        assert_eq!(
            on_two.endpoint().in_flight(),
            1,
            "still held by its request"
        );
        for _ in 0..10 {
            assert_eq!(picked(&b, None), addr(1));
        }
        let removed = Arc::downgrade(on_two.endpoint());
        drop(on_two);
        assert!(
            removed.upgrade().is_none(),
            "freed once its last request ends"
        );
    }

    #[test]
    fn re_resolution_keeps_state_of_remaining_endpoints() {
        let b = balancer(LoadBalancing::RoundRobin, &[1, 2]);
        let one = b
            .endpoints()
            .iter()
            .find(|e| e.addr == addr(1))
            .expect("ep")
            .clone();
        b.report_connect_failure(&one);
        b.set_addresses(vec![addr(3), addr(1)]);
        assert_eq!(
            b.health(),
            (1, 1),
            "endpoint 1 is still ejected after re-resolution"
        );
        assert_eq!(b.endpoints().len(), 2);
    }
}
