//! Start-up that degrades per partition, and storage faults at run time, through the
//! broker's public API (faults injected with `strom_log::fault`).
//!
//! - A damaged topic file is moved aside and the topic rebuilt from its partition
//!   directories with retention off; without directories the file is only moved aside.
//! - A partition whose log cannot be opened (a deleted `.log` whose indexes remain, a
//!   missing directory) is offline: listed, every request answered with an offline error,
//!   the other partitions and topics serve.
//! - Unreadable `producer-ids` / `recovery-point` files and leftover temporary files do not
//!   stop the start.
//! - A creation that fails part way leaves nothing behind.
//! - A full disk fails appends (nothing stored, reads go on) until space returns; a failed
//!   sync takes the partition offline until a restart, which recovers every acknowledged
//!   record.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strom_broker::{Broker, BrokerConfig, BrokerError, FetchLimits, FetchSpec};
use strom_log::fault::{inject, Point};
use strom_log::{batch_headers, build_batch};

fn open(dir: &Path) -> Arc<Broker> {
    Broker::open(BrokerConfig::new(dir)).unwrap()
}

fn reopen(b: Arc<Broker>, dir: &Path) -> Arc<Broker> {
    b.shutdown().unwrap();
    drop(b);
    open(dir)
}

fn batch(i: usize) -> Vec<u8> {
    build_batch(1_000 + i as i64, &[format!("record-{i}").as_bytes()])
}

/// Every record value of a partition, in offset order (one uncompressed record per batch,
/// as [`batch`] makes them: its value ends the batch).
async fn values(b: &Broker, topic: &str, partition: i32) -> Result<Vec<String>, BrokerError> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let spec = FetchSpec {
            topic: topic.into(),
            partition,
            offset,
            max_bytes: 1 << 20,
        };
        let limits = FetchLimits {
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait: Duration::ZERO,
        };
        let r = b.fetch(&[spec], limits).await.remove(0)?;
        if r.data.is_empty() {
            return Ok(out);
        }
        for (pos, h) in batch_headers(&r.data) {
            let whole = &r.data[pos..pos + h.total_len()];
            let text = String::from_utf8_lossy(whole);
            let at = text.find("record-").expect("a record value");
            // The record ends with its header count (a zero varint).
            out.push(text[at..].trim_end_matches('\0').to_string());
            offset = h.last_offset() + 1;
        }
    }
}

async fn fill(b: &Broker, topic: &str, partitions: i32, per_partition: usize) {
    for p in 0..partitions {
        for i in 0..per_partition {
            b.produce(topic, p, &batch(i)).await.unwrap();
        }
    }
}

fn expected(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("record-{i}")).collect()
}

fn meta_file(dir: &Path, topic: &str) -> PathBuf {
    dir.join(".strom")
        .join("topics")
        .join(format!("{topic}.json"))
}

#[tokio::test]
async fn a_damaged_topic_file_is_rebuilt_from_the_partition_directories() {
    let damages: [&[u8]; 5] = [
        b"",
        b"{\"name\": \"bad\", \"id\"",
        &[0xff, 0x00, 0xfe, 0x7b],
        br#"{"name":"bad","id":"00","partitions":2147483647,"configs":{}}"#,
        br#"{"name":"other","id":"00","partitions":3,"configs":{}}"#,
    ];
    for damage in damages {
        let dir = tempfile::tempdir().unwrap();
        let b = open(dir.path());
        b.create_topic("good", 2, vec![], false).unwrap();
        let configs = vec![
            ("retention.ms".to_string(), "1000".to_string()),
            ("max.message.bytes".to_string(), "2048".to_string()),
        ];
        b.create_topic("bad", 3, configs, false).unwrap();
        fill(&b, "good", 2, 5).await;
        fill(&b, "bad", 3, 7).await;
        b.shutdown().unwrap();
        drop(b);
        fs::write(meta_file(dir.path(), "bad"), damage).unwrap();

        let b = open(dir.path());
        assert_eq!(values(&b, "good", 1).await.unwrap(), expected(5));
        let t = b.topic("bad").expect("rebuilt");
        assert_eq!(t.partitions().len(), 3, "{damage:?}");
        for p in 0..3 {
            assert_eq!(values(&b, "bad", p).await.unwrap(), expected(7));
        }
        let c = t.config();
        assert_eq!(c.get("retention.ms").unwrap(), ("-1".into(), true));
        assert_eq!(c.get("retention.bytes").unwrap(), ("-1".into(), true));
        assert!(
            !c.get("max.message.bytes").unwrap().1,
            "back to the default"
        );
        let aside = dir.path().join(".strom/topics/bad.json.damaged");
        assert_eq!(fs::read(&aside).unwrap(), damage, "moved aside as it was");
        // Saved: the next start loads it as it is.
        let id = t.id();
        let b = reopen(b, dir.path());
        assert_eq!(b.topic("bad").unwrap().id(), id);
        b.produce("bad", 2, &batch(7)).await.unwrap();
        assert_eq!(values(&b, "bad", 2).await.unwrap(), expected(8));
    }
}

