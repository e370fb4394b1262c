//! The nemesis: faults injected into a process `Cluster` on a random schedule from a logged
//! seed — kill -9 and restart, SIGSTOP and SIGCONT (the Raft leader half of the time) — one
//! fault at a time, so a three-node cluster keeps a quorum between elections. `heal` undoes
//! whatever is in force.
//!
//! A network cut between two nodes is not among the faults yet: every node of a test cluster
//! listens on 127.0.0.1 and dials from ephemeral ports, so packet rules cannot tell one
//! node's traffic from another's without giving each node its own loopback address.

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
}

/// The random fault schedule and its tally.
pub struct Nemesis {
    pub seed: u64,
    rng: StdRng,
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
    pub fn new(seed: u64) -> Nemesis {
        Nemesis { seed, rng: StdRng::seed_from_u64(seed), active: None, injected: BTreeMap::new() }
    }

    /// Injects one fault on the leader (half of the time) or a random node.
    pub async fn inject(&mut self, cluster: &mut Cluster) -> Fault {
        assert!(self.active.is_none(), "one fault at a time");
        let n = cluster.nodes.len();
        let target = match self.rng.random_bool(0.5) {
            true => leader_index(cluster).await.unwrap_or_else(|| self.rng.random_range(0..n)),
            false => self.rng.random_range(0..n),
        };
        let fault = if self.rng.random_bool(0.5) { Fault::Kill(target) } else { Fault::Stop(target) };
        match fault {
            Fault::Kill(i) => {
                cluster.kill(i);
                *self.injected.entry("kill -9").or_default() += 1;
            }
            Fault::Stop(i) => {
                signal(cluster, i, "STOP");
                *self.injected.entry("SIGSTOP").or_default() += 1;
            }
        }
        println!("nemesis: {fault:?}");
        self.active = Some(fault);
        fault
    }

    /// Undoes the fault in force, if any.
    pub fn heal(&mut self, cluster: &mut Cluster) {
        match self.active.take() {
            Some(Fault::Kill(i)) => cluster.restart(i),
            Some(Fault::Stop(i)) => signal(cluster, i, "CONT"),
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
