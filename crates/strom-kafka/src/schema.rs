//! The request schemas [`crate::bounds`] walks: for every API the door serves, the fields of
//! its request in wire order, each with the versions it is present in, as Kafka's message
//! definitions give them (`clients/src/main/resources/common/message/*Request.json`).
//!
//! Only the shape matters here, not the meaning: which fields are fixed-size, which are
//! strings or bytes, which are arrays of what, which are tagged. String, byte and array
//! encodings follow the API's flexible versions (compact from `flexible` on, with a tagged
//! field section after every struct); nullability does not change the shape.
//!
//! **Invariant:** a schema describes its API exactly as the `kafka-protocol` crate decodes it
//! at every version of its range. `bounds::tests` checks it against the crate: every frame
//! the crate decodes is accepted and walks to the same byte, for real client requests and for
//! each API at each version.

use kafka_protocol::messages::ApiKey;

/// The shape of one field's value.
#[derive(Debug)]
pub(crate) enum Ty {
    Int8,
    Int16,
    Int32,
    Int64,
    Bool,
    Uuid,
    /// STRING, NULLABLE_STRING; COMPACT_ in flexible versions.
    Str,
    /// BYTES, NULLABLE_BYTES, RECORDS; COMPACT_ in flexible versions.
    Bytes,
    /// An array of a non-struct type.
    Array(&'static Ty),
    /// An array of structs.
    Structs(&'static [Field]),
    /// One struct (a tagged struct field).
    Struct(&'static [Field]),
    /// A nullable struct: an INT8 marker (1 = present) then the struct.
    OptStruct(&'static [Field]),
}

/// One field: its value's shape, the versions it is in, and its tag if it is tagged.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) ty: Ty,
    min: i16,
    max: i16,
    pub(crate) tag: Option<u32>,
}

impl Field {
    /// Whether the field is in `version`.
    pub(crate) fn present(&self, version: i16) -> bool {
        version >= self.min && version <= self.max
    }

    /// Present from `min` on.
    const fn since(self, min: i16) -> Field {
        Field { min, ..self }
    }

    /// Present up to `max`.
    const fn until(self, max: i16) -> Field {
        Field { max, ..self }
    }

    /// A tagged field with this tag.
    const fn tag(self, tag: u32) -> Field {
        Field {
            tag: Some(tag),
            ..self
        }
    }
}

/// A field present in every version.
const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        min: 0,
        max: i16::MAX,
        tag: None,
    }
}

/// One API's request.
#[derive(Debug)]
pub(crate) struct Schema {
    pub(crate) api: ApiKey,
    pub(crate) name: &'static str,
    /// Versions described.
    pub(crate) min: i16,
    pub(crate) max: i16,
    /// The first flexible version (`i16::MAX` if none).
    pub(crate) flexible: i16,
    pub(crate) fields: &'static [Field],
}

use Ty::*;

const NEVER: i16 = i16::MAX;
const STRINGS: Ty = Array(&Str);
const INT32S: Ty = Array(&Int32);

const PRODUCE: &[Field] = &[
    f("transactional_id", Str),
    f("acks", Int16),
    f("timeout_ms", Int32),
    f(
        "topic_data",
        Structs(&[
            f("name", Str).until(12),
            f("topic_id", Uuid).since(13),
            f(
                "partition_data",
                Structs(&[f("index", Int32), f("records", Bytes)]),
            ),
        ]),
    ),
];

const FETCH: &[Field] = &[
    f("cluster_id", Str).since(12).tag(0),
    f("replica_id", Int32).until(14),
    f(
        "replica_state",
        Struct(&[f("replica_id", Int32), f("replica_epoch", Int64)]),
    )
    .since(15)
    .tag(1),
    f("max_wait_ms", Int32),
    f("min_bytes", Int32),
    f("max_bytes", Int32).since(3),
    f("isolation_level", Int8).since(4),
    f("session_id", Int32).since(7),
    f("session_epoch", Int32).since(7),
    f(
        "topics",
        Structs(&[
            f("topic", Str).until(12),
            f("topic_id", Uuid).since(13),
            f(
                "partitions",
                Structs(&[
                    f("partition", Int32),
                    f("current_leader_epoch", Int32).since(9),
                    f("fetch_offset", Int64),
                    f("last_fetched_epoch", Int32).since(12),
                    f("log_start_offset", Int64).since(5),
                    f("partition_max_bytes", Int32),
                    f("replica_directory_id", Uuid).since(17).tag(0),
                    f("high_watermark", Int64).since(18).tag(1),
                ]),
            ),
        ]),
    ),
    f(
        "forgotten_topics_data",
        Structs(&[
            f("topic", Str).until(12),
            f("topic_id", Uuid).since(13),
            f("partitions", INT32S),
        ]),
    )
    .since(7),
    f("rack_id", Str).since(11),
];

const LIST_OFFSETS: &[Field] = &[
    f("replica_id", Int32),
    f("isolation_level", Int8).since(2),
    f(
        "topics",
        Structs(&[
            f("name", Str),
            f(
                "partitions",
                Structs(&[
                    f("partition_index", Int32),
                    f("current_leader_epoch", Int32).since(4),
                    f("timestamp", Int64),
                ]),
            ),
        ]),
    ),
    f("timeout_ms", Int32).since(10),
];

const METADATA: &[Field] = &[
    f(
        "topics",
        Structs(&[f("topic_id", Uuid).since(10), f("name", Str)]),
    ),
    f("allow_auto_topic_creation", Bool).since(4),
    f("include_cluster_authorized_operations", Bool)
        .since(8)
        .until(10),
    f("include_topic_authorized_operations", Bool).since(8),
];

const API_VERSIONS: &[Field] = &[
    f("client_software_name", Str).since(3),
    f("client_software_version", Str).since(3),
];

const CREATE_TOPICS: &[Field] = &[
    f(
        "topics",
        Structs(&[
            f("name", Str),
            f("num_partitions", Int32),
            f("replication_factor", Int16),
            f(
                "assignments",
                Structs(&[f("partition_index", Int32), f("broker_ids", INT32S)]),
            ),
            f("configs", Structs(&[f("name", Str), f("value", Str)])),
        ]),
    ),
    f("timeout_ms", Int32),
    f("validate_only", Bool).since(1),
];

const DELETE_TOPICS: &[Field] = &[
    f("topics", Structs(&[f("name", Str), f("topic_id", Uuid)])).since(6),
    f("topic_names", STRINGS).until(5),
    f("timeout_ms", Int32),
];

const CREATE_PARTITIONS: &[Field] = &[
    f(
        "topics",
        Structs(&[
            f("name", Str),
            f("count", Int32),
            f("assignments", Structs(&[f("broker_ids", INT32S)])),
        ]),
    ),
    f("timeout_ms", Int32),
    f("validate_only", Bool),
];

const DESCRIBE_CONFIGS: &[Field] = &[
    f(
        "resources",
        Structs(&[
            f("resource_type", Int8),
            f("resource_name", Str),
            f("configuration_keys", STRINGS),
        ]),
    ),
    f("include_synonyms", Bool).since(1),
    f("include_documentation", Bool).since(3),
];

const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    f(
        "resources",
        Structs(&[
            f("resource_type", Int8),
            f("resource_name", Str),
            f(
                "configs",
                Structs(&[f("name", Str), f("config_operation", Int8), f("value", Str)]),
            ),
        ]),
    ),
    f("validate_only", Bool),
];

