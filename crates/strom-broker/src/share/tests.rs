use super::*;
use crate::records::{build_batch, NewRecord};
use crate::BrokerConfig;

// --- the state machine alone -------------------------------------------------------------

fn policy() -> Policy {
    Policy::resolve(&ShareConfig::default(), None, None)
}

fn spans(first: i64, last: i64) -> Vec<BatchSpan> {
    vec![BatchSpan {
        base: first,
        last,
        control: false,
    }]
}

fn no_jitter(_: i64) -> i64 {
    0
}

#[test]
fn acquire_ack_release_and_the_start_offset() {
    let p = policy();
    let (m1, m2): (Arc<str>, Arc<str>) = (Arc::from("m1"), Arc::from("m2"));
    let mut sp = SharePartition::new(0);
    let a = sp.acquire(&spans(0, 9), &m1, 1000, &p, 4);
    assert_eq!(
        a,
        vec![AcquiredRecords {
            first_offset: 0,
            last_offset: 3,
            delivery_count: 1
        }]
    );
    // The next member gets the next records, not the same ones.
    let b = sp.acquire(&spans(0, 9), &m2, 1000, &p, 100);
    assert_eq!((b[0].first_offset, b[0].last_offset), (4, 9));
    // m2 cannot acknowledge m1's records; nothing changes.
    assert!(matches!(
        sp.check_ack("m2", 0, 0, &[AckType::Accept], None, 1001),
        Err(AckRefused::InvalidRecordState(_))
    ));
    sp.check_ack("m1", 0, 1, &[AckType::Accept], None, 1001)
        .unwrap();
    sp.apply_ack(0, 1, &[AckType::Accept], 1001, &p, &mut no_jitter);
    assert_eq!(sp.spso, 2, "the start moves past accepted records");
    sp.apply_ack(3, 3, &[AckType::Release], 1001, &p, &mut no_jitter);
    assert_eq!(sp.spso, 2, "a hole of unfinished records holds the start");
    // The released record goes to whoever asks next, with delivery count 2.
    let c = sp.acquire(&spans(2, 9), &m2, 1002, &p, 100);
    assert_eq!(
        c,
        vec![AcquiredRecords {
            first_offset: 3,
            last_offset: 3,
            delivery_count: 2
        }]
    );
    assert_eq!(sp.redeliveries, 1);
    // Per-offset types; a wrong count of types is a malformed request.
    assert!(matches!(
        sp.check_ack("m1", 2, 2, &[AckType::Accept, AckType::Accept], None, 1003),
        Err(AckRefused::InvalidRequest(_))
    ));
}

#[test]
fn lock_expiry_backoff_and_the_delivery_limit() {
    let mut p = policy();
    p.lock_ms = 100;
    p.backoff_ms = 1000;
    p.delivery_limit = 3;
    let m: Arc<str> = Arc::from("m");
    let mut sp = SharePartition::new(0);
    sp.acquire(&spans(0, 0), &m, 0, &p, 10);
    assert_eq!(sp.expire_locks(99, &p, &mut no_jitter), 0);
    assert_eq!(sp.expire_locks(100, &p, &mut no_jitter), 1);
    assert_eq!(sp.lock_expiries, 1);
    // An expired lock cannot be acknowledged.
    assert!(sp
        .check_ack("m", 0, 0, &[AckType::Accept], None, 100)
        .is_err());
    // Backoff: 1000 × 2^(1-1) after the first delivery.
    assert_eq!(sp.acquirable_from(1099, p.max_locks), Some(1));
    assert!(sp.acquire(&spans(0, 0), &m, 1099, &p, 10).is_empty());
    let again = sp.acquire(&spans(0, 0), &m, 1100, &p, 10);
    assert_eq!(again[0].delivery_count, 2);
    sp.apply_ack(0, 0, &[AckType::Release], 1200, &p, &mut no_jitter);
    // 1000 × 2^(2-1).
    assert!(sp.acquire(&spans(0, 0), &m, 3199, &p, 10).is_empty());
    assert_eq!(
        sp.acquire(&spans(0, 0), &m, 3200, &p, 10)[0].delivery_count,
        3
    );
    // At the limit a release archives it (no DLQ topic set): the start moves on.
    sp.apply_ack(0, 0, &[AckType::Release], 3300, &p, &mut no_jitter);
    assert_eq!(sp.spso, 1);
    assert!(sp.recs.is_empty());
}

