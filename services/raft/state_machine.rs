//! The replicated state machines on redb. A node has one [`StateStore`]: the `state.redb`
//! data shared by all its Raft groups, with, in memory, the range index, each range's size
//! (keys and bytes) and the catalog version, all derived from applied state and therefore
//! identical on every replica. Each group's [`StateMachine`] applies that group's entries to
//! the shared data and keeps its own applied log id, membership, snapshot and range
//! descriptors under keys of its own (`applied/<group>`, `desc/<group>/<range>`, …).
//!
//! A range's descriptor is the group's, not a row in range 1: a split applied by one group
//! would otherwise write into another group's span, and that group's next snapshot would
//! silently undo it. A group's snapshot carries its span's rows and its descriptors, and
//! installing one replaces exactly those. Applying a batch of entries is one redb transaction
//! that also records the group's applied log id, so data, descriptors and applied state never
//! diverge after a crash.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, ReadableDatabase, ReadableTable, Table};
use serde::{Deserialize, Serialize};

use crate::services::engine::{DATA, STATE_META, storage_error};
use crate::services::error::{Error, Result};
use crate::services::keys;
use crate::services::kv::{self, KvRead, Op, OpResult};
use crate::services::raft::groups::{GroupIndex, ops_within};
use crate::services::raft::{
    Command, CommandResponse, Entry, LogId, SYSTEM_GROUP, Snapshot, SnapshotData, SnapshotMeta, StoredMembership,
    TypeConfig, codec, io_err,
};
use crate::services::ranges::{RangeDescriptor, RangeIndex};
use crate::services::scan::{PageLimits, TakenPage, take_page};

mod removal;
mod snapshot;
mod split;
pub use snapshot::snapshot_span;
pub use split::{SPLIT_INITIAL_INDEX, split_initial_log_id};
use split::{SplitTarget, apply_split};

type StorageResult<T> = Result<T, std::io::Error>;

/// Keys and bytes (key + value) a range holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSize {
    /// Number of live keys.
    pub keys: u64,
    /// Bytes of live keys and values.
    pub bytes: u64,
}

/// What the node's state store knows in memory, shared with readers.
#[derive(Debug, Default)]
pub struct SmShared {
    /// Every range of the cluster.
    pub ranges: RangeIndex,
    /// Each range's size.
    pub sizes: HashMap<u64, RangeSize>,
    /// The SQL catalog's version as this node has applied it: the index in range 1's Raft log
    /// of the last entry that wrote the catalog ([`keys::CATALOG_PREFIXES`], all in range 1),
    /// or of range 1's snapshot or restart point when that is unknown. It changes only with
    /// range 1: replicas of other ranges coming and going (snapshots, removals) leave the
    /// cached descriptors valid.
    pub catalog_version: u64,
    /// Bumped by every applied write to range 1's routing copy ([`keys::META_PREFIX`]).
    pub meta_version: u64,
    /// The span of each group this node holds.
    pub groups: GroupIndex,
}

/// What one group has applied.
#[derive(Debug, Default, Clone)]
struct GroupApplied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The keys one group's state machine owns, `[start, end)` (an empty end: unbounded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The first key.
    pub start: Vec<u8>,
    /// The first key past the span; empty for the end of the keyspace.
    pub end: Vec<u8>,
}

impl Span {
    /// Every key: the span of the one group that holds every range.
    pub fn all() -> Span {
        Span::default()
    }

    /// Whether `key` is in the span.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }
}

/// A group's key in `STATE_META`: `name/<group>`.
fn group_key(name: &str, group: u64) -> String {
    format!("{name}/{group}")
}

/// Where a group's range descriptors start in `STATE_META` (`desc/` alone: every group's).
fn desc_prefix(group: Option<u64>) -> String {
    group.map_or_else(|| "desc/".to_string(), |group| format!("desc/{group}/"))
}

/// A range's descriptor key in `STATE_META`, under the group that holds the range.
fn desc_key(group: u64, range_id: u64) -> String {
    format!("desc/{group}/{range_id:020}")
}

