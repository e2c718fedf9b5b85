//! REST handlers: topics, produce, fetch, health, OpenAPI; JSON errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use strom_broker::records::{build_batch, partition_for_key, NewRecord};
use strom_broker::{BrokerError, FetchLimits, FetchSpec};
use strom_log::{BatchError, LogError};
use utoipa::{IntoParams, ToSchema};

use strom_broker::quota::QuotaKind;
use strom_broker::security::acl::{Operation, ResourceType};

use crate::auth::Caller;
use crate::budget::RecordsBody;
use crate::AppState;

/// A refused request: status, a stable code and a message naming the problem.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Retry-After` seconds (503 `server_busy`).
    retry_after_s: Option<u64>,
    /// `WWW-Authenticate` (401).
    challenge: Option<crate::auth::Challenge>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
            challenge: None,
        }
    }

    /// The same error with a `WWW-Authenticate` header.
    pub(crate) fn challenge(mut self, c: crate::auth::Challenge) -> ApiError {
        self.challenge = Some(c);
        self
    }

    /// The same error with a `Retry-After` header.
    pub(crate) fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds);
        self
    }

    /// The stable code.
    #[cfg(test)]
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        if let Some(c) = self.challenge {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, c.header());
        }
        resp
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        let msg = e.to_string();
        let (status, code) = match &e {
            BrokerError::UnknownTopicOrPartition { .. } => {
                (StatusCode::NOT_FOUND, "unknown_topic_or_partition")
            }
            BrokerError::TopicAlreadyExists(_) => (StatusCode::CONFLICT, "topic_already_exists"),
            BrokerError::InvalidTopic { .. } => (StatusCode::BAD_REQUEST, "invalid_topic"),
            BrokerError::InvalidPartitions(_) => (StatusCode::BAD_REQUEST, "invalid_partitions"),
            BrokerError::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
            BrokerError::Log(
                LogError::Batch(
                    BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. },
                )
                | LogError::RecordSetTooLarge { .. },
            ) => (StatusCode::PAYLOAD_TOO_LARGE, "message_too_large"),
            BrokerError::Log(LogError::OffsetOutOfRange { .. }) => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range")
            }
            BrokerError::Log(LogError::Closed) => {
                (StatusCode::NOT_FOUND, "unknown_topic_or_partition")
            }
            BrokerError::Log(LogError::Batch(BatchError::Corrupt(_))) => {
                (StatusCode::BAD_REQUEST, "corrupt_message")
            }
            BrokerError::Log(LogError::Batch(
                BatchError::Invalid(_)
                | BatchError::InvalidRecord { .. }
                | BatchError::UnsupportedMagic(_),
            )) => (StatusCode::BAD_REQUEST, "invalid_record"),
            BrokerError::InvalidTimestamp(_) => (StatusCode::BAD_REQUEST, "invalid_timestamp"),
            BrokerError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            // Cluster mode: the partition is led by another broker (its Kafka address is in
            // the message; the HTTP door does not forward yet).
            BrokerError::NotLeader { .. }
            | BrokerError::FencedLeaderEpoch { .. }
            | BrokerError::UnknownLeaderEpoch { .. } => {
                (StatusCode::MISDIRECTED_REQUEST, "not_leader_or_follower")
            }
            BrokerError::NotEnoughReplicas { .. }
            | BrokerError::NotEnoughReplicasAfterAppend { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_enough_replicas")
            }
            BrokerError::ReplicationTimeout { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "request_timed_out")
            }
            BrokerError::InvalidReplicationFactor(_) => {
                (StatusCode::BAD_REQUEST, "invalid_replication_factor")
            }
            BrokerError::InvalidReplicaAssignment(_) => {
                (StatusCode::BAD_REQUEST, "invalid_replica_assignment")
            }
            BrokerError::NoReassignmentInProgress { .. } => {
                (StatusCode::CONFLICT, "no_reassignment_in_progress")
            }
            BrokerError::ElectionNotPossible { .. } | BrokerError::Cluster(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable")
            }
            // Nothing was written; the same request succeeds once space is freed.
            e if e.is_out_of_space() => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
            // Until the broker restarts (a failed sync) or the damage is repaired.
            e if e.is_offline() => (StatusCode::SERVICE_UNAVAILABLE, "partition_offline"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        };
        ApiError::new(status, code, msg)
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The body of every refused request.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong: a stable code and a message naming the problem.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    code: String,
    message: String,
}

