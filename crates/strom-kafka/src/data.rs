//! Produce, Fetch, ListOffsets: the data path. Record batches pass through as opaque bytes.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{fetch_response, produce_response};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strom_broker::quota::QuotaKind;
use strom_broker::security::acl::{Operation, ResourceType};
use strom_broker::{Broker, FetchLimits, FetchSpec, Isolation};
use strom_wire::{placeholder, Chunk};

use crate::codes;
use crate::server::{Fatal, Handled, Reply, Req};

/// Longest long poll honoured, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(300);

/// The name of the topic with this id, if any.
pub(crate) fn name_by_id(broker: &Broker, id: uuid::Uuid) -> Option<String> {
    broker
        .topics()
        .into_iter()
        .find(|t| t.id == *id.as_bytes())
        .map(|t| t.name)
}

fn partition_error(
    index: i32,
    code: i16,
    msg: Option<String>,
    version: i16,
) -> PartitionProduceResponse {
    partition_refused(index, code, msg, None, version)
}

/// The leader a NOT_LEADER_OR_FOLLOWER error knows of (KIP-951): its id and epoch, if
/// another broker is known to lead.
fn leader_hint(e: &strom_broker::BrokerError) -> Option<(i32, i32)> {
    match e {
        strom_broker::BrokerError::NotLeader {
            leader,
            leader_epoch,
            ..
        } if *leader >= 0 => Some((*leader, *leader_epoch)),
        _ => None,
    }
}

/// The endpoints of the hinted leaders, from the cluster's metadata (KIP-951
/// `node_endpoints`): (id, host, port, rack).
fn hinted_endpoints(broker: &Broker, ids: &[i32]) -> Vec<(i32, String, i32, Option<String>)> {
    let Some(meta) = broker.cluster().map(|c| c.metadata()) else {
        return Vec::new();
    };
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.iter()
        .filter_map(|id| meta.node(*id))
        .map(|n| (n.id, n.host.clone(), n.port, n.rack.clone()))
        .collect()
}

/// A refused partition; `record` is the record at fault (KIP-467: index within its batch,
/// message), sent from Produce v8 on.
fn partition_refused(
    index: i32,
    code: i16,
    msg: Option<String>,
    record: Option<(i32, &str)>,
    version: i16,
) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1);
    if version >= 5 {
        p = p.with_log_start_offset(-1);
    }
    if version >= 8 {
        p = p.with_error_message(msg.map(StrBytes::from_string));
        if let Some((i, m)) = record {
            p = p.with_record_errors(vec![BatchIndexAndErrorMessage::default()
                .with_batch_index(i)
                .with_batch_index_error_message(Some(StrBytes::from_string(m.to_string())))]);
        }
    }
    p
}

