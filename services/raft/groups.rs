//! Which Raft group holds which keys: the spans of the groups a node holds, kept with its
//! applied state, and the routing questions asked of them — the group of a key, the groups a
//! span crosses, the one group a batch may run in. Groups' spans come from the store (each
//! group records its own), not from a fixed boundary, so that a split can hand keys to a new
//! group without the routing changing shape.

use std::collections::{BTreeMap, HashMap};

use crate::services::error::{Error, Result};
use crate::services::keys;
use crate::services::kv::Op;
use crate::services::ranges::{get_by_id, insert_by_start};

use super::state_machine::Span;

/// The spans of the Raft groups a node holds, by first key, and each group's first key by
/// id: a node may hold thousands of groups, and both questions are asked per request.
#[derive(Debug, Clone, Default)]
pub struct GroupIndex {
    by_start: BTreeMap<Vec<u8>, (Span, u64)>,
    start_of: HashMap<u64, Vec<u8>>,
}

impl GroupIndex {
    /// Records `group`'s span, replacing any span it had (and any group starting there).
    pub fn insert(&mut self, group: u64, span: Span) {
        let start = span.start.clone();
        insert_by_start(&mut self.by_start, &mut self.start_of, group, start, (span, group), |(_, id)| *id);
    }

    /// The ids of the groups with a span here.
    pub fn ids(&self) -> Vec<u64> {
        self.by_start.values().map(|(_, group)| *group).collect()
    }

    /// The span of `group`, if this node holds it.
    pub fn span(&self, group: u64) -> Option<&Span> {
        get_by_id(&self.by_start, &self.start_of, group, |(_, id)| *id).map(|(span, _)| span)
    }

    /// The group whose span ends where `group`'s starts (the left side of the split that made
    /// `group`), if this node holds both.
    pub fn left_of(&self, group: u64) -> Option<u64> {
        let start = &self.span(group)?.start;
        self.by_start
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(start.as_slice())))
            .next_back()
            .filter(|(_, (span, _))| span.end == *start)
            .map(|(_, (_, id))| *id)
    }

    /// The group holding `key`.
    pub fn of_key(&self, key: &[u8]) -> Option<u64> {
        self.by_start
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()
            .filter(|(_, (span, _))| span.contains(key))
            .map(|(_, (_, group))| *group)
    }

    /// `[start, end)` (empty end: to the end of the keyspace) cut where groups meet: each
    /// group it crosses with the part of it that group holds, in key order. An empty span
    /// (end at or before start) is one empty piece in its start's group. Fails when a part
    /// of it is held by no group this node knows.
    pub fn pieces(&self, start: &[u8], end: &[u8]) -> Result<Vec<(u64, Span)>> {
        cut(start, end, self.by_start.len(), |from, end| self.first_piece(from, end))
    }

    /// The first of [`GroupIndex::pieces`]: the group holding `start`, with the part of
    /// `[start, end)` it holds.
    pub fn first_piece(&self, start: &[u8], end: &[u8]) -> Result<(u64, Span)> {
        let group = self.of_key(start).ok_or_else(|| {
            Error::Unavailable(format!("no Raft group on this node holds key {}", keys::pretty(start)))
        })?;
        if !end.is_empty() && end <= start {
            return Ok((group, Span { start: start.to_vec(), end: end.to_vec() }));
        }
        let group_end = &self.span(group).expect("group just found").end;
        let piece_end_is_end = group_end.is_empty() || (!end.is_empty() && end <= group_end.as_slice());
        let piece_end = if piece_end_is_end { end.to_vec() } else { group_end.clone() };
        Ok((group, Span { start: start.to_vec(), end: piece_end }))
    }

    /// The one group that runs `ops`: the one holding every key they touch. A batch touching
    /// more than one group is refused: it could not be atomic without a cross-range commit
    /// protocol (read-only batches are split by the caller instead; see
    /// [`crate::services::node`]'s KV router).
    pub fn of_ops(&self, ops: &[Op]) -> Result<u64> {
        let mut group = None;
        for op in ops {
            let of_op = match op {
                Op::Scan { start, end, .. } | Op::DeleteRange { start, end } => {
                    let pieces = self.pieces(start, end)?;
                    if pieces.len() > 1 {
                        return Err(cross_group(&pieces[1].1.start));
                    }
                    pieces[0].0
                }
                other => self.of_key(other.key()).ok_or_else(|| {
                    Error::Unavailable(format!("no Raft group on this node holds key {}", keys::pretty(other.key())))
                })?,
            };
            match group {
                None => group = Some(of_op),
                Some(g) if g != of_op => return Err(cross_group(op.key())),
                _ => {}
            }
        }
        group.or_else(|| self.of_key(b"")).ok_or_else(|| Error::Unavailable("this node holds no Raft group".into()))
    }
}

