//! Request framing that two HTTP/1.1 parsers could read differently, which the proxy
//! refuses or rewrites before a request goes upstream (docs/forwarding.md, "Request
//! smuggling").
//!
//! pingora has by then refused most of it ([`super::connection`]): conflicting or invalid
//! `Content-Length`, a final coding other than `chunked`, `Transfer-Encoding` in HTTP/1.0,
//! obs-fold, bare CR, NUL. With both `Content-Length` and `Transfer-Encoding` it drops the
//! `Content-Length`, reads the body as chunked and closes the connection after the answer
//! (RFC 9112 §6.1, §6.3 item 3). What it lets through is checked here.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

/// Why a request's framing is refused: each is answered 400 and the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguous {
    /// RFC 9112 §2.2: a recipient MAY take a bare LF for a line end; another one on the
    /// way may not, and the two then see different header fields (a `Transfer-Encoding`
    /// that one of them does not).
    #[error("a line of the request head ends in a bare LF")]
    BareLineFeed,
    /// RFC 9112 §6.1: `chunked` must not be applied more than once, and the proxy decodes
    /// no other coding: it would forward the body re-chunked without the other codings'
    /// names, which the application would read as a different body. pingora itself
    /// checks only that the last coding of the last field line is `chunked`. 400 rather
    /// than the 501 §6.1 suggests for an unknown coding, so that a client's request is
    /// never counted as the service's error.
    #[error("a Transfer-Encoding other than one chunked coding")]
    TransferCoding,
    /// RFC 9112 §3.2: a request-target is in origin form (`/...`), absolute form
    /// (`http://...`) or, for `OPTIONS`, asterisk form. pingora percent-encodes a target
    /// it cannot parse instead of refusing it, so `GET  /a HTTP/1.1` (two spaces) would go
    /// upstream as `GET %20/a HTTP/1.1`; §3 says not to autocorrect a request line.
    #[error("a request-target in no form HTTP/1.1 allows")]
    Target,
    /// RFC 9112 §3.2: an HTTP/1.1 request without `Host` is answered 400, not forwarded.
    /// HTTP/1.0 did not require it, and HTTP/2 carries `:authority` instead.
    #[error("HTTP/1.1 request without Host")]
    NoHost,
}

/// What the proxy does with a request whose framing it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    /// The one value of a `Content-Length` sent more than once, or as a list, with the
    /// same value (RFC 9110 §8.6 lets a recipient replace them by one): the request goes
    /// upstream with this single field.
    pub collapsed_length: Option<u64>,
    /// The client's connection is closed after the answer: for a collapsed length, and
    /// for every chunked body. pingora decodes chunks leniently where the proxy cannot
    /// see it (chunk extensions of any bytes, a chunk-size line with no digit taken for
    /// the last chunk, RFC 9112 §7.1), and forwards them re-chunked; what such a reading
    /// leaves over on the connection is then never read as a next request.
    pub close: bool,
}

/// Checks a request head as pingora parsed it; `raw` is the head as received (request
/// line and fields).
pub fn check(req: &RequestHeader, raw: &[u8]) -> Result<Accepted, Ambiguous> {
    let fields = Fields::of(req);
    if !fields.host && req.version == http::Version::HTTP_11 {
        return Err(Ambiguous::NoHost);
    }
    if has_bare_line_feed(raw) {
        return Err(Ambiguous::BareLineFeed);
    }
    if !target_form_is_valid(req) {
        return Err(Ambiguous::Target);
    }
    let chunked = match fields.codings {
        Codings::None => false,
        Codings::Chunked => true,
        Codings::Other => return Err(Ambiguous::TransferCoding),
    };
    let collapsed_length = fields.length.collapsed();
    Ok(Accepted {
        collapsed_length,
        close: chunked || collapsed_length.is_some(),
    })
}

/// What the checks read of a request's fields, found in one pass over them: a look-up
/// by name hashes the name and probes the map, about 130 instructions, where a field
/// passed over costs about 25 (an enum compare per name checked), so for heads of up to
/// a dozen or so fields one pass is the cheaper way to answer three look-ups.
struct Fields<'a> {
    host: bool,
    codings: Codings,
    length: Length<'a>,
}

/// The codings of all `Transfer-Encoding` lines, in order, as far as the check goes.
#[derive(Clone, Copy)]
enum Codings {
    None,
    /// Exactly one, `chunked`.
    Chunked,
    /// Anything else: another coding, or more than one.
    Other,
}

