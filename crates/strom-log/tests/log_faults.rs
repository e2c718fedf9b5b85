//! Start-up damage and I/O faults.
//!
//! - Damage recovery cannot repair without losing or renumbering records (a segment data
//!   file gone while its indexes remain, a hole between synced segments, a recovery point
//!   past the last segment) refuses to open the log with `LogError::Damaged` naming the
//!   files; an unreadable recovery point means "check every segment".
//! - A disk that fills up during an append (data or index write) leaves nothing behind:
//!   the append fails with an out-of-space error, reads keep working, the next append after
//!   space returns continues at the same offset, and the files reopen clean.
//! - A failed sync takes the log offline for good (`LogError::Failed`): every waiter, append,
//!   flush and read fails, also after the fault is gone; reopening recovers what was synced.
//!
//! Faults are injected with `strom_log::fault::inject` (feature `fault-injection`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_log::fault::{inject, Point};

mod common;
use common::all_batches;
use strom_log::{batch_headers, build_batch, Log, LogConfig, LogError};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Batch `i`: one record of 100 bytes.
fn batch(i: usize) -> Vec<u8> {
    build_batch(1_000 + i as i64, &[&[(i % 251) as u8; 100]])
}

/// A closed log of `n` one-record batches over several segments; the stored batches.
fn make_log(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    let log = Log::open(dir, config()).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let mut b = batch(i);
        log.append(&mut b).unwrap();
        out.push(b);
    }
    log.close().unwrap();
    out
}

/// The segment data files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn base_of(p: &Path) -> i64 {
    p.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Opening must fail with `Damaged` whose message names `needle`.
fn assert_damaged(dir: &Path, needle: &str) {
    match Log::open(dir, config()) {
        Err(LogError::Damaged(msg)) => assert!(msg.contains(needle), "{msg:?} names {needle}"),
        Err(e) => panic!("expected Damaged naming {needle}, got {e}"),
        Ok(log) => panic!(
            "expected Damaged naming {needle}, the log opened with end {}",
            log.log_end_offset()
        ),
    }
}

#[test]
fn an_unreadable_recovery_point_checks_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let batches = make_log(dir.path(), 120);
    let segs = segments(dir.path());
    assert!(segs.len() > 3, "several segments");
    for bad in [&[0xff, 0xfe, 0x00][..], b"", b"garbage\n", b"-5\n"] {
        fs::write(dir.path().join("recovery-point"), bad).unwrap();
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(all_batches(&log), batches, "every batch after {bad:?}");
        drop(log);
        let point = fs::read_to_string(dir.path().join("recovery-point")).unwrap();
        assert_eq!(
            point.trim().parse::<i64>().unwrap(),
            base_of(segs.last().unwrap()),
            "rewritten"
        );
    }
    // With the recovery point unknown, a lost tail of a sealed segment cannot be told from
    // one that never reached the disk: the log is not opened rather than dropping segments.
    let len = fs::metadata(&segs[1]).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segs[1])
        .unwrap()
        .set_len(len - 9)
        .unwrap();
    fs::write(dir.path().join("recovery-point"), [0xc3, 0x28]).unwrap();
    assert_damaged(dir.path(), &segs[1].display().to_string());
}

#[test]
fn a_deleted_only_segment_is_damage_not_a_fresh_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..5 {
        log.append(&mut batch(i)).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let seg = segments(dir.path()).pop().unwrap();
    fs::remove_file(&seg).unwrap();
    assert_damaged(dir.path(), &seg.display().to_string());
    // Without its indexes too: the recovery point still says records existed.
    for ext in ["index", "timeindex"] {
        fs::remove_file(seg.with_extension(ext)).unwrap();
    }
    assert_damaged(dir.path(), "recovery-point");
    // An empty directory is a new log.
    fs::remove_file(dir.path().join("recovery-point")).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn a_missing_middle_segment_is_damage() {
    let src = tempfile::tempdir().unwrap();
    make_log(src.path(), 120);
    let segs = segments(src.path());
    // Data file gone, indexes left.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(src.path(), dir.path());
    let gone = dir.path().join(segs[1].file_name().unwrap());
    fs::remove_file(&gone).unwrap();
    assert_damaged(dir.path(), &gone.display().to_string());
    // All three files gone: a hole between synced segments.
    for ext in ["index", "timeindex"] {
        fs::remove_file(gone.with_extension(ext)).unwrap();
    }
    assert_damaged(
        dir.path(),
        &format!("{}..{}", base_of(&segs[1]), base_of(&segs[2])),
    );
    // A synced segment that lost its tail.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(src.path(), dir.path());
    let cut = dir.path().join(segs[0].file_name().unwrap());
    let len = fs::metadata(&cut).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 120)
        .unwrap();
    assert_damaged(dir.path(), &cut.display().to_string());
    // The last segment gone: the recovery point names a segment that is not there.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(src.path(), dir.path());
    let last = dir.path().join(segs.last().unwrap().file_name().unwrap());
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(last.with_extension(ext)).unwrap();
    }
    assert_damaged(dir.path(), "past the last segment");
    // The untouched copy opens whole.
    let log = Log::open(src.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), 120);
}

