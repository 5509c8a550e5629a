//! The performance score (0–100, with a [`Status`]) and the recommendations, pure
//! functions of a window's figures. Every rule, threshold and weight is here and in
//! `docs/score.md`; change both together.

use serde::{Deserialize, Serialize};

use super::window::Window;

/// The latency objective of a route none is configured for, in seconds.
pub const DEFAULT_LATENCY_OBJECTIVE: f64 = 0.5;

/// The error ratio (5xx) the score and recommendations hold a route to.
pub const ERROR_TARGET: f64 = 0.01;

/// Most points from the latency rule (p95 against the objective).
pub const LATENCY_POINTS: u8 = 40;
/// Most points from the error rule (5xx ratio against [`ERROR_TARGET`]).
pub const ERROR_POINTS: u8 = 50;
/// Most points from the trend rule (this window against the previous one).
pub const TREND_POINTS: u8 = 10;

/// The highest score of a route failing more than this share of requests with a 5xx, or
/// slower than [`SLOW_CAP_FACTOR`] × its objective: poor, whatever its other figures.
pub const FAILING_CAP_RATIO: f64 = 0.05;
/// See [`FAILING_CAP_RATIO`].
pub const SLOW_CAP_FACTOR: f64 = 4.0;
/// The score of a capped route at most.
pub const CAPPED_SCORE: u8 = 39;

/// The trend rule sees p95 worsen when it grew past this factor of the previous window's.
pub const TREND_P95_FACTOR: f64 = 1.2;
/// The trend rule sees errors worsen when their ratio grew past this factor of the
/// previous window's and by at least [`TREND_ERROR_MIN_INCREASE`].
pub const TREND_ERROR_FACTOR: f64 = 2.0;
/// See [`TREND_ERROR_FACTOR`]: 0.1 percentage point, so one error more is no trend.
pub const TREND_ERROR_MIN_INCREASE: f64 = 0.001;
/// Requests each window needs for the trend rule to compare them; with fewer, the rule
/// gives its full points (no evidence of worsening).
pub const TREND_MIN_REQUESTS: u64 = 20;

/// Requests a route needs in the window to get recommendations.
pub const RECOMMENDATION_MIN_REQUESTS: u64 = 5;
/// A route answering more than this share of requests with a 4xx gets a recommendation.
pub const CLIENT_ERROR_RECOMMENDATION_RATIO: f64 = 0.1;
/// The most recommendations in a summary, the worst routes' first.
pub const MAX_RECOMMENDATIONS: usize = 20;

/// A route with pagination gets a recommendation when more than this share of the
/// requests giving a page size ask for more than [`crate::pagination::LARGE_PAGE_SIZE`].
pub const LARGE_PAGE_RECOMMENDATION_RATIO: f64 = 0.25;
/// A route with pagination gets a recommendation when more than this share of its
/// requests carry an invalid pagination parameter.
pub const INVALID_PAGINATION_RECOMMENDATION_RATIO: f64 = 0.1;

/// What a score says in a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Below 40.
    Poor,
    /// 40 to 59.
    Fair,
    /// 60 to 79.
    Good,
    /// 80 and above.
    Excellent,
}

impl Status {
    /// The status of a score: excellent ≥ 80, good ≥ 60, fair ≥ 40, poor below.
    pub fn of(score: u8) -> Self {
        match score {
            80.. => Status::Excellent,
            60..=79 => Status::Good,
            40..=59 => Status::Fair,
            _ => Status::Poor,
        }
    }
}

/// The figures a score is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Requests in the window.
    pub requests: u64,
    /// p95 latency in seconds.
    pub p95: f64,
    /// Share of requests answered 5xx.
    pub error_ratio: f64,
    /// Share of requests answered 4xx.
    pub client_error_ratio: f64,
}

/// The previous window's figures, for the trend rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Previous {
    /// Requests in the previous window.
    pub requests: u64,
    /// Its p95 in seconds.
    pub p95: f64,
    /// Its 5xx ratio.
    pub error_ratio: f64,
}

/// The pagination figures of a route the recommendations look at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaginationFigures {
    /// Requests of the route in the window, whatever their parameters.
    pub requests: u64,
    /// Of those, with an invalid pagination parameter (or page 0).
    pub invalid: u64,
    /// Requests giving a page size, and of those, asking for more than
    /// [`crate::pagination::LARGE_PAGE_SIZE`] items.
    pub sized: u64,
    pub large: u64,
    /// Requests at offsets from [`crate::pagination::DEEP_OFFSET`], and their p95 in
    /// seconds.
    pub deep: u64,
    pub deep_p95: Option<f64>,
    /// p95 of the requests for the first page (offset 0), in seconds.
    pub first_page_p95: Option<f64>,
}

