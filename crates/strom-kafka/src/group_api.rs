//! The consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups, OffsetDelete.
//! Each translates to a call on `strom_broker::coordinator::GroupCoordinator`.

use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as E;
use strom_broker::coordinator::{Committed, GroupError, GroupState, JoinRequest, OffsetCommit};
use strom_broker::share::ShareGroupDescription;

use crate::server::{advertised, sb, Fatal, Reply, Req};
use strom_broker::security::acl::{Operation, ResourceType, CLUSTER_NAME};

/// The Kafka error code of a group error.
pub(crate) fn code(e: &GroupError) -> i16 {
    match e {
        GroupError::CoordinatorNotAvailable | GroupError::Storage(_) => {
            E::CoordinatorNotAvailable.code()
        }
        GroupError::AuthorizationFailed => E::GroupAuthorizationFailed.code(),
        GroupError::RebalanceInProgress => E::RebalanceInProgress.code(),
        GroupError::UnknownMemberId => E::UnknownMemberId.code(),
        GroupError::IllegalGeneration => E::IllegalGeneration.code(),
        GroupError::FencedInstanceId => E::FencedInstanceId.code(),
        GroupError::MemberIdRequired(_) => E::MemberIdRequired.code(),
        GroupError::InconsistentGroupProtocol => E::InconsistentGroupProtocol.code(),
        GroupError::InvalidSessionTimeout => E::InvalidSessionTimeout.code(),
        GroupError::InvalidGroupId => E::InvalidGroupId.code(),
        GroupError::GroupIdNotFound => E::GroupIdNotFound.code(),
        GroupError::NonEmptyGroup => E::NonEmptyGroup.code(),
        GroupError::GroupSubscribedToTopic => E::GroupSubscribedToTopic.code(),
        GroupError::UnknownTopicOrPartition => E::UnknownTopicOrPartition.code(),
        GroupError::OffsetMetadataTooLarge => E::OffsetMetadataTooLarge.code(),
        GroupError::FencedMemberEpoch => E::FencedMemberEpoch.code(),
        GroupError::StaleMemberEpoch => E::StaleMemberEpoch.code(),
        GroupError::UnreleasedInstanceId => E::UnreleasedInstanceId.code(),
        GroupError::UnsupportedAssignor(_) => E::UnsupportedAssignor.code(),
        GroupError::InvalidRegularExpression(_) => E::InvalidRegularExpression.code(),
        GroupError::InvalidRequest(_) => E::InvalidRequest.code(),
    }
}

fn err_code<T>(r: &Result<T, GroupError>) -> i16 {
    r.as_ref().err().map_or(0, code)
}

/// Whether the principal may READ group `id` (join, sync, heartbeat, leave, commit).
fn may_read_group(req: &Req<'_>, id: &str) -> bool {
    req.allowed(Operation::Read, ResourceType::Group, id)
}

