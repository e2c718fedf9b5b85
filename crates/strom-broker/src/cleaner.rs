//! The background log cleaner: picks the dirtiest compacted log and runs one
//! [`strom_log::Log::clean`] pass on it, over and over (`log.cleaner.threads` of them at
//! once, each on its own log with its share of `log.cleaner.dedupe.buffer.size`), sleeping
//! `log.cleaner.backoff.ms` when no log is due.
//!
//! Compacted logs: every online partition of a topic whose `cleanup.policy` includes
//! `compact` (with the topic's `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`,
//! `max.compaction.lag.ms`, `delete.retention.ms`), and the internal key/value logs
//! registered with [`Broker::add_compacted_log`] (the classic groups' `.strom/groups/`, with
//! Kafka's defaults for `__consumer_offsets`). The share groups' `.strom/share/` is not one:
//! its records amend each other (snapshot + deltas), so keeping the last record per key
//! would lose state; it stays bounded by rewriting itself into a new generation.
//!
//! Passes run on blocking threads (`spawn_blocking`), yield between segments, and never
//! hold a lock the data path waits on for longer than a segment's swap (see
//! `strom-log/src/cleaner.rs`). `STROM_TEST_CLEANER_PAUSE_MS` (tests only) sleeps that long
//! before each segment, so that a test can kill the broker in the middle of a pass.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strom_log::{now_ms, CleanOptions, Log};

use crate::broker::Broker;
use crate::topic::Partition;

/// The cleaner's state in the broker: the internal logs it compacts, the logs being
/// cleaned, its metrics.
#[derive(Default)]
pub struct Cleaner {
    internal: Mutex<Vec<(String, Arc<Log>, CleanOptions)>>,
    busy: Mutex<HashSet<PathBuf>>,
    metrics: CleanerMetrics,
}

/// What the cleaner did since start, for `/metrics`.
#[derive(Default)]
pub struct CleanerMetrics {
    passes: AtomicU64,
    bytes_cleaned: AtomicU64,
    bytes_freed: AtomicU64,
    records_removed: AtomicU64,
    last_pass_us: AtomicU64,
    /// Dirty ratio per log, by name (`topic-partition`, or the internal log's name).
    dirty: Mutex<BTreeMap<(String, i32), f64>>,
}

/// A copy of the cleaner's metrics.
#[derive(Clone, Debug, Default)]
pub struct CleanerSnapshot {
    /// Passes completed.
    pub passes: u64,
    /// Bytes of segments read by passes (offset map and rewrite).
    pub bytes_cleaned: u64,
    /// Bytes the rewrites freed.
    pub bytes_freed: u64,
    /// Records compacted away.
    pub records_removed: u64,
    /// Duration of the last pass, seconds.
    pub last_pass_seconds: f64,
    /// Dirty ratio per `(topic, partition)`; internal logs have partition -1.
    pub dirty_ratio: BTreeMap<(String, i32), f64>,
}

/// One log the cleaner may work on.
enum Target {
    Partition {
        topic: String,
        partition: Arc<Partition>,
        opts: CleanOptions,
    },
    Internal {
        name: String,
        log: Arc<Log>,
        opts: CleanOptions,
    },
}

impl Target {
    fn with_log<T>(&self, f: impl FnOnce(&Log) -> T) -> Option<T> {
        match self {
            Target::Partition { partition, .. } => partition.online().ok().map(|o| f(&o.log)),
            Target::Internal { log, .. } => Some(f(log)),
        }
    }
    fn opts(&self) -> &CleanOptions {
        match self {
            Target::Partition { opts, .. } | Target::Internal { opts, .. } => opts,
        }
    }
    fn key(&self) -> (String, i32) {
        match self {
            Target::Partition {
                topic, partition, ..
            } => (topic.clone(), partition.index()),
            Target::Internal { name, .. } => (name.clone(), -1),
        }
    }
}

impl Broker {
    /// Registers an internal key/value log (records replace earlier ones of their key,
    /// tombstones delete) for the cleaner to compact with Kafka's defaults.
    pub fn add_compacted_log(&self, name: &str, log: Arc<Log>) {
        let opts = CleanOptions {
            dedupe_buffer_bytes: self.cleaner_share(),
            ..CleanOptions::default()
        };
        self.cleaner()
            .internal
            .lock()
            .push((name.to_string(), log, opts));
    }

    /// What the cleaner did since start.
    pub fn cleaner_metrics(&self) -> CleanerSnapshot {
        let m = &self.cleaner().metrics;
        CleanerSnapshot {
            passes: m.passes.load(Ordering::Relaxed),
            bytes_cleaned: m.bytes_cleaned.load(Ordering::Relaxed),
            bytes_freed: m.bytes_freed.load(Ordering::Relaxed),
            records_removed: m.records_removed.load(Ordering::Relaxed),
            last_pass_seconds: m.last_pass_us.load(Ordering::Relaxed) as f64 / 1e6,
            dirty_ratio: m.dirty.lock().clone(),
        }
    }

    /// Each cleaner thread's share of `log.cleaner.dedupe.buffer.size`.
    fn cleaner_share(&self) -> usize {
        let c = self.config();
        c.log_cleaner_dedupe_buffer_size / c.log_cleaner_threads.max(1)
    }