#[test]
fn a_leftover_recovery_point_tmp_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 10);
    let tmp = dir.path().join("recovery-point.tmp");
    fs::write(&tmp, b"12").unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert!(!tmp.exists());
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn durable_config() -> LogConfig {
    LogConfig {
        flush_messages: Some(1),
        segment_bytes: 1 << 20,
        ..config()
    }
}

#[test]
fn a_full_disk_during_an_append_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), durable_config()).unwrap();
    let mut stored = Vec::new();
    for i in 0..10 {
        let mut b = batch(i);
        log.append(&mut b).unwrap();
        stored.push(b);
    }
    let seg = segments(dir.path()).pop().unwrap();
    let index = seg.with_extension("index");
    for point in [Point::DataWrite, Point::IndexWrite] {
        let _full = inject(dir.path(), point);
        // An append that writes no index entry does not reach the index fault: append
        // until one fails (one in two writes an entry at this interval).
        let mut i = 0;
        let e = loop {
            let mut b = batch(100 + i);
            match log.append(&mut b) {
                Ok(_) => stored.push(b),
                Err(e) => break e,
            }
            i += 1;
            assert!(i < 4, "{point:?}: an append hit the fault");
        };
        assert!(e.is_out_of_space(), "{point:?}: {e}");
        let size = fs::metadata(&seg).unwrap().len();
        let index_len = fs::metadata(&index).unwrap().len();
        assert_eq!(
            size,
            log.size_bytes(),
            "{point:?}: no bytes past the published end"
        );
        assert_eq!(index_len % 8, 0, "{point:?}: no torn index entry");
        let end = log.log_end_offset();
        {
            // Later appends fail the same way and leave nothing either.
            for i in 0..3 {
                let e = log.append(&mut batch(110 + i)).unwrap_err();
                assert!(e.is_out_of_space(), "{point:?}: {e}");
            }
            assert_eq!(log.log_end_offset(), end, "{point:?}: nothing appended");
            assert_eq!(fs::metadata(&seg).unwrap().len(), size, "{point:?}: data");
            assert_eq!(
                fs::metadata(&index).unwrap().len(),
                index_len,
                "{point:?}: index"
            );
            assert_eq!(all_batches(&log), stored, "{point:?}: reads keep working");
            log.flush().unwrap();
            assert!(log.failure().is_none());
            drop(_full);
        }
        // Space is back: appends continue at the same offset.
        for i in 0..6 {
            let mut b = batch(200 + i);
            let info = log.append(&mut b).unwrap();
            assert_eq!(info.base_offset, end + i as i64);
            stored.push(b);
        }
        log.flush_to(log.log_end_offset()).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), durable_config()).unwrap();
    assert_eq!(all_batches(&log), stored, "reopened");
    assert_eq!(fs::metadata(&index).unwrap().len() % 8, 0, "no torn entry");
    for offset in 0..log.log_end_offset() {
        let r = log.read(offset, 1).unwrap();
        let (_, h) = batch_headers(&r.data).next().unwrap();
        assert_eq!(h.base_offset, offset, "indexed read of {offset}");
    }
}

