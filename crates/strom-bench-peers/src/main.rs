//! `strom-bench-peers`: the workloads of `strom bench` against NATS JetStream and Redis
//! Streams, with the same measurement (payload prefix = due time µs + interval ns, HDR
//! histograms, coordinated-omission-corrected at fixed rates) and the same `--json` keys.
//! Kept out of the `strom` binary's dependency tree. Fixed-rate pacing is the same as
//! `strom bench`'s (`strom_client::pacing`, sub-millisecond).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;

mod queue;

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum System {
    Nats,
    Redis,
}

#[derive(Parser, Debug, Clone)]
struct Args {
    #[arg(long, value_enum)]
    system: System,
    /// nats://127.0.0.1:4222 or redis://127.0.0.1:6379
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Streams (NATS subjects / Redis keys) = partitions.
    #[arg(long, default_value_t = 1)]
    partitions: usize,
    #[arg(long, default_value_t = 1024)]
    message_size: usize,
    /// Total msg/s; 0 = max.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Messages per pipelined round (Redis pipeline size / NATS publish window).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// At a fixed rate, Redis sends a pipeline at the latest this long after its first
    /// message was due, even if it holds fewer than --batch (0 = full pipelines). NATS
    /// publishes each message when it is due, so it has nothing to linger over.
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Keyed run: messages carry keys from a pool of N ("key-0".."key-{N-1}"); each key
    /// always goes to the same stream (NATS subject / Redis key), chosen by a hash of the
    /// key, and travels with the message (NATS header / Redis field). 0 = round robin.
    #[arg(long, default_value_t = 0)]
    keys: usize,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    #[arg(long)]
    json: bool,
    /// `stream` (the workloads above) or `queue`: the share-group workload of
    /// `strom bench --share-group` (see queue.rs): --messages preloaded, --consumers workers.
    #[arg(long, default_value = "stream")]
    workload: String,
    /// Records preloaded by the queue workload (0 = 200000).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// Records of the queue workload's redelivery-latency phase (0 = skip).
    #[arg(long, default_value_t = 200)]
    redeliveries: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid hdr bounds")
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    produced: AtomicU64,
    consumed: AtomicU64,
    e2e: parking::Mutex<Histogram<u64>>,
    ack: parking::Mutex<Histogram<u64>>,
}

mod parking {
    pub(crate) type Mutex<T> = std::sync::Mutex<T>;
}

fn payload(size: usize, due_us: u64, dt_ns: u64) -> Bytes {
    let mut v = BytesMut::with_capacity(size);
    v.put_u64(due_us);
    v.put_u64(dt_ns);
    v.resize(size.max(16), 0x5a);
    v.freeze()
}

/// The key of message `seq` in a keyed run, and the stream it belongs to (FNV-1a of the key:
/// any stable hash does, the point is that a key always lands on the same stream).
fn key_of(a: &Args, seq: u64) -> Option<(String, usize)> {
    if a.keys == 0 {
        return None;
    }
    let key = format!("key-{}", seq % a.keys as u64);
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Some((key, (h % a.partitions as u64) as usize))
}

/// Stream of message `seq` of producer `id`: by key, or round robin.
fn stream_of(a: &Args, id: usize, seq: u64) -> (Option<String>, usize) {
    match key_of(a, seq) {
        Some((k, p)) => (Some(k), p),
        None => (None, (id + seq as usize) % a.partitions),
    }
}

fn record_latency(s: &Shared, local: &mut Histogram<u64>, p: &[u8]) {
    if p.len() >= 8 && s.measuring.load(Ordering::Relaxed) {
        let due = u64::from_be_bytes(p[0..8].try_into().unwrap_or([0; 8]));
        let _ = local.record(now_us().saturating_sub(due).max(1));
    }
}

/// Schedules message `seq` of a producer: (due µs, optional send instant).
fn schedule(a: &Args, start: Instant, start_us: u64, seq: u64) -> (u64, Option<Instant>) {
    if a.rate == 0 {
        return (now_us(), None);
    }
    let dt_ns = 1e9 / (a.rate as f64 / a.producers as f64);
    let off = Duration::from_nanos((seq as f64 * dt_ns) as u64);
    (start_us + off.as_micros() as u64, Some(start + off))
}

