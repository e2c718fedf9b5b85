//! How the client reaches its brokers: Kafka's `security.protocol` (PLAINTEXT, SSL,
//! SASL_PLAINTEXT, SASL_SSL), the TLS trust and identity, the SASL mechanism (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512) and credentials.
//!
//! A process talks to one cluster: [`set_security`] is called once, before the first
//! connection (the CLI does it from its flags), and every [`crate::Connection`] opened after
//! it uses it: TLS first, then SaslHandshake v1 and SaslAuthenticate v2 on the new socket,
//! before any other request.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    RequestHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use strom_tls::scram::ScramMechanism;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Connection, Error, Result};

/// A SASL mechanism the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    /// Kafka's name (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }

    pub fn from_name(s: &str) -> Option<Mechanism> {
        if s.eq_ignore_ascii_case("PLAIN") {
            return Some(Mechanism::Plain);
        }
        ScramMechanism::from_name(&s.to_ascii_uppercase()).map(Mechanism::Scram)
    }
}

/// SASL credentials.
#[derive(Clone)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism.name())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What every connection of the process does before its first request.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// TLS (SSL, SASL_SSL).
    pub tls: Option<Arc<strom_tls::rustls::ClientConfig>>,
    /// SASL (SASL_PLAINTEXT, SASL_SSL).
    pub sasl: Option<Sasl>,
}

static SECURITY: OnceLock<Security> = OnceLock::new();

/// Sets how this process's connections are secured; the first call wins (later ones are
/// refused), and connections opened before it are plaintext.
pub fn set_security(s: Security) -> Result<()> {
    SECURITY
        .set(s)
        .map_err(|_| Error::Invalid("the connection security is already set".into()))
}

pub(crate) fn security() -> &'static Security {
    SECURITY.get_or_init(Security::default)
}

/// Authenticates a new connection's `stream` with `sasl` (before its pipeline starts).
pub(crate) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    sasl: &Sasl,
    client_id: &str,
    addr: &str,
) -> Result<()> {
    let mut ids = 0..;
    let mut next_id = || ids.next().unwrap_or(0);
    let hs: SaslHandshakeResponse = call(
        stream,
        &SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(sasl.mechanism.name())),
        1,
        next_id(),
        client_id,
    )
    .await?;
    if hs.error_code != 0 {
        let offered: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(Error::Invalid(format!(
            "{addr} does not offer SASL mechanism {} (it offers {})",
            sasl.mechanism.name(),
            offered.join(", ")
        )));
    }
    match sasl.mechanism {
        Mechanism::Plain => {
            let mut msg = vec![0u8];
            msg.extend_from_slice(sasl.username.as_bytes());
            msg.push(0);
            msg.extend_from_slice(sasl.password.as_bytes());
            step(stream, sasl, msg, next_id(), client_id, addr).await?;
        }
        Mechanism::Scram(m) => {
            let mut scram = ScramClient::new(m, &sasl.username, &sasl.password);
            let server_first = step(
                stream,
                sasl,
                scram.first().into_bytes(),
                next_id(),
                client_id,
                addr,
            )
            .await?;
            let client_final = scram.answer(&server_first)?;
            let server_final = step(
                stream,
                sasl,
                client_final.into_bytes(),
                next_id(),
                client_id,
                addr,
            )
            .await?;
            scram.check_server(&server_final)?;
        }
    }
    Ok(())
}

/// One SaslAuthenticate round: the server's bytes, or why it refused.
async fn step<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    sasl: &Sasl,
    bytes: Vec<u8>,
    id: i32,
    client_id: &str,
    addr: &str,
) -> Result<Vec<u8>> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
    let r: SaslAuthenticateResponse = call(stream, &req, 2, id, client_id).await?;
    if r.error_code != 0 {
        let why = r.error_message.map(|m| m.to_string()).unwrap_or_default();
        return Err(Error::Invalid(format!(
            "SASL authentication of {:?} on {addr} failed: {why}",
            sasl.username
        )));
    }
    Ok(r.auth_bytes.to_vec())
}

