//! Push: Server-Sent Events (`/topics/{topic}/events`) and WebSocket (`/ws`). Both follow
//! partitions with the core's long-poll fetch, so a record is pushed as soon as it is appended.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};
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
enum Pushed {
    /// `(partition, record as JSON)`.
    Record(i32, Value),
    /// A stored batch of this partition that could not be read: skipped, cursor past it.
    Skipped(i32, FetchError),
}

impl Pushed {
    /// The partition, the SSE event kind and the event's data.
    fn event(&self, topic: &str) -> (i32, &'static str, Value) {
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
    fn message(&self, topic: &str) -> Value {
        match self {
            Pushed::Record(p, rec) => json!({"type": "record", "topic": topic, "partition": p,
                "offset": rec["offset"], "timestamp": rec["timestamp"], "key": rec["key"],
                "value": rec["value"], "headers": rec["headers"]}),
            Pushed::Skipped(p, e) => json!({"type": "error", "topic": topic, "partition": p,
                "offset": e.offset, "message": e.message}),
        }
    }

    /// Where the partition's cursor goes after this.
    fn next(&self) -> Option<(i32, i64)> {
        match self {
            Pushed::Record(p, rec) => rec["offset"].as_i64().map(|o| (*p, o + 1)),
            Pushed::Skipped(p, e) => Some((*p, e.next_offset)),
        }
    }
}

/// One long-poll round over `cursors`: records as `(partition, json)`, cursors advanced.
async fn poll_once(
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
    Path(topic): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SseQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
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
    let mut cursors = BTreeMap::new();
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_cursor);
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
    let guard = Gauge(s.metrics.clone());
    let state = SseState {
        s,
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

/// An SSE stream between events. A round's events hold a reservation of the door's buffer
/// until all are handed to hyper; a round that cannot get one ends the stream (the client
/// resumes with `Last-Event-ID`, losing nothing).
struct SseState {
    s: AppState,
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

/// Decrements the open-stream gauge when the stream ends.
struct Gauge(std::sync::Arc<crate::Metrics>);

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.sse_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    name.is_char_boundary(head.len() + i) && glob(rest, &name[head.len() + i..])
                })
        }
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

/// `GET /ws`: JSON messages. In: `{"op":"subscribe","topics":["orders.*"],"from":"latest"}`,
/// `{"op":"produce","topic":"t","records":[...]}`. Out: `{"type":"record",...}`,
/// `{"type":"produced","offsets":[...]}`, `{"type":"error","message":...}`. A client that does
/// not keep up is closed with code 1013 once its buffer is full.
#[utoipa::path(get, path = "/ws", responses((status = 101, description = "WebSocket upgrade")))]
pub(crate) async fn websocket(State(s): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(s.config.max_body_bytes)
        .on_upgrade(move |socket| ws_session(s, socket))
}

async fn ws_session(s: AppState, mut socket: WebSocket) {
    s.metrics.websockets.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Push>(s.config.ws_buffer_records.max(1));
    let tx = PushQueue {
        tx,
        queued: QueuedBytes::default(),
        budget: s.budget.clone(),
    };
    let (overflow_tx, mut overflow_rx) = mpsc::channel::<()>(1);
    let mut followers = Vec::new();
    // Group followers are not aborted: they notice the closed channel and leave the group.
    let mut members = Vec::new();
    let mut commit_txs: Vec<mpsc::Sender<tokio::sync::oneshot::Sender<Value>>> = Vec::new();
    // Queue subscriptions by group, and their tasks (they leave the group when the socket
    // closes).
    let mut queues: BTreeMap<String, std::sync::Arc<crate::queues::WsQueue>> = BTreeMap::new();
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { break };
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
                        let matched: Vec<String> = s.broker.topics().into_iter().map(|t| t.name)
                            .filter(|n| topics.iter().any(|p| glob(p, n))).collect();
                        let max = max_in_flight.unwrap_or(crate::queues::WS_IN_FLIGHT_DEFAULT);
                        if matched.is_empty() {
                            json!({"type": "error", "message": "no topic matches"})
                        } else if group.is_empty() || queues.contains_key(&group) {
                            json!({"type": "error", "message": "one queue subscription per group and socket, with a non-empty group"})
                        } else if max == 0 || max > 10_000 {
                            json!({"type": "error", "message": "max_in_flight must be in [1, 10000]"})
                        } else {
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
                                match crate::queues::apply_acks(&s.shares, &g, &q.member_id, vec![(receipt, kind)]).await {
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
                        let matched: Vec<String> = s.broker.topics().into_iter().map(|t| t.name)
                            .filter(|n| topics.iter().any(|p| glob(p, n))).collect();
                        if let Some(group) = group {
                            if matched.is_empty() {
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
                        for name in &matched {
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
                    Ok(WsIn::Produce { topic, records, value_format }) => {
                        let mut body = json!({"records": records});
                        if let Some(f) = value_format {
                            body["value_format"] = f;
                        }
                        let bytes = axum::body::Bytes::from(body.to_string());
                        match crate::api::produce(axum::extract::State(s.clone()), Path(topic), Ok(bytes)).await {
                            Ok(axum::Json(v)) => json!({"type": "produced", "offsets": v["offsets"]}),
                            Err(e) => json!({"type": "error", "message": format!("{e:?}")}),
                        }
                    }
                };
                if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                    break;
                }
            }
            Some(push) = rx.recv() => {
                let Push { text, held } = push;
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
                drop(held);
            }
            Some(()) = overflow_rx.recv() => {
                let frame = CloseFrame { code: 1013, reason: "client too slow: push buffer full".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                break;
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
        for pushed in recs {
            if !tx.push(pushed.message(&topic)).await {
                let _ = overflow.try_send(());
                return;
            }
        }
    }
}

/// A message for a WebSocket, with the buffer bytes it holds until it is sent.
pub(crate) struct Push {
    text: String,
    held: Option<(Reservation, Queued)>,
}

/// A WebSocket's outgoing queue: at most `ws_buffer_records` messages, and records' bytes
/// bounded by the connection's share of the door's buffer and by the buffer itself.
#[derive(Clone)]
pub(crate) struct PushQueue {
    tx: mpsc::Sender<Push>,
    queued: QueuedBytes,
    budget: std::sync::Arc<Budget>,
}

impl PushQueue {
    /// A control message (subscribed, assigned, error): small, waits for room.
    pub(crate) async fn send(&self, v: Value) -> bool {
        let push = Push {
            text: v.to_string(),
            held: None,
        };
        self.tx.send(push).await.is_ok()
    }

    /// A record; false when the subscriber does not keep up (its queue is full, in
    /// messages or bytes) or the door's buffer stayed exhausted for `BUDGET_WAIT`.
    pub(crate) async fn push(&self, v: Value) -> bool {
        let text = v.to_string();
        let Some(queued) = self.queued.add(text.len(), self.budget.per_connection()) else {
            return false;
        };
        let Ok(reserved) = self.budget.reserve(text.len()).await else {
            return false;
        };
        let push = Push {
            text,
            held: Some((reserved, queued)),
        };
        self.tx.try_send(push).is_ok()
    }

    /// Whether the socket's session has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_cursors() {
        assert!(glob("orders.*", "orders.eu"));
        assert!(glob("*", "x"));
        assert!(glob("a*c", "abbc"));
        assert!(!glob("orders.*", "order"));
        assert!(!glob("a", "ab"));
        let c = parse_cursor("0:5,2:9").unwrap();
        assert_eq!(cursor_text(&c), "0:5,2:9");
        assert!(parse_cursor("zz").is_none());
    }
}
