//! Delayed delivery: records acknowledged now and appended to their partition when due.
//!
//! ## On disk (`.strom/delay/`)
//! - `log/`: a strom-log log of the pending records, in arrival order. Each is the
//!   producer's record (timestamp, key, value, headers) with two headers in front:
//!   `strom.delay.target` = `<partition>:<topic>` and `strom.delay.due` = the due time (epoch
//!   ms). It is synced before the produce is acknowledged.
//! - `due/<bucket>.due`: the time index. A bucket is one second of due times
//!   ([`BUCKET_MS`]); its file is a list of 16-byte entries (delay-log offset, due ms, both
//!   big-endian i64) in arrival order, appended and fdatasync'ed before the acknowledgement.
//! - `due/<bucket>.cursor`: how many entries of the bucket are delivered, and, while a
//!   delivery is under way, its intent (see below); replaced atomically (write, fsync,
//!   rename, fsync dir).
//!
//! ## Memory
//! Neither the pending records nor their due times are kept in memory: only the set of
//! non-empty buckets (two `i64` each; at most `strom.delay.max.ms` / [`BUCKET_MS`] of them,
//! 604,800 for 7 days) and, while delivering, [`CHUNK_ENTRIES`] entries and the records of
//! one delay-log batch. A million pending records cost 16 MB of index on disk and nothing
//! per record in memory.
//!
//! ## Delivery
//! A ticker ([`TICK_MS`]) takes the oldest bucket that has begun (`bucket × 1000 <= now`),
//! reads its entries from the cursor on, and delivers the run of due entries with the same
//! target as one batch (at most [`DELIVERY_BATCH_RECORDS`] records): each record gets a
//! `strom.delay.id` header (its delay-log offset) and loses the two internal ones. An entry
//! not yet due stops the bucket until the next tick, so a record can come up to one bucket
//! (1 s) late when its bucket's entries arrived out of due order; never early. A bucket
//! whose entries are all delivered is removed.
//!
//! ## Crash safety (each delivered record exactly once)
//! Before appending, the cursor file records the intent: (cursor, entries, the first entry's
//! delay-log offset, the target and its log end offset before the append); after the append
//! is synced the cursor moves past the entries and the intent is cleared. After a crash with
//! an intent recorded, the target's records from that log end offset on are read: if one
//! carries the intent's `strom.delay.id`, the append happened (it is all or nothing) and the
//! cursor moves on; otherwise the entries are delivered again. So a record acknowledged is
//! never lost and never appended twice.
//!
//! ## Trimming
//! Each non-empty bucket is remembered with the lowest delay-log offset among its pending
//! entries (computed at open, lowered by each add; entries of one bucket need not be in
//! offset order, since concurrent produces write their entries after their appends). When a
//! bucket is all delivered and removed, the delay log's sealed segments below the lowest
//! offset of every remaining bucket are deleted ([`Log::delete_segments_below`]); the log
//! rolls at [`DELAY_SEGMENT_BYTES`], so delivered records leave the disk within that much.
//!
//! Not done: records whose target topic was deleted are dropped at their due time.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use strom_log::{Log, LogConfig};
use strom_records::Record;

use crate::reserved::DELAY_ID_HEADER;

/// Width of a time bucket of the on-disk index.
pub const BUCKET_MS: i64 = 1000;
/// How often due records are looked for.
pub const TICK_MS: u64 = 50;
/// Entries read from a bucket at a time (16 bytes each).
pub const CHUNK_ENTRIES: usize = 4096;
/// Records delivered in one batch at most (and never more bytes than the target's
/// `max.message.bytes`).
pub const DELIVERY_BATCH_RECORDS: usize = 4096;
/// The batch header and slack, kept out of a run's byte bound.
const RUN_OVERHEAD_BYTES: u64 = 128;
const ENTRY_BYTES: usize = 16;
/// Largest batch of the delay log (a produce's delayed records, decompressed).
const DELAY_BATCH_BYTES_MAX: u64 = 256 << 20;
/// Segment size of the delay log (what trimming frees at a time): its largest batch must fit.
pub const DELAY_SEGMENT_BYTES: u64 = DELAY_BATCH_BYTES_MAX;
const TARGET_HEADER: &[u8] = b"strom.delay.target";
const DUE_HEADER: &[u8] = b"strom.delay.due";

