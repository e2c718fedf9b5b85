//! Queues over HTTP: the door as a share-group member (KIP-932 semantics from
//! `strom_broker::share`), so HTTP receivers and Kafka share consumers can share one group.
//!
//! - `POST /queues/{group}/receive` `{"topics": [...], "max_records": N, "wait_ms": W,
//!   "format": "text"|"json"|"base64"}` → `{"records": [{topic, partition, offset, timestamp,
//!   key, value, headers, delivery_count, receipt}]}`: each record is acquired (locked) for
//!   `share.record.lock.duration.ms`; nobody else receives it meanwhile.
//! - `POST /queues/{group}/ack` `{"acks": [{"receipt": ..., "type": "accept"|"release"|"reject"}]}`
//!   → per-ack results; `POST /queues/{group}/renew` `{"receipts": [...]}` extends the locks.
//! - `GET /queues/{group}` describes the group (members, per partition start offset, in
//!   flight, acquired, available, redeliveries, dead-lettered, lock expiries);
//!   `GET`/`POST /queues/{group}/config` reads and sets the group configs.
//!
//! **Membership.** The door joins each share group as *one* member per group
//! (`strom-http-<door id>`), shared by every HTTP client: a receipt is the capability to
//! acknowledge its record (it names topic, partition, offset, delivery count and group), so
//! any client holding it may ack. Every request heartbeats the member; without HTTP traffic
//! for `share.session.timeout.ms` it leaves (its locks are released) and the next request
//! joins again. A WebSocket queue subscription is a member of its own (`strom-ws-<id>`),
//! which leaves when the socket closes. A receipt of an older delivery (the lock expired and
//! the record was delivered again) or of an earlier door process is stale:
//! INVALID_RECORD_STATE, nothing changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};
use strom_broker::quota::QuotaKind;
use strom_broker::share::{
    AckPartition, AckRange, AckType, AcquireLimits, AcquiredPartition, ShareCoordinator,
    ShareError, ShareHeartbeat,
};
use strom_broker::ConfigOp;
use utoipa::ToSchema;

use crate::api::{parse_body, records_json, ApiError, ApiResult, ErrorBody, Format};
use crate::auth::Caller;
use crate::budget::RecordsBody;
use crate::AppState;
use strom_broker::security::acl::{Operation, ResourceType};
pub(crate) use strom_broker::share::Receipt;

/// Stored bytes one receive acquires at most (the connection's buffer bound may lower it).
const RECEIVE_MAX_BYTES: usize = 1 << 20;
/// Records one receive returns at most.
const RECEIVE_MAX_RECORDS: usize = 10_000;
/// Longest `wait_ms`.
const RECEIVE_MAX_WAIT_MS: u64 = 30_000;
/// Acknowledgements in one request at most.
const ACKS_MAX: usize = 10_000;

/// The door's share members, one per group.
#[derive(Default)]
pub(crate) struct QueueMembers {
    by_group: Mutex<HashMap<String, QueueMember>>,
    /// This door process's part of member ids.
    door_id: String,
}

#[derive(Clone, Debug)]
struct QueueMember {
    member_id: String,
    epoch: i32,
    topics: BTreeSet<String>,
}

impl QueueMembers {
    pub(crate) fn new() -> QueueMembers {
        QueueMembers {
            by_group: Mutex::new(HashMap::new()),
            door_id: random_hex(),
        }
    }
}

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

/// The door's share-group errors as HTTP answers.
pub(crate) fn share_error(e: ShareError) -> ApiError {
    let (status, code) = match &e {
        ShareError::InvalidGroupId | ShareError::InvalidRequest(_) => {
            (StatusCode::BAD_REQUEST, "invalid_request")
        }
        ShareError::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
        ShareError::GroupIdNotFound(_) => (StatusCode::NOT_FOUND, "group_id_not_found"),
        ShareError::UnknownTopicOrPartition => {
            (StatusCode::NOT_FOUND, "unknown_topic_or_partition")
        }
        ShareError::InvalidRecordState(_) => (StatusCode::CONFLICT, "invalid_record_state"),
        ShareError::UnknownMemberId | ShareError::FencedMemberEpoch => {
            (StatusCode::CONFLICT, "unknown_member")
        }
        ShareError::NonEmptyGroup => (StatusCode::CONFLICT, "non_empty_group"),
        ShareError::CoordinatorNotAvailable => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        ShareError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
    };
    ApiError::new(status, code, e.to_string())
}

