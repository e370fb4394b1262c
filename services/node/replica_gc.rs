//! Replica GC: a node gives up its replica of a group that no longer counts it as a member
//! (its Raft instance, rows, descriptors, applied state and log). A removed replica rarely
//! hears of its own removal (the leader stops sending to it once the change commits), so the
//! word comes from range 1's routing copy, which records only committed configurations. Left
//! running, such a replica would campaign against the group with a stale log and keep its
//! rows, and a later snapshot of a group overlapping its span would be refused here.
//!
//! Range 1's group is never collected: every node holds it.

use super::*;
use crate::services::wal::WriteBatch;

/// How long a replica started empty (for a leader that is adding this node) may wait for its
/// group's configuration before the routing copy's word can remove it.
const EMPTY_REPLICA_GRACE: Duration = Duration::from_secs(10);

/// Whether a replica is garbage: `recorded` (the members and log index of the configuration
/// the routing copy records for its group) leaves `node_id` out and is at least as new as the
/// replica's own configuration (`local`: its log index, if it has one that counts this node).
/// A replica whose own configuration does not count it (started empty, or caught up from a
/// snapshot taken before it was added) waits [`EMPTY_REPLICA_GRACE`] from its start, `age`
/// ago, for the record to name it.
fn removed_by_record(node_id: NodeId, local: Option<u64>, recorded: Option<(&[NodeId], u64)>, age: Duration) -> bool {
    let Some((members, index)) = recorded else { return false };
    if members.contains(&node_id) {
        return false;
    }
    match local {
        Some(local) => local <= index,
        None => age >= EMPTY_REPLICA_GRACE,
    }
}

impl NodeCore {
    /// Removes every replica of this node that its group no longer counts as a member.
    pub(super) async fn collect_removed_replicas(self: &Arc<Self>, active: &Active) {
        let Ok(routes) = self.meta_routes(active).await else { return };
        for replica in active.replicas.all() {
            if replica.group == raft_mod::SYSTEM_GROUP {
                continue;
            }
            let Some(recorded) = routes.configuration(replica.group) else { continue };
            if !self.is_garbage(active, &replica, recorded) {
                continue;
            }
            match self.remove_replica(active, &replica, recorded).await {
                Ok(true) => tracing::info!(group = replica.group, "removed this node's replica: its group left it out"),
                Ok(false) => tracing::info!(group = replica.group, "kept this node's replica: its group added it back"),
                Err(err) => tracing::warn!(group = replica.group, error = %err, "removing a replica"),
            }
        }
    }

    /// Whether `replica`, as its Raft core last reported, is one the configuration `recorded`
    /// for its group leaves out (see [`removed_by_record`]); never while it leads.
    fn is_garbage(&self, active: &Active, replica: &Replica, recorded: (&[NodeId], u64)) -> bool {
        let metrics = replica.raft.metrics();
        let metrics = metrics.borrow_watched();
        let config = &metrics.membership_config;
        let counts_this_node = config.membership().get_node(&active.node_id).is_some();
        let local_index = config.log_id().as_ref().map(|id| id.index).filter(|_| counts_this_node);
        // By its state, not by the leader it knows: a leader that a change removed reverts to a
        // learner on its own, still naming itself leader until it hears from another.
        let leads = metrics.state == ServerState::Leader;
        !leads && removed_by_record(active.node_id, local_index, Some(recorded), replica.started.elapsed())
    }

    /// Stops `replica`, then decides again on the configuration it stopped with: a message
    /// that arrived after the first look may have added this node back, and the replica may
    /// have acknowledged entries since, which must not be lost. So it is deleted (data, log,
    /// descriptors; `true`) only if it is still garbage once nothing can reach it, and
    /// otherwise started again from what it stored (`false`). Serialized with starting
    /// replicas: a message for the group arriving meanwhile waits, then finds the replica
    /// started again, or none (and starts a fresh, empty one).
    async fn remove_replica(
        self: &Arc<Self>,
        active: &Active,
        replica: &Arc<Replica>,
        recorded: (&[NodeId], u64),
    ) -> Result<bool> {
        let _starting = self.replica_starts.lock().await;
        // Reported as nobody's from now on; a replica started again is a new one.
        replica.mark_removed();
        active.replicas.remove(replica.group);
        replica.raft.runtime_config().elect(false);
        // An error here is a core that had already stopped (or failed): either way nothing
        // reaches it any more, and what it stored decides.
        if let Err(err) = replica.raft.shutdown().await {
            tracing::warn!(group = replica.group, error = %err, "stopping a replica to remove it");
        }
        if !self.is_garbage(active, replica, recorded) {
            self.start_stored_replica(active, replica.group).await?;
            return Ok(false);
        }
        let (state, log, group) = (active.state.clone(), self.engine.log.clone(), replica.group);
        tokio::task::spawn_blocking(move || {
            state.drop_group(group)?;
            let mut batch = WriteBatch::new();
            batch.remove_group(group);
            log.write(batch).map(drop)
        })
        .await
        .map_err(Error::internal)??;
        self.meta_seen().retain(|_, (record, _)| record.group != group);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_goes_once_a_configuration_no_older_than_its_own_leaves_it_out() {
        let young = Duration::from_secs(1);
        // Recorded without node 4, at or after the replica's own configuration.
        assert!(removed_by_record(4, Some(10), Some((&[1, 2, 3], 12)), young));
        assert!(removed_by_record(4, Some(12), Some((&[1, 2, 3], 12)), young));
        // The replica has a newer configuration (it was added again): the record lags.
        assert!(!removed_by_record(4, Some(14), Some((&[1, 2, 3], 12)), young));
        // Still a member, or nothing recorded.
        assert!(!removed_by_record(4, Some(10), Some((&[1, 2, 4], 12)), young));
        assert!(!removed_by_record(4, Some(10), None, young));
        // A replica started empty, or from a snapshot older than its addition, waits a while.
        assert!(!removed_by_record(4, None, Some((&[1, 2, 3], 12)), young));
        assert!(removed_by_record(4, None, Some((&[1, 2, 3], 12)), EMPTY_REPLICA_GRACE));
    }
}
