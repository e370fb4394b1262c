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
pub struct SessionsQuery {
    pub username: Option<String>,
    #[param(value_type = Option<bool>)]
    pub exclude_closed_sessions: Option<String>,
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
    /// pagination token from `next`
    pub start: Option<String>,
}

/// `GET /sessions/`.
#[utoipa::path(get, path = "/sessions/", tag = "sessions", security(("api_session" = [])),
    params(SessionsQuery),
    responses((status = 200, body = ListSessionsResponse), (status = 400), (status = 401), (status = 403)))]
pub async fn sessions_list(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    TypedQuery(query): TypedQuery<SessionsQuery>,
) -> Result<Json<ListSessionsResponse>, ApiError> {
    let username = query.username.unwrap_or_default();
    let exclude_closed = query.exclude_closed_sessions.as_deref() == Some("true");
    let (limit, _) = pagination::parse_limit_offset(query.limit.as_deref(), None);
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
