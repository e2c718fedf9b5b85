//! The log's typed errors. Doors map them to their own codes (Kafka error codes, HTTP status).

use std::io;

/// Why a log operation failed. Input errors write nothing.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A batch whose bytes do not hold together (CRC, lengths, truncation).
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// A batch in a format other than v2.
    #[error("unsupported record batch magic {0} (only v2 is stored)")]
    UnsupportedMagic(i8),
    /// A batch whose header contradicts itself (record count against last offset delta).
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// A batch above `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge {
        /// Size of the offending batch.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
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
