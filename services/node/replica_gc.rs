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
    pub(super) async fn collect_removed_replicas(&self, active: &Active) {
        let Ok(routes) = self.meta_routes(active).await else { return };
        for replica in active.replicas.all() {
            if replica.group == raft_mod::SYSTEM_GROUP {
                continue;
            }
            let (leads, local_index) = {
                let metrics = replica.raft.metrics();
                let metrics = metrics.borrow_watched();
                let config = &metrics.membership_config;
                let counts_this_node = config.membership().get_node(&active.node_id).is_some();
                let local_index = config.log_id().as_ref().map(|id| id.index).filter(|_| counts_this_node);
                (metrics.current_leader == Some(active.node_id), local_index)
            };
            let recorded = routes.configuration(replica.group);
            if leads || !removed_by_record(active.node_id, local_index, recorded, replica.started.elapsed()) {
                continue;
            }
            match self.remove_replica(active, &replica).await {
                Ok(()) => tracing::info!(group = replica.group, "removed this node's replica: its group left it out"),
                Err(err) => tracing::warn!(group = replica.group, error = %err, "removing a replica"),
            }
        }
    }

    /// Stops `replica` and deletes what this node stored for it. Serialized with starting
    /// replicas, so a message for the group arriving meanwhile starts a fresh, empty one after.
    async fn remove_replica(&self, active: &Active, replica: &Arc<Replica>) -> Result<()> {
        let _starting = self.replica_starts.lock().await;
        replica.mark_removed();
        replica.raft.runtime_config().elect(false);
        replica.raft.shutdown().await.map_err(Error::internal)?;
        active.replicas.remove(replica.group);
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
        Ok(())
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
