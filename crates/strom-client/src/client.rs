//! The client: bootstrap, ApiVersions negotiation, metadata, admin, produce, fetch.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use parking_lot::Mutex;

use crate::conn::Connection;
use crate::{check, Error, Result};

/// Highest version of each API this client implements (the negotiated version is the
/// minimum of this and the broker's maximum).
fn our_max(key: i16) -> i16 {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce) => 9,
        Ok(ApiKey::Fetch) => 12,
        Ok(ApiKey::ListOffsets) => 7,
        Ok(ApiKey::Metadata) => 12,
        Ok(ApiKey::CreateTopics) => 7,
        Ok(ApiKey::DeleteTopics) => 5,
        Ok(ApiKey::DescribeConfigs) => 4,
        Ok(ApiKey::IncrementalAlterConfigs) => 1,
        Ok(ApiKey::DescribeGroups) => 5,
        Ok(ApiKey::DeleteGroups) => 2,
        Ok(ApiKey::FindCoordinator) => 3,
        Ok(ApiKey::OffsetFetch) => 7,
        Ok(ApiKey::OffsetCommit) => 8,
        Ok(ApiKey::ListGroups) => 5,
        Ok(ApiKey::ConsumerGroupDescribe) => 1,
        Ok(ApiKey::ShareGroupHeartbeat) => 1,
        Ok(ApiKey::ShareGroupDescribe) => 1,
        Ok(ApiKey::ShareFetch) => 1,
        Ok(ApiKey::ShareAcknowledge) => 1,
        Ok(ApiKey::DescribeShareGroupOffsets) => 0,
        Ok(ApiKey::ListTransactions) => 1,
        Ok(ApiKey::DescribeTransactions) => 0,
        Ok(ApiKey::DeleteRecords) => 2,
        Ok(ApiKey::DescribeLogDirs) => 4,
        Ok(ApiKey::DescribeAcls | ApiKey::CreateAcls | ApiKey::DeleteAcls) => 3,
        _ => 0,
    }
}

/// One log directory of a broker (DescribeLogDirs).
#[derive(Debug, Clone)]
pub struct LogDirInfo {
    pub path: String,
    pub total_bytes: i64,
    pub usable_bytes: i64,
    /// `(partition, bytes)` of the topic asked about.
    pub partitions: Vec<(i32, i64)>,
}

/// A partition as seen in metadata.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

/// A topic as seen in metadata.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    /// The topic id (nil from brokers before Metadata v10).
    pub topic_id: uuid::Uuid,
    pub error_code: i16,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

/// Result of fetching one partition.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub records: Bytes,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group: String,
    /// `consumer` for classic consumer groups, `share` for share groups.
    pub protocol_type: String,
    pub state: String,
    /// `classic`, `consumer` or `share` (ListGroups v5's GroupType, lower case).
    pub group_type: String,
}

/// A Kafka client bound to a cluster through a bootstrap address.
pub struct Client {
    bootstrap: Arc<Connection>,
    versions: HashMap<i16, (i16, i16)>,
    brokers: Mutex<HashMap<i32, String>>,
    /// Each partition's leader, as the last Metadata said (a cluster's partitions are led
    /// by different brokers).
    leaders: Mutex<HashMap<(String, i32), i32>>,
    conns: Mutex<HashMap<String, Arc<Connection>>>,
    client_id: String,
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

impl Client {
    /// Connects to the bootstrap address and negotiates API versions.
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        Self::connect_with_id(bootstrap, "strom-cli").await
    }

