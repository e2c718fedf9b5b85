//! Torn and corrupt tails: the log is cut at every byte of its last batch, or a byte of the
//! tail is flipped; after reopening, every batch before the damage is intact, nothing after it
//! is returned, and appends continue at the right offset. Lost indexes are rebuilt.

use std::fs;
use std::path::{Path, PathBuf};

use strom_log::{batch_headers, build_batch, Log, LogConfig};

mod common;
use common::all_batches;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 256,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// A log of `n` batches of 3 records each; returns the normalised batches.
fn make_log(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    let log = Log::open(dir, config()).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let v1 = format!("value-{i}-a");
        let v2 = vec![i as u8; 40 + i % 30];
        let mut b = build_batch(10_000 + i as i64, &[v1.as_bytes(), &v2, b"z"]);
        log.append(&mut b).unwrap();
        out.push(b);
    }
    log.close().unwrap();
    out
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// A copy of a closed log as a crash would have left it: without the clean-shutdown marker
/// (with it, the open trusts the active segment's tail as that close synced it).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "clean-shutdown" {
            fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Reopens the damaged copy and checks it holds exactly `intact` batches, then appends.
fn check_recovered(dir: &Path, batches: &[Vec<u8>], intact: usize) {
    let log = Log::open(dir, config()).unwrap();
    let end = 3 * intact as i64;
    assert_eq!(log.log_end_offset(), end, "log end after recovery");
    assert_eq!(
        all_batches(&log),
        batches[..intact].to_vec(),
        "batches before the damage"
    );
    assert!(log.read(end + 1, 1 << 20).is_err(), "nothing after the end");
    let mut b = build_batch(99, &[b"after"]);
    let info = log.append(&mut b).unwrap();
    assert_eq!(
        info.base_offset, end,
        "appends continue at the right offset"
    );
    log.close().unwrap();
    // And the recovered log reopens as it is.
    let log = Log::open(dir, config()).unwrap();
    assert_eq!(log.log_end_offset(), end + 1);
}

#[test]
fn cut_at_every_byte_of_the_last_batch() {
    let src = tempfile::tempdir().unwrap();
    let batches = make_log(src.path(), 40);
    let seg = last_segment(src.path());
    let size = fs::metadata(&seg).unwrap().len() as usize;
    let last_len = batches.last().unwrap().len();
    let last_start = size - last_len;
    for cut in last_start..size {
        let work = tempfile::tempdir().unwrap();
        copy_dir(src.path(), work.path());
        let f = fs::OpenOptions::new()
            .write(true)
            .open(work.path().join(seg.file_name().unwrap()))
            .unwrap();
        f.set_len(cut as u64).unwrap();
        drop(f);
        check_recovered(work.path(), &batches, batches.len() - 1);
    }
}

#[test]
fn flipped_bytes_in_the_tail_are_cut_off() {
    let src = tempfile::tempdir().unwrap();
    let batches = make_log(src.path(), 40);
    let seg = last_segment(src.path());
    let size = fs::metadata(&seg).unwrap().len() as usize;
    let last_start = size - batches.last().unwrap().len();
    // A deterministic spread of positions over the whole last batch. Bytes 12..16 (the
    // partition leader epoch) are not covered by the CRC, as in Kafka, so they are skipped.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut tried = 0;
    while tried < 120 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let rel = (x % (size - last_start) as u64) as usize;
        if (12..16).contains(&rel) {
            continue;
        }
        tried += 1;
        let work = tempfile::tempdir().unwrap();
        copy_dir(src.path(), work.path());
        let path = work.path().join(seg.file_name().unwrap());
        let mut data = fs::read(&path).unwrap();
        data[last_start + rel] ^= 1 << (x % 8);
        fs::write(&path, &data).unwrap();
        check_recovered(work.path(), &batches, batches.len() - 1);
    }
}

#[test]
fn garbage_after_the_last_batch_is_cut_off() {
    let src = tempfile::tempdir().unwrap();
    let batches = make_log(src.path(), 10);
    let seg = last_segment(src.path());
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&[0xAB; 37]);
    fs::write(&seg, &data).unwrap();
    check_recovered(src.path(), &batches, batches.len());
}

