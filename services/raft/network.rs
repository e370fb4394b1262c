//! openraft's network over gRPC: each RPC's request and reply are openraft's serde types in
//! postcard inside a `RaftPayload` (commands within are protobuf, see [`codec`]). A reply flagged `error` carries the remote failure as text
//! (openraft's error bodies are diagnostics, not a wire contract); it and a transport failure
//! are both reported as unreachable, so openraft backs off.
//!
//! Replication is pipelined: openraft hands each follower's replication a stream of
//! AppendEntries requests, and [`Network::stream_append`] carries it over one `AppendStream`
//! gRPC call, sending each request as soon as openraft makes it and yielding the follower's
//! results in order (HTTP/2 keeps them so). A follower that leaves a request unanswered for
//! [`STREAM_REPLY_TIMEOUT`] is reported unreachable and the stream dropped; an idle stream
//! (nothing to replicate) has no deadline.
//!
//! Heartbeats do not open streams of their own: openraft's heartbeat client for a follower
//! sends through the node's queue to that peer ([`Heartbeats`]), one call for every group.
//!
//! A snapshot travels in chunks of openraft's `snapshot_max_chunk_size`, each within the RPC's
//! deadline, and the receiver's [`SnapshotInbox`] puts them back together before installing.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use openraft::BasicNode;
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::pb::raft_service_client::RaftServiceClient;
use crate::pb::{LoadHandoff, RaftPayload};
use crate::services::dialer::Dialer;
use crate::services::load::LoadTracker;
use crate::services::raft::codec;
use crate::services::raft::heartbeats::Heartbeats;
use crate::services::raft::peer_downs::PeerDowns;
use crate::services::raft::{NodeId, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};

/// The largest Raft message accepted (snapshot chunks are smaller).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long the oldest unanswered request of a replication stream may wait for its result.
/// A follower's result follows its fdatasync, which can take hundreds of milliseconds on a
/// loaded disk, so this is well above openraft's per-RPC 150 ms; a frozen follower or a cut
/// link costs only its own stream this long before openraft opens a new one.
pub const STREAM_REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a group waits before each retry of its replication to a peer known gone: the
/// waits double from the first to the last, which then repeats. The node's peer watch ends
/// the waits when the peer comes back (see `NodeCore::mark_up` in `services::node::peer_watch`).
pub const DOWN_PEER_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(8));

/// The waits of [`DOWN_PEER_BACKOFF`].
fn down_peer_waits() -> impl Iterator<Item = Duration> {
    let (first, last) = DOWN_PEER_BACKOFF;
    std::iter::successors(Some(first), move |wait| Some((*wait * 2).min(last)))
}

/// Snapshot chunk size when openraft does not name one.
const DEFAULT_SNAPSHOT_CHUNK_BYTES: usize = 3 * 1024 * 1024;

/// What a group's messages go out on: the node's dialer, its heartbeat queues, its load
/// counts (a leadership transfer hands the group's load on), and the peers known gone.
#[derive(Clone)]
pub struct Transport {
    /// The node's pooled channels.
    pub dialer: Arc<Dialer>,
    /// The node's heartbeat queues, one per peer.
    pub heartbeats: Arc<Heartbeats>,
    /// The node's load counts.
    pub load: Arc<LoadTracker>,
    /// The peers whose process is known gone: a vote to one fails at once.
    pub downs: Arc<PeerDowns>,
}

/// Creates one [`Network`] per target node, sharing the node's transport.
pub struct NetworkFactory {
    transport: Transport,
    group: u64,
    pipelined: bool,
}

impl NetworkFactory {
    /// A factory for the Raft group `group`; `pipelined` false keeps one AppendEntries in
    /// flight per follower (only to measure what the pipelined stream gives).
    pub fn new(transport: Transport, group: u64, pipelined: bool) -> Self {
        Self { transport, group, pipelined }
    }
}

