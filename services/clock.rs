//! Wall-clock time as the API and the status records carry it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (0 for times before it).
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
