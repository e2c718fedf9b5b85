//! `strom bench`: producers and consumers against one topic; throughput and HDR latencies.
//!
//! Each producer task keeps up to `--inflight` Produce requests pipelined on its own
//! connection. Every batch is encoded from one shared payload (no per-record copy); the
//! payload's first 16 bytes carry the due time of the batch's first record (µs since the
//! epoch) and the interval between records (ns), so consumers can compute each record's
//! end-to-end latency from the moment it was *due* (coordinated-omission corrected at a
//! fixed rate; at max rate the due time is the send time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::json;

use super::commands::parse_acks;
use crate::client::{check_produce, flatten_fetch};
use crate::records::{encode_uniform_batch, parse_compression};
use crate::{Client, Connection, Error, Result};
use kafka_protocol::messages::{FetchRequest, ProduceRequest};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub conn: super::Conn,
    /// Topic (created if missing); with --topics N > 1, the topics are TOPIC-0 .. TOPIC-{N-1}.
    #[arg(long, default_value = "strom-bench")]
    pub topic: String,
    /// Number of topics; producers spread their batches over every partition of every topic.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Producers; 0 = a backlog run: the consumers read the topic from its start until they
    /// reach its end (no warm-up; consume throughput only).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Record value size in bytes (>= 16).
    #[arg(long, default_value_t = 1024)]
    pub message_size: usize,
    /// Total records/s over all producers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// At a fixed rate, send a batch at the latest this long after its first record was due,
    /// even if it holds fewer than --batch records (0 = wait for a full batch).
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// Produce requests in flight per producer.
    #[arg(long, default_value_t = 8)]
    pub inflight: usize,
    #[arg(long, default_value = "1")]
    pub acks: String,
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Measured duration.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Stop once this many records were produced in the measured phase (acknowledged, over
    /// all producers), instead of after --duration-secs; 0 = by duration.
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Warm-up before measuring (not counted).
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Keyed run: records carry keys from a pool of N ("key-0".."key-{N-1}"), each sent to the
    /// partition Kafka's default partitioner picks for it (murmur2); 0 = no keys.
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
    /// Replicas per partition of the created topic (cluster mode; -1: the cluster's default).
    #[arg(long, default_value_t = -1)]
    pub replication_factor: i16,
    /// Topic config key=value for the created topic (e.g. flush.messages=1), repeatable.
    #[arg(long = "topic-config")]
    pub topic_configs: Vec<String>,
    /// Share-group (queue) run instead: preload --messages records (default 200000), then
    /// --consumers members of this share group accept them one by one; records acked per
    /// second, then the redelivery latency (release -> next delivery). See share_bench.
    #[arg(long)]
    pub share_group: Option<String>,
    /// Records of the redelivery-latency phase of a --share-group run (0 = skip it).
    #[arg(long, default_value_t = 200)]
    pub redeliveries: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn hist() -> Histogram<u64> {
    // 1 µs .. 100 s, 3 significant digits; cannot fail with these bounds.
    Histogram::new_with_bounds(1, 100_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("hdr"))
}

#[derive(Default)]
struct Counters {
    produced: AtomicU64,
    produced_bytes: AtomicU64,
    consumed: AtomicU64,
    consumed_bytes: AtomicU64,
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    c: Counters,
    e2e: Mutex<Histogram<u64>>,
    ack: Mutex<Histogram<u64>>,
}

/// Reads the first record's value prefix of an uncompressed v2 batch at `b`.
fn first_value_prefix(b: &[u8]) -> Option<(u64, u64)> {
    use strom_records::varint::{read_varint, read_varlong};
    let attrs = i16::from_be_bytes([*b.get(21)?, *b.get(22)?]);
    if attrs & 0x7 != 0 {
        return None;
    }
    let mut pos = 61;
    pos += read_varint(b.get(pos..)?).ok()?.1; // length
    pos += 1; // attributes
    pos += read_varlong(b.get(pos..)?).ok()?.1; // timestamp delta
    pos += read_varint(b.get(pos..)?).ok()?.1; // offset delta
    let klen = read_varint(b.get(pos..)?).ok()?;
    pos += klen.1 + klen.0.max(0) as usize;
    let (vlen, n) = read_varint(b.get(pos..)?).ok()?;
    pos += n;
    if vlen < 16 {
        return None;
    }
    let due = u64::from_be_bytes(b.get(pos..pos + 8)?.try_into().ok()?);
    let dt = u64::from_be_bytes(b.get(pos + 8..pos + 16)?.try_into().ok()?);
    Some((due, dt))
}

/// Where a producer's batches go, in turn: a topic, a partition, and for keyed runs the keys
/// that Kafka's default partitioner (murmur2) maps to that partition.
#[derive(Clone)]
struct Target {
    topic: Arc<str>,
    partition: i32,
    keys: Option<Vec<Bytes>>,
    /// The partition leader's address (a cluster's partitions have different leaders).
    addr: Arc<str>,
}

/// Every partition of every topic, or for keyed runs every partition that some key maps to.
fn targets(
    topics: &[(Arc<str>, Vec<i32>)],
    keys: usize,
    addr: &dyn Fn(&str, i32) -> Arc<str>,
) -> Vec<Target> {
    let mut out = Vec::new();
    for (topic, partitions) in topics {
        if keys == 0 {
            out.extend(partitions.iter().map(|&partition| Target {
                topic: topic.clone(),
                partition,
                keys: None,
                addr: addr(topic, partition),
            }));
            continue;
        }
        let n = partitions.iter().max().map_or(1, |m| m + 1);
        let mut keyed: Vec<(i32, Vec<Bytes>)> = Vec::new();
        for k in 0..keys {
            let key = Bytes::from(format!("key-{k}"));
            let p = crate::partitioner::partition_for_key(&key, n);
            match keyed.iter_mut().find(|(q, _)| *q == p) {
                Some((_, ks)) => ks.push(key),
                None => keyed.push((p, vec![key])),
            }
        }
        keyed.sort_by_key(|(p, _)| *p);
        out.extend(keyed.into_iter().map(|(partition, ks)| Target {
            topic: topic.clone(),
            partition,
            keys: Some(ks),
            addr: addr(topic, partition),
        }));
    }
    out
}

async fn producer(
    id: usize,
    a: Arc<BenchArgs>,
    s: Arc<Shared>,
    version: i16,
    targets: Vec<Target>,
) -> Result<()> {
    // One connection per partition leader.
    let mut conns: std::collections::HashMap<Arc<str>, Connection> =
        std::collections::HashMap::new();
    for t in &targets {
        if !conns.contains_key(&t.addr) {
            let c = Connection::connect(&t.addr, &format!("strom-bench-p{id}")).await?;
            conns.insert(t.addr.clone(), c);
        }
    }
    let acks = parse_acks(&a.acks)?;
    let compression = parse_compression(&a.compression)?;
    let per_producer_rate = if a.rate == 0 {
        0.0
    } else {
        a.rate as f64 / a.producers as f64
    };
    let dt_ns = if per_producer_rate > 0.0 {
        (1e9 / per_producer_rate) as u64
    } else {
        0
    };
    let start = Instant::now();
    let start_us = now_us();
    // Requests in flight are completed in order by a task of their own, so that an ack is
    // timed when it arrives, not when this loop (pacing at a fixed rate) next looks.
    let slots = Arc::new(tokio::sync::Semaphore::new(a.inflight.max(1)));
    let (inflight, acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let completer = tokio::spawn(complete_in_order(a.clone(), s.clone(), acks_rx, version));
    let mut seq: u64 = 0; // records scheduled so far
    let mut rr = id;
    let mut buf = BytesMut::with_capacity(a.batch * (a.message_size + 32) + 128);
    let filler = vec![0x5au8; a.message_size.saturating_sub(16)];
    // With --messages, stop scheduling once the count is reached (what is in flight still
    // completes), so the run overshoots by at most the batches in flight.
    let count_reached = || {
        a.messages > 0
            && s.measuring.load(Ordering::Relaxed)
            && s.c.produced.load(Ordering::Relaxed) >= a.messages
    };
    while !s.stop.load(Ordering::Relaxed) && !count_reached() {
        // Due time of this batch's first record.
        // Records in this batch: a full batch, or at a fixed rate with --linger-ms only those
        // due within the linger window after the first.
        let count = if dt_ns > 0 && a.linger_ms > 0 {
            ((a.linger_ms * 1_000_000 / dt_ns) as usize + 1).min(a.batch)
        } else {
            a.batch
        };
        let (due_us, send_at) = if dt_ns > 0 {
            let first = seq * dt_ns / 1000;
            let last = Duration::from_nanos((seq + count as u64 - 1) * dt_ns);
            (start_us + first, Some(start + last))
        } else {
            (now_us(), None)
        };
        if let Some(t) = send_at {
            crate::pacing::sleep_until_precisely(t).await;
        }
        // At most --inflight requests outstanding (the bound is the semaphore; the channel to
        // the completer never holds more).
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut v = BytesMut::with_capacity(a.message_size.max(16));
        v.put_u64(due_us);
        v.put_u64(dt_ns);
        v.extend_from_slice(&filler);
        let value = v.freeze();
        buf.clear();
        let target = &targets[rr % targets.len()];
        rr += 1;
        encode_uniform_batch(
            &mut buf,
            target.keys.as_deref(),
            &value,
            count,
            (due_us / 1000) as i64,
            compression,
        )?;
        let batch = buf.split().freeze();
        let shared = vec![batch.clone()];
        let req: ProduceRequest =
            Client::produce_request(&target.topic, acks, 30_000, vec![(target.partition, batch)]);
        seq += count as u64;
        let sent = Instant::now();
        let conn = &conns[&target.addr];
        if acks == 0 {
            conn.send_no_response(&req, version, shared).await?;
            count_produced(&a, &s, count);
            continue;
        }
        let response = conn.start_sharing(&req, version, shared).await?;
        if inflight.send((sent, count, response, slot)).is_err() {
            break; // the completer stopped on an error, returned below
        }
    }
    drop(inflight);
    completer.await.map_err(|_| Error::Closed)?
}

/// A produce request in flight: when it was sent, its records, its response, its slot.
type InFlight = (
    Instant,
    usize,
    tokio::sync::oneshot::Receiver<Bytes>,
    tokio::sync::OwnedSemaphorePermit,
);

fn count_produced(a: &BenchArgs, s: &Shared, records: usize) {
    if s.measuring.load(Ordering::Relaxed) {
        s.c.produced.fetch_add(records as u64, Ordering::Relaxed);
        s.c.produced_bytes
            .fetch_add((records * a.message_size) as u64, Ordering::Relaxed);
    }
}

/// Completes a producer's requests in order as their responses arrive: ack latency (send →
/// response), errors, produced counts. Each request's slot is freed once it is complete.
async fn complete_in_order(
    a: Arc<BenchArgs>,
    s: Arc<Shared>,
    mut inflight: tokio::sync::mpsc::UnboundedReceiver<InFlight>,
    version: i16,
) -> Result<()> {
    while let Some((sent, records, response, _slot)) = inflight.recv().await {
        let frame = response.await.map_err(|_| Error::Closed)?;
        let us = sent.elapsed().as_micros() as u64;
        let resp = Connection::decode::<ProduceRequest>(frame, version)?;
        check_produce(&resp)?;
        if s.measuring.load(Ordering::Relaxed) {
            let _ = s.ack.lock().record(us.max(1));
        }
        count_produced(&a, &s, records);
    }
    Ok(())
}

/// A consumer's next offsets: per topic, (partition, offset).
type Positions = Vec<(Arc<str>, Vec<(i32, i64)>)>;

async fn consumer(
    id: usize,
    a: Arc<BenchArgs>,
    s: Arc<Shared>,
    version: i16,
    mut pos: Positions,
    addr: Arc<str>,
) -> Result<()> {
    let conn = Connection::connect(&addr, &format!("strom-bench-c{id}")).await?;
    let mut local = hist();
    let mut idle_since: Option<Instant> = None;
    loop {
        let topics: Vec<(&str, &[(i32, i64)])> =
            pos.iter().map(|(t, ps)| (&**t, ps.as_slice())).collect();
        let req: FetchRequest = Client::fetch_request_topics(&topics, 100, 64 << 20);
        let resp = conn.call(&req, version).await?;
        let now = now_us();
        let measuring = s.measuring.load(Ordering::Relaxed);
        let mut got = false;
        for f in flatten_fetch(resp) {
            crate::check(f.error_code, || format!("{}/{}", f.topic, f.partition))?;
            let Some(slot) = pos
                .iter_mut()
                .find(|(t, _)| **t == *f.topic)
                .and_then(|(_, ps)| ps.iter_mut().find(|(p, _)| *p == f.partition))
            else {
                continue;
            };
            let data = &f.records[..];
            let mut off = 0usize;
            let mut n_total = 0u64;
            while data.len() >= off + 61 {
                let len = i32::from_be_bytes(data[off + 8..off + 12].try_into().unwrap_or([0; 4]))
                    as usize;
                if data.len() < off + 12 + len {
                    break;
                }
                let b = &data[off..off + 12 + len];
                let base = i64::from_be_bytes(b[0..8].try_into().unwrap_or([0; 8]));
                let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap_or([0; 4])) as i64;
                let count = i32::from_be_bytes(b[57..61].try_into().unwrap_or([0; 4])) as u64;
                if base + last_delta >= slot.1 {
                    n_total += count;
                    // A backlog's records are old: their age is no end-to-end latency.
                    if measuring && a.producers > 0 {
                        if let Some((due, dt_ns)) = first_value_prefix(b) {
                            for k in 0..count {
                                let d = due + k * dt_ns / 1000;
                                let _ = local.record(now.saturating_sub(d).max(1));
                            }
                        }
                    }
                    slot.1 = base + last_delta + 1;
                }
                off += 12 + len;
            }
            if n_total > 0 {
                got = true;
                if measuring {
                    s.c.consumed.fetch_add(n_total, Ordering::Relaxed);
                    s.c.consumed_bytes
                        .fetch_add(n_total * a.message_size as u64, Ordering::Relaxed);
                }
            }
        }
        if got {
            idle_since = None;
        } else if s.stop.load(Ordering::Relaxed) {
            let t = *idle_since.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_millis(500) {
                break;
            }
        }
    }
    let _ = s.e2e.lock().add(&local);
    Ok(())
}

pub(crate) async fn run(a: BenchArgs) -> Result<()> {
    if let Some(group) = a.share_group.clone() {
        return super::share_bench::run(a, group).await;
    }
    if a.message_size < 16 {
        return Err(Error::Invalid("--message-size must be >= 16".into()));
    }
    if a.batch == 0 || a.topics == 0 || a.producers + a.consumers == 0 {
        return Err(Error::Invalid(
            "--batch and --topics must be > 0, and there must be producers or consumers".into(),
        ));
    }
    let backlog = a.producers == 0;
    let client = Client::connect_with_id(&a.conn.bootstrap, "strom-bench").await?;
    let cfg = a
        .topic_configs
        .iter()
        .map(|s| super::commands::parse_kv(s))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = if a.topics == 1 {
        vec![a.topic.clone()]
    } else {
        (0..a.topics).map(|i| format!("{}-{i}", a.topic)).collect()
    };
    let mut topics: Vec<(Arc<str>, Vec<i32>)> = Vec::new();
    for name in &names {
        let topic = match client.topic(name).await {
            Ok(t) => t,
            Err(_) => {
                client
                    .create_topic_replicated(name, a.partitions, a.replication_factor, &cfg)
                    .await?;
                client.topic(name).await?
            }
        };
        let parts: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
        if parts.is_empty() {
            return Err(Error::Invalid(format!("topic {name} has no partitions")));
        }
        topics.push((Arc::from(name.as_str()), parts));
    }
    // All (topic, partition) pairs; consumer c reads every consumers-th of them.
    let all: Vec<(Arc<str>, i32)> = topics
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
        .collect();
    let pv = client.version::<ProduceRequest>()?;
    let fv = client.version::<FetchRequest>()?;
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        c: Counters::default(),
        e2e: Mutex::new(hist()),
        ack: Mutex::new(hist()),
    });
    let a = Arc::new(a);
    let mut tasks = Vec::new();
    for c in 0..a.consumers {
        // A consumer reads its partitions from their leaders: one task per leader.
        let mut mine: std::collections::BTreeMap<Arc<str>, Positions> = Default::default();
        for (i, (t, p)) in all.iter().enumerate() {
            if i % a.consumers != c {
                continue;
            }
            let at = client
                .list_offset(t, *p, if backlog { -2 } else { -1 })
                .await?;
            let by_leader = mine
                .entry(Arc::from(client.leader_addr(t, *p)))
                .or_default();
            match by_leader.iter_mut().find(|(u, _)| u == t) {
                Some((_, ps)) => ps.push((*p, at)),
                None => by_leader.push((t.clone(), vec![(*p, at)])),
            }
        }
        for (addr, positions) in mine {
            tasks.push(tokio::spawn(consumer(
                c,
                a.clone(),
                shared.clone(),
                fv,
                positions,
                addr,
            )));
        }
    }
    let mut prods = Vec::new();
    let targets = targets(&topics, a.keys, &|t, p| Arc::from(client.leader_addr(t, p)));
    for p in 0..a.producers {
        // Every producer round-robins over all targets, starting at its own index.
        prods.push(tokio::spawn(producer(
            p,
            a.clone(),
            shared.clone(),
            pv,
            targets.clone(),
        )));
    }
    if backlog {
        // Consumers stop after 500 ms without data once `stop` is set.
        shared.stop.store(true, Ordering::Relaxed);
    } else {
        eprintln!("warming up {} s ...", a.warmup_secs);
        tokio::time::sleep(Duration::from_secs(a.warmup_secs)).await;
    }
    shared.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let (mut lp, mut lc) = (0u64, 0u64);
    // A live progress bar on a terminal; one line per second otherwise (logs, CI).
    // The bar counts seconds, or records with --messages.
    let (bar_len, bar_unit) = if a.messages > 0 {
        (a.messages, "records")
    } else {
        (a.duration_secs, "s")
    };
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let b = indicatif::ProgressBar::new(bar_len);
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}}{bar_unit} {{msg}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    });
    let mut sec = 0u64;
    // A backlog run has nothing to pace: it waits for its consumers below.
    loop {
        if backlog {
            break;
        }
        if a.messages > 0 {
            // Check often so that the overshoot stays small; report once a second.
            let next = t0 + Duration::from_secs(sec + 1);
            while Instant::now() < next
                && shared.c.produced.load(Ordering::Relaxed) < a.messages
                && !prods.iter().any(|t| t.is_finished())
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } else {
            if sec >= a.duration_secs {
                break;
            }
            tokio::time::sleep_until((t0 + Duration::from_secs(sec + 1)).into()).await;
        }
        sec += 1;
        let done = a.messages > 0 && shared.c.produced.load(Ordering::Relaxed) >= a.messages;
        let p = shared.c.produced_bytes.load(Ordering::Relaxed);
        let c = shared.c.consumed_bytes.load(Ordering::Relaxed);
        let line = format!(
            "produce {:>8.1} MB/s  consume {:>8.1} MB/s",
            (p - lp) as f64 / 1e6,
            (c - lc) as f64 / 1e6
        );
        let progress = if a.messages > 0 {
            shared.c.produced.load(Ordering::Relaxed).min(a.messages)
        } else {
            sec
        };
        match &bar {
            Some(b) => {
                b.set_position(progress);
                b.set_message(line);
            }
            None => eprintln!("[{progress:>3}/{bar_len}{bar_unit}] {line}"),
        }
        (lp, lc) = (p, c);
        if done || prods.iter().any(|t| t.is_finished()) {
            break;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = t0.elapsed().as_secs_f64();
    let produced = shared.c.produced.load(Ordering::Relaxed);
    let produced_bytes = shared.c.produced_bytes.load(Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    for t in prods {
        t.await
            .map_err(|e| Error::Invalid(format!("producer task: {e}")))??;
    }
    // Consumers drain what was produced, then stop; their counters keep counting until then,
    // so consume rate is over the measured window plus the drain.
    let drain_start = Instant::now();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(30), t).await {
            Ok(r) => r.map_err(|e| Error::Invalid(format!("consumer task: {e}")))??,
            Err(_) => return Err(Error::Timeout),
        }
    }
    let csecs = secs + drain_start.elapsed().as_secs_f64() - 0.5;
    let consumed = shared.c.consumed.load(Ordering::Relaxed);
    let consumed_bytes = shared.c.consumed_bytes.load(Ordering::Relaxed);
    let e2e = shared.e2e.lock().clone();
    let ack = shared.ack.lock().clone();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let out = json!({
        "topic": a.topic, "topics": names.len(), "partitions": all.len(), "producers": a.producers, "consumers": a.consumers, "keys": a.keys,
        "messages": produced, "consumed": consumed,
        "message_size": a.message_size, "rate": a.rate, "batch": a.batch, "linger_ms": a.linger_ms, "acks": a.acks,
        "compression": a.compression, "seconds": secs,
        "produce_msgs_per_s": produced as f64 / secs.max(1e-3),
        "produce_mb_per_s": produced_bytes as f64 / secs.max(1e-3) / 1e6,
        "consume_msgs_per_s": consumed as f64 / csecs.max(0.001),
        "consume_mb_per_s": consumed_bytes as f64 / csecs.max(0.001) / 1e6,
        "e2e_latency_ms": {"p50": ms(&e2e, 0.5), "p90": ms(&e2e, 0.9), "p99": ms(&e2e, 0.99),
                           "p999": ms(&e2e, 0.999), "max": e2e.max() as f64 / 1000.0, "count": e2e.len()},
        "ack_latency_ms": {"p50": ms(&ack, 0.5), "p99": ms(&ack, 0.99), "p999": ms(&ack, 0.999),
                           "max": ack.max() as f64 / 1000.0, "count": ack.len()},
    });
    if a.conn.json {
        println!("{out}");
    } else {
        println!(
            "produce: {:.0} msg/s, {:.1} MB/s\nconsume: {:.0} msg/s, {:.1} MB/s\n\
             e2e latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n\
             ack latency ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            out["produce_msgs_per_s"].as_f64().unwrap_or(0.0),
            out["produce_mb_per_s"].as_f64().unwrap_or(0.0),
            out["consume_msgs_per_s"].as_f64().unwrap_or(0.0),
            out["consume_mb_per_s"].as_f64().unwrap_or(0.0),
            ms(&e2e, 0.5),
            ms(&e2e, 0.9),
            ms(&e2e, 0.99),
            ms(&e2e, 0.999),
            e2e.max() as f64 / 1000.0,
            ms(&ack, 0.5),
            ms(&ack, 0.99),
            ms(&ack, 0.999),
            ack.max() as f64 / 1000.0,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_prefix_is_read_back_from_encoded_batch() {
        let mut v = BytesMut::new();
        v.put_u64(123_456_789);
        v.put_u64(20_000);
        v.extend_from_slice(&[0u8; 100]);
        let mut buf = BytesMut::new();
        encode_uniform_batch(
            &mut buf,
            None,
            &v.freeze(),
            5,
            1,
            kafka_protocol::records::Compression::None,
        )
        .unwrap();
        assert_eq!(first_value_prefix(&buf), Some((123_456_789, 20_000)));
    }
}
