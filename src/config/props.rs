//! Property tests of the config parser: random YAML documents and mutations of a valid
//! config never panic, and give either a config that round-trips or an error that names
//! the field at fault. `PROPTEST_CASES` sets the number of cases (see `route::props`).

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value as Json;
use serde_yaml::Value;
use serde_yaml::value::{Tag, TaggedValue};

use super::ProxyConfig;
use crate::route::props::cases;

/// A valid config setting every field.
const BASE: &str = r#"
listen: 127.0.0.1:8000
additionalListeners: ["127.0.0.1:8001"]
admin: 127.0.0.1:9901
upstream:
  endpoints: ["127.0.0.1:8080", "api.default.svc:80"]
  endpointSlices: {namespace: apps, service: api, port: 8080}
  loadBalancing: leastRequest
  resolveInterval: 2s
  ejectionBase: 1s
  ejectionMax: 10s
  maxEjectionPercent: 50
routes:
  - path: /users/{id}
    methods: [GET, delete]
    name: get-user
    latencyObjective: 300ms
    pagination: {pageParam: page, sizeParam: limit, offsetParam: offset}
  - path: /static/*
autoTemplate: {enabled: true, maxRoutes: 100}
timeouts: {connect: 500ms, read: 30s, idle: 60s}
limits: {maxRequestHeaderBytes: 65536}
forwarding:
  xForwardedFor: true
  xForwardedProto: true
  xForwardedHost: false
  forwarded: true
  via: false
  trustedHops: 1
metrics: {durationBuckets: [0.1, 1], latencyThresholds: [0.3]}
summary: {latencyObjective: 500ms}
server: {workers: 2, workStealing: false, gracePeriod: 15s, reloadInterval: 1s}
"#;

/// Every field name of the schema, to build documents that reach past the first level.
fn field_names() -> Vec<String> {
    fn collect(node: &Json, out: &mut Vec<String>) {
        match node {
            Json::Object(map) => {
                if let Some(Json::Object(properties)) = map.get("properties") {
                    out.extend(properties.keys().cloned());
                }
                map.values().for_each(|v| collect(v, out));
            }
            Json::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    collect(schema(), &mut out);
    out.sort();
    out.dedup();
    out
}

/// The top-level field names.
fn top_field_names() -> Vec<String> {
    let properties = schema().get("properties").and_then(Json::as_object);
    properties
        .into_iter()
        .flat_map(|p| p.keys().cloned())
        .collect()
}

const STRINGS: &[&str] = &[
    "127.0.0.1:8080",
    "a:1",
    "[::1]:80",
    ":80",
    "a:0",
    "a:65536",
    "0.0.0.0:9901",
    "/users/{id}",
    "/a/*/b",
    "/{}",
    "users",
    "GET",
    "G T",
    "500ms",
    "0s",
    "-1s",
    "5",
    "1.5s",
    "18446744073709551616s",
    "1000000000000000y",
    "soon",
    "roundRobin",
    "peakEwma",
    "",
    " ",
    "apps",
    "Apps",
    "-",
    "~",
    "null",
    "true",
    "yes",
    "per page",
    "page",
    "limit",
];

/// Numbers at and around every bound of the schema, and the extremes.
fn number() -> impl Strategy<Value = Value> {
    const EDGES: &[i64] = &[
        0, 1, -1, 2, 99, 100, 101, 255, 256, 1023, 1024, 65535, 65536, 4294967296,
    ];
    const FLOATS: &[f64] = &[
        0.0,
        -0.0,
        0.3,
        -1.0,
        1e-300,
        1e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    prop_oneof![
        3 => prop::sample::select(EDGES).prop_map(|n| Value::Number(n.into())),
        1 => any::<i64>().prop_map(|n| Value::Number(n.into())),
        1 => any::<u64>().prop_map(|n| Value::Number(n.into())),
        1 => prop::sample::select(FLOATS).prop_map(|f| Value::Number(f.into())),
        1 => any::<f64>().prop_map(|f| Value::Number(f.into())),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => number(),
        4 => prop::sample::select(STRINGS).prop_map(|s| Value::String(s.into())),
        1 => "[ -~]{0,12}".prop_map(Value::String),
        1 => any::<String>().prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(field_names()).prop_map(Value::String),
        1 => "[a-zA-Z]{1,8}".prop_map(Value::String),
        1 => scalar(),
    ]
}

/// Any YAML value: scalars, sequences, mappings keyed mostly by field names, tags.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            2 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            3 => prop::collection::vec((key(), inner.clone()), 0..6)
                .prop_map(|kv| Value::Mapping(kv.into_iter().collect())),
            // A tag in a tag cannot be written out by serde_yaml: tags wrap scalars only.
            1 => (prop::sample::select(&["x", "leastRequest", "!str"][..]), scalar()).prop_map(
                |(tag, value)| Value::Tagged(Box::new(TaggedValue { tag: Tag::new(tag), value }))
            ),
        ]
    })
}

