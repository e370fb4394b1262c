//! Where a Raft group's replicas should be, as pure decisions on what the group's leader
//! sees: its voters and learners, and each node's liveness and membership. The leader makes
//! one change at a time and decides again once it has committed, so every step is a valid
//! configuration and a crash between steps leaves nothing to undo.
//!
//! The rules, in order of urgency:
//! 1. a leader on a node being decommissioned hands leadership to another voter first;
//! 2. a voter on a DEAD or decommissioning node is replaced: a LIVE learner is promoted, then
//!    the voter removed (never removed first: that would shrink the quorum's margin);
//! 3. a learner on a decommissioning node is removed;
//! 4. range 1's group ([`Spread::EveryNode`]): fewer than [`MAX_VOTERS`] voters promote a LIVE
//!    learner, and every LIVE, active node that is not a member joins as a learner;
//! 5. any other group ([`Spread::Three`]): a learner on a DEAD or leaving node goes; a LIVE
//!    learner is promoted while fewer than three voters stay, and otherwise takes the place of
//!    the voter on the fullest node (by replica count) in one change (after the lease moves
//!    off it); a fourth voter on the fullest node is removed the same way; fewer than three
//!    voters that stay add a learner on the emptiest LIVE node; and otherwise (within the
//!    caller's budget) a replica moves from the group's fullest member to the emptiest node
//!    outside it when that is [`worth_moving`];
//! 6. with nothing else to do, the leader hands this group's lease on: to the voter whose
//!    node most of the range's queries come from ([`follow_target`], follow-the-workload)
//!    unless load would move it straight back; else a range that carries
//!    load ([`carries_load`]) to the LIVE voter serving the fewest queries per second as
//!    leaseholder ([`load_lease_target`]), any other, unless its queries come mostly from
//!    its leaseholder's node, to the LIVE voter leading the fewest
//!    groups when that is [`worth_moving`] ([`lease_target`]).
//!
//! A voter with nobody to replace it stays: a decommission then waits (as CockroachDB's does
//! when no node can take the replicas), and a DEAD voter keeps its place until a node joins.

use std::collections::{BTreeMap, BTreeSet};

use crate::services::membership::{Liveness, NodeMembership};
use crate::services::raft::{MAX_VOTERS, NodeId};

/// What the allocator knows of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// Its liveness as gossip sees it.
    pub liveness: Liveness,
    /// Whether the operator is decommissioning it.
    pub membership: NodeMembership,
}

impl NodeState {
    /// Whether the node must give up its replicas.
    fn must_leave(&self) -> bool {
        self.membership != NodeMembership::Active
    }

    /// Whether the node may take a voter's place.
    fn may_vote(&self) -> bool {
        self.liveness == Liveness::Live && self.membership == NodeMembership::Active
    }
}

/// One membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Hand leadership to this voter.
    TransferLeader(NodeId),
    /// Make this learner a voter.
    Promote(NodeId),
    /// Make learner `add` a voter in the place of voter `remove`, in one (joint) change.
    Replace {
        /// The learner promoted.
        add: NodeId,
        /// The voter removed.
        remove: NodeId,
    },
    /// Take this voter out of the group.
    RemoveVoter(NodeId),
    /// Take this learner out of the group.
    RemoveLearner(NodeId),
    /// Add this node to the group as a learner.
    AddLearner(NodeId),
}

/// Where a group's replicas go.
#[derive(Debug, Clone, Copy)]
pub enum Spread<'a> {
    /// On every LIVE, active node: [`MAX_VOTERS`] voters and learners on the rest (range 1,
    /// which every node reads locally: the node registry, the routing copy, the catalog).
    EveryNode,
    /// [`MAX_VOTERS`] voters on distinct nodes, placed and rebalanced by how many replicas
    /// each node holds (`replicas`; a node missing holds none).
    Three {
        /// Replicas per node across the cluster.
        replicas: &'a BTreeMap<NodeId, usize>,
        /// Whether a replica may move only to even out counts (the caller's budget of such
        /// moves); replacing and adding replicas a group lacks is never held back.
        rebalance: bool,
        /// Whether the leader was just handed the lease: with a voter too many it then
        /// removes another voter rather than hand the lease on again (two leaders whose counts
        /// disagree on which node is fullest would pass it back and forth).
        keep_lease: bool,
    },
}

/// The band around the mean count within which a node is left alone: 5% of the mean (as
/// CockroachDB's range-count rebalance threshold), at least 1. Every leader decides from its
/// own, slightly late, counts; if each chased the exact mean they would overshoot together and
/// move replicas and leases back and forth for ever.
fn band(mean: f64) -> f64 {
    (mean * 0.05).max(1.0)
}

