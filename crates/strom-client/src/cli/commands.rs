//! topic / produce / consume / group.

use std::io::{BufRead, Write};

use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;

use super::Conn;
use crate::partitioner::partition_for_key;
use crate::records::{decode_records, encode_batch, parse_compression, ProduceRecord};
use crate::{Client, Error, Result};

#[derive(Subcommand, Debug)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// Replicas per partition (cluster mode) [default: the cluster's
        /// --default-replication-factor].
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// key=value, repeatable.
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Describe a topic: partitions, leaders, offsets and configs.
    Describe { name: String },
    /// Set (key=value) or remove (key=) topic configs.
    Alter {
        name: String,
        #[arg(long = "config", short = 'c', required = true)]
        configs: Vec<String>,
    },
    /// Delete a topic.
    Delete { name: String },
    /// Delete the records of a partition below an offset (Kafka's DeleteRecords): the log
    /// start offset moves there, durably.
    DeleteRecords {
        name: String,
        #[arg(long)]
        partition: i32,
        /// First offset kept; -1 deletes every record.
        #[arg(long, allow_hyphen_values = true)]
        before: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// List groups (consumer and share groups, with their type).
    List,
    /// Members, committed offsets and lag of a group; for a share group its members, and per
    /// partition the start offset, lag, in-flight and delivery counts, and the dead-letter
    /// topic's size.
    Describe {
        group: String,
        /// The broker's HTTP door HOST:PORT, for a share group's in-flight and delivery
        /// counts (GET /queues/GROUP).
        #[arg(long, env = "STROM_HTTP")]
        http: Option<String>,
    },
    /// Set a group's committed offsets for a topic (the group must have no members).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, conflicts_with_all = ["to_latest", "to_offset"])]
        to_earliest: bool,
        #[arg(long, conflicts_with = "to_offset")]
        to_latest: bool,
        #[arg(long)]
        to_offset: Option<i64>,
    },
    /// Delete a group (must have no members).
    Delete { group: String },
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    #[command(flatten)]
    pub conn: Conn,
    /// Read records from this file instead of stdin.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Split each line into key and value at the first occurrence of this string.
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Header k=v added to every record, repeatable.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Fixed partition (default: murmur2 of the key, round robin without key).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// 0, 1 or all (-1).
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    #[command(flatten)]
    pub conn: Conn,
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    pub from_beginning: bool,
    /// Start offset (every partition).
    #[arg(long)]
    pub offset: Option<i64>,
    /// Start at the first record with timestamp >= MS.
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// Only these partitions.
    #[arg(long, short = 'p')]
    pub partition: Vec<i32>,
    /// Stop after N records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// plain or json.
    #[arg(long, default_value = "plain")]
    pub format: String,
    /// Exit after this many ms without new records (default: wait forever, or 10 s with --count).
    #[arg(long)]
    pub idle_exit_ms: Option<u64>,
    /// Consume as a member of this consumer group: partitions are shared with the group's other
    /// members (any Kafka client), start at the group's committed offsets (else as
    /// --from-beginning says), positions are committed every second and at exit.
    #[arg(long, conflicts_with = "partition")]
    pub group: Option<String>,
}

pub(crate) fn parse_kv(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::Invalid(format!("expected key=value, got '{s}'")))?;
    Ok((k.to_string(), v.to_string()))
}

pub(crate) fn parse_acks(s: &str) -> Result<i16> {
    match s {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        o => Err(Error::Invalid(format!(
            "acks must be 0, 1 or all, got '{o}'"
        ))),
    }
}