    /// Like [`Client::connect`] with a custom client id.
    pub async fn connect_with_id(bootstrap: &str, client_id: &str) -> Result<Self> {
        let conn = Arc::new(Connection::connect(bootstrap, client_id).await?);
        let mut resp = conn
            .call(
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("strom-client"))
                    .with_client_software_version(StrBytes::from_static_str(env!(
                        "CARGO_PKG_VERSION"
                    ))),
                3,
            )
            .await?;
        if resp.error_code == 35 {
            // The broker answers UNSUPPORTED_VERSION with its own list at v0.
            resp = conn.call(&ApiVersionsRequest::default(), 0).await?;
        }
        check(resp.error_code, || "ApiVersions".into())?;
        let versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        let mut conns = HashMap::new();
        conns.insert(bootstrap.to_string(), conn.clone());
        Ok(Self {
            bootstrap: conn,
            versions,
            brokers: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
            conns: Mutex::new(conns),
            client_id: client_id.to_string(),
        })
    }

    /// Negotiated version for request type `R`.
    pub fn version<R: Request>(&self) -> Result<i16> {
        let name = api_name(R::KEY);
        let (min, max) = self
            .versions
            .get(&R::KEY)
            .copied()
            .ok_or(Error::Unsupported(name))?;
        let v = max.min(our_max(R::KEY)).min(R::VERSIONS.max);
        if v < min.max(R::VERSIONS.min) {
            return Err(Error::Unsupported(name));
        }
        Ok(v)
    }

    /// Sends `req` on the bootstrap connection at the negotiated version.
    pub async fn call<R: Request>(&self, req: &R) -> Result<R::Response> {
        let v = self.version::<R>()?;
        self.bootstrap.call(req, v).await
    }

    /// Connection to broker `node` (opened on first use; falls back to bootstrap if unknown).
    pub async fn broker(&self, node: i32) -> Result<Arc<Connection>> {
        let addr = self.brokers.lock().get(&node).cloned();
        let Some(addr) = addr else {
            return Ok(self.bootstrap.clone());
        };
        if let Some(c) = self.conns.lock().get(&addr) {
            return Ok(c.clone());
        }
        let c = Arc::new(Connection::connect(&addr, &self.client_id).await?);
        Ok(self.conns.lock().entry(addr).or_insert(c).clone())
    }

    /// The address of the broker leading a partition, as the last [`Client::metadata`]
    /// said (the bootstrap address if unknown).
    pub fn leader_addr(&self, topic: &str, partition: i32) -> String {
        let leader = self
            .leaders
            .lock()
            .get(&(topic.to_string(), partition))
            .copied();
        leader
            .and_then(|l| self.brokers.lock().get(&l).cloned())
            .unwrap_or_else(|| self.bootstrap.addr().to_string())
    }

    /// The bootstrap connection.
    pub fn bootstrap(&self) -> &Arc<Connection> {
        &self.bootstrap
    }

    /// Metadata for `topics` (all topics when `None`).
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<Vec<TopicInfo>> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let resp = self.call(&req).await?;
        {
            let mut b = self.brokers.lock();
            for br in &resp.brokers {
                b.insert(br.node_id.0, format!("{}:{}", br.host.as_str(), br.port));
            }
        }
        let mut out: Vec<TopicInfo> = resp
            .topics
            .into_iter()
            .map(|t| TopicInfo {
                name: t.name.map(|n| n.0.as_str().to_string()).unwrap_or_default(),
                topic_id: t.topic_id,
                error_code: t.error_code,
                internal: t.is_internal,
                partitions: {
                    let mut ps: Vec<PartitionInfo> = t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionInfo {
                            partition: p.partition_index,
                            leader: p.leader_id.0,
                            replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                            isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                            error_code: p.error_code,
                        })
                        .collect();
                    ps.sort_by_key(|p| p.partition);
                    ps
                },
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        {
            let mut leaders = self.leaders.lock();
            for t in &out {
                for p in &t.partitions {
                    leaders.insert((t.name.clone(), p.partition), p.leader);
                }
            }
        }
        Ok(out)
    }

    /// Metadata of one topic, failing with the broker's error if it does not exist.
    pub async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        let mut ts = self.metadata(Some(&[topic.to_string()])).await?;
        let t = ts
            .pop()
            .ok_or_else(|| Error::broker(3, format!("topic {topic}")))?;
        check(t.error_code, || format!("topic {topic}"))?;
        Ok(t)
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(String, String)],
    ) -> Result<()> {
        self.create_topic_replicated(name, partitions, -1, configs)
            .await
    }

    /// [`Client::create_topic`] with a replication factor (-1: the broker's default).
    pub async fn create_topic_replicated(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<()> {
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let resp = self
            .call(
                &CreateTopicsRequest::default()
                    .with_topics(vec![topic])
                    .with_timeout_ms(30_000),
            )
            .await?;
        for t in resp.topics {
            let msg = t
                .error_message
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            check(t.error_code, || {
                format!("topic {name} {msg}").trim_end().to_string()
            })?;
        }
        Ok(())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let v = self.version::<DeleteTopicsRequest>()?;
        let mut req = DeleteTopicsRequest::default().with_timeout_ms(30_000);
        if v >= 6 {
            req.topics = vec![DeleteTopicState::default().with_name(Some(topic_name(name)))];
        } else {
            req.topic_names = vec![topic_name(name)];
        }
        let resp = self.bootstrap.call(&req, v).await?;
        for t in resp.responses {
            check(t.error_code, || format!("topic {name}"))?;
        }
        Ok(())
    }

    /// Topic configs (name, value, source).
    pub async fn describe_topic_configs(
        &self,
        name: &str,
    ) -> Result<Vec<(String, Option<String>, i8)>> {
        self.describe_configs(2, name).await
    }

    /// Configs of a resource (2 topic, 32 group): (name, value, source).
    pub async fn describe_configs(
        &self,
        resource_type: i8,
        name: &str,
    ) -> Result<Vec<(String, Option<String>, i8)>> {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(None),
        ]);
        let resp = self.call(&req).await?;
        let mut out = Vec::new();
        for r in resp.results {
            check(r.error_code, || name.to_string())?;
            for c in r.configs {
                out.push((
                    c.name.as_str().to_string(),
                    c.value.map(|v| v.as_str().to_string()),
                    c.config_source,
                ));
            }
        }
        Ok(out)
    }

    /// DeleteRecords: removes the records of a partition below `before` (-1: all); returns
    /// the new log start offset (low watermark).
    pub async fn delete_records(&self, topic: &str, partition: i32, before: i64) -> Result<i64> {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(before)])]);
        let resp = self.call(&req).await?;
        if let Some(p) = resp.topics.iter().flat_map(|t| t.partitions.iter()).next() {
            check(p.error_code, || format!("{topic}/{partition}"))?;
            return Ok(p.low_watermark);
        }
        Err(Error::Protocol(format!(
            "DeleteRecords: no result for {topic}/{partition}"
        )))
    }

    /// DescribeLogDirs of one topic: per log dir, its path, total and usable bytes and the
    /// topic's partitions there with their sizes.
    pub async fn describe_log_dirs(&self, topic: &str) -> Result<Vec<LogDirInfo>> {
        let req = DescribeLogDirsRequest::default().with_topics(None);
        let resp = self.call(&req).await?;
        check(resp.error_code, || "DescribeLogDirs".to_string())?;
        let mut out = Vec::new();
        for r in resp.results {
            check(r.error_code, || r.log_dir.to_string())?;
            let mut partitions: Vec<(i32, i64)> = r
                .topics
                .iter()
                .filter(|t| t.name.as_str() == topic)
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (p.partition_index, p.partition_size))
                })
                .collect();
            partitions.sort_unstable();
            out.push(LogDirInfo {
                path: r.log_dir.to_string(),
                total_bytes: r.total_bytes,
                usable_bytes: r.usable_bytes,
                partitions,
            });
        }
        Ok(out)
    }

    /// Sets (or with `None` deletes) topic configs via IncrementalAlterConfigs.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        set: &[(String, Option<String>)],
    ) -> Result<()> {
        self.alter_configs(2, name, set).await
    }

    /// Sets (or with `None` deletes) configs of a resource (2 topic, 32 group).
    pub async fn alter_configs(
        &self,
        resource_type: i8,
        name: &str,
        set: &[(String, Option<String>)],
    ) -> Result<()> {
        let configs = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(if v.is_some() { 0 } else { 1 })
                    .with_value(v.clone().map(StrBytes::from_string))
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configs(configs),
        ]);
        let resp = self.call(&req).await?;
        for r in resp.responses {
            let msg = r.error_message.map(|m| m.to_string()).unwrap_or_default();
            check(r.error_code, || format!("{name}: {msg}"))?;
        }
        Ok(())
    }

    /// ListOffsets for one partition: `timestamp` -1 = latest, -2 = earliest, else the first
    /// offset with a timestamp >= it.
    pub async fn list_offset(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp)])]);
        // The partition's leader answers (the bootstrap broker if unknown).
        let leader = self
            .leaders
            .lock()
            .get(&(topic.to_string(), partition))
            .copied();
        let resp = match leader {
            Some(l) => {
                let v = self.version::<ListOffsetsRequest>()?;
                self.broker(l).await?.call(&req, v).await?
            }
            None => self.call(&req).await?,
        };
        let p = resp
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .next()
            .ok_or_else(|| Error::Protocol("empty ListOffsets response".into()))?;
        check(p.error_code, || format!("{topic}/{partition}"))?;
        Ok(p.offset)
    }

    /// Builds a Produce request for pre-encoded batches of one topic.
    pub fn produce_request(
        topic: &str,
        acks: i16,
        timeout_ms: i32,
        batches: Vec<(i32, Bytes)>,
    ) -> ProduceRequest {
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(timeout_ms)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(
                    batches
                        .into_iter()
                        .map(|(p, b)| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(b))
                        })
                        .collect(),
                )])
    }

    /// Produces pre-encoded batches and waits for the acks; returns base offsets per partition.
    pub async fn produce(
        &self,
        topic: &str,
        acks: i16,
        batches: Vec<(i32, Bytes)>,
    ) -> Result<Vec<(i32, i64)>> {
        let v = self.version::<ProduceRequest>()?;
        // The batches are sent as they are, not copied into the request.
        let shared: Vec<Bytes> = batches.iter().map(|(_, b)| b.clone()).collect();
        let req = Self::produce_request(topic, acks, 30_000, batches);
        if acks == 0 {
            self.bootstrap.send_no_response(&req, v, shared).await?;
            return Ok(Vec::new());
        }
        let rx = self.bootstrap.start_sharing(&req, v, shared).await?;
        let frame = rx.await.map_err(|_| Error::Closed)?;
        check_produce(&Connection::decode::<ProduceRequest>(frame, v)?)
    }

    /// Builds a fetch request for `(partition, offset)` pairs of one topic.
    pub fn fetch_request(
        topic: &str,
        parts: &[(i32, i64)],
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> FetchRequest {
        Self::fetch_request_topics(&[(topic, parts)], max_wait_ms, max_bytes)
    }

    /// A Fetch of partitions of several topics, each from its offset.
    pub fn fetch_request_topics(
        topics: &[(&str, &[(i32, i64)])],
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> FetchRequest {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .iter()
                    .map(|(topic, parts)| {
                        FetchTopic::default()
                            .with_topic(topic_name(topic))
                            .with_partitions(
                                parts
                                    .iter()
                                    .map(|&(p, o)| {
                                        FetchPartition::default()
                                            .with_partition(p)
                                            .with_current_leader_epoch(-1)
                                            .with_fetch_offset(o)
                                            .with_last_fetched_epoch(-1)
                                            .with_log_start_offset(-1)
                                            .with_partition_max_bytes(max_bytes)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }

    /// Fetches partitions of one topic from their offsets.
    pub async fn fetch(
        &self,
        topic: &str,
        parts: &[(i32, i64)],
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Vec<FetchedPartition>> {
        let req = Self::fetch_request(topic, parts, max_wait_ms, max_bytes);
        let resp = self.call(&req).await?;
        Ok(flatten_fetch(resp))
    }

    /// Lists groups of every type (classic, consumer, share).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let resp = self.call(&ListGroupsRequest::default()).await?;
        check(resp.error_code, || "ListGroups".into())?;
        Ok(resp
            .groups
            .into_iter()
            .map(|g| {
                let protocol_type = g.protocol_type.as_str().to_string();
                // Before ListGroups v5 there is no type: a group with a protocol is classic.
                let group_type = match g.group_type.as_str() {
                    "" => "classic".to_string(),
                    t => t.to_lowercase(),
                };
                GroupListing {
                    group: g.group_id.0.as_str().to_string(),
                    protocol_type,
                    state: g.group_state.as_str().to_string(),
                    group_type,
                }
            })
            .collect())
    }
}

/// Checks every partition of a produce response; returns (partition, base offset).
pub fn check_produce(resp: &ProduceResponse) -> Result<Vec<(i32, i64)>> {
    let mut out = Vec::new();
    for t in &resp.responses {
        for p in &t.partition_responses {
            check(p.error_code, || {
                format!("{}/{}", t.name.0.as_str(), p.index)
            })?;
            out.push((p.index, p.base_offset));
        }
    }
    Ok(out)
}

/// Flattens a fetch response into per-partition results.
pub fn flatten_fetch(resp: FetchResponse) -> Vec<FetchedPartition> {
    let mut out = Vec::new();
    for t in resp.responses {
        let topic = t.topic.0.as_str().to_string();
        for p in t.partitions {
            out.push(FetchedPartition {
                topic: topic.clone(),
                partition: p.partition_index,
                error_code: p.error_code,
                high_watermark: p.high_watermark,
                records: p.records.unwrap_or_default(),
            });
        }
    }
    out
}

fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::CreateTopics) => "CreateTopics",
        Ok(ApiKey::DeleteTopics) => "DeleteTopics",
        Ok(ApiKey::DescribeConfigs) => "DescribeConfigs",
        Ok(ApiKey::IncrementalAlterConfigs) => "IncrementalAlterConfigs",
        Ok(ApiKey::ListGroups) => "ListGroups",
        Ok(ApiKey::DescribeGroups) => "DescribeGroups",
        Ok(ApiKey::DeleteGroups) => "DeleteGroups",
        Ok(ApiKey::OffsetFetch) => "OffsetFetch",
        Ok(ApiKey::OffsetCommit) => "OffsetCommit",
        Ok(ApiKey::FindCoordinator) => "FindCoordinator",
        Ok(ApiKey::ShareGroupHeartbeat) => "ShareGroupHeartbeat",
        Ok(ApiKey::ShareGroupDescribe) => "ShareGroupDescribe",
        Ok(ApiKey::ShareFetch) => "ShareFetch",
        Ok(ApiKey::ShareAcknowledge) => "ShareAcknowledge",
        Ok(ApiKey::DescribeShareGroupOffsets) => "DescribeShareGroupOffsets",
        _ => "this API",
    }
}