const DESCRIBE_CLUSTER: &[Field] = &[
    f("include_cluster_authorized_operations", Bool),
    f("endpoint_type", Int8).since(1),
    f("include_fenced_brokers", Bool).since(2),
];

const INIT_PRODUCER_ID: &[Field] = &[
    f("transactional_id", Str),
    f("transaction_timeout_ms", Int32),
    f("producer_id", Int64).since(3),
    f("producer_epoch", Int16).since(3),
    f("enable_2pc", Bool).since(6),
    f("keep_prepared_txn", Bool).since(6),
];

const FIND_COORDINATOR: &[Field] = &[
    f("key", Str).until(3),
    f("key_type", Int8).since(1),
    f("coordinator_keys", STRINGS).since(4),
];

const JOIN_GROUP: &[Field] = &[
    f("group_id", Str),
    f("session_timeout_ms", Int32),
    f("rebalance_timeout_ms", Int32).since(1),
    f("member_id", Str),
    f("group_instance_id", Str).since(5),
    f("protocol_type", Str),
    f(
        "protocols",
        Structs(&[f("name", Str), f("metadata", Bytes)]),
    ),
    f("reason", Str).since(8),
];

const SYNC_GROUP: &[Field] = &[
    f("group_id", Str),
    f("generation_id", Int32),
    f("member_id", Str),
    f("group_instance_id", Str).since(3),
    f("protocol_type", Str).since(5),
    f("protocol_name", Str).since(5),
    f(
        "assignments",
        Structs(&[f("member_id", Str), f("assignment", Bytes)]),
    ),
];

