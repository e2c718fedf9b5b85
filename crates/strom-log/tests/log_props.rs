//! Property tests: random batches appended and read back byte-identical (except the fields
//! the broker owns), offsets contiguous, across segment rolls and close/reopen.

use proptest::prelude::*;
use strom_log::{batch_headers, build_batch, Log, LogConfig};

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Vec<u8>>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..150), 1..20).prop_map(Op::Append),
        1 => Just(Op::Reopen),
    ]
}

fn config(segment_bytes: u64, index_interval_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// The batch as the log stores it, with the broker-owned base offset cleared.
fn normalised(batch: &[u8]) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[0..8].fill(0);
    b
}

/// Every batch of the log, read from offset 0 with a small budget (many reads).
fn read_all(log: &Log, budget: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, budget).unwrap();
        assert!(
            !r.data.is_empty(),
            "no data at {offset} below the end {}",
            log.log_end_offset()
        );
        for (pos, h) in batch_headers(&r.data) {
            if h.last_offset() < offset {
                continue;
            }
            assert_eq!(h.base_offset, offset, "offsets are contiguous");
            out.push(r.data[pos..pos + h.total_len()].to_vec());
            offset = h.last_offset() + 1;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn appended_batches_read_back_identical(
        ops in prop::collection::vec(op(), 1..40),
        segment_bytes in 1024u64..16_384,
        index_interval in 1u64..2048,
        budget in 1usize..20_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(segment_bytes.max(4096), index_interval);
        let mut log = Log::open(dir.path(), cfg).unwrap();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        let mut next = 0i64;
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Append(values) => {
                    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
                    let mut batch = build_batch(1_000 + i as i64, &refs);
                    let original = batch.clone();
                    // Every other append leaves the caller's bytes alone (stamped header
                    // copies written beside them).
                    let info = if i % 2 == 0 {
                        log.append(&mut batch).unwrap()
                    } else {
                        let info = log.append_shared(&batch).unwrap();
                        prop_assert_eq!(&batch, &original);
                        info
                    };
                    prop_assert_eq!(info.base_offset, next);
                    prop_assert_eq!(info.last_offset, next + values.len() as i64 - 1);
                    next = info.last_offset + 1;
                    prop_assert_eq!(normalised(&batch), normalised(&original));
                    expected.push(normalised(&original));
                }
                Op::Reopen => {
                    log.close().unwrap();
                    drop(log);
                    log = Log::open(dir.path(), cfg).unwrap();
                    prop_assert_eq!(log.log_end_offset(), next);
                }
            }
        }
        prop_assert_eq!(log.log_end_offset(), next);
        let got: Vec<Vec<u8>> = read_all(&log, budget).iter().map(|b| normalised(b)).collect();
        prop_assert_eq!(got, expected);
        // Every offset is readable on its own and lands in the batch that holds it.
        for o in 0..next {
            let r = log.read(o, 1).unwrap();
            let (_, h) = batch_headers(&r.data).next().unwrap();
            prop_assert!(h.base_offset <= o && o <= h.last_offset());
            // The file range of the same read: whole batches, a non-empty prefix of what
            // `read` returns with the same budget.
            let fr = log.read_range(o, budget).unwrap().range.unwrap();
            let mut bytes = vec![0u8; fr.len];
            std::os::unix::fs::FileExt::read_exact_at(&*fr.file, &mut bytes, fr.pos).unwrap();
            let whole: usize = batch_headers(&bytes).map(|(_, h)| h.total_len()).sum();
            prop_assert!(!bytes.is_empty() && whole == bytes.len());
            let full = log.read(o, budget).unwrap().data;
            prop_assert!(full.starts_with(&bytes));
        }
        prop_assert!(log.read_range(next, budget).unwrap().range.is_none());
    }
}
