//! `cargo bench -p strom-log`: append of 1000-record batches of 1 KB records (no fsync, and
//! an fsync per batch), sequential read, and the open time of a large log (in one segment,
//! and in 1 MiB segments: the open checks the end of every synced segment against the next
//! one's base offset).
//!
//! The data goes to `$STROM_BENCH_DIR` (default: `target/strom-log-bench` under the
//! workspace, i.e. the same disk as the checkout). `STROM_BENCH_OPEN_GB` sets the size of the
//! log whose open time is measured (default 1).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strom_log::{build_batch, Log, LogConfig};

const RECORDS: usize = 1000;
const RECORD_BYTES: usize = 1024;

fn bench_dir(name: &str) -> PathBuf {
    let base = std::env::var("STROM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/strom-log-bench")
        });
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn batch() -> Vec<u8> {
    let value = vec![0x5au8; RECORD_BYTES];
    let values: Vec<&[u8]> = (0..RECORDS).map(|_| value.as_slice()).collect();
    build_batch(1_700_000_000_000, &values)
}

fn config(flush_every_batch: bool) -> LogConfig {
    LogConfig {
        retention_ms: None,
        max_batch_bytes: 8 << 20,
        flush_messages: flush_every_batch.then_some(1),
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let template = batch();
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Bytes(template.len() as u64));
    g.measurement_time(Duration::from_secs(10));
    for (name, fsync) in [
        ("1000x1KB_no_fsync", false),
        ("1000x1KB_fsync_per_batch", true),
    ] {
        let dir = bench_dir(name);
        let log = Log::open(&dir, config(fsync)).unwrap();
        // One buffer, appended again and again (the append re-stamps its base offset, which
        // the CRC does not cover), as a broker reusing its request buffer would: the
        // measurement is the log's work, not the allocator's page faults.
        let mut buf = template.clone();
        g.bench_function(name, |b| {
            b.iter(|| {
                let info = log.append(&mut buf).unwrap();
                if info.flush_due {
                    log.flush_to(info.last_offset + 1).unwrap();
                }
            })
        });
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let dir = bench_dir("read");
    let log = Log::open(&dir, config(false)).unwrap();
    let template = batch();
    // 1 GiB of data, read back sequentially from the page cache.
    let n = (1usize << 30) / template.len();
    for _ in 0..n {
        let mut b = template.clone();
        log.append(&mut b).unwrap();
    }
    let end = log.log_end_offset();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Bytes(log.size_bytes()));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("sequential_1GiB_1MiB_reads", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut bytes = 0usize;
            while offset < end {
                let r = log.read(offset, 1 << 20).unwrap();
                bytes += r.data.len();
                let last = strom_log::batch_headers(&r.data).last().unwrap().1;
                offset = last.last_offset() + 1;
            }
            bytes
        })
    });
    g.finish();
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}

fn open(c: &mut Criterion) {
    let gb: u64 = std::env::var("STROM_BENCH_OPEN_GB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let dir = bench_dir("open");
    {
        let log = Log::open(&dir, config(false)).unwrap();
        let template = batch();
        let n = (gb << 30) / template.len() as u64;
        for _ in 0..n {
            let mut b = template.clone();
            log.append(&mut b).unwrap();
        }
        log.close().unwrap();
    }
    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    g.bench_function(format!("open_{gb}GiB_log"), |b| {
        b.iter(|| {
            let log = Log::open(&dir, config(false)).unwrap();
            assert!(log.log_end_offset() > 0);
            log
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn open_many_segments(c: &mut Criterion) {
    let gb: u64 = std::env::var("STROM_BENCH_OPEN_GB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let dir = bench_dir("open-segments");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..config(false)
    };
    let segments = {
        let log = Log::open(&dir, config).unwrap();
        // 64 records of 1 KB per batch: 15 batches per segment.
        let value = vec![0x5au8; RECORD_BYTES];
        let values: Vec<&[u8]> = (0..64).map(|_| value.as_slice()).collect();
        let template = build_batch(1_700_000_000_000, &values);
        let n = (gb << 30) / template.len() as u64;
        for _ in 0..n {
            let mut b = template.clone();
            log.append(&mut b).unwrap();
        }
        log.close().unwrap();
        log.segment_count()
    };
    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    g.bench_function(format!("open_{gb}GiB_log_{segments}_segments"), |b| {
        b.iter(|| {
            let log = Log::open(&dir, config).unwrap();
            assert!(log.log_end_offset() > 0);
            log
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, append, read, open, open_many_segments);
criterion_main!(benches);