#[test]
fn rejects_and_the_limit_go_to_the_dead_letter_state_when_a_dlq_is_set() {
    let mut p = policy();
    p.dead_letter = Some("dlq".into());
    p.delivery_limit = 2;
    p.lock_ms = 10;
    let m: Arc<str> = Arc::from("m");
    let mut sp = SharePartition::new(0);
    sp.acquire(&spans(0, 1), &m, 0, &p, 10);
    sp.apply_ack(0, 0, &[AckType::Reject], 1, &p, &mut no_jitter);
    sp.expire_locks(10, &p, &mut no_jitter);
    sp.acquire(&spans(1, 1), &m, 10, &p, 10);
    sp.expire_locks(20, &p, &mut no_jitter);
    assert_eq!(
        sp.dead_letters(10),
        vec![
            (0, 1, DeadLetterReason::Rejected),
            (1, 2, DeadLetterReason::DeliveryCountLimit)
        ]
    );
    assert_eq!(sp.spso, 0, "not finished until copied");
    sp.archive_dead_letter(0, true);
    sp.archive_dead_letter(1, true);
    assert_eq!((sp.spso, sp.dead_lettered), (2, 2));
}

#[test]
fn the_window_is_bounded_by_max_record_locks() {
    let mut p = policy();
    p.max_locks = 5;
    let m: Arc<str> = Arc::from("m");
    let mut sp = SharePartition::new(0);
    let a = sp.acquire(&spans(0, 99), &m, 0, &p, 1000);
    assert_eq!((a[0].first_offset, a[0].last_offset), (0, 4));
    assert_eq!(sp.recs.len(), 5);
    assert_eq!(
        sp.acquirable_from(0, p.max_locks),
        None,
        "full: nothing more"
    );
    assert!(sp.acquire(&spans(5, 99), &m, 0, &p, 1000).is_empty());
    // Accepting the first two frees two slots.
    sp.apply_ack(0, 1, &[AckType::Accept], 1, &p, &mut no_jitter);
    let b = sp.acquire(&spans(5, 99), &m, 1, &p, 1000);
    assert_eq!((b[0].first_offset, b[0].last_offset), (5, 6));
    assert_eq!(sp.recs.len(), 5);
}

#[test]
fn renew_extends_the_lock_and_stale_delivery_counts_are_refused() {
    let mut p = policy();
    p.lock_ms = 100;
    let m: Arc<str> = Arc::from("m");
    let mut sp = SharePartition::new(0);
    sp.acquire(&spans(0, 0), &m, 0, &p, 1);
    sp.apply_ack(0, 0, &[AckType::Renew], 90, &p, &mut no_jitter);
    assert_eq!(sp.expire_locks(150, &p, &mut no_jitter), 0);
    assert!(sp
        .check_ack("m", 0, 0, &[AckType::Accept], Some(2), 150)
        .is_err());
    sp.check_ack("m", 0, 0, &[AckType::Accept], Some(1), 150)
        .unwrap();
}

#[test]
fn control_batches_and_holes_are_archived_not_delivered() {
    let p = policy();
    let m: Arc<str> = Arc::from("m");
    let mut sp = SharePartition::new(0);
    let batches = [
        BatchSpan {
            base: 0,
            last: 1,
            control: false,
        },
        BatchSpan {
            base: 2,
            last: 2,
            control: true,
        },
        BatchSpan {
            base: 5,
            last: 5,
            control: false,
        },
    ];
    let a = sp.acquire(&batches, &m, 0, &p, 100);
    assert_eq!(
        a.iter()
            .map(|r| (r.first_offset, r.last_offset))
            .collect::<Vec<_>>(),
        vec![(0, 1), (5, 5)]
    );
    sp.apply_ack(0, 1, &[AckType::Accept], 1, &p, &mut no_jitter);
    assert_eq!(sp.spso, 5, "2 (control) and 3-4 (holes) are finished");
}

