//! The web console (`/console`): a single-page app of plain ES modules embedded in the binary
//! (no build step, no CDN). Every path under `/console` that is not an asset answers the page
//! itself, so a deep link (`/console/topics/orders?partition=0&offset=42`) opens where it
//! points; the app routes with the History API and talks only to the door's public API.
//! `GET /broker` is the API the overview needs and nothing else gave.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use strom_broker::security::acl::{Operation, ResourceType, CLUSTER_NAME};

use crate::auth::Caller;
use crate::AppState;

const INDEX: &str = include_str!("../console/index.html");
/// The chat example (`examples/chat/`), served at `/examples/chat`.
const CHAT: &str = include_str!("../../../examples/chat/index.html");
/// The assets: (name under /console/assets/, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
];

/// An embedded file with its content type, never cached stale (`no-cache`: revalidated).
fn embedded(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

fn page() -> Response {
    embedded("text/html; charset=utf-8", INDEX)
}

/// `GET /examples/chat`: the chat example's page.
pub(crate) async fn chat() -> Response {
    embedded("text/html; charset=utf-8", CHAT)
}

/// `GET /console`: the app.
pub(crate) async fn index() -> Response {
    page()
}

/// `GET /console/{*path}`: an asset, or the app for any other path (its client-side routes).
pub(crate) async fn path(Path(path): Path<String>) -> Response {
    let Some(name) = path.strip_prefix("assets/") else {
        return page();
    };
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => embedded(kind, body),
        None => crate::api::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no console asset {name:?}"),
        )
        .into_response(),
    }
}

/// `GET /broker`: what the console's overview shows: version, start time and uptime, every
/// door's listeners, the data
/// directory and the bytes its partitions hold, topic and partition counts.
#[utoipa::path(get, path = "/broker", responses((status = 200, description = "broker summary"),
    (status = 403, body = crate::api::ErrorBody)))]
pub(crate) async fn broker(
    State(s): State<AppState>,
    caller: Caller,
) -> crate::api::ApiResult<Json<Value>> {
    caller.allow(&s, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME)?;
    let (mut partitions, mut bytes, mut offline) = (0usize, 0u64, 0usize);
    let topics = s.broker.topics();
    for t in topics.iter().filter_map(|t| s.broker.topic(&t.name)) {
        for p in t.partitions().iter() {
            partitions += 1;
            match p.log() {
                Ok(log) if p.offline_reason().is_none() => bytes += log.size_bytes(),
                _ => offline += 1,
            }
        }
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let uptime_ms = s.started.elapsed().as_millis() as i64;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at_ms": now_ms - uptime_ms,
        "uptime_ms": uptime_ms,
        "listeners": s.config.listeners,
        "data_dir": s.broker.config().data_dir.display().to_string(),
        "data_bytes": bytes,
        "topics": topics.iter().filter(|t| !t.internal).count(),
        "partitions": partitions,
        "offline_partitions": offline,
    })))
}
