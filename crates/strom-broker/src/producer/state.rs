//! One partition's producer state: check before append, record after, snapshot and rebuild.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use strom_log::{
    batch_headers, control_marker, AbortedRange, AppendInfo, BatchHeader, ControlMarker, Log,
};

/// Batches remembered per producer and partition, as Kafka keeps (and as clients rely on:
/// at most five in-flight requests per connection with idempotence).
pub const BATCHES_KEPT: usize = 5;
/// Kafka's `producer.id.expiration.ms` default: one day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;

const SNAPSHOT_MAGIC: &[u8; 4] = b"SPS1";
/// Version 2 adds per producer the coordinator epoch and the ongoing transaction's first
/// offset; version 1 snapshots are still read (no transaction).
const SNAPSHOT_VERSION: u16 = 2;
/// Bytes read per step when replaying the log tail.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// Sequence numbers and offsets of one stored batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceRange {
    /// Sequence of the batch's first record.
    pub first_seq: i32,
    /// Sequence of the batch's last record.
    pub last_seq: i32,
    /// Offset of the batch's first record.
    pub first_offset: i64,
    /// Offset of the batch's last record.
    pub last_offset: i64,
}

/// What a partition knows of one producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    /// Current epoch; older epochs are fenced.
    pub epoch: i16,
    /// The last [`BATCHES_KEPT`] batches, oldest first.
    pub batches: VecDeque<SequenceRange>,
    /// When the producer last wrote here (ms), for expiration.
    pub last_timestamp: i64,
    /// Epoch of the transaction coordinator that wrote the producer's last marker (-1: none).
    pub coordinator_epoch: i32,
    /// First offset of the producer's ongoing transaction here, if one is open.
    pub txn_first_offset: Option<i64>,
}

/// One producer as DescribeProducers shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerInfo {
    /// The producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub producer_epoch: i16,
    /// The last sequence number stored here (-1 if none).
    pub last_sequence: i32,
    /// When it last wrote here (ms).
    pub last_timestamp: i64,
    /// The coordinator epoch of its last marker (-1 if none).
    pub coordinator_epoch: i32,
    /// First offset of its ongoing transaction (-1 if none).
    pub current_txn_start_offset: i64,
}

/// The verdict on a record set before it is appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchCheck {
    /// Append it.
    New,
    /// Already stored: acknowledge with these offsets and write nothing.
    Duplicate {
        /// Offset of the original batch's first record.
        first_offset: i64,
        /// Offset of the original batch's last record.
        last_offset: i64,
    },
}

/// Why a producer's batch is refused. Nothing is written.
#[derive(Debug, thiserror::Error)]
pub enum ProducerStateError {
    /// A gap or a reorder in the producer's sequence numbers.
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence that would have been accepted.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// The batch carries an epoch older than the producer's current one.
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The current epoch.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
    /// A producer id this broker never issued (or whose state expired).
    #[error("unknown producer id {0}")]
    UnknownProducerId(i64),
    /// A record set mixing producers inconsistently.
    #[error("invalid producer batch: {0}")]
    InvalidBatch(String),
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

fn last_seq(h: &BatchHeader) -> i32 {
    ((i64::from(h.base_sequence) + i64::from(h.last_offset_delta)) % (i64::from(i32::MAX) + 1))
        as i32
}

fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && h.base_sequence >= 0 && !h.is_control()
}

/// One partition's producers. Not internally locked: the partition holds it under the same
/// lock as its appends.
pub struct PartitionProducers {
    dir: PathBuf,
    producers: HashMap<i64, ProducerEntry>,
    segments_seen: usize,
    /// Ongoing transactions: first offset → producer id. The smallest key is the last
    /// stable offset.
    ongoing: BTreeMap<i64, i64>,
    /// The smallest key of `ongoing` (-1: none), for readers that do not take the lock.
    unstable: Arc<AtomicI64>,
}