/// Appends every partition's records in request order; the reply waits for the syncs the
/// topics' durability policies ask for (`Handled::Later`), so that the connection can append
/// its next produce request meanwhile and one sync covers both.
pub(crate) fn produce<'a>(mut req: Req<'a>) -> Result<Handled<'a>, Fatal> {
    let r: ProduceRequest = req.decode()?;
    let v = req.version;
    let broker: &'a Broker = &req.ctx.broker;
    let acks_ok = matches!(r.acks, -1..=1);
    // A transactional produce needs WRITE on its transactional id, each topic WRITE.
    let txn_denied = r
        .transactional_id
        .as_ref()
        .is_some_and(|t| !req.allowed(Operation::Write, ResourceType::TransactionalId, t));
    let mut responses = Vec::with_capacity(r.topic_data.len());
    // (topic response, partition response, the sync its acknowledgement waits for)
    let mut pending = Vec::new();
    // acks=all in cluster mode: (topic response, partition response, topic, partition, the
    // offset the high watermark must reach).
    let mut replicated: Vec<(usize, usize, String, i32, i64)> = Vec::new();
    let all_acks = r.acks == -1 && broker.is_clustered();
    // Bytes appended, charged to the producer quota.
    let mut produced = 0usize;
    // Leaders named in NOT_LEADER_OR_FOLLOWER answers (KIP-951).
    let mut hinted: Vec<i32> = Vec::new();
    for td in r.topic_data {
        let name = if v >= 13 {
            name_by_id(broker, td.topic_id)
        } else {
            Some(td.name.to_string())
        };
        let denied = match name.as_deref() {
            _ if txn_denied => Some(ResponseError::TransactionalIdAuthorizationFailed),
            Some(n) if !req.allowed(Operation::Write, ResourceType::Topic, n) => {
                Some(ResponseError::TopicAuthorizationFailed)
            }
            _ => None,
        };
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for pd in td.partition_data {
            let Some(name) = name.as_deref() else {
                parts.push(partition_error(
                    pd.index,
                    ResponseError::UnknownTopicId.code(),
                    None,
                    v,
                ));
                continue;
            };
            if let Some(e) = denied {
                let msg = format!("{} may not write to {name}", req.principal);
                parts.push(partition_error(pd.index, e.code(), Some(msg), v));
                continue;
            }
            if !acks_ok {
                let msg = format!("acks must be -1, 0 or 1, not {}", r.acks);
                parts.push(partition_error(
                    pd.index,
                    ResponseError::InvalidRequiredAcks.code(),
                    Some(msg),
                    v,
                ));
                continue;
            }
            let records = pd.records.unwrap_or_default();
            // Produce v12+ adds its partition to the producer's transaction (KIP-890 v2).
            let appended = if all_acks {
                broker.check_min_insync(name, pd.index)
            } else {
                Ok(())
            }
            .and_then(|()| broker.produce_deferred_txn(name, pd.index, &records, v >= 12));
            match appended {
                Ok((ack, flush)) => {
                    produced += records.len();
                    if let Some(flush) = flush {
                        pending.push((responses.len(), parts.len(), flush));
                    }
                    if all_acks {
                        replicated.push((
                            responses.len(),
                            parts.len(),
                            name.to_string(),
                            pd.index,
                            ack.last_offset + 1,
                        ));
                    }
                    let mut p = PartitionProduceResponse::default()
                        .with_index(pd.index)
                        .with_base_offset(ack.base_offset)
                        .with_log_append_time_ms(ack.log_append_time);
                    if v >= 5 {
                        p = p.with_log_start_offset(ack.log_start_offset);
                    }
                    parts.push(p);
                }
                Err(e) => {
                    // Storage failures are logged by the core, once a second at most.
                    if !e.is_io() && !e.is_offline() && leader_hint(&e).is_none() {
                        tracing::info!(topic = name, partition = pd.index, error = %e, "produce refused");
                    }
                    let mut refused = partition_refused(
                        pd.index,
                        codes::code(&e),
                        Some(e.to_string()),
                        codes::record_error(&e),
                        v,
                    );
                    if let Some((leader, epoch)) = leader_hint(&e).filter(|_| v >= 10) {
                        refused = refused.with_current_leader(
                            produce_response::LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(leader))
                                .with_leader_epoch(epoch),
                        );
                        hinted.push(leader);
                    }
                    parts.push(refused);
                }
            }
        }
        let mut t = TopicProduceResponse::default().with_partition_responses(parts);
        if v >= 13 {
            t = t.with_topic_id(td.topic_id);
        } else {
            t = t.with_name(td.name);
        }
        responses.push(t);
    }
    let throttle = req.charge_quota(QuotaKind::Produce, produced);
    let encoder = req.encoder();
    let acks = r.acks;
    let endpoints: Vec<produce_response::NodeEndpoint> = hinted_endpoints(broker, &hinted)
        .into_iter()
        .map(|(id, host, port, rack)| {
            produce_response::NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
                .with_rack(rack.map(StrBytes::from_string))
        })
        .collect();
    let reply = move |responses| {
        if acks == 0 {
            return Ok(None);
        }
        let mut resp = ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(endpoints);
        if v >= 1 {
            resp = resp.with_throttle_time_ms(throttle);
        }
        encoder.encode(&resp)
    };
    if pending.is_empty() && replicated.is_empty() {
        return reply(responses).map(Handled::Now);
    }
    let timeout = Duration::from_millis(r.timeout_ms.max(0) as u64).min(MAX_WAIT_CAP);
    // Decoded names are slices of the request frame: own them, so that the frame's buffer is
    // free for the next request while this reply waits.
    for t in &mut responses {
        t.name = TopicName(StrBytes::from_string(t.name.to_string()));
    }
    Ok(Handled::Later(Box::pin(async move {
        for (t, p, flush) in pending {
            if let Err(e) = broker.wait_durable(flush).await {
                let part = &mut responses[t].partition_responses[p];
                // A failed sync was logged by the log as it went offline.
                if !e.is_offline() {
                    tracing::warn!(partition = part.index, error = %e, "produce not made durable");
                }
                *part = partition_error(part.index, codes::code(&e), Some(e.to_string()), v);
            }
        }
        // acks=all: the in-sync replicas have the records once the high watermark is past
        // them.
        for (t, p, topic, partition, offset) in replicated {
            if let Err(e) = broker
                .wait_replicated(&topic, partition, offset, timeout)
                .await
            {
                let part = &mut responses[t].partition_responses[p];
                if part.error_code == 0 {
                    *part = partition_error(part.index, codes::code(&e), Some(e.to_string()), v);
                }
            }
        }
        reply(responses)
    })))
}