/// Whether one replica (or lease) should move from a node holding `from` to one holding `to`,
/// when the nodes that may hold them hold `mean` on average: the source is at the band's top
/// or above, or above the mean with the target at the band's bottom or below (as CockroachDB
/// decides lease transfers), and the move evens them out (a difference of one would only swap
/// which node has more). A node at or below the mean never gives any away, so what a late
/// count sent it too many of is not passed on again and again.
pub fn worth_moving(from: usize, to: usize, mean: f64) -> bool {
    let (from, to, band) = (from as f64, to as f64, band(mean));
    from >= to + 2.0 && (from >= mean + band || (from > mean && to <= mean - band))
}

/// The mean of `counts` over the nodes that may hold a voter: those of `nodes` that may, and
/// those only `counts` knows (a node missing from `counts` holds none).
fn mean_count(counts: &BTreeMap<NodeId, usize>, nodes: &BTreeMap<NodeId, NodeState>) -> f64 {
    mean_of(counts, nodes, |count| *count as f64)
}

/// [`mean_count`] of any per-node `value`.
fn mean_of<V>(values: &BTreeMap<NodeId, V>, nodes: &BTreeMap<NodeId, NodeState>, value: impl Fn(&V) -> f64) -> f64 {
    let eligible: BTreeSet<NodeId> = (nodes.iter().filter(|(_, state)| state.may_vote()).map(|(id, _)| *id))
        .chain(values.keys().copied().filter(|id| !nodes.contains_key(id)))
        .collect();
    let total: f64 = eligible.iter().filter_map(|id| values.get(id)).map(value).sum();
    total / eligible.len().max(1) as f64
}

/// The smallest band, in queries per second, around the mean lease load: below it load is
/// noise (status polling, session records) and leases move by count alone.
const MIN_LOAD_BAND: f64 = 2.0;

/// The band around the mean lease load (queries per second) within which a node is left
/// alone: 10% of the mean (CockroachDB's QPS rebalance threshold), at least [`MIN_LOAD_BAND`].
fn load_band(mean: f64) -> f64 {
    (mean * 0.1).max(MIN_LOAD_BAND)
}

/// Whether a range serving `qps` carries enough load that only load decides where its lease
/// goes (a move by count would undo what moves by load evened out), with `loads` the
/// queries per second each node's leases serve.
pub fn carries_load(qps: f64, loads: &BTreeMap<NodeId, f64>, nodes: &BTreeMap<NodeId, NodeState>) -> bool {
    qps >= load_band(mean_of(loads, nodes, |load| *load)) / 2.0
}

/// The voter `leader` should hand the lease of a range serving `qps` to so that the queries
/// per second nodes serve as leaseholders (`loads`; a node missing serves none) even out: the
/// LIVE, active voter serving the least, when the leader is above the band around the mean
/// (or above the mean with the target below the band), and the range carries load
/// ([`carries_load`]) but less than the two nodes' difference less half the band. Each such
/// move shrinks the difference between the two nodes by at least half the band and lowers the
/// sum of squares of all loads, so moves made on true loads come to an end.
pub fn load_lease_target(
    leader: NodeId,
    voters: &BTreeSet<NodeId>,
    loads: &BTreeMap<NodeId, f64>,
    qps: f64,
    nodes: &BTreeMap<NodeId, NodeState>,
) -> Option<NodeId> {
    let load = |id: &NodeId| loads.get(id).copied().unwrap_or(0.0);
    let may_lead = |id: &NodeId| nodes.get(id).is_none_or(NodeState::may_vote);
    let (target, to) = (voters.iter())
        .filter(|id| **id != leader && may_lead(id))
        .map(|id| (*id, load(id)))
        .min_by(|(a, a_load), (b, b_load)| a_load.total_cmp(b_load).then(a.cmp(b)))?;
    let (from, mean) = (load(&leader), mean_of(loads, nodes, |load| *load));
    let band = load_band(mean);
    let overfull = from >= mean + band || (from > mean && to <= mean - band);
    (overfull && qps >= band / 2.0 && qps <= from - to - band / 2.0).then_some(target)
}

/// The share of a range's queries one node's clients must send for the range's lease to
/// follow them to that node: "mostly", and more than any other node can send at once, so two
/// nodes cannot pull a lease back and forth between them.
pub const FOLLOW_SHARE: f64 = 0.75;

/// The fewest queries per second a range must serve for where they come from to move its
/// lease: below it, a few stray requests would.
pub const FOLLOW_MIN_QPS: f64 = 1.0;

