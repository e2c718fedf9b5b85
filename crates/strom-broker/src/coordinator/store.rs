//! Durable group state: committed offsets and group metadata, written as records of an
//! internal log (`<data-dir>/.strom/groups/`, record batch v2 like every partition, one
//! fdatasync per write) and replayed at start. A key is written again to replace its value;
//! a record without a value (tombstone) deletes it, as in Kafka's `__consumer_offsets`.
//!
//! Key: `type u8` then `group` (u16 length + UTF-8); type 0 (offset) adds `topic` (u16 + UTF-8)
//! and `partition i32`; type 1 is the group's metadata.
//! Offset value: `version u8 = 0, offset i64, leader_epoch i32, commit_timestamp i64,
//! metadata (i32 length, -1 = null)`.
//! Group value: `version u8 = 0, generation i32, protocol_type, protocol, leader (u16 + UTF-8
//! each), member count u32`, then per member `id, instance id (i16 length, -1 = null),
//! client id, client host, session timeout i32, rebalance timeout i32, metadata (u32 + bytes),
//! assignment (u32 + bytes)`.
//!
//! KIP-848 consumer groups (as Kafka's ConsumerGroupMetadata and ConsumerGroupMember
//! records, the member's target assignment in its own record): type 2 is a consumer group's
//! metadata, value `version u8 = 0, group epoch i32, assignment epoch i32, assignor`; type 3
//! adds `member id` and is a member, value `version u8 = 0, instance id, rack (nullable),
//! client id, client host, rebalance timeout i32, topics (u32 count + strings), regex
//! (nullable), assignor (nullable), epoch i32, previous epoch i32, state u8, left static u8,
//! assigned, revoking, target` (each: u32 topic count, per topic name + u32 count + i32s).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strom_log::{Log, LogConfig, LogError};

use super::assignor::Assignment;
use crate::kvlog::{self, put_bytes, put_opt_str, put_str, Reader};

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The offset (the next record to consume).
    pub offset: i64,
    /// Leader epoch of the record before it, -1 if unknown.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: Option<String>,
    /// When it was committed (ms).
    pub timestamp: i64,
}

/// A member as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredMember {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout_ms: i32,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) metadata: Bytes,
    pub(crate) assignment: Bytes,
}

/// A group's metadata as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredGroup {
    pub(crate) generation: i32,
    pub(crate) protocol_type: String,
    pub(crate) protocol: String,
    pub(crate) leader: String,
    pub(crate) members: Vec<StoredMember>,
}

/// A consumer group's metadata as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredConsumerGroup {
    pub(crate) epoch: i32,
    pub(crate) assignment_epoch: i32,
    pub(crate) assignor: String,
}

/// A consumer group member as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredConsumerMember {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) rack: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) topics: Vec<String>,
    pub(crate) regex: Option<String>,
    pub(crate) assignor: Option<String>,
    pub(crate) epoch: i32,
    pub(crate) previous_epoch: i32,
    pub(crate) state: u8,
    pub(crate) left_static: bool,
    pub(crate) assigned: Assignment,
    pub(crate) revoking: Assignment,
    pub(crate) target: Assignment,
    /// A classic-protocol member: its session timeout (0: a consumer-protocol member).
    pub(crate) classic_session_timeout_ms: i32,
    /// A classic-protocol member: the protocol it joined with.
    pub(crate) classic_protocol: Option<String>,
}

/// One write to the store.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<Committed>,
    },
    Group {
        group: String,
        value: Option<StoredGroup>,
    },
    ConsumerGroup {
        group: String,
        value: Option<StoredConsumerGroup>,
    },
    ConsumerMember {
        group: String,
        member: String,
        value: Option<Box<StoredConsumerMember>>,
    },
}

/// The internal log.
pub(crate) struct Store {
    /// Shared with the log cleaner, which compacts it (keys replace each other, tombstones
    /// delete: Kafka's `__consumer_offsets`).
    log: Arc<Log>,
}

