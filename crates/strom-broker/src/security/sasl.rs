//! The server side of SASL PLAIN (RFC 4616) and SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802,
//! RFC 7677) against the [`Credentials`] store, without any wire format: a door feeds the
//! client's tokens to [`SaslServer::step`] and sends back what it returns. Error messages
//! name the user and the mechanism, never a password, a proof or a key.

use std::sync::Arc;

use base64::{engine::general_purpose::STANDARD, Engine};

use super::credentials::Credentials;
use super::scram::{random_bytes, Credential, ScramMechanism};

/// A SASL mechanism the broker serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    /// Every mechanism, in Kafka's usual order.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Scram(ScramMechanism::Sha512),
    ];

    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }

    /// The mechanism of a name (SASL names are case-sensitive; Kafka's are upper case).
    pub fn from_name(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// Why an authentication failed: safe to log and to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SaslError(pub String);

/// What one step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge and wait for the client's next token.
    Challenge(Vec<u8>),
    /// Authenticated as `user`; send `response` (empty for PLAIN) and the exchange is over.
    Done { user: String, response: Vec<u8> },
}

/// One authentication exchange.
pub struct SaslServer {
    mechanism: Mechanism,
    credentials: Arc<Credentials>,
    state: State,
    /// The server nonce's random part (fixed by tests).
    nonce: Option<String>,
}

enum State {
    Start,
    /// The server-first message was sent.
    ScramFirst(Box<ScramFirst>),
    Over,
}

struct ScramFirst {
    mechanism: ScramMechanism,
    user: String,
    credential: Credential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// The length of the server's part at the end of `nonce`.
    server_nonce_len: usize,
}

impl SaslServer {
    pub fn new(mechanism: Mechanism, credentials: Arc<Credentials>) -> SaslServer {
        SaslServer {
            mechanism,
            credentials,
            state: State::Start,
            nonce: None,
        }
    }

