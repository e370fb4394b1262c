//! How the gateway talks to one node: the [`NodeClient`] calls (the StatusService, readiness,
//! KV batches) and the [`Connector`] that hands out a client per node address. Remote nodes
//! are reached over pooled gRPC channels ([`GrpcConnector`]); a gateway embedded in a node
//! reaches its own node in-process through a client registered with
//! [`GrpcConnector::with_local`] (no socket, no TLS, no protobuf encoding). Tests fake both.
//! Only [`crate::gateway::cluster`] uses these: it applies the fan-out policy around them.

use std::sync::Arc;

use tonic::transport::Channel;

use crate::pb;
use crate::pb::kv_service_client::KvServiceClient;
use crate::pb::node_service_client::NodeServiceClient;
use crate::pb::status_service_client::StatusServiceClient;
use crate::services::dialer::Dialer;
use crate::services::error::{Error, Result};
use crate::services::kv::{Op, OpResult};

/// One node, as the gateway asks it.
#[async_trait::async_trait]
pub trait NodeClient: Send + Sync {
    /// Every node the cluster knows, with liveness and last status (StatusService.Nodes).
    async fn nodes(&self) -> Result<Vec<pb::NodeEntry>>;
    /// Replicas this node holds (StatusService.Ranges).
    async fn ranges(&self, request: pb::RangesRequest) -> Result<pb::RangesResponse>;
    /// This node's hottest leaseholder replicas (StatusService.HotRanges).
    async fn hot_ranges(&self, request: pb::HotRangesRequest) -> Result<pb::HotRangesResponse>;
    /// This node's SQL sessions (StatusService.Sessions).
    async fn sessions(&self, request: pb::SessionsRequest) -> Result<pb::SessionsResponse>;
    /// Who the node is and whether it can serve (NodeService.Handshake).
    async fn handshake(&self) -> Result<pb::HandshakeResponse>;
    /// A KV batch routed by this node to the leaseholder (KvService.Batch).
    async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>>;
    /// A read-only batch served from the node's applied copy ([`crate::services::kv::Kv::read_applied`]).
    async fn read_applied(&self, ops: Vec<Op>) -> Result<Vec<OpResult>>;
}

/// Hands out a [`NodeClient`] for a node's gRPC address.
pub trait Connector: Send + Sync {
    /// The client for the node at `address` (cheap: clients share pooled channels).
    fn connect(&self, address: &str) -> Result<Arc<dyn NodeClient>>;
}

/// Connects over gRPC through a [`Dialer`], except to the one node registered as local.
pub struct GrpcConnector {
    dialer: Arc<Dialer>,
    local: Option<(String, Arc<dyn NodeClient>)>,
}

impl GrpcConnector {
    /// A connector dialing every node through `dialer`.
    pub fn new(dialer: Arc<Dialer>) -> Self {
        Self { dialer, local: None }
    }

    /// Answers calls to `address` with `client` in-process instead of dialing it.
    pub fn with_local(mut self, address: String, client: Arc<dyn NodeClient>) -> Self {
        self.local = Some((address, client));
        self
    }
}

impl Connector for GrpcConnector {
    fn connect(&self, address: &str) -> Result<Arc<dyn NodeClient>> {
        if let Some((local, client)) = &self.local
            && local == address
        {
            return Ok(client.clone());
        }
        Ok(Arc::new(GrpcNode { channel: self.dialer.channel(address)? }))
    }
}

/// A remote node over one pooled channel.
struct GrpcNode {
    channel: Channel,
}

#[async_trait::async_trait]
impl NodeClient for GrpcNode {
    async fn nodes(&self) -> Result<Vec<pb::NodeEntry>> {
        let mut client = StatusServiceClient::new(self.channel.clone());
        Ok(client.nodes(pb::NodesRequest {}).await?.into_inner().nodes)
    }

    async fn ranges(&self, request: pb::RangesRequest) -> Result<pb::RangesResponse> {
        Ok(StatusServiceClient::new(self.channel.clone()).ranges(request).await?.into_inner())
    }

    async fn hot_ranges(&self, request: pb::HotRangesRequest) -> Result<pb::HotRangesResponse> {
        Ok(StatusServiceClient::new(self.channel.clone()).hot_ranges(request).await?.into_inner())
    }

    async fn sessions(&self, request: pb::SessionsRequest) -> Result<pb::SessionsResponse> {
        Ok(StatusServiceClient::new(self.channel.clone()).sessions(request).await?.into_inner())
    }

    async fn handshake(&self) -> Result<pb::HandshakeResponse> {
        let mut client = NodeServiceClient::new(self.channel.clone());
        Ok(client.handshake(pb::HandshakeRequest { cluster_name: String::new() }).await?.into_inner())
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let mut client = KvServiceClient::new(self.channel.clone());
        let reply = client.batch(pb::BatchRequest::from_ops(ops, None)).await.map_err(Error::from)?;
        Ok(reply.into_inner().into_results())
    }

    async fn read_applied(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let mut client = KvServiceClient::new(self.channel.clone());
        let reply = client.batch(pb::BatchRequest::applied_copy(ops)).await.map_err(Error::from)?;
        Ok(reply.into_inner().into_results())
    }
}
