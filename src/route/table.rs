//! The precompiled route matcher: a segment trie built once per config.
//!
//! Matching walks the request path one segment at a time and, at each node, tries the
//! literal child first, then the `{param}` child, then a wildcard ending at that node,
//! backtracking when a branch leads nowhere. So the most specific route wins whatever the
//! order of the config (literal over parameter over wildcard, at the first segment where
//! two routes differ, which also makes the longer of two prefixes win), and the cost
//! depends on the depth of the path, never on the number of routes.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use thiserror::Error;

use super::{Segment, TemplateError, next_segment, normalize_method, parse_template};

/// Index of a route in the order it was declared.
pub type RouteId = usize;

/// A route to compile: its template and the methods it is limited to (empty: any).
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec<'a> {
    pub path: &'a str,
    pub methods: &'a [String],
}

/// Why a set of routes could not be compiled; `index` is the route's position in the list.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TableError {
    #[error("routes[{index}].path {path:?}: {source}")]
    Template {
        index: usize,
        path: String,
        #[source]
        source: TemplateError,
    },
    #[error("routes[{index}].methods: {source}")]
    Method {
        index: usize,
        #[source]
        source: TemplateError,
    },
    #[error("routes[{index}] ({path:?}) matches the same requests as routes[{other}]")]
    Duplicate {
        index: usize,
        other: usize,
        path: String,
    },
}

/// A node's literal children by segment. Their keys come from the config, never from
/// requests (which only look up), so the fast hash needs no resistance to collisions
/// chosen by a client; SipHash was a tenth of a request's routing.
type Literals = HashMap<Box<str>, usize, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Node {
    literals: Literals,
    param: Option<usize>,
    exact: Handlers,
    rest: Handlers,
}

/// The routes ending at a node: method-specific ones first, then one for any method.
#[derive(Debug, Default)]
struct Handlers {
    by_method: Vec<(Method, RouteId)>,
    any: Option<RouteId>,
}

impl Handlers {
    fn select(&self, method: &Method) -> Option<RouteId> {
        self.by_method
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, id)| *id)
            .or(self.any)
    }

    fn add(&mut self, methods: &[Method], id: RouteId) -> Result<(), RouteId> {
        if methods.is_empty() {
            return match self.any.replace(id) {
                Some(other) => Err(other),
                None => Ok(()),
            };
        }
        for method in methods {
            if let Some((_, other)) = self.by_method.iter().find(|(m, _)| m == method) {
                return Err(*other);
            }
            self.by_method.push((method.clone(), id));
        }
        Ok(())
    }
}

/// Compiled routes, with each route's label (its template as declared).
#[derive(Debug)]
pub struct RouteTable {
    nodes: Vec<Node>,
    labels: Vec<Arc<str>>,
}

