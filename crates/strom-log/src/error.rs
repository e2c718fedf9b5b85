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
    /// An invalid setting.
    #[error("invalid log config: {0}")]
    Config(String),
    /// The log was closed or deleted.
    #[error("log is closed")]
    Closed,
    /// The file system failed (disk full, too many open files, permissions...).
    #[error("log i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Result alias of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
