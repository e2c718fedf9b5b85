//! Replication of a partition in cluster mode: the core's half of Kafka's model. What a
//! partition's replicas are, who leads it and in which leader epoch is decided elsewhere
//! (`strom-cluster`, from etcd) and applied here with [`Broker::apply_assignment`]; this
//! module keeps what follows from it on this broker:
//!
//! - the **role**: a standalone broker (no cluster) leads every partition and its high
//!   watermark is its log end; in cluster mode a partition is led here, followed here
//!   (copied from its leader by a fetcher), or neither (not served);
//! - on a leader, each follower's log end as its fetches report it, the **high watermark**
//!   (the smallest log end of the in-sync replicas; it never moves back while leading), and
//!   the ISR changes to propose (a follower that has not caught up for
//!   `replica.lag.time.max.ms` leaves, one that reached the high watermark comes back);
//! - on a follower, the copy of the leader's batches byte for byte ([`Broker::append_replica`]:
//!   offsets, epochs and producer state as the leader wrote them) and the truncation to the
//!   leader's log after a leader change ([`Broker::truncate_replica`]);
//! - the **leader-epoch cache** (`leader-epoch-checkpoint` in the partition's directory):
//!   the first offset of each leader epoch in the log, which answers OffsetForLeaderEpoch
//!   (where a follower of an older epoch must truncate to).
//!
//! Consumers read below the high watermark only; an acks=all produce is acknowledged once
//! the high watermark passes it ([`Broker::wait_replicated`]).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::topic::Online;

/// The name of the leader-epoch cache file in a partition's directory.
pub const EPOCH_FILE: &str = "leader-epoch-checkpoint";

/// Who replicates a partition and who leads it, as the cluster's metadata says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The leader's broker id (-1: none, the partition is offline).
    pub leader: i32,
    /// The leader epoch: bumped at every leader change.
    pub leader_epoch: i32,
    /// Every replica, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas (the leader among them).
    pub isr: Vec<i32>,
}

/// This broker's part in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No cluster: the only copy, always the leader.
    Standalone,
    /// Leads the partition: takes produces, serves fetches.
    Leader,
    /// Copies the partition from `leader`.
    Follower {
        /// The leader's broker id (-1: none known).
        leader: i32,
    },
    /// Not a replica here (cluster mode), or not assigned yet.
    None,
}

/// What [`Broker::apply_assignment`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing (same role and epoch).
    Unchanged,
    /// Leads from now on, in this epoch.
    BecameLeader,
    /// Follows `leader` in a new epoch: the fetcher must find where to truncate first.
    BecameFollower {
        /// The leader's broker id.
        leader: i32,
    },
    /// Neither leads nor follows any more.
    Stopped,
    /// The same role in the same epoch, with other replicas or another ISR.
    Updated,
}

/// An ISR change a leader proposes to the cluster's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrChange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader epoch the proposal was made in (the metadata refuses it in another).
    pub leader_epoch: i32,
    /// The proposed ISR.
    pub isr: Vec<i32>,
}

/// One partition led or followed here, for the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStats {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Whether this broker leads it (else it follows it).
    pub leader: bool,
    /// Replicas assigned.
    pub replicas: usize,
    /// In-sync replicas.
    pub isr: usize,
    /// On a leader: records the slowest replica lacks (log end minus its log end); on a
    /// follower: 0.
    pub lag_records: i64,
    /// The high watermark.
    pub high_watermark: i64,
    /// The log end offset.
    pub log_end: i64,
}

/// Counters of ISR changes applied where this broker leads.
#[derive(Default)]
pub(crate) struct IsrCounters {
    pub(crate) shrinks: std::sync::atomic::AtomicU64,
    pub(crate) expands: std::sync::atomic::AtomicU64,
}

/// Where a follower stands, as its fetches report it.
#[derive(Clone, Copy, Debug)]
struct FollowerPos {
    /// Its log end offset: the offset of its last fetch.
    leo: i64,
    /// The last time it was caught up (fetched at the leader's log end).
    caught_up_ms: i64,
}

