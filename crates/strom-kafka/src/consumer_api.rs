//! The KIP-848 consumer-group APIs (the consumer rebalance protocol, as Kafka 4.1 serves
//! them): ConsumerGroupHeartbeat (68) and ConsumerGroupDescribe (69). They translate topic
//! ids to names and back and call `strom_broker::coordinator::GroupCoordinator`, which owns
//! the epochs, the assignors and the reconciliation.

use std::collections::BTreeMap;

use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe_resp, ConsumerGroupDescribeResponse, DescribedGroup,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, ConsumerGroupHeartbeatResponse, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, TopicName,
};
use kafka_protocol::ResponseError as E;
use strom_broker::coordinator::assignor::Assignment as Partitions;
use strom_broker::coordinator::{ClassicCodec, ClassicJoin, ConsumerHeartbeat, JoinRequest};
use uuid::Uuid;

use crate::group_api::code;
use crate::server::{sb, Fatal, Reply, Req};
use strom_broker::security::acl::{Operation, ResourceType};

/// Topic names by id and ids by name, of every topic.
struct Ids {
    by_id: BTreeMap<Uuid, String>,
    by_name: BTreeMap<String, Uuid>,
}

impl Ids {
    fn new(req: &Req<'_>) -> Ids {
        let mut by_id = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for t in req.ctx.broker.topics() {
            let id = Uuid::from_bytes(t.id);
            by_id.insert(id, t.name.clone());
            by_name.insert(t.name, id);
        }
        Ids { by_id, by_name }
    }
    fn id(&self, name: &str) -> Uuid {
        self.by_name.get(name).copied().unwrap_or_default()
    }
}

pub(crate) async fn heartbeat(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: ConsumerGroupHeartbeatRequest = req.decode()?;
    // READ on the group; DESCRIBE on every topic subscribed by name (a regex subscription
    // matches the topics the member may describe, as Kafka's).
    let denied = if !req.allowed(Operation::Read, ResourceType::Group, &r.group_id) {
        Some((
            E::GroupAuthorizationFailed,
            format!(
                "{} may not read group {}",
                req.principal,
                r.group_id.as_str()
            ),
        ))
    } else {
        r.subscribed_topic_names
            .iter()
            .flatten()
            .find(|t| !req.allowed(Operation::Describe, ResourceType::Topic, t))
            .map(|t| {
                (
                    E::TopicAuthorizationFailed,
                    format!("{} may not describe topic {}", req.principal, t.as_str()),
                )
            })
    };
    if let Some((e, msg)) = denied {
        return req.encode(
            &ConsumerGroupHeartbeatResponse::default()
                .with_error_code(e.code())
                .with_error_message(Some(sb(msg))),
        );
    }
    let ids = Ids::new(&req);
    // Owned partitions of topics deleted meanwhile are left out (the member lost them).
    let owned = r.topic_partitions.as_ref().map(|tps| {
        let mut out = Partitions::new();
        for tp in tps {
            if let Some(name) = ids.by_id.get(&tp.topic_id) {
                out.entry(name.clone())
                    .or_default()
                    .extend(tp.partitions.iter().copied());
            }
        }
        out
    });
    let hb = ConsumerHeartbeat {
        group_id: r.group_id.to_string(),
        member_id: r.member_id.to_string(),
        member_epoch: r.member_epoch,
        instance_id: r.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: r.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        subscribed_topic_names: r
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        subscribed_topic_regex: r.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        server_assignor: r.server_assignor.as_ref().map(|s| s.to_string()),
        owned,
        client_id: req.client_id.clone(),
        client_host: format!("/{}", req.peer.ip()),
    };
    let resp = match req.ctx.groups.consumer_heartbeat(hb).await {
        Ok(o) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(sb(o.member_id)))
            .with_member_epoch(o.member_epoch)
            .with_heartbeat_interval_ms(o.heartbeat_interval_ms)
            .with_assignment(o.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(t, ps)| {
                            TopicPartitions::default()
                                .with_topic_id(ids.id(&t))
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(e) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code(&e))
            .with_error_message(Some(sb(e.to_string()))),
    };
    req.encode(&resp)
}

