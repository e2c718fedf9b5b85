//! Bearer tokens for the HTTP door (`strom token create NAME --user U --ttl 30d`):
//! `strom_` and 32 random bytes in unpadded base64url, shown once when made; the broker keeps
//! only their SHA-256, with the token's name, its user and its expiry, in
//! `<data-dir>/.strom/tokens.json` (a [`Watched`] document: a token made or revoked offline
//! is honoured by a running broker within a second).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::scram::random_bytes;
use super::store::Watched;
use super::Principal;

/// What every token starts with (tells a token from a password in logs and scanners).
pub const PREFIX: &str = "strom_";

/// One token as stored (never the token itself).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// The name it was made with (unique; what `revoke` takes).
    pub name: String,
    /// The user it authenticates as (`User:<user>`).
    pub user: String,
    /// When it was made, ms since the epoch.
    pub created_ms: i64,
    /// When it stops working, ms since the epoch (`None`: never).
    pub expires_ms: Option<i64>,
}

#[derive(Serialize, Deserialize, Default, Clone, PartialEq)]
struct File {
    /// By SHA-256 of the token, in hex.
    tokens: BTreeMap<String, TokenInfo>,
}

/// What a presented token turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A live token of this principal.
    Valid(Principal),
    /// A token that was made but has expired.
    Expired,
    /// Not a token of this broker (or revoked).
    Unknown,
}

/// Why a token could not be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A bad name or user, a name in use, or no token of that name.
    #[error("{0}")]
    Invalid(String),
    /// The file could not be read or written.
    #[error("token store: {0}")]
    Io(#[from] std::io::Error),
}

/// The bearer tokens of one data directory.
pub struct Tokens {
    file: Watched<File>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn digest_hex(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    /// The store of `data_dir` (the file need not exist yet).
    pub fn open(data_dir: &Path) -> Result<Tokens, TokenError> {
        Ok(Tokens {
            file: Watched::open(data_dir, "tokens.json", "token")?,
        })
    }

    /// Makes a token `name` for `user`, valid for `ttl` (`None`: until revoked); returns the
    /// token, which is not kept and cannot be shown again.
    pub fn create(
        &self,
        name: &str,
        user: &str,
        ttl: Option<Duration>,
    ) -> Result<String, TokenError> {
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(TokenError::Invalid(format!(
                "token name {name:?} must be 1 to 200 printable characters"
            )));
        }
        if user.is_empty() || user.chars().any(char::is_control) {
            return Err(TokenError::Invalid(format!(
                "user {user:?} is not a user name"
            )));
        }
        let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes(32)));
        let created_ms = now_ms();
        let info = TokenInfo {
            name: name.to_string(),
            user: user.to_string(),
            created_ms,
            expires_ms: ttl.map(|t| created_ms.saturating_add(t.as_millis() as i64)),
        };
        let key = digest_hex(&token);
        self.file.modify(|f| {
            if f.tokens.values().any(|t| t.name == name) {
                return Err(TokenError::Invalid(format!(
                    "a token named {name:?} exists; revoke it first"
                )));
            }
            f.tokens.insert(key, info);
            Ok(())
        })??;
        Ok(token)
    }

    /// Revokes the token `name`.
    pub fn revoke(&self, name: &str) -> Result<TokenInfo, TokenError> {
        self.file.modify(|f| {
            let key = f
                .tokens
                .iter()
                .find(|(_, t)| t.name == name)
                .map(|(k, _)| k.clone())
                .ok_or_else(|| TokenError::Invalid(format!("no token named {name:?}")))?;
            Ok(f.tokens.remove(&key).expect("found above"))
        })?
    }

    /// Every token, by name.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut all: Vec<TokenInfo> = self.file.snapshot().tokens.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// What `token` is.
    pub fn verify(&self, token: &str) -> Verdict {
        if !token.starts_with(PREFIX) {
            return Verdict::Unknown;
        }
        match self.file.snapshot().tokens.get(&digest_hex(token)) {
            None => Verdict::Unknown,
            Some(t) if t.expires_ms.is_some_and(|e| e <= now_ms()) => Verdict::Expired,
            Some(t) => Verdict::Valid(Principal::user(t.user.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_its_user_until_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        let t = tokens.create("ci", "alice", None).unwrap();
        assert!(t.starts_with(PREFIX) && t.len() > 40);
        assert_eq!(tokens.verify(&t), Verdict::Valid(Principal::user("alice")));
        assert_eq!(tokens.verify("strom_nope"), Verdict::Unknown);
        assert!(
            tokens.create("ci", "bob", None).is_err(),
            "names are unique"
        );
        // Only the hash is on disk.
        let on_disk = std::fs::read_to_string(dir.path().join(".strom/tokens.json")).unwrap();
        assert!(!on_disk.contains(&t[PREFIX.len()..]));
        assert!(on_disk.contains(&digest_hex(&t)));
        // Another store of the same directory (the offline CLI) revokes it.
        Tokens::open(dir.path()).unwrap().revoke("ci").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(tokens.verify(&t), Verdict::Unknown);

        let short = tokens
            .create("short", "bob", Some(Duration::from_millis(1)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(tokens.verify(&short), Verdict::Expired);
        assert!(tokens.revoke("nope").is_err());
    }
}
