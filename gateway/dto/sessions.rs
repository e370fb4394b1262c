//! `/sessions/` bodies and the conversion from a node's `pb::Session`.

use serde::Serialize;

use crate::gateway::dto::FanOutSummary;
use crate::gateway::go_json::{self, GoFloat};
use crate::pb;

/// `ActiveQuery`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ActiveQuery {
    /// Hex id.
    pub id: String,
    /// Transaction id (UUID).
    pub txn_id: String,
    pub sql: String,
    /// RFC 3339.
    pub start: String,
    /// Distributed (never here).
    pub is_distributed: bool,
    /// 0 PREPARING, 1 EXECUTING.
    pub phase: i32,
    /// Progress (not measured: 0).
    pub progress: GoFloat,
    /// Elapsed, ns.
    pub elapsed_time: i64,
}

/// `TxnInfo`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TxnInfo {
    /// Transaction id (UUID).
    pub id: String,
    /// RFC 3339.
    pub start: String,
    pub num_statements_executed: i32,
    /// Implicit (always: no explicit transactions).
    pub implicit: bool,
    /// Elapsed, ns.
    pub elapsed_time: i64,
}

/// `serverpb.Session`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Session {
    pub node_id: i32,
    pub username: String,
    pub client_address: String,
    pub application_name: String,
    /// Running statements.
    pub active_queries: Vec<ActiveQuery>,
    /// RFC 3339.
    pub start: String,
    /// Last statement.
    pub last_active_query: String,
    /// 16-byte id, base64.
    pub id: String,
    /// Memory estimate, bytes.
    pub alloc_bytes: i64,
    /// Peak memory estimate, bytes.
    pub max_alloc_bytes: i64,
    /// Running implicit transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_txn: Option<TxnInfo>,
    /// 0 ACTIVE, 1 CLOSED, 2 IDLE.
    pub status: i32,
    /// RFC 3339, only once closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    pub num_txns_executed: i32,
    /// Database (an addition).
    pub database: String,
}

impl Session {
    /// Converts one node's session; elapsed times are measured up to `now` (ns).
    pub fn new(s: pb::Session, now: i64) -> Self {
        let txn_id = s.active_txn.as_ref().map(|t| go_json::uuid(&t.id)).unwrap_or_default();
        Session {
            node_id: s.node_id as i32,
            username: s.username,
            client_address: s.client_address,
            application_name: s.application_name,
            active_queries: s
                .active_queries
                .into_iter()
                .map(|q| ActiveQuery {
                    id: go_json::hex(&q.id),
                    txn_id: txn_id.clone(),
                    sql: q.sql,
                    start: go_json::rfc3339(q.start),
                    is_distributed: false,
                    phase: q.phase,
                    progress: GoFloat(0.0),
                    elapsed_time: now.saturating_sub(q.start).max(0),
                })
                .collect(),
            start: go_json::rfc3339(s.start),
            last_active_query: s.last_active_query,
            id: go_json::base64(&s.id),
            alloc_bytes: s.alloc_bytes,
            max_alloc_bytes: s.max_alloc_bytes,
            active_txn: s.active_txn.map(|t| TxnInfo {
                id: go_json::uuid(&t.id),
                start: go_json::rfc3339(t.start),
                num_statements_executed: t.num_statements as i32,
                implicit: true,
                elapsed_time: now.saturating_sub(t.start).max(0),
            }),
            status: s.status,
            end: (s.end != 0).then(|| go_json::rfc3339(s.end)),
            num_txns_executed: s.num_txns_executed as i32,
            database: s.database,
        }
    }
}

/// One node's failure in `/sessions/`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ListSessionsError {
    pub node_id: i32,
    pub message: String,
}

/// `/sessions/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ListSessionsResponse {
    /// Sessions ordered by start.
    pub sessions: Vec<Session>,
    /// Per-node errors.
    pub errors: Vec<ListSessionsError>,
    /// The prefix of internal application names.
    pub internal_app_name_prefix: String,
    /// Continuation token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Who answered.
    pub summary: FanOutSummary,
}
