//! A share-group member (KIP-932, as Kafka 4.2 serves it): each record of a partition goes to
//! one member at a time, which accepts, releases (redelivered later) or rejects it.
//!
//! - Membership: ShareGroupHeartbeat on the group's coordinator, epoch 0 to join (the member
//!   id is generated here, as KIP-932 v1 wants), then one heartbeat per
//!   `heartbeat_interval_ms` the broker answers, from a task of its own so that slow
//!   processing does not cost the membership; -1 to leave. A fenced or unknown member joins
//!   again with epoch 0. The assignment the broker sends (every member may get every
//!   partition) is what [`ShareConsumer::poll`] fetches.
//! - Fetching: ShareFetch in a share session on the partitions' leader: epoch 0 opens it with
//!   every assigned partition, then each request carries the next epoch and only what changed
//!   (partitions added, `forgotten_topics_data`) plus the acknowledgements of the previous
//!   poll (piggy-backed). Only the offsets in `acquired_records` are delivered, with their
//!   delivery counts; offsets of a range without a deliverable record (a control record, a
//!   batch that cannot be read) are acknowledged as GAP.
//! - Acknowledging: [`AckMode::Implicit`] accepts every record of a poll at the next poll
//!   (or [`ShareConsumer::commit`] / [`ShareConsumer::close`]); [`AckMode::Explicit`] wants
//!   [`ShareConsumer::acknowledge`] (ACCEPT / RELEASE / REJECT) for each record before the next
//!   poll. [`ShareConsumer::commit`] sends the acknowledgements at once (ShareAcknowledge).
//! - Closing: a final ShareAcknowledge with epoch -1 (the session's end), then the leave.
//!
//! Memory is bounded: a poll holds at most one response (`max_records`, `max_bytes`), and the
//! records in hand are only the last poll's (explicit mode refuses to poll on while any is
//! unacknowledged). Strom is one node, so one session (to the leader of the assigned
//! partitions) is enough; a cluster would need one per leader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatchA,
};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch as AckBatchF, FetchPartition, FetchTopic, ForgottenTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::conn::Connection;
use crate::records::decode_records;
use crate::{check, Client, Error, Result};

const UNKNOWN_MEMBER_ID: i16 = 25;
const FENCED_MEMBER_EPOCH: i16 = 110;
const SHARE_SESSION_NOT_FOUND: i16 = 122;
const INVALID_SHARE_SESSION_EPOCH: i16 = 123;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;

/// Offsets one acquired range may span: a broker answer beyond this is refused (the records
/// in hand are sized by it).
const RANGE_OFFSETS_MAX: i64 = 1 << 20;
/// Acknowledgement failures kept for [`ShareConsumer::take_ack_failures`]; more are counted.
const ACK_FAILURES_MAX: usize = 1024;
/// Longer than any wait the broker is asked for: a call that takes this long failed.
const CALL_SLACK: Duration = Duration::from_secs(30);

/// How a record is acknowledged (KIP-932's types; GAP is the client's own business).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckType {
    /// Not a record (a gap in the offsets): archived.
    Gap,
    /// Processed: archived, never delivered again.
    Accept,
    /// Give it back: delivered again (delivery count + 1).
    Release,
    /// Unprocessable: archived (or dead-lettered when the group has a dead-letter topic).
    Reject,
}

impl AckType {
    /// The wire code (0 gap, 1 accept, 2 release, 3 reject).
    pub fn code(self) -> i8 {
        match self {
            AckType::Gap => 0,
            AckType::Accept => 1,
            AckType::Release => 2,
            AckType::Reject => 3,
        }
    }

    /// `accept`, `release` or `reject`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "accept" => Ok(AckType::Accept),
            "release" => Ok(AckType::Release),
            "reject" => Ok(AckType::Reject),
            o => Err(Error::Invalid(format!(
                "acknowledge type must be accept, release or reject, got '{o}'"
            ))),
        }
    }
}

/// When records are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Every record of a poll not acknowledged otherwise is accepted by the next poll.
    Implicit,
    /// Every record of a poll must be acknowledged before the next poll.
    Explicit,
}