/// Parses a JSON body, turning every failure into a 4xx that names the problem.
pub(crate) fn parse_body<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                e.body_text(),
            )
        } else {
            ApiError::bad(e.body_text())
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(s): State<AppState>) -> Response {
    if *s.shutdown.borrow() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the broker is stopping",
        )
        .into_response();
    }
    Json(json!({"status": "ready", "topics": s.broker.topics().len()})).into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see /openapi.json)",
    )
}

#[utoipa::path(get, path = "/topics", responses((status = 200, description = "topics")))]
pub(crate) async fn list_topics(State(s): State<AppState>, caller: Caller) -> Json<Value> {
    let topics: Vec<Value> = s
        .broker
        .topics()
        .into_iter()
        .filter(|t| caller.may(&s, Operation::Describe, ResourceType::Topic, &t.name))
        .map(|t| json!({"name": t.name, "partitions": t.partitions, "internal": t.internal}))
        .collect();
    Json(json!({ "topics": topics }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTopic {
    name: String,
    #[serde(default = "minus_one")]
    partitions: i32,
    /// Cluster mode: replicas per partition (-1: the cluster's default).
    #[serde(default = "minus_one_i16")]
    replication_factor: i16,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

fn minus_one_i16() -> i16 {
    -1
}

fn minus_one() -> i32 {
    -1
}

#[utoipa::path(post, path = "/topics", request_body = CreateTopic,
    responses((status = 201, description = "created"), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_topic(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: CreateTopic = parse_body(body)?;
    caller.allow_create_topic(&s, &req.name)?;
    caller.quota_gate(&s, QuotaKind::ControllerMutation, 0)?;
    s.broker
        .admin_create_topic(
            &req.name,
            req.partitions,
            req.replication_factor,
            req.configs.into_iter().collect(),
        )
        .await?;
    let t = s
        .broker
        .topic(&req.name)
        .ok_or_else(|| ApiError::bad("topic vanished"))?;
    caller
        .quota_charge(&s, QuotaKind::ControllerMutation, t.partitions().len())
        .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": req.name, "partitions": t.partitions().len()})),
    )
        .into_response())
}

#[utoipa::path(get, path = "/topics/{topic}", params(("topic" = String, Path)),
    responses((status = 200, description = "partitions, offsets, configs, subscribers (open WebSocket subscriptions without a group and SSE streams of the topic)"), (status = 404, body = ErrorBody)))]
pub(crate) async fn describe_topic(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.allow(&s, Operation::Describe, ResourceType::Topic, &topic)?;
    let t = s
        .broker
        .topic(&topic)
        .ok_or(BrokerError::UnknownTopicOrPartition {
            topic: topic.clone(),
            partition: -1,
        })?;
    let partitions: Vec<Value> = t
        .partitions()
        .iter()
        .map(|p| match (p.log(), p.offline_reason()) {
            (Ok(log), None) => json!({
                "partition": p.index(),
                "log_start_offset": log.log_start_offset(),
                "log_end_offset": log.log_end_offset(),
                "size_bytes": log.size_bytes(),
            }),
            (_, reason) => json!({
                "partition": p.index(),
                "offline": reason.unwrap_or_default(),
            }),
        })
        .collect();
    let config = t.config();
    let configs: BTreeMap<&str, String> = strom_broker::config::TOPIC_CONFIGS
        .iter()
        .map(|d| {
            (
                d.name,
                config.get(d.name).map(|(v, _)| v).unwrap_or_default(),
            )
        })
        .collect();
    let id: String = t.id().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Json(
        json!({"name": topic, "id": id, "partitions": partitions, "configs": configs,
            "subscribers": s.metrics.subscribers_of(&topic)}),
    ))
}

