//! `/metrics` in Prometheus text format (`strom_` prefix): HTTP requests and latency per
//! route, bytes in/out per topic through this door, open WebSockets and SSE streams, and per
//! partition log start/end offsets and sizes read from the core at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use crate::AppState;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The HTTP door's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    bytes_in: Mutex<BTreeMap<String, u64>>,
    bytes_out: Mutex<BTreeMap<String, u64>>,
    /// Open WebSocket connections.
    pub(crate) websockets: AtomicI64,
    /// Open SSE streams.
    pub(crate) sse_streams: AtomicI64,
    /// Shared followers of WebSocket subscribers from `latest` (one per topic followed).
    pub(crate) ws_tails: AtomicI64,
    /// Push subscribers (WebSocket subscriptions without a group, SSE streams) per topic.
    subscribers: Mutex<BTreeMap<String, i64>>,
    /// Connections closed by the door, by reason (idle, header_timeout, write_stalled).
    closed: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests refused with 401 for wrong, expired or missing credentials.
    auth_failures: std::sync::atomic::AtomicU64,
}

/// One push subscriber of a topic, counted while it lives.
pub(crate) struct Subscriber {
    metrics: std::sync::Arc<Metrics>,
    topic: String,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut m = self.metrics.subscribers.lock();
        if let Some(n) = m.get_mut(&self.topic) {
            *n -= 1;
            if *n <= 0 {
                m.remove(&self.topic);
            }
        }
    }
}

/// Counts a push subscriber of `topic` until the returned guard is dropped.
pub(crate) fn subscriber(metrics: &std::sync::Arc<Metrics>, topic: &str) -> Subscriber {
    *metrics
        .subscribers
        .lock()
        .entry(topic.to_string())
        .or_default() += 1;
    Subscriber {
        metrics: metrics.clone(),
        topic: topic.to_string(),
    }
}

impl Metrics {
    /// Push subscribers of `topic` now.
    pub(crate) fn subscribers_of(&self, topic: &str) -> i64 {
        self.subscribers.lock().get(topic).copied().unwrap_or(0)
    }

    pub(crate) fn bytes_in(&self, topic: &str, n: usize) {
        *self.bytes_in.lock().entry(topic.to_string()).or_default() += n as u64;
    }

    pub(crate) fn bytes_out(&self, topic: &str, n: usize) {
        *self.bytes_out.lock().entry(topic.to_string()).or_default() += n as u64;
    }

    pub(crate) fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, reason: &'static str) {
        *self.closed.lock().entry(reason).or_default() += 1;
    }

    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let mut lat = self.latency.lock();
        let h = lat.entry(route.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }
}

