//! The tonic service adapters of a node and the pb ⇄ domain conversions: each method takes
//! the prost request, converts it to domain types, calls [`NodeCore`], and converts back;
//! errors become `tonic::Status` through the one table in [`crate::services::error`]. The
//! gateway and the CLI, which speak to nodes in pb types, use the same conversions.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::pb;
use crate::pb::kv_service_server::{KvService, KvServiceServer};
use crate::pb::node_service_server::{NodeService, NodeServiceServer};
use crate::pb::raft_service_server::{RaftService, RaftServiceServer};
use crate::pb::status_service_server::{StatusService, StatusServiceServer};
use crate::services::error::{Error, Result};
use crate::services::kv::{Op, OpResult};
use crate::services::load::{LoadMetric, LoadRates};
use crate::services::node::NodeCore;
use crate::services::raft::network::MAX_MESSAGE_BYTES;
use crate::services::sql::catalog::Catalog;
use crate::services::sql::session::{SessionInfo, SessionStatus};
use crate::services::status::{NodeView, ReplicaStatus};

// ---- conversions ---------------------------------------------------------------------------

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
    /// The wire form of a batch; `forwarded` batches run only on the node they reach.
    pub fn from_ops(ops: Vec<Op>, forwarded: bool) -> Self {
        pb::BatchRequest { ops: ops.into_iter().map(Into::into).collect(), forwarded }
    }
}

impl pb::BatchResponse {
    /// The results of a batch's operations, in order.
    pub fn into_results(self) -> Vec<OpResult> {
        self.results.into_iter().map(Into::into).collect()
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

fn load_stats(load: &LoadRates) -> pb::LoadStats {
    pb::LoadStats {
        queries_per_second: load.queries_per_second,
        reads_per_second: load.reads_per_second,
        writes_per_second: load.writes_per_second,
        read_bytes_per_second: load.read_bytes_per_second,
        write_bytes_per_second: load.write_bytes_per_second,
        cpu_time_per_second: load.cpu_time_per_second,
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

fn range_info(replica: ReplicaStatus) -> pb::RangeInfo {
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
        load: Some(load_stats(&replica.load)),
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
            overreplicated: false,
            no_lease: replica.no_raft_leader,
        }),
        node_id: replica.reporting_node,
    }
}

fn node_entry(view: NodeView) -> pb::NodeEntry {
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

// ---- services ------------------------------------------------------------------------------

struct KvApi(Arc<NodeCore>);

#[tonic::async_trait]
impl KvService for KvApi {
    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let request = request.into_inner();
        let ops = request.ops.into_iter().map(Op::try_from).collect::<Result<Vec<_>>>()?;
        let results = self.0.kv_batch(ops, request.forwarded).await?;
        Ok(Response::new(pb::BatchResponse { results: results.into_iter().map(Into::into).collect() }))
    }

    async fn admin_split(
        &self,
        request: Request<pb::AdminSplitRequest>,
    ) -> Result<Response<pb::AdminSplitResponse>, Status> {
        let request = request.into_inner();
        let (left, right) = self.0.split(request.split_key.to_vec(), request.forwarded).await?;
        Ok(Response::new(pb::AdminSplitResponse { left_range_id: left, right_range_id: right }))
    }
}

struct RaftApi(Arc<NodeCore>);

fn decode<T: DeserializeOwned>(payload: &pb::RaftPayload) -> Result<T, Status> {
    serde_json::from_slice(&payload.data).map_err(|err| Status::invalid_argument(format!("bad raft payload: {err}")))
}

fn encode<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<pb::RaftPayload>, Status> {
    let (data, error) = match result {
        Ok(value) => (serde_json::to_vec(&value), false),
        Err(err) => (serde_json::to_vec(&err), true),
    };
    let data = data.map_err(|err| Status::internal(err.to_string()))?;
    Ok(Response::new(pb::RaftPayload { data: data.into(), error }))
}

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn append_entries(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let active = self.0.active()?;
        encode(active.raft.append_entries(decode(request.get_ref())?).await)
    }

    async fn vote(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let active = self.0.active()?;
        encode(active.raft.vote(decode(request.get_ref())?).await)
    }

    async fn install_snapshot(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let active = self.0.active()?;
        encode(active.raft.install_snapshot(decode(request.get_ref())?).await)
    }
}

