//! Route templates: parsing, the precompiled matcher, and inference of templates for
//! requests that match no declared route.
//!
//! This is shared code: the proxy matches every request against a [`RouteTable`], and the
//! operator parses the same templates to validate a `MonitoredService` before it writes a
//! config, so both agree on what a valid template is.
//!
//! A template is a path of `/`-separated segments:
//! - a literal segment (`users`) matches itself;
//! - `{name}` matches exactly one segment;
//! - a final `*` or `{name...}` matches the rest of the path, zero or more segments.
//!
//! Empty segments are ignored on both sides, so `/users/` and `/users` are the same path.
//! A template has at most [`MAX_TEMPLATE_SEGMENTS`] segments, and whitespace around it is
//! not part of it (the route's label is the template trimmed).

mod infer;
mod table;

#[cfg(test)]
pub(crate) mod props;

#[cfg(test)]
pub(crate) use infer::is_id_like;
pub use infer::{Inferred, InferredRoutes, OTHER_ROUTE, UNMATCHED_ROUTE, learns_from};
pub use table::{RouteId, RouteSpec, RouteTable, TableError};

use thiserror::Error;

/// Why a route template or method was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("must start with '/'")]
    NoLeadingSlash,
    #[error("segment {0:?}: a parameter must be a whole segment, like {{id}}")]
    PartialParameter(String),
    #[error("segment {0:?}: parameter names must be non-empty letters, digits or '_'")]
    BadParameterName(String),
    #[error("a wildcard ('*' or {{name...}}) is only allowed as the last segment")]
    WildcardNotLast,
    #[error("method {0:?} is not an HTTP method token")]
    BadMethod(String),
    #[error("more than {MAX_TEMPLATE_SEGMENTS} segments")]
    TooDeep,
}

/// The most segments a template may have. The matcher walks the trie recursively, one
/// call per segment of the deepest template a path follows, so this bounds its stack: a
/// template of 10,000 segments and a request as deep overflowed it.
pub const MAX_TEMPLATE_SEGMENTS: usize = 128;

/// One parsed segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param,
    Rest,
}

/// Parses a template into its segments, rejecting anything the matcher cannot honour.
pub fn parse_template(template: &str) -> Result<Vec<Segment>, TemplateError> {
    let rest = template
        .strip_prefix('/')
        .ok_or(TemplateError::NoLeadingSlash)?;
    let raw: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if raw.len() > MAX_TEMPLATE_SEGMENTS {
        return Err(TemplateError::TooDeep);
    }
    let mut segments = Vec::with_capacity(raw.len());
    for (i, seg) in raw.iter().enumerate() {
        let last = i + 1 == raw.len();
        let parsed = parse_segment(seg)?;
        if parsed == Segment::Rest && !last {
            return Err(TemplateError::WildcardNotLast);
        }
        segments.push(parsed);
    }
    Ok(segments)
}

fn parse_segment(seg: &str) -> Result<Segment, TemplateError> {
    if seg == "*" {
        return Ok(Segment::Rest);
    }
    if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        let (name, rest) = match inner.strip_suffix("...") {
            Some(name) => (name, true),
            None => (inner, false),
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(TemplateError::BadParameterName(seg.to_string()));
        }
        return Ok(if rest { Segment::Rest } else { Segment::Param });
    }
    if seg.contains(['{', '}', '*']) {
        return Err(TemplateError::PartialParameter(seg.to_string()));
    }
    Ok(Segment::Literal(seg.to_string()))
}

/// Checks that a method is an HTTP token (RFC 9110 `tchar`s) and returns it upper-cased.
pub fn normalize_method(method: &str) -> Result<String, TemplateError> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if method.is_empty() || !method.chars().all(tchar) {
        return Err(TemplateError::BadMethod(method.to_string()));
    }
    Ok(method.to_ascii_uppercase())
}

/// Every `http_request_method` label value, `_OTHER` last: a closed list, so per-method
/// state can be an array indexed by [`method_index`].
pub const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

/// The position of `method`'s label in [`METHOD_LABELS`].
pub fn method_index(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        http::Method::CONNECT => 5,
        http::Method::OPTIONS => 6,
        http::Method::TRACE => 7,
        http::Method::PATCH => 8,
        _ => METHOD_LABELS.len() - 1,
    }
}

/// The `http_request_method` label: the method if it is one of the well-known ones, else
/// `_OTHER`, as the OpenTelemetry HTTP conventions ask, so a client cannot mint label values.
pub fn method_label(method: &http::Method) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

