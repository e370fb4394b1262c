//! Ranges: one node's replicas (`/nodes/{id}/ranges/`), the cluster-wide hot ranges
//! (`/ranges/hot/`) and every node's view of one range (`/ranges/{id}/`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};

use crate::gateway::Gateway;
use crate::gateway::auth::AdminUser;
use crate::gateway::cluster::NodeRef;
use crate::gateway::error::ApiError;
use crate::gateway::json::{
    self, FanOutSummary, GoFloat, HotRange, HotRangesError, HotRangesResponse, Lease, NodeRangeResponse,
    NodeRangesResponse, RaftState, RangeDescriptorInfo, RangeInfo, RangeProblems, RangeResponse, RangeStatistics,
    ReplicaDescriptor, Span, Timestamp,
};
use crate::gateway::merge::{HotCandidate, merge_hot_ranges};
use crate::gateway::pagination::{self, Cursor};
use crate::pb;
use crate::services::load::{LoadMetric, LoadRates};
use crate::services::sql::value::{pretty_any, pretty_any_end};

/// At most this many hot ranges are asked of each node (CockroachDB tracks 128 per store).
pub const MAX_HOT_PER_NODE: usize = 128;

fn replica(node_id: u64, voter: bool) -> ReplicaDescriptor {
    ReplicaDescriptor {
        node_id: node_id as i32,
        store_id: node_id as i32,
        replica_id: node_id as i32,
        replica_type: if voter { 0 } else { 5 },
    }
}

/// Converts a node's replica to CockroachDB's `rangeInfo`.
pub fn range_info(info: pb::RangeInfo) -> RangeInfo {
    let desc = info.descriptor.unwrap_or_default();
    let raft = info.raft.unwrap_or_default();
    let load = info.load.unwrap_or_default();
    let problems = info.problems.unwrap_or_default();
    RangeInfo {
        desc: RangeDescriptorInfo {
            range_id: desc.range_id as i64,
            start_key: json::base64(&desc.start_key),
            end_key: json::base64(&desc.end_key),
            store_id: 0,
            queries_per_second: GoFloat(0.0),
        },
        span: Span { start_key: pretty_any(&desc.start_key), end_key: pretty_any_end(&desc.end_key) },
        source_node_id: info.node_id as i32,
        source_store_id: info.node_id as i32,
        error_message: String::new(),
        lease_history: info
            .lease_history
            .iter()
            .enumerate()
            .map(|(i, lease)| Lease {
                start: Timestamp { wall_time: lease.start, logical: 0 },
                replica: replica(lease.leader_id, true),
                epoch: lease.term as i64,
                sequence: i as i64 + 1,
            })
            .collect(),
        problems: RangeProblems {
            unavailable: problems.unavailable,
            no_raft_leader: problems.no_raft_leader,
            underreplicated: problems.underreplicated,
            overreplicated: problems.overreplicated,
            no_lease: problems.no_lease,
        },
        stats: RangeStatistics {
            queries_per_second: GoFloat(load.queries_per_second),
            requests_per_second: GoFloat(load.queries_per_second),
            writes_per_second: GoFloat(load.writes_per_second),
            reads_per_second: GoFloat(load.reads_per_second),
            write_bytes_per_second: GoFloat(load.write_bytes_per_second),
            read_bytes_per_second: GoFloat(load.read_bytes_per_second),
            cpu_time_per_second: GoFloat(load.cpu_time_per_second),
        },
        replicas: desc.replicas.iter().map(|r| replica(r.node_id, r.voter)).collect(),
        leaseholder_node_id: raft.leader_id as i32,
        raft_state: Some(RaftState {
            term: raft.term,
            commit_index: raft.commit_index,
            applied_index: raft.applied_index,
            leader_id: raft.leader_id,
            state: raft.state,
        }),
        key_count: Some(info.key_count),
        live_bytes: Some(info.live_bytes),
    }
}

/// Parses a node id the way the API accepts it: `local` or a positive decimal integer.
pub fn parse_node_id(text: &str) -> Option<NodeRef> {
    if text.eq_ignore_ascii_case("local") {
        return Some(NodeRef::Local);
    }
    text.parse::<i32>().ok().filter(|id| *id > 0).map(|id| NodeRef::Id(id as u64))
}

fn parse_range_ids(text: Option<&String>) -> Result<Vec<u64>, ApiError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(Vec::new()) };
    let mut ids: Vec<u64> = text
        .split(',')
        .map(|part| part.trim().parse::<i64>().ok().filter(|id| *id > 0).map(|id| id as u64))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ApiError::bad_request("invalid range ID"))?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// `GET /nodes/{node_id}/ranges/`.