fn error_json(e: &ShareError) -> Value {
    let code = match e {
        ShareError::InvalidRecordState(_) => "invalid_record_state",
        ShareError::InvalidRequest(_) => "invalid_request",
        ShareError::UnknownTopicOrPartition => "unknown_topic_or_partition",
        _ => "share_error",
    };
    json!({"code": code, "message": e.to_string()})
}

/// Joins (or heartbeats) `member_id` with `topics` added to its subscription; returns the
/// member id. A member that the coordinator forgot (session expiry, restart) joins again.
pub(crate) async fn heartbeat(
    shares: &ShareCoordinator,
    group: &str,
    member_id: &str,
    epoch: i32,
    topics: &BTreeSet<String>,
    changed: bool,
    client: &str,
) -> Result<i32, ShareError> {
    let hb = |epoch: i32, subscribed: bool| ShareHeartbeat {
        group: group.to_string(),
        member_id: member_id.to_string(),
        member_epoch: epoch,
        rack: None,
        subscribed_topics: subscribed.then(|| topics.iter().cloned().collect()),
        client_id: client.to_string(),
        client_host: "http".into(),
    };
    let first = if epoch <= 0 {
        shares.heartbeat(hb(0, true)).await
    } else {
        shares.heartbeat(hb(epoch, changed)).await
    };
    match first {
        Ok(o) => Ok(o.member_epoch),
        Err(ShareError::UnknownMemberId | ShareError::FencedMemberEpoch) => {
            Ok(shares.heartbeat(hb(0, true)).await?.member_epoch)
        }
        Err(e) => Err(e),
    }
}

/// The door's member of `group`, subscribed to at least `topics`.
async fn door_member(s: &AppState, group: &str, topics: &[String]) -> ApiResult<String> {
    let (member_id, epoch, subs, changed) = {
        let mut m = s.queues.by_group.lock();
        let e = m.entry(group.to_string()).or_insert_with(|| QueueMember {
            member_id: format!("strom-http-{}", s.queues.door_id),
            epoch: 0,
            topics: BTreeSet::new(),
        });
        let before = e.topics.len();
        e.topics.extend(topics.iter().cloned());
        (
            e.member_id.clone(),
            e.epoch,
            e.topics.clone(),
            e.topics.len() != before,
        )
    };
    let epoch = heartbeat(
        &s.shares,
        group,
        &member_id,
        epoch,
        &subs,
        changed,
        "strom-http",
    )
    .await
    .map_err(share_error)?;
    if let Some(e) = s.queues.by_group.lock().get_mut(group) {
        e.epoch = epoch;
    }
    Ok(member_id)
}

// --- receipts ------------------------------------------------------------------------------

// --- receive -------------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiveBody {
    /// Topics to receive from (every partition).
    topics: Vec<String>,
    /// Records at most (default 100, at most 10000).
    #[serde(default)]
    max_records: Option<usize>,
    /// Wait this long for a first record (default 0, at most 30000).
    #[serde(default)]
    wait_ms: Option<u64>,
    /// How keys and values are shown (default text).
    #[serde(default)]
    format: Format,
}

/// Acquired records as JSON: only the acquired offsets of the batches, each with its
/// delivery count and receipt. Returns the records and the acquired offsets left out.
pub(crate) fn acquired_json(
    group: &str,
    p: &AcquiredPartition,
    format: Format,
) -> (Vec<Value>, Vec<i64>) {
    let mut wanted: BTreeMap<i64, u16> = BTreeMap::new();
    for a in &p.acquired {
        for o in a.first_offset..=a.last_offset {
            wanted.insert(o, a.delivery_count);
        }
    }
    let Some(&first) = wanted.keys().next() else {
        return (Vec::new(), Vec::new());
    };
    let decoded = records_json(&p.records, first, usize::MAX, format);
    let mut out = Vec::new();
    for mut rec in decoded.records {
        let Some(o) = rec["offset"].as_i64() else {
            continue;
        };
        let Some(dc) = wanted.remove(&o) else {
            continue;
        };
        let receipt = Receipt {
            group: group.to_string(),
            topic: p.topic.clone(),
            partition: p.partition,
            offset: o,
            delivery_count: dc,
        };
        rec["topic"] = json!(p.topic);
        rec["partition"] = json!(p.partition);
        rec["delivery_count"] = json!(dc);
        rec["receipt"] = json!(receipt.encode());
        out.push(rec);
    }
    // Offsets acquired but not decoded (a batch that cannot be read): given back below.
    (out, wanted.into_keys().collect())
}

