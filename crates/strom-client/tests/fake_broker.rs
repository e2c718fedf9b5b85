//! Exercises the client and the `strom-cli` binary over real TCP against a minimal in-memory
//! Kafka broker written with `kafka-protocol` (ApiVersions, Metadata, CreateTopics, Produce,
//! Fetch, ListOffsets). It checks the client's framing, pipelining and version handling; the
//! real broker is tested by the e2e suite.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable, StrBytes};
use parking_lot::Mutex;
use strom_client::records::{decode_records, encode_batch, ProduceRecord};
use strom_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Log = Vec<(i64, Bytes)>; // (base offset, batch)
type Topics = Arc<Mutex<HashMap<String, Vec<Log>>>>;

fn end_offset(log: &Log) -> i64 {
    log.last()
        .map(|(base, b)| base + i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64 + 1)
        .unwrap_or(0)
}

fn respond<R: Encodable>(id: i32, key: ApiKey, version: i16, r: &R) -> Bytes {
    let mut body = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(id)
        .encode(&mut body, key.response_header_version(version))
        .unwrap();
    r.encode(&mut body, version).unwrap();
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32);
    out.extend_from_slice(&body);
    out.freeze()
}

fn handle(topics: &Topics, port: u16, mut frame: Bytes) -> Option<Bytes> {
    let h = decode_request_header_from_buffer(&mut frame).unwrap();
    let key = ApiKey::try_from(h.request_api_key).unwrap();
    let v = h.request_api_version;
    let id = h.correlation_id;
    let name = |t: &str| TopicName(StrBytes::from_string(t.to_string()));
    Some(match key {
        ApiKey::ApiVersions => {
            let keys = [
                (0, 3, 9),
                (1, 4, 12),
                (2, 1, 7),
                (3, 0, 12),
                (18, 0, 3),
                (19, 2, 7),
            ];
            let r = ApiVersionsResponse::default().with_api_keys(
                keys.iter()
                    .map(|&(k, lo, hi)| {
                        ApiVersion::default()
                            .with_api_key(k)
                            .with_min_version(lo)
                            .with_max_version(hi)
                    })
                    .collect(),
            );
            respond(id, key, v, &r)
        }
        ApiKey::Metadata => {
            let req = MetadataRequest::decode(&mut frame, v).unwrap();
            let t = topics.lock();
            let names: Vec<String> = match req.topics {
                Some(ts) => ts
                    .into_iter()
                    .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
                    .collect(),
                None => t.keys().cloned().collect(),
            };
            let r = MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(0))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(port as i32)])
                .with_topics(
                    names
                        .iter()
                        .map(|n| match t.get(n) {
                            Some(parts) => MetadataResponseTopic::default()
                                .with_name(Some(name(n)))
                                .with_partitions(
                                    (0..parts.len() as i32)
                                        .map(|p| {
                                            MetadataResponsePartition::default()
                                                .with_partition_index(p)
                                                .with_leader_id(BrokerId(0))
                                        })
                                        .collect(),
                                ),
                            None => MetadataResponseTopic::default()
                                .with_name(Some(name(n)))
                                .with_error_code(3),
                        })
                        .collect(),
                );
            respond(id, key, v, &r)
        }
        ApiKey::CreateTopics => {
            let req = CreateTopicsRequest::decode(&mut frame, v).unwrap();
            let mut res = Vec::new();
            for t in req.topics {
                let n = t.name.0.as_str().to_string();
                let mut m = topics.lock();
                let code = if m.contains_key(&n) { 36 } else { 0 };
                m.entry(n)
                    .or_insert_with(|| vec![Vec::new(); t.num_partitions as usize]);
                res.push(
                    CreatableTopicResult::default()
                        .with_name(t.name)
                        .with_error_code(code),
                );
            }
            respond(
                id,
                key,
                v,
                &CreateTopicsResponse::default().with_topics(res),
            )
        }
        ApiKey::Produce => {
            let req = ProduceRequest::decode(&mut frame, v).unwrap();
            let acks = req.acks;
            let mut out = Vec::new();
            let mut m = topics.lock();
            for t in req.topic_data {
                let mut prs = Vec::new();
                let log = m.get_mut(t.name.0.as_str()).unwrap();
                for p in t.partition_data {
                    let l = &mut log[p.index as usize];
                    let base = end_offset(l);
                    let mut b = BytesMut::from(&p.records.unwrap()[..]);
                    b[0..8].copy_from_slice(&base.to_be_bytes());
                    l.push((base, b.freeze()));
                    prs.push(
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_base_offset(base),
                    );
                }
                out.push(
                    TopicProduceResponse::default()
                        .with_name(t.name)
                        .with_partition_responses(prs),
                );
            }
            if acks == 0 {
                return None;
            }
            respond(id, key, v, &ProduceResponse::default().with_responses(out))
        }
        ApiKey::Fetch => {
            let req = FetchRequest::decode(&mut frame, v).unwrap();
            let m = topics.lock();
            let mut out = Vec::new();
            for t in req.topics {
                let log = &m[t.topic.0.as_str()];
                let mut ps = Vec::new();
                for p in t.partitions {
                    let l = &log[p.partition as usize];
                    let mut data = BytesMut::new();
                    for (base, b) in l {
                        let last = base + i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64;
                        if last >= p.fetch_offset && data.len() < p.partition_max_bytes as usize {
                            data.extend_from_slice(b);
                        }
                    }
                    ps.push(
                        PartitionData::default()
                            .with_partition_index(p.partition)
                            .with_high_watermark(end_offset(l))
                            .with_records(Some(data.freeze())),
                    );
                }
                out.push(
                    FetchableTopicResponse::default()
                        .with_topic(t.topic)
                        .with_partitions(ps),
                );
            }
            respond(id, key, v, &FetchResponse::default().with_responses(out))
        }
        ApiKey::ListOffsets => {
            let req = ListOffsetsRequest::decode(&mut frame, v).unwrap();
            let m = topics.lock();
            let mut out = Vec::new();
            for t in req.topics {
                let log = &m[t.name.0.as_str()];
                let ps = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let o = if p.timestamp == -2 {
                            0
                        } else {
                            end_offset(&log[p.partition_index as usize])
                        };
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_offset(o)
                    })
                    .collect();
                out.push(
                    ListOffsetsTopicResponse::default()
                        .with_name(t.name)
                        .with_partitions(ps),
                );
            }
            respond(id, key, v, &ListOffsetsResponse::default().with_topics(out))
        }
        other => panic!("fake broker: unexpected {other:?}"),
    })
}

