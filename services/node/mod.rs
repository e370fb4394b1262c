//! A running node: its store, its place in the cluster (init, join, membership), the KV layer
//! that routes batches to the leaseholder, its view of the cluster for the StatusService, and
//! drain. The gRPC adapters in [`crate::services::grpc`] call into [`NodeCore`].
//!
//! Life of a node:
//! 1. open the store; if it has an identity (cluster id, node id) start Raft and gossip at once;
//! 2. otherwise serve gRPC and either wait for `ranged init` (becoming node 1) or ask the
//!    `--join` nodes for a node id, then become a Raft learner and, while fewer than three
//!    voters exist, a voter;
//! 3. register its descriptor in range 1, gossip it, and as leaseholder split ranges that grow
//!    past `--range-max-bytes`;
//! 4. on drain: gossip DRAINING, hand leadership to a caught-up voter, then stop.
//!
//! This file holds the configuration, the core's state, opening and resuming, drain and stop;
//! the rest by job: [`formation`] (init, join, membership), [`kv_router`] (batches, read
//! leases, splits, load attribution), [`scan_router`] (paged scans from one snapshot), [`views`] (status, node list, replicas),
//! [`meta`] (the routing copy of range descriptors in range 1), [`replica_gc`] (giving up
//! replicas a group removed),
//! [`replicas`] (the Raft groups this node holds a replica of), [`elections`] (paced elections
//! after a node dies) and [`tasks`] (background loops).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{BasicNode, ChangeMembers, ReadPolicy, ServerState};
use tokio::sync::watch;

use crate::pb;
use crate::pb::node_service_client::NodeServiceClient;
use crate::services::accept::ListenerLimits;
use crate::services::allocator;
use crate::services::dialer::Dialer;
use crate::services::engine::{Engine, StoreIdentity};
use crate::services::error::{Error, Result};
use crate::services::keys;
use crate::services::kv::{self, Kv, Op, OpResult};
use crate::services::load::{LoadMetric, LoadRates, LoadSample, LoadTracker};
use crate::services::membership::{self, Membership, NodeDescriptor, NodeMembership};
use crate::services::metrics::{self as node_metrics, CpuSampler, RaftMessages, SqlStats, StatusRecord};
use crate::services::raft::heartbeats::Heartbeats;
use crate::services::raft::network::Transport;
use crate::services::raft::state_machine::{RangeSize, StateStore};
use crate::services::raft::{self as raft_mod, Command, CommandResponse, MAX_VOTERS, NodeId, TypeConfig};
#[cfg(test)]
use crate::services::ranges;
use crate::services::ranges::{RangeDescriptor, RangeIndex};
use crate::services::sql::session::SessionRegistry;
use crate::services::sql::{catalog, users};
use crate::services::status::{LeaseRecord, NodeView, ReplicaStatus, TableNames};
use crate::services::tls::TlsMaterials;

mod elections;
mod formation;
mod kv_router;
mod meta;
mod peer_watch;
mod placement;
mod quiescence;
mod range_list;
mod replica_gc;
mod replicas;
mod scan_router;
mod tasks;
mod views;

pub use peer_watch::WATCH_EVENT_EVERY as PEER_WATCH_EVENT_EVERY;
pub use placement::DecommissionStatus;
pub use replicas::{Clock, Replica, ReplicaSetup, Replicas};

