//! The routing copy of range descriptors in range 1 (`/Meta/range/<id>`, [`MetaRecord`]).
//! Each range's leaseholder writes its range's record whenever the truth in its group has
//! moved past the copy: after a split, a membership change, or a crash between a split and
//! its record. So the copy converges however it was left, without a cross-range commit
//! between the group that splits and range 1.

use super::*;
use crate::services::ranges::{MetaRecord, RangeDescriptor};

/// How long a record this node has seen in range 1 is trusted before it is read again: a
/// record changed behind the leaseholder's back (by an operator, or damaged) is rewritten
/// within this time.
const META_RECHECK: Duration = Duration::from_secs(30);

/// The records this node last found current in range 1, by range id, with when it checked.
pub(super) type MetaSeen = std::sync::Mutex<HashMap<u64, (MetaRecord, Instant)>>;

impl NodeCore {
    /// As `group`'s leader: writes the record of each of its ranges whose copy in range 1 is
    /// missing, older or different.
    pub(super) async fn keep_meta_current(&self, active: &Active, group: &Replica) -> Result<()> {
        let (voters, learners, membership_index) = {
            let metrics = group.raft.metrics();
            let metrics = metrics.borrow_watched();
            let config = &metrics.membership_config;
            let voters: Vec<NodeId> = config.membership().voter_ids().collect();
            let learners: Vec<NodeId> = config.membership().learner_ids().collect();
            (voters, learners, config.log_id().as_ref().map_or(0, |id| id.index))
        };
        let descriptors: Vec<RangeDescriptor> = active.state.with_shared(|shared| {
            (shared.ranges.iter())
                .filter(|desc| shared.groups.of_key(&desc.start_key) == Some(group.group))
                .cloned()
                .collect()
        });
        for descriptor in descriptors {
            let record = MetaRecord {
                descriptor,
                group: group.group,
                voters: voters.clone(),
                learners: learners.clone(),
                membership_index,
            };
            let range_id = record.descriptor.range_id;
            let fresh = |(seen, at): &(MetaRecord, Instant)| *seen == record && at.elapsed() < META_RECHECK;
            if self.meta_seen().get(&range_id).is_some_and(fresh) {
                continue;
            }
            let key = keys::range_descriptor_key(range_id);
            // This node's copy of range 1 may lag: the write below is conditional on what was
            // read, and a failed condition is read again on the next pass.
            let stored_bytes = self.read_applied(vec![Op::Get { key: key.clone() }]).await?.pop().and_then(|r| r.value);
            let stored: Option<MetaRecord> =
                stored_bytes.as_deref().and_then(|bytes| serde_json::from_slice(bytes).ok());
            if record.supersedes(stored.as_ref()) {
                let value = serde_json::to_vec(&record).map_err(Error::internal)?;
                let write = Op::ConditionalPut { key, value, expected: stored_bytes };
                match self.kv_batch(vec![write], false).await {
                    Ok(_) => tracing::debug!(range_id, "wrote the range's routing record"),
                    Err(Error::ConditionFailed { .. }) => continue,
                    Err(err) => return Err(err),
                }
            } else if stored.as_ref() != Some(&record) {
                // A newer record than this leader's view: its own view will catch up.
                continue;
            }
            self.meta_seen().insert(range_id, (record, Instant::now()));
        }
        Ok(())
    }

    fn meta_seen(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (MetaRecord, Instant)>> {
        self.meta_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every record of the routing copy in this node's applied range 1, in range id order
    /// (unreadable ones skipped).
    pub async fn meta_records(&self) -> Result<Vec<MetaRecord>> {
        let rows = self.read_applied(vec![Op::scan_prefix(keys::META_PREFIX, 0)]).await?;
        Ok((rows.into_iter().flat_map(|r| r.rows))
            .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
            .collect())
    }
}
