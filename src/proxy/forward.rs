//! The forwarding headers: what the proxy tells the application about the client it stands
//! in for. `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, RFC 7239 `Forwarded`
//! and `Via`, set on the request sent upstream as [`Forwarding`] says.
//!
//! Trust is counted in hops, as Envoy's `xff_num_trusted_hops`: with `trustedHops: N` the
//! last N entries of an incoming `X-Forwarded-For` (or `Forwarded`) list were written by
//! the N proxies in front of this one and are kept; the entries left of them are whatever
//! the client sent and are dropped, so the first address the application sees is the
//! client's as far as the trusted proxies could tell. With 0 (the default) nothing the
//! client wrote in these headers reaches the application. `docs/forwarding.md` has the
//! whole contract. Everything here is a pure function of the request head.

use std::io::Write as _;
use std::net::IpAddr;

use bytes::Bytes;
use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::{ErrorType, OrErr, Result};

use crate::config::Forwarding;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The scheme the proxy serves: its listener is plain HTTP.
const PROTO: &str = "http";

/// Longest text of an address: an IPv6 address with an IPv4 tail.
const MAX_IP_TEXT: usize = 45;

/// What becomes of one header of the upstream request.
#[derive(Debug, PartialEq)]
enum Action {
    /// Sent as it came in, or absent if it did not.
    Keep,
    /// Not sent.
    Remove,
    /// Sent with this value, replacing any that came in.
    Set(HeaderValue),
}

/// Sets the forwarding headers of `upstream`, the request about to be sent, for a client at
/// `client` (`None` when the connection is not from an IP socket) whose request came in
/// over `received`. Each header is decided and set in turn (in the order they are sent),
/// each from what came in under its own name only.
pub fn apply(
    upstream: &mut RequestHeader,
    settings: &Forwarding,
    client: Option<IpAddr>,
    received: Version,
) -> Result<()> {
    let trusted = usize::from(settings.trusted_hops);
    let client = client.map(|ip| ip.to_canonical());
    let host = upstream.headers.get(header::HOST).cloned().or_else(|| {
        let authority = upstream.uri.authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });

    let xff = if settings.x_forwarded_for {
        x_forwarded_for(&upstream.headers, client, trusted)?.map_or(Action::Remove, Action::Set)
    } else {
        untouched(trusted)
    };
    act(upstream, "X-Forwarded-For", &X_FORWARDED_FOR, xff)?;
    let proto = if settings.x_forwarded_proto {
        keep_trusted(&upstream.headers, &X_FORWARDED_PROTO, trusted)
            .unwrap_or(Action::Set(HeaderValue::from_static(PROTO)))
    } else {
        untouched(trusted)
    };
    act(upstream, "X-Forwarded-Proto", &X_FORWARDED_PROTO, proto)?;
    let rfc7239 = if settings.forwarded {
        let host = host.as_ref().map(HeaderValue::as_bytes);
        Action::Set(forwarded(&upstream.headers, client, host, trusted)?)
    } else {
        untouched(trusted)
    };
    // Last to use the Host value, so it takes it rather than a copy.
    let forwarded_host = if settings.x_forwarded_host {
        keep_trusted(&upstream.headers, &X_FORWARDED_HOST, trusted)
            .unwrap_or_else(|| host.map_or(Action::Remove, Action::Set))
    } else {
        untouched(trusted)
    };
    act(
        upstream,
        "X-Forwarded-Host",
        &X_FORWARDED_HOST,
        forwarded_host,
    )?;
    act(upstream, "Forwarded", &header::FORWARDED, rfc7239)?;
    // Via names proxies, not the client: what came in is not a claim to check.
    let via = if settings.via {
        Action::Set(via(&upstream.headers, received)?)
    } else {
        Action::Keep
    };
    act(upstream, "Via", &header::VIA, via)
}

/// Does `action` to the header sent as `name`, whose key is `key`.
fn act(
    upstream: &mut RequestHeader,
    name: &'static str,
    key: &'static HeaderName,
    action: Action,
) -> Result<()> {
    match action {
        Action::Keep => {}
        Action::Remove => {
            upstream.remove_header(key);
        }
        Action::Set(value) => upstream.insert_header(name, value)?,
    }
    Ok(())
}

/// A header the proxy does not set: passed on from trusted proxies, dropped otherwise.
fn untouched(trusted: usize) -> Action {
    if trusted > 0 {
        Action::Keep
    } else {
        Action::Remove
    }
}

/// `Some(Keep)` when a trusted proxy already set `name`.
fn keep_trusted(headers: &HeaderMap, name: &HeaderName, trusted: usize) -> Option<Action> {
    (trusted > 0 && headers.contains_key(name)).then_some(Action::Keep)
}