impl PartitionProducers {
    /// Rebuilds the state of the log in `log.dir()`: the newest valid snapshot at or below
    /// the log end, then the batch headers after it.
    pub fn load(log: &Log) -> io::Result<PartitionProducers> {
        let dir = log.dir().to_path_buf();
        let end = log.log_end_offset();
        remove_temp_snapshots(&dir)?;
        let mut snapshots = list_snapshots(&dir)?;
        snapshots.sort_unstable_by(|a, b| b.cmp(a));
        let mut state = PartitionProducers {
            dir: dir.clone(),
            producers: HashMap::new(),
            segments_seen: log.segment_count(),
            ongoing: BTreeMap::new(),
            unstable: Arc::new(AtomicI64::new(-1)),
        };
        let mut from = log.log_start_offset();
        for offset in snapshots {
            if offset > end {
                // Written before a truncation: stale.
                let _ = fs::remove_file(snapshot_path(&dir, offset));
                continue;
            }
            if let Some(producers) = read_snapshot(&snapshot_path(&dir, offset)) {
                state.producers = producers;
                state.ongoing = state
                    .producers
                    .iter()
                    .filter_map(|(pid, e)| e.txn_first_offset.map(|f| (f, *pid)))
                    .collect();
                from = from.max(offset);
                break;
            }
        }
        state.replay(log, from)?;
        state.publish();
        Ok(state)
    }

