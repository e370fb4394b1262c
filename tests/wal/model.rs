//! The reference the log is compared with: groups as plain vectors and maps, and a generator
//! that turns random steps into operations that are valid for the current state.

use std::collections::BTreeMap;

use ranged::services::wal::{Wal, WriteBatch};

/// One group as a reader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupState {
    pub entries: Vec<(u64, Vec<u8>)>,
    pub purged: Option<u64>,
    pub meta: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Every group that holds something.
pub type State = BTreeMap<u64, GroupState>;

/// A concrete operation.
#[derive(Debug, Clone)]
pub enum ModelOp {
    Append { group: u64, index: u64, payload: Vec<u8> },
    TruncateFrom { group: u64, index: u64 },
    PurgeUpTo { group: u64, index: u64 },
    Meta { group: u64, key: Vec<u8>, value: Vec<u8> },
    Remove { group: u64 },
}

/// A random step, made concrete against the state it applies to.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub group: u64,
    pub kind: u8,
    pub a: u64,
    pub b: u64,
}

pub fn apply(state: &mut State, op: &ModelOp) {
    match op {
        ModelOp::Append { group, index, payload } => {
            let g = state.entry(*group).or_default();
            let next = g.entries.last().map(|(i, _)| i + 1).or(g.purged.map(|p| p + 1));
            assert!(next.is_none_or(|n| n == *index), "the generator appends in order");
            g.entries.push((*index, payload.clone()));
        }
        ModelOp::TruncateFrom { group, index } => {
            state.entry(*group).or_default().entries.retain(|(i, _)| i < index);
        }
        ModelOp::PurgeUpTo { group, index } => {
            let g = state.entry(*group).or_default();
            g.entries.retain(|(i, _)| i > index);
            g.purged = g.purged.max(Some(*index));
        }
        ModelOp::Meta { group, key, value } => {
            state.entry(*group).or_default().meta.insert(key.clone(), value.clone());
        }
        ModelOp::Remove { group } => {
            state.remove(group);
        }
    }
    state.retain(|_, g| !(g.entries.is_empty() && g.purged.is_none() && g.meta.is_empty()));
}

/// Bytes that name their group and index, so that a misplaced entry shows.
pub fn payload(group: u64, index: u64, seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ (group << 48) ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Turns steps into operations valid one after the other, starting from `state`.
pub fn concretize(state: &State, steps: &[Step], max_payload: u64) -> Vec<ModelOp> {
    let mut sim = state.clone();
    let mut ops = Vec::new();
    for step in steps {
        let g = sim.get(&step.group).cloned().unwrap_or_default();
        let first = g.entries.first().map(|(i, _)| *i);
        let last = g.entries.last().map(|(i, _)| *i);
        let len = g.entries.len() as u64;
        let group = step.group;
        let mut batch = Vec::new();
        match step.kind {
            0..=4 => {
                let start = last.map(|l| l + 1).or(g.purged.map(|p| p + 1)).unwrap_or(step.a % 5);
                for n in 0..1 + step.a % 3 {
                    let size = ((step.b >> (8 * n)) % (max_payload + 1)) as usize;
                    let index = start + n;
                    batch.push(ModelOp::Append { group, index, payload: payload(group, index, step.b, size) });
                }
            }
            5 | 6 => {
                if let Some(first) = first {
                    batch.push(ModelOp::TruncateFrom { group, index: first + step.a % (len + 1) });
                }
            }
            7 => {
                let index = match first {
                    Some(first) => (first + step.a % (len + 3)).saturating_sub(1),
                    None => g.purged.unwrap_or(0) + step.a % 3,
                };
                batch.push(ModelOp::PurgeUpTo { group, index });
            }
            9 if step.b % 4 == 0 => batch.push(ModelOp::Remove { group }),
            _ => {
                let key = format!("k{}", step.a % 3).into_bytes();
                let value = step.b.to_le_bytes().repeat((step.b % 20) as usize);
                batch.push(ModelOp::Meta { group, key, value });
            }
        }
        for op in batch {
            apply(&mut sim, &op);
            ops.push(op);
        }
    }
    ops
}

pub fn to_batch(ops: &[ModelOp]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for op in ops {
        match op {
            ModelOp::Append { group, index, payload } => batch.append(*group, *index, payload.clone()),
            ModelOp::TruncateFrom { group, index } => batch.truncate_from(*group, *index),
            ModelOp::PurgeUpTo { group, index } => batch.purge_up_to(*group, *index),
            ModelOp::Meta { group, key, value } => batch.put_meta(*group, key.clone(), value.clone()),
            ModelOp::Remove { group } => batch.remove_group(*group),
        };
    }
    batch
}

/// Everything the log answers through its read interface, checked for self-consistency.
pub fn read_state(wal: &Wal) -> State {
    let mut state = State::new();
    for group in wal.groups() {
        let entries = wal.entries(group, 0..u64::MAX).expect("entries read back");
        assert_eq!(wal.first_index(group), entries.first().map(|(i, _)| *i));
        assert_eq!(wal.last_index(group), entries.last().map(|(i, _)| *i));
        let meta = wal.meta_all(group);
        for (key, value) in &meta {
            assert_eq!(wal.meta(group, key).as_ref(), Some(value));
        }
        state.insert(group, GroupState { entries, purged: wal.purged(group), meta });
    }
    state
}

/// Random steps from a seeded generator (for the tests that are not proptest-driven).
pub fn random_steps(rng: &mut impl rand::Rng, groups: u64) -> Vec<Step> {
    let count = rng.random_range(1..=4);
    (0..count)
        .map(|_| Step {
            group: rng.random_range(0..groups),
            kind: rng.random_range(0..10),
            a: rng.random(),
            b: rng.random(),
        })
        .collect()
}
