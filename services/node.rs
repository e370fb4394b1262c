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
//! 4. on drain: gossip DRAINING, stop leading so another voter takes over, then stop.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use tokio::sync::watch;

use crate::pb;
use crate::pb::node_service_client::NodeServiceClient;
use crate::services::dialer::Dialer;
use crate::services::engine::{Engine, StoreIdentity};
use crate::services::error::{Error, Result};
use crate::services::keys;
use crate::services::kv::{self, Kv, Op, OpResult};
use crate::services::load::{LoadMetric, LoadRates, LoadSample, LoadTracker};
use crate::services::membership::{self, Membership, NodeDescriptor};
use crate::services::metrics::{self as node_metrics, CpuSampler, SqlStats, StatusRecord};
use crate::services::raft::log_store::LogStore;
use crate::services::raft::network::NetworkFactory;
use crate::services::raft::state_machine::{RangeSize, StateMachine};
use crate::services::raft::{self as raft_mod, Command, CommandResponse, MAX_VOTERS, NodeId, TypeConfig};
use crate::services::ranges::{self, RangeDescriptor, RangeIndex};
use crate::services::sql::session::SessionRegistry;
use crate::services::sql::{catalog, users};
use crate::services::status::{LeaseRecord, NodeView, ReplicaStatus, TableNames};
use crate::services::tls::TlsMaterials;

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
/// How long drain waits for another voter to take over leadership.
const DRAIN_LEADERSHIP_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Half-life of load rates.
    pub stats_half_life: Duration,
    /// How long a new node waits for a `--join` node to answer before giving up.
    pub join_timeout: Duration,
    /// How many closed SQL sessions are kept for the Cluster API.
    pub closed_session_capacity: usize,
    /// How long closed SQL sessions are kept.
    pub closed_session_ttl: Duration,
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
            stats_half_life: crate::services::load::DEFAULT_HALF_LIFE,
            join_timeout: DEFAULT_JOIN_TIMEOUT,
            closed_session_capacity: crate::services::sql::session::DEFAULT_CLOSED_CAPACITY,
            closed_session_ttl: crate::services::sql::session::DEFAULT_CLOSED_TTL,
        }
    }
}

/// The parts of a node that exist once it has a node id.
pub struct Active {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster's id.
    pub cluster_id: String,
    /// The Raft instance of the (single) group.
    pub raft: Raft<TypeConfig>,
    /// The state machine, for local reads.
    pub state: StateMachine,
    /// Gossip membership.
    pub gossip: Membership,
    /// This node's descriptor.
    pub descriptor: NodeDescriptor,
}

/// The state of one node shared by its gRPC services and background tasks.
pub struct NodeCore {
    config: NodeConfig,
    engine: Engine,
    listen_addr: SocketAddr,
    dialer: Arc<Dialer>,
    active: OnceLock<Arc<Active>>,
    formation: tokio::sync::Mutex<()>,
    membership_changes: tokio::sync::Mutex<()>,
    draining: AtomicBool,
    load: LoadTracker,
    fatal: watch::Sender<Option<String>>,
    started_at: SystemTime,
    started: Instant,
    sessions: SessionRegistry,
    sql_stats: SqlStats,
    cpu: CpuSampler,
    lease_history: std::sync::Mutex<VecDeque<LeaseRecord>>,
    own_status: std::sync::Mutex<Option<(Instant, StatusRecord)>>,
    read_lease: std::sync::Mutex<Option<ReadLease>>,
}

/// A leaseholder's right to serve reads from its own state without a quorum round.
///
/// openraft's followers refuse votes for `leader_lease` (= `ELECTION_TIMEOUT_MAX`) after the
/// last heartbeat they accepted, and do not campaign themselves for longer. So once a quorum
/// has acknowledged a heartbeat sent after `t0` (what `ensure_linearizable` waits for), no
/// other leader can exist before `t0 + ELECTION_TIMEOUT_MAX`; every write acknowledged before
/// the read was applied here first. Reads may skip the round while the same term holds and
/// the lease, shortened by a margin for scheduling delays, has not run out.
///
/// Assumptions, as for any lease: clocks on the nodes advance at about the same rate; and this
/// leader, if it grants a newer candidate its vote (openraft lets a leader whose own vote is
/// older than the lease do so), publishes the newer term in its metrics before that candidate
/// can be elected and commit a write, which takes it at least two more network round trips.
#[derive(Debug, Clone, Copy)]
struct ReadLease {
    term: u64,
    expires: Instant,
}

/// The part of `ELECTION_TIMEOUT_MAX` a read lease uses; the rest is margin.
const READ_LEASE: Duration = Duration::from_millis(crate::services::raft::ELECTION_TIMEOUT_MAX.as_millis() as u64 / 2);

