//! `/nodes/` bodies and the conversion from a node's `pb::NodeEntry`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::gateway::go_json::GoFloat;
use crate::pb;

/// `util.UnresolvedAddr`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Address {
    /// Always `tcp`.
    pub network_field: String,
    /// `host:port`.
    pub address_field: String,
}

impl Address {
    /// A TCP address.
    pub fn tcp(address: &str) -> Self {
        Self { network_field: "tcp".into(), address_field: address.into() }
    }
}

/// A locality tier.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Tier {
    pub key: String,
    pub value: String,
}

/// Locality (`tiers` is `[]`, never null).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Locality {
    /// Tiers, most general first.
    pub tiers: Vec<Tier>,
}

/// `roachpb.Attributes` (always empty here).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema, Default)]
pub struct Attributes {
    pub attrs: Vec<String>,
}

/// `roachpb.Version`, with both the newer and the older field names.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ServerVersion {
    pub major: i32,
    pub minor: i32,
    pub patch: i32,
    pub internal: i32,
    /// Major version (old name).
    pub major_val: i32,
    /// Minor version (old name).
    pub minor_val: i32,
}

impl ServerVersion {
    /// Parses `vMAJOR.MINOR.PATCH`.
    pub fn parse(tag: &str) -> Self {
        let mut parts = tag.trim_start_matches('v').split(['.', '-']).map(|p| p.parse::<i32>().unwrap_or(0));
        let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Self { major, minor, patch, internal: 0, major_val: major, minor_val: minor }
    }
}

/// One node in `/nodes/`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct NodeStatus {
    pub node_id: i32,
    /// RPC address.
    pub address: Address,
    pub attrs: Attributes,
    pub locality: Locality,
    #[serde(rename = "ServerVersion")]
    pub server_version: ServerVersion,
    pub build_tag: String,
    /// Start time, ns since the epoch.
    pub started_at: i64,
    /// `--cluster-name`.
    pub cluster_name: String,
    pub sql_address: Address,
    /// Node metrics (CockroachDB names and units).
    pub metrics: BTreeMap<String, GoFloat>,
    /// Store metrics by store id.
    pub store_metrics: BTreeMap<String, BTreeMap<String, GoFloat>>,
    /// Total memory, bytes.
    pub total_system_memory: i64,
    pub num_cpus: i32,
    /// When the metrics were written, ns since the epoch.
    pub updated_at: i64,
    /// `NodeLivenessStatus` integer.
    pub liveness_status: i32,
}

impl From<pb::NodeEntry> for NodeStatus {
    fn from(entry: pb::NodeEntry) -> Self {
        let d = entry.descriptor.unwrap_or_default();
        let tiers = d.locality.map(|l| l.tiers).unwrap_or_default();
        let go_floats = |m: HashMap<String, f64>| -> BTreeMap<String, GoFloat> {
            m.into_iter().map(|(k, v)| (k, GoFloat(v))).collect()
        };
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
            metrics: go_floats(entry.metrics),
            store_metrics: entry
                .store_metrics
                .into_iter()
                .map(|(id, m)| (id.to_string(), go_floats(m.metrics)))
                .collect(),
            total_system_memory: d.total_system_memory as i64,
            num_cpus: d.num_cpus as i32,
            updated_at: entry.updated_at,
            liveness_status: entry.liveness,
        }
    }
}

/// `/nodes/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct NodesResponse {
    /// Nodes in id order.
    pub nodes: Vec<NodeStatus>,
    /// Next offset, only while more remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_build_tags() {
        let v = ServerVersion::parse("v23.1.7");
        assert_eq!((v.major, v.minor, v.patch, v.major_val), (23, 1, 7, 23));
    }
}
