//! Why a batch is refused. Doors map each kind to their own code (see `strom-kafka`'s
//! `codes.rs` and the HTTP door's `ApiError`).

/// A record batch that does not hold together. Nothing of a batch with such an error is
/// stored; a reader skips such a batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Bytes that do not hold together: CRC-32C mismatch, truncation, a batch length that
    /// runs past the record set, undecodable compressed data, an unknown codec
    /// (Kafka's `CORRUPT_MESSAGE`).
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// A batch in a format other than v2 (`UNSUPPORTED_FOR_MESSAGE_FORMAT`).
    #[error("unsupported record batch magic {0} (only v2 is stored)")]
    UnsupportedMagic(i8),
    /// A header that contradicts itself or its records: count against last offset delta,
    /// a count other than the records present, bytes after the last record, a control batch
    /// sent by a client (`INVALID_RECORD`).
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// One record's framing is wrong (`INVALID_RECORD`, with a KIP-467 record error naming
    /// the record).
    #[error("invalid record batch: record {index}: {message}")]
    InvalidRecord {
        /// The record's index within its batch (its offset delta when well formed).
        index: i32,
        /// What is wrong with it.
        message: String,
    },
    /// A batch above `max.message.bytes` (`MESSAGE_TOO_LARGE`).
    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Size of the batch (log overhead included).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A compressed batch whose records decompress to more than
    /// [`crate::decompressed_bytes_max`] (`MESSAGE_TOO_LARGE`).
    #[error(
        "record batch decompresses to more than {max} bytes (the bound is {ratio} times \
         the larger of the batch's size and {floor} bytes)",
        ratio = crate::DECOMPRESSION_RATIO_MAX,
        floor = crate::DECOMPRESSION_FLOOR_BYTES
    )]
    DecompressedTooLarge {
        /// The bound that was passed.
        max: u64,
    },
}

impl BatchError {
    /// The record at fault, if the error is about one record: `(index within the batch,
    /// message)`, for Produce's KIP-467 `record_errors`.
    pub fn record_error(&self) -> Option<(i32, &str)> {
        match self {
            BatchError::InvalidRecord { index, message } => Some((*index, message)),
            _ => None,
        }
    }
}
