//! Consuming as a consumer-group member over HTTP. The door plays the part a Kafka consumer
//! plays: it joins the group with the "consumer" protocol and the `range` assignor (Kafka's
//! subscription/assignment encoding, so Kafka clients and HTTP members share one group), runs
//! the assignment when it is the leader, fetches the assigned partitions, and commits.
//!
//! - `POST /groups/{group}/members` `{"topics": [...], "from": "earliest"|"latest",
//!   "session_timeout_ms": 30000, "auto_commit": true}` → member id and assignment;
//! - `GET /groups/{group}/members/{member}/records?timeout_ms=&max_records=&format=` → records
//!   (each poll renews the lease; with auto-commit, a poll first commits what the previous poll
//!   returned: at-least-once, as a Kafka consumer's auto-commit);
//! - `POST /groups/{group}/members/{member}/commit` (optional `{"offsets": [...]}`);
//! - `DELETE /groups/{group}/members/{member}` leaves (the group rebalances at once).
//!   A member that does not poll within its session timeout loses its partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as AssignedPartitions,
};
use kafka_protocol::messages::{ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde::Deserialize;
use serde_json::{json, Value};
use strom_broker::coordinator::{GroupError, JoinRequest, OffsetCommit};
use strom_broker::{FetchLimits, FetchSpec};
use utoipa::{IntoParams, ToSchema};

use crate::api::{
    parse_body, records_json_committed, ApiError, ApiResult, ErrorBody, Format, IsolationParam,
};
use crate::auth::Caller;
use crate::budget::RecordsBody;
use crate::AppState;
use strom_broker::security::acl::{Operation, ResourceType};

/// One HTTP member as the door remembers it.
#[derive(Clone, Debug)]
pub(crate) struct HttpMember {
    group: String,
    generation: i32,
    topics: Vec<String>,
    session_timeout_ms: i32,
    from_earliest: bool,
    auto_commit: bool,
    /// Next offset to return, per assigned partition.
    positions: BTreeMap<(String, i32), i64>,
    /// What the last poll returned up to (committed by the next poll with auto-commit).
    delivered: BTreeMap<(String, i32), i64>,
}

fn group_error(e: GroupError) -> ApiError {
    let status = match e {
        GroupError::UnknownMemberId
        | GroupError::IllegalGeneration
        | GroupError::FencedInstanceId => StatusCode::GONE,
        GroupError::InconsistentGroupProtocol
        | GroupError::InvalidSessionTimeout
        | GroupError::InvalidGroupId => StatusCode::BAD_REQUEST,
        GroupError::GroupIdNotFound | GroupError::UnknownTopicOrPartition => StatusCode::NOT_FOUND,
        GroupError::OffsetMetadataTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        GroupError::RebalanceInProgress
        | GroupError::NonEmptyGroup
        | GroupError::GroupSubscribedToTopic => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, "group_error", e.to_string())
}

fn encode_versioned<T: Encodable>(v: &T, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(version);
    v.encode(&mut out, version)
        .expect("consumer protocol messages encode");
    out.freeze()
}

fn subscription(topics: &[String]) -> Bytes {
    let s = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    encode_versioned(&s, 0)
}

fn decode_subscription(mut b: Bytes) -> Vec<String> {
    if b.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([b[0], b[1]]).clamp(0, 3);
    let mut body = b.split_off(2);
    ConsumerProtocolSubscription::decode(&mut body, version)
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

fn encode_assignment(parts: &BTreeMap<String, Vec<i32>>) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        parts
            .iter()
            .map(|(t, ps)| {
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    encode_versioned(&a, 0)
}

fn decode_assignment(mut b: Bytes) -> Vec<(String, i32)> {
    if b.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([b[0], b[1]]).clamp(0, 3);
    let mut body = b.split_off(2);
    ConsumerProtocolAssignment::decode(&mut body, version)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(move |p| (tp.topic.to_string(), *p))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Kafka's range assignor: per topic, members (sorted by id) get contiguous ranges.
fn range_assign(
    s: &AppState,
    members: &[(String, Vec<String>)],
) -> HashMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: HashMap<String, BTreeMap<String, Vec<i32>>> = members
        .iter()
        .map(|(m, _)| (m.clone(), BTreeMap::new()))
        .collect();
    let topics: BTreeSet<&String> = members.iter().flat_map(|(_, t)| t).collect();
    for topic in topics {
        let n = s
            .broker
            .topic(topic)
            .map_or(0, |t| t.partitions().len() as i32);
        let mut subs: Vec<&String> = members
            .iter()
            .filter(|(_, t)| t.contains(topic))
            .map(|(m, _)| m)
            .collect();
        subs.sort();
        if subs.is_empty() || n == 0 {
            continue;
        }
        let k = subs.len() as i32;
        let (per, extra) = (n / k, n % k);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let count = per + i32::from((i as i32) < extra);
            let parts: Vec<i32> = (next..next + count).collect();
            next += count;
            if !parts.is_empty() {
                out.get_mut(*m)
                    .expect("member")
                    .insert(topic.clone(), parts);
            }
        }
    }
    out
}

/// Joins (or rejoins) and syncs; returns the member id, generation and assignment.
async fn join_and_sync(
    s: &AppState,
    group: &str,
    member_id: &str,
    topics: &[String],
    session_timeout_ms: i32,
) -> ApiResult<(String, i32, Vec<(String, i32)>)> {
    let mut member = member_id.to_string();
    for _ in 0..10 {
        let req = JoinRequest {
            group_id: group.to_string(),
            member_id: member.clone(),
            instance_id: None,
            client_id: "strom-http".into(),
            client_host: "http".into(),
            session_timeout_ms,
            rebalance_timeout_ms: session_timeout_ms,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), subscription(topics))],
            require_known_member_id: false,
        };
        let joined = match s.groups.join(req).await {
            Ok(j) => j,
            Err(GroupError::MemberIdRequired(id)) => {
                member = id;
                continue;
            }
            Err(GroupError::UnknownMemberId) if !member.is_empty() => {
                member.clear();
                continue;
            }
            Err(e) => return Err(group_error(e)),
        };
        member = joined.member_id.clone();
        let assignments = if joined.leader == member {
            let subs: Vec<(String, Vec<String>)> = joined
                .members
                .iter()
                .map(|(id, _, meta)| (id.clone(), decode_subscription(meta.clone())))
                .collect();
            range_assign(s, &subs)
                .into_iter()
                .map(|(m, parts)| (m, encode_assignment(&parts)))
                .collect()
        } else {
            Vec::new()
        };
        match s
            .groups
            .sync(group, joined.generation, &member, None, None, assignments)
            .await
        {
            Ok((_, _, a)) => return Ok((member, joined.generation, decode_assignment(a))),
            Err(GroupError::RebalanceInProgress) => continue,
            Err(e) => return Err(group_error(e)),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "group_error",
        "the group kept rebalancing; retry",
    ))
}

