//! The transaction APIs (KIP-98, KIP-360, KIP-890) → [`TxnCoordinator`]: InitProducerId with
//! a transactional id, AddPartitionsToTxn (v0-3 single, v4+ batched incl. verify-only),
//! AddOffsetsToTxn, EndTxn, TxnOffsetCommit, DescribeTransactions, ListTransactions, and
//! DescribeProducers (the partitions' producer state). The door only translates: every
//! decision is the coordinator's.

use std::sync::Arc;

use kafka_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnResult,
    AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    DescribeProducersResponse, PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TopicData, TransactionState,
};
use kafka_protocol::messages::end_txn_response::EndTxnResponse;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_transactions_response::{
    ListTransactionsResponse, TransactionState as ListedTransaction,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, DescribeProducersRequest,
    DescribeTransactionsRequest, EndTxnRequest, InitProducerIdRequest, ListTransactionsRequest,
    ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as E;
use strom_broker::txn::{PendingOffset, TxnCoordinator, TxnError, TxnMeta};

use crate::codes;
use crate::server::{sb, Ctx, Fatal, Reply, Req};
use strom_broker::security::acl::{Operation, ResourceType, CLUSTER_NAME};

/// The Kafka error code of a coordinator refusal.
pub(crate) fn txn_code(e: &TxnError) -> i16 {
    match e {
        TxnError::InvalidTransactionTimeout(..) => E::InvalidTransactionTimeout.code(),
        TxnError::ProducerFenced => E::ProducerFenced.code(),
        TxnError::InvalidProducerEpoch => E::InvalidProducerEpoch.code(),
        TxnError::InvalidProducerIdMapping => E::InvalidProducerIdMapping.code(),
        TxnError::InvalidTxnState(_) => E::InvalidTxnState.code(),
        TxnError::ConcurrentTransactions => E::ConcurrentTransactions.code(),
        TxnError::UnknownTopicOrPartition => E::UnknownTopicOrPartition.code(),
        TxnError::OperationNotAttempted => E::OperationNotAttempted.code(),
        TxnError::InvalidTransactionalId => E::InvalidRequest.code(),
        // Retriable: the client retries, the ticker completes what was prepared.
        TxnError::Storage(_) => E::CoordinatorNotAvailable.code(),
    }
}

fn code_of(r: &Result<(), TxnError>) -> i16 {
    r.as_ref().err().map_or(0, txn_code)
}

fn txns(ctx: &Ctx) -> Option<&Arc<TxnCoordinator>> {
    ctx.txns.as_ref()
}

/// Whether OffsetFetch with require_stable must answer UNSTABLE_OFFSET_COMMIT for the
/// partition: a transaction holds a pending offset of the group for it.
pub(crate) fn unstable(ctx: &Ctx, require_stable: bool, group: &str, topic: &str, p: i32) -> bool {
    require_stable && txns(ctx).is_some_and(|t| t.has_pending_offset(group, topic, p))
}

/// The error code OffsetFetch answers for a partition (see [`unstable`]).
pub(crate) fn offset_fetch_code(
    ctx: &Ctx,
    require_stable: bool,
    group: &str,
    topic: &str,
    p: i32,
) -> i16 {
    if unstable(ctx, require_stable, group, topic, p) {
        E::UnstableOffsetCommit.code()
    } else {
        0
    }
}

/// InitProducerId: with a transactional id, the coordinator's; without, the idempotent
/// producer's (`meta`).
pub(crate) async fn init_producer_id(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: InitProducerIdRequest = req.decode()?;
    let fail = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    let Some(id) = r.transactional_id.as_ref().map(|t| t.to_string()) else {
        // An idempotent producer needs IDEMPOTENT_WRITE on the cluster, which WRITE on
        // any topic implies (Kafka 2.8+).
        if !req.permits(
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) && !req.allowed_any(Operation::Write, ResourceType::Topic)
        {
            tracing::info!(peer = %req.peer, principal = %req.principal, "idempotent producer refused: no IDEMPOTENT_WRITE");
            return req.encode(&fail(E::ClusterAuthorizationFailed.code()));
        }
        return req.encode(&crate::meta::init_idempotent(req.ctx, &r));
    };
    if !may_write_txn(&req, &id) {
        return req.encode(&fail(E::TransactionalIdAuthorizationFailed.code()));
    }
    let Some(t) = txns(req.ctx) else {
        return req.encode(&fail(E::CoordinatorNotAvailable.code()));
    };
    let producer = (r.producer_id.0 >= 0).then_some((r.producer_id.0, r.producer_epoch));
    let resp = match t
        .init_producer_id(&id, r.transaction_timeout_ms, producer)
        .await
    {
        Ok((pid, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(e) => {
            tracing::info!(transactional_id = %id, error = %e, "InitProducerId refused");
            fail(txn_code(&e))
        }
    };
    req.encode(&resp)
}

type Parts = Vec<(String, i32)>;

/// Whether the principal may WRITE transactional id `id` (every transaction API needs it).
fn may_write_txn(req: &Req<'_>, id: &str) -> bool {
    req.allowed(Operation::Write, ResourceType::TransactionalId, id)
}

/// The refusal of adding `parts` to transaction `id`, per partition, if any: the
/// transactional id or a topic without WRITE (the other partitions are then not attempted).
fn add_denied(req: &Req<'_>, id: &str, parts: &Parts) -> Option<Vec<((String, i32), i16)>> {
    if !may_write_txn(req, id) {
        let c = E::TransactionalIdAuthorizationFailed.code();
        return Some(parts.iter().map(|k| (k.clone(), c)).collect());
    }
    let denied: Vec<bool> = parts
        .iter()
        .map(|(t, _)| !req.allowed(Operation::Write, ResourceType::Topic, t))
        .collect();
    denied.iter().any(|d| *d).then(|| {
        parts
            .iter()
            .zip(denied)
            .map(|(k, d)| {
                let c = if d {
                    E::TopicAuthorizationFailed
                } else {
                    E::OperationNotAttempted
                };
                (k.clone(), c.code())
            })
            .collect()
    })
}

fn topic_results(
    results: Vec<((String, i32), Result<(), TxnError>)>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    coded_topic_results(results.into_iter().map(|(k, r)| (k, code_of(&r))).collect())
}

fn coded_topic_results(results: Vec<((String, i32), i16)>) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut by_topic: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, p), code) in results {
        let part = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(p)
            .with_partition_error_code(code);
        match by_topic.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.results_by_partition.push(part),
            None => by_topic.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(sb(topic)))
                    .with_results_by_partition(vec![part]),
            ),
        }
    }
    by_topic
}

