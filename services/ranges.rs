//! Range descriptors and the in-memory index over them. A range is a contiguous span
//! `[start_key, end_key)` of the keyspace (an empty end key means "to the end"). The
//! authoritative descriptor is kept by the range's own Raft group, and which nodes hold the
//! range is that group's membership, read when asked, so the two can never disagree. Range 1
//! holds a routing copy of both under `/Meta/range/<id>` ([`MetaRecord`]), kept current by
//! each range's leaseholder, for nodes that hold no replica of a range.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::services::error::{Error, Result};
use crate::services::keys;

/// The system range: descriptors, node registry, ID allocators, users.
pub const SYSTEM_RANGE_ID: u64 = 1;

/// One range's identity and span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDescriptor {
    /// Cluster-unique id, allocated from `/System/idalloc/range`.
    pub range_id: u64,
    /// First key of the span (inclusive).
    pub start_key: Vec<u8>,
    /// End of the span (exclusive); empty means the end of the keyspace.
    pub end_key: Vec<u8>,
    /// Incremented by every split that changes this range's span.
    pub generation: u64,
}

impl RangeDescriptor {
    /// Whether `key` falls inside this range's span.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_slice() && (self.end_key.is_empty() || key < self.end_key.as_slice())
    }

    /// Whether this range's span intersects `[start, end)` (empty end: unbounded).
    pub fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        let starts_before_end = end.is_empty() || self.start_key.as_slice() < end;
        let ends_after_start = self.end_key.is_empty() || self.end_key.as_slice() > start;
        starts_before_end && ends_after_start
    }
}

/// The descriptors a new cluster starts with: range 1 (system) and range 2 (user space).
pub fn bootstrap_descriptors() -> [RangeDescriptor; 2] {
    [
        RangeDescriptor {
            range_id: SYSTEM_RANGE_ID,
            start_key: Vec::new(),
            end_key: keys::USER_SPACE_START.to_vec(),
            generation: 0,
        },
        RangeDescriptor { range_id: 2, start_key: keys::USER_SPACE_START.to_vec(), end_key: Vec::new(), generation: 0 },
    ]
}

/// A range's entry in the routing copy in range 1: its descriptor and its group's members
/// as its leaseholder last wrote them. It may lag the truth (a split or membership change
/// commits in the range's group first, the copy follows); a request routed by a stale copy
/// meets "range key mismatch" or "not leaseholder" and is routed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaRecord {
    /// The range's descriptor.
    pub descriptor: RangeDescriptor,
    /// The Raft group that holds the range.
    pub group: u64,
    /// The group's voters.
    pub voters: Vec<u64>,
    /// The group's learners.
    pub learners: Vec<u64>,
    /// The log index of the group's membership configuration the members come from.
    pub membership_index: u64,
}

impl MetaRecord {
    /// Whether this record should replace `stored`: it differs and is no older, by the
    /// descriptor's generation and then the membership's log index. A former leaseholder
    /// still writing what it saw before a split or a membership change cannot undo the
    /// newer record its successor wrote.
    pub fn supersedes(&self, stored: Option<&MetaRecord>) -> bool {
        let version = |r: &MetaRecord| (r.descriptor.generation, r.membership_index);
        stored.is_none_or(|stored| stored != self && version(self) >= version(stored))
    }
}

/// Puts `value` (of `id`, starting at `start`) into a map by start key that keeps each id's
/// start key in `start_of`: whatever `id` had elsewhere goes, and so does any other id that
/// started at `start`. `id_of` names a value's id. Shared by the range and group indexes.
pub(crate) fn insert_by_start<V>(
    by_start: &mut BTreeMap<Vec<u8>, V>,
    start_of: &mut HashMap<u64, Vec<u8>>,
    id: u64,
    start: Vec<u8>,
    value: V,
    id_of: impl Fn(&V) -> u64,
) {
    if let Some(old) = start_of.remove(&id)
        && by_start.get(&old).is_some_and(|existing| id_of(existing) == id)
    {
        by_start.remove(&old);
    }
    if let Some(displaced) = by_start.insert(start.clone(), value)
        && id_of(&displaced) != id
    {
        start_of.remove(&id_of(&displaced));
    }
    start_of.insert(id, start);
}

