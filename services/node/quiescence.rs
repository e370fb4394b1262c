//! Quiescence: idle Raft groups stop their clocks, so a node holding thousands of idle ranges
//! spends no CPU and no network on their heartbeats and election timers.
//!
//! A group's leader that has seen no proposal for [`QUIESCE_AFTER`] (or that was just elected
//! in a dead leader's place, see [`Replica::quiesce_early`]), with every entry applied
//! and every live member's log at its last index, asks those members (one `Quiesce` message per
//! peer for all such groups) to stop their clocks; once all have, it stops its own. It repeats
//! the message every [`REASK_EVERY`] while the group stays quiesced, so a follower that
//! restarted (and starts [`Clock::Dormant`]) is found again before its grace ends.
//!
//! A stopped clock starts again (see [`Replica::wake`]):
//! - on the leader, before any proposal (a write, a split, a membership change, a transfer);
//! - on a follower, once its log grows past the quiesced index (the leader is proposing), on a
//!   vote or leadership transfer request, or a snapshot;
//! - on a follower, when gossip no longer hears from the leader's node or it is draining:
//!   the only way a quiesced follower learns that it must campaign, so a dead leader's ranges
//!   get a new one within failure detection plus an election (after a death, one voter per
//!   group campaigns and the elections are paced: see [`super::elections`]);
//! - when the group's term or leader is not the one it quiesced under, or a member refuses.
//!
//! Stopping a clock never risks consistency, only availability: a stopped replica still
//! answers every Raft message; it does not campaign and, as leader, sends no heartbeats.
//! Reads on a quiesced leader renew their lease with one heartbeat round on demand
//! (`ensure_linearizable`), which does not wake the group.

use super::*;

use crate::pb::raft_service_client::RaftServiceClient;

/// How long a group must see no proposal before its leader quiesces it.
pub const QUIESCE_AFTER: Duration = Duration::from_secs(2);
/// How often a node checks its replicas' clocks and re-asks followers of quiesced groups.
pub const QUIESCE_CHECK: Duration = Duration::from_millis(500);
/// How often a leader re-asks the followers of groups already quiesced (within
/// [`DORMANT_GRACE`], so that a follower that restarted hears from it before campaigning).
pub const REASK_EVERY: Duration = Duration::from_secs(2);
/// How long a restarted node's replicas wait for their leader's word before campaigning.
pub const DORMANT_GRACE: Duration = Duration::from_secs(3);
/// How long a `Quiesce` message may take.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a leader found about one group it leads on one check.
struct Candidate {
    replica: Arc<Replica>,
    clock: Clock,
    activity: u64,
    /// The live members that must agree.
    asked: Vec<NodeId>,
    /// Its last index.
    index: Option<u64>,
}

/// Whether a follower's replica agrees to stop its clock for `leader`: same term, no other
/// leader known, its log ending (and applied) at the leader's last index.
fn follower_agrees(metrics: &openraft::RaftMetrics<TypeConfig>, leader: NodeId, term: u64, index: u64) -> bool {
    metrics.id != leader
        && metrics.current_term == term
        && metrics.current_leader.is_none_or(|known| known == leader)
        && metrics.last_log_index == Some(index)
        && metrics.last_applied.as_ref().map(|id| id.index) == Some(index)
}

impl NodeCore {
    /// Stops the clocks of the replicas of a node that restarted with Raft state, until their
    /// leader's word or [`DORMANT_GRACE`]; a fresh replica (no term yet) keeps ticking.
    pub(super) fn start_dormant(&self, active: &Active) {
        let until = Instant::now() + DORMANT_GRACE;
        for replica in active.replicas.all() {
            if replica.raft.metrics().borrow_watched().current_term > 0 {
                replica.stop_clock(Clock::Dormant { until }, None);
            }
        }
    }

    /// A follower's side of a `Quiesce` message: the groups whose clocks it stopped.
    pub fn quiesce(&self, request: pb::QuiesceRequest) -> Result<pb::QuiesceResponse> {
        let active = self.active()?;
        let mut quiesced = Vec::new();
        for asked in request.groups {
            let Some(replica) = active.replicas.get(asked.group) else { continue };
            // Read in place: this and the loop below visit every group, often.
            let watch = replica.raft.metrics();
            if !follower_agrees(&watch.borrow_watched(), request.leader, asked.term, asked.last_index) {
                continue;
            }
            let clock = Clock::Quiesced { leader: request.leader, index: Some(asked.last_index) };
            if replica.stop_clock(clock, None) {
                quiesced.push(asked.group);
            }
        }
        Ok(pb::QuiesceResponse { quiesced })
    }