    fn replay(&mut self, log: &Log, mut from: i64) -> io::Result<()> {
        while from < log.log_end_offset() {
            let read = match log.read(from, REPLAY_READ_BYTES) {
                Ok(r) => r,
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            if read.data.is_empty() {
                break;
            }
            from = self.apply_stored(log, &read.data, from)?;
        }
        Ok(())
    }

    /// Applies stored batches (offsets assigned) at or after `from` to the state: the
    /// idempotent producers' sequences, transactions begun, and markers that end them (an
    /// ABORT indexes its range in `log`). Returns the offset after the last batch. Used by
    /// the replay at open and by a follower for the batches it copied from its leader.
    pub fn apply_stored(&mut self, log: &Log, data: &[u8], mut from: i64) -> io::Result<i64> {
        for (pos, h) in batch_headers(data) {
            if h.last_offset() >= from && is_idempotent(&h) {
                self.remember(&h, h.max_timestamp);
            } else if h.last_offset() >= from && h.is_control() {
                let whole = &data[pos..pos + h.total_len()];
                if let Some(marker) = control_marker(whole) {
                    let ended = self.end_txn(&h, marker, h.max_timestamp);
                    if let Some(range) = ended {
                        // An ABORT marker whose index entry a crash may have lost: added
                        // again (a no-op when it is there).
                        log.add_aborted(range)
                            .map_err(|e| io::Error::other(e.to_string()))?;
                    }
                }
            }
            from = from.max(h.last_offset() + 1);
        }
        self.publish();
        Ok(from)
    }

    /// Takes over `handle` as the shared last stable offset (a state rebuilt after a
    /// truncation keeps the handle its readers hold) and publishes into it.
    pub fn adopt_unstable_handle(&mut self, handle: Arc<AtomicI64>) {
        self.unstable = handle;
        self.publish();
    }

    /// Classifies the record set `records` (unstamped, as the producer sent it).
    /// `issued` tells whether the broker ever handed out a producer id.
    pub fn check(
        &self,
        records: &[u8],
        issued: impl Fn(i64) -> bool,
    ) -> Result<BatchCheck, ProducerStateError> {
        let mut previous: Option<BatchHeader> = None;
        let mut count = 0;
        let mut verdict = BatchCheck::New;
        for (_, h) in batch_headers(records) {
            count += 1;
            if !is_idempotent(&h) {
                if h.producer_id >= 0 && !h.is_control() {
                    return Err(ProducerStateError::InvalidBatch(format!(
                        "producer {} sent a negative sequence {}",
                        h.producer_id, h.base_sequence
                    )));
                }
                continue;
            }
            if let Some(p) = previous.filter(|p| p.producer_id == h.producer_id) {
                // A later batch of the same producer in one record set follows the earlier one.
                if h.producer_epoch != p.producer_epoch || h.base_sequence != next_seq(last_seq(&p))
                {
                    return Err(ProducerStateError::OutOfOrderSequence {
                        producer_id: h.producer_id,
                        expected: next_seq(last_seq(&p)),
                        got: h.base_sequence,
                    });
                }
            } else {
                verdict = self.check_one(&h, &issued)?;
            }
            previous = Some(h);
        }
        if count > 1 && verdict != BatchCheck::New {
            // Part of a multi-batch set already stored: refuse rather than half-append.
            return Err(ProducerStateError::InvalidBatch(
                "a record set with several batches repeats stored sequences".into(),
            ));
        }
        Ok(verdict)
    }

    fn check_one(
        &self,
        h: &BatchHeader,
        issued: &impl Fn(i64) -> bool,
    ) -> Result<BatchCheck, ProducerStateError> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // A producer new to this partition (or expired here): any sequence starts it, as in
            // Kafka since KIP-360; an id the broker never issued is refused.
            return if issued(h.producer_id) {
                Ok(BatchCheck::New)
            } else {
                Err(ProducerStateError::UnknownProducerId(h.producer_id))
            };
        };
        if h.producer_epoch < entry.epoch {
            return Err(ProducerStateError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(BatchCheck::New)
            } else {
                Err(ProducerStateError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last = last_seq(h);
        if let Some(dup) = entry
            .batches
            .iter()
            // A batch the broker stored rebuilt without its delayed or duplicate records
            // (`Broker::append_reserved`) keeps the original's last sequences: as replayed
            // from the log it starts later than the batch being retried.
            .find(|b| {
                b.last_seq == last
                    && (b.first_seq == h.base_sequence
                        || (h.base_sequence < b.first_seq && b.first_seq <= last))
            })
        {
            return Ok(BatchCheck::Duplicate {
                first_offset: dup.first_offset,
                last_offset: dup.last_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(h.base_sequence, |b| next_seq(b.last_seq));
        if h.base_sequence != expected {
            return Err(ProducerStateError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            });
        }
        Ok(BatchCheck::New)
    }

    /// Checks a marker of producer `producer_id` at `producer_epoch` before it is written:
    /// an epoch older than the producer's is fenced.
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(), ProducerStateError> {
        match self.producers.get(&producer_id) {
            Some(e) if producer_epoch < e.epoch => Err(ProducerStateError::InvalidProducerEpoch {
                producer_id,
                current: e.epoch,
                got: producer_epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Applies the stored marker batch `h` (its base offset assigned): ends the producer's
    /// ongoing transaction. The shared last stable offset moves only at
    /// [`PartitionProducers::publish_unstable`], which the caller calls once the aborted
    /// range is indexed (so no reader sees the range below its stable offset unindexed). Returns the aborted range to index for an ABORT that closed a
    /// transaction (its last stable offset: what the partition's is now, `None` meaning the
    /// offset after the marker).
    pub fn end_txn(
        &mut self,
        h: &BatchHeader,
        marker: ControlMarker,
        now_ms: i64,
    ) -> Option<AbortedRange> {
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_KEPT),
                last_timestamp: now_ms,
                coordinator_epoch: -1,
                txn_first_offset: None,
            });
        if h.producer_epoch > entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = marker.coordinator_epoch;
        entry.last_timestamp = entry.last_timestamp.max(now_ms);
        let first = entry.txn_first_offset.take()?;
        self.ongoing.remove(&first);
        if marker.commit {
            return None;
        }
        Some(AbortedRange {
            producer_id: h.producer_id,
            first_offset: first,
            last_offset: h.base_offset,
            last_stable_offset: self.first_unstable_offset().unwrap_or(h.base_offset + 1),
        })
    }

    /// First offset of the earliest ongoing transaction: the last stable offset, if any
    /// transaction is open (else the high watermark is).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// [`PartitionProducers::first_unstable_offset`] as a shared atomic (-1: none), kept
    /// current by every change, for readers that must not wait for the partition's lock.
    pub fn unstable_handle(&self) -> Arc<AtomicI64> {
        self.unstable.clone()
    }

    /// Before appending `records` at `next_offset` (under the partition's lock): a
    /// transactional batch that will start a transaction holds the shared last stable
    /// offset at `next_offset` before its bytes become readable.
    pub fn before_append(&self, records: &[u8], next_offset: i64) {
        let starts = batch_headers(records).any(|(_, h)| {
            h.is_transactional()
                && !h.is_control()
                && self
                    .producers
                    .get(&h.producer_id)
                    .is_none_or(|e| e.txn_first_offset.is_none())
        });
        if starts && self.ongoing.is_empty() {
            self.unstable.store(next_offset, Ordering::Release);
        }
    }

    /// Undoes [`PartitionProducers::end_txn`] of an ABORT whose range could not be indexed:
    /// the transaction is open again from `first_offset`.
    pub fn reopen_txn(&mut self, producer_id: i64, first_offset: i64) {
        if let Some(e) = self.producers.get_mut(&producer_id) {
            e.txn_first_offset = Some(first_offset);
            self.ongoing.insert(first_offset, producer_id);
        }
    }

    /// Publishes the last stable offset after [`PartitionProducers::end_txn`].
    pub fn publish_unstable(&self) {
        self.publish();
    }

    fn publish(&self) {
        self.unstable.store(
            self.first_unstable_offset().unwrap_or(-1),
            Ordering::Release,
        );
    }

    /// Every producer known here, for DescribeProducers, by producer id.
    pub fn describe(&self) -> Vec<ProducerInfo> {
        let mut out: Vec<ProducerInfo> = self
            .producers
            .iter()
            .map(|(pid, e)| ProducerInfo {
                producer_id: *pid,
                producer_epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }

    /// Remembers the batches of an appended record set. `stamped` is the buffer after
    /// [`Log::append`] assigned its offsets.
    pub fn record(&mut self, batches: &[u8], base_offset: i64, now_ms: i64) {
        let mut next = base_offset;
        for (_, mut h) in batch_headers(batches) {
            h.base_offset = next;
            next = h.last_offset() + 1;
            if is_idempotent(&h) {
                self.remember(&h, now_ms);
            }
        }
    }

    fn remember(&mut self, h: &BatchHeader, timestamp: i64) {
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_KEPT),
                last_timestamp: timestamp,
                coordinator_epoch: -1,
                txn_first_offset: None,
            });
        if h.producer_epoch > entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(SequenceRange {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        entry.last_timestamp = entry.last_timestamp.max(timestamp);
        // (`base_offset` -1: nothing of the batch was stored, every record was delayed.)
        if h.is_transactional() && entry.txn_first_offset.is_none() && h.base_offset >= 0 {
            entry.txn_first_offset = Some(h.base_offset);
            self.ongoing.insert(h.base_offset, h.producer_id);
            self.publish();
        }
    }

    /// After an append: writes a snapshot if the log rolled a segment since the last look.
    pub fn after_append(&mut self, log: &Log, info: &AppendInfo) -> io::Result<()> {
        let segments = log.segment_count();
        if segments > self.segments_seen {
            self.snapshot(info.last_offset + 1)?;
        }
        self.segments_seen = segments;
        Ok(())
    }

    /// Forgets producers idle for longer than `expiration_ms`. Returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        // A producer with an open transaction is kept: it holds the last stable offset.
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) <= expiration_ms
        });
        self.publish();
        before - self.producers.len()
    }

    /// The entry of one producer, if known here.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// The largest producer id known to this partition.
    pub fn max_producer_id(&self) -> Option<i64> {
        self.producers.keys().copied().max()
    }

    /// Number of producers known to this partition.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known here.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Writes `<offset>.snapshot` (state as of log end `offset`) atomically and keeps only the
    /// two newest snapshots.
    pub fn snapshot(&self, offset: i64) -> io::Result<()> {
        let mut buf = Vec::with_capacity(16 + self.producers.len() * 64);
        buf.extend_from_slice(SNAPSHOT_MAGIC);
        buf.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        buf.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, e) in &self.producers {
            buf.extend_from_slice(&pid.to_be_bytes());
            buf.extend_from_slice(&e.epoch.to_be_bytes());
            buf.extend_from_slice(&e.last_timestamp.to_be_bytes());
            buf.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            buf.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            buf.push(e.batches.len() as u8);
            for b in &e.batches {
                buf.extend_from_slice(&b.first_seq.to_be_bytes());
                buf.extend_from_slice(&b.last_seq.to_be_bytes());
                buf.extend_from_slice(&b.first_offset.to_be_bytes());
                buf.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_be_bytes());
        let path = snapshot_path(&self.dir, offset);
        // The same state at the same offset is already on disk (synced when it was written):
        // a broker stopped again without appends writes nothing.
        if fs::read(&path).is_ok_and(|on_disk| on_disk == buf) {
            return Ok(());
        }
        let tmp = path.with_extension("snapshot.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        let mut all = list_snapshots(&self.dir)?;
        all.sort_unstable_by(|a, b| b.cmp(a));
        for old in all.into_iter().skip(2) {
            let _ = fs::remove_file(snapshot_path(&self.dir, old));
        }
        Ok(())
    }
}

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Removes the temporary files of snapshot writes a crash interrupted (a snapshot is
/// written to `<offset>.snapshot.tmp`, synced, then renamed).
fn remove_temp_snapshots(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(".snapshot.tmp")) {
            let path = dir.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed the temporary file of an interrupted producer snapshot")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a temporary file")
                }
            }
        }
    }
    Ok(())
}

