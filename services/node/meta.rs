//! The routing copy of range descriptors in range 1 (`/Meta/range/<id>`, [`MetaRecord`]).
//! Each range's leaseholder writes its range's record whenever the truth in its group has
//! moved past the copy: after a split, a membership change, or a crash between a split and
//! its record. So the copy converges however it was left, without a cross-range commit
//! between the group that splits and range 1.

use super::*;
use crate::services::raft::groups::GroupIndex;
use crate::services::raft::state_machine::Span;
use crate::services::ranges::{MetaRecord, RangeDescriptor};

/// How long a record this node has seen in range 1 is trusted before it is read again: a
/// record changed behind the leaseholder's back (by an operator, or damaged) is rewritten
/// within this time.
const META_RECHECK: Duration = Duration::from_secs(30);

/// The records this node last found current in range 1, by range id, with when it checked.
pub(super) type MetaSeen = std::sync::Mutex<HashMap<u64, (MetaRecord, Instant)>>;

/// Where the routing copy places each Raft group: what routes a request whose keys lie in a
/// group this node holds no replica of.
#[derive(Debug, Default)]
pub(super) struct MetaRoutes {
    /// Each group's span: the ranges recorded for it, end to end.
    pub(super) index: GroupIndex,
    /// Each group's members, voters first.
    members: HashMap<u64, Vec<NodeId>>,
    /// The log index of each group's recorded configuration.
    membership_index: HashMap<u64, u64>,
    /// How many ranges each group holds.
    ranges: HashMap<u64, usize>,
}

impl MetaRoutes {
    fn from_records(records: &[MetaRecord]) -> MetaRoutes {
        let mut spans: BTreeMap<u64, Span> = BTreeMap::new();
        let mut members = HashMap::new();
        let mut ranges: HashMap<u64, usize> = HashMap::new();
        let mut membership_index = HashMap::new();
        for record in records {
            *ranges.entry(record.group).or_default() += 1;
            let desc = &record.descriptor;
            let span = spans
                .entry(record.group)
                .or_insert_with(|| Span { start: desc.start_key.clone(), end: desc.end_key.clone() });
            if desc.start_key < span.start {
                span.start = desc.start_key.clone();
            }
            if desc.end_key.is_empty() || (!span.end.is_empty() && desc.end_key > span.end) {
                span.end = desc.end_key.clone();
            }
            members.insert(record.group, record.voters.iter().chain(&record.learners).copied().collect());
            membership_index.insert(record.group, record.membership_index);
        }
        let mut index = GroupIndex::default();
        spans.into_iter().for_each(|(group, span)| index.insert(group, span));
        MetaRoutes { index, members, membership_index, ranges }
    }

    /// How many replicas the routing copy records on each node (one per range and member).
    pub(super) fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for (group, members) in &self.members {
            let ranges = self.ranges_of(*group);
            for id in members {
                *counts.entry(*id).or_default() += ranges;
            }
        }
        counts
    }

    /// How many ranges the routing copy records for `group`.
    pub(super) fn ranges_of(&self, group: u64) -> usize {
        self.ranges.get(&group).copied().unwrap_or(0)
    }

    /// The members of `group` the routing copy records and the log index of that
    /// configuration, if it records the group.
    pub(super) fn configuration(&self, group: u64) -> Option<(&[NodeId], u64)> {
        Some((self.members.get(&group)?.as_slice(), *self.membership_index.get(&group)?))
    }

    /// The members of `group` the routing copy records (none if it records no such group).
    pub(super) fn members(&self, group: u64) -> Vec<NodeId> {
        self.members.get(&group).cloned().unwrap_or_default()
    }
}

/// The routing copy as last read, with the store's `meta_version` then.
pub(super) type MetaRoutesCache = std::sync::Mutex<Option<(u64, Arc<MetaRoutes>)>>;

impl NodeCore {
    /// As `group`'s leader: writes the record of each of its ranges (`ranges`) whose copy in
    /// range 1 is missing, older or different.
    pub(super) async fn keep_meta_current(&self, group: &Replica, ranges: &[RangeDescriptor]) -> Result<()> {
        let (voters, learners, membership_index) = {
            let metrics = group.raft.metrics();
            let metrics = metrics.borrow_watched();
            let config = &metrics.membership_config;
            let membership_index = config.log_id().as_ref().map_or(0, |id| id.index);
            // Only a configuration the group has committed: a node may give up its replica
            // on the record's word, and an uncommitted one may still be undone.
            if metrics.last_applied.as_ref().is_none_or(|applied| applied.index < membership_index) {
                return Ok(());
            }
            let voters: Vec<NodeId> = config.membership().voter_ids().collect();
            let learners: Vec<NodeId> = config.membership().learner_ids().collect();
            (voters, learners, membership_index)
        };
        for descriptor in ranges.iter().cloned() {
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
                match self.kv_batch(vec![write], None).await {
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

    pub(super) fn meta_seen(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (MetaRecord, Instant)>> {
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

    /// The routing copy as this node's range 1 holds it now, read again only when it changed.
    pub(super) async fn meta_routes(&self, active: &Active) -> Result<Arc<MetaRoutes>> {
        let version = active.state.with_shared(|shared| shared.meta_version);
        let cached = self.meta_routes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((seen, routes)) = cached
            && seen == version
        {
            return Ok(routes);
        }
        let routes = Arc::new(MetaRoutes::from_records(&self.meta_records().await?));
        *self.meta_routes.lock().unwrap_or_else(|p| p.into_inner()) = Some((version, routes.clone()));
        Ok(routes)
    }

    /// The group that runs `ops`: by this node's own replicas where it holds the group, by the
    /// routing copy otherwise (or where its replica was removed from the group).
    pub(super) async fn route_group(&self, active: &Active, ops: &[Op]) -> Result<u64> {
        let local = active.state.group_of_ops(ops);
        match local {
            Ok(group) if active.holds(group) => return Ok(group),
            Err(Error::Unavailable(_)) | Ok(_) => {}
            Err(err) => return Err(err),
        }
        match (self.meta_routes(active).await?.index.of_ops(ops), local) {
            // The copy does not know the keys yet (a node that has just joined has not applied
            // range 1): its own replica, not yet a member, may still name the leader.
            (Err(Error::Unavailable(_)), Ok(group)) => Ok(group),
            (routed, _) => routed,
        }
    }

    /// `[start, end)` cut where groups meet, each part with its group (see
    /// [`GroupIndex::pieces`]): by this node's own replica where it holds the group, by the
    /// routing copy otherwise.
    pub(super) async fn pieces(&self, active: &Active, start: &[u8], end: &[u8]) -> Result<Vec<(u64, Span)>> {
        let routes = self.meta_routes(active).await?;
        let groups = routes.index.ids().len() + active.replicas.all().len();
        raft_mod::groups::cut(start, end, groups, |from, end| {
            let local = active.state.with_shared(|shared| shared.groups.first_piece(from, end));
            match local {
                Ok((group, piece)) if active.holds(group) => Ok((group, piece)),
                _ => routes.index.first_piece(from, end),
            }
        })
    }

    /// The members of `group` to ask for its leaseholder: this node's view where it holds a
    /// replica, the routing copy's otherwise.
    pub(super) async fn group_members(&self, active: &Active, group: u64) -> Result<Vec<NodeId>> {
        if active.holds(group) {
            return Ok(self.member_ids(active, group));
        }
        let recorded = self.meta_routes(active).await?.members(group);
        Ok(if recorded.is_empty() { self.member_ids(active, group) } else { recorded })
    }
}