/// The connection of one group to one target node (groups to the same node share its
/// channel: one HTTP/2 connection per peer). A heartbeat client sends through the node's
/// queue to that peer instead, coalesced with every other group's heartbeats.
pub struct Network {
    client: Result<RaftServiceClient<Channel>, String>,
    target: NodeId,
    downs: Arc<PeerDowns>,
    group: u64,
    pipelined: bool,
    load: Arc<LoadTracker>,
    heartbeats: Option<(Arc<Heartbeats>, String)>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_heartbeat_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        let mut network = self.new_client(target, node).await;
        network.heartbeats = Some((self.transport.heartbeats.clone(), node.addr.clone()));
        network
    }

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        let client = self
            .transport
            .dialer
            .channel(&node.addr)
            .map(|channel| {
                RaftServiceClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .map_err(|err| err.to_string());
        Network {
            client,
            target,
            downs: self.transport.downs.clone(),
            group: self.group,
            pipelined: self.pipelined,
            load: self.transport.load.clone(),
            heartbeats: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    TransferLeader,
}

/// The header of one snapshot chunk; the chunk's bytes follow it in the payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The sending leader's vote.
    pub vote: Vote,
    /// The snapshot being sent.
    pub meta: SnapshotMeta,
    /// Names one transfer, so a resent snapshot never continues an abandoned one.
    pub transfer: u64,
    /// Where this chunk's bytes start in the snapshot.
    pub offset: u64,
    /// Whether this is the last chunk.
    pub done: bool,
}

/// Frames a snapshot chunk: a 4-byte big-endian header length, the postcard header, the bytes.
pub fn encode_chunk(header: &SnapshotChunk, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let header = codec::to_bytes(header)?;
    let mut out = Vec::with_capacity(4 + header.len() + bytes.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(bytes);
    Ok(out)
}

/// Splits a framed snapshot chunk into its header and bytes.
pub fn decode_chunk(data: &[u8]) -> Result<(SnapshotChunk, &[u8]), String> {
    let (len, rest) = data.split_first_chunk::<4>().ok_or("truncated snapshot chunk")?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err("truncated snapshot chunk".into());
    }
    let (header, bytes) = rest.split_at(len);
    let header = codec::from_bytes(header).map_err(|err| format!("bad snapshot chunk header: {err}"))?;
    Ok((header, bytes))
}

/// The receiving side of snapshot transfers: the chunks of the transfer in progress.
#[derive(Default)]
pub struct SnapshotInbox {
    current: Mutex<Option<(u64, Vec<u8>)>>,
}

impl SnapshotInbox {
    /// Takes one chunk; returns the whole snapshot once its last chunk has arrived. A chunk
    /// of another transfer starts over (openraft resends a snapshot from its start).
    pub fn receive(&self, chunk: SnapshotChunk, bytes: &[u8]) -> Result<Option<(Vote, Snapshot)>, String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if chunk.offset == 0 {
            *current = Some((chunk.transfer, Vec::new()));
        }
        let Some((transfer, buffer)) = current.as_mut().filter(|(transfer, _)| *transfer == chunk.transfer) else {
            return Err(format!("snapshot chunk at offset {} of a transfer not in progress", chunk.offset));
        };
        if buffer.len() as u64 != chunk.offset {
            let expected = buffer.len();
            let transfer = *transfer;
            *current = None;
            return Err(format!(
                "snapshot transfer {transfer}: chunk at offset {} but {expected} bytes received",
                chunk.offset
            ));
        }
        buffer.extend_from_slice(bytes);
        if !chunk.done {
            return Ok(None);
        }
        let (_, data) = current.take().expect("checked above");
        Ok(Some((chunk.vote, Snapshot { meta: chunk.meta, snapshot: SnapshotData::new(data) })))
    }
}

fn network_error(err: String) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(err)))
}

fn unreachable(err: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(err.to_string())))
}

/// A follower's answer to one AppendEntries of a stream (or a heartbeat): a remote failure
/// counts as unreachable, so openraft backs off.
fn append_result(reply: &RaftPayload) -> Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>> {
    if reply.error {
        return Err(unreachable(String::from_utf8_lossy(&reply.data)));
    }
    codec::from_bytes(&reply.data).map_err(network_error)
}

/// When each unanswered request of a replication stream was sent, oldest first.
type SendTimes = Arc<Mutex<VecDeque<Instant>>>;

