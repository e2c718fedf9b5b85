//! The share-group workload of `strom bench --share-group` on the peers: one stream (1
//! partition), a preloaded backlog of `--messages` records, `--consumers` workers that take
//! and acknowledge every record one by one, then the redelivery latency.
//!
//! - NATS JetStream: a work-queue stream (`retention: workqueue`, file storage), one durable
//!   pull consumer with explicit acks shared by the workers (each on its own connection),
//!   batches of up to 500 per pull, `ack()` per message (JetStream's usual ack: a publish,
//!   flushed before the clock stops). Release = `Nak` (redelivered at once).
//! - Redis Streams: a consumer group (XGROUP CREATE ... 0), each worker its own connection
//!   and consumer name: XREADGROUP COUNT 500 `>` pipelined with the XACK of the previous
//!   batch (the reply counts what was acked). Redis has no release: a record left pending is
//!   taken again with XAUTOCLAIM (min idle 0), which is what "release" means there.
//!
//! The clock starts once every worker is connected and stops when every record is acked (or
//! after `--duration-secs`); the output has the keys of `strom bench --share-group --json`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::{hist, payload, Args, BoxErr, System};

const PULL: usize = 500;

struct Run {
    n: u64,
    delivered: AtomicU64,
    acked: AtomicU64,
    stop: AtomicBool,
    deadline: Instant,
}

impl Run {
    fn going(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && self.delivered.load(Ordering::Relaxed) < self.n
            && Instant::now() < self.deadline
    }
}

// --- NATS ----------------------------------------------------------------------------------

async fn nats_setup(a: &Args, stream: &str, subject: &str, n: u64) -> Result<(), BoxErr> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
    let js = async_nats::jetstream::new(async_nats::connect(&a.url).await?);
    let _ = js.delete_stream(stream).await;
    let s = js
        .create_stream(Config {
            name: stream.into(),
            subjects: vec![subject.into()],
            storage: StorageType::File,
            retention: RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    s.create_consumer(pull::Config {
        durable_name: Some("workers".into()),
        ack_policy: AckPolicy::Explicit,
        // Not the limit of the run: every worker may hold a full pull.
        max_ack_pending: 100_000,
        ..Default::default()
    })
    .await?;
    let mut window = std::collections::VecDeque::new();
    let body = payload(a.message_size, 0, 0);
    for _ in 0..n {
        window.push_back(js.publish(subject.to_string(), body.clone()).await?);
        if window.len() >= a.batch.max(1) {
            if let Some(ack) = window.pop_front() {
                ack.await?;
            }
        }
    }
    for ack in window {
        ack.await?;
    }
    Ok(())
}

async fn nats_consumer(
    stream: &str,
    url: &str,
) -> Result<
    (
        async_nats::Client,
        async_nats::jetstream::consumer::PullConsumer,
    ),
    BoxErr,
> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client.clone());
    let c = js.get_stream(stream).await?.get_consumer("workers").await?;
    Ok((client, c))
}

async fn nats_worker(
    r: Arc<Run>,
    client: async_nats::Client,
    c: async_nats::jetstream::consumer::PullConsumer,
) -> Result<(), BoxErr> {
    while r.going() {
        let mut batch = c
            .batch()
            .max_messages(PULL)
            .expires(Duration::from_millis(100))
            .messages()
            .await?;
        while let Some(m) = batch.next().await {
            let m = m?;
            r.delivered.fetch_add(1, Ordering::Relaxed);
            m.ack().await?;
            r.acked.fetch_add(1, Ordering::Relaxed);
        }
    }
    r.stop.store(true, Ordering::Relaxed);
    client.flush().await?;
    Ok(())
}

async fn nats_redelivery(a: &Args, k: u64, lat: &mut Histogram<u64>) -> Result<(), BoxErr> {
    use async_nats::jetstream::AckKind;
    nats_setup(a, "REDELIVER", "redeliver.0", k).await?;
    let (_client, c) = nats_consumer("REDELIVER", &a.url).await?;
    // Each record: released at its first delivery, timed to its next, then acked.
    let mut released: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut done = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while done < k && Instant::now() < end {
        let mut batch = c
            .batch()
            .max_messages(1)
            .expires(Duration::from_millis(100))
            .messages()
            .await?;
        while let Some(m) = batch.next().await {
            let m = m?;
            let seq = m.info()?.stream_sequence;
            if let Some(at) = released.remove(&seq) {
                let _ = lat.record((at.elapsed().as_micros() as u64).max(1));
                m.double_ack().await?;
                done += 1;
            } else if seen.insert(seq) {
                released.insert(seq, Instant::now());
                m.ack_with(AckKind::Nak(None)).await?;
            } else {
                m.double_ack().await?;
            }
        }
    }
    Ok(())
}

// --- Redis ---------------------------------------------------------------------------------

async fn redis_con(url: &str) -> Result<redis::aio::MultiplexedConnection, BoxErr> {
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?)
}

async fn redis_setup(a: &Args, key: &str, n: u64) -> Result<(), BoxErr> {
    let mut con = redis_con(&a.url).await?;
    redis::cmd("DEL")
        .arg(key)
        .query_async::<()>(&mut con)
        .await?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("workers")
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut con)
        .await?;
    let body = payload(a.message_size, 0, 0);
    let mut left = n;
    while left > 0 {
        let count = left.min(a.batch.max(1) as u64);
        let mut p = redis::pipe();
        for _ in 0..count {
            p.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("v")
                .arg(&body[..])
                .ignore();
        }
        p.query_async::<()>(&mut con).await?;
        left -= count;
    }
    Ok(())
}