pub(crate) fn print_table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<1$}", c, w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub(crate) async fn topic(conn: &Conn, cmd: TopicCmd) -> Result<()> {
    let c = Client::connect(&conn.bootstrap).await?;
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let cfg = configs
                .iter()
                .map(|s| parse_kv(s))
                .collect::<Result<Vec<_>>>()?;
            c.create_topic_replicated(&name, partitions, replication_factor.unwrap_or(-1), &cfg)
                .await?;
            if conn.json {
                println!(
                    "{}",
                    json!({"topic": name, "partitions": partitions, "created": true})
                );
            } else {
                println!("created topic {name} with {partitions} partition(s)");
            }
        }
        TopicCmd::List => {
            let ts = c.metadata(None).await?;
            if conn.json {
                let v: Vec<_> = ts
                    .iter()
                    .map(|t| json!({"topic": t.name, "partitions": t.partitions.len(), "internal": t.internal}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                let rows: Vec<Vec<String>> = ts
                    .iter()
                    .map(|t| vec![t.name.clone(), t.partitions.len().to_string()])
                    .collect();
                print_table(&["NAME", "PARTITIONS"], &rows);
            }
        }
        TopicCmd::Describe { name } => {
            let t = c.topic(&name).await?;
            let mut parts = Vec::new();
            for p in &t.partitions {
                let start = c.list_offset(&name, p.partition, -2).await?;
                let end = c.list_offset(&name, p.partition, -1).await?;
                parts.push((p.clone(), start, end));
            }
            let configs = c.describe_topic_configs(&name).await.unwrap_or_default();
            // A broker without DescribeLogDirs: no sizes shown.
            let dirs = c.describe_log_dirs(&name).await.unwrap_or_default();
            let size_of = |partition: i32| {
                dirs.iter()
                    .find_map(|d| d.partitions.iter().find(|(p, _)| *p == partition))
                    .map(|&(_, s)| s)
            };
            if conn.json {
                let ps: Vec<_> = parts
                    .iter()
                    .map(|(p, s, e)| {
                        json!({"partition": p.partition, "leader": p.leader, "replicas": p.replicas,
                               "log_start_offset": s, "high_watermark": e,
                               "size_bytes": size_of(p.partition)})
                    })
                    .collect();
                let ds: Vec<_> = dirs
                    .iter()
                    .map(|d| {
                        json!({"path": d.path, "total_bytes": d.total_bytes,
                               "usable_bytes": d.usable_bytes})
                    })
                    .collect();
                let cs: serde_json::Map<String, serde_json::Value> = configs
                    .iter()
                    .map(|(k, v, _)| (k.clone(), json!(v)))
                    .collect();
                println!(
                    "{}",
                    json!({"topic": name, "partitions": ps, "log_dirs": ds, "configs": cs})
                );
            } else {
                println!("topic {name}, {} partition(s)", t.partitions.len());
                let rows: Vec<Vec<String>> = parts
                    .iter()
                    .map(|(p, s, e)| {
                        vec![
                            p.partition.to_string(),
                            p.leader.to_string(),
                            format!("{:?}", p.replicas),
                            s.to_string(),
                            e.to_string(),
                            size_of(p.partition).map_or("-".into(), |s| s.to_string()),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "PARTITION",
                        "LEADER",
                        "REPLICAS",
                        "LOG-START",
                        "HIGH-WATERMARK",
                        "SIZE-BYTES",
                    ],
                    &rows,
                );
                for d in &dirs {
                    println!(
                        "log dir {}: {} bytes total, {} usable",
                        d.path, d.total_bytes, d.usable_bytes
                    );
                }
                if !configs.is_empty() {
                    println!();
                    let rows: Vec<Vec<String>> = configs
                        .iter()
                        .map(|(k, v, _)| vec![k.clone(), v.clone().unwrap_or_else(|| "-".into())])
                        .collect();
                    print_table(&["CONFIG", "VALUE"], &rows);
                }
            }
        }
        TopicCmd::DeleteRecords {
            name,
            partition,
            before,
        } => {
            let low = c.delete_records(&name, partition, before).await?;
            if conn.json {
                println!(
                    "{}",
                    json!({"topic": name, "partition": partition, "log_start_offset": low})
                );
            } else {
                println!("{name} partition {partition}: records below {low} deleted");
            }
        }
        TopicCmd::Alter { name, configs } => {
            let set = configs
                .iter()
                .map(|s| parse_kv(s).map(|(k, v)| (k, if v.is_empty() { None } else { Some(v) })))
                .collect::<Result<Vec<_>>>()?;
            c.alter_topic_configs(&name, &set).await?;
            println!("altered topic {name}");
        }
        TopicCmd::Delete { name } => {
            c.delete_topic(&name).await?;
            if conn.json {
                println!("{}", json!({"topic": name, "deleted": true}));
            } else {
                println!("deleted topic {name}");
            }
        }
    }
    Ok(())
}

pub(crate) async fn produce(a: ProduceArgs) -> Result<()> {
    let acks = parse_acks(&a.acks)?;
    let compression = parse_compression(&a.compression)?;
    let headers: Vec<(String, Option<Bytes>)> = a
        .headers
        .iter()
        .map(|h| parse_kv(h).map(|(k, v)| (k, Some(Bytes::from(v)))))
        .collect::<Result<_>>()?;
    let c = Client::connect(&a.conn.bootstrap).await?;
    let t = c.topic(&a.topic).await?;
    let nparts = t.partitions.len() as i32;
    if let Some(p) = a.partition {
        if p < 0 || p >= nparts {
            return Err(Error::Invalid(format!(
                "partition {p} out of range (topic has {nparts})"
            )));
        }
    }
    let reader: Box<dyn BufRead> = match &a.file {
        Some(f) => Box::new(std::io::BufReader::new(std::fs::File::open(f)?)),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let mut pending: Vec<Vec<ProduceRecord>> = vec![Vec::new(); nparts.max(1) as usize];
    let (mut n, mut bytes, mut rr) = (0u64, 0u64, 0i32);
    let started = std::time::Instant::now();
    let flush = |pending: &mut Vec<Vec<ProduceRecord>>| -> Result<Vec<(i32, Bytes)>> {
        let mut out = Vec::new();
        for (p, recs) in pending.iter_mut().enumerate() {
            if !recs.is_empty() {
                out.push((p as i32, encode_batch(recs, compression)?));
                recs.clear();
            }
        }
        Ok(out)
    };
    let mut lines = reader.lines();
    loop {
        let line = lines.next().transpose()?;
        let done = line.is_none();
        if let Some(line) = line {
            let (key, value) = match &a.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                    None => (None, Bytes::from(line)),
                },
                None => (None, Bytes::from(line)),
            };
            let p = match (a.partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, nparts),
                (None, None) => {
                    rr = (rr + 1) % nparts.max(1);
                    rr
                }
            };
            bytes += value.len() as u64 + key.as_ref().map_or(0, |k| k.len() as u64);
            n += 1;
            pending[p as usize].push(ProduceRecord {
                key,
                value: Some(value),
                headers: headers.clone(),
                timestamp: None,
            });
        }
        if done || pending.iter().map(|v| v.len()).sum::<usize>() >= a.batch {
            let batches = flush(&mut pending)?;
            if !batches.is_empty() {
                c.produce(&a.topic, acks, batches).await?;
            }
        }
        if done {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if a.conn.json {
        println!(
            "{}",
            json!({"topic": a.topic, "records": n, "bytes": bytes, "seconds": secs})
        );
    } else {
        eprintln!(
            "produced {n} record(s), {bytes} bytes to {} in {:.3} s",
            a.topic, secs
        );
    }
    Ok(())
}

pub(crate) fn text(b: &Option<Bytes>) -> serde_json::Value {
    match b {
        None => serde_json::Value::Null,
        Some(b) => json!(String::from_utf8_lossy(b)),
    }
}

/// Where to start in partition `p` when no committed offset says.
async fn start_offset(c: &Client, a: &ConsumeArgs, p: i32) -> Result<i64> {
    Ok(match (a.from_beginning, a.offset, a.timestamp) {
        (true, _, _) => c.list_offset(&a.topic, p, -2).await?,
        (_, Some(o), _) => o,
        (_, _, Some(ts)) => {
            let o = c.list_offset(&a.topic, p, ts).await?;
            if o < 0 {
                c.list_offset(&a.topic, p, -1).await?
            } else {
                o
            }
        }
        _ => c.list_offset(&a.topic, p, -1).await?,
    })
}

/// The group's positions for its new assignment: kept partitions keep their position, others
/// start at the committed offset (or as the flags say).
async fn group_positions(
    c: &Client,
    a: &ConsumeArgs,
    group: &str,
    assigned: &[(String, i32)],
    old: &[(i32, i64)],
) -> Result<Vec<(i32, i64)>> {
    let committed = c.committed_offsets(group).await?;
    let mut pos = Vec::new();
    for (t, p) in assigned.iter().filter(|(t, _)| *t == a.topic) {
        let o = match old.iter().find(|(q, _)| q == p) {
            Some((_, o)) => *o,
            None => match committed
                .iter()
                .find(|(ct, cp, o)| ct == t && cp == p && *o >= 0)
            {
                Some((_, _, o)) => *o,
                None => start_offset(c, a, *p).await?,
            },
        };
        pos.push((*p, o));
    }
    Ok(pos)
}

pub(crate) async fn consume(a: ConsumeArgs) -> Result<()> {
    let c = std::sync::Arc::new(Client::connect(&a.conn.bootstrap).await?);
    let t = c.topic(&a.topic).await?;
    let parts: Vec<i32> = if a.partition.is_empty() {
        t.partitions.iter().map(|p| p.partition).collect()
    } else {
        a.partition.clone()
    };
    let mut member = None;
    let mut pos = Vec::new();
    if let Some(g) = &a.group {
        let mut m =
            crate::consumer::GroupConsumer::new(c.clone(), g, vec![a.topic.clone()]).await?;
        let assigned = m.join().await?;
        pos = group_positions(&c, &a, g, &assigned, &[]).await?;
        member = Some(m);
    }
    for &p in parts.iter().filter(|_| member.is_none()) {
        let o = match (a.from_beginning, a.offset, a.timestamp) {
            (true, _, _) => c.list_offset(&a.topic, p, -2).await?,
            (_, Some(o), _) => o,
            (_, _, Some(ts)) => {
                let o = c.list_offset(&a.topic, p, ts).await?;
                if o < 0 {
                    c.list_offset(&a.topic, p, -1).await?
                } else {
                    o
                }
            }
            _ => c.list_offset(&a.topic, p, -1).await?,
        };
        pos.push((p, o));
    }
    let json_fmt = match a.format.as_str() {
        "plain" => false,
        "json" => true,
        o => return Err(Error::Invalid(format!("unknown format '{o}' (plain|json)"))),
    };
    let idle = a.idle_exit_ms.or(a.count.map(|_| 10_000));
    let mut last = std::time::Instant::now();
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    let mut last_beat = std::time::Instant::now();
    loop {
        if let Some(m) = member.as_mut() {
            if last_beat.elapsed() >= std::time::Duration::from_secs(1) {
                last_beat = std::time::Instant::now();
                let _ = m.commit(&committable(&a.topic, &pos)).await;
                if m.heartbeat().await? == crate::consumer::Liveness::Rejoin {
                    let assigned = m.join().await?;
                    let group = a.group.clone().unwrap_or_default();
                    pos = group_positions(&c, &a, &group, &assigned, &pos).await?;
                }
            }
        }
        if pos.is_empty() {
            // A group member with no partitions (more members than partitions) waits.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if idle.is_some_and(|ms| last.elapsed().as_millis() as u64 >= ms) {
                return finish(member.as_ref(), &a.topic, &pos).await;
            }
            continue;
        }
        let fetched = c.fetch(&a.topic, &pos, 500, 8 << 20).await?;
        let mut out = stdout.lock();
        let mut got = false;
        for f in fetched {
            crate::check(f.error_code, || format!("{}/{}", f.topic, f.partition))?;
            let Some(slot) = pos.iter_mut().find(|(p, _)| *p == f.partition) else {
                continue;
            };
            let decoded = decode_records(f.records);
            for bad in &decoded.skipped {
                if bad.next_offset > slot.1 {
                    eprintln!(
                        "warning: {}/{}: skipped the batch at offset {} that cannot be read: {}",
                        f.topic, f.partition, bad.offset, bad.error
                    );
                }
            }
            let past = decoded.next_offset;
            for r in decoded.records {
                if r.offset < slot.1 {
                    continue;
                }
                slot.1 = r.offset + 1;
                got = true;
                if json_fmt {
                    let hs: serde_json::Map<String, serde_json::Value> = r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), text(v)))
                        .collect();
                    let line = json!({"topic": a.topic, "partition": f.partition, "offset": r.offset,
                        "timestamp": r.timestamp, "key": text(&r.key), "headers": hs, "value": text(&r.value)});
                    writeln!(out, "{line}")?;
                } else {
                    out.write_all(r.value.as_deref().unwrap_or_default())?;
                    out.write_all(b"\n")?;
                }
                seen += 1;
                if a.count.is_some_and(|n| seen >= n) {
                    out.flush()?;
                    drop(out);
                    return finish(member.as_ref(), &a.topic, &pos).await;
                }
            }
            // Past the batches skipped and those without records for us (control batches).
            if let Some(next) = past.filter(|&n| n > slot.1) {
                slot.1 = next;
                got = true;
            }
        }
        out.flush()?;
        drop(out);
        if got {
            last = std::time::Instant::now();
        } else if idle.is_some_and(|ms| last.elapsed().as_millis() as u64 >= ms) {
            return finish(member.as_ref(), &a.topic, &pos).await;
        }
    }
}