pub(crate) async fn add_partitions_to_txn(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: AddPartitionsToTxnRequest = req.decode()?;
    let flatten = |topics: &[kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic]| -> Parts {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), *p)))
            .collect()
    };
    let Some(t) = txns(req.ctx) else {
        return req.encode(
            &AddPartitionsToTxnResponse::default()
                .with_error_code(E::CoordinatorNotAvailable.code()),
        );
    };
    if req.version <= 3 {
        let parts = flatten(&r.v3_and_below_topics);
        if let Some(denied) = add_denied(&req, &r.v3_and_below_transactional_id, &parts) {
            return req.encode(
                &AddPartitionsToTxnResponse::default()
                    .with_results_by_topic_v3_and_below(coded_topic_results(denied)),
            );
        }
        let results = t
            .add_partitions(
                &r.v3_and_below_transactional_id,
                r.v3_and_below_producer_id.0,
                r.v3_and_below_producer_epoch,
                &parts,
            )
            .await;
        return req.encode(
            &AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(topic_results(results)),
        );
    }
    // v4+: batched, from brokers; `verify_only` checks without adding (KIP-890 part 1).
    let mut out = Vec::with_capacity(r.transactions.len());
    for x in &r.transactions {
        let parts = flatten(&x.topics);
        if let Some(denied) = add_denied(&req, &x.transactional_id, &parts) {
            out.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(x.transactional_id.clone())
                    .with_topic_results(coded_topic_results(denied)),
            );
            continue;
        }
        let results = if x.verify_only {
            t.verify_partitions(
                &x.transactional_id,
                x.producer_id.0,
                x.producer_epoch,
                &parts,
            )
        } else {
            t.add_partitions(
                &x.transactional_id,
                x.producer_id.0,
                x.producer_epoch,
                &parts,
            )
            .await
        };
        out.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(x.transactional_id.clone())
                .with_topic_results(topic_results(results)),
        );
    }
    req.encode(&AddPartitionsToTxnResponse::default().with_results_by_transaction(out))
}