/// Middleware: counts requests and their latency per matched route.
pub(crate) async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    s.metrics.observe(
        &route,
        &method,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn render(State(s): State<AppState>) -> Response {
    let m = &s.metrics;
    let mut out = String::new();
    out.push_str("# HELP strom_http_requests_total HTTP requests by route, method and status.\n");
    out.push_str("# TYPE strom_http_requests_total counter\n");
    for ((route, method, status), n) in m.requests.lock().iter() {
        let _ = writeln!(
            out,
            "strom_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
            escape(route)
        );
    }
    out.push_str("# HELP strom_http_request_duration_seconds HTTP request latency by route.\n");
    out.push_str("# TYPE strom_http_request_duration_seconds histogram\n");
    for (route, h) in m.latency.lock().iter() {
        let r = escape(route);
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "strom_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}",
                h.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "strom_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "strom_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "strom_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
            h.count
        );
    }
    for (name, help, map) in [
        (
            "strom_http_bytes_in_total",
            "Record batch bytes produced through the HTTP door, by topic.",
            &m.bytes_in,
        ),
        (
            "strom_http_bytes_out_total",
            "Record batch bytes fetched through the HTTP door, by topic.",
            &m.bytes_out,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (t, n) in map.lock().iter() {
            let _ = writeln!(out, "{name}{{topic=\"{}\"}} {n}", escape(t));
        }
    }
    let _ = writeln!(
        out,
        "# HELP strom_http_open_connections Open push connections of the HTTP door by kind."
    );
    let _ = writeln!(out, "# TYPE strom_http_open_connections gauge");
    let _ = writeln!(
        out,
        "strom_http_open_connections{{kind=\"websocket\"}} {}",
        m.websockets.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "strom_http_open_connections{{kind=\"sse\"}} {}",
        m.sse_streams.load(Ordering::Relaxed)
    );
    out.push_str("# HELP strom_http_topic_subscribers Push subscribers of a topic now (WebSocket subscriptions without a group, SSE streams).\n# TYPE strom_http_topic_subscribers gauge\n");
    for (topic, n) in m.subscribers.lock().iter() {
        let _ = writeln!(
            out,
            "strom_http_topic_subscribers{{topic=\"{}\"}} {n}",
            escape(topic)
        );
    }
    let _ = writeln!(
        out,
        "# HELP strom_http_ws_tails Shared followers of WebSocket subscribers from latest (one per topic, format and isolation followed).\n# TYPE strom_http_ws_tails gauge\nstrom_http_ws_tails {}",
        m.ws_tails.load(Ordering::Relaxed)
    );
    out.push_str("# HELP strom_http_connections_closed_total Connections the HTTP door closed, by reason (idle: no request for --connections-max-idle-ms; header_timeout: a request head unfinished after --read-timeout-ms; write_stalled: an answer not read for --connections-max-idle-ms; tls_handshake: a failed or unfinished TLS handshake with --http-tls true).\n# TYPE strom_http_connections_closed_total counter\n");
    for (reason, n) in m.closed.lock().iter() {
        let _ = writeln!(
            out,
            "strom_http_connections_closed_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP strom_http_authentication_failures_total Requests refused with 401: wrong, malformed, expired or missing credentials.\n# TYPE strom_http_authentication_failures_total counter\nstrom_http_authentication_failures_total {}",
        m.auth_failures.load(Ordering::Relaxed)
    );
    out.push_str("# HELP strom_http_buffer_bytes Bytes of HTTP answers reserved for their readers (fetches, group polls, WebSocket queues).\n# TYPE strom_http_buffer_bytes gauge\n");
    let _ = writeln!(out, "strom_http_buffer_bytes {}", s.budget.in_use());
    out.push_str("# HELP strom_http_buffer_limit_bytes The HTTP door's answer buffer (--http-buffer-bytes).\n# TYPE strom_http_buffer_limit_bytes gauge\n");
    let _ = writeln!(out, "strom_http_buffer_limit_bytes {}", s.budget.total());
    let mut starts = String::new();
    let mut ends = String::new();
    let mut sizes = String::new();
    let mut offline = String::new();
    let mut lso_lags = String::new();
    for info in s.broker.topics() {
        let Some(t) = s.broker.topic(&info.name) else {
            continue;
        };
        for p in t.partitions().iter() {
            let labels = format!(
                "topic=\"{}\",partition=\"{}\"",
                escape(&info.name),
                p.index()
            );
            let _ = writeln!(
                offline,
                "strom_partition_offline{{{labels}}} {}",
                u8::from(!p.is_online())
            );
            let Ok(log) = p.log() else { continue };
            let _ = writeln!(
                starts,
                "strom_log_start_offset{{{labels}}} {}",
                log.log_start_offset()
            );
            let _ = writeln!(
                ends,
                "strom_log_end_offset{{{labels}}} {}",
                log.log_end_offset()
            );
            let _ = writeln!(
                sizes,
                "strom_log_size_bytes{{{labels}}} {}",
                log.size_bytes()
            );
            if let Ok(lso) = p.last_stable_offset() {
                let _ = writeln!(
                    lso_lags,
                    "strom_last_stable_offset_lag{{{labels}}} {}",
                    (log.log_end_offset() - lso).max(0)
                );
            }
        }
    }
    out.push_str("# HELP strom_log_start_offset First offset still stored, per partition.\n# TYPE strom_log_start_offset gauge\n");
    out.push_str(&starts);
    out.push_str("# HELP strom_log_end_offset Log end offset (high watermark), per partition.\n# TYPE strom_log_end_offset gauge\n");
    out.push_str(&ends);
    out.push_str("# HELP strom_log_size_bytes Bytes stored, per partition.\n# TYPE strom_log_size_bytes gauge\n");
    out.push_str(&sizes);
    out.push_str("# HELP strom_partition_offline 1 if the partition is offline (its log could not be opened, or a sync failed), per partition.\n# TYPE strom_partition_offline gauge\n");
    out.push_str(&offline);
    out.push_str("# HELP strom_last_stable_offset_lag High watermark minus last stable offset (records held back from read_committed readers by open transactions), per partition.\n# TYPE strom_last_stable_offset_lag gauge\n");
    out.push_str(&lso_lags);
    core_metrics(&s, &mut out);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &strom_broker::metrics::Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, b) in strom_broker::metrics::BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
            h.counts[i]
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// What the core and the Kafka door record: requests per Kafka API, connections, bytes per
/// topic (every door), fsync latency, group rebalances and lag.
fn core_metrics(s: &AppState, out: &mut String) {
    let m = s.broker.metrics();
    out.push_str("# HELP strom_requests_total Requests by door and API.\n# TYPE strom_requests_total counter\n");
    let reqs = m.requests();
    for ((door, api), h) in &reqs {
        let _ = writeln!(
            out,
            "strom_requests_total{{door=\"{door}\",api=\"{api}\"}} {}",
            h.count
        );
    }
    out.push_str("# HELP strom_request_duration_seconds Request latency by door and API.\n# TYPE strom_request_duration_seconds histogram\n");
    for ((door, api), h) in &reqs {
        histogram(
            out,
            "strom_request_duration_seconds",
            &format!("door=\"{door}\",api=\"{api}\""),
            h,
        );
    }
    out.push_str("# HELP strom_open_connections Open connections by door.\n# TYPE strom_open_connections gauge\n");
    for (door, n) in m.connections() {
        let _ = writeln!(out, "strom_open_connections{{door=\"{door}\"}} {n}");
    }
    out.push_str("# HELP strom_connections_refused_total Connections refused by door (at its cap, or out of descriptors).\n# TYPE strom_connections_refused_total counter\n");
    for (door, n) in m.connections_refused() {
        let _ = writeln!(
            out,
            "strom_connections_refused_total{{door=\"{door}\"}} {n}"
        );
    }
    let bytes = m.topic_bytes();
    out.push_str("# HELP strom_topic_bytes_in_total Record batch bytes appended, by topic (all doors).\n# TYPE strom_topic_bytes_in_total counter\n");
    for (t, b) in &bytes {
        let _ = writeln!(
            out,
            "strom_topic_bytes_in_total{{topic=\"{}\"}} {}",
            escape(t),
            b.bytes_in
        );
    }
    out.push_str("# HELP strom_topic_bytes_out_total Record batch bytes fetched, by topic (all doors).\n# TYPE strom_topic_bytes_out_total counter\n");
    for (t, b) in &bytes {
        let _ = writeln!(
            out,
            "strom_topic_bytes_out_total{{topic=\"{}\"}} {}",
            escape(t),
            b.bytes_out
        );
    }
    let _ = writeln!(
        out,
        "# HELP strom_records_in_total Records appended.\n# TYPE strom_records_in_total counter"
    );
    let _ = writeln!(
        out,
        "strom_records_in_total {}",
        m.records_in.load(Ordering::Relaxed)
    );
    out.push_str("# HELP strom_fsync_duration_seconds fdatasync latency of produce acknowledgements.\n# TYPE strom_fsync_duration_seconds histogram\n");
    histogram(
        out,
        "strom_fsync_duration_seconds",
        "",
        &m.fsync_histogram(),
    );
    let _ = writeln!(
        out,
        "# HELP strom_delayed_records_pending Delayed records accepted and not yet appended to their partition.\n# TYPE strom_delayed_records_pending gauge\nstrom_delayed_records_pending {}",
        s.broker.delayed_pending()
    );
    let _ = writeln!(
        out,
        "# HELP strom_delayed_records_total Delayed records accepted since start.\n# TYPE strom_delayed_records_total counter\nstrom_delayed_records_total {}",
        m.delayed_accepted.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP strom_delayed_records_delivered_total Delayed records appended to their partition when due, since start.\n# TYPE strom_delayed_records_delivered_total counter\nstrom_delayed_records_delivered_total {}",
        m.delayed_delivered.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP strom_dedup_hits_total Records acknowledged with an earlier copy's offset because their strom.msg.id was in the dedup window (not stored).\n# TYPE strom_dedup_hits_total counter\nstrom_dedup_hits_total {}",
        m.dedup_hits.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP strom_transactions_open Transactions open (Ongoing, or being committed or aborted).\n# TYPE strom_transactions_open gauge\nstrom_transactions_open {}",
        m.txn_open.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP strom_transactions_commits_total Transactions committed since start.\n# TYPE strom_transactions_commits_total counter\nstrom_transactions_commits_total {}",
        m.txn_commits.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP strom_transactions_aborts_total Transactions aborted since start (EndTxn, timeouts, fencing by a new instance).\n# TYPE strom_transactions_aborts_total counter\nstrom_transactions_aborts_total {}",
        m.txn_aborts.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP strom_transactions_timed_out_total Transactions aborted because transaction.timeout.ms passed, since start.\n# TYPE strom_transactions_timed_out_total counter\nstrom_transactions_timed_out_total {}",
        m.txn_timed_out.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP strom_quota_throttled_requests_total Requests a client quota (producer_byte_rate, consumer_byte_rate) throttled, both doors.\n# TYPE strom_quota_throttled_requests_total counter\nstrom_quota_throttled_requests_total {}",
        m.quota_throttled.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP strom_quota_throttle_seconds_total Time requests were throttled by client quotas.\n# TYPE strom_quota_throttle_seconds_total counter\nstrom_quota_throttle_seconds_total {:.3}",
        m.quota_throttle_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
    let _ = writeln!(out, "# HELP strom_group_rebalances_total Consumer group rebalances completed.\n# TYPE strom_group_rebalances_total counter");
    let _ = writeln!(
        out,
        "strom_group_rebalances_total {}",
        s.groups.rebalances()
    );
    out.push_str("# HELP strom_group_lag Log end offset minus committed offset, by group and partition.\n# TYPE strom_group_lag gauge\n");
    for (group, _, _) in s.groups.list() {
        for (topic, partition, committed) in s.groups.fetch_offsets(&group, None) {
            let (Some(c), Ok(p)) = (committed, s.broker.partition(&topic, partition)) else {
                continue;
            };
            let Ok(log) = p.log() else { continue };
            let lag = (log.log_end_offset() - c.offset).max(0);
            let _ = writeln!(
                out,
                "strom_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {lag}",
                escape(&group),
                escape(&topic)
            );
        }
    }
    share_metrics(s, out);
    cleaner_metrics(s, out);
    replication_metrics(s, out);
}

/// The log cleaner: passes, bytes, records compacted away, the last pass's duration and
/// each compacted log's dirty ratio (internal logs: their name, partition -1).
/// Cluster mode: replication per partition led or followed here, ISR changes, and the
/// cluster's under-replicated and offline partition counts (from its metadata, the same on
/// every broker).
fn replication_metrics(s: &AppState, out: &mut String) {
    let Some(cluster) = s.broker.cluster() else {
        return;
    };
    let (stats, shrinks, expands) = s.broker.replication_stats();
    let _ = writeln!(
        out,
        "# HELP strom_isr_shrinks_total ISR shrinks of partitions led here.\n# TYPE strom_isr_shrinks_total counter\nstrom_isr_shrinks_total {shrinks}"
    );
    let _ = writeln!(
        out,
        "# HELP strom_isr_expands_total ISR expansions of partitions led here.\n# TYPE strom_isr_expands_total counter\nstrom_isr_expands_total {expands}"
    );
    out.push_str("# HELP strom_replica_lag_records Records the slowest replica lacks, per partition led here.\n# TYPE strom_replica_lag_records gauge\n");
    for r in stats.iter().filter(|r| r.leader) {
        let _ = writeln!(
            out,
            "strom_replica_lag_records{{topic=\"{}\",partition=\"{}\"}} {}",
            escape(&r.topic),
            r.partition,
            r.lag_records
        );
    }
    out.push_str("# HELP strom_partition_under_replicated 1 if the ISR is smaller than the replicas, per partition led here.\n# TYPE strom_partition_under_replicated gauge\n");
    for r in stats.iter().filter(|r| r.leader) {
        let _ = writeln!(
            out,
            "strom_partition_under_replicated{{topic=\"{}\",partition=\"{}\"}} {}",
            escape(&r.topic),
            r.partition,
            u8::from(r.isr < r.replicas)
        );
    }
    let meta = cluster.metadata();
    let (mut under, mut offline) = (0, 0);
    for t in meta.topics.values() {
        for a in &t.partitions {
            if a.leader < 0 || meta.node(a.leader).is_none() {
                offline += 1;
            } else if a.isr.len() < a.replicas.len() {
                under += 1;
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP strom_cluster_under_replicated_partitions Partitions of the cluster whose ISR is smaller than their replicas.\n# TYPE strom_cluster_under_replicated_partitions gauge\nstrom_cluster_under_replicated_partitions {under}"
    );
    let _ = writeln!(
        out,
        "# HELP strom_cluster_offline_partitions Partitions of the cluster without a live leader.\n# TYPE strom_cluster_offline_partitions gauge\nstrom_cluster_offline_partitions {offline}"
    );
    let _ = writeln!(
        out,
        "# HELP strom_cluster_brokers Live brokers of the cluster.\n# TYPE strom_cluster_brokers gauge\nstrom_cluster_brokers {}",
        meta.brokers.len()
    );
}

fn cleaner_metrics(s: &AppState, out: &mut String) {
    let (open, closed) = strom_log::open_files();
    let _ = writeln!(
        out,
        "# HELP strom_log_open_files Segment files (data and indexes) open now.\n# TYPE strom_log_open_files gauge\nstrom_log_open_files {open}\n\
         # HELP strom_log_open_files_max Segment files kept open at most (--log-max-open-files).\n# TYPE strom_log_open_files_max gauge\nstrom_log_open_files_max {}\n\
         # HELP strom_log_file_closes_total Segment files closed to stay within strom_log_open_files_max (opened again on their next use).\n# TYPE strom_log_file_closes_total counter\nstrom_log_file_closes_total {closed}",
        strom_log::open_files_budget()
    );
    let c = s.broker.cleaner_metrics();
    let _ = writeln!(
        out,
        "# HELP strom_log_cleaner_passes_total Log cleaner passes completed.\n# TYPE strom_log_cleaner_passes_total counter\nstrom_log_cleaner_passes_total {}",
        c.passes
    );
    let _ = writeln!(
        out,
        "# HELP strom_log_cleaner_bytes_cleaned_total Bytes of segments the log cleaner read (offset maps and rewrites).\n# TYPE strom_log_cleaner_bytes_cleaned_total counter\nstrom_log_cleaner_bytes_cleaned_total {}",
        c.bytes_cleaned
    );
    let _ = writeln!(
        out,
        "# HELP strom_log_cleaner_bytes_freed_total Bytes the log cleaner's rewrites freed.\n# TYPE strom_log_cleaner_bytes_freed_total counter\nstrom_log_cleaner_bytes_freed_total {}",
        c.bytes_freed
    );
    let _ = writeln!(
        out,
        "# HELP strom_log_cleaner_records_removed_total Records compacted away.\n# TYPE strom_log_cleaner_records_removed_total counter\nstrom_log_cleaner_records_removed_total {}",
        c.records_removed
    );
    let _ = writeln!(
        out,
        "# HELP strom_log_cleaner_last_pass_seconds Duration of the last log cleaner pass.\n# TYPE strom_log_cleaner_last_pass_seconds gauge\nstrom_log_cleaner_last_pass_seconds {}",
        c.last_pass_seconds
    );
    out.push_str("# HELP strom_log_cleaner_dirty_ratio Share of a compacted log not yet compacted (cleanable now), by topic and partition.\n# TYPE strom_log_cleaner_dirty_ratio gauge\n");
    for ((topic, partition), ratio) in &c.dirty_ratio {
        let _ = writeln!(
            out,
            "strom_log_cleaner_dirty_ratio{{topic=\"{}\",partition=\"{partition}\"}} {ratio}",
            escape(topic)
        );
    }
}

/// Per share group and partition: the in-flight window and the counters since start.
fn share_metrics(s: &AppState, out: &mut String) {
    let stats = s.shares.metrics();
    type Get = fn(&strom_broker::share::SharePartitionStats) -> u64;
    let series: [(&str, &str, &str, Get); 7] = [
        ("strom_share_in_flight", "gauge", "Records in the share-partition's in-flight window.", |p| p.in_flight as u64),
        ("strom_share_acquired", "gauge", "Records acquired (locked to a member) now.", |p| p.acquired as u64),
        ("strom_share_available", "gauge", "Records of the window available to acquire (or waiting out a retry backoff).", |p| p.available as u64),
        ("strom_share_lag", "gauge", "Records not yet finished: log end minus start offset minus finished records of the window.", |p| p.lag.max(0) as u64),
        ("strom_share_redeliveries_total", "counter", "Deliveries after a record's first, since start.", |p| p.redeliveries),
        ("strom_share_dead_lettered_total", "counter", "Records appended to the group's dead-letter topic, since start.", |p| p.dead_lettered),
        ("strom_share_lock_expiries_total", "counter", "Acquisition locks that expired, since start.", |p| p.lock_expiries),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &stats {
            let _ = writeln!(
                out,
                "{name}{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
                escape(&p.group),
                escape(&p.topic),
                p.partition,
                get(p)
            );
        }
    }
}
