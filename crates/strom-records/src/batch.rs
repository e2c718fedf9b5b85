//! The record batch v2 header: the one part of a batch the log reads and writes.
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! | offset | size | field                  | covered by CRC |
//! |--------|------|------------------------|----------------|
//! | 0      | 8    | base offset            | no             |
//! | 8      | 4    | batch length (after it)| no             |
//! | 12     | 4    | partition leader epoch | no             |
//! | 16     | 1    | magic (2)              | no             |
//! | 17     | 4    | CRC-32C                | no             |
//! | 21     | 2    | attributes             | yes            |
//! | 23     | 4    | last offset delta      | yes            |
//! | 27     | 8    | base timestamp         | yes            |
//! | 35     | 8    | max timestamp          | yes            |
//! | 43     | 8    | producer id            | yes            |
//! | 51     | 2    | producer epoch         | yes            |
//! | 53     | 4    | base sequence          | yes            |
//! | 57     | 4    | records count          | yes            |
//! | 61     | ...  | records                | yes            |
//!
//! Records are walked by [`crate::walk`]; this module owns the header, the batch-level
//! checks and the broker's stamps.

use crate::codec::{decompressed_bytes_max, Codec, Stream};
use crate::walk::{timestamp, walk, Skip, Slice};
use crate::BatchError;

/// Bytes before the batch length field's payload starts (base offset + length).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the whole v2 batch header, records excluded.
pub const HEADER_LEN: usize = 61;
/// The only record batch format Strom stores.
pub const MAGIC_V2: i8 = 2;

pub(crate) const LENGTH_AT: usize = 8;
pub(crate) const LEADER_EPOCH_AT: usize = 12;
pub(crate) const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
pub(crate) const ATTRIBUTES_AT: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_AT: usize = 23;
pub(crate) const BASE_TIMESTAMP_AT: usize = 27;
pub(crate) const MAX_TIMESTAMP_AT: usize = 35;
pub(crate) const PRODUCER_ID_AT: usize = 43;
pub(crate) const PRODUCER_EPOCH_AT: usize = 51;
pub(crate) const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORDS_COUNT_AT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
pub(crate) const ATTR_TRANSACTIONAL: i16 = 0x10;
pub(crate) const ATTR_CONTROL: i16 = 0x20;

/// The parsed header of one record batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Length of the batch after the length field.
    pub batch_length: i32,
    /// Partition leader epoch, set by the broker.
    pub leader_epoch: i32,
    /// Format version; 2 for everything Strom stores.
    pub magic: i8,
    /// CRC-32C of the bytes from the attributes to the end of the batch.
    pub crc: u32,
    /// Compression codec, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch (or the log append time).
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 if none.
    pub producer_id: i64,
    /// Idempotent producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf`; `None` if fewer than [`HEADER_LEN`] bytes.
    /// Parsing checks nothing: see [`validate`] and [`BatchHeader::check_stored`].
    pub fn parse(buf: &[u8]) -> Option<BatchHeader> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, LENGTH_AT),
            leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: u32::from_be_bytes(buf[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes")),
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            records_count: be_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Total size on disk: the log overhead plus the batch length.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record of the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    /// Whether the batch's timestamps are the broker's append time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch is a control batch (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Checks a batch read back from disk at `position` where `expected_base` was due.
    /// `whole` must hold the entire batch. Used by recovery: any failure marks a torn tail.
    pub fn check_stored(&self, whole: &[u8], expected_base: Option<i64>) -> bool {
        self.magic == MAGIC_V2
            && self.batch_length >= (HEADER_LEN - LOG_OVERHEAD) as i32
            && whole.len() == self.total_len()
            && self.last_offset_delta >= 0
            && self.records_count == self.last_offset_delta + 1
            && expected_base.is_none_or(|b| b == self.base_offset)
            && crc32c::crc32c(&whole[ATTRIBUTES_AT..]) == self.crc
    }
}

/// What [`validate`] learned about a buffer of batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchesSummary {
    /// Number of batches in the buffer.
    pub batches: usize,
    /// Number of records over all batches.
    pub records: u64,
    /// Largest max timestamp over all batches.
    pub max_timestamp: i64,
    /// Whether some record may carry a header whose key starts with
    /// [`crate::RESERVED_HEADER_PREFIX`] (`strom.`): exact for uncompressed batches; for
    /// compressed ones a key cut by the decompression window counts. `false` means
    /// certainly none, so the broker's delay and dedup never need to read the records.
    pub reserved_headers: bool,
}

