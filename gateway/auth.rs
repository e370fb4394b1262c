//! `POST /login/`, `POST /logout/` and the session check every other endpoint (but health)
//! runs. A session token is CockroachDB's: standard base64 of the protobuf `SessionCookie{id,
//! secret}`. The session is stored in range 1 (`/System/websession/<id>`) with SHA-256 of the
//! secret, the user, and an expiry (`--web-session-timeout`, default 168h), so a token minted
//! by any node is valid on every node. Unlike CockroachDB, logout checks the secret, and
//! login/logout answer 405 to other methods without side effects.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::gateway::Gateway;
use crate::gateway::error::ApiError;
use crate::gateway::json::{LoginResponse, LogoutResponse};
use crate::pb;
use crate::services::keys;
use crate::services::kv::Op;
use crate::services::membership::unix_nanos;
use crate::services::sql::users::{self, UserRecord};

/// The header carrying the token.
pub const SESSION_HEADER: &str = "x-cockroach-api-session";
/// The header value that means "read the `session` cookie".
pub const COOKIE_MAGIC: &str = "cookie";

const INVALID_CREDENTIALS: &str = "the provided credentials did not match any account on the server";
const INVALID_SESSION: &str = "the provided authentication session could not be validated";

/// A web session as stored in range 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebSession {
    /// SHA-256 of the secret, hex.
    pub hashed_secret: String,
    /// The user.
    pub username: String,
    /// Creation, ns.
    pub created_at: i64,
    /// Expiry, ns.
    pub expires_at: i64,
    /// Revocation, ns.
    pub revoked_at: Option<i64>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes a token.
pub fn encode_token(id: i64, secret: &[u8]) -> String {
    STANDARD.encode(pb::SessionCookie { id, secret: secret.to_vec().into() }.encode_to_vec())
}

/// Decodes a token into (id, secret).
pub fn decode_token(token: &str) -> Option<(i64, Vec<u8>)> {
    let bytes = STANDARD.decode(token.trim()).ok()?;
    let cookie = pb::SessionCookie::decode(bytes.as_slice()).ok()?;
    (cookie.id > 0 && !cookie.secret.is_empty()).then(|| (cookie.id, cookie.secret.to_vec()))
}

/// Whether `secret` is the session's secret (compared in constant time).
pub fn secret_matches(session: &WebSession, secret: &[u8]) -> bool {
    let presented = sha256_hex(secret);
    presented.len() == session.hashed_secret.len()
        && presented.bytes().zip(session.hashed_secret.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Whether `session` is valid for `secret` at `now` (ns): right secret, not revoked, not expired.
pub fn session_valid(session: &WebSession, secret: &[u8], now: i64) -> bool {
    secret_matches(session, secret) && session.revoked_at.is_none() && now < session.expires_at
}

impl Gateway {
    async fn user(&self, name: &str) -> Result<Option<UserRecord>, ApiError> {
        let key = keys::user_key(&users::normalize(name));
        let value = self.kv(vec![Op::Get { key }]).await?.remove(0).value;
        value.map(|v| serde_json::from_slice(&v).map_err(ApiError::internal)).transpose()
    }

    async fn web_session(&self, id: i64) -> Result<Option<(WebSession, Vec<u8>)>, ApiError> {
        let key = keys::web_session_key(id as u64);
        let value = self.kv(vec![Op::Get { key }]).await?.remove(0).value;
        match value {
            Some(bytes) => Ok(Some((serde_json::from_slice(&bytes).map_err(ApiError::internal)?, bytes))),
            None => Ok(None),
        }
    }

    /// The user a request is made by: `root` in insecure mode, else the valid session's user.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        if self.insecure {
            return Ok(users::ROOT_USER.to_string());
        }
        let Some(value) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(ApiError::unauthorized("invalid session header"));
        };
        let token = if value.trim() == COOKIE_MAGIC {
            session_cookie(headers).ok_or_else(|| ApiError::unauthorized("invalid session header"))?
        } else {
            value.trim().to_string()
        };
        let (id, secret) = decode_token(&token).ok_or_else(|| ApiError::bad_request("invalid session header"))?;
        let Some((session, _)) = self.web_session(id).await? else {
            return Err(ApiError::unauthorized(INVALID_SESSION));
        };
        if !session_valid(&session, &secret, unix_nanos(SystemTime::now())) {
            return Err(ApiError::unauthorized(INVALID_SESSION));
        }
        Ok(session.username)
    }

    /// Checks that `username` is an admin (root always is).
    pub async fn authorize_admin(&self, username: &str) -> Result<(), ApiError> {
        if username == users::ROOT_USER {
            return Ok(());
        }
        match self.user(username).await? {
            Some(record) if record.is_admin => Ok(()),
            _ => Err(ApiError::forbidden()),
        }
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("session=").map(|t| t.trim_matches('"').to_string()))
}

/// An authenticated admin (every endpoint but health, login and logout needs one).
pub struct Admin(#[allow(dead_code)] pub String);

impl FromRequestParts<Arc<Gateway>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let user = gateway.authenticate(&parts.headers).await?;
        gateway.authorize_admin(&user).await?;
        Ok(Admin(user))
    }
}

