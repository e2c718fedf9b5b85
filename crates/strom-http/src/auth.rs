//! Who is calling the HTTP door, and whether they may.
//!
//! Every request passes [`authenticate`]: HTTP Basic (checked against the SCRAM store of
//! `strom user set`, the same users the Kafka door's SASL logins use), or a bearer token of
//! `strom token create` in `Authorization: Bearer` or, for browsers, whose WebSocket and
//! EventSource cannot set headers, a `token` query parameter. Credentials that are present
//! but wrong are always refused with 401, a `WWW-Authenticate` challenge and the Kafka door's
//! failed-authentication delay; absent credentials are `User:ANONYMOUS` unless the door
//! requires authentication (`--http-auth required`; `/metrics` by `--metrics-auth`).
//! `/healthz`, `/readyz` and `/openapi.json` are open to all (probes and tooling).
//!
//! Handlers take the [`Caller`] and ask [`Caller::allow`] before acting, with the same
//! operations and resources as the Kafka door's APIs (WRITE topic to produce, READ topic
//! and group to consume...): 403 `forbidden` for an authenticated caller, 401 for an
//! anonymous one (credentials might help). Neither the password nor the token is logged.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use strom_broker::quota::QuotaKind;
use strom_broker::security::acl::{Operation, ResourceType, Who, CLUSTER_NAME};
use strom_broker::security::tokens::Verdict;
use strom_broker::security::Principal;

use crate::api::ApiError;
use crate::AppState;

/// Whether requests must carry credentials (`--http-auth`, `--metrics-auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Credentials are optional: without them the caller is `User:ANONYMOUS` (whom the
    /// authorizer, when on, allows only what ACLs grant it).
    #[default]
    None,
    /// A request without valid credentials is refused with 401.
    Required,
}

impl AuthMode {
    /// `none` or `required`.
    pub fn parse(s: &str) -> Option<AuthMode> {
        match s {
            "none" => Some(AuthMode::None),
            "required" => Some(AuthMode::Required),
            _ => None,
        }
    }
}

/// The peer address of a connection, put in every request's extensions by `conn`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerIp(pub(crate) IpAddr);

/// Who is calling and from where.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) host: IpAddr,
}

impl Caller {
    /// Whether the authorizer lets this caller do `op` on `rt`/`name`.
    pub(crate) fn may(&self, s: &AppState, op: Operation, rt: ResourceType, name: &str) -> bool {
        s.broker.authorizer().authorize(
            Who {
                principal: &self.principal,
                host: self.host,
            },
            op,
            rt,
            name,
        )
    }

    /// Ok when the authorizer lets this caller do `op` on `rt`/`name`; else the refusal.
    pub(crate) fn allow(
        &self,
        s: &AppState,
        op: Operation,
        rt: ResourceType,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.may(s, op, rt, name) {
            Ok(())
        } else {
            Err(self.denied(op, rt, name))
        }
    }

    /// Refuses with 429 and `Retry-After` a request of `bytes` that the caller's `kind`
    /// quota would throttle for more than [`QUOTA_REFUSE_AFTER`] (nothing done: no data
    /// lost, the client retries later).
    pub(crate) fn quota_gate(
        &self,
        s: &AppState,
        kind: QuotaKind,
        bytes: usize,
    ) -> Result<(), ApiError> {
        let wait = s
            .broker
            .quota_wait(kind, (&self.principal, HTTP_CLIENT_ID), bytes);
        if wait <= QUOTA_REFUSE_AFTER {
            return Ok(());
        }
        s.broker.metrics().throttled(Duration::ZERO);
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!(
                "{}'s {} quota is exceeded; retry in {} ms",
                self.principal,
                kind.key(),
                wait.as_millis()
            ),
        )
        .retry_after(wait.as_secs_f64().ceil() as u64))
    }

    /// Whether a `kind` quota applies to the caller: a push stream of such a caller follows
    /// the log at the pace its quota allows instead of joining a topic's shared tail.
    pub(crate) fn has_quota(&self, s: &AppState, kind: QuotaKind) -> bool {
        s.broker.has_quota(kind, (&self.principal, HTTP_CLIENT_ID))
    }

    /// Charges `bytes` done to the caller's `kind` quota and waits out the throttle, as the
    /// Kafka door mutes a throttled connection.
    pub(crate) async fn quota_charge(&self, s: &AppState, kind: QuotaKind, bytes: usize) {
        let t = self.quota_debit(s, kind, bytes);
        if !t.is_zero() {
            tokio::time::sleep(t).await;
        }
    }

    /// Charges `bytes` to the caller's `kind` quota and returns the throttle the caller
    /// must wait out (counted as a throttled request when not zero), for a push stream
    /// that holds its next records back that long.
    pub(crate) fn quota_debit(&self, s: &AppState, kind: QuotaKind, bytes: usize) -> Duration {
        debit(&s.broker, &self.principal, kind, bytes)
    }

    /// CREATE of topic `name`: on the cluster or on the topic, as Kafka's CreateTopics.
    pub(crate) fn allow_create_topic(&self, s: &AppState, name: &str) -> Result<(), ApiError> {
        if self.may(s, Operation::Create, ResourceType::Cluster, CLUSTER_NAME) {
            return Ok(());
        }
        self.allow(s, Operation::Create, ResourceType::Topic, name)
    }

    /// The refusal of `op` on `rt`/`name`: 403, or 401 with a challenge for an anonymous
    /// caller.
    pub(crate) fn denied(&self, op: Operation, rt: ResourceType, name: &str) -> ApiError {
        if self.principal.is_anonymous() {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                format!(
                    "{} on {} {name:?} needs credentials (HTTP Basic or a bearer token)",
                    op.name(),
                    rt.name()
                ),
            )
            .challenge(Challenge::Login);
        }
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} may not {} {} {name:?}",
                self.principal,
                op.name(),
                rt.name()
            ),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // `authenticate` runs on every route; a request it did not see is a bug, refused.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "request not authenticated",
            )
        })
    }
}

