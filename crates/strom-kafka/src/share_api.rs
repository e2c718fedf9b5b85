//! The share-group APIs (KIP-932, as Kafka 4.2 serves them): ShareGroupHeartbeat,
//! ShareGroupDescribe, ShareFetch, ShareAcknowledge, Describe/Alter/DeleteShareGroupOffsets.
//! Each translates to calls on `strom_broker::share::ShareCoordinator`; the share sessions
//! (which partitions a member fetches, the epoch of its next request) are the door's own
//! protocol state (`share_session`).
//!
//! A ShareFetch: (1) its epoch is checked against the member's session (opened at 0, closed
//! at -1); (2) the partitions it names join the session, `forgotten_topics_data` leave it;
//! (3) its piggy-backed acknowledgements are applied, all partitions with one sync, each
//! partition all or nothing (`acknowledge_error_code`); (4) unless the session closes or
//! `max_records` is 0, records of the session's partitions are acquired — up to
//! `max_records` and `max_bytes`, waiting up to `max_wait_ms` while there are none — and
//! returned as the stored batches plus `acquired_records` ranges with delivery counts (a
//! batch may hold offsets not acquired: the client delivers only the ranges).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponse, AlterShareGroupOffsetsResponsePartition,
    AlterShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::delete_share_group_offsets_response::{
    DeleteShareGroupOffsetsResponse, DeleteShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponse, DescribeShareGroupOffsetsResponseGroup,
    DescribeShareGroupOffsetsResponsePartition, DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::share_acknowledge_response::{
    self as ack_resp, ShareAcknowledgeResponse, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::share_fetch_response::{
    self as fetch_resp, AcquiredRecords, ShareFetchResponse, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::share_group_describe_response::{
    self as describe_resp, DescribedGroup, ShareGroupDescribeResponse,
};
use kafka_protocol::messages::share_group_heartbeat_response::{
    Assignment, ShareGroupHeartbeatResponse, TopicPartitions,
};
use kafka_protocol::messages::{
    AlterShareGroupOffsetsRequest, DeleteShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsRequest, ShareAcknowledgeRequest, ShareFetchRequest,
    ShareGroupDescribeRequest, ShareGroupHeartbeatRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError as E;
use strom_broker::share::{
    AckPartition, AckRange, AckType, AcquireLimits, ShareError, ShareHeartbeat,
};
use uuid::Uuid;

use crate::data::name_by_id;
use crate::server::{sb, Ctx, Fatal, Reply, Req};
use crate::share_session::{SharePartition, Turn, LEAVE_GRACE};
use crate::share_wire;
use strom_broker::quota::QuotaKind;
use strom_broker::security::acl::{Operation, ResourceType};

/// The longest ShareFetch wait served (as Fetch's).
const MAX_WAIT_CAP: Duration = Duration::from_secs(300);

/// The Kafka error code of a share-group error. `storage` is the code a failed log gets:
/// KAFKA_STORAGE_ERROR for a partition, COORDINATOR_NOT_AVAILABLE (retriable) for the group.
pub(crate) fn code(e: &ShareError, storage: E) -> i16 {
    match e {
        ShareError::InvalidGroupId => E::InvalidGroupId,
        ShareError::GroupIdNotFound(_) => E::GroupIdNotFound,
        ShareError::UnknownMemberId => E::UnknownMemberId,
        ShareError::FencedMemberEpoch => E::FencedMemberEpoch,
        ShareError::InvalidRequest(_) => E::InvalidRequest,
        ShareError::InvalidRecordState(_) => E::InvalidRecordState,
        ShareError::UnknownTopicOrPartition => E::UnknownTopicOrPartition,
        ShareError::InvalidConfig(_) => E::InvalidConfig,
        ShareError::NonEmptyGroup => E::NonEmptyGroup,
        ShareError::CoordinatorNotAvailable => E::CoordinatorNotAvailable,
        ShareError::Storage(_) => storage,
    }
    .code()
}

pub(crate) fn group_code(e: &ShareError) -> i16 {
    code(e, E::CoordinatorNotAvailable)
}

fn partition_code(e: &ShareError) -> i16 {
    code(e, E::KafkaStorageError)
}

// --- membership ------------------------------------------------------------------------------

/// The refusal of a share-group request: READ on the group, `topic_op` on each topic.
fn share_denied<'t>(
    req: &Req<'_>,
    group: &str,
    mut topics: impl Iterator<Item = &'t str>,
    topic_op: Operation,
) -> Option<(i16, String)> {
    if !req.allowed(Operation::Read, ResourceType::Group, group) {
        return Some((
            E::GroupAuthorizationFailed.code(),
            format!("{} may not read group {group}", req.principal),
        ));
    }
    topics
        .find(|t| !req.allowed(topic_op, ResourceType::Topic, t))
        .map(|t| {
            (
                E::TopicAuthorizationFailed.code(),
                format!("{} may not {} topic {t}", req.principal, topic_op.name()),
            )
        })
}

/// [`share_denied`] for ShareFetch / ShareAcknowledge: READ on the group and on each topic
/// named by id (resolved only when the authorizer is on: off the hot path otherwise).
fn share_read_denied(
    req: &Req<'_>,
    group: &str,
    ids: impl Iterator<Item = uuid::Uuid>,
) -> Option<(i16, String)> {
    if !req.ctx.broker.authorizer().enabled() {
        return None;
    }
    let names: Vec<String> = ids
        .filter_map(|id| crate::data::name_by_id(&req.ctx.broker, id))
        .collect();
    share_denied(
        req,
        group,
        names.iter().map(String::as_str),
        Operation::Read,
    )
}

pub(crate) async fn heartbeat(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: ShareGroupHeartbeatRequest = req.decode()?;
    let share = &req.ctx.shares;
    let group = r.group_id.to_string();
    let member = r.member_id.to_string();
    let denied = share_denied(
        &req,
        &group,
        r.subscribed_topic_names
            .iter()
            .flatten()
            .map(|t| t.as_str()),
        Operation::Describe,
    );
    let resp = if let Some((code, msg)) = denied {
        ShareGroupHeartbeatResponse::default()
            .with_error_code(code)
            .with_error_message(Some(sb(msg)))
    } else if member.is_empty() {
        // KIP-932 v1: the client generates its member id.
        ShareGroupHeartbeatResponse::default()
            .with_error_code(E::InvalidRequest.code())
            .with_error_message(Some(sb("the member id must be set by the member")))
    } else {
        let hb = ShareHeartbeat {
            group: group.clone(),
            member_id: member.clone(),
            member_epoch: r.member_epoch,
            rack: r.rack_id.map(|s| s.to_string()),
            subscribed_topics: r
                .subscribed_topic_names
                .map(|ts| ts.into_iter().map(|t| t.to_string()).collect()),
            client_id: req.client_id.clone(),
            client_host: format!("/{}", req.peer.ip()),
        };
        let leaving = r.member_epoch == -1;
        if leaving {
            // The member's last acknowledgements may be on their way in the request that
            // closes its share session: let them land before its records are released.
            req.ctx
                .share_sessions
                .closed(&group, &member, LEAVE_GRACE)
                .await;
        }
        let result = share.heartbeat(hb).await;
        if leaving || matches!(result, Err(ShareError::UnknownMemberId)) {
            // The member is gone: so is its share session.
            req.ctx.share_sessions.close(&group, &member);
        }
        match result {
            Ok(o) => {
                let mut resp = ShareGroupHeartbeatResponse::default()
                    .with_member_id(Some(sb(o.member_id)))
                    .with_member_epoch(o.member_epoch)
                    .with_heartbeat_interval_ms(o.heartbeat_interval_ms);
                // The assignment goes with a join and with every change (the epoch moves).
                if !leaving && (r.member_epoch == 0 || o.member_epoch != r.member_epoch) {
                    resp = resp.with_assignment(Some(
                        Assignment::default().with_topic_partitions(
                            o.assignment
                                .into_iter()
                                .map(|a| {
                                    TopicPartitions::default()
                                        .with_topic_id(Uuid::from_bytes(a.topic_id))
                                        .with_partitions(a.partitions)
                                })
                                .collect(),
                        ),
                    ));
                }
                resp
            }
            Err(e) => ShareGroupHeartbeatResponse::default()
                .with_error_code(group_code(&e))
                .with_error_message(Some(sb(e.to_string()))),
        }
    };
    req.encode(&resp)
}

pub(crate) fn describe(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: ShareGroupDescribeRequest = req.decode()?;
    let share = &req.ctx.shares;
    let groups = r
        .group_ids
        .iter()
        .map(|id| match share.describe(id) {
            Ok(d) => DescribedGroup::default()
                .with_group_id(id.clone())
                .with_group_state(sb(d.state.name()))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(sb("simple"))
                .with_authorized_operations(i32::MIN)
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            describe_resp::Member::default()
                                .with_member_id(sb(m.member_id))
                                .with_rack_id(m.rack.map(sb))
                                .with_member_epoch(m.member_epoch)
                                .with_client_id(sb(m.client_id))
                                .with_client_host(sb(m.client_host))
                                .with_subscribed_topic_names(
                                    m.subscribed_topics
                                        .into_iter()
                                        .map(|t| TopicName(sb(t)))
                                        .collect(),
                                )
                                .with_assignment(
                                    describe_resp::Assignment::default().with_topic_partitions(
                                        m.assignment
                                            .into_iter()
                                            .map(|a| {
                                                describe_resp::TopicPartitions::default()
                                                    .with_topic_id(Uuid::from_bytes(a.topic_id))
                                                    .with_topic_name(TopicName(sb(a.topic)))
                                                    .with_partitions(a.partitions)
                                            })
                                            .collect(),
                                    ),
                                )
                        })
                        .collect(),
                ),
            Err(e) => DescribedGroup::default()
                .with_group_id(id.clone())
                .with_error_code(group_code(&e))
                .with_error_message(Some(sb(e.to_string())))
                .with_group_state(sb("Dead"))
                .with_authorized_operations(i32::MIN),
        })
        .collect();
    req.encode(&ShareGroupDescribeResponse::default().with_groups(groups))
}