/// At exit: a group member commits its positions and leaves.
async fn finish(
    member: Option<&crate::consumer::GroupConsumer>,
    topic: &str,
    pos: &[(i32, i64)],
) -> Result<()> {
    if let Some(m) = member {
        m.commit(&committable(topic, pos)).await?;
        m.leave().await?;
    }
    Ok(())
}

fn committable(topic: &str, pos: &[(i32, i64)]) -> Vec<((String, i32), i64)> {
    pos.iter()
        .map(|(p, o)| ((topic.to_string(), *p), *o))
        .collect()
}

pub(crate) async fn group(conn: &Conn, cmd: GroupCmd) -> Result<()> {
    let c = Client::connect(&conn.bootstrap).await?;
    match cmd {
        GroupCmd::List => {
            let gs = c.list_groups().await?;
            if conn.json {
                let v: Vec<_> = gs
                    .iter()
                    .map(|g| json!({"group": g.group, "type": g.group_type, "protocol_type": g.protocol_type, "state": g.state}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                let rows: Vec<Vec<String>> = gs
                    .into_iter()
                    .map(|g| vec![g.group, g.group_type, g.protocol_type, g.state])
                    .collect();
                print_table(&["GROUP", "TYPE", "PROTOCOL", "STATE"], &rows);
            }
        }
        GroupCmd::Describe { group, http } => {
            if super::queue::describe_share_group(&c, conn, http.as_deref(), &group).await? {
                return Ok(());
            }
            let consumer = c.describe_consumer_group(&group).await?;
            let d = match &consumer {
                // A KIP-848 consumer group: members with their epochs and assignments.
                Some(cg) => crate::groups::GroupDescription {
                    group: group.clone(),
                    state: cg.state.clone(),
                    protocol_type: "consumer".into(),
                    protocol: cg.assignor.clone(),
                    members: Vec::new(),
                },
                None => c.describe_group(&group).await?,
            };
            let offs = c.committed_offsets(&group).await?;
            let mut rows = Vec::new();
            for (t, p, o) in &offs {
                let end = c.list_offset(t, *p, -1).await?;
                let lag = if *o >= 0 { end - o } else { end };
                rows.push((t.clone(), *p, *o, end, lag));
            }
            if conn.json {
                let ms: Vec<_> = d.members.iter().map(|m| json!({"member_id": m.member_id, "client_id": m.client_id, "host": m.client_host})).collect();
                let os: Vec<_> = rows.iter().map(|(t, p, o, e, l)| json!({"topic": t, "partition": p, "committed": o, "end": e, "lag": l})).collect();
                let mut out = json!({"group": group, "state": d.state, "protocol_type": d.protocol_type,
                    "protocol": d.protocol, "members": ms, "offsets": os});
                if let Some(cg) = &consumer {
                    out["type"] = json!("consumer");
                    out["group_epoch"] = json!(cg.group_epoch);
                    out["assignment_epoch"] = json!(cg.assignment_epoch);
                    out["members"] = cg.members.iter().map(|m| json!({"member_id": m.member_id,
                        "member_epoch": m.member_epoch, "client_id": m.client_id, "host": m.client_host,
                        "assignment": m.assignment.iter().map(|(t, ps)| json!({"topic": t, "partitions": ps})).collect::<Vec<_>>()})).collect();
                }
                println!("{out}");
            } else if let Some(cg) = &consumer {
                println!(
                    "group {group}: consumer group (KIP-848), state {}, assignor {}, group epoch {}, assignment epoch {}, {} member(s)",
                    cg.state,
                    cg.assignor,
                    cg.group_epoch,
                    cg.assignment_epoch,
                    cg.members.len()
                );
                let ms: Vec<Vec<String>> = cg
                    .members
                    .iter()
                    .map(|m| {
                        let a: Vec<String> = m
                            .assignment
                            .iter()
                            .map(|(t, ps)| format!("{t}:{ps:?}"))
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
                let rs: Vec<Vec<String>> = rows
                    .iter()
                    .map(|(t, p, o, e, l)| {
                        vec![
                            t.clone(),
                            p.to_string(),
                            o.to_string(),
                            e.to_string(),
                            l.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"], &rs);
            } else {
                println!(
                    "group {group}: state {}, protocol {} {}, {} member(s)",
                    d.state,
                    d.protocol_type,
                    d.protocol,
                    d.members.len()
                );
                if !d.members.is_empty() {
                    let ms: Vec<Vec<String>> = d
                        .members
                        .iter()
                        .map(|m| {
                            vec![
                                m.member_id.clone(),
                                m.client_id.clone(),
                                m.client_host.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["MEMBER", "CLIENT-ID", "HOST"], &ms);
                }
                let rs: Vec<Vec<String>> = rows
                    .iter()
                    .map(|(t, p, o, e, l)| {
                        vec![
                            t.clone(),
                            p.to_string(),
                            o.to_string(),
                            e.to_string(),
                            l.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"], &rs);
            }
        }
        GroupCmd::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
        } => {
            let t = c.topic(&topic).await?;
            let mut offs = Vec::new();
            for p in &t.partitions {
                let o = match (to_earliest, to_latest, to_offset) {
                    (true, _, _) => c.list_offset(&topic, p.partition, -2).await?,
                    (_, true, _) => c.list_offset(&topic, p.partition, -1).await?,
                    (_, _, Some(o)) => o,
                    _ => {
                        return Err(Error::Invalid(
                            "give --to-earliest, --to-latest or --to-offset N".into(),
                        ))
                    }
                };
                offs.push((p.partition, o));
            }
            c.commit_offsets(&group, &topic, &offs).await?;
            if conn.json {
                let v: Vec<_> = offs
                    .iter()
                    .map(|(p, o)| json!({"partition": p, "offset": o}))
                    .collect();
                println!("{}", json!({"group": group, "topic": topic, "offsets": v}));
            } else {
                for (p, o) in offs {
                    println!("{group} {topic}/{p} -> {o}");
                }
            }
        }
        GroupCmd::Delete { group } => {
            c.delete_group(&group).await?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}
