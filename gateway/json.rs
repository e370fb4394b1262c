//! The JSON bodies of `/api/v2`, with CockroachDB's field names (newest release, older shapes
//! side by side where they differ). Numbers follow Go's `encoding/json`: integral floats are
//! written without `.0`, timestamps in nodes are int64 nanoseconds and in sessions RFC 3339,
//! enums are integers, map keys are decimal strings, byte strings are standard base64.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Serialize, Serializer};

/// A float written the way Go writes it (`12`, not `12.0`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GoFloat(pub f64);

impl utoipa::PartialSchema for GoFloat {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
            .description(Some("A float written the way Go writes it: integral values without a fraction."))
            .into()
    }
}

impl utoipa::ToSchema for GoFloat {}

impl Serialize for GoFloat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let v = if self.0.is_finite() { self.0 } else { 0.0 };
        if v.fract() == 0.0 && v.abs() < 1e15 {
            serializer.serialize_i64(v as i64)
        } else {
            serializer.serialize_f64(v)
        }
    }
}

/// Standard base64 of bytes (Go's `[]byte`).
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// RFC 3339 with nanoseconds, UTC (Go's `time.Time`).
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, sub)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// A formatted UUID from 16 bytes.
pub fn uuid(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if hex.len() != 32 {
        return hex;
    }
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

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
    /// Tier key.
    pub key: String,
    /// Tier value.
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
    /// Store attributes.
    pub attrs: Vec<String>,
}

/// `roachpb.Version`, with both the newer and the older field names.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ServerVersion {
    /// Major version.
    pub major: i32,
    /// Minor version.
    pub minor: i32,
    /// Patch.
    pub patch: i32,
    /// Internal.
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
    /// Node id.
    pub node_id: i32,
    /// RPC address.
    pub address: Address,
    /// Attributes.
    pub attrs: Attributes,
    /// Locality.
    pub locality: Locality,
    /// Version.
    #[serde(rename = "ServerVersion")]
    pub server_version: ServerVersion,
    /// Build tag.
    pub build_tag: String,
    /// Start time, ns.
    pub started_at: i64,
    /// `--cluster-name`.
    pub cluster_name: String,
    /// SQL address.
    pub sql_address: Address,
    /// Node metrics.
    pub metrics: BTreeMap<String, GoFloat>,
    /// Store metrics by store id.
    pub store_metrics: BTreeMap<String, BTreeMap<String, GoFloat>>,
    /// Total memory, bytes.
    pub total_system_memory: i64,
    /// CPUs.
    pub num_cpus: i32,
    /// When the metrics were written, ns.
    pub updated_at: i64,
    /// `NodeLivenessStatus` integer.
    pub liveness_status: i32,
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

/// `rangeDescriptorInfo`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RangeDescriptorInfo {
    /// Range id.
    pub range_id: i64,
    /// Start key, base64.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub start_key: String,
    /// End key, base64.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub end_key: String,
    /// Store id.
    pub store_id: i32,
    /// QPS (filled for hot ranges).
    pub queries_per_second: GoFloat,
}

/// Pretty-printed span.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema, Default)]
pub struct Span {
    /// Start key.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub start_key: String,
    /// End key.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub end_key: String,
}

/// HLC timestamp.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Timestamp {
    /// Wall time, ns.
    pub wall_time: i64,
    /// Logical.
    pub logical: i32,
}

/// `roachpb.ReplicaDescriptor`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ReplicaDescriptor {
    /// Node.
    pub node_id: i32,
    /// Store.
    pub store_id: i32,
    /// Replica id.
    pub replica_id: i32,
    /// 0 VOTER_FULL, 5 NON_VOTER.
    #[serde(rename = "type")]
    pub replica_type: i32,
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
    /// No Raft leader known.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_raft_leader: bool,
    /// Fewer voters than possible.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub underreplicated: bool,
    /// More replicas than wanted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overreplicated: bool,
    /// No lease.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_lease: bool,
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
    /// Bytes written per second.
    pub write_bytes_per_second: GoFloat,
    /// Bytes read per second.
    pub read_bytes_per_second: GoFloat,
    /// CPU ns per second.
    pub cpu_time_per_second: GoFloat,
}

/// Raft state of a replica (an addition to CockroachDB's shape).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema, Default)]
pub struct RaftState {
    /// Term.
    pub term: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Leader node.
    pub leader_id: u64,
    /// Role (`StateLeader`, `StateFollower`, ...).
    pub state: String,
}

