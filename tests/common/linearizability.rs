//! A linearizability checker for read/write/compare-and-set registers: the Wing–Gong search
//! with Lowe's memoization (Porcupine's algorithm), run per key (a history of independent
//! registers is linearizable iff each key's sub-history is).
//!
//! Written here rather than taken from stateright's `LinearizabilityTester`: that tester is
//! fed operations one at a time in a single order per thread and has no notion of real-time
//! intervals measured by a client or of outcomes that are unknown (a timeout may or may not
//! have taken effect), and it would bring stateright's dependency tree into every test build
//! for about two hundred lines of search. Test code, because only the nemesis tests need it.
//!
//! The search is bounded: a key's history longer than `MAX_OPS_PER_KEY` or a search longer
//! than `MAX_STEPS` is reported as `Inconclusive`, which callers treat as a failure.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// Register values; `None` is "never written".
pub type Value = Option<u64>;

/// What a client asked for and, when it completed, what it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A read that returned the value.
    Read(Value),
    /// A write of a value.
    Write(u64),
    /// Compare-and-set: set `new` if the register holds `expected`; `swapped` is the answer
    /// (ignored when the outcome is unknown).
    Cas { expected: Value, new: u64, swapped: bool },
}

/// One operation on one key, with its real-time interval in nanoseconds since some epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub key: String,
    pub client: usize,
    /// The node it was sent through (for reports; the checker ignores it).
    pub node: usize,
    pub invoke: u64,
    /// When the answer came back; `None` when the outcome is unknown (timeout, lost
    /// connection): the operation may have taken effect at any time after `invoke`, or never.
    pub complete: Option<u64>,
    pub call: Call,
}

/// Why a history was not shown linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No order of the key's operations respects real time and register semantics.
    Violation {
        key: String,
        /// The longest prefix of operations the search could order.
        linearized: Vec<Operation>,
        /// The operations left over at that point, earliest invoked first (some of them cannot
        /// be placed next).
        stuck: Vec<Operation>,
    },
    /// The search hit its bound; nothing is known.
    Inconclusive { key: String, reason: String },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Violation { key, linearized, stuck } => {
                writeln!(
                    f,
                    "key {key:?}: not linearizable; the longest order found ({} ops) ends with:",
                    linearized.len()
                )?;
                for op in linearized.iter().rev().take(8).rev() {
                    writeln!(f, "    {op}")?;
                }
                writeln!(f, "  after which none of these can come next (first 8 by invocation):")?;
                for op in stuck.iter().take(8) {
                    writeln!(f, "    {op}")?;
                }
                Ok(())
            }
            Failure::Inconclusive { key, reason } => write!(f, "key {key:?}: check inconclusive: {reason}"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = |nanos: u64| nanos as f64 / 1e9;
        let complete = self.complete.map_or("unknown".to_string(), |c| format!("{:.3}s", seconds(c)));
        write!(
            f,
            "[{:.3}s, {complete}] client {} via node {}: {:?}",
            seconds(self.invoke),
            self.client,
            self.node,
            self.call
        )
    }
}

/// The most operations one key's history may have.
pub const MAX_OPS_PER_KEY: usize = 20_000;
/// The most search steps for one key.
pub const MAX_STEPS: u64 = 50_000_000;

/// Checks every key's history, each starting from "never written"; returns every failure.
pub fn check(history: &[Operation]) -> Vec<Failure> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key.into_iter().filter_map(|(key, ops)| check_key(key, &ops, MAX_STEPS).err()).collect()
}

/// The register's next value if `call` may take effect when it holds `state`.
fn step(state: Value, call: &Call, known: bool) -> Option<Value> {
    match *call {
        Call::Read(value) => (value == state).then_some(state),
        Call::Write(value) => Some(Some(value)),
        // A CAS of unknown outcome that did not swap changed nothing: the same as never
        // happening, which the search allows for every unknown operation anyway.
        Call::Cas { expected, new, swapped } if swapped || !known => (state == expected).then_some(Some(new)),
        Call::Cas { expected, .. } => (state != expected).then_some(state),
    }
}

const HEAD: usize = 0;

