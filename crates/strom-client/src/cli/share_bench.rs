//! `strom bench --share-group NAME`: a share group (KIP-932 queue) workload.
//!
//! 1. Preload: `--messages` records (default 200,000) of `--message-size` bytes into the
//!    topic (created with `--partitions`), in batches of `--batch`, 8 requests in flight.
//! 2. Throughput: `--consumers` members of the share group (each a
//!    [`crate::share::ShareConsumer`] with its own connections), each polling and accepting
//!    every record one by one (explicit acknowledgement, piggy-backed on the next ShareFetch).
//!    The clock starts once every member joined and stops when every record is accepted (the
//!    members' last acknowledgements confirmed at close) or after `--duration-secs`. The
//!    figure is records accepted (confirmed by the broker) per second.
//! 3. Redelivery latency: `--redeliveries` records into a topic of their own; one member
//!    takes one record at a time, RELEASEs it and polls until it comes back (delivery count
//!    2), then accepts it. The latency is from the release (the poll that carries it starts)
//!    to the redelivered record in hand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use serde_json::json;

use super::bench::BenchArgs;
use crate::records::{encode_uniform_batch, parse_compression};
use crate::share::{AckMode, AckType, ShareConfig, ShareConsumer};
use crate::{Client, Error, Result};

fn hist() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 100_000_000, 3)
        .unwrap_or_else(|_| hdrhistogram::Histogram::new(3).expect("hdr"))
}

/// Writes `n` records to every partition in turn, `inflight` produce requests pipelined.
async fn preload(a: &BenchArgs, c: &Client, topic: &str, partitions: i32, n: u64) -> Result<()> {
    let compression = parse_compression(&a.compression)?;
    let mut v = BytesMut::with_capacity(a.message_size);
    v.put_bytes(0x5a, a.message_size.max(1));
    let value = v.freeze();
    let version = c.version::<kafka_protocol::messages::ProduceRequest>()?;
    let mut pending = std::collections::VecDeque::new();
    let mut sent = 0u64;
    let mut p = 0;
    let mut buf = BytesMut::new();
    while sent < n || !pending.is_empty() {
        if sent < n && pending.len() < a.inflight.max(1) {
            let count = (a.batch as u64).min(n - sent) as usize;
            encode_uniform_batch(
                &mut buf,
                None,
                &value,
                count,
                crate::records::now_ms(),
                compression,
            )?;
            let batch = buf.split().freeze();
            let req = Client::produce_request(topic, -1, 30_000, vec![(p, batch.clone())]);
            pending.push_back(
                c.bootstrap()
                    .start_sharing(&req, version, vec![batch])
                    .await?,
            );
            sent += count as u64;
            p = (p + 1) % partitions.max(1);
            continue;
        }
        if let Some(rx) = pending.pop_front() {
            let frame = rx.await.map_err(|_| Error::Closed)?;
            crate::client::check_produce(&crate::Connection::decode::<
                kafka_protocol::messages::ProduceRequest,
            >(frame, version)?)?;
        }
    }
    Ok(())
}

async fn setup(a: &BenchArgs, c: &Client, topic: &str, group: &str, n: u64) -> Result<()> {
    if c.topic(topic).await.is_err() {
        c.create_topic(topic, a.partitions, &[]).await?;
    }
    c.alter_configs(
        32,
        group,
        &[("share.auto.offset.reset".into(), Some("earliest".into()))],
    )
    .await?;
    preload(a, c, topic, a.partitions, n).await
}

async fn member(
    a: &BenchArgs,
    group: &str,
    topic: &str,
    id: usize,
    max_records: i32,
) -> Result<ShareConsumer> {
    let client =
        Arc::new(Client::connect_with_id(&a.conn.bootstrap, &format!("strom-bench-s{id}")).await?);
    let mut cfg = ShareConfig::new(group, vec![topic.to_string()]);
    cfg.mode = AckMode::Explicit;
    cfg.max_records = max_records;
    cfg.max_wait_ms = 100;
    cfg.client_id = format!("strom-bench-s{id}");
    ShareConsumer::join(client, cfg).await
}

