//! Cluster mode's partition admin: AlterPartitionReassignments, ListPartitionReassignments
//! and ElectLeaders, translated to the cluster's [`ClusterHandle`] (the standalone forms,
//! where one broker holds every partition, are `admin2`'s).

use kafka_protocol::messages::alter_partition_reassignments_response::{
    AlterPartitionReassignmentsResponse, ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{
    ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    ListPartitionReassignmentsResponse, OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::ResponseError as E;
use strom_broker::cluster::{ClusterHandle, Election};
use strom_broker::security::acl::Operation;

use crate::codes::code;
use crate::server::{sb, Fatal, Reply, Req};

fn ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().map(|&b| BrokerId(b)).collect()
}

fn name(s: &str) -> TopicName {
    TopicName(sb(s.to_string()))
}

pub(crate) async fn alter_partition_reassignments(
    mut req: Req<'_>,
    cluster: &dyn ClusterHandle,
) -> Result<Reply, Fatal> {
    let r: AlterPartitionReassignmentsRequest = req.decode()?;
    if let Some((c, msg)) = req.cluster_denied(Operation::Alter) {
        return req.encode(
            &AlterPartitionReassignmentsResponse::default()
                .with_error_code(c)
                .with_error_message(Some(sb(msg))),
        );
    }
    let mut responses = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let target = p
                .replicas
                .as_ref()
                .map(|rs| rs.iter().map(|b| b.0).collect());
            let done = cluster
                .reassign(t.name.to_string(), p.partition_index, target)
                .await;
            let (c, msg) = match done {
                Ok(()) => (0, None),
                Err(e) => (code(&e), Some(sb(e.to_string()))),
            };
            partitions.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(c)
                    .with_error_message(msg),
            );
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    req.encode(
        &AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(r.allow_replication_factor_change)
            .with_responses(responses),
    )
}

pub(crate) fn list_partition_reassignments(
    mut req: Req<'_>,
    cluster: &dyn ClusterHandle,
) -> Result<Reply, Fatal> {
    let r: ListPartitionReassignmentsRequest = req.decode()?;
    if let Some((c, msg)) = req.cluster_denied(Operation::Describe) {
        return req.encode(
            &ListPartitionReassignmentsResponse::default()
                .with_error_code(c)
                .with_error_message(Some(sb(msg))),
        );
    }
    let meta = cluster.metadata();
    let wanted = |topic: &str, p: i32| match &r.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.name.as_str() == topic && t.partition_indexes.contains(&p)),
    };
    let mut topics = Vec::new();
    for (topic, a) in &meta.topics {
        let mut ongoing = Vec::new();
        for (i, target) in a.targets.iter().enumerate() {
            let (Some(target), Some(current)) = (target, a.partitions.get(i)) else {
                continue;
            };
            if !wanted(topic, i as i32) {
                continue;
            }
            let adding: Vec<i32> = target
                .iter()
                .copied()
                .filter(|b| !current.isr.contains(b) || !current.replicas.contains(b))
                .collect();
            let removing: Vec<i32> = current
                .replicas
                .iter()
                .copied()
                .filter(|b| !target.contains(b))
                .collect();
            ongoing.push(
                OngoingPartitionReassignment::default()
                    .with_partition_index(i as i32)
                    .with_replicas(ids(&current.replicas))
                    .with_adding_replicas(ids(&adding))
                    .with_removing_replicas(ids(&removing)),
            );
        }
        if !ongoing.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(name(topic))
                    .with_partitions(ongoing),
            );
        }
    }
    req.encode(&ListPartitionReassignmentsResponse::default().with_topics(topics))
}

pub(crate) async fn elect_leaders(
    mut req: Req<'_>,
    cluster: &dyn ClusterHandle,
) -> Result<Reply, Fatal> {
    let r: ElectLeadersRequest = req.decode()?;
    if let Some((c, _)) = req.cluster_denied(Operation::Alter) {
        return req.encode(&ElectLeadersResponse::default().with_error_code(c));
    }
    let how = match r.election_type {
        0 => Election::Preferred,
        1 => Election::Unclean,
        _ => {
            return req
                .encode(&ElectLeadersResponse::default().with_error_code(E::InvalidRequest.code()))
        }
    };
    // Every partition (null): only those elected are listed, as Kafka does.
    let all = r.topic_partitions.is_none();
    let asked: Vec<(String, Vec<i32>)> = match r.topic_partitions {
        Some(tps) => tps
            .into_iter()
            .map(|t| (t.topic.to_string(), t.partitions))
            .collect(),
        None => cluster
            .metadata()
            .topics
            .iter()
            .map(|(n, a)| (n.clone(), (0..a.partitions.len() as i32).collect()))
            .collect(),
    };
    let mut results = Vec::new();
    for (topic, partitions) in asked {
        let mut out = Vec::new();
        for p in partitions {
            let (c, msg) = match cluster.elect(topic.clone(), p, how).await {
                Ok(true) => (0, None),
                Ok(false) => (
                    E::ElectionNotNeeded.code(),
                    Some(sb("Leader election not needed for topic partition.")),
                ),
                Err(e) => (code(&e), Some(sb(e.to_string()))),
            };
            if all && c != 0 {
                continue;
            }
            out.push(
                PartitionResult::default()
                    .with_partition_id(p)
                    .with_error_code(c)
                    .with_error_message(msg),
            );
        }
        if !out.is_empty() || !all {
            results.push(
                ReplicaElectionResult::default()
                    .with_topic(name(&topic))
                    .with_partition_result(out),
            );
        }
    }
    req.encode(&ElectLeadersResponse::default().with_replica_election_results(results))
}
