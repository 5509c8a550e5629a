//! The pagination series of routes with pagination: the `routemeter_pagination_*`
//! families ([`PaginationFamilies`]), and for each paginated route of a loaded config its
//! parameters and handles to its series ([`RoutePagination`]). A route's handles are
//! resolved on its first request of each method and kept with the config, so a request
//! records with atomics only, no label lookup.
//!
//! Labels are bounded: `http_route` a declared route's template (inferred routes have no
//! pagination), `http_request_method` the closed method list, `outcome`, `offset_range`
//! and `page_size_range` the fixed sets of [`crate::pagination`]. A paginated (route,
//! method) has at most 3 + 10 + 8 + 14 × (boundaries + 3) series (the outcome counters,
//! the page-size and offset histograms, a latency histogram per offset range and per
//! page-size range): 259 with the 14 default duration boundaries. The latency histograms
//! of a range exist once a request falls in it.

use std::sync::{Arc, OnceLock};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::pagination::{
    OFFSET_BOUNDS, OFFSET_RANGES, Outcome, PAGE_SIZE_BOUNDS, PAGE_SIZE_RANGES, Params, Reading,
    offset_range, page_size_range,
};
use crate::route::{METHOD_LABELS, MethodLabel};

/// The pagination families, registered once; each config's routes resolve their series
/// on them.
#[derive(Debug, Clone)]
pub struct PaginationFamilies {
    /// `routemeter_pagination_requests_total{http_route, http_request_method, outcome}`.
    requests: IntCounterVec,
    /// `routemeter_pagination_page_size{http_route, http_request_method}`.
    page_size: HistogramVec,
    /// `routemeter_pagination_offset{http_route, http_request_method}`.
    offset: HistogramVec,
    /// `routemeter_pagination_request_duration_seconds{http_route, http_request_method,
    /// offset_range}`.
    by_offset: HistogramVec,
    /// `routemeter_pagination_request_duration_by_page_size_seconds{http_route,
    /// http_request_method, page_size_range}`.
    by_page_size: HistogramVec,
}

fn as_buckets(bounds: &[u64]) -> Vec<f64> {
    bounds.iter().map(|b| *b as f64).collect()
}

impl PaginationFamilies {
    /// Creates and registers the families; `duration_buckets` are the request-duration
    /// boundaries, which the latency histograms share.
    pub fn register(
        registry: &Registry,
        duration_buckets: &[f64],
    ) -> Result<Self, prometheus::Error> {
        let route_method = ["http_route", "http_request_method"];
        let f = PaginationFamilies {
            requests: IntCounterVec::new(
                Opts::new(
                    "routemeter_pagination_requests_total",
                    "Requests to routes with pagination, by what their query said: paginated (pagination parameters, all whole numbers), absent (none of them), invalid (one not a whole number, or page 0).",
                ),
                &["http_route", "http_request_method", "outcome"],
            )?,
            page_size: HistogramVec::new(
                HistogramOpts::new(
                    "routemeter_pagination_page_size",
                    "Page sizes asked for, in items, by the paginated requests that give one.",
                )
                .buckets(as_buckets(&PAGE_SIZE_BOUNDS)),
                &route_method,
            )?,
            offset: HistogramVec::new(
                HistogramOpts::new(
                    "routemeter_pagination_offset",
                    "Offsets asked for, in items skipped: the offset parameter, else (page - 1) x page size (pages are 1-based). Whole numbers: le=\"99\" counts the offsets below 100.",
                )
                .buckets(as_buckets(&OFFSET_BOUNDS)),
                &route_method,
            )?,
            by_offset: HistogramVec::new(
                HistogramOpts::new(
                    "routemeter_pagination_request_duration_seconds",
                    "Duration of the paginated requests with a known offset, by offset range.",
                )
                .buckets(duration_buckets.to_vec()),
                &["http_route", "http_request_method", "offset_range"],
            )?,
            by_page_size: HistogramVec::new(
                HistogramOpts::new(
                    "routemeter_pagination_request_duration_by_page_size_seconds",
                    "Duration of the paginated requests with a known page size, by page-size range.",
                )
                .buckets(duration_buckets.to_vec()),
                &["http_route", "http_request_method", "page_size_range"],
            )?,
        };
        registry.register(Box::new(f.requests.clone()))?;
        registry.register(Box::new(f.page_size.clone()))?;
        registry.register(Box::new(f.offset.clone()))?;
        registry.register(Box::new(f.by_offset.clone()))?;
        registry.register(Box::new(f.by_page_size.clone()))?;
        Ok(f)
    }
}

/// A paginated route of the loaded config: its parameters and its series.
#[derive(Debug)]
pub struct RoutePagination {
    params: Params,
    route: Arc<str>,
    families: PaginationFamilies,
    /// Per method label ([`METHOD_LABELS`]), resolved on its first request.
    methods: [OnceLock<MethodSeries>; METHOD_LABELS.len()],
}

/// The series of one (route, method).
#[derive(Debug)]
struct MethodSeries {
    outcomes: [IntCounter; 3],
    page_size: Histogram,
    offset: Histogram,
    by_offset: [OnceLock<Histogram>; OFFSET_RANGES.len()],
    by_page_size: [OnceLock<Histogram>; PAGE_SIZE_RANGES.len()],
}

