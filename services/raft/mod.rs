//! openraft wiring. Every range is its own Raft group, whose id is the range's: the cluster
//! starts with two, range 1 (the system keys, [`SYSTEM_GROUP`]) and range 2 (user space,
//! [`USER_GROUP`]), and each split starts a group for its right-hand range. A group's members
//! are its range's replicas (at most [`MAX_VOTERS`] voters, and learners while they are being
//! added, or on every other node for range 1) and its leader is the range's leaseholder. A write batch is applied by one group,
//! so it may not touch two; reads spanning several are split by the KV router.
//!
//! - [`groups`] — which group holds which keys, from the spans the groups record.
//! - [`codec`] — binary encodings: protobuf log entries and commands, postcard for openraft's types.
//! - [`log_store`] — the Raft log in the store's write-ahead log.
//! - [`state_machine`] — applies commands to `state.redb`, keeps the range index and sizes, and
//!   builds/installs snapshots.
//! - [`network`] — sends openraft RPCs over the `RaftService` gRPC transport.
//! - [`heartbeats`] — coalesces every group's heartbeats to a peer into one call.
//! - [`peer_downs`] — the peers whose process is known gone (no votes are sent to them).

pub mod codec;
pub mod groups;
pub mod heartbeats;
pub mod log_store;
pub mod network;
pub mod peer_downs;
pub mod state_machine;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::services::error::Error;
use crate::services::kv::{Op, OpResult};

/// Node ids double as Raft ids.
pub type NodeId = u64;

/// Range 1's Raft group, holding the system keys (ids double as write-ahead log group ids;
/// group 0 is the store's own records).
pub const SYSTEM_GROUP: u64 = 1;
/// The Raft group of user space: range 2 and every range split from it.
pub const USER_GROUP: u64 = 2;

/// One Raft group every node holds: its id, the keys it owns, and the ranges it starts with.
#[derive(Debug, Clone)]
pub struct GroupLayout {
    /// The group's id.
    pub id: u64,
    /// The keys its state machine owns.
    pub span: state_machine::Span,
    /// The ranges it holds when created (the cluster's bootstrap range in its span, whose id
    /// is the group's).
    pub initial: Vec<crate::services::ranges::RangeDescriptor>,
}

/// The Raft groups of the cluster, one per bootstrap range: range 1 and range 2.
pub fn groups() -> Vec<GroupLayout> {
    crate::services::ranges::bootstrap_descriptors()
        .into_iter()
        .map(|desc| GroupLayout {
            id: desc.range_id,
            span: state_machine::Span { start: desc.start_key.clone(), end: desc.end_key.clone() },
            initial: vec![desc],
        })
        .collect()
}

/// The most voters a group has (range 1's group also has a learner on every other node).
pub const MAX_VOTERS: usize = 3;

/// Heartbeat interval of the leader.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(150);
/// Bounds of the randomised election timeout: a dead leader is replaced within about a second.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(600);
/// Upper bound of the election timeout.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1200);
/// A snapshot is taken after this many applied entries; older log is then purged.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 5_000;

openraft::declare_raft_types!(
    /// The openraft type configuration of ranged.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// A log id of this configuration (term, leader node, index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote of this configuration.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A log entry of this configuration.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// The last applied membership with the log id it came from.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata of this configuration.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A whole snapshot held in memory: it is built, sent and installed in one piece.
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
/// A snapshot of this configuration.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// A command proposed through Raft and applied on every replica (encoded by [`codec`]).
#[derive(Debug, Clone)]
pub enum Command {
    /// An atomic batch of KV operations.
    Batch(Vec<Op>),
    /// Splits the range containing `split_key` at that key.
    Split {
        /// The first key of the new right-hand range.
        split_key: Vec<u8>,
        /// The new range's id, allocated before the split is proposed.
        right_range_id: u64,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Batch(ops) => write!(f, "batch of {} ops", ops.len()),
            Command::Split { split_key, right_range_id } => {
                write!(f, "split at {} key bytes into range {right_range_id}", split_key.len())
            }
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CommandResponse {
    /// Blank and membership entries.
    None,
    /// A batch's results (or why it was aborted), with the CPU time its evaluation took.
    Batch {
        /// The results, or the error that aborted the batch.
        results: Result<Vec<OpResult>, Error>,
        /// CPU nanoseconds spent evaluating and writing the batch on the applying thread.
        cpu_nanos: u64,
    },
    /// A split's (left, right) range ids.
    Split(Result<(u64, u64), Error>),
}

/// The openraft configuration every node uses.
pub fn config(cluster_name: &str) -> Result<openraft::Config, Error> {
    let config = openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: HEARTBEAT_INTERVAL.as_millis() as u64,
        election_timeout_min: ELECTION_TIMEOUT_MIN.as_millis() as u64,
        election_timeout_max: ELECTION_TIMEOUT_MAX.as_millis() as u64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: 1_000,
        // A follower whose log lost entries it had reported durable (a damaged disk, a log
        // cut by recovery) is replicated again from where its log now ends. Without this the
        // leader's core panics on seeing the reversion: one bad disk would stop the leader,
        // then each next leader, and the entries the follower lost are on the others anyway.
        allow_log_reversion: Some(true),
        ..Default::default()
    };
    config.validate().map_err(Error::internal)
}

/// Maps a storage failure to the I/O error openraft's storage traits return.
pub(crate) fn io_err(err: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_tile_the_keyspace_from_the_bootstrap_ranges() {
        let groups = groups();
        assert_eq!(groups.iter().map(|g| g.id).collect::<Vec<_>>(), vec![SYSTEM_GROUP, USER_GROUP]);
        assert_eq!(groups[0].span.end, groups[1].span.start);
        assert!(groups[0].span.start.is_empty() && groups[1].span.end.is_empty());
        for group in &groups {
            assert_eq!(group.initial.len(), 1);
            assert_eq!(group.initial[0].range_id, group.id);
            assert!(group.span.contains(&group.initial[0].start_key));
        }
    }
}
