//! Administrative operations of the core that the Kafka admin APIs reach: DeleteRecords (the
//! log start offset), the data directory's usage (DescribeLogDirs), and client quotas
//! (stored, not enforced).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, ConfigOp};
use crate::error::{BrokerError, Result};
use crate::topic::write_atomic;

/// The data directory and what it holds (Kafka's DescribeLogDirs for one log dir).
#[derive(Clone, Debug)]
pub struct LogDirUsage {
    /// The data directory, absolute.
    pub path: PathBuf,
    /// Bytes of the file system holding it.
    pub total_bytes: i64,
    /// Bytes still available to Strom on it.
    pub usable_bytes: i64,
    /// `(topic, partition, bytes of its segments)`, by topic then partition.
    pub partitions: Vec<(String, i32, u64)>,
}

impl Broker {
    /// Kafka's DeleteRecords for one partition: records below `offset` are gone (`-1`: the
    /// high watermark, i.e. every record). The new log start offset is durable before this
    /// returns; whole segments below it are removed. Returns the low watermark.
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64> {
        let p = self.partition(topic, partition)?;
        let log = p.log()?;
        let offset = if offset == -1 {
            log.log_end_offset()
        } else {
            offset
        };
        let start = crate::broker::blocking(|| log.delete_records_below(offset))?;
        Ok(start)
    }

    /// The client quotas of this broker (opened from the data directory at first use).
    pub fn client_quotas(&self) -> Result<&ClientQuotas> {
        if let Some(q) = self.quotas.get() {
            return Ok(q);
        }
        let q = ClientQuotas::open(&self.config().data_dir)?;
        Ok(self.quotas.get_or_init(|| q))
    }

    /// Kafka's legacy AlterConfigs of a topic: the given configs replace every override
    /// (those not named go back to their defaults), all or nothing. A `None` value is left
    /// out.
    pub fn replace_topic_config(
        &self,
        name: &str,
        configs: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<()> {
        let current = self.topic_config(name)?;
        let mut ops: Vec<ConfigOp> = current
            .overrides()
            .keys()
            .filter(|k| !configs.iter().any(|(n, v)| n == *k && v.is_some()))
            .map(|k| ConfigOp::Delete(k.clone()))
            .collect();
        for (k, v) in configs {
            if let Some(v) = v {
                ops.push(ConfigOp::Set(k.clone(), v.clone()));
            }
        }
        self.alter_topic_config(name, &ops, validate_only)
    }

    /// A topic's `compression.type` and timestamp bounds applied to a produce's batches
    /// before they are appended: `Ok(None)` when the batches go as they came (the common
    /// case, `compression.type=producer`: one config read and a header walk), else the
    /// recompressed batches. Out-of-bounds timestamps are [`BrokerError::InvalidTimestamp`]
    /// and nothing is written.
    pub(crate) fn apply_append_policy(
        &self,
        topic: &str,
        log: &strom_log::Log,
        records: &[u8],
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>> {
        let Some(t) = self.topic(topic) else {
            return Ok(None);
        };
        let policy = t.with_config(|c| c.append_policy());
        if !policy.log_append_time {
            for (_, h) in strom_records::headers(records) {
                policy
                    .check_timestamps(h.base_timestamp, h.max_timestamp, now_ms)
                    .map_err(BrokerError::InvalidTimestamp)?;
            }
        }
        let Some(codec) = policy.codec else {
            return Ok(None);
        };
        // Checked before anything is rebuilt: a CRC must not be recomputed over bad bytes.
        let max = log.config().max_batch_bytes as usize;
        strom_records::validate(records, max)
            .map_err(|e| BrokerError::Log(strom_log::LogError::Batch(e)))?;
        strom_records::recompress_batches(records, codec, policy.level)
            .map_err(|e| BrokerError::Log(strom_log::LogError::Batch(e)))
    }

    /// IncrementalAlterConfigs APPEND (`append`) or SUBTRACT of the comma-separated `items`
    /// on the list config `name` of a topic: the [`ConfigOp::Set`] of the resulting list.
    /// A config that is not a list is [`BrokerError::InvalidConfig`], as in Kafka.
    pub fn list_config_op(
        &self,
        topic: &str,
        name: &str,
        items: &str,
        append: bool,
    ) -> Result<ConfigOp> {
        let def = crate::config::config_def(name)
            .ok_or_else(|| BrokerError::InvalidConfig(format!("unknown topic config {name:?}")))?;
        let is_list =
            def.kind == crate::config::ConfigKind::ReplicaList || name == "cleanup.policy";
        if !is_list {
            let what = if append { "append" } else { "subtract" };
            return Err(BrokerError::InvalidConfig(format!(
                "config value {what} is not allowed for config key {name}, since it is not a list"
            )));
        }
        let config = self.topic_config(topic)?;
        let (current, _) = config.get(name).unwrap_or_default();
        let split = |s: &str| -> Vec<String> {
            s.split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect()
        };
        let mut list = split(&current);
        for item in split(items) {
            if append {
                if !list.contains(&item) {
                    list.push(item);
                }
            } else {
                list.retain(|e| *e != item);
            }
        }
        Ok(ConfigOp::Set(name.to_string(), list.join(",")))
    }

    /// The data directory's size and the bytes of every partition in it.
    pub fn log_dir_usage(&self) -> Result<LogDirUsage> {
        let dir = &self.config().data_dir;
        let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let (total_bytes, usable_bytes) = fs_space(&path)?;
        let mut partitions = Vec::new();
        for t in self.topics() {
            let Some(topic) = self.topic(&t.name) else {
                continue;
            };
            for p in topic.partitions().iter() {
                let size = p.log().map(|l| l.size_bytes()).unwrap_or(0);
                partitions.push((t.name.clone(), p.index(), size));
            }
        }
        Ok(LogDirUsage {
            path,
            total_bytes,
            usable_bytes,
            partitions,
        })
    }
}

/// `(total, available)` bytes of the file system holding `path`.
fn fs_space(path: &Path) -> Result<(i64, i64)> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| BrokerError::Io(std::io::Error::other(e)))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(BrokerError::Io(std::io::Error::last_os_error()));
    }
    let frsize = st.f_frsize as i64;
    Ok((
        (st.f_blocks as i64).saturating_mul(frsize),
        (st.f_bavail as i64).saturating_mul(frsize),
    ))
}

