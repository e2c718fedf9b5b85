//! What the cluster keeps in etcd, under one prefix (`/strom/<cluster-name>/`):
//!
//! | key | value | written by |
//! |---|---|---|
//! | `cluster-id` | the cluster's id (the first broker's) | the first broker, create-if-absent |
//! | `brokers/<id>` | [`BrokerRecord`] (JSON), under the broker's lease | the broker itself |
//! | `producer-id-next` | the first producer id not yet handed to a broker | brokers taking a block of 1000, compare-and-put |
//! | `controller` | etcd election: the controller's node id | the elected controller |
//! | `topics/<name>` | [`TopicRecord`] (JSON): id, configs, each partition's replicas, leader, leader epoch and ISR | admin requests (create, delete, grow), the controller (leaders), leaders (ISR) |
//!
//! Every change of a topic record is a transaction that compares the record's
//! `mod_revision` with the one it was read at (and, for the controller, that its election key
//! still exists): two writers never overwrite each other, and a deposed controller writes
//! nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::etcd::{EventKind, Kv};
use strom_broker::cluster::{ClusterMetadata, NodeInfo, TopicAssignment};
use strom_broker::replica::Assignment;

/// A live broker's registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    /// `--node-id`.
    pub id: i32,
    /// Advertised Kafka host.
    pub host: String,
    /// Advertised Kafka port.
    pub port: i32,
    /// `--rack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// One partition's replication state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Every replica, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The leader (-1: none).
    pub leader: i32,
    /// Bumped at each leader change.
    pub leader_epoch: i32,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// A reassignment in progress: the replicas asked for. The controller adds the new
    /// ones to `replicas`, and once all are in sync makes `replicas` this (moving the
    /// leadership if the leader is not among them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<i32>>,
    /// The replicas before the reassignment (a cancellation goes back to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Vec<i32>>,
}

/// A topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// The topic id, 32 hex digits.
    pub id: String,
    /// The partitions, by index.
    pub partitions: Vec<PartitionRecord>,
    /// Config overrides.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// The keys of one cluster.
#[derive(Clone, Debug)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// The keys of cluster `name`.
    pub fn new(name: &str) -> Keys {
        Keys {
            root: format!("/strom/{name}/"),
        }
    }
    /// Every key of the cluster.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// The cluster id.
    pub fn cluster_id(&self) -> String {
        format!("{}cluster-id", self.root)
    }
    /// The prefix of broker registrations.
    pub fn brokers(&self) -> String {
        format!("{}brokers/", self.root)
    }
    /// One broker's registration.
    pub fn broker(&self, id: i32) -> String {
        format!("{}brokers/{id}", self.root)
    }
    /// The prefix of topic records.
    pub fn topics(&self) -> String {
        format!("{}topics/", self.root)
    }
    /// One topic's record.
    pub fn topic(&self, name: &str) -> String {
        format!("{}topics/{name}", self.root)
    }
    /// The next free producer id (blocks are taken by compare-and-put).
    pub fn producer_ids(&self) -> String {
        format!("{}producer-id-next", self.root)
    }
    /// The controller election.
    pub fn controller(&self) -> String {
        format!("{}controller", self.root)
    }
}

/// Hex of a topic id.
pub fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A topic id from its hex form.
pub fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The raw state read from etcd: records with their mod revisions (for compare-and-put).
#[derive(Clone, Debug, Default)]
pub struct Raw {
    /// The cluster id.
    pub cluster_id: String,
    /// Live brokers.
    pub brokers: BTreeMap<i32, BrokerRecord>,
    /// Topics with the mod revision of their record.
    pub topics: BTreeMap<String, (TopicRecord, i64)>,
    /// The controller's node id (-1: none).
    pub controller: i32,
    /// The revision the state is at.
    pub revision: i64,
}