/// Releases acquired offsets a door could not hand out (an answer that was full, an
/// unreadable batch) so that others get them.
pub(crate) async fn give_back(
    shares: &ShareCoordinator,
    group: &str,
    member: &str,
    left: Vec<(String, i32, Vec<i64>)>,
) {
    let parts: Vec<AckPartition> = left
        .into_iter()
        .filter(|(_, _, o)| !o.is_empty())
        .map(|(topic, partition, offsets)| AckPartition {
            topic,
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
        })
        .collect();
    if !parts.is_empty() {
        if let Err(e) = shares.acknowledge_many(group, member, &parts).await {
            tracing::warn!(group, error = %e, "could not give back records not handed out");
        }
    }
}

#[utoipa::path(post, path = "/queues/{group}/receive", params(("group" = String, Path)), request_body = ReceiveBody,
    responses((status = 200, description = "`{\"records\": [{topic, partition, offset, timestamp, key, value, headers, delivery_count, receipt}]}`: each record is locked to the door's member of the group for share.record.lock.duration.ms; acknowledge it with its receipt"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "server_busy: answers waiting for slow readers hold the door's whole buffer (--http-buffer-bytes); nothing was acquired; see Retry-After",
            headers(("Retry-After" = u64, description = "seconds to wait before retrying")))))]
/// Receives records of a share group: each one goes to one receiver at a time.
pub(crate) async fn receive(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let b: ReceiveBody = parse_body(body)?;
    if b.topics.is_empty() {
        return Err(ApiError::bad("topics is empty"));
    }
    caller.allow(&s, Operation::Read, ResourceType::Group, &group)?;
    for t in &b.topics {
        caller.allow(&s, Operation::Read, ResourceType::Topic, t)?;
    }
    // consumer_byte_rate: a caller far over it is refused before anything is acquired.
    caller.quota_gate(&s, QuotaKind::Fetch, 0)?;
    let max_records = b.max_records.unwrap_or(100);
    if max_records == 0 || max_records > RECEIVE_MAX_RECORDS {
        return Err(ApiError::bad(format!(
            "max_records must be in [1, {RECEIVE_MAX_RECORDS}]"
        )));
    }
    let wait_ms = b.wait_ms.unwrap_or(0);
    if wait_ms > RECEIVE_MAX_WAIT_MS {
        return Err(ApiError::bad(format!(
            "wait_ms must be at most {RECEIVE_MAX_WAIT_MS}"
        )));
    }
    let mut partitions = Vec::new();
    for t in &b.topics {
        let topic = s.broker.topic(t).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_topic_or_partition",
                format!("unknown topic {t:?}"),
            )
        })?;
        for p in 0..topic.partitions().len() as i32 {
            if !s.broker.partition(t, p).is_ok_and(|p| !p.is_online()) {
                partitions.push((t.clone(), p));
            }
        }
    }
    let member = door_member(&s, &group, &b.topics).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let max_stored = s.budget.max_stored_bytes().min(RECEIVE_MAX_BYTES);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ready = s
            .shares
            .wait_acquirable(&group, &member, &partitions, left)
            .await
            .map_err(share_error)?;
        if !ready {
            return Ok(crate::api::json_bytes(Bytes::from_static(
                b"{\"records\":[]}",
            )));
        }
        // Reserve the answer's bytes before acquiring anything: a busy door acquires nothing.
        let mut reservation = s.budget.reserve(s.budget.estimate(max_stored)).await?;
        let acquired = s
            .shares
            .acquire(
                &group,
                &member,
                &partitions,
                AcquireLimits {
                    max_records,
                    max_bytes: max_stored,
                    max_wait: Duration::ZERO,
                },
            )
            .await
            .map_err(share_error)?;
        let got = acquired.iter().any(|p| !p.acquired.is_empty());
        if !got && tokio::time::Instant::now() < deadline {
            // Another receiver was first: wait again.
            continue;
        }
        let mut body = RecordsBody::new(reservation.bytes());
        let mut left_out = Vec::new();
        let mut full = false;
        for p in &acquired {
            let (records, mut missing) = acquired_json(&group, p, b.format);
            for rec in records {
                if full || !body.push(&rec) {
                    full = true;
                    missing.push(rec["offset"].as_i64().unwrap_or(-1));
                }
            }
            missing.retain(|o| *o >= 0);
            left_out.push((p.topic.clone(), p.partition, missing));
        }
        give_back(&s.shares, &group, &member, left_out).await;
        let out = body.finish(&[]);
        if out.len() > reservation.bytes() {
            reservation.merge(s.budget.reserve(out.len() - reservation.bytes()).await?);
        }
        // consumer_byte_rate: the answer's bytes (the stored batches may hold many records
        // that were not acquired).
        caller.quota_charge(&s, QuotaKind::Fetch, out.len()).await;
        return Ok(crate::api::json_bytes(reservation.into_bytes(out)));
    }
}

