//! What the append path's validation costs: `validate` of a batch of 1 KB records per codec,
//! and, as the yardstick, the CRC-32C of the same batch (which the log checked before
//! records were walked). Throughput is in uncompressed record bytes.
//!
//! Two kinds of values: `text` (words drawn from a small vocabulary: compresses 3-5x, as
//! logs and JSON do) and `filler` (one byte repeated, as `strom bench` sends).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strom_records::{build_compressed, validate, Codec, NewRecord};

const RECORDS: usize = 1000;
const VALUE_BYTES: usize = 1024;

/// Word-like bytes from a fixed-seed generator.
fn text_value(seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 16] = [
        b"order",
        b"user",
        b"id",
        b"amount",
        b"eur",
        b"status",
        b"shipped",
        b"created",
        b"\"",
        b":",
        b",",
        b"{",
        b"}",
        b"2026-12-02T10:00:00Z",
        b"warehouse",
        b"7",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut v = Vec::with_capacity(VALUE_BYTES + 32);
    while v.len() < VALUE_BYTES {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.extend_from_slice(WORDS[(x >> 60) as usize]);
        v.extend_from_slice(&(x >> 40).to_le_bytes()[..(x >> 58) as usize % 3]);
    }
    v.truncate(VALUE_BYTES);
    v
}

fn decompress_only(codec: Codec, body: &[u8]) -> usize {
    use std::io::Read;
    let mut buf = vec![0u8; 64 * 1024];
    let mut r: Box<dyn Read + '_> = match codec {
        Codec::Lz4 => Box::new(lz4::Decoder::new(body).expect("lz4")),
        _ => Box::new(zstd::stream::read::Decoder::with_buffer(body).expect("zstd")),
    };
    let mut n = 0;
    loop {
        match r.read(&mut buf).expect("decodes") {
            0 => return n,
            k => n += k,
        }
    }
}

fn bench(c: &mut Criterion) {
    let text: Vec<Vec<u8>> = (0..RECORDS as u64).map(text_value).collect();
    let filler: Vec<Vec<u8>> = (0..RECORDS).map(|_| vec![0x5a; VALUE_BYTES]).collect();
    let mut g = c.benchmark_group("validate_1k_records");
    g.throughput(Throughput::Bytes((RECORDS * VALUE_BYTES) as u64));
    for (kind, values) in [("text", &text), ("filler", &filler)] {
        let records: Vec<NewRecord<'_>> = values
            .iter()
            .map(|v| NewRecord {
                value: Some(v),
                ..Default::default()
            })
            .collect();
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let batch = build_compressed(codec, 1, &records).expect("compresses");
            validate(&batch, usize::MAX).expect("valid");
            let id = BenchmarkId::new(codec.name(), kind);
            g.bench_with_input(id, &batch, |b, batch| {
                b.iter(|| validate(black_box(batch), usize::MAX).expect("valid"))
            });
            if codec == Codec::Lz4 || codec == Codec::Zstd {
                // The yardstick: the codec alone, decompressing into a 64 KiB buffer.
                let id = BenchmarkId::new(format!("{}_decompress_only", codec.name()), kind);
                g.bench_with_input(id, &batch[61..], |b, body| {
                    b.iter(|| decompress_only(codec, black_box(body)))
                });
            }
        }
        // Records with two headers each (none of them `strom.`): the header loop's cost,
        // which the broker's check for reserved headers adds to.
        let with_headers: Vec<NewRecord<'_>> = values
            .iter()
            .map(|v| NewRecord {
                value: Some(v),
                headers: vec![
                    ("trace-id", Some(b"0af7651916cd43dd")),
                    ("content-type", Some(b"json")),
                ],
                ..Default::default()
            })
            .collect();
        let batch = build_compressed(Codec::None, 1, &with_headers).expect("builds");
        g.bench_with_input(
            BenchmarkId::new("none_2_headers", kind),
            &batch,
            |b, batch| b.iter(|| validate(black_box(batch), usize::MAX).expect("valid")),
        );
        let plain = build_compressed(Codec::None, 1, &records).expect("builds");
        g.bench_with_input(BenchmarkId::new("crc32c_only", kind), &plain, |b, batch| {
            b.iter(|| crc32c::crc32c(black_box(&batch[21..])))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
