//! The transaction coordinator: Kafka's transaction protocol (KIP-98, with the epoch bumps
//! of KIP-360 and the transactions v2 of KIP-890) as a state machine per transactional id.
//!
//! A transactional id maps to a producer id (from the broker's [`crate::producer::ProducerIds`])
//! and epoch. Its transaction goes Empty → Ongoing (a partition or a group was added) →
//! PrepareCommit / PrepareAbort (EndTxn, a timeout, a new InitProducerId) → CompleteCommit /
//! CompleteAbort once the COMMIT/ABORT marker is durable on every partition of the
//! transaction ([`Broker::write_txn_marker`]) and, for a commit, the pending transactional
//! offsets are the groups' committed offsets.
//!
//! **Invariants**
//! - Every state change but an Ongoing one is durable in `.strom/txn/` ([`store`]) before
//!   it is answered or acted on: a Prepare state is on disk before EndTxn is answered and
//!   before the first marker is written, so a restart completes it (the markers are written
//!   again; a partition's second marker of the same transaction ends nothing). An Ongoing
//!   state (a partition, a group, an offset added) is written but not synced — the next
//!   Prepare's sync flushes it — so a kill of the process keeps it (the transaction restarts
//!   with its start time and is aborted when its timeout passes) and a crash of the machine
//!   may lose it: at start, a partition's open transaction that the coordinator does not have
//!   open there is aborted ([`TxnCoordinator::abort_orphans`]). It was never prepared, so
//!   abort is its only possible outcome.
//! - Transactions v1: EndTxn is answered once Prepare is durable; the markers and Complete
//!   are written next by a task of their own, and the producer's next AddPartitionsToTxn,
//!   AddOffsetsToTxn, TxnOffsetCommit, EndTxn or InitProducerId waits for them (Kafka answers
//!   CONCURRENT_TRANSACTIONS instead, which librdkafka retries only after 20 ms). Complete is
//!   written (synced) only after every marker is durable.
//! - A transactional batch is appended only for a partition in its producer's ongoing
//!   transaction at its current epoch ([`TxnCoordinator`] is the broker's [`TxnGuard`]);
//!   with transactions v2 the produce itself adds the partition (stored first).
//! - An abort the coordinator decides (timeout, InitProducerId of a new instance) bumps the
//!   epoch first, so the zombie's batches and EndTxn are fenced.

mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::broker::{blocking, TxnGuard, TxnMarker};
use crate::coordinator::{Committed, GroupCoordinator};
use crate::{Broker, BrokerError};

use store::Store;

/// How long a request that begins a transaction waits for the previous one to be completed
/// (its markers written) before it is answered CONCURRENT_TRANSACTIONS.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// `transaction.max.timeout.ms`' default: 15 minutes, as Kafka.
pub const MAX_TIMEOUT_MS_DEFAULT: i32 = 900_000;

/// The test hook that pauses an EndTxn between its durable Prepare state and its markers
/// (milliseconds), for crash tests: `STROM_TEST_PAUSE_BEFORE_MARKERS`.
pub const PAUSE_BEFORE_MARKERS_ENV: &str = "STROM_TEST_PAUSE_BEFORE_MARKERS";

/// The coordinator's settings.
#[derive(Clone, Debug)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the largest `transaction.timeout.ms` a producer may ask.
    pub max_timeout_ms: i32,
    /// How often expired transactions are looked for.
    pub abort_check_interval: Duration,
    /// Test hook: a pause between a durable Prepare state and the markers.
    pub pause_before_markers: Option<Duration>,
}

impl Default for TxnConfig {
    fn default() -> TxnConfig {
        TxnConfig {
            max_timeout_ms: MAX_TIMEOUT_MS_DEFAULT,
            abort_check_interval: Duration::from_millis(200),
            pause_before_markers: std::env::var(PAUSE_BEFORE_MARKERS_ENV)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis),
        }
    }
}

