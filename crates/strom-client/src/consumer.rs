//! A consumer-group member (Kafka's classic protocol, `range` assignor): join, assign when
//! leader, sync, heartbeat, commit, leave. Used by `strom consume --group`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::client::topic_name;
use crate::conn::Connection;
use crate::{check, Client, Error, Result};

const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn versioned<T: Encodable>(v: &T) -> Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_i16(0);
    v.encode(&mut out, 0)
        .map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(out.freeze())
}

fn subscription_topics(mut b: Bytes) -> Vec<String> {
    if b.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([b[0], b[1]]).clamp(0, 3);
    let mut body = b.split_off(2);
    ConsumerProtocolSubscription::decode(&mut body, version)
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

fn assignment_partitions(mut b: Bytes) -> Vec<(String, i32)> {
    if b.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([b[0], b[1]]).clamp(0, 3);
    let mut body = b.split_off(2);
    ConsumerProtocolAssignment::decode(&mut body, version)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.to_string(), *p)))
                .collect()
        })
        .unwrap_or_default()
}

/// The state of this member in its group.
pub struct GroupConsumer {
    client: Arc<Client>,
    coordinator: Arc<Connection>,
    group: String,
    topics: Vec<String>,
    member_id: String,
    generation: i32,
    session_timeout_ms: i32,
}

/// What a heartbeat found.
#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Still a member of the current generation.
    Ok,
    /// The group rebalances (or this member was dropped): call [`GroupConsumer::join`].
    Rejoin,
}

impl GroupConsumer {
    /// Looks up the coordinator; call [`GroupConsumer::join`] next.
    pub async fn new(client: Arc<Client>, group: &str, topics: Vec<String>) -> Result<Self> {
        let coordinator = client.coordinator(group).await?;
        Ok(Self {
            client,
            coordinator,
            group: group.to_string(),
            topics,
            member_id: String::new(),
            generation: -1,
            session_timeout_ms: 10_000,
        })
    }

    /// Joins (or rejoins) and syncs; returns this member's partitions.
    pub async fn join(&mut self) -> Result<Vec<(String, i32)>> {
        let sub = versioned(
            &ConsumerProtocolSubscription::default()
                .with_topics(self.topics.iter().map(|t| s(t)).collect()),
        )?;
        for _ in 0..20 {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_session_timeout_ms(self.session_timeout_ms)
                .with_rebalance_timeout_ms(30_000)
                .with_member_id(s(&self.member_id))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(sub.clone())]);
            let resp = self.coordinator.call(&req, 5).await?;
            match resp.error_code {
                0 => {}
                MEMBER_ID_REQUIRED => {
                    self.member_id = resp.member_id.to_string();
                    continue;
                }
                UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION => {
                    self.member_id.clear();
                    continue;
                }
                REBALANCE_IN_PROGRESS => continue,
                code => check(code, || format!("JoinGroup {}", self.group))?,
            }
            self.member_id = resp.member_id.to_string();
            self.generation = resp.generation_id;
            let assignments = if resp.leader == resp.member_id {
                self.assign(&resp.members).await?
            } else {
                Vec::new()
            };
            let sync = SyncGroupRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_generation_id(self.generation)
                .with_member_id(s(&self.member_id))
                .with_assignments(assignments);
            let resp = self.coordinator.call(&sync, 3).await?;
            match resp.error_code {
                0 => return Ok(assignment_partitions(resp.assignment)),
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => continue,
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                code => check(code, || format!("SyncGroup {}", self.group))?,
            }
        }
        Err(Error::Invalid(format!(
            "group {} kept rebalancing",
            self.group
        )))
    }

    /// Kafka's range assignor over the members' subscriptions.
    async fn assign(
        &self,
        members: &[join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let subs: Vec<(String, Vec<String>)> = members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    subscription_topics(m.metadata.clone()),
                )
            })
            .collect();
        let topics: BTreeSet<String> = subs.iter().flat_map(|(_, t)| t.clone()).collect();
        let mut plan: BTreeMap<String, BTreeMap<String, Vec<i32>>> = subs
            .iter()
            .map(|(m, _)| (m.clone(), BTreeMap::new()))
            .collect();
        for topic in topics {
            let n = self
                .client
                .topic(&topic)
                .await
                .map_or(0, |t| t.partitions.len() as i32);
            let mut who: Vec<&String> = subs
                .iter()
                .filter(|(_, t)| t.contains(&topic))
                .map(|(m, _)| m)
                .collect();
            who.sort();
            if who.is_empty() || n == 0 {
                continue;
            }
            let k = who.len() as i32;
            let mut next = 0;
            for (i, m) in who.iter().enumerate() {
                let count = n / k + i32::from((i as i32) < n % k);
                if count > 0 {
                    plan.get_mut(*m)
                        .expect("member")
                        .insert(topic.clone(), (next..next + count).collect());
                }
                next += count;
            }
        }
        plan.into_iter()
            .map(|(m, parts)| {
                let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
                    parts
                        .into_iter()
                        .map(|(t, ps)| {
                            AssignedTopic::default()
                                .with_topic(topic_name(&t))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(s(&m))
                    .with_assignment(versioned(&a)?))
            })
            .collect()
    }

    /// Renews the lease.
    pub async fn heartbeat(&self) -> Result<Liveness> {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.member_id));
        let resp = self.coordinator.call(&req, 3).await?;
        match resp.error_code {
            0 => Ok(Liveness::Ok),
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID => Ok(Liveness::Rejoin),
            code => check(code, || format!("Heartbeat {}", self.group)).map(|_| Liveness::Ok),
        }
    }

    /// Commits `offsets` (the next offset to consume per partition) under this generation.
    pub async fn commit(&self, offsets: &[((String, i32), i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((t, p), o) in offsets {
            by_topic.entry(t).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(s(&self.member_id))
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = self.coordinator.call(&req, 5).await?;
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, || {
                    format!("commit {}/{}", t.name.as_str(), p.partition_index)
                })?;
            }
        }
        Ok(())
    }

    /// Leaves the group (its partitions are reassigned at once).
    pub async fn leave(&self) -> Result<()> {
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&self.member_id))
            ]);
        let resp = self.coordinator.call(&req, 3).await?;
        check(resp.error_code, || format!("LeaveGroup {}", self.group))
    }
}
