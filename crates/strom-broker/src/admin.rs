//! Administrative operations of the core that the Kafka admin APIs reach: DeleteRecords (the
//! log start offset) and the data directory's usage (DescribeLogDirs). Client quotas are
//! `quota.rs`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::broker::{Broker, ConfigOp};
use crate::error::{BrokerError, Result};

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

    /// Kafka's legacy AlterConfigs of a topic: the given configs replace every override
    /// (those not named go back to their defaults), all or nothing. A `None` value is left
    /// out.
    pub async fn replace_topic_config(
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
        self.admin_alter_topic_config(name, &ops, validate_only)
            .await
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
