//! Slow and idle clients (docs/forwarding.md, "Slow and idle clients"): a request head
//! trickled a byte at a time is cut off after `limits.headerTimeout` while other clients
//! are served; a keep-alive connection that sends nothing is closed after
//! `limits.idleTimeout`; a slow request body or a slow answer is never cut by either.

mod common;
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use support::{Proxy, REQUEST_COUNT as COUNT, client, raw_upstream, send, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy with a 1 s header timeout and a 1.5 s idle timeout, in front of the test
/// upstream.
async fn proxy() -> Proxy {
    let up = upstream().await;
    Proxy::start(&format!(
        "upstream: {{endpoints: ['{up}']}}\nlimits: {{headerTimeout: 1s, idleTimeout: 1500ms}}\n"
    ))
    .await
}

async fn connect(proxy: &Proxy) -> TcpStream {
    TcpStream::connect(("127.0.0.1", proxy.listen))
        .await
        .expect("connect to the proxy")
}

/// Reads until the proxy closes the connection (or resets it): what it sent, and when.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the proxy closes the connection");
    (received, Instant::now())
}

/// One request on `stream`, read to the end of its (small, length-framed) answer.
async fn request_on(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .expect("write a request");
    read_answer(stream).await
}

/// The head of the next (small, length-framed) answer on `stream`, read to its end.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&received);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return head.to_string();
            }
        }
        let n = stream.read(&mut buf).await.expect("read the answer");
        assert!(n > 0, "closed mid-answer: {text}");
        received.extend_from_slice(&buf[..n]);
    }
}

async fn closed(proxy: &Proxy, reason: &str) -> f64 {
    proxy.metrics().await.sum(
        "routemeter_client_connections_closed_total",
        &[("reason", reason)],
    )
}

#[tokio::test]
async fn a_slowloris_is_cut_off_after_the_header_timeout_while_others_are_served() {
    let proxy = proxy().await;
    let mut slow = connect(&proxy).await;
    let started = Instant::now();
    // A head that never ends: a header line, then a byte every 100 ms, for up to 5 s.
    let trickle = async {
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            .await
            .expect("write");
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    // Meanwhile another client is served as usual.
    let http = client();
    let others = async {
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let (status, _) =
                send(http.get(format!("http://127.0.0.1:{}/fast", proxy.listen))).await;
            statuses.push(status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        statuses
    };
    let (_, statuses) = tokio::join!(trickle, others);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let (answer, at) = read_to_close(&mut slow, Duration::from_secs(5)).await;
    let cut_after = at - started;
    assert!(
        answer.is_empty(),
        "no answer: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_millis(4500),
        "cut off after {cut_after:?}, its head began at once and the limit is 1 s"
    );
    assert_eq!(closed(&proxy, "header_timeout").await, 1.0);
    assert_eq!(closed(&proxy, "idle_timeout").await, 0.0);
    // Not a request: nothing counted under any route.
    assert_eq!(
        proxy.metrics().await.sum(COUNT, &[("http_route", "/slow")]),
        0.0
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout_and_busy_ones_are_not() {
    let proxy = proxy().await;
    // Busy: a request every 500 ms for 3 s, twice the idle timeout, on one connection.
    let mut busy = connect(&proxy).await;
    let mut idle = connect(&proxy).await;
    let head = request_on(&mut idle, "/first").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let idle_since = Instant::now();
    // And one that never sends a byte.
    let mut silent = connect(&proxy).await;
    let busy_run = async {
        for i in 0..6 {
            let head = request_on(&mut busy, &format!("/busy/{i}")).await;
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (_, (answer, idle_closed), (_, silent_closed)) = tokio::join!(
        busy_run,
        read_to_close(&mut idle, Duration::from_secs(5)),
        read_to_close(&mut silent, Duration::from_secs(5)),
    );
    assert!(answer.is_empty());
    for (what, closed_at) in [("idle", idle_closed), ("silent", silent_closed)] {
        let idle_for = closed_at - idle_since;
        assert!(
            idle_for >= Duration::from_millis(1400) && idle_for < Duration::from_millis(4000),
            "{what}: closed after {idle_for:?} idle, the limit is 1.5 s"
        );
    }
    assert_eq!(closed(&proxy, "idle_timeout").await, 2.0);
    assert_eq!(closed(&proxy, "header_timeout").await, 0.0);
    // The busy connection is still open and served.
    let head = request_on(&mut busy, "/still").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
}

#[tokio::test]
async fn a_slow_request_body_and_a_slow_answer_are_not_cut() {
    let proxy = proxy().await;
    // A body of 10 bytes sent one every 300 ms: 3 s, past both timeouts, to an upstream
    // that reads it whole before it answers.
    let reader = raw_upstream(|mut s| async move {
        let mut body = [0u8; 10];
        if s.read_exact(&mut body).await.is_ok() {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
                .await;
            let _ = s.write_all(&body).await;
        }
    })
    .await;
    let uploads = Proxy::start(&format!(
        "upstream: {{endpoints: ['{reader}']}}\nlimits: {{headerTimeout: 1s, idleTimeout: 1500ms}}\n"
    ))
    .await;
    let mut upload = connect(&uploads).await;
    upload
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
        .await
        .expect("write the head");
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        upload.write_all(b"x").await.expect("write a body byte");
    }
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), upload.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(closed(&uploads, "header_timeout").await, 0.0);
    // An answer that takes 2.5 s.
    let mut waiting = connect(&proxy).await;
    let head = request_on(&mut waiting, "/sleep/2500").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(closed(&proxy, "header_timeout").await, 0.0);
    assert_eq!(closed(&proxy, "idle_timeout").await, 0.0);
}

#[tokio::test]
async fn a_request_is_timed_from_its_first_byte_and_not_from_the_idle_wait_before_it() {
    let proxy = proxy().await;
    let mut stream = connect(&proxy).await;
    // A head that arrives in two parts 600 ms apart (inside the 1 s header timeout): the
    // wait for its second part is the request's time, as nginx's `$request_time` counts.
    stream
        .write_all(b"GET /status/200 HTTP/1.1\r\nHo")
        .await
        .expect("write the head's first part");
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream
        .write_all(b"st: a\r\n\r\n")
        .await
        .expect("write the rest of the head");
    let head = read_answer(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    // 600 ms idle on the keep-alive connection (inside the 1.5 s idle timeout), then a
    // request in one piece: the idle wait is not its time.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let head = request_on(&mut stream, "/status/200").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");

    let m = proxy.metrics().await;
    let duration = "http_server_request_duration_seconds";
    assert_eq!(m.sum(&format!("{duration}_count"), &[]), 2.0);
    let within_half_second = m.sum(&format!("{duration}_bucket"), &[("le", "0.5")]);
    assert_eq!(within_half_second, 1.0, "only the second request is fast");
    // The proxy's overhead runs from the first byte to the endpoint's choice: it holds
    // the first request's 600 ms wait for the rest of its head, and not the idle wait.
    let overhead = m.sum("routemeter_proxy_overhead_seconds_sum", &[]);
    assert!((0.55..1.0).contains(&overhead), "overhead {overhead} s");
}
