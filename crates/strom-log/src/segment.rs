//! One segment: a data file of whole batches plus its two sparse indexes.
//!
//! Invariant: bytes `[0, size)` of the data file are whole, valid batches with contiguous
//! offsets starting at `base_offset`. `size` only grows (while active) and is published
//! after the bytes are written, so a reader never sees a partial batch.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::handles::{LazyFile, Mode};
use crate::index::{self, IndexEntry, TimeEntry};
use strom_records::{BatchHeader, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2};

/// File name stem of a segment: the base offset, zero-padded to 20 digits.
pub(crate) fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// What [`Segment::scan_end`] read: the batches from the offset index's last good entry to
/// the end of the data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// The offset after the last batch.
    pub(crate) next: i64,
    /// The base offset of the first batch scanned.
    pub(crate) from: i64,
    /// The newest timestamp among the batches scanned, -1 if none.
    pub(crate) max_timestamp: i64,
}

pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    /// Unique in the process: tells a [`crate::FileRange`]'s segment from a later one with
    /// the same base offset (the cleaner's rewrite).
    pub(crate) id: u64,
    dir: PathBuf,
    /// The data file, open while used ([`crate::handles`]); its open handle is shared with
    /// readers that send a range of it (`sendfile`).
    file: Arc<LazyFile>,
    /// Visible bytes: everything below is whole batches.
    size: AtomicU64,
    /// Offset after the last batch of this segment.
    next_offset: AtomicI64,
    /// Largest timestamp in the segment, -1 if unknown or empty.
    max_timestamp: AtomicI64,
    /// Loaded on first use for sealed segments; always loaded for the active one.
    index: RwLock<Option<Vec<IndexEntry>>>,
    time_index: RwLock<Option<Vec<TimeEntry>>>,
    pub(crate) created_ms: i64,
    /// This segment's random number, for its `segment.jitter.ms` ([`crate::config::LogConfig::roll_due`]).
    pub(crate) roll_seed: u64,
}

/// A new segment's [`Segment::id`].
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A random number for a new or reopened segment's roll jitter (std's randomly keyed hasher,
/// so no RNG dependency).
fn roll_seed(base_offset: i64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(base_offset)
}

impl Segment {
    pub(crate) fn path(&self, ext: &str) -> PathBuf {
        segment_path(&self.dir, self.base_offset, ext)
    }

    /// The open data file (opened again if it was closed): for writes, syncs and `sendfile`.
    pub(crate) fn file(&self) -> io::Result<Arc<File>> {
        self.file.get()
    }

    /// Creates an empty segment, replacing any leftover files of that name.
    pub(crate) fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<Segment> {
        let path = segment_path(dir, base_offset, "log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        for ext in ["index", "timeindex"] {
            File::create(segment_path(dir, base_offset, ext))?;
        }
        Ok(Segment {
            base_offset,
            id: next_id(),
            dir: dir.to_path_buf(),
            file: LazyFile::opened(path, Mode::ReadWrite, file)?,
            size: AtomicU64::new(0),
            next_offset: AtomicI64::new(base_offset),
            max_timestamp: AtomicI64::new(-1),
            index: RwLock::new(Some(Vec::new())),
            time_index: RwLock::new(Some(Vec::new())),
            created_ms: now_ms,
            roll_seed: roll_seed(base_offset),
        })
    }

