//! Every pb ⇄ domain conversion, in one place: KV operations and results, load metrics and
//! rates, replicas, nodes and sessions. The service adapters, the gateway and the CLI convert
//! through these.

use crate::pb;
use crate::services::clock::unix_nanos;
use crate::services::error::{Error, Result};
use crate::services::kv::{Op, OpResult};
use crate::services::load::{LoadMetric, LoadRates};
use crate::services::membership::NodeMembership;
use crate::services::node::DecommissionStatus;
use crate::services::raft::state_machine::RangeSize;
use crate::services::ranges::RangeDescriptor;
use crate::services::scan::{CursorRef, PageLimits, ScanPage, ScanRequest};
use crate::services::sql::session::{SessionInfo, SessionStatus};
use crate::services::status::{NodeView, RangeSummary, ReplicaStatus};

impl TryFrom<pb::KvOp> for Op {
    type Error = Error;

    fn try_from(op: pb::KvOp) -> Result<Self> {
        use pb::kv_op::Op as P;
        Ok(match op.op.ok_or_else(|| Error::InvalidArgument("operation missing".into()))? {
            P::Get(r) => Op::Get { key: r.key.to_vec() },
            P::Put(r) => Op::Put { key: r.key.to_vec(), value: r.value.to_vec() },
            P::ConditionalPut(r) => Op::ConditionalPut {
                key: r.key.to_vec(),
                value: r.value.to_vec(),
                expected: r.expected.map(|e| e.to_vec()),
            },
            P::Delete(r) => Op::Delete { key: r.key.to_vec() },
            P::Scan(r) => Op::Scan { start: r.start.to_vec(), end: r.end.to_vec(), limit: r.limit },
            P::Increment(r) => Op::Increment { key: r.key.to_vec(), delta: r.delta },
            P::PutIfAbsent(r) => Op::PutIfAbsent { key: r.key.to_vec(), value: r.value.to_vec() },
            P::DeleteRange(r) => Op::DeleteRange { start: r.start.to_vec(), end: r.end.to_vec() },
        })
    }
}

impl From<Op> for pb::KvOp {
    fn from(op: Op) -> Self {
        use pb::kv_op::Op as P;
        let op = match op {
            Op::Get { key } => P::Get(pb::GetRequest { key: key.into() }),
            Op::Put { key, value } => P::Put(pb::PutRequest { key: key.into(), value: value.into() }),
            Op::ConditionalPut { key, value, expected } => P::ConditionalPut(pb::ConditionalPutRequest {
                key: key.into(),
                value: value.into(),
                expected: expected.map(Into::into),
            }),
            Op::Delete { key } => P::Delete(pb::DeleteRequest { key: key.into() }),
            Op::Scan { start, end, limit } => P::Scan(pb::ScanRequest { start: start.into(), end: end.into(), limit }),
            Op::Increment { key, delta } => P::Increment(pb::IncrementRequest { key: key.into(), delta }),
            Op::PutIfAbsent { key, value } => {
                P::PutIfAbsent(pb::PutIfAbsentRequest { key: key.into(), value: value.into() })
            }
            Op::DeleteRange { start, end } => {
                P::DeleteRange(pb::DeleteRangeRequest { start: start.into(), end: end.into() })
            }
        };
        pb::KvOp { op: Some(op) }
    }
}

impl From<OpResult> for pb::KvResult {
    fn from(result: OpResult) -> Self {
        pb::KvResult {
            value: result.value.map(Into::into),
            rows: result.rows.into_iter().map(|(k, v)| pb::KeyValue { key: k.into(), value: v.into() }).collect(),
            new_value: result.new_value,
            existed: result.existed,
        }
    }
}

impl From<pb::KvResult> for OpResult {
    fn from(result: pb::KvResult) -> Self {
        OpResult {
            value: result.value.map(|v| v.to_vec()),
            rows: result.rows.into_iter().map(|kv| (kv.key.to_vec(), kv.value.to_vec())).collect(),
            new_value: result.new_value,
            existed: result.existed,
        }
    }
}

