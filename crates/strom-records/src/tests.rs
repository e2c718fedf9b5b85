//! Every rule of the validator, and the readers over the same batches.

use bytes::Bytes;

use crate::varint::put_varint;
use crate::*;

const MAX: usize = 1 << 20;

fn sample() -> Vec<NewRecord<'static>> {
    vec![
        NewRecord {
            key: Some(b"k1"),
            value: Some(b"hello"),
            headers: vec![("h", Some(b"1")), ("h", None), ("", Some(b""))],
        },
        NewRecord {
            key: None,
            value: None,
            headers: vec![],
        },
        NewRecord {
            key: Some(b""),
            value: Some(&[7u8; 3000]),
            headers: vec![],
        },
    ]
}

const CODECS: [Codec; 5] = [
    Codec::None,
    Codec::Gzip,
    Codec::Snappy,
    Codec::Lz4,
    Codec::Zstd,
];

fn read_all(batch: &[u8]) -> Result<Vec<Record>, BatchError> {
    let b = Bytes::copy_from_slice(batch);
    records(&b).and_then(|rs| rs.collect())
}

fn check_sample(got: &[Record], base_offset: i64, timestamp: i64) {
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].offset, base_offset);
    assert_eq!(got[2].offset, base_offset + 2);
    assert!(got.iter().all(|r| r.timestamp == timestamp));
    assert_eq!(got[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(got[0].value.as_deref(), Some(&b"hello"[..]));
    let hs: Vec<(&[u8], Option<&[u8]>)> = got[0]
        .headers
        .iter()
        .map(|(k, v)| (&k[..], v.as_deref()))
        .collect();
    assert_eq!(
        hs,
        vec![
            (&b"h"[..], Some(&b"1"[..])),
            (&b"h"[..], None),
            (&b""[..], Some(&b""[..]))
        ]
    );
    assert_eq!((got[1].key.as_ref(), got[1].value.as_ref()), (None, None));
    assert_eq!(got[2].key.as_deref(), Some(&b""[..]));
    assert_eq!(got[2].value.as_deref(), Some(&[7u8; 3000][..]));
}

#[test]
fn every_codec_round_trips() {
    for codec in CODECS {
        let b = build_compressed(codec, 1_000, &sample()).unwrap();
        let s = validate(&b, MAX).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert_eq!((s.batches, s.records, s.max_timestamp), (1, 3, 1_000));
        check_sample(&read_all(&b).unwrap(), 0, 1_000);
        // Stamped like the log does: base offset and LogAppendTime.
        let mut stamped = b.clone();
        stamp(&mut stamped, 40, 1, Some(5_000));
        validate(&stamped, MAX).unwrap();
        check_sample(&read_all(&stamped).unwrap(), 40, 5_000);
    }
}

#[test]
fn raw_snappy_as_librdkafka_writes_it() {
    let body = encode_records(&sample());
    let raw = snap::raw::Encoder::new().compress_vec(&body).unwrap();
    let b = wrap_records(9, Codec::Snappy.id(), 3, &raw);
    validate(&b, MAX).unwrap();
    check_sample(&read_all(&b).unwrap(), 0, 9);
    // Xerial framing with many blocks (32 KiB each).
    let big: Vec<NewRecord<'_>> = (0..100)
        .map(|_| NewRecord {
            value: Some(&[3u8; 1000][..]),
            ..Default::default()
        })
        .collect();
    let b = build_compressed(Codec::Snappy, 9, &big).unwrap();
    assert!(validate(&b, MAX).is_ok());
    assert_eq!(read_all(&b).unwrap().len(), 100);
}

#[test]
fn many_batches_and_multi_member_gzip() {
    let mut two = build_compressed(Codec::Lz4, 1, &sample()).unwrap();
    two.extend(build(2, &[b"x"]));
    let s = validate(&two, MAX).unwrap();
    assert_eq!((s.batches, s.records, s.max_timestamp), (2, 4, 2));
    // Two gzip members: one stream, as Java's GZIPInputStream reads it.
    let body = encode_records(&sample());
    let (a, b) = body.split_at(10);
    let mut gz = compress(Codec::Gzip, a).unwrap();
    gz.extend(compress(Codec::Gzip, b).unwrap());
    let batch = wrap_records(1, Codec::Gzip.id(), 3, &gz);
    validate(&batch, MAX).unwrap();
    check_sample(&read_all(&batch).unwrap(), 0, 1);
}

/// Rewrites the CRC after a test changed a batch's bytes.
fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn header_refusals() {
    let b = build(1, &[b"x"]);
    let mut crc = b.clone();
    *crc.last_mut().unwrap() ^= 1;
    assert_eq!(
        validate(&crc, MAX),
        Err(BatchError::Corrupt("CRC-32C mismatch".into()))
    );
    assert!(matches!(read_all(&crc), Err(BatchError::Corrupt(_))));
    let mut magic = b.clone();
    magic[16] = 1;
    assert_eq!(validate(&magic, MAX), Err(BatchError::UnsupportedMagic(1)));
    assert!(matches!(
        validate(&b, 10),
        Err(BatchError::TooLarge { max: 10, .. })
    ));
    assert!(matches!(
        validate(&b[..b.len() - 1], MAX),
        Err(BatchError::Corrupt(_))
    ));
    assert!(matches!(validate(&[], MAX), Err(BatchError::Corrupt(_))));
    let mut count = b.clone();
    count[57..61].copy_from_slice(&5i32.to_be_bytes());
    fix_crc(&mut count);
    assert!(matches!(validate(&count, MAX), Err(BatchError::Invalid(_))));
    let mut control = b.clone();
    control[22] |= 0x20;
    fix_crc(&mut control);
    let e = validate(&control, MAX).unwrap_err();
    assert!(
        matches!(&e, BatchError::Invalid(m) if m.contains("control")),
        "{e}"
    );
    // A reader skips a control batch's records rather than refusing it.
    assert_eq!(read_all(&control), Ok(vec![]));
    for id in 5..=7 {
        let mut codec = b.clone();
        codec[22] = (codec[22] & !7) | id;
        fix_crc(&mut codec);
        let e = validate(&codec, MAX).unwrap_err();
        assert!(
            matches!(&e, BatchError::Corrupt(m) if m.contains("codec id")),
            "{e}"
        );
    }
}

/// One raw field of a hand-made record.
enum F<'a> {
    /// A varint.
    V(i64),
    /// Raw bytes.
    B(&'a [u8]),
}

/// A record of raw fields, prefixed by its length (or `len` when given).
fn raw_record(fields: &[F<'_>], len: Option<i64>) -> Vec<u8> {
    let mut body = Vec::new();
    for f in fields {
        match f {
            F::V(v) => put_varint(&mut body, *v),
            F::B(b) => body.extend_from_slice(b),
        }
    }
    let mut out = Vec::new();
    put_varint(&mut out, len.unwrap_or(body.len() as i64));
    out.extend(body);
    out
}

/// A well-formed record `index`: attributes, timestamp delta, offset delta, key, value, headers.
fn good(index: i64) -> Vec<u8> {
    raw_record(
        &[
            F::B(&[0]),
            F::V(0),
            F::V(index),
            F::V(1),
            F::B(b"k"),
            F::V(2),
            F::B(b"vv"),
            F::V(0),
        ],
        None,
    )
}

/// The verdicts of the validator on a batch of `records` claiming `count`, uncompressed and
/// in every codec (the same rule must hold on both paths), and of the reader.
fn verdicts(records: &[u8], count: i32) -> Vec<Result<BatchesSummary, BatchError>> {
    CODECS
        .iter()
        .map(|&codec| {
            let body = compress(codec, records).unwrap();
            let b = wrap_records(1, codec.id(), count, &body);
            let v = validate(&b, MAX);
            let r = read_all(&b).map(|_| ());
            assert_eq!(
                v.as_ref().err(),
                r.as_ref().err(),
                "validator and reader agree ({codec:?})"
            );
            v
        })
        .collect()
}

/// Every codec refuses `records` (claiming `count`) with an error on record `index` whose
/// message contains `says`.
fn refused_at(records: &[u8], count: i32, index: i32, says: &str) {
    for v in verdicts(records, count) {
        match v {
            Err(BatchError::InvalidRecord { index: i, message }) => {
                assert_eq!(i, index, "{message}");
                assert!(message.contains(says), "{message:?} lacks {says:?}");
            }
            other => panic!("expected record {index} refused ({says}), got {other:?}"),
        }
    }
}

/// Every codec refuses `records` with a batch-level `Invalid` containing `says`.
fn refused_batch(records: &[u8], count: i32, says: &str) {
    for v in verdicts(records, count) {
        match v {
            Err(BatchError::Invalid(m)) => assert!(m.contains(says), "{m:?} lacks {says:?}"),
            other => panic!("expected the batch refused ({says}), got {other:?}"),
        }
    }
}

#[test]
fn well_formed_hand_made_records_pass_everywhere() {
    let mut r = good(0);
    r.extend(good(1));
    assert!(verdicts(&r, 2).iter().all(|v| v.is_ok()));
}

#[test]
fn record_length_refusals() {
    let mut neg = Vec::new();
    put_varint(&mut neg, -3);
    neg.extend(&good(0)[1..]);
    refused_at(&neg, 1, 0, "record length -3");
    // A length beyond the data: in place it runs past the batch; compressed, the stream ends.
    let long = raw_record(&[F::B(&[0]), F::V(0), F::V(0)], Some(100));
    for v in verdicts(&long, 1) {
        assert!(
            matches!(v, Err(BatchError::InvalidRecord { index: 0, .. })),
            "{v:?}"
        );
    }
    // A record shorter than its fields: the key runs past the record's end.
    let mut short = good(0);
    short[0] = 6; // zigzag 3: attributes, timestamp, offset delta only
    short.truncate(4);
    refused_at(&short, 1, 0, "ends inside its key length");
    // A record longer than its fields.
    let mut r = good(0);
    let extra = r[0] / 2 + 2;
    r[0] = extra * 2;
    r.extend([0, 0]);
    refused_at(&r, 1, 0, "2 bytes after the record's last header");
    // Zero-length record: no attributes.
    refused_at(&[0], 1, 0, "before its attributes");
}

#[test]
fn varint_refusals() {
    // A 6-byte offset delta, an 11-byte timestamp delta.
    let six = raw_record(
        &[
            F::B(&[0]),
            F::V(0),
            F::B(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        ],
        None,
    );
    refused_at(&six, 1, 0, "malformed offset delta");
    let eleven = raw_record(&[F::B(&[0]), F::B(&[0x80; 10]), F::B(&[0])], None);
    refused_at(&eleven, 1, 0, "malformed timestamp delta");
    let mut r = Vec::new();
    r.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    refused_at(&r, 1, 0, "malformed record length");
}

#[test]
fn field_refusals() {
    let key = |klen: i64| {
        raw_record(
            &[
                F::B(&[0]),
                F::V(0),
                F::V(0),
                F::V(klen),
                F::B(b"k"),
                F::V(-1),
                F::V(0),
            ],
            None,
        )
    };
    refused_at(
        &key(i32::MAX as i64),
        1,
        0,
        "key length 2147483647 runs past",
    );
    refused_at(&key(-2), 1, 0, "key length -2");
    let value = raw_record(
        &[
            F::B(&[0]),
            F::V(0),
            F::V(0),
            F::V(-1),
            F::V(50),
            F::B(b"v"),
            F::V(0),
        ],
        None,
    );
    refused_at(&value, 1, 0, "value length 50 runs past");
    let headers = |count: i64, rest: &[F<'_>]| {
        let mut f = vec![
            F::B(&[0]),
            F::V(0),
            F::V(0),
            F::V(-1),
            F::V(-1),
            F::V(count),
        ];
        for x in rest {
            f.push(match x {
                F::V(v) => F::V(*v),
                F::B(b) => F::B(b),
            });
        }
        raw_record(&f, None)
    };
    refused_at(
        &headers(i32::MAX as i64, &[]),
        1,
        0,
        "header count 2147483647",
    );
    refused_at(&headers(-1, &[]), 1, 0, "header count -1");
    refused_at(
        &headers(1, &[F::V(-1), F::V(-1)]),
        1,
        0,
        "header key length -1",
    );
    refused_at(
        &headers(1, &[F::V(1), F::B(b"h"), F::V(-2)]),
        1,
        0,
        "header value length -2",
    );
    refused_at(
        &headers(1, &[F::V(1), F::B(b"h"), F::V(9), F::B(b"x")]),
        1,
        0,
        "header value length 9 runs past",
    );
    // A valid header passes.
    let ok = headers(1, &[F::V(1), F::B(b"h"), F::V(-1)]);
    assert!(verdicts(&ok, 1).iter().all(|v| v.is_ok()));
}

#[test]
fn offset_delta_and_timestamp_refusals() {
    let mut r = good(0);
    r.extend(good(5));
    refused_at(&r, 2, 1, "offset delta 5 (must be the record's index, 1)");
    let late = raw_record(
        &[
            F::B(&[0]),
            F::V(i64::MAX),
            F::V(0),
            F::V(-1),
            F::V(-1),
            F::V(0),
        ],
        None,
    );
    refused_at(&late, 1, 0, "overflows");
}

#[test]
fn count_refusals() {
    // One record claiming 2^31-1 (the high-watermark jump), in place and compressed.
    refused_batch(&good(0), i32::MAX, "claims 2147483647 records but holds 1");
    let mut two = good(0);
    two.extend(good(1));
    refused_batch(&two, 1, "bytes after the batch's 1 records");
    refused_batch(&good(0), 3, "claims 3 records but holds 1");
}

#[test]
fn undecodable_compressed_data() {
    let body = encode_records(&sample());
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        // Not that codec at all: the uncompressed records flagged as compressed.
        let b = wrap_records(1, codec.id(), 3, &body);
        let e = validate(&b, MAX).unwrap_err();
        assert!(
            matches!(&e, BatchError::Corrupt(m) if m.contains(codec.name())),
            "{codec:?}: {e}"
        );
        assert_eq!(read_all(&b).unwrap_err(), e);
        // Truncated streams, cut at several places.
        let z = compress(codec, &body).unwrap();
        for cut in [1, z.len() / 2, z.len() - 1] {
            let b = wrap_records(1, codec.id(), 3, &z[..cut]);
            let e = validate(&b, MAX).unwrap_err();
            assert!(
                matches!(
                    &e,
                    BatchError::Corrupt(_)
                        | BatchError::Invalid(_)
                        | BatchError::InvalidRecord { .. }
                ),
                "{codec:?} cut at {cut}: {e}"
            );
        }
        // Garbage.
        let b = wrap_records(1, codec.id(), 3, &[0x5a; 200]);
        assert!(
            matches!(validate(&b, MAX), Err(BatchError::Corrupt(_))),
            "{codec:?}"
        );
    }
    // The gzip stream of garbage: a gzip header, then noise.
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    gz.extend((0..500u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let b = wrap_records(1, Codec::Gzip.id(), 1, &gz);
    assert!(matches!(validate(&b, MAX), Err(BatchError::Corrupt(_))));
    // Bytes after an lz4 frame.
    let mut lz = compress(Codec::Lz4, &body).unwrap();
    lz.extend([1, 2, 3]);
    let b = wrap_records(1, Codec::Lz4.id(), 3, &lz);
    let e = validate(&b, MAX).unwrap_err();
    assert!(
        matches!(&e, BatchError::Corrupt(m) if m.contains("after the frame")),
        "{e}"
    );
}

#[test]
fn zip_bomb_is_refused_at_the_bound() {
    // 65 MiB of zeros in one value compresses to a few KiB: above the 64 MiB bound.
    let zeros = vec![0u8; (decompressed_bytes_max(0) + (1 << 20)) as usize];
    let body = encode_records(&[NewRecord {
        value: Some(&zeros),
        ..Default::default()
    }]);
    for codec in [Codec::Zstd, Codec::Lz4] {
        let z = compress(codec, &body).unwrap();
        assert!(z.len() < 1 << 20, "{codec:?} compressed to {}", z.len());
        let b = wrap_records(1, codec.id(), 1, &z);
        let e = validate(&b, usize::MAX).unwrap_err();
        assert_eq!(
            e,
            BatchError::DecompressedTooLarge {
                max: decompressed_bytes_max(b.len())
            },
            "{codec:?}"
        );
        assert!(e.to_string().contains("64 times"), "{e}");
        assert_eq!(read_all(&b).unwrap_err(), e);
    }
    // Raw snappy declares its size up front: refused before anything is allocated.
    let mut raw = Vec::new();
    put_varint(&mut raw, 0); // placeholder, replaced below
    raw.clear();
    let mut n = 200u64 << 20; // a 200 MiB claim, as an unsigned varint
    while n >= 0x80 {
        raw.push((n as u8) | 0x80);
        n >>= 7;
    }
    raw.push(n as u8);
    raw.extend([0u8; 16]);
    let b = wrap_records(1, Codec::Snappy.id(), 1, &raw);
    assert!(matches!(
        validate(&b, MAX),
        Err(BatchError::DecompressedTooLarge { .. })
    ));
    // A block that claims more than its bytes can expand to, below the bound.
    let mut raw = vec![0x80, 0x80, 0x80, 0x08]; // 16 MiB
    raw.extend([0u8; 16]);
    let b = wrap_records(1, Codec::Snappy.id(), 1, &raw);
    let e = validate(&b, MAX).unwrap_err();
    assert!(
        matches!(&e, BatchError::Corrupt(m) if m.contains("declares")),
        "{e}"
    );
}

#[test]
fn zstd_window_above_the_bound_is_refused() {
    use std::io::Write;
    let body = encode_records(&sample());
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(
        ZSTD_WINDOW_LOG_MAX + 1,
    ))
    .unwrap();
    e.write_all(&body).unwrap();
    let z = e.finish().unwrap();
    let b = wrap_records(1, Codec::Zstd.id(), 3, &z);
    let e = validate(&b, MAX).unwrap_err();
    assert!(
        matches!(&e, BatchError::Corrupt(m) if m.contains("ZSTD_WINDOW_LOG_MAX")),
        "{e}"
    );
}

#[test]
fn decode_batches_skips_a_bad_batch_naming_it() {
    let mut data = Vec::new();
    let mut good1 = build(1, &[b"a", b"b"]);
    stamp(&mut good1, 0, 0, None);
    data.extend(&good1);
    let mut bad = wrap_records(1, Codec::Lz4.id(), 1, b"not lz4 at all");
    stamp(&mut bad, 2, 0, None);
    data.extend(&bad);
    let mut good2 = build_compressed(Codec::Zstd, 1, &sample()).unwrap();
    stamp(&mut good2, 3, 0, None);
    data.extend(&good2);
    data.extend(&good1[..20]); // a partial batch at the end of a fetch
    let data = Bytes::from(data);
    let out: Vec<_> = decode_batches(&data).collect();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].1.as_ref().unwrap().len(), 2);
    let bad = out[1].1.as_ref().unwrap_err();
    assert_eq!((bad.offset, bad.next_offset), (2, 3));
    assert!(matches!(bad.error, BatchError::Corrupt(_)));
    check_sample(out[2].1.as_ref().unwrap(), 3, 1);
}

#[test]
fn record_errors_name_the_record_for_kip_467() {
    let mut r = good(0);
    r.extend(good(1));
    r.extend(raw_record(
        &[F::B(&[0]), F::V(0), F::V(2), F::V(-1), F::V(-1), F::V(-1)],
        None,
    ));
    let b = wrap_records(1, 0, 3, &r);
    let e = validate(&b, MAX).unwrap_err();
    let (index, msg) = e.record_error().expect("a record error");
    assert_eq!(index, 2);
    assert!(msg.contains("header count -1"), "{msg}");
    assert!(BatchError::Invalid("x".into()).record_error().is_none());
}

/// The generic walker's verdict on uncompressed record bytes (what the fast path must never
/// accept more than).
fn generic_ok(records: &[u8], count: i32, base_timestamp: i64) -> bool {
    let mut src = crate::walk::Slice::<crate::walk::Skip>::new(records);
    crate::walk::walk(&mut src, count, Some(records.len() as u64), |i, p| {
        crate::walk::timestamp(i, base_timestamp, p.timestamp_delta).map(|_| ())
    })
    .is_ok()
}

#[test]
fn the_fast_path_accepts_nothing_the_walker_refuses() {
    // Records of every shape the builders make, then mutated a million ways: whenever the
    // fast path says valid, the walker agrees (the fast path may send valid batches on to
    // the walker, never invalid ones past it).
    let mut seeds: Vec<(Vec<u8>, i32)> = Vec::new();
    let mut r = Vec::new();
    for i in 0..5 {
        r.extend(good(i));
    }
    seeds.push((r, 5));
    let sample = sample();
    let body = encode_records(&sample);
    seeds.push((body, sample.len() as i32));
    let many: Vec<NewRecord<'_>> = (0..50)
        .map(|i| NewRecord {
            key: (i % 3 == 0).then_some(b"key".as_slice()),
            value: Some(&[9u8; 200][..(i * 4) % 200]),
            headers: (0..i % 4).map(|_| ("hk", Some(b"hv".as_slice()))).collect(),
        })
        .collect();
    seeds.push((encode_records(&many), 50));
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    };
    let mut fast_accepted = 0u32;
    for (seed, count) in &seeds {
        assert!(
            crate::fast::records_ok(seed, *count, 1).is_some(),
            "a valid seed passes the fast path"
        );
        assert!(generic_ok(seed, *count, 1));
        for _ in 0..30_000 {
            let mut m = seed.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % m.len().max(1);
                match next() % 5 {
                    0 if at < m.len() => m[at] ^= 1 << (next() % 8),
                    1 if at < m.len() => m[at] = next() as u8,
                    2 => m.truncate(at),
                    3 if at < m.len() => {
                        m[at] = [0x7f, 0x80, 0xff, 0x01, 0x00][(next() % 5) as usize]
                    }
                    _ => m.insert(at.min(m.len()), next() as u8),
                }
            }
            let count = if next() % 8 == 0 { count + 1 } else { *count };
            let base = if next() % 16 == 0 { i64::MAX - 3 } else { 1 };
            if crate::fast::records_ok(&m, count, base).is_some() {
                fast_accepted += 1;
                assert!(
                    generic_ok(&m, count, base),
                    "the fast path accepts what the walker refuses: {m:02x?} ({count} records)"
                );
            }
        }
    }
    assert!(
        fast_accepted > 100,
        "mutations the fast path still accepted: {fast_accepted}"
    );
}