    /// Runs the cleaner threads until shutdown.
    pub async fn run_cleaner(self: Arc<Self>) {
        let threads = self.config().log_cleaner_threads.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..threads {
            let me = self.clone();
            tasks.spawn(async move {
                let backoff = Duration::from_millis(me.config().log_cleaner_backoff_ms.max(1));
                while !me.is_closed() {
                    let b = me.clone();
                    let cleaned = tokio::task::spawn_blocking(move || b.clean_dirtiest())
                        .await
                        .unwrap_or(false);
                    if !cleaned {
                        tokio::time::sleep(backoff).await;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Every compacted log, with its options.
    fn clean_targets(&self) -> Vec<Target> {
        let share = self.cleaner_share();
        let mut out = Vec::new();
        for t in self.topic_list() {
            let config = t.config();
            if !config.compact() {
                continue;
            }
            let opts = config.clean_options(share);
            for p in t.partitions().iter() {
                out.push(Target::Partition {
                    topic: t.name().to_string(),
                    partition: p.clone(),
                    opts,
                });
            }
        }
        for (name, log, opts) in self.cleaner().internal.lock().iter() {
            out.push(Target::Internal {
                name: name.clone(),
                log: log.clone(),
                opts: *opts,
            });
        }
        out
    }

    /// One pass on the dirtiest log that is due; whether there was one.
    pub fn clean_dirtiest(&self) -> bool {
        let now = now_ms();
        let cleaner = self.cleaner();
        let mut best: Option<(f64, Target)> = None;
        let mut ratios = BTreeMap::new();
        for t in self.clean_targets() {
            let Some(Ok(stats)) = t.with_log(|l| l.cleaner_stats(t.opts(), now)) else {
                continue;
            };
            ratios.insert(t.key(), stats.dirty_ratio);
            let dir = t.with_log(|l| l.dir().to_path_buf());
            if !stats.due || dir.is_none_or(|d| cleaner.busy.lock().contains(&d)) {
                continue;
            }
            if best.as_ref().is_none_or(|(r, _)| stats.dirty_ratio > *r) {
                best = Some((stats.dirty_ratio, t));
            }
        }
        *cleaner.metrics.dirty.lock() = ratios;
        let Some((_, target)) = best else {
            return false;
        };
        let Some(dir) = target.with_log(|l| l.dir().to_path_buf()) else {
            return false;
        };
        if !cleaner.busy.lock().insert(dir.clone()) {
            return false;
        }
        let pause = test_pause();
        let started = Instant::now();
        let result = target.with_log(|log| {
            log.clean(target.opts(), now, &mut || {
                if let Some(p) = pause {
                    std::thread::sleep(p);
                }
                // Low priority: let the data path's threads run between segments.
                std::thread::yield_now();
                !self.is_closed()
            })
        });
        cleaner.busy.lock().remove(&dir);
        let (name, partition) = target.key();
        match result {
            Some(Ok(out)) => {
                let m = &cleaner.metrics;
                m.passes.fetch_add(1, Ordering::Relaxed);
                m.bytes_cleaned.fetch_add(out.bytes_read, Ordering::Relaxed);
                m.bytes_freed.fetch_add(
                    out.bytes_before.saturating_sub(out.bytes_after),
                    Ordering::Relaxed,
                );
                m.records_removed
                    .fetch_add(out.records_removed, Ordering::Relaxed);
                m.last_pass_us
                    .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                tracing::info!(
                    log = %name,
                    partition,
                    segments = out.segments_rewritten,
                    records_removed = out.records_removed,
                    bytes_before = out.bytes_before,
                    bytes_after = out.bytes_after,
                    clean_to = out.clean_to,
                    ms = started.elapsed().as_millis() as u64,
                    "log cleaner pass"
                );
                // Go on at once while there is more to do; else back off.
                (out.segments_rewritten > 0 || out.partial) && !out.stopped
            }
            Some(Err(e)) => {
                tracing::error!(log = %name, partition, error = %e, "log cleaner pass failed");
                false
            }
            None => false,
        }
    }
}

/// `STROM_TEST_CLEANER_PAUSE_MS`: a sleep before each segment of a pass (tests only).
fn test_pause() -> Option<Duration> {
    std::env::var("STROM_TEST_CLEANER_PAUSE_MS")
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

/// Refuses a produce to a compacted topic that holds a record without a key, as Kafka does:
/// INVALID_RECORD with that record's KIP-467 error; nothing of the batches is stored.
pub(crate) fn check_keys(records: &[u8], topic: &str, partition: i32) -> crate::Result<()> {
    let buf = bytes::Bytes::copy_from_slice(records);
    for (pos, h) in strom_records::headers(&buf) {
        let whole = buf.slice(pos..pos + h.total_len());
        let rs = strom_records::records(&whole).map_err(strom_log::LogError::from)?;
        for (index, r) in rs.enumerate() {
            let r = r.map_err(strom_log::LogError::from)?;
            if r.key.is_none() {
                return Err(strom_log::LogError::from(strom_records::BatchError::InvalidRecord {
                    index: index as i32,
                    message: format!(
                        "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
                    ),
                })
                .into());
            }
        }
    }
    Ok(())
}