fn list_snapshots(dir: &Path) -> io::Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".snapshot")) {
            if let Ok(offset) = stem.parse::<i64>() {
                out.push(offset);
            }
        }
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
}

/// Reads a snapshot; `None` if missing, torn or corrupt (the caller then uses an older one).
fn read_snapshot(path: &Path) -> Option<HashMap<i64, ProducerEntry>> {
    let buf = fs::read(path).ok()?;
    let (body, crc) = buf.split_last_chunk::<4>()?;
    if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
        tracing::warn!(path = %path.display(), "ignoring corrupt producer snapshot");
        return None;
    }
    let mut r = Reader(body);
    if &r.take::<4>()? != SNAPSHOT_MAGIC {
        return None;
    }
    let version = u16::from_be_bytes(r.take()?);
    if version != 1 && version != SNAPSHOT_VERSION {
        return None;
    }
    let count = u32::from_be_bytes(r.take()?);
    // The count comes from a file: it sizes nothing beyond what the file can hold (an
    // entry takes at least 19 bytes).
    let mut out = HashMap::with_capacity((count as usize).min(r.0.len() / 19));
    for _ in 0..count {
        let pid = r.i64()?;
        let epoch = r.i16()?;
        let last_timestamp = r.i64()?;
        let (coordinator_epoch, txn_first_offset) = if version >= 2 {
            (r.i32()?, Some(r.i64()?).filter(|&o| o >= 0))
        } else {
            (-1, None)
        };
        let n = r.take::<1>()?[0] as usize;
        let mut batches = VecDeque::with_capacity(n);
        for _ in 0..n {
            batches.push_back(SequenceRange {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
            });
        }
        out.insert(
            pid,
            ProducerEntry {
                epoch,
                batches,
                last_timestamp,
                coordinator_epoch,
                txn_first_offset,
            },
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_log::LogConfig;

    /// An uncompressed batch of `n` records from producer `pid`/`epoch` starting at `seq`.
    fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
        let values: Vec<&[u8]> = (0..n).map(|_| &b"v"[..]).collect();
        let mut b = strom_log::build_batch(1_000, &values);
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn issued(_: i64) -> bool {
        true
    }

    /// Check, append, record: what the partition does for one produce.
    fn produce(
        log: &Log,
        state: &mut PartitionProducers,
        b: Vec<u8>,
    ) -> Result<(BatchCheck, i64), ProducerStateError> {
        match state.check(&b, issued)? {
            BatchCheck::New => {
                let info = log.append_shared(&b).unwrap();
                state.record(&b, info.base_offset, 5);
                state.after_append(log, &info).unwrap();
                Ok((BatchCheck::New, info.base_offset))
            }
            dup @ BatchCheck::Duplicate { first_offset, .. } => Ok((dup, first_offset)),
        }
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let mut s = PartitionProducers::load(&log).unwrap();
        assert_eq!(produce(&log, &mut s, batch(7, 0, 0, 3)).unwrap().1, 0);
        assert_eq!(produce(&log, &mut s, batch(7, 0, 3, 2)).unwrap().1, 3);
        // A retry of the first batch: acknowledged with its offset, not written.
        let (verdict, offset) = produce(&log, &mut s, batch(7, 0, 0, 3)).unwrap();
        assert_eq!(
            verdict,
            BatchCheck::Duplicate {
                first_offset: 0,
                last_offset: 2
            }
        );
        assert_eq!(offset, 0);
        assert_eq!(log.log_end_offset(), 5);
        // A gap.
        assert!(matches!(
            produce(&log, &mut s, batch(7, 0, 9, 1)),
            Err(ProducerStateError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            })
        ));
        // A new epoch must start at 0; then the old epoch is fenced.
        assert!(matches!(
            produce(&log, &mut s, batch(7, 1, 5, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 0, .. })
        ));
        produce(&log, &mut s, batch(7, 1, 0, 1)).unwrap();
        assert!(matches!(
            produce(&log, &mut s, batch(7, 0, 5, 1)),
            Err(ProducerStateError::InvalidProducerEpoch {
                current: 1,
                got: 0,
                ..
            })
        ));
        assert_eq!(log.log_end_offset(), 6);
        // A producer id never issued.
        assert!(matches!(
            s.check(&batch(99, 0, 0, 1), |id| id < 10),
            Err(ProducerStateError::UnknownProducerId(99))
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let mut s = PartitionProducers::load(&log).unwrap();
        for i in 0..7 {
            produce(&log, &mut s, batch(1, 0, i, 1)).unwrap();
        }
        assert!(matches!(
            produce(&log, &mut s, batch(1, 0, 2, 1)).unwrap().0,
            BatchCheck::Duplicate {
                first_offset: 2,
                ..
            }
        ));
        assert!(produce(&log, &mut s, batch(1, 0, 1, 1)).is_err());
    }

    #[test]
    fn sequence_wraps_after_i32_max() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let mut s = PartitionProducers::load(&log).unwrap();
        produce(&log, &mut s, batch(1, 0, i32::MAX - 1, 2)).unwrap();
        assert_eq!(s.get(1).unwrap().batches.back().unwrap().last_seq, i32::MAX);
        produce(&log, &mut s, batch(1, 0, 0, 1)).unwrap();
    }

    #[test]
    fn a_snapshot_of_an_unchanged_state_is_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let mut s = PartitionProducers::load(&log).unwrap();
        produce(&log, &mut s, batch(3, 0, 0, 2)).unwrap();
        let end = log.log_end_offset();
        let inode = || fs::metadata(snapshot_path(dir.path(), end)).unwrap().ino();
        s.snapshot(end).unwrap();
        let first = inode();
        // Stopped again without a change: the file stays (a rewrite renames a new one in).
        s.snapshot(end).unwrap();
        assert_eq!(inode(), first);
        // Another state at the same offset is written.
        s.record(&batch(4, 0, 0, 1), end, 5);
        s.snapshot(end).unwrap();
        assert_ne!(inode(), first);
        let back = PartitionProducers::load(&log).unwrap();
        assert!(back.get(4).is_some());
    }

    #[test]
    fn state_survives_reopen_via_snapshot_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        };
        {
            let log = Log::open(dir.path(), config).unwrap();
            let mut s = PartitionProducers::load(&log).unwrap();
            for i in 0..40 {
                produce(&log, &mut s, batch(3, 0, i * 2, 2)).unwrap();
            }
            assert!(log.segment_count() > 2, "test needs rolls");
            assert!(list_snapshots(dir.path()).unwrap().len() <= 2);
            assert!(!list_snapshots(dir.path()).unwrap().is_empty());
            log.close().unwrap();
        }
        let log = Log::open(dir.path(), config).unwrap();
        let mut s = PartitionProducers::load(&log).unwrap();
        // The last batch (seq 78..79, offsets 78..79) is known from the tail replay.
        let (verdict, offset) = produce(&log, &mut s, batch(3, 0, 78, 2)).unwrap();
        assert_eq!(
            verdict,
            BatchCheck::Duplicate {
                first_offset: 78,
                last_offset: 79
            }
        );
        assert_eq!(offset, 78);
        produce(&log, &mut s, batch(3, 0, 80, 1)).unwrap();
        assert_eq!(log.log_end_offset(), 81);
        // A corrupt newest snapshot falls back to the older one plus a longer replay.
        let mut snaps = list_snapshots(dir.path()).unwrap();
        snaps.sort_unstable();
        let newest = snapshot_path(dir.path(), *snaps.last().unwrap());
        let mut bytes = fs::read(&newest).unwrap();
        bytes[6] ^= 0xff;
        fs::write(&newest, bytes).unwrap();
        let s = PartitionProducers::load(&log).unwrap();
        assert_eq!(s.get(3).unwrap().batches.back().unwrap().last_offset, 80);
    }

    #[test]
    fn a_version_1_snapshot_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let mut s = PartitionProducers::load(&log).unwrap();
        produce(&log, &mut s, batch(4, 2, 0, 3)).unwrap();
        // Version 1: no coordinator epoch, no transaction offset.
        let mut buf = Vec::new();
        buf.extend_from_slice(SNAPSHOT_MAGIC);
        buf.extend_from_slice(&1u16.to_be_bytes());
        buf.extend_from_slice(&1u32.to_be_bytes());
        buf.extend_from_slice(&4i64.to_be_bytes());
        buf.extend_from_slice(&2i16.to_be_bytes());
        buf.extend_from_slice(&5i64.to_be_bytes());
        buf.push(1);
        for v in [0i32, 2] {
            buf.extend_from_slice(&v.to_be_bytes());
        }
        for v in [0i64, 2] {
            buf.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_be_bytes());
        fs::write(snapshot_path(dir.path(), 3), &buf).unwrap();
        let s = PartitionProducers::load(&log).unwrap();
        let e = s.get(4).unwrap();
        assert_eq!(
            (e.epoch, e.coordinator_epoch, e.txn_first_offset),
            (2, -1, None)
        );
        assert_eq!(e.batches.back().unwrap().last_offset, 2);
        // Written again as version 2, read back the same.
        s.snapshot(3).unwrap();
        let again = PartitionProducers::load(&log).unwrap();
        assert_eq!(again.get(4), s.get(4));
    }

    #[test]
    fn idle_producers_expire() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let mut s = PartitionProducers::load(&log).unwrap();
        produce(&log, &mut s, batch(1, 0, 0, 1)).unwrap();
        assert_eq!(s.expire(5 + 100, 1000), 0);
        assert_eq!(s.expire(5 + 2000, 1000), 1);
        assert!(s.is_empty());
    }
}
