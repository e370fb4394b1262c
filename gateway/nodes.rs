//! `GET /api/v2/nodes/`: every node the cluster ever registered, dead ones included with their
//! last persisted status, in node-id order, with offset pagination.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::gateway::Gateway;
use crate::gateway::auth::AdminUser;
use crate::gateway::dto::nodes::{NodeStatus, NodesResponse};
use crate::gateway::error::ApiError;
use crate::gateway::pagination;
use crate::gateway::query::TypedQuery;

/// The query of `/nodes/`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NodesQuery {
    /// rows per page (0 or absent: all)
    #[param(value_type = Option<i32>, minimum = 0, maximum = 2147483647)]
    pub limit: Option<String>,
    /// rows to skip (ignored without a limit)
    #[param(value_type = Option<i32>, minimum = 0, maximum = 2147483647)]
    pub offset: Option<String>,
}

/// `GET /nodes/`.
#[utoipa::path(get, path = "/nodes/", tag = "nodes", security(("api_session" = [])),
    params(NodesQuery),
    responses((status = 200, body = NodesResponse), (status = 400, description = "bad `limit` or `offset`"),
        (status = 401, description = "missing, malformed or expired session"), (status = 403, description = "not an admin"),
        (status = 500, description = "internal error"), (status = 503, description = "the node list cannot be read now")))]
pub async fn nodes_list(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    TypedQuery(query): TypedQuery<NodesQuery>,
) -> Result<Json<NodesResponse>, ApiError> {
    let (limit, offset) = pagination::parse_limit_offset(query.limit.as_deref(), query.offset.as_deref())?;
    let mut nodes: Vec<NodeStatus> = gateway.cluster().nodes().await?.into_iter().map(NodeStatus::from).collect();
    nodes.sort_by_key(|n| n.node_id);
    let (nodes, next) = pagination::paginate(nodes, limit, offset);
    Ok(Json(NodesResponse { nodes, next: next.map(|n| n as i64) }))
}
