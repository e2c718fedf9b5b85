//! `strom serve`: settings (flags > `STROM_*` environment > `--config` TOML > defaults),
//! logging, the broker core, the Kafka door, signals and graceful shutdown.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use strom_broker::coordinator::{GroupConfig, GroupCoordinator, PartitionExists};
use strom_broker::limits::FdBudget;
use strom_broker::security::sasl::Mechanism;
use strom_broker::share::{ShareConfig, ShareCoordinator};
use strom_broker::txn::{TxnConfig, TxnCoordinator};
use strom_broker::{Broker, BrokerConfig};
use strom_kafka::listener::{self, ListenerConfig};
use strom_kafka::{KafkaConfig, KafkaServer};
use tokio::sync::watch;

/// Flags of `strom serve`. Each also reads `STROM_<NAME>` and the `--config` file.
#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// TOML file with any of the settings below (keys in snake_case, e.g. `data_dir`).
    #[arg(long, env = "STROM_CONFIG")]
    config: Option<PathBuf>,
    /// Where topics and broker state are stored [default: ./strom-data].
    #[arg(long, env = "STROM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Kafka listener address: short for `--listeners PLAINTEXT://ADDR` [default: 127.0.0.1:9092].
    #[arg(long, env = "STROM_KAFKA_ADDR")]
    kafka_addr: Option<String>,
    /// Kafka listeners, as Kafka's `listeners`: NAME://HOST:PORT,... where NAME is a security
    /// protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; SSL ones need --tls-cert/--tls-key)
    /// or a name of --listener-security-protocol-map; each needs its own port.
    #[arg(long, env = "STROM_LISTENERS")]
    listeners: Option<String>,
    /// listener.security.protocol.map: NAME:PROTOCOL,... for listeners not named after their
    /// protocol (e.g. INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT).
    #[arg(long, env = "STROM_LISTENER_SECURITY_PROTOCOL_MAP")]
    listener_security_protocol_map: Option<String>,
    /// advertised.listeners: NAME://HOST:PORT,... what Metadata, FindCoordinator and
    /// DescribeCluster answer on each listener [default per listener: its own address,
    /// 127.0.0.1 for 0.0.0.0].
    #[arg(long, env = "STROM_ADVERTISED_LISTENERS")]
    advertised_listeners: Option<String>,
    /// HOST:PORT advertised to Kafka clients when there is one listener (short for
    /// `--advertised-listeners NAME://HOST:PORT`) [default: the listener's, 127.0.0.1 for 0.0.0.0].
    #[arg(long, env = "STROM_ADVERTISED_ADDR")]
    advertised_addr: Option<String>,
    /// HTTP door address (REST, SSE, WebSocket, /metrics), or "off" [default: 127.0.0.1:8080;
    /// if that default is taken, the broker runs without the HTTP door and says so].
    #[arg(long, env = "STROM_HTTP_ADDR")]
    http_addr: Option<String>,
    /// gRPC door address (service strom.v1.Strom, grpc.health.v1.Health, reflection), or
    /// "off" [default: 127.0.0.1:9095; if that default is taken, the broker runs without the
    /// gRPC door and says so].
    #[arg(long, env = "STROM_GRPC_ADDR")]
    grpc_addr: Option<String>,
    /// Serve the gRPC door over TLS with --tls-cert (HTTP/2 by ALPN; no client certificate
    /// asked for) [default: false].
    #[arg(long, env = "STROM_GRPC_TLS", action = clap::ArgAction::Set)]
    grpc_tls: Option<bool>,
    /// `required`: every gRPC call needs `authorization` metadata (`Basic base64(user:password)`
    /// of a `strom user set` user, or `Bearer <token>` of `strom token create`), else
    /// UNAUTHENTICATED; `none`: calls without it are User:ANONYMOUS [default: none].
    #[arg(long, env = "STROM_GRPC_AUTH")]
    grpc_auth: Option<String>,
    /// Largest gRPC message a call may send or receive, encoded; larger ones are refused with
    /// RESOURCE_EXHAUSTED [default: 8388608].
    #[arg(long, env = "STROM_GRPC_MAX_MESSAGE_BYTES")]
    grpc_max_message_bytes: Option<usize>,
    /// Compression of gRPC responses to clients that accept it: none, gzip or zstd (requests
    /// may be gzip or zstd whatever this is) [default: none].
    #[arg(long, env = "STROM_GRPC_COMPRESSION")]
    grpc_compression: Option<String>,
    /// gRPC connections held at most (each multiplexes any number of calls); more are closed
    /// at once [default: 1024].
    #[arg(long, env = "STROM_GRPC_MAX_CONNECTIONS")]
    grpc_max_connections: Option<usize>,
    /// A gRPC stream whose reader leaves its queue (1024 messages, after the HTTP/2 window)
    /// full for this long is ended with RESOURCE_EXHAUSTED [default: 30000].
    #[arg(long, env = "STROM_GRPC_STALL_TIMEOUT_MS")]
    grpc_stall_timeout_ms: Option<u64>,
    /// PEM certificate chain (server certificate first) of the SSL listeners, and of the HTTP
    /// and gRPC doors with --http-tls / --grpc-tls true; re-read with --tls-key and --tls-client-ca on SIGHUP (open
    /// connections keep theirs).
    #[arg(long, env = "STROM_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "STROM_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates for mutual TLS on the SSL listeners: a client must present a
    /// certificate signed by one of them, and its principal is `User:<CN>` [default: no
    /// client certificate asked for; principal User:ANONYMOUS].
    #[arg(long, env = "STROM_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Serve the HTTP door over HTTPS with --tls-cert (no client certificate asked for)
    /// [default: false].
    #[arg(long, env = "STROM_HTTP_TLS", action = clap::ArgAction::Set)]
    http_tls: Option<bool>,
    /// SASL mechanisms of the SASL_PLAINTEXT / SASL_SSL listeners, checked against the SCRAM
    /// credentials of `strom user set` (sasl.enabled.mechanisms)
    /// [default: PLAIN,SCRAM-SHA-256,SCRAM-SHA-512].
    #[arg(long, env = "STROM_SASL_MECHANISMS")]
    sasl_mechanisms: Option<String>,
    /// A SASL session lasts this long: the client re-authenticates (KIP-368) or its
    /// connection is closed at its next request (connections.max.reauth.ms) [default: 0,
    /// sessions last as long as the connection].
    #[arg(long, env = "STROM_CONNECTIONS_MAX_REAUTH_MS")]
    connections_max_reauth_ms: Option<u64>,
    /// A failed authentication is answered after this long, then the connection is closed
    /// (connection.failed.authentication.delay.ms) [default: 100].
    #[arg(long, env = "STROM_CONNECTION_FAILED_AUTHENTICATION_DELAY_MS")]
    connection_failed_authentication_delay_ms: Option<u64>,
    /// `acl`: enforce Kafka's ACL model on the Kafka and HTTP doors (`strom acl
    /// add|list|remove`, CreateAcls / DescribeAcls / DeleteAcls; a request no ACL allows is
    /// denied); `none`: everyone may do everything [default: none].
    #[arg(long, env = "STROM_AUTHORIZER")]
    authorizer: Option<String>,
    /// Principals the authorizer allows everything, `;`-separated (super.users), e.g.
    /// `User:admin;User:ops`.
    #[arg(long, env = "STROM_SUPER_USERS")]
    super_users: Option<String>,
    /// `required`: every HTTP request but /healthz, /readyz, /openapi.json and /metrics needs
    /// HTTP Basic (a `strom user set` user) or a bearer token (`strom token create`; header
    /// or `?token=`), else 401; `none`: requests without credentials are User:ANONYMOUS
    /// [default: none].
    #[arg(long, env = "STROM_HTTP_AUTH")]
    http_auth: Option<String>,
    /// `required`: /metrics needs credentials as --http-auth required (and DESCRIBE on the
    /// cluster with --authorizer acl); `none`: /metrics is open [default: none].
    #[arg(long, env = "STROM_METRICS_AUTH")]
    metrics_auth: Option<String>,
    /// Records buffered per WebSocket before a client that does not keep up is closed (1013)
    /// [default: 4096].
    #[arg(long, env = "STROM_WS_BUFFER_RECORDS")]
    ws_buffer_records: Option<usize>,
    /// What a WebSocket subscriber that does not keep up gets: `close` (close 1013) or
    /// `skip-to-latest` (the records it could not take are skipped and it is told which, with
    /// a `skipped` message; group and queue subscriptions always close) [default: close].
    #[arg(long, env = "STROM_WS_SLOW_POLICY")]
    ws_slow_policy: Option<String>,
    /// Milliseconds between the pings the broker sends each WebSocket; one that has sent
    /// nothing (no pong either) for two intervals is closed (1001), so dead clients do not
    /// hold connections; 0: off [default: 30000].
    #[arg(long, env = "STROM_WS_PING_INTERVAL_MS")]
    ws_ping_interval_ms: Option<u64>,
    /// auto.create.topics.enable [default: true].
    #[arg(long, env = "STROM_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// num.partitions of auto-created topics [default: 1].
    #[arg(long, env = "STROM_NUM_PARTITIONS")]
    num_partitions: Option<i32>,
    /// strom.delay.max.ms of topics that do not set it: the longest delay a strom.delay.ms /
    /// strom.deliver.at header may ask [default: 604800000].
    #[arg(long, env = "STROM_DELAY_MAX_MS")]
    delay_max_ms: Option<i64>,
    /// transaction.max.timeout.ms: the largest transaction.timeout.ms a transactional
    /// producer may ask (above it: INVALID_TRANSACTION_TIMEOUT) [default: 900000].
    #[arg(long, env = "STROM_TRANSACTION_MAX_TIMEOUT_MS")]
    transaction_max_timeout_ms: Option<i32>,
    /// socket.request.max.bytes: largest request frame [default: 104857600].
    #[arg(long, env = "STROM_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// queued.max.request.bytes: request bytes all Kafka connections hold together before
    /// reading pauses [default: 104857600].
    #[arg(long, env = "STROM_QUEUED_MAX_REQUEST_BYTES")]
    queued_max_request_bytes: Option<usize>,
    /// Kafka connections held at most (max.connections; `--max-connections` is the same);
    /// more are closed at once [default: a quarter of the open-files limit after the log's
    /// reserve].
    #[arg(
        long,
        env = "STROM_KAFKA_MAX_CONNECTIONS",
        visible_alias = "max-connections"
    )]
    kafka_max_connections: Option<usize>,
    /// Connections one client address may hold on each door (max.connections.per.ip); one
    /// more is closed at once (Kafka) or answered 503 (HTTP) [default: no limit].
    #[arg(long, env = "STROM_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// HTTP connections held at most; more get 503 [default: the open-files limit minus the
    /// log's reserve and the Kafka door's cap].
    #[arg(long, env = "STROM_HTTP_MAX_CONNECTIONS")]
    http_max_connections: Option<usize>,
    /// Listen backlog of both doors (the kernel caps it at net.core.somaxconn) [default: 4096].
    #[arg(long, env = "STROM_LISTEN_BACKLOG")]
    listen_backlog: Option<u32>,
    /// Segment files (data and indexes of every partition) kept open at most; past it the
    /// least recently used are closed and opened again on their next use [default: three
    /// quarters of the log's reserve of the open-files limit].
    #[arg(long, env = "STROM_LOG_MAX_OPEN_FILES")]
    log_max_open_files: Option<usize>,
    /// connections.max.idle.ms: a connection with nothing in flight for this long is closed,
    /// on both doors [default: 600000].
    #[arg(long, env = "STROM_CONNECTIONS_MAX_IDLE_MS")]
    connections_max_idle_ms: Option<u64>,
    /// A request that stops arriving (a Kafka frame announced but not sent, an HTTP request
    /// head not finished) for this long closes its connection [default: 10000].
    #[arg(long, env = "STROM_READ_TIMEOUT_MS")]
    read_timeout_ms: Option<u64>,
    /// Bytes of HTTP responses held for slow readers, all connections together
    /// [default: 268435456].
    #[arg(long, env = "STROM_HTTP_BUFFER_BYTES")]
    http_buffer_bytes: Option<usize>,
    /// Bytes of HTTP responses held for one slow reader [default: 8388608].
    #[arg(long, env = "STROM_HTTP_CONNECTION_BUFFER_BYTES")]
    http_connection_buffer_bytes: Option<usize>,
    /// log.retention.check.interval.ms [default: 300000].
    #[arg(long, env = "STROM_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// This broker's node id [default: 1].
    #[arg(long, env = "STROM_NODE_ID")]
    node_id: Option<i32>,
    /// group.initial.rebalance.delay.ms: how long a new group waits for more members [default: 3000].
    #[arg(long, env = "STROM_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    group_initial_rebalance_delay_ms: Option<u64>,
    /// group.min.session.timeout.ms [default: 1000].
    #[arg(long, env = "STROM_GROUP_MIN_SESSION_TIMEOUT_MS")]
    group_min_session_timeout_ms: Option<i32>,
    /// group.consumer.heartbeat.interval.ms: heartbeat interval of KIP-848 consumer group members [default: 10 ms per member of the group, 500 to 5000].
    #[arg(long, env = "STROM_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS")]
    group_consumer_heartbeat_interval_ms: Option<i32>,
    /// group.consumer.session.timeout.ms: KIP-848 members not heard from for this long are removed [default: 45000].
    #[arg(long, env = "STROM_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    group_consumer_session_timeout_ms: Option<i32>,
    /// offsets.retention.minutes: committed offsets of empty groups expire after this [default: 10080].
    #[arg(long, env = "STROM_OFFSETS_RETENTION_MINUTES")]
    offsets_retention_minutes: Option<i64>,
    /// log.cleaner.dedupe.buffer.size: bytes of the log cleaners' offset maps [default: 134217728].
    #[arg(long, env = "STROM_LOG_CLEANER_DEDUPE_BUFFER_SIZE")]
    log_cleaner_dedupe_buffer_size: Option<usize>,
    /// log.cleaner.threads: cleaner passes at once [default: 1].
    #[arg(long, env = "STROM_LOG_CLEANER_THREADS")]
    log_cleaner_threads: Option<usize>,
    /// log.cleaner.backoff.ms: the cleaner's sleep when no log is due [default: 15000].
    #[arg(long, env = "STROM_LOG_CLEANER_BACKOFF_MS")]
    log_cleaner_backoff_ms: Option<u64>,
    /// offsets.topic.segment.bytes: segment size of the groups' internal log [default: 104857600].
    #[arg(long, env = "STROM_OFFSETS_TOPIC_SEGMENT_BYTES")]
    offsets_topic_segment_bytes: Option<u64>,
    /// group.share.partition.max.record.locks: records in flight per share-partition [default: 2000].
    #[arg(long, env = "STROM_GROUP_SHARE_PARTITION_MAX_RECORD_LOCKS")]
    group_share_partition_max_record_locks: Option<usize>,
    /// group.share.record.lock.duration.ms: default acquisition lock of share groups [default: 30000].
    #[arg(long, env = "STROM_GROUP_SHARE_RECORD_LOCK_DURATION_MS")]
    group_share_record_lock_duration_ms: Option<i64>,
    /// Log filter (error, warn, info, debug, trace or a tracing directive) [default: info].
    #[arg(long, env = "STROM_LOG_LEVEL")]
    log_level: Option<String>,
    /// Cluster mode: etcd's client URLs, comma-separated (http://127.0.0.1:2379,...). Needs
    /// --node-id; without it the broker runs alone and uses no etcd.
    #[arg(long, env = "STROM_CLUSTER_ETCD")]
    cluster_etcd: Option<String>,
    /// Cluster mode: the cluster's name, its etcd prefix /strom/NAME/ [default: strom].
    #[arg(long, env = "STROM_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Cluster mode: this broker's rack (broker.rack), for rack-aware replica placement.
    #[arg(long, env = "STROM_RACK")]
    rack: Option<String>,
    /// Cluster mode: a broker whose etcd lease is not refreshed for this long is dead, and
    /// one that cannot refresh it stops leading [default: 3000].
    #[arg(long, env = "STROM_CLUSTER_SESSION_TIMEOUT_MS")]
    cluster_session_timeout_ms: Option<u64>,
    /// Cluster mode: replica.lag.time.max.ms, a follower not caught up for this long leaves
    /// the ISR [default: 10000].
    #[arg(long, env = "STROM_REPLICA_LAG_TIME_MAX_MS")]
    replica_lag_time_max_ms: Option<u64>,
    /// Cluster mode: default.replication.factor of topics created without one [default: 1].
    #[arg(long, env = "STROM_DEFAULT_REPLICATION_FACTOR")]
    default_replication_factor: Option<i16>,
}

