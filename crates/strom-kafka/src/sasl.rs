//! SASL on the Kafka door: SaslHandshake v0-1, SaslAuthenticate v0-2 (and v0's raw tokens),
//! re-authentication (KIP-368, `connections.max.reauth.ms`), and the SCRAM credential APIs
//! (DescribeUserScramCredentials, AlterUserScramCredentials). The exchanges themselves are
//! the core's (`strom_broker::security::sasl`); this module keeps a connection's state and
//! translates frames.
//!
//! On a SASL listener a connection may send only ApiVersions, SaslHandshake and
//! SaslAuthenticate until it has authenticated ([`gate`]), in frames of at most
//! [`PRE_AUTH_MAX_REQUEST_BYTES`]; anything else closes it. A failed authentication is
//! answered after `connection.failed.authentication.delay.ms` and closes the connection. On
//! a listener without SASL both SASL APIs answer ILLEGAL_SASL_STATE.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as E;
use strom_broker::security::credentials::{Change, CredentialError};
use strom_broker::security::sasl::{Mechanism, SaslServer, Step};
use strom_broker::security::scram::ScramMechanism;

use crate::server::{sb, Ctx, Fatal, Listener, Reply, Req};
use strom_broker::security::acl::Operation;

/// Largest request frame before a connection on a SASL listener has authenticated: an
/// ApiVersions or SASL request needs a few hundred bytes, so strangers cannot make the
/// broker buffer the 100 MiB an authenticated producer may send.
pub(crate) const PRE_AUTH_MAX_REQUEST_BYTES: usize = 64 << 10;

/// A connection's SASL state (connections on SASL listeners only).
#[derive(Default)]
pub(crate) struct SaslConn {
    /// The exchange a handshake started.
    exchange: Option<SaslServer>,
    /// The handshake was v0: the exchange's tokens come as raw length-prefixed frames.
    raw: bool,
    /// Whom the connection authenticated as.
    user: Option<String>,
    /// When the session ends (`connections.max.reauth.ms`): a request other than the
    /// SASL ones after it closes the connection.
    expires: Option<Instant>,
    /// Why an exchange failed: the connection closes once its reply is sent.
    failed: Option<String>,
}

impl std::fmt::Debug for SaslConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslConn")
            .field("exchange", &self.exchange.as_ref().map(|e| e.mechanism()))
            .field("raw", &self.raw)
            .field("user", &self.user)
            .finish()
    }
}

/// A connection's shared SASL state.
pub(crate) type SaslState = Arc<Mutex<SaslConn>>;

impl SaslConn {
    /// Whether an exchange succeeded on this connection.
    pub(crate) fn authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// Whether the next frame is a raw v0 token.
    pub(crate) fn raw_token_next(&self) -> bool {
        self.raw && self.exchange.is_some()
    }

    /// The authenticated user.
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Why the connection must close, once a failed exchange's reply is sent.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }
}

/// Locks a connection's state (a panic elsewhere cannot poison it into refusing service).
pub(crate) fn lock(s: &SaslState) -> std::sync::MutexGuard<'_, SaslConn> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a request of `api` may be handled now on a SASL connection.
pub(crate) fn gate(conn: &SaslConn, api: i16) -> Result<(), Fatal> {
    const OPEN: [i16; 3] = [
        ApiKey::ApiVersions as i16,
        ApiKey::SaslHandshake as i16,
        ApiKey::SaslAuthenticate as i16,
    ];
    if OPEN.contains(&api) {
        return Ok(());
    }
    if !conn.authenticated() {
        return Err(Fatal(format!(
            "request of api {api} before SASL authentication"
        )));
    }
    if conn.expires.is_some_and(|t| Instant::now() >= t) {
        return Err(Fatal(
            "SASL session expired without re-authentication (connections.max.reauth.ms)".into(),
        ));
    }
    Ok(())
}

/// What one token led to.
pub(crate) enum Outcome {
    /// Send these bytes back (a challenge, or the server's final message).
    Reply { bytes: Vec<u8>, lifetime_ms: i64 },
    /// The exchange failed: answer with this code and message, then close.
    Failed { code: i16, message: String },
}

