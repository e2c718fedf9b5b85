//! Topics and groups: create, delete, list, describe (with lag per partition).

use std::collections::BTreeMap;

use strom_broker::quota::QuotaKind;
use strom_broker::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use tonic::{Code, Status};

use crate::pb;
use crate::{broker_status, invalid, status, Caller, Door};

pub(crate) async fn create_topic(
    door: &Door,
    caller: &Caller,
    req: pb::CreateTopicRequest,
) -> Result<pb::TopicInfo, Status> {
    if !caller.may(door, Operation::Create, ResourceType::Cluster, CLUSTER_NAME) {
        caller.allow(door, Operation::Create, ResourceType::Topic, &req.name)?;
    }
    caller.quota_gate(door, QuotaKind::ControllerMutation, 0)?;
    door.broker
        .admin_create_topic(
            &req.name,
            req.partitions.unwrap_or(-1),
            -1,
            req.configs.into_iter().collect(),
        )
        .await
        .map_err(broker_status)?;
    let info = describe(door, &req.name)?;
    caller
        .quota_charge(door, QuotaKind::ControllerMutation, info.partitions.len())
        .await;
    Ok(info)
}

pub(crate) async fn delete_topic(door: &Door, caller: &Caller, name: &str) -> Result<(), Status> {
    caller.allow(door, Operation::Delete, ResourceType::Topic, name)?;
    caller.quota_gate(door, QuotaKind::ControllerMutation, 0)?;
    let partitions = door.broker.topic(name).map_or(0, |t| t.partitions().len());
    door.broker
        .admin_delete_topic(name)
        .await
        .map_err(broker_status)?;
    caller
        .quota_charge(door, QuotaKind::ControllerMutation, partitions)
        .await;
    Ok(())
}

pub(crate) fn list_topics(door: &Door, caller: &Caller) -> pb::ListTopicsResponse {
    pb::ListTopicsResponse {
        topics: door
            .broker
            .topics()
            .into_iter()
            .filter(|t| caller.may(door, Operation::Describe, ResourceType::Topic, &t.name))
            .map(|t| pb::TopicSummary {
                name: t.name,
                partitions: t.partitions,
                internal: t.internal,
            })
            .collect(),
    }
}

/// A topic's partitions (offsets, sizes, offline reasons) and every topic config.
pub(crate) fn describe(door: &Door, name: &str) -> Result<pb::TopicInfo, Status> {
    let t = door
        .broker
        .topic(name)
        .ok_or_else(|| crate::produce::unknown_topic(name))?;
    let partitions = t
        .partitions()
        .iter()
        .map(|p| match (p.log(), p.offline_reason()) {
            (Ok(log), None) => pb::PartitionInfo {
                partition: p.index(),
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
                size_bytes: log.size_bytes() as i64,
                offline: String::new(),
            },
            (_, reason) => pb::PartitionInfo {
                partition: p.index(),
                log_start_offset: -1,
                log_end_offset: -1,
                size_bytes: 0,
                offline: reason.unwrap_or_else(|| "offline".into()),
            },
        })
        .collect();
    let config = t.config();
    let configs = strom_broker::config::TOPIC_CONFIGS
        .iter()
        .map(|d| {
            (
                d.name.to_string(),
                config.get(d.name).map(|(v, _)| v).unwrap_or_default(),
            )
        })
        .collect();
    Ok(pb::TopicInfo {
        name: name.to_string(),
        id: t.id().iter().map(|b| format!("{b:02x}")).collect(),
        partitions,
        configs,
    })
}

pub(crate) fn list_groups(door: &Door, caller: &Caller) -> pb::ListGroupsResponse {
    let mut groups: Vec<pb::GroupSummary> = door
        .groups
        .list_typed()
        .into_iter()
        .map(|(group, protocol_type, state, _)| pb::GroupSummary {
            group,
            protocol_type,
            state: state.to_string(),
        })
        .collect();
    groups.extend(door.shares.list().into_iter().map(|g| pb::GroupSummary {
        group: g.group,
        protocol_type: "share".into(),
        state: g.state.name().to_string(),
    }));
    groups.retain(|g| caller.may(door, Operation::Describe, ResourceType::Group, &g.group));
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    pb::ListGroupsResponse { groups }
}