/// The value of `id` in a map kept by [`insert_by_start`].
pub(crate) fn get_by_id<'a, V>(
    by_start: &'a BTreeMap<Vec<u8>, V>,
    start_of: &HashMap<u64, Vec<u8>>,
    id: u64,
    id_of: impl Fn(&V) -> u64,
) -> Option<&'a V> {
    by_start.get(start_of.get(&id)?).filter(|value| id_of(value) == id)
}

/// All descriptors of the cluster, ordered by start key, and each range's start key by id
/// (thousands of ranges, looked up by id per request).
#[derive(Debug, Clone, Default)]
pub struct RangeIndex {
    by_start: BTreeMap<Vec<u8>, RangeDescriptor>,
    start_of: HashMap<u64, Vec<u8>>,
}

impl RangeIndex {
    /// Adds or replaces the descriptor starting at `desc.start_key` (and any earlier
    /// descriptor of the same range).
    pub fn insert(&mut self, desc: RangeDescriptor) {
        let (id, start) = (desc.range_id, desc.start_key.clone());
        insert_by_start(&mut self.by_start, &mut self.start_of, id, start, desc, |d| d.range_id);
    }

    /// The range containing `key`.
    pub fn lookup(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        self.by_start
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()
            .map(|(_, desc)| desc)
            .filter(|desc| desc.contains(key))
    }

    /// The range with id `range_id`.
    pub fn get(&self, range_id: u64) -> Option<&RangeDescriptor> {
        get_by_id(&self.by_start, &self.start_of, range_id, |desc| desc.range_id)
    }

