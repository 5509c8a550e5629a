//! The loaded configuration in the form requests use it, swapped atomically on reload.
//!
//! A request takes the current [`Snapshot`] when it starts and keeps it to the end, so a
//! reload never changes the rules under a request in flight, and no lock is taken on the
//! request path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::balancer::Balancer;
use super::handles::RouteSeries;
use super::pagination::{PaginationFamilies, RoutePagination};
use crate::config::{ConfigError, ProxyConfig, split_host_port};
use crate::route::{InferredRoutes, OTHER_ROUTE, RouteId, RouteTable, UNMATCHED_ROUTE};

/// The state shared by the proxy service, the admin listener and the control loop.
pub type SharedState = Arc<ArcSwap<Snapshot>>;

/// One loaded config, compiled.
#[derive(Debug)]
pub struct Snapshot {
    /// The config as loaded.
    pub config: ProxyConfig,
    /// The compiled routes.
    pub routes: RouteTable,
    /// The pagination of each route, by [`RouteId`]: `None` for routes without.
    pagination: Box<[Option<RoutePagination>]>,
    /// The handles of each route's series, by [`RouteId`].
    series: Box<[Arc<RouteSeries>]>,
    /// The upstream endpoints.
    pub balancer: Arc<Balancer>,
    /// Templates inferred for unmatched requests, with their series' handles.
    pub inferred: Arc<InferredRoutes<RouteSeries>>,
    /// The handles of unmatched requests when inference is off (route `_unmatched`).
    pub unmatched: Arc<RouteSeries>,
    /// The port of `listen` when there are additional listeners (whose requests go to the
    /// port they came in on); `None` without them, so requests look nothing up.
    pub listen_port: Option<u16>,
}

impl Snapshot {
    /// Compiles a validated config; routes with pagination record on `families`. The
    /// upstream state (ejections, resolved addresses) and inferred templates of `previous`
    /// are kept when the settings they depend on did not change, so a reload that only
    /// adds a route forgets nothing; so are the series handles of each route it still has
    /// (same label, same pagination or none), already resolved.
    pub fn build(
        config: ProxyConfig,
        previous: Option<&Snapshot>,
        families: &PaginationFamilies,
    ) -> Result<Self, ConfigError> {
        let routes = config.route_table()?;
        let pagination: Box<[Option<RoutePagination>]> = config
            .routes
            .iter()
            .enumerate()
            .map(|(id, route)| {
                let params = route.pagination_params(id)?;
                Ok(params.map(|p| RoutePagination::new(routes.label(id).clone(), p, families)))
            })
            .collect::<Result<_, ConfigError>>()?;
        let balancer = match previous {
            Some(p) if p.config.upstream == config.upstream => p.balancer.clone(),
            _ => {
                let b = Balancer::new(
                    config.upstream.load_balancing,
                    config.upstream.ejection_base,
                    config.upstream.ejection_max,
                    config.upstream.max_ejection_percent,
                );
                b.set_addresses(literal_addresses(&config.upstream.endpoints));
                if config
                    .upstream
                    .endpoints
                    .iter()
                    .all(|e| e.parse::<SocketAddr>().is_ok())
                {
                    // Nothing to look up: the endpoints are known.
                    b.mark_looked_up();
                }
                Arc::new(b)
            }
        };
        let series = route_series(&routes, &pagination, previous);
        let inferred = match previous {
            Some(p)
                if p.config.routes == config.routes
                    && p.config.auto_template == config.auto_template =>
            {
                p.inferred.clone()
            }
            _ => Arc::new(InferredRoutes::with_other(
                config.auto_template.max_routes,
                previous.map_or_else(
                    || Arc::new(RouteSeries::new(Arc::from(OTHER_ROUTE), false)),
                    |p| p.inferred.other().clone(),
                ),
            )),
        };
        let unmatched = previous.map_or_else(
            || Arc::new(RouteSeries::new(Arc::from(UNMATCHED_ROUTE), false)),
            |p| p.unmatched.clone(),
        );
        let listen_port = if config.additional_listeners.is_empty() {
            None
        } else {
            config.listen.parse::<SocketAddr>().ok().map(|a| a.port())
        };
        Ok(Snapshot {
            listen_port,
            config,
            routes,
            pagination,
            series,
            balancer,
            inferred,
            unmatched,
        })
    }

