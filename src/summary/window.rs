//! Window arithmetic: which slots of a ring make a window, what a window's requests add up
//! to ([`Counts`]), and quantiles from bucket counts.
//!
//! Time is a [`Duration`] since the recorder started, cut into slots of a fixed length;
//! slot `e` (its *epoch*) holds the requests recorded during `[e × len, (e + 1) × len)`. A
//! window is the slot in progress and the ones just before it, so a `1m` window on
//! 10-second slots is the current slot and the five before it: between 50 and 60 seconds
//! of traffic, and its rate divides by the time actually covered ([`Span::seconds`]).

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pagination::PaginationCounts;

/// Slots kept beyond twice the longest window of a resolution, so that the slot being
/// reset for a new period is never one a summary is reading.
pub const GUARD_SLOTS: usize = 2;

/// A summary window: `?window=` of `/api/summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Window {
    #[serde(rename = "1m")]
    OneMinute,
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "15m")]
    FifteenMinutes,
    #[serde(rename = "1h")]
    OneHour,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 4] = [
        Window::OneMinute,
        Window::FiveMinutes,
        Window::FifteenMinutes,
        Window::OneHour,
    ];

    /// `1m`, `5m`, `15m` or `1h`.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::OneMinute => "1m",
            Window::FiveMinutes => "5m",
            Window::FifteenMinutes => "15m",
            Window::OneHour => "1h",
        }
    }

    /// The window named `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Window::ALL.into_iter().find(|w| w.as_str() == text)
    }

    /// The window's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Window::OneMinute => 60,
            Window::FiveMinutes => 300,
            Window::FifteenMinutes => 900,
            Window::OneHour => 3600,
        }
    }

    /// The ring it is read from: 10-second slots up to 5m, 1-minute slots above.
    pub fn resolution(self) -> Resolution {
        match self {
            Window::OneMinute | Window::FiveMinutes => Resolution::Fine,
            Window::FifteenMinutes | Window::OneHour => Resolution::Coarse,
        }
    }

    /// How many slots make the window.
    pub fn slots(self) -> u64 {
        self.seconds() / self.resolution().slot_seconds()
    }

    /// The slots of this window ending at `now`, and those of the window of the same
    /// length just before it (`None` before the recorder has run a whole window).
    pub fn spans(self, now: Duration) -> (Span, Option<Span>) {
        let len = self.resolution().slot_seconds();
        let k = self.slots();
        let epoch = now.as_secs() / len;
        let first = (epoch + 1).saturating_sub(k);
        let current = Span {
            epochs: first..=epoch,
            seconds: now.as_secs_f64() - (first * len) as f64,
        };
        let previous = (epoch >= k).then(|| {
            let first = (epoch + 1).saturating_sub(2 * k);
            let last = epoch - k;
            Span {
                epochs: first..=last,
                seconds: ((last + 1 - first) * len) as f64,
            }
        });
        (current, previous)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ring's slot length and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// 10-second slots for `1m` and `5m`: 62 of them (5m and the 5m before, two guards).
    Fine,
    /// 1-minute slots for `15m` and `1h`: 122 of them (1h and the hour before, two guards).
    Coarse,
}

impl Resolution {
    /// Length of a slot.
    pub fn slot_seconds(self) -> u64 {
        match self {
            Resolution::Fine => 10,
            Resolution::Coarse => 60,
        }
    }

    /// Slots in the ring: twice the longest window read from it, plus [`GUARD_SLOTS`].
    pub fn ring_len(self) -> usize {
        let longest = match self {
            Resolution::Fine => Window::FiveMinutes,
            Resolution::Coarse => Window::OneHour,
        };
        2 * longest.seconds() as usize / self.slot_seconds() as usize + GUARD_SLOTS
    }

    /// The epoch of the slot in progress at `now`.
    pub fn epoch(self, now: Duration) -> u64 {
        now.as_secs() / self.slot_seconds()
    }
}

