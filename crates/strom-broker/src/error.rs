//! The core's typed errors. Each door maps them to its own codes.

use std::io;

use strom_log::LogError;

use crate::producer::ProducerStateError;

/// Why a broker operation failed. Input errors change nothing.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// CreateTopics for a name that exists.
    #[error("topic {0:?} already exists")]
    TopicAlreadyExists(String),
    /// A topic name Kafka would refuse.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such topic, or no such partition in it.
    #[error("unknown topic or partition: {}", if *partition < 0 { format!("topic {topic:?}") } else { format!("{topic:?} partition {partition}") })]
    UnknownTopicOrPartition {
        /// The topic.
        topic: String,
        /// The partition (-1 when the topic itself is unknown).
        partition: i32,
    },
    /// A partition count out of range, or one that would shrink a topic.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// An unknown config name or an invalid value.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The storage engine refused or failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A partition whose log could not be opened at start (damaged or missing files, an
    /// I/O error): it is listed but serves nothing until the cause is fixed and the broker
    /// restarted.
    #[error("partition {topic}-{partition} is offline: {reason}")]
    PartitionOffline {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Why its log could not be opened.
        reason: String,
    },
    /// The idempotent producer checks refused a batch.
    #[error(transparent)]
    Producer(#[from] ProducerStateError),
    /// A batch's timestamp is outside `message.timestamp.before.max.ms` /
    /// `message.timestamp.after.max.ms` of the broker's time (Kafka's INVALID_TIMESTAMP).
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    /// The broker is shutting down.
    /// Refused by the transaction coordinator (see [`crate::txn`]).
    #[error(transparent)]
    Transaction(#[from] crate::txn::TxnError),

    #[error("the broker is shutting down")]
    ShuttingDown,
    /// Cluster mode: the partition is not led by this broker (Kafka's
    /// NOT_LEADER_OR_FOLLOWER, with the leader this broker knows, -1 if none).
    #[error(
        "this broker does not lead {topic}-{partition} (leader {leader}, epoch {leader_epoch})"
    )]
    NotLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The leader this broker knows (-1: none).
        leader: i32,
        /// Its leader epoch.
        leader_epoch: i32,
    },
    /// A request of an older leader epoch than this broker's (FENCED_LEADER_EPOCH).
    #[error("leader epoch of {topic}-{partition} is {leader_epoch}: the request's is older")]
    FencedLeaderEpoch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The current epoch.
        leader_epoch: i32,
    },
    /// A request of a newer leader epoch than this broker knows (UNKNOWN_LEADER_EPOCH).
    #[error("leader epoch of {topic}-{partition} is {leader_epoch}: the request's is newer")]
    UnknownLeaderEpoch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The current epoch.
        leader_epoch: i32,
    },
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`: nothing written.
    #[error("{topic}-{partition} has {isr} in-sync replicas, min.insync.replicas is {min}")]
    NotEnoughReplicas {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// In-sync replicas now.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min: i32,
    },
    /// The ISR shrank below `min.insync.replicas` after the append (written, not
    /// acknowledged: the producer retries).
    #[error("{topic}-{partition} has {isr} in-sync replicas after the append, min.insync.replicas is {min}")]
    NotEnoughReplicasAfterAppend {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// In-sync replicas now.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min: i32,
    },
    /// The in-sync replicas did not copy an acks=all produce in time (REQUEST_TIMED_OUT).
    #[error("{topic}-{partition}: offset {offset} was not replicated to the ISR in time")]
    ReplicationTimeout {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset waited for.
        offset: i64,
    },
    /// A replication factor the live brokers cannot satisfy, or replica assignments that
    /// name brokers twice or unknown ones (INVALID_REPLICATION_FACTOR / INVALID_REPLICA_ASSIGNMENT).
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// Replicas of a reassignment that are empty, repeated or not live brokers
    /// (INVALID_REPLICA_ASSIGNMENT).
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// A cancellation of a partition that is not being reassigned.
    #[error("no reassignment is in progress for {topic}-{partition}")]
    NoReassignmentInProgress {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// ElectLeaders could not elect: the preferred replica is not live and in sync
    /// (PREFERRED_LEADER_NOT_AVAILABLE), or no replica is live (ELIGIBLE_LEADERS_NOT_AVAILABLE).
    #[error("no leader can be elected: {reason}")]
    ElectionNotPossible {
        /// Whether a preferred election was asked for.
        preferred: bool,
        /// Why not.
        reason: String,
    },
    /// Cluster mode: the cluster's metadata store refused or failed the change.
    #[error("cluster metadata: {0}")]
    Cluster(String),
    /// A file-system failure outside the log.
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

impl BrokerError {
    /// Whether the disk (or quota) is full: nothing was written, and the same request may
    /// succeed once space is freed.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            BrokerError::Log(e) => e.is_out_of_space(),
            BrokerError::Io(e) => matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
            _ => false,
        }
    }

    /// Whether the partition is offline: not opened at start, or its log failed a sync.
    /// Until a restart every request to it gets this error.
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            BrokerError::PartitionOffline { .. }
                | BrokerError::Log(LogError::Failed(_) | LogError::Damaged(_))
        )
    }

    /// Whether the file system failed under the request (disk full, I/O error, out of
    /// descriptors), as opposed to a refused input or an offline partition.
    pub fn is_io(&self) -> bool {
        matches!(self, BrokerError::Io(_) | BrokerError::Log(LogError::Io(_)))
    }

    pub(crate) fn unknown(topic: &str, partition: i32) -> BrokerError {
        BrokerError::UnknownTopicOrPartition {
            topic: topic.to_string(),
            partition,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
