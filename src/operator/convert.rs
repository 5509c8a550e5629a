//! The `MonitoredService` API's types → the proxy config file's: routes, pagination, the
//! auto template, forwarding and load balancing. The two schemas are kept apart so that
//! neither changes with the other by accident; each conversion destructures its spec
//! whole, so a field added to the API and not converted here does not compile.
//!
//! Uses only [`crate::crd`] and [`crate::config`].

use std::time::Duration;

use crate::config;
use crate::crd::{
    AutoTemplateSpec, ForwardingSpec, LoadBalancingPolicy, PaginationSpec, RouteSpec,
};

/// A declared route, its latency objective being its SLO's latency threshold.
pub fn route(r: &RouteSpec) -> config::Route {
    let RouteSpec {
        path,
        methods,
        name,
        slo,
        pagination: p,
    } = r;
    config::Route {
        path: path.clone(),
        methods: methods.clone(),
        name: name.clone(),
        latency_objective: slo
            .as_ref()
            .and_then(|s| seconds(s.latency_threshold_seconds)),
        pagination: p.as_ref().map(pagination),
    }
}

/// A route's pagination parameters; an absent name stays absent (the proxy's default).
pub fn pagination(p: &PaginationSpec) -> config::Pagination {
    let PaginationSpec {
        page_param,
        size_param,
        offset_param,
    } = p;
    config::Pagination {
        page_param: page_param.clone(),
        size_param: size_param.clone(),
        offset_param: offset_param.clone(),
    }
}

/// The labelling of requests that match no route.
pub fn auto_template(a: &AutoTemplateSpec) -> config::AutoTemplate {
    let AutoTemplateSpec {
        enabled,
        max_routes,
    } = *a;
    config::AutoTemplate {
        enabled,
        max_routes,
    }
}

/// The forwarding headers the proxy sets.
pub fn forwarding(f: &ForwardingSpec) -> config::Forwarding {
    let ForwardingSpec {
        x_forwarded_for,
        x_forwarded_proto,
        x_forwarded_host,
        forwarded,
        via,
        trusted_hops,
    } = *f;
    config::Forwarding {
        x_forwarded_for,
        x_forwarded_proto,
        x_forwarded_host,
        forwarded,
        via,
        trusted_hops,
    }
}

/// The load-balancing policy.
pub fn load_balancing(policy: LoadBalancingPolicy) -> config::LoadBalancing {
    match policy {
        LoadBalancingPolicy::RoundRobin => config::LoadBalancing::RoundRobin,
        LoadBalancingPolicy::LeastRequest => config::LoadBalancing::LeastRequest,
        LoadBalancingPolicy::PeakEwma => config::LoadBalancing::PeakEwma,
    }
}

