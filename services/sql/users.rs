//! Users and roles, stored in range 1 (`/System/user/<name>`). Passwords are never stored:
//! a user record keeps a SCRAM-SHA-256 verifier (random salt, iteration count, StoredKey,
//! ServerKey), exactly what PostgreSQL keeps. The PostgreSQL wire protocol authenticates
//! with SCRAM against it; the HTTP login checks a cleartext password by recomputing
//! StoredKey.

use pgwire::api::auth::sasl::scram::{ScramSecret, gen_salted_password};
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

use crate::services::error::Error;
use crate::services::keys;
use crate::services::kv::{self, Kv, Op};
use crate::services::sql::error::{SERIALIZATION_FAILURE, SqlError};

/// PBKDF2 iterations of new verifiers (PostgreSQL's default).
pub const SCRAM_ITERATIONS: u32 = 4096;
/// The superuser created by `init`.
pub const ROOT_USER: &str = "root";
/// The role whose members are admins.
pub const ADMIN_ROLE: &str = "admin";

/// A SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ScramVerifier {
    /// Random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// SHA-256(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier { .. }")
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message).as_ref().to_vec()
}

impl ScramVerifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        Self::with_salt(password, salt.to_vec(), SCRAM_ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = gen_salted_password(password, &salt, iterations as usize);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key).as_ref().to_vec();
        let server_key = hmac_sha256(&salted, b"Server Key");
        Self { salt, iterations, stored_key, server_key }
    }

    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &str) -> bool {
        let candidate = Self::with_salt(password, self.salt.clone(), self.iterations);
        candidate.stored_key.len() == self.stored_key.len()
            && candidate.stored_key.iter().zip(&self.stored_key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// The secret pgwire's SCRAM exchange checks against.
    pub fn scram_secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations as usize,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }
}

/// Stand-in verifiers for logins that cannot succeed (no such user, NOLOGIN, no password),
/// as PostgreSQL's "mock authentication": such a login runs the same SCRAM exchange as a
/// wrong password, with a salt that is stable per name (so asking twice does not tell either)
/// and the iteration count of real verifiers, and fails the same way at the end.
pub struct MockVerifiers {
    secret: [u8; 32],
}

impl MockVerifiers {
    /// Mock verifiers keyed by a fresh random secret (per node process).
    pub fn new() -> Self {
        Self { secret: rand::random() }
    }

    /// The stand-in verifier of `user`. Its keys derive from the secret, not from any
    /// password, so no proof a client can compute matches them.
    pub fn verifier(&self, user: &str) -> ScramVerifier {
        let derive = |purpose: &str| hmac_sha256(&self.secret, format!("{purpose}\0{user}").as_bytes());
        let mut salt = derive("salt");
        salt.truncate(16);
        ScramVerifier {
            salt,
            iterations: SCRAM_ITERATIONS,
            stored_key: derive("stored key"),
            server_key: derive("server key"),
        }
    }
}

impl Default for MockVerifiers {
    fn default() -> Self {
        Self::new()
    }
}

/// A stored user record, if there was one.
fn decode(value: Option<Vec<u8>>) -> Result<Option<UserRecord>, Error> {
    value.map(|bytes| serde_json::from_slice(&bytes).map_err(Error::internal)).transpose()
}

/// A user (or role) record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Normalized (lower-case) name.
    pub username: String,
    /// Member of `admin`.
    pub is_admin: bool,
    /// May log in (`LOGIN`, the default for users; roles default to `NOLOGIN`).
    pub can_login: bool,
    /// The password verifier, if a password was set.
    #[serde(default)]
    pub scram: Option<ScramVerifier>,
}

/// Normalizes a user name as PostgreSQL folds unquoted identifiers.
pub fn normalize(name: &str) -> String {
    name.to_lowercase()
}

/// The record of `root`, written by `init` (with a password if one was given).
pub fn root_record(password: Option<&str>) -> UserRecord {
    UserRecord { username: ROOT_USER.into(), is_admin: true, can_login: true, scram: password.map(ScramVerifier::new) }
}

/// The batch operation that stores `record`.
pub fn put_op(record: &UserRecord) -> Op {
    Op::Put { key: keys::user_key(&record.username), value: serde_json::to_vec(record).unwrap_or_default() }
}

/// User storage through the KV layer (SQL, pgwire authentication and the HTTP API's login all
/// read users through it).
pub struct Users<'a> {
    kv: &'a dyn Kv,
}

impl<'a> Users<'a> {
    /// Users as seen through `kv`.
    pub fn new(kv: &'a dyn Kv) -> Self {
        Self { kv }
    }