/// `[start, end)` cut into the pieces `first_piece` names one after another (each the group
/// holding a key with the part of `[key, end)` it holds), over at most `groups` groups.
pub fn cut(
    start: &[u8],
    end: &[u8],
    groups: usize,
    mut first_piece: impl FnMut(&[u8], &[u8]) -> Result<(u64, Span)>,
) -> Result<Vec<(u64, Span)>> {
    let mut pieces = Vec::new();
    let mut from = start.to_vec();
    // Each step moves `from` to the end of a distinct group's span: bounded by their count.
    for _ in 0..=groups {
        let (group, piece) = first_piece(&from, end)?;
        let last = piece.end == end || piece.end.is_empty();
        from = piece.end.clone();
        pieces.push((group, piece));
        if last {
            return Ok(pieces);
        }
    }
    Err(Error::Internal("the Raft groups' spans do not advance".into()))
}

/// Whether every key `ops` touch lies in `span`: what a group checks before it applies or
/// reads a batch routed to it, since the sender's view of the spans may be out of date.
pub fn ops_within(span: Option<&Span>, ops: &[Op]) -> bool {
    let Some(span) = span else { return false };
    ops.iter().all(|op| match op {
        Op::Scan { start, end, .. } | Op::DeleteRange { start, end } => {
            let empty = !end.is_empty() && end <= start;
            empty && span.contains(start)
                || span.contains(start) && (span.end.is_empty() || (!end.is_empty() && end <= &span.end))
        }
        other => span.contains(other.key()),
    })
}