/// `rangeInfo`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RangeInfo {
    /// Descriptor.
    pub desc: RangeDescriptorInfo,
    /// Span.
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
    /// Leases seen.
    pub lease_history: Vec<Lease>,
    /// Problems.
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

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl RangeInfo {
    /// The zero rangeInfo CockroachDB sends beside a node's error.
    pub fn empty() -> Self {
        RangeInfo {
            desc: RangeDescriptorInfo {
                range_id: 0,
                start_key: String::new(),
                end_key: String::new(),
                store_id: 0,
                queries_per_second: GoFloat(0.0),
            },
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

/// `/nodes/{id}/ranges/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct NodeRangesResponse {
    /// Ranges in range-id order.
    pub ranges: Vec<RangeInfo>,
    /// Next offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// Who answered a fan-out.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, utoipa::ToSchema, Default)]
pub struct FanOutSummary {
    /// Nodes asked (decommissioned ones are not).
    pub total: u32,
    /// Nodes that answered.
    pub successful: u32,
    /// Nodes that failed or timed out.
    pub failed: u32,
}

impl FanOutSummary {
    /// The summary of a fan-out's outcomes.
    pub fn of<T>(outcomes: &[crate::gateway::cluster::Outcome<T>]) -> Self {
        let (total, successful) = crate::gateway::cluster::count_successes(outcomes);
        Self { total: total as u32, successful: successful as u32, failed: (total - successful) as u32 }
    }
}

/// One node's failure in `/ranges/hot/`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct HotRangesError {
    /// Message.
    pub error_message: String,
    /// Node.
    pub node_id: i32,
}

/// One hot range: the newest shape, the v21.2–v23 singular names, and the rates.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct HotRange {
    /// Range id.
    pub range_id: i64,
    /// Reporting node.
    pub node_id: i32,
    /// Queries per second.
    pub qps: GoFloat,
    /// Writes per second.
    pub writes_per_second: GoFloat,
    /// Reads per second.
    pub reads_per_second: GoFloat,
    /// Write bytes per second.
    pub write_bytes_per_second: GoFloat,
    /// Read bytes per second.
    pub read_bytes_per_second: GoFloat,
    /// CPU ns per second.
    pub cpu_time_per_second: GoFloat,
    /// Leaseholder.
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
    /// Schema.
    pub schema_name: String,
    /// Replicas.
    pub replica_node_ids: Vec<i32>,
    /// Store.
    pub store_id: i32,
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
    /// The replica.
    pub range_info: RangeInfo,
    /// The node's error.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `/ranges/{id}/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RangeResponse {
    /// By node id.
    pub responses_by_node_id: BTreeMap<String, NodeRangeResponse>,
    /// Who answered.
    pub summary: FanOutSummary,
}

/// `ActiveQuery`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ActiveQuery {
    /// Hex id.
    pub id: String,
    /// Transaction id (UUID).
    pub txn_id: String,
    /// SQL text.
    pub sql: String,
    /// Start.
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
    /// Start.
    pub start: String,
    /// Statements executed.
    pub num_statements_executed: i32,
    /// Implicit (always: no explicit transactions).
    pub implicit: bool,
    /// Elapsed, ns.
    pub elapsed_time: i64,
}

/// `serverpb.Session`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Session {
    /// Node.
    pub node_id: i32,
    /// User.
    pub username: String,
    /// Client address.
    pub client_address: String,
    /// Application name.
    pub application_name: String,
    /// Running statements.
    pub active_queries: Vec<ActiveQuery>,
    /// Start.
    pub start: String,
    /// Last statement.
    pub last_active_query: String,
    /// 16-byte id, base64.
    pub id: String,
    /// Memory estimate.
    pub alloc_bytes: i64,
    /// Peak memory estimate.
    pub max_alloc_bytes: i64,
    /// Running implicit transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_txn: Option<TxnInfo>,
    /// 0 ACTIVE, 1 CLOSED, 2 IDLE.
    pub status: i32,
    /// End.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Transactions executed.
    pub num_txns_executed: i32,
    /// Database (an addition).
    pub database: String,
}

/// One node's failure in `/sessions/`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ListSessionsError {
    /// Node.
    pub node_id: i32,
    /// Message.
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

/// `/login/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LoginResponse {
    /// The session token.
    pub session: String,
}

/// `/logout/` response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LogoutResponse {
    /// Always true.
    pub logged_out: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(serde_json::to_string(&GoFloat(12.0)).unwrap(), "12");
        assert_eq!(serde_json::to_string(&GoFloat(1.5)).unwrap(), "1.5");
        assert_eq!(serde_json::to_string(&GoFloat(f64::NAN)).unwrap(), "0");
    }

    #[test]
    fn times_and_ids_print_like_go() {
        assert_eq!(rfc3339(1_714_558_272_123_456_000), "2024-05-01T10:11:12.123456Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(uuid(&[0x11; 16]), "11111111-1111-1111-1111-111111111111");
        assert_eq!(base64(&[0, 1, 2, 3]), "AAECAw==");
        let v = ServerVersion::parse("v23.1.7");
        assert_eq!((v.major, v.minor, v.patch, v.major_val), (23, 1, 7, 23));
    }
}
