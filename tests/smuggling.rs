//! Request smuggling (issue 14): the proxy never forwards a request that two HTTP/1.1
//! parsers could read differently. Each hostile request of a table is written as raw
//! bytes on a connection of its own, and what the client got back, whether the proxy
//! closed the connection, what an upstream that records every byte received, and what
//! the proxy counted, are checked against the outcome the table expects (RFC 9112).

mod common;
#[allow(dead_code)] // the harness of tests/proxy.rs: this file uses part of it
mod support;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Metrics, Proxy, REQUEST_COUNT, raw_exchange_within, raw_listener, status_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the client waits for the proxy to close a connection it expects closed.
const PATIENCE: Duration = Duration::from_secs(2);

/// The answer of the recording upstream to every request it can parse.
const UPSTREAM_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A request as the recording upstream parsed it: the framing it came with, decoded.
#[derive(Debug, Clone)]
struct Received {
    target: String,
    /// Header lines as sent, lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One connection the proxy opened to the recording upstream.
#[derive(Debug, Default)]
struct Connection {
    /// Every byte received, as received.
    bytes: Vec<u8>,
    /// The whole requests parsed from them, in order.
    requests: Vec<Received>,
    /// The proxy closed it (or it sent what this upstream cannot parse, then closed).
    closed: bool,
}

/// An upstream on a raw socket that records every byte each connection brings, parses
/// them strictly (CRLF lines, one `Content-Length` or a final `chunked`) and answers
/// each whole request with [`UPSTREAM_ANSWER`].
#[derive(Clone)]
struct RecordingUpstream {
    addr: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>>,
}

impl RecordingUpstream {
    async fn start() -> Self {
        let connections: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>> = Arc::default();
        let all = connections.clone();
        let addr = raw_listener(move |stream| {
            let connection = Arc::new(Mutex::new(Connection::default()));
            all.lock().expect("lock").push(connection.clone());
            record(stream, connection)
        })
        .await;
        RecordingUpstream { addr, connections }
    }

    /// For each connection whose bytes contain `target`: how many bytes it received from
    /// the start of the line with `target` on, and whether it is closed.
    fn carrying(&self, target: &str) -> Vec<(usize, bool)> {
        let connections = self.connections.lock().expect("lock");
        connections
            .iter()
            .filter_map(|c| {
                let c = c.lock().expect("lock");
                let at = c
                    .bytes
                    .windows(target.len())
                    .position(|w| w == target.as_bytes())?;
                let line = c.bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                Some((c.bytes.len() - line, c.closed))
            })
            .collect()
    }

    /// Every request parsed so far whose target starts with `prefix`.
    fn requests_to(&self, prefix: &str) -> Vec<Received> {
        let connections = self.connections.lock().expect("lock");
        connections
            .iter()
            .flat_map(|c| c.lock().expect("lock").requests.clone())
            .filter(|r| r.target.starts_with(prefix))
            .collect()
    }
}

async fn record(mut stream: tokio::net::TcpStream, connection: Arc<Mutex<Connection>>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        connection
            .lock()
            .expect("lock")
            .bytes
            .extend_from_slice(&buf[..n]);
        loop {
            match parse(&pending) {
                Parsed::Whole(request, used) => {
                    pending.drain(..used);
                    connection.lock().expect("lock").requests.push(request);
                    if stream.write_all(UPSTREAM_ANSWER).await.is_err() {
                        break;
                    }
                }
                Parsed::Partial => break,
                Parsed::Invalid => {
                    connection.lock().expect("lock").closed = true;
                    return;
                }
            }
        }
    }
    connection.lock().expect("lock").closed = true;
}

enum Parsed {
    Whole(Received, usize),
    Partial,
    Invalid,
}