// --- ack / renew ---------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckBody {
    /// The acknowledgements.
    acks: Vec<AckItem>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckItem {
    /// A receipt from a receive.
    receipt: String,
    /// accept (default), release or reject.
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenewBody {
    /// Receipts whose locks to extend.
    receipts: Vec<String>,
}

/// Parses an ack type name.
pub(crate) fn ack_type(kind: Option<&str>) -> Result<AckType, String> {
    match kind.unwrap_or("accept") {
        "accept" => Ok(AckType::Accept),
        "release" => Ok(AckType::Release),
        "reject" => Ok(AckType::Reject),
        "renew" => Ok(AckType::Renew),
        other => Err(format!(
            "type must be accept, release, reject or renew, not {other:?}"
        )),
    }
}

/// Applies acknowledgements `(receipt text, type)` for `member`; every item gets a result
/// (`{"receipt", "ok": true}` or `{"receipt", "ok": false, "error": {code, message}}`), and
/// a refused one changes nothing. Returns the results and the worst status (200 when all
/// went through, 400 for a malformed receipt, 409 for a record not held).
pub(crate) async fn apply_acks(
    shares: &ShareCoordinator,
    group: &str,
    member: &str,
    items: Vec<(String, Result<AckType, String>)>,
) -> Result<(Vec<Value>, StatusCode), ShareError> {
    let mut results: Vec<Option<Value>> = vec![None; items.len()];
    let mut parts = Vec::new();
    let mut index = Vec::new();
    let mut status = StatusCode::OK;
    for (i, (text, kind)) in items.iter().enumerate() {
        let refuse = |code: &str, message: String| json!({"receipt": text, "ok": false, "error": {"code": code, "message": message}});
        let kind = match kind {
            Ok(k) => *k,
            Err(why) => {
                results[i] = Some(refuse("invalid_request", why.clone()));
                status = StatusCode::BAD_REQUEST;
                continue;
            }
        };
        let Some(r) = Receipt::decode(text) else {
            results[i] = Some(refuse(
                "invalid_receipt",
                "not a receipt this broker handed out".into(),
            ));
            status = StatusCode::BAD_REQUEST;
            continue;
        };
        if r.group != group {
            results[i] = Some(refuse(
                "invalid_receipt",
                format!("the receipt is of group {:?}", r.group),
            ));
            status = StatusCode::BAD_REQUEST;
            continue;
        }
        parts.push(AckPartition {
            topic: r.topic,
            partition: r.partition,
            ranges: vec![AckRange {
                first_offset: r.offset,
                last_offset: r.offset,
                types: vec![kind],
                delivery_count: Some(r.delivery_count),
            }],
        });
        index.push(i);
    }
    if !parts.is_empty() {
        let per = shares.acknowledge_many(group, member, &parts).await?;
        for (i, r) in index.into_iter().zip(per) {
            results[i] = Some(match r {
                Ok(()) => json!({"receipt": items[i].0, "ok": true}),
                Err(e) => {
                    if status == StatusCode::OK {
                        status = StatusCode::CONFLICT;
                    }
                    json!({"receipt": items[i].0, "ok": false, "error": error_json(&e)})
                }
            });
        }
    }
    Ok((results.into_iter().flatten().collect(), status))
}

fn ack_answer(results: Vec<Value>, status: StatusCode) -> Response {
    let failed = results.iter().filter(|r| r["ok"] == json!(false)).count();
    let mut body = json!({ "results": results });
    if failed > 0 {
        let code = if status == StatusCode::BAD_REQUEST {
            "invalid_receipt"
        } else {
            "invalid_record_state"
        };
        body["error"] = json!({"code": code,
            "message": format!("{failed} of {} refused (they changed nothing; the others were applied)", body["results"].as_array().map_or(0, Vec::len))});
    }
    (status, Json(body)).into_response()
}

/// Group of the door's member for acks: no new topics, but a heartbeat.
async fn ack_member(s: &AppState, group: &str) -> ApiResult<String> {
    door_member(s, group, &[]).await
}

#[utoipa::path(post, path = "/queues/{group}/ack", params(("group" = String, Path)), request_body = AckBody,
    responses((status = 200, description = "`{\"results\": [{receipt, ok: true}]}`: every acknowledgement applied (accept: never delivered again; release: delivered again, after the group's retry backoff; reject: archived, or copied to the group's dead-letter topic)"),
        (status = 400, body = ErrorBody, description = "malformed body, or a receipt that is not one (the `results` name each; the valid ones were applied)"),
        (status = 409, body = ErrorBody, description = "invalid_record_state: a receipt whose record is no longer held (its lock expired, it was delivered again, or it was acknowledged): that one changed nothing, the others were applied (see `results`)")))]
