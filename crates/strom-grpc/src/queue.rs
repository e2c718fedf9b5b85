//! Queue: a bidirectional stream as a member of a share group (the core's KIP-932 queues, with
//! their retry backoff, delivery limit and dead-letter topic). The first request subscribes;
//! records are acquired and pushed while fewer than `max_in_flight` are unacknowledged, each
//! with its receipt; acks and renews come back on the same stream. When the stream ends the
//! member leaves the group, and what it held is released to the others.
//!
//! A receipt that is not one this broker hands out, or of another group, ends the stream with
//! INVALID_ARGUMENT; one whose delivery is no longer held (its lock expired and the record went
//! to another delivery) ends it with FAILED_PRECONDITION. Either way nothing else changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strom_broker::security::acl::{Operation, ResourceType};
use strom_broker::share::{
    AckPartition, AckRange, AckType, AcquireLimits, Receipt, ShareError, ShareHeartbeat,
};
use strom_broker::ConfigOp;
use tokio::sync::Notify;
use tonic::{Code, Status};

use crate::pb::{self, queue_request, QueueMessage, QueueRequest};
use crate::{invalid, status, Caller, Door, Out};
use strom_broker::quota::QuotaKind;

/// Records a subscription holds unacknowledged at most when it does not say.
const IN_FLIGHT_DEFAULT: usize = 100;
/// The largest `max_in_flight`.
const IN_FLIGHT_MAX: usize = 10_000;
/// Stored bytes one acquisition reads at most.
const ACQUIRE_MAX_BYTES: usize = 1 << 20;
/// How long one acquisition waits (the member heartbeats between them).
const ACQUIRE_WAIT: Duration = Duration::from_secs(2);

/// 8 random bytes as hex (member ids).
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        b = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64))
        .to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The core's share-group errors as statuses.
pub(crate) fn share_status(e: ShareError) -> Status {
    let (code, reason) = match &e {
        ShareError::InvalidGroupId | ShareError::InvalidRequest(_) => {
            (Code::InvalidArgument, "INVALID_REQUEST")
        }
        ShareError::InvalidConfig(_) => (Code::InvalidArgument, "INVALID_CONFIG"),
        ShareError::GroupIdNotFound(_) => (Code::NotFound, "GROUP_ID_NOT_FOUND"),
        ShareError::UnknownTopicOrPartition => (Code::NotFound, "UNKNOWN_TOPIC_OR_PARTITION"),
        ShareError::InvalidRecordState(_) => (Code::FailedPrecondition, "INVALID_RECORD_STATE"),
        ShareError::UnknownMemberId | ShareError::FencedMemberEpoch => {
            (Code::FailedPrecondition, "UNKNOWN_MEMBER_ID")
        }
        ShareError::NonEmptyGroup => (Code::FailedPrecondition, "NON_EMPTY_GROUP"),
        ShareError::CoordinatorNotAvailable => (Code::Unavailable, "COORDINATOR_NOT_AVAILABLE"),
        ShareError::Storage(_) => (Code::Internal, "KAFKA_STORAGE_ERROR"),
    };
    status(code, reason, e.to_string())
}

/// A subscription, checked.
struct Sub {
    group: String,
    topics: Vec<String>,
    max_in_flight: usize,
}

/// What the stream's two halves share.
struct Shared {
    member_id: String,
    in_flight: AtomicUsize,
    acked: Notify,
}

async fn subscribe(
    door: &Door,
    caller: &Caller,
    first: Option<QueueRequest>,
) -> Result<Sub, Status> {
    let Some(QueueRequest {
        request: Some(queue_request::Request::Subscribe(s)),
    }) = first
    else {
        return Err(invalid(
            "the first message of a Queue stream must be a subscribe",
        ));
    };
    if s.group.is_empty() {
        return Err(invalid("group is empty"));
    }
    let max_in_flight = match s.max_in_flight {
        None => IN_FLIGHT_DEFAULT,
        Some(n) if n >= 1 && n as usize <= IN_FLIGHT_MAX => n as usize,
        Some(n) => {
            return Err(invalid(format!(
                "max_in_flight must be in [1, {IN_FLIGHT_MAX}], not {n}"
            )))
        }
    };
    let topics = crate::subscribe::readable(door, caller, &s.topics)?;
    caller.allow(door, Operation::Read, ResourceType::Group, &s.group)?;
    match s.from.as_str() {
        "" | "latest" => {}
        "earliest" => {
            // Where a new group starts (a group with state keeps its own).
            if door.shares.describe(&s.group).is_err() {
                let op = ConfigOp::Set(
                    strom_broker::share::AUTO_OFFSET_RESET.into(),
                    "earliest".into(),
                );
                door.shares
                    .alter_group_configs(&s.group, &[op], false)
                    .await
                    .map_err(share_status)?;
            }
        }
        other => {
            return Err(invalid(format!(
                "from must be earliest or latest, not {other:?}"
            )))
        }
    }
    Ok(Sub {
        group: s.group,
        topics,
        max_in_flight,
    })
}