/// The call/return events of one key as a doubly linked list sorted by time; operations are
/// lifted out of it as they are linearized and put back when the search backtracks.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per node: the operation and whether the node is its call (else its return).
    node: Vec<(usize, bool)>,
    /// Per operation: its call node and its return node.
    nodes_of: Vec<(usize, usize)>,
}

impl Events {
    fn new(ops: &[&Operation]) -> Events {
        // (time, calls before returns at equal times: ties count as concurrent, op index)
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke, 0, i));
            events.push((op.complete.unwrap_or(u64::MAX), 1, i));
        }
        events.sort_unstable();
        let n = events.len() + 1;
        let mut list = Events {
            next: (1..=n).collect(),
            prev: (0..n).map(|i| i.wrapping_sub(1)).collect(),
            node: vec![(usize::MAX, false); n],
            nodes_of: vec![(0, 0); ops.len()],
        };
        list.next[n - 1] = usize::MAX;
        for (position, (_, kind, op)) in events.into_iter().enumerate() {
            let node = position + 1;
            list.node[node] = (op, kind == 0);
            if kind == 0 {
                list.nodes_of[op].0 = node;
            } else {
                list.nodes_of[op].1 = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != usize::MAX {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != usize::MAX {
            self.prev[next] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        let (call, ret) = self.nodes_of[op];
        self.unlink(call);
        self.unlink(ret);
    }

    fn unlift(&mut self, op: usize) {
        let (call, ret) = self.nodes_of[op];
        self.relink(ret);
        self.relink(call);
    }
}

/// Searches one key's operations for a linearization, bounded by `max_steps`.
pub fn check_key(key: &str, ops: &[&Operation], max_steps: u64) -> Result<(), Failure> {
    // Reads whose answer never came constrain nothing.
    let ops: Vec<&Operation> =
        ops.iter().copied().filter(|op| op.complete.is_some() || !matches!(op.call, Call::Read(_))).collect();
    if ops.len() > MAX_OPS_PER_KEY {
        return Err(Failure::Inconclusive {
            key: key.into(),
            reason: format!("{} operations, more than the limit of {MAX_OPS_PER_KEY}", ops.len()),
        });
    }
    let mut events = Events::new(&ops);
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, Value)> = HashSet::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut state: Value = None;
    // Operations with a known outcome still to place; unknown ones may be left out at the end.
    let mut known_left = ops.iter().filter(|op| op.complete.is_some()).count();
    let mut best: Vec<usize> = Vec::new();
    let mut entry = events.next[HEAD];
    let mut steps = 0u64;
    while known_left > 0 {
        steps += 1;
        if steps > max_steps {
            return Err(Failure::Inconclusive {
                key: key.into(),
                reason: format!("no answer within {max_steps} search steps ({} operations)", ops.len()),
            });
        }
        let call = (entry != usize::MAX).then(|| events.node[entry]).filter(|(_, is_call)| *is_call);
        if let Some((op, _)) = call {
            let known = ops[op].complete.is_some();
            if let Some(next) = step(state, &ops[op].call, known) {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), next)) {
                    stack.push((op, state));
                    state = next;
                    events.lift(op);
                    known_left -= usize::from(known);
                    if stack.len() > best.len() {
                        best = stack.iter().map(|(op, _)| *op).collect();
                    }
                    entry = events.next[HEAD];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = events.next[entry];
        } else {
            // A return (or the end): its operation had to be placed before here; backtrack.
            let Some((op, previous)) = stack.pop() else {
                return Err(violation(key, &ops, &best));
            };
            state = previous;
            linearized[op / 64] &= !(1 << (op % 64));
            events.unlift(op);
            known_left += usize::from(ops[op].complete.is_some());
            entry = events.next[events.nodes_of[op].0];
        }
    }
    Ok(())
}

fn violation(key: &str, ops: &[&Operation], best: &[usize]) -> Failure {
    let placed: HashSet<usize> = best.iter().copied().collect();
    let linearized = best.iter().map(|i| ops[*i].clone()).collect();
    let mut stuck: Vec<Operation> = (0..ops.len()).filter(|i| !placed.contains(i)).map(|i| ops[i].clone()).collect();
    stuck.sort_by_key(|op| op.invoke);
    Failure::Violation { key: key.into(), linearized, stuck }
}