impl Store {
    /// `segment_bytes`: `offsets.topic.segment.bytes` (the cleaner compacts sealed segments).
    pub(crate) fn open(data_dir: &Path, segment_bytes: u64) -> std::io::Result<Store> {
        let config = LogConfig {
            segment_bytes,
            retention_ms: None,
            flush_messages: Some(1),
            max_batch_bytes: 16 << 20,
            ..LogConfig::default()
        };
        let dir = data_dir.join(".strom").join("groups");
        let log = match Log::open(&dir, config) {
            // Damage that would lose or renumber records: the broker still starts, without
            // the groups' committed offsets (consumers fall back to auto.offset.reset), and
            // the damaged log is kept aside for the operator.
            Err(LogError::Damaged(why)) => {
                let aside = aside_name(&dir);
                std::fs::rename(&dir, &aside)?;
                tracing::error!(
                    dir = %dir.display(),
                    moved_to = %aside.display(),
                    reason = %why,
                    "the consumer groups' log is damaged: it was moved aside and the groups start \
                     empty (committed offsets are lost: consumers restart from auto.offset.reset; \
                     the topics' data is untouched)"
                );
                Log::open(&dir, config)
            }
            other => other,
        }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Store { log: Arc::new(log) })
    }

    /// The internal log, for the cleaner.
    pub(crate) fn log(&self) -> Arc<Log> {
        self.log.clone()
    }

    /// Every entry in the log, oldest first.
    pub(crate) fn replay(&self) -> std::io::Result<Vec<Entry>> {
        kvlog::replay(&self.log, "group store", decode_entry)
    }

    /// Appends the entries as one batch and waits until it is on disk.
    pub(crate) fn write(&self, entries: &[Entry]) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = entries.iter().map(encode_entry).collect();
        let mut batch = kvlog::batch(strom_log::now_ms(), &records);
        let info = self
            .log
            .append(&mut batch)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.log
            .flush_to(info.last_offset + 1)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    pub(crate) fn close(&self) {
        let _ = self.log.flush();
        let _ = self.log.close();
    }
}

/// `<dir>.damaged`, or `.damaged.1`, ... if taken.
fn aside_name(dir: &Path) -> std::path::PathBuf {
    (0..)
        .map(|n| {
            let mut name = dir.as_os_str().to_os_string();
            name.push(if n == 0 {
                ".damaged".to_string()
            } else {
                format!(".damaged.{n}")
            });
            std::path::PathBuf::from(name)
        })
        .find(|p| !p.exists())
        .expect("a free name")
}

// --- encoding ------------------------------------------------------------------------------

fn encode_entry(e: &Entry) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut key = Vec::new();
    match e {
        Entry::Offset {
            group,
            topic,
            partition,
            value,
        } => {
            key.push(0);
            put_str(&mut key, group);
            put_str(&mut key, topic);
            key.extend_from_slice(&partition.to_be_bytes());
            let value = value.as_ref().map(|c| {
                let mut v = vec![0u8];
                v.extend_from_slice(&c.offset.to_be_bytes());
                v.extend_from_slice(&c.leader_epoch.to_be_bytes());
                v.extend_from_slice(&c.timestamp.to_be_bytes());
                match &c.metadata {
                    None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(m) => {
                        v.extend_from_slice(&(m.len() as i32).to_be_bytes());
                        v.extend_from_slice(m.as_bytes());
                    }
                }
                v
            });
            (key, value)
        }
        Entry::Group { group, value } => {
            key.push(1);
            put_str(&mut key, group);
            let value = value.as_ref().map(|g| {
                let mut v = vec![0u8];
                v.extend_from_slice(&g.generation.to_be_bytes());
                put_str(&mut v, &g.protocol_type);
                put_str(&mut v, &g.protocol);
                put_str(&mut v, &g.leader);
                v.extend_from_slice(&(g.members.len() as u32).to_be_bytes());
                for m in &g.members {
                    put_str(&mut v, &m.id);
                    put_opt_str(&mut v, m.instance_id.as_deref());
                    put_str(&mut v, &m.client_id);
                    put_str(&mut v, &m.client_host);
                    v.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
                    v.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
                    put_bytes(&mut v, &m.metadata);
                    put_bytes(&mut v, &m.assignment);
                }
                v
            });
            (key, value)
        }
        Entry::ConsumerGroup { group, value } => {
            key.push(2);
            put_str(&mut key, group);
            let value = value.as_ref().map(|g| {
                let mut v = vec![0u8];
                v.extend_from_slice(&g.epoch.to_be_bytes());
                v.extend_from_slice(&g.assignment_epoch.to_be_bytes());
                put_str(&mut v, &g.assignor);
                v
            });
            (key, value)
        }
        Entry::ConsumerMember {
            group,
            member,
            value,
        } => {
            key.push(3);
            put_str(&mut key, group);
            put_str(&mut key, member);
            let value = value.as_ref().map(|m| {
                let mut v = vec![0u8];
                put_opt_str(&mut v, m.instance_id.as_deref());
                put_opt_str(&mut v, m.rack.as_deref());
                put_str(&mut v, &m.client_id);
                put_str(&mut v, &m.client_host);
                v.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
                v.extend_from_slice(&(m.topics.len() as u32).to_be_bytes());
                for t in &m.topics {
                    put_str(&mut v, t);
                }
                put_opt_str(&mut v, m.regex.as_deref());
                put_opt_str(&mut v, m.assignor.as_deref());
                v.extend_from_slice(&m.epoch.to_be_bytes());
                v.extend_from_slice(&m.previous_epoch.to_be_bytes());
                v.push(m.state);
                v.push(u8::from(m.left_static));
                for a in [&m.assigned, &m.revoking, &m.target] {
                    put_assignment(&mut v, a);
                }
                v.extend_from_slice(&m.classic_session_timeout_ms.to_be_bytes());
                put_opt_str(&mut v, m.classic_protocol.as_deref());
                v
            });
            (key, value)
        }
    }
}

