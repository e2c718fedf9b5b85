//! # strom-http: the HTTP door
//!
//! REST topics/produce/fetch, Server-Sent Events and WebSocket push, Prometheus metrics and
//! health checks over the same [`Broker`] the Kafka door uses. Records produced here are
//! built into Kafka record batches (`strom_broker::records`) and land in the partition a Kafka
//! client would choose for their key (murmur2); fetched batches are decoded (every codec) into
//! JSON. Client mistakes get a 4xx with `{"error": {"code", "message"}}`; nothing is written
//! when a request is refused.
//!
//! No client can take the door down for the others: `conn` runs its own accept loop (a
//! connection cap answered with 503, recovery when the process runs out of descriptors,
//! header / idle / write timeouts) and `budget` bounds the bytes of answers waiting for slow
//! readers, per connection and in total.

mod api;
mod auth;
mod budget;
mod conn;
mod console;
mod fanout;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod groups;
mod metrics;
mod push;
mod queues;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use strom_broker::coordinator::GroupCoordinator;
use strom_broker::share::ShareCoordinator;
use strom_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::AuthMode;
pub use metrics::Metrics;

/// What a WebSocket subscriber whose queue is full gets (`--ws-slow-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Closed with 1013 (the client reconnects and picks its position).
    Close,
    /// The records it cannot take are skipped until its queue has drained; then it gets a
    /// `skipped` message with the offset ranges it missed, and the stream goes on. Group and
    /// queue subscriptions always close (their positions are committed).
    SkipToLatest,
}

/// Settings of the HTTP door.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest request body (413 above).
    pub max_body_bytes: usize,
    /// Records buffered per WebSocket before a slow client is disconnected (close 1013).
    pub ws_buffer_records: usize,
    /// What a WebSocket subscriber that does not keep up gets.
    pub ws_slow_policy: SlowPolicy,
    /// Pings to each WebSocket this often; silent for two intervals = closed (zero: off).
    pub ws_ping_interval: std::time::Duration,
    /// Connections held at most; one more gets a 503 and is closed (the fd budget's share).
    pub max_connections: usize,
    /// Connections one client address holds at most; one more gets a 503.
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// A request whose head stops arriving for this long is closed (slowloris).
    pub read_timeout: std::time::Duration,
    /// Bytes of responses waiting for slow readers, all connections together.
    pub buffer_bytes: usize,
    /// Bytes of responses waiting for one connection's reader.
    pub connection_buffer_bytes: usize,
    /// HTTPS with this certificate (`--http-tls true`); `None`: plain HTTP.
    pub tls: Option<Arc<strom_tls::Tls>>,
    /// Whether every route but the health checks, /openapi.json and /metrics needs
    /// credentials (`--http-auth`).
    pub auth: AuthMode,
    /// Whether /metrics needs credentials (`--metrics-auth`; with the authorizer on, also
    /// DESCRIBE on the cluster).
    pub metrics_auth: AuthMode,
    /// A 401 is answered after this long (`--connection-failed-authentication-delay-ms`).
    pub failed_auth_delay: std::time::Duration,
    /// The other doors' listeners, shown by `GET /broker` (this door adds its own).
    pub listeners: Vec<ListenerInfo>,
}

/// One listener of a door, as `GET /broker` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ListenerInfo {
    /// `kafka`, `http` or `grpc`.
    pub door: &'static str,
    /// The listener's name (a Kafka listener's, e.g. `SASL_SSL`; `HTTP`, `HTTPS`, `GRPC`...).
    pub name: String,
    /// The address it is bound to.
    pub address: String,
    /// What Kafka clients are told to connect to (Kafka listeners).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 8 << 20,
            ws_buffer_records: 4096,
            ws_slow_policy: SlowPolicy::Close,
            ws_ping_interval: std::time::Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_ip: usize::MAX,
            idle_timeout: std::time::Duration::from_secs(600),
            read_timeout: std::time::Duration::from_secs(10),
            buffer_bytes: 256 << 20,
            connection_buffer_bytes: 8 << 20,
            tls: None,
            auth: AuthMode::None,
            metrics_auth: AuthMode::None,
            failed_auth_delay: auth::FAILED_AUTH_DELAY,
            listeners: Vec::new(),
        }
    }
}

/// What handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) broker: Arc<Broker>,
    pub(crate) groups: Arc<GroupCoordinator>,
    /// The share-group coordinator (queues).
    pub(crate) shares: Arc<ShareCoordinator>,
    /// The door's share members, one per group.
    pub(crate) queues: Arc<queues::QueueMembers>,
    /// Group members that consume over HTTP, by member id.
    pub(crate) members: Arc<Mutex<HashMap<String, groups::HttpMember>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: HttpConfig,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Bytes of answers waiting for their readers.
    pub(crate) budget: Arc<budget::Budget>,
    /// Shared followers of WebSocket subscribers from `latest`.
    pub(crate) tails: Arc<fanout::Tails>,
    /// When the door started (the console's uptime).
    pub(crate) started: std::time::Instant,
}

