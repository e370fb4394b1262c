//! Elections after a node dies. A node leading thousands of quiesced groups takes all their
//! leaders with it, and their followers learn of it at the same moment (gossip stops hearing
//! from it). Left to their election timers, every follower of every such group campaigns
//! within the same second on each node left: the vote requests outnumber what the nodes can
//! answer within a vote's deadline, the candidates of one group split the votes, and the
//! terms climb while no group gets a leader.
//!
//! Instead, one follower per group campaigns, chosen by the group's id among the voters
//! gossip still hears from ([`campaigner`]), so that the elections, and the leases they
//! give, are shared evenly by the nodes left; the others stay [`Clock::Dormant`] for
//! [`CAMPAIGN_GRACE`] and start their own clocks only if no leader has reached them by then.
//! A node runs at most [`MAX_CAMPAIGNS`] elections at once, the rest waiting their turn, so
//! each is answered within its deadline, and a group it wins quiesces at once
//! ([`Replica::quiesce_early`]). Meanwhile the node's maintenance passes wait (for at most
//! [`CAMPAIGN_GRACE`]): the elections are CPU bound, and passes over thousands of groups took
//! about 6% of the CPU they could have had.

use super::*;

/// The most elections a node runs at once after their leader's node died.
pub const MAX_CAMPAIGNS: usize = 64;
/// How long the followers that do not campaign wait for the one that does (and the one that
/// does waits for its turn) before their clocks start as usual.
pub const CAMPAIGN_GRACE: Duration = Duration::from_secs(10);
/// How long one paced election may take before the next one is started in its place.
const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(2);

/// The voter of `group` that campaigns when its leader `dead` is gone: of the voters other
/// than it that `alive` says are up, in order of id, the one the group's id picks; `None`
/// if none is up. Every voter that sees the same voters up picks the same one.
pub fn campaigner(
    group: u64,
    voters: impl IntoIterator<Item = NodeId>,
    dead: NodeId,
    alive: impl Fn(NodeId) -> bool,
) -> Option<NodeId> {
    let mut up: Vec<NodeId> = voters.into_iter().filter(|id| *id != dead && alive(*id)).collect();
    up.sort_unstable();
    up.dedup();
    let pick = group.checked_rem(up.len() as u64)?;
    up.get(pick as usize).copied()
}

/// The rounds of paced elections a node is running.
#[derive(Debug, Default)]
pub(super) struct PacedRounds {
    running: usize,
    since: Option<Instant>,
}

/// Counts one round as running from its creation until it is dropped.
struct RoundGuard(Arc<std::sync::Mutex<PacedRounds>>);

impl RoundGuard {
    fn start(rounds: &Arc<std::sync::Mutex<PacedRounds>>) -> Self {
        let mut state = rounds.lock().unwrap_or_else(|p| p.into_inner());
        state.running += 1;
        state.since.get_or_insert_with(Instant::now);
        RoundGuard(rounds.clone())
    }
}

impl Drop for RoundGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.running = state.running.saturating_sub(1);
        if state.running == 0 {
            state.since = None;
        }
    }
}

impl NodeCore {
    /// Whether maintenance should wait for paced elections: some are running, and have been
    /// for less than [`CAMPAIGN_GRACE`] (rounds that keep failing must not hold back the
    /// replacement of dead voters for longer).
    pub(super) fn elections_first(&self) -> bool {
        let state = self.paced_rounds.lock().unwrap_or_else(|p| p.into_inner());
        state.since.is_some_and(|since| since.elapsed() < CAMPAIGN_GRACE)
    }

    /// Starts paced elections for `groups`, whose leader's node `dead` is gone and of which
    /// this node is the campaigner. Their clocks are held until their turn. Once all have
    /// ended, one line says how they went (how many found a leader, and how long each took).
    pub(super) fn campaign_paced(self: &Arc<Self>, groups: Vec<(Arc<Replica>, NodeId)>) {
        if groups.is_empty() {
            return;
        }
        let until = Instant::now() + CAMPAIGN_GRACE;
        for (replica, _) in &groups {
            replica.stop_clock(Clock::Dormant { until }, None);
        }
        let core = self.clone();
        let round = RoundGuard::start(&self.paced_rounds);
        tokio::spawn(async move {
            let _round = round;
            let started = Instant::now();
            let count = groups.len();
            let mut running = Vec::with_capacity(count);
            for (replica, dead) in groups {
                let Ok(permit) = core.campaigns.clone().acquire_owned().await else { return };
                running.push(tokio::spawn(async move {
                    let outcome = campaign(&replica, dead).await;
                    drop(permit);
                    outcome
                }));
            }
            let mut tally = Tally::default();
            for outcome in futures::future::join_all(running).await.into_iter().flatten() {
                tally.add(outcome);
            }
            tracing::info!(
                groups = count,
                led = tally.led,
                led_already = tally.led_already,
                unsettled = tally.unsettled,
                mean_ms = tally.mean().as_millis() as u64,
                max_ms = tally.max.as_millis() as u64,
                seconds = started.elapsed().as_secs_f64(),
                "paced elections after a leader's node died"
            );
        });
    }
}

