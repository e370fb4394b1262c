//! Replica placement on the groups this node leads, and decommissioning: the leader applies
//! the [`allocator`]'s next change each maintenance pass (replacing voters on DEAD or
//! decommissioning nodes, removing learners of decommissioning nodes), and any node answers
//! `ranged node decommission|recommission` by writing the membership record in range 1 and
//! reporting how many replicas each node still holds.

use super::*;
use crate::services::allocator::{Change, NodeState};

/// How long one membership change may take before the next pass tries again.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many leases one maintenance pass of a node may hand on to even out load: the others
/// learn of a move only by gossip and from the new leaseholder's counts a second or so later,
/// and until then every loaded node would pick the same least loaded one.
const LOAD_MOVES_PER_PASS: usize = 1;

/// How many replicas one maintenance pass of a node may move only to even out replica
/// counts. Every leader decides from counts that miss the others' moves of the same moment:
/// unbounded, they would all fill the emptiest node at once, then empty it again.
const REBALANCES_PER_PASS: usize = 2;

/// How long a node keeps a lease it was handed before handing it on to even out lease counts
/// (CockroachDB waits too), and how long the counts must have held still before any lease is
/// moved for them: lease counts gossiped a moment ago may already be out of date, and two
/// nodes would hand leases back and forth.
const LEASE_SETTLE: Duration = Duration::from_secs(5);

/// Makes sure a replica added to `group` is caught up from a snapshot of the group as it is
/// now, never by replaying older entries: the node may already hold newer rows of keys the
/// group has split off since (in the groups they went to), or replicas of those groups, and
/// a replay of the splits and writes would clash with them. So the log is purged up to
/// everything applied, and the new replica's first message is a snapshot taken after it.
async fn purge_before_adding(group: &Replica) -> Result<()> {
    let Some(applied) = group.raft.metrics().borrow_watched().last_applied else { return Ok(()) };
    let unavailable =
        |err: &dyn std::fmt::Display| Error::Unavailable(format!("purging the log before a new replica: {err}"));
    group.raft.trigger().snapshot().await.map_err(|err| unavailable(&err))?;
    let wait = group.raft.wait(Some(CHANGE_TIMEOUT));
    let built = |m: &openraft::RaftMetrics<TypeConfig>| m.snapshot.is_some_and(|s| s.index >= applied.index);
    wait.metrics(built, "a snapshot of everything applied").await.map_err(|err| unavailable(&err))?;
    group.raft.trigger().purge_log(applied.index).await.map_err(|err| unavailable(&err))?;
    let wait = group.raft.wait(Some(CHANGE_TIMEOUT));
    let purged = |m: &openraft::RaftMetrics<TypeConfig>| m.purged.is_some_and(|p| p.index >= applied.index);
    wait.metrics(purged, "the log purged").await.map_err(|err| unavailable(&err))?;
    Ok(())
}

/// Proposes the membership change `members` on `group` and waits up to [`CHANGE_TIMEOUT`]
/// for both halves of it to commit; `what` names the change in the error.
async fn commit_members(group: &Replica, members: ChangeMembers<NodeId, BasicNode>, what: &str) -> Result<Placed> {
    let outcome = match tokio::time::timeout(CHANGE_TIMEOUT, group.raft.change_membership(members, false)).await {
        Ok(result) => result.map(|_| Placed::Changed).map_err(|err| err.to_string()),
        Err(_) => Err("timed out".to_string()),
    };
    outcome.map_err(|err| Error::Unavailable(format!("{what}: {err}")))
}

/// The replica and lease counts per node one maintenance pass decides on, updated by the
/// changes it makes.
pub(super) struct PassCounts {
    replicas: BTreeMap<NodeId, usize>,
    leases: BTreeMap<NodeId, usize>,
    /// Queries per second each node serves as leaseholder.
    loads: BTreeMap<NodeId, f64>,
    /// Queries per second of each group this node leads.
    group_qps: HashMap<u64, f64>,
    /// Replica moves this pass may still make only to even out counts.
    rebalances: usize,
    /// Lease moves this pass may still make to even out load.
    load_moves: usize,
    /// Whether lease counts held still for [`LEASE_SETTLE`] ([`PassCounts::compare_leases`]):
    /// only then are leases moved to even out counts.
    leases_settled: bool,
    /// The node records this pass last read, and when (see [`NODE_RECORDS_REUSE`]).
    records: Option<(Instant, Arc<NodeRecords>)>,
}

