//! openraft's network over gRPC: each RPC's request and reply are openraft's serde types in
//! JSON inside a `RaftPayload`. A reply flagged `error` carries the remote Raft error; a
//! transport failure is reported as unreachable so openraft backs off.

use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::pb::RaftPayload;
use crate::pb::raft_service_client::RaftServiceClient;
use crate::services::dialer::Dialer;
use crate::services::raft::{NodeId, TypeConfig};

/// The largest Raft message accepted (snapshot chunks are smaller).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Creates one [`Network`] per target node, sharing the node's dialer.
pub struct NetworkFactory {
    dialer: Arc<Dialer>,
}

impl NetworkFactory {
    /// A factory dialing through `dialer`.
    pub fn new(dialer: Arc<Dialer>) -> Self {
        Self { dialer }
    }
}

/// The connection to one target node.
pub struct Network {
    target: NodeId,
    client: Result<RaftServiceClient<Channel>, String>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        let client = self
            .dialer
            .channel(&node.addr)
            .map(|channel| {
                RaftServiceClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .map_err(|err| err.to_string());
        Network { target, client }
    }
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Network {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(client) => client,
            Err(err) => return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(err.clone())))),
        };
        let data = serde_json::to_vec(request).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        let mut message = tonic::Request::new(RaftPayload { data: data.into(), error: false });
        message.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(message).await,
            Rpc::Vote => client.vote(message).await,
            Rpc::InstallSnapshot => client.install_snapshot(message).await,
        }
        .map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?
        .into_inner();
        if reply.error {
            let err: RaftError<NodeId, E> =
                serde_json::from_slice(&reply.data).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
            return Err(RPCError::RemoteError(RemoteError::new(self.target, err)));
        }
        serde_json::from_slice(&reply.data).map_err(|err| RPCError::Network(NetworkError::new(&err)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
