//! Share-group configs: the broker's defaults ([`ShareConfig`]), the group-level configs a
//! client may set (Kafka's names, KIP-932; Strom's `strom.retry.backoff*`; KIP-1191's
//! dead-letter topic) and how a partition's effective policy is resolved:
//! group override > topic config (`strom.*` only) > broker default.

use std::collections::BTreeMap;

use crate::config::{ConfigDef, ConfigKind};

/// The broker's share-group settings (Kafka's broker config names in the docs).
#[derive(Clone, Debug)]
pub struct ShareConfig {
    /// `group.share.partition.max.record.locks`: records in flight per share-partition at most
    /// (acquisition stops while the window is full).
    pub max_record_locks: usize,
    /// `group.share.record.lock.duration.ms`: default acquisition lock.
    pub record_lock_duration_ms: i64,
    /// `group.share.delivery.count.limit`: default delivery attempts.
    pub delivery_count_limit: u16,
    /// `group.share.session.timeout.ms`: default member session.
    pub session_timeout_ms: i64,
    /// `group.share.heartbeat.interval.ms`: default heartbeat interval.
    pub heartbeat_interval_ms: i64,
    /// The internal log is rewritten (snapshot of the live state) once it holds this many
    /// bytes more than the last snapshot did.
    pub rewrite_after_bytes: u64,
    /// Period of the ticker (lock and session expiry, backoff wake-ups, dead-lettering).
    pub tick_ms: u64,
}

impl Default for ShareConfig {
    fn default() -> Self {
        ShareConfig {
            max_record_locks: 2000,
            record_lock_duration_ms: 30_000,
            delivery_count_limit: 5,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            rewrite_after_bytes: 64 << 20,
            tick_ms: 20,
        }
    }
}

/// `share.auto.offset.reset`.
pub const AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
/// `share.record.lock.duration.ms`.
pub const RECORD_LOCK_DURATION_MS: &str = "share.record.lock.duration.ms";
/// `share.delivery.count.limit`.
pub const DELIVERY_COUNT_LIMIT: &str = "share.delivery.count.limit";
/// `share.isolation.level`.
pub const ISOLATION_LEVEL: &str = "share.isolation.level";
/// `share.session.timeout.ms`.
pub const SESSION_TIMEOUT_MS: &str = "share.session.timeout.ms";
/// `share.heartbeat.interval.ms`.
pub const HEARTBEAT_INTERVAL_MS: &str = "share.heartbeat.interval.ms";
/// `strom.retry.backoff.ms` (also a topic config).
pub const RETRY_BACKOFF_MS: &str = "strom.retry.backoff.ms";
/// `strom.retry.backoff.max.ms` (also a topic config).
pub const RETRY_BACKOFF_MAX_MS: &str = "strom.retry.backoff.max.ms";
/// `errors.deadletterqueue.topic.name` (KIP-1191).
pub const DLQ_TOPIC: &str = "errors.deadletterqueue.topic.name";

/// Every group config Strom accepts, sorted by name. The defaults shown are the broker's
/// (`ShareConfig::default()`); [`group_config_default`] gives the running broker's.
pub const GROUP_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: DLQ_TOPIC,
        default: "",
        kind: ConfigKind::Choice(&[]),
        doc: "Topic that REJECTed records and records at the delivery count limit are \
              appended to (auto-created); empty = none",
    },
    ConfigDef {
        name: AUTO_OFFSET_RESET,
        default: "latest",
        kind: ConfigKind::Choice(&["latest", "earliest", "by_duration:<ISO-8601 duration>"]),
        doc: "Where a share-partition starts: latest, earliest, or by_duration:PnDTnHnMnS",
    },
    ConfigDef {
        name: DELIVERY_COUNT_LIMIT,
        default: "5",
        kind: ConfigKind::Long { min: 2, max: 10 },
        doc: "Deliveries of a record before it is archived (or dead-lettered)",
    },
    ConfigDef {
        name: HEARTBEAT_INTERVAL_MS,
        default: "5000",
        kind: ConfigKind::Long {
            min: 1000,
            max: 3_600_000,
        },
        doc: "Heartbeat interval given to members",
    },
    ConfigDef {
        name: ISOLATION_LEVEL,
        default: "read_uncommitted",
        kind: ConfigKind::Choice(&["read_uncommitted", "read_committed"]),
        doc: "Which records are delivered: read_committed stops at the last stable offset and never delivers a record of an aborted transaction",
    },
    ConfigDef {
        name: RECORD_LOCK_DURATION_MS,
        default: "30000",
        kind: ConfigKind::Long {
            min: 1000,
            max: 3_600_000,
        },
        doc: "How long an acquired record stays locked to its member",
    },
    ConfigDef {
        name: SESSION_TIMEOUT_MS,
        default: "45000",
        kind: ConfigKind::Long {
            min: 1000,
            max: 1_800_000,
        },
        doc: "A member without a heartbeat for this long leaves (its records are released)",
    },
    ConfigDef {
        name: RETRY_BACKOFF_MAX_MS,
        default: "0",
        kind: ConfigKind::Long {
            min: 0,
            max: 86_400_000,
        },
        doc: "Cap of the retry backoff; 0 = no cap",
    },
    ConfigDef {
        name: RETRY_BACKOFF_MS,
        default: "0",
        kind: ConfigKind::Long {
            min: 0,
            max: 86_400_000,
        },
        doc: "A released or lock-expired record is acquirable again only after \
              this x 2^(delivery_count-1) ms (+ up to 10% jitter); 0 = at once (Kafka)",
    },
];