/// Options of a share consumer.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    pub group: String,
    pub topics: Vec<String>,
    pub mode: AckMode,
    /// Records per ShareFetch at most.
    pub max_records: i32,
    /// Bytes per ShareFetch at most.
    pub max_bytes: i32,
    /// How long a ShareFetch waits for records.
    pub max_wait_ms: i32,
    /// Client id in requests.
    pub client_id: String,
}

impl ShareConfig {
    /// Defaults: implicit mode, 500 records, 8 MiB, 500 ms.
    pub fn new(group: &str, topics: Vec<String>) -> Self {
        Self {
            group: group.to_string(),
            topics,
            mode: AckMode::Implicit,
            max_records: 500,
            max_bytes: 8 << 20,
            max_wait_ms: 500,
            client_id: "strom-share".into(),
        }
    }
}

/// A record delivered to this member.
#[derive(Debug, Clone)]
pub struct ShareRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// 1 on the first delivery, then +1 per redelivery.
    pub delivery_count: u16,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Acknowledgements the broker refused.
#[derive(Debug, Clone)]
pub struct AckFailure {
    pub topic: Arc<str>,
    pub partition: i32,
    /// Offsets the refused acknowledgements covered.
    pub offsets: u64,
    pub code: i16,
    pub message: String,
}

/// Acknowledgements the broker confirmed, and the refused ones, since the start.
#[derive(Debug, Clone, Copy, Default)]
pub struct AckStats {
    pub delivered: u64,
    pub accepted: u64,
    pub released: u64,
    pub rejected: u64,
    pub gaps: u64,
    pub failed: u64,
}

/// The membership, shared with the heartbeat task.
#[derive(Default)]
struct Membership {
    epoch: i32,
    /// The assignment as the broker last sent it, with a counter that moves on each change.
    assignment: Vec<(Uuid, Vec<i32>)>,
    version: u64,
    /// Why the heartbeats stopped (the next poll returns it).
    error: Option<String>,
}

/// Acknowledgement types of one acquired range, one per offset (`None`: not yet).
struct InHand {
    first: i64,
    types: Vec<Option<AckType>>,
}

/// The acknowledgement batches of ranges in hand: runs of one type over consecutive offsets.
/// Offsets the member did not acknowledge are accepted, or in `explicit` mode left out.
fn ack_batches(ranges: Vec<InHand>, explicit: bool) -> Vec<(i64, i64, AckType)> {
    let mut batches: Vec<(i64, i64, AckType)> = Vec::new();
    for r in ranges {
        for (i, t) in r.types.into_iter().enumerate() {
            let o = r.first + i as i64;
            let t = match t {
                Some(t) => t,
                None if explicit => continue,
                None => AckType::Accept,
            };
            match batches.last_mut() {
                Some((_, last, lt)) if *last + 1 == o && *lt == t => *last = o,
                _ => batches.push((o, o, t)),
            }
        }
    }
    batches
}

/// A share-partition: topic id and partition.
type Sp = (Uuid, i32);
/// Acknowledgement batches (first, last, type) per share-partition.
type Acks = BTreeMap<Sp, Vec<(i64, i64, AckType)>>;
/// A ShareFetch's answer: per share-partition its batches and acquired ranges
/// (first, last, delivery count).
type Fetched = Vec<(Sp, Bytes, Vec<(i64, i64, u16)>)>;

/// A member of a share group. See the module docs.
pub struct ShareConsumer {
    client: Arc<Client>,
    config: ShareConfig,
    member_id: String,
    shared: Arc<Mutex<Membership>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    beats: Option<tokio::task::JoinHandle<()>>,
    coordinator: Arc<Connection>,
    /// Topic names by id (from metadata).
    names: HashMap<Uuid, Arc<str>>,
    /// The assignment version the session follows.
    seen_version: u64,
    assigned: BTreeSet<Sp>,
    /// The share session: its connection, the epoch of the next request (0: not open).
    conn: Option<Arc<Connection>>,
    epoch: i32,
    in_session: BTreeSet<Sp>,
    to_add: BTreeSet<Sp>,
    to_forget: BTreeSet<Sp>,
    /// The last poll's acquired offsets, per share-partition.
    in_hand: BTreeMap<Sp, Vec<InHand>>,
    stats: AckStats,
    failures: Vec<AckFailure>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A member id: 16 random bytes as a UUID (std's randomly keyed SipHash; no RNG crate).
fn new_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.write_usize(i);
        half.copy_from_slice(&h.finish().to_be_bytes());
    }
    Uuid::from_bytes(bytes).to_string()
}

