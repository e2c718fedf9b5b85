//! Client quotas (KIP-546 DescribeClientQuotas / AlterClientQuotas, `strom quota`), stored
//! durably in `<data-dir>/.strom/client-quotas.json` (a [`Watched`] document: a quota set
//! offline reaches a running broker within a second), and their enforcement.
//!
//! `producer_byte_rate` and `consumer_byte_rate` are enforced as Kafka does, by delaying,
//! never by dropping: the bytes a request produced (or a fetch returned) are charged to the
//! quota's entity, and a request that takes it over its rate gets a throttle time — the
//! Kafka door answers with `throttle_time_ms` and reads nothing more from that connection
//! until the time has passed (KIP-219), the HTTP door delays its answer (or, when the wait
//! would be long, answers 429 with `Retry-After` before doing anything). The quota of a
//! request is found in Kafka's order of precedence (user and client-id, user and default
//! client-id, user, default user and client-id, ..., default client-id); the entity that
//! defined it is the one charged (a `user=<default>` quota gives each user a budget of
//! its own). The rate is kept with the generic cell rate algorithm: an entity may run up to
//! [`BURST`] ahead of its rate, over any longer span it gets at most its rate.
//! `request_percentage` and `controller_mutation_rate` are stored, not enforced.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::security::store::Watched;
use crate::security::Principal;

/// One quota entity: `(entity type, name)` pairs (`user`, `client-id`, `ip`); a `None` name
/// is the default entity of that type.
pub type QuotaEntity = Vec<(String, Option<String>)>;

/// One alteration of one entity: `(key, Some(value))` sets, `(key, None)` removes.
pub type QuotaOps = Vec<(String, Option<f64>)>;

/// The quota keys Kafka defines.
pub const QUOTA_KEYS: &[&str] = &[
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
    "controller_mutation_rate",
    "connection_creation_rate",
];

/// The entity types Kafka knows.
const ENTITY_TYPES: &[&str] = &["user", "client-id", "ip"];

/// How far ahead of its rate an entity may run before it is throttled.
pub const BURST: Duration = Duration::from_secs(1);

/// The longest one throttle lasts (a larger debt throttles the next requests too).
pub const MAX_THROTTLE: Duration = Duration::from_secs(10);

/// Throttle entries kept before those without debt are dropped.
const ENTRIES_SOFT_MAX: usize = 10_000;

#[derive(Default, Clone, PartialEq, Serialize, Deserialize)]
struct QuotaFile {
    entries: Vec<QuotaEntry>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
struct QuotaEntry {
    entity: QuotaEntity,
    values: BTreeMap<String, f64>,
}

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

/// The entity a quota charges: its user and client-id names (`None`: the quota's entity
/// has no such component).
pub type Charged = (Option<String>, Option<String>);

/// One component of a precedence level: absent, the default, or a name.
type Part<'a> = Option<Option<&'a str>>;

/// What a quota limits, and the unit of what is charged to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Bytes produced (`producer_byte_rate`, bytes per second).
    Produce,
    /// Bytes fetched (`consumer_byte_rate`, bytes per second).
    Fetch,
    /// Microseconds spent handling requests (`request_percentage`: percent of one second
    /// per second).
    RequestTime,
    /// Partitions created or deleted (`controller_mutation_rate`, per second).
    ControllerMutation,
}

impl QuotaKind {
    /// The quota key.
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => "producer_byte_rate",
            QuotaKind::Fetch => "consumer_byte_rate",
            QuotaKind::RequestTime => "request_percentage",
            QuotaKind::ControllerMutation => "controller_mutation_rate",
        }
    }

    /// Charged units per second that a quota value allows.
    fn per_second(self, value: f64) -> f64 {
        match self {
            // 1% of a second is 10,000 µs per second.
            QuotaKind::RequestTime => value * 10_000.0,
            _ => value,
        }
    }
}

/// The durable client quotas of one data directory.
pub struct ClientQuotas {
    file: Watched<QuotaFile>,
}

fn invalid(e: std::io::Error) -> BrokerError {
    BrokerError::Io(e)
}

