//! The StatusService: what a node knows of the cluster and of the replicas and sessions it
//! holds, as the Cluster API's fan-outs ask it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::pb;
use crate::pb::status_service_server::StatusService;
use crate::services::load::LoadMetric;
use crate::services::node::NodeCore;
use crate::services::sql::catalog::Catalog;
use crate::services::status::ReplicaStatus;

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
            out.push(pb::RangeInfo::from(replica));
        }
        out
    }
}

#[tonic::async_trait]
impl StatusService for StatusApi {
    async fn nodes(&self, _: Request<pb::NodesRequest>) -> Result<Response<pb::NodesResponse>, Status> {
        let nodes = self.core.nodes().await?;
        Ok(Response::new(pb::NodesResponse { nodes: nodes.into_iter().map(pb::NodeEntry::from).collect() }))
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
        Ok(Response::new(pb::SessionsResponse {
            node_id,
            sessions: sessions.into_iter().map(pb::Session::from).collect(),
        }))
    }
}
