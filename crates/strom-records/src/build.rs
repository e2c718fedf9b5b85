//! Building v2 batches: for doors that receive records rather than batches (HTTP,
//! WebSocket), the broker's internal logs, tests and benchmarks. Producers send their own.

use std::io::Write;

use crate::batch::{ATTRIBUTES_AT, CRC_AT, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2};
use crate::varint::put_varint;
use crate::{BatchError, Codec};

/// One record to build into a batch.
#[derive(Clone, Debug, Default)]
pub struct NewRecord<'a> {
    /// Key (`None` = null).
    pub key: Option<&'a [u8]>,
    /// Value (`None` = null, a tombstone).
    pub value: Option<&'a [u8]>,
    /// Headers, in order; duplicate keys are kept.
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// The records section of a batch (each record length-prefixed), uncompressed.
pub fn encode_records(records: &[NewRecord<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        put_bytes(&mut rec, r.key);
        put_bytes(&mut rec, r.value);
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut rec, Some(k.as_bytes()));
            put_bytes(&mut rec, *v);
        }
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    body
}

/// A v2 batch around an already encoded records section `body` (compressed or not, as
/// `attributes` says) claiming `count` records, all at `timestamp` (CreateTime), no
/// producer id, base offset 0 until the log assigns it. The CRC is computed.
pub fn wrap_records(timestamp: i64, attributes: i16, count: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset
    out.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&(count - 1).to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// An uncompressed v2 batch of `records`, all stamped with `timestamp` (CreateTime).
pub fn build_records(timestamp: i64, records: &[NewRecord<'_>]) -> Vec<u8> {
    wrap_records(timestamp, 0, records.len() as i32, &encode_records(records))
}

/// Who wrote a batch, for [`rebuild`]: an idempotent producer's id, epoch and the
/// sequence number of the batch's first record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerFields {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record.
    pub base_sequence: i32,
}

/// An uncompressed v2 batch (CreateTime) of records read from other batches: each keeps its
/// timestamp, key, value and headers (in order, keys as bytes); `producer` stamps an
/// idempotent producer's fields. `records` must not be empty.
pub fn rebuild(records: &[crate::Record], producer: Option<ProducerFields>) -> Vec<u8> {
    let base = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = Vec::new();
    let mut rec = Vec::new();
    let put = |out: &mut Vec<u8>, b: &Option<bytes::Bytes>| put_bytes(out, b.as_deref());
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        put_varint(&mut rec, r.timestamp - base);
        put_varint(&mut rec, i as i64);
        put(&mut rec, &r.key);
        put(&mut rec, &r.value);
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut rec, Some(k));
            put(&mut rec, v);
        }
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut out = wrap_records(base, 0, records.len() as i32, &body);
    out[crate::batch::MAX_TIMESTAMP_AT..crate::batch::MAX_TIMESTAMP_AT + 8]
        .copy_from_slice(&max.to_be_bytes());
    if let Some(p) = producer {
        let at = crate::batch::PRODUCER_ID_AT;
        out[at..at + 8].copy_from_slice(&p.producer_id.to_be_bytes());
        out[at + 8..at + 10].copy_from_slice(&p.producer_epoch.to_be_bytes());
        out[at + 10..at + 14].copy_from_slice(&p.base_sequence.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Builds an uncompressed v2 batch holding `values` as records with no key and no headers.
pub fn build(base_timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
    let records: Vec<NewRecord<'_>> = values
        .iter()
        .map(|v| NewRecord {
            value: Some(v),
            ..Default::default()
        })
        .collect();
    build_records(base_timestamp, &records)
}

/// Compresses a records section with `codec` as Kafka's producers do (gzip; snappy in
/// xerial framing with 32 KiB blocks as Java writes it; an lz4 frame; a zstd frame).
pub fn compress(codec: Codec, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match codec {
        Codec::None => Ok(body.to_vec()),
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body)?;
            e.finish()
        }
        Codec::Snappy => {
            let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
            let mut enc = snap::raw::Encoder::new();
            for block in body.chunks(32 * 1024) {
                let c = enc.compress_vec(block).map_err(std::io::Error::other)?;
                out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            Ok(out)
        }
        Codec::Lz4 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new())?;
            e.write_all(body)?;
            let (out, r) = e.finish();
            r.map(|_| out)
        }
        Codec::Zstd => zstd::encode_all(body, 3),
    }
}

