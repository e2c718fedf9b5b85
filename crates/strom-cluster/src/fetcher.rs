//! Follower fetchers: one task per leader broker copies every partition this broker follows
//! from it, with Kafka's replica Fetch (the replica id set, the leader epoch checked) over
//! one connection. A partition that starts following in a new leader epoch is first
//! truncated to where its log and the leader's part: OffsetForLeaderEpoch for the latest
//! epoch in the local log gives the leader's end of that epoch; everything from there on is
//! dropped (it was never acknowledged: the leader would have it), then copying resumes at
//! the local log end.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use strom_client::Connection;
use tokio::sync::Notify;

use crate::node::Inner;

/// The Fetch version followers send (replica id in the request header fields, topic names).
const FETCH_VERSION: i16 = 12;
/// The ListOffsets version followers send (the leader's log start).
const LIST_OFFSETS_VERSION: i16 = 5;
/// The OffsetForLeaderEpoch version followers send (with the replica id).
const EPOCH_VERSION: i16 = 4;
/// How long a replica fetch waits at the leader for new records.
const FETCH_WAIT_MS: i32 = 500;
/// Bytes per partition per fetch.
const PARTITION_MAX_BYTES: i32 = 1 << 20;
/// Bytes per fetch.
const FETCH_MAX_BYTES: i32 = 16 << 20;

#[derive(Clone, Copy, Debug)]
struct Followed {
    epoch: i32,
    /// Truncate to the leader's log before copying.
    truncate: bool,
}

struct Fetcher {
    leader: i32,
    parts: Mutex<BTreeMap<(String, i32), Followed>>,
    stop: AtomicBool,
    wake: Notify,
    /// Failed appends are logged at most once every 10 s.
    append_errors: strom_broker::limits::LogEvery,
}

/// The fetchers of one broker, by leader.
#[derive(Default)]
pub(crate) struct Fetchers {
    by_leader: Mutex<HashMap<i32, Arc<Fetcher>>>,
}

impl Fetchers {
    /// Copies `topic`/`partition` from `leader` in `epoch` (moved from any other leader's
    /// fetcher); with `truncate`, after truncating to the leader's log. A leader of -1
    /// (none) stops copying until one is elected.
    pub(crate) fn follow(
        &self,
        node: &Arc<Inner>,
        leader: i32,
        topic: &str,
        partition: i32,
        epoch: i32,
        truncate: bool,
    ) {
        let key = (topic.to_string(), partition);
        let mut all = self.by_leader.lock();
        for (l, f) in all.iter() {
            if *l != leader {
                f.parts.lock().remove(&key);
            }
        }
        if leader < 0 {
            return;
        }
        let f = all.entry(leader).or_insert_with(|| {
            let f = Arc::new(Fetcher {
                leader,
                parts: Mutex::new(BTreeMap::new()),
                stop: AtomicBool::new(false),
                wake: Notify::new(),
                append_errors: strom_broker::limits::LogEvery::new(Duration::from_secs(10)),
            });
            tokio::spawn(run(f.clone(), node.clone()));
            f
        });
        let mut parts = f.parts.lock();
        match parts.get_mut(&key) {
            Some(st) if st.epoch == epoch && !truncate => {}
            Some(st) => {
                st.epoch = epoch;
                st.truncate |= truncate;
            }
            None => {
                parts.insert(key, Followed { epoch, truncate });
            }
        }
        drop(parts);
        f.wake.notify_one();
    }

    /// Stops copying a partition.
    pub(crate) fn unfollow(&self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        for f in self.by_leader.lock().values() {
            f.parts.lock().remove(&key);
        }
    }

