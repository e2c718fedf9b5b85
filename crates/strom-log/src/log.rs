//! The partition log: an ordered list of segments, one writer, many readers.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::index::{self, IndexEntry, TimeEntry};
use crate::segment::{segment_path, Segment};
use crate::{LogConfig, LogError, Result, TimestampType};

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What one append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record.
    pub base_offset: i64,
    /// Offset given to the last record.
    pub last_offset: i64,
    /// The broker's time for `LogAppendTime` logs, -1 otherwise.
    pub log_append_time: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
    /// Batches and records appended.
    pub batches: usize,
    /// Records appended.
    pub records: u64,
    /// Whether the flush policy (`flush.messages`) asks for a flush before acknowledging:
    /// call [`Log::flush_to`] with `last_offset + 1`.
    pub flush_due: bool,
}

/// Whole batches read from the log, ready to be written to a socket as they are.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Zero or more whole batches, byte-identical to what was stored.
    pub data: Bytes,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset (the high watermark of a single-node log) at the time of the read.
    pub log_end_offset: i64,
}

/// A batch located by timestamp, returned whole so that the caller can refine to the record.
#[derive(Clone, Debug)]
pub struct TimestampHit {
    /// Base offset of the batch.
    pub base_offset: i64,
    /// The batch header.
    pub header: BatchHeader,
    /// The whole batch.
    pub batch: Bytes,
}

/// What a retention pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes freed.
    pub bytes: u64,
}

struct Writer {
    active: Arc<Segment>,
    index_file: File,
    time_index_file: File,
    bytes_since_index: u64,
}

