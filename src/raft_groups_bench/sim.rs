//! The simulated cluster of `ranged bench raft-groups`: a replica's state machine holding no
//! data, the simulated nodes, and the in-process router standing in for the Raft transport
//! (it calls the target instance directly and counts what it delivers).

use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::{Stream, TryStreamExt};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder, ServerState};

use super::GroupRaft;
use crate::services::raft::{
    CommandResponse, LogId, NodeId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

#[derive(Debug, Clone, Copy)]
pub enum Rpc {
    /// AppendEntries without entries: a heartbeat (or a probe of where a follower's log ends).
    Heartbeat,
    /// AppendEntries with entries.
    Append,
    /// RequestVote and pre-vote.
    Vote,
    /// A whole snapshot.
    Snapshot,
}

impl Rpc {
    /// The number of kinds.
    pub const KINDS: usize = 4;
}

/// The state machine of one replica here: no data, only what openraft reads back.
#[derive(Debug, Clone, Default)]
pub(super) struct MemStateMachine {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl MemStateMachine {
    /// The state holds no data, so a snapshot at the applied point is empty and always current.
    fn snapshot(&self) -> Snapshot {
        let meta = SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone() };
        Snapshot { meta, snapshot: SnapshotData::default() }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemStateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        Ok(self.snapshot())
    }
}

impl RaftStateMachine<TypeConfig> for MemStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), std::io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), std::io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, std::io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            self.last_applied = Some(entry.log_id);
            if let EntryPayload::Membership(membership) = entry.payload {
                self.membership = StoredMembership::new(Some(entry.log_id), membership);
            }
            if let Some(responder) = responder {
                responder.send(CommandResponse::None);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, _snapshot: SnapshotData) -> Result<(), std::io::Error> {
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, std::io::Error> {
        Ok(self.last_applied.map(|_| self.snapshot()))
    }
}

/// One simulated node: its instance of every group, and whether it has been stopped.
pub(super) struct SimNode {
    pub(super) groups: Vec<OnceLock<GroupRaft>>,
    pub(super) down: AtomicBool,
}

/// Every node's instances, and a count of the RPCs delivered between them.
pub(super) struct Router {
    pub(super) nodes: Vec<SimNode>,
    pub(super) delivered: [AtomicU64; Rpc::KINDS],
}

impl Router {
    pub(super) fn new(nodes: usize, groups: usize) -> Self {
        Router {
            nodes: (0..nodes)
                .map(|_| SimNode {
                    groups: (0..groups).map(|_| OnceLock::new()).collect(),
                    down: AtomicBool::new(false),
                })
                .collect(),
            delivered: Default::default(),
        }
    }

    pub(super) fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[id as usize - 1]
    }

    /// Node `id`'s instance of `group`; group ids start at 1 (0 is the log's own).
    pub(super) fn raft(&self, id: NodeId, group: u64) -> Option<&GroupRaft> {
        self.node(id).groups[group as usize - 1].get()
    }

    pub(super) fn node_ids(&self) -> impl Iterator<Item = NodeId> + use<> {
        1..=self.nodes.len() as NodeId
    }

    pub(super) fn group_ids(&self) -> impl Iterator<Item = u64> + use<> {
        1..=self.nodes[0].groups.len() as u64
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &GroupRaft> {
        self.nodes.iter().flat_map(|node| node.groups.iter().filter_map(OnceLock::get))
    }

    pub(super) fn delivered(&self) -> [u64; Rpc::KINDS] {
        std::array::from_fn(|kind| self.delivered[kind].load(Ordering::Relaxed))
    }

    /// The node `group`'s leader runs on, among nodes not stopped: the claimant with the
    /// highest term, since a deposed leader may not know it yet.
    pub(super) fn leader(&self, group: u64) -> Option<NodeId> {
        self.node_ids()
            .filter(|&id| !self.node(id).down.load(Ordering::Relaxed))
            .filter_map(|id| {
                let metrics = self.raft(id, group)?.metrics();
                let metrics = metrics.borrow_watched();
                (metrics.state == ServerState::Leader).then_some((metrics.current_term, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    pub(super) fn leaders(&self) -> Vec<Option<NodeId>> {
        self.group_ids().map(|group| self.leader(group)).collect()
    }

    /// Whether every instance of every group has applied the same last entry.
    pub(super) fn all_applied_alike(&self) -> bool {
        self.group_ids().all(|group| {
            let mut applied = self
                .node_ids()
                .map(|id| self.raft(id, group).and_then(|raft| raft.metrics().borrow_watched().last_applied));
            let first = applied.next().flatten();
            first.is_some() && applied.all(|other| other == first)
        })
    }
}

/// Creates the connection of one node's instance of one group to its peers.
pub(super) struct NetworkFactory {
    pub(super) router: Arc<Router>,
    pub(super) from: NodeId,
    pub(super) group: u64,
}

/// One instance's connection to one peer.
pub(super) struct Network {
    pub(super) router: Arc<Router>,
    pub(super) from: NodeId,
    pub(super) target: NodeId,
    pub(super) group: u64,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Network {
        Network { router: self.router.clone(), from: self.from, target, group: self.group }
    }
}

pub(super) fn unreachable(err: impl fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(err.to_string())))
}

impl Network {
    /// The target instance, counting the RPC as delivered; a stopped node at either end is
    /// unreachable, as a killed process would be.
    fn deliver(&self, kind: Rpc) -> Result<&GroupRaft, RPCError<TypeConfig>> {
        let stopped = |id| self.router.node(id).down.load(Ordering::Relaxed);
        if stopped(self.from) || stopped(self.target) {
            return Err(unreachable(format!("node {} is stopped", self.target)));
        }
        let raft = self.router.raft(self.target, self.group).ok_or_else(|| unreachable("no such group"))?;
        self.router.delivered[kind as usize].fetch_add(1, Ordering::Relaxed);
        Ok(raft)
    }
}

impl RaftNetworkV2<TypeConfig> for Network {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let kind = if rpc.entries.is_empty() { Rpc::Heartbeat } else { Rpc::Append };
        self.deliver(kind)?.append_entries(rpc).await.map_err(unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.deliver(Rpc::Vote)?.vote(rpc).await.map_err(unreachable)
    }

    // The default grants every pre-vote; delivered, the bench stays right if pre-vote is enabled.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.deliver(Rpc::Vote)?.pre_vote(rpc).await.map_err(unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.deliver(Rpc::Snapshot)?;
        raft.install_full_snapshot(vote, snapshot).await.map_err(|err| unreachable(err).into())
    }
}
