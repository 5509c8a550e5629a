//! The sliding windows behind `/api/summary`: per (route, method), two rings of slots,
//! each slot a latency histogram (the boundaries of the Prometheus duration histogram)
//! plus counters. The arithmetic (which slots make a window, quantiles, figures) is
//! [`crate::summary`]; this file only records and reads.
//!
//! Recording takes no lock: a request reaches its series through its route's handles
//! ([`super::handles`]), which find it once in a map read through an `ArcSwap` (again
//! only after the recorder forgot it), and each counter is an atomic add in the slot of
//! the current period, found from a coarse clock (seconds since start ÷ slot length). A
//! new (route, method) takes a mutex once, to publish a copy of the map with it; a slot
//! reused for a new period takes its ring's mutex once per period, to reset it before
//! anyone adds to it.
//!
//! Memory is fixed per (route, method): 62 ten-second slots and 122 one-minute slots
//! ([`crate::summary::window::Resolution`]), each of 8 + 4 × (boundaries + 3) + 24 bytes:
//! 100 bytes with the 14 default boundaries, so 18,400 bytes of slots and about 18.7 KB in
//! all per (route, method) ([`Recorder::memory_bytes`]). A route with pagination holds
//! its pagination figures in the same slots, so one reset clears them together: 3 outcome
//! counts, 8 page-size buckets and a latency histogram per offset range, 6 × (boundaries
//! plus 1), of 4 bytes, and 8 sums of 8 bytes: 468 bytes more per slot with the default
//! boundaries (568 in all), about 105 KB per paginated (route, method). Routes are
//! bounded by the route table and the inference cap, methods by their closed list; a
//! series idle for longer than the coarse ring (2 h) and with nothing in flight is
//! dropped when a summary is read, so routes removed by a reload do not stay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::pagination::{OFFSET_RANGES, Outcome, Reading, offset_range, page_size_range};
use crate::summary::pagination::{PAGE_SIZE_BUCKETS, PaginationCounts, RangeCounts};
use crate::summary::window::{Resolution, Span, bucket_index};
use crate::summary::{self, Counts, Objectives, SeriesWindow, Summary, Window};

/// A slot's epoch before it ever held one.
const UNUSED: u64 = u64::MAX;

/// Added to the in-flight count of a series the recorder forgot: a count below 0 tells a
/// handle still holding it to find the series again ([`Series::enter`]).
const FORGOTTEN: i64 = i64::MIN / 2;

/// Counters per slot after the buckets: 5xx, 4xx.
const EXTRA_COUNTS: usize = 2;
/// Sums per slot: latency (µs), request bytes, response bytes.
const SUMS: usize = 3;
/// Sums per slot of a route with pagination, after those: page sizes, offsets, then the
/// latency (µs) of each offset range.
const PAGINATION_SUMS: usize = 2 + OFFSET_RANGES.len();

/// Where a slot's figures are, for a series of `buckets` latency buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    buckets: usize,
    /// Whether the slot holds pagination figures after the rest: counts of the outcomes,
    /// the page-size buckets, then each offset range's latency buckets.
    paginated: bool,
}

impl Layout {
    /// Counts per slot.
    fn counts(self) -> usize {
        let pagination =
            Outcome::ALL.len() + PAGE_SIZE_BUCKETS + OFFSET_RANGES.len() * self.buckets;
        self.buckets + EXTRA_COUNTS + if self.paginated { pagination } else { 0 }
    }

    /// Sums per slot.
    fn sums(self) -> usize {
        SUMS + if self.paginated { PAGINATION_SUMS } else { 0 }
    }

    /// The first pagination count: the outcomes.
    fn outcomes(self) -> usize {
        self.buckets + EXTRA_COUNTS
    }

    /// The first page-size bucket.
    fn page_sizes(self) -> usize {
        self.outcomes() + Outcome::ALL.len()
    }

    /// The first latency bucket of offset range `range`.
    fn range(self, range: usize) -> usize {
        self.page_sizes() + PAGE_SIZE_BUCKETS + range * self.buckets
    }
}