/// Points of the latency rule: p95 ≤ ½ objective 40, ≤ objective 30, ≤ 2× 15, ≤ 4× 5,
/// above 0.
pub fn latency_points(p95: f64, objective: f64) -> u8 {
    let r = p95 / objective;
    match r {
        _ if r <= 0.5 => LATENCY_POINTS,
        _ if r <= 1.0 => 30,
        _ if r <= 2.0 => 15,
        _ if r <= SLOW_CAP_FACTOR => 5,
        _ => 0,
    }
}

/// Points of the error rule: 5xx ratio ≤ 0.1 % 50, ≤ 1 % 35, ≤ 5 % 10, above 0.
pub fn error_points(error_ratio: f64) -> u8 {
    match error_ratio {
        e if e <= ERROR_TARGET / 10.0 => ERROR_POINTS,
        e if e <= ERROR_TARGET => 35,
        e if e <= FAILING_CAP_RATIO => 10,
        _ => 0,
    }
}

/// What got worse since the previous window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trend {
    /// p95 grew past [`TREND_P95_FACTOR`] × the previous one.
    pub slower: bool,
    /// The 5xx ratio grew past [`TREND_ERROR_FACTOR`] × the previous one, by at least
    /// [`TREND_ERROR_MIN_INCREASE`].
    pub more_errors: bool,
}

/// The trend between two windows; nothing worsened when either has fewer than
/// [`TREND_MIN_REQUESTS`].
pub fn trend(now: &Figures, previous: Option<&Previous>) -> Trend {
    match previous {
        Some(p) if now.requests >= TREND_MIN_REQUESTS && p.requests >= TREND_MIN_REQUESTS => {
            Trend {
                slower: now.p95 > p.p95 * TREND_P95_FACTOR,
                more_errors: now.error_ratio > p.error_ratio * TREND_ERROR_FACTOR
                    && now.error_ratio - p.error_ratio >= TREND_ERROR_MIN_INCREASE,
            }
        }
        _ => Trend::default(),
    }
}

/// Points of the trend rule: 10 when nothing worsened, 5 when p95 or errors did, 0 when
/// both did.
pub fn trend_points(trend: Trend) -> u8 {
    TREND_POINTS - 5 * (u8::from(trend.slower) + u8::from(trend.more_errors))
}

/// The score: the sum of the three rules' points, capped at [`CAPPED_SCORE`] for a route
/// failing more than [`FAILING_CAP_RATIO`] or slower than [`SLOW_CAP_FACTOR`] × objective.
pub fn score(now: &Figures, previous: Option<&Previous>, objective: f64) -> u8 {
    let sum = latency_points(now.p95, objective)
        + error_points(now.error_ratio)
        + trend_points(trend(now, previous));
    if now.error_ratio > FAILING_CAP_RATIO || now.p95 > SLOW_CAP_FACTOR * objective {
        sum.min(CAPPED_SCORE)
    } else {
        sum
    }
}

/// The recommendations for one route (or the service), in the order of the rules: p95
/// over the objective, 5xx over the target, 4xx over [`CLIENT_ERROR_RECOMMENDATION_RATIO`],
/// p95 and errors worse than the previous window. `subject` names the route, as in
/// `GET /users/{id}`. None below [`RECOMMENDATION_MIN_REQUESTS`].
pub fn recommendations(
    subject: &str,
    now: &Figures,
    previous: Option<&Previous>,
    objective: f64,
    window: Window,
) -> Vec<String> {
    let mut out = Vec::new();
    if now.requests < RECOMMENDATION_MIN_REQUESTS {
        return out;
    }
    if now.p95 > objective {
        out.push(format!(
            "{subject}: p95 {} over its {} objective in the last {window}; look at what it waits on (queries, calls to other services) or cache its answers",
            seconds(now.p95),
            seconds(objective),
        ));
    }
    if now.error_ratio > ERROR_TARGET {
        out.push(format!(
            "{subject}: {} of its requests answered 5xx in the last {window}, over the {} target; see the application's logs for this route",
            percent(now.error_ratio),
            percent(ERROR_TARGET),
        ));
    }
    if now.client_error_ratio > CLIENT_ERROR_RECOMMENDATION_RATIO {
        out.push(format!(
            "{subject}: {} of its requests answered 4xx in the last {window}; check what its clients send",
            percent(now.client_error_ratio),
        ));
    }
    let worse = trend(now, previous);
    if let (true, Some(p)) = (worse.slower, previous) {
        out.push(format!(
            "{subject}: p95 rose from {} to {} against the {window} before",
            seconds(p.p95),
            seconds(now.p95),
        ));
    }
    if let (true, Some(p)) = (worse.more_errors, previous) {
        out.push(format!(
            "{subject}: 5xx rose from {} to {} of its requests against the {window} before",
            percent(p.error_ratio),
            percent(now.error_ratio),
        ));
    }
    out
}