fn positions_for(
    s: &AppState,
    group: &str,
    assignment: &[(String, i32)],
    from_earliest: bool,
    old: &BTreeMap<(String, i32), i64>,
) -> BTreeMap<(String, i32), i64> {
    let committed = s.groups.fetch_offsets(group, Some(assignment.to_vec()));
    committed
        .into_iter()
        .map(|(t, p, c)| {
            let start = old
                .get(&(t.clone(), p))
                .copied()
                .or(c.map(|c| c.offset))
                .unwrap_or_else(|| {
                    let log = s.broker.partition(&t, p);
                    let log = log.as_ref().ok().and_then(|part| part.log().ok());
                    log.map_or(0, |log| {
                        if from_earliest {
                            log.log_start_offset()
                        } else {
                            log.log_end_offset()
                        }
                    })
                });
            ((t, p), start)
        })
        .collect()
}

fn assignment_json(positions: &BTreeMap<(String, i32), i64>) -> Value {
    Value::Array(
        positions
            .iter()
            .map(|((t, p), o)| json!({"topic": t, "partition": p, "position": o}))
            .collect(),
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinBody {
    topics: Vec<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    session_timeout_ms: Option<i32>,
    #[serde(default)]
    auto_commit: Option<bool>,
}

#[utoipa::path(post, path = "/groups/{group}/members", params(("group" = String, Path)), request_body = JoinBody,
    responses((status = 201, description = "member id and assignment"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn join(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b: JoinBody = parse_body(body)?;
    if b.topics.is_empty() {
        return Err(ApiError::bad("topics is empty"));
    }
    caller.allow(&s, Operation::Read, ResourceType::Group, &group)?;
    for t in &b.topics {
        caller.allow(&s, Operation::Read, ResourceType::Topic, t)?;
        if s.broker.topic(t).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_topic_or_partition",
                format!("unknown topic {t:?}"),
            ));
        }
    }
    let from_earliest = match b.from.as_deref().unwrap_or("latest") {
        "earliest" => true,
        "latest" => false,
        other => {
            return Err(ApiError::bad(format!(
                "from must be earliest or latest, not {other:?}"
            )))
        }
    };
    let session = b.session_timeout_ms.unwrap_or(30_000);
    let (member, generation, assignment) =
        join_and_sync(&s, &group, "", &b.topics, session).await?;
    let positions = positions_for(&s, &group, &assignment, from_earliest, &BTreeMap::new());
    let m = HttpMember {
        group: group.clone(),
        generation,
        topics: b.topics,
        session_timeout_ms: session,
        from_earliest,
        auto_commit: b.auto_commit.unwrap_or(true),
        positions: positions.clone(),
        delivered: BTreeMap::new(),
    };
    s.members.lock().insert(member.clone(), m);
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"member_id": member, "generation": generation, "assignment": assignment_json(&positions)}),
        ),
    ))
}