/// A partition's log. `Log` is `Send + Sync`: appends are serialised by an internal writer
/// lock; reads run concurrently and take only short read locks.
pub struct Log {
    dir: PathBuf,
    config: RwLock<LogConfig>,
    segments: RwLock<VecDeque<Arc<Segment>>>,
    writer: Mutex<Writer>,
    start_offset: AtomicI64,
    end_offset: AtomicI64,
    flushed_offset: AtomicI64,
    flush_lock: Mutex<()>,
    last_flush_ms: AtomicI64,
    unflushed_messages: AtomicU64,
    closed: AtomicBool,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering the tail of the last segment: only
    /// bytes after its last index entry are checked, so opening costs the same for any size.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Log> {
        let dir = dir.into();
        config.validate().map_err(LogError::Config)?;
        std::fs::create_dir_all(&dir)?;
        let now = now_ms();
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".log") {
                if stem.len() == 20 {
                    if let Ok(base) = stem.parse::<i64>() {
                        bases.push(base);
                    }
                }
            }
        }
        bases.sort_unstable();
        let mut segments = VecDeque::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let next = bases.get(i + 1).copied().unwrap_or(base);
            segments.push_back(Arc::new(Segment::open(&dir, base, next, now)?));
        }
        if segments.is_empty() {
            segments.push_back(Arc::new(Segment::create(&dir, 0, now)?));
            sync_dir(&dir)?;
        }
        let active = segments.back().expect("one segment").clone();
        let bytes_since_index = recover(&active, config.index_interval_bytes)?;
        let writer = Writer {
            index_file: open_append(&active.path("index"))?,
            time_index_file: open_append(&active.path("timeindex"))?,
            active: active.clone(),
            bytes_since_index,
        };
        let start = segments.front().expect("one segment").base_offset;
        let end = active.next_offset();
        Ok(Log {
            dir,
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            writer: Mutex::new(writer),
            start_offset: AtomicI64::new(start),
            end_offset: AtomicI64::new(end),
            flushed_offset: AtomicI64::new(end),
            flush_lock: Mutex::new(()),
            last_flush_ms: AtomicI64::new(now),
            unflushed_messages: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// The directory holding this log's segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current settings.
    pub fn config(&self) -> LogConfig {
        *self.config.read()
    }

    /// Replaces the settings; they apply from the next append, roll or retention pass.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate().map_err(LogError::Config)?;
        *self.config.write() = config;
        Ok(())
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.start_offset.load(Ordering::Acquire)
    }

    /// Offset the next record will get; also the high watermark of a single-node log.
    pub fn log_end_offset(&self) -> i64 {
        self.end_offset.load(Ordering::Acquire)
    }

    /// Offsets below this are on disk (fdatasync'ed).
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    /// Total bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.size()).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Validates `batches` (one or more v2 batches, as a client sent them), assigns offsets
    /// in place and appends them atomically: all or nothing, in order. On any error nothing
    /// is written and the log end offset is unchanged.
    pub fn append(&self, batches: &mut [u8]) -> Result<AppendInfo> {
        let config = self.config();
        let summary = batch::validate(batches, config.max_batch_bytes as usize)?;
        if batches.len() as u64 > config.segment_bytes {
            return Err(LogError::RecordSetTooLarge {
                size: batches.len(),
                max: config.segment_bytes,
            });
        }
        let mut w = self.writer.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let now = now_ms();
        let active_size = w.active.size();
        if active_size > 0
            && (active_size + batches.len() as u64 > config.segment_bytes
                || now.saturating_sub(w.active.created_ms) >= config.segment_ms as i64)
        {
            self.roll(&mut w, now)?;
        }
        let append_time = (config.timestamp_type == TimestampType::LogAppendTime).then_some(now);
        let seg = w.active.clone();
        let seg_pos = seg.size();
        let base_offset = self.log_end_offset();
        let mut next = base_offset;
        let mut pos = 0usize;
        let mut since = w.bytes_since_index;
        let mut seg_max_ts = seg.max_timestamp();
        let last_time = seg.last_time_entry().map_or(-1, |t| t.timestamp);
        let mut new_index = Vec::new();
        let mut new_times = Vec::new();
        while pos < batches.len() {
            let header = BatchHeader::parse(&batches[pos..]).expect("validated");
            let total = header.total_len();
            batch::stamp(
                &mut batches[pos..pos + total],
                next,
                config.leader_epoch,
                append_time,
            );
            let ts = append_time.unwrap_or(header.max_timestamp);
            seg_max_ts = seg_max_ts.max(ts);
            let rel = (next - seg.base_offset) as u32;
            let position = seg_pos + pos as u64;
            if since >= config.index_interval_bytes && position > 0 {
                new_index.push(IndexEntry {
                    rel_offset: rel,
                    position: position as u32,
                });
                let prev = new_times
                    .last()
                    .map_or(last_time, |t: &TimeEntry| t.timestamp);
                if seg_max_ts > prev {
                    new_times.push(TimeEntry {
                        timestamp: seg_max_ts,
                        rel_offset: rel,
                    });
                }
                since = 0;
            }
            since += total as u64;
            next += i64::from(header.last_offset_delta) + 1;
            pos += total;
        }
        if let Err(e) = seg.file.write_all_at(batches, seg_pos) {
            // Nothing of a failed append may stay behind.
            let _ = seg.file.set_len(seg_pos);
            return Err(e.into());
        }
        write_entries(&mut w, &new_index, &new_times)?;
        seg.push_index(&new_index, &new_times);
        w.bytes_since_index = since;
        seg.publish(seg_pos + batches.len() as u64, next, seg_max_ts);
        self.end_offset.store(next, Ordering::Release);
        drop(w);
        let unflushed = self
            .unflushed_messages
            .fetch_add(summary.records, Ordering::AcqRel)
            + summary.records;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: append_time.unwrap_or(-1),
            log_start_offset: self.log_start_offset(),
            batches: summary.batches,
            records: summary.records,
            flush_due: config.flush_messages.is_some_and(|n| unflushed >= n),
        })
    }

    /// Seals the active segment (its data and indexes reach the disk) and starts a new one
    /// at the log end offset.
    fn roll(&self, w: &mut Writer, now: i64) -> Result<()> {
        let old = w.active.clone();
        let max_ts = old.max_timestamp();
        if max_ts > old.last_time_entry().map_or(-1, |t| t.timestamp) {
            // A final entry so that retention and lookups know the segment's newest record.
            let last_base = last_batch_base(&old)?;
            let entry = TimeEntry {
                timestamp: max_ts,
                rel_offset: (last_base - old.base_offset) as u32,
            };
            write_entries(w, &[], &[entry])?;
            old.push_index(&[], &[entry]);
        }
        old.file.sync_data()?;
        w.index_file.sync_data()?;
        w.time_index_file.sync_data()?;
        let base = self.log_end_offset();
        let seg = Arc::new(Segment::create(&self.dir, base, now)?);
        sync_dir(&self.dir)?;
        w.index_file = open_append(&seg.path("index"))?;
        w.time_index_file = open_append(&seg.path("timeindex"))?;
        w.bytes_since_index = 0;
        w.active = seg.clone();
        self.segments.write().push_back(seg);
        self.flushed_offset.fetch_max(base, Ordering::AcqRel);
        Ok(())
    }

    /// Makes every offset below `offset` durable (fdatasync). Concurrent callers share one
    /// sync: whoever takes the flush lock syncs everything written so far for all of them.
    pub fn flush_to(&self, offset: i64) -> Result<()> {
        if self.flushed_offset() >= offset {
            return Ok(());
        }
        let _g = self.flush_lock.lock();
        if self.flushed_offset() >= offset {
            return Ok(());
        }
        // Read the end before choosing the segment: anything below it is either in the
        // active segment or in a sealed one, which was synced when it was sealed.
        let target = self.log_end_offset();
        let unflushed = self.unflushed_messages.load(Ordering::Acquire);
        let active = self.segments.read().back().expect("one segment").clone();
        active.file.sync_data()?;
        self.flushed_offset.fetch_max(target, Ordering::AcqRel);
        self.unflushed_messages
            .fetch_sub(unflushed, Ordering::AcqRel);
        self.last_flush_ms.store(now_ms(), Ordering::Release);
        Ok(())
    }

    /// Flushes everything appended so far.
    pub fn flush(&self) -> Result<()> {
        self.flush_to(self.log_end_offset())
    }

    /// Applies `flush.ms`: flushes if unflushed data is older than the setting. Returns
    /// whether it flushed. Call it periodically.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool> {
        let Some(ms) = self.config().flush_ms else {
            return Ok(false);
        };
        if self.flushed_offset() >= self.log_end_offset()
            || now_ms - self.last_flush_ms.load(Ordering::Acquire) < ms as i64
        {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Reads whole batches starting with the one containing `offset`, up to `max_bytes`;
    /// at least one whole batch is returned if `offset` is below the end, even if it is larger
    /// than `max_bytes`. Reads stay within one segment. `offset == log end` gives no data.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        let start = self.log_start_offset();
        let end = self.log_end_offset();
        let out_of_range = LogError::OffsetOutOfRange { offset, start, end };
        if offset < start || offset > end {
            return Err(out_of_range);
        }
        let mut result = ReadResult {
            data: Bytes::new(),
            log_start_offset: start,
            log_end_offset: end,
        };
        if offset == end {
            return Ok(result);
        }
        let interval = self.config().index_interval_bytes;
        let segments = self.segments_from(offset);
        for seg in segments {
            let Some(pos) = seg.find_position(offset, interval)? else {
                continue;
            };
            result.data = read_batches(&seg, pos, max_bytes)?;
            return Ok(result);
        }
        Ok(result)
    }

    /// Segments that may hold `offset` or follow it, in order.
    fn segments_from(&self, offset: i64) -> Vec<Arc<Segment>> {
        let segs = self.segments.read();
        let i = segs
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        segs.range(i..).cloned().collect()
    }

    /// The first batch whose max timestamp is at least `timestamp` (Kafka's ListOffsets by
    /// time), found through the time indexes; `None` if every record is older.
    pub fn find_by_timestamp(&self, timestamp: i64) -> Result<Option<TimestampHit>> {
        let interval = self.config().index_interval_bytes;
        let start = self.log_start_offset();
        let segments: Vec<_> = self.segments.read().iter().cloned().collect();
        for seg in segments {
            if seg.max_timestamp() >= 0 && seg.max_timestamp() < timestamp {
                continue;
            }
            if let Some((pos, header)) = seg.find_timestamp(timestamp, interval)? {
                if header.last_offset() < start {
                    continue;
                }
                let mut buf = vec![0u8; header.total_len()];
                seg.read_at(&mut buf, pos)?;
                return Ok(Some(TimestampHit {
                    base_offset: header.base_offset,
                    header,
                    batch: Bytes::from(buf),
                }));
            }
        }
        Ok(None)
    }

    /// Deletes whole sealed segments past `retention.ms` (by their newest timestamp) or
    /// beyond `retention.bytes` (oldest first). The active segment is never deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let config = self.config();
        let mut outcome = RetentionOutcome::default();
        let mut deleted = Vec::new();
        {
            let mut segs = self.segments.write();
            let mut total: u64 = segs.iter().map(|s| s.size()).sum();
            while segs.len() > 1 {
                let oldest = &segs[0];
                let by_size = config
                    .retention_bytes
                    .is_some_and(|max| total.saturating_sub(oldest.size()) >= max);
                let by_time = config.retention_ms.is_some_and(|ms| {
                    let newest = oldest.max_timestamp();
                    newest >= 0 && now_ms.saturating_sub(newest) > ms as i64
                });
                if !(by_size || by_time) {
                    break;
                }
                let seg = segs.pop_front().expect("len > 1");
                total -= seg.size();
                outcome.segments += 1;
                outcome.bytes += seg.size();
                self.start_offset
                    .fetch_max(segs[0].base_offset, Ordering::AcqRel);
                deleted.push(seg);
            }
        }
        for seg in deleted {
            seg.delete_files()?;
        }
        Ok(outcome)
    }

    /// Flushes and refuses further appends. Reads keep working.
    pub fn close(&self) -> Result<()> {
        let w = self.writer.lock();
        self.closed.store(true, Ordering::Release);
        w.index_file.sync_data()?;
        w.time_index_file.sync_data()?;
        drop(w);
        self.flush()
    }

    /// Closes the log and removes its directory.
    pub fn delete(&self) -> Result<()> {
        let _w = self.writer.lock();
        self.closed.store(true, Ordering::Release);
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

fn write_entries(w: &mut Writer, offsets: &[IndexEntry], times: &[TimeEntry]) -> Result<()> {
    if !offsets.is_empty() {
        let mut buf = Vec::with_capacity(offsets.len() * index::INDEX_ENTRY_LEN);
        offsets.iter().for_each(|e| e.encode(&mut buf));
        io::Write::write_all(&mut w.index_file, &buf)?;
    }
    if !times.is_empty() {
        let mut buf = Vec::with_capacity(times.len() * index::TIME_ENTRY_LEN);
        times.iter().for_each(|e| e.encode(&mut buf));
        io::Write::write_all(&mut w.time_index_file, &buf)?;
    }
    Ok(())
}

/// Base offset of the last batch of a segment (via its index, then a short scan).
fn last_batch_base(seg: &Segment) -> io::Result<i64> {
    let last = seg.next_offset() - 1;
    let size = seg.size();
    let mut pos = seg.find_position(last, u64::MAX)?.unwrap_or(0);
    let mut base = seg.base_offset;
    while let Some(h) = seg.header_at(pos, size)? {
        base = h.base_offset;
        pos += h.total_len() as u64;
    }
    Ok(base)
}

/// Reads whole batches from `pos`: as many as fit in `max_bytes`, at least one.
fn read_batches(seg: &Segment, pos: u64, max_bytes: usize) -> Result<Bytes> {
    let size = seg.size();
    let available = size - pos;
    let want = (max_bytes as u64).min(available) as usize;
    let mut buf = BytesMut::zeroed(want.max(HEADER_LEN.min(available as usize)));
    seg.read_at(&mut buf, pos)?;
    let whole: usize = batch::headers(&buf).map(|(_, h)| h.total_len()).sum();
    if whole > 0 {
        buf.truncate(whole);
        return Ok(buf.freeze());
    }
    // The first batch alone exceeds the budget: return it whole.
    let first = BatchHeader::parse(&buf)
        .map(|h| h.total_len())
        .filter(|&n| n as u64 <= available)
        .ok_or_else(|| LogError::CorruptBatch(format!("unreadable batch at position {pos}")))?;
    let mut buf = BytesMut::zeroed(first);
    seg.read_at(&mut buf, pos)?;
    Ok(buf.freeze())
}

/// Recovers the active segment: keeps the index entries that point at real batches, then
/// checks every batch after the last of them (length, magic, offsets, CRC) and truncates the
/// file at the first one that fails. Returns the bytes written since the last index entry.
fn recover(seg: &Segment, interval: u64) -> Result<u64> {
    let data_len = seg.file.metadata()?.len();
    let mut offsets = index::load_offset_index(&seg.path("index"), data_len)?.unwrap_or_default();
    let mut times = index::load_time_index(&seg.path("timeindex"))?.unwrap_or_default();
    // Drop index entries that do not point at the batch they name (torn or stale index).
    let mut misses = 0;
    while let Some(last) = offsets.last().copied() {
        let ok = seg
            .header_at(last.position as u64, data_len)?
            .is_some_and(|h| h.base_offset == seg.base_offset + i64::from(last.rel_offset));
        if ok {
            break;
        }
        offsets.pop();
        misses += 1;
        if misses > 8 {
            offsets.clear();
        }
    }
    let (mut pos, mut next) = offsets.last().map_or((0, seg.base_offset), |e| {
        (e.position as u64, seg.base_offset + i64::from(e.rel_offset))
    });
    let scan_from_offset = next;
    times.retain(|t| seg.base_offset + i64::from(t.rel_offset) < scan_from_offset);
    let mut max_ts = times.last().map_or(-1, |t| t.timestamp);
    let mut since = 0u64;
    let mut buf = Vec::new();
    let mut first = true;
    while let Some(h) = seg.header_at(pos, data_len)? {
        let total = h.total_len() as u64;
        if h.batch_length < (HEADER_LEN - batch::LOG_OVERHEAD) as i32 || pos + total > data_len {
            break;
        }
        buf.resize(total as usize, 0);
        seg.read_at(&mut buf, pos)?;
        if !h.check_stored(&buf, Some(next)) {
            break;
        }
        let rel = (h.base_offset - seg.base_offset) as u32;
        max_ts = max_ts.max(h.max_timestamp);
        if !first && since >= interval {
            offsets.push(IndexEntry {
                rel_offset: rel,
                position: pos as u32,
            });
            if times.last().is_none_or(|t| max_ts > t.timestamp) {
                times.push(TimeEntry {
                    timestamp: max_ts,
                    rel_offset: rel,
                });
            }
            since = 0;
        }
        first = false;
        since += total;
        pos += total;
        next = h.last_offset() + 1;
    }
    if pos < data_len {
        tracing::warn!(
            segment = %seg.path("log").display(),
            valid_bytes = pos,
            dropped_bytes = data_len - pos,
            "truncating torn or corrupt log tail"
        );
        seg.file.set_len(pos)?;
        seg.file.sync_all()?;
    }
    // Rewrite both indexes from what was verified.
    let mut ibuf = Vec::with_capacity(offsets.len() * index::INDEX_ENTRY_LEN);
    offsets.iter().for_each(|e| e.encode(&mut ibuf));
    std::fs::write(segment_path_of(seg, "index"), &ibuf)?;
    let mut tbuf = Vec::with_capacity(times.len() * index::TIME_ENTRY_LEN);
    times.iter().for_each(|e| e.encode(&mut tbuf));
    std::fs::write(segment_path_of(seg, "timeindex"), &tbuf)?;
    seg.set_indexes(offsets, times);
    seg.set_recovered(pos, next, max_ts);
    Ok(since)
}

fn segment_path_of(seg: &Segment, ext: &str) -> PathBuf {
    seg.path(ext)
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Log>();
    let _ = segment_path;
}