/// Acknowledges received records by receipt, each on its own.
pub(crate) async fn ack(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    caller.allow(&s, Operation::Read, ResourceType::Group, &group)?;
    let b: AckBody = parse_body(body)?;
    if b.acks.is_empty() || b.acks.len() > ACKS_MAX {
        return Err(ApiError::bad(format!(
            "acks must hold 1 to {ACKS_MAX} acknowledgements"
        )));
    }
    let member = ack_member(&s, &group).await?;
    let items = b
        .acks
        .into_iter()
        .map(|a| {
            let k = ack_type(a.kind.as_deref()).and_then(|k| match k {
                AckType::Renew => Err("renew goes to /queues/{group}/renew".to_string()),
                k => Ok(k),
            });
            (a.receipt, k)
        })
        .collect();
    let (results, status) = apply_acks(&s.shares, &group, &member, items)
        .await
        .map_err(share_error)?;
    Ok(ack_answer(results, status))
}

#[utoipa::path(post, path = "/queues/{group}/renew", params(("group" = String, Path)), request_body = RenewBody,
    responses((status = 200, description = "`{\"results\": [...]}`: each lock extended by share.record.lock.duration.ms from now"),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
/// Extends the locks of received records.
pub(crate) async fn renew(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    caller.allow(&s, Operation::Read, ResourceType::Group, &group)?;
    let b: RenewBody = parse_body(body)?;
    if b.receipts.is_empty() || b.receipts.len() > ACKS_MAX {
        return Err(ApiError::bad(format!(
            "receipts must hold 1 to {ACKS_MAX} receipts"
        )));
    }
    let member = ack_member(&s, &group).await?;
    let items = b
        .receipts
        .into_iter()
        .map(|r| (r, Ok(AckType::Renew)))
        .collect();
    let (results, status) = apply_acks(&s.shares, &group, &member, items)
        .await
        .map_err(share_error)?;
    Ok(ack_answer(results, status))
}

// --- describe / configs --------------------------------------------------------------------

#[utoipa::path(get, path = "/queues/{group}", params(("group" = String, Path)),
    responses((status = 200, description = "the share group: state, members, and per partition start offset, in flight, acquired, available, redeliveries, dead-lettered, lock expiries, lag"),
        (status = 404, body = ErrorBody)))]
