//! The log cleaner: compaction (`cleanup.policy=compact`) of a log's sealed segments, so
//! that each key keeps only its latest record.
//!
//! ## A pass ([`Log::clean`])
//!
//! 1. **Range.** The *clean section* is `[log start, clean_to)`, already compacted; the
//!    *dirty section* `[clean_to, limit)` follows it. `limit` is the first offset the cleaner
//!    may not touch: the active segment, a sealed segment whose background fdatasync has not
//!    finished (the recovery point), or the first segment holding a record newer than
//!    `min.compaction.lag.ms` (by its newest timestamp), whichever comes first.
//! 2. **Offset map.** The dirty section's records are read in order into a map from a
//!    128-bit hash of the key to the key's last offset. The map is bounded by
//!    `log.cleaner.dedupe.buffer.size` ([`map_capacity`] keys, [`ENTRY_BYTES`] per bucket):
//!    when the next batch's new keys do not fit, the map ends before that batch and this
//!    pass cleans only what it mapped (`map_end`); the next pass goes on from there.
//! 3. **Rewrite.** Every segment below `map_end` (clean section included) is copied, batch
//!    by batch, into `<base>.log.cleaned` keeping a record unless a later offset of its key
//!    is in the map, or it has no key, or it is a tombstone (null value) that has been in the
//!    clean section for more than `delete.retention.ms`. A batch that keeps all its records
//!    is copied byte for byte; one that lost some becomes one batch per run of consecutive
//!    offsets it kept ([`strom_records::rebuild_run`]: codec, timestamp type, leader epoch,
//!    producer id and epoch kept, base sequence moved with the base offset), so offsets
//!    never change and a batch's offset deltas stay its records' indexes; one that lost all
//!    is left out. Control batches (transaction markers) and transactional batches are
//!    copied whole and their records never enter the map (aborted data is not removed and
//!    never hides a committed value). A segment that would lose nothing is not rewritten;
//!    one that would be left empty (not the first) is removed instead of swapped.
//! 4. **Swap**, per segment, as Kafka does it: the `.cleaned` files (data and both indexes,
//!    rebuilt from the new data) are fdatasync'ed, the indexes renamed to `.swap`, then the
//!    data file (`<base>.log.cleaned` → `<base>.log.swap`: the commit point), the directory
//!    fsync'ed, the `.swap` files renamed over the old ones (not fsync'ed: a lost rename
//!    leaves a `.swap` the open rolls forward; the checkpoint's fsync at the end of the pass
//!    covers them), and the new segment replaces the old one in memory. The cleaner yields
//!    between segments.
//! 5. **Checkpoint.** `cleaner-checkpoint` (temp file, fsync, rename, fsync dir) records
//!    `clean_to = map_end` and when each range of offsets became clean (for tombstones).
//!
//! ## Invariants
//!
//! - Offsets never change; a cleaned segment keeps its base offset (its file name) and ends
//!   where the next segment starts, with gaps between its batches where records were taken
//!   out. `gaps_below` in the checkpoint (written before the first swap of a pass) tells
//!   [`Log::open`] which segments may have such gaps: their checks accept a batch that
//!   starts past the offset after the previous one, never one that overlaps it.
//! - The active segment, an unsynced sealed segment and records newer than
//!   `min.compaction.lag.ms` are never rewritten.
//! - A crash at any point leaves the log whole ([`finish_swaps`], run first by
//!   [`Log::open`]): a `<base>.log.cleaned` means the swap of that segment had not reached
//!   its commit point, so every `.cleaned` / `.swap` file of it is removed and the old
//!   segment stays; otherwise its `.swap` files are renamed into place. A crash before the
//!   checkpoint is written only makes the next pass map the same records again.
//! - A segment deleted by retention while it was being cleaned is not swapped back: swaps
//!   and deletions hold the log's `swap_lock`.
//! - Producer state does not depend on the cleaned segments: it is snapshotted at every
//!   roll and replayed from the tail, which the cleaner never touches.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{sync, sync_dir, Log};
use crate::fault::{self, Point};
use crate::index::{IndexEntry, TimeEntry};
use crate::segment::{file_stem, segment_path, Segment};
use crate::{LogError, Result};
use strom_records::BatchHeader;

/// Name of the cleaner's checkpoint file in a log directory.
pub const CHECKPOINT_FILE: &str = "cleaner-checkpoint";