pub(crate) fn find_coordinator(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: FindCoordinatorRequest = req.decode()?;
    let v = req.version;
    // Cluster mode: the controller coordinates every group and transaction (their state is
    // not replicated yet), so that all brokers name the same coordinator.
    let cluster = req.ctx.broker.cluster().map(|c| c.metadata());
    let coordinator = match cluster.as_deref() {
        Some(m) => m.node(m.controller).map(|n| (n.id, n.host.clone(), n.port)),
        None => {
            let (host, port) = advertised(&req);
            Some((req.ctx.broker.node_id(), host, port))
        }
    };
    let (node, host, port) = coordinator.clone().unwrap_or((-1, String::new(), -1));
    // Groups (key type 0) and share groups (2, KIP-932; the key is the group id, or
    // "group:topic id:partition" for the share-partition state, which lives here too) are
    // coordinated here; transactions (1), too, when the door has the transaction coordinator.
    let answer = |key_type: i8, key: &str| -> (i16, Option<StrBytes>) {
        let (rt, denied) = match key_type {
            1 => (
                ResourceType::TransactionalId,
                E::TransactionalIdAuthorizationFailed,
            ),
            _ => (ResourceType::Group, E::GroupAuthorizationFailed),
        };
        // A share-partition state key names its group before the first ':'.
        let name = if key_type == 2 {
            key.split(':').next().unwrap_or(key)
        } else {
            key
        };
        if !req.allowed(Operation::Describe, rt, name) {
            return (
                denied.code(),
                Some(sb(format!("{} may not describe {name}", req.principal))),
            );
        }
        if coordinator.is_none() {
            (
                E::CoordinatorNotAvailable.code(),
                Some(sb("no controller elected yet")),
            )
        } else if key_type == 0 || key_type == 1 && req.ctx.txns.is_some() || key_type == 2 {
            (0, None)
        } else {
            (
                E::CoordinatorNotAvailable.code(),
                Some(sb("transactions are not supported")),
            )
        }
    };
    let mut resp = FindCoordinatorResponse::default();
    if v >= 4 {
        resp = resp.with_coordinators(
            r.coordinator_keys
                .iter()
                .map(|k| {
                    let (c, msg) = answer(r.key_type, k);
                    Coordinator::default()
                        .with_key(k.clone())
                        .with_node_id(BrokerId(if c == 0 { node } else { -1 }))
                        .with_host(if c == 0 { sb(host.clone()) } else { sb("") })
                        .with_port(if c == 0 { port } else { -1 })
                        .with_error_code(c)
                        .with_error_message(msg)
                })
                .collect(),
        );
    } else {
        let (c, msg) = answer(if v >= 1 { r.key_type } else { 0 }, &r.key);
        resp = resp
            .with_error_code(c)
            .with_node_id(BrokerId(if c == 0 { node } else { -1 }))
            .with_host(if c == 0 { sb(host) } else { sb("") })
            .with_port(if c == 0 { port } else { -1 });
        if v >= 1 {
            resp = resp.with_error_message(msg);
        }
    }
    req.encode(&resp)
}

pub(crate) async fn join_group(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: JoinGroupRequest = req.decode()?;
    let v = req.version;
    let groups = req.ctx.groups.clone();
    let join = JoinRequest {
        group_id: r.group_id.to_string(),
        member_id: r.member_id.to_string(),
        instance_id: r.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: req.client_id.clone(),
        client_host: format!("/{}", req.peer.ip()),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: if v >= 1 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: v >= 4,
    };
    let mut resp = JoinGroupResponse::default();
    let result = if !may_read_group(&req, &join.group_id) {
        Err(GroupError::AuthorizationFailed)
    } else if groups.is_active_consumer_group(&join.group_id) {
        // A classic member of a KIP-848 consumer group (Kafka 4's mixed groups).
        match crate::consumer_api::classic_join(join) {
            Some(j) => groups.consumer_classic_join(j).await,
            None => Err(GroupError::InconsistentGroupProtocol),
        }
    } else {
        groups.join(join).await
    };
    tracing::debug!(group = %r.group_id.as_str(), member = %r.member_id, v, result = ?result.as_ref().map(|j| (j.generation, j.member_id.clone(), j.leader.clone(), j.members.len())), "JoinGroup");
    match result {
        Ok(j) => {
            resp = resp
                .with_generation_id(j.generation)
                .with_leader(sb(j.leader))
                .with_member_id(sb(j.member_id))
                .with_protocol_name(Some(sb(j.protocol_name)))
                .with_members(
                    j.members
                        .into_iter()
                        .map(|(id, inst, meta)| {
                            let mut m = JoinGroupResponseMember::default()
                                .with_member_id(sb(id))
                                .with_metadata(meta);
                            if v >= 5 {
                                m = m.with_group_instance_id(inst.map(sb));
                            }
                            m
                        })
                        .collect(),
                );
            if v >= 7 {
                resp = resp.with_protocol_type(Some(sb(j.protocol_type)));
            }
            if v >= 9 {
                resp = resp.with_skip_assignment(j.skip_assignment);
            }
        }
        Err(e) => {
            let member = match &e {
                GroupError::MemberIdRequired(id) => id.clone(),
                _ => r.member_id.to_string(),
            };
            resp = resp
                .with_error_code(code(&e))
                .with_generation_id(-1)
                .with_member_id(sb(member))
                .with_protocol_name(if v >= 7 { None } else { Some(sb("")) });
        }
    }
    req.encode(&resp)
}

