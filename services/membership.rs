//! Membership and liveness through gossip (chitchat, UDP on the `--listen-addr` port). Each
//! node gossips its descriptor and a draining flag; chitchat's phi-accrual failure detector says
//! which peers are heard from. Liveness as seen by this node:
//!
//! | liveness | when |
//! |---|---|
//! | DECOMMISSIONED | the node registry marks it so (overrides the rest) |
//! | DRAINING | heard from, and it gossips `draining` |
//! | LIVE | heard from |
//! | UNAVAILABLE | not heard from for less than `--time-until-dead` |
//! | DEAD | not heard from for `--time-until-dead` or more |
//!
//! A node never heard from since this node started counts as last seen at this node's start,
//! so a freshly restarted observer does not call its peers dead at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use serde::{Deserialize, Serialize};

use crate::services::error::{Error, Result};

/// How often a node gossips. Failure detection takes roughly 15–20 intervals.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(250);
/// Default `--time-until-dead`, as in CockroachDB.
pub const DEFAULT_TIME_UNTIL_DEAD: Duration = Duration::from_secs(300);

const DESCRIPTOR_KEY: &str = "descriptor";
const DRAINING_KEY: &str = "draining";
const LEASES_KEY: &str = "leases";
const LEASE_QPS_KEY: &str = "lease_qps";

/// A node's liveness, with CockroachDB's `NodeLivenessStatus` numbering (which
/// `pb::Liveness` shares, so `as i32` is the wire value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    /// A value this build does not know (from the wire only; never classified here).
    Unknown = 0,
    /// Not heard from for `--time-until-dead`.
    Dead = 1,
    /// Recently not heard from.
    Unavailable = 2,
    /// Heard from.
    Live = 3,
    /// Being decommissioned.
    Decommissioning = 4,
    /// Decommissioned.
    Decommissioned = 5,
    /// Heard from, shutting down.
    Draining = 6,
}

impl Liveness {
    /// The one table of names: (CLI name, CockroachDB's API name).
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Liveness::Unknown => ("UNKNOWN", "NODE_STATUS_UNKNOWN"),
            Liveness::Dead => ("DEAD", "NODE_STATUS_DEAD"),
            Liveness::Unavailable => ("UNAVAILABLE", "NODE_STATUS_UNAVAILABLE"),
            Liveness::Live => ("LIVE", "NODE_STATUS_LIVE"),
            Liveness::Decommissioning => ("DECOMMISSIONING", "NODE_STATUS_DECOMMISSIONING"),
            Liveness::Decommissioned => ("DECOMMISSIONED", "NODE_STATUS_DECOMMISSIONED"),
            Liveness::Draining => ("DRAINING", "NODE_STATUS_DRAINING"),
        }
    }

    /// The upper-case name printed by the CLI (`LIVE`).
    pub fn name(self) -> &'static str {
        self.names().0
    }

    /// CockroachDB's name, used in the API's error texts (`NODE_STATUS_LIVE`).
    pub fn api_name(self) -> &'static str {
        self.names().1
    }

    /// The liveness a wire value stands for (unknown values: [`Liveness::Unknown`]).
    pub fn from_wire(value: i32) -> Self {
        [
            Liveness::Dead,
            Liveness::Unavailable,
            Liveness::Live,
            Liveness::Decommissioning,
            Liveness::Decommissioned,
            Liveness::Draining,
        ]
        .into_iter()
        .find(|l| *l as i32 == value)
        .unwrap_or(Liveness::Unknown)
    }
}

/// Whether a node is, or is being taken, out of the cluster: CockroachDB's
/// `MembershipStatus`, set by `ranged node decommission|recommission` and kept in range 1
/// (`/System/membership/<id>`; no record means active).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeMembership {
    /// A full member.
    #[default]
    Active,
    /// Its replicas are moving off.
    Decommissioning,
    /// Out of the cluster: it holds no replica and the fan-out skips it.
    Decommissioned,
}

impl NodeMembership {
    /// CockroachDB's lower-case name (`decommissioning`), as its CLI prints it.
    pub fn name(self) -> &'static str {
        match self {
            NodeMembership::Active => "active",
            NodeMembership::Decommissioning => "decommissioning",
            NodeMembership::Decommissioned => "decommissioned",
        }
    }
}

