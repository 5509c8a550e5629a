//! What Prometheus and Grafana get for a `MonitoredService`: recording rules, threshold
//! and SLO burn-rate alerts ([`rules`]) and a dashboard ([`dashboard`]). Pure functions of
//! the spec, shared by the operator and `routemeter render`.

pub mod dashboard;
pub mod rules;

use crate::crd::{MonitoringSpec, RouteSpec};

/// Every latency threshold the rules compare against, in seconds: the proxy adds each as
/// a histogram boundary so the share of requests under it is exact, not interpolated.
pub fn latency_thresholds(monitoring: &MonitoringSpec, routes: &[RouteSpec]) -> Vec<f64> {
    let mut all = vec![
        monitoring.alerts.latency_p95_seconds,
        monitoring.slo.latency_threshold_seconds,
    ];
    all.extend(
        routes
            .iter()
            .filter_map(|r| r.slo.as_ref())
            .map(|s| s.latency_threshold_seconds),
    );
    all.retain(|v| v.is_finite() && *v > 0.0);
    all.sort_by(f64::total_cmp);
    all.dedup();
    all
}

/// The label matcher that selects the bucket with upper bound `seconds`, on Prometheus 2
/// and 3 alike.
///
/// The proxy writes a boundary as Rust prints the number (`le="2"`, `le="0.3"`), and
/// Prometheus 2 stores that text as it is. Prometheus 3 stores the `le` of classic
/// histograms in OpenMetrics float form instead (`le="2.0"`; see
/// [`openmetrics_float`]), so `le="2"` selects nothing there and an alert on it can
/// never fire. Where the two spellings differ the matcher accepts both
/// (`le=~"2|2\\.0"`); one Prometheus only ever
/// holds one of them, so nothing is counted twice. Where they agree (`0.3`, `0.25`) it
/// stays an equality matcher.
pub fn le_matcher(seconds: f64) -> String {
    let ours = format!("{seconds}");
    let theirs = openmetrics_float(seconds);
    if ours == theirs {
        format!(r#"le="{ours}""#)
    } else {
        format!(
            r#"le=~"{}|{}""#,
            regex_literal(&ours),
            regex_literal(&theirs)
        )
    }
}

/// A float as Prometheus 3 writes a classic histogram's `le` (Go's shortest `%g`, with
/// `.0` added when that has neither a point nor an exponent): `2` → `2.0`, `0.3` →
/// `0.3`, `1e-05`, `1e+06`, `+Inf`.
pub fn openmetrics_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Go's precision -1 does.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // Go's `%g` at the shortest precision is scientific when the decimal exponent is
    // below -4 or at least 6, with a sign and two digits or more in the exponent.
    let text = if !(-4..6).contains(&exp) {
        format!(
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    } else {
        format!("{f}")
    };
    if text.contains(['.', 'e']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// `s` as a regular expression matching exactly `s` (only `.` and `+` occur in numbers).
fn regex_literal(s: &str) -> String {
    s.replace('.', "\\\\.").replace('+', "\\\\+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_spelled_as_prometheus_3_stores_them() {
        // Each pair was printed by Go's strconv.FormatFloat(f, 'g', -1, 64), the
        // formatting Prometheus 3's labels.FormatOpenMetricsFloat starts from.
        for (f, go) in [
            (2.0, "2.0"),
            (1.0, "1.0"),
            (0.3, "0.3"),
            (0.25, "0.25"),
            (2.5, "2.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1.5e-7, "1.5e-07"),
            (123456.0, "123456.0"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(openmetrics_float(f), go, "{f}");
        }
    }

    #[test]
    fn bucket_matchers_select_both_spellings_of_whole_numbers() {
        assert_eq!(le_matcher(0.3), r#"le="0.3""#);
        assert_eq!(le_matcher(0.5), r#"le="0.5""#);
        assert_eq!(le_matcher(2.0), r#"le=~"2|2\\.0""#);
        assert_eq!(le_matcher(1.0), r#"le=~"1|1\\.0""#);
        assert_eq!(le_matcher(1e-5), r#"le=~"0\\.00001|1e-05""#);
    }
}
