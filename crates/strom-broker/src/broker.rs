//! The [`Broker`]: topics, produce, fetch with long polling, offsets, producer ids.
//! Transport-agnostic: every door calls these methods.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use strom_log::{now_ms, LogError};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{BrokerConfig, TopicConfig};
use crate::dedup::DedupWindow;
use crate::delay::{DelayStore, Delayed, Delivery};
use crate::error::{BrokerError, Result};
use crate::metrics::CoreMetrics;
use crate::parallel;
use crate::producer::{BatchCheck, PartitionProducers, ProducerIds, ProducerInfo};
use crate::topic::{self, validate_topic_name, Online, Partition, Topic, TopicMeta};

/// What a successful produce returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The broker's timestamp for `LogAppendTime` topics, else -1.
    pub log_append_time: i64,
    /// The partition's log start offset.
    pub log_start_offset: i64,
    /// Whether this was a retry of a stored batch (acknowledged, not written again).
    pub duplicate: bool,
    /// When a record carried a `strom.` header that changed where it went (delayed, or a
    /// duplicate by `strom.msg.id`): every record's offset in request order — where it was
    /// stored, the offset of its first copy for a duplicate, -1 for a delayed record (not in
    /// the partition yet). `base_offset` is then the first record's. `None`: the records
    /// are at `base_offset..=last_offset`.
    pub record_offsets: Option<Vec<i64>>,
}

/// A produce whose acknowledgement waits for a sync: see [`Broker::produce_deferred`].
#[must_use = "the records are not durable until Broker::wait_durable returns"]
pub struct PendingFlush {
    partition: Arc<Partition>,
    offset: i64,
}

impl std::fmt::Debug for PendingFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingFlush")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// One partition to read in a fetch.
#[derive(Clone, Debug)]
pub struct FetchSpec {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// First offset wanted.
    pub offset: i64,
    /// Byte budget of this partition.
    pub max_bytes: usize,
}

/// What a fetch returns for one partition.
#[derive(Clone, Debug, Default)]
pub struct FetchedPartition {
    /// Whole record batches, as stored (empty when they are given as `file`).
    pub data: Bytes,
    /// With [`Broker::fetch_ranges`]: where the batches are, for `sendfile`.
    pub file: Option<strom_log::FileRange>,
    /// High watermark (= log end offset on a single node).
    pub high_watermark: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Last stable offset: the first offset of the earliest ongoing transaction, else the
    /// high watermark.
    pub last_stable_offset: i64,
    /// With [`Isolation::ReadCommitted`]: the aborted transactions overlapping the returned
    /// offsets, by last offset.
    pub aborted: Vec<AbortedTxn>,
}

/// Which records a fetch may return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Everything up to the high watermark (Kafka's isolation level 0).
    #[default]
    ReadUncommitted,
    /// Only below the last stable offset, with the aborted ranges (isolation level 1).
    ReadCommitted,
    /// A follower's fetch (cluster mode): everything up to the log end, on the leader.
    Replica,
}

/// An aborted transaction a read_committed reader must skip: the producer's records from
/// `first_offset` up to its ABORT marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// The transaction's first offset.
    pub first_offset: i64,
}

/// A transaction marker for [`Broker::write_txn_marker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnMarker {
    /// The producer whose transaction ends.
    pub producer_id: i64,
    /// Its epoch (an older one than the partition knows is fenced).
    pub producer_epoch: i16,
    /// COMMIT (`true`) or ABORT.
    pub commit: bool,
    /// The transaction coordinator's epoch.
    pub coordinator_epoch: i32,
}

impl FetchedPartition {
    /// Bytes of batches, in memory or as a file range.
    pub fn len(&self) -> usize {
        self.data.len() + self.file.as_ref().map_or(0, |f| f.len)
    }

    /// Whether no batch was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The limits of one fetch.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    /// Total byte budget (the first batch found is returned even if larger).
    pub max_bytes: usize,
    /// Return as soon as this many bytes are available.
    pub min_bytes: usize,
    /// Wait at most this long for `min_bytes`.
    pub max_wait: Duration,
}

/// A topic as listed in metadata.
#[derive(Clone, Debug)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Topic id (UUID bytes).
    pub id: [u8; 16],
    /// Partition count.
    pub partitions: i32,
    /// Whether it is internal.
    pub internal: bool,
}

/// One config change of an incremental alter.
#[derive(Clone, Debug)]
pub enum ConfigOp {
    /// Set a value.
    Set(String, String),
    /// Back to the default.
    Delete(String),
}

/// What the slow path of a produce did ([`Broker::append_reserved`]).
struct Reserved {
    ack: ProduceAck,
    /// Sync up to this offset before acknowledging.
    flush_to: Option<i64>,
    stored_records: u64,
    stored_bytes: usize,
}

/// Runs `f`, which may block on the disk (a write throttled by the kernel's dirty-page
/// limit, an `RWF_DSYNC` append), without stalling the other tasks of this runtime worker:
/// on a multi-threaded runtime the worker hands its queue to another thread first
/// (`block_in_place`); elsewhere (single-threaded tests) it just runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Bytes one fetch reads from one partition at most (whole batches: a single larger batch is
/// still returned whole). Bounds the memory a fetch holds whatever the client asks for, and
/// keeps read buffers small enough for the allocator to recycle them instead of mapping fresh
/// zeroed pages for every response. A client asking for more gets it in several fetches.
pub const READ_MAX_BYTES: usize = 4 << 20;

/// What the transaction coordinator checks of a transactional batch before it is appended
/// (see [`crate::txn`]): that its partition is in the producer's ongoing transaction at the
/// producer's current epoch, or, with `implicit_add` (transactions v2, Produce v12+), adds it.
pub trait TxnGuard: Send + Sync {
    /// `Ok` if a transactional batch of `producer_id` at `epoch` may be appended.
    fn check_produce(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        implicit_add: bool,
    ) -> Result<()>;
}

/// The broker core.
pub struct Broker {
    config: BrokerConfig,
    cluster_id: String,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation, deletion and alteration (never held on the data path).
    admin: Mutex<()>,
    pub(crate) producer_ids: ProducerIds,
    appended: Notify,
    /// Set when shutdown begins: long polls return at once.
    stopping: AtomicBool,
    metrics: CoreMetrics,
    closed: AtomicBool,
    /// Delayed records waiting for their time (`.strom/delay/`).
    delay: DelayStore,
    /// The transaction coordinator's produce check, once it is open.
    txn_guard: std::sync::OnceLock<Arc<dyn TxnGuard>>,
    /// Client quotas (`.strom/client-quotas.json`), opened at first use.
    pub(crate) quotas: std::sync::OnceLock<crate::quota::ClientQuotas>,
    /// Where each quota entity stands against its rate.
    pub(crate) throttles: crate::quota::Throttles,
    /// The log cleaner's registry and metrics (`cleaner.rs`).
    cleaner: crate::cleaner::Cleaner,
    /// SCRAM credentials (`.strom/scram-credentials.json`), opened at first use.
    credentials: std::sync::OnceLock<Arc<crate::security::credentials::Credentials>>,
    /// HTTP bearer tokens (`.strom/tokens.json`), opened at first use.
    tokens: std::sync::OnceLock<Arc<crate::security::tokens::Tokens>>,
    /// Who may do what (`--authorizer acl`: `.strom/acls.json`).
    authorizer: crate::security::acl::Authorizer,
    /// Cluster mode (see `replica`): partitions are served where the cluster says.
    pub(crate) clustered: AtomicBool,
    /// Cluster mode: the cluster's metadata as last seen, and its admin operations.
    pub(crate) cluster: std::sync::OnceLock<Arc<dyn crate::cluster::ClusterHandle>>,
    /// Cluster mode: the blocks of producer ids the cluster handed this broker.
    pub(crate) id_blocks: crate::cluster::IdBlocks,
    /// Cluster mode: ISR shrinks and expands applied where this broker leads.
    pub(crate) isr_counters: crate::replica::IsrCounters,
}

/// The store in `cell`, opened by `open` at first use (a failure is retried next time).
fn open_once<T, E: std::fmt::Display>(
    cell: &std::sync::OnceLock<Arc<T>>,
    open: impl FnOnce() -> std::result::Result<T, E>,
) -> Result<Arc<T>> {
    if let Some(t) = cell.get() {
        return Ok(t.clone());
    }
    let opened = open().map_err(|e| BrokerError::Io(std::io::Error::other(e.to_string())))?;
    Ok(cell.get_or_init(|| Arc::new(opened)).clone())
}