/// The recommendations about a route's pagination, in this order: deep pages slower than
/// the objective (p95 of the requests at offsets from
/// [`crate::pagination::DEEP_OFFSET`], at least [`RECOMMENDATION_MIN_REQUESTS`] of them),
/// large pages (more than [`LARGE_PAGE_RECOMMENDATION_RATIO`] of the requests giving a
/// size), invalid parameters (more than [`INVALID_PAGINATION_RECOMMENDATION_RATIO`]). The
/// shares need [`RECOMMENDATION_MIN_REQUESTS`] requests to count.
pub fn pagination_recommendations(
    subject: &str,
    p: &PaginationFigures,
    objective: f64,
    window: Window,
) -> Vec<String> {
    use crate::pagination::{DEEP_OFFSET, LARGE_PAGE_SIZE};
    let mut out = Vec::new();
    if let Some(deep_p95) = p.deep_p95.filter(|p95| *p95 > objective)
        && p.deep >= RECOMMENDATION_MIN_REQUESTS
    {
        let first_page = p
            .first_page_p95
            .map(|f| format!(" (the first page: {})", seconds(f)))
            .unwrap_or_default();
        out.push(format!(
            "{subject}: p95 {} at offsets of {DEEP_OFFSET} and more in the last {window}, over its {} objective{first_page}; an OFFSET query reads every row it skips: paginate with a cursor (keyset) instead, or cap the offset",
            seconds(deep_p95),
            seconds(objective),
        ));
    }
    if p.sized >= RECOMMENDATION_MIN_REQUESTS
        && p.large as f64 / p.sized as f64 > LARGE_PAGE_RECOMMENDATION_RATIO
    {
        out.push(format!(
            "{subject}: {} of the requests giving a page size ask for more than {LARGE_PAGE_SIZE} items in the last {window}; large pages are slow to build and to send: lower the largest page size it allows",
            percent(p.large as f64 / p.sized as f64),
        ));
    }
    if p.requests >= RECOMMENDATION_MIN_REQUESTS
        && p.invalid as f64 / p.requests as f64 > INVALID_PAGINATION_RECOMMENDATION_RATIO
    {
        out.push(format!(
            "{subject}: {} of its requests carry a pagination parameter that is not a whole number (or page 0) in the last {window}; check what its clients send",
            percent(p.invalid as f64 / p.requests as f64),
        ));
    }
    out
}

/// A latency for people: `12 ms` below a second, `1.2 s` above.
pub fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{} ms", (s * 1000.0).round())
    } else {
        format!("{:.1} s", s)
    }
}