fn described(a: &Partitions, ids: &Ids) -> describe_resp::Assignment {
    describe_resp::Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(t, ps)| {
                describe_resp::TopicPartitions::default()
                    .with_topic_id(ids.id(t))
                    .with_topic_name(TopicName(sb(t.clone())))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

pub(crate) fn describe(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: ConsumerGroupDescribeRequest = req.decode()?;
    let ids = Ids::new(&req);
    let v = req.version;
    let groups = r
        .group_ids
        .iter()
        .map(|id| match req.ctx.groups.describe_consumer_group(id) {
            Ok(d) => DescribedGroup::default()
                .with_group_id(id.clone())
                .with_group_state(sb(d.state.name()))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(sb(d.assignor))
                .with_authorized_operations(i32::MIN)
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            let mut out = describe_resp::Member::default()
                                .with_member_id(sb(m.member_id))
                                .with_instance_id(m.instance_id.map(sb))
                                .with_rack_id(m.rack.map(sb))
                                .with_member_epoch(m.member_epoch)
                                .with_client_id(sb(m.client_id))
                                .with_client_host(sb(m.client_host))
                                .with_subscribed_topic_names(
                                    m.topics.into_iter().map(|t| TopicName(sb(t))).collect(),
                                )
                                .with_subscribed_topic_regex(m.regex.map(sb))
                                .with_assignment(described(&m.assignment, &ids))
                                .with_target_assignment(described(&m.target, &ids));
                            if v >= 1 {
                                // KIP-1099: 0 = classic, 1 = consumer protocol member.
                                out = out.with_member_type(if m.classic { 0 } else { 1 });
                            }
                            out
                        })
                        .collect(),
                ),
            Err(e) => DescribedGroup::default()
                .with_group_id(id.clone())
                .with_error_code(if id.is_empty() {
                    E::InvalidGroupId.code()
                } else {
                    code(&e)
                })
                .with_error_message(Some(sb(format!(
                    "group {} is not a consumer group",
                    id.as_str()
                ))))
                .with_group_state(sb("Dead"))
                .with_authorized_operations(i32::MIN),
        })
        .collect();
    req.encode(&ConsumerGroupDescribeResponse::default().with_groups(groups))
}

/// A classic JoinGroup into a consumer group: its subscription decoded from its first
/// protocol's metadata (a ConsumerProtocolSubscription); `None` when it is not the consumer
/// protocol type or the metadata does not decode.
pub(crate) fn classic_join(j: JoinRequest) -> Option<ClassicJoin> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    if j.protocol_type != "consumer" {
        return None;
    }
    let (_, meta) = j.protocols.first()?;
    if meta.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([meta[0], meta[1]]).clamp(0, 3);
    let mut body = meta.slice(2..);
    let sub = ConsumerProtocolSubscription::decode(&mut body, version).ok()?;
    let mut owned = Partitions::new();
    for tp in &sub.owned_partitions {
        owned
            .entry(tp.topic.to_string())
            .or_default()
            .extend(tp.partitions.iter().copied());
    }
    Some(ClassicJoin {
        group_id: j.group_id,
        member_id: j.member_id,
        instance_id: j.instance_id,
        client_id: j.client_id,
        client_host: j.client_host,
        session_timeout_ms: j.session_timeout_ms,
        rebalance_timeout_ms: j.rebalance_timeout_ms,
        protocols: j.protocols.into_iter().map(|(n, _)| n).collect(),
        topics: sub.topics.iter().map(|t| t.to_string()).collect(),
        owned,
        require_known_member_id: j.require_known_member_id,
    })
}

/// A classic member's assignment as a ConsumerProtocolAssignment (v0, version prefixed).
pub(crate) fn encode_assignment(a: &Partitions) -> bytes::Bytes {
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::Encodable;
    let msg = ConsumerProtocolAssignment::default().with_assigned_partitions(
        a.iter()
            .map(|(t, ps)| {
                TopicPartition::default()
                    .with_topic(TopicName(sb(t.clone())))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    );
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    msg.encode(&mut out, 0)
        .expect("a consumer protocol assignment encodes");
    out.freeze()
}

/// The door's reading of classic consumer metadata and assignments, for the core's online
/// upgrade of a classic group.
pub(crate) fn classic_codec() -> ClassicCodec {
    use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
    use kafka_protocol::protocol::Decodable;
    fn body(b: &[u8]) -> Option<(i16, bytes::Bytes)> {
        (b.len() >= 2).then(|| {
            let v = i16::from_be_bytes([b[0], b[1]]).clamp(0, 3);
            (v, bytes::Bytes::copy_from_slice(&b[2..]))
        })
    }
    ClassicCodec {
        subscription: std::sync::Arc::new(|b: &[u8]| {
            let (v, mut b) = body(b)?;
            let s = ConsumerProtocolSubscription::decode(&mut b, v).ok()?;
            Some(s.topics.iter().map(|t| t.to_string()).collect())
        }),
        assignment: std::sync::Arc::new(|b: &[u8]| {
            let (v, mut b) = body(b)?;
            let a = ConsumerProtocolAssignment::decode(&mut b, v).ok()?;
            let mut out = Partitions::new();
            for tp in a.assigned_partitions {
                out.entry(tp.topic.to_string())
                    .or_default()
                    .extend(tp.partitions.iter().copied());
            }
            Some(out)
        }),
    }
}
