//! The old request versions Kafka 4 removed (KIP-896) that old clients still send, and that
//! the `kafka-protocol` crate no longer decodes: Produce v0-2, Fetch v0-3, ListOffsets v0,
//! OffsetCommit v0-1, OffsetFetch v0, CreateTopics v0-1, DeleteTopics v0, DescribeConfigs v0.
//!
//! Each is decoded here by hand (every count and length checked against the bytes left, as
//! `bounds` does for the crate's versions), rewritten as the lowest version the crate
//! decodes, handled by the ordinary handler, and its response rewritten back to the old
//! version. Produce's magic 0/1 message sets become one v2 batch before the core sees
//! them, and Fetch's v2 batches become message sets of the client's magic (0 for Fetch
//! v0-1, 1 for v2-3), both in `strom_records::message_set`. A message set that does not
//! hold together (bad CRC, truncated, undecodable) is CORRUPT_MESSAGE for its partition
//! and nothing of it is written; a partition carrying v2 batches in Produce v0-2 is
//! INVALID_RECORD, as Kafka answered.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsResponse, DescribeConfigsResponse, FetchResponse, ListOffsetsResponse,
    ProduceResponse,
};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;
use strom_records::message_set;
use strom_records::BatchError;
use strom_wire::Chunk;

use crate::server::{self, Ctx, Fatal, Handled, Reply};

fn need(b: &Bytes, n: usize) -> Result<(), Fatal> {
    if b.remaining() < n {
        Err(Fatal("truncated request".into()))
    } else {
        Ok(())
    }
}

fn i16_(b: &mut Bytes) -> Result<i16, Fatal> {
    need(b, 2)?;
    Ok(b.get_i16())
}

fn i32_(b: &mut Bytes) -> Result<i32, Fatal> {
    need(b, 4)?;
    Ok(b.get_i32())
}

fn i64_(b: &mut Bytes) -> Result<i64, Fatal> {
    need(b, 8)?;
    Ok(b.get_i64())
}

/// A nullable string's bytes, length prefix included (to copy into the rewritten request).
fn raw_string(b: &mut Bytes) -> Result<Bytes, Fatal> {
    need(b, 2)?;
    let n = i16::from_be_bytes([b[0], b[1]]);
    let len = 2 + n.max(0) as usize;
    need(b, len)?;
    Ok(b.split_to(len))
}

/// A non-null string.
fn string(b: &mut Bytes) -> Result<String, Fatal> {
    let n = i16_(b)?;
    if n < 0 {
        return Err(Fatal("null string where a name is required".into()));
    }
    need(b, n as usize)?;
    Ok(String::from_utf8_lossy(&b.split_to(n as usize)).into_owned())
}

/// Nullable bytes (i32 length).
fn nbytes(b: &mut Bytes) -> Result<Option<Bytes>, Fatal> {
    let n = i32_(b)?;
    if n < 0 {
        return Ok(None);
    }
    need(b, n as usize)?;
    Ok(Some(b.split_to(n as usize)))
}

/// An array count; each element takes at least `min` bytes, so a count beyond what the
/// bytes left can hold is garbage (nothing is sized from it).
fn count(b: &mut Bytes, min: usize) -> Result<usize, Fatal> {
    let n = i32_(b)?;
    if n < 0 || n as usize > b.remaining() / min.max(1) {
        return Err(Fatal(format!("invalid array length {n}")));
    }
    Ok(n as usize)
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len() as i16);
    out.put_slice(s.as_bytes());
}

fn put_nstr(out: &mut BytesMut, s: Option<&str>) {
    match s {
        None => out.put_i16(-1),
        Some(s) => put_str(out, s),
    }
}

/// A topic's partitions in request order, each with the door's own error code if it refused
/// the partition's message set (`None`: passed on to the handler).
type Partitions = Vec<(String, Vec<(i32, Option<i16>)>)>;

/// How the response of the rewritten request is turned back into the old version's.
enum Back {
    /// Same bytes (OffsetCommit v0-1 = v2, OffsetFetch v0 = v1).
    Same,
    /// Drop the leading throttle time (DeleteTopics v0, CreateTopics v1).
    DropThrottle,
    /// Produce v0-2: every partition in request order, with the door's own answer for
    /// those not passed on.
    Produce {
        version: i16,
        order: Partitions,
    },
    /// Fetch v0-3: the fetch offset of each partition (a down-converted set starts there).
    Fetch {
        version: i16,
        offsets: HashMap<(String, i32), i64>,
    },
    /// ListOffsets v0: `max_num_offsets` of each partition.
    ListOffsets {
        max: HashMap<(String, i32), i32>,
    },
    CreateTopicsV0,
    DescribeConfigsV0,
}

/// The version the rewritten request takes.
fn target(key: ApiKey) -> i16 {
    crate::versions::decodable_min(key)
}