impl pb::BatchRequest {
    /// The wire form of a batch; one `forwarded_by` a node (the one its client sent it to)
    /// runs only on the node it reaches.
    pub fn from_ops(ops: Vec<Op>, forwarded_by: Option<u64>) -> Self {
        pb::BatchRequest {
            ops: ops.into_iter().map(Into::into).collect(),
            forwarded: forwarded_by.is_some(),
            applied_copy: false,
            origin_node: forwarded_by.unwrap_or(0),
        }
    }

    /// The node that forwarded the batch, if one did (0: a sender that did not say which).
    pub fn forwarded_by(&self) -> Option<u64> {
        self.forwarded.then_some(self.origin_node)
    }

    /// The wire form of a read from the receiving node's applied copy ([`crate::services::kv::Kv::read_applied`]).
    pub fn applied_copy(ops: Vec<Op>) -> Self {
        pb::BatchRequest {
            ops: ops.into_iter().map(Into::into).collect(),
            forwarded: false,
            applied_copy: true,
            origin_node: 0,
        }
    }
}

impl pb::BatchResponse {
    /// The results of a batch's operations, in order.
    pub fn into_results(self) -> Vec<OpResult> {
        self.results.into_iter().map(Into::into).collect()
    }
}

impl pb::ScanPageRequest {
    /// The wire form of a page request; one `forwarded_by` a node runs only on the node it
    /// reaches.
    pub fn from_request(request: ScanRequest, forwarded_by: Option<u64>) -> Self {
        let (cursor_node_id, cursor_id) = request.cursor.map_or((0, 0), |c| (c.node_id, c.id));
        pb::ScanPageRequest {
            start: request.start.into(),
            end: request.end.into(),
            max_rows: request.limits.max_rows,
            max_bytes: request.limits.max_bytes,
            cursor_node_id,
            cursor_id,
            close: request.close,
            forwarded: forwarded_by.is_some(),
            origin_node: forwarded_by.unwrap_or(0),
        }
    }

    /// The node that forwarded the request, if one did (0: a sender that did not say which).
    pub fn forwarded_by(&self) -> Option<u64> {
        self.forwarded.then_some(self.origin_node)
    }

    /// The page request it carries.
    pub fn into_request(self) -> ScanRequest {
        ScanRequest {
            start: self.start.to_vec(),
            end: self.end.to_vec(),
            cursor: (self.cursor_id != 0).then_some(CursorRef { node_id: self.cursor_node_id, id: self.cursor_id }),
            limits: PageLimits { max_rows: self.max_rows, max_bytes: self.max_bytes },
            close: self.close,
        }
    }
}

impl From<ScanPage> for pb::ScanPageResponse {
    fn from(page: ScanPage) -> Self {
        let (cursor, resume_key) = page.resume.map_or((None, Vec::new()), |(cursor, key)| (cursor, key));
        let cursor = cursor.unwrap_or(CursorRef { node_id: 0, id: 0 });
        pb::ScanPageResponse {
            rows: page.rows.into_iter().map(|(k, v)| pb::KeyValue { key: k.into(), value: v.into() }).collect(),
            resume_key: resume_key.into(),
            cursor_node_id: cursor.node_id,
            cursor_id: cursor.id,
        }
    }
}

impl From<pb::ScanPageResponse> for ScanPage {
    fn from(page: pb::ScanPageResponse) -> Self {
        ScanPage {
            rows: page.rows.into_iter().map(|kv| (kv.key.to_vec(), kv.value.to_vec())).collect(),
            // A resume key is never empty: it is past the page's first row.
            resume: (!page.resume_key.is_empty()).then(|| {
                let cursor =
                    (page.cursor_id != 0).then_some(CursorRef { node_id: page.cursor_node_id, id: page.cursor_id });
                (cursor, page.resume_key.to_vec())
            }),
        }
    }
}

impl From<LoadMetric> for pb::HotRangesSort {
    fn from(metric: LoadMetric) -> Self {
        match metric {
            LoadMetric::Queries => pb::HotRangesSort::Qps,
            LoadMetric::Cpu => pb::HotRangesSort::Cpu,
            LoadMetric::Reads => pb::HotRangesSort::Reads,
            LoadMetric::Writes => pb::HotRangesSort::Writes,
            LoadMetric::ReadBytes => pb::HotRangesSort::ReadBytes,
            LoadMetric::WriteBytes => pb::HotRangesSort::WriteBytes,
        }
    }
}