struct State {
    role: Role,
    epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    followers: HashMap<i32, FollowerPos>,
    epochs: EpochCache,
    /// When this broker became leader (followers not yet seen count as caught up then).
    since_ms: i64,
}

/// A partition's replication state (in its [`Online`]).
pub(crate) struct Replication {
    /// The high watermark; -1 while standalone (then it is the log end offset).
    hw: AtomicI64,
    state: Mutex<State>,
    /// Woken when the high watermark moves or the ISR changes.
    moved: Notify,
}

impl Replication {
    pub(crate) fn open(dir: &Path) -> io::Result<Replication> {
        Ok(Replication {
            hw: AtomicI64::new(-1),
            state: Mutex::new(State {
                role: Role::Standalone,
                epoch: 0,
                replicas: Vec::new(),
                isr: Vec::new(),
                followers: HashMap::new(),
                epochs: EpochCache::load(dir)?,
                since_ms: 0,
            }),
            moved: Notify::new(),
        })
    }

    /// The high watermark, given the log end offset (standalone: the log end).
    pub(crate) fn high_watermark(&self, log_end: i64) -> i64 {
        match self.hw.load(Ordering::Acquire) {
            -1 => log_end,
            hw => hw.min(log_end),
        }
    }

    fn advance(&self, hw: i64) {
        if self.hw.fetch_max(hw, Ordering::AcqRel) < hw {
            self.moved.notify_waiters();
        }
    }
}

