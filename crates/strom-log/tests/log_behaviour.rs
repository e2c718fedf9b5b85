//! Retention, index lookups, segment rolls, limits, and readers running beside the writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strom_log::{
    batch_headers, build_batch, now_ms, validate_batches, BatchError, Log, LogConfig, LogError,
    HEADER_LEN,
};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn append(log: &Log, ts: i64, value: &[u8]) -> i64 {
    let mut b = build_batch(ts, &[value]);
    log.append(&mut b).unwrap().base_offset
}

#[test]
fn retention_by_time_deletes_old_segments_and_moves_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: Some(3_600_000),
        ..config()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    let old = now_ms() - 2 * 3_600_000;
    let v = [7u8; 500];
    for i in 0..40 {
        append(&log, old + i, &v);
    }
    let first_new = append(&log, now_ms(), &v);
    for _ in 0..20 {
        append(&log, now_ms(), &v);
    }
    let before = log.segment_count();
    let out = log.enforce_retention(now_ms()).unwrap();
    assert!(out.segments > 0 && log.segment_count() == before - out.segments);
    let start = log.log_start_offset();
    assert!(
        start > 0 && start <= first_new,
        "start {start} moved up to at most the first new record"
    );
    assert!(matches!(
        log.read(start - 1, 1 << 20),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(!log.read(start, 1 << 20).unwrap().data.is_empty());
    // The start survives a reopen.
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.log_start_offset(), start);
}

#[test]
fn retention_by_size_keeps_the_newest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(3 * 4096),
        ..config()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    for _ in 0..100 {
        append(&log, now_ms(), &[1u8; 400]);
    }
    log.enforce_retention(now_ms()).unwrap();
    assert!(
        log.size_bytes() <= 4 * 4096,
        "size {} after retention",
        log.size_bytes()
    );
    assert!(log.log_start_offset() > 0);
    assert_eq!(log.log_end_offset(), 100);
}

#[test]
fn segments_roll_by_size_and_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for _ in 0..30 {
        append(&log, 1, &[0u8; 600]);
    }
    let n = log.segment_count();
    assert!(n >= 5, "30 × ~670 bytes in 4 KiB segments: {n} segments");
    let dir2 = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir2.path(),
        LogConfig {
            segment_ms: 20,
            segment_bytes: 1 << 20,
            ..config()
        },
    )
    .unwrap();
    append(&log, 1, b"a");
    std::thread::sleep(Duration::from_millis(40));
    append(&log, 1, b"b");
    std::thread::sleep(Duration::from_millis(40));
    append(&log, 1, b"c");
    assert_eq!(log.segment_count(), 3, "segment.ms rolled twice");
    let names: Vec<String> = std::fs::read_dir(dir2.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    for base in [
        "00000000000000000000.log",
        "00000000000000000001.log",
        "00000000000000000002.log",
    ] {
        assert!(names.iter().any(|n| n == base), "{base} in {names:?}");
    }
}

#[test]
fn segment_jitter_rolls_each_segment_somewhat_before_segment_ms() {
    // The rule: segment.ms less this segment's jitter, below min(jitter, segment.ms).
    let c = LogConfig {
        segment_ms: 1000,
        segment_jitter_ms: 300,
        ..config()
    };
    assert!(!c.roll_due(699, 300 + 1)); // jitter 1
    assert!(c.roll_due(999, 300 + 1));
    assert!(c.roll_due(701, 299)); // jitter 299, the largest
    assert!(!c.roll_due(700, 299));
    let none = LogConfig {
        segment_jitter_ms: 0,
        ..c
    };
    assert!(!none.roll_due(999, 299) && none.roll_due(1000, 299));
    let capped = LogConfig {
        segment_jitter_ms: u64::MAX,
        ..c
    };
    assert!(!capped.roll_due(0, 999) && capped.roll_due(1, 999)); // below segment.ms

    // Through appends: 16 logs with segment.ms 2 s and a 2 s jitter, appended to twice 1 s
    // apart. Each rolls when its segment's jitter is over ~1 s: about half of them (all or
    // none with probability ~3e-5), where a log without jitter never rolls.
    let dirs: Vec<_> = (0..17).map(|_| tempfile::tempdir().unwrap()).collect();
    let logs: Vec<Log> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let jitter = if i == 0 { 0 } else { 2000 };
            let c = LogConfig {
                segment_ms: 2000,
                segment_jitter_ms: jitter,
                segment_bytes: 1 << 20,
                ..config()
            };
            Log::open(d.path(), c).unwrap()
        })
        .collect();
    for log in &logs {
        append(log, 1, b"a");
    }
    std::thread::sleep(Duration::from_millis(1000));
    for log in &logs {
        append(log, 1, b"b");
    }
    assert_eq!(
        logs[0].segment_count(),
        1,
        "no jitter: not rolled before segment.ms"
    );
    let rolled = logs[1..].iter().filter(|l| l.segment_count() == 2).count();
    assert!(
        (1..16).contains(&rolled),
        "{rolled} of 16 jittered logs rolled after 1 s of a 2 s segment.ms"
    );
}