    /// Every [`QUIESCE_CHECK`]: wakes the replicas that must tick again, quiesces the idle
    /// groups this node leads, and re-asks the followers of those already quiesced.
    pub(super) async fn quiescence_loop(self: Arc<Self>) {
        let Ok(active) = self.active().cloned() else { return };
        // Per group led: (activity, last index) and since when they have not changed.
        let mut idle: HashMap<u64, ((u64, Option<u64>), Instant)> = HashMap::new();
        let mut ticker = tokio::time::interval(QUIESCE_CHECK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reask = Instant::now();
        loop {
            // A peer found down by its refused connection (see `peer_watch`) is acted on now.
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.peer_downs.changed() => {}
            }
            if self.is_draining() {
                // Leadership is being handed away: every group needs its timers.
                active.replicas.all().iter().for_each(|replica| {
                    replica.wake();
                });
                return;
            }
            let peers = active.gossip.peers().await;
            let down = self.peer_downs.down();
            let heard_from = |id: NodeId| {
                id == active.node_id || (peers.get(&id).is_some_and(|peer| peer.heard_from) && !down.contains(&id))
            };
            let alive = |id: NodeId| heard_from(id) && peers.get(&id).is_none_or(|peer| !peer.draining);
            let now = Instant::now();
            let reask = now.duration_since(last_reask) >= REASK_EVERY;
            if reask {
                last_reask = now;
            }
            let mut candidates = Vec::new();
            let mut orphaned = Vec::new();
            let mut asks: BTreeMap<NodeId, (String, Vec<pb::QuiescedGroup>)> = BTreeMap::new();
            for replica in active.replicas.all() {
                let (clock, activity) = replica.clock();
                let watch = replica.raft.metrics();
                let metrics = watch.borrow_watched();
                let leads = metrics.state == ServerState::Leader;
                let keep = match clock {
                    Clock::Running => true,
                    Clock::Dormant { until } => !leads && now < until,
                    Clock::Quiesced { leader, index } => {
                        metrics.last_log_index == index
                            && metrics.current_leader.is_none_or(|known| known == leader)
                            && leads == (leader == active.node_id)
                            && alive(leader)
                    }
                };
                if !keep {
                    // Its leader's node is gone: one voter campaigns, paced (see `elections`).
                    if let Clock::Quiesced { leader, .. } = clock
                        && !leads
                        && !heard_from(leader)
                        && metrics.current_leader.is_none_or(|known| known == leader)
                    {
                        let voters = metrics.membership_config.membership().voter_ids();
                        match elections::campaigner(replica.group, voters, leader, alive) {
                            Some(id) if id == active.node_id => orphaned.push((replica.clone(), leader)),
                            Some(_) => {
                                replica.stop_clock(Clock::Dormant { until: now + elections::CAMPAIGN_GRACE }, None);
                            }
                            None => {
                                replica.wake();
                            }
                        }
                        continue;
                    }
                    replica.wake();
                    continue;
                }
                if !leads || replica.is_removed() {
                    idle.remove(&replica.group);
                    continue;
                }
                let seen = (activity, metrics.last_log_index);
                let since = idle.entry(replica.group).or_insert((seen, now));
                if since.0 != seen {
                    *since = (seen, now);
                }
                if clock == Clock::Running
                    && now.duration_since(since.1) < QUIESCE_AFTER
                    && !replica.may_quiesce_early()
                {
                    continue;
                }
                if clock != Clock::Running && !reask {
                    continue;
                }
                let Some(asked) = idle_members(&metrics, &alive) else {
                    if clock != Clock::Running {
                        replica.wake();
                    }
                    continue;
                };
                let index = metrics.last_log_index;
                for id in &asked {
                    let Some(node) = metrics.membership_config.membership().get_node(id) else { continue };
                    let entry = asks.entry(*id).or_insert_with(|| (node.addr.clone(), Vec::new()));
                    entry.1.push(pb::QuiescedGroup {
                        group: replica.group,
                        term: metrics.current_term,
                        last_index: index.unwrap_or(0),
                    });
                }
                candidates.push(Candidate { replica, clock, activity, asked, index });
            }
            self.campaign_paced(orphaned);
            if candidates.is_empty() {
                continue;
            }
            let answers = self.ask_to_quiesce(active.node_id, asks).await;
            for candidate in candidates {
                let group = candidate.replica.group;
                let running = candidate.clock == Clock::Running;
                match verdict(&candidate.asked, &answers, group, running) {
                    Verdict::Wake => {
                        candidate.replica.wake();
                    }
                    Verdict::Stay => {}
                    Verdict::Quiesce => {
                        let clock = Clock::Quiesced { leader: active.node_id, index: candidate.index };
                        if candidate.replica.stop_clock(clock, Some(candidate.activity)) {
                            tracing::debug!(group, "Raft group quiesced");
                        }
                    }
                }
            }
        }
    }

