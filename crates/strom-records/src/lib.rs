//! # strom-records: Kafka's record batch format v2, in one place
//!
//! Everything Strom knows about the bytes of a record batch lives here, with no I/O: the
//! 61-byte header ([`BatchHeader`], [`headers`], the broker's [`stamp`]s), validation of
//! what a client sends ([`validate`]), reading what is stored ([`records`],
//! [`decode_batches`]), building batches ([`build_records`], [`build_compressed`]) and
//! Kafka's varints ([`varint`]), and the magic 0/1 message sets of old clients converted to
//! and from v2 batches ([`message_set`]). The log (`strom-log`) calls [`validate`] on every append,
//! so no byte reaches a segment unvalidated; the doors and the CLI read records through
//! [`records`].
//!
//! ## Records
//!
//! [`validate`] checks, for every batch: that it is whole, v2, within `max.message.bytes`,
//! CRC-valid, that its record count agrees with its last offset delta, that it is not a
//! control batch (only the broker writes transaction markers) and that its codec is known;
//! then every record's framing (the layout is in the `walk` module): a record length
//! within the batch, well-formed varints (at most 5 bytes, varlongs 10), the offset delta
//! equal to the record's index, key and value lengths >= -1 and within the record, a header
//! count >= 0 that the record can hold, header keys non-null, the record ending exactly at
//! its length, and the batch holding exactly its record count. Compressed batches are
//! decompressed through a fixed window ([`WINDOW_BYTES`]) and walked as they come out,
//! refused past [`decompressed_bytes_max`]; uncompressed batches are walked in place,
//! never copied.
//!
//! ## Invariants
//!
//! - **Architecture invariant:** this crate knows nothing of requests, topics, files or
//!   sockets: bytes in, verdicts and records out.
//! - No count or length read from a batch sizes an allocation: each is checked against the
//!   bytes that remain before anything is skipped or taken, and what readers collect grows
//!   with the bytes actually there.
//! - The validator and the readers share one record walker, so a batch the log stored is
//!   one every reader can read, and a batch a reader refuses is one the log would refuse.
//! - Nothing here panics on input.

/// Header keys the broker acts on start with this (`strom.delay.ms`, `strom.deliver.at`,
/// `strom.msg.id`): [`validate`] reports whether any record has one
/// ([`BatchesSummary::reserved_headers`]), so batches without them never have their records
/// read by the broker.
pub const RESERVED_HEADER_PREFIX: &[u8] = b"strom.";

mod batch;
mod build;
mod codec;
mod control;
mod error;
mod fast;
pub mod message_set;
mod read;
pub mod varint;
mod walk;

pub use batch::{
    headers, stamp, stamp_header, validate, validate_control, BatchHeader, BatchesSummary,
    HEADER_LEN, LOG_OVERHEAD, MAGIC_V2,
};
pub use build::{
    build, build_compressed, build_records, compress, compress_level, encode_records, rebuild,
    rebuild_run, recompress_batches, wrap_records, NewRecord, ProducerFields,
};
pub use codec::{
    decompressed_bytes_max, Codec, DECOMPRESSION_FLOOR_BYTES, DECOMPRESSION_RATIO_MAX,
    WINDOW_BYTES, ZSTD_WINDOW_LOG_MAX,
};
pub use control::{
    build_control, control_marker, set_transactional, ControlMarker, CONTROL_ABORT, CONTROL_COMMIT,
};
pub use error::BatchError;
pub use read::{decode_batches, records, BadBatch, Record, Records};

#[cfg(test)]
mod tests;