/// How long one maintenance pass reuses the node records it read. A pass over a node's
/// thousands of groups reads them far more often than nodes' states change, and each read
/// parses every node's gossiped descriptor; a pass long enough to outlast this reads afresh.
const NODE_RECORDS_REUSE: Duration = Duration::from_millis(500);

/// Range 1's records of the nodes and gossip's view of them.
struct NodeRecords {
    registered: Vec<NodeId>,
    memberships: BTreeMap<NodeId, NodeMembership>,
    peers: HashMap<NodeId, membership::GossipPeer>,
}

/// What this node serves as leaseholder: how many groups it leads, their queries per second,
/// and the queries per second of each group by id.
pub(super) struct LeaseLoad {
    pub(super) leases: usize,
    pub(super) qps: f64,
    groups: HashMap<u64, f64>,
}

impl PassCounts {
    /// Compares this pass's lease counts with those the passes of the last [`LEASE_SETTLE`]
    /// started from (`history`, to which this pass's are added): counts are settled if none
    /// moved past the band since. A window, not the previous pass alone: while elections hand
    /// out leases at a few hundred a second, one pass's counts differ from the last one's by
    /// about a band, and those a peer gossips stay behind for seconds.
    pub(super) fn compare_leases(&mut self, history: &mut LeaseCountHistory) {
        let now = Instant::now();
        let old = |at: &Instant| now.duration_since(*at) >= LEASE_SETTLE;
        // The newest sample old enough is kept: it shows the window is covered.
        while history.get(1).is_some_and(|(at, _)| old(at)) {
            history.pop_front();
        }
        self.leases_settled = history.front().is_some_and(|(at, _)| old(at))
            && history.iter().all(|(_, before)| allocator::leases_settled(before, &self.leases));
        history.push_back((now, self.leases.clone()));
    }

    /// Counts `change`, made by node `leader` on a group serving `qps`.
    fn record(&mut self, leader: NodeId, change: Change, qps: f64) {
        let less = |count: &mut usize| *count = count.saturating_sub(1);
        match change {
            Change::AddLearner(id) => *self.replicas.entry(id).or_default() += 1,
            Change::RemoveVoter(id) | Change::RemoveLearner(id) => less(self.replicas.entry(id).or_default()),
            Change::TransferLeader(to) => {
                less(self.leases.entry(leader).or_default());
                *self.leases.entry(to).or_default() += 1;
                *self.loads.entry(leader).or_default() -= qps;
                *self.loads.entry(to).or_default() += qps;
            }
            Change::Replace { remove, .. } => less(self.replicas.entry(remove).or_default()),
            Change::Promote(_) => {}
        }
    }
}

/// The lease counts recent maintenance passes started from, oldest first, and when.
pub(super) type LeaseCountHistory = VecDeque<(Instant, BTreeMap<NodeId, usize>)>;

/// What one placement step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placed {
    /// Nothing was needed (or possible now).
    Nothing,
    /// A membership change committed.
    Changed,
    /// The lease was handed to another node: this node no longer leads the group.
    LeaseMoved,
}

/// One node's decommissioning progress (CockroachDB's `DecommissionStatusResponse.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecommissionStatus {
    /// The node.
    pub node_id: NodeId,
    /// Its RPC address.
    pub address: String,
    /// Whether gossip hears from it.
    pub is_live: bool,
    /// Replicas it still holds.
    pub replica_count: u64,
    /// Its membership.
    pub membership: NodeMembership,
    /// Whether it is draining.
    pub draining: bool,
}

impl NodeCore {
    /// [`NodeCore::node_records`] as read by this pass at most [`NODE_RECORDS_REUSE`] ago.
    async fn pass_node_records(&self, active: &Active, counts: &mut PassCounts) -> Result<Arc<NodeRecords>> {
        if let Some((at, records)) = &counts.records
            && at.elapsed() < NODE_RECORDS_REUSE
        {
            return Ok(records.clone());
        }
        let records = Arc::new(self.node_records(active).await?);
        counts.records = Some((Instant::now(), records.clone()));
        Ok(records)
    }