/// The `Content-Length` lines, as far as [`Length::collapsed`] needs them.
#[derive(Clone, Copy)]
enum Length<'a> {
    None,
    /// One line, its value.
    One(&'a [u8]),
    /// More than one line, the first's value.
    Repeated(&'a [u8]),
}

impl<'a> Fields<'a> {
    fn of(req: &'a RequestHeader) -> Self {
        let mut fields = Fields {
            host: false,
            codings: Codings::None,
            length: Length::None,
        };
        for (name, value) in &req.headers {
            if name == HOST {
                fields.host = true;
            } else if name == TRANSFER_ENCODING {
                let codings = value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    // RFC 9110 §5.6.1: empty list elements are ignored.
                    .filter(|coding| !coding.is_empty());
                for coding in codings {
                    fields.codings = match fields.codings {
                        Codings::None if coding.eq_ignore_ascii_case(b"chunked") => {
                            Codings::Chunked
                        }
                        _ => Codings::Other,
                    };
                }
            } else if name == CONTENT_LENGTH {
                fields.length = match fields.length {
                    Length::None => Length::One(value.as_bytes()),
                    Length::One(first) | Length::Repeated(first) => Length::Repeated(first),
                };
            }
        }
        fields
    }
}

impl Length<'_> {
    /// The one value of a `Content-Length` sent more than once, or as a list: the first
    /// line's first element. Whether they all agree pingora has checked (it refuses
    /// conflicting lengths).
    fn collapsed(self) -> Option<u64> {
        let (first, repeated) = match self {
            Length::None => return None,
            Length::One(first) => (first, first.contains(&b',')),
            Length::Repeated(first) => (first, true),
        };
        let digits = first.split(|&b| b == b',').next()?.trim_ascii();
        repeated
            .then(|| std::str::from_utf8(digits).ok()?.parse().ok())
            .flatten()
    }
}

/// Whether an LF of `raw` is not preceded by a CR. The head of every request is scanned:
/// each 64-byte block by a fold with no branch in it, which the compiler turns into
/// vector compares (16 bytes a step), where a search from line end to line end (memchr)
/// paid its set-up once per line.
fn has_bare_line_feed(raw: &[u8]) -> bool {
    const BLOCK: usize = 64;
    let Some((&first, rest)) = raw.split_first() else {
        return false;
    };
    // Each byte after the first, beside the one before it.
    first == b'\n'
        || rest
            .chunks(BLOCK)
            .zip(raw.chunks(BLOCK))
            .any(|(bytes, before)| {
                bytes.iter().zip(before).fold(false, |bare, (&b, &prev)| {
                    bare | ((b == b'\n') & (prev != b'\r'))
                })
            })
}

/// RFC 9112 §3.2.1–3.2.4; `CONNECT` (authority form) never gets here: pingora answers
/// it 405.
fn target_form_is_valid(req: &RequestHeader) -> bool {
    let target = req.raw_path();
    let scheme = |scheme: &[u8]| {
        target
            .get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    };
    target.starts_with(b"/")
        || scheme(b"http://")
        || scheme(b"https://")
        || (target == b"*" && req.method == http::Method::OPTIONS)
}

