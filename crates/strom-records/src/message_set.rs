//! Message sets of magic 0 and 1, the record format before v2 batches (KIP-98), as old
//! clients still send and read them (Produce v0-2, Fetch v0-3, which Kafka 4 removed in
//! KIP-896): converted to one v2 batch on the way in ([`up_convert`]) and from v2 batches
//! on the way out ([`down_convert`]). Only v2 batches are ever stored.
//!
//! A message is `offset i64, size i32, crc u32, magic i8, attributes i8, [timestamp i64
//! (magic 1)], key bytes, value bytes`, the CRC (CRC-32, IEEE) covering magic to the end. A
//! compressed message (codec in the attributes' low 3 bits: gzip, snappy, lz4) is a
//! wrapper whose value is the compressed message set of its inner messages; inner messages
//! are never compressed themselves.
//!
//! Bounds: every length is checked against the bytes present before anything is taken; a
//! wrapper's inner set decompresses through the bounded stream of the `codec` module
//! ([`crate::decompressed_bytes_max`] of the wrapper's size), and what is collected grows
//! with the bytes really there.

use bytes::Bytes;

use crate::codec::Stream;
use crate::{decode_batches, rebuild, BatchError, Codec, Record};

/// A message's fixed part after offset and size: crc, magic, attributes.
const MESSAGE_HEAD: usize = 4 + 1 + 1;
/// Offset and size in front of every message.
const LOG_OVERHEAD: usize = 8 + 4;
/// Attribute bit 3 (magic 1): the timestamp is the broker's append time.
const LOG_APPEND_TIME: u8 = 0x08;

fn corrupt(what: impl Into<String>) -> BatchError {
    BatchError::Corrupt(what.into())
}

/// CRC-32 (IEEE 802.3, reflected, as `java.util.zip.CRC32`), of magic 0/1 messages.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// One message of a set, as read.
struct Message {
    timestamp: i64,
    attributes: u8,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn take_bytes(b: &Bytes, at: &mut usize, end: usize) -> Result<Option<Bytes>, BatchError> {
    if end - *at < 4 {
        return Err(corrupt("message truncated in a length"));
    }
    let n = i32::from_be_bytes(b[*at..*at + 4].try_into().unwrap_or_default());
    *at += 4;
    if n == -1 {
        return Ok(None);
    }
    if n < 0 || n as usize > end - *at {
        return Err(corrupt(format!(
            "message field of {n} bytes, {} left",
            end - *at
        )));
    }
    let out = b.slice(*at..*at + n as usize);
    *at += n as usize;
    Ok(Some(out))
}

/// The messages of a set, in order; a message cut short at the end is an error (a produce
/// sends whole messages).
fn parse(set: &Bytes) -> Result<Vec<(u8, Message)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < set.len() {
        if set.len() - at < LOG_OVERHEAD {
            return Err(corrupt(
                "message set truncated in a message's offset or size",
            ));
        }
        let size = i32::from_be_bytes(set[at + 8..at + 12].try_into().unwrap_or_default());
        at += LOG_OVERHEAD;
        if size < MESSAGE_HEAD as i32 + 8 || size as usize > set.len() - at {
            return Err(corrupt(format!(
                "message of {size} bytes, {} left in the set",
                set.len() - at
            )));
        }
        let end = at + size as usize;
        let crc = u32::from_be_bytes(set[at..at + 4].try_into().unwrap_or_default());
        if crc32(&set[at + 4..end]) != crc {
            return Err(corrupt("message CRC mismatch"));
        }
        let magic = set[at + 4];
        let attributes = set[at + 5];
        let mut p = at + MESSAGE_HEAD;
        let timestamp = match magic {
            0 => -1,
            1 => {
                if end - p < 8 {
                    return Err(corrupt("message truncated in its timestamp"));
                }
                let t = i64::from_be_bytes(set[p..p + 8].try_into().unwrap_or_default());
                p += 8;
                t
            }
            m => return Err(BatchError::UnsupportedMagic(m as i8)),
        };
        let key = take_bytes(set, &mut p, end)?;
        let value = take_bytes(set, &mut p, end)?;
        if p != end {
            return Err(corrupt("bytes after a message's value"));
        }
        out.push((
            magic,
            Message {
                timestamp,
                attributes,
                key,
                value,
            },
        ));
        at = end;
    }
    Ok(out)
}