/// The node that sends at least [`FOLLOW_SHARE`] of a range's queries, given the queries per
/// second by the node they came from (`origins`), if they add up to [`FOLLOW_MIN_QPS`].
pub fn workload_source(origins: &[(NodeId, f64)]) -> Option<NodeId> {
    let total: f64 = origins.iter().map(|(_, qps)| qps.max(0.0)).sum();
    let (node, top) = origins.iter().copied().max_by(|(a, a_qps), (b, b_qps)| a_qps.total_cmp(b_qps).then(b.cmp(a)))?;
    (total >= FOLLOW_MIN_QPS && top >= FOLLOW_SHARE * total).then_some(node)
}

/// Where `leader` should hand the lease of a range serving `qps`, most of whose queries come
/// from node `source` ([`workload_source`]), so that they are served where they arrive
/// (CockroachDB's follow-the-workload): `source`, if it is another voter that may lead and
/// the move leaves a load ([`load_lease_target`] on `loads` as they would be after it) that
/// would not move the lease straight back.
pub fn follow_target(
    leader: NodeId,
    source: NodeId,
    voters: &BTreeSet<NodeId>,
    loads: &BTreeMap<NodeId, f64>,
    qps: f64,
    nodes: &BTreeMap<NodeId, NodeState>,
) -> Option<NodeId> {
    let may_lead = nodes.get(&source).is_none_or(NodeState::may_vote);
    if source == leader || !voters.contains(&source) || !may_lead {
        return None;
    }
    let mut after = loads.clone();
    *after.entry(leader).or_default() -= qps;
    *after.entry(source).or_default() += qps;
    load_lease_target(source, voters, &after, qps, nodes).is_none().then_some(source)
}

/// The next change for a group led by `leader`; `None` when the group is where it should be.
/// A node missing from `nodes` is treated as LIVE and active (it has just joined and gossip
/// has not reached it yet).
pub fn next_change(
    leader: NodeId,
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    nodes: &BTreeMap<NodeId, NodeState>,
    spread: Spread<'_>,
) -> Option<Change> {
    let state = |id: &NodeId| {
        nodes.get(id).copied().unwrap_or(NodeState { liveness: Liveness::Live, membership: NodeMembership::Active })
    };
    let leaving = |id: &NodeId| {
        let state = state(id);
        state.must_leave() || state.liveness == Liveness::Dead
    };
    let staying_voters: Vec<NodeId> = voters.iter().copied().filter(|id| !leaving(id)).collect();
    if state(&leader).must_leave() {
        let to = staying_voters.iter().copied().find(|id| *id != leader && state(id).liveness == Liveness::Live);
        return to.map(Change::TransferLeader);
    }
    let spare = learners.iter().copied().find(|id| state(id).may_vote());
    let outgoing = voters.iter().copied().find(|id| *id != leader && leaving(id));
    if let Some(outgoing) = outgoing {
        if staying_voters.len() >= MAX_VOTERS {
            return Some(Change::RemoveVoter(outgoing));
        }
        if let Some(spare) = spare {
            return Some(Change::Promote(spare));
        }
        // A group smaller than MAX_VOTERS (a cluster of fewer nodes) has no margin to keep:
        // a node being decommissioned leaves it as long as one voter stays.
        if voters.len() < MAX_VOTERS && !staying_voters.is_empty() && state(&outgoing).must_leave() {
            return Some(Change::RemoveVoter(outgoing));
        }
    }
    let Spread::Three { replicas, rebalance, keep_lease } = spread else {
        if let Some(learner) = learners.iter().copied().find(|id| state(id).must_leave()) {
            return Some(Change::RemoveLearner(learner));
        }
        if voters.len() < MAX_VOTERS
            && let Some(spare) = spare
        {
            return Some(Change::Promote(spare));
        }
        return (nodes.iter())
            .find(|(id, state)| state.may_vote() && !voters.contains(id) && !learners.contains(id))
            .map(|(id, _)| Change::AddLearner(*id));
    };
    // A learner here is on its way to a vote; one that cannot get there goes.
    if let Some(learner) = learners.iter().copied().find(|id| leaving(id)) {
        return Some(Change::RemoveLearner(learner));
    }
    let count = |id: &NodeId| replicas.get(id).copied().unwrap_or(0);
    let fullest_of = |ids: &mut dyn Iterator<Item = NodeId>| ids.max_by_key(|id| (count(id), *id));
    // The voter on the fullest node gives up its place (`give_up` says how). A leader there
    // first hands the lease to the emptiest LIVE voter, or, if it was just handed the lease,
    // has the next fullest voter give up its place instead.
    let shed_fullest = |give_up: &dyn Fn(NodeId) -> Change| {
        let fullest = fullest_of(&mut staying_voters.iter().copied())?;
        if fullest != leader {
            return Some(give_up(fullest));
        }
        let others = || staying_voters.iter().copied().filter(|id| *id != leader);
        if keep_lease {
            return fullest_of(&mut others()).map(give_up);
        }
        let to = others().filter(|id| state(id).liveness == Liveness::Live).min_by_key(|id| (count(id), *id));
        to.map(Change::TransferLeader)
    };
    if let Some(spare) = spare
        && voters.len() <= MAX_VOTERS
    {
        if staying_voters.len() < MAX_VOTERS {
            return Some(Change::Promote(spare));
        }
        // A full group's learner is a move under way: it takes the place of the voter on the
        // fullest node in one change, so the node it came to relieve is the one that gives
        // up a replica, never the newcomer (whose count, now one higher, may read fullest).
        return shed_fullest(&|remove| Change::Replace { add: spare, remove });
    }
    // One voter too many (a replacement or a move half done): the one on the fullest node goes.
    if staying_voters.len() > MAX_VOTERS {
        return shed_fullest(&Change::RemoveVoter);
    }
    let emptiest = (nodes.iter())
        .filter(|(id, state)| state.may_vote() && !voters.contains(id) && !learners.contains(id))
        .map(|(id, _)| *id)
        .min_by_key(|id| (count(id), *id))?;
    if staying_voters.len() < MAX_VOTERS {
        return Some(Change::AddLearner(emptiest));
    }
    if !rebalance {
        return None;
    }
    // Rebalancing: a replica moves from the group's fullest node to the emptiest node outside.
    let fullest = staying_voters.iter().copied().max_by_key(|id| (count(id), *id))?;
    worth_moving(count(&fullest), count(&emptiest), mean_count(replicas, nodes)).then_some(Change::AddLearner(emptiest))
}