    /// The mechanism being run.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Takes the client's next token. After an error or [`Step::Done`] the exchange is
    /// over and every further token is an error.
    pub fn step(&mut self, token: &[u8]) -> Result<Step, SaslError> {
        let state = std::mem::replace(&mut self.state, State::Over);
        match (state, self.mechanism) {
            (State::Start, Mechanism::Plain) => self.plain(token),
            (State::Start, Mechanism::Scram(m)) => self.scram_first(m, token),
            (State::ScramFirst(first), _) => {
                let ScramFirst {
                    mechanism,
                    user,
                    credential,
                    gs2_header,
                    client_first_bare,
                    server_first,
                    nonce,
                    server_nonce_len,
                } = *first;
                let client_final = std::str::from_utf8(token)
                    .map_err(|_| SaslError("the SCRAM client-final message is not UTF-8".into()))?;
                let (without_proof, proof) = client_final.rsplit_once(",p=").ok_or_else(|| {
                    SaslError("the SCRAM client-final message has no proof".into())
                })?;
                let mut attrs = without_proof.split(',');
                let binding = attrs
                    .next()
                    .and_then(|a| a.strip_prefix("c="))
                    .ok_or_else(|| SaslError("the SCRAM client-final message has no c=".into()))?;
                if STANDARD.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
                    return Err(SaslError(
                        "SCRAM channel binding does not match the client-first message".into(),
                    ));
                }
                let r = attrs
                    .next()
                    .and_then(|a| a.strip_prefix("r="))
                    .ok_or_else(|| SaslError("the SCRAM client-final message has no r=".into()))?;
                // librdkafka before 2.6.1 (librdkafka#4895: Debian's kcat, many distributions)
                // sends its own nonce once more in front of the combined one. Kafka up to 3.9
                // accepted that (it compared the end only); this accepts exactly that form,
                // which still carries the server's nonce, and nothing else.
                let client_nonce = &nonce[..nonce.len() - server_nonce_len];
                let doubled = r.len() == nonce.len() + client_nonce.len()
                    && r.starts_with(client_nonce)
                    && &r[client_nonce.len()..] == nonce.as_str();
                if r != nonce && !doubled {
                    return Err(SaslError("SCRAM nonce does not match".into()));
                }
                let proof = STANDARD
                    .decode(proof)
                    .map_err(|_| SaslError("the SCRAM proof is not base64".into()))?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                if !credential.verify_proof(mechanism, auth_message.as_bytes(), &proof) {
                    return Err(invalid(&user, self.mechanism));
                }
                let signature = credential.server_signature(mechanism, auth_message.as_bytes());
                Ok(Step::Done {
                    user,
                    response: format!("v={}", STANDARD.encode(signature)).into_bytes(),
                })
            }
            (State::Over, _) => Err(SaslError("the SASL exchange is already over".into())),
        }
    }

    fn plain(&mut self, token: &[u8]) -> Result<Step, SaslError> {
        let mut parts = token.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SaslError(
                "a PLAIN message is authzid NUL user NUL password".into(),
            ));
        };
        let user = std::str::from_utf8(user)
            .map_err(|_| SaslError("the PLAIN user name is not UTF-8".into()))?;
        if user.is_empty() || password.is_empty() {
            return Err(SaslError("PLAIN needs a user name and a password".into()));
        }
        if !authzid.is_empty() && authzid != user.as_bytes() {
            return Err(SaslError(format!(
                "user {user:?} may not act as another authorization id"
            )));
        }
        if !self.credentials.verify_password(user, password) {
            return Err(invalid(user, self.mechanism));
        }
        Ok(Step::Done {
            user: user.to_string(),
            response: Vec::new(),
        })
    }

    fn scram_first(&mut self, mechanism: ScramMechanism, token: &[u8]) -> Result<Step, SaslError> {
        let msg = std::str::from_utf8(token)
            .map_err(|_| SaslError("the SCRAM client-first message is not UTF-8".into()))?;
        // gs2-header: cbind flag, authzid; then the bare message.
        let mut it = msg.splitn(3, ',');
        let (Some(cbind), Some(authzid), Some(bare)) = (it.next(), it.next(), it.next()) else {
            return Err(SaslError("malformed SCRAM client-first message".into()));
        };
        if cbind.starts_with("p=") {
            return Err(SaslError("SCRAM channel binding is not supported".into()));
        }
        if cbind != "n" && cbind != "y" {
            return Err(SaslError("malformed SCRAM gs2 header".into()));
        }
        let mut attrs = bare.split(',');
        let user = attrs
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or_else(|| SaslError("the SCRAM client-first message has no n=".into()))?;
        let user = sasl_name(user)?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|r| !r.is_empty() && r.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or_else(|| SaslError("the SCRAM client-first message has no nonce".into()))?;
        // Extensions: Kafka's `tokenauth` (delegation tokens) is not served.
        if attrs.any(|a| a.starts_with("tokenauth=")) {
            return Err(SaslError("delegation tokens are not supported".into()));
        }
        if let Some(authzid) = authzid.strip_prefix("a=") {
            if sasl_name(authzid)? != user {
                return Err(SaslError(format!(
                    "user {user:?} may not act as another authorization id"
                )));
            }
        } else if !authzid.is_empty() {
            return Err(SaslError("malformed SCRAM gs2 header".into()));
        }
        if user.is_empty() {
            return Err(SaslError("the SCRAM user name is empty".into()));
        }
        let Some(credential) = self.credentials.get(&user, mechanism) else {
            return Err(invalid(&user, self.mechanism));
        };
        let server_part = self
            .nonce
            .take()
            .unwrap_or_else(|| STANDARD.encode(random_bytes(18)));
        let nonce = format!("{client_nonce}{server_part}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credential.salt),
            credential.iterations
        );
        self.state = State::ScramFirst(Box::new(ScramFirst {
            mechanism,
            user,
            credential,
            gs2_header: format!("{cbind},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            server_nonce_len: server_part.len(),
            nonce,
        }));
        Ok(Step::Challenge(server_first.into_bytes()))
    }
}

