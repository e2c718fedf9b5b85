//! Shared tails: one follower per (topic, format, isolation, WebSocket or SSE) for every
//! subscriber that starts from `latest` (WebSocket without a group; SSE without a partition
//! or `Last-Event-ID`): the chat / live-update case, instead of one follower per subscriber.
//!
//! A [`Tail`] reads the topic's new records with the core's long-poll fetch once, encodes
//! each record's WebSocket message (or SSE event data) once (a [`Shared`] holding the
//! door-buffer reservation of its bytes), and hands an `Arc` of it to every subscriber's push
//! queue. A subscriber's queue is bounded as before (messages and bytes): a WebSocket that does
//! not keep up is closed with 1013, an SSE stream is ended (its client resumes exactly with
//! `Last-Event-ID`, on a follower of its own); the others are not slowed. The reservation is given back when the last subscriber has
//! written the message, so the door's buffer counts the bytes once, as they are held once.
//!
//! Exactness: a subscriber's start offsets (each partition's log end) are taken under the
//! tail's subscriber lock, and a tail hands out a round's messages under the same lock, so a
//! record appended after the subscribe is never missed; the messages of records before the
//! start (the tail may be behind the log end) are filtered out per subscriber.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{Format, IsolationParam};
use crate::budget::{Queued, QueuedBytes, Reservation};
use crate::push::{poll_once, PushQueue};
use crate::AppState;

/// How long one round of a tail waits for new records before it looks at its subscribers
/// again (the ones whose socket closed are dropped then, and an empty tail ends).
const TAIL_WAIT: Duration = Duration::from_secs(1);

/// A record's WebSocket message, encoded once for all subscribers of a tail.
pub(crate) struct Shared {
    pub(crate) partition: i32,
    /// The record's offset (of a skipped batch: its first offset).
    pub(crate) offset: i64,
    /// The partition's next offset after this (the SSE event id's part).
    pub(crate) next: i64,
    /// The SSE event kind: `record`, or `error` for a stored batch that was skipped.
    pub(crate) kind: &'static str,
    pub(crate) text: Utf8Bytes,
    _held: Option<Reservation>,
}

/// Where a tail hands its messages: a WebSocket's push queue, or an SSE stream's.
pub(crate) enum SubTx {
    Ws {
        tx: PushQueue,
        overflow: mpsc::Sender<()>,
    },
    Sse(SseQueue),
}

/// An SSE stream's queue of shared events, bounded in messages (its channel) and bytes.
pub(crate) struct SseQueue {
    pub(crate) tx: mpsc::Sender<(Arc<Shared>, Queued)>,
    pub(crate) queued: QueuedBytes,
    pub(crate) bound: usize,
}

impl SubTx {
    fn is_closed(&self) -> bool {
        match self {
            SubTx::Ws { tx, .. } => tx.is_closed(),
            SubTx::Sse(q) => q.tx.is_closed(),
        }
    }

    /// Queues `m`; false when the subscriber does not keep up.
    fn push(&self, m: &Arc<Shared>) -> bool {
        match self {
            SubTx::Ws { tx, .. } => tx.push_shared(m.clone()),
            SubTx::Sse(q) => match q.queued.add(m.text.len(), q.bound) {
                Some(queued) => q.tx.try_send((m.clone(), queued)).is_ok(),
                None => false,
            },
        }
    }

    /// A WebSocket whose queue has been written out: a `skipped` notice can go now.
    fn drained_ws(&self) -> Option<&PushQueue> {
        match self {
            SubTx::Ws { tx, .. } if tx.is_drained() => Some(tx),
            _ => None,
        }
    }