impl RouteTable {
    /// Compiles routes; the first invalid or duplicate route is reported with its index.
    pub fn build<'a>(routes: impl IntoIterator<Item = RouteSpec<'a>>) -> Result<Self, TableError> {
        let mut table = RouteTable {
            nodes: vec![Node::default()],
            labels: Vec::new(),
        };
        for (index, route) in routes.into_iter().enumerate() {
            // The label is the template trimmed, so the template matched is too: else
            // `"/users "` would be labelled `/users` yet match only a path `/users `.
            let template = route.path.trim();
            let segments = parse_template(template).map_err(|source| TableError::Template {
                index,
                path: route.path.to_string(),
                source,
            })?;
            let methods = route
                .methods
                .iter()
                .map(|m| {
                    let name = normalize_method(m)
                        .map_err(|source| TableError::Method { index, source })?;
                    Method::from_bytes(name.as_bytes()).map_err(|_| TableError::Method {
                        index,
                        source: TemplateError::BadMethod(m.clone()),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            table
                .insert(&segments, &methods, index)
                .map_err(|other| TableError::Duplicate {
                    index,
                    other,
                    path: route.path.to_string(),
                })?;
            table.labels.push(Arc::from(template));
        }
        Ok(table)
    }

    fn insert(
        &mut self,
        segments: &[Segment],
        methods: &[Method],
        id: RouteId,
    ) -> Result<(), RouteId> {
        let mut node = 0;
        for segment in segments {
            node = match segment {
                Segment::Literal(lit) => match self.nodes[node].literals.get(lit.as_str()) {
                    Some(&child) => child,
                    None => {
                        let child = self.push_node();
                        self.nodes[node].literals.insert(lit.as_str().into(), child);
                        child
                    }
                },
                Segment::Param => match self.nodes[node].param {
                    Some(child) => child,
                    None => {
                        let child = self.push_node();
                        self.nodes[node].param = Some(child);
                        child
                    }
                },
                Segment::Rest => return self.nodes[node].rest.add(methods, id),
            };
        }
        self.nodes[node].exact.add(methods, id)
    }

    fn push_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    /// The most specific route matching a request, if any. `path` excludes the query.
    pub fn find(&self, method: &Method, path: &str) -> Option<RouteId> {
        self.walk(0, method, path)
    }

    fn walk(&self, node: usize, method: &Method, path: &str) -> Option<RouteId> {
        let n = &self.nodes[node];
        let Some((segment, rest)) = next_segment(path) else {
            return n.exact.select(method).or_else(|| n.rest.select(method));
        };
        n.literals
            .get(segment)
            .and_then(|&child| self.walk(child, method, rest))
            .or_else(|| n.param.and_then(|child| self.walk(child, method, rest)))
            .or_else(|| n.rest.select(method))
    }

    /// The `http_route` label of a route.
    pub fn label(&self, id: RouteId) -> &Arc<str> {
        &self.labels[id]
    }

    /// How many routes were compiled.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether no route was declared.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::MAX_TEMPLATE_SEGMENTS;

    fn table(routes: &[(&str, &[&str])]) -> RouteTable {
        let owned: Vec<(String, Vec<String>)> = routes
            .iter()
            .map(|(p, m)| (p.to_string(), m.iter().map(|s| s.to_string()).collect()))
            .collect();
        RouteTable::build(owned.iter().map(|(p, m)| RouteSpec {
            path: p,
            methods: m,
        }))
        .expect("valid routes")
    }

    fn find<'t>(t: &'t RouteTable, method: &str, path: &str) -> Option<&'t str> {
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        t.find(&m, path).map(|id| &**t.label(id))
    }

    #[test]
    fn literal_beats_parameter_beats_wildcard_in_any_order() {
        let routes: [(&str, &[&str]); 4] = [
            ("/users/*", &[]),
            ("/users/{id}", &[]),
            ("/users/me", &[]),
            ("/users/{id}/posts", &[]),
        ];
        for rotation in 0..routes.len() {
            let mut r = routes.to_vec();
            r.rotate_left(rotation);
            let t = table(&r);
            assert_eq!(find(&t, "GET", "/users/me"), Some("/users/me"));
            assert_eq!(find(&t, "GET", "/users/42"), Some("/users/{id}"));
            assert_eq!(
                find(&t, "GET", "/users/42/posts"),
                Some("/users/{id}/posts")
            );
            assert_eq!(find(&t, "GET", "/users/42/likes"), Some("/users/*"));
            assert_eq!(find(&t, "GET", "/users"), Some("/users/*"));
        }
    }

    #[test]
    fn longer_prefix_wins_and_backtracks_from_dead_ends() {
        let t = table(&[
            ("/a/*", &[]),
            ("/a/b/*", &[]),
            ("/a/b/c/d", &[]),
            ("/{x}/b/c/e", &[]),
        ]);
        assert_eq!(find(&t, "GET", "/a/b/c"), Some("/a/b/*"));
        assert_eq!(find(&t, "GET", "/a/x"), Some("/a/*"));
        assert_eq!(find(&t, "GET", "/zzz"), None);
        // A literal prefix that ends in a wildcard still wins over a parameter...
        assert_eq!(find(&t, "GET", "/a/b/c/e"), Some("/a/b/*"));
        // ...but a literal branch that leads nowhere falls back to the parameter branch.
        let t = table(&[("/a/b/c/d", &[]), ("/{x}/b/c/e", &[])]);
        assert_eq!(find(&t, "GET", "/a/b/c/e"), Some("/{x}/b/c/e"));
    }

    #[test]
    fn methods_select_and_fall_back() {
        let t = table(&[
            ("/users/{id}", &["GET"]),
            ("/users/{id}", &["delete"]),
            ("/users/*", &[]),
        ]);
        assert_eq!(t.find(&Method::GET, "/users/1"), Some(0));
        assert_eq!(t.find(&Method::DELETE, "/users/1"), Some(1));
        // No POST on /users/{id}: the wildcard route takes it.
        assert_eq!(t.find(&Method::POST, "/users/1"), Some(2));
    }

    #[test]
    fn query_free_paths_and_slashes() {
        let t = table(&[("/", &[]), ("/api/trips", &[])]);
        assert_eq!(find(&t, "GET", "/"), Some("/"));
        assert_eq!(find(&t, "GET", "/api/trips/"), Some("/api/trips"));
        assert_eq!(find(&t, "GET", "//api//trips"), Some("/api/trips"));
    }

    #[test]
    fn duplicates_and_bad_templates_name_the_route() {
        let routes = [
            ("/u/{id}".to_string(), vec![]),
            ("/u/{uid}".to_string(), vec![]),
        ];
        let err = RouteTable::build(routes.iter().map(|(p, m)| RouteSpec {
            path: p,
            methods: m,
        }))
        .unwrap_err();
        assert_eq!(
            err,
            TableError::Duplicate {
                index: 1,
                other: 0,
                path: "/u/{uid}".into()
            }
        );
        assert!(err.to_string().starts_with("routes[1]"));

        let routes = [("/ok".to_string(), vec![]), ("bad".to_string(), vec![])];
        let err = RouteTable::build(routes.iter().map(|(p, m)| RouteSpec {
            path: p,
            methods: m,
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "routes[1].path \"bad\": must start with '/'"
        );

        let routes = [("/ok".to_string(), vec!["G T".to_string()])];
        let err = RouteTable::build(routes.iter().map(|(p, m)| RouteSpec {
            path: p,
            methods: m,
        }))
        .unwrap_err();
        assert!(err.to_string().starts_with("routes[0].methods"));
    }

    #[test]
    fn surrounding_whitespace_is_trimmed_from_the_template_as_from_the_label() {
        // Found by route::props: `"/ "` was labelled `/` but matched only the path `/ `.
        let t = table(&[(" /users/{id}\n", &[]), ("/ ", &[])]);
        assert_eq!(find(&t, "GET", "/users/1"), Some("/users/{id}"));
        assert_eq!(find(&t, "GET", "/"), Some("/"));
    }

    #[test]
    fn deep_templates_are_refused_before_they_overflow_the_stack() {
        let deepest = "/a".repeat(MAX_TEMPLATE_SEGMENTS);
        let t = table(&[(deepest.as_str(), &[])]);
        assert_eq!(find(&t, "GET", &deepest), Some(deepest.as_str()));
        assert_eq!(find(&t, "GET", &format!("{deepest}/a")), None);
        // 10,000 segments and a path as deep overflowed the matcher's stack.
        let deeper = "/a".repeat(10_000);
        let err = RouteTable::build([RouteSpec {
            path: &deeper,
            methods: &[],
        }])
        .expect_err("too deep");
        assert!(matches!(
            err,
            TableError::Template {
                index: 0,
                source: TemplateError::TooDeep,
                ..
            }
        ));
        assert_eq!(
            parse_template(&format!("{deepest}/a")),
            Err(TemplateError::TooDeep)
        );
    }

    #[test]
    fn deep_paths_stop_at_the_trie_depth() {
        let t = table(&[("/a/{x}", &[])]);
        let deep = "/a".repeat(100_000);
        assert_eq!(find(&t, "GET", &deep), None);
    }
}
