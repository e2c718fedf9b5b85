//! Share groups (Kafka's KIP-932 "queues"), transport-agnostic, with Strom's broker-side
//! retry backoff and dead-letter topic.
//!
//! A share group's members consume the same partitions together: every record is *acquired*
//! by one member at a time, under a lock (`share.record.lock.duration.ms`), and acknowledged
//! one by one: ACCEPT (done), RELEASE (back to the others, after `strom.retry.backoff.ms` ×
//! 2^(delivery_count-1), capped by `strom.retry.backoff.max.ms`, + up to 10 % jitter), REJECT
//! (archived; dead-lettered to `errors.deadletterqueue.topic.name` when set) or RENEW (the
//! lock is extended). A lock that expires, a member that leaves or misses its session
//! (`share.session.timeout.ms`) gives its records back as a RELEASE does; a record delivered
//! `share.delivery.count.limit` times is archived (dead-lettered) instead.
//!
//! Per share-partition (group, topic, partition) the state is `state::SharePartition`: the
//! start offset (SPSO: everything below is finished) and the in-flight window above it, one
//! entry per offset, at most `group.share.partition.max.record.locks`; acquisition of new
//! offsets stops while the window is full, so memory does not grow with the backlog.
//!
//! Membership follows KIP-848's shape as ShareGroupHeartbeat needs it: the member sends its
//! subscription, gets a member epoch and an assignment; the assignor gives every member every
//! partition of its subscribed topics. Members are a lease, not persisted: after a restart a
//! member's heartbeat gets UNKNOWN_MEMBER_ID and it joins again (its locks died with the
//! broker anyway).
//!
//! **Durability.** Every change of a share-partition (acquisitions included, so a delivery
//! count survives a crash) and every group config is written to an internal log (`store`,
//! `.strom/share/`) before the call that made it returns; the log is replayed at start, where
//! acquired records become available again with their delivery counts. After kill -9 no
//! accepted record is delivered again and no unaccepted record is lost. The log is rewritten
//! as snapshots when it grows (see `store`).
//!
//! **Invariant:** all state lives under one mutex, never held across an await; the append of
//! a change to the internal log happens under it (page cache only), so the log's order is the
//! order of the changes; the sync (shared by concurrent callers) happens after.

mod config;
mod receipt;
mod state;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::{ConfigOp, READ_MAX_BYTES};

/// Most bytes of the log read for one share-partition's acquisition (at least one batch).
pub const ACQUIRE_READ_BYTES: usize = 1 << 20;
use crate::coordinator::GroupCoordinator;
use crate::Broker;

pub use config::{
    group_config_def, group_config_default, parse_reset, validate_group_config, OffsetReset,
    ShareConfig, AUTO_OFFSET_RESET, DELIVERY_COUNT_LIMIT, DLQ_TOPIC, GROUP_CONFIGS,
    HEARTBEAT_INTERVAL_MS, ISOLATION_LEVEL, RECORD_LOCK_DURATION_MS, RETRY_BACKOFF_MAX_MS,
    RETRY_BACKOFF_MS, SESSION_TIMEOUT_MS,
};
pub use receipt::Receipt;
pub use state::{AckType, AcquiredRecords, DeadLetterReason};

use config::Policy;
use state::{AckRefused, BatchSpan, SharePartition};
use store::{Entry, PartitionValue, Store};

/// A dead-lettered record on its way back to its topic ([`ShareCoordinator::redrive_plan`]).
#[derive(Clone, Debug)]
pub struct Redrive {
    /// The topic it goes back to.
    pub topic: String,
    /// The partition it goes to.
    pub partition: i32,
    /// The record, as one batch.
    batch: Vec<u8>,
    /// Where the dead-letter copy is: topic, partition, offset.
    from: (String, i32, i64),
}

/// Header names of a dead-lettered record (after the original's own headers).
pub mod dlq_headers {
    /// The source topic.
    pub const TOPIC: &str = "_dlq.errors.original.topic";
    /// The source partition (decimal).
    pub const PARTITION: &str = "_dlq.errors.original.partition";
    /// The source offset (decimal).
    pub const OFFSET: &str = "_dlq.errors.original.offset";
    /// The share group.
    pub const GROUP: &str = "_dlq.errors.group";
    /// Deliveries of the record (decimal).
    pub const DELIVERY_COUNT: &str = "_dlq.errors.delivery.count";
    /// `CLIENT_REJECTED` or `MAX_DELIVERY_ATTEMPTS_REACHED`.
    pub const REASON: &str = "_dlq.errors.disposition";
}

/// Errors of the share-group APIs (each door maps them to its codes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// Empty group id.
    #[error("invalid group id")]
    InvalidGroupId,
    /// No such share group (or the id is a classic group's).
    #[error("group id not found: {0}")]
    GroupIdNotFound(String),
    /// The member is not (or no longer) in the group.
    #[error("unknown member id")]
    UnknownMemberId,
    /// The member epoch is not the member's current one.
    #[error("fenced member epoch")]
    FencedMemberEpoch,
    /// A malformed request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Acknowledging a record that is not acquired by this member (or whose lock expired).
    #[error("invalid record state: {0}")]
    InvalidRecordState(String),
    /// The partition does not exist.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// A group config name or value that is not accepted.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The group still has members.
    #[error("the group is not empty")]
    NonEmptyGroup,
    /// The broker is stopping.
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// A log failed (the partition's or the internal one).
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<strom_log::LogError> for ShareError {
    fn from(e: strom_log::LogError) -> ShareError {
        ShareError::Storage(e.to_string())
    }
}

impl From<crate::BrokerError> for ShareError {
    fn from(e: crate::BrokerError) -> ShareError {
        match e {
            crate::BrokerError::UnknownTopicOrPartition { .. } => {
                ShareError::UnknownTopicOrPartition
            }
            e => ShareError::Storage(e.to_string()),
        }
    }
}

/// A ShareGroupHeartbeat.
#[derive(Clone, Debug, Default)]
pub struct ShareHeartbeat {
    /// Group id.
    pub group: String,
    /// Member id (chosen by the client in KIP-932 v1; empty on a join = the coordinator
    /// picks one).
    pub member_id: String,
    /// 0 = join, -1 = leave, else the member's current epoch.
    pub member_epoch: i32,
    /// Rack id.
    pub rack: Option<String>,
    /// Subscribed topic names; `None` = unchanged since the last heartbeat (required on a join).
    pub subscribed_topics: Option<Vec<String>>,
    /// Client id (for describe).
    pub client_id: String,
    /// Client host (for describe).
    pub client_host: String,
}

/// The partitions of one topic assigned to a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareAssignment {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: [u8; 16],
    /// Partition indexes, ascending.
    pub partitions: Vec<i32>,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug)]
pub struct ShareHeartbeatOutcome {
    /// The member id (the one sent, or the one picked).
    pub member_id: String,
    /// The member's epoch now (-1 after a leave).
    pub member_epoch: i32,
    /// `share.heartbeat.interval.ms` of the group.
    pub heartbeat_interval_ms: i32,
    /// Every partition of the subscribed topics.
    pub assignment: Vec<ShareAssignment>,
}

/// Bounds of one acquisition (a ShareFetch, an HTTP receive).
#[derive(Clone, Copy, Debug)]
pub struct AcquireLimits {
    /// Records acquired at most, over all partitions.
    pub max_records: usize,
    /// Bytes of batches returned at most (the first batch is returned whole).
    pub max_bytes: usize,
    /// Wait this long at most for something to acquire (capped at 300 s).
    pub max_wait: Duration,
}

/// What an acquisition returns for one partition.
#[derive(Clone, Debug, Default)]
pub struct AcquiredPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Whole stored batches holding the acquired records (they may hold others too: a
    /// reader delivers only the offsets of `acquired`).
    pub records: Bytes,
    /// The acquired offsets with their delivery counts, ascending.
    pub acquired: Vec<AcquiredRecords>,
    /// Why nothing was acquired from this partition, if it failed.
    pub error: Option<ShareError>,
}