/// The slots of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Epochs of the slots, oldest first.
    pub epochs: RangeInclusive<u64>,
    /// Seconds of time the slots cover up to now (the slot in progress only in part, and
    /// nothing before the recorder started).
    pub seconds: f64,
}

/// The index of the bucket a latency of `seconds` falls in: the first boundary at or above
/// it (Prometheus' `le` is inclusive), or `bounds.len()` for the `+Inf` bucket.
pub fn bucket_index(bounds: &[f64], seconds: f64) -> usize {
    bounds.partition_point(|b| *b < seconds)
}

/// What the requests of a window add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests per latency bucket: one per boundary, then `+Inf` (not cumulative).
    pub buckets: Vec<u64>,
    /// Requests answered 5xx.
    pub server_errors: u64,
    /// Requests answered 4xx.
    pub client_errors: u64,
    /// Sum of the latencies, in microseconds.
    pub latency_micros: u64,
    /// Request body bytes read.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// The pagination figures of a route with pagination; `None` for other routes.
    pub pagination: Option<PaginationCounts>,
}

impl Counts {
    /// No request, with buckets for `bounds` boundaries.
    pub fn empty(bounds: usize) -> Self {
        Counts {
            buckets: vec![0; bounds + 1],
            ..Counts::default()
        }
    }

    /// Adds one request (the reference the recorder's atomics must agree with).
    pub fn observe(&mut self, bounds: &[f64], latency: Duration, status: u16, bytes: (u64, u64)) {
        self.buckets[bucket_index(bounds, latency.as_secs_f64())] += 1;
        self.server_errors += u64::from((500..600).contains(&status));
        self.client_errors += u64::from((400..500).contains(&status));
        self.latency_micros += u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.request_bytes += bytes.0;
        self.response_bytes += bytes.1;
    }

    /// Adds another window's counts (same boundaries).
    pub fn add(&mut self, other: &Counts) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.server_errors += other.server_errors;
        self.client_errors += other.client_errors;
        self.latency_micros += other.latency_micros;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
        if let Some(theirs) = &other.pagination {
            self.pagination
                .get_or_insert_with(|| {
                    PaginationCounts::empty(self.buckets.len().saturating_sub(1))
                })
                .add(theirs);
        }
    }

    /// Requests in the window.
    pub fn requests(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Share of requests answered 5xx; `None` without requests.
    pub fn error_ratio(&self) -> Option<f64> {
        self.ratio(self.server_errors)
    }

    /// Share of requests answered 4xx; `None` without requests.
    pub fn client_error_ratio(&self) -> Option<f64> {
        self.ratio(self.client_errors)
    }

    /// Mean latency in seconds (exact: the sum over the count); `None` without requests.
    pub fn mean(&self) -> Option<f64> {
        self.ratio(self.latency_micros).map(|m| m / 1e6)
    }

    fn ratio(&self, part: u64) -> Option<f64> {
        let requests = self.requests();
        (requests > 0).then(|| part as f64 / requests as f64)
    }

    /// The `q` quantile of the latency, in seconds; `None` without requests. See
    /// [`quantile`].
    pub fn quantile(&self, q: f64, bounds: &[f64]) -> Option<f64> {
        quantile(q, bounds, &self.buckets)
    }
}

