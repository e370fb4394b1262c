//! Ranges: one node's replicas (`/nodes/{id}/ranges/`), the cluster-wide hot ranges
//! (`/ranges/hot/`) and every node's view of one range (`/ranges/{id}/`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;

use crate::gateway::Gateway;
use crate::gateway::auth::AdminUser;
use crate::gateway::cluster::NodeRef;
use crate::gateway::dto::FanOutSummary;
use crate::gateway::dto::ranges::{
    HotRange, HotRangesError, HotRangesResponse, NodeRangeResponse, NodeRangesResponse, RangeDescriptorInfo, RangeInfo,
    RangeResponse,
};
use crate::gateway::error::ApiError;
use crate::gateway::merge::{HotCandidate, merge_hot_ranges};
use crate::gateway::pagination::{self, Cursor};
use crate::gateway::query::{NoParams, TypedQuery};
use crate::pb;
use crate::services::load::{LoadMetric, LoadRates};

/// How many hot ranges each node is asked for without a `limit` (CockroachDB tracks 128 per
/// store); with one, a node is asked for the ranges up to the end of the requested page, at
/// most eight times this many.
pub const MAX_HOT_PER_NODE: usize = 128;

/// The query of `/nodes/{node_id}/ranges/`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NodeRangesQuery {
    /// comma-separated range ids (empty or absent: all)
    #[param(pattern = r"^(0*[1-9][0-9]{0,17}(,0*[1-9][0-9]{0,17})*)?$")]
    pub ranges: Option<String>,
    /// ranges per page (0 or absent: all)
    #[param(value_type = Option<i32>, minimum = 0, maximum = 2147483647)]
    pub limit: Option<String>,
    /// ranges to skip (ignored without a limit)
    #[param(value_type = Option<i32>, minimum = 0, maximum = 2147483647)]
    pub offset: Option<String>,
}

/// The query of `/ranges/hot/`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HotRangesQuery {
    /// only this node's hot ranges: `local` or a node id (empty or absent: every node)
    #[param(pattern = r"^(|local|0*[1-9][0-9]{0,18})$")]
    pub node_id: Option<String>,
    /// ranges per page (0 or absent: all)
    #[param(value_type = Option<i32>, minimum = 0, maximum = 2147483647)]
    pub limit: Option<String>,
    /// pagination token from `next` (empty or absent: the first page)
    #[param(pattern = r"^(|v1\.hot\.(0|[1-9][0-9]{0,17}))$")]
    pub start: Option<String>,
    /// the ranking metric (empty or absent: qps)
    #[param(schema_with = sort_by_schema)]
    pub sort_by: Option<String>,
}

/// `sort_by`: the names [`parse_sort`] accepts.
fn sort_by_schema() -> utoipa::openapi::schema::Object {
    let names = std::iter::once("").chain(LoadMetric::ALL.iter().map(|(_, name)| *name));
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(names))
        .build()
}

/// Whether `text` is a non-empty run of ASCII digits: ids take no sign and no spaces, so
/// that what the server accepts is exactly what the document's patterns describe.
fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a node id the way the API accepts it: `local` or a positive decimal integer. The
/// document's pattern allows 19 significant digits, which always fit the u64; a longer id
/// that still fits is an id no node has ("not found").
pub fn parse_node_id(text: &str) -> Option<NodeRef> {
    if text == "local" {
        return Some(NodeRef::Local);
    }
    let id = text.parse::<u64>().ok().filter(|_| is_digits(text))?;
    (id > 0).then_some(NodeRef::Id(id))
}

fn parse_range_ids(text: Option<&str>) -> Result<Vec<u64>, ApiError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(Vec::new()) };
    let mut ids: Vec<u64> = text
        .split(',')
        .map(|part| part.parse::<i64>().ok().filter(|id| *id > 0 && is_digits(part)).map(|id| id as u64))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ApiError::bad_request("invalid range ID"))?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// `GET /nodes/{node_id}/ranges/`.
#[utoipa::path(get, path = "/nodes/{node_id}/ranges/", tag = "ranges", security(("api_session" = [])),
    params(("node_id" = String, Path, description = "`local` or a node id", pattern = r"^(local|0*[1-9][0-9]{0,18})$"), NodeRangesQuery),
    responses((status = 200, body = NodeRangesResponse),
        (status = 400, description = "bad node id, `ranges`, `limit` or `offset`"),
        (status = 401, description = "missing, malformed or expired session"), (status = 403, description = "not an admin"),
        (status = 404, description = "no such node (or a path that is not this one)"),
        (status = 500, description = "internal error"), (status = 503, description = "the node cannot be reached")))]
