//! Per-log settings, named after Kafka's topic configs.

/// Whose clock stamps a batch: the producer's (`CreateTime`) or the broker's (`LogAppendTime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps (Kafka's default).
    #[default]
    CreateTime,
    /// Overwrite the batch's max timestamp with the append time.
    LogAppendTime,
}

/// Settings of one log. Every size and count has a bound; see [`LogConfig::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment once the active one would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty active segment older than this.
    pub segment_ms: u64,
    /// `segment.jitter.ms`: each segment rolls up to this much earlier than `segment_ms`
    /// (an amount drawn at random per segment, below `segment_ms`), so that partitions
    /// created together do not all roll at once. 0: exactly at `segment_ms`.
    pub segment_jitter_ms: u64,
    /// `index.interval.bytes`: bytes of data between two sparse index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_batch_bytes: u64,
    /// `retention.ms`: delete sealed segments whose newest record is older; `None` keeps all.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete the oldest sealed segments while the log is larger; `None` keeps all.
    pub retention_bytes: Option<u64>,
    /// `flush.messages`: fdatasync once this many messages are unflushed; `None` leaves it to the OS.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fdatasync data older than this (driven by [`crate::Log::flush_if_due`]).
    pub flush_ms: Option<u64>,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// Partition leader epoch stamped into each appended batch.
    pub leader_epoch: i32,
}

/// Kafka's `segment.bytes` default: 1 GiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Positions in the offset index are 32-bit, so a segment can never be larger.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Smallest segment Kafka allows (`segment.bytes` >= 14 bytes in Kafka; we want room for a header).
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// Kafka's `max.message.bytes` default.
pub const MAX_BATCH_BYTES_DEFAULT: u64 = 1_048_588;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_jitter_ms: 0,
            index_interval_bytes: 4096,
            max_batch_bytes: MAX_BATCH_BYTES_DEFAULT,
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            retention_bytes: None,
            flush_messages: None,
            flush_ms: None,
            timestamp_type: TimestampType::CreateTime,
            leader_epoch: 0,
        }
    }
}

impl LogConfig {
    /// Whether a non-empty active segment `age_ms` old is due to roll by time, `seed` being
    /// the segment's own random number (Kafka's roll: `segment.ms` less the segment's jitter,
    /// `seed % min(segment.jitter.ms, segment.ms)`).
    pub fn roll_due(&self, age_ms: i64, seed: u64) -> bool {
        let jitter = match self.segment_jitter_ms.min(self.segment_ms) {
            0 => 0,
            j => seed % j,
        };
        age_ms >= self.segment_ms.saturating_sub(jitter) as i64
    }

    /// Checks the bounds; the error names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(format!(
                "segment.bytes must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}"
            ));
        }
        if self.segment_ms == 0 {
            return Err("segment.ms must be positive".into());
        }
        if self.index_interval_bytes == 0 {
            return Err("index.interval.bytes must be positive".into());
        }
        if self.max_batch_bytes == 0 || self.max_batch_bytes > SEGMENT_BYTES_MAX {
            return Err(format!(
                "max.message.bytes must be between 1 and {SEGMENT_BYTES_MAX}"
            ));
        }
        if self.flush_messages == Some(0) {
            return Err("flush.messages must be positive".into());
        }
        Ok(())
    }
}
