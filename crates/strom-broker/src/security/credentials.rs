//! The SCRAM credential store: per user and mechanism the salt, stored key, server key and
//! iteration count, never a password, in `<data-dir>/.strom/scram-credentials.json`
//! (replaced atomically and durably on every change; one entry per user, the shape of an
//! etcd key per user later).
//!
//! The file is the truth: a change re-reads it first and a lookup re-reads it when its
//! modification time or size changed, so `strom user set --data-dir` on a stopped broker
//! (the way the first user is created) and on a running one are both seen without a
//! restart. Two writers at the same instant (the broker and the offline CLI) race as two
//! `mv` would; the CLI's online form (`--bootstrap`) goes through the broker instead.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::{engine::general_purpose::STANDARD, Engine};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::scram::{random_bytes, Credential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};

/// Why a credential change was refused (each maps to one Kafka error code).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// UNACCEPTABLE_CREDENTIAL: an empty user name, iterations out of range, a salt or
    /// salted password of the wrong shape.
    #[error("{0}")]
    Unacceptable(String),
    /// RESOURCE_NOT_FOUND: deleting a credential that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The file could not be read or written.
    #[error("credential store: {0}")]
    Io(#[from] std::io::Error),
}

/// The store of one data directory.
pub struct Credentials {
    path: PathBuf,
    state: Mutex<Loaded>,
    /// Passwords checked right recently (HTTP Basic sends one with every request; PBKDF2
    /// each time would cost milliseconds per request): keyed by an HMAC under a key of this
    /// process only, so neither the password nor a hash that could be attacked offline is
    /// kept; the value is the stored key it matched, so a changed password misses.
    verified: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    verified_key: ring::hmac::Key,
}

/// Entries of [`Credentials::verified`] at most (cleared when full).
const VERIFIED_CAPACITY: usize = 4096;

#[derive(Default)]
struct Loaded {
    /// Modification time and length of the file as last read (`None`: no file).
    stamp: Option<(SystemTime, u64)>,
    users: BTreeMap<String, BTreeMap<ScramMechanism, Credential>>,
}

#[derive(Serialize, Deserialize, Default)]
struct File {
    users: BTreeMap<String, BTreeMap<String, Stored>>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    salt: String,
    stored_key: String,
    server_key: String,
    iterations: u32,
}

/// One user's mechanisms and iteration counts (what DescribeUserScramCredentials shows).
pub type UserMechanisms = (String, Vec<(ScramMechanism, u32)>);