impl Broker {
    /// Opens the broker over its data directory, loading every topic and recovering each log.
    ///
    /// Start-up degrades per partition, not per broker (see [`crate::topic`]): a damaged
    /// topic file is rebuilt from the partition directories, a partition whose log cannot be
    /// opened is offline, an unreadable `producer-ids` restarts the id allocator above every
    /// earlier id; each is logged with what was done. Only a data directory that cannot be
    /// created or listed stops the start.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        let data_dir = config.data_dir.clone();
        fs::create_dir_all(topic::meta_dir(&data_dir))?;
        remove_deleted_dirs(&data_dir);
        let cluster_id = load_cluster_id(&data_dir)?;
        let producer_ids = ProducerIds::open(&data_dir)?;
        let delay = DelayStore::open(&data_dir.join(".strom").join("delay"))?;
        // A damaged ACL file stops the start: serving without the ACLs it held would open
        // what they closed.
        let authorizer = if config.acl_authorizer {
            let acls = crate::security::acl::Acls::open(&data_dir)
                .map_err(|e| BrokerError::Io(std::io::Error::other(e.to_string())))?;
            crate::security::acl::Authorizer::acl(Arc::new(acls), config.super_users.clone())
        } else {
            crate::security::acl::Authorizer::disabled()
        };
        let mut topics = BTreeMap::new();
        let metas = topic::load_metas(&data_dir, config.max_partitions_per_topic)?;
        // Opening a partition reads its index tail and producer snapshot: on a cold page
        // cache that is disk reads, overlapped on a few threads.
        let loaded = parallel::on_threads(&metas, |(meta, topic_config)| {
            Topic::load(&data_dir, meta, topic_config.clone())
        });
        for ((meta, _), t) in metas.iter().zip(loaded) {
            let t = match t {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(topic = %meta.name, error = %e, "topic not loaded");
                    continue;
                }
            };
            let mut offline = 0;
            for p in t.partitions().iter() {
                match p.online() {
                    // Ids found in the logs count as issued, whatever `producer-ids` says.
                    Ok(o) => {
                        if let Some(id) = o.producers.lock().max_producer_id() {
                            producer_ids.ensure_above(id);
                        }
                    }
                    Err(_) => offline += 1,
                }
            }
            if offline > 0 {
                tracing::error!(topic = %meta.name, partitions = meta.partitions, offline, "topic loaded with offline partitions");
            } else {
                tracing::info!(topic = %meta.name, partitions = meta.partitions, "topic loaded");
            }
            topics.insert(meta.name.clone(), Arc::new(t));
        }
        Ok(Arc::new(Broker {
            config,
            cluster_id,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            producer_ids,
            appended: Notify::new(),
            stopping: AtomicBool::new(false),
            metrics: CoreMetrics::default(),
            closed: AtomicBool::new(false),
            delay,
            txn_guard: std::sync::OnceLock::new(),
            quotas: std::sync::OnceLock::new(),
            throttles: crate::quota::Throttles::default(),
            cleaner: crate::cleaner::Cleaner::default(),
            credentials: std::sync::OnceLock::new(),
            tokens: std::sync::OnceLock::new(),
            authorizer,
            clustered: AtomicBool::new(false),
            cluster: std::sync::OnceLock::new(),
            id_blocks: Default::default(),
            isr_counters: Default::default(),
        }))
    }

    /// The SCRAM credential store of the data directory (SASL PLAIN and SCRAM logins),
    /// opened at first use; a store that cannot be read is an error each time it is asked
    /// for, so that authentication fails instead of the broker.
    pub fn credentials(&self) -> Result<Arc<crate::security::credentials::Credentials>> {
        open_once(&self.credentials, || {
            crate::security::credentials::Credentials::open(&self.config.data_dir)
        })
    }

    /// The bearer token store of the data directory (HTTP door), opened at first use; like
    /// [`Broker::credentials`], a store that cannot be read fails authentication, not the
    /// broker.
    pub fn tokens(&self) -> Result<Arc<crate::security::tokens::Tokens>> {
        open_once(&self.tokens, || {
            crate::security::tokens::Tokens::open(&self.config.data_dir)
        })
    }

    /// The authorizer every door asks before it acts for a principal.
    pub fn authorizer(&self) -> &crate::security::acl::Authorizer {
        &self.authorizer
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The cluster id (persisted at first start).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The log cleaner's state.
    pub(crate) fn cleaner(&self) -> &crate::cleaner::Cleaner {
        &self.cleaner
    }

    /// Every topic.
    pub(crate) fn topic_list(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    /// Whether shutdown has closed the logs.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The metrics registry every door records into.
    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    /// This broker's node id.
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    // --- topics --------------------------------------------------------------------------

    /// Every topic object, sorted by name.
    pub(crate) fn topics_snapshot(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<TopicInfo> {
        self.topics.read().values().map(|t| info(t)).collect()
    }

    /// The topics `patterns` name (exact names or globs, `*` matching any run of
    /// characters), sorted, each with whether a pattern names it exactly (a door refuses a
    /// topic named exactly that its caller may not read, and skips a glob's).
    pub fn topics_matching(&self, patterns: &[String]) -> Vec<(String, bool)> {
        self.topics
            .read()
            .keys()
            .filter_map(|name| {
                let named = patterns.iter().any(|p| !p.contains('*') && p == name);
                (named || patterns.iter().any(|p| crate::topic::glob_match(p, name)))
                    .then(|| (name.clone(), named))
            })
            .collect()
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// One partition, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>> {
        self.topic(topic)
            .and_then(|t| t.partition(partition))
            .ok_or_else(|| BrokerError::unknown(topic, partition))
    }

    /// Creates a topic. `partitions` -1 means `num.partitions`. With `validate_only`, checks
    /// everything and creates nothing.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: Vec<(String, String)>,
        validate_only: bool,
    ) -> Result<()> {
        self.create_topic_as(name, None, partitions, configs, validate_only)
    }

    /// Cluster mode: creates the local copy of a topic the cluster's metadata holds, with
    /// the cluster's topic id (every broker's copy has the same).
    pub fn create_topic_with_id(
        &self,
        name: &str,
        id: [u8; 16],
        partitions: i32,
        configs: Vec<(String, String)>,
    ) -> Result<()> {
        self.create_topic_as(name, Some(id), partitions, configs, false)
    }

    fn create_topic_as(
        &self,
        name: &str,
        id: Option<[u8; 16]>,
        partitions: i32,
        configs: Vec<(String, String)>,
        validate_only: bool,
    ) -> Result<()> {
        self.check_open()?;
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.config.num_partitions
        } else {
            partitions
        };
        if partitions < 1 || partitions > self.config.max_partitions_per_topic {
            return Err(BrokerError::InvalidPartitions(format!(
                "a topic needs between 1 and {} partitions, not {partitions}",
                self.config.max_partitions_per_topic
            )));
        }
        let config = TopicConfig::from_overrides(configs).map_err(BrokerError::InvalidConfig)?;
        let _admin = self.admin.lock();
        if self.topics.read().contains_key(name) {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
        }
        if validate_only {
            return Ok(());
        }
        let meta = TopicMeta {
            name: name.to_string(),
            id: topic::hex(&match id {
                Some(id) => id,
                None => topic::random_id()?,
            }),
            partitions,
            configs: config.overrides().clone(),
        };
        // On failure nothing stays behind (directories, metadata file): a retry starts clean.
        let created = Topic::create(&self.config.data_dir, &meta).and_then(|t| {
            match topic::save_new_meta(&self.config.data_dir, &meta) {
                Ok(()) => Ok(t),
                Err(e) => {
                    t.discard();
                    Err(e.into())
                }
            }
        });
        let t = created.inspect_err(|e| {
            tracing::error!(topic = name, error = %e, "creating the topic failed; what it created was removed")
        })?;
        for p in t.partitions().iter() {
            if let Ok(o) = p.online() {
                self.init_replication(o);
            }
        }
        self.topics.write().insert(name.to_string(), Arc::new(t));
        tracing::info!(topic = name, partitions, "topic created");
        Ok(())
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let _admin = self.admin.lock();
        let t = self
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| BrokerError::unknown(name, -1))?;
        topic::remove_meta(&self.config.data_dir, name)?;
        let tag = topic::hex(&t.id());
        for p in t.partitions().iter() {
            if let Ok(log) = p.log() {
                let _ = log.close();
            }
            let dir = p.dir().to_path_buf();
            let doomed = dir.with_file_name(format!("{}-{}.{tag}-delete", name, p.index()));
            if let Err(e) = fs::rename(&dir, &doomed).and_then(|_| fs::remove_dir_all(&doomed)) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted partition");
            }
        }
        self.appended.notify_waiters();
        t.appended().notify_waiters();
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Grows a topic to `total` partitions.
    pub fn create_partitions(&self, name: &str, total: i32, validate_only: bool) -> Result<()> {
        self.check_open()?;
        let _admin = self.admin.lock();
        let t = self
            .topic(name)
            .ok_or_else(|| BrokerError::unknown(name, -1))?;
        let current = t.partitions().len() as i32;
        if total <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic {name} has {current} partitions; the new count must be larger, not {total}"
            )));
        }
        if total > self.config.max_partitions_per_topic {
            return Err(BrokerError::InvalidPartitions(format!(
                "at most {} partitions per topic",
                self.config.max_partitions_per_topic
            )));
        }
        if validate_only {
            return Ok(());
        }
        let data_dir = &self.config.data_dir;
        t.grow(data_dir, total, |meta| topic::save_meta(data_dir, meta))
            .inspect_err(|e| {
                tracing::error!(topic = name, error = %e, "adding partitions failed; what it created was removed")
            })?;
        for p in t.partitions().iter().skip(current as usize) {
            if let Ok(o) = p.online() {
                self.init_replication(o);
            }
        }
        tracing::info!(topic = name, partitions = total, "partitions added");
        Ok(())
    }

    /// The config of a topic.
    pub fn topic_config(&self, name: &str) -> Result<TopicConfig> {
        self.topic(name)
            .map(|t| t.config())
            .ok_or_else(|| BrokerError::unknown(name, -1))
    }

    /// Applies config changes to a topic, all or nothing.
    pub fn alter_topic_config(
        &self,
        name: &str,
        ops: &[ConfigOp],
        validate_only: bool,
    ) -> Result<()> {
        self.check_open()?;
        let _admin = self.admin.lock();
        let t = self
            .topic(name)
            .ok_or_else(|| BrokerError::unknown(name, -1))?;
        let mut config = t.config();
        config.apply(ops).map_err(BrokerError::InvalidConfig)?;
        if validate_only {
            return Ok(());
        }
        Self::store_topic_config(&self.config.data_dir, &t, config)
    }

    /// Cluster mode: makes a topic's local copy use `overrides`, the cluster's (a change
    /// another broker wrote to the metadata). Nothing happens when they are already its own.
    pub fn apply_topic_overrides(
        &self,
        name: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<()> {
        let _admin = self.admin.lock();
        let t = self
            .topic(name)
            .ok_or_else(|| BrokerError::unknown(name, -1))?;
        if t.config().overrides() == overrides {
            return Ok(());
        }
        let config =
            TopicConfig::from_overrides(overrides.clone()).map_err(BrokerError::InvalidConfig)?;
        Self::store_topic_config(&self.config.data_dir, &t, config)
    }

    /// Saves a topic's new config in its meta file, then applies it to every partition.
    fn store_topic_config(
        data_dir: &std::path::Path,
        t: &Topic,
        config: TopicConfig,
    ) -> Result<()> {
        let mut meta = t.meta();
        meta.configs = config.overrides().clone();
        topic::save_meta(data_dir, &meta)?;
        t.set_config(config)
    }

    // --- data path -------------------------------------------------------------------------

    /// Appends `records` (one or more v2 batches, as the client sent them) to a partition and
    /// returns once the topic's durability policy is met. A retried idempotent batch is
    /// acknowledged with its original offsets and not written again.
    /// In cluster mode it is acknowledged once every in-sync replica has the records
    /// (acks=all, with `min.insync.replicas`), within 30 s.
    pub async fn produce(&self, topic: &str, partition: i32, records: &[u8]) -> Result<ProduceAck> {
        self.check_txn(topic, partition, records, false)?;
        self.check_min_insync(topic, partition)?;
        let (ack, pending) = self.append_records(topic, partition, records, true)?;
        if let Some(pending) = pending {
            self.wait_durable(pending).await?;
        }
        self.wait_replicated(
            topic,
            partition,
            ack.last_offset + 1,
            Duration::from_secs(30),
        )
        .await?;
        Ok(ack)
    }

    /// [`Broker::produce`] that returns as soon as the records are in the log: if the topic's
    /// durability policy asks for a sync before the acknowledgement, the returned
    /// [`PendingFlush`] must be passed to [`Broker::wait_durable`] before acknowledging. A
    /// connection that appends its next request meanwhile lets one sync cover both.
    pub fn produce_deferred(
        &self,
        topic: &str,
        partition: i32,
        records: &[u8],
    ) -> Result<(ProduceAck, Option<PendingFlush>)> {
        self.check_txn(topic, partition, records, false)?;
        self.append_records(topic, partition, records, false)
    }

    /// Waits until the records of a [`Broker::produce_deferred`] are on disk.
    pub async fn wait_durable(&self, pending: PendingFlush) -> Result<()> {
        self.flush_partition(&pending.partition, pending.offset)
            .await
    }

    /// Installs the transaction coordinator's produce check (once).
    pub fn set_txn_guard(&self, guard: Arc<dyn TxnGuard>) {
        let _ = self.txn_guard.set(guard);
    }

    /// [`Broker::produce_deferred`] for a produce that may add its partition to the
    /// producer's transaction (transactions v2: Kafka's Produce v12+).
    pub fn produce_deferred_txn(
        &self,
        topic: &str,
        partition: i32,
        records: &[u8],
        implicit_add: bool,
    ) -> Result<(ProduceAck, Option<PendingFlush>)> {
        self.check_txn(topic, partition, records, implicit_add)?;
        self.append_records(topic, partition, records, false)
    }

    /// The transaction check of a produce: a transactional batch's partition must be in its
    /// producer's ongoing transaction (nothing is written otherwise), as the installed
    /// [`TxnGuard`] decides.
    fn check_txn(
        &self,
        topic: &str,
        partition: i32,
        records: &[u8],
        implicit_add: bool,
    ) -> Result<()> {
        let Some(h) = strom_records::BatchHeader::parse(records) else {
            return Ok(());
        };
        if !h.is_transactional() {
            return Ok(());
        }
        self.partition(topic, partition)?;
        // Without a coordinator (the core used alone: tools, tests) nothing is checked;
        // `strom serve` always installs one.
        match self.txn_guard.get() {
            Some(g) => g.check_produce(
                topic,
                partition,
                h.producer_id,
                h.producer_epoch,
                implicit_add,
            ),
            None => Ok(()),
        }
    }

    fn append_records(
        &self,
        topic: &str,
        partition: i32,
        records: &[u8],
        may_sync_inline: bool,
    ) -> Result<(ProduceAck, Option<PendingFlush>)> {
        self.check_open()?;
        let p = self.partition(topic, partition)?;
        let online = p.online()?;
        self.check_leader(topic, partition, online)?;
        if self.topic(topic).is_some_and(|t| t.compacted()) {
            crate::cleaner::check_keys(records, topic, partition)?;
        }
        let now = now_ms();
        let converted = self.apply_append_policy(topic, &online.log, records, now)?;
        let records = converted.as_deref().unwrap_or(records);
        let outcome = blocking(|| -> Result<_> {
            let mut producers = online.producers.lock();
            match producers.check(records, |id| self.producer_id_issued(id))? {
                BatchCheck::Duplicate {
                    first_offset,
                    last_offset,
                } => Ok(Err(Err((first_offset, last_offset)))),
                BatchCheck::New => {
                    producers.before_append(records, online.log.log_end_offset());
                    // The request's bytes go to the page cache as they are: no copy.
                    let appended = online
                        .log
                        .append_shared_unreserved(records, may_sync_inline)
                        .map_err(BrokerError::from);
                    let appended = match appended {
                        Ok(a) => a,
                        Err(e) => {
                            producers.publish_unstable();
                            return Err(e);
                        }
                    };
                    let Some(info) = appended else {
                        // A `strom.` header: the slow path reads the records.
                        let r = self
                            .append_reserved(
                                topic,
                                partition,
                                online,
                                &mut producers,
                                records,
                                may_sync_inline,
                                now,
                            )
                            .map(|r| Err(Ok(r)));
                        producers.publish_unstable();
                        return r;
                    };
                    producers.record(records, info.base_offset, now);
                    if let Err(e) = producers.after_append(&online.log, &info) {
                        tracing::warn!(topic, partition, error = %e, "producer snapshot failed");
                    }
                    Ok(Ok(info))
                }
            }
        })
        .inspect_err(|e| self.log_storage_error(&p, e))?;
        let pending = |offset| PendingFlush {
            partition: p.clone(),
            offset,
        };
        self.appended_as_leader(online);
        Ok(match outcome {
            Ok(info) => {
                self.wake(topic);
                self.metrics.bytes_in(topic, records.len(), info.records);
                let ack = ProduceAck {
                    base_offset: info.base_offset,
                    last_offset: info.last_offset,
                    log_append_time: info.log_append_time,
                    log_start_offset: info.log_start_offset,
                    duplicate: false,
                    record_offsets: None,
                };
                (ack, info.flush_due.then(|| pending(info.last_offset + 1)))
            }
            Err(Ok(r)) => {
                if r.stored_records > 0 {
                    self.wake(topic);
                    self.metrics
                        .bytes_in(topic, r.stored_bytes, r.stored_records);
                }
                let flush = r.flush_to.map(pending);
                (r.ack, flush)
            }
            Err(Err((first, last))) => {
                let ack = ProduceAck {
                    base_offset: first,
                    last_offset: last,
                    log_append_time: -1,
                    log_start_offset: online.log.log_start_offset(),
                    duplicate: true,
                    record_offsets: None,
                };
                // A retry is acknowledged once its first write is durable.
                let flush = online.log.config().flush_messages.is_some();
                (ack, flush.then(|| pending(last + 1)))
            }
        })
    }

    /// The slow path of a produce whose batches carry a `strom.` header (see
    /// [`crate::reserved`]), under the partition's producer lock, after the idempotence
    /// check: reads the records; refuses the whole produce (nothing stored) if one asks
    /// for something invalid; stores the delayed ones in the delay store (durably, before
    /// anything is acknowledged); drops the duplicates by `strom.msg.id`; appends the rest —
    /// the request's own bytes when nothing was taken out, else one rebuilt uncompressed
    /// batch (an idempotent producer's: its id and epoch, the sequence numbers of the
    /// original batch's *last* records, so the producer's next sequence still follows).
    #[allow(clippy::too_many_arguments)]
    fn append_reserved(
        &self,
        topic: &str,
        partition: i32,
        online: &Online,
        producers: &mut PartitionProducers,
        records: &[u8],
        may_sync: bool,
        now: i64,
    ) -> Result<Reserved> {
        let config = self.topic(topic).map(|t| t.config()).unwrap_or_default();
        let (window_ms, delay_max_ms) = (
            config.dedup_window_ms(),
            config.delay_max_ms(self.config.delay_max_ms),
        );
        let buf = Bytes::copy_from_slice(records);
        let mut all = Vec::new();
        let mut asks = Vec::new();
        let mut last_header = None;
        for (pos, h) in strom_records::headers(&buf) {
            let whole = buf.slice(pos..pos + h.total_len());
            let rs = strom_records::records(&whole)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(LogError::from)?;
            for (i, r) in rs.iter().enumerate() {
                asks.push(
                    crate::reserved::asks(r, i as i32, now, delay_max_ms)
                        .map_err(LogError::from)?,
                );
            }
            all.extend(rs);
            last_header = Some(h);
        }
        let last_header = last_header.ok_or_else(|| {
            LogError::from(strom_records::BatchError::Corrupt(
                "empty record set".into(),
            ))
        })?;
        // Each record's fate: `Some(offset)` known now (a duplicate), or to come.
        enum Fate {
            Store,
            Duplicate(i64),
            DuplicateOfIndex(usize),
            Delay(i64),
        }
        let mut dedup = online.dedup.lock();
        if window_ms > 0 && dedup.is_none() && asks.iter().any(|a| a.msg_id.is_some()) {
            *dedup = Some(DedupWindow::load(&online.log, window_ms, now)?);
        }
        if let Some(w) = dedup.as_mut() {
            w.expire(window_ms, now);
        }
        let mut fates = Vec::with_capacity(all.len());
        let mut in_request: std::collections::HashMap<Bytes, usize> = Default::default();
        for (i, a) in asks.iter().enumerate() {
            let fate = match (a.due_ms, &a.msg_id) {
                (Some(due), _) => Fate::Delay(due),
                (None, Some(id)) if window_ms > 0 => {
                    if let Some(offset) = dedup.as_ref().and_then(|w| w.get(id)) {
                        Fate::Duplicate(offset)
                    } else if let Some(&first) = in_request.get(id) {
                        Fate::DuplicateOfIndex(first)
                    } else {
                        in_request.insert(id.clone(), i);
                        Fate::Store
                    }
                }
                _ => Fate::Store,
            };
            fates.push(fate);
        }
        let delayed: Vec<Delayed> = fates
            .iter()
            .zip(&all)
            .filter_map(|(f, r)| match f {
                Fate::Delay(due) => Some(Delayed {
                    topic: topic.to_string(),
                    partition,
                    due_ms: *due,
                    record: r.clone(),
                }),
                _ => None,
            })
            .collect();
        let delayed_count = delayed.len() as u64;
        self.delay.add(delayed)?;
        self.metrics
            .delayed_accepted
            .fetch_add(delayed_count, Ordering::Relaxed);
        let kept: Vec<usize> = (0..all.len())
            .filter(|&i| matches!(fates[i], Fate::Store))
            .collect();
        let mut stored_at = vec![-1i64; all.len()];
        let mut info = None;
        if kept.len() == all.len() {
            // Nothing taken out: the request's own bytes, as on the fast path.
            let i = if may_sync {
                online.log.append_shared(records)?
            } else {
                online.log.append_shared_unsynced(records)?
            };
            producers.record(records, i.base_offset, now);
            for (n, at) in stored_at.iter_mut().enumerate() {
                *at = i.base_offset + n as i64;
            }
            info = Some((i, records.len()));
        } else if !kept.is_empty() {
            let rs: Vec<_> = kept.iter().map(|&i| all[i].clone()).collect();
            let producer =
                (last_header.producer_id >= 0 && last_header.base_sequence >= 0).then(|| {
                    let last_seq = last_header
                        .base_sequence
                        .wrapping_add(last_header.last_offset_delta);
                    strom_records::ProducerFields {
                        producer_id: last_header.producer_id,
                        producer_epoch: last_header.producer_epoch,
                        base_sequence: last_seq.wrapping_sub(rs.len() as i32 - 1),
                    }
                });
            let mut batch = strom_records::rebuild(&rs, producer);
            if last_header.is_transactional() {
                strom_records::set_transactional(&mut batch);
            }
            let i = if may_sync {
                online.log.append_shared(&batch)?
            } else {
                online.log.append_shared_unsynced(&batch)?
            };
            // The producer's sequence moves past the whole original batch.
            producers.record(records, i.base_offset, now);
            for (n, &k) in kept.iter().enumerate() {
                stored_at[k] = i.base_offset + n as i64;
            }
            info = Some((i, batch.len()));
        } else {
            // Nothing stored: an idempotent producer's sequence still moves past the batch,
            // and only a snapshot makes that survive a crash (the log holds no trace of it).
            producers.record(records, -1, now);
            if last_header.producer_id >= 0 && last_header.base_sequence >= 0 {
                if let Err(e) = producers.snapshot(online.log.log_end_offset()) {
                    tracing::warn!(topic, partition, error = %e, "producer snapshot failed");
                }
            }
        }
        if let Some((i, _)) = &info {
            if let Err(e) = producers.after_append(&online.log, i) {
                tracing::warn!(topic, partition, error = %e, "producer snapshot failed");
            }
        }
        let mut hits = 0u64;
        let offsets: Vec<i64> = fates
            .iter()
            .enumerate()
            .map(|(i, f)| match f {
                Fate::Store => stored_at[i],
                Fate::Duplicate(o) => {
                    hits += 1;
                    *o
                }
                Fate::DuplicateOfIndex(first) => {
                    hits += 1;
                    stored_at[*first]
                }
                Fate::Delay(_) => -1,
            })
            .collect();
        self.metrics.dedup_hits.fetch_add(hits, Ordering::Relaxed);
        if window_ms > 0 {
            if let Some(w) = dedup.as_mut() {
                for (i, a) in asks.iter().enumerate() {
                    if let (Fate::Store, Some(id)) = (&fates[i], &a.msg_id) {
                        w.insert(id.clone(), stored_at[i], now);
                    }
                }
            }
        }
        let first = offsets.first().copied().unwrap_or(-1);
        let last = offsets.last().copied().unwrap_or(-1);
        let (flush_to, stored_records, stored_bytes, log_append_time) = match &info {
            Some((i, len)) => (
                i.flush_due.then_some(i.last_offset + 1),
                i.records,
                *len,
                i.log_append_time,
            ),
            None => {
                // Duplicates only: acknowledged once their first copies are durable.
                let newest = offsets.iter().copied().max().unwrap_or(-1);
                let flush = online.log.config().flush_messages.is_some() && newest >= 0;
                (flush.then_some(newest + 1), 0, 0, -1)
            }
        };
        Ok(Reserved {
            ack: ProduceAck {
                base_offset: first,
                last_offset: last,
                log_append_time,
                log_start_offset: online.log.log_start_offset(),
                duplicate: false,
                record_offsets: Some(offsets),
            },
            flush_to,
            stored_records,
            stored_bytes,
        })
    }

    /// Checks the `strom.` headers of `records` (batches as a produce would send them to
    /// `topic`) without storing anything: the error a produce would get for them, if any.
    /// For doors that write several partitions of one request and refuse it whole.
    pub fn check_reserved(&self, topic: &str, records: &[u8]) -> Result<()> {
        let summary = strom_records::validate(records, usize::MAX).map_err(LogError::from)?;
        if !summary.reserved_headers {
            return Ok(());
        }
        let config = self.topic(topic).map(|t| t.config()).unwrap_or_default();
        let buf = Bytes::copy_from_slice(records);
        let now = now_ms();
        for (pos, h) in strom_records::headers(&buf) {
            let whole = buf.slice(pos..pos + h.total_len());
            for (i, r) in strom_records::records(&whole)
                .map_err(LogError::from)?
                .enumerate()
            {
                let r = r.map_err(LogError::from)?;
                crate::reserved::asks(
                    &r,
                    i as i32,
                    now,
                    config.delay_max_ms(self.config.delay_max_ms),
                )
                .map_err(LogError::from)?;
            }
        }
        Ok(())
    }

    /// Delayed records waiting for their time.
    pub fn delayed_pending(&self) -> i64 {
        self.delay.pending()
    }

    /// Delivers every delayed record that is due (called by the delay ticker; blocks on the
    /// disk). Stops at the first failure, to retry at the next tick.
    pub fn deliver_due(&self) {
        loop {
            let next = self.delay.next_due(
                now_ms(),
                |t, p| {
                    self.partition(t, p).ok().and_then(|p| {
                        p.log()
                            .ok()
                            .map(|l| (l.log_end_offset(), l.config().max_batch_bytes))
                    })
                },
                |t, p, from, id| self.holds_delay_id(t, p, from, id),
            );
            let d = match next {
                Ok(Some(d)) => d,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "delayed delivery: the delay store failed");
                    return;
                }
            };
            match self.append_delivered(&d) {
                Ok(()) => {
                    if let Err(e) = self.delay.done(&d) {
                        tracing::error!(error = %e, "delayed delivery: recording progress failed");
                        return;
                    }
                }
                Err(e) => {
                    if let Ok(p) = self.partition(&d.topic, d.partition) {
                        self.log_storage_error(&p, &e);
                    }
                    let _ = self.delay.failed(&d);
                    return;
                }
            }
        }
    }

    /// Appends and syncs a run of due delayed records.
    fn append_delivered(&self, d: &Delivery) -> Result<()> {
        let p = self.partition(&d.topic, d.partition)?;
        let online = p.online()?;
        let batch = strom_records::rebuild(&d.records, None);
        let info = {
            let mut producers = online.producers.lock();
            let info = online.log.append_shared(&batch)?;
            if let Err(e) = producers.after_append(&online.log, &info) {
                tracing::warn!(topic = %d.topic, partition = d.partition, error = %e, "producer snapshot failed");
            }
            if let Some(w) = online.dedup.lock().as_mut() {
                for (n, r) in d.records.iter().enumerate() {
                    let id = r
                        .headers
                        .iter()
                        .rev()
                        .find(|(k, _)| k.as_ref() == crate::reserved::MSG_ID_HEADER);
                    if let Some((_, Some(id))) = id {
                        w.insert(id.clone(), info.base_offset + n as i64, now_ms());
                    }
                }
            }
            info
        };
        online.log.flush_to(info.last_offset + 1)?;
        self.wake(&d.topic);
        self.metrics.bytes_in(&d.topic, batch.len(), info.records);
        self.metrics
            .delayed_delivered
            .fetch_add(info.records, Ordering::Relaxed);
        tracing::debug!(topic = %d.topic, partition = d.partition, records = info.records, first = DelayStore::first_offset(d), "delayed records delivered");
        Ok(())
    }

    /// Whether partition `t`/`p` holds, from offset `from` on, a record delivered from the
    /// delay log's offset `id` (settles a delivery a crash interrupted).
    fn holds_delay_id(&self, t: &str, p: i32, from: i64, id: i64) -> bool {
        let Ok(part) = self.partition(t, p) else {
            return false;
        };
        let Ok(log) = part.log() else {
            return false;
        };
        let want = id.to_string();
        let mut offset = from.max(log.log_start_offset());
        while offset < log.log_end_offset() {
            let Ok(read) = log.read(offset, 1 << 20) else {
                return false;
            };
            if read.data.is_empty() {
                return false;
            }
            for (h, records) in strom_records::decode_batches(&read.data) {
                offset = h.last_offset() + 1;
                for r in records.into_iter().flatten() {
                    if r.headers.iter().any(|(k, v)| {
                        k.as_ref() == crate::reserved::DELAY_ID_HEADER
                            && v.as_deref() == Some(want.as_bytes())
                    }) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Logs a failed append at ERROR, at most once a second per partition (a full disk
    /// fails every produce until space returns). Refused input is the client's business and
    /// an offline partition was logged when it went offline: neither is logged here.
    fn log_storage_error(&self, p: &Partition, e: &BrokerError) {
        if !e.is_io() {
            return;
        }
        if let Some(suppressed) = p.storage_errors.ready() {
            let what = if e.is_out_of_space() {
                "the disk is full: appends to this partition fail with a storage error until \
                 space is freed (nothing of them is stored; reads go on), then resume by themselves"
            } else {
                "an append failed with an I/O error: nothing of it is stored"
            };
            tracing::error!(topic = p.topic(), partition = p.index(), error = %e, suppressed, "{what}");
        }
    }

    /// Reads from several partitions, waiting up to `limits.max_wait` until `min_bytes` are
    /// available (woken by appends). Results are in the order of `specs`. The first batch
    /// found is returned whole even if it exceeds the budgets; after that, a partition whose
    /// data does not fit the remaining total budget returns none.
    pub async fn fetch(
        &self,
        specs: &[FetchSpec],
        limits: FetchLimits,
    ) -> Vec<Result<FetchedPartition>> {
        self.fetch_with(specs, limits, false, Isolation::ReadUncommitted)
            .await
    }

    /// [`Broker::fetch`] that returns the batches as file ranges (`FetchedPartition::file`)
    /// instead of reading them: for a door that sends them with `sendfile`.
    pub async fn fetch_ranges(
        &self,
        specs: &[FetchSpec],
        limits: FetchLimits,
    ) -> Vec<Result<FetchedPartition>> {
        self.fetch_with(specs, limits, true, Isolation::ReadUncommitted)
            .await
    }

    /// [`Broker::fetch`] (`ranges` false) or [`Broker::fetch_ranges`] at an isolation
    /// level: with [`Isolation::ReadCommitted`] only batches below the last stable offset
    /// are returned (a long poll waits for the stable offset to move), with the aborted
    /// transactions among them.
    pub async fn fetch_isolated(
        &self,
        specs: &[FetchSpec],
        limits: FetchLimits,
        ranges: bool,
        isolation: Isolation,
    ) -> Vec<Result<FetchedPartition>> {
        self.fetch_with(specs, limits, ranges, isolation).await
    }

    /// [`Broker::fetch_available`] at an isolation level (see [`Broker::fetch_isolated`]).
    pub async fn fetch_available_isolated(
        &self,
        specs: &[FetchSpec],
        limits: FetchLimits,
        isolation: Isolation,
    ) -> Vec<Result<usize>> {
        self.wait_read(specs, limits, true, isolation)
            .await
            .into_iter()
            .map(|r| r.map(|f| f.len()))
            .collect()
    }

    /// Waits as [`Broker::fetch`] does, without reading the batches: per partition, how many
    /// bytes of whole batches a fetch with the same specs would return now. A door that must
    /// reserve memory for its answer sizes the reservation with it, then reads with
    /// `max_wait` zero and each spec's `max_bytes` set to this length.
    pub async fn fetch_available(
        &self,
        specs: &[FetchSpec],
        limits: FetchLimits,
    ) -> Vec<Result<usize>> {
        self.wait_read(specs, limits, true, Isolation::ReadUncommitted)
            .await
            .into_iter()
            .map(|r| r.map(|f| f.len()))
            .collect()
    }

    async fn fetch_with(
        &self,
        specs: &[FetchSpec],
        limits: FetchLimits,
        ranges: bool,
        isolation: Isolation,
    ) -> Vec<Result<FetchedPartition>> {
        let results = self.wait_read(specs, limits, ranges, isolation).await;
        self.count_out(specs, results)
    }

    async fn wait_read(
        &self,
        specs: &[FetchSpec],
        limits: FetchLimits,
        ranges: bool,
        isolation: Isolation,
    ) -> Vec<Result<FetchedPartition>> {
        let deadline = Instant::now() + limits.max_wait;
        // A fetch of one topic (push subscribers, most consumers) waits on that topic's
        // notification, so that appends elsewhere do not wake it; others on the broker's.
        let one_topic = match specs.split_first() {
            Some((first, rest)) if rest.iter().all(|s| s.topic == first.topic) => {
                self.topic(&first.topic)
            }
            _ => None,
        };
        loop {
            let notified = match &one_topic {
                Some(t) => t.appended().notified(),
                None => self.appended.notified(),
            };
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (results, bytes, answer_now) =
                self.read_once(specs, limits.max_bytes, ranges, isolation);
            if answer_now
                || bytes >= limits.min_bytes.max(1)
                || Instant::now() >= deadline
                || self.stopping.load(Ordering::Acquire)
            {
                return results;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return self.read_once(specs, limits.max_bytes, ranges, isolation).0;
                }
            }
        }
    }

    fn count_out(
        &self,
        specs: &[FetchSpec],
        results: Vec<Result<FetchedPartition>>,
    ) -> Vec<Result<FetchedPartition>> {
        for (s, r) in specs.iter().zip(&results) {
            if let Ok(f) = r {
                self.metrics.bytes_out(&s.topic, f.len());
            }
        }
        results
    }

    /// Waits until `offset` is durable in `p` (group commit), timing the fdatasync.
    async fn flush_partition(&self, p: &Arc<Partition>, offset: i64) -> Result<()> {
        let started = std::time::Instant::now();
        let p = p.clone();
        tokio::task::spawn_blocking(move || Ok::<_, BrokerError>(p.log()?.flush_to(offset)?))
            .await
            .map_err(|e| BrokerError::Io(std::io::Error::other(e)))??;
        self.metrics.fsync(started.elapsed());
        Ok(())
    }

    /// One pass over the partitions: the results, the bytes read, and whether to answer now
    /// (an error, or a read cut short by [`READ_MAX_BYTES`]: more is there).
    fn read_once(
        &self,
        specs: &[FetchSpec],
        max_bytes: usize,
        ranges: bool,
        isolation: Isolation,
    ) -> (Vec<Result<FetchedPartition>>, usize, bool) {
        let mut total = 0usize;
        let mut answer_now = false;
        let mut out = Vec::with_capacity(specs.len());
        for s in specs {
            let r = self.partition(&s.topic, s.partition).and_then(|p| {
                let budget = s.max_bytes.min(max_bytes.saturating_sub(total));
                let capped = budget > READ_MAX_BYTES;
                let limit = budget.clamp(1, READ_MAX_BYTES);
                let online = p.online()?;
                let log = &online.log;
                let replica = isolation == Isolation::Replica;
                if !replica {
                    self.check_leader(&s.topic, s.partition, online)?;
                }
                // Before the read: the read then sees at least everything below it.
                let hw = online.high_watermark();
                let lso = online.last_stable_offset();
                let committed = isolation == Isolation::ReadCommitted;
                // Standalone, the high watermark is the log end: nothing to cut (the read
                // stays the plain one of the hot path).
                let standalone = !self.is_clustered();
                let stop = if committed {
                    lso
                } else if replica || standalone {
                    i64::MAX
                } else {
                    hw
                };
                let mut f = if ranges {
                    let read = log.read_range_below(s.offset, limit, stop)?;
                    FetchedPartition {
                        data: Bytes::new(),
                        file: read.range,
                        high_watermark: if replica {
                            hw
                        } else if standalone {
                            read.log_end_offset
                        } else {
                            hw.min(read.log_end_offset)
                        },
                        log_start_offset: read.log_start_offset,
                        last_stable_offset: lso,
                        aborted: Vec::new(),
                    }
                } else {
                    let read = log.read_below(s.offset, limit, stop)?;
                    FetchedPartition {
                        data: read.data,
                        file: None,
                        high_watermark: if replica {
                            hw
                        } else if standalone {
                            read.log_end_offset
                        } else {
                            hw.min(read.log_end_offset)
                        },
                        log_start_offset: read.log_start_offset,
                        last_stable_offset: lso,
                        aborted: Vec::new(),
                    }
                };
                if committed && !f.is_empty() {
                    // Only the ranges overlapping what is returned.
                    let upper = match &f.file {
                        Some(range) => log.offset_after(range)?,
                        None => strom_records::headers(&f.data)
                            .last()
                            .map_or(s.offset, |(_, h)| h.last_offset() + 1),
                    };
                    f.aborted = log
                        .aborted_ranges(s.offset, upper.min(lso))
                        .into_iter()
                        .map(|r| AbortedTxn {
                            producer_id: r.producer_id,
                            first_offset: r.first_offset,
                        })
                        .collect();
                }
                answer_now |= capped && f.len() * 2 > READ_MAX_BYTES;
                if total > 0 && f.len() > budget {
                    f.data = Bytes::new();
                    f.file = None;
                }
                total += f.len();
                Ok(f)
            });
            answer_now |= r.is_err();
            out.push(r);
        }
        (out, total, answer_now)
    }

    /// Kafka's ListOffsets for one partition: `-2` earliest, `-1` latest (the end), else the
    /// first record with a timestamp at or after `timestamp`. Returns `(offset, timestamp)`;
    /// `(-1, -1)` when every record is older.
    pub fn list_offset(&self, topic: &str, partition: i32, timestamp: i64) -> Result<(i64, i64)> {
        let p = self.partition(topic, partition)?;
        let log = p.log()?;
        if let Some(reason) = log.failure() {
            return Err(BrokerError::Log(LogError::Failed(reason.to_string())));
        }
        match timestamp {
            -1 => Ok((self.high_watermark(topic, partition)?, -1)),
            -2 | -4 => Ok((log.log_start_offset(), -1)),
            t if t < 0 => Err(BrokerError::Log(LogError::Config(format!(
                "ListOffsets timestamp {t} is not supported"
            )))),
            t => match log.find_by_timestamp(t)? {
                None => Ok((-1, -1)),
                Some(hit) => Ok(record_at_or_after(&hit.batch, t)
                    .map(|(o, ts)| (o.max(log.log_start_offset()), ts))
                    .unwrap_or((hit.base_offset, hit.header.max_timestamp))),
            },
        }
    }

    /// [`Broker::list_offset`] at an isolation level: with [`Isolation::ReadCommitted`],
    /// latest is the last stable offset and a lookup by time finds nothing at or past it.
    pub fn list_offset_isolated(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        isolation: Isolation,
    ) -> Result<(i64, i64)> {
        if isolation == Isolation::ReadUncommitted {
            return self.list_offset(topic, partition, timestamp);
        }
        let lso = self.last_stable_offset(topic, partition)?;
        if timestamp == -1 {
            self.list_offset(topic, partition, timestamp)?;
            return Ok((lso, -1));
        }
        let (offset, ts) = self.list_offset(topic, partition, timestamp)?;
        Ok(if timestamp >= 0 && offset >= lso {
            (-1, -1)
        } else {
            (offset, ts)
        })
    }

    /// A partition's last stable offset (see [`FetchedPartition::last_stable_offset`]).
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Result<i64> {
        Ok(self
            .partition(topic, partition)?
            .online()?
            .last_stable_offset())
    }

    /// The producers a partition knows (DescribeProducers): id, epoch, last sequence, last
    /// timestamp, coordinator epoch, ongoing transaction's first offset.
    pub fn producers(&self, topic: &str, partition: i32) -> Result<Vec<ProducerInfo>> {
        let p = self.partition(topic, partition)?;
        let online = p.online()?;
        let described = online.producers.lock().describe();
        Ok(described)
    }

    /// Appends a transaction marker (a control batch in Kafka's layout) to a partition for
    /// the transaction coordinator, and returns its offset once it is durable. It ends the
    /// producer's ongoing transaction there; an ABORT indexes the aborted range first (the
    /// segment's `.txnindex`), then the last stable offset moves and long polls wake. A
    /// marker with an epoch older than the producer's is refused (nothing written). Only
    /// this path writes control batches; a client's produce never can.
    pub async fn write_txn_marker(
        &self,
        topic: &str,
        partition: i32,
        marker: TxnMarker,
    ) -> Result<i64> {
        self.check_open()?;
        let p = self.partition(topic, partition)?;
        let online = p.online()?;
        let now = now_ms();
        let control = strom_records::ControlMarker {
            commit: marker.commit,
            coordinator_epoch: marker.coordinator_epoch,
        };
        let offset = blocking(|| -> Result<i64> {
            let mut producers = online.producers.lock();
            producers.check_marker(marker.producer_id, marker.producer_epoch)?;
            let batch = strom_records::build_control(
                now,
                marker.producer_id,
                marker.producer_epoch,
                control,
            );
            let info = online.log.append_control(&batch)?;
            let mut h = strom_records::BatchHeader::parse(&batch).expect("a built batch");
            h.base_offset = info.base_offset;
            let ended = producers.end_txn(&h, control, now);
            if let Some(range) = ended {
                if let Err(e) = online.log.add_aborted(range) {
                    // Not indexed: the transaction stays open here (the stable offset
                    // holds), so the coordinator's retry of the marker indexes it.
                    producers.reopen_txn(range.producer_id, range.first_offset);
                    return Err(e.into());
                }
            }
            producers.publish_unstable();
            if let Err(e) = producers.after_append(&online.log, &info) {
                tracing::warn!(topic, partition, error = %e, "producer snapshot failed");
            }
            Ok(info.base_offset)
        })
        .inspect_err(|e| self.log_storage_error(&p, e))?;
        self.flush_partition(&p, offset + 1).await?;
        self.wake(topic);
        Ok(offset)
    }

    /// A fresh producer id for InitProducerId (epoch 0).
    pub fn init_producer_id(&self) -> Result<i64> {
        self.check_open()?;
        if self.is_clustered() {
            return self.cluster_producer_id();
        }
        Ok(self.producer_ids.allocate()?)
    }

    /// Wakes the fetches waiting for an append to `topic`: those of that topic alone (on the
    /// topic's own notification) and those of several topics or of share groups (on the
    /// broker's).
    pub fn wake(&self, topic: &str) {
        self.appended.notify_waiters();
        if let Some(t) = self.topic(topic) {
            t.appended().notify_waiters();
        }
    }

    /// The notification every append (and the start of shutdown) wakes. A long poll that
    /// reads something other than the log (share groups) registers on it before looking, so
    /// no append is missed.
    pub fn append_notify(&self) -> &Notify {
        &self.appended
    }

    /// Whether shutdown has begun (long polls return at once).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Waits until something is appended to any partition (or `timeout`). For push doors.
    pub async fn wait_for_append(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.appended.notified()).await;
    }

    // --- lifecycle -------------------------------------------------------------------------

    /// Periodic work: `flush.ms`, retention, producer expiry. Runs until shutdown.
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_retention = Instant::now();
        let mut last_expiry = Instant::now();
        let retention_every = Duration::from_millis(self.config.retention_check_interval_ms.max(1));
        while !self.closed.load(Ordering::Acquire) {
            tick.tick().await;
            let now = Instant::now();
            let retention = now.duration_since(last_retention) >= retention_every;
            let expiry = now.duration_since(last_expiry) >= Duration::from_secs(60);
            if retention {
                last_retention = now;
            }
            if expiry {
                last_expiry = now;
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.maintain(retention, expiry)).await;
        }
    }

    fn maintain(&self, retention: bool, expiry: bool) {
        let now = now_ms();
        let topics: Vec<_> = self.topics.read().values().cloned().collect();
        for t in topics {
            for p in t.partitions().iter() {
                // An offline partition was logged when it went offline; nothing to do.
                let Ok(o) = p.online() else { continue };
                if o.log.failure().is_some() {
                    // Only retries the mark that makes the next start check every batch.
                    let _ = o.log.flush_if_due(now);
                    continue;
                }
                if let Err(e) = o.log.flush_if_due(now) {
                    // A failed sync was logged by the log as it went offline.
                    if o.log.failure().is_none() {
                        tracing::error!(topic = t.name(), partition = p.index(), error = %e, "flush failed");
                    }
                }
                if retention {
                    match o.log.enforce_retention(now) {
                        Ok(o) if o.segments > 0 => tracing::info!(
                            topic = t.name(),
                            partition = p.index(),
                            segments = o.segments,
                            bytes = o.bytes,
                            "retention deleted segments"
                        ),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(topic = t.name(), partition = p.index(), error = %e, "retention failed")
                        }
                    }
                }
                if expiry {
                    o.producers
                        .lock()
                        .expire(now, self.config.producer_id_expiration_ms);
                }
            }
        }
    }

    /// Begins shutdown: waiting fetches return now and new ones do not wait.
    pub fn stop_waiting(&self) {
        self.stopping.store(true, Ordering::Release);
        self.appended.notify_waiters();
        for t in self.topics.read().values() {
            t.appended().notify_waiters();
        }
    }

    /// Flushes every log, snapshots producer state and closes. Later calls fail with
    /// [`BrokerError::ShuttingDown`].
    pub fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_waiting();
        let mut partitions: Vec<(Arc<Topic>, Arc<Partition>)> = Vec::new();
        for t in self.topics.read().values() {
            partitions.extend(t.partitions().iter().map(|p| (t.clone(), p.clone())));
        }
        // Each partition's flush, snapshot and close wait for the disk (a few fsyncs): they
        // run on a few threads at once, so that a broker with thousands of partitions stops
        // in a fraction of the time one thread takes.
        let closed = parallel::on_threads(&partitions, |(_, p)| close_partition(p));
        let mut first_err = None;
        for ((topic, p), r) in partitions.iter().zip(closed) {
            if let Err(e) = r {
                tracing::error!(topic = topic.name(), partition = p.index(), error = %e, "close failed");
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.delay.close() {
            tracing::error!(error = %e, "closing the delay store failed");
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Delivers due delayed records every [`crate::delay::TICK_MS`] until shutdown.
    pub async fn run_delays(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(crate::delay::TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.closed.load(Ordering::Acquire) {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.deliver_due()).await;
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(BrokerError::ShuttingDown)
        } else {
            Ok(())
        }
    }
}

/// Flushes a partition's log, snapshots its producer state and closes the log. Nothing of an
/// offline log is synced or snapshotted: recovery at the next start works from what is on
/// disk.
fn close_partition(p: &Partition) -> Result<()> {
    let Ok(o) = p.online() else { return Ok(()) };
    if o.log.failure().is_some() {
        let _ = o.log.close();
        return Ok(());
    }
    let producers = o.producers.lock();
    o.log.flush()?;
    producers.snapshot(o.log.log_end_offset())?;
    Ok(o.log.close()?)
}

fn info(t: &Topic) -> TopicInfo {
    TopicInfo {
        name: t.name().to_string(),
        id: t.id(),
        partitions: t.partitions().len() as i32,
        internal: t.is_internal(),
    }
}

/// In a batch (of any codec), the first record with a timestamp at or after `target`:
/// `(offset, timestamp)`. `None` when no record qualifies or the batch cannot be read (the
/// caller then answers with the batch's base offset).
fn record_at_or_after(batch: &bytes::Bytes, target: i64) -> Option<(i64, i64)> {
    strom_records::records(batch)
        .ok()?
        .map_while(|r| r.ok())
        .find(|r| r.timestamp >= target)
        .map(|r| (r.offset, r.timestamp))
}

fn load_cluster_id(data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join(".strom").join("cluster-id");
    let _ = fs::remove_file(path.with_extension("tmp"));
    let why = match fs::read(&path) {
        Ok(b) => match std::str::from_utf8(&b).map(str::trim) {
            Ok(s) if !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_graphic()) => {
                return Ok(s.to_string());
            }
            _ => Some(format!("{} bytes that are not a cluster id", b.len())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(e.to_string()),
    };
    let id = base64url(&topic::random_id()?);
    if let Some(why) = why {
        tracing::warn!(path = %path.display(), reason = %why, cluster_id = %id, "the cluster id file is unreadable: a new cluster id was made");
    }
    if let Err(e) = topic::write_atomic(&path, id.as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "could not save the cluster id (a new one is made at the next start)");
    }
    Ok(id)
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Removes partition directories left by a deletion that a crash interrupted.
fn remove_deleted_dirs(data_dir: &std::path::Path) {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with("-delete") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(dir: &std::path::Path) -> Arc<Broker> {
        Broker::open(BrokerConfig::new(dir)).unwrap()
    }

    #[tokio::test]
    async fn produce_fetch_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        b.create_topic("t", 2, vec![("retention.ms".into(), "-1".into())], false)
            .unwrap();
        let batch = strom_log::build_batch(1000, &[b"a", b"b", b"c"]);
        let ack = b.produce("t", 1, &batch).await.unwrap();
        assert_eq!((ack.base_offset, ack.last_offset), (0, 2));
        let later = strom_log::build_batch(2000, &[b"a", b"b", b"c"]);
        let ack = b.produce("t", 1, &later).await.unwrap();
        assert_eq!(ack.base_offset, 3);
        let spec = FetchSpec {
            topic: "t".into(),
            partition: 1,
            offset: 3,
            max_bytes: 1 << 20,
        };
        let limits = FetchLimits {
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait: Duration::ZERO,
        };
        let r = b
            .fetch(std::slice::from_ref(&spec), limits)
            .await
            .remove(0)
            .unwrap();
        assert_eq!(r.high_watermark, 6);
        assert_eq!(r.data.len(), batch.len());
        assert_eq!(b.list_offset("t", 1, 1000).unwrap(), (0, 1000));
        assert_eq!(b.list_offset("t", 1, 1001).unwrap(), (3, 2000));
        assert_eq!(b.list_offset("t", 1, 2001).unwrap(), (-1, -1));
        assert_eq!(b.list_offset("t", 1, -2).unwrap(), (0, -1));
        assert_eq!(b.list_offset("t", 1, -1).unwrap(), (6, -1));
        assert!(matches!(
            b.produce("t", 2, &batch).await,
            Err(BrokerError::UnknownTopicOrPartition { .. })
        ));
        b.shutdown().unwrap();
        drop(b);
        let b = broker(dir.path());
        let t = b.topic("t").unwrap();
        assert_eq!(t.partitions().len(), 2);
        assert_eq!(t.config().get("retention.ms").unwrap(), ("-1".into(), true));
        assert_eq!(
            b.partition("t", 1).unwrap().log().unwrap().log_end_offset(),
            6
        );
    }

    #[tokio::test]
    async fn fetch_long_poll_is_woken_by_append() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        b.create_topic("w", 1, vec![], false).unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let spec = FetchSpec {
                topic: "w".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
            };
            let limits = FetchLimits {
                max_bytes: 1 << 20,
                min_bytes: 1,
                max_wait: Duration::from_secs(20),
            };
            let started = Instant::now();
            let r = b2.fetch(&[spec], limits).await.remove(0).unwrap();
            (r, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.produce("w", 0, &strom_log::build_batch(1, &[b"x"]))
            .await
            .unwrap();
        let (r, waited) = waiter.await.unwrap();
        assert!(!r.data.is_empty());
        assert!(
            waited < Duration::from_secs(10),
            "woken by the append, not the timeout"
        );
    }

    #[tokio::test]
    async fn admin_errors() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path());
        b.create_topic("a", 1, vec![], false).unwrap();
        assert!(matches!(
            b.create_topic("a", 1, vec![], false),
            Err(BrokerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            b.create_topic("b/c", 1, vec![], false),
            Err(BrokerError::InvalidTopic { .. })
        ));
        assert!(matches!(
            b.create_topic("z", 0, vec![], false),
            Err(BrokerError::InvalidPartitions(_))
        ));
        assert!(matches!(
            b.create_topic("z", 1, vec![("nope".into(), "1".into())], false),
            Err(BrokerError::InvalidConfig(_))
        ));
        b.create_topic("dry", 1, vec![], true).unwrap();
        assert!(b.topic("dry").is_none());
        assert!(matches!(
            b.create_partitions("a", 1, false),
            Err(BrokerError::InvalidPartitions(_))
        ));
        b.create_partitions("a", 3, false).unwrap();
        assert_eq!(b.topic("a").unwrap().partitions().len(), 3);
        b.alter_topic_config(
            "a",
            &[ConfigOp::Set("max.message.bytes".into(), "2048".into())],
            false,
        )
        .unwrap();
        assert_eq!(
            b.partition("a", 2)
                .unwrap()
                .log()
                .unwrap()
                .config()
                .max_batch_bytes,
            2048
        );
        b.delete_topic("a").unwrap();
        assert!(b.topic("a").is_none());
        b.create_topic("a", 1, vec![], false).unwrap();
        assert_eq!(
            b.partition("a", 0).unwrap().log().unwrap().log_end_offset(),
            0
        );
    }

    /// A delivery interrupted by a crash (its intent recorded, the cursor not moved on) is
    /// settled at the next start: delivered exactly once whether or not the append happened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interrupted_delivery_is_settled_exactly_once() {
        for appended_before_crash in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let b = broker(dir.path());
            b.create_topic("t", 1, vec![], false).unwrap();
            let recs = [strom_records::NewRecord {
                value: Some(b"late"),
                headers: vec![("strom.delay.ms", Some(b"50"))],
                ..Default::default()
            }];
            let batch = strom_records::build_records(now_ms(), &recs);
            b.produce("t", 0, &batch).await.unwrap();
            tokio::time::sleep(Duration::from_millis(80)).await;
            let end = |t: &str, p: i32| {
                let p = b.partition(t, p).ok()?;
                let log = p.log().unwrap();
                Some((log.log_end_offset(), log.config().max_batch_bytes))
            };
            let d = b
                .delay
                .next_due(now_ms(), end, |_, _, _, _| false)
                .unwrap()
                .expect("due");
            if appended_before_crash {
                b.append_delivered(&d).unwrap();
            }
            // The crash: no `done`, no shutdown.
            drop(d);
            drop(b);
            let b = broker(dir.path());
            b.deliver_due();
            let log = b.partition("t", 0).unwrap();
            assert_eq!(
                log.log().unwrap().log_end_offset(),
                1,
                "appended once ({appended_before_crash})"
            );
            assert_eq!(b.delayed_pending(), 0);
            b.shutdown().unwrap();
        }
    }

    #[test]
    fn base64_ids() {
        assert_eq!(base64url(&[0xff; 16]).len(), 22);
    }
}
