//! Core errors to Kafka error codes.

use kafka_protocol::ResponseError as E;
use strom_broker::producer::ProducerStateError;
use strom_broker::BrokerError;
use strom_log::{BatchError, LogError};

/// The Kafka error code for a core error.
pub(crate) fn code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::TopicAlreadyExists(_) => E::TopicAlreadyExists.code(),
        BrokerError::InvalidTopic { .. } => E::InvalidTopicException.code(),
        BrokerError::UnknownTopicOrPartition { .. } => E::UnknownTopicOrPartition.code(),
        BrokerError::InvalidPartitions(_) => E::InvalidPartitions.code(),
        BrokerError::InvalidConfig(_) => E::InvalidConfig.code(),
        BrokerError::Log(l) => match l {
            LogError::Batch(b) => match b {
                BatchError::Corrupt(_) => E::CorruptMessage.code(),
                BatchError::UnsupportedMagic(_) => E::UnsupportedForMessageFormat.code(),
                BatchError::Invalid(_) | BatchError::InvalidRecord { .. } => {
                    E::InvalidRecord.code()
                }
                BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. } => {
                    E::MessageTooLarge.code()
                }
            },
            // Stored bytes the log could not read back.
            LogError::CorruptBatch(_) => E::CorruptMessage.code(),
            LogError::RecordSetTooLarge { .. } => E::RecordListTooLarge.code(),
            LogError::OffsetOutOfRange { .. } | LogError::NotContiguous { .. } => {
                E::OffsetOutOfRange.code()
            }
            LogError::Config(_) => E::InvalidRequest.code(),
            // A partition closed under a request: its topic is being deleted.
            LogError::Closed => E::UnknownTopicOrPartition.code(),
            // Disk full, an I/O error, a log offline after a failed sync: as Kafka answers
            // for a partition on a failed log directory.
            LogError::Io(_) | LogError::Failed(_) | LogError::Damaged(_) => {
                E::KafkaStorageError.code()
            }
        },
        BrokerError::PartitionOffline { .. } => E::KafkaStorageError.code(),
        BrokerError::Producer(p) => match p {
            ProducerStateError::OutOfOrderSequence { .. } => E::OutOfOrderSequenceNumber.code(),
            ProducerStateError::InvalidProducerEpoch { .. } => E::InvalidProducerEpoch.code(),
            ProducerStateError::UnknownProducerId(_) => E::UnknownProducerId.code(),
            ProducerStateError::InvalidBatch(_) => E::InvalidRecord.code(),
        },
        BrokerError::Transaction(t) => crate::txn_api::txn_code(t),
        BrokerError::InvalidTimestamp(_) => E::InvalidTimestamp.code(),
        BrokerError::ShuttingDown | BrokerError::NotLeader { .. } => E::NotLeaderOrFollower.code(),
        BrokerError::FencedLeaderEpoch { .. } => E::FencedLeaderEpoch.code(),
        BrokerError::UnknownLeaderEpoch { .. } => E::UnknownLeaderEpoch.code(),
        BrokerError::NotEnoughReplicas { .. } => E::NotEnoughReplicas.code(),
        BrokerError::NotEnoughReplicasAfterAppend { .. } => E::NotEnoughReplicasAfterAppend.code(),
        BrokerError::ReplicationTimeout { .. } => E::RequestTimedOut.code(),
        BrokerError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor.code(),
        BrokerError::InvalidReplicaAssignment(_) => E::InvalidReplicaAssignment.code(),
        BrokerError::NoReassignmentInProgress { .. } => E::NoReassignmentInProgress.code(),
        BrokerError::ElectionNotPossible {
            preferred: true, ..
        } => E::PreferredLeaderNotAvailable.code(),
        BrokerError::ElectionNotPossible { .. } => E::EligibleLeadersNotAvailable.code(),
        BrokerError::Cluster(_) => E::UnknownServerError.code(),
        BrokerError::Io(_) => E::KafkaStorageError.code(),
    }
}

/// The record at fault in a refused produce (KIP-467 `record_errors`): its index within
/// its batch and what is wrong with it.
pub(crate) fn record_error(e: &BrokerError) -> Option<(i32, &str)> {
    match e {
        BrokerError::Log(LogError::Batch(b)) => b.record_error(),
        _ => None,
    }
}

/// Error code and message for a result.
pub(crate) fn code_msg<T>(r: &Result<T, BrokerError>) -> (i16, Option<String>) {
    match r {
        Ok(_) => (0, None),
        Err(e) => (code(e), Some(e.to_string())),
    }
}
