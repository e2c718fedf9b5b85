//! # strom-log: Strom's storage engine
//!
//! A [`Log`] is one partition's append-only sequence of Kafka record batches (format v2),
//! stored in segments. Each segment is three files in the partition's directory, named by
//! the segment's base offset (20 digits, zero padded):
//!
//! - `<base>.log`: the batches, byte for byte as the producer sent them except for the
//!   fields the broker owns (base offset, partition leader epoch, and for `LogAppendTime`
//!   the max timestamp and CRC);
//! - `<base>.index`: a sparse offset → file position index;
//! - `<base>.timeindex`: a sparse timestamp → offset index;
//! - `<base>.txnindex` (only once a range was added): aborted ranges, see [`Log::add_aborted`].
//!
//! The full byte layout is in `docs/on-disk-format.md`.
//!
//! ## Invariants
//!
//! - **Architecture invariant:** this crate knows nothing of Kafka requests, topics or
//!   networking. The record batch format is `strom-records`'s: the log calls its validator
//!   on every append (so no byte reaches a segment unvalidated) and its header parser and
//!   stamps; it never reads records itself.
//! - Offsets are contiguous: each batch's base offset is the previous batch's last offset + 1.
//! - Every byte below a segment's published size is a whole, CRC-valid batch. Appends write
//!   first and publish after, so readers never see a partial batch; readers take no lock the
//!   writer waits on for longer than a pointer copy.
//! - An append is all-or-nothing: validation happens before any write, and a failed write is
//!   truncated away.
//! - Recovery checks the bytes after the last index entry of every segment from the
//!   recovery point on (normally only the active segment), truncates at the first batch that
//!   fails, drops the segments after a hole, and rebuilds the indexes from what it verified.
//!   Segments below the recovery point were fdatasync'ed by their (background) seal.
//!   After a clean [`Log::close`] the active segment's tail is trusted as the close recorded
//!   it (`clean-shutdown`, removed by the next open) while its length is unchanged.
//! - Damage recovery cannot repair without losing or renumbering records (a segment data
//!   file missing while its indexes remain, a hole between synced segments, a recovery point
//!   past the last segment) is never papered over: [`Log::open`] fails with
//!   [`LogError::Damaged`] naming the files, and the caller keeps the partition offline.
//! - A write that fails (disk full) leaves nothing behind, data or index bytes; the next
//!   append tries again. A sync that fails is never tried again: the log goes offline
//!   ([`LogError::Failed`]) until it is reopened, because after a failed fsync the kernel may
//!   drop the pages it could not write and report the next fsync as a success.
//!
//! ## Durability
//!
//! `flush.messages` and `flush.ms` are honoured through [`AppendInfo::flush_due`],
//! [`Log::flush_to`] (group commit: concurrent callers share one fdatasync) and
//! [`Log::flush_if_due`]. With neither set, the OS writes back (Kafka's default).

mod config;
mod error;
pub mod fault;
mod handles;
mod index;
mod log;
mod segment;
mod txnindex;

pub use config::{
    LogConfig, TimestampType, MAX_BATCH_BYTES_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN,
};
pub use error::{LogError, Result};
pub use handles::{
    open_files, open_files_budget, open_files_limit, set_open_files_budget,
    MIN_BUDGET as MIN_OPEN_FILES_BUDGET,
};
pub use log::cleaner::{
    map_capacity as cleaner_map_capacity, CleanOptions, CleanOutcome, CleanerStats,
    CHECKPOINT_FILE as CLEANER_CHECKPOINT_FILE, DEDUPE_BUFFER_BYTES_DEFAULT,
    ENTRY_BYTES as CLEANER_ENTRY_BYTES,
};
pub use log::{
    now_ms, AppendInfo, FileRange, Log, RangeRead, ReadResult, RetentionOutcome, TimestampHit,
};
pub use strom_records::{
    build as build_batch, headers as batch_headers, validate as validate_batches,
};
pub use strom_records::{build_control, control_marker, set_transactional, ControlMarker};
pub use strom_records::{
    BatchError, BatchHeader, BatchesSummary, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2,
};
pub use txnindex::{AbortedRange, TXN_ENTRY_LEN};
