//! `POST /login/`, `POST /logout/` and the session check every other endpoint (but health)
//! runs. A session token is CockroachDB's: standard base64 of the protobuf `SessionCookie{id,
//! secret}`. Sessions live in range 1 ([`crate::services::web_sessions`]) with an expiry of
//! `--web-session-timeout` (default 168h), so a token minted by any node is valid on every
//! node. Unlike CockroachDB, logout checks the secret, an unusable session is a 401 (not a
//! 400), and login/logout answer other methods with 405 and `Allow: POST`, without side
//! effects (the router refuses them before any handler runs).

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use serde::Deserialize;

use crate::gateway::Gateway;
use crate::gateway::dto::auth::{LoginResponse, LogoutResponse};
use crate::gateway::error::ApiError;
use crate::gateway::query::{NoParams, TypedQuery};
use crate::pb;
use crate::services::clock::unix_nanos;
use crate::services::sql::users::{self, Users};
use crate::services::web_sessions::{WebSession, WebSessions};

/// The header carrying the token.
pub const SESSION_HEADER: &str = "x-cockroach-api-session";
/// The header value that means "read the `session` cookie".
pub const COOKIE_MAGIC: &str = "cookie";

const INVALID_CREDENTIALS: &str = "the provided credentials did not match any account on the server";
const INVALID_SESSION: &str = "the provided authentication session could not be validated";

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

impl Gateway {
    fn users(&self) -> Users<'_> {
        Users::new(self.cluster.as_ref())
    }

    fn web_sessions(&self) -> WebSessions<'_> {
        WebSessions::new(self.cluster.as_ref())
    }

    /// The user a request is made by: `root` in insecure mode, else the valid session's user.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        if self.config.insecure {
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
        // CockroachDB answers an undecodable token with 400; it is a credential that does not
        // authenticate, like an unknown or expired one, so it gets the same 401 (RFC 9110: the
        // request lacks valid credentials), which is what the document promises and what
        // clients handle by logging in again.
        let (id, secret) = decode_token(&token).ok_or_else(|| ApiError::unauthorized("invalid session header"))?;
        let Some(session) = self.web_sessions().get_applied_first(id as u64).await? else {
            return Err(ApiError::unauthorized(INVALID_SESSION));
        };
        if !session.is_valid(&secret, unix_nanos(SystemTime::now())) {
            return Err(ApiError::unauthorized(INVALID_SESSION));
        }
        Ok(session.username)
    }

    /// Checks that `username` is an admin (root always is).
    pub async fn authorize_admin(&self, username: &str) -> Result<(), ApiError> {
        if username == users::ROOT_USER {
            return Ok(());
        }
        match self.users().get_applied_first(username).await? {
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

/// An authenticated admin (every endpoint but health, login and logout needs one); the
/// extractor runs the session check and the admin check.
pub struct AdminUser;

impl FromRequestParts<Arc<Gateway>> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let user = gateway.authenticate(&parts.headers).await?;
        gateway.authorize_admin(&user).await?;
        Ok(AdminUser)
    }
}

/// Login credentials, from the form body or the query string.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[schema(as = LoginForm)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// a SQL user
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    username: String,
    #[serde(default)]
    #[schema(required = true)]
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
    params(Credentials),
    request_body(content = Credentials, content_type = "application/x-www-form-urlencoded",
        description = "username and password (the query string may carry them instead, as in CockroachDB)"),
    responses((status = 200, body = LoginResponse), (status = 400, description = "no username"),
        (status = 401, description = "the credentials match no account"), (status = 413, description = "body over 2 MiB"),
        (status = 500, description = "internal error"), (status = 503, description = "the users cannot be read now")))]
pub async fn login(
    State(gateway): State<Arc<Gateway>>,
    TypedQuery(query): TypedQuery<Credentials>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
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
    let record = gateway.users().get(&username).await?;
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
    let id = (rand::random::<u64>() >> 1).max(1) as i64;
    let secret: [u8; 16] = rand::random();
    let lifetime = gateway.config.web_session_timeout.as_nanos().min(i64::MAX as u128) as i64;
    let session = WebSession::new(users::normalize(&username), &secret, unix_nanos(SystemTime::now()), lifetime);
    gateway.web_sessions().create(id as u64, &session).await?;
    Ok(axum::Json(LoginResponse { session: encode_token(id, &secret) }).into_response())
}

/// `POST /api/v2/logout/`.
#[utoipa::path(post, path = "/logout/", tag = "auth", security(("api_session" = [])),
    responses((status = 200, body = LogoutResponse), (status = 400, description = "a query parameter (it takes none)"),
        (status = 401, description = "missing, malformed or unknown session"),
        (status = 500, description = "internal error"), (status = 503, description = "the sessions cannot be read now")))]
pub async fn logout(
    State(gateway): State<Arc<Gateway>>,
    _: TypedQuery<NoParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // CockroachDB answers these with 400; logout needs the session as its credential, so a
    // missing or unusable one is the same 401 as on every other endpoint.
    let token = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ApiError::unauthorized("invalid or unspecified session"))?;
    let (id, secret) = decode_token(token).ok_or_else(|| ApiError::unauthorized("invalid session"))?;
    let Some(stored) = gateway.web_sessions().get(id as u64).await? else {
        return Err(ApiError::unauthorized("invalid session"));
    };
    // Unlike CockroachDB, knowing a session id is not enough to revoke it.
    if !stored.0.secret_matches(&secret) {
        return Err(ApiError::unauthorized(INVALID_SESSION));
    }
    gateway.web_sessions().revoke(id as u64, stored, unix_nanos(SystemTime::now())).await?;
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