/// The voter `leader` should hand this group's lease to so that leases even out: the LIVE,
/// active voter leading the fewest groups (`leases`; a node missing leads none), when a lease
/// is [`worth_moving`] from the leader to it.
pub fn lease_target(
    leader: NodeId,
    voters: &BTreeSet<NodeId>,
    leases: &BTreeMap<NodeId, usize>,
    nodes: &BTreeMap<NodeId, NodeState>,
) -> Option<NodeId> {
    let count = |id: &NodeId| leases.get(id).copied().unwrap_or(0);
    let may_lead = |id: &NodeId| nodes.get(id).is_none_or(NodeState::may_vote);
    let (target, fewest) = (voters.iter())
        .filter(|id| **id != leader && may_lead(id))
        .map(|id| (*id, count(id)))
        .min_by_key(|(id, leases)| (*leases, *id))?;
    worth_moving(count(&leader), fewest, mean_count(leases, nodes)).then_some(target)
}

/// Whether lease counts have held still between two maintenance passes (`before`, `now`): no
/// node's count moved by more than the band around the mean. Counts come by gossip, each as
/// of its node's last pass; while leases are moving fast (elections after a node died, a pass
/// that just handed many on) some of them are stale, and a leader evening them out would hand
/// leases to a node that already has more than it thinks, then take them back.
pub fn leases_settled(before: &BTreeMap<NodeId, usize>, now: &BTreeMap<NodeId, usize>) -> bool {
    let mean = now.values().sum::<usize>() as f64 / now.len().max(1) as f64;
    let count = |counts: &BTreeMap<NodeId, usize>, id: &NodeId| counts.get(id).copied().unwrap_or(0) as f64;
    (before.keys().chain(now.keys())).all(|id| (count(now, id) - count(before, id)).abs() <= band(mean))
}

