//! The pagination figures of a route with pagination: what a window's requests add up to
//! ([`PaginationCounts`]) and the `pagination` object of its entry in `/api/summary`
//! ([`PaginationEntry`]). Ranges and buckets are [`crate::pagination`]'s, the latency
//! boundaries the route's own, so the figures are those of the Prometheus histograms.
//!
//! Page sizes and offsets are whole numbers asked for by name (`limit=20`), so their
//! percentiles are not interpolated: each is the upper boundary of the bucket holding it
//! ("95 % ask for at most 100 items"); one above the last boundary is that boundary, as
//! for latencies. Their means are exact. Latency percentiles per offset range are
//! interpolated as everywhere else in the summary.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::score::PaginationFigures;
use super::window::{bucket_index, quantile};
use crate::pagination::{
    DEEP_OFFSET, LARGE_PAGE_SIZE, OFFSET_BOUNDS, OFFSET_RANGE_STARTS, OFFSET_RANGES, Outcome,
    PAGE_SIZE_BOUNDS, Reading, offset_range, page_size_range,
};

/// Page-size buckets: one per boundary, then above the last.
pub const PAGE_SIZE_BUCKETS: usize = PAGE_SIZE_BOUNDS.len() + 1;

/// What the requests of a paginated route add up to over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaginationCounts {
    /// Requests by outcome, in [`Outcome::ALL`] order.
    pub outcomes: [u64; 3],
    /// Requests with a page size, per bucket of [`PAGE_SIZE_BOUNDS`] (then above the last).
    pub page_sizes: [u64; PAGE_SIZE_BUCKETS],
    /// Sum of those page sizes.
    pub page_size_sum: u64,
    /// Sum of the offsets of the requests with an offset.
    pub offset_sum: u64,
    /// Per offset range ([`OFFSET_RANGES`]), the latency of its requests.
    pub ranges: Vec<RangeCounts>,
}

/// The latency of the requests of one offset range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeCounts {
    /// Requests per latency bucket: one per boundary, then `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of their latencies, in microseconds.
    pub latency_micros: u64,
}

impl RangeCounts {
    fn empty(bounds: usize) -> Self {
        RangeCounts {
            buckets: vec![0; bounds + 1],
            latency_micros: 0,
        }
    }

    /// Requests in the range.
    pub fn requests(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn add(&mut self, other: &RangeCounts) {
        add_all(&mut self.buckets, &other.buckets);
        self.latency_micros += other.latency_micros;
    }
}

impl PaginationCounts {
    /// No request, with latency buckets for `bounds` boundaries.
    pub fn empty(bounds: usize) -> Self {
        PaginationCounts {
            outcomes: [0; 3],
            page_sizes: [0; PAGE_SIZE_BUCKETS],
            page_size_sum: 0,
            offset_sum: 0,
            ranges: (0..OFFSET_RANGES.len())
                .map(|_| RangeCounts::empty(bounds))
                .collect(),
        }
    }

    /// Adds one request (the reference the recorder's atomics must agree with).
    pub fn observe(&mut self, bounds: &[f64], latency: Duration, reading: Reading) {
        self.outcomes[reading.outcome().index()] += 1;
        let Reading::Paginated { size, offset } = reading else {
            return;
        };
        if let Some(size) = size {
            self.page_sizes[page_size_range(size)] += 1;
            self.page_size_sum += size;
        }
        if let Some(offset) = offset {
            let range = &mut self.ranges[offset_range(offset)];
            range.buckets[bucket_index(bounds, latency.as_secs_f64())] += 1;
            range.latency_micros += u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.offset_sum += offset;
        }
    }

    /// Adds another window's counts (same boundaries).
    pub fn add(&mut self, other: &PaginationCounts) {
        add_all(&mut self.outcomes, &other.outcomes);
        add_all(&mut self.page_sizes, &other.page_sizes);
        self.page_size_sum += other.page_size_sum;
        self.offset_sum += other.offset_sum;
        if self.ranges.len() < other.ranges.len() {
            self.ranges
                .resize(other.ranges.len(), RangeCounts::empty(0));
        }
        for (mine, theirs) in self.ranges.iter_mut().zip(&other.ranges) {
            mine.add(theirs);
        }
    }

