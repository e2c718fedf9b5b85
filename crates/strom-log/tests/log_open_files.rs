//! Many logs within a small budget of open segment files (`strom_log::set_open_files_budget`):
//! descriptors are closed and opened again as needed, and nothing read or written changes.
//! One test function: the budget and the count of open files are the process's.

mod common;

use strom_log::{build_batch, now_ms, open_files, set_open_files_budget, Log, LogConfig, LogError};

const BUDGET: usize = 16;
const LOGS: usize = 40;
const BATCHES: usize = 30;
/// Files a moment over the budget: those being synced by background seals when the budget
/// was enforced (a file in use is not closed under its user).
const IN_USE: usize = 8;

/// Segments of a few records, so that each log rolls several times.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

fn value(log: usize, i: usize) -> Vec<u8> {
    format!("log {log} record {i} ").repeat(40).into_bytes()
}

/// Descriptors this process has open.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Every record of `log` from its start, as values.
fn read_all(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for batch in common::all_batches(log) {
        for (_, records) in strom_records::decode_batches(&batch.into()) {
            out.extend(
                records
                    .unwrap()
                    .into_iter()
                    .map(|r| r.value.unwrap().to_vec()),
            );
        }
    }
    out
}

/// The offset after the batches of a read of up to `max` bytes at `offset`.
fn end_of_read(log: &Log, offset: i64, max: usize) -> i64 {
    let data = log.read(offset, max).unwrap().data;
    strom_log::batch_headers(&data)
        .last()
        .unwrap()
        .1
        .last_offset()
        + 1
}

#[test]
fn forty_logs_live_within_sixteen_open_files() {
    set_open_files_budget(BUDGET);
    let before = fds();
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..LOGS)
        .map(|n| root.path().join(format!("p-{n}")))
        .collect();
    let logs: Vec<Log> = dirs
        .iter()
        .map(|d| Log::open(d, config()).unwrap())
        .collect();
    // Appends spread over every log in turn: each log rolls several segments.
    for i in 0..BATCHES {
        for (n, log) in logs.iter().enumerate() {
            let mut b = build_batch(now_ms(), &[&value(n, i)]);
            log.append(&mut b).unwrap();
            assert!(open_files().0 <= BUDGET + IN_USE, "{:?} open", open_files());
        }
    }
    assert!(logs.iter().all(|l| l.segment_count() > 3));
    assert!(
        fds() <= before + BUDGET + IN_USE,
        "{} descriptors, {before} before",
        fds()
    );
    let (_, evicted) = open_files();
    assert!(evicted > 0, "the budget was never needed");
    // Every record reads back, through pread and through ranges for sendfile.
    for (n, log) in logs.iter().enumerate() {
        let want: Vec<_> = (0..BATCHES).map(|i| value(n, i)).collect();
        assert_eq!(read_all(log), want);
        let r = log.read_range(0, 1 << 20).unwrap().range.unwrap();
        let mut buf = vec![0u8; r.len];
        std::os::unix::fs::FileExt::read_exact_at(&*r.file, &mut buf, r.pos).unwrap();
        assert_eq!(log.offset_after(&r).unwrap(), end_of_read(log, 0, 1 << 20));
        assert!(strom_log::validate_batches(&buf, usize::MAX).is_ok());
    }
    assert!(fds() <= before + BUDGET + IN_USE);
    // Retention deletes segments whose files are closed; reads below the new start are out
    // of range, not errors of a missing file.
    for log in &logs {
        let end = log.log_end_offset();
        log.delete_segments_below(end - 5).unwrap();
        let start = log.log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            log.read(0, 1024),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(!log.read(start, 1024).unwrap().data.is_empty());
    }
    // Closed and opened again: no descriptor for sealed segments until they are read.
    for log in &logs {
        log.close().unwrap();
    }
    drop(logs);
    assert_eq!(open_files().0, 0, "descriptors left by closed logs");
    let logs: Vec<Log> = dirs
        .iter()
        .map(|d| Log::open(d, config()).unwrap())
        .collect();
    assert!(open_files().0 <= BUDGET + IN_USE);
    for (n, log) in logs.iter().enumerate() {
        let from = log.log_start_offset() as usize;
        let want: Vec<_> = (from..BATCHES).map(|i| value(n, i)).collect();
        assert_eq!(read_all(log), want);
        let mut b = build_batch(now_ms(), &[&value(n, BATCHES)]);
        assert_eq!(log.append(&mut b).unwrap().base_offset, BATCHES as i64);
    }
    assert!(fds() <= before + BUDGET + IN_USE);
}