async fn timed<T>(wait: Duration, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(wait + CALL_SLACK, f)
        .await
        .map_err(|_| Error::Timeout)?
}

/// One ShareGroupHeartbeat; `Ok(None)` when the member must join again (epoch 0).
async fn beat(
    coordinator: &Connection,
    version: i16,
    group: &str,
    member_id: &str,
    epoch: i32,
    topics: Option<&[String]>,
) -> Result<Option<ShareGroupHeartbeatResponse>> {
    let req = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(sb(group)))
        .with_member_id(sb(member_id))
        .with_member_epoch(epoch)
        .with_subscribed_topic_names(
            topics.map(|ts| ts.iter().map(|t| TopicName(sb(t))).collect()),
        );
    let resp = timed(Duration::ZERO, coordinator.call(&req, version)).await?;
    match resp.error_code {
        0 => Ok(Some(resp)),
        UNKNOWN_MEMBER_ID | FENCED_MEMBER_EPOCH if epoch != -1 => Ok(None),
        code => {
            let msg = resp
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            check(code, || format!("ShareGroupHeartbeat {group}: {msg}"))?;
            Ok(Some(resp))
        }
    }
}

fn apply_beat(m: &mut Membership, resp: &ShareGroupHeartbeatResponse) {
    m.epoch = resp.member_epoch;
    if let Some(a) = &resp.assignment {
        let mut parts: Vec<(Uuid, Vec<i32>)> = a
            .topic_partitions
            .iter()
            .map(|t| (t.topic_id, t.partitions.clone()))
            .collect();
        parts.sort();
        if parts != m.assignment {
            m.assignment = parts;
            m.version += 1;
        }
    }
}

/// Heartbeats every `interval` the broker says until told to stop; joins again when fenced.
/// What the heartbeat task needs.
struct Beats {
    coordinator: Arc<Connection>,
    version: i16,
    group: String,
    member_id: String,
    topics: Vec<String>,
    shared: Arc<Mutex<Membership>>,
}

async fn heartbeats(
    b: Beats,
    mut interval: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Beats {
        coordinator,
        version,
        group,
        member_id,
        topics,
        shared,
    } = b;
    let mut retries = 0u32;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let epoch = shared.lock().epoch;
        let topics_now = (epoch == 0).then_some(topics.as_slice());
        match beat(&coordinator, version, &group, &member_id, epoch, topics_now).await {
            Ok(Some(resp)) => {
                retries = 0;
                apply_beat(&mut shared.lock(), &resp);
                if resp.heartbeat_interval_ms > 0 {
                    interval = Duration::from_millis(resp.heartbeat_interval_ms as u64);
                }
            }
            Ok(None) => {
                // Fenced or forgotten: join again at once with the same id.
                shared.lock().epoch = 0;
                interval = Duration::ZERO;
            }
            Err(Error::Broker { code, .. })
                if retries < 20
                    && matches!(
                        code,
                        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR
                    ) =>
            {
                retries += 1;
                interval = Duration::from_millis(200);
            }
            Err(e) => {
                shared.lock().error = Some(e.to_string());
                return;
            }
        }
    }
}

