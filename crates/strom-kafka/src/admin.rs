//! CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, IncrementalAlterConfigs.

use std::collections::HashSet;

use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse, IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strom_broker::cluster::NewTopic;
use strom_broker::config::{ConfigKind, TOPIC_CONFIGS};
use strom_broker::{BrokerError, ConfigOp, TopicConfig};

use crate::codes::{code, code_msg};
use crate::data::name_by_id;
use crate::server::{host_port, sb, Fatal, Listener, Reply, Req};
use strom_broker::security::acl::{Operation, ResourceType, CLUSTER_NAME};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// KIP-848/932 group configs (`ConfigResource.Type.GROUP`).
const RESOURCE_GROUP: i8 = 32;
const SOURCE_GROUP_CONFIG: i8 = 8;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

fn opt_msg(m: Option<String>) -> Option<StrBytes> {
    m.map(StrBytes::from_string)
}

fn topic_configs_for_create(config: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (value, set) = config.get(d.name).unwrap_or_default();
            CreatableTopicConfigs::default()
                .with_name(sb(d.name))
                .with_value(Some(sb(value)))
                .with_config_source(if set {
                    SOURCE_DYNAMIC_TOPIC
                } else {
                    SOURCE_DEFAULT
                })
        })
        .collect()
}

/// Creating a topic needs CREATE on the cluster or on the topic.
pub(crate) fn may_create(req: &Req<'_>, name: &str) -> bool {
    req.permits(Operation::Create, ResourceType::Cluster, CLUSTER_NAME)
        || req.allowed(Operation::Create, ResourceType::Topic, name)
}

/// The refusal of `op` (DESCRIBE_CONFIGS / ALTER_CONFIGS) on a config resource: a topic's
/// configs are the topic's, a broker's and a group's the cluster's (Kafka checks groups as
/// GROUP resources; Strom's group configs are share-group settings, checked on the group).
pub(crate) fn config_denied(
    req: &Req<'_>,
    op: Operation,
    resource_type: i8,
    name: &str,
) -> Option<(i16, String)> {
    let (rt, rname, code) = match resource_type {
        RESOURCE_TOPIC => (
            ResourceType::Topic,
            name,
            ResponseError::TopicAuthorizationFailed,
        ),
        RESOURCE_GROUP => (
            ResourceType::Group,
            name,
            ResponseError::GroupAuthorizationFailed,
        ),
        _ => (
            ResourceType::Cluster,
            CLUSTER_NAME,
            ResponseError::ClusterAuthorizationFailed,
        ),
    };
    (!req.allowed(op, rt, rname)).then(|| {
        (
            code.code(),
            format!("{} may not {} of {}", req.principal, op.name(), rname),
        )
    })
}

