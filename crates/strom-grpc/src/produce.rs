//! Produce and ProduceStream: records built into one v2 batch per partition (each record keeps
//! its key, value, headers and timestamp), checked whole before anything is written.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use strom_broker::quota::QuotaKind;
use strom_broker::records::partition_for_key;
use strom_broker::security::acl::{Operation, ResourceType};
use strom_broker::BrokerError;
use tonic::{Code, Status};

use crate::pb::{ProduceRequest, ProduceResponse, RecordMetadata};
use crate::{broker_status, status, Caller, Door};

static ROUND_ROBIN: AtomicUsize = AtomicUsize::new(0);

/// One partition's part of a request: its records' request positions and timestamps, and the
/// batch built of them.
struct PartitionBatch {
    partition: i32,
    index: Vec<usize>,
    stamps: Vec<i64>,
    batch: Vec<u8>,
}

/// Appends `req`'s records; one metadata per record, in request order.
pub(crate) async fn produce(
    door: &Door,
    caller: &Caller,
    req: ProduceRequest,
) -> Result<ProduceResponse, Status> {
    caller.allow(door, Operation::Write, ResourceType::Topic, &req.topic)?;
    if req.records.is_empty() {
        return Err(crate::invalid("records is empty"));
    }
    let t = door
        .broker
        .topic(&req.topic)
        .ok_or_else(|| unknown_topic(&req.topic))?;
    let n = (t.partitions().len() as i32).max(1);
    if let Some(p) = req.partition.filter(|p| *p < 0 || *p >= n) {
        return Err(status(
            Code::NotFound,
            "UNKNOWN_TOPIC_OR_PARTITION",
            format!(
                "partition {p}: topic {:?} has partitions 0..{}",
                req.topic,
                n - 1
            ),
        ));
    }
    let rr = ROUND_ROBIN.fetch_add(1, Ordering::Relaxed) as i32;
    let now = strom_log::now_ms();
    // Records by partition, request order kept within each.
    let mut by_partition: BTreeMap<i32, Vec<(usize, strom_records::Record)>> = BTreeMap::new();
    for (i, r) in req.records.into_iter().enumerate() {
        let partition = match (req.partition, &r.key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, n),
            (None, None) => rr.rem_euclid(n),
        };
        let timestamp = if r.timestamp_ms > 0 {
            r.timestamp_ms
        } else {
            now
        };
        let headers = r
            .headers
            .into_iter()
            .map(|h| (Bytes::from(h.key.into_bytes()), Some(h.value)))
            .collect();
        by_partition.entry(partition).or_default().push((
            i,
            strom_records::Record {
                offset: 0,
                timestamp,
                key: r.key,
                value: r.value,
                headers,
            },
        ));
    }
    let count: usize = by_partition.values().map(Vec::len).sum();
    let batches: Vec<PartitionBatch> = by_partition
        .into_iter()
        .map(|(partition, recs)| {
            let index = recs.iter().map(|(i, _)| *i).collect();
            let stamps = recs.iter().map(|(_, r)| r.timestamp).collect();
            let records: Vec<strom_records::Record> = recs.into_iter().map(|(_, r)| r).collect();
            PartitionBatch {
                partition,
                index,
                stamps,
                batch: strom_records::rebuild(&records, None),
            }
        })
        .collect();
    // A `strom.` header the core would refuse refuses the whole request before any partition
    // is written.
    for b in &batches {
        door.broker
            .check_reserved(&req.topic, &b.batch)
            .map_err(broker_status)?;
    }
    let total: usize = batches.iter().map(|b| b.batch.len()).sum();
    caller.quota_gate(door, QuotaKind::Produce, total)?;
    let mut out = vec![RecordMetadata::default(); count];
    for PartitionBatch {
        partition,
        index,
        stamps,
        batch,
    } in batches
    {
        let ack = door
            .broker
            .produce(&req.topic, partition, &batch)
            .await
            .map_err(broker_status)?;
        for (j, (i, ts)) in index.into_iter().zip(stamps).enumerate() {
            let offset = match &ack.record_offsets {
                Some(offsets) => offsets.get(j).copied().unwrap_or(-1),
                None => ack.base_offset + j as i64,
            };
            out[i] = RecordMetadata {
                partition,
                offset,
                timestamp_ms: if ack.log_append_time >= 0 {
                    ack.log_append_time
                } else {
                    ts
                },
            };
        }
    }
    caller.quota_charge(door, QuotaKind::Produce, total).await;
    Ok(ProduceResponse { records: out })
}

pub(crate) fn unknown_topic(topic: &str) -> Status {
    broker_status(BrokerError::UnknownTopicOrPartition {
        topic: topic.to_string(),
        partition: -1,
    })
}

/// ProduceStream: requests handled one after the other (their answers in order); a refused
/// one ends the stream with its status.
pub(crate) async fn produce_stream(
    door: Door,
    caller: Caller,
    mut input: tonic::Streaming<ProduceRequest>,
    out: crate::Out<ProduceResponse>,
) {
    loop {
        let next = tokio::select! {
            m = input.message() => m,
            _ = out.closed() => return,
        };
        let req = match next {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(s) => {
                out.fail(s).await;
                return;
            }
        };
        if *door.shutdown.borrow() {
            out.fail(crate::shutting_down()).await;
            return;
        }
        let started = std::time::Instant::now();
        let answer = produce(&door, &caller, req).await;
        crate::observe(&door, "ProduceStream", started);
        match answer {
            Ok(r) => {
                if !out.send(r).await {
                    return;
                }
            }
            Err(s) => {
                out.fail(s).await;
                return;
            }
        }
    }
}