    /// Every range, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RangeDescriptor> {
        self.by_start.values()
    }

    /// The number of ranges.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether the index holds no range (a store that has not applied its bootstrap yet).
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// The ranges whose spans intersect `[start, end)`, in key order.
    pub fn overlapping<'a>(&'a self, start: &'a [u8], end: &'a [u8]) -> impl Iterator<Item = &'a RangeDescriptor> {
        self.by_start.values().filter(move |desc| desc.overlaps(start, end))
    }

    /// Computes the two descriptors that splitting the range containing `split_key` produces,
    /// without changing the index. The left side keeps the range id; the right side gets
    /// `new_range_id`. Fails if the key is already a range boundary or falls in range 1.
    pub fn plan_split(&self, split_key: &[u8], new_range_id: u64) -> Result<(RangeDescriptor, RangeDescriptor)> {
        let desc = self
            .lookup(split_key)
            .ok_or_else(|| Error::Internal(format!("no range contains {}", keys::pretty(split_key))))?;
        if desc.range_id == SYSTEM_RANGE_ID {
            return Err(Error::InvalidArgument(format!(
                "cannot split the system range at {}: split keys must be at or after {}",
                keys::pretty(split_key),
                keys::pretty(keys::USER_SPACE_START)
            )));
        }
        if desc.start_key.as_slice() == split_key {
            return Err(Error::AlreadyExists(format!(
                "{} is already the start of range {}",
                keys::pretty(split_key),
                desc.range_id
            )));
        }
        let left = RangeDescriptor {
            range_id: desc.range_id,
            start_key: desc.start_key.clone(),
            end_key: split_key.to_vec(),
            generation: desc.generation + 1,
        };
        let right = RangeDescriptor {
            range_id: new_range_id,
            start_key: split_key.to_vec(),
            end_key: desc.end_key.clone(),
            generation: desc.generation + 1,
        };
        Ok((left, right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> RangeIndex {
        let mut index = RangeIndex::default();
        for desc in bootstrap_descriptors() {
            index.insert(desc);
        }
        index
    }

    #[test]
    fn lookup_finds_the_containing_range() {
        let index = index();
        assert_eq!(index.lookup(b"").unwrap().range_id, 1);
        assert_eq!(index.lookup(b"\x04node/").unwrap().range_id, 1);
        assert_eq!(index.lookup(b"\x05").unwrap().range_id, 2);
        assert_eq!(index.lookup(b"zzz\xff").unwrap().range_id, 2);
    }

    fn desc(range_id: u64, start: &[u8], end: &[u8]) -> RangeDescriptor {
        RangeDescriptor { range_id, start_key: start.to_vec(), end_key: end.to_vec(), generation: 0 }
    }

    #[test]
    fn a_range_is_found_by_id_after_it_moves_and_not_after_another_takes_its_start() {
        let mut index = RangeIndex::default();
        index.insert(desc(2, b"a", b""));
        index.insert(desc(2, b"a", b"m"));
        index.insert(desc(3, b"m", b""));
        assert_eq!(index.get(2).unwrap().end_key, b"m");
        assert_eq!(index.get(3).unwrap().start_key, b"m");
        // A range whose start changes leaves nothing at its old start.
        index.insert(desc(3, b"n", b""));
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(3).unwrap().start_key, b"n");
        assert!(index.lookup(b"m").is_none());
        // Another range recorded at the same start replaces it, in both lookups.
        index.insert(desc(4, b"n", b""));
        assert!(index.get(3).is_none());
        assert_eq!(index.get(4).unwrap().start_key, b"n");
        assert_eq!(index.lookup(b"z").unwrap().range_id, 4);
        assert_eq!(index.len(), 2);
        assert!(index.get(9).is_none());
    }

    #[test]
    fn split_produces_adjacent_spans_with_new_generation() {
        let mut index = index();
        let (left, right) = index.plan_split(b"m", 3).unwrap();
        assert_eq!((left.range_id, left.end_key.as_slice(), left.generation), (2, &b"m"[..], 1));
        assert_eq!((right.range_id, right.start_key.as_slice(), right.end_key.as_slice()), (3, &b"m"[..], &b""[..]));
        index.insert(left);
        index.insert(right);
        assert_eq!(index.len(), 3);
        assert_eq!(index.lookup(b"a").unwrap().range_id, 2);
        assert_eq!(index.lookup(b"m").unwrap().range_id, 3);
        assert_eq!(index.lookup(b"z").unwrap().range_id, 3);
        let ids: Vec<u64> = index.overlapping(b"a", b"n").map(|d| d.range_id).collect();
        assert_eq!(ids, vec![2, 3]);
        let ids: Vec<u64> = index.overlapping(b"a", b"m").map(|d| d.range_id).collect();
        assert_eq!(ids, vec![2]);
    }

    #[test]
    fn a_meta_record_gives_way_only_to_a_different_record_no_older() {
        let [_, desc] = bootstrap_descriptors();
        let record = |generation, membership_index, voters: &[u64]| MetaRecord {
            descriptor: RangeDescriptor { generation, ..desc.clone() },
            group: 2,
            voters: voters.to_vec(),
            learners: vec![],
            membership_index,
        };
        let stored = record(1, 10, &[1, 2, 3]);
        assert!(stored.supersedes(None));
        assert!(!stored.supersedes(Some(&stored)));
        // A newer membership, or a later split with an older-looking membership index.
        assert!(record(1, 12, &[1, 2, 4]).supersedes(Some(&stored)));
        assert!(record(2, 3, &[1, 2, 3]).supersedes(Some(&stored)));
        // A former leaseholder's older view.
        assert!(!record(1, 8, &[1, 2]).supersedes(Some(&stored)));
        assert!(!record(0, 40, &[1, 2, 3]).supersedes(Some(&stored)));
    }

    #[test]
    fn split_rejects_boundaries_and_the_system_range() {
        let index = index();
        assert!(matches!(index.plan_split(b"\x05", 3), Err(Error::AlreadyExists(_))));
        assert!(matches!(index.plan_split(b"\x04x", 3), Err(Error::InvalidArgument(_))));
    }
}