    /// The user `name`, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<UserRecord>, Error> {
        let key = keys::user_key(&normalize(name));
        decode(self.kv.batch(vec![Op::Get { key }]).await?.remove(0).value)
    }

    /// The user `name` as the serving node's applied copy has it, else from the leaseholder
    /// ([`kv::get_applied_first`]): for the API's per-request admin check, which must answer
    /// while range 1 has no reachable leader. A role change is seen once this node applies it.
    pub async fn get_applied_first(&self, name: &str) -> Result<Option<UserRecord>, Error> {
        decode(kv::get_applied_first(self.kv, keys::user_key(&normalize(name))).await?)
    }

    /// Every user, by name.
    pub async fn list(&self) -> Result<Vec<UserRecord>, Error> {
        let op = Op::scan_prefix(keys::USER_PREFIX, 0);
        let rows = self.kv.batch(vec![op]).await?.remove(0).rows;
        rows.iter().map(|(_, v)| serde_json::from_slice(v).map_err(Error::internal)).collect()
    }

    /// Creates a user; fails with 42710 if it exists (unless `if_not_exists`).
    pub async fn create(&self, record: UserRecord, if_not_exists: bool) -> Result<(), SqlError> {
        if record.username == ADMIN_ROLE {
            return Err(SqlError::new("42710", "role \"admin\" already exists"));
        }
        let op = Op::ConditionalPut {
            key: keys::user_key(&record.username),
            value: serde_json::to_vec(&record).map_err(Error::internal)?,
            expected: None,
        };
        match self.kv.batch(vec![op]).await {
            Ok(_) => Ok(()),
            Err(Error::ConditionFailed { .. }) if if_not_exists => Ok(()),
            Err(Error::ConditionFailed { .. }) => {
                Err(SqlError::new("42710", format!("a role/user named {} already exists", record.username)))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Changes a user with `change`, atomically against concurrent changes.
    pub async fn update(&self, name: &str, change: impl Fn(&mut UserRecord)) -> Result<(), SqlError> {
        for _ in 0..5 {
            let Some(old) = self.get(name).await? else {
                return Err(SqlError::new("42704", format!("role/user \"{}\" does not exist", normalize(name))));
            };
            let mut new = old.clone();
            change(&mut new);
            let op = Op::ConditionalPut {
                key: keys::user_key(&old.username),
                value: serde_json::to_vec(&new).map_err(Error::internal)?,
                expected: Some(serde_json::to_vec(&old).map_err(Error::internal)?),
            };
            match self.kv.batch(vec![op]).await {
                Ok(_) => return Ok(()),
                Err(Error::ConditionFailed { .. }) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(SqlError::new(SERIALIZATION_FAILURE, "user changed concurrently; retry"))
    }

    /// Drops a user; `root` cannot be dropped.
    pub async fn drop(&self, name: &str, if_exists: bool) -> Result<(), SqlError> {
        let name = normalize(name);
        if name == ROOT_USER || name == ADMIN_ROLE {
            return Err(SqlError::new("42501", format!("cannot drop role/user {name}")));
        }
        let op = Op::Delete { key: keys::user_key(&name) };
        let existed = self.kv.batch(vec![op]).await?.remove(0).existed;
        if !existed && !if_exists {
            return Err(SqlError::new("42704", format!("role/user \"{name}\" does not exist")));
        }
        Ok(())
    }
}

/// Checks a login with a cleartext password (the HTTP login): the user must exist, have
/// LOGIN and a password, and the password must match. Every failure looks the same.
pub fn check_password(record: Option<&UserRecord>, password: &str) -> bool {
    match record {
        Some(UserRecord { can_login: true, scram: Some(verifier), .. }) => verifier.verify(password),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_checks_passwords_without_storing_them() {
        let verifier = ScramVerifier::new("s3cret");
        assert!(verifier.verify("s3cret"));
        assert!(!verifier.verify("S3cret"));
        let json = serde_json::to_string(&verifier).unwrap();
        assert!(!json.contains("s3cret"));
        assert_ne!(ScramVerifier::new("s3cret").salt, verifier.salt, "salts are random");
        assert_eq!(format!("{verifier:?}"), "ScramVerifier { .. }");
    }

    #[test]
    fn mock_verifiers_look_like_real_ones_and_match_nothing() {
        let mock = MockVerifiers::new();
        let real = ScramVerifier::new("pw");
        let alice = mock.verifier("alice");
        assert_eq!(alice, mock.verifier("alice"), "stable per name");
        assert_ne!(alice.salt, mock.verifier("bob").salt);
        assert_ne!(alice.salt, MockVerifiers::new().verifier("alice").salt, "keyed per node");
        assert_eq!((alice.salt.len(), alice.iterations), (real.salt.len(), real.iterations));
        assert_eq!((alice.stored_key.len(), alice.server_key.len()), (32, 32));
        assert!(!alice.verify("") && !alice.verify("alice"));
    }

    #[test]
    fn login_requires_login_and_password() {
        let mut record = UserRecord {
            username: "alice".into(),
            is_admin: false,
            can_login: true,
            scram: Some(ScramVerifier::new("pw")),
        };
        assert!(check_password(Some(&record), "pw"));
        assert!(!check_password(Some(&record), "nope"));
        assert!(!check_password(None, "pw"));
        record.can_login = false;
        assert!(!check_password(Some(&record), "pw"));
        record.can_login = true;
        record.scram = None;
        assert!(!check_password(Some(&record), ""));
    }
}