pub(crate) async fn run(a: BenchArgs, group: String) -> Result<()> {
    if a.consumers == 0 {
        return Err(Error::Invalid(
            "--share-group needs --consumers >= 1".into(),
        ));
    }
    let n = if a.messages == 0 { 200_000 } else { a.messages };
    let client = Client::connect_with_id(&a.conn.bootstrap, "strom-bench").await?;
    let topic = a.topic.clone();
    eprintln!("preloading {n} records into {topic} ...");
    setup(&a, &client, &topic, &group, n).await?;

    // Throughput.
    let mut members = Vec::new();
    for i in 0..a.consumers {
        members.push(member(&a, &group, &topic, i, 500).await?);
    }
    eprintln!("{} members joined; accepting ...", a.consumers);
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.duration_secs.max(1));
    let mut tasks = Vec::new();
    for mut m in members {
        let (delivered, stop) = (delivered.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed)
                && delivered.load(Ordering::Relaxed) < n
                && Instant::now() < deadline
            {
                let records = m.poll().await?;
                delivered.fetch_add(records.len() as u64, Ordering::Relaxed);
                for r in &records {
                    m.ack(r, AckType::Accept)?;
                }
            }
            stop.store(true, Ordering::Relaxed);
            m.close().await
        }));
    }
    let mut accepted = 0u64;
    let mut failed = 0u64;
    for t in tasks {
        let s = t
            .await
            .map_err(|e| Error::Invalid(format!("share consumer task: {e}")))??;
        accepted += s.accepted;
        failed += s.failed;
    }
    let secs = t0.elapsed().as_secs_f64();

    // Redelivery latency.
    let k = a.redeliveries;
    let mut lat = hist();
    if k > 0 {
        let rtopic = format!("{topic}-redeliver");
        let rgroup = format!("{group}-redeliver");
        setup(&a, &client, &rtopic, &rgroup, k).await?;
        let mut m = member(&a, &rgroup, &rtopic, a.consumers, 1).await?;
        // Each record: released at its first delivery, timed to its next, then accepted.
        let mut released: std::collections::HashMap<i64, Instant> = Default::default();
        let mut done = 0u64;
        let end = Instant::now() + Duration::from_secs(60);
        while done < k && Instant::now() < end {
            let records = m.poll().await?;
            for r in &records {
                if let Some(at) = released.remove(&r.offset) {
                    let _ = lat.record((at.elapsed().as_micros() as u64).max(1));
                    m.ack(r, AckType::Accept)?;
                    done += 1;
                } else if r.delivery_count == 1 {
                    m.ack(r, AckType::Release)?;
                    released.insert(r.offset, Instant::now());
                } else {
                    m.ack(r, AckType::Accept)?;
                }
            }
        }
        m.close().await?;
    }
    let ms = |q: f64| lat.value_at_quantile(q) as f64 / 1000.0;
    let out = json!({
        "system": "strom", "workload": "share-group", "topic": topic, "group": group,
        "partitions": a.partitions, "consumers": a.consumers, "message_size": a.message_size,
        "messages": n, "accepted": accepted, "ack_failures": failed, "seconds": secs,
        "acked_per_s": accepted as f64 / secs.max(1e-3),
        "redelivery_latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99),
            "max": lat.max() as f64 / 1000.0, "count": lat.len()},
    });
    if a.conn.json {
        println!("{out}");
    } else {
        println!(
            "share group {group}: {} consumer(s), {accepted} of {n} records accepted in {secs:.2} s: {:.0} acked/s ({failed} refused)\n\
             redelivery latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3} ({} records)",
            a.consumers,
            out["acked_per_s"].as_f64().unwrap_or(0.0),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            lat.max() as f64 / 1000.0,
            lat.len()
        );
    }
    Ok(())
}
