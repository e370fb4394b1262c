//! `GET /api/v2/sessions/[?username&exclude_closed_sessions&limit&start]`: every node's SQL
//! sessions, filtered on the nodes, merged in start order, paginated with a keyset token.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};

use crate::gateway::Gateway;
use crate::gateway::auth::AdminUser;
use crate::gateway::error::ApiError;
use crate::gateway::json::{
    self, ActiveQuery, FanOutSummary, GoFloat, ListSessionsError, ListSessionsResponse, Session, TxnInfo,
};
use crate::gateway::merge::{SessionKey, merge_sessions};
use crate::gateway::pagination::{self, Cursor};
use crate::pb;
use crate::services::clock::unix_nanos;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Converts one node's session to CockroachDB's `Session`.
pub fn session(s: pb::Session, now: i64) -> Session {
    let txn_id = s.active_txn.as_ref().map(|t| json::uuid(&t.id)).unwrap_or_default();
    Session {
        node_id: s.node_id as i32,
        username: s.username,
        client_address: s.client_address,
        application_name: s.application_name,
        active_queries: s
            .active_queries
            .into_iter()
            .map(|q| ActiveQuery {
                id: hex(&q.id),
                txn_id: txn_id.clone(),
                sql: q.sql,
                start: json::rfc3339(q.start),
                is_distributed: false,
                phase: q.phase,
                progress: GoFloat(0.0),
                elapsed_time: now.saturating_sub(q.start).max(0),
            })
            .collect(),
        start: json::rfc3339(s.start),
        last_active_query: s.last_active_query,
        id: json::base64(&s.id),
        alloc_bytes: s.alloc_bytes,
        max_alloc_bytes: s.max_alloc_bytes,
        active_txn: s.active_txn.map(|t| TxnInfo {
            id: json::uuid(&t.id),
            start: json::rfc3339(t.start),
            num_statements_executed: t.num_statements as i32,
            implicit: true,
            elapsed_time: now.saturating_sub(t.start).max(0),
        }),
        status: s.status,
        end: (s.end != 0).then(|| json::rfc3339(s.end)),
        num_txns_executed: s.num_txns_executed as i32,
        database: s.database,
    }
}

/// `GET /sessions/`.
#[utoipa::path(get, path = "/sessions/", tag = "sessions", security(("api_session" = [])),
    params(("username" = Option<String>, Query), ("exclude_closed_sessions" = Option<bool>, Query), ("limit" = Option<i64>, Query), ("start" = Option<String>, Query, description = "pagination token from `next`")),
    responses((status = 200, body = ListSessionsResponse), (status = 400), (status = 401), (status = 403)))]
pub async fn sessions_list(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ListSessionsResponse>, ApiError> {
    let username = query.get("username").cloned().unwrap_or_default();
    let exclude_closed = query.get("exclude_closed_sessions").map(String::as_str) == Some("true");
    let (limit, _) = pagination::simple_values(query.get("limit").map(String::as_str), None);
    let after: Option<SessionKey> = match query.get("start").filter(|s| !s.is_empty()) {
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
                    let key = (s.start, hex(&s.id));
                    keyed.push((key, session(s, now)));
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
