//! `strom queue consume` (a share-group member) and `strom group describe` of share groups.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::commands::{print_table, text};
use super::Conn;
use crate::share::{AckMode, AckType, ShareConfig, ShareConsumer};
use crate::{Client, Error, Result};

/// The GROUP config resource type (KIP-848 / KIP-932 group configs).
const GROUP_RESOURCE: i8 = 32;
const DLQ_TOPIC: &str = "errors.deadletterqueue.topic.name";

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Consume a topic as a member of a share group (KIP-932): each record goes to one
    /// member of the group; every record printed is acknowledged (accepted by default).
    Consume(QueueConsumeArgs),
}

#[derive(Args, Debug)]
pub struct QueueConsumeArgs {
    /// The share group.
    pub group: String,
    /// The topic (repeat the flag --topic for more).
    pub topic: String,
    /// More topics.
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
    /// Stop after N records.
    #[arg(long, short = 'n')]
    pub max_messages: Option<u64>,
    /// How each record is acknowledged: accept, release (delivered again, to this or
    /// another member) or reject (archived, or sent to the group's dead-letter topic).
    #[arg(long, default_value = "accept")]
    pub ack: String,
    /// Set the group's `share.auto.offset.reset` to `earliest` first (a group config: it
    /// applies to share-partitions the group has not started yet).
    #[arg(long)]
    pub from_beginning: bool,
    /// plain or json (json adds the delivery count).
    #[arg(long, default_value = "plain")]
    pub format: String,
    /// Records per ShareFetch at most.
    #[arg(long, default_value_t = 500)]
    pub max_records: i32,
    /// Exit after this many ms without records (default: wait forever, or 10 s with
    /// --max-messages).
    #[arg(long)]
    pub idle_exit_ms: Option<u64>,
}

pub(crate) async fn queue(cmd: QueueCmd) -> Result<()> {
    match cmd {
        QueueCmd::Consume(a) => consume(a).await,
    }
}

async fn consume(a: QueueConsumeArgs) -> Result<()> {
    let json_fmt = match a.format.as_str() {
        "plain" => false,
        "json" => true,
        o => return Err(Error::Invalid(format!("unknown format '{o}' (plain|json)"))),
    };
    let ack = AckType::parse(&a.ack)?;
    if a.max_records <= 0 {
        return Err(Error::Invalid("--max-records must be > 0".into()));
    }
    let c = Arc::new(Client::connect_with_id(&a.conn.bootstrap, "strom-queue").await?);
    let mut topics = vec![a.topic.clone()];
    topics.extend(a.topics.iter().cloned());
    for t in &topics {
        c.topic(t).await?;
    }
    if a.from_beginning {
        c.alter_configs(
            GROUP_RESOURCE,
            &a.group,
            &[("share.auto.offset.reset".into(), Some("earliest".into()))],
        )
        .await?;
    }
    let mut config = ShareConfig::new(&a.group, topics);
    config.mode = AckMode::Explicit;
    config.client_id = "strom-queue".into();
    config.max_records = a.max_records;
    let mut member = ShareConsumer::join(c.clone(), config).await?;
    let idle = a.idle_exit_ms.or(a.max_messages.map(|_| 10_000));
    let mut last = Instant::now();
    let mut seen = 0u64;
    let result: Result<()> = async {
        loop {
            if let Some(n) = a.max_messages {
                member.set_max_records(a.max_records.min(n.saturating_sub(seen).min(i32::MAX as u64) as i32));
            }
            let records = member.poll().await?;
            let mut out = std::io::stdout().lock();
            for f in member.take_ack_failures() {
                eprintln!(
                    "warning: {}/{}: {} acknowledgement(s) refused: {} {}",
                    f.topic,
                    f.partition,
                    f.offsets,
                    crate::error_name(f.code),
                    f.message
                );
            }
            if !records.is_empty() {
                last = Instant::now();
            }
            for r in records {
                // Past --max-messages: give the rest back at once.
                if a.max_messages.is_some_and(|n| seen >= n) {
                    member.ack(&r, AckType::Release)?;
                    continue;
                }
                if json_fmt {
                    let hs: serde_json::Map<String, Value> = r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), text(v)))
                        .collect();
                    let line = json!({"topic": &*r.topic, "partition": r.partition, "offset": r.offset,
                        "delivery_count": r.delivery_count, "timestamp": r.timestamp,
                        "key": text(&r.key), "headers": hs, "value": text(&r.value)});
                    writeln!(out, "{line}")?;
                } else {
                    out.write_all(r.value.as_deref().unwrap_or_default())?;
                    out.write_all(b"\n")?;
                }
                member.ack(&r, ack)?;
                seen += 1;
            }
            out.flush()?;
            drop(out);
            if a.max_messages.is_some_and(|n| seen >= n)
                || idle.is_some_and(|ms| last.elapsed() >= Duration::from_millis(ms))
            {
                return Ok(());
            }
        }
    }
    .await;
    let closed = member.close().await;
    result?;
    let stats = closed?;
    eprintln!(
        "{seen} record(s): {} accepted, {} released, {} rejected, {} refused",
        stats.accepted, stats.released, stats.rejected, stats.failed
    );
    Ok(())
}

