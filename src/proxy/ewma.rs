//! The latency estimate of one upstream endpoint: a peak-EWMA, kept without a lock.
//!
//! The estimate is quick to rise and slow to fall. A sample above it replaces it at once
//! (the peak); between samples it decays exponentially with the time elapsed, by a factor
//! of e every [`DECAY`], and each sample holds it up to at least that sample. So it is the
//! largest of the past samples, each decayed by its age:
//!
//! ```text
//! estimate(t) = max over samples (sᵢ, tᵢ) of sᵢ · exp(−(t − tᵢ) / τ)
//! ```
//!
//! With a steady latency `L` it is `L`. After a spike `P` it is back at `L` after
//! `τ · ln(P / L)` (50 ms over 5 ms: 23 s). An endpoint that gets no request keeps
//! decaying towards zero, so the balancer tries it again once it looks cheaper than the
//! others, and learns whether it recovered. This is Finagle's and Linkerd's peak-EWMA as it
//! behaves when the estimate is read at every choice, as theirs is (a read decays it
//! towards zero), but in a form that needs no lock.
//!
//! The form: one `f64`, `k = ln(estimate) + t / τ`, `t` the time of the estimate since an
//! origin. Decay then changes nothing stored (the estimate at `t'` is `exp(k − t'/τ)`),
//! and a sample `s` at `t` is the atomic maximum of `k` and `ln(s) + t/τ`: concurrent
//! samples need no lock, and none is lost whatever their order. An `f64` keeps `t/τ` to
//! better than a nanosecond of precision for years.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Time constant of the decay: the estimate falls by a factor of e in this long without a
/// sample as large. Finagle's and Linkerd's default.
pub const DECAY: Duration = Duration::from_secs(10);

/// Samples shorter than this count as this: a zero sample has no logarithm.
const MIN_SAMPLE_SECONDS: f64 = 1e-6;

/// A peak-EWMA latency estimate; see the module documentation.
#[derive(Debug)]
pub struct PeakEwma {
    origin: Instant,
    /// `ln(estimate in seconds) + t / τ` as `f64` bits; negative infinity before the first
    /// sample.
    key: AtomicU64,
}

impl PeakEwma {
    /// An estimate with no sample yet, timing from `origin`.
    pub fn new(origin: Instant) -> Self {
        PeakEwma {
            origin,
            key: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
        }
    }

    /// Records a latency `sample` taken at `now`.
    pub fn observe(&self, sample: Duration, now: Instant) {
        self.observe_at(sample.as_secs_f64(), self.since_origin(now));
    }

    /// The estimate at `now`, in seconds; `None` before the first sample.
    pub fn estimate(&self, now: Instant) -> Option<f64> {
        self.estimate_at(self.since_origin(now))
    }

    fn since_origin(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.origin).as_secs_f64()
    }

    /// [`Self::observe`] of `sample` seconds, `at` seconds after the origin.
    fn observe_at(&self, sample: f64, at: f64) {
        let key = sample.max(MIN_SAMPLE_SECONDS).ln() + at / DECAY.as_secs_f64();
        // Err when the estimate is already higher: nothing to write.
        let _ = self
            .key
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                (key > f64::from_bits(bits)).then_some(key.to_bits())
            });
    }

    /// [`Self::estimate`] `at` seconds after the origin.
    fn estimate_at(&self, at: f64) -> Option<f64> {
        let key = f64::from_bits(self.key.load(Ordering::Relaxed));
        key.is_finite()
            .then(|| (key - at / DECAY.as_secs_f64()).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: Option<f64>, expected: f64) -> bool {
        actual.is_some_and(|a| (a - expected).abs() <= expected * 1e-9)
    }

    fn ewma() -> PeakEwma {
        PeakEwma::new(Instant::now())
    }

    #[test]
    fn no_estimate_before_the_first_sample() {
        let e = ewma();
        assert_eq!(e.estimate_at(0.0), None);
        assert_eq!(e.estimate_at(1e6), None);
        e.observe_at(0.0, 5.0);
        assert!(
            close(e.estimate_at(5.0), MIN_SAMPLE_SECONDS),
            "a zero sample is a sample"
        );
    }

    #[test]
    fn a_peak_replaces_the_estimate_at_once() {
        let e = ewma();
        e.observe_at(0.005, 1.0);
        e.observe_at(0.050, 1.001);
        assert!(
            close(e.estimate_at(1.001), 0.050),
            "{:?}",
            e.estimate_at(1.001)
        );
        // A later, lower sample does not pull it down: only time does.
        e.observe_at(0.005, 1.002);
        assert!(close(
            e.estimate_at(1.002),
            0.050 * (-0.001f64 / 10.0).exp()
        ));
    }

    #[test]
    fn decays_by_elapsed_time_not_by_sample_count() {
        let tau = DECAY.as_secs_f64();
        let e = ewma();
        e.observe_at(0.100, 2.0);
        assert!(close(e.estimate_at(2.0 + tau), 0.100 / std::f64::consts::E));
        assert!(close(
            e.estimate_at(2.0 + 3.0 * tau),
            0.100 * (-3.0f64).exp()
        ));
        // A thousand lower samples within a millisecond change nothing...
        let many = ewma();
        many.observe_at(0.100, 2.0);
        for i in 0..1000 {
            many.observe_at(0.001, 2.0 + f64::from(i) * 1e-6);
        }
        assert!(close(many.estimate_at(2.001), 0.100 * (-0.0001f64).exp()));
        // ...and once the spike has decayed below them, the samples hold it up.
        let floor = ewma();
        floor.observe_at(0.050, 0.0);
        let back = tau * (0.050f64 / 0.005).ln();
        floor.observe_at(0.005, back + 1.0);
        assert!(close(floor.estimate_at(back + 1.0), 0.005));
    }

    #[test]
    fn concurrent_samples_keep_the_highest() {
        let e = std::sync::Arc::new(ewma());
        let threads: Vec<_> = (1..=4)
            .map(|n| {
                let e = e.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        e.observe_at(f64::from(n * 1000 + i) * 1e-6, 0.0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        assert!(close(e.estimate_at(0.0), 4999e-6));
    }

    #[test]
    fn instants_before_the_origin_count_as_the_origin() {
        let origin = Instant::now();
        let e = PeakEwma::new(origin + Duration::from_secs(1));
        e.observe(Duration::from_millis(20), origin);
        assert!(close(e.estimate(origin), 0.020));
        assert!(close(
            e.estimate(origin + Duration::from_secs(11)),
            0.020 / std::f64::consts::E
        ));
    }
}
