//! Each client connection as pingora reads and writes it: the requests pingora refuses
//! before any hook of [`MeteringProxy`] sees them, counted all the same, and the client
//! timeouts pingora does not have.
//!
//! ## Refused requests
//!
//! pingora parses each request head itself and answers one it cannot take without
//! calling the proxy: 400 for a head that is not valid HTTP/1.1 or whose framing is
//! ambiguous (conflicting or invalid `Content-Length`, a final coding other than
//! `chunked`, `Transfer-Encoding` in HTTP/1.0, obs-fold, a bare CR, a NUL...; RFC 9112
//! §§2.2, 5, 6) and 405 for `CONNECT`; then it closes the connection. Such a request
//! never reaches `logging()`, so nothing would count it.
//!
//! Each client connection is therefore handed to pingora inside a [`Watched`] stream,
//! which keeps the start of the last response head written to the client and how many
//! requests the proxy had recorded by then ([`mark_recorded`], called from `logging()`).
//! A head that no `logging()` followed can only be one of pingora's own answers: when
//! the connection ends with one, it is recorded with its status and
//! `error_type="bad_request"`, under the label of requests of no route. pingora closes
//! the connection after such an answer, so there is at most one per connection, the last
//! thing written on it.
//!
//! ## Client timeouts
//!
//! pingora bounds each read of a request head (60 s) but not the head as a whole, so a
//! client that trickles its headers a byte at a time holds a connection forever
//! (cloudflare/pingora#447); and after a first request it waits for the next one on a
//! keep-alive connection with no limit at all. The stream knows when pingora waits for a
//! request head: when the proxy has recorded as many requests as it has seen heads of
//! ([`mark_head`], called from `early_request_filter`). A read that waits then is cut:
//! - `limits.idleTimeout` after the connection was opened or its last request recorded,
//!   while no byte of the next head has come: the read ends as if the client had closed,
//!   and pingora closes the connection quietly;
//! - `limits.headerTimeout` after the first byte of a head that is still not complete:
//!   the read fails, and pingora closes the connection without an answer, as nginx does
//!   past `client_header_timeout`.
//!
//! A cut comes up to 10 ms late: the timer is one of pingora's fast timers, set once
//! for a connection's wait and moved on only when it fires before the deadline of the
//! wait then in progress, so a keep-alive connection's requests set no timer each.
//!
//! Both are counted in `routemeter_client_connections_closed_total{reason}`. Reads of a
//! request's body, and of a connection upgraded to a websocket, are not bounded here
//! (`timeouts.read`-style limits on clients are pingora's 60 s per read).

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::{HttpProxy, Session};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::metrics::ProxyMetrics;
use super::service::{MeteringProxy, record_refused};
use super::state::SharedState;

/// How much of a response head is kept: enough for `HTTP/1.1 400 `.
const KEPT: usize = 13;

/// The proxy's pingora application, each client connection watched as [`Watched`].
pub struct Counted {
    proxy: Arc<HttpProxy<MeteringProxy>>,
    state: SharedState,
    metrics: Arc<ProxyMetrics>,
}

impl Counted {
    /// `proxy`, whose refusals are recorded in `metrics` with the labels of `state`.
    pub fn new(
        proxy: HttpProxy<MeteringProxy>,
        state: SharedState,
        metrics: Arc<ProxyMetrics>,
    ) -> Self {
        Counted {
            proxy: Arc::new(proxy),
            state,
            metrics,
        }
    }
}

#[async_trait]
impl ServerApp for Counted {
    /// Not an `async fn`: the connection's future is the proxy's own, handed back as it is.
    /// Awaited inside a future of ours, it would sit under one more state machine that
    /// every wake-up of the connection goes through, about 120 instructions a request
    /// (bench/README.md, "Where routemeter's instructions go").
    fn process_new<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        stream: Stream,
        shutdown: &'life1 ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<Stream>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let watched = Watched {
            inner: stream,
            recorded: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            answer: None,
            read_at: None,
            opened: Instant::now(),
            recorded_at: AtomicU64::new(0),
            waiting: None,
            timer: None,
            app: self.clone(),
        };
        self.proxy.process_new(Box::new(watched), shutdown)
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

/// Called by `logging()`: the request is recorded, its answer with it, `at` (logging's
/// own clock reading, which starts the wait for the next request).
pub fn mark_recorded(session: &Session, at: Instant) {
    if let Some(watched) = watched(session) {
        let since_opened = at.saturating_duration_since(watched.opened).as_nanos();
        let since_opened = u64::try_from(since_opened).unwrap_or(u64::MAX);
        watched.recorded_at.store(since_opened, Ordering::Relaxed);
        bump(&watched.recorded);
    }
}

