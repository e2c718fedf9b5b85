//! Topics and partitions: names, on-disk metadata, one [`Log`] per partition.
//!
//! Layout under the data directory:
//! - `<topic>-<partition>/`: the partition's log (see strom-log) and producer snapshots;
//! - `.strom/topics/<topic>.json`: the topic's id, partition count and config overrides,
//!   replaced atomically (write, fsync, rename, fsync the directory);
//! - a deleted topic's partition directories are first renamed to
//!   `<topic>-<partition>.<id>-delete` (so the name is free at once), then removed.
//!
//! Start-up degrades per partition, never per broker:
//! - a partition whose log cannot be opened (damaged, missing directory, I/O error) is
//!   offline: listed, answering a storage error, logged at ERROR with the reason; the other
//!   partitions serve;
//! - a topic file that cannot be used (empty, not JSON, fields out of range, a name other
//!   than its file's, invalid configs) is moved aside to `<file>.damaged` and the topic is
//!   rebuilt from its partition directories with Kafka's default configs, except retention,
//!   switched off (`retention.ms=-1`, `retention.bytes=-1`) so that nothing is deleted
//!   because its configs were lost; no directory: the file is only moved aside;
//! - temporary files of interrupted metadata writes (`*.tmp`) are removed.
//!
//! A topic creation or partition addition that fails part way removes the directories and
//! the metadata file it created, so that a retry starts clean.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use strom_log::{Log, LogConfig};

