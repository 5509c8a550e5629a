//! Route templates inferred for requests that match no declared route.
//!
//! A raw path must never become a label value: one label value per user ID would explode
//! the cardinality of every series. So ID-like segments (integers, UUIDs, long hex strings,
//! random-looking tokens) are replaced by `{id}`, and the number of distinct inferred
//! templates is capped; past the cap, requests count as [`OTHER_ROUTE`].
//!
//! A template is only learnt from a request the application answered as a route it has:
//! a 404 or 400 answer ([`learns_from`]) never admits one, so scanners probing random
//! paths cannot fill the cap. The proxy looks a path up ([`InferredRoutes::lookup`]) when
//! the request arrives and admits a new template ([`InferredRoutes::admit_with`]) once the
//! status is known.
//!
//! Each template admitted carries a value made once, when it is admitted: the proxy keeps
//! the handles of the template's series there, so a request of a known template finds
//! them with the template. A lookup takes no lock and allocates nothing unless the
//! template is new (the template is written into a buffer of the thread's); an admission
//! takes a mutex, and none is taken once the cap is reached.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::next_segment;

/// Route label of unmatched requests when inference is off.
pub const UNMATCHED_ROUTE: &str = "_unmatched";
/// Route label of unmatched requests once the cap of inferred templates is reached.
pub const OTHER_ROUTE: &str = "_other";

/// Templates longer than this many segments are not inferred: they count as [`OTHER_ROUTE`].
pub(super) const MAX_INFERRED_SEGMENTS: usize = 16;

