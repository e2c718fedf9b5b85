//! Durable transaction state: one record per transactional id in an internal log
//! (`<data-dir>/.strom/txn/`, record batch v2, replayed at start; a write waits for its
//! fdatasync unless it is an Ongoing state, see [`super`]),
//! written like the group store (`coordinator/store.rs`) with the encodings of `kvlog`.
//! The newest record of a key is the transaction's state, so the log is compacted by the
//! broker's log cleaner (registered by `TxnCoordinator::open` as `.strom/txn`, as Kafka compacts
//! `__transaction_state`): it keeps one record per transactional id instead of growing by one
//! per state change.
//!
//! Key: `type u8 = 0`, then the transactional id (u16 length + UTF-8).
//! Value: `version u8 = 0, producer_id i64, producer_epoch i16, last_epoch i16,
//! timeout_ms i32, state u8, start_ms i64, updated_ms i64, v2 u8`, then the partitions
//! (`u32` count, each topic u16 + UTF-8 and `partition i32`), the groups (`u32` count, each
//! u16 + UTF-8) and the pending transactional offsets (`u32` count, each group, topic,
//! `partition i32, offset i64, leader_epoch i32`, metadata i16 length, -1 = null).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use strom_log::{Log, LogConfig};

use super::{PendingOffset, TxnMeta, TxnState};
use crate::kvlog::{self, put_opt_str, put_str, Reader};

pub(crate) struct Store {
    log: Arc<Log>,
}

/// The store's segment size (the cleaner compacts sealed segments only).
const SEGMENT_BYTES: u64 = 64 << 20;

impl Store {
    pub(crate) fn open(data_dir: &Path) -> std::io::Result<Store> {
        Store::open_with(data_dir, SEGMENT_BYTES)
    }

    /// [`Store::open`] with segments of `segment_bytes` (tests roll segments sooner).
    pub(crate) fn open_with(data_dir: &Path, segment_bytes: u64) -> std::io::Result<Store> {
        let config = LogConfig {
            segment_bytes,
            retention_ms: None,
            flush_messages: Some(1),
            max_batch_bytes: 16 << 20,
            ..LogConfig::default()
        };
        let dir = data_dir.join(".strom").join("txn");
        let log = Log::open(&dir, config).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Store { log: Arc::new(log) })
    }

    /// The internal log, for the log cleaner.
    pub(crate) fn log(&self) -> Arc<Log> {
        self.log.clone()
    }

    /// Every transaction's newest state.
    pub(crate) fn replay(&self) -> std::io::Result<Vec<TxnMeta>> {
        let all = kvlog::replay(&self.log, "transaction store", decode)?;
        let mut latest: BTreeMap<String, TxnMeta> = BTreeMap::new();
        for m in all {
            latest.insert(m.transactional_id.clone(), m);
        }
        Ok(latest.into_values().collect())
    }

    /// Writes the states as one batch and waits until it is on disk.
    pub(crate) fn write(&self, metas: &[&TxnMeta]) -> std::io::Result<()> {
        self.write_with(metas, true)
    }

    /// Writes the states as one batch; with `sync`, waits until it is on disk, else leaves
    /// it in the page cache (it survives a kill of the process, and the next synced write
    /// flushes it too, in order).
    pub(crate) fn write_with(&self, metas: &[&TxnMeta], sync: bool) -> std::io::Result<()> {
        if metas.is_empty() {
            return Ok(());
        }
        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = metas.iter().map(|m| encode(m)).collect();
        let batch = kvlog::batch(strom_log::now_ms(), &records);
        let err = |e: strom_log::LogError| std::io::Error::other(e.to_string());
        if !sync {
            return self
                .log
                .append_shared_unsynced(&batch)
                .map(|_| ())
                .map_err(err);
        }
        let info = self.log.append_shared(&batch).map_err(err)?;
        self.log.flush_to(info.last_offset + 1).map_err(err)
    }

    pub(crate) fn close(&self) {
        let _ = self.log.flush();
        let _ = self.log.close();
    }
}

