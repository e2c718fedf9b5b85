//! The door's accept loop and connections (hyper's HTTP/1.1 server under the axum router).
//!
//! - **A cap** ([`HttpConfig::max_connections`], the open-files budget's share): a socket
//!   accepted beyond it is answered at once with a 503 `too_many_connections` and closed;
//!   it is never read at length (its request is drained for [`REFUSAL_LINGER`] at most, so
//!   the close does not reset the connection before the client has read the answer).
//! - **Out of descriptors** (EMFILE / ENFILE on accept): the door keeps one spare
//!   descriptor (`/dev/null`); it closes it, accepts the waiting connection, answers 503 and
//!   closes it, and opens the spare again. Without a spare it pauses [`ACCEPT_BACKOFF`]. The
//!   waiting client gets an answer, the loop neither stalls nor spins, and it recovers as
//!   soon as descriptors are free.
//! - **Timeouts**, watched per connection by [`Activity`]: a request head whose first bytes
//!   arrived but which is not complete after [`HttpConfig::read_timeout`] (slowloris), a
//!   keep-alive connection without a request for [`HttpConfig::idle_timeout`], and an answer
//!   that could not be written for `idle_timeout` (a reader that stopped reading) close the
//!   connection; a request body that stops arriving for `read_timeout` fails the request.
//! - Refusals and timeouts are logged at most once per second ([`LogEvery`]) and counted
//!   (`strom_connections_refused_total{door="http"}`, `strom_http_connections_closed_total`).
//!
//! WebSocket upgrades leave hyper with their socket (still counted against the cap until
//! they close); at shutdown the door stops accepting, every connection finishes its
//! in-flight request (hyper's graceful shutdown) and [`run`] returns when they are gone.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use strom_broker::limits::{out_of_descriptors, IpSlot, LogEvery, PerIp, SpareFd};
use strom_broker::Broker;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{Instant, Sleep};

use crate::{HttpConfig, Metrics};

/// The door's name in the core's metrics.
const DOOR: &str = "http";

/// How long a refused socket keeps its descriptor while its 503 is written and its request
/// drained.
pub(crate) const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Refused sockets lingering at once (each holds a descriptor); beyond this a refused
/// socket gets its 503 written without waiting and is closed at once.
pub(crate) const REFUSALS_LINGERING_MAX: usize = 64;

/// Bytes of a refused socket's request read (and dropped) at most before it is closed.
const REFUSAL_DRAIN_BYTES_MAX: usize = 16 << 10;

/// Pause after an accept error that an immediate retry cannot fix (out of descriptors with
/// no spare, out of memory): a few milliseconds, so the loop neither spins nor stalls.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(5);

/// How far off a connection with nothing to watch looks again.
const NOTHING_TO_WATCH: Duration = Duration::from_secs(3600);

/// The 503 written to a socket the door does not serve.
fn refusal(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    Bytes::from(format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{body}",
        body.len()
    ))
}

/// What the accept loop and the connections share.
pub(crate) struct Door {
    router: Router,
    config: HttpConfig,
    metrics: Arc<Metrics>,
    broker: Arc<Broker>,
    open: AtomicUsize,
    /// Connections per client address (`--max-connections-per-ip`).
    per_ip: PerIp,
    lingering: Arc<AtomicUsize>,
    at_cap: Bytes,
    at_ip_cap: Bytes,
    no_descriptors: Bytes,
    cap_log: LogEvery,
    fd_log: LogEvery,
    accept_log: LogEvery,
    close_log: LogEvery,
}

impl Door {
    pub(crate) fn new(
        router: Router,
        config: HttpConfig,
        metrics: Arc<Metrics>,
        broker: Arc<Broker>,
    ) -> Arc<Door> {
        let at_cap = refusal(
            "too_many_connections",
            &format!(
                "the HTTP door holds its maximum of {} connections (--http-max-connections); retry later",
                config.max_connections
            ),
        );
        let at_ip_cap = refusal(
            "too_many_connections",
            &format!(
                "your address holds the maximum of {} connections (--max-connections-per-ip); retry later",
                config.max_connections_per_ip
            ),
        );
        let no_descriptors = refusal(
            "too_many_connections",
            "the broker is out of file descriptors; retry later",
        );
        Arc::new(Door {
            router,
            per_ip: PerIp::new(config.max_connections_per_ip),
            config,
            metrics,
            broker,
            open: AtomicUsize::new(0),
            lingering: Arc::new(AtomicUsize::new(0)),
            at_cap,
            at_ip_cap,
            no_descriptors,
            cap_log: LogEvery::per_second(),
            fd_log: LogEvery::per_second(),
            accept_log: LogEvery::per_second(),
            close_log: LogEvery::per_second(),
        })
    }

