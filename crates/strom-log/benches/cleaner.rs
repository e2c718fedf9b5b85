//! The log cleaner's throughput, and appends to the same log while it runs against appends
//! with no cleaner, in the same run (medians of `ROUNDS`).
//!
//!     cargo bench -p strom-log --bench cleaner
//!
//! Each round: a log of `LOG_MB` MiB of 1 KiB keyed records (`KEYS` keys, batches of 10,
//! 1 MiB segments), closed and reopened (every sealed segment synced); then, for `SECS`, a
//! thread appends batches of 10 records to the same log while the main thread runs one
//! cleaner pass (MB/s compacted = the log's bytes before the pass / the pass's time; append
//! MB/s over the pass's duration); then, on a fresh log of the same size, the same appends for
//! the same duration with no cleaner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_log::{now_ms, CleanOptions, Log, LogConfig};
use strom_records::NewRecord;

const LOG_MB: usize = 256;
const KEYS: usize = 10_000;
const ROUNDS: usize = 3;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn batch(seq: usize, value: &[u8]) -> Vec<u8> {
    let keys: Vec<String> = (0..10)
        .map(|i| format!("key-{}", (seq * 10 + i) % KEYS))
        .collect();
    let recs: Vec<NewRecord> = keys
        .iter()
        .map(|k| NewRecord {
            key: Some(k.as_bytes()),
            value: Some(value),
            headers: vec![],
        })
        .collect();
    strom_records::build_records(now_ms() - 10_000, &recs)
}

fn prepared(dir: &std::path::Path) -> Log {
    let value = vec![b'v'; 1000];
    let log = Log::open(dir, config()).unwrap();
    let mut seq = 0;
    while log.size_bytes() < (LOG_MB << 20) as u64 {
        log.append(&mut batch(seq, &value)).unwrap();
        seq += 1;
    }
    log.close().unwrap();
    drop(log);
    Log::open(dir, config()).unwrap()
}

/// Appends until `stop`; returns the bytes appended.
fn appender(log: Arc<Log>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let value = vec![b'w'; 1000];
        let mut bytes = 0u64;
        let mut seq = 0;
        while !stop.load(Ordering::Acquire) {
            let mut b = batch(seq, &value);
            bytes += b.len() as u64;
            log.append(&mut b).unwrap();
            seq += 1;
        }
        bytes
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / IDE discovery: nothing to list
    }
    let opts = CleanOptions {
        min_cleanable_dirty_ratio: 0.0,
        ..CleanOptions::default()
    };
    let (mut clean_mbs, mut with_mbs, mut without_mbs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(prepared(dir.path()));
        let before = log.size_bytes();
        let stop = Arc::new(AtomicBool::new(false));
        let t = appender(log.clone(), stop.clone());
        let started = Instant::now();
        let out = log.clean(&opts, now_ms(), &mut || true).unwrap();
        let pass = started.elapsed();
        stop.store(true, Ordering::Release);
        let appended = t.join().unwrap();
        let mb = |b: u64, d: Duration| b as f64 / (1 << 20) as f64 / d.as_secs_f64();
        clean_mbs.push(mb(before, pass));
        with_mbs.push(mb(appended, pass));
        drop(log);
        drop(dir);
        // The same appends for as long, no cleaner.
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(prepared(dir.path()));
        let stop = Arc::new(AtomicBool::new(false));
        let t = appender(log.clone(), stop.clone());
        std::thread::sleep(pass);
        stop.store(true, Ordering::Release);
        let appended = t.join().unwrap();
        without_mbs.push(mb(appended, pass));
        println!(
            "round {round}: pass {:.2} s over {} MiB ({} segments rewritten, {} records removed, {} MiB after): cleaner {:.0} MB/s; appends {:.0} MB/s while cleaning, {:.0} MB/s without",
            pass.as_secs_f64(),
            before >> 20,
            out.segments_rewritten,
            out.records_removed,
            out.bytes_after >> 20,
            clean_mbs[round],
            with_mbs[round],
            without_mbs[round]
        );
    }
    println!(
        "median of {ROUNDS}: cleaner {:.0} MB/s compacted; appends {:.0} MB/s while it runs, {:.0} MB/s without",
        median(clean_mbs),
        median(with_mbs),
        median(without_mbs)
    );
}