#[utoipa::path(delete, path = "/topics/{topic}", params(("topic" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_topic(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
) -> ApiResult<StatusCode> {
    caller.allow(&s, Operation::Delete, ResourceType::Topic, &topic)?;
    caller.quota_gate(&s, QuotaKind::ControllerMutation, 0)?;
    let partitions = s.broker.topic(&topic).map_or(0, |t| t.partitions().len());
    s.broker.admin_delete_topic(&topic).await?;
    caller
        .quota_charge(&s, QuotaKind::ControllerMutation, partitions)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlterConfigs {
    /// `{"name": "value"}` sets a topic config, `{"name": null}` returns it to the default.
    #[schema(value_type = Object)]
    configs: BTreeMap<String, Option<String>>,
}

/// `PATCH /topics/{topic}/configs`: sets or resets topic configs, all or nothing (Kafka's
/// IncrementalAlterConfigs SET / DELETE).
#[utoipa::path(patch, path = "/topics/{topic}/configs", params(("topic" = String, Path)),
    request_body = AlterConfigs,
    responses((status = 200, description = "the topic, as GET /topics/{topic}"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn alter_configs(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: AlterConfigs = parse_body(body)?;
    caller.allow(&s, Operation::AlterConfigs, ResourceType::Topic, &topic)?;
    let ops: Vec<strom_broker::ConfigOp> = req
        .configs
        .into_iter()
        .map(|(k, v)| match v {
            Some(v) => strom_broker::ConfigOp::Set(k, v),
            None => strom_broker::ConfigOp::Delete(k),
        })
        .collect();
    s.broker
        .admin_alter_topic_config(&topic, &ops, false)
        .await?;
    describe_topic(State(s), caller, Path(topic)).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddPartitions {
    /// The new total number of partitions (larger than the current one).
    count: i32,
}

/// `POST /topics/{topic}/partitions`: grows a topic to `count` partitions (Kafka's
/// CreatePartitions).
#[utoipa::path(post, path = "/topics/{topic}/partitions", params(("topic" = String, Path)),
    request_body = AddPartitions,
    responses((status = 200, description = "the topic, as GET /topics/{topic}"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn add_partitions(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: AddPartitions = parse_body(body)?;
    caller.allow(&s, Operation::Alter, ResourceType::Topic, &topic)?;
    caller.quota_gate(&s, QuotaKind::ControllerMutation, 0)?;
    let before = s
        .broker
        .topic(&topic)
        .map_or(0, |t| t.partitions().len() as i32);
    s.broker.admin_create_partitions(&topic, req.count).await?;
    caller
        .quota_charge(
            &s,
            QuotaKind::ControllerMutation,
            (req.count - before).max(0) as usize,
        )
        .await;
    describe_topic(State(s), caller, Path(topic)).await
}

/// How a JSON field becomes bytes.
#[derive(Clone, Copy, Deserialize, Default, PartialEq, Eq, Hash, Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// A JSON string's UTF-8 bytes (other JSON values are refused).
    #[default]
    Text,
    /// Any JSON value, serialised.
    Json,
    /// A base64 string.
    Base64,
}

impl Format {
    pub(crate) fn encode(self, field: &str, v: &Value) -> ApiResult<Option<Vec<u8>>> {
        match (self, v) {
            (_, Value::Null) => Ok(None),
            (Format::Json, v) => Ok(Some(serde_json::to_vec(v).expect("a Value serialises"))),
            (Format::Text, Value::String(s)) => Ok(Some(s.as_bytes().to_vec())),
            (Format::Text, _) => Err(ApiError::bad(format!(
                "{field} must be a string with format text (use \"json\" for other JSON values)"
            ))),
            (Format::Base64, Value::String(s)) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Some)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_base64",
                        format!("{field}: {e}"),
                    )
                }),
            (Format::Base64, _) => Err(ApiError::bad(format!("{field} must be a base64 string"))),
        }
    }

    pub(crate) fn decode(self, b: Option<&[u8]>) -> Value {
        let Some(b) = b else { return Value::Null };
        match self {
            Format::Base64 => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            Format::Json => serde_json::from_slice(b)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into())),
            Format::Text => Value::String(String::from_utf8_lossy(b).into()),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InRecord {
    #[serde(default)]
    key: Value,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    headers: Option<Value>,
    #[serde(default)]
    partition: Option<i32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProduceBody {
    records: Vec<InRecord>,
    #[serde(default)]
    value_format: Format,
    #[serde(default)]
    key_format: Format,
}

/// Headers as `{"k": "v"}` or `[["k", "v"], ...]` (duplicates allowed); values are text.
fn headers(v: &Option<Value>) -> ApiResult<Vec<(String, Option<Vec<u8>>)>> {
    let as_bytes = |v: &Value| -> ApiResult<Option<Vec<u8>>> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
            _ => Err(ApiError::bad("header values must be strings or null")),
        }
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| Ok((k.clone(), as_bytes(v)?)))
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|pair| match pair {
                Value::Array(kv) if kv.len() == 2 && kv[0].is_string() => Ok((
                    kv[0].as_str().unwrap_or_default().to_string(),
                    as_bytes(&kv[1])?,
                )),
                _ => Err(ApiError::bad(
                    "headers as a list must be [[name, value], ...]",
                )),
            })
            .collect(),
        Some(_) => Err(ApiError::bad(
            "headers must be an object or a list of [name, value] pairs",
        )),
    }
}

