//! Consumer-group admin: coordinator lookup, describe, committed offsets, reset, delete.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::client::topic_name;
use crate::conn::Connection;
use crate::{check, Client, Result};

/// A member of a described group.
#[derive(Debug, Clone)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
}

/// A described group.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

fn gid(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

impl Client {
    /// Connection to the coordinator of `group`.
    pub async fn coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        let v = self.version::<FindCoordinatorRequest>()?;
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let resp = self.bootstrap().call(&req, v).await?;
        check(resp.error_code, || format!("group {group}"))?;
        self.broker(resp.node_id.0).await
    }

    /// DescribeGroups for one group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let conn = self.coordinator(group).await?;
        let v = self.version::<DescribeGroupsRequest>()?;
        let resp = conn
            .call(
                &DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
                v,
            )
            .await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| crate::Error::Protocol("empty DescribeGroups response".into()))?;
        check(g.error_code, || format!("group {group}"))?;
        Ok(GroupDescription {
            group: group.to_string(),
            state: g.group_state.as_str().to_string(),
            protocol_type: g.protocol_type.as_str().to_string(),
            protocol: g.protocol_data.as_str().to_string(),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.as_str().to_string(),
                    client_id: m.client_id.as_str().to_string(),
                    client_host: m.client_host.as_str().to_string(),
                })
                .collect(),
        })
    }

    /// Committed offsets of a group: (topic, partition, offset), all topics.
    pub async fn committed_offsets(&self, group: &str) -> Result<Vec<(String, i32, i64)>> {
        let conn = self.coordinator(group).await?;
        let v = self.version::<OffsetFetchRequest>()?.min(7);
        let req = OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(None);
        let resp = conn.call(&req, v).await?;
        check(resp.error_code, || format!("group {group}"))?;
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, || {
                    format!("group {group} {}/{}", t.name.0.as_str(), p.partition_index)
                })?;
                out.push((
                    t.name.0.as_str().to_string(),
                    p.partition_index,
                    p.committed_offset,
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Commits offsets for an empty group (admin reset: generation -1, no member).
    pub async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<()> {
        let conn = self.coordinator(group).await?;
        let v = self.version::<OffsetCommitRequest>()?;
        let req = OffsetCommitRequest::default()
            .with_group_id(gid(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_retention_time_ms(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|&(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_committed_leader_epoch(-1)
                        })
                        .collect(),
                )]);
        let resp = conn.call(&req, v).await?;
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, || {
                    format!("group {group} {topic}/{}", p.partition_index)
                })?;
            }
        }
        Ok(())
    }

    /// Deletes a group (must be empty).
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let conn = self.coordinator(group).await?;
        let v = self.version::<DeleteGroupsRequest>()?;
        let resp = conn
            .call(
                &DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]),
                v,
            )
            .await?;
        for r in resp.results {
            check(r.error_code, || format!("group {group}"))?;
        }
        Ok(())
    }
}

/// A KIP-848 consumer group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerGroupDescription {
    pub group: String,
    pub state: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    /// Members (their assignment is `ShareMember::assignment`'s shape).
    pub members: Vec<ShareMember>,
}

impl Client {
    /// ConsumerGroupDescribe of one group; `None` if it is not a KIP-848 consumer group (or
    /// the broker has no ConsumerGroupDescribe).
    pub async fn describe_consumer_group(
        &self,
        group: &str,
    ) -> Result<Option<ConsumerGroupDescription>> {
        let Ok(v) = self.version::<ConsumerGroupDescribeRequest>() else {
            return Ok(None);
        };
        let conn = self.coordinator(group).await?;
        let resp = conn
            .call(
                &ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid(group)]),
                v,
            )
            .await?;
        let Some(g) = resp.groups.into_iter().next() else {
            return Ok(None);
        };
        if g.error_code != 0 {
            return Ok(None);
        }
        Ok(Some(ConsumerGroupDescription {
            group: group.to_string(),
            state: g.group_state.to_string(),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor_name.to_string(),
            members: g
                .members
                .into_iter()
                .map(|m| ShareMember {
                    member_id: m.member_id.to_string(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: m
                        .assignment
                        .topic_partitions
                        .into_iter()
                        .map(|t| (t.topic_name.0.to_string(), t.partitions))
                        .collect(),
                })
                .collect(),
        }))
    }
}

/// A member of a described share group.
#[derive(Debug, Clone)]
pub struct ShareMember {
    pub member_id: String,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    /// Assigned (topic, partitions).
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A share group as ShareGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ShareGroupDescription {
    pub group: String,
    pub state: String,
    pub group_epoch: i32,
    pub members: Vec<ShareMember>,
}

impl Client {
    /// ShareGroupDescribe of one group; `None` if it is not a share group (or unknown).
    pub async fn describe_share_group(&self, group: &str) -> Result<Option<ShareGroupDescription>> {
        let Ok(v) = self.version::<ShareGroupDescribeRequest>() else {
            return Ok(None);
        };
        let conn = self.coordinator(group).await?;
        let resp = conn
            .call(
                &ShareGroupDescribeRequest::default().with_group_ids(vec![gid(group)]),
                v,
            )
            .await?;
        let Some(g) = resp.groups.into_iter().next() else {
            return Ok(None);
        };
        if g.error_code != 0 {
            return Ok(None);
        }
        Ok(Some(ShareGroupDescription {
            group: group.to_string(),
            state: g.group_state.to_string(),
            group_epoch: g.group_epoch,
            members: g
                .members
                .into_iter()
                .map(|m| ShareMember {
                    member_id: m.member_id.to_string(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: m
                        .assignment
                        .topic_partitions
                        .into_iter()
                        .map(|t| (t.topic_name.0.to_string(), t.partitions))
                        .collect(),
                })
                .collect(),
        }))
    }

    /// The start offset of every share-partition of a share group: (topic, partition,
    /// start offset; -1 = not initialised yet).
    pub async fn share_group_offsets(&self, group: &str) -> Result<Vec<(String, i32, i64)>> {
        let conn = self.coordinator(group).await?;
        let v = self.version::<DescribeShareGroupOffsetsRequest>()?;
        let req = DescribeShareGroupOffsetsRequest::default().with_groups(vec![
            describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup::default()
                .with_group_id(gid(group))
                .with_topics(None),
        ]);
        let resp = conn.call(&req, v).await?;
        let mut out = Vec::new();
        for g in resp.groups {
            check(g.error_code, || {
                format!(
                    "group {group} {}",
                    g.error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default()
                )
            })?;
            for t in g.topics {
                for p in t.partitions {
                    out.push((
                        t.topic_name.0.to_string(),
                        p.partition_index,
                        p.start_offset,
                    ));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