pub(crate) async fn create_topics(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: CreateTopicsRequest = req.decode()?;
    let v = req.version;
    let broker = &req.ctx.broker;
    let mut seen = HashSet::new();
    let dups: HashSet<String> = r
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();
    let mut results = Vec::with_capacity(r.topics.len());
    let throttled = req.mutations_throttled(v >= 6);
    let mut mutations = 0usize;
    for t in r.topics {
        let name = t.name.to_string();
        let partitions = if t.assignments.is_empty() {
            t.num_partitions
        } else {
            t.assignments.len() as i32
        };
        let configs: Vec<(String, String)> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let result = if dups.contains(&name) {
            Err((
                ResponseError::InvalidRequest.code(),
                format!("topic {name} appears twice in the request"),
            ))
        } else if !may_create(&req, &name) {
            Err((
                ResponseError::TopicAuthorizationFailed.code(),
                format!("{} may not create topic {name}", req.principal),
            ))
        } else if let Some(ms) = throttled {
            Err(throttling(ms))
        } else if let Some(cluster) = broker.cluster() {
            // Cluster mode: the topic is created in the cluster's metadata, its replicas
            // placed there (or as the request assigns them).
            let mut assignments: Vec<_> = t.assignments.iter().collect();
            assignments.sort_by_key(|a| a.partition_index);
            let new = NewTopic {
                name: name.clone(),
                partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                assignments: assignments
                    .into_iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect(),
                configs: configs.clone(),
            };
            cluster
                .create_topic(new, r.validate_only)
                .await
                .map_err(|e| (code(&e), e.to_string()))
        } else if !(t.replication_factor == -1 || t.replication_factor == 1) {
            Err((
                ResponseError::InvalidReplicationFactor.code(),
                format!(
                    "replication factor {} is not possible on a single broker",
                    t.replication_factor
                ),
            ))
        } else {
            broker
                .create_topic(&name, partitions, configs, r.validate_only)
                .map_err(|e| (code(&e), e.to_string()))
        };
        let mut out = CreatableTopicResult::default().with_name(t.name);
        match result {
            Ok(()) => {
                if !r.validate_only {
                    mutations += broker.topic(&name).map_or(0, |t| t.partitions().len());
                }
                if v >= 5 {
                    let (count, config, id) = match broker.topic(&name) {
                        Some(topic) => {
                            (topic.partitions().len() as i32, topic.config(), topic.id())
                        }
                        None => {
                            // validate_only: describe what would have been created.
                            let count = if partitions == -1 {
                                broker.config().num_partitions
                            } else {
                                partitions
                            };
                            let cfg =
                                TopicConfig::from_overrides(t.configs.iter().filter_map(|c| {
                                    c.value
                                        .as_ref()
                                        .map(|v| (c.name.to_string(), v.to_string()))
                                }))
                                .unwrap_or_default();
                            (count, cfg, [0; 16])
                        }
                    };
                    let rf = broker
                        .cluster()
                        .and_then(|c| {
                            let m = c.metadata();
                            let a = m.topics.get(&name)?;
                            Some(a.partitions.first()?.replicas.len() as i16)
                        })
                        .unwrap_or(if t.replication_factor > 0 {
                            t.replication_factor
                        } else {
                            1
                        });
                    out = out
                        .with_num_partitions(count)
                        .with_replication_factor(rf)
                        .with_configs(Some(topic_configs_for_create(&config)));
                    if v >= 7 {
                        out = out.with_topic_id(uuid::Uuid::from_bytes(id));
                    }
                }
            }
            Err((c, msg)) => {
                tracing::info!(topic = %name, error = %msg, "create topic refused");
                out = out.with_error_code(c).with_error_message(Some(sb(msg)));
                if v >= 5 {
                    out = out.with_num_partitions(-1).with_replication_factor(-1);
                }
            }
        }
        results.push(out);
    }
    let throttle = mutation_throttle(&req, throttled, mutations);
    let mut resp = CreateTopicsResponse::default().with_topics(results);
    if v >= 2 {
        resp = resp.with_throttle_time_ms(throttle);
    }
    req.encode(&resp)
}