/// What `WWW-Authenticate` says.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Challenge {
    /// No credentials, or wrong ones.
    Login,
    /// A bearer token that has expired or was revoked (RFC 6750 `invalid_token`).
    InvalidToken,
}

impl Challenge {
    pub(crate) fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Challenge::Login => "Basic realm=\"strom\", Bearer realm=\"strom\"",
            Challenge::InvalidToken => {
                "Bearer realm=\"strom\", error=\"invalid_token\", Basic realm=\"strom\""
            }
        })
    }
}

/// Paths open to everyone whatever the settings.
fn always_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json")
}

/// Credentials a request carries.
enum Presented {
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// An `Authorization` header of no scheme this door knows, or not decodable.
    Malformed(&'static str),
}

fn presented(req: &Request) -> Presented {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let Ok(v) = v.to_str() else {
            return Presented::Malformed("the Authorization header is not ASCII");
        };
        let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(decoded) = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            else {
                return Presented::Malformed("Basic credentials are not base64 of UTF-8");
            };
            let Some((user, password)) = decoded.split_once(':') else {
                return Presented::Malformed("Basic credentials are not user:password");
            };
            return Presented::Basic {
                user: user.to_string(),
                password: password.to_string(),
            };
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Presented::Bearer(rest.to_string());
        }
        return Presented::Malformed("the Authorization scheme is not Basic or Bearer");
    }
    let token = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    });
    match token {
        // Tokens are base64url: nothing in them is percent-encoded.
        Some(t) => Presented::Bearer(t),
        None => Presented::None,
    }
}

/// A 401, after the failed-authentication delay (as the Kafka door: slows guessing, keeps
/// the connection).
async fn refuse(
    s: &AppState,
    code: &'static str,
    message: String,
    challenge: Challenge,
) -> Response {
    s.metrics.auth_failed();
    if !s.config.failed_auth_delay.is_zero() {
        tokio::time::sleep(s.config.failed_auth_delay).await;
    }
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
        .challenge(challenge)
        .into_response()
}

