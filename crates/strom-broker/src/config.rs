//! Topic configs under Kafka's own names, and the broker's settings.
//!
//! A topic stores only its overrides (what a client set); everything else is Kafka's default.
//! [`TopicConfig::log_config`] turns the effective values into the storage engine's
//! [`LogConfig`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use strom_log::{LogConfig, TimestampType, MAX_BATCH_BYTES_DEFAULT, SEGMENT_BYTES_MIN};
use strom_records::Codec;

/// `Long.MAX_VALUE`, Kafka's "never" for `flush.messages` and `flush.ms`.
const LONG_MAX: i64 = i64::MAX;

/// How a config value is checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConfigKind {
    /// A 64-bit integer in `[min, max]`.
    Long {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// One of a fixed list of strings.
    Choice(&'static [&'static str]),
    /// `true` or `false`.
    Bool,
    /// A throttled-replicas list: empty, `*`, or `partition:broker` pairs, comma-separated.
    ReplicaList,
    /// A floating-point number in `[min, max]`.
    Double {
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
}

/// One topic config Strom knows: its Kafka name, default and accepted values.
#[derive(Clone, Copy, Debug)]
pub struct ConfigDef {
    /// Kafka's name, e.g. `retention.ms`.
    pub name: &'static str,
    /// Kafka's default, as Kafka prints it.
    pub default: &'static str,
    /// Accepted values.
    pub kind: ConfigKind,
    /// Kafka's documentation line, shortened.
    pub doc: &'static str,
}

