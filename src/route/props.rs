//! Property tests of the template parser, the route table and route inference.
//!
//! Each property runs the number of cases given to [`cases`], or `PROPTEST_CASES` when it
//! is set (`PROPTEST_CASES=20000 cargo test --lib props` for a long run). A failing case
//! is written to `proptest-regressions/` and replayed first on every later run.

use std::collections::HashSet;
use std::sync::Arc;

use http::Method;
use proptest::prelude::*;
use proptest::sample::Index;

use super::infer::{MAX_INFERRED_SEGMENTS, infer_template, is_id_like};
use super::{
    Inferred, InferredRoutes, MAX_TEMPLATE_SEGMENTS, OTHER_ROUTE, RouteSpec, RouteTable, Segment,
    TableError, TemplateError, learns_from, parse_template,
};

/// The proptest config of a property: `default` cases unless `PROPTEST_CASES` says otherwise.
pub(crate) fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

// ---------------------------------------------------------------------------------------
// Strategies.

/// A literal segment: words that collide often, hostile ones (dot segments,
/// percent-encodings of valid and invalid UTF-8, a lone `%`), random text, a long one.
/// Never whitespace at its ends: a template is trimmed (see `surrounding_whitespace_...`).
fn literal() -> impl Strategy<Value = String> {
    const WORDS: &[&str] = &["a", "b", "users", "me", "v1", "42"];
    const HOSTILE: &[&str] = &[
        "..", ".", "%2F", "%2f", "%FF", "%C3%A9", "%C3", "%", "%zz", "é", "A", "a%20b", "?x", "#f",
        ";p=1", "~",
    ];
    prop_oneof![
        6 => prop::sample::select(WORDS).prop_map(String::from),
        2 => prop::sample::select(HOSTILE).prop_map(String::from),
        1 => "[^/{}*\\s]{1,10}",
        1 => "[^/{}*\\s][^/{}*]{0,8}[^/{}*\\s]",
        1 => (200usize..400).prop_map(|n| "x".repeat(n)),
    ]
}

fn param_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&["id", "x", "uid"][..]).prop_map(String::from),
        1 => "[A-Za-z0-9_]{1,8}",
    ]
}

/// One part of a valid template, with the name it is written with.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Param(String),
    /// `*` when the name is `None`, else `{name...}`.
    Rest(Option<String>),
}

impl Part {
    fn text(&self) -> String {
        match self {
            Part::Lit(l) => l.clone(),
            Part::Param(name) => format!("{{{name}}}"),
            Part::Rest(None) => "*".into(),
            Part::Rest(Some(name)) => format!("{{{name}...}}"),
        }
    }
}

/// The parts of a valid template: literals and parameters, then maybe a wildcard.
fn parts() -> impl Strategy<Value = Vec<Part>> {
    let middle = prop_oneof![
        3 => literal().prop_map(Part::Lit),
        2 => param_name().prop_map(Part::Param),
    ];
    let rest = prop::option::weighted(0.3, prop::option::of(param_name()).prop_map(Part::Rest));
    (prop::collection::vec(middle, 0..6), rest).prop_map(|(mut parts, rest)| {
        parts.extend(rest);
        parts
    })
}

/// How a template or path is written out: its separators (`/` or `//`), a trailing slash.
#[derive(Debug, Clone)]
struct Layout {
    double: Vec<bool>,
    trailing: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop::collection::vec(prop::bool::weighted(0.1), 8),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(double, trailing)| Layout { double, trailing })
}

impl Layout {
    fn write<S: AsRef<str>>(&self, segments: &[S]) -> String {
        let mut out = String::new();
        for (i, s) in segments.iter().enumerate() {
            out.push_str(if self.double.get(i).copied().unwrap_or(false) {
                "//"
            } else {
                "/"
            });
            out.push_str(s.as_ref());
        }
        if out.is_empty() || self.trailing {
            out.push('/');
        }
        out
    }
}

fn template_text(parts: &[Part], layout: &Layout) -> String {
    layout.write(&parts.iter().map(Part::text).collect::<Vec<_>>())
}

