//! Elections after a node dies. A node leading thousands of quiesced groups takes all their
//! leaders with it, and their followers learn of it at the same moment (gossip stops hearing
//! from it). Left to their election timers, every follower of every such group campaigns
//! within the same second on each node left: the vote requests outnumber what the nodes can
//! answer within a vote's deadline, the candidates of one group split the votes, and the
//! terms climb while no group gets a leader.
//!
//! Instead, one follower per group campaigns: the lowest-numbered voter gossip still hears
//! from ([`campaigner`]); the others stay [`Clock::Dormant`] for [`CAMPAIGN_GRACE`] and start
//! their own clocks only if no leader has reached them by then. And a node runs at most
//! [`MAX_CAMPAIGNS`] elections at once, the rest waiting their turn, so each is answered
//! within its deadline.

use super::*;

/// The most elections a node runs at once after their leader's node died.
pub const MAX_CAMPAIGNS: usize = 64;
/// How long the followers that do not campaign wait for the one that does (and the one that
/// does waits for its turn) before their clocks start as usual.
pub const CAMPAIGN_GRACE: Duration = Duration::from_secs(10);
/// How long one paced election may take before the next one is started in its place.
const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(2);

/// The voter of a group that campaigns when its leader `dead` is gone: the lowest-numbered
/// voter other than it that `alive` says is up; `None` if none is.
pub fn campaigner(
    voters: impl IntoIterator<Item = NodeId>,
    dead: NodeId,
    alive: impl Fn(NodeId) -> bool,
) -> Option<NodeId> {
    voters.into_iter().filter(|id| *id != dead && alive(*id)).min()
}

impl NodeCore {
    /// Starts paced elections for `groups`, whose leader's node `dead` is gone and of which
    /// this node is the campaigner. Their clocks are held until their turn.
    pub(super) fn campaign_paced(self: &Arc<Self>, groups: Vec<(Arc<Replica>, NodeId)>) {
        if groups.is_empty() {
            return;
        }
        let until = Instant::now() + CAMPAIGN_GRACE;
        for (replica, _) in &groups {
            replica.stop_clock(Clock::Dormant { until }, None);
        }
        let core = self.clone();
        tokio::spawn(async move {
            for (replica, dead) in groups {
                let Ok(permit) = core.campaigns.clone().acquire_owned().await else { return };
                tokio::spawn(async move {
                    campaign(&replica, dead).await;
                    drop(permit);
                });
            }
        });
    }
}

/// One election for `replica`, unless a leader other than `dead` is known by now; returns
/// once a leader is known or after [`CAMPAIGN_TIMEOUT`].
async fn campaign(replica: &Replica, dead: NodeId) {
    let has_leader = |m: &openraft::RaftMetrics<TypeConfig>| m.current_leader.is_some_and(|id| id != dead);
    if has_leader(&replica.raft.metrics().borrow_watched()) || replica.is_removed() {
        return;
    }
    replica.wake();
    if replica.raft.trigger().elect(false).await.is_err() {
        return;
    }
    let _ = replica.raft.wait(Some(CAMPAIGN_TIMEOUT)).metrics(has_leader, "a paced election").await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_live_voter_but_the_dead_leader_campaigns() {
        let all = |_: NodeId| true;
        assert_eq!(campaigner([1, 2, 3], 1, all), Some(2));
        assert_eq!(campaigner([3, 2, 1], 2, all), Some(1));
        assert_eq!(campaigner([1, 2, 3], 1, |id| id != 2), Some(3), "2 is down too");
        assert_eq!(campaigner([1, 2, 3], 1, |id| id == 1), None, "only the dead leader is heard from");
        assert_eq!(campaigner([1], 1, all), None, "a group of one");
    }
}