/// One quota entity: `(entity type, name)` pairs (`user`, `client-id`, `ip`); a `None` name
/// is the default entity of that type.
pub type QuotaEntity = Vec<(String, Option<String>)>;

/// The quota keys Kafka defines and whether the key applies to the entity types given.
const QUOTA_KEYS: &[&str] = &[
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
    "controller_mutation_rate",
    "connection_creation_rate",
];

/// The entity types Kafka knows.
const ENTITY_TYPES: &[&str] = &["user", "client-id", "ip"];

#[derive(Default, Serialize, Deserialize)]
struct QuotaFile {
    entries: Vec<QuotaEntry>,
}

#[derive(Clone, Serialize, Deserialize)]
struct QuotaEntry {
    entity: QuotaEntity,
    values: BTreeMap<String, f64>,
}

/// Client quotas (KIP-546 DescribeClientQuotas / AlterClientQuotas): stored durably in
/// `.strom/client-quotas.json` (replaced atomically), not enforced.
pub struct ClientQuotas {
    path: PathBuf,
    entries: Mutex<Vec<QuotaEntry>>,
}

/// One alteration of one entity: `(key, Some(value))` sets, `(key, None)` removes.
pub type QuotaOps = Vec<(String, Option<f64>)>;

/// How a DescribeClientQuotas filter component matches an entity type.
#[derive(Clone, Debug)]
pub enum QuotaMatch {
    /// That exact name.
    Exact(String),
    /// The default entity of the type.
    Default,
    /// Any entity of the type, the default included.
    Any,
}

impl ClientQuotas {
    /// Opens the store of `data_dir`.
    pub fn open(data_dir: &Path) -> Result<ClientQuotas> {
        let dir = data_dir.join(".strom");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("client-quotas.json");
        let entries = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice::<QuotaFile>(&b)
                    .map_err(|e| BrokerError::Io(std::io::Error::other(e)))?
                    .entries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(ClientQuotas {
            path,
            entries: Mutex::new(entries),
        })
    }

