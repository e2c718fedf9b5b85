//! The admin APIs of Kafka 4 tools beyond topics and configs: DeleteRecords, DescribeLogDirs,
//! AlterReplicaLogDirs, DescribeTopicPartitions, ElectLeaders, Alter/ListPartitionReassignments,
//! DescribeQuorum, AlterConfigs (legacy), OffsetForLeaderEpoch, Describe/AlterClientQuotas,
//! ListConfigResources, GetTelemetrySubscriptions / PushTelemetry.
//!
//! Strom is one node with one log directory: each answer is what a single-broker Kafka 4.1
//! cluster gives (the node leads every partition at epoch 0, is the only voter, and has
//! nothing to elect or reassign).

use kafka_protocol::messages::alter_client_quotas_response::{
    AlterClientQuotasResponse, EntityData as AlteredEntity, EntryData as AlteredEntry,
};
use kafka_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use kafka_protocol::messages::alter_partition_reassignments_response::{
    AlterPartitionReassignmentsResponse, ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult, AlterReplicaLogDirsResponse,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_client_quotas_response::{
    DescribeClientQuotasResponse, EntityData, EntryData, ValueData,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_quorum_response::{
    self as quorum, DescribeQuorumResponse, Listener, Node, ReplicaState,
};
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponse, DescribeTopicPartitionsResponsePartition,
    DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::elect_leaders_response::{
    ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use kafka_protocol::messages::get_telemetry_subscriptions_response::GetTelemetrySubscriptionsResponse;
use kafka_protocol::messages::list_config_resources_response::{
    ConfigResource, ListConfigResourcesResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::ListPartitionReassignmentsResponse;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::push_telemetry_response::PushTelemetryResponse;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterConfigsRequest, AlterPartitionReassignmentsRequest,
    AlterReplicaLogDirsRequest, BrokerId, DeleteRecordsRequest, DescribeClientQuotasRequest,
    DescribeLogDirsRequest, DescribeQuorumRequest, DescribeTopicPartitionsRequest,
    ElectLeadersRequest, GetTelemetrySubscriptionsRequest, ListConfigResourcesRequest,
    ListPartitionReassignmentsRequest, OffsetForLeaderEpochRequest, PushTelemetryRequest,
    TopicName,
};
use kafka_protocol::ResponseError as E;
use strom_broker::quota::{ClientQuotas, QuotaEntity, QuotaMatch, QuotaOps};
use strom_broker::Broker;

use crate::codes::code;
use crate::server::{advertised, sb, Fatal, Reply, Req};
use strom_broker::security::acl::{Operation, ResourceType};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Partitions one DescribeTopicPartitions answer holds at most (Kafka's
/// `max.request.partition.size.limit` default).
const DESCRIBE_PARTITIONS_MAX: i32 = 2000;
/// The KRaft metadata partition DescribeQuorum describes.
const METADATA_TOPIC: &str = "__cluster_metadata";

fn tn(s: impl Into<String>) -> TopicName {
    TopicName(sb(s))
}

/// The partitions of `topic`, or the error for a missing topic/partition.
fn partition_error(broker: &Broker, topic: &str, partition: i32) -> i16 {
    match broker.partition(topic, partition) {
        Ok(_) => 0,
        Err(e) => code(&e),
    }
}

pub(crate) fn delete_records(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DeleteRecordsRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let deletable = req.allowed(Operation::Delete, ResourceType::Topic, &t.name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (c, low) = if !deletable {
                        (E::TopicAuthorizationFailed.code(), -1)
                    } else {
                        match broker.delete_records(&t.name, p.partition_index, p.offset) {
                            Ok(low) => (0, low),
                            Err(e) => (code(&e), -1),
                        }
                    };
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(low)
                        .with_error_code(c)
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    req.encode(&DeleteRecordsResponse::default().with_topics(topics))
}

pub(crate) fn describe_log_dirs(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeLogDirsRequest = req.decode()?;
    let broker = &req.ctx.broker;
    if let Some((c, _)) = req.cluster_denied(Operation::Describe) {
        return req.encode(&DescribeLogDirsResponse::default().with_error_code(c));
    }
    let usage = match broker.log_dir_usage() {
        Ok(u) => u,
        Err(e) => {
            return req.encode(&DescribeLogDirsResponse::default().with_error_code(code(&e)));
        }
    };
    let wanted = |topic: &str, partition: i32| match &r.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.topic.as_str() == topic && t.partitions.contains(&partition)),
    };
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for (topic, partition, size) in &usage.partitions {
        if !wanted(topic, *partition) {
            continue;
        }
        let p = DescribeLogDirsPartition::default()
            .with_partition_index(*partition)
            .with_partition_size(*size as i64)
            .with_offset_lag(0)
            .with_is_future_key(false);
        match topics.last_mut() {
            Some(t) if t.name.as_str() == topic => t.partitions.push(p),
            _ => topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(tn(topic.as_str()))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let result = DescribeLogDirsResult::default()
        .with_log_dir(sb(usage.path.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(usage.total_bytes)
        .with_usable_bytes(usage.usable_bytes);
    req.encode(&DescribeLogDirsResponse::default().with_results(vec![result]))
}

pub(crate) fn alter_replica_log_dirs(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: AlterReplicaLogDirsRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let dir = &broker.config().data_dir;
    let ours = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let mut results = Vec::new();
    for d in r.dirs {
        let same = std::fs::canonicalize(d.path.as_str()).is_ok_and(|p| p == ours);
        for t in d.topics {
            let partitions = t
                .partitions
                .iter()
                .map(|&p| {
                    let c = if !same {
                        E::LogDirNotFound.code()
                    } else {
                        partition_error(broker, &t.name, p)
                    };
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(c)
                })
                .collect();
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(t.name)
                    .with_partitions(partitions),
            );
        }
    }
    req.encode(&AlterReplicaLogDirsResponse::default().with_results(results))
}

fn topic_partitions_entry(
    t: &strom_broker::Topic,
    node: i32,
    from: i32,
    limit: usize,
) -> DescribeTopicPartitionsResponseTopic {
    let partitions = t
        .partitions()
        .iter()
        .filter(|p| p.index() >= from)
        .take(limit)
        .map(|p| {
            let online = p.is_online();
            DescribeTopicPartitionsResponsePartition::default()
                .with_error_code(if online {
                    0
                } else {
                    E::LeaderNotAvailable.code()
                })
                .with_partition_index(p.index())
                .with_leader_id(BrokerId(if online { node } else { -1 }))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(if online { vec![BrokerId(node)] } else { vec![] })
                .with_eligible_leader_replicas(Some(vec![]))
                .with_last_known_elr(Some(vec![]))
                .with_offline_replicas(if online { vec![] } else { vec![BrokerId(node)] })
        })
        .collect();
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(tn(t.name())))
        .with_topic_id(uuid::Uuid::from_bytes(t.id()))
        .with_is_internal(t.is_internal())
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

pub(crate) fn describe_topic_partitions(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeTopicPartitionsRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let node = broker.node_id();
    // Sorted names: the requested ones, or every topic.
    let mut names: Vec<String> = if r.topics.is_empty() {
        broker.topics().into_iter().map(|t| t.name).collect()
    } else {
        r.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let mut budget = r.response_partition_limit.clamp(1, DESCRIBE_PARTITIONS_MAX) as usize;
    let (start_topic, start_partition) = match &r.cursor {
        Some(c) => (c.topic_name.to_string(), c.partition_index.max(0)),
        None => (String::new(), 0),
    };
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.iter().filter(|n| n.as_str() >= start_topic.as_str()) {
        let from = if *name == start_topic {
            start_partition
        } else {
            0
        };
        let Some(t) = broker.topic(name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(E::UnknownTopicOrPartition.code())
                    .with_name(Some(tn(name.as_str())))
                    .with_topic_authorized_operations(i32::MIN),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(tn(name.as_str()))
                    .with_partition_index(from),
            );
            break;
        }
        let count = t.partitions().iter().filter(|p| p.index() >= from).count();
        let entry = topic_partitions_entry(&t, node, from, budget);
        let taken = entry.partitions.len();
        budget -= taken;
        topics.push(entry);
        if taken < count {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(tn(name.as_str()))
                    .with_partition_index(from + taken as i32),
            );
            break;
        }
    }
    req.encode(
        &DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(next_cursor),
    )
}

pub(crate) fn elect_leaders(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: ElectLeadersRequest = req.decode()?;
    let broker = &req.ctx.broker;
    if let Some((c, _)) = req.cluster_denied(Operation::Alter) {
        return req.encode(&ElectLeadersResponse::default().with_error_code(c));
    }
    if r.election_type != 0 && r.election_type != 1 {
        return req
            .encode(&ElectLeadersResponse::default().with_error_code(E::InvalidRequest.code()));
    }
    // One replica per partition, always the leader: no election is ever needed. Asked for
    // every partition (null), Kafka lists only those it elected: none.
    let results = match r.topic_partitions {
        None => Vec::new(),
        Some(tps) => tps
            .into_iter()
            .map(|t| {
                let partition_result = t
                    .partitions
                    .iter()
                    .map(|&p| {
                        let c = match partition_error(broker, &t.topic, p) {
                            0 => E::ElectionNotNeeded.code(),
                            c => c,
                        };
                        let msg = (c == E::ElectionNotNeeded.code())
                            .then(|| sb("Leader election not needed for topic partition."));
                        PartitionResult::default()
                            .with_partition_id(p)
                            .with_error_code(c)
                            .with_error_message(msg)
                    })
                    .collect();
                ReplicaElectionResult::default()
                    .with_topic(t.topic)
                    .with_partition_result(partition_result)
            })
            .collect(),
    };
    req.encode(&ElectLeadersResponse::default().with_replica_election_results(results))
}

pub(crate) fn alter_partition_reassignments(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: AlterPartitionReassignmentsRequest = req.decode()?;
    let broker = &req.ctx.broker;
    if let Some((c, msg)) = req.cluster_denied(Operation::Alter) {
        return req.encode(
            &AlterPartitionReassignmentsResponse::default()
                .with_error_code(c)
                .with_error_message(Some(sb(msg))),
        );
    }
    let node = broker.node_id();
    let responses = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (c, msg) = match partition_error(broker, &t.name, p.partition_index) {
                        0 => match &p.replicas {
                            // Cancelling: nothing is in progress.
                            None => (
                                E::NoReassignmentInProgress.code(),
                                Some("no partition reassignment is in progress".to_string()),
                            ),
                            // The current assignment: done at once.
                            Some(rs) if rs.len() == 1 && rs[0].0 == node => (0, None),
                            Some(rs) if rs.is_empty() => (
                                E::InvalidReplicaAssignment.code(),
                                Some("the replica list is empty".to_string()),
                            ),
                            Some(rs) => (
                                E::InvalidReplicaAssignment.code(),
                                Some(format!(
                                    "replicas {:?} include a broker that is not registered (this cluster is node {node})",
                                    rs.iter().map(|b| b.0).collect::<Vec<_>>()
                                )),
                            ),
                        },
                        c => (c, None),
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(c)
                        .with_error_message(msg.map(sb))
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    req.encode(
        &AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(r.allow_replication_factor_change)
            .with_responses(responses),
    )
}

pub(crate) fn list_partition_reassignments(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let _r: ListPartitionReassignmentsRequest = req.decode()?;
    if let Some((c, msg)) = req.cluster_denied(Operation::Describe) {
        return req.encode(
            &ListPartitionReassignmentsResponse::default()
                .with_error_code(c)
                .with_error_message(Some(sb(msg))),
        );
    }
    // Nothing is ever being reassigned (Kafka lists only ongoing reassignments, and skips
    // unknown partitions).
    req.encode(&ListPartitionReassignmentsResponse::default())
}

pub(crate) fn describe_quorum(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeQuorumRequest = req.decode()?;
    let v = req.version;
    let ctx = req.ctx;
    let node = ctx.broker.node_id();
    let now = strom_log::now_ms();
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    if t.topic_name.as_str() != METADATA_TOPIC || p.partition_index != 0 {
                        return quorum::PartitionData::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(E::UnknownTopicOrPartition.code())
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(-1)
                            .with_high_watermark(-1);
                    }
                    let me = ReplicaState::default()
                        .with_replica_id(BrokerId(node))
                        .with_log_end_offset(0)
                        .with_last_fetch_timestamp(now)
                        .with_last_caught_up_timestamp(now);
                    quorum::PartitionData::default()
                        .with_partition_index(0)
                        .with_leader_id(BrokerId(node))
                        .with_leader_epoch(0)
                        .with_high_watermark(0)
                        .with_current_voters(vec![me])
                })
                .collect();
            quorum::TopicData::default()
                .with_topic_name(t.topic_name)
                .with_partitions(partitions)
        })
        .collect();
    let mut resp = DescribeQuorumResponse::default().with_topics(topics);
    if v >= 2 {
        let (host, port) = advertised(&req);
        resp = resp.with_nodes(vec![Node::default()
            .with_node_id(BrokerId(node))
            .with_listeners(vec![Listener::default()
                .with_name(sb(req.listener.name.clone()))
                .with_host(sb(host))
                .with_port(port as u16)])]);
    }
    req.encode(&resp)
}

pub(crate) async fn alter_configs(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: AlterConfigsRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let mut responses = Vec::with_capacity(r.resources.len());
    for res in r.resources {
        let denied = crate::admin::config_denied(
            &req,
            Operation::AlterConfigs,
            res.resource_type,
            &res.resource_name,
        );
        let (c, msg) = if let Some((c, m)) = denied {
            (c, Some(m))
        } else if res.resource_type != RESOURCE_TOPIC {
            (
                E::InvalidRequest.code(),
                Some(format!(
                    "altering resource type {} is not supported",
                    res.resource_type
                )),
            )
        } else {
            let configs: Vec<(String, Option<String>)> = res
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            match broker
                .replace_topic_config(&res.resource_name, &configs, r.validate_only)
                .await
            {
                Ok(()) => (0, None),
                Err(e) => (code(&e), Some(e.to_string())),
            }
        };
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(c)
                .with_error_message(msg.map(sb))
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name),
        );
    }
    req.encode(&AlterConfigsResponse::default().with_responses(responses))
}

