//! The listener, connections, framing and request dispatch.
//!
//! One task per connection reads a frame, handles it, and queues the response in a write
//! buffer that is flushed once no further whole request is already buffered, so pipelined
//! requests get their responses in order and in few writes. Requests of one connection are
//! handled one at a time, as Kafka does: that keeps a producer's pipelined batches in order.
//! A produce whose acknowledgement waits for a sync queues its reply and lets the next
//! produce be appended meanwhile (see `connection`). A frame that is too large, too short
//! or undecodable closes that connection only.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use strom_broker::coordinator::GroupCoordinator;
use strom_broker::share::ShareCoordinator;
use strom_broker::Broker;
use strom_wire::{Chunk, Chunked, Frame as Response};
use tokio::io::Interest;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::listener::{ListenerConfig, SecurityProtocol};
use crate::pool::{Held, RequestPool};
use crate::sasl::{self, SaslState};
use crate::share_session::ShareSessions;
use crate::{
    acl_api, admin, admin2, bounds, cluster_api, consumer_api, data, group_api, legacy, meta,
    share_api, txn_api, versions,
};
use strom_broker::limits::{out_of_descriptors, LogEvery, SpareFd};
use strom_broker::security::acl::{Operation, ResourceType, Who, CLUSTER_NAME};
use strom_broker::security::sasl::Mechanism;
use strom_broker::security::Principal;

/// Settings of the Kafka door.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// The listeners, each with its own accept loop and advertised address (at least one).
    pub listeners: Vec<ListenerConfig>,
    /// Largest request frame accepted (`socket.request.max.bytes`, Kafka's default 100 MiB).
    pub max_request_bytes: usize,
    /// Bytes of request frames held (being read or handled) by all connections together
    /// (`queued.max.request.bytes`): reading pauses when they are reached.
    pub queued_max_request_bytes: usize,
    /// Connections held at most; one more is closed at once (the fd budget's share).
    pub max_connections: usize,
    /// Connections one client address holds at most (`max.connections.per.ip`).
    pub max_connections_per_ip: usize,
    /// The listen backlog (capped by the kernel's `somaxconn`).
    pub listen_backlog: u32,
    /// A connection with no request in flight for this long is closed
    /// (`connections.max.idle.ms`).
    pub connections_max_idle: Duration,
    /// A request whose bytes stop arriving for this long closes its connection; a TLS
    /// handshake not done within it too.
    pub read_timeout: Duration,
    /// The certificate of SSL listeners (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub tls: Option<Arc<strom_tls::Tls>>,
    /// The SASL mechanisms of SASL listeners (`sasl.enabled.mechanisms`).
    pub sasl_mechanisms: Vec<Mechanism>,
    /// A SASL session lasts this long; the client re-authenticates before it ends or the
    /// connection is closed at its next request (`connections.max.reauth.ms`; `None`: forever).
    pub connections_max_reauth: Option<Duration>,
    /// A failed authentication is answered after this long
    /// (`connection.failed.authentication.delay.ms`).
    pub failed_authentication_delay: Duration,
}

impl KafkaConfig {
    /// The door's settings with one PLAINTEXT listener on `listen`, with Kafka's defaults for
    /// everything else.
    pub fn new(listen: SocketAddr) -> KafkaConfig {
        KafkaConfig {
            listeners: vec![ListenerConfig::plaintext(listen)],
            max_request_bytes: 100 << 20,
            queued_max_request_bytes: 100 << 20,
            max_connections: 4096,
            max_connections_per_ip: usize::MAX,
            listen_backlog: 4096,
            connections_max_idle: Duration::from_secs(600),
            read_timeout: Duration::from_secs(10),
            tls: None,
            sasl_mechanisms: Mechanism::ALL.to_vec(),
            connections_max_reauth: None,
            failed_authentication_delay: Duration::from_millis(100),
        }
    }
}

/// What handlers share.
pub(crate) struct Ctx {
    pub(crate) broker: Arc<Broker>,
    pub(crate) groups: Arc<GroupCoordinator>,
    pub(crate) shares: Arc<ShareCoordinator>,
    /// The transaction coordinator (`None`: transactional requests answer
    /// COORDINATOR_NOT_AVAILABLE).
    pub(crate) txns: Option<Arc<strom_broker::txn::TxnCoordinator>>,
    /// The share sessions of share consumers (protocol state of the door).
    pub(crate) share_sessions: ShareSessions,
    pub(crate) config: KafkaConfig,
    /// Every listener as bound (for `advertised.listeners` in DescribeConfigs).
    pub(crate) listeners: Vec<Arc<Listener>>,
    pub(crate) connections: AtomicUsize,
    /// `queued.max.request.bytes`.
    pub(crate) pool: RequestPool,
}

/// The Kafka door with its listeners bound.
pub struct KafkaServer {
    listeners: Vec<(TcpListener, Arc<Listener>)>,
    ctx: Arc<Ctx>,
}

/// A listener as bound: what a connection accepted on it answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listener {
    /// Its name (`PLAINTEXT`, or a name of the security protocol map).
    pub(crate) name: String,
    pub(crate) protocol: SecurityProtocol,
    /// The address it is bound to.
    pub(crate) bound: SocketAddr,
    /// Host advertised to the clients connected to it (Metadata, FindCoordinator,
    /// DescribeCluster).
    pub(crate) host: String,
    /// Port advertised with `host`.
    pub(crate) port: u16,
}

impl Listener {
    /// `config` bound to `bound`.
    pub(crate) fn new(config: &ListenerConfig, bound: SocketAddr) -> Listener {
        let (host, port) = config.advertised_for(bound);
        Listener {
            name: config.name.clone(),
            protocol: config.protocol,
            bound,
            host,
            port,
        }
    }
}