use crate::config::TopicConfig;
use crate::error::{BrokerError, Result};
use crate::limits::LogEvery;
use crate::producer::PartitionProducers;

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name the way Kafka does: 1 to 249 characters of `[a-zA-Z0-9._-]`,
/// not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason: &str| {
        Err(BrokerError::InvalidTopic {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return invalid("the name is empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid("the name is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// What is persisted of a topic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TopicMeta {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) partitions: i32,
    #[serde(default)]
    pub(crate) configs: BTreeMap<String, String>,
}

/// One partition: its log and its idempotent producers, or why it is offline.
pub struct Partition {
    topic: Arc<str>,
    index: i32,
    dir: PathBuf,
    storage: std::result::Result<Online, String>,
    /// Failed appends (disk full, I/O errors) are logged at most once a second per partition.
    pub(crate) storage_errors: LogEvery,
}

/// An online partition's state.
pub(crate) struct Online {
    pub(crate) log: Log,
    /// Check, append and record of one partition happen under this lock (see `producer`).
    pub(crate) producers: Mutex<PartitionProducers>,
    /// The `strom.msg.id`s of the dedup window, loaded at the first use after a start
    /// (taken under `producers`, after it).
    pub(crate) dedup: Mutex<Option<crate::dedup::DedupWindow>>,
    /// First offset of the earliest ongoing transaction (-1: none), kept by `producers`.
    pub(crate) first_unstable: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Role, high watermark and leader epochs in cluster mode (see `replica`).
    pub(crate) replication: crate::replica::Replication,
}

impl Online {
    /// The high watermark: the log end offset, or in cluster mode what the in-sync
    /// replicas all have.
    pub(crate) fn high_watermark(&self) -> i64 {
        self.replication.high_watermark(self.log.log_end_offset())
    }

    /// The last stable offset: the first offset of the earliest ongoing transaction, else
    /// the high watermark (read after the transactions, so it never passes an open one).
    pub(crate) fn last_stable_offset(&self) -> i64 {
        // The end first: a transaction's data is readable only after `before_append` set
        // `first_unstable`, and an aborted range is indexed before it is cleared.
        let end = self.high_watermark();
        let first = self
            .first_unstable
            .load(std::sync::atomic::Ordering::Acquire);
        if first >= 0 {
            first.min(end)
        } else {
            end
        }
    }
}

impl Partition {
    /// Opens the partition's log and producer state; any failure is the caller's to handle.
    fn open(data_dir: &Path, topic: &Arc<str>, index: i32, config: LogConfig) -> Result<Partition> {
        let dir = partition_dir(data_dir, topic, index);
        let log = Log::open(&dir, config)?;
        let producers = PartitionProducers::load(&log)?;
        let replication = crate::replica::Replication::open(&dir)?;
        Ok(Partition {
            topic: topic.clone(),
            index,
            dir,
            storage: Ok(Online {
                log,
                first_unstable: producers.unstable_handle(),
                producers: Mutex::new(producers),
                dedup: Mutex::new(None),
                replication,
            }),
            storage_errors: LogEvery::per_second(),
        })
    }

    /// Opens an existing partition at start; one that cannot be opened is offline (logged
    /// at ERROR with the reason), so that the rest of the broker starts. A missing directory
    /// is such a failure: its records are gone, and creating it afresh would give their
    /// offsets again.
    fn load(data_dir: &Path, topic: &Arc<str>, index: i32, config: LogConfig) -> Partition {
        let dir = partition_dir(data_dir, topic, index);
        let opened = if dir.is_dir() {
            Partition::open(data_dir, topic, index, config)
        } else {
            Err(BrokerError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the partition directory {} is missing: restore it, or recreate the topic",
                    dir.display()
                ),
            )))
        };
        opened.unwrap_or_else(|e| {
            tracing::error!(
                topic = %topic,
                partition = index,
                dir = %dir.display(),
                error = %e,
                "partition offline: its log could not be opened; the rest of the broker serves"
            );
            Partition {
                topic: topic.clone(),
                index,
                dir,
                storage: Err(e.to_string()),
                storage_errors: LogEvery::per_second(),
            }
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition number.
    pub fn index(&self) -> i32 {
        self.index
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The partition's log, or [`BrokerError::PartitionOffline`] if it could not be opened
    /// at start. (A log that went offline after a failed sync is returned: its operations
    /// fail with [`strom_log::LogError::Failed`].)
    pub fn log(&self) -> Result<&Log> {
        self.online().map(|o| &o.log)
    }

    pub(crate) fn online(&self) -> Result<&Online> {
        self.storage
            .as_ref()
            .map_err(|reason| BrokerError::PartitionOffline {
                topic: self.topic.to_string(),
                partition: self.index,
                reason: reason.clone(),
            })
    }

    /// Why the partition is offline (not opened at start, or its log failed a sync), or
    /// `None` if it serves.
    pub fn offline_reason(&self) -> Option<String> {
        match &self.storage {
            Err(reason) => Some(reason.clone()),
            Ok(o) => o.log.failure().map(str::to_string),
        }
    }

    /// The last stable offset: the first offset of the earliest ongoing transaction, else
    /// the high watermark.
    pub fn last_stable_offset(&self) -> Result<i64> {
        Ok(self.online()?.last_stable_offset())
    }

    /// Whether the partition serves reads and writes.
    pub fn is_online(&self) -> bool {
        self.offline_reason().is_none()
    }
}

/// Opens new partitions `range` of `topic`; if one fails, removes what was created for the
/// others and for it (directories that existed before are left alone) and returns its error.
fn create_partitions(
    data_dir: &Path,
    topic: &Arc<str>,
    range: std::ops::Range<i32>,
    config: LogConfig,
) -> Result<Vec<Arc<Partition>>> {
    // Partitions are created on a few threads (each waits for a few fsyncs); if one fails,
    // every other is undone.
    let indexes: Vec<i32> = range.collect();
    let opened = crate::parallel::on_threads(&indexes, |&i| {
        let dir = partition_dir(data_dir, topic, i);
        let existed = dir.exists();
        (Partition::open(data_dir, topic, i, config), dir, existed)
    });
    if opened.iter().any(|(r, _, _)| r.is_err()) {
        // The partitions that opened are closed first: out of descriptors, removing a
        // directory needs the ones they free.
        let mut failed = Vec::new();
        for (r, dir, existed) in opened {
            match r {
                Ok(p) => discard(p, existed),
                Err(e) => failed.push((e, dir, existed)),
            }
        }
        for (_, dir, existed) in &failed {
            if !existed {
                remove_created_dir(dir);
            }
        }
        return Err(failed.into_iter().next().expect("one failed").0);
    }
    Ok(opened
        .into_iter()
        .map(|(r, _, _)| Arc::new(r.expect("checked")))
        .collect())
}

/// Undoes the creation of a partition: its log is closed and, if its directory was new,
/// removed.
fn discard(p: Partition, existed: bool) {
    if let Ok(o) = &p.storage {
        let _ = o.log.close();
    }
    if !existed {
        remove_created_dir(&p.dir);
    }
}

fn remove_created_dir(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove the directory of a failed creation")
        }
    }
}

/// A topic: its id, configs and partitions.
pub struct Topic {
    name: Arc<str>,
    id: [u8; 16],
    config: RwLock<TopicConfig>,
    partitions: RwLock<Arc<Vec<Arc<Partition>>>>,
    /// Woken by every append to one of its partitions (and by its deletion and shutdown):
    /// what a fetch of this topic alone waits on, so that appends to other topics do not
    /// wake it.
    appended: tokio::sync::Notify,
}

impl Topic {
    /// The notification appends to this topic wake (see [`crate::Broker::wake`]).
    pub(crate) fn appended(&self) -> &tokio::sync::Notify {
        &self.appended
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic id (a UUID's 16 bytes).
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// Whether the topic is internal (`__`-prefixed names are reserved for the broker).
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }

    /// The config overrides.
    pub fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }

    /// Reads the config without copying it.
    pub fn with_config<R>(&self, f: impl FnOnce(&TopicConfig) -> R) -> R {
        f(&self.config.read())
    }

    /// Whether `cleanup.policy` includes `compact`.
    pub fn compacted(&self) -> bool {
        self.config.read().compact()
    }

    /// The partitions, in order.
    pub fn partitions(&self) -> Arc<Vec<Arc<Partition>>> {
        self.partitions.read().clone()
    }

    /// One partition.
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.read().get(i).cloned())
    }

    /// Loads a topic at start: every partition of `meta`, damaged ones offline.
    pub(crate) fn load(data_dir: &Path, meta: &TopicMeta, config: TopicConfig) -> Result<Topic> {
        let log_config = config.log_config().map_err(BrokerError::InvalidConfig)?;
        let name: Arc<str> = meta.name.as_str().into();
        let parts = (0..meta.partitions)
            .map(|i| Arc::new(Partition::load(data_dir, &name, i, log_config)))
            .collect();
        Ok(Topic {
            name,
            id: parse_id(&meta.id).unwrap_or_default(),
            config: RwLock::new(config),
            partitions: RwLock::new(Arc::new(parts)),
            appended: tokio::sync::Notify::new(),
        })
    }

    /// Creates a new topic's partitions. On failure nothing of them is left on disk.
    pub(crate) fn create(data_dir: &Path, meta: &TopicMeta) -> Result<Topic> {
        let config = TopicConfig::from_overrides(meta.configs.clone())
            .map_err(BrokerError::InvalidConfig)?;
        let log_config = config.log_config().map_err(BrokerError::InvalidConfig)?;
        let name: Arc<str> = meta.name.as_str().into();
        let parts = create_partitions(data_dir, &name, 0..meta.partitions, log_config)?;
        Ok(Topic {
            name,
            id: parse_id(&meta.id).unwrap_or_default(),
            config: RwLock::new(config),
            partitions: RwLock::new(Arc::new(parts)),
            appended: tokio::sync::Notify::new(),
        })
    }

    /// Removes a topic that was created but could not be saved: its partitions' logs and
    /// directories (all new, see [`Topic::create`]).
    pub(crate) fn discard(self) {
        let parts = std::mem::take(&mut *self.partitions.write());
        for p in Arc::try_unwrap(parts).unwrap_or_default() {
            match Arc::try_unwrap(p) {
                Ok(p) => discard(p, false),
                Err(p) => remove_created_dir(p.dir()),
            }
        }
    }

    pub(crate) fn meta(&self) -> TopicMeta {
        TopicMeta {
            name: self.name.to_string(),
            id: hex(&self.id),
            partitions: self.partitions.read().len() as i32,
            configs: self.config.read().overrides().clone(),
        }
    }

    /// Adds partitions up to `total`, then saves the metadata with `save`. If either fails,
    /// the new partitions are removed again (the metadata file is rewritten as it was) and
    /// the topic keeps its partitions.
    pub(crate) fn grow(
        &self,
        data_dir: &Path,
        total: i32,
        save: impl Fn(&TopicMeta) -> io::Result<()>,
    ) -> Result<()> {
        let log_config = self
            .config
            .read()
            .log_config()
            .map_err(BrokerError::InvalidConfig)?;
        // Callers hold the broker's admin lock: nothing else changes the partitions.
        let before = self.meta();
        let current = before.partitions;
        let added = create_partitions(data_dir, &self.name, current..total, log_config)?;
        let mut meta = before.clone();
        meta.partitions = total;
        if let Err(e) = save(&meta) {
            for p in added {
                match Arc::try_unwrap(p) {
                    Ok(p) => discard(p, false),
                    Err(p) => remove_created_dir(p.dir()),
                }
            }
            if let Err(e) = save(&before) {
                tracing::warn!(topic = %self.name, error = %e, "could not rewrite the topic's metadata after a failed partition addition");
            }
            return Err(e.into());
        }
        let mut guard = self.partitions.write();
        let mut parts: Vec<_> = guard.iter().cloned().collect();
        parts.extend(added);
        *guard = Arc::new(parts);
        Ok(())
    }

    /// Replaces the config and pushes it to every partition's log.
    pub(crate) fn set_config(&self, config: TopicConfig) -> Result<()> {
        let log_config = config.log_config().map_err(BrokerError::InvalidConfig)?;
        for p in self.partitions().iter() {
            if let Ok(log) = p.log() {
                log.set_config(log_config)?;
            }
        }
        *self.config.write() = config;
        Ok(())
    }
}