pub(crate) async fn fetch(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: FetchRequest = req.decode()?;
    let v = req.version;
    let broker = &req.ctx.broker;
    // A follower's fetch (cluster mode): its replica id, from v15 in the replica state.
    let replica = if v >= 15 {
        r.replica_state.replica_id.0
    } else {
        r.replica_id.0
    };
    let replica = (replica >= 0).then_some(replica);
    if replica.is_some() && !req.allowed_cluster(Operation::ClusterAction) {
        return fetch_refused(&req, &r, ResponseError::ClusterAuthorizationFailed);
    }
    // Resolve names, remember the shape of the request for the response.
    let mut specs = Vec::new();
    let mut shape = Vec::with_capacity(r.topics.len());
    for t in &r.topics {
        let name = if v >= 13 {
            name_by_id(broker, t.topic_id)
        } else {
            Some(t.topic.to_string())
        };
        let readable = name
            .as_deref()
            .is_some_and(|n| req.allowed(Operation::Read, ResourceType::Topic, n));
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            match &name {
                Some(_) if !readable => {
                    parts.push((p.partition, Err(ResponseError::TopicAuthorizationFailed)))
                }
                Some(n) if replica.is_some() => {
                    let seen = broker.follower_fetched(
                        n,
                        p.partition,
                        replica.unwrap_or(-1),
                        p.fetch_offset,
                        p.current_leader_epoch,
                    );
                    match seen {
                        Ok(()) => {
                            parts.push((p.partition, Ok(specs.len())));
                            specs.push(FetchSpec {
                                topic: n.clone(),
                                partition: p.partition,
                                offset: p.fetch_offset,
                                max_bytes: p.partition_max_bytes.max(0) as usize,
                            });
                        }
                        Err(e) => parts.push((
                            p.partition,
                            Err(ResponseError::try_from_code(codes::code(&e))
                                .unwrap_or(ResponseError::NotLeaderOrFollower)),
                        )),
                    }
                }
                Some(n) => {
                    parts.push((p.partition, Ok(specs.len())));
                    specs.push(FetchSpec {
                        topic: n.clone(),
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0) as usize,
                    });
                }
                None => parts.push((p.partition, Err(ResponseError::UnknownTopicId))),
            }
        }
        shape.push((t.topic.clone(), t.topic_id, parts));
    }
    let limits = FetchLimits {
        max_bytes: if v >= 3 {
            r.max_bytes.max(0) as usize
        } else {
            i32::MAX as usize
        },
        min_bytes: r.min_bytes.max(0) as usize,
        max_wait: Duration::from_millis(r.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP),
    };
    let isolation = match replica {
        Some(_) => Isolation::Replica,
        None => isolation(v >= 4, r.isolation_level),
    };
    let mut results: Vec<_> = broker
        .fetch_isolated(&specs, limits, true, isolation)
        .await
        .into_iter()
        .map(Some)
        .collect();
    let mut responses = Vec::with_capacity(shape.len());
    let mut shared = Vec::new();
    // Bytes returned, charged to the consumer quota.
    let mut fetched = 0usize;
    // Leaders named in NOT_LEADER_OR_FOLLOWER answers (KIP-951).
    let mut hinted: Vec<i32> = Vec::new();
    for (topic, topic_id, parts) in shape {
        let mut out = Vec::with_capacity(parts.len());
        for (index, slot) in parts {
            let refused = slot.err();
            let result = slot.ok().and_then(|i| results[i].take());
            let mut pd = PartitionData::default().with_partition_index(index);
            match result {
                Some(Ok(f)) => {
                    // The batches stay in the page cache: a placeholder stands for them in
                    // the encoded response and the writer sends the file range (sendfile).
                    fetched += f.file.as_ref().map_or(f.data.len(), |r| r.len);
                    let records = match f.file {
                        Some(r) => match placeholder(r.len) {
                            Some(ph) => {
                                let chunk = Chunk::File {
                                    file: r.file,
                                    pos: r.pos,
                                    len: r.len,
                                };
                                shared.push((ph.clone(), chunk));
                                ph
                            }
                            None => read_range(&r)?,
                        },
                        None => f.data,
                    };
                    pd = pd
                        .with_high_watermark(f.high_watermark)
                        .with_last_stable_offset(f.last_stable_offset)
                        .with_records(Some(records));
                    if isolation == Isolation::ReadCommitted {
                        let aborted = f
                            .aborted
                            .iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(a.producer_id))
                                    .with_first_offset(a.first_offset)
                            })
                            .collect();
                        pd = pd.with_aborted_transactions(Some(aborted));
                    }
                    if v >= 5 {
                        pd = pd.with_log_start_offset(f.log_start_offset);
                    }
                }
                other => {
                    let code = match other {
                        Some(Err(e)) => {
                            if let Some((leader, epoch)) = leader_hint(&e).filter(|_| v >= 12) {
                                pd = pd.with_current_leader(
                                    fetch_response::LeaderIdAndEpoch::default()
                                        .with_leader_id(BrokerId(leader))
                                        .with_leader_epoch(epoch),
                                );
                                hinted.push(leader);
                            }
                            codes::code(&e)
                        }
                        _ => refused.unwrap_or(ResponseError::UnknownTopicId).code(),
                    };
                    pd = pd
                        .with_error_code(code)
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_records(Some(Bytes::new()));
                    if v >= 5 {
                        pd = pd.with_log_start_offset(-1);
                    }
                }
            }
            if v >= 11 {
                pd = pd.with_preferred_read_replica(BrokerId(-1));
            }
            out.push(pd);
        }
        let mut t = FetchableTopicResponse::default().with_partitions(out);
        if v >= 13 {
            t = t.with_topic_id(topic_id);
        } else {
            t = t.with_topic(topic);
        }
        responses.push(t);
    }
    let mut resp = FetchResponse::default().with_responses(responses);
    if v >= 16 {
        resp = resp.with_node_endpoints(
            hinted_endpoints(broker, &hinted)
                .into_iter()
                .map(|(id, host, port, rack)| {
                    fetch_response::NodeEndpoint::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                        .with_rack(rack.map(StrBytes::from_string))
                })
                .collect(),
        );
    }
    if v >= 1 {
        resp = resp.with_throttle_time_ms(req.charge_quota(QuotaKind::Fetch, fetched));
    }
    req.encode_chunks(&resp, shared)
}