/// Validates a buffer of one or more client-sent v2 batches, before any byte is written:
/// the header (lengths, magic, `max_batch_bytes` per batch, CRC-32C, record count against
/// last offset delta, no control batch, a known codec) and every record's framing (see
/// [`crate::walk`](crate#records)), decompressing compressed batches through a fixed window
/// and refusing them past [`crate::decompressed_bytes_max`]. The buffer must end exactly at
/// a batch boundary. Uncompressed records are walked in place, never copied.
pub fn validate(buf: &[u8], max_batch_bytes: usize) -> Result<BatchesSummary, BatchError> {
    validate_with(buf, max_batch_bytes, false)
}

/// [`validate`] that accepts control batches (transaction markers): for the broker's own
/// marker appends only, never for what a client sent.
pub fn validate_control(buf: &[u8], max_batch_bytes: usize) -> Result<BatchesSummary, BatchError> {
    validate_with(buf, max_batch_bytes, true)
}

fn validate_with(
    buf: &[u8],
    max_batch_bytes: usize,
    allow_control: bool,
) -> Result<BatchesSummary, BatchError> {
    let mut summary = BatchesSummary {
        max_timestamp: -1,
        ..Default::default()
    };
    let mut pos = 0;
    if buf.is_empty() {
        return Err(BatchError::Corrupt("empty record set".into()));
    }
    while pos < buf.len() {
        let rest = &buf[pos..];
        let header = check_header(rest, pos, max_batch_bytes)?;
        if header.is_control() && !allow_control {
            return Err(BatchError::Invalid(
                "a control batch (transaction marker): only the broker writes those".into(),
            ));
        }
        let whole = &rest[..header.total_len()];
        if header.is_control() {
            // A marker: its one record is the broker's, checked by its builder.
            summary.batches += 1;
            summary.records += header.records_count as u64;
            pos += whole.len();
            continue;
        }
        summary.reserved_headers |= check_records(&header, whole)?;
        summary.batches += 1;
        summary.records += header.records_count as u64;
        summary.max_timestamp = summary.max_timestamp.max(header.max_timestamp);
        pos += whole.len();
    }
    Ok(summary)
}

/// The header checks of [`validate`] for the batch at the start of `rest` (at byte `pos` of
/// its buffer, for messages): it is whole, v2, within `max_batch_bytes`, CRC-valid, and its
/// count agrees with its last offset delta.
pub(crate) fn check_header(
    rest: &[u8],
    pos: usize,
    max_batch_bytes: usize,
) -> Result<BatchHeader, BatchError> {
    if rest.len() < LOG_OVERHEAD + 5 {
        return Err(BatchError::Corrupt(format!(
            "truncated batch header at byte {pos}"
        )));
    }
    let magic = rest[MAGIC_AT] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let header = BatchHeader::parse(rest)
        .ok_or_else(|| BatchError::Corrupt(format!("truncated batch header at byte {pos}")))?;
    if header.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::Corrupt(format!(
            "batch length {} is shorter than a header",
            header.batch_length
        )));
    }
    let total = header.total_len();
    if total > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: total,
            max: max_batch_bytes,
        });
    }
    if total > rest.len() {
        return Err(BatchError::Corrupt(format!(
            "batch length {} runs past the end of the record set",
            header.batch_length
        )));
    }
    if crc32c::crc32c(&rest[ATTRIBUTES_AT..total]) != header.crc {
        return Err(BatchError::Corrupt("CRC-32C mismatch".into()));
    }
    if header.records_count <= 0 || header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::Invalid(format!(
            "batch has {} records but last offset delta {}",
            header.records_count, header.last_offset_delta
        )));
    }
    Ok(header)
}