/// `<data-dir>/<topic>-<partition>`.
pub(crate) fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

pub(crate) fn meta_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(".strom").join("topics")
}

/// Writes `path` atomically and durably.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn meta_path(data_dir: &Path, name: &str) -> PathBuf {
    meta_dir(data_dir).join(format!("{name}.json"))
}

pub(crate) fn save_meta(data_dir: &Path, meta: &TopicMeta) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    write_atomic(&meta_path(data_dir, &meta.name), &json)
}

/// Saves a new topic's metadata; if that fails, removes whatever of the file (or its
/// temporary file) the attempt left, so that a retry starts clean.
pub(crate) fn save_new_meta(data_dir: &Path, meta: &TopicMeta) -> io::Result<()> {
    save_meta(data_dir, meta).inspect_err(|_| {
        let path = meta_path(data_dir, &meta.name);
        for p in [path.with_extension("tmp"), path] {
            let _ = fs::remove_file(p);
        }
    })
}

pub(crate) fn remove_meta(data_dir: &Path, name: &str) -> io::Result<()> {
    let dir = meta_dir(data_dir);
    fs::remove_file(dir.join(format!("{name}.json")))?;
    File::open(&dir)?.sync_all()
}

/// Loads every topic's metadata and configs (see the module doc for damaged files).
/// `partitions_max` bounds the partition count a file may claim. Only failing to list the
/// directory is an error.
pub(crate) fn load_metas(
    data_dir: &Path,
    partitions_max: i32,
) -> io::Result<Vec<(TopicMeta, TopicConfig)>> {
    let dir = meta_dir(data_dir);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {}
            Some("tmp") => {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed the temporary file of an interrupted topic metadata write")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove a temporary file")
                    }
                }
                continue;
            }
            _ => continue,
        }
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        match read_meta(&path, &name, partitions_max) {
            Ok(loaded) => out.push(loaded),
            Err(why) => {
                if let Some(rebuilt) = rebuild_meta(data_dir, &path, &name, &why) {
                    out.push(rebuilt);
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(out)
}

/// A topic file and its configs, or why it cannot be used.
fn read_meta(
    path: &Path,
    name: &str,
    partitions_max: i32,
) -> std::result::Result<(TopicMeta, TopicConfig), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| {
        if bytes.is_empty() {
            "the file is empty".to_string()
        } else {
            format!("not valid topic metadata: {e}")
        }
    })?;
    if meta.name != name {
        return Err(format!(
            "it names topic {:?}, not {name:?}",
            meta.name.chars().take(300).collect::<String>()
        ));
    }
    validate_topic_name(name).map_err(|e| e.to_string())?;
    if !(1..=partitions_max).contains(&meta.partitions) {
        return Err(format!(
            "a partition count of {} (1 to {partitions_max} allowed)",
            meta.partitions
        ));
    }
    let config = TopicConfig::from_overrides(meta.configs.clone())?;
    config.log_config()?;
    Ok((meta, config))
}