/// One record prepared for a partition.
pub(crate) struct Prepared {
    index: usize,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

static ROUND_ROBIN: AtomicUsize = AtomicUsize::new(0);

#[utoipa::path(post, path = "/topics/{topic}/records", params(("topic" = String, Path)), request_body = ProduceBody,
    responses((status = 200, description = "each record's partition and offset (-1 for a record delayed by a strom.delay.ms / strom.deliver.at header; a duplicate by strom.msg.id gets its first copy's offset)"),
        (status = 400, body = ErrorBody, description = "invalid_record: a record that cannot be stored, or a strom.delay.ms / strom.deliver.at / strom.msg.id header that is invalid; nothing written"),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
/// Produces JSON records: one batch per partition; the answer lists each record's partition
/// and offset in request order. Every record is checked before anything is written. Record
/// headers `strom.delay.ms` / `strom.deliver.at` delay a record (offset -1 in the answer;
/// appended when due), `strom.msg.id` drops a repeat within `strom.dedup.window.ms`.
pub(crate) async fn produce(
    State(s): State<AppState>,
    caller: Caller,
    Path(topic): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    caller.allow(&s, Operation::Write, ResourceType::Topic, &topic)?;
    let req: ProduceBody = parse_body(body)?;
    let t = s
        .broker
        .topic(&topic)
        .ok_or(BrokerError::UnknownTopicOrPartition {
            topic: topic.clone(),
            partition: -1,
        })?;
    let rr = ROUND_ROBIN.fetch_add(1, Ordering::Relaxed) as i32;
    let prepared = prepare_produce(&req, &topic, t.partitions().len() as i32, rr)?;
    let mut out = vec![Value::Null; req.records.len()];
    let mut bytes_in = 0usize;
    let batches = prepared.batches(strom_log::now_ms());
    // A `strom.` header the core would refuse refuses the whole request before any
    // partition is written.
    let reserved = |r: &Prepared| {
        r.headers.iter().any(|(k, _)| {
            k.as_bytes()
                .starts_with(strom_records::RESERVED_HEADER_PREFIX)
        })
    };
    for (_, recs, batch) in &batches {
        if recs.iter().any(reserved) {
            s.broker.check_reserved(&topic, batch)?;
        }
    }
    let total: usize = batches.iter().map(|(_, _, b)| b.len()).sum();
    caller.quota_gate(&s, QuotaKind::Produce, total)?;
    for (partition, recs, batch) in batches {
        bytes_in += batch.len();
        let ack = s.broker.produce(&topic, partition, &batch).await?;
        for (i, r) in recs.iter().enumerate() {
            let offset = match &ack.record_offsets {
                Some(offsets) => offsets.get(i).copied().unwrap_or(-1),
                None => ack.base_offset + i as i64,
            };
            out[r.index] = json!({"partition": partition, "offset": offset});
        }
    }
    s.metrics.bytes_in(&topic, bytes_in);
    caller.quota_charge(&s, QuotaKind::Produce, bytes_in).await;
    Ok(Json(json!({ "offsets": out })))
}

/// A produce body's records, checked and placed in their partitions (request order kept
/// within each): nothing is written until every record has passed.
pub(crate) struct PreparedProduce {
    by_partition: BTreeMap<i32, Vec<Prepared>>,
}

/// Checks every record of `req` (formats, headers, partitions of a topic of `partitions`)
/// and places it: an explicit partition, its key's murmur2 partition, or round robin from
/// `rr` for keyless records.
pub(crate) fn prepare_produce(
    req: &ProduceBody,
    topic: &str,
    partitions: i32,
    rr: i32,
) -> ApiResult<PreparedProduce> {
    if req.records.is_empty() {
        return Err(ApiError::bad("records is empty"));
    }
    let n = partitions.max(1);
    let mut by_partition: BTreeMap<i32, Vec<Prepared>> = BTreeMap::new();
    for (i, r) in req.records.iter().enumerate() {
        let key = req
            .key_format
            .encode(&format!("records[{i}].key"), &r.key)?;
        let value = req
            .value_format
            .encode(&format!("records[{i}].value"), &r.value)?;
        let partition = match (r.partition, &key) {
            (Some(p), _) if p < 0 || p >= n => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_topic_or_partition",
                    format!(
                        "records[{i}].partition {p}: topic {topic} has partitions 0..{}",
                        n - 1
                    ),
                ))
            }
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, n),
            (None, None) => rr.rem_euclid(n),
        };
        let headers = headers(&r.headers)?;
        by_partition.entry(partition).or_default().push(Prepared {
            index: i,
            key,
            value,
            headers,
        });
    }
    Ok(PreparedProduce { by_partition })
}