const HEARTBEAT: &[Field] = &[
    f("group_id", Str),
    f("generation_id", Int32),
    f("member_id", Str),
    f("group_instance_id", Str).since(3),
];

const LEAVE_GROUP: &[Field] = &[
    f("group_id", Str),
    f("member_id", Str).until(2),
    f(
        "members",
        Structs(&[
            f("member_id", Str),
            f("group_instance_id", Str),
            f("reason", Str).since(5),
        ]),
    )
    .since(3),
];

const OFFSET_COMMIT: &[Field] = &[
    f("group_id", Str),
    f("generation_id_or_member_epoch", Int32).since(1),
    f("member_id", Str).since(1),
    f("group_instance_id", Str).since(7),
    f("retention_time_ms", Int64).since(2).until(4),
    f(
        "topics",
        Structs(&[
            f("name", Str).until(9),
            f("topic_id", Uuid).since(10),
            f(
                "partitions",
                Structs(&[
                    f("partition_index", Int32),
                    f("committed_offset", Int64),
                    f("committed_leader_epoch", Int32).since(6),
                    f("commit_timestamp", Int64).since(1).until(1),
                    f("committed_metadata", Str),
                ]),
            ),
        ]),
    ),
];

const OFFSET_FETCH: &[Field] = &[
    f("group_id", Str).until(7),
    f(
        "topics",
        Structs(&[f("name", Str), f("partition_indexes", INT32S)]),
    )
    .until(7),
    f(
        "groups",
        Structs(&[
            f("group_id", Str),
            f("member_id", Str).since(9),
            f("member_epoch", Int32).since(9),
            f(
                "topics",
                Structs(&[
                    f("name", Str).until(9),
                    f("topic_id", Uuid).since(10),
                    f("partition_indexes", INT32S),
                ]),
            ),
        ]),
    )
    .since(8),
    f("require_stable", Bool).since(7),
];

const DESCRIBE_GROUPS: &[Field] = &[
    f("groups", STRINGS),
    f("include_authorized_operations", Bool).since(3),
];

const LIST_GROUPS: &[Field] = &[
    f("states_filter", STRINGS).since(4),
    f("types_filter", STRINGS).since(5),
];

const DELETE_GROUPS: &[Field] = &[f("groups_names", STRINGS)];

const OFFSET_DELETE: &[Field] = &[
    f("group_id", Str),
    f(
        "topics",
        Structs(&[
            f("name", Str),
            f("partitions", Structs(&[f("partition_index", Int32)])),
        ]),
    ),
];

const CONSUMER_GROUP_HEARTBEAT: &[Field] = &[
    f("group_id", Str),
    f("member_id", Str),
    f("member_epoch", Int32),
    f("instance_id", Str),
    f("rack_id", Str),
    f("rebalance_timeout_ms", Int32),
    f("subscribed_topic_names", STRINGS),
    f("subscribed_topic_regex", Str).since(1),
    f("server_assignor", Str),
    f(
        "topic_partitions",
        Structs(&[f("topic_id", Uuid), f("partitions", Array(&Int32))]),
    ),
];

const CONSUMER_GROUP_DESCRIBE: &[Field] = &[
    f("group_ids", STRINGS),
    f("include_authorized_operations", Bool),
];

const SHARE_GROUP_HEARTBEAT: &[Field] = &[
    f("group_id", Str),
    f("member_id", Str),
    f("member_epoch", Int32),
    f("rack_id", Str),
    f("subscribed_topic_names", STRINGS),
];

