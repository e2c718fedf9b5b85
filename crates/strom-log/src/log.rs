//! The partition log: an ordered list of segments, one writer, many readers.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

use crate::error::is_out_of_space;
use crate::fault::{self, Point};
use crate::handles::{self, LazyFile, Mode};
use crate::index::{self, IndexEntry, TimeEntry};
use crate::segment::{self, segment_path, Segment};
use crate::txnindex::{self, AbortedRange};
use crate::{LogConfig, LogError, Result, TimestampType};
use strom_records::{self as batch, BatchHeader, HEADER_LEN};

#[path = "cleaner.rs"]
pub(crate) mod cleaner;

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

/// A byte range of a segment file holding whole batches, byte-identical to what was stored:
/// for a door that sends it with `sendfile` (page cache → socket, no copy in user space).
/// The file stays readable even if retention deletes the segment meanwhile.
#[derive(Clone, Debug)]
pub struct FileRange {
    /// The segment's data file.
    pub file: Arc<File>,
    /// Which segment ([`Segment::id`]).
    segment: u64,
    /// Start of the first batch.
    pub pos: u64,
    /// Length in bytes (whole batches).
    pub len: usize,
}

/// What [`Log::read_range`] found.
#[derive(Clone, Debug)]
pub struct RangeRead {
    /// Whole batches, `None` at the log end.
    pub range: Option<FileRange>,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset at the time of the read.
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
    index_file: Arc<LazyFile>,
    time_index_file: Arc<LazyFile>,
    /// Lengths of the two index files: a failed index write is cut back to them.
    index_len: u64,
    time_index_len: u64,
    bytes_since_index: u64,
}

/// Appends at least this large that must be durable at once are written with `RWF_DSYNC`
/// (one syscall that writes and syncs the range) instead of a write and a separate
/// fdatasync; smaller ones keep the group commit of [`Log::flush_to`].
const DSYNC_WRITE_MIN: usize = 128 << 10;

/// Name of the file holding the recovery point: the base offset of the oldest segment that
/// may not be fully on disk. Every segment from it on is checked when the log is opened.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";

/// Segments sealed by a roll whose fdatasync runs in the background.
struct Sealing {
    /// Sealed segments not yet known to be on disk, oldest first.
    pending: Vec<Arc<Segment>>,
    /// Base offset of the active segment.
    active_base: i64,
    threads: Vec<JoinHandle<()>>,
}

impl Sealing {
    fn recovery_point(&self) -> i64 {
        self.pending
            .iter()
            .map(|s| s.base_offset)
            .min()
            .unwrap_or(self.active_base)
    }
}

/// Shared between the log and its seal threads.
struct SealState {
    dir: PathBuf,
    sealing: Mutex<Sealing>,
    /// The recovery point last written to disk (writes are serialised by this lock).
    written_point: Mutex<i64>,
    /// Set by the first failed sync: why the log is offline (see [`LogError::Failed`]).
    failed: OnceLock<String>,
    /// Whether the recovery point on disk asks for a full check (written after a failed
    /// sync, see [`SealState::mark_for_full_check`]).
    marked: AtomicBool,
    /// Held by whoever syncs segment data: [`Log::flush_to`] (which makes concurrent callers
    /// share one sync) and a seal. A failed sync reports its error to one caller only (the
    /// kernel's per-file error cursor), so the sync and the setting of `failed` happen under
    /// this lock and the next holder sees `failed` before it could take a later, clean sync
    /// for a success.
    flush_lock: Mutex<()>,
}

impl SealState {
    /// Takes the log offline after a failed sync of `what`: logged once, at ERROR; every
    /// later append, flush and read gets [`LogError::Failed`]. A failed sync is never tried
    /// again: the kernel may have dropped the pages it could not write, and a second sync
    /// would report success without them.
    fn fail(&self, what: &str, e: &io::Error) -> LogError {
        let reason = format!("{what}: {e}");
        if self.failed.set(reason.clone()).is_ok() {
            tracing::error!(
                dir = %self.dir.display(),
                error = %e,
                "{what} failed: the log is offline until the broker restarts (what was not yet \
                 on disk is treated as lost; the next start checks every batch from the \
                 recovery point on)"
            );
            self.mark_for_full_check();
        }
        LogError::Failed(self.failed.get().cloned().unwrap_or(reason))
    }

    /// After a failed sync, pages written since the last good sync may be lost anywhere,
    /// also before index entries that did reach the disk, so the next open must not trust
    /// the indexes of the unsynced segments: the recovery point is rewritten with the
    /// `full-check` flag (every batch of the segments from it on is checked). Best effort on
    /// a failing disk: retried by [`Log::flush_if_due`] and [`Log::close`] until it is written.
    fn mark_for_full_check(&self) {
        if self.marked.load(Ordering::Acquire) {
            return;
        }
        let mut written = self.written_point.lock();
        let point = self.sealing.lock().recovery_point().min(*written);
        match write_recovery_point(&self.dir, point, true) {
            Ok(()) => {
                *written = point;
                self.marked.store(true, Ordering::Release);
                tracing::info!(
                    dir = %self.dir.display(),
                    recovery_point = point,
                    "the next start checks every batch of this log from the recovery point"
                );
            }
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "could not mark the log for a full check yet")
            }
        }
    }

    /// `Err(LogError::Failed)` once a sync has failed.
    fn check(&self) -> Result<()> {
        match self.failed.get() {
            Some(reason) => Err(LogError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Writes the recovery point if it moved forward (temp file, fsync, rename, fsync dir).
    fn save_recovery_point(&self) -> io::Result<()> {
        let mut written = self.written_point.lock();
        let point = self.sealing.lock().recovery_point();
        // Never after a failed sync: the point on disk then asks for a full check.
        if point <= *written || self.failed.get().is_some() {
            return Ok(());
        }
        write_recovery_point(&self.dir, point, false)?;
        *written = point;
        Ok(())
    }

    /// Background half of a roll: the sealed segment's data and indexes reach the disk,
    /// then the recovery point moves past it. A failed sync takes the log offline (the
    /// segment stays pending, so the recovery point stays at or below it and the next open
    /// checks it).
    fn seal(
        &self,
        seg: &Arc<Segment>,
        index_file: &Arc<LazyFile>,
        time_index_file: &Arc<LazyFile>,
    ) {
        {
            let _g = self.flush_lock.lock();
            if self.failed.get().is_some() {
                return;
            }
            let synced = seg
                .file()
                .and_then(|f| sync(&f, &self.dir))
                .and_then(|()| index_file.with(|f| sync(f, &self.dir)))
                .and_then(|()| time_index_file.with(|f| sync(f, &self.dir)));
            if let Err(e) = synced {
                let what = format!("sealing segment {}", seg.path("log").display());
                self.fail(&what, &e);
                return;
            }
            self.sealing.lock().pending.retain(|s| !Arc::ptr_eq(s, seg));
        }
        if let Err(e) = self.save_recovery_point() {
            warn_recovery_point(&self.dir, &e);
        }
    }
}

/// The recovery point only decides how much the next open checks: an older one on disk
/// makes it check more, never less, so a failed write of it is a warning, not a failure
/// (the next seal or open writes it again).
fn warn_recovery_point(dir: &Path, e: &io::Error) {
    tracing::warn!(
        dir = %dir.display(),
        error = %e,
        "writing the recovery point failed: the older one on disk stays (the next start checks more segments)"
    );
}

/// The flag after the offset in the recovery-point file: check every batch (no index entry
/// trusted) of the segments from the recovery point on.
const FULL_CHECK_FLAG: &str = "full-check";

fn write_recovery_point(dir: &Path, point: i64, full_check: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{RECOVERY_POINT_FILE}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        let text = if full_check {
            format!("{point} {FULL_CHECK_FLAG}\n")
        } else {
            format!("{point}\n")
        };
        io::Write::write_all(&mut f, text.as_bytes())?;
        sync(&f, dir)?;
    }
    std::fs::rename(&tmp, dir.join(RECOVERY_POINT_FILE))?;
    sync_dir(dir)
}

/// The file holding the log start offset set by [`Log::delete_records_below`].
pub(crate) const START_OFFSET_FILE: &str = "log-start-offset";

fn write_start_offset(dir: &Path, offset: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{START_OFFSET_FILE}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        io::Write::write_all(&mut f, format!("{offset}\n").as_bytes())?;
        sync(&f, dir)?;
    }
    std::fs::rename(&tmp, dir.join(START_OFFSET_FILE))?;
    sync_dir(dir)
}

