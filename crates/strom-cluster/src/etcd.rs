//! Our own client of etcd's v3 gRPC API: the KV, Watch and Lease services and the v3election
//! service, compiled (by `build.rs`, with protox: no `protoc` needed) from the minimal protos in
//! `proto/etcd/`, which declare only the messages and fields used here, with etcd's package,
//! service and method names and field numbers so that they are wire compatible with a real
//! server.
//!
//! One [`Etcd`] holds one tonic [`Channel`] (HTTP/2, multiplexed) and is cheap to clone. Unary
//! calls are bounded by [`REQUEST_TIMEOUT`]; the long ones ([`Etcd::campaign`], the streams of
//! [`Watcher`] once created) are not.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use proto::etcdserverpb::{
    compare, kv_client::KvClient, lease_client::LeaseClient, request_op, response_op,
    watch_client::WatchClient, watch_request, CompactionRequest, DeleteRangeRequest,
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use proto::mvccpb;
use proto::v3electionpb::{
    election_client::ElectionClient, CampaignRequest, LeaderRequest, ResignRequest,
};

/// The generated messages and clients of `proto/etcd/*.proto`, one module per proto package
/// (they refer to each other as `super::mvccpb` and so on).
mod proto {
    pub mod mvccpb {
        #![allow(
            unreachable_pub,
            dead_code,
            missing_docs,
            clippy::all,
            clippy::pedantic
        )]
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        #![allow(
            unreachable_pub,
            dead_code,
            missing_docs,
            clippy::all,
            clippy::pedantic
        )]
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3electionpb {
        #![allow(
            unreachable_pub,
            dead_code,
            missing_docs,
            clippy::all,
            clippy::pedantic
        )]
        tonic::include_proto!("v3electionpb");
    }
}

/// How long connecting to one endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a unary request (and the setup of a stream) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted (a `get_prefix` of many keys); etcd's own client takes up to 2 GiB.
const MAX_DECODING_MESSAGE_SIZE: usize = 256 << 20;
/// The error text of etcd's election service when nobody leads (gRPC code UNKNOWN).
const NO_LEADER: &str = "election: no leader";
/// The error text of etcd when a request names a lease that expired or was revoked.
const LEASE_NOT_FOUND: &str = "requested lease not found";

/// What can go wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint was given to [`Etcd::connect`].
    #[error("no etcd endpoint given")]
    NoEndpoints,
    /// An endpoint is malformed or could not be connected to.
    #[error("etcd transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server (or the gRPC layer) answered with an error status.
    #[error("etcd status {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The status message (etcd's error text, such as `etcdserver: ...`).
        message: String,
    },
    /// A request did not finish within [`REQUEST_TIMEOUT`].
    #[error("etcd request timed out after {0:?}")]
    Timeout(Duration),
    /// The lease is gone: a keep-alive answered a TTL of 0, or a request named a lease that
    /// expired or was revoked.
    #[error("etcd lease expired")]
    LeaseExpired,
    /// The watch's start revision was compacted away; `revision` is the oldest one left, so a
    /// fresh read (`get_prefix`) and a watch from its revision + 1 is the way on.
    #[error("etcd watch start revision compacted; oldest revision kept is {revision}")]
    Compacted {
        /// The compaction revision reported by the server.
        revision: i64,
    },
    /// The watch stream ended or the server canceled the watch.
    #[error("etcd watch closed")]
    WatchClosed,
    /// The server ended a lease keep-alive stream.
    #[error("etcd lease keep-alive stream closed")]
    KeepAliveClosed,
}