const SHARE_GROUP_DESCRIBE: &[Field] = &[
    f("group_ids", STRINGS),
    f("include_authorized_operations", Bool),
];

const ACKNOWLEDGEMENT_BATCHES: Ty = Structs(&[
    f("first_offset", Int64),
    f("last_offset", Int64),
    f("acknowledge_types", Array(&Int8)),
]);

/// v2 (Kafka 4.2, KIP-1206/1222) adds `share_acquire_mode`; the crate decodes v1 only, the
/// door decodes v2 through `share_wire` (the v1 body without that byte).
const SHARE_FETCH: &[Field] = &[
    f("group_id", Str),
    f("member_id", Str),
    f("share_session_epoch", Int32),
    f("max_wait_ms", Int32),
    f("min_bytes", Int32),
    f("max_bytes", Int32),
    f("max_records", Int32),
    f("batch_size", Int32),
    f("share_acquire_mode", Int8).since(2),
    f(
        "topics",
        Structs(&[
            f("topic_id", Uuid),
            f(
                "partitions",
                Structs(&[
                    f("partition_index", Int32),
                    f("acknowledgement_batches", ACKNOWLEDGEMENT_BATCHES),
                ]),
            ),
        ]),
    ),
    f(
        "forgotten_topics_data",
        Structs(&[f("topic_id", Uuid), f("partitions", INT32S)]),
    ),
];

/// v2 (KIP-1222) adds `is_renew_ack`; decoded as [`SHARE_FETCH`]'s v2.
const SHARE_ACKNOWLEDGE: &[Field] = &[
    f("group_id", Str),
    f("member_id", Str),
    f("share_session_epoch", Int32),
    f("is_renew_ack", Bool).since(2),
    f(
        "topics",
        Structs(&[
            f("topic_id", Uuid),
            f(
                "partitions",
                Structs(&[
                    f("partition_index", Int32),
                    f("acknowledgement_batches", ACKNOWLEDGEMENT_BATCHES),
                ]),
            ),
        ]),
    ),
];

const DESCRIBE_SHARE_GROUP_OFFSETS: &[Field] = &[f(
    "groups",
    Structs(&[
        f("group_id", Str),
        f(
            "topics",
            Structs(&[f("topic_name", Str), f("partitions", INT32S)]),
        ),
    ]),
)];

const ALTER_SHARE_GROUP_OFFSETS: &[Field] = &[
    f("group_id", Str),
    f(
        "topics",
        Structs(&[
            f("topic_name", Str),
            f(
                "partitions",
                Structs(&[f("partition_index", Int32), f("start_offset", Int64)]),
            ),
        ]),
    ),
];

const DELETE_SHARE_GROUP_OFFSETS: &[Field] = &[
    f("group_id", Str),
    f("topics", Structs(&[f("topic_name", Str)])),
];

const ADD_PARTITIONS_TO_TXN_TOPICS: Ty = Structs(&[f("name", Str), f("partitions", INT32S)]);

const ADD_PARTITIONS_TO_TXN: &[Field] = &[
    f(
        "transactions",
        Structs(&[
            f("transactional_id", Str),
            f("producer_id", Int64),
            f("producer_epoch", Int16),
            f("verify_only", Bool),
            f("topics", ADD_PARTITIONS_TO_TXN_TOPICS),
        ]),
    )
    .since(4),
    f("v3_and_below_transactional_id", Str).until(3),
    f("v3_and_below_producer_id", Int64).until(3),
    f("v3_and_below_producer_epoch", Int16).until(3),
    f("v3_and_below_topics", ADD_PARTITIONS_TO_TXN_TOPICS).until(3),
];

const ADD_OFFSETS_TO_TXN: &[Field] = &[
    f("transactional_id", Str),
    f("producer_id", Int64),
    f("producer_epoch", Int16),
    f("group_id", Str),
];

const END_TXN: &[Field] = &[
    f("transactional_id", Str),
    f("producer_id", Int64),
    f("producer_epoch", Int16),
    f("committed", Bool),
];