/// An `http_request_method` label value, typed: one of [`METHOD_LABELS`], held as its
/// position, so per-method state is an array indexed by [`MethodLabel::index`] and a
/// request never compares method strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodLabel(u8);

impl MethodLabel {
    /// `GET`.
    pub const GET: MethodLabel = MethodLabel(0);
    /// `_OTHER`: any method not in the list.
    pub const OTHER: MethodLabel = MethodLabel((METHOD_LABELS.len() - 1) as u8);

    /// The label of a request's method ([`method_label`]).
    pub fn of(method: &http::Method) -> Self {
        MethodLabel(method_index(method) as u8)
    }

    /// Its position in [`METHOD_LABELS`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        METHOD_LABELS[self.index()]
    }
}

impl From<&str> for MethodLabel {
    /// The label spelt `label`, `_OTHER` for a string that is none of [`METHOD_LABELS`].
    fn from(label: &str) -> Self {
        let index = METHOD_LABELS.iter().position(|m| *m == label);
        index.map_or(MethodLabel::OTHER, |i| MethodLabel(i as u8))
    }
}

/// Splits off the next non-empty segment of a path, returning it and what follows.
pub(crate) fn next_segment(path: &str) -> Option<(&str, &str)> {
    // Byte offsets of '/', which is ASCII, so every split is on a char boundary; memchr
    // over the bytes, on every request's path, rather than a char searcher.
    let start = path.bytes().position(|b| b != b'/')?;
    let trimmed = &path[start..];
    Some(match memchr::memchr(b'/', trimmed.as_bytes()) {
        Some(end) => (&trimmed[..end], &trimmed[end..]),
        None => (trimmed, ""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_params_and_rest() {
        assert_eq!(
            parse_template("/users/{id}/files/{path...}"),
            Ok(vec![
                Segment::Literal("users".into()),
                Segment::Param,
                Segment::Literal("files".into()),
                Segment::Rest,
            ])
        );
        assert_eq!(
            parse_template("/static/*"),
            Ok(vec![Segment::Literal("static".into()), Segment::Rest])
        );
        assert_eq!(parse_template("/"), Ok(vec![]));
        assert_eq!(
            parse_template("//a//"),
            Ok(vec![Segment::Literal("a".into())])
        );
    }

    #[test]
    fn rejects_what_the_matcher_cannot_honour() {
        assert_eq!(parse_template("users"), Err(TemplateError::NoLeadingSlash));
        assert_eq!(
            parse_template("/a/*/b"),
            Err(TemplateError::WildcardNotLast)
        );
        assert_eq!(
            parse_template("/a/{rest...}/b"),
            Err(TemplateError::WildcardNotLast)
        );
        assert!(matches!(
            parse_template("/files/{name}.json"),
            Err(TemplateError::PartialParameter(_))
        ));
        assert!(matches!(
            parse_template("/a/{}"),
            Err(TemplateError::BadParameterName(_))
        ));
        assert!(matches!(
            parse_template("/a/{a-b}"),
            Err(TemplateError::BadParameterName(_))
        ));
    }

    #[test]
    fn methods_are_tokens() {
        assert_eq!(normalize_method("get"), Ok("GET".into()));
        assert!(normalize_method("GE T").is_err());
        assert!(normalize_method("").is_err());
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        let custom = http::Method::from_bytes(b"PURGE").expect("valid token");
        assert_eq!(method_label(&custom), "_OTHER");
        for label in METHOD_LABELS.iter().take(METHOD_LABELS.len() - 1) {
            let method = http::Method::from_bytes(label.as_bytes()).expect("a method");
            assert_eq!(method_label(&method), *label);
        }
    }

    #[test]
    fn typed_method_labels_are_the_labels() {
        for (i, label) in METHOD_LABELS.iter().enumerate() {
            let typed = MethodLabel::from(*label);
            assert_eq!((typed.index(), typed.as_str()), (i, *label));
        }
        let custom = http::Method::from_bytes(b"PURGE").expect("valid token");
        assert_eq!(MethodLabel::of(&custom), MethodLabel::OTHER);
        assert_eq!(MethodLabel::of(&http::Method::PATCH).as_str(), "PATCH");
        assert_eq!(MethodLabel::GET.as_str(), "GET");
        assert_eq!(
            MethodLabel::from("get"),
            MethodLabel::OTHER,
            "labels are upper-case"
        );
    }

    #[test]
    fn splits_segments_skipping_empty_ones() {
        assert_eq!(next_segment("/a/b"), Some(("a", "/b")));
        assert_eq!(next_segment("//b"), Some(("b", "")));
        assert_eq!(next_segment("/"), None);
        assert_eq!(next_segment(""), None);
    }
}