/// A strict HTTP/1.1 request parser: what an application behind the proxy could be.
fn parse(buf: &[u8]) -> Parsed {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Parsed::Partial;
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Parsed::Invalid;
    };
    let mut lines = head.split("\r\n");
    let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let [_, target, "HTTP/1.1"] = request_line[..] else {
        return Parsed::Invalid;
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Invalid;
        };
        if name.is_empty() || name.contains([' ', '\t', '\r', '\n']) || line.contains(['\r', '\n'])
        {
            return Parsed::Invalid;
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = Received {
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    let rest = &buf[head_end + 4..];
    let te = request.values("transfer-encoding");
    let cl = request.values("content-length");
    if !te.is_empty() {
        if te != ["chunked"] || !cl.is_empty() {
            return Parsed::Invalid;
        }
        return match dechunk(rest) {
            Some(Some((body, used))) => {
                request.body = body;
                Parsed::Whole(request, head_end + 4 + used)
            }
            Some(None) => Parsed::Partial,
            None => Parsed::Invalid,
        };
    }
    let length = match cl[..] {
        [] => 0,
        [one] => match one.parse::<usize>() {
            Ok(n) if one.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Parsed::Invalid,
        },
        _ => return Parsed::Invalid,
    };
    if rest.len() < length {
        return Parsed::Partial;
    }
    request.body = rest[..length].to_vec();
    Parsed::Whole(request, head_end + 4 + length)
}

/// A chunked body: `None` if invalid, `Some(None)` if incomplete, else the data and the
/// bytes it took. No chunk extensions, no trailers: the proxy re-frames what it forwards.
fn dechunk(mut buf: &[u8]) -> Option<Option<(Vec<u8>, usize)>> {
    let total = buf.len();
    let mut body = Vec::new();
    loop {
        let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
            return Some(None);
        };
        let size = std::str::from_utf8(&buf[..line_end]).ok()?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let size = usize::from_str_radix(size, 16).ok()?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            return match buf.get(..2) {
                Some(b"\r\n") => Some(Some((body, total - buf.len() + 2))),
                Some(_) => None,
                None => Some(None),
            };
        }
        if buf.len() < size + 2 {
            return Some(None);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

/// How the upstream must see a request the proxy forwards.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// One `Content-Length` of the body's length, no `Transfer-Encoding`.
    Length,
    /// One `Transfer-Encoding: chunked`, no `Content-Length`.
    Chunked,
}

/// What a hostile request must come to.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// The client gets a 400 and the connection is closed after it; no byte of the request
    /// reaches the upstream; it is counted once as 400 `bad_request`.
    Rejected,
    /// Found invalid in the body, after the head went on: the client gets a 400 and the
    /// connection is closed; the upstream gets at most the head and the chunks before the
    /// invalid one, never a whole request, and its connection is closed; counted once as
    /// 400 `bad_request`.
    CutOff,
    /// Forwarded with unambiguous framing, the upstream's answer reaching the client,
    /// and the client's connection closed after it.
    Normalised {
        framing: Framing,
        body: &'static str,
    },
}

use Outcome::{CutOff, Normalised, Rejected};

/// One row of the table: `{}` in `request` is replaced by the case's own target, so the
/// upstream's bytes show which case they came from.
struct Case {
    name: &'static str,
    request: &'static str,
    outcome: Outcome,
}

const fn case(name: &'static str, request: &'static str, outcome: Outcome) -> Case {
    Case {
        name,
        request,
        outcome,
    }
}

const fn forwarded(framing: Framing, body: &'static str) -> Outcome {
    Normalised { framing, body }
}

