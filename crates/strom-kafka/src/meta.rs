//! ApiVersions (with the `group.version`, `share.version` and `transaction.version`
//! features), Metadata, DescribeCluster, InitProducerId of idempotent producers.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, ApiVersionsResponse, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, DescribeClusterRequest, InitProducerIdRequest, MetadataRequest,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strom_broker::cluster::ClusterMetadata;
use strom_broker::replica::Assignment;
use strom_broker::security::acl::{Operation, ResourceType};
use strom_broker::{BrokerError, Topic};

use crate::codes;
use crate::server::{advertised, Fatal, Reply, Req};
use crate::versions::SUPPORTED;

/// The features ApiVersions v3+ lists, as Kafka 4.1 names them: (name, supported min,
/// supported max, finalized level). `group.version` 1 is KIP-848's consumer protocol,
/// `share.version` 1 KIP-932's share groups, `transaction.version` 2 KIP-890's transactions
/// v2 (a client that knows it adds partitions by Produce v12+ and ends with EndTxn v5+).
/// KRaft's `metadata.version` and `kraft.version` are not listed: Strom runs no KRaft quorum.
const FEATURES: &[(&str, i16, i16, i16)] = &[
    ("group.version", 0, 1, 1),
    ("share.version", 0, 1, 1),
    ("transaction.version", 0, 2, 2),
];

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

pub(crate) fn api_versions(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let _r: ApiVersionsRequest = req.decode()?;
    let mut resp = ApiVersionsResponse::default().with_api_keys(api_list());
    if req.version >= 3 {
        resp = resp
            .with_supported_features(
                FEATURES
                    .iter()
                    .map(|&(name, min, max, _)| {
                        SupportedFeatureKey::default()
                            .with_name(str_bytes(name))
                            .with_min_version(min)
                            .with_max_version(max)
                    })
                    .collect(),
            )
            .with_finalized_features_epoch(1)
            .with_finalized_features(
                FEATURES
                    .iter()
                    .map(|&(name, _, _, level)| {
                        FinalizedFeatureKey::default()
                            .with_name(str_bytes(name))
                            .with_min_version_level(level)
                            .with_max_version_level(level)
                    })
                    .collect(),
            );
    }
    req.encode(&resp)
}

/// The v0 answer to an ApiVersions request at a version we do not know: UNSUPPORTED_VERSION
/// and our ranges, so the client can retry with a version we speak.
pub(crate) fn api_versions_fallback(correlation: i32) -> Result<BytesMut, Fatal> {
    let resp = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_list());
    let mut body = BytesMut::new();
    kafka_protocol::protocol::Encodable::encode(&resp, &mut body, 0)?;
    let mut out = BytesMut::with_capacity(8 + body.len());
    out.put_i32(4 + body.len() as i32);
    out.put_i32(correlation);
    out.extend_from_slice(&body);
    Ok(out)
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn describe(
    t: &Topic,
    node: i32,
    version: i16,
    cluster: Option<&ClusterMetadata>,
) -> MetadataResponseTopic {
    let assigned = cluster.and_then(|c| c.topics.get(t.name()).map(|a| (c, a)));
    let partitions = t
        .partitions()
        .iter()
        .map(|p| {
            if let Some((c, a)) = assigned {
                return describe_replicated(
                    p.index(),
                    a.partitions.get(p.index() as usize),
                    c,
                    version,
                );
            }
            let mut mp = MetadataResponsePartition::default()
                .with_partition_index(p.index())
                .with_leader_id(BrokerId(node))
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)]);
            if !p.is_online() {
                // As Kafka lists a partition whose only replica's log directory failed: no
                // leader (LEADER_NOT_AVAILABLE), the replica offline. Clients then wait for a
                // leader instead of producing to it; a request sent anyway gets
                // KAFKA_STORAGE_ERROR.
                mp = mp
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1));
                if version >= 5 {
                    mp = mp.with_offline_replicas(vec![BrokerId(node)]);
                }
            }
            if version >= 7 {
                mp = mp.with_leader_epoch(0);
            }
            mp
        })
        .collect();
    let mut mt = MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name()))))
        .with_partitions(partitions);
    if version >= 1 {
        mt = mt.with_is_internal(t.is_internal());
    }
    if version >= 10 {
        mt = mt.with_topic_id(uuid::Uuid::from_bytes(t.id()));
    }
    mt
}