/// The same settings in the TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    kafka_addr: Option<String>,
    listeners: Option<String>,
    listener_security_protocol_map: Option<String>,
    advertised_listeners: Option<String>,
    advertised_addr: Option<String>,
    http_addr: Option<String>,
    grpc_addr: Option<String>,
    grpc_tls: Option<bool>,
    grpc_auth: Option<String>,
    grpc_max_message_bytes: Option<usize>,
    grpc_compression: Option<String>,
    grpc_max_connections: Option<usize>,
    grpc_stall_timeout_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    http_tls: Option<bool>,
    sasl_mechanisms: Option<String>,
    connections_max_reauth_ms: Option<u64>,
    connection_failed_authentication_delay_ms: Option<u64>,
    authorizer: Option<String>,
    super_users: Option<String>,
    http_auth: Option<String>,
    metrics_auth: Option<String>,
    ws_buffer_records: Option<usize>,
    ws_slow_policy: Option<String>,
    ws_ping_interval_ms: Option<u64>,
    auto_create_topics: Option<bool>,
    num_partitions: Option<i32>,
    delay_max_ms: Option<i64>,
    transaction_max_timeout_ms: Option<i32>,
    max_request_bytes: Option<usize>,
    queued_max_request_bytes: Option<usize>,
    kafka_max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    http_max_connections: Option<usize>,
    listen_backlog: Option<u32>,
    log_max_open_files: Option<usize>,
    connections_max_idle_ms: Option<u64>,
    read_timeout_ms: Option<u64>,
    http_buffer_bytes: Option<usize>,
    http_connection_buffer_bytes: Option<usize>,
    retention_check_interval_ms: Option<u64>,
    node_id: Option<i32>,
    group_initial_rebalance_delay_ms: Option<u64>,
    group_min_session_timeout_ms: Option<i32>,
    group_consumer_heartbeat_interval_ms: Option<i32>,
    group_consumer_session_timeout_ms: Option<i32>,
    offsets_retention_minutes: Option<i64>,
    log_cleaner_dedupe_buffer_size: Option<usize>,
    log_cleaner_threads: Option<usize>,
    log_cleaner_backoff_ms: Option<u64>,
    offsets_topic_segment_bytes: Option<u64>,
    group_share_partition_max_record_locks: Option<usize>,
    group_share_record_lock_duration_ms: Option<i64>,
    log_level: Option<String>,
    cluster_etcd: Option<String>,
    cluster_name: Option<String>,
    rack: Option<String>,
    cluster_session_timeout_ms: Option<u64>,
    replica_lag_time_max_ms: Option<u64>,
    default_replication_factor: Option<i16>,
}