#[test]
fn offset_and_time_lookups_go_through_the_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..500i64 {
        append(&log, 1_000 + 10 * i, format!("v{i}").as_bytes());
    }
    for o in [0i64, 1, 2, 99, 250, 498, 499] {
        let r = log.read(o, 1).unwrap();
        let (_, h) = batch_headers(&r.data).next().unwrap();
        assert_eq!(h.base_offset, o);
    }
    assert_eq!(log.find_by_timestamp(0).unwrap().unwrap().base_offset, 0);
    assert_eq!(
        log.find_by_timestamp(1_000).unwrap().unwrap().base_offset,
        0
    );
    assert_eq!(
        log.find_by_timestamp(1_001).unwrap().unwrap().base_offset,
        1
    );
    assert_eq!(
        log.find_by_timestamp(3_500).unwrap().unwrap().base_offset,
        250
    );
    assert_eq!(
        log.find_by_timestamp(5_990).unwrap().unwrap().base_offset,
        499
    );
    assert!(log.find_by_timestamp(5_991).unwrap().is_none());
    assert!(matches!(
        log.read(501, 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(
        log.read(500, 1).unwrap().data.is_empty(),
        "the end: no data, no error"
    );
}

#[test]
fn invalid_batches_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            max_batch_bytes: 1000,
            ..config()
        },
    )
    .unwrap();
    append(&log, 1, b"ok");
    let size = log.size_bytes();
    let mut big = build_batch(1, &[&[0u8; 2000]]);
    assert!(matches!(
        log.append(&mut big),
        Err(LogError::Batch(BatchError::TooLarge { .. }))
    ));
    let mut bad_crc = build_batch(1, &[b"x"]);
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 0xFF;
    assert!(matches!(
        log.append(&mut bad_crc),
        Err(LogError::Batch(BatchError::Corrupt(_)))
    ));
    let mut old_magic = build_batch(1, &[b"x"]);
    old_magic[16] = 1;
    assert!(matches!(
        log.append(&mut old_magic),
        Err(LogError::Batch(BatchError::UnsupportedMagic(1)))
    ));
    // CRC-valid but with a record whose key length is 2^31-1: the append walks the records.
    let mut bad_key = build_batch(1, &[b"x"]);
    bad_key.splice(
        HEADER_LEN + 4..HEADER_LEN + 5,
        [0xfe, 0xff, 0xff, 0xff, 0x0f],
    );
    let len = bad_key.len() as i32 - 12;
    bad_key[8..12].copy_from_slice(&len.to_be_bytes());
    bad_key[HEADER_LEN] += 8; // the record's length (zigzag: +4 bytes)
    let crc = crc32c::crc32c(&bad_key[21..]);
    bad_key[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        log.append(&mut bad_key),
        Err(LogError::Batch(BatchError::InvalidRecord { index: 0, .. }))
    ));
    // Two batches where the second is bad: the first is not written either.
    let mut two = build_batch(1, &[b"fine"]);
    two.extend_from_slice(&bad_crc);
    assert!(log.append(&mut two).is_err());
    assert_eq!(log.size_bytes(), size);
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn readers_never_see_a_partial_batch_while_the_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open(
            dir.path(),
            LogConfig {
                segment_bytes: 64 * 1024,
                ..config()
            },
        )
        .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                // Passes while the writer appends, and one more after it is done (on a
                // loaded machine the writer may finish before a reader is scheduled).
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let mut offset = log.log_start_offset();
                    let end = log.log_end_offset();
                    while offset < end {
                        let r = log.read(offset, 8192).unwrap();
                        // Whole, CRC-valid batches only.
                        validate_batches(&r.data, 1 << 20).unwrap();
                        let (_, first) = batch_headers(&r.data).next().unwrap();
                        assert!(first.base_offset <= offset);
                        offset = batch_headers(&r.data).last().unwrap().1.last_offset() + 1;
                        reads += 1;
                    }
                    if finished {
                        break;
                    }
                }
                reads
            })
        })
        .collect();
    for i in 0..3000 {
        let values: Vec<Vec<u8>> = (0..(1 + i % 7))
            .map(|j| vec![(i + j) as u8; 10 + (i * 13) % 300])
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let mut b = build_batch(i as i64, &refs);
        log.append(&mut b).unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

/// With `flush.messages=1`, a large append is written and synced by one `RWF_DSYNC` write
/// (durable on return: no flush due), a small one leaves the fdatasync to `flush_to` so that
/// concurrent appenders share it, and a roll does not make unsynced data count as flushed.
#[test]
fn durable_appends_large_ones_synced_in_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        flush_messages: Some(1),
        ..config()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    let big = vec![3u8; 300 << 10];
    let mut b = build_batch(1, &[&big]);
    let info = log.append(&mut b).unwrap();
    assert!(!info.flush_due, "a large append is durable when it returns");
    assert_eq!(log.flushed_offset(), 1);

    let mut b = build_batch(2, &[b"small"]);
    let info = log.append(&mut b).unwrap();
    assert!(info.flush_due, "a small append asks for the shared flush");
    assert_eq!(log.flushed_offset(), 1);
    // Everything before this large append is not durable yet: it takes the normal path.
    let mut b = build_batch(3, &[&big]);
    let info = log.append(&mut b).unwrap();
    assert!(info.flush_due);
    log.flush_to(info.last_offset + 1).unwrap();
    assert_eq!(log.flushed_offset(), 3);

    // Without a flush policy, rolls leave the flushed offset alone.
    let log2_dir = tempfile::tempdir().unwrap();
    let log2 = Log::open(log2_dir.path(), config()).unwrap();
    for i in 0..50 {
        append(&log2, i, &[1u8; 300]);
    }
    assert!(log2.segment_count() > 2);
    assert_eq!(
        log2.flushed_offset(),
        0,
        "rolled segments are not counted as synced"
    );
    log2.flush().unwrap();
    assert_eq!(log2.flushed_offset(), 50);
}