/// A document: usually a mapping of top-level fields, sometimes any value.
fn document() -> impl Strategy<Value = Value> {
    let top = prop::sample::select(top_field_names()).prop_map(Value::String);
    prop_oneof![
        4 => prop::collection::vec((top, value()), 0..8)
            .prop_map(|kv| Value::Mapping(kv.into_iter().collect())),
        1 => value(),
    ]
}

fn base() -> Value {
    serde_yaml::from_str(BASE).expect("BASE is YAML")
}

// ---------------------------------------------------------------------------------------
// Paths in documents and in the schema.

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A path as serde_yaml and the validation write it: `routes[2].pagination.sizeParam`.
fn path_text(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Every node below the root, with its path; only string keys make paths.
fn nodes(value: &Value) -> Vec<(Vec<Step>, &Value)> {
    fn walk<'a>(value: &'a Value, path: &mut Vec<Step>, out: &mut Vec<(Vec<Step>, &'a Value)>) {
        match value {
            Value::Mapping(map) => {
                for (k, v) in map {
                    if let Value::String(k) = k {
                        path.push(Step::Key(k.clone()));
                        out.push((path.clone(), v));
                        walk(v, path, out);
                        path.pop();
                    }
                }
            }
            Value::Sequence(seq) => {
                for (i, v) in seq.iter().enumerate() {
                    path.push(Step::Index(i));
                    out.push((path.clone(), v));
                    walk(v, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn node_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value);
    };
    let child = match (value, first) {
        (Value::Mapping(map), Step::Key(k)) => map.get_mut(k.as_str()),
        (Value::Sequence(seq), Step::Index(i)) => seq.get_mut(*i),
        _ => None,
    }?;
    node_mut(child, rest)
}

/// Parses the field path an error message starts with (`upstream.endpoints[0]`, followed
/// by `:` or a space), if any.
fn leading_path(message: &str) -> Option<Vec<Step>> {
    fn ident(s: &str) -> Option<(String, &str)> {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_string(), &s[end..]))
    }
    let mut steps = Vec::new();
    let mut rest = message;
    loop {
        if steps.is_empty() {
            let (name, tail) = ident(rest)?;
            steps.push(Step::Key(name));
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix('.') {
            let (name, tail) = ident(tail)?;
            steps.push(Step::Key(name));
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix('[') {
            let (digits, tail) = tail.split_once(']')?;
            steps.push(Step::Index(digits.parse().ok()?));
            rest = tail;
        } else {
            return (rest.starts_with(':') || rest.starts_with(' ')).then_some(steps);
        }
    }
}

/// The schema node and its alternatives (`$ref`, `anyOf`, `oneOf`, `allOf` followed).
fn alternatives<'a>(root: &'a Json, node: &'a Json, out: &mut Vec<&'a Json>) {
    if let Some(name) = node
        .get("$ref")
        .and_then(Json::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        && let Some(def) = root.get("$defs").and_then(|d| d.get(name))
    {
        alternatives(root, def, out);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for alt in node.get(key).and_then(Json::as_array).into_iter().flatten() {
            alternatives(root, alt, out);
        }
    }
    out.push(node);
}

/// Whether a path names a field of the config's schema.
fn in_schema(root: &Json, node: &Json, path: &[Step]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    let mut alts = Vec::new();
    alternatives(root, node, &mut alts);
    alts.iter().any(|n| {
        let child = match first {
            Step::Key(k) => n.get("properties").and_then(|p| p.get(k)),
            Step::Index(_) => n.get("items"),
        };
        child.is_some_and(|c| in_schema(root, c, rest))
    })
}

fn schema() -> &'static Json {
    static SCHEMA: std::sync::OnceLock<Json> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::to_value(schemars::schema_for!(ProxyConfig)).expect("the schema is JSON")
    })
}

/// The field an error names: the path it starts with, which must be a field of the schema;
/// or, for an error at the top level, the field in its "missing field" or "unknown field"
/// (empty: a document that is not a mapping at all).
fn named_field(message: &str, doc: &Value, schema: &Json) -> Result<Vec<Step>, String> {
    if let Some(path) = leading_path(message)
        && in_schema(schema, schema, &path)
    {
        return Ok(path);
    }
    let names = |prefix: &str, name: &str| {
        let rest = message
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(name));
        rest.is_some_and(|r| r.starts_with('`'))
    };
    let required = schema.get("required").and_then(Json::as_array);
    for field in required.into_iter().flatten().filter_map(Json::as_str) {
        if names("missing field `", field) {
            return Ok(vec![Step::Key(field.into())]);
        }
    }
    // A key is named as serde_yaml writes it: without its tag, and a key that is not a
    // string (`null: 1`) as YAML writes it.
    fn written(k: &Value) -> String {
        match k {
            Value::String(s) => s.clone(),
            Value::Tagged(tagged) => written(&tagged.value),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
    for key in doc.as_mapping().into_iter().flat_map(|m| m.keys()) {
        let key = written(key);
        if names("unknown field `", &key) {
            return Ok(vec![Step::Key(key)]);
        }
    }
    if !doc.is_mapping() && message.starts_with("invalid type: ") {
        return Ok(Vec::new());
    }
    // A top-level key that is a mapping or a list (`? {a: 1}`) has no name to give: the
    // error says so, with its line.
    let complex = |k: &Value| matches!(k, Value::Mapping(_) | Value::Sequence(_));
    if message.contains("a key is a ")
        && message.contains(", not a field name")
        && doc.as_mapping().is_some_and(|m| m.keys().any(complex))
    {
        return Ok(Vec::new());
    }
    Err(format!("{message:?} names no field"))
}

/// What every document must give: a config that round-trips through YAML, or an error
/// naming a field. Returns the field named.
fn check(text: &str, schema: &Json) -> Result<Option<Vec<Step>>, TestCaseError> {
    match ProxyConfig::from_yaml(text) {
        Ok(config) => {
            let yaml = config
                .to_yaml()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let again = ProxyConfig::from_yaml(&yaml)
                .map_err(|e| TestCaseError::fail(format!("{yaml}\ngave {e}")))?;
            prop_assert_eq!(config, again);
            Ok(None)
        }
        Err(e) => {
            let doc: Value = serde_yaml::from_str(text).map_err(|p| {
                TestCaseError::fail(format!("{text}\nis not YAML ({p}) yet gave {e}"))
            })?;
            named_field(&e.to_string(), &doc, schema)
                .map(Some)
                .map_err(|m| TestCaseError::fail(format!("{text}\n{m}")))
        }
    }
}

/// Whether `named` is `path` or one of its ancestors (a list names itself for a bad item).
fn names(named: &[Step], path: &[Step]) -> bool {
    !named.is_empty() && path.starts_with(named)
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace a node with any value.
    Set(Index, Value),
    /// Remove a mapping entry or a sequence item.
    Remove(Index),
    /// Add a key to a mapping: an unknown one, or a field name out of place.
    Add(Index, Value, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), value()).prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => (any::<Index>(), key(), value()).prop_map(|(i, k, v)| Mutation::Add(i, k, v)),
    ]
}