impl PreparedProduce {
    /// One uncompressed batch per partition, stamped `now`, with the records it holds.
    pub(crate) fn batches(&self, now: i64) -> Vec<(i32, &[Prepared], Vec<u8>)> {
        self.by_partition
            .iter()
            .map(|(&partition, recs)| {
                let new: Vec<NewRecord<'_>> = recs
                    .iter()
                    .map(|r| NewRecord {
                        key: r.key.as_deref(),
                        value: r.value.as_deref(),
                        headers: r
                            .headers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_deref()))
                            .collect(),
                    })
                    .collect();
                (partition, recs.as_slice(), build_batch(now, &new))
            })
            .collect()
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct FetchQuery {
    #[serde(default)]
    offset: Option<i64>,
    /// Start at the first record stamped at or after this time (ms since the epoch) instead
    /// of at `offset`.
    #[serde(default)]
    time_ms: Option<i64>,
    #[serde(default)]
    max_bytes: Option<usize>,
    #[serde(default)]
    max_records: Option<usize>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    format: Format,
    /// `read_committed` (default): no record of an aborted or open transaction;
    /// `read_uncommitted`: every record up to the high watermark.
    #[serde(default)]
    isolation: IsolationParam,
}

/// The `isolation` query parameter of HTTP reads: `read_committed` (the default: no record
/// of an aborted or open transaction, nothing at or past the last stable offset) or
/// `read_uncommitted` (everything up to the high watermark).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IsolationParam {
    /// Committed records only.
    #[default]
    ReadCommitted,
    /// Every record.
    ReadUncommitted,
}