    /// Sends each peer its `Quiesce` message at once; the groups each agreed to, `None` from a
    /// peer that did not answer.
    async fn ask_to_quiesce(
        &self,
        leader: NodeId,
        asks: BTreeMap<NodeId, (String, Vec<pb::QuiescedGroup>)>,
    ) -> HashMap<NodeId, Option<BTreeSet<u64>>> {
        let sends = asks.into_iter().map(|(id, (addr, groups))| async move {
            let Ok(channel) = self.dialer.channel(&addr) else { return (id, None) };
            let mut request = tonic::Request::new(pb::QuiesceRequest { leader, groups });
            request.set_timeout(QUIESCE_TIMEOUT);
            let agreed = match RaftServiceClient::new(channel).quiesce(request).await {
                Ok(reply) => Some(reply.into_inner().quiesced.into_iter().collect()),
                Err(_) => None,
            };
            (id, agreed)
        });
        futures::future::join_all(sends).await.into_iter().collect()
    }
}

/// What a leader does with one group after asking its members to quiesce it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Every member asked agreed and the group was running: stop its clock.
    Quiesce,
    /// A member answered without the group (it restarted, or knows another leader), or a
    /// running group did not get every answer: keep or start its clock.
    Wake,
    /// Leave it as it is.
    Stay,
}

/// The [`Verdict`] for `group` (its clock `running` or stopped), asked of `asked`, given each
/// peer's `answers` (the groups it agreed to; `None` when it did not answer). A quiesced group
/// stays so when a member does not answer: it is asked again on the next check, and were it
/// woken instead, one peer slow to answer would wake every group this node leads, and their
/// heartbeats would keep that peer slow.
fn verdict(asked: &[NodeId], answers: &HashMap<NodeId, Option<BTreeSet<u64>>>, group: u64, running: bool) -> Verdict {
    let answer = |id: &NodeId| answers.get(id).and_then(Option::as_ref);
    if asked.iter().any(|id| answer(id).is_some_and(|groups| !groups.contains(&group))) {
        return Verdict::Wake;
    }
    let all_agreed = asked.iter().all(|id| answer(id).is_some_and(|groups| groups.contains(&group)));
    match (running, all_agreed) {
        (true, true) => Verdict::Quiesce,
        (true, false) => Verdict::Wake,
        (false, _) => Verdict::Stay,
    }
}