/// Resolved settings.
struct Settings {
    broker: BrokerConfig,
    groups: GroupConfig,
    shares: ShareConfig,
    txns: TxnConfig,
    kafka: KafkaConfig,
    http_addr: Option<String>,
    http: strom_http::HttpConfig,
    grpc_addr: Option<String>,
    grpc: strom_grpc::GrpcConfig,
    fds: FdBudget,
    listen_backlog: u32,
    log_level: String,
    /// Cluster mode (`--cluster-etcd`): how to join; the Kafka address comes from the door.
    cluster: Option<ClusterSettings>,
}

/// The cluster flags, resolved.
struct ClusterSettings {
    endpoints: Vec<String>,
    name: String,
    rack: Option<String>,
    session_timeout: Duration,
    replica_lag: Duration,
    default_replication_factor: i16,
}

fn resolve(mut a: ServeArgs) -> Result<Settings> {
    let mut f = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let (kafka_tls, http_tls, grpc_tls) = resolve_tls(&mut a, &mut f)?;
    let listeners = resolve_listeners(&mut a, &mut f, kafka_tls.is_some())?;
    let data_dir = a
        .data_dir
        .or(f.data_dir)
        .unwrap_or_else(|| "strom-data".into());
    let mut broker = BrokerConfig::new(data_dir);
    broker.auto_create_topics = a
        .auto_create_topics
        .or(f.auto_create_topics)
        .unwrap_or(true);
    broker.num_partitions = a.num_partitions.or(f.num_partitions).unwrap_or(1);
    if broker.num_partitions < 1 {
        bail!("--num-partitions must be at least 1");
    }
    broker.acl_authorizer = match a.authorizer.take().or(f.authorizer.take()).as_deref() {
        None | Some("none") => false,
        Some("acl") => true,
        Some(other) => bail!("--authorizer must be acl or none, not {other:?}"),
    };
    broker.super_users = parse_super_users(
        a.super_users
            .take()
            .or(f.super_users.take())
            .as_deref()
            .unwrap_or(""),
    )?;
    let mut txns = TxnConfig::default();
    if let Some(ms) = a
        .transaction_max_timeout_ms
        .or(f.transaction_max_timeout_ms)
    {
        if ms < 1 {
            bail!("--transaction-max-timeout-ms must be at least 1");
        }
        txns.max_timeout_ms = ms;
    }
    if let Some(ms) = a.delay_max_ms.or(f.delay_max_ms) {
        if ms < 0 {
            bail!("--delay-max-ms must not be negative");
        }
        broker.delay_max_ms = ms;
    }
    if let Some(ms) = a
        .retention_check_interval_ms
        .or(f.retention_check_interval_ms)
    {
        if ms == 0 {
            bail!("--retention-check-interval-ms must be positive");
        }
        broker.retention_check_interval_ms = ms;
    }
    let node_id = a.node_id.or(f.node_id);
    let cluster = match a.cluster_etcd.take().or(f.cluster_etcd.take()) {
        None => None,
        Some(urls) => {
            if node_id.is_none() {
                bail!("--cluster-etcd needs --node-id: every broker of a cluster has its own");
            }
            let endpoints: Vec<String> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| {
                    if u.contains("://") {
                        u.to_string()
                    } else {
                        format!("http://{u}")
                    }
                })
                .collect();
            if endpoints.is_empty() {
                bail!("--cluster-etcd names no endpoint");
            }
            let rf = a
                .default_replication_factor
                .or(f.default_replication_factor)
                .unwrap_or(1);
            if rf < 1 {
                bail!("--default-replication-factor must be at least 1");
            }
            Some(ClusterSettings {
                endpoints,
                name: a
                    .cluster_name
                    .take()
                    .or(f.cluster_name.take())
                    .unwrap_or_else(|| "strom".to_string()),
                rack: a.rack.take().or(f.rack.take()),
                session_timeout: Duration::from_millis(
                    a.cluster_session_timeout_ms
                        .or(f.cluster_session_timeout_ms)
                        .unwrap_or(3000)
                        .max(1000),
                ),
                replica_lag: Duration::from_millis(
                    a.replica_lag_time_max_ms
                        .or(f.replica_lag_time_max_ms)
                        .unwrap_or(10_000)
                        .max(100),
                ),
                default_replication_factor: rf,
            })
        }
    };
    if let Some(id) = node_id {
        broker.node_id = id;
    }
    if let Some(n) = a
        .log_cleaner_dedupe_buffer_size
        .or(f.log_cleaner_dedupe_buffer_size)
    {
        if n < strom_broker::strom_log::CLEANER_ENTRY_BYTES {
            bail!(
                "--log-cleaner-dedupe-buffer-size must be at least {}",
                strom_broker::strom_log::CLEANER_ENTRY_BYTES
            );
        }
        broker.log_cleaner_dedupe_buffer_size = n;
    }
    if let Some(n) = a.log_cleaner_threads.or(f.log_cleaner_threads) {
        if !(1..=64).contains(&n) {
            bail!("--log-cleaner-threads must be in [1, 64]");
        }
        broker.log_cleaner_threads = n;
    }
    if let Some(ms) = a.log_cleaner_backoff_ms.or(f.log_cleaner_backoff_ms) {
        if ms == 0 {
            bail!("--log-cleaner-backoff-ms must be positive");
        }
        broker.log_cleaner_backoff_ms = ms;
    }
    let max_request_bytes = a
        .max_request_bytes
        .or(f.max_request_bytes)
        .unwrap_or(100 * 1024 * 1024);
    if max_request_bytes < 64 {
        bail!("--max-request-bytes must be at least 64");
    }
    let queued_max_request_bytes = a
        .queued_max_request_bytes
        .or(f.queued_max_request_bytes)
        .unwrap_or(100 * 1024 * 1024);
    if queued_max_request_bytes < 64 {
        bail!("--queued-max-request-bytes must be at least 64");
    }
    // The open-files limit is raised before the budget is taken (see `serve`); the caps are
    // computed from the limit in force at start.
    raise_open_files_limit();
    let mut fds = FdBudget::current(
        a.kafka_max_connections.or(f.kafka_max_connections),
        a.http_max_connections.or(f.http_max_connections),
    );
    if let Some(n) = a.log_max_open_files.or(f.log_max_open_files) {
        if n < strom_broker::strom_log::MIN_OPEN_FILES_BUDGET {
            bail!(
                "--log-max-open-files must be at least {}",
                strom_broker::strom_log::MIN_OPEN_FILES_BUDGET
            );
        }
        fds.log_files = n;
    }
    if fds.kafka_max_connections == 0 || fds.http_max_connections == 0 {
        bail!("--kafka-max-connections and --http-max-connections must be at least 1");
    }
    let listen_backlog = a.listen_backlog.or(f.listen_backlog).unwrap_or(4096).max(1);
    let per_ip = a
        .max_connections_per_ip
        .or(f.max_connections_per_ip)
        .unwrap_or(usize::MAX);
    if per_ip == 0 {
        bail!("--max-connections-per-ip must be at least 1");
    }
    let idle = Duration::from_millis(
        a.connections_max_idle_ms
            .or(f.connections_max_idle_ms)
            .unwrap_or(600_000)
            .max(1),
    );
    let read_timeout = Duration::from_millis(
        a.read_timeout_ms
            .or(f.read_timeout_ms)
            .unwrap_or(10_000)
            .max(1),
    );
    let sasl_mechanisms = parse_sasl_mechanisms(
        a.sasl_mechanisms
            .take()
            .or(f.sasl_mechanisms.take())
            .as_deref()
            .unwrap_or("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"),
    )?;
    let connections_max_reauth = a
        .connections_max_reauth_ms
        .or(f.connections_max_reauth_ms)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    let failed_authentication_delay = Duration::from_millis(
        a.connection_failed_authentication_delay_ms
            .or(f.connection_failed_authentication_delay_ms)
            .unwrap_or(100),
    );
    let mut groups = GroupConfig::default();
    if let Some(ms) = a
        .group_initial_rebalance_delay_ms
        .or(f.group_initial_rebalance_delay_ms)
    {
        groups.initial_rebalance_delay_ms = ms;
    }
    if let Some(ms) = a
        .group_min_session_timeout_ms
        .or(f.group_min_session_timeout_ms)
    {
        groups.min_session_timeout_ms = ms;
    }
    if let Some(ms) = a
        .group_consumer_heartbeat_interval_ms
        .or(f.group_consumer_heartbeat_interval_ms)
    {
        groups.consumer_heartbeat_interval_ms = ms.max(1);
        groups.consumer_heartbeat_adaptive = false;
    }
    if let Some(ms) = a
        .group_consumer_session_timeout_ms
        .or(f.group_consumer_session_timeout_ms)
    {
        groups.consumer_session_timeout_ms = ms.max(1);
    }
    if let Some(m) = a.offsets_retention_minutes.or(f.offsets_retention_minutes) {
        if m < 1 {
            bail!("--offsets-retention-minutes must be at least 1");
        }
        groups.offsets_retention_ms = m.saturating_mul(60_000);
    }
    if let Some(n) = a
        .offsets_topic_segment_bytes
        .or(f.offsets_topic_segment_bytes)
    {
        if !(strom_broker::strom_log::SEGMENT_BYTES_MIN
            ..=strom_broker::strom_log::SEGMENT_BYTES_MAX)
            .contains(&n)
        {
            bail!(
                "--offsets-topic-segment-bytes must be in [{}, {}]",
                strom_broker::strom_log::SEGMENT_BYTES_MIN,
                strom_broker::strom_log::SEGMENT_BYTES_MAX
            );
        }
        groups.offsets_topic_segment_bytes = n;
    }
    let mut shares = ShareConfig::default();
    if let Some(n) = a
        .group_share_partition_max_record_locks
        .or(f.group_share_partition_max_record_locks)
    {
        if !(100..=10_000).contains(&n) {
            bail!("--group-share-partition-max-record-locks must be in [100, 10000]");
        }
        shares.max_record_locks = n;
    }
    if let Some(ms) = a
        .group_share_record_lock_duration_ms
        .or(f.group_share_record_lock_duration_ms)
    {
        if !(1000..=3_600_000).contains(&ms) {
            bail!("--group-share-record-lock-duration-ms must be in [1000, 3600000]");
        }
        shares.record_lock_duration_ms = ms;
    }
    Ok(Settings {
        cluster,
        broker,
        groups,
        shares,
        txns,
        kafka: KafkaConfig {
            listeners,
            max_request_bytes,
            queued_max_request_bytes,
            max_connections: fds.kafka_max_connections,
            max_connections_per_ip: per_ip,
            listen_backlog,
            connections_max_idle: idle,
            read_timeout,
            tls: kafka_tls,
            sasl_mechanisms,
            connections_max_reauth,
            failed_authentication_delay,
        },
        fds,
        http_addr: a.http_addr.or(f.http_addr),
        http: strom_http::HttpConfig {
            ws_buffer_records: a
                .ws_buffer_records
                .or(f.ws_buffer_records)
                .unwrap_or(4096)
                .max(1),
            ws_ping_interval: std::time::Duration::from_millis(
                a.ws_ping_interval_ms
                    .or(f.ws_ping_interval_ms)
                    .unwrap_or(30_000),
            ),
            ws_slow_policy: match a.ws_slow_policy.or(f.ws_slow_policy).as_deref() {
                None | Some("close") => strom_http::SlowPolicy::Close,
                Some("skip-to-latest") => strom_http::SlowPolicy::SkipToLatest,
                Some(other) => {
                    anyhow::bail!("--ws-slow-policy must be close or skip-to-latest, not {other:?}")
                }
            },
            max_connections: fds.http_max_connections,
            max_connections_per_ip: per_ip,
            idle_timeout: idle,
            read_timeout,
            buffer_bytes: a
                .http_buffer_bytes
                .or(f.http_buffer_bytes)
                .unwrap_or(256 << 20)
                .max(1 << 16),
            connection_buffer_bytes: a
                .http_connection_buffer_bytes
                .or(f.http_connection_buffer_bytes)
                .unwrap_or(8 << 20)
                .max(1 << 16),
            tls: http_tls,
            auth: auth_mode("--http-auth", a.http_auth.take().or(f.http_auth.take()))?,
            metrics_auth: auth_mode(
                "--metrics-auth",
                a.metrics_auth.take().or(f.metrics_auth.take()),
            )?,
            failed_auth_delay: failed_authentication_delay,
            ..strom_http::HttpConfig::default()
        },
        grpc_addr: a.grpc_addr.take().or(f.grpc_addr.take()),
        grpc: strom_grpc::GrpcConfig {
            max_message_bytes: a
                .grpc_max_message_bytes
                .or(f.grpc_max_message_bytes)
                .unwrap_or(8 << 20)
                .max(1 << 10),
            send_compression: match a.grpc_compression.take().or(f.grpc_compression.take()) {
                None => strom_grpc::Compression::None,
                Some(c) => strom_grpc::Compression::parse(&c).with_context(|| {
                    format!("--grpc-compression must be none, gzip or zstd, not {c:?}")
                })?,
            },
            auth_required: auth_mode("--grpc-auth", a.grpc_auth.take().or(f.grpc_auth.take()))?
                == strom_http::AuthMode::Required,
            failed_auth_delay: failed_authentication_delay,
            tls: grpc_tls,
            max_connections: a
                .grpc_max_connections
                .or(f.grpc_max_connections)
                .unwrap_or(1024)
                .max(1),
            max_connections_per_ip: per_ip,
            stall_timeout: Duration::from_millis(
                a.grpc_stall_timeout_ms
                    .or(f.grpc_stall_timeout_ms)
                    .unwrap_or(30_000)
                    .max(1),
            ),
            ..strom_grpc::GrpcConfig::default()
        },
        listen_backlog,
        log_level: a.log_level.or(f.log_level).unwrap_or_else(|| "info".into()),
    })
}