impl ConfigDef {
    /// Checks `value` against [`ConfigDef::kind`]; the error names the config and the problem.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let name = self.name;
        match self.kind {
            ConfigKind::Long { min, max } => {
                let v: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}: {value:?} is not an integer"))?;
                if v < min || v > max {
                    return Err(format!("{name}: {v} is outside [{min}, {max}]"));
                }
            }
            ConfigKind::Double { min, max } => {
                let v: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}: {value:?} is not a number"))?;
                if !(min..=max).contains(&v) {
                    return Err(format!("{name}: {v} is outside [{min}, {max}]"));
                }
            }
            ConfigKind::Choice(choices) => {
                if !choices.contains(&value) {
                    return Err(format!("{name}: {value:?} is not one of {choices:?}"));
                }
            }
            ConfigKind::Bool => {
                if !value.trim().eq_ignore_ascii_case("true")
                    && !value.trim().eq_ignore_ascii_case("false")
                {
                    return Err(format!("{name}: {value:?} is not true or false"));
                }
            }
            ConfigKind::ReplicaList => {
                let v = value.trim();
                let pair = |e: &str| {
                    e.trim().split_once(':').is_some_and(|(p, b)| {
                        p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                    })
                };
                if !(v.is_empty() || v == "*" || v.split(',').all(pair)) {
                    return Err(format!(
                        "{name}: {value:?} must be empty, * or partitionId:brokerId pairs separated by commas"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Every topic config Strom accepts, sorted by name. Each one is honoured by the log or the
/// broker; a name not in this list is refused with an invalid-config error.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        default: "delete",
        kind: ConfigKind::Choice(&["delete", "compact", "compact,delete", "delete,compact"]),
        doc: "delete: segments past retention are deleted; compact: the log cleaner keeps the \
              latest record of each key; both: compaction and retention",
    },
    ConfigDef {
        name: "delete.retention.ms",
        default: "86400000",
        kind: ConfigKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Compacted topics: how long a tombstone stays once its segment was cleaned",
    },
    ConfigDef {
        name: "compression.gzip.level",
        default: "-1",
        kind: ConfigKind::Long {
            min: -1,
            max: 9,
        },
        doc: "gzip level when compression.type is gzip (-1: zlib's default; 1-9)",
    },
    ConfigDef {
        name: "compression.lz4.level",
        default: "9",
        kind: ConfigKind::Long {
            min: 1,
            max: 17,
        },
        doc: "lz4 level when compression.type is lz4",
    },
    ConfigDef {
        name: "compression.type",
        default: "producer",
        kind: ConfigKind::Choice(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        doc: "Codec batches are stored in: producer keeps the producer's, any other recompresses batches at append",
    },
    ConfigDef {
        name: "compression.zstd.level",
        default: "3",
        kind: ConfigKind::Long {
            min: -131072,
            max: 22,
        },
        doc: "zstd level when compression.type is zstd",
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        default: "60000",
        kind: ConfigKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Stored; Strom removes deleted segments at once",
    },
    ConfigDef {
        name: "flush.messages",
        default: "9223372036854775807",
        kind: ConfigKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        doc: "fdatasync after this many messages; the default leaves flushing to the OS",
    },
    ConfigDef {
        name: "flush.ms",
        default: "9223372036854775807",
        kind: ConfigKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        doc: "fdatasync data older than this; the default leaves flushing to the OS",
    },
    ConfigDef {
        name: "follower.replication.throttled.replicas",
        default: "",
        kind: ConfigKind::ReplicaList,
        doc: "Stored for the cluster mode: replicas throttled on the follower side",
    },
    ConfigDef {
        name: "index.interval.bytes",
        default: "4096",
        kind: ConfigKind::Long {
            min: 1,
            max: i32::MAX as i64,
        },
        doc: "Bytes between two entries of the sparse offset index",
    },
    ConfigDef {
        name: "leader.replication.throttled.replicas",
        default: "",
        kind: ConfigKind::ReplicaList,
        doc: "Stored for the cluster mode: replicas throttled on the leader side",
    },
    ConfigDef {
        name: "local.retention.bytes",
        default: "-2",
        kind: ConfigKind::Long {
            min: -2,
            max: LONG_MAX,
        },
        doc: "Tiered storage: local bytes kept (-2: retention.bytes); stored",
    },
    ConfigDef {
        name: "local.retention.ms",
        default: "-2",
        kind: ConfigKind::Long {
            min: -2,
            max: LONG_MAX,
        },
        doc: "Tiered storage: local time kept (-2: retention.ms); stored",
    },
    ConfigDef {
        name: "max.message.bytes",
        default: "1048588",
        kind: ConfigKind::Long {
            min: 1,
            max: i32::MAX as i64,
        },
        doc: "Largest record batch accepted",
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        default: "9223372036854775807",
        kind: ConfigKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        doc: "Compacted topics: a record stays uncompacted at most this long, whatever the dirty ratio",
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        default: "3600000",
        kind: ConfigKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        doc: "A CreateTime batch stamped further in the future is refused (INVALID_TIMESTAMP)",
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        default: "9223372036854775807",
        kind: ConfigKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        doc: "A CreateTime batch stamped further in the past is refused (INVALID_TIMESTAMP)",
    },
    ConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        kind: ConfigKind::Choice(&["CreateTime", "LogAppendTime"]),
        doc: "Whose timestamp records keep: the producer's or the broker's",
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        kind: ConfigKind::Double { min: 0.0, max: 1.0 },
        doc: "Compacted topics: clean a log once this share of it is not yet compacted",
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        default: "0",
        kind: ConfigKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Compacted topics: records younger than this are never compacted",
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: "1",
        kind: ConfigKind::Long {
            min: 1,
            max: i32::MAX as i64,
        },
        doc: "acks=all needs this many in-sync replicas (cluster mode; one node: the only replica is in sync)",
    },
    ConfigDef {
        name: "preallocate",
        default: "false",
        kind: ConfigKind::Bool,
        doc: "Stored; segments are not preallocated",
    },
    ConfigDef {
        name: "remote.log.copy.disable",
        default: "false",
        kind: ConfigKind::Bool,
        doc: "Tiered storage; stored",
    },
    ConfigDef {
        name: "remote.log.delete.on.disable",
        default: "false",
        kind: ConfigKind::Bool,
        doc: "Tiered storage; stored",
    },
    ConfigDef {
        name: "remote.storage.enable",
        default: "false",
        kind: ConfigKind::Bool,
        doc: "Tiered storage is not available: only false is accepted",
    },
    ConfigDef {
        name: "retention.bytes",
        default: "-1",
        kind: ConfigKind::Long {
            min: -1,
            max: LONG_MAX,
        },
        doc: "Delete the oldest segments while a partition is larger; -1 keeps all",
    },
    ConfigDef {
        name: "retention.ms",
        default: "604800000",
        kind: ConfigKind::Long {
            min: -1,
            max: LONG_MAX,
        },
        doc: "Delete segments whose newest record is older; -1 keeps all",
    },
    ConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        kind: ConfigKind::Long {
            min: SEGMENT_BYTES_MIN as i64,
            max: i32::MAX as i64,
        },
        doc: "Roll to a new segment at this size",
    },
    ConfigDef {
        name: "segment.index.bytes",
        default: "10485760",
        kind: ConfigKind::Long {
            min: 4,
            max: i32::MAX as i64,
        },
        doc: "Stored; Strom's sparse indexes grow as needed",
    },
    ConfigDef {
        name: "segment.jitter.ms",
        default: "0",
        kind: ConfigKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Each segment rolls up to this much (random per segment) before segment.ms",
    },
    ConfigDef {
        name: "segment.ms",
        default: "604800000",
        kind: ConfigKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        doc: "Roll to a new segment after this long",
    },
    ConfigDef {
        name: "strom.dedup.window.ms",
        default: "120000",
        kind: ConfigKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        doc: "A record whose strom.msg.id header was stored this recently on its partition is acknowledged with the first one's offset and not stored; 0 disables",
    },
    ConfigDef {
        name: "strom.delay.max.ms",
        default: "604800000",
        kind: ConfigKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        doc: "Longest delay a strom.delay.ms or strom.deliver.at header may ask; a longer one refuses the produce",
    },
    ConfigDef {
        name: "strom.retry.backoff.max.ms",
        default: "0",
        kind: ConfigKind::Long {
            min: 0,
            max: 86_400_000,
        },
        doc: "Share groups: cap of the retry backoff of this topic's records; 0 = no cap",
    },
    ConfigDef {
        name: "strom.retry.backoff.ms",
        default: "0",
        kind: ConfigKind::Long {
            min: 0,
            max: 86_400_000,
        },
        doc: "Share groups: a released record of this topic is acquirable again after this \
              x 2^(delivery_count-1) ms (a group's own setting wins); 0 = at once",
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        default: "false",
        kind: ConfigKind::Bool,
        doc: "Cluster mode: a live out-of-sync replica may lead when no in-sync one is live",
    },
];

/// The definition of a known topic config.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one `name=value` against its definition; the error names the problem.
pub fn validate_config(name: &str, value: &str) -> Result<(), String> {
    config_def(name)
        .ok_or_else(|| format!("unknown topic config {name:?}"))?
        .check(value)
}

/// A topic's config overrides (the values set by clients), validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Builds a config from overrides, refusing unknown names and invalid values.
    pub fn from_overrides<I, K, V>(overrides: I) -> Result<TopicConfig, String>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut c = TopicConfig::default();
        for (k, v) in overrides {
            c.set(k.into(), v.into())?;
        }
        c.log_config()?;
        Ok(c)
    }

    /// Sets one override after validating it.
    pub fn set(&mut self, name: String, value: String) -> Result<(), String> {
        validate_config(&name, &value)?;
        self.overrides.insert(name, value);
        Ok(())
    }

    /// Removes an override (back to the default). Unknown names are refused.
    pub fn remove(&mut self, name: &str) -> Result<(), String> {
        config_def(name).ok_or_else(|| format!("unknown topic config {name:?}"))?;
        self.overrides.remove(name);
        Ok(())
    }

    /// Applies incremental changes, all or nothing, and checks the result as a whole.
    pub fn apply(&mut self, ops: &[crate::ConfigOp]) -> Result<(), String> {
        let mut next = self.clone();
        for op in ops {
            match op {
                crate::ConfigOp::Set(k, v) => next.set(k.clone(), v.clone()),
                crate::ConfigOp::Delete(k) => next.remove(k),
            }?;
        }
        next.log_config()?;
        *self = next;
        Ok(())
    }

    /// The overrides.
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }

    /// The effective value of a known config and whether it is an override.
    pub fn get(&self, name: &str) -> Option<(String, bool)> {
        if let Some(v) = self.overrides.get(name) {
            return Some((v.clone(), true));
        }
        config_def(name).map(|d| (d.default.to_string(), false))
    }

    fn long(&self, name: &str) -> i64 {
        self.get(name)
            .and_then(|(v, _)| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} is a validated integer config"))
    }

    /// `min.insync.replicas`: acks=all needs this many in-sync replicas (cluster mode).
    pub fn min_insync_replicas(&self) -> i32 {
        self.long("min.insync.replicas").clamp(1, i32::MAX as i64) as i32
    }

    /// `strom.dedup.window.ms`.
    pub fn dedup_window_ms(&self) -> i64 {
        self.long("strom.dedup.window.ms")
    }

    /// `strom.delay.max.ms`: the topic's override, else `broker_default`
    /// ([`BrokerConfig::delay_max_ms`]).
    pub fn delay_max_ms(&self, broker_default: i64) -> i64 {
        match self.get("strom.delay.max.ms") {
            Some((_, true)) => self.long("strom.delay.max.ms"),
            _ => broker_default,
        }
    }

    /// What the core does to batches of this topic before they are appended. Read on every
    /// produce: a few lookups in the (usually empty) override map, defaults as in
    /// [`TOPIC_CONFIGS`].
    pub fn append_policy(&self) -> AppendPolicy {
        let ov = |name: &str| self.overrides.get(name).map(String::as_str);
        let long = |name: &str, default: i64| {
            ov(name)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        let codec = match ov("compression.type") {
            Some("uncompressed") => Some(Codec::None),
            Some("gzip") => Some(Codec::Gzip),
            Some("snappy") => Some(Codec::Snappy),
            Some("lz4") => Some(Codec::Lz4),
            Some("zstd") => Some(Codec::Zstd),
            _ => None,
        };
        let level = match codec {
            Some(Codec::Gzip) => Some(long("compression.gzip.level", -1) as i32),
            Some(Codec::Lz4) => Some(long("compression.lz4.level", 9) as i32),
            Some(Codec::Zstd) => Some(long("compression.zstd.level", 3) as i32),
            _ => None,
        };
        AppendPolicy {
            codec,
            level,
            log_append_time: ov("message.timestamp.type") == Some("LogAppendTime"),
            before_max_ms: long("message.timestamp.before.max.ms", LONG_MAX),
            after_max_ms: long("message.timestamp.after.max.ms", 3_600_000),
        }
    }

    /// Checks between configs and against what this broker can do.
    fn check_combination(&self) -> Result<(), String> {
        if matches!(self.get("remote.storage.enable"), Some((v, _)) if v.trim().eq_ignore_ascii_case("true"))
        {
            return Err(
                "remote.storage.enable: tiered storage is not enabled on this broker".into(),
            );
        }
        if self.long("compression.gzip.level") == 0 {
            return Err("compression.gzip.level: 0 is outside [1, 9] (or -1)".into());
        }
        Ok(())
    }

    /// `cleanup.policy` includes `compact`: the log cleaner compacts the topic's partitions
    /// and a record without a key is refused.
    pub fn compact(&self) -> bool {
        self.get("cleanup.policy")
            .is_some_and(|(v, _)| v.split(',').any(|p| p.trim() == "compact"))
    }

    /// `cleanup.policy` includes `delete`: retention (`retention.ms`, `retention.bytes`) applies.
    pub fn delete(&self) -> bool {
        self.get("cleanup.policy")
            .is_some_and(|(v, _)| v.split(',').any(|p| p.trim() == "delete"))
    }

    /// The log cleaner's settings of this topic, with the broker's
    /// `log.cleaner.dedupe.buffer.size` (`dedupe_buffer_bytes`).
    pub fn clean_options(&self, dedupe_buffer_bytes: usize) -> strom_log::CleanOptions {
        let ratio = self
            .get("min.cleanable.dirty.ratio")
            .and_then(|(v, _)| v.trim().parse().ok())
            .unwrap_or(0.5);
        strom_log::CleanOptions {
            dedupe_buffer_bytes,
            min_cleanable_dirty_ratio: ratio,
            min_compaction_lag_ms: self.long("min.compaction.lag.ms") as u64,
            max_compaction_lag_ms: self.long("max.compaction.lag.ms") as u64,
            delete_retention_ms: self.long("delete.retention.ms") as u64,
        }
    }

    /// The storage engine settings these configs mean.
    pub fn log_config(&self) -> Result<LogConfig, String> {
        self.check_combination()?;
        if self.long("min.compaction.lag.ms") > self.long("max.compaction.lag.ms") {
            return Err(format!(
                "min.compaction.lag.ms ({}) must not be greater than max.compaction.lag.ms ({})",
                self.long("min.compaction.lag.ms"),
                self.long("max.compaction.lag.ms")
            ));
        }
        let retained = self.delete();
        let opt = |v: i64| (v >= 0 && retained).then_some(v as u64);
        let never = |v: i64| (v != LONG_MAX).then_some(v as u64);
        let c = LogConfig {
            segment_bytes: self.long("segment.bytes") as u64,
            segment_ms: self.long("segment.ms") as u64,
            segment_jitter_ms: self.long("segment.jitter.ms") as u64,
            index_interval_bytes: self.long("index.interval.bytes") as u64,
            max_batch_bytes: self.long("max.message.bytes") as u64,
            retention_ms: opt(self.long("retention.ms")),
            retention_bytes: opt(self.long("retention.bytes")),
            flush_messages: never(self.long("flush.messages")),
            flush_ms: never(self.long("flush.ms")),
            timestamp_type: match self.get("message.timestamp.type") {
                Some((v, _)) if v == "LogAppendTime" => TimestampType::LogAppendTime,
                _ => TimestampType::CreateTime,
            },
            leader_epoch: 0,
        };
        c.validate()?;
        Ok(c)
    }
}