/// Classifies a node from what gossip says of it and its membership record (CockroachDB's
/// order: a decommissioned node, or a decommissioning one gone dead, is DECOMMISSIONED).
pub fn classify(
    heard_from: bool,
    draining: bool,
    membership: NodeMembership,
    since_last_seen: Duration,
    time_until_dead: Duration,
) -> Liveness {
    let dead = !heard_from && since_last_seen >= time_until_dead;
    match membership {
        NodeMembership::Decommissioned => Liveness::Decommissioned,
        NodeMembership::Decommissioning if dead => Liveness::Decommissioned,
        NodeMembership::Decommissioning => Liveness::Decommissioning,
        NodeMembership::Active if heard_from && draining => Liveness::Draining,
        NodeMembership::Active if heard_from => Liveness::Live,
        NodeMembership::Active if dead => Liveness::Dead,
        NodeMembership::Active => Liveness::Unavailable,
    }
}

/// What a node says of itself: gossiped, and stored in the node registry of range 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeDescriptor {
    /// The node id.
    pub node_id: u64,
    /// Internal gRPC address (`--advertise-addr`).
    pub address: String,
    /// PostgreSQL address.
    pub sql_address: String,
    /// HTTP address.
    pub http_address: String,
    /// `--locality` tiers, in order.
    pub locality: Vec<(String, String)>,
    /// Build version.
    pub build_tag: String,
    /// Start time, nanoseconds since the epoch.
    pub started_at: i64,
    /// Logical CPUs.
    pub num_cpus: u32,
    /// Total memory, bytes.
    pub total_system_memory: u64,
    /// `--cluster-name`.
    pub cluster_name: String,
    /// Whether the node is decommissioned, as reported (the membership record in range 1 is
    /// the authority; see [`NodeMembership`]).
    #[serde(default)]
    pub decommissioned: bool,
}

/// One peer as gossip sees it now.
#[derive(Debug, Clone)]
pub struct GossipPeer {
    /// The descriptor it gossips.
    pub descriptor: Option<NodeDescriptor>,
    /// Whether the failure detector hears from it.
    pub heard_from: bool,
    /// Whether it says it is draining.
    pub draining: bool,
    /// How many Raft groups it says it leads (its leases), if it has said.
    pub leases: Option<usize>,
    /// The queries per second the ranges it leads serve, if it has said.
    pub lease_qps: Option<f64>,
    /// When this node last heard from it (wall clock), if ever.
    pub last_seen: Option<SystemTime>,
    /// How long since it was last heard from (or since this node started).
    pub since_last_seen: Duration,
}

/// The gossip membership of one node.
pub struct Membership {
    handle: ChitchatHandle,
    started: Instant,
    last_seen: Arc<Mutex<HashMap<u64, (Instant, SystemTime)>>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Membership {
    /// Joins the gossip of `cluster_id`, listening on UDP `listen_addr` and reachable at
    /// `advertise` (`host:port`, resolved now), seeded by the `--join` addresses.
    pub async fn start(
        descriptor: &NodeDescriptor,
        cluster_id: &str,
        listen_addr: SocketAddr,
        advertise: &str,
        seeds: &[String],
    ) -> Result<Self> {
        let advertise_addr = tokio::net::lookup_host(advertise)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| Error::InvalidArgument(format!("cannot resolve advertise address {advertise:?}")))?;
        let chitchat_id = ChitchatId {
            node_id: descriptor.node_id.to_string().into(),
            generation_id: descriptor.started_at as u64,
            gossip_advertise_addr: advertise_addr,
        };
        let config = ChitchatConfig {
            chitchat_id,
            cluster_id: cluster_id.to_string(),
            gossip_interval: GOSSIP_INTERVAL,
            listen_addr,
            seed_nodes: seeds.to_vec(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: GOSSIP_INTERVAL * 2,
                ..Default::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let initial = vec![
            (DESCRIPTOR_KEY.to_string(), serde_json::to_string(descriptor).map_err(Error::internal)?),
            (DRAINING_KEY.to_string(), "false".to_string()),
        ];
        let handle = spawn_chitchat(config, initial, &UdpTransport)
            .await
            .map_err(|err| Error::FailedPrecondition(format!("cannot start gossip on UDP {listen_addr}: {err}")))?;
        let last_seen: Arc<Mutex<HashMap<u64, (Instant, SystemTime)>>> = Arc::default();
        let chitchat = handle.chitchat();
        let seen = last_seen.clone();
        // Records, every gossip interval, which peers the failure detector hears from.
        let poller = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(GOSSIP_INTERVAL);
            loop {
                ticker.tick().await;
                let live: Vec<u64> =
                    chitchat.lock().await.live_nodes().filter_map(|id| id.node_id.parse().ok()).collect();
                let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                for id in live {
                    seen.insert(id, (Instant::now(), SystemTime::now()));
                }
            }
        });
        Ok(Self { handle, started: Instant::now(), last_seen, poller })
    }