/// A transaction's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// Partitions or groups were added.
    Ongoing,
    /// Committing: markers being written.
    PrepareCommit,
    /// Aborting: markers being written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    fn preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// Whether a transaction is open (counted in the open transactions gauge).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
        )
    }
}

/// An offset committed inside a transaction, pending until it commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingOffset {
    /// The offset.
    pub offset: i64,
    /// Leader epoch, -1 if unknown.
    pub leader_epoch: i32,
    /// The client's metadata.
    pub metadata: Option<String>,
}

/// One transactional id's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMeta {
    /// The transactional id.
    pub transactional_id: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub producer_epoch: i16,
    /// The epoch before the last bump the coordinator made on its own (a timeout): a
    /// producer still at it may recover with InitProducerId (KIP-360), -1 if none.
    pub last_epoch: i16,
    /// `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// The state.
    pub state: TxnState,
    /// When the ongoing transaction began (ms), -1 if none.
    pub start_ms: i64,
    /// Last change (ms).
    pub updated_ms: i64,
    /// Transactions v2 (KIP-890): partitions added by Produce, epoch bumped per EndTxn.
    pub v2: bool,
    /// The partitions in the transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// The groups in the transaction (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// Pending offsets by (group, topic, partition).
    pub offsets: BTreeMap<(String, String, i32), PendingOffset>,
}

impl TxnMeta {
    fn new(id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> TxnMeta {
        TxnMeta {
            transactional_id: id.to_string(),
            producer_id,
            producer_epoch: 0,
            last_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            start_ms: -1,
            updated_ms: now,
            v2: false,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: BTreeMap::new(),
        }
    }

    /// The producer's id and epoch against this transaction's (KIP-98 fencing).
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if epoch < self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        if epoch > self.producer_epoch {
            return Err(TxnError::InvalidProducerEpoch);
        }
        Ok(())
    }

    /// Begins a transaction (if none is ongoing) for an added partition or group.
    fn begin(&mut self, now: i64) -> Result<(), TxnError> {
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Ongoing => Ok(()),
            _ => {
                self.state = TxnState::Ongoing;
                self.start_ms = now;
                self.partitions.clear();
                self.groups.clear();
                self.offsets.clear();
                Ok(())
            }
        }
    }

    /// The epoch after a bump: the next epoch, or `None` when the epoch is exhausted (a new
    /// producer id is needed).
    fn next_epoch(&self) -> Option<i16> {
        (self.producer_epoch < i16::MAX - 1).then_some(self.producer_epoch + 1)
    }

    /// Moves to PrepareCommit / PrepareAbort; `bump` raises the epoch first (fencing).
    fn prepare(&mut self, commit: bool, bump: bool, now: i64) {
        if bump {
            if let Some(e) = self.next_epoch() {
                self.last_epoch = self.producer_epoch;
                self.producer_epoch = e;
            }
        }
        self.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.updated_ms = now;
    }

    /// Moves from Prepare to Complete: the transaction's partitions, groups and offsets are
    /// forgotten.
    fn complete(&mut self, now: i64) {
        self.state = if self.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        self.partitions.clear();
        self.groups.clear();
        self.offsets.clear();
        self.start_ms = -1;
        self.updated_ms = now;
    }

    /// Whether the ongoing transaction has outlived its timeout at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.state == TxnState::Ongoing && now > self.start_ms + self.timeout_ms as i64
    }
}

/// Why a transaction request is refused (each is its own Kafka error code in the door).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TxnError {
    /// `transaction.timeout.ms` above `transaction.max.timeout.ms` (or not positive).
    #[error("transaction timeout {0} ms is not within 1..={1}")]
    InvalidTransactionTimeout(i32, i32),
    /// A newer epoch of the transactional id exists: this producer is a zombie.
    #[error("the producer was fenced by a newer epoch")]
    ProducerFenced,
    /// An epoch the coordinator never gave.
    #[error("invalid producer epoch")]
    InvalidProducerEpoch,
    /// The producer id is not the transactional id's.
    #[error("the producer id does not belong to the transactional id")]
    InvalidProducerIdMapping,
    /// The request does not fit the transaction's state.
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// A previous transaction is still being completed: retry.
    #[error("a previous transaction is being completed")]
    ConcurrentTransactions,
    /// A partition that does not exist.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// Not attempted because another partition of the request failed.
    #[error("not attempted")]
    OperationNotAttempted,
    /// The transactional id is empty.
    #[error("invalid transactional id")]
    InvalidTransactionalId,
    /// The transaction state could not be stored.
    #[error("transaction state storage error: {0}")]
    Storage(String),
}