/// `append_shared_unsynced` never syncs in the append, even a large due one: the caller's
/// `flush_to` makes it (and any appended after it) durable with one sync.
#[test]
fn unsynced_appends_leave_the_sync_to_flush_to() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 4 << 20,
        flush_messages: Some(1),
        ..config()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    let big = vec![5u8; 300 << 10];
    let first = log
        .append_shared_unsynced(&build_batch(1, &[&big]))
        .unwrap();
    assert!(first.flush_due, "a due append reports it");
    assert_eq!(log.flushed_offset(), 0, "nothing synced in the append");
    let second = log
        .append_shared_unsynced(&build_batch(2, &[&big]))
        .unwrap();
    assert_eq!(log.flushed_offset(), 0);
    log.flush_to(first.last_offset + 1).unwrap();
    assert_eq!(
        log.flushed_offset(),
        second.last_offset + 1,
        "one sync covered both appends"
    );
    log.flush_to(second.last_offset + 1).unwrap();
    let read = log.read(0, 1 << 20).unwrap();
    validate_batches(&read.data, 1 << 20).expect("stored batches are valid");
    assert_eq!(batch_headers(&read.data).count(), 2);
}

/// `append_shared` writes what `append` would have: offsets, leader epoch, and for
/// `LogAppendTime` the broker's timestamp with a recomputed CRC, for several batches at once.
#[test]
fn shared_appends_store_the_same_bytes_as_in_place_ones() {
    use strom_log::TimestampType;
    for timestamp_type in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
        let cfg = LogConfig {
            timestamp_type,
            leader_epoch: 4,
            ..config()
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (in_place, shared) = (
            Log::open(a.path(), cfg).unwrap(),
            Log::open(b.path(), cfg).unwrap(),
        );
        let mut two = build_batch(5, &[b"x", b"yy"]);
        two.extend_from_slice(&build_batch(6, &[&[9u8; 300]]));
        for _ in 0..3 {
            let original = two.clone();
            let mut copy = two.clone();
            let i = in_place.append(&mut copy).unwrap();
            let s = shared.append_shared(&two).unwrap();
            assert_eq!(two, original, "the caller's bytes are untouched");
            assert_eq!(
                (i.base_offset, i.last_offset),
                (s.base_offset, s.last_offset)
            );
        }
        let (ri, rs) = (
            in_place.read(0, 1 << 20).unwrap(),
            shared.read(0, 1 << 20).unwrap(),
        );
        validate_batches(&rs.data, 1 << 20).expect("stored batches are valid (CRC)");
        let stamps = |data: &[u8]| -> Vec<(i64, i32, i64)> {
            batch_headers(data)
                .map(|(_, h)| (h.base_offset, h.leader_epoch, h.max_timestamp))
                .collect()
        };
        let (si, ss) = (stamps(&ri.data), stamps(&rs.data));
        assert_eq!(si.len(), 6);
        assert_eq!(
            si.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
            ss.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>()
        );
        if timestamp_type == TimestampType::CreateTime {
            assert_eq!(ri.data, rs.data, "byte-identical");
        } else {
            assert!(ss.iter().all(|s| s.2 > 1_000_000), "broker time stamped");
        }
    }
}