impl RoutePagination {
    /// The pagination of the route labelled `route`, recorded on `families`.
    pub fn new(route: Arc<str>, params: Params, families: &PaginationFamilies) -> Self {
        RoutePagination {
            params,
            route,
            families: families.clone(),
            methods: Default::default(),
        }
    }

    /// What a request's raw query says.
    pub fn read(&self, query: Option<&str>) -> Reading {
        self.params.read(query)
    }

    /// Records a finished request of method label `method`, its reading and its
    /// duration in seconds.
    pub fn record(&self, method: impl Into<MethodLabel>, reading: Reading, seconds: f64) {
        let index = method.into().index();
        let series = self.methods[index].get_or_init(|| self.resolve(METHOD_LABELS[index]));
        series.outcomes[reading.outcome().index()].inc();
        let Reading::Paginated { size, offset } = reading else {
            return;
        };
        let labels = |value: &'static str| [&*self.route, METHOD_LABELS[index], value];
        if let Some(size) = size {
            series.page_size.observe(size as f64);
            let range = page_size_range(size);
            series.by_page_size[range]
                .get_or_init(|| {
                    self.families
                        .by_page_size
                        .with_label_values(&labels(PAGE_SIZE_RANGES[range]))
                })
                .observe(seconds);
        }
        if let Some(offset) = offset {
            series.offset.observe(offset as f64);
            let range = offset_range(offset);
            series.by_offset[range]
                .get_or_init(|| {
                    self.families
                        .by_offset
                        .with_label_values(&labels(OFFSET_RANGES[range]))
                })
                .observe(seconds);
        }
    }

    /// The series of `method`; the outcome counters all at once, so each starts at 0.
    fn resolve(&self, method: &'static str) -> MethodSeries {
        let route_method = [&*self.route, method];
        let f = &self.families;
        MethodSeries {
            outcomes: Outcome::ALL.map(|o| {
                f.requests
                    .with_label_values(&[&*self.route, method, o.as_str()])
            }),
            page_size: f.page_size.with_label_values(&route_method),
            offset: f.offset.with_label_values(&route_method),
            by_offset: Default::default(),
            by_page_size: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::metrics::encode;

    #[test]
    fn a_route_records_its_readings_in_fixed_ranges() {
        let registry = Registry::new();
        let families = PaginationFamilies::register(&registry, &[0.1, 1.0]).expect("register");
        assert!(
            String::from_utf8(encode(&registry))
                .expect("utf8")
                .is_empty(),
            "no series before a paginated request"
        );
        let params = Params::new(None, None, None).expect("defaults");
        let route = RoutePagination::new(Arc::from("/items"), params, &families);
        for query in [
            "page=1&limit=20",
            "page=3&limit=20",
            "offset=5000&limit=100",
        ] {
            route.record("GET", route.read(Some(query)), 0.05);
        }
        route.record("GET", route.read(None), 0.01);
        route.record("GET", route.read(Some("page=x")), 0.01);
        route.record("POST", route.read(Some("page=2")), 0.01);
        let text = String::from_utf8(encode(&registry)).expect("utf8");
        for line in [
            r#"routemeter_pagination_requests_total{http_request_method="GET",http_route="/items",outcome="paginated"} 3"#,
            r#"routemeter_pagination_requests_total{http_request_method="GET",http_route="/items",outcome="absent"} 1"#,
            r#"routemeter_pagination_requests_total{http_request_method="GET",http_route="/items",outcome="invalid"} 1"#,
            r#"routemeter_pagination_requests_total{http_request_method="POST",http_route="/items",outcome="paginated"} 1"#,
            r#"routemeter_pagination_requests_total{http_request_method="POST",http_route="/items",outcome="invalid"} 0"#,
            r#"routemeter_pagination_page_size_bucket{http_request_method="GET",http_route="/items",le="20"} 2"#,
            r#"routemeter_pagination_page_size_bucket{http_request_method="GET",http_route="/items",le="100"} 3"#,
            r#"routemeter_pagination_page_size_sum{http_request_method="GET",http_route="/items"} 140"#,
            r#"routemeter_pagination_offset_bucket{http_request_method="GET",http_route="/items",le="0"} 1"#,
            r#"routemeter_pagination_offset_bucket{http_request_method="GET",http_route="/items",le="99"} 2"#,
            r#"routemeter_pagination_offset_bucket{http_request_method="GET",http_route="/items",le="9999"} 3"#,
            r#"routemeter_pagination_offset_sum{http_request_method="GET",http_route="/items"} 5040"#,
            r#"routemeter_pagination_request_duration_seconds_count{http_request_method="GET",http_route="/items",offset_range="1-99"} 1"#,
            r#"routemeter_pagination_request_duration_seconds_count{http_request_method="GET",http_route="/items",offset_range="1000-9999"} 1"#,
            r#"routemeter_pagination_request_duration_by_page_size_seconds_count{http_request_method="GET",http_route="/items",page_size_range="11-20"} 2"#,
            r#"routemeter_pagination_request_duration_by_page_size_seconds_count{http_request_method="GET",http_route="/items",page_size_range="51-100"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            !text.contains(r#"offset_range="100000+""#),
            "only the ranges used have series"
        );
        // A page 2 without a size has no offset and no size: counted, nothing observed.
        assert!(text.contains(
            r#"routemeter_pagination_page_size_count{http_request_method="POST",http_route="/items"} 0"#
        ));
    }
}
