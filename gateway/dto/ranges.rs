//! `/nodes/{id}/ranges/`, `/ranges/hot/` and `/ranges/{id}/` bodies, and the conversions from
//! a node's `pb::RangeInfo`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::gateway::dto::FanOutSummary;
use crate::gateway::go_json::{self, GoFloat, is_zero};
use crate::pb;
use crate::services::sql::value::{pretty_any, pretty_any_end};

/// `rangeDescriptorInfo`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RangeDescriptorInfo {
    pub range_id: i64,
    /// Start key, base64.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub start_key: String,
    /// End key, base64.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub end_key: String,
    pub store_id: i32,
    /// QPS (filled for hot ranges).
    pub queries_per_second: GoFloat,
}

impl RangeDescriptorInfo {
    /// The descriptor as reported by `store_id` with `queries_per_second`.
    pub fn new(desc: &pb::RangeDescriptor, store_id: i32, queries_per_second: f64) -> Self {
        Self {
            range_id: desc.range_id as i64,
            start_key: go_json::base64(&desc.start_key),
            end_key: go_json::base64(&desc.end_key),
            store_id,
            queries_per_second: GoFloat(queries_per_second),
        }
    }
}

/// Pretty-printed span.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema, Default)]
pub struct Span {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub start_key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub end_key: String,
}

/// HLC timestamp.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Timestamp {
    /// Wall time, ns since the epoch.
    pub wall_time: i64,
    pub logical: i32,
}

/// `roachpb.ReplicaDescriptor`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ReplicaDescriptor {
    pub node_id: i32,
    pub store_id: i32,
    pub replica_id: i32,
    /// 0 VOTER_FULL, 5 NON_VOTER.
    #[serde(rename = "type")]
    pub replica_type: i32,
}

impl ReplicaDescriptor {
    /// The replica on `node_id` (one store per node: store and replica ids are the node id).
    fn on_node(node_id: u64, voter: bool) -> Self {
        Self {
            node_id: node_id as i32,
            store_id: node_id as i32,
            replica_id: node_id as i32,
            replica_type: if voter { 0 } else { 5 },
        }
    }
}

/// `roachpb.Lease` as seen here: a Raft leader and its term.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Lease {
    /// When this node first saw the leader.
    pub start: Timestamp,
    /// The leader's replica.
    pub replica: ReplicaDescriptor,
    /// The Raft term (leases are epoch-like: one per term).
    pub epoch: i64,
    /// Position in this node's history.
    pub sequence: i64,
}

/// `RangeProblems` (false fields omitted, as Go does).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema, Default)]
pub struct RangeProblems {
    /// No quorum or leader.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unavailable: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_raft_leader: bool,
    /// Fewer voters than possible.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub underreplicated: bool,
    /// More replicas than wanted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overreplicated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_lease: bool,
}

impl From<pb::RangeProblems> for RangeProblems {
    fn from(p: pb::RangeProblems) -> Self {
        Self {
            unavailable: p.unavailable,
            no_raft_leader: p.no_raft_leader,
            underreplicated: p.underreplicated,
            overreplicated: p.overreplicated,
            no_lease: p.no_lease,
        }
    }
}

/// `RangeStatistics`, measured at the leaseholder.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema, Default)]
pub struct RangeStatistics {
    /// Batch requests per second.
    pub queries_per_second: GoFloat,
    /// Requests per second (same as queries here: one request per batch).
    pub requests_per_second: GoFloat,
    /// Keys written per second.
    pub writes_per_second: GoFloat,
    /// Keys read per second.
    pub reads_per_second: GoFloat,
    pub write_bytes_per_second: GoFloat,
    pub read_bytes_per_second: GoFloat,
    /// CPU ns per second.
    pub cpu_time_per_second: GoFloat,
}

impl From<pb::LoadStats> for RangeStatistics {
    fn from(load: pb::LoadStats) -> Self {
        Self {
            queries_per_second: GoFloat(load.queries_per_second),
            requests_per_second: GoFloat(load.queries_per_second),
            writes_per_second: GoFloat(load.writes_per_second),
            reads_per_second: GoFloat(load.reads_per_second),
            write_bytes_per_second: GoFloat(load.write_bytes_per_second),
            read_bytes_per_second: GoFloat(load.read_bytes_per_second),
            cpu_time_per_second: GoFloat(load.cpu_time_per_second),
        }
    }
}

/// Raft state of a replica (an addition to CockroachDB's shape).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema, Default)]
pub struct RaftState {
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// Leader node.
    pub leader_id: u64,
    /// Role (`StateLeader`, `StateFollower`, ...).
    pub state: String,
}

impl From<pb::RaftState> for RaftState {
    fn from(raft: pb::RaftState) -> Self {
        Self {
            term: raft.term,
            commit_index: raft.commit_index,
            applied_index: raft.applied_index,
            leader_id: raft.leader_id,
            state: raft.state,
        }
    }
}

