//! The Raft log on redb. Entries are JSON-encoded openraft entries keyed by index; the vote
//! and the last purged log id live in `raft_meta`.
//!
//! Group commit: `append` hands its entries to one writer thread and returns at once; the
//! writer takes every append queued meanwhile into one fsynced transaction and then reports
//! each as flushed, in order. openraft counts an entry toward a quorum only once its flush is
//! reported, and it keeps proposing and replicating while the disk works, so one fsync
//! carries as many entries as arrived during the previous one (a commit per append
//! held the Raft core for the whole fsync). Entries not yet written are kept in memory and
//! read from there, as openraft requires of an append that has returned. Truncations and
//! purges go through the same writer, after the appends before them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};

use crate::services::engine::{LOG, LOG_META};
use crate::services::raft::{NodeId, TypeConfig, sto_err};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The log storage of one node.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    jobs: std::sync::mpsc::Sender<Job>,
    unwritten: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
}

/// Work for the writer thread, done in the order sent.
enum Job {
    Append { entries: Vec<(LogId<NodeId>, Vec<u8>)>, callback: LogFlushed<TypeConfig> },
    Truncate { from: u64, done: tokio::sync::oneshot::Sender<Result<(), String>> },
    Purge { upto: LogId<NodeId>, done: tokio::sync::oneshot::Sender<Result<(), String>> },
}

/// Most jobs one transaction takes.
const MAX_JOBS_PER_COMMIT: usize = 1024;