/// Overrides of a rebuilt topic: retention off, so that lost configs delete nothing.
const REBUILT_CONFIGS: [(&str, &str); 2] = [("retention.ms", "-1"), ("retention.bytes", "-1")];

/// Moves a damaged topic file aside and rebuilds the topic from its partition directories
/// (`None` if it has none, or the name is not a topic name).
fn rebuild_meta(
    data_dir: &Path,
    path: &Path,
    name: &str,
    why: &str,
) -> Option<(TopicMeta, TopicConfig)> {
    let aside = set_aside(path);
    let aside_text = match &aside {
        Ok(p) => format!("moved to {}", p.display()),
        Err(e) => format!("could not be moved aside ({e})"),
    };
    let partitions = if validate_topic_name(name).is_ok() {
        partition_dirs(data_dir, name)
    } else {
        Vec::new()
    };
    let Some(&last) = partitions.last() else {
        tracing::warn!(
            path = %path.display(),
            reason = why,
            "unreadable topic metadata file with no partition directory: {aside_text}, no topic loaded"
        );
        return None;
    };
    let count = last + 1;
    let missing: Vec<i32> = (0..count)
        .filter(|i| partitions.binary_search(i).is_err())
        .collect();
    let id = random_id()
        .map(|id| hex(&id))
        .unwrap_or_else(|_| "0".repeat(32));
    let configs: BTreeMap<String, String> = REBUILT_CONFIGS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let meta = TopicMeta {
        name: name.to_string(),
        id,
        partitions: count,
        configs: configs.clone(),
    };
    let config = TopicConfig::from_overrides(configs).expect("valid rebuilt configs");
    let saved = save_meta(data_dir, &meta);
    tracing::error!(
        topic = name,
        path = %path.display(),
        reason = why,
        partitions = count,
        missing_partition_dirs = ?missing,
        saved = ?saved.as_ref().err().map(|e| e.to_string()),
        "unreadable topic metadata file {aside_text}; the topic was rebuilt from its {} \
         partition directories with Kafka's default configs and a new topic id, except that \
         retention is switched off (retention.ms=-1, retention.bytes=-1) so that no data is \
         deleted because its configs were lost. Check the partition count, restore the \
         topic's configs (the damaged file may still show them) with kafka-configs or \
         IncrementalAlterConfigs, and remove the retention overrides you do not want",
        partitions.len()
    );
    Some((meta, config))
}

