//! One partition's producer state: check before append, record after, snapshot and rebuild.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use strom_log::{batch_headers, AppendInfo, BatchHeader, Log};

/// Batches remembered per producer and partition, as Kafka keeps (and as clients rely on:
/// at most five in-flight requests per connection with idempotence).
pub const BATCHES_KEPT: usize = 5;
/// Kafka's `producer.id.expiration.ms` default: one day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;

const SNAPSHOT_MAGIC: &[u8; 4] = b"SPS1";
const SNAPSHOT_VERSION: u16 = 1;
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
                from = from.max(offset);
                break;
            }
        }
        state.replay(log, from)?;
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
            for (_, h) in batch_headers(&read.data) {
                if h.last_offset() >= from && is_idempotent(&h) {
                    self.remember(&h, h.max_timestamp);
                }
                from = from.max(h.last_offset() + 1);
            }
        }
        Ok(())
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
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) <= expiration_ms);
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
    if &r.take::<4>()? != SNAPSHOT_MAGIC || u16::from_be_bytes(r.take()?) != SNAPSHOT_VERSION {
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