    /// The pagination of route `id`, when it has one.
    pub fn pagination(&self, id: RouteId) -> Option<&RoutePagination> {
        self.pagination.get(id).and_then(Option::as_ref)
    }

    /// The handles of route `id`'s series.
    pub fn series(&self, id: RouteId) -> &Arc<RouteSeries> {
        &self.series[id]
    }
}

/// The handles of every route: those of `previous` for a route of the same label and
/// pagination (or none), new ones for the others.
fn route_series(
    routes: &RouteTable,
    pagination: &[Option<RoutePagination>],
    previous: Option<&Snapshot>,
) -> Box<[Arc<RouteSeries>]> {
    let kept: HashMap<(&str, bool), &Arc<RouteSeries>> = previous
        .map(|p| &p.series[..])
        .unwrap_or_default()
        .iter()
        .map(|s| ((&**s.label(), s.paginated()), s))
        .collect();
    (0..routes.len())
        .map(|id| {
            let label = routes.label(id);
            let paginated = pagination[id].is_some();
            kept.get(&(&**label, paginated)).map_or_else(
                || Arc::new(RouteSeries::new(label.clone(), paginated)),
                |s| Arc::clone(s),
            )
        })
        .collect()
}

/// The endpoints given as IP literals: usable at once, without a DNS lookup.
pub fn literal_addresses(endpoints: &[String]) -> Vec<SocketAddr> {
    endpoints.iter().filter_map(|e| e.parse().ok()).collect()
}

/// What DNS answered for one hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name's addresses.
    Found(Vec<std::net::IpAddr>),
    /// The name has no address: NXDOMAIN or an empty answer. This is what a headless
    /// Service answers while none of its pods is ready (scaled to 0, or all failing
    /// readiness): a real answer, so the proxy drops the old addresses and answers 503.
    NoAddress,
    /// No answer (a timeout, SERVFAIL, no resolver): the addresses in use are kept.
    Failed(String),
}

impl Lookup {
    /// Classifies a `getaddrinfo` failure.
    pub fn from_error(kind: dns_lookup::LookupErrorKind, message: String) -> Self {
        use dns_lookup::LookupErrorKind::{NoData, NoName};
        match kind {
            NoName | NoData => Lookup::NoAddress,
            _ => Lookup::Failed(message),
        }
    }
}

/// Looks a hostname up with the system resolver (search domains and `ndots` of
/// `/etc/resolv.conf` included, as in a pod), off the async threads.
pub async fn lookup(host: &str) -> Lookup {
    let host = host.to_string();
    let answer = tokio::task::spawn_blocking(move || {
        dns_lookup::lookup_host(&host)
            .map(|ips| ips.collect::<Vec<_>>())
            .map_err(|e| Lookup::from_error(e.kind(), std::io::Error::from(e).to_string()))
    })
    .await;
    match answer {
        Ok(Ok(ips)) => Lookup::Found(ips),
        Ok(Err(lookup)) => lookup,
        Err(join) => Lookup::Failed(join.to_string()),
    }
}

/// What [`resolve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The addresses; `None` when no endpoint got an answer at all, so the caller can keep
    /// the addresses it had rather than drop them on a DNS hiccup.
    pub addrs: Option<Vec<SocketAddr>>,
    /// How many lookups got no answer.
    pub failed: u64,
}