/// A path segment: a literal of the strategy above, an ID, text looking like template
/// syntax, or random text.
fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => literal(),
        2 => any::<u32>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(&["{id}", "*", "{x...}", "%00", "%E2%82", "\u{0}"][..])
            .prop_map(String::from),
        1 => "[^/]{1,12}",
    ]
}

// ---------------------------------------------------------------------------------------
// The slow reference matcher.

/// A declared route as the reference sees it.
#[derive(Debug, Clone)]
struct RefRoute {
    parts: Vec<Part>,
    /// The methods as declared (any case); empty means any.
    methods: Vec<String>,
    layout: Layout,
}

impl RefRoute {
    fn template(&self) -> String {
        template_text(&self.parts, &self.layout)
    }

    fn upper_methods(&self) -> Vec<String> {
        self.methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect()
    }

    fn allows(&self, method: &str) -> bool {
        self.methods.is_empty() || self.upper_methods().iter().any(|m| m == method)
    }

    /// What the route matches, parameter names left out.
    fn shape(&self) -> Vec<Option<Option<&str>>> {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(l) => Some(Some(l.as_str())),
                Part::Param(_) => Some(None),
                Part::Rest(_) => None,
            })
            .collect()
    }
}

/// The path's segments by the documented rule: split on `/`, empty segments ignored.
fn segments_of(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Whether a template matches a path, segment by segment.
fn ref_matches(parts: &[Part], path: &[&str]) -> bool {
    for (i, part) in parts.iter().enumerate() {
        match part {
            Part::Rest(_) => return true,
            Part::Lit(l) if path.get(i) != Some(&l.as_str()) => return false,
            Part::Param(_) if i >= path.len() => return false,
            _ => {}
        }
    }
    parts.len() == path.len()
}

/// The documented order of specificity, lower first: at the first segment where two
/// matching templates differ, a literal beats a parameter beats a wildcard, and a template
/// that ends with the path beats a wildcard there (so the longer of two prefixes wins).
/// Two templates matching one path never differ by a literal against the end.
fn specificity(parts: &[Part]) -> Vec<u8> {
    const LITERAL: u8 = 0;
    const PARAM: u8 = 1;
    const END: u8 = 2;
    const REST: u8 = 3;
    let mut key: Vec<u8> = parts
        .iter()
        .map(|p| match p {
            Part::Lit(_) => LITERAL,
            Part::Param(_) => PARAM,
            Part::Rest(_) => REST,
        })
        .collect();
    if !matches!(parts.last(), Some(Part::Rest(_))) {
        key.push(END);
    }
    key
}

/// Try every route, keep those that match, pick the most specific; for one template, a
/// route limited to the method beats one for any method.
fn ref_find(routes: &[RefRoute], method: &str, path: &str) -> Option<usize> {
    let segments = segments_of(path);
    let key = |r: &RefRoute| (specificity(&r.parts), r.methods.is_empty());
    let matching: Vec<usize> = (0..routes.len())
        .filter(|&i| ref_matches(&routes[i].parts, &segments) && routes[i].allows(method))
        .collect();
    let best = matching.iter().copied().min_by_key(|&i| key(&routes[i]))?;
    let ties = matching
        .iter()
        .filter(|&&i| key(&routes[i]) == key(&routes[best]))
        .count();
    assert_eq!(ties, 1, "the reference's routes overlap: {routes:?}");
    Some(best)
}

/// The route that `routes[i]` conflicts with, by the documented rule (same template but
/// for parameter names, and both for any method or sharing a method), or `None`. Earlier
/// routes are assumed conflict-free; a method listed twice conflicts with its own route.
fn ref_conflict(routes: &[RefRoute], i: usize) -> Option<usize> {
    let route = &routes[i];
    let same: Vec<usize> = (0..i)
        .filter(|&j| routes[j].shape() == route.shape())
        .collect();
    if route.methods.is_empty() {
        return same.into_iter().find(|&j| routes[j].methods.is_empty());
    }
    let mine = route.upper_methods();
    for (k, m) in mine.iter().enumerate() {
        if let Some(&j) = same
            .iter()
            .find(|&&j| routes[j].upper_methods().contains(m))
        {
            return Some(j);
        }
        if mine[..k].contains(m) {
            return Some(i);
        }
    }
    None
}

fn build(routes: &[RefRoute]) -> Result<RouteTable, TableError> {
    let templates: Vec<String> = routes.iter().map(RefRoute::template).collect();
    RouteTable::build(routes.iter().zip(&templates).map(|(r, path)| RouteSpec {
        path,
        methods: &r.methods,
    }))
}

fn ref_route(methods: impl Strategy<Value = Vec<String>>) -> impl Strategy<Value = RefRoute> {
    (parts(), methods, layout()).prop_map(|(parts, methods, layout)| RefRoute {
        parts,
        methods,
        layout,
    })
}

/// Methods without repeats, in any case.
fn distinct_methods() -> impl Strategy<Value = Vec<String>> {
    prop::sample::subsequence(&["GET", "post", "DELETE"][..], 0..=2)
        .prop_map(|ms| ms.into_iter().map(String::from).collect())
}

/// Routes without conflicts: each one conflicting with an earlier one is dropped.
fn route_set() -> impl Strategy<Value = Vec<RefRoute>> {
    prop::collection::vec(ref_route(distinct_methods()), 0..10).prop_map(|mut routes| {
        let mut i = 0;
        while i < routes.len() {
            if ref_conflict(&routes, i).is_some() {
                routes.remove(i);
            } else {
                i += 1;
            }
        }
        routes
    })
}

/// A request path: one written from a route's template (parameters and wildcards filled
/// with random segments), maybe with one segment replaced or added (a near miss), or
/// random segments.
#[derive(Debug, Clone)]
struct PathSeed {
    from_route: Option<Index>,
    fills: Vec<String>,
    rest_len: usize,
    near_miss: Option<(Index, Option<String>)>,
    random: Vec<String>,
    layout: Layout,
    method: &'static str,
}

fn path_seed() -> impl Strategy<Value = PathSeed> {
    (
        prop::option::weighted(0.8, any::<Index>()),
        prop::collection::vec(path_segment(), 8),
        0usize..4,
        prop::option::weighted(0.2, (any::<Index>(), prop::option::of(path_segment()))),
        prop::collection::vec(path_segment(), 0..6),
        layout(),
        prop::sample::select(&["GET", "POST", "DELETE", "PURGE"][..]),
    )
        .prop_map(
            |(from_route, fills, rest_len, near_miss, random, layout, method)| PathSeed {
                from_route,
                fills,
                rest_len,
                near_miss,
                random,
                layout,
                method,
            },
        )
}

/// The segments of a path written from a template; parameters and wildcards take `fills`.
fn instantiate(parts: &[Part], fills: &[String], rest_len: usize) -> Vec<String> {
    let mut fills = fills.iter().cycle();
    let mut out = Vec::new();
    for part in parts {
        match part {
            Part::Lit(l) => out.push(l.clone()),
            Part::Param(_) => out.extend(fills.next().cloned()),
            Part::Rest(_) => out.extend(fills.by_ref().take(rest_len).cloned()),
        }
    }
    out
}

impl PathSeed {
    /// The path, and the route it was written from (unchanged by a near miss).
    fn path(&self, routes: &[RefRoute]) -> (String, Option<usize>) {
        let source = self
            .from_route
            .filter(|_| !routes.is_empty())
            .map(|ix| ix.index(routes.len()));
        let Some(k) = source else {
            return (self.layout.write(&self.random), None);
        };
        let mut segments = instantiate(&routes[k].parts, &self.fills, self.rest_len);
        let exact = match &self.near_miss {
            None => true,
            Some((ix, replacement)) => {
                let at = ix.index(segments.len() + 1);
                match replacement {
                    Some(s) if at < segments.len() => segments[at] = s.clone(),
                    Some(s) => segments.push(s.clone()),
                    None if at < segments.len() => {
                        segments.remove(at);
                    }
                    None => {}
                }
                false
            }
        };
        (self.layout.write(&segments), exact.then_some(k))
    }
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("a method token")
}

/// Writes parsed segments back as a template.
fn print(segments: &[Segment]) -> String {
    let texts: Vec<&str> = segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => l.as_str(),
            Segment::Param => "{p}",
            Segment::Rest => "*",
        })
        .collect();
    format!("/{}", texts.join("/"))
}