/// Who sent a request: the connection's peer, the listener it came in on and the principal
/// it authenticated as ([`Principal::anonymous`] on a connection without authentication).
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub(crate) peer: SocketAddr,
    pub(crate) listener: Arc<Listener>,
    pub(crate) principal: Arc<Principal>,
    /// The SASL state of a connection on a SASL listener.
    pub(crate) sasl: Option<SaslState>,
    /// Milliseconds a quota throttled the last request: the connection reads nothing more
    /// for that long (KIP-219 muting).
    pub(crate) mute_ms: Arc<AtomicU64>,
}

impl Client {
    /// An unauthenticated client at `peer` on `listener` (with a SASL state if the listener
    /// uses SASL).
    pub(crate) fn anonymous(peer: SocketAddr, listener: Arc<Listener>) -> Client {
        let sasl = listener.protocol.sasl().then(SaslState::default);
        Client {
            peer,
            listener,
            principal: Arc::new(Principal::anonymous()),
            sasl,
            mute_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Why a connection is closed.
#[derive(Debug)]
pub(crate) struct Fatal(pub(crate) String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Fatal {
        Fatal(e.to_string())
    }
}

/// What a handler produced: a framed response, or nothing (Produce with acks=0).
pub(crate) type Reply = Option<Response>;

/// A reply to send in its turn.
pub(crate) type LaterReply<'a> = Pin<Box<dyn Future<Output = Result<Reply, Fatal>> + Send + 'a>>;

/// A handled request: its reply, or the reply once something it waits for is done (a
/// produce's sync), while the connection goes on with its next request.
pub(crate) enum Handled<'a> {
    Now(Reply),
    Later(LaterReply<'a>),
}

/// Produce replies a connection may hold waiting for their syncs.
const MAX_LATER_REPLIES: usize = 32;

impl KafkaServer {
    /// Binds every listener. A listener whose security protocol the door does not serve yet
    /// (SASL) or an SSL listener without `config.tls` is refused (`Unsupported`), as is a
    /// door without listeners; an error names the listener.
    pub async fn bind(
        config: KafkaConfig,
        broker: Arc<Broker>,
        groups: Arc<GroupCoordinator>,
        shares: Arc<ShareCoordinator>,
    ) -> io::Result<KafkaServer> {
        if config.listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the Kafka door has no listener",
            ));
        }
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            l.check_supported(config.tls.is_some())
                .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
            let sock =
                strom_broker::limits::listen(l.listen, config.listen_backlog).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot listen on {}://{}: {e}", l.name, l.listen),
                    )
                })?;
            let info = Arc::new(Listener::new(l, sock.local_addr()?));
            listeners.push((sock, info));
        }
        groups.set_classic_codec(crate::consumer_api::classic_codec());
        Ok(KafkaServer {
            ctx: Arc::new(Ctx {
                listeners: listeners.iter().map(|(_, l)| l.clone()).collect(),
                broker,
                groups,
                shares,
                txns: None,
                share_sessions: ShareSessions::default(),
                pool: RequestPool::new(config.queued_max_request_bytes),
                config,
                connections: AtomicUsize::new(0),
            }),
            listeners,
        })
    }

    /// Serves the transaction APIs with `txns` (before [`KafkaServer::run`]).
    pub fn set_transactions(&mut self, txns: Arc<strom_broker::txn::TxnCoordinator>) {
        if let Some(ctx) = Arc::get_mut(&mut self.ctx) {
            ctx.txns = Some(txns);
        }
    }

    /// The address of the first listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.listeners[0].1.bound)
    }

    /// Each listener: its name, bound address and advertised `HOST:PORT`.
    pub fn listeners(&self) -> Vec<(String, SocketAddr, String)> {
        self.listeners
            .iter()
            .map(|(_, l)| (l.name.clone(), l.bound, host_port(&l.host, l.port)))
            .collect()
    }

    /// Serves until `shutdown` turns true; then stops accepting, lets every connection finish
    /// the request it is handling (at most `drain` long) and returns. Each listener has its
    /// own accept loop; the connection cap is the door's, over all of them.
    pub async fn run(self, shutdown: watch::Receiver<bool>, drain: Duration) {
        let mut loops = JoinSet::new();
        for (sock, listener) in self.listeners {
            loops.spawn(accept_loop(
                sock,
                listener,
                self.ctx.clone(),
                shutdown.clone(),
                drain,
            ));
        }
        while loops.join_next().await.is_some() {}
    }
}