    /// Requests of the route, whatever their outcome.
    pub fn requests(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Requests with an offset, per offset range.
    pub fn offsets(&self) -> Vec<u64> {
        self.ranges.iter().map(RangeCounts::requests).collect()
    }

    /// The `pagination` object of the route's entry; `bounds` are the latency boundaries.
    pub fn entry(&self, bounds: &[f64]) -> PaginationEntry {
        let [paginated, absent, invalid] = self.outcomes;
        PaginationEntry {
            paginated,
            absent,
            invalid,
            page_size: Distribution::of(&PAGE_SIZE_BOUNDS, &self.page_sizes, self.page_size_sum),
            offset: Distribution::of(&OFFSET_BOUNDS, &self.offsets(), self.offset_sum),
            offset_ranges: self
                .ranges
                .iter()
                .zip(OFFSET_RANGES)
                .map(|(r, name)| RangeEntry {
                    range: name.to_string(),
                    requests: r.requests(),
                    p50: quantile(0.5, bounds, &r.buckets),
                    p95: quantile(0.95, bounds, &r.buckets),
                    p99: quantile(0.99, bounds, &r.buckets),
                    mean: mean(r.latency_micros, r.requests()).map(|m| m / 1e6),
                    buckets: r.buckets.clone(),
                })
                .collect(),
        }
    }

    /// The counts behind an entry with `buckets` latency buckets per range: its buckets
    /// exactly, the sums from the means (exact up to rounding). `None` when its buckets
    /// do not have the expected lengths.
    pub fn from_entry(e: &PaginationEntry, buckets: usize) -> Option<Self> {
        let page_sizes = e.page_size.buckets.as_slice().try_into().ok()?;
        if e.offset_ranges.len() != OFFSET_RANGES.len()
            || e.offset_ranges.iter().any(|r| r.buckets.len() != buckets)
        {
            return None;
        }
        let sum =
            |mean: Option<f64>, n: u64, scale: f64| whole(mean.unwrap_or(0.0) * n as f64 * scale);
        Some(PaginationCounts {
            outcomes: [e.paginated, e.absent, e.invalid],
            page_sizes,
            page_size_sum: sum(e.page_size.mean, e.page_size.requests, 1.0),
            offset_sum: sum(e.offset.mean, e.offset.requests, 1.0),
            ranges: e
                .offset_ranges
                .iter()
                .map(|r| RangeCounts {
                    buckets: r.buckets.clone(),
                    latency_micros: sum(r.mean, r.requests(), 1e6),
                })
                .collect(),
        })
    }

    /// The figures the recommendations look at; `bounds` are the latency boundaries.
    pub fn figures(&self, bounds: &[f64]) -> PaginationFigures {
        let large_from = page_size_range(LARGE_PAGE_SIZE) + 1;
        let mut deep = vec![0; bounds.len() + 1];
        for (range, start) in self.ranges.iter().zip(OFFSET_RANGE_STARTS) {
            if start >= DEEP_OFFSET {
                add_all(&mut deep, &range.buckets);
            }
        }
        PaginationFigures {
            requests: self.requests(),
            invalid: self.outcomes[Outcome::Invalid.index()],
            sized: self.page_sizes.iter().sum(),
            large: self.page_sizes[large_from..].iter().sum(),
            deep: deep.iter().sum(),
            deep_p95: quantile(0.95, bounds, &deep),
            first_page_p95: self
                .ranges
                .first()
                .and_then(|r| quantile(0.95, bounds, &r.buckets)),
        }
    }
}

fn add_all(mine: &mut [u64], theirs: &[u64]) {
    for (m, t) in mine.iter_mut().zip(theirs) {
        *m += t;
    }
}

fn mean(sum: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum as f64 / n as f64)
}

/// `x` rounded to a whole number, 0 when not a positive finite number.
fn whole(x: f64) -> u64 {
    let x = x.round();
    if x.is_finite() && x > 0.0 {
        x as u64
    } else {
        0
    }
}

/// The `pagination` object of a route entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaginationEntry {
    /// Requests with pagination parameters, all of them valid numbers.
    pub paginated: u64,
    /// Requests with none of the parameters.
    pub absent: u64,
    /// Requests with a parameter that is not a whole number (or empty), or page 0.
    pub invalid: u64,
    /// The page sizes asked for.
    pub page_size: Distribution,
    /// The offsets asked for: the offset parameter, else (page − 1) × page size.
    pub offset: Distribution,
    /// The latency of each offset range, every range in order, those without requests too.
    pub offset_ranges: Vec<RangeEntry>,
}

/// The page sizes or offsets of a window's requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    /// Requests with a known value.
    pub requests: u64,
    /// Their mean, exact; `null` without requests.
    pub mean: Option<f64>,
    /// The upper boundary of the bucket holding the median, the 95th and the 99th
    /// percentile (the last boundary for a percentile above it); `null` without requests.
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
    /// Upper boundaries of the buckets (inclusive).
    pub bounds: Vec<u64>,
    /// Requests per bucket: one per boundary, then above the last (not cumulative).
    pub buckets: Vec<u64>,
}

impl Distribution {
    fn of(bounds: &[u64], buckets: &[u64], sum: u64) -> Self {
        let requests = buckets.iter().sum();
        Distribution {
            requests,
            mean: mean(sum, requests),
            p50: at_most(0.5, bounds, buckets),
            p95: at_most(0.95, bounds, buckets),
            p99: at_most(0.99, bounds, buckets),
            bounds: bounds.to_vec(),
            buckets: buckets.to_vec(),
        }
    }
}

