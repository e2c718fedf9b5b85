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
//! Records stay opaque: nothing here decompresses or walks them.

use crate::LogError;

/// Bytes before the batch length field's payload starts (base offset + length).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the whole v2 batch header, records excluded.
pub const HEADER_LEN: usize = 61;
/// The only record batch format Strom stores.
pub const MAGIC_V2: i8 = 2;

const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

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
    pub(crate) fn check_stored(&self, whole: &[u8], expected_base: Option<i64>) -> bool {
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
}

/// Validates a buffer of one or more client-sent v2 batches, before any byte is written:
/// lengths, magic, CRC-32C, record count against last offset delta, and `max_batch_bytes`
/// per batch. The buffer must end exactly at a batch boundary.
pub fn validate(buf: &[u8], max_batch_bytes: usize) -> Result<BatchesSummary, LogError> {
    let mut summary = BatchesSummary {
        max_timestamp: -1,
        ..Default::default()
    };
    let mut pos = 0;
    if buf.is_empty() {
        return Err(LogError::CorruptBatch("empty record set".into()));
    }
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < LOG_OVERHEAD + 5 {
            return Err(LogError::CorruptBatch(format!(
                "truncated batch header at byte {pos}"
            )));
        }
        let magic = rest[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(LogError::UnsupportedMagic(magic));
        }
        let header = BatchHeader::parse(rest).ok_or_else(|| {
            LogError::CorruptBatch(format!("truncated batch header at byte {pos}"))
        })?;
        if header.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(LogError::CorruptBatch(format!(
                "batch length {} is shorter than a header",
                header.batch_length
            )));
        }
        let total = header.total_len();
        if total > max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                size: total,
                max: max_batch_bytes,
            });
        }
        if total > rest.len() {
            return Err(LogError::CorruptBatch(format!(
                "batch length {} runs past the end of the record set",
                header.batch_length
            )));
        }
        let whole = &rest[..total];
        if crc32c::crc32c(&whole[ATTRIBUTES_AT..]) != header.crc {
            return Err(LogError::CorruptBatch("CRC-32C mismatch".into()));
        }
        if header.records_count <= 0 || header.last_offset_delta != header.records_count - 1 {
            return Err(LogError::InvalidRecord(format!(
                "batch has {} records but last offset delta {}",
                header.records_count, header.last_offset_delta
            )));
        }
        if header.compression() == 0 {
            check_record_lengths(whole, header.records_count)?;
        }
        summary.batches += 1;
        summary.records += header.records_count as u64;
        summary.max_timestamp = summary.max_timestamp.max(header.max_timestamp);
        pos += total;
    }
    Ok(summary)
}

/// In an uncompressed batch, the records' length prefixes must add up to exactly the batch:
/// `count` records, no byte missing or left over. (Compressed batches are checked by their
/// CRC only: verifying their records would mean decompressing them.)
fn check_record_lengths(batch: &[u8], count: i32) -> Result<(), LogError> {
    let mut pos = HEADER_LEN;
    for i in 0..count {
        let bad = || LogError::InvalidRecord(format!("record {i} of {count} runs past the batch"));
        let (len, n) = read_varint(&batch[pos.min(batch.len())..]).ok_or_else(bad)?;
        if len < 0 {
            return Err(bad());
        }
        pos = pos
            .checked_add(n + len as usize)
            .filter(|&p| p <= batch.len())
            .ok_or_else(bad)?;
    }
    if pos != batch.len() {
        return Err(LogError::InvalidRecord(format!(
            "{} bytes after the batch's {count} records",
            batch.len() - pos
        )));
    }
    Ok(())
}

/// A zig-zag varint: value and bytes used.
fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw = 0u64;
    for (i, b) in buf.iter().take(10).enumerate() {
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

/// Writes the broker-assigned fields of one batch in place: base offset and leader epoch
/// (outside the CRC), and for LogAppendTime the timestamp type and max timestamp (inside
/// it, so the CRC is recomputed).
pub(crate) fn stamp(
    batch: &mut [u8],
    base_offset: i64,
    leader_epoch: i32,
    append_time: Option<i64>,
) {
    let (head, rest) = batch.split_at_mut(HEADER_LEN);
    stamp_header(head, rest, base_offset, leader_epoch, append_time);
}

/// [`stamp`] for a batch whose header (`head`, the first [`HEADER_LEN`] bytes) is a copy
/// apart from the rest of the batch (`rest`), which stays untouched.
pub(crate) fn stamp_header(
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

/// Builds an uncompressed v2 batch holding `values` as records with no key and no headers.
/// For tests, benchmarks and tools; producers send their own batches.
pub fn build(base_timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let mut body = Vec::with_capacity(value.len() + 16);
        body.push(0); // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i as i64); // offset delta
        put_varint(&mut body, -1); // key length: null
        put_varint(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        put_varint(&mut body, 0); // headers count
        put_varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let count = values.len() as i32;
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(count - 1).to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&records);
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(LogError::CorruptBatch(_))
        ));
        let mut magic = b.clone();
        magic[MAGIC_AT] = 1;
        assert!(matches!(
            validate(&magic, 1 << 20),
            Err(LogError::UnsupportedMagic(1))
        ));
        assert!(matches!(
            validate(&b, 10),
            Err(LogError::BatchTooLarge { .. })
        ));
        assert!(matches!(
            validate(&b[..b.len() - 1], 1 << 20),
            Err(LogError::CorruptBatch(_))
        ));
        let mut count = b.clone();
        count[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&count[ATTRIBUTES_AT..]);
        count[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&count, 1 << 20),
            Err(LogError::InvalidRecord(_))
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