pub(crate) async fn delete_topics(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DeleteTopicsRequest = req.decode()?;
    let v = req.version;
    let broker = &req.ctx.broker;
    let targets: Vec<(Option<TopicName>, uuid::Uuid)> = if v >= 6 {
        r.topics.into_iter().map(|t| (t.name, t.topic_id)).collect()
    } else {
        r.topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    let throttled = req.mutations_throttled(v >= 5);
    let mut mutations = 0usize;
    for (name, id) in targets {
        let resolved = match &name {
            Some(n) => Some(n.to_string()),
            None => name_by_id(broker, id),
        };
        let (c, msg) = match &resolved {
            Some(n) if !req.allowed(Operation::Delete, ResourceType::Topic, n) => (
                ResponseError::TopicAuthorizationFailed.code(),
                Some(format!("{} may not delete topic {n}", req.principal)),
            ),
            Some(_) if throttled.is_some() => {
                let (c, m) = throttling(throttled.unwrap_or(0));
                (c, Some(m))
            }
            Some(n) => {
                let count = broker.topic(n).map_or(0, |t| t.partitions().len());
                let done = match broker.cluster() {
                    Some(c) => c.delete_topic(n.clone()).await,
                    None => broker.delete_topic(n),
                };
                if done.is_ok() {
                    mutations += count;
                }
                code_msg(&done)
            }
            None => (
                ResponseError::UnknownTopicId.code(),
                Some(format!("no topic has id {id}")),
            ),
        };
        let mut out = DeletableTopicResult::default()
            .with_name(name.or_else(|| resolved.map(|n| TopicName(sb(n)))))
            .with_error_code(c);
        if v >= 5 {
            out = out.with_error_message(opt_msg(msg));
        }
        if v >= 6 {
            out = out.with_topic_id(id);
        }
        responses.push(out);
    }
    let throttle = mutation_throttle(&req, throttled, mutations);
    let mut resp = DeleteTopicsResponse::default().with_responses(responses);
    if v >= 1 {
        resp = resp.with_throttle_time_ms(throttle);
    }
    req.encode(&resp)
}

pub(crate) async fn create_partitions(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: CreatePartitionsRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let throttled = req.mutations_throttled(req.version >= 3);
    let mut mutations = 0usize;
    let mut results = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let (c, msg) = {
            if !req.allowed(Operation::Alter, ResourceType::Topic, &t.name) {
                (
                    ResponseError::TopicAuthorizationFailed.code(),
                    Some(format!(
                        "{} may not alter topic {}",
                        req.principal, &*t.name
                    )),
                )
            } else if let Some(ms) = throttled {
                let (c, m) = throttling(ms);
                (c, Some(m))
            } else {
                let before = broker.topic(&t.name).map_or(0, |t| t.partitions().len());
                let done = match broker.cluster() {
                    Some(c) => {
                        c.create_partitions(t.name.to_string(), t.count, r.validate_only)
                            .await
                    }
                    None => broker.create_partitions(&t.name, t.count, r.validate_only),
                };
                if done.is_ok() && !r.validate_only {
                    mutations += (t.count.max(0) as usize).saturating_sub(before);
                }
                code_msg(&done)
            }
        };
        results.push(
            CreatePartitionsTopicResult::default()
                .with_name(t.name)
                .with_error_code(c)
                .with_error_message(opt_msg(msg)),
        );
    }
    let throttle = mutation_throttle(&req, throttled, mutations);
    req.encode(
        &CreatePartitionsResponse::default()
            .with_results(results)
            .with_throttle_time_ms(throttle),
    )
}

/// THROTTLING_QUOTA_EXCEEDED for a mutation refused by controller_mutation_rate.
fn throttling(ms: i32) -> (i16, String) {
    (
        ResponseError::ThrottlingQuotaExceeded.code(),
        format!("controller_mutation_rate exceeded; retry in {ms} ms"),
    )
}

/// The throttle time of a request that made `mutations` partition changes (or was refused
/// for `throttled` ms); a charged throttle mutes the connection too.
fn mutation_throttle(req: &Req<'_>, throttled: Option<i32>, mutations: usize) -> i32 {
    if let Some(ms) = throttled {
        return ms;
    }
    if mutations == 0 {
        return 0;
    }
    req.charge_quota(
        strom_broker::quota::QuotaKind::ControllerMutation,
        mutations,
    )
}

/// `NAME://HOST:PORT,...` of the listeners, each address from `addr`.
fn join_listeners(ls: &[std::sync::Arc<Listener>], addr: impl Fn(&Listener) -> String) -> String {
    ls.iter()
        .map(|l| format!("{}://{}", l.name, addr(l)))
        .collect::<Vec<_>>()
        .join(",")
}

fn config_type(kind: ConfigKind, name: &str) -> i8 {
    match kind {
        ConfigKind::Long { max, .. } if max <= i64::from(i32::MAX) => TYPE_INT,
        ConfigKind::Long { .. } => TYPE_LONG,
        ConfigKind::Choice(_) if name == "cleanup.policy" => TYPE_LIST,
        ConfigKind::Choice(_) => TYPE_STRING,
        ConfigKind::Bool => TYPE_BOOLEAN,
        ConfigKind::ReplicaList => TYPE_LIST,
        ConfigKind::Double { .. } => TYPE_DOUBLE,
    }
}