const TXN_OFFSET_COMMIT: &[Field] = &[
    f("transactional_id", Str),
    f("group_id", Str),
    f("producer_id", Int64),
    f("producer_epoch", Int16),
    f("generation_id", Int32).since(3),
    f("member_id", Str).since(3),
    f("group_instance_id", Str).since(3),
    f(
        "topics",
        Structs(&[
            f("name", Str),
            f(
                "partitions",
                Structs(&[
                    f("partition_index", Int32),
                    f("committed_offset", Int64),
                    f("committed_leader_epoch", Int32).since(2),
                    f("committed_metadata", Str),
                ]),
            ),
        ]),
    ),
];

const DESCRIBE_TRANSACTIONS: &[Field] = &[f("transactional_ids", STRINGS)];

const LIST_TRANSACTIONS: &[Field] = &[
    f("state_filters", STRINGS),
    f("producer_id_filters", Array(&Int64)),
    f("duration_filter", Int64).since(1),
    f("transactional_id_pattern", Str).since(2),
];

const DESCRIBE_PRODUCERS: &[Field] = &[f(
    "topics",
    Structs(&[f("name", Str), f("partition_indexes", INT32S)]),
)];

const DELETE_RECORDS: &[Field] = &[
    f(
        "topics",
        Structs(&[
            f("name", Str),
            f(
                "partitions",
                Structs(&[f("partition_index", Int32), f("offset", Int64)]),
            ),
        ]),
    ),
    f("timeout_ms", Int32),
];

const TOPIC_PARTITION_LIST: Ty = Structs(&[f("topic", Str), f("partitions", INT32S)]);

const DESCRIBE_LOG_DIRS: &[Field] = &[f("topics", TOPIC_PARTITION_LIST)];

const ALTER_REPLICA_LOG_DIRS: &[Field] = &[f(
    "dirs",
    Structs(&[f("path", Str), f("topics", TOPIC_PARTITION_LIST)]),
)];

const DESCRIBE_TOPIC_PARTITIONS: &[Field] = &[
    f("topics", Structs(&[f("name", Str)])),
    f("response_partition_limit", Int32),
    f(
        "cursor",
        OptStruct(&[f("topic_name", Str), f("partition_index", Int32)]),
    ),
];

const ELECT_LEADERS: &[Field] = &[
    f("election_type", Int8).since(1),
    f("topic_partitions", TOPIC_PARTITION_LIST),
    f("timeout_ms", Int32),
];

const ALTER_PARTITION_REASSIGNMENTS: &[Field] = &[
    f("timeout_ms", Int32),
    f("allow_replication_factor_change", Bool).since(1),
    f(
        "topics",
        Structs(&[
            f("name", Str),
            f(
                "partitions",
                Structs(&[f("partition_index", Int32), f("replicas", INT32S)]),
            ),
        ]),
    ),
];

const LIST_PARTITION_REASSIGNMENTS: &[Field] = &[
    f("timeout_ms", Int32),
    f(
        "topics",
        Structs(&[f("name", Str), f("partition_indexes", INT32S)]),
    ),
];

const DESCRIBE_QUORUM: &[Field] = &[f(
    "topics",
    Structs(&[
        f("topic_name", Str),
        f("partitions", Structs(&[f("partition_index", Int32)])),
    ]),
)];

const ALTER_CONFIGS: &[Field] = &[
    f(
        "resources",
        Structs(&[
            f("resource_type", Int8),
            f("resource_name", Str),
            f("configs", Structs(&[f("name", Str), f("value", Str)])),
        ]),
    ),
    f("validate_only", Bool),
];

const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    f("replica_id", Int32).since(3),
    f(
        "topics",
        Structs(&[
            f("topic", Str),
            f(
                "partitions",
                Structs(&[
                    f("partition", Int32),
                    f("current_leader_epoch", Int32),
                    f("leader_epoch", Int32),
                ]),
            ),
        ]),
    ),
];

const DESCRIBE_CLIENT_QUOTAS: &[Field] = &[
    f(
        "components",
        Structs(&[
            f("entity_type", Str),
            f("match_type", Int8),
            f("match", Str),
        ]),
    ),
    f("strict", Bool),
];

/// FLOAT64 has INT64's shape.
const ALTER_CLIENT_QUOTAS: &[Field] = &[
    f(
        "entries",
        Structs(&[
            f(
                "entity",
                Structs(&[f("entity_type", Str), f("entity_name", Str)]),
            ),
            f(
                "ops",
                Structs(&[f("key", Str), f("value", Int64), f("remove", Bool)]),
            ),
        ]),
    ),
    f("validate_only", Bool),
];