/// `HOST:PORT`, an IPv6 host in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One listener's accept loop (see [`KafkaServer::run`]).
///
/// At `max_connections` a new connection is closed at once; when the process is out of
/// descriptors (EMFILE), the spare descriptor kept for that is closed to accept the
/// waiting connection and close it, so clients are told at once instead of waiting in the
/// backlog, and the loop backs off briefly. Either is logged at most once per second.
async fn accept_loop(
    sock: TcpListener,
    listener: Arc<Listener>,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut conns = JoinSet::new();
    let mut spare = SpareFd::open();
    let at_cap = LogEvery::per_second();
    let accept_failed = LogEvery::per_second();
    let max = ctx.config.max_connections;
    let per_ip = strom_broker::limits::PerIp::new(ctx.config.max_connections_per_ip);
    let ip_refused = LogEvery::per_second();
    loop {
        tokio::select! {
            accepted = sock.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    let client = Client::anonymous(peer, listener.clone());
                    if ctx.connections.load(Ordering::Relaxed) >= max {
                        drop(stream);
                        ctx.broker.metrics().connection_refused("kafka");
                        if let Some(more) = at_cap.ready() {
                            tracing::warn!(%peer, listener = %listener.name, max_connections = max, refused_since_last = more,
                                "kafka connection refused: the door is at its connection cap");
                        }
                        continue;
                    }
                    let Some(slot) = per_ip.admit(peer.ip()) else {
                        drop(stream);
                        ctx.broker.metrics().connection_refused("kafka_per_ip");
                        if let Some(more) = ip_refused.ready() {
                            tracing::warn!(%peer, listener = %listener.name, max_connections_per_ip = ctx.config.max_connections_per_ip,
                                refused_since_last = more, "kafka connection refused: its address holds max.connections.per.ip");
                        }
                        continue;
                    };
                    ctx.connections.fetch_add(1, Ordering::Relaxed);
                    ctx.broker.metrics().connection("kafka", 1);
                    let stop = shutdown.clone();
                    conns.spawn(async move {
                        let _slot = slot;
                        if let Err(e) = serve_stream(stream, client, &ctx, stop).await {
                            tracing::info!(%peer, reason = %e.0, "kafka connection closed");
                        }
                        ctx.connections.fetch_sub(1, Ordering::Relaxed);
                        ctx.broker.metrics().connection("kafka", -1);
                    });
                }
                Err(e) => {
                    if out_of_descriptors(&e) && spare.release() {
                        // Take the waiting connection with the spare descriptor and
                        // close it: the client learns at once.
                        if let Ok(Ok((stream, _))) =
                            tokio::time::timeout(Duration::from_millis(10), sock.accept()).await
                        {
                            drop(stream);
                            ctx.broker.metrics().connection_refused("kafka");
                        }
                        spare.reopen();
                    }
                    if let Some(more) = accept_failed.ready() {
                        tracing::warn!(error = %e, listener = %listener.name, failed_since_last = more, "kafka accept failed");
                    }
                    // Out of descriptors and the like: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(sock);
    tracing::info!(
        listener = %listener.name,
        connections = conns.len(),
        "kafka listener closed, draining connections"
    );
    let _ = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    conns.abort_all();
}

/// A connection from its first byte: on a TLS listener the handshake first (bounded by the
/// read timeout; a client certificate makes the principal `User:<CN>`), then its requests.
/// A failed handshake closes that connection only.
async fn serve_stream(
    stream: TcpStream,
    mut client: Client,
    ctx: &Ctx,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Fatal> {
    stream.set_nodelay(true)?;
    if !client.listener.protocol.tls() {
        let (rd, wr) = stream.into_split();
        return connection(rd, wr, client, ctx, shutdown).await;
    }
    let Some(tls) = &ctx.config.tls else {
        return Err(Fatal("TLS listener without a certificate".into()));
    };
    let stream = tokio::select! {
        s = tls.accept(stream, ctx.config.read_timeout) => {
            s.map_err(|e| Fatal(format!("TLS handshake failed: {e}")))?
        }
        _ = shutdown.changed() => return Ok(()),
    };
    if let Some(cn) = strom_tls::peer_common_name(&stream) {
        client.principal = Arc::new(Principal::user(cn));
        tracing::info!(peer = %client.peer, listener = %client.listener.name,
            principal = %client.principal, "kafka client authenticated by its TLS certificate");
    }
    let (rd, wr) = tokio::io::split(stream);
    connection(rd, wr, client, ctx, shutdown).await
}

/// Where a connection's responses go: a socket (file ranges by sendfile) or a TLS stream
/// (file ranges read and encrypted).
trait Sink: AsyncWrite + Unpin + Send {
    /// Writes `len` bytes of `file` from `pos`.
    fn send_file(
        &mut self,
        file: &File,
        pos: u64,
        len: usize,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

impl Sink for OwnedWriteHalf {
    async fn send_file(&mut self, file: &File, pos: u64, len: usize) -> io::Result<()> {
        send_file(self.as_ref(), file, pos, len).await
    }
}

impl Sink for tokio::io::WriteHalf<strom_tls::TlsStream<TcpStream>> {
    async fn send_file(&mut self, file: &File, mut pos: u64, mut len: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        // Page-cache reads in chunks of at most 64 KiB, each encrypted and written before the
        // next is read: bounded memory per connection.
        let mut buf = vec![0u8; len.min(64 * 1024)];
        while len > 0 {
            let n = len.min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)?;
            self.write_all(&buf[..n]).await?;
            pos += n as u64;
            len -= n;
        }
        Ok(())
    }
}

async fn connection<R, W>(
    rd: R,
    wr: W,
    mut client: Client,
    ctx: &Ctx,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Fatal>
where
    R: AsyncRead + Unpin + Send,
    W: Sink,
{
    let mut rd = BufReader::with_capacity(16 * 1024, rd);
    let mut wr = BufWriter::with_capacity(64 * 1024, wr);
    let max = ctx.config.max_request_bytes;
    let idle = ctx.config.connections_max_idle;
    // Request frames are read into this buffer; once a frame's last slice is dropped (after
    // its response), the next frame reuses the same memory instead of fresh pages.
    let mut frames = BytesMut::new();
    let peer = client.peer;
    // Replies of produce requests waiting for their syncs, oldest first. Only the oldest is
    // polled: its sync covers whatever was appended before it started, and the next one's
    // starts when it is done and covers everything appended meanwhile (group commit).
    let mut later: VecDeque<LaterReply<'_>> = VecDeque::new();
    loop {
        let full = later.len() >= MAX_LATER_REPLIES;
        if let Some(oldest) = later.front_mut() {
            if !wr.buffer().is_empty() {
                within(idle, wr.flush()).await?;
            }
            let next = if full {
                Next::Reply(oldest.await)
            } else {
                tokio::select! {
                    biased;
                    reply = oldest => Next::Reply(reply),
                    // Cancel-safe: nothing is consumed until a request is read below.
                    more = rd.fill_buf() => Next::Request(more.map(|b| !b.is_empty())),
                    _ = shutdown.changed() => Next::Stop,
                }
            };
            match next {
                Next::Reply(reply) => {
                    later.pop_front();
                    within(idle, send(&mut wr, reply?)).await?;
                    if later.is_empty() && !whole_frame_buffered(rd.buffer()) {
                        within(idle, wr.flush()).await?;
                    }
                    continue;
                }
                Next::Request(Ok(true)) => {}
                Next::Request(Ok(false)) | Next::Stop => break,
                Next::Request(Err(e)) => return Err(e.into()),
            }
        }
        // After a v0 SaslHandshake the exchange's tokens come as raw frames.
        if let Some(state) = &client.sasl {
            if sasl::lock(state).raw_token_next() {
                within(idle, send_in_turn(&mut wr, &mut later)).await?;
                within(idle, wr.flush()).await?;
                raw_sasl_token(&mut rd, &mut wr, &mut client, ctx).await?;
                continue;
            }
        }
        // With nothing in flight the connection is idle: `connections.max.idle.ms` closes it.
        let len = tokio::select! {
            r = rd.read_i32() => match r {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            },
            _ = shutdown.changed(), if later.is_empty() => break,
            _ = tokio::time::sleep(idle), if later.is_empty() => {
                return Err(Fatal(format!("idle for {} ms (connections.max.idle.ms)", idle.as_millis())));
            }
        };
        // Before SASL authentication only small frames are accepted.
        let max = match &client.sasl {
            Some(s) if !sasl::lock(s).authenticated() => max.min(sasl::PRE_AUTH_MAX_REQUEST_BYTES),
            _ => max,
        };
        if len < 8 || len as usize > max {
            return Err(Fatal(format!(
                "request frame of {len} bytes is outside [8, {max}] (max request bytes)"
            )));
        }
        let (frame, held) = read_frame(
            &mut rd,
            &mut frames,
            len as usize,
            &ctx.pool,
            ctx.config.read_timeout,
        )
        .await?;
        // Only produce replies wait behind each other; any other request is handled once
        // the replies before it are sent, in order.
        let api = i16::from_be_bytes([frame[0], frame[1]]);
        if let Some(state) = &client.sasl {
            sasl::gate(&sasl::lock(state), api)?;
        }
        if api != ApiKey::Produce as i16 {
            within(idle, send_in_turn(&mut wr, &mut later)).await?;
        }
        // A request that may wait (long poll, rebalance) must not hold back the responses
        // already queued for this client.
        let may_wait = matches!(api, 1 | 11 | 14 | 78);
        if may_wait && !wr.buffer().is_empty() {
            within(idle, wr.flush()).await?;
        }
        let handled = handle(ctx, &client, frame.freeze()).await;
        // The request is handled: its bytes no longer count against the pool (a reply
        // waiting for a sync holds none of them).
        drop(held);
        match handled? {
            Handled::Now(reply) if later.is_empty() => within(idle, send(&mut wr, reply)).await?,
            Handled::Now(reply) => later.push_back(Box::pin(std::future::ready(Ok(reply)))),
            Handled::Later(reply) => later.push_back(reply),
        }
        // A quota throttled this request: its reply goes out now with `throttle_time_ms`,
        // and nothing more is read until the time has passed (KIP-219; a client that does
        // not know the field simply waits for the connection).
        let mute = client.mute_ms.swap(0, Ordering::Relaxed);
        if mute > 0 {
            within(idle, send_in_turn(&mut wr, &mut later)).await?;
            within(idle, wr.flush()).await?;
            ctx.broker.metrics().throttled(Duration::from_millis(mute));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(mute)) => {}
                _ = shutdown.changed() => break,
            }
        }
        if is_sasl_api(api) {
            if let Some(state) = client.sasl.clone() {
                after_sasl_step(&state, &mut client, &mut wr, idle).await?;
            }
        }
        if later.is_empty() && !whole_frame_buffered(rd.buffer()) {
            within(idle, wr.flush()).await?;
        }
    }
    // Whatever was read is answered.
    within(idle, send_in_turn(&mut wr, &mut later)).await?;
    within(idle, wr.flush()).await?;
    tracing::debug!(%peer, "kafka connection ended");
    Ok(())
}

fn is_sasl_api(api: i16) -> bool {
    api == ApiKey::SaslHandshake as i16 || api == ApiKey::SaslAuthenticate as i16
}

/// After a SASL request's reply is sent: a failed exchange closes the connection, a
/// successful one makes its user the connection's principal.
async fn after_sasl_step<W: Sink>(
    state: &SaslState,
    client: &mut Client,
    wr: &mut BufWriter<W>,
    idle: Duration,
) -> Result<(), Fatal> {
    let (failure, user) = {
        let c = sasl::lock(state);
        (
            c.failure().map(str::to_string),
            c.user().map(str::to_string),
        )
    };
    if let Some(reason) = failure {
        within(idle, wr.flush()).await?;
        return Err(Fatal(reason));
    }
    if let Some(user) = user {
        if client.principal.name != user || client.principal.is_anonymous() {
            client.principal = Arc::new(Principal::user(user));
        }
    }
    Ok(())
}

/// One raw SASL token (after a v0 SaslHandshake): a length-prefixed token in, the
/// mechanism's answer out with the same framing. A failure closes the connection after
/// the failed-authentication delay, as Kafka does for v0.
async fn raw_sasl_token<R, W>(
    rd: &mut BufReader<R>,
    wr: &mut BufWriter<W>,
    client: &mut Client,
    ctx: &Ctx,
) -> Result<(), Fatal>
where
    R: AsyncRead + Unpin + Send,
    W: Sink,
{
    let Some(state) = client.sasl.clone() else {
        return Ok(());
    };
    let timeout = ctx.config.read_timeout;
    let len = match tokio::time::timeout(ctx.config.connections_max_idle, rd.read_i32()).await {
        Ok(r) => r?,
        Err(_) => return Err(Fatal("idle during a SASL exchange".into())),
    };
    if len < 0 || len as usize > sasl::PRE_AUTH_MAX_REQUEST_BYTES {
        return Err(Fatal(format!("SASL token of {len} bytes")));
    }
    let mut token = vec![0u8; len as usize];
    match tokio::time::timeout(timeout, rd.read_exact(&mut token)).await {
        Ok(r) => {
            r.map_err(|e| Fatal(format!("truncated SASL token: {e}")))?;
        }
        Err(_) => return Err(Fatal("SASL token stalled".into())),
    }
    match sasl::step(&state, &token, ctx, client.peer, &client.listener) {
        sasl::Outcome::Reply { bytes, .. } => {
            let idle = ctx.config.connections_max_idle;
            within(idle, wr.write_all(&(bytes.len() as i32).to_be_bytes())).await?;
            within(idle, wr.write_all(&bytes)).await?;
            within(idle, wr.flush()).await?;
            after_sasl_step(&state, client, wr, idle).await
        }
        sasl::Outcome::Failed { message, .. } => {
            tokio::time::sleep(ctx.config.failed_authentication_delay).await;
            Err(Fatal(format!("SASL authentication failed: {message}")))
        }
    }
}

/// What a connection waiting for a produce's sync saw first.
enum Next {
    Reply(Result<Reply, Fatal>),
    Request(io::Result<bool>),
    Stop,
}

/// Waits for every queued reply and writes each, oldest first.
async fn send_in_turn<W: Sink>(
    wr: &mut BufWriter<W>,
    later: &mut VecDeque<LaterReply<'_>>,
) -> Result<(), Fatal> {
    while let Some(reply) = later.pop_front() {
        send(wr, reply.await?).await?;
    }
    Ok(())
}

/// Writes a response: small chunks gather in the writer's buffer, large ones go to the
/// socket directly, file ranges (fetched records) by the sink's `send_file`.
async fn send<W: Sink>(wr: &mut BufWriter<W>, reply: Reply) -> Result<(), Fatal> {
    let Some(response) = reply else {
        return Ok(());
    };
    for chunk in &response.0 {
        match chunk {
            Chunk::Mem(b) => wr.write_all(b).await?,
            Chunk::File { file, pos, len } => {
                wr.flush().await?;
                wr.get_mut().send_file(file, *pos, *len).await?;
            }
        }
    }
    Ok(())
}

/// Sends `len` bytes of `file` from `pos` to the socket with `sendfile` (page cache →
/// socket, no copy through user space), waiting for writability as needed.
async fn send_file(sock: &TcpStream, file: &File, mut pos: u64, mut len: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    while len > 0 {
        sock.writable().await?;
        let sent = sock.try_io(Interest::WRITABLE, || {
            let mut off = pos as libc::off_t;
            // SAFETY: both descriptors are open for the duration of the call; `off` is a
            // valid local the kernel updates.
            let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file shorter than the range being sent",
                ))
            }
            Ok(n) => {
                pos += n as u64;
                len -= n;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes that make no progress for this long close the connection: a client that stops
/// reading its socket holds its descriptor and its in-flight responses only that long.
async fn within<T, E>(
    limit: Duration,
    write: impl Future<Output = Result<T, E>>,
) -> Result<T, Fatal>
where
    Fatal: From<E>,
{
    match tokio::time::timeout(limit, write).await {
        Ok(r) => r.map_err(Fatal::from),
        Err(_) => Err(Fatal(format!(
            "the client has not read its responses for {} ms",
            limit.as_millis()
        ))),
    }
}

/// Reads a request frame of `len` bytes into `buf` (not zeroed first) and splits it off,
/// taking the bytes from the request pool chunk by chunk as they arrive: nothing is
/// reserved at the announced size. A frame whose bytes stop arriving for `timeout` closes
/// the connection.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    len: usize,
    pool: &RequestPool,
    timeout: Duration,
) -> Result<(BytesMut, Held), Fatal> {
    buf.clear();
    let mut held = pool.hold();
    let pooled = len > FRAME_UNPOOLED_MAX;
    while buf.len() < len {
        // Capacity grows with what has arrived (doubling from 64 KiB), so memory is never
        // more than twice what the client really sent; a buffer reused from an earlier frame
        // may already hold the whole frame. Each read takes what the socket has, up to the
        // capacity there is.
        if buf.capacity() == buf.len() {
            buf.reserve((len - buf.len()).min(FRAME_CHUNK_BYTES.max(buf.len())));
        }
        let room = (buf.capacity() - buf.len()).min(len - buf.len());
        if pooled {
            held.cover(buf.len() + room).await;
        }
        let mut rest = (&mut *rd).take(room as u64);
        let n = match tokio::time::timeout(timeout, rest.read_buf(buf)).await {
            Ok(r) => r.map_err(|e| Fatal(format!("truncated request frame: {e}")))?,
            Err(_) => {
                return Err(Fatal(format!(
                    "request frame stalled: {} of {len} bytes after {} ms without data",
                    buf.len(),
                    timeout.as_millis()
                )))
            }
        };
        if n == 0 {
            return Err(Fatal(format!(
                "truncated request frame: {} of {len} bytes",
                buf.len()
            )));
        }
    }
    Ok((buf.split(), held))
}

/// The first buffer capacity a frame gets (later growth doubles it).
const FRAME_CHUNK_BYTES: usize = 64 << 10;

/// Frames up to this size are read without the request pool: the small requests that keep
/// clients alive (metadata, heartbeats, commits, fetch requests) go on while large produce
/// requests wait for budget. They cost no more than the 16 KiB read buffer every connection
/// has anyway, so the pool's bound becomes `queued.max.request.bytes` + one largest frame +
/// 16 KiB per connection.
const FRAME_UNPOOLED_MAX: usize = 16 << 10;

fn whole_frame_buffered(buf: &[u8]) -> bool {
    buf.len() >= 4
        && buf.len() - 4 >= i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]).max(0) as usize
}

/// Handles one request frame (without its length prefix); returns the framed response.
pub(crate) async fn handle<'a>(
    ctx: &'a Ctx,
    client: &Client,
    frame: Bytes,
) -> Result<Handled<'a>, Fatal> {
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| Fatal(format!("unknown api key {raw_key}")))?;
    let Some((min, max)) = versions::supported(key) else {
        return Err(Fatal(format!("api {key:?} is not supported")));
    };
    if version < min || version > max {
        if key == ApiKey::ApiVersions {
            // Kafka's rule: answer in v0 with UNSUPPORTED_VERSION and the supported ranges.
            return Ok(Handled::Now(Some(
                meta::api_versions_fallback(correlation)?.into(),
            )));
        }
        return Err(Fatal(format!(
            "api {key:?} v{version} is not supported ({min}-{max})"
        )));
    }
    if version < versions::decodable_min(key) {
        // Versions Kafka 4 removed: rewritten at the door (see `legacy`).
        return legacy::handle(ctx, client, key, version, frame).await;
    }
    dispatch(ctx, client, key, version, frame).await
}