#[utoipa::path(get, path = "/nodes/{node_id}/ranges/", tag = "ranges", security(("api_session" = [])),
    params(("node_id" = String, Path, description = "`local` or a node id"), ("ranges" = Option<String>, Query, description = "comma-separated range ids"), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, body = NodeRangesResponse), (status = 400), (status = 401), (status = 403), (status = 503)))]
pub async fn node_ranges_list(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    Path(node_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<NodeRangesResponse>, ApiError> {
    let node = parse_node_id(&node_id).ok_or_else(|| ApiError::bad_request("invalid node ID"))?;
    let range_ids = parse_range_ids(query.get("ranges"))?;
    let (limit, offset) =
        pagination::simple_values(query.get("limit").map(String::as_str), query.get("offset").map(String::as_str));
    let target = gateway.cluster().target(node).await?.ok_or_else(|| match node {
        NodeRef::Id(id) => ApiError::not_found(format!("node {id} not found")),
        NodeRef::Local => ApiError::unavailable("no local node"),
    })?;
    let request = pb::RangesRequest {
        range_ids,
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        offset: u32::try_from(offset).unwrap_or(u32::MAX),
    };
    let reply = gateway
        .cluster()
        .call_node(&target, |client| async move { client.ranges(request).await })
        .await
        .map_err(|err| ApiError::unavailable(format!("node {node_id} is unavailable: {}", err.public_message())))?;
    // The node pages by range id; `total` says whether more follow.
    let mut ranges: Vec<RangeInfo> = reply.ranges.into_iter().map(range_info).collect();
    ranges.sort_by_key(|r| r.desc.range_id);
    let next = pagination::next_offset(reply.total as usize, limit, offset);
    Ok(Json(NodeRangesResponse { ranges, next: next.map(|n| n as i64) }))
}

/// Parses `sort_by` (empty or absent: `qps`).
pub fn parse_sort(text: Option<&str>) -> Option<LoadMetric> {
    match text.unwrap_or_default() {
        "" => Some(LoadMetric::Queries),
        name => name.parse().ok(),
    }
}

fn hot_range(node_id: u64, info: &pb::RangeInfo) -> HotRange {
    let desc = info.descriptor.clone().unwrap_or_default();
    let load = info.load.unwrap_or_default();
    let raft = info.raft.clone().unwrap_or_default();
    let names = |name: &str| if name.is_empty() { Vec::new() } else { vec![name.to_string()] };
    HotRange {
        range_id: desc.range_id as i64,
        node_id: node_id as i32,
        qps: GoFloat(load.queries_per_second),
        writes_per_second: GoFloat(load.writes_per_second),
        reads_per_second: GoFloat(load.reads_per_second),
        write_bytes_per_second: GoFloat(load.write_bytes_per_second),
        read_bytes_per_second: GoFloat(load.read_bytes_per_second),
        cpu_time_per_second: GoFloat(load.cpu_time_per_second),
        leaseholder_node_id: raft.leader_id as i32,
        databases: names(&info.database_name),
        tables: names(&info.table_name),
        indexes: names(&info.index_name),
        table_name: info.table_name.clone(),
        database_name: info.database_name.clone(),
        index_name: info.index_name.clone(),
        schema_name: info.schema_name.clone(),
        replica_node_ids: desc.replicas.iter().map(|r| r.node_id as i32).collect(),
        store_id: node_id as i32,
    }
}

/// `GET /ranges/hot/`.
#[utoipa::path(get, path = "/ranges/hot/", tag = "ranges", security(("api_session" = [])),
    params(("node_id" = Option<String>, Query), ("limit" = Option<i64>, Query), ("start" = Option<String>, Query, description = "pagination token from `next`"), ("sort_by" = Option<String>, Query, description = "qps (default), cpu, reads, writes, read_bytes, write_bytes")),
    responses((status = 200, body = HotRangesResponse), (status = 400), (status = 401), (status = 403)))]