/// Feeds `token` to the connection's exchange.
pub(crate) fn step(
    state: &SaslState,
    token: &[u8],
    ctx: &Ctx,
    peer: std::net::SocketAddr,
    listener: &Listener,
) -> Outcome {
    let mut c = lock(state);
    let Some(mut exchange) = c.exchange.take() else {
        let message = "SaslAuthenticate without a SaslHandshake first".to_string();
        c.failed = Some(message.clone());
        return Outcome::Failed {
            code: E::IllegalSaslState.code(),
            message,
        };
    };
    let mechanism = exchange.mechanism().name();
    let step = exchange.step(token);
    let fail = |c: &mut SaslConn, message: String| {
        tracing::info!(%peer, listener = %listener.name, mechanism, reason = %message,
            "kafka SASL authentication failed");
        c.failed = Some(format!("SASL authentication failed: {message}"));
        Outcome::Failed {
            code: E::SaslAuthenticationFailed.code(),
            message,
        }
    };
    match step {
        Ok(Step::Challenge(bytes)) => {
            c.exchange = Some(exchange);
            Outcome::Reply {
                bytes,
                lifetime_ms: 0,
            }
        }
        Ok(Step::Done { user, response }) => {
            if let Some(before) = c.user.as_deref() {
                if before != user {
                    let msg = format!(
                        "re-authentication as user {user:?} on a connection of user {before:?}"
                    );
                    return fail(&mut c, msg);
                }
            }
            let reauth = c.user.is_some();
            let lifetime = ctx.config.connections_max_reauth;
            c.expires = lifetime.map(|d| Instant::now() + d);
            tracing::info!(%peer, listener = %listener.name, mechanism, principal = %format!("User:{user}"), reauth,
                "kafka client authenticated by SASL");
            c.user = Some(user);
            c.raw = false;
            Outcome::Reply {
                bytes: response,
                lifetime_ms: lifetime.map_or(0, |d| d.as_millis() as i64),
            }
        }
        Err(e) => fail(&mut c, e.0),
    }
}

/// SaslHandshake: picks the mechanism of the exchange that follows.
pub(crate) fn handshake(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: SaslHandshakeRequest = req.decode()?;
    let enabled = &req.ctx.config.sasl_mechanisms;
    let mechanisms: Vec<StrBytes> = enabled
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect();
    let answer = |code: i16| {
        SaslHandshakeResponse::default()
            .with_error_code(code)
            .with_mechanisms(mechanisms.clone())
    };
    let Some(state) = &req.sasl else {
        return req.encode(&answer(E::IllegalSaslState.code()));
    };
    let mut c = lock(state);
    if c.exchange.is_some() {
        c.failed = Some("SaslHandshake during a SASL exchange".into());
        drop(c);
        return req.encode(&answer(E::IllegalSaslState.code()));
    }
    let wanted = r.mechanism.as_str();
    let Some(mechanism) = Mechanism::from_name(wanted).filter(|m| enabled.contains(m)) else {
        tracing::info!(peer = %req.peer, mechanism = wanted, "kafka SASL handshake with a mechanism not enabled");
        c.failed = Some(format!("SASL mechanism {wanted:?} is not enabled"));
        drop(c);
        return req.encode(&answer(E::UnsupportedSaslMechanism.code()));
    };
    let credentials = match req.ctx.broker.credentials() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SASL handshake refused: the credential store cannot be read");
            c.failed = Some("the credential store cannot be read".into());
            drop(c);
            return req.encode(&answer(E::IllegalSaslState.code()));
        }
    };
    c.exchange = Some(SaslServer::new(mechanism, credentials));
    c.raw = req.version == 0;
    drop(c);
    req.encode(&answer(0))
}

/// SaslAuthenticate: one token of the exchange.
pub(crate) async fn authenticate(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: SaslAuthenticateRequest = req.decode()?;
    let outcome = match &req.sasl {
        Some(state) => step(state, &r.auth_bytes, req.ctx, req.peer, &req.listener),
        None => Outcome::Failed {
            code: E::IllegalSaslState.code(),
            message: format!("listener {} does not use SASL", req.listener.name),
        },
    };
    let resp = match outcome {
        Outcome::Reply { bytes, lifetime_ms } => SaslAuthenticateResponse::default()
            .with_auth_bytes(Bytes::from(bytes))
            .with_session_lifetime_ms(lifetime_ms),
        Outcome::Failed { code, message } => {
            if req.sasl.is_some() {
                tokio::time::sleep(req.ctx.config.failed_authentication_delay).await;
            }
            SaslAuthenticateResponse::default()
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message)))
        }
    };
    req.encode(&resp)
}

/// DescribeUserScramCredentials: every user, or the users named.
pub(crate) fn describe_user_scram_credentials(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeUserScramCredentialsRequest = req.decode()?;
    if let Some((c, msg)) = req.cluster_denied(Operation::Describe) {
        return req.encode(
            &DescribeUserScramCredentialsResponse::default()
                .with_error_code(c)
                .with_error_message(Some(sb(msg))),
        );
    }
    let store = match req.ctx.broker.credentials() {
        Ok(s) => s,
        Err(e) => {
            return req.encode(
                &DescribeUserScramCredentialsResponse::default()
                    .with_error_code(E::UnknownServerError.code())
                    .with_error_message(Some(sb(e.to_string()))),
            )
        }
    };
    let all = store.list();
    let info = |mechs: &[(ScramMechanism, u32)]| {
        mechs
            .iter()
            .map(|(m, i)| {
                CredentialInfo::default()
                    .with_mechanism(m.code())
                    .with_iterations(*i as i32)
            })
            .collect::<Vec<_>>()
    };
    let results = match r.users.filter(|u| !u.is_empty()) {
        None => all
            .iter()
            .map(|(user, mechs)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(sb(user.clone()))
                    .with_credential_infos(info(mechs))
            })
            .collect(),
        Some(users) => {
            let mut seen: Vec<&str> = Vec::new();
            users
                .iter()
                .map(|u| {
                    let name = u.name.as_str();
                    let res = DescribeUserScramCredentialsResult::default().with_user(sb(name));
                    if seen.contains(&name) {
                        return res
                            .with_error_code(E::DuplicateResource.code())
                            .with_error_message(Some(sb(format!("user {name:?} is named twice"))));
                    }
                    seen.push(name);
                    match all.iter().find(|(n, _)| n == name) {
                        Some((_, mechs)) => res.with_credential_infos(info(mechs)),
                        None => res
                            .with_error_code(E::ResourceNotFound.code())
                            .with_error_message(Some(sb(format!(
                                "user {name:?} has no SCRAM credential"
                            )))),
                    }
                })
                .collect()
        }
    };
    req.encode(&DescribeUserScramCredentialsResponse::default().with_results(results))
}