#[test]
fn lost_or_corrupt_indexes_are_rebuilt() {
    let src = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 4096,
        ..config()
    };
    let log = Log::open(src.path(), cfg).unwrap();
    let mut batches = Vec::new();
    for i in 0..200 {
        let v = vec![(i % 251) as u8; 100];
        let mut b = build_batch(1_000 * i as i64, &[&v]);
        log.append(&mut b).unwrap();
        batches.push(b);
    }
    assert!(log.segment_count() > 3, "several segments");
    log.close().unwrap();
    drop(log);
    for e in fs::read_dir(src.path()).unwrap() {
        let p = e.unwrap().path();
        match p.extension().and_then(|e| e.to_str()) {
            Some("index") => fs::remove_file(&p).unwrap(),
            Some("timeindex") => fs::write(&p, [0xFF; 29]).unwrap(),
            _ => {}
        }
    }
    let log = Log::open(src.path(), cfg).unwrap();
    assert_eq!(log.log_end_offset(), 200);
    assert_eq!(all_batches(&log), batches);
    for i in [0i64, 1, 57, 123, 199] {
        let r = log.read(i, 1).unwrap();
        let (_, h) = batch_headers(&r.data).next().unwrap();
        assert_eq!(h.base_offset, i);
        let hit = log.find_by_timestamp(1_000 * i - 1).unwrap().unwrap();
        assert_eq!(hit.base_offset, i, "time lookup of {i}");
    }
}

/// Segments sealed by a roll are synced in the background; the recovery point records the
/// oldest one that may not be on disk. A sealed segment at or after the recovery point is
/// checked on open like the active one, and a hole in it drops everything after it.
#[test]
fn sealed_segments_after_the_recovery_point_are_checked() {
    let src = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 4096,
        ..config()
    };
    let log = Log::open(src.path(), cfg).unwrap();
    let mut batches = Vec::new();
    for i in 0..200 {
        let v = vec![(i % 251) as u8; 100];
        let mut b = build_batch(1_000 * i as i64, &[&v]);
        log.append(&mut b).unwrap();
        batches.push(b);
    }
    log.close().unwrap();
    drop(log);
    let mut segs: Vec<PathBuf> = fs::read_dir(src.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    assert!(segs.len() > 4, "several segments");
    let base_of = |p: &Path| -> i64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    // A clean close leaves the recovery point at the active segment.
    let point = fs::read_to_string(src.path().join("recovery-point")).unwrap();
    assert_eq!(
        point.trim().parse::<i64>().unwrap(),
        base_of(segs.last().unwrap())
    );

    // Untouched segments after the recovery point are checked and kept.
    let work = tempfile::tempdir().unwrap();
    copy_dir(src.path(), work.path());
    fs::write(
        work.path().join("recovery-point"),
        format!("{}\n", base_of(&segs[1])),
    )
    .unwrap();
    let log = Log::open(work.path(), cfg).unwrap();
    assert_eq!(log.log_end_offset(), 200);
    assert_eq!(all_batches(&log), batches);
    drop(log);
    let point = fs::read_to_string(work.path().join("recovery-point")).unwrap();
    assert_eq!(
        point.trim().parse::<i64>().unwrap(),
        base_of(segs.last().unwrap())
    );

    // A torn tail in a sealed segment after the recovery point ends the log there.
    let work = tempfile::tempdir().unwrap();
    copy_dir(src.path(), work.path());
    fs::write(
        work.path().join("recovery-point"),
        format!("{}\n", base_of(&segs[1])),
    )
    .unwrap();
    let torn = work.path().join(segs[2].file_name().unwrap());
    let len = fs::metadata(&torn).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&torn).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    let intact = base_of(&segs[3]) as usize - 1;
    check_recovered_cfg(work.path(), cfg, &batches, intact);
    let left: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(left.len(), 3, "the segments after the hole are gone");
}

/// Like `check_recovered`, for logs of one record per batch and any config.
fn check_recovered_cfg(dir: &Path, cfg: LogConfig, batches: &[Vec<u8>], intact: usize) {
    let log = Log::open(dir, cfg).unwrap();
    assert_eq!(
        log.log_end_offset(),
        intact as i64,
        "log end after recovery"
    );
    assert_eq!(all_batches(&log), batches[..intact].to_vec());
    let mut b = build_batch(99, &[b"after"]);
    assert_eq!(log.append(&mut b).unwrap().base_offset, intact as i64);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir, cfg).unwrap();
    assert_eq!(log.log_end_offset(), intact as i64 + 1);
}

/// Every record's timestamp answers with its own offset, and retention by time (everything
/// is younger than a day at `now`) deletes nothing: what a sealed segment's max timestamp
/// must allow after any open.
fn check_times(dir: &Path, n: usize, now: i64) {
    let log = Log::open(dir, config()).unwrap();
    assert!(log.segment_count() > 2, "the log rolled");
    for i in 0..n {
        let hit = log.find_by_timestamp(10_000 + i as i64).unwrap().unwrap();
        assert_eq!(hit.base_offset, 3 * i as i64, "timestamp of batch {i}");
    }
    let day = LogConfig {
        retention_ms: Some(86_400_000),
        ..config()
    };
    log.set_config(day).unwrap();
    assert_eq!(log.enforce_retention(now).unwrap().segments, 0);
    log.close().unwrap();
}