pub(crate) async fn sync_group(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: SyncGroupRequest = req.decode()?;
    let v = req.version;
    let groups = req.ctx.groups.clone();
    let ptype = r
        .protocol_type
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let pname = r
        .protocol_name
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if !may_read_group(&req, &r.group_id) {
        return req.encode(
            &SyncGroupResponse::default().with_error_code(E::GroupAuthorizationFailed.code()),
        );
    }
    if groups.is_consumer_group(&r.group_id) {
        let result = groups.consumer_classic_sync(&r.group_id, r.generation_id, &r.member_id);
        let mut resp = SyncGroupResponse::default().with_error_code(err_code(&result));
        if let Ok((name, assignment)) = result {
            resp = resp.with_assignment(crate::consumer_api::encode_assignment(&assignment));
            if v >= 5 {
                resp = resp
                    .with_protocol_type(Some(sb("consumer")))
                    .with_protocol_name(Some(sb(name)));
            }
        }
        return req.encode(&resp);
    }
    let result = groups
        .sync(
            &r.group_id,
            r.generation_id,
            &r.member_id,
            r.group_instance_id.as_deref(),
            Some((&ptype, &pname)),
            r.assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect(),
        )
        .await;
    tracing::debug!(group = %r.group_id.as_str(), member = %r.member_id, generation = r.generation_id, assignments = r.assignments.len(), result = ?result.as_ref().map(|(_, _, a)| a.len()), "SyncGroup");
    let mut resp = SyncGroupResponse::default().with_error_code(err_code(&result));
    if let Ok((t, n, assignment)) = result {
        resp = resp.with_assignment(assignment);
        if v >= 5 {
            resp = resp
                .with_protocol_type(Some(sb(t)))
                .with_protocol_name(Some(sb(n)));
        }
    }
    req.encode(&resp)
}

pub(crate) fn heartbeat(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: HeartbeatRequest = req.decode()?;
    if !may_read_group(&req, &r.group_id) {
        return req.encode(
            &HeartbeatResponse::default().with_error_code(E::GroupAuthorizationFailed.code()),
        );
    }
    let result = req.ctx.groups.heartbeat(
        &r.group_id,
        r.generation_id,
        &r.member_id,
        r.group_instance_id.as_deref(),
    );
    req.encode(&HeartbeatResponse::default().with_error_code(err_code(&result)))
}

pub(crate) async fn leave_group(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: LeaveGroupRequest = req.decode()?;
    let v = req.version;
    let groups = req.ctx.groups.clone();
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        r.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    if !may_read_group(&req, &r.group_id) {
        return req.encode(
            &LeaveGroupResponse::default().with_error_code(E::GroupAuthorizationFailed.code()),
        );
    }
    let results = groups.leave(&r.group_id, &members).await;
    tracing::debug!(group = %r.group_id.as_str(), ?members, ?results, "LeaveGroup");
    let mut resp = LeaveGroupResponse::default();
    if v >= 3 {
        resp = resp.with_members(
            members
                .iter()
                .zip(&results)
                .map(|((id, inst), res)| {
                    MemberResponse::default()
                        .with_member_id(sb(res.clone().unwrap_or_else(|_| id.clone())))
                        .with_group_instance_id(inst.clone().map(sb))
                        .with_error_code(err_code(res))
                })
                .collect(),
        );
    } else {
        resp = resp.with_error_code(results.first().map_or(0, err_code));
    }
    req.encode(&resp)
}

pub(crate) async fn offset_commit(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: OffsetCommitRequest = req.decode()?;
    let v = req.version;
    let groups = req.ctx.groups.clone();
    let group_ok = may_read_group(&req, &r.group_id);
    // Committing needs READ on the group and on each topic.
    let topic_ok: Vec<bool> = r
        .topics
        .iter()
        .map(|t| group_ok && req.allowed(Operation::Read, ResourceType::Topic, &t.name))
        .collect();
    let offsets: Vec<OffsetCommit> = r
        .topics
        .iter()
        .zip(&topic_ok)
        .filter(|(_, ok)| **ok)
        .flat_map(|(t, _)| {
            t.partitions.iter().map(move |p| OffsetCommit {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if v >= 6 { p.committed_leader_epoch } else { -1 },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let instance = if v >= 7 {
        r.group_instance_id.as_deref()
    } else {
        None
    };
    let result = if !group_ok {
        Err(GroupError::AuthorizationFailed)
    } else if offsets.is_empty() && !r.topics.is_empty() {
        Ok(Vec::new())
    } else {
        groups
            .commit(
                &r.group_id,
                r.generation_id_or_member_epoch,
                &r.member_id,
                instance,
                offsets,
            )
            .await
    };
    let mut codes = match &result {
        Ok(per) => per.iter().map(err_code).collect::<Vec<_>>(),
        Err(e) => vec![code(e); r.topics.iter().map(|t| t.partitions.len()).sum()],
    }
    .into_iter();
    let topics = r
        .topics
        .iter()
        .zip(&topic_ok)
        .map(|(t, ok)| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let c = if *ok || !group_ok {
                                codes.next().unwrap_or(0)
                            } else {
                                E::TopicAuthorizationFailed.code()
                            };
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(c)
                        })
                        .collect(),
                )
        })
        .collect();
    req.encode(&OffsetCommitResponse::default().with_topics(topics))
}

