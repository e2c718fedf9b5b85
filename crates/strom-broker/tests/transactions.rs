//! The read side of transactions through the broker's public API: transactional batches
//! (strom-records' builders with the transactional attribute) and `write_txn_marker` move
//! the last stable offset, ABORT markers index aborted ranges, read_committed fetches and
//! ListOffsets stop at the stable offset, and all of it survives a reopen.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strom_broker::{
    AbortedTxn, Broker, BrokerConfig, FetchLimits, FetchSpec, Isolation, TxnMarker,
};
use strom_records::{build_records, decode_batches, set_transactional, NewRecord};

fn open(dir: &Path) -> Arc<Broker> {
    let b = Broker::open(BrokerConfig::new(dir)).unwrap();
    b.set_txn_guard(Arc::new(AnyTxn));
    b
}

/// A batch of `values` from producer `pid`/`epoch` at sequence `seq`, transactional or not.
fn batch(pid: i64, epoch: i16, seq: i32, values: &[&str], txn: bool) -> Vec<u8> {
    let recs: Vec<NewRecord<'_>> = values
        .iter()
        .map(|v| NewRecord {
            value: Some(v.as_bytes()),
            ..Default::default()
        })
        .collect();
    let mut b = build_records(strom_log::now_ms(), &recs);
    if pid >= 0 {
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
    }
    // Sets the attribute and the CRC (over the producer fields too).
    set_transactional(&mut b);
    if !txn {
        b[21..23].copy_from_slice(&0i16.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    b
}

fn marker(pid: i64, epoch: i16, commit: bool) -> TxnMarker {
    TxnMarker {
        producer_id: pid,
        producer_epoch: epoch,
        commit,
        coordinator_epoch: 3,
    }
}

const NO_WAIT: FetchLimits = FetchLimits {
    max_bytes: 1 << 20,
    min_bytes: 1,
    max_wait: Duration::ZERO,
};

/// (values of the data records returned, aborted, last stable offset) of a fetch from 0.
async fn read(
    b: &Broker,
    isolation: Isolation,
    ranges: bool,
) -> (Vec<String>, Vec<AbortedTxn>, i64) {
    let spec = FetchSpec {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
    };
    let mut r = b.fetch_isolated(&[spec], NO_WAIT, ranges, isolation).await;
    let f = r.remove(0).unwrap();
    let data = match &f.file {
        Some(range) => {
            let mut buf = vec![0u8; range.len];
            std::os::unix::fs::FileExt::read_exact_at(&*range.file, &mut buf, range.pos).unwrap();
            bytes::Bytes::from(buf)
        }
        None => f.data.clone(),
    };
    let values = decode_batches(&data)
        .flat_map(|(_, rs)| rs.unwrap())
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect();
    (values, f.aborted, f.last_stable_offset)
}

#[tokio::test]
async fn stable_offset_aborted_ranges_and_read_committed() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic("t", 1, vec![], false).unwrap();
    let (pa, pb) = (b.init_producer_id().unwrap(), b.init_producer_id().unwrap());
    b.produce("t", 0, &batch(-1, -1, -1, &["plain0", "plain1"], false))
        .await
        .unwrap();
    assert_eq!(b.last_stable_offset("t", 0).unwrap(), 2);
    // A's transaction from offset 2, B's from 4.
    b.produce("t", 0, &batch(pa, 0, 0, &["a0", "a1"], true))
        .await
        .unwrap();
    b.produce("t", 0, &batch(pb, 0, 0, &["b0"], true))
        .await
        .unwrap();
    assert_eq!(b.last_stable_offset("t", 0).unwrap(), 2);
    for ranges in [false, true] {
        let (values, aborted, lso) = read(&b, Isolation::ReadCommitted, ranges).await;
        assert_eq!(
            (values, aborted, lso),
            (vec!["plain0".into(), "plain1".into()], vec![], 2)
        );
    }
    assert_eq!(read(&b, Isolation::ReadUncommitted, false).await.0.len(), 5);
    assert_eq!(
        b.list_offset_isolated("t", 0, -1, Isolation::ReadCommitted)
            .unwrap(),
        (2, -1)
    );
    assert_eq!(b.list_offset("t", 0, -1).unwrap(), (5, -1));
    let described = b.producers("t", 0).unwrap();
    let a = described.iter().find(|p| p.producer_id == pa).unwrap();
    assert_eq!((a.current_txn_start_offset, a.last_sequence), (2, 1));

    // A aborts (marker at 5): B still holds the stable offset at 4.
    assert_eq!(
        b.write_txn_marker("t", 0, marker(pa, 0, false))
            .await
            .unwrap(),
        5
    );
    assert_eq!(b.last_stable_offset("t", 0).unwrap(), 4);
    // A's data continues: still a transaction of B's open, then more of A (a new one).
    b.produce("t", 0, &batch(pb, 0, 1, &["b1"], true))
        .await
        .unwrap(); // 6
    assert_eq!(
        b.write_txn_marker("t", 0, marker(pb, 0, true))
            .await
            .unwrap(),
        7
    );
    assert_eq!(b.last_stable_offset("t", 0).unwrap(), 8);
    for ranges in [false, true] {
        let (values, aborted, lso) = read(&b, Isolation::ReadCommitted, ranges).await;
        assert_eq!(lso, 8);
        // The aborted records are returned with their range: the client drops them.
        assert_eq!(values, ["plain0", "plain1", "a0", "a1", "b0", "b1"]);
        assert_eq!(
            aborted,
            vec![AbortedTxn {
                producer_id: pa,
                first_offset: 2
            }]
        );
    }
    // A read cut before the aborted transaction lists none of it.
    for ranges in [false, true] {
        let spec = FetchSpec {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1,
        };
        let one = FetchLimits {
            max_bytes: 1,
            ..NO_WAIT
        };
        let f = b
            .fetch_isolated(&[spec], one, ranges, Isolation::ReadCommitted)
            .await
            .remove(0)
            .unwrap();
        assert!(!f.is_empty());
        assert_eq!(f.aborted, vec![], "ranges {ranges}");
    }
    let a = b.producers("t", 0).unwrap();
    let a = a.iter().find(|p| p.producer_id == pa).unwrap();
    assert_eq!((a.current_txn_start_offset, a.coordinator_epoch), (-1, 3));
    // A fenced epoch: refused, nothing written.
    b.produce("t", 0, &batch(pa, 1, 0, &["a2"], true))
        .await
        .unwrap(); // 8, epoch 1
    assert!(b
        .write_txn_marker("t", 0, marker(pa, 0, true))
        .await
        .is_err());
    assert_eq!(b.list_offset("t", 0, -1).unwrap(), (9, -1));
    assert_eq!(b.last_stable_offset("t", 0).unwrap(), 8);
    // A client cannot write a marker.
    let control = strom_records::build_control(
        1,
        pa,
        1,
        strom_records::ControlMarker {
            commit: true,
            coordinator_epoch: 0,
        },
    );
    assert!(b.produce("t", 0, &control).await.is_err());
    assert_eq!(b.list_offset("t", 0, -1).unwrap(), (9, -1));
}

#[tokio::test]
async fn read_committed_long_poll_wakes_at_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic("t", 1, vec![], false).unwrap();
    let pid = b.init_producer_id().unwrap();
    b.produce("t", 0, &batch(pid, 0, 0, &["x"], true))
        .await
        .unwrap();
    let spec = FetchSpec {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
    };
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let limits = FetchLimits {
                max_wait: Duration::from_secs(10),
                ..NO_WAIT
            };
            let started = std::time::Instant::now();
            let r = b
                .fetch_isolated(&[spec], limits, false, Isolation::ReadCommitted)
                .await;
            (r.into_iter().next().unwrap().unwrap(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.write_txn_marker("t", 0, marker(pid, 0, true))
        .await
        .unwrap();
    let (f, waited) = waiter.await.unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "woken by the marker, not the timeout"
    );
    assert_eq!(f.last_stable_offset, 2);
    assert!(!f.data.is_empty());
}

#[tokio::test]
async fn transactions_and_aborted_ranges_survive_reopen() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (pa, pb);
        {
            let b = open(dir.path());
            b.create_topic("t", 1, vec![("segment.bytes".into(), "1024".into())], false)
                .unwrap();
            pa = b.init_producer_id().unwrap();
            pb = b.init_producer_id().unwrap();
            // A: aborted after many batches (segments roll, snapshots are written with
            // A's transaction open); B: left open.
            for i in 0..30 {
                b.produce(
                    "t",
                    0,
                    &batch(pa, 0, i, &["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"], true),
                )
                .await
                .unwrap();
            }
            b.produce("t", 0, &batch(pb, 0, 0, &["b0"], true))
                .await
                .unwrap(); // 30
            assert_eq!(
                b.write_txn_marker("t", 0, marker(pa, 0, false))
                    .await
                    .unwrap(),
                31
            );
            assert_eq!(b.last_stable_offset("t", 0).unwrap(), 30);
            if clean {
                b.shutdown().unwrap();
            }
            // Else: dropped without a shutdown (no snapshot at the end: replay).
        }
        if !clean {
            // The index entry lost as if the crash came before it: rebuilt from the log.
            for e in std::fs::read_dir(dir.path().join("t-0")).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "txnindex") {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
        let b = open(dir.path());
        assert_eq!(b.last_stable_offset("t", 0).unwrap(), 30, "clean {clean}");
        let p = b.producers("t", 0).unwrap();
        let find = |id| p.iter().find(|x| x.producer_id == id).unwrap();
        assert_eq!(find(pb).current_txn_start_offset, 30);
        assert_eq!(find(pa).current_txn_start_offset, -1);
        b.write_txn_marker("t", 0, marker(pb, 0, true))
            .await
            .unwrap(); // 32
        assert_eq!(b.last_stable_offset("t", 0).unwrap(), 33);
        let mut all = Vec::new();
        let mut offset = 0;
        while offset < 33 {
            let spec = FetchSpec {
                topic: "t".into(),
                partition: 0,
                offset,
                max_bytes: 1 << 20,
            };
            let f = b
                .fetch_isolated(&[spec], NO_WAIT, false, Isolation::ReadCommitted)
                .await
                .remove(0)
                .unwrap();
            for a in &f.aborted {
                if !all.contains(a) {
                    all.push(*a);
                }
            }
            let last = strom_records::headers(&f.data).last().unwrap().1;
            offset = last.last_offset() + 1;
        }
        assert_eq!(
            all,
            vec![AbortedTxn {
                producer_id: pa,
                first_offset: 0
            }],
            "clean {clean}"
        );
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