/// The Kafka door's listeners: `--listeners` or its short form `--kafka-addr` (one of them,
/// from the flags and environment, else from the file), their protocols and advertised
/// addresses (`--advertised-listeners` or, for one listener, `--advertised-addr`). A listener
/// whose protocol is not served yet is refused here, before anything is opened.
/// `--sasl-mechanisms`: a comma-separated list of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
/// `User:admin;User:ops` (`,` also separates, as some tools write it).
fn parse_super_users(s: &str) -> Result<Vec<strom_broker::security::Principal>> {
    s.split([';', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            strom_broker::security::Principal::parse(p).ok_or_else(|| {
                anyhow::anyhow!("--super-users: {p:?} is not of the form User:<name>")
            })
        })
        .collect()
}

fn parse_sasl_mechanisms(s: &str) -> Result<Vec<Mechanism>> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let m = Mechanism::from_name(&name.to_ascii_uppercase()).with_context(|| {
            format!("--sasl-mechanisms: unknown mechanism {name:?} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
        })?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    anyhow::ensure!(!out.is_empty(), "--sasl-mechanisms names no mechanism");
    Ok(out)
}

fn resolve_listeners(
    a: &mut ServeArgs,
    f: &mut FileConfig,
    tls: bool,
) -> Result<Vec<ListenerConfig>> {
    let (listeners, kafka_addr) = if a.listeners.is_some() || a.kafka_addr.is_some() {
        (a.listeners.take(), a.kafka_addr.take())
    } else {
        (f.listeners.take(), f.kafka_addr.take())
    };
    let (adv_listeners, adv_addr) =
        if a.advertised_listeners.is_some() || a.advertised_addr.is_some() {
            (a.advertised_listeners.take(), a.advertised_addr.take())
        } else {
            (f.advertised_listeners.take(), f.advertised_addr.take())
        };
    let map = a
        .listener_security_protocol_map
        .take()
        .or(f.listener_security_protocol_map.take());
    if adv_listeners.is_some() && adv_addr.is_some() {
        bail!(
            "--advertised-listeners and --advertised-addr are both given: --advertised-addr \
             HOST:PORT is the one-listener short form of --advertised-listeners NAME://HOST:PORT; \
             give one of them"
        );
    }
    let mut out = match (listeners, kafka_addr) {
        (Some(_), Some(_)) => bail!(
            "--listeners and --kafka-addr are both given: --kafka-addr ADDR is short for \
             --listeners PLAINTEXT://ADDR; give one of them"
        ),
        (Some(spec), None) => {
            listener::parse_listeners(&spec, map.as_deref(), adv_listeners.as_deref())?
        }
        (None, addr) => {
            if let Some(m) = &map {
                listener::parse_protocol_map("--listener-security-protocol-map", m)?;
            }
            let addr = addr.unwrap_or_else(|| "127.0.0.1:9092".into());
            let listen: SocketAddr = addr
                .to_socket_addrs()
                .with_context(|| format!("invalid --kafka-addr {addr:?}"))?
                .next()
                .with_context(|| format!("--kafka-addr {addr:?} resolves to nothing"))?;
            let mut out = vec![ListenerConfig::plaintext(listen)];
            if let Some(adv) = &adv_listeners {
                listener::apply_advertised(&mut out, adv)?;
            }
            out
        }
    };
    if let Some(s) = adv_addr {
        if out.len() != 1 {
            bail!(
                "--advertised-addr is for a single listener; with {} listeners give \
                 --advertised-listeners NAME://HOST:PORT,... instead",
                out.len()
            );
        }
        let (h, p) = listener::parse_host_port("--advertised-addr", &s)?;
        out[0].advertised = Some(listener::check_advertised("--advertised-addr", h, p)?);
    }
    for l in &out {
        l.check_supported(tls)?;
    }
    Ok(out)
}

