//! `ranged bench raft-groups`: what idle openraft groups cost in this process, before ranges
//! get a group each. `--nodes` simulated nodes each open their own write-ahead log, and
//! `--groups` groups are created with every node a voter: the real log store
//! ([`LogStore`]) and Raft config, a state machine holding no data, and an in-process router
//! that calls the target node's `Raft` directly, so what is measured is openraft's own cost
//! and not gRPC's. It reports memory, tokio tasks, CPU and RPCs per second over idle windows
//! with heartbeats on, with heartbeats and elections off, and with openraft's ticker off too;
//! whether a leader whose lease ran out still takes writes; and how long the groups one node
//! led take to elect new leaders once that node stops.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use openraft::{BasicNode, Raft, ReadPolicy};
use tokio::time::Instant;

use crate::services::raft::log_store::LogStore;
use crate::services::raft::{self as raft_mod, Command, NodeId, TypeConfig};
use crate::services::wal::{Wal, WalConfig};

mod sim;

pub use sim::Rpc;
use sim::{MemStateMachine, NetworkFactory, Router};

type GroupRaft = Raft<TypeConfig, MemStateMachine>;

/// How often waits poll the groups' metrics.
const POLL: Duration = Duration::from_millis(20);
/// `Raft::initialize` calls in flight: enough for the log's group commit to batch them.
const INITIALIZE_CONCURRENCY: usize = 256;
/// The longest any single step of the leader-lease probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the groups of a stopped node may take to elect new leaders.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(60);

/// What a run measures.
#[derive(Debug, Clone, Copy)]
pub struct RaftGroupsOptions {
    /// Raft groups, each with every node a voter.
    pub groups: usize,
    /// Simulated nodes in this process.
    pub nodes: usize,
    /// Length of each idle measurement window.
    pub window: Duration,
}

/// The process's resident memory and live tokio tasks at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// Tasks alive on the tokio runtime.
    pub tasks: usize,
}

/// One idle window: what the process spent while no client touched any group.
#[derive(Debug, Clone)]
pub struct IdleWindow {
    /// What was switched off.
    pub name: &'static str,
    /// Process CPU time over the window, as percent of one core.
    pub cpu_percent: f64,
    /// RPCs delivered per second, by [`Rpc`] kind.
    pub rpcs_per_s: [f64; Rpc::KINDS],
    /// Write-ahead log writes (each one `write` and one `fdatasync`) per second, all nodes.
    pub wal_writes_per_s: f64,
    /// Groups whose leader at the end differs from the one at the start.
    pub leader_changes: usize,
    /// Memory and tasks at the end of the window.
    pub end: Footprint,
}

/// A client write to a leader that has sent no heartbeat for a window.
#[derive(Debug, Clone)]
pub struct LeaseProbe {
    /// The write before anything else: openraft refuses writes when its leader lease has run out.
    pub first_write: String,
    /// A ReadIndex read, which sends its own heartbeat round whatever `heartbeat(false)` says.
    pub read_index: String,
    /// The write after that read.
    pub second_write: String,
}

/// Ticks and heartbeats back on, then elections once a heartbeat round has gone out.
#[derive(Debug, Clone)]
pub struct Wake {
    /// How long until elections were back on.
    pub time: Duration,
    /// Whether a heartbeat per follower went out before the deadline (elections come back
    /// on regardless).
    pub heartbeats_resumed: bool,
    /// Groups whose leader changed across the whole quiet spell.
    pub leader_changes: usize,
}

/// One node stopped while heartbeats are on.
#[derive(Debug, Clone)]
pub struct Failover {
    /// The stopped node: the one leading the most groups.
    pub node: NodeId,
    /// Groups it led.
    pub groups_led: usize,
    /// How long shutting down all its instances took.
    pub shutdown: Duration,
    /// From the stop until each of those groups had a leader, sorted; shorter than
    /// `groups_led` if some had none by the deadline.
    pub reelected: Vec<Duration>,
    /// Vote RPCs delivered meanwhile.
    pub votes: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct RaftGroupsReport {
    /// The options the run used.
    pub options: RaftGroupsOptions,
    /// openraft's internal tick period, derived from the heartbeat interval.
    pub tick: Duration,
    /// Before any group existed (the logs open).
    pub before: Footprint,
    /// After every `Raft` instance was built, before any group was initialized.
    pub built: Footprint,
    /// Once every group had a leader.
    pub led: Footprint,
    /// How long building the instances took.
    pub build_time: Duration,
    /// From the first `initialize` until every group had a leader (or the deadline passed),
    /// and how many groups had one then.
    pub leaders: (Duration, usize),
    /// The idle windows, in the order run.
    pub windows: Vec<IdleWindow>,
    /// Writes and a read on one group's leader after heartbeats, elections and ticks were off.
    pub lease_probe: LeaseProbe,
    /// Turning ticks and heartbeats, then elections, back on.
    pub wake: Wake,
    /// The node stop (with three nodes or more).
    pub failover: Option<Failover>,
}

impl RaftGroupsReport {
    fn instances(&self) -> u64 {
        (self.options.groups * self.options.nodes) as u64
    }
}

/// Kinds of RPC the router delivers.
fn footprint() -> Result<Footprint, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(Footprint { rss_kib, tasks: tokio::runtime::Handle::current().metrics().num_alive_tasks() })
}