/// The definition of a group config.
pub fn group_config_def(name: &str) -> Option<&'static ConfigDef> {
    GROUP_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one group config `name=value`; the error says what is wrong (an INVALID_CONFIG).
pub fn validate_group_config(name: &str, value: &str) -> Result<(), String> {
    let def = group_config_def(name).ok_or_else(|| format!("unknown group config {name:?}"))?;
    match name {
        AUTO_OFFSET_RESET => parse_reset(value).map(|_| ()),
        DLQ_TOPIC => {
            if value.is_empty() {
                Ok(())
            } else {
                crate::topic::validate_topic_name(value).map_err(|e| format!("{name}: {e}"))
            }
        }
        _ => def.check(value),
    }
}

/// `share.auto.offset.reset`, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log end.
    Latest,
    /// The log start.
    Earliest,
    /// The first record not older than this many ms.
    ByDuration(i64),
}

/// Parses `latest`, `earliest` or `by_duration:<ISO-8601 duration>` (`PnDTnHnMn.nS`, as
/// Java's `Duration.parse` with days).
pub fn parse_reset(value: &str) -> Result<OffsetReset, String> {
    match value {
        "latest" => Ok(OffsetReset::Latest),
        "earliest" => Ok(OffsetReset::Earliest),
        v => {
            let d = v.strip_prefix("by_duration:").ok_or_else(|| {
                format!("{AUTO_OFFSET_RESET}: {v:?} is not latest, earliest or by_duration:<ISO-8601 duration>")
            })?;
            parse_iso_duration_ms(d)
                .map(OffsetReset::ByDuration)
                .ok_or_else(|| format!("{AUTO_OFFSET_RESET}: {d:?} is not an ISO-8601 duration (e.g. PT1H, P1DT30M)"))
        }
    }
}

/// `PnDTnHnMn.nS` → ms; None if malformed or negative.
fn parse_iso_duration_ms(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    if rest.is_empty() {
        return None;
    }
    let (date, time) = match rest.find(['T', 't']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut total: f64 = 0.0;
    let mut any = false;
    let mut parse = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        let mut last_unit = 0usize;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let pos = units.iter().position(|(u, _)| u.eq_ignore_ascii_case(&c))?;
                if pos < last_unit || num.is_empty() {
                    return None;
                }
                let n: f64 = num.parse().ok()?;
                total += n * units[pos].1;
                any = true;
                num.clear();
                last_unit = pos + 1;
            }
        }
        num.is_empty().then_some(())
    };
    parse(date, &[('D', 86_400_000.0)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        parse(t, &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)])?;
    }
    (any && total.is_finite() && total < i64::MAX as f64 / 2.0).then_some(total as i64)
}

/// The broker default of a group config, as text.
pub fn group_config_default(config: &ShareConfig, name: &str) -> Option<String> {
    Some(match name {
        RECORD_LOCK_DURATION_MS => config.record_lock_duration_ms.to_string(),
        DELIVERY_COUNT_LIMIT => config.delivery_count_limit.to_string(),
        SESSION_TIMEOUT_MS => config.session_timeout_ms.to_string(),
        HEARTBEAT_INTERVAL_MS => config.heartbeat_interval_ms.to_string(),
        _ => group_config_def(name)?.default.to_string(),
    })
}

/// What governs one share-partition, resolved from the group's overrides, the topic's
/// configs and the broker's defaults.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub(crate) lock_ms: i64,
    pub(crate) delivery_limit: u16,
    pub(crate) backoff_ms: i64,
    pub(crate) backoff_max_ms: i64,
    pub(crate) dead_letter: Option<String>,
    pub(crate) max_locks: usize,
    /// `share.isolation.level=read_committed`: acquisition stops at the last stable offset
    /// and archives the records of aborted transactions.
    pub(crate) read_committed: bool,
}

