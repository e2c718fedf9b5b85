//! grpc-bench: load for Strom's gRPC door, and the HTTP door on the same workload.
//!
//! - `produce`: records of `--record-size` bytes, `--records-per-request` per request, over
//!   `--concurrency` unary callers or ProduceStream streams (`--stream`, `--window` requests in
//!   flight each) sharing one HTTP/2 connection; acknowledged records/s, MB/s of values, and the
//!   request → answer latency.
//! - `http-produce`: the same records as JSON (`{"records":[{"value":"..."}]}`) POSTed over
//!   `--concurrency` HTTP/1.1 keep-alive connections.
//! - `latency`: a producer appends `--rate` records/s (one request per millisecond) whose values
//!   start with their scheduled send time; a gRPC Subscribe (or, with `--sse URL`, an SSE stream
//!   of the HTTP door) from latest measures receive − scheduled send for each (coordinated
//!   omission corrected: a late producer counts against the latency).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use strom_grpc::pb::{self, strom_client::StromClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(name = "grpc-bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// gRPC produce throughput (unary or streamed).
    Produce(ProduceArgs),
    /// HTTP door produce throughput on the same workload.
    HttpProduce(HttpArgs),
    /// Subscribe latency at a fixed rate (gRPC, or SSE with --sse).
    Latency(LatencyArgs),
}

#[derive(Args, Clone)]
struct Workload {
    /// Topic (created if missing, one partition).
    #[arg(long, default_value = "grpc-bench")]
    topic: String,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1000)]
    record_size: usize,
    /// Records per request.
    #[arg(long, default_value_t = 100)]
    records_per_request: usize,
    /// Concurrent callers (unary), streams, or HTTP connections.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds (not counted).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

#[derive(Args)]
struct ProduceArgs {
    /// The gRPC door.
    #[arg(long, default_value = "127.0.0.1:9095")]
    addr: String,
    #[command(flatten)]
    w: Workload,
    /// ProduceStream instead of unary Produce.
    #[arg(long)]
    stream: bool,
    /// Requests in flight per stream.
    #[arg(long, default_value_t = 8)]
    window: usize,
}

#[derive(Args)]
struct HttpArgs {
    /// The HTTP door (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    #[command(flatten)]
    w: Workload,
}

#[derive(Args)]
struct LatencyArgs {
    /// The gRPC door (the producer, and the subscriber without --sse).
    #[arg(long, default_value = "127.0.0.1:9095")]
    addr: String,
    /// Subscribe with an SSE stream of this HTTP door (host:port) instead.
    #[arg(long)]
    sse: Option<String>,
    /// Topic (created if missing, one partition).
    #[arg(long, default_value = "grpc-latency")]
    topic: String,
    /// Records per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1000)]
    record_size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds (not counted).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds")
}

async fn client(addr: &str) -> Result<StromClient<Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .initial_connection_window_size(Some(8 << 20))
        .initial_stream_window_size(Some(4 << 20))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(StromClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

async fn ensure_topic(c: &mut StromClient<Channel>, topic: &str) -> Result<()> {
    let req = pb::CreateTopicRequest {
        name: topic.to_string(),
        partitions: Some(1),
        configs: Default::default(),
    };
    match c.create_topic(req).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => bail!("CreateTopic: {s}"),
    }
}

fn request(w: &Workload) -> pb::ProduceRequest {
    let value = Bytes::from(vec![b'x'; w.record_size]);
    pb::ProduceRequest {
        topic: w.topic.clone(),
        records: (0..w.records_per_request)
            .map(|_| pb::Record {
                value: Some(value.clone()),
                ..Default::default()
            })
            .collect(),
        partition: None,
    }
}

/// What the measured phase counted.
struct Counted {
    records: AtomicU64,
    lat: Mutex<Histogram<u64>>,
}

impl Counted {
    fn new() -> Arc<Counted> {
        Arc::new(Counted {
            records: AtomicU64::new(0),
            lat: Mutex::new(hist()),
        })
    }
}

fn report(name: &str, w: &Workload, records: u64, lat: &Histogram<u64>) {
    let secs = w.seconds as f64;
    let rps = records as f64 / secs;
    println!(
        "{name}: records/s {rps:.0}  MB/s {:.1}  requests/s {:.0}  p50 {:.2} ms  p99 {:.2} ms  ({} x {} B per request, concurrency {})",
        rps * w.record_size as f64 / 1e6,
        rps / w.records_per_request as f64,
        lat.value_at_quantile(0.5) as f64 / 1000.0,
        lat.value_at_quantile(0.99) as f64 / 1000.0,
        w.records_per_request,
        w.record_size,
        w.concurrency
    );
}

