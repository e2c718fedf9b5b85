//! Push: Server-Sent Events (`/topics/{topic}/events`) and WebSocket (`/ws`). Both follow
//! partitions with the core's long-poll fetch, so a record is pushed as soon as it is appended.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};
use strom_broker::quota::QuotaKind;
use strom_broker::security::acl::{Operation, ResourceType};
use strom_broker::{Broker, FetchLimits, FetchSpec};
use tokio::sync::mpsc;
use utoipa::IntoParams;

use crate::api::{
    records_json_committed, ApiError, ApiResult, ErrorBody, FetchError, Format, IsolationParam,
};
use crate::budget::{Budget, Queued, QueuedBytes, Reservation};
use crate::AppState;

/// Stored bytes one push round reads per partition at most.
const PUSH_PARTITION_MAX_BYTES: usize = 1 << 20;
/// Stored bytes one push round reads at most (the connection's buffer bound may lower it).
const PUSH_ROUND_MAX_BYTES: usize = 4 << 20;

/// Where to start following.
fn start_offset(broker: &Broker, topic: &str, partition: i32, from: &str) -> ApiResult<i64> {
    let p = broker.partition(topic, partition)?;
    match from {
        "earliest" => Ok(p.log()?.log_start_offset()),
        "latest" | "" => Ok(p.log()?.log_end_offset()),
        n => n.parse::<i64>().map_err(|_| {
            ApiError::bad(format!(
                "from must be earliest, latest or an offset, not {n:?}"
            ))
        }),
    }
}

