//! openraft wiring. In this version every range shares one Raft group whose members are the
//! cluster's nodes (at most [`MAX_VOTERS`] voters, the rest learners), so a range's replicas are
//! exactly the group's members and its leaseholder is the group's leader.
//!
//! - [`codec`] — binary encodings: protobuf log entries and commands, postcard for openraft's types.
//! - [`log_store`] — the Raft log in the store's write-ahead log.
//! - [`state_machine`] — applies commands to `state.redb`, keeps the range index and sizes, and
//!   builds/installs snapshots.
//! - [`network`] — sends openraft RPCs over the `RaftService` gRPC transport.

pub mod codec;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::services::error::Error;
use crate::services::kv::{Op, OpResult};

/// Node ids double as Raft ids.
pub type NodeId = u64;

/// The Raft group's id in the write-ahead log (group 0 is the store's own records).
pub const GROUP: u64 = 1;

/// The most voters the group has; more nodes join as learners (non-voting replicas).
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
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Batch(ops) => write!(f, "batch of {} ops", ops.len()),
            Command::Split { split_key } => write!(f, "split at {} key bytes", split_key.len()),
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