fn member(s: &AppState, group: &str, id: &str) -> ApiResult<HttpMember> {
    s.members
        .lock()
        .get(id)
        .filter(|m| m.group == group)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_member",
                format!("no member {id:?} in group {group:?}"),
            )
        })
}

async fn commit(
    s: &AppState,
    id: &str,
    m: &HttpMember,
    offsets: Vec<((String, i32), i64)>,
) -> ApiResult<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let commits = offsets
        .into_iter()
        .map(|((topic, partition), offset)| OffsetCommit {
            topic,
            partition,
            offset,
            leader_epoch: -1,
            metadata: None,
        })
        .collect();
    let per = s
        .groups
        .commit(&m.group, m.generation, id, None, commits)
        .await
        .map_err(group_error)?;
    match per.into_iter().find_map(Result::err) {
        Some(e) => Err(group_error(e)),
        None => Ok(()),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollQuery {
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    max_records: Option<usize>,
    #[serde(default)]
    format: Format,
    /// `read_committed` (default): no record of an aborted or open transaction;
    /// `read_uncommitted`: every record up to the high watermark.
    #[serde(default)]
    isolation: IsolationParam,
}

#[utoipa::path(get, path = "/groups/{group}/members/{member}/records",
    params(("group" = String, Path), ("member" = String, Path), PollQuery),
    responses((status = 200, description = "records of the member's partitions; an answer is cut before the record that would take it past the connection's buffer bound (--http-connection-buffer-bytes), the rest comes with the next poll"),
        (status = 404, body = ErrorBody), (status = 410, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "server_busy: answers waiting for slow readers hold the door's whole buffer (--http-buffer-bytes); see Retry-After",
            headers(("Retry-After" = u64, description = "seconds to wait before retrying")))))]