// ---------------------------------------------------------------------------------------
// The parser.

/// A piece of a raw template: valid parts, empty segments, and segments the parser must
/// reject, each with the error it gives.
#[derive(Debug, Clone)]
enum Raw {
    Valid(Part),
    Empty,
    Bad(String, TemplateError),
}

fn raw_piece() -> impl Strategy<Value = Raw> {
    let bad_name =
        prop::sample::select(&["{}", "{...}", "{a-b}", "{a.b}", "{a}}", "{{a}", "{ a}"][..])
            .prop_map(|s| Raw::Bad(s.into(), TemplateError::BadParameterName(s.into())));
    let partial = prop::sample::select(&["a{b}", "{a}.json", "}", "{a", "a*", "**", "x}y"][..])
        .prop_map(|s| Raw::Bad(s.into(), TemplateError::PartialParameter(s.into())));
    prop_oneof![
        3 => literal().prop_map(|l| Raw::Valid(Part::Lit(l))),
        2 => param_name().prop_map(|n| Raw::Valid(Part::Param(n))),
        1 => prop::option::of(param_name()).prop_map(|n| Raw::Valid(Part::Rest(n))),
        1 => Just(Raw::Empty),
        1 => bad_name,
        1 => partial,
    ]
}

/// What the parser must say of `/`-joined pieces: the first bad segment's error, a
/// wildcard not last, or the segments.
fn ref_parse(pieces: &[Raw]) -> Result<Vec<Segment>, TemplateError> {
    let present: Vec<&Raw> = pieces.iter().filter(|p| !matches!(p, Raw::Empty)).collect();
    let mut out = Vec::new();
    for (i, piece) in present.iter().enumerate() {
        match piece {
            Raw::Bad(_, e) => return Err(e.clone()),
            Raw::Valid(Part::Rest(_)) if i + 1 < present.len() => {
                return Err(TemplateError::WildcardNotLast);
            }
            Raw::Valid(Part::Rest(_)) => out.push(Segment::Rest),
            Raw::Valid(Part::Param(_)) => out.push(Segment::Param),
            Raw::Valid(Part::Lit(l)) => out.push(Segment::Literal(l.clone())),
            Raw::Empty => {}
        }
    }
    Ok(out)
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn parser_never_panics_on_any_string(s in any::<String>()) {
        let _ = parse_template(&s);
        let _ = RouteTable::build([RouteSpec { path: &s, methods: &[] }]);
    }

    #[test]
    fn parser_never_panics_on_template_like_strings(s in "[/{}*._a-z0-9 %]{0,40}") {
        if let Ok(segments) = parse_template(&s) {
            prop_assert_eq!(parse_template(&print(&segments)), Ok(segments));
        }
    }

    #[test]
    fn parser_agrees_with_the_grammar(
        pieces in prop::collection::vec(raw_piece(), 0..8),
        slash in prop::bool::weighted(0.9),
        trailing in any::<bool>(),
    ) {
        let mut text: String = pieces
            .iter()
            .map(|p| match p {
                Raw::Valid(part) => format!("/{}", part.text()),
                Raw::Empty => "/".into(),
                Raw::Bad(s, _) => format!("/{s}"),
            })
            .collect();
        if trailing || text.is_empty() {
            text.push('/');
        }
        if !slash {
            text = text.trim_start_matches('/').to_string();
        }
        let expected = if slash { ref_parse(&pieces) } else { Err(TemplateError::NoLeadingSlash) };
        let parsed = parse_template(&text);
        prop_assert_eq!(&parsed, &expected, "{:?}", text);
        // What parses prints back to a template that parses the same.
        if let Ok(segments) = parsed {
            prop_assert_eq!(parse_template(&print(&segments)), Ok(segments));
        }
    }

    #[test]
    fn templates_deeper_than_the_cap_are_refused(n in 0usize..300, param in any::<bool>()) {
        let segment = if param { "/{p}" } else { "/a" };
        let parsed = parse_template(&format!("{}/", segment.repeat(n)));
        prop_assert_eq!(parsed.is_ok(), n <= MAX_TEMPLATE_SEGMENTS);
        if n > MAX_TEMPLATE_SEGMENTS {
            prop_assert_eq!(parsed, Err(TemplateError::TooDeep));
        }
    }

    /// The label is the template trimmed, and the table matches what the label says.
    #[test]
    fn surrounding_whitespace_is_not_part_of_the_template(
        parts in parts(),
        before in prop::sample::select(&["", " ", "\t", "\n "][..]),
        after in prop::sample::select(&["", " ", "\t", "\r\n"][..]),
        fills in prop::collection::vec(path_segment(), 8),
    ) {
        let bare = template_text(&parts, &Layout { double: vec![], trailing: false });
        let text = format!("{before}{bare}{after}");
        let table = RouteTable::build([RouteSpec { path: &text, methods: &[] }])
            .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(&**table.label(0), bare.as_str());
        let path = Layout { double: vec![], trailing: false }.write(&instantiate(&parts, &fills, 1));
        prop_assert_eq!(table.find(&Method::GET, &path), Some(0), "{:?} on {:?}", text, path);
    }
}

