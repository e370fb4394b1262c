//! The embedded storage engine: redb, a pure-Rust, crash-safe B-tree store with ACID
//! transactions. A store directory holds two files:
//! - `raft-log.redb` — the Raft log, vote and commit index (written by the log storage);
//! - `state.redb` — the applied key-value data, Raft applied state, the latest snapshot and
//!   the store's identity (cluster id, node id).
//!
//! Two files let log appends and state-machine applies commit without waiting on one writer
//! lock. Log appends, votes, snapshots and the identity commit with redb's default
//! `Durability::Immediate` (fsync before return), so a write acknowledged by Raft is on disk on
//! a quorum. Applies fsync at most every `APPLY_FSYNC_INTERVAL` (see the state machine): after
//! a crash the state is replayed from the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};

use crate::services::error::{Error, Result};

/// Raft log entries by index (JSON-encoded openraft entries).
pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft log metadata: `vote`, `committed`, `purged`.
pub const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The replicated key-value data of every range this store holds.
pub const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
/// State machine metadata: `applied`, `membership`, `snapshot_meta`, `snapshot_data`.
pub const STATE_META: TableDefinition<&str, &[u8]> = TableDefinition::new("state_meta");
/// The store's identity: `cluster_id`, `node_id`, `cluster_name`, `bootstrap`.
pub const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");

/// Who a store belongs to, persisted on first join or init.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreIdentity {
    /// The cluster this store belongs to, once joined.
    pub cluster_id: Option<String>,
    /// This store's node id, once allocated.
    pub node_id: Option<u64>,
    /// The `--cluster-name` the store was created with, if any.
    pub cluster_name: Option<String>,
    /// Set by `init` until the bootstrap records are committed, so a crash in between resumes.
    pub bootstrap_pending: bool,
}

/// The two databases of one store directory.
#[derive(Clone)]
pub struct Engine {
    dir: PathBuf,
    /// The Raft log database.
    pub log: Arc<Database>,
    /// The state machine and identity database.
    pub state: Arc<Database>,
}

/// Maps any storage error to an internal error.
pub fn storage_error(err: impl std::fmt::Display) -> Error {
    Error::Internal(format!("storage: {err}"))
}

/// Default page cache of one store (`--cache`), shared by its two databases.
pub const DEFAULT_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// The part of a store's cache given to the Raft log database: entries are written, read back
/// once or twice to replicate and apply, then purged, so most of the cache goes to the state.
const LOG_CACHE_SHARE: u64 = 8;

/// Opens one database with a page cache of `cache_bytes`. redb keeps every page it has read or
/// written cached up to that size and never gives it back (its default is 1 GiB per database),
/// so the bound is what keeps a node's memory from growing with the data it touched.
fn open_db(path: &Path, cache_bytes: u64) -> Result<Database> {
    Database::builder().set_cache_size(cache_bytes as usize).create(path).map_err(|err| match err {
        DatabaseError::DatabaseAlreadyOpen => Error::FailedPrecondition(format!(
            "store {} is in use by another ranged process",
            path.parent().unwrap_or(path).display()
        )),
        other => Error::FailedPrecondition(format!("cannot open store file {}: {other}", path.display())),
    })
}

impl Engine {
    /// Opens (creating if needed) the store in `dir` with a page cache of `cache_bytes` in all.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|err| {
            Error::FailedPrecondition(format!("cannot create store directory {}: {err}", dir.display()))
        })?;
        let log_cache = cache_bytes / LOG_CACHE_SHARE;
        let log = open_db(&dir.join("raft-log.redb"), log_cache)?;
        let state = open_db(&dir.join("state.redb"), cache_bytes - log_cache)?;
        let engine = Self { dir: dir.to_path_buf(), log: Arc::new(log), state: Arc::new(state) };
        engine.create_tables()?;
        Ok(engine)
    }

    fn create_tables(&self) -> Result<()> {
        let txn = self.log.begin_write().map_err(storage_error)?;
        txn.open_table(LOG).map_err(storage_error)?;
        txn.open_table(LOG_META).map_err(storage_error)?;
        txn.commit().map_err(storage_error)?;
        let txn = self.state.begin_write().map_err(storage_error)?;
        txn.open_table(DATA).map_err(storage_error)?;
        txn.open_table(STATE_META).map_err(storage_error)?;
        txn.open_table(IDENTITY).map_err(storage_error)?;
        txn.commit().map_err(storage_error)?;
        Ok(())
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the store's identity.
    pub fn identity(&self) -> Result<StoreIdentity> {
        let txn = self.state.begin_read().map_err(storage_error)?;
        let table = txn.open_table(IDENTITY).map_err(storage_error)?;
        let get = |key: &str| -> Result<Option<String>> {
            Ok(table.get(key).map_err(storage_error)?.map(|v| v.value().to_string()))
        };
        let node_id = match get("node_id")? {
            Some(text) => {
                Some(text.parse().map_err(|_| Error::Internal(format!("corrupt node id {text:?} in store")))?)
            }
            None => None,
        };
        Ok(StoreIdentity {
            cluster_id: get("cluster_id")?,
            node_id,
            cluster_name: get("cluster_name")?,
            bootstrap_pending: get("bootstrap")?.is_some(),
        })
    }

    /// Durably writes the store's identity.
    pub fn set_identity(&self, identity: &StoreIdentity) -> Result<()> {
        let txn = self.state.begin_write().map_err(storage_error)?;
        {
            let mut table = txn.open_table(IDENTITY).map_err(storage_error)?;
            let mut set = |key: &str, value: Option<String>| -> Result<()> {
                match value {
                    Some(value) => table.insert(key, value.as_str()).map(drop).map_err(storage_error),
                    None => table.remove(key).map(drop).map_err(storage_error),
                }
            };
            set("cluster_id", identity.cluster_id.clone())?;
            set("node_id", identity.node_id.map(|id| id.to_string()))?;
            set("cluster_name", identity.cluster_name.clone())?;
            set("bootstrap", identity.bootstrap_pending.then(|| "pending".to_string()))?;
        }
        txn.commit().map_err(storage_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_reopen_and_store_is_locked_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let identity = StoreIdentity {
            cluster_id: Some("c-1".into()),
            node_id: Some(4),
            cluster_name: None,
            bootstrap_pending: true,
        };
        {
            let engine = Engine::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
            assert_eq!(engine.identity().unwrap(), StoreIdentity::default());
            engine.set_identity(&identity).unwrap();
            let second = Engine::open(dir.path(), DEFAULT_CACHE_BYTES);
            assert!(matches!(second, Err(Error::FailedPrecondition(msg)) if msg.contains("in use")));
        }
        let engine = Engine::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(engine.identity().unwrap(), identity);
    }
}