/// The TLS of the Kafka door's SSL listeners, of the HTTP door (`--http-tls true`) and of the
/// gRPC door (`--grpc-tls true`), loaded (so that a bad file stops the start with its name).
/// `--tls-cert` and `--tls-key` go together; the HTTP and gRPC doors do not ask for client
/// certificates.
type DoorTls = Option<Arc<strom_tls::Tls>>;
fn resolve_tls(a: &mut ServeArgs, f: &mut FileConfig) -> Result<(DoorTls, DoorTls, DoorTls)> {
    let cert = a.tls_cert.take().or(f.tls_cert.take());
    let key = a.tls_key.take().or(f.tls_key.take());
    let client_ca = a.tls_client_ca.take().or(f.tls_client_ca.take());
    let http = a.http_tls.or(f.http_tls).unwrap_or(false);
    let grpc = a.grpc_tls.or(f.grpc_tls).unwrap_or(false);
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => {
            if client_ca.is_some() {
                bail!("--tls-client-ca needs --tls-cert and --tls-key");
            }
            if http {
                bail!("--http-tls true needs --tls-cert and --tls-key");
            }
            if grpc {
                bail!("--grpc-tls true needs --tls-cert and --tls-key");
            }
            return Ok((None, None, None));
        }
        (Some(_), None) => bail!("--tls-cert needs --tls-key"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
    };
    let files = strom_tls::TlsFiles {
        cert,
        key,
        client_ca,
    };
    let without_ca = |on: bool, alpn: &[u8]| -> Result<DoorTls> {
        if !on {
            return Ok(None);
        }
        let files = strom_tls::TlsFiles {
            client_ca: None,
            ..files.clone()
        };
        Ok(Some(Arc::new(strom_tls::Tls::load(
            files,
            vec![alpn.to_vec()],
        )?)))
    };
    let http = without_ca(http, b"http/1.1")?;
    let grpc = without_ca(grpc, b"h2")?;
    Ok((
        Some(Arc::new(strom_tls::Tls::load(files, vec![])?)),
        http,
        grpc,
    ))
}