/// Login credentials, from the form body or the query string.
#[derive(Debug, Default, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// Parses a form body. axum's Form extractor would reject a request without a content type;
/// CockroachDB's `ParseForm` reads the body only when it is a form and the query string always.
fn parse_form(body: &[u8]) -> Credentials {
    let mut credentials = Credentials::default();
    for pair in body.split(|b| *b == b'&') {
        let text = String::from_utf8_lossy(pair);
        let (key, value) = text.split_once('=').unwrap_or((&text, ""));
        let value = url_decode(value);
        match url_decode(key).as_str() {
            "username" => credentials.username = value,
            "password" => credentials.password = value,
            _ => {}
        }
    }
    credentials
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
pub fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST /api/v2/login/`.
#[utoipa::path(post, path = "/login/", tag = "auth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "username=..&password=.. (or the same as query parameters)"),
    responses((status = 200, body = LoginResponse), (status = 400), (status = 401), (status = 405)))]
pub async fn login(
    State(gateway): State<Arc<Gateway>>,
    method: axum::http::Method,
    Query(query): Query<Credentials>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if method != axum::http::Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form { parse_form(&body) } else { Credentials::default() };
    let username = if form.username.is_empty() { query.username } else { form.username };
    let password = if form.password.is_empty() { query.password } else { form.password };
    if username.is_empty() {
        return Err(ApiError::bad_request("username not specified"));
    }
    let record = gateway.user(&username).await?;
    let verified = {
        let password = password.clone();
        let record = record.clone();
        // PBKDF2 takes milliseconds: keep it off the async workers.
        tokio::task::spawn_blocking(move || users::check_password(record.as_ref(), &password))
            .await
            .map_err(ApiError::internal)?
    };
    if !verified {
        return Err(ApiError::unauthorized(INVALID_CREDENTIALS));
    }
    let username = users::normalize(&username);
    let id = (rand::random::<u64>() >> 1).max(1) as i64;
    let secret: [u8; 16] = rand::random();
    let now = unix_nanos(SystemTime::now());
    let session = WebSession {
        hashed_secret: sha256_hex(&secret),
        username,
        created_at: now,
        expires_at: now.saturating_add(gateway.web_session_timeout.as_nanos() as i64),
        revoked_at: None,
    };
    let op = Op::ConditionalPut {
        key: keys::web_session_key(id as u64),
        value: serde_json::to_vec(&session).map_err(ApiError::internal)?,
        expected: None,
    };
    gateway.kv(vec![op]).await?;
    Ok(axum::Json(LoginResponse { session: encode_token(id, &secret) }).into_response())
}

/// `POST /api/v2/logout/`.
#[utoipa::path(post, path = "/logout/", tag = "auth", security(("api_session" = [])),
    responses((status = 200, body = LogoutResponse), (status = 400), (status = 401), (status = 405)))]
pub async fn logout(
    State(gateway): State<Arc<Gateway>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if method != axum::http::Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let token = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid or unspecified session"))?;
    let (id, secret) = decode_token(token).ok_or_else(|| ApiError::bad_request("invalid session"))?;
    let Some((mut session, old)) = gateway.web_session(id).await? else {
        return Err(ApiError::bad_request("invalid session"));
    };
    // Unlike CockroachDB, knowing a session id is not enough to revoke it.
    if !secret_matches(&session, &secret) {
        return Err(ApiError::unauthorized(INVALID_SESSION));
    }
    if session.revoked_at.is_none() {
        session.revoked_at = Some(unix_nanos(SystemTime::now()));
        let op = Op::ConditionalPut {
            key: keys::web_session_key(id as u64),
            value: serde_json::to_vec(&session).map_err(ApiError::internal)?,
            expected: Some(old),
        };
        match gateway.kv_raw(vec![op]).await {
            // Revoked concurrently by another logout: the outcome is the same.
            Ok(_) | Err(crate::services::error::Error::ConditionFailed { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(axum::Json(LogoutResponse { logged_out: true }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_cockroachdb_session_cookies() {
        let secret: Vec<u8> = (0..16).collect();
        let token = encode_token(917842233186271233, &secret);
        assert_eq!(token, "CIGArefelLXeDBIQAAECAwQFBgcICQoLDA0ODw==");
        assert_eq!(decode_token(&token), Some((917842233186271233, secret)));
        assert_eq!(decode_token("not base64!"), None);
        assert_eq!(decode_token(""), None);
    }

    #[test]
    fn sessions_check_secret_expiry_and_revocation() {
        let session = WebSession {
            hashed_secret: sha256_hex(b"secret"),
            username: "u".into(),
            created_at: 0,
            expires_at: 100,
            revoked_at: None,
        };
        assert!(session_valid(&session, b"secret", 50));
        assert!(!session_valid(&session, b"forged", 50));
        assert!(!session_valid(&session, b"secret", 100));
        assert!(!session_valid(&WebSession { revoked_at: Some(10), ..session }, b"secret", 50));
    }

    #[test]
    fn forms_decode() {
        let c = parse_form(b"username=demo&password=p%40ss+word%21");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("demo", "p@ss word!"));
        assert_eq!(url_decode("100%"), "100%");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "tenant=x; session=abc==; other=1".parse().unwrap());
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc=="));
    }
}