/// Bytes of one bucket of the offset map: a 16-byte key hash, an 8-byte offset and the hash
/// table's control byte. The table has a power of two of buckets, at most 7/8 of them used,
/// so a pass maps at most [`map_capacity`] keys and its map never takes more than
/// `log.cleaner.dedupe.buffer.size` bytes.
pub const ENTRY_BYTES: usize = 25;

/// Keys one pass may map with `dedupe_buffer_bytes` of map (at least 1): 7/8 of the largest
/// power of two of buckets that fits (the table never grows past it: it grows only when
/// full, and is never asked to reserve more than one key at a time).
pub fn map_capacity(dedupe_buffer_bytes: usize) -> usize {
    let buckets = dedupe_buffer_bytes / ENTRY_BYTES;
    if buckets < 8 {
        return 1;
    }
    let buckets = 1usize << (usize::BITS - 1 - buckets.leading_zeros());
    buckets / 8 * 7
}

/// Kafka's `log.cleaner.dedupe.buffer.size` default: 128 MiB.
pub const DEDUPE_BUFFER_BYTES_DEFAULT: usize = 128 << 20;

/// Ranges of the clean section remembered with the time they became clean (for
/// tombstones); older ranges are merged beyond this, keeping the later time (tombstones
/// then live longer, never shorter).
const CLEANED_RANGES_MAX: usize = 32;

/// Settings of a pass, Kafka's topic and broker configs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CleanOptions {
    /// `log.cleaner.dedupe.buffer.size`: bytes of the offset map.
    pub dedupe_buffer_bytes: usize,
    /// `min.cleanable.dirty.ratio`: [`Log::cleaner_stats`] says a log is due above it.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records newer than this are never removed.
    pub min_compaction_lag_ms: u64,
    /// `max.compaction.lag.ms`: a log whose oldest dirty record is older is due whatever
    /// its dirty ratio.
    pub max_compaction_lag_ms: u64,
    /// `delete.retention.ms`: how long a tombstone stays once its segment was cleaned.
    pub delete_retention_ms: u64,
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions {
            dedupe_buffer_bytes: DEDUPE_BUFFER_BYTES_DEFAULT,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX as u64,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// How dirty a log is ([`Log::cleaner_stats`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CleanerStats {
    /// Bytes of the clean section.
    pub clean_bytes: u64,
    /// Bytes of the dirty section (cleanable now).
    pub dirty_bytes: u64,
    /// `dirty / (clean + dirty)`, 0 when both are empty.
    pub dirty_ratio: f64,
    /// Whether a pass is due: the ratio is above `min.cleanable.dirty.ratio`, or a dirty
    /// record is older than `max.compaction.lag.ms`.
    pub due: bool,
}

/// What a pass did ([`Log::clean`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    /// Segments rewritten and swapped in.
    pub segments_rewritten: usize,
    /// Bytes of the segments read (map and rewrite).
    pub bytes_read: u64,
    /// Bytes of the segments before and after their rewrite.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Records taken out.
    pub records_removed: u64,
    /// The clean section ends here after the pass.
    pub clean_to: i64,
    /// Whether the map filled up before the dirty section's end (the next pass goes on).
    pub partial: bool,
    /// Whether the pass stopped early (the log closed, or `between_segments` said stop).
    pub stopped: bool,
}

/// What `cleaner-checkpoint` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Checkpoint {
    /// Offsets below are compacted.
    clean_to: i64,
    /// Segments whose base offset is below this may have gaps between their batches.
    gaps_below: i64,
    /// `(end, at_ms)`, ends increasing: the offsets from the previous end to `end` became
    /// clean at `at_ms`.
    cleaned: Vec<(i64, i64)>,
}