/// What one finished request adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub latency: Duration,
    /// The status answered (or recorded: 499 for a client that left), 0 for none.
    pub status: u16,
    /// Whether it counts as an error ([`crate::outcome::is_error`]): a 5xx, or an answer
    /// the service's side cut off after its head (counted with the 5xx, whatever its
    /// status).
    pub error: bool,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// What its query said, on a route with pagination.
    pub pagination: Option<Reading>,
}

/// One ring of slots, laid out flat: slot `i` owns `counts[i * stride..][..stride]` and
/// `sums[i * sum_stride..][..sum_stride]`, as [`Layout`] says.
#[derive(Debug)]
struct Ring {
    resolution: Resolution,
    /// The period each slot holds, [`UNUSED`] before its first.
    epochs: Box<[AtomicU64]>,
    /// Per slot: one count per bucket, then 5xx, then 4xx (then the pagination counts).
    /// 32 bits: 4 billion requests per minute and route before a count wraps.
    counts: Box<[AtomicU32]>,
    sums: Box<[AtomicU64]>,
    layout: Layout,
    stride: usize,
    sum_stride: usize,
    /// Taken to reset a slot for a new period.
    reset: Mutex<()>,
}

impl Ring {
    fn new(resolution: Resolution, layout: Layout) -> Self {
        let slots = resolution.ring_len();
        let (stride, sum_stride) = (layout.counts(), layout.sums());
        Ring {
            resolution,
            epochs: (0..slots).map(|_| AtomicU64::new(UNUSED)).collect(),
            counts: (0..slots * stride).map(|_| AtomicU32::new(0)).collect(),
            sums: (0..slots * sum_stride).map(|_| AtomicU64::new(0)).collect(),
            layout,
            stride,
            sum_stride,
            reset: Mutex::new(()),
        }
    }

    fn slot_counts(&self, i: usize) -> &[AtomicU32] {
        &self.counts[i * self.stride..(i + 1) * self.stride]
    }

    fn slot_sums(&self, i: usize) -> &[AtomicU64] {
        &self.sums[i * self.sum_stride..(i + 1) * self.sum_stride]
    }

    fn slot(&self, epoch: u64) -> usize {
        // The length as a constant of the resolution, not the slice's: a division by a
        // constant is a multiplication.
        (epoch % self.resolution.ring_len() as u64) as usize
    }

    /// The slot of `epoch`, reset first when it still holds an older period. Adders see
    /// the new epoch (acquire) only after the reset (release), so nothing is added to a
    /// slot that is then cleared.
    fn claim(&self, epoch: u64) -> usize {
        let i = self.slot(epoch);
        if self.epochs[i].load(Ordering::Acquire) != epoch {
            let _guard = self.reset.lock().unwrap_or_else(|e| e.into_inner());
            if self.epochs[i].load(Ordering::Acquire) != epoch {
                for c in self.slot_counts(i) {
                    c.store(0, Ordering::Relaxed);
                }
                for s in self.slot_sums(i) {
                    s.store(0, Ordering::Relaxed);
                }
                self.epochs[i].store(epoch, Ordering::Release);
            }
        }
        i
    }

