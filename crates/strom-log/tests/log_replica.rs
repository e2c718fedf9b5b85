//! A follower's side of replication: appends that keep the leader's offsets, and truncation
//! to the leader's log after a leader change.

use strom_log::{batch_headers, build_batch, Log, LogConfig, LogError};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// The leader's bytes for `n` one-record batches, read back from a leader log.
fn leader_bytes(n: usize) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..n {
        let mut b = build_batch(1_000 + i as i64, &[format!("record-{i:04}").as_bytes()]);
        log.append(&mut b).unwrap();
    }
    (dir, log)
}

fn read_all(log: &Log, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = from;
    while at < log.log_end_offset() {
        let r = log.read(at, 1 << 20).unwrap();
        let last = batch_headers(&r.data).last().unwrap().1.last_offset();
        out.extend_from_slice(&r.data);
        at = last + 1;
    }
    out
}

#[test]
fn replica_appends_keep_the_leaders_bytes_and_refuse_gaps() {
    let (_ld, leader) = leader_bytes(120);
    let bytes = read_all(&leader, 0);
    let dir = tempfile::tempdir().unwrap();
    let follower = Log::open(dir.path(), config()).unwrap();
    // Offsets 10.. do not continue an empty log.
    let from_ten = leader.read(10, 1 << 20).unwrap().data;
    match follower.append_replica(&from_ten) {
        Err(LogError::NotContiguous {
            expected: 0,
            got: 10,
        }) => {}
        other => panic!("a gap must be refused: {other:?}"),
    }
    assert_eq!(follower.log_end_offset(), 0);
    // In pieces, as a fetcher gets them.
    let mut pos = 0;
    for (at, h) in batch_headers(&bytes).collect::<Vec<_>>() {
        let end = at + h.total_len();
        follower.append_replica(&bytes[pos..end]).unwrap();
        pos = end;
    }
    assert_eq!(follower.log_end_offset(), 120);
    assert!(follower.segment_count() > 1, "rolled like the leader");
    assert_eq!(
        read_all(&follower, 0),
        bytes,
        "byte for byte the leader's batches"
    );
}

#[test]
fn truncation_cuts_at_a_batch_boundary_and_the_log_goes_on_from_there() {
    let (_ld, leader) = leader_bytes(150);
    let bytes = read_all(&leader, 0);
    let dir = tempfile::tempdir().unwrap();
    let follower = Log::open(dir.path(), config()).unwrap();
    follower.append_replica(&bytes).unwrap_or_else(|_| {
        // More than a segment at once: append batch by batch.
        let mut pos = 0;
        let mut last = None;
        for (at, h) in batch_headers(&bytes).collect::<Vec<_>>() {
            let end = at + h.total_len();
            last = Some(follower.append_replica(&bytes[pos..end]).unwrap());
            pos = end;
        }
        last.unwrap()
    });
    assert_eq!(follower.log_end_offset(), 150);
    assert!(follower.segment_count() > 2);
    let segments_before = follower.segment_count();
    follower.truncate_to(23).unwrap();
    assert_eq!(follower.log_end_offset(), 23);
    assert!(follower.segment_count() <= segments_before);
    let kept = read_all(&follower, 0);
    let cut: usize = batch_headers(&bytes)
        .take_while(|(_, h)| h.base_offset < 23)
        .map(|(_, h)| h.total_len())
        .sum();
    assert_eq!(kept, bytes[..cut], "everything below 23 is intact");
    // Appends go on at 23, and reads past the end are out of range.
    let more = leader.read(23, 1 << 20).unwrap().data;
    let first: usize = batch_headers(&more).next().unwrap().1.total_len();
    follower.append_replica(&more[..first]).unwrap();
    assert_eq!(follower.log_end_offset(), 24);
    // Truncating at or past the end does nothing; below the start is refused.
    follower.truncate_to(100).unwrap();
    assert_eq!(follower.log_end_offset(), 24);
    drop(follower);
    // The cut survives a restart, with its indexes rebuilt.
    let reopened = Log::open(dir.path(), config()).unwrap();
    assert_eq!(reopened.log_end_offset(), 24);
    let again = read_all(&reopened, 0);
    assert_eq!(&again[..cut], &bytes[..cut]);
    assert!(!reopened.read(5, 1).unwrap().data.is_empty());
}

#[test]
fn a_reset_empties_the_log_and_starts_it_at_the_leaders_start() {
    let (_ld, leader) = leader_bytes(150);
    let dir = tempfile::tempdir().unwrap();
    let follower = Log::open(dir.path(), config()).unwrap();
    let first = leader.read(0, 1 << 20).unwrap().data;
    let one: usize = batch_headers(&first).next().unwrap().1.total_len();
    follower.append_replica(&first[..one]).unwrap();
    // The leader's log now starts at 120: everything before is gone there.
    follower.reset_to(120).unwrap();
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (120, 120)
    );
    let rest = leader.read(120, 1 << 20).unwrap().data;
    let b: usize = batch_headers(&rest).next().unwrap().1.total_len();
    follower.append_replica(&rest[..b]).unwrap();
    assert_eq!(follower.log_end_offset(), 121);
    assert_eq!(follower.read(120, 1 << 20).unwrap().data, rest[..b]);
    drop(follower);
    let reopened = Log::open(dir.path(), config()).unwrap();
    assert_eq!(
        (reopened.log_start_offset(), reopened.log_end_offset()),
        (120, 121)
    );
}
