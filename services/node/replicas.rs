//! The replicas a node holds, by Raft group id (a range's id is its group's id): each one's
//! openraft instance, its state-machine view for local reads, and the inbox that reassembles
//! the snapshots sent to it. The Raft transport, the KV router and the status views find a
//! replica here, so that adding and removing groups (splits, rebalancing, replica GC) touches
//! one map instead of every caller. Every node holds range 1's group; the others are where
//! their leaseholders placed them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use openraft::Raft;

use crate::services::engine::Engine;
use crate::services::error::{Error, Result};
use crate::services::raft::log_store::LogStore;
use crate::services::raft::network::{NetworkFactory, SnapshotInbox, Transport};
use crate::services::raft::state_machine::{StateMachine, StateStore};
use crate::services::raft::{self as raft_mod, GroupLayout, NodeId, TypeConfig};

use super::kv_router::ReadLease;

/// This node's replica of one Raft group.
pub struct Replica {
    /// The group's id.
    pub group: u64,
    /// The group's openraft instance on this node.
    pub raft: Raft<TypeConfig, StateMachine>,
    /// The state machine, for local reads.
    pub state: StateMachine,
    /// Snapshot chunks being received from the group's leader.
    pub snapshot_inbox: SnapshotInbox,
    /// While this node leads the group: its right to serve reads without a quorum round.
    pub(super) read_lease: Mutex<Option<ReadLease>>,
    /// Set once the group's other members say this node is no longer one of them: a removed
    /// replica hears no more from the group, so its own view would list it forever.
    removed: AtomicBool,
    /// Whether its Raft clock runs (see [`super::quiescence`]).
    clock: Mutex<ClockState>,
    /// When this node started the replica.
    pub started: Instant,
}

/// Whether a replica's Raft clock (openraft's tick: its election timer and, on the leader,
/// heartbeats) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Ticking: a follower campaigns when its leader goes quiet, a leader sends heartbeats.
    Running,
    /// Stopped while the group is idle, by agreement with its leader `leader` (on the leader
    /// itself too), when every log ended at `index`.
    Quiesced {
        /// The group's leader when it quiesced.
        leader: NodeId,
        /// The index of the last entry then.
        index: Option<u64>,
    },
    /// Stopped after a restart until `until`, so that the replica does not campaign against
    /// a leader whose group is quiesced (and sends nothing) before that leader finds it again.
    Dormant {
        /// When the clock starts unless a leader's word came first.
        until: Instant,
    },
}

#[derive(Debug)]
struct ClockState {
    clock: Clock,
    /// Bumped on every wake: a quiescence decided on metrics read before a wake is dropped.
    activity: u64,
    /// The activity count at which the group was let quiesce as soon as it is idle (see
    /// [`Replica::quiesce_early`]); any wake since voids it.
    early: Option<u64>,
}

/// How a node starts a replica's Raft instance.
pub struct ReplicaSetup<'a> {
    /// This node's id (its Raft id in every group).
    pub node_id: NodeId,
    /// The cluster's id (openraft's cluster name).
    pub cluster_id: &'a str,
    /// The store whose write-ahead log the replica shares.
    pub engine: &'a Engine,
    /// The node's applied data, which every replica's state machine shares.
    pub state: &'a StateStore,
    /// What the replica's Raft messages go out on.
    pub transport: Transport,
    /// Whether appends stream (pipelined) or go one at a time per follower.
    pub pipelined: bool,
}

impl Replica {
    /// Starts this node's replica of `layout`'s group over the shared store: its log in the
    /// store's write-ahead log under the group's id, its messages tagged with it.
    pub async fn start(setup: &ReplicaSetup<'_>, layout: &GroupLayout) -> Result<Replica> {
        Self::start_group(setup, layout.id, Some(layout.span.clone()), &layout.initial).await
    }

    /// Starts this node's replica of `group`, created by a split (its state is in the store)
    /// or learnt of from its leader (`span` `None` and nothing stored: it starts empty and is
    /// caught up by snapshot).
    pub async fn start_group(
        setup: &ReplicaSetup<'_>,
        group: u64,
        span: Option<crate::services::raft::state_machine::Span>,
        initial: &[crate::services::ranges::RangeDescriptor],
    ) -> Result<Replica> {
        let state = setup.state.group(group, span, initial)?;
        let log = LogStore::new(setup.engine.log.clone(), group);
        let config = Arc::new(raft_mod::config(setup.cluster_id)?);
        let network = NetworkFactory::new(setup.transport.clone(), group, setup.pipelined);
        let raft = Raft::new(setup.node_id, config, network, log, state.clone()).await.map_err(Error::internal)?;
        state.started();
        Ok(Replica {
            group,
            raft,
            state,
            snapshot_inbox: SnapshotInbox::default(),
            read_lease: Mutex::new(None),
            removed: AtomicBool::new(false),
            clock: Mutex::new(ClockState { clock: Clock::Running, activity: 0, early: None }),
            started: Instant::now(),
        })
    }