/// Default `--range-max-bytes`: a range above this size splits in two (CockroachDB: 512 MiB).
pub const DEFAULT_RANGE_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Default `--join-timeout`: how long a new node waits for any `--join` node to answer.
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a KV request waits for Raft (commit or leadership check) before giving up.
pub const RAFT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node-to-node formation call (handshake, join) may take.
const FORMATION_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the leaseholder looks for ranges to split and voters to replace.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a vote for a group this node does not hold waits for a split to create it: a
/// few heartbeats (the commit reaches followers with the next one), under the election
/// timeout a candidate waits before it campaigns again.
const SPLIT_APPLY_WAIT: Duration = Duration::from_millis(450);
/// How often a node that is a member asks the leader again whether it still is.
const MEMBERSHIP_RECHECK: Duration = Duration::from_secs(5);
/// How long drain waits for another voter to take over leadership.
const DRAIN_LEADERSHIP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long drain waits for the voter it handed leadership to before it silences its
/// heartbeats instead, so that an election replaces it.
const DRAIN_TRANSFER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long drain waits for reads already past the draining check to finish.
const DRAIN_READS_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything a node needs to start, already validated (the CLI builds it from flags).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `host:port` other nodes use to reach this node's gRPC listener.
    pub advertise_addr: String,
    /// `host:port` clients use for SQL (advertised in the node's descriptor).
    pub sql_addr: String,
    /// `host:port` clients use for HTTP (advertised in the node's descriptor).
    pub http_addr: String,
    /// Other nodes' `--listen-addr` (this node's own address may appear and is skipped).
    pub join: Vec<String>,
    /// The store directory.
    pub store: PathBuf,
    /// `--locality` tiers.
    pub locality: Vec<(String, String)>,
    /// `--cluster-name`; nodes with different names refuse each other.
    pub cluster_name: String,
    /// TLS materials, `None` in `--insecure` mode.
    pub tls: Option<TlsMaterials>,
    /// After how long unheard a node counts as DEAD.
    pub time_until_dead: Duration,
    /// Size above which a range splits.
    pub range_max_bytes: u64,
    /// The store's page cache (`--cache`).
    pub cache_bytes: u64,
    /// Half-life of load rates.
    pub stats_half_life: Duration,
    /// How long a new node waits for a `--join` node to answer before giving up.
    pub join_timeout: Duration,
    /// How many closed SQL sessions are kept for the Cluster API.
    pub closed_session_capacity: usize,
    /// How long closed SQL sessions are kept.
    pub closed_session_ttl: Duration,
    /// Bytes one SQL statement may materialize before it fails with 53200.
    pub max_sql_memory_per_statement: u64,
    /// Connection limits and deadlines of the gRPC and SQL listeners.
    pub connections: ConnectionSettings,
    /// Testing only: serve reads from this node's applied state without the read lease or
    /// forwarding (stale reads on purpose, to show the nemesis test's checker catches them).
    pub testing_stale_follower_reads: bool,
    /// Benchmarking only: one AppendEntries in flight per follower (no pipelined stream).
    pub testing_sequential_raft_appends: bool,
}

/// Default `--max-grpc-connections`: each other node holds a few connections to this one, and
/// a `ranged gateway` one; the rest is CLI clients.
pub const DEFAULT_MAX_GRPC_CONNECTIONS: usize = 4096;
/// Default `--grpc-keepalive-interval`: how often an idle gRPC connection is pinged.
pub const DEFAULT_GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Connection limits and deadlines of a node's gRPC and SQL listeners (the HTTP API's are in
/// the gateway's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// `--max-grpc-connections` and the TLS handshake deadline.
    pub grpc: ListenerLimits,
    /// `--grpc-keepalive-interval`.
    pub grpc_keepalive_interval: Duration,
    /// `--max-sql-connections` and the TLS handshake deadline.
    pub sql: ListenerLimits,
    /// `--sql-startup-timeout`: from connecting to authenticated.
    pub sql_startup_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            grpc: ListenerLimits::new(DEFAULT_MAX_GRPC_CONNECTIONS),
            grpc_keepalive_interval: DEFAULT_GRPC_KEEPALIVE_INTERVAL,
            sql: ListenerLimits::new(crate::services::sql::DEFAULT_MAX_CONNECTIONS),
            sql_startup_timeout: crate::services::sql::conn::DEFAULT_STARTUP_TIMEOUT,
        }
    }
}

impl NodeConfig {
    /// An insecure node at `advertise_addr` storing in `store`, joining `join`, with every
    /// other setting at its default (no SQL or HTTP address); for in-process clusters.
    pub fn with_defaults(advertise_addr: String, join: Vec<String>, store: PathBuf) -> Self {
        Self {
            advertise_addr,
            sql_addr: String::new(),
            http_addr: String::new(),
            join,
            store,
            locality: Vec::new(),
            cluster_name: String::new(),
            tls: None,
            time_until_dead: crate::services::membership::DEFAULT_TIME_UNTIL_DEAD,
            range_max_bytes: DEFAULT_RANGE_MAX_BYTES,
            cache_bytes: crate::services::engine::DEFAULT_CACHE_BYTES,
            stats_half_life: crate::services::load::DEFAULT_HALF_LIFE,
            join_timeout: DEFAULT_JOIN_TIMEOUT,
            closed_session_capacity: crate::services::sql::session::DEFAULT_CLOSED_CAPACITY,
            closed_session_ttl: crate::services::sql::session::DEFAULT_CLOSED_TTL,
            max_sql_memory_per_statement: crate::services::sql::limits::DEFAULT_MAX_STATEMENT_MEMORY,
            connections: ConnectionSettings::default(),
            testing_stale_follower_reads: false,
            testing_sequential_raft_appends: false,
        }
    }
}