fn wal_writes(wals: &[Arc<Wal>]) -> u64 {
    wals.iter().map(|wal| wal.stats().writes).sum()
}

/// Polls until `done` holds (true) or `deadline` passes (false).
async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// Sleeps through one window and reports what the process spent meanwhile.
async fn idle_window(
    name: &'static str,
    router: &Router,
    wals: &[Arc<Wal>],
    window: Duration,
) -> Result<IdleWindow, String> {
    let leaders = router.leaders();
    let (rpcs, writes) = (router.delivered(), wal_writes(wals));
    let cpu = cpu_time::ProcessTime::try_now().map_err(|e| e.to_string())?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let cpu = cpu.try_elapsed().map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let now = router.delivered();
    let leader_changes = leaders.iter().zip(router.leaders()).filter(|(before, after)| **before != *after).count();
    Ok(IdleWindow {
        name,
        cpu_percent: cpu.as_secs_f64() / seconds * 100.0,
        rpcs_per_s: std::array::from_fn(|kind| (now[kind] - rpcs[kind]) as f64 / seconds),
        wal_writes_per_s: (wal_writes(wals) - writes) as f64 / seconds,
        leader_changes,
        end: footprint()?,
    })
}

/// A write, a ReadIndex read and a write again on `raft`, each described by its outcome.
async fn lease_probe(raft: Option<&GroupRaft>) -> LeaseProbe {
    let Some(raft) = raft else {
        let none = String::from("group 1 has no leader");
        return LeaseProbe { first_write: none.clone(), read_index: none.clone(), second_write: none };
    };
    async fn timed<T, E: fmt::Display>(call: impl Future<Output = Result<T, E>>) -> String {
        let started = Instant::now();
        match tokio::time::timeout(PROBE_TIMEOUT, call).await {
            Ok(Ok(_)) => format!("ok in {:.1} ms", started.elapsed().as_secs_f64() * 1e3),
            Ok(Err(err)) => format!("refused: {err}"),
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        }
    }
    let first_write = timed(raft.client_write(Command::Batch(Vec::new()))).await;
    let read_index = timed(raft.ensure_linearizable(ReadPolicy::ReadIndex)).await;
    let second_write = timed(raft.client_write(Command::Batch(Vec::new()))).await;
    LeaseProbe { first_write, read_index, second_write }
}

