//! Topics and partitions: names, on-disk metadata, one [`Log`] per partition.
//!
//! Layout under the data directory:
//! - `<topic>-<partition>/`: the partition's log (see strom-log) and producer snapshots;
//! - `.strom/topics/<topic>.json`: the topic's id, partition count and config overrides,
//!   replaced atomically (write, fsync, rename, fsync the directory);
//! - a deleted topic's partition directories are first renamed to
//!   `<topic>-<partition>.<id>-delete` (so the name is free at once), then removed.

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

/// One partition: its log and its idempotent producers.
pub struct Partition {
    topic: Arc<str>,
    index: i32,
    pub(crate) log: Log,
    /// Check, append and record of one partition happen under this lock (see `producer`).
    pub(crate) producers: Mutex<PartitionProducers>,
}

impl Partition {
    fn open(data_dir: &Path, topic: &Arc<str>, index: i32, config: LogConfig) -> Result<Partition> {
        let log = Log::open(partition_dir(data_dir, topic, index), config)?;
        let producers = PartitionProducers::load(&log)?;
        Ok(Partition {
            topic: topic.clone(),
            index,
            log,
            producers: Mutex::new(producers),
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

    /// The partition's log.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

/// A topic: its id, configs and partitions.
pub struct Topic {
    name: Arc<str>,
    id: [u8; 16],
    config: RwLock<TopicConfig>,
    partitions: RwLock<Arc<Vec<Arc<Partition>>>>,
}

impl Topic {
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

    /// Opens (creating if needed) a topic's partitions from its metadata.
    pub(crate) fn open(data_dir: &Path, meta: &TopicMeta) -> Result<Topic> {
        let config = TopicConfig::from_overrides(meta.configs.clone())
            .map_err(BrokerError::InvalidConfig)?;
        let log_config = config.log_config().map_err(BrokerError::InvalidConfig)?;
        let name: Arc<str> = meta.name.as_str().into();
        let mut parts = Vec::with_capacity(meta.partitions as usize);
        for i in 0..meta.partitions {
            parts.push(Arc::new(Partition::open(data_dir, &name, i, log_config)?));
        }
        Ok(Topic {
            name,
            id: parse_id(&meta.id).unwrap_or_default(),
            config: RwLock::new(config),
            partitions: RwLock::new(Arc::new(parts)),
        })
    }

    pub(crate) fn meta(&self) -> TopicMeta {
        TopicMeta {
            name: self.name.to_string(),
            id: hex(&self.id),
            partitions: self.partitions.read().len() as i32,
            configs: self.config.read().overrides().clone(),
        }
    }

    /// Adds partitions up to `total`.
    pub(crate) fn grow(&self, data_dir: &Path, total: i32) -> Result<()> {
        let log_config = self
            .config
            .read()
            .log_config()
            .map_err(BrokerError::InvalidConfig)?;
        let mut guard = self.partitions.write();
        let mut parts: Vec<_> = guard.iter().cloned().collect();
        for i in parts.len() as i32..total {
            parts.push(Arc::new(Partition::open(
                data_dir, &self.name, i, log_config,
            )?));
        }
        *guard = Arc::new(parts);
        Ok(())
    }

    /// Replaces the config and pushes it to every partition's log.
    pub(crate) fn set_config(&self, config: TopicConfig) -> Result<()> {
        let log_config = config.log_config().map_err(BrokerError::InvalidConfig)?;
        for p in self.partitions().iter() {
            p.log.set_config(log_config)?;
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

pub(crate) fn save_meta(data_dir: &Path, meta: &TopicMeta) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    write_atomic(
        &meta_dir(data_dir).join(format!("{}.json", meta.name)),
        &json,
    )
}

pub(crate) fn remove_meta(data_dir: &Path, name: &str) -> io::Result<()> {
    let dir = meta_dir(data_dir);
    fs::remove_file(dir.join(format!("{name}.json")))?;
    File::open(&dir)?.sync_all()
}

pub(crate) fn load_metas(data_dir: &Path) -> io::Result<Vec<TopicMeta>> {
    let dir = meta_dir(data_dir);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = fs::read(&path)?;
        let meta: TopicMeta = serde_json::from_slice(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        out.push(meta);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
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
}