async fn start_fake() -> (u16, Topics) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let topics: Topics = Arc::default();
    let t = topics.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let t = t.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(n) = s.read_i32().await else { return };
                    let mut f = vec![0u8; n as usize];
                    if s.read_exact(&mut f).await.is_err() {
                        return;
                    }
                    if let Some(r) = handle(&t, port, Bytes::from(f)) {
                        if s.write_all(&r).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, topics)
}

#[tokio::test]
async fn client_roundtrip_against_fake_broker() {
    let (port, _t) = start_fake().await;
    let c = Client::connect(&format!("127.0.0.1:{port}")).await.unwrap();
    c.create_topic("t", 3, &[]).await.unwrap();
    let err = c.create_topic("t", 3, &[]).await.unwrap_err().to_string();
    assert!(err.contains("TOPIC_ALREADY_EXISTS"), "{err}");
    let t = c.topic("t").await.unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert!(c
        .topic("missing")
        .await
        .unwrap_err()
        .to_string()
        .contains("UNKNOWN_TOPIC_OR_PARTITION"));

    // Pipelined: many produces in flight on one connection.
    let mut futs = Vec::new();
    for i in 0..50 {
        let recs: Vec<ProduceRecord> = (0..10)
            .map(|j| ProduceRecord {
                value: Some(Bytes::from(format!("v{i}-{j}"))),
                ..Default::default()
            })
            .collect();
        let b = encode_batch(&recs, kafka_protocol::records::Compression::None).unwrap();
        futs.push(c.produce("t", -1, vec![(1, b)]));
    }
    let mut bases = Vec::new();
    for f in futs {
        bases.push(f.await.unwrap()[0].1);
    }
    bases.sort();
    assert_eq!(bases, (0..50).map(|i| i * 10).collect::<Vec<i64>>());
    assert_eq!(c.list_offset("t", 1, -1).await.unwrap(), 500);
    assert_eq!(c.list_offset("t", 0, -1).await.unwrap(), 0);

    let f = c.fetch("t", &[(1, 495)], 100, 1 << 20).await.unwrap();
    let recs = decode_records(f[0].records.clone()).records;
    let tail: Vec<_> = recs.iter().filter(|r| r.offset >= 495).collect();
    assert_eq!(tail.len(), 5);
    assert_eq!(f[0].high_watermark, 500);
    let mut all: Vec<String> = decode_records(
        c.fetch("t", &[(1, 0)], 100, 1 << 20).await.unwrap()[0]
            .records
            .clone(),
    )
    .records
    .iter()
    .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
    .collect();
    all.sort();
    assert_eq!(all.len(), 500);
    assert!(all.contains(&"v49-9".to_string()));
}