pub(crate) async fn poll(
    State(s): State<AppState>,
    caller: Caller,
    Path((group, id)): Path<(String, String)>,
    query: Result<Query<PollQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::response::Response> {
    caller.allow(&s, Operation::Read, ResourceType::Group, &group)?;
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let mut m = member(&s, &group, &id)?;
    if m.auto_commit {
        let delivered: Vec<_> = m.delivered.iter().map(|(k, v)| (k.clone(), *v)).collect();
        // On failure (a rebalance) the rejoin below sorts it out; records may come again.
        if commit(&s, &id, &m, delivered).await.is_ok() {
            m.delivered.clear();
        }
    }
    // The poll is the member's heartbeat; a rebalance makes it rejoin.
    match s.groups.heartbeat(&group, m.generation, &id, None) {
        Ok(()) => {}
        Err(GroupError::RebalanceInProgress | GroupError::IllegalGeneration) => {
            let (_, generation, assignment) =
                join_and_sync(&s, &group, &id, &m.topics, m.session_timeout_ms).await?;
            m.generation = generation;
            let kept: BTreeMap<_, _> = m.positions.clone();
            m.positions = positions_for(&s, &group, &assignment, m.from_earliest, &kept);
            m.delivered.retain(|k, _| m.positions.contains_key(k));
        }
        Err(e) => {
            s.members.lock().remove(&id);
            return Err(group_error(e));
        }
    }
    let max_records = q.max_records.unwrap_or(500).clamp(1, 100_000);
    let total_max = s.budget.max_stored_bytes().min(POLL_MAX_BYTES);
    // An offline partition is skipped (as a Kafka consumer waits for a leader): the others
    // are served, and the long poll still waits.
    let specs: Vec<FetchSpec> = m
        .positions
        .iter()
        .filter(|((t, p), _)| !s.broker.partition(t, *p).is_ok_and(|p| !p.is_online()))
        .map(|((t, p), o)| FetchSpec {
            topic: t.clone(),
            partition: *p,
            offset: *o,
            max_bytes: POLL_PARTITION_MAX_BYTES.min(total_max),
        })
        .collect();
    let wait = Duration::from_millis(q.timeout_ms.unwrap_or(0).min(30_000));
    let limits = FetchLimits {
        max_bytes: total_max,
        min_bytes: 1,
        max_wait: wait,
    };
    // Wait for records without reading them, reserve the answer's bytes, then read what
    // was there.
    let isolation = q.isolation.core();
    let available = s
        .broker
        .fetch_available_isolated(&specs, limits, isolation)
        .await;
    let mut to_read = Vec::new();
    for (spec, r) in specs.iter().zip(available) {
        match r {
            Ok(0) => {}
            Ok(n) => to_read.push(FetchSpec {
                max_bytes: n,
                ..spec.clone()
            }),
            Err(strom_broker::BrokerError::Log(strom_log::LogError::OffsetOutOfRange {
                start,
                ..
            })) => {
                m.positions
                    .insert((spec.topic.clone(), spec.partition), start);
            }
            Err(e) if e.is_offline() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let stored: usize = to_read.iter().map(|s| s.max_bytes).sum();
    let mut reservation = match s.budget.reserve(s.budget.estimate(stored)).await {
        Ok(r) => r,
        Err(e) => {
            s.members.lock().insert(id, m);
            return Err(e);
        }
    };
    let now = FetchLimits {
        max_bytes: stored.max(1),
        min_bytes: 1,
        max_wait: Duration::ZERO,
    };
    let results = if to_read.is_empty() {
        Vec::new()
    } else {
        s.broker
            .fetch_isolated(&to_read, now, false, isolation)
            .await
    };
    let mut body = RecordsBody::new(reservation.bytes());
    let mut errors = Vec::new();
    'partitions: for (spec, r) in to_read.iter().zip(results) {
        let key = (spec.topic.clone(), spec.partition);
        let read = match r {
            Ok(read) => read,
            Err(strom_broker::BrokerError::Log(strom_log::LogError::OffsetOutOfRange {
                start,
                ..
            })) => {
                m.positions.insert(key, start);
                continue;
            }
            Err(e) if e.is_offline() => continue,
            Err(e) => return Err(e.into()),
        };
        let left = max_records.saturating_sub(body.len());
        let decoded =
            records_json_committed(&read.data, spec.offset, left, q.format, &read.aborted);
        for e in &decoded.errors {
            errors.push(json!({"topic": spec.topic, "partition": spec.partition,
                "offset": e.offset, "message": e.message}));
        }
        for mut rec in decoded.records {
            let o = rec["offset"].as_i64().unwrap_or(spec.offset);
            rec["topic"] = json!(spec.topic);
            rec["partition"] = json!(spec.partition);
            if !body.push(&rec) {
                // The answer is full: the member goes on from this record next time.
                break 'partitions;
            }
            m.positions.insert(key.clone(), o + 1);
            m.delivered.insert(key.clone(), o + 1);
        }
        // Past the records returned and the stored batches skipped.
        if let Some(next) = decoded.next_offset {
            m.positions.insert(key.clone(), next);
            m.delivered.insert(key.clone(), next);
        }
    }
    let generation = m.generation;
    let positions = assignment_json(&m.positions);
    s.members.lock().insert(id, m);
    let out = body.finish(&[
        ("errors", json!(errors)),
        ("generation", json!(generation)),
        ("assignment", positions),
    ]);
    if out.len() > reservation.bytes() {
        // A first record larger than the estimate.
        reservation.merge(s.budget.reserve(out.len() - reservation.bytes()).await?);
    }
    Ok(crate::api::json_bytes(reservation.into_bytes(out)))
}

/// Stored bytes a poll reads per partition at most.
const POLL_PARTITION_MAX_BYTES: usize = 1 << 20;
/// Stored bytes a poll reads at most (before the connection's buffer bound lowers it).
const POLL_MAX_BYTES: usize = 8 << 20;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommitBody {
    #[serde(default)]
    offsets: Option<Vec<CommitOffset>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommitOffset {
    topic: String,
    partition: i32,
    offset: i64,
}

#[utoipa::path(post, path = "/groups/{group}/members/{member}/commit",
    params(("group" = String, Path), ("member" = String, Path)), request_body(content = CommitBody, description = "optional"),
    responses((status = 200, description = "committed"), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub(crate) async fn commit_offsets(
    State(s): State<AppState>,
    caller: Caller,
    Path((group, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    caller.allow(&s, Operation::Read, ResourceType::Group, &group)?;
    let m = member(&s, &group, &id)?;
    let explicit = match body {
        Ok(b) if b.is_empty() => None,
        other => parse_body::<CommitBody>(other)?.offsets,
    };
    let offsets: Vec<((String, i32), i64)> = match explicit {
        Some(list) => list
            .into_iter()
            .map(|c| ((c.topic, c.partition), c.offset))
            .collect(),
        None => m.positions.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    };
    let committed = offsets
        .iter()
        .map(|((t, p), o)| json!({"topic": t, "partition": p, "offset": o}))
        .collect::<Vec<_>>();
    commit(&s, &id, &m, offsets).await?;
    Ok(Json(json!({ "committed": committed })))
}

#[utoipa::path(delete, path = "/groups/{group}/members/{member}",
    params(("group" = String, Path), ("member" = String, Path)),
    responses((status = 204, description = "left"), (status = 404, body = ErrorBody)))]
pub(crate) async fn leave(
    State(s): State<AppState>,
    caller: Caller,
    Path((group, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.allow(&s, Operation::Read, ResourceType::Group, &group)?;
    let m = member(&s, &group, &id)?;
    if m.auto_commit {
        let delivered: Vec<_> = m.delivered.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let _ = commit(&s, &id, &m, delivered).await;
    }
    s.members.lock().remove(&id);
    let _ = s.groups.leave(&group, &[(id, None)]).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A WebSocket subscription as a group member: joins, pushes the records of the partitions the
/// group assigns it, commits what it pushed after each round (at-least-once), rejoins on a
/// rebalance, and leaves when the socket goes away (its receiver is dropped).
/// What a WebSocket group subscription asked for.
pub(crate) struct GroupSubscription {
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) from_earliest: bool,
    pub(crate) format: Format,
    pub(crate) isolation: IsolationParam,
    pub(crate) auto_commit: bool,
}

pub(crate) async fn follow_as_member(
    s: AppState,
    sub: GroupSubscription,
    mut commit_requests: tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<Value>>,
    tx: crate::push::PushQueue,
    overflow: tokio::sync::mpsc::Sender<()>,
) {
    let GroupSubscription {
        group,
        topics,
        from_earliest,
        format,
        isolation,
        auto_commit,
    } = sub;
    const SESSION_MS: i32 = 10_000;
    let mut member = String::new();
    let mut generation = -1;
    let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut joined = false;
    // Pushed but not yet committed, per partition.
    let mut uncommitted: BTreeMap<(String, i32), i64> = BTreeMap::new();
    while !*s.shutdown.borrow() && !tx.is_closed() {
        while let Ok(reply) = commit_requests.try_recv() {
            let offsets: Vec<_> = std::mem::take(&mut uncommitted).into_iter().collect();
            let listed: Vec<Value> = offsets
                .iter()
                .map(|((t, p), o)| json!({"topic": t, "partition": p, "offset": o}))
                .collect();
            let commits = offsets
                .into_iter()
                .map(|((topic, partition), offset)| OffsetCommit {
                    topic,
                    partition,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                })
                .collect();
            let answer = match s
                .groups
                .commit(&group, generation, &member, None, commits)
                .await
            {
                Ok(_) => json!({"group": group, "committed": listed}),
                Err(e) => json!({"group": group, "error": e.to_string()}),
            };
            let _ = reply.send(answer);
        }
        let healthy = joined
            && matches!(
                s.groups.heartbeat(&group, generation, &member, None),
                Ok(())
            );
        if !healthy {
            match join_and_sync(&s, &group, &member, &topics, SESSION_MS).await {
                Ok((m, g, assignment)) => {
                    member = m;
                    generation = g;
                    positions = positions_for(&s, &group, &assignment, from_earliest, &positions);
                    joined = true;
                    let msg = json!({"type": "assigned", "group": group, "member_id": member,
                        "generation": generation, "assignment": assignment_json(&positions)});
                    if !tx.send(msg).await {
                        break;
                    }
                }
                Err(e) => {
                    tx.send(json!({"type": "error", "message": format!("{e:?}")}))
                        .await;
                    return;
                }
            }
        }
        let specs: Vec<FetchSpec> = positions
            .iter()
            .map(|((t, p), o)| FetchSpec {
                topic: t.clone(),
                partition: *p,
                offset: *o,
                max_bytes: 1 << 20,
            })
            .collect();
        let limits = FetchLimits {
            max_bytes: s.budget.max_stored_bytes().min(4 << 20),
            min_bytes: 1,
            max_wait: Duration::from_millis(1000),
        };
        let results = s
            .broker
            .fetch_isolated(&specs, limits, false, isolation.core())
            .await;
        let mut pushed = Vec::new();
        for (spec, r) in specs.iter().zip(results) {
            let key = (spec.topic.clone(), spec.partition);
            let Ok(read) = r else { continue };
            let decoded =
                records_json_committed(&read.data, spec.offset, usize::MAX, format, &read.aborted);
            for e in &decoded.errors {
                // A stored batch that cannot be read: said, then passed (committed past).
                let msg = json!({"type": "error", "topic": spec.topic, "partition": spec.partition,
                    "offset": e.offset, "message": e.message, "group": group});
                if !tx.push(msg).await {
                    let _ = overflow.try_send(());
                    let _ = s.groups.leave(&group, &[(member.clone(), None)]).await;
                    return;
                }
            }
            for rec in decoded.records {
                let o = rec["offset"].as_i64().unwrap_or(spec.offset);
                let msg = json!({"type": "record", "topic": spec.topic, "partition": spec.partition,
                    "offset": o, "timestamp": rec["timestamp"], "key": rec["key"], "value": rec["value"],
                    "headers": rec["headers"], "group": group});
                if !tx.push(msg).await {
                    let _ = overflow.try_send(());
                    let _ = s.groups.leave(&group, &[(member.clone(), None)]).await;
                    return;
                }
                positions.insert(key.clone(), o + 1);
                uncommitted.insert(key.clone(), o + 1);
                pushed.push((key.clone(), o + 1));
            }
            // Past skipped batches too — unreadable, control or aborted ones (every record
            // before them was pushed above).
            if let Some(next) = decoded
                .next_offset
                .filter(|n| positions.get(&key) != Some(n))
            {
                positions.insert(key.clone(), next);
                uncommitted.insert(key.clone(), next);
                pushed.push((key.clone(), next));
            }
        }
        if auto_commit && !pushed.is_empty() {
            uncommitted.clear();
            let commits = pushed
                .into_iter()
                .map(|((topic, partition), offset)| OffsetCommit {
                    topic,
                    partition,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                })
                .collect();
            let _ = s
                .groups
                .commit(&group, generation, &member, None, commits)
                .await;
        }
    }
    if joined {
        let _ = s.groups.leave(&group, &[(member, None)]).await;
    }
}

// --- admin: the console's groups pages ---------------------------------------------------------

/// `GET /groups`: every consumer group (classic and KIP-848) and share group the caller may
/// describe, with its type and state.
#[utoipa::path(get, path = "/groups", responses((status = 200, description = "groups")))]
pub(crate) async fn list_groups(State(s): State<AppState>, caller: Caller) -> Json<Value> {
    let mut groups: Vec<Value> = s
        .groups
        .list_typed()
        .into_iter()
        .filter(|(id, ..)| caller.may(&s, Operation::Describe, ResourceType::Group, id))
        .map(|(id, protocol_type, state, kind)| {
            json!({"group": id, "type": kind, "protocol_type": protocol_type, "state": state})
        })
        .collect();
    groups.extend(
        s.shares
            .list()
            .into_iter()
            .filter(|g| caller.may(&s, Operation::Describe, ResourceType::Group, &g.group))
            .map(|g| json!({"group": g.group, "type": "share", "protocol_type": "share", "state": g.state.name()})),
    );
    Json(json!({ "groups": groups }))
}

fn assigned_json(a: &BTreeMap<String, BTreeSet<i32>>) -> Vec<Value> {
    a.iter()
        .map(|(t, ps)| json!({"topic": t, "partitions": ps}))
        .collect()
}

/// `GET /groups/{group}`: a consumer group's members with their assignments and its committed
/// offsets with each partition's log end and lag (a share group: see `GET /queues/{group}`).
#[utoipa::path(get, path = "/groups/{group}", params(("group" = String, Path)),
    responses((status = 200, description = "the group"), (status = 404, body = ErrorBody)))]
pub(crate) async fn describe_group(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.allow(&s, Operation::Describe, ResourceType::Group, &group)?;
    let listed = s.groups.list_typed();
    let Some((_, protocol_type, state, kind)) = listed.into_iter().find(|g| g.0 == group) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "group_id_not_found",
            format!("no consumer group {group:?}"),
        ));
    };
    let members: Vec<Value> = if kind == "consumer" {
        s.groups
            .describe_consumer_group(&group)
            .map(|d| {
                d.members
                    .iter()
                    .map(|m| {
                        json!({"member_id": m.member_id, "instance_id": m.instance_id,
                            "client_id": m.client_id, "client_host": m.client_host,
                            "member_epoch": m.member_epoch, "assignment": assigned_json(&m.assignment)})
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        s.groups
            .describe(&group)
            .members
            .iter()
            .map(|m| {
                let a = s
                    .groups
                    .decode_classic_assignment(&m.assignment)
                    .unwrap_or_default();
                json!({"member_id": m.member_id, "instance_id": m.instance_id,
                    "client_id": m.client_id, "client_host": m.client_host,
                    "assignment": assigned_json(&a)})
            })
            .collect()
    };
    let mut offsets: Vec<Value> = Vec::new();
    let mut total_lag = 0i64;
    for (topic, partition, committed) in s.groups.fetch_offsets(&group, None) {
        let Some(c) = committed else { continue };
        let end = s
            .broker
            .partition(&topic, partition)
            .ok()
            .and_then(|p| p.log().ok().map(|l| l.log_end_offset()));
        let lag = end.map(|e| (e - c.offset).max(0));
        total_lag += lag.unwrap_or(0);
        offsets.push(json!({"topic": topic, "partition": partition, "committed": c.offset,
            "log_end_offset": end, "lag": lag, "metadata": c.metadata, "committed_at_ms": c.timestamp}));
    }
    offsets.sort_by(|a, b| {
        (a["topic"].as_str(), a["partition"].as_i64())
            .cmp(&(b["topic"].as_str(), b["partition"].as_i64()))
    });
    Ok(Json(
        json!({"group": group, "type": kind, "protocol_type": protocol_type, "state": state,
        "members": members, "offsets": offsets, "lag": total_lag}),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetOffsets {
    /// `earliest`, `latest` or `time:<ms>` (the first offset at or after that time).
    to: String,
    /// Only this topic's partitions (default: every partition with a committed offset).
    #[serde(default)]
    topic: Option<String>,
}

/// `POST /groups/{group}/offsets/reset`: moves an empty group's committed offsets to the
/// earliest or latest offsets or to a time (as `kafka-consumer-groups --reset-offsets`).
#[utoipa::path(post, path = "/groups/{group}/offsets/reset", params(("group" = String, Path)),
    request_body = ResetOffsets,
    responses((status = 200, description = "the new offsets"), (status = 409, body = ErrorBody)))]
pub(crate) async fn reset_offsets(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: ResetOffsets = parse_body(body)?;
    caller.allow(&s, Operation::Read, ResourceType::Group, &group)?;
    let ts = match req.to.as_str() {
        "earliest" => -2,
        "latest" => -1,
        t => t
            .strip_prefix("time:")
            .and_then(|ms| ms.parse::<i64>().ok())
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "to must be earliest, latest or time:<ms>, not {t:?}"
                ))
            })?,
    };
    if !s.groups.describe(&group).members.is_empty()
        || s.groups
            .describe_consumer_group(&group)
            .is_ok_and(|d| !d.members.is_empty())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "group_not_empty",
            format!("group {group:?} has members: stop them before resetting its offsets"),
        ));
    }
    let mut targets: Vec<(String, i32)> = s
        .groups
        .fetch_offsets(&group, None)
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .filter(|(t, _)| req.topic.as_ref().is_none_or(|only| only == t))
        .collect();
    if let Some(t) = &req.topic {
        if targets.is_empty() {
            let topic =
                s.broker
                    .topic(t)
                    .ok_or(strom_broker::BrokerError::UnknownTopicOrPartition {
                        topic: t.clone(),
                        partition: -1,
                    })?;
            targets = (0..topic.partitions().len() as i32)
                .map(|p| (t.clone(), p))
                .collect();
        }
    }
    let mut commits = Vec::new();
    for (topic, partition) in &targets {
        caller.allow(&s, Operation::Read, ResourceType::Topic, topic)?;
        let offset = match s.broker.list_offset(topic, *partition, ts) {
            // No record at or after the time: the log end.
            Ok((o, _)) if o >= 0 => o,
            Ok(_) => s.broker.list_offset(topic, *partition, -1)?.0,
            Err(e) => return Err(e.into()),
        };
        commits.push(OffsetCommit {
            topic: topic.clone(),
            partition: *partition,
            offset,
            leader_epoch: -1,
            metadata: None,
        });
    }
    let offsets: Vec<Value> = commits
        .iter()
        .map(|c| json!({"topic": c.topic, "partition": c.partition, "offset": c.offset}))
        .collect();
    let results = s
        .groups
        .commit(&group, -1, "", None, commits)
        .await
        .map_err(group_error)?;
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(group_error(e));
    }
    Ok(Json(json!({"group": group, "offsets": offsets})))
}