pub async fn node_ranges_list(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    Path(node_id): Path<String>,
    TypedQuery(query): TypedQuery<NodeRangesQuery>,
) -> Result<Json<NodeRangesResponse>, ApiError> {
    let node = parse_node_id(&node_id).ok_or_else(|| ApiError::bad_request("invalid node ID"))?;
    let range_ids = parse_range_ids(query.ranges.as_deref())?;
    let (limit, offset) = pagination::parse_limit_offset(query.limit.as_deref(), query.offset.as_deref())?;
    let target = gateway.cluster().target(node).await?.ok_or_else(|| match node {
        NodeRef::Id(id) => ApiError::not_found(format!("node {id} not found")),
        NodeRef::Local => ApiError::unavailable("no local node"),
    })?;
    let request =
        pb::RangesRequest { range_ids, limit: limit.to_wire(), offset: u32::try_from(offset).unwrap_or(u32::MAX) };
    let reply = gateway
        .cluster()
        .call_node(&target, |client| async move { client.ranges(request).await })
        .await
        .map_err(|err| ApiError::unavailable(format!("node {node_id} is unavailable: {}", err.public_message())))?;
    // The node pages by range id; `total` says whether more follow.
    let mut ranges: Vec<RangeInfo> = reply.ranges.into_iter().map(RangeInfo::from).collect();
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

/// `GET /ranges/hot/`.
#[utoipa::path(get, path = "/ranges/hot/", tag = "ranges", security(("api_session" = [])),
    params(HotRangesQuery),
    responses((status = 200, body = HotRangesResponse),
        (status = 400, description = "bad `node_id`, `limit`, `start` or `sort_by`"),
        (status = 401, description = "missing, malformed or expired session"), (status = 403, description = "not an admin"),
        (status = 500, description = "internal error"), (status = 503, description = "the node list cannot be read now")))]
pub async fn hot_ranges_list(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    TypedQuery(query): TypedQuery<HotRangesQuery>,
) -> Result<Json<HotRangesResponse>, ApiError> {
    let metric = parse_sort(query.sort_by.as_deref()).ok_or_else(|| ApiError::bad_request("invalid sort_by"))?;
    let sort = pb::HotRangesSort::from(metric);
    let (limit, _) = pagination::parse_limit_offset(query.limit.as_deref(), None)?;
    let position = match query.start.as_deref().filter(|s| !s.is_empty()) {
        None => 0,
        Some(token) => match pagination::decode(token) {
            Some(Cursor::HotRanges { position }) => position,
            _ => return Err(ApiError::bad_request("invalid pagination token")),
        },
    };
    let only = match query.node_id.as_deref().filter(|n| !n.is_empty()) {
        None => None,
        Some(node) => Some(match parse_node_id(node).ok_or_else(|| ApiError::bad_request("invalid node ID"))? {
            NodeRef::Id(id) => id,
            NodeRef::Local => gateway.cluster().local_node_id().await?,
        }),
    };
    let per_node = match limit.get() {
        None => MAX_HOT_PER_NODE,
        Some(rows) => position.saturating_add(rows).min(MAX_HOT_PER_NODE * 8),
    };
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
    let (page, next) = merge_hot_ranges(candidates, metric, position, limit);
    let mut ranges_by_node_id: BTreeMap<String, Vec<RangeDescriptorInfo>> = BTreeMap::new();
    let ranges = page
        .iter()
        .map(|c| {
            let desc = c.payload.descriptor.clone().unwrap_or_default();
            ranges_by_node_id.entry(c.node_id.to_string()).or_default().push(RangeDescriptorInfo::new(
                &desc,
                c.node_id as i32,
                c.rates.queries_per_second,
            ));
            HotRange::new(c.node_id, &c.payload)
        })
        .collect();
    let next = next.map(|position| pagination::encode(&Cursor::HotRanges { position }));
    Ok(Json(HotRangesResponse { ranges, ranges_by_node_id, response_error, next, summary }))
}

/// `GET /ranges/{range_id}/`.
#[utoipa::path(get, path = "/ranges/{range_id}/", tag = "ranges", security(("api_session" = [])),
    params(("range_id" = i64, Path, minimum = 0)),
    responses(
        (status = 200, body = RangeResponse,
            description = "every node's view of the range; a range no node holds has an empty `responses_by_node_id` (as in CockroachDB: no 404)"),
        (status = 400, description = "a range id beyond int64"),
        (status = 401, description = "missing, malformed or expired session"), (status = 403, description = "not an admin"),
        (status = 404, description = "not a decimal range id (no such path)"),
        (status = 500, description = "internal error"), (status = 503, description = "the node list cannot be read now")))]
pub async fn range_get(
    _admin: AdminUser,
    State(gateway): State<Arc<Gateway>>,
    Path(range_id): Path<String>,
    _: TypedQuery<NoParams>,
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
                        .insert(key, NodeRangeResponse { range_info: RangeInfo::from(info), error: String::new() });
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
        assert_eq!(parse_node_id("LOCAL"), None);
        assert_eq!(parse_node_id("+3"), None);
        assert_eq!(parse_node_id(" 3"), None);
        assert_eq!(parse_node_id("0003"), Some(NodeRef::Id(3)));
        assert!(parse_range_ids(Some("1, 2")).is_err());
        assert!(parse_range_ids(Some("1,")).is_err());
        assert!(parse_range_ids(Some("0")).is_err());
        assert!(parse_range_ids(Some("+1")).is_err());
        assert_eq!(parse_range_ids(Some("5,1,5")).unwrap(), vec![1, 5]);
        assert!(parse_range_ids(Some("1,x")).is_err());
        assert!(parse_range_ids(None).unwrap().is_empty());
        assert_eq!(parse_sort(Some("cpu")), Some(LoadMetric::Cpu));
        assert_eq!(parse_sort(None), Some(LoadMetric::Queries));
        assert!(parse_sort(Some("bogus")).is_none());
    }
}