/// The saved log start offset, 0 if none (or unreadable: the segments then decide).
fn read_start_offset(dir: &Path) -> i64 {
    match std::fs::read_to_string(dir.join(START_OFFSET_FILE)) {
        Ok(s) => match s.trim().parse::<i64>() {
            Ok(v) if v >= 0 => v,
            _ => {
                tracing::warn!(dir = %dir.display(), "unreadable log-start-offset file: ignored");
                0
            }
        },
        Err(_) => 0,
    }
}

/// What the `recovery-point` file says.
enum SavedPoint {
    /// No file: a log written before the file existed, whose rolls synced inline.
    Missing,
    /// A base offset, and whether every batch from it on must be checked.
    At(i64, bool),
    /// Not a non-negative decimal number (empty, garbage, not UTF-8) or not readable: why.
    Unreadable(String),
}

fn read_recovery_point(dir: &Path) -> SavedPoint {
    let parse = |s: &str| -> Option<SavedPoint> {
        let mut words = s.split_whitespace();
        let point = words.next()?.parse::<i64>().ok().filter(|&p| p >= 0)?;
        let full = match words.next() {
            None => false,
            Some(FULL_CHECK_FLAG) => true,
            Some(_) => return None,
        };
        words
            .next()
            .is_none()
            .then_some(SavedPoint::At(point, full))
    };
    match std::fs::read(dir.join(RECOVERY_POINT_FILE)) {
        Ok(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(parse)
            .unwrap_or_else(|| {
                SavedPoint::Unreadable(format!(
                    "{} bytes that are not a decimal offset",
                    bytes.len()
                ))
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => SavedPoint::Missing,
        Err(e) => SavedPoint::Unreadable(e.to_string()),
    }
}

/// fdatasync of one of the log's files (`dir` is the log's, for fault injection in tests).
fn sync(file: &File, dir: &Path) -> io::Result<()> {
    fault::check(dir, Point::Sync, None)?;
    file.sync_data()
}

/// Writes all of `slices` at `pos` (`pwritev2`); with `dsync`, each call returns once its
/// range is on disk (`RWF_DSYNC`: one syscall instead of a write and an fdatasync).
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [IoSlice<'_>],
    mut pos: u64,
    dsync: bool,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = if dsync { libc::RWF_DSYNC } else { 0 };
    while !slices.is_empty() {
        let count = slices.len().min(1024) as libc::c_int;
        // SAFETY: `IoSlice` is ABI compatible with `iovec` on Unix; the slices borrow live
        // buffers for the duration of the call, and the fd is open.
        let n = unsafe {
            libc::pwritev2(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                count,
                pos as libc::off_t,
                flags,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        pos += n as u64;
        IoSlice::advance_slices(&mut slices, n as usize);
    }
    Ok(())
}

/// The batches of an append: stamped in place, or left untouched (stamped header copies
/// are written next to them).
enum Batches<'a> {
    InPlace(&'a mut [u8]),
    Shared(&'a [u8]),
    /// A follower's copy of its leader's batches: offsets, epochs and timestamps are the
    /// leader's and are written as they are.
    Replica(&'a [u8]),
}

impl Batches<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Batches::InPlace(b) => b,
            Batches::Shared(b) | Batches::Replica(b) => b,
        }
    }
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
    last_flush_ms: AtomicI64,
    unflushed_messages: AtomicU64,
    closed: AtomicBool,
    seals: Arc<SealState>,
    /// The aborted ranges of every segment's `.txnindex`, in the order added (so by last
    /// offset): see [`crate::txnindex`].
    aborted: RwLock<Vec<txnindex::Entry>>,
    /// Held by a cleaner pass (one at a time per log).
    cleaning: Mutex<()>,
    /// Held while the cleaner swaps a segment's files and by deletions of segments, so a
    /// deleted segment is never swapped back in.
    swap_lock: Mutex<()>,
}

/// What a log directory holds, by file name.
struct DirFiles {
    /// Base offsets of the segment data files (`<base>.log`), sorted.
    bases: Vec<i64>,
    /// Base offsets that have an `.index` or `.timeindex` file.
    indexed: Vec<i64>,
}

/// Lists the segment files of `dir` and removes the temporary file of an interrupted
/// recovery-point write.
fn scan_dir(dir: &Path) -> io::Result<DirFiles> {
    let tmp = format!("{RECOVERY_POINT_FILE}.tmp");
    let (mut bases, mut indexed) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == tmp {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(
                    path = %path.display(),
                    "removed the temporary file of an interrupted recovery-point write"
                ),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a temporary file")
                }
            }
            continue;
        }
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let Some(base) = (stem.len() == 20)
            .then(|| stem.parse::<i64>().ok())
            .flatten()
        else {
            continue;
        };
        match ext {
            "log" => bases.push(base),
            "index" | "timeindex" => indexed.push(base),
            _ => {}
        }
    }
    bases.sort_unstable();
    indexed.sort_unstable();
    indexed.dedup();
    Ok(DirFiles { bases, indexed })
}

/// An index file of the active segment, created if missing.
fn open_index(path: PathBuf) -> io::Result<Arc<LazyFile>> {
    let file = OpenOptions::new().append(true).create(true).open(&path)?;
    LazyFile::opened(path, Mode::Append, file)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fault::check(dir, Point::DirSync, None)?;
    File::open(dir)?.sync_all()
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering the tail of the last segment: only
    /// bytes after its last index entry are checked, so opening costs the same for any size.
    ///
    /// Start-up rules (each logged with what was done): a leftover `recovery-point.tmp` is
    /// removed; an unreadable recovery point means "check every segment"; segments below
    /// the recovery point were synced, so a gap between their offsets, a segment data file
    /// missing while its index files remain, or a recovery point past the last segment is
    /// damage the log cannot repair without losing or renumbering records:
    /// [`LogError::Damaged`], and the log is not opened.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Log> {
        let dir = dir.into();
        config.validate().map_err(LogError::Config)?;
        std::fs::create_dir_all(&dir)?;
        let now = now_ms();
        cleaner::finish_swaps(&dir)?;
        let gaps_below = cleaner::gaps_below(&dir);
        let files = scan_dir(&dir)?;
        let missing: Vec<String> = files
            .indexed
            .iter()
            .filter(|b| files.bases.binary_search(b).is_err())
            .map(|&b| segment_path(&dir, b, "log").display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(LogError::Damaged(format!(
                "segment data file {} is missing while its index files remain: the records it \
                 held are lost and their offsets would be given again; restore the file, or \
                 move {} away to start the partition empty",
                missing.join(", "),
                dir.display()
            )));
        }
        let saved_point = read_recovery_point(&dir);
        if files.bases.is_empty() && !matches!(saved_point, SavedPoint::Missing) {
            return Err(LogError::Damaged(format!(
                "{} has a recovery-point file but no segment data file (.log): the partition's \
                 records are missing; restore them, or move the directory away to start the \
                 partition empty",
                dir.display()
            )));
        }
        let bases = files.bases;
        let mut segments = VecDeque::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let next = bases.get(i + 1).copied().unwrap_or(base);
            segments.push_back(Arc::new(Segment::open(&dir, base, next, now)?));
        }
        if segments.is_empty() {
            segments.push_back(Arc::new(Segment::create(&dir, 0, now)?));
            sync_dir(&dir)?;
        }
        let last_base = segments.back().expect("one segment").base_offset;
        // `strict`: the recovery point is unknown, so a hole cannot be told from a tail that
        // never reached the disk: it is damage, not a tail to drop.
        // `full`: check every batch of the checked segments, trusting no index entry (the
        // log went offline after a failed sync).
        let mut full = false;
        let (point, strict) = match &saved_point {
            SavedPoint::Missing => (last_base, false),
            SavedPoint::At(p, _) if *p > last_base => {
                return Err(LogError::Damaged(format!(
                    "the recovery point of {} is offset {p}, past the last segment (base offset \
                     {last_base}): the segments from the recovery point on are missing; restore \
                     them, or remove the recovery-point file to accept the loss (offsets then \
                     continue after the last segment)",
                    dir.display()
                )));
            }
            SavedPoint::At(p, full_check) => {
                if *full_check {
                    tracing::warn!(
                        dir = %dir.display(),
                        recovery_point = p,
                        "the log went offline after a failed sync: every batch from the recovery point on is checked"
                    );
                    full = true;
                }
                (*p, false)
            }
            SavedPoint::Unreadable(why) => {
                tracing::warn!(
                    dir = %dir.display(),
                    reason = %why,
                    "the recovery-point file is unreadable: every segment is checked (recovery point 0)"
                );
                (0, true)
            }
        };
        // The segment holding the recovery point and every later one are checked; the ones
        // before it were synced by their seal, so only their ends are compared with the next
        // segment's base offset (a few header reads each).
        let first_checked = segments
            .partition_point(|s| s.base_offset <= point)
            .saturating_sub(1);
        for k in 0..first_checked {
            let (seg, next) = (&segments[k], segments[k + 1].base_offset);
            match seg.scan_end(seg.base_offset < gaps_below)? {
                Ok(end)
                    if end.next == next || (seg.base_offset < gaps_below && end.next < next) =>
                {
                    if seg.settle_max_timestamp(&end, config.index_interval_bytes)? {
                        tracing::warn!(
                            segment = %seg.path("log").display(),
                            "the time index ended before the segment's last batches: both indexes rebuilt from the data"
                        );
                    }
                }
                Ok(end) => {
                    let end = end.next;
                    return Err(LogError::Damaged(format!(
                        "segment {} ends at offset {end} but the next segment starts at {next}: \
                         offsets {} are missing from synced segments",
                        seg.path("log").display(),
                        if end < next {
                            format!("{end}..{next}")
                        } else {
                            format!("{next}..{end} overlap and")
                        }
                    )));
                }
                Err(why) => {
                    return Err(LogError::Damaged(format!(
                        "synced segment {} is damaged: {why}",
                        seg.path("log").display()
                    )));
                }
            }
        }
        // Sealed segments from the recovery point on may not have reached the disk before
        // a crash: check them too. A hole ends the log there (what follows it is dropped).
        let mut i = first_checked;
        while i + 1 < segments.len() {
            let seg = segments[i].clone();
            let gaps = seg.base_offset < gaps_below;
            recover(&seg, config.index_interval_bytes, full, true, gaps)?;
            if gaps && seg.next_offset() < segments[i + 1].base_offset {
                // The cleaner took this segment's last records away: it still ends where
                // the next segment starts.
                let (size, ts) = (seg.size(), seg.max_timestamp());
                seg.set_recovered(size, segments[i + 1].base_offset, ts);
            }
            if seg.next_offset() != segments[i + 1].base_offset {
                if strict {
                    return Err(LogError::Damaged(format!(
                        "segment {} ends at offset {} but the next segment starts at {}, and the \
                         recovery point is unreadable, so whether the segment was synced is \
                         unknown: the log is not opened rather than dropping the later segments",
                        seg.path("log").display(),
                        seg.next_offset(),
                        segments[i + 1].base_offset
                    )));
                }
                tracing::warn!(
                    segment = %seg.path("log").display(),
                    dropped_segments = segments.len() - i - 1,
                    "a sealed segment lost its tail: the segments after it are dropped"
                );
                for later in segments.drain(i + 1..) {
                    later.delete_files()?;
                }
                break;
            }
            sync(&*seg.file()?, &dir)?;
            i += 1;
        }
        let active = segments.back().expect("one segment").clone();
        // After a clean close the active segment's tail was synced and recorded: it is
        // trusted instead of read again (on a cold page cache, the CRC check of its last
        // batch is a disk read per partition).
        let clean = take_clean_shutdown(&dir).filter(|m| !full && m.base == active.base_offset);
        let trusted = match clean {
            Some(m) => trust_clean_tail(&active, &m)?,
            None => None,
        };
        let bytes_since_index = match trusted {
            Some(since) => since,
            None => recover(&active, config.index_interval_bytes, full, false, false)?,
        };
        if !matches!(saved_point, SavedPoint::At(p, false) if p == active.base_offset) {
            if let Err(e) = write_recovery_point(&dir, active.base_offset, false) {
                warn_recovery_point(&dir, &e);
            }
        }
        let (index_len, time_index_len) = active.index_bytes();
        let writer = Writer {
            index_file: open_index(active.path("index"))?,
            time_index_file: open_index(active.path("timeindex"))?,
            index_len,
            time_index_len,
            active: active.clone(),
            bytes_since_index,
        };
        let end = active.next_offset();
        let bases: Vec<i64> = segments.iter().map(|s| s.base_offset).collect();
        let aborted = txnindex::load(&dir, &bases, end)?;
        // DeleteRecords may have moved the start inside the first segment kept.
        let start = segments
            .front()
            .expect("one segment")
            .base_offset
            .max(read_start_offset(&dir).min(end));
        let seals = Arc::new(SealState {
            dir: dir.clone(),
            sealing: Mutex::new(Sealing {
                pending: Vec::new(),
                active_base: active.base_offset,
                threads: Vec::new(),
            }),
            written_point: Mutex::new(active.base_offset),
            failed: OnceLock::new(),
            marked: AtomicBool::new(false),
            flush_lock: Mutex::new(()),
        });
        Ok(Log {
            dir,
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            writer: Mutex::new(writer),
            start_offset: AtomicI64::new(start),
            end_offset: AtomicI64::new(end),
            flushed_offset: AtomicI64::new(end),
            last_flush_ms: AtomicI64::new(now),
            unflushed_messages: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            seals,
            aborted: RwLock::new(aborted),
            cleaning: Mutex::new(()),
            swap_lock: Mutex::new(()),
        })
    }

    /// Why the log is offline after a failed sync (see [`LogError::Failed`]), if it is.
    pub fn failure(&self) -> Option<&str> {
        self.seals.failed.get().map(String::as_str)
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
    /// The leader epoch stamped into batches is kept (it is the replication's, see
    /// [`Log::set_leader_epoch`]).
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate().map_err(LogError::Config)?;
        let mut c = self.config.write();
        *c = LogConfig {
            leader_epoch: c.leader_epoch,
            ..config
        };
        Ok(())
    }

    /// The leader epoch stamped into the batches appended from now on (cluster mode: the
    /// epoch this broker leads the partition in).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.config.write().leader_epoch = epoch;
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
        self.append_batches(Batches::InPlace(batches), true, false, false)
            .map(|a| a.expect("not diverted"))
    }

    /// [`Log::append`] that leaves `batches` untouched (e.g. a slice of a shared request
    /// buffer): the stamped headers are copies, written beside the caller's bytes in one
    /// vectored write, so the records are copied once, into the page cache.
    pub fn append_shared(&self, batches: &[u8]) -> Result<AppendInfo> {
        self.append_batches(Batches::Shared(batches), true, false, false)
            .map(|a| a.expect("not diverted"))
    }

    /// [`Log::append_shared`] that never syncs inside the append, even when
    /// `flush.messages` makes it due (`AppendInfo::flush_due`): for a caller that acknowledges
    /// after a later [`Log::flush_to`] and appends more in the meantime, so that one sync
    /// covers several appends (group commit) instead of each append waiting for its own.
    pub fn append_shared_unsynced(&self, batches: &[u8]) -> Result<AppendInfo> {
        self.append_batches(Batches::Shared(batches), false, false, false)
            .map(|a| a.expect("not diverted"))
    }

    /// [`Log::append_shared`] (`may_sync`) or [`Log::append_shared_unsynced`] (not), unless
    /// a record carries a header key starting with `strom.`
    /// ([`strom_records::BatchesSummary::reserved_headers`], learnt by the validation every
    /// append does anyway): then nothing is written and `Ok(None)` says the caller must
    /// read the records (the broker's delay and dedup) and append what it decides.
    pub fn append_shared_unreserved(
        &self,
        batches: &[u8],
        may_sync: bool,
    ) -> Result<Option<AppendInfo>> {
        self.append_batches(Batches::Shared(batches), may_sync, true, false)
    }

    /// Appends control batches (transaction markers) the owner built — never a client's
    /// bytes: [`strom_records::validate_control`] accepts control batches. Not synced here.
    pub fn append_control(&self, batches: &[u8]) -> Result<AppendInfo> {
        self.append_batches(Batches::Shared(batches), false, false, true)
            .map(|a| a.expect("not diverted"))
    }

    /// Appends a follower's copy of batches its leader wrote (data and control batches,
    /// offsets already assigned): validated like any append, written byte for byte. The
    /// first batch must start at the log end offset and each batch follow the one before
    /// it ([`LogError::NotContiguous`] otherwise, nothing written). Not synced here.
    pub fn append_replica(&self, batches: &[u8]) -> Result<AppendInfo> {
        self.append_batches(Batches::Replica(batches), false, false, true)
            .map(|a| a.expect("not diverted"))
    }

    /// Removes every batch at or after `offset` (a batch boundary: a follower truncating to
    /// its leader's log after a leader change). Later segments are deleted, the segment
    /// holding `offset` is cut there, and the log is then reopened from its files as at a
    /// start (recovery rebuilds the cut segment's indexes), under the writer lock. Reads
    /// that hold a file range past the cut read short. `offset` at or past the end does
    /// nothing; below the log start it is [`LogError::OffsetOutOfRange`].
    pub fn truncate_to(&self, offset: i64) -> Result<()> {
        let mut w = self.writer.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        self.seals.check()?;
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset >= end {
            return Ok(());
        }
        if offset < start {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        let _swap = self.swap_lock.lock();
        self.wait_for_seals();
        let config = self.config();
        let segs: Vec<Arc<Segment>> = self.segments.read().iter().cloned().collect();
        let k = segs
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let keep = &segs[k];
        let pos = keep
            .find_position(offset, config.index_interval_bytes)?
            .unwrap_or_else(|| keep.size());
        for later in &segs[k + 1..] {
            later.delete_files()?;
        }
        let file = keep.file()?;
        file.set_len(pos)?;
        file.sync_all()?;
        for ext in ["index", "timeindex"] {
            std::fs::write(keep.path(ext), [])?;
        }
        write_recovery_point(&self.dir, keep.base_offset, false)?;
        sync_dir(&self.dir)?;
        tracing::info!(
            dir = %self.dir.display(),
            offset,
            removed = end - offset,
            "log truncated to its leader's"
        );
        self.reload(&mut w, config)
    }

    /// Empties the log and starts it again at `offset` (a follower whose leader's log
    /// starts past this log's end: the records between are gone there, so this copy starts
    /// where the leader's does). Every segment is deleted; the log start and end become
    /// `offset`, durably, before the log is reopened from its files.
    pub fn reset_to(&self, offset: i64) -> Result<()> {
        let mut w = self.writer.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        self.seals.check()?;
        let _swap = self.swap_lock.lock();
        self.wait_for_seals();
        let config = self.config();
        let segs: Vec<Arc<Segment>> = self.segments.read().iter().cloned().collect();
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        Segment::create(&self.dir, offset, now_ms())?;
        for s in segs.iter().filter(|s| s.base_offset != offset) {
            s.delete_files()?;
        }
        write_start_offset(&self.dir, offset)?;
        write_recovery_point(&self.dir, offset, false)?;
        sync_dir(&self.dir)?;
        tracing::info!(dir = %self.dir.display(), from_start = start, from_end = end, offset, "log reset to its leader's start");
        self.reload(&mut w, config)
    }

    /// Reopens the log from its files into `self` (under the writer lock `w`), after a
    /// truncation or a reset rewrote them.
    fn reload(&self, w: &mut Writer, config: LogConfig) -> Result<()> {
        let fresh = Log::open(&self.dir, config)?;
        let Log {
            segments,
            writer,
            start_offset,
            end_offset,
            seals,
            aborted,
            ..
        } = fresh;
        *w = writer.into_inner();
        *self.segments.write() = segments.into_inner();
        *self.aborted.write() = aborted.into_inner();
        self.start_offset
            .store(start_offset.into_inner(), Ordering::Release);
        let new_end = end_offset.into_inner();
        self.end_offset.store(new_end, Ordering::Release);
        self.flushed_offset.store(new_end, Ordering::Release);
        self.unflushed_messages.store(0, Ordering::Release);
        let fresh_sealing = seals.sealing.lock();
        let mut sealing = self.seals.sealing.lock();
        sealing.pending.clear();
        sealing.active_base = fresh_sealing.active_base;
        *self.seals.written_point.lock() = *seals.written_point.lock();
        Ok(())
    }

    /// Records an aborted range in the `.txnindex` of the segment holding
    /// `range.last_offset` (synced before returning). A range already recorded (same
    /// producer and last offset) is not added again.
    pub fn add_aborted(&self, range: AbortedRange) -> Result<()> {
        self.seals.check()?;
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if range.last_offset < start
            || range.last_offset >= end
            || range.first_offset > range.last_offset
        {
            return Err(LogError::OffsetOutOfRange {
                offset: range.last_offset,
                start,
                end,
            });
        }
        let mut aborted = self.aborted.write();
        if aborted.iter().rev().any(|e| {
            e.range.last_offset == range.last_offset && e.range.producer_id == range.producer_id
        }) {
            return Ok(());
        }
        let segment = {
            let segs = self.segments.read();
            let i = segs
                .partition_point(|s| s.base_offset <= range.last_offset)
                .saturating_sub(1);
            segs[i].base_offset
        };
        txnindex::append(&self.dir, segment, &range)?;
        let at = aborted.partition_point(|e| e.range.last_offset <= range.last_offset);
        aborted.insert(at, txnindex::Entry { segment, range });
        Ok(())
    }

    /// The aborted ranges that overlap offsets `from..to`: last offset at or after `from`,
    /// first offset before `to`; by last offset.
    pub fn aborted_ranges(&self, from: i64, to: i64) -> Vec<AbortedRange> {
        let aborted = self.aborted.read();
        let i = aborted.partition_point(|e| e.range.last_offset < from);
        aborted[i..]
            .iter()
            .filter(|e| e.range.first_offset < to)
            .map(|e| e.range)
            .collect()
    }

    /// [`Log::read`] of the batches below `stop` only (`stop` a batch boundary, such as a
    /// last stable offset): nothing when `offset >= stop`.
    pub fn read_below(&self, offset: i64, max_bytes: usize, stop: i64) -> Result<ReadResult> {
        let mut r = self.read(offset, max_bytes)?;
        if offset >= stop {
            r.data = Bytes::new();
        } else if r.log_end_offset > stop {
            let keep: usize = batch::headers(&r.data)
                .take_while(|(_, h)| h.base_offset < stop)
                .map(|(_, h)| h.total_len())
                .sum();
            r.data.truncate(keep);
        }
        Ok(r)
    }

    /// [`Log::read_range`] of the batches below `stop` only (a batch boundary): no range
    /// when `offset >= stop`.
    pub fn read_range_below(&self, offset: i64, max_bytes: usize, stop: i64) -> Result<RangeRead> {
        let mut r = self.read_range(offset, max_bytes)?;
        if offset >= stop {
            r.range = None;
        } else if r.log_end_offset > stop {
            if let Some(range) = r.range.as_mut() {
                let interval = self.config().index_interval_bytes;
                let seg = self
                    .segments_from(offset)
                    .into_iter()
                    .find(|s| s.id == range.segment);
                if let Some(seg) = seg {
                    if stop < seg.next_offset() {
                        if let Some(cut) = seg.find_position(stop, interval)? {
                            range.len = range.len.min(cut.saturating_sub(range.pos) as usize);
                        }
                    }
                }
                if range.len == 0 {
                    r.range = None;
                }
            }
        }
        Ok(r)
    }

    /// The offset after the batches of `range` (a range this log's reads returned): the
    /// base offset of the batch that follows it, or its segment's end. One header read.
    pub fn offset_after(&self, range: &FileRange) -> Result<i64> {
        let segs = self.segments.read().clone();
        let Some(seg) = segs.iter().find(|s| s.id == range.segment) else {
            return Ok(self.log_end_offset());
        };
        let end = range.pos + range.len as u64;
        Ok(match seg.header_at(end, seg.size())? {
            Some(h) => h.base_offset,
            None => seg.next_offset(),
        })
    }

    fn append_batches(
        &self,
        mut batches: Batches<'_>,
        may_sync: bool,
        divert_reserved: bool,
        control: bool,
    ) -> Result<Option<AppendInfo>> {
        let config = self.config();
        let len = batches.bytes().len();
        let summary = if control {
            batch::validate_control(batches.bytes(), config.max_batch_bytes as usize)?
        } else {
            batch::validate(batches.bytes(), config.max_batch_bytes as usize)?
        };
        if divert_reserved && summary.reserved_headers {
            return Ok(None);
        }
        if len as u64 > config.segment_bytes {
            return Err(LogError::RecordSetTooLarge {
                size: len,
                max: config.segment_bytes,
            });
        }
        let mut w = self.writer.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        self.seals.check()?;
        let now = now_ms();
        let active_size = w.active.size();
        if active_size > 0
            && (active_size + len as u64 > config.segment_bytes
                || config.roll_due(now.saturating_sub(w.active.created_ms), w.active.roll_seed))
        {
            self.roll(&mut w, now)?;
        }
        let append_time = (config.timestamp_type == TimestampType::LogAppendTime
            && !matches!(batches, Batches::Replica(_)))
        .then_some(now);
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
        let mut heads: Vec<[u8; HEADER_LEN]> = Vec::new();
        while pos < len {
            let header = BatchHeader::parse(&batches.bytes()[pos..]).expect("validated");
            let total = header.total_len();
            match &mut batches {
                Batches::Replica(_) if header.base_offset != next => {
                    return Err(LogError::NotContiguous {
                        expected: next,
                        got: header.base_offset,
                    });
                }
                Batches::Replica(_) => {}
                Batches::InPlace(b) => batch::stamp(
                    &mut b[pos..pos + total],
                    next,
                    config.leader_epoch,
                    append_time,
                ),
                Batches::Shared(b) => {
                    let mut head = [0u8; HEADER_LEN];
                    head.copy_from_slice(&b[pos..pos + HEADER_LEN]);
                    let rest = &b[pos + HEADER_LEN..pos + total];
                    batch::stamp_header(&mut head, rest, next, config.leader_epoch, append_time);
                    heads.push(head);
                }
            }
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
        // A large append that must be durable now, with everything before it already on
        // disk, is written and synced by one `RWF_DSYNC` write.
        let sync_now = may_sync
            && len >= DSYNC_WRITE_MIN
            && config.flush_messages.is_some_and(|n| {
                self.unflushed_messages.load(Ordering::Acquire) + summary.records >= n
            })
            && self.flushed_offset() >= base_offset
            && self.seals.sealing.lock().pending.is_empty();
        let file = seg.file()?;
        let written =
            fault::check(&self.dir, Point::DataWrite, Some((&file, seg_pos))).and_then(|()| {
                match &batches {
                    Batches::InPlace(b) => {
                        write_all_vectored_at(&file, &mut [IoSlice::new(b)], seg_pos, sync_now)
                    }
                    Batches::Replica(b) => {
                        write_all_vectored_at(&file, &mut [IoSlice::new(b)], seg_pos, sync_now)
                    }
                    Batches::Shared(b) => {
                        let mut slices = Vec::with_capacity(2 * heads.len());
                        let mut at = 0usize;
                        for head in &heads {
                            let total =
                                BatchHeader::parse(&b[at..]).expect("validated").total_len();
                            slices.push(IoSlice::new(head));
                            slices.push(IoSlice::new(&b[at + HEADER_LEN..at + total]));
                            at += total;
                        }
                        write_all_vectored_at(&file, &mut slices, seg_pos, sync_now)
                    }
                }
            });
        if let Err(e) = written {
            // Nothing of a failed append may stay behind: the bytes past the published size
            // are cut off (and overwritten by the next append if even that fails).
            let _ = file.set_len(seg_pos);
            if sync_now && !is_out_of_space(&e) {
                // The write's own sync may have failed: a failed sync takes the log offline.
                return Err(self.seals.fail(
                    &format!("an RWF_DSYNC write to {}", seg.path("log").display()),
                    &e,
                ));
            }
            return Err(e.into());
        }
        let index_lens = (w.index_len, w.time_index_len);
        if let Err(e) = write_entries(&self.dir, &mut w, &new_index, &new_times) {
            // The data is not published: cut it and the torn index entries off again.
            let _ = file.set_len(seg_pos);
            (w.index_len, w.time_index_len) = index_lens;
            let _ = w.index_file.with(|f| f.set_len(w.index_len));
            let _ = w.time_index_file.with(|f| f.set_len(w.time_index_len));
            return Err(e.into());
        }
        seg.push_index(&new_index, &new_times);
        w.bytes_since_index = since;
        seg.publish(seg_pos + len as u64, next, seg_max_ts);
        self.end_offset.store(next, Ordering::Release);
        if sync_now {
            self.flushed_offset.fetch_max(next, Ordering::AcqRel);
            self.last_flush_ms.store(now, Ordering::Release);
        }
        drop(w);
        let unflushed = if sync_now {
            0
        } else {
            self.unflushed_messages
                .fetch_add(summary.records, Ordering::AcqRel)
                + summary.records
        };
        Ok(Some(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: append_time.unwrap_or(-1),
            log_start_offset: self.log_start_offset(),
            batches: summary.batches,
            records: summary.records,
            flush_due: config.flush_messages.is_some_and(|n| unflushed >= n),
        }))
    }

    /// Seals the active segment and starts a new one at the log end offset. The sealed
    /// segment's data and indexes are fdatasync'ed by a background thread (the append that
    /// rolled does not wait for a whole segment to reach the disk); until that is done the
    /// segment is pending: [`Log::flush_to`] syncs it too, and the recovery point stays at
    /// or below it, so a crash makes the next open check it.
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
            let index_lens = (w.index_len, w.time_index_len);
            if let Err(e) = write_entries(&self.dir, w, &[], &[entry]) {
                (w.index_len, w.time_index_len) = index_lens;
                let _ = w.time_index_file.with(|f| f.set_len(w.time_index_len));
                return Err(e.into());
            }
            old.push_index(&[], &[entry]);
        }
        let base = self.log_end_offset();
        let created = Segment::create(&self.dir, base, now).and_then(|seg| {
            let index_file = open_index(seg.path("index"))?;
            let time_index_file = open_index(seg.path("timeindex"))?;
            Ok((seg, index_file, time_index_file))
        });
        let (seg, index_file, time_index_file) = match created {
            Ok(files) => files,
            Err(e) => {
                // Out of space or descriptors: the append fails, the next one rolls again.
                let _ = segment::remove_files(&self.dir, base);
                return Err(e.into());
            }
        };
        if let Err(e) = sync_dir(&self.dir) {
            return Err(self.seals.fail(
                &format!(
                    "syncing {} after creating segment {}",
                    self.dir.display(),
                    seg.path("log").display()
                ),
                &e,
            ));
        }
        let seg = Arc::new(seg);
        let index_file = std::mem::replace(&mut w.index_file, index_file);
        let time_index_file = std::mem::replace(&mut w.time_index_file, time_index_file);
        (w.index_len, w.time_index_len) = (0, 0);
        w.bytes_since_index = 0;
        w.active = seg.clone();
        {
            let mut sealing = self.seals.sealing.lock();
            sealing.pending.push(old.clone());
            sealing.active_base = base;
            self.segments.write().push_back(seg);
            sealing.threads.retain(|t| !t.is_finished());
        }
        let seals = self.seals.clone();
        let sealed = old.clone();
        let files = (index_file.clone(), time_index_file.clone());
        let spawned = std::thread::Builder::new()
            .name("strom-log-seal".into())
            .spawn(move || seals.seal(&sealed, &files.0, &files.1));
        match spawned {
            Ok(handle) => self.seals.sealing.lock().threads.push(handle),
            // No thread to spare: seal inline.
            Err(_) => self.seals.seal(&old, &index_file, &time_index_file),
        }
        Ok(())
    }

    /// Makes every offset below `offset` durable (fdatasync). Concurrent callers share one
    /// sync: whoever takes the flush lock syncs everything written so far for all of them.
    pub fn flush_to(&self, offset: i64) -> Result<()> {
        if self.flushed_offset() >= offset {
            return Ok(());
        }
        self.seals.check()?;
        let _g = self.seals.flush_lock.lock();
        if self.flushed_offset() >= offset {
            return Ok(());
        }
        // A failed sync is never retried: whoever waited for it gets the error too.
        self.seals.check()?;
        // Read the end before choosing the segments: anything below it is in the active
        // segment, in a sealed one still pending, or in one already sealed on disk.
        let target = self.log_end_offset();
        let unflushed = self.unflushed_messages.load(Ordering::Acquire);
        let (pending, active) = {
            let sealing = self.seals.sealing.lock();
            let active = self.segments.read().back().expect("one segment").clone();
            (sealing.pending.clone(), active)
        };
        for seg in pending.iter().chain([&active]) {
            if let Err(e) = seg.file().and_then(|f| sync(&f, &self.dir)) {
                let what = format!("fdatasync of {}", seg.path("log").display());
                return Err(self.seals.fail(&what, &e));
            }
        }
        self.flushed_offset.fetch_max(target, Ordering::AcqRel);
        self.unflushed_messages
            .fetch_sub(unflushed, Ordering::AcqRel);
        self.last_flush_ms.store(now_ms(), Ordering::Release);
        Ok(())
    }

    /// Waits for the background seals of rolled segments to finish.
    fn wait_for_seals(&self) {
        let threads = std::mem::take(&mut self.seals.sealing.lock().threads);
        for t in threads {
            let _ = t.join();
        }
    }

    /// Flushes everything appended so far.
    pub fn flush(&self) -> Result<()> {
        self.flush_to(self.log_end_offset())
    }

    /// Applies `flush.ms`: flushes if unflushed data is older than the setting. Returns
    /// whether it flushed. Call it periodically.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool> {
        if self.seals.failed.get().is_some() {
            self.seals.mark_for_full_check();
            self.seals.check()?;
        }
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
        again_if_gone(|| self.read_once(offset, max_bytes))
    }

    fn read_once(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        self.seals.check()?;
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

    /// [`Log::read`] that returns where the batches are instead of reading them: the same
    /// batches (at most `max_bytes`, at least one whole batch), as a range of a segment file.
    pub fn read_range(&self, offset: i64, max_bytes: usize) -> Result<RangeRead> {
        again_if_gone(|| self.read_range_once(offset, max_bytes))
    }

    fn read_range_once(&self, offset: i64, max_bytes: usize) -> Result<RangeRead> {
        self.seals.check()?;
        let start = self.log_start_offset();
        let end = self.log_end_offset();
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        let mut result = RangeRead {
            range: None,
            log_start_offset: start,
            log_end_offset: end,
        };
        if offset == end {
            return Ok(result);
        }
        let interval = self.config().index_interval_bytes;
        for seg in self.segments_from(offset) {
            let Some(pos) = seg.find_position(offset, interval)? else {
                continue;
            };
            let stop = seg.whole_batches_end(pos, max_bytes, interval)?;
            result.range = Some(FileRange {
                file: seg.file()?,
                segment: seg.id,
                pos,
                len: (stop - pos) as usize,
            });
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
        again_if_gone(|| self.find_by_timestamp_once(timestamp))
    }

    fn find_by_timestamp_once(&self, timestamp: i64) -> Result<Option<TimestampHit>> {
        self.seals.check()?;
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
        self.delete_oldest_while(|segs, total| {
            let oldest = &segs[0];
            let by_size = config
                .retention_bytes
                .is_some_and(|max| total.saturating_sub(oldest.size()) >= max);
            let by_time = config.retention_ms.is_some_and(|ms| {
                let newest = oldest.max_timestamp();
                newest >= 0 && now_ms.saturating_sub(newest) > ms as i64
            });
            by_size || by_time
        })
    }

    /// Deletes the sealed segments whose records all lie below `offset` (oldest first; the
    /// active segment is never deleted), for internal logs whose owner knows what it still
    /// needs. The log start offset moves to the first segment kept.
    pub fn delete_segments_below(&self, offset: i64) -> Result<RetentionOutcome> {
        self.delete_oldest_while(|segs, _| segs[1].base_offset <= offset)
    }

    /// Moves the log start offset up to `offset` (Kafka's DeleteRecords): records below it
    /// are no longer readable, the new start is written to the `log-start-offset` file
    /// (tmp + fsync + rename + dir fsync) before it is published, so it survives a crash,
    /// and the sealed segments wholly below it are deleted. `offset` past the end is
    /// [`LogError::OffsetOutOfRange`]; one at or below the start changes nothing. Returns
    /// the log start offset.
    pub fn delete_records_below(&self, offset: i64) -> Result<i64> {
        self.seals.check()?;
        // The writer lock orders this with appends and rolls.
        let _w = self.writer.lock();
        let start = self.log_start_offset();
        let end = self.log_end_offset();
        if offset > end || offset < 0 {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        if offset <= start {
            return Ok(start);
        }
        write_start_offset(&self.dir, offset)?;
        self.start_offset.fetch_max(offset, Ordering::AcqRel);
        drop(_w);
        self.delete_segments_below(offset)?;
        Ok(self.log_start_offset())
    }

    /// Deletes the oldest segment while there is more than one and `delete(segments, total
    /// bytes)` says so; the log start offset moves to the first segment kept.
    fn delete_oldest_while(
        &self,
        mut delete: impl FnMut(&VecDeque<Arc<Segment>>, u64) -> bool,
    ) -> Result<RetentionOutcome> {
        self.seals.check()?;
        let _swap = self.swap_lock.lock();
        let mut outcome = RetentionOutcome::default();
        let mut deleted = Vec::new();
        {
            let mut segs = self.segments.write();
            let mut total: u64 = segs.iter().map(|s| s.size()).sum();
            while segs.len() > 1 && delete(&segs, total) {
                let seg = segs.pop_front().expect("len > 1");
                total -= seg.size();
                outcome.segments += 1;
                outcome.bytes += seg.size();
                self.start_offset
                    .fetch_max(segs[0].base_offset, Ordering::AcqRel);
                deleted.push(seg);
            }
        }
        if !deleted.is_empty() {
            let first_kept = self.log_start_offset();
            self.aborted.write().retain(|e| e.segment >= first_kept);
        }
        for seg in deleted {
            seg.delete_files()?;
        }
        Ok(outcome)
    }

    /// Flushes and refuses further appends. Reads keep working. A log offline after a
    /// failed sync is closed without syncing anything ([`LogError::Failed`]).
    pub fn close(&self) -> Result<()> {
        let w = self.writer.lock();
        self.closed.store(true, Ordering::Release);
        let synced = self.seals.check().and_then(|()| {
            for f in [&w.index_file, &w.time_index_file] {
                if let Err(e) = f.with(|f| sync(f, &self.dir)) {
                    let what = format!("fdatasync of the indexes in {}", self.dir.display());
                    return Err(self.seals.fail(&what, &e));
                }
            }
            Ok(())
        });
        drop(w);
        let flushed = synced.and_then(|()| self.flush());
        self.wait_for_seals();
        if self.seals.failed.get().is_some() {
            self.seals.mark_for_full_check();
        } else if flushed.is_ok() {
            let active = self.segments.read().back().expect("one segment").clone();
            let marker = CleanShutdown {
                base: active.base_offset,
                size: active.size(),
                next: active.next_offset(),
                max_timestamp: active.max_timestamp(),
            };
            if let Err(e) = marker.write(&self.dir) {
                tracing::debug!(dir = %self.dir.display(), error = %e, "no clean-shutdown marker: the next open checks the tail");
            }
        }
        flushed
    }

    /// Closes the log and removes its directory.
    pub fn delete(&self) -> Result<()> {
        let _w = self.writer.lock();
        let _swap = self.swap_lock.lock();
        self.closed.store(true, Ordering::Release);
        // A seal still running would write its recovery point into the deleted directory.
        self.wait_for_seals();
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

/// Runs a read again while it fails because a segment file it had chosen was deleted or
/// replaced after its descriptor was closed ([`crate::handles`]): the next try reads the
/// current segments (and finds the offset below the log start, or the rewritten segment).
fn again_if_gone<T>(mut read: impl FnMut() -> Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        match read() {
            Err(LogError::Io(e)) if handles::is_gone(&e) && tries < 8 => tries += 1,
            other => return other,
        }
    }
}

/// Appends entries to the active segment's index files. On error the files may hold part
/// of the entries: the caller cuts them back to `index_len` / `time_index_len`.
fn write_entries(
    dir: &Path,
    w: &mut Writer,
    offsets: &[IndexEntry],
    times: &[TimeEntry],
) -> io::Result<()> {
    if !offsets.is_empty() {
        let mut buf = Vec::with_capacity(offsets.len() * index::INDEX_ENTRY_LEN);
        offsets.iter().for_each(|e| e.encode(&mut buf));
        let file = w.index_file.get()?;
        fault::check(dir, Point::IndexWrite, Some((&file, w.index_len)))?;
        io::Write::write_all(&mut &*file, &buf)?;
        w.index_len += buf.len() as u64;
    }
    if !times.is_empty() {
        let mut buf = Vec::with_capacity(times.len() * index::TIME_ENTRY_LEN);
        times.iter().for_each(|e| e.encode(&mut buf));
        w.time_index_file
            .with(|mut f| io::Write::write_all(&mut f, &buf))?;
        w.time_index_len += buf.len() as u64;
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
    let mut buf = BytesMut::new();
    seg.read_into(&mut buf, want.max(HEADER_LEN.min(available as usize)), pos)?;
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
    let mut buf = BytesMut::new();
    seg.read_into(&mut buf, first, pos)?;
    Ok(buf.freeze())
}

/// Recovers the active segment: keeps the index entries that point at real batches, then
/// checks every batch after the last of them (length, magic, offsets, CRC) and truncates the
/// file at the first one that fails. Returns the bytes written since the last index entry.
///
/// With `gaps` (a segment the cleaner may have rewritten, see `cleaner.rs`) a batch may
/// start past the offset after the previous one, never before it.
fn recover(seg: &Segment, interval: u64, full: bool, sealed: bool, gaps: bool) -> Result<u64> {
    let data_len = seg.file()?.metadata()?.len();
    let (index_path, time_path) = (seg.path("index"), seg.path("timeindex"));
    let on_disk = (file_len(&index_path)?, file_len(&time_path)?);
    let mut offsets = index::load_offset_index(&index_path, data_len)?.unwrap_or_default();
    let mut times = index::load_time_index(&time_path)?.unwrap_or_default();
    // Whether the indexes differ from the files (then they are rewritten).
    let mut changed = false;
    if full {
        // Every batch is checked from the start of the segment; the indexes are rebuilt.
        offsets.clear();
        times.clear();
        changed = true;
    }
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
        changed = true;
        misses += 1;
        if misses > 8 {
            offsets.clear();
        }
    }
    let (mut pos, mut next) = offsets.last().map_or((0, seg.base_offset), |e| {
        (e.position as u64, seg.base_offset + i64::from(e.rel_offset))
    });
    let scan_from_offset = next;
    let times_before = times.len();
    times.retain(|t| seg.base_offset + i64::from(t.rel_offset) < scan_from_offset);
    changed |= times.len() != times_before;
    let mut max_ts = times.last().map_or(-1, |t| t.timestamp);
    let mut since = 0u64;
    let mut buf = Vec::new();
    let mut first = true;
    let mut last_rel = None;
    while let Some(h) = seg.header_at(pos, data_len)? {
        let total = h.total_len() as u64;
        if h.batch_length < (HEADER_LEN - batch::LOG_OVERHEAD) as i32 || pos + total > data_len {
            break;
        }
        buf.resize(total as usize, 0);
        seg.read_at(&mut buf, pos)?;
        let follows = h.base_offset == next || (gaps && h.base_offset > next);
        if !follows || !h.check_stored(&buf, None) {
            break;
        }
        let rel = (h.base_offset - seg.base_offset) as u32;
        max_ts = max_ts.max(h.max_timestamp);
        if !first && since >= interval {
            offsets.push(IndexEntry {
                rel_offset: rel,
                position: pos as u32,
            });
            TimeEntry::push_newer(&mut times, max_ts, rel);
            changed = true;
            since = 0;
        }
        first = false;
        last_rel = Some(rel);
        since += total;
        pos += total;
        next = h.last_offset() + 1;
    }
    // A sealed segment's time index ends with its newest timestamp at its last batch, as
    // `Log::roll` writes it: later opens take the segment's max timestamp from there
    // (retention, lookups by time), so the entry dropped above for being past the last
    // verified index entry must come back.
    if let Some(rel) = last_rel.filter(|_| sealed) {
        let before = times.len();
        TimeEntry::push_newer(&mut times, max_ts, rel);
        changed |= times.len() != before;
    }
    if pos < data_len {
        tracing::warn!(
            segment = %seg.path("log").display(),
            valid_bytes = pos,
            dropped_bytes = data_len - pos,
            "truncating torn or corrupt log tail"
        );
        let file = seg.file()?;
        file.set_len(pos)?;
        file.sync_all()?;
    }
    // Rewrite both indexes from what was verified, unless the files already hold exactly
    // that (the usual case after a clean shutdown: no write at start).
    let mut ibuf = Vec::with_capacity(offsets.len() * index::INDEX_ENTRY_LEN);
    offsets.iter().for_each(|e| e.encode(&mut ibuf));
    let mut tbuf = Vec::with_capacity(times.len() * index::TIME_ENTRY_LEN);
    times.iter().for_each(|e| e.encode(&mut tbuf));
    if changed || on_disk.0 != Some(ibuf.len() as u64) {
        std::fs::write(&index_path, &ibuf)?;
    }
    if changed || on_disk.1 != Some(tbuf.len() as u64) {
        std::fs::write(&time_path, &tbuf)?;
    }
    seg.set_indexes(offsets, times);
    seg.set_recovered(pos, next, max_ts);
    Ok(since)
}

/// Name of the marker a clean [`Log::close`] leaves: the active segment's synced state.
const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// What a clean close recorded of the active segment, after syncing everything.
///
/// It is removed by the next open, before anything is appended, and trusted only if the
/// active segment still has this base offset and this length: appends after that open change
/// the length, a failed append is cut back to bytes that were synced, and a crash can only
/// lose bytes past what was synced. A marker that was lost or torn (it is written without a
/// sync) only means the usual check of the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CleanShutdown {
    base: i64,
    size: u64,
    next: i64,
    max_timestamp: i64,
}

impl CleanShutdown {
    fn write(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("{CLEAN_SHUTDOWN_FILE}.tmp"));
        std::fs::write(
            &tmp,
            format!(
                "v1 {} {} {} {}\n",
                self.base, self.size, self.next, self.max_timestamp
            ),
        )?;
        std::fs::rename(&tmp, dir.join(CLEAN_SHUTDOWN_FILE))
    }

    fn parse(text: &str) -> Option<CleanShutdown> {
        let mut f = text.strip_suffix('\n')?.split(' ');
        if f.next()? != "v1" {
            return None;
        }
        let m = CleanShutdown {
            base: f.next()?.parse().ok()?,
            size: f.next()?.parse().ok()?,
            next: f.next()?.parse().ok()?,
            max_timestamp: f.next()?.parse().ok()?,
        };
        f.next().is_none().then_some(m)
    }
}

/// Reads and removes the clean-shutdown marker (and a temporary file of an interrupted
/// write); `None` if there is none or it does not parse.
fn take_clean_shutdown(dir: &Path) -> Option<CleanShutdown> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let text = std::fs::read_to_string(&path).ok();
    let _ = std::fs::remove_file(dir.join(format!("{CLEAN_SHUTDOWN_FILE}.tmp")));
    if text.is_some() {
        if let Err(e) = std::fs::remove_file(&path) {
            // Kept, it could be trusted again after appends: check the tail instead.
            tracing::warn!(path = %path.display(), error = %e, "could not remove the clean-shutdown marker");
            return None;
        }
    }
    CleanShutdown::parse(&text?)
}

