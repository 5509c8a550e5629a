//! Request framing that two HTTP/1.1 parsers could read differently, which the proxy
//! refuses or rewrites before a request goes upstream (docs/forwarding.md, "Request
//! smuggling").
//!
//! pingora has by then refused most of it ([`super::connection`]): conflicting or invalid
//! `Content-Length`, a final coding other than `chunked`, `Transfer-Encoding` in HTTP/1.0,
//! obs-fold, bare CR, NUL. With both `Content-Length` and `Transfer-Encoding` it drops the
//! `Content-Length`, reads the body as chunked and closes the connection after the answer
//! (RFC 9112 §6.1, §6.3 item 3). What it lets through is checked here.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
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
    if has_bare_line_feed(raw) {
        return Err(Ambiguous::BareLineFeed);
    }
    if !target_form_is_valid(req) {
        return Err(Ambiguous::Target);
    }
    let mut codings = req
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        // RFC 9110 §5.6.1: empty list elements are ignored.
        .filter(|coding| !coding.is_empty());
    let chunked = match (codings.next(), codings.next()) {
        (None, _) => false,
        (Some(coding), None) if coding.eq_ignore_ascii_case(b"chunked") => true,
        _ => return Err(Ambiguous::TransferCoding),
    };
    let collapsed_length = collapsed_length(req);
    Ok(Accepted {
        collapsed_length,
        close: chunked || collapsed_length.is_some(),
    })
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

/// The value of a `Content-Length` sent as more than one field line or as a list; pingora
/// has already refused the request unless every value is the same number.
fn collapsed_length(req: &RequestHeader) -> Option<u64> {
    let mut values = req.headers.get_all(CONTENT_LENGTH).iter();
    let first = values.next()?;
    let repeated = values.next().is_some() || first.as_bytes().contains(&b',');
    let digits = first.as_bytes().split(|&b| b == b',').next()?.trim_ascii();
    repeated
        .then(|| std::str::from_utf8(digits).ok()?.parse().ok())
        .flatten()
}

/// Sends a collapsed `Content-Length` upstream as a single field.
pub fn collapse_length(req: &mut RequestHeader, length: u64) -> pingora::Result<()> {
    req.insert_header(CONTENT_LENGTH, length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, target: &str, fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).expect("a head");
        for (name, value) in fields {
            req.append_header(name.to_string(), *value)
                .expect("a field");
        }
        req
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