fn state_byte(s: TxnState) -> u8 {
    match s {
        TxnState::Empty => 0,
        TxnState::Ongoing => 1,
        TxnState::PrepareCommit => 2,
        TxnState::PrepareAbort => 3,
        TxnState::CompleteCommit => 4,
        TxnState::CompleteAbort => 5,
    }
}

fn byte_state(b: u8) -> Option<TxnState> {
    Some(match b {
        0 => TxnState::Empty,
        1 => TxnState::Ongoing,
        2 => TxnState::PrepareCommit,
        3 => TxnState::PrepareAbort,
        4 => TxnState::CompleteCommit,
        5 => TxnState::CompleteAbort,
        _ => return None,
    })
}

pub(crate) fn encode(m: &TxnMeta) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut key = vec![0u8];
    put_str(&mut key, &m.transactional_id);
    let mut v = vec![0u8];
    v.extend_from_slice(&m.producer_id.to_be_bytes());
    v.extend_from_slice(&m.producer_epoch.to_be_bytes());
    v.extend_from_slice(&m.last_epoch.to_be_bytes());
    v.extend_from_slice(&m.timeout_ms.to_be_bytes());
    v.push(state_byte(m.state));
    v.extend_from_slice(&m.start_ms.to_be_bytes());
    v.extend_from_slice(&m.updated_ms.to_be_bytes());
    v.push(m.v2 as u8);
    v.extend_from_slice(&(m.partitions.len() as u32).to_be_bytes());
    for (t, p) in &m.partitions {
        put_str(&mut v, t);
        v.extend_from_slice(&p.to_be_bytes());
    }
    v.extend_from_slice(&(m.groups.len() as u32).to_be_bytes());
    for g in &m.groups {
        put_str(&mut v, g);
    }
    v.extend_from_slice(&(m.offsets.len() as u32).to_be_bytes());
    for ((g, t, p), o) in &m.offsets {
        put_str(&mut v, g);
        put_str(&mut v, t);
        v.extend_from_slice(&p.to_be_bytes());
        v.extend_from_slice(&o.offset.to_be_bytes());
        v.extend_from_slice(&o.leader_epoch.to_be_bytes());
        put_opt_str(&mut v, o.metadata.as_deref());
    }
    (key, Some(v))
}

pub(crate) fn decode(key: &[u8], value: Option<&[u8]>) -> Option<TxnMeta> {
    let mut k = Reader(key);
    if k.u8()? != 0 {
        return None;
    }
    let transactional_id = k.str()?;
    let mut r = Reader(value?);
    if r.u8()? != 0 {
        return None;
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let last_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = byte_state(r.u8()?)?;
    let start_ms = r.i64()?;
    let updated_ms = r.i64()?;
    let v2 = r.u8()? != 0;
    let mut partitions = BTreeSet::new();
    for _ in 0..r.i32()? {
        let t = r.str()?;
        partitions.insert((t, r.i32()?));
    }
    let mut groups = BTreeSet::new();
    for _ in 0..r.i32()? {
        groups.insert(r.str()?);
    }
    let mut offsets = BTreeMap::new();
    for _ in 0..r.i32()? {
        let g = r.str()?;
        let t = r.str()?;
        let p = r.i32()?;
        let offset = r.i64()?;
        let leader_epoch = r.i32()?;
        let metadata = r.opt_str()?;
        offsets.insert(
            (g, t, p),
            PendingOffset {
                offset,
                leader_epoch,
                metadata,
            },
        );
    }
    Some(TxnMeta {
        transactional_id,
        producer_id,
        producer_epoch,
        last_epoch,
        timeout_ms,
        state,
        start_ms,
        updated_ms,
        v2,
        partitions,
        groups,
        offsets,
    })
}