/// The `X-Forwarded-For` to send: the last `trusted` entries that came in, then the
/// client's address. `None` when that leaves nothing.
fn x_forwarded_for(
    headers: &HeaderMap,
    client: Option<IpAddr>,
    trusted: usize,
) -> Result<Option<HeaderValue>> {
    let ip = client.map(IpText::of);
    let ip = ip.as_ref().map_or(&[][..], IpText::as_bytes);
    let tail = tail_capacity(headers, &X_FORWARDED_FOR, trusted);
    // Exact when no entry is kept, the usual case: a `Vec` filled to its capacity becomes
    // the value's bytes as it is, without a second allocation for a shared count.
    let mut out = Vec::with_capacity(tail + if tail > 0 { 2 } else { 0 } + ip.len());
    write_tail(&mut out, headers, &X_FORWARDED_FOR, trusted);
    if !ip.is_empty() {
        separate(&mut out);
        out.extend_from_slice(ip);
    }
    if out.is_empty() {
        return Ok(None);
    }
    into_value(out).map(Some)
}

/// The `Forwarded` to send: the last `trusted` elements that came in, then this hop's
/// `for=...;proto=http;host=...`.
fn forwarded(
    headers: &HeaderMap,
    client: Option<IpAddr>,
    host: Option<&[u8]>,
    trusted: usize,
) -> Result<HeaderValue> {
    let host_len = host.map_or(0, |h| h.len() * 2 + 8);
    let mut out = Vec::with_capacity(
        tail_capacity(headers, &header::FORWARDED, trusted) + MAX_IP_TEXT + 24 + host_len,
    );
    write_tail(&mut out, headers, &header::FORWARDED, trusted);
    separate(&mut out);
    write_forwarded_element(&mut out, client, host);
    into_value(out)
}

/// One RFC 7239 element: `for=` the client (`"[v6]"` quoted and bracketed, `unknown` when
/// there is no address), `proto=http`, and `host=` the request's Host.
fn write_forwarded_element(out: &mut Vec<u8>, client: Option<IpAddr>, host: Option<&[u8]>) {
    out.extend_from_slice(b"for=");
    match client {
        Some(ip) if ip.is_ipv6() => {
            out.extend_from_slice(b"\"[");
            out.extend_from_slice(IpText::of(ip).as_bytes());
            out.extend_from_slice(b"]\"");
        }
        Some(ip) => out.extend_from_slice(IpText::of(ip).as_bytes()),
        None => out.extend_from_slice(b"unknown"),
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(PROTO.as_bytes());
    if let Some(host) = host {
        out.extend_from_slice(b";host=");
        push_token_or_quoted(out, host);
    }
}

/// The `Via` to send: what came in, then `<received-protocol> routemeter`.
fn via(headers: &HeaderMap, received: Version) -> Result<HeaderValue> {
    let ours = match received {
        Version::HTTP_10 => "1.0 routemeter",
        Version::HTTP_2 => "2 routemeter",
        Version::HTTP_3 => "3 routemeter",
        _ => "1.1 routemeter",
    };
    if !headers.contains_key(header::VIA) {
        return Ok(HeaderValue::from_static(ours));
    }
    let mut out = Vec::with_capacity(tail_capacity(headers, &header::VIA, usize::MAX) + ours.len());
    write_tail(&mut out, headers, &header::VIA, usize::MAX);
    separate(&mut out);
    out.extend_from_slice(ours.as_bytes());
    into_value(out)
}

/// Room for the elements of `name` that [`write_tail`] may copy, separators included.
fn tail_capacity(headers: &HeaderMap, name: &HeaderName, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    headers.get_all(name).iter().map(|v| v.len() + 2).sum()
}

/// Writes the last `n` elements of the `name` list, over all its lines, joined by `, `.
fn write_tail(out: &mut Vec<u8>, headers: &HeaderMap, name: &HeaderName, n: usize) {
    if n == 0 {
        return;
    }
    let lines = headers.get_all(name);
    let total: usize = lines.iter().map(|v| elements(v.as_bytes()).count()).sum();
    let kept = lines
        .iter()
        .flat_map(|v| elements(v.as_bytes()))
        .skip(total.saturating_sub(n));
    for element in kept {
        separate(out);
        out.extend_from_slice(element);
    }
}

/// The elements of a comma-separated header list (RFC 9110 section 5.6.1), trimmed, empty
/// ones skipped. A comma inside a quoted string, as RFC 7239 values may hold, does not
/// split.
fn elements(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (element, tail) = rest.split_at(element_end(rest));
            rest = tail.get(1..).unwrap_or_default();
            let element = element.trim_ascii();
            if !element.is_empty() {
                return Some(element);
            }
        }
        None
    })
}