impl ShareConsumer {
    /// Joins the share group (the first heartbeat) and starts heartbeating.
    pub async fn join(client: Arc<Client>, config: ShareConfig) -> Result<Self> {
        if config.topics.is_empty() || config.group.is_empty() {
            return Err(Error::Invalid(
                "a share consumer needs a group and topics".into(),
            ));
        }
        let version = client.version::<ShareGroupHeartbeatRequest>()?;
        client.version::<ShareFetchRequest>()?;
        let coordinator = client.coordinator(&config.group).await?;
        let member_id = new_member_id();
        let shared = Arc::new(Mutex::new(Membership::default()));
        let mut resp = None;
        for _ in 0..20 {
            match beat(
                &coordinator,
                version,
                &config.group,
                &member_id,
                0,
                Some(&config.topics),
            )
            .await
            {
                Ok(Some(r)) => {
                    resp = Some(r);
                    break;
                }
                Ok(None) => continue,
                Err(Error::Broker {
                    code: COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE,
                    ..
                }) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let resp =
            resp.ok_or_else(|| Error::Invalid("the share group kept refusing the join".into()))?;
        apply_beat(&mut shared.lock(), &resp);
        let interval = Duration::from_millis(resp.heartbeat_interval_ms.max(100) as u64);
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let beats = tokio::spawn(heartbeats(
            Beats {
                coordinator: coordinator.clone(),
                version,
                group: config.group.clone(),
                member_id: member_id.clone(),
                topics: config.topics.clone(),
                shared: shared.clone(),
            },
            interval,
            stop_rx,
        ));
        Ok(Self {
            client,
            config,
            member_id,
            shared,
            stop: Some(stop),
            beats: Some(beats),
            coordinator,
            names: HashMap::new(),
            seen_version: 0,
            assigned: BTreeSet::new(),
            conn: None,
            epoch: 0,
            in_session: BTreeSet::new(),
            to_add: BTreeSet::new(),
            to_forget: BTreeSet::new(),
            in_hand: BTreeMap::new(),
            stats: AckStats::default(),
            failures: Vec::new(),
        })
    }

    /// This member's id.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The member epoch the last heartbeat gave.
    pub fn member_epoch(&self) -> i32 {
        self.shared.lock().epoch
    }

    /// The partitions assigned now (topic, partition).
    pub fn assignment(&self) -> Vec<(Arc<str>, i32)> {
        self.assigned
            .iter()
            .filter_map(|(id, p)| self.names.get(id).map(|n| (n.clone(), *p)))
            .collect()
    }

    /// Changes the records a ShareFetch asks for (at least 1).
    pub fn set_max_records(&mut self, n: i32) {
        self.config.max_records = n.max(1);
    }

    /// Confirmed acknowledgements so far.
    pub fn stats(&self) -> AckStats {
        self.stats
    }

    /// The acknowledgements the broker refused since the last call.
    pub fn take_ack_failures(&mut self) -> Vec<AckFailure> {
        std::mem::take(&mut self.failures)
    }

    /// Marks a record of the last poll for acknowledgement (sent with the next poll, commit
    /// or close). Acknowledging it again changes the type.
    pub fn acknowledge(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        t: AckType,
    ) -> Result<()> {
        let id = self
            .topic_id(topic)
            .ok_or_else(|| Error::Invalid(format!("no record of {topic} in hand")))?;
        self.acknowledge_range(id, partition, offset, offset, t)
    }

    /// [`ShareConsumer::acknowledge`] of a record as it was delivered.
    pub fn ack(&mut self, r: &ShareRecord, t: AckType) -> Result<()> {
        self.acknowledge(&r.topic, r.partition, r.offset, t)
    }

    fn topic_id(&self, topic: &str) -> Option<Uuid> {
        self.names
            .iter()
            .find(|(_, n)| &***n == topic)
            .map(|(id, _)| *id)
    }

    fn acknowledge_range(
        &mut self,
        id: Uuid,
        partition: i32,
        first: i64,
        last: i64,
        t: AckType,
    ) -> Result<()> {
        let ranges = self.in_hand.get_mut(&(id, partition));
        let mut left = last - first + 1;
        for r in ranges.into_iter().flatten() {
            let end = r.first + r.types.len() as i64;
            let (lo, hi) = (first.max(r.first), (last + 1).min(end));
            for o in lo..hi {
                r.types[(o - r.first) as usize] = Some(t);
                left -= 1;
            }
        }
        if left > 0 {
            return Err(Error::Invalid(format!(
                "offsets {first}..={last} of partition {partition} are not all in hand"
            )));
        }
        Ok(())
    }

    /// The acknowledgements of the records in hand, as batches per share-partition: in
    /// implicit mode what is not acknowledged is accepted; in explicit mode it is an error.
    /// At close (`closing`), explicit mode leaves out the records not acknowledged (the leave
    /// makes them available again) instead of refusing.
    fn take_acks(&mut self, closing: bool) -> Result<Acks> {
        let explicit = self.config.mode == AckMode::Explicit;
        if explicit && !closing {
            for (sp, ranges) in &self.in_hand {
                if let Some(o) = ranges.iter().find_map(|r| {
                    r.types
                        .iter()
                        .position(Option::is_none)
                        .map(|i| r.first + i as i64)
                }) {
                    let name = self
                        .names
                        .get(&sp.0)
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    return Err(Error::Invalid(format!(
                        "explicit acknowledgement: record {name}/{}@{o} of the last poll is not acknowledged",
                        sp.1
                    )));
                }
            }
        }
        let mut out: Acks = BTreeMap::new();
        for (sp, ranges) in std::mem::take(&mut self.in_hand) {
            out.insert(sp, ack_batches(ranges, explicit));
        }
        out.retain(|_, b| !b.is_empty());
        Ok(out)
    }

    /// Counts confirmed (`code` 0) or refused acknowledgements.
    fn account(
        &mut self,
        sp: Sp,
        batches: &[(i64, i64, AckType)],
        code: i16,
        msg: Option<StrBytes>,
    ) {
        let n: u64 = batches.iter().map(|(f, l, _)| (l - f + 1) as u64).sum();
        if code != 0 {
            self.stats.failed += n;
            if self.failures.len() < ACK_FAILURES_MAX {
                self.failures.push(AckFailure {
                    topic: self
                        .names
                        .get(&sp.0)
                        .cloned()
                        .unwrap_or_else(|| Arc::from("?")),
                    partition: sp.1,
                    offsets: n,
                    code,
                    message: msg.map(|m| m.to_string()).unwrap_or_default(),
                });
            }
            return;
        }
        for (f, l, t) in batches {
            let k = (l - f + 1) as u64;
            match t {
                AckType::Accept => self.stats.accepted += k,
                AckType::Release => self.stats.released += k,
                AckType::Reject => self.stats.rejected += k,
                AckType::Gap => self.stats.gaps += k,
            }
        }
    }

    /// Follows the heartbeats' assignment: names of new topic ids, partitions to add or
    /// forget in the session, the session's connection.
    async fn follow_assignment(&mut self) -> Result<()> {
        let (version, assignment, error) = {
            let m = self.shared.lock();
            (m.version, m.assignment.clone(), m.error.clone())
        };
        if let Some(e) = error {
            return Err(Error::Invalid(format!(
                "share group heartbeats stopped: {e}"
            )));
        }
        if version == self.seen_version && self.conn.is_some() {
            return Ok(());
        }
        let now: BTreeSet<Sp> = assignment
            .iter()
            .flat_map(|(id, ps)| ps.iter().map(move |p| (*id, *p)))
            .collect();
        if now.iter().any(|(id, _)| !self.names.contains_key(id)) || self.conn.is_none() {
            let topics = self.client.metadata(Some(&self.config.topics)).await?;
            let mut leader = None;
            for t in topics {
                if let Some(p) = t.partitions.first() {
                    leader.get_or_insert(p.leader);
                }
                self.names.insert(t.topic_id, Arc::from(t.name.as_str()));
            }
            if self.conn.is_none() {
                self.conn = Some(match leader {
                    Some(node) => self.client.broker(node).await?,
                    None => self.client.bootstrap().clone(),
                });
            }
        }
        for sp in now.difference(&self.assigned) {
            self.to_forget.remove(sp);
            self.to_add.insert(*sp);
        }
        for sp in self.assigned.difference(&now) {
            self.to_add.remove(sp);
            if self.in_session.contains(sp) {
                self.to_forget.insert(*sp);
            }
        }
        self.assigned = now;
        self.seen_version = version;
        Ok(())
    }

    /// Fetches the next records: sends the last poll's acknowledgements (piggy-backed) and
    /// waits up to `max_wait_ms` for records of the assigned partitions.
    pub async fn poll(&mut self) -> Result<Vec<ShareRecord>> {
        let answer = self.fetch().await?;
        let mut out = Vec::new();
        for (sp, records, ranges) in answer {
            let Some(topic) = self.names.get(&sp.0).cloned() else {
                continue;
            };
            let decoded = decode_records(records);
            let mut recs = decoded.records.into_iter().peekable();
            let mut hand = Vec::with_capacity(ranges.len());
            for (first, last, dc) in ranges {
                // Offsets without a deliverable record are gaps; the delivered ones wait for
                // the member (or implicit mode).
                let mut types = vec![Some(AckType::Gap); (last - first + 1) as usize];
                while let Some(r) = recs.next_if(|r| r.offset <= last) {
                    if r.offset < first {
                        continue;
                    }
                    out.push(ShareRecord {
                        topic: topic.clone(),
                        partition: sp.1,
                        offset: r.offset,
                        delivery_count: dc,
                        timestamp: r.timestamp,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    });
                    self.stats.delivered += 1;
                    types[(r.offset - first) as usize] = None;
                }
                hand.push(InHand { first, types });
            }
            self.in_hand.entry(sp).or_default().extend(hand);
        }
        Ok(out)
    }

    /// One ShareFetch: acknowledgements out, acquired ranges in (checked: in order, bounded).
    async fn fetch(&mut self) -> Result<Fetched> {
        self.follow_assignment().await?;
        let mut acks = self.take_acks(false)?;
        let Some(conn) = self.conn.clone() else {
            return Ok(Vec::new());
        };
        if self.epoch == 0 && !acks.is_empty() {
            // The request that opens a session may not carry acknowledgements: open it first.
            self.fetch_once(&conn, &mut BTreeMap::new(), 0, 0).await?;
        }
        if self.epoch == 0 && self.assigned.is_empty() {
            tokio::time::sleep(Duration::from_millis(self.config.max_wait_ms.max(0) as u64)).await;
            return Ok(Vec::new());
        }
        let max_records = if self.assigned.is_empty() {
            0
        } else {
            self.config.max_records
        };
        let out = self
            .fetch_once(&conn, &mut acks, max_records, self.config.max_wait_ms)
            .await;
        if max_records == 0 {
            tokio::time::sleep(Duration::from_millis(self.config.max_wait_ms.max(0) as u64)).await;
        }
        out
    }

    async fn fetch_once(
        &mut self,
        conn: &Connection,
        acks: &mut Acks,
        max_records: i32,
        max_wait_ms: i32,
    ) -> Result<Fetched> {
        let opening = self.epoch == 0;
        let named: BTreeSet<Sp> = if opening {
            self.assigned.clone()
        } else {
            self.to_add.iter().chain(acks.keys()).copied().collect()
        };
        let mut topics: BTreeMap<Uuid, Vec<FetchPartition>> = BTreeMap::new();
        for sp in &named {
            let batches = acks.get(sp).map_or_else(Vec::new, |b| {
                b.iter()
                    .map(|&(f, l, t)| {
                        AckBatchF::default()
                            .with_first_offset(f)
                            .with_last_offset(l)
                            .with_acknowledge_types(vec![t.code()])
                    })
                    .collect()
            });
            topics.entry(sp.0).or_default().push(
                FetchPartition::default()
                    .with_partition_index(sp.1)
                    .with_partition_max_bytes(self.config.max_bytes)
                    .with_acknowledgement_batches(batches),
            );
        }
        let forget: Vec<Sp> = if opening {
            Vec::new()
        } else {
            self.to_forget.iter().copied().collect()
        };
        let mut forgotten: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
        for (id, p) in &forget {
            forgotten.entry(*id).or_default().push(*p);
        }
        let req = ShareFetchRequest::default()
            .with_group_id(Some(GroupId(sb(&self.config.group))))
            .with_member_id(Some(sb(&self.member_id)))
            .with_share_session_epoch(self.epoch)
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(self.config.max_bytes)
            .with_max_records(max_records)
            .with_batch_size(max_records.max(1))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(id, ps)| FetchTopic::default().with_topic_id(id).with_partitions(ps))
                    .collect(),
            )
            .with_forgotten_topics_data(
                forgotten
                    .into_iter()
                    .map(|(id, ps)| {
                        ForgottenTopic::default()
                            .with_topic_id(id)
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let v = self.client.version::<ShareFetchRequest>()?;
        let wait = Duration::from_millis(max_wait_ms.max(0) as u64);
        let resp = timed(wait, conn.call(&req, v)).await?;
        match resp.error_code {
            0 => {}
            SHARE_SESSION_NOT_FOUND | INVALID_SHARE_SESSION_EPOCH if !opening => {
                // The session is gone (a broker restart): nothing of this request was applied.
                // Reopen it with every partition; the acknowledgements go in the next request.
                self.reopen(acks);
                return Ok(Vec::new());
            }
            code => {
                let msg = resp
                    .error_message
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                for (sp, b) in std::mem::take(acks) {
                    self.account(sp, &b, code, None);
                }
                return Err(Error::broker(
                    code,
                    format!("ShareFetch {}: {msg}", self.config.group),
                ));
            }
        }
        self.epoch = if self.epoch == i32::MAX {
            1
        } else {
            self.epoch + 1
        };
        self.in_session.extend(named.iter().copied());
        for sp in &forget {
            self.in_session.remove(sp);
        }
        self.to_add.clear();
        self.to_forget.clear();
        let mut out = Vec::new();
        let mut answered: BTreeSet<Sp> = BTreeSet::new();
        for t in resp.responses {
            for p in t.partitions {
                let sp = (t.topic_id, p.partition_index);
                if let Some(b) = acks.remove(&sp) {
                    self.account(
                        sp,
                        &b,
                        p.acknowledge_error_code,
                        p.acknowledge_error_message.clone(),
                    );
                }
                answered.insert(sp);
                if p.acquired_records.is_empty() {
                    continue;
                }
                let mut ranges = Vec::with_capacity(p.acquired_records.len());
                let mut after = i64::MIN;
                for a in &p.acquired_records {
                    let span = a.last_offset - a.first_offset;
                    if a.first_offset < 0
                        || a.first_offset <= after
                        || !(0..RANGE_OFFSETS_MAX).contains(&span)
                    {
                        return Err(Error::Protocol(format!(
                            "ShareFetch: acquired range {}..={} out of order or too long",
                            a.first_offset, a.last_offset
                        )));
                    }
                    after = a.last_offset;
                    ranges.push((
                        a.first_offset,
                        a.last_offset,
                        a.delivery_count.max(1) as u16,
                    ));
                }
                out.push((sp, p.records.unwrap_or_default(), ranges));
            }
        }
        // Acknowledgements of partitions the answer left out: applied (no error said otherwise).
        for (sp, b) in std::mem::take(acks) {
            self.account(sp, &b, 0, None);
        }
        Ok(out)
    }

    fn reopen(&mut self, acks: &mut Acks) {
        self.epoch = 0;
        self.in_session.clear();
        self.to_add.clear();
        self.to_forget.clear();
        // Back in hand, already typed: sent after the new session opens.
        for (sp, batches) in std::mem::take(acks) {
            let hand = self.in_hand.entry(sp).or_default();
            for (f, l, t) in batches {
                hand.push(InHand {
                    first: f,
                    types: vec![Some(t); (l - f + 1) as usize],
                });
            }
        }
    }

    /// Sends the acknowledgements in hand now (ShareAcknowledge) instead of with the next poll.
    pub async fn commit(&mut self) -> Result<()> {
        self.acknowledge_now(false).await
    }

    async fn acknowledge_now(&mut self, closing: bool) -> Result<()> {
        let mut acks = self.take_acks(closing)?;
        let Some(conn) = self.conn.clone() else {
            return Ok(());
        };
        if self.epoch == 0 {
            if acks.is_empty() {
                return Ok(());
            }
            self.fetch_once(&conn, &mut BTreeMap::new(), 0, 0).await?;
        }
        if acks.is_empty() && !closing {
            return Ok(());
        }
        let mut topics: BTreeMap<Uuid, Vec<AcknowledgePartition>> = BTreeMap::new();
        for (sp, b) in &acks {
            topics.entry(sp.0).or_default().push(
                AcknowledgePartition::default()
                    .with_partition_index(sp.1)
                    .with_acknowledgement_batches(
                        b.iter()
                            .map(|&(f, l, t)| {
                                AckBatchA::default()
                                    .with_first_offset(f)
                                    .with_last_offset(l)
                                    .with_acknowledge_types(vec![t.code()])
                            })
                            .collect(),
                    ),
            );
        }
        let req = ShareAcknowledgeRequest::default()
            .with_group_id(Some(GroupId(sb(&self.config.group))))
            .with_member_id(Some(sb(&self.member_id)))
            .with_share_session_epoch(if closing { -1 } else { self.epoch })
            .with_topics(
                topics
                    .into_iter()
                    .map(|(id, ps)| {
                        AcknowledgeTopic::default()
                            .with_topic_id(id)
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let v = self.client.version::<ShareAcknowledgeRequest>()?;
        let resp = timed(Duration::ZERO, conn.call(&req, v)).await?;
        match resp.error_code {
            0 => {}
            SHARE_SESSION_NOT_FOUND | INVALID_SHARE_SESSION_EPOCH if !closing => {
                self.reopen(&mut acks);
                return Box::pin(self.acknowledge_now(false)).await;
            }
            code => {
                for (sp, b) in std::mem::take(&mut acks) {
                    self.account(sp, &b, code, resp.error_message.clone());
                }
                if closing {
                    self.epoch = 0;
                }
                return check(code, || format!("ShareAcknowledge {}", self.config.group));
            }
        }
        self.epoch = if closing {
            0
        } else if self.epoch == i32::MAX {
            1
        } else {
            self.epoch + 1
        };
        for t in resp.responses {
            for p in t.partitions {
                let sp = (t.topic_id, p.partition_index);
                if let Some(b) = acks.remove(&sp) {
                    self.account(sp, &b, p.error_code, p.error_message.clone());
                }
            }
        }
        for (sp, b) in std::mem::take(&mut acks) {
            self.account(sp, &b, 0, None);
        }
        Ok(())
    }

    /// Sends the last acknowledgements, closes the share session (epoch -1) and leaves the
    /// group (member epoch -1). In explicit mode, records not acknowledged are left to the
    /// broker, which makes them available again when the member leaves.
    pub async fn close(mut self) -> Result<AckStats> {
        let acked = if self.epoch != 0 || !self.in_hand.is_empty() {
            self.acknowledge_now(true).await
        } else {
            Ok(())
        };
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(b) = self.beats.take() {
            let _ = b.await;
        }
        let v = self.client.version::<ShareGroupHeartbeatRequest>()?;
        let left = beat(
            &self.coordinator,
            v,
            &self.config.group,
            &self.member_id,
            -1,
            None,
        )
        .await;
        acked?;
        left.map(|_| self.stats)
    }
}

impl Drop for ShareConsumer {
    fn drop(&mut self) {
        if let Some(b) = self.beats.take() {
            b.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_coalesce_into_runs_of_one_type() {
        let a = AckType::Accept;
        let r = AckType::Release;
        let hand = || {
            vec![
                InHand {
                    first: 10,
                    types: vec![Some(a), Some(a), Some(r), None, Some(AckType::Gap)],
                },
                // A later range right after the first: runs continue across ranges.
                InHand {
                    first: 15,
                    types: vec![Some(AckType::Gap), Some(a)],
                },
                InHand {
                    first: 20,
                    types: vec![Some(a)],
                },
            ]
        };
        assert_eq!(
            ack_batches(hand(), false),
            vec![
                (10, 11, a),
                (12, 12, r),
                (13, 13, a),
                (14, 15, AckType::Gap),
                (16, 16, a),
                (20, 20, a)
            ]
        );
        // Explicit mode leaves out what the member did not say.
        assert_eq!(
            ack_batches(hand(), true),
            vec![
                (10, 11, a),
                (12, 12, r),
                (14, 15, AckType::Gap),
                (16, 16, a),
                (20, 20, a)
            ]
        );
        assert!(ack_batches(Vec::new(), false).is_empty());
    }

    #[test]
    fn ack_types_parse_and_have_their_wire_codes() {
        assert_eq!(AckType::parse("accept").unwrap().code(), 1);
        assert_eq!(AckType::parse("release").unwrap().code(), 2);
        assert_eq!(AckType::parse("reject").unwrap().code(), 3);
        assert_eq!(AckType::Gap.code(), 0);
        assert!(AckType::parse("renew").is_err());
        assert_ne!(new_member_id(), new_member_id());
    }
}