/// What the core does to a topic's batches before appending them (see
/// [`TopicConfig::append_policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendPolicy {
    /// `compression.type`: the codec batches are stored in; `None` for `producer` (the
    /// client's bytes as they came).
    pub codec: Option<Codec>,
    /// `compression.gzip.level` / `lz4.level` / `zstd.level` of that codec (-1: gzip's default).
    pub level: Option<i32>,
    /// `message.timestamp.type=LogAppendTime`: the log stamps batches, their own
    /// timestamps are not checked.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms`.
    pub before_max_ms: i64,
    /// `message.timestamp.after.max.ms`.
    pub after_max_ms: i64,
}

impl AppendPolicy {
    /// Checks a CreateTime batch's first and largest timestamps against the bounds at
    /// `now_ms`: the error names the timestamp and the bound.
    pub fn check_timestamps(&self, base: i64, max: i64, now_ms: i64) -> Result<(), String> {
        if self.log_append_time {
            return Ok(());
        }
        for ts in [base, max] {
            if ts < 0 {
                continue;
            }
            if now_ms.saturating_sub(ts) > self.before_max_ms {
                return Err(format!(
                    "timestamp {ts} is more than message.timestamp.before.max.ms={} before the broker's time {now_ms}",
                    self.before_max_ms
                ));
            }
            if ts.saturating_sub(now_ms) > self.after_max_ms {
                return Err(format!(
                    "timestamp {ts} is more than message.timestamp.after.max.ms={} after the broker's time {now_ms}",
                    self.after_max_ms
                ));
            }
        }
        Ok(())
    }
}

