use super::*;

fn coordinator(dir: &Path, delay_ms: u64) -> Arc<GroupCoordinator> {
    let config = GroupConfig {
        initial_rebalance_delay_ms: delay_ms,
        ..GroupConfig::default()
    };
    let exists: PartitionExists = Arc::new(|t: &str, p: i32| t == "t" && (0..12).contains(&p));
    let c = GroupCoordinator::open(dir, config, exists).unwrap();
    tokio::spawn(c.clone().run());
    c
}

fn join_req(member: &str, instance: Option<&str>, session_ms: i32) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member.into(),
        instance_id: instance.map(String::from),
        client_id: "test".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: session_ms,
        rebalance_timeout_ms: session_ms,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member_id: true,
    }
}

/// First join with MEMBER_ID_REQUIRED, then the real join.
async fn join_new(c: &GroupCoordinator, session_ms: i32) -> JoinResponse {
    let id = match c.join(join_req("", None, session_ms)).await {
        Err(GroupError::MemberIdRequired(id)) => id,
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    };
    c.join(join_req(&id, None, session_ms)).await.unwrap()
}

async fn sync_all(c: &GroupCoordinator, joined: &[JoinResponse]) -> Vec<Bytes> {
    let leader = joined
        .iter()
        .find(|j| j.member_id == j.leader)
        .expect("a leader");
    let assignments: Vec<(String, Bytes)> = leader
        .members
        .iter()
        .map(|(id, _, _)| (id.clone(), Bytes::from(format!("for {id}"))))
        .collect();
    let mut out = Vec::new();
    for j in joined {
        let a = if j.member_id == j.leader {
            assignments.clone()
        } else {
            Vec::new()
        };
        if j.member_id != j.leader {
            continue;
        }
        out.push(
            c.sync("g", j.generation, &j.member_id, None, None, a)
                .await
                .unwrap()
                .2,
        );
    }
    for j in joined.iter().filter(|j| j.member_id != j.leader) {
        out.push(
            c.sync("g", j.generation, &j.member_id, None, None, vec![])
                .await
                .unwrap()
                .2,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_join_sync_and_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 300);
    let (a, b, d) = tokio::join!(
        join_new(&c, 10_000),
        join_new(&c, 10_000),
        join_new(&c, 10_000)
    );
    let joined = [a, b, d];
    let gens: Vec<i32> = joined.iter().map(|j| j.generation).collect();
    assert!(
        gens.iter().all(|g| *g == gens[0]),
        "one generation: {gens:?}"
    );
    let leader = joined.iter().find(|j| j.member_id == j.leader).unwrap();
    assert_eq!(leader.members.len(), 3);
    assert!(joined
        .iter()
        .filter(|j| j.member_id != j.leader)
        .all(|j| j.members.is_empty()));
    let assigned = sync_all(&c, &joined).await;
    assert_eq!(assigned.len(), 3);
    for j in &joined {
        c.heartbeat("g", j.generation, &j.member_id, None).unwrap();
    }
    assert_eq!(
        c.heartbeat("g", gens[0] + 1, &joined[0].member_id, None),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        c.heartbeat("g", gens[0], "nobody", None),
        Err(GroupError::UnknownMemberId)
    );
    let d = c.describe("g");
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.members.len(), 3);
    assert!(d
        .members
        .iter()
        .all(|m| m.assignment == format!("for {}", m.member_id).as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_rebalances_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 300);
    let (a, b) = tokio::join!(join_new(&c, 1000), join_new(&c, 1000));
    sync_all(&c, &[a.clone(), b.clone()]).await;
    // Only `a` heartbeats; `b`'s lease runs out.
    let started = Instant::now();
    loop {
        match c.heartbeat("g", a.generation, &a.member_id, None) {
            Ok(()) => {}
            Err(GroupError::RebalanceInProgress) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no rebalance after the session timeout"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = c.join(join_req(&a.member_id, None, 1000)).await.unwrap();
    assert_eq!(again.generation, a.generation + 1);
    assert_eq!(again.leader, a.member_id);
    assert_eq!(again.members.len(), 1);
    assert_eq!(
        c.heartbeat("g", again.generation, &b.member_id, None),
        Err(GroupError::UnknownMemberId)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_rebalances_at_once_and_last_leave_empties() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 300);
    let (a, b) = tokio::join!(join_new(&c, 30_000), join_new(&c, 30_000));
    sync_all(&c, &[a.clone(), b.clone()]).await;
    let r = c.leave("g", &[(b.member_id.clone(), None)]).await;
    assert!(r[0].is_ok());
    assert_eq!(
        c.heartbeat("g", a.generation, &a.member_id, None),
        Err(GroupError::RebalanceInProgress)
    );
    let again = c.join(join_req(&a.member_id, None, 30_000)).await.unwrap();
    assert_eq!(again.generation, a.generation + 1);
    c.leave("g", &[(a.member_id.clone(), None)]).await[0]
        .as_ref()
        .unwrap();
    assert_eq!(c.describe("g").state, GroupState::Empty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_rejoins_without_rebalance_and_old_id_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0);
    let first = c.join(join_req("", Some("i1"), 30_000)).await.unwrap();
    let a = c
        .sync(
            "g",
            first.generation,
            &first.member_id,
            Some("i1"),
            None,
            vec![(first.member_id.clone(), Bytes::from_static(b"p0-11"))],
        )
        .await
        .unwrap()
        .2;
    assert_eq!(a, Bytes::from_static(b"p0-11"));
    // The same instance restarts: new member id, same generation, same assignment.
    let second = c.join(join_req("", Some("i1"), 30_000)).await.unwrap();
    assert_ne!(second.member_id, first.member_id);
    assert_eq!(second.generation, first.generation);
    assert!(second.skip_assignment);
    let a2 = c
        .sync(
            "g",
            second.generation,
            &second.member_id,
            Some("i1"),
            None,
            vec![],
        )
        .await
        .unwrap()
        .2;
    assert_eq!(a2, a);
    assert_eq!(
        c.heartbeat("g", first.generation, &first.member_id, Some("i1")),
        Err(GroupError::FencedInstanceId)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_durable_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = coordinator(dir.path(), 0);
        let r = c
            .commit(
                "simple",
                -1,
                "",
                None,
                vec![
                    OffsetCommit {
                        topic: "t".into(),
                        partition: 3,
                        offset: 42,
                        leader_epoch: 0,
                        metadata: Some("meta".into()),
                    },
                    OffsetCommit {
                        topic: "nope".into(),
                        partition: 0,
                        offset: 1,
                        leader_epoch: -1,
                        metadata: None,
                    },
                    OffsetCommit {
                        topic: "t".into(),
                        partition: 4,
                        offset: 1,
                        leader_epoch: -1,
                        metadata: Some("x".repeat(5000)),
                    },
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            r,
            vec![
                Ok(()),
                Err(GroupError::UnknownTopicOrPartition),
                Err(GroupError::OffsetMetadataTooLarge)
            ]
        );
        let j = join_new(&c, 30_000).await;
        sync_all(&c, std::slice::from_ref(&j)).await;
        assert_eq!(
            c.commit("g", j.generation + 5, &j.member_id, None, vec![])
                .await,
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            c.commit("g", j.generation, "ghost", None, vec![]).await,
            Err(GroupError::UnknownMemberId)
        );
        c.close();
    }
    let c = coordinator(dir.path(), 0);
    let got = c.fetch_offsets("simple", Some(vec![("t".into(), 3), ("t".into(), 4)]));
    assert_eq!(
        got[0].2.as_ref().map(|c| (c.offset, c.metadata.clone())),
        Some((42, Some("meta".into())))
    );
    assert_eq!(got[1].2, None);
    assert_eq!(c.fetch_offsets("simple", None).len(), 1);
    assert_eq!(c.delete("g").await, Err(GroupError::NonEmptyGroup));
    c.delete("simple").await.unwrap();
    assert!(c.fetch_offsets("simple", None).is_empty());
    assert_eq!(c.delete("simple").await, Err(GroupError::GroupIdNotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_rebalance_delay_gathers_members() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 500);
    let c2 = c.clone();
    let first = tokio::spawn(async move { join_new(&c2, 10_000).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = join_new(&c, 10_000).await;
    let first = first.await.unwrap();
    assert_eq!(
        first.generation, second.generation,
        "both in the first generation"
    );
    assert_eq!(first.generation, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_empty_groups_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        offsets_retention_ms: 400,
        ..GroupConfig::default()
    };
    let exists: PartitionExists = Arc::new(|_: &str, _: i32| true);
    let c = GroupCoordinator::open(dir.path(), config.clone(), exists.clone()).unwrap();
    tokio::spawn(c.clone().run());
    let commit = OffsetCommit {
        topic: "t".into(),
        partition: 0,
        offset: 9,
        leader_epoch: -1,
        metadata: None,
    };
    c.commit("old", -1, "", None, vec![commit]).await.unwrap();
    assert_eq!(c.fetch_offsets("old", None).len(), 1);
    let started = Instant::now();
    while !c.fetch_offsets("old", None).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "offsets never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The expiry is durable: a reopened coordinator does not bring them back.
    c.close();
    let c = GroupCoordinator::open(dir.path(), config, exists).unwrap();
    assert!(c.fetch_offsets("old", None).is_empty());
}

// --- KIP-848 consumer groups ------------------------------------------------------------------

fn consumer_hb(member: &str, epoch: i32, owned: Option<assignor::Assignment>) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        group_id: "cg".into(),
        member_id: member.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: if epoch == 0 { 5000 } else { -1 },
        subscribed_topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
        owned,
        ..Default::default()
    }
}

fn with_topics(c: &GroupCoordinator) {
    c.set_topics(Arc::new(|| [("t".to_string(), 4)].into_iter().collect()));
}

#[tokio::test]
async fn a_consumer_group_and_its_members_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (epoch, given) = {
        let c = coordinator(dir.path(), 0);
        with_topics(&c);
        let a = c
            .consumer_heartbeat(consumer_hb("a", 0, None))
            .await
            .unwrap();
        c.commit(
            "cg",
            a.member_epoch,
            "a",
            None,
            vec![OffsetCommit {
                topic: "t".into(),
                partition: 0,
                offset: 7,
                leader_epoch: -1,
                metadata: None,
            }],
        )
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| r.unwrap());
        c.close();
        (a.member_epoch, a.assignment.unwrap())
    };
    let c = coordinator(dir.path(), 0);
    with_topics(&c);
    let d = c.describe_consumer_group("cg").unwrap();
    assert_eq!(d.group_epoch, epoch);
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].assignment, given);
    assert_eq!(c.fetch_offsets("cg", None)[0].2.as_ref().unwrap().offset, 7);
    // The member goes on with its epoch after the restart.
    let again = c
        .consumer_heartbeat(consumer_hb("a", epoch, Some(given.clone())))
        .await
        .unwrap();
    assert_eq!(again.member_epoch, epoch);
    assert_eq!(
        c.list_typed(),
        vec![(
            "cg".to_string(),
            "consumer".to_string(),
            "Stable",
            "consumer"
        )]
    );
}

#[tokio::test]
async fn a_classic_member_of_a_consumer_group_gets_its_share_once_released() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path(), 0);
    with_topics(&c);
    let a = c
        .consumer_heartbeat(consumer_hb("a", 0, None))
        .await
        .unwrap();
    let all = a.assignment.unwrap();
    let join = |member: &str| ClassicJoin {
        group_id: "cg".into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "classic".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocols: vec!["range".into()],
        topics: vec!["t".into()],
        owned: assignor::Assignment::new(),
        require_known_member_id: true,
    };
    let id = match c.consumer_classic_join(join("")).await {
        Err(GroupError::MemberIdRequired(id)) => id,
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    };
    let j = c.consumer_classic_join(join(&id)).await.unwrap();
    assert!(j.leader.is_empty() && j.members.is_empty());
    // a still holds everything: the classic member gets nothing yet, and is told to rejoin.
    let (_, got) = c.consumer_classic_sync("cg", j.generation, &id).unwrap();
    assert!(got.is_empty());
    assert_eq!(
        c.heartbeat("cg", j.generation, &id, None),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        c.heartbeat("cg", j.generation + 1, &id, None),
        Err(GroupError::IllegalGeneration)
    );
    // a revokes half.
    let r = c
        .consumer_heartbeat(consumer_hb("a", a.member_epoch, Some(all.clone())))
        .await
        .unwrap();
    let kept = r.assignment.unwrap();
    c.consumer_heartbeat(consumer_hb("a", a.member_epoch, Some(kept.clone())))
        .await
        .unwrap();
    let j2 = c.consumer_classic_join(join(&id)).await.unwrap();
    let (name, got) = c.consumer_classic_sync("cg", j2.generation, &id).unwrap();
    assert_eq!(name, "range");
    assert_eq!(got.values().map(|p| p.len()).sum::<usize>(), 2);
    assert!(got["t"].is_disjoint(&kept["t"]));
    assert_eq!(c.heartbeat("cg", j2.generation, &id, None), Ok(()));
    // A classic member commits with its generation.
    let commit = |g: i32| {
        c.commit(
            "cg",
            g,
            &id,
            None,
            vec![OffsetCommit {
                topic: "t".into(),
                partition: 1,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
            }],
        )
    };
    assert!(commit(j2.generation).await.is_ok());
    assert_eq!(
        commit(j2.generation + 3).await.unwrap_err(),
        GroupError::IllegalGeneration
    );
    // It leaves: a gets everything back at its next heartbeats.
    assert_eq!(
        c.leave("cg", &[(id.clone(), None)]).await,
        vec![Ok(id.clone())]
    );
    assert_eq!(c.describe_consumer_group("cg").unwrap().members.len(), 1);
}

#[test]
fn the_kip848_heartbeat_interval_scales_with_the_group_until_set() {
    let mut c = GroupConfig::default();
    // 10 ms per member, at least 500 ms, at most group.consumer.heartbeat.interval.ms.
    assert_eq!(c.consumer_heartbeat_interval(1), 500);
    assert_eq!(c.consumer_heartbeat_interval(51), 510);
    assert_eq!(c.consumer_heartbeat_interval(200), 2000);
    assert_eq!(c.consumer_heartbeat_interval(100_000), 5000);
    // A cap below the floor is still the cap.
    c.consumer_heartbeat_interval_ms = 300;
    assert_eq!(c.consumer_heartbeat_interval(1), 300);
    // Set explicitly: the interval, whatever the group's size.
    c.consumer_heartbeat_interval_ms = 5000;
    c.consumer_heartbeat_adaptive = false;
    assert_eq!(c.consumer_heartbeat_interval(1), 5000);
    assert_eq!(c.consumer_heartbeat_interval(100_000), 5000);
}