    fn record(&self, now: Duration, bucket: usize, o: &Observation) {
        let i = self.claim(self.resolution.epoch(now));
        let (counts, sums) = (self.slot_counts(i), self.slot_sums(i));
        let buckets = self.layout.buckets;
        counts[bucket].fetch_add(1, Ordering::Relaxed);
        if o.error {
            counts[buckets].fetch_add(1, Ordering::Relaxed);
        } else if (400..500).contains(&o.status) {
            counts[buckets + 1].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(o.latency.as_micros()).unwrap_or(u64::MAX);
        sums[0].fetch_add(micros, Ordering::Relaxed);
        sums[1].fetch_add(o.request_bytes, Ordering::Relaxed);
        sums[2].fetch_add(o.response_bytes, Ordering::Relaxed);
        if let (true, Some(reading)) = (self.layout.paginated, o.pagination) {
            self.record_pagination(counts, sums, bucket, micros, reading);
        }
    }

    fn record_pagination(
        &self,
        counts: &[AtomicU32],
        sums: &[AtomicU64],
        bucket: usize,
        micros: u64,
        reading: Reading,
    ) {
        let layout = self.layout;
        counts[layout.outcomes() + reading.outcome().index()].fetch_add(1, Ordering::Relaxed);
        let Reading::Paginated { size, offset } = reading else {
            return;
        };
        if let Some(size) = size {
            counts[layout.page_sizes() + page_size_range(size)].fetch_add(1, Ordering::Relaxed);
            sums[SUMS].fetch_add(size, Ordering::Relaxed);
        }
        if let Some(offset) = offset {
            let range = offset_range(offset);
            counts[layout.range(range) + bucket].fetch_add(1, Ordering::Relaxed);
            sums[SUMS + 1].fetch_add(offset, Ordering::Relaxed);
            sums[SUMS + 2 + range].fetch_add(micros, Ordering::Relaxed);
        }
    }

    /// The counts of the slots of `span`. A slot reset while it was read (a new period
    /// began meanwhile) is left out, rather than read half old and half new.
    fn sum(&self, span: &Span) -> Counts {
        let layout = self.layout;
        let buckets = layout.buckets;
        let mut total = Counts::empty(buckets - 1);
        if layout.paginated {
            total.pagination = Some(PaginationCounts::empty(buckets - 1));
        }
        let load = |a: &AtomicU32| u64::from(a.load(Ordering::Relaxed));
        for epoch in span.epochs.clone() {
            let i = self.slot(epoch);
            if self.epochs[i].load(Ordering::Acquire) != epoch {
                continue;
            }
            let (counts, sums) = (self.slot_counts(i), self.slot_sums(i));
            let sum = |j: usize| sums[j].load(Ordering::Relaxed);
            let slot = Counts {
                buckets: counts[..buckets].iter().map(load).collect(),
                server_errors: load(&counts[buckets]),
                client_errors: load(&counts[buckets + 1]),
                latency_micros: sum(0),
                request_bytes: sum(1),
                response_bytes: sum(2),
                pagination: layout.paginated.then(|| PaginationCounts {
                    outcomes: std::array::from_fn(|o| load(&counts[layout.outcomes() + o])),
                    page_sizes: std::array::from_fn(|b| load(&counts[layout.page_sizes() + b])),
                    page_size_sum: sum(SUMS),
                    offset_sum: sum(SUMS + 1),
                    ranges: (0..OFFSET_RANGES.len())
                        .map(|r| RangeCounts {
                            buckets: counts[layout.range(r)..][..buckets]
                                .iter()
                                .map(load)
                                .collect(),
                            latency_micros: sum(SUMS + 2 + r),
                        })
                        .collect(),
                }),
            };
            if self.epochs[i].load(Ordering::Acquire) == epoch {
                total.add(&slot);
            }
        }
        total
    }

    /// The newest period any slot holds.
    fn newest(&self) -> Option<u64> {
        self.epochs
            .iter()
            .map(|e| e.load(Ordering::Acquire))
            .filter(|e| *e != UNUSED)
            .max()
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Ring>()
            + std::mem::size_of_val(&*self.epochs)
            + std::mem::size_of_val(&*self.counts)
            + std::mem::size_of_val(&*self.sums)
    }
}

/// The windows of one (route, method).
#[derive(Debug)]
pub struct Series {
    route: Arc<str>,
    method: &'static str,
    bounds: Arc<[f64]>,
    started: Instant,
    /// The coarse epoch it was created in: a series never recorded to is idle from then.
    created: u64,
    in_flight: AtomicI64,
    fine: Ring,
    coarse: Ring,
}

impl Series {
    fn new(
        route: Arc<str>,
        method: &'static str,
        bounds: Arc<[f64]>,
        started: Instant,
        paginated: bool,
    ) -> Self {
        let layout = Layout {
            buckets: bounds.len() + 1,
            paginated,
        };
        Series {
            route,
            method,
            bounds,
            started,
            created: Resolution::Coarse.epoch(started.elapsed()),
            in_flight: AtomicI64::new(0),
            fine: Ring::new(Resolution::Fine, layout),
            coarse: Ring::new(Resolution::Coarse, layout),
        }
    }

    /// Records a finished request at `now` (time since the recorder started).
    pub fn record_at(&self, now: Duration, o: &Observation) {
        let bucket = bucket_index(&self.bounds, o.latency.as_secs_f64());
        self.fine.record(now, bucket, o);
        self.coarse.record(now, bucket, o);
    }