    /// Stops every fetcher (the broker leaves).
    pub(crate) fn stop_all(&self) {
        for f in self.by_leader.lock().drain().map(|(_, f)| f) {
            f.stop.store(true, Ordering::Release);
            f.wake.notify_one();
        }
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn run(f: Arc<Fetcher>, node: Arc<Inner>) {
    let me = node.cfg.node_id;
    let mut conn: Option<Connection> = None;
    let mut backoff = Duration::from_millis(50);
    while !f.stop.load(Ordering::Acquire) {
        let parts: Vec<((String, i32), Followed)> = f
            .parts
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if parts.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), f.wake.notified()).await;
            continue;
        }
        if conn.is_none() {
            let addr = node.broker.cluster().and_then(|c| {
                c.metadata()
                    .node(f.leader)
                    .map(|n| format!("{}:{}", n.host, n.port))
            });
            let Some(addr) = addr else {
                // The leader is not live (yet): wait for the metadata to move.
                let _ = tokio::time::timeout(Duration::from_millis(500), f.wake.notified()).await;
                continue;
            };
            match Connection::connect(&addr, &format!("strom-replica-{me}")).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    tracing::debug!(leader = f.leader, addr, error = %e, "cannot reach the leader");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
        }
        let c = conn.as_ref().expect("connected");
        let result = if parts.iter().any(|(_, st)| st.truncate) {
            truncate(&f, &node, c, &parts).await
        } else {
            fetch(&f, &node, c, &parts).await
        };
        if let Err(e) = result {
            tracing::debug!(leader = f.leader, error = %e, "replica fetch failed; reconnecting");
            conn = None;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// OffsetForLeaderEpoch for the partitions to truncate, then the truncation.
async fn truncate(
    f: &Fetcher,
    node: &Inner,
    c: &Connection,
    parts: &[((String, i32), Followed)],
) -> strom_client::Result<()> {
    let broker = &node.broker;
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut asked = Vec::new();
    for ((t, p), st) in parts.iter().filter(|(_, st)| st.truncate) {
        let Ok((epoch, _)) = broker.latest_epoch(t, *p) else {
            continue;
        };
        if epoch < 0 {
            // Nothing written in any epoch here: nothing to truncate.
            done_truncating(f, t, *p, st.epoch);
            continue;
        }
        asked.push((t.clone(), *p));
        topics.entry(t).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(*p)
                .with_current_leader_epoch(st.epoch)
                .with_leader_epoch(epoch),
        );
    }
    if topics.is_empty() {
        return Ok(());
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(node.cfg.node_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = c.call(&req, EPOCH_VERSION).await?;
    let mut retry = false;
    for t in resp.topics {
        for p in t.partitions {
            let topic = t.topic.to_string();
            if p.error_code != 0 {
                tracing::debug!(
                    topic,
                    partition = p.partition,
                    code = p.error_code,
                    "OffsetForLeaderEpoch refused; retrying"
                );
                retry = true;
                continue;
            }
            let Ok((_, leo)) = broker.latest_epoch(&topic, p.partition) else {
                continue;
            };
            // Undefined (the leader has no epoch as old): keep what is below the high
            // watermark, which every in-sync replica had.
            let to = if p.end_offset < 0 {
                broker.high_watermark(&topic, p.partition).unwrap_or(0)
            } else {
                p.end_offset.min(leo)
            };
            if to < leo {
                tracing::info!(
                    topic,
                    partition = p.partition,
                    from = leo,
                    to,
                    "truncating to the leader's log"
                );
            }
            match broker.truncate_replica(&topic, p.partition, to) {
                Ok(()) => {
                    let epoch = f
                        .parts
                        .lock()
                        .get(&(topic.clone(), p.partition))
                        .map_or(-1, |s| s.epoch);
                    done_truncating(f, &topic, p.partition, epoch);
                }
                Err(e) => {
                    tracing::warn!(topic, partition = p.partition, error = %e, "truncation failed");
                    retry = true;
                }
            }
        }
    }
    if retry {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn done_truncating(f: &Fetcher, topic: &str, partition: i32, epoch: i32) {
    if let Some(st) = f.parts.lock().get_mut(&(topic.to_string(), partition)) {
        if st.epoch == epoch {
            st.truncate = false;
        }
    }
}

/// A fetch out of the leader's range: below its log start (it deleted what this follower
/// lacks: start again at its start), or past its end (truncate first).
async fn resync(
    f: &Fetcher,
    node: &Inner,
    c: &Connection,
    topic: &str,
    partition: i32,
) -> strom_client::Result<()> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(node.cfg.node_id))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_current_leader_epoch(-1)
                .with_timestamp(-2)])]);
    let resp = c.call(&req, LIST_OFFSETS_VERSION).await?;
    let start = resp
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .find(|p| p.error_code == 0)
        .map(|p| p.offset);
    let Some(start) = start else {
        return Ok(());
    };
    let leo = node
        .broker
        .latest_epoch(topic, partition)
        .map_or(0, |(_, e)| e);
    if leo < start {
        tracing::info!(
            topic,
            partition,
            leo,
            leader_start = start,
            "behind the leader's log start: starting over there"
        );
        if let Err(e) = node.broker.reset_replica(topic, partition, start) {
            tracing::warn!(topic, partition, error = %e, "reset failed");
        }
    } else {
        needs_truncation(f, topic, partition);
    }
    Ok(())
}

