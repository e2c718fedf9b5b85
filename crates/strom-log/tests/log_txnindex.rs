//! The aborted-transaction index (`<base>.txnindex`): entries in Kafka's 34-byte layout,
//! written to the segment holding the range's last offset, read back by range, kept across
//! a reopen, cut after a torn entry or past a truncated log end, deleted with its segment.
//! Also the control-batch append and the reads bounded by a stop offset.

use std::fs;
use std::path::{Path, PathBuf};

use strom_log::{
    batch_headers, build_batch, build_control, control_marker, AbortedRange, ControlMarker, Log,
    LogConfig, TXN_ENTRY_LEN,
};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn range(pid: i64, first: i64, last: i64) -> AbortedRange {
    AbortedRange {
        producer_id: pid,
        first_offset: first,
        last_offset: last,
        last_stable_offset: last + 1,
    }
}

fn txnindex_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txnindex"))
        .collect();
    out.sort();
    out
}

fn fill(log: &Log, n: usize) {
    for i in 0..n {
        let mut b = build_batch(1_000 + i as i64, &[&[7u8; 100][..]]);
        log.append(&mut b).unwrap();
    }
}

#[test]
fn control_batches_are_appended_only_through_append_control() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    fill(&log, 2);
    let m = ControlMarker {
        commit: false,
        coordinator_epoch: 9,
    };
    let b = build_control(5, 77, 1, m);
    assert!(
        log.append(&mut b.clone()).is_err(),
        "a client's append refuses markers"
    );
    let info = log.append_control(&b).unwrap();
    assert_eq!(info.base_offset, 2);
    let read = log.read(2, 1 << 20).unwrap();
    let (_, h) = batch_headers(&read.data).next().unwrap();
    assert!(h.is_control() && h.is_transactional());
    assert_eq!(control_marker(&read.data[..h.total_len()]), Some(m));
    // Bounded reads: nothing at or past the stop offset.
    let below = log.read_below(0, 1 << 20, 1).unwrap();
    assert_eq!(batch_headers(&below.data).count(), 1);
    assert!(log.read_below(1, 1 << 20, 1).unwrap().data.is_empty());
    let r = log.read_range_below(0, 1 << 20, 2).unwrap().range.unwrap();
    let all = log.read_range(0, 1 << 20).unwrap().range.unwrap();
    assert!(r.len < all.len);
    assert!(log.read_range_below(2, 1 << 20, 2).unwrap().range.is_none());
}

#[test]
fn entries_are_written_read_reopened_and_deleted_with_their_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), config()).unwrap();
        fill(&log, 10);
        log.add_aborted(range(1, 0, 3)).unwrap();
        fill(&log, 20);
        assert!(log.segment_count() > 2);
        log.add_aborted(range(2, 12, 25)).unwrap();
        // Twice is once (a replay adds what may already be there).
        log.add_aborted(range(2, 12, 25)).unwrap();
        // Outside the log: refused.
        assert!(log.add_aborted(range(3, 0, 999)).is_err());
        assert_eq!(
            log.aborted_ranges(0, 100),
            vec![range(1, 0, 3), range(2, 12, 25)]
        );
        assert_eq!(log.aborted_ranges(4, 100), vec![range(2, 12, 25)]);
        assert_eq!(log.aborted_ranges(0, 12), vec![range(1, 0, 3)]);
        assert!(log.aborted_ranges(26, 100).is_empty());
        log.close().unwrap();
    }
    let files = txnindex_files(dir.path());
    assert_eq!(files.len(), 2, "one file per segment holding a last offset");
    let bytes = fs::read(&files[0]).unwrap();
    assert_eq!(bytes.len(), TXN_ENTRY_LEN);
    // Kafka's layout: version 0, producer id, first, last, last stable offset.
    assert_eq!(&bytes[..2], &0i16.to_be_bytes());
    assert_eq!(&bytes[2..10], &1i64.to_be_bytes());
    assert_eq!(&bytes[18..26], &3i64.to_be_bytes());
    assert_eq!(&bytes[26..34], &4i64.to_be_bytes());
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(
        log.aborted_ranges(0, 100),
        vec![range(1, 0, 3), range(2, 12, 25)]
    );
    // Retention of the first segment takes its file and its entry.
    log.delete_segments_below(10).unwrap();
    assert!(log.log_start_offset() > 3);
    assert_eq!(log.aborted_ranges(0, 100), vec![range(2, 12, 25)]);
    assert_eq!(txnindex_files(dir.path()).len(), 1);
}

#[test]
fn a_torn_entry_and_entries_past_the_end_are_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        fill(&log, 10);
        log.add_aborted(range(1, 0, 2)).unwrap();
        log.add_aborted(range(2, 3, 5)).unwrap();
        log.close().unwrap();
    }
    let file = txnindex_files(dir.path()).remove(0);
    // A torn third entry.
    let mut bytes = fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0u8; 20]);
    fs::write(&file, &bytes).unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(
            log.aborted_ranges(0, 100),
            vec![range(1, 0, 2), range(2, 3, 5)]
        );
        assert_eq!(fs::read(&file).unwrap().len(), 2 * TXN_ENTRY_LEN);
        log.close().unwrap();
    }
    // The log loses its tail (offsets 4..): the entry whose marker was there goes.
    let seg = dir.path().join(format!("{:020}.log", 0));
    let data = fs::read(&seg).unwrap();
    let keep: usize = batch_headers(&data)
        .take_while(|(_, h)| h.base_offset < 4)
        .map(|(_, h)| h.total_len())
        .sum();
    fs::write(&seg, &data[..keep + 10]).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.aborted_ranges(0, 100), vec![range(1, 0, 2)]);
    assert_eq!(fs::read(&file).unwrap().len(), TXN_ENTRY_LEN);
    // An orphan file of a segment that is gone is removed.
    let orphan = dir.path().join(format!("{:020}.txnindex", 12345));
    fs::write(&orphan, [0u8; TXN_ENTRY_LEN]).unwrap();
    drop(log);
    let _log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(!orphan.exists());
}