/// A partition in cluster mode, as the cluster's metadata assigns it: its leader (none,
/// LEADER_NOT_AVAILABLE, if the leader is not live), leader epoch, replicas and ISR, and
/// the replicas of brokers not live as offline.
fn describe_replicated(
    index: i32,
    a: Option<&Assignment>,
    c: &ClusterMetadata,
    version: i16,
) -> MetadataResponsePartition {
    let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
    let mut mp = MetadataResponsePartition::default().with_partition_index(index);
    let Some(a) = a else {
        return mp
            .with_error_code(ResponseError::LeaderNotAvailable.code())
            .with_leader_id(BrokerId(-1));
    };
    mp = mp
        .with_leader_id(BrokerId(a.leader))
        .with_replica_nodes(ids(&a.replicas))
        .with_isr_nodes(ids(&a.isr));
    if a.leader < 0 || c.node(a.leader).is_none() {
        mp = mp
            .with_error_code(ResponseError::LeaderNotAvailable.code())
            .with_leader_id(BrokerId(-1));
    }
    if version >= 5 {
        let offline: Vec<i32> = a
            .replicas
            .iter()
            .copied()
            .filter(|r| c.node(*r).is_none())
            .collect();
        mp = mp.with_offline_replicas(ids(&offline));
    }
    if version >= 7 {
        mp = mp.with_leader_epoch(a.leader_epoch);
    }
    mp
}

/// The brokers of a Metadata response: every live broker in cluster mode, else this one
/// as the listener the request came in on advertises it.
fn brokers(req: &Req<'_>, cluster: Option<&ClusterMetadata>) -> Vec<MetadataResponseBroker> {
    match cluster {
        Some(c) => c
            .brokers
            .iter()
            .map(|b| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(str_bytes(&b.host))
                    .with_port(b.port)
                    .with_rack(b.rack.as_deref().map(str_bytes))
            })
            .collect(),
        None => {
            let (host, port) = advertised(req);
            vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(req.ctx.broker.node_id()))
                .with_host(str_bytes(&host))
                .with_port(port)]
        }
    }
}

fn topic_error(
    name: Option<TopicName>,
    id: uuid::Uuid,
    code: i16,
    version: i16,
) -> MetadataResponseTopic {
    let mut mt = MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(name);
    if version >= 10 {
        mt = mt.with_topic_id(id);
    }
    mt
}

/// Whether the principal may see topic `name`.
fn may_describe(req: &Req<'_>, name: &str) -> bool {
    req.allowed(Operation::Describe, ResourceType::Topic, name)
}