impl Credentials {
    /// The store of `data_dir` (the file need not exist yet).
    pub fn open(data_dir: &Path) -> Result<Credentials, CredentialError> {
        let dir = data_dir.join(".strom");
        std::fs::create_dir_all(&dir)?;
        let store = Credentials {
            path: dir.join("scram-credentials.json"),
            state: Mutex::new(Loaded::default()),
            verified: Mutex::new(HashMap::new()),
            verified_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &random_bytes(32)),
        };
        store.refresh(&mut store.state.lock())?;
        Ok(store)
    }

    /// Re-reads the file if it changed since it was last read.
    fn refresh(&self, state: &mut Loaded) -> Result<(), CredentialError> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.modified()?, m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        if stamp == state.stamp && stamp.is_some() {
            return Ok(());
        }
        state.users = match stamp {
            None => BTreeMap::new(),
            Some(_) => decode(&std::fs::read(&self.path)?)?,
        };
        state.stamp = stamp;
        Ok(())
    }

    fn save(&self, state: &mut Loaded) -> Result<(), CredentialError> {
        let mut file = File::default();
        for (user, mechs) in &state.users {
            let entry = file.users.entry(user.clone()).or_default();
            for (m, c) in mechs {
                entry.insert(
                    m.name().to_string(),
                    Stored {
                        salt: STANDARD.encode(&c.salt),
                        stored_key: STANDARD.encode(&c.stored_key),
                        server_key: STANDARD.encode(&c.server_key),
                        iterations: c.iterations,
                    },
                );
            }
        }
        let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        crate::topic::write_atomic(&self.path, &bytes)?;
        let m = std::fs::metadata(&self.path)?;
        state.stamp = Some((m.modified()?, m.len()));
        Ok(())
    }

    /// The credential of `user` for `mechanism`.
    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<Credential> {
        let mut state = self.state.lock();
        if let Err(e) = self.refresh(&mut state) {
            tracing::error!(error = %e, "credential store not re-read; the last copy read is used");
        }
        state.users.get(user)?.get(&mechanism).cloned()
    }

    /// Whether `password` is `user`'s (checked against any of the user's credentials: PLAIN
    /// and HTTP Basic use the SCRAM store).
    pub fn verify_password(&self, user: &str, password: &[u8]) -> bool {
        let creds: Vec<(ScramMechanism, Credential)> = {
            let mut state = self.state.lock();
            if let Err(e) = self.refresh(&mut state) {
                tracing::error!(error = %e, "credential store not re-read; the last copy read is used");
            }
            match state.users.get(user) {
                Some(m) => m.iter().map(|(k, v)| (*k, v.clone())).collect(),
                None => Vec::new(),
            }
        };
        // Only the strongest one is checked: one PBKDF2 per attempt, whatever the user has.
        let Some((m, c)) = creds.last() else {
            return false;
        };
        let mut ctx = ring::hmac::Context::with_key(&self.verified_key);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user.as_bytes());
        ctx.update(password);
        let key = ctx.sign().as_ref().to_vec();
        if self.verified.lock().get(&key) == Some(&c.stored_key) {
            return true;
        }
        if !c.matches_password(*m, password) {
            return false;
        }
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(key, c.stored_key.clone());
        true
    }

    /// Sets `user`'s credential for `mechanism` from a password (a fresh random salt).
    pub fn set_password(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        password: &[u8],
        iterations: u32,
    ) -> Result<(), CredentialError> {
        if password.is_empty() {
            return Err(CredentialError::Unacceptable(
                "the password is empty".to_string(),
            ));
        }
        check_iterations(iterations)?;
        let salt = random_bytes(24);
        let salted = mechanism.salted_password(password, &salt, iterations);
        self.set_salted(user, mechanism, iterations, &salt, &salted)
    }

    /// Sets `user`'s credential for `mechanism` from a salted password computed by the
    /// client (what AlterUserScramCredentials carries).
    pub fn set_salted(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        iterations: u32,
        salt: &[u8],
        salted_password: &[u8],
    ) -> Result<(), CredentialError> {
        self.apply(&[Change::Set {
            user: user.to_string(),
            mechanism,
            iterations,
            salt: salt.to_vec(),
            salted_password: salted_password.to_vec(),
        }])
        .into_iter()
        .next()
        .unwrap_or(Ok(()))
    }

    /// Deletes `user`'s credential for `mechanism`.
    pub fn delete(&self, user: &str, mechanism: ScramMechanism) -> Result<(), CredentialError> {
        self.apply(&[Change::Delete {
            user: user.to_string(),
            mechanism,
        }])
        .into_iter()
        .next()
        .unwrap_or(Ok(()))
    }

    /// Applies changes in order and persists them once; one result per change (a refused
    /// change leaves the others applied).
    pub fn apply(&self, changes: &[Change]) -> Vec<Result<(), CredentialError>> {
        let mut state = self.state.lock();
        if let Err(e) = self.refresh(&mut state) {
            let msg = e.to_string();
            return changes
                .iter()
                .map(|_| Err(CredentialError::Io(std::io::Error::other(msg.clone()))))
                .collect();
        }
        let before = state.users.clone();
        let mut results = Vec::with_capacity(changes.len());
        let mut changed = false;
        for c in changes {
            let r = match c {
                Change::Set {
                    user,
                    mechanism,
                    iterations,
                    salt,
                    salted_password,
                } => check_user(user)
                    .and_then(|()| check_iterations(*iterations))
                    .and_then(|()| {
                        if salt.is_empty() || salted_password.len() != mechanism.key_len() {
                            return Err(CredentialError::Unacceptable(format!(
                                "a {} salted password is {} bytes with a non-empty salt",
                                mechanism.name(),
                                mechanism.key_len()
                            )));
                        }
                        let cred = mechanism.credential(salt, salted_password, *iterations);
                        state
                            .users
                            .entry(user.clone())
                            .or_default()
                            .insert(*mechanism, cred);
                        Ok(())
                    }),
                Change::Delete { user, mechanism } => {
                    let removed = state
                        .users
                        .get_mut(user)
                        .and_then(|m| m.remove(mechanism))
                        .is_some();
                    if state.users.get(user).is_some_and(|m| m.is_empty()) {
                        state.users.remove(user);
                    }
                    if removed {
                        Ok(())
                    } else {
                        Err(CredentialError::NotFound(format!(
                            "user {user:?} has no {} credential",
                            mechanism.name()
                        )))
                    }
                }
            };
            changed |= r.is_ok();
            results.push(r);
        }
        if changed {
            if let Err(e) = self.save(&mut state) {
                state.users = before;
                let msg = e.to_string();
                return changes
                    .iter()
                    .map(|_| Err(CredentialError::Io(std::io::Error::other(msg.clone()))))
                    .collect();
            }
        }
        results
    }

    /// Every user with its mechanisms and iteration counts, by name.
    pub fn list(&self) -> Vec<UserMechanisms> {
        let mut state = self.state.lock();
        if let Err(e) = self.refresh(&mut state) {
            tracing::error!(error = %e, "credential store not re-read; the last copy read is used");
        }
        state
            .users
            .iter()
            .map(|(u, m)| {
                (
                    u.clone(),
                    m.iter().map(|(k, c)| (*k, c.iterations)).collect(),
                )
            })
            .collect()
    }
}

/// One change of [`Credentials::apply`].
#[derive(Clone, Debug)]
pub enum Change {
    Set {
        user: String,
        mechanism: ScramMechanism,
        iterations: u32,
        salt: Vec<u8>,
        salted_password: Vec<u8>,
    },
    Delete {
        user: String,
        mechanism: ScramMechanism,
    },
}

