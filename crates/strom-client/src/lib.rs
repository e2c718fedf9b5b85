//! `strom-client`: a small async Kafka client (the native Rust client of Strom).
//!
//! - [`conn::Connection`]: one TCP connection with pipelined requests (correlation ids,
//!   a writer task and a reader task), typed on the `kafka-protocol` messages.
//! - [`client::Client`]: bootstrap, ApiVersions negotiation, metadata, admin calls,
//!   produce of pre-encoded batches, fetch, ListOffsets.
//! - [`partitioner`]: Kafka's default murmur2 key partitioner.
//! - [`records`]: record batch encoding/decoding helpers.
//! - [`share`]: a share-group member (KIP-932): ShareGroupHeartbeat, ShareFetch in a share
//!   session with piggy-backed acknowledgements, ShareAcknowledge, close.
//! - [`pacing`]: sub-millisecond sleeps for fixed-rate load.

pub mod client;
pub mod conn;
pub mod consumer;
pub mod groups;
pub mod pacing;
pub mod partitioner;
pub mod records;
pub mod security;
pub mod share;

#[cfg(feature = "cli")]
pub mod cli;

pub use client::{Client, FetchedPartition, GroupListing, PartitionInfo, TopicInfo};
pub use conn::Connection;
pub use groups::{GroupDescription, GroupMember};

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the broker")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("broker does not support {0}")]
    Unsupported(&'static str),
    #[error("broker error {code} ({name}){context}")]
    Broker {
        code: i16,
        name: &'static str,
        context: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("timed out")]
    Timeout,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds a broker error from a Kafka error code, with some context ("topic t").
    pub fn broker(code: i16, context: impl Into<String>) -> Self {
        let context = context.into();
        Error::Broker {
            code,
            name: error_name(code),
            context: if context.is_empty() {
                String::new()
            } else {
                format!(": {context}")
            },
        }
    }
}

/// Returns `Ok(())` for code 0, else a broker error.
pub fn check(code: i16, context: impl FnOnce() -> String) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::broker(code, context()))
    }
}

/// Human name of the Kafka error codes a client commonly sees.
pub fn error_name(code: i16) -> &'static str {
    match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        4 => "INVALID_FETCH_SIZE",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        22 => "ILLEGAL_GENERATION",
        25 => "UNKNOWN_MEMBER_ID",
        27 => "REBALANCE_IN_PROGRESS",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        40 => "INVALID_CONFIG",
        42 => "INVALID_REQUEST",
        45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        46 => "DUPLICATE_SEQUENCE_NUMBER",
        68 => "NON_EMPTY_GROUP",
        69 => "GROUP_ID_NOT_FOUND",
        87 => "INVALID_RECORD",
        110 => "FENCED_MEMBER_EPOCH",
        121 => "INVALID_RECORD_STATE",
        122 => "SHARE_SESSION_NOT_FOUND",
        123 => "INVALID_SHARE_SESSION_EPOCH",
        124 => "FENCED_STATE_EPOCH",
        125 => "INVALID_VOTER_KEY",
        _ => "KAFKA_ERROR",
    }
}