/// The hostile requests (RFC 9112 section numbers in the names' comments).
const CASES: &[Case] = &[
    // §6.1, §6.3: Transfer-Encoding overrides Content-Length; an intermediary forwarding
    // such a message must first remove Content-Length, and the connection is closed.
    case(
        "cl_then_te",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        forwarded(Framing::Chunked, "hello"),
    ),
    case(
        "te_then_cl",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        forwarded(Framing::Chunked, "hello"),
    ),
    // §6.3 item 5 and RFC 9110 §8.6: differing lengths are an unrecoverable error.
    case(
        "cl_twice_differing",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        Rejected,
    ),
    // RFC 9110 §8.6: identical values may be replaced by one.
    case(
        "cl_twice_identical",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        forwarded(Framing::Length, "hello"),
    ),
    case(
        "cl_list_identical",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 5, 5\r\n\r\nhello",
        forwarded(Framing::Length, "hello"),
    ),
    case(
        "cl_list_differing",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 5, 6\r\n\r\nhello!",
        Rejected,
    ),
    // Content-Length = 1*DIGIT (RFC 9110 §8.6).
    case(
        "cl_not_a_number",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: five\r\n\r\nhello",
        Rejected,
    ),
    case(
        "cl_negative",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: -5\r\n\r\nhello",
        Rejected,
    ),
    case(
        "cl_plus_sign",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: +5\r\n\r\nhello",
        Rejected,
    ),
    case(
        "cl_space_plus",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length:  +5\r\n\r\nhello",
        Rejected,
    ),
    case(
        "cl_hex",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 0x5\r\n\r\nhello",
        Rejected,
    ),
    case(
        "cl_empty",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length:\r\n\r\nhello",
        Rejected,
    ),
    case(
        "cl_overflow",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 18446744073709551621\r\n\r\nhello",
        Rejected,
    ),
    // §6.1: chunked must be the final coding of a request, applied once; §6.3 item 4: else
    // 400 and close. The proxy decodes no other coding: it would forward it unlabelled.
    case(
        "te_chunked_identity",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    case(
        "te_gzip",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
        Rejected,
    ),
    case(
        "te_gzip_chunked",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    case(
        "te_chunked_twice",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    case(
        "te_two_lines",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    case(
        "te_not_chunked_then_chunked",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: xchunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    // §5.1: no whitespace between a field name and the colon; a server must reject it.
    case(
        "te_space_before_colon",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello",
        Rejected,
    ),
    // §5.2: obs-fold in a request: reject or replace by SP; the proxy rejects.
    case(
        "te_obs_fold",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\nhello",
        Rejected,
    ),
    case(
        "obs_fold",
        "GET {} HTTP/1.1\r\nHost: app\r\nX-Note: one\r\n two\r\n\r\n",
        Rejected,
    ),
    // §6.1: a Transfer-Encoding in HTTP/1.0 means faulty framing.
    case(
        "te_in_http10",
        "POST {} HTTP/1.0\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    // §2.2: a bare LF may be taken as a line end by one parser and not by another.
    case(
        "bare_lf_request_line",
        "GET {} HTTP/1.1\nHost: app\r\n\r\n",
        Rejected,
    ),
    case(
        "bare_lf_everywhere",
        "GET {} HTTP/1.1\nHost: app\n\n",
        Rejected,
    ),
    case(
        "bare_lf_hides_te",
        "POST {} HTTP/1.1\r\nHost: app\r\nX-Note: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        Rejected,
    ),
    // §2.2: a bare CR must be rejected (or replaced by SP).
    case(
        "bare_cr",
        "GET {} HTTP/1.1\r\nHost: app\r\nX-Note: a\rTransfer-Encoding: chunked\r\n\r\n",
        Rejected,
    ),
    // RFC 9110 §5.5: NUL in a field value must be rejected (or replaced by SP).
    case(
        "nul_in_value",
        "GET {} HTTP/1.1\r\nHost: app\r\nX-Note: a\0b\r\n\r\n",
        Rejected,
    ),
    // §3: request-line = method SP request-target SP HTTP-version, the version
    // case-sensitive; an invalid request line gets 400, not an autocorrection.
    case(
        "two_spaces_in_request_line",
        "GET  {} HTTP/1.1\r\nHost: app\r\n\r\n",
        Rejected,
    ),
    case(
        "lowercase_version",
        "GET {} http/1.1\r\nHost: app\r\n\r\n",
        Rejected,
    ),
    // §7.1: chunk-size = 1*HEXDIG, then CRLF; chunk data then CRLF.
    case(
        "chunk_size_not_hex",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        CutOff,
    ),
    case(
        "chunk_size_overflow",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
        CutOff,
    ),
    case(
        "chunk_size_negative",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        CutOff,
    ),
    case(
        "chunk_size_leading_space",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
        CutOff,
    ),
    case(
        "chunk_size_bare_lf",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        CutOff,
    ),
    case(
        "chunk_data_without_crlf",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n",
        CutOff,
    ),
    // §7.1.1: extensions are ignored; the proxy forwards the data re-chunked, without them.
    case(
        "chunk_extension_garbage",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5;\x01x=\"\x7f\r\nhello\r\n0\r\n\r\n",
        forwarded(Framing::Chunked, "hello"),
    ),
    // A chunk extension with a bare LF: a reader taking LF for a line end would see
    // `b` as chunk data; the proxy's reading is forwarded re-chunked, and nothing after
    // it on the connection is read.
    case(
        "chunk_extension_bare_lf",
        "POST {} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
        forwarded(Framing::Chunked, "hello"),
    ),
    // Smuggling proper: a second request hidden in a body that a Content-Length reader
    // and a chunked reader split differently. The upstream must never see it as a request.
    case(
        "smuggle_cl_reader_sees_one_request",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
        forwarded(Framing::Chunked, ""),
    ),
    case(
        "smuggle_te_reader_sees_one_request",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n25\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n\r\n0\r\n\r\n",
        forwarded(
            Framing::Chunked,
            "GET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
        ),
    ),
    case(
        "smuggle_behind_obfuscated_te",
        "POST {} HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
        Rejected,
    ),
];

/// What one case came to.
#[derive(Debug)]
struct Seen {
    statuses: Vec<String>,
    closed: bool,
    /// The requests the upstream parsed for the case's target.
    forwarded: Vec<Received>,
    /// Bytes the upstream received from the case's request line on.
    bytes_upstream: usize,
    /// Whether a connection that brought them is still open.
    upstream_open: bool,
    bad_requests: f64,
    /// Of them, under one of [`REFUSED_ROUTES`].
    bad_requests_routed: f64,
    /// Whether a normal request on a new connection was served after it.
    then_served: bool,
}

impl Seen {
    fn summary(&self) -> String {
        let upstream = match (&self.forwarded[..], self.bytes_upstream) {
            ([], 0) => "upstream: nothing".to_string(),
            ([], n) => format!(
                "upstream: {n} bytes of it, no whole request, {}",
                if self.upstream_open { "open" } else { "closed" }
            ),
            (requests, _) => {
                let r = &requests[0];
                format!(
                    "upstream: {} request(s), cl={:?} te={:?} body={:?}",
                    requests.len(),
                    r.values("content-length"),
                    r.values("transfer-encoding"),
                    String::from_utf8_lossy(&r.body)
                )
            }
        };
        format!(
            "client: {:?} {}; {upstream}; counted 400 bad_request: {}",
            self.statuses,
            if self.closed { "closed" } else { "kept open" },
            self.bad_requests
        )
    }
}

/// The statuses of the responses in `received`, one after the other, each framed by its
/// `Content-Length` (the upstream's answers and the proxy's own all have one).
fn statuses(mut received: &str) -> Vec<String> {
    let mut statuses = Vec::new();
    while received.starts_with("HTTP/1.") {
        statuses.push(status_of(received).to_string());
        let Some(end) = received.find("\r\n\r\n") else {
            break;
        };
        let length = received[..end]
            .split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        received = received.get(end + 4 + length..).unwrap_or_default();
    }
    statuses
}

/// Waits until the proxy recorded `total` requests, at most 2 s, and scrapes.
async fn metrics_at(proxy: &Proxy, total: f64) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let m = proxy.metrics().await;
        if m.sum(REQUEST_COUNT, &[]) >= total || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A refused request's series.
const BAD_REQUEST: [(&str, &str); 2] = [
    ("http_response_status_code", "400"),
    ("error_type", "bad_request"),
];

/// The route labels a refused request may be counted under: that of paths of no route
/// (none is declared here), or the template the proxy learnt for the cases' paths from
/// the ones it forwarded.
const REFUSED_ROUTES: [&str; 2] = ["_other", "/case/{id}"];

/// The refused requests counted: in all, and under [`REFUSED_ROUTES`].
fn bad_requests(m: &Metrics) -> (f64, f64) {
    let routed = REFUSED_ROUTES.iter().map(|route| {
        let mut labels = BAD_REQUEST.to_vec();
        labels.push(("http_route", route));
        m.sum(REQUEST_COUNT, &labels)
    });
    (m.sum(REQUEST_COUNT, &BAD_REQUEST), routed.sum())
}

async fn run(
    proxy: &Proxy,
    up: &RecordingUpstream,
    n: usize,
    case: &Case,
    total: &mut f64,
) -> Seen {
    let target = format!("/case/{n}");
    let request = case.request.replacen("{}", &target, 1);
    let before = bad_requests(&proxy.metrics().await);
    let exchange = raw_exchange_within(proxy, request.as_bytes(), |_| false, PATIENCE).await;

    // A normal request on a new connection: served, and a barrier for what the case sent.
    let ok = format!("GET /ok/{n} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
    let normal = raw_exchange_within(proxy, ok.as_bytes(), |_| false, PATIENCE).await;
    let then_served =
        status_of(&normal.received) == "200" && up.requests_to(&format!("/ok/{n}")).len() == 1;
    // Give the upstream side of a cut-off request time to be closed.
    let deadline = Instant::now() + Duration::from_secs(1);
    while up.carrying(&target).iter().any(|c| !c.1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let statuses = statuses(&exchange.received);
    *total += statuses.len() as f64 + 1.0;
    let m = metrics_at(proxy, *total).await;
    // Whatever was counted, later cases start from it.
    *total = m.sum(REQUEST_COUNT, &[]);
    let carrying = up.carrying(&target);
    Seen {
        statuses,
        closed: exchange.closed,
        forwarded: up.requests_to(&target),
        bytes_upstream: carrying.iter().map(|c| c.0).sum(),
        upstream_open: carrying.iter().any(|c| !c.1),
        bad_requests: bad_requests(&m).0 - before.0,
        bad_requests_routed: bad_requests(&m).1 - before.1,
        then_served,
    }
}

/// How `seen` differs from `outcome`, if it does.
fn mismatch(outcome: Outcome, seen: &Seen) -> Option<String> {
    let mut wrong = Vec::new();
    if !seen.then_served {
        wrong.push("a normal request after it was not served".to_string());
    }
    if !seen.closed {
        wrong.push("the connection was kept open".to_string());
    }
    match outcome {
        Rejected | CutOff => {
            if seen.statuses != ["400"] {
                wrong.push(format!("answered {:?}, not one 400", seen.statuses));
            }
            if (seen.bad_requests, seen.bad_requests_routed) != (1.0, 1.0) {
                wrong.push(format!(
                    "counted {} times as 400 bad_request, {} under {REFUSED_ROUTES:?}",
                    seen.bad_requests, seen.bad_requests_routed
                ));
            }
            if !seen.forwarded.is_empty() {
                wrong.push("a whole request reached the upstream".to_string());
            }
            if matches!(outcome, Rejected) && seen.bytes_upstream > 0 {
                wrong.push(format!(
                    "{} bytes reached the upstream",
                    seen.bytes_upstream
                ));
            }
            if seen.upstream_open {
                wrong.push("the upstream connection stayed open".to_string());
            }
        }
        Normalised { framing, body, .. } => {
            if seen.statuses != ["200"] {
                wrong.push(format!("answered {:?}, not one 200", seen.statuses));
            }
            if seen.bad_requests != 0.0 {
                wrong.push("counted as a bad request".to_string());
            }
            match &seen.forwarded[..] {
                [r] => {
                    let (cl, te) = (r.values("content-length"), r.values("transfer-encoding"));
                    let length = body.len().to_string();
                    let framed = match framing {
                        Framing::Length => cl == [length.as_str()] && te.is_empty(),
                        Framing::Chunked => te == ["chunked"] && cl.is_empty(),
                    };
                    if !framed {
                        wrong.push(format!("forwarded with cl={cl:?} te={te:?}"));
                    }
                    if r.body != body.as_bytes() {
                        wrong.push(format!(
                            "forwarded the body {:?}",
                            String::from_utf8_lossy(&r.body)
                        ));
                    }
                }
                other => wrong.push(format!("{} requests reached the upstream", other.len())),
            }
        }
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// Every case of [`CASES`] on one proxy, each on a new connection, then a normal request
/// on another; all mismatches are reported at once, with what each case came to.
#[tokio::test]
async fn hostile_requests_are_rejected_or_normalised_and_closed() {
    assert!(CASES.len() >= 20);
    let up = RecordingUpstream::start().await;
    let proxy = Proxy::start(&format!("upstream: {{endpoints: ['{}']}}\n", up.addr)).await;
    let mut total = 0.0;
    let mut report = String::new();
    let mut failed = 0;
    for (n, case) in CASES.iter().enumerate() {
        let seen = run(&proxy, &up, n, case, &mut total).await;
        let verdict = mismatch(case.outcome, &seen);
        failed += usize::from(verdict.is_some());
        let _ = writeln!(
            report,
            "{:<36} {:<10} {}{}",
            case.name,
            match case.outcome {
                Rejected => "rejected",
                CutOff => "cut off",
                Normalised { .. } => "normalised",
            },
            seen.summary(),
            verdict.map_or(String::new(), |v| format!("\n{:<47} MISMATCH: {v}", ""))
        );
    }
    eprintln!("{report}");
    assert!(
        up.requests_to("/smuggled").is_empty(),
        "a hidden request reached the upstream as a request"
    );
    assert_eq!(failed, 0, "{failed} of {} cases:\n{report}", CASES.len());
}

/// pingora answers `CONNECT` 405 itself, before any hook (it does not tunnel): that is
/// counted too, once, as the proxy's refusal of the request as sent.
#[tokio::test]
async fn connect_gets_405_from_pingora_and_is_counted_once() {
    let up = RecordingUpstream::start().await;
    let proxy = Proxy::start(&format!("upstream: {{endpoints: ['{}']}}\n", up.addr)).await;
    let connect = b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n";
    let exchange = raw_exchange_within(&proxy, connect, |_| false, PATIENCE).await;
    assert_eq!(
        statuses(&exchange.received),
        ["405"],
        "{}",
        exchange.received
    );
    assert!(exchange.closed, "the connection is closed after the 405");
    let m = proxy.metrics_after(1.0).await;
    let refused = [
        ("http_route", "_other"),
        ("http_response_status_code", "405"),
        ("error_type", "bad_request"),
    ];
    assert_eq!(m.sum(REQUEST_COUNT, &refused), 1.0);
    assert_eq!(m.sum(REQUEST_COUNT, &[]), 1.0);
    assert!(
        up.carrying("app:443").is_empty(),
        "nothing reached the upstream"
    );
}
