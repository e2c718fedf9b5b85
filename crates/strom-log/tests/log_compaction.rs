//! The log cleaner (compaction): last value per key, offsets unchanged, tombstones, the
//! compaction lag, a bounded offset map, and a crash at every step of a segment swap.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use strom_log::fault::{inject, Point};
use strom_log::{now_ms, CleanOptions, Log, LogConfig, CLEANER_ENTRY_BYTES};
use strom_records::NewRecord;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn opts() -> CleanOptions {
    CleanOptions {
        min_cleanable_dirty_ratio: 0.0,
        ..CleanOptions::default()
    }
}

/// One stored record: offset, key, value.
type Rec = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn append(log: &Log, key: Option<&str>, value: Option<&str>, ts: i64) -> i64 {
    let mut b = strom_records::build_records(
        ts,
        &[NewRecord {
            key: key.map(str::as_bytes),
            value: value.map(str::as_bytes),
            headers: vec![],
        }],
    );
    log.append(&mut b).unwrap().base_offset
}

/// Every record from the log start, checking that batches and offsets only go forward.
fn read_all(log: &Log) -> Vec<Rec> {
    let mut out: Vec<Rec> = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20).unwrap();
        assert!(!r.data.is_empty(), "no data at {offset}");
        for (h, recs) in strom_records::decode_batches(&r.data) {
            assert!(
                h.base_offset >= offset,
                "batch {} before {offset}",
                h.base_offset
            );
            for rec in recs.unwrap() {
                if let Some(last) = out.last() {
                    assert!(
                        rec.offset > last.0,
                        "offsets go back: {} after {}",
                        rec.offset,
                        last.0
                    );
                }
                out.push((
                    rec.offset,
                    rec.key.map(|k| k.to_vec()),
                    rec.value.map(|v| v.to_vec()),
                ));
            }
            offset = h.last_offset() + 1;
        }
    }
    out
}

/// Reopens the log: every sealed segment is then synced (a pass only cleans those).
fn reopen(log: Log, dir: &Path) -> Log {
    log.close().unwrap();
    drop(log);
    Log::open(dir, config()).unwrap()
}

/// Writes `rounds` values for each of `keys` keys, one record per batch; returns what was
/// written, in order.
fn fill(log: &Log, keys: usize, rounds: usize, ts: i64) -> Vec<Rec> {
    let mut written = Vec::new();
    for round in 0..rounds {
        for k in 0..keys {
            let (key, value) = (
                format!("key-{k}"),
                format!("value-{k}-{round}-{}", "x".repeat(40)),
            );
            let off = append(log, Some(&key), Some(&value), ts);
            written.push((off, Some(key.into_bytes()), Some(value.into_bytes())));
        }
    }
    written
}

/// What compaction of `written` must keep: each key's last record, at its offset, from the
/// records below `limit` (later ones are all kept).
fn expected(written: &[Rec], limit: i64) -> Vec<Rec> {
    let mut last: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (o, k, _) in written.iter().filter(|r| r.0 < limit) {
        last.insert(k.clone().unwrap(), *o);
    }
    written
        .iter()
        .filter(|(o, k, _)| *o >= limit || last.get(k.as_ref().unwrap()) == Some(o))
        .cloned()
        .collect()
}