fn committed_fields(c: Option<Committed>) -> (i64, i32, Option<StrBytes>) {
    match c {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            Some(sb(c.metadata.unwrap_or_default())),
        ),
        None => (-1, -1, Some(sb(""))),
    }
}

/// A topic's partitions with their committed offsets.
type TopicOffsets = (String, Vec<(i32, Option<Committed>)>);

/// Groups `(topic, partition, committed)` by topic, keeping first-seen topic order.
fn by_topic(rows: Vec<(String, i32, Option<Committed>)>) -> Vec<TopicOffsets> {
    let mut out: Vec<TopicOffsets> = Vec::new();
    for (t, p, c) in rows {
        match out.iter_mut().find(|(n, _)| *n == t) {
            Some((_, v)) => v.push((p, c)),
            None => out.push((t, vec![(p, c)])),
        }
    }
    out
}

/// One OffsetFetch partition: its error code (the authorizer's refusal, or UNSTABLE_OFFSET_COMMIT
/// under `require_stable`) and its committed offset, leader epoch and metadata.
fn fetched(
    req: &Req<'_>,
    require_stable: bool,
    group: &str,
    topic: &str,
    p: i32,
    c: Result<Option<Committed>, i16>,
) -> (i16, (i64, i32, Option<StrBytes>)) {
    match c {
        Err(denied) => (denied, committed_fields(None)),
        Ok(c) => (
            crate::txn_api::offset_fetch_code(req.ctx, require_stable, group, topic, p),
            committed_fields(c),
        ),
    }
}

/// A topic's partitions with their committed offsets, or the error code that hides them.
type VisibleOffsets = (String, Vec<(i32, Result<Option<Committed>, i16>)>);

/// OffsetFetch shows a topic's offsets to whom may DESCRIBE it: a fetch of every topic
/// leaves the others out, a fetch naming them answers TOPIC_AUTHORIZATION_FAILED.
fn visible(req: &Req<'_>, all: bool, rows: Vec<TopicOffsets>) -> Vec<VisibleOffsets> {
    rows.into_iter()
        .filter_map(|(t, ps)| {
            let ok = if all {
                req.permits(Operation::Describe, ResourceType::Topic, &t)
            } else {
                req.allowed(Operation::Describe, ResourceType::Topic, &t)
            };
            if !ok && all {
                return None;
            }
            let denied = E::TopicAuthorizationFailed.code();
            let ps = ps
                .into_iter()
                .map(|(p, c)| (p, if ok { Ok(c) } else { Err(denied) }))
                .collect();
            Some((t, ps))
        })
        .collect()
}

