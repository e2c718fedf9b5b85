//! `fanout`: the fan-out load tool of issue 15. Opens N WebSocket (`/ws`) or SSE
//! (`/topics/{t}/events`) subscribers of a Strom HTTP door from several 127.0.0.x source
//! addresses, spread over one or more topics, all from `latest`; then produces timestamped
//! messages through the HTTP door at a fixed interval (one record per topic per tick) and
//! reports: connect time, broker RSS per connection (with `--broker-pid`), broker CPU per
//! delivery, latency from the produce request to each subscriber's receipt (p50/p99/max over
//! every subscriber and message), delivery completeness, HTTP produce latency and `/healthz`
//! latency on a new connection while it runs.
//!
//!     cargo build --release -p strom-fanout
//!     target/release/fanout --http 127.0.0.1:8080 --subscribers 10000 --broker-pid PID

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Fan-out load: N WebSocket or SSE subscribers, timestamped messages")]
struct Args {
    /// The HTTP door.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Subscribers in all.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Topics (rooms); subscribers are spread over them round-robin.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Topic names are PREFIX-0, PREFIX-1, ... (created if missing, 1 partition).
    #[arg(long, default_value = "fanout")]
    topic_prefix: String,
    /// ws or sse.
    #[arg(long, default_value = "ws")]
    mode: String,
    /// Messages per topic.
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Milliseconds between messages.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Bytes of each message's value (a 20-digit timestamp, then padding).
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+N) (ephemeral ports per address are limited).
    #[arg(long, default_value_t = 12)]
    source_ips: u8,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// The broker's pid, for its RSS and CPU (/proc).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Seconds to wait for the last deliveries after the last message.
    #[arg(long, default_value_t = 10)]
    drain_s: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in seconds.
fn cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))?;
    let s = sock.connect(to).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A keep-alive HTTP/1.1 connection for small JSON requests.
struct Http {
    io: BufReader<TcpStream>,
    host: String,
}