#[test]
fn a_failed_sync_takes_the_log_offline_until_it_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), durable_config()).unwrap());
    let mut synced = Vec::new();
    for i in 0..5 {
        let mut b = batch(i);
        let info = log.append(&mut b).unwrap();
        log.flush_to(info.last_offset + 1).unwrap();
        synced.push(b);
    }
    let fault = inject(dir.path(), Point::Sync);
    let info = log.append(&mut batch(5)).unwrap();
    // Several producers wait for the same sync: every one of them gets the error.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || log.flush_to(info.last_offset + 1))
        })
        .collect();
    for w in waiters {
        let r = w.join().unwrap();
        assert!(matches!(r, Err(LogError::Failed(_))), "{r:?}");
    }
    assert!(log.failure().is_some());
    drop(fault);
    // Never retried: the fault is gone, the log stays offline.
    assert!(matches!(log.flush(), Err(LogError::Failed(_))));
    assert!(matches!(
        log.append(&mut batch(6)),
        Err(LogError::Failed(_))
    ));
    assert!(matches!(log.read(0, 1 << 20), Err(LogError::Failed(_))));
    assert!(matches!(
        log.read_range(0, 1 << 20),
        Err(LogError::Failed(_))
    ));
    assert!(matches!(log.find_by_timestamp(0), Err(LogError::Failed(_))));
    assert!(matches!(log.close(), Err(LogError::Failed(_))));
    drop(log);
    // The recovery point asks the next open to check every batch (the fault is gone, so
    // the close could write it).
    let point = fs::read_to_string(dir.path().join("recovery-point")).unwrap();
    assert_eq!(point.trim(), "0 full-check");
    // Reopened: everything synced before the failure is there.
    let log = Log::open(dir.path(), durable_config()).unwrap();
    let got = all_batches(&log);
    assert!(got.len() >= synced.len() && got[..synced.len()] == synced[..]);
    assert!(log.failure().is_none());
    log.append(&mut batch(7)).unwrap();
    let point = fs::read_to_string(dir.path().join("recovery-point")).unwrap();
    assert_eq!(point.trim(), "0", "checked, back to normal");
}

/// After a failed sync, pages may be lost before index entries that reached the disk: the
/// full check verifies every batch of the active segment, not only those after its last
/// index entry.
#[test]
fn a_full_check_finds_damage_before_the_last_index_entry() {
    let src = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..config()
    };
    let log = Log::open(src.path(), cfg).unwrap();
    let mut stored = Vec::new();
    for i in 0..40 {
        let mut b = batch(i);
        log.append(&mut b).unwrap();
        stored.push(b);
    }
    log.close().unwrap();
    drop(log);
    let seg = segments(src.path()).pop().unwrap();
    let index_len = fs::metadata(seg.with_extension("index")).unwrap().len();
    assert!(index_len >= 8 * 5, "several index entries");
    // Zero a block in the middle (batch 10 of 40), well before the last index entry.
    let batch_len = stored[0].len();
    let mut data = fs::read(&seg).unwrap();
    data[10 * batch_len + 20..10 * batch_len + 80].fill(0);
    fs::write(&seg, &data).unwrap();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(src.path(), copy.path());
    // A normal open trusts the index entries: the damage is not looked at.
    let log = Log::open(src.path(), cfg).unwrap();
    assert_eq!(log.log_end_offset(), 40);
    drop(log);
    // With the flag, every batch is checked: the log ends before the damaged batch.
    fs::write(copy.path().join("recovery-point"), b"0 full-check\n").unwrap();
    let log = Log::open(copy.path(), cfg).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(all_batches(&log), stored[..10].to_vec());
    for offset in 0..10 {
        let r = log.read(offset, 1).unwrap();
        assert_eq!(batch_headers(&r.data).next().unwrap().1.base_offset, offset);
    }
}

#[test]
fn a_failed_seal_of_a_rolled_segment_takes_the_log_offline() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let fault = inject(dir.path(), Point::Sync);
    // Roll: the sealed segment is synced by a background thread, which fails.
    let mut appended = 0;
    while log.segment_count() < 2 {
        log.append(&mut batch(appended)).unwrap();
        appended += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.failure().is_none() {
        assert!(Instant::now() < deadline, "the seal did not fail");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(fault);
    assert!(log.failure().unwrap().contains("sealing segment"));
    assert!(matches!(
        log.append(&mut batch(0)),
        Err(LogError::Failed(_))
    ));
    assert!(matches!(log.flush(), Err(LogError::Failed(_))));
    drop(log);
    // The recovery point stayed before the segment, so the next open checks it.
    let point = fs::read_to_string(dir.path().join("recovery-point")).unwrap();
    assert_eq!(point.trim(), "0");
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), appended as i64);
}

#[test]
fn a_failed_directory_sync_at_a_roll_takes_the_log_offline() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let _fault = inject(dir.path(), Point::DirSync);
    let mut result = Ok(());
    for i in 0..100 {
        if let Err(e) = log.append(&mut batch(i)) {
            result = Err(e);
            break;
        }
    }
    assert!(matches!(result, Err(LogError::Failed(_))), "{result:?}");
    assert!(matches!(log.read(0, 1), Err(LogError::Failed(_))));
}
