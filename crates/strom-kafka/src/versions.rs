//! The APIs and versions this door implements, as advertised in ApiVersions.
//!
//! One release level: every range ends at Kafka 4.1's maximum (recorded in
//! `kafka-4.1-api-versions.txt`, the 4.1.0 schemas' stable versions as the `kafka-protocol`
//! crate is generated from them) and starts at 4.1's minimum, or lower for the versions
//! Kafka 4 removed (KIP-896) that old clients still send ([`LEGACY_MIN`]); `legacy` rewrites
//! those to the crate's lowest version. The share-group APIs are the exception, at Kafka
//! 4.2's ShareFetch / ShareAcknowledge v2 ([`AHEAD_OF_4_1`]). The unit tests hold the table
//! to that, and to the dispatch table in `server` (one handler per row, one row per handler).

use kafka_protocol::messages::ApiKey;

/// `(api, min, max)` for every API served.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 13),
    (ApiKey::Fetch, 0, 18),
    (ApiKey::ListOffsets, 0, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // KIP-848 consumer groups, as Kafka 4.1.
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    // KIP-932 share groups, as Kafka 4.2: ShareFetch / ShareAcknowledge v2 are decoded as
    // the crate's v1 plus their one added field (`share_wire`).
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareGroupDescribe, 1, 1),
    (ApiKey::ShareFetch, 1, 2),
    (ApiKey::ShareAcknowledge, 1, 2),
    (ApiKey::DescribeShareGroupOffsets, 0, 0),
    (ApiKey::AlterShareGroupOffsets, 0, 0),
    (ApiKey::DeleteShareGroupOffsets, 0, 0),
    // Transactions, as Kafka 4.1 (EndTxn v5 / Produce v12: transactions v2, KIP-890).
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    // Admin APIs of Kafka 4 tools, at Kafka 4.1's ranges (`admin2`).
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::ListConfigResources, 0, 1),
    (ApiKey::GetTelemetrySubscriptions, 0, 0),
    (ApiKey::PushTelemetry, 0, 0),
    // SASL (`sasl`), at Kafka 4.1's ranges.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // ACLs (`acl_api`), at Kafka 4.1's ranges.
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// The versions below Kafka 4.1's minimum still served, from this version (KIP-896's
/// removed versions: Produce v0-2, Fetch v0-3, ListOffsets v0, OffsetCommit v0-1,
/// OffsetFetch v0, CreateTopics v0-1, DeleteTopics v0, DescribeConfigs v0).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) const LEGACY_MIN: &[(ApiKey, i16)] = &[
    (ApiKey::Produce, 0),
    (ApiKey::Fetch, 0),
    (ApiKey::ListOffsets, 0),
    (ApiKey::OffsetCommit, 0),
    (ApiKey::OffsetFetch, 0),
    (ApiKey::CreateTopics, 0),
    (ApiKey::DeleteTopics, 0),
    (ApiKey::DescribeConfigs, 0),
];

/// APIs served above Kafka 4.1's maximum, at this version (Kafka 4.2's share groups).
#[cfg(test)]
pub(crate) const AHEAD_OF_4_1: &[(ApiKey, i16)] =
    &[(ApiKey::ShareFetch, 2), (ApiKey::ShareAcknowledge, 2)];

/// The version range served for `key`, if any.
pub(crate) fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// A static name for metrics labels.
pub(crate) fn name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        ApiKey::ShareGroupHeartbeat => "ShareGroupHeartbeat",
        ApiKey::ShareGroupDescribe => "ShareGroupDescribe",
        ApiKey::ShareFetch => "ShareFetch",
        ApiKey::ShareAcknowledge => "ShareAcknowledge",
        ApiKey::DescribeShareGroupOffsets => "DescribeShareGroupOffsets",
        ApiKey::AlterShareGroupOffsets => "AlterShareGroupOffsets",
        ApiKey::DeleteShareGroupOffsets => "DeleteShareGroupOffsets",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::EndTxn => "EndTxn",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        ApiKey::DescribeTransactions => "DescribeTransactions",
        ApiKey::ListTransactions => "ListTransactions",
        ApiKey::DescribeProducers => "DescribeProducers",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::AlterReplicaLogDirs => "AlterReplicaLogDirs",
        ApiKey::DescribeTopicPartitions => "DescribeTopicPartitions",
        ApiKey::ElectLeaders => "ElectLeaders",
        ApiKey::AlterPartitionReassignments => "AlterPartitionReassignments",
        ApiKey::ListPartitionReassignments => "ListPartitionReassignments",
        ApiKey::DescribeQuorum => "DescribeQuorum",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeClientQuotas => "DescribeClientQuotas",
        ApiKey::AlterClientQuotas => "AlterClientQuotas",
        ApiKey::ListConfigResources => "ListConfigResources",
        ApiKey::GetTelemetrySubscriptions => "GetTelemetrySubscriptions",
        ApiKey::PushTelemetry => "PushTelemetry",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        ApiKey::DescribeAcls => "DescribeAcls",
        ApiKey::CreateAcls => "CreateAcls",
        ApiKey::DeleteAcls => "DeleteAcls",
        _ => "other",
    }
}