    /// Serves `stream`, or refuses it at the cap.
    fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        stop: &watch::Receiver<bool>,
        done: &mpsc::Sender<()>,
    ) {
        if self.open.load(Ordering::Acquire) >= self.config.max_connections {
            self.broker.metrics().connection_refused(DOOR);
            if let Some(suppressed) = self.cap_log.ready() {
                tracing::warn!(
                    max_connections = self.config.max_connections,
                    suppressed,
                    "HTTP connection refused with 503: at --http-max-connections"
                );
            }
            self.refuse_lingering(stream, self.at_cap.clone());
            return;
        }
        let slot = match stream.peer_addr() {
            Ok(peer) => match self.per_ip.admit(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    self.broker.metrics().connection_refused("http_per_ip");
                    if let Some(suppressed) = self.cap_log.ready() {
                        tracing::warn!(%peer, max_connections_per_ip = self.config.max_connections_per_ip, suppressed,
                            "HTTP connection refused with 503: its address holds --max-connections-per-ip");
                    }
                    self.refuse_lingering(stream, self.at_ip_cap.clone());
                    return;
                }
            },
            Err(_) => None,
        };
        let open = Open::new(self.clone(), slot);
        let _ = stream.set_nodelay(true);
        let (door, stop, done) = (self.clone(), stop.clone(), done.clone());
        tokio::spawn(async move {
            door.connection(stream, open, stop).await;
            drop(done);
        });
    }

    /// Writes `answer` from a task that gives the socket [`REFUSAL_LINGER`] at most.
    fn refuse_lingering(&self, stream: TcpStream, answer: Bytes) {
        if self.lingering.fetch_add(1, Ordering::AcqRel) >= REFUSALS_LINGERING_MAX {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            refuse_now(stream, &answer);
            return;
        }
        let lingering = self.lingering.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                stream.write_all(&answer).await?;
                stream.shutdown().await?;
                // Read what the client sent so that closing does not reset the connection
                // under the answer; stop at EOF or after a few KiB.
                let mut sink = [0u8; 4096];
                let mut drained = 0;
                while drained < REFUSAL_DRAIN_BYTES_MAX {
                    match stream.read(&mut sink).await? {
                        0 => break,
                        n => drained += n,
                    }
                }
                io::Result::Ok(())
            })
            .await;
            drop(stream);
            lingering.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// EMFILE / ENFILE on accept: answer the waiting client through the spare descriptor.
    async fn out_of_descriptors(&self, listener: &TcpListener, spare: &mut SpareFd, e: &io::Error) {
        self.broker.metrics().connection_refused(DOOR);
        if let Some(suppressed) = self.fd_log.ready() {
            tracing::warn!(error = %e, suppressed, "HTTP accept out of file descriptors: answering 503 through the spare descriptor");
        }
        if spare.release() {
            let now = std::future::poll_fn(|cx| {
                Poll::Ready(match listener.poll_accept(cx) {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => None,
                })
            })
            .await;
            if let Some(Ok((stream, _))) = now {
                refuse_now(stream, &self.no_descriptors);
            }
        }
        if !spare.reopen() {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
    }

    /// One connection, until it closes, times out, or the door stops.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        open: Open,
        stop: watch::Receiver<bool>,
    ) {
        let activity = Arc::new(Activity::new());
        let peer = stream
            .peer_addr()
            .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| {
                a.ip()
            });
        let tracked = Tracked {
            stream,
            activity: activity.clone(),
            _open: open,
        };
        let Some(tls) = self.config.tls.clone() else {
            return self.serve(tracked, peer, activity, stop).await;
        };
        // HTTPS: the handshake first, bounded by the read timeout; a failed one closes this
        // connection only.
        match tls.accept(tracked, self.config.read_timeout).await {
            Ok(stream) => self.serve(stream, peer, activity, stop).await,
            Err(e) => {
                self.metrics.closed("tls_handshake");
                if let Some(suppressed) = self.close_log.ready() {
                    tracing::info!(error = %e, suppressed, "HTTPS connection closed: TLS handshake failed");
                }
            }
        }
    }

    /// Serves HTTP/1.1 (and upgrades) on `io` until it closes, times out, or the door stops.
    async fn serve<I>(
        self: Arc<Self>,
        io: I,
        peer: std::net::IpAddr,
        activity: Arc<Activity>,
        mut stop: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let svc = Svc {
            router: self.router.clone(),
            peer,
            activity: activity.clone(),
            read_timeout: self.config.read_timeout,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.keep_alive(true);
        let mut conn = pin!(builder.serve_connection(io, svc).with_upgrades());
        let mut stopping = false;
        loop {
            let deadline = activity.deadline(&self.config).0;
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                    break;
                }
                _ = activity.changed.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let (deadline, reason) = activity.deadline(&self.config);
                    if deadline <= Instant::now() {
                        self.metrics.closed(reason);
                        if let Some(suppressed) = self.close_log.ready() {
                            tracing::info!(reason, suppressed, "HTTP connection closed");
                        }
                        break;
                    }
                }
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Writes `answer` if the socket takes it now (a fresh socket's send buffer is empty) and
/// closes it.
fn refuse_now(stream: TcpStream, answer: &[u8]) {
    if let Ok(std) = stream.into_std() {
        let _ = io::Write::write(&mut &std, answer);
    }
}

/// Accepts until `stop` turns true, then waits for the connections to finish.
pub(crate) async fn run(listener: TcpListener, door: Arc<Door>, mut stop: watch::Receiver<bool>) {
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut spare = SpareFd::open();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => door.admit(stream, &stop, &done_tx),
            Err(e) if out_of_descriptors(&e) => {
                door.out_of_descriptors(&listener, &mut spare, &e).await
            }
            Err(e) => {
                if let Some(suppressed) = door.accept_log.ready() {
                    tracing::warn!(error = %e, suppressed, "HTTP accept failed");
                }
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
    drop(listener);
    drop(done_tx);
    let _ = done_rx.recv().await;
}

/// One open connection of the door, counted until its socket closes (an upgraded
/// WebSocket's too).
struct Open {
    door: Arc<Door>,
    /// Its address's count (given back when dropped).
    _slot: Option<IpSlot>,
}

impl Open {
    fn new(door: Arc<Door>, slot: Option<IpSlot>) -> Open {
        door.open.fetch_add(1, Ordering::AcqRel);
        door.broker.metrics().connection(DOOR, 1);
        Open { door, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.door.open.fetch_sub(1, Ordering::AcqRel);
        self.door.broker.metrics().connection(DOOR, -1);
    }
}

/// What a connection is doing, for its timeouts.
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when a deadline may have moved earlier.
    changed: Notify,
}

struct ActivityState {
    /// Requests dispatched whose answer has not been handed to the socket yet.
    in_flight: u32,
    /// When the last answer was handed over (or the connection opened).
    idle_since: Instant,
    /// When the first bytes of the next request head arrived.
    head_started: Option<Instant>,
    /// Since when a write has been waiting for the reader.
    write_blocked_since: Option<Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: Instant::now(),
                head_started: None,
                write_blocked_since: None,
            }),
            changed: Notify::new(),
        }
    }

    /// The next deadline and what it is for.
    fn deadline(&self, config: &HttpConfig) -> (Instant, &'static str) {
        let st = self.state.lock();
        let mut out = (Instant::now() + NOTHING_TO_WATCH, "none");
        if st.in_flight == 0 {
            out = match st.head_started {
                Some(t) => (t + config.read_timeout, "header_timeout"),
                None => (st.idle_since + config.idle_timeout, "idle"),
            };
        }
        if let Some(t) = st.write_blocked_since {
            let stall = t + config.idle_timeout;
            if stall < out.0 {
                out = (stall, "write_stalled");
            }
        }
        out
    }

    fn read_some(&self) {
        let mut st = self.state.lock();
        if st.in_flight == 0 && st.head_started.is_none() {
            st.head_started = Some(Instant::now());
            drop(st);
            self.changed.notify_one();
        }
    }

    fn wrote(&self, blocked: bool) {
        let mut st = self.state.lock();
        match (blocked, st.write_blocked_since) {
            (true, None) => {
                st.write_blocked_since = Some(Instant::now());
                drop(st);
                self.changed.notify_one();
            }
            (false, Some(_)) => st.write_blocked_since = None,
            _ => {}
        }
    }

    fn request_started(&self) {
        let mut st = self.state.lock();
        st.in_flight += 1;
        st.head_started = None;
    }

    fn request_done(&self) {
        let mut st = self.state.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        st.idle_since = Instant::now();
        st.head_started = None;
        drop(st);
        self.changed.notify_one();
    }
}

