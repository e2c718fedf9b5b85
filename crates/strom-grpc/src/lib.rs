//! # strom-grpc: the gRPC door
//!
//! The service `strom.v1.Strom` of `proto/strom/v1/strom.proto` (code generated at build time
//! by tonic-prost-build from protox's descriptors: no `protoc`), `grpc.health.v1.Health` and
//! server reflection, over HTTP/2 with tonic, optionally TLS (`--grpc-tls true`, the broker's
//! certificate). Like the HTTP door it translates and calls the core: records produced here
//! are built into Kafka record batches and land in the partition a Kafka client would choose
//! for their key (murmur2); records read are the stored batches decoded. Share groups
//! (queues), consumer groups (a Subscribe with a group is a KIP-848 member whose partitions the
//! coordinator assigns), ACLs and quotas are the core's.
//!
//! Callers authenticate with the `authorization` metadata (`Basic base64(user:password)` of a
//! `strom user set` user, or `Bearer <token>` of `strom token create`); without it they are
//! `User:ANONYMOUS`, unless `--grpc-auth required`. Every refusal is a status code with a
//! `google.rpc.ErrorInfo` detail whose reason is a stable code (Kafka's error names).
//!
//! Memory is bounded: a request or message larger than `--grpc-max-message-bytes` is refused
//! (RESOURCE_EXHAUSTED), a stream's outgoing messages wait in a bounded queue (the HTTP/2
//! window then this queue), and a reader that lets it fill for `--grpc-stall-timeout-ms` gets
//! its stream ended with RESOURCE_EXHAUSTED.

mod admin;
mod conn;
mod produce;
mod queue;
mod service;
mod subscribe;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use strom_broker::coordinator::GroupCoordinator;
use strom_broker::quota::QuotaKind;
use strom_broker::security::acl::{Operation, ResourceType, Who};
use strom_broker::security::tokens::Verdict;
use strom_broker::security::Principal;
use strom_broker::share::ShareCoordinator;
use strom_broker::{Broker, BrokerError};
use strom_log::{BatchError, LogError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The generated types and service of `strom.v1`.
pub mod pb {
    #![allow(unreachable_pub, missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("strom.v1");

    /// The encoded file descriptor set of `strom.proto` (served by reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/strom_descriptor.bin"));
}

/// A throttle longer than this refuses the request with RESOURCE_EXHAUSTED (nothing done)
/// instead of delaying it.
const QUOTA_REFUSE_AFTER: Duration = Duration::from_secs(2);

/// HTTP/2 receive window of a connection (all its streams together).
const CONNECTION_WINDOW: u32 = 2 << 20;
/// HTTP/2 receive window of one stream.
const STREAM_WINDOW: u32 = 1 << 20;

/// The client id of gRPC calls for client quotas (`client-id=<default>` quotas apply).
const CLIENT_ID: &str = "";

/// Settings of the gRPC door.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// Largest message a call may send or receive, encoded (`--grpc-max-message-bytes`).
    pub max_message_bytes: usize,
    /// Compress responses with this when the client accepts it (`--grpc-compression`;
    /// requests may use gzip or zstd whatever it is).
    pub send_compression: Compression,
    /// Every call needs credentials (`--grpc-auth required`).
    pub auth_required: bool,
    /// A failed authentication is answered after this long.
    pub failed_auth_delay: Duration,
    /// TLS with the broker's certificate (`--grpc-tls true`).
    pub tls: Option<Arc<strom_tls::Tls>>,
    /// Connections held at most; more are closed at once.
    pub max_connections: usize,
    /// Connections one client address holds at most.
    pub max_connections_per_ip: usize,
    /// Messages a stream queues for its reader at most.
    pub stream_buffer: usize,
    /// How long a stream's reader may leave its queue full before the stream is ended with
    /// RESOURCE_EXHAUSTED (`--grpc-stall-timeout-ms`).
    pub stall_timeout: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            max_message_bytes: 8 << 20,
            send_compression: Compression::None,
            auth_required: false,
            failed_auth_delay: Duration::from_millis(100),
            tls: None,
            max_connections: 1024,
            max_connections_per_ip: usize::MAX,
            stream_buffer: 1024,
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Response compression (`--grpc-compression`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Responses are not compressed.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// `none`, `gzip` or `zstd`.
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    fn encoding(self) -> Option<CompressionEncoding> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Door {
    pub(crate) broker: Arc<Broker>,
    pub(crate) groups: Arc<GroupCoordinator>,
    pub(crate) shares: Arc<ShareCoordinator>,
    pub(crate) config: Arc<GrpcConfig>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Serves gRPC on `listener` until `shutdown` turns true: new calls are then refused with
/// UNAVAILABLE, open streams end with UNAVAILABLE, and the server returns once every call has
/// ended.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    groups: Arc<GroupCoordinator>,
    shares: Arc<ShareCoordinator>,
    config: GrpcConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = Arc::new(config);
    let door = Door {
        broker: broker.clone(),
        groups,
        shares,
        config: config.clone(),
        shutdown: shutdown.clone(),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::strom_server::StromServer<Door>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut strom = pb::strom_server::StromServer::new(door)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    if let Some(c) = config.send_compression.encoding() {
        strom = strom.send_compressed(c);
    }
    let incoming = conn::incoming(listener, config.clone(), broker, shutdown.clone());
    let mut stop = shutdown;
    let stopped = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        health
            .set_not_serving::<pb::strom_server::StromServer<Door>>()
            .await;
    };
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            too_large_is_resource_exhausted,
        ))
        // HTTP/2's default 64 KiB windows would cost a round trip per 64 KiB of a 100 KB
        // produce request; these bound what one connection can hold unread (2 MiB in all).
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(strom)
        .serve_with_incoming_shutdown(incoming, stopped)
        .await?;
    Ok(())
}