/// Walks every record of the whole batch `whole` (header checked): in place when
/// uncompressed, through a bounded decompressing stream otherwise. Returns whether a
/// record may carry a reserved header (see [`BatchesSummary::reserved_headers`]).
fn check_records(header: &BatchHeader, whole: &[u8]) -> Result<bool, BatchError> {
    let records = &whole[HEADER_LEN..];
    let base = header.base_timestamp;
    let mut reserved = false;
    let mut each = |index: i32, p: crate::walk::Parts<()>| {
        reserved |= p.reserved;
        timestamp(index, base, p.timestamp_delta).map(|_| ())
    };
    match Codec::from_id(header.compression())? {
        Codec::None => {
            if let Some(reserved) = crate::fast::records_ok(records, header.records_count, base) {
                return Ok(reserved);
            }
            let mut src = Slice::<Skip>::new(records);
            walk(
                &mut src,
                header.records_count,
                Some(records.len() as u64),
                &mut each,
            )?;
        }
        codec => {
            let max = decompressed_bytes_max(whole.len());
            let mut src = Stream::new(codec, records, max)?;
            walk(&mut src, header.records_count, None, &mut each)?;
        }
    }
    Ok(reserved)
}

/// Writes the broker-assigned fields of one batch in place: base offset and leader epoch
/// (outside the CRC), and for LogAppendTime the timestamp type and max timestamp (inside
/// it, so the CRC is recomputed).
pub fn stamp(batch: &mut [u8], base_offset: i64, leader_epoch: i32, append_time: Option<i64>) {
    let (head, rest) = batch.split_at_mut(HEADER_LEN);
    stamp_header(head, rest, base_offset, leader_epoch, append_time);
}

/// [`stamp`] for a batch whose header (`head`, the first [`HEADER_LEN`] bytes) is a copy
/// apart from the rest of the batch (`rest`), which stays untouched.
pub fn stamp_header(
    head: &mut [u8],
    rest: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    append_time: Option<i64>,
) {
    head[0..8].copy_from_slice(&base_offset.to_be_bytes());
    head[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(now) = append_time {
        let attrs = be_i16(head, ATTRIBUTES_AT) | ATTR_LOG_APPEND_TIME;
        head[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
        head[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[ATTRIBUTES_AT..HEADER_LEN]), rest);
        head[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Iterates over the whole batches at the start of `buf`, stopping at the first partial one.
pub fn headers(buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(&buf[pos..])?;
        let total = header.total_len();
        if header.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 || pos + total > buf.len() {
            return None;
        }
        let at = pos;
        pos += total;
        Some((at, header))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;

    #[test]
    fn built_batch_validates_and_parses() {
        let b = build(1000, &[b"a", b"bc", b"def"]);
        let s = validate(&b, 1 << 20).unwrap();
        assert_eq!(s.batches, 1);
        assert_eq!(s.records, 3);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.last_offset_delta, 2);
        assert!(h.check_stored(&b, Some(0)));
    }

    #[test]
    fn validate_rejects_bad_input() {
        let b = build(1, &[b"x"]);
        let mut crc = b.clone();
        *crc.last_mut().unwrap() ^= 1;
        assert!(matches!(
            validate(&crc, 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
        let mut magic = b.clone();
        magic[MAGIC_AT] = 1;
        assert!(matches!(
            validate(&magic, 1 << 20),
            Err(BatchError::UnsupportedMagic(1))
        ));
        assert!(matches!(validate(&b, 10), Err(BatchError::TooLarge { .. })));
        assert!(matches!(
            validate(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
        let mut count = b.clone();
        count[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&count[ATTRIBUTES_AT..]);
        count[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&count, 1 << 20),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn stamp_log_append_time_keeps_crc_valid() {
        let mut b = build(1, &[b"x", b"y"]);
        stamp(&mut b, 42, 3, Some(777));
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(
            (h.base_offset, h.leader_epoch, h.max_timestamp),
            (42, 3, 777)
        );
        assert!(h.is_log_append_time());
        assert!(h.check_stored(&b, Some(42)));
    }
}