#[tokio::test]
async fn a_damaged_topic_file_without_partitions_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic("kept", 1, vec![], false).unwrap();
    b.shutdown().unwrap();
    drop(b);
    fs::write(meta_file(dir.path(), "ghost"), b"garbage").unwrap();
    let b = open(dir.path());
    assert!(b.topic("ghost").is_none());
    assert!(b.topic("kept").is_some());
    assert!(!meta_file(dir.path(), "ghost").exists());
    assert!(dir.path().join(".strom/topics/ghost.json.damaged").exists());
}

#[tokio::test]
async fn a_partition_that_cannot_be_opened_is_offline_and_the_rest_serves() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic("t", 3, vec![], false).unwrap();
    b.create_topic("other", 1, vec![], false).unwrap();
    fill(&b, "t", 3, 4).await;
    fill(&b, "other", 1, 4).await;
    b.shutdown().unwrap();
    drop(b);
    // Partition 1 loses its segment data file (the indexes stay); partition 2 its directory.
    let seg = dir.path().join("t-1").join(format!("{:020}.log", 0));
    fs::remove_file(&seg).unwrap();
    fs::remove_dir_all(dir.path().join("t-2")).unwrap();

    let b = open(dir.path());
    let t = b.topic("t").unwrap();
    assert_eq!(t.partitions().len(), 3, "still listed");
    let p1 = b.partition("t", 1).unwrap();
    let reason = p1.offline_reason().expect("offline");
    assert!(reason.contains(&seg.display().to_string()), "{reason}");
    let reason = b.partition("t", 2).unwrap().offline_reason().unwrap();
    assert!(reason.contains("missing"), "{reason}");
    for p in [1, 2] {
        let e = b.produce("t", p, &batch(9)).await.unwrap_err();
        assert!(e.is_offline(), "{e}");
        assert!(values(&b, "t", p).await.unwrap_err().is_offline());
        assert!(b.list_offset("t", p, -1).unwrap_err().is_offline());
    }
    assert_eq!(values(&b, "t", 0).await.unwrap(), expected(4));
    assert_eq!(values(&b, "other", 0).await.unwrap(), expected(4));
    b.produce("t", 0, &batch(4)).await.unwrap();
    // Never silently recreated: still offline at the next start, and nothing was written.
    let b = reopen(b, dir.path());
    assert!(b.partition("t", 1).unwrap().offline_reason().is_some());
    assert!(!dir.path().join("t-2").exists());
    assert_eq!(values(&b, "t", 0).await.unwrap(), expected(5));
    // Deleting the topic removes the offline partitions' directories too.
    b.delete_topic("t").unwrap();
    assert!(!dir.path().join("t-1").exists());
}

#[tokio::test]
async fn unreadable_state_files_and_leftover_temporary_files_do_not_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic("t", 1, vec![], false).unwrap();
    let before: Vec<i64> = (0..3).map(|_| b.init_producer_id().unwrap()).collect();
    fill(&b, "t", 1, 6).await;
    b.shutdown().unwrap();
    drop(b);
    let d = dir.path();
    fs::write(d.join("producer-ids"), b"\x00garbage").unwrap();
    fs::write(d.join("t-0/recovery-point"), [0xc3, 0x28, 0xa0]).unwrap();
    let temps = [
        d.join("t-0/00000000000000000006.snapshot.tmp"),
        d.join("t-0/recovery-point.tmp"),
        d.join(".strom/topics/t.tmp"),
        d.join("producer-ids.tmp"),
    ];
    for t in &temps {
        fs::write(t, b"half written").unwrap();
    }
    let b = open(d);
    for t in &temps {
        assert!(!t.exists(), "{} removed", t.display());
    }
    assert_eq!(values(&b, "t", 0).await.unwrap(), expected(6));
    let id = b.init_producer_id().unwrap();
    assert!(before.iter().all(|&old| id > old), "{id} above {before:?}");
    let point = fs::read_to_string(d.join("t-0/recovery-point")).unwrap();
    assert_eq!(point.trim(), "0", "rewritten");
}