    fn clock_state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The replica's clock and its activity count.
    pub fn clock(&self) -> (Clock, u64) {
        let state = self.clock_state();
        (state.clock, state.activity)
    }

    /// Starts the Raft clock if stopped: before a proposal on the leader, on a message that
    /// shows the group active again, or when its leader is gone. Whether it was stopped.
    pub fn wake(&self) -> bool {
        let mut state = self.clock_state();
        state.activity += 1;
        if state.clock == Clock::Running {
            return false;
        }
        state.clock = Clock::Running;
        self.raft.runtime_config().tick(true);
        true
    }

    /// Wakes the group for a proposal on its leader. A leader whose clock was stopped sent no
    /// heartbeats, so its leader lease has run out, and openraft refuses proposals ("forward
    /// to leader: none") until a quorum acknowledges it again: a heartbeat round (the one a
    /// linearizable read makes) renews it first, instead of a refused proposal and a retry.
    pub async fn wake_to_propose(&self) {
        if self.wake() {
            let renew = self.raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex);
            // A failed renewal is left to the proposal to report.
            let _ = tokio::time::timeout(raft_mod::ELECTION_TIMEOUT_MAX, renew).await;
        }
    }

    /// Lets the group quiesce as soon as its followers have its whole log, without first
    /// seeing no proposal for `QUIESCE_AFTER`: for a leader just elected in the place of one
    /// whose node died. Its group was quiesced before and nothing has been proposed to it, and
    /// thousands of such groups heartbeating for seconds would slow the elections still to
    /// come. A wake (a proposal) voids it.
    pub fn quiesce_early(&self) {
        let mut state = self.clock_state();
        state.early = Some(state.activity);
    }

    /// Whether [`Replica::quiesce_early`] holds: nothing woke the group since.
    pub fn may_quiesce_early(&self) -> bool {
        let state = self.clock_state();
        state.early == Some(state.activity)
    }

    /// Stops the Raft clock as `clock` (not [`Clock::Running`]), unless the replica was woken
    /// since `activity` was read (`None`: whatever happened since).
    pub fn stop_clock(&self, clock: Clock, activity: Option<u64>) -> bool {
        let mut state = self.clock_state();
        if clock == Clock::Running || activity.is_some_and(|seen| seen != state.activity) {
            return false;
        }
        state.clock = clock;
        self.raft.runtime_config().tick(false);
        true
    }

    /// Whether the group has removed this replica (it then reports nothing as its own).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    pub(super) fn mark_removed(&self) {
        self.removed.store(true, Ordering::SeqCst);
    }
}

/// The replicas of one node.
#[derive(Default)]
pub struct Replicas {
    by_group: RwLock<BTreeMap<u64, Arc<Replica>>>,
}

impl Replicas {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Replica>>> {
        self.by_group.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This node's replica of `group`, if it holds one.
    pub fn get(&self, group: u64) -> Option<Arc<Replica>> {
        self.read().get(&group).cloned()
    }

    /// Adds a replica; refused if the node already holds one of its group (two instances of
    /// one group on a node would each vote and append on their own).
    pub fn insert(&self, replica: Replica) -> Result<Arc<Replica>> {
        let mut by_group = self.by_group.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if by_group.contains_key(&replica.group) {
            return Err(Error::Internal(format!("a replica of Raft group {} is already running", replica.group)));
        }
        let replica = Arc::new(replica);
        by_group.insert(replica.group, replica.clone());
        Ok(replica)
    }

    /// Takes `group`'s replica out (replica GC); requests and messages no longer find it.
    pub fn remove(&self, group: u64) -> Option<Arc<Replica>> {
        self.by_group.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&group)
    }

    /// Every replica, by group id.
    pub fn all(&self) -> Vec<Arc<Replica>> {
        self.read().values().cloned().collect()
    }
}
