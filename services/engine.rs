//! The embedded storage engine. A store directory holds:
//! - `raft-log/` — the write-ahead log ([`crate::services::wal`]): every Raft group's entries,
//!   vote and purge mark, appended and fdatasynced in group-committed batches;
//! - `state.redb` — redb, a pure-Rust, crash-safe B-tree store with ACID transactions: the
//!   applied key-value data, Raft applied state, the latest snapshot and the store's identity
//!   (cluster id, node id).
//!
//! A log append is one sequential write and one fdatasync, where a redb commit copies B-tree
//! pages and allocator state; the B-tree is kept for what is read by key. Log appends, votes,
//! snapshots and the identity are durable before they are acknowledged, so a write acknowledged
//! by Raft is on disk on a quorum. Applies fsync at most every `APPLY_FSYNC_INTERVAL` (see the
//! state machine): after a crash the state is replayed from the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use crate::services::error::{Error, Result};
use crate::services::wal::{Wal, WalConfig, WriteBatch};

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

/// The log and the database of one store directory.
#[derive(Clone)]
pub struct Engine {
    dir: PathBuf,
    /// The write-ahead log holding every Raft group's log.
    pub log: Arc<Wal>,
    /// The state machine and identity database.
    pub state: Arc<Database>,
}

/// Maps any storage error to an internal error.
pub fn storage_error(err: impl std::fmt::Display) -> Error {
    Error::Internal(format!("storage: {err}"))
}

/// Default page cache of one store (`--cache`), the state database's.
pub const DEFAULT_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// The write-ahead log's directory in a store.
pub const LOG_DIR: &str = "raft-log";

/// The log group holding the store's own records ([`FORMAT_KEY`]); Raft groups use others.
pub const STORE_GROUP: u64 = 0;

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

/// The layout and encoding of a store (1: protobuf entries and postcard metadata in
/// `raft-log.redb`; 2: the same in the write-ahead log; 3: the state machine's applied log
/// id, membership and snapshot kept per Raft group, `applied/<group>` …; 4: range descriptors
/// kept per Raft group, `desc/<group>/<range>`, no longer `/Meta/range/` rows; 5: range 1 and
/// user space in Raft groups of their own, 1 and 2). The state database
/// and the log each record it under [`FORMAT_KEY`]; one recording another format, or written
/// before formats were recorded, refuses to open.
pub const STORE_FORMAT: u64 = 6;
/// The meta key holding a database's store format.
pub const FORMAT_KEY: &str = "format";

/// Checks a recorded store format. `Ok(true)` means none is recorded and nothing was written,
/// so the caller records [`STORE_FORMAT`]; `had_data` means something was written before
/// formats were recorded (format 0). `what` names the file or directory in the error.
fn format_is_new(recorded: Option<&[u8]>, had_data: bool, what: &str) -> Result<bool> {
    let found = match recorded {
        Some(bytes) => match <[u8; 8]>::try_from(bytes) {
            Ok(bytes) => u64::from_be_bytes(bytes),
            Err(_) => {
                return Err(Error::FailedPrecondition(format!("{what} has an unreadable store format record")));
            }
        },
        None if had_data => 0,
        None => return Ok(true),
    };
    if found != STORE_FORMAT {
        return Err(Error::FailedPrecondition(format!(
            "{what} is in store format {found}, but this build reads only format {STORE_FORMAT}"
        )));
    }
    Ok(false)
}

/// Records [`STORE_FORMAT`] in a fresh database's `meta` table, or checks the one recorded.
/// `written` tells whether the database already holds Raft data (then it must have a format).
fn check_format(
    db: &Database,
    path: &Path,
    meta: TableDefinition<&str, &[u8]>,
    written: impl FnOnce(&redb::WriteTransaction) -> Result<bool>,
) -> Result<()> {
    let txn = db.begin_write().map_err(storage_error)?;
    let recorded = {
        let table = txn.open_table(meta).map_err(storage_error)?;
        table.get(FORMAT_KEY).map_err(storage_error)?.map(|v| v.value().to_vec())
    };
    // Only a missing record needs to know whether data was written before it.
    let had_data = recorded.is_none() && written(&txn)?;
    if format_is_new(recorded.as_deref(), had_data, &format!("store file {}", path.display()))? {
        let mut table = txn.open_table(meta).map_err(storage_error)?;
        table.insert(FORMAT_KEY, STORE_FORMAT.to_be_bytes().as_slice()).map_err(storage_error)?;
        drop(table);
        txn.commit().map_err(storage_error)?;
    }
    Ok(())
}