// --- fetch and acknowledge -------------------------------------------------------------------

/// The acknowledgements of one partition of a request, or why they are refused.
type Acks = BTreeMap<SharePartition, Result<Vec<AckRange>, String>>;

/// Collects the acknowledgement batches of one partition into `acks`. RENEW (4) exists from
/// v2 on; other unknown types, and ranges whose type count fits neither one type per range
/// nor one per offset, refuse the partition's acknowledgements (INVALID_REQUEST).
fn collect_acks<'a>(
    acks: &mut Acks,
    p: SharePartition,
    batches: impl ExactSizeIterator<Item = (i64, i64, &'a [i8])>,
    v: i16,
) {
    if batches.len() == 0 {
        return;
    }
    let entry = acks.entry(p).or_insert_with(|| Ok(Vec::new()));
    let Ok(ranges) = entry else {
        return;
    };
    for (first_offset, last_offset, codes) in batches {
        let mut types = Vec::with_capacity(codes.len());
        for &t in codes {
            match AckType::from_code(t) {
                Some(AckType::Renew) if v < 2 => {
                    *entry = Err("RENEW (4) needs ShareFetch/ShareAcknowledge v2".into());
                    return;
                }
                Some(t) => types.push(t),
                None => {
                    *entry = Err(format!("unknown acknowledge type {t}"));
                    return;
                }
            }
        }
        ranges.push(AckRange {
            first_offset,
            last_offset,
            types,
            delivery_count: None,
        });
    }
}