/// A ratio for people: `12.5 %`, `0.05 %` below one percent.
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p < 1.0 && p > 0.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJ: f64 = 0.5;

    fn figures(p95: f64, error_ratio: f64) -> Figures {
        Figures {
            requests: 100,
            p95,
            error_ratio,
            client_error_ratio: 0.0,
        }
    }

    #[test]
    fn statuses_at_their_thresholds() {
        assert_eq!(Status::of(100), Status::Excellent);
        assert_eq!(Status::of(80), Status::Excellent);
        assert_eq!(Status::of(79), Status::Good);
        assert_eq!(Status::of(60), Status::Good);
        assert_eq!(Status::of(59), Status::Fair);
        assert_eq!(Status::of(40), Status::Fair);
        assert_eq!(Status::of(39), Status::Poor);
        assert_eq!(Status::of(0), Status::Poor);
    }

    #[test]
    fn latency_points_below_at_and_above_each_threshold() {
        let e = 1e-9;
        for (factor, below_or_at, above) in
            [(0.5, 40, 30), (1.0, 30, 15), (2.0, 15, 5), (4.0, 5, 0)]
        {
            let at = factor * OBJ;
            assert_eq!(latency_points(at - e, OBJ), below_or_at, "below {factor}×");
            assert_eq!(latency_points(at, OBJ), below_or_at, "at {factor}×");
            assert_eq!(latency_points(at + e, OBJ), above, "above {factor}×");
        }
    }

    #[test]
    fn error_points_below_at_and_above_each_threshold() {
        let e = 1e-9;
        for (at, below_or_at, above) in [(0.001, 50, 35), (0.01, 35, 10), (0.05, 10, 0)] {
            assert_eq!(error_points(at - e), below_or_at, "below {at}");
            assert_eq!(error_points(at), below_or_at, "at {at}");
            assert_eq!(error_points(at + e), above, "above {at}");
        }
    }

    #[test]
    fn trend_needs_enough_requests_and_a_real_change() {
        let prev = Previous {
            requests: 100,
            p95: 0.1,
            error_ratio: 0.01,
        };
        let e = 1e-9;
        // p95 at 1.2× is no trend; just above is.
        assert!(!trend(&figures(0.12, 0.01), Some(&prev)).slower);
        assert!(trend(&figures(0.12 + e, 0.01), Some(&prev)).slower);
        // Errors at 2× are no trend; just above is.
        assert!(!trend(&figures(0.1, 0.02), Some(&prev)).more_errors);
        assert!(trend(&figures(0.1, 0.02 + e), Some(&prev)).more_errors);
        // From no errors, less than 0.1 point more is no trend; 0.1 point is.
        let clean = Previous {
            error_ratio: 0.0,
            ..prev
        };
        assert!(!trend(&figures(0.1, 0.001 - e), Some(&clean)).more_errors);
        assert!(trend(&figures(0.1, 0.001), Some(&clean)).more_errors);
        // Too few requests on either side: nothing to compare.
        let few = Previous {
            requests: TREND_MIN_REQUESTS - 1,
            ..prev
        };
        assert_eq!(trend(&figures(1.0, 0.5), Some(&few)), Trend::default());
        let enough = Previous {
            requests: TREND_MIN_REQUESTS,
            ..prev
        };
        assert!(trend(&figures(1.0, 0.5), Some(&enough)).slower);
        let mut now = figures(1.0, 0.5);
        now.requests = TREND_MIN_REQUESTS - 1;
        assert_eq!(trend(&now, Some(&prev)), Trend::default());
        assert_eq!(trend(&figures(1.0, 0.5), None), Trend::default());
        assert_eq!(trend_points(Trend::default()), 10);
        assert_eq!(
            trend_points(Trend {
                slower: true,
                more_errors: false
            }),
            5
        );
        assert_eq!(
            trend_points(Trend {
                slower: true,
                more_errors: true
            }),
            0
        );
    }

    #[test]
    fn scores_add_the_rules_and_cap_failing_or_very_slow_routes() {
        // Fast, no errors, no previous window: every point.
        assert_eq!(score(&figures(0.1, 0.0), None, OBJ), 100);
        // p95 just over the objective, 0.5 % errors: 15 + 35 + 10.
        assert_eq!(score(&figures(0.6, 0.005), None, OBJ), 60);
        // Errors at the cap are scored by the rules; just above, capped.
        assert_eq!(score(&figures(0.1, 0.05), None, OBJ), 60);
        assert_eq!(score(&figures(0.1, 0.05 + 1e-9), None, OBJ), 39);
        assert_eq!(score(&figures(0.1, 1.0), None, OBJ), 39);
        // p95 at 4× the objective: 5 + 50 + 10; above it capped (and 0 latency points).
        assert_eq!(score(&figures(2.0, 0.0), None, OBJ), 65);
        assert_eq!(score(&figures(2.0 + 1e-9, 0.0), None, OBJ), 39);
        // A worsening trend takes its points away.
        let prev = Previous {
            requests: 100,
            p95: 0.05,
            error_ratio: 0.0,
        };
        assert_eq!(score(&figures(0.1, 0.0), Some(&prev), OBJ), 95);
        // Everything bad: nothing but capped anyway.
        assert_eq!(score(&figures(10.0, 1.0), Some(&prev), OBJ), 0);
    }

    #[test]
    fn recommendations_name_the_route_and_the_figure() {
        let mut now = figures(1.2, 0.125);
        now.client_error_ratio = 0.25;
        let prev = Previous {
            requests: 100,
            p95: 0.3,
            error_ratio: 0.01,
        };
        let r = recommendations(
            "GET /api/trips/{id}",
            &now,
            Some(&prev),
            OBJ,
            Window::FiveMinutes,
        );
        assert_eq!(r.len(), 5, "{r:#?}");
        assert!(
            r[0].starts_with(
                "GET /api/trips/{id}: p95 1.2 s over its 500 ms objective in the last 5m"
            ),
            "{}",
            r[0]
        );
        assert!(
            r[1].starts_with(
                "GET /api/trips/{id}: 12.5 % of its requests answered 5xx in the last 5m, over the 1.0 % target"
            ),
            "{}",
            r[1]
        );
        assert!(r[2].starts_with("GET /api/trips/{id}: 25.0 % of its requests answered 4xx"));
        assert_eq!(
            r[3],
            "GET /api/trips/{id}: p95 rose from 300 ms to 1.2 s against the 5m before"
        );
        assert_eq!(
            r[4],
            "GET /api/trips/{id}: 5xx rose from 1.0 % to 12.5 % of its requests against the 5m before"
        );
    }

    #[test]
    fn recommendations_at_their_thresholds() {
        let w = Window::OneMinute;
        let e = 1e-9;
        let none = |f: Figures| recommendations("GET /a", &f, None, OBJ, w);
        assert!(none(figures(OBJ, ERROR_TARGET)).is_empty(), "at: fine");
        assert_eq!(none(figures(OBJ + e, 0.0)).len(), 1, "p95 above");
        assert_eq!(none(figures(0.1, ERROR_TARGET + e)).len(), 1, "5xx above");
        let mut f = figures(0.1, 0.0);
        f.client_error_ratio = CLIENT_ERROR_RECOMMENDATION_RATIO;
        assert!(none(f).is_empty(), "4xx at");
        f.client_error_ratio += e;
        assert_eq!(none(f).len(), 1, "4xx above");
        // Too little traffic to say anything.
        let mut few = figures(10.0, 1.0);
        few.requests = RECOMMENDATION_MIN_REQUESTS - 1;
        assert!(none(few).is_empty());
        few.requests = RECOMMENDATION_MIN_REQUESTS;
        assert_eq!(none(few).len(), 2);
    }

    #[test]
    fn pagination_recommendations_at_their_thresholds() {
        let w = Window::FiveMinutes;
        let quiet = PaginationFigures {
            requests: 100,
            invalid: 10,
            sized: 80,
            large: 20,
            deep: 10,
            deep_p95: Some(OBJ),
            first_page_p95: Some(0.03),
        };
        assert!(
            pagination_recommendations("GET /a", &quiet, OBJ, w).is_empty(),
            "every figure at its threshold"
        );
        let loud = PaginationFigures {
            invalid: 11,
            large: 24,
            deep_p95: Some(1.2),
            ..quiet
        };
        assert_eq!(
            pagination_recommendations("GET /a", &loud, OBJ, w),
            [
                "GET /a: p95 1.2 s at offsets of 1000 and more in the last 5m, over its 500 ms objective (the first page: 30 ms); an OFFSET query reads every row it skips: paginate with a cursor (keyset) instead, or cap the offset",
                "GET /a: 30.0 % of the requests giving a page size ask for more than 100 items in the last 5m; large pages are slow to build and to send: lower the largest page size it allows",
                "GET /a: 11.0 % of its requests carry a pagination parameter that is not a whole number (or page 0) in the last 5m; check what its clients send",
            ]
        );
        // Too few requests to say anything.
        let few = PaginationFigures {
            requests: RECOMMENDATION_MIN_REQUESTS - 1,
            invalid: 4,
            sized: RECOMMENDATION_MIN_REQUESTS - 1,
            large: 4,
            deep: RECOMMENDATION_MIN_REQUESTS - 1,
            first_page_p95: None,
            ..loud
        };
        assert!(pagination_recommendations("GET /a", &few, OBJ, w).is_empty());
        let deep_only = PaginationFigures {
            deep: RECOMMENDATION_MIN_REQUESTS,
            ..few
        };
        assert_eq!(
            pagination_recommendations("GET /a", &deep_only, OBJ, w),
            [
                "GET /a: p95 1.2 s at offsets of 1000 and more in the last 5m, over its 500 ms objective; an OFFSET query reads every row it skips: paginate with a cursor (keyset) instead, or cap the offset"
            ]
        );
    }

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(seconds(0.0123), "12 ms");
        assert_eq!(seconds(0.5), "500 ms");
        assert_eq!(seconds(1.234), "1.2 s");
        assert_eq!(percent(0.125), "12.5 %");
        assert_eq!(percent(0.0005), "0.05 %");
        assert_eq!(percent(0.0), "0.0 %");
        assert_eq!(percent(1.0), "100.0 %");
    }
}
