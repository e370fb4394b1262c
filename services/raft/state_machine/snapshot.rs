//! A group's snapshots: the rows of its span and its range descriptors, framed after a header
//! with the group's applied state; built from one read transaction, installed in one write
//! transaction that replaces exactly the group's span and descriptors.

use std::io::Cursor;

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{Span, StateMachine, StateStore, desc_prefix, get_meta, group_key, put_desc, put_meta, read_descs};
use crate::services::engine::{DATA, STATE_META, storage_error};
use crate::services::error::{Error, Result};
use crate::services::keys;
use crate::services::raft::{LogId, SYSTEM_GROUP, Snapshot, SnapshotMeta, StoredMembership, codec};
use crate::services::ranges::RangeDescriptor;

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// The group's range descriptors.
    descs: Vec<RangeDescriptor>,
    /// The keys the group owns: a replica that installs the snapshot owns them from then on
    /// (a split since its last entry may have shrunk them, and a new replica had none).
    span: Span,
    rows: u64,
}

/// The span a snapshot's group owns, read from its header: what a node checks before it
/// installs the snapshot (see [`StateStore::overlapping_group`]).
pub fn snapshot_span(bytes: &[u8]) -> Result<Span> {
    let mut input = bytes;
    let header: SnapshotHeader =
        codec::from_bytes(read_frame(&mut input).map_err(Error::Internal)?).map_err(storage_error)?;
    Ok(header.span)
}

impl StateStore {
    /// Another group on this node owning some of `span`'s keys, if one does: a snapshot of
    /// `group` for `span` must wait until that group's split has applied here, or its older
    /// entries would write over the newer rows the snapshot brings.
    pub fn overlapping_group(&self, group: u64, span: &Span) -> Option<u64> {
        self.with_shared(|shared| {
            let pieces = shared.groups.pieces(&span.start, &span.end).unwrap_or_default();
            pieces.into_iter().map(|(id, _)| id).find(|id| *id != group)
        })
    }
}

/// Deletes every row of `span`.
pub(super) fn clear_span(data: &mut redb::Table<&'static [u8], &'static [u8]>, span: &Span) -> Result<()> {
    let removed = if span.end.is_empty() {
        data.retain_in::<&[u8], _>(span.start.as_slice().., |_, _| false)
    } else {
        data.retain_in::<&[u8], _>(span.start.as_slice()..span.end.as_slice(), |_, _| false)
    };
    removed.map_err(storage_error)
}

/// Deletes `group`'s range descriptors.
pub(super) fn clear_descs(meta: &mut redb::Table<&'static str, &'static [u8]>, group: u64) -> Result<()> {
    // `desc/<group>0` is the first key past `desc/<group>/` (and before `desc/<group>0…`).
    let (first, past) = (desc_prefix(Some(group)), format!("desc/{group}0"));
    meta.retain_in::<&str, _>(first.as_str()..past.as_str(), |_, _| false).map_err(storage_error)
}

fn write_frame(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn read_frame<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let (len, rest) = input.split_first_chunk::<4>().ok_or("truncated snapshot")?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err("truncated snapshot".into());
    }
    let (frame, rest) = rest.split_at(len);
    *input = rest;
    Ok(frame)
}