/// The names of share-partitions (`None`: the topic id is unknown).
fn names(ctx: &Ctx, parts: &[SharePartition]) -> Vec<Option<(String, i32)>> {
    let mut known: BTreeMap<Uuid, Option<String>> = BTreeMap::new();
    parts
        .iter()
        .map(|(id, p)| {
            known
                .entry(*id)
                .or_insert_with(|| name_by_id(&ctx.broker, *id))
                .clone()
                .map(|n| (n, *p))
        })
        .collect()
}

/// Applies the acknowledgements; per share-partition: `None` if accepted, else the error
/// code and message. The outer error is the group's or member's (top-level).
async fn acknowledge(
    ctx: &Ctx,
    group: &str,
    member: &str,
    acks: Acks,
) -> Result<BTreeMap<SharePartition, Option<(i16, String)>>, (i16, String)> {
    let mut out = BTreeMap::new();
    let mut keys = Vec::new();
    let mut calls = Vec::new();
    let ids: Vec<SharePartition> = acks.keys().copied().collect();
    for ((sp, ranges), name) in acks.into_iter().zip(names(ctx, &ids)) {
        match (ranges, name) {
            (Err(why), _) => {
                out.insert(sp, Some((E::InvalidRequest.code(), why)));
            }
            (Ok(_), None) => {
                out.insert(
                    sp,
                    Some((E::UnknownTopicId.code(), "unknown topic id".to_string())),
                );
            }
            (Ok(ranges), Some((topic, partition))) => {
                keys.push(sp);
                calls.push(AckPartition {
                    topic,
                    partition,
                    ranges,
                });
            }
        }
    }
    if calls.is_empty() {
        return Ok(out);
    }
    let results = ctx
        .shares
        .acknowledge_many(group, member, &calls)
        .await
        .map_err(|e| {
            forget_if_gone(ctx, group, member, &e);
            (group_code(&e), e.to_string())
        })?;
    for (sp, r) in keys.into_iter().zip(results) {
        out.insert(sp, r.err().map(|e| (partition_code(&e), e.to_string())));
    }
    Ok(out)
}