/// How long this node's own measured status is reused when asked for the node list: the
/// measurement walks the store directory and the file systems, too slow to do per request.
const OWN_STATUS_REUSE: Duration = Duration::from_secs(1);

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

    // ---- formation -------------------------------------------------------------------------

    /// Answers who this node is.
    pub fn handshake(&self) -> pb::HandshakeResponse {
        let identity = self.engine.identity().unwrap_or_default();
        let not_ready_reason = self.not_ready_reason().unwrap_or_default();
        pb::HandshakeResponse {
            cluster_id: identity.cluster_id.unwrap_or_default(),
            node_id: identity.node_id.unwrap_or_default(),
            cluster_name: self.config.cluster_name.clone(),
            ready: not_ready_reason.is_empty(),
            not_ready_reason,
        }
    }

    /// Why this node cannot serve now (CockroachDB's readiness reasons), `None` if it can.
    pub fn not_ready_reason(&self) -> Option<String> {
        let Some(active) = self.active.get() else {
            return Some("node is waiting for cluster initialization".into());
        };
        if self.is_draining() {
            return Some("node is shutting down".into());
        }
        let metrics = active.raft.metrics().borrow().clone();
        if metrics.current_leader.is_none() {
            return Some("node is not healthy: no Raft leader".into());
        }
        if !metrics.membership_config.membership().nodes().any(|(id, _)| *id == active.node_id) {
            return Some("node is not healthy: not yet a member".into());
        }
        None
    }

    /// The catalog version this node's state machine has applied (0 before activation).
    pub fn catalog_version(&self) -> u64 {
        self.active.get().map(|a| a.state.with_shared(|s| s.catalog_version)).unwrap_or(0)
    }

    /// Statement counters of this node's SQL layer.
    pub fn sql_stats(&self) -> &SqlStats {
        &self.sql_stats
    }

    async fn handshake_peer(&self, addr: &str) -> Result<pb::HandshakeResponse> {
        let mut request = tonic::Request::new(pb::HandshakeRequest { cluster_name: self.config.cluster_name.clone() });
        request.set_timeout(FORMATION_CALL_TIMEOUT);
        let reply = tokio::time::timeout(FORMATION_CALL_TIMEOUT, self.node_client(addr)?.handshake(request))
            .await
            .map_err(|_| Error::Unavailable(format!("{addr} did not answer")))??;
        Ok(reply.into_inner())
    }

    /// Bootstraps a new cluster with this node as node 1.
    pub async fn init(self: &Arc<Self>, root_password: Option<&str>) -> Result<(String, NodeId)> {
        let _formation = self.formation.lock().await;
        if self.active.get().is_some() || self.engine.identity()?.cluster_id.is_some() {
            return Err(Error::AlreadyExists("cluster has already been initialized".into()));
        }
        for peer in self.peers() {
            if let Ok(reply) = self.handshake_peer(&peer).await
                && !reply.cluster_id.is_empty()
            {
                return Err(Error::AlreadyExists(format!(
                    "cluster has already been initialized (node at {peer} belongs to cluster {})",
                    reply.cluster_id
                )));
            }
        }
        let cluster_id = new_cluster_id();
        let identity = StoreIdentity {
            cluster_id: Some(cluster_id.clone()),
            node_id: Some(1),
            cluster_name: Some(self.config.cluster_name.clone()).filter(|name| !name.is_empty()),
            bootstrap_pending: true,
        };
        self.engine.set_identity(&identity)?;
        self.activate(1, cluster_id.clone()).await?;
        self.finish_bootstrap(users::root_record(root_password)).await?;
        tracing::info!(cluster_id = %cluster_id, "cluster initialized");
        Ok((cluster_id, 1))
    }

    /// Initializes the Raft group with this node alone and writes the system records. Safe to
    /// repeat after a crash: the cluster id is written with a conditional put.
    async fn finish_bootstrap(self: &Arc<Self>, root: users::UserRecord) -> Result<()> {
        let root = &root;
        let active = self.active()?.clone();
        let members = BTreeMap::from([(active.node_id, BasicNode::new(&self.config.advertise_addr))]);
        if !active.raft.is_initialized().await.map_err(Error::internal)? {
            active.raft.initialize(members).await.map_err(Error::internal)?;
        }
        let mut ops = vec![
            Op::ConditionalPut {
                key: keys::CLUSTER_ID.to_vec(),
                value: active.cluster_id.as_bytes().to_vec(),
                expected: None,
            },
            Op::Put { key: keys::NODE_ID_ALLOCATOR.to_vec(), value: keys::encode_u64(1) },
            Op::Put { key: keys::RANGE_ID_ALLOCATOR.to_vec(), value: keys::encode_u64(2) },
            users::put_op(root),
        ];
        ops.extend(catalog::bootstrap_ops());
        for desc in ranges::bootstrap_descriptors() {
            ops.push(Op::Put {
                key: keys::range_descriptor_key(desc.range_id),
                value: serde_json::to_vec(&desc).map_err(Error::internal)?,
            });
        }
        match self.kv_batch(ops, false).await {
            Ok(_) => {}
            // A retried bootstrap finds its own cluster id already written.
            Err(Error::ConditionFailed { actual: Some(actual), .. }) if actual == active.cluster_id.as_bytes() => {}
            Err(err) => return Err(err),
        }
        let mut identity = self.engine.identity()?;
        identity.bootstrap_pending = false;
        self.engine.set_identity(&identity)
    }

    /// Allocates a node id for a joining node (any initialized node may answer).
    pub async fn join(&self, request: pb::JoinRequest) -> Result<pb::JoinResponse> {
        let active = self.active()?.clone();
        self.check_cluster_name(&request.cluster_name)?;
        let results =
            self.kv_batch(vec![Op::Increment { key: keys::NODE_ID_ALLOCATOR.to_vec(), delta: 1 }], false).await?;
        let node_id = results[0].new_value as NodeId;
        tracing::info!(node_id, addr = %request.advertise_addr, "allocated node id to joining node");
        Ok(pb::JoinResponse { cluster_id: active.cluster_id.clone(), node_id })
    }

    fn check_cluster_name(&self, theirs: &str) -> Result<()> {
        if theirs != self.config.cluster_name {
            return Err(Error::FailedPrecondition(format!(
                "cluster name mismatch: this node has --cluster-name {:?}, the other {:?}",
                self.config.cluster_name, theirs
            )));
        }
        Ok(())
    }

    /// Makes a node a member of the Raft group: a learner, then a voter while fewer than
    /// [`MAX_VOTERS`] exist. Runs on the leader; other nodes forward once.
    pub async fn add_member(&self, request: pb::AddMemberRequest) -> Result<pb::AddMemberResponse> {
        let active = self.active()?.clone();
        if request.cluster_id != active.cluster_id {
            return Err(Error::FailedPrecondition(format!(
                "node belongs to cluster {}, this is cluster {}",
                request.cluster_id, active.cluster_id
            )));
        }
        let leader = active.raft.current_leader().await;
        if leader != Some(active.node_id) {
            if request.forwarded {
                return Err(Error::NotLeaseholder { leader });
            }
            let addr = leader.and_then(|id| self.member_addr(&active, id)).ok_or(Error::NotLeaseholder { leader })?;
            let mut forwarded = request.clone();
            forwarded.forwarded = true;
            return Ok(self.node_client(&addr)?.add_member(forwarded).await?.into_inner());
        }
        let _changes = self.membership_changes.lock().await;
        let membership = active.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        if voters.contains(&request.node_id) {
            return Ok(pb::AddMemberResponse { voter: true });
        }
        let is_learner = membership.membership().learner_ids().any(|id| id == request.node_id);
        if !is_learner {
            active
                .raft
                .add_learner(request.node_id, BasicNode::new(&request.advertise_addr), true)
                .await
                .map_err(|err| Error::Unavailable(format!("adding node {} as learner: {err}", request.node_id)))?;
        }
        if voters.len() >= MAX_VOTERS {
            return Ok(pb::AddMemberResponse { voter: false });
        }
        active
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([request.node_id])), false)
            .await
            .map_err(|err| Error::Unavailable(format!("promoting node {} to voter: {err}", request.node_id)))?;
        tracing::info!(node_id = request.node_id, "node became a voter");
        Ok(pb::AddMemberResponse { voter: true })
    }

    fn member_addr(&self, active: &Active, node_id: NodeId) -> Option<String> {
        let membership = active.raft.metrics().borrow().membership_config.clone();
        membership.membership().get_node(&node_id).map(|node| node.addr.clone())
    }

    /// Asks the `--join` nodes for a node id until one answers, then starts this node.
    async fn join_loop(self: Arc<Self>) {
        let peers = self.peers();
        let deadline = Instant::now() + self.config.join_timeout;
        let mut reached = false;
        loop {
            if self.active.get().is_some() {
                return;
            }
            for peer in &peers {
                // A handshake tells a peer that is up (even if uninitialized) from one that is not.
                let Ok(hello) = self.handshake_peer(peer).await else { continue };
                reached = true;
                if hello.cluster_name != self.config.cluster_name {
                    let _ = self.fatal.send(Some(format!(
                        "cannot join {peer}: it has --cluster-name {:?}, this node {:?}",
                        hello.cluster_name, self.config.cluster_name
                    )));
                    return;
                }
                if hello.cluster_id.is_empty() {
                    continue;
                }
                let request = pb::JoinRequest {
                    advertise_addr: self.config.advertise_addr.clone(),
                    cluster_name: self.config.cluster_name.clone(),
                };
                let mut request = tonic::Request::new(request);
                request.set_timeout(FORMATION_CALL_TIMEOUT * 3);
                let outcome = match self.node_client(peer) {
                    Ok(mut client) => client.join(request).await.map(|r| r.into_inner()).map_err(Error::from),
                    Err(err) => Err(err),
                };
                match outcome {
                    Ok(reply) => {
                        if let Err(err) = self.adopt_identity(reply.cluster_id, reply.node_id).await {
                            let _ = self.fatal.send(Some(format!("cannot join the cluster: {err}")));
                        }
                        return;
                    }
                    Err(err) => tracing::debug!(peer = %peer, error = %err, "join attempt failed"),
                }
            }
            if !reached && Instant::now() > deadline {
                let _ = self.fatal.send(Some(format!(
                    "could not reach any --join node ({}) within {}s",
                    peers.join(", "),
                    self.config.join_timeout.as_secs()
                )));
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn adopt_identity(self: &Arc<Self>, cluster_id: String, node_id: NodeId) -> Result<()> {
        let _formation = self.formation.lock().await;
        if self.active.get().is_some() {
            return Ok(());
        }
        self.engine.set_identity(&StoreIdentity {
            cluster_id: Some(cluster_id.clone()),
            node_id: Some(node_id),
            cluster_name: Some(self.config.cluster_name.clone()).filter(|name| !name.is_empty()),
            bootstrap_pending: false,
        })?;
        tracing::info!(node_id, cluster_id = %cluster_id, "joined cluster");
        self.activate(node_id, cluster_id).await
    }

    /// Keeps asking the leader to make this node a member until it is one.
    async fn membership_loop(self: Arc<Self>) {
        let Ok(active) = self.active().cloned() else { return };
        let mut backoff = Duration::from_millis(200);
        loop {
            let membership = active.raft.metrics().borrow().membership_config.clone();
            let is_voter = membership.membership().voter_ids().any(|id| id == active.node_id);
            let is_learner = membership.membership().learner_ids().any(|id| id == active.node_id);
            let voters = membership.membership().voter_ids().count();
            if is_voter || (is_learner && voters >= MAX_VOTERS) || self.is_draining() {
                return;
            }
            let request = pb::AddMemberRequest {
                node_id: active.node_id,
                advertise_addr: self.config.advertise_addr.clone(),
                cluster_id: active.cluster_id.clone(),
                forwarded: false,
            };
            // Any member can route the request to the leader; try the join list, then known members.
            let mut targets = self.peers();
            targets.extend(membership.membership().nodes().map(|(_, node)| node.addr.clone()));
            for target in targets.iter().filter(|addr| !self.is_self(addr)) {
                if let Ok(mut client) = self.node_client(target)
                    && client.add_member(request.clone()).await.is_ok()
                {
                    break;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Starts Raft and gossip for node `node_id` and the background tasks.
    async fn activate(self: &Arc<Self>, node_id: NodeId, cluster_id: String) -> Result<()> {
        let state = StateMachine::open(self.engine.state.clone())?;
        let log = LogStore::new(self.engine.log.clone());
        let config = Arc::new(raft_mod::config(&cluster_id)?);
        let raft = Raft::new(node_id, config, NetworkFactory::new(self.dialer.clone()), log, state.clone())
            .await
            .map_err(Error::internal)?;
        let descriptor = self.descriptor(node_id);
        let gossip = Membership::start(
            &descriptor,
            &cluster_id,
            self.listen_addr,
            &self.config.advertise_addr,
            &self.config.join,
        )
        .await?;
        let active = Arc::new(Active { node_id, cluster_id, raft, state, gossip, descriptor });
        if self.active.set(active).is_err() {
            return Err(Error::Internal("node activated twice".into()));
        }
        tokio::spawn(self.clone().register_loop());
        tokio::spawn(self.clone().membership_loop());
        tokio::spawn(self.clone().maintenance_loop());
        tokio::spawn(self.clone().status_loop());
        tokio::spawn(self.clone().lease_watch());
        Ok(())
    }

    /// Records every leader change this node sees (the lease history of its replicas).
    async fn lease_watch(self: Arc<Self>) {
        let Ok(active) = self.active().cloned() else { return };
        let mut metrics = active.raft.metrics();
        loop {
            let (term, leader) = {
                let m = metrics.borrow_and_update();
                (m.current_term, m.current_leader)
            };
            if let Some(leader_id) = leader {
                let mut history = self.lease_history.lock().unwrap_or_else(|p| p.into_inner());
                if history.back().is_none_or(|last| last.leader_id != leader_id || last.term != term) {
                    if history.len() == LEASE_HISTORY {
                        history.pop_front();
                    }
                    history.push_back(LeaseRecord {
                        term,
                        leader_id,
                        start: crate::services::clock::unix_nanos(SystemTime::now()),
                    });
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Persists this node's metrics in range 1 every [`node_metrics::STATUS_INTERVAL`].
    async fn status_loop(self: Arc<Self>) {
        let Ok(active) = self.active().cloned() else { return };
        let mut ticker = tokio::time::interval(node_metrics::STATUS_INTERVAL);
        loop {
            ticker.tick().await;
            if self.is_draining() {
                return;
            }
            let record = self.status_record(&active).await;
            let Ok(value) = serde_json::to_vec(&record) else { continue };
            let op = Op::Put { key: keys::status_key(active.node_id), value };
            if let Err(err) = self.kv_batch(vec![op], false).await {
                tracing::debug!(error = %err, "persisting node status");
            }
        }
    }

    /// This node's status, measured at most [`OWN_STATUS_REUSE`] ago.
    async fn own_status(&self, active: &Active) -> StatusRecord {
        if let Some((at, record)) = self.own_status.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && at.elapsed() < OWN_STATUS_REUSE
        {
            return record.clone();
        }
        let record = self.status_record(active).await;
        *self.own_status.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), record.clone()));
        record
    }

    /// Measures this node's metrics now.
    pub async fn status_record(&self, active: &Active) -> StatusRecord {
        let cpu = self.cpu.sample();
        let metrics = node_metrics::process_metrics(
            cpu,
            active.descriptor.num_cpus,
            self.started.elapsed(),
            &self.sql_stats,
            self.sessions.live_count(),
        );
        let raft = active.raft.metrics().borrow().clone();
        let is_leader = raft.current_leader == Some(active.node_id);
        let voters = raft.membership_config.membership().voter_ids().count();
        let (ranges, live_bytes) = active
            .state
            .with_shared(|s| (s.ranges.len() as f64, s.sizes.values().map(|z| z.bytes).sum::<u64>() as f64));
        let store_dir = self.engine.dir().to_path_buf();
        let (store_bytes, (capacity, available)) = tokio::task::spawn_blocking(move || {
            (node_metrics::dir_size(&store_dir), node_metrics::disk_space(&store_dir))
        })
        .await
        .unwrap_or((0, (0, 0)));
        let known_nodes = active.gossip.peers().await.len().max(1);
        let underreplicated = voters < known_nodes.min(MAX_VOTERS);
        let mut store = BTreeMap::new();
        store.insert("capacity".to_string(), capacity as f64);
        store.insert("capacity.available".to_string(), available as f64);
        store.insert("capacity.used".to_string(), store_bytes as f64);
        store.insert("livebytes".to_string(), live_bytes);
        store.insert("totalbytes".to_string(), store_bytes as f64);
        store.insert("replicas".to_string(), ranges);
        store.insert("replicas.leaseholders".to_string(), if is_leader { ranges } else { 0.0 });
        store.insert("ranges.unavailable".to_string(), if raft.current_leader.is_none() { ranges } else { 0.0 });
        store.insert("ranges.underreplicated".to_string(), if is_leader && underreplicated { ranges } else { 0.0 });
        store.insert("ranges.overreplicated".to_string(), 0.0);
        StatusRecord {
            node_id: active.node_id,
            metrics,
            store_metrics: BTreeMap::from([(active.node_id, store)]),
            updated_at: crate::services::clock::unix_nanos(SystemTime::now()),
        }
    }

    fn descriptor(&self, node_id: NodeId) -> NodeDescriptor {
        let total_system_memory = sysinfo::System::new()
            .map(|mut system| {
                system.refresh_memory();
                system.total_memory()
            })
            .unwrap_or(0);
        NodeDescriptor {
            node_id,
            address: self.config.advertise_addr.clone(),
            sql_address: self.config.sql_addr.clone(),
            http_address: self.config.http_addr.clone(),
            locality: self.config.locality.clone(),
            build_tag: crate::BUILD_TAG.to_string(),
            started_at: crate::services::clock::unix_nanos(self.started_at),
            num_cpus: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            total_system_memory,
            cluster_name: self.config.cluster_name.clone(),
            decommissioned: false,
        }
    }

    /// Writes this node's descriptor into the node registry of range 1 (retrying until done).
    async fn register_loop(self: Arc<Self>) {
        let Ok(active) = self.active().cloned() else { return };
        let Ok(value) = serde_json::to_vec(&active.descriptor) else { return };
        loop {
            let op = Op::Put { key: keys::node_key(active.node_id), value: value.clone() };
            match self.kv_batch(vec![op], false).await {
                Ok(_) => return,
                Err(err) => tracing::debug!(error = %err, "registering node descriptor"),
            }
            if self.is_draining() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Leaseholder duties: split oversized ranges; reset load counts on lease changes.
    async fn maintenance_loop(self: Arc<Self>) {
        let Ok(active) = self.active().cloned() else { return };
        let mut was_leader = false;
        let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
        loop {
            ticker.tick().await;
            if self.is_draining() {
                return;
            }
            let is_leader = active.raft.metrics().borrow().current_leader == Some(active.node_id);
            if is_leader != was_leader {
                // Load is counted only while holding the lease; a new holder starts afresh.
                self.load.reset();
                was_leader = is_leader;
            }
            if !is_leader {
                continue;
            }
            match active.state.split_points(self.config.range_max_bytes).await {
                Ok(points) => {
                    for split_key in points {
                        match self.split(split_key.clone(), true).await {
                            Ok((left, right)) => {
                                tracing::info!(left, right, key = %keys::pretty(&split_key), "split range by size")
                            }
                            Err(err) => tracing::warn!(error = %err, "size-based split failed"),
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "looking for split points"),
            }
        }
    }

    // ---- KV --------------------------------------------------------------------------------

    /// Runs a batch: here if this node holds the lease, otherwise forwarded to the
    /// leaseholder; retried while the lease moves. `forwarded` batches run only here.
    pub async fn kv_batch(&self, ops: Vec<Op>, forwarded: bool) -> Result<Vec<OpResult>> {
        kv::validate(&ops)?;
        let active = self.active()?.clone();
        if forwarded {
            return self.kv_local(&active, ops).await;
        }
        kv::retry_batch(&ops, || self.kv_route(&active, ops.clone())).await
    }

    async fn kv_route(&self, active: &Active, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        match self.kv_local(active, ops.clone()).await {
            Err(Error::NotLeaseholder { leader: Some(leader) }) if leader != active.node_id => {
                let addr = self.member_addr(active, leader).ok_or(Error::NotLeaseholder { leader: None })?;
                let mut client = crate::pb::kv_service_client::KvServiceClient::new(self.dialer.channel(&addr)?);
                let mut request = tonic::Request::new(pb::BatchRequest::from_ops(ops, true));
                request.set_timeout(RAFT_REQUEST_TIMEOUT + Duration::from_secs(1));
                let reply = client.batch(request).await.map_err(Error::from)?;
                Ok(reply.into_inner().into_results())
            }
            other => other,
        }
    }

    async fn kv_local(&self, active: &Active, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        if self.is_draining() {
            return Err(Error::NotLeaseholder { leader: None });
        }
        if ops.iter().any(Op::is_write) {
            let reply =
                tokio::time::timeout(RAFT_REQUEST_TIMEOUT, active.raft.client_write(Command::Batch(ops.clone())))
                    .await
                    .map_err(|_| Error::DeadlineExceeded("timed out waiting for the write to commit".into()))?;
            match reply {
                Ok(response) => match response.data {
                    CommandResponse::Batch { results, cpu_nanos } => {
                        let results = results?;
                        self.record_load(active, &ops, &results, cpu_nanos);
                        Ok(results)
                    }
                    other => Err(Error::Internal(format!("unexpected apply response {other:?}"))),
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    Err(Error::NotLeaseholder { leader: forward.leader_id })
                }
                Err(err) => Err(Error::Unavailable(format!("write failed: {err}"))),
            }
        } else {
            self.confirm_read_lease(active).await?;
            let (results, cpu_nanos) = active.state.read(ops.clone()).await?;
            self.record_load(active, &ops, &results, cpu_nanos);
            Ok(results)
        }
    }

    /// Returns once this node may serve a linearizable read from its own state: at once while
    /// its read lease holds, otherwise after a quorum round that renews the lease.
    async fn confirm_read_lease(&self, active: &Active) -> Result<()> {
        let (leader, term) = {
            let metrics = active.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.current_leader, metrics.current_term)
        };
        if leader == Some(active.node_id) {
            let lease = *self.read_lease.lock().unwrap_or_else(|p| p.into_inner());
            if lease.is_some_and(|lease| lease.term == term && Instant::now() < lease.expires) {
                return Ok(());
            }
        }
        let sent = Instant::now();
        let check = tokio::time::timeout(RAFT_REQUEST_TIMEOUT, active.raft.ensure_linearizable())
            .await
            .map_err(|_| Error::Unavailable("timed out confirming the lease with a quorum".into()))?;
        match check {
            Ok(_) => {
                // The term read before the round: if leadership changed meanwhile, the lease
                // recorded under the old term is never used.
                if leader == Some(active.node_id) {
                    *self.read_lease.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(ReadLease { term, expires: sent + READ_LEASE });
                }
                Ok(())
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(Error::NotLeaseholder { leader: forward.leader_id })
            }
            Err(err) => Err(Error::Unavailable(format!("read failed: {err}"))),
        }
    }

    /// Attributes one batch's work to the ranges it touched: one query per range, keys and
    /// bytes per operation, CPU time shared evenly.
    fn record_load(&self, active: &Active, ops: &[Op], results: &[OpResult], cpu_nanos: u64) {
        let samples = active.state.with_shared(|shared| load_samples(&shared.ranges, ops, results));
        let share = cpu_nanos / samples.len().max(1) as u64;
        for (range_id, mut sample) in samples {
            sample.cpu_nanos = share;
            self.load.record(range_id, sample);
        }
    }

    /// Splits the range containing `split_key` at that key (a no-op at an existing boundary).
    pub async fn split(&self, split_key: Vec<u8>, forwarded: bool) -> Result<(u64, u64)> {
        if split_key.is_empty() {
            return Err(Error::InvalidArgument("empty split key".into()));
        }
        let active = self.active()?.clone();
        let attempt = || async {
            let reply = tokio::time::timeout(
                RAFT_REQUEST_TIMEOUT,
                active.raft.client_write(Command::Split { split_key: split_key.clone() }),
            )
            .await
            .map_err(|_| Error::DeadlineExceeded("timed out waiting for the split to commit".into()))?;
            match reply {
                Ok(response) => match response.data {
                    CommandResponse::Split(result) => result,
                    other => Err(Error::Internal(format!("unexpected apply response {other:?}"))),
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) if !forwarded => {
                    let addr = forward
                        .leader_id
                        .and_then(|id| self.member_addr(&active, id))
                        .ok_or(Error::NotLeaseholder { leader: forward.leader_id })?;
                    let mut client = crate::pb::kv_service_client::KvServiceClient::new(self.dialer.channel(&addr)?);
                    let reply = client
                        .admin_split(pb::AdminSplitRequest { split_key: split_key.clone().into(), forwarded: true })
                        .await?
                        .into_inner();
                    Ok((reply.left_range_id, reply.right_range_id))
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    Err(Error::NotLeaseholder { leader: forward.leader_id })
                }
                Err(err) => Err(Error::Unavailable(format!("split failed: {err}"))),
            }
        };
        // A split is idempotent (a repeat at the same key is a no-op), so it may be retried.
        let mut backoff = Duration::from_millis(50);
        let deadline = Instant::now() + kv::RETRY_DEADLINE;
        loop {
            match attempt().await {
                Err(Error::NotLeaseholder { .. } | Error::Unavailable(_))
                    if !forwarded && Instant::now() < deadline =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    // ---- status ----------------------------------------------------------------------------

    /// Every node in the registry or in gossip, with its liveness as seen here.
    pub async fn nodes(&self) -> Result<Vec<NodeView>> {
        let active = self.active()?.clone();
        let scan = Op::Scan { start: keys::NODE_PREFIX.to_vec(), end: keys::prefix_end(keys::NODE_PREFIX), limit: 0 };
        let status_scan =
            Op::Scan { start: keys::STATUS_PREFIX.to_vec(), end: keys::prefix_end(keys::STATUS_PREFIX), limit: 0 };
        let mut results = self.kv_batch(vec![scan, status_scan], false).await?;
        let status_rows = results.pop().map(|r| r.rows).unwrap_or_default();
        let rows = results.pop().map(|r| r.rows).unwrap_or_default();
        let mut statuses: HashMap<NodeId, StatusRecord> = HashMap::new();
        for (_, value) in status_rows {
            if let Ok(record) = serde_json::from_slice::<StatusRecord>(&value) {
                statuses.insert(record.node_id, record);
            }
        }
        let mut registry: BTreeMap<NodeId, NodeDescriptor> = BTreeMap::new();
        for (_, value) in rows {
            let desc: NodeDescriptor = serde_json::from_slice(&value).map_err(Error::internal)?;
            registry.insert(desc.node_id, desc);
        }
        let mut peers = active.gossip.peers().await;
        let mut ids: BTreeSet<NodeId> = registry.keys().copied().collect();
        ids.extend(peers.keys().copied());
        let mut views = Vec::new();
        for id in ids {
            let peer = peers.remove(&id).unwrap_or_else(|| active.gossip.unknown_peer(id));
            // Prefer the registry (durable, last known); gossip fills in nodes not yet registered.
            let Some(descriptor) = registry.remove(&id).or(peer.descriptor.clone()) else { continue };
            let liveness = membership::classify(
                peer.heard_from,
                peer.draining,
                descriptor.decommissioned,
                peer.since_last_seen,
                self.config.time_until_dead,
            );
            let last_seen = peer.last_seen.map(crate::services::clock::unix_nanos).unwrap_or(0);
            // This node's own status is measured now rather than read back from its last write.
            let status = if id == active.node_id { Some(self.own_status(&active).await) } else { statuses.remove(&id) };
            views.push(NodeView { descriptor, liveness, last_seen, status });
        }
        Ok(views)
    }

    /// The replicas this node holds (all ranges: one group), optionally only `range_ids`.
    pub async fn ranges(&self, range_ids: &[u64]) -> Result<Vec<ReplicaStatus>> {
        Ok(self.ranges_page(range_ids, 0, usize::MAX).await?.0)
    }

    /// [`NodeCore::ranges`] paged: `limit` of them from `offset` in range id order (unpaged:
    /// key order), and how many matched before paging.
    pub async fn ranges_page(
        &self,
        range_ids: &[u64],
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<ReplicaStatus>, usize)> {
        let active = self.active()?.clone();
        let metrics = active.raft.metrics().borrow().clone();
        let committed = active.raft.with_raft_state(|st| st.committed).await.map_err(Error::internal)?;
        let members: Vec<(NodeId, bool)> = {
            let membership = metrics.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            membership.nodes().map(|(id, _)| (*id, voters.contains(id))).collect()
        };
        let is_leaseholder = metrics.current_leader == Some(active.node_id) && !self.is_draining();
        let raft_state = match metrics.state {
            ServerState::Leader => "StateLeader",
            ServerState::Follower => "StateFollower",
            ServerState::Candidate => "StateCandidate",
            ServerState::Learner => "StateLearner",
            ServerState::Shutdown => "StateShutdown",
        };
        let wanted: BTreeSet<u64> = range_ids.iter().copied().collect();
        // Only the asked-for descriptors are copied out: a hot-ranges call asks for ten of
        // possibly thousands.
        let (selected, total): (Vec<(RangeDescriptor, RangeSize)>, usize) = active.state.with_shared(|shared| {
            let mut matching: Vec<&RangeDescriptor> =
                shared.ranges.iter().filter(|desc| wanted.is_empty() || wanted.contains(&desc.range_id)).collect();
            // Unpaged: key order (spans tile the keyspace). Paged: range id order, the order of
            // the HTTP API's pages, so that pages are stable while ranges split.
            if offset > 0 || limit < matching.len() {
                matching.sort_unstable_by_key(|desc| desc.range_id);
            }
            let total = matching.len();
            let page = matching
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|desc| (desc.clone(), shared.sizes.get(&desc.range_id).copied().unwrap_or_default()))
                .collect();
            (page, total)
        });
        let lease_history: Vec<LeaseRecord> =
            self.lease_history.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        let voters = members.iter().filter(|(_, voter)| *voter).count();
        let underreplicated = voters < members.len().min(MAX_VOTERS);
        let mut out = Vec::with_capacity(selected.len());
        for (descriptor, size) in selected {
            out.push(ReplicaStatus {
                // Filled in by the StatusService from the catalog.
                names: TableNames::default(),
                lease_history: lease_history.clone(),
                no_raft_leader: metrics.current_leader.is_none(),
                underreplicated,
                reporting_node: active.node_id,
                load: if is_leaseholder { self.load.rates(descriptor.range_id) } else { LoadRates::default() },
                descriptor,
                replicas: members.clone(),
                term: metrics.current_term,
                commit_index: committed.map(|id| id.index).unwrap_or(0),
                applied_index: metrics.last_applied.map(|id| id.index).unwrap_or(0),
                last_log_index: metrics.last_log_index.unwrap_or(0),
                leader_id: metrics.current_leader.unwrap_or(0),
                raft_state: raft_state.to_string(),
                is_leaseholder,
                size,
            });
        }
        Ok((out, total))
    }

    /// This node's top `limit` leaseholder replicas by `metric` (none if it holds no lease).
    pub async fn hot_ranges(&self, metric: LoadMetric, limit: usize) -> Result<Vec<ReplicaStatus>> {
        let active = self.active()?.clone();
        if active.raft.metrics().borrow().current_leader != Some(active.node_id) {
            return Ok(Vec::new());
        }
        let top = self.load.top(metric, limit);
        let ids: Vec<u64> = top.iter().map(|(id, _)| *id).collect();
        let mut by_id: HashMap<u64, ReplicaStatus> =
            self.ranges(&ids).await?.into_iter().map(|r| (r.descriptor.range_id, r)).collect();
        Ok(ids.into_iter().filter_map(|id| by_id.remove(&id)).collect())
    }

    // ---- shutdown --------------------------------------------------------------------------

    /// Drains: gossips DRAINING, refuses new leaseholder work, lets another voter take the
    /// lease, then stops Raft and gossip.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let Some(active) = self.active.get().cloned() else { return };
        active.gossip.set_draining().await;
        active.raft.runtime_config().elect(false);
        let voters = active.raft.metrics().borrow().membership_config.membership().voter_ids().count();
        if voters > 1 && active.raft.metrics().borrow().current_leader == Some(active.node_id) {
            // openraft 0.9 has no leadership transfer: silencing heartbeats makes the
            // followers' election timers fire and elect one of them.
            active.raft.runtime_config().heartbeat(false);
            let handed = active
                .raft
                .wait(Some(DRAIN_LEADERSHIP_TIMEOUT))
                .metrics(|m| m.current_leader.is_some_and(|leader| leader != m.id), "leadership handed away")
                .await;
            match handed {
                Ok(metrics) => tracing::info!(leader = ?metrics.current_leader, "handed leadership away"),
                Err(err) => tracing::warn!(error = %err, "no other node took leadership before shutdown"),
            }
        }
        // Let gossip carry the draining flag before the node goes quiet.
        tokio::time::sleep(membership::GOSSIP_INTERVAL * 2).await;
    }

    /// Stops Raft and gossip (without draining first).
    pub async fn stop(&self) {
        if let Some(active) = self.active.get() {
            if let Err(err) = active.raft.shutdown().await {
                tracing::warn!(error = %err, "raft shutdown");
            }
            active.gossip.shutdown();
        }
    }
}

/// Per-range load of one batch.
fn load_samples(index: &RangeIndex, ops: &[Op], results: &[OpResult]) -> Vec<(u64, LoadSample)> {
    let mut samples: BTreeMap<u64, LoadSample> = BTreeMap::new();
    let mut add = |key: &[u8], f: &dyn Fn(&mut LoadSample)| {
        if let Some(desc) = index.lookup(key) {
            f(samples.entry(desc.range_id).or_default());
        }
    };
    for (op, result) in ops.iter().zip(results) {
        match op {
            Op::Get { key } => {
                let bytes = (key.len() + result.value.as_ref().map_or(0, Vec::len)) as u64;
                add(key, &|s| {
                    s.reads += 1;
                    s.read_bytes += bytes;
                });
            }
            Op::Scan { start, .. } => {
                add(start, &|_| {});
                for (k, v) in &result.rows {
                    let bytes = (k.len() + v.len()) as u64;
                    add(k, &|s| {
                        s.reads += 1;
                        s.read_bytes += bytes;
                    });
                }
            }
            Op::Put { key, value } | Op::ConditionalPut { key, value, .. } | Op::PutIfAbsent { key, value } => {
                let bytes = (key.len() + value.len()) as u64;
                add(key, &|s| {
                    s.writes += 1;
                    s.write_bytes += bytes;
                });
            }
            Op::Delete { key } => {
                let bytes = key.len() as u64;
                add(key, &|s| {
                    s.writes += 1;
                    s.write_bytes += bytes;
                });
            }
            Op::DeleteRange { start, .. } => {
                let deleted = result.new_value.max(0) as u64;
                add(start, &|s| {
                    s.writes += deleted;
                });
            }
            Op::Increment { key, .. } => {
                let bytes = (key.len() + 8) as u64;
                add(key, &|s| {
                    s.writes += 1;
                    s.write_bytes += bytes;
                });
            }
        }
    }
    samples.into_iter().collect()
}

fn new_cluster_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

impl NodeCore {
    /// Opens the store of `config` for a node whose gRPC listener is bound to `listen_addr`.
    /// Returns the core and a receiver that carries the first error the node cannot run past
    /// (e.g. no `--join` node reachable). Call [`NodeCore::resume`] once its gRPC server runs.
    pub async fn open(
        config: NodeConfig,
        listen_addr: SocketAddr,
    ) -> Result<(Arc<NodeCore>, watch::Receiver<Option<String>>)> {
        let engine = Engine::open(&config.store)?;
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
        let core = Arc::new(NodeCore {
            dialer: Arc::new(Dialer::new(config.tls.as_ref())),
            load: LoadTracker::new(config.stats_half_life),
            config,
            engine,
            listen_addr,
            active: OnceLock::new(),
            formation: Default::default(),
            membership_changes: Default::default(),
            draining: AtomicBool::new(false),
            fatal: fatal_tx,
            started_at: SystemTime::now(),
            sessions,
            started: Instant::now(),
            sql_stats: SqlStats::default(),
            cpu: CpuSampler::default(),
            lease_history: Default::default(),
            own_status: Default::default(),
            read_lease: Default::default(),
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

    /// The pooled gRPC channels this node dials other nodes with.
    pub fn dialer(&self) -> &Arc<Dialer> {
        &self.dialer
    }
}

impl NodeCore {
    /// Refuses to start on a store whose cluster differs from that of a reachable `--join` node.
    async fn check_foreign_cluster(&self, cluster_id: &str) -> Result<()> {
        for peer in self.peers() {
            if let Ok(reply) = self.handshake_peer(&peer).await
                && !reply.cluster_id.is_empty()
                && reply.cluster_id != cluster_id
            {
                return Err(Error::FailedPrecondition(format!(
                    "store {} belongs to cluster {cluster_id}, but --join node {peer} belongs to cluster {}",
                    self.config.store.display(),
                    reply.cluster_id
                )));
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Kv for NodeCore {
    async fn batch(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        self.kv_batch(ops, false).await
    }

    async fn split(&self, key: Vec<u8>) -> Result<(u64, u64)> {
        NodeCore::split(self, key, false).await
    }

    fn catalog_version(&self) -> u64 {
        NodeCore::catalog_version(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_attributed_to_the_ranges_touched() {
        let mut index = RangeIndex::default();
        for desc in ranges::bootstrap_descriptors() {
            index.insert(desc);
        }
        let (left, right) = index.plan_split(b"m", 3).unwrap();
        index.insert(left);
        index.insert(right);
        let ops = vec![
            Op::Get { key: b"a".to_vec() },
            Op::Put { key: b"n".to_vec(), value: b"12345".to_vec() },
            Op::Scan { start: b"a".to_vec(), end: b"z".to_vec(), limit: 0 },
        ];
        let results = vec![
            OpResult { value: Some(b"xy".to_vec()), ..Default::default() },
            OpResult::default(),
            OpResult {
                rows: vec![(b"b".to_vec(), b"1".to_vec()), (b"p".to_vec(), b"22".to_vec())],
                ..Default::default()
            },
        ];
        let samples = load_samples(&index, &ops, &results);
        assert_eq!(samples.len(), 2);
        let (id2, s2) = samples[0];
        let (id3, s3) = samples[1];
        assert_eq!((id2, s2.reads, s2.read_bytes, s2.writes), (2, 2, 3 + 2, 0));
        assert_eq!((id3, s3.reads, s3.read_bytes, s3.writes, s3.write_bytes), (3, 1, 3, 1, 6));
    }

    #[test]
    fn cluster_ids_are_uuid_shaped_and_distinct() {
        let a = new_cluster_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, new_cluster_id());
    }
}