/// tonic refuses a request message over the size limit with OUT_OF_RANGE; gRPC says
/// RESOURCE_EXHAUSTED (what gRPC's own servers answer, and what the door documents).
fn too_large_is_resource_exhausted<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers_mut();
    let too_large = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if too_large {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    resp
}

// --- errors --------------------------------------------------------------------------------

/// A status with a `google.rpc.ErrorInfo` detail: `reason` (a stable code) in domain
/// `strom`.
pub(crate) fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, "strom", HashMap::<String, String>::new()),
    )
}

pub(crate) fn invalid(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, "INVALID_REQUEST", message)
}

pub(crate) fn shutting_down() -> Status {
    status(
        Code::Unavailable,
        "BROKER_NOT_AVAILABLE",
        "the broker is shutting down",
    )
}

/// The core's errors as statuses.
pub(crate) fn broker_status(e: BrokerError) -> Status {
    let msg = e.to_string();
    let (code, reason) = match &e {
        BrokerError::UnknownTopicOrPartition { .. } | BrokerError::Log(LogError::Closed) => {
            (Code::NotFound, "UNKNOWN_TOPIC_OR_PARTITION")
        }
        BrokerError::TopicAlreadyExists(_) => (Code::AlreadyExists, "TOPIC_ALREADY_EXISTS"),
        BrokerError::InvalidTopic { .. } => (Code::InvalidArgument, "INVALID_TOPIC_EXCEPTION"),
        BrokerError::InvalidPartitions(_) => (Code::InvalidArgument, "INVALID_PARTITIONS"),
        BrokerError::InvalidConfig(_) => (Code::InvalidArgument, "INVALID_CONFIG"),
        BrokerError::Log(
            LogError::Batch(BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. })
            | LogError::RecordSetTooLarge { .. },
        ) => (Code::InvalidArgument, "MESSAGE_TOO_LARGE"),
        BrokerError::Log(LogError::OffsetOutOfRange { .. }) => {
            (Code::OutOfRange, "OFFSET_OUT_OF_RANGE")
        }
        BrokerError::Log(LogError::Batch(BatchError::Corrupt(_))) => {
            (Code::InvalidArgument, "CORRUPT_MESSAGE")
        }
        BrokerError::Log(LogError::Batch(
            BatchError::Invalid(_)
            | BatchError::InvalidRecord { .. }
            | BatchError::UnsupportedMagic(_),
        )) => (Code::InvalidArgument, "INVALID_RECORD"),
        BrokerError::InvalidTimestamp(_) => (Code::InvalidArgument, "INVALID_TIMESTAMP"),
        BrokerError::ShuttingDown => (Code::Unavailable, "BROKER_NOT_AVAILABLE"),
        BrokerError::NotLeader { .. }
        | BrokerError::FencedLeaderEpoch { .. }
        | BrokerError::UnknownLeaderEpoch { .. } => (Code::Unavailable, "NOT_LEADER_OR_FOLLOWER"),
        BrokerError::NotEnoughReplicas { .. } => (Code::Unavailable, "NOT_ENOUGH_REPLICAS"),
        BrokerError::NotEnoughReplicasAfterAppend { .. } => {
            (Code::Unavailable, "NOT_ENOUGH_REPLICAS_AFTER_APPEND")
        }
        BrokerError::ReplicationTimeout { .. } => (Code::DeadlineExceeded, "REQUEST_TIMED_OUT"),
        BrokerError::InvalidReplicationFactor(_) => {
            (Code::InvalidArgument, "INVALID_REPLICATION_FACTOR")
        }
        e if e.is_out_of_space() => (Code::ResourceExhausted, "KAFKA_STORAGE_ERROR"),
        e if e.is_offline() => (Code::Unavailable, "KAFKA_STORAGE_ERROR"),
        _ => (Code::Internal, "KAFKA_STORAGE_ERROR"),
    };
    status(code, reason, msg)
}

