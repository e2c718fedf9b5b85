//! Compaction through the broker's public API: the cleaner picks a compacted topic's
//! partition and compacts it, leaves a delete topic alone, compacts a registered internal
//! log, and a keyless record to a compacted topic is INVALID_RECORD with nothing stored.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strom_broker::{Broker, BrokerConfig, BrokerError, FetchLimits, FetchSpec};
use strom_log::{BatchError, Log, LogConfig, LogError};
use strom_records::{build_records, decode_batches, NewRecord};

fn open(dir: &Path) -> Arc<Broker> {
    Broker::open(BrokerConfig::new(dir)).unwrap()
}

fn keyed(key: Option<&str>, value: &str) -> Vec<u8> {
    build_records(
        strom_log::now_ms() - 1000,
        &[NewRecord {
            key: key.map(str::as_bytes),
            value: Some(value.as_bytes()),
            headers: vec![],
        }],
    )
}

/// Every (offset, key, value) of partition 0.
async fn stored(b: &Broker, topic: &str) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let spec = FetchSpec {
            topic: topic.into(),
            partition: 0,
            offset,
            max_bytes: 1 << 20,
        };
        let limits = FetchLimits {
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait: Duration::ZERO,
        };
        let r = b.fetch(&[spec], limits).await.remove(0).unwrap();
        if r.data.is_empty() {
            return out;
        }
        for (h, rs) in decode_batches(&r.data) {
            for rec in rs.unwrap() {
                let s = |b: Option<bytes::Bytes>| String::from_utf8(b.unwrap().to_vec()).unwrap();
                out.push((rec.offset, s(rec.key), s(rec.value)));
            }
            offset = h.last_offset() + 1;
        }
    }
}

fn configs(policy: &str) -> Vec<(String, String)> {
    [
        ("cleanup.policy", policy),
        ("segment.bytes", "2048"),
        ("segment.ms", "1"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleaner_compacts_compacted_topics_only() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic("c", 1, configs("compact"), false).unwrap();
    b.create_topic("d", 1, configs("delete"), false).unwrap();
    for round in 0..20 {
        for k in 0..5 {
            for t in ["c", "d"] {
                let v = format!("{k}-{round}-{}", "x".repeat(50));
                b.produce(t, 0, &keyed(Some(&format!("k{k}")), &v))
                    .await
                    .unwrap();
            }
        }
    }
    // Rolls the last updates out of the active segment (segment.ms=1).
    tokio::time::sleep(Duration::from_millis(20)).await;
    for t in ["c", "d"] {
        b.produce(t, 0, &keyed(Some("end"), "end")).await.unwrap();
    }
    let before_d = stored(&b, "d").await;
    // The seal of the last segment runs in the background: retry until a pass did it.
    let mut done = false;
    for _ in 0..100 {
        let bb = b.clone();
        tokio::task::spawn_blocking(move || bb.clean_dirtiest())
            .await
            .unwrap();
        if stored(&b, "c").await.len() == 6 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(done, "not compacted: {:?}", stored(&b, "c").await);
    let got = stored(&b, "c").await;
    for k in 0..5 {
        let (o, _, v) = got.iter().find(|r| r.1 == format!("k{k}")).unwrap();
        assert_eq!(v, &format!("{k}-19-{}", "x".repeat(50)));
        assert_eq!(*o, 95 + k as i64, "offset unchanged");
    }
    assert_eq!(
        stored(&b, "d").await,
        before_d,
        "a delete topic is not compacted"
    );
    let m = b.cleaner_metrics();
    assert!(m.passes >= 1 && m.records_removed >= 95, "{m:?}");
    assert!(m.dirty_ratio.contains_key(&("c".to_string(), 0)));
    assert!(!m.dirty_ratio.contains_key(&("d".to_string(), 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_record_to_a_compacted_topic_is_invalid_record() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic("c", 1, configs("compact,delete"), false)
        .unwrap();
    let mut two = keyed(Some("k"), "fine");
    two.extend(keyed(None, "no key"));
    match b.produce("c", 0, &two).await {
        Err(BrokerError::Log(LogError::Batch(BatchError::InvalidRecord { index, message }))) => {
            assert_eq!(index, 0, "the index within its batch");
            assert!(message.contains("without key"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        stored(&b, "c").await.is_empty(),
        "nothing of the request stored"
    );
    b.produce("c", 0, &keyed(Some("k"), "v")).await.unwrap();
    assert_eq!(stored(&b, "c").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_internal_log_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let config = LogConfig {
        segment_bytes: 2048,
        retention_ms: None,
        ..LogConfig::default()
    };
    let log = Arc::new(Log::open(dir.path().join(".strom").join("kv"), config).unwrap());
    for i in 0..200 {
        log.append(&mut keyed(Some(&format!("k{}", i % 3)), &format!("v{i}")))
            .unwrap();
    }
    log.close().unwrap();
    drop(log);
    let log = Arc::new(Log::open(dir.path().join(".strom").join("kv"), config).unwrap());
    let before = log.size_bytes();
    b.add_compacted_log(".strom/kv", log.clone());
    let bb = b.clone();
    assert!(tokio::task::spawn_blocking(move || bb.clean_dirtiest())
        .await
        .unwrap());
    assert!(
        log.size_bytes() < before / 4,
        "{before} -> {}",
        log.size_bytes()
    );
    let m = b.cleaner_metrics();
    assert!(m.dirty_ratio.contains_key(&(".strom/kv".to_string(), -1)));
}