#[test]
fn persisted_runs_replay_with_acquired_records_available_again() {
    let p = policy();
    let m: Arc<str> = Arc::from("m");
    let mut sp = SharePartition::new(10);
    sp.acquire(&spans(10, 14), &m, 0, &p, 100);
    sp.apply_ack(11, 11, &[AckType::Accept], 1, &p, &mut no_jitter);
    let mut replayed = SharePartition::new(0);
    replayed.load_runs(sp.spso, &sp.runs(), true);
    assert_eq!(replayed.spso, 10);
    assert_eq!(replayed.end(), 15);
    let again = replayed.acquire(&spans(10, 14), &m, 5, &p, 100);
    assert_eq!(
        again
            .iter()
            .map(|r| (r.first_offset, r.last_offset, r.delivery_count))
            .collect::<Vec<_>>(),
        vec![(10, 10, 2), (12, 14, 2)],
        "the accepted record is not delivered again; the others keep their count"
    );
}

// --- the coordinator over a real broker --------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    broker: Arc<Broker>,
    share: Arc<ShareCoordinator>,
}

fn open(path: &Path, config: ShareConfig) -> (Arc<Broker>, Arc<ShareCoordinator>) {
    let broker = Broker::open(BrokerConfig::new(path)).unwrap();
    let share = ShareCoordinator::open(path, config, broker.clone(), None).unwrap();
    (broker, share)
}

fn fixture(config: ShareConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (broker, share) = open(&path, config);
    broker.create_topic("t", 1, Vec::new(), false).unwrap();
    Fixture {
        _dir: dir,
        path,
        broker,
        share,
    }
}

async fn produce(b: &Broker, n: usize) {
    let values: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    let recs: Vec<NewRecord<'_>> = values
        .iter()
        .map(|v| NewRecord {
            key: Some(b"k"),
            value: Some(v.as_bytes()),
            headers: vec![("h", Some(b"x"))],
        })
        .collect();
    b.produce("t", 0, &build_batch(1, &recs)).await.unwrap();
}