pub(crate) async fn metadata(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: MetadataRequest = req.decode()?;
    let v = req.version;
    let broker = &req.ctx.broker;
    let node = broker.node_id();
    // In cluster mode the answer describes the cluster's metadata; it is read again after a
    // topic was auto-created (in the cluster's store).
    let snapshot = || broker.cluster().map(|c| c.metadata());
    let mut cluster = snapshot();
    let all = match &r.topics {
        None => true,
        Some(t) => t.is_empty() && v == 0,
    };
    // Before v4 a client cannot opt out of auto-creation.
    let allow_create = v < 4 || r.allow_auto_topic_creation;
    let mut topics = Vec::new();
    if all {
        // Listing every topic shows only those the principal may describe.
        for info in broker.topics() {
            if req.permits(Operation::Describe, ResourceType::Topic, &info.name) {
                if let Some(t) = broker.topic(&info.name) {
                    topics.push(describe(&t, node, v, cluster.as_deref()));
                }
            }
        }
    } else {
        for rt in r.topics.unwrap_or_default() {
            let Some(name) = rt.name.clone() else {
                let id = rt.topic_id;
                match broker.topics().into_iter().find(|i| i.id == *id.as_bytes()) {
                    Some(info) if !may_describe(&req, &info.name) => topics.push(topic_error(
                        None,
                        id,
                        ResponseError::TopicAuthorizationFailed.code(),
                        v,
                    )),
                    Some(info) => match broker.topic(&info.name) {
                        Some(t) => topics.push(describe(&t, node, v, cluster.as_deref())),
                        None => topics.push(topic_error(
                            None,
                            id,
                            ResponseError::UnknownTopicId.code(),
                            v,
                        )),
                    },
                    None => topics.push(topic_error(
                        None,
                        id,
                        ResponseError::UnknownTopicId.code(),
                        v,
                    )),
                }
                continue;
            };
            if !may_describe(&req, &name) {
                topics.push(topic_error(
                    Some(name),
                    uuid::Uuid::nil(),
                    ResponseError::TopicAuthorizationFailed.code(),
                    v,
                ));
                continue;
            }
            // Auto-creation needs CREATE on the cluster or on the topic.
            let allow_create = allow_create
                && (broker.topic(&name).is_some() || crate::admin::may_create(&req, &name));
            let found = if allow_create {
                let existed = broker.topic(&name).is_some();
                let found = broker.admin_topic_or_create(&name).await;
                if !existed {
                    cluster = snapshot();
                }
                found
            } else {
                broker
                    .topic(&name)
                    .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                        topic: name.to_string(),
                        partition: -1,
                    })
            };
            match found {
                Ok(t) => topics.push(describe(&t, node, v, cluster.as_deref())),
                Err(e) => topics.push(topic_error(
                    Some(name),
                    uuid::Uuid::nil(),
                    codes::code(&e),
                    v,
                )),
            }
        }
    }
    let cm = cluster.as_deref();
    let mut resp = MetadataResponse::default()
        .with_brokers(brokers(&req, cm))
        .with_topics(topics);
    if v >= 1 {
        resp = resp.with_controller_id(BrokerId(cm.map_or(node, |c| c.controller)));
    }
    if v >= 2 {
        let id = cm.map_or(broker.cluster_id(), |c| c.cluster_id.as_str());
        resp = resp.with_cluster_id(Some(str_bytes(id)));
    }
    req.encode(&resp)
}

pub(crate) fn describe_cluster(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeClusterRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let cluster = broker.cluster().map(|c| c.metadata());
    let nodes: Vec<DescribeClusterBroker> = brokers(&req, cluster.as_deref())
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(b.node_id)
                .with_host(b.host)
                .with_port(b.port)
                .with_rack(b.rack)
        })
        .collect();
    let (id, controller) = match cluster.as_deref() {
        Some(c) => (c.cluster_id.clone(), c.controller),
        None => (broker.cluster_id().to_string(), broker.node_id()),
    };
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&id))
        .with_controller_id(BrokerId(controller))
        .with_brokers(nodes);
    if req.version >= 1 {
        resp = resp.with_endpoint_type(r.endpoint_type);
    }
    req.encode(&resp)
}

/// InitProducerId without a transactional id: an idempotent producer's id (the transactional
/// form is `txn_api`'s).
pub(crate) fn init_idempotent(
    ctx: &crate::server::Ctx,
    r: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX - 1 {
        // KIP-360: an idempotent producer recovering from an error asks for its epoch to be
        // bumped; its sequences restart at 0 under the new epoch.
        InitProducerIdResponse::default()
            .with_producer_id(r.producer_id)
            .with_producer_epoch(r.producer_epoch + 1)
    } else {
        match ctx.broker.init_producer_id() {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(e) => InitProducerIdResponse::default()
                .with_error_code(codes::code(&e))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        }
    }
}
