//! The writer thread: group commit. It takes every batch queued since its last write,
//! encodes them (each followed by its commit record) into one buffer, issues one positioned
//! `write` and one `fdatasync`, then settles the index and completes the callers. When the
//! active segment is full it starts a new one whose first batch begins with every group's
//! purge mark and metadata, so older segments are never needed for those, and deletes the
//! oldest segments that hold no live entry, oldest first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::record::{self, Op};
use super::segment::{self, HEADER_LEN};
use super::{SegmentFile, Shared, State, Submitted, lock};
use crate::services::error::Result;

/// What the batches written so far amount to, as the writer alone follows it: every group's
/// purge mark and metadata (what a new segment's head restates) and which segment holds each
/// live entry (what collection asks). It trails the index, which already holds queued
/// batches: collecting on the index could delete a segment for a purge not yet on disk.
#[derive(Debug, Default)]
pub struct Durable {
    meta: HashMap<u64, BTreeMap<Vec<u8>, Vec<u8>>>,
    purged: HashMap<u64, u64>,
    /// Per group: the first live index and the segment of each live entry from there.
    entries: HashMap<u64, (u64, VecDeque<u64>)>,
    live: BTreeMap<u64, usize>,
}

impl Durable {
    /// Follows one operation written to `segment`, with the index's rules (see
    /// `Index::apply`, gaps included).
    pub fn apply(&mut self, group: u64, op: &Op, segment: u64) {
        let live = &mut self.live;
        let mut forget = |segment: u64| {
            if let Some(count) = live.get_mut(&segment) {
                *count = count.saturating_sub(1);
            }
        };
        match op {
            Op::Entry { index, .. } => {
                let (first, segments) = self.entries.entry(group).or_insert((*index, VecDeque::new()));
                if *first + segments.len() as u64 != *index {
                    segments.drain(..).for_each(&mut forget);
                    *first = *index;
                }
                segments.push_back(segment);
                *self.live.entry(segment).or_default() += 1;
            }
            Op::TruncateFrom { index } => {
                if let Some((first, segments)) = self.entries.get_mut(&group) {
                    while !segments.is_empty() && *first + segments.len() as u64 > *index {
                        segments.pop_back().into_iter().for_each(&mut forget);
                    }
                }
            }
            Op::PurgeUpTo { index } => {
                if let Some((first, segments)) = self.entries.get_mut(&group) {
                    while !segments.is_empty() && *first <= *index {
                        segments.pop_front().into_iter().for_each(&mut forget);
                        *first += 1;
                    }
                }
                let purged = self.purged.entry(group).or_insert(*index);
                *purged = (*purged).max(*index);
            }
            Op::Meta { key, value } => {
                self.meta.entry(group).or_default().insert(key.clone(), value.clone());
            }
            Op::RemoveGroup => {
                self.meta.remove(&group);
                self.purged.remove(&group);
                if let Some((_, segments)) = self.entries.remove(&group) {
                    segments.into_iter().for_each(&mut forget);
                }
            }
            Op::Commit { .. } => {}
        }
    }

    /// Live entries written to `segment`.
    pub fn live_in(&self, segment: u64) -> usize {
        self.live.get(&segment).copied().unwrap_or(0)
    }

    /// The operations that restate every group's purge mark and metadata.
    fn head(&self) -> Vec<(u64, Op)> {
        let mut groups: Vec<u64> = self.meta.keys().chain(self.purged.keys()).copied().collect();
        groups.sort_unstable();
        groups.dedup();
        let mut ops = Vec::new();
        for group in groups {
            if let Some(index) = self.purged.get(&group) {
                ops.push((group, Op::PurgeUpTo { index: *index }));
            }
            for (key, value) in self.meta.get(&group).into_iter().flatten() {
                ops.push((group, Op::Meta { key: key.clone(), value: value.clone() }));
            }
        }
        ops
    }
}

/// An entry record placed in a segment by the last write.
struct Placed {
    group: u64,
    index: u64,
    payload: Arc<[u8]>,
    offset: u64,
    len: u32,
}

/// The thread's state: the active segment and where the next write goes.
pub struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) dir: PathBuf,
    pub(super) segment_size: u64,
    pub(super) segment: u64,
    pub(super) file: Arc<File>,
    pub(super) path: PathBuf,
    pub(super) offset: u64,
    pub(super) durable: Durable,
    pub(super) buffer: Vec<u8>,
    pub(super) undeleted: VecDeque<PathBuf>,
}