/// [`compress`] at a level (`None` or gzip's -1: the codec's default; snappy has none), as
/// Kafka's `compression.<codec>.level` topic configs ask.
pub fn compress_level(codec: Codec, body: &[u8], level: Option<i32>) -> std::io::Result<Vec<u8>> {
    match (codec, level) {
        (Codec::Gzip, Some(l)) if (1..=9).contains(&l) => {
            let mut e =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(l as u32));
            e.write_all(body)?;
            e.finish()
        }
        (Codec::Lz4, Some(l)) if l > 0 => {
            let mut e = lz4::EncoderBuilder::new()
                .level(l as u32)
                .build(Vec::new())?;
            e.write_all(body)?;
            let (out, r) = e.finish();
            r.map(|_| out)
        }
        (Codec::Zstd, Some(l)) => zstd::encode_all(body, l),
        _ => compress(codec, body),
    }
}

/// A batch of `records` compressed with `codec`.
pub fn build_compressed(
    codec: Codec,
    timestamp: i64,
    records: &[NewRecord<'_>],
) -> std::io::Result<Vec<u8>> {
    let body = compress(codec, &encode_records(records))?;
    Ok(wrap_records(
        timestamp,
        codec.id(),
        records.len() as i32,
        &body,
    ))
}

/// The batches of `buf` (each already checked by [`crate::validate`]) with their records
/// section in `codec`: every header field is kept (offsets, timestamps, producer fields,
/// transactional bit) except the codec bits, the length and the CRC, so the records are
/// the same bytes once decompressed. `None` when every batch already is in `codec` (nothing
/// to do). A topic's `compression.type` other than `producer` calls this at append.
pub fn recompress_batches(
    buf: &[u8],
    codec: Codec,
    level: Option<i32>,
) -> Result<Option<Vec<u8>>, BatchError> {
    use crate::batch::{check_header, LENGTH_AT};
    if crate::batch::headers(buf).all(|(_, h)| h.compression() == codec.id() || h.is_control()) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(buf.len());
    let mut pos = 0;
    while pos < buf.len() {
        let header = check_header(&buf[pos..], pos, usize::MAX)?;
        let whole = &buf[pos..pos + header.total_len()];
        pos += whole.len();
        if header.compression() == codec.id() || header.is_control() {
            out.extend_from_slice(whole);
            continue;
        }
        let body = &whole[HEADER_LEN..];
        let plain = match Codec::from_id(header.compression())? {
            Codec::None => body.to_vec(),
            from => {
                let mut s = crate::codec::Stream::new(
                    from,
                    body,
                    crate::codec::decompressed_bytes_max(whole.len()),
                )?;
                let mut plain = Vec::with_capacity(body.len() * 2);
                while s.take_into(crate::codec::WINDOW_BYTES, &mut plain)? {}
                plain
            }
        };
        let packed = compress_level(codec, &plain, level)
            .map_err(|e| BatchError::Corrupt(format!("recompressing a batch: {e}")))?;
        let start = out.len();
        out.extend_from_slice(&whole[..HEADER_LEN]);
        out.extend_from_slice(&packed);
        let b = &mut out[start..];
        let len = (HEADER_LEN - LOG_OVERHEAD + packed.len()) as i32;
        b[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
        let attrs = (header.attributes & !0x07) | codec.id();
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(Some(out))
}

/// A batch of `records`, a run of consecutive offsets read from the stored batch whose
/// header is `template`, that keeps what the template says of its batch: attributes (codec,
/// timestamp type, transactional bit), partition leader epoch, producer id and epoch; its
/// base offset is the first record's, and its base sequence moves with it, so a producer's
/// sequence numbers still match the offsets they were given. For the log cleaner, which
/// takes records out of a batch: a batch's offset deltas must be its records' indexes, so a
/// batch with a hole becomes one batch per run.
///
/// Errors if `records` is empty, does not follow the template's offsets one by one, or the
/// codec fails.
pub fn rebuild_run(
    template: &crate::BatchHeader,
    records: &[crate::Record],
) -> std::io::Result<Vec<u8>> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    let first = records.first().ok_or_else(|| invalid("no records"))?;
    if records
        .iter()
        .enumerate()
        .any(|(i, r)| r.offset != first.offset + i as i64)
        || first.offset < template.base_offset
        || records.last().map_or(0, |r| r.offset) > template.last_offset()
    {
        return Err(invalid("records are not a run of the template's offsets"));
    }
    let (base_ts, max_ts) = if template.is_log_append_time() {
        (template.base_timestamp, template.max_timestamp)
    } else {
        (
            records.iter().map(|r| r.timestamp).min().unwrap_or(0),
            records.iter().map(|r| r.timestamp).max().unwrap_or(0),
        )
    };
    let mut body = Vec::new();
    let mut rec = Vec::new();
    let put = |out: &mut Vec<u8>, b: &Option<bytes::Bytes>| put_bytes(out, b.as_deref());
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        put_varint(&mut rec, r.timestamp.wrapping_sub(base_ts));
        put_varint(&mut rec, i as i64);
        put(&mut rec, &r.key);
        put(&mut rec, &r.value);
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut rec, Some(k));
            put(&mut rec, v);
        }
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let codec = Codec::from_id(template.compression()).map_err(std::io::Error::other)?;
    let body = compress(codec, &body)?;
    let mut out = wrap_records(base_ts, template.attributes, records.len() as i32, &body);
    let delta = first.offset - template.base_offset;
    out[..8].copy_from_slice(&first.offset.to_be_bytes());
    let at = crate::batch::LEADER_EPOCH_AT;
    out[at..at + 4].copy_from_slice(&template.leader_epoch.to_be_bytes());
    let at = crate::batch::MAX_TIMESTAMP_AT;
    out[at..at + 8].copy_from_slice(&max_ts.to_be_bytes());
    let at = crate::batch::PRODUCER_ID_AT;
    out[at..at + 8].copy_from_slice(&template.producer_id.to_be_bytes());
    out[at + 8..at + 10].copy_from_slice(&template.producer_epoch.to_be_bytes());
    let sequence = if template.base_sequence < 0 {
        template.base_sequence
    } else {
        // Kafka's sequences wrap at i32::MAX.
        ((i64::from(template.base_sequence) + delta) % (i64::from(i32::MAX) + 1)) as i32
    };
    out[at + 10..at + 14].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod recompress_tests {
    use super::*;

    #[test]
    fn recompressed_batches_hold_the_same_records_in_the_new_codec() {
        let recs: Vec<NewRecord<'_>> = (0..50)
            .map(|_| NewRecord {
                key: Some(b"k"),
                value: Some(b"a value that compresses well well well well"),
                ..Default::default()
            })
            .collect();
        let gz = build_compressed(Codec::Gzip, 1000, &recs).unwrap();
        let mut buf = build_records(2000, &recs);
        buf.extend_from_slice(&gz);
        crate::validate(&buf, usize::MAX).unwrap();
        for codec in [
            Codec::Lz4,
            Codec::Zstd,
            Codec::Snappy,
            Codec::None,
            Codec::Gzip,
        ] {
            let out = recompress_batches(&buf, codec, Some(5))
                .unwrap()
                .expect("changed");
            crate::validate(&out, usize::MAX).unwrap();
            let mut n = 0;
            for (at, h) in crate::batch::headers(&out) {
                assert_eq!(h.compression(), codec.id());
                let b = bytes::Bytes::copy_from_slice(&out[at..at + h.total_len()]);
                for r in crate::records(&b).unwrap() {
                    let r = r.unwrap();
                    assert_eq!(r.value.as_deref(), recs[0].value);
                    n += 1;
                }
            }
            assert_eq!(n, 100);
        }
        let lz = recompress_batches(&buf, Codec::Lz4, None).unwrap().unwrap();
        assert!(recompress_batches(&lz, Codec::Lz4, None).unwrap().is_none());
    }
}