/// The lowest version the crate can decode (below it, `legacy` answers).
pub(crate) fn decodable_min(key: ApiKey) -> i16 {
    key.valid_versions().min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_is_within_what_the_crate_encodes() {
        for &(key, min, max) in SUPPORTED {
            let v = key.valid_versions();
            // v2 of these two is the door's own (share_wire).
            let own_v2 = matches!(key, ApiKey::ShareFetch | ApiKey::ShareAcknowledge);
            assert!(
                max <= v.max || own_v2 && max == 2,
                "{key:?} max {max} > crate {}",
                v.max
            );
            let legacy = LEGACY_MIN.iter().any(|&(k, _)| k == key);
            assert!(
                legacy || min >= v.min,
                "{key:?} min {min} < crate {}",
                v.min
            );
        }
    }

    /// Kafka 4.1's ApiVersions ranges as recorded: `(api key, min, max)`.
    fn kafka_4_1() -> Vec<(i16, i16, i16)> {
        include_str!("kafka-4.1-api-versions.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 4, "bad line {l:?}");
                let n = |i: usize| f[i].parse::<i16>().unwrap();
                let key = ApiKey::try_from(n(0)).unwrap();
                assert_eq!(format!("{key:?}"), f[1], "line {l:?}");
                (n(0), n(2), n(3))
            })
            .collect()
    }

    #[test]
    fn the_recording_agrees_with_the_crates_schemas() {
        let recorded = kafka_4_1();
        assert!(recorded.len() > 60, "{} APIs recorded", recorded.len());
        for &(key, min, max) in &recorded {
            let key = ApiKey::try_from(key).unwrap();
            let v = key.valid_versions();
            // Produce from v0: Kafka 4 advertises it so (KAFKA-18659).
            let want_min = if key == ApiKey::Produce { 0 } else { v.min };
            assert_eq!(min, want_min, "{key:?}");
            // The crate lists a version 4.1 marks unstable (not advertised) too.
            assert!(max == v.max || max + 1 == v.max, "{key:?}");
        }
    }

    #[test]
    fn every_advertised_range_is_kafka_4_1s() {
        let recorded = kafka_4_1();
        for &(key, min, max) in SUPPORTED {
            let (_, min41, max41) = *recorded
                .iter()
                .find(|r| r.0 == key as i16)
                .unwrap_or_else(|| panic!("{key:?} is not a Kafka 4.1 API"));
            match AHEAD_OF_4_1.iter().find(|&&(k, _)| k == key) {
                Some(&(_, v)) => assert_eq!(max, v, "{key:?}"),
                None => assert_eq!(max, max41, "{key:?} max v{max}, Kafka 4.1 has v{max41}"),
            }
            match LEGACY_MIN.iter().find(|&&(k, _)| k == key) {
                Some(&(_, v)) => {
                    assert!(v <= min41, "{key:?}: {v} is above 4.1's v{min41}");
                    assert_eq!(min, v, "{key:?}");
                }
                None => assert_eq!(min, min41, "{key:?} min v{min}, Kafka 4.1 has v{min41}"),
            }
        }
        for &(key, _) in LEGACY_MIN.iter().chain(AHEAD_OF_4_1) {
            assert!(supported(key).is_some(), "{key:?} listed but not served");
        }
    }

    /// The APIs of the dispatch table in `server::dispatch` (one `ApiKey::X =>` row each).
    fn dispatched() -> Vec<String> {
        let src = include_str!("server.rs");
        let start = src
            .find("let handled = if key == ApiKey::Produce")
            .expect("dispatch table start");
        let end = start
            + src[start..]
                .find("other => return Err")
                .expect("dispatch table end");
        let mut out = vec!["Produce".to_string()];
        for line in src[start..end].lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("ApiKey::") {
                if let Some((name, _)) = rest.split_once(" =>") {
                    out.push(name.to_string());
                }
            }
        }
        out
    }

    #[test]
    fn every_supported_api_has_a_handler_and_every_handler_a_row() {
        let handlers = dispatched();
        let rows: Vec<String> = SUPPORTED.iter().map(|(k, _, _)| format!("{k:?}")).collect();
        for r in &rows {
            assert!(handlers.contains(r), "{r} is advertised but has no handler");
        }
        for h in &handlers {
            assert!(rows.contains(h), "{h} has a handler but is not advertised");
        }
        let mut dedup = rows.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), rows.len(), "an API has two rows");
    }
}
