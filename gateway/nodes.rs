//! `GET /api/v2/nodes/`: every node the cluster ever registered, dead ones included with their
//! last persisted status, in node-id order, with offset pagination.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};

use crate::gateway::Gateway;
use crate::gateway::auth::AdminUser;
use crate::gateway::error::ApiError;
use crate::gateway::json::{Address, Attributes, GoFloat, Locality, NodeStatus, NodesResponse, ServerVersion, Tier};
use crate::gateway::pagination;
use crate::pb;

/// Converts one node to CockroachDB's `nodeStatus`.
pub fn node_status(entry: pb::NodeEntry) -> NodeStatus {
    let d = entry.descriptor.unwrap_or_default();
    let tiers = d.locality.map(|l| l.tiers).unwrap_or_default();
    NodeStatus {
        node_id: d.node_id as i32,
        address: Address::tcp(&d.address),
        attrs: Attributes::default(),
        locality: Locality { tiers: tiers.into_iter().map(|t| Tier { key: t.key, value: t.value }).collect() },
        server_version: ServerVersion::parse(&d.build_tag),
        build_tag: d.build_tag,
        started_at: d.started_at,
        cluster_name: d.cluster_name,
        sql_address: Address::tcp(&d.sql_address),
        metrics: entry.metrics.into_iter().map(|(k, v)| (k, GoFloat(v))).collect::<BTreeMap<_, _>>(),
        store_metrics: entry
            .store_metrics
            .into_iter()
            .map(|(id, m)| (id.to_string(), m.metrics.into_iter().map(|(k, v)| (k, GoFloat(v))).collect()))
            .collect(),
        total_system_memory: d.total_system_memory as i64,
        num_cpus: d.num_cpus as i32,
        updated_at: entry.updated_at,
        liveness_status: entry.liveness,
    }
}

/// `GET /nodes/`.
#[utoipa::path(get, path = "/nodes/", tag = "nodes", security(("api_session" = [])),
    params(("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = NodesResponse), (status = 401), (status = 403)))]
pub async fn nodes_list(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<NodesResponse>, ApiError> {
    let (limit, offset) =
        pagination::simple_values(query.get("limit").map(String::as_str), query.get("offset").map(String::as_str));
    let mut nodes: Vec<NodeStatus> = gateway.cluster().nodes().await?.into_iter().map(node_status).collect();
    nodes.sort_by_key(|n| n.node_id);
    let (nodes, next) = pagination::paginate(nodes, limit, offset);
    Ok(Json(NodesResponse { nodes, next: next.map(|n| n as i64) }))
}