// ---------------------------------------------------------------------------------------
// The matcher.

proptest! {
    #![proptest_config(cases(512))]

    /// The table finds what the reference finds, and a path written from a template is
    /// matched by that route or a more specific one.
    #[test]
    fn table_agrees_with_the_reference_matcher(
        routes in route_set(),
        seeds in prop::collection::vec(path_seed(), 1..8),
    ) {
        let table = build(&routes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(table.len(), routes.len());
        for (i, route) in routes.iter().enumerate() {
            let template = route.template();
            prop_assert_eq!(&**table.label(i), template.trim());
        }
        for seed in &seeds {
            let (path, source) = seed.path(&routes);
            let found = table.find(&method(seed.method), &path);
            let expected = ref_find(&routes, seed.method, &path);
            prop_assert_eq!(found, expected, "{} {:?}", seed.method, path);
            if let Some(k) = source {
                let r = &routes[k];
                prop_assert!(ref_matches(&r.parts, &segments_of(&path)));
                let m = r.upper_methods().first().cloned().unwrap_or_else(|| seed.method.into());
                let found = table.find(&method(&m), &path);
                let Some(id) = found else {
                    return Err(TestCaseError::fail(format!("{m} {path:?} matches {:?}", r.template())));
                };
                prop_assert!(
                    specificity(&routes[id].parts) <= specificity(&r.parts),
                    "{} {:?}: {:?} is less specific than {:?}",
                    m, path, routes[id].template(), r.template()
                );
            }
        }
    }

    /// A route set with a conflict is refused, naming the first route at fault and the one
    /// it conflicts with; one without is built.
    #[test]
    fn duplicates_are_refused_as_documented(
        routes in prop::collection::vec(
            ref_route(prop::collection::vec(
                prop::sample::select(&["GET", "get", "POST"][..]).prop_map(String::from),
                0..3,
            )),
            0..8,
        ),
    ) {
        let first = (0..routes.len()).find_map(|i| ref_conflict(&routes, i).map(|other| (i, other)));
        match (build(&routes), first) {
            (Ok(_), None) => {}
            (Err(TableError::Duplicate { index, other, path }), Some((i, j))) => {
                prop_assert_eq!((index, other), (i, j));
                prop_assert_eq!(path, routes[i].template());
            }
            (result, expected) => {
                return Err(TestCaseError::fail(format!("{:?} for {expected:?}", result.map(|t| t.len()))));
            }
        }
    }

    /// Random route sets (valid or not) and random paths: never a panic, and any route
    /// found matches the path by the reference.
    #[test]
    fn random_templates_and_paths_never_panic(
        templates in prop::collection::vec("[/{}*.a-c%]{0,12}", 0..8),
        paths in prop::collection::vec(any::<String>(), 1..4),
        deep in 0usize..200,
    ) {
        let specs = templates.iter().map(|path| RouteSpec { path, methods: &[] });
        let Ok(table) = RouteTable::build(specs) else { return Ok(()) };
        let deep_path = "/a".repeat(deep);
        for path in paths.iter().chain([&deep_path]) {
            if let Some(id) = table.find(&Method::GET, path) {
                let label = table.label(id);
                let segments = parse_template(label).expect("a built template parses");
                let parts: Vec<Part> = segments
                    .into_iter()
                    .map(|s| match s {
                        Segment::Literal(l) => Part::Lit(l),
                        Segment::Param => Part::Param("p".into()),
                        Segment::Rest => Part::Rest(None),
                    })
                    .collect();
                prop_assert!(ref_matches(&parts, &segments_of(path)), "{:?} {:?}", label, path);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inference.

/// A segment as requests have them: words, IDs of every kind inference knows, segments
/// around its length limits, hostile text.
fn request_segment() -> impl Strategy<Value = String> {
    const TOKEN: &[char] = &['a', 'Z', 'k', '0', '7', '9', '-', '_'];
    prop_oneof![
        4 => prop::sample::select(&["users", "orders", "v1", "api", "items", "me"][..])
            .prop_map(String::from),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<u128>().prop_map(|n| {
            let h = format!("{n:032x}");
            format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
        }),
        1 => (any::<u64>(), 10usize..15).prop_map(|(n, len)| format!("{n:016x}")[..len].to_string()),
        1 => prop::collection::vec(prop::sample::select(TOKEN), 14..18)
            .prop_map(|cs| cs.into_iter().collect()),
        1 => (60usize..68, prop::sample::select(&["a", "%", "."][..])).prop_map(|(n, c)| c.repeat(n)),
        1 => prop::collection::vec(any::<char>(), 1..70)
            .prop_map(|cs| cs.into_iter().map(|c| if c == '/' { '_' } else { c }).collect()),
        1 => prop::sample::select(&["..", ".", "%FF", "%2F", "{id}", "_other", ""][..])
            .prop_map(String::from),
    ]
}

/// A request path, now and then deeper than inference goes.
fn request_path() -> impl Strategy<Value = String> {
    let segments = prop_oneof![
        4 => prop::collection::vec(request_segment(), 0..6),
        1 => prop::collection::vec(request_segment(), 14..19),
    ];
    (segments, layout()).prop_map(|(segments, layout)| layout.write(&segments))
}

/// The longest label inference can give: at most [`MAX_INFERRED_SEGMENTS`] segments, each
/// `/` and either `{id}` or a segment under 64 bytes (64 and more is ID-like). Neither the
/// README nor the code states this bound; it follows from those two rules.
const MAX_INFERRED_LABEL: usize = MAX_INFERRED_SEGMENTS * 64;

proptest! {
    #![proptest_config(cases(256))]

    /// Inference of one path: `None` exactly when too deep, else the path's segments in
    /// order with the ID-like ones replaced, within the label bound, and a fixed point.
    #[test]
    fn inferred_templates_are_bounded_and_stable(path in prop_oneof![request_path(), any::<String>()]) {
        let segments = segments_of(&path);
        let Some(template) = infer_template(&path) else {
            prop_assert!(segments.len() > MAX_INFERRED_SEGMENTS, "{:?}", path);
            return Ok(());
        };
        prop_assert!(segments.len() <= MAX_INFERRED_SEGMENTS);
        prop_assert!(template.len() <= MAX_INFERRED_LABEL, "{} bytes", template.len());
        let expected: Vec<&str> = segments
            .iter()
            .map(|s| if is_id_like(s) { "{id}" } else { s })
            .collect();
        prop_assert_eq!(segments_of(&template), expected);
        prop_assert!(template.starts_with('/'));
        prop_assert_eq!(infer_template(&template), Some(template.clone()));
    }

    /// Requests handled as the proxy does, several in flight at once: a lookup when one
    /// arrives, an admit when it is answered (with any status, in any order), or both at
    /// once (`label`). Never more templates than the cap, none learnt from a 404 or 400,
    /// each label a template of its path or `_other`, and a template once learnt is the
    /// label of its paths ever after.
    #[test]
    fn inference_never_exceeds_the_cap(
        cap in 1usize..8,
        events in prop::collection::vec(
            prop_oneof![
                4 => (request_path(), prop::sample::select(STATUSES), prop::bool::weighted(0.1))
                    .prop_map(|(path, status, at_once)| Event::Arrive { path, status, at_once }),
                3 => any::<Index>().prop_map(Event::Answer),
            ],
            0..50,
        ),
    ) {
        let routes = InferredRoutes::new(cap);
        let mut model: HashSet<String> = HashSet::new();
        let mut in_flight: Vec<(String, u16, String)> = Vec::new();
        let mut learnt: Vec<(String, Arc<str>)> = Vec::new();
        let mut labels: Vec<(String, Arc<str>, String)> = Vec::new();
        let answers = events.len();
        for event in events.iter().map(Some).chain(std::iter::repeat_n(None, answers)) {
            match event {
                Some(Event::Arrive { path, status, at_once }) => {
                    let template = infer_template(path);
                    let decided = match &template {
                        Some(t) if model.contains(t) => Some(t.clone()),
                        Some(t) if model.len() < cap && *at_once => {
                            model.insert(t.clone());
                            Some(t.clone())
                        }
                        Some(_) if model.len() < cap => None,
                        _ => Some(OTHER_ROUTE.to_string()),
                    };
                    if *at_once {
                        let expected = decided.expect("label decides");
                        labels.push((path.clone(), routes.label(path), expected));
                        continue;
                    }
                    match (routes.lookup(path), decided) {
                        (Inferred::Known(label), Some(expected)) => {
                            labels.push((path.clone(), label, expected));
                        }
                        (Inferred::New(t), None) => {
                            prop_assert_eq!(Some(&t), template.as_ref());
                            in_flight.push((path.clone(), *status, t));
                        }
                        (found, expected) => {
                            return Err(TestCaseError::fail(format!("{path:?}: {found:?}, expected {expected:?}")));
                        }
                    }
                }
                Some(Event::Answer(_)) | None if in_flight.is_empty() => {}
                Some(Event::Answer(ix)) => {
                    let (path, status, t) = in_flight.remove(ix.index(in_flight.len()));
                    answer(&routes, &mut model, &mut labels, cap, path, status, t);
                }
                None => {
                    let (path, status, t) = in_flight.remove(0);
                    answer(&routes, &mut model, &mut labels, cap, path, status, t);
                }
            }
            prop_assert_eq!(routes.len(), model.len());
            prop_assert!(routes.len() <= cap);
        }
        for (path, label, expected) in labels {
            prop_assert_eq!(&*label, expected.as_str(), "{:?}", path);
            prop_assert!(label.len() <= MAX_INFERRED_LABEL);
            if &*label != OTHER_ROUTE {
                learnt.push((path, label));
            }
        }
        for (path, label) in &learnt {
            prop_assert_eq!(routes.lookup(path), Inferred::Known(label.clone()));
            prop_assert_eq!(&routes.label(path), label);
        }
        prop_assert_eq!(routes.len(), model.len());
    }
}

const STATUSES: &[u16] = &[200, 201, 301, 400, 401, 404, 500];

#[derive(Debug, Clone)]
enum Event {
    /// A request arrives: its path is looked up (or labelled at once).
    Arrive {
        path: String,
        status: u16,
        at_once: bool,
    },
    /// One of the requests in flight is answered.
    Answer(Index),
}

/// A request in flight is answered: as the proxy's `settle_route`, its template is
/// admitted if the status shows a route, else it counts as `_other`. The model admits
/// likewise: a template learnt meanwhile is kept, else admitted while the cap allows.
fn answer(
    routes: &InferredRoutes,
    model: &mut HashSet<String>,
    labels: &mut Vec<(String, Arc<str>, String)>,
    cap: usize,
    path: String,
    status: u16,
    template: String,
) {
    // The model learns by the documented rule (never from a 404 or 400), the proxy by
    // `learns_from`.
    let expected = if matches!(status, 400 | 404) {
        OTHER_ROUTE.to_string()
    } else if model.contains(&template) || model.len() < cap {
        model.insert(template.clone());
        template.clone()
    } else {
        OTHER_ROUTE.to_string()
    };
    let label = if learns_from(status) {
        routes.admit(template)
    } else {
        routes.other().clone()
    };
    labels.push((path, label, expected));
}
