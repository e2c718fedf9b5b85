use super::*;
use crate::coordinator::{GroupConfig, PartitionExists};
use crate::BrokerConfig;

fn meta() -> TxnMeta {
    TxnMeta::new("t1", 7, 60_000, 1_000)
}

#[test]
fn fencing_compares_id_and_epoch() {
    let mut m = meta();
    m.producer_epoch = 3;
    assert_eq!(m.check_producer(7, 3), Ok(()));
    assert_eq!(
        m.check_producer(8, 3),
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(m.check_producer(7, 2), Err(TxnError::ProducerFenced));
    assert_eq!(m.check_producer(7, 4), Err(TxnError::InvalidProducerEpoch));
}

#[test]
fn state_machine_moves_through_prepare_to_complete() {
    let mut m = meta();
    m.begin(2_000).unwrap();
    assert_eq!(m.state, TxnState::Ongoing);
    assert_eq!(m.start_ms, 2_000);
    m.partitions.insert(("a".into(), 0));
    // A second add keeps the transaction and its start.
    m.begin(3_000).unwrap();
    assert_eq!(m.start_ms, 2_000);
    assert!(!m.expired(62_000));
    assert!(m.expired(62_001));
    m.prepare(true, false, 4_000);
    assert_eq!(m.state, TxnState::PrepareCommit);
    assert_eq!(m.producer_epoch, 0);
    assert_eq!(m.begin(5_000), Err(TxnError::ConcurrentTransactions));
    m.complete(5_000);
    assert_eq!(m.state, TxnState::CompleteCommit);
    assert!(m.partitions.is_empty());
    // The next transaction starts from a completed one.
    m.begin(6_000).unwrap();
    m.prepare(false, true, 7_000);
    assert_eq!(m.state, TxnState::PrepareAbort);
    assert_eq!((m.producer_epoch, m.last_epoch), (1, 0));
    m.complete(8_000);
    assert_eq!(m.state, TxnState::CompleteAbort);
}

#[test]
fn the_store_encoding_round_trips() {
    let mut m = meta();
    m.begin(2).unwrap();
    m.partitions.insert(("topic".into(), 3));
    m.groups.insert("g".into());
    m.offsets.insert(
        ("g".into(), "in".into(), 1),
        PendingOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: Some("m".into()),
        },
    );
    m.v2 = true;
    let (k, v) = store::encode(&m);
    assert_eq!(store::decode(&k, v.as_deref()), Some(m));
}

fn open(dir: &Path) -> (Arc<Broker>, Arc<GroupCoordinator>, Arc<TxnCoordinator>) {
    let broker = Broker::open(BrokerConfig::new(dir)).unwrap();
    let b = broker.clone();
    let exists: PartitionExists = Arc::new(move |t: &str, p: i32| b.partition(t, p).is_ok());
    let groups = GroupCoordinator::open(dir, GroupConfig::default(), exists).unwrap();
    let txns =
        TxnCoordinator::open(dir, TxnConfig::default(), broker.clone(), groups.clone()).unwrap();
    (broker, groups, txns)
}