/// A positive, finite number of seconds as a duration; `None` otherwise (the schema's
/// `minimum: 0` lets 0 through, and no objective of 0 is meant).
pub fn seconds(value: f64) -> Option<Duration> {
    (value.is_finite() && value > 0.0)
        .then(|| Duration::try_from_secs_f64(value).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    fn parse<T: DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("valid")
    }

    #[test]
    fn pagination_passes_through_to_the_proxy_config() {
        let routes: Vec<RouteSpec> = parse(json!([
            {"path": "/items", "pagination": {}},
            {"path": "/users", "pagination": {"pageParam": "p", "sizeParam": "page[size]"}},
            {"path": "/plain"},
            {"path": "/all", "pagination": {"pageParam": "a", "sizeParam": "b", "offsetParam": "c"}},
        ]));
        let routes: Vec<config::Route> = routes.iter().map(route).collect();
        assert_eq!(routes[0].pagination, Some(config::Pagination::default()));
        assert_eq!(
            routes[1].pagination,
            Some(config::Pagination {
                page_param: Some("p".into()),
                size_param: Some("page[size]".into()),
                offset_param: None,
            })
        );
        assert_eq!(routes[2].pagination, None);
        assert_eq!(
            routes[3].pagination,
            Some(config::Pagination {
                page_param: Some("a".into()),
                size_param: Some("b".into()),
                offset_param: Some("c".into()),
            })
        );
    }

    #[test]
    fn routes_keep_their_fields_and_take_their_slo_threshold_as_objective() {
        let r: RouteSpec = parse(json!({
            "path": "/users/{id}", "methods": ["GET", "PUT"], "name": "user",
            "slo": {"latencyThresholdSeconds": 0.25},
        }));
        assert_eq!(
            route(&r),
            config::Route {
                path: "/users/{id}".into(),
                methods: vec!["GET".into(), "PUT".into()],
                name: Some("user".into()),
                latency_objective: Some(Duration::from_millis(250)),
                pagination: None,
            }
        );
        let plain: RouteSpec = parse(json!({"path": "/"}));
        assert_eq!(
            route(&plain),
            config::Route {
                path: "/".into(),
                methods: Vec::new(),
                name: None,
                latency_objective: None,
                pagination: None,
            }
        );
        // A threshold of 0 (the schema's minimum) is no objective.
        let zero: RouteSpec = parse(json!({"path": "/", "slo": {"latencyThresholdSeconds": 0}}));
        assert_eq!(route(&zero).latency_objective, None);
    }

    #[test]
    fn seconds_are_positive_and_finite() {
        assert_eq!(seconds(1.5), Some(Duration::from_millis(1500)));
        for not in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::MAX] {
            assert_eq!(seconds(not), None, "{not}");
        }
    }

    /// Every field set away from its default reaches the config with the same value, and
    /// the spec, written as JSON, reads as the very same config: the two schemas agree on
    /// the names too.
    #[test]
    fn every_proxy_setting_converts_with_its_value() {
        let auto: AutoTemplateSpec = parse(json!({"enabled": false, "maxRoutes": 7}));
        let expected = config::AutoTemplate {
            enabled: false,
            max_routes: 7,
        };
        assert_eq!(auto_template(&auto), expected);
        assert_eq!(
            parse::<config::AutoTemplate>(serde_json::to_value(&auto).expect("json")),
            expected
        );

        let f: ForwardingSpec = parse(json!({
            "xForwardedFor": false, "xForwardedProto": false, "xForwardedHost": false,
            "forwarded": true, "via": true, "trustedHops": 3,
        }));
        let expected = config::Forwarding {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            x_forwarded_host: false,
            forwarded: true,
            via: true,
            trusted_hops: 3,
        };
        assert_eq!(forwarding(&f), expected);
        assert_eq!(
            parse::<config::Forwarding>(serde_json::to_value(&f).expect("json")),
            expected
        );

        for (name, expected) in [
            ("roundRobin", config::LoadBalancing::RoundRobin),
            ("leastRequest", config::LoadBalancing::LeastRequest),
            ("peakEwma", config::LoadBalancing::PeakEwma),
        ] {
            let policy: LoadBalancingPolicy = parse(json!(name));
            assert_eq!(load_balancing(policy), expected, "{name}");
            assert_eq!(
                parse::<config::LoadBalancing>(serde_json::to_value(policy).expect("json")),
                expected,
                "{name}"
            );
        }
    }

    /// An empty object in the spec gets the proxy's own defaults, and so does a spec
    /// without the setting: the API's defaults are the config's.
    #[test]
    fn empty_specs_convert_to_the_config_defaults() {
        assert_eq!(
            auto_template(&parse(json!({}))),
            config::AutoTemplate::default()
        );
        assert_eq!(
            auto_template(&AutoTemplateSpec::default()),
            config::AutoTemplate::default()
        );
        assert_eq!(forwarding(&parse(json!({}))), config::Forwarding::default());
        assert_eq!(
            forwarding(&ForwardingSpec::default()),
            config::Forwarding::default()
        );
        assert_eq!(
            load_balancing(LoadBalancingPolicy::default()),
            config::LoadBalancing::default()
        );
        assert_eq!(pagination(&parse(json!({}))), config::Pagination::default());
    }
}