async fn join(s: &ShareCoordinator, member: &str) -> ShareHeartbeatOutcome {
    s.heartbeat(ShareHeartbeat {
        group: "g".into(),
        member_id: member.into(),
        member_epoch: 0,
        subscribed_topics: Some(vec!["t".into()]),
        client_id: "test".into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn earliest(s: &ShareCoordinator) {
    s.alter_group_configs(
        "g",
        &[ConfigOp::Set(AUTO_OFFSET_RESET.into(), "earliest".into())],
        false,
    )
    .await
    .unwrap();
}

fn limits(max_records: usize, wait_ms: u64) -> AcquireLimits {
    AcquireLimits {
        max_records,
        max_bytes: 1 << 20,
        max_wait: Duration::from_millis(wait_ms),
    }
}

async fn take(s: &ShareCoordinator, member: &str, n: usize) -> Vec<AcquiredRecords> {
    let out = s
        .acquire("g", member, &[("t".into(), 0)], limits(n, 0))
        .await
        .unwrap();
    out.into_iter().flat_map(|p| p.acquired).collect()
}

fn offsets(a: &[AcquiredRecords]) -> Vec<i64> {
    a.iter()
        .flat_map(|r| r.first_offset..=r.last_offset)
        .collect()
}

fn ack(first: i64, last: i64, t: AckType) -> AckRange {
    AckRange {
        first_offset: first,
        last_offset: last,
        types: vec![t],
        delivery_count: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_epochs_assignment_and_leave() {
    let f = fixture(ShareConfig::default());
    let a = join(&f.share, "a").await;
    assert_eq!(a.member_epoch, 1);
    assert_eq!(a.assignment.len(), 1);
    assert_eq!(a.assignment[0].partitions, vec![0]);
    let b = join(&f.share, "b").await;
    assert_eq!(b.member_epoch, 2, "every join bumps the group epoch");
    // A stale epoch is fenced; an unknown member is unknown.
    let hb = |member: &str, epoch: i32| ShareHeartbeat {
        group: "g".into(),
        member_id: member.into(),
        member_epoch: epoch,
        ..Default::default()
    };
    assert_eq!(
        f.share.heartbeat(hb("a", 7)).await.unwrap_err(),
        ShareError::FencedMemberEpoch
    );
    assert_eq!(
        f.share.heartbeat(hb("zz", 1)).await.unwrap_err(),
        ShareError::UnknownMemberId
    );
    let again = f.share.heartbeat(hb("a", 1)).await.unwrap();
    assert_eq!(again.member_epoch, 1, "no change, no new epoch");
    let d = f.share.describe("g").unwrap();
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.state, ShareGroupState::Stable);
    assert_eq!(
        f.share.heartbeat(hb("a", -1)).await.unwrap().member_epoch,
        -1
    );
    f.share.leave("g", "b").await.unwrap();
    assert_eq!(f.share.describe("g").unwrap().state, ShareGroupState::Empty);
    assert_eq!(
        f.share.list(),
        vec![ShareGroupListing {
            group: "g".into(),
            state: ShareGroupState::Empty
        }]
    );
    f.share.delete_group("g").await.unwrap();
    assert!(f.share.describe("g").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_goes_to_one_member_and_accepted_ones_survive_a_reopen() {
    let f = fixture(ShareConfig::default());
    earliest(&f.share).await;
    produce(&f.broker, 10).await;
    join(&f.share, "a").await;
    join(&f.share, "b").await;
    let a = take(&f.share, "a", 6).await;
    let b = take(&f.share, "b", 100).await;
    assert_eq!(offsets(&a), (0..6).collect::<Vec<_>>());
    assert_eq!(offsets(&b), (6..10).collect::<Vec<_>>());
    f.share
        .acknowledge("g", "a", "t", 0, &[ack(0, 3, AckType::Accept)])
        .await
        .unwrap();
    // b may not acknowledge a's records: refused, nothing changes.
    let e = f
        .share
        .acknowledge("g", "b", "t", 0, &[ack(4, 7, AckType::Accept)])
        .await
        .unwrap_err();
    assert!(matches!(e, ShareError::InvalidRecordState(_)), "{e:?}");
    f.share
        .acknowledge("g", "b", "t", 0, &[ack(6, 6, AckType::Accept)])
        .await
        .unwrap();
    assert_eq!(f.share.offsets("g", None).unwrap()[0].start_offset, 4);
    // "kill": reopen without close (every change was synced before it was answered).
    let path = f.path.clone();
    drop(f.share);
    f.broker.shutdown().unwrap();
    let (broker, share) = open(&path, ShareConfig::default());
    join(&share, "c").await;
    let out = share
        .acquire("g", "c", &[("t".into(), 0)], limits(100, 0))
        .await
        .unwrap();
    let got: Vec<(i64, u16)> = out[0]
        .acquired
        .iter()
        .flat_map(|r| (r.first_offset..=r.last_offset).map(move |o| (o, r.delivery_count)))
        .collect();
    assert_eq!(
        got,
        vec![(4, 2), (5, 2), (7, 2), (8, 2), (9, 2)],
        "accepted ones never again; the others are back with their delivery count"
    );
    // The batches returned hold the records.
    let decoded: Vec<i64> = strom_records::decode_batches(&out[0].records)
        .flat_map(|(_, r)| r.unwrap())
        .map(|r| r.offset)
        .collect();
    assert!(decoded.contains(&4) && decoded.contains(&9));
    drop(share);
    broker.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_on_an_append() {
    let f = fixture(ShareConfig::default());
    join(&f.share, "a").await;
    // latest: nothing yet; the poll waits for the append.
    let share = f.share.clone();
    let poll = tokio::spawn(async move {
        share
            .acquire("g", "a", &[("t".into(), 0)], limits(10, 5000))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    produce(&f.broker, 3).await;
    let out = poll.await.unwrap();
    assert_eq!(offsets(&out[0].acquired), vec![0, 1, 2]);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_expiry_and_session_expiry_release_records() {
    let f = fixture(ShareConfig {
        tick_ms: 10,
        ..ShareConfig::default()
    });
    earliest(&f.share).await;
    f.share
        .alter_group_configs(
            "g",
            &[
                ConfigOp::Set(RECORD_LOCK_DURATION_MS.into(), "1000".into()),
                ConfigOp::Set(SESSION_TIMEOUT_MS.into(), "2000".into()),
            ],
            false,
        )
        .await
        .unwrap();
    tokio::spawn(f.share.clone().run());
    produce(&f.broker, 2).await;
    join(&f.share, "a").await;
    assert_eq!(offsets(&take(&f.share, "a", 1).await), vec![0]);
    // The lock expires after 1 s: record 0 is acquirable again (delivery 2).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = f
        .share
        .acknowledge("g", "a", "t", 0, &[ack(0, 0, AckType::Accept)])
        .await
        .unwrap_err();
    assert!(matches!(e, ShareError::InvalidRecordState(_)));
    join(&f.share, "b").await;
    let b = take(&f.share, "b", 2).await;
    assert_eq!(
        (b[0].first_offset, b[0].delivery_count),
        (0, 2),
        "the expired record comes first"
    );
    // "a" stops heartbeating: its session expires (2 s after its join).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(f
        .share
        .describe("g")
        .unwrap()
        .members
        .iter()
        .all(|m| m.member_id != "a"));
    let m = f.share.metrics();
    assert_eq!(m[0].lock_expiries, 3, "a: 1, then b: 2 : {m:?}");
    f.share.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_exhausted_records_reach_the_dead_letter_topic() {
    let f = fixture(ShareConfig {
        tick_ms: 10,
        ..ShareConfig::default()
    });
    earliest(&f.share).await;
    f.share
        .alter_group_configs(
            "g",
            &[
                ConfigOp::Set(DLQ_TOPIC.into(), "t.dlq".into()),
                ConfigOp::Set(DELIVERY_COUNT_LIMIT.into(), "2".into()),
            ],
            false,
        )
        .await
        .unwrap();
    tokio::spawn(f.share.clone().run());
    produce(&f.broker, 2).await;
    join(&f.share, "a").await;
    take(&f.share, "a", 2).await;
    f.share
        .acknowledge(
            "g",
            "a",
            "t",
            0,
            &[ack(0, 0, AckType::Reject), ack(1, 1, AckType::Release)],
        )
        .await
        .unwrap();
    let again = take(&f.share, "a", 2).await;
    assert_eq!(offsets(&again), vec![1]);
    f.share
        .acknowledge("g", "a", "t", 0, &[ack(1, 1, AckType::Release)])
        .await
        .unwrap();
    // Both end in t.dlq, with their headers.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let records = loop {
        if let Ok(p) = f.broker.partition("t.dlq", 0) {
            let read = p.log().unwrap().read(0, 1 << 20).unwrap();
            let rs: Vec<_> = strom_records::decode_batches(&read.data)
                .flat_map(|(_, r)| r.unwrap())
                .collect();
            if rs.len() >= 2 {
                break rs;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let header = |r: &strom_records::Record, k: &str| {
        r.headers
            .iter()
            .find(|(hk, _)| &hk[..] == k.as_bytes())
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    let mut seen: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
            assert_eq!(header(r, "h").as_deref(), Some("x"), "own headers kept");
            assert_eq!(header(r, dlq_headers::TOPIC).as_deref(), Some("t"));
            assert_eq!(header(r, dlq_headers::GROUP).as_deref(), Some("g"));
            assert_eq!(header(r, dlq_headers::PARTITION).as_deref(), Some("0"));
            (
                header(r, dlq_headers::OFFSET).unwrap(),
                header(r, dlq_headers::DELIVERY_COUNT).unwrap(),
                header(r, dlq_headers::REASON).unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("0".into(), "1".into(), "CLIENT_REJECTED".into()),
            (
                "1".into(),
                "2".into(),
                "MAX_DELIVERY_ATTEMPTS_REACHED".into()
            )
        ]
    );
    // Then archived: the start moved past both.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = &f.share.metrics()[0];
    assert_eq!((s.start_offset, s.dead_lettered), (2, 2));
    f.share.close();
}

#[tokio::test]
async fn a_delayed_records_dead_letter_copy_is_not_delayed_again() {
    let f = fixture(ShareConfig {
        tick_ms: 10,
        ..ShareConfig::default()
    });
    earliest(&f.share).await;
    f.share
        .alter_group_configs(
            "g",
            &[ConfigOp::Set(DLQ_TOPIC.into(), "t.dlq".into())],
            false,
        )
        .await
        .unwrap();
    tokio::spawn(f.share.clone().run());
    let rec = NewRecord {
        key: Some(b"k"),
        value: Some(b"later"),
        headers: vec![("strom.delay.ms", Some(b"30"))],
    };
    f.broker
        .produce("t", 0, &build_batch(1, std::slice::from_ref(&rec)))
        .await
        .unwrap();
    // Delivered into t when due.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f
        .broker
        .partition("t", 0)
        .unwrap()
        .log()
        .unwrap()
        .log_end_offset()
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
        f.broker.deliver_due();
    }
    join(&f.share, "a").await;
    assert_eq!(offsets(&take(&f.share, "a", 1).await), vec![0]);
    f.share
        .acknowledge("g", "a", "t", 0, &[ack(0, 0, AckType::Reject)])
        .await
        .unwrap();
    // The copy is stored at once (nothing calls deliver_due any more), without the delay.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let copy = loop {
        if let Ok(p) = f.broker.partition("t.dlq", 0) {
            let read = p.log().unwrap().read(0, 1 << 20).unwrap();
            let first = strom_records::decode_batches(&read.data)
                .flat_map(|(_, r)| r.unwrap())
                .next();
            if let Some(r) = first {
                break r;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead-letter copy was not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(copy.value.as_deref(), Some(&b"later"[..]));
    let keys: Vec<&[u8]> = copy.headers.iter().map(|(k, _)| k.as_ref()).collect();
    assert!(!keys.contains(&&b"strom.delay.ms"[..]), "{keys:?}");
    assert!(keys.contains(&&b"strom.delay.id"[..]), "{keys:?}");
    assert_eq!(f.broker.delayed_pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_configs_are_validated_and_durable() {
    let f = fixture(ShareConfig::default());
    for (n, v) in [
        ("share.nope", "1"),
        (RECORD_LOCK_DURATION_MS, "soon"),
        (AUTO_OFFSET_RESET, "by_duration:forever"),
    ] {
        let e = f
            .share
            .alter_group_configs("g", &[ConfigOp::Set(n.into(), v.into())], false)
            .await
            .unwrap_err();
        assert!(matches!(e, ShareError::InvalidConfig(_)), "{n}={v}: {e:?}");
    }
    // One bad op refuses the whole request.
    let e = f
        .share
        .alter_group_configs(
            "g",
            &[
                ConfigOp::Set(DELIVERY_COUNT_LIMIT.into(), "3".into()),
                ConfigOp::Set(DELIVERY_COUNT_LIMIT.into(), "0".into()),
            ],
            false,
        )
        .await;
    assert!(e.is_err());
    assert!(f.share.group_configs("g").iter().all(|c| c.is_default));
    f.share
        .alter_group_configs(
            "g",
            &[ConfigOp::Set(RETRY_BACKOFF_MS.into(), "250".into())],
            false,
        )
        .await
        .unwrap();
    let path = f.path.clone();
    drop(f.share);
    f.broker.shutdown().unwrap();
    let (broker, share) = open(&path, ShareConfig::default());
    let c = share.group_configs("g");
    let b = c.iter().find(|c| c.name == RETRY_BACKOFF_MS).unwrap();
    assert_eq!((b.value.as_str(), b.is_default), ("250", false));
    drop(share);
    broker.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_log_is_rewritten_and_replays_the_same_state() {
    let f = fixture(ShareConfig {
        rewrite_after_bytes: 4096,
        ..ShareConfig::default()
    });
    earliest(&f.share).await;
    produce(&f.broker, 300).await;
    join(&f.share, "a").await;
    for _ in 0..100 {
        let a = take(&f.share, "a", 3).await;
        let o = offsets(&a);
        f.share
            .acknowledge("g", "a", "t", 0, &[ack(o[0], o[0], AckType::Accept)])
            .await
            .unwrap();
    }
    let before = f.share.store.size_bytes();
    assert!(f.share.store.wants_rewrite(4096));
    f.share.rewrite().unwrap();
    let after = f.share.store.size_bytes();
    assert!(after < before / 4, "{before} -> {after}");
    let stats = f.share.metrics();
    let path = f.path.clone();
    drop(f.share);
    f.broker.shutdown().unwrap();
    let (broker, share) = open(&path, ShareConfig::default());
    let replayed = share.metrics();
    assert_eq!(
        (
            replayed[0].start_offset,
            replayed[0].end_offset,
            replayed[0].in_flight
        ),
        (
            stats[0].start_offset,
            stats[0].end_offset,
            stats[0].in_flight
        )
    );
    assert_eq!(
        replayed[0].available,
        stats[0].available + stats[0].acquired
    );
    drop(share);
    broker.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_partitions_of_a_deleted_topic_go_with_it() {
    let f = fixture(ShareConfig {
        tick_ms: 10,
        ..ShareConfig::default()
    });
    earliest(&f.share).await;
    produce(&f.broker, 3).await;
    join(&f.share, "a").await;
    take(&f.share, "a", 3).await;
    assert_eq!(f.share.metrics().len(), 1);
    tokio::spawn(f.share.clone().run());
    f.broker.delete_topic("t").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !f.share.metrics().is_empty() {
        assert!(std::time::Instant::now() < deadline, "still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = f.path.clone();
    f.share.close();
    drop(f.share);
    f.broker.shutdown().unwrap();
    let (broker, share) = open(&path, ShareConfig::default());
    assert!(share.metrics().is_empty(), "and the deletion is durable");
    drop(share);
    broker.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_all_gives_back_a_members_records_and_it_stays_a_member() {
    let f = fixture(ShareConfig::default());
    earliest(&f.share).await;
    produce(&f.broker, 4).await;
    join(&f.share, "a").await;
    join(&f.share, "b").await;
    assert_eq!(offsets(&take(&f.share, "a", 4).await), vec![0, 1, 2, 3]);
    assert!(take(&f.share, "b", 4).await.is_empty());
    f.share.release_all("g", "a").await.unwrap();
    let b = take(&f.share, "b", 4).await;
    assert_eq!(offsets(&b), vec![0, 1, 2, 3]);
    assert!(b.iter().all(|r| r.delivery_count == 2));
    assert_eq!(f.share.describe("g").unwrap().members.len(), 2);
    assert_eq!(f.share.held_by("g", "b"), 4);
    assert_eq!(f.share.held_by("g", "a"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_offset_reset_by_duration_starts_at_the_first_recent_record() {
    let f = fixture(ShareConfig::default());
    produce(&f.broker, 3).await; // timestamp 1: decades old
    let now = strom_log::now_ms();
    let recent: Vec<NewRecord<'_>> = (0..2)
        .map(|_| NewRecord {
            key: None,
            value: Some(b"new"),
            headers: vec![],
        })
        .collect();
    f.broker
        .produce("t", 0, &build_batch(now, &recent))
        .await
        .unwrap();
    f.share
        .alter_group_configs(
            "g",
            &[ConfigOp::Set(
                AUTO_OFFSET_RESET.into(),
                "by_duration:PT1H".into(),
            )],
            false,
        )
        .await
        .unwrap();
    join(&f.share, "a").await;
    assert_eq!(offsets(&take(&f.share, "a", 10).await), vec![3, 4]);
    assert_eq!(f.share.offsets("g", None).unwrap()[0].start_offset, 3);
}

#[tokio::test]
async fn an_acquisition_answers_the_windows_worth_of_batches_whatever_max_bytes() {
    let f = fixture(ShareConfig::default());
    earliest(&f.share).await;
    // ~4 MiB of small records in batches of 1,000.
    let value = vec![b'x'; 100];
    for _ in 0..32 {
        let recs: Vec<NewRecord<'_>> = (0..1000)
            .map(|_| NewRecord {
                key: None,
                value: Some(&value),
                headers: vec![],
            })
            .collect();
        f.broker
            .produce("t", 0, &build_batch(1, &recs))
            .await
            .unwrap();
    }
    join(&f.share, "a").await;
    let out = f
        .share
        .acquire(
            "g",
            "a",
            &[("t".into(), 0)],
            AcquireLimits {
                max_records: 100_000,
                max_bytes: 64 << 20,
                max_wait: Duration::ZERO,
            },
        )
        .await
        .unwrap();
    let bytes: usize = out.iter().map(|p| p.records.len()).sum();
    let acquired: i64 = out
        .iter()
        .flat_map(|p| &p.acquired)
        .map(|r| r.last_offset - r.first_offset + 1)
        .sum();
    // The window (2,000 records) bounds what is acquired, and the answer holds only the
    // batches of the acquired records.
    assert_eq!(acquired, 2000);
    assert!(
        bytes <= ACQUIRE_READ_BYTES,
        "{bytes} bytes for 2,000 small records"
    );
    f.share.close();
}

#[tokio::test]
async fn the_record_lock_duration_is_the_groups_or_the_brokers() {
    let f = fixture(ShareConfig::default());
    assert_eq!(
        f.share.record_lock_duration_ms("g"),
        ShareConfig::default().record_lock_duration_ms
    );
    f.share
        .alter_group_configs(
            "g",
            &[ConfigOp::Set(RECORD_LOCK_DURATION_MS.into(), "4000".into())],
            false,
        )
        .await
        .unwrap();
    assert_eq!(f.share.record_lock_duration_ms("g"), 4000);
    assert_eq!(
        f.share.record_lock_duration_ms("other"),
        ShareConfig::default().record_lock_duration_ms
    );
    f.share.close();
}

/// A transactional batch of `n` records from producer `pid` (epoch 0) at sequence `seq`.
async fn produce_txn(b: &Broker, pid: i64, seq: i32, n: usize) {
    let values: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let recs: Vec<NewRecord<'_>> = values
        .iter()
        .map(|v| NewRecord {
            value: Some(v.as_bytes()),
            ..Default::default()
        })
        .collect();
    let mut batch = build_batch(1, &recs);
    batch[43..51].copy_from_slice(&pid.to_be_bytes());
    batch[51..53].copy_from_slice(&0i16.to_be_bytes());
    batch[53..57].copy_from_slice(&seq.to_be_bytes());
    strom_records::set_transactional(&mut batch);
    b.produce("t", 0, &batch).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_share_groups_stop_at_the_stable_offset_and_skip_aborted_records() {
    let f = fixture(ShareConfig::default());
    f.broker.set_txn_guard(Arc::new(AnyTxn));
    join(&f.share, "a").await;
    earliest(&f.share).await;
    f.share
        .alter_group_configs(
            "g",
            &[ConfigOp::Set(
                ISOLATION_LEVEL.into(),
                "read_committed".into(),
            )],
            false,
        )
        .await
        .unwrap();
    let (pa, pb) = (
        f.broker.init_producer_id().unwrap(),
        f.broker.init_producer_id().unwrap(),
    );
    let marker = |pid, commit| crate::TxnMarker {
        producer_id: pid,
        producer_epoch: 0,
        commit,
        coordinator_epoch: 0,
    };
    produce(&f.broker, 2).await; // 0, 1
    produce_txn(&f.broker, pa, 0, 2).await; // 2, 3: to be aborted
    produce_txn(&f.broker, pb, 0, 1).await; // 4: open
    assert_eq!(offsets(&take(&f.share, "a", 100).await), vec![0, 1]);
    f.broker
        .write_txn_marker("t", 0, marker(pa, false))
        .await
        .unwrap(); // 5
                   // B still holds the stable offset at 4; A's records are never delivered.
    assert!(take(&f.share, "a", 100).await.is_empty());
    let share = f.share.clone();
    let poll = tokio::spawn(async move {
        share
            .acquire("g", "a", &[("t".into(), 0)], limits(100, 5000))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.broker
        .write_txn_marker("t", 0, marker(pb, true))
        .await
        .unwrap(); // 6
    let out = poll.await.unwrap();
    assert_eq!(offsets(&out[0].acquired), vec![4]);
}

/// Lets every transactional batch through: these tests (and the fixture) drive the read side
/// without the transaction coordinator, which normally installs the produce check.
struct AnyTxn;

impl crate::broker::TxnGuard for AnyTxn {
    fn check_produce(&self, _: &str, _: i32, _: i64, _: i16, _: bool) -> crate::Result<()> {
        Ok(())
    }
}