/// The middleware: finds the caller, refuses bad or missing credentials, and hands the
/// [`Caller`] to the handler.
pub(crate) async fn authenticate(
    State(s): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let host = req
        .extensions()
        .get::<PeerIp>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0);
    let path = req.uri().path();
    let open = always_open(path);
    let metrics = path == "/metrics";
    let required = !open
        && if metrics {
            s.config.metrics_auth == AuthMode::Required
        } else {
            s.config.auth == AuthMode::Required
        };
    let principal = 'who: {
        match presented(&req) {
            Presented::None if required => {
                return refuse(
                &s,
                "unauthenticated",
                "credentials are required (HTTP Basic, or a bearer token in Authorization or ?token=)".into(),
                Challenge::Login,
            )
            .await;
            }
            Presented::None => Principal::anonymous(),
            _ if open => Principal::anonymous(),
            Presented::Malformed(why) => {
                return refuse(&s, "unauthenticated", why.into(), Challenge::Login).await;
            }
            Presented::Basic { user, password } => {
                let ok = match s.broker.credentials() {
                    Ok(c) => {
                        // PBKDF2 (a few ms) off the reactor.
                        let user = user.clone();
                        tokio::task::spawn_blocking(move || {
                            c.verify_password(&user, password.as_bytes())
                        })
                        .await
                        .unwrap_or(false)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "HTTP Basic login refused: the credential store cannot be read");
                        false
                    }
                };
                if !ok {
                    tracing::info!(%user, %host, "HTTP authentication failed: wrong user name or password");
                    return refuse(
                        &s,
                        "unauthenticated",
                        "wrong user name or password".into(),
                        Challenge::Login,
                    )
                    .await;
                }
                Principal::user(user)
            }
            Presented::Bearer(token) => {
                let verdict = match s.broker.tokens() {
                    Ok(t) => t.verify(&token),
                    Err(e) => {
                        tracing::error!(error = %e, "bearer token refused: the token store cannot be read");
                        Verdict::Unknown
                    }
                };
                let (code, why) = match verdict {
                    Verdict::Valid(p) => break 'who p,
                    Verdict::Expired => ("token_expired", "the bearer token has expired"),
                    Verdict::Unknown => {
                        ("unauthenticated", "the bearer token is unknown or revoked")
                    }
                };
                tracing::info!(%host, "HTTP authentication failed: {why}");
                return refuse(&s, code, why.into(), Challenge::InvalidToken).await;
            }
        }
    };
    let caller = Caller { principal, host };
    if metrics && s.config.metrics_auth == AuthMode::Required {
        // Metrics name every topic and group: with the authorizer on they need DESCRIBE on
        // the cluster.
        if let Err(e) = caller.allow(&s, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
            return e.into_response();
        }
    }
    let waits = waits_for_others(req.method(), req.uri().path());
    req.extensions_mut().insert(caller.clone());
    strip_token(&mut req);
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    // request_percentage: the time spent handling a request that does not wait for records
    // or for a rebalance (as the Kafka door leaves out Fetch, JoinGroup, SyncGroup and
    // ShareFetch); a throttled caller's answer is delayed by the throttle.
    if !waits {
        let us = started.elapsed().as_micros() as usize;
        caller
            .quota_charge(&s, QuotaKind::RequestTime, us.max(1))
            .await;
    }
    resp
}

/// Charges `bytes` to `principal`'s `kind` quota on the HTTP door and returns the throttle
/// (counted as a throttled request when not zero).
pub(crate) fn debit(
    broker: &strom_broker::Broker,
    principal: &Principal,
    kind: QuotaKind,
    bytes: usize,
) -> Duration {
    if bytes == 0 {
        return Duration::ZERO;
    }
    let t = broker.charge_quota(kind, (principal, HTTP_CLIENT_ID), bytes);
    if !t.is_zero() {
        broker.metrics().throttled(t);
    }
    t
}

/// Requests that wait for records or for other members: fetches and group polls (GET
/// `.../records`), push streams, queue receives and group joins.
fn waits_for_others(method: &axum::http::Method, path: &str) -> bool {
    (method == axum::http::Method::GET && path.ends_with("/records"))
        || path.ends_with("/events")
        || path == "/ws"
        || path.ends_with("/receive")
        || (path.starts_with("/groups/") && path.ends_with("/members"))
}

/// Takes the `token` parameter out of the query: handlers parse their queries strictly, and
/// nothing after this point (logs included) sees the token.
fn strip_token(req: &mut Request) {
    let Some(q) = req.uri().query() else { return };
    if !q
        .split('&')
        .any(|kv| kv == "token" || kv.starts_with("token="))
    {
        return;
    }
    let rest: Vec<&str> = q
        .split('&')
        .filter(|kv| !(*kv == "token" || kv.starts_with("token=")))
        .collect();
    let pq = if rest.is_empty() {
        req.uri().path().to_string()
    } else {
        format!("{}?{}", req.uri().path(), rest.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// A request its quota would throttle longer than this is refused with 429 instead.
pub(crate) const QUOTA_REFUSE_AFTER: Duration = Duration::from_secs(2);

/// The client id of HTTP requests for client quotas (`client-id=<default>` quotas apply).
pub(crate) const HTTP_CLIENT_ID: &str = "";

/// The default failed-authentication delay (the Kafka door's default too).
pub(crate) const FAILED_AUTH_DELAY: Duration = Duration::from_millis(100);