/// Decodes a request of a version the crate decodes and runs its handler.
pub(crate) async fn dispatch<'a>(
    ctx: &'a Ctx,
    client: &Client,
    key: ApiKey,
    version: i16,
    frame: Bytes,
) -> Result<Handled<'a>, Fatal> {
    let raw_key = key as i16;
    // Every count and length in the frame is checked against the bytes it holds before the
    // crate sizes anything from them (see `bounds`).
    bounds::check_request(raw_key, version, &frame).map_err(|e| Fatal(e.0))?;
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, key.request_header_version(version))?;
    let header_client_id = header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let req = Req {
        ctx,
        version,
        body: buf,
        correlation: header.correlation_id,
        response_header_version: key.response_header_version(version),
        client_id: header_client_id.clone(),
        peer: client.peer,
        listener: client.listener.clone(),
        principal: client.principal.clone(),
        sasl: client.sasl.clone(),
        mute_ms: client.mute_ms.clone(),
    };
    let api = key;
    tracing::trace!(peer = %client.peer, principal = %req.principal, ?api, version, correlation = header.correlation_id, "request");
    let started = std::time::Instant::now();
    let handled = if key == ApiKey::Produce {
        // The one reply that may wait (for a sync) while the connection goes on.
        data::produce(req)
    } else {
        match key {
            ApiKey::ApiVersions => meta::api_versions(req),
            ApiKey::Metadata => meta::metadata(req).await,
            ApiKey::DescribeCluster => meta::describe_cluster(req),
            ApiKey::InitProducerId => txn_api::init_producer_id(req).await,
            ApiKey::Fetch => data::fetch(req).await,
            ApiKey::ListOffsets => data::list_offsets(req),
            ApiKey::CreateTopics => admin::create_topics(req).await,
            ApiKey::DeleteTopics => admin::delete_topics(req).await,
            ApiKey::CreatePartitions => admin::create_partitions(req).await,
            ApiKey::DescribeConfigs => admin::describe_configs(req),
            ApiKey::IncrementalAlterConfigs => admin::incremental_alter_configs(req).await,
            ApiKey::FindCoordinator => group_api::find_coordinator(req),
            ApiKey::JoinGroup => group_api::join_group(req).await,
            ApiKey::SyncGroup => group_api::sync_group(req).await,
            ApiKey::Heartbeat => group_api::heartbeat(req),
            ApiKey::LeaveGroup => group_api::leave_group(req).await,
            ApiKey::OffsetCommit => group_api::offset_commit(req).await,
            ApiKey::OffsetFetch => group_api::offset_fetch(req),
            ApiKey::DescribeGroups => group_api::describe_groups(req),
            ApiKey::ListGroups => group_api::list_groups(req),
            ApiKey::DeleteGroups => group_api::delete_groups(req).await,
            ApiKey::OffsetDelete => group_api::offset_delete(req).await,
            ApiKey::ConsumerGroupHeartbeat => consumer_api::heartbeat(req).await,
            ApiKey::ConsumerGroupDescribe => consumer_api::describe(req),
            ApiKey::ShareGroupHeartbeat => share_api::heartbeat(req).await,
            ApiKey::ShareGroupDescribe => share_api::describe(req),
            ApiKey::ShareFetch => share_api::fetch(req).await,
            ApiKey::ShareAcknowledge => share_api::acknowledge_request(req).await,
            ApiKey::DescribeShareGroupOffsets => share_api::describe_offsets(req),
            ApiKey::AlterShareGroupOffsets => share_api::alter_offsets(req).await,
            ApiKey::DeleteShareGroupOffsets => share_api::delete_offsets(req).await,
            ApiKey::AddPartitionsToTxn => txn_api::add_partitions_to_txn(req).await,
            ApiKey::AddOffsetsToTxn => txn_api::add_offsets_to_txn(req).await,
            ApiKey::EndTxn => txn_api::end_txn(req).await,
            ApiKey::TxnOffsetCommit => txn_api::txn_offset_commit(req).await,
            ApiKey::DescribeTransactions => txn_api::describe_transactions(req),
            ApiKey::ListTransactions => txn_api::list_transactions(req),
            ApiKey::DescribeProducers => txn_api::describe_producers(req),
            ApiKey::DeleteRecords => admin2::delete_records(req),
            ApiKey::DescribeLogDirs => admin2::describe_log_dirs(req),
            ApiKey::AlterReplicaLogDirs => admin2::alter_replica_log_dirs(req),
            ApiKey::DescribeTopicPartitions => admin2::describe_topic_partitions(req),
            ApiKey::ElectLeaders => match req.ctx.broker.cluster().cloned() {
                Some(c) => cluster_api::elect_leaders(req, c.as_ref()).await,
                None => admin2::elect_leaders(req),
            },
            ApiKey::AlterPartitionReassignments => match req.ctx.broker.cluster().cloned() {
                Some(c) => cluster_api::alter_partition_reassignments(req, c.as_ref()).await,
                None => admin2::alter_partition_reassignments(req),
            },
            ApiKey::ListPartitionReassignments => match req.ctx.broker.cluster().cloned() {
                Some(c) => cluster_api::list_partition_reassignments(req, c.as_ref()),
                None => admin2::list_partition_reassignments(req),
            },
            ApiKey::DescribeQuorum => admin2::describe_quorum(req),
            ApiKey::AlterConfigs => admin2::alter_configs(req).await,
            ApiKey::OffsetForLeaderEpoch => admin2::offset_for_leader_epoch(req),
            ApiKey::DescribeClientQuotas => admin2::describe_client_quotas(req),
            ApiKey::AlterClientQuotas => admin2::alter_client_quotas(req),
            ApiKey::ListConfigResources => admin2::list_config_resources(req),
            ApiKey::GetTelemetrySubscriptions => admin2::get_telemetry_subscriptions(req),
            ApiKey::PushTelemetry => admin2::push_telemetry(req),
            ApiKey::SaslHandshake => sasl::handshake(req),
            ApiKey::SaslAuthenticate => sasl::authenticate(req).await,
            ApiKey::DescribeUserScramCredentials => sasl::describe_user_scram_credentials(req),
            ApiKey::AlterUserScramCredentials => sasl::alter_user_scram_credentials(req),
            ApiKey::DescribeAcls => acl_api::describe_acls(req),
            ApiKey::CreateAcls => acl_api::create_acls(req),
            ApiKey::DeleteAcls => acl_api::delete_acls(req),
            other => return Err(Fatal(format!("api {other:?} has no handler"))),
        }
        .map(Handled::Now)
    }
    .map_err(|e| Fatal(format!("{api:?} v{version}: {}", e.0)))?;
    // A request's latency runs until its reply is ready.
    let name = versions::name(api);
    let record = move || {
        ctx.broker
            .metrics()
            .request("kafka", name, started.elapsed())
    };
    // request_percentage: the time spent handling a request that does not wait (long
    // polls and rebalances wait for others; a produce's sync is not handling time).
    if !matches!(raw_key, 1 | 11 | 14 | 78) {
        let us = started.elapsed().as_micros() as usize;
        let t = ctx.broker.charge_quota(
            strom_broker::quota::QuotaKind::RequestTime,
            (&client.principal, header_client_id.as_str()),
            us.max(1),
        );
        if !t.is_zero() {
            client
                .mute_ms
                .fetch_max(t.as_millis() as u64, Ordering::Relaxed);
        }
    }
    Ok(match handled {
        Handled::Now(reply) => {
            record();
            Handled::Now(reply)
        }
        Handled::Later(reply) => Handled::Later(Box::pin(async move {
            let reply = reply.await;
            record();
            reply
        })),
    })
}