/// The broker's own settings.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Where topics, partitions and broker state live.
    pub data_dir: PathBuf,
    /// This broker's node id in metadata.
    pub node_id: i32,
    /// `auto.create.topics.enable`: Metadata and Produce for an unknown topic create it.
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of an auto-created topic (and of a create without a count).
    pub num_partitions: i32,
    /// `log.retention.check.interval.ms`: how often retention runs.
    pub retention_check_interval_ms: u64,
    /// `producer.id.expiration.ms`: idle producers are forgotten after this.
    pub producer_id_expiration_ms: i64,
    /// Largest partition count a topic may have.
    pub max_partitions_per_topic: i32,
    /// `strom.delay.max.ms` of topics that do not set it (`--delay-max-ms`).
    pub delay_max_ms: i64,
    /// `log.cleaner.dedupe.buffer.size`: bytes of the cleaners' offset maps, all threads
    /// together.
    pub log_cleaner_dedupe_buffer_size: usize,
    /// `log.cleaner.threads`: cleaner passes that may run at once (each on its own log,
    /// each with its share of the dedupe buffer).
    pub log_cleaner_threads: usize,
    /// `log.cleaner.backoff.ms`: how long the cleaner sleeps when no log is due.
    pub log_cleaner_backoff_ms: u64,
    /// `--authorizer acl`: Kafka's ACL model is enforced (`.strom/acls.json`).
    pub acl_authorizer: bool,
    /// `super.users`: principals the authorizer allows everything.
    pub super_users: Vec<crate::security::Principal>,
}