/// The socket, reporting reads and writes to the connection's [`Activity`].
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
    _open: Open,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        r
    }
}

impl Tracked {
    fn note_write(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Pending => self.activity.wrote(true),
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.wrote(false),
            _ => {}
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note_write(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note_write(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        // hyper then queues answer bytes instead of copying them into its own buffer.
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The router as a hyper service: request bodies with a read deadline, answers that mark
/// the connection busy until hyper has taken their last byte.
#[derive(Clone)]
struct Svc {
    router: Router,
    /// The connection's peer address (the host of ACLs).
    peer: std::net::IpAddr,
    activity: Arc<Activity>,
    read_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::start(self.activity.clone());
        let read_timeout = self.read_timeout;
        let mut req = req.map(|b| Body::new(TimedBody::new(b, read_timeout)));
        req.extensions_mut().insert(crate::auth::PeerIp(self.peer));
        let mut router = self.router.clone();
        Box::pin(async move {
            let resp = tower_service::Service::call(&mut router, req).await?;
            Ok(resp.map(|inner| Answer { inner, _busy: busy }))
        })
    }
}

/// A request in flight on a connection (until its answer is dropped by hyper).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.request_started();
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// An answer's body, holding the connection busy.
struct Answer {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when its bytes stop arriving for `timeout` while the handler
/// waits for them.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            sleep: None,
        }
    }
}

/// The error of a request body that stopped arriving.
#[derive(Debug)]
struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body stopped arriving for {} ms (--read-timeout-ms)",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for BodyStalled {}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.sleep = None;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyStalled(timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HttpConfig {
        HttpConfig {
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(5),
            ..HttpConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_what_the_connection_does() {
        let c = config();
        let a = Activity::new();
        let opened = Instant::now();
        assert_eq!(a.deadline(&c), (opened + c.idle_timeout, "idle"));
        // The first bytes of a head start the header deadline.
        tokio::time::advance(Duration::from_secs(1)).await;
        a.read_some();
        let head = Instant::now();
        assert_eq!(a.deadline(&c), (head + c.read_timeout, "header_timeout"));
        // More bytes of the same head do not move it.
        tokio::time::advance(Duration::from_secs(1)).await;
        a.read_some();
        assert_eq!(a.deadline(&c).0, head + c.read_timeout);
        // A request in flight has no deadline of its own (a long poll may wait) ...
        a.request_started();
        assert_eq!(a.deadline(&c).1, "none");
        a.read_some(); // body bytes are not a head
        assert_eq!(a.deadline(&c).1, "none");
        // ... unless its answer cannot be written.
        a.wrote(true);
        let blocked = Instant::now();
        assert_eq!(a.deadline(&c), (blocked + c.idle_timeout, "write_stalled"));
        a.wrote(false);
        assert_eq!(a.deadline(&c).1, "none");
        // Once answered, the connection is idle again.
        tokio::time::advance(Duration::from_secs(3)).await;
        a.request_done();
        assert_eq!(a.deadline(&c), (Instant::now() + c.idle_timeout, "idle"));
    }

    #[test]
    fn refusal_is_a_complete_http_answer() {
        let r = refusal("too_many_connections", "full");
        let text = std::str::from_utf8(&r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("\r\nContent-Type: application/json"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
    }
}
