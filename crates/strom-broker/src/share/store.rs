//! Durable share-group state: key/value records of an internal log through `strom-log`
//! (`<data-dir>/.strom/share/log-<generation>/`, record batch v2 like every partition),
//! replayed at start, as the classic coordinator stores committed offsets.
//!
//! Records (a key is written again to replace or amend its value; no value = deleted):
//! - type 0, key `group`: the share group exists; value `version u8 = 0, group epoch i32`.
//! - type 1, key `group`: its configs; value `version u8 = 0, count u16`, then `name, value`
//!   (u16 length + UTF-8 each).
//! - type 2, key `group, topic, partition i32`: a share-partition; value `version u8 = 0,
//!   kind u8 (0 snapshot: the whole window; 1 delta: these offsets changed), start offset
//!   i64, run count u32`, then per run `first i64, last i64, state u8, delivery count u16`
//!   (state codes in `state.rs`: acquired records come back available at replay).
//!
//! The log does not grow forever: when it holds `rewrite_after_bytes` more than its last
//! snapshot, the live state is written as snapshots into `log-<generation + 1>`, synced, and
//! the file `current` (written to `current.tmp`, synced, renamed, directory synced) switches
//! to it; the old directory is removed. A crash before the rename leaves the old generation
//! current (the new directory is removed at the next start); after it, the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strom_log::{Log, LogConfig, LogError};

use crate::kvlog::{self, put_str, Reader};

/// One write to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Group {
        group: String,
        epoch: Option<i32>,
    },
    Configs {
        group: String,
        configs: Option<BTreeMap<String, String>>,
    },
    Partition {
        group: String,
        topic: String,
        partition: i32,
        value: Option<PartitionValue>,
    },
}

/// A share-partition's persisted state (a snapshot or a delta).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionValue {
    pub(crate) snapshot: bool,
    pub(crate) spso: i64,
    pub(crate) runs: Vec<(i64, i64, u8, u16)>,
}

pub(crate) struct Store {
    root: PathBuf,
    inner: parking_lot::Mutex<Inner>,
}

struct Inner {
    generation: u64,
    log: Arc<Log>,
    /// The log's size right after its snapshot was written.
    base_bytes: u64,
}