/// Describes a share group.
pub(crate) async fn describe(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.allow(&s, Operation::Describe, ResourceType::Group, &group)?;
    let d = s.shares.describe(&group).map_err(share_error)?;
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            json!({"member_id": m.member_id, "member_epoch": m.member_epoch,
                "client_id": m.client_id, "client_host": m.client_host,
                "subscribed_topics": m.subscribed_topics})
        })
        .collect();
    let partitions: Vec<Value> = d
        .partitions
        .iter()
        .map(|p| {
            json!({"topic": p.topic, "partition": p.partition, "start_offset": p.start_offset,
                "end_offset": p.end_offset, "in_flight": p.in_flight, "acquired": p.acquired,
                "available": p.available, "redeliveries": p.redeliveries,
                "dead_lettered": p.dead_lettered, "lock_expiries": p.lock_expiries, "lag": p.lag})
        })
        .collect();
    Ok(Json(json!({
        "group": d.group, "type": "share", "state": d.state.name(), "group_epoch": d.group_epoch,
        "members": members, "partitions": partitions,
    })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigBody {
    /// `{"name": "value"}` sets, `{"name": null}` goes back to the default.
    #[schema(value_type = Object)]
    configs: BTreeMap<String, Option<String>>,
}

fn configs_json(shares: &ShareCoordinator, group: &str) -> Value {
    let c: serde_json::Map<String, Value> = shares
        .group_configs(group)
        .into_iter()
        .map(|c| (c.name, json!({"value": c.value, "default": c.is_default})))
        .collect();
    json!({ "group": group, "configs": c })
}

#[utoipa::path(get, path = "/queues/{group}/config", params(("group" = String, Path)),
    responses((status = 200, description = "every group config: `{\"configs\": {name: {value, default}}}`")))]
/// The group's configs.
pub(crate) async fn get_config(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.allow(&s, Operation::DescribeConfigs, ResourceType::Group, &group)?;
    Ok(Json(configs_json(&s.shares, &group)))
}

#[utoipa::path(post, path = "/queues/{group}/config", params(("group" = String, Path)), request_body = ConfigBody,
    responses((status = 200, description = "the configs after the change"),
        (status = 400, body = ErrorBody, description = "invalid_config: an unknown name or a bad value; nothing changed")))]
/// Sets group configs (`share.*`, `strom.retry.backoff*`, `errors.deadletterqueue.topic.name`):
/// all are validated before any is applied; durable.
pub(crate) async fn set_config(
    State(s): State<AppState>,
    caller: Caller,
    Path(group): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    caller.allow(&s, Operation::AlterConfigs, ResourceType::Group, &group)?;
    let b: ConfigBody = parse_body(body)?;
    let ops: Vec<ConfigOp> = b
        .configs
        .into_iter()
        .map(|(k, v)| match v {
            Some(v) => ConfigOp::Set(k, v),
            None => ConfigOp::Delete(k),
        })
        .collect();
    s.shares
        .alter_group_configs(&group, &ops, false)
        .await
        .map_err(share_error)?;
    Ok(Json(configs_json(&s.shares, &group)))
}

// --- WebSocket queue subscriptions ---------------------------------------------------------

/// One queue subscription of a WebSocket: a share member of its own.
pub(crate) struct WsQueue {
    pub(crate) member_id: String,
    /// Records pushed and not yet acknowledged (released, rejected) by this socket.
    pub(crate) in_flight: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) acked: Arc<tokio::sync::Notify>,
}

/// What a WebSocket queue subscription asked for.
pub(crate) struct QueueSub {
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) format: Format,
    pub(crate) max_in_flight: usize,
}

/// Records a WebSocket queue subscription holds unacknowledged at most (default).
pub(crate) const WS_IN_FLIGHT_DEFAULT: usize = 100;