/// Resolves every endpoint: IP literals as they are, hostnames through DNS. A hostname
/// that has no address contributes none; one whose lookup failed is reported, counted and
/// left out.
pub async fn resolve(endpoints: &[String]) -> Resolved {
    let mut addrs = Vec::new();
    let mut failed = 0;
    let mut answered = endpoints.is_empty();
    for endpoint in endpoints {
        if let Ok(addr) = endpoint.parse::<SocketAddr>() {
            addrs.push(addr);
            answered = true;
            continue;
        }
        let Ok((host, port)) = split_host_port(endpoint) else {
            continue;
        };
        match lookup(host).await {
            Lookup::Found(ips) => {
                addrs.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
                answered = true;
            }
            Lookup::NoAddress => answered = true,
            Lookup::Failed(error) => {
                failed += 1;
                tracing::warn!(%endpoint, %error, "cannot resolve upstream endpoint {endpoint}: {error}; keeping its last addresses");
            }
        }
    }
    Resolved {
        addrs: answered.then_some(addrs),
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoints: &[&str], routes: &[&str]) -> ProxyConfig {
        ProxyConfig::new(
            endpoints.iter().map(|s| s.to_string()).collect(),
            routes
                .iter()
                .map(|p| crate::config::Route {
                    path: p.to_string(),
                    methods: vec![],
                    name: None,
                    latency_objective: None,
                    pagination: p.ends_with("/items").then(Default::default),
                })
                .collect(),
        )
    }

    fn families() -> PaginationFamilies {
        PaginationFamilies::register(&prometheus::Registry::new(), &[1.0]).expect("families")
    }

    #[test]
    fn routes_with_pagination_get_theirs() {
        let s = Snapshot::build(
            config(&["127.0.0.1:1"], &["/a", "/items"]),
            None,
            &families(),
        )
        .expect("valid");
        assert!(s.pagination(0).is_none());
        assert!(s.pagination(1).is_some());
        assert!(s.pagination(2).is_none(), "no such route");
    }

    #[test]
    fn reload_keeps_upstream_state_when_upstream_is_unchanged() {
        let f = families();
        let first = Snapshot::build(config(&["127.0.0.1:1"], &["/a"]), None, &f).expect("valid");
        let second = Snapshot::build(config(&["127.0.0.1:1"], &["/a", "/b"]), Some(&first), &f)
            .expect("valid");
        assert!(Arc::ptr_eq(&first.balancer, &second.balancer));
        assert!(
            !Arc::ptr_eq(&first.inferred, &second.inferred),
            "routes changed: inference starts over"
        );
        let third = Snapshot::build(config(&["127.0.0.1:2"], &["/a", "/b"]), Some(&second), &f)
            .expect("valid");
        assert!(!Arc::ptr_eq(&second.balancer, &third.balancer));
        assert!(Arc::ptr_eq(&second.inferred, &third.inferred));
    }

    #[tokio::test]
    async fn resolves_literals_and_hostnames() {
        let addrs = resolve(&["127.0.0.1:80".into(), "localhost:81".into()])
            .await
            .addrs
            .expect("resolved");
        assert!(addrs.contains(&"127.0.0.1:80".parse().expect("addr")));
        assert!(addrs.iter().any(|a| a.port() == 81 && a.ip().is_loopback()));
        // A name that does not exist is an answer: no address, not "keep the old ones".
        assert_eq!(
            resolve(&["no-such-host.invalid:80".into()]).await,
            Resolved {
                addrs: Some(Vec::new()),
                failed: 0
            }
        );
    }

    #[test]
    fn only_a_missing_name_empties_the_endpoints() {
        use dns_lookup::LookupErrorKind::*;
        assert_eq!(Lookup::from_error(NoName, "nx".into()), Lookup::NoAddress);
        assert_eq!(
            Lookup::from_error(NoData, "nodata".into()),
            Lookup::NoAddress
        );
        for transient in [Again, Fail, System, IO] {
            assert_eq!(
                Lookup::from_error(transient, "timeout".into()),
                Lookup::Failed("timeout".into())
            );
        }
    }
}