    /// Checks one alteration as Kafka does: known entity types, each at most once, known
    /// keys, positive values.
    pub fn check(entity: &QuotaEntity, ops: &QuotaOps) -> Result<()> {
        if entity.is_empty() {
            return Err(BrokerError::InvalidConfig("empty quota entity".into()));
        }
        for (i, (t, _)) in entity.iter().enumerate() {
            if !ENTITY_TYPES.contains(&t.as_str()) {
                return Err(BrokerError::InvalidConfig(format!(
                    "unknown quota entity type {t:?}"
                )));
            }
            if entity[..i].iter().any(|(u, _)| u == t) {
                return Err(BrokerError::InvalidConfig(format!(
                    "duplicate quota entity type {t:?}"
                )));
            }
        }
        let ip = entity.iter().any(|(t, _)| t == "ip");
        if ip && entity.len() > 1 {
            return Err(BrokerError::InvalidConfig(
                "an ip quota entity cannot be combined with user or client-id".into(),
            ));
        }
        for (k, v) in ops {
            if !QUOTA_KEYS.contains(&k.as_str()) {
                return Err(BrokerError::InvalidConfig(format!(
                    "unknown quota key {k:?}"
                )));
            }
            if (k == "connection_creation_rate") != ip {
                return Err(BrokerError::InvalidConfig(format!(
                    "quota key {k:?} does not apply to this entity"
                )));
            }
            if let Some(v) = v {
                if !(v.is_finite() && *v > 0.0) {
                    return Err(BrokerError::InvalidConfig(format!(
                        "quota {k} must be positive, not {v}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Applies alterations (each already checked) and persists them before returning.
    pub fn alter(&self, changes: &[(QuotaEntity, QuotaOps)]) -> Result<()> {
        let mut entries = self.entries.lock();
        let mut next = entries.clone();
        for (entity, ops) in changes {
            let mut e = normalize(entity);
            let i = match next.iter().position(|q| q.entity == e) {
                Some(i) => i,
                None => {
                    next.push(QuotaEntry {
                        entity: std::mem::take(&mut e),
                        values: BTreeMap::new(),
                    });
                    next.len() - 1
                }
            };
            for (k, v) in ops {
                match v {
                    Some(v) => next[i].values.insert(k.clone(), *v),
                    None => next[i].values.remove(k),
                };
            }
        }
        next.retain(|q| !q.values.is_empty());
        let bytes = serde_json::to_vec(&QuotaFile {
            entries: next.clone(),
        })
        .map_err(|e| BrokerError::Io(std::io::Error::other(e)))?;
        write_atomic(&self.path, &bytes)?;
        *entries = next;
        Ok(())
    }

    /// The entities matching every component of `filter` (`strict`: and no other entity
    /// type), with their values.
    pub fn describe(
        &self,
        filter: &[(String, QuotaMatch)],
        strict: bool,
    ) -> Vec<(QuotaEntity, Vec<(String, f64)>)> {
        let entries = self.entries.lock();
        entries
            .iter()
            .filter(|q| {
                let all = filter.iter().all(|(t, m)| {
                    q.entity
                        .iter()
                        .find(|(u, _)| u == t)
                        .is_some_and(|(_, name)| match m {
                            QuotaMatch::Exact(n) => name.as_deref() == Some(n.as_str()),
                            QuotaMatch::Default => name.is_none(),
                            QuotaMatch::Any => true,
                        })
                });
                all && (!strict || q.entity.len() == filter.len())
            })
            .map(|q| {
                (
                    q.entity.clone(),
                    q.values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                )
            })
            .collect()
    }
}

fn normalize(entity: &QuotaEntity) -> QuotaEntity {
    let mut e = entity.clone();
    e.sort();
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_stored_durably_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let q = ClientQuotas::open(dir.path()).unwrap();
        let user: QuotaEntity = vec![("user".into(), Some("alice".into()))];
        let ops: QuotaOps = vec![("producer_byte_rate".into(), Some(1024.0))];
        ClientQuotas::check(&user, &ops).unwrap();
        q.alter(&[(user.clone(), ops)]).unwrap();
        let bad: QuotaOps = vec![("nope".into(), Some(1.0))];
        assert!(ClientQuotas::check(&user, &bad).is_err());
        drop(q);
        let q = ClientQuotas::open(dir.path()).unwrap();
        let found = q.describe(&[("user".into(), QuotaMatch::Any)], false);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, vec![("producer_byte_rate".to_string(), 1024.0)]);
        assert!(q
            .describe(&[("client-id".into(), QuotaMatch::Any)], false)
            .is_empty());
        q.alter(&[(user, vec![("producer_byte_rate".into(), None)])])
            .unwrap();
        assert!(q.describe(&[], false).is_empty());
    }
}