async fn produce(a: ProduceArgs) -> Result<()> {
    let mut c = client(&a.addr).await?;
    ensure_topic(&mut c, &a.w.topic).await?;
    let counted = Counted::new();
    let start = Instant::now() + Duration::from_secs(a.w.warmup);
    let end = start + Duration::from_secs(a.w.seconds);
    let mut tasks = Vec::new();
    for _ in 0..a.w.concurrency.max(1) {
        let (mut c, req, counted) = (c.clone(), request(&a.w), counted.clone());
        let (stream, window) = (a.stream, a.window.max(1));
        tasks.push(tokio::spawn(async move {
            if stream {
                produce_stream(&mut c, req, window, start, end, &counted).await
            } else {
                produce_unary(&mut c, req, start, end, &counted).await
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let lat = counted.lat.lock().await;
    let name = if a.stream {
        "grpc ProduceStream"
    } else {
        "grpc Produce"
    };
    report(name, &a.w, counted.records.load(Ordering::Relaxed), &lat);
    Ok(())
}

async fn produce_unary(
    c: &mut StromClient<Channel>,
    req: pb::ProduceRequest,
    start: Instant,
    end: Instant,
    counted: &Counted,
) -> Result<()> {
    let n = req.records.len() as u64;
    let mut lat = hist();
    while Instant::now() < end {
        let t = Instant::now();
        c.produce(req.clone()).await.context("Produce")?;
        if t >= start {
            counted.records.fetch_add(n, Ordering::Relaxed);
            let _ = lat.record(t.elapsed().as_micros() as u64);
        }
    }
    counted.lat.lock().await.add(&lat)?;
    Ok(())
}

async fn produce_stream(
    c: &mut StromClient<Channel>,
    req: pb::ProduceRequest,
    window: usize,
    start: Instant,
    end: Instant,
    counted: &Counted,
) -> Result<()> {
    let n = req.records.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ProduceRequest>(window);
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let sent = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let (p, s) = (permits.clone(), sent.clone());
    let sender = tokio::spawn(async move {
        while Instant::now() < end {
            let Ok(permit) = p.clone().acquire_owned().await else {
                break;
            };
            permit.forget();
            s.lock().expect("not poisoned").push_back(Instant::now());
            if tx.send(req.clone()).await.is_err() {
                break;
            }
        }
    });
    let mut answers = c
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("ProduceStream")?
        .into_inner();
    let mut lat = hist();
    while let Some(_answer) = answers.message().await.context("ProduceStream answer")? {
        let t = sent.lock().expect("not poisoned").pop_front();
        permits.add_permits(1);
        if let Some(t) = t.filter(|t| *t >= start && *t < end) {
            counted.records.fetch_add(n, Ordering::Relaxed);
            let _ = lat.record(t.elapsed().as_micros() as u64);
        }
    }
    let _ = sender.await;
    counted.lat.lock().await.add(&lat)?;
    Ok(())
}

async fn http_produce(a: HttpArgs) -> Result<()> {
    let value = "x".repeat(a.w.record_size);
    let rec = format!("{{\"value\":\"{value}\"}}");
    let body = format!(
        "{{\"records\":[{}]}}",
        vec![rec.as_str(); a.w.records_per_request].join(",")
    );
    let create = format!("{{\"name\":\"{}\",\"partitions\":1}}", a.w.topic);
    let mut conn = tokio::net::TcpStream::connect(&a.http).await?;
    let (status, _) = http_post(&mut conn, &a.http, "/topics", &create).await?;
    if status != 201 && status != 409 {
        bail!("POST /topics answered {status}");
    }
    let path = format!("/topics/{}/records", a.w.topic);
    let counted = Counted::new();
    let start = Instant::now() + Duration::from_secs(a.w.warmup);
    let end = start + Duration::from_secs(a.w.seconds);
    let n = a.w.records_per_request as u64;
    let mut tasks = Vec::new();
    for _ in 0..a.w.concurrency.max(1) {
        let (host, path, body, counted) =
            (a.http.clone(), path.clone(), body.clone(), counted.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(&host).await?;
            conn.set_nodelay(true)?;
            let mut lat = hist();
            while Instant::now() < end {
                let t = Instant::now();
                let (status, _) = http_post(&mut conn, &host, &path, &body).await?;
                if status != 200 {
                    bail!("POST {path} answered {status}");
                }
                if t >= start {
                    counted.records.fetch_add(n, Ordering::Relaxed);
                    let _ = lat.record(t.elapsed().as_micros() as u64);
                }
            }
            counted.lat.lock().await.add(&lat)?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let lat = counted.lat.lock().await;
    report(
        "http POST records",
        &a.w,
        counted.records.load(Ordering::Relaxed),
        &lat,
    );
    Ok(())
}

/// One HTTP/1.1 keep-alive POST: the status and the body.
async fn http_post(
    conn: &mut tokio::net::TcpStream,
    host: &str,
    path: &str,
    body: &str,
) -> Result<(u16, Vec<u8>)> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16384];
    let header_end = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("the HTTP door closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no content-length")?;
    while buf.len() < header_end + len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("the HTTP door closed the connection mid-answer");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[header_end..header_end + len].to_vec()))
}

/// The scheduled send time (µs) a value starts with: ASCII digits before `|`.
fn sent_at(value: &[u8]) -> Option<u64> {
    let end = value.iter().position(|b| *b == b'|')?;
    std::str::from_utf8(&value[..end]).ok()?.parse().ok()
}

async fn latency(a: LatencyArgs) -> Result<()> {
    let mut c = client(&a.addr).await?;
    ensure_topic(&mut c, &a.topic).await?;
    let lat = Arc::new(Mutex::new(hist()));
    let received = Arc::new(AtomicU64::new(0));
    let measure_from = now_us() + a.warmup * 1_000_000;
    let measure_to = measure_from + a.seconds * 1_000_000;
    let subscriber = {
        let (lat, received, topic) = (lat.clone(), received.clone(), a.topic.clone());
        match a.sse.clone() {
            None => {
                let mut c = c.clone();
                let req = pb::SubscribeRequest {
                    topics: vec![topic],
                    from: "latest".into(),
                    group: None,
                    isolation: 0,
                };
                let mut stream = c.subscribe(req).await?.into_inner();
                tokio::spawn(async move {
                    while let Ok(Some(r)) = stream.message().await {
                        let now = now_us();
                        if let Some(t) = r.value.as_deref().and_then(sent_at) {
                            if t >= measure_from && t < measure_to {
                                received.fetch_add(1, Ordering::Relaxed);
                                let _ = lat.lock().await.record(now.saturating_sub(t).max(1));
                            }
                            if t >= measure_to {
                                break;
                            }
                        }
                    }
                    anyhow::Ok(())
                })
            }
            Some(http) => {
                let mut conn = tokio::net::TcpStream::connect(&http).await?;
                let get = format!(
                    "GET /topics/{topic}/events?from=latest HTTP/1.1\r\nHost: {http}\r\nAccept: text/event-stream\r\n\r\n"
                );
                conn.write_all(get.as_bytes()).await?;
                tokio::spawn(async move {
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = vec![0u8; 1 << 16];
                    let key = b"\"value\":\"";
                    loop {
                        let n = conn.read(&mut chunk).await?;
                        if n == 0 {
                            break;
                        }
                        let now = now_us();
                        buf.extend_from_slice(&chunk[..n]);
                        let mut done = 0;
                        while let Some(i) = buf[done..].windows(key.len()).position(|w| w == key) {
                            let at = done + i + key.len();
                            let Some(t) = buf
                                .get(at..)
                                .and_then(|v| v.iter().position(|b| *b == b'|').map(|_| v))
                                .and_then(sent_at)
                            else {
                                break;
                            };
                            if t >= measure_from && t < measure_to {
                                received.fetch_add(1, Ordering::Relaxed);
                                let _ = lat.lock().await.record(now.saturating_sub(t).max(1));
                            }
                            done = at;
                            if t >= measure_to {
                                return anyhow::Ok(());
                            }
                        }
                        buf.drain(..done);
                    }
                    anyhow::Ok(())
                })
            }
        }
    };
    // Let the subscription start before the first record.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_ms = (a.rate / 1000).max(1) as usize;
    let pad = a.record_size.saturating_sub(20);
    let started = Instant::now();
    let total_ms = (a.warmup + a.seconds) * 1000 + 200;
    let base = now_us();
    let mut sent = 0u64;
    for ms in 0..total_ms {
        let due = started + Duration::from_millis(ms);
        tokio::time::sleep_until(due.into()).await;
        // Each record carries the time it was due, not the time it went out.
        let t = base + ms * 1000;
        let value = Bytes::from(format!("{t}|{}", "x".repeat(pad)));
        let req = pb::ProduceRequest {
            topic: a.topic.clone(),
            records: (0..per_ms)
                .map(|_| pb::Record {
                    value: Some(value.clone()),
                    ..Default::default()
                })
                .collect(),
            partition: None,
        };
        c.produce(req).await.context("Produce")?;
        sent += per_ms as u64;
    }
    match tokio::time::timeout(Duration::from_secs(10), subscriber).await {
        Ok(r) => r??,
        Err(_) => eprintln!("the subscriber did not see the end in 10 s"),
    }
    let lat = lat.lock().await;
    let expected = a.seconds * 1000 * per_ms as u64;
    println!(
        "{} at {} records/s of {} B: received {} of {} measured (sent {sent} in all)  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        if a.sse.is_some() { "sse" } else { "grpc Subscribe" },
        per_ms * 1000,
        a.record_size,
        received.load(Ordering::Relaxed),
        expected,
        lat.value_at_quantile(0.5) as f64 / 1000.0,
        lat.value_at_quantile(0.99) as f64 / 1000.0,
        lat.value_at_quantile(0.999) as f64 / 1000.0,
        lat.max() as f64 / 1000.0,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Produce(a) => produce(a).await,
        Cmd::HttpProduce(a) => http_produce(a).await,
        Cmd::Latency(a) => latency(a).await,
    }
}