impl IsolationParam {
    pub(crate) fn core(self) -> strom_broker::Isolation {
        match self {
            IsolationParam::ReadCommitted => strom_broker::Isolation::ReadCommitted,
            IsolationParam::ReadUncommitted => strom_broker::Isolation::ReadUncommitted,
        }
    }
}

/// Stored records decoded into JSON, and the stored batches that could not be read.
#[derive(Debug, Default)]
pub(crate) struct JsonRecords {
    /// The records, oldest first.
    pub(crate) records: Vec<Value>,
    /// Each batch skipped because it could not be read, in order.
    pub(crate) errors: Vec<FetchError>,
    /// Where the next read starts: after the last record returned or the last batch
    /// skipped; `None` if nothing was read.
    pub(crate) next_offset: Option<i64>,
}

/// Decodes stored batches (any codec, through `strom_records`' bounded reader) into JSON
/// records from offset `from` on, at most `max`. Headers keep their order and duplicate
/// names; control batches hold no records. A batch that cannot be read (a bad CRC, bad
/// framing, undecodable compressed data) is skipped whole, logged, and reported in `errors`
/// with its base offset: a reader never stops at it.
pub(crate) fn records_json(data: &Bytes, from: i64, max: usize, format: Format) -> JsonRecords {
    records_json_committed(data, from, max, format, &[])
}

/// [`records_json`] of a read_committed fetch: the batches of its `aborted` transactions
/// (and control batches) are skipped, `next_offset` moving past them.
pub(crate) fn records_json_committed(
    data: &Bytes,
    from: i64,
    max: usize,
    format: Format,
    aborted: &[strom_broker::AbortedTxn],
) -> JsonRecords {
    let mut out = JsonRecords::default();
    let mut filter = strom_broker::AbortedFilter::new(aborted);
    for (h, batch) in strom_records::decode_batches(data) {
        if out.records.len() >= max {
            break;
        }
        let skip = filter.skip(&h);
        if h.last_offset() < from {
            continue;
        }
        if skip {
            out.next_offset = Some(h.last_offset() + 1);
            continue;
        }
        match batch {
            Err(bad) => {
                tracing::warn!(offset = bad.offset, error = %bad.error,
                    "a stored batch cannot be read: skipped");
                out.errors.push(FetchError {
                    offset: bad.offset,
                    message: bad.error.to_string(),
                    next_offset: bad.next_offset,
                });
                out.next_offset = Some(bad.next_offset);
            }
            Ok(records) => {
                let mut cut = false;
                for r in records.into_iter().filter(|r| r.offset >= from) {
                    if out.records.len() >= max {
                        cut = true;
                        break;
                    }
                    let headers: Vec<Value> = r
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            json!([
                                String::from_utf8_lossy(k),
                                v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())
                            ])
                        })
                        .collect();
                    out.records.push(json!({
                        "offset": r.offset,
                        "timestamp": r.timestamp,
                        "key": format.decode(r.key.as_deref()),
                        "value": format.decode(r.value.as_deref()),
                        "headers": headers,
                    }));
                    out.next_offset = Some(r.offset + 1);
                }
                if !cut {
                    out.next_offset = Some(h.last_offset() + 1);
                }
            }
        }
    }
    out
}

