//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the door's request path
//! without a socket, over a real broker in a temporary directory.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strom_broker::coordinator::{GroupConfig, GroupCoordinator, PartitionExists};
use strom_broker::share::{ShareConfig, ShareCoordinator};
use strom_broker::{Broker, BrokerConfig};

use crate::pool::RequestPool;
use crate::server::{handle, Client, Ctx, Handled, KafkaConfig, Listener};

/// Topics that exist for every input; any other topic an input creates is deleted after it.
const SEED_TOPICS: &[(&str, i32)] = &[("t0", 1), ("t1", 3)];

/// A broker, its group coordinator and the door's shared state, on a current-thread runtime
/// whose clock is paused: waits (long polls, rebalances) pass in virtual time at once.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    ctx: Ctx,
    _dir: tempfile::TempDir,
    inputs: u64,
}

impl Harness {
    /// A fresh broker in a temporary directory (under `$TMPDIR`; a tmpfs is fastest).
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = BrokerConfig::new(dir.path());
        config.auto_create_topics = false;
        config.max_partitions_per_topic = 8;
        let broker = Broker::open(config).expect("the broker opens");
        let b = broker.clone();
        let exists: PartitionExists = Arc::new(move |t: &str, p: i32| b.partition(t, p).is_ok());
        let groups = GroupCoordinator::open(dir.path(), GroupConfig::default(), exists)
            .expect("the coordinator opens");
        let b = broker.clone();
        groups.set_topics(std::sync::Arc::new(move || {
            b.topics()
                .into_iter()
                .map(|t| (t.name, t.partitions))
                .collect()
        }));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let listen: SocketAddr = "127.0.0.1:9092".parse().expect("an address");
        let config = KafkaConfig::new(listen);
        let listener = Arc::new(Listener::new(&config.listeners[0], listen));
        let shares = ShareCoordinator::open(
            dir.path(),
            ShareConfig::default(),
            broker.clone(),
            Some(groups.clone()),
        )
        .expect("the share coordinator opens");
        let txns = strom_broker::txn::TxnCoordinator::open(
            dir.path(),
            Default::default(),
            broker.clone(),
            groups.clone(),
        )
        .expect("the transaction coordinator opens");
        let ctx = Ctx {
            broker,
            groups,
            shares,
            txns: Some(txns),
            share_sessions: Default::default(),
            pool: RequestPool::new(config.queued_max_request_bytes),
            listeners: vec![listener.clone()],
            config,
            connections: AtomicUsize::new(0),
        };
        let h = Harness {
            rt,
            ctx,
            _dir: dir,
            inputs: 0,
        };
        h.reset_topics();
        h
    }

    /// Handles one request frame (without its length prefix) as a connection would, reply
    /// included; a malformed frame is an error, as it closes a connection. Each request
    /// gets at most 5 s of virtual time.
    pub fn request(&mut self, frame: &[u8]) {
        if frame.len() < 8 {
            return;
        }
        let frame = Bytes::copy_from_slice(frame);
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("an address");
        let client = Client::anonymous(peer, self.ctx.listeners[0].clone());
        let ctx = &self.ctx;
        self.rt.block_on(async {
            let run = async {
                match handle(ctx, &client, frame).await {
                    Ok(Handled::Later(reply)) => {
                        let _ = reply.await;
                    }
                    Ok(Handled::Now(_)) | Err(_) => {}
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
        });
        self.inputs += 1;
        if self.inputs.is_multiple_of(64) || self.ctx.broker.topics().len() > SEED_TOPICS.len() {
            self.reset_topics();
        }
    }

    /// Deletes what inputs created and recreates the seed topics when they are gone or have
    /// grown (their logs are kept small so that long runs do not fill the disk).
    fn reset_topics(&self) {
        let broker = &self.ctx.broker;
        for t in broker.topics() {
            let seed = SEED_TOPICS.iter().any(|(n, _)| *n == t.name);
            let big = broker.topic(&t.name).is_some_and(|t| {
                t.partitions()
                    .iter()
                    .any(|p| p.log().is_ok_and(|l| l.size_bytes() > 1 << 20))
            });
            if !seed || big {
                let _ = broker.delete_topic(&t.name);
            }
        }
        for (name, partitions) in SEED_TOPICS {
            if broker.topic(name).is_none() {
                let _ = broker.create_topic(name, *partitions, Vec::new(), false);
            }
        }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// The old-version rewrites (`legacy`, message-set conversion included) on a request frame
/// (without its length prefix, as in `fuzz/corpus/legacy_request/`): the frame's API key is
/// taken as it is when it is one of the old APIs, else modulo them (Produce, Fetch, ListOffsets, OffsetCommit, OffsetFetch,
/// CreateTopics, DeleteTopics, DescribeConfigs) and its version folded below the crate's
/// lowest.
pub fn legacy_frame(frame: &[u8]) {
    if frame.len() < 10 {
        return;
    }
    let olds = crate::versions::LEGACY_MIN;
    let raw = i16::from_be_bytes([frame[0], frame[1]]);
    let key = match olds.iter().find(|(k, _)| *k as i16 == raw) {
        Some(&(k, _)) => k,
        None => olds[usize::from(frame[1]) % olds.len()].0,
    };
    let below = crate::versions::decodable_min(key);
    if below == 0 {
        return;
    }
    let version = i16::from(frame[3]) % below;
    let client = i16::from_be_bytes([frame[8], frame[9]]).max(0) as usize;
    let Some(body) = frame.get(10 + client..) else {
        return;
    };
    let _ = crate::legacy::rewrite_for_fuzzing(key, version, Bytes::copy_from_slice(body));
}

/// The bounds check alone (`bounds`), for a frame without its length prefix.
pub fn check_frame(frame: &[u8]) -> bool {
    if frame.len() < 4 {
        return false;
    }
    let api = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    crate::bounds::check_request(api, version, frame).is_ok()
}
