//! Cluster formation and membership: the handshake, `init` and bootstrap, joining through
//! `--join` nodes, becoming a Raft learner then voter, and refusing a foreign cluster.

use super::*;

impl NodeCore {
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
        let groups = active.replicas.all();
        if groups.is_empty() {
            return Some("node is not healthy: no replica of the Raft groups".into());
        }
        if groups.iter().any(|group| group.is_removed()) {
            return Some("node is decommissioned".into());
        }
        // Range 1's group, which every node joins, and the other groups this node is a member of.
        let system = |group: &&Arc<Replica>| group.group == raft_mod::SYSTEM_GROUP;
        for group in groups.iter().filter(|group| system(group) || active.holds(group.group)) {
            let metrics = group.raft.metrics().borrow_watched().clone();
            if metrics.current_leader.is_none() {
                return Some(format!("node is not healthy: no Raft leader of group {}", group.group));
            }
            if !metrics.membership_config.membership().nodes().any(|(id, _)| *id == active.node_id) {
                return Some(format!("node is not healthy: not yet a member of group {}", group.group));
            }
        }
        None
    }

    pub(super) async fn handshake_peer(&self, addr: &str) -> Result<pb::HandshakeResponse> {
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

    /// Initializes the Raft groups with this node alone and writes the system records. Safe
    /// to repeat after a crash: the cluster id is written with a conditional put.
    pub(super) async fn finish_bootstrap(self: &Arc<Self>, root: users::UserRecord) -> Result<()> {
        let root = &root;
        let active = self.active()?.clone();
        let members = BTreeMap::from([(active.node_id, BasicNode::new(&self.config.advertise_addr))]);
        for group in active.replicas.all() {
            if !group.raft.is_initialized().await.map_err(Error::internal)? {
                group.raft.initialize(members.clone()).await.map_err(Error::internal)?;
            }
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
        match self.kv_batch(ops, None).await {
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
        // Until the bootstrap batch has set the node id allocator, an increment would start
        // from nothing and hand out node 1's own id (the batch then resets the allocator).
        // The joining node retries.
        if self.engine.identity()?.bootstrap_pending {
            return Err(Error::Unavailable("the cluster is still being initialized".into()));
        }
        let results =
            self.kv_batch(vec![Op::Increment { key: keys::NODE_ID_ALLOCATOR.to_vec(), delta: 1 }], None).await?;
        let node_id = results[0].new_value as NodeId;
        tracing::info!(node_id, addr = %request.advertise_addr, "allocated node id to joining node");
        Ok(pb::JoinResponse { cluster_id: active.cluster_id.clone(), node_id })
    }

    pub(super) fn check_cluster_name(&self, theirs: &str) -> Result<()> {
        if theirs != self.config.cluster_name {
            return Err(Error::FailedPrecondition(format!(
                "cluster name mismatch: this node has --cluster-name {:?}, the other {:?}",
                self.config.cluster_name, theirs
            )));
        }
        Ok(())
    }

    /// Makes a node a member of the request's Raft group: a learner, then a voter while fewer
    /// than [`MAX_VOTERS`] exist. Runs on the group's leader; other nodes forward once.
    pub async fn add_member(&self, request: pb::AddMemberRequest) -> Result<pb::AddMemberResponse> {
        let active = self.active()?.clone();
        if request.cluster_id != active.cluster_id {
            return Err(Error::FailedPrecondition(format!(
                "node belongs to cluster {}, this is cluster {}",
                request.cluster_id, active.cluster_id
            )));
        }
        let group = active.replica(if request.group == 0 { raft_mod::SYSTEM_GROUP } else { request.group })?;
        let leader = group.raft.current_leader().await;
        if leader != Some(active.node_id) {
            if request.forwarded {
                return Err(Error::NotLeaseholder { leader });
            }
            let addr = leader.and_then(|id| self.member_addr(&active, id)).ok_or(Error::NotLeaseholder { leader })?;
            let mut forwarded = request.clone();
            forwarded.forwarded = true;
            return Ok(self.node_client(&addr)?.add_member(forwarded).await?.into_inner());
        }
        let node_membership = self.membership_of(request.node_id).await?;
        if node_membership != NodeMembership::Active {
            return Err(Error::FailedPrecondition(format!(
                "node {} is {} and cannot rejoin",
                request.node_id,
                node_membership.name()
            )));
        }
        let _changes = self.membership_changes.lock().await;
        let membership = group.raft.metrics().borrow_watched().membership_config.clone();
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        if voters.contains(&request.node_id) {
            return Ok(pb::AddMemberResponse { voter: true });
        }
        let is_learner = membership.membership().learner_ids().any(|id| id == request.node_id);
        group.wake_to_propose().await;
        if !is_learner {
            group
                .raft
                .add_learner(request.node_id, BasicNode::new(&request.advertise_addr), true)
                .await
                .map_err(|err| Error::Unavailable(format!("adding node {} as learner: {err}", request.node_id)))?;
        }
        if voters.len() >= MAX_VOTERS {
            return Ok(pb::AddMemberResponse { voter: false });
        }
        group
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([request.node_id])), false)
            .await
            .map_err(|err| Error::Unavailable(format!("promoting node {} to voter: {err}", request.node_id)))?;
        tracing::info!(node_id = request.node_id, group = group.group, "node became a voter");
        Ok(pb::AddMemberResponse { voter: true })
    }

    /// The members of `group` as this node last saw them.
    pub(super) fn member_ids(&self, active: &Active, group: u64) -> Vec<NodeId> {
        let Some(group) = active.replicas.get(group) else { return Vec::new() };
        let membership = group.raft.metrics().borrow_watched().membership_config.clone();
        membership.membership().nodes().map(|(id, _)| *id).collect()
    }

    /// Node `node_id`'s address, from the membership of any group that has it.
    pub(super) fn member_addr(&self, active: &Active, node_id: NodeId) -> Option<String> {
        active.replicas.all().into_iter().find_map(|group| {
            let membership = group.raft.metrics().borrow_watched().membership_config.clone();
            membership.membership().get_node(&node_id).map(|node| node.addr.clone())
        })
    }

    /// Asks the `--join` nodes for a node id until one answers, then starts this node.
    pub(super) async fn join_loop(self: Arc<Self>) {
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

    pub(super) async fn adopt_identity(self: &Arc<Self>, cluster_id: String, node_id: NodeId) -> Result<()> {
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

    /// Asks `group`'s leader to make this node a member until it is one, and again every
    /// [`MEMBERSHIP_RECHECK`] after.
    pub(super) async fn membership_loop(self: Arc<Self>, group: Arc<Replica>) {
        let Ok(active) = self.active().cloned() else { return };
        let mut backoff = Duration::from_millis(200);
        loop {
            // Collected as garbage (see `replica_gc`): a later replica of the group has its own loop.
            if !active.replicas.get(group.group).is_some_and(|current| Arc::ptr_eq(&current, &group)) {
                return;
            }
            let membership = group.raft.metrics().borrow_watched().membership_config.clone();
            let is_voter = membership.membership().voter_ids().any(|id| id == active.node_id);
            let is_learner = membership.membership().learner_ids().any(|id| id == active.node_id);
            let voters = membership.membership().voter_ids().count();
            if self.is_draining() {
                return;
            }
            // Settled as far as this node knows. It asks again now and then all the same: a
            // node removed while it was down (a DEAD voter replaced) still sees itself as a
            // member in the log it restarted with, and only the leader can tell it otherwise.
            let settled = is_voter || (is_learner && voters >= MAX_VOTERS);
            // A node leaving the cluster does not ask back in (the leader would refuse); it asks
            // whether it still holds a replica, since once removed it hears nothing more.
            // Nor does it campaign: leadership moves off it, and once removed it may never hear
            // of its removal, so it must not disrupt the group.
            if self.own_membership(&active).await.is_ok_and(|m| m != NodeMembership::Active) {
                group.raft.runtime_config().elect(false);
                if !group.is_removed() && self.removed_by_the_others(&active, &membership).await {
                    tracing::info!(group = group.group, "this node's replica was removed from its Raft group");
                    group.mark_removed();
                }
                tokio::time::sleep(MEMBERSHIP_RECHECK).await;
                continue;
            }
            // Only range 1's group is joined by asking: the allocator places the others.
            if group.group != raft_mod::SYSTEM_GROUP {
                tokio::time::sleep(MEMBERSHIP_RECHECK).await;
                continue;
            }
            let request = pb::AddMemberRequest {
                node_id: active.node_id,
                advertise_addr: self.config.advertise_addr.clone(),
                cluster_id: active.cluster_id.clone(),
                forwarded: false,
                group: group.group,
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
            if settled {
                tokio::time::sleep(MEMBERSHIP_RECHECK).await;
                backoff = Duration::from_millis(200);
            } else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }

    /// Starts Raft and gossip for node `node_id` and the background tasks.
    pub(super) async fn activate(self: &Arc<Self>, node_id: NodeId, cluster_id: String) -> Result<()> {
        let state = StateStore::open(self.engine.state.clone())?;
        let setup = ReplicaSetup {
            node_id,
            cluster_id: &cluster_id,
            engine: &self.engine,
            state: &state,
            transport: self.raft_transport(),
            pipelined: !self.config.testing_sequential_raft_appends,
        };
        // Groups created by splits applied from now on are started by the task below; the
        // channel keeps those applied before it runs.
        let (created_tx, mut created) = tokio::sync::mpsc::unbounded_channel();
        state.on_group_created(created_tx);
        let replicas = Replicas::default();
        // The node bootstrapping the cluster creates every group. Any other node (and this one
        // once bootstrapped) holds range 1's group, which every node does, and receives replicas
        // of the others from their leaders on the nodes the allocator picks; those it held
        // before a restart are in the store, and those it gave up must not come back.
        let bootstrapping = self.engine.identity()?.bootstrap_pending;
        let layouts = raft_mod::groups().into_iter();
        for layout in layouts.filter(|layout| layout.id == raft_mod::SYSTEM_GROUP || bootstrapping) {
            replicas.insert(Replica::start(&setup, &layout).await?)?;
        }
        // Groups split off since the store began (their state is in the store).
        for group in state.stored_groups().into_iter().filter(|group| replicas.get(*group).is_none()) {
            replicas.insert(Replica::start_group(&setup, group, None, &[]).await?)?;
        }
        let descriptor = self.descriptor(node_id);
        let gossip = Membership::start(
            &descriptor,
            &cluster_id,
            self.listen_addr,
            &self.config.advertise_addr,
            &self.config.join,
        )
        .await?;
        let active = Arc::new(Active { node_id, cluster_id, replicas, state, gossip, descriptor });
        if self.active.set(active.clone()).is_err() {
            return Err(Error::Internal("node activated twice".into()));
        }
        tokio::spawn(self.clone().register_loop());
        let core = self.clone();
        tokio::spawn(async move {
            while let Some(group) = created.recv().await {
                if let Err(err) = core.start_split_group(group).await {
                    tracing::warn!(group, error = %err, "starting the Raft group a split created");
                }
            }
        });
        for group in active.replicas.all() {
            tokio::spawn(self.clone().membership_loop(group.clone()));
            tokio::spawn(self.clone().lease_watch(group));
        }
        self.start_dormant(&active);
        tokio::spawn(self.clone().quiescence_loop());
        tokio::spawn(self.clone().peer_watch_loop());
        tokio::spawn(self.clone().maintenance_loop());
        tokio::spawn(self.clone().status_loop());
        Ok(())
    }

    /// This node's replica of `group`, started now if it holds none: for a group a split
    /// created (its state is in the store) or one whose leader sends it a message (it starts
    /// empty and is caught up by snapshot). Its membership and lease loops start with it.
    pub(crate) async fn ensure_replica(self: &Arc<Self>, group: u64) -> Result<Arc<Replica>> {
        let active = self.active()?.clone();
        if let Some(replica) = active.replicas.get(group) {
            return Ok(replica);
        }
        let _starting = self.replica_starts.lock().await;
        if let Some(replica) = active.replicas.get(group) {
            return Ok(replica);
        }
        if self.is_draining() {
            return Err(Error::Unavailable(format!("node {} is draining", active.node_id)));
        }
        let replica = self.start_stored_replica(&active, group).await?;
        tracing::info!(group, "started a replica of a new Raft group");
        Ok(replica)
    }

    /// Starts this node's replica of `group` from what the store holds of it (nothing, for a
    /// replica a leader is adding), with its membership and lease loops. The caller holds
    /// `replica_starts` and has checked that no replica of the group runs.
    pub(super) async fn start_stored_replica(self: &Arc<Self>, active: &Active, group: u64) -> Result<Arc<Replica>> {
        let setup = ReplicaSetup {
            node_id: active.node_id,
            cluster_id: &active.cluster_id,
            engine: &self.engine,
            state: &active.state,
            transport: self.raft_transport(),
            pipelined: !self.config.testing_sequential_raft_appends,
        };
        let replica = active.replicas.insert(Replica::start_group(&setup, group, None, &[]).await?)?;
        tokio::spawn(self.clone().membership_loop(replica.clone()));
        tokio::spawn(self.clone().lease_watch(replica.clone()));
        Ok(replica)
    }

    /// Starts the group a split applied here created. The node leading the split range
    /// campaigns for it at once, so the new range starts with the old one's leaseholder
    /// instead of waiting out an election timeout.
    async fn start_split_group(self: &Arc<Self>, group: u64) -> Result<()> {
        let replica = self.ensure_replica(group).await?;
        let active = self.active()?.clone();
        let left = active.state.with_shared(|shared| shared.groups.left_of(group));
        let leads_left = left
            .and_then(|left| active.replicas.get(left))
            .is_some_and(|left| left.raft.metrics().borrow_watched().current_leader == Some(active.node_id));
        if leads_left {
            replica.raft.trigger().elect(false).await.map_err(|err| Error::Unavailable(err.to_string()))?;
        }
        Ok(())
    }

    /// Refuses to start on a store whose cluster differs from that of a reachable `--join` node.
    pub(super) async fn check_foreign_cluster(&self, cluster_id: &str) -> Result<()> {
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

fn new_cluster_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn cluster_ids_are_uuid_shaped_and_distinct() {
        let a = new_cluster_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, new_cluster_id());
    }
}