    /// Whether it records pagination figures.
    pub fn paginated(&self) -> bool {
        self.fine.layout.paginated
    }

    /// Counts a request in flight on it until the handle is dropped; `None` when the
    /// recorder forgot it (then the caller finds the series again through the recorder).
    pub fn enter(self: &Arc<Self>) -> Option<Pending> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) < 0 {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Pending(self.clone()))
    }

    /// The requests in flight on it.
    fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed).max(0)
    }

    /// Marks it forgotten if nothing is in flight on it: from then on [`Series::enter`]
    /// refuses it.
    fn forget(&self) -> bool {
        self.in_flight
            .compare_exchange(0, FORGOTTEN, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    fn ring(&self, resolution: Resolution) -> &Ring {
        match resolution {
            Resolution::Fine => &self.fine,
            Resolution::Coarse => &self.coarse,
        }
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Series>() - 2 * std::mem::size_of::<Ring>()
            + self.fine.memory_bytes()
            + self.coarse.memory_bytes()
            + self.route.len()
    }
}

/// A request in flight on a series: counted in `inFlight` until dropped.
#[derive(Debug)]
pub struct Pending(Arc<Series>);

impl Pending {
    /// Records the request, finished `at`.
    pub fn record(&self, o: &Observation, at: Instant) {
        self.0
            .record_at(at.saturating_duration_since(self.0.started), o);
    }

    /// The series it is in flight on.
    pub fn series(&self) -> &Arc<Series> {
        &self.0
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

type Key = (Arc<str>, &'static str);

/// Every series, and the clock they share.
#[derive(Debug)]
pub struct Recorder {
    bounds: Arc<[f64]>,
    started: Instant,
    series: ArcSwap<HashMap<Key, Arc<Series>>>,
    /// Taken to publish a map with a new series in it, or without idle ones.
    publish: Mutex<()>,
}

impl Recorder {
    /// A recorder with latency buckets of these boundaries (sorted, as the histogram's).
    pub fn new(bounds: Vec<f64>) -> Self {
        Recorder {
            bounds: bounds.into(),
            started: Instant::now(),
            series: ArcSwap::from_pointee(HashMap::new()),
            publish: Mutex::new(()),
        }
    }

    /// Time since the recorder started: the clock of its slots.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The series of (route, method), created the first time, with pagination figures
    /// when `paginated`. A series whose route gained or lost pagination in a reload is
    /// replaced: its windows start again.
    pub fn series(&self, route: &Arc<str>, method: &'static str, paginated: bool) -> Arc<Series> {
        let key = (route.clone(), method);
        let fits = |s: &Arc<Series>| s.paginated() == paginated;
        if let Some(s) = self.series.load().get(&key).filter(|s| fits(s)) {
            return s.clone();
        }
        let _guard = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.series.load_full();
        if let Some(s) = current.get(&key).filter(|s| fits(s)) {
            return s.clone();
        }
        let series = Arc::new(Series::new(
            route.clone(),
            method,
            self.bounds.clone(),
            self.started,
            paginated,
        ));
        let mut next = HashMap::clone(&current);
        next.insert(key, series.clone());
        self.series.store(Arc::new(next));
        series
    }

    /// Counts a request in flight on (route, method) until the handle is dropped.
    pub fn start(&self, route: &Arc<str>, method: &'static str, paginated: bool) -> Pending {
        let series = self.series(route, method, paginated);
        series.in_flight.fetch_add(1, Ordering::Relaxed);
        Pending(series)
    }

    /// Every series' counts over `window` ending at `now`, and the seconds it covers.
    pub fn windows_at(&self, window: Window, now: Duration) -> (f64, Vec<SeriesWindow>) {
        let (current, previous) = window.spans(now);
        let series = self.series.load();
        let windows = series
            .values()
            .map(|s| {
                let ring = s.ring(window.resolution());
                SeriesWindow {
                    route: s.route.to_string(),
                    method: s.method.to_string(),
                    current: ring.sum(&current),
                    previous: previous.as_ref().map(|p| ring.sum(p)),
                    in_flight: s.in_flight(),
                }
            })
            .collect();
        (current.seconds, windows)
    }

    /// The summary of `window` ending at `now`. Series idle for longer than the coarse
    /// ring, with nothing in flight, are dropped first.
    pub fn summary_at(&self, window: Window, now: Duration, objectives: &Objectives) -> Summary {
        self.forget_idle(now);
        let (seconds, windows) = self.windows_at(window, now);
        summary::build(window, seconds, &self.bounds, &windows, objectives)
    }

    /// [`Recorder::summary_at`] now.
    pub fn summary(&self, window: Window, objectives: &Objectives) -> Summary {
        self.summary_at(window, self.now(), objectives)
    }

    fn forget_idle(&self, now: Duration) {
        let coarse = Resolution::Coarse;
        let oldest_kept = coarse.epoch(now).saturating_sub(coarse.ring_len() as u64);
        let idle = |s: &Series| {
            s.in_flight.load(Ordering::Relaxed) == 0
                && s.coarse.newest().unwrap_or(s.created) < oldest_kept
        };
        if !self.series.load().values().any(|s| idle(s)) {
            return;
        }
        let _guard = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::clone(&self.series.load_full());
        // Marked forgotten only with nothing in flight, atomically: a request that
        // enters meanwhile keeps the series.
        next.retain(|_, s| !(idle(s) && s.forget()));
        self.series.store(Arc::new(next));
    }

    /// How many (route, method) series are kept.
    pub fn len(&self) -> usize {
        self.series.load().len()
    }

    /// Whether no series is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the series take: their slots, their own fields and the map's entries
    /// (its capacity, a control byte each).
    pub fn memory_bytes(&self) -> usize {
        let series = self.series.load();
        let entry = std::mem::size_of::<(Key, Arc<Series>)>() + 1;
        series.capacity() * entry + series.values().map(|s| s.memory_bytes()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_DURATION_BUCKETS;

    fn ok(ms: u64) -> Observation {
        Observation {
            latency: Duration::from_millis(ms),
            status: 200,
            error: false,
            request_bytes: 10,
            response_bytes: 100,
            pagination: None,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn recorder() -> Recorder {
        Recorder::new(DEFAULT_DURATION_BUCKETS.to_vec())
    }

    fn requests(r: &Recorder, window: Window, now: Duration) -> u64 {
        let (_, w) = r.windows_at(window, now);
        w.iter().map(|s| s.current.requests()).sum()
    }

    #[test]
    fn old_slots_drop_out_of_the_window() {
        let r = recorder();
        let a = r.series(&Arc::from("/a"), "GET", false);
        // 3 requests in slot 0, 2 in slot 5, 1 in slot 6.
        for _ in 0..3 {
            a.record_at(secs(1), &ok(5));
        }
        for _ in 0..2 {
            a.record_at(secs(55), &ok(5));
        }
        a.record_at(secs(61), &ok(5));
        let m = Window::OneMinute;
        assert_eq!(requests(&r, m, secs(59)), 5, "slots 0..=5");
        assert_eq!(requests(&r, m, secs(61)), 3, "slot 0 left at 60 s");
        assert_eq!(requests(&r, m, secs(119)), 1, "slot 6 stays until 120 s");
        assert_eq!(requests(&r, m, secs(120)), 0);
        // The previous window holds what the current one lost.
        let (_, w) = r.windows_at(m, secs(61));
        assert_eq!(w[0].previous.as_ref().map(Counts::requests), Some(3));
        // The hour still holds all of it.
        assert_eq!(requests(&r, Window::OneHour, secs(120)), 6);
        assert_eq!(requests(&r, Window::FifteenMinutes, secs(899)), 6);
        assert_eq!(
            requests(&r, Window::FifteenMinutes, secs(900)),
            1,
            "61 s is minute 1"
        );
        assert_eq!(requests(&r, Window::FifteenMinutes, secs(960)), 0);
    }

    #[test]
    fn a_reused_slot_starts_from_zero() {
        let r = recorder();
        let a = r.series(&Arc::from("/a"), "GET", false);
        a.record_at(secs(5), &ok(5));
        // 62 slots later the same slot holds a new period.
        let later = secs(5 + 62 * 10);
        a.record_at(later, &ok(5));
        let (_, w) = r.windows_at(Window::OneMinute, later);
        assert_eq!(w[0].current.requests(), 1);
        assert_eq!(w[0].previous.as_ref().map(Counts::requests), Some(0));
    }

    #[test]
    fn recorded_counts_agree_with_the_reference() {
        let bounds = DEFAULT_DURATION_BUCKETS;
        let r = recorder();
        let s = r.series(&Arc::from("/a"), "POST", false);
        let mut reference = Counts::empty(bounds.len());
        for (ms, status) in [(3, 200), (40, 404), (300, 500), (20_000, 503), (100, 499)] {
            let o = Observation {
                status,
                error: crate::outcome::is_error(status, ""),
                ..ok(ms)
            };
            s.record_at(secs(30), &o);
            reference.observe(&bounds, o.latency, status, (10, 100));
        }
        for w in Window::ALL {
            let (_, windows) = r.windows_at(w, secs(40));
            assert_eq!(windows[0].current, reference, "{w}");
        }
    }

    #[test]
    fn an_answer_cut_after_its_head_counts_with_the_5xx() {
        let r = recorder();
        let s = r.series(&Arc::from("/a"), "GET", false);
        // A 200 head, then the upstream reset the connection mid-body.
        let cut = Observation {
            error: crate::outcome::is_error(200, "upstream_reset"),
            ..ok(5)
        };
        s.record_at(secs(30), &cut);
        s.record_at(secs(30), &ok(5));
        let (_, windows) = r.windows_at(Window::OneMinute, secs(40));
        assert_eq!(windows[0].current.server_errors, 1);
        assert_eq!(windows[0].current.client_errors, 0);
    }

    #[test]
    fn in_flight_counts_until_the_handle_is_dropped() {
        let r = recorder();
        let route: Arc<str> = Arc::from("/a");
        let first = r.start(&route, "GET", false);
        let second = r.start(&route, "GET", false);
        let summary = r.summary_at(Window::OneMinute, secs(1), &Objectives::default());
        assert_eq!(
            summary.routes[0].in_flight, 2,
            "listed with no request done"
        );
        assert_eq!(summary.overall.in_flight, 2);
        first.record(&ok(1), Instant::now());
        drop(first);
        drop(second);
        let summary = r.summary_at(Window::OneMinute, secs(1), &Objectives::default());
        assert_eq!(summary.overall.in_flight, 0);
    }

    #[test]
    fn idle_series_are_forgotten_after_the_coarse_ring() {
        let r = recorder();
        r.series(&Arc::from("/a"), "GET", false)
            .record_at(secs(1), &ok(1));
        let held = r.start(&Arc::from("/b"), "GET", false);
        let o = Objectives::default();
        r.summary_at(Window::OneHour, secs(60 * 122), &o);
        assert_eq!(r.len(), 2, "still within the ring");
        r.summary_at(Window::OneHour, secs(60 * 123), &o);
        assert_eq!(r.len(), 1, "/a dropped; /b is in flight");
        drop(held);
        r.summary_at(Window::OneHour, secs(60 * 123), &o);
        assert!(r.is_empty());
    }

    #[test]
    fn a_thousand_routes_take_a_bounded_fixed_memory() {
        let r = recorder();
        let routes: Vec<Arc<str>> = (0..1000).map(|i| Arc::from(format!("/r{i:04}"))).collect();
        for (i, route) in routes.iter().enumerate() {
            r.series(route, "GET", false)
                .record_at(secs(i as u64), &ok(5));
        }
        assert_eq!(r.len(), 1000);
        let after_first = r.memory_bytes();
        // The documented figure: 184 slots of 100 bytes each, plus a few hundred bytes.
        let slots = Resolution::Fine.ring_len() + Resolution::Coarse.ring_len();
        assert_eq!(slots, 184);
        let per_slot = 8 + 4 * (DEFAULT_DURATION_BUCKETS.len() + 3) + 24;
        assert_eq!(per_slot, 100);
        let per_route = after_first / 1000;
        assert!(
            (slots * per_slot..=slots * per_slot + 400).contains(&per_route),
            "{per_route} bytes per route"
        );
        assert!(
            after_first <= 19_000_000,
            "{after_first} bytes for 1,000 routes"
        );
        // More traffic over the whole two hours adds nothing.
        for t in (0..7200).step_by(7) {
            for route in routes.iter().step_by(97) {
                r.series(route, "GET", false).record_at(secs(t), &ok(50));
            }
        }
        assert_eq!(r.len(), 1000);
        assert_eq!(r.memory_bytes(), after_first);
    }

    #[test]
    fn pagination_figures_agree_with_the_reference() {
        use crate::pagination::Reading;
        let bounds = DEFAULT_DURATION_BUCKETS;
        let r = recorder();
        let s = r.series(&Arc::from("/items"), "GET", true);
        let mut reference = Counts::empty(bounds.len());
        reference.pagination = Some(PaginationCounts::empty(bounds.len()));
        let readings = [
            (
                3,
                Reading::Paginated {
                    size: Some(20),
                    offset: Some(0),
                },
            ),
            (
                40,
                Reading::Paginated {
                    size: Some(50),
                    offset: Some(100),
                },
            ),
            (
                700,
                Reading::Paginated {
                    size: Some(100),
                    offset: Some(5000),
                },
            ),
            (
                2,
                Reading::Paginated {
                    size: None,
                    offset: None,
                },
            ),
            (
                2,
                Reading::Paginated {
                    size: Some(1000),
                    offset: Some(u64::from(u32::MAX)),
                },
            ),
            (1, Reading::Absent),
            (1, Reading::Invalid),
        ];
        for (ms, reading) in readings {
            let o = Observation {
                pagination: Some(reading),
                ..ok(ms)
            };
            s.record_at(secs(30), &o);
            reference.observe(&bounds, o.latency, 200, (10, 100));
            if let Some(p) = reference.pagination.as_mut() {
                p.observe(&bounds, o.latency, reading);
            }
        }
        for w in Window::ALL {
            let (_, windows) = r.windows_at(w, secs(40));
            assert_eq!(windows[0].current, reference, "{w}");
        }
        // An unpaginated series keeps no pagination figures, whatever it is given.
        let plain = r.series(&Arc::from("/plain"), "GET", false);
        plain.record_at(
            secs(30),
            &Observation {
                pagination: Some(readings[0].1),
                ..ok(3)
            },
        );
        let (_, windows) = r.windows_at(Window::OneMinute, secs(40));
        let plain = windows
            .iter()
            .find(|w| w.route == "/plain")
            .expect("listed");
        assert_eq!(plain.current.pagination, None);
    }

    #[test]
    fn a_route_that_gains_pagination_starts_a_new_series() {
        let r = recorder();
        let route: Arc<str> = Arc::from("/items");
        r.series(&route, "GET", false).record_at(secs(1), &ok(1));
        let paginated = r.series(&route, "GET", true);
        assert!(paginated.paginated());
        assert_eq!(r.len(), 1, "replaced, not added");
        assert!(Arc::ptr_eq(&paginated, &r.series(&route, "GET", true)));
        assert_eq!(requests(&r, Window::OneMinute, secs(2)), 0);
    }

    #[test]
    fn a_paginated_route_takes_its_documented_memory() {
        let r = recorder();
        r.series(&Arc::from("/plain"), "GET", false);
        let plain = r.memory_bytes();
        let r = recorder();
        r.series(&Arc::from("/plain"), "GET", true);
        let paginated = r.memory_bytes();
        let slots = Resolution::Fine.ring_len() + Resolution::Coarse.ring_len();
        let buckets = DEFAULT_DURATION_BUCKETS.len() + 1;
        let extra_per_slot = 4 * (3 + 8 + 6 * buckets) + 8 * 8;
        assert_eq!(extra_per_slot, 468);
        assert_eq!(paginated - plain, slots * extra_per_slot);
        assert!(
            (104_000..=106_000).contains(&paginated),
            "{paginated} bytes: about 105 KB"
        );
    }

    #[test]
    fn recording_from_threads_loses_nothing() {
        let r = Arc::new(recorder());
        let route: Arc<str> = Arc::from("/a");
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let (r, route) = (r.clone(), route.clone());
                scope.spawn(move || {
                    for i in 0..10_000u64 {
                        // Crossing slot boundaries while the others record.
                        let now = Duration::from_millis(t * 7 + i * 3);
                        r.series(&route, "GET", false).record_at(now, &ok(1));
                    }
                });
            }
        });
        assert_eq!(requests(&r, Window::OneHour, secs(31)), 40_000);
    }
}