/// Runs the whole measurement with the logs in new directories under `dir` (removed after).
pub async fn run(dir: &Path, options: RaftGroupsOptions) -> Result<RaftGroupsReport, String> {
    if options.groups == 0 || options.nodes == 0 {
        return Err("--groups and --nodes must be at least 1".into());
    }
    let config = Arc::new(raft_mod::config("raft-groups-bench").map_err(|e| e.to_string())?);
    let dirs = (0..options.nodes)
        .map(|_| tempfile::tempdir_in(dir).map_err(|e| format!("{}: {e}", dir.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let wals = dirs
        .iter()
        .map(|dir| Wal::open(dir.path(), WalConfig::default()).map(Arc::new).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let router = Arc::new(Router::new(options.nodes, options.groups));
    let report = measure(&router, &wals, config, options).await;
    let rafts: Vec<GroupRaft> = router.all().cloned().collect();
    futures::future::join_all(rafts.iter().map(|raft| raft.shutdown())).await;
    // Stopped cores have dropped their network factories, and with them the router's other
    // owners; each log closes once its last `LogStore` is gone, before its directory goes.
    drop((rafts, router, wals));
    report
}

async fn measure(
    router: &Arc<Router>,
    wals: &[Arc<Wal>],
    config: Arc<openraft::Config>,
    options: RaftGroupsOptions,
) -> Result<RaftGroupsReport, String> {
    let RaftGroupsOptions { groups, nodes, window } = options;
    // openraft's `Config::tick_interval`, which it does not export.
    let tick = Duration::from_millis((config.heartbeat_interval * 13 / 64).max(1));
    let before = footprint()?;

    let started = Instant::now();
    for group in router.group_ids() {
        for (id, wal) in router.node_ids().zip(wals) {
            let network = NetworkFactory { router: router.clone(), from: id, group };
            let log = LogStore::new(wal.clone(), group);
            let raft = Raft::new(id, config.clone(), network, log, MemStateMachine::default())
                .await
                .map_err(|e| format!("group {group} on node {id}: {e}"))?;
            let _ = router.node(id).groups[group as usize - 1].set(raft);
        }
    }
    let build_time = started.elapsed();
    let built = footprint()?;

    let members: BTreeMap<NodeId, BasicNode> =
        router.node_ids().map(|id| (id, BasicNode::new(format!("node-{id}")))).collect();
    let started = Instant::now();
    futures::stream::iter(router.group_ids())
        .map(|group| {
            let members = members.clone();
            async move {
                let raft = router.raft(1, group).ok_or("missing instance")?;
                raft.initialize(members).await.map_err(|e| format!("initializing group {group}: {e}"))
            }
        })
        .buffer_unordered(INITIALIZE_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    let leader_deadline = started + Duration::from_secs(30) + Duration::from_millis(10) * groups as u32;
    // A process short of CPU may never get there; what it measures then is still the answer.
    wait_until(leader_deadline, || router.leaders().iter().all(Option::is_some)).await;
    let leaders = (started.elapsed(), router.leaders().iter().flatten().count());
    let led = footprint()?;
    // Followers apply the new leaders' first entries on a later heartbeat; that is not idle.
    wait_until(Instant::now() + Duration::from_secs(30), || router.all_applied_alike()).await;

    let mut windows = vec![idle_window("heartbeats on", router, wals, window).await?];
    let settled = router.leaders();

    for raft in router.all() {
        raft.runtime_config().heartbeat(false);
        raft.runtime_config().elect(false);
    }
    windows.push(idle_window("heartbeats, elections off", router, wals, window).await?);

    for raft in router.all() {
        raft.runtime_config().tick(false);
    }
    windows.push(idle_window("ticker off too", router, wals, window).await?);
    let lease_probe = lease_probe(router.leader(1).and_then(|id| router.raft(id, 1))).await;

    // Followers stopped hearing from their leaders long ago: with elections back on before a
    // heartbeat reaches them, each would start one.
    let started = Instant::now();
    let heartbeats = router.delivered()[Rpc::Heartbeat as usize];
    for raft in router.all() {
        raft.runtime_config().tick(true);
        raft.runtime_config().heartbeat(true);
    }
    let followers = (groups * (nodes - 1)) as u64;
    let heartbeats_resumed = wait_until(started + Duration::from_secs(30), || {
        router.delivered()[Rpc::Heartbeat as usize] - heartbeats >= followers
    })
    .await;
    for raft in router.all() {
        raft.runtime_config().elect(true);
    }
    let wake = Wake {
        time: started.elapsed(),
        heartbeats_resumed,
        leader_changes: settled.iter().zip(router.leaders()).filter(|(before, after)| **before != *after).count(),
    };

    // With fewer than three voters, the rest of a group is no quorum.
    let failover = if nodes >= 3 { Some(failover(router).await?) } else { None };

    Ok(RaftGroupsReport {
        options,
        tick,
        before,
        built,
        led,
        build_time,
        leaders,
        windows,
        lease_probe,
        wake,
        failover,
    })
}

/// Stops the node leading the most groups and times each of its groups' new election.
async fn failover(router: &Router) -> Result<Failover, String> {
    let leaders = router.leaders();
    let node = router
        .node_ids()
        .max_by_key(|&id| leaders.iter().filter(|leader| **leader == Some(id)).count())
        .ok_or("no nodes")?;
    let led: Vec<u64> = router.group_ids().filter(|&group| leaders[group as usize - 1] == Some(node)).collect();
    let votes = router.delivered()[Rpc::Vote as usize];
    let started = Instant::now();
    router.node(node).down.store(true, Ordering::Relaxed);
    let stopped: Vec<GroupRaft> = router.node(node).groups.iter().filter_map(OnceLock::get).cloned().collect();
    futures::future::join_all(stopped.iter().map(|raft| raft.shutdown())).await;
    let shutdown = started.elapsed();
    let mut waiting = led.clone();
    let mut reelected = Vec::with_capacity(led.len());
    let deadline = started + FAILOVER_DEADLINE;
    while !waiting.is_empty() && Instant::now() < deadline {
        let elapsed = started.elapsed();
        waiting.retain(|&group| {
            let has_leader = router.leader(group).is_some();
            if has_leader {
                reelected.push(elapsed);
            }
            !has_leader
        });
        tokio::time::sleep(POLL).await;
    }
    reelected.sort();
    let votes = router.delivered()[Rpc::Vote as usize] - votes;
    Ok(Failover { node, groups_led: led.len(), shutdown, reelected, votes })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl fmt::Display for RaftGroupsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RaftGroupsOptions { groups, nodes, window } = self.options;
        let instances = self.instances();
        writeln!(
            f,
            "{groups} groups x {nodes} nodes = {instances} Raft instances (openraft tick {} ms)",
            self.tick.as_millis()
        )?;
        let (waited, led) = self.leaders;
        let (waited, build) = (waited.as_secs_f64(), self.build_time.as_secs_f64());
        if led == groups {
            writeln!(f, "built in {build:.2} s; every group had a leader {waited:.2} s after the first initialize")?;
        } else {
            writeln!(
                f,
                "built in {build:.2} s; only {led} of {groups} groups had a leader at the deadline, {waited:.2} s"
            )?;
        }
        writeln!(f)?;
        writeln!(f, "{:<34}{:>10}{:>14}{:>10}{:>16}", "", "RSS MiB", "KiB/instance", "tasks", "tasks/instance")?;
        let per_instance = |at: &Footprint| {
            (
                at.rss_kib.saturating_sub(self.before.rss_kib) as f64 / instances as f64,
                at.tasks.saturating_sub(self.before.tasks) as f64 / instances as f64,
            )
        };
        for (name, at) in
            [("before any group", &self.before), ("instances built", &self.built), ("after the elections", &self.led)]
        {
            let (kib, tasks) = per_instance(at);
            writeln!(f, "{name:<34}{:>10.1}{kib:>14.1}{:>10}{tasks:>16.2}", mib(at.rss_kib), at.tasks)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<28}{:>7}{:>15}{:>13}{:>10}{:>9}{:>12}{:>10}{:>11}{:>9}{:>9}",
            format!("idle window ({} s)", window.as_secs_f64()),
            "CPU %",
            "CPU us/inst/s",
            "heartbeat/s",
            "append/s",
            "vote/s",
            "snapshot/s",
            "wal wr/s",
            "leader chg",
            "RSS MiB",
            "tasks"
        )?;
        for w in &self.windows {
            let [heartbeat, append, vote, snapshot] = w.rpcs_per_s;
            writeln!(
                f,
                "{:<28}{:>7.1}{:>15.2}{heartbeat:>13.0}{append:>10.1}{vote:>9.1}{snapshot:>12.1}{:>10.1}{:>11}{:>9.1}{:>9}",
                w.name,
                w.cpu_percent,
                w.cpu_percent / 100.0 * 1e6 / instances as f64,
                w.wal_writes_per_s,
                w.leader_changes,
                mib(w.end.rss_kib),
                w.end.tasks
            )?;
        }
        writeln!(f)?;
        let probe = &self.lease_probe;
        writeln!(
            f,
            "leader of group 1 with heartbeats, elections and ticker off for {} s:",
            2.0 * window.as_secs_f64()
        )?;
        writeln!(f, "  write:           {}", probe.first_write)?;
        writeln!(f, "  ReadIndex read:  {}", probe.read_index)?;
        writeln!(f, "  write again:     {}", probe.second_write)?;
        let Wake { time, heartbeats_resumed, leader_changes } = &self.wake;
        writeln!(
            f,
            "ticks and heartbeats back on, elections after {}: {:.2} s; groups whose leader changed since before \
             heartbeats went off: {leader_changes}",
            if *heartbeats_resumed { "a heartbeat per follower" } else { "30 s without a heartbeat per follower" },
            time.as_secs_f64()
        )?;
        let Some(failover) = &self.failover else {
            return write!(f, "no node stopped: with fewer than three nodes the others are no quorum");
        };
        let at = |q: f64| {
            let times = &failover.reelected;
            times.get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1))).copied()
        };
        let seconds = |d: Option<Duration>| d.map_or_else(|| "-".into(), |d| format!("{:.2} s", d.as_secs_f64()));
        write!(
            f,
            "stopped node {} (it led {} groups; shutdown took {:.2} s): {} re-elected, p50 {}, p99 {}, last {}; {} vote RPCs",
            failover.node,
            failover.groups_led,
            failover.shutdown.as_secs_f64(),
            failover.reelected.len(),
            seconds(at(0.5)),
            seconds(at(0.99)),
            seconds(failover.reelected.last().copied()),
            failover.votes
        )
    }
}
