//! A recorder of register operations for the linearizability checker: each operation's
//! invoke and return times on one monotonic clock, what was asked and what came back, and
//! counts of operations that succeeded, failed for sure, or ended with an unknown outcome.

use std::sync::Mutex;
use std::time::Instant;

use super::linearizability::{Call, Operation};

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: the call carries the answer.
    Ok(Call),
    /// Refused in a way that proves it had no effect (not recorded for the checker).
    Failed,
    /// No answer (timeout, lost connection, a server error after sending): it may have
    /// taken effect, or not.
    Unknown(Call),
}

/// Operation counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

/// Every recorded operation, shared by the workload's clients.
pub struct History {
    start: Instant,
    inner: Mutex<(Vec<Operation>, Counts)>,
}

impl Default for History {
    fn default() -> Self {
        History { start: Instant::now(), inner: Mutex::default() }
    }
}

impl History {
    /// Nanoseconds since the history began; what `invoke` and `complete` are measured in.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// When the history began: the zero of `now`.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Records an operation on `key` by `client` through `node`, invoked at `invoke` (from
    /// `now`), that just ended with `outcome`.
    pub fn record(&self, key: &str, client: usize, node: usize, invoke: u64, outcome: Outcome) {
        let complete = self.now();
        let mut inner = self.inner.lock().unwrap();
        let (call, complete) = match outcome {
            Outcome::Ok(call) => {
                inner.1.ok += 1;
                (call, Some(complete))
            }
            Outcome::Failed => {
                inner.1.failed += 1;
                return;
            }
            Outcome::Unknown(call) => {
                inner.1.unknown += 1;
                (call, None)
            }
        };
        inner.0.push(Operation { key: key.to_string(), client, node, invoke, complete, call });
    }

    /// The operations recorded so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.inner.lock().unwrap().0.clone()
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.inner.lock().unwrap().1
    }
}