impl Checkpoint {
    fn load(dir: &Path) -> Checkpoint {
        let Ok(text) = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)) else {
            return Checkpoint::default();
        };
        let mut lines = text.lines();
        let nums = |l: &str| -> Option<(i64, i64)> {
            let mut w = l.split_whitespace();
            let a = w.next()?.parse().ok()?;
            let b = w.next()?.parse().ok()?;
            Some((a, b))
        };
        let Some((clean_to, gaps_below)) = lines.next().and_then(nums) else {
            tracing::warn!(dir = %dir.display(), "unreadable cleaner checkpoint: the next pass cleans the log from its start");
            // Gaps may exist anywhere a pass ever rewrote: accept them everywhere.
            return Checkpoint {
                gaps_below: i64::MAX,
                ..Checkpoint::default()
            };
        };
        let cleaned = lines.filter_map(nums).collect();
        Checkpoint {
            clean_to,
            gaps_below,
            cleaned,
        }
    }

    fn save(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        {
            let mut text = format!("{} {}\n", self.clean_to, self.gaps_below);
            for (end, at) in &self.cleaned {
                text.push_str(&format!("{end} {at}\n"));
            }
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            sync(&f, dir)?;
        }
        std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
        sync_dir(dir)
    }

    /// When the offset `offset` (below `clean_to`) became clean; `i64::MAX` (never
    /// expires) if unknown.
    fn cleaned_at(&self, offset: i64) -> i64 {
        let i = self.cleaned.partition_point(|(end, _)| *end <= offset);
        self.cleaned.get(i).map_or(i64::MAX, |(_, at)| *at)
    }

    /// Records that `[clean_to, end)` became clean at `now`.
    fn advance(&mut self, end: i64, now: i64) {
        if end > self.clean_to {
            self.cleaned.push((end, now));
        }
        self.clean_to = self.clean_to.max(end);
        while self.cleaned.len() > CLEANED_RANGES_MAX {
            let (_, at0) = self.cleaned.remove(0);
            self.cleaned[0].1 = self.cleaned[0].1.max(at0);
        }
    }
}

/// `gaps_below` of the checkpoint in `dir` (0 without one): for [`Log::open`].
pub(crate) fn gaps_below(dir: &Path) -> i64 {
    Checkpoint::load(dir).gaps_below
}

fn cleaned_path(dir: &Path, base: i64, ext: &str, suffix: &str) -> std::path::PathBuf {
    dir.join(format!("{}.{ext}.{suffix}", file_stem(base)))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Finishes or rolls back the swaps a crash interrupted (see the module's invariants), and
/// removes a leftover checkpoint temp file. Run by [`Log::open`] before anything else.
pub(crate) fn finish_swaps(dir: &Path) -> io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // a new log
    };
    let mut bases = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == format!("{CHECKPOINT_FILE}.tmp") {
            remove_if_exists(&dir.join(name))?;
            continue;
        }
        if !(name.ends_with(".cleaned") || name.ends_with(".swap")) {
            continue;
        }
        if let Some(base) = name.get(..20).and_then(|s| s.parse::<i64>().ok()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    bases.dedup();
    for &base in &bases {
        let exts = ["log", "index", "timeindex"];
        if cleaned_path(dir, base, "log", "cleaned").exists() {
            for ext in exts {
                remove_if_exists(&cleaned_path(dir, base, ext, "cleaned"))?;
                remove_if_exists(&cleaned_path(dir, base, ext, "swap"))?;
            }
            tracing::info!(dir = %dir.display(), segment = base, "rolled back an interrupted cleaner swap: the segment is kept as it was");
        } else {
            // Data file first: it is the commit point's own file.
            for ext in exts {
                let swap = cleaned_path(dir, base, ext, "swap");
                if swap.exists() {
                    std::fs::rename(&swap, segment_path(dir, base, ext))?;
                }
                remove_if_exists(&cleaned_path(dir, base, ext, "cleaned"))?;
            }
            tracing::info!(dir = %dir.display(), segment = base, "finished an interrupted cleaner swap: the cleaned segment is in place");
        }
    }
    if !bases.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// A 128-bit hash of a key (two SipHashes with different prefixes): the map holds no keys.
/// Bytes, not a `u128`, so that a map entry is 24 bytes (no 16-byte alignment).
fn key_hash(key: &[u8]) -> [u8; 16] {
    let mut a = DefaultHasher::new();
    0u8.hash(&mut a);
    key.hash(&mut a);
    let mut b = DefaultHasher::new();
    1u8.hash(&mut b);
    key.hash(&mut b);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.finish().to_le_bytes());
    out[8..].copy_from_slice(&b.finish().to_le_bytes());
    out
}

/// Whether the cleaner reads a batch's records (never for control or transactional ones).
fn compactable(h: &BatchHeader) -> bool {
    !h.is_control() && !h.is_transactional()
}

fn read_batch(seg: &Segment, pos: u64, h: &BatchHeader) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    seg.read_into(&mut buf, h.total_len(), pos)?;
    Ok(buf.freeze())
}