/// Runs the broker until SIGTERM or SIGINT.
pub(crate) fn run(args: ServeArgs) -> Result<()> {
    let s = resolve(args)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&s.log_level)
        .with_context(|| format!("invalid --log-level {:?}", s.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strom")
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(serve(s))
}

async fn serve(s: Settings) -> Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %s.broker.data_dir.display(), "strom starting");
    tracing::info!(
        open_files = s.fds.limit,
        log_reserve = s.fds.reserve,
        log_max_open_files = s.fds.log_files,
        kafka_max_connections = s.fds.kafka_max_connections,
        http_max_connections = s.fds.http_max_connections,
        "descriptor budget"
    );
    strom_broker::strom_log::set_open_files_budget(s.fds.log_files);
    let data_dir = s.broker.data_dir.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(s.broker))
        .await?
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    let b = broker.clone();
    let exists: PartitionExists = Arc::new(move |t: &str, p: i32| b.partition(t, p).is_ok());
    let (dir, gconf) = (data_dir.clone(), s.groups.clone());
    let groups = tokio::task::spawn_blocking(move || GroupCoordinator::open(&dir, gconf, exists))
        .await?
        .context("cannot load the consumer groups")?;
    let b = broker.clone();
    groups.set_topics(Arc::new(move || {
        b.topics()
            .into_iter()
            .filter(|t| !t.internal)
            .map(|t| (t.name, t.partitions))
            .collect()
    }));
    let coordinator = tokio::spawn(groups.clone().run());
    broker.add_compacted_log(".strom/groups", groups.store_log());
    let (dir, b, g, sconf) = (
        data_dir.clone(),
        broker.clone(),
        groups.clone(),
        s.shares.clone(),
    );
    let shares =
        tokio::task::spawn_blocking(move || ShareCoordinator::open(&dir, sconf, b, Some(g)))
            .await?
            .context("cannot load the share groups")?;
    let share_ticker = tokio::spawn(shares.clone().run());
    let (dir, b, g, tconf) = (
        data_dir.clone(),
        broker.clone(),
        groups.clone(),
        s.txns.clone(),
    );
    let txns = tokio::task::spawn_blocking(move || TxnCoordinator::open(&dir, tconf, b, g))
        .await?
        .context("cannot load the transactions")?;
    let txn_ticker = tokio::spawn(txns.clone().run());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server = KafkaServer::bind(
        s.kafka.clone(),
        broker.clone(),
        groups.clone(),
        shares.clone(),
    )
    .await
    .context("cannot start the Kafka door")?;
    server.set_transactions(txns.clone());
    for (name, addr, advertised) in server.listeners() {
        tracing::info!(listener = %name, %addr, %advertised, "kafka listener ready");
    }
    // Cluster mode: join before the door accepts anything, so that no partition is served
    // before the cluster says who leads it.
    let node = match &s.cluster {
        None => None,
        Some(c) => Some(join_cluster(c, &broker, &server).await?),
    };
    // The HTTP door starts last: its /broker (the console's overview) lists every door's
    // listeners.
    let mut listeners: Vec<strom_http::ListenerInfo> = server
        .listeners()
        .into_iter()
        .map(|(name, addr, advertised)| strom_http::ListenerInfo {
            door: "kafka",
            name,
            address: addr.to_string(),
            advertised: Some(advertised),
        })
        .collect();
    let grpc = start_grpc(
        s.grpc_addr.as_deref(),
        s.grpc.clone(),
        &broker,
        &groups,
        &shares,
        stop_rx.clone(),
        s.listen_backlog,
    )
    .await?;
    if let Some((_, addr)) = &grpc {
        listeners.push(strom_http::ListenerInfo {
            door: "grpc",
            name: if s.grpc.tls.is_some() {
                "GRPCS"
            } else {
                "GRPC"
            }
            .to_string(),
            address: addr.to_string(),
            advertised: None,
        });
    }
    let mut http_config = s.http.clone();
    http_config.listeners = listeners;
    let http = start_http(
        s.http_addr.as_deref(),
        http_config,
        &broker,
        &groups,
        &shares,
        stop_rx.clone(),
        s.listen_backlog,
    )
    .await?;
    let maintenance = tokio::spawn(broker.clone().run_maintenance());
    let delays = tokio::spawn(broker.clone().run_delays());
    let cleaner = tokio::spawn(broker.clone().run_cleaner());
    let serving = tokio::spawn(server.run(stop_rx, Duration::from_secs(10)));
    let reloadable: Vec<_> = [s.kafka.tls.clone(), s.http.tls.clone(), s.grpc.tls.clone()]
        .into_iter()
        .flatten()
        .collect();
    wait_for_signal(&reloadable).await?;
    tracing::info!("shutting down: draining connections");
    if let Some(node) = &node {
        // The controller moves this broker's leaderships now, not after the session timeout.
        node.leave().await;
    }
    let _ = stop_tx.send(true);
    broker.stop_waiting();
    let _ = serving.await;
    if let Some(h) = http {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    if let Some((g, _)) = grpc {
        let _ = tokio::time::timeout(Duration::from_secs(10), g).await;
    }
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.shutdown())
        .await?
        .context("flushing the logs at shutdown")?;
    maintenance.abort();
    delays.abort();
    cleaner.abort();
    coordinator.abort();
    txn_ticker.abort();
    txns.close();
    shares.close();
    share_ticker.abort();
    groups.close();
    tracing::info!("strom stopped");
    Ok(())
}