fn put_assignment(v: &mut Vec<u8>, a: &Assignment) {
    v.extend_from_slice(&(a.len() as u32).to_be_bytes());
    for (t, ps) in a {
        put_str(v, t);
        v.extend_from_slice(&(ps.len() as u32).to_be_bytes());
        for p in ps {
            v.extend_from_slice(&p.to_be_bytes());
        }
    }
}

fn read_assignment(r: &mut Reader<'_>) -> Option<Assignment> {
    let n = r.i32()? as u32;
    let mut a = Assignment::new();
    for _ in 0..n {
        let t = r.str()?;
        let k = r.i32()? as u32;
        let mut ps = std::collections::BTreeSet::new();
        for _ in 0..k {
            ps.insert(r.i32()?);
        }
        a.insert(t, ps);
    }
    Some(a)
}

fn decode_consumer_member(v: &[u8]) -> Option<StoredConsumerMember> {
    let mut v = Reader(v);
    let _version = v.u8()?;
    let instance_id = v.opt_str()?;
    let rack = v.opt_str()?;
    let client_id = v.str()?;
    let client_host = v.str()?;
    let rebalance_timeout_ms = v.i32()?;
    let n = v.i32()? as u32;
    let mut topics = Vec::new();
    for _ in 0..n {
        topics.push(v.str()?);
    }
    let regex = v.opt_str()?;
    let assignor = v.opt_str()?;
    let epoch = v.i32()?;
    let previous_epoch = v.i32()?;
    let state = v.u8()?;
    let left_static = v.u8()? != 0;
    let assigned = read_assignment(&mut v)?;
    let revoking = read_assignment(&mut v)?;
    let target = read_assignment(&mut v)?;
    let classic_session_timeout_ms = v.i32()?;
    let classic_protocol = v.opt_str()?;
    Some(StoredConsumerMember {
        id: String::new(),
        instance_id,
        rack,
        client_id,
        client_host,
        rebalance_timeout_ms,
        topics,
        regex,
        assignor,
        epoch,
        previous_epoch,
        state,
        left_static,
        assigned,
        revoking,
        target,
        classic_session_timeout_ms,
        classic_protocol,
    })
}