impl Http {
    async fn open(to: SocketAddr) -> Result<Http> {
        let s = TcpStream::connect(to).await?;
        s.set_nodelay(true)?;
        Ok(Http {
            io: BufReader::new(s),
            host: to.to_string(),
        })
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let s = self.io.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut line = String::new();
        self.io.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            if self.io.read_line(&mut line).await? == 0 {
                bail!("connection closed in the response head");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; len];
        self.io.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The timestamp at the start of a record's value in a pushed message (WebSocket message or
/// SSE event data: both carry `"value":"<20 digits>..."`).
fn stamp(text: &str) -> Option<u64> {
    let i = text.find("\"value\":\"")? + 9;
    text.get(i..i + 20)?.parse().ok()
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A subscriber, connected and subscribed.
enum Sub {
    Ws(Box<Ws>),
    Sse(BufReader<TcpStream>),
}

async fn open_ws(src: Ipv4Addr, to: SocketAddr, topic: &str) -> Result<Sub> {
    let stream = connect_from(src, to).await?;
    // Small client buffers too: the client must not be the limit of the connection count.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(format!("ws://{to}/ws"), stream, Some(config))
            .await?;
    let sub = format!(r#"{{"op":"subscribe","topics":["{topic}"],"from":"latest"}}"#);
    ws.send(Message::Text(sub.into())).await?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("\"subscribed\"") => Ok(Sub::Ws(Box::new(ws))),
        other => bail!("subscribe answered {other:?}"),
    }
}

async fn open_sse(src: Ipv4Addr, to: SocketAddr, topic: &str) -> Result<Sub> {
    let mut stream = connect_from(src, to).await?;
    let req = format!(
        "GET /topics/{topic}/events?from=latest HTTP/1.1\r\nHost: {to}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut io = BufReader::with_capacity(4096, stream);
    let mut line = String::new();
    io.read_line(&mut line).await?;
    if !line.contains(" 200 ") {
        bail!("SSE answered {line:?}");
    }
    Ok(Sub::Sse(io))
}

/// Reads until `want` records arrived (or the stream ends); each record's latency in us.
async fn receive(sub: Sub, want: usize, deliveries: Arc<AtomicU64>) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(want);
    let seen = |text: &str, out: &mut Vec<u64>| {
        if let Some(ts) = stamp(text) {
            out.push(now_ns().saturating_sub(ts) / 1000);
            deliveries.fetch_add(1, Ordering::Relaxed);
        }
    };
    match sub {
        Sub::Ws(mut ws) => {
            while out.len() < want {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => seen(&t, &mut out),
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            let _ = SinkExt::close(&mut *ws).await;
        }
        Sub::Sse(mut io) => {
            let mut line = String::new();
            while out.len() < want {
                line.clear();
                if io.read_line(&mut line).await? == 0 {
                    break;
                }
                if line.starts_with("data:") {
                    seen(&line, &mut out);
                }
            }
        }
    }
    Ok(out)
}

fn quantiles_ms(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "-".into();
    }
    format!(
        "p50 {:.2} / p99 {:.2} / max {:.2} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    if a.mode != "ws" && a.mode != "sse" {
        bail!("--mode is ws or sse");
    }
    if a.value_bytes < 20 || a.topics == 0 || a.source_ips == 0 {
        bail!("--value-bytes >= 20, --topics >= 1, --source-ips >= 1");
    }
    raise_nofile();
    let topics: Vec<String> = (0..a.topics)
        .map(|i| format!("{}-{i}", a.topic_prefix))
        .collect();
    let mut http = Http::open(a.http).await?;
    for t in &topics {
        let (status, body) = http
            .request(
                "POST",
                "/topics",
                &format!(r#"{{"name":"{t}","partitions":1}}"#),
            )
            .await?;
        if status != 201 && status != 409 {
            bail!("creating {t}: {status} {body}");
        }
    }
    let rss0 = a.broker_pid.and_then(rss_kb);

    // Connect every subscriber.
    let ready = Arc::new(AtomicU64::new(0));
    let connect_failed = Arc::new(AtomicU64::new(0));
    let deliveries = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(a.connect_concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(a.subscribers);
    for i in 0..a.subscribers {
        let src = Ipv4Addr::new(127, 0, 0, 2 + (i % a.source_ips as usize) as u8);
        let topic = topics[i % topics.len()].clone();
        let (ready, deliveries, gate) = (ready.clone(), deliveries.clone(), gate.clone());
        let failed = connect_failed.clone();
        let (to, want, sse) = (a.http, a.messages, a.mode == "sse");
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let sub = if sse {
                open_sse(src, to, &topic).await
            } else {
                open_ws(src, to, &topic).await
            };
            drop(permit);
            let sub = match sub {
                Ok(sub) => sub,
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            ready.fetch_add(1, Ordering::Relaxed);
            receive(sub, want, deliveries).await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ((ready.load(Ordering::Relaxed) + connect_failed.load(Ordering::Relaxed)) as usize)
        < a.subscribers
    {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = ready.load(Ordering::Relaxed) as usize;
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = a.broker_pid.and_then(rss_kb);
    println!(
        "connected {connected}/{} {} subscribers over {} topic(s) in {connect_s:.2} s ({:.0}/s)",
        a.subscribers,
        a.mode,
        a.topics,
        connected as f64 / connect_s.max(1e-9)
    );
    let rss_per = match (rss0, rss1) {
        (Some(r0), Some(r1)) if connected > 0 => {
            let per = (r1.saturating_sub(r0)) as f64 * 1024.0 / connected as f64;
            println!(
                "broker RSS {r0} -> {r1} KiB: {:.1} KiB per connection",
                per / 1024.0
            );
            Some(per)
        }
        _ => None,
    };

    // Produce: one record per topic per tick, timestamped at send.
    let cpu0 = a.broker_pid.and_then(cpu_s);
    let t0 = Instant::now();
    let mut produce_h = Histogram::<u64>::new(3)?;
    let mut health_h = Histogram::<u64>::new(3)?;
    let pad = "x".repeat(a.value_bytes - 20);
    for m in 0..a.messages {
        let tick = t0 + Duration::from_millis(a.interval_ms * m as u64);
        tokio::time::sleep_until(tick.into()).await;
        for t in &topics {
            let body = format!(r#"{{"records":[{{"value":"{:020}{pad}"}}]}}"#, now_ns());
            let sent = Instant::now();
            let (status, text) = http
                .request("POST", &format!("/topics/{t}/records"), &body)
                .await?;
            if status != 200 {
                bail!("produce to {t}: {status} {text}");
            }
            produce_h.record(sent.elapsed().as_micros() as u64)?;
        }
        // /healthz on a new connection: does a newcomer get in while the crowd is served?
        let probe = Instant::now();
        let ok = match Http::open(a.http).await {
            Ok(mut h) => matches!(h.request("GET", "/healthz", "").await, Ok((200, _))),
            Err(_) => false,
        };
        if ok {
            health_h.record(probe.elapsed().as_micros() as u64)?;
        }
    }
    let want = (connected * a.messages) as u64;
    let drain = Instant::now() + Duration::from_secs(a.drain_s);
    while deliveries.load(Ordering::Relaxed) < want && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu1 = a.broker_pid.and_then(cpu_s);
    let delivered = deliveries.load(Ordering::Relaxed);
    let mut lat = Histogram::<u64>::new(3)?;
    let (mut failed, mut first_error) = (0usize, None);
    for t in tasks {
        if !t.is_finished() {
            t.abort();
            continue;
        }
        match t.await {
            Ok(Ok(seen)) => {
                for l in seen {
                    lat.record(l.max(1))?;
                }
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(_) => failed += 1,
        }
    }
    if failed > 0 {
        println!("{failed} subscribers failed; first error: {first_error:?}");
    }
    println!(
        "delivered {delivered}/{want} ({:.3}%)",
        100.0 * delivered as f64 / want.max(1) as f64
    );
    println!("broadcast latency: {}", quantiles_ms(&lat));
    println!("HTTP produce: {}", quantiles_ms(&produce_h));
    println!("/healthz on a new connection: {}", quantiles_ms(&health_h));
    let cpu_per = match (cpu0, cpu1) {
        (Some(c0), Some(c1)) if delivered > 0 => {
            let us = (c1 - c0) * 1e6 / delivered as f64;
            println!(
                "broker CPU {:.2} s for {delivered} deliveries: {us:.1} us per delivery",
                c1 - c0
            );
            Some(us)
        }
        _ => None,
    };
    let q = |h: &Histogram<u64>, x: f64| {
        (!h.is_empty()).then(|| h.value_at_quantile(x) as f64 / 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "mode": a.mode, "subscribers": a.subscribers, "connected": connected,
            "topics": a.topics, "messages": a.messages, "interval_ms": a.interval_ms,
            "connect_s": connect_s, "rss_per_conn_bytes": rss_per,
            "delivered": delivered, "expected": want,
            "p50_ms": q(&lat, 0.5), "p99_ms": q(&lat, 0.99),
            "max_ms": (!lat.is_empty()).then(|| lat.max() as f64 / 1000.0),
            "produce_p99_ms": q(&produce_h, 0.99), "healthz_p99_ms": q(&health_h, 0.99),
            "healthz_ok": health_h.len(), "cpu_us_per_delivery": cpu_per, "failed": failed,
        })
    );
    Ok(())
}