impl Raw {
    /// Applies one key's put or delete (of the initial read, or of the watch) under `keys`;
    /// returns whether it was the controller election's (whose leader must be asked again).
    /// A record that does not parse is skipped with a warning.
    pub fn apply(&mut self, keys: &Keys, kind: EventKind, kv: &Kv) -> bool {
        let key = String::from_utf8_lossy(&kv.key);
        self.revision = self.revision.max(kv.mod_revision);
        if key.starts_with(&keys.controller()) {
            return true;
        }
        if let Some(id) = key.strip_prefix(&keys.brokers()) {
            match kind {
                EventKind::Put => match serde_json::from_slice::<BrokerRecord>(&kv.value) {
                    Ok(b) => {
                        self.brokers.insert(b.id, b);
                    }
                    Err(e) => tracing::warn!(key = %key, error = %e, "broker record skipped"),
                },
                EventKind::Delete => {
                    if let Ok(id) = id.parse::<i32>() {
                        self.brokers.remove(&id);
                    }
                }
            }
        } else if let Some(name) = key.strip_prefix(&keys.topics()) {
            match kind {
                EventKind::Put => match serde_json::from_slice::<TopicRecord>(&kv.value) {
                    Ok(t) => {
                        self.topics.insert(name.to_string(), (t, kv.mod_revision));
                    }
                    Err(e) => tracing::warn!(key = %key, error = %e, "topic record skipped"),
                },
                EventKind::Delete => {
                    self.topics.remove(name);
                }
            }
        }
        false
    }

    /// The snapshot the doors see.
    pub fn metadata(&self) -> ClusterMetadata {
        ClusterMetadata {
            cluster_id: self.cluster_id.clone(),
            controller: self.controller,
            brokers: self
                .brokers
                .values()
                .map(|b| NodeInfo {
                    id: b.id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                })
                .collect(),
            topics: self
                .topics
                .iter()
                .filter_map(|(name, (t, _))| {
                    Some((
                        name.clone(),
                        TopicAssignment {
                            id: unhex(&t.id)?,
                            partitions: t.partitions.iter().map(assignment).collect(),
                            targets: t.partitions.iter().map(|p| p.target.clone()).collect(),
                            configs: t.configs.clone(),
                        },
                    ))
                })
                .collect(),
            revision: self.revision,
        }
    }
}

/// The core's view of a partition record.
pub fn assignment(p: &PartitionRecord) -> Assignment {
    Assignment {
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
    }
}

/// Replicas for `count` new partitions starting at index `first`, `rf` each, over `brokers`
/// (id, rack): rack-aware round robin. Brokers are ordered so that consecutive ones are on
/// different racks where possible (one of each rack in turn); partition `i`'s replicas are
/// `rf` consecutive brokers of that order from a start that moves by one per partition, so
/// leaders (the first replica) spread evenly and, with as many racks as replicas, each
/// replica of a partition is on its own rack.
pub fn place(
    brokers: &[(i32, Option<String>)],
    first: usize,
    count: usize,
    rf: usize,
) -> Vec<Vec<i32>> {
    let mut by_rack: BTreeMap<Option<String>, Vec<i32>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(rack.clone()).or_default().push(*id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut order = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while order.len() < brokers.len() {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(round) {
                order.push(*id);
            }
        }
        round += 1;
    }
    let n = order.len();
    (first..first + count)
        .map(|i| (0..rf).map(|j| order[(i + j) % n]).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_leaders_and_racks() {
        let brokers = vec![
            (1, Some("a".to_string())),
            (2, Some("a".to_string())),
            (3, Some("b".to_string())),
            (4, Some("b".to_string())),
        ];
        let p = place(&brokers, 0, 4, 2);
        let leaders: Vec<i32> = p.iter().map(|r| r[0]).collect();
        let mut sorted = leaders.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            vec![1, 2, 3, 4],
            "each broker leads one partition: {p:?}"
        );
        let rack = |id: i32| brokers.iter().find(|b| b.0 == id).unwrap().1.clone();
        for r in &p {
            assert_ne!(rack(r[0]), rack(r[1]), "replicas on two racks: {p:?}");
            assert_ne!(r[0], r[1]);
        }
        let three = place(&[(1, None), (2, None), (3, None)], 0, 3, 3);
        for r in &three {
            let mut s = r.clone();
            s.sort_unstable();
            assert_eq!(s, vec![1, 2, 3]);
        }
    }

    #[test]
    fn topic_ids_round_trip_through_hex() {
        let id = [7u8, 0, 255, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(unhex(&hex(&id)), Some(id));
        assert_eq!(unhex("xyz"), None);
    }
}
