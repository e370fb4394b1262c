//! `GET /api/v2/health/[?ready=true]`: no authentication. Without `ready` the process answers
//! 200 `{}` as long as it serves HTTP; with `ready=true` it asks its node (the first seed)
//! whether it can serve: initialized, a Raft member with a leader, not draining. Not ready is
//! a 500 with CockroachDB's generic text (never 503: clients treat only 200/500).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::gateway::Gateway;
use crate::gateway::error::{ApiError, INTERNAL_ERROR_TEXT};
use crate::gateway::query::TypedQuery;

/// The query of `/health/`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HealthQuery {
    /// Check readiness (initialized, Raft member, not draining); Go `ParseBool` spellings,
    /// empty means false
    #[param(schema_with = ready_schema)]
    pub ready: Option<String>,
}

/// Go's `strconv.ParseBool` spellings, true ones first.
const GO_BOOLS: [(&str, bool); 12] = [
    ("1", true),
    ("t", true),
    ("T", true),
    ("TRUE", true),
    ("true", true),
    ("True", true),
    ("0", false),
    ("f", false),
    ("F", false),
    ("FALSE", false),
    ("false", false),
    ("False", false),
];

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    GO_BOOLS.iter().find(|(spelling, _)| *spelling == text).map(|(_, value)| *value)
}

/// `ready` in the document: a string from exactly the set the handler accepts (a JSON
/// boolean would promise `true`/`false` only and call `1` or an empty value invalid).
fn ready_schema() -> utoipa::openapi::schema::Object {
    let spellings = std::iter::once("").chain(GO_BOOLS.iter().map(|(spelling, _)| *spelling));
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(spellings))
        .build()
}

/// `GET /health/`.
#[utoipa::path(get, path = "/health/", tag = "health",
    params(HealthQuery),
    responses((status = 200, description = "`{}`", body = Object, content_type = "application/json"),
        (status = 400, description = "invalid ready value"), (status = 500, description = "not ready")))]
pub async fn health_get(
    State(gateway): State<Arc<Gateway>>,
    TypedQuery(query): TypedQuery<HealthQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ready = match query.ready.as_deref() {
        None | Some("") => false,
        Some(text) => parse_go_bool(text).ok_or_else(|| ApiError::bad_request("invalid ready value"))?,
    };
    if ready {
        match gateway.cluster().local_handshake().await {
            Ok(reply) if reply.ready => {}
            Ok(reply) => {
                // The reason stays in the log, as in CockroachDB.
                tracing::info!(reason = %reply.not_ready_reason, "health check: not ready");
                return Err(ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR_TEXT));
            }
            Err(err) => {
                tracing::info!(error = %err, "health check: node unreachable");
                return Err(ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR_TEXT));
            }
        }
    }
    Ok(Json(serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_parse_like_go() {
        for t in ["1", "t", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true));
        }
        for f in ["0", "f", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false));
        }
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(parse_go_bool("tRUE"), None);
    }
}