const SASL_HANDSHAKE: &[Field] = &[f("mechanism", Str)];

const SASL_AUTHENTICATE: &[Field] = &[f("auth_bytes", Bytes)];

const DESCRIBE_USER_SCRAM_CREDENTIALS: &[Field] = &[f("users", Structs(&[f("name", Str)]))];

const ALTER_USER_SCRAM_CREDENTIALS: &[Field] = &[
    f(
        "deletions",
        Structs(&[f("name", Str), f("mechanism", Int8)]),
    ),
    f(
        "upsertions",
        Structs(&[
            f("name", Str),
            f("mechanism", Int8),
            f("iterations", Int32),
            f("salt", Bytes),
            f("salted_password", Bytes),
        ]),
    ),
];

/// An ACL filter (DescribeAcls' body, DeleteAcls' filters) and an ACL binding (CreateAcls'
/// creations) have the same shape: types and codes as INT8, names as strings.
const ACL_FIELDS: &[Field] = &[
    f("resource_type", Int8),
    f("resource_name", Str),
    f("pattern_type", Int8),
    f("principal", Str),
    f("host", Str),
    f("operation", Int8),
    f("permission_type", Int8),
];

const CREATE_ACLS: &[Field] = &[f("creations", Structs(ACL_FIELDS))];

const DELETE_ACLS: &[Field] = &[f("filters", Structs(ACL_FIELDS))];

const LIST_CONFIG_RESOURCES: &[Field] = &[f("resource_types", Array(&Int8)).since(1)];

const GET_TELEMETRY_SUBSCRIPTIONS: &[Field] = &[f("client_instance_id", Uuid)];

const PUSH_TELEMETRY: &[Field] = &[
    f("client_instance_id", Uuid),
    f("subscription_id", Int32),
    f("terminating", Bool),
    f("compression_type", Int8),
    f("metrics", Bytes),
];

const fn schema(
    api: ApiKey,
    name: &'static str,
    (min, max): (i16, i16),
    flexible: i16,
    fields: &'static [Field],
) -> Schema {
    Schema {
        api,
        name,
        min,
        max,
        flexible,
        fields,
    }
}

