//! `strom cluster status` and `strom cluster rebalance`: a cluster's brokers, controller and
//! under-replicated or offline partitions (DescribeCluster + Metadata), and a plan that
//! spreads replicas and leaders evenly over the live brokers (a new broker gets its share),
//! applied with AlterPartitionReassignments and followed with ListPartitionReassignments.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Subcommand;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, DescribeClusterRequest,
    ListPartitionReassignmentsRequest,
};
use serde_json::json;

use super::commands::print_table;
use super::Conn;
use crate::client::topic_name;
use crate::{check, Client, Error, Result, TopicInfo};

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Brokers (id, address, rack), the controller, and the partitions that are
    /// under-replicated (ISR smaller than the replicas), offline (no leader) or being moved.
    Status,
    /// Plans reassignments that give every live broker its share of replicas and leaders
    /// (moving as few replicas as it can), prints the plan, and with --apply starts them and
    /// waits until they are done.
    Rebalance {
        /// Start the reassignments (without it the plan is only printed).
        #[arg(long)]
        apply: bool,
        /// Topics to rebalance (repeatable) [default: every topic].
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Give up waiting after this many seconds (the reassignments go on).
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
    },
}

/// A live broker as DescribeCluster lists it.
struct Node {
    id: i32,
    addr: String,
    rack: Option<String>,
}

async fn describe(c: &Client) -> Result<(Vec<Node>, i32, String)> {
    let resp = c.call(&DescribeClusterRequest::default()).await?;
    check(resp.error_code, || "DescribeCluster".into())?;
    let mut nodes: Vec<Node> = resp
        .brokers
        .iter()
        .map(|b| Node {
            id: b.broker_id.0,
            addr: format!("{}:{}", b.host.as_str(), b.port),
            rack: b.rack.as_ref().map(|r| r.to_string()),
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    Ok((nodes, resp.controller_id.0, resp.cluster_id.to_string()))
}

async fn moving(c: &Client) -> Result<BTreeMap<(String, i32), (Vec<i32>, Vec<i32>)>> {
    let resp = c
        .call(&ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000))
        .await?;
    check(resp.error_code, || "ListPartitionReassignments".into())?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            out.insert(
                (t.name.to_string(), p.partition_index),
                (
                    p.adding_replicas.iter().map(|b| b.0).collect(),
                    p.removing_replicas.iter().map(|b| b.0).collect(),
                ),
            );
        }
    }
    Ok(out)
}

pub(crate) async fn cluster(conn: &Conn, cmd: ClusterCmd) -> Result<()> {
    let c = Client::connect(&conn.bootstrap).await?;
    match cmd {
        ClusterCmd::Status => status(&c, conn.json).await,
        ClusterCmd::Rebalance {
            apply,
            topics,
            timeout_s,
        } => {
            rebalance(
                &c,
                conn.json,
                apply,
                &topics,
                Duration::from_secs(timeout_s),
            )
            .await
        }
    }
}

