//! # strom-broker: Strom's transport-agnostic core
//!
//! Topics and partitions over [`strom_log`], produce (with idempotent-producer checks) and
//! fetch (with long polling), offsets by time, topic configs under Kafka's names, producer
//! ids. Every door (Kafka wire, HTTP, gRPC) translates its requests into calls on
//! [`Broker`]; this crate knows no wire format.
//!
//! ## Invariants
//! - Record batches stay opaque bytes: the core reads batch headers, never rebuilds records
//!   — except a batch in which the validator saw a `strom.` header (delay, dedup; see
//!   [`reserved`]), whose records are read and, when some are delayed or duplicates,
//!   rebuilt.
//! - Per partition, the idempotence check, the append and the producer-state update happen
//!   under one lock; a produce is acknowledged only once the topic's flush policy is met.
//! - Topic metadata is replaced atomically and durably before a change is visible.

pub mod admin;
pub mod broker;
pub mod cleaner;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod dedup;
pub mod delay;
pub mod error;
mod kvlog;
pub mod limits;
pub mod metrics;
mod parallel;
pub mod producer;
pub mod quota;
pub mod records;
pub mod replica;
pub mod reserved;
pub mod security;
pub mod share;
pub mod topic;
pub mod txn;

pub use broker::{
    AbortedTxn, Broker, ConfigOp, FetchLimits, FetchSpec, FetchedPartition, Isolation,
    PendingFlush, ProduceAck, TopicInfo, TxnMarker,
};
pub use config::{BrokerConfig, TopicConfig};
pub use error::{BrokerError, Result};
pub use producer::{AbortedFilter, ProducerInfo};
pub use strom_log;
pub use topic::{Partition, Topic};