/// Every request schema, by API. The ranges are those the `kafka-protocol` crate decodes
/// (the door answers older versions by hand, see `legacy`), and ShareFetch /
/// ShareAcknowledge v2, which the door decodes as v1 without their one added field (see
/// `share_wire`).
pub(crate) const SCHEMAS: &[Schema] = &[
    schema(ApiKey::Produce, "Produce", (3, 13), 9, PRODUCE),
    schema(ApiKey::Fetch, "Fetch", (4, 18), 12, FETCH),
    schema(ApiKey::ListOffsets, "ListOffsets", (1, 10), 6, LIST_OFFSETS),
    schema(ApiKey::Metadata, "Metadata", (0, 13), 9, METADATA),
    schema(ApiKey::ApiVersions, "ApiVersions", (0, 4), 3, API_VERSIONS),
    schema(
        ApiKey::CreateTopics,
        "CreateTopics",
        (2, 7),
        5,
        CREATE_TOPICS,
    ),
    schema(
        ApiKey::DeleteTopics,
        "DeleteTopics",
        (1, 6),
        4,
        DELETE_TOPICS,
    ),
    schema(
        ApiKey::CreatePartitions,
        "CreatePartitions",
        (0, 3),
        2,
        CREATE_PARTITIONS,
    ),
    schema(
        ApiKey::DescribeConfigs,
        "DescribeConfigs",
        (1, 4),
        4,
        DESCRIBE_CONFIGS,
    ),
    schema(
        ApiKey::IncrementalAlterConfigs,
        "IncrementalAlterConfigs",
        (0, 1),
        1,
        INCREMENTAL_ALTER_CONFIGS,
    ),
    schema(
        ApiKey::DescribeCluster,
        "DescribeCluster",
        (0, 2),
        0,
        DESCRIBE_CLUSTER,
    ),
    schema(
        ApiKey::InitProducerId,
        "InitProducerId",
        (0, 5),
        2,
        INIT_PRODUCER_ID,
    ),
    schema(
        ApiKey::FindCoordinator,
        "FindCoordinator",
        (0, 6),
        3,
        FIND_COORDINATOR,
    ),
    schema(ApiKey::JoinGroup, "JoinGroup", (0, 9), 6, JOIN_GROUP),
    schema(ApiKey::SyncGroup, "SyncGroup", (0, 5), 4, SYNC_GROUP),
    schema(ApiKey::Heartbeat, "Heartbeat", (0, 4), 4, HEARTBEAT),
    schema(ApiKey::LeaveGroup, "LeaveGroup", (0, 5), 4, LEAVE_GROUP),
    schema(
        ApiKey::OffsetCommit,
        "OffsetCommit",
        (2, 9),
        8,
        OFFSET_COMMIT,
    ),
    schema(ApiKey::OffsetFetch, "OffsetFetch", (1, 9), 6, OFFSET_FETCH),
    schema(
        ApiKey::DescribeGroups,
        "DescribeGroups",
        (0, 6),
        5,
        DESCRIBE_GROUPS,
    ),
    schema(ApiKey::ListGroups, "ListGroups", (0, 5), 3, LIST_GROUPS),
    schema(
        ApiKey::DeleteGroups,
        "DeleteGroups",
        (0, 2),
        2,
        DELETE_GROUPS,
    ),
    schema(
        ApiKey::OffsetDelete,
        "OffsetDelete",
        (0, 0),
        NEVER,
        OFFSET_DELETE,
    ),
    schema(
        ApiKey::ConsumerGroupHeartbeat,
        "ConsumerGroupHeartbeat",
        (0, 1),
        0,
        CONSUMER_GROUP_HEARTBEAT,
    ),
    schema(
        ApiKey::ConsumerGroupDescribe,
        "ConsumerGroupDescribe",
        (0, 1),
        0,
        CONSUMER_GROUP_DESCRIBE,
    ),
    schema(
        ApiKey::ShareGroupHeartbeat,
        "ShareGroupHeartbeat",
        (1, 1),
        0,
        SHARE_GROUP_HEARTBEAT,
    ),
    schema(
        ApiKey::ShareGroupDescribe,
        "ShareGroupDescribe",
        (1, 1),
        0,
        SHARE_GROUP_DESCRIBE,
    ),
    schema(ApiKey::ShareFetch, "ShareFetch", (1, 2), 0, SHARE_FETCH),
    schema(
        ApiKey::ShareAcknowledge,
        "ShareAcknowledge",
        (1, 2),
        0,
        SHARE_ACKNOWLEDGE,
    ),
    schema(
        ApiKey::DescribeShareGroupOffsets,
        "DescribeShareGroupOffsets",
        (0, 0),
        0,
        DESCRIBE_SHARE_GROUP_OFFSETS,
    ),
    schema(
        ApiKey::AlterShareGroupOffsets,
        "AlterShareGroupOffsets",
        (0, 0),
        0,
        ALTER_SHARE_GROUP_OFFSETS,
    ),
    schema(
        ApiKey::DeleteShareGroupOffsets,
        "DeleteShareGroupOffsets",
        (0, 0),
        0,
        DELETE_SHARE_GROUP_OFFSETS,
    ),
    schema(
        ApiKey::AddPartitionsToTxn,
        "AddPartitionsToTxn",
        (0, 5),
        3,
        ADD_PARTITIONS_TO_TXN,
    ),
    schema(
        ApiKey::AddOffsetsToTxn,
        "AddOffsetsToTxn",
        (0, 4),
        3,
        ADD_OFFSETS_TO_TXN,
    ),
    schema(ApiKey::EndTxn, "EndTxn", (0, 5), 3, END_TXN),
    schema(
        ApiKey::TxnOffsetCommit,
        "TxnOffsetCommit",
        (0, 5),
        3,
        TXN_OFFSET_COMMIT,
    ),
    schema(
        ApiKey::DescribeTransactions,
        "DescribeTransactions",
        (0, 0),
        0,
        DESCRIBE_TRANSACTIONS,
    ),
    schema(
        ApiKey::ListTransactions,
        "ListTransactions",
        (0, 2),
        0,
        LIST_TRANSACTIONS,
    ),
    schema(
        ApiKey::DescribeProducers,
        "DescribeProducers",
        (0, 0),
        0,
        DESCRIBE_PRODUCERS,
    ),
    schema(
        ApiKey::DeleteRecords,
        "DeleteRecords",
        (0, 2),
        2,
        DELETE_RECORDS,
    ),
    schema(
        ApiKey::DescribeLogDirs,
        "DescribeLogDirs",
        (1, 4),
        2,
        DESCRIBE_LOG_DIRS,
    ),
    schema(
        ApiKey::AlterReplicaLogDirs,
        "AlterReplicaLogDirs",
        (1, 2),
        2,
        ALTER_REPLICA_LOG_DIRS,
    ),
    schema(
        ApiKey::DescribeTopicPartitions,
        "DescribeTopicPartitions",
        (0, 0),
        0,
        DESCRIBE_TOPIC_PARTITIONS,
    ),
    schema(
        ApiKey::ElectLeaders,
        "ElectLeaders",
        (0, 2),
        2,
        ELECT_LEADERS,
    ),
    schema(
        ApiKey::AlterPartitionReassignments,
        "AlterPartitionReassignments",
        (0, 1),
        0,
        ALTER_PARTITION_REASSIGNMENTS,
    ),
    schema(
        ApiKey::ListPartitionReassignments,
        "ListPartitionReassignments",
        (0, 0),
        0,
        LIST_PARTITION_REASSIGNMENTS,
    ),
    schema(
        ApiKey::DescribeQuorum,
        "DescribeQuorum",
        (0, 2),
        0,
        DESCRIBE_QUORUM,
    ),
    schema(
        ApiKey::AlterConfigs,
        "AlterConfigs",
        (0, 2),
        2,
        ALTER_CONFIGS,
    ),
    schema(
        ApiKey::OffsetForLeaderEpoch,
        "OffsetForLeaderEpoch",
        (2, 4),
        4,
        OFFSET_FOR_LEADER_EPOCH,
    ),
    schema(
        ApiKey::DescribeClientQuotas,
        "DescribeClientQuotas",
        (0, 1),
        1,
        DESCRIBE_CLIENT_QUOTAS,
    ),
    schema(
        ApiKey::AlterClientQuotas,
        "AlterClientQuotas",
        (0, 1),
        1,
        ALTER_CLIENT_QUOTAS,
    ),
    schema(
        ApiKey::ListConfigResources,
        "ListConfigResources",
        (0, 1),
        0,
        LIST_CONFIG_RESOURCES,
    ),
    schema(
        ApiKey::GetTelemetrySubscriptions,
        "GetTelemetrySubscriptions",
        (0, 0),
        0,
        GET_TELEMETRY_SUBSCRIPTIONS,
    ),
    schema(
        ApiKey::PushTelemetry,
        "PushTelemetry",
        (0, 0),
        0,
        PUSH_TELEMETRY,
    ),
    schema(
        ApiKey::SaslHandshake,
        "SaslHandshake",
        (0, 1),
        NEVER,
        SASL_HANDSHAKE,
    ),
    schema(
        ApiKey::SaslAuthenticate,
        "SaslAuthenticate",
        (0, 2),
        2,
        SASL_AUTHENTICATE,
    ),
    schema(
        ApiKey::DescribeUserScramCredentials,
        "DescribeUserScramCredentials",
        (0, 0),
        0,
        DESCRIBE_USER_SCRAM_CREDENTIALS,
    ),
    schema(
        ApiKey::AlterUserScramCredentials,
        "AlterUserScramCredentials",
        (0, 0),
        0,
        ALTER_USER_SCRAM_CREDENTIALS,
    ),
    schema(ApiKey::DescribeAcls, "DescribeAcls", (1, 3), 2, ACL_FIELDS),
    schema(ApiKey::CreateAcls, "CreateAcls", (1, 3), 2, CREATE_ACLS),
    schema(ApiKey::DeleteAcls, "DeleteAcls", (1, 3), 2, DELETE_ACLS),
];

/// The schema of API key `api`.
pub(crate) fn for_api(api: i16) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|s| s.api as i16 == api)
}