/// Called by `early_request_filter`: a request head was read whole, so reads that follow
/// are its body's until it is recorded. Returns when the request's first byte was read;
/// `None` when its bytes came in a read with an earlier request's (pipelined), or the
/// connection is not watched.
pub fn mark_head(session: &Session) -> Option<Instant> {
    let watched = watched(session)?;
    bump(&watched.heads);
    let recorded = watched.recorded.load(Ordering::Relaxed);
    watched
        .read_at
        .filter(|(after, _)| *after == recorded)
        .map(|(_, at)| at)
}

/// Adds 1 to a count of a connection's: a load and a store, not a locked read-modify-write,
/// as only the connection's own task writes it (its hooks and its reads run there).
fn bump(count: &AtomicU64) {
    count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

fn watched(session: &Session) -> Option<&Watched> {
    session
        .as_downstream()
        .stream()
        .and_then(|stream| (**stream).as_any().downcast_ref::<Watched>())
}

/// The deadline of a wait for a request head, as a pingora fast timer (10 ms ticks, on
/// pingora's timer thread). tokio's timers would do, but with one on its wheel a runtime
/// parks through its timer driver on every wake-up, about 750 instructions a time
/// (bench/README.md, "Where routemeter's instructions go").
struct Deadline {
    /// When it fires (or up to a tick, 10 ms, later; or a little sooner).
    at: Instant,
    sleep: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    /// What the timer wakes, once polled: while that still wakes the reading task, the
    /// timer is polled again only once it has woken it. Each poll takes the lock of the
    /// timer's `Notify`; a look at the alarm is one load.
    alarm: Option<Arc<Alarm>>,
}

/// The waker a [`Deadline`]'s timer is polled with: it notes that the timer woke, then
/// wakes the task.
struct Alarm {
    rang: AtomicBool,
    task: Waker,
}

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.rang.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl Deadline {
    fn new(at: Instant) -> Self {
        let sleep =
            pingora::time::fast_timeout::fast_sleep(at.saturating_duration_since(Instant::now()));
        Deadline {
            at,
            sleep: Box::pin(sleep),
            alarm: None,
        }
    }

    /// Whether it has fired; if not, it wakes the task of `cx` when it does. Not called
    /// again once it returned true.
    fn fired(&mut self, cx: &mut Context<'_>) -> bool {
        let alarm = match &self.alarm {
            Some(alarm) if alarm.task.will_wake(cx.waker()) => {
                if !alarm.rang.load(Ordering::Acquire) {
                    return false;
                }
                // Cleared before the poll: a ring after it is one the poll may not see.
                alarm.rang.store(false, Ordering::Relaxed);
                alarm.clone()
            }
            _ => {
                let alarm = Arc::new(Alarm {
                    rang: AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                self.alarm = Some(alarm.clone());
                alarm
            }
        };
        let waker = Waker::from(alarm);
        self.sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
    }
}

/// What a read that waits for a request head is waiting through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// No byte of the next head yet: `limits.idleTimeout`.
    Idle,
    /// Part of a head: `limits.headerTimeout`.
    Head,
}

/// A client connection as pingora reads and writes it, and its last response head.
pub struct Watched {
    inner: Stream,
    /// How many requests the proxy recorded on this connection: an atomic, as
    /// `logging()` only reaches this stream through a shared reference.
    recorded: AtomicU64,
    /// The last response head written.
    answer: Option<Answer>,
    /// How many request heads pingora read whole on this connection ([`mark_head`]).
    heads: AtomicU64,
    /// When bytes were first read after the `recorded`-th request was recorded.
    read_at: Option<(u64, Instant)>,
    /// When the connection was opened.
    opened: Instant,
    /// When the last request was recorded, in nanoseconds since `opened` (0 before the
    /// first): the idle timeout runs from then.
    recorded_at: AtomicU64,
    /// What the wait for a request head in progress is, if one is timed, and its deadline.
    waiting: Option<(Wait, Instant)>,
    /// The timer of the wait in progress, and the deadline it was set for: at or before
    /// that wait's deadline, moved on only when it fires sooner ([`Watched::cut_waiting_read`]).
    timer: Option<Deadline>,
    app: Arc<Counted>,
}

/// A response head as written: its first bytes, and how many requests were recorded
/// before it.
struct Answer {
    head: [u8; KEPT],
    after: u64,
}

impl Watched {
    /// The status of a response head that no recorded request followed, and how long
    /// after the first bytes of its request the connection ended, `at`: pingora closes
    /// it right after such an answer, so that is when the answer was written, give or
    /// take the close. (The time is not read at each write: a clock reading on every
    /// response for the rare one that needs it.)
    fn unrecorded_answer(&self, at: Instant) -> Option<(u16, Duration)> {
        let recorded = self.recorded.load(Ordering::Relaxed);
        let answer = self.answer.as_ref().filter(|a| a.after == recorded)?;
        let line = answer.head.strip_prefix(b"HTTP/1.")?;
        let status = std::str::from_utf8(line.get(2..5)?).ok()?.parse().ok()?;
        let elapsed = self
            .read_at
            .filter(|(after, _)| *after == recorded)
            .map_or(Duration::ZERO, |(_, read_at)| {
                at.saturating_duration_since(read_at)
            });
        Some((status, elapsed))
    }

    /// Keeps `written`, the bytes one write took, if they start a response head. pingora
    /// writes a head with a write of its own, never behind other bytes.
    fn wrote(&mut self, written: &[u8]) {
        if written.starts_with(b"HTTP/1.") {
            let mut head = [0; KEPT];
            let kept = written.len().min(KEPT);
            head[..kept].copy_from_slice(&written[..kept]);
            self.answer = Some(Answer {
                head,
                after: self.recorded.load(Ordering::Relaxed),
            });
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some((status, elapsed)) = self.unrecorded_answer(Instant::now()) {
            record_refused(&self.app.metrics, &self.app.state.load(), status, elapsed);
        }
    }
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Watched {
    /// Cuts a read that has waited too long for a request head (see the module docs):
    /// `Some` with what the read returns instead, `None` to keep waiting.
    fn cut_waiting_read(
        &mut self,
        cx: &mut Context<'_>,
        recorded: u64,
    ) -> Option<std::io::Result<()>> {
        if self.heads.load(Ordering::Relaxed) > recorded {
            // Within a request: its body, or an upgraded connection.
            self.waiting = None;
            return None;
        }
        let wait = match self.read_at {
            Some((after, _)) if after == recorded => Wait::Head,
            _ => Wait::Idle,
        };
        let deadline = match self.waiting {
            Some((waiting, deadline)) if waiting == wait => deadline,
            _ => {
                let limits = &self.app.state.load().config.limits;
                let deadline = match (wait, self.read_at) {
                    (Wait::Head, Some((_, first_byte))) => first_byte + limits.header_timeout,
                    _ => {
                        let recorded_at = self.recorded_at.load(Ordering::Relaxed);
                        self.opened + Duration::from_nanos(recorded_at) + limits.idle_timeout
                    }
                };
                self.waiting = Some((wait, deadline));
                deadline
            }
        };
        // Set for a later deadline (an idle connection's, where a head's is usually
        // sooner) or none: set for this one. Set for a sooner one: left, and moved on when
        // it fires. So the requests of a keep-alive connection do not each set a timer.
        if self.timer.as_ref().is_none_or(|timer| timer.at > deadline) {
            self.timer = Some(Deadline::new(deadline));
        }
        if !self.timer.as_mut()?.fired(cx) {
            return None;
        }
        // A fired timer is never polled again: replaced, or dropped below.
        self.timer = None;
        if Instant::now() < deadline {
            // It fired for an earlier wait's deadline: set again for this one, and polled
            // so that it wakes this task then.
            let mut timer = Deadline::new(deadline);
            if !timer.fired(cx) {
                self.timer = Some(timer);
                return None;
            }
        }
        self.waiting = None;
        let (reason, result) = match wait {
            // As if the client had closed: pingora ends the connection quietly.
            Wait::Idle => ("idle_timeout", Ok(())),
            Wait::Head => (
                "header_timeout",
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request head not complete within limits.headerTimeout",
                )),
            ),
        };
        self.app
            .metrics
            .client_connections_closed
            .with_label_values(&[reason])
            .inc();
        Some(result)
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let recorded = self.recorded.load(Ordering::Relaxed);
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            if self.read_at.is_none_or(|(after, _)| after != recorded) {
                self.read_at = Some((recorded, Instant::now()));
            }
        } else if poll.is_pending()
            && let Some(cut) = self.cut_waiting_read(cx, recorded)
        {
            return Poll::Ready(cut);
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.wrote(&buf[..n.min(buf.len())]);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            let first = bufs.iter().find(|b| !b.is_empty());
            if let Some(first) = first {
                self.wrote(&first[..n.min(first.len())]);
            }
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Watched {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Watched {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