async fn redis_worker(
    r: Arc<Run>,
    mut con: redis::aio::MultiplexedConnection,
    id: usize,
) -> Result<(), BoxErr> {
    use redis::streams::StreamReadReply;
    let key = "queue.0";
    let name = format!("w{id}");
    let mut pending: Vec<String> = Vec::new();
    loop {
        let going = r.going();
        let mut p = redis::pipe();
        if !pending.is_empty() {
            p.cmd("XACK").arg(key).arg("workers").arg(&pending);
        }
        if going {
            p.cmd("XREADGROUP")
                .arg("GROUP")
                .arg("workers")
                .arg(&name)
                .arg("COUNT")
                .arg(PULL)
                .arg("BLOCK")
                .arg(100)
                .arg("STREAMS")
                .arg(key)
                .arg(">");
        }
        let acked = if pending.is_empty() {
            if !going {
                break;
            }
            let (reply,): (Option<StreamReadReply>,) = p.query_async(&mut con).await?;
            take(&r, reply, &mut pending);
            0
        } else if going {
            let (acked, reply): (u64, Option<StreamReadReply>) = p.query_async(&mut con).await?;
            pending.clear();
            take(&r, reply, &mut pending);
            acked
        } else {
            let (acked,): (u64,) = p.query_async(&mut con).await?;
            pending.clear();
            r.acked.fetch_add(acked, Ordering::Relaxed);
            break;
        };
        r.acked.fetch_add(acked, Ordering::Relaxed);
    }
    r.stop.store(true, Ordering::Relaxed);
    Ok(())
}

fn take(r: &Run, reply: Option<redis::streams::StreamReadReply>, pending: &mut Vec<String>) {
    for k in reply.map(|x| x.keys).unwrap_or_default() {
        for e in k.ids {
            r.delivered.fetch_add(1, Ordering::Relaxed);
            pending.push(e.id);
        }
    }
}

async fn redis_redelivery(a: &Args, k: u64, lat: &mut Histogram<u64>) -> Result<(), BoxErr> {
    use redis::streams::{StreamAutoClaimReply, StreamReadReply};
    let key = "redeliver.0";
    redis_setup(a, key, k).await?;
    let mut con = redis_con(&a.url).await?;
    let mut done = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while done < k && Instant::now() < end {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("workers")
            .arg("w")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(&mut con)
            .await?;
        let Some(id) = reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next())
            .map(|e| e.id)
        else {
            continue;
        };
        // "Release": leave it pending, and take it again as the next delivery.
        let at = Instant::now();
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(key)
            .arg("workers")
            .arg("w")
            .arg(0)
            .arg("0-0")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut con)
            .await?;
        if claimed.claimed.first().map(|e| &e.id) == Some(&id) {
            let _ = lat.record((at.elapsed().as_micros() as u64).max(1));
            done += 1;
        }
        redis::cmd("XACK")
            .arg(key)
            .arg("workers")
            .arg(&id)
            .query_async::<()>(&mut con)
            .await?;
    }
    Ok(())
}

// --- the run -------------------------------------------------------------------------------

pub(crate) async fn run(a: Args) -> Result<(), BoxErr> {
    let n = if a.messages == 0 { 200_000 } else { a.messages };
    eprintln!("preloading {n} records ...");
    match a.system {
        System::Nats => nats_setup(&a, "QUEUE", "queue.0", n).await?,
        System::Redis => redis_setup(&a, "queue.0", n).await?,
    }
    // Connect every worker first; the clock starts when all are ready.
    let mut nats = Vec::new();
    let mut redis_cons = Vec::new();
    for _ in 0..a.consumers {
        match a.system {
            System::Nats => nats.push(nats_consumer("QUEUE", &a.url).await?),
            System::Redis => redis_cons.push(redis_con(&a.url).await?),
        }
    }
    let t0 = Instant::now();
    let r = Arc::new(Run {
        n,
        delivered: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        deadline: t0 + Duration::from_secs(a.duration_secs.max(1)),
    });
    let mut tasks = Vec::new();
    for (client, c) in nats {
        tasks.push(tokio::spawn(nats_worker(r.clone(), client, c)));
    }
    for (i, con) in redis_cons.into_iter().enumerate() {
        tasks.push(tokio::spawn(redis_worker(r.clone(), con, i)));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let acked = r.acked.load(Ordering::Relaxed);
    let mut lat = hist();
    if a.redeliveries > 0 {
        match a.system {
            System::Nats => nats_redelivery(&a, a.redeliveries, &mut lat).await?,
            System::Redis => redis_redelivery(&a, a.redeliveries, &mut lat).await?,
        }
    }
    let ms = |q: f64| lat.value_at_quantile(q) as f64 / 1000.0;
    let out = json!({
        "system": format!("{:?}", a.system).to_lowercase(), "workload": "share-group",
        "partitions": 1, "consumers": a.consumers, "message_size": a.message_size,
        "messages": n, "accepted": acked, "ack_failures": 0, "seconds": secs,
        "acked_per_s": acked as f64 / secs.max(1e-3),
        "redelivery_latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99),
            "max": lat.max() as f64 / 1000.0, "count": lat.len()},
    });
    println!("{out}");
    Ok(())
}