impl StateMachine {
    /// The rows of `span` in `data`, in key order.
    pub(super) fn span_rows<'t>(
        data: &'t impl ReadableTable<&'static [u8], &'static [u8]>,
        span: &Span,
    ) -> Result<redb::Range<'t, &'static [u8], &'static [u8]>> {
        let rows = if span.end.is_empty() {
            data.range::<&[u8]>(span.start.as_slice()..)
        } else {
            data.range::<&[u8]>(span.start.as_slice()..span.end.as_slice())
        };
        rows.map_err(storage_error)
    }

    /// A snapshot of what the group has applied, read in one transaction: the span too, since
    /// openraft builds snapshots beside the applies (a span read apart from the rows could be
    /// that of before a split the rows are from after).
    pub(super) fn build_snapshot_blocking(db: &Database, group: u64) -> Result<Snapshot> {
        let txn = db.begin_read().map_err(storage_error)?;
        let meta_table = txn.open_table(STATE_META).map_err(storage_error)?;
        let data = txn.open_table(DATA).map_err(storage_error)?;
        let span: Span = get_meta(&meta_table, &group_key("span", group))?
            .ok_or_else(|| Error::Internal(format!("Raft group {group} has no span to snapshot")))?;
        let span = &span;
        let last_applied: Option<LogId> = get_meta(&meta_table, &group_key("applied", group))?.flatten();
        let membership: StoredMembership = get_meta(&meta_table, &group_key("membership", group))?.unwrap_or_default();
        let descs = read_descs(&meta_table, &desc_prefix(Some(group)))?;
        let rows = Self::span_rows(&data, span)?.count() as u64;
        let header = SnapshotHeader { last_applied, membership: membership.clone(), descs, span: span.clone(), rows };
        let mut out = Vec::new();
        write_frame(&mut out, &codec::to_bytes(&header).map_err(storage_error)?);
        for row in Self::span_rows(&data, span)? {
            let (k, v) = row.map_err(storage_error)?;
            write_frame(&mut out, k.value());
            write_frame(&mut out, v.value());
        }
        drop((meta_table, data, txn));
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership };
        Self::save_snapshot(db, group, &meta, &out)?;
        Ok(Snapshot { meta, snapshot: Cursor::new(out) })
    }

    pub(super) fn save_snapshot(db: &Database, group: u64, meta: &SnapshotMeta, bytes: &[u8]) -> Result<()> {
        let txn = db.begin_write().map_err(storage_error)?;
        {
            let mut table = txn.open_table(STATE_META).map_err(storage_error)?;
            let meta = codec::to_bytes(meta).map_err(storage_error)?;
            table.insert(group_key("snapshot_meta", group).as_str(), meta.as_slice()).map_err(storage_error)?;
            table.insert(group_key("snapshot_data", group).as_str(), bytes).map_err(storage_error)?;
        }
        txn.commit().map_err(storage_error)
    }

    /// Replaces the rows of `span` and the group's descriptors with the snapshot's and records
    /// the group's applied state, in one transaction; other groups' rows are not touched. Then
    /// recounts the node-wide index and sizes, which the install changed.
    pub(super) fn install_blocking(&self, meta: &SnapshotMeta, bytes: &[u8]) -> Result<()> {
        let (db, group) = (&self.db, self.group);
        let _gate = self.apply_gate.lock().unwrap_or_else(|p| p.into_inner());
        // The transport refuses such a snapshot before it gets here (see `overlapping_group`);
        // this is the last line against two groups owning one key.
        if let Some(other) = self.overlapping_group(group, &snapshot_span(bytes)?) {
            return Err(Error::Internal(format!("a snapshot of Raft group {group} overlaps group {other}")));
        }
        Self::install_span(db, group, meta, bytes)?;
        let mut reloaded = StateStore::load_shared(db)?;
        let mut shared = self.shared.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Range 1's snapshot may change the catalog in any way; its last index is at least that
        // of its last catalog write. No other group holds catalog keys. The routing copy may
        // have changed in any way: a version never seen before makes every cached copy reload.
        reloaded.catalog_version = match meta.last_log_id {
            Some(log_id) if group == SYSTEM_GROUP => shared.catalog_version.max(log_id.index),
            _ => shared.catalog_version,
        };
        reloaded.meta_version = shared.meta_version + 1;
        *shared = reloaded;
        Ok(())
    }

    pub(super) fn install_span(db: &Database, group: u64, meta: &SnapshotMeta, bytes: &[u8]) -> Result<()> {
        let mut input = bytes;
        let header: SnapshotHeader =
            codec::from_bytes(read_frame(&mut input).map_err(Error::Internal)?).map_err(storage_error)?;
        let span = &header.span;
        let txn = db.begin_write().map_err(storage_error)?;
        {
            let mut data = txn.open_table(DATA).map_err(storage_error)?;
            clear_span(&mut data, span)?;
            for _ in 0..header.rows {
                let key = read_frame(&mut input).map_err(Error::Internal)?;
                let value = read_frame(&mut input).map_err(Error::Internal)?;
                if !span.contains(key) {
                    return Err(Error::Internal(format!(
                        "snapshot for Raft group {group} holds key {} outside its span",
                        keys::pretty(key)
                    )));
                }
                data.insert(key, value).map_err(storage_error)?;
            }
            let mut table = txn.open_table(STATE_META).map_err(storage_error)?;
            clear_descs(&mut table, group)?;
            for desc in &header.descs {
                put_desc(&mut table, group, desc)?;
            }
            put_meta(&mut table, &group_key("span", group), span)?;
            let applied = codec::to_bytes(&meta.last_log_id).map_err(storage_error)?;
            table.insert(group_key("applied", group).as_str(), applied.as_slice()).map_err(storage_error)?;
            let membership = codec::to_bytes(&meta.last_membership).map_err(storage_error)?;
            table.insert(group_key("membership", group).as_str(), membership.as_slice()).map_err(storage_error)?;
            let meta_bytes = codec::to_bytes(meta).map_err(storage_error)?;
            table.insert(group_key("snapshot_meta", group).as_str(), meta_bytes.as_slice()).map_err(storage_error)?;
            table.insert(group_key("snapshot_data", group).as_str(), bytes).map_err(storage_error)?;
        }
        txn.commit().map_err(storage_error)
    }

    /// The snapshot openraft asks for: at startup, to restore from; later, to send to a
    /// replica that needs one. A replica is sent a snapshot of everything applied here, never
    /// an older stored one: what it replays after the snapshot must be only entries no replica
    /// has applied yet. A replay of older splits on a node that already holds the groups they
    /// created finds their range ids taken, keeps a span that is too wide, and then fails on a
    /// later split (its group's Raft stops on that node).
    pub(super) fn current_snapshot_blocking(db: &Database, group: u64, at_startup: bool) -> Result<Option<Snapshot>> {
        let txn = db.begin_read().map_err(storage_error)?;
        let table = txn.open_table(STATE_META).map_err(storage_error)?;
        let stored = get_meta::<SnapshotMeta>(&table, &group_key("snapshot_meta", group))?;
        let applied: Option<LogId> = get_meta(&table, &group_key("applied", group))?.flatten();
        if let Some(meta) = stored.filter(|meta| meta.last_log_id >= applied) {
            let bytes = table
                .get(group_key("snapshot_data", group).as_str())
                .map_err(storage_error)?
                .map(|v| v.value().to_vec())
                .unwrap_or_default();
            return Ok(Some(Snapshot { meta, snapshot: Cursor::new(bytes) }));
        }
        // At startup, a snapshot older than the state applied since is not offered: openraft,
        // restarting on a log that lost its tail below the applied state, purges up to the
        // applied state and needs a snapshot at least that new, which it builds when offered
        // none. A replica with no keys of its own yet (waiting for its first snapshot) has
        // nothing to send.
        if at_startup || get_meta::<Span>(&table, &group_key("span", group))?.is_none() {
            return Ok(None);
        }
        drop((table, txn));
        Self::build_snapshot_blocking(db, group).map(Some)
    }
}