impl BrokerConfig {
    /// Kafka's defaults over `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            data_dir: data_dir.into(),
            node_id: 1,
            auto_create_topics: true,
            num_partitions: 1,
            retention_check_interval_ms: 300_000,
            producer_id_expiration_ms: crate::producer::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            max_partitions_per_topic: 10_000,
            delay_max_ms: DELAY_MAX_MS_DEFAULT,
            log_cleaner_dedupe_buffer_size: strom_log::DEDUPE_BUFFER_BYTES_DEFAULT,
            log_cleaner_threads: 1,
            log_cleaner_backoff_ms: 15_000,
            acl_authorizer: false,
            super_users: Vec::new(),
        }
    }
}

/// `strom.delay.max.ms` unless the broker or the topic says otherwise: 7 days.
pub const DELAY_MAX_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;

/// Kafka's default `max.message.bytes`, for doors that report it.
pub const MAX_MESSAGE_BYTES_DEFAULT: u64 = MAX_BATCH_BYTES_DEFAULT;

#[cfg(test)]
mod append_policy_tests {
    use super::*;

    #[test]
    fn the_policy_follows_the_overrides_with_kafkas_defaults() {
        let d = TopicConfig::default().append_policy();
        assert_eq!(
            (d.codec, d.log_append_time, d.before_max_ms, d.after_max_ms),
            (None, false, LONG_MAX, 3_600_000)
        );
        for def in TOPIC_CONFIGS {
            def.check(def.default).unwrap_or_else(|e| panic!("{e}"));
        }
        let c = TopicConfig::from_overrides([
            ("compression.type", "zstd"),
            ("compression.zstd.level", "7"),
            ("message.timestamp.type", "LogAppendTime"),
        ])
        .unwrap();
        let p = c.append_policy();
        assert_eq!(
            (p.codec, p.level, p.log_append_time),
            (Some(Codec::Zstd), Some(7), true)
        );
        assert!(TopicConfig::from_overrides([("remote.storage.enable", "true")]).is_err());
        assert!(TopicConfig::from_overrides([("compression.gzip.level", "0")]).is_err());
        assert!(TopicConfig::from_overrides([("preallocate", "maybe")]).is_err());
        assert!(
            TopicConfig::from_overrides([("leader.replication.throttled.replicas", "0:1,x")])
                .is_err()
        );
        assert!(
            TopicConfig::from_overrides([("leader.replication.throttled.replicas", "*")]).is_ok()
        );
        let now = 1_000_000_000;
        let b = TopicConfig::from_overrides([("message.timestamp.before.max.ms", "1000")])
            .unwrap()
            .append_policy();
        assert!(b.check_timestamps(now - 999, now, now).is_ok());
        assert!(b.check_timestamps(now - 1001, now, now).is_err());
        assert!(b.check_timestamps(now, now + 3_600_001, now).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_map_to_the_log() {
        let c = TopicConfig::default();
        let l = c.log_config().unwrap();
        assert_eq!(l.segment_bytes, 1 << 30);
        assert_eq!(l.max_batch_bytes, 1_048_588);
        assert_eq!(l.retention_ms, Some(604_800_000));
        assert_eq!(l.retention_bytes, None);
        assert_eq!(l.flush_messages, None);
        assert_eq!(l.flush_ms, None);
        assert_eq!(
            c.get("flush.ms").unwrap(),
            ("9223372036854775807".into(), false)
        );
    }

    #[test]
    fn overrides_are_validated() {
        let c =
            TopicConfig::from_overrides([("retention.ms", "-1"), ("flush.messages", "1")]).unwrap();
        let l = c.log_config().unwrap();
        assert_eq!(l.retention_ms, None);
        assert_eq!(l.flush_messages, Some(1));
        assert!(TopicConfig::from_overrides([("no.such", "1")]).is_err());
        assert!(TopicConfig::from_overrides([("segment.bytes", "12")]).is_err());
        assert!(TopicConfig::from_overrides([("retention.ms", "soon")]).is_err());
        assert!(TopicConfig::from_overrides([("message.timestamp.type", "Now")]).is_err());
    }

    #[test]
    fn compaction_configs() {
        let d = TopicConfig::default();
        assert!(d.delete() && !d.compact());
        let c = TopicConfig::from_overrides([
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "100"),
            ("min.compaction.lag.ms", "5"),
            ("max.compaction.lag.ms", "50"),
        ])
        .unwrap();
        assert!(c.compact() && !c.delete());
        // Compaction alone: no retention.
        assert_eq!(c.log_config().unwrap().retention_ms, None);
        let o = c.clean_options(1000);
        assert_eq!(o.min_cleanable_dirty_ratio, 0.01);
        assert_eq!(
            (
                o.delete_retention_ms,
                o.min_compaction_lag_ms,
                o.max_compaction_lag_ms
            ),
            (100, 5, 50)
        );
        let both = TopicConfig::from_overrides([("cleanup.policy", "compact,delete")]).unwrap();
        assert!(both.compact() && both.delete());
        assert_eq!(both.log_config().unwrap().retention_ms, Some(604_800_000));
        for bad in [
            ("cleanup.policy", "compacted"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "half"),
            ("delete.retention.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
        ] {
            assert!(TopicConfig::from_overrides([bad]).is_err(), "{bad:?}");
        }
        assert!(TopicConfig::from_overrides([
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "5")
        ])
        .is_err());
    }
}
