//! The in-memory index: per group, where each live entry is (a segment offset, or its bytes
//! while its batch is still on the way to disk), the purge mark and the metadata. It runs
//! ahead of the disk (batches apply when submitted); collection asks the writer's own
//! account instead (`writer::Durable`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::record::Op;
use crate::services::error::{Error, Result};

/// Where an entry's record is.
#[derive(Debug, Clone)]
pub enum Location {
    /// Submitted, not yet synced: the bytes are served from memory.
    Pending(Arc<[u8]>),
    /// Synced: the whole record at `offset` in segment `segment`, `len` bytes.
    File {
        /// The segment's first sequence (its id).
        segment: u64,
        /// Byte offset of the record's frame in the segment file.
        offset: u64,
        /// Bytes of the whole record, frame included.
        len: u32,
    },
}

/// One group's log and state.
#[derive(Debug, Default)]
pub struct Group {
    /// Index of `entries[0]`; meaningless while `entries` is empty.
    first: u64,
    entries: VecDeque<Location>,
    purged: Option<u64>,
    meta: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Group {
    /// The first live entry's index.
    pub fn first_index(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(self.first)
    }

    /// The last live entry's index.
    pub fn last_index(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first + self.entries.len() as u64 - 1)
    }

    /// The highest index purged so far.
    pub fn purged(&self) -> Option<u64> {
        self.purged
    }

    /// Every metadata key and value.
    pub fn meta(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.meta
    }

    /// The location of entry `index`, if live.
    pub fn location(&self, index: u64) -> Option<&Location> {
        let offset = index.checked_sub(self.first)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.purged.is_none() && self.meta.is_empty()
    }
}

/// Every group's index.
#[derive(Debug, Default)]
pub struct Index {
    groups: HashMap<u64, Group>,
}

/// A group's bounds, as [`check_batch`] follows them through a batch.
#[derive(Clone, Copy, Default)]
struct Bounds {
    first: Option<u64>,
    last: Option<u64>,
    purged: Option<u64>,
}

impl Bounds {
    fn of(group: Option<&Group>) -> Bounds {
        group.map_or_else(Bounds::default, |g| Bounds {
            first: g.first_index(),
            last: g.last_index(),
            purged: g.purged,
        })
    }

    /// The index the next appended entry must have; `None` while any index may start it.
    fn next_index(&self) -> Option<u64> {
        self.last.or(self.purged).map(|last| last + 1)
    }
}

/// Checks that a batch's operations apply in order: entries contiguous with their group's
/// log, no truncation at or below the purge mark, meta keys of at most 255 bytes. Nothing is
/// changed, so a refused batch leaves no trace.
pub fn check_batch(index: &Index, ops: &[(u64, Op)]) -> Result<()> {
    let mut bounds: HashMap<u64, Bounds> = HashMap::new();
    for (group, op) in ops {
        let b = bounds.entry(*group).or_insert_with(|| Bounds::of(index.groups.get(group)));
        match op {
            Op::Entry { index, .. } => {
                if let Some(want) = b.next_index()
                    && *index != want
                {
                    return Err(Error::InvalidArgument(format!(
                        "wal: group {group}: entry {index} appended where {want} is next"
                    )));
                }
                b.first = b.first.or(Some(*index));
                b.last = Some(*index);
            }
            Op::TruncateFrom { index } => {
                if let Some(purged) = b.purged
                    && *index <= purged
                {
                    return Err(Error::InvalidArgument(format!(
                        "wal: group {group}: truncate from {index} at or below the purged index {purged}"
                    )));
                }
                if b.last.is_some_and(|last| last >= *index) {
                    if b.first.is_some_and(|first| first < *index) {
                        b.last = Some(index - 1);
                    } else {
                        (b.first, b.last) = (None, None);
                    }
                }
            }
            Op::PurgeUpTo { index } => {
                if b.last.is_some_and(|last| last <= *index) {
                    (b.first, b.last) = (None, None);
                } else if b.first.is_some_and(|first| first <= *index) {
                    b.first = Some(index + 1);
                }
                b.purged = b.purged.max(Some(*index));
            }
            Op::Meta { key, .. } if key.len() > u8::MAX as usize => {
                return Err(Error::InvalidArgument(format!("wal: group {group}: meta key longer than 255 bytes")));
            }
            Op::RemoveGroup => *b = Bounds::default(),
            Op::Meta { .. } | Op::Commit { .. } => {}
        }
    }
    Ok(())
}

impl Index {
    /// The group's index, if it holds anything.
    pub fn group(&self, group: u64) -> Option<&Group> {
        self.groups.get(&group)
    }

    /// The ids of the groups that hold entries, a purge mark or metadata.
    pub fn group_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.groups.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Applies one operation; an entry needs its location. An entry past a gap restarts its
    /// group's entries there: replay of a log whose oldest segments were collected meets
    /// such gaps, where the entries before the gap were purged by a record further on (the
    /// submit path never makes one, [`check_batch`] refuses it). An entry at or below the
    /// last one is an error.
    pub fn apply(&mut self, group_id: u64, op: &Op, location: Option<Location>) -> Result<()> {
        let group = self.groups.entry(group_id).or_default();
        match op {
            Op::Entry { index, .. } => {
                if let Some(last) = group.last_index() {
                    if *index <= last {
                        return Err(Error::FailedPrecondition(format!(
                            "wal: group {group_id}: entry {index} does not follow {last}"
                        )));
                    }
                    if *index > last + 1 {
                        group.entries.clear();
                    }
                }
                let location = location.ok_or_else(|| Error::Internal("wal: entry without a location".into()))?;
                if group.entries.is_empty() {
                    group.first = *index;
                }
                group.entries.push_back(location);
            }
            Op::TruncateFrom { index } => {
                while group.last_index().is_some_and(|last| last >= *index) {
                    group.entries.pop_back();
                }
            }
            Op::PurgeUpTo { index } => {
                while group.first_index().is_some_and(|first| first <= *index) {
                    group.entries.pop_front();
                    group.first += 1;
                }
                group.purged = group.purged.max(Some(*index));
            }
            Op::Meta { key, value } => {
                group.meta.insert(key.clone(), value.clone());
            }
            Op::RemoveGroup => {
                group.entries.clear();
                group.purged = None;
                group.meta.clear();
            }
            Op::Commit { .. } => {}
        }
        if group.is_empty() {
            self.groups.remove(&group_id);
        }
        Ok(())
    }