pub(crate) async fn add_offsets_to_txn(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: AddOffsetsToTxnRequest = req.decode()?;
    let code = match txns(req.ctx) {
        _ if !may_write_txn(&req, &r.transactional_id) => {
            E::TransactionalIdAuthorizationFailed.code()
        }
        _ if !req.allowed(Operation::Read, ResourceType::Group, &r.group_id) => {
            E::GroupAuthorizationFailed.code()
        }
        None => E::CoordinatorNotAvailable.code(),
        Some(t) => code_of(
            &t.add_offsets(
                &r.transactional_id,
                r.producer_id.0,
                r.producer_epoch,
                &r.group_id,
            )
            .await,
        ),
    };
    req.encode(&AddOffsetsToTxnResponse::default().with_error_code(code))
}

pub(crate) async fn end_txn(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: EndTxnRequest = req.decode()?;
    let Some(t) = txns(req.ctx) else {
        return req
            .encode(&EndTxnResponse::default().with_error_code(E::CoordinatorNotAvailable.code()));
    };
    if !may_write_txn(&req, &r.transactional_id) {
        return req.encode(
            &EndTxnResponse::default()
                .with_error_code(E::TransactionalIdAuthorizationFailed.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
    }
    // EndTxn v5+ is transactions v2 (KIP-890): the epoch is bumped and returned.
    let v2 = req.version >= 5;
    let resp = match t
        .end_txn(
            &r.transactional_id,
            r.producer_id.0,
            r.producer_epoch,
            r.committed,
            v2,
        )
        .await
    {
        Ok((pid, epoch)) => EndTxnResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(e) => {
            tracing::info!(transactional_id = %r.transactional_id.as_str(), error = %e, "EndTxn refused");
            EndTxnResponse::default()
                .with_error_code(txn_code(&e))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    };
    req.encode(&resp)
}

pub(crate) async fn txn_offset_commit(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: TxnOffsetCommitRequest = req.decode()?;
    let max_metadata = req.ctx.groups.config().offset_metadata_max_bytes;
    let mut offsets = Vec::new();
    let mut too_large = Vec::new();
    for tp in &r.topics {
        for p in &tp.partitions {
            if p.committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > max_metadata)
            {
                too_large.push((tp.name.to_string(), p.partition_index));
                continue;
            }
            offsets.push((
                tp.name.to_string(),
                p.partition_index,
                PendingOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                },
            ));
        }
    }
    let keys: Vec<(String, i32)> = offsets.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    // Needs WRITE on the transactional id, READ on the group and on each topic.
    let denied = if !may_write_txn(&req, &r.transactional_id) {
        Some(E::TransactionalIdAuthorizationFailed)
    } else if !req.allowed(Operation::Read, ResourceType::Group, &r.group_id) {
        Some(E::GroupAuthorizationFailed)
    } else if keys
        .iter()
        .any(|(t, _)| !req.allowed(Operation::Read, ResourceType::Topic, t))
    {
        Some(E::TopicAuthorizationFailed)
    } else {
        None
    };
    let codes: Vec<i16> = match txns(req.ctx) {
        _ if denied.is_some() => vec![denied.expect("some").code(); keys.len()],
        None => vec![E::CoordinatorNotAvailable.code(); keys.len()],
        Some(t) => match t
            .txn_offset_commit(
                &r.transactional_id,
                &r.group_id,
                r.producer_id.0,
                r.producer_epoch,
                offsets,
            )
            .await
        {
            Ok(results) => results.iter().map(code_of).collect(),
            Err(e) => vec![txn_code(&e); keys.len()],
        },
    };
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    let all = keys.into_iter().zip(codes).chain(
        too_large
            .into_iter()
            .map(|k| (k, E::OffsetMetadataTooLarge.code())),
    );
    for ((topic, p), code) in all {
        let part = TxnOffsetCommitResponsePartition::default()
            .with_partition_index(p)
            .with_error_code(code);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(part),
            None => topics.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(TopicName(sb(topic)))
                    .with_partitions(vec![part]),
            ),
        }
    }
    req.encode(&TxnOffsetCommitResponse::default().with_topics(topics))
}