/// Joins the cluster as the first Kafka listener advertises this broker.
async fn join_cluster(
    c: &ClusterSettings,
    broker: &Arc<Broker>,
    server: &KafkaServer,
) -> Result<strom_cluster::Node> {
    let (_, _, advertised) = server
        .listeners()
        .into_iter()
        .next()
        .context("cluster mode needs a Kafka listener")?;
    let (host, port) = advertised
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<i32>().ok()?)))
        .with_context(|| format!("advertised address {advertised:?} is not HOST:PORT"))?;
    let config = strom_cluster::ClusterConfig {
        node_id: broker.node_id(),
        endpoints: c.endpoints.clone(),
        cluster_name: c.name.clone(),
        host,
        port,
        rack: c.rack.clone(),
        session_timeout: c.session_timeout,
        replica_lag: c.replica_lag,
        default_replication_factor: c.default_replication_factor,
    };
    let node = strom_cluster::Node::start(broker.clone(), config)
        .await
        .with_context(|| {
            format!(
                "cannot join the cluster through etcd {}",
                c.endpoints.join(",")
            )
        })?;
    Ok(node)
}

/// Binds and spawns the HTTP door. The default address is best effort (a taken port is
/// logged, not fatal); an address given explicitly must work.
async fn start_http(
    addr: Option<&str>,
    config: strom_http::HttpConfig,
    broker: &Arc<Broker>,
    groups: &Arc<GroupCoordinator>,
    shares: &Arc<ShareCoordinator>,
    stop: watch::Receiver<bool>,
    backlog: u32,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let explicit = addr.is_some();
    let addr = addr.unwrap_or("127.0.0.1:8080");
    if addr == "off" {
        return Ok(None);
    }
    let bound = addr
        .to_socket_addrs()
        .and_then(|mut a| a.next().ok_or_else(|| std::io::ErrorKind::NotFound.into()))
        .and_then(|a| strom_broker::limits::listen(a, backlog));
    let listener = match bound {
        Ok(l) => l,
        Err(e) if !explicit => {
            tracing::warn!(%addr, error = %e, "HTTP door not started: the default address is taken (set --http-addr)");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on --http-addr {addr}")),
    };
    tracing::info!(addr = %listener.local_addr()?, "http listener ready");
    let (b, g, sh) = (broker.clone(), groups.clone(), shares.clone());
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = strom_http::serve(listener, b, g, sh, config, stop).await {
            tracing::error!(error = %e, "HTTP door failed");
        }
    })))
}

/// Binds and spawns the gRPC door, as [`start_http`] the HTTP door.
async fn start_grpc(
    addr: Option<&str>,
    config: strom_grpc::GrpcConfig,
    broker: &Arc<Broker>,
    groups: &Arc<GroupCoordinator>,
    shares: &Arc<ShareCoordinator>,
    stop: watch::Receiver<bool>,
    backlog: u32,
) -> Result<Option<(tokio::task::JoinHandle<()>, std::net::SocketAddr)>> {
    let explicit = addr.is_some();
    let addr = addr.unwrap_or("127.0.0.1:9095");
    if addr == "off" {
        return Ok(None);
    }
    let bound = addr
        .to_socket_addrs()
        .and_then(|mut a| a.next().ok_or_else(|| std::io::ErrorKind::NotFound.into()))
        .and_then(|a| strom_broker::limits::listen(a, backlog));
    let listener = match bound {
        Ok(l) => l,
        Err(e) if !explicit => {
            tracing::warn!(%addr, error = %e, "gRPC door not started: the default address is taken (set --grpc-addr)");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on --grpc-addr {addr}")),
    };
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, tls = config.tls.is_some(), "grpc listener ready");
    let (b, g, sh) = (broker.clone(), groups.clone(), shares.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = strom_grpc::serve(listener, b, g, sh, config, stop).await {
            tracing::error!(error = %e, "gRPC door failed");
        }
    });
    Ok(Some((task, local)))
}

