//! The log's typed errors. Doors map them to their own codes (Kafka error codes, HTTP status).

use std::io;

/// Why a log operation failed. Input errors write nothing.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An appended batch refused by `strom_records::validate` (its kinds map to Kafka's
    /// CORRUPT_MESSAGE, INVALID_RECORD, MESSAGE_TOO_LARGE...).
    #[error(transparent)]
    Batch(#[from] strom_records::BatchError),
    /// Stored bytes the log cannot read back as a batch.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// The batches of one append do not fit in a segment.
    #[error("record set of {size} bytes exceeds segment.bytes ({max})")]
    RecordSetTooLarge {
        /// Size of the record set.
        size: usize,
        /// The segment size.
        max: u64,
    },
    /// A read outside `[log start offset, log end offset]`.
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// The log start offset.
        start: i64,
        /// The log end offset.
        end: i64,
    },
    /// A replica append whose batches do not continue the log: the first batch's base
    /// offset is not the log end offset, or a batch does not follow the one before it.
    #[error("replica batch at offset {got} does not continue the log at {expected}")]
    NotContiguous {
        /// The offset the log expected.
        expected: i64,
        /// The base offset of the batch.
        got: i64,
    },
    /// An invalid setting.
    #[error("invalid log config: {0}")]
    Config(String),
    /// The log was closed or deleted.
    #[error("log is closed")]
    Closed,
    /// The file system failed (disk full, too many open files, permissions...). Nothing of
    /// the failed operation is visible; the next operation tries again.
    #[error("log i/o error: {0}")]
    Io(#[from] io::Error),
    /// A sync (fdatasync) of the log's files failed. After a failed sync the kernel may have
    /// dropped the dirty pages it could not write and report success on the next sync
    /// (PostgreSQL's "fsyncgate"), so what was not yet durable is treated as lost: the log
    /// refuses every append, flush and read until it is opened again (at the next start),
    /// when recovery checks it from its recovery point.
    #[error("log offline after a failed sync: {0}; restart the broker to recover the log from what is on disk")]
    Failed(String),
    /// The log's files are damaged in a way recovery cannot repair without silently losing
    /// or renumbering records (a segment's data file is missing while its indexes remain,
    /// offsets that do not follow each other between synced segments): the log is not opened.
    #[error("damaged log: {0}")]
    Damaged(String),
}

impl LogError {
    /// Whether the file system ran out of space (ENOSPC) or quota (EDQUOT): the operation
    /// wrote nothing and may succeed once space is freed.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, LogError::Io(e) if is_out_of_space(e))
    }
}

/// Whether an I/O error is ENOSPC or EDQUOT.
pub(crate) fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Result alias of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