/// A member the coordinator does not know has no share session either (so sessions opened
/// for made-up member ids do not fill the cache).
fn forget_if_gone(ctx: &Ctx, group: &str, member: &str, e: &ShareError) {
    if matches!(
        e,
        ShareError::UnknownMemberId | ShareError::GroupIdNotFound(_)
    ) {
        ctx.share_sessions.close(group, member);
    }
}

/// A share session that ends (closed at epoch -1 after its acknowledgements, or replaced by
/// a new one at epoch 0) gives back the records its member still holds, as Kafka does; a
/// member the coordinator no longer knows holds none.
async fn end_session(ctx: &Ctx, group: &str, member: &str) {
    if let Err(e) = ctx.shares.release_all(group, member).await {
        tracing::debug!(group, member, error = %e, "records of a closed share session not released");
    }
}

/// The lock every acquisition of `group` gets, for `acquisition_lock_timeout_ms`.
fn lock_duration_ms(ctx: &Ctx, group: &str) -> i32 {
    ctx.shares
        .record_lock_duration_ms(group)
        .clamp(0, i64::from(i32::MAX)) as i32
}

/// What the checks before a session's turn found wrong: a top-level error.
/// The group and member ids a ShareFetch or ShareAcknowledge must name, or its
/// INVALID_REQUEST.
fn group_and_member(
    group: Option<&StrBytes>,
    member: Option<&StrBytes>,
) -> Result<(String, String), (i16, String)> {
    let group = group.map(|g| g.to_string()).unwrap_or_default();
    let member = member.map(|m| m.to_string()).unwrap_or_default();
    if group.is_empty() || member.is_empty() {
        return Err(top_error(
            E::InvalidRequest,
            "group id and member id are required",
        ));
    }
    Ok((group, member))
}

fn top_error(code: E, msg: impl Into<String>) -> (i16, String) {
    (code.code(), msg.into())
}

/// The decoded body of a ShareFetch / ShareAcknowledge at v1 or v2 (v2 through `share_wire`);
/// the v2-only byte (`ShareAcquireMode`, `IsRenewAck`; 0 in v1).
fn decode_v1_or_v2<T: Decodable>(req: &mut Req<'_>, api: i16) -> Result<(T, u8), Fatal> {
    if req.version < 2 {
        return Ok((req.decode()?, 0));
    }
    let body = req.take_body();
    let (mut v1, extra) = share_wire::split_v2(api, &body)
        .ok_or_else(|| Fatal("a v2 body too short for its v2 field".into()))?;
    Ok((T::decode(&mut v1, 1)?, extra))
}