/// A decoded request: the handler's input.
pub(crate) struct Req<'a> {
    pub(crate) ctx: &'a Ctx,
    pub(crate) version: i16,
    body: Bytes,
    correlation: i32,
    response_header_version: i16,
    /// The client id from the request header.
    pub(crate) client_id: String,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The listener the request came in on.
    pub(crate) listener: Arc<Listener>,
    /// The principal the connection authenticated as.
    pub(crate) principal: Arc<Principal>,
    /// The connection's SASL state (SASL listeners only).
    pub(crate) sasl: Option<SaslState>,
    /// Set by a handler that a quota throttled (see [`Client::mute_ms`]).
    pub(crate) mute_ms: Arc<AtomicU64>,
}

/// A string for the crate's messages.
pub(crate) fn sb(s: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.into())
}

impl Req<'_> {
    /// Charges `bytes` to the principal's and client id's `kind` quota; returns the throttle
    /// time for the response's `throttle_time_ms` and mutes the connection that long.
    pub(crate) fn charge_quota(&self, kind: strom_broker::quota::QuotaKind, bytes: usize) -> i32 {
        if bytes == 0 {
            return 0;
        }
        let t = self
            .ctx
            .broker
            .charge_quota(kind, (&self.principal, &self.client_id), bytes);
        let ms = t.as_millis() as u64;
        if ms > 0 {
            self.mute_ms.fetch_max(ms, Ordering::Relaxed);
        }
        ms as i32
    }

    /// controller_mutation_rate (KIP-599): `Some(ms)` when the principal is over it already,
    /// so that this request's mutations are refused with THROTTLING_QUOTA_EXCEEDED (by the
    /// versions that know it: `strict`) and the client told to wait `ms`.
    pub(crate) fn mutations_throttled(&self, strict: bool) -> Option<i32> {
        if !strict {
            return None;
        }
        let wait = self.ctx.broker.quota_wait(
            strom_broker::quota::QuotaKind::ControllerMutation,
            (&self.principal, &self.client_id),
            0,
        );
        (!wait.is_zero()).then(|| {
            let ms = wait.as_millis() as u64;
            self.mute_ms.fetch_max(ms, Ordering::Relaxed);
            ms as i32
        })
    }

    /// Whether the connection's principal may do `op` on `rt`/`name` (always, without
    /// `--authorizer acl`); a refusal is logged, as Kafka's authorizer log does.
    pub(crate) fn allowed(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        let ok = self.permits(op, rt, name);
        if !ok {
            tracing::info!(peer = %self.peer, principal = %self.principal, operation = op.name(),
                resource_type = rt.name(), resource = name, "authorization denied");
        }
        ok
    }

    /// [`Req::allowed`] without the log line (for listings that leave out what is hidden).
    pub(crate) fn permits(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        let who = Who {
            principal: &self.principal,
            host: self.peer.ip(),
        };
        self.ctx.broker.authorizer().authorize(who, op, rt, name)
    }

    /// Whether the principal may do `op` on some resource of type `rt` (Kafka's
    /// `authorizeByResourceType`, e.g. IDEMPOTENT_WRITE implied by WRITE on any topic).
    pub(crate) fn allowed_any(&self, op: Operation, rt: ResourceType) -> bool {
        let who = Who {
            principal: &self.principal,
            host: self.peer.ip(),
        };
        self.ctx.broker.authorizer().authorize_any(who, op, rt)
    }

    /// Whether the principal may do `op` on the cluster.
    pub(crate) fn allowed_cluster(&self, op: Operation) -> bool {
        self.allowed(op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// The refusal of a cluster-level API without `op` on the cluster (an error code and
    /// message for its response), if the principal lacks it.
    pub(crate) fn cluster_denied(&self, op: Operation) -> Option<(i16, String)> {
        (!self.allowed_cluster(op)).then(|| {
            (
                kafka_protocol::ResponseError::ClusterAuthorizationFailed.code(),
                format!("{} may not {} the cluster", self.principal, op.name()),
            )
        })
    }

    /// Decodes the body as `T`. Trailing bytes are tolerated and logged (librdkafka's
    /// Metadata v13 carries some), as Kafka's own parser tolerates them.
    pub(crate) fn decode<T: Decodable>(&mut self) -> Result<T, Fatal> {
        let v = T::decode(&mut self.body, self.version)?;
        if self.body.has_remaining() {
            let n = self.body.remaining();
            let head = &self.body[..n.min(16)];
            tracing::debug!(left = n, bytes = ?head, "bytes after the request body");
        }
        Ok(v)
    }

    /// The undecoded body (for versions the crate does not know: `share_wire`).
    pub(crate) fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Encodes the framed response (length, header, body) at the request's version, in one
    /// buffer.
    pub(crate) fn encode<T: Encodable>(&self, resp: &T) -> Result<Reply, Fatal> {
        self.encoder().encode(resp)
    }

    /// [`Req::encode`] where the `shared` byte fields of `resp` (records: placeholders of
    /// file ranges) are replaced by their chunks instead of being copied into the response.
    pub(crate) fn encode_chunks<T: Encodable>(
        &self,
        resp: &T,
        shared: Vec<(Bytes, Chunk)>,
    ) -> Result<Reply, Fatal> {
        self.encoder().encode_chunks(resp, shared)
    }

    /// What encoding this request's response takes, for a reply built later.
    pub(crate) fn encoder(&self) -> Encoder {
        Encoder {
            version: self.version,
            correlation: self.correlation,
            response_header_version: self.response_header_version,
        }
    }
}

/// Encodes responses to one request: see [`Req::encoder`].
#[derive(Clone, Copy)]
pub(crate) struct Encoder {
    version: i16,
    correlation: i32,
    response_header_version: i16,
}

impl Encoder {
    /// The same response encoded at body version `version` (ShareFetch v2 is v1's body:
    /// see `share_wire`).
    pub(crate) fn with_body_version(self, version: i16) -> Encoder {
        Encoder { version, ..self }
    }

    /// A response whose body is already encoded.
    pub(crate) fn frame_body(&self, body: &[u8]) -> Reply {
        let header = ResponseHeader::default().with_correlation_id(self.correlation);
        let hlen = header
            .compute_size(self.response_header_version)
            .unwrap_or(4);
        let mut out = Chunked::with_chunks(4 + hlen + body.len(), Vec::new());
        out.put_i32((hlen + body.len()) as i32);
        if header
            .encode(&mut out, self.response_header_version)
            .is_err()
        {
            out.put_i32(self.correlation);
        }
        out.put_slice(body);
        Some(out.finish())
    }

    /// See [`Req::encode`].
    pub(crate) fn encode<T: Encodable>(&self, resp: &T) -> Result<Reply, Fatal> {
        self.encode_chunks(resp, Vec::new())
    }

    /// See [`Req::encode_chunks`].
    pub(crate) fn encode_chunks<T: Encodable>(
        &self,
        resp: &T,
        shared: Vec<(Bytes, Chunk)>,
    ) -> Result<Reply, Fatal> {
        let header = ResponseHeader::default().with_correlation_id(self.correlation);
        let size =
            header.compute_size(self.response_header_version)? + resp.compute_size(self.version)?;
        let shared_len: usize = shared.iter().map(|(b, _)| b.len()).sum();
        let mut out = Chunked::with_chunks((4 + size).saturating_sub(shared_len), shared);
        out.put_i32(size as i32);
        header.encode(&mut out, self.response_header_version)?;
        resp.encode(&mut out, self.version)?;
        Ok(Some(out.finish()))
    }
}

/// Length prefix + response header + body.
pub(crate) fn frame_response(correlation: i32, header_version: i16, body: BytesMut) -> BytesMut {
    let header = ResponseHeader::default().with_correlation_id(correlation);
    let hlen = header.compute_size(header_version).unwrap_or(4);
    let mut out = BytesMut::with_capacity(4 + hlen + body.len());
    out.put_i32((hlen + body.len()) as i32);
    if header.encode(&mut out, header_version).is_err() {
        out.put_i32(correlation);
    }
    out.extend_from_slice(&body);
    out
}

/// This broker's address as advertised on the listener `req` came in on.
pub(crate) fn advertised(req: &Req<'_>) -> (String, i32) {
    (req.listener.host.clone(), i32::from(req.listener.port))
}