fn needs_truncation(f: &Fetcher, topic: &str, partition: i32) {
    if let Some(st) = f.parts.lock().get_mut(&(topic.to_string(), partition)) {
        st.truncate = true;
    }
}

/// One replica fetch of every followed partition from its local log end.
async fn fetch(
    f: &Fetcher,
    node: &Inner,
    c: &Connection,
    parts: &[((String, i32), Followed)],
) -> strom_client::Result<()> {
    let broker = &node.broker;
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for ((t, p), st) in parts {
        let Ok((_, leo)) = broker.latest_epoch(t, *p) else {
            continue;
        };
        topics.entry(t).or_default().push(
            FetchPartition::default()
                .with_partition(*p)
                .with_current_leader_epoch(st.epoch)
                .with_fetch_offset(leo)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(PARTITION_MAX_BYTES),
        );
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(node.cfg.node_id))
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = tokio::time::timeout(Duration::from_secs(10), c.call(&req, FETCH_VERSION))
        .await
        .map_err(|_| strom_client::Error::Io(std::io::Error::other("replica fetch timed out")))??;
    let mut refused = false;
    let mut out_of_range = Vec::new();
    for t in resp.responses {
        let topic = t.topic.to_string();
        for p in t.partitions {
            if p.error_code != 0 {
                refused = true;
                let e = ResponseError::try_from_code(p.error_code);
                match e {
                    Some(ResponseError::OffsetOutOfRange) => {
                        out_of_range.push((topic.clone(), p.partition_index))
                    }
                    _ => tracing::debug!(
                        topic,
                        partition = p.partition_index,
                        code = p.error_code,
                        "replica fetch refused"
                    ),
                }
                continue;
            }
            let records = p.records.unwrap_or_default();
            // Whole batches only (a leader may end a response inside one).
            let whole: usize = strom_records::headers(&records)
                .map(|(_, h)| h.total_len())
                .sum();
            match broker.append_replica(
                &topic,
                p.partition_index,
                &records[..whole],
                p.high_watermark,
            ) {
                Ok(_) => {}
                Err(strom_broker::BrokerError::Log(
                    strom_broker::strom_log::LogError::NotContiguous { .. },
                )) => needs_truncation(f, &topic, p.partition_index),
                Err(e) => {
                    refused = true;
                    // A full disk fails every fetch: once every 10 s.
                    if let Some(suppressed) = f.append_errors.ready() {
                        tracing::warn!(topic, partition = p.partition_index, error = %e, suppressed,
                            "replica append failed");
                    }
                }
            }
        }
    }
    for (topic, partition) in out_of_range {
        resync(f, node, c, &topic, partition).await?;
    }
    if refused {
        // Wait for the metadata to move (a new leader) instead of spinning.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
