//! `/login/` and `/logout/` bodies.

use serde::Serialize;

/// `/login/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LoginResponse {
    /// The session token: standard base64 of the protobuf `SessionCookie{id, secret}`.
    pub session: String,
}

/// `/logout/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LogoutResponse {
    /// Always true.
    pub logged_out: bool,
}
