//! The HTTP API's login sessions, stored in range 1 (`/System/websession/<id>`) so that a
//! token minted by any node is valid on every node. Only SHA-256 of a session's secret is
//! stored; a session carries its user, its expiry and, once logged out, its revocation time.

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::services::error::{Error, Result};
use crate::services::keys;
use crate::services::kv::{self, Kv, Op};

/// A web session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebSession {
    /// SHA-256 of the secret, hex.
    pub hashed_secret: String,
    /// The user.
    pub username: String,
    /// Creation, ns since the epoch.
    pub created_at: i64,
    /// Expiry, ns since the epoch.
    pub expires_at: i64,
    /// Revocation (logout), ns since the epoch.
    pub revoked_at: Option<i64>,
}

impl WebSession {
    /// A new session of `username` for `secret`, valid from `now` for `lifetime_nanos`.
    pub fn new(username: String, secret: &[u8], now: i64, lifetime_nanos: i64) -> Self {
        Self {
            hashed_secret: sha256_hex(secret),
            username,
            created_at: now,
            expires_at: now.saturating_add(lifetime_nanos),
            revoked_at: None,
        }
    }

    /// Whether `secret` is this session's secret (compared in constant time).
    pub fn secret_matches(&self, secret: &[u8]) -> bool {
        let presented = sha256_hex(secret);
        presented.len() == self.hashed_secret.len()
            && presented.bytes().zip(self.hashed_secret.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Whether the session is valid for `secret` at `now` (ns): right secret, not revoked, not
    /// expired.
    pub fn is_valid(&self, secret: &[u8], now: i64) -> bool {
        self.secret_matches(secret) && self.revoked_at.is_none() && now < self.expires_at
    }
}

fn decode(bytes: &[u8]) -> Result<WebSession> {
    serde_json::from_slice(bytes).map_err(Error::internal)
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Web-session storage through the KV layer.
pub struct WebSessions<'a> {
    kv: &'a dyn Kv,
}

/// A stored session with the exact bytes it was read as (the expected value of a later
/// conditional write).
pub type Stored = (WebSession, Vec<u8>);

impl<'a> WebSessions<'a> {
    /// Sessions as seen through `kv`.
    pub fn new(kv: &'a dyn Kv) -> Self {
        Self { kv }
    }

    /// The session `id`, if it exists.
    pub async fn get(&self, id: u64) -> Result<Option<Stored>> {
        let value = self.kv.batch(vec![Op::Get { key: keys::web_session_key(id) }]).await?.remove(0).value;
        match value {
            Some(bytes) => Ok(Some((decode(&bytes)?, bytes))),
            None => Ok(None),
        }
    }

    /// The session `id` as the serving node's applied copy has it, else from the leaseholder
    /// ([`kv::get_applied_first`]): the per-request session check, which must answer while
    /// range 1 has no reachable leader. A logout elsewhere is seen once this node applies it.
    pub async fn get_applied_first(&self, id: u64) -> Result<Option<WebSession>> {
        kv::get_applied_first(self.kv, keys::web_session_key(id)).await?.map(|bytes| decode(&bytes)).transpose()
    }

    /// Stores a new session under `id`; fails with ConditionFailed if the id is taken.
    pub async fn create(&self, id: u64, session: &WebSession) -> Result<()> {
        let op = Op::ConditionalPut {
            key: keys::web_session_key(id),
            value: serde_json::to_vec(session).map_err(Error::internal)?,
            expected: None,
        };
        self.kv.batch(vec![op]).await.map(|_| ())
    }

    /// Marks the session `id`, read as `stored`, revoked at `now`. A session revoked
    /// concurrently by another logout counts as done.
    pub async fn revoke(&self, id: u64, stored: Stored, now: i64) -> Result<()> {
        let (mut session, old) = stored;
        if session.revoked_at.is_some() {
            return Ok(());
        }
        session.revoked_at = Some(now);
        let op = Op::ConditionalPut {
            key: keys::web_session_key(id),
            value: serde_json::to_vec(&session).map_err(Error::internal)?,
            expected: Some(old),
        };
        match self.kv.batch(vec![op]).await {
            Ok(_) | Err(Error::ConditionFailed { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_check_secret_expiry_and_revocation() {
        let session = WebSession::new("u".into(), b"secret", 0, 100);
        assert!(session.is_valid(b"secret", 50));
        assert!(!session.is_valid(b"forged", 50));
        assert!(!session.is_valid(b"secret", 100));
        assert!(!WebSession { revoked_at: Some(10), ..session }.is_valid(b"secret", 50));
    }
}