/// `reserved_headers`: a header key starting with `strom.` is seen by the fast path, the
/// walker and every codec; anything else is not.
#[test]
fn reserved_headers_are_reported_on_every_path() {
    let cases: [(&[&str], bool); 6] = [
        (&[], false),
        (&["trace-id", "content-type"], false),
        (&["strom"], false),
        (&["stromx.delay.ms", "Strom.msg.id"], false),
        (&["strom.msg.id"], true),
        (&["a", "b", "strom.delay.ms"], true),
    ];
    for (keys, want) in cases {
        let records: Vec<NewRecord<'_>> = (0..20)
            .map(|i| NewRecord {
                key: Some(b"k".as_slice()),
                value: Some(&[7u8; 300][..i * 10]),
                // The keys only on the last record: every record before is walked first.
                headers: if i == 19 {
                    keys.iter().map(|k| (*k, Some(b"1".as_slice()))).collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let batch = build_compressed(codec, 5, &records).unwrap();
            let summary = validate(&batch, usize::MAX).unwrap();
            assert_eq!(summary.reserved_headers, want, "{keys:?} {}", codec.name());
        }
        // The generic walker (the fast path refuses a 5-byte varint length) agrees.
        let body = encode_records(&records);
        assert_eq!(crate::fast::records_ok(&body, 20, 5), Some(want));
    }
}

#[test]
fn rebuild_run_keeps_codec_producer_and_offsets() {
    for codec in CODECS {
        let mut b = build_compressed(codec, 1_000, &sample()).unwrap();
        // An idempotent producer's batch at offset 40, sequence 7.
        b[PRODUCER_ID_AT_TEST..PRODUCER_ID_AT_TEST + 8].copy_from_slice(&9i64.to_be_bytes());
        b[PRODUCER_ID_AT_TEST + 8..PRODUCER_ID_AT_TEST + 10].copy_from_slice(&2i16.to_be_bytes());
        b[PRODUCER_ID_AT_TEST + 10..PRODUCER_ID_AT_TEST + 14].copy_from_slice(&7i32.to_be_bytes());
        fix_crc(&mut b);
        stamp(&mut b, 40, 3, None);
        let template = BatchHeader::parse(&b).unwrap();
        let all = read_all(&b).unwrap();
        let run = rebuild_run(&template, &all[1..]).unwrap();
        validate(&run, MAX).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        let h = BatchHeader::parse(&run).unwrap();
        assert_eq!(h.base_offset, 41);
        assert_eq!(h.last_offset(), 42);
        assert_eq!(h.compression(), codec.id());
        assert_eq!(h.leader_epoch, 3);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (9, 2, 8)
        );
        assert_eq!(h.max_timestamp, 1_000);
        let got = read_all(&run).unwrap();
        assert_eq!(got, all[1..].to_vec());
        // Not a run of consecutive offsets: refused.
        assert!(rebuild_run(&template, &[all[0].clone(), all[2].clone()]).is_err());
        assert!(rebuild_run(&template, &[]).is_err());
    }
}

const PRODUCER_ID_AT_TEST: usize = 43;