/// The first offset of each leader epoch in a log (`leader-epoch-checkpoint`: a version
/// line `0`, a count line, then `epoch offset` lines; rewritten through a temporary file).
struct EpochCache {
    path: PathBuf,
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    fn load(dir: &Path) -> io::Result<EpochCache> {
        let path = dir.join(EPOCH_FILE);
        let mut entries = Vec::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines().skip(2) {
                    let mut it = line.split_whitespace();
                    let (Some(e), Some(o)) = (it.next(), it.next()) else {
                        continue;
                    };
                    match (e.parse::<i32>(), o.parse::<i64>()) {
                        (Ok(e), Ok(o)) => entries.push((e, o)),
                        _ => {
                            tracing::warn!(path = %path.display(), line, "leader-epoch cache line skipped");
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(EpochCache { path, entries })
    }

    fn save(&self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let mut text = format!("0\n{}\n", self.entries.len());
        for (e, o) in &self.entries {
            text.push_str(&format!("{e} {o}\n"));
        }
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)
    }

    fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `offset` (an epoch newer than the latest only).
    fn assign(&mut self, epoch: i32, offset: i64) -> io::Result<()> {
        if self.latest().is_some_and(|(e, _)| e >= epoch) {
            return Ok(());
        }
        self.entries.retain(|&(_, o)| o < offset);
        self.entries.push((epoch, offset));
        self.save()
    }

    /// Forgets the epochs that start at or after `offset` (after a truncation there).
    fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        let before = self.entries.len();
        self.entries.retain(|&(_, o)| o < offset);
        if self.entries.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` and the offset where it
    /// ends (the start of the next epoch, or `log_end` for the latest); `(-1, -1)` if every
    /// epoch here is newer.
    fn end_of(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return (-1, -1);
        }
        let found = self.entries[i - 1].0;
        let end = self.entries.get(i).map_or(log_end, |&(_, o)| o);
        (found, end)
    }
}

fn now_ms() -> i64 {
    strom_log::now_ms()
}

impl Broker {
    /// Whether this broker is in a cluster (roles come from [`Broker::apply_assignment`]).
    pub fn is_clustered(&self) -> bool {
        self.clustered.load(Ordering::Acquire)
    }

    /// Enters cluster mode: from now on a partition is served only where the cluster's
    /// metadata makes this broker its leader; until an assignment arrives, none is.
    pub fn enable_cluster(&self) {
        self.clustered.store(true, Ordering::Release);
        for t in self.topics_snapshot() {
            for p in t.partitions().iter() {
                if let Ok(o) = p.online() {
                    let mut st = o.replication.state.lock();
                    if st.role == Role::Standalone {
                        st.role = Role::None;
                        o.replication
                            .hw
                            .store(o.log.log_start_offset(), Ordering::Release);
                    }
                }
            }
        }
    }

    /// Sets the role of a newly opened partition (cluster mode: none until assigned).
    pub(crate) fn init_replication(&self, o: &Online) {
        if self.is_clustered() {
            o.replication.state.lock().role = Role::None;
            o.replication
                .hw
                .store(o.log.log_start_offset(), Ordering::Release);
        }
    }

    /// This broker's role in a partition and the leader epoch it knows.
    pub fn replica_role(&self, topic: &str, partition: i32) -> Result<(Role, i32)> {
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        let st = o.replication.state.lock();
        Ok((st.role, st.epoch))
    }

    /// The replicas and ISR this broker knows for a partition it leads or follows.
    pub fn replica_set(&self, topic: &str, partition: i32) -> Result<(Vec<i32>, Vec<i32>)> {
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        let st = o.replication.state.lock();
        Ok((st.replicas.clone(), st.isr.clone()))
    }

    /// Applies the cluster's assignment of a partition. Becoming leader in a new epoch
    /// records the epoch's first offset (the log end) in the epoch cache and stamps it into
    /// the batches appended from now on; becoming follower in a new epoch asks the caller
    /// to truncate to the leader's log before copying.
    pub fn apply_assignment(
        &self,
        topic: &str,
        partition: i32,
        a: &Assignment,
    ) -> Result<Transition> {
        let me = self.node_id();
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        let rep = &o.replication;
        let mut st = rep.state.lock();
        let role = if a.leader == me {
            Role::Leader
        } else if a.replicas.contains(&me) {
            Role::Follower { leader: a.leader }
        } else {
            Role::None
        };
        let same = st.role == role && st.epoch == a.leader_epoch;
        let changed_sets = st.replicas != a.replicas || st.isr != a.isr;
        if same && role == Role::Leader {
            use std::cmp::Ordering as O;
            match a.isr.len().cmp(&st.isr.len()) {
                O::Less => self.isr_counters.shrinks.fetch_add(1, Ordering::Relaxed),
                O::Greater => self.isr_counters.expands.fetch_add(1, Ordering::Relaxed),
                O::Equal => 0,
            };
        }
        st.replicas = a.replicas.clone();
        st.isr = a.isr.clone();
        if same {
            drop(st);
            if changed_sets {
                // An ISR change may move the high watermark (a follower left it).
                self.recompute_hw(o);
                rep.moved.notify_waiters();
                return Ok(Transition::Updated);
            }
            return Ok(Transition::Unchanged);
        }
        if a.leader_epoch < st.epoch && st.role != Role::None {
            // Stale metadata (an older epoch): keep what this broker knows.
            return Ok(Transition::Unchanged);
        }
        st.role = role;
        st.epoch = a.leader_epoch;
        let transition = match role {
            Role::Leader => {
                let leo = o.log.log_end_offset();
                st.epochs.assign(a.leader_epoch, leo)?;
                o.log.set_leader_epoch(a.leader_epoch);
                st.followers.clear();
                st.since_ms = now_ms();
                Transition::BecameLeader
            }
            Role::Follower { leader } => {
                st.followers.clear();
                Transition::BecameFollower { leader }
            }
            Role::None | Role::Standalone => Transition::Stopped,
        };
        drop(st);
        if role == Role::Leader {
            self.recompute_hw(o);
        }
        rep.moved.notify_waiters();
        self.wake(topic);
        Ok(transition)
    }

    /// Refuses a produce or a consumer's fetch on a partition not led here.
    pub(crate) fn check_leader(&self, topic: &str, partition: i32, o: &Online) -> Result<()> {
        // Standalone every partition is led here: no lock on the data path.
        if !self.is_clustered() {
            return Ok(());
        }
        let st = o.replication.state.lock();
        match st.role {
            Role::Standalone | Role::Leader => Ok(()),
            Role::Follower { leader } => Err(BrokerError::NotLeader {
                topic: topic.to_string(),
                partition,
                leader,
                leader_epoch: st.epoch,
            }),
            Role::None => Err(BrokerError::NotLeader {
                topic: topic.to_string(),
                partition,
                leader: -1,
                leader_epoch: st.epoch,
            }),
        }
    }

    /// The high watermark of a partition.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64> {
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        Ok(o.replication.high_watermark(o.log.log_end_offset()))
    }

    /// On the leader: a follower's fetch at `fetch_offset` (its log end). Moves the high
    /// watermark when every in-sync replica has the records below it. A fetch from a
    /// broker that is not a replica, or on a partition not led here, is refused.
    pub fn follower_fetched(
        &self,
        topic: &str,
        partition: i32,
        replica: i32,
        fetch_offset: i64,
        current_epoch: i32,
    ) -> Result<()> {
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        {
            let mut st = o.replication.state.lock();
            if st.role != Role::Leader {
                drop(st);
                return self.check_leader(topic, partition, o);
            }
            if current_epoch >= 0 && current_epoch != st.epoch {
                return Err(if current_epoch < st.epoch {
                    BrokerError::FencedLeaderEpoch {
                        topic: topic.to_string(),
                        partition,
                        leader_epoch: st.epoch,
                    }
                } else {
                    BrokerError::UnknownLeaderEpoch {
                        topic: topic.to_string(),
                        partition,
                        leader_epoch: st.epoch,
                    }
                });
            }
            if !st.replicas.contains(&replica) {
                return Err(BrokerError::NotLeader {
                    topic: topic.to_string(),
                    partition,
                    leader: self.node_id(),
                    leader_epoch: st.epoch,
                });
            }
            let now = now_ms();
            let leo = o.log.log_end_offset();
            let since = st.since_ms;
            let pos = st.followers.entry(replica).or_insert(FollowerPos {
                leo: fetch_offset,
                caught_up_ms: since,
            });
            pos.leo = fetch_offset;
            if fetch_offset >= leo {
                pos.caught_up_ms = now;
            }
        }
        self.recompute_hw(o);
        Ok(())
    }

    /// The leader's high watermark: the smallest log end among the in-sync replicas (its
    /// own included), never below what it was.
    fn recompute_hw(&self, o: &Online) {
        let st = o.replication.state.lock();
        if st.role != Role::Leader {
            return;
        }
        let me = self.node_id();
        let mut hw = o.log.log_end_offset();
        for r in &st.isr {
            if *r == me {
                continue;
            }
            hw = hw.min(st.followers.get(r).map_or(-1, |f| f.leo));
        }
        drop(st);
        if hw >= 0 {
            o.replication.advance(hw);
        }
    }

    /// After a local append on a leader: with the ISR reduced to this broker the high
    /// watermark follows the log end at once.
    pub(crate) fn appended_as_leader(&self, o: &Online) {
        if self.is_clustered() {
            self.recompute_hw(o);
        }
    }

    /// The leader's ISR proposals: in-sync followers that have not been caught up for
    /// `lag`, and out-of-sync replicas whose log end reached the high watermark.
    pub fn isr_changes(&self, lag: Duration) -> Vec<IsrChange> {
        let now = now_ms();
        let me = self.node_id();
        let mut out = Vec::new();
        for t in self.topics_snapshot() {
            for p in t.partitions().iter() {
                let Ok(o) = p.online() else { continue };
                let st = o.replication.state.lock();
                if st.role != Role::Leader {
                    continue;
                }
                let hw = o.replication.high_watermark(o.log.log_end_offset());
                let leo = o.log.log_end_offset();
                let mut isr: Vec<i32> = st
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| {
                        *r == me || {
                            let caught =
                                st.followers.get(r).map_or(st.since_ms, |f| f.caught_up_ms);
                            let behind = st.followers.get(r).is_none_or(|f| f.leo < leo);
                            !(behind && now - caught > lag.as_millis() as i64)
                        }
                    })
                    .collect();
                if !isr.contains(&me) {
                    isr.insert(0, me);
                }
                // Out-of-sync replicas (not those this pass drops: the high watermark still
                // counts them) come back once they reach the high watermark.
                for r in &st.replicas {
                    if !st.isr.contains(r) && st.followers.get(r).is_some_and(|f| f.leo >= hw) {
                        isr.push(*r);
                    }
                }
                let mut a = isr.clone();
                let mut b = st.isr.clone();
                a.sort_unstable();
                b.sort_unstable();
                if a != b {
                    out.push(IsrChange {
                        topic: t.name().to_string(),
                        partition: p.index(),
                        leader_epoch: st.epoch,
                        isr,
                    });
                }
            }
        }
        out
    }

    /// The partitions led or followed here and the ISR shrinks and expands applied where
    /// this broker leads (cluster mode; empty otherwise).
    pub fn replication_stats(&self) -> (Vec<ReplicaStats>, u64, u64) {
        let mut out = Vec::new();
        if self.is_clustered() {
            for t in self.topics_snapshot() {
                for p in t.partitions().iter() {
                    let Ok(o) = p.online() else { continue };
                    let st = o.replication.state.lock();
                    let leader = match st.role {
                        Role::Leader => true,
                        Role::Follower { .. } => false,
                        _ => continue,
                    };
                    let leo = o.log.log_end_offset();
                    let slowest = st
                        .replicas
                        .iter()
                        .filter(|r| **r != self.node_id())
                        .map(|r| st.followers.get(r).map_or(0, |f| f.leo))
                        .min()
                        .unwrap_or(leo);
                    out.push(ReplicaStats {
                        topic: t.name().to_string(),
                        partition: p.index(),
                        leader,
                        replicas: st.replicas.len(),
                        isr: st.isr.len(),
                        lag_records: if leader { (leo - slowest).max(0) } else { 0 },
                        high_watermark: o.replication.high_watermark(leo),
                        log_end: leo,
                    });
                }
            }
        }
        (
            out,
            self.isr_counters.shrinks.load(Ordering::Relaxed),
            self.isr_counters.expands.load(Ordering::Relaxed),
        )
    }

    /// Refuses an acks=all produce when fewer replicas than `min.insync.replicas` are in
    /// sync (nothing is written).
    pub fn check_min_insync(&self, topic: &str, partition: i32) -> Result<()> {
        if !self.is_clustered() {
            return Ok(());
        }
        let min = self
            .topic(topic)
            .map_or(1, |t| t.with_config(|c| c.min_insync_replicas()));
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        let n = o.replication.state.lock().isr.len();
        if (n as i64) < i64::from(min) {
            return Err(BrokerError::NotEnoughReplicas {
                topic: topic.to_string(),
                partition,
                isr: n,
                min,
            });
        }
        Ok(())
    }

    /// Waits until the high watermark of a partition reaches `offset` (an acks=all produce
    /// whose last record is below it), at most `timeout`. The leadership lost meanwhile is
    /// NOT_LEADER_OR_FOLLOWER; an ISR that shrank below `min.insync.replicas` is
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND; the time running out is REQUEST_TIMED_OUT.
    pub async fn wait_replicated(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<()> {
        if !self.is_clustered() {
            return Ok(());
        }
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let moved = o.replication.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if o.replication.high_watermark(o.log.log_end_offset()) >= offset {
                return Ok(());
            }
            self.check_leader(topic, partition, o)?;
            if let Err(BrokerError::NotEnoughReplicas {
                topic,
                partition,
                isr,
                min,
            }) = self.check_min_insync(topic, partition)
            {
                return Err(BrokerError::NotEnoughReplicasAfterAppend {
                    topic,
                    partition,
                    isr,
                    min,
                });
            }
            if self.is_stopping() {
                return Err(BrokerError::ShuttingDown);
            }
            tokio::select! {
                _ = &mut moved => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(BrokerError::ReplicationTimeout {
                        topic: topic.to_string(),
                        partition,
                        offset,
                    });
                }
            }
        }
    }

    /// On a follower: appends batches copied from the leader (offsets assigned there) and
    /// applies them to the producer state (sequences, transactions, markers), then moves the
    /// high watermark to the leader's (never past the local log end). Returns the new log
    /// end offset.
    pub fn append_replica(
        &self,
        topic: &str,
        partition: i32,
        batches: &[u8],
        leader_hw: i64,
    ) -> Result<i64> {
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        if !batches.is_empty() {
            let mut producers = o.producers.lock();
            let info = o.log.append_replica(batches)?;
            producers.apply_stored(&o.log, batches, info.base_offset)?;
            if let Err(e) = producers.after_append(&o.log, &info) {
                tracing::warn!(topic, partition, error = %e, "producer snapshot failed");
            }
            drop(producers);
            let mut st = o.replication.state.lock();
            for (_, h) in strom_records::headers(batches) {
                if h.leader_epoch >= 0 {
                    st.epochs.assign(h.leader_epoch, h.base_offset)?;
                }
            }
        }
        let leo = o.log.log_end_offset();
        o.replication.advance(leader_hw.min(leo));
        self.wake(topic);
        Ok(leo)
    }

    /// On a follower: the latest leader epoch in its log and its log end offset (what it
    /// asks its new leader about with OffsetForLeaderEpoch).
    pub fn latest_epoch(&self, topic: &str, partition: i32) -> Result<(i32, i64)> {
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        let st = o.replication.state.lock();
        Ok((
            st.epochs.latest().map_or(-1, |(e, _)| e),
            o.log.log_end_offset(),
        ))
    }

    /// OffsetForLeaderEpoch on this broker's log: the largest epoch at or below `epoch`
    /// and the offset where it ends. On the leader `current_epoch` (>= 0) is checked.
    pub fn epoch_end_offset(
        &self,
        topic: &str,
        partition: i32,
        epoch: i32,
        current_epoch: i32,
    ) -> Result<(i32, i64)> {
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        if self.is_clustered() {
            self.check_leader(topic, partition, o)?;
        }
        let st = o.replication.state.lock();
        if current_epoch >= 0 && current_epoch < st.epoch {
            return Err(BrokerError::FencedLeaderEpoch {
                topic: topic.to_string(),
                partition,
                leader_epoch: st.epoch,
            });
        }
        if st.epochs.entries.is_empty() {
            // A log written before any epoch was recorded (standalone): one epoch, 0.
            return Ok((0, o.log.log_end_offset()));
        }
        Ok(st.epochs.end_of(epoch, o.log.log_end_offset()))
    }

    /// On a follower whose leader's log starts past its log end (retention or DeleteRecords
    /// there while it was behind): empties the log and starts it at `offset`, the producer
    /// state and the epoch cache with it.
    pub fn reset_replica(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        rewrite_replica(o, |log| log.reset_to(offset), 0)?;
        o.replication.hw.store(offset, Ordering::Release);
        Ok(())
    }

    /// On a follower: removes the records at and after `offset` (where its log and the new
    /// leader's part), rebuilding the producer state and dropping the epochs from there.
    pub fn truncate_replica(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        let p = self.partition(topic, partition)?;
        let o = p.online()?;
        if offset >= o.log.log_end_offset() {
            return Ok(());
        }
        rewrite_replica(o, |log| log.truncate_to(offset), offset)?;
        // The high watermark of a follower may have been past the cut only if it was
        // copied from a leader that lost it: never below the log start.
        o.replication.hw.fetch_min(offset, Ordering::AcqRel);
        Ok(())
    }
}

/// Rewrites a follower's log (`rewrite`: a truncation or a reset) under the partition's
/// producer lock, then rebuilds the producer state from the log (keeping the shared last
/// stable offset its readers hold) and forgets the epochs from `epochs_from` on.
fn rewrite_replica(
    o: &Online,
    rewrite: impl FnOnce(&strom_log::Log) -> strom_log::Result<()>,
    epochs_from: i64,
) -> Result<()> {
    let mut producers = o.producers.lock();
    rewrite(&o.log)?;
    let mut rebuilt = crate::producer::PartitionProducers::load(&o.log)?;
    rebuilt.adopt_unstable_handle(o.first_unstable.clone());
    *producers = rebuilt;
    drop(producers);
    o.replication
        .state
        .lock()
        .epochs
        .truncate_from(epochs_from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BrokerConfig;
    use std::sync::Arc;

    fn leader_of(dir: &Path) -> Arc<Broker> {
        let b = Broker::open(BrokerConfig::new(dir)).unwrap();
        b.create_topic("t", 1, Vec::new(), false).unwrap();
        b.enable_cluster();
        let a = Assignment {
            leader: b.node_id(),
            leader_epoch: 1,
            replicas: vec![b.node_id(), 2, 3],
            isr: vec![b.node_id(), 2, 3],
        };
        assert_eq!(
            b.apply_assignment("t", 0, &a).unwrap(),
            Transition::BecameLeader
        );
        b
    }

    fn append(b: &Broker, n: usize) {
        for _ in 0..n {
            let (_, _) = b
                .produce_deferred("t", 0, &strom_log::build_batch(1, &[b"x"]))
                .unwrap();
        }
    }

    #[test]
    fn the_high_watermark_is_the_slowest_in_sync_replica_and_a_stalled_one_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let b = leader_of(dir.path());
        append(&b, 10);
        assert_eq!(b.high_watermark("t", 0).unwrap(), 0, "nobody copied yet");
        b.follower_fetched("t", 0, 2, 10, 1).unwrap();
        b.follower_fetched("t", 0, 3, 4, 1).unwrap();
        assert_eq!(b.high_watermark("t", 0).unwrap(), 4);
        // An older epoch is fenced; a broker that is not a replica is refused.
        assert!(matches!(
            b.follower_fetched("t", 0, 2, 10, 0),
            Err(BrokerError::FencedLeaderEpoch { .. })
        ));
        assert!(b.follower_fetched("t", 0, 9, 10, 1).is_err());
        // Replica 3 keeps fetching at 4 but never gets further (a full disk): with a lag of
        // zero it leaves, and stays out although the high watermark still counts it.
        std::thread::sleep(Duration::from_millis(5));
        let changes = b.isr_changes(Duration::ZERO);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].isr, vec![b.node_id(), 2]);
        // The metadata applies it: the high watermark moves to replica 2's log end.
        let a = Assignment {
            leader: b.node_id(),
            leader_epoch: 1,
            replicas: vec![b.node_id(), 2, 3],
            isr: vec![b.node_id(), 2],
        };
        assert_eq!(b.apply_assignment("t", 0, &a).unwrap(), Transition::Updated);
        assert_eq!(b.high_watermark("t", 0).unwrap(), 10);
        // Caught up again, replica 3 is proposed back.
        b.follower_fetched("t", 0, 3, 10, 1).unwrap();
        let back = b.isr_changes(Duration::from_secs(60));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].isr, vec![b.node_id(), 2, 3]);
    }

    #[test]
    fn the_epoch_cache_answers_where_an_epoch_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::load(dir.path()).unwrap();
        c.assign(0, 0).unwrap();
        c.assign(2, 50).unwrap();
        c.assign(5, 80).unwrap();
        assert_eq!(c.end_of(0, 100), (0, 50));
        assert_eq!(c.end_of(1, 100), (0, 50), "no epoch 1 here: epoch 0's end");
        assert_eq!(c.end_of(2, 100), (2, 80));
        assert_eq!(c.end_of(7, 100), (5, 100), "the latest ends at the log end");
        c.truncate_from(60).unwrap();
        let reloaded = EpochCache::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries, vec![(0, 0), (2, 50)]);
    }
}