/// How one paced election ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A leader other than the dead one was known, after this long.
    Led(Duration),
    /// A leader was known before it started, or the replica is gone.
    LedAlready,
    /// No leader within [`CAMPAIGN_TIMEOUT`] (or the group's Raft stopped).
    Unsettled,
}

/// The outcomes of one round of paced elections.
#[derive(Debug, Default)]
struct Tally {
    /// Elections after which a leader (this node or another) was known.
    led: usize,
    led_already: usize,
    unsettled: usize,
    total: Duration,
    max: Duration,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Led(took) => {
                self.led += 1;
                self.total += took;
                self.max = self.max.max(took);
            }
            Outcome::LedAlready => self.led_already += 1,
            Outcome::Unsettled => self.unsettled += 1,
        }
    }

    /// The mean time an election that found a leader took.
    fn mean(&self) -> Duration {
        self.total.checked_div(self.led as u32).unwrap_or_default()
    }
}

/// One election for `replica`, unless a leader other than `dead` is known by now; returns
/// once a leader is known or after [`CAMPAIGN_TIMEOUT`].
async fn campaign(replica: &Replica, dead: NodeId) -> Outcome {
    let has_leader = |m: &openraft::RaftMetrics<TypeConfig>| m.current_leader.is_some_and(|id| id != dead);
    if has_leader(&replica.raft.metrics().borrow_watched()) || replica.is_removed() {
        return Outcome::LedAlready;
    }
    let started = Instant::now();
    replica.wake();
    if replica.raft.trigger().elect(false).await.is_err() {
        return Outcome::Unsettled;
    }
    match replica.raft.wait(Some(CAMPAIGN_TIMEOUT)).metrics(has_leader, "a paced election").await {
        Ok(metrics) => {
            if metrics.current_leader == Some(metrics.id) {
                replica.quiesce_early();
            }
            Outcome::Led(started.elapsed())
        }
        Err(_) => Outcome::Unsettled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_run_from_the_first_start_until_the_last_one_ends() {
        let rounds = Arc::new(std::sync::Mutex::new(PacedRounds::default()));
        let state = || {
            let state = rounds.lock().unwrap();
            (state.running, state.since)
        };
        assert_eq!(state(), (0, None));
        let first = RoundGuard::start(&rounds);
        let since = state().1.expect("running since the first start");
        let second = RoundGuard::start(&rounds);
        assert_eq!(state(), (2, Some(since)), "a second round keeps the first one's start");
        drop(first);
        assert_eq!(state(), (1, Some(since)));
        drop(second);
        assert_eq!(state(), (0, None));
    }

    #[test]
    fn a_tally_counts_each_outcome_and_averages_the_led() {
        let mut tally = Tally::default();
        assert_eq!(tally.mean(), Duration::ZERO, "nothing led yet");
        for outcome in [
            Outcome::Led(Duration::from_millis(100)),
            Outcome::Led(Duration::from_millis(300)),
            Outcome::LedAlready,
            Outcome::Unsettled,
        ] {
            tally.add(outcome);
        }
        assert_eq!((tally.led, tally.led_already, tally.unsettled), (2, 1, 1));
        assert_eq!((tally.mean(), tally.max), (Duration::from_millis(200), Duration::from_millis(300)));
    }

    #[test]
    fn the_groups_id_picks_one_live_voter_but_the_dead_leader() {
        let all = |_: NodeId| true;
        assert_eq!(campaigner(10, [1, 2, 3], 1, all), Some(2), "even group: the first of 2, 3");
        assert_eq!(campaigner(11, [1, 2, 3], 1, all), Some(3), "odd group: the second");
        assert_eq!(campaigner(11, [3, 2, 1], 1, all), Some(3), "the voters' order does not matter");
        assert_eq!(campaigner(11, [1, 2, 3], 2, all), Some(3));
        assert_eq!(campaigner(12, [1, 2, 3], 2, all), Some(1));
        assert_eq!(campaigner(11, [1, 2, 3], 1, |id| id != 2), Some(3), "2 is down too");
        assert_eq!(campaigner(10, [1, 2, 3], 1, |id| id != 2), Some(3), "2 is down too");
        assert_eq!(campaigner(10, [1, 2, 3], 1, |id| id == 1), None, "only the dead leader is heard from");
        assert_eq!(campaigner(10, [1], 1, all), None, "a group of one");
        let picked: Vec<_> = (0..100).filter_map(|group| campaigner(group, [1, 2, 3, 4, 5], 3, all)).collect();
        for id in [1, 2, 4, 5] {
            assert_eq!(picked.iter().filter(|p| **p == id).count(), 25, "node {id} campaigns for a quarter");
        }
    }
}
