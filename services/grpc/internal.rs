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
use crate::services::metrics::RaftMessage;
use crate::services::node::{NodeCore, PEER_WATCH_EVENT_EVERY};
use crate::services::raft::{TypeConfig, codec, network, state_machine};
use openraft::raft::{AppendEntriesRequest, SnapshotResponse};

pub(super) struct KvApi(pub(super) Arc<NodeCore>);

#[tonic::async_trait]
impl KvService for KvApi {
    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let request = request.into_inner();
        let forwarded_by = request.forwarded_by();
        let ops = request.ops.into_iter().map(Op::try_from).collect::<Result<Vec<_>>>()?;
        let results = if request.applied_copy {
            self.0.read_applied(ops).await?
        } else {
            self.0.kv_batch(ops, forwarded_by).await?
        };
        Ok(Response::new(pb::BatchResponse { results: results.into_iter().map(Into::into).collect() }))
    }

    async fn scan_page(&self, request: Request<pb::ScanPageRequest>) -> Result<Response<pb::ScanPageResponse>, Status> {
        let request = request.into_inner();
        let forwarded_by = request.forwarded_by();
        let page = self.0.scan_page(request.into_request(), forwarded_by).await?;
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
    codec::from_bytes(&payload.data).map_err(|err| Status::invalid_argument(format!("bad raft payload: {err}")))
}

/// A reply payload: the value, or the failure as text flagged `error`.
fn reply<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Result<pb::RaftPayload, Status> {
    let (data, error) = match result {
        Ok(value) => (codec::to_bytes(&value).map_err(Status::internal)?, false),
        Err(err) => (err.to_string().into_bytes(), true),
    };
    Ok(pb::RaftPayload { data: data.into(), error, ..Default::default() })
}

/// A unary call's reply (see [`reply`]).
fn encode<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Result<Response<pb::RaftPayload>, Status> {
    reply(result).map(Response::new)
}