/// The answer of a fetch, as the OpenAPI document describes it (the answer itself is
/// serialised record by record within its buffer reservation, see `RecordsBody`).
#[derive(Serialize, ToSchema)]
pub(crate) struct FetchResponse {
    /// The records, oldest first: `{offset, timestamp, key, value, headers: [[name, value]]}`.
    #[schema(value_type = Vec<Object>)]
    records: Vec<Value>,
    /// Stored batches that could not be read (corrupt or invalid), skipped whole; the
    /// records after them are in `records`.
    errors: Vec<FetchError>,
    /// Where the next fetch starts: after the last record returned or batch skipped.
    next_offset: i64,
    /// The partition's high watermark.
    high_watermark: i64,
    /// The partition's last stable offset (first offset of its earliest open transaction,
    /// else the high watermark): a read_committed fetch returns nothing at or past it.
    last_stable_offset: i64,
    /// The partition's first offset.
    log_start_offset: i64,
}

/// A stored batch a reader skipped.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct FetchError {
    /// The batch's base offset.
    pub(crate) offset: i64,
    /// Why it cannot be read.
    pub(crate) message: String,
    /// The offset after it, where reading went on.
    #[serde(skip)]
    pub(crate) next_offset: i64,
}

#[utoipa::path(get, path = "/topics/{topic}/partitions/{partition}/records",
    params(("topic" = String, Path), ("partition" = i32, Path), FetchQuery),
    responses((status = 200, body = FetchResponse, description = "records, and the stored batches skipped; an answer is cut before the record that would take it past the connection's buffer bound (--http-connection-buffer-bytes): continue from next_offset"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 416, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "server_busy: answers waiting for slow readers hold the door's whole buffer (--http-buffer-bytes); see Retry-After",
            headers(("Retry-After" = u64, description = "seconds to wait before retrying")))))]
/// Fetches records of one partition from `offset`: `max_bytes` of stored batches at most
/// (clamped so that the answer fits one connection's buffer bound), `max_records`, waiting up
/// to `timeout_ms` for the first record.
pub(crate) async fn fetch(
    State(s): State<AppState>,
    caller: Caller,
    Path((topic, partition)): Path<(String, i32)>,
    query: Result<Query<FetchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.allow(&s, Operation::Read, ResourceType::Topic, &topic)?;
    caller.quota_gate(&s, QuotaKind::Fetch, 0)?;
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let p = s.broker.partition(&topic, partition)?;
    let offset = match (q.offset, q.time_ms) {
        (Some(_), Some(_)) => return Err(ApiError::bad("give offset or time_ms, not both")),
        (Some(o), None) => o,
        (None, Some(t)) if t < 0 => return Err(ApiError::bad("time_ms must be >= 0")),
        // The first record stamped at or after the time; none: the log end (nothing yet).
        (None, Some(t)) => match s.broker.list_offset(&topic, partition, t)? {
            (o, _) if o >= 0 => o,
            _ => p.log()?.log_end_offset(),
        },
        (None, None) => p.log()?.log_start_offset(),
    };
    let max_bytes = q
        .max_bytes
        .unwrap_or(1 << 20)
        .clamp(1, s.budget.max_stored_bytes());
    let max_records = q.max_records.unwrap_or(500).clamp(1, 100_000);
    let mut spec = FetchSpec {
        topic: topic.clone(),
        partition,
        offset,
        max_bytes,
    };
    let limits = FetchLimits {
        max_bytes,
        min_bytes: 1,
        max_wait: Duration::from_millis(q.timeout_ms.unwrap_or(0).min(30_000)),
    };
    // Wait for records without reading them, reserve the answer's bytes, then read.
    let isolation = q.isolation.core();
    let available = s
        .broker
        .fetch_available_isolated(std::slice::from_ref(&spec), limits, isolation)
        .await
        .remove(0)?;
    let mut reservation = s.budget.reserve(s.budget.estimate(available)).await?;
    spec.max_bytes = available.max(1);
    let now = FetchLimits {
        max_bytes: spec.max_bytes,
        min_bytes: 1,
        max_wait: Duration::ZERO,
    };
    let read = s
        .broker
        .fetch_isolated(std::slice::from_ref(&spec), now, false, isolation)
        .await
        .remove(0)?;
    let decoded = records_json_committed(&read.data, offset, max_records, q.format, &read.aborted);
    s.metrics.bytes_out(&topic, read.data.len());
    let fetched = read.data.len();
    drop(read.data);
    let mut body = RecordsBody::new(reservation.bytes());
    let mut next = offset;
    let mut full = false;
    for r in &decoded.records {
        if !body.push(r) {
            full = true;
            break;
        }
        next = r["offset"].as_i64().map_or(next, |o| o + 1);
    }
    if !full {
        next = decoded.next_offset.unwrap_or(next).max(next);
    }
    // Batches skipped before where the next fetch starts (later ones are told then).
    let errors: Vec<&FetchError> = decoded.errors.iter().filter(|e| e.offset < next).collect();
    let out = body.finish(&[
        ("errors", json!(errors)),
        ("next_offset", json!(next)),
        ("high_watermark", json!(read.high_watermark)),
        ("last_stable_offset", json!(read.last_stable_offset)),
        ("log_start_offset", json!(read.log_start_offset)),
    ]);
    if out.len() > reservation.bytes() {
        // A first record larger than the estimate.
        reservation.merge(s.budget.reserve(out.len() - reservation.bytes()).await?);
    }
    caller.quota_charge(&s, QuotaKind::Fetch, fetched).await;
    Ok(json_bytes(reservation.into_bytes(out)))
}