/// Cursor text `p:o,p:o` (the next offset of each partition) used as the SSE event id.
fn cursor_text(cursors: &BTreeMap<i32, i64>) -> String {
    cursors
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_cursor(s: &str) -> Option<BTreeMap<i32, i64>> {
    s.split(',')
        .map(|kv| {
            let (p, o) = kv.split_once(':')?;
            Some((p.trim().parse().ok()?, o.trim().parse().ok()?))
        })
        .collect()
}

/// What a follower pushes: a record, or a stored batch it skipped.
pub(crate) enum Pushed {
    /// `(partition, record as JSON)`.
    Record(i32, Value),
    /// A stored batch of this partition that could not be read: skipped, cursor past it.
    Skipped(i32, FetchError),
}

impl Pushed {
    /// The partition, the SSE event kind and the event's data.
    pub(crate) fn event(&self, topic: &str) -> (i32, &'static str, Value) {
        match self {
            Pushed::Record(p, rec) => (
                *p,
                "record",
                json!({"topic": topic, "partition": p, "record": rec}),
            ),
            Pushed::Skipped(p, e) => (
                *p,
                "error",
                json!({"topic": topic, "partition": p, "offset": e.offset, "message": e.message}),
            ),
        }
    }

    /// The WebSocket message.
    pub(crate) fn message(&self, topic: &str) -> Value {
        match self {
            Pushed::Record(p, rec) => json!({"type": "record", "topic": topic, "partition": p,
                "offset": rec["offset"], "timestamp": rec["timestamp"], "key": rec["key"],
                "value": rec["value"], "headers": rec["headers"]}),
            Pushed::Skipped(p, e) => json!({"type": "error", "topic": topic, "partition": p,
                "offset": e.offset, "message": e.message}),
        }
    }

    /// The partition and the offset of the record (of a skipped batch: its first).
    pub(crate) fn position(&self) -> (i32, i64) {
        match self {
            Pushed::Record(p, rec) => (*p, rec["offset"].as_i64().unwrap_or(-1)),
            Pushed::Skipped(p, e) => (*p, e.offset),
        }
    }

    /// Where the partition's cursor goes after this.
    pub(crate) fn next(&self) -> Option<(i32, i64)> {
        match self {
            Pushed::Record(p, rec) => rec["offset"].as_i64().map(|o| (*p, o + 1)),
            Pushed::Skipped(p, e) => Some((*p, e.next_offset)),
        }
    }
}

/// One long-poll round over `cursors`: records as `(partition, json)`, cursors advanced.
pub(crate) async fn poll_once(
    broker: &Broker,
    topic: &str,
    cursors: &mut BTreeMap<i32, i64>,
    wait: Duration,
    format: Format,
    max_bytes: usize,
    isolation: IsolationParam,
) -> ApiResult<Vec<Pushed>> {
    let max_bytes = max_bytes.clamp(1, PUSH_ROUND_MAX_BYTES);
    let specs: Vec<FetchSpec> = cursors
        .iter()
        .map(|(p, o)| FetchSpec {
            topic: topic.to_string(),
            partition: *p,
            offset: *o,
            max_bytes: PUSH_PARTITION_MAX_BYTES.min(max_bytes),
        })
        .collect();
    let limits = FetchLimits {
        max_bytes,
        min_bytes: 1,
        max_wait: wait,
    };
    let results = broker
        .fetch_isolated(&specs, limits, false, isolation.core())
        .await;
    let mut out = Vec::new();
    for (spec, r) in specs.iter().zip(results) {
        let read = match r {
            Ok(r) => r,
            Err(strom_broker::BrokerError::Log(strom_log::LogError::OffsetOutOfRange {
                start,
                ..
            })) => {
                // Retention moved past the cursor: continue from the oldest record kept.
                cursors.insert(spec.partition, start);
                continue;
            }
            // Offline until a restart: stop following it (asking again would answer at once,
            // every time), keep following the others.
            Err(e) if e.is_offline() => {
                cursors.remove(&spec.partition);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let decoded =
            records_json_committed(&read.data, spec.offset, usize::MAX, format, &read.aborted);
        if let Some(next) = decoded.next_offset {
            cursors.insert(spec.partition, next);
        }
        // Records and skipped batches in offset order.
        let mut errors = decoded.errors.into_iter().peekable();
        for rec in decoded.records {
            let o = rec["offset"].as_i64().unwrap_or(spec.offset);
            while let Some(e) = errors.next_if(|e| e.offset < o) {
                out.push(Pushed::Skipped(spec.partition, e));
            }
            out.push(Pushed::Record(spec.partition, rec));
        }
        out.extend(errors.map(|e| Pushed::Skipped(spec.partition, e)));
    }
    Ok(out)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SseQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    partition: Option<i32>,
    #[serde(default)]
    format: Format,
    /// `read_committed` (default): no record of an aborted or open transaction;
    /// `read_uncommitted`: every record up to the high watermark.
    #[serde(default)]
    isolation: IsolationParam,
}

/// `GET /topics/{topic}/events`: each record is an event `record` with JSON data and the id
/// `p:o,...` (every partition's next offset), so `Last-Event-ID` resumes exactly.
#[utoipa::path(get, path = "/topics/{topic}/events", params(("topic" = String, Path), SseQuery),
    responses((status = 200, description = "text/event-stream of records", content_type = "text/event-stream"),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn sse(
    State(s): State<AppState>,
    caller: crate::auth::Caller,
    Path(topic): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SseQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.allow(&s, Operation::Read, ResourceType::Topic, &topic)?;
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let t = s
        .broker
        .topic(&topic)
        .ok_or(strom_broker::BrokerError::UnknownTopicOrPartition {
            topic: topic.clone(),
            partition: -1,
        })?;
    let parts: Vec<i32> = match q.partition {
        Some(p) => {
            s.broker.partition(&topic, p)?;
            vec![p]
        }
        None => (0..t.partitions().len() as i32).collect(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_cursor);
    if q.partition.is_none()
        && resume.is_none()
        && matches!(q.from.as_deref(), None | Some("latest") | Some(""))
        && !caller.has_quota(&s, QuotaKind::Fetch)
    {
        return Ok(sse_shared(s, caller, topic, q.format, q.isolation));
    }
    let mut cursors = BTreeMap::new();
    for p in parts {
        // An offline partition is not followed: the stream serves the others.
        if s.broker.partition(&topic, p).is_ok_and(|p| !p.is_online()) {
            continue;
        }
        let o = match resume.as_ref().and_then(|r| r.get(&p)) {
            Some(o) => *o,
            None => start_offset(&s.broker, &topic, p, q.from.as_deref().unwrap_or("latest"))?,
        };
        cursors.insert(p, o);
    }
    s.metrics.sse_streams.fetch_add(1, Ordering::Relaxed);
    let guard = Gauge(
        s.metrics.clone(),
        Some(crate::metrics::subscriber(&s.metrics, &topic)),
    );
    let state = SseState {
        s,
        caller,
        topic,
        cursors,
        pending: Vec::new(),
        _gauge: guard,
        format: q.format,
        held: None,
        isolation: q.isolation,
    };
    let events = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop() {
                return Some((Ok::<Event, Infallible>(e), st));
            }
            st.held = None;
            if *st.s.shutdown.borrow() {
                return None;
            }
            let before = st.cursors.clone();
            let recs = poll_once(
                &st.s.broker,
                &st.topic,
                &mut st.cursors,
                Duration::from_secs(15),
                st.format,
                st.s.budget.max_stored_bytes(),
                st.isolation,
            )
            .await
            .ok()?;
            if recs.is_empty() {
                continue;
            }
            let events: Vec<(i32, &'static str, Value)> =
                recs.iter().map(|r| r.event(&st.topic)).collect();
            let bytes: usize = events.iter().map(|(_, _, d)| json_len(d)).sum();
            // consumer_byte_rate: a caller over it gets the round after the throttle.
            st.caller.quota_charge(&st.s, QuotaKind::Fetch, bytes).await;
            st.held = Some(st.s.budget.reserve(bytes).await.ok()?);
            // Each event's id is the cursor right after it, so a resume loses nothing (a
            // skipped batch moves the cursor past it).
            let mut running = before;
            let mut evs = Vec::with_capacity(recs.len());
            for (pushed, (_, kind, data)) in recs.iter().zip(events) {
                if let Some((p, next)) = pushed.next() {
                    running.insert(p, next);
                }
                evs.push(
                    Event::default()
                        .event(kind)
                        .id(cursor_text(&running))
                        .data(data.to_string()),
                );
            }
            evs.reverse();
            st.pending = evs;
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// An SSE stream from `latest` on the topic's shared tail (see `fanout`): each event's id is
/// the stream's cursor after it (its start offsets, moved by the events it got), so a resume
/// with `Last-Event-ID` continues exactly. A stream that does not keep up is ended by the tail.
fn sse_shared(
    s: AppState,
    caller: crate::auth::Caller,
    topic: String,
    format: Format,
    isolation: IsolationParam,
) -> Response {
    let (tx, rx) = mpsc::channel(s.config.ws_buffer_records.max(1));
    let queue = crate::fanout::SseQueue {
        tx,
        queued: QueuedBytes::default(),
        bound: s.budget.per_connection(),
    };
    let start = crate::fanout::subscribe_latest(
        &s,
        &topic,
        (format, isolation),
        crate::fanout::SubTx::Sse(queue),
    )
    .unwrap_or_default();
    s.metrics.sse_streams.fetch_add(1, Ordering::Relaxed);
    // Counted as the topic's subscriber by the tail, while it holds the stream.
    let gauge = Gauge(s.metrics.clone(), None);
    let events = stream::unfold((rx, start, gauge), move |(mut rx, mut cursors, gauge)| {
        let (s, caller) = (s.clone(), caller.clone());
        async move {
            let (m, queued) = rx.recv().await?;
            // consumer_byte_rate: a caller over it takes its next event after the throttle
            // (the tail ends a stream that falls too far behind meanwhile, as any slow one).
            caller
                .quota_charge(&s, QuotaKind::Fetch, m.text.len())
                .await;
            cursors.insert(m.partition, m.next);
            let event = Event::default()
                .event(m.kind)
                .id(cursor_text(&cursors))
                .data(m.text.as_str());
            drop(queued);
            Some((Ok::<Event, Infallible>(event), (rx, cursors, gauge)))
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// An SSE stream between events. A round's events hold a reservation of the door's buffer
/// until all are handed to hyper; a round that cannot get one ends the stream (the client
/// resumes with `Last-Event-ID`, losing nothing).
struct SseState {
    s: AppState,
    caller: crate::auth::Caller,
    topic: String,
    cursors: BTreeMap<i32, i64>,
    /// The round's events not yet yielded, last first.
    pending: Vec<Event>,
    _gauge: Gauge,
    format: Format,
    held: Option<Reservation>,
    isolation: IsolationParam,
}

/// An estimate of a record's JSON size (its value, key and headers dominate).
fn json_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().map(json_len).sum::<usize>() + 2,
        Value::Object(m) => {
            m.iter()
                .map(|(k, v)| k.len() + 4 + json_len(v))
                .sum::<usize>()
                + 2
        }
        _ => 20,
    }
}

/// Decrements the open-stream gauge (and the topic's subscriber count) when the stream ends.
struct Gauge(
    std::sync::Arc<crate::Metrics>,
    #[allow(dead_code)] Option<crate::metrics::Subscriber>,
);

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.sse_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum WsIn {
    Subscribe {
        topics: Vec<String>,
        #[serde(default)]
        from: Option<String>,
        #[serde(default)]
        format: Format,
        /// `read_committed` (default) or `read_uncommitted`.
        #[serde(default)]
        isolation: IsolationParam,
        /// Consume as a member of this consumer group (partitions shared with its other
        /// members, Kafka clients included; positions committed).
        #[serde(default)]
        group: Option<String>,
        /// For a group subscription: commit what was pushed after each round (default), or
        /// only when the client sends `{"op":"commit"}`.
        #[serde(default)]
        auto_commit: Option<bool>,
    },
    /// Commits the positions pushed so far by this socket's group subscriptions.
    Commit {},
    /// Receives from a share group: every record to one member at a time, acknowledged
    /// with `{"op":"ack"}` (the socket is a share member of its own).
    Queue {
        group: String,
        topics: Vec<String>,
        #[serde(default)]
        format: Format,
        /// Records pushed and not yet acknowledged at most (default 100).
        #[serde(default)]
        max_in_flight: Option<usize>,
    },
    /// Acknowledges a record pushed by a queue subscription.
    Ack {
        receipt: String,
        #[serde(default, rename = "type")]
        kind: Option<String>,
    },
    Produce {
        topic: String,
        records: Value,
        #[serde(default)]
        value_format: Option<Value>,
    },
}

/// Bytes a WebSocket reads from its socket at a time.
const WS_READ_BUFFER: usize = 1024;

/// `GET /ws`: JSON messages. In: `{"op":"subscribe","topics":["orders.*"],"from":"latest"}`,
/// `{"op":"produce","topic":"t","records":[...]}`. Out: `{"type":"record",...}`,
/// `{"type":"produced","offsets":[...]}`, `{"type":"error","message":...}`. A client that does
/// not keep up is closed with code 1013 once its buffer is full (with `--ws-slow-policy
/// skip-to-latest` it gets `{"type":"skipped","topic":...,"ranges":[{"partition","from","to"}]}`
/// instead, before its next record).
#[utoipa::path(get, path = "/ws", responses((status = 101, description = "WebSocket upgrade")))]
pub(crate) async fn websocket(
    State(s): State<AppState>,
    caller: crate::auth::Caller,
    ws: WebSocketUpgrade,
) -> Response {
    // Small buffers: an idle subscriber holds ~6 KB instead of tungstenite's 128 KiB read
    // buffer (zero-filled before each read) and its write buffer; a pushed message is written
    // at once (every send flushes anyway). Frames larger than the read buffer still arrive:
    // tungstenite grows its input as a frame needs, up to `max_message_size`.
    ws.max_message_size(s.config.max_body_bytes)
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| ws_session(s, caller, socket))
}

/// The existing topics `patterns` name that `caller` may read: a glob matches only those,
/// a topic named exactly that `caller` may not read is an error.
fn readable(
    s: &AppState,
    caller: &crate::auth::Caller,
    patterns: &[String],
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (name, named) in s.broker.topics_matching(patterns) {
        if caller.may(s, Operation::Read, ResourceType::Topic, &name) {
            out.push(name);
        } else if named {
            return Err(format!("{} may not READ TOPIC {name:?}", caller.principal));
        }
    }
    Ok(out)
}

async fn ws_session(s: AppState, caller: crate::auth::Caller, mut socket: WebSocket) {
    s.metrics.websockets.fetch_add(1, Ordering::Relaxed);
    // Boxed: the channel allocates its slots 32 at a time, and an idle subscriber's queue is
    // then 32 pointers instead of 32 messages.
    let (tx, mut rx) = mpsc::channel::<Box<Push>>(s.config.ws_buffer_records.max(1));
    let tx = PushQueue {
        tx,
        queued: QueuedBytes::default(),
        budget: s.budget.clone(),
        quota: (s.broker.clone(), caller.clone()),
    };
    let (overflow_tx, mut overflow_rx) = mpsc::channel::<()>(1);
    let mut followers = Vec::new();
    // Group followers are not aborted: they notice the closed channel and leave the group.
    let mut members = Vec::new();
    let mut commit_txs: Vec<mpsc::Sender<tokio::sync::oneshot::Sender<Value>>> = Vec::new();
    // Queue subscriptions by group, and their tasks (they leave the group when the socket
    // closes).
    let mut queues: BTreeMap<String, std::sync::Arc<crate::queues::WsQueue>> = BTreeMap::new();
    // Keepalive: a ping every interval (tokio's timer wheel, one entry per socket); a client
    // silent for two intervals (a dead peer, a closed laptop) is closed.
    let period = s.config.ws_ping_interval;
    let pinging = !period.is_zero();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + period.max(Duration::from_millis(1)),
        period.max(Duration::from_millis(1)),
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    // consumer_byte_rate: after a shared tail's record put the caller over its quota, no
    // push is written until this passes (the client's messages and pings are still served;
    // a tail's subscriber whose queue fills meanwhile is a slow one). The socket's own
    // followers wait out their throttle before queueing (`PushQueue::push`).
    let mut muted: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { break };
                heard = tokio::time::Instant::now();
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let reply = match serde_json::from_str::<WsIn>(&text) {
                    Err(e) => json!({"type": "error", "message": format!("invalid message: {e}")}),
                    Ok(WsIn::Commit {}) => {
                        let mut waiting = Vec::new();
                        for c in &commit_txs {
                            let (one_tx, one_rx) = tokio::sync::oneshot::channel();
                            if c.send(one_tx).await.is_ok() {
                                waiting.push(one_rx);
                            }
                        }
                        let mut results = Vec::new();
                        for w in waiting {
                            results.push(w.await.unwrap_or_else(|_| json!({"error": "the subscription ended"})));
                        }
                        json!({"type": "committed", "groups": results})
                    }
                    Ok(WsIn::Queue { group, topics, format, max_in_flight }) => {
                        let matched = readable(&s, &caller, &topics);
                        let max = max_in_flight.unwrap_or(crate::queues::WS_IN_FLIGHT_DEFAULT);
                        if let Err(why) = &matched {
                            json!({"type": "error", "code": "forbidden", "message": why})
                        } else if !caller.may(&s, Operation::Read, ResourceType::Group, &group) {
                            json!({"type": "error", "code": "forbidden", "message": format!("{} may not READ GROUP {group:?}", caller.principal)})
                        } else if matched.as_ref().is_ok_and(Vec::is_empty) {
                            json!({"type": "error", "message": "no topic matches"})
                        } else if group.is_empty() || queues.contains_key(&group) {
                            json!({"type": "error", "message": "one queue subscription per group and socket, with a non-empty group"})
                        } else if max == 0 || max > 10_000 {
                            json!({"type": "error", "message": "max_in_flight must be in [1, 10000]"})
                        } else {
                            let matched = matched.unwrap_or_default();
                            let q = std::sync::Arc::new(crate::queues::WsQueue {
                                member_id: format!("strom-ws-{}", crate::queues::random_hex()),
                                in_flight: Default::default(),
                                acked: Default::default(),
                            });
                            queues.insert(group.clone(), q.clone());
                            members.push(tokio::spawn(crate::queues::follow_queue(
                                s.clone(), crate::queues::QueueSub { group: group.clone(), topics: matched.clone(), format, max_in_flight: max },
                                q, tx.clone(), overflow_tx.clone())));
                            json!({"type": "subscribed", "topics": matched, "queue": group})
                        }
                    }
                    Ok(WsIn::Ack { receipt, kind }) => {
                        let kind = crate::queues::ack_type(kind.as_deref());
                        let group = crate::queues::Receipt::decode(&receipt).map(|r| r.group);
                        match group.as_ref().and_then(|g| queues.get(g)) {
                            None => json!({"type": "acked", "results": [{"receipt": receipt, "ok": false,
                                "error": {"code": "invalid_receipt", "message": "not a receipt of this socket's queue subscriptions"}}]}),
                            Some(q) => {
                                let counts = matches!(kind, Ok(k) if k != strom_broker::share::AckType::Renew);
                                let g = group.clone().unwrap_or_default();
                                match Box::pin(crate::queues::apply_acks(&s.shares, &g, &q.member_id, vec![(receipt, kind)])).await {
                                    Ok((results, _)) => {
                                        if counts && results.iter().any(|r| r["ok"] == json!(true)) {
                                            let _ = q.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(1)));
                                            q.acked.notify_one();
                                        }
                                        json!({"type": "acked", "results": results})
                                    }
                                    Err(e) => json!({"type": "error", "message": e.to_string()}),
                                }
                            }
                        }
                    }
                    Ok(WsIn::Subscribe { topics, from, format, isolation, group, auto_commit }) => {
                        let from = from.unwrap_or_else(|| "latest".into());
                        match readable(&s, &caller, &topics) {
                        Err(why) => json!({"type": "error", "code": "forbidden", "message": why}),
                        Ok(matched) => if let Some(group) = group {
                            if !caller.may(&s, Operation::Read, ResourceType::Group, &group) {
                                json!({"type": "error", "code": "forbidden", "message": format!("{} may not READ GROUP {group:?}", caller.principal)})
                            } else if matched.is_empty() {
                                json!({"type": "error", "message": "no topic matches"})
                            } else {
                                let (commit_tx, commit_rx) = mpsc::channel(4);
                                commit_txs.push(commit_tx);
                                let sub = crate::groups::GroupSubscription {
                                    group: group.clone(),
                                    topics: matched.clone(),
                                    from_earliest: from == "earliest",
                                    format,
                                    isolation,
                                    auto_commit: auto_commit.unwrap_or(true),
                                };
                                members.push(tokio::spawn(crate::groups::follow_as_member(
                                    s.clone(), sub, commit_rx, tx.clone(), overflow_tx.clone())));
                                json!({"type": "subscribed", "topics": matched, "group": group})
                            }
                        } else {
                        let mut count = 0;
                        // A caller under a consumer quota follows at its own pace: on a
                        // shared tail it would be a slow subscriber.
                        let shared = from == "latest" && !caller.has_quota(&s, QuotaKind::Fetch);
                        for name in &matched {
                            if shared {
                                // The chat case: one shared follower for every such
                                // subscriber of the topic (see `fanout`).
                                let sub = crate::fanout::SubTx::Ws { tx: tx.clone(), overflow: overflow_tx.clone() };
                                count += crate::fanout::subscribe_latest(&s, name, (format, isolation), sub)
                                    .map_or(0, |start| start.len());
                                continue;
                            }
                            let Some(t) = s.broker.topic(name) else { continue };
                            let mut cursors = BTreeMap::new();
                            for p in 0..t.partitions().len() as i32 {
                                if let Ok(o) = start_offset(&s.broker, name, p, &from) {
                                    cursors.insert(p, o);
                                }
                            }
                            count += cursors.len();
                            followers.push(tokio::spawn(follow(s.clone(), name.clone(), cursors, (format, isolation), tx.clone(), overflow_tx.clone())));
                        }
                        json!({"type": "subscribed", "topics": matched, "partitions": count})
                        }
                        }
                    }
                    Ok(WsIn::Produce { topic, records, value_format }) => {
                        let mut body = json!({"records": records});
                        if let Some(f) = value_format {
                            body["value_format"] = f;
                        }
                        let bytes = axum::body::Bytes::from(body.to_string());
                        match Box::pin(crate::api::produce(axum::extract::State(s.clone()), caller.clone(), Path(topic), Ok(bytes))).await {
                            Ok(axum::Json(v)) => json!({"type": "produced", "offsets": v["offsets"]}),
                            Err(e) => json!({"type": "error", "message": format!("{e:?}")}),
                        }
                    }
                };
                if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                    break;
                }
            }
            () = async { muted.as_mut().expect("muted").await }, if muted.is_some() => {
                muted = None;
            }
            Some(push) = rx.recv(), if muted.is_none() => {
                let Push { text, held } = *push;
                let shared = matches!(held, Some((Held::Shared(_), _))).then_some(text.len());
                if socket.send(Message::Text(text)).await.is_err() {
                    break;
                }
                drop(held);
                if let Some(bytes) = shared {
                    let t = caller.quota_debit(&s, QuotaKind::Fetch, bytes);
                    if !t.is_zero() {
                        muted = Some(Box::pin(tokio::time::sleep(t)));
                    }
                }
            }
            Some(()) = overflow_rx.recv() => {
                let frame = CloseFrame { code: 1013, reason: "client too slow: push buffer full".into() };
                let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
                break;
            }
            _ = ping.tick(), if pinging => {
                if heard.elapsed() >= period * 2 {
                    let frame = CloseFrame { code: 1001, reason: "no pong: the client is gone".into() };
                    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
                    break;
                }
                if tokio::time::timeout(period, socket.send(Message::Ping(Default::default()))).await.map_or(true, |r| r.is_err()) {
                    break;
                }
            }
        }
    }
    for f in followers {
        f.abort();
    }
    drop(rx);
    for m in members {
        let _ = tokio::time::timeout(Duration::from_secs(5), m).await;
    }
    s.metrics.websockets.fetch_sub(1, Ordering::Relaxed);
}

async fn follow(
    s: AppState,
    topic: String,
    mut cursors: BTreeMap<i32, i64>,
    (format, isolation): (Format, IsolationParam),
    tx: PushQueue,
    overflow: mpsc::Sender<()>,
) {
    let _counted = crate::metrics::subscriber(&s.metrics, &topic);
    while !*s.shutdown.borrow() {
        let Ok(recs) = poll_once(
            &s.broker,
            &topic,
            &mut cursors,
            Duration::from_secs(5),
            format,
            s.budget.max_stored_bytes(),
            isolation,
        )
        .await
        else {
            return;
        };
        for (i, pushed) in recs.iter().enumerate() {
            if tx.push(pushed.message(&topic)).await {
                continue;
            }
            if s.config.ws_slow_policy != crate::SlowPolicy::SkipToLatest {
                let _ = overflow.try_send(());
                return;
            }
            // Skip to the log end: once the socket has written what it holds, say which
            // ranges were skipped (from the record that did not fit) and go on from there.
            let mut from: BTreeMap<i32, i64> = BTreeMap::new();
            for p in &recs[i..] {
                let (part, offset) = p.position();
                from.entry(part).or_insert(offset);
            }
            while !tx.is_drained() {
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(SKIP_DRAIN_POLL).await;
            }
            let mut ranges = Vec::new();
            for (p, o) in cursors.iter_mut() {
                let Ok(end) = s
                    .broker
                    .partition(&topic, *p)
                    .and_then(|p| Ok(p.log()?.log_end_offset()))
                else {
                    continue;
                };
                let first = from.get(p).copied().unwrap_or(*o).min(*o);
                if end > first {
                    ranges.push(json!({"partition": p, "from": first, "to": end}));
                }
                *o = end;
            }
            if !tx.notice(json!({"type": "skipped", "topic": topic, "ranges": ranges})) {
                return;
            }
            break;
        }
    }
}

/// How long a close frame may wait for room in a socket that is not read any more.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a skipping follower looks whether its socket has drained.
const SKIP_DRAIN_POLL: Duration = Duration::from_millis(20);

/// A message for a WebSocket, with the buffer bytes it holds until it is sent.
pub(crate) struct Push {
    text: Utf8Bytes,
    held: Option<(Held, Queued)>,
}

/// What a queued record holds of the door's buffer: its own reservation, or its part of a
/// message shared by a tail's subscribers (given back when the last one has sent it).
enum Held {
    Own(#[allow(dead_code)] Reservation),
    Shared(#[allow(dead_code)] std::sync::Arc<crate::fanout::Shared>),
}

/// A WebSocket's outgoing queue: at most `ws_buffer_records` messages, and records' bytes
/// bounded by the connection's share of the door's buffer and by the buffer itself.
#[derive(Clone)]
pub(crate) struct PushQueue {
    tx: mpsc::Sender<Box<Push>>,
    queued: QueuedBytes,
    budget: std::sync::Arc<Budget>,
    /// Whose consumer_byte_rate the socket's records are charged to.
    quota: (std::sync::Arc<Broker>, crate::auth::Caller),
}

impl PushQueue {
    /// A control message (subscribed, assigned, error): small, waits for room.
    pub(crate) async fn send(&self, v: Value) -> bool {
        let push = Push {
            text: v.to_string().into(),
            held: None,
        };
        self.tx.send(Box::new(push)).await.is_ok()
    }

    /// A record; false when the subscriber does not keep up (its queue is full, in
    /// messages or bytes) or the door's buffer stayed exhausted for `BUDGET_WAIT`.
    pub(crate) async fn push(&self, v: Value) -> bool {
        let text = v.to_string();
        // consumer_byte_rate: a caller over it gets this record after the throttle.
        let (broker, caller) = &self.quota;
        let t = crate::auth::debit(broker, &caller.principal, QuotaKind::Fetch, text.len());
        if !t.is_zero() {
            tokio::time::sleep(t).await;
        }
        let Some(queued) = self.queued.add(text.len(), self.budget.per_connection()) else {
            return false;
        };
        let Ok(reserved) = self.budget.reserve(text.len()).await else {
            return false;
        };
        let push = Push {
            text: text.into(),
            held: Some((Held::Own(reserved), queued)),
        };
        self.tx.try_send(Box::new(push)).is_ok()
    }

    /// A record of a shared tail; false when the subscriber does not keep up.
    pub(crate) fn push_shared(&self, m: std::sync::Arc<crate::fanout::Shared>) -> bool {
        let Some(queued) = self.queued.add(m.text.len(), self.budget.per_connection()) else {
            return false;
        };
        let push = Push {
            text: m.text.clone(),
            held: Some((Held::Shared(m), queued)),
        };
        self.tx.try_send(Box::new(push)).is_ok()
    }

    /// Whether the socket's session has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether everything queued has been written to the socket.
    pub(crate) fn is_drained(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity() && self.queued.get() == 0
    }

    /// A control message that must not wait (a drained queue has room for it).
    pub(crate) fn notice(&self, v: Value) -> bool {
        let push = Push {
            text: v.to_string().into(),
            held: None,
        };
        self.tx.try_send(Box::new(push)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        let c = parse_cursor("0:5,2:9").unwrap();
        assert_eq!(cursor_text(&c), "0:5,2:9");
        assert!(parse_cursor("zz").is_none());
    }
}