/// Runs a Queue stream until either side ends.
pub(crate) async fn run(
    door: Door,
    caller: Caller,
    mut input: tonic::Streaming<QueueRequest>,
    deadline: Option<std::time::Instant>,
    out: Out<QueueMessage>,
) {
    let first = match input.message().await {
        Ok(m) => m,
        Err(s) => return out.fail(s).await,
    };
    let sub = match subscribe(&door, &caller, first).await {
        Ok(s) => s,
        Err(s) => return out.fail(s).await,
    };
    let shared = Arc::new(Shared {
        member_id: format!("strom-grpc-{}", random_hex()),
        in_flight: AtomicUsize::new(0),
        acked: Notify::new(),
    });
    let group = sub.group.clone();
    let pusher = tokio::spawn(push(
        door.clone(),
        caller.clone(),
        sub,
        shared.clone(),
        out.clone(),
    ));
    let acking = acks(&door, &group, &shared, &mut input, &out);
    let end = match deadline {
        None => acking.await,
        Some(d) => tokio::time::timeout_at(d.into(), acking)
            .await
            .unwrap_or_else(|_| {
                Err(status(
                    Code::DeadlineExceeded,
                    "REQUEST_TIMED_OUT",
                    "the call's deadline passed",
                ))
            }),
    };
    pusher.abort();
    let _ = pusher.await;
    // Leaving releases what the member held.
    let _ = door.shares.leave(&group, &shared.member_id).await;
    if let Err(s) = end {
        out.fail(s).await;
    }
}

/// Applies the stream's acks and renews until it ends.
async fn acks(
    door: &Door,
    group: &str,
    shared: &Shared,
    input: &mut tonic::Streaming<QueueRequest>,
    out: &Out<QueueMessage>,
) -> Result<(), Status> {
    loop {
        let m = tokio::select! {
            m = input.message() => m?,
            _ = out.closed() => return Ok(()),
        };
        let Some(m) = m else { return Ok(()) };
        let (receipt, kind) = match m.request {
            Some(queue_request::Request::Ack(a)) => {
                let kind = match pb::AckType::try_from(a.r#type) {
                    Ok(pb::AckType::Accept) => AckType::Accept,
                    Ok(pb::AckType::Release) => AckType::Release,
                    Ok(pb::AckType::Reject) => AckType::Reject,
                    _ => return Err(invalid("an ack's type must be ACCEPT, RELEASE or REJECT")),
                };
                (a.receipt, kind)
            }
            Some(queue_request::Request::Renew(r)) => (r.receipt, AckType::Renew),
            Some(queue_request::Request::Subscribe(_)) => {
                return Err(invalid("one subscribe per Queue stream"))
            }
            None => return Err(invalid("an empty QueueRequest")),
        };
        let r = Receipt::decode(&receipt).ok_or_else(|| {
            invalid(format!(
                "{receipt:?} is not a receipt this broker handed out"
            ))
        })?;
        if r.group != group {
            return Err(invalid(format!("the receipt is of group {:?}", r.group)));
        }
        let part = AckPartition {
            topic: r.topic,
            partition: r.partition,
            ranges: vec![AckRange {
                first_offset: r.offset,
                last_offset: r.offset,
                types: vec![kind],
                delivery_count: Some(r.delivery_count),
            }],
        };
        let results = door
            .shares
            .acknowledge_many(group, &shared.member_id, &[part])
            .await
            .map_err(crate::queue::share_status)?;
        if let Some(Err(e)) = results.into_iter().next() {
            return Err(share_status(e));
        }
        if kind != AckType::Renew {
            let _ = shared
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(1))
                });
            shared.acked.notify_one();
        }
    }
}