/// One request on a socket no pipeline reads yet, and its decoded response.
async fn call<S: AsyncRead + AsyncWrite + Unpin, R: Request>(
    stream: &mut S,
    req: &R,
    version: i16,
    id: i32,
    client_id: &str,
) -> Result<R::Response> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let hv = R::header_version(version);
    let mut body = BytesMut::new();
    header
        .encode(&mut body, hv)
        .and_then(|_| req.encode(&mut body, version))
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await?;
    let len = stream.read_i32().await?;
    if !(4..=1 << 20).contains(&len) {
        return Err(Error::Protocol(format!(
            "a SASL response frame of {len} bytes"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await?;
    Connection::decode::<R>(Bytes::from(buf), version)
}

/// The client's side of a SCRAM exchange (RFC 5802, no channel binding).
struct ScramClient {
    mechanism: ScramMechanism,
    username: String,
    password: String,
    nonce: String,
    first_bare: String,
    /// The server's signature expected in its final message.
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    fn new(mechanism: ScramMechanism, username: &str, password: &str) -> ScramClient {
        let nonce = B64.encode(strom_tls::scram::random_bytes(24));
        // saslname: `=` and `,` escaped.
        let name = username.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            mechanism,
            username: username.to_string(),
            password: password.to_string(),
            first_bare: format!("n={name},r={nonce}"),
            nonce,
            server_signature: None,
        }
    }

    fn first(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// The client-final message for the server-first message `server_first`.
    fn answer(&mut self, server_first: &[u8]) -> Result<String> {
        let bad = |why: &str| Error::Protocol(format!("SCRAM server-first message: {why}"));
        let text = std::str::from_utf8(server_first).map_err(|_| bad("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(B64.decode(v).map_err(|_| bad("bad salt"))?),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("e", v)) => {
                    return Err(Error::Invalid(format!(
                        "SASL authentication of {:?} failed: {v}",
                        self.username
                    )))
                }
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| bad("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(bad("the nonce does not extend the client's"));
        }
        let salt = salt.ok_or_else(|| bad("no salt"))?;
        let iterations = iterations
            .filter(|i| (1..=1 << 24).contains(i))
            .ok_or_else(|| bad("no usable iteration count"))?;
        let m = self.mechanism;
        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = m.hmac_of(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let signature = m.hmac_of(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = m.hmac_of(&salted, b"Server Key");
        self.server_signature = Some(m.hmac_of(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server knew the credential too.
    fn check_server(&self, server_final: &[u8]) -> Result<()> {
        let text = String::from_utf8_lossy(server_final);
        if let Some(e) = text.strip_prefix("e=") {
            return Err(Error::Invalid(format!(
                "SASL authentication of {:?} failed: {e}",
                self.username
            )));
        }
        let got = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.trim()).ok());
        match (&self.server_signature, got) {
            (Some(want), Some(got)) if strom_tls::scram::equal_in_constant_time(want, &got) => {
                Ok(())
            }
            _ => Err(Error::Protocol(
                "the SCRAM server signature does not match: the broker does not hold this \
                 user's credential"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, with its client nonce.
    #[test]
    fn rfc7677_exchange() {
        let mut c = ScramClient::new(ScramMechanism::Sha256, "user", "pencil");
        c.nonce = "rOprNGfwEbeRWgbNEkqO".into();
        c.first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        assert_eq!(c.first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            c.answer(server_first).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.check_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(c.check_server(b"v=AAAA").is_err());
        assert!(c.check_server(b"e=invalid-proof").is_err());
    }

    #[test]
    fn a_nonce_that_does_not_extend_ours_is_refused() {
        let mut c = ScramClient::new(ScramMechanism::Sha512, "u", "p");
        assert!(c.answer(b"r=other,s=AAAA,i=4096").is_err());
        let same = format!("r={},s=AAAA,i=4096", c.nonce);
        assert!(c.answer(same.as_bytes()).is_err());
        let no_iterations = format!("r={}x,s=AAAA", c.nonce);
        assert!(c.answer(no_iterations.as_bytes()).is_err());
    }
}