fn check_user(user: &str) -> Result<(), CredentialError> {
    if user.is_empty() {
        return Err(CredentialError::Unacceptable(
            "the user name is empty".to_string(),
        ));
    }
    Ok(())
}

fn check_iterations(iterations: u32) -> Result<(), CredentialError> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(CredentialError::Unacceptable(format!(
            "iterations must be within [{MIN_ITERATIONS}, {MAX_ITERATIONS}], not {iterations}"
        )));
    }
    Ok(())
}

fn decode(
    bytes: &[u8],
) -> Result<BTreeMap<String, BTreeMap<ScramMechanism, Credential>>, CredentialError> {
    let bad = |what: String| {
        CredentialError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("scram-credentials.json: {what}"),
        ))
    };
    let file: File = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let mut users = BTreeMap::new();
    for (user, mechs) in file.users {
        let mut out = BTreeMap::new();
        for (name, s) in mechs {
            let m = ScramMechanism::from_name(&name)
                .ok_or_else(|| bad(format!("unknown mechanism {name:?}")))?;
            let b64 = |v: &str| STANDARD.decode(v).map_err(|e| bad(format!("{user}: {e}")));
            out.insert(
                m,
                Credential {
                    salt: b64(&s.salt)?,
                    stored_key: b64(&s.stored_key)?,
                    server_key: b64(&s.server_key)?,
                    iterations: s.iterations,
                },
            );
        }
        users.insert(user, out);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_durably_without_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = Credentials::open(dir.path()).unwrap();
        assert!(store.list().is_empty());
        store
            .set_password("alice", ScramMechanism::Sha512, b"s3cret-pw", 4096)
            .unwrap();
        store
            .set_password("alice", ScramMechanism::Sha256, b"s3cret-pw", 8192)
            .unwrap();
        let text =
            std::fs::read_to_string(dir.path().join(".strom/scram-credentials.json")).unwrap();
        assert!(!text.contains("s3cret-pw"));
        let reopened = Credentials::open(dir.path()).unwrap();
        assert_eq!(
            reopened.list(),
            vec![(
                "alice".to_string(),
                vec![
                    (ScramMechanism::Sha256, 8192),
                    (ScramMechanism::Sha512, 4096)
                ]
            )]
        );
        assert!(reopened.verify_password("alice", b"s3cret-pw"));
        assert!(!reopened.verify_password("alice", b"wrong"));
        assert!(!reopened.verify_password("bob", b"s3cret-pw"));
        // A password checked before (cached) stops working the moment it is changed.
        assert!(reopened.verify_password("alice", b"s3cret-pw"));
        store
            .set_password("alice", ScramMechanism::Sha512, b"new-pw", 4096)
            .unwrap();
        assert!(!reopened.verify_password("alice", b"s3cret-pw"));
        assert!(reopened.verify_password("alice", b"new-pw"));
        // A change made through another handle (the offline CLI) is seen by the first.
        reopened.delete("alice", ScramMechanism::Sha512).unwrap();
        assert!(store.get("alice", ScramMechanism::Sha512).is_none());
        assert!(store.get("alice", ScramMechanism::Sha256).is_some());
    }

    #[test]
    fn bad_changes_are_refused_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Credentials::open(dir.path()).unwrap();
        let m = ScramMechanism::Sha256;
        let salted = m.salted_password(b"pw", b"salt", 4096);
        let results = store.apply(&[
            Change::Set {
                user: "".into(),
                mechanism: m,
                iterations: 4096,
                salt: b"salt".to_vec(),
                salted_password: salted.clone(),
            },
            Change::Set {
                user: "bob".into(),
                mechanism: m,
                iterations: 100,
                salt: b"salt".to_vec(),
                salted_password: salted.clone(),
            },
            Change::Set {
                user: "bob".into(),
                mechanism: m,
                iterations: 4096,
                salt: b"salt".to_vec(),
                salted_password: salted[..5].to_vec(),
            },
            Change::Delete {
                user: "carol".into(),
                mechanism: m,
            },
            Change::Set {
                user: "bob".into(),
                mechanism: m,
                iterations: 4096,
                salt: b"salt".to_vec(),
                salted_password: salted,
            },
        ]);
        assert!(matches!(results[0], Err(CredentialError::Unacceptable(_))));
        assert!(matches!(results[1], Err(CredentialError::Unacceptable(_))));
        assert!(matches!(results[2], Err(CredentialError::Unacceptable(_))));
        assert!(matches!(results[3], Err(CredentialError::NotFound(_))));
        assert!(results[4].is_ok());
        assert!(store.verify_password("bob", b"pw"));
        assert!(store.set_password("bob", m, b"", 4096).is_err());
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".strom")).unwrap();
        std::fs::write(
            dir.path().join(".strom/scram-credentials.json"),
            b"{not json",
        )
        .unwrap();
        assert!(Credentials::open(dir.path()).is_err());
    }
}