fn records_of(batch: &Bytes) -> Result<Vec<strom_records::Record>> {
    strom_records::records(batch)
        .and_then(|rs| rs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| LogError::CorruptBatch(format!("cleaner: {e}")))
}

/// The range a pass may work on, from a snapshot of the segments.
struct Range {
    segments: Vec<Arc<Segment>>,
    clean_to: i64,
    limit: i64,
}

impl Log {
    fn clean_range(&self, opts: &CleanOptions, now_ms: i64, cp: &Checkpoint) -> Range {
        let segments: Vec<Arc<Segment>> = self.segments.read().iter().cloned().collect();
        let active = segments.last().expect("one segment").base_offset;
        let unsynced = self.seals.sealing.lock().recovery_point();
        let mut limit = active.min(unsynced);
        let lag = opts.min_compaction_lag_ms.min(i64::MAX as u64) as i64;
        for s in &segments {
            if s.base_offset >= limit {
                break;
            }
            if s.max_timestamp() > now_ms.saturating_sub(lag) {
                limit = s.base_offset;
                break;
            }
        }
        let clean_to = cp.clean_to.max(self.log_start_offset()).min(limit);
        Range {
            segments,
            clean_to,
            limit,
        }
    }

    /// How dirty the log is and whether a pass is due (`min.cleanable.dirty.ratio`,
    /// `max.compaction.lag.ms`). Reads the checkpoint and a few headers.
    pub fn cleaner_stats(&self, opts: &CleanOptions, now_ms: i64) -> Result<CleanerStats> {
        self.seals.check()?;
        let cp = Checkpoint::load(&self.dir);
        let r = self.clean_range(opts, now_ms, &cp);
        let interval = self.config().index_interval_bytes;
        let (mut clean, mut dirty) = (0u64, 0u64);
        let mut oldest_dirty = None;
        for s in r.segments.iter().take_while(|s| s.base_offset < r.limit) {
            if s.next_offset() <= r.clean_to {
                clean += s.size();
                continue;
            }
            let pos = if s.base_offset < r.clean_to {
                s.find_position(r.clean_to, interval)?.unwrap_or(s.size())
            } else {
                0
            };
            clean += pos;
            dirty += s.size() - pos;
            if oldest_dirty.is_none() {
                if let Some(h) = s.header_at(pos, s.size())? {
                    oldest_dirty = Some(if h.is_log_append_time() {
                        h.max_timestamp
                    } else {
                        h.base_timestamp
                    });
                }
            }
        }
        let ratio = if clean + dirty == 0 {
            0.0
        } else {
            dirty as f64 / (clean + dirty) as f64
        };
        let max_lag = opts.max_compaction_lag_ms.min(i64::MAX as u64) as i64;
        let overdue = oldest_dirty.is_some_and(|ts| now_ms.saturating_sub(ts) > max_lag);
        Ok(CleanerStats {
            clean_bytes: clean,
            dirty_bytes: dirty,
            dirty_ratio: ratio,
            due: dirty > 0 && (ratio > opts.min_cleanable_dirty_ratio || overdue),
        })
    }