    /// What the allocator decides nodes' states from: range 1's membership records and node
    /// registry (this node's applied copy) and gossip, read now.
    async fn node_records(&self, active: &Active) -> Result<NodeRecords> {
        let scans = vec![Op::scan_prefix(keys::MEMBERSHIP_PREFIX, 0), Op::scan_prefix(keys::NODE_PREFIX, 0)];
        let mut results = self.read_applied(scans).await?;
        let registered: Vec<NodeId> = (results.pop().map(|r| r.rows).unwrap_or_default().into_iter())
            .filter_map(|(key, _)| keys::decode_u64(key.strip_prefix(keys::NODE_PREFIX)?))
            .collect();
        let memberships = views::membership_records(results.pop().map(|r| r.rows).unwrap_or_default());
        let peers = active.gossip.peers().await;
        Ok(NodeRecords { registered, memberships, peers })
    }

    /// The membership record and liveness of every node known to the registry, gossip or the
    /// group (whose `members` the caller has read), as the allocator takes them.
    fn node_states(
        &self,
        active: &Active,
        records: &NodeRecords,
        members: &BTreeSet<NodeId>,
    ) -> BTreeMap<NodeId, (NodeState, membership::GossipPeer)> {
        let mut ids = members.clone();
        ids.extend(records.peers.keys().copied());
        ids.extend(records.memberships.keys().copied());
        ids.extend(records.registered.iter().copied());
        ids.into_iter()
            .map(|id| {
                let peer = records.peers.get(&id).cloned().unwrap_or_else(|| active.gossip.unknown_peer(id));
                let membership = records.memberships.get(&id).copied().unwrap_or_default();
                let liveness = membership::classify(
                    peer.heard_from,
                    peer.draining,
                    membership,
                    peer.since_last_seen,
                    self.config.time_until_dead,
                );
                (id, (NodeState { liveness, membership }, peer))
            })
            .collect()
    }