pub(crate) fn offset_for_leader_epoch(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: OffsetForLeaderEpochRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let out = EpochEndOffset::default().with_partition(p.partition);
                    if broker.is_clustered() {
                        // The leader-epoch cache: where the asked epoch ends in this log.
                        return match broker.epoch_end_offset(
                            &t.topic,
                            p.partition,
                            p.leader_epoch,
                            p.current_leader_epoch,
                        ) {
                            Ok((epoch, end)) => out.with_leader_epoch(epoch).with_end_offset(end),
                            Err(e) => out
                                .with_error_code(code(&e))
                                .with_leader_epoch(-1)
                                .with_end_offset(-1),
                        };
                    }
                    let end = broker
                        .partition(&t.topic, p.partition)
                        .and_then(|part| Ok(part.log()?.log_end_offset()));
                    match end {
                        Err(e) => out
                            .with_error_code(code(&e))
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                        // The only leader epoch is 0.
                        Ok(_) if p.current_leader_epoch > 0 => out
                            .with_error_code(E::UnknownLeaderEpoch.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                        Ok(_) if p.current_leader_epoch < -1 => out
                            .with_error_code(E::FencedLeaderEpoch.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                        // An epoch after the latest (or none) is undefined.
                        Ok(_) if p.leader_epoch != 0 => {
                            out.with_leader_epoch(-1).with_end_offset(-1)
                        }
                        Ok(end) => out.with_leader_epoch(0).with_end_offset(end),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    req.encode(&OffsetForLeaderEpochResponse::default().with_topics(topics))
}

pub(crate) fn describe_client_quotas(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeClientQuotasRequest = req.decode()?;
    let broker = &req.ctx.broker;
    if let Some((c, msg)) = req.cluster_denied(Operation::DescribeConfigs) {
        return req.encode(
            &DescribeClientQuotasResponse::default()
                .with_error_code(c)
                .with_error_message(Some(sb(msg))),
        );
    }
    let mut filter = Vec::with_capacity(r.components.len());
    for c in &r.components {
        let m = match (c.match_type, &c._match) {
            (0, Some(name)) => QuotaMatch::Exact(name.to_string()),
            (1, _) => QuotaMatch::Default,
            (2, _) => QuotaMatch::Any,
            _ => {
                return req.encode(
                    &DescribeClientQuotasResponse::default()
                        .with_error_code(E::InvalidRequest.code())
                        .with_error_message(Some(sb(format!(
                            "invalid match type {} for entity type {}",
                            c.match_type, c.entity_type
                        )))),
                )
            }
        };
        filter.push((c.entity_type.to_string(), m));
    }
    let quotas = match broker.client_quotas() {
        Ok(q) => q,
        Err(e) => {
            return req.encode(
                &DescribeClientQuotasResponse::default()
                    .with_error_code(code(&e))
                    .with_error_message(Some(sb(e.to_string()))),
            )
        }
    };
    let entries = quotas
        .describe(&filter, r.strict)
        .into_iter()
        .map(|(entity, values)| {
            EntryData::default()
                .with_entity(
                    entity
                        .into_iter()
                        .map(|(t, n)| {
                            EntityData::default()
                                .with_entity_type(sb(t))
                                .with_entity_name(n.map(sb))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .into_iter()
                        .map(|(k, v)| ValueData::default().with_key(sb(k)).with_value(v))
                        .collect(),
                )
        })
        .collect();
    req.encode(&DescribeClientQuotasResponse::default().with_entries(Some(entries)))
}

pub(crate) fn alter_client_quotas(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: AlterClientQuotasRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let mut results = Vec::with_capacity(r.entries.len());
    let mut changes: Vec<(QuotaEntity, QuotaOps)> = Vec::new();
    let denied = req.cluster_denied(Operation::AlterConfigs);
    for e in &r.entries {
        let entity: QuotaEntity = e
            .entity
            .iter()
            .map(|d| {
                (
                    d.entity_type.to_string(),
                    d.entity_name.as_ref().map(|n| n.to_string()),
                )
            })
            .collect();
        let ops: QuotaOps = e
            .ops
            .iter()
            .map(|o| (o.key.to_string(), (!o.remove).then_some(o.value)))
            .collect();
        let checked = ClientQuotas::check(&entity, &ops);
        let (c, msg) = match (&denied, &checked) {
            (Some((c, m)), _) => (*c, Some(m.clone())),
            (None, Ok(())) => (0, None),
            (None, Err(err)) => (E::InvalidRequest.code(), Some(err.to_string())),
        };
        if c == 0 {
            changes.push((entity, ops));
        }
        results.push(
            AlteredEntry::default()
                .with_error_code(c)
                .with_error_message(msg.map(sb))
                .with_entity(
                    e.entity
                        .iter()
                        .map(|d| {
                            AlteredEntity::default()
                                .with_entity_type(d.entity_type.clone())
                                .with_entity_name(d.entity_name.clone())
                        })
                        .collect(),
                ),
        );
    }
    if !r.validate_only && !changes.is_empty() {
        if let Err(e) = broker.client_quotas().and_then(|q| q.alter(&changes)) {
            let c = code(&e);
            for res in results.iter_mut().filter(|r| r.error_code == 0) {
                res.error_code = c;
                res.error_message = Some(sb(e.to_string()));
            }
        }
    }
    req.encode(&AlterClientQuotasResponse::default().with_entries(results))
}

pub(crate) fn list_config_resources(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: ListConfigResourcesRequest = req.decode()?;
    let broker = &req.ctx.broker;
    // v0 (ListClientMetricsResources) lists client-metrics resources only: there are none.
    let types: Vec<i8> = if req.version == 0 {
        vec![]
    } else if r.resource_types.is_empty() {
        vec![RESOURCE_TOPIC, RESOURCE_BROKER]
    } else {
        r.resource_types.clone()
    };
    let mut resources = Vec::new();
    for t in types {
        match t {
            RESOURCE_TOPIC => {
                for topic in broker.topics() {
                    resources.push(
                        ConfigResource::default()
                            .with_resource_name(sb(topic.name))
                            .with_resource_type(RESOURCE_TOPIC),
                    );
                }
            }
            RESOURCE_BROKER => resources.push(
                ConfigResource::default()
                    .with_resource_name(sb(broker.node_id().to_string()))
                    .with_resource_type(RESOURCE_BROKER),
            ),
            // Groups (32), client metrics (16), broker loggers (8): none have configs
            // listed here.
            8 | 16 | 32 => {}
            _ => {
                return req.encode(
                    &ListConfigResourcesResponse::default()
                        .with_error_code(E::UnsupportedVersion.code()),
                )
            }
        }
    }
    req.encode(&ListConfigResourcesResponse::default().with_config_resources(resources))
}

/// The one client-metrics subscription: none configured, so no metric is requested. A
/// fixed id, so pushes that carry it are accepted.
const SUBSCRIPTION_ID: i32 = 0x5354_524d;
/// Kafka's `telemetry.max.bytes` default and its default push interval.
const TELEMETRY_MAX_BYTES: i32 = 1 << 20;
const PUSH_INTERVAL_MS: i32 = 300_000;

pub(crate) fn get_telemetry_subscriptions(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: GetTelemetrySubscriptionsRequest = req.decode()?;
    let id = if r.client_instance_id.is_nil() {
        uuid::Uuid::from_bytes(random_uuid())
    } else {
        r.client_instance_id
    };
    req.encode(
        &GetTelemetrySubscriptionsResponse::default()
            .with_client_instance_id(id)
            .with_subscription_id(SUBSCRIPTION_ID)
            // zstd, lz4, gzip, snappy: as Kafka lists them.
            .with_accepted_compression_types(vec![4, 3, 1, 2])
            .with_push_interval_ms(PUSH_INTERVAL_MS)
            .with_telemetry_max_bytes(TELEMETRY_MAX_BYTES)
            .with_delta_temporality(true)
            .with_requested_metrics(vec![]),
    )
}

pub(crate) fn push_telemetry(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: PushTelemetryRequest = req.decode()?;
    let c = if r.client_instance_id.is_nil() {
        E::InvalidRequest.code()
    } else if r.subscription_id != SUBSCRIPTION_ID {
        E::UnknownSubscriptionId.code()
    } else if r.metrics.len() > TELEMETRY_MAX_BYTES as usize {
        E::TelemetryTooLarge.code()
    } else {
        // No metric is requested: nothing to export.
        0
    };
    req.encode(&PushTelemetryResponse::default().with_error_code(c))
}

fn random_uuid() -> [u8; 16] {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    if b == [0; 16] {
        b = strom_log::now_ms()
            .to_be_bytes()
            .repeat(2)
            .try_into()
            .unwrap_or([1; 16]);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}