/// The next result of a replication stream: `None` when the follower ended it, an error (and
/// the end) on a transport failure, a remote failure, or the oldest request waiting past
/// [`STREAM_REPLY_TIMEOUT`].
async fn next_reply(
    replies: &mut tonic::Streaming<RaftPayload>,
    sent: &SendTimes,
) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
    loop {
        let oldest = sent.lock().unwrap_or_else(|p| p.into_inner()).front().copied();
        // With nothing unanswered, wake now and then to see whether a request went out since.
        let deadline = oldest.map_or_else(|| Instant::now() + STREAM_REPLY_TIMEOUT, |t| t + STREAM_REPLY_TIMEOUT);
        tokio::select! {
            // `Streaming::message` keeps its progress in `replies`, so losing the race loses nothing.
            reply = replies.message() => {
                sent.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                return match reply {
                    Ok(None) => None,
                    Err(status) => Some(Err(unreachable(status))),
                    Ok(Some(reply)) => Some(append_result(&reply)),
                };
            }
            _ = tokio::time::sleep_until(deadline) => {
                if oldest.is_some() {
                    return Some(Err(unreachable(format!(
                        "no AppendEntries result within {STREAM_REPLY_TIMEOUT:?}"
                    ))));
                }
            }
        }
    }
}

/// The results of a heartbeat worker's requests (it sends one per stream) sent through the
/// peer's heartbeat queue; the first failure ends them, as on a replication stream.
fn coalesced<'s, S>(
    heartbeats: Arc<Heartbeats>,
    addr: String,
    group: u64,
    input: S,
) -> BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>
where
    S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
{
    let results = futures::stream::unfold(Some(input), move |input| {
        let (heartbeats, addr) = (heartbeats.clone(), addr.clone());
        async move {
            let mut input = input?;
            let request = input.next().await?;
            let result = match codec::to_bytes(&request) {
                Err(err) => Err(network_error(err)),
                Ok(data) => match heartbeats
                    .send(&addr, RaftPayload { data: data.into(), error: false, group, load: None })
                    .await
                {
                    Err(err) => Err(unreachable(err)),
                    Ok(reply) => append_result(&reply),
                },
            };
            let go_on = matches!(result, Ok(Ok(_)));
            Some((result, go_on.then_some(input)))
        }
    });
    Box::pin(results)
}

impl Network {
    /// Fails at once if the target's process is known gone (each call would be a connection
    /// refused, and openraft then retries at its back-off's pace).
    fn refuse_if_gone(&self) -> Result<(), RPCError<TypeConfig>> {
        if self.downs.is_down(self.target) {
            return Err(unreachable(format!("node {}'s process is gone", self.target)));
        }
        Ok(())
    }