/// The replies of one replication stream.
type ReplyStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::RaftPayload, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftService for RaftApi {
    type AppendStreamStream = ReplyStream;

    async fn append_stream(
        &self,
        request: Request<tonic::Streaming<pb::RaftPayload>>,
    ) -> Result<Response<ReplyStream>, Status> {
        use futures::StreamExt;
        // Answered at once, not after the first request: a leader opens its streams when it is
        // elected and may have nothing to send for a long time (a quiesced group), and it
        // gives up on a stream that is not answered within its deadline as on a dead peer.
        let core = self.0.clone();
        let inbound = request.into_inner();
        let replies = futures::stream::once(open_append_stream(core, inbound)).flat_map(|opened| match opened {
            Ok(replies) => replies,
            Err(status) => Box::pin(futures::stream::iter([Err(status)])),
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn append_entries(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        // Decoded before a replica is started for it: only a well-formed message from the
        // group's leader starts one.
        let append: AppendEntriesRequest<TypeConfig> = decode(request.get_ref())?;
        let replica = self.0.ensure_replica(request.get_ref().group).await?;
        self.0.raft_messages().record(RaftMessage::Append(append.entries.len()));
        let proposing = !append.entries.is_empty();
        let reply = replica.raft.append_entries(append).await;
        // After the append, which restarted the election timer: woken first, the replica
        // could campaign on the timer it stopped with.
        if proposing {
            replica.wake();
        }
        encode(reply)
    }

    async fn vote(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let replica = self.0.raft_group_soon(request.get_ref().group).await?;
        let vote = decode(request.get_ref())?;
        self.0.raft_messages().record(RaftMessage::Vote);
        let reply = replica.raft.vote(vote).await;
        // Someone campaigns: this replica takes part in the elections that follow.
        replica.wake();
        encode(reply)
    }

    async fn transfer_leader(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let replica = self.0.raft_group(request.get_ref().group)?;
        let transfer = decode(request.get_ref())?;
        self.0.raft_messages().record(RaftMessage::TransferLeader);
        if let Some(load) = &request.get_ref().load {
            self.0.take_over_load(request.get_ref().group, load);
        }
        replica.wake();
        encode(replica.raft.handle_transfer_leader(transfer).await)
    }

    async fn heartbeats(&self, request: Request<pb::HeartbeatBatch>) -> Result<Response<pb::HeartbeatBatch>, Status> {
        let heartbeats = request.into_inner().messages;
        let replies = futures::future::join_all(heartbeats.iter().map(|heartbeat| self.heartbeat(heartbeat))).await;
        Ok(Response::new(pb::HeartbeatBatch { messages: replies }))
    }

    type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send + 'static>>;

    async fn watch(&self, _request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        use futures::StreamExt;
        let core = self.0.clone();
        let node_id = core.active()?.node_id;
        if core.is_draining() {
            return Err(Status::unavailable(format!("node {node_id} is draining")));
        }
        // Ends once the node drains, so that the server's graceful stop does not wait on it.
        let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(PEER_WATCH_EVENT_EVERY));
        let events = ticks.take_while(move |_| std::future::ready(!core.is_draining()));
        Ok(Response::new(Box::pin(events.map(move |_| Ok(pb::WatchEvent { node_id })))))
    }

    async fn quiesce(&self, request: Request<pb::QuiesceRequest>) -> Result<Response<pb::QuiesceResponse>, Status> {
        self.0.raft_messages().record(RaftMessage::Quiesce);
        Ok(Response::new(self.0.quiesce(request.into_inner())?))
    }

    async fn install_snapshot(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let (chunk, bytes) = network::decode_chunk(&request.get_ref().data).map_err(Status::invalid_argument)?;
        let replica = self.0.ensure_replica(request.get_ref().group).await?;
        self.0.raft_messages().record(RaftMessage::SnapshotChunk);
        let vote = chunk.vote;
        match replica.snapshot_inbox.receive(chunk, bytes).map_err(Status::invalid_argument)? {
            Some((vote, snapshot)) => {
                // Refused (the leader sends it again later) while another group here still
                // owns some of its keys: that group has yet to apply the split that gave them
                // away, and its older entries would write over the snapshot's rows.
                let span = state_machine::snapshot_span(snapshot.snapshot.get_ref()).map_err(Status::from)?;
                if let Some(other) = self.0.active()?.state.overlapping_group(replica.group, &span) {
                    return Err(Status::unavailable(format!(
                        "a snapshot of Raft group {} overlaps group {other} on this node",
                        replica.group
                    )));
                }
                let reply = replica.raft.install_full_snapshot(vote, snapshot).await;
                replica.wake();
                encode(reply)
            }
            // The sender reads only the last chunk's reply.
            None => encode(Ok::<_, std::convert::Infallible>(SnapshotResponse::<TypeConfig>::new(vote))),
        }
    }
}

/// A replication stream's replies, once its first request names the group (a stream that
/// ends before it has nothing to answer).
async fn open_append_stream(
    core: Arc<NodeCore>,
    mut inbound: tonic::Streaming<pb::RaftPayload>,
) -> Result<ReplyStream, Status> {
    use futures::StreamExt;
    let Some(first) = inbound.message().await? else {
        return Ok(Box::pin(futures::stream::empty()));
    };
    let group = first.group;
    decode::<AppendEntriesRequest<TypeConfig>>(&first)?;
    let replica = core.ensure_replica(group).await?;
    // Requests end with the sender's stream, a transport error, one that does not decode
    // or one for another group; the leader then sees the replies end and opens a new stream.
    let state = (Some(first), inbound, core);
    let requests = futures::stream::unfold(state, move |(first, mut inbound, core)| async move {
        let payload = match first {
            Some(payload) => payload,
            None => inbound.message().await.ok()??,
        };
        if payload.group != group {
            tracing::warn!(
                group,
                other = payload.group,
                "replication stream: request for another group, stream closed"
            );
            return None;
        }
        match codec::from_bytes::<AppendEntriesRequest<TypeConfig>>(&payload.data) {
            Ok(request) => {
                core.raft_messages().record(RaftMessage::Append(request.entries.len()));
                Some((request, (None, inbound, core)))
            }
            Err(err) => {
                tracing::warn!(error = %err, "replication stream: undecodable request, stream closed");
                None
            }
        }
    });
    let replies = replica.raft.stream_append(requests).map(reply);
    Ok(Box::pin(replies))
}

impl RaftApi {
    /// One group's heartbeat out of a coalesced batch, answered as a replication stream
    /// answers its request (the leader's heartbeat worker reads it so); a failure is that
    /// group's alone.
    async fn heartbeat(&self, heartbeat: &pb::RaftPayload) -> pb::RaftPayload {
        use futures::StreamExt;
        let failed = |err: String| pb::RaftPayload { data: err.into_bytes().into(), error: true, ..Default::default() };
        let request = match codec::from_bytes::<AppendEntriesRequest<TypeConfig>>(&heartbeat.data) {
            Ok(request) => request,
            Err(err) => return failed(format!("bad raft payload: {err}")),
        };
        let replica = match self.0.ensure_replica(heartbeat.group).await {
            Ok(replica) => replica,
            Err(err) => return failed(err.to_string()),
        };
        self.0.raft_messages().record(RaftMessage::Append(request.entries.len()));
        let replies = replica.raft.stream_append(futures::stream::once(async { request }));
        let mut replies = std::pin::pin!(replies);
        // Answered within a heartbeat interval or failed: the batch's call waits for its
        // slowest heartbeat, and the leader's heartbeat worker gives up after that anyway.
        let interval = crate::services::raft::HEARTBEAT_INTERVAL;
        let Ok(answer) = tokio::time::timeout(interval, replies.next()).await else {
            return failed(format!("heartbeat not answered within {interval:?}"));
        };
        match answer {
            Some(result) => reply(result).unwrap_or_else(|status| failed(status.message().to_string())),
            None => failed("the replica ended the heartbeat unanswered".to_string()),
        }
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

    async fn decommission(
        &self,
        request: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionResponse>, Status> {
        let request = request.into_inner();
        let target = match request.target {
            0 => None,
            wire => Some(
                super::convert::membership_from_wire(wire)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown membership status {wire}")))?,
            ),
        };
        let status = self.0.decommission(&request.node_ids, target).await?;
        Ok(Response::new(pb::DecommissionResponse { status: status.into_iter().map(Into::into).collect() }))
    }
}