/// xxHash32 of `data` (seed 0), for the lz4 frame descriptor's checksum.
fn xxh32(data: &[u8]) -> u32 {
    const P1: u32 = 2_654_435_761;
    const P2: u32 = 2_246_822_519;
    const P3: u32 = 3_266_489_917;
    const P4: u32 = 668_265_263;
    const P5: u32 = 374_761_393;
    let lane = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut rest = data;
    let mut h = if data.len() >= 16 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u32.wrapping_sub(P1)];
        while rest.len() >= 16 {
            for (i, v) in v.iter_mut().enumerate() {
                *v = v
                    .wrapping_add(lane(&rest[i * 4..]).wrapping_mul(P2))
                    .rotate_left(13)
                    .wrapping_mul(P1);
            }
            rest = &rest[16..];
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        P5
    };
    h = h.wrapping_add(data.len() as u32);
    while rest.len() >= 4 {
        h = h
            .wrapping_add(lane(rest).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
        rest = &rest[4..];
    }
    for &b in rest {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

/// Magic 0's lz4 frames carry Kafka's wrong descriptor checksum (computed over the frame's
/// magic too, KAFKA-3160; librdkafka writes it the same way for magic 0): the checksum is
/// recomputed so the frame decodes, as Kafka ignored it for magic 0.
fn fix_lz4_descriptor(input: &[u8]) -> Option<Vec<u8>> {
    const MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];
    if input.len() < 7 || input[..4] != MAGIC {
        return None;
    }
    let flg = input[4];
    let mut end = 6; // after FLG and BD
    if flg & 0x08 != 0 {
        end += 8; // content size
    }
    if flg & 0x01 != 0 {
        end += 4; // dictionary id
    }
    if input.len() <= end {
        return None;
    }
    let mut fixed = input.to_vec();
    fixed[end] = (xxh32(&input[4..end]) >> 8) as u8;
    Some(fixed)
}

fn decompress(codec: Codec, input: &[u8]) -> Result<Bytes, BatchError> {
    let mut stream = Stream::new(codec, input, crate::decompressed_bytes_max(input.len()))?;
    let mut out = Vec::new();
    stream.take_into(usize::MAX, &mut out)?;
    Ok(Bytes::from(out))
}

/// Whether `set` (a Produce partition's records) is a magic 0/1 message set rather than v2
/// batches: the magic byte of its first entry.
pub fn magic(set: &[u8]) -> Option<u8> {
    set.get(16).copied()
}

/// The records of a magic 0/1 message set (compressed wrappers unpacked) as one v2 batch
/// (CreateTime; messages without a timestamp get `now_ms`), for the log to assign offsets;
/// compressed with the wrappers' codec when every message of the set was in a wrapper of
/// the same codec (the producer's choice is kept, as Kafka keeps it), else uncompressed.
/// An empty set, a bad CRC, a truncated message, an unknown codec, a compressed inner
/// message or a mix of magics is an error: nothing of the set is kept.
pub fn up_convert(set: &Bytes, now_ms: i64) -> Result<Vec<u8>, BatchError> {
    let mut records = Vec::new();
    let mut magic_seen = None;
    // The one codec of the set's wrappers; `Some(None)` once plain and compressed mix.
    let mut codec_seen: Option<Option<Codec>> = None;
    let push = |m: Message, records: &mut Vec<Record>| {
        let timestamp = if m.timestamp < 0 { now_ms } else { m.timestamp };
        records.push(Record {
            offset: records.len() as i64,
            timestamp,
            key: m.key,
            value: m.value,
            headers: Vec::new(),
        });
    };
    for (magic, m) in parse(set)? {
        if *magic_seen.get_or_insert(magic) != magic {
            return Err(corrupt("messages of both magic 0 and 1 in one set"));
        }
        let codec = Codec::from_id(i16::from(m.attributes & 0x07))?;
        codec_seen = match codec_seen {
            None => Some(Some(codec)),
            Some(Some(c)) if c == codec => Some(Some(c)),
            Some(_) => Some(None),
        };
        match codec {
            Codec::None => push(m, &mut records),
            Codec::Zstd => {
                return Err(corrupt("zstd in a magic 0/1 message"));
            }
            codec => {
                let Some(value) = m.value.as_ref() else {
                    return Err(corrupt("compressed message without a value"));
                };
                let fixed = (magic == 0 && codec == Codec::Lz4)
                    .then(|| fix_lz4_descriptor(value))
                    .flatten();
                let inner = decompress(codec, fixed.as_deref().unwrap_or(value))?;
                for (inner_magic, im) in parse(&inner)? {
                    if inner_magic != magic {
                        return Err(corrupt("inner message of another magic"));
                    }
                    if im.attributes & 0x07 != 0 {
                        return Err(corrupt("compressed message inside a compressed one"));
                    }
                    let mut im = im;
                    if m.attributes & LOG_APPEND_TIME != 0 || im.timestamp < 0 {
                        im.timestamp = m.timestamp;
                    }
                    push(im, &mut records);
                }
            }
        }
    }
    if records.is_empty() {
        return Err(corrupt("a message set without messages"));
    }
    let batch = rebuild(&records, None);
    match codec_seen.flatten() {
        Some(codec) if codec != Codec::None => recompress(&batch, codec),
        _ => Ok(batch),
    }
}

/// `batch` (uncompressed, from [`rebuild`]) with its records section compressed by `codec`.
fn recompress(batch: &[u8], codec: Codec) -> Result<Vec<u8>, BatchError> {
    use crate::batch::{ATTRIBUTES_AT, CRC_AT, HEADER_LEN, LENGTH_AT, LOG_OVERHEAD};
    let body = crate::compress(codec, &batch[HEADER_LEN..])
        .map_err(|e| corrupt(format!("recompressing with {}: {e}", codec.name())))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&body);
    let len = (out.len() - LOG_OVERHEAD) as i32;
    out[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
    let attributes = i16::from_be_bytes([out[ATTRIBUTES_AT], out[ATTRIBUTES_AT + 1]]) | codec.id();
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Stored v2 batches (a fetch's bytes) as an uncompressed message set of `magic` (0 or 1),
/// each record at its own offset, from `from_offset` on (a fetch may start inside a
/// batch). Transaction markers are left out (old clients read uncommitted), as are
/// headers (the old formats have none), a partial batch at the end and any batch that does
/// not read back.
pub fn down_convert(data: &Bytes, magic: u8, from_offset: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, records) in decode_batches(data) {
        let Ok(records) = records else { continue };
        let attributes = if magic >= 1 && h.is_log_append_time() {
            LOG_APPEND_TIME
        } else {
            0
        };
        for r in records.iter().filter(|r| r.offset >= from_offset) {
            put_message(&mut out, magic, attributes, r);
        }
    }
    out
}

fn put_message(out: &mut Vec<u8>, magic: u8, attributes: u8, r: &Record) {
    out.extend_from_slice(&r.offset.to_be_bytes());
    let size_at = out.len();
    out.extend_from_slice(&0i32.to_be_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&0u32.to_be_bytes());
    out.push(magic);
    out.push(attributes);
    if magic >= 1 {
        out.extend_from_slice(&r.timestamp.to_be_bytes());
    }
    for b in [&r.key, &r.value] {
        match b {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    let size = (out.len() - crc_at) as i32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    let crc = crc32(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A key and a value (`None` = null).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A message set of `magic` holding `(key, value)` records at offsets from 0, compressed
/// into one wrapper when `codec` is not `None` (as old producers send them): for tests and
/// tools.
pub fn build_message_set(
    magic: u8,
    codec: Codec,
    timestamp: i64,
    records: &[KeyValue<'_>],
) -> std::io::Result<Vec<u8>> {
    let mut set = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let r = Record {
            offset: i as i64,
            timestamp,
            key: k.map(Bytes::copy_from_slice),
            value: v.map(Bytes::copy_from_slice),
            headers: Vec::new(),
        };
        put_message(&mut set, magic, 0, &r);
    }
    if codec == Codec::None {
        return Ok(set);
    }
    let wrapped = crate::compress(codec, &set)?;
    let wrapper = Record {
        offset: records.len().saturating_sub(1) as i64,
        timestamp,
        key: None,
        value: Some(Bytes::from(wrapped)),
        headers: Vec::new(),
    };
    let mut out = Vec::new();
    put_message(&mut out, magic, codec.id() as u8, &wrapper);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(batch: &[u8]) -> Vec<(Option<Bytes>, Option<Bytes>, i64)> {
        let b = Bytes::copy_from_slice(batch);
        crate::records(&b)
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.key, r.value, r.timestamp)
            })
            .collect()
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn xxh32_matches_the_reference() {
        assert_eq!(xxh32(b""), 0x02CC_5D05);
        assert_eq!(xxh32(b"abc"), 0x32D1_53FF);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition"),
            0xE229_3B2F
        );
    }

    #[test]
    fn magic_0_lz4_with_kafkas_wrong_descriptor_checksum_decodes() {
        let mut set = build_message_set(0, Codec::Lz4, 1, &[(None, Some(b"old lz4"))]).unwrap();
        // The wrapper's value starts after offset, size, crc, magic, attributes, key (-1)
        // and the value's length: 12 + 4 + 2 + 4 + 4 bytes. Its HC byte is at 4+2.
        let hc = 12 + 4 + 2 + 4 + 4 + 6;
        let broken = (xxh32(&set[hc - 6..hc]) >> 8) as u8; // over magic and descriptor
        set[hc] = broken;
        let crc = crc32(&set[16..]);
        set[12..16].copy_from_slice(&crc.to_be_bytes());
        let batch = up_convert(&Bytes::from(set), 9).unwrap();
        assert_eq!(values(&batch)[0].1.as_deref(), Some(&b"old lz4"[..]));
    }

    #[test]
    fn up_converts_every_magic_and_codec() {
        let recs: &[KeyValue<'_>] = &[
            (Some(b"k1"), Some(b"v1")),
            (None, Some(b"v2")),
            (Some(b"k3"), None),
        ];
        for magic in [0u8, 1] {
            for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4] {
                let set = Bytes::from(build_message_set(magic, codec, 1_000, recs).unwrap());
                let batch = up_convert(&set, 5_000).unwrap();
                crate::validate(&batch, usize::MAX).unwrap();
                let h = crate::BatchHeader::parse(&batch).unwrap();
                assert_eq!(h.compression(), codec.id(), "magic {magic} {codec:?}");
                let got = values(&batch);
                let ts = if magic == 0 { 5_000 } else { 1_000 };
                let want: Vec<_> = recs
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.map(Bytes::copy_from_slice),
                            v.map(Bytes::copy_from_slice),
                            ts,
                        )
                    })
                    .collect();
                assert_eq!(got, want, "magic {magic} {codec:?}");
            }
        }
    }

    #[test]
    fn refuses_bad_sets() {
        let set = build_message_set(1, Codec::None, 1, &[(None, Some(b"abc"))]).unwrap();
        // CRC mismatch.
        let mut bad = set.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            up_convert(&Bytes::from(bad), 0),
            Err(BatchError::Corrupt(_))
        ));
        // Truncated anywhere.
        for n in 1..set.len() {
            assert!(
                up_convert(&Bytes::copy_from_slice(&set[..n]), 0).is_err(),
                "{n}"
            );
        }
        assert!(up_convert(&Bytes::new(), 0).is_err());
        // A size field larger than the set.
        let mut big = set.clone();
        big[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(up_convert(&Bytes::from(big), 0).is_err());
        // Garbage compressed value.
        let mut w = Vec::new();
        let r = Record {
            offset: 0,
            timestamp: 1,
            key: None,
            value: Some(Bytes::from_static(b"not gzip at all")),
            headers: Vec::new(),
        };
        put_message(&mut w, 1, 1, &r);
        assert!(matches!(
            up_convert(&Bytes::from(w), 0),
            Err(BatchError::Corrupt(_))
        ));
    }

    #[test]
    fn down_converts_from_an_offset() {
        let recs: Vec<crate::NewRecord<'_>> = (0..4)
            .map(|i| crate::NewRecord {
                key: None,
                value: Some(if i % 2 == 0 { b"even" } else { b"odd" }),
                headers: vec![("h", Some(b"x"))],
            })
            .collect();
        let mut batch = crate::build_records(7, &recs);
        batch[..8].copy_from_slice(&10i64.to_be_bytes()); // base offset 10
        let data = Bytes::from(batch);
        for magic in [0u8, 1] {
            let set = Bytes::from(down_convert(&data, magic, 11));
            let msgs = parse(&set).unwrap();
            assert_eq!(msgs.len(), 3);
            assert!(msgs.iter().all(|(m, _)| *m == magic));
            let first = i64::from_be_bytes(set[..8].try_into().unwrap());
            assert_eq!(first, 11);
            assert_eq!(msgs[0].1.value.as_deref(), Some(&b"odd"[..]));
            let ts = if magic == 1 { 7 } else { -1 };
            assert_eq!(msgs[0].1.timestamp, ts);
        }
        // A partial batch at the end is left out.
        let cut = data.slice(..data.len() - 3);
        assert!(down_convert(&cut, 1, 0).is_empty());
    }
}