    /// Tells the subscriber it is dropped as too slow (a WebSocket is closed with 1013; an SSE
    /// stream ends when its queue's sender is dropped).
    fn overflow(&self) {
        if let SubTx::Ws { overflow, .. } = self {
            let _ = overflow.try_send(());
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TailKey {
    topic: String,
    /// A topic that gained partitions gets a new tail (the old one follows the old set).
    partitions: usize,
    format: Format,
    isolation: IsolationParam,
    sse: bool,
}

/// One subscriber of a tail.
struct Sub {
    tx: SubTx,
    /// The first offset to push, per partition followed.
    start: BTreeMap<i32, i64>,
    /// With `--ws-slow-policy skip-to-latest`, while the subscriber's queue is full: the
    /// offsets skipped per partition, `[from, to)`.
    skipping: Option<BTreeMap<i32, (i64, i64)>>,
    _counted: crate::metrics::Subscriber,
}

struct Tail {
    subs: Mutex<Vec<Sub>>,
}

/// The door's tails, by topic, format and isolation.
#[derive(Default)]
pub(crate) struct Tails {
    map: Mutex<HashMap<TailKey, Arc<Tail>>>,
}

/// Counts a running tail in the door's metrics.
struct Running(Arc<crate::Metrics>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0
            .ws_tails
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Subscribes to `topic` from its end, through the topic's shared tail (started if there is
/// none). The start offset of each partition followed, or `None` if the topic is gone.
pub(crate) fn subscribe_latest(
    s: &AppState,
    topic: &str,
    (format, isolation): (Format, IsolationParam),
    tx: SubTx,
) -> Option<BTreeMap<i32, i64>> {
    let t = s.broker.topic(topic)?;
    let key = TailKey {
        topic: topic.to_string(),
        partitions: t.partitions().len(),
        format,
        isolation,
        sse: matches!(tx, SubTx::Sse(_)),
    };
    let ends = || -> BTreeMap<i32, i64> {
        t.partitions()
            .iter()
            .filter_map(|p| Some((p.index(), p.log().ok()?.log_end_offset())))
            .collect()
    };
    let mut map = s.tails.map.lock();
    let tail = match map.get(&key) {
        Some(tail) => tail.clone(),
        None => {
            let tail = Arc::new(Tail {
                subs: Mutex::new(Vec::new()),
            });
            map.insert(key.clone(), tail.clone());
            tokio::spawn(run(s.clone(), key, tail.clone(), ends()));
            tail
        }
    };
    let mut subs = tail.subs.lock();
    let start = ends();
    subs.push(Sub {
        tx,
        start: start.clone(),
        skipping: None,
        _counted: crate::metrics::subscriber(&s.metrics, topic),
    });
    Some(start)
}

/// A tail's follower: reads new records once, hands their messages to every subscriber.
async fn run(s: AppState, key: TailKey, tail: Arc<Tail>, mut cursors: BTreeMap<i32, i64>) {
    s.metrics
        .ws_tails
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _running = Running(s.metrics.clone());
    loop {
        {
            // Drop the subscribers whose socket closed; a tail without subscribers ends
            // (under the map's lock, so that no subscriber joins a tail that is ending).
            let mut map = s.tails.map.lock();
            let mut subs = tail.subs.lock();
            subs.retain(|sub| !sub.tx.is_closed());
            if subs.is_empty() || *s.shutdown.borrow() {
                remove(&mut map, &key, &tail);
                return;
            }
        }
        let round = poll_once(
            &s.broker,
            &key.topic,
            &mut cursors,
            TAIL_WAIT,
            key.format,
            s.budget.max_stored_bytes(),
            key.isolation,
        )
        .await;
        let Ok(recs) = round else {
            // The topic is gone (or the door stops): the subscribers keep their sockets,
            // as a follower of their own would.
            end(&s, &key, &tail, false);
            return;
        };
        if recs.is_empty() {
            continue;
        }
        let mut msgs = Vec::with_capacity(recs.len());
        for pushed in &recs {
            let (kind, text) = if key.sse {
                let (_, kind, data) = pushed.event(&key.topic);
                (kind, data.to_string())
            } else {
                ("record", pushed.message(&key.topic).to_string())
            };
            let Ok(held) = s.budget.reserve(text.len()).await else {
                // The door's buffer stayed full: every subscriber is told it is too slow
                // (the ones that are hold the buffer), as each follower's push would.
                end(&s, &key, &tail, true);
                return;
            };
            let (partition, offset) = pushed.position();
            let next = pushed.next().map_or(offset + 1, |(_, n)| n);
            msgs.push(Arc::new(Shared {
                partition,
                offset,
                next,
                kind,
                text: text.into(),
                _held: Some(held),
            }));
        }
        drop(recs);
        let skip = s.config.ws_slow_policy == crate::SlowPolicy::SkipToLatest;
        let mut subs = tail.subs.lock();
        subs.retain_mut(|sub| {
            for m in &msgs {
                match sub.start.get(&m.partition) {
                    Some(first) if m.offset >= *first => {}
                    _ => continue,
                }
                if let Some(skipped) = &mut sub.skipping {
                    match sub.tx.drained_ws() {
                        Some(ws) => {
                            let ranges: Vec<_> = skipped
                                .iter()
                                .map(|(p, (from, to))| json!({"partition": p, "from": from, "to": to}))
                                .collect();
                            if !ws.notice(json!({"type": "skipped", "topic": key.topic, "ranges": ranges})) {
                                sub.tx.overflow();
                                return false;
                            }
                            sub.skipping = None;
                        }
                        None => {
                            skipped.entry(m.partition).or_insert((m.offset, m.next)).1 = m.next;
                            continue;
                        }
                    }
                }
                if !sub.tx.push(m) {
                    if skip && matches!(sub.tx, SubTx::Ws { .. }) {
                        sub.skipping = Some(BTreeMap::from([(m.partition, (m.offset, m.next))]));
                        continue;
                    }
                    sub.tx.overflow();
                    return false;
                }
            }
            true
        });
    }
}

/// Removes the tail from the door's map (if it is still the one there) and, with `overflow`,
/// closes its subscribers as too slow.
fn end(s: &AppState, key: &TailKey, tail: &Arc<Tail>, overflow: bool) {
    let mut map = s.tails.map.lock();
    remove(&mut map, key, tail);
    let subs = std::mem::take(&mut *tail.subs.lock());
    if overflow {
        for sub in subs {
            sub.tx.overflow();
        }
    }
}

fn remove(map: &mut HashMap<TailKey, Arc<Tail>>, key: &TailKey, tail: &Arc<Tail>) {
    if map.get(key).is_some_and(|t| Arc::ptr_eq(t, tail)) {
        map.remove(key);
    }
}
