//! What counts as a failed request, for every figure routemeter gives: the generated rules
//! and dashboards, `/api/summary`, the score and the MonitoredService's status.
//!
//! A request fails when its answer is a 5xx, or when the service's side failed it after
//! the answer's head was sent: an upstream that closes or resets the connection mid-body
//! leaves the client a 200 head and a cut body. The proxy records what the client got
//! (`http_response_status_code="200"`) and why it was cut (`error_type="upstream_reset"`);
//! every error ratio counts such a request as an error. Failures on the client's side (it
//! went away: `client_aborted`, 499; it sent an invalid request: 400, 431) are not the
//! service's and count as client errors, as their 4xx codes say.

/// The `error_type` values of failures on the service's side: each counts as an error
/// whatever the status code recorded with it.
pub const SERVER_ERROR_TYPES: [&str; 8] = [
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "upstream_timeout",
    "upstream_reset",
    "upstream_protocol_error",
    "no_healthy_upstream",
    "internal",
];

/// Whether a request with this status and `error_type` counts as an error.
pub fn is_error(status: u16, error_type: &str) -> bool {
    (500..600).contains(&status) || SERVER_ERROR_TYPES.contains(&error_type)
}

/// The PromQL regular expression matching [`SERVER_ERROR_TYPES`].
pub fn server_error_types_regex() -> String {
    SERVER_ERROR_TYPES.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_answer_is_an_error_a_client_that_left_is_not() {
        assert!(is_error(503, ""));
        assert!(is_error(200, "upstream_reset"));
        assert!(is_error(200, "upstream_timeout"));
        assert!(!is_error(200, ""));
        assert!(!is_error(499, "client_aborted"));
        assert!(!is_error(404, ""));
        assert_eq!(
            server_error_types_regex(),
            "connect_refused|connect_timeout|connect_error|upstream_timeout|upstream_reset|upstream_protocol_error|no_healthy_upstream|internal"
        );
    }
}