/// Acknowledgement of a range of offsets.
#[derive(Clone, Debug)]
pub struct AckRange {
    /// First offset.
    pub first_offset: i64,
    /// Last offset (inclusive).
    pub last_offset: i64,
    /// One type for the whole range, or one per offset.
    pub types: Vec<AckType>,
    /// When set, every record's current delivery count must be this (a receipt of an older
    /// delivery is stale: INVALID_RECORD_STATE).
    pub delivery_count: Option<u16>,
}

/// Acknowledgements of one partition.
#[derive(Clone, Debug)]
pub struct AckPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Ranges.
    pub ranges: Vec<AckRange>,
}

/// A share group's state, as Kafka names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareGroupState {
    /// No members.
    Empty,
    /// Members.
    Stable,
}

impl ShareGroupState {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            ShareGroupState::Empty => "Empty",
            ShareGroupState::Stable => "Stable",
        }
    }
}

/// A member as described.
#[derive(Clone, Debug)]
pub struct ShareMemberDescription {
    /// Member id.
    pub member_id: String,
    /// Member epoch.
    pub member_epoch: i32,
    /// Rack.
    pub rack: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Subscribed topics.
    pub subscribed_topics: Vec<String>,
    /// Assignment.
    pub assignment: Vec<ShareAssignment>,
}

/// A share-partition as described (and as metrics show it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharePartitionStats {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Start offset (SPSO).
    pub start_offset: i64,
    /// End of the in-flight window.
    pub end_offset: i64,
    /// Records in the window.
    pub in_flight: usize,
    /// Acquired now.
    pub acquired: usize,
    /// Available now (including those waiting out a backoff).
    pub available: usize,
    /// Deliveries after the first, since start.
    pub redeliveries: u64,
    /// Records appended to the dead-letter topic, since start.
    pub dead_lettered: u64,
    /// Locks that expired, since start.
    pub lock_expiries: u64,
    /// Records not yet finished: log end − start − finished records of the window.
    pub lag: i64,
}

/// A share group as described.
#[derive(Clone, Debug)]
pub struct ShareGroupDescription {
    /// Group id.
    pub group: String,
    /// State.
    pub state: ShareGroupState,
    /// Group epoch.
    pub group_epoch: i32,
    /// Assignment epoch (= group epoch: the assignment is computed at once).
    pub assignment_epoch: i32,
    /// Members.
    pub members: Vec<ShareMemberDescription>,
    /// Share-partitions.
    pub partitions: Vec<SharePartitionStats>,
}

/// A share group as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareGroupListing {
    /// Group id.
    pub group: String,
    /// State.
    pub state: ShareGroupState,
}

/// A share-partition's start offset (DescribeShareGroupOffsets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Start offset; -1 when the share-partition was never initialised.
    pub start_offset: i64,
    /// Records not yet finished; -1 when unknown.
    pub lag: i64,
}

/// A group config as described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfigEntry {
    /// Name.
    pub name: String,
    /// Effective value.
    pub value: String,
    /// Whether it is the broker's default (not set on the group).
    pub is_default: bool,
}

struct Member {
    epoch: i32,
    rack: Option<String>,
    client_id: String,
    client_host: String,
    subscribed: Vec<String>,
    assignment: Vec<ShareAssignment>,
    last_seen: Instant,
}

#[derive(Default)]
struct ShareGroup {
    epoch: i32,
    members: BTreeMap<String, Member>,
    partitions: BTreeMap<(String, i32), SharePartition>,
}

#[derive(Default)]
struct State {
    groups: HashMap<String, ShareGroup>,
    /// Group configs, also of groups that do not exist (yet).
    configs: HashMap<String, BTreeMap<String, String>>,
}

/// A record to append to a dead-letter topic.
struct DeadLetter {
    group: String,
    topic: String,
    partition: i32,
    offset: i64,
    delivery_count: u16,
    reason: DeadLetterReason,
    dlq: Option<String>,
}

/// The share-group coordinator of this broker.
pub struct ShareCoordinator {
    config: ShareConfig,
    broker: Arc<Broker>,
    classic: Option<Arc<GroupCoordinator>>,
    state: Mutex<State>,
    store: Arc<Store>,
    /// Records became available (release, expiry, backoff over): wakes long polls.
    changed: Notify,
    /// Records wait to be dead-lettered.
    dead_letter: Notify,
    closed: AtomicBool,
    rng: AtomicU64,
}

impl ShareCoordinator {
    /// Opens the coordinator, replaying `.strom/share/` of `data_dir`. `classic` is the
    /// classic coordinator: its group ids cannot be share groups (and it is told the share
    /// groups' ids, so JoinGroup refuses them).
    pub fn open(
        data_dir: &Path,
        config: ShareConfig,
        broker: Arc<Broker>,
        classic: Option<Arc<GroupCoordinator>>,
    ) -> std::io::Result<Arc<ShareCoordinator>> {
        let store = Store::open(data_dir)?;
        let mut state = State::default();
        let mut entries = 0usize;
        for e in store.replay()? {
            entries += 1;
            apply_replayed(&mut state, e);
        }
        let partitions: usize = state.groups.values().map(|g| g.partitions.len()).sum();
        tracing::info!(
            groups = state.groups.len(),
            partitions,
            entries,
            bytes = store.size_bytes(),
            "share groups loaded"
        );
        let seed = strom_log::now_ms() as u64 ^ (std::process::id() as u64) << 32;
        let coordinator = Arc::new(ShareCoordinator {
            config,
            broker,
            classic,
            state: Mutex::new(state),
            store: Arc::new(store),
            changed: Notify::new(),
            dead_letter: Notify::new(),
            closed: AtomicBool::new(false),
            rng: AtomicU64::new(seed | 1),
        });
        if let Some(classic) = &coordinator.classic {
            let weak = Arc::downgrade(&coordinator);
            classic.set_foreign_groups(Arc::new(move |g: &str| {
                weak.upgrade().is_some_and(|s| s.is_share_group(g))
            }));
        }
        Ok(coordinator)
    }

    /// The broker's share settings.
    pub fn config(&self) -> &ShareConfig {
        &self.config
    }

    /// Whether `group` is a share group.
    pub fn is_share_group(&self, group: &str) -> bool {
        self.state.lock().groups.contains_key(group)
    }

    fn classic_owns(&self, group: &str) -> bool {
        self.classic.as_ref().is_some_and(|c| c.exists(group))
    }

    fn check_open(&self) -> Result<(), ShareError> {
        if self.closed.load(Ordering::Acquire) {
            Err(ShareError::CoordinatorNotAvailable)
        } else {
            Ok(())
        }
    }

    /// Up to 10 % of `b` (the backoff's jitter).
    fn jitter(&self, b: i64) -> i64 {
        if b < 10 {
            return 0;
        }
        // xorshift64*: enough to spread retries, no crate.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r % (b as u64 / 10).max(1)) as i64
    }

    fn policy(
        &self,
        configs: &HashMap<String, BTreeMap<String, String>>,
        group: &str,
        topic: &str,
    ) -> Policy {
        let topic_config = self.broker.topic(topic).map(|t| t.config());
        Policy::resolve(&self.config, configs.get(group), topic_config.as_ref())
    }