/// Takes the active segment as a clean close left it, without reading its data: the index
/// files as they are, the end and newest timestamp from the marker. `None` (then the tail is
/// checked) if the segment's length or its index files are not exactly what that close left.
/// Returns the bytes written since the last offset index entry.
fn trust_clean_tail(seg: &Segment, m: &CleanShutdown) -> Result<Option<u64>> {
    let data_len = seg.file()?.metadata()?.len();
    if data_len != m.size || m.next < seg.base_offset {
        return Ok(None);
    }
    let (index_path, time_path) = (seg.path("index"), seg.path("timeindex"));
    let offsets = index::load_offset_index(&index_path, data_len)?;
    let times = index::load_time_index(&time_path)?;
    let (Some(offsets), Some(times)) = (offsets, times) else {
        return Ok(None);
    };
    let whole = file_len(&index_path)? == Some((offsets.len() * index::INDEX_ENTRY_LEN) as u64)
        && file_len(&time_path)? == Some((times.len() * index::TIME_ENTRY_LEN) as u64)
        && times.last().is_none_or(|t| t.timestamp <= m.max_timestamp);
    if !whole {
        return Ok(None);
    }
    let since = offsets
        .last()
        .map_or(data_len, |e| data_len - u64::from(e.position));
    seg.set_indexes(offsets, times);
    seg.set_recovered(m.size, m.next, m.max_timestamp);
    Ok(Some(since))
}

/// The length of a file, `None` if it does not exist.
fn file_len(path: &Path) -> io::Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Log>();
    let _ = segment_path;
}