fn described(m: &TxnMeta) -> TransactionState {
    let mut topics: Vec<TopicData> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.iter_mut().find(|d| d.topic.0.as_str() == t) {
            Some(d) => d.partitions.push(*p),
            None => topics.push(
                TopicData::default()
                    .with_topic(TopicName(sb(t.clone())))
                    .with_partitions(vec![*p]),
            ),
        }
    }
    TransactionState::default()
        .with_transactional_id(TransactionalId(sb(m.transactional_id.clone())))
        .with_transaction_state(sb(m.state.name()))
        .with_transaction_timeout_ms(m.timeout_ms)
        .with_transaction_start_time_ms(m.start_ms)
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.producer_epoch)
        .with_topics(topics)
}

pub(crate) fn describe_transactions(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeTransactionsRequest = req.decode()?;
    let states = r
        .transactional_ids
        .iter()
        .map(|id| match txns(req.ctx).and_then(|t| t.describe(id)) {
            _ if !req.allowed(Operation::Describe, ResourceType::TransactionalId, id) => {
                TransactionState::default()
                    .with_transactional_id(id.clone())
                    .with_error_code(E::TransactionalIdAuthorizationFailed.code())
                    .with_transaction_state(sb(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
            Some(m) => described(&m),
            None => TransactionState::default()
                .with_transactional_id(id.clone())
                .with_error_code(E::TransactionalIdNotFound.code())
                .with_transaction_state(sb(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1),
        })
        .collect();
    req.encode(&DescribeTransactionsResponse::default().with_transaction_states(states))
}

/// Kafka's state names, for the unknown-filter check of ListTransactions.
const STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
];

pub(crate) fn list_transactions(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: ListTransactionsRequest = req.decode()?;
    let unknown: Vec<StrBytes> = r
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = strom_log::now_ms();
    let pattern = r
        .transactional_id_pattern
        .as_ref()
        .map(|p| p.to_string())
        .filter(|p| !p.is_empty());
    let listed = txns(req.ctx)
        .map(|t| t.list())
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            (r.state_filters.is_empty() || r.state_filters.iter().any(|s| s.as_str() == m.state.name()))
                && (r.producer_id_filters.is_empty()
                    || r.producer_id_filters.iter().any(|p| p.0 == m.producer_id))
                // duration_filter (v1+): transactions running longer than it.
                && (r.duration_filter < 0
                    || m.start_ms >= 0 && now - m.start_ms >= r.duration_filter)
                && pattern
                    .as_deref()
                    .is_none_or(|p| glob_match(p, &m.transactional_id))
                && req.permits(Operation::Describe, ResourceType::TransactionalId, &m.transactional_id)
        })
        .map(|m| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(sb(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(sb(m.state.name()))
        })
        .collect();
    req.encode(
        &ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(listed),
    )
}

/// The transactional id pattern of ListTransactions v2 (KIP-1152) is a Java regular
/// expression; Strom matches the common subset: literal text with `.*` / `*` wildcards.
fn glob_match(pattern: &str, s: &str) -> bool {
    let p = pattern.replace(".*", "*");
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == s;
    }
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

pub(crate) fn describe_producers(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeProducersRequest = req.decode()?;
    let broker = &req.ctx.broker;
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| match broker.producers(&t.name, p) {
                    Ok(ps) => PartitionResponse::default()
                        .with_partition_index(p)
                        .with_active_producers(
                            ps.into_iter()
                                .map(|s| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(s.producer_id))
                                        .with_producer_epoch(s.producer_epoch as i32)
                                        .with_last_sequence(s.last_sequence)
                                        .with_last_timestamp(s.last_timestamp)
                                        .with_coordinator_epoch(s.coordinator_epoch)
                                        .with_current_txn_start_offset(s.current_txn_start_offset)
                                })
                                .collect(),
                        ),
                    Err(e) => PartitionResponse::default()
                        .with_partition_index(p)
                        .with_error_code(codes::code(&e))
                        .with_error_message(Some(sb(e.to_string()))),
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    req.encode(&DescribeProducersResponse::default().with_topics(topics))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn patterns_match_literals_and_wildcards() {
        assert!(glob_match("app-1", "app-1"));
        assert!(!glob_match("app-1", "app-12"));
        assert!(glob_match("app-.*", "app-12"));
        assert!(glob_match("*-x-*", "a-x-b"));
        assert!(!glob_match("app-*", "other"));
    }
}
