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
        let group = active.replicas.get(raft_mod::GROUP).filter(|group| !group.is_removed());
        let cpu = self.cpu.sample();
        let metrics = node_metrics::process_metrics(
            cpu,
            active.descriptor.num_cpus,
            self.started.elapsed(),
            &self.sql_stats,
            self.sessions.live_count(),
        );
        let raft = group.as_ref().map(|group| group.raft.metrics().borrow_watched().clone());
        let leader = raft.as_ref().and_then(|raft| raft.current_leader);
        let is_leader = leader == Some(active.node_id);
        let (ranges, live_bytes) = group.as_ref().map_or((0.0, 0.0), |group| {
            group.state.with_shared(|s| (s.ranges.len() as f64, s.sizes.values().map(|z| z.bytes).sum::<u64>() as f64))
        });
        let store_dir = self.engine.dir().to_path_buf();
        let (store_bytes, (capacity, available)) = tokio::task::spawn_blocking(move || {
            (node_metrics::dir_size(&store_dir), node_metrics::disk_space(&store_dir))
        })
        .await
        .unwrap_or((0, (0, 0)));
        let voter_ids: Vec<NodeId> =
            raft.as_ref().map(|raft| raft.membership_config.membership().voter_ids().collect()).unwrap_or_default();
        let (underreplicated, overreplicated) = self.replication(active, &voter_ids).await;
        let mut store = BTreeMap::new();
        store.insert("capacity".to_string(), capacity as f64);
        store.insert("capacity.available".to_string(), available as f64);
        store.insert("capacity.used".to_string(), store_bytes as f64);
        store.insert("livebytes".to_string(), live_bytes);
        store.insert("totalbytes".to_string(), store_bytes as f64);
        store.insert("replicas".to_string(), ranges);
        store.insert("replicas.leaseholders".to_string(), if is_leader { ranges } else { 0.0 });
        store.insert("ranges.unavailable".to_string(), if leader.is_none() { ranges } else { 0.0 });
        store.insert("ranges.underreplicated".to_string(), if is_leader && underreplicated { ranges } else { 0.0 });
        store.insert("ranges.overreplicated".to_string(), if is_leader && overreplicated { ranges } else { 0.0 });
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

    /// Whether a group with `voters` is (under, over) replicated: fewer voters on nodes heard
    /// from than the cluster's known nodes could give it (up to [`MAX_VOTERS`]; a voter on a
    /// dead or unreachable node counts as missing, as in CockroachDB), or more than
    /// [`MAX_VOTERS`] voters.
    async fn replication(&self, active: &Active, voters: &[NodeId]) -> (bool, bool) {
        let peers = active.gossip.peers().await;
        let heard = |id: &NodeId| *id == active.node_id || peers.get(id).is_some_and(|peer| peer.heard_from);
        allocator::replication_problems(voters, heard, peers.len())
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
        let group = active.replica(raft_mod::GROUP)?;
        if group.is_removed() {
            return Ok((Vec::new(), 0));
        }
        let metrics = group.raft.metrics().borrow_watched().clone();
        let committed =
            group.raft.with_raft_state(|st| st.local_committed().cloned()).await.map_err(Error::internal)?;
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
        let (selected, total): (Vec<(RangeDescriptor, RangeSize)>, usize) = group.state.with_shared(|shared| {
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
        let voters: Vec<NodeId> = members.iter().filter(|(_, voter)| *voter).map(|(id, _)| *id).collect();
        let (underreplicated, overreplicated) = self.replication(&active, &voters).await;
        let mut out = Vec::with_capacity(selected.len());
        for (descriptor, size) in selected {
            out.push(ReplicaStatus {
                // Filled in by the StatusService from the catalog.
                names: TableNames::default(),
                lease_history: lease_history.clone(),
                no_raft_leader: metrics.current_leader.is_none(),
                underreplicated,
                overreplicated,
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
        let group = active.replica(raft_mod::GROUP)?;
        if group.raft.metrics().borrow_watched().current_leader != Some(active.node_id) {
            return Ok(Vec::new());
        }
        let top = self.load.top(metric, limit);
        let ids: Vec<u64> = top.iter().map(|(id, _)| *id).collect();
        let mut by_id: HashMap<u64, ReplicaStatus> =
            self.ranges(&ids).await?.into_iter().map(|r| (r.descriptor.range_id, r)).collect();
        Ok(ids.into_iter().filter_map(|id| by_id.remove(&id)).collect())
    }
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