pub(crate) async fn fetch(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let (r, mode): (ShareFetchRequest, u8) = decode_v1_or_v2(&mut req, 78)?;
    let ctx = req.ctx;
    let v = req.version;
    let encoder = req.encoder().with_body_version(1);
    let lock_ms = |group: &str| lock_duration_ms(ctx, group);
    let fail = |(code, msg): (i16, String), lock: i32| {
        encoder.encode(
            &ShareFetchResponse::default()
                .with_error_code(code)
                .with_error_message(Some(sb(msg)))
                .with_acquisition_lock_timeout_ms(lock),
        )
    };
    let (group, member) = match group_and_member(r.group_id.as_deref(), r.member_id.as_ref()) {
        Ok(ids) => ids,
        Err(e) => return fail(e, 0),
    };
    if let Some(d) = share_read_denied(&req, &group, r.topics.iter().map(|t| t.topic_id)) {
        return fail(d, 0);
    }
    if v >= 2 && mode > 1 {
        return fail(
            top_error(
                E::InvalidRequest,
                format!("share acquire mode {mode} is not known"),
            ),
            0,
        );
    }
    let epoch = r.share_session_epoch;
    let mut acks: Acks = BTreeMap::new();
    for t in &r.topics {
        for p in &t.partitions {
            let batches = p
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, &b.acknowledge_types[..]));
            collect_acks(&mut acks, (t.topic_id, p.partition_index), batches, v);
        }
    }
    if epoch == 0 && !acks.is_empty() {
        return fail(
            top_error(
                E::InvalidRequest,
                "acknowledgements in the request that opens a share session",
            ),
            0,
        );
    }
    let turn = match ctx.share_sessions.begin(&group, &member, epoch) {
        Ok(t) => t,
        Err(code) => {
            let msg = if code == E::ShareSessionNotFound.code() {
                format!("no share session of member {member} in group {group}")
            } else {
                format!("share session epoch {epoch} is not the session's next")
            };
            return fail((code, msg), 0);
        }
    };
    // The session's partitions: those it had, those named now, minus the forgotten.
    let add: Vec<SharePartition> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic_id, p.partition_index))
        })
        .collect();
    let forget: Vec<SharePartition> = r
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |&p| (t.topic_id, p)))
        .collect();
    let session = ctx.share_sessions.update(&group, &member, add, forget);
    let mut parts: BTreeMap<SharePartition, fetch_resp::PartitionData> = BTreeMap::new();
    let node = ctx.broker.node_id();
    let partition = |index: i32| {
        fetch_resp::PartitionData::default()
            .with_partition_index(index)
            .with_current_leader(
                fetch_resp::LeaderIdAndEpoch::default()
                    .with_leader_id(node)
                    .with_leader_epoch(0),
            )
            .with_records(Some(Bytes::new()))
    };
    if turn == (Turn::Opened { replaced: true }) {
        end_session(ctx, &group, &member).await;
    }
    let acked = match acknowledge(ctx, &group, &member, acks).await {
        Ok(a) => a,
        Err(e) => {
            if turn == Turn::Closing {
                ctx.share_sessions.close(&group, &member);
                end_session(ctx, &group, &member).await;
            }
            return fail(e, lock_ms(&group));
        }
    };
    for (sp, result) in acked {
        let mut pd = partition(sp.1);
        if let Some((code, msg)) = result {
            pd = pd
                .with_acknowledge_error_code(code)
                .with_acknowledge_error_message(Some(sb(msg)));
        }
        parts.insert(sp, pd);
    }
    let mut fetched = 0;
    if turn == Turn::Closing {
        ctx.share_sessions.close(&group, &member);
        end_session(ctx, &group, &member).await;
    } else if r.max_records > 0 && !session.is_empty() {
        let named = names(ctx, &session);
        let mut wanted = Vec::new();
        let mut wanted_ids = Vec::new();
        for (sp, name) in session.iter().zip(named) {
            match name {
                Some(n) => {
                    wanted.push(n);
                    wanted_ids.push(*sp);
                }
                None => {
                    // The topic is gone: tell the client once, and drop it from the session.
                    ctx.share_sessions.drop_partition(&group, &member, *sp);
                    let pd = parts.remove(sp).unwrap_or_else(|| partition(sp.1));
                    parts.insert(*sp, pd.with_error_code(E::UnknownTopicId.code()));
                }
            }
        }
        let limits = AcquireLimits {
            max_records: r.max_records.max(0) as usize,
            max_bytes: r.max_bytes.max(0) as usize,
            max_wait: Duration::from_millis(r.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP),
        };
        if !wanted.is_empty() {
            let got = match ctx.shares.acquire(&group, &member, &wanted, limits).await {
                Ok(g) => g,
                Err(e) => {
                    forget_if_gone(ctx, &group, &member, &e);
                    return fail((group_code(&e), e.to_string()), lock_ms(&group));
                }
            };
            for (sp, ap) in wanted_ids.into_iter().zip(got) {
                if ap.acquired.is_empty() && ap.error.is_none() {
                    continue;
                }
                let mut pd = parts.remove(&sp).unwrap_or_else(|| partition(sp.1));
                if let Some(e) = &ap.error {
                    pd = pd
                        .with_error_code(partition_code(e))
                        .with_error_message(Some(sb(e.to_string())));
                }
                fetched += ap.records.len();
                pd = pd.with_records(Some(ap.records)).with_acquired_records(
                    ap.acquired
                        .iter()
                        .map(|a| {
                            AcquiredRecords::default()
                                .with_first_offset(a.first_offset)
                                .with_last_offset(a.last_offset)
                                .with_delivery_count(a.delivery_count.min(i16::MAX as u16) as i16)
                        })
                        .collect(),
                );
                parts.insert(sp, pd);
            }
        }
    }
    let mut topics: BTreeMap<Uuid, Vec<fetch_resp::PartitionData>> = BTreeMap::new();
    for ((id, _), pd) in parts {
        topics.entry(id).or_default().push(pd);
    }
    // consumer_byte_rate: the stored bytes handed out, as a Fetch's.
    let throttle = req.charge_quota(QuotaKind::Fetch, fetched);
    encoder.encode(
        &ShareFetchResponse::default()
            .with_throttle_time_ms(throttle)
            .with_acquisition_lock_timeout_ms(lock_ms(&group))
            .with_responses(
                topics
                    .into_iter()
                    .map(|(id, ps)| {
                        ShareFetchableTopicResponse::default()
                            .with_topic_id(id)
                            .with_partitions(ps)
                    })
                    .collect(),
            ),
    )
}