pub(crate) fn offset_fetch(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: OffsetFetchRequest = req.decode()?;
    let v = req.version;
    let groups = &req.ctx.groups;
    if v >= 8 {
        let out = r
            .groups
            .iter()
            .map(|g| {
                // v9 (KIP-848): a member fetches with its id and epoch.
                let member = g.member_id.as_deref().unwrap_or_default();
                if !req.allowed(Operation::Describe, ResourceType::Group, &g.group_id) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(E::GroupAuthorizationFailed.code());
                }
                if let Err(e) = groups.check_fetch_member(&g.group_id, member, g.member_epoch) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(code(&e));
                }
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .flat_map(|t| {
                            t.partition_indexes
                                .iter()
                                .map(move |p| (t.name.to_string(), *p))
                        })
                        .collect()
                });
                let all = wanted.is_none();
                let topics = visible(
                    &req,
                    all,
                    by_topic(groups.fetch_offsets(&g.group_id, wanted)),
                )
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(sb(t.clone())))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, c)| {
                                    let (code, (o, e, m)) =
                                        fetched(&req, r.require_stable, &g.group_id, &t, p, c);
                                    OffsetFetchResponsePartitions::default()
                                        .with_error_code(code)
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_leader_epoch(e)
                                        .with_metadata(m)
                                })
                                .collect(),
                        )
                })
                .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
            })
            .collect();
        return req.encode(&OffsetFetchResponse::default().with_groups(out));
    }
    let wanted = r.topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(move |p| (t.name.to_string(), *p))
            })
            .collect()
    });
    if !req.allowed(Operation::Describe, ResourceType::Group, &r.group_id) {
        return req.encode(
            &OffsetFetchResponse::default().with_error_code(E::GroupAuthorizationFailed.code()),
        );
    }
    let all = wanted.is_none();
    let topics = visible(
        &req,
        all,
        by_topic(groups.fetch_offsets(&r.group_id, wanted)),
    )
    .into_iter()
    .map(|(t, ps)| {
        OffsetFetchResponseTopic::default()
            .with_name(TopicName(sb(t.clone())))
            .with_partitions(
                ps.into_iter()
                    .map(|(p, c)| {
                        let (code, (o, e, m)) =
                            fetched(&req, r.require_stable, &r.group_id, &t, p, c);
                        let mut part = OffsetFetchResponsePartition::default()
                            .with_error_code(code)
                            .with_partition_index(p)
                            .with_committed_offset(o)
                            .with_metadata(m);
                        if v >= 5 {
                            part = part.with_committed_leader_epoch(e);
                        }
                        part
                    })
                    .collect(),
            )
    })
    .collect();
    req.encode(&OffsetFetchResponse::default().with_topics(topics))
}

pub(crate) fn describe_groups(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeGroupsRequest = req.decode()?;
    let v = req.version;
    let groups = &req.ctx.groups;
    let out = r
        .groups
        .iter()
        .map(|id| {
            if !req.allowed(Operation::Describe, ResourceType::Group, id) {
                return DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(E::GroupAuthorizationFailed.code())
                    .with_group_state(sb("Dead"))
                    .with_protocol_type(sb(""))
                    .with_protocol_data(sb(""));
            }
            if let Ok(d) = req.ctx.shares.describe(id) {
                return describe_share_group(id, d);
            }
            if groups.is_consumer_group(id) {
                // As Kafka 4.1: DescribeGroups describes classic groups only.
                return DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(E::GroupIdNotFound.code())
                    .with_error_message(
                        (v >= 6)
                            .then(|| sb(format!("Group {} is not a classic group.", id.as_str()))),
                    )
                    .with_group_state(sb("Dead"))
                    .with_protocol_type(sb(""))
                    .with_protocol_data(sb(""));
            }
            let d = groups.describe(id);
            // v6 (KIP-1043): an unknown group is GROUP_ID_NOT_FOUND, not an empty Dead one.
            let unknown = v >= 6
                && d.state == GroupState::Dead
                && d.members.is_empty()
                && d.protocol_type.is_empty();
            let members = d
                .members
                .into_iter()
                .map(|m| {
                    let mut dm = DescribedGroupMember::default()
                        .with_member_id(sb(m.member_id))
                        .with_client_id(sb(m.client_id))
                        .with_client_host(sb(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment);
                    if v >= 4 {
                        dm = dm.with_group_instance_id(m.instance_id.map(sb));
                    }
                    dm
                })
                .collect();
            let described = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_group_state(sb(d.state.name()))
                .with_protocol_type(sb(d.protocol_type))
                .with_protocol_data(sb(d.protocol))
                .with_members(members);
            if unknown {
                described
                    .with_error_code(E::GroupIdNotFound.code())
                    .with_error_message(Some(sb(format!("Group {} not found.", id.as_str()))))
            } else {
                described
            }
        })
        .collect();
    req.encode(&DescribeGroupsResponse::default().with_groups(out))
}

/// A share group as DescribeGroups shows it: protocol type "share", its members (no
/// classic metadata or assignment bytes: share members have none).
fn describe_share_group(id: &GroupId, d: ShareGroupDescription) -> DescribedGroup {
    DescribedGroup::default()
        .with_group_id(id.clone())
        .with_group_state(sb(d.state.name()))
        .with_protocol_type(sb("share"))
        .with_protocol_data(sb(""))
        .with_members(
            d.members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(sb(m.member_id))
                        .with_client_id(sb(m.client_id))
                        .with_client_host(sb(m.client_host))
                })
                .collect(),
        )
}