#[test]
fn a_sealed_segment_whose_time_index_lost_its_tail_keeps_its_newest_timestamp() {
    // Regression (chaos suite): the newest timestamp of a sealed segment was the last entry
    // of its time index, unchecked; cut short, lookups by time skipped the segment's newest
    // records and retention deleted records still within retention.
    let dir = tempfile::tempdir().unwrap();
    let n = 1500;
    make_log(dir.path(), n);
    let first = dir.path().join("00000000000000000000.timeindex");
    fs::write(&first, &fs::read(&first).unwrap()[..12]).unwrap();
    check_times(dir.path(), n, 10_000 + n as i64 + 3_600_000);
    // Rebuilt once, then trusted: the next open finds it whole.
    assert!(fs::metadata(&first).unwrap().len() > 12);
    check_times(dir.path(), n, 10_000 + n as i64 + 3_600_000);
}

#[test]
fn rechecking_a_sealed_segment_keeps_its_final_time_entry() {
    // Regression (chaos suite): a kill after a roll but before the sealed segment's sync makes
    // the next open check that segment again; its time index was rewritten without the final
    // entry the roll wrote, so the open after that took an older newest timestamp.
    let dir = tempfile::tempdir().unwrap();
    let n = 1500;
    make_log(dir.path(), n);
    fs::write(dir.path().join("recovery-point"), "0\n").unwrap();
    check_times(dir.path(), n, 10_000 + n as i64 + 3_600_000);
    check_times(dir.path(), n, 10_000 + n as i64 + 3_600_000);
}

#[test]
fn a_time_index_that_ends_at_an_equal_timestamp_is_not_rebuilt() {
    // Batches in the same millisecond add offset index entries but no time index entry, so a
    // sealed segment's time index may end well before its last batch while naming its newest
    // timestamp: every open took that for a lost tail and rebuilt both indexes.
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..1500i64 {
        let mut b = build_batch(20_000 + i / 500, &[&[i as u8; 60]]);
        log.append(&mut b).unwrap();
    }
    assert!(log.segment_count() > 2, "the log rolled");
    log.close().unwrap();
    drop(log);
    let first = dir.path().join("00000000000000000000.timeindex");
    let entries = fs::read(&first).unwrap().len() / 12;
    let offsets = fs::read(dir.path().join("00000000000000000000.index"))
        .unwrap()
        .len()
        / 8;
    assert!(
        entries < offsets,
        "{entries} time entries, {offsets} offset entries"
    );
    let written = fs::metadata(&first).unwrap().modified().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(
        fs::metadata(&first).unwrap().modified().unwrap(),
        written,
        "time index rewritten"
    );
    assert_eq!(
        log.find_by_timestamp(20_000).unwrap().unwrap().base_offset,
        0
    );
    assert_eq!(
        log.find_by_timestamp(20_002).unwrap().unwrap().base_offset,
        1000
    );
    assert!(log.find_by_timestamp(20_003).unwrap().is_none());
}

#[test]
fn a_clean_close_is_trusted_at_the_next_open_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let batches = make_log(dir.path(), 40);
    let marker = dir.path().join("clean-shutdown");
    assert!(marker.exists(), "a clean close leaves its marker");
    let seg = last_segment(dir.path());
    let size = fs::metadata(&seg).unwrap().len() as usize;
    // A bit flipped in the last batch after the clean close (the same length): the open
    // trusts what the close synced and does not read the tail again (as Kafka after a clean
    // shutdown)...
    let mut data = fs::read(&seg).unwrap();
    data[size - 5] ^= 1;
    fs::write(&seg, &data).unwrap();
    {
        let log = Log::open(dir.path(), config()).unwrap();
        assert!(
            !marker.exists(),
            "the open removes the marker before any append"
        );
        assert_eq!(log.log_end_offset(), 3 * batches.len() as i64);
        assert_eq!(
            log.find_by_timestamp(10_000).unwrap().unwrap().base_offset,
            0
        );
        // ...and the marker is gone: a crash now (no close) leaves a log whose next open
        // checks the tail and cuts the flipped batch off.
    }
    check_recovered(dir.path(), &batches, batches.len() - 1);
}

#[test]
fn a_clean_close_marker_is_not_trusted_once_the_segment_changed() {
    let src = tempfile::tempdir().unwrap();
    let batches = make_log(src.path(), 40);
    let seg = last_segment(src.path());
    // Bytes appended after the close (a torn append of a later run the marker knows nothing
    // of, had it survived): the length differs, the tail is checked and the garbage cut.
    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&[7u8; 100]);
    fs::write(&seg, &data).unwrap();
    assert!(src.path().join("clean-shutdown").exists());
    check_recovered(src.path(), &batches, batches.len());
    // An unparseable marker is the usual check.
    let again = tempfile::tempdir().unwrap();
    let batches = make_log(again.path(), 10);
    fs::write(again.path().join("clean-shutdown"), "v1 0 12\n").unwrap();
    check_recovered(again.path(), &batches, batches.len());
}