pub(crate) async fn acknowledge_request(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let (r, _renew): (ShareAcknowledgeRequest, u8) = decode_v1_or_v2(&mut req, 79)?;
    let ctx = req.ctx;
    let v = req.version;
    let encoder = req.encoder().with_body_version(1);
    // v2 adds `acquisition_lock_timeout_ms` after the top-level error message.
    let answer = |resp: ShareAcknowledgeResponse, lock: i32| -> Result<Reply, Fatal> {
        if v < 2 {
            return encoder.encode(&resp);
        }
        let mut body = bytes::BytesMut::new();
        resp.encode(&mut body, 1)?;
        let body = share_wire::ack_response_v2(&body, lock)
            .ok_or_else(|| Fatal("encoding a ShareAcknowledge v2 response".into()))?;
        Ok(encoder.frame_body(&body))
    };
    let fail = |(code, msg): (i16, String), lock: i32| {
        answer(
            ShareAcknowledgeResponse::default()
                .with_error_code(code)
                .with_error_message(Some(sb(msg))),
            lock,
        )
    };
    let (group, member) = match group_and_member(r.group_id.as_deref(), r.member_id.as_ref()) {
        Ok(ids) => ids,
        Err(e) => return fail(e, 0),
    };
    if let Some(d) = share_read_denied(&req, &group, r.topics.iter().map(|t| t.topic_id)) {
        return fail(d, 0);
    }
    let epoch = r.share_session_epoch;
    if epoch == 0 {
        // Only a ShareFetch opens a session.
        return fail(
            top_error(
                E::InvalidShareSessionEpoch,
                "a ShareAcknowledge cannot open a share session (epoch 0)",
            ),
            0,
        );
    }
    let mut acks: Acks = BTreeMap::new();
    for t in &r.topics {
        for p in &t.partitions {
            let batches = p
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, &b.acknowledge_types[..]));
            collect_acks(&mut acks, (t.topic_id, p.partition_index), batches, v);
        }
    }
    let turn = match ctx.share_sessions.begin(&group, &member, epoch) {
        Ok(t) => t,
        Err(code) => {
            let msg = if code == E::ShareSessionNotFound.code() {
                format!("no share session of member {member} in group {group}")
            } else {
                format!("share session epoch {epoch} is not the session's next")
            };
            return fail((code, msg), 0);
        }
    };
    let result = acknowledge(ctx, &group, &member, acks).await;
    if turn == Turn::Closing {
        ctx.share_sessions.close(&group, &member);
        end_session(ctx, &group, &member).await;
    }
    let lock = lock_duration_ms(ctx, &group);
    let acked = match result {
        Ok(a) => a,
        Err(e) => return fail(e, lock),
    };
    let node = ctx.broker.node_id();
    let mut topics: BTreeMap<Uuid, Vec<ack_resp::PartitionData>> = BTreeMap::new();
    for ((id, index), result) in acked {
        let mut pd = ack_resp::PartitionData::default()
            .with_partition_index(index)
            .with_current_leader(
                ack_resp::LeaderIdAndEpoch::default()
                    .with_leader_id(node)
                    .with_leader_epoch(0),
            );
        if let Some((code, msg)) = result {
            pd = pd.with_error_code(code).with_error_message(Some(sb(msg)));
        }
        topics.entry(id).or_default().push(pd);
    }
    answer(
        ShareAcknowledgeResponse::default().with_responses(
            topics
                .into_iter()
                .map(|(id, ps)| {
                    ShareAcknowledgeTopicResponse::default()
                        .with_topic_id(id)
                        .with_partitions(ps)
                })
                .collect(),
        ),
        lock,
    )
}

