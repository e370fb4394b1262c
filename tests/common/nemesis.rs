//! The nemesis: faults injected into a process `Cluster` on a random schedule from a logged
//! seed — kill -9 and restart, SIGSTOP and SIGCONT, and, when the cluster has its own network
//! (`Cluster::start_isolated`), a cut of the link between two nodes; the Raft leader is the
//! target half of the time. One fault at a time, so a three-node cluster keeps a quorum
//! between elections. `heal` undoes whatever is in force.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::Cluster;

/// One fault, on node index `.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL; healed by restarting the node on its store.
    Kill(usize),
    /// SIGSTOP; healed by SIGCONT.
    Stop(usize),
    /// The link between two nodes cut both ways; healed by restoring it.
    Cut(usize, usize),
}

/// The random fault schedule and its tally.
pub struct Nemesis {
    pub seed: u64,
    rng: StdRng,
    /// The zero of the times it prints (the history's, so faults line up with operations).
    start: Instant,
    active: Option<Fault>,
    /// Faults injected, by kind.
    pub injected: BTreeMap<&'static str, usize>,
}

/// The seed from `RANGED_NEMESIS_SEED`, or a fresh one; printed so a failure can be replayed.
pub fn seed_from_env() -> u64 {
    let seed =
        std::env::var("RANGED_NEMESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::rng().random());
    println!("nemesis seed {seed} (replay with RANGED_NEMESIS_SEED={seed})");
    seed
}

/// Sends `signal` (`STOP`, `CONT`) to node `i`'s process.
pub fn signal(cluster: &Cluster, i: usize, signal: &str) {
    let child = cluster.nodes[i].child.as_ref().expect("node running");
    let status =
        Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -{signal} node {i}");
}

/// The index of the Raft leader as some running node sees it, if one answers quickly.
pub async fn leader_index(cluster: &Cluster) -> Option<usize> {
    let lookup = async {
        for i in 0..cluster.nodes.len() {
            if cluster.nodes[i].child.is_none() {
                continue;
            }
            if let Some(id) = cluster.leader(i).await {
                let nodes = cluster.status_nodes(i).await.ok()?;
                let addr = nodes
                    .iter()
                    .find_map(|n| n.descriptor.as_ref().filter(|d| d.node_id == id).map(|d| d.address.clone()))?;
                return cluster.nodes.iter().position(|n| n.addr == addr);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(3), lookup).await.ok().flatten()
}

impl Nemesis {
    pub fn new(seed: u64, start: Instant) -> Nemesis {
        Nemesis { seed, rng: StdRng::seed_from_u64(seed), start, active: None, injected: BTreeMap::new() }
    }

    fn log(&self, what: &str) {
        println!("nemesis at {:.3}s: {what}", self.start.elapsed().as_secs_f64());
    }

    /// Injects one fault on the leader (half of the time) or a random node.
    pub async fn inject(&mut self, cluster: &mut Cluster) -> Fault {
        assert!(self.active.is_none(), "one fault at a time");
        let n = cluster.nodes.len();
        let target = match self.rng.random_bool(0.5) {
            true => leader_index(cluster).await.unwrap_or_else(|| self.rng.random_range(0..n)),
            false => self.rng.random_range(0..n),
        };
        let kinds = if cluster.network.is_some() { 3 } else { 2 };
        let fault = match self.rng.random_range(0..kinds) {
            0 => Fault::Kill(target),
            1 => Fault::Stop(target),
            _ => Fault::Cut(target, (target + self.rng.random_range(1..n)) % n),
        };
        match fault {
            Fault::Kill(i) => {
                cluster.kill(i);
                *self.injected.entry("kill -9").or_default() += 1;
            }
            Fault::Stop(i) => {
                signal(cluster, i, "STOP");
                *self.injected.entry("SIGSTOP").or_default() += 1;
            }
            Fault::Cut(a, b) => {
                cluster.network.as_ref().expect("an isolated cluster").cut(a, b);
                *self.injected.entry("network cut").or_default() += 1;
            }
        }
        self.log(&format!("{fault:?}"));
        self.active = Some(fault);
        fault
    }

    /// Undoes the fault in force, if any.
    pub fn heal(&mut self, cluster: &mut Cluster) {
        if let Some(fault) = self.active {
            self.log(&format!("heal {fault:?}"));
        }
        match self.active.take() {
            Some(Fault::Kill(i)) => cluster.restart(i),
            Some(Fault::Stop(i)) => signal(cluster, i, "CONT"),
            Some(Fault::Cut(a, b)) => cluster.network.as_ref().expect("an isolated cluster").heal(a, b),
            None => {}
        }
    }

    /// Runs the schedule until `duration` has passed: a quiet spell of 1–3 s, a fault held
    /// for 1–5 s, healed; repeated. Leaves the cluster healed.
    pub async fn run(&mut self, cluster: &mut Cluster, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let quiet = Duration::from_millis(self.rng.random_range(1000..3000));
            tokio::time::sleep(quiet.min(end.saturating_duration_since(Instant::now()))).await;
            if Instant::now() >= end {
                break;
            }
            self.inject(cluster).await;
            let hold = Duration::from_millis(self.rng.random_range(1000..5000));
            tokio::time::sleep(hold).await;
            self.heal(cluster);
        }
        self.heal(cluster);
    }
}