/// The parts of a node that exist once it has a node id.
pub struct Active {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster's id.
    pub cluster_id: String,
    /// This node's replicas, by Raft group.
    pub replicas: Replicas,
    /// The applied data all its replicas share, with the node-wide range index and sizes.
    pub state: StateStore,
    /// Gossip membership.
    pub gossip: Membership,
    /// This node's descriptor.
    pub descriptor: NodeDescriptor,
}

impl Active {
    /// This node's replica of `group`, or NotFound when it holds none.
    pub fn replica(&self, group: u64) -> Result<Arc<Replica>> {
        self.replicas
            .get(group)
            .ok_or_else(|| Error::NotFound(format!("Raft group {group} has no replica on node {}", self.node_id)))
    }

    /// This node's replica of `group` for a request routed to it, or a NotLeaseholder to
    /// retry while it has none: the group was just created by a split and is still starting.
    pub fn routed_replica(&self, group: u64) -> Result<Arc<Replica>> {
        self.replicas.get(group).ok_or(Error::NotLeaseholder { leader: None })
    }

    /// Whether this node holds a replica of `group` that is a member of it: not one the
    /// group removed, nor one started empty for a leader that has not yet sent it the group.
    pub fn holds(&self, group: u64) -> bool {
        self.replicas.get(group).is_some_and(|replica| {
            let metrics = replica.raft.metrics();
            let member = metrics.borrow_watched().membership_config.membership().get_node(&self.node_id).is_some();
            member && !replica.is_removed()
        })
    }

    /// The ranges of each group this node holds state of, by the node-wide index: one walk
    /// over the index for every group, where asking group by group would walk it per group.
    pub fn ranges_by_group(&self) -> HashMap<u64, Vec<RangeDescriptor>> {
        self.state.with_shared(|shared| {
            let mut groups: HashMap<u64, Vec<RangeDescriptor>> = HashMap::new();
            for desc in shared.ranges.iter() {
                if let Some(group) = shared.groups.of_key(&desc.start_key) {
                    groups.entry(group).or_default().push(desc.clone());
                }
            }
            groups
        })
    }
}

/// The state of one node shared by its gRPC services and background tasks.
pub struct NodeCore {
    config: NodeConfig,
    /// The store: Raft log, state machine, identity.
    engine: Engine,
    /// Where the gRPC listener is bound (gossip uses the same port number over UDP).
    listen_addr: SocketAddr,
    /// Pooled channels to other nodes.
    dialer: Arc<Dialer>,
    /// Every group's heartbeats, queued per peer.
    heartbeats: Arc<Heartbeats>,
    /// Set once, when the node has a node id (init, join, or restart).
    active: OnceLock<Arc<Active>>,
    /// Serializes init and adopting a joined identity, so a node activates at most once.
    formation: tokio::sync::Mutex<()>,
    /// Serializes starting replicas of groups created after activation.
    replica_starts: tokio::sync::Mutex<()>,
    /// Serializes the Raft membership changes this node makes as leader.
    membership_changes: tokio::sync::Mutex<()>,
    draining: AtomicBool,
    /// Load of the ranges this node holds the lease of.
    load: Arc<LoadTracker>,
    /// The first error the node cannot run past; `server::Node` waits on it.
    fatal: watch::Sender<Option<String>>,
    /// Wall-clock start (reported as `started_at`).
    started_at: SystemTime,
    /// Monotonic start (uptime).
    started: Instant,
    sessions: SessionRegistry,
    sql_stats: SqlStats,
    raft_messages: RaftMessages,
    cpu: CpuSampler,
    /// Leaders this node observed per Raft group, newest last (at most `LEASE_HISTORY`).
    lease_history: std::sync::Mutex<HashMap<u64, VecDeque<LeaseRecord>>>,
    /// This node's last measured status and when (reused for `OWN_STATUS_REUSE`).
    own_status: std::sync::Mutex<Option<(Instant, StatusRecord)>>,
    /// This node's membership as last read from range 1 and when (reused for
    /// `OWN_MEMBERSHIP_REUSE`: every replica's membership loop asks for it).
    own_membership: std::sync::Mutex<Option<(Instant, NodeMembership)>>,
    /// Elections this node may still start at once after a leader's node died (see [`elections`]).
    campaigns: Arc<tokio::sync::Semaphore>,
    /// Rounds of paced elections running, and since when some have been (see [`elections`]).
    paced_rounds: Arc<std::sync::Mutex<elections::PacedRounds>>,
    /// Peers whose process is known gone from a refused connection (see [`peer_watch`]).
    peer_downs: Arc<raft_mod::peer_downs::PeerDowns>,
    /// Snapshots of the paged scans this node serves, kept between pages.
    cursors: scan_router::ScanCursors,
    /// Reads served under this node's read lease right now (see [`NodeCore::drain`]).
    lease_reads: AtomicUsize,
    /// Routing records this node found current in range 1 (see [`meta`]).
    meta_seen: meta::MetaSeen,
    /// The routing copy of range 1 as this node last read it.
    meta_routes: meta::MetaRoutesCache,
    /// Range ids this node took from range 1's counter and has not used yet.
    range_ids: tokio::sync::Mutex<std::ops::Range<u64>>,
}

