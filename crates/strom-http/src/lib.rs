//! # strom-http: the HTTP door
//!
//! REST topics/produce/fetch, Server-Sent Events and WebSocket push, Prometheus metrics and
//! health checks over the same [`Broker`] the Kafka door uses. Records produced here are
//! built into Kafka record batches (`strom_broker::records`) and land in the partition a Kafka
//! client would choose for their key (murmur2); fetched batches are decoded (every codec) into
//! JSON. Client mistakes get a 4xx with `{"error": {"code", "message"}}`; nothing is written
//! when a request is refused.

mod api;
mod groups;
mod metrics;
mod push;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use strom_broker::coordinator::GroupCoordinator;
use strom_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use metrics::Metrics;

/// Settings of the HTTP door.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest request body (413 above).
    pub max_body_bytes: usize,
    /// Records buffered per WebSocket before a slow client is disconnected (close 1013).
    pub ws_buffer_records: usize,
    /// Connections held at most; one more gets a 503 and is closed (the fd budget's share).
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// A request whose head stops arriving for this long is closed (slowloris).
    pub read_timeout: std::time::Duration,
    /// Bytes of responses waiting for slow readers, all connections together.
    pub buffer_bytes: usize,
    /// Bytes of responses waiting for one connection's reader.
    pub connection_buffer_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 8 << 20,
            ws_buffer_records: 4096,
            max_connections: 4096,
            idle_timeout: std::time::Duration::from_secs(600),
            read_timeout: std::time::Duration::from_secs(10),
            buffer_bytes: 256 << 20,
            connection_buffer_bytes: 8 << 20,
        }
    }
}

/// What handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) broker: Arc<Broker>,
    pub(crate) groups: Arc<GroupCoordinator>,
    /// Group members that consume over HTTP, by member id.
    pub(crate) members: Arc<Mutex<HashMap<String, groups::HttpMember>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: HttpConfig,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
/// request types' `ToSchema`/`IntoParams` derives.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Strom HTTP door"),
    paths(
        api::healthz,
        api::readyz,
        metrics::render,
        api::openapi,
        api::list_topics,
        api::create_topic,
        api::describe_topic,
        api::delete_topic,
        api::produce,
        api::fetch,
        push::sse,
        push::websocket,
        groups::join,
        groups::poll,
        groups::commit_offsets,
        groups::leave
    ),
    components(schemas(
        api::ErrorBody,
        api::ErrorDetail,
        api::CreateTopic,
        api::ProduceBody,
        api::InRecord,
        api::Format,
        api::FetchResponse,
        api::FetchError,
        groups::JoinBody,
        groups::CommitBody,
        groups::CommitOffset
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
        .route("/topics", get(api::list_topics).post(api::create_topic))
        .route(
            "/topics/{topic}",
            get(api::describe_topic).delete(api::delete_topic),
        )
        .route("/topics/{topic}/records", post(api::produce))
        .route(
            "/topics/{topic}/partitions/{partition}/records",
            get(api::fetch),
        )
        .route("/topics/{topic}/events", get(push::sse))
        .route("/ws", get(push::websocket))
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
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves HTTP on `listener` until `shutdown` turns true (graceful: in-flight requests end).
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    groups: Arc<GroupCoordinator>,
    config: HttpConfig,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let state = AppState {
        broker,
        groups,
        members: Arc::new(Mutex::new(HashMap::new())),
        metrics: Arc::new(Metrics::default()),
        config,
        shutdown: shutdown.clone(),
    };
    let mut stop = shutdown;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
