//! `GET /api/v2/openapi.json`. The document is generated from the handlers' types with
//! utoipa (issue #4, item 7); until that lands the endpoint answers a clear 501.

use crate::gateway::error::ApiError;

/// `GET /openapi.json`.
pub async fn openapi_get() -> ApiError {
    ApiError::new(axum::http::StatusCode::NOT_IMPLEMENTED, "the OpenAPI document is not supported yet")
}
