//! The Raft log of one group in the node's write-ahead log ([`crate::services::wal`]):
//! entries are `LogEntry` protobuf envelopes at their Raft index, and the vote and the last
//! purged log id are the group's metadata, in postcard (see [`codec`]).
//!
//! Group commit is the log's own: `append` submits its entries and returns at once, the
//! log's writer thread puts every batch queued meanwhile into one `write` and one
//! `fdatasync`, and reports each append as flushed in order. openraft counts an entry toward
//! a quorum only once its flush is reported and keeps proposing and replicating while the
//! disk works. Submitted entries are readable at once (the log serves them from memory until
//! they are on disk), as openraft requires of an append that has returned. Votes,
//! truncations and purges wait until they are durable.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::services::raft::codec::{self, decode_entry, encode_entry};
use crate::services::raft::{Entry, LogId, TypeConfig, Vote, io_err};
use crate::services::wal::{Wal, WriteBatch};

type StorageResult<T> = Result<T, std::io::Error>;

/// Metadata keys of a group in the log.
const VOTE: &[u8] = b"vote";
const PURGED: &[u8] = b"purged";

/// The log storage of one Raft group.
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    group: u64,
}

impl LogStore {
    /// The log of `group` in `wal`.
    pub fn new(wal: Arc<Wal>, group: u64) -> Self {
        Self { wal, group }
    }

    /// Submits `batch` and waits until it is durable.
    async fn write(&self, batch: WriteBatch) -> StorageResult<()> {
        let (done, durable) = tokio::sync::oneshot::channel();
        self.wal
            .submit(batch, move |result| {
                let _ = done.send(result);
            })
            .map_err(io_err)?;
        durable.await.map_err(|_| io_err("the write-ahead log stopped"))?.map_err(io_err).map(drop)
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        self.wal.meta(self.group, key).map(|bytes| codec::from_bytes(&bytes)).transpose().map_err(io_err)
    }

    /// The entries with indexes in `range`, decoded. Entries just appended come from memory
    /// and the rest are `pread`s of recently written pages, so this is not moved off the
    /// async thread: a blocking-pool hop costs more than the read.
    fn read(&self, start: Bound<u64>, end: Bound<u64>) -> StorageResult<Vec<Entry>> {
        let start = match start {
            Bound::Included(s) => s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match end {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => e,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        self.wal
            .entries(self.group, start..end)
            .map_err(io_err)?
            .into_iter()
            .map(|(_, bytes)| decode_entry(&bytes).map_err(io_err))
            .collect()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        self.read(range.start_bound().cloned(), range.end_bound().cloned())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        self.meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.meta(PURGED)?;
        let last_log_id = match self.wal.last_index(self.group) {
            Some(last) => self.read(Bound::Included(last), Bound::Included(last))?.pop().map(|entry| entry.log_id),
            None => None,
        };
        Ok(LogState { last_purged_log_id, last_log_id: last_log_id.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        let bytes = codec::to_bytes(vote).map_err(io_err)?;
        let mut batch = WriteBatch::new();
        batch.put_meta(self.group, VOTE, bytes);
        self.write(batch).await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            let bytes = encode_entry(&entry).map_err(io_err)?;
            batch.append(self.group, entry.log_id.index, bytes);
        }
        // Flushed later, by the log's writer: openraft waits for the callback, not this call.
        self.wal
            .submit(batch, move |result| callback.io_completed(result.map(drop).map_err(io_err)))
            .map(drop)
            .map_err(io_err)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> StorageResult<()> {
        // Everything after `last_log_id` goes; `None` empties the log.
        let from = last_log_id.map_or(0, |id| id.index + 1);
        let mut batch = WriteBatch::new();
        batch.truncate_from(self.group, from);
        self.write(batch).await
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        let bytes = codec::to_bytes(&log_id).map_err(io_err)?;
        let mut batch = WriteBatch::new();
        batch.put_meta(self.group, PURGED, bytes).purge_up_to(self.group, log_id.index);
        self.write(batch).await
    }
}