async fn status(c: &Client, json_out: bool) -> Result<()> {
    let (nodes, controller, cluster_id) = describe(c).await?;
    let topics = c.metadata(None).await?;
    let moves = moving(c).await?;
    let mut under = Vec::new();
    let mut offline = Vec::new();
    for t in &topics {
        for p in &t.partitions {
            if p.leader < 0 {
                offline.push((t.name.clone(), p.partition));
            } else if p.isr.len() < p.replicas.len() {
                under.push((
                    t.name.clone(),
                    p.partition,
                    p.isr.clone(),
                    p.replicas.clone(),
                ));
            }
        }
    }
    let partitions: usize = topics.iter().map(|t| t.partitions.len()).sum();
    if json_out {
        let v = json!({
            "cluster_id": cluster_id,
            "controller": controller,
            "brokers": nodes.iter().map(|n| json!({"id": n.id, "address": n.addr, "rack": n.rack})).collect::<Vec<_>>(),
            "topics": topics.len(),
            "partitions": partitions,
            "under_replicated": under.iter().map(|(t, p, isr, r)| json!({"topic": t, "partition": p, "isr": isr, "replicas": r})).collect::<Vec<_>>(),
            "offline": offline.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
            "reassigning": moves.iter().map(|((t, p), (a, r))| json!({"topic": t, "partition": p, "adding": a, "removing": r})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    println!("cluster {cluster_id}: {} brokers, controller {controller}, {} topics, {partitions} partitions", nodes.len(), topics.len());
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let leads = topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.leader == n.id)
                .count();
            let replicas = topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.replicas.contains(&n.id))
                .count();
            vec![
                n.id.to_string(),
                n.addr.clone(),
                n.rack.clone().unwrap_or_else(|| "-".into()),
                replicas.to_string(),
                leads.to_string(),
                if n.id == controller {
                    "controller".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    print_table(
        &["BROKER", "ADDRESS", "RACK", "REPLICAS", "LEADERS", ""],
        &rows,
    );
    println!("under-replicated partitions: {}", under.len());
    for (t, p, isr, r) in &under {
        println!("  {t}-{p}: isr {isr:?} of replicas {r:?}");
    }
    println!("offline partitions: {}", offline.len());
    for (t, p) in &offline {
        println!("  {t}-{p}");
    }
    println!("reassignments in progress: {}", moves.len());
    for ((t, p), (a, r)) in &moves {
        println!("  {t}-{p}: adding {a:?}, removing {r:?}");
    }
    Ok(())
}

/// The replicas of every partition after an even spread over `brokers`: each broker holds
/// about `total / n` replicas and leads about `partitions / n`; a partition keeps the
/// replicas it has unless one sits on an over-loaded broker, which hands it to the least
/// loaded broker not already holding that partition. The leader (first replica) stays first
/// unless it moves.
pub(crate) fn plan(
    brokers: &[i32],
    parts: &[((String, i32), Vec<i32>)],
) -> Vec<((String, i32), Vec<i32>)> {
    if brokers.is_empty() {
        return Vec::new();
    }
    let total: usize = parts.iter().map(|(_, r)| r.len()).sum();
    let n = brokers.len();
    let cap = total.div_ceil(n);
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    for (_, r) in parts {
        for b in r {
            if let Some(l) = load.get_mut(b) {
                *l += 1;
            }
        }
    }
    let mut out = Vec::new();
    for (key, replicas) in parts {
        let mut next = replicas.clone();
        for slot in 0..next.len() {
            let b = next[slot];
            let over = load.get(&b).is_none_or(|l| *l > cap);
            if !over {
                continue;
            }
            let candidate = load
                .iter()
                .filter(|(c, l)| !next.contains(c) && **l < cap)
                .min_by_key(|(c, l)| (**l, **c))
                .map(|(c, _)| *c);
            if let Some(c) = candidate {
                if let Some(l) = load.get_mut(&b) {
                    *l -= 1;
                }
                *load.entry(c).or_default() += 1;
                next[slot] = c;
            }
        }
        if next != *replicas {
            out.push((key.clone(), next));
        }
    }
    // Leaders: spread the first replica, swapping it within a partition's replicas.
    let mut leads: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    let planned: BTreeMap<(String, i32), Vec<i32>> = out.iter().cloned().collect();
    let mut all: Vec<((String, i32), Vec<i32>)> = parts
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                planned.get(k).cloned().unwrap_or_else(|| r.clone()),
            )
        })
        .collect();
    let lead_cap = all.len().div_ceil(n);
    for (_, r) in &all {
        if let Some(first) = r.first() {
            *leads.entry(*first).or_default() += 1;
        }
    }
    for (_, r) in &mut all {
        let Some(&first) = r.first() else { continue };
        if leads.get(&first).is_some_and(|l| *l > lead_cap) {
            if let Some(i) = (1..r.len()).find(|i| leads.get(&r[*i]).is_some_and(|l| *l < lead_cap))
            {
                *leads.entry(first).or_default() -= 1;
                *leads.entry(r[i]).or_default() += 1;
                r.swap(0, i);
            }
        }
    }
    parts
        .iter()
        .zip(all)
        .filter(|((_, before), (_, after))| before != after)
        .map(|(_, moved)| moved)
        .collect()
}

async fn rebalance(
    c: &Client,
    json_out: bool,
    apply: bool,
    only: &[String],
    timeout: Duration,
) -> Result<()> {
    let (nodes, _, _) = describe(c).await?;
    let brokers: Vec<i32> = nodes.iter().map(|n| n.id).collect();
    let topics: Vec<TopicInfo> = c
        .metadata(None)
        .await?
        .into_iter()
        .filter(|t| !t.internal && (only.is_empty() || only.contains(&t.name)))
        .collect();
    let parts: Vec<((String, i32), Vec<i32>)> = topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.clone(), p.partition), p.replicas.clone()))
        })
        .collect();
    let current: BTreeMap<(String, i32), Vec<i32>> = parts.iter().cloned().collect();
    let moves = plan(&brokers, &parts);
    if json_out {
        let v: Vec<_> = moves
            .iter()
            .map(|((t, p), r)| json!({"topic": t, "partition": p, "from": current.get(&(t.clone(), *p)), "to": r}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        println!(
            "{} partitions to move over brokers {brokers:?}",
            moves.len()
        );
        for ((t, p), r) in &moves {
            println!(
                "  {t}-{p}: {:?} -> {r:?}",
                current.get(&(t.clone(), *p)).cloned().unwrap_or_default()
            );
        }
    }
    if !apply || moves.is_empty() {
        return Ok(());
    }
    let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
    for ((t, p), r) in &moves {
        by_topic.entry(t).or_default().push(
            ReassignablePartition::default()
                .with_partition_index(*p)
                .with_replicas(Some(r.iter().map(|b| BrokerId(*b)).collect())),
        );
    }
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    ReassignableTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = c.call(&req).await?;
    check(resp.error_code, || "AlterPartitionReassignments".into())?;
    for t in &resp.responses {
        for p in &t.partitions {
            check(p.error_code, || {
                format!("reassigning {}-{}", t.name.as_str(), p.partition_index)
            })?;
        }
    }
    let started = Instant::now();
    loop {
        let left = moving(c).await?.len();
        if left == 0 {
            break;
        }
        if started.elapsed() >= timeout {
            return Err(Error::Protocol(format!(
                "{left} reassignments still in progress after {} s (they go on; see `strom cluster status`)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !json_out {
        println!("done in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn a_new_broker_gets_its_share_of_replicas_and_leaders() {
        let parts: Vec<((String, i32), Vec<i32>)> = (0..6)
            .map(|i| (("t".to_string(), i), vec![1 + i % 3, 1 + (i + 1) % 3]))
            .collect();
        let moves = plan(&[1, 2, 3, 4], &parts);
        let mut after: std::collections::BTreeMap<(String, i32), Vec<i32>> =
            parts.iter().cloned().collect();
        for (k, r) in moves {
            after.insert(k, r);
        }
        let count = |b: i32| after.values().filter(|r| r.contains(&b)).count();
        for b in 1..=4 {
            assert!(
                count(b) <= 3,
                "broker {b} holds {} of 12 replicas",
                count(b)
            );
        }
        assert!(count(4) >= 2, "the new broker takes replicas: {after:?}");
        for r in after.values() {
            let mut s = r.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 2, "replicas stay distinct");
        }
        let leads = |b: i32| after.values().filter(|r| r[0] == b).count();
        assert!((1..=4).all(|b| leads(b) <= 2));
        assert!(
            plan(&[1, 2, 3], &parts).is_empty(),
            "already balanced: no move"
        );
    }
}