/// The isolation level of a Fetch (v4+) or ListOffsets (v2+): 1 is READ_COMMITTED; any
/// other value, or an older version, READ_UNCOMMITTED.
/// A fetch refused whole: `code` for each partition asked for.
fn fetch_refused(req: &Req<'_>, r: &FetchRequest, code: ResponseError) -> Result<Reply, Fatal> {
    let v = req.version;
    let responses = r
        .topics
        .iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_error_code(code.code())
                        .with_high_watermark(-1)
                        .with_records(Some(Bytes::new()))
                })
                .collect();
            let mut ft = FetchableTopicResponse::default().with_partitions(parts);
            if v >= 13 {
                ft = ft.with_topic_id(t.topic_id);
            } else {
                ft = ft.with_topic(t.topic.clone());
            }
            ft
        })
        .collect();
    req.encode(&FetchResponse::default().with_responses(responses))
}

fn isolation(has_field: bool, level: i8) -> Isolation {
    if has_field && level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    }
}

/// Reads a file range too large for a placeholder (a single batch above
/// `strom_wire::PLACEHOLDER_MAX`, allowed by a topic's `max.message.bytes`).
fn read_range(r: &strom_log::FileRange) -> Result<Bytes, Fatal> {
    let mut buf = vec![0u8; r.len];
    std::os::unix::fs::FileExt::read_exact_at(&*r.file, &mut buf, r.pos)?;
    Ok(Bytes::from(buf))
}

pub(crate) fn list_offsets(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: ListOffsetsRequest = req.decode()?;
    let v = req.version;
    let broker = &req.ctx.broker;
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let describable = req.allowed(Operation::Describe, ResourceType::Topic, &t.name);
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let mut out = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    if !describable {
                        return out
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                            .with_offset(-1)
                            .with_timestamp(-1);
                    }
                    let isolation = isolation(v >= 2, r.isolation_level);
                    match broker.list_offset_isolated(
                        &t.name,
                        p.partition_index,
                        p.timestamp,
                        isolation,
                    ) {
                        Ok((offset, ts)) => {
                            out = out.with_offset(offset).with_timestamp(ts);
                            if v >= 4 {
                                out = out.with_leader_epoch(0);
                            }
                        }
                        Err(e) => {
                            out = out
                                .with_error_code(codes::code(&e))
                                .with_offset(-1)
                                .with_timestamp(-1);
                        }
                    }
                    out
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(TopicName(t.name.0))
                .with_partitions(parts)
        })
        .collect();
    req.encode(&ListOffsetsResponse::default().with_topics(topics))
}