/// Whether a group with `voters` is (under, over) replicated: fewer voters on nodes `heard`
/// from than the `known` nodes could give it (up to [`MAX_VOTERS`]; a voter on a dead or
/// unreachable node counts as missing, as in CockroachDB), or more than [`MAX_VOTERS`].
pub fn replication_problems(voters: &[NodeId], heard: impl Fn(&NodeId) -> bool, known: usize) -> (bool, bool) {
    let live_voters = voters.iter().filter(|id| heard(id)).count();
    let target = known.max(voters.len()).clamp(1, MAX_VOTERS);
    (live_voters < target, voters.len() > MAX_VOTERS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[NodeId]) -> BTreeSet<NodeId> {
        list.iter().copied().collect()
    }

    fn live() -> NodeState {
        NodeState { liveness: Liveness::Live, membership: NodeMembership::Active }
    }

    fn nodes(list: &[(NodeId, Liveness, NodeMembership)]) -> BTreeMap<NodeId, NodeState> {
        list.iter()
            .map(|(id, liveness, membership)| (*id, NodeState { liveness: *liveness, membership: *membership }))
            .collect()
    }

    #[test]
    fn leases_move_to_the_live_voter_leading_fewest_when_two_apart() {
        let voters = ids(&[1, 2, 3]);
        let leases = |list: &[(NodeId, usize)]| list.iter().copied().collect::<BTreeMap<_, _>>();
        let all_live: BTreeMap<NodeId, NodeState> = (1..=3).map(|id| (id, live())).collect();
        // Node 1 leads both groups: one goes to the lowest id among those leading none.
        assert_eq!(lease_target(1, &voters, &leases(&[(1, 2)]), &all_live), Some(2));
        // One apart: balanced enough.
        assert_eq!(lease_target(1, &voters, &leases(&[(1, 1), (2, 0), (3, 0)]), &all_live), None);
        assert_eq!(lease_target(1, &voters, &leases(&[(1, 2), (2, 1), (3, 1)]), &all_live), None);
        // The fewest wins over the lower id.
        assert_eq!(lease_target(1, &voters, &leases(&[(1, 4), (2, 2), (3, 1)]), &all_live), Some(3));
        // Eight apart but within the band around the mean (100, give or take 5): left alone.
        assert_eq!(lease_target(1, &voters, &leases(&[(1, 104), (2, 100), (3, 96)]), &all_live), None);
        // Not to a dead, draining or decommissioning voter, nor to a learner.
        let (dead, leaving) = (Liveness::Dead, NodeMembership::Decommissioning);
        let states = nodes(&[
            (1, Liveness::Live, NodeMembership::Active),
            (2, dead, NodeMembership::Active),
            (3, Liveness::Live, leaving),
        ]);
        assert_eq!(lease_target(1, &voters, &leases(&[(1, 2)]), &states), None);
        let mut draining = all_live.clone();
        draining.insert(2, NodeState { liveness: Liveness::Draining, membership: NodeMembership::Active });
        assert_eq!(lease_target(1, &voters, &leases(&[(1, 2)]), &draining), Some(3));
        assert_eq!(lease_target(1, &ids(&[1]), &leases(&[(1, 5)]), &all_live), None);
    }

    #[test]
    fn lease_counts_settle_when_no_node_moved_past_the_band() {
        let counts = |list: &[(NodeId, usize)]| list.iter().copied().collect::<BTreeMap<_, _>>();
        let steady = counts(&[(1, 3333), (2, 3334), (3, 3333)]);
        assert!(leases_settled(&steady, &steady));
        // Within 5% of the mean (about 166): a few elections or moves here and there.
        assert!(leases_settled(&steady, &counts(&[(1, 3433), (2, 3234), (3, 3333)])));
        // A node that died: the survivors won its groups, and their counts jumped.
        assert!(!leases_settled(&steady, &counts(&[(1, 4700), (2, 3334), (3, 3333)])));
        assert!(!leases_settled(&steady, &counts(&[(1, 3333), (2, 3334)])));
        // Small counts: the band is at least one lease.
        assert!(leases_settled(&counts(&[(1, 2), (2, 0)]), &counts(&[(1, 1), (2, 1)])));
        assert!(!leases_settled(&counts(&[(1, 3), (2, 0)]), &counts(&[(1, 1), (2, 2)])));
        assert!(!leases_settled(&BTreeMap::new(), &counts(&[(1, 2)])));
        assert!(leases_settled(&BTreeMap::new(), &BTreeMap::new()));
    }

    #[test]
    fn leases_move_by_load_from_an_overloaded_leader_without_overshooting() {
        let voters = ids(&[1, 2, 3]);
        let loads = |list: &[(NodeId, f64)]| list.iter().copied().collect::<BTreeMap<_, _>>();
        let all_live: BTreeMap<NodeId, NodeState> = (1..=3).map(|id| (id, live())).collect();
        // Mean 100, band 10: node 1 at 150 hands a 20 qps range to node 3, the least loaded.
        let skewed = loads(&[(1, 150.0), (2, 90.0), (3, 60.0)]);
        assert_eq!(load_lease_target(1, &voters, &skewed, 20.0, &all_live), Some(3));
        // Not a range that would leave node 3 busier than node 1 was less half the band.
        assert_eq!(load_lease_target(1, &voters, &skewed, 86.0, &all_live), None);
        assert_eq!(load_lease_target(1, &voters, &skewed, 85.0, &all_live), Some(3));
        // Nor one too light to matter (less than half the band), which moves by count.
        assert_eq!(load_lease_target(1, &voters, &skewed, 4.0, &all_live), None);
        assert!(!carries_load(4.0, &skewed, &all_live) && carries_load(5.0, &skewed, &all_live));
        // A leader within the band, or below the mean, keeps its leases.
        assert_eq!(load_lease_target(1, &voters, &loads(&[(1, 108.0), (2, 100.0), (3, 92.0)]), 6.0, &all_live), None);
        assert_eq!(load_lease_target(2, &voters, &skewed, 20.0, &all_live), None);
        // Above the mean with a target below the band: it moves.
        let low = loads(&[(1, 105.0), (2, 110.0), (3, 85.0)]);
        assert_eq!(load_lease_target(1, &voters, &low, 6.0, &all_live), Some(3));
        // A nearly idle cluster: the band is at least 2 qps, so a trickle moves nothing.
        assert_eq!(load_lease_target(1, &voters, &loads(&[(1, 3.0), (2, 1.0)]), 1.5, &all_live), None);
        // Not to a voter that may not lead.
        let mut states = all_live.clone();
        states.insert(3, NodeState { liveness: Liveness::Dead, membership: NodeMembership::Active });
        assert_eq!(load_lease_target(1, &voters, &skewed, 20.0, &states), Some(2));
    }

    #[test]
    fn the_workload_source_sends_three_quarters_of_at_least_a_query_a_second() {
        assert_eq!(workload_source(&[(2, 7.5), (1, 2.5)]), Some(2));
        assert_eq!(workload_source(&[(2, 7.4), (1, 2.6)]), None, "not three quarters");
        assert_eq!(workload_source(&[(3, 0.9)]), None, "less than a query a second");
        assert_eq!(workload_source(&[(3, 1.0)]), Some(3));
        assert_eq!(workload_source(&[(1, 5.0), (2, 5.0), (3, 5.0)]), None, "an even spread");
        assert_eq!(workload_source(&[]), None);
    }

    #[test]
    fn a_lease_follows_its_workload_unless_load_would_send_it_back() {
        let voters = ids(&[1, 2, 3]);
        let loads = |list: &[(NodeId, f64)]| list.iter().copied().collect::<BTreeMap<_, _>>();
        let all_live: BTreeMap<NodeId, NodeState> = (1..=3).map(|id| (id, live())).collect();
        // The cluster's one busy range: where it is served changes no balance.
        let one = loads(&[(1, 50.0)]);
        assert_eq!(follow_target(1, 2, &voters, &one, 50.0, &all_live), Some(2));
        assert_eq!(follow_target(1, 1, &voters, &one, 50.0, &all_live), None, "already there");
        assert_eq!(follow_target(1, 4, &voters, &one, 50.0, &all_live), None, "not a voter");
        let mut states = all_live.clone();
        states.insert(2, NodeState { liveness: Liveness::Live, membership: NodeMembership::Decommissioning });
        assert_eq!(follow_target(1, 2, &voters, &one, 50.0, &states), None, "may not lead");
        // Mean 100, band 10: node 2 taking 30 more would be at 160 and give a lease away
        // again; taking 10 more it stays within reach of the others.
        let busy = loads(&[(1, 100.0), (2, 130.0), (3, 70.0)]);
        assert_eq!(follow_target(1, 2, &voters, &busy, 30.0, &all_live), None);
        let even = loads(&[(1, 100.0), (2, 100.0), (3, 100.0)]);
        assert_eq!(follow_target(1, 2, &voters, &even, 5.0, &all_live), Some(2));
    }

    #[test]
    fn moves_are_worth_making_only_from_above_or_to_below_the_band_around_the_mean() {
        // Mean 100: the band is 5 either side.
        assert!(!worth_moving(104, 96, 100.0));
        assert!(worth_moving(106, 100, 100.0));
        assert!(worth_moving(101, 94, 100.0));
        assert!(!worth_moving(100, 94, 100.0));
        // Never a move that would only swap which node has more.
        assert!(!worth_moving(120, 119, 100.0));
        // Small counts: the band is at least 1.
        assert!(worth_moving(2, 0, 0.7));
        assert!(worth_moving(2, 0, 1.0));
        assert!(!worth_moving(2, 1, 1.0));
    }

    #[test]
    fn replication_problems_count_voters_on_nodes_heard_from() {
        let all = |_: &NodeId| true;
        assert_eq!(replication_problems(&[1, 2, 3], all, 5), (false, false));
        assert_eq!(replication_problems(&[1, 2, 3], |id| *id != 3, 5), (true, false));
        // A two-node cluster cannot give more than two.
        assert_eq!(replication_problems(&[1, 2], all, 2), (false, false));
        assert_eq!(replication_problems(&[1], all, 2), (true, false));
        // Half-way through a replacement: four voters.
        assert_eq!(replication_problems(&[1, 2, 3, 4], |id| *id != 3, 5), (false, true));
    }

    #[test]
    fn a_healthy_group_stays() {
        let all = (1..=5).map(|id| (id, live())).collect();
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[4, 5]), &all, Spread::EveryNode), None);
    }

    #[test]
    fn a_dead_voter_is_replaced_by_promoting_a_live_learner_first() {
        let states = nodes(&[
            (1, Liveness::Live, NodeMembership::Active),
            (2, Liveness::Live, NodeMembership::Active),
            (3, Liveness::Dead, NodeMembership::Active),
            (4, Liveness::Dead, NodeMembership::Active),
            (5, Liveness::Live, NodeMembership::Active),
        ]);
        // The dead learner 4 is not a candidate; the live one is.
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3]), &ids(&[4, 5]), &states, Spread::EveryNode),
            Some(Change::Promote(5))
        );
        // Once promoted, the dead voter goes.
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3, 5]), &ids(&[4]), &states, Spread::EveryNode),
            Some(Change::RemoveVoter(3))
        );
        assert_eq!(next_change(1, &ids(&[1, 2, 5]), &ids(&[4]), &states, Spread::EveryNode), None);
    }

    #[test]
    fn an_unavailable_voter_is_not_replaced_yet_and_a_dead_one_without_a_spare_stays() {
        let states = nodes(&[
            (1, Liveness::Live, NodeMembership::Active),
            (2, Liveness::Unavailable, NodeMembership::Active),
            (3, Liveness::Dead, NodeMembership::Active),
        ]);
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &states, Spread::EveryNode), None);
    }

    #[test]
    fn decommissioning_a_voter_promotes_then_removes_and_a_learner_is_removed() {
        let mut states: BTreeMap<NodeId, NodeState> = (1..=5).map(|id| (id, live())).collect();
        states.get_mut(&3).unwrap().membership = NodeMembership::Decommissioning;
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3]), &ids(&[4, 5]), &states, Spread::EveryNode),
            Some(Change::Promote(4))
        );
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3, 4]), &ids(&[5]), &states, Spread::EveryNode),
            Some(Change::RemoveVoter(3))
        );
        states.get_mut(&5).unwrap().membership = NodeMembership::Decommissioning;
        assert_eq!(
            next_change(1, &ids(&[1, 2, 4]), &ids(&[5]), &states, Spread::EveryNode),
            Some(Change::RemoveLearner(5))
        );
    }

    #[test]
    fn a_decommissioning_voter_without_a_replacement_waits() {
        let mut states: BTreeMap<NodeId, NodeState> = (1..=3).map(|id| (id, live())).collect();
        states.get_mut(&2).unwrap().membership = NodeMembership::Decommissioning;
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &states, Spread::EveryNode), None);
        // With fewer nodes than MAX_VOTERS to begin with, it can go.
        assert_eq!(next_change(1, &ids(&[1, 2]), &ids(&[]), &states, Spread::EveryNode), Some(Change::RemoveVoter(2)));
    }

    #[test]
    fn a_decommissioning_leader_hands_leadership_to_a_live_staying_voter() {
        let mut states: BTreeMap<NodeId, NodeState> = (1..=4).map(|id| (id, live())).collect();
        states.get_mut(&1).unwrap().membership = NodeMembership::Decommissioning;
        states.get_mut(&2).unwrap().liveness = Liveness::Unavailable;
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3]), &ids(&[4]), &states, Spread::EveryNode),
            Some(Change::TransferLeader(3))
        );
    }

    #[test]
    fn a_three_replica_group_fills_up_on_the_emptiest_nodes_and_rebalances_by_count() {
        let all: BTreeMap<NodeId, NodeState> = (1..=4).map(|id| (id, live())).collect();
        let counts = |list: &[(NodeId, usize)]| list.iter().copied().collect::<BTreeMap<_, _>>();
        let three = |replicas| Spread::Three { replicas, rebalance: true, keep_lease: false };
        let even = counts(&[(1, 5), (2, 5), (3, 2), (4, 0)]);
        // Too few voters: a learner on the emptiest node outside the group, then promoted.
        assert_eq!(next_change(1, &ids(&[1, 2]), &ids(&[]), &all, three(&even)), Some(Change::AddLearner(4)));
        assert_eq!(next_change(1, &ids(&[1, 2]), &ids(&[4]), &all, three(&even)), Some(Change::Promote(4)));
        // A full group's learner takes the fullest voter's place in one change; the leader on
        // the fullest node hands the lease to the emptiest voter first, unless just handed it.
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3]), &ids(&[4]), &all, three(&even)),
            Some(Change::Replace { add: 4, remove: 2 })
        );
        let leader_fullest = counts(&[(1, 7), (2, 5), (3, 2), (4, 0)]);
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3]), &ids(&[4]), &all, three(&leader_fullest)),
            Some(Change::TransferLeader(3))
        );
        let kept = Spread::Three { replicas: &leader_fullest, rebalance: true, keep_lease: true };
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3]), &ids(&[4]), &all, kept),
            Some(Change::Replace { add: 4, remove: 2 })
        );
        // Four voters: the one on the fullest node goes, after the lease if it is the leader's.
        let moved = counts(&[(1, 6), (2, 5), (3, 5), (4, 1)]);
        assert_eq!(next_change(2, &ids(&[1, 2, 3, 4]), &ids(&[]), &all, three(&moved)), Some(Change::RemoveVoter(1)));
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3, 4]), &ids(&[]), &all, three(&moved)),
            Some(Change::TransferLeader(4))
        );
        // A leader just handed the lease keeps it: the next fullest voter goes instead.
        let kept = Spread::Three { replicas: &moved, rebalance: true, keep_lease: true };
        assert_eq!(next_change(1, &ids(&[1, 2, 3, 4]), &ids(&[]), &all, kept), Some(Change::RemoveVoter(3)));
        // Rebalancing: a node above the band around the mean gives a replica to one two or more
        // below it; eight apart within the band (mean 100, give or take 5) and one apart do not.
        let uneven = counts(&[(1, 106), (2, 100), (3, 100), (4, 96)]);
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &all, three(&uneven)), Some(Change::AddLearner(4)));
        let banded = counts(&[(1, 104), (2, 100), (3, 100), (4, 96)]);
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &all, three(&banded)), None);
        // Out of the caller's budget of moves: the counts stay as they are.
        let held = Spread::Three { replicas: &uneven, rebalance: false, keep_lease: false };
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &all, held), None);
        assert_eq!(
            next_change(
                1,
                &ids(&[1, 2]),
                &ids(&[]),
                &all,
                Spread::Three { replicas: &even, rebalance: false, keep_lease: false }
            ),
            Some(Change::AddLearner(4))
        );
        let close = counts(&[(1, 5), (2, 5), (3, 5), (4, 4)]);
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &all, three(&close)), None);
        // Only three nodes: nothing to add, nothing to move.
        let small: BTreeMap<NodeId, NodeState> = (1..=3).map(|id| (id, live())).collect();
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &small, three(&uneven)), None);
        // A learner on a dead node goes; a dead voter is replaced through a new learner.
        let dead = nodes(&[(4, Liveness::Dead, NodeMembership::Active)]);
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[4]), &dead, three(&even)), Some(Change::RemoveLearner(4)));
        let mut one_dead = all.clone();
        one_dead.insert(3, NodeState { liveness: Liveness::Dead, membership: NodeMembership::Active });
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &one_dead, three(&even)), Some(Change::AddLearner(4)));
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[4]), &one_dead, three(&even)), Some(Change::Promote(4)));
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3, 4]), &ids(&[]), &one_dead, three(&even)),
            Some(Change::RemoveVoter(3))
        );
    }

    #[test]
    fn a_live_active_node_outside_the_group_joins_it_as_a_learner() {
        let mut states: BTreeMap<NodeId, NodeState> = (1..=5).map(|id| (id, live())).collect();
        states.get_mut(&4).unwrap().liveness = Liveness::Dead;
        states.get_mut(&5).unwrap().membership = NodeMembership::Decommissioning;
        assert_eq!(next_change(1, &ids(&[1, 2]), &ids(&[]), &states, Spread::EveryNode), Some(Change::AddLearner(3)));
        // Neither a dead node nor one being decommissioned is added.
        assert_eq!(next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &states, Spread::EveryNode), None);
        states.get_mut(&4).unwrap().liveness = Liveness::Live;
        assert_eq!(
            next_change(1, &ids(&[1, 2, 3]), &ids(&[]), &states, Spread::EveryNode),
            Some(Change::AddLearner(4))
        );
    }

    #[test]
    fn too_few_voters_promote_a_live_active_learner() {
        let mut states: BTreeMap<NodeId, NodeState> = (1..=3).map(|id| (id, live())).collect();
        states.get_mut(&2).unwrap().membership = NodeMembership::Decommissioned;
        assert_eq!(
            next_change(1, &ids(&[1]), &ids(&[2, 3]), &states, Spread::EveryNode),
            Some(Change::RemoveLearner(2))
        );
        assert_eq!(next_change(1, &ids(&[1]), &ids(&[3]), &states, Spread::EveryNode), Some(Change::Promote(3)));
    }
}