fn partitions(a: &BTreeMap<String, std::collections::BTreeSet<i32>>) -> Vec<pb::TopicPartition> {
    a.iter()
        .flat_map(|(t, ps)| {
            ps.iter().map(move |p| pb::TopicPartition {
                topic: t.clone(),
                partition: *p,
            })
        })
        .collect()
}

/// A group's members and its committed offsets with their lag (share groups: members and
/// their assignments).
pub(crate) fn describe_group(
    door: &Door,
    caller: &Caller,
    group: &str,
) -> Result<pb::GroupInfo, Status> {
    if group.is_empty() {
        return Err(invalid("group is empty"));
    }
    caller.allow(door, Operation::Describe, ResourceType::Group, group)?;
    if door.shares.is_share_group(group) {
        let d = door
            .shares
            .describe(group)
            .map_err(crate::queue::share_status)?;
        let members = d
            .members
            .into_iter()
            .map(|m| pb::GroupMember {
                member_id: m.member_id,
                client_id: m.client_id,
                client_host: m.client_host,
                assignment: m
                    .assignment
                    .iter()
                    .flat_map(|a| {
                        a.partitions.iter().map(|p| pb::TopicPartition {
                            topic: a.topic.clone(),
                            partition: *p,
                        })
                    })
                    .collect(),
            })
            .collect();
        return Ok(pb::GroupInfo {
            group: group.to_string(),
            state: d.state.name().to_string(),
            protocol_type: "share".into(),
            members,
            offsets: Vec::new(),
        });
    }
    let (state, protocol_type, members) = match door.groups.describe_consumer_group(group) {
        Ok(d) => (
            d.state.name().to_string(),
            "consumer".to_string(),
            d.members
                .into_iter()
                .map(|m| pb::GroupMember {
                    assignment: partitions(&m.assignment),
                    member_id: m.member_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                })
                .collect::<Vec<_>>(),
        ),
        Err(_) => {
            let d = door.groups.describe(group);
            let members = d
                .members
                .into_iter()
                .map(|m| pb::GroupMember {
                    assignment: door
                        .groups
                        .decode_classic_assignment(&m.assignment)
                        .map(|a| partitions(&a))
                        .unwrap_or_default(),
                    member_id: m.member_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                })
                .collect();
            (d.state.name().to_string(), d.protocol_type, members)
        }
    };
    let committed = door.groups.fetch_offsets(group, None);
    if state == "Dead" && committed.is_empty() {
        return Err(status(
            Code::NotFound,
            "GROUP_ID_NOT_FOUND",
            format!("no group {group:?}"),
        ));
    }
    let offsets = committed
        .into_iter()
        .filter(|(t, _, _)| caller.may(door, Operation::Describe, ResourceType::Topic, t))
        .map(|(topic, partition, c)| {
            let (start, end) = door
                .broker
                .partition(&topic, partition)
                .ok()
                .and_then(|p| {
                    let log = p.log().ok()?;
                    Some((log.log_start_offset(), log.log_end_offset()))
                })
                .unwrap_or((0, -1));
            let committed_offset = c.map_or(-1, |c| c.offset);
            let base = if committed_offset >= 0 {
                committed_offset
            } else {
                start
            };
            pb::PartitionLag {
                topic,
                partition,
                committed_offset,
                log_end_offset: end,
                lag: if end >= 0 { (end - base).max(0) } else { -1 },
            }
        })
        .collect();
    Ok(pb::GroupInfo {
        group: group.to_string(),
        state,
        protocol_type,
        members,
        offsets,
    })
}