fn create_tables(state: &Database) -> Result<()> {
    let txn = state.begin_write().map_err(storage_error)?;
    txn.open_table(DATA).map_err(storage_error)?;
    txn.open_table(STATE_META).map_err(storage_error)?;
    txn.open_table(IDENTITY).map_err(storage_error)?;
    txn.commit().map_err(storage_error)
}

/// Records [`STORE_FORMAT`] in a fresh log, or checks the one recorded (a log holding any
/// group's records but no format is of format 0).
fn check_log_format(log: &Wal, dir: &Path) -> Result<()> {
    let recorded = log.meta(STORE_GROUP, FORMAT_KEY.as_bytes());
    let had_data = !log.groups().is_empty();
    if format_is_new(recorded.as_deref(), had_data, &format!("store log {}", dir.display()))? {
        let mut batch = WriteBatch::new();
        batch.put_meta(STORE_GROUP, FORMAT_KEY, STORE_FORMAT.to_be_bytes());
        log.write(batch)?;
    }
    Ok(())
}

impl Engine {
    /// Opens (creating if needed) the store in `dir` with a page cache of `cache_bytes` in all.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|err| {
            Error::FailedPrecondition(format!("cannot create store directory {}: {err}", dir.display()))
        })?;
        let state = open_db(&dir.join("state.redb"), cache_bytes)?;
        create_tables(&state)?;
        check_format(&state, &dir.join("state.redb"), STATE_META, |txn| {
            let meta = txn.open_table(STATE_META).map_err(storage_error)?;
            Ok(meta.get("applied").map_err(storage_error)?.is_some())
        })?;
        let log_dir = dir.join(LOG_DIR);
        let log = Wal::open(&log_dir, WalConfig::default())?;
        check_log_format(&log, &log_dir)?;
        Ok(Self { dir: dir.to_path_buf(), log: Arc::new(log), state: Arc::new(state) })
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

    fn set_meta(db: &Database, table: TableDefinition<&str, &[u8]>, key: &str, value: &[u8]) {
        let txn = db.begin_write().unwrap();
        txn.open_table(table).unwrap().insert(key, value).unwrap();
        txn.commit().unwrap();
    }

    fn refusal(dir: &Path) -> String {
        match Engine::open(dir, DEFAULT_CACHE_BYTES) {
            Err(Error::FailedPrecondition(msg)) => msg,
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("a store of another format opened"),
        }
    }

    #[test]
    fn a_store_of_another_format_is_refused_naming_the_file() {
        // A fresh store records the format and reopens.
        let dir = tempfile::tempdir().unwrap();
        drop(Engine::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap());
        drop(Engine::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap());

        // Another format recorded in the log.
        let engine = Engine::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let mut batch = WriteBatch::new();
        batch.put_meta(STORE_GROUP, FORMAT_KEY, 7u64.to_be_bytes());
        engine.log.write(batch).unwrap();
        drop(engine);
        let msg = refusal(dir.path());
        assert!(msg.contains(LOG_DIR) && msg.contains("format 7") && !msg.contains('\n'), "{msg}");

        // A store of format 1 (its log in `raft-log.redb`) is refused by its state database.
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        set_meta(&engine.state, STATE_META, FORMAT_KEY, &1u64.to_be_bytes());
        drop(engine);
        let msg = refusal(dir.path());
        assert!(msg.contains("state.redb") && msg.contains("format 1"), "{msg}");

        // A state database written before formats were recorded (Raft metadata, no format).
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let txn = engine.state.begin_write().unwrap();
        txn.open_table(STATE_META).unwrap().remove(FORMAT_KEY).unwrap();
        txn.commit().unwrap();
        set_meta(&engine.state, STATE_META, "applied", b"{}");
        drop(engine);
        let msg = refusal(dir.path());
        assert!(msg.contains("state.redb") && msg.contains("format 0"), "{msg}");
    }
}