/// How long this node's own measured status is reused when asked for the node list: the
/// measurement walks the store directory and the file systems, too slow to do per request.
const OWN_STATUS_REUSE: Duration = Duration::from_secs(1);
/// How long this node's membership as read from range 1 is reused.
const OWN_MEMBERSHIP_REUSE: Duration = Duration::from_secs(1);

/// How many leader changes are kept.
const LEASE_HISTORY: usize = 16;

impl NodeCore {
    /// This node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The active part of the node, or an error while it has no node id.
    pub fn active(&self) -> Result<&Arc<Active>> {
        self.active.get().ok_or_else(|| {
            Error::FailedPrecondition("node is not initialized: run `ranged init` or wait for it to join".into())
        })
    }

    /// Where the Raft transport delivers a message for `group`: this node's replica of it, or
    /// NotFound when it holds none (the sender backs off).
    pub fn raft_group(&self, group: u64) -> Result<Arc<Replica>> {
        self.active()?.replica(group)
    }

    /// This node's replica of `group`, waiting up to [`SPLIT_APPLY_WAIT`] for it to appear:
    /// the leader of a range just split campaigns for the new group at once, before its
    /// followers have learnt that the split committed and applied it. Refused at once, the
    /// candidate would wait out a whole election timeout before asking again.
    pub async fn raft_group_soon(&self, group: u64) -> Result<Arc<Replica>> {
        let deadline = Instant::now() + SPLIT_APPLY_WAIT;
        loop {
            match self.raft_group(group) {
                Err(Error::NotFound(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => return other,
            }
        }
    }

    /// The SQL sessions of this node.
    pub fn sessions(&self) -> &SessionRegistry {
        &self.sessions
    }

    /// Whether this node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn is_self(&self, addr: &str) -> bool {
        addr == self.config.advertise_addr || addr == self.listen_addr.to_string()
    }

    /// The `--join` addresses but this node's own.
    pub fn peers(&self) -> Vec<String> {
        self.config.join.iter().filter(|addr| !self.is_self(addr)).cloned().collect()
    }

    fn node_client(&self, addr: &str) -> Result<NodeServiceClient<tonic::transport::Channel>> {
        Ok(NodeServiceClient::new(self.dialer.channel(addr)?))
    }

    /// The catalog version this node's state machine has applied (0 before activation).
    pub fn catalog_version(&self) -> u64 {
        self.active.get().map(|active| active.state.with_shared(|s| s.catalog_version)).unwrap_or(0)
    }

    /// Statement counters of this node's SQL layer.
    pub fn sql_stats(&self) -> &SqlStats {
        &self.sql_stats
    }

    /// Raft messages this node's transport has received.
    pub fn raft_messages(&self) -> &RaftMessages {
        &self.raft_messages
    }

    /// Goes on from the load of `group`'s range that its leader handed over with its lease
    /// (a group is one range, with the group's id).
    pub fn take_over_load(&self, group: u64, load: &pb::LoadHandoff) {
        let rates = load.rates.as_ref().map(LoadRates::from).unwrap_or_default();
        // Figures from a peer: never a negative, infinite or absurd span.
        let measured =
            Duration::try_from_secs_f64(load.measured_seconds).unwrap_or_default().min(Duration::from_secs(86_400));
        self.load.take_over(group, &rates, measured);
    }

    /// Drains: gossips DRAINING, refuses new leaseholder work, hands the leadership of each
    /// group it leads to a caught-up voter, then stops Raft and gossip.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let Some(active) = self.active.get().cloned() else { return };
        active.gossip.set_draining().await;
        let groups = active.replicas.all();
        for group in &groups {
            group.raft.runtime_config().elect(false);
            // A transfer lets the target win at once, inside the followers' lease, so this
            // node's read leases must end first: no new lease reads (the draining flag) and
            // none in flight.
            *group.read_lease.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let reads_done = Instant::now() + DRAIN_READS_TIMEOUT;
        while self.lease_reads.load(Ordering::SeqCst) > 0 && Instant::now() < reads_done {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        futures::future::join_all(groups.iter().map(|group| Self::hand_leadership_away(&active, group))).await;
        // Let gossip carry the draining flag before the node goes quiet.
        tokio::time::sleep(membership::GOSSIP_INTERVAL * 2).await;
    }

    /// As drain's last step for one group: if this node leads it, hands leadership to the
    /// voter that can take over soonest.
    async fn hand_leadership_away(active: &Active, group: &Replica) {
        let metrics = group.raft.metrics().borrow_watched().clone();
        if metrics.current_leader == Some(active.node_id)
            && let Some(to) = transfer_target(&metrics)
        {
            let started = Instant::now();
            group.wake();
            if let Err(err) = group.raft.trigger().transfer_leader(to).await {
                tracing::warn!(error = %err, "leadership transfer not started");
            }
            let handed_away = |m: &openraft::RaftMetrics<TypeConfig>| m.current_leader.is_some_and(|l| l != m.id);
            let mut handed =
                group.raft.wait(Some(DRAIN_TRANSFER_TIMEOUT)).metrics(handed_away, "leadership handed away").await;
            if handed.is_err() {
                tracing::warn!(group = group.group, target = to, "leadership transfer timed out; silencing heartbeats");
                // The target did not take over (it may have fallen behind or died): silencing
                // heartbeats makes the followers' election timers elect one of them.
                group.raft.runtime_config().heartbeat(false);
                handed = group
                    .raft
                    .wait(Some(DRAIN_LEADERSHIP_TIMEOUT.saturating_sub(started.elapsed())))
                    .metrics(handed_away, "leadership handed away")
                    .await;
            }
            match handed {
                Ok(metrics) => tracing::info!(
                    group = group.group,
                    target = to,
                    leader = ?metrics.current_leader,
                    millis = started.elapsed().as_millis() as u64,
                    "handed leadership away"
                ),
                Err(err) => {
                    tracing::warn!(group = group.group, error = %err, "no other node took leadership before shutdown")
                }
            }
        }
    }

    /// Stops Raft and gossip (without draining first).
    pub async fn stop(&self) {
        if let Some(active) = self.active.get() {
            for replica in active.replicas.all() {
                if let Err(err) = replica.raft.shutdown().await {
                    tracing::warn!(group = replica.group, error = %err, "raft shutdown");
                }
            }
            active.gossip.shutdown();
        }
    }
}

/// The voter, other than the leader itself, whose replicated log reaches furthest: the one
/// that can take over soonest. `None` without another voter.
fn transfer_target(metrics: &openraft::RaftMetrics<TypeConfig>) -> Option<NodeId> {
    let matched = |id: &NodeId| metrics.replication.as_ref().and_then(|r| r.get(id).cloned().flatten());
    metrics
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != metrics.id)
        .max_by_key(|id| (matched(id).map(|log_id| log_id.index), std::cmp::Reverse(*id)))
}

impl NodeCore {
    /// Opens the store of `config` for a node whose gRPC listener is bound to `listen_addr`.
    /// Returns the core and a receiver that carries the first error the node cannot run past
    /// (e.g. no `--join` node reachable). Call [`NodeCore::resume`] once its gRPC server runs.
    pub async fn open(
        config: NodeConfig,
        listen_addr: SocketAddr,
    ) -> Result<(Arc<NodeCore>, watch::Receiver<Option<String>>)> {
        let engine = Engine::open(&config.store, config.cache_bytes)?;
        let identity = engine.identity()?;
        if let Some(stored) = &identity.cluster_name
            && stored != &config.cluster_name
        {
            return Err(Error::FailedPrecondition(format!(
                "store {} belongs to a cluster named {stored:?}, not {:?}",
                config.store.display(),
                config.cluster_name
            )));
        }
        let (fatal_tx, fatal) = watch::channel(None);
        let sessions = SessionRegistry::new(config.closed_session_capacity, config.closed_session_ttl);
        let dialer = Arc::new(Dialer::new(config.tls.as_ref()));
        let core = Arc::new(NodeCore {
            heartbeats: Arc::new(Heartbeats::new(dialer.clone())),
            dialer,
            load: Arc::new(LoadTracker::new(config.stats_half_life)),
            config,
            engine,
            listen_addr,
            active: OnceLock::new(),
            formation: Default::default(),
            membership_changes: Default::default(),
            replica_starts: Default::default(),
            draining: AtomicBool::new(false),
            fatal: fatal_tx,
            started_at: SystemTime::now(),
            sessions,
            started: Instant::now(),
            sql_stats: SqlStats::default(),
            raft_messages: RaftMessages::default(),
            cpu: CpuSampler::default(),
            lease_history: Default::default(),
            own_status: Default::default(),
            own_membership: Default::default(),
            campaigns: Arc::new(tokio::sync::Semaphore::new(elections::MAX_CAMPAIGNS)),
            paced_rounds: Default::default(),
            peer_downs: Default::default(),
            cursors: scan_router::ScanCursors::new(Default::default()),
            lease_reads: AtomicUsize::new(0),
            meta_seen: Default::default(),
            range_ids: tokio::sync::Mutex::new(0..0),
            meta_routes: Default::default(),
        });
        if let (Some(cluster_id), Some(_)) = (&identity.cluster_id, identity.node_id) {
            core.check_foreign_cluster(cluster_id).await?;
        }
        Ok((core, fatal))
    }