/// Counters of the coordinator (exported as `strom_transactions_*` on /metrics).
struct Counters;

impl Counters {
    fn open(broker: &Broker, open: i64) {
        broker.metrics().txn_open.store(open, Ordering::Relaxed);
    }
}

struct Inner {
    txns: HashMap<String, TxnMeta>,
    /// Producer id → transactional id.
    by_producer: HashMap<i64, String>,
}

impl Inner {
    fn insert(&mut self, m: TxnMeta) {
        self.by_producer
            .insert(m.producer_id, m.transactional_id.clone());
        self.txns.insert(m.transactional_id.clone(), m);
    }

    fn open_count(&self) -> i64 {
        self.txns.values().filter(|m| m.state.is_open()).count() as i64
    }
}

/// The transaction coordinator.
pub struct TxnCoordinator {
    broker: Arc<Broker>,
    groups: Arc<GroupCoordinator>,
    config: TxnConfig,
    inner: Mutex<Inner>,
    store: Store,
    /// Serialises the operations that write markers (EndTxn, aborts, InitProducerId).
    ops: tokio::sync::Mutex<()>,
    /// Woken whenever a prepared transaction has been worked on (completed or not): the
    /// requests that wait for a transaction to be completed look again.
    completed: tokio::sync::Notify,
}

impl TxnCoordinator {
    /// Opens the coordinator over `.strom/txn/` and replays it. Transactions found in a
    /// Prepare state are completed by [`TxnCoordinator::run`] as it starts.
    pub fn open(
        data_dir: &Path,
        config: TxnConfig,
        broker: Arc<Broker>,
        groups: Arc<GroupCoordinator>,
    ) -> std::io::Result<Arc<TxnCoordinator>> {
        let store = Store::open(data_dir)?;
        let mut inner = Inner {
            txns: HashMap::new(),
            by_producer: HashMap::new(),
        };
        for m in store.replay()? {
            inner.insert(m);
        }
        tracing::info!(
            transactional_ids = inner.txns.len(),
            open = inner.open_count(),
            "transactions loaded"
        );
        Counters::open(&broker, inner.open_count());
        let c = Arc::new(TxnCoordinator {
            broker: broker.clone(),
            groups,
            config,
            inner: Mutex::new(inner),
            store,
            ops: tokio::sync::Mutex::new(()),
            completed: tokio::sync::Notify::new(),
        });
        broker.set_txn_guard(c.clone());
        broker.add_compacted_log(".strom/txn", c.store.log());
        Ok(c)
    }