/// Handles an old version of `key` (below what the crate decodes): see the module doc.
pub(crate) async fn handle<'a>(
    ctx: &'a Ctx,
    client: &server::Client,
    key: ApiKey,
    version: i16,
    frame: Bytes,
) -> Result<Handled<'a>, Fatal> {
    let mut rest = frame.slice(8..);
    let client_id = raw_string(&mut rest)?;
    let (body, back) = rewrite(key, version, rest)?;
    tracing::debug!(api = ?key, version, "old request version rewritten");
    let mut new = BytesMut::with_capacity(8 + client_id.len() + body.len());
    new.put_i16(key as i16);
    new.put_i16(target(key));
    new.put_slice(&frame[4..8]);
    new.put_slice(&client_id);
    new.put_slice(&body);
    let handled = server::dispatch(ctx, client, key, target(key), new.freeze()).await?;
    Ok(match handled {
        // Decompressing and re-encoding fetched batches is CPU work off the runtime's threads.
        Handled::Now(reply) if matches!(back, Back::Fetch { .. }) => Handled::Now(
            tokio::task::spawn_blocking(move || back_reply(reply, &back))
                .await
                .map_err(|e| Fatal(format!("down-conversion failed: {e}")))??,
        ),
        Handled::Now(reply) => Handled::Now(back_reply(reply, &back)?),
        Handled::Later(later) => Handled::Later(Box::pin(async move {
            let reply = later.await?;
            back_reply(reply, &back)
        })),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The request body at the crate's lowest version, and how to answer.
fn rewrite(key: ApiKey, version: i16, mut b: Bytes) -> Result<(BytesMut, Back), Fatal> {
    let mut out = BytesMut::with_capacity(b.len() + 16);
    let back = match key {
        ApiKey::Produce => produce(version, &mut b, &mut out)?,
        ApiKey::Fetch => fetch(version, &mut b, &mut out)?,
        ApiKey::ListOffsets => {
            // v0: replica id, [topic [partition, timestamp, max_num_offsets]] → v1 drops
            // max_num_offsets.
            out.put_i32(i32_(&mut b)?);
            let mut max = HashMap::new();
            let topics = count(&mut b, 6)?;
            out.put_i32(topics as i32);
            for _ in 0..topics {
                let name = string(&mut b)?;
                put_str(&mut out, &name);
                let parts = count(&mut b, 16)?;
                out.put_i32(parts as i32);
                for _ in 0..parts {
                    let p = i32_(&mut b)?;
                    out.put_i32(p);
                    out.put_i64(i64_(&mut b)?);
                    max.insert((name.clone(), p), i32_(&mut b)?);
                }
            }
            Back::ListOffsets { max }
        }
        ApiKey::OffsetCommit => {
            // v0: group, [topic [partition, offset, metadata]]; v1 adds generation and
            // member after the group and a timestamp per partition. v2 has generation,
            // member, retention time, then v0's topics.
            out.put_slice(&raw_string(&mut b)?);
            if version >= 1 {
                out.put_i32(i32_(&mut b)?);
                out.put_slice(&raw_string(&mut b)?);
            } else {
                out.put_i32(-1);
                put_str(&mut out, "");
            }
            out.put_i64(-1); // retention: the broker's
            let topics = count(&mut b, 6)?;
            out.put_i32(topics as i32);
            for _ in 0..topics {
                out.put_slice(&raw_string(&mut b)?);
                let parts = count(&mut b, 14)?;
                out.put_i32(parts as i32);
                for _ in 0..parts {
                    out.put_i32(i32_(&mut b)?);
                    out.put_i64(i64_(&mut b)?);
                    if version >= 1 {
                        i64_(&mut b)?; // commit timestamp: Kafka ignores it too (KIP-211)
                    }
                    out.put_slice(&raw_string(&mut b)?);
                }
            }
            Back::Same
        }
        ApiKey::OffsetFetch | ApiKey::DeleteTopics => {
            // The same request as the next version (OffsetFetch v0 read ZooKeeper, v1 Kafka).
            out.put_slice(&b);
            if key == ApiKey::DeleteTopics {
                Back::DropThrottle
            } else {
                Back::Same
            }
        }
        ApiKey::CreateTopics => {
            out.put_slice(&b);
            if version == 0 {
                out.put_u8(0); // validate_only
                Back::CreateTopicsV0
            } else {
                Back::DropThrottle
            }
        }
        ApiKey::DescribeConfigs => {
            out.put_slice(&b);
            out.put_u8(0); // include_synonyms
            Back::DescribeConfigsV0
        }
        other => {
            return Err(Fatal(format!(
                "api {other:?} v{version} is below what this door decodes"
            )))
        }
    };
    Ok((out, back))
}

/// [`rewrite`] for the fuzz target (`fuzzing::legacy_frame`): whether it accepted.
#[cfg(feature = "fuzzing")]
pub(crate) fn rewrite_for_fuzzing(key: ApiKey, version: i16, body: Bytes) -> bool {
    rewrite(key, version, body).is_ok()
}

/// The code for a message set refused at the door.
fn set_error(e: &BatchError) -> i16 {
    match e {
        BatchError::UnsupportedMagic(_) | BatchError::Invalid(_) => {
            ResponseError::InvalidRecord.code()
        }
        BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. } => {
            ResponseError::MessageTooLarge.code()
        }
        _ => ResponseError::CorruptMessage.code(),
    }
}

/// Produce v0-2 → v3: a null transactional id in front, each message set up-converted.
fn produce(version: i16, b: &mut Bytes, out: &mut BytesMut) -> Result<Back, Fatal> {
    let acks = i16_(b)?;
    let timeout = i32_(b)?;
    out.put_i16(-1); // transactional id
    out.put_i16(acks);
    out.put_i32(timeout);
    let now = now_ms();
    let mut order = Vec::new();
    let mut passed: Vec<(String, Vec<(i32, Bytes)>)> = Vec::new();
    for _ in 0..count(b, 6)? {
        let name = string(b)?;
        let mut parts = Vec::new();
        let mut ok = Vec::new();
        for _ in 0..count(b, 8)? {
            let p = i32_(b)?;
            let set = nbytes(b)?.unwrap_or_default();
            let converted = if message_set::magic(&set).is_some_and(|m| m >= 2) {
                Err(ResponseError::InvalidRecord.code())
            } else {
                message_set::up_convert(&set, now).map_err(|e| {
                    tracing::info!(topic = %name, partition = p, error = %e, "old message set refused");
                    set_error(&e)
                })
            };
            match converted {
                Ok(batch) => {
                    parts.push((p, None));
                    ok.push((p, Bytes::from(batch)));
                }
                Err(code) => parts.push((p, Some(code))),
            }
        }
        order.push((name.clone(), parts));
        passed.push((name, ok));
    }
    out.put_i32(passed.len() as i32);
    for (name, parts) in passed {
        put_str(out, &name);
        out.put_i32(parts.len() as i32);
        for (p, batch) in parts {
            out.put_i32(p);
            out.put_i32(batch.len() as i32);
            out.put_slice(&batch);
        }
    }
    Ok(Back::Produce { version, order })
}

/// Bytes an old fetch's response holds at most, whatever it asks (v0-2 have no total
/// limit): its records are read into memory to be down-converted, unlike a current fetch's
/// (sent from the page cache). Above it a partition gets nothing this time and the client
/// fetches it again, as with any `max_bytes`.
const OLD_FETCH_MAX_BYTES: i32 = 64 << 20;

/// Fetch v0-3 → v4: max bytes (v0-2 had none; at most [`OLD_FETCH_MAX_BYTES`]) and
/// isolation level READ_UNCOMMITTED added.
fn fetch(version: i16, b: &mut Bytes, out: &mut BytesMut) -> Result<Back, Fatal> {
    out.put_i32(i32_(b)?); // replica id
    out.put_i32(i32_(b)?); // max wait
    out.put_i32(i32_(b)?); // min bytes
    let max_bytes = if version >= 3 { i32_(b)? } else { i32::MAX };
    let max_bytes = max_bytes.clamp(0, OLD_FETCH_MAX_BYTES);
    out.put_i32(max_bytes);
    out.put_i8(0);
    let mut offsets = HashMap::new();
    let topics = count(b, 6)?;
    out.put_i32(topics as i32);
    for _ in 0..topics {
        let name = string(b)?;
        put_str(out, &name);
        let parts = count(b, 16)?;
        out.put_i32(parts as i32);
        for _ in 0..parts {
            let p = i32_(b)?;
            let offset = i64_(b)?;
            out.put_i32(p);
            out.put_i64(offset);
            out.put_i32(i32_(b)?);
            offsets.insert((name.clone(), p), offset);
        }
    }
    Ok(Back::Fetch { version, offsets })
}

/// The bytes of a framed reply (file ranges read: down-conversion needs the records).
fn materialize(frame: &strom_wire::Frame) -> Result<Bytes, Fatal> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::with_capacity(frame.len());
    for c in &frame.0 {
        match c {
            Chunk::Mem(b) => out.extend_from_slice(b),
            Chunk::File { file, pos, len } => {
                let at = out.len();
                out.resize(at + len, 0);
                file.read_exact_at(&mut out[at..], *pos)?;
            }
        }
    }
    Ok(Bytes::from(out))
}

