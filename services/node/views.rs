//! What the node reports through the StatusService: its measured status, the node list with
//! liveness, and the replicas it holds (all, paged, or the hottest).

use super::*;

impl NodeCore {
    /// This node's status, measured at most [`OWN_STATUS_REUSE`] ago.
    pub(super) async fn own_status(&self, active: &Active) -> StatusRecord {
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
        let live_bytes = active.state.with_shared(|s| s.sizes.values().map(|z| z.bytes).sum::<u64>() as f64);
        // Each group's ranges count once per state: held, led, without a leader, under- or
        // overreplicated (the last two by the leader, as CockroachDB's leaseholder reports them).
        let (mut replicas, mut leaseholders, mut unavailable, mut underreplicated, mut overreplicated) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut quiescent = 0.0;
        let ranges_by_group = active.ranges_by_group();
        let peers = active.gossip.peers().await;
        for group in active.replicas.all().into_iter().filter(|group| !group.is_removed()) {
            // Read in place, from the server metrics: a copy of the full metrics per group
            // allocates their replication maps for the fields read here. Leading is read by
            // state, as the range views' `is_leaseholder` is: a leader that a change removed
            // reverts to a learner that still names itself leader.
            let (voter_ids, leader, is_leader) = {
                let watch = group.raft.server_metrics();
                let raft = watch.borrow_watched();
                let voter_ids = raft.membership_config.membership().voter_ids().collect::<Vec<NodeId>>();
                (voter_ids, raft.current_leader, raft.state == ServerState::Leader)
            };
            let ranges = ranges_by_group.get(&group.group).map_or(0, Vec::len) as f64;
            let (under, over) = replication_seen(active, &peers, &voter_ids);
            replicas += ranges;
            quiescent += if matches!(group.clock().0, Clock::Quiesced { .. }) { ranges } else { 0.0 };
            leaseholders += if is_leader { ranges } else { 0.0 };
            unavailable += if leader.is_none() { ranges } else { 0.0 };
            underreplicated += if is_leader && under { ranges } else { 0.0 };
            overreplicated += if is_leader && over { ranges } else { 0.0 };
        }
        let store_dir = self.engine.dir().to_path_buf();
        let (store_bytes, (capacity, available)) = tokio::task::spawn_blocking(move || {
            (node_metrics::dir_size(&store_dir), node_metrics::disk_space(&store_dir))
        })
        .await
        .unwrap_or((0, (0, 0)));
        let mut store = BTreeMap::new();
        store.insert("capacity".to_string(), capacity as f64);
        store.insert("capacity.available".to_string(), available as f64);
        store.insert("capacity.used".to_string(), store_bytes as f64);
        store.insert("livebytes".to_string(), live_bytes);
        store.insert("totalbytes".to_string(), store_bytes as f64);
        store.insert("replicas".to_string(), replicas);
        store.insert("replicas.leaseholders".to_string(), leaseholders);
        store.insert("replicas.quiescent".to_string(), quiescent);
        store.insert("ranges.unavailable".to_string(), unavailable);
        store.insert("ranges.underreplicated".to_string(), underreplicated);
        store.insert("ranges.overreplicated".to_string(), overreplicated);
        for (name, count) in self.raft_messages.metrics() {
            store.insert(name.to_string(), count);
        }
        StatusRecord {
            node_id: active.node_id,
            metrics,
            store_metrics: BTreeMap::from([(active.node_id, store)]),
            updated_at: crate::services::clock::unix_nanos(SystemTime::now()),
        }
    }