    /// The settings.
    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// Applies `f` to the transaction of `id` and makes the result durable, under the lock
    /// (so the log holds the states in the order they were taken).
    fn update<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut TxnMeta) -> Result<T, TxnError>,
    ) -> Result<T, TxnError> {
        self.update_with(id, true, f)
    }

    /// [`TxnCoordinator::update`] that, without `sync`, does not wait for the fdatasync:
    /// for the Ongoing states (partitions, groups and offsets added), which a crash may lose
    /// — the transaction then ends as aborted, see [`TxnCoordinator::run`]. Every Prepare
    /// state is synced, and its sync flushes the unsynced states before it.
    fn update_with<T>(
        &self,
        id: &str,
        sync: bool,
        f: impl FnOnce(&mut TxnMeta) -> Result<T, TxnError>,
    ) -> Result<T, TxnError> {
        blocking(|| {
            let mut inner = self.inner.lock();
            let Some(m) = inner.txns.get(id) else {
                return Err(TxnError::InvalidProducerIdMapping);
            };
            let mut m = m.clone();
            let out = f(&mut m)?;
            if inner.txns.get(id) != Some(&m) {
                self.store
                    .write_with(&[&m], sync)
                    .map_err(|e| TxnError::Storage(e.to_string()))?;
                inner.insert(m);
                Counters::open(&self.broker, inner.open_count());
            }
            Ok(out)
        })
    }

    fn put(&self, m: TxnMeta) -> Result<(), TxnError> {
        blocking(|| {
            let mut inner = self.inner.lock();
            self.store
                .write(&[&m])
                .map_err(|e| TxnError::Storage(e.to_string()))?;
            if let Some(old) = inner.txns.get(&m.transactional_id) {
                if old.producer_id != m.producer_id {
                    let old = old.producer_id;
                    inner.by_producer.remove(&old);
                }
            }
            inner.insert(m);
            Counters::open(&self.broker, inner.open_count());
            Ok(())
        })
    }

    /// One transaction's state.
    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        self.inner.lock().txns.get(id).cloned()
    }

    /// Every transaction, by transactional id.
    pub fn list(&self) -> Vec<TxnMeta> {
        let mut all: Vec<TxnMeta> = self.inner.lock().txns.values().cloned().collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }

    /// Whether a transaction holds a pending offset of `group` for the partition
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (group.to_string(), topic.to_string(), partition);
        self.inner
            .lock()
            .txns
            .values()
            .any(|m| m.state.is_open() && m.offsets.contains_key(&key))
    }

    // --- the protocol ------------------------------------------------------------------

    /// InitProducerId with a transactional id: a new producer id at epoch 0, or the id's
    /// next epoch (fencing every older instance). An ongoing transaction of the id is aborted
    /// first (its markers carry the new epoch); one being completed is completed. With
    /// `producer` (KIP-360) the caller proves it is the current (or just timed-out) instance.
    pub async fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        producer: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        if id.is_empty() {
            return Err(TxnError::InvalidTransactionalId);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout(
                timeout_ms,
                self.config.max_timeout_ms,
            ));
        }
        let _ops = self.ops.lock().await;
        let now = strom_log::now_ms();
        let Some(m) = self.describe(id) else {
            if producer.is_some() {
                return Err(TxnError::InvalidProducerIdMapping);
            }
            let pid = self.allocate()?;
            self.put(TxnMeta::new(id, pid, timeout_ms, now))?;
            return Ok((pid, 0));
        };
        if let Some((pid, epoch)) = producer {
            if pid != m.producer_id {
                return Err(TxnError::InvalidProducerIdMapping);
            }
            if epoch != m.producer_epoch && epoch != m.last_epoch {
                return Err(TxnError::ProducerFenced);
            }
        }
        if m.state.preparing() {
            self.finish(id).await?;
        }
        let m = self.describe(id).expect("present");
        if m.state == TxnState::Ongoing {
            // Abort with a bumped epoch: the new epoch is the new instance's.
            self.end(id, false, true).await?;
            let m = self.describe(id).expect("present");
            self.update(id, |t| {
                t.timeout_ms = timeout_ms;
                t.state = TxnState::Empty;
                t.last_epoch = -1;
                Ok(())
            })?;
            return Ok((m.producer_id, m.producer_epoch));
        }
        let fresh = match m.next_epoch() {
            Some(_) => None,
            None => Some(self.allocate()?),
        };
        let mut n = m.clone();
        match fresh {
            Some(pid) => {
                n.producer_id = pid;
                n.producer_epoch = 0;
            }
            None => n.producer_epoch += 1,
        }
        n.last_epoch = -1;
        n.timeout_ms = timeout_ms;
        n.state = TxnState::Empty;
        n.start_ms = -1;
        n.updated_ms = now;
        let out = (n.producer_id, n.producer_epoch);
        self.put(n)?;
        Ok(out)
    }

    fn allocate(&self) -> Result<i64, TxnError> {
        self.broker
            .init_producer_id()
            .map_err(|e| TxnError::Storage(e.to_string()))
    }

    /// AddPartitionsToTxn: adds the partitions to the ongoing transaction (beginning one).
    /// All or nothing: an unknown partition fails the request, the others are not attempted.
    /// A transaction still being completed (its EndTxn was answered once the Prepare state
    /// was durable) is waited for first, as for every request that begins the next one.
    pub async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<((String, i32), Result<(), TxnError>)> {
        self.settled(id).await;
        let unknown: Vec<bool> = partitions
            .iter()
            .map(|(t, p)| self.broker.partition(t, *p).is_err())
            .collect();
        let fail = |e: Option<TxnError>| {
            partitions
                .iter()
                .zip(&unknown)
                .map(|(tp, &u)| {
                    let r = match (&e, u) {
                        (Some(e), _) => Err(e.clone()),
                        (None, true) => Err(TxnError::UnknownTopicOrPartition),
                        (None, false) => Err(TxnError::OperationNotAttempted),
                    };
                    (tp.clone(), r)
                })
                .collect()
        };
        if unknown.iter().any(|&u| u) {
            return fail(None);
        }
        let now = strom_log::now_ms();
        let r = self.update_with(id, false, |m| {
            m.check_producer(producer_id, epoch)?;
            m.begin(now)?;
            m.partitions.extend(partitions.iter().cloned());
            Ok(())
        });
        match r {
            Ok(()) => partitions.iter().map(|tp| (tp.clone(), Ok(()))).collect(),
            Err(e) => fail(Some(e)),
        }
    }

    /// AddPartitionsToTxn v4+ with `verify_only`: whether each partition is in the producer's
    /// ongoing transaction (KIP-890 part 1), changing nothing.
    pub fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<((String, i32), Result<(), TxnError>)> {
        let m = self.describe(id);
        partitions
            .iter()
            .map(|tp| {
                let r = match &m {
                    None => Err(TxnError::InvalidProducerIdMapping),
                    Some(m) => m.check_producer(producer_id, epoch).and_then(|()| {
                        if m.state == TxnState::Ongoing && m.partitions.contains(tp) {
                            Ok(())
                        } else {
                            Err(TxnError::InvalidTxnState(format!(
                                "{}-{} is not in the transaction",
                                tp.0, tp.1
                            )))
                        }
                    }),
                };
                (tp.clone(), r)
            })
            .collect()
    }

    /// AddOffsetsToTxn: adds the group to the ongoing transaction (beginning one).
    pub async fn add_offsets(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), TxnError> {
        if group.is_empty() {
            return Err(TxnError::InvalidTxnState("empty group id".into()));
        }
        self.settled(id).await;
        let now = strom_log::now_ms();
        self.update_with(id, false, |m| {
            m.check_producer(producer_id, epoch)?;
            m.begin(now)?;
            m.groups.insert(group.to_string());
            Ok(())
        })
    }

    /// TxnOffsetCommit: stores the offsets pending in the transaction (durably); they become
    /// the group's committed offsets when it commits and are dropped when it aborts. The
    /// group must have been added (AddOffsetsToTxn). Per-partition results.
    pub async fn txn_offset_commit(
        &self,
        id: &str,
        group: &str,
        producer_id: i64,
        epoch: i16,
        offsets: Vec<(String, i32, PendingOffset)>,
    ) -> Result<Vec<Result<(), TxnError>>, TxnError> {
        self.settled(id).await;
        let results: Vec<Result<(), TxnError>> = offsets
            .iter()
            .map(|(t, p, _)| {
                if self.broker.partition(t, *p).is_ok() {
                    Ok(())
                } else {
                    Err(TxnError::UnknownTopicOrPartition)
                }
            })
            .collect();
        self.update_with(id, false, |m| {
            m.check_producer(producer_id, epoch)?;
            if m.state != TxnState::Ongoing || !m.groups.contains(group) {
                return Err(TxnError::InvalidTxnState(format!(
                    "group {group:?} was not added to the transaction"
                )));
            }
            for ((t, p, o), r) in offsets.into_iter().zip(&results) {
                if r.is_ok() {
                    m.offsets.insert((group.to_string(), t, p), o);
                }
            }
            Ok(())
        })?;
        Ok(results)
    }

    /// EndTxn: commits or aborts the ongoing transaction and returns the producer's id and
    /// epoch afterwards. `v2` (EndTxn v5+, KIP-890) bumps the epoch with every transaction
    /// end. A retry of a completed EndTxn is answered as it was.
    ///
    /// With transactions v1 the answer comes once the Prepare state is durable (the outcome
    /// is decided: a restart completes it); the markers and the Complete state are written
    /// by a task of their own meanwhile, and the producer's next request waits for them
    /// ([`TxnCoordinator::settled`]), as Kafka's coordinator does. With v2 (whose Produce
    /// adds partitions itself, and would meet the unfinished transaction) it is answered
    /// once complete.
    pub async fn end_txn(
        self: &Arc<Self>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        v2: bool,
    ) -> Result<(i64, i16), TxnError> {
        let _ops = self.ops.lock().await;
        let m = self
            .describe(id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        let done = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        // A retry: the transaction was completed as asked (with v2, at the epoch before
        // the bump).
        let retry_epoch = if v2 { m.last_epoch } else { m.producer_epoch };
        if m.producer_id == producer_id && epoch == retry_epoch && m.state == done {
            return Ok((m.producer_id, m.producer_epoch));
        }
        m.check_producer(producer_id, epoch)?;
        match m.state {
            TxnState::Ongoing => {}
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                if (m.state == TxnState::PrepareCommit) != commit {
                    return Err(TxnError::InvalidTxnState(format!(
                        "the transaction is in {}",
                        m.state.name()
                    )));
                }
                self.finish(id).await?;
                let m = self.describe(id).expect("present");
                return Ok((m.producer_id, m.producer_epoch));
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if !v2 || commit && m.state == TxnState::CompleteAbort {
                    return Err(TxnError::InvalidTxnState(format!(
                        "no transaction is ongoing ({})",
                        m.state.name()
                    )));
                }
                // v2: an empty transaction ends with an epoch bump and no markers.
                let now = strom_log::now_ms();
                self.update(id, |t| {
                    t.prepare(commit, true, now);
                    t.complete(now);
                    Ok(())
                })?;
                let m = self.describe(id).expect("present");
                return Ok((m.producer_id, m.producer_epoch));
            }
        }
        if v2 {
            self.end(id, commit, true).await?;
        } else {
            self.prepare_end(id, commit, false)?;
            let this = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let _ops = this.ops.lock().await;
                this.pause_before_markers(&id).await;
                if let Err(e) = this.finish(&id).await {
                    tracing::warn!(transactional_id = %id, error = %e, "completing a transaction failed (retried)");
                }
            });
        }
        let m = self.describe(id).expect("present");
        Ok((m.producer_id, m.producer_epoch))
    }

    /// Waits until the transaction of `id` is not being completed (bounded by
    /// [`SETTLE_TIMEOUT`]; a transaction still prepared then is answered
    /// CONCURRENT_TRANSACTIONS, retriable, by the request that waited).
    pub async fn settled(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let notified = self.completed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a completion in between is not missed.
            notified.as_mut().enable();
            let preparing = self
                .inner
                .lock()
                .txns
                .get(id)
                .is_some_and(|m| m.state.preparing());
            if !preparing || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Moves the ongoing transaction of `id` to Prepare, durably. Under `ops`.
    fn prepare_end(&self, id: &str, commit: bool, bump: bool) -> Result<(), TxnError> {
        let now = strom_log::now_ms();
        self.update(id, |m| {
            if m.state != TxnState::Ongoing {
                return Err(TxnError::InvalidTxnState(m.state.name().into()));
            }
            m.prepare(commit, bump, now);
            Ok(())
        })
    }

    /// The test hook between a durable Prepare state and the markers.
    async fn pause_before_markers(&self, id: &str) {
        if let Some(pause) = self.config.pause_before_markers {
            tracing::warn!(
                transactional_id = id,
                pause_ms = pause.as_millis() as u64,
                "test hook {PAUSE_BEFORE_MARKERS_ENV}: pausing before the markers"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// Prepares (durably) and completes the ongoing transaction of `id`. Under `ops`.
    async fn end(&self, id: &str, commit: bool, bump: bool) -> Result<(), TxnError> {
        self.prepare_end(id, commit, bump)?;
        self.pause_before_markers(id).await;
        self.finish(id).await
    }

    /// Writes the markers of a prepared transaction, applies its offsets on a commit, and
    /// completes it. A failure leaves it prepared for the ticker to retry.
    async fn finish(&self, id: &str) -> Result<(), TxnError> {
        let r = self.write_outcome(id).await;
        self.completed.notify_waiters();
        r
    }

    /// [`TxnCoordinator::finish`]'s work.
    async fn write_outcome(&self, id: &str) -> Result<(), TxnError> {
        let m = self
            .describe(id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        let commit = match m.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return Ok(()),
        };
        let marker = TxnMarker {
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            commit,
            coordinator_epoch: 0,
        };
        for (t, p) in &m.partitions {
            match self.broker.write_txn_marker(t, *p, marker).await {
                Ok(_) => {}
                // A topic deleted meanwhile has nothing left to mark.
                Err(BrokerError::UnknownTopicOrPartition { .. }) => {}
                Err(e) => {
                    tracing::warn!(transactional_id = id, topic = %t, partition = p, error = %e, "transaction marker not written (retried)");
                    return Err(TxnError::Storage(e.to_string()));
                }
            }
        }
        if commit {
            let mut by_group: BTreeMap<&str, Vec<(String, i32, Committed)>> = BTreeMap::new();
            let now = strom_log::now_ms();
            for ((g, t, p), o) in &m.offsets {
                by_group.entry(g).or_default().push((
                    t.clone(),
                    *p,
                    Committed {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata.clone(),
                        timestamp: now,
                    },
                ));
            }
            for (g, offsets) in by_group {
                self.groups
                    .commit_transactional(g, offsets)
                    .await
                    .map_err(|e| TxnError::Storage(e.to_string()))?;
            }
        }
        let now = strom_log::now_ms();
        self.update(id, |m| {
            m.complete(now);
            Ok(())
        })?;
        let metrics = self.broker.metrics();
        if commit {
            metrics.txn_commits.fetch_add(1, Ordering::Relaxed);
        } else {
            metrics.txn_aborts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The ticker: completes the transactions left prepared (at start: those a crash
    /// interrupted; later: those whose markers failed), and aborts the expired ones with an
    /// epoch bump. Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        self.abort_orphans().await;
        let mut tick = tokio::time::interval(self.config.abort_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.broker.is_stopping() {
                return;
            }
            self.tick_once().await;
        }
    }

    /// At start: a transaction open in a partition that the coordinator does not know as
    /// ongoing or prepared there at that epoch is aborted (an ABORT marker), so that the
    /// partition's stable offset moves on. That is a transaction whose Ongoing state (not
    /// synced) a crash of the machine lost: it was never prepared, so it could only abort.
    pub async fn abort_orphans(&self) {
        let mut orphans = Vec::new();
        for t in self.broker.topics() {
            for p in 0..t.partitions {
                let Ok(producers) = self.broker.producers(&t.name, p) else {
                    continue;
                };
                for pi in producers {
                    if pi.current_txn_start_offset >= 0
                        && !self.knows_open(pi.producer_id, pi.producer_epoch, &t.name, p)
                    {
                        orphans.push((t.name.clone(), p, pi));
                    }
                }
            }
        }
        for (topic, partition, pi) in orphans {
            tracing::warn!(
                %topic,
                partition,
                producer_id = pi.producer_id,
                producer_epoch = pi.producer_epoch,
                first_offset = pi.current_txn_start_offset,
                "an open transaction the coordinator has no state of (lost in a crash): aborting it"
            );
            let marker = TxnMarker {
                producer_id: pi.producer_id,
                producer_epoch: pi.producer_epoch,
                commit: false,
                coordinator_epoch: 0,
            };
            if let Err(e) = self
                .broker
                .write_txn_marker(&topic, partition, marker)
                .await
            {
                tracing::warn!(%topic, partition, error = %e, "aborting a lost transaction failed");
            }
        }
    }

    /// Whether the coordinator has the transaction of `producer_id` at `epoch` open (Ongoing
    /// or Prepare) with the partition in it.
    fn knows_open(&self, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> bool {
        let inner = self.inner.lock();
        let Some(m) = inner
            .by_producer
            .get(&producer_id)
            .and_then(|id| inner.txns.get(id))
        else {
            return false;
        };
        m.producer_id == producer_id
            && m.state.is_open()
            && m.partitions.contains(&(topic.to_string(), partition))
            && (epoch == m.producer_epoch || m.state.preparing() && epoch == m.last_epoch)
    }

    /// One pass of the ticker.
    pub async fn tick_once(&self) {
        let now = strom_log::now_ms();
        let (prepared, expired): (Vec<String>, Vec<String>) = {
            let inner = self.inner.lock();
            (
                inner
                    .txns
                    .values()
                    .filter(|m| m.state.preparing())
                    .map(|m| m.transactional_id.clone())
                    .collect(),
                inner
                    .txns
                    .values()
                    .filter(|m| m.expired(now))
                    .map(|m| m.transactional_id.clone())
                    .collect(),
            )
        };
        for id in prepared {
            let _ops = self.ops.lock().await;
            if let Err(e) = self.finish(&id).await {
                tracing::warn!(transactional_id = %id, error = %e, "completing a prepared transaction failed (retried)");
            }
        }
        for id in expired {
            let _ops = self.ops.lock().await;
            // Still expired under the lock?
            if !self
                .describe(&id)
                .is_some_and(|m| m.expired(strom_log::now_ms()))
            {
                continue;
            }
            tracing::info!(transactional_id = %id, "transaction timed out: aborting");
            match self.end(&id, false, true).await {
                Ok(()) => {
                    self.broker
                        .metrics()
                        .txn_timed_out
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(transactional_id = %id, error = %e, "aborting a timed-out transaction failed (retried)")
                }
            }
        }
    }

    /// Closes the store.
    pub fn close(&self) {
        self.store.close();
    }
}

impl TxnGuard for TxnCoordinator {
    fn check_produce(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        implicit_add: bool,
    ) -> crate::Result<()> {
        let Some(id) = self.inner.lock().by_producer.get(&producer_id).cloned() else {
            return Err(BrokerError::Transaction(TxnError::InvalidTxnState(
                format!("producer {producer_id} has no transactional id"),
            )));
        };
        let tp = (topic.to_string(), partition);
        {
            let inner = self.inner.lock();
            let m = &inner.txns[&id];
            if m.producer_id != producer_id || epoch != m.producer_epoch {
                return Err(BrokerError::Transaction(TxnError::InvalidProducerEpoch));
            }
            if m.state == TxnState::Ongoing && m.partitions.contains(&tp) {
                return Ok(());
            }
            if !implicit_add {
                return Err(BrokerError::Transaction(TxnError::InvalidTxnState(
                    format!("{topic}-{partition} is not in the transaction of {id:?}"),
                )));
            }
        }
        // Transactions v2: the produce adds the partition (stored before the append; not
        // synced, as every Ongoing state).
        let now = strom_log::now_ms();
        self.update_with(&id, false, |m| {
            m.check_producer(producer_id, epoch)?;
            m.begin(now)?;
            m.v2 = true;
            m.partitions.insert(tp);
            Ok(())
        })
        .map_err(BrokerError::Transaction)
    }
}
