//! `GET /api/v2/sessions/[?username&exclude_closed_sessions&limit&start]`: every node's SQL
//! sessions, filtered on the nodes, merged in start order, paginated with a keyset token.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::gateway::Gateway;
use crate::gateway::auth::AdminUser;
use crate::gateway::dto::FanOutSummary;
use crate::gateway::dto::sessions::{ListSessionsError, ListSessionsResponse, Session};
use crate::gateway::error::ApiError;
use crate::gateway::go_json;
use crate::gateway::merge::{SessionKey, merge_sessions};
use crate::gateway::pagination::{self, Cursor};
use crate::gateway::query::TypedQuery;
use crate::pb;
use crate::services::clock::unix_nanos;

/// The query of `/sessions/`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionsQuery {
    /// only this user's sessions
    pub username: Option<String>,
    /// leave out recently closed sessions
    #[param(schema_with = exclude_closed_schema)]
    pub exclude_closed_sessions: Option<String>,
    /// sessions per page (0 or absent: all)
    #[param(value_type = Option<i32>, minimum = 0, maximum = 2147483647)]
    pub limit: Option<String>,
    /// pagination token from `next` (empty or absent: the first page)
    #[param(pattern = r"^(|v1\.sessions\.(0|[1-9][0-9]{0,17}|[1-8][0-9]{18})\.[0-9a-f]{32})$")]
    pub start: Option<String>,
}

/// `exclude_closed_sessions` in the document: exactly `true` or `false`. CockroachDB reads
/// anything but `true` as false; a typo (`True`, `1`, `yes`) would then silently show the
/// closed sessions, so other values are a 400 here.
fn exclude_closed_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["true", "false"]))
        .build()
}

/// `GET /sessions/`.
#[utoipa::path(get, path = "/sessions/", tag = "sessions", security(("api_session" = [])),
    params(SessionsQuery),
    responses((status = 200, body = ListSessionsResponse),
        (status = 400, description = "bad `exclude_closed_sessions`, `limit` or `start`"),
        (status = 401, description = "missing, malformed or expired session"), (status = 403, description = "not an admin"),
        (status = 500, description = "internal error"), (status = 503, description = "the node list cannot be read now")))]
pub async fn sessions_list(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    TypedQuery(query): TypedQuery<SessionsQuery>,
) -> Result<Json<ListSessionsResponse>, ApiError> {
    let username = query.username.unwrap_or_default();
    let exclude_closed = match query.exclude_closed_sessions.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("invalid exclude_closed_sessions: must be true or false")),
    };
    let (limit, _) = pagination::parse_limit_offset(query.limit.as_deref(), None)?;
    let after: Option<SessionKey> = match query.start.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(token) => match pagination::decode(token) {
            Some(Cursor::Sessions { start, id }) => Some((start, id)),
            _ => return Err(ApiError::bad_request("invalid pagination token")),
        },
    };
    let outcomes = gateway
        .cluster()
        .fan_out("session list", None, |client| {
            let request = pb::SessionsRequest { username: username.clone(), exclude_closed };
            async move { client.sessions(request).await }
        })
        .await?;
    let summary = FanOutSummary::of(&outcomes);
    let now = unix_nanos(std::time::SystemTime::now());
    let mut keyed = Vec::new();
    let mut errors = Vec::new();
    for outcome in outcomes {
        match outcome.result {
            Ok(reply) => {
                for s in reply.sessions {
                    let key = (s.start, go_json::hex(&s.id));
                    keyed.push((key, Session::new(s, now)));
                }
            }
            Err(message) => errors.push(ListSessionsError { node_id: outcome.node_id as i32, message }),
        }
    }
    let (sessions, next) = merge_sessions(keyed, after.as_ref(), limit);
    Ok(Json(ListSessionsResponse {
        sessions,
        errors,
        internal_app_name_prefix: "$ internal".into(),
        next: next.map(|cursor| pagination::encode(&cursor)),
        summary,
    }))
}