#[test]
fn keeps_the_last_value_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let written = fill(&log, 10, 30, now_ms() - 1000);
    let log = reopen(log, dir.path());
    assert!(log.segment_count() > 5);
    let stats = log.cleaner_stats(&opts(), now_ms()).unwrap();
    assert!(
        stats.due && stats.dirty_bytes > 0 && stats.dirty_ratio > 0.9,
        "{stats:?}"
    );
    let before = log.size_bytes();
    let segments = log.segment_count();
    let out = log.clean(&opts(), now_ms(), &mut || true).unwrap();
    // Segments left empty are removed (not the first one).
    assert!(
        log.segment_count() < segments / 2,
        "{segments} -> {}",
        log.segment_count()
    );
    assert!(
        out.segments_rewritten > 0 || out.records_removed > 0,
        "{out:?}"
    );
    assert!(!out.partial);
    assert!(
        log.size_bytes() < before / 3,
        "{} -> {}",
        before,
        log.size_bytes()
    );
    let got = read_all(&log);
    // The active segment's records are all kept; each key's last value below it is kept.
    let limit = out.clean_to;
    assert_eq!(got, expected(&written, limit));
    assert!(got.len() < written.len() / 3);
    // The last 10 records (one per key) are there, with their offsets.
    assert_eq!(&got[got.len() - 10..], &written[written.len() - 10..]);
    // A second pass finds nothing dirty; stats say so.
    let stats = log.cleaner_stats(&opts(), now_ms()).unwrap();
    assert_eq!(stats.dirty_bytes, 0, "{stats:?}");
    assert!(!stats.due);
    // Reopening accepts the gaps, the end offset is unchanged and appends go on.
    let end = log.log_end_offset();
    let log = reopen(log, dir.path());
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log), got);
    assert_eq!(append(&log, Some("key-0"), Some("after"), now_ms()), end);
}

#[test]
fn tombstones_live_for_delete_retention_after_their_clean() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let ts = now_ms() - 1000;
    let mut written = fill(&log, 3, 5, ts);
    let tomb = append(&log, Some("key-1"), None, ts);
    written.push((tomb, Some(b"key-1".to_vec()), None));
    written.extend(fill(&log, 1, 80, ts));
    let log = reopen(log, dir.path());
    let o = CleanOptions {
        delete_retention_ms: 60_000,
        ..opts()
    };
    let t0 = now_ms();
    log.clean(&o, t0, &mut || true).unwrap();
    let got = read_all(&log);
    assert!(
        got.iter().any(|r| r.0 == tomb && r.2.is_none()),
        "the tombstone stays at first"
    );
    assert!(!got
        .iter()
        .any(|r| r.1.as_deref() == Some(b"key-1") && r.0 != tomb));
    // More updates make the log dirty again; a pass within delete.retention.ms keeps it.
    let log = {
        fill(&log, 1, 80, ts);
        reopen(log, dir.path())
    };
    log.clean(&o, t0 + 30_000, &mut || true).unwrap();
    assert!(read_all(&log).iter().any(|r| r.0 == tomb));
    // After delete.retention.ms, the next pass removes it.
    let log = {
        fill(&log, 1, 80, ts);
        reopen(log, dir.path())
    };
    log.clean(&o, t0 + 60_001, &mut || true).unwrap();
    let got = read_all(&log);
    assert!(
        !got.iter().any(|r| r.1.as_deref() == Some(b"key-1")),
        "{got:?}"
    );
    assert!(got.iter().any(|r| r.1.as_deref() == Some(b"key-0")));
}

#[test]
fn records_newer_than_the_compaction_lag_stay() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let now = now_ms();
    let written = fill(&log, 5, 30, now);
    let log = reopen(log, dir.path());
    let o = CleanOptions {
        min_compaction_lag_ms: 3_600_000,
        ..opts()
    };
    let stats = log.cleaner_stats(&o, now + 1000).unwrap();
    assert_eq!(stats.dirty_bytes, 0);
    let out = log.clean(&o, now + 1000, &mut || true).unwrap();
    assert_eq!(out.records_removed, 0);
    assert_eq!(read_all(&log), written);
    // Two hours later they are old enough.
    let out = log.clean(&o, now + 7_200_000, &mut || true).unwrap();
    assert!(out.records_removed > 0);
    assert_eq!(read_all(&log), expected(&written, out.clean_to));
}

#[test]
fn max_compaction_lag_makes_a_clean_log_due() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let now = now_ms();
    fill(&log, 50, 2, now - 10_000);
    let log = reopen(log, dir.path());
    let o = CleanOptions {
        min_cleanable_dirty_ratio: 1.0,
        ..CleanOptions::default()
    };
    assert!(!log.cleaner_stats(&o, now).unwrap().due);
    let o = CleanOptions {
        max_compaction_lag_ms: 5_000,
        ..o
    };
    assert!(log.cleaner_stats(&o, now).unwrap().due);
}