    /// Records that entry `index` of `group` reached segment `segment`, if it is still the
    /// pending bytes `pending` (a later truncation may have replaced or dropped it).
    pub fn settle(&mut self, group: u64, index: u64, pending: &Arc<[u8]>, segment: u64, offset: u64, len: u32) {
        let Some(group) = self.groups.get_mut(&group) else { return };
        let Some(at) = index.checked_sub(group.first).and_then(|at| usize::try_from(at).ok()) else { return };
        if let Some(slot) = group.entries.get_mut(at)
            && matches!(slot, Location::Pending(bytes) if Arc::ptr_eq(bytes, pending))
        {
            *slot = Location::File { segment, offset, len };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Op {
        Op::Entry { index, payload: Arc::from(&[index as u8][..]) }
    }

    fn file(segment: u64, offset: u64) -> Option<Location> {
        Some(Location::File { segment, offset, len: 10 })
    }

    #[test]
    fn truncate_and_purge_drop_entries_from_either_end() {
        let mut index = Index::default();
        for i in 1..=4 {
            index.apply(9, &entry(i), file(100, i * 10)).unwrap();
        }
        for i in 5..=6 {
            index.apply(9, &entry(i), file(200, i * 10)).unwrap();
        }
        index.apply(9, &Op::TruncateFrom { index: 6 }, None).unwrap();
        index.apply(9, &Op::PurgeUpTo { index: 4 }, None).unwrap();
        let group = index.group(9).unwrap();
        assert_eq!((group.first_index(), group.last_index(), group.purged()), (Some(5), Some(5), Some(4)));
        assert!(matches!(index.group(9).unwrap().location(5), Some(Location::File { segment: 200, offset: 50, .. })));
        index.apply(9, &Op::PurgeUpTo { index: 20 }, None).unwrap();
        let group = index.group(9).unwrap();
        assert_eq!((group.first_index(), group.purged()), (None, Some(20)));
        index.apply(9, &Op::RemoveGroup, None).unwrap();
        assert!(index.group(9).is_none());
    }

    #[test]
    fn check_batch_follows_the_batch_own_changes() {
        let mut index = Index::default();
        index.apply(1, &entry(5), file(1, 0)).unwrap();
        let good = [(1, entry(6)), (1, Op::TruncateFrom { index: 6 }), (1, entry(6)), (2, entry(0)), (2, entry(1))];
        assert_eq!(check_batch(&index, &good), Ok(()));
        // Truncating every entry of a group never purged leaves it free to start anywhere.
        assert_eq!(check_batch(&index, &[(1, Op::TruncateFrom { index: 5 }), (1, entry(0))]), Ok(()));
        assert!(check_batch(&index, &[(1, Op::PurgeUpTo { index: 3 }), (1, Op::TruncateFrom { index: 3 })]).is_err());
        assert!(check_batch(&index, &[(1, entry(7))]).is_err(), "gap");
        assert!(check_batch(&index, &[(1, Op::PurgeUpTo { index: 9 }), (1, entry(9))]).is_err(), "below the purge");
        assert_eq!(check_batch(&index, &[(1, Op::PurgeUpTo { index: 9 }), (1, entry(10))]), Ok(()));
        index.apply(1, &Op::PurgeUpTo { index: 5 }, None).unwrap();
        assert!(check_batch(&index, &[(1, Op::TruncateFrom { index: 5 })]).is_err(), "truncating purged entries");
        assert_eq!(check_batch(&index, &[(1, Op::RemoveGroup), (1, entry(100))]), Ok(()));
    }

    #[test]
    fn replay_past_a_gap_restarts_the_group_and_refuses_going_back() {
        let mut index = Index::default();
        index.apply(3, &Op::PurgeUpTo { index: 5 }, None).unwrap();
        index.apply(3, &entry(15), file(48, 530)).unwrap();
        index.apply(3, &entry(16), file(48, 900)).unwrap();
        index.apply(3, &entry(20), file(50, 32)).unwrap();
        let group = index.group(3).unwrap();
        assert_eq!((group.first_index(), group.last_index(), group.purged()), (Some(20), Some(20), Some(5)));
        assert!(index.apply(3, &entry(20), file(50, 64)).is_err());
    }

    #[test]
    fn settle_ignores_entries_replaced_since_submission() {
        let mut index = Index::default();
        let first: Arc<[u8]> = Arc::from(&b"a"[..]);
        let second: Arc<[u8]> = Arc::from(&b"b"[..]);
        index.apply(1, &entry(1), Some(Location::Pending(first.clone()))).unwrap();
        index.apply(1, &Op::TruncateFrom { index: 1 }, None).unwrap();
        index.apply(1, &entry(1), Some(Location::Pending(second.clone()))).unwrap();
        index.settle(1, 1, &first, 7, 32, 20);
        assert!(matches!(index.group(1).unwrap().location(1), Some(Location::Pending(_))));
        index.settle(1, 1, &second, 7, 52, 20);
        assert!(matches!(index.group(1).unwrap().location(1), Some(Location::File { offset: 52, .. })));
    }
}