pub(crate) fn list_groups(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: ListGroupsRequest = req.decode()?;
    let v = req.version;
    let states: Vec<String> = r.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let type_wanted = |name: &str| {
        r.types_filter.is_empty() || r.types_filter.iter().any(|t| t.eq_ignore_ascii_case(name))
    };
    let classic_wanted = type_wanted("classic");
    let consumer_wanted = type_wanted("consumer");
    let share = if type_wanted("share") {
        req.ctx.shares.list()
    } else {
        Vec::new()
    };
    // Listing shows the groups the principal may describe (all of them with DESCRIBE on
    // the cluster), as Kafka does.
    let cluster = req.permits(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME);
    let visible = |id: &str| cluster || req.permits(Operation::Describe, ResourceType::Group, id);
    let shared = share
        .into_iter()
        .filter(|g| visible(&g.group))
        .filter(|g| states.is_empty() || states.contains(&g.state.name().to_lowercase()))
        .map(|g| {
            let mut out = ListedGroup::default()
                .with_group_id(GroupId(sb(g.group)))
                .with_protocol_type(sb("share"));
            if v >= 4 {
                out = out.with_group_state(sb(g.state.name()));
            }
            if v >= 5 {
                out = out.with_group_type(sb("share"));
            }
            out
        });
    let out = req
        .ctx
        .groups
        .list_typed()
        .into_iter()
        .filter(|(id, _, s, kind)| {
            visible(id)
                && (if *kind == "consumer" {
                    consumer_wanted
                } else {
                    classic_wanted
                })
                && (states.is_empty() || states.contains(&s.to_lowercase()))
        })
        .map(|(id, ptype, state, kind)| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(sb(id)))
                .with_protocol_type(sb(ptype));
            if v >= 4 {
                g = g.with_group_state(sb(state));
            }
            if v >= 5 {
                g = g.with_group_type(sb(kind));
            }
            g
        })
        .chain(shared)
        .collect();
    req.encode(&ListGroupsResponse::default().with_groups(out))
}

pub(crate) async fn delete_groups(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DeleteGroupsRequest = req.decode()?;
    let groups = req.ctx.groups.clone();
    let mut results = Vec::with_capacity(r.groups_names.len());
    for id in r.groups_names {
        let code = if !req.allowed(Operation::Delete, ResourceType::Group, &id) {
            E::GroupAuthorizationFailed.code()
        } else if req.ctx.shares.is_share_group(&id) {
            let res = req.ctx.shares.delete_group(&id).await;
            res.err().map_or(0, |e| crate::share_api::group_code(&e))
        } else {
            err_code(&groups.delete(&id).await)
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    req.encode(&DeleteGroupsResponse::default().with_results(results))
}

pub(crate) async fn offset_delete(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: OffsetDeleteRequest = req.decode()?;
    let groups = req.ctx.groups.clone();
    let wanted: Vec<(String, i32)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    // Deleting offsets needs DELETE on the group and READ on each topic.
    if !req.allowed(Operation::Delete, ResourceType::Group, &r.group_id) {
        return req.encode(
            &OffsetDeleteResponse::default().with_error_code(E::GroupAuthorizationFailed.code()),
        );
    }
    if let Some(t) = r
        .topics
        .iter()
        .find(|t| !req.allowed(Operation::Read, ResourceType::Topic, &t.name))
    {
        tracing::info!(group = %r.group_id.as_str(), topic = %t.name.as_str(), "offset delete refused");
        return req.encode(
            &OffsetDeleteResponse::default().with_error_code(E::TopicAuthorizationFailed.code()),
        );
    }
    let result = groups.delete_offsets(&r.group_id, wanted).await;
    let mut resp = OffsetDeleteResponse::default();
    match result {
        Err(e) => resp = resp.with_error_code(code(&e)),
        Ok(per) => {
            let mut codes = per.iter().map(err_code);
            resp = resp.with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(codes.next().unwrap_or(0))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        }
    }
    req.encode(&resp)
}