    /// As the group's leader: makes the allocator's next membership change, if any, and
    /// otherwise evens out leases. The changes update `counts`, so that one pass over many
    /// groups does not send them all to the same node.
    pub(super) async fn place_replicas(
        &self,
        active: &Active,
        group: &Replica,
        counts: &mut PassCounts,
    ) -> Result<Placed> {
        let metrics = group.raft.metrics().borrow_watched().clone();
        if metrics.current_leader != Some(active.node_id) {
            return Ok(Placed::Nothing);
        }
        let membership = metrics.membership_config.membership();
        // One change at a time: a joint configuration is finished first. openraft proposes a
        // change's second, uniform half from the call that proposed the first; a call cut
        // short (its leader lost the lease, or the timeout below) leaves the group joint, and
        // no other change, nor a split, can then be made until a leader finishes it.
        if membership.get_joint_config().len() > 1 {
            // Looked at again under the lock: a change this node is making (a node joining
            // range 1) may have finished meanwhile.
            let _changes = self.membership_changes.lock().await;
            let config = group.raft.metrics().borrow_watched().membership_config.clone();
            let joint = config.membership().get_joint_config();
            let (Some(target), true) = (joint.last(), joint.len() > 1) else { return Ok(Placed::Nothing) };
            let finish = ChangeMembers::ReplaceAllVoters(target.clone());
            tracing::info!(
                node = active.node_id,
                group = group.group,
                ?target,
                "finishing a half-done membership change"
            );
            group.wake_to_propose().await;
            return commit_members(group, finish, "finishing a membership change").await;
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        // A leader that the last change left out of the voters hands leadership on once that
        // change commits; until then it changes nothing: the allocator would add its node back
        // as a learner, and openraft panics on a membership change its leaving leader makes
        // ("Only leader is allowed to call update_effective_membership", seen in the nemesis).
        if !voters.contains(&active.node_id) {
            return Ok(Placed::Nothing);
        }
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let members: BTreeSet<NodeId> = voters.union(&learners).copied().collect();
        // Read per group (or reused for at most half a second), not once per pass: a pass
        // over many groups takes a while, and a node's liveness may change meanwhile. The
        // read is of range 1's few node records, not of the node's ranges.
        let records = self.pass_node_records(active, counts).await?;
        let known = self.node_states(active, &records, &members);
        let addr_of =
            |id: NodeId| known.get(&id).and_then(|(_, peer)| peer.descriptor.as_ref()).map(|d| d.address.clone());
        let states: BTreeMap<NodeId, NodeState> = known.iter().map(|(id, (state, _))| (*id, *state)).collect();
        let settled = self.lease_held_for(active, group.group) >= LEASE_SETTLE;
        let spread = |rebalance| {
            if group.group == raft_mod::SYSTEM_GROUP {
                allocator::Spread::EveryNode
            } else {
                allocator::Spread::Three { replicas: &counts.replicas, rebalance, keep_lease: !settled }
            }
        };
        let needed = allocator::next_change(active.node_id, &voters, &learners, &states, spread(false));
        let rebalance = (needed.is_none() && counts.rebalances > 0)
            .then(|| allocator::next_change(active.node_id, &voters, &learners, &states, spread(true)))
            .flatten();
        // A lease follows its workload to the node most of its queries come from; otherwise it
        // moves by load if its range carries load, and by count if it does not, unless its
        // workload is here (a move by count would be followed straight back).
        let qps = counts.group_qps.get(&group.group).copied().unwrap_or(0.0);
        let by_load = allocator::carries_load(qps, &counts.loads, &states);
        let source = allocator::workload_source(&self.load.origins(group.group));
        let follow = source
            .and_then(|source| allocator::follow_target(active.node_id, source, &voters, &counts.loads, qps, &states))
            .filter(|_| counts.load_moves > 0);
        let lease_move = (settled && needed.is_none() && rebalance.is_none())
            .then(|| match by_load {
                _ if follow.is_some() => follow,
                true if counts.load_moves == 0 => None,
                true => allocator::load_lease_target(active.node_id, &voters, &counts.loads, qps, &states),
                false if !counts.leases_settled || source == Some(active.node_id) => None,
                false => allocator::lease_target(active.node_id, &voters, &counts.leases, &states),
            })
            .flatten();
        let Some(change) = needed.or(rebalance).or(lease_move.map(Change::TransferLeader)) else {
            return Ok(Placed::Nothing);
        };
        counts.record(active.node_id, change, qps);
        if rebalance.is_some() {
            counts.rebalances -= 1;
        }
        let following = lease_move.is_some() && lease_move == follow;
        if lease_move.is_some() && (by_load || following) {
            counts.load_moves -= 1;
        }
        let _changes = self.membership_changes.lock().await;
        if following {
            tracing::info!(node = active.node_id, group = group.group, ?change, qps, "moving a lease to its workload");
        } else if lease_move.is_some() && by_load {
            tracing::info!(node = active.node_id, group = group.group, ?change, qps, "moving a lease for load");
        } else {
            tracing::info!(node = active.node_id, group = group.group, ?change, "changing the Raft group's members");
        }
        let raft = &group.raft;
        group.wake_to_propose().await;
        let members = match change {
            Change::TransferLeader(to) => {
                raft.trigger()
                    .transfer_leader(to)
                    .await
                    .map_err(|err| Error::Unavailable(format!("{change:?}: {err}")))?;
                // The others decide on these counts: tell them now, not at the next pass.
                let leases = counts.leases.get(&active.node_id).copied().unwrap_or(0);
                active.gossip.set_lease_load(leases, counts.loads.get(&active.node_id).copied().unwrap_or(0.0)).await;
                return Ok(Placed::LeaseMoved);
            }
            Change::AddLearner(id) => {
                let Some(addr) = addr_of(id) else { return Ok(Placed::Nothing) };
                if group.group != raft_mod::SYSTEM_GROUP {
                    purge_before_adding(group).await?;
                }
                ChangeMembers::AddNodes(BTreeMap::from([(id, BasicNode::new(&addr))]))
            }
            Change::Promote(id) => ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            Change::Replace { add, remove } => {
                let mut next = voters.clone();
                next.remove(&remove);
                next.insert(add);
                ChangeMembers::ReplaceAllVoters(next)
            }
            Change::RemoveVoter(id) => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            Change::RemoveLearner(id) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
        };
        commit_members(group, members, &format!("{change:?}")).await
    }

    /// The counts a maintenance pass starts from: replicas per node from the routing copy,
    /// leases and their load per node as each node gossips them (each node sees the leaders
    /// only of the groups it holds, so the counts must come from the leaders themselves, or
    /// two nodes would hand a lease back and forth) and this node's own (`own`).
    pub(super) async fn pass_counts(&self, active: &Active, own: LeaseLoad) -> Result<PassCounts> {
        let replicas = self.meta_routes(active).await?.replica_counts();
        let peers = active.gossip.peers().await;
        let mut leases = BTreeMap::new();
        let mut loads = BTreeMap::new();
        for (id, peer) in peers {
            leases.extend(peer.leases.map(|count| (id, count)));
            loads.extend(peer.lease_qps.map(|qps| (id, qps)));
        }
        leases.insert(active.node_id, own.leases);
        loads.insert(active.node_id, own.qps);
        Ok(PassCounts {
            replicas,
            leases,
            loads,
            group_qps: own.groups,
            rebalances: REBALANCES_PER_PASS,
            load_moves: LOAD_MOVES_PER_PASS,
            leases_settled: false,
            records: None,
        })
    }

    /// How long this node has led `group` by its lease history (zero if it does not).
    fn lease_held_for(&self, active: &Active, group: u64) -> Duration {
        let histories = self.lease_history.lock().unwrap_or_else(|p| p.into_inner());
        let Some(last) = histories.get(&group).and_then(|history| history.back()) else { return Duration::ZERO };
        if last.leader_id != active.node_id {
            return Duration::ZERO;
        }
        let now = crate::services::clock::unix_nanos(SystemTime::now());
        Duration::from_nanos(now.saturating_sub(last.start).max(0) as u64)
    }

    /// The groups this node leads and the queries per second they serve, as its load tracker
    /// counted them.
    pub(super) fn lease_load(&self, active: &Active) -> LeaseLoad {
        let rates: HashMap<u64, f64> = self.load.metric_rates(LoadMetric::Queries).into_iter().collect();
        let groups: HashMap<u64, f64> = match rates.is_empty() {
            true => HashMap::new(),
            false => active.state.with_shared(|shared| {
                let mut groups = HashMap::new();
                for desc in shared.ranges.iter() {
                    if let (Some(qps), Some(group)) = (rates.get(&desc.range_id), shared.groups.of_key(&desc.start_key))
                    {
                        *groups.entry(group).or_insert(0.0) += qps;
                    }
                }
                groups
            }),
        };
        let leads = |group: &Arc<Replica>| group.raft.metrics().borrow_watched().current_leader == Some(active.node_id);
        let led: Vec<u64> = (active.replicas.all().iter())
            .filter(|group| !group.is_removed() && leads(group))
            .map(|group| group.group)
            .collect();
        let qps = led.iter().filter_map(|group| groups.get(group)).sum();
        LeaseLoad { leases: led.len(), qps, groups }
    }

    /// Whether another node, asked, says this node holds no replica any more. Asked of the
    /// members this node knows: their views lag towards configurations that still held this
    /// node (a node leaving is never added back), so a "none" is never early.
    pub(super) async fn removed_by_the_others(&self, active: &Active, membership: &raft_mod::StoredMembership) -> bool {
        let request = pb::DecommissionRequest { node_ids: vec![active.node_id], target: 0 };
        for (id, node) in membership.membership().nodes() {
            if *id == active.node_id {
                continue;
            }
            let Ok(mut client) = self.node_client(&node.addr) else { continue };
            if let Ok(reply) = client.decommission(request.clone()).await {
                return reply.into_inner().status.iter().all(|s| s.replica_count == 0);
            }
        }
        false
    }

    /// This node's own membership, read at most [`OWN_MEMBERSHIP_REUSE`] ago: each of its
    /// replicas checks it every [`MEMBERSHIP_RECHECK`], thousands of reads of range 1 a
    /// second on a node holding 10,000 ranges if each read its own.
    pub(super) async fn own_membership(&self, active: &Active) -> Result<NodeMembership> {
        if let Some((at, membership)) = *self.own_membership.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < OWN_MEMBERSHIP_REUSE
        {
            return Ok(membership);
        }
        let membership = self.membership_of(active.node_id).await?;
        *self.own_membership.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), membership));
        Ok(membership)
    }

    /// The membership record of node `id` in this node's applied copy of range 1.
    pub(super) async fn membership_of(&self, id: NodeId) -> Result<NodeMembership> {
        let rows = self.read_applied(vec![Op::Get { key: keys::membership_key(id) }]).await?;
        match rows.into_iter().next().and_then(|r| r.value) {
            Some(value) => serde_json::from_slice(&value).map_err(Error::internal),
            None => Ok(NodeMembership::Active),
        }
    }

    /// Sets the membership of `node_ids` to `target` (if given) and reports each one's
    /// progress. DECOMMISSIONED needs the node to hold no replica; a decommissioned node
    /// cannot be recommissioned (its replicas are gone), as in CockroachDB.
    pub async fn decommission(
        &self,
        node_ids: &[NodeId],
        target: Option<NodeMembership>,
    ) -> Result<Vec<DecommissionStatus>> {
        let active = self.active()?.clone();
        if node_ids.is_empty() {
            return Err(Error::InvalidArgument("no node ids given".into()));
        }
        let mut statuses = self.decommission_status(&active, node_ids).await?;
        if let Some(target) = target {
            let mut ops = Vec::new();
            for status in &statuses {
                match (status.membership, target) {
                    (NodeMembership::Decommissioned, NodeMembership::Active) => {
                        return Err(Error::FailedPrecondition(format!(
                            "node {} is decommissioned and cannot be recommissioned",
                            status.node_id
                        )));
                    }
                    (NodeMembership::Active, NodeMembership::Decommissioned) => {
                        return Err(Error::FailedPrecondition(format!(
                            "node {} must be decommissioning before it is decommissioned",
                            status.node_id
                        )));
                    }
                    (_, NodeMembership::Decommissioned) if status.replica_count > 0 => {
                        return Err(Error::FailedPrecondition(format!(
                            "node {} still holds {} replicas",
                            status.node_id, status.replica_count
                        )));
                    }
                    _ => {}
                }
                let value = serde_json::to_vec(&target).map_err(Error::internal)?;
                ops.push(Op::Put { key: keys::membership_key(status.node_id), value });
            }
            self.kv_batch(ops, None).await?;
            for status in &mut statuses {
                status.membership = target;
            }
        }
        Ok(statuses)
    }

    async fn decommission_status(&self, active: &Active, node_ids: &[NodeId]) -> Result<Vec<DecommissionStatus>> {
        // Each group's members and how many ranges it holds: this node's view of the groups it
        // holds, the routing copy's of the others (a node holds replicas of groups this one
        // does not).
        let ranges_by_group = active.ranges_by_group();
        let mut groups: Vec<(BTreeSet<NodeId>, u64)> = (active.replicas.all().iter())
            .filter(|group| !group.is_removed())
            .map(|group| {
                let membership = group.raft.metrics().borrow_watched().membership_config.clone();
                let members = membership.membership().nodes().map(|(id, _)| *id).collect();
                (members, ranges_by_group.get(&group.group).map_or(0, Vec::len) as u64)
            })
            .collect();
        let routes = self.meta_routes(active).await?;
        for group in routes.index.ids().into_iter().filter(|group| !active.holds(*group)) {
            groups.push((routes.members(group).into_iter().collect(), routes.ranges_of(group) as u64));
        }
        let members: BTreeSet<NodeId> = groups.iter().flat_map(|(members, _)| members.iter().copied()).collect();
        let mut states = self.node_states(active, &self.node_records(active).await?, &members);
        let mut out = Vec::new();
        for id in node_ids {
            let Some((state, peer)) = states.remove(id) else {
                return Err(Error::NotFound(format!("node {id} does not exist")));
            };
            out.push(DecommissionStatus {
                node_id: *id,
                address: peer.descriptor.map(|d| d.address).unwrap_or_default(),
                is_live: peer.heard_from,
                // A member of a group holds a replica of each of its ranges.
                replica_count: groups
                    .iter()
                    .filter(|(members, _)| members.contains(id))
                    .map(|(_, ranges)| ranges)
                    .sum(),
                membership: state.membership,
                draining: peer.draining,
            });
        }
        Ok(out)
    }
}