impl From<Status> for EtcdError {
    fn from(s: Status) -> Self {
        if s.code() == Code::NotFound && s.message().contains(LEASE_NOT_FOUND) {
            return EtcdError::LeaseExpired;
        }
        EtcdError::Status {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// The result of this module's calls.
pub type Result<T> = std::result::Result<T, EtcdError>;

impl EtcdError {
    /// Whether the request may succeed if tried again soon (etcd unreachable, restarting
    /// or electing a leader), as opposed to an answer.
    pub fn is_transient(&self) -> bool {
        match self {
            EtcdError::Transport(_) | EtcdError::Timeout(_) => true,
            EtcdError::Status { code, .. } => matches!(
                code,
                Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
            ),
            _ => false,
        }
    }
}

/// One key of the store with its revisions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty in the event of a delete).
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: i64,
    /// Revision of the latest write to the key (of the delete, in a delete event).
    pub mod_revision: i64,
    /// Number of writes since the key was created (1 after the first).
    pub version: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

impl From<mvccpb::KeyValue> for Kv {
    fn from(kv: mvccpb::KeyValue) -> Self {
        Kv {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// The comparison of a [`Compare`]: the key's field on the left, the operand on the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

impl CmpOp {
    fn to_proto(self) -> compare::CompareResult {
        match self {
            CmpOp::Equal => compare::CompareResult::Equal,
            CmpOp::NotEqual => compare::CompareResult::NotEqual,
            CmpOp::Greater => compare::CompareResult::Greater,
            CmpOp::Less => compare::CompareResult::Less,
        }
    }
}

/// A condition of a transaction on one key. An absent key has revisions, version and lease 0,
/// so `Compare::create_revision(key, CmpOp::Equal, 0)` means "the key does not exist".
#[derive(Debug, Clone)]
pub struct Compare(proto::etcdserverpb::Compare);

impl Compare {
    fn new(
        key: impl Into<Vec<u8>>,
        op: CmpOp,
        target: compare::CompareTarget,
        operand: compare::TargetUnion,
    ) -> Self {
        Compare(proto::etcdserverpb::Compare {
            result: op.to_proto() as i32,
            target: target as i32,
            key: key.into(),
            target_union: Some(operand),
        })
    }

    /// Compares the revision that created the key.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CmpOp, revision: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(revision),
        )
    }

    /// Compares the revision of the key's latest write.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CmpOp, revision: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(revision),
        )
    }

    /// Compares the key's version (writes since it was created).
    pub fn version(key: impl Into<Vec<u8>>, op: CmpOp, version: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(version),
        )
    }

    /// Compares the key's value (bytewise).
    pub fn value(key: impl Into<Vec<u8>>, op: CmpOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(value.into()),
        )
    }

    /// Compares the lease the key is attached to (0: none).
    pub fn lease(key: impl Into<Vec<u8>>, op: CmpOp, lease: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Lease,
            compare::TargetUnion::Lease(lease),
        )
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone)]
pub struct TxnOp(RequestOp);

impl TxnOp {
    /// Writes `value` at `key`, attached to `lease` (0: none).
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> Self {
        TxnOp(RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.into(),
                value: value.into(),
                lease,
            })),
        })
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        TxnOp(RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.into(),
                    range_end: Vec::new(),
                },
            )),
        })
    }

    /// Reads `key`; its result is in [`TxnResult::gets`].
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        TxnOp(RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.into(),
                ..Default::default()
            })),
        })
    }
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held (so the success branch ran, else the failure branch).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: i64,
    /// The results of the [`TxnOp::get`]s of the branch that ran, in order.
    pub gets: Vec<Option<Kv>>,
}

/// Proof of leadership of an election, returned by [`Etcd::campaign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    /// The election's name.
    pub name: Vec<u8>,
    /// The leader's key (the election's name, `/`, the lease id in hex).
    pub key: Vec<u8>,
    /// The create revision of `key`.
    pub rev: i64,
    /// The lease `key` is attached to.
    pub lease: i64,
}

impl From<proto::v3electionpb::LeaderKey> for LeaderKey {
    fn from(l: proto::v3electionpb::LeaderKey) -> Self {
        LeaderKey {
            name: l.name,
            key: l.key,
            rev: l.rev,
            lease: l.lease,
        }
    }
}