/// The latency of one offset range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeEntry {
    /// The range, as the `offset_range` label.
    pub range: String,
    /// Requests at offsets in the range.
    pub requests: u64,
    /// Latency percentiles and mean, in seconds; `null` without requests.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
    /// Requests per latency bucket (the summary's `bounds`, then `+Inf`).
    pub buckets: Vec<u64>,
}

impl RangeEntry {
    fn requests(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The upper boundary of the bucket holding the `q` quantile of `buckets` (one per
/// boundary of `bounds`, then above the last); the last boundary above it. `None`
/// without requests.
pub fn at_most(q: f64, bounds: &[u64], buckets: &[u64]) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut cumulative = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        cumulative += count;
        if count > 0 && cumulative as f64 >= rank {
            return bounds.get(i).or(bounds.last()).copied();
        }
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.1, 0.5, 1.0];

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn paginated(size: Option<u64>, offset: Option<u64>) -> Reading {
        Reading::Paginated { size, offset }
    }

    #[test]
    fn percentiles_of_sizes_are_bucket_boundaries() {
        let b = PAGE_SIZE_BOUNDS;
        // 18 ask for 20, 2 for 500.
        let buckets = [0, 18, 0, 0, 0, 2, 0, 0];
        assert_eq!(at_most(0.5, &b, &buckets), Some(20));
        assert_eq!(
            at_most(0.9, &b, &buckets),
            Some(20),
            "rank 18 is the last 20"
        );
        assert_eq!(at_most(0.95, &b, &buckets), Some(500));
        assert_eq!(at_most(0.99, &b, &[0, 0, 0, 0, 0, 0, 0, 1]), Some(1000));
        assert_eq!(at_most(0.5, &b, &[0; 8]), None);
    }

    #[test]
    fn known_requests_give_known_figures() {
        let mut c = PaginationCounts::empty(BOUNDS.len());
        for _ in 0..10 {
            c.observe(&BOUNDS, ms(50), paginated(Some(20), Some(0)));
        }
        for _ in 0..4 {
            c.observe(&BOUNDS, ms(700), paginated(Some(100), Some(2000)));
        }
        c.observe(&BOUNDS, ms(300), paginated(Some(500), Some(150)));
        c.observe(&BOUNDS, ms(5), paginated(None, None));
        c.observe(&BOUNDS, ms(5), Reading::Absent);
        c.observe(&BOUNDS, ms(5), Reading::Absent);
        c.observe(&BOUNDS, ms(5), Reading::Invalid);
        let e = c.entry(&BOUNDS);
        assert_eq!((e.paginated, e.absent, e.invalid), (16, 2, 1));
        assert_eq!(e.page_size.requests, 15);
        assert_eq!(e.page_size.buckets, [0, 10, 0, 4, 0, 1, 0, 0]);
        assert_eq!(e.page_size.mean, Some(1100.0 / 15.0));
        assert_eq!(
            (e.page_size.p50, e.page_size.p95, e.page_size.p99),
            (Some(20), Some(500), Some(500))
        );
        assert_eq!(e.offset.buckets, [10, 0, 1, 4, 0, 0]);
        assert_eq!(e.offset.mean, Some(8150.0 / 15.0));
        assert_eq!((e.offset.p50, e.offset.p95), (Some(0), Some(9999)));
        let ranges: Vec<(&str, u64)> = e
            .offset_ranges
            .iter()
            .map(|r| (r.range.as_str(), r.requests))
            .collect();
        assert_eq!(
            ranges,
            [
                ("0", 10),
                ("1-99", 0),
                ("100-999", 1),
                ("1000-9999", 4),
                ("10000-99999", 0),
                ("100000+", 0)
            ]
        );
        let deep = &e.offset_ranges[3];
        assert_eq!(deep.buckets, [0, 0, 4, 0]);
        assert_eq!(deep.mean, Some(0.7));
        assert_eq!(e.offset_ranges[1].p95, None);

        let f = c.figures(&BOUNDS);
        assert_eq!(
            (f.requests, f.invalid, f.sized, f.large, f.deep),
            (19, 1, 15, 1, 4)
        );
        let p95 = f.deep_p95.expect("deep requests");
        assert!((p95 - 0.975).abs() < 1e-12, "{p95}");
        let first = f.first_page_p95.expect("first-page requests");
        assert!((first - 0.095).abs() < 1e-12, "{first}");

        // The entry gives its counts back, so summaries of several proxies merge exactly.
        let back = PaginationCounts::from_entry(&e, BOUNDS.len() + 1).expect("same shape");
        assert_eq!(back, c);
        assert_eq!(PaginationCounts::from_entry(&e, 2), None);
        let mut twice = c.clone();
        twice.add(&back);
        assert_eq!(twice.requests(), 38);
        assert_eq!(twice.offsets(), [20, 0, 2, 8, 0, 0]);
    }
}