thread_local! {
    /// Where [`InferredRoutes::lookup`] writes a path's template, so a known one costs no
    /// allocation. A template has at most [`MAX_INFERRED_SEGMENTS`] segments, each under
    /// 64 bytes (a longer one is `{id}`), so the buffer never outgrows 1 KiB.
    static TEMPLATE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Whether a request answered `status` may admit a new inferred template: not a 404 (the
/// path is no route of the application) nor a 400 (it is not even a valid request).
pub fn learns_from(status: u16) -> bool {
    !matches!(status, 400 | 404)
}

/// What [`InferredRoutes::lookup`] found for a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inferred<T: ?Sized = str> {
    /// The value of a template admitted before, or of [`OTHER_ROUTE`].
    Known(Arc<T>),
    /// A template not admitted yet, to pass to [`InferredRoutes::admit_with`] once the
    /// request has shown it is a route ([`learns_from`]).
    New(String),
}

/// The set of templates inferred so far, bounded by `cap`, each with its value `T` (its
/// label alone by default).
#[derive(Debug)]
pub struct InferredRoutes<T: ?Sized = str> {
    cap: usize,
    /// Read without a lock; replaced by a copy with one more template on each admission
    /// (at most `cap` times).
    seen: ArcSwap<HashMap<Arc<str>, Arc<T>>>,
    /// Taken to admit a template.
    admitting: Mutex<()>,
    other: Arc<T>,
}

impl InferredRoutes {
    /// A set that admits at most `cap` distinct templates, each valued by its label.
    pub fn new(cap: usize) -> Self {
        InferredRoutes::with_other(cap, Arc::from(OTHER_ROUTE))
    }

    /// The route label for an unmatched path, admitting its template at once: its inferred
    /// template while the cap allows, else [`OTHER_ROUTE`]. A template seen before is
    /// always returned again.
    pub fn label(&self, path: &str) -> Arc<str> {
        match self.lookup(path) {
            Inferred::Known(label) => label,
            Inferred::New(template) => self.admit(template),
        }
    }

    /// Admits a template found by [`InferredRoutes::lookup`]: its label while the cap
    /// allows (or if another request admitted it meanwhile), else [`OTHER_ROUTE`].
    pub fn admit(&self, template: String) -> Arc<str> {
        self.admit_with(template, |label| label)
    }
}

impl<T: ?Sized> InferredRoutes<T> {
    /// A set that admits at most `cap` distinct templates; `other` is the value of
    /// [`OTHER_ROUTE`].
    pub fn with_other(cap: usize, other: Arc<T>) -> Self {
        InferredRoutes {
            cap,
            seen: ArcSwap::from_pointee(HashMap::new()),
            admitting: Mutex::new(()),
            other,
        }
    }

    /// The value of an unmatched path if it is already decided (a template admitted
    /// before, or [`OTHER_ROUTE`] for a path too deep or once the cap is reached), else
    /// its template, admitted by nothing yet. Takes no lock, and allocates only for a new
    /// template.
    pub fn lookup(&self, path: &str) -> Inferred<T> {
        TEMPLATE.with_borrow_mut(|template| {
            template.clear();
            if write_template(path, template) {
                let seen = self.seen.load();
                match seen.get(template.as_str()) {
                    Some(known) => Inferred::Known(known.clone()),
                    None if seen.len() >= self.cap => Inferred::Known(self.other.clone()),
                    None => Inferred::New(template.clone()),
                }
            } else {
                Inferred::Known(self.other.clone())
            }
        })
    }

    /// Admits a template found by [`InferredRoutes::lookup`], its value made by `make`
    /// from its label: its value while the cap allows (or if another request admitted it
    /// meanwhile), else [`OTHER_ROUTE`]'s. Once the cap is reached no lock is taken.
    pub fn admit_with(&self, template: String, make: impl FnOnce(Arc<str>) -> Arc<T>) -> Arc<T> {
        let decided = |seen: &HashMap<Arc<str>, Arc<T>>| match seen.get(template.as_str()) {
            Some(known) => Some(known.clone()),
            None if seen.len() >= self.cap => Some(self.other.clone()),
            None => None,
        };
        if let Some(value) = decided(&self.seen.load()) {
            return value;
        }
        let _guard = self.admitting.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.seen.load_full();
        if let Some(value) = decided(&current) {
            return value;
        }
        let label: Arc<str> = Arc::from(template);
        let value = make(label.clone());
        let mut next = HashMap::clone(&current);
        next.insert(label, value.clone());
        self.seen.store(Arc::new(next));
        value
    }

    /// The value of unmatched requests given no template: [`OTHER_ROUTE`]'s.
    pub fn other(&self) -> &Arc<T> {
        &self.other
    }

    /// How many distinct templates have been inferred.
    pub fn len(&self) -> usize {
        self.seen.load().len()
    }

    /// Whether no template has been inferred yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The template of a path with its ID-like segments replaced by `{id}`, or `None` when the
/// path is too deep to be a useful route. (The proxy writes it into a buffer instead,
/// [`InferredRoutes::lookup`].)
#[cfg(test)]
pub fn infer_template(path: &str) -> Option<String> {
    let mut template = String::with_capacity(path.len().min(256));
    write_template(path, &mut template).then_some(template)
}

/// Writes the template of `path` ([`infer_template`]) at the end of `template`; `false`,
/// with `template` unspecified, when the path is too deep.
fn write_template(path: &str, template: &mut String) -> bool {
    let start = template.len();
    let mut rest = path;
    let mut count = 0;
    while let Some((segment, tail)) = next_segment(rest) {
        count += 1;
        if count > MAX_INFERRED_SEGMENTS {
            return false;
        }
        template.push('/');
        template.push_str(if is_id_like(segment) { "{id}" } else { segment });
        rest = tail;
    }
    if template.len() == start {
        template.push('/');
    }
    true
}

/// Whether a segment looks like an identifier rather than a fixed part of an API.
///
/// - all digits: `42`, `1699999999`;
/// - a UUID: `123e4567-e89b-12d3-a456-426614174000`;
/// - hex of 12 characters or more with at least one digit: `5f2b8c9d0e1a`, object IDs, hashes;
/// - a token of 16 characters or more mixing letters and digits: ULIDs, base64 IDs, API keys;
/// - anything of 64 characters or more.
pub fn is_id_like(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    if bytes.iter().all(u8::is_ascii_digit) || bytes.len() >= 64 || is_uuid(bytes) {
        return true;
    }
    if bytes.len() >= 12 && has_digit && bytes.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    let token_char = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    bytes.len() >= 16
        && has_digit
        && bytes.iter().any(u8::is_ascii_alphabetic)
        && bytes.iter().all(token_char)
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn replaces_id_like_segments() {
        assert_eq!(
            infer_template("/orders/123/items/9").as_deref(),
            Some("/orders/{id}/items/{id}")
        );
        assert_eq!(
            infer_template("/u/123e4567-e89b-12d3-a456-426614174000").as_deref(),
            Some("/u/{id}")
        );
        assert_eq!(
            infer_template("/blobs/5f2b8c9d0e1a77").as_deref(),
            Some("/blobs/{id}")
        );
        assert_eq!(
            infer_template("/k/01HZX3K9V7Q2M8N4P6R0S2T4W6").as_deref(),
            Some("/k/{id}")
        );
        assert_eq!(infer_template("/").as_deref(), Some("/"));
    }

    #[test]
    fn keeps_words_and_short_slugs() {
        for word in [
            "users",
            "v1",
            "api",
            "healthz",
            "deadbeef",
            "page-2",
            "settings_v2",
        ] {
            assert!(!is_id_like(word), "{word} should stay literal");
        }
        assert_eq!(
            infer_template("/api/v1/users").as_deref(),
            Some("/api/v1/users")
        );
    }

    #[test]
    fn too_deep_paths_are_not_templated() {
        assert_eq!(
            infer_template(&"/x".repeat(MAX_INFERRED_SEGMENTS + 1)),
            None
        );
    }

    #[test]
    fn cap_bounds_distinct_labels() {
        let routes = InferredRoutes::new(3);
        let labels: HashSet<String> = (0..1000)
            .map(|i| {
                routes
                    .label(&format!("/word{}/x", char::from(b'a' + (i % 26) as u8)))
                    .to_string()
            })
            .collect();
        assert_eq!(routes.len(), 3);
        assert_eq!(
            labels.len(),
            4,
            "three templates and {OTHER_ROUTE}: {labels:?}"
        );
        assert!(labels.contains(OTHER_ROUTE));
        // A template admitted before the cap keeps its label.
        assert_eq!(&*routes.label("/worda/x"), "/worda/x");
    }

    #[test]
    fn not_found_and_bad_request_answers_never_fill_the_cap() {
        let routes = InferredRoutes::new(3);
        // A scanner: 1000 distinct paths, each answered 404 or 400, admit nothing.
        for i in 0..1000 {
            let status = if i % 2 == 0 { 404 } else { 400 };
            match routes.lookup(&format!("/scan{}/x", char::from(b'a' + (i % 26) as u8))) {
                Inferred::New(template) => assert!(!learns_from(status), "{template}"),
                Inferred::Known(label) => panic!("nothing is known yet: {label}"),
            }
        }
        assert!(routes.is_empty());
        // Real traffic still gets its template, and keeps it when it later answers 404.
        let Inferred::New(template) = routes.lookup("/items/1") else {
            panic!("a new template");
        };
        assert!(learns_from(200));
        assert_eq!(&*routes.admit(template), "/items/{id}");
        assert_eq!(
            routes.lookup("/items/2"),
            Inferred::Known(Arc::from("/items/{id}"))
        );
        assert_eq!(routes.len(), 1);
        // Past the cap, lookup says `_other` at once.
        routes.label("/a");
        routes.label("/b");
        assert_eq!(routes.lookup("/c"), Inferred::Known(Arc::from(OTHER_ROUTE)));
        assert_eq!(&**routes.other(), OTHER_ROUTE);
        assert!(learns_from(500) && learns_from(301) && learns_from(401));
    }

    #[test]
    fn a_template_keeps_the_value_made_when_it_was_admitted() {
        let routes = InferredRoutes::with_other(2, Arc::new((OTHER_ROUTE.to_string(), 0)));
        let made = std::cell::Cell::new(0);
        let make = |label: Arc<str>| {
            made.set(made.get() + 1);
            Arc::new((label.to_string(), made.get()))
        };
        let Inferred::New(template) = routes.lookup("/orders/1") else {
            panic!("a new template");
        };
        let first = routes.admit_with(template.clone(), make);
        assert_eq!(*first, ("/orders/{id}".to_string(), 1));
        assert!(Arc::ptr_eq(&routes.admit_with(template, make), &first));
        assert_eq!(made.get(), 1, "made once");
        for i in 2..100 {
            match routes.lookup(&format!("/orders/{i}")) {
                Inferred::Known(value) => assert!(Arc::ptr_eq(&value, &first)),
                Inferred::New(t) => panic!("{t} is known"),
            }
        }
        routes.admit_with("/b".into(), make);
        assert!(Arc::ptr_eq(
            &routes.admit_with("/c".into(), make),
            routes.other()
        ));
        assert_eq!(made.get(), 2, "nothing made past the cap");
    }

    #[test]
    fn past_the_cap_nothing_waits_for_the_admission_lock() {
        let routes = Arc::new(InferredRoutes::new(1));
        routes.label("/a");
        // An admission in progress holds the lock; past the cap, nobody waits for it.
        let _admitting = routes.admitting.lock().expect("lock");
        let (done, finished) = std::sync::mpsc::channel();
        let r = routes.clone();
        std::thread::spawn(move || {
            let lookup = r.lookup("/b");
            let admitted = r.admit("/b".into());
            let _ = done.send((lookup, admitted));
        });
        let (lookup, admitted) = finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("no lock taken past the cap");
        assert_eq!(lookup, Inferred::Known(Arc::from(OTHER_ROUTE)));
        assert_eq!(&*admitted, OTHER_ROUTE);
    }

    #[test]
    fn lookups_write_the_template_in_a_bounded_thread_buffer() {
        let routes = InferredRoutes::new(10);
        routes.label("/items/1");
        let widest = format!("/{}", "a-b".repeat(21)).repeat(MAX_INFERRED_SEGMENTS);
        assert!(matches!(routes.lookup(&widest), Inferred::New(t) if t == widest));
        let longest = format!("/{}", "a".repeat(10_000)).repeat(MAX_INFERRED_SEGMENTS);
        assert!(matches!(routes.lookup(&longest), Inferred::New(t) if t == "/{id}".repeat(16)));
        TEMPLATE.with_borrow(|t| assert!(t.len() <= 1024, "{}", t.len()));
        assert_eq!(
            routes.lookup("/items/2"),
            Inferred::Known(Arc::from("/items/{id}"))
        );
        TEMPLATE.with_borrow(|t| assert_eq!(t, "/items/{id}", "written in the buffer"));
    }

    #[test]
    fn ids_collapse_into_one_template() {
        let routes = InferredRoutes::new(2);
        for i in 0..10_000 {
            assert_eq!(&*routes.label(&format!("/orders/{i}")), "/orders/{id}");
        }
        assert_eq!(routes.len(), 1);
    }
}
