//! The Raft log on redb. Entries are JSON-encoded openraft entries keyed by index; the vote
//! and the last purged log id live in `raft_meta`. Every append is one fsynced transaction,
//! and openraft hands several entries to one append when they queue up, which batches them.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

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
}

impl LogStore {
    /// Wraps the log database of an engine.
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
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
        self.blocking(ErrorVerb::Read, move |db| {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let table = txn.open_table(LOG).map_err(|e| e.to_string())?;
            let mut entries = Vec::new();
            for row in table.range::<u64>((start, end)).map_err(|e| e.to_string())? {
                let (_, value) = row.map_err(|e| e.to_string())?;
                entries.push(serde_json::from_slice(value.value()).map_err(|e| e.to_string())?);
            }
            Ok(entries)
        })
        .await
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
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| serde_json::to_vec(&entry).map(|bytes| (entry.log_id.index, bytes)))
            .collect::<Result<_, _>>()
            .map_err(|err| sto_err(ErrorSubject::Logs, ErrorVerb::Write, err))?;
        let result = self
            .blocking(ErrorVerb::Write, move |db| {
                let txn = db.begin_write().map_err(|e| e.to_string())?;
                {
                    let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
                    for (index, bytes) in &encoded {
                        table.insert(*index, bytes.as_slice()).map_err(|e| e.to_string())?;
                    }
                }
                txn.commit().map_err(|e| e.to_string())
            })
            .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(err) => callback.log_io_completed(Err(std::io::Error::other(err.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.blocking(ErrorVerb::Delete, move |db| {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
                table.retain_in(log_id.index.., |_, _| false).map_err(|e| e.to_string())?;
            }
            txn.commit().map_err(|e| e.to_string())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.blocking(ErrorVerb::Delete, move |db| {
            let bytes = serde_json::to_vec(&log_id).map_err(|e| e.to_string())?;
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut meta = txn.open_table(LOG_META).map_err(|e| e.to_string())?;
                meta.insert("purged", bytes.as_slice()).map_err(|e| e.to_string())?;
                let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
                table.retain_in(..=log_id.index, |_, _| false).map_err(|e| e.to_string())?;
            }
            txn.commit().map_err(|e| e.to_string())
        })
        .await
    }
}