/// What a DescribeConfigs request asked to include.
#[derive(Clone, Copy)]
struct Wants {
    version: i16,
    synonyms: bool,
    docs: bool,
}

fn entry(
    w: Wants,
    name: &str,
    value: String,
    source: i8,
    ty: i8,
    doc: &str,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(sb(name))
        .with_value(Some(sb(value.clone())))
        .with_read_only(read_only)
        .with_config_source(source);
    if w.synonyms {
        e = e.with_synonyms(vec![DescribeConfigsSynonym::default()
            .with_name(sb(name))
            .with_value(Some(sb(value)))
            .with_source(source)]);
    }
    if w.version >= 3 {
        e = e.with_config_type(ty);
        if w.docs {
            e = e.with_documentation(Some(sb(doc)));
        }
    }
    e
}

pub(crate) fn describe_configs(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeConfigsRequest = req.decode()?;
    let w = Wants {
        version: req.version,
        synonyms: r.include_synonyms,
        docs: r.include_documentation,
    };
    let broker = &req.ctx.broker;
    let mut results = Vec::with_capacity(r.resources.len());
    for res in r.resources {
        let wanted = |name: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        if let Some((c, msg)) = config_denied(
            &req,
            Operation::DescribeConfigs,
            res.resource_type,
            &res.resource_name,
        ) {
            results.push(out.with_error_code(c).with_error_message(Some(sb(msg))));
            continue;
        }
        match res.resource_type {
            RESOURCE_TOPIC => match broker.topic_config(&res.resource_name) {
                Ok(config) => {
                    let configs = TOPIC_CONFIGS
                        .iter()
                        .filter(|d| wanted(d.name))
                        .map(|d| {
                            let (value, set) = config.get(d.name).unwrap_or_default();
                            let source = if set {
                                SOURCE_DYNAMIC_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            entry(
                                w,
                                d.name,
                                value,
                                source,
                                config_type(d.kind, d.name),
                                d.doc,
                                false,
                            )
                        })
                        .collect();
                    out = out.with_configs(configs);
                }
                Err(e) => {
                    out = out
                        .with_error_code(code(&e))
                        .with_error_message(Some(sb(e.to_string())));
                }
            },
            RESOURCE_BROKER => {
                let c = broker.config();
                let k = &req.ctx.config;
                let ls = &req.ctx.listeners;
                let items: [(&str, String, i8, &str); 8] = [
                    (
                        "auto.create.topics.enable",
                        c.auto_create_topics.to_string(),
                        TYPE_BOOLEAN,
                        "Create a topic when a client asks for metadata of an unknown one",
                    ),
                    (
                        "num.partitions",
                        c.num_partitions.to_string(),
                        TYPE_INT,
                        "Partitions of an auto-created topic",
                    ),
                    (
                        "log.retention.check.interval.ms",
                        c.retention_check_interval_ms.to_string(),
                        TYPE_LONG,
                        "How often retention runs",
                    ),
                    (
                        "producer.id.expiration.ms",
                        c.producer_id_expiration_ms.to_string(),
                        TYPE_INT,
                        "Idle idempotent producers are forgotten after this",
                    ),
                    (
                        "socket.request.max.bytes",
                        k.max_request_bytes.to_string(),
                        TYPE_INT,
                        "Largest request accepted",
                    ),
                    (
                        "listeners",
                        join_listeners(ls, |l| {
                            host_port(&l.bound.ip().to_string(), l.bound.port())
                        }),
                        TYPE_STRING,
                        "The addresses the Kafka door listens on",
                    ),
                    (
                        "advertised.listeners",
                        join_listeners(ls, |l| host_port(&l.host, l.port)),
                        TYPE_STRING,
                        "The addresses clients are told to connect to, per listener",
                    ),
                    (
                        "listener.security.protocol.map",
                        ls.iter()
                            .map(|l| format!("{}:{}", l.name, l.protocol))
                            .collect::<Vec<_>>()
                            .join(","),
                        TYPE_STRING,
                        "The security protocol of each listener",
                    ),
                ];
                let configs = items
                    .into_iter()
                    .filter(|(n, ..)| wanted(n))
                    .map(|(n, value, ty, doc)| {
                        entry(w, n, value, SOURCE_STATIC_BROKER, ty, doc, true)
                    })
                    .collect();
                out = out.with_configs(configs);
            }
            RESOURCE_GROUP => {
                let configs = req
                    .ctx
                    .shares
                    .group_configs(&res.resource_name)
                    .into_iter()
                    .filter(|c| wanted(&c.name))
                    .map(|c| {
                        let def = strom_broker::share::group_config_def(&c.name);
                        let ty = def.map_or(TYPE_STRING, |d| config_type(d.kind, d.name));
                        let doc = def.map_or("", |d| d.doc);
                        let source = if c.is_default {
                            SOURCE_DEFAULT
                        } else {
                            SOURCE_GROUP_CONFIG
                        };
                        entry(w, &c.name, c.value, source, ty, doc, false)
                    })
                    .collect();
                out = out.with_configs(configs);
            }
            other => {
                out = out
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(sb(format!(
                        "resource type {other} is not supported"
                    ))));
            }
        }
        results.push(out);
    }
    req.encode(&DescribeConfigsResponse::default().with_results(results))
}