/// `strom group describe` of a share group; `false` if `group` is not one.
pub(crate) async fn describe_share_group(
    c: &Client,
    conn: &Conn,
    http: Option<&str>,
    group: &str,
) -> Result<bool> {
    let Some(d) = c.describe_share_group(group).await? else {
        return Ok(false);
    };
    let offsets = c.share_group_offsets(group).await?;
    // The broker's own counts (in flight, acquired, redeliveries, ...) are on its HTTP door.
    let stats = match http {
        Some(addr) => Some(http_get_json(addr, &format!("/queues/{}", encode_path(group))).await?),
        None => None,
    };
    let stat = |topic: &str, partition: i32, key: &str| -> Value {
        stats
            .as_ref()
            .and_then(|s| s["partitions"].as_array())
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["topic"] == topic && p["partition"] == partition)
            })
            .map_or(Value::Null, |p| p[key].clone())
    };
    let mut parts = Vec::new();
    for (t, p, start) in &offsets {
        let end = c.list_offset(t, *p, -1).await?;
        // Records the group has not finished: the broker's count when it gives one, else
        // everything from the start offset to the end of the log.
        let lag = match stat(t, *p, "lag").as_i64() {
            Some(l) => l,
            None if *start >= 0 => (end - start).max(0),
            None => end - c.list_offset(t, *p, -2).await?,
        };
        parts.push(json!({"topic": t, "partition": p, "start_offset": start, "end_offset": end, "lag": lag,
            "in_flight": stat(t, *p, "in_flight"), "acquired": stat(t, *p, "acquired"),
            "available": stat(t, *p, "available"), "redeliveries": stat(t, *p, "redeliveries"),
            "dead_lettered": stat(t, *p, "dead_lettered"), "lock_expiries": stat(t, *p, "lock_expiries")}));
    }
    let configs = c.describe_configs(GROUP_RESOURCE, group).await?;
    let dlq_topic = configs
        .iter()
        .find(|(k, v, _)| k == DLQ_TOPIC && v.as_deref().is_some_and(|v| !v.is_empty()))
        .and_then(|(_, v, _)| v.clone());
    let dlq = match &dlq_topic {
        None => Value::Null,
        Some(t) => match c.topic(t).await {
            Ok(info) => {
                let mut n = 0;
                for p in &info.partitions {
                    n += c.list_offset(t, p.partition, -1).await?
                        - c.list_offset(t, p.partition, -2).await?;
                }
                json!({"topic": t, "records": n})
            }
            // Created with its first dead letter.
            Err(_) => json!({"topic": t, "records": 0}),
        },
    };
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            let a: serde_json::Map<String, Value> = m
                .assignment
                .iter()
                .map(|(t, ps)| (t.clone(), json!(ps)))
                .collect();
            json!({"member_id": m.member_id, "member_epoch": m.member_epoch, "client_id": m.client_id,
                "host": m.client_host, "assignment": a})
        })
        .collect();
    let cfg: serde_json::Map<String, Value> = configs
        .iter()
        .map(|(k, v, _)| (k.clone(), json!(v)))
        .collect();
    if conn.json {
        println!(
            "{}",
            json!({"group": group, "type": "share", "state": d.state, "group_epoch": d.group_epoch,
                "members": members, "partitions": parts, "dead_letter": dlq, "configs": cfg})
        );
        return Ok(true);
    }
    println!(
        "group {group}: type share, state {}, epoch {}, {} member(s)",
        d.state,
        d.group_epoch,
        d.members.len()
    );
    if !d.members.is_empty() {
        let ms: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                let a: Vec<String> = m
                    .assignment
                    .iter()
                    .map(|(t, ps)| format!("{t}{ps:?}"))
                    .collect();
                vec![
                    m.member_id.clone(),
                    m.member_epoch.to_string(),
                    m.client_id.clone(),
                    m.client_host.clone(),
                    a.join(" "),
                ]
            })
            .collect();
        print_table(&["MEMBER", "EPOCH", "CLIENT-ID", "HOST", "ASSIGNMENT"], &ms);
    }
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        v => v.to_string(),
    };
    let rows: Vec<Vec<String>> = parts
        .iter()
        .map(|p| {
            [
                "topic",
                "partition",
                "start_offset",
                "end_offset",
                "lag",
                "in_flight",
                "acquired",
                "available",
                "redeliveries",
                "dead_lettered",
            ]
            .iter()
            .map(|k| match &p[*k] {
                Value::String(s) => s.clone(),
                v => cell(v),
            })
            .collect()
        })
        .collect();
    print_table(
        &[
            "TOPIC",
            "PARTITION",
            "START-OFFSET",
            "END",
            "LAG",
            "IN-FLIGHT",
            "ACQUIRED",
            "AVAILABLE",
            "REDELIVERIES",
            "DEAD-LETTERED",
        ],
        &rows,
    );
    if let Some(t) = &dlq_topic {
        println!(
            "dead-letter topic {t}: {} record(s)",
            dlq["records"].as_i64().unwrap_or(0)
        );
    }
    if stats.is_none() {
        println!("(in-flight counts: give --http HOST:PORT of the broker's HTTP door)");
    }
    Ok(true)
}

/// Percent-encodes a path segment.
fn encode_path(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Largest HTTP answer read (a describe is small).
const HTTP_ANSWER_BYTES_MAX: u64 = 16 << 20;

/// A GET over plain HTTP/1.1 (`Connection: close`), its JSON body; 4xx/5xx are errors.
async fn http_get_json(addr: &str, path: &str) -> Result<Value> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Connect {
                addr: addr.to_string(),
                source,
            })?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.take(HTTP_ANSWER_BYTES_MAX).read_to_end(&mut buf).await?;
        Ok::<_, Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| Error::Timeout)??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Error::Protocol(format!("HTTP answer from {addr} without a head")))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut body = buf[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::Protocol(format!("HTTP {path}: {status}, not JSON: {e}")))?;
    if !(200..300).contains(&status) {
        return Err(Error::Invalid(format!("HTTP {path}: {status} {v}")));
    }
    Ok(v)
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| Error::Protocol("bad chunked body".into()))?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .map_err(|_| Error::Protocol("bad chunk size".into()))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = b
            .get(..size)
            .ok_or_else(|| Error::Protocol("short chunk".into()))?;
        out.extend_from_slice(chunk);
        b = b.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_and_paths() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"5\r\nab").is_err());
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
    }
}
