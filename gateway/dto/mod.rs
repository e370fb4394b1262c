//! The JSON bodies of `/api/v2`, one module per API area, with CockroachDB's field names
//! (newest release, older shapes side by side where they differ) and the conversions from
//! the nodes' protobuf answers. Numbers, times and bytes follow Go's `encoding/json`
//! ([`crate::gateway::go_json`]): timestamps in nodes are int64 nanoseconds and in sessions
//! RFC 3339, enums are integers, map keys are decimal strings.

pub mod auth;
pub mod nodes;
pub mod ranges;
pub mod sessions;

use serde::Serialize;

use crate::gateway::cluster::{Outcome, count_successes};

/// Who answered a fan-out.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, utoipa::ToSchema, Default)]
pub struct FanOutSummary {
    /// Nodes asked (decommissioned ones are not).
    pub total: u32,
    /// Nodes that answered.
    pub successful: u32,
    /// Nodes that failed or timed out.
    pub failed: u32,
}

impl FanOutSummary {
    /// The summary of a fan-out's outcomes.
    pub fn of<T>(outcomes: &[Outcome<T>]) -> Self {
        let (total, successful) = count_successes(outcomes);
        Self { total: total as u32, successful: successful as u32, failed: (total - successful) as u32 }
    }
}