/// A 200 answer with a JSON body already serialised.
pub(crate) fn json_bytes(body: bytes::Bytes) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "this document")))]
pub(crate) async fn openapi() -> Json<Value> {
    Json(crate::openapi_document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_records::{build_compressed, stamp, wrap_records, Codec, NewRecord};

    fn at(mut b: Vec<u8>, base: i64) -> Vec<u8> {
        stamp(&mut b, base, 0, None);
        b
    }

    /// Good, bad (lz4 flag on uncompressed records), good (zstd): the bad batch is skipped,
    /// named by its offset, and `next_offset` moves past whatever was read.
    #[test]
    fn records_json_skips_a_bad_batch() {
        let rec = |v: &'static [u8]| NewRecord {
            key: Some(b"k"),
            value: Some(v),
            headers: vec![("h", Some(b"1"))],
        };
        let mut data = at(
            build_compressed(Codec::None, 5, &[rec(b"a"), rec(b"b")]).unwrap(),
            0,
        );
        let body = strom_records::encode_records(&[rec(b"x")]);
        data.extend(at(wrap_records(5, Codec::Lz4.id(), 1, &body), 2));
        data.extend(at(
            build_compressed(Codec::Zstd, 6, &[rec(b"c")]).unwrap(),
            3,
        ));
        let data = Bytes::from(data);
        let all = records_json(&data, 0, 100, Format::Text);
        let values: Vec<&str> = all
            .records
            .iter()
            .map(|r| r["value"].as_str().unwrap())
            .collect();
        assert_eq!(values, ["a", "b", "c"]);
        assert_eq!(all.records[2]["offset"], 3);
        assert_eq!(all.records[0]["headers"], json!([["h", "1"]]));
        assert_eq!(all.errors.len(), 1);
        assert_eq!((all.errors[0].offset, all.errors[0].next_offset), (2, 3));
        assert!(
            all.errors[0].message.contains("lz4"),
            "{}",
            all.errors[0].message
        );
        assert_eq!(all.next_offset, Some(4));
        // Cut by max_records inside the first batch: next is the record after the last one.
        let one = records_json(&data, 0, 1, Format::Text);
        assert_eq!((one.records.len(), one.next_offset), (1, Some(1)));
        // From inside the first batch: earlier records are left out.
        let from = records_json(&data, 1, 100, Format::Text);
        assert_eq!(from.records[0]["offset"], 1);
    }
}