impl Writer {
    /// Writes queued batches until the log closes (after draining its queue) or a write fails.
    pub fn run(mut self) {
        // Segments left collectable by the last run (a crash between a sync and a deletion).
        let doomed = {
            let mut state = lock(&self.shared);
            let sealed = state.segments.range(..self.segment).next_back().map(|(id, _)| *id);
            sealed.map(|sealed| collect(&mut state, &mut self.durable, sealed)).unwrap_or_default()
        };
        self.delete(doomed);
        loop {
            let taken = {
                let mut state = lock(&self.shared);
                loop {
                    if !state.queue.is_empty() {
                        break std::mem::take(&mut state.queue);
                    }
                    if state.closing {
                        return;
                    }
                    state = self.shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            match self.write(&taken) {
                Ok((placed, created, doomed)) => {
                    {
                        let mut state = lock(&self.shared);
                        if let Some(created) = created {
                            state.segments.insert(self.segment, created);
                            state.stats.segments_created += 1;
                        }
                        for p in &placed {
                            state.index.settle(p.group, p.index, &p.payload, self.segment, p.offset, p.len);
                        }
                        state.stats.writes += 1;
                        state.stats.batches += taken.len() as u64;
                    }
                    // Deletion (only after a rotation) finishes before the acknowledgement,
                    // so a caller sees the space freed when its write returns.
                    self.delete(doomed);
                    for batch in taken {
                        (batch.done)(Ok(batch.seq));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "wal: write failed; the log refuses writes until reopened");
                    let rest = {
                        let mut state = lock(&self.shared);
                        state.failed = Some(error.clone());
                        std::mem::take(&mut state.queue)
                    };
                    for batch in taken.into_iter().chain(rest) {
                        (batch.done)(Err(error.clone()));
                    }
                    return;
                }
            }
        }
    }

    /// One write and one data sync for all of `taken`; rotates first when they do not fit,
    /// and then returns the segments to delete once the write is durable.
    #[allow(clippy::type_complexity)]
    fn write(&mut self, taken: &[Submitted]) -> Result<(Vec<Placed>, Option<SegmentFile>, Vec<PathBuf>)> {
        let commit = Op::Commit { seq: 0 };
        let size: u64 = taken
            .iter()
            .map(|b| b.ops.iter().map(|(_, op)| record::encoded_len(op)).sum::<usize>() + record::encoded_len(&commit))
            .sum::<usize>() as u64;
        self.buffer.clear();
        let mut created = None;
        let mut doomed = Vec::new();
        if self.offset > HEADER_LEN && self.offset + size > self.segment_size {
            // Collection looks at the log as the segment being sealed leaves it.
            doomed = collect(&mut lock(&self.shared), &mut self.durable, self.segment);
            let first_seq = taken[0].seq;
            let (file, path) = segment::create(&self.dir, first_seq, self.segment_size)?;
            self.file = Arc::new(file);
            self.path = path.clone();
            self.segment = first_seq;
            self.offset = HEADER_LEN;
            created = Some(SegmentFile { file: self.file.clone(), path });
            // The head rides inside the first batch, under its commit record.
            for (group, op) in self.durable.head() {
                record::encode(group, &op, &mut self.buffer);
            }
        }
        let mut placed = Vec::new();
        for batch in taken {
            for (group, op) in &batch.ops {
                let start = self.buffer.len();
                record::encode(*group, op, &mut self.buffer);
                if let Op::Entry { index, payload } = op {
                    let offset = self.offset + start as u64;
                    let len = (self.buffer.len() - start) as u32;
                    placed.push(Placed { group: *group, index: *index, payload: payload.clone(), offset, len });
                }
            }
            record::encode(0, &Op::Commit { seq: batch.seq }, &mut self.buffer);
        }
        self.file.write_all_at(&self.buffer, self.offset).map_err(|e| segment::io_error(&self.path, "write", e))?;
        self.file.sync_data().map_err(|e| segment::io_error(&self.path, "sync", e))?;
        self.offset += self.buffer.len() as u64;
        for batch in taken {
            for (group, op) in &batch.ops {
                self.durable.apply(*group, op, self.segment);
            }
        }
        // A burst of large batches must not pin a large buffer for the log's lifetime.
        if self.buffer.capacity() > 16 << 20 {
            self.buffer = Vec::new();
        }
        Ok((placed, created, doomed))
    }
}

/// Takes out of the log the oldest segments that hold no live entry, going no further than
/// the segment before the newest sealed one (`sealed`). Only a prefix goes: a truncation
/// record in a newer segment may be what keeps an older segment's dead entries dead on
/// replay. The records that killed the collected entries are all in sealed segments, and the
/// metadata and purge marks they held are restated at the head of `sealed`, so even losing
/// the whole active segment leaves a log that replays to a prefix of the batches.
pub fn collect(state: &mut State, durable: &mut Durable, sealed: u64) -> Vec<PathBuf> {
    let mut doomed = Vec::new();
    while let Some((&oldest, _)) = state.segments.first_key_value() {
        if oldest >= sealed || durable.live_in(oldest) > 0 {
            break;
        }
        if let Some(segment) = state.segments.remove(&oldest) {
            doomed.push(segment.path);
        }
        durable.live.remove(&oldest);
    }
    doomed
}

impl Writer {
    /// Deletes collected segments oldest first, syncing the directory after each, so that a
    /// crash leaves a suffix of the segments. After a failure the rest wait, in order, for
    /// the next attempt: deleting a newer segment while an older one remains could let the
    /// older one's dead entries come back on replay.
    fn delete(&mut self, doomed: Vec<PathBuf>) {
        self.undeleted.extend(doomed);
        while let Some(path) = self.undeleted.front() {
            let removed = match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(segment::io_error(path, "remove", e)),
                _ => Ok(()),
            };
            if let Err(error) = removed.and_then(|()| segment::sync_dir(&self.dir)) {
                tracing::warn!(%error, "wal: segment collection stopped until the next write");
                return;
            }
            self.undeleted.pop_front();
            lock(&self.shared).stats.segments_deleted += 1;
        }
    }
}