/// `append_shared_unreserved` writes a batch without `strom.` headers as `append_shared`
/// does, and nothing of one with such a header (the broker's delay and dedup take it).
#[test]
fn unreserved_appends_leave_strom_headers_to_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let rec = |key: &'static str| strom_records::NewRecord {
        value: Some(b"v"),
        headers: vec![(key, Some(b"1"))],
        ..Default::default()
    };
    let plain = strom_records::build_records(1, &[rec("trace"), rec("strom")]);
    let info = log
        .append_shared_unreserved(&plain, false)
        .unwrap()
        .unwrap();
    assert_eq!((info.base_offset, info.records), (0, 2));
    let reserved = strom_records::build_records(1, &[rec("trace"), rec("strom.delay.ms")]);
    assert!(log
        .append_shared_unreserved(&reserved, true)
        .unwrap()
        .is_none());
    assert_eq!(log.log_end_offset(), 2);
    // An invalid batch is still refused, with or without the header.
    let mut bad = reserved.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(matches!(
        log.append_shared_unreserved(&bad, false),
        Err(LogError::Batch(BatchError::Corrupt(_)))
    ));
}

#[test]
fn delete_records_moves_the_start_durably_and_drops_whole_segments_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let v = [3u8; 500];
    for _ in 0..40 {
        append(&log, now_ms(), &v);
    }
    let segments = log.segment_count();
    assert!(segments > 3);
    let end = log.log_end_offset();
    assert!(matches!(
        log.delete_records_below(end + 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.delete_records_below(25).unwrap(), 25);
    assert!(
        log.segment_count() < segments,
        "whole segments below 25 deleted"
    );
    assert!(matches!(
        log.read(24, 1 << 20),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(!log.read(25, 1 << 20).unwrap().data.is_empty());
    // Lower offsets change nothing.
    assert_eq!(log.delete_records_below(10).unwrap(), 25);
    drop(log); // no close: as after a crash
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_start_offset(), 25);
    assert_eq!(log.log_end_offset(), end);
    // Up to the end: nothing readable, appends go on.
    assert_eq!(log.delete_records_below(end).unwrap(), end);
    assert_eq!(append(&log, now_ms(), &v), end);
    assert!(log.read(end - 1, 1 << 20).is_err());
}