/// The `q` quantile (0 ≤ q ≤ 1) of requests counted in `buckets` (one per boundary of
/// `bounds`, then `+Inf`, not cumulative), as Prometheus' `histogram_quantile` computes it:
/// the bucket holding the rank `q × count` is found, and the value interpolated linearly
/// between its lower boundary (0 for the first bucket) and its upper one. The true
/// quantile lies in the same bucket, so the error is at most that bucket's width. A rank
/// in the `+Inf` bucket gives the highest finite boundary, a lower bound of the truth.
/// `None` without requests.
pub fn quantile(q: f64, bounds: &[f64], buckets: &[u64]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 || bounds.is_empty() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        let cumulative = below + count;
        if count > 0 && cumulative as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            // In Prometheus' order of operations, so equal counts give equal floats.
            return Some(lower + (upper - lower) * ((rank - below as f64) / count as f64));
        }
        below = cumulative;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_DURATION_BUCKETS;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn windows_parse_and_print_as_in_the_query() {
        for w in Window::ALL {
            assert_eq!(Window::parse(w.as_str()), Some(w));
            assert_eq!(serde_json::to_string(&w).expect("json"), format!("\"{w}\""));
        }
        assert_eq!(Window::parse("2m"), None);
        assert_eq!(
            Window::ALL.map(Window::slots),
            [6, 30, 15, 60],
            "10-s slots up to 5m, 1-min slots above"
        );
    }

    #[test]
    fn rings_hold_two_windows_and_the_guards() {
        assert_eq!(Resolution::Fine.ring_len(), 62);
        assert_eq!(Resolution::Coarse.ring_len(), 122);
        for w in Window::ALL {
            assert!(2 * w.slots() as usize + GUARD_SLOTS <= w.resolution().ring_len());
        }
    }

    #[test]
    fn a_window_is_the_slot_in_progress_and_those_before_it() {
        // 65 s after start, 1m on 10-s slots: slots 1..=6, covering 10 s to 65 s.
        let (current, previous) = Window::OneMinute.spans(secs(65));
        assert_eq!(current.epochs, 1..=6);
        assert_eq!(current.seconds, 55.0);
        assert_eq!(previous.expect("a whole window ran").epochs, 0..=0);
        // Early on, the window is what ran so far and there is no previous one.
        let (current, previous) = Window::OneMinute.spans(Duration::from_millis(20_500));
        assert_eq!(current.epochs, 0..=2);
        assert_eq!(current.seconds, 20.5);
        assert_eq!(previous, None);
        // Later, the previous window is as long as the window.
        let (current, previous) = Window::FiveMinutes.spans(secs(3_600));
        assert_eq!(current.epochs, 331..=360);
        let previous = previous.expect("previous");
        assert_eq!((previous.epochs, previous.seconds), (301..=330, 300.0));
        let (current, previous) = Window::OneHour.spans(secs(7_230));
        assert_eq!(current.epochs, 61..=120);
        assert_eq!(previous.expect("previous").epochs, 1..=60);
    }

    #[test]
    fn buckets_include_their_upper_boundary() {
        let b = [0.1, 0.25, 0.5];
        assert_eq!(bucket_index(&b, 0.05), 0);
        assert_eq!(bucket_index(&b, 0.1), 0, "le is inclusive");
        assert_eq!(bucket_index(&b, 0.100_001), 1);
        assert_eq!(bucket_index(&b, 0.5), 2);
        assert_eq!(bucket_index(&b, 0.6), 3, "+Inf");
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_as_prometheus_does() {
        let bounds = [0.1, 0.2, 0.4, 0.8];
        // 50 requests under 0.1 s, 40 in (0.1, 0.2], 10 in (0.4, 0.8].
        let buckets = [50, 40, 0, 10, 0];
        // p50: rank 50, the last of the first bucket: its upper boundary.
        assert_eq!(quantile(0.5, &bounds, &buckets), Some(0.1));
        // p25: rank 25 of 50 in [0, 0.1].
        assert_eq!(quantile(0.25, &bounds, &buckets), Some(0.05));
        // p70: rank 70, the 20th of 40 in (0.1, 0.2].
        let p70 = quantile(0.7, &bounds, &buckets).expect("p70");
        assert!((p70 - 0.15).abs() < 1e-12, "{p70}");
        // p95: rank 95, the 5th of 10 in (0.4, 0.8]: the empty bucket is skipped.
        let p95 = quantile(0.95, &bounds, &buckets).expect("p95");
        assert!((p95 - 0.6).abs() < 1e-12, "{p95}");
        // p99: the 9th of 10.
        let p99 = quantile(0.99, &bounds, &buckets).expect("p99");
        assert!((p99 - 0.76).abs() < 1e-12, "{p99}");
        // A rank in +Inf: the highest boundary.
        assert_eq!(quantile(0.99, &bounds, &[1, 0, 0, 0, 99]), Some(0.8));
        assert_eq!(quantile(0.5, &bounds, &[0; 5]), None);
    }

    /// Prometheus' `bucketQuantile` (promql/quantile.go), over cumulative counts as
    /// `sum by (le)` gives them, transcribed for the comparison below.
    fn prometheus_quantile(q: f64, bounds: &[f64], cumulative: &[f64]) -> f64 {
        let observations = cumulative[cumulative.len() - 1];
        let rank = q * observations;
        let b = cumulative[..cumulative.len() - 1].partition_point(|c| *c < rank);
        if b == cumulative.len() - 1 {
            return bounds[bounds.len() - 1];
        }
        let (mut start, end, mut count, mut rank) = (0.0, bounds[b], cumulative[b], rank);
        if b > 0 {
            start = bounds[b - 1];
            count -= cumulative[b - 1];
            rank -= cumulative[b - 1];
        }
        start + (end - start) * (rank / count)
    }

    #[test]
    fn quantiles_equal_prometheus_bit_for_bit_on_the_same_counts() {
        let bounds = DEFAULT_DURATION_BUCKETS;
        let mixes: [&[u64]; 4] = [
            &[7, 3, 0, 11, 2, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[313, 97, 41, 29, 17, 13, 11, 7, 5, 3, 2, 1, 1, 1, 1],
        ];
        for buckets in mixes {
            let cumulative: Vec<f64> = buckets
                .iter()
                .scan(0u64, |sum, c| {
                    *sum += c;
                    Some(*sum as f64)
                })
                .collect();
            for q in [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999] {
                let ours = quantile(q, &bounds, buckets).expect("requests");
                let theirs = prometheus_quantile(q, &bounds, &cumulative);
                assert_eq!(ours.to_bits(), theirs.to_bits(), "q{q} of {buckets:?}");
            }
        }
    }

    #[test]
    fn the_error_is_at_most_the_width_of_the_bucket() {
        let bounds = DEFAULT_DURATION_BUCKETS;
        // Latencies 1 ms .. 3 s: the true p95 against the estimate.
        let latencies: Vec<f64> = (1..=3000).map(|ms| f64::from(ms) / 1000.0).collect();
        let mut counts = Counts::empty(bounds.len());
        for l in &latencies {
            counts.observe(&bounds, Duration::from_secs_f64(*l), 200, (0, 0));
        }
        for q in [0.5, 0.9, 0.95, 0.99] {
            let truth = latencies[(q * latencies.len() as f64).ceil() as usize - 1];
            let estimate = counts.quantile(q, &bounds).expect("requests");
            let i = bucket_index(&bounds, truth);
            let width = bounds[i] - if i == 0 { 0.0 } else { bounds[i - 1] };
            assert!(
                (estimate - truth).abs() <= width,
                "q{q}: {estimate} vs {truth}"
            );
        }
    }

    #[test]
    fn counts_add_up_and_divide() {
        let bounds = [0.1, 1.0];
        let mut a = Counts::empty(2);
        a.observe(&bounds, Duration::from_millis(50), 200, (10, 100));
        a.observe(&bounds, Duration::from_millis(150), 503, (0, 20));
        let mut b = Counts::empty(2);
        b.observe(&bounds, Duration::from_secs(2), 404, (5, 0));
        b.observe(&bounds, Duration::from_millis(100), 200, (0, 0));
        a.add(&b);
        assert_eq!(a.buckets, [2, 1, 1]);
        assert_eq!(a.requests(), 4);
        assert_eq!(a.error_ratio(), Some(0.25));
        assert_eq!(a.client_error_ratio(), Some(0.25));
        assert_eq!((a.request_bytes, a.response_bytes), (15, 120));
        let mean = a.mean().expect("mean");
        assert!((mean - 0.575).abs() < 1e-9, "{mean}");
        assert_eq!(Counts::empty(2).mean(), None);
    }
}
