//! What a node reports about itself and the cluster through the StatusService: the domain
//! types of node and replica status, built by the node and converted to protobuf at the gRPC
//! edge.

use crate::services::load::LoadRates;
use crate::services::membership::{Liveness, NodeDescriptor};
use crate::services::metrics::StatusRecord;
use crate::services::raft::NodeId;
use crate::services::raft::state_machine::RangeSize;
use crate::services::ranges::RangeDescriptor;

/// One range as SQL's views show it (SHOW RANGES, table sizes), as one of its replicas
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSummary {
    /// The range's descriptor.
    pub descriptor: RangeDescriptor,
    /// The group's members: (node id, voter).
    pub replicas: Vec<(NodeId, bool)>,
    /// The leaseholder as that replica knows it, 0 if unknown.
    pub leader_id: NodeId,
    /// Keys and bytes in the range.
    pub size: RangeSize,
}

impl From<&ReplicaStatus> for RangeSummary {
    fn from(replica: &ReplicaStatus) -> Self {
        RangeSummary {
            descriptor: replica.descriptor.clone(),
            replicas: replica.replicas.clone(),
            leader_id: replica.leader_id,
            size: replica.size,
        }
    }
}

/// A leader (leaseholder) this node observed, and from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Raft term.
    pub term: u64,
    /// The leader.
    pub leader_id: NodeId,
    /// When this node first saw it, nanoseconds since the epoch.
    pub start: i64,
}

/// The SQL names of a table's range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableNames {
    /// Database.
    pub database: String,
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Index.
    pub index: String,
}

/// A replica's full status, as the StatusService reports it.
#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    /// The range's descriptor.
    pub descriptor: RangeDescriptor,
    /// The group's members: (node id, voter).
    pub replicas: Vec<(NodeId, bool)>,
    /// Raft term.
    pub term: u64,
    /// Commit index known here.
    pub commit_index: u64,
    /// Applied index here.
    pub applied_index: u64,
    /// Last log index here.
    pub last_log_index: u64,
    /// The leader (leaseholder), 0 if unknown.
    pub leader_id: NodeId,
    /// This replica's Raft role.
    pub raft_state: String,
    /// Whether this node holds the lease.
    pub is_leaseholder: bool,
    /// Load counted here (zero unless leaseholder).
    pub load: LoadRates,
    /// Keys and bytes in the range.
    pub size: RangeSize,
    /// SQL names, for table ranges.
    pub names: TableNames,
    /// Leaders observed here.
    pub lease_history: Vec<LeaseRecord>,
    /// No leader known.
    pub no_raft_leader: bool,
    /// Fewer voters on LIVE nodes than the cluster could give it.
    pub underreplicated: bool,
    /// More voters than it should have (while a replacement is half done).
    pub overreplicated: bool,
    /// The node reporting this replica.
    pub reporting_node: NodeId,
}

/// One node as the StatusService reports it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Its descriptor (last known).
    pub descriptor: NodeDescriptor,
    /// Its liveness as seen here.
    pub liveness: Liveness,
    /// When it was last heard from, nanoseconds since the epoch (0: never).
    pub last_seen: i64,
    /// Its last persisted status (metrics), if any.
    pub status: Option<StatusRecord>,
}