/// Joins (or rejoins) and heartbeats; the member epoch.
async fn heartbeat(
    door: &Door,
    group: &str,
    member_id: &str,
    epoch: i32,
    topics: &[String],
) -> Result<i32, ShareError> {
    let hb = |epoch: i32| ShareHeartbeat {
        group: group.to_string(),
        member_id: member_id.to_string(),
        member_epoch: epoch,
        rack: None,
        subscribed_topics: (epoch == 0).then(|| topics.to_vec()),
        client_id: "strom-grpc".into(),
        client_host: "grpc".into(),
    };
    match door.shares.heartbeat(hb(epoch)).await {
        Ok(o) => Ok(o.member_epoch),
        Err(ShareError::UnknownMemberId | ShareError::FencedMemberEpoch) if epoch != 0 => {
            Ok(door.shares.heartbeat(hb(0)).await?.member_epoch)
        }
        Err(e) => Err(e),
    }
}

/// Acquires and pushes records while the member holds fewer than `max_in_flight`.
async fn push(door: Door, caller: Caller, sub: Sub, shared: Arc<Shared>, out: Out<QueueMessage>) {
    let mut epoch = 0;
    let mut partitions = Vec::new();
    for t in &sub.topics {
        if let Some(topic) = door.broker.topic(t) {
            partitions.extend((0..topic.partitions().len() as i32).map(|p| (t.clone(), p)));
        }
    }
    while !out.is_closed() {
        if *door.shutdown.borrow() {
            return out.fail(crate::shutting_down()).await;
        }
        match heartbeat(&door, &sub.group, &shared.member_id, epoch, &sub.topics).await {
            Ok(e) => epoch = e,
            Err(e) => return out.fail(share_status(e)).await,
        }
        let mut held = shared.in_flight.load(Ordering::Acquire);
        if held >= sub.max_in_flight {
            // Locks that expired (never acknowledged) no longer count.
            held = door.shares.held_by(&sub.group, &shared.member_id);
            shared.in_flight.store(held, Ordering::Release);
        }
        if held >= sub.max_in_flight {
            let _ = tokio::time::timeout(ACQUIRE_WAIT, shared.acked.notified()).await;
            continue;
        }
        let limits = AcquireLimits {
            max_records: sub.max_in_flight - held,
            max_bytes: ACQUIRE_MAX_BYTES,
            max_wait: ACQUIRE_WAIT,
        };
        let acquired = match door
            .shares
            .acquire(&sub.group, &shared.member_id, &partitions, limits)
            .await
        {
            Ok(a) => a,
            Err(ShareError::UnknownMemberId) => {
                epoch = 0;
                continue;
            }
            Err(e) => return out.fail(share_status(e)).await,
        };
        for p in acquired {
            let mut wanted: BTreeMap<i64, u16> = BTreeMap::new();
            for a in &p.acquired {
                for o in a.first_offset..=a.last_offset {
                    wanted.insert(o, a.delivery_count);
                }
            }
            let Some(&first) = wanted.keys().next() else {
                continue;
            };
            let mut records = Vec::new();
            crate::subscribe::decode(&p.topic, p.partition, &p.records, first, &[], &mut records);
            let mut messages = Vec::new();
            for r in records {
                let Some(dc) = wanted.remove(&r.offset) else {
                    continue;
                };
                let receipt = Receipt {
                    group: sub.group.clone(),
                    topic: p.topic.clone(),
                    partition: p.partition,
                    offset: r.offset,
                    delivery_count: dc,
                }
                .encode();
                messages.push(QueueMessage {
                    record: Some(r),
                    receipt,
                    delivery_count: i32::from(dc),
                });
            }
            // Offsets acquired but not readable (a damaged batch): released for the others.
            give_back(
                &door,
                &sub.group,
                &shared.member_id,
                &p.topic,
                p.partition,
                wanted.into_keys().collect(),
            )
            .await;
            let mut sent = 0;
            for m in messages {
                shared.in_flight.fetch_add(1, Ordering::AcqRel);
                sent += prost::Message::encoded_len(&m);
                if !out.send(m).await {
                    return;
                }
            }
            // consumer_byte_rate: the messages' bytes (the stored batches may hold many
            // records that were not acquired).
            caller.quota_charge(&door, QuotaKind::Fetch, sent).await;
        }
    }
}

async fn give_back(
    door: &Door,
    group: &str,
    member: &str,
    topic: &str,
    partition: i32,
    offsets: BTreeSet<i64>,
) {
    if offsets.is_empty() {
        return;
    }
    let part = AckPartition {
        topic: topic.to_string(),
        partition,
        ranges: offsets
            .into_iter()
            .map(|o| AckRange {
                first_offset: o,
                last_offset: o,
                types: vec![AckType::Release],
                delivery_count: None,
            })
            .collect(),
    };
    if let Err(e) = door.shares.acknowledge_many(group, member, &[part]).await {
        tracing::warn!(group, error = %e, "could not give back records not handed out");
    }
}