impl From<pb::HotRangesSort> for LoadMetric {
    fn from(sort: pb::HotRangesSort) -> Self {
        match sort {
            pb::HotRangesSort::Qps => LoadMetric::Queries,
            pb::HotRangesSort::Cpu => LoadMetric::Cpu,
            pb::HotRangesSort::Reads => LoadMetric::Reads,
            pb::HotRangesSort::Writes => LoadMetric::Writes,
            pb::HotRangesSort::ReadBytes => LoadMetric::ReadBytes,
            pb::HotRangesSort::WriteBytes => LoadMetric::WriteBytes,
        }
    }
}

impl From<&LoadRates> for pb::LoadStats {
    fn from(load: &LoadRates) -> Self {
        pb::LoadStats {
            queries_per_second: load.queries_per_second,
            reads_per_second: load.reads_per_second,
            writes_per_second: load.writes_per_second,
            read_bytes_per_second: load.read_bytes_per_second,
            write_bytes_per_second: load.write_bytes_per_second,
            cpu_time_per_second: load.cpu_time_per_second,
        }
    }
}

impl From<&pb::LoadStats> for LoadRates {
    fn from(load: &pb::LoadStats) -> Self {
        LoadRates {
            queries_per_second: load.queries_per_second,
            reads_per_second: load.reads_per_second,
            writes_per_second: load.writes_per_second,
            read_bytes_per_second: load.read_bytes_per_second,
            write_bytes_per_second: load.write_bytes_per_second,
            cpu_time_per_second: load.cpu_time_per_second,
        }
    }
}

impl From<ReplicaStatus> for pb::RangeInfo {
    fn from(replica: ReplicaStatus) -> Self {
        pb::RangeInfo {
            descriptor: Some(pb::RangeDescriptor {
                range_id: replica.descriptor.range_id,
                start_key: replica.descriptor.start_key.into(),
                end_key: replica.descriptor.end_key.into(),
                replicas: replica
                    .replicas
                    .iter()
                    .map(|(node_id, voter)| pb::ReplicaDescriptor {
                        node_id: *node_id,
                        // One store per node, and one replica per node in the single group.
                        store_id: *node_id,
                        replica_id: *node_id,
                        voter: *voter,
                    })
                    .collect(),
                generation: replica.descriptor.generation,
            }),
            raft: Some(pb::RaftState {
                term: replica.term,
                commit_index: replica.commit_index,
                applied_index: replica.applied_index,
                leader_id: replica.leader_id,
                state: replica.raft_state,
                last_log_index: replica.last_log_index,
            }),
            is_leaseholder: replica.is_leaseholder,
            load: Some(pb::LoadStats::from(&replica.load)),
            key_count: replica.size.keys,
            live_bytes: replica.size.bytes,
            database_name: replica.names.database,
            schema_name: replica.names.schema,
            table_name: replica.names.table,
            index_name: replica.names.index,
            lease_history: replica
                .lease_history
                .iter()
                .map(|l| pb::Lease { term: l.term, leader_id: l.leader_id, start: l.start })
                .collect(),
            problems: Some(pb::RangeProblems {
                unavailable: replica.no_raft_leader,
                no_raft_leader: replica.no_raft_leader,
                underreplicated: replica.underreplicated,
                overreplicated: replica.overreplicated,
                no_lease: replica.no_raft_leader,
            }),
            node_id: replica.reporting_node,
        }
    }
}

impl RangeSummary {
    /// The summary in a StatusService range report (none without a descriptor).
    pub fn from_info(info: &pb::RangeInfo) -> Option<RangeSummary> {
        let desc = info.descriptor.as_ref()?;
        Some(RangeSummary {
            descriptor: RangeDescriptor {
                range_id: desc.range_id,
                start_key: desc.start_key.to_vec(),
                end_key: desc.end_key.to_vec(),
                generation: desc.generation,
            },
            replicas: desc.replicas.iter().map(|r| (r.node_id, r.voter)).collect(),
            leader_id: info.raft.as_ref().map_or(0, |raft| raft.leader_id),
            size: RangeSize { keys: info.key_count, bytes: info.live_bytes },
        })
    }
}