/// `rangeInfo`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RangeInfo {
    pub desc: RangeDescriptorInfo,
    pub span: Span,
    /// Reporting node.
    #[serde(skip_serializing_if = "is_zero")]
    pub source_node_id: i32,
    /// Reporting store.
    #[serde(skip_serializing_if = "is_zero")]
    pub source_store_id: i32,
    /// Error for this replica.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error_message: String,
    /// Leases seen, oldest first.
    pub lease_history: Vec<Lease>,
    pub problems: RangeProblems,
    /// Load.
    pub stats: RangeStatistics,
    /// Replicas (an addition).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaDescriptor>,
    /// Leaseholder (an addition).
    #[serde(skip_serializing_if = "is_zero")]
    pub leaseholder_node_id: i32,
    /// Raft state (an addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_state: Option<RaftState>,
    /// Keys in the range (an addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_count: Option<u64>,
    /// Bytes of keys and values (an addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_bytes: Option<u64>,
}

impl RangeInfo {
    /// The zero rangeInfo CockroachDB sends beside a node's error.
    pub fn empty() -> Self {
        RangeInfo {
            desc: RangeDescriptorInfo::new(&pb::RangeDescriptor::default(), 0, 0.0),
            span: Span::default(),
            source_node_id: 0,
            source_store_id: 0,
            error_message: String::new(),
            lease_history: Vec::new(),
            problems: RangeProblems::default(),
            stats: RangeStatistics::default(),
            replicas: Vec::new(),
            leaseholder_node_id: 0,
            raft_state: None,
            key_count: None,
            live_bytes: None,
        }
    }
}

impl From<pb::RangeInfo> for RangeInfo {
    fn from(info: pb::RangeInfo) -> Self {
        let desc = info.descriptor.unwrap_or_default();
        let raft = info.raft.unwrap_or_default();
        RangeInfo {
            desc: RangeDescriptorInfo::new(&desc, 0, 0.0),
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
                    replica: ReplicaDescriptor::on_node(lease.leader_id, true),
                    epoch: lease.term as i64,
                    sequence: i as i64 + 1,
                })
                .collect(),
            problems: info.problems.unwrap_or_default().into(),
            stats: info.load.unwrap_or_default().into(),
            replicas: desc.replicas.iter().map(|r| ReplicaDescriptor::on_node(r.node_id, r.voter)).collect(),
            leaseholder_node_id: raft.leader_id as i32,
            raft_state: Some(raft.into()),
            key_count: Some(info.key_count),
            live_bytes: Some(info.live_bytes),
        }
    }
}

/// `/nodes/{id}/ranges/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct NodeRangesResponse {
    /// Ranges in range-id order.
    pub ranges: Vec<RangeInfo>,
    /// Next offset, only while more remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// One node's failure in `/ranges/hot/`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct HotRangesError {
    pub error_message: String,
    pub node_id: i32,
}

/// One hot range: the newest shape, the v21.2–v23 singular names, and the rates.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct HotRange {
    pub range_id: i64,
    /// Reporting node.
    pub node_id: i32,
    /// Queries per second.
    pub qps: GoFloat,
    /// Keys written per second.
    pub writes_per_second: GoFloat,
    /// Keys read per second.
    pub reads_per_second: GoFloat,
    pub write_bytes_per_second: GoFloat,
    pub read_bytes_per_second: GoFloat,
    /// CPU ns per second.
    pub cpu_time_per_second: GoFloat,
    pub leaseholder_node_id: i32,
    /// Databases (newest).
    pub databases: Vec<String>,
    /// Tables (newest).
    pub tables: Vec<String>,
    /// Indexes (newest).
    pub indexes: Vec<String>,
    /// Table (v21.2–v23).
    pub table_name: String,
    /// Database (v21.2–v23).
    pub database_name: String,
    /// Index (v21.2–v23).
    pub index_name: String,
    pub schema_name: String,
    pub replica_node_ids: Vec<i32>,
    pub store_id: i32,
}

impl HotRange {
    /// The hot range `info` as reported by `node_id`.
    pub fn new(node_id: u64, info: &pb::RangeInfo) -> Self {
        let desc = info.descriptor.clone().unwrap_or_default();
        let stats = RangeStatistics::from(info.load.unwrap_or_default());
        let leader_id = info.raft.as_ref().map_or(0, |raft| raft.leader_id);
        let names = |name: &str| if name.is_empty() { Vec::new() } else { vec![name.to_string()] };
        HotRange {
            range_id: desc.range_id as i64,
            node_id: node_id as i32,
            qps: stats.queries_per_second,
            writes_per_second: stats.writes_per_second,
            reads_per_second: stats.reads_per_second,
            write_bytes_per_second: stats.write_bytes_per_second,
            read_bytes_per_second: stats.read_bytes_per_second,
            cpu_time_per_second: stats.cpu_time_per_second,
            leaseholder_node_id: leader_id as i32,
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
}

/// `/ranges/hot/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct HotRangesResponse {
    /// The cluster-wide top ranges, sorted by the requested metric.
    pub ranges: Vec<HotRange>,
    /// The v21.1 shape CockroachDB's published API reference still documents.
    pub ranges_by_node_id: BTreeMap<String, Vec<RangeDescriptorInfo>>,
    /// Per-node errors.
    pub response_error: Vec<HotRangesError>,
    /// Continuation token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Who answered.
    pub summary: FanOutSummary,
}

/// One node's answer in `/ranges/{id}/`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct NodeRangeResponse {
    /// The replica (zero beside an error).
    pub range_info: RangeInfo,
    /// The node's error.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `/ranges/{id}/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RangeResponse {
    /// By node id; nodes without a replica of the range are omitted.
    pub responses_by_node_id: BTreeMap<String, NodeRangeResponse>,
    /// Who answered.
    pub summary: FanOutSummary,
}
