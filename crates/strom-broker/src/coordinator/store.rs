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

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strom_log::{Log, LogConfig, LogError};

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
    }
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