impl LogStore {
    /// Wraps the log database of an engine and starts its writer thread, which ends when the
    /// last clone of the store is dropped.
    pub fn new(db: Arc<Database>) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel();
        let unwritten: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>> = Arc::default();
        let (writer_db, writer_unwritten) = (db.clone(), unwritten.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || Self::writer(&writer_db, &writer_unwritten, queue))
            .expect("spawning the Raft log writer thread");
        Self { db, jobs, unwritten }
    }

    fn writer(
        db: &Database,
        unwritten: &Mutex<BTreeMap<u64, Entry<TypeConfig>>>,
        queue: std::sync::mpsc::Receiver<Job>,
    ) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_JOBS_PER_COMMIT {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let result = Self::write_batch(db, &batch);
            let mut written = Vec::new();
            for job in batch {
                match job {
                    Job::Append { entries, callback } => {
                        written.extend(entries.iter().map(|(log_id, _)| *log_id));
                        callback.log_io_completed(result.clone().map_err(std::io::Error::other));
                    }
                    Job::Truncate { done, .. } | Job::Purge { done, .. } => {
                        let _ = done.send(result.clone());
                    }
                }
            }
            if result.is_ok() {
                // Written entries are read from the database from now on; an index appended
                // again since (after a truncation) keeps its newer, unwritten entry.
                let mut unwritten = unwritten.lock().unwrap_or_else(|p| p.into_inner());
                for log_id in written {
                    if unwritten.get(&log_id.index).is_some_and(|entry| entry.log_id == log_id) {
                        unwritten.remove(&log_id.index);
                    }
                }
            }
        }
    }

    fn write_batch(db: &Database, batch: &[Job]) -> Result<(), String> {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
            let mut meta = txn.open_table(LOG_META).map_err(|e| e.to_string())?;
            for job in batch {
                match job {
                    Job::Append { entries, .. } => {
                        for (log_id, bytes) in entries {
                            table.insert(log_id.index, bytes.as_slice()).map_err(|e| e.to_string())?;
                        }
                    }
                    Job::Truncate { from, .. } => {
                        table.retain_in(*from.., |_, _| false).map_err(|e| e.to_string())?;
                    }
                    Job::Purge { upto, .. } => {
                        let bytes = serde_json::to_vec(upto).map_err(|e| e.to_string())?;
                        meta.insert("purged", bytes.as_slice()).map_err(|e| e.to_string())?;
                        table.retain_in(..=upto.index, |_, _| false).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }

    /// Sends `job` (made with the completion sender it is given) and waits for it.
    async fn through_writer(
        &self,
        verb: ErrorVerb,
        job: impl FnOnce(tokio::sync::oneshot::Sender<Result<(), String>>) -> Job,
    ) -> StorageResult<()> {
        let (done, finished) = tokio::sync::oneshot::channel();
        self.jobs.send(job(done)).map_err(|_| sto_err(ErrorSubject::Logs, verb, "the log writer has stopped"))?;
        finished
            .await
            .map_err(|_| sto_err(ErrorSubject::Logs, verb, "the log writer has stopped"))?
            .map_err(|err| sto_err(ErrorSubject::Logs, verb, err))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        verb: ErrorVerb,
        f: impl FnOnce(&Database) -> Result<T, String> + Send + 'static,
    ) -> StorageResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|err| sto_err(ErrorSubject::Logs, verb, err))?
            .map_err(|err| sto_err(ErrorSubject::Logs, verb, err))
    }

    fn read_meta<T: serde::de::DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, String> {
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(LOG_META).map_err(|e| e.to_string())?;
        match table.get(key).map_err(|e| e.to_string())? {
            Some(bytes) => serde_json::from_slice(bytes.value()).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(db: &Database, key: &str, value: &T) -> Result<(), String> {
        let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(LOG_META).map_err(|e| e.to_string())?;
            table.insert(key, bytes.as_slice()).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        // Unwritten entries first: the writer removes them only after they are committed, so
        // an entry is always in one place or the other (or both).
        let mut entries: BTreeMap<u64, Entry<TypeConfig>> = self
            .unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range((start, end))
            .map(|(index, entry)| (*index, entry.clone()))
            .collect();
        if let Some(first_unwritten) = entries.keys().next().copied()
            && matches!(start, std::ops::Bound::Included(s) if s == first_unwritten)
        {
            // All of the range that exists is still in memory.
            return Ok(entries.into_values().collect());
        }
        let stored = self
            .blocking(ErrorVerb::Read, move |db| {
                let txn = db.begin_read().map_err(|e| e.to_string())?;
                let table = txn.open_table(LOG).map_err(|e| e.to_string())?;
                let mut stored = Vec::new();
                for row in table.range::<u64>((start, end)).map_err(|e| e.to_string())? {
                    let (index, value) = row.map_err(|e| e.to_string())?;
                    stored.push((index.value(), value.value().to_vec()));
                }
                Ok(stored)
            })
            .await?;
        for (index, bytes) in stored {
            if let std::collections::btree_map::Entry::Vacant(slot) = entries.entry(index) {
                let entry =
                    serde_json::from_slice(&bytes).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                slot.insert(entry);
            }
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.blocking(ErrorVerb::Read, |db| {
            let last_purged_log_id: Option<LogId<NodeId>> = Self::read_meta(db, "purged")?;
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let table = txn.open_table(LOG).map_err(|e| e.to_string())?;
            let last = match table.last().map_err(|e| e.to_string())? {
                Some((_, value)) => {
                    let entry: Entry<TypeConfig> = serde_json::from_slice(value.value()).map_err(|e| e.to_string())?;
                    Some(entry.log_id)
                }
                None => last_purged_log_id,
            };
            Ok(LogState { last_purged_log_id, last_log_id: last })
        })
        .await
        .map(|mut state| {
            let unwritten = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = unwritten.values().next_back() {
                state.last_log_id = state.last_log_id.max(Some(entry.log_id));
            }
            state
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let vote = *vote;
        self.blocking(ErrorVerb::Write, move |db| Self::write_meta(db, "vote", &vote)).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.blocking(ErrorVerb::Read, |db| Self::read_meta(db, "vote")).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let encoded: Vec<(LogId<NodeId>, Vec<u8>)> = entries
            .iter()
            .map(|entry| serde_json::to_vec(entry).map(|bytes| (entry.log_id, bytes)))
            .collect::<Result<_, _>>()
            .map_err(|err| sto_err(ErrorSubject::Logs, ErrorVerb::Write, err))?;
        {
            let mut unwritten = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                unwritten.insert(entry.log_id.index, entry);
            }
        }
        // Flushed later, by the writer: openraft waits for the callback, not for this call.
        self.jobs
            .send(Job::Append { entries: encoded, callback })
            .map_err(|_| sto_err(ErrorSubject::Logs, ErrorVerb::Write, "the log writer has stopped"))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner()).retain(|index, _| *index < log_id.index);
        self.through_writer(ErrorVerb::Delete, |done| Job::Truncate { from: log_id.index, done }).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.through_writer(ErrorVerb::Delete, |done| Job::Purge { upto: log_id, done }).await?;
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner()).retain(|index, _| *index > log_id.index);
        Ok(())
    }
}
