//! Applying a split: the range's descriptors change, and the right-hand part of the group's
//! span becomes a Raft group of its own, whose first state (members, log position) every
//! replica derives alike from the split entry.

use redb::Table;

use super::{
    RangeSize, SmShared, Span, TableView, desc_key, desc_prefix, group_key, put_desc, put_meta, range_key_mismatch,
    read_descs,
};
use crate::services::engine::storage_error;
use crate::services::error::{Error, Result};
use crate::services::kv::KvRead;
use crate::services::raft::{LogId, StoredMembership};

fn size_of_span(data: &Table<&'static [u8], &'static [u8]>, start: &[u8], end: &[u8]) -> Result<RangeSize> {
    let mut size = RangeSize::default();
    for (k, v) in TableView(data).scan(start, end, 0)? {
        size.keys += 1;
        size.bytes += (k.len() + v.len()) as u64;
    }
    Ok(size)
}

pub(super) struct SplitTarget<'a> {
    pub(super) group: u64,
    pub(super) span: &'a Span,
    pub(super) split_key: &'a [u8],
    pub(super) right_range_id: u64,
    /// The group's members when the split applies: the new group's first members.
    pub(super) membership: &'a StoredMembership,
    /// Whether this node already runs a replica of the new group (created by a message from
    /// its leader before this node applied the split): its state then comes from a snapshot.
    pub(super) right_started: bool,
}

/// The log position a group created by a split starts at, on every replica alike: term 0,
/// so that its first election (term 1) outranks it, and past index 0, so that a replica
/// created empty (a node that did not apply the split) is caught up by snapshot.
pub fn split_initial_log_id() -> LogId {
    LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 0, node_id: 0 }, SPLIT_INITIAL_INDEX)
}

/// The index of [`split_initial_log_id`].
pub const SPLIT_INITIAL_INDEX: u64 = 10;

pub(super) fn apply_split(
    data: &Table<&'static [u8], &'static [u8]>,
    meta: &mut Table<&'static str, &'static [u8]>,
    shared: &mut SmShared,
    target: SplitTarget<'_>,
) -> Result<Result<(u64, u64)>> {
    let SplitTarget { group, span, split_key, right_range_id, membership, right_started } = target;
    // Splitting at an existing boundary is a no-op that reports the two ranges, as a retried
    // split or `SPLIT AT` of an existing split point expects.
    if let Some(existing) = shared.ranges.lookup(split_key).filter(|d| d.start_key == split_key) {
        let right = existing.range_id;
        let left = shared.ranges.iter().find(|d| d.end_key == split_key).map(|d| d.range_id).unwrap_or(right);
        return Ok(Ok((left, right)));
    }
    if !span.contains(split_key) {
        return Ok(Err(range_key_mismatch(group)));
    }
    if shared.ranges.get(right_range_id).is_some() || shared.groups.span(right_range_id).is_some() {
        return Ok(Err(Error::FailedPrecondition(format!("range id {right_range_id} is already in use"))));
    }
    // The new group starts with this group's members; a joint configuration (a change half
    // done) would leave it nobody to finish the change, so the split waits for it.
    if membership.membership().get_joint_config().len() > 1 {
        return Ok(Err(Error::Unavailable("the range's replicas are changing; the split is retried".into())));
    }
    let (left, right) = match shared.ranges.plan_split(split_key, right_range_id) {
        Ok(plan) => plan,
        Err(Error::Internal(detail)) => return Err(Error::Internal(detail)),
        Err(err) => return Ok(Err(err)),
    };
    let old_size = shared.sizes.get(&left.range_id).copied().unwrap_or_default();
    let right_size = size_of_span(data, &right.start_key, &right.end_key)?;
    // The right-hand range becomes a Raft group of its own, holding the keys from the split
    // key to this group's end: the new range, and any of this group's ranges after it (a
    // store from before splits created groups has several ranges in one group).
    for moved in read_descs(meta, &desc_prefix(Some(group)))? {
        if moved.start_key.as_slice() > split_key {
            meta.remove(desc_key(group, moved.range_id).as_str()).map_err(storage_error)?;
            put_desc(meta, right_range_id, &moved)?;
        }
    }
    put_desc(meta, group, &left)?;
    put_desc(meta, right_range_id, &right)?;
    shared.ranges.insert(left.clone());
    shared.ranges.insert(right.clone());
    let left_span = Span { start: span.start.clone(), end: split_key.to_vec() };
    let right_span = Span { start: split_key.to_vec(), end: span.end.clone() };
    put_meta(meta, &group_key("span", group), &left_span)?;
    put_meta(meta, &group_key("span", right_range_id), &right_span)?;
    shared.groups.insert(group, left_span);
    shared.groups.insert(right_range_id, right_span);
    if !right_started {
        let initial = Some(split_initial_log_id());
        put_meta(meta, &group_key("applied", right_range_id), &initial)?;
        let members = StoredMembership::new(initial, membership.membership().clone());
        put_meta(meta, &group_key("membership", right_range_id), &members)?;
    }
    shared.sizes.insert(right.range_id, right_size);
    shared.sizes.insert(
        left.range_id,
        RangeSize {
            keys: old_size.keys.saturating_sub(right_size.keys),
            bytes: old_size.bytes.saturating_sub(right_size.bytes),
        },
    );
    Ok(Ok((left.range_id, right.range_id)))
}
