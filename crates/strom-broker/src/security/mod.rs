//! Who is asking: the principal every door attaches to a request.
//!
//! A door authenticates a connection (TLS client certificate, SASL, HTTP Basic or bearer
//! token) and hands the core a [`Principal`]; without authentication it is
//! [`Principal::anonymous`], as Kafka's `User:ANONYMOUS`. Authorization decisions take a
//! principal, never a door's own notion of a user.

use std::fmt;

pub mod acl;
pub mod credentials;
pub mod sasl;
/// SCRAM's arithmetic, shared with the client (`strom_tls::scram`).
pub use strom_tls::scram;
pub(crate) mod store;
pub mod tokens;

/// A principal in Kafka's `Type:Name` form (`User:alice`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The principal type; `User` for every principal Strom authenticates.
    pub kind: String,
    /// The name within the type.
    pub name: String,
}

impl Principal {
    /// `User:<name>`.
    pub fn user(name: impl Into<String>) -> Principal {
        Principal {
            kind: "User".to_string(),
            name: name.into(),
        }
    }

    /// `User:ANONYMOUS`: the principal of an unauthenticated connection.
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    /// Whether this is [`Principal::anonymous`].
    pub fn is_anonymous(&self) -> bool {
        self.kind == "User" && self.name == "ANONYMOUS"
    }

    /// Parses `Type:Name` (the name may contain `:`); `None` without a type.
    pub fn parse(s: &str) -> Option<Principal> {
        let (kind, name) = s.split_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Principal {
            kind: kind.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::Principal;

    #[test]
    fn parses_and_prints_kafka_form() {
        let p = Principal::parse("User:CN=alice,O=x:y").unwrap();
        assert_eq!(p.kind, "User");
        assert_eq!(p.name, "CN=alice,O=x:y");
        assert_eq!(p.to_string(), "User:CN=alice,O=x:y");
        assert!(Principal::parse("alice").is_none());
        assert!(Principal::parse(":alice").is_none());
        assert!(Principal::anonymous().is_anonymous());
        assert!(!Principal::user("alice").is_anonymous());
    }
}