struct NodeApi(Arc<NodeCore>);

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn handshake(&self, _: Request<pb::HandshakeRequest>) -> Result<Response<pb::HandshakeResponse>, Status> {
        Ok(Response::new(self.0.handshake()))
    }

    async fn init(&self, request: Request<pb::InitRequest>) -> Result<Response<pb::InitResponse>, Status> {
        let password = request.into_inner().root_password;
        let (cluster_id, node_id) = self.0.init(Some(password.as_str()).filter(|p| !p.is_empty())).await?;
        Ok(Response::new(pb::InitResponse { cluster_id, node_id }))
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        Ok(Response::new(self.0.join(request.into_inner()).await?))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        Ok(Response::new(self.0.add_member(request.into_inner()).await?))
    }
}

/// The StatusService of one node: what it knows of the cluster and of the replicas and
/// sessions it holds. Served over gRPC, and called in-process by the node's own gateway.
#[derive(Clone)]
pub struct StatusApi {
    core: Arc<NodeCore>,
    catalog: Arc<Catalog>,
}

impl StatusApi {
    /// The StatusService of `core`, naming table ranges through `catalog`.
    pub fn new(core: Arc<NodeCore>, catalog: Arc<Catalog>) -> Self {
        Self { core, catalog }
    }

    /// Converts replicas to their wire form with their SQL names.
    async fn named(&self, replicas: Vec<ReplicaStatus>) -> Vec<pb::RangeInfo> {
        let mut out = Vec::with_capacity(replicas.len());
        for mut replica in replicas {
            replica.names = self.catalog.range_names(&replica.descriptor.start_key).await;
            out.push(range_info(replica));
        }
        out
    }
}

#[tonic::async_trait]
impl StatusService for StatusApi {
    async fn nodes(&self, _: Request<pb::NodesRequest>) -> Result<Response<pb::NodesResponse>, Status> {
        let nodes = self.core.nodes().await?;
        Ok(Response::new(pb::NodesResponse { nodes: nodes.into_iter().map(node_entry).collect() }))
    }

    async fn ranges(&self, request: Request<pb::RangesRequest>) -> Result<Response<pb::RangesResponse>, Status> {
        let node_id = self.core.active()?.node_id;
        let request = request.into_inner();
        let limit = if request.limit == 0 { usize::MAX } else { request.limit as usize };
        let (ranges, total) = self.core.ranges_page(&request.range_ids, request.offset as usize, limit).await?;
        Ok(Response::new(pb::RangesResponse { node_id, ranges: self.named(ranges).await, total: total as u64 }))
    }

    async fn hot_ranges(
        &self,
        request: Request<pb::HotRangesRequest>,
    ) -> Result<Response<pb::HotRangesResponse>, Status> {
        let request = request.into_inner();
        let node_id = self.core.active()?.node_id;
        let metric = LoadMetric::from(request.sort_by());
        let limit = if request.limit == 0 { usize::MAX } else { request.limit as usize };
        let ranges = self.core.hot_ranges(metric, limit).await?;
        Ok(Response::new(pb::HotRangesResponse { node_id, ranges: self.named(ranges).await }))
    }

    async fn sessions(&self, request: Request<pb::SessionsRequest>) -> Result<Response<pb::SessionsResponse>, Status> {
        let request = request.into_inner();
        let node_id = self.core.active()?.node_id;
        let username = Some(request.username.as_str()).filter(|u| !u.is_empty());
        let sessions = self.core.sessions().list(username, !request.exclude_closed);
        Ok(Response::new(pb::SessionsResponse { node_id, sessions: sessions.into_iter().map(session).collect() }))
    }
}

fn nanos(time: std::time::SystemTime) -> i64 {
    crate::services::clock::unix_nanos(time)
}

fn session(info: SessionInfo) -> pb::Session {
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

/// Serves every gRPC service of `core` (its StatusService being `status`) on `listener` until `shutdown` resolves; mutual TLS
/// when the node has certificates.
pub fn spawn_server(
    core: Arc<NodeCore>,
    status: StatusApi,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &core.config().tls {
        builder = builder
            .tls_config(tls.grpc_server())
            .map_err(|err| Error::FailedPrecondition(format!("TLS configuration: {err}")))?;
    }
    let router = builder
        .add_service(KvServiceServer::new(KvApi(core.clone())))
        .add_service(
            RaftServiceServer::new(RaftApi(core.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(NodeServiceServer::new(NodeApi(core.clone())))
        .add_service(StatusServiceServer::new(status));
    // TCP_NODELAY on every accepted connection: an HTTP/2 response is several small writes
    // (headers, data, trailers), and with Nagle's algorithm the later ones wait for the
    // peer's delayed ACK (40 ms), which is what Raft, forwarding and fan-out calls then take.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|socket| {
            let _ = socket.set_nodelay(true);
        })
    });
    Ok(tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown)))
}
