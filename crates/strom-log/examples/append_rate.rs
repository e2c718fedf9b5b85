//! `cargo run --release -p strom-log --example append_rate -- DIR MB [fsync]`: appends MB
//! 1000-record batches of 1 KB records to a fresh log in DIR and prints the rate (with
//! `fsync`, `flush.messages=1`; without, a final flush is included, as in `dd conv=fdatasync`).
//! The counterpart of `dd bs=1M count=MB` for bench/log-vs-dd.sh.

use std::time::Instant;

use strom_log::{build_batch, Log, LogConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(mb)) = (
        args.get(1),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: append_rate DIR MB [fsync]");
        std::process::exit(2);
    };
    let fsync = args.get(3).is_some_and(|s| s == "fsync");
    let _ = std::fs::remove_dir_all(dir);
    let config = LogConfig {
        retention_ms: None,
        max_batch_bytes: 8 << 20,
        flush_messages: fsync.then_some(1),
        ..LogConfig::default()
    };
    let log = Log::open(dir, config).expect("open the log");
    let value = vec![0x5au8; 1024];
    let values: Vec<&[u8]> = (0..1000).map(|_| value.as_slice()).collect();
    let mut batch = build_batch(1_700_000_000_000, &values);
    let started = Instant::now();
    let mut bytes = 0u64;
    while bytes < (mb as u64) << 20 {
        let info = log.append(&mut batch).expect("append");
        if info.flush_due {
            log.flush_to(info.last_offset + 1).expect("flush");
        }
        bytes += batch.len() as u64;
    }
    log.flush().expect("flush");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{bytes} bytes in {secs:.2} s, {:.2} GB/s ({})",
        bytes as f64 / secs / 1e9,
        if fsync {
            "flush.messages=1"
        } else {
            "final flush"
        }
    );
    log.delete().expect("delete the log");
}