// --- callers -------------------------------------------------------------------------------

/// Who is calling and from where.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) host: IpAddr,
}

impl Door {
    /// The caller of a request: its credentials checked (a wrong one is refused after the
    /// failed-authentication delay), UNAVAILABLE once the broker is stopping.
    pub(crate) async fn caller<T>(&self, req: &tonic::Request<T>) -> Result<Caller, Status> {
        if *self.shutdown.borrow() {
            return Err(shutting_down());
        }
        let host = req
            .extensions()
            .get::<conn::Peer>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.addr.ip());
        let principal = match self.principal(req.metadata()).await {
            Ok(p) => p,
            Err(why) => {
                tracing::info!(%host, why, "gRPC authentication failed");
                if !self.config.failed_auth_delay.is_zero() {
                    tokio::time::sleep(self.config.failed_auth_delay).await;
                }
                return Err(status(
                    Code::Unauthenticated,
                    "SASL_AUTHENTICATION_FAILED",
                    why,
                ));
            }
        };
        Ok(Caller { principal, host })
    }

    async fn principal(&self, meta: &MetadataMap) -> Result<Principal, &'static str> {
        let Some(v) = meta.get("authorization") else {
            if self.config.auth_required {
                return Err("credentials are required: authorization metadata `Basic base64(user:password)` or `Bearer <token>`");
            }
            return Ok(Principal::anonymous());
        };
        let v = v
            .to_str()
            .map_err(|_| "the authorization metadata is not ASCII")?;
        let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or("Basic credentials are not base64 of UTF-8")?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or("Basic credentials are not user:password")?;
            let creds = self
                .broker
                .credentials()
                .map_err(|_| "the credential store cannot be read")?;
            let (u, pw) = (user.to_string(), password.to_string());
            // PBKDF2 (a few ms) off the reactor.
            let ok = tokio::task::spawn_blocking(move || creds.verify_password(&u, pw.as_bytes()))
                .await
                .unwrap_or(false);
            if !ok {
                return Err("wrong user name or password");
            }
            return Ok(Principal::user(user));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let tokens = self
                .broker
                .tokens()
                .map_err(|_| "the token store cannot be read")?;
            return match tokens.verify(rest) {
                Verdict::Valid(p) => Ok(p),
                Verdict::Expired => Err("the token has expired"),
                Verdict::Unknown => Err("unknown or revoked token"),
            };
        }
        Err("the authorization scheme is not Basic or Bearer")
    }
}

impl Caller {
    /// Whether the authorizer lets this caller do `op` on `rt`/`name`.
    pub(crate) fn may(&self, door: &Door, op: Operation, rt: ResourceType, name: &str) -> bool {
        door.broker.authorizer().authorize(
            Who {
                principal: &self.principal,
                host: self.host,
            },
            op,
            rt,
            name,
        )
    }

    /// Ok when the authorizer lets this caller do `op` on `rt`/`name`: else PERMISSION_DENIED
    /// (UNAUTHENTICATED for an anonymous caller: credentials might help).
    pub(crate) fn allow(
        &self,
        door: &Door,
        op: Operation,
        rt: ResourceType,
        name: &str,
    ) -> Result<(), Status> {
        if self.may(door, op, rt, name) {
            return Ok(());
        }
        let reason = match rt {
            ResourceType::Group => "GROUP_AUTHORIZATION_FAILED",
            ResourceType::Cluster => "CLUSTER_AUTHORIZATION_FAILED",
            _ => "TOPIC_AUTHORIZATION_FAILED",
        };
        let what = format!("{} {} {name:?}", op.name(), rt.name());
        Err(if self.principal.is_anonymous() {
            status(
                Code::Unauthenticated,
                reason,
                format!("{what} needs credentials (authorization metadata)"),
            )
        } else {
            status(
                Code::PermissionDenied,
                reason,
                format!("{} may not {what}", self.principal),
            )
        })
    }