fn invalid(user: &str, m: Mechanism) -> SaslError {
    SaslError(format!(
        "authentication failed: invalid credentials for user {user:?} with SASL mechanism {}",
        m.name()
    ))
}

/// A SCRAM `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn sasl_name(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3);
        match esc {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError("malformed SCRAM user name".into())),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_user(dir: &std::path::Path) -> Arc<Credentials> {
        let store = Credentials::open(dir).unwrap();
        let m = ScramMechanism::Sha256;
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        store
            .set_salted(
                "user",
                m,
                4096,
                &salt,
                &m.salted_password(b"pencil", &salt, 4096),
            )
            .unwrap();
        Arc::new(store)
    }

    #[test]
    fn rfc7677_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SaslServer::new(
            Mechanism::Scram(ScramMechanism::Sha256),
            store_with_user(dir.path()),
        );
        s.nonce = Some("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into());
        let first = s.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(
            first,
            Step::Challenge(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let done = s
            .step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            done,
            Step::Done {
                user: "user".into(),
                response: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            }
        );
        assert!(s.step(b"more").is_err());
    }

    #[test]
    fn wrong_proofs_users_and_messages_fail_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_user(dir.path());
        let scram = Mechanism::Scram(ScramMechanism::Sha256);
        // An exchange after the client-first message `n,,n=user,r=abc`, server nonce "X".
        let started = || {
            let mut s = SaslServer::new(scram, store.clone());
            s.nonce = Some("X".into());
            s.step(b"n,,n=user,r=abc").unwrap();
            s
        };
        let err = |final_msg: &[u8]| started().step(final_msg).unwrap_err().0;
        assert!(err(b"c=biws,r=abcX,p=AAAA").contains("invalid credentials"));
        // A tampered nonce.
        assert!(err(b"c=biws,r=abcY,p=AAAA").contains("nonce"));
        // Old librdkafka's doubled client nonce is accepted (then the proof is checked);
        // any other prefix is not.
        assert!(err(b"c=biws,r=abcabcX,p=AAAA").contains("invalid credentials"));
        assert!(err(b"c=biws,r=xyzabcX,p=AAAA").contains("nonce"));
        // Channel binding other than the client-first's gs2 header.
        assert!(err(b"c=eSws,r=abcX,p=AAAA").contains("channel binding"));
        for bad in [
            &b"n,,n=nobody,r=abc"[..],
            b"",
            b"\xff\xfe",
            b"p=tls-unique,,n=user,r=abc",
            b"n,,n=us=er,r=abc",
            b"n,a=other,n=user,r=abc",
            b"n,,n=user",
            b"n,,n=user,r=abc,tokenauth=true",
        ] {
            let mut s = SaslServer::new(scram, store.clone());
            assert!(s.step(bad).is_err(), "{bad:?}");
        }
        // SHA-512 has no credential for this user.
        let mut s = SaslServer::new(Mechanism::Scram(ScramMechanism::Sha512), store.clone());
        assert!(s.step(b"n,,n=user,r=abc").is_err());
        // PLAIN against the same store.
        let mut s = SaslServer::new(Mechanism::Plain, store.clone());
        assert_eq!(
            s.step(b"\0user\0pencil").unwrap(),
            Step::Done {
                user: "user".into(),
                response: Vec::new()
            }
        );
        for bad in [
            &b"\0user\0pencil!"[..],
            b"\0user",
            b"other\0user\0pencil",
            b"\0\0pencil",
            b"\0user\0pencil\0",
        ] {
            let mut s = SaslServer::new(Mechanism::Plain, store.clone());
            let e = s.step(bad).unwrap_err();
            assert!(!e.0.contains("pencil"), "{e}");
        }
        assert_eq!(sasl_name("a=2Cb=3Dc").unwrap(), "a,b=c");
    }
}