/// The members a leader must ask to quiesce a group: every live member but itself, if each
/// has the leader's whole log and the leader has applied it; `None` if the group is not idle
/// (something unreplicated or unapplied, or a membership change under way).
fn idle_members(metrics: &openraft::RaftMetrics<TypeConfig>, alive: &impl Fn(NodeId) -> bool) -> Option<Vec<NodeId>> {
    let membership = metrics.membership_config.membership();
    if membership.get_joint_config().len() > 1 {
        return None;
    }
    let last = metrics.last_log_index;
    if metrics.last_applied.as_ref().map(|id| id.index) != last {
        return None;
    }
    let replication = metrics.replication.as_ref()?;
    let mut asked = Vec::new();
    for (id, _) in membership.nodes() {
        if *id == metrics.id || !alive(*id) {
            continue;
        }
        if replication.get(id)?.as_ref().map(|id| id.index) != last {
            return None;
        }
        asked.push(*id);
    }
    Some(asked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::Membership;
    use openraft::impls::leader_id_adv::LeaderId;

    fn log_id(index: u64) -> raft_mod::LogId {
        raft_mod::LogId::new(LeaderId { term: 2, node_id: 1 }, index)
    }

    /// Node `id`'s metrics in a group of voters 1–3 and learner 4, term 2, led by node 1,
    /// with its log ending and applied at `index`.
    fn metrics(id: NodeId, index: u64) -> openraft::RaftMetrics<TypeConfig> {
        let mut m = openraft::RaftMetrics::new_initial(id);
        m.current_term = 2;
        m.current_leader = Some(1);
        m.last_log_index = Some(index);
        m.last_applied = Some(log_id(index));
        let membership = Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3])], [4]);
        m.membership_config = Arc::new(raft_mod::StoredMembership::new(Some(log_id(1)), membership));
        if id == 1 {
            m.state = ServerState::Leader;
            m.replication = Some((1..=4).map(|node| (node, Some(log_id(index)))).collect());
        }
        m
    }

    #[test]
    fn a_follower_agrees_only_at_the_leaders_term_leader_and_index() {
        assert!(follower_agrees(&metrics(2, 7), 1, 2, 7));
        assert!(!follower_agrees(&metrics(2, 7), 1, 3, 7), "another term");
        assert!(!follower_agrees(&metrics(2, 7), 3, 2, 7), "another leader");
        assert!(!follower_agrees(&metrics(2, 6), 1, 2, 7), "behind");
        assert!(!follower_agrees(&metrics(2, 8), 1, 2, 7), "ahead: the leader proposed since");
        assert!(!follower_agrees(&metrics(1, 7), 1, 2, 7), "the leader itself");
        let mut unapplied = metrics(2, 7);
        unapplied.last_applied = Some(log_id(6));
        assert!(!follower_agrees(&unapplied, 1, 2, 7), "not yet applied");
        let mut restarted = metrics(2, 7);
        restarted.current_leader = None;
        assert!(follower_agrees(&restarted, 1, 2, 7), "a restarted follower that knows no leader yet");
    }

    #[test]
    fn a_quiesced_group_wakes_on_a_refusal_but_not_on_silence() {
        let answers = HashMap::from([(2, Some(BTreeSet::from([7, 8]))), (3, Some(BTreeSet::from([8]))), (4, None)]);
        assert_eq!(verdict(&[2], &answers, 7, true), Verdict::Quiesce);
        assert_eq!(verdict(&[2, 3], &answers, 7, true), Verdict::Wake, "3 refused");
        assert_eq!(verdict(&[2, 3], &answers, 7, false), Verdict::Wake, "3 refused a quiesced group");
        assert_eq!(verdict(&[2, 4], &answers, 7, true), Verdict::Wake, "4 did not answer: not quiesced yet");
        assert_eq!(verdict(&[2, 4], &answers, 7, false), Verdict::Stay, "4 did not answer: asked again");
        assert_eq!(verdict(&[2, 5], &answers, 7, false), Verdict::Stay, "5 was not reached");
        assert_eq!(verdict(&[], &answers, 7, true), Verdict::Quiesce, "a group with no live follower");
        assert_eq!(verdict(&[2], &answers, 7, false), Verdict::Stay);
    }

    #[test]
    fn a_leader_asks_every_live_caught_up_member_or_nobody() {
        let live = |id: NodeId| id != 3;
        assert_eq!(idle_members(&metrics(1, 7), &|_| true), Some(vec![2, 3, 4]));
        assert_eq!(idle_members(&metrics(1, 7), &live), Some(vec![2, 4]), "a dead member is not waited for");

        let mut lagging = metrics(1, 7);
        lagging.replication.as_mut().unwrap().insert(4, Some(log_id(6)));
        assert_eq!(idle_members(&lagging, &|_| true), None, "a learner still catching up");
        let mut unapplied = metrics(1, 7);
        unapplied.last_applied = Some(log_id(6));
        assert_eq!(idle_members(&unapplied, &|_| true), None);
        let mut joint = metrics(1, 7);
        let membership = Membership::new_with_defaults(vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([1, 2, 4])], []);
        joint.membership_config = Arc::new(raft_mod::StoredMembership::new(Some(log_id(1)), membership));
        assert_eq!(idle_members(&joint, &|_| true), None, "a membership change under way");
    }
}