    /// Refuses a request of `bytes` that the caller's `kind` quota would throttle for more
    /// than [`QUOTA_REFUSE_AFTER`] (nothing done).
    pub(crate) fn quota_gate(
        &self,
        door: &Door,
        kind: QuotaKind,
        bytes: usize,
    ) -> Result<(), Status> {
        let wait = door
            .broker
            .quota_wait(kind, (&self.principal, CLIENT_ID), bytes);
        if wait <= QUOTA_REFUSE_AFTER {
            return Ok(());
        }
        door.broker.metrics().throttled(Duration::ZERO);
        Err(status(
            Code::ResourceExhausted,
            "THROTTLING_QUOTA_EXCEEDED",
            format!(
                "{}'s {} quota is exceeded; retry in {} ms",
                self.principal,
                kind.key(),
                wait.as_millis()
            ),
        ))
    }

    /// Charges `bytes` to the caller's `kind` quota and waits out the throttle.
    pub(crate) async fn quota_charge(&self, door: &Door, kind: QuotaKind, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let t = door
            .broker
            .charge_quota(kind, (&self.principal, CLIENT_ID), bytes);
        if !t.is_zero() {
            door.broker.metrics().throttled(t);
            tokio::time::sleep(t).await;
        }
    }
}

// --- streams -------------------------------------------------------------------------------

/// The sending side of a server stream: a bounded queue (its reader is the HTTP/2 stream).
pub(crate) struct Out<T> {
    tx: mpsc::Sender<Result<T, Status>>,
    stall: Duration,
}

impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        Out {
            tx: self.tx.clone(),
            stall: self.stall,
        }
    }
}

/// The stream a handler returns.
pub(crate) type OutStream<T> = tokio_stream::wrappers::ReceiverStream<Result<T, Status>>;

impl<T: Send + 'static> Out<T> {
    pub(crate) fn new(door: &Door) -> (Out<T>, OutStream<T>) {
        let (tx, rx) = mpsc::channel(door.config.stream_buffer.max(1));
        let out = Out {
            tx,
            stall: door.config.stall_timeout,
        };
        (out, tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// Queues a message; false when the call is gone, or when its reader left the queue full
    /// for the stall timeout (the stream then ends with RESOURCE_EXHAUSTED).
    pub(crate) async fn send(&self, m: T) -> bool {
        match self.tx.try_send(Ok(m)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(m)) => {
                match tokio::time::timeout(self.stall, self.tx.send(m)).await {
                    Ok(r) => r.is_ok(),
                    Err(_) => {
                        self.too_slow();
                        false
                    }
                }
            }
        }
    }

    /// Ends the stream with `s` (after what is queued; the wait ends when the reader reads or
    /// the call goes away, which HTTP/2 keepalive notices for a dead peer).
    pub(crate) async fn fail(&self, s: Status) {
        let _ = self.tx.send(Err(s)).await;
    }

    fn too_slow(&self) {
        // A full queue has no room for the status: the reader gets it once it reads again.
        let (tx, stall) = (self.tx.clone(), self.stall);
        tokio::spawn(async move {
            let s = status(
                Code::ResourceExhausted,
                "STREAM_TOO_SLOW",
                format!(
                    "the stream's reader did not keep up for {} ms: ended",
                    stall.as_millis()
                ),
            );
            let _ = tx.send(Err(s)).await;
        });
    }

    /// Whether the call has ended (the client cancelled or went away).
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits until the call has ended.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The deadline of a call (`grpc-timeout`), for a stream whose work is not one future.
pub(crate) fn deadline(meta: &MetadataMap) -> Option<Instant> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(Instant::now() + d)
}

/// Runs a stream's `work` until it ends or the call's deadline passes (then the stream ends
/// with DEADLINE_EXCEEDED and the work is dropped).
pub(crate) async fn until_deadline<T: Send + 'static>(
    deadline: Option<Instant>,
    out: Out<T>,
    work: impl std::future::Future<Output = ()>,
) {
    let Some(d) = deadline else {
        return work.await;
    };
    if tokio::time::timeout_at(d.into(), work).await.is_err() {
        out.fail(status(
            Code::DeadlineExceeded,
            "REQUEST_TIMED_OUT",
            "the call's deadline passed",
        ))
        .await;
    }
}

/// Records one call's handling time in the broker's request histogram.
pub(crate) fn observe(door: &Door, method: &'static str, since: Instant) {
    door.broker
        .metrics()
        .request("grpc", method, since.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut m = MetadataMap::new();
        assert!(deadline(&m).is_none());
        m.insert("grpc-timeout", "1500m".parse().unwrap());
        let d = deadline(&m).unwrap() - Instant::now();
        assert!(d <= Duration::from_millis(1500) && d > Duration::from_millis(1000));
        m.insert("grpc-timeout", "2S".parse().unwrap());
        assert!(deadline(&m).unwrap() > Instant::now() + Duration::from_secs(1));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert!(deadline(&m).is_none());
    }
}