    /// Takes up where the store left off: a node with an identity starts Raft and gossip at
    /// once (finishing an interrupted bootstrap); a new one asks its `--join` nodes to join,
    /// or waits for `ranged init`.
    pub async fn resume(self: &Arc<Self>) -> Result<()> {
        let identity = self.engine.identity()?;
        match (identity.cluster_id, identity.node_id) {
            (Some(cluster_id), Some(node_id)) => {
                tracing::info!(node_id, cluster_id = %cluster_id, "restarting on existing store");
                self.activate(node_id, cluster_id).await?;
                if identity.bootstrap_pending {
                    let core = self.clone();
                    tokio::spawn(async move {
                        // The password given to `init` is not kept anywhere: after a crash in the
                        // middle of bootstrap, root has no password until ALTER USER sets one.
                        if let Err(err) = core.finish_bootstrap(users::root_record(None)).await {
                            let _ = core.fatal.send(Some(format!("cannot finish bootstrap: {err}")));
                        }
                    });
                }
            }
            _ => {
                if !self.peers().is_empty() {
                    tokio::spawn(self.clone().join_loop());
                }
                tracing::info!("node started without a cluster: waiting for `ranged init` or a --join node");
            }
        }
        Ok(())
    }

    /// The address the gRPC listener is bound to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// What the node's Raft groups send their messages on.
    fn raft_transport(&self) -> Transport {
        Transport {
            dialer: self.dialer.clone(),
            heartbeats: self.heartbeats.clone(),
            load: self.load.clone(),
            downs: self.peer_downs.clone(),
        }
    }

    /// The pooled gRPC channels this node dials other nodes with.
    pub fn dialer(&self) -> &Arc<Dialer> {
        &self.dialer
    }
}

#[async_trait::async_trait]
impl Kv for NodeCore {
    async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.kv_batch(ops, None).await
    }

    async fn split(&self, key: Vec<u8>) -> Result<(u64, u64)> {
        NodeCore::split(self, key, false).await
    }

    async fn read_applied(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        NodeCore::read_applied(self, ops).await
    }

    fn catalog_version(&self) -> u64 {
        NodeCore::catalog_version(self)
    }
}