/// Where the first element of `s` ends: its first comma outside a quoted string.
fn element_end(s: &[u8]) -> usize {
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in s.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return i,
            _ => {}
        }
    }
    s.len()
}

/// Writes `value` as an RFC 7230 token when it is one, else as a quoted string.
fn push_token_or_quoted(out: &mut Vec<u8>, value: &[u8]) {
    if !value.is_empty() && value.iter().all(|&b| is_tchar(b)) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A token character (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The list separator, before any element but the first.
fn separate(out: &mut Vec<u8>) {
    if !out.is_empty() {
        out.extend_from_slice(b", ");
    }
}

/// An address's text, as `Display` writes it, on the stack. An IPv4 address (every
/// request's, behind a Service) is written digit by digit: `Display` goes through the
/// formatting machinery and a padding pass, a thousand instructions of a request's ~90 k,
/// and `itoa` with a `Vec` push per octet still 270 (bench/README.md, "Where routemeter's
/// instructions go").
struct IpText {
    buf: [u8; MAX_IP_TEXT],
    len: usize,
}

impl IpText {
    fn of(ip: IpAddr) -> Self {
        let mut text = IpText {
            buf: [0; MAX_IP_TEXT],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                // At most MAX_IP_TEXT bytes, so the write cannot run out of room.
                let mut rest = &mut text.buf[..];
                let _ = write!(rest, "{v6}");
                text.len = MAX_IP_TEXT - rest.len();
            }
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A header value owning `bytes`, without copying them.
fn into_value(bytes: Vec<u8>) -> Result<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(bytes))
        .or_err(ErrorType::InvalidHTTPHeader, "building a forwarding header")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "203.0.113.7";

    fn request(headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("a request");
        for (name, value) in headers {
            req.append_header(*name, *value).expect("a header");
        }
        req
    }

    fn settings(trusted_hops: u8) -> Forwarding {
        Forwarding {
            forwarded: true,
            via: true,
            trusted_hops,
            ..Forwarding::default()
        }
    }

    /// The request as sent for a client at `client`: each header's values, joined.
    fn sent(
        headers: &[(&'static str, &str)],
        settings: &Forwarding,
        client: &str,
    ) -> impl Fn(&str) -> Option<String> + use<> {
        let mut req = request(headers);
        let ip = client.parse().ok();
        apply(&mut req, settings, ip, Version::HTTP_11).expect("applies");
        move |name| {
            let values: Vec<&str> = req
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().expect("text"))
                .collect();
            (!values.is_empty()).then(|| values.join(" | "))
        }
    }

    #[test]
    fn defaults_set_the_x_forwarded_headers_only() {
        let h = sent(&[("Host", "shop.example")], &Forwarding::default(), CLIENT);
        assert_eq!(h("x-forwarded-for").as_deref(), Some(CLIENT));
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(h("x-forwarded-host").as_deref(), Some("shop.example"));
        assert_eq!(h("host").as_deref(), Some("shop.example"));
        assert_eq!(h("forwarded"), None);
        assert_eq!(h("via"), None);
    }

    #[test]
    fn with_no_trusted_hop_nothing_the_client_wrote_survives() {
        let spoofed = [
            ("Host", "shop.example"),
            ("X-Forwarded-For", "10.0.0.1, 10.0.0.2"),
            ("X-Forwarded-For", "10.0.0.3"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "admin.example"),
            ("Forwarded", "for=10.0.0.1;proto=https"),
        ];
        let h = sent(&spoofed, &settings(0), CLIENT);
        assert_eq!(h("x-forwarded-for").as_deref(), Some(CLIENT));
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(h("x-forwarded-host").as_deref(), Some("shop.example"));
        assert_eq!(
            h("forwarded").as_deref(),
            Some("for=203.0.113.7;proto=http;host=shop.example")
        );

        // Switched off, they are dropped rather than passed on.
        let off = Forwarding {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            x_forwarded_host: false,
            ..Forwarding::default()
        };
        let h = sent(&spoofed, &off, CLIENT);
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
        ] {
            assert_eq!(h(name), None, "{name}");
        }
    }

    #[test]
    fn trusted_hops_keep_the_last_entries_and_append() {
        let incoming = [
            ("Host", "shop.example"),
            ("X-Forwarded-For", "6.6.6.6, 198.51.100.1"),
            ("X-Forwarded-For", "198.51.100.2"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "www.example"),
        ];
        let h = sent(&incoming, &settings(1), CLIENT);
        assert_eq!(
            h("x-forwarded-for").as_deref(),
            Some("198.51.100.2, 203.0.113.7")
        );
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(h("x-forwarded-host").as_deref(), Some("www.example"));
        let h = sent(&incoming, &settings(2), CLIENT);
        assert_eq!(
            h("x-forwarded-for").as_deref(),
            Some("198.51.100.1, 198.51.100.2, 203.0.113.7")
        );
        // Fewer entries than trusted hops: all of them are kept.
        let h = sent(&incoming, &settings(9), CLIENT);
        assert_eq!(
            h("x-forwarded-for").as_deref(),
            Some("6.6.6.6, 198.51.100.1, 198.51.100.2, 203.0.113.7")
        );
        // Nothing came in: the trusted proxies' absence is not an error.
        let h = sent(&[("Host", "shop.example")], &settings(1), CLIENT);
        assert_eq!(h("x-forwarded-for").as_deref(), Some(CLIENT));
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(h("x-forwarded-host").as_deref(), Some("shop.example"));
        // Switched off, what trusted proxies set passes through untouched.
        let off = Forwarding {
            x_forwarded_for: false,
            ..settings(1)
        };
        let h = sent(&incoming, &off, CLIENT);
        assert_eq!(
            h("x-forwarded-for").as_deref(),
            Some("6.6.6.6, 198.51.100.1 | 198.51.100.2")
        );
    }

    #[test]
    fn forwarded_elements_split_outside_quotes_only() {
        let incoming = [
            ("Host", "shop.example:8080"),
            (
                "Forwarded",
                r#"for=6.6.6.6, for="[2001:db8::1]";host="a,b\",c""#,
            ),
        ];
        let h = sent(&incoming, &settings(1), CLIENT);
        assert_eq!(
            h("forwarded").as_deref(),
            Some(
                r#"for="[2001:db8::1]";host="a,b\",c", for=203.0.113.7;proto=http;host="shop.example:8080""#
            )
        );
    }

    #[test]
    fn ipv6_clients_are_bracketed_and_quoted_in_forwarded_only() {
        let h = sent(
            &[("Host", "[2001:db8::2]:80")],
            &settings(0),
            "2001:db8::17",
        );
        assert_eq!(h("x-forwarded-for").as_deref(), Some("2001:db8::17"));
        assert_eq!(
            h("forwarded").as_deref(),
            Some(r#"for="[2001:db8::17]";proto=http;host="[2001:db8::2]:80""#)
        );
        // An IPv4 client of a dual-stack listener shows as its IPv4 address.
        let h = sent(&[], &settings(0), "::ffff:192.0.2.9");
        assert_eq!(h("x-forwarded-for").as_deref(), Some("192.0.2.9"));
        assert_eq!(h("forwarded").as_deref(), Some("for=192.0.2.9;proto=http"));
    }

    #[test]
    fn without_a_client_address_or_a_host() {
        let h = sent(
            &[("X-Forwarded-Host", "admin.example")],
            &settings(0),
            "none",
        );
        assert_eq!(h("x-forwarded-for"), None);
        assert_eq!(h("x-forwarded-host"), None);
        assert_eq!(h("forwarded").as_deref(), Some("for=unknown;proto=http"));
    }

    #[test]
    fn via_is_appended_with_the_received_version() {
        let h = sent(&[("Via", "1.1 lb")], &settings(0), CLIENT);
        assert_eq!(h("via").as_deref(), Some("1.1 lb, 1.1 routemeter"));
        let mut req = request(&[]);
        apply(&mut req, &settings(0), None, Version::HTTP_10).expect("applies");
        assert_eq!(req.headers["via"], "1.0 routemeter");
        let off = Forwarding {
            via: false,
            ..settings(0)
        };
        let h = sent(&[("Via", "1.1 lb")], &off, CLIENT);
        assert_eq!(
            h("via").as_deref(),
            Some("1.1 lb"),
            "Via is no claim to drop"
        );
    }

    #[test]
    fn values_are_tokens_or_quoted_strings() {
        let quoted = |v: &[u8]| {
            let mut out = Vec::new();
            push_token_or_quoted(&mut out, v);
            String::from_utf8(out).expect("text")
        };
        assert_eq!(quoted(b"shop.example"), "shop.example");
        assert_eq!(quoted(b"a:1"), "\"a:1\"");
        assert_eq!(quoted(br#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quoted(b""), "\"\"");
        let list: Vec<&[u8]> = elements(b" a ,, b,\"c,d\" ,").collect();
        assert_eq!(list, [&b"a"[..], b"b", b"\"c,d\""]);
    }

    proptest::proptest! {
        /// The address's text is `Display`'s, for every address.
        #[test]
        fn an_address_is_written_as_display_writes_it(v4: u32, v6: u128) {
            for ip in [IpAddr::from(v4.to_be_bytes()), IpAddr::from(v6.to_be_bytes())] {
                let text = IpText::of(ip);
                proptest::prop_assert_eq!(std::str::from_utf8(text.as_bytes()).expect("ASCII"), ip.to_string());
            }
        }
    }
}