#[test]
fn cli_produce_consume_and_bench_against_fake_broker() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, _t) = rt.block_on(start_fake());
    let _guard = rt.enter();
    let exe = env!("CARGO_BIN_EXE_strom-cli");
    let bs = format!("127.0.0.1:{port}");
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(args)
            .env("STROM_BOOTSTRAP", &bs)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut ch = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut i = ch.stdin.take().unwrap();
            if let Some(s) = stdin {
                i.write_all(s.as_bytes()).unwrap();
            }
        }
        let o = ch.wait_with_output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (ok, out, _) = run(&["topic", "create", "cli", "--partitions", "2"], None);
    assert!(ok && out.contains("created topic cli"), "{out}");
    let (ok, out, _) = run(&["topic", "list"], None);
    assert!(ok && out.contains("cli") && out.contains('2'), "{out}");
    let (ok, _, err) = run(
        &["produce", "cli", "--key-separator", ":"],
        Some("a:one\nb:two\nc:three\n"),
    );
    assert!(ok && err.contains("produced 3 record(s)"), "{err}");
    let (ok, out, _) = run(
        &["consume", "cli", "--from-beginning", "--count", "3"],
        None,
    );
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert!(ok);
    assert_eq!(lines, vec!["one", "three", "two"]);
    // Keyed records land on murmur2 partitions; json output carries key and partition.
    let (ok, out, _) = run(
        &[
            "consume",
            "cli",
            "--from-beginning",
            "--count",
            "3",
            "--format",
            "json",
        ],
        None,
    );
    assert!(ok);
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let k = v["key"].as_str().unwrap();
        assert_eq!(
            v["partition"].as_i64().unwrap() as i32,
            strom_client::partitioner::partition_for_key(k.as_bytes(), 2)
        );
    }
    // A clear one-line error.
    let (ok, _, err) = run(&["topic", "describe", "nope"], None);
    assert!(
        !ok && err.trim().lines().count() == 1 && err.contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{err}"
    );
    let (ok, _, err) = run(&["topic", "list", "--bootstrap", "127.0.0.1:1"], None);
    assert!(!ok && err.starts_with("error: cannot connect"), "{err}");

    let (ok, out, err) = run(
        &[
            "bench",
            "--json",
            "--duration-secs",
            "1",
            "--warmup-secs",
            "0",
            "--message-size",
            "100",
            "--batch",
            "100",
            "--rate",
            "20000",
        ],
        None,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["produce_msgs_per_s"].as_f64().unwrap() > 10_000.0, "{v}");
    assert!(v["consume_mb_per_s"].as_f64().unwrap() > 0.5, "{v}");
    assert!(
        v["e2e_latency_ms"]["count"].as_u64().unwrap() > 10_000,
        "{v}"
    );
    assert!(v["e2e_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

/// Client-side ceiling of `strom bench` (1 KB, max rate) against the in-memory broker:
/// `cargo test --release -p strom-client --test fake_broker -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_ceiling_against_fake_broker() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, _t) = rt.block_on(start_fake());
    for size in ["1024", "100"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_strom-cli"))
            .args([
                "bench",
                "--json",
                "--bootstrap",
                &format!("127.0.0.1:{port}"),
                "--topic",
                &format!("c{size}"),
            ])
            .args([
                "--duration-secs",
                "3",
                "--warmup-secs",
                "1",
                "--message-size",
                size,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        println!("{}", String::from_utf8_lossy(&o.stdout).trim());
    }
}
