//! SCRAM's arithmetic (RFC 5802 with SHA-256 / SHA-512, RFC 7677): salted passwords, the
//! stored and server keys a credential keeps instead of the password, and the signatures
//! of an exchange. The broker's `security::sasl` runs the server's side of the exchange and
//! `security::credentials` stores the keys; `strom-client` runs the client's side.

use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2};

/// A SCRAM mechanism, with Kafka's names and `ScramMechanism` type codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    /// `SCRAM-SHA-256` (type 1).
    Sha256,
    /// `SCRAM-SHA-512` (type 2).
    Sha512,
}

/// Kafka's bounds on a credential's iteration count (4096 is also its default).
pub const MIN_ITERATIONS: u32 = 4096;
/// See [`MIN_ITERATIONS`].
pub const MAX_ITERATIONS: u32 = 16384;

impl ScramMechanism {
    /// Both, in type-code order.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of a name (case-insensitive).
    pub fn from_name(s: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    /// Kafka's type code (AlterUserScramCredentials, DescribeUserScramCredentials).
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism of a type code.
    pub fn from_code(code: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.code() == code)
    }

    /// The hash's output length, which is also the length of every key.
    pub fn key_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with the mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.key_len()];
        let iterations = NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(self.pbkdf2(), iterations, salt, password, &mut out);
        out
    }

    /// `HMAC(key, data)`.
    pub fn hmac_of(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    /// `H(data)`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// The credential a salted password stands for (what is stored; the password is not).
    pub fn credential(self, salt: &[u8], salted_password: &[u8], iterations: u32) -> Credential {
        let client_key = self.hmac_of(salted_password, b"Client Key");
        Credential {
            salt: salt.to_vec(),
            stored_key: self.hash(&client_key),
            server_key: self.hmac_of(salted_password, b"Server Key"),
            iterations,
        }
    }
}

/// What the broker keeps of one user's password for one mechanism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl Credential {
    /// Whether `password` is the one this credential was made from (PLAIN and HTTP Basic
    /// are checked this way, against the stored keys).
    pub fn matches_password(&self, mechanism: ScramMechanism, password: &[u8]) -> bool {
        let salted = mechanism.salted_password(password, &self.salt, self.iterations);
        let stored = mechanism.hash(&mechanism.hmac_of(&salted, b"Client Key"));
        equal_in_constant_time(&stored, &self.stored_key)
    }

    /// Whether `proof` proves knowledge of the password for `auth_message` (RFC 5802 §3:
    /// `ClientKey = proof XOR HMAC(StoredKey, AuthMessage)`, and `H(ClientKey)` must be the
    /// stored key).
    pub fn verify_proof(
        &self,
        mechanism: ScramMechanism,
        auth_message: &[u8],
        proof: &[u8],
    ) -> bool {
        if proof.len() != mechanism.key_len() {
            return false;
        }
        let signature = mechanism.hmac_of(&self.stored_key, auth_message);
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        equal_in_constant_time(&mechanism.hash(&client_key), &self.stored_key)
    }

    /// `HMAC(ServerKey, AuthMessage)`: the signature that proves the server to the client.
    pub fn server_signature(&self, mechanism: ScramMechanism, auth_message: &[u8]) -> Vec<u8> {
        mechanism.hmac_of(&self.server_key, auth_message)
    }
}

/// Compares without stopping at the first difference.
pub fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random bytes from the system's generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut out = vec![0u8; n];
    // The system generator fails only where the kernel has no random source at all.
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system's random generator is available");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::STANDARD, Engine};

    #[test]
    fn rfc7677_example_keys() {
        // RFC 7677 §3: user "user", password "pencil", 4096 iterations.
        let m = ScramMechanism::Sha256;
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let cred = m.credential(&salt, &salted, 4096);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                    r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                    s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                    c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert!(cred.verify_proof(m, auth.as_bytes(), &proof));
        let mut bad = proof.clone();
        bad[0] ^= 1;
        assert!(!cred.verify_proof(m, auth.as_bytes(), &bad));
        assert_eq!(
            STANDARD.encode(cred.server_signature(m, auth.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(cred.matches_password(m, b"pencil"));
        assert!(!cred.matches_password(m, b"pencil "));
    }

    #[test]
    fn names_and_codes() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
            assert_eq!(ScramMechanism::from_code(m.code()), Some(m));
        }
        assert_eq!(
            ScramMechanism::from_name("scram-sha-512"),
            Some(ScramMechanism::Sha512)
        );
        assert_eq!(ScramMechanism::from_name("PLAIN"), None);
        assert_eq!(random_bytes(24).len(), 24);
        assert_ne!(random_bytes(16), random_bytes(16));
    }
}