// --- offsets -------------------------------------------------------------------------------

pub(crate) fn describe_offsets(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeShareGroupOffsetsRequest = req.decode()?;
    let ctx = req.ctx;
    let topic_id = |name: &str| {
        ctx.broker
            .topic(name)
            .map_or(Uuid::nil(), |t| Uuid::from_bytes(t.id()))
    };
    let groups = r
        .groups
        .into_iter()
        .map(|g| {
            let wanted: Option<Vec<(String, i32)>> = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .map(move |&p| (t.topic_name.to_string(), p))
                    })
                    .collect()
            });
            let out =
                DescribeShareGroupOffsetsResponseGroup::default().with_group_id(g.group_id.clone());
            match ctx.shares.offsets(&g.group_id, wanted.as_deref()) {
                Err(e) => out
                    .with_error_code(group_code(&e))
                    .with_error_message(Some(sb(e.to_string()))),
                Ok(offsets) => {
                    let mut by_topic: BTreeMap<
                        String,
                        Vec<DescribeShareGroupOffsetsResponsePartition>,
                    > = BTreeMap::new();
                    for o in offsets {
                        let mut p = DescribeShareGroupOffsetsResponsePartition::default()
                            .with_partition_index(o.partition)
                            .with_start_offset(o.start_offset)
                            .with_leader_epoch(0);
                        if ctx.broker.partition(&o.topic, o.partition).is_err() {
                            p = p
                                .with_start_offset(-1)
                                .with_error_code(E::UnknownTopicOrPartition.code());
                        }
                        by_topic.entry(o.topic).or_default().push(p);
                    }
                    out.with_topics(
                        by_topic
                            .into_iter()
                            .map(|(t, ps)| {
                                DescribeShareGroupOffsetsResponseTopic::default()
                                    .with_topic_id(topic_id(&t))
                                    .with_topic_name(TopicName(sb(t)))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    )
                }
            }
        })
        .collect();
    req.encode(&DescribeShareGroupOffsetsResponse::default().with_groups(groups))
}

