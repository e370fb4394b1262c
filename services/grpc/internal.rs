//! The node-to-node services: KV batches and splits (forwarded to the leaseholder), the Raft
//! transport, and cluster formation (handshake, init, join, membership).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::pb;
use crate::pb::kv_service_server::KvService;
use crate::pb::node_service_server::NodeService;
use crate::pb::raft_service_server::RaftService;
use crate::services::error::Result;
use crate::services::kv::Op;
use crate::services::node::NodeCore;

pub(super) struct KvApi(pub(super) Arc<NodeCore>);

#[tonic::async_trait]
impl KvService for KvApi {
    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let request = request.into_inner();
        let ops = request.ops.into_iter().map(Op::try_from).collect::<Result<Vec<_>>>()?;
        let results = if request.applied_copy {
            self.0.read_applied(ops).await?
        } else {
            self.0.kv_batch(ops, request.forwarded).await?
        };
        Ok(Response::new(pb::BatchResponse { results: results.into_iter().map(Into::into).collect() }))
    }

    async fn scan_page(&self, request: Request<pb::ScanPageRequest>) -> Result<Response<pb::ScanPageResponse>, Status> {
        let request = request.into_inner();
        let forwarded = request.forwarded;
        let page = self.0.scan_page(request.into_request(), forwarded).await?;
        Ok(Response::new(page.into()))
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

pub(super) struct RaftApi(pub(super) Arc<NodeCore>);

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

pub(super) struct NodeApi(pub(super) Arc<NodeCore>);

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
