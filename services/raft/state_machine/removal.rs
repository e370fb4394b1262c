//! Removing a replica's state from the node (replica GC): the rows of its group's span, its
//! range descriptors and its applied state, in one transaction, after which the node-wide
//! index and sizes are counted again without it.

use super::snapshot::{clear_descs, clear_span};
use super::{Span, StateStore, get_meta, group_key};
use crate::services::engine::{DATA, STATE_META, storage_error};
use crate::services::error::Result;
use crate::services::raft::SYSTEM_GROUP;

impl StateStore {
    /// Deletes everything this node stored for `group`, whose replica has stopped. The caller
    /// has established that the group no longer counts this node as a member: the rows go.
    pub fn drop_group(&self, group: u64) -> Result<()> {
        let _gate = self.apply_gate.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write().map_err(storage_error)?;
        {
            let mut meta = txn.open_table(STATE_META).map_err(storage_error)?;
            if let Some(span) = get_meta::<Span>(&meta, &group_key("span", group))? {
                let mut data = txn.open_table(DATA).map_err(storage_error)?;
                clear_span(&mut data, &span)?;
            }
            clear_descs(&mut meta, group)?;
            for name in ["span", "applied", "membership", "snapshot_meta", "snapshot_data"] {
                meta.remove(group_key(name, group).as_str()).map_err(storage_error)?;
            }
        }
        txn.commit().map_err(storage_error)?;
        self.started.lock().unwrap_or_else(|p| p.into_inner()).remove(&group);
        let mut reloaded = StateStore::load_shared(&self.db)?;
        let mut shared = self.shared.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The catalog is range 1's. A node that no longer holds range 1 (decommissioned) has
        // no version to key cached descriptors on: 0 turns the cache off.
        reloaded.catalog_version = if group == SYSTEM_GROUP { 0 } else { shared.catalog_version };
        reloaded.meta_version = shared.meta_version + 1;
        *shared = reloaded;
        Ok(())
    }
}