impl From<&LeaderKey> for proto::v3electionpb::LeaderKey {
    fn from(l: &LeaderKey) -> Self {
        proto::v3electionpb::LeaderKey {
            name: l.name.clone(),
            key: l.key.clone(),
            rev: l.rev,
            lease: l.lease,
        }
    }
}

/// The kind of a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted (or its lease ended).
    Delete,
}

/// One change seen by a [`Watcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after a put; after a delete only `key` and `mod_revision` are set.
    pub kv: Kv,
}

/// The range end that makes a range request cover every key starting with `prefix`: the prefix
/// with its last byte below 0xff incremented and what follows it dropped; `[0]` (every key from
/// `prefix` on) when there is no such byte.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// A client of an etcd cluster; cheap to clone (one shared HTTP/2 channel).
#[derive(Debug, Clone)]
pub struct Etcd {
    channel: Channel,
}

/// A request with a gRPC deadline the server enforces too.
fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(REQUEST_TIMEOUT);
    r
}

/// Awaits a call for at most [`REQUEST_TIMEOUT`].
async fn bounded<T>(
    call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>>,
) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(r) => Ok(r?.into_inner()),
        Err(_) => Err(EtcdError::Timeout(REQUEST_TIMEOUT)),
    }
}

impl Etcd {
    /// Connects to the first of `endpoints` (URLs such as `http://127.0.0.1:2379`) that answers
    /// within [`CONNECT_TIMEOUT`], trying them in order; the error of the last one if none does.
    /// The channel reconnects to that endpoint by itself after a failure.
    pub async fn connect(endpoints: &[String]) -> Result<Etcd> {
        let mut last = EtcdError::NoEndpoints;
        for url in endpoints {
            let endpoint = match Endpoint::from_shared(url.clone()) {
                Ok(e) => e,
                Err(e) => {
                    last = e.into();
                    continue;
                }
            };
            let endpoint = endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                // etcd refuses pings more often than every 5 s, and any ping without a stream.
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(false);
            match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
                Ok(Ok(channel)) => {
                    tracing::debug!(endpoint = %url, "connected to etcd");
                    return Ok(Etcd { channel });
                }
                Ok(Err(e)) => {
                    tracing::debug!(endpoint = %url, error = %e, "etcd endpoint unreachable");
                    last = e.into();
                }
                Err(_) => {
                    tracing::debug!(endpoint = %url, "etcd endpoint timed out");
                    last = EtcdError::Timeout(CONNECT_TIMEOUT);
                }
            }
        }
        Err(last)
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
    }

    fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }

    fn election(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel.clone())
    }

    /// Reads one key.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Kv>> {
        let r = bounded(self.kv().range(request(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })))
        .await?;
        Ok(r.kvs.into_iter().next().map(Kv::from))
    }

    /// Reads every key starting with `prefix`, in key order, and the store's revision of that
    /// read (a watch from revision + 1 then misses nothing).
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<(Vec<Kv>, i64)> {
        let r = bounded(self.kv().range(request(RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        })))
        .await?;
        let revision = r.header.map_or(0, |h| h.revision);
        Ok((r.kvs.into_iter().map(Kv::from).collect(), revision))
    }

    /// Writes `value` at `key`, attached to `lease` (0: none); returns the store's revision
    /// after the write.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64> {
        let r = bounded(self.kv().put(request(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
        })))
        .await?;
        Ok(r.header.map_or(0, |h| h.revision))
    }

    /// Deletes one key; returns how many were deleted (0 or 1).
    pub async fn delete(&self, key: &[u8]) -> Result<i64> {
        let r = bounded(self.kv().delete_range(request(DeleteRangeRequest {
            key: key.to_vec(),
            range_end: Vec::new(),
        })))
        .await?;
        Ok(r.deleted)
    }

    /// Runs `success` if every compare holds, else `failure`, atomically.
    pub async fn txn(
        &self,
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    ) -> Result<TxnResult> {
        let r = bounded(self.kv().txn(request(TxnRequest {
            compare: compares.into_iter().map(|c| c.0).collect(),
            success: success.into_iter().map(|o| o.0).collect(),
            failure: failure.into_iter().map(|o| o.0).collect(),
        })))
        .await?;
        let gets = r
            .responses
            .into_iter()
            .filter_map(|op| match op.response {
                Some(response_op::Response::ResponseRange(range)) => {
                    Some(range.kvs.into_iter().next().map(Kv::from))
                }
                _ => None,
            })
            .collect();
        Ok(TxnResult {
            succeeded: r.succeeded,
            revision: r.header.map_or(0, |h| h.revision),
            gets,
        })
    }

    /// Drops the store's history before `revision` (the latest value of every key stays);
    /// watches from an earlier revision then fail with [`EtcdError::Compacted`].
    pub async fn compact(&self, revision: i64) -> Result<()> {
        bounded(self.kv().compact(request(CompactionRequest {
            revision,
            physical: true,
        })))
        .await?;
        Ok(())
    }

    /// Grants a lease of `ttl_secs` seconds; returns its id.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<i64> {
        let r = bounded(self.lease().lease_grant(request(LeaseGrantRequest {
            ttl: ttl_secs,
            id: 0,
        })))
        .await?;
        if !r.error.is_empty() {
            return Err(EtcdError::Status {
                code: Code::Unknown,
                message: r.error,
            });
        }
        Ok(r.id)
    }

    /// Revokes a lease: the keys attached to it are deleted.
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        bounded(
            self.lease()
                .lease_revoke(request(LeaseRevokeRequest { id })),
        )
        .await?;
        Ok(())
    }

    /// Opens a keep-alive stream for lease `id` and refreshes the lease once (so a lease that is
    /// already gone fails here with [`EtcdError::LeaseExpired`]). Call
    /// [`LeaseKeeper::keep_alive`] about every third of the TTL.
    pub async fn lease_keepalive(&self, id: i64) -> Result<LeaseKeeper> {
        let (tx, rx) = mpsc::channel(4);
        // The server sends its response headers with its first answer: ask before calling.
        tx.send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| EtcdError::KeepAliveClosed)?;
        let stream = bounded(self.lease().lease_keep_alive(ReceiverStream::new(rx))).await?;
        let mut keeper = LeaseKeeper { id, tx, stream };
        keeper.receive().await?;
        Ok(keeper)
    }

    /// Watches every key starting with `prefix`, from `start_revision` on (0: from now on),
    /// once the server has confirmed the watch.
    pub async fn watch_prefix(&self, prefix: &[u8], start_revision: i64) -> Result<Watcher> {
        let (tx, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.to_vec(),
                    range_end: prefix_end(prefix),
                    start_revision,
                    ..Default::default()
                },
            )),
        };
        tx.send(create).await.map_err(|_| EtcdError::WatchClosed)?;
        let mut client = WatchClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        let setup = async {
            let mut stream = client.watch(ReceiverStream::new(rx)).await?.into_inner();
            loop {
                match stream.message().await? {
                    Some(r) if r.canceled => return Err(canceled(&r)),
                    Some(r) if r.created => return Ok((stream, r.events)),
                    Some(_) => continue,
                    None => return Err(EtcdError::WatchClosed),
                }
            }
        };
        let (stream, events) = tokio::time::timeout(REQUEST_TIMEOUT, setup)
            .await
            .map_err(|_| EtcdError::Timeout(REQUEST_TIMEOUT))??;
        Ok(Watcher {
            _tx: tx,
            stream,
            pending: events,
        })
    }

    /// Campaigns in election `name` with a key attached to `lease` (its end ends the
    /// candidacy or the leadership) and publishes `value` as the leader's; waits, without a
    /// time bound, until elected. Dropping the future withdraws the candidacy.
    pub async fn campaign(&self, name: &[u8], lease: i64, value: &[u8]) -> Result<LeaderKey> {
        let r = self
            .election()
            .campaign(CampaignRequest {
                name: name.to_vec(),
                lease,
                value: value.to_vec(),
            })
            .await?
            .into_inner();
        r.leader
            .map(LeaderKey::from)
            .ok_or_else(|| EtcdError::Status {
                code: Code::Internal,
                message: "campaign answered without a leader key".into(),
            })
    }

    /// Gives up the leadership `leader` holds (deletes its key; the next candidate is elected).
    pub async fn resign(&self, leader: &LeaderKey) -> Result<()> {
        bounded(self.election().resign(request(ResignRequest {
            leader: Some(leader.into()),
        })))
        .await?;
        Ok(())
    }

    /// The current leader of election `name`: its key, with the value it published; `None`
    /// when nobody leads.
    pub async fn leader(&self, name: &[u8]) -> Result<Option<Kv>> {
        match bounded(self.election().leader(request(LeaderRequest {
            name: name.to_vec(),
        })))
        .await
        {
            Ok(r) => Ok(r.kv.map(Kv::from)),
            Err(EtcdError::Status { message, .. }) if message.contains(NO_LEADER) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The error for a watch response that cancels the watch.
fn canceled(r: &WatchResponse) -> EtcdError {
    if r.compact_revision > 0 {
        EtcdError::Compacted {
            revision: r.compact_revision,
        }
    } else {
        tracing::debug!(reason = %r.cancel_reason, "etcd canceled a watch");
        EtcdError::WatchClosed
    }
}

/// An open keep-alive stream of one lease, from [`Etcd::lease_keepalive`].
#[derive(Debug)]
pub struct LeaseKeeper {
    id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    stream: Streaming<LeaseKeepAliveResponse>,
}

impl LeaseKeeper {
    /// The lease's id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Refreshes the lease; returns its TTL in seconds from now, or
    /// [`EtcdError::LeaseExpired`] if it is gone.
    pub async fn keep_alive(&mut self) -> Result<i64> {
        self.tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| EtcdError::KeepAliveClosed)?;
        self.receive().await
    }

    async fn receive(&mut self) -> Result<i64> {
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.stream.message())
            .await
            .map_err(|_| EtcdError::Timeout(REQUEST_TIMEOUT))??;
        match answer {
            Some(r) if r.ttl > 0 => Ok(r.ttl),
            Some(_) => Err(EtcdError::LeaseExpired),
            None => Err(EtcdError::KeepAliveClosed),
        }
    }
}