    /// One cleaner pass (see the module docs), whatever the dirty ratio: the caller asks
    /// [`Log::cleaner_stats`] first. `between_segments` runs before each segment's rewrite
    /// (a background cleaner yields there); returning `false` stops the pass (the segments
    /// already swapped stay, the checkpoint does not move).
    pub fn clean(
        &self,
        opts: &CleanOptions,
        now_ms: i64,
        between_segments: &mut dyn FnMut() -> bool,
    ) -> Result<CleanOutcome> {
        self.seals.check()?;
        let _pass = self.cleaning.lock();
        let started = Instant::now();
        let mut cp = Checkpoint::load(&self.dir);
        let r = self.clean_range(opts, now_ms, &cp);
        let mut outcome = CleanOutcome {
            clean_to: r.clean_to,
            ..CleanOutcome::default()
        };
        if r.clean_to >= r.limit {
            return Ok(outcome);
        }
        let interval = self.config().index_interval_bytes;
        // 2. The offset map of the dirty section.
        let cap = map_capacity(opts.dedupe_buffer_bytes);
        let mut map: HashMap<[u8; 16], i64> = HashMap::new();
        let mut map_end = r.clean_to;
        'map: for s in r.segments.iter().take_while(|s| s.base_offset < r.limit) {
            if s.next_offset() <= r.clean_to {
                continue;
            }
            let size = s.size();
            let mut pos = if s.base_offset < r.clean_to {
                match s.find_position(r.clean_to, interval)? {
                    Some(p) => p,
                    None => continue,
                }
            } else {
                0
            };
            while let Some(h) = s.header_at(pos, size)? {
                if h.last_offset() >= r.clean_to && compactable(&h) {
                    let batch = read_batch(s, pos, &h)?;
                    outcome.bytes_read += batch.len() as u64;
                    let keys: Vec<([u8; 16], i64)> = records_of(&batch)?
                        .iter()
                        .filter_map(|rec| rec.key.as_ref().map(|k| (key_hash(k), rec.offset)))
                        .collect();
                    let new = keys.iter().filter(|(k, _)| !map.contains_key(k)).count();
                    if map.len() + new > cap {
                        outcome.partial = true;
                        break 'map;
                    }
                    // One at a time: `extend` could reserve past the bound.
                    for (k, o) in keys {
                        map.insert(k, o);
                    }
                }
                map_end = map_end.max(h.last_offset() + 1);
                pos += h.total_len() as u64;
            }
            if !outcome.partial {
                map_end = map_end.max(s.next_offset().min(r.limit));
            }
        }
        if map_end <= r.clean_to {
            tracing::warn!(
                dir = %self.dir.display(),
                dedupe_buffer_bytes = opts.dedupe_buffer_bytes,
                "log.cleaner.dedupe.buffer.size holds fewer keys than the next batch has: nothing cleaned"
            );
            return Ok(outcome);
        }
        // Gaps may appear below `map_end` from the first swap on.
        if cp.gaps_below < map_end {
            cp.gaps_below = map_end;
            cp.save(&self.dir)?;
        }
        // 3-4. Rewrite and swap, segment by segment.
        let delete_horizon =
            now_ms.saturating_sub(opts.delete_retention_ms.min(i64::MAX as u64) as i64);
        for (i, s) in r.segments.iter().enumerate() {
            if s.base_offset >= map_end || i + 1 >= r.segments.len() {
                break;
            }
            if !between_segments() || self.closed.load(Ordering::Acquire) {
                outcome.stopped = true;
                return Ok(outcome);
            }
            let next_base = r.segments[i + 1].base_offset;
            let keep = |rec: &strom_records::Record| -> bool {
                let Some(key) = &rec.key else { return false };
                if map
                    .get(&key_hash(key))
                    .is_some_and(|&last| rec.offset < last)
                {
                    return false;
                }
                if rec.value.is_none() && rec.offset < r.clean_to {
                    return cp.cleaned_at(rec.offset) > delete_horizon;
                }
                true
            };
            if let Some(done) = self.rewrite_segment(s, interval, &keep, &mut outcome)? {
                let swapped = if done.bytes == 0 && i > 0 {
                    self.drop_empty(s)?
                } else {
                    self.swap_in(s, done, next_base, now_ms)?
                };
                if !swapped {
                    outcome.stopped = true;
                    return Ok(outcome);
                }
                outcome.segments_rewritten += 1;
            }
        }
        // 5. The checkpoint.
        cp.advance(map_end, now_ms);
        cp.save(&self.dir)?;
        outcome.clean_to = map_end;
        tracing::debug!(
            dir = %self.dir.display(),
            clean_to = map_end,
            segments = outcome.segments_rewritten,
            removed = outcome.records_removed,
            ms = started.elapsed().as_millis() as u64,
            "cleaner pass"
        );
        Ok(outcome)
    }

    /// Writes the cleaned copy of `seg` into its `.cleaned` files (synced); `None` if it
    /// would lose nothing (no file is written).
    fn rewrite_segment(
        &self,
        seg: &Segment,
        interval: u64,
        keep: &dyn Fn(&strom_records::Record) -> bool,
        outcome: &mut CleanOutcome,
    ) -> Result<Option<Rewritten>> {
        let size = seg.size();
        // First a dry run: does the segment lose anything?
        let mut loses = false;
        let mut pos = 0u64;
        while let Some(h) = seg.header_at(pos, size)? {
            if compactable(&h) {
                let batch = read_batch(seg, pos, &h)?;
                outcome.bytes_read += batch.len() as u64;
                if records_of(&batch)?.iter().any(|r| !keep(r)) {
                    loses = true;
                    break;
                }
            }
            pos += h.total_len() as u64;
        }
        if !loses {
            return Ok(None);
        }
        let dir = &self.dir;
        let base = seg.base_offset;
        let path = cleaned_path(dir, base, "log", "cleaned");
        let file = File::create(&path)?;
        let mut out = BufWriter::with_capacity(256 << 10, &file);
        let mut written = 0u64;
        let mut offsets = Vec::new();
        let mut times = Vec::new();
        let (mut since, mut max_ts, mut last_rel) = (0u64, -1i64, None);
        let mut put = |bytes: &[u8], out: &mut BufWriter<&File>| -> io::Result<()> {
            let h = BatchHeader::parse(bytes).expect("a whole batch");
            let rel = (h.base_offset - base) as u32;
            max_ts = max_ts.max(h.max_timestamp);
            if since >= interval && written > 0 {
                offsets.push(IndexEntry {
                    rel_offset: rel,
                    position: written as u32,
                });
                TimeEntry::push_newer(&mut times, max_ts, rel);
                since = 0;
            }
            last_rel = Some(rel);
            out.write_all(bytes)?;
            since += bytes.len() as u64;
            written += bytes.len() as u64;
            Ok(())
        };
        let mut pos = 0u64;
        while let Some(h) = seg.header_at(pos, size)? {
            let batch = read_batch(seg, pos, &h)?;
            pos += h.total_len() as u64;
            if !compactable(&h) {
                put(&batch, &mut out)?;
                continue;
            }
            let records = records_of(&batch)?;
            let kept: Vec<bool> = records.iter().map(keep).collect();
            if kept.iter().all(|k| *k) {
                put(&batch, &mut out)?;
                continue;
            }
            outcome.records_removed += kept.iter().filter(|k| !**k).count() as u64;
            let mut i = 0;
            while i < records.len() {
                if !kept[i] {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < records.len() && kept[i] {
                    i += 1;
                }
                let run = strom_records::rebuild_run(&h, &records[start..i])?;
                put(&run, &mut out)?;
            }
        }
        if let Some(rel) = last_rel {
            TimeEntry::push_newer(&mut times, max_ts, rel);
        }
        out.flush()?;
        drop(out);
        sync(&file, dir)?;
        let mut ibuf = Vec::new();
        offsets.iter().for_each(|e| e.encode(&mut ibuf));
        let mut tbuf = Vec::new();
        times.iter().for_each(|e| e.encode(&mut tbuf));
        for (ext, bytes) in [("index", &ibuf), ("timeindex", &tbuf)] {
            let mut f = File::create(cleaned_path(dir, base, ext, "cleaned"))?;
            f.write_all(bytes)?;
            sync(&f, dir)?;
        }
        outcome.bytes_before += size;
        outcome.bytes_after += written;
        Ok(Some(Rewritten {
            offsets,
            times,
            max_ts,
            bytes: written,
        }))
    }

    /// A segment (not the first) that would be empty after cleaning is removed instead of
    /// swapped: the previous segment then ends where the following one starts (a gap the
    /// open accepts, both being below `gaps_below`), so compaction does not leave one empty
    /// segment (and its open files) per segment ever written. `false` if `old` is gone.
    fn drop_empty(&self, old: &Arc<Segment>) -> Result<bool> {
        let dir = &self.dir;
        for ext in ["log", "index", "timeindex"] {
            remove_if_exists(&cleaned_path(dir, old.base_offset, ext, "cleaned"))?;
        }
        let _swap = self.swap_lock.lock();
        if self.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        {
            let mut segs = self.segments.write();
            let Some(i) = segs.iter().position(|s| Arc::ptr_eq(s, old)) else {
                return Ok(false);
            };
            if i == 0 || i + 1 >= segs.len() {
                return Ok(false);
            }
            let (prev, next_base) = (segs[i - 1].clone(), segs[i + 1].base_offset);
            segs.remove(i);
            prev.set_recovered(prev.size(), next_base, prev.max_timestamp());
        }
        fault::check(dir, Point::CleanerSwap(6), None)?;
        // No directory fsync here: a crash that brings the old files back brings back a
        // whole segment (the state before this pass), which the next pass cleans again; the
        // checkpoint's fsync of the directory at the end of the pass makes the removal durable.
        // (Each fsync of the directory is a journal commit that also writes back the dirty
        // pages of the partitions being appended to.)
        old.delete_files()?;
        Ok(true)
    }

    /// Swaps the `.cleaned` files of `old` in (Kafka's sequence, see the module docs) and
    /// the new segment into the list. `false` if `old` is gone (retention, close): the
    /// cleaned files are removed and nothing changes.
    fn swap_in(
        &self,
        old: &Arc<Segment>,
        new: Rewritten,
        next_base: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let dir = &self.dir;
        let base = old.base_offset;
        let interval = self.config().index_interval_bytes;
        // The old segment's readers must never load the new index files for the old data.
        old.find_position(base, interval)?;
        let _swap = self.swap_lock.lock();
        let present = self.segments.read().iter().any(|s| Arc::ptr_eq(s, old));
        if !present || self.closed.load(Ordering::Acquire) {
            for ext in ["log", "index", "timeindex"] {
                remove_if_exists(&cleaned_path(dir, base, ext, "cleaned"))?;
            }
            return Ok(false);
        }
        let step = |n: u8| fault::check(dir, Point::CleanerSwap(n), None);
        step(1)?;
        for ext in ["index", "timeindex"] {
            std::fs::rename(
                cleaned_path(dir, base, ext, "cleaned"),
                cleaned_path(dir, base, ext, "swap"),
            )?;
        }
        step(2)?;
        // The commit point: from here a crash finishes the swap.
        std::fs::rename(
            cleaned_path(dir, base, "log", "cleaned"),
            cleaned_path(dir, base, "log", "swap"),
        )?;
        sync_dir(dir)?;
        step(3)?;
        std::fs::rename(
            cleaned_path(dir, base, "log", "swap"),
            segment_path(dir, base, "log"),
        )?;
        step(4)?;
        for ext in ["index", "timeindex"] {
            std::fs::rename(
                cleaned_path(dir, base, ext, "swap"),
                segment_path(dir, base, ext),
            )?;
        }
        // No second directory fsync: if a crash loses any of these renames, the `.swap` files
        // are back and the open rolls the swap forward again (any subset of them is fine);
        // the checkpoint's fsync at the end of the pass makes them durable.
        step(5)?;
        let seg = Segment::open(dir, base, next_base, now_ms)?;
        seg.set_indexes(new.offsets, new.times);
        let size = seg.size();
        seg.set_recovered(size, next_base, new.max_ts);
        let seg = Arc::new(seg);
        let mut segs = self.segments.write();
        if let Some(slot) = segs.iter_mut().find(|s| Arc::ptr_eq(s, old)) {
            *slot = seg;
        }
        Ok(true)
    }
}