pub(crate) async fn incremental_alter_configs(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: IncrementalAlterConfigsRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let mut responses = Vec::with_capacity(r.resources.len());
    for res in r.resources {
        let denied = config_denied(
            &req,
            Operation::AlterConfigs,
            res.resource_type,
            &res.resource_name,
        );
        let result: Result<(), (i16, String)> = if let Some(d) = denied {
            Err(d)
        } else if res.resource_type != RESOURCE_TOPIC && res.resource_type != RESOURCE_GROUP {
            Err((
                ResponseError::InvalidRequest.code(),
                format!(
                    "altering resource type {} is not supported",
                    res.resource_type
                ),
            ))
        } else {
            let mut ops = Vec::with_capacity(res.configs.len());
            let mut bad = None;
            for c in &res.configs {
                match c.config_operation {
                    0 => ops.push(ConfigOp::Set(
                        c.name.to_string(),
                        c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    )),
                    1 => ops.push(ConfigOp::Delete(c.name.to_string())),
                    // APPEND / SUBTRACT of a list config: the new whole value.
                    op @ (2 | 3) if res.resource_type == RESOURCE_TOPIC => {
                        let items = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                        match broker.list_config_op(&res.resource_name, &c.name, &items, op == 2) {
                            Ok(o) => ops.push(o),
                            Err(e) => {
                                bad = Some((code(&e), e.to_string()));
                                break;
                            }
                        }
                    }
                    op => {
                        bad = Some((
                                ResponseError::InvalidConfig.code(),
                                format!(
                                    "operation {op} on {} is not supported here (APPEND and SUBTRACT are for topic list configs)",
                                    c.name
                                ),
                            ));
                        break;
                    }
                }
            }
            match bad {
                Some(b) => Err(b),
                None if res.resource_type == RESOURCE_GROUP => req
                    .ctx
                    .shares
                    .alter_group_configs(&res.resource_name, &ops, r.validate_only)
                    .await
                    .map_err(|e| (crate::share_api::group_code(&e), e.to_string())),
                None => broker
                    .admin_alter_topic_config(&res.resource_name, &ops, r.validate_only)
                    .await
                    .map_err(|e: BrokerError| (code(&e), e.to_string())),
            }
        };
        let (c, msg) = match result {
            Ok(()) => (0, None),
            Err((c, m)) => (c, Some(m)),
        };
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(c)
                .with_error_message(opt_msg(msg))
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name),
        );
    }
    req.encode(&IncrementalAlterConfigsResponse::default().with_responses(responses))
}