fn apply(doc: &mut Value, mutation: &Mutation) {
    let paths: Vec<Vec<Step>> = nodes(doc).into_iter().map(|(p, _)| p).collect();
    if paths.is_empty() {
        return;
    }
    match mutation {
        Mutation::Set(i, v) => {
            if let Some(node) = node_mut(doc, &paths[i.index(paths.len())]) {
                *node = v.clone();
            }
        }
        Mutation::Remove(i) => {
            let path = &paths[i.index(paths.len())];
            let (last, parent) = path.split_last().expect("below the root");
            match (node_mut(doc, parent), last) {
                (Some(Value::Mapping(map)), Step::Key(k)) => {
                    map.remove(k.as_str());
                }
                (Some(Value::Sequence(seq)), Step::Index(i)) => {
                    seq.remove(*i);
                }
                _ => {}
            }
        }
        Mutation::Add(i, k, v) => {
            let mut maps: Vec<&Vec<Step>> = vec![];
            let root = Vec::new();
            maps.push(&root);
            let nodes = nodes(doc);
            maps.extend(nodes.iter().filter(|(_, n)| n.is_mapping()).map(|(p, _)| p));
            let path = maps[i.index(maps.len())].clone();
            if let Some(Value::Mapping(map)) = node_mut(doc, &path) {
                map.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A value of the wrong type for a field that is not a mapping: a mapping, or for one that
/// is not a list either, a list.
fn wrong_type(field: &Value, list: bool) -> Value {
    if list && !field.is_sequence() {
        Value::Sequence(vec![Value::Sequence(vec![])])
    } else {
        serde_yaml::from_str("{bogus: 1}").expect("YAML")
    }
}

/// Byte-level edits of a YAML text: YAML's punctuation, anchors, aliases, tags, breaks.
fn edits() -> impl Strategy<Value = Vec<(Index, usize, &'static str)>> {
    const PIECES: &[&str] = &[
        ":",
        ": ",
        "-",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ",",
        "&a ",
        "*a",
        "!x ",
        "!!binary ",
        "<<: ",
        "\n",
        "\n  ",
        " ",
        "\t",
        "#",
        "'",
        "\"",
        "%",
        "?",
        "|",
        ">",
        "0",
        "-1",
        "~",
        "\u{0}",
        "\u{feff}",
        "é",
    ];
    prop::collection::vec(
        (any::<Index>(), 0usize..3, prop::sample::select(PIECES)),
        1..6,
    )
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn random_documents_give_a_config_or_name_a_field(doc in document()) {
        let text = serde_yaml::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&text, schema())?;
    }

    #[test]
    fn mutated_configs_give_a_config_or_name_a_field(
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut doc = base();
        for m in &mutations {
            apply(&mut doc, m);
        }
        let text = serde_yaml::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&text, schema())?;
    }

    /// A field given a value of the wrong type: the error names exactly that field.
    #[test]
    fn a_wrong_type_names_its_field(at in any::<Index>(), list in any::<bool>()) {
        let mut doc = base();
        let leaves: Vec<Vec<Step>> = nodes(&doc)
            .into_iter()
            .filter(|(_, n)| !n.is_mapping())
            .map(|(p, _)| p)
            .collect();
        let path = &leaves[at.index(leaves.len())];
        let node = node_mut(&mut doc, path).expect("a node");
        *node = wrong_type(node, list);
        let text = serde_yaml::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let named = check(&text, schema())?;
        prop_assert_eq!(named.as_deref(), Some(&path[..]), "{}", path_text(path));
    }

    /// An unknown key in any mapping: the error names that mapping and the key.
    #[test]
    fn an_unknown_field_is_named(at in any::<Index>(), name in "[a-z]{1,6}[A-Z0-9]") {
        let mut doc = base();
        let mut maps: Vec<Vec<Step>> = vec![Vec::new()];
        maps.extend(nodes(&doc).into_iter().filter(|(_, n)| n.is_mapping()).map(|(p, _)| p));
        let path = maps[at.index(maps.len())].clone();
        let name = format!("zz{name}");
        if let Some(Value::Mapping(map)) = node_mut(&mut doc, &path) {
            map.insert(Value::String(name.clone()), Value::Null);
        }
        let text = serde_yaml::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let err = ProxyConfig::from_yaml(&text).expect_err("an unknown field").to_string();
        prop_assert!(err.contains(&name), "{}", err);
        let named = check(&text, schema())?;
        let expected = if path.is_empty() { vec![Step::Key(name)] } else { path };
        prop_assert_eq!(named, Some(expected), "{}", err);
    }

    /// A number or duration at, around or far past its bounds: a config, or an error that
    /// names that field or the list it is in.
    #[test]
    fn out_of_range_values_name_their_field(
        at in any::<Index>(),
        n in number(),
        d in prop::sample::select(STRINGS),
    ) {
        let mut doc = base();
        let leaves: Vec<(Vec<Step>, bool)> = nodes(&doc)
            .into_iter()
            .filter_map(|(p, v)| match v {
                Value::Number(_) => Some((p, true)),
                Value::String(s) if s.ends_with('s') && s.starts_with(|c: char| c.is_ascii_digit()) => {
                    Some((p, false))
                }
                _ => None,
            })
            .collect();
        let (path, numeric) = &leaves[at.index(leaves.len())];
        *node_mut(&mut doc, path).expect("a node") =
            if *numeric { n } else { Value::String(d.into()) };
        let text = serde_yaml::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(named) = check(&text, schema())? {
            // A longer ejectionBase is checked against ejectionMax, and named there.
            let related = path_text(path) == "upstream.ejectionBase"
                && path_text(&named) == "upstream.ejectionMax";
            prop_assert!(names(&named, path) || related, "{} named {}", path_text(path), path_text(&named));
        }
    }

    /// A valid config edited at random, byte by byte: never a panic; a document that is
    /// still YAML gives a config or an error naming a field.
    #[test]
    fn edited_text_never_panics(edits in edits()) {
        let mut text = BASE.to_string();
        for (at, remove, piece) in &edits {
            let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
            let start = boundaries[at.index(boundaries.len())];
            let end = boundaries.iter().copied().filter(|&b| b >= start).nth(*remove).unwrap_or(text.len());
            text.replace_range(start..end, piece);
        }
        let result = ProxyConfig::from_yaml(&text);
        if serde_yaml::from_str::<Value>(&text).is_ok() {
            check(&text, schema())?;
        } else {
            prop_assert!(result.is_err(), "{}", text);
        }
    }
}

/// Every one-character replacement of the base config by each piece the random edits use:
/// the whole neighbourhood of a valid config, every run (the random edits go further).
#[test]
fn every_one_character_edit_gives_a_config_or_names_a_field() {
    for piece in [
        "?", ":", "-", "[", "{", "!x ", "&a ", "*a", "<<: ", "#", "\n",
    ] {
        let boundaries = (0..BASE.len()).filter(|&i| BASE.is_char_boundary(i));
        for at in boundaries {
            let mut text = BASE.to_string();
            let end = (at + 1..=text.len())
                .find(|&e| text.is_char_boundary(e))
                .unwrap_or(at);
            text.replace_range(at..end, piece);
            if serde_yaml::from_str::<Value>(&text).is_ok() {
                if let Err(e) = check(&text, schema()) {
                    panic!("{piece:?} at {at}: {e:?}");
                }
            } else {
                assert!(ProxyConfig::from_yaml(&text).is_err(), "{text}");
            }
        }
    }
}

#[test]
fn the_base_config_is_valid() {
    assert!(field_names().len() > 40 && top_field_names().contains(&"upstream".to_string()));
    ProxyConfig::from_yaml(BASE).expect("BASE is valid");
    let schema = schema();
    for (path, _) in nodes(&base()) {
        assert!(in_schema(schema, schema, &path), "{}", path_text(&path));
    }
    assert!(!in_schema(schema, schema, &[Step::Key("routez".into())]));
}

#[test]
fn hostile_documents_are_errors() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let nested = format!("upstream: {}{}", "{a: ".repeat(5_000), "}".repeat(5_000));
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n\
        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
        c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n\
        d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
        e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n\
        f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
        g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    for text in [
        deep.as_str(),
        &nested,
        bomb,
        "",
        "~",
        "---\n---\n",
        "\u{feff}",
    ] {
        let err = ProxyConfig::from_yaml(text).expect_err(text);
        assert!(!err.to_string().is_empty());
    }
}
