//! The door with tonic's own client over a real socket: zstd-compressed requests and answers
//! (the compression neither grpcio nor @grpc/grpc-js speaks, so the e2e suite cannot check
//! it), and a unary deadline honoured.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strom_broker::coordinator::{GroupConfig, GroupCoordinator, PartitionExists};
use strom_broker::share::{ShareConfig, ShareCoordinator};
use strom_broker::{Broker, BrokerConfig};
use strom_grpc::pb::{self, strom_client::StromClient};
use tonic::codec::CompressionEncoding;

async fn door(dir: &std::path::Path) -> (String, tokio::sync::watch::Sender<bool>) {
    let broker = Broker::open(BrokerConfig::new(dir)).expect("broker");
    let b = broker.clone();
    let exists: PartitionExists = Arc::new(move |t: &str, p: i32| b.partition(t, p).is_ok());
    let groups = GroupCoordinator::open(dir, GroupConfig::default(), exists).expect("groups");
    let shares = ShareCoordinator::open(
        dir,
        ShareConfig::default(),
        broker.clone(),
        Some(groups.clone()),
    )
    .expect("shares");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let config = strom_grpc::GrpcConfig {
        send_compression: strom_grpc::Compression::Zstd,
        ..strom_grpc::GrpcConfig::default()
    };
    tokio::spawn(strom_grpc::serve(
        listener, broker, groups, shares, config, stop,
    ));
    (addr, stop_tx)
}

async fn client(addr: &str) -> StromClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    StromClient::new(ch)
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_both_ways_and_a_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, stop) = door(dir.path()).await;
    let mut c = client(&addr).await;
    c.create_topic(pb::CreateTopicRequest {
        name: "z".into(),
        partitions: Some(1),
        configs: Default::default(),
    })
    .await
    .expect("create");
    let value = Bytes::from(vec![b'z'; 200_000]);
    let records = (0..5)
        .map(|i| pb::Record {
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(value.clone()),
            headers: vec![pb::Header {
                key: "i".into(),
                value: Bytes::from(vec![i as u8]),
            }],
            ..Default::default()
        })
        .collect();
    let ack = c
        .produce(pb::ProduceRequest {
            topic: "z".into(),
            records,
            partition: None,
        })
        .await
        .expect("a zstd-compressed produce is accepted")
        .into_inner();
    let offsets: Vec<i64> = ack.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4]);
    let mut stream = c
        .subscribe(pb::SubscribeRequest {
            topics: vec!["z".into()],
            from: "earliest".into(),
            group: None,
            isolation: 0,
        })
        .await
        .expect("subscribe")
        .into_inner();
    for i in 0..5 {
        let r = stream.message().await.expect("record").expect("open");
        assert_eq!(
            (r.offset, r.key.as_deref()),
            (i, Some(format!("k{i}").as_bytes()))
        );
        assert_eq!(r.value.as_ref(), Some(&value));
        assert_eq!(r.headers[0].value.as_ref(), [i as u8]);
    }
    // A Subscribe with nothing to read and a 300 ms deadline ends with DEADLINE_EXCEEDED
    // from the server (the client's own timer is longer).
    let mut req = tonic::Request::new(pb::SubscribeRequest {
        topics: vec!["z".into()],
        from: "latest".into(),
        group: None,
        isolation: 0,
    });
    req.metadata_mut()
        .insert("grpc-timeout", "300m".parse().expect("header"));
    let started = std::time::Instant::now();
    let mut quiet = c.subscribe(req).await.expect("subscribe").into_inner();
    let end = tokio::time::timeout(Duration::from_secs(10), quiet.message())
        .await
        .expect("the server ends it");
    let status = end.expect_err("no record, a deadline");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let _ = stop.send(true);
}