fn txn_batch(pid: i64, epoch: i16, seq: i32, value: &[u8]) -> Vec<u8> {
    let r = strom_records::Record {
        offset: 0,
        timestamp: strom_log::now_ms(),
        key: None,
        value: Some(bytes::Bytes::copy_from_slice(value)),
        headers: Vec::new(),
    };
    let mut b = strom_records::rebuild(
        &[r],
        Some(strom_records::ProducerFields {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        }),
    );
    strom_records::set_transactional(&mut b);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_abort_fencing_and_recovery_of_a_prepared_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, groups, txns) = open(dir.path());
    broker.create_topic("t", 1, vec![], false).unwrap();
    assert!(matches!(
        txns.init_producer_id("tx", 900_001, None).await,
        Err(TxnError::InvalidTransactionTimeout(900_001, 900_000))
    ));
    let (pid, epoch) = txns.init_producer_id("tx", 60_000, None).await.unwrap();
    assert_eq!(epoch, 0);
    // A transactional batch for a partition not in the transaction: refused, not written.
    let e = broker
        .produce("t", 0, &txn_batch(pid, epoch, 0, b"x"))
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        BrokerError::Transaction(TxnError::InvalidTxnState(_))
    ));
    assert_eq!(broker.list_offset("t", 0, -1).unwrap().0, 0);
    // Commit: the records and the marker, the stable offset past the marker.
    let added = txns
        .add_partitions("tx", pid, epoch, &[("t".into(), 0)])
        .await;
    assert!(added.iter().all(|(_, r)| r.is_ok()));
    broker
        .produce("t", 0, &txn_batch(pid, epoch, 0, b"a"))
        .await
        .unwrap();
    assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 0);
    txns.add_offsets("tx", pid, epoch, "g").await.unwrap();
    txns.txn_offset_commit(
        "tx",
        "g",
        pid,
        epoch,
        vec![(
            "t".into(),
            0,
            PendingOffset {
                offset: 5,
                leader_epoch: -1,
                metadata: None,
            },
        )],
    )
    .await
    .unwrap();
    assert!(txns.has_pending_offset("g", "t", 0));
    assert_eq!(groups.fetch_offsets("g", None), vec![]);
    txns.end_txn("tx", pid, epoch, true, false).await.unwrap();
    // Answered once PrepareCommit is durable; the markers follow.
    txns.settled("tx").await;
    assert_eq!(txns.describe("tx").unwrap().state, TxnState::CompleteCommit);
    assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 2);
    assert!(!txns.has_pending_offset("g", "t", 0));
    assert_eq!(
        groups.fetch_offsets("g", None)[0]
            .2
            .as_ref()
            .unwrap()
            .offset,
        5
    );
    // A retried EndTxn is answered as it was; the opposite is refused.
    txns.end_txn("tx", pid, epoch, true, false).await.unwrap();
    assert!(matches!(
        txns.end_txn("tx", pid, epoch, false, false).await,
        Err(TxnError::InvalidTxnState(_))
    ));
    // A new instance fences the old one.
    let (pid2, epoch2) = txns.init_producer_id("tx", 60_000, None).await.unwrap();
    assert_eq!((pid2, epoch2), (pid, 1));
    let r = txns
        .add_partitions("tx", pid, epoch, &[("t".into(), 0)])
        .await;
    assert_eq!(r[0].1, Err(TxnError::ProducerFenced));
    assert_eq!(
        txns.end_txn("tx", pid, epoch, true, false).await,
        Err(TxnError::ProducerFenced)
    );
    // A transaction left in PrepareCommit by a crash is completed at the next start.
    txns.add_partitions("tx", pid2, epoch2, &[("t".into(), 0)])
        .await;
    broker
        .produce("t", 0, &txn_batch(pid2, epoch2, 0, b"b"))
        .await
        .unwrap();
    txns.update("tx", |m| {
        m.prepare(true, false, strom_log::now_ms());
        Ok(())
    })
    .unwrap();
    txns.close();
    groups.close();
    broker.shutdown().unwrap();
    drop((broker, groups, txns));
    let (broker, _groups, txns) = open(dir.path());
    assert_eq!(txns.describe("tx").unwrap().state, TxnState::PrepareCommit);
    assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 2);
    txns.tick_once().await;
    assert_eq!(txns.describe("tx").unwrap().state, TxnState::CompleteCommit);
    assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_transaction_is_aborted_with_an_epoch_bump() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _groups, txns) = open(dir.path());
    broker.create_topic("t", 1, vec![], false).unwrap();
    let (pid, epoch) = txns.init_producer_id("tx", 50, None).await.unwrap();
    txns.add_partitions("tx", pid, epoch, &[("t".into(), 0)])
        .await;
    broker
        .produce("t", 0, &txn_batch(pid, epoch, 0, b"a"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    txns.tick_once().await;
    let m = txns.describe("tx").unwrap();
    assert_eq!(m.state, TxnState::CompleteAbort);
    assert_eq!(m.producer_epoch, epoch + 1);
    assert_eq!(broker.metrics().txn_timed_out.load(Ordering::Relaxed), 1);
    assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 2);
    // The zombie's batch and EndTxn are fenced; KIP-360 recovery at the old epoch works.
    assert!(broker
        .produce("t", 0, &txn_batch(pid, epoch, 1, b"z"))
        .await
        .is_err());
    assert_eq!(
        txns.end_txn("tx", pid, epoch, true, false).await,
        Err(TxnError::ProducerFenced)
    );
    let (p, e) = txns
        .init_producer_id("tx", 50, Some((pid, epoch)))
        .await
        .unwrap();
    assert_eq!((p, e), (pid, epoch + 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_v2_add_partitions_by_produce_and_bump_per_end() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _groups, txns) = open(dir.path());
    broker.create_topic("t", 1, vec![], false).unwrap();
    let (pid, epoch) = txns.init_producer_id("tx", 60_000, None).await.unwrap();
    let batch = txn_batch(pid, epoch, 0, b"a");
    broker.produce_deferred_txn("t", 0, &batch, true).unwrap();
    assert!(txns
        .describe("tx")
        .unwrap()
        .partitions
        .contains(&("t".to_string(), 0)));
    let (p, e) = txns.end_txn("tx", pid, epoch, true, true).await.unwrap();
    assert_eq!((p, e), (pid, epoch + 1));
    // Its retry at the old epoch is answered with the new one.
    assert_eq!(
        txns.end_txn("tx", pid, epoch, true, true).await.unwrap(),
        (pid, epoch + 1)
    );
    assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleaner_keeps_the_newest_state_of_each_transactional_id() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    // Small segments, so that the states written below fill many sealed ones.
    let store = store::Store::open_with(dir.path(), 4096).unwrap();
    let mut metas: Vec<TxnMeta> = (0..3)
        .map(|i| TxnMeta::new(&format!("t{i}"), i, 60_000, 0))
        .collect();
    for round in 1..=300i64 {
        for m in &mut metas {
            m.begin(round).unwrap();
            m.partitions.insert(("a".into(), (round % 4) as i32));
            m.prepare(round % 3 != 0, true, round);
            m.complete(round);
        }
        store.write(&metas.iter().collect::<Vec<_>>()).unwrap();
    }
    // The last transaction of t0 stays open: an Ongoing state must survive compaction too.
    metas[0].begin(301).unwrap();
    metas[0].partitions.insert(("b".into(), 1));
    store.write(&[&metas[0]]).unwrap();
    store.close();
    drop(store);

    let store = store::Store::open_with(dir.path(), 4096).unwrap();
    let log = store.log();
    let before = log.size_bytes();
    broker.add_compacted_log(".strom/txn", log.clone());
    let b = broker.clone();
    assert!(tokio::task::spawn_blocking(move || b.clean_dirtiest())
        .await
        .unwrap());
    assert!(
        log.size_bytes() < before / 4,
        "{before} -> {}",
        log.size_bytes()
    );
    let mut want = metas.clone();
    want.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    assert_eq!(store.replay().unwrap(), want, "the states after a pass");
    store.close();
    drop(store);
    let store = store::Store::open_with(dir.path(), 4096).unwrap();
    assert_eq!(store.replay().unwrap(), want, "the states after reopening");
    assert_eq!(metas[0].state, TxnState::Ongoing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_transaction_waits_for_the_markers_of_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _groups, txns) = open(dir.path());
    broker.create_topic("t", 1, vec![], false).unwrap();
    let (pid, epoch) = txns.init_producer_id("tx", 60_000, None).await.unwrap();
    for round in 0..20 {
        let added = txns
            .add_partitions("tx", pid, epoch, &[("t".into(), 0)])
            .await;
        // Never CONCURRENT_TRANSACTIONS: the previous transaction's completion is waited for.
        assert!(added.iter().all(|(_, r)| r.is_ok()), "{round}: {added:?}");
        broker
            .produce("t", 0, &txn_batch(pid, epoch, round, b"a"))
            .await
            .unwrap();
        txns.end_txn("tx", pid, epoch, round % 2 == 0, false)
            .await
            .unwrap();
    }
    txns.settled("tx").await;
    assert_eq!(txns.describe("tx").unwrap().state, TxnState::CompleteAbort);
    // 20 records and 20 markers, all stable.
    assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_whose_state_was_lost_is_aborted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _groups, txns) = open(dir.path());
    broker.create_topic("t", 1, vec![], false).unwrap();
    let (pid, epoch) = txns.init_producer_id("tx", 60_000, None).await.unwrap();
    txns.add_partitions("tx", pid, epoch, &[("t".into(), 0)])
        .await;
    broker
        .produce("t", 0, &txn_batch(pid, epoch, 0, b"a"))
        .await
        .unwrap();
    // The coordinator still has it open: nothing to do.
    txns.abort_orphans().await;
    assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 0);
    // As after a machine crash that lost the unsynced Ongoing state: the coordinator's last
    // synced state is the Empty one of InitProducerId.
    txns.update("tx", |m| {
        m.state = TxnState::Empty;
        m.partitions.clear();
        Ok(())
    })
    .unwrap();
    txns.abort_orphans().await;
    assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 2);
    let producers = broker.producers("t", 0).unwrap();
    assert_eq!(producers[0].current_txn_start_offset, -1, "{producers:?}");
}