/// Where an append went: flush it with [`Store::flush`].
pub(crate) struct Written {
    generation: u64,
    log: Arc<Log>,
    end: i64,
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        retention_ms: None,
        flush_messages: None,
        max_batch_bytes: 64 << 20,
        ..LogConfig::default()
    }
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Store {
    /// Opens the current generation (removing leftovers of an interrupted rewrite).
    pub(crate) fn open(data_dir: &Path) -> std::io::Result<Store> {
        let root = data_dir.join(".strom").join("share");
        std::fs::create_dir_all(&root)?;
        let current = root.join("current");
        let generation = match std::fs::read_to_string(&current) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| io(format!("{} is not a generation number", current.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let _ = std::fs::remove_file(root.join("current.tmp"));
        for e in std::fs::read_dir(&root)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(g) = name.strip_prefix("log-") {
                if g.parse::<u64>().ok() != Some(generation) {
                    std::fs::remove_dir_all(e.path())?;
                }
            }
        }
        let dir = root.join(format!("log-{generation}"));
        let log = match Log::open(&dir, log_config()) {
            Err(LogError::Damaged(why)) => {
                let aside = root.join(format!("log-{generation}.damaged-{}", strom_log::now_ms()));
                std::fs::rename(&dir, &aside)?;
                tracing::error!(
                    dir = %dir.display(),
                    moved_to = %aside.display(),
                    reason = %why,
                    "the share groups' log is damaged: it was moved aside and the share groups \
                     start empty (their start offsets are lost: they restart from \
                     share.auto.offset.reset; the topics' data is untouched)"
                );
                Log::open(&dir, log_config())
            }
            other => other,
        }
        .map_err(io)?;
        let base_bytes = log.size_bytes();
        Ok(Store {
            root,
            inner: parking_lot::Mutex::new(Inner {
                generation,
                log: Arc::new(log),
                base_bytes,
            }),
        })
    }

    /// Every entry of the current generation, oldest first.
    pub(crate) fn replay(&self) -> std::io::Result<Vec<Entry>> {
        let log = self.inner.lock().log.clone();
        kvlog::replay(&log, "share store", decode_entry)
    }

    /// Appends the entries as one batch (page cache; no sync): cheap enough to call under
    /// the coordinator's lock, so the log's order is the order of the changes.
    pub(crate) fn append(&self, entries: &[Entry]) -> std::io::Result<Option<Written>> {
        if entries.is_empty() {
            return Ok(None);
        }
        let mut batch = build_batch(entries);
        let inner = self.inner.lock();
        let info = inner.log.append(&mut batch).map_err(io)?;
        Ok(Some(Written {
            generation: inner.generation,
            log: inner.log.clone(),
            end: info.last_offset + 1,
        }))
    }

    /// Waits until an append is on disk (group commit: one fdatasync covers every waiter).
    pub(crate) fn flush(&self, w: &Written) -> std::io::Result<()> {
        match w.log.flush_to(w.end) {
            Ok(()) => Ok(()),
            // A rewrite closed that log after syncing a snapshot that includes the change.
            Err(_) if self.inner.lock().generation != w.generation => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// Whether the log has grown enough past its snapshot to be rewritten.
    pub(crate) fn wants_rewrite(&self, after_bytes: u64) -> bool {
        let inner = self.inner.lock();
        inner.log.size_bytes() > inner.base_bytes.saturating_add(after_bytes)
    }

    /// Writes `entries` (the whole live state) as a new generation and switches to it. Called
    /// with the coordinator's lock held, so no change is lost between the snapshot and the
    /// switch.
    pub(crate) fn rewrite(&self, entries: &[Entry]) -> std::io::Result<()> {
        let mut inner = self.inner.lock();
        let next = inner.generation + 1;
        let dir = self.root.join(format!("log-{next}"));
        let _ = std::fs::remove_dir_all(&dir);
        let log = Log::open(&dir, log_config()).map_err(io)?;
        // Batches of about 4 MiB at most (a share-partition's snapshot is ≤ 2000 runs of 19
        // bytes, so one entry always fits).
        let mut from = 0;
        while from < entries.len() {
            let mut to = from;
            let mut bytes = 0usize;
            while to < entries.len() && (to == from || bytes < 4 << 20) {
                bytes += approx_bytes(&entries[to]);
                to += 1;
            }
            let mut batch = build_batch(&entries[from..to]);
            log.append(&mut batch).map_err(io)?;
            from = to;
        }
        log.flush().map_err(io)?;
        let tmp = self.root.join("current.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(next.to_string().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.root.join("current"))?;
        std::fs::File::open(&self.root)?.sync_all()?;
        let old = std::mem::replace(&mut inner.log, Arc::new(log));
        let old_dir = self.root.join(format!("log-{}", inner.generation));
        inner.generation = next;
        inner.base_bytes = inner.log.size_bytes();
        drop(inner);
        let _ = old.flush();
        let _ = old.close();
        if let Err(e) = std::fs::remove_dir_all(&old_dir) {
            tracing::warn!(dir = %old_dir.display(), error = %e, "could not remove the old share log");
        }
        Ok(())
    }

    /// Bytes of the current generation.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.inner.lock().log.size_bytes()
    }

    pub(crate) fn close(&self) {
        let inner = self.inner.lock();
        let _ = inner.log.flush();
        let _ = inner.log.close();
    }
}

// --- encoding ------------------------------------------------------------------------------

fn encode_entry(e: &Entry) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut key = Vec::new();
    match e {
        Entry::Group { group, epoch } => {
            key.push(0);
            put_str(&mut key, group);
            let value = epoch.map(|epoch| {
                let mut v = vec![0u8];
                v.extend_from_slice(&epoch.to_be_bytes());
                v
            });
            (key, value)
        }
        Entry::Configs { group, configs } => {
            key.push(1);
            put_str(&mut key, group);
            let value = configs.as_ref().map(|c| {
                let mut v = vec![0u8];
                v.extend_from_slice(&(c.len().min(u16::MAX as usize) as u16).to_be_bytes());
                for (n, val) in c.iter().take(u16::MAX as usize) {
                    put_str(&mut v, n);
                    put_str(&mut v, val);
                }
                v
            });
            (key, value)
        }
        Entry::Partition {
            group,
            topic,
            partition,
            value,
        } => {
            key.push(2);
            put_str(&mut key, group);
            put_str(&mut key, topic);
            key.extend_from_slice(&partition.to_be_bytes());
            let value = value.as_ref().map(|p| {
                let mut v = Vec::with_capacity(14 + p.runs.len() * 19);
                v.push(0);
                v.push(if p.snapshot { 0 } else { 1 });
                v.extend_from_slice(&p.spso.to_be_bytes());
                v.extend_from_slice(&(p.runs.len() as u32).to_be_bytes());
                for &(first, last, code, dc) in &p.runs {
                    v.extend_from_slice(&first.to_be_bytes());
                    v.extend_from_slice(&last.to_be_bytes());
                    v.push(code);
                    v.extend_from_slice(&dc.to_be_bytes());
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
            let epoch = match value {
                None => None,
                Some(v) => {
                    let mut v = Reader(v);
                    let _version = v.u8()?;
                    Some(v.i32()?)
                }
            };
            Some(Entry::Group { group, epoch })
        }
        1 => {
            let group = k.str()?;
            let configs = match value {
                None => None,
                Some(v) => {
                    let mut v = Reader(v);
                    let _version = v.u8()?;
                    let n = v.u16()?;
                    let mut c = BTreeMap::new();
                    for _ in 0..n {
                        let name = v.str()?;
                        c.insert(name, v.str()?);
                    }
                    Some(c)
                }
            };
            Some(Entry::Configs { group, configs })
        }
        2 => {
            let group = k.str()?;
            let topic = k.str()?;
            let partition = k.i32()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut v = Reader(v);
                    let _version = v.u8()?;
                    let snapshot = v.u8()? == 0;
                    let spso = v.i64()?;
                    let n = v.i32()? as u32 as usize;
                    // Each run is 19 bytes: the count cannot claim more than the value holds.
                    if n > v.0.len() / 19 {
                        return None;
                    }
                    let mut runs = Vec::with_capacity(n);
                    for _ in 0..n {
                        runs.push((v.i64()?, v.i64()?, v.u8()?, v.u16()?));
                    }
                    Some(PartitionValue {
                        snapshot,
                        spso,
                        runs,
                    })
                }
            };
            Some(Entry::Partition {
                group,
                topic,
                partition,
                value,
            })
        }
        _ => None,
    }
}

fn approx_bytes(e: &Entry) -> usize {
    match e {
        Entry::Partition { value: Some(v), .. } => 128 + v.runs.len() * 19,
        Entry::Configs {
            configs: Some(c), ..
        } => 128 + c.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>(),
        _ => 128,
    }
}

fn build_batch(entries: &[Entry]) -> Vec<u8> {
    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = entries.iter().map(encode_entry).collect();
    kvlog::batch(strom_log::now_ms(), &encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Group {
                group: "g".into(),
                epoch: Some(3),
            },
            Entry::Configs {
                group: "g".into(),
                configs: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
            },
            Entry::Partition {
                group: "g".into(),
                topic: "t".into(),
                partition: 2,
                value: Some(PartitionValue {
                    snapshot: false,
                    spso: 7,
                    runs: vec![(7, 9, 1, 1), (12, 12, 2, 3)],
                }),
            },
            Entry::Partition {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: None,
            },
        ]
    }

    #[test]
    fn entries_round_trip_and_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let w = s.append(&sample()).unwrap().unwrap();
            s.flush(&w).unwrap();
            s.close();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.replay().unwrap(), sample());
        let snap = vec![sample()[0].clone()];
        s.rewrite(&snap).unwrap();
        let w = s.append(&sample()[1..2]).unwrap().unwrap();
        s.flush(&w).unwrap();
        s.close();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.replay().unwrap(), sample()[..2].to_vec());
        let root = dir.path().join(".strom").join("share");
        assert!(root.join("log-1").exists() && !root.join("log-0").exists());
    }

    #[test]
    fn an_interrupted_rewrite_leaves_the_old_generation_current() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let w = s.append(&sample()).unwrap().unwrap();
            s.flush(&w).unwrap();
            s.close();
        }
        // A half-written next generation, as a crash before the switch leaves it.
        let root = dir.path().join(".strom").join("share");
        std::fs::create_dir_all(root.join("log-1")).unwrap();
        std::fs::write(root.join("log-1").join("junk"), b"x").unwrap();
        std::fs::write(root.join("current.tmp"), b"1").unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.replay().unwrap(), sample());
        assert!(!root.join("log-1").exists());
    }
}
