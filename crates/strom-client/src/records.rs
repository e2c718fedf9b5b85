//! Record batch helpers: encoding through `kafka_protocol::records` (and a hand-written
//! uncompressed fast path for the bench), decoding through `strom_records`' bounded reader.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strom_records::varint::{put_varint, varint_len};

use crate::{Error, Result};

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct ProduceRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; `None` = now.
    pub timestamp: Option<i64>,
}

/// A fetched record.
#[derive(Debug, Clone)]
pub struct ConsumedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Parses a compression name (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
pub fn parse_compression(s: &str) -> Result<Compression> {
    Ok(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => return Err(Error::Invalid(format!("unknown compression '{other}'"))),
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn to_record(i: usize, r: &ProduceRecord, now: i64) -> Record {
    let mut headers = IndexMap::new();
    for (k, v) in &r.headers {
        headers.insert(StrBytes::from_string(k.clone()), v.clone());
    }
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        // The encoder keeps one batch while offset - sequence is constant; starting at -1
        // writes base_sequence = -1 (no idempotence) into the batch header.
        sequence: i as i32 - 1,
        timestamp: r.timestamp.unwrap_or(now),
        key: r.key.clone(),
        value: r.value.clone(),
        headers,
    }
}

/// Encodes records into one v2 record batch (offsets relative from 0).
pub fn encode_batch(records: &[ProduceRecord], compression: Compression) -> Result<Bytes> {
    let now = now_ms();
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| to_record(i, r, now))
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(buf.freeze())
}

/// Encodes `count` copies of `value` (no key) with one timestamp into a v2 batch: the bench's
/// hot path, where `value` is a shared buffer (no per-record copy of the payload).
pub fn encode_uniform_batch(
    buf: &mut BytesMut,
    keys: Option<&[Bytes]>,
    value: &Bytes,
    count: usize,
    timestamp: i64,
    compression: Compression,
) -> Result<()> {
    if compression == Compression::None {
        write_plain_batch(buf, keys, value, count, timestamp);
        return Ok(());
    }
    let recs = (0..count).map(|i| Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        // The encoder keeps one batch while offset - sequence is constant; starting at -1
        // writes base_sequence = -1 (no idempotence) into the batch header.
        sequence: i as i32 - 1,
        timestamp,
        key: keys.map(|k| k[i % k.len()].clone()),
        value: Some(value.clone()),
        headers: IndexMap::new(),
    });
    let recs: Vec<Record> = recs.collect();
    RecordBatchEncoder::encode(
        buf,
        recs.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| Error::Protocol(e.to_string()))
}

/// Uncompressed v2 batch written straight into `buf` (no per-record structs): header,
/// then records with timestamp delta 0, then CRC-32C over attributes..end.
fn write_plain_batch(
    buf: &mut BytesMut,
    keys: Option<&[Bytes]>,
    value: &Bytes,
    count: usize,
    ts: i64,
) {
    let start = buf.len();
    buf.reserve(61 + count * (value.len() + 16));
    buf.put_i64(0); // base offset
    buf.put_i32(0); // batch length, patched below
    buf.put_i32(-1); // partition leader epoch
    buf.put_i8(2); // magic
    buf.put_u32(0); // crc, patched below
    buf.put_i16(0); // attributes
    buf.put_i32(count as i32 - 1); // last offset delta
    buf.put_i64(ts);
    buf.put_i64(ts);
    buf.put_i64(-1); // producer id
    buf.put_i16(-1); // producer epoch
    buf.put_i32(-1); // base sequence
    buf.put_i32(count as i32);
    for i in 0..count {
        let key = keys.map(|k| &k[i % k.len()]);
        let klen = key.map_or(-1, |k| k.len() as i64);
        let vlen = value.len() as i64;
        let body = 1
            + 1
            + varint_len(i as i64)
            + varint_len(klen)
            + key.map_or(0, |k| k.len())
            + varint_len(vlen)
            + value.len()
            + 1;
        put_varint(buf, body as i64);
        buf.put_i8(0); // attributes
        put_varint(buf, 0); // timestamp delta
        put_varint(buf, i as i64);
        put_varint(buf, klen);
        if let Some(k) = key {
            buf.extend_from_slice(k);
        }
        put_varint(buf, vlen);
        buf.extend_from_slice(value);
        put_varint(buf, 0); // headers
    }
    let len = (buf.len() - start - 12) as i32;
    buf[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&buf[start + 21..]);
    buf[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

/// A fetched batch that could not be read (bad CRC, bad framing, undecodable compressed
/// data): skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedBatch {
    /// The batch's base offset.
    pub offset: i64,
    /// The offset after it.
    pub next_offset: i64,
    /// Why it cannot be read.
    pub error: String,
}

/// The records of a fetched blob, and the batches skipped.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Every record of the good batches, in order (control records left out).
    pub records: Vec<ConsumedRecord>,
    /// The batches that could not be read, in order.
    pub skipped: Vec<SkippedBatch>,
    /// The offset after the last whole batch (good or skipped), `None` if there was none.
    pub next_offset: Option<i64>,
}