/// Sends a collapsed `Content-Length` upstream as a single field.
pub fn collapse_length(req: &mut RequestHeader, length: u64) -> pingora::Result<()> {
    req.insert_header(CONTENT_LENGTH, length)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/1.1 head with `Host: a` and `fields`.
    fn head(method: &str, target: &str, fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = without_host(method, target, fields);
        req.append_header("Host", "a").expect("a field");
        req
    }

    fn without_host(method: &str, target: &str, fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).expect("a head");
        for (name, value) in fields {
            req.append_header(name.to_string(), *value)
                .expect("a field");
        }
        req
    }

    #[test]
    fn an_http_1_1_request_needs_a_host() {
        let raw = b"GET /a HTTP/1.1\r\n\r\n";
        let fields = [("accept", "*/*"), ("content-length", "0")];
        let mut req = without_host("GET", "/a", &fields);
        assert_eq!(check(&req, raw), Err(Ambiguous::NoHost));
        // Before the other checks, as the 400 the proxy answered first before.
        assert_eq!(check(&req, b"GET /a HTTP/1.1\n\n"), Err(Ambiguous::NoHost));
        req.set_version(http::Version::HTTP_10);
        assert!(check(&req, raw).is_ok(), "HTTP/1.0 did not require it");
        // Wherever it is among the fields.
        let mut req = without_host("GET", "/a", &fields[..1]);
        req.append_header("host", "a").expect("a field");
        req.append_header("content-length", "0").expect("a field");
        assert!(check(&req, raw).is_ok());
        assert_eq!(
            Ambiguous::NoHost.to_string(),
            "HTTP/1.1 request without Host",
            "the body of the 400, as before"
        );
    }

    #[test]
    fn codings_and_lengths_are_read_across_other_fields() {
        let fields = [
            ("transfer-encoding", "chunked"),
            ("accept", "*/*"),
            ("transfer-encoding", ""),
            ("content-length", "7"),
            ("user-agent", "t"),
            ("content-length", "7"),
        ];
        assert_eq!(
            checked(&fields),
            Ok(Accepted {
                collapsed_length: Some(7),
                close: true
            })
        );
        let fields = [
            ("transfer-encoding", "chunked"),
            ("accept", "*/*"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(checked(&fields), Err(Ambiguous::TransferCoding));
    }

    fn checked(fields: &[(&str, &str)]) -> Result<Accepted, Ambiguous> {
        check(&head("POST", "/a", fields), b"POST /a HTTP/1.1\r\n\r\n")
    }

    #[test]
    fn only_one_chunked_coding_is_accepted_and_then_closes() {
        let close = |fields| checked(fields).map(|a| a.close);
        assert_eq!(close(&[("transfer-encoding", "chunked")]), Ok(true));
        assert_eq!(close(&[("transfer-encoding", "Chunked, ")]), Ok(true));
        assert_eq!(close(&[("content-length", "5")]), Ok(false));
        for codings in [
            &[("transfer-encoding", "gzip, chunked")][..],
            &[("transfer-encoding", "chunked, chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "chunked;q=1")],
            &[("transfer-encoding", "identity")],
        ] {
            assert_eq!(
                checked(codings),
                Err(Ambiguous::TransferCoding),
                "{codings:?}"
            );
        }
    }

    #[test]
    fn bare_line_feeds_are_refused_anywhere_in_the_head() {
        let req = head("GET", "/a", &[]);
        assert!(check(&req, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
        for raw in [
            &b"GET /a HTTP/1.1\nHost: a\r\n\r\n"[..],
            b"GET /a HTTP/1.1\r\nHost: a\n\r\n",
            b"\nGET /a HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(check(&req, raw), Err(Ambiguous::BareLineFeed));
        }
    }

    #[test]
    fn a_bare_line_feed_is_found_at_every_offset_across_blocks() {
        // Header lines of 1 to 9 bytes, so line ends fall on every offset of the 64-byte
        // blocks, and one LF at a time made bare (or a CR before it taken away).
        let mut clean = b"GET /a HTTP/1.1\r\n".to_vec();
        for n in 1..40 {
            clean.extend(std::iter::repeat_n(b'x', n % 9 + 1));
            clean.extend_from_slice(b"\r\n");
        }
        clean.extend_from_slice(b"\r\n");
        let reference = |raw: &[u8]| {
            raw.iter()
                .enumerate()
                .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
        };
        assert!(!has_bare_line_feed(&clean));
        assert!(!has_bare_line_feed(b""));
        for i in 0..clean.len() {
            for replacement in [b'\n', b'y'] {
                let mut raw = clean.clone();
                raw[i] = replacement;
                assert_eq!(has_bare_line_feed(&raw), reference(&raw), "byte {i}");
            }
        }
    }

    #[test]
    fn request_targets_in_no_form_are_refused() {
        let raw = b"X / HTTP/1.1\r\n\r\n";
        for (method, target) in [("GET", "/a"), ("GET", "HTTP://h/a"), ("OPTIONS", "*")] {
            assert!(check(&head(method, target, &[]), raw).is_ok(), "{target}");
        }
        for (method, target) in [("GET", "%20/a"), ("GET", "*"), ("GET", "a/b")] {
            assert_eq!(
                check(&head(method, target, &[]), raw),
                Err(Ambiguous::Target),
                "{target}"
            );
        }
    }

    #[test]
    fn repeated_identical_lengths_collapse_to_one() {
        let length = |fields| checked(fields).map(|a| a.collapsed_length);
        assert_eq!(length(&[("content-length", "5")]), Ok(None));
        assert_eq!(length(&[("content-length", "5, 5")]), Ok(Some(5)));
        assert_eq!(
            checked(&[("content-length", "5, 5")]).map(|a| a.close),
            Ok(true)
        );
        assert_eq!(
            length(&[("content-length", "5"), ("content-length", "5")]),
            Ok(Some(5))
        );
        let mut req = head(
            "POST",
            "/a",
            &[("content-length", "5"), ("content-length", "5")],
        );
        collapse_length(&mut req, 5).expect("a field");
        let values: Vec<_> = req.headers.get_all(CONTENT_LENGTH).iter().collect();
        assert_eq!(values, ["5"]);
    }
}