fn decode_entry(key: &[u8], value: Option<&[u8]>) -> Option<Entry> {
    let mut k = Reader(key);
    match k.u8()? {
        0 => {
            let group = k.str()?;
            let topic = k.str()?;
            let partition = k.i32()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut v = Reader(v);
                    let _version = v.u8()?;
                    let offset = v.i64()?;
                    let leader_epoch = v.i32()?;
                    let timestamp = v.i64()?;
                    let n = v.i32()?;
                    let metadata = if n < 0 {
                        None
                    } else {
                        Some(String::from_utf8(v.take(n as usize)?.to_vec()).ok()?)
                    };
                    Some(Committed {
                        offset,
                        leader_epoch,
                        metadata,
                        timestamp,
                    })
                }
            };
            Some(Entry::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        1 => {
            let group = k.str()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut v = Reader(v);
                    let _version = v.u8()?;
                    let generation = v.i32()?;
                    let protocol_type = v.str()?;
                    let protocol = v.str()?;
                    let leader = v.str()?;
                    let n = v.i32()? as u32;
                    let mut members = Vec::new();
                    for _ in 0..n {
                        members.push(StoredMember {
                            id: v.str()?,
                            instance_id: v.opt_str()?,
                            client_id: v.str()?,
                            client_host: v.str()?,
                            session_timeout_ms: v.i32()?,
                            rebalance_timeout_ms: v.i32()?,
                            metadata: v.bytes()?,
                            assignment: v.bytes()?,
                        });
                    }
                    Some(StoredGroup {
                        generation,
                        protocol_type,
                        protocol,
                        leader,
                        members,
                    })
                }
            };
            Some(Entry::Group { group, value })
        }
        2 => {
            let group = k.str()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut v = Reader(v);
                    let _version = v.u8()?;
                    Some(StoredConsumerGroup {
                        epoch: v.i32()?,
                        assignment_epoch: v.i32()?,
                        assignor: v.str()?,
                    })
                }
            };
            Some(Entry::ConsumerGroup { group, value })
        }
        3 => {
            let group = k.str()?;
            let member = k.str()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut m = decode_consumer_member(v)?;
                    m.id = member.clone();
                    Some(Box::new(m))
                }
            };
            Some(Entry::ConsumerMember {
                group,
                member,
                value,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let group = StoredGroup {
            generation: 3,
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            leader: "m1".into(),
            members: vec![StoredMember {
                id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                metadata: Bytes::from_static(b"meta"),
                assignment: Bytes::from_static(b"assign"),
            }],
        };
        let committed = Committed {
            offset: 42,
            leader_epoch: 0,
            metadata: Some("hello".into()),
            timestamp: 7,
        };
        {
            let s = Store::open(dir.path(), 64 << 20).unwrap();
            s.write(&[
                Entry::Offset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 1,
                    value: Some(committed.clone()),
                },
                Entry::Group {
                    group: "g".into(),
                    value: Some(group.clone()),
                },
            ])
            .unwrap();
            s.write(&[Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 2,
                value: None,
            }])
            .unwrap();
            s.close();
        }
        let s = Store::open(dir.path(), 64 << 20).unwrap();
        let entries = s.replay().unwrap();
        assert_eq!(entries.len(), 3);
        assert!(
            matches!(&entries[0], Entry::Offset { value: Some(c), partition: 1, .. } if *c == committed)
        );
        assert!(matches!(&entries[1], Entry::Group { value: Some(g), .. } if *g == group));
        assert!(matches!(
            &entries[2],
            Entry::Offset {
                value: None,
                partition: 2,
                ..
            }
        ));
    }

    #[test]
    fn consumer_group_records_round_trip_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let part = |t: &str, ps: &[i32]| -> Assignment {
            [(t.to_string(), ps.iter().copied().collect())]
                .into_iter()
                .collect()
        };
        let member = StoredConsumerMember {
            id: "m1".into(),
            instance_id: Some("i1".into()),
            rack: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 30_000,
            topics: vec!["a".into(), "b".into()],
            regex: Some("^pre.*".into()),
            assignor: Some("range".into()),
            epoch: 4,
            previous_epoch: 3,
            state: 1,
            left_static: true,
            assigned: part("a", &[0, 2]),
            revoking: part("b", &[1]),
            target: part("a", &[0, 1, 2]),
            classic_session_timeout_ms: 10_000,
            classic_protocol: Some("range".into()),
        };
        let group = StoredConsumerGroup {
            epoch: 5,
            assignment_epoch: 5,
            assignor: "range".into(),
        };
        {
            let s = Store::open(dir.path(), 64 << 20).unwrap();
            s.write(&[
                Entry::ConsumerGroup {
                    group: "g".into(),
                    value: Some(group.clone()),
                },
                Entry::ConsumerMember {
                    group: "g".into(),
                    member: "m1".into(),
                    value: Some(Box::new(member.clone())),
                },
                Entry::ConsumerMember {
                    group: "g".into(),
                    member: "m0".into(),
                    value: None,
                },
            ])
            .unwrap();
            s.close();
        }
        let entries = Store::open(dir.path(), 64 << 20).unwrap().replay().unwrap();
        assert!(matches!(&entries[0], Entry::ConsumerGroup { value: Some(g), .. } if *g == group));
        assert!(
            matches!(&entries[1], Entry::ConsumerMember { value: Some(m), .. } if **m == member)
        );
        assert!(
            matches!(&entries[2], Entry::ConsumerMember { member, value: None, .. } if member == "m0")
        );
    }

    #[test]
    fn a_damaged_groups_log_is_moved_aside_and_the_groups_start_empty() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 64 << 20).unwrap();
            s.write(&[Entry::Group {
                group: "g".into(),
                value: None,
            }])
            .unwrap();
            s.close();
        }
        let groups = dir.path().join(".strom").join("groups");
        std::fs::remove_file(groups.join(format!("{:020}.log", 0))).unwrap();
        let s = Store::open(dir.path(), 64 << 20).unwrap();
        assert!(s.replay().unwrap().is_empty());
        let aside = dir.path().join(".strom").join("groups.damaged");
        assert!(
            aside.join(format!("{:020}.index", 0)).exists(),
            "kept aside"
        );
    }
}