impl ClientQuotas {
    /// Opens the store of `data_dir`.
    pub fn open(data_dir: &Path) -> Result<ClientQuotas> {
        Ok(ClientQuotas {
            file: Watched::open(data_dir, "client-quotas.json", "client quota").map_err(invalid)?,
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
        self.file
            .modify(|f| {
                for (entity, ops) in changes {
                    let e = normalize(entity);
                    let i = match f.entries.iter().position(|q| q.entity == e) {
                        Some(i) => i,
                        None => {
                            f.entries.push(QuotaEntry {
                                entity: e,
                                values: BTreeMap::new(),
                            });
                            f.entries.len() - 1
                        }
                    };
                    for (k, v) in ops {
                        match v {
                            Some(v) => f.entries[i].values.insert(k.clone(), *v),
                            None => f.entries[i].values.remove(k),
                        };
                    }
                }
                f.entries.retain(|q| !q.values.is_empty());
            })
            .map_err(invalid)
    }

    /// The entities matching every component of `filter` (`strict`: and no other entity
    /// type), with their values.
    pub fn describe(
        &self,
        filter: &[(String, QuotaMatch)],
        strict: bool,
    ) -> Vec<(QuotaEntity, Vec<(String, f64)>)> {
        self.file
            .snapshot()
            .entries
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

    /// The `kind` quota of `user` / `client_id` in Kafka's order of precedence, and the
    /// entity it charges (`(user, client-id)` names, `None` where the quota's entity has no
    /// such type).
    pub fn resolve(&self, kind: QuotaKind, user: &str, client_id: &str) -> Option<(f64, Charged)> {
        let file = self.file.snapshot();
        if file.entries.is_empty() {
            return None;
        }
        // (user component, client-id component): Some(Some(n)) a name, Some(None) the
        // default, None absent; Kafka's eight levels.
        let u = Some(user);
        let c = Some(client_id);
        let levels: [(Part, Part); 8] = [
            (Some(u), Some(c)),
            (Some(u), Some(None)),
            (Some(u), None),
            (Some(None), Some(c)),
            (Some(None), Some(None)),
            (Some(None), None),
            (None, Some(c)),
            (None, Some(None)),
        ];
        let key = kind.key();
        for (lu, lc) in levels {
            let found = file.entries.iter().find(|q| {
                let part = |t: &str| {
                    q.entity
                        .iter()
                        .find(|(x, _)| x == t)
                        .map(|(_, n)| n.as_deref())
                };
                part("ip").is_none() && part("user") == lu && part("client-id") == lc
            });
            if let Some(v) = found.and_then(|q| q.values.get(key)) {
                return Some((
                    *v,
                    (
                        lu.map(|_| user.to_string()),
                        lc.map(|_| client_id.to_string()),
                    ),
                ));
            }
        }
        None
    }
}

fn normalize(entity: &QuotaEntity) -> QuotaEntity {
    let mut e = entity.clone();
    e.sort();
    e
}

/// The entities' positions against their rates: when each is free of debt.
#[derive(Default)]
pub(crate) struct Throttles {
    free_at: Mutex<HashMap<(QuotaKind, Charged), Instant>>,
}

impl Broker {
    /// The client quotas of this broker (opened from the data directory at first use).
    pub fn client_quotas(&self) -> Result<&ClientQuotas> {
        if let Some(q) = self.quotas.get() {
            return Ok(q);
        }
        let q = ClientQuotas::open(&self.config().data_dir)?;
        Ok(self.quotas.get_or_init(|| q))
    }

    /// Charges `amount` (in the units of `kind`: bytes, µs, partitions) to the `kind` quota
    /// of `who` (principal and client id); returns how long the request is throttled (zero:
    /// within the quota, or no quota).
    pub fn charge_quota(
        &self,
        kind: QuotaKind,
        who: (&Principal, &str),
        amount: usize,
    ) -> Duration {
        self.quota_delay(kind, who, amount, true)
    }

    /// How long a request of `amount` would be throttled now, without charging it (zero
    /// `amount`: whether the entity is over its quota already, and for how long).
    pub fn quota_wait(&self, kind: QuotaKind, who: (&Principal, &str), amount: usize) -> Duration {
        self.quota_delay(kind, who, amount, false)
    }

    /// Whether a `kind` quota applies to `who` now.
    pub fn has_quota(&self, kind: QuotaKind, (principal, client_id): (&Principal, &str)) -> bool {
        self.client_quotas()
            .is_ok_and(|q| q.resolve(kind, &principal.name, client_id).is_some())
    }

    fn quota_delay(
        &self,
        kind: QuotaKind,
        (principal, client_id): (&Principal, &str),
        bytes: usize,
        charge: bool,
    ) -> Duration {
        let Ok(quotas) = self.client_quotas() else {
            return Duration::ZERO;
        };
        let Some((rate, (user, client))) = quotas.resolve(kind, &principal.name, client_id) else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let cost = Duration::from_secs_f64(bytes as f64 / kind.per_second(rate))
            .min(Duration::from_secs(86_400));
        let mut free_at = self.throttles.free_at.lock();
        let key = (kind, (user, client));
        let credit_floor = now.checked_sub(BURST).unwrap_or(now);
        let start = free_at
            .get(&key)
            .copied()
            .unwrap_or(credit_floor)
            .max(credit_floor);
        let next = start + cost;
        if charge {
            if free_at.len() >= ENTRIES_SOFT_MAX {
                free_at.retain(|_, t| *t > now);
            }
            free_at.insert(key, next);
        }
        next.saturating_duration_since(now).min(MAX_THROTTLE)
    }
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

    #[test]
    fn the_most_specific_quota_wins_and_names_its_entity() {
        let dir = tempfile::tempdir().unwrap();
        let q = ClientQuotas::open(dir.path()).unwrap();
        let set = |entity: QuotaEntity, v: f64| {
            q.alter(&[(entity, vec![("producer_byte_rate".into(), Some(v))])])
                .unwrap()
        };
        set(vec![("client-id".into(), None)], 1.0);
        set(vec![("user".into(), None)], 2.0);
        set(vec![("user".into(), Some("alice".into()))], 3.0);
        set(
            vec![
                ("user".into(), Some("alice".into())),
                ("client-id".into(), Some("app".into())),
            ],
            4.0,
        );
        let r = |u: &str, c: &str| q.resolve(QuotaKind::Produce, u, c);
        assert_eq!(
            r("alice", "app"),
            Some((4.0, (Some("alice".into()), Some("app".into()))))
        );
        assert_eq!(
            r("alice", "other"),
            Some((3.0, (Some("alice".into()), None)))
        );
        // The default user's quota charges each user on their own.
        assert_eq!(r("bob", "x"), Some((2.0, (Some("bob".into()), None))));
        assert_eq!(q.resolve(QuotaKind::Fetch, "alice", "app"), None);
    }

    #[test]
    fn a_rate_is_held_after_a_burst() {
        let dir = tempfile::tempdir().unwrap();
        let broker =
            Broker::open(crate::config::BrokerConfig::new(dir.path().to_path_buf())).unwrap();
        broker
            .client_quotas()
            .unwrap()
            .alter(&[(
                vec![("client-id".into(), Some("p".into()))],
                vec![("producer_byte_rate".into(), Some(1000.0))],
            )])
            .unwrap();
        let anon = Principal::anonymous();
        // One second of burst is free, then each 500 bytes cost half a second.
        assert_eq!(
            broker.charge_quota(QuotaKind::Produce, (&anon, "p"), 1000),
            Duration::ZERO
        );
        let w = broker.quota_wait(QuotaKind::Produce, (&anon, "p"), 500);
        assert!(
            w > Duration::from_millis(450) && w <= Duration::from_millis(500),
            "{w:?}"
        );
        let t = broker.charge_quota(QuotaKind::Produce, (&anon, "p"), 500);
        assert!(t > Duration::from_millis(450), "{t:?}");
        let t2 = broker.charge_quota(QuotaKind::Produce, (&anon, "p"), 500);
        assert!(t2 > Duration::from_millis(950), "{t2:?}");
        // Other clients are not charged; a huge request is throttled at most MAX_THROTTLE.
        assert_eq!(
            broker.charge_quota(QuotaKind::Produce, (&anon, "q"), 1 << 30),
            Duration::ZERO
        );
        assert_eq!(
            broker.charge_quota(QuotaKind::Produce, (&anon, "p"), 1 << 30),
            MAX_THROTTLE
        );
    }

    #[test]
    fn request_time_is_charged_in_microseconds_of_a_percentage() {
        let dir = tempfile::tempdir().unwrap();
        let broker =
            Broker::open(crate::config::BrokerConfig::new(dir.path().to_path_buf())).unwrap();
        broker
            .client_quotas()
            .unwrap()
            .alter(&[(
                vec![("user".into(), None)],
                vec![("request_percentage".into(), Some(10.0))],
            )])
            .unwrap();
        let alice = Principal::user("alice");
        let k = QuotaKind::RequestTime;
        // 10% is 100 ms of handling per second; a second of burst is 100 ms.
        assert_eq!(
            broker.charge_quota(k, (&alice, "c"), 100_000),
            Duration::ZERO
        );
        let t = broker.charge_quota(k, (&alice, "c"), 50_000);
        assert!(
            t > Duration::from_millis(450) && t <= Duration::from_millis(500),
            "{t:?}"
        );
        // The default user's quota is per user.
        let bob = Principal::user("bob");
        assert_eq!(broker.charge_quota(k, (&bob, "c"), 100_000), Duration::ZERO);
    }
}