/// AlterUserScramCredentials: deletions and upsertions, one result per user.
pub(crate) fn alter_user_scram_credentials(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: AlterUserScramCredentialsRequest = req.decode()?;
    // Per user: the first error, as Kafka answers (one result per user named).
    let mut users: Vec<(String, Option<(i16, String)>)> = Vec::new();
    let mut changes: Vec<(usize, Change)> = Vec::new();
    let note = |users: &mut Vec<(String, Option<(i16, String)>)>, name: &str| match users
        .iter()
        .position(|(u, _)| u == name)
    {
        Some(i) => i,
        None => {
            users.push((name.to_string(), None));
            users.len() - 1
        }
    };
    let mut touched: Vec<(String, i8)> = Vec::new();
    let entries = r
        .deletions
        .iter()
        .map(|d| (d.name.as_str(), d.mechanism, None))
        .chain(r.upsertions.iter().map(|u| {
            (
                u.name.as_str(),
                u.mechanism,
                Some((u.iterations, &u.salt, &u.salted_password)),
            )
        }));
    for (name, mech, set) in entries {
        let i = note(&mut users, name);
        let fail = |users: &mut Vec<(String, Option<(i16, String)>)>, code: i16, msg: String| {
            if users[i].1.is_none() {
                users[i].1 = Some((code, msg));
            }
        };
        if name.is_empty() {
            fail(
                &mut users,
                E::UnacceptableCredential.code(),
                "the user name is empty".into(),
            );
            continue;
        }
        let Some(m) = ScramMechanism::from_code(mech) else {
            fail(
                &mut users,
                E::UnsupportedSaslMechanism.code(),
                format!("unknown SCRAM mechanism type {mech}"),
            );
            continue;
        };
        if touched.iter().any(|(u, c)| u == name && *c == mech) {
            fail(
                &mut users,
                E::DuplicateResource.code(),
                format!("user {name:?} {} is altered twice", m.name()),
            );
            continue;
        }
        touched.push((name.to_string(), mech));
        let change = match set {
            None => Change::Delete {
                user: name.to_string(),
                mechanism: m,
            },
            Some((iterations, salt, salted)) => Change::Set {
                user: name.to_string(),
                mechanism: m,
                iterations: iterations.max(0) as u32,
                salt: salt.to_vec(),
                salted_password: salted.to_vec(),
            },
        };
        changes.push((i, change));
    }
    if let Some((c, msg)) = req.cluster_denied(Operation::Alter) {
        for u in users.iter_mut() {
            u.1 = Some((c, msg.clone()));
        }
    }
    // A user with any refused entry has none of its entries applied.
    changes.retain(|(i, _)| users[*i].1.is_none());
    if !changes.is_empty() {
        match req.ctx.broker.credentials() {
            Ok(store) => {
                let list: Vec<Change> = changes.iter().map(|(_, c)| c.clone()).collect();
                for ((i, _), res) in changes.iter().zip(store.apply(&list)) {
                    if let Err(e) = res {
                        let code = match e {
                            CredentialError::Unacceptable(_) => E::UnacceptableCredential.code(),
                            CredentialError::NotFound(_) => E::ResourceNotFound.code(),
                            CredentialError::Io(_) => E::UnknownServerError.code(),
                        };
                        if users[*i].1.is_none() {
                            users[*i].1 = Some((code, e.to_string()));
                        }
                    }
                }
            }
            Err(e) => {
                for (i, _) in &changes {
                    users[*i].1 = Some((E::UnknownServerError.code(), e.to_string()));
                }
            }
        }
    }
    for (user, err) in &users {
        match err {
            None => tracing::info!(peer = %req.peer, principal = %req.principal, user = %user,
                "SCRAM credentials altered"),
            Some((_, msg)) => tracing::info!(peer = %req.peer, user = %user, reason = %msg,
                "SCRAM credential change refused"),
        }
    }
    let results = users
        .into_iter()
        .map(|(user, err)| {
            let res = AlterUserScramCredentialsResult::default().with_user(sb(user));
            match err {
                None => res,
                Some((code, msg)) => res.with_error_code(code).with_error_message(Some(sb(msg))),
            }
        })
        .collect();
    req.encode(&AlterUserScramCredentialsResponse::default().with_results(results))
}