#[test]
fn a_small_offset_map_cleans_in_several_passes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let written = fill(&log, 40, 8, now_ms() - 1000);
    let log = reopen(log, dir.path());
    let o = CleanOptions {
        dedupe_buffer_bytes: CLEANER_ENTRY_BYTES * 15,
        ..opts()
    };
    let mut passes = 0;
    let mut last = log.clean(&o, now_ms(), &mut || true).unwrap();
    assert!(last.partial, "{last:?}");
    passes += 1;
    while last.partial {
        let got = read_all(&log);
        // Nothing that should be kept is ever lost on the way.
        for r in expected(&written, i64::MAX) {
            assert!(got.contains(&r), "lost {r:?} after {passes} passes");
        }
        last = log.clean(&o, now_ms(), &mut || true).unwrap();
        passes += 1;
        assert!(passes < 100);
    }
    assert!(passes > 2, "{passes}");
    assert_eq!(read_all(&log), expected(&written, last.clean_to));
}

#[test]
fn keyless_records_are_removed_and_stopping_early_keeps_the_log_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let ts = now_ms() - 1000;
    append(&log, None, Some("keyless"), ts);
    let written = fill(&log, 4, 40, ts);
    let log = reopen(log, dir.path());
    // Stopped before the first segment: nothing changes.
    let out = log.clean(&opts(), now_ms(), &mut || false).unwrap();
    assert!(out.stopped);
    assert_eq!(read_all(&log).len(), written.len() + 1);
    let out = log.clean(&opts(), now_ms(), &mut || true).unwrap();
    let got = read_all(&log);
    assert!(got.iter().all(|r| r.1.is_some()));
    assert_eq!(got, expected(&written, out.clean_to));
}