/// An open watch, from [`Etcd::watch_prefix`]; dropping it cancels the watch.
#[derive(Debug)]
pub struct Watcher {
    /// Keeps the request side of the stream open (the server ends the watch when it closes).
    _tx: mpsc::Sender<WatchRequest>,
    stream: Streaming<WatchResponse>,
    /// Events that came with the creation answer (none, with etcd as it is).
    pending: Vec<mvccpb::Event>,
}

impl Watcher {
    /// The next batch of changes (one revision's or more), in revision order; waits without a
    /// time bound. [`EtcdError::Compacted`] when the start revision is no longer kept,
    /// [`EtcdError::WatchClosed`] when the stream ends.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>> {
        if !self.pending.is_empty() {
            return Ok(std::mem::take(&mut self.pending)
                .into_iter()
                .map(event)
                .collect());
        }
        loop {
            let r = self.stream.message().await?.ok_or(EtcdError::WatchClosed)?;
            if r.canceled || r.compact_revision > 0 {
                return Err(canceled(&r));
            }
            if r.events.is_empty() {
                // The creation answer or a progress notification.
                continue;
            }
            return Ok(r.events.into_iter().map(event).collect());
        }
    }
}

fn event(e: mvccpb::Event) -> WatchEvent {
    let kind = match mvccpb::event::EventType::try_from(e.r#type) {
        Ok(mvccpb::event::EventType::Delete) => EventKind::Delete,
        _ => EventKind::Put,
    };
    WatchEvent {
        kind,
        kv: e.kv.map(Kv::from).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"/strom/brokers/"), b"/strom/brokers0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"a\xfe\xff\xff"), b"a\xff");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }
}