/// The descriptors under `prefix` (see [`desc_prefix`]).
fn read_descs(meta: &impl ReadableTable<&'static str, &'static [u8]>, prefix: &str) -> Result<Vec<RangeDescriptor>> {
    let mut descs = Vec::new();
    for row in meta.range::<&str>(prefix..).map_err(storage_error)? {
        let (key, value) = row.map_err(storage_error)?;
        if !key.value().starts_with(prefix) {
            break;
        }
        descs.push(codec::from_bytes(value.value()).map_err(storage_error)?);
    }
    Ok(descs)
}

fn put_desc(meta: &mut Table<&'static str, &'static [u8]>, group: u64, desc: &RangeDescriptor) -> Result<()> {
    let bytes = codec::to_bytes(desc).map_err(storage_error)?;
    meta.insert(desc_key(group, desc.range_id).as_str(), bytes.as_slice()).map_err(storage_error)?;
    Ok(())
}

/// The error of a batch sent to a group that does not hold all its keys.
pub fn range_key_mismatch(group: u64) -> Error {
    Error::RangeKeyMismatch(format!("the batch's keys are not all in Raft group {group}'s span"))
}

/// Most point reads of one batch served on the calling task (see [`StateMachine::read`]).
const INLINE_READ_OPS: usize = 16;

/// A node's applied data, shared by the state machines of all its groups; clones share the
/// same database and memory.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
    shared: Arc<RwLock<SmShared>>,
    last_durable_apply: Arc<std::sync::Mutex<std::time::Instant>>,
    /// Held by every apply and snapshot install for its whole transaction, so that an
    /// install's recount of the node-wide index and sizes sees no other group's apply half
    /// done (applied to memory, not yet committed) and is not overwritten by one.
    apply_gate: Arc<std::sync::Mutex<()>>,
    /// The groups whose state machines run on this node.
    started: Arc<std::sync::Mutex<BTreeSet<u64>>>,
    /// Told the id of each group a split applied here creates, for the node to start it.
    created: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<u64>>>>,
}

/// One group's state machine over the node's [`StateStore`]; clones share it. Reads go to the
/// store (`Deref`): the data is one.
#[derive(Clone)]
pub struct StateMachine {
    store: StateStore,
    group: u64,
    applied: Arc<RwLock<GroupApplied>>,
    /// Set once openraft has started on this state machine (see [`StateMachine::started`]).
    started: Arc<std::sync::atomic::AtomicBool>,
}

impl std::ops::Deref for StateMachine {
    type Target = StateStore;

    fn deref(&self) -> &StateStore {
        &self.store
    }
}

/// How often an apply is made durable (fsync). Applies in between commit without fsync: the
/// Raft log already holds every applied entry durably, so after a crash the state returns
/// to its last durable apply and openraft re-applies the rest from the log. The log is never
/// purged past a durable apply, since purging follows a snapshot and a snapshot's commit is
/// durable (a durable redb commit also persists every commit before it).
pub const APPLY_FSYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

struct TableView<'a, T>(&'a T);

impl<T: ReadableTable<&'static [u8], &'static [u8]>> KvRead for TableView<'_, T> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(key).map_err(storage_error)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let iter = if end.is_empty() {
            self.0.range::<&[u8]>(start..).map_err(storage_error)?
        } else {
            self.0.range::<&[u8]>(start..end).map_err(storage_error)?
        };
        let mut rows = Vec::new();
        for row in iter {
            let (k, v) = row.map_err(storage_error)?;
            rows.push((k.value().to_vec(), v.value().to_vec()));
            if limit != 0 && rows.len() >= limit {
                break;
            }
        }
        Ok(rows)
    }
}

/// A consistent view of the applied data that a paged scan reads page by page.
pub struct ReadSnapshot(redb::ReadOnlyTable<&'static [u8], &'static [u8]>);