async fn nats_producer(id: usize, a: Arc<Args>, s: Arc<Shared>) -> Result<(), BoxErr> {
    let js = async_nats::jetstream::new(async_nats::connect(&a.url).await?);
    let start = Instant::now();
    let start_us = now_us();
    // Up to `batch` publishes await their acks; a task of their own completes them in order
    // and times each ack as it arrives (not when the window next fills).
    let slots = Arc::new(tokio::sync::Semaphore::new(a.batch.max(1)));
    let (window, mut acks) = tokio::sync::mpsc::unbounded_channel::<(
        Instant,
        async_nats::jetstream::context::PublishAckFuture,
        tokio::sync::OwnedSemaphorePermit,
    )>();
    let completer = {
        let s = s.clone();
        tokio::spawn(async move {
            while let Some((sent, ack, _slot)) = acks.recv().await {
                ack.await?;
                if s.measuring.load(Ordering::Relaxed) {
                    let us = (sent.elapsed().as_micros() as u64).max(1);
                    let _ = s.ack.lock().map(|mut h| h.record(us));
                    s.produced.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<(), BoxErr>(())
        })
    };
    let mut seq = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        let (due, at) = schedule(&a, start, start_us, seq);
        if let Some(t) = at {
            strom_client::pacing::sleep_until_precisely(t).await;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (key, stream) = stream_of(&a, id, seq);
        let subject = format!("bench.{stream}");
        let sent = Instant::now();
        let body = payload(a.message_size, due, 0);
        let ack = match key {
            Some(k) => {
                let mut h = async_nats::HeaderMap::new();
                h.insert("k", k.as_str());
                js.publish_with_headers(subject, h, body).await?
            }
            None => js.publish(subject, body).await?,
        };
        if window.send((sent, ack, slot)).is_err() {
            break; // the completer stopped on an error, returned below
        }
        seq += 1;
    }
    drop(window);
    completer.await?
}

async fn nats_consumer(id: usize, a: Arc<Args>, s: Arc<Shared>) -> Result<(), BoxErr> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let js = async_nats::jetstream::new(async_nats::connect(&a.url).await?);
    let stream = js.get_stream("BENCH").await?;
    let subjects: Vec<String> = (0..a.partitions)
        .filter(|p| p % a.consumers == id)
        .map(|p| format!("bench.{p}"))
        .collect();
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::New,
            filter_subjects: subjects,
            ..Default::default()
        })
        .await?;
    let mut msgs = consumer.messages().await?;
    let mut local = hist();
    loop {
        match tokio::time::timeout(Duration::from_millis(500), msgs.next()).await {
            Ok(Some(m)) => {
                let m = m?;
                record_latency(&s, &mut local, &m.payload);
                if s.measuring.load(Ordering::Relaxed) {
                    s.consumed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(None) => break,
            Err(_) if s.stop.load(Ordering::Relaxed) => break,
            Err(_) => {}
        }
    }
    let _ = s.e2e.lock().map(|mut h| h.add(&local));
    Ok(())
}

async fn redis_producer(id: usize, a: Arc<Args>, s: Arc<Shared>) -> Result<(), BoxErr> {
    let mut con = redis::Client::open(a.url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let start = Instant::now();
    let start_us = now_us();
    let mut seq = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        // One pipeline = `batch` messages (fewer with --linger-ms at a fixed rate: those due
        // within the linger window), due at their own times; sent when the last is due.
        let dt_ns = if a.rate == 0 {
            0
        } else {
            (1e9 / (a.rate as f64 / a.producers as f64)) as u64
        };
        let count = if dt_ns > 0 && a.linger_ms > 0 {
            ((a.linger_ms * 1_000_000 / dt_ns) as usize + 1).min(a.batch)
        } else {
            a.batch
        };
        let (due0, _) = schedule(&a, start, start_us, seq);
        let (_, at) = schedule(&a, start, start_us, seq + count as u64 - 1);
        if let Some(t) = at {
            strom_client::pacing::sleep_until_precisely(t).await;
        }
        let mut p = redis::pipe();
        for k in 0..count as u64 {
            let (key, stream) = stream_of(&a, id, seq + k);
            let v = payload(a.message_size, due0 + k * dt_ns / 1000, 0);
            let c = p.cmd("XADD").arg(format!("bench.{stream}")).arg("*");
            if let Some(key) = key {
                c.arg("k").arg(key);
            }
            c.arg("v").arg(&v[..]).ignore();
        }
        let sent = Instant::now();
        p.query_async::<()>(&mut con).await?;
        seq += count as u64;
        if s.measuring.load(Ordering::Relaxed) {
            let _ = s
                .ack
                .lock()
                .map(|mut h| h.record((sent.elapsed().as_micros() as u64).max(1)));
            s.produced.fetch_add(count as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

async fn redis_consumer(id: usize, a: Arc<Args>, s: Arc<Shared>) -> Result<(), BoxErr> {
    use redis::streams::StreamReadReply;
    let mut con = redis::Client::open(a.url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = (0..a.partitions)
        .filter(|p| p % a.consumers == id)
        .map(|p| format!("bench.{p}"))
        .collect();
    let mut last: Vec<String> = vec!["$".to_string(); keys.len()];
    let mut local = hist();
    let mut idle = 0;
    loop {
        let mut c = redis::cmd("XREAD");
        c.arg("COUNT")
            .arg(a.batch.max(100))
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS");
        for k in &keys {
            c.arg(k);
        }
        for l in &last {
            c.arg(l);
        }
        let r: Option<StreamReadReply> = c.query_async(&mut con).await?;
        let mut got = 0u64;
        for sk in r.map(|r| r.keys).unwrap_or_default() {
            let Some(i) = keys.iter().position(|k| *k == sk.key) else {
                continue;
            };
            for e in sk.ids {
                if let Some(redis::Value::BulkString(v)) = e.map.get("v") {
                    record_latency(&s, &mut local, v);
                }
                last[i] = e.id;
                got += 1;
            }
        }
        if s.measuring.load(Ordering::Relaxed) {
            s.consumed.fetch_add(got, Ordering::Relaxed);
        }
        if got == 0 && s.stop.load(Ordering::Relaxed) {
            idle += 1;
            if idle > 5 {
                break;
            }
        }
    }
    let _ = s.e2e.lock().map(|mut h| h.add(&local));
    Ok(())
}

async fn run(a: Args) -> Result<(), BoxErr> {
    match a.workload.as_str() {
        "stream" => {}
        "queue" => return queue::run(a).await,
        o => return Err(format!("unknown workload '{o}' (stream|queue)").into()),
    }
    match a.system {
        System::Nats => {
            use async_nats::jetstream::stream::{Config, StorageType};
            let js = async_nats::jetstream::new(async_nats::connect(&a.url).await?);
            let _ = js.delete_stream("BENCH").await;
            js.create_stream(Config {
                name: "BENCH".into(),
                subjects: vec!["bench.>".into()],
                storage: StorageType::File,
                ..Default::default()
            })
            .await?;
        }
        System::Redis => {
            let mut con = redis::Client::open(a.url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            for p in 0..a.partitions {
                redis::cmd("DEL")
                    .arg(format!("bench.{p}"))
                    .query_async::<()>(&mut con)
                    .await?;
            }
        }
    }
    let s = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        produced: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        e2e: std::sync::Mutex::new(hist()),
        ack: std::sync::Mutex::new(hist()),
    });
    let a = Arc::new(a);
    let mut cons = Vec::new();
    for c in 0..a.consumers.min(a.partitions) {
        let (a, s) = (a.clone(), s.clone());
        cons.push(tokio::spawn(async move {
            match a.system {
                System::Nats => nats_consumer(c, a, s).await,
                System::Redis => redis_consumer(c, a, s).await,
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut prods = Vec::new();
    for p in 0..a.producers {
        let (a, s) = (a.clone(), s.clone());
        prods.push(tokio::spawn(async move {
            match a.system {
                System::Nats => nats_producer(p, a, s).await,
                System::Redis => redis_producer(p, a, s).await,
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(a.warmup_secs)).await;
    s.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut last = 0;
    for sec in 1..=a.duration_secs {
        tokio::time::sleep_until((t0 + Duration::from_secs(sec)).into()).await;
        let p = s.produced.load(Ordering::Relaxed);
        eprintln!(
            "[{sec:>3}/{}s] produce {:>9} msg/s",
            a.duration_secs,
            p - last
        );
        last = p;
    }
    let secs = t0.elapsed().as_secs_f64();
    let produced = s.produced.load(Ordering::Relaxed);
    s.stop.store(true, Ordering::Relaxed);
    for t in prods {
        t.await??;
    }
    let d = Instant::now();
    for t in cons {
        t.await??;
    }
    let csecs = secs + d.elapsed().as_secs_f64() - 0.5;
    let consumed = s.consumed.load(Ordering::Relaxed);
    let e2e = s.e2e.lock().map(|h| h.clone()).unwrap_or_else(|_| hist());
    let ack = s.ack.lock().map(|h| h.clone()).unwrap_or_else(|_| hist());
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mb = a.message_size as f64 / 1e6;
    let out = json!({
        "system": format!("{:?}", a.system).to_lowercase(), "partitions": a.partitions,
        "producers": a.producers, "consumers": a.consumers, "message_size": a.message_size,
        "rate": a.rate, "batch": a.batch, "linger_ms": a.linger_ms, "keys": a.keys, "seconds": secs,
        "produce_msgs_per_s": produced as f64 / secs, "produce_mb_per_s": produced as f64 * mb / secs,
        "consume_msgs_per_s": consumed as f64 / csecs, "consume_mb_per_s": consumed as f64 * mb / csecs,
        "e2e_latency_ms": {"p50": ms(&e2e, 0.5), "p90": ms(&e2e, 0.9), "p99": ms(&e2e, 0.99),
            "p999": ms(&e2e, 0.999), "max": e2e.max() as f64 / 1000.0, "count": e2e.len()},
        "ack_latency_ms": {"p50": ms(&ack, 0.5), "p99": ms(&ack, 0.99), "p999": ms(&ack, 0.999),
            "max": ack.max() as f64 / 1000.0, "count": ack.len()},
    });
    println!("{out}");
    Ok(())
}

fn main() {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(a)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
