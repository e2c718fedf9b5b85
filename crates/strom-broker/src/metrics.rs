//! Counters the core and every door record into, read by whoever exports them (the HTTP
//! door's `/metrics`). Plain atomics and short locks; nothing here blocks the data path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds (seconds) of every latency histogram's buckets.
pub const BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// A latency histogram with [`BUCKETS`] (cumulative counts, as Prometheus wants them).
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bucket's bound.
    pub counts: [u64; BUCKETS.len()],
    /// Sum of all observations (seconds).
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += s;
        self.count += 1;
    }
}

/// Bytes through the core, per topic.
#[derive(Clone, Copy, Debug, Default)]
pub struct TopicBytes {
    /// Record batch bytes appended.
    pub bytes_in: u64,
    /// Record batch bytes returned by fetches.
    pub bytes_out: u64,
}

/// The broker-wide registry.
#[derive(Default)]
pub struct CoreMetrics {
    topics: Mutex<BTreeMap<String, TopicBytes>>,
    fsync: Mutex<Histogram>,
    requests: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
    connections: Mutex<BTreeMap<&'static str, i64>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Produce requests refused (any door).
    pub produce_errors: AtomicU64,
    /// Records appended.
    pub records_in: AtomicU64,
    /// Long polls currently waiting.
    pub waiting_fetches: AtomicI64,
    /// Records acknowledged with an earlier offset because their `strom.msg.id` was in the
    /// dedup window (not stored).
    pub dedup_hits: AtomicU64,
    /// Delayed records appended to their partition when due.
    pub delayed_delivered: AtomicU64,
    /// Delayed records accepted.
    pub delayed_accepted: AtomicU64,
    /// Transactions open (Ongoing or being completed).
    pub txn_open: AtomicI64,
    /// Transactions committed.
    pub txn_commits: AtomicU64,
    /// Transactions aborted (by EndTxn, a timeout or a new producer instance).
    pub txn_aborts: AtomicU64,
    /// Transactions aborted because their timeout passed.
    pub txn_timed_out: AtomicU64,
    /// Requests a client quota throttled, and their throttle time in total (ms).
    pub quota_throttled: AtomicU64,
    pub quota_throttle_ms: AtomicU64,
}

impl CoreMetrics {
    pub(crate) fn bytes_in(&self, topic: &str, n: usize, records: u64) {
        self.topics
            .lock()
            .entry(topic.to_string())
            .or_default()
            .bytes_in += n as u64;
        self.records_in.fetch_add(records, Ordering::Relaxed);
    }

    pub(crate) fn bytes_out(&self, topic: &str, n: usize) {
        if n > 0 {
            self.topics
                .lock()
                .entry(topic.to_string())
                .or_default()
                .bytes_out += n as u64;
        }
    }

    pub(crate) fn fsync(&self, d: Duration) {
        self.fsync.lock().observe(d);
    }

    /// A door throttled one request for `d` (a client quota).
    pub fn throttled(&self, d: Duration) {
        self.quota_throttled.fetch_add(1, Ordering::Relaxed);
        self.quota_throttle_ms
            .fetch_add(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// A door records one request of `api` and how long it took.
    pub fn request(&self, door: &'static str, api: &'static str, d: Duration) {
        self.requests
            .lock()
            .entry((door, api))
            .or_default()
            .observe(d);
    }

    /// A door's connection count changes by `delta`.
    pub fn connection(&self, door: &'static str, delta: i64) {
        *self.connections.lock().entry(door).or_default() += delta;
    }

    /// Bytes per topic.
    pub fn topic_bytes(&self) -> BTreeMap<String, TopicBytes> {
        self.topics.lock().clone()
    }

    /// fdatasync latency.
    pub fn fsync_histogram(&self) -> Histogram {
        self.fsync.lock().clone()
    }

    /// Request latency per `(door, api)`.
    pub fn requests(&self) -> BTreeMap<(&'static str, &'static str), Histogram> {
        self.requests.lock().clone()
    }

    /// A door refused a connection (at its cap, or out of descriptors).
    pub fn connection_refused(&self, door: &'static str) {
        *self.refused.lock().entry(door).or_default() += 1;
    }

    /// Connections refused per door since start.
    pub fn connections_refused(&self) -> BTreeMap<&'static str, u64> {
        self.refused.lock().clone()
    }

    /// Open connections per door.
    pub fn connections(&self) -> BTreeMap<&'static str, i64> {
        self.connections.lock().clone()
    }
}