impl ReadSnapshot {
    /// Up to one page of rows in `[start, end)` (empty end: unbounded). Blocking.
    pub fn page(&self, start: &[u8], end: &[u8], limits: PageLimits) -> Result<TakenPage> {
        let range = if end.is_empty() {
            self.0.range::<&[u8]>(start..).map_err(storage_error)?
        } else {
            self.0.range::<&[u8]>(start..end).map_err(storage_error)?
        };
        take_page(
            range.map(|row| {
                let (k, v) = row.map_err(storage_error)?;
                Ok((k.value().to_vec(), v.value().to_vec()))
            }),
            limits,
        )
    }
}

fn get_meta<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    match table.get(key).map_err(storage_error)? {
        Some(v) => Ok(Some(codec::from_bytes(v.value()).map_err(storage_error)?)),
        None => Ok(None),
    }
}

/// Writes `value` (or deletes when `None`) and keeps the owning range's size current.
/// `index` is the applying entry's place in its group's log.
fn put_tracked(
    data: &mut Table<&'static [u8], &'static [u8]>,
    shared: &mut SmShared,
    index: u64,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<()> {
    let old_len = match value {
        Some(value) => data.insert(key, value).map_err(storage_error)?.map(|old| old.value().len()),
        None => data.remove(key).map_err(storage_error)?.map(|old| old.value().len()),
    };
    if keys::CATALOG_PREFIXES.iter().any(|prefix| key.starts_with(prefix)) {
        shared.catalog_version = shared.catalog_version.max(index);
    }
    if key.starts_with(keys::META_PREFIX) {
        shared.meta_version += 1;
    }
    if let Some(range_id) = shared.ranges.lookup(key).map(|d| d.range_id) {
        let size = shared.sizes.entry(range_id).or_default();
        if let Some(old_len) = old_len {
            size.keys = size.keys.saturating_sub(1);
            size.bytes = size.bytes.saturating_sub((key.len() + old_len) as u64);
        }
        if let Some(value) = value {
            size.keys += 1;
            size.bytes += (key.len() + value.len()) as u64;
        }
    }
    Ok(())
}

fn apply_batch(
    data: &mut Table<&'static [u8], &'static [u8]>,
    shared: &mut SmShared,
    index: u64,
    ops: &[Op],
) -> Result<Result<Vec<OpResult>>> {
    let evaluated = kv::evaluate(&TableView(&*data), ops);
    match evaluated {
        Err(Error::Internal(detail)) => Err(Error::Internal(detail)),
        Err(err) => Ok(Err(err)),
        Ok((results, pending)) => {
            for (key, value) in &pending {
                put_tracked(data, shared, index, key, value.as_deref())?;
            }
            Ok(Ok(results))
        }
    }
}

fn put_meta<T: Serialize>(meta: &mut Table<&'static str, &'static [u8]>, key: &str, value: &T) -> Result<()> {
    let bytes = codec::to_bytes(value).map_err(storage_error)?;
    meta.insert(key, bytes.as_slice()).map_err(storage_error)?;
    Ok(())
}

impl StateStore {
    /// Opens the node's state over the engine's state database, rebuilding the in-memory
    /// index and sizes from the applied data.
    pub fn open(db: Arc<Database>) -> Result<Self> {
        let shared = Self::load_shared(&db)?;
        Ok(Self {
            db,
            shared: Arc::new(RwLock::new(shared)),
            last_durable_apply: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
            apply_gate: Arc::new(std::sync::Mutex::new(())),
            started: Default::default(),
            created: Default::default(),
        })
    }

    /// Where the ids of groups created by splits applied here go from now on.
    pub fn on_group_created(&self, sender: tokio::sync::mpsc::UnboundedSender<u64>) {
        *self.created.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
    }

    fn announce_created(&self, group: u64) {
        if let Some(sender) = self.created.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = sender.send(group);
        }
    }

    /// Whether `group` was started here. Asked on every split: not a copy of the set, which
    /// holds every group the node has started.
    fn is_started(&self, group: u64) -> bool {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).contains(&group)
    }

    /// The groups this store holds state of (their spans are recorded), in id order.
    pub fn stored_groups(&self) -> Vec<u64> {
        let mut groups: Vec<u64> = self.with_shared(|shared| shared.groups.ids());
        groups.sort_unstable();
        groups
    }

    /// The state machine of `group` as far as the store has applied it. A group new to this
    /// store starts owning `span`, with `initial` as its ranges: what the group was created
    /// with, the same on every replica, which its log's splits then change. Without a span
    /// (a group this node learns of from its leader's messages) it starts empty, owning no
    /// keys until a snapshot gives it its span.
    pub fn group(&self, group: u64, span: Option<Span>, initial: &[RangeDescriptor]) -> Result<StateMachine> {
        let _gate = self.apply_gate.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write().map_err(storage_error)?;
        let applied = {
            let mut meta = txn.open_table(STATE_META).map_err(storage_error)?;
            let mut shared = self.shared.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            if read_descs(&meta, &desc_prefix(Some(group)))?.is_empty() {
                for desc in initial {
                    put_desc(&mut meta, group, desc)?;
                    shared.ranges.insert(desc.clone());
                }
            }
            let span = match (get_meta::<Span>(&meta, &group_key("span", group))?, span) {
                (Some(stored), _) => Some(stored),
                (None, Some(span)) => {
                    put_meta(&mut meta, &group_key("span", group), &span)?;
                    Some(span)
                }
                (None, None) => None,
            };
            if let Some(span) = span {
                shared.groups.insert(group, span);
            }
            self.started.lock().unwrap_or_else(|p| p.into_inner()).insert(group);
            GroupApplied {
                last_applied: get_meta(&meta, &group_key("applied", group))?.flatten(),
                membership: get_meta(&meta, &group_key("membership", group))?.unwrap_or_default(),
            }
        };
        txn.commit().map_err(storage_error)?;
        Ok(StateMachine {
            store: self.clone(),
            group,
            applied: Arc::new(RwLock::new(applied)),
            started: Default::default(),
        })
    }

    fn load_shared(db: &Database) -> Result<SmShared> {
        let txn = db.begin_read().map_err(storage_error)?;
        let data = txn.open_table(DATA).map_err(storage_error)?;
        let meta = txn.open_table(STATE_META).map_err(storage_error)?;
        let mut shared = SmShared::default();
        for desc in read_descs(&meta, &desc_prefix(None))? {
            shared.ranges.insert(desc);
        }
        for row in meta.range::<&str>("span/"..).map_err(storage_error)? {
            let (key, value) = row.map_err(storage_error)?;
            let Some(group) = key.value().strip_prefix("span/") else { break };
            let group = group.parse().map_err(|_| Error::Internal(format!("bad span key {:?}", key.value())))?;
            shared.groups.insert(group, codec::from_bytes(value.value()).map_err(storage_error)?);
        }
        // Which catalog write came last is not stored: range 1's applied index is at least its
        // index, so caches keyed on an older version reload.
        let range_one: Option<LogId> = get_meta(&meta, &group_key("applied", SYSTEM_GROUP))?.flatten();
        shared.catalog_version = range_one.map_or(0, |log_id| log_id.index);
        for row in data.iter().map_err(storage_error)? {
            let (k, v) = row.map_err(storage_error)?;
            if let Some(desc) = shared.ranges.lookup(k.value()) {
                let size = shared.sizes.entry(desc.range_id).or_default();
                size.keys += 1;
                size.bytes += (k.value().len() + v.value().len()) as u64;
            }
        }
        Ok(shared)
    }

    fn read_shared(&self) -> std::sync::RwLockReadGuard<'_, SmShared> {
        self.shared.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the range index.
    pub fn ranges(&self) -> RangeIndex {
        self.read_shared().ranges.clone()
    }

    /// The group that runs `ops` (see [`GroupIndex::of_ops`]).
    pub fn group_of_ops(&self, ops: &[Op]) -> Result<u64> {
        self.with_shared(|shared| shared.groups.of_ops(ops))
    }

    /// Runs `f` with the shared in-memory state.
    pub fn with_shared<T>(&self, f: impl FnOnce(&SmShared) -> T) -> T {
        f(&self.read_shared())
    }

    /// Evaluates a read-only batch on the applied data; returns the results and the CPU time.
    pub async fn read(&self, ops: Vec<Op>) -> Result<(Vec<OpResult>, u64)> {
        // A few point reads come from redb's page cache in microseconds: running them on the
        // calling task saves the hand-off to a blocking thread and back, whose two context
        // switches were the largest single cost of a point SELECT. Scans
        // may touch many pages and go to a blocking thread.
        if ops.len() <= INLINE_READ_OPS && ops.iter().all(|op| matches!(op, Op::Get { .. })) {
            return Self::read_blocking(&self.db, &ops);
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || Self::read_blocking(&db, &ops)).await.map_err(Error::internal)?
    }

    /// The applied data as of now, for a paged scan: a redb read transaction's view, which
    /// stays one committed state however long it is held (see [`crate::services::scan`]).
    /// Blocking (it may read pages from disk).
    pub fn snapshot(&self) -> Result<ReadSnapshot> {
        let txn = self.db.begin_read().map_err(storage_error)?;
        Ok(ReadSnapshot(txn.open_table(DATA).map_err(storage_error)?))
    }

    fn read_blocking(db: &Database, ops: &[Op]) -> Result<(Vec<OpResult>, u64)> {
        let cpu = cpu_time::ThreadTime::now();
        let txn = db.begin_read().map_err(storage_error)?;
        let table = txn.open_table(DATA).map_err(storage_error)?;
        let (results, pending) = kv::evaluate(&TableView(&table), ops)?;
        debug_assert!(pending.is_empty(), "read-only batch produced writes");
        Ok((results, cpu.elapsed().as_nanos() as u64))
    }

    /// For every range above `max_bytes` (other than range 1), the key that splits its bytes
    /// in half.
    pub async fn split_points(&self, max_bytes: u64) -> Result<Vec<Vec<u8>>> {
        let oversized: Vec<RangeDescriptor> = self.with_shared(|shared| {
            shared
                .ranges
                .iter()
                .filter(|d| d.range_id != crate::services::ranges::SYSTEM_RANGE_ID)
                .filter(|d| shared.sizes.get(&d.range_id).is_some_and(|s| s.bytes > max_bytes && s.keys > 1))
                .cloned()
                .collect()
        });
        if oversized.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(storage_error)?;
            let table = txn.open_table(DATA).map_err(storage_error)?;
            let mut points = Vec::new();
            for desc in oversized {
                let rows = TableView(&table).scan(&desc.start_key, &desc.end_key, 0)?;
                let total: u64 = rows.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
                let mut seen = 0;
                for (k, v) in rows.iter().skip(1) {
                    seen += (k.len() + v.len()) as u64;
                    if seen * 2 >= total {
                        points.push(k.clone());
                        break;
                    }
                }
            }
            Ok(points)
        })
        .await
        .map_err(Error::internal)?
    }
}