    /// Opens an existing segment as is; the caller trusts `[0, len)` (sealed) or recovers it.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        next_offset: i64,
        now_ms: i64,
    ) -> io::Result<Segment> {
        let path = segment_path(dir, base_offset, "log");
        // Not opened until used: a log opens with no descriptor for its sealed segments.
        let meta = std::fs::metadata(&path)?;
        let len = meta.len();
        let seg = Segment {
            base_offset,
            id: next_id(),
            dir: dir.to_path_buf(),
            file: LazyFile::closed(path, Mode::ReadWrite, &meta),
            size: AtomicU64::new(len),
            next_offset: AtomicI64::new(next_offset),
            max_timestamp: AtomicI64::new(-1),
            index: RwLock::new(None),
            time_index: RwLock::new(None),
            created_ms: now_ms,
            roll_seed: roll_seed(base_offset),
        };
        let newest = seg.last_time_entry_on_disk().map_or(-1, |t| t.timestamp);
        seg.max_timestamp.store(newest, Ordering::Release);
        Ok(seg)
    }

    /// The last entry of the time index file, unchecked (see [`Segment::settle_max_timestamp`]).
    fn last_time_entry_on_disk(&self) -> Option<TimeEntry> {
        let f = File::open(self.path("timeindex")).ok()?;
        let len = f.metadata().ok()?.len();
        let n = len / index::TIME_ENTRY_LEN as u64;
        let mut buf = [0u8; index::TIME_ENTRY_LEN];
        f.read_exact_at(&mut buf, n.checked_sub(1)? * index::TIME_ENTRY_LEN as u64)
            .ok()?;
        Some(TimeEntry {
            timestamp: i64::from_be_bytes(buf[0..8].try_into().expect("8 bytes")),
            rel_offset: u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes")),
        })
    }

    /// Settles a synced segment's newest timestamp after [`Segment::scan_end`], whose scan
    /// read the batches after the offset index's last entry: the time index's last entry
    /// covers everything before it (a running maximum), the scan the rest. A time index that
    /// ends before the scan started lost entries (or is missing while the segment holds
    /// batches): then it could name a timestamp older than the segment's newest record, and
    /// retention would delete records still within `retention.ms` and lookups by time would
    /// skip them, so both indexes are rebuilt from the data. Returns whether it rebuilt.
    pub(crate) fn settle_max_timestamp(&self, end: &ScanEnd, interval: u64) -> io::Result<bool> {
        let covered = match self.last_time_entry_on_disk() {
            Some(t) if self.base_offset + i64::from(t.rel_offset) >= end.from => true,
            // A time index gets an entry only for a newer timestamp: when the batches after
            // its last entry are no newer (several batches in the same millisecond), it
            // ends before the scan and is still whole.
            Some(t) => self
                .newest_timestamp_from(self.base_offset + i64::from(t.rel_offset), interval)?
                .is_some_and(|newest| newest <= t.timestamp),
            None => false,
        };
        if covered || end.next == self.base_offset {
            self.max_timestamp
                .fetch_max(end.max_timestamp, Ordering::AcqRel);
            return Ok(false);
        }
        let (offsets, times) = self.rebuild_indexes(interval)?;
        let mut ibuf = Vec::with_capacity(offsets.len() * index::INDEX_ENTRY_LEN);
        offsets.iter().for_each(|e| e.encode(&mut ibuf));
        let mut tbuf = Vec::with_capacity(times.len() * index::TIME_ENTRY_LEN);
        times.iter().for_each(|e| e.encode(&mut tbuf));
        std::fs::write(self.path("index"), &ibuf)?;
        std::fs::write(self.path("timeindex"), &tbuf)?;
        self.set_indexes(offsets, times);
        Ok(true)
    }

    /// The newest timestamp of the batches from the one holding `offset` to the end of the
    /// file (found by [`Segment::find_position`], then a header scan); `None` if no batch
    /// holds it.
    fn newest_timestamp_from(&self, offset: i64, interval: u64) -> io::Result<Option<i64>> {
        let Some(mut pos) = self.find_position(offset, interval)? else {
            return Ok(None);
        };
        let size = self.size();
        let mut newest = None;
        while let Some(h) = self.header_at(pos, size)? {
            newest = newest.max(Some(h.max_timestamp));
            pos += h.total_len() as u64;
        }
        Ok(newest)
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Publishes appended bytes: called by the writer after the data is in the file.
    pub(crate) fn publish(&self, size: u64, next_offset: i64, max_timestamp: i64) {
        self.max_timestamp
            .fetch_max(max_timestamp, Ordering::AcqRel);
        self.next_offset.store(next_offset, Ordering::Release);
        self.size.store(size, Ordering::Release);
    }

    /// Resets the visible state after recovery truncated the file.
    pub(crate) fn set_recovered(&self, size: u64, next_offset: i64, max_timestamp: i64) {
        self.max_timestamp.store(max_timestamp, Ordering::Release);
        self.publish(size, next_offset, max_timestamp);
    }

    /// Appends `len` bytes read at `pos` to `buf`, without zero-filling them first.
    pub(crate) fn read_into(
        &self,
        buf: &mut bytes::BytesMut,
        len: usize,
        pos: u64,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        buf.reserve(len);
        let mut done = 0usize;
        while done < len {
            let spare = buf.spare_capacity_mut();
            let read = self.file.with(|f| {
                // SAFETY: `pread` writes at most `len - done` bytes into the spare capacity
                // (reserved above), a valid writable allocation; nothing reads it before
                // `set_len` below covers exactly the bytes written.
                let n = unsafe {
                    libc::pread(
                        f.as_raw_fd(),
                        spare.as_mut_ptr().cast::<libc::c_void>(),
                        len - done,
                        (pos + done as u64) as libc::off_t,
                    )
                };
                // errno is read before anything else may make a syscall.
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            });
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            // SAFETY: the kernel initialised these `n` bytes.
            unsafe { buf.set_len(buf.len() + n) };
            done += n;
        }
        Ok(())
    }

    pub(crate) fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.with(|f| f.read_exact_at(buf, pos))
    }

    /// Header of the batch at `pos`, if a whole header lies below `limit`.
    pub(crate) fn header_at(&self, pos: u64, limit: u64) -> io::Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > limit {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_LEN];
        self.read_at(&mut buf, pos)?;
        Ok(BatchHeader::parse(&buf))
    }

    /// Appends entries to the in-memory indexes (the writer writes the files).
    pub(crate) fn push_index(&self, offsets: &[IndexEntry], times: &[TimeEntry]) {
        if !offsets.is_empty() {
            self.index
                .write()
                .get_or_insert_with(Vec::new)
                .extend_from_slice(offsets);
        }
        if !times.is_empty() {
            self.time_index
                .write()
                .get_or_insert_with(Vec::new)
                .extend_from_slice(times);
        }
    }

    pub(crate) fn set_indexes(&self, offsets: Vec<IndexEntry>, times: Vec<TimeEntry>) {
        *self.index.write() = Some(offsets);
        *self.time_index.write() = Some(times);
    }

    /// Bytes of the in-memory indexes as files (entries × entry length).
    pub(crate) fn index_bytes(&self) -> (u64, u64) {
        let n = self.index.read().as_ref().map_or(0, Vec::len);
        let t = self.time_index.read().as_ref().map_or(0, Vec::len);
        (
            (n * index::INDEX_ENTRY_LEN) as u64,
            (t * index::TIME_ENTRY_LEN) as u64,
        )
    }

    pub(crate) fn last_time_entry(&self) -> Option<TimeEntry> {
        self.time_index
            .read()
            .as_ref()
            .and_then(|t| t.last().copied())
    }

    /// Loads the indexes of a sealed segment on first use; rebuilds them by a header scan if
    /// they are missing or do not match the data.
    fn ensure_indexes(&self, interval: u64) -> io::Result<()> {
        if self.index.read().is_some() && self.time_index.read().is_some() {
            return Ok(());
        }
        let size = self.size();
        let offsets = index::load_offset_index(&self.path("index"), size)?;
        let times = index::load_time_index(&self.path("timeindex"))?;
        let valid = match &offsets {
            Some(o) => o
                .iter()
                .all(|e| e.position as u64 + HEADER_LEN as u64 <= size),
            None => false,
        };
        match (offsets, times, valid) {
            (Some(o), Some(t), true) => self.set_indexes(o, t),
            _ => {
                let (o, t) = self.rebuild_indexes(interval)?;
                self.set_indexes(o, t);
            }
        }
        Ok(())
    }

    fn rebuild_indexes(&self, interval: u64) -> io::Result<(Vec<IndexEntry>, Vec<TimeEntry>)> {
        let size = self.size();
        let mut offsets = Vec::new();
        let mut times = Vec::new();
        let mut pos = 0u64;
        let mut since = 0u64;
        let mut max_ts = -1i64;
        let mut last_rel = None;
        while let Some(h) = self.header_at(pos, size)? {
            let rel = (h.base_offset - self.base_offset) as u32;
            last_rel = Some(rel);
            max_ts = max_ts.max(h.max_timestamp);
            if since >= interval && pos > 0 {
                offsets.push(IndexEntry {
                    rel_offset: rel,
                    position: pos as u32,
                });
                TimeEntry::push_newer(&mut times, max_ts, rel);
                since = 0;
            }
            since += h.total_len() as u64;
            pos += h.total_len() as u64;
        }
        // The final entry `Log::roll` writes: the newest timestamp at the last batch.
        if let Some(rel) = last_rel {
            TimeEntry::push_newer(&mut times, max_ts, rel);
        }
        self.max_timestamp.store(max_ts, Ordering::Release);
        Ok((offsets, times))
    }

    /// Position of the batch containing `offset`, or `None` if it is past this segment.
    pub(crate) fn find_position(&self, offset: i64, interval: u64) -> io::Result<Option<u64>> {
        self.ensure_indexes(interval)?;
        let size = self.size();
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let mut pos = {
            let idx = self.index.read();
            idx.as_deref()
                .and_then(|i| index::lookup_offset(i, rel))
                .map_or(0, |e| e.position as u64)
        };
        while let Some(h) = self.header_at(pos, size)? {
            if h.last_offset() >= offset {
                return Ok(Some(pos));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// End of the whole batches from `pos` (a batch start) that fit in `max_bytes` — at
    /// least the first batch, whatever its size. Batch boundaries come from the sparse index
    /// (the last entry within the budget), then a few headers after it, so the data itself
    /// is not read.
    pub(crate) fn whole_batches_end(
        &self,
        pos: u64,
        max_bytes: usize,
        interval: u64,
    ) -> io::Result<u64> {
        let size = self.size();
        let limit = pos.saturating_add(max_bytes as u64);
        if limit >= size {
            return Ok(size);
        }
        self.ensure_indexes(interval)?;
        let mut end = {
            let idx = self.index.read();
            let entries = idx.as_deref().unwrap_or(&[]);
            let n = entries.partition_point(|e| e.position as u64 <= limit);
            entries[..n]
                .last()
                .map(|e| e.position as u64)
                .filter(|&p| p > pos)
                .unwrap_or(pos)
        };
        for _ in 0..64 {
            let Some(h) = self.header_at(end, size)? else {
                break;
            };
            let next = end + h.total_len() as u64;
            if next > limit {
                break;
            }
            end = next;
        }
        if end == pos {
            let h = self.header_at(pos, size)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no batch header at {pos}"),
                )
            })?;
            end = (pos + h.total_len() as u64).min(size);
        }
        Ok(end)
    }

    /// Position and header of the first batch whose max timestamp is at least `timestamp`.
    pub(crate) fn find_timestamp(
        &self,
        timestamp: i64,
        interval: u64,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        self.ensure_indexes(interval)?;
        let start = self
            .time_index
            .read()
            .as_deref()
            .and_then(|t| index::lookup_time_before(t, timestamp))
            .map(|e| self.base_offset + i64::from(e.rel_offset));
        let size = self.size();
        let mut pos = match start {
            Some(off) => self.find_position(off, interval)?.unwrap_or(0),
            None => 0,
        };
        while let Some(h) = self.header_at(pos, size)? {
            if h.max_timestamp >= timestamp {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// The offset after the last batch of a sealed segment: from the last index entry that
    /// names a batch, a header scan to the end of the file (a few headers, as the index has
    /// an entry every `index.interval.bytes`; the whole file if the index is lost).
    /// `Ok(Err(reason))` if the batches do not follow each other up to the end of the file.
    /// With `gaps` (a segment the cleaner may have rewritten) a batch may start past the
    /// offset after the previous one (the records between were compacted away), never
    /// before it.
    pub(crate) fn scan_end(&self, gaps: bool) -> io::Result<Result<ScanEnd, String>> {
        let size = self.size();
        let (mut pos, mut next) = (0u64, self.base_offset);
        let mut max_timestamp = -1i64;
        let mut from = None;
        for e in index::load_offset_tail(&self.path("index"), 8)?
            .iter()
            .rev()
        {
            let at = u64::from(e.position);
            let due = self.base_offset + i64::from(e.rel_offset);
            if at < size
                && self
                    .header_at(at, size)?
                    .is_some_and(|h| h.base_offset == due)
            {
                (pos, next) = (at, due);
                break;
            }
        }
        while pos < size {
            let Some(h) = self.header_at(pos, size)? else {
                return Ok(Err(format!(
                    "the last {} bytes (from position {pos}) are not a whole batch",
                    size - pos
                )));
            };
            if h.magic != MAGIC_V2
                || h.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32
                || h.last_offset_delta < 0
                || pos + h.total_len() as u64 > size
            {
                return Ok(Err(format!(
                    "the batch at position {pos} is not a whole batch"
                )));
            }
            if h.base_offset != next && !(gaps && h.base_offset > next) {
                return Ok(Err(format!(
                    "the batch at position {pos} has base offset {} where {next} was due",
                    h.base_offset
                )));
            }
            if from.is_none() {
                from = Some(h.base_offset);
            }
            max_timestamp = max_timestamp.max(h.max_timestamp);
            next = h.last_offset() + 1;
            pos += h.total_len() as u64;
        }
        Ok(Ok(ScanEnd {
            next,
            from: from.unwrap_or(next),
            max_timestamp,
        }))
    }

    /// Deletes the segment's files (readers holding it keep their open handle). The data
    /// file goes last: a crash in between leaves a segment without indexes (rebuilt when
    /// needed), never indexes without their data, which the next open would take for a lost
    /// segment.
    pub(crate) fn delete_files(&self) -> io::Result<()> {
        remove_files(&self.dir, self.base_offset)
    }
}

/// Removes the files of the segment at `base_offset` in `dir`, the data file last (see
/// [`Segment::delete_files`]); missing files are no error.
pub(crate) fn remove_files(dir: &Path, base_offset: i64) -> io::Result<()> {
    for ext in ["txnindex", "index", "timeindex", "log"] {
        match std::fs::remove_file(segment_path(dir, base_offset, ext)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{}.{ext}", file_stem(base_offset)))
}