    /// Announces that this node is draining.
    pub async fn set_draining(&self) {
        let chitchat = self.handle.chitchat();
        chitchat.lock().await.self_node_state().set(DRAINING_KEY, "true");
    }

    /// Announces how many Raft groups this node leads and the queries per second they serve,
    /// which the nodes even out.
    pub async fn set_lease_load(&self, leases: usize, qps: f64) {
        let chitchat = self.handle.chitchat();
        let mut chitchat = chitchat.lock().await;
        let state = chitchat.self_node_state();
        state.set(LEASES_KEY, leases.to_string());
        // Whole queries: gossip carries a change only when the text changes.
        state.set(LEASE_QPS_KEY, format!("{qps:.0}"));
    }

    /// Every node gossip knows of, by node id. A node that restarted appears once, with its
    /// newest generation.
    pub async fn peers(&self) -> HashMap<u64, GossipPeer> {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let live: std::collections::HashSet<&ChitchatId> = guard.live_nodes().collect();
        let mut newest: HashMap<u64, (&ChitchatId, bool)> = HashMap::new();
        for id in guard.node_states().keys() {
            let Ok(node_id) = id.node_id.parse::<u64>() else { continue };
            let heard = live.contains(id);
            let replace = match newest.get(&node_id) {
                Some((existing, existing_heard)) => {
                    (heard && !existing_heard)
                        || (heard == *existing_heard && id.generation_id > existing.generation_id)
                }
                None => true,
            };
            if replace {
                newest.insert(node_id, (id, heard));
            }
        }
        let seen = self.last_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let mut peers = HashMap::new();
        for (node_id, (id, heard_from)) in newest {
            let state = guard.node_state(id);
            let descriptor = state
                .and_then(|s| s.get(DESCRIPTOR_KEY))
                .and_then(|text| serde_json::from_str::<NodeDescriptor>(text).ok());
            let draining = state.and_then(|s| s.get(DRAINING_KEY)) == Some("true");
            let mut peer = self.peer(node_id, descriptor, heard_from, draining, &seen);
            peer.leases = state.and_then(|s| s.get(LEASES_KEY)).and_then(|text| text.parse().ok());
            peer.lease_qps = state.and_then(|s| s.get(LEASE_QPS_KEY)).and_then(|text| text.parse().ok());
            peers.insert(node_id, peer);
        }
        peers
    }

    fn peer(
        &self,
        node_id: u64,
        descriptor: Option<NodeDescriptor>,
        heard_from: bool,
        draining: bool,
        seen: &HashMap<u64, (Instant, SystemTime)>,
    ) -> GossipPeer {
        let (since_last_seen, last_seen) = match seen.get(&node_id) {
            Some((instant, wall)) => (instant.elapsed(), Some(*wall)),
            None => (self.started.elapsed(), None),
        };
        GossipPeer { descriptor, heard_from, draining, leases: None, lease_qps: None, last_seen, since_last_seen }
    }

    /// A peer gossip has never heard of (known only from the registry).
    pub fn unknown_peer(&self, node_id: u64) -> GossipPeer {
        let seen = self.last_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        self.peer(node_id, None, false, false, &seen)
    }

    /// Leaves the gossip.
    pub fn shutdown(&self) {
        self.poller.abort();
        let _ = self.handle.initiate_shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD_AFTER: Duration = Duration::from_secs(300);

    #[test]
    fn classification_follows_the_table() {
        let s = Duration::from_secs;
        use NodeMembership::*;
        assert_eq!(classify(true, false, Active, s(0), DEAD_AFTER), Liveness::Live);
        assert_eq!(classify(true, true, Active, s(0), DEAD_AFTER), Liveness::Draining);
        assert_eq!(classify(false, false, Active, s(10), DEAD_AFTER), Liveness::Unavailable);
        assert_eq!(classify(false, true, Active, s(299), DEAD_AFTER), Liveness::Unavailable);
        assert_eq!(classify(false, false, Active, s(300), DEAD_AFTER), Liveness::Dead);
        assert_eq!(classify(true, false, Decommissioned, s(0), DEAD_AFTER), Liveness::Decommissioned);
        assert_eq!(classify(true, true, Decommissioning, s(0), DEAD_AFTER), Liveness::Decommissioning);
        assert_eq!(classify(false, false, Decommissioning, s(10), DEAD_AFTER), Liveness::Decommissioning);
        assert_eq!(classify(false, false, Decommissioning, s(300), DEAD_AFTER), Liveness::Decommissioned);
    }

    #[test]
    fn liveness_numbers_match_cockroachdb() {
        assert_eq!(Liveness::Dead as i32, 1);
        assert_eq!(Liveness::Live as i32, 3);
        assert_eq!(Liveness::Draining as i32, 6);
    }
}