/// The indexes of a segment written by [`Log::rewrite_segment`].
struct Rewritten {
    offsets: Vec<IndexEntry>,
    times: Vec<TimeEntry>,
    max_ts: i64,
    /// Bytes of the new data file.
    bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_stays_within_the_dedupe_buffer() {
        assert_eq!(map_capacity(0), 1);
        assert_eq!(map_capacity(ENTRY_BYTES * 8), 7);
        assert_eq!(map_capacity(ENTRY_BYTES * 15), 7);
        assert_eq!(map_capacity(ENTRY_BYTES * 16), 14);
        // Kafka's default 128 MiB: 4 Mi buckets, 3.5 Mi keys.
        assert_eq!(map_capacity(DEDUPE_BUFFER_BYTES_DEFAULT), (1 << 22) / 8 * 7);
        // Filling a map to its capacity one key at a time never grows the table past the
        // buckets the bound allows.
        for bytes in [ENTRY_BYTES * 64, 100_000, 1 << 20] {
            let cap = map_capacity(bytes);
            let mut map: HashMap<[u8; 16], i64> = HashMap::new();
            for i in 0..cap {
                map.insert(key_hash(&i.to_le_bytes()), i as i64);
            }
            assert_eq!(map.len(), cap);
            let buckets = (map.capacity() + 1).next_power_of_two();
            assert!(
                buckets * ENTRY_BYTES <= bytes,
                "{bytes}: {} buckets",
                buckets
            );
            assert_eq!(std::mem::size_of::<([u8; 16], i64)>(), 24);
        }
    }
}
