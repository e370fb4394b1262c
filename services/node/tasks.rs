//! The background loops of an active node: lease history, persisted status, registration
//! in the node registry, and the leaseholder's maintenance (placement, the routing copy of its
//! ranges' descriptors, size-based splits).

use super::placement::{PassCounts, Placed};
use super::*;

/// Most membership changes one maintenance pass makes in one group.
const PLACEMENT_STEPS: usize = 4;

impl NodeCore {
    /// Records every leader change of `group` this node sees (the lease history of its ranges).
    /// It watches openraft's server metrics, sent only when the vote, the leader or the
    /// membership changes: the full metrics are sent on every turn of the group's Raft loop,
    /// and a task per group woken by each cost the elections after a node's death CPU.
    pub(super) async fn lease_watch(self: Arc<Self>, group: Arc<Replica>) {
        let mut metrics = group.raft.server_metrics();
        loop {
            let (term, leader) = {
                let m = metrics.borrow_and_update();
                (m.vote.leader_id().term, m.current_leader)
            };
            if let Some(leader_id) = leader {
                let mut histories = self.lease_history.lock().unwrap_or_else(|p| p.into_inner());
                let history = histories.entry(group.group).or_default();
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
    pub(super) async fn status_loop(self: Arc<Self>) {
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
            if let Err(err) = self.kv_batch(vec![op], None).await {
                tracing::debug!(error = %err, "persisting node status");
            }
        }
    }

    /// Writes this node's descriptor into the node registry of range 1 (retrying until done).
    pub(super) async fn register_loop(self: Arc<Self>) {
        let Ok(active) = self.active().cloned() else { return };
        let Ok(value) = serde_json::to_vec(&active.descriptor) else { return };
        loop {
            let op = Op::Put { key: keys::node_key(active.node_id), value: value.clone() };
            match self.kv_batch(vec![op], None).await {
                Ok(_) => return,
                Err(err) => tracing::debug!(error = %err, "registering node descriptor"),
            }
            if self.is_draining() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Deletes the spans still recorded as pending deletion (rows of dropped tables whose
    /// statement could not delete them), a few per pass.
    async fn delete_pending_spans(&self) -> Result<()> {
        let pending = self
            .kv_batch(vec![Op::scan_prefix(keys::GC_PREFIX, 16)], None)
            .await?
            .pop()
            .map(|r| r.rows)
            .unwrap_or_default();
        for (key, value) in pending {
            let id = key.strip_prefix(keys::GC_PREFIX).and_then(keys::decode_u64);
            let (Some(id), Some((start, end))) = (id, keys::decode_span(&value)) else {
                tracing::warn!(key = %keys::pretty(&key), "unreadable pending deletion left alone");
                continue;
            };
            kv::delete_pending_span(self, id, start, end).await?;
            tracing::info!(id, "deleted the rows of a dropped table");
        }
        Ok(())
    }

    /// Leaseholder duties, for each group this node leads: replica placement and lease
    /// balance, splitting oversized ranges, and (range 1's) carrying out pending deletions;
    /// load counts are reset when a group's lease comes or goes.
    pub(super) async fn maintenance_loop(self: Arc<Self>) {
        let Ok(active) = self.active().cloned() else { return };
        let mut led: BTreeSet<u64> = BTreeSet::new();
        let mut lease_counts = placement::LeaseCountHistory::new();
        let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
        loop {
            ticker.tick().await;
            if self.is_draining() {
                return;
            }
            if self.elections_first() {
                continue;
            }
            // Scans whose reader went away are closed here, not only when the next one opens.
            self.cursors.sweep(Instant::now());
            self.collect_removed_replicas(&active).await;
            let own = self.lease_load(&active);
            active.gossip.set_lease_load(own.leases, own.qps).await;
            let Ok(mut counts) = self.pass_counts(&active, own).await else { continue };
            counts.compare_leases(&mut lease_counts);
            // Read once per pass, not per group: a node may lead thousands of groups, and
            // each of these walks every range the node holds.
            let ranges_by_group = active.ranges_by_group();
            let split_points = match active.state.split_points(self.config.range_max_bytes).await {
                Ok(points) => points,
                Err(err) => {
                    tracing::warn!(error = %err, "looking for split points");
                    Vec::new()
                }
            };
            for group in active.replicas.all() {
                let is_leader = group.raft.metrics().borrow_watched().current_leader == Some(active.node_id);
                if is_leader {
                    led.insert(group.group);
                } else if led.remove(&group.group) {
                    // Load is counted only while holding the lease: it is forgotten when the
                    // lease goes, so a later tenure starts afresh. Not when it comes: this pass
                    // may first see a new group's lease after the group has served (and
                    // counted) requests, and would wipe them.
                    if let Some(ranges) = ranges_by_group.get(&group.group) {
                        self.load.forget(|id| ranges.iter().any(|desc| desc.range_id == id));
                    }
                }
                if is_leader {
                    let ranges = ranges_by_group.get(&group.group).map_or(&[][..], Vec::as_slice);
                    self.lead_group(&active, &group, ranges, &split_points, &mut counts).await;
                }
            }
        }
    }

    /// One maintenance pass over a group this node leads (until it hands the lease away).
    /// `ranges` are the group's ranges, `split_points` the node's oversized ranges' midpoints.
    async fn lead_group(
        &self,
        active: &Active,
        group: &Replica,
        ranges: &[RangeDescriptor],
        split_points: &[Vec<u8>],
        counts: &mut PassCounts,
    ) {
        // A few changes in a row (add, then promote, ...): each one committed before the next
        // is decided, so a new group reaches its replicas without waiting a pass per step.
        for _ in 0..PLACEMENT_STEPS {
            match self.place_replicas(active, group, counts).await {
                Ok(Placed::LeaseMoved) => return,
                Ok(Placed::Changed) => {}
                Ok(Placed::Nothing) => break,
                Err(err) => {
                    tracing::warn!(node = active.node_id, group = group.group, error = %err, "replica placement");
                    break;
                }
            }
        }
        if let Err(err) = self.keep_meta_current(group, ranges).await {
            tracing::debug!(group = group.group, error = %err, "keeping the routing copy current");
        }
        if group.group == raft_mod::SYSTEM_GROUP
            && let Err(err) = self.delete_pending_spans().await
        {
            tracing::warn!(error = %err, "deleting the rows of dropped tables");
        }
        let ours = |key: &&Vec<u8>| active.state.with_shared(|s| s.groups.of_key(key)) == Some(group.group);
        for split_key in split_points.iter().filter(ours) {
            match self.split(split_key.clone(), true).await {
                Ok((left, right)) => tracing::info!(left, right, key = %keys::pretty(split_key), "split range by size"),
                Err(err) => tracing::warn!(error = %err, "size-based split failed"),
            }
        }
    }
}
