//! Delayed delivery and dedup by message id through the broker's public API: what a produce
//! answers, what the partition holds, and both across a reopen.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strom_broker::{Broker, BrokerConfig, BrokerError, FetchLimits, FetchSpec};
use strom_log::{BatchError, LogError};
use strom_records::{build_records, decode_batches, NewRecord};

fn open(dir: &Path) -> Arc<Broker> {
    Broker::open(BrokerConfig::new(dir)).unwrap()
}

fn batch(records: &[(&str, &[(&str, &str)])]) -> Vec<u8> {
    let recs: Vec<NewRecord<'_>> = records
        .iter()
        .map(|(v, hs)| NewRecord {
            key: None,
            value: Some(v.as_bytes()),
            headers: hs.iter().map(|(k, v)| (*k, Some(v.as_bytes()))).collect(),
        })
        .collect();
    build_records(strom_log::now_ms(), &recs)
}

/// Every (offset, value, headers) of partition 0.
async fn stored(b: &Broker, topic: &str) -> Vec<(i64, String, Vec<(Bytes, Option<Bytes>)>)> {
    let spec = FetchSpec {
        topic: topic.into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
    };
    let limits = FetchLimits {
        max_bytes: 1 << 20,
        min_bytes: 1,
        max_wait: Duration::ZERO,
    };
    let r = b.fetch(&[spec], limits).await.remove(0).unwrap();
    decode_batches(&r.data)
        .flat_map(|(_, rs)| rs.unwrap())
        .map(|r| {
            let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            (r.offset, v, r.headers)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_acks_the_first_offset_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic("t", 1, vec![], false).unwrap();
    b.produce("t", 0, &batch(&[("plain", &[])])).await.unwrap();
    let a = b
        .produce("t", 0, &batch(&[("x1", &[("strom.msg.id", "X")])]))
        .await
        .unwrap();
    assert_eq!(a.base_offset, 1);
    // A mixed batch: one duplicate, one new, one duplicate of a record of the same batch.
    let m = b
        .produce(
            "t",
            0,
            &batch(&[
                ("x2", &[("strom.msg.id", "X")]),
                ("y", &[("strom.msg.id", "Y")]),
                ("y2", &[("strom.msg.id", "Y")]),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(m.record_offsets, Some(vec![1, 2, 2]));
    assert_eq!(
        b.metrics()
            .dedup_hits
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let values: Vec<String> = stored(&b, "t").await.into_iter().map(|r| r.1).collect();
    assert_eq!(values, ["plain", "x1", "y"]);
    b.shutdown().unwrap();
    drop(b);
    // After a reopen the window is rebuilt from the log.
    let b = open(dir.path());
    let again = b
        .produce("t", 0, &batch(&[("x3", &[("strom.msg.id", "X")])]))
        .await
        .unwrap();
    assert_eq!(again.base_offset, 1);
    assert_eq!(stored(&b, "t").await.len(), 3);
    // A window of 0 disables dedup.
    b.alter_topic_config(
        "t",
        &[strom_broker::ConfigOp::Set(
            "strom.dedup.window.ms".into(),
            "0".into(),
        )],
        false,
    )
    .unwrap();
    let off = b
        .produce("t", 0, &batch(&[("x4", &[("strom.msg.id", "X")])]))
        .await
        .unwrap();
    assert_eq!(off.base_offset, 3);
    b.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_records_land_when_due_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic("t", 1, vec![], false).unwrap();
    let start = strom_log::now_ms();
    let ack = b
        .produce(
            "t",
            0,
            &batch(&[
                ("now", &[]),
                ("later", &[("strom.delay.ms", "600")]),
                ("much-later", &[("strom.delay.ms", "60000")]),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(ack.record_offsets, Some(vec![0, -1, -1]));
    assert_eq!(b.delayed_pending(), 2);
    b.deliver_due();
    assert_eq!(stored(&b, "t").await.len(), 1, "nothing is due yet");
    // Survives a reopen.
    b.shutdown().unwrap();
    drop(b);
    let b = open(dir.path());
    assert_eq!(b.delayed_pending(), 2);
    while strom_log::now_ms() < start + 600 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.deliver_due();
    }
    b.deliver_due();
    let got = stored(&b, "t").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].1, "later");
    let keys: Vec<&[u8]> = got[1].2.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(keys, [&b"strom.delay.ms"[..], b"strom.delay.id"]);
    assert_eq!(b.delayed_pending(), 1);
    b.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_delay_headers_refuse_the_produce_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic(
        "t",
        1,
        vec![("strom.delay.max.ms".into(), "1000".into())],
        false,
    )
    .unwrap();
    for v in ["soon", "-1", "1001", ""] {
        let e = b
            .produce(
                "t",
                0,
                &batch(&[("ok", &[]), ("bad", &[("strom.delay.ms", v)])]),
            )
            .await
            .unwrap_err();
        match e {
            BrokerError::Log(LogError::Batch(BatchError::InvalidRecord { index: 1, .. })) => {}
            other => panic!("{v:?}: {other:?}"),
        }
    }
    assert!(stored(&b, "t").await.is_empty());
    assert_eq!(b.delayed_pending(), 0);
    b.shutdown().unwrap();
}

/// A run of due records is cut to the target's `max.message.bytes`: records that came in
/// separate produces, each within it, are delivered however many are due at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_stay_within_the_targets_max_message_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic(
        "t",
        1,
        vec![("max.message.bytes".into(), "2000".into())],
        false,
    )
    .unwrap();
    let value = "v".repeat(600);
    for _ in 0..5 {
        b.produce("t", 0, &batch(&[(&value, &[("strom.delay.ms", "100")])]))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    b.deliver_due();
    assert_eq!(stored(&b, "t").await.len(), 5);
    assert_eq!(b.delayed_pending(), 0);
    b.shutdown().unwrap();
}