pub async fn hot_ranges_list(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<HotRangesResponse>, ApiError> {
    let metric =
        parse_sort(query.get("sort_by").map(String::as_str)).ok_or_else(|| ApiError::bad_request("invalid sort_by"))?;
    let sort = pb::HotRangesSort::from(metric);
    let (limit, _) = pagination::simple_values(query.get("limit").map(String::as_str), None);
    let position = match query.get("start").filter(|s| !s.is_empty()) {
        None => 0,
        Some(token) => match pagination::decode(token) {
            Some(Cursor::HotRanges { position }) => position,
            _ => return Err(ApiError::bad_request("invalid pagination token")),
        },
    };
    let only = match query.get("node_id").filter(|n| !n.is_empty()) {
        None => None,
        Some(node) => Some(match parse_node_id(node).ok_or_else(|| ApiError::bad_request("invalid node ID"))? {
            NodeRef::Id(id) => id,
            NodeRef::Local => gateway.cluster().local_node_id().await?,
        }),
    };
    let per_node = if limit == 0 { MAX_HOT_PER_NODE } else { position.saturating_add(limit).min(MAX_HOT_PER_NODE * 8) };
    let outcomes = gateway
        .cluster()
        .fan_out("hot ranges", only, move |client| async move {
            client.hot_ranges(pb::HotRangesRequest { limit: per_node as u32, sort_by: sort as i32 }).await
        })
        .await?;
    let summary = FanOutSummary::of(&outcomes);
    let mut candidates = Vec::new();
    let mut response_error = Vec::new();
    for outcome in outcomes {
        match outcome.result {
            Ok(reply) => {
                for info in reply.ranges {
                    let range_id = info.descriptor.as_ref().map(|d| d.range_id).unwrap_or(0);
                    candidates.push(HotCandidate {
                        node_id: reply.node_id,
                        range_id,
                        rates: LoadRates::from(&info.load.unwrap_or_default()),
                        payload: info,
                    });
                }
            }
            Err(message) => {
                response_error.push(HotRangesError { error_message: message, node_id: outcome.node_id as i32 })
            }
        }
    }
    let (page, more) = merge_hot_ranges(candidates, metric, position, limit);
    let mut ranges_by_node_id: BTreeMap<String, Vec<RangeDescriptorInfo>> = BTreeMap::new();
    let ranges = page
        .iter()
        .map(|c| {
            let desc = c.payload.descriptor.clone().unwrap_or_default();
            ranges_by_node_id.entry(c.node_id.to_string()).or_default().push(RangeDescriptorInfo {
                range_id: desc.range_id as i64,
                start_key: json::base64(&desc.start_key),
                end_key: json::base64(&desc.end_key),
                store_id: c.node_id as i32,
                queries_per_second: GoFloat(c.rates.queries_per_second),
            });
            hot_range(c.node_id, &c.payload)
        })
        .collect();
    let next = more.then(|| pagination::encode(&Cursor::HotRanges { position: position + limit }));
    Ok(Json(HotRangesResponse { ranges, ranges_by_node_id, response_error, next, summary }))
}

/// `GET /ranges/{range_id}/`.
#[utoipa::path(get, path = "/ranges/{range_id}/", tag = "ranges", security(("api_session" = [])),
    params(("range_id" = i64, Path)),
    responses((status = 200, body = RangeResponse), (status = 400), (status = 401), (status = 403)))]
pub async fn range_get(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    Path(range_id): Path<String>,
) -> Result<Json<RangeResponse>, ApiError> {
    if range_id.is_empty() || !range_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::not_found("404 page not found"));
    }
    let range_id: u64 = range_id.parse::<i64>().map_err(|_| ApiError::bad_request("invalid range ID"))? as u64;
    let outcomes = gateway
        .cluster()
        .fan_out("range info", None, move |client| async move {
            client.ranges(pb::RangesRequest { range_ids: vec![range_id], ..Default::default() }).await
        })
        .await?;
    let summary = FanOutSummary::of(&outcomes);
    let mut responses_by_node_id = BTreeMap::new();
    for outcome in outcomes {
        let key = outcome.node_id.to_string();
        match outcome.result {
            Ok(reply) => {
                // Nodes without a replica of the range are omitted, as in CockroachDB.
                if let Some(info) = reply.ranges.into_iter().next() {
                    responses_by_node_id
                        .insert(key, NodeRangeResponse { range_info: range_info(info), error: String::new() });
                }
            }
            Err(message) => {
                responses_by_node_id.insert(key, NodeRangeResponse { range_info: RangeInfo::empty(), error: message });
            }
        }
    }
    Ok(Json(RangeResponse { responses_by_node_id, summary }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_range_lists_parse() {
        assert_eq!(parse_node_id("local"), Some(NodeRef::Local));
        assert_eq!(parse_node_id("3"), Some(NodeRef::Id(3)));
        assert_eq!(parse_node_id("0"), None);
        assert_eq!(parse_node_id("x"), None);
        assert_eq!(parse_range_ids(Some(&"5,1,5".to_string())).unwrap(), vec![1, 5]);
        assert!(parse_range_ids(Some(&"1,x".to_string())).is_err());
        assert!(parse_range_ids(None).unwrap().is_empty());
        assert_eq!(parse_sort(Some("cpu")), Some(LoadMetric::Cpu));
        assert_eq!(parse_sort(None), Some(LoadMetric::Queries));
        assert!(parse_sort(Some("bogus")).is_none());
    }
}