/// One record to delay.
pub(crate) struct Delayed {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) due_ms: i64,
    pub(crate) record: Record,
}

/// A run of due records for one partition, ready to append.
pub(crate) struct Delivery {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) records: Vec<Record>,
    bucket: i64,
    cursor: u64,
    first_delay_offset: i64,
}

/// Where a delivery stands in its bucket's cursor file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cursor {
    done: u64,
    intent: Option<Intent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Intent {
    entries: u64,
    first_delay_offset: i64,
    target_end_before: i64,
    partition: i32,
    topic: String,
}

/// The store of pending delayed records.
pub struct DelayStore {
    log: Log,
    due_dir: PathBuf,
    /// Non-empty buckets, each with the lowest delay-log offset of its pending entries; also
    /// serialises writes to the bucket files against their removal.
    buckets: Mutex<BTreeMap<i64, i64>>,
    /// Held (shared) by an add from its append to its bucket entries, and (exclusive) by a
    /// trim: a record appended but not yet in a bucket is never trimmed.
    trim_gate: RwLock<()>,
    pending: AtomicI64,
    /// The delivery side: one at a time; the delay-log batch last read.
    delivering: Mutex<Option<(i64, i64, Vec<Record>)>>,
}

fn be(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DelayStore {
    /// Opens (or creates) the store under `dir` (`.strom/delay`).
    pub(crate) fn open(dir: &Path) -> crate::Result<DelayStore> {
        Self::open_with(dir, DELAY_SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> crate::Result<DelayStore> {
        let due_dir = dir.join("due");
        fs::create_dir_all(&due_dir)?;
        let config = LogConfig {
            retention_ms: None,
            // A produce's delayed records are one batch here, rebuilt uncompressed and with
            // two more headers each: larger than the batch the client sent.
            max_batch_bytes: DELAY_BATCH_BYTES_MAX,
            segment_bytes,
            ..LogConfig::default()
        };
        let log = Log::open(dir.join("log"), config)?;
        let mut buckets = BTreeMap::new();
        let mut pending = 0i64;
        for entry in fs::read_dir(&due_dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(due_dir.join(&*name));
                continue;
            }
            let Some(b) = name
                .strip_suffix(".due")
                .and_then(|s| s.parse::<i64>().ok())
            else {
                continue;
            };
            let entries = fs::metadata(due_dir.join(&*name))?.len() / ENTRY_BYTES as u64;
            // A damaged cursor is reported when the bucket comes due.
            let done = read_cursor(&due_dir, b).map_or(0, |c| c.done);
            pending += entries.saturating_sub(done) as i64;
            let lowest = lowest_pending(&due_dir.join(&*name), done)?;
            buckets.insert(b, lowest.unwrap_or(i64::MAX));
        }
        let store = DelayStore {
            log,
            due_dir,
            buckets: Mutex::new(buckets),
            trim_gate: RwLock::new(()),
            pending: AtomicI64::new(pending),
            delivering: Mutex::new(None),
        };
        store.trim()?;
        Ok(store)
    }

    /// Deletes the delay log's sealed segments that hold no pending record.
    fn trim(&self) -> crate::Result<()> {
        let _gate = self.trim_gate.write();
        let lowest = {
            let buckets = self.buckets.lock();
            buckets.values().copied().min()
        };
        // Nothing pending: everything before the log's end is delivered.
        let below = lowest.unwrap_or_else(|| self.log.log_end_offset());
        let freed = self.log.delete_segments_below(below)?;
        if freed.segments > 0 {
            tracing::debug!(
                segments = freed.segments,
                bytes = freed.bytes,
                "delay log trimmed"
            );
        }
        Ok(())
    }

    /// The delay log's size on disk.
    pub fn log_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Records waiting for their time.
    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Stores `records` durably: when this returns, they will be delivered at their time,
    /// whatever happens to the process.
    pub(crate) fn add(&self, records: Vec<Delayed>) -> crate::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut built = Vec::with_capacity(records.len());
        for d in &records {
            let mut r = d.record.clone();
            let mut headers = vec![
                (
                    Bytes::from_static(TARGET_HEADER),
                    Some(Bytes::from(format!("{}:{}", d.partition, d.topic))),
                ),
                (
                    Bytes::from_static(DUE_HEADER),
                    Some(Bytes::from(d.due_ms.to_string())),
                ),
            ];
            headers.append(&mut r.headers);
            r.headers = headers;
            built.push(r);
        }
        let mut batch = strom_records::rebuild(&built, None);
        let _gate = self.trim_gate.read();
        let info = self.log.append(&mut batch)?;
        self.log.flush_to(info.last_offset + 1)?;
        let mut by_bucket: BTreeMap<i64, Vec<u8>> = Default::default();
        for (i, d) in records.iter().enumerate() {
            let e = by_bucket.entry(d.due_ms.div_euclid(BUCKET_MS)).or_default();
            e.extend_from_slice(&(info.base_offset + i as i64).to_be_bytes());
            e.extend_from_slice(&d.due_ms.to_be_bytes());
        }
        let mut buckets = self.buckets.lock();
        for (b, entries) in by_bucket {
            let path = self.due_path(b);
            let created = !path.exists();
            let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
            let len = f.metadata()?.len();
            // A torn entry of an earlier failed write is cut off first.
            if len % ENTRY_BYTES as u64 != 0 {
                f.set_len(len - len % ENTRY_BYTES as u64)?;
            }
            f.write_all(&entries)?;
            f.sync_data()?;
            if created {
                sync_dir(&self.due_dir)?;
            }
            let first = be(&entries, 0);
            let lowest = buckets.entry(b).or_insert(first);
            *lowest = (*lowest).min(first);
        }
        self.pending
            .fetch_add(records.len() as i64, Ordering::Relaxed);
        Ok(())
    }

    fn due_path(&self, b: i64) -> PathBuf {
        self.due_dir.join(format!("{b}.due"))
    }

    /// The next run of due records at `now_ms`, if any. `target` gives a target's log
    /// end offset (for the intent) and its largest batch (`max.message.bytes`: a run stays
    /// within it), `delivered` whether a target holds a record carrying a
    /// `strom.delay.id` from a log end offset on (to settle an intent left by a crash).
    /// The caller appends [`Delivery::records`], syncs, and calls [`DelayStore::done`].
    pub(crate) fn next_due(
        &self,
        now_ms: i64,
        target_of: impl Fn(&str, i32) -> Option<(i64, u64)>,
        delivered: impl Fn(&str, i32, i64, i64) -> bool,
    ) -> crate::Result<Option<Delivery>> {
        let mut cache = self.delivering.lock();
        loop {
            let Some(b) = self.buckets.lock().keys().next().copied() else {
                return Ok(None);
            };
            if b.saturating_mul(BUCKET_MS) > now_ms {
                return Ok(None);
            }
            let mut cursor = read_cursor(&self.due_dir, b)?;
            if let Some(intent) = cursor.intent.take() {
                let done = delivered(
                    &intent.topic,
                    intent.partition,
                    intent.target_end_before,
                    intent.first_delay_offset,
                );
                if done {
                    cursor.done += intent.entries;
                    self.pending
                        .fetch_sub(intent.entries as i64, Ordering::Relaxed);
                }
                tracing::info!(topic = %intent.topic, partition = intent.partition, entries = intent.entries, already_delivered = done, "settled a delayed delivery interrupted by a crash");
                write_cursor(&self.due_dir, b, &cursor)?;
            }
            let entries = self.read_entries(b, cursor.done)?;
            if entries.is_empty() {
                let mut buckets = self.buckets.lock();
                let len = fs::metadata(self.due_path(b)).map_or(0, |m| m.len());
                if len / ENTRY_BYTES as u64 <= cursor.done {
                    let _ = fs::remove_file(self.due_path(b));
                    let _ = fs::remove_file(cursor_path(&self.due_dir, b));
                    buckets.remove(&b);
                    drop(buckets);
                    self.trim()?;
                }
                continue;
            }
            let mut run: Vec<Record> = Vec::new();
            let mut target: Option<(String, i32)> = None;
            let mut skipped = 0u64;
            let mut first_delay_offset = -1;
            let mut run_bytes = 0u64;
            let mut max_bytes = u64::MAX;
            for &(offset, due) in &entries {
                if due > now_ms || run.len() >= DELIVERY_BATCH_RECORDS {
                    break;
                }
                let Some((t, p, r)) = self.read_record(&mut cache, offset)? else {
                    if run.is_empty() {
                        skipped += 1;
                        continue;
                    }
                    break;
                };
                if target.as_ref().is_some_and(|(tt, pp)| *tt != t || *pp != p) {
                    break;
                }
                let Some((_, target_max)) = target_of(&t, p) else {
                    // The topic or partition is gone: nothing to deliver to.
                    if run.is_empty() {
                        tracing::warn!(topic = %t, partition = p, "a delayed record's partition no longer exists: dropped");
                        skipped += 1;
                        continue;
                    }
                    break;
                };
                // Within the target's max.message.bytes (the first record always goes: it
                // came in a batch within it).
                let bytes = record_bytes(&r);
                max_bytes = max_bytes.min(target_max.saturating_sub(RUN_OVERHEAD_BYTES));
                if !run.is_empty() && run_bytes + bytes > max_bytes {
                    break;
                }
                run_bytes += bytes;
                if first_delay_offset < 0 {
                    first_delay_offset = offset;
                }
                target = Some((t, p));
                run.push(r);
            }
            if skipped > 0 && run.is_empty() {
                cursor.done += skipped;
                self.pending.fetch_sub(skipped as i64, Ordering::Relaxed);
                write_cursor(&self.due_dir, b, &cursor)?;
                continue;
            }
            let Some((topic, partition)) = target else {
                return Ok(None); // the next entry is not due yet
            };
            cursor.done += skipped;
            self.pending.fetch_sub(skipped as i64, Ordering::Relaxed);
            let before = target_of(&topic, partition).map_or(0, |t| t.0);
            let intent = Cursor {
                done: cursor.done,
                intent: Some(Intent {
                    entries: run.len() as u64,
                    first_delay_offset,
                    target_end_before: before,
                    partition,
                    topic: topic.clone(),
                }),
            };
            write_cursor(&self.due_dir, b, &intent)?;
            return Ok(Some(Delivery {
                topic,
                partition,
                records: run,
                bucket: b,
                cursor: cursor.done,
                first_delay_offset,
            }));
        }
    }

    /// A [`Delivery`] is appended and synced: its entries are done.
    pub(crate) fn done(&self, d: &Delivery) -> crate::Result<()> {
        let cursor = Cursor {
            done: d.cursor + d.records.len() as u64,
            intent: None,
        };
        write_cursor(&self.due_dir, d.bucket, &cursor)?;
        self.pending
            .fetch_sub(d.records.len() as i64, Ordering::Relaxed);
        Ok(())
    }

    /// A [`Delivery`] failed to append (nothing of it is in the target): the intent is
    /// withdrawn and the entries wait for the next tick.
    pub(crate) fn failed(&self, d: &Delivery) -> crate::Result<()> {
        write_cursor(
            &self.due_dir,
            d.bucket,
            &Cursor {
                done: d.cursor,
                intent: None,
            },
        )
    }

    /// The delay-log offset of the first record of a delivery.
    pub(crate) fn first_offset(d: &Delivery) -> i64 {
        d.first_delay_offset
    }

    fn read_entries(&self, b: i64, from: u64) -> crate::Result<Vec<(i64, i64)>> {
        let f = match File::open(self.due_path(b)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let len = f.metadata()?.len() / ENTRY_BYTES as u64;
        let n = len.saturating_sub(from).min(CHUNK_ENTRIES as u64) as usize;
        let mut buf = vec![0u8; n * ENTRY_BYTES];
        f.read_exact_at(&mut buf, from * ENTRY_BYTES as u64)?;
        Ok(buf
            .chunks_exact(ENTRY_BYTES)
            .map(|e| (be(e, 0), be(e, 8)))
            .collect())
    }

    /// The delayed record at `offset` of the delay log, its target, and the record as it is
    /// to be delivered; `None` if it cannot be read (logged).
    fn read_record(
        &self,
        cache: &mut Option<(i64, i64, Vec<Record>)>,
        offset: i64,
    ) -> crate::Result<Option<(String, i32, Record)>> {
        if !cache
            .as_ref()
            .is_some_and(|(first, last, _)| (*first..=*last).contains(&offset))
        {
            let read = self.log.read(offset, 1)?;
            let Some((h, records)) = strom_records::decode_batches(&read.data).next() else {
                return Ok(None);
            };
            match records {
                Ok(rs) => *cache = Some((h.base_offset, h.last_offset(), rs)),
                Err(bad) => {
                    tracing::error!(offset, error = %bad.error, "a delayed record's batch cannot be read: skipped");
                    *cache = None;
                    return Ok(None);
                }
            }
        }
        let (first, _, records) = cache.as_ref().expect("cached");
        let Some(r) = records.get((offset - first) as usize) else {
            return Ok(None);
        };
        let mut target = None;
        let mut record = r.clone();
        record.headers.retain(|(k, v)| {
            if k.as_ref() == TARGET_HEADER {
                target = v.clone();
                false
            } else {
                k.as_ref() != DUE_HEADER
            }
        });
        record.headers.push((
            Bytes::from_static(DELAY_ID_HEADER),
            Some(Bytes::from(offset.to_string())),
        ));
        let parsed = target.as_deref().and_then(|t| {
            let (p, topic) = std::str::from_utf8(t).ok()?.split_once(':')?;
            Some((topic.to_string(), p.parse::<i32>().ok()?))
        });
        let Some((topic, partition)) = parsed else {
            tracing::error!(offset, "a delayed record without a target: skipped");
            return Ok(None);
        };
        Ok(Some((topic, partition, record)))
    }

    /// Syncs and closes the delay log.
    pub(crate) fn close(&self) -> crate::Result<()> {
        self.log.flush()?;
        self.log.close()?;
        Ok(())
    }
}

/// A record's encoded size at most (its fields, the varints of their lengths, its framing).
fn record_bytes(r: &Record) -> u64 {
    let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64) + 5;
    let headers: u64 = r
        .headers
        .iter()
        .map(|(k, v)| k.len() as u64 + 5 + len(v))
        .sum();
    len(&r.key) + len(&r.value) + headers + 30
}

fn cursor_path(dir: &Path, b: i64) -> PathBuf {
    dir.join(format!("{b}.cursor"))
}

/// `done` (8) | intent flag (1) | entries (8) | first delay offset (8) | target end (8) |
/// partition (4) | topic (rest), then a CRC-32C (4) of all that.
fn write_cursor(dir: &Path, b: i64, c: &Cursor) -> crate::Result<()> {
    let mut out = c.done.to_be_bytes().to_vec();
    match &c.intent {
        None => out.push(0),
        Some(i) => {
            out.push(1);
            out.extend_from_slice(&i.entries.to_be_bytes());
            out.extend_from_slice(&i.first_delay_offset.to_be_bytes());
            out.extend_from_slice(&i.target_end_before.to_be_bytes());
            out.extend_from_slice(&i.partition.to_be_bytes());
            out.extend_from_slice(i.topic.as_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    crate::topic::write_atomic(&cursor_path(dir, b), &out)?;
    Ok(())
}

/// The lowest delay-log offset among a bucket file's entries from `done` on.
fn lowest_pending(path: &Path, done: u64) -> crate::Result<Option<i64>> {
    let f = File::open(path)?;
    let len = f.metadata()?.len() / ENTRY_BYTES as u64;
    let mut lowest = None;
    let mut at = done;
    let mut buf = vec![0u8; CHUNK_ENTRIES * ENTRY_BYTES];
    while at < len {
        let n = (len - at).min(CHUNK_ENTRIES as u64) as usize;
        f.read_exact_at(&mut buf[..n * ENTRY_BYTES], at * ENTRY_BYTES as u64)?;
        for e in buf[..n * ENTRY_BYTES].chunks_exact(ENTRY_BYTES) {
            let offset = be(e, 0);
            lowest = Some(lowest.map_or(offset, |l: i64| l.min(offset)));
        }
        at += n as u64;
    }
    Ok(lowest)
}

fn read_cursor(dir: &Path, b: i64) -> crate::Result<Cursor> {
    let data = match fs::read(cursor_path(dir, b)) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Cursor::default()),
        Err(e) => return Err(e.into()),
    };
    let bad = || {
        crate::BrokerError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is damaged", cursor_path(dir, b).display()),
        ))
    };
    if data.len() < 13 {
        return Err(bad());
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return Err(bad());
    }
    let done = be(body, 0) as u64;
    let intent = match body[8] {
        0 => None,
        _ if body.len() >= 9 + 28 => Some(Intent {
            entries: be(body, 9) as u64,
            first_delay_offset: be(body, 17),
            target_end_before: be(body, 25),
            partition: i32::from_be_bytes(body[33..37].try_into().expect("4 bytes")),
            topic: String::from_utf8_lossy(&body[37..]).into_owned(),
        }),
        _ => return Err(bad()),
    };
    Ok(Cursor { done, intent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for c in [
            Cursor::default(),
            Cursor {
                done: 7,
                intent: Some(Intent {
                    entries: 3,
                    first_delay_offset: 42,
                    target_end_before: 1000,
                    partition: 2,
                    topic: "orders".into(),
                }),
            },
        ] {
            write_cursor(dir.path(), 5, &c).unwrap();
            assert_eq!(read_cursor(dir.path(), 5).unwrap(), c);
        }
        let mut raw = fs::read(cursor_path(dir.path(), 5)).unwrap();
        raw[0] ^= 1;
        fs::write(cursor_path(dir.path(), 5), raw).unwrap();
        assert!(read_cursor(dir.path(), 5).is_err());
    }

    fn delayed(due_ms: i64, n: usize) -> Vec<Delayed> {
        (0..n)
            .map(|i| Delayed {
                topic: "t".into(),
                partition: 0,
                due_ms,
                record: Record {
                    offset: 0,
                    timestamp: due_ms,
                    key: Some(Bytes::from(format!("k{i}"))),
                    value: Some(Bytes::from(vec![b'v'; 4096])),
                    headers: vec![],
                },
            })
            .collect()
    }

    /// Delivers every run due at `now`, returning the delay-log offsets delivered.
    fn deliver(store: &DelayStore, now: i64) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(d) = store
            .next_due(now, |_, _| Some((0, 1 << 30)), |_, _, _, _| false)
            .unwrap()
        {
            for r in &d.records {
                let (_, id) = r
                    .headers
                    .iter()
                    .find(|(k, _)| k.as_ref() == DELAY_ID_HEADER)
                    .expect("a delay id");
                let id = std::str::from_utf8(id.as_deref().unwrap()).unwrap();
                out.push(id.parse::<i64>().unwrap());
            }
            store.done(&d).unwrap();
        }
        out
    }

    #[test]
    fn delivered_records_leave_the_delay_log_and_pending_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let now = strom_log::now_ms();
        let seg = 64 << 10;
        let store = DelayStore::open_with(dir.path(), seg).unwrap();
        // Offsets 0..12 due long ago, 12..24 due in a minute, 24..36 due long ago: one
        // segment each (each add is ~50 KiB, the segments 64 KiB).
        store.add(delayed(now - 5000, 12)).unwrap();
        store.add(delayed(now + 60_000, 12)).unwrap();
        store.add(delayed(now - 5000, 12)).unwrap();
        let before = store.log_bytes();
        assert_eq!(store.log.log_start_offset(), 0);
        let got = deliver(&store, now);
        assert_eq!(got, (0..12).chain(24..36).collect::<Vec<_>>());
        // The bucket of the due ones is gone: what lies below the pending record at 12 is
        // deleted, the pending one's segment (and what follows it) is kept.
        assert_eq!(store.log.log_start_offset(), 12);
        assert!(store.log_bytes() < before);
        assert_eq!(store.pending(), 12);
        store.close().unwrap();
        drop(store);

        // After a reopen the pending records are still there, and deliverable.
        let store = DelayStore::open_with(dir.path(), seg).unwrap();
        assert_eq!(store.pending(), 12);
        assert_eq!(store.log.log_start_offset(), 12);
        assert!(deliver(&store, now).is_empty());
        assert_eq!(deliver(&store, now + 61_000), (12..24).collect::<Vec<_>>());
        assert_eq!(store.pending(), 0);
        // Nothing pending: every sealed segment goes.
        assert_eq!(store.log.segment_count(), 1);
    }
}