#[tokio::test]
async fn a_failed_creation_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let b = open(d);
    // A file where partition 3's directory should go fails the creation there.
    fs::write(d.join("c-3"), b"in the way").unwrap();
    assert!(b.create_topic("c", 5, vec![], false).is_err());
    assert!(b.topic("c").is_none());
    for i in [0, 1, 2, 4] {
        assert!(!d.join(format!("c-{i}")).exists(), "c-{i} removed");
    }
    assert!(d.join("c-3").is_file(), "what was there before stays");
    assert!(!meta_file(d, "c").exists());
    fs::remove_file(d.join("c-3")).unwrap();
    b.create_topic("c", 5, vec![], false).unwrap();
    b.produce("c", 4, &batch(0)).await.unwrap();

    // The metadata file cannot be written (a directory is in its place).
    fs::create_dir(meta_file(d, "m")).unwrap();
    assert!(b.create_topic("m", 2, vec![], false).is_err());
    assert!(!d.join("m-0").exists() && !d.join("m-1").exists());
    assert!(!d.join(".strom/topics/m.tmp").exists());
    fs::remove_dir(meta_file(d, "m")).unwrap();

    // Adding partitions that fails part way keeps the topic as it was.
    b.create_topic("g", 1, vec![], false).unwrap();
    fs::write(d.join("g-3"), b"in the way").unwrap();
    assert!(b.create_partitions("g", 5, false).is_err());
    assert_eq!(b.topic("g").unwrap().partitions().len(), 1);
    assert!(!d.join("g-1").exists() && !d.join("g-2").exists());
    fs::remove_file(d.join("g-3")).unwrap();
    b.create_partitions("g", 5, false).unwrap();
    let b = reopen(b, d);
    assert_eq!(b.topic("g").unwrap().partitions().len(), 5);
    assert_eq!(values(&b, "c", 4).await.unwrap(), expected(1));
}

#[tokio::test]
async fn a_full_disk_fails_appends_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let durable = vec![("flush.messages".to_string(), "1".to_string())];
    b.create_topic("t", 1, durable, false).unwrap();
    fill(&b, "t", 1, 3).await;
    {
        let _full = inject(&dir.path().join("t-0"), Point::DataWrite);
        for i in 0..5 {
            let e = b.produce("t", 0, &batch(3 + i)).await.unwrap_err();
            assert!(e.is_out_of_space(), "{e}");
            assert!(!e.is_offline());
        }
        assert_eq!(
            values(&b, "t", 0).await.unwrap(),
            expected(3),
            "reads go on"
        );
    }
    for i in 3..6 {
        let ack = b.produce("t", 0, &batch(i)).await.unwrap();
        assert_eq!(ack.base_offset, i as i64, "resumed at the same offset");
    }
    let b = reopen(b, dir.path());
    assert_eq!(values(&b, "t", 0).await.unwrap(), expected(6));
}

#[tokio::test]
async fn a_failed_sync_takes_the_partition_offline_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let durable = vec![("flush.messages".to_string(), "1".to_string())];
    b.create_topic("t", 2, durable, false).unwrap();
    fill(&b, "t", 2, 4).await;
    let fault = inject(&dir.path().join("t-0"), Point::Sync);
    // Appended, but the sync its acknowledgement waits for fails: never acknowledged.
    let (_, pending) = b.produce_deferred("t", 0, &batch(4)).unwrap();
    let e = b
        .wait_durable(pending.expect("a sync is due"))
        .await
        .unwrap_err();
    assert!(e.is_offline(), "{e}");
    drop(fault);
    let p = b.partition("t", 0).unwrap();
    assert!(p.offline_reason().is_some() && !p.is_online());
    for e in [
        b.produce("t", 0, &batch(5)).await.unwrap_err(),
        values(&b, "t", 0).await.unwrap_err(),
        b.list_offset("t", 0, -1).unwrap_err(),
    ] {
        assert!(e.is_offline(), "{e}");
    }
    // The other partition serves.
    b.produce("t", 1, &batch(4)).await.unwrap();
    assert_eq!(values(&b, "t", 1).await.unwrap(), expected(5));
    // A restart recovers the log from what is on disk: every acknowledged record.
    let b = reopen(b, dir.path());
    assert!(b.partition("t", 0).unwrap().is_online());
    let got = values(&b, "t", 0).await.unwrap();
    assert_eq!(got[..4], expected(4)[..]);
    b.produce("t", 0, &batch(9)).await.unwrap();
}