    async fn flush(&self, written: Option<store::Written>) -> Result<(), ShareError> {
        let Some(w) = written else { return Ok(()) };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush(&w))
            .await
            .map_err(|e| ShareError::Storage(e.to_string()))?
            .map_err(|e| ShareError::Storage(e.to_string()))
    }

    fn append(&self, entries: &[Entry]) -> Result<Option<store::Written>, ShareError> {
        self.store
            .append(entries)
            .map_err(|e| ShareError::Storage(e.to_string()))
    }

    // --- membership --------------------------------------------------------------------------

    /// ShareGroupHeartbeat: join (epoch 0), stay (the current epoch), leave (epoch -1).
    pub async fn heartbeat(&self, hb: ShareHeartbeat) -> Result<ShareHeartbeatOutcome, ShareError> {
        self.check_open()?;
        if hb.group.is_empty() {
            return Err(ShareError::InvalidGroupId);
        }
        if hb.member_epoch == -1 {
            self.leave(&hb.group, &hb.member_id).await?;
            return Ok(ShareHeartbeatOutcome {
                member_id: hb.member_id,
                member_epoch: -1,
                heartbeat_interval_ms: 0,
                assignment: Vec::new(),
            });
        }
        if hb.member_epoch < -1 {
            return Err(ShareError::InvalidRequest(format!(
                "member epoch {} is not valid",
                hb.member_epoch
            )));
        }
        if self.classic_owns(&hb.group) {
            return Err(ShareError::GroupIdNotFound(format!(
                "group {} is not a share group",
                hb.group
            )));
        }
        let now = Instant::now();
        let (outcome, written) = {
            let mut st = self.state.lock();
            let interval = config::group_long(
                &self.config,
                st.configs.get(&hb.group),
                HEARTBEAT_INTERVAL_MS,
            );
            let created = !st.groups.contains_key(&hb.group);
            if created && hb.member_epoch != 0 {
                return Err(ShareError::UnknownMemberId);
            }
            let g = st.groups.entry(hb.group.clone()).or_default();
            let member_id = if hb.member_id.is_empty() {
                if hb.member_epoch != 0 {
                    return Err(ShareError::UnknownMemberId);
                }
                new_member_id()
            } else {
                hb.member_id.clone()
            };
            if hb.member_epoch == 0 {
                let Some(topics) = hb.subscribed_topics.clone() else {
                    if created {
                        st.groups.remove(&hb.group);
                    }
                    return Err(ShareError::InvalidRequest(
                        "a joining member must send its subscribed topic names".into(),
                    ));
                };
                // A rejoin under the same id replaces the member (its records stay locked
                // until it acknowledges or they expire: the member id is the same client).
                let m = g.members.entry(member_id.clone()).or_insert(Member {
                    epoch: 0,
                    rack: None,
                    client_id: String::new(),
                    client_host: String::new(),
                    subscribed: Vec::new(),
                    assignment: Vec::new(),
                    last_seen: now,
                });
                m.epoch = 0;
                m.subscribed = topics;
            } else {
                let m = g
                    .members
                    .get_mut(&member_id)
                    .ok_or(ShareError::UnknownMemberId)?;
                if m.epoch != hb.member_epoch {
                    return Err(ShareError::FencedMemberEpoch);
                }
                if let Some(topics) = hb.subscribed_topics.clone() {
                    m.subscribed = topics;
                }
            }
            let assignment = self.assign(&g.members[&member_id].subscribed);
            let group_epoch = g.epoch;
            let m = g.members.get_mut(&member_id).expect("present");
            m.last_seen = now;
            m.rack = hb.rack.clone();
            m.client_id = hb.client_id.clone();
            m.client_host = hb.client_host.clone();
            let mut bumped = false;
            if m.epoch == 0 || m.assignment != assignment {
                m.assignment = assignment;
                bumped = true;
            }
            if bumped {
                g.epoch = group_epoch + 1;
                g.members.get_mut(&member_id).expect("present").epoch = g.epoch;
            }
            let m = &g.members[&member_id];
            let outcome = ShareHeartbeatOutcome {
                member_id: member_id.clone(),
                member_epoch: m.epoch,
                heartbeat_interval_ms: interval.clamp(0, i32::MAX as i64) as i32,
                assignment: m.assignment.clone(),
            };
            let written = if created {
                self.append(&[Entry::Group {
                    group: hb.group.clone(),
                    epoch: Some(g.epoch),
                }])?
            } else {
                None
            };
            (outcome, written)
        };
        self.flush(written).await?;
        Ok(outcome)
    }

    /// Every partition of the subscribed topics that exist.
    fn assign(&self, topics: &[String]) -> Vec<ShareAssignment> {
        let mut names: Vec<&String> = topics.iter().collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|t| {
                let topic = self.broker.topic(t)?;
                Some(ShareAssignment {
                    topic: t.clone(),
                    topic_id: topic.id(),
                    partitions: (0..topic.partitions().len() as i32).collect(),
                })
            })
            .collect()
    }

    /// A member leaves: its acquired records are released (as a RELEASE: delivery count kept,
    /// backoff applied, archived at the limit).
    pub async fn leave(&self, group: &str, member_id: &str) -> Result<(), ShareError> {
        let written = {
            let mut st = self.state.lock();
            let State { groups, configs } = &mut *st;
            let g = groups
                .get_mut(group)
                .ok_or_else(|| ShareError::GroupIdNotFound(group.to_string()))?;
            if g.members.remove(member_id).is_none() {
                return Err(ShareError::UnknownMemberId);
            }
            g.epoch += 1;
            let entries = self.release_member(configs, group, g, member_id);
            self.append(&entries)?
        };
        self.changed.notify_waiters();
        self.dead_letter.notify_one();
        self.flush(written).await
    }

    /// Gives back every record `member_id` holds without leaving the group (a Kafka share
    /// session that closes releases its acquired records).
    pub async fn release_all(&self, group: &str, member_id: &str) -> Result<(), ShareError> {
        let written = {
            let mut st = self.state.lock();
            let State { groups, configs } = &mut *st;
            let g = groups
                .get_mut(group)
                .ok_or_else(|| ShareError::GroupIdNotFound(group.to_string()))?;
            if !g.members.contains_key(member_id) {
                return Err(ShareError::UnknownMemberId);
            }
            let entries = self.release_member(configs, group, g, member_id);
            self.append(&entries)?
        };
        self.changed.notify_waiters();
        self.dead_letter.notify_one();
        self.flush(written).await
    }

    fn release_member(
        &self,
        configs: &HashMap<String, BTreeMap<String, String>>,
        group: &str,
        g: &mut ShareGroup,
        member_id: &str,
    ) -> Vec<Entry> {
        let now = strom_log::now_ms();
        let mut entries = Vec::new();
        for ((topic, p), sp) in g.partitions.iter_mut() {
            let policy = self.policy(configs, group, topic);
            sp.release_member(member_id, now, &policy, &mut |b| self.jitter(b));
            entries.extend(dirty_entry(group, topic, *p, sp));
        }
        entries
    }

    // --- acquisition -----------------------------------------------------------------------

    /// Acquires records of `partitions` for a member: available ones (not in backoff) and new
    /// ones up to the window bound, at most `limits.max_records`. Waits up to `max_wait`
    /// while there is nothing to acquire (woken by appends and releases). The acquisitions
    /// are on disk before it returns.
    pub async fn acquire(
        &self,
        group: &str,
        member_id: &str,
        partitions: &[(String, i32)],
        limits: AcquireLimits,
    ) -> Result<Vec<AcquiredPartition>, ShareError> {
        self.check_open()?;
        let deadline = Instant::now() + limits.max_wait.min(Duration::from_secs(300));
        loop {
            let appended = self.broker.append_notify().notified();
            let changed = self.changed.notified();
            tokio::pin!(appended);
            tokio::pin!(changed);
            appended.as_mut().enable();
            changed.as_mut().enable();
            let out = self
                .acquire_once(group, member_id, partitions, limits)
                .await?;
            let got = out
                .iter()
                .any(|p| !p.acquired.is_empty() || p.error.is_some());
            if got
                || Instant::now() >= deadline
                || self.broker.is_stopping()
                || self.closed.load(Ordering::Acquire)
            {
                return Ok(out);
            }
            tokio::select! {
                _ = &mut appended => {}
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn acquire_once(
        &self,
        group: &str,
        member_id: &str,
        partitions: &[(String, i32)],
        limits: AcquireLimits,
    ) -> Result<Vec<AcquiredPartition>, ShareError> {
        let member: Arc<str> = Arc::from(member_id);
        let mut left = limits.max_records;
        let mut bytes_left = limits.max_bytes.max(1);
        let mut out = Vec::with_capacity(partitions.len());
        let mut written = None;
        for (topic, p) in partitions {
            let mut ap = AcquiredPartition {
                topic: topic.clone(),
                partition: *p,
                ..Default::default()
            };
            if left == 0 || bytes_left == 0 {
                out.push(ap);
                continue;
            }
            match self.acquire_partition(
                group,
                &member,
                topic,
                *p,
                left,
                bytes_left,
                !out.iter()
                    .any(|o: &AcquiredPartition| !o.records.is_empty()),
            ) {
                Ok(Some((records, acquired, w))) => {
                    left -= acquired
                        .iter()
                        .map(|a| (a.last_offset - a.first_offset + 1) as usize)
                        .sum::<usize>()
                        .min(left);
                    bytes_left = bytes_left.saturating_sub(records.len());
                    ap.records = records;
                    ap.acquired = acquired;
                    if w.is_some() {
                        written = w;
                    }
                }
                Ok(None) => {}
                Err(ShareError::UnknownMemberId) => return Err(ShareError::UnknownMemberId),
                Err(ShareError::GroupIdNotFound(g)) => return Err(ShareError::GroupIdNotFound(g)),
                Err(e) => ap.error = Some(e),
            }
            out.push(ap);
        }
        self.flush(written).await?;
        Ok(out)
    }

    /// One partition: plan under the lock, read the log outside it, acquire under it.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn acquire_partition(
        &self,
        group: &str,
        member: &Arc<str>,
        topic: &str,
        partition: i32,
        max_records: usize,
        max_bytes: usize,
        first: bool,
    ) -> Result<Option<(Bytes, Vec<AcquiredRecords>, Option<store::Written>)>, ShareError> {
        let part = self.broker.partition(topic, partition)?;
        let log = part.log()?;
        let now = strom_log::now_ms();
        let (from, init) = self.plan(group, member, topic, partition, log, now)?;
        let read_committed = {
            let st = self.state.lock();
            self.policy(&st.configs, group, topic).read_committed
        };
        // read_committed: nothing at or past the last stable offset is acquired.
        let stop = if read_committed {
            part.last_stable_offset()?
        } else {
            i64::MAX
        };
        let from = match from {
            Some(f) if f < log.log_end_offset() && f < stop => f,
            _ => {
                if let Some(e) = init {
                    let w = self.append(&[e])?;
                    return Ok(Some((Bytes::new(), Vec::new(), w)));
                }
                return Ok(None);
            }
        };
        // An acquisition takes at most `max_records` (and the window's free room), so a read
        // of the client's whole `max_bytes` (often megabytes) would mostly be thrown away —
        // and kept alive until the response is written, since the answer is a slice of it.
        // At least one whole batch is read whatever the cap.
        let limit = if first {
            max_bytes.clamp(1, READ_MAX_BYTES)
        } else {
            max_bytes.min(READ_MAX_BYTES)
        }
        .min(ACQUIRE_READ_BYTES);
        let read = crate::broker::blocking(|| log.read_below(from, limit.max(1), stop))?;
        // The batches of aborted transactions are archived as control batches are.
        let aborted: Vec<crate::AbortedTxn> = if read_committed {
            log.aborted_ranges(from, stop)
                .into_iter()
                .map(|r| crate::AbortedTxn {
                    producer_id: r.producer_id,
                    first_offset: r.first_offset,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut filter = crate::AbortedFilter::new(&aborted);
        let spans: Vec<(usize, BatchSpan)> = strom_log::batch_headers(&read.data)
            .map(|(pos, h)| {
                let skip = filter.skip(&h);
                (
                    pos,
                    BatchSpan {
                        base: h.base_offset,
                        last: h.last_offset(),
                        control: h.is_control() || (read_committed && skip),
                    },
                )
            })
            .collect();
        let mut st = self.state.lock();
        let State { groups, configs } = &mut *st;
        let g = groups
            .get_mut(group)
            .ok_or_else(|| ShareError::GroupIdNotFound(group.to_string()))?;
        if !g.members.contains_key(&**member) {
            return Err(ShareError::UnknownMemberId);
        }
        let policy = self.policy(configs, group, topic);
        let Some(sp) = g.partitions.get_mut(&(topic.to_string(), partition)) else {
            return Ok(None);
        };
        let only: Vec<BatchSpan> = spans.iter().map(|(_, s)| *s).collect();
        let acquired = sp.acquire(&only, member, now, &policy, max_records);
        let mut entries: Vec<Entry> = Vec::new();
        entries.extend(init);
        entries.extend(dirty_entry(group, topic, partition, sp));
        let w = self.append(&entries)?;
        drop(st);
        if acquired.is_empty() {
            return Ok(Some((Bytes::new(), acquired, w)));
        }
        // Only the batches that hold acquired offsets.
        let lo = acquired[0].first_offset;
        let hi = acquired.last().expect("non-empty").last_offset;
        let mut start = None;
        let mut end = 0;
        for (i, (pos, s)) in spans.iter().enumerate() {
            if s.last >= lo && s.base <= hi {
                start.get_or_insert(*pos);
                end = spans.get(i + 1).map_or(read.data.len(), |(p, _)| *p);
            }
        }
        let records = match start {
            Some(s) if s < end => read.data.slice(s..end),
            _ => read.data,
        };
        Ok(Some((records, acquired, w)))
    }

    /// Where an acquisition of this partition would start now (`None`: nothing acquirable
    /// in the window and the window full), initialising the share-partition at the group's
    /// `share.auto.offset.reset` on first use (the returned entry records it).
    fn plan(
        &self,
        group: &str,
        member: &str,
        topic: &str,
        partition: i32,
        log: &strom_log::Log,
        now: i64,
    ) -> Result<(Option<i64>, Option<Entry>), ShareError> {
        let mut st = self.state.lock();
        let State { groups, configs } = &mut *st;
        let g = groups
            .get_mut(group)
            .ok_or_else(|| ShareError::GroupIdNotFound(group.to_string()))?;
        if !g.members.contains_key(member) {
            return Err(ShareError::UnknownMemberId);
        }
        let policy = self.policy(configs, group, topic);
        let key = (topic.to_string(), partition);
        let sp = match g.partitions.get_mut(&key) {
            Some(sp) => sp,
            None => {
                let start = self.initial_offset(configs.get(group), topic, partition, log)?;
                g.partitions
                    .entry(key)
                    .or_insert_with(|| SharePartition::new(start))
            }
        };
        let log_start = log.log_start_offset();
        if sp.spso < log_start {
            sp.reset_start(log_start);
        }
        let init = dirty_entry(group, topic, partition, sp);
        Ok((sp.acquirable_from(now, policy.max_locks), init))
    }

    /// Waits up to `max_wait` until something of `partitions` can be acquired by the member,
    /// without acquiring it (a door that must reserve memory for its answer first). True if
    /// something is acquirable now (another member may still take it first).
    pub async fn wait_acquirable(
        &self,
        group: &str,
        member_id: &str,
        partitions: &[(String, i32)],
        max_wait: Duration,
    ) -> Result<bool, ShareError> {
        self.check_open()?;
        let deadline = Instant::now() + max_wait.min(Duration::from_secs(300));
        loop {
            let appended = self.broker.append_notify().notified();
            let changed = self.changed.notified();
            tokio::pin!(appended);
            tokio::pin!(changed);
            appended.as_mut().enable();
            changed.as_mut().enable();
            let now = strom_log::now_ms();
            let mut entries = Vec::new();
            let mut ready = false;
            for (topic, p) in partitions {
                let part = self.broker.partition(topic, *p)?;
                let log = part.log()?;
                let (from, init) = self.plan(group, member_id, topic, *p, log, now)?;
                entries.extend(init);
                let read_committed = {
                    let st = self.state.lock();
                    self.policy(&st.configs, group, topic).read_committed
                };
                let end = if read_committed {
                    part.last_stable_offset()?
                } else {
                    log.log_end_offset()
                };
                ready |= from.is_some_and(|f| f < end);
            }
            let w = self.append(&entries)?;
            self.flush(w).await?;
            if ready
                || Instant::now() >= deadline
                || self.broker.is_stopping()
                || self.closed.load(Ordering::Acquire)
            {
                return Ok(ready);
            }
            tokio::select! {
                _ = &mut appended => {}
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn initial_offset(
        &self,
        configs: Option<&BTreeMap<String, String>>,
        topic: &str,
        partition: i32,
        log: &strom_log::Log,
    ) -> Result<i64, ShareError> {
        Ok(match config::group_reset(configs) {
            OffsetReset::Latest => log.log_end_offset(),
            OffsetReset::Earliest => log.log_start_offset(),
            OffsetReset::ByDuration(ms) => {
                let ts = strom_log::now_ms().saturating_sub(ms);
                match self.broker.list_offset(topic, partition, ts)? {
                    (-1, _) => log.log_end_offset(),
                    (offset, _) => offset.max(log.log_start_offset()),
                }
            }
        })
    }

    // --- acknowledgement -------------------------------------------------------------------

    /// Acknowledges ranges of one partition. Refused as a whole (nothing applied) when a
    /// record of it is not acquired by this member, its lock expired, or (with
    /// `delivery_count`) it was delivered again since: INVALID_RECORD_STATE.
    pub async fn acknowledge(
        &self,
        group: &str,
        member_id: &str,
        topic: &str,
        partition: i32,
        ranges: &[AckRange],
    ) -> Result<(), ShareError> {
        let r = self
            .acknowledge_many(
                group,
                member_id,
                &[AckPartition {
                    topic: topic.to_string(),
                    partition,
                    ranges: ranges.to_vec(),
                }],
            )
            .await?;
        r.into_iter().next().unwrap_or(Ok(()))
    }

    /// Acknowledges several partitions with one sync; per-partition results (each partition
    /// all or nothing). The outer error is the group's or the member's.
    pub async fn acknowledge_many(
        &self,
        group: &str,
        member_id: &str,
        partitions: &[AckPartition],
    ) -> Result<Vec<Result<(), ShareError>>, ShareError> {
        self.check_open()?;
        let now = strom_log::now_ms();
        let (results, written, dead) = {
            let mut st = self.state.lock();
            let State { groups, configs } = &mut *st;
            let g = groups
                .get_mut(group)
                .ok_or_else(|| ShareError::GroupIdNotFound(group.to_string()))?;
            if !g.members.contains_key(member_id) {
                return Err(ShareError::UnknownMemberId);
            }
            let mut results = Vec::with_capacity(partitions.len());
            let mut entries = Vec::new();
            let mut dead = false;
            for ap in partitions {
                let Some(sp) = g.partitions.get_mut(&(ap.topic.clone(), ap.partition)) else {
                    results.push(Err(
                        if self.broker.partition(&ap.topic, ap.partition).is_ok() {
                            ShareError::InvalidRecordState(
                                "nothing of this partition is in flight".into(),
                            )
                        } else {
                            ShareError::UnknownTopicOrPartition
                        },
                    ));
                    continue;
                };
                let checked = ap.ranges.iter().try_for_each(|r| {
                    sp.check_ack(
                        member_id,
                        r.first_offset,
                        r.last_offset,
                        &r.types,
                        r.delivery_count,
                        now,
                    )
                });
                let overlapping = {
                    let mut spans: Vec<(i64, i64)> = ap
                        .ranges
                        .iter()
                        .map(|r| (r.first_offset, r.last_offset))
                        .collect();
                    spans.sort_unstable();
                    spans.windows(2).any(|w| w[1].0 <= w[0].1)
                };
                match checked {
                    Err(AckRefused::InvalidRecordState(why)) => {
                        results.push(Err(ShareError::InvalidRecordState(why)));
                        continue;
                    }
                    Err(AckRefused::InvalidRequest(why)) => {
                        results.push(Err(ShareError::InvalidRequest(why)));
                        continue;
                    }
                    Ok(()) if overlapping => {
                        results.push(Err(ShareError::InvalidRequest("overlapping ranges".into())));
                        continue;
                    }
                    Ok(()) => {}
                }
                let policy = self.policy(configs, group, &ap.topic);
                for r in &ap.ranges {
                    sp.apply_ack(
                        r.first_offset,
                        r.last_offset,
                        &r.types,
                        now,
                        &policy,
                        &mut |b| self.jitter(b),
                    );
                    dead |= r
                        .types
                        .iter()
                        .any(|t| matches!(t, AckType::Reject | AckType::Release));
                }
                entries.extend(dirty_entry(group, &ap.topic, ap.partition, sp));
                results.push(Ok(()));
            }
            (results, self.append(&entries)?, dead)
        };
        self.flush(written).await?;
        if dead {
            self.dead_letter.notify_one();
            self.changed.notify_waiters();
        }
        Ok(results)
    }

    // --- admin -------------------------------------------------------------------------------

    /// ListGroups of the share groups.
    pub fn list(&self) -> Vec<ShareGroupListing> {
        let st = self.state.lock();
        let mut out: Vec<ShareGroupListing> = st
            .groups
            .iter()
            .map(|(id, g)| ShareGroupListing {
                group: id.clone(),
                state: if g.members.is_empty() {
                    ShareGroupState::Empty
                } else {
                    ShareGroupState::Stable
                },
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// ShareGroupDescribe.
    pub fn describe(&self, group: &str) -> Result<ShareGroupDescription, ShareError> {
        let st = self.state.lock();
        let g = st
            .groups
            .get(group)
            .ok_or_else(|| ShareError::GroupIdNotFound(group.to_string()))?;
        Ok(ShareGroupDescription {
            group: group.to_string(),
            state: if g.members.is_empty() {
                ShareGroupState::Empty
            } else {
                ShareGroupState::Stable
            },
            group_epoch: g.epoch,
            assignment_epoch: g.epoch,
            members: g
                .members
                .iter()
                .map(|(id, m)| ShareMemberDescription {
                    member_id: id.clone(),
                    member_epoch: m.epoch,
                    rack: m.rack.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topics: m.subscribed.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            partitions: g
                .partitions
                .iter()
                .map(|((t, p), sp)| self.stats(group, t, *p, sp))
                .collect(),
        })
    }

    fn stats(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        sp: &SharePartition,
    ) -> SharePartitionStats {
        let (in_flight, acquired, available) = sp.counts();
        let log_end = self
            .broker
            .partition(topic, partition)
            .ok()
            .and_then(|p| p.log().ok().map(|l| l.log_end_offset()));
        SharePartitionStats {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
            start_offset: sp.spso,
            end_offset: sp.end(),
            in_flight,
            acquired,
            available,
            redeliveries: sp.redeliveries,
            dead_lettered: sp.dead_lettered,
            lock_expiries: sp.lock_expiries,
            lag: log_end.map_or(-1, |e| (e - sp.spso - sp.finished() as i64).max(0)),
        }
    }

    /// Records `member_id` holds acquired now (with a live lock), over the group's partitions.
    pub fn held_by(&self, group: &str, member_id: &str) -> usize {
        let now = strom_log::now_ms();
        let st = self.state.lock();
        st.groups.get(group).map_or(0, |g| {
            g.partitions
                .values()
                .map(|sp| sp.held_by(member_id, now))
                .sum()
        })
    }

    /// Every share-partition's stats (for `/metrics`).
    pub fn metrics(&self) -> Vec<SharePartitionStats> {
        let st = self.state.lock();
        let mut out = Vec::new();
        let mut ids: Vec<&String> = st.groups.keys().collect();
        ids.sort();
        for id in ids {
            for ((t, p), sp) in &st.groups[id].partitions {
                out.push(self.stats(id, t, *p, sp));
            }
        }
        out
    }

    /// DescribeShareGroupOffsets: the start offset and lag of the given partitions (`None`:
    /// every initialised share-partition of the group).
    pub fn offsets(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<ShareOffset>, ShareError> {
        let st = self.state.lock();
        let g = st
            .groups
            .get(group)
            .ok_or_else(|| ShareError::GroupIdNotFound(group.to_string()))?;
        let one = |t: &str, p: i32| match g.partitions.get(&(t.to_string(), p)) {
            Some(sp) => {
                let s = self.stats(group, t, p, sp);
                ShareOffset {
                    topic: t.to_string(),
                    partition: p,
                    start_offset: s.start_offset,
                    lag: s.lag,
                }
            }
            None => ShareOffset {
                topic: t.to_string(),
                partition: p,
                start_offset: -1,
                lag: -1,
            },
        };
        Ok(match partitions {
            Some(ps) => ps.iter().map(|(t, p)| one(t, *p)).collect(),
            None => g.partitions.keys().map(|(t, p)| one(t, *p)).collect(),
        })
    }

    /// AlterShareGroupOffsets: sets start offsets (the window is cleared). Only while the
    /// group has no members (NonEmptyGroup); creates the group if needed.
    pub async fn alter_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<Vec<Result<(), ShareError>>, ShareError> {
        self.check_open()?;
        if group.is_empty() {
            return Err(ShareError::InvalidGroupId);
        }
        if self.classic_owns(group) {
            return Err(ShareError::GroupIdNotFound(format!(
                "group {group} is not a share group"
            )));
        }
        let written = {
            let mut st = self.state.lock();
            let created = !st.groups.contains_key(group);
            let g = st.groups.entry(group.to_string()).or_default();
            if !g.members.is_empty() {
                return Err(ShareError::NonEmptyGroup);
            }
            let mut entries = Vec::new();
            if created {
                entries.push(Entry::Group {
                    group: group.to_string(),
                    epoch: Some(0),
                });
            }
            let mut results = Vec::new();
            for (t, p, offset) in offsets {
                let log = match self.broker.partition(t, *p).and_then(|p| {
                    let l = p.log()?;
                    Ok((l.log_start_offset(), l.log_end_offset()))
                }) {
                    Ok(l) => l,
                    Err(e) => {
                        results.push(Err(e.into()));
                        continue;
                    }
                };
                if *offset < 0 {
                    results.push(Err(ShareError::InvalidRequest(format!(
                        "offset {offset} is negative"
                    ))));
                    continue;
                }
                let start = (*offset).clamp(log.0, log.1);
                let sp = g
                    .partitions
                    .entry((t.clone(), *p))
                    .or_insert_with(|| SharePartition::new(start));
                sp.recs.clear();
                sp.reset_start(start);
                entries.push(snapshot_entry(group, t, *p, sp));
                results.push(Ok(()));
            }
            let w = self.append(&entries)?;
            (results, w)
        };
        let (results, w) = written;
        self.flush(w).await?;
        Ok(results)
    }

    /// DeleteShareGroupOffsets: forgets the share-partitions of these topics (they start
    /// again from `share.auto.offset.reset`). Only while the group has no members.
    pub async fn delete_offsets(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Vec<Result<(), ShareError>>, ShareError> {
        self.check_open()?;
        let (results, w) = {
            let mut st = self.state.lock();
            let g = st
                .groups
                .get_mut(group)
                .ok_or_else(|| ShareError::GroupIdNotFound(group.to_string()))?;
            if !g.members.is_empty() {
                return Err(ShareError::NonEmptyGroup);
            }
            let mut entries = Vec::new();
            let mut results = Vec::new();
            for t in topics {
                let keys: Vec<(String, i32)> = g
                    .partitions
                    .keys()
                    .filter(|(tt, _)| tt == t)
                    .cloned()
                    .collect();
                if keys.is_empty() && self.broker.topic(t).is_none() {
                    results.push(Err(ShareError::UnknownTopicOrPartition));
                    continue;
                }
                for (tt, p) in keys {
                    g.partitions.remove(&(tt.clone(), p));
                    entries.push(Entry::Partition {
                        group: group.to_string(),
                        topic: tt,
                        partition: p,
                        value: None,
                    });
                }
                results.push(Ok(()));
            }
            (results, self.append(&entries)?)
        };
        self.flush(w).await?;
        Ok(results)
    }

    /// DeleteGroups of a share group: only an empty one; its state and configs go with it.
    pub async fn delete_group(&self, group: &str) -> Result<(), ShareError> {
        self.check_open()?;
        let w = {
            let mut st = self.state.lock();
            let g = st
                .groups
                .get(group)
                .ok_or_else(|| ShareError::GroupIdNotFound(group.to_string()))?;
            if !g.members.is_empty() {
                return Err(ShareError::NonEmptyGroup);
            }
            let mut entries: Vec<Entry> = g
                .partitions
                .keys()
                .map(|(t, p)| Entry::Partition {
                    group: group.to_string(),
                    topic: t.clone(),
                    partition: *p,
                    value: None,
                })
                .collect();
            entries.push(Entry::Group {
                group: group.to_string(),
                epoch: None,
            });
            if st.configs.remove(group).is_some() {
                entries.push(Entry::Configs {
                    group: group.to_string(),
                    configs: None,
                });
            }
            st.groups.remove(group);
            self.append(&entries)?
        };
        self.flush(w).await
    }

    // --- group configs -----------------------------------------------------------------------

    /// The acquisition lock duration `group`'s records get (`share.record.lock.duration.ms`,
    /// resolved as an acquisition resolves it), for the doors' answers.
    pub fn record_lock_duration_ms(&self, group: &str) -> i64 {
        let st = self.state.lock();
        Policy::resolve(&self.config, st.configs.get(group), None).lock_ms
    }

    /// Every group config with its effective value (DescribeConfigs of a GROUP resource).
    pub fn group_configs(&self, group: &str) -> Vec<GroupConfigEntry> {
        let st = self.state.lock();
        let set = st.configs.get(group);
        GROUP_CONFIGS
            .iter()
            .map(|d| match set.and_then(|s| s.get(d.name)) {
                Some(v) => GroupConfigEntry {
                    name: d.name.to_string(),
                    value: v.clone(),
                    is_default: false,
                },
                None => GroupConfigEntry {
                    name: d.name.to_string(),
                    value: config::group_config_default(&self.config, d.name).unwrap_or_default(),
                    is_default: true,
                },
            })
            .collect()
    }

    /// IncrementalAlterConfigs of a GROUP resource: every op is validated first (an unknown
    /// name or a bad value: INVALID_CONFIG, nothing changed), then applied and made durable.
    pub async fn alter_group_configs(
        &self,
        group: &str,
        ops: &[ConfigOp],
        validate_only: bool,
    ) -> Result<(), ShareError> {
        self.check_open()?;
        if group.is_empty() {
            return Err(ShareError::InvalidGroupId);
        }
        for op in ops {
            match op {
                ConfigOp::Set(n, v) => {
                    validate_group_config(n, v).map_err(ShareError::InvalidConfig)?
                }
                ConfigOp::Delete(n) => {
                    group_config_def(n).ok_or_else(|| {
                        ShareError::InvalidConfig(format!("unknown group config {n:?}"))
                    })?;
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        let w = {
            let mut st = self.state.lock();
            let c = st.configs.entry(group.to_string()).or_default();
            for op in ops {
                match op {
                    ConfigOp::Set(n, v) => {
                        c.insert(n.clone(), v.clone());
                    }
                    ConfigOp::Delete(n) => {
                        c.remove(n);
                    }
                }
            }
            let c = c.clone();
            self.append(&[Entry::Configs {
                group: group.to_string(),
                configs: Some(c),
            }])?
        };
        self.flush(w).await
    }

    // --- lifecycle ---------------------------------------------------------------------------

    /// Periodic work until [`ShareCoordinator::close`]: lock expiry, session expiry, wake-ups
    /// when a backoff ends, dead-lettering, rewriting the internal log when it has grown.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.tick_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ms = strom_log::now_ms();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.dead_letter.notified() => {}
            }
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let now_ms = strom_log::now_ms();
            if let Err(e) = self.tick(last_ms, now_ms).await {
                tracing::warn!(error = %e, "share groups: periodic work failed");
            }
            last_ms = now_ms;
            if let Err(e) = self.dead_letter_pass().await {
                tracing::warn!(error = %e, "share groups: dead-lettering failed (retried)");
            }
            if self.store.wants_rewrite(self.config.rewrite_after_bytes) {
                if let Err(e) = crate::broker::blocking(|| self.rewrite()) {
                    tracing::warn!(error = %e, "share groups: rewriting the internal log failed");
                }
            }
        }
    }

    /// One tick: expiries and backoff wake-ups between `last_ms` and `now_ms`.
    async fn tick(&self, last_ms: i64, now_ms: i64) -> Result<(), ShareError> {
        let now = Instant::now();
        let (w, wake) = {
            let mut st = self.state.lock();
            let State { groups, configs } = &mut *st;
            let mut entries = Vec::new();
            let mut wake = false;
            for (id, g) in groups.iter_mut() {
                let session = Duration::from_millis(
                    config::group_long(&self.config, configs.get(id), SESSION_TIMEOUT_MS).max(1)
                        as u64,
                );
                let expired: Vec<String> = g
                    .members
                    .iter()
                    .filter(|(_, m)| now.duration_since(m.last_seen) > session)
                    .map(|(k, _)| k.clone())
                    .collect();
                for m in expired {
                    tracing::info!(group = %id, member = %m, "share group session expired, member removed");
                    g.members.remove(&m);
                    g.epoch += 1;
                    entries.extend(self.release_member(configs, id, g, &m));
                    wake = true;
                }
                // Share-partitions of deleted topics (or partitions) go with them.
                let gone: Vec<(String, i32)> = g
                    .partitions
                    .keys()
                    .filter(|(t, p)| {
                        self.broker
                            .topic(t)
                            .is_none_or(|topic| topic.partition(*p).is_none())
                    })
                    .cloned()
                    .collect();
                for (t, p) in gone {
                    g.partitions.remove(&(t.clone(), p));
                    entries.push(Entry::Partition {
                        group: id.clone(),
                        topic: t,
                        partition: p,
                        value: None,
                    });
                }
                for ((t, p), sp) in g.partitions.iter_mut() {
                    if !sp.due(now_ms) {
                        continue;
                    }
                    let policy = self.policy(configs, id, t);
                    if sp.expire_locks(now_ms, &policy, &mut |b| self.jitter(b)) > 0 {
                        wake = true;
                    }
                    if !wake && sp.next_due_ms(last_ms).is_some_and(|d| d <= now_ms) {
                        wake = true;
                    }
                    sp.schedule(now_ms);
                    entries.extend(dirty_entry(id, t, *p, sp));
                }
            }
            (self.append(&entries)?, wake)
        };
        self.flush(w).await?;
        if wake {
            self.changed.notify_waiters();
            self.dead_letter.notify_one();
        }
        Ok(())
    }

    /// Appends records waiting in the dead-letter state to their group's DLQ topic (created
    /// if missing), then archives them. A crash between the two appends the record again at
    /// the next start (at least once).
    async fn dead_letter_pass(&self) -> Result<(), ShareError> {
        let work: Vec<DeadLetter> = {
            let mut st = self.state.lock();
            let State { groups, configs } = &mut *st;
            let mut work = Vec::new();
            for (id, g) in groups.iter_mut() {
                let dlq = configs
                    .get(id)
                    .and_then(|c| c.get(DLQ_TOPIC))
                    .filter(|v| !v.is_empty())
                    .cloned();
                for ((t, p), sp) in g.partitions.iter_mut() {
                    for (offset, delivery_count, reason) in sp.dead_letters(256) {
                        work.push(DeadLetter {
                            group: id.clone(),
                            topic: t.clone(),
                            partition: *p,
                            offset,
                            delivery_count,
                            reason,
                            dlq: dlq.clone(),
                        });
                    }
                }
            }
            work
        };
        if work.is_empty() {
            return Ok(());
        }
        let mut done = Vec::with_capacity(work.len());
        for d in work {
            let counted = match &d.dlq {
                Some(dlq) => match self.append_dead_letter(dlq, &d).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(group = %d.group, topic = %d.topic, partition = d.partition, offset = d.offset, dlq, error = %e, "could not dead-letter a record (retried)");
                        continue;
                    }
                },
                // The DLQ topic was unset meanwhile: archive only.
                None => false,
            };
            done.push((d, counted));
        }
        let w = {
            let mut st = self.state.lock();
            let mut entries = Vec::new();
            for (d, counted) in done {
                if let Some(sp) = st
                    .groups
                    .get_mut(&d.group)
                    .and_then(|g| g.partitions.get_mut(&(d.topic.clone(), d.partition)))
                {
                    sp.archive_dead_letter(d.offset, counted);
                    entries.extend(dirty_entry(&d.group, &d.topic, d.partition, sp));
                }
            }
            self.append(&entries)?
        };
        self.flush(w).await
    }

    /// The record at `offset` of a partition, if it is still there and readable.
    fn read_record(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<strom_records::Record>, ShareError> {
        let log = self.broker.partition(topic, partition)?;
        let log = log.log()?;
        let read = log
            .read(offset, 1)
            .map_err(|e| ShareError::Storage(e.to_string()))?;
        let mut found = None;
        for (h, records) in strom_records::decode_batches(&read.data) {
            if h.base_offset > offset {
                break;
            }
            if let Ok(records) = records {
                found = records.into_iter().find(|r| r.offset == offset).or(found);
            }
        }
        Ok(found)
    }

    /// Plans the re-drive of a dead-lettered record: the record at `offset` of `dlq_topic` /
    /// `partition` goes back to the topic it came from (its `_dlq.errors.original.topic`
    /// header), to its original partition when that still exists (else by key), with its key,
    /// value and own headers (the `_dlq.errors.*` ones dropped). The door checks that the
    /// caller may write `plan.topic`, then [`ShareCoordinator::redrive`] writes it. The
    /// dead-letter copy stays (its topic's retention removes it).
    pub fn redrive_plan(
        &self,
        dlq_topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Redrive, ShareError> {
        let p = self.broker.partition(dlq_topic, partition)?;
        let (start, end) = {
            let log = p.log()?;
            (log.log_start_offset(), log.log_end_offset())
        };
        if !(start..end).contains(&offset) {
            return Err(ShareError::InvalidRequest(format!(
                "offset {offset} is not in {dlq_topic}/{partition} (its records are {start}..{end})"
            )));
        }
        let rec =
            self.read_record(dlq_topic, partition, offset)?
                .ok_or(ShareError::InvalidRequest(format!(
                    "no record at offset {offset} of {dlq_topic}/{partition}"
                )))?;
        let header = |name: &str| {
            rec.headers
                .iter()
                .rev()
                .find(|(k, _)| k.as_ref() == name.as_bytes())
                .and_then(|(_, v)| v.as_deref())
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        let topic = header(dlq_headers::TOPIC).ok_or(ShareError::InvalidRequest(format!(
            "{dlq_topic}/{partition} offset {offset} is not a dead-lettered record (no {} header)",
            dlq_headers::TOPIC
        )))?;
        let t = self
            .broker
            .topic(&topic)
            .ok_or(ShareError::UnknownTopicOrPartition)?;
        let n = t.partitions().len().max(1) as i32;
        let target = match header(dlq_headers::PARTITION).and_then(|p| p.parse::<i32>().ok()) {
            Some(p) if (0..n).contains(&p) => p,
            _ => match &rec.key {
                Some(k) => crate::records::partition_for_key(k, n),
                None => 0,
            },
        };
        let headers: Vec<(&str, Option<&[u8]>)> = rec
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(b"_dlq.errors."))
            .map(|(k, v)| (std::str::from_utf8(k).unwrap_or(""), v.as_deref()))
            .collect();
        let new = strom_records::NewRecord {
            key: rec.key.as_deref(),
            value: rec.value.as_deref(),
            headers,
        };
        Ok(Redrive {
            topic,
            partition: target,
            batch: crate::records::build_batch(strom_log::now_ms(), std::slice::from_ref(&new)),
            from: (dlq_topic.to_string(), partition, offset),
        })
    }

    /// Writes a planned re-drive; returns the offset it got.
    pub async fn redrive(&self, plan: &Redrive) -> Result<i64, ShareError> {
        let ack = self
            .broker
            .produce(&plan.topic, plan.partition, &plan.batch)
            .await?;
        let (from, partition, offset) = &plan.from;
        tracing::info!(from = %from, partition, offset, to = %plan.topic, to_partition = plan.partition,
            to_offset = ack.base_offset, "dead-lettered record re-driven");
        Ok(ack.base_offset)
    }

    async fn append_dead_letter(&self, dlq: &str, d: &DeadLetter) -> Result<(), ShareError> {
        let found = self.read_record(&d.topic, d.partition, d.offset)?;
        let Some(rec) = found else {
            // Gone (retention) or unreadable: nothing to copy.
            tracing::warn!(topic = %d.topic, partition = d.partition, offset = d.offset, "a record to dead-letter could not be read; it is archived without a copy");
            return Ok(());
        };
        let (partition_s, offset_s, dc_s) = (
            d.partition.to_string(),
            d.offset.to_string(),
            d.delivery_count.to_string(),
        );
        // The copy is stored now: a delay the record asked for was served when it reached
        // its topic, so its delay headers are not carried over (they would delay it again).
        let mut headers: Vec<(&str, Option<&[u8]>)> = rec
            .headers
            .iter()
            .filter(|(k, _)| {
                k.as_ref() != crate::reserved::DELAY_MS_HEADER
                    && k.as_ref() != crate::reserved::DELIVER_AT_HEADER
            })
            .map(|(k, v)| (std::str::from_utf8(k).unwrap_or(""), v.as_deref()))
            .collect();
        headers.extend([
            (dlq_headers::TOPIC, Some(d.topic.as_bytes())),
            (dlq_headers::PARTITION, Some(partition_s.as_bytes())),
            (dlq_headers::OFFSET, Some(offset_s.as_bytes())),
            (dlq_headers::GROUP, Some(d.group.as_bytes())),
            (dlq_headers::DELIVERY_COUNT, Some(dc_s.as_bytes())),
            (dlq_headers::REASON, Some(d.reason.name().as_bytes())),
        ]);
        let new = strom_records::NewRecord {
            key: rec.key.as_deref(),
            value: rec.value.as_deref(),
            headers,
        };
        let batch = crate::records::build_batch(strom_log::now_ms(), std::slice::from_ref(&new));
        let topic = match self.broker.topic(dlq) {
            Some(t) => t,
            None => {
                match self.broker.create_topic(dlq, -1, Vec::new(), false) {
                    Ok(()) | Err(crate::BrokerError::TopicAlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                self.broker
                    .topic(dlq)
                    .ok_or(ShareError::UnknownTopicOrPartition)?
            }
        };
        let n = topic.partitions().len().max(1) as i32;
        let target = match &rec.key {
            Some(k) => crate::records::partition_for_key(k, n),
            None => d.partition.rem_euclid(n),
        };
        self.broker.produce(dlq, target, &batch).await?;
        let ack = self.broker.partition(dlq, target)?;
        // The DLQ record must be on disk before the source record is archived.
        let end = ack.log()?.log_end_offset();
        let p = ack.clone();
        tokio::task::spawn_blocking(move || p.log().map(|l| l.flush_to(end)))
            .await
            .map_err(|e| ShareError::Storage(e.to_string()))?
            .map_err(ShareError::from)?
            .map_err(|e| ShareError::Storage(e.to_string()))?;
        Ok(())
    }

    /// Writes the whole state as snapshots into a new generation of the internal log.
    fn rewrite(&self) -> std::io::Result<()> {
        let st = self.state.lock();
        let mut entries = Vec::new();
        for (id, g) in &st.groups {
            entries.push(Entry::Group {
                group: id.clone(),
                epoch: Some(g.epoch),
            });
            for ((t, p), sp) in &g.partitions {
                entries.push(snapshot_entry(id, t, *p, sp));
            }
        }
        for (id, c) in &st.configs {
            entries.push(Entry::Configs {
                group: id.clone(),
                configs: Some(c.clone()),
            });
        }
        let before = self.store.size_bytes();
        self.store.rewrite(&entries)?;
        tracing::info!(
            before_bytes = before,
            after_bytes = self.store.size_bytes(),
            "share groups: internal log rewritten as a snapshot"
        );
        Ok(())
    }

    /// Stops the ticker and long polls, flushes and closes the internal log.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify_waiters();
        self.dead_letter.notify_one();
        self.store.close();
    }
}

/// The delta of a share-partition since its last write, if anything changed.
fn dirty_entry(group: &str, topic: &str, partition: i32, sp: &mut SharePartition) -> Option<Entry> {
    let (runs, moved) = sp.take_dirty();
    if runs.is_empty() && !moved {
        return None;
    }
    Some(Entry::Partition {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
        value: Some(PartitionValue {
            snapshot: false,
            spso: sp.spso,
            runs,
        }),
    })
}

fn snapshot_entry(group: &str, topic: &str, partition: i32, sp: &SharePartition) -> Entry {
    Entry::Partition {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
        value: Some(PartitionValue {
            snapshot: true,
            spso: sp.spso,
            runs: sp.runs(),
        }),
    }
}

fn apply_replayed(st: &mut State, e: Entry) {
    match e {
        Entry::Group { group, epoch: None } => {
            st.groups.remove(&group);
        }
        Entry::Group {
            group,
            epoch: Some(epoch),
        } => {
            st.groups.entry(group).or_default().epoch = epoch;
        }
        Entry::Configs { group, configs } => match configs {
            Some(c) => {
                st.configs.insert(group, c);
            }
            None => {
                st.configs.remove(&group);
            }
        },
        Entry::Partition {
            group,
            topic,
            partition,
            value,
        } => {
            let g = st.groups.entry(group).or_default();
            match value {
                None => {
                    g.partitions.remove(&(topic, partition));
                }
                Some(v) => {
                    let sp = g
                        .partitions
                        .entry((topic, partition))
                        .or_insert_with(|| SharePartition::new(v.spso));
                    sp.load_runs(v.spso, &v.runs, v.snapshot);
                }
            }
        }
    }
}

fn new_member_id() -> String {
    let id =
        crate::topic::random_id().unwrap_or_else(|_| (strom_log::now_ms() as u128).to_be_bytes());
    crate::topic::hex(&id)
}