impl Policy {
    pub(crate) fn resolve(
        config: &ShareConfig,
        group: Option<&BTreeMap<String, String>>,
        topic: Option<&crate::config::TopicConfig>,
    ) -> Policy {
        let long = |name: &str, topic_level: bool| -> i64 {
            group
                .and_then(|g| g.get(name))
                .cloned()
                .or_else(|| {
                    topic_level
                        .then(|| topic.and_then(|t| t.get(name)).map(|(v, _)| v))
                        .flatten()
                })
                .or_else(|| group_config_default(config, name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Policy {
            lock_ms: long(RECORD_LOCK_DURATION_MS, false).max(1),
            delivery_limit: long(DELIVERY_COUNT_LIMIT, false).clamp(1, u16::MAX as i64) as u16,
            backoff_ms: long(RETRY_BACKOFF_MS, true).max(0),
            backoff_max_ms: long(RETRY_BACKOFF_MAX_MS, true).max(0),
            dead_letter: group
                .and_then(|g| g.get(DLQ_TOPIC))
                .filter(|v| !v.is_empty())
                .cloned(),
            max_locks: config.max_record_locks.max(1),
            read_committed: group
                .and_then(|g| g.get(ISOLATION_LEVEL))
                .cloned()
                .or_else(|| group_config_default(config, ISOLATION_LEVEL))
                .is_some_and(|v| v == "read_committed"),
        }
    }

    /// The backoff before a record that has been delivered `delivery_count` times may be
    /// acquired again, without jitter.
    pub(crate) fn backoff(&self, delivery_count: u16) -> i64 {
        if self.backoff_ms <= 0 {
            return 0;
        }
        let exp = u32::from(delivery_count.saturating_sub(1)).min(30);
        let b = self.backoff_ms.saturating_mul(1i64 << exp);
        if self.backoff_max_ms > 0 {
            b.min(self.backoff_max_ms)
        } else {
            b
        }
    }
}

/// The group-level value of an `i64` config.
pub(crate) fn group_long(
    config: &ShareConfig,
    group: Option<&BTreeMap<String, String>>,
    name: &str,
) -> i64 {
    group
        .and_then(|g| g.get(name))
        .cloned()
        .or_else(|| group_config_default(config, name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The group's `share.auto.offset.reset`.
pub(crate) fn group_reset(group: Option<&BTreeMap<String, String>>) -> OffsetReset {
    group
        .and_then(|g| g.get(AUTO_OFFSET_RESET))
        .and_then(|v| parse_reset(v).ok())
        .unwrap_or(OffsetReset::Latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_validate_as_kafka_names_them() {
        for (n, v) in [
            (AUTO_OFFSET_RESET, "latest"),
            (AUTO_OFFSET_RESET, "earliest"),
            (AUTO_OFFSET_RESET, "by_duration:PT1H"),
            (AUTO_OFFSET_RESET, "by_duration:P1DT2H30M10.5S"),
            (RECORD_LOCK_DURATION_MS, "15000"),
            (DELIVERY_COUNT_LIMIT, "3"),
            (ISOLATION_LEVEL, "read_committed"),
            (RETRY_BACKOFF_MS, "1000"),
            (DLQ_TOPIC, "orders.dlq"),
            (DLQ_TOPIC, ""),
        ] {
            assert_eq!(validate_group_config(n, v), Ok(()), "{n}={v}");
        }
        for (n, v) in [
            ("share.nope", "1"),
            (AUTO_OFFSET_RESET, "by_duration:1H"),
            (AUTO_OFFSET_RESET, "by_duration:PT"),
            (AUTO_OFFSET_RESET, "middle"),
            (RECORD_LOCK_DURATION_MS, "-5"),
            (RECORD_LOCK_DURATION_MS, "abc"),
            (DELIVERY_COUNT_LIMIT, "1"),
            (ISOLATION_LEVEL, "serializable"),
            (DLQ_TOPIC, "bad topic!"),
        ] {
            assert!(validate_group_config(n, v).is_err(), "{n}={v}");
        }
        assert_eq!(
            parse_reset("by_duration:P1DT1M").unwrap(),
            OffsetReset::ByDuration(86_400_000 + 60_000)
        );
    }

    #[test]
    fn a_topic_sets_the_retry_backoff_default_and_a_group_setting_wins() {
        let topic = crate::config::TopicConfig::from_overrides([
            (RETRY_BACKOFF_MS, "300"),
            (RETRY_BACKOFF_MAX_MS, "900"),
        ])
        .unwrap();
        let c = ShareConfig::default();
        let p = Policy::resolve(&c, None, Some(&topic));
        assert_eq!((p.backoff_ms, p.backoff_max_ms), (300, 900));
        assert_eq!([p.backoff(1), p.backoff(2), p.backoff(3)], [300, 600, 900]);
        let group = BTreeMap::from([(RETRY_BACKOFF_MS.to_string(), "50".to_string())]);
        let p = Policy::resolve(&c, Some(&group), Some(&topic));
        assert_eq!((p.backoff_ms, p.backoff_max_ms), (50, 900));
        // Lock duration and the limit are group-level only (a topic cannot set them).
        assert!(crate::config::validate_config(RECORD_LOCK_DURATION_MS, "1000").is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut p = Policy::resolve(&ShareConfig::default(), None, None);
        assert_eq!(p.backoff(1), 0);
        p.backoff_ms = 1000;
        p.backoff_max_ms = 5000;
        assert_eq!(
            [p.backoff(1), p.backoff(2), p.backoff(3), p.backoff(4)],
            [1000, 2000, 4000, 5000]
        );
    }
}