    async fn call_raw(&mut self, rpc: Rpc, data: Vec<u8>, option: &RPCOption) -> Result<Vec<u8>, RPCError<TypeConfig>> {
        let client = match &mut self.client {
            Ok(client) => client,
            Err(err) => return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(err.clone())))),
        };
        // A group is one range, with the group's id: its load goes with its lease.
        let load = match rpc {
            Rpc::TransferLeader => self.load.handoff(self.group).map(|(rates, measured)| LoadHandoff {
                rates: Some((&rates).into()),
                measured_seconds: measured.as_secs_f64(),
            }),
            _ => None,
        };
        let mut message = tonic::Request::new(RaftPayload { data: data.into(), error: false, group: self.group, load });
        message.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(message).await,
            Rpc::Vote => client.vote(message).await,
            Rpc::InstallSnapshot => client.install_snapshot(message).await,
            Rpc::TransferLeader => client.transfer_leader(message).await,
        }
        .map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?
        .into_inner();
        if reply.error {
            let text = String::from_utf8_lossy(&reply.data).into_owned();
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(text))));
        }
        Ok(reply.data.to_vec())
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let data = codec::to_bytes(request).map_err(network_error)?;
        let reply = self.call_raw(rpc, data, option).await?;
        codec::from_bytes(&reply).map_err(network_error)
    }

    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, RPCError<TypeConfig>> {
        let chunk_bytes = option.snapshot_chunk_size().unwrap_or(DEFAULT_SNAPSHOT_CHUNK_BYTES).max(1);
        let data = snapshot.snapshot.into_inner();
        let transfer = rand::random::<u64>();
        let mut offset = 0;
        loop {
            let end = (offset + chunk_bytes).min(data.len());
            let header = SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                transfer,
                offset: offset as u64,
                done: end == data.len(),
            };
            let done = header.done;
            let framed = encode_chunk(&header, &data[offset..end]).map_err(network_error)?;
            let reply = self.call_raw(Rpc::InstallSnapshot, framed, &option).await?;
            if done {
                return codec::from_bytes(&reply).map_err(network_error);
            }
            offset = end;
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Network {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if let Some((heartbeats, addr)) = self.heartbeats.clone() {
            return Box::pin(async move { Ok(coalesced(heartbeats, addr, self.group, input)) });
        }
        if !self.pipelined {
            return openraft::network::stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let mut client = self.client.clone().map_err(unreachable)?;
            // openraft applies its back-off while making a request, so the first one is made
            // before the call: a stream that cannot open is then retried at the back-off's
            // pace (see `backoff`), not at once. To a peer known gone, no call is made.
            let mut input = input;
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            };
            self.refuse_if_gone()?;
            let input = futures::stream::iter([first]).chain(input);
            let sent = SendTimes::default();
            let group = self.group;
            let outbound = {
                let sent = sent.clone();
                input.map(move |request| {
                    sent.lock().unwrap_or_else(|p| p.into_inner()).push_back(Instant::now());
                    // Encoding cannot fail for these types; an empty payload would end the
                    // stream at the follower, which the leader recovers from.
                    let data = codec::to_bytes(&request).unwrap_or_else(|err| {
                        tracing::error!(error = %err, "encoding an AppendEntries request");
                        Vec::new()
                    });
                    RaftPayload { data: data.into(), error: false, group, load: None }
                })
            };
            let replies = tokio::time::timeout(STREAM_REPLY_TIMEOUT, client.append_stream(outbound))
                .await
                .map_err(|_| unreachable(format!("replication stream not opened within {STREAM_REPLY_TIMEOUT:?}")))?
                .map_err(unreachable)?
                .into_inner();
            let results = futures::stream::unfold(Some((replies, sent)), |state| async move {
                let (mut replies, sent) = state?;
                let result = next_reply(&mut replies, &sent).await?;
                // A result that ends the follower's side ends this one too.
                let go_on = matches!(result, Ok(Ok(_)));
                Some((result, go_on.then_some((replies, sent))))
            });
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    /// To a peer known gone, replication is retried ever more slowly ([`DOWN_PEER_BACKOFF`]):
    /// every group a survivor leads would otherwise retry it several times a second, first
    /// while the survivors' CPU is taken by the elections of the groups it led, then until
    /// it is replaced. Elsewhere openraft's default.
    fn backoff(&self) -> Option<Backoff> {
        self.downs.is_down(self.target).then(|| Backoff::new(down_peer_waits()))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        // After a node's death its survivors run an election for each group it led, and each
        // would try to connect to it once more.
        self.refuse_if_gone()?;
        self.call(Rpc::Vote, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::TransferLeader, &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = self.send_snapshot(vote, snapshot, option) => sent.map_err(StreamingError::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn chunk(transfer: u64, offset: u64, done: bool) -> SnapshotChunk {
        SnapshotChunk { vote: Vote::new(1, 1), meta: SnapshotMeta::default(), transfer, offset, done }
    }

    /// A listener that accepts connections, counts and holds them, and never answers.
    async fn silent_peer() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                sockets.push(socket);
            }
        });
        (addr, accepted, held)
    }

    fn transport() -> Transport {
        let dialer = Arc::new(Dialer::new(None));
        Transport {
            heartbeats: Arc::new(Heartbeats::new(dialer.clone())),
            dialer,
            load: Arc::new(LoadTracker::new(Duration::from_secs(10))),
            downs: Arc::new(PeerDowns::default()),
        }
    }

    /// A peer the watch knows gone gets no vote request: the call fails at once, where the
    /// same call to a live peer goes out (here to a listener that never answers, so it waits).
    #[tokio::test]
    async fn a_vote_to_a_peer_known_gone_fails_without_a_call() {
        let (addr, _, held) = silent_peer().await;
        let transport = transport();
        let mut factory = NetworkFactory::new(transport.clone(), 7, true);
        let mut network = factory.new_client(2, &BasicNode { addr }).await;
        let request = || VoteRequest::new(Vote::new(3, 1), None);
        let option = || RPCOption::new(Duration::from_secs(5));

        let waiting = tokio::time::timeout(Duration::from_millis(300), network.vote(request(), option())).await;
        assert!(waiting.is_err(), "a vote to a peer not known gone is sent and waits for its answer");

        transport.downs.mark_down(2);
        let refused = tokio::time::timeout(Duration::from_millis(300), network.vote(request(), option()))
            .await
            .expect("a vote to a peer known gone fails at once");
        let err = refused.expect_err("no vote from a peer known gone");
        assert!(err.to_string().contains("node 2's process is gone"), "{err}");
        held.abort();
    }

    /// Replication to a peer known gone makes its first request (where openraft waits out its
    /// back-off), then fails without a connection; the back-off is the slower one only then.
    #[tokio::test]
    async fn replication_to_a_peer_known_gone_takes_its_request_then_fails_without_a_call() {
        let (addr, accepted, held) = silent_peer().await;
        let transport = transport();
        let mut network = NetworkFactory::new(transport.clone(), 7, true).new_client(2, &BasicNode { addr }).await;
        assert!(network.backoff().is_none(), "a peer not known gone: openraft's default back-off");
        let request = || AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(3, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        let option = || RPCOption::new(Duration::from_secs(5));

        transport.downs.mark_down(2);
        assert!(network.backoff().is_some(), "a peer known gone: the slower back-off");
        let (taken, input) = {
            let taken = Arc::new(AtomicUsize::new(0));
            let counter = taken.clone();
            let input = futures::stream::iter([request(), request()]).inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            });
            (taken, input)
        };
        let refused = tokio::time::timeout(Duration::from_millis(300), network.stream_append(input, option()))
            .await
            .expect("a stream to a peer known gone fails at once");
        let err = refused.err().expect("no stream to a peer known gone");
        assert!(err.to_string().contains("node 2's process is gone"), "{err}");
        assert_eq!(taken.load(Ordering::SeqCst), 1, "the first request was made (openraft backs off there)");

        let ended = network.stream_append(futures::stream::iter(Vec::new()), option()).await;
        assert!(ended.is_ok(), "nothing to send: an empty stream, not an error");
        tokio::task::yield_now().await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
        held.abort();
    }

    #[test]
    fn replication_to_a_peer_known_gone_backs_off_ever_more_slowly_up_to_a_cap() {
        let waits: Vec<u64> = down_peer_waits().take(6).map(|wait| wait.as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn chunks_frame_and_reassemble_in_order() {
        let framed = encode_chunk(&chunk(7, 0, false), b"abc").unwrap();
        let (header, bytes) = decode_chunk(&framed).unwrap();
        assert_eq!((header.transfer, header.offset, header.done, bytes), (7, 0, false, &b"abc"[..]));
        assert!(decode_chunk(&framed[..3]).is_err());

        let inbox = SnapshotInbox::default();
        assert!(inbox.receive(chunk(7, 0, false), b"abc").unwrap().is_none());
        let (_, snapshot) = inbox.receive(chunk(7, 3, true), b"de").unwrap().expect("complete");
        assert_eq!(snapshot.snapshot.into_inner(), b"abcde");
    }

    #[test]
    fn a_gap_or_a_stray_transfer_is_refused_and_a_restart_wins() {
        let inbox = SnapshotInbox::default();
        assert!(inbox.receive(chunk(1, 4, true), b"x").is_err(), "no transfer in progress");
        inbox.receive(chunk(1, 0, false), b"abcd").unwrap();
        assert!(inbox.receive(chunk(2, 4, true), b"x").is_err(), "another transfer's chunk");
        assert!(inbox.receive(chunk(1, 9, true), b"x").is_err(), "a gap");
        assert!(inbox.receive(chunk(1, 4, true), b"x").is_err(), "a gap drops the transfer");
        // The sender starts the snapshot over under a new transfer id.
        inbox.receive(chunk(3, 0, false), b"ab").unwrap();
        let (_, snapshot) = inbox.receive(chunk(3, 2, true), b"c").unwrap().expect("complete");
        assert_eq!(snapshot.snapshot.into_inner(), b"abc");
    }
}