impl StateMachine {
    /// The keys this group owns now; none before a new replica's first snapshot.
    pub fn span(&self) -> Option<Span> {
        self.with_shared(|shared| shared.groups.span(self.group).cloned())
    }

    /// Tells the state machine that openraft's startup on it is over: until then, its
    /// snapshot is offered only if no older than the applied state (see
    /// `current_snapshot_blocking`).
    pub fn started(&self) {
        self.started.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn read_applied(&self) -> GroupApplied {
        self.applied.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn apply_blocking(&self, entries: Vec<Entry>) -> Result<Vec<CommandResponse>> {
        let (db, shared, applied, group) = (&self.db, &self.shared, &self.applied, self.group);
        let _gate = self.apply_gate.lock().unwrap_or_else(|p| p.into_inner());
        let last_durable = &self.last_durable_apply;
        let mut txn = db.begin_write().map_err(storage_error)?;
        {
            let mut last = last_durable.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= APPLY_FSYNC_INTERVAL {
                *last = std::time::Instant::now();
            } else {
                txn.set_durability(redb::Durability::None).map_err(storage_error)?;
            }
        }
        let mut responses = Vec::with_capacity(entries.len());
        let mut created = Vec::new();
        {
            let mut data = txn.open_table(DATA).map_err(storage_error)?;
            let mut meta = txn.open_table(STATE_META).map_err(storage_error)?;
            let mut shared = shared.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut applied = applied.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            // A group always has a span when it applies entries: it was created with one, by a
            // split, or by the snapshot that preceded them.
            let mut span = shared.groups.span(group).cloned().unwrap_or_default();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => CommandResponse::None,
                    // A batch routed here on an out-of-date view of the spans changes nothing:
                    // its sender looks the keys up again and resends it.
                    EntryPayload::Normal(Command::Batch(ops)) if !ops_within(Some(&span), &ops) => {
                        CommandResponse::Batch { results: Err(range_key_mismatch(group)), cpu_nanos: 0 }
                    }
                    EntryPayload::Normal(Command::Batch(ops)) => {
                        let cpu = cpu_time::ThreadTime::now();
                        let results = apply_batch(&mut data, &mut shared, entry.log_id.index, &ops)?;
                        CommandResponse::Batch { results, cpu_nanos: cpu.elapsed().as_nanos() as u64 }
                    }
                    EntryPayload::Normal(Command::Split { split_key, right_range_id }) => {
                        let right_started = self.is_started(right_range_id);
                        let target = SplitTarget {
                            group,
                            span: &span,
                            split_key: &split_key,
                            right_range_id,
                            membership: &applied.membership,
                            right_started,
                        };
                        let result = apply_split(&data, &mut meta, &mut shared, target)?;
                        if result.is_ok() && !right_started && shared.groups.span(right_range_id).is_some() {
                            created.push(right_range_id);
                        }
                        // Later entries of this batch apply within the group's new span.
                        span = shared.groups.span(group).cloned().unwrap_or_default();
                        CommandResponse::Split(result)
                    }
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        CommandResponse::None
                    }
                };
                responses.push(response);
            }
            let last_applied = codec::to_bytes(&applied.last_applied).map_err(storage_error)?;
            meta.insert(group_key("applied", group).as_str(), last_applied.as_slice()).map_err(storage_error)?;
            let membership = codec::to_bytes(&applied.membership).map_err(storage_error)?;
            meta.insert(group_key("membership", group).as_str(), membership.as_slice()).map_err(storage_error)?;
        }
        txn.commit().map_err(storage_error)?;
        for group in created {
            self.announce_created(group);
        }
        Ok(responses)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> StorageResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(io_err)?.map_err(io_err)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> StorageResult<Snapshot> {
        let (db, group) = (self.db.clone(), self.group);
        blocking(move || Self::build_snapshot_blocking(&db, group)).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId>, StoredMembership)> {
        let applied = self.read_applied();
        Ok((applied.last_applied, applied.membership))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> StorageResult<()>
    where
        Strm: Stream<Item = StorageResult<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        // openraft hands over every entry ready to apply at once; they become one transaction.
        let (entries, responders): (Vec<Entry>, Vec<_>) = entries.try_collect::<Vec<_>>().await?.into_iter().unzip();
        let this = self.clone();
        let responses = blocking(move || this.apply_blocking(entries)).await?;
        for (responder, response) in responders.into_iter().zip(responses) {
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> StorageResult<()> {
        let (this, installed) = (self.clone(), meta.clone());
        let bytes = snapshot.into_inner();
        blocking(move || this.install_blocking(&installed, &bytes)).await?;
        *self.applied.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            GroupApplied { last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot>> {
        let (db, group) = (self.db.clone(), self.group);
        let at_startup = !self.started.load(std::sync::atomic::Ordering::SeqCst);
        blocking(move || Self::current_snapshot_blocking(&db, group, at_startup)).await
    }
}