fn cross_group(key: &[u8]) -> Error {
    Error::Unsupported(format!(
        "this batch writes keys of more than one range (the second at {}): each range is a \
         Raft group of its own, and writes spanning them are not supported",
        keys::pretty(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: &[u8], end: &[u8]) -> Span {
        Span { start: start.to_vec(), end: end.to_vec() }
    }

    fn put(key: &[u8]) -> Op {
        Op::Put { key: key.to_vec(), value: b"v".to_vec() }
    }

    fn scan(start: &[u8], end: &[u8]) -> Op {
        Op::Scan { start: start.to_vec(), end: end.to_vec(), limit: 0 }
    }

    /// Three groups: 1 holds `[.., \x05)`, 2 `[\x05, m)`, 7 `[m, ..)`.
    fn three() -> GroupIndex {
        let mut index = GroupIndex::default();
        index.insert(1, span(b"", b"\x05"));
        index.insert(2, span(b"\x05", b"m"));
        index.insert(7, span(b"m", b""));
        index
    }

    #[test]
    fn a_group_is_found_by_id_and_by_its_left_neighbour() {
        let mut index = three();
        assert_eq!(index.span(2), Some(&span(b"\x05", b"m")));
        assert_eq!(index.left_of(7), Some(2));
        assert_eq!(index.left_of(2), Some(1));
        assert_eq!(index.left_of(1), None, "the first group has no left neighbour");
        assert_eq!(index.left_of(9), None, "a group not held here");
        // Group 7 moves its start: nothing is left at the old one, and 2 no longer touches it.
        index.insert(7, span(b"p", b""));
        assert_eq!(index.of_key(b"n"), None);
        assert_eq!(index.left_of(7), None);
        // Another group recorded at 7's start replaces it, in both lookups.
        index.insert(8, span(b"p", b""));
        assert_eq!(index.span(7), None);
        assert_eq!(index.of_key(b"q"), Some(8));
        assert_eq!(index.ids(), vec![1, 2, 8]);
    }

    #[test]
    fn a_key_belongs_to_the_group_whose_span_holds_it() {
        let index = three();
        assert_eq!(index.of_key(b""), Some(1));
        assert_eq!(index.of_key(b"\x04user/root"), Some(1));
        assert_eq!(index.of_key(b"\x05"), Some(2));
        assert_eq!(index.of_key(b"l\xff"), Some(2));
        assert_eq!(index.of_key(b"m"), Some(7));
        assert_eq!(index.of_key(b"zzz"), Some(7));
        assert_eq!(index.span(7), Some(&span(b"m", b"")));
        // A split moves the end of a group: re-inserting replaces its old span.
        let mut index = index;
        index.insert(2, span(b"\x05", b"f"));
        assert_eq!(index.of_key(b"g"), None, "no group holds [f, m) until one is inserted");
        index.insert(9, span(b"f", b"m"));
        assert_eq!(index.of_key(b"g"), Some(9));
        assert_eq!(index.by_start.len(), 4);
    }

    #[test]
    fn a_span_is_cut_where_groups_meet() {
        let index = three();
        assert_eq!(index.pieces(b"a", b"b").unwrap(), vec![(2, span(b"a", b"b"))]);
        assert_eq!(
            index.pieces(b"", b"").unwrap(),
            vec![(1, span(b"", b"\x05")), (2, span(b"\x05", b"m")), (7, span(b"m", b""))]
        );
        assert_eq!(index.pieces(b"\x04", b"n").unwrap().len(), 3);
        assert_eq!(index.pieces(b"c", b"m").unwrap(), vec![(2, span(b"c", b"m"))], "the end is exclusive");
        assert_eq!(index.pieces(b"c", b"m\x00").unwrap(), vec![(2, span(b"c", b"m")), (7, span(b"m", b"m\x00"))]);
        assert_eq!(index.pieces(b"z", b"a").unwrap(), vec![(7, span(b"z", b"a"))], "an empty span touches nothing");
        let mut gap = three();
        gap.insert(2, span(b"\x05", b"f"));
        assert!(matches!(gap.pieces(b"a", b"z"), Err(Error::Unavailable(_))));
    }

    #[test]
    fn a_batch_runs_in_the_one_group_holding_its_keys() {
        let index = three();
        assert_eq!(index.of_ops(&[put(b"\x04node/1"), scan(b"\x04", b"\x05")]).unwrap(), 1);
        assert_eq!(index.of_ops(&[put(b"a"), scan(b"\x05", b"m"), scan(b"b", b"c")]).unwrap(), 2);
        assert_eq!(index.of_ops(&[scan(b"n", b"")]).unwrap(), 7);
        assert_eq!(index.of_ops(&[]).unwrap(), 1);
        for ops in [vec![put(b"\x04gc/1"), put(b"t/1")], vec![scan(b"", b"")], vec![put(b"x"), scan(b"a", b"n")]] {
            let err = index.of_ops(&ops).unwrap_err();
            assert!(matches!(&err, Error::Unsupported(m) if m.contains("not supported")), "{err:?}");
        }
    }

    #[test]
    fn a_group_accepts_only_batches_inside_its_span() {
        let (middle, last) = (&span(b"\x05", b"m"), &span(b"m", b""));
        let (middle, last) = (Some(middle), Some(last));
        assert!(!ops_within(None, &[put(b"a")]), "a replica without a span yet holds no keys");
        assert!(ops_within(middle, &[put(b"a"), scan(b"b", b"m"), scan(b"k", b"c")]));
        assert!(!ops_within(middle, &[put(b"m")]));
        assert!(!ops_within(middle, &[scan(b"b", b"")]), "an open end runs past the span");
        assert!(!ops_within(middle, &[scan(b"b", b"m\x00")]));
        assert!(ops_within(last, &[scan(b"m", b""), put(b"zz")]));
        assert!(!ops_within(last, &[put(b"a")]));
    }
}