fn back_reply(reply: Reply, back: &Back) -> Result<Reply, Fatal> {
    let Some(frame) = reply else { return Ok(None) };
    let bytes = materialize(&frame)?;
    if bytes.len() < 8 {
        return Err(Fatal("short response".into()));
    }
    let correlation = i32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let body = bytes.slice(8..);
    let out = back_body(body, back)?;
    Ok(Some(server::frame_response(correlation, 0, out).into()))
}

/// The old version's response body from the rewritten request's.
fn back_body(mut body: Bytes, back: &Back) -> Result<BytesMut, Fatal> {
    let mut out = BytesMut::with_capacity(body.len());
    match back {
        Back::Same => out.put_slice(&body),
        Back::DropThrottle => {
            need(&body, 4)?;
            out.put_slice(&body[4..]);
        }
        Back::Produce { version, order } => {
            let r = ProduceResponse::decode(&mut body, target(ApiKey::Produce))?;
            let mut got = HashMap::new();
            for t in &r.responses {
                for p in &t.partition_responses {
                    got.insert((t.name.to_string(), p.index), p);
                }
            }
            out.put_i32(order.len() as i32);
            for (name, parts) in order {
                put_str(&mut out, name);
                out.put_i32(parts.len() as i32);
                for (p, refused) in parts {
                    let (code, base, append) = match (refused, got.get(&(name.clone(), *p))) {
                        (Some(code), _) => (*code, -1, -1),
                        (None, Some(r)) => (r.error_code, r.base_offset, r.log_append_time_ms),
                        (None, None) => (ResponseError::UnknownServerError.code(), -1, -1),
                    };
                    out.put_i32(*p);
                    out.put_i16(code);
                    out.put_i64(base);
                    if *version >= 2 {
                        out.put_i64(append);
                    }
                }
            }
            if *version >= 1 {
                out.put_i32(r.throttle_time_ms);
            }
        }
        Back::Fetch { version, offsets } => {
            let r = FetchResponse::decode(&mut body, target(ApiKey::Fetch))?;
            let magic = if *version >= 2 { 1 } else { 0 };
            if *version >= 1 {
                out.put_i32(r.throttle_time_ms);
            }
            out.put_i32(r.responses.len() as i32);
            for t in &r.responses {
                put_str(&mut out, &t.topic);
                out.put_i32(t.partitions.len() as i32);
                for p in &t.partitions {
                    out.put_i32(p.partition_index);
                    out.put_i16(p.error_code);
                    out.put_i64(p.high_watermark);
                    let from = offsets
                        .get(&(t.topic.to_string(), p.partition_index))
                        .copied()
                        .unwrap_or(0);
                    let set = p
                        .records
                        .as_ref()
                        .map(|data| message_set::down_convert(data, magic, from))
                        .unwrap_or_default();
                    out.put_i32(set.len() as i32);
                    out.put_slice(&set);
                }
            }
        }
        Back::ListOffsets { max } => {
            let r = ListOffsetsResponse::decode(&mut body, target(ApiKey::ListOffsets))?;
            out.put_i32(r.topics.len() as i32);
            for t in &r.topics {
                put_str(&mut out, &t.name);
                out.put_i32(t.partitions.len() as i32);
                for p in &t.partitions {
                    out.put_i32(p.partition_index);
                    out.put_i16(p.error_code);
                    let n = max
                        .get(&(t.name.to_string(), p.partition_index))
                        .copied()
                        .unwrap_or(1);
                    if p.error_code == 0 && p.offset >= 0 && n > 0 {
                        out.put_i32(1);
                        out.put_i64(p.offset);
                    } else {
                        out.put_i32(0);
                    }
                }
            }
        }
        Back::CreateTopicsV0 => {
            let r = CreateTopicsResponse::decode(&mut body, target(ApiKey::CreateTopics))?;
            out.put_i32(r.topics.len() as i32);
            for t in &r.topics {
                put_str(&mut out, &t.name);
                out.put_i16(t.error_code);
            }
        }
        Back::DescribeConfigsV0 => {
            let r = DescribeConfigsResponse::decode(&mut body, target(ApiKey::DescribeConfigs))?;
            out.put_i32(r.throttle_time_ms);
            out.put_i32(r.results.len() as i32);
            for res in &r.results {
                out.put_i16(res.error_code);
                put_nstr(&mut out, res.error_message.as_deref());
                out.put_i8(res.resource_type);
                put_str(&mut out, &res.resource_name);
                out.put_i32(res.configs.len() as i32);
                for c in &res.configs {
                    put_str(&mut out, &c.name);
                    put_nstr(&mut out, c.value.as_deref());
                    out.put_u8(u8::from(c.read_only));
                    // v0's is_default: the source DEFAULT_CONFIG (5).
                    out.put_u8(u8::from(c.config_source == 5));
                    out.put_u8(u8::from(c.is_sensitive));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