/// Pushes a share group's records to a socket until it closes, then leaves the group (its
/// unacknowledged records are released).
pub(crate) async fn follow_queue(
    s: AppState,
    sub: QueueSub,
    q: Arc<WsQueue>,
    tx: crate::push::PushQueue,
    overflow: tokio::sync::mpsc::Sender<()>,
) {
    use std::sync::atomic::Ordering;
    let QueueSub {
        group,
        topics,
        format,
        max_in_flight,
    } = sub;
    let subs: BTreeSet<String> = topics.iter().cloned().collect();
    let mut epoch = 0;
    let mut partitions = Vec::new();
    for t in &topics {
        if let Some(topic) = s.broker.topic(t) {
            partitions.extend((0..topic.partitions().len() as i32).map(|p| (t.clone(), p)));
        }
    }
    'session: while !*s.shutdown.borrow() && !tx.is_closed() {
        match heartbeat(
            &s.shares,
            &group,
            &q.member_id,
            epoch,
            &subs,
            false,
            "strom-ws",
        )
        .await
        {
            Ok(e) => epoch = e,
            Err(e) => {
                let _ = tx
                    .send(json!({"type": "error", "group": group, "message": e.to_string()}))
                    .await;
                break;
            }
        }
        let mut held = q.in_flight.load(Ordering::Acquire);
        if held >= max_in_flight {
            // Locks that expired (the client never acknowledged) no longer count.
            held = s.shares.held_by(&group, &q.member_id);
            q.in_flight.store(held, Ordering::Release);
        }
        if held >= max_in_flight {
            // Wait for acknowledgements (or heartbeat again).
            let _ = tokio::time::timeout(Duration::from_secs(2), q.acked.notified()).await;
            continue;
        }
        let acquired = match s
            .shares
            .acquire(
                &group,
                &q.member_id,
                &partitions,
                AcquireLimits {
                    max_records: max_in_flight - held,
                    max_bytes: s.budget.max_stored_bytes().min(RECEIVE_MAX_BYTES),
                    max_wait: Duration::from_secs(2),
                },
            )
            .await
        {
            Ok(a) => a,
            Err(ShareError::UnknownMemberId) => {
                epoch = 0;
                continue;
            }
            Err(e) => {
                let _ = tx
                    .send(json!({"type": "error", "group": group, "message": e.to_string()}))
                    .await;
                break;
            }
        };
        for p in &acquired {
            let (records, missing) = acquired_json(&group, p, format);
            give_back(
                &s.shares,
                &group,
                &q.member_id,
                vec![(p.topic.clone(), p.partition, missing)],
            )
            .await;
            for rec in records {
                q.in_flight.fetch_add(1, Ordering::AcqRel);
                let msg = json!({"type": "record", "group": group, "topic": p.topic,
                    "partition": p.partition, "record": rec});
                if !tx.push(msg).await {
                    let _ = overflow.try_send(());
                    break 'session;
                }
            }
        }
    }
    // The socket is gone: leaving releases what it held.
    let _ = s.shares.leave(&group, &q.member_id).await;
}

/// `POST /topics/{topic}/partitions/{partition}/records/{offset}/redrive`: sends a
/// dead-lettered record back to the topic it came from (its `_dlq.errors.original.topic`
/// header), with its key, value and own headers; READ on the dead-letter topic and WRITE on
/// the original one. Answers where it was written.
#[utoipa::path(post, path = "/topics/{topic}/partitions/{partition}/records/{offset}/redrive",
    params(("topic" = String, Path), ("partition" = i32, Path), ("offset" = i64, Path)),
    responses((status = 200, description = "re-driven: {topic, partition, offset}"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn redrive(
    State(s): State<AppState>,
    caller: Caller,
    Path((topic, partition, offset)): Path<(String, i32, i64)>,
) -> ApiResult<Json<Value>> {
    caller.allow(&s, Operation::Read, ResourceType::Topic, &topic)?;
    let plan = s
        .shares
        .redrive_plan(&topic, partition, offset)
        .map_err(share_error)?;
    caller.allow(&s, Operation::Write, ResourceType::Topic, &plan.topic)?;
    let written = s.shares.redrive(&plan).await.map_err(share_error)?;
    Ok(Json(
        json!({"topic": plan.topic, "partition": plan.partition, "offset": written}),
    ))
}