/// The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
/// request types' `ToSchema`/`IntoParams` derives.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Strom HTTP door",
        description = "Any request may be answered `503` with `{\"error\":{\"code\":\"too_many_connections\",...}}`, `Retry-After: 1` and `Connection: close` when the door holds its maximum of connections (`--http-max-connections`) or the broker is out of file descriptors; the connection is closed without reading the request. A request head that is not complete within `--read-timeout-ms` of its first byte, or a keep-alive connection without a request for `--connections-max-idle-ms`, is closed. Fetches and group polls answer `503 server_busy` with `Retry-After` when answers waiting for slow readers hold the door's whole buffer (`--http-buffer-bytes`)."
    ),
    paths(
        api::healthz,
        api::readyz,
        metrics::render,
        api::openapi,
        console::broker,
        groups::list_groups,
        groups::describe_group,
        groups::reset_offsets,
        api::list_topics,
        api::create_topic,
        api::describe_topic,
        api::delete_topic,
        api::produce,
        api::alter_configs,
        api::add_partitions,
        api::fetch,
        queues::redrive,
        push::sse,
        push::websocket,
        groups::join,
        groups::poll,
        groups::commit_offsets,
        groups::leave,
        queues::receive,
        queues::ack,
        queues::renew,
        queues::describe,
        queues::get_config,
        queues::set_config
    ),
    components(schemas(
        api::ErrorBody,
        api::ErrorDetail,
        api::CreateTopic,
        groups::ResetOffsets,
        api::AlterConfigs,
        api::AddPartitions,
        api::ProduceBody,
        api::InRecord,
        api::Format,
        api::IsolationParam,
        api::FetchResponse,
        api::FetchError,
        groups::JoinBody,
        groups::CommitBody,
        groups::CommitOffset,
        queues::ReceiveBody,
        queues::AckBody,
        queues::AckItem,
        queues::RenewBody,
        queues::ConfigBody
    ))
)]
struct ApiDoc;

pub(crate) fn openapi_document() -> serde_json::Value {
    serde_json::to_value(<ApiDoc as utoipa::OpenApi>::openapi()).unwrap_or_default()
}

/// The router (exposed for tests and embedding).
fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(api::openapi))
        .route("/broker", get(console::broker))
        .route("/console", get(console::index))
        .route("/examples/chat", get(console::chat))
        .route("/console/{*path}", get(console::path))
        .route("/topics", get(api::list_topics).post(api::create_topic))
        .route(
            "/topics/{topic}",
            get(api::describe_topic).delete(api::delete_topic),
        )
        .route("/topics/{topic}/records", post(api::produce))
        .route(
            "/topics/{topic}/configs",
            axum::routing::patch(api::alter_configs),
        )
        .route("/topics/{topic}/partitions", post(api::add_partitions))
        .route(
            "/topics/{topic}/partitions/{partition}/records",
            get(api::fetch),
        )
        .route("/topics/{topic}/events", get(push::sse))
        .route("/ws", get(push::websocket))
        .route("/groups", get(groups::list_groups))
        .route("/groups/{group}", get(groups::describe_group))
        .route("/groups/{group}/offsets/reset", post(groups::reset_offsets))
        .route("/groups/{group}/members", post(groups::join))
        .route(
            "/groups/{group}/members/{member}",
            axum::routing::delete(groups::leave),
        )
        .route(
            "/groups/{group}/members/{member}/records",
            get(groups::poll),
        )
        .route(
            "/groups/{group}/members/{member}/commit",
            post(groups::commit_offsets),
        )
        .route(
            "/topics/{topic}/partitions/{partition}/records/{offset}/redrive",
            post(queues::redrive),
        )
        .route("/queues/{group}", get(queues::describe))
        .route("/queues/{group}/receive", post(queues::receive))
        .route("/queues/{group}/ack", post(queues::ack))
        .route("/queues/{group}/renew", post(queues::renew))
        .route(
            "/queues/{group}/config",
            get(queues::get_config).post(queues::set_config),
        )
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves HTTP on `listener` until `shutdown` turns true (graceful: in-flight requests end).
/// The door's own accept loop (see `conn`): a connection cap answered with 503, recovery
/// from running out of descriptors, header / idle / write timeouts.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    groups: Arc<GroupCoordinator>,
    shares: Arc<ShareCoordinator>,
    config: HttpConfig,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let mut config = config;
    if let Ok(addr) = listener.local_addr() {
        config.listeners.push(ListenerInfo {
            door: "http",
            name: if config.tls.is_some() {
                "HTTPS"
            } else {
                "HTTP"
            }
            .to_string(),
            address: addr.to_string(),
            advertised: None,
        });
    }
    let state = AppState {
        broker: broker.clone(),
        groups,
        shares,
        queues: Arc::new(queues::QueueMembers::new()),
        members: Arc::new(Mutex::new(HashMap::new())),
        metrics: metrics.clone(),
        config: config.clone(),
        shutdown: shutdown.clone(),
        budget: Arc::new(budget::Budget::new(
            config.buffer_bytes,
            config.connection_buffer_bytes,
        )),
        tails: Arc::new(fanout::Tails::default()),
        started: std::time::Instant::now(),
    };
    let door = conn::Door::new(router(state), config, metrics, broker);
    conn::run(listener, door, shutdown).await;
    Ok(())
}
