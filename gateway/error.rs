//! The gateway's one error type. CockroachDB answers errors as `text/plain` bodies (Go's
//! `http.Error`: message plus newline); we do the same by default and answer a JSON object
//! `{"error": .., "code": ..}` when the client sends `Accept: application/json` (a deliberate
//! improvement: typed clients get a parseable error). 5xx bodies never carry internals.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// CockroachDB's fixed text for internal errors.
pub const INTERNAL_ERROR_TEXT: &str =
    "An internal server error has occurred. Please check your CockroachDB logs for more details.";

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Text shown to the client.
    pub message: String,
    /// What went wrong inside, for the log only (5xx).
    pub detail: Option<String>,
}

/// The JSON form of an error (the answer to clients that accept JSON).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The same text as the plain-text answer, without the newline.
    pub error: String,
    /// The HTTP status.
    pub code: u16,
}

/// Marks a response as an [`ApiError`] so the JSON-errors layer can rewrite it.
#[derive(Debug, Clone)]
pub struct ErrorMarker(pub String);

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), detail: None }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403 with CockroachDB's text.
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "user not allowed to access this endpoint")
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 413: the request body is over [`crate::gateway::MAX_REQUEST_BODY_BYTES`].
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large (limit {} bytes)", crate::gateway::MAX_REQUEST_BODY_BYTES),
        )
    }

    /// 503: a node the request needs cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500 with CockroachDB's fixed text; `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self { detail: Some(detail.to_string()), ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR_TEXT) }
    }
}

impl From<crate::services::error::Error> for ApiError {
    /// The status comes from the error vocabulary's one table; 5xx texts hide internals (the
    /// log keeps them, once, in `into_response`), 403 carries CockroachDB's fixed text.
    fn from(err: crate::services::error::Error) -> Self {
        use crate::services::error::Error as ServiceError;
        let status = err.http_status();
        match err {
            ServiceError::Internal(detail) => {
                let mut api = Self::new(status, INTERNAL_ERROR_TEXT);
                api.detail = Some(detail);
                api
            }
            ServiceError::PermissionDenied(_) => Self::forbidden(),
            ServiceError::NotLeaseholder { .. } => Self::new(status, "no leaseholder could be reached"),
            other => Self::new(status, other.to_string()),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    /// A body over the limit (chunked, so found while reading) is 413; one that could not be
    /// read at all is the client's fault.
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::payload_too_large()
        } else {
            Self::bad_request(rejection.body_text())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A 404 or 401 is the client's business, not an error worth a log line; a node that
        // cannot serve now is worth a warning; only our own failures are errors.
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(detail = self.detail.as_deref().unwrap_or_default(), "internal error in the HTTP API");
        } else if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "HTTP API error");
        }
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        response.extensions_mut().insert(ErrorMarker(self.message));
        response
    }
}

/// Whether the request asked for JSON.
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|part| part.trim().starts_with("application/json")))
}

/// Middleware: rewrites error responses as JSON for clients that accept JSON.
pub async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let json = wants_json(request.headers());
    let response = next.run(request).await;
    if !json {
        return response;
    }
    let Some(ErrorMarker(message)) = response.extensions().get::<ErrorMarker>().cloned() else {
        return response;
    };
    let status = response.status();
    let mut json = (status, axum::Json(ErrorBody { error: message, code: status.as_u16() })).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        json.headers_mut().insert(header::ALLOW, allow.clone());
    }
    json
}

/// Middleware: gives the router's own 405 (a known path, another method; an empty body with
/// `Allow`) the error body every other error has, keeping `Allow`. CockroachDB answers
/// login/logout with other methods 404 and runs the handler anyway; we refuse them unrun.
pub async fn method_not_allowed(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || response.extensions().get::<ErrorMarker>().is_some() {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut error = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
    if let Some(allow) = allow {
        error.headers_mut().insert(header::ALLOW, allow);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_selects_json() {
        let mut headers = HeaderMap::new();
        assert!(!wants_json(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/html, application/json;q=0.9"));
        assert!(wants_json(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(!wants_json(&headers));
    }

    #[test]
    fn internal_errors_hide_details() {
        let err = ApiError::internal("disk /secret/path failed");
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.message, INTERNAL_ERROR_TEXT);
    }
}