impl From<NodeView> for pb::NodeEntry {
    fn from(view: NodeView) -> Self {
        let d = view.descriptor;
        pb::NodeEntry {
            descriptor: Some(pb::NodeDescriptor {
                node_id: d.node_id,
                address: d.address,
                sql_address: d.sql_address,
                http_address: d.http_address,
                locality: Some(pb::Locality {
                    tiers: d.locality.into_iter().map(|(key, value)| pb::Tier { key, value }).collect(),
                }),
                build_tag: d.build_tag,
                started_at: d.started_at,
                num_cpus: d.num_cpus,
                total_system_memory: d.total_system_memory,
                cluster_name: d.cluster_name,
            }),
            liveness: view.liveness as i32,
            last_seen: view.last_seen,
            metrics: view.status.as_ref().map(|s| s.metrics.clone().into_iter().collect()).unwrap_or_default(),
            store_metrics: view
                .status
                .as_ref()
                .map(|s| {
                    s.store_metrics
                        .iter()
                        .map(|(id, m)| (*id, pb::StoreMetrics { metrics: m.clone().into_iter().collect() }))
                        .collect()
                })
                .unwrap_or_default(),
            updated_at: view.status.as_ref().map(|s| s.updated_at).unwrap_or(0),
        }
    }
}

fn nanos(time: std::time::SystemTime) -> i64 {
    unix_nanos(time)
}

impl From<SessionInfo> for pb::Session {
    fn from(info: SessionInfo) -> Self {
        pb::Session {
            id: info.id.to_vec().into(),
            node_id: info.node_id,
            username: info.username,
            client_address: info.client_address.to_string(),
            application_name: info.application_name,
            database: info.database,
            start: nanos(info.start),
            end: info.end.map(nanos).unwrap_or(0),
            status: match info.status {
                SessionStatus::Active => pb::SessionStatus::Active,
                SessionStatus::Closed => pb::SessionStatus::Closed,
                SessionStatus::Idle => pb::SessionStatus::Idle,
            } as i32,
            active_queries: info
                .active_queries
                .into_iter()
                .map(|q| pb::ActiveQuery {
                    id: q.id.to_vec().into(),
                    sql: q.sql,
                    start: nanos(q.start),
                    phase: q.phase as i32,
                })
                .collect(),
            last_active_query: info.last_active_query,
            num_txns_executed: info.num_txns_executed,
            active_txn: info.active_txn.map(|t| pb::ActiveTxn {
                id: t.id.to_vec().into(),
                start: nanos(t.start),
                num_statements: t.num_statements,
            }),
            alloc_bytes: info.alloc_bytes as i64,
            max_alloc_bytes: info.max_alloc_bytes as i64,
        }
    }
}

impl From<NodeMembership> for pb::MembershipStatus {
    fn from(membership: NodeMembership) -> Self {
        match membership {
            NodeMembership::Active => pb::MembershipStatus::Active,
            NodeMembership::Decommissioning => pb::MembershipStatus::Decommissioning,
            NodeMembership::Decommissioned => pb::MembershipStatus::Decommissioned,
        }
    }
}

/// A membership from the wire; `None` for an unspecified (or unknown) one.
pub fn membership_from_wire(value: i32) -> Option<NodeMembership> {
    match pb::MembershipStatus::try_from(value).ok()? {
        pb::MembershipStatus::Unspecified => None,
        pb::MembershipStatus::Active => Some(NodeMembership::Active),
        pb::MembershipStatus::Decommissioning => Some(NodeMembership::Decommissioning),
        pb::MembershipStatus::Decommissioned => Some(NodeMembership::Decommissioned),
    }
}

impl From<DecommissionStatus> for pb::DecommissionStatus {
    fn from(status: DecommissionStatus) -> Self {
        pb::DecommissionStatus {
            node_id: status.node_id,
            address: status.address,
            is_live: status.is_live,
            replica_count: status.replica_count as i64,
            membership: pb::MembershipStatus::from(status.membership) as i32,
            draining: status.draining,
        }
    }
}
