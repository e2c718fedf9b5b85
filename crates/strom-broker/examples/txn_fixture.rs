//! Writes a data directory holding transactions through the core's own API (transactional
//! batches as a producer sends them, markers as the coordinator writes them), for the e2e
//! tests of the read side: `txn_fixture <data dir>` creates topic `rc-fix` (1 partition):
//!
//! | offset | record                       |
//! |--------|------------------------------|
//! | 0      | `p0` (not transactional)     |
//! | 1, 2   | `a1`, `a2` (producer A)      |
//! | 3      | ABORT marker of A            |
//! | 4      | `c1` (producer B)            |
//! | 5      | COMMIT marker of B           |
//! | 6      | `p1` (not transactional)     |
//! | 7      | `a3` (A)                     |
//! | 8      | ABORT marker of A            |
//! | 9      | `open1` (producer C, left open: transactional id `rc-fix-open` of the coordinator) |
//! | 10     | `p2` (not transactional)     |
//!
//! read_committed readers see `p0 c1 p1` (the last stable offset is 9); read_uncommitted
//! readers see every data record. The broker is shut down cleanly unless `--no-shutdown`.
//!
//! `txn_fixture <data dir> --bench <transactions>` instead writes topic `rc-bench`: that many
//! transactions of 100 records of 1 KiB (one batch each), every tenth aborted, for the
//! read_committed fetch benchmark (BENCHMARKS.md).

use std::sync::Arc;

use strom_broker::coordinator::{GroupConfig, GroupCoordinator};
use strom_broker::txn::{TxnConfig, TxnCoordinator, MAX_TIMEOUT_MS_DEFAULT};
use strom_broker::{Broker, BrokerConfig, TxnMarker};
use strom_records::{build_records, set_transactional, NewRecord};

fn batch(pid: i64, seq: i32, value: &str) -> Vec<u8> {
    let mut b = build_records(
        strom_log::now_ms(),
        &[NewRecord {
            value: Some(value.as_bytes()),
            ..Default::default()
        }],
    );
    if pid >= 0 {
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        set_transactional(&mut b);
    }
    b
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: txn_fixture <data dir> [--no-shutdown]");
    let flag = args.next();
    let shutdown = flag.as_deref() != Some("--no-shutdown");
    let b = Broker::open(BrokerConfig::new(&dir)).expect("open");
    b.set_txn_guard(Arc::new(AnyTxn));
    if flag.as_deref() == Some("--bench") {
        let n: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .expect("--bench <count>");
        bench_data(&b, n).await;
        b.shutdown().unwrap();
        return;
    }
    b.create_topic("rc-fix", 1, Vec::new(), false)
        .expect("topic");
    let (a, bb) = (b.init_producer_id().unwrap(), b.init_producer_id().unwrap());
    let marker = |pid, commit| TxnMarker {
        producer_id: pid,
        producer_epoch: 0,
        commit,
        coordinator_epoch: 0,
    };
    let t = "rc-fix";
    b.produce(t, 0, &batch(-1, -1, "p0")).await.unwrap();
    b.produce(t, 0, &batch(a, 0, "a1")).await.unwrap();
    b.produce(t, 0, &batch(a, 1, "a2")).await.unwrap();
    b.write_txn_marker(t, 0, marker(a, false)).await.unwrap();
    b.produce(t, 0, &batch(bb, 0, "c1")).await.unwrap();
    b.write_txn_marker(t, 0, marker(bb, true)).await.unwrap();
    b.produce(t, 0, &batch(-1, -1, "p1")).await.unwrap();
    b.produce(t, 0, &batch(a, 2, "a3")).await.unwrap();
    b.write_txn_marker(t, 0, marker(a, false)).await.unwrap();
    // C's transaction is a real one of the coordinator (transactional id `rc-fix-open`, 15
    // minutes of timeout), so that the broker keeps it open when it starts on this directory.
    let exists: strom_broker::coordinator::PartitionExists = {
        let b = b.clone();
        Arc::new(move |t: &str, p: i32| b.partition(t, p).is_ok())
    };
    let groups = GroupCoordinator::open(dir.as_ref(), GroupConfig::default(), exists).unwrap();
    let txns = TxnCoordinator::open(
        dir.as_ref(),
        TxnConfig::default(),
        b.clone(),
        groups.clone(),
    )
    .unwrap();
    let (c, epoch) = txns
        .init_producer_id("rc-fix-open", MAX_TIMEOUT_MS_DEFAULT, None)
        .await
        .unwrap();
    assert!(txns
        .add_partitions("rc-fix-open", c, epoch, &[(t.to_string(), 0)])
        .await
        .iter()
        .all(|(_, r)| r.is_ok()));
    b.produce(t, 0, &batch(c, 0, "open1")).await.unwrap();
    b.produce(t, 0, &batch(-1, -1, "p2")).await.unwrap();
    assert_eq!(b.last_stable_offset(t, 0).unwrap(), 9);
    txns.close();
    groups.close();
    if shutdown {
        b.shutdown().unwrap();
    } else {
        b.stop_waiting();
        // Synced by the markers' flushes and this one: only the snapshot at the end is
        // missing, as after a crash.
        b.partition(t, 0).unwrap().log().unwrap().flush().unwrap();
    }
}

async fn bench_data(b: &Broker, transactions: usize) {
    let t = "rc-bench";
    b.create_topic(t, 1, Vec::new(), false).expect("topic");
    let pid = b.init_producer_id().unwrap();
    let value = vec![b'x'; 1024];
    let recs: Vec<NewRecord<'_>> = (0..100)
        .map(|_| NewRecord {
            value: Some(&value),
            ..Default::default()
        })
        .collect();
    for i in 0..transactions {
        let mut batch = build_records(strom_log::now_ms(), &recs);
        batch[43..51].copy_from_slice(&pid.to_be_bytes());
        batch[51..53].copy_from_slice(&0i16.to_be_bytes());
        batch[53..57].copy_from_slice(&((i * 100) as i32).to_be_bytes());
        set_transactional(&mut batch);
        b.produce(t, 0, &batch).await.unwrap();
        let m = TxnMarker {
            producer_id: pid,
            producer_epoch: 0,
            commit: i % 10 != 9,
            coordinator_epoch: 0,
        };
        b.write_txn_marker(t, 0, m).await.unwrap();
    }
}

/// Lets every transactional batch through: these tests (and the fixture) drive the read side
/// without the transaction coordinator, which normally installs the produce check.
struct AnyTxn;

impl strom_broker::broker::TxnGuard for AnyTxn {
    fn check_produce(&self, _: &str, _: i32, _: i64, _: i16, _: bool) -> strom_broker::Result<()> {
        Ok(())
    }
}