    pub(super) fn descriptor(&self, node_id: NodeId) -> NodeDescriptor {
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

    /// Every node in the registry or in gossip, with its liveness as seen here.
    pub async fn nodes(&self) -> Result<Vec<NodeView>> {
        let active = self.active()?.clone();
        let scan = Op::scan_prefix(keys::NODE_PREFIX, 0);
        let status_scan = Op::scan_prefix(keys::STATUS_PREFIX, 0);
        // The node list comes from this node's applied copy of range 1, as CockroachDB reads
        // node descriptors from gossip: it must answer while range 1's leader is frozen or cut
        // off, and a moment's lag does not matter to a list refreshed continually.
        let membership_scan = Op::scan_prefix(keys::MEMBERSHIP_PREFIX, 0);
        let mut results = self.read_applied(vec![scan, status_scan, membership_scan]).await?;
        let memberships = membership_records(results.pop().map(|r| r.rows).unwrap_or_default());
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
            let Some(mut descriptor) = registry.remove(&id).or(peer.descriptor.clone()) else { continue };
            let node_membership = memberships.get(&id).copied().unwrap_or_default();
            descriptor.decommissioned = node_membership == NodeMembership::Decommissioned;
            let liveness = membership::classify(
                peer.heard_from,
                peer.draining,
                node_membership,
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

    /// The replicas this node holds, optionally only `range_ids`.
    pub async fn ranges(&self, range_ids: &[u64]) -> Result<Vec<ReplicaStatus>> {
        Ok(self.ranges_page(range_ids, 0, usize::MAX).await?.0)
    }

    /// What this node knows of its replica of `group`, as each of the group's ranges reports
    /// it, with `peers` as gossip sees them now.
    async fn group_view(
        &self,
        active: &Active,
        group: &Replica,
        peers: &HashMap<NodeId, membership::GossipPeer>,
    ) -> Result<GroupView> {
        let metrics = group.raft.metrics().borrow_watched().clone();
        let committed =
            group.raft.with_raft_state(|st| st.local_committed().cloned()).await.map_err(Error::internal)?;
        let members: Vec<(NodeId, bool)> = {
            let membership = metrics.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            membership.nodes().map(|(id, _)| (*id, voters.contains(id))).collect()
        };
        let voters: Vec<NodeId> = members.iter().filter(|(_, voter)| *voter).map(|(id, _)| *id).collect();
        let (underreplicated, overreplicated) = replication_seen(active, peers, &voters);
        let lease_history: Vec<LeaseRecord> = (self.lease_history.lock().unwrap_or_else(|p| p.into_inner()))
            .get(&group.group)
            .map(|history| history.iter().copied().collect())
            .unwrap_or_default();
        Ok(GroupView {
            // A leader a change removed reverts to a learner still naming itself leader.
            is_leaseholder: metrics.state == ServerState::Leader && !self.is_draining(),
            raft_state: match metrics.state {
                ServerState::Leader => "StateLeader",
                ServerState::Follower => "StateFollower",
                ServerState::Candidate => "StateCandidate",
                ServerState::Learner => "StateLearner",
                ServerState::Shutdown => "StateShutdown",
            },
            commit_index: committed.map(|id| id.index).unwrap_or(0),
            members,
            underreplicated,
            overreplicated,
            lease_history,
            metrics,
        })
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
        // A replica the group removed reports nothing as its own.
        let held = |group: u64| active.replicas.get(group).filter(|replica| !replica.is_removed());
        let wanted: BTreeSet<u64> = range_ids.iter().copied().collect();
        // Only the asked-for descriptors are copied out: a hot-ranges call asks for ten of
        // possibly thousands, found by id.
        let (selected, total): (Vec<(RangeDescriptor, RangeSize, Arc<Replica>)>, usize) =
            active.state.with_shared(|shared| {
                let in_scope: Box<dyn Iterator<Item = &RangeDescriptor>> = if wanted.is_empty() {
                    Box::new(shared.ranges.iter())
                } else {
                    Box::new(wanted.iter().filter_map(|id| shared.ranges.get(*id)))
                };
                let mut matching: Vec<(&RangeDescriptor, Arc<Replica>)> = in_scope
                    .filter_map(|desc| shared.groups.of_key(&desc.start_key).and_then(held).map(|group| (desc, group)))
                    .collect();
                // Unpaged: key order (spans tile the keyspace). Paged: range id order, the order
                // of the HTTP API's pages, so that pages are stable while ranges split.
                if offset > 0 || limit < matching.len() {
                    matching.sort_unstable_by_key(|(desc, _)| desc.range_id);
                } else if !wanted.is_empty() {
                    matching.sort_unstable_by(|(a, _), (b, _)| a.start_key.cmp(&b.start_key));
                }
                let total = matching.len();
                let page = matching
                    .into_iter()
                    .skip(offset)
                    .take(limit)
                    .map(|(desc, group)| {
                        (desc.clone(), shared.sizes.get(&desc.range_id).copied().unwrap_or_default(), group)
                    })
                    .collect();
                (page, total)
            });
        // Views only of the groups on the page, asked of their Raft cores at once: a hot-ranges
        // call wants ten of possibly thousands.
        let peers = active.gossip.peers().await;
        let mut groups: HashMap<u64, &Arc<Replica>> = HashMap::new();
        for (_, _, replica) in &selected {
            groups.entry(replica.group).or_insert(replica);
        }
        let asked = groups.into_values().map(|replica| {
            let (active, peers) = (&active, &peers);
            async move { (replica, self.group_view(active, replica, peers).await) }
        });
        let mut views = HashMap::new();
        for (replica, view) in futures::future::join_all(asked).await {
            match view {
                Ok(view) => {
                    views.insert(replica.group, view);
                }
                // Collected meanwhile (replica GC stops its Raft core): no longer held here.
                Err(_) if replica.is_removed() => {}
                Err(err) => return Err(err),
            }
        }
        let mut out = Vec::with_capacity(selected.len());
        for (descriptor, size, replica) in selected {
            let Some(view) = views.get(&replica.group) else { continue };
            let metrics = &view.metrics;
            out.push(ReplicaStatus {
                // Filled in by the StatusService from the catalog.
                names: TableNames::default(),
                lease_history: view.lease_history.clone(),
                no_raft_leader: metrics.current_leader.is_none(),
                underreplicated: view.underreplicated,
                overreplicated: view.overreplicated,
                reporting_node: active.node_id,
                load: if view.is_leaseholder { self.load.rates(descriptor.range_id) } else { LoadRates::default() },
                descriptor,
                replicas: view.members.clone(),
                term: metrics.current_term,
                commit_index: view.commit_index,
                applied_index: metrics.last_applied.map(|id| id.index).unwrap_or(0),
                last_log_index: metrics.last_log_index.unwrap_or(0),
                leader_id: metrics.current_leader.unwrap_or(0),
                raft_state: view.raft_state.to_string(),
                is_leaseholder: view.is_leaseholder,
                size,
            });
        }
        Ok((out, total))
    }

    /// This node's top `limit` leaseholder replicas by `metric` (none if it holds no lease).
    pub async fn hot_ranges(&self, metric: LoadMetric, limit: usize) -> Result<Vec<ReplicaStatus>> {
        self.active()?;
        // Load is recorded only where batches run, on the leaseholder; a group whose lease
        // left has its load forgotten (see the maintenance loop), so what remains is led here
        // (and `ranges` below says which of them still are).
        let top = self.load.top(metric, limit);
        let ids: Vec<u64> = top.iter().map(|(id, _)| *id).collect();
        if ids.is_empty() {
            // (No ids would ask `ranges` for every range.)
            return Ok(Vec::new());
        }
        let mut by_id: HashMap<u64, ReplicaStatus> = (self.ranges(&ids).await?.into_iter())
            .filter(|r| r.is_leaseholder)
            .map(|r| (r.descriptor.range_id, r))
            .collect();
        Ok(ids.into_iter().filter_map(|id| by_id.remove(&id)).collect())
    }
}

/// Whether a group with `voters` is (under, over) replicated, with `peers` as gossip sees
/// them (see [`allocator::replication_problems`]).
fn replication_seen(
    active: &Active,
    peers: &HashMap<NodeId, membership::GossipPeer>,
    voters: &[NodeId],
) -> (bool, bool) {
    let heard = |id: &NodeId| *id == active.node_id || peers.get(id).is_some_and(|peer| peer.heard_from);
    allocator::replication_problems(voters, heard, peers.len())
}

/// One group's state as this node's replica sees it, shared by the group's ranges.
struct GroupView {
    metrics: openraft::RaftMetrics<TypeConfig>,
    commit_index: u64,
    members: Vec<(NodeId, bool)>,
    is_leaseholder: bool,
    raft_state: &'static str,
    underreplicated: bool,
    overreplicated: bool,
    lease_history: Vec<LeaseRecord>,
}

/// The membership records of range 1 by node id (rows that do not decode are skipped: no
/// record means active).
pub(super) fn membership_records(rows: Vec<(Vec<u8>, Vec<u8>)>) -> BTreeMap<NodeId, NodeMembership> {
    rows.into_iter()
        .filter_map(|(key, value)| {
            let id = keys::decode_u64(key.strip_prefix(keys::MEMBERSHIP_PREFIX)?)?;
            Some((id, serde_json::from_slice(&value).ok()?))
        })
        .collect()
}