/// Decodes all whole batches in a fetched `records` blob through `strom_records`' bounded
/// reader (no count or length on the wire sizes an allocation). A batch that cannot be read
/// is skipped and reported; a truncated trailing batch (allowed by the protocol) is ignored.
pub fn decode_records(data: Bytes) -> Decoded {
    let mut out = Decoded::default();
    for (h, batch) in strom_records::decode_batches(&data) {
        out.next_offset = Some(h.last_offset() + 1);
        match batch {
            Ok(records) => out.records.extend(records.into_iter().map(|r| {
                ConsumedRecord {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                        .collect(),
                }
            })),
            Err(bad) => out.skipped.push(SkippedBatch {
                offset: bad.offset,
                next_offset: bad.next_offset,
                error: bad.error.to_string(),
            }),
        }
    }
    out
}

/// Counts records and bytes in a fetched blob without decoding records (bench consume path).
/// Returns (records, last_offset + 1, first_timestamp of each batch with its record count).
pub fn scan_batches(data: &[u8], mut on_batch: impl FnMut(i64, i32, i64)) -> Option<i64> {
    let mut pos = 0usize;
    let mut next = None;
    while data.len() >= pos + 61 {
        let base = i64::from_be_bytes(data[pos..pos + 8].try_into().ok()?);
        let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().ok()?);
        if len < 49 {
            return next;
        }
        let total = 12 + len as usize;
        if data.len() < pos + total {
            break;
        }
        let last_delta = i32::from_be_bytes(data[pos + 23..pos + 27].try_into().ok()?);
        let first_ts = i64::from_be_bytes(data[pos + 27..pos + 35].try_into().ok()?);
        let count = i32::from_be_bytes(data[pos + 57..pos + 61].try_into().ok()?);
        on_batch(base, count, first_ts);
        next = Some(base + last_delta as i64 + 1);
        pos += total;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip() {
        let recs = vec![
            ProduceRecord {
                key: Some(Bytes::from_static(b"k1")),
                value: Some(Bytes::from_static(b"hello")),
                headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
                timestamp: Some(1234),
            },
            ProduceRecord {
                key: None,
                value: Some(Bytes::from_static(b"world")),
                headers: vec![],
                timestamp: Some(1235),
            },
        ];
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let b = encode_batch(&recs, c).unwrap();
            let mut seen = Vec::new();
            let next = scan_batches(&b, |base, n, ts| seen.push((base, n, ts)));
            assert_eq!(seen, vec![(0, 2, 1234)]);
            assert_eq!(next, Some(2));
            let out = decode_records(b).records;
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].value.as_deref(), Some(&b"hello"[..]));
            assert_eq!(out[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(out[0].headers[0].0, "h");
            assert_eq!(out[1].offset, 1);
            assert_eq!(out[1].timestamp, 1235);
        }
    }

    #[test]
    fn uniform_batch_and_partial_tail() {
        let mut buf = BytesMut::new();
        let v = Bytes::from(vec![7u8; 100]);
        encode_uniform_batch(&mut buf, None, &v, 10, 99, Compression::None).unwrap();
        let full = buf.clone().freeze();
        encode_uniform_batch(&mut buf, None, &v, 10, 100, Compression::None).unwrap();
        let mut two = buf.freeze();
        let truncated = two.split_to(full.len() + 30);
        let out = decode_records(truncated).records;
        assert_eq!(out.len(), 10);
        // Keyed fast path decodes (CRC checked by the kafka-protocol decoder).
        let mut buf = BytesMut::new();
        let keys = [Bytes::from_static(b"a"), Bytes::from(vec![b'k'; 200])];
        encode_uniform_batch(&mut buf, Some(&keys), &v, 300, 5, Compression::None).unwrap();
        let out = decode_records(buf.freeze()).records;
        assert_eq!(out.len(), 300);
        assert_eq!(out[299].offset, 299);
        assert_eq!(out[1].key.as_ref().unwrap().len(), 200);
        assert_eq!(out[2].key.as_deref(), Some(&b"a"[..]));
        assert!(out
            .iter()
            .all(|r| r.timestamp == 5 && r.value.as_ref() == Some(&v)));
        assert!(out.iter().all(|r| r.value.as_ref().unwrap().len() == 100));
    }
}