/// A batch of three records of an idempotent producer (id 7, epoch 1, base sequence
/// `seq`), compressed with gzip.
fn producer_batch(seq: i32, keys: [&str; 3], ts: i64) -> Vec<u8> {
    let recs: Vec<NewRecord> = keys
        .iter()
        .map(|k| NewRecord {
            key: Some(k.as_bytes()),
            value: Some(b"v"),
            headers: vec![("h", Some(b"1"))],
        })
        .collect();
    let mut b = strom_records::build_compressed(strom_records::Codec::Gzip, ts, &recs).unwrap();
    b[43..51].copy_from_slice(&7i64.to_be_bytes());
    b[51..53].copy_from_slice(&1i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn split_batches_keep_codec_and_producer_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let ts = now_ms() - 1000;
    // Offsets 0..3: a, b, c; then b is updated: the first batch loses its middle record.
    log.append(&mut producer_batch(0, ["a", "b", "c"], ts))
        .unwrap();
    append(&log, Some("b"), Some("new"), ts);
    fill(&log, 2, 60, ts);
    let log = reopen(log, dir.path());
    log.clean(&opts(), now_ms(), &mut || true).unwrap();
    let r = log.read(0, 1 << 20).unwrap();
    let batches: Vec<_> = strom_records::decode_batches(&r.data).take(2).collect();
    let (h0, r0) = &batches[0];
    let (h1, r1) = &batches[1];
    assert_eq!((h0.base_offset, h0.last_offset()), (0, 0));
    assert_eq!((h1.base_offset, h1.last_offset()), (2, 2));
    for h in [h0, h1] {
        assert_eq!(h.compression(), 1);
        assert_eq!((h.producer_id, h.producer_epoch), (7, 1));
    }
    assert_eq!((h0.base_sequence, h1.base_sequence), (0, 2));
    assert_eq!(r0.as_ref().unwrap()[0].key, Some(Bytes::from_static(b"a")));
    assert_eq!(r1.as_ref().unwrap()[0].key, Some(Bytes::from_static(b"c")));
    assert_eq!(r1.as_ref().unwrap()[0].headers.len(), 1);
}

/// A log of 10 keys x 30 values, closed (sealed segments synced).
fn prepared(dir: &Path) -> (Log, Vec<Rec>) {
    let log = Log::open(dir, config()).unwrap();
    let written = fill(&log, 10, 30, now_ms() - 1000);
    (reopen(log, dir), written)
}

#[test]
fn a_crash_at_every_step_of_a_swap_leaves_the_log_whole() {
    let reference = tempfile::tempdir().unwrap();
    let (log, written) = prepared(reference.path());
    let out = log.clean(&opts(), now_ms(), &mut || true).unwrap();
    let cleaned = read_all(&log);
    assert_eq!(cleaned, expected(&written, out.clean_to));
    // 1-5: the swap of the first segment; 6: the removal of the second, left empty.
    for step in 1..=6u8 {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = prepared(dir.path());
        let original = read_all(&log);
        let end = log.log_end_offset();
        {
            let _crash = inject(dir.path(), Point::CleanerSwap(step));
            assert!(log.clean(&opts(), now_ms(), &mut || true).is_err());
        }
        // The process dies here: nothing is closed or flushed.
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(log.log_end_offset(), end, "step {step}");
        let got = read_all(&log);
        // Only the first segment was being swapped: it is either the old one (before the
        // commit point) or the cleaned one; every other segment is as it was.
        let first_end = log_first_segment_end(dir.path());
        let (head, tail): (Vec<_>, Vec<_>) = got.iter().cloned().partition(|r| r.0 < first_end);
        let old_head: Vec<_> = original
            .iter()
            .filter(|r| r.0 < first_end)
            .cloned()
            .collect();
        let new_head: Vec<_> = cleaned
            .iter()
            .filter(|r| r.0 < first_end)
            .cloned()
            .collect();
        if step <= 2 {
            assert_eq!(head, old_head, "step {step}: rolled back");
        } else {
            assert_eq!(head, new_head, "step {step}: rolled forward");
        }
        let old_tail: Vec<_> = original
            .iter()
            .filter(|r| r.0 >= first_end)
            .cloned()
            .collect();
        assert_eq!(tail, old_tail, "step {step}");
        // No temporary file is left, and the next pass completes the compaction.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
            .collect();
        assert!(leftovers.is_empty(), "step {step}: {leftovers:?}");
        log.clean(&opts(), now_ms(), &mut || true).unwrap();
        assert_eq!(read_all(&log), cleaned, "step {step}: completed");
        let log = reopen(log, dir.path());
        assert_eq!(read_all(&log), cleaned, "step {step}: reopened");
    }
}

/// Base offset of the second segment file in `dir`.
fn log_first_segment_end(dir: &Path) -> i64 {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases[1]
}

#[test]
fn a_compacted_log_opens_with_every_segment_checked() {
    // An unreadable recovery point makes the open check every segment from the first, with
    // holes treated as damage: the gaps the cleaner left are not holes.
    let dir = tempfile::tempdir().unwrap();
    let (log, written) = prepared(dir.path());
    let out = log.clean(&opts(), now_ms(), &mut || true).unwrap();
    let cleaned = read_all(&log);
    assert_eq!(cleaned, expected(&written, out.clean_to));
    let end = log.log_end_offset();
    log.close().unwrap();
    drop(log);
    for garbage in ["not a number\n", "0 full-check\n"] {
        std::fs::write(dir.path().join("recovery-point"), garbage).unwrap();
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(log.log_end_offset(), end, "{garbage:?}");
        assert_eq!(read_all(&log), cleaned, "{garbage:?}");
        log.close().unwrap();
    }
}

#[test]
fn a_segment_deleted_during_a_pass_is_not_swapped_back() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = prepared(dir.path());
    let second = log_first_segment_end(dir.path());
    let mut first = true;
    let out = log
        .clean(&opts(), now_ms(), &mut || {
            if first {
                // Retention (or DeleteRecords) takes the first segment while it is cleaned.
                assert_eq!(log.delete_segments_below(second).unwrap().segments, 1);
                first = false;
            }
            true
        })
        .unwrap();
    assert!(out.stopped, "{out:?}");
    assert_eq!(log.log_start_offset(), second);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("00000000000000000000.")),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
        "{names:?}"
    );
    // The next pass compacts what is left; a reopen agrees.
    log.clean(&opts(), now_ms(), &mut || true).unwrap();
    let got = read_all(&log);
    assert!(got.iter().all(|r| r.0 >= second));
    let log = reopen(log, dir.path());
    assert_eq!(read_all(&log), got);
    assert_eq!(log.log_start_offset(), second);
}