/// Renames a damaged file to `<file>.damaged` (or `.damaged.1`, ... if taken).
fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let base = path.as_os_str().to_os_string();
    for n in 0..100 {
        let mut target = base.clone();
        target.push(if n == 0 {
            ".damaged".to_string()
        } else {
            format!(".damaged.{n}")
        });
        let target = PathBuf::from(target);
        if !target.exists() {
            fs::rename(path, &target)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            return Ok(target);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "100 damaged copies already exist",
    ))
}

/// The partition numbers of `topic` that have a directory (`<topic>-<n>`), sorted. A
/// directory name ends with its partition number, so `a-1` is partition 1 of `a`, never a
/// directory of topic `a-1` (whose partitions are `a-1-<n>`).
fn partition_dirs(data_dir: &Path, topic: &str) -> Vec<i32> {
    let prefix = format!("{topic}-");
    let mut out: Vec<i32> = fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name();
            let rest = name.to_str()?.strip_prefix(&prefix)?.to_string();
            let n: i32 = rest.parse().ok()?;
            (n >= 0 && n.to_string() == rest).then_some(n)
        })
        .collect();
    out.sort_unstable();
    out
}

/// Sixteen random bytes from the OS.
pub(crate) fn random_id() -> io::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut id)?;
    // UUID version 4, variant 1.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(id)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (topic
/// subscriptions of the HTTP and gRPC doors: `orders.*`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| {
                    name.is_char_boundary(head.len() + i)
                        && glob_match(rest, &name[head.len() + i..])
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        for ok in ["a", "orders.v1", "A_b-9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "bad/name", "sp ace", "é", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = random_id().unwrap();
        assert_eq!(parse_id(&hex(&id)), Some(id));
        assert_eq!(id[6] >> 4, 4);
    }

    #[test]
    fn globs() {
        assert!(glob_match("orders.*", "orders.eu"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*c", "abbc"));
        assert!(glob_match("é*", "éa"));
        assert!(!glob_match("orders.*", "order"));
        assert!(!glob_match("a", "ab"));
    }
}