pub(crate) async fn alter_offsets(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: AlterShareGroupOffsetsRequest = req.decode()?;
    let ctx = req.ctx;
    let mut wanted = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            wanted.push((t.topic_name.to_string(), p.partition_index, p.start_offset));
        }
    }
    let resp = match ctx.shares.alter_offsets(&r.group_id, &wanted).await {
        Err(e) => AlterShareGroupOffsetsResponse::default()
            .with_error_code(group_code(&e))
            .with_error_message(Some(sb(e.to_string()))),
        Ok(results) => {
            let mut results = results.into_iter();
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    let id = ctx
                        .broker
                        .topic(&t.topic_name)
                        .map_or(Uuid::nil(), |x| Uuid::from_bytes(x.id()));
                    AlterShareGroupOffsetsResponseTopic::default()
                        .with_topic_name(t.topic_name.clone())
                        .with_topic_id(id)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    let mut out =
                                        AlterShareGroupOffsetsResponsePartition::default()
                                            .with_partition_index(p.partition_index);
                                    if let Some(Err(e)) = results.next() {
                                        out = out
                                            .with_error_code(partition_code(&e))
                                            .with_error_message(Some(sb(e.to_string())));
                                    }
                                    out
                                })
                                .collect(),
                        )
                })
                .collect();
            AlterShareGroupOffsetsResponse::default().with_responses(topics)
        }
    };
    req.encode(&resp)
}

pub(crate) async fn delete_offsets(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DeleteShareGroupOffsetsRequest = req.decode()?;
    let ctx = req.ctx;
    let names: Vec<String> = r.topics.iter().map(|t| t.topic_name.to_string()).collect();
    let resp = match ctx.shares.delete_offsets(&r.group_id, &names).await {
        Err(e) => DeleteShareGroupOffsetsResponse::default()
            .with_error_code(group_code(&e))
            .with_error_message(Some(sb(e.to_string()))),
        Ok(results) => DeleteShareGroupOffsetsResponse::default().with_responses(
            r.topics
                .iter()
                .zip(results)
                .map(|(t, res)| {
                    let id = ctx
                        .broker
                        .topic(&t.topic_name)
                        .map_or(Uuid::nil(), |x| Uuid::from_bytes(x.id()));
                    let mut out = DeleteShareGroupOffsetsResponseTopic::default()
                        .with_topic_name(t.topic_name.clone())
                        .with_topic_id(id);
                    if let Err(e) = res {
                        out = out
                            .with_error_code(partition_code(&e))
                            .with_error_message(Some(sb(e.to_string())));
                    }
                    out
                })
                .collect(),
        ),
    };
    req.encode(&resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(v: i16, batches: &[(i64, i64, &[i8])]) -> Acks {
        let mut out = Acks::new();
        collect_acks(&mut out, (Uuid::nil(), 0), batches.iter().copied(), v);
        out
    }

    #[test]
    fn acknowledgement_batches_become_ranges_or_a_refusal() {
        let a = acks(1, &[(0, 3, &[1]), (5, 6, &[2, 3])]);
        let ranges = a[&(Uuid::nil(), 0)].as_ref().expect("accepted");
        assert_eq!(ranges.len(), 2);
        assert_eq!((ranges[0].first_offset, ranges[0].last_offset), (0, 3));
        assert_eq!(ranges[0].types, vec![AckType::Accept]);
        assert_eq!(ranges[1].types, vec![AckType::Release, AckType::Reject]);
        assert!(ranges.iter().all(|r| r.delivery_count.is_none()));
        // RENEW exists from v2 on; unknown codes never.
        assert!(acks(1, &[(0, 0, &[4])])[&(Uuid::nil(), 0)].is_err());
        let renew = acks(2, &[(0, 0, &[4])]);
        assert_eq!(
            renew[&(Uuid::nil(), 0)].as_ref().expect("v2")[0].types,
            vec![AckType::Renew]
        );
        assert!(acks(2, &[(0, 0, &[1]), (1, 1, &[9])])[&(Uuid::nil(), 0)].is_err());
        // No batches: nothing to acknowledge for the partition.
        assert!(acks(1, &[]).is_empty());
    }

    #[test]
    fn share_errors_map_to_kafka_codes() {
        assert_eq!(
            partition_code(&ShareError::InvalidRecordState("x".into())),
            121
        );
        assert_eq!(group_code(&ShareError::InvalidConfig("x".into())), 40);
        assert_eq!(group_code(&ShareError::Storage("x".into())), 15);
        assert_eq!(partition_code(&ShareError::Storage("x".into())), 56);
        assert_eq!(group_code(&ShareError::GroupIdNotFound("g".into())), 69);
        assert_eq!(group_code(&ShareError::NonEmptyGroup), 68);
    }
}