/// Waits for SIGTERM or SIGINT; meanwhile each SIGHUP re-reads the TLS files of `tls` (a
/// failed reload is logged and keeps the certificate in use).
async fn wait_for_signal(tls: &[Arc<strom_tls::Tls>]) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = hup.recv() => {
                if tls.is_empty() {
                    tracing::info!("SIGHUP received: no TLS certificate to reload");
                }
                for t in tls {
                    match t.reload() {
                        Ok(()) => tracing::info!(cert = %t.files().cert.display(), "SIGHUP: TLS certificate reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded, the previous one stays in use"),
                    }
                }
                continue;
            }
        }
        return Ok(());
    }
}

/// Every segment keeps its data file open and every connection is a socket: raise the soft
/// limit on open files to the hard limit (as `ulimit -n unlimited`-style deployments of Kafka
/// do). When it is still exhausted, opening a partition fails with KAFKA_STORAGE_ERROR
/// ("Too many open files") and the broker keeps serving everything else.
fn raise_open_files_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(raise_open_files_limit_now);
}

fn raise_open_files_limit_now() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                lim.rlim_cur = before;
            }
        }
    }
    // Logging is not set up yet when this runs (`resolve`): the limit is logged with the
    // descriptor budget at start.
    let _ = lim;
}

/// `none` or `required` (`--http-auth`, `--metrics-auth`).
fn auth_mode(flag: &str, v: Option<String>) -> Result<strom_http::AuthMode> {
    match v.as_deref() {
        None => Ok(strom_http::AuthMode::None),
        Some(s) => strom_http::AuthMode::parse(s)
            .with_context(|| format!("{flag} must be none or required, not {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_kafka::SecurityProtocol;

    fn flags(listeners: Option<&str>, kafka_addr: Option<&str>) -> ServeArgs {
        ServeArgs {
            listeners: listeners.map(Into::into),
            kafka_addr: kafka_addr.map(Into::into),
            ..ServeArgs::default()
        }
    }

    fn listeners(mut a: ServeArgs, mut f: FileConfig) -> Result<Vec<ListenerConfig>> {
        resolve_listeners(&mut a, &mut f, false)
    }

    fn error(a: ServeArgs, f: FileConfig) -> String {
        format!("{:#}", listeners(a, f).expect_err("an error"))
    }

    #[test]
    fn kafka_addr_is_a_plaintext_listener_and_the_default() {
        let ls = listeners(flags(None, Some("127.0.0.1:9999")), FileConfig::default()).unwrap();
        assert_eq!(
            ls,
            vec![ListenerConfig::plaintext("127.0.0.1:9999".parse().unwrap())]
        );
        let ls = listeners(ServeArgs::default(), FileConfig::default()).unwrap();
        assert_eq!(ls[0].listen, "127.0.0.1:9092".parse().unwrap());
    }

    #[test]
    fn listeners_with_advertised_listeners() {
        let mut a = flags(Some("PLAINTEXT://127.0.0.1:1,OUTSIDE://0.0.0.0:2"), None);
        a.listener_security_protocol_map = Some("OUTSIDE:PLAINTEXT".into());
        a.advertised_listeners = Some("OUTSIDE://kafka.example:443".into());
        let ls = listeners(a, FileConfig::default()).unwrap();
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[1].protocol, SecurityProtocol::Plaintext);
        assert_eq!(ls[1].advertised, Some(("kafka.example".into(), 443)));
    }

    #[test]
    fn both_forms_at_once_are_refused() {
        let e = error(
            flags(Some("PLAINTEXT://127.0.0.1:1"), Some("127.0.0.1:1")),
            FileConfig::default(),
        );
        assert!(
            e.contains("--listeners and --kafka-addr are both given"),
            "{e}"
        );
        let mut a = flags(None, Some("127.0.0.1:1"));
        a.advertised_addr = Some("h:1".into());
        a.advertised_listeners = Some("PLAINTEXT://h:1".into());
        let e = error(a, FileConfig::default());
        assert!(
            e.contains("--advertised-listeners and --advertised-addr"),
            "{e}"
        );
    }

    #[test]
    fn advertised_addr_is_for_one_listener() {
        let mut a = flags(None, Some("0.0.0.0:1"));
        a.advertised_addr = Some("[::1]:7".into());
        let ls = listeners(a, FileConfig::default()).unwrap();
        assert_eq!(ls[0].advertised, Some(("::1".into(), 7)));
        let mut a = flags(Some("PLAINTEXT://127.0.0.1:1,X://127.0.0.1:2"), None);
        a.listener_security_protocol_map = Some("X:PLAINTEXT".into());
        a.advertised_addr = Some("h:1".into());
        let e = error(a, FileConfig::default());
        assert!(
            e.contains("with 2 listeners give --advertised-listeners"),
            "{e}"
        );
        let mut a = flags(None, Some("127.0.0.1:1"));
        a.advertised_addr = Some("0.0.0.0:1".into());
        let e = error(a, FileConfig::default());
        assert!(e.contains("unspecified address"), "{e}");
    }

    #[test]
    fn tls_listeners_without_a_certificate_are_refused() {
        for p in ["SSL", "SASL_SSL"] {
            let spec = format!("PLAINTEXT://127.0.0.1:1,{p}://0.0.0.0:2");
            let e = error(flags(Some(&spec), None), FileConfig::default());
            assert!(e.contains("give its certificate with --tls-cert"), "{e}");
        }
        let spec = "PLAINTEXT://127.0.0.1:1,SASL_PLAINTEXT://0.0.0.0:2";
        assert_eq!(
            listeners(flags(Some(spec), None), FileConfig::default())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn the_config_file_has_the_same_keys_and_flags_win() {
        let f: FileConfig = toml::from_str(
            r#"
            listeners = "PLAINTEXT://127.0.0.1:5,IN://127.0.0.1:6"
            listener_security_protocol_map = "IN:PLAINTEXT"
            advertised_listeners = "IN://in.example:6"
            "#,
        )
        .unwrap();
        let ls = listeners(ServeArgs::default(), f).unwrap();
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[1].advertised, Some(("in.example".into(), 6)));
        // A flag's --kafka-addr replaces the file's listeners (no conflict across layers).
        let f: FileConfig = toml::from_str(r#"listeners = "PLAINTEXT://127.0.0.1:5""#).unwrap();
        let ls = listeners(flags(None, Some("127.0.0.1:8")), f).unwrap();
        assert_eq!(ls[0].listen.port(), 8);
        // Within the file both forms at once are refused too.
        let f: FileConfig = toml::from_str(
            r#"
            listeners = "PLAINTEXT://127.0.0.1:5"
            kafka_addr = "127.0.0.1:5"
            "#,
        )
        .unwrap();
        assert!(error(ServeArgs::default(), f).contains("both given"));
    }
}
